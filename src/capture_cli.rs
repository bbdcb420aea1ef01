//! `meterd capture` and `meterd replay` (`docs/capture.md`): record what a running meterd
//! receives into a file through its API, and send a file's records again as UDP datagrams.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::api_client::ApiClient;
use crate::ingest::capture::format::{Decoder, FormatError, Item, Record, Trailer};

/// Default size bound of a capture file.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Default largest datagram `replay` sends (meterd's default `max_datagram_bytes`).
pub const DEFAULT_MAX_DATAGRAM: usize = 8192;
/// How long `capture` waits for the server beyond the capture's own duration.
const GRACE: Duration = Duration::from_secs(30);

/// What a capture file holds, as read back.
#[derive(Debug, Default)]
pub struct FileSummary {
    /// Records (datagrams and TCP reads).
    pub records: u64,
    /// Their payload bytes.
    pub payload_bytes: u64,
    /// The trailer, if the file is complete.
    pub trailer: Option<Trailer>,
    /// Why reading stopped early (a record cut short, corruption), if it did.
    pub problem: Option<String>,
}

impl std::fmt::Display for FileSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} datagram(s), {} payload bytes",
            self.records, self.payload_bytes
        )?;
        match &self.trailer {
            Some(t) => write!(
                f,
                ", {} dropped (the capture could not keep up); ended: {}",
                t.dropped,
                t.reason.name()
            )?,
            None => write!(f, "; no trailer: the capture was cut short")?,
        }
        if let Some(p) = &self.problem {
            write!(f, "; {p}")?;
        }
        Ok(())
    }
}

/// Asks the meterd `client` reaches to capture for `seconds` and writes the stream to `out`,
/// stopping at `max_bytes` (the server stops before it and ends the file properly; this side
/// cuts at the bound only if it did not). Returns what the file holds.
pub fn capture(
    client: &ApiClient,
    seconds: u64,
    out: &Path,
    max_bytes: u64,
) -> Result<FileSummary> {
    let path = "/api/v1/capture";
    let url = client.url(path);
    let file = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut file = BufWriter::new(file);
    let timeout = Duration::from_secs(seconds) + GRACE;
    client.runtime().block_on(async {
        let query = [("seconds", seconds), ("max_bytes", max_bytes)];
        let resp = client.get(path, &query, timeout).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            bail!("{url}: {status}: {message}");
        }
        let mut resp = resp;
        let mut written = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .with_context(|| format!("reading the capture from {url}"))?
        {
            let room = usize::try_from(max_bytes.saturating_sub(written)).unwrap_or(usize::MAX);
            let part = chunk.get(..room).unwrap_or(&chunk);
            file.write_all(part)
                .with_context(|| format!("cannot write {}", out.display()))?;
            written += part.len() as u64;
            if part.len() < chunk.len() {
                break;
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    file.flush()
        .with_context(|| format!("cannot write {}", out.display()))?;
    drop(file);
    let summary = summarize(out)?;
    Ok(summary)
}

/// Reads `path` through and says what it holds.
pub fn summarize(path: &Path) -> Result<FileSummary> {
    let mut decoder = open(path)?;
    let mut s = FileSummary::default();
    loop {
        match decoder.next_item() {
            Ok(Some(Item::Record(r))) => {
                s.records += 1;
                s.payload_bytes += r.payload.len() as u64;
            }
            Ok(Some(Item::Trailer(t))) => s.trailer = Some(t),
            Ok(None) => break,
            Err(e) => {
                s.problem = Some(e.to_string());
                break;
            }
        }
    }
    Ok(s)
}

fn open(path: &Path) -> Result<Decoder<BufReader<File>>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Decoder::new(BufReader::new(file)).with_context(|| format!("{}", path.display()))
}

/// How fast `replay` sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// At the captured times, divided by this factor (1.0: as captured).
    Speed(f64),
    /// As fast as the socket takes them.
    FlatOut,
}

/// What `replay` sent.
#[derive(Debug, Default)]
pub struct ReplaySummary {
    /// The file read back (records, trailer, any problem).
    pub file: FileSummary,
    /// Datagrams sent.
    pub datagrams: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Sends the socket refused (e.g. a datagram over 64 KiB).
    pub send_errors: u64,
}

/// Sends every record of `path` to `to` over UDP, paced by `pace`. A record longer than
/// `max_datagram` bytes (a TCP read, usually) is split at line boundaries into datagrams of at
/// most that size (a single longer line goes alone); a record the receiver had cut loses its
/// incomplete last line, which that receiver refused.
pub fn replay(path: &Path, to: &str, pace: Pace, max_datagram: usize) -> Result<ReplaySummary> {
    if let Pace::Speed(x) = pace {
        if !(x.is_finite() && x > 0.0) {
            bail!("--speed must be a positive number");
        }
    }
    let socket = crate::send::udp_to(to)?;
    let mut decoder = open(path)?;
    let mut s = ReplaySummary::default();
    let started = Instant::now();
    loop {
        let r = match decoder.next_item() {
            Ok(Some(Item::Record(r))) => r,
            Ok(Some(Item::Trailer(t))) => {
                s.file.trailer = Some(t);
                break;
            }
            Ok(None) => break,
            Err(e @ FormatError::Io(_)) => {
                return Err(e).with_context(|| format!("reading {}", path.display()))
            }
            Err(e) => {
                s.file.problem = Some(e.to_string());
                break;
            }
        };
        s.file.records += 1;
        s.file.payload_bytes += r.payload.len() as u64;
        if let Pace::Speed(x) = pace {
            let at = Duration::from_secs_f64(r.offset_ns as f64 / 1e9 / x);
            if let Some(wait) = at.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let r = with_origin(r);
        for d in datagrams(&r, max_datagram) {
            match socket.send(d) {
                Ok(n) => {
                    s.datagrams += 1;
                    s.bytes += n as u64;
                }
                Err(_) => s.send_errors += 1,
            }
        }
    }
    Ok(s)
}

/// `r` with its origin written into its lines, so that a receiver without origin detection tags
/// them as the capturing one did: `|c:ID` on a metric line without its own, a `container_id:ID`
/// tag on an event or service check without one (before a check's `m:` message, which ends it).
/// A record without an origin is returned as it is.
pub fn with_origin(mut r: Record) -> Record {
    let Ok(id) = std::str::from_utf8(&r.origin) else {
        return r;
    };
    if id.is_empty() {
        return r;
    }
    let mut out = Vec::with_capacity(r.payload.len() + 64);
    for (i, line) in r.payload.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        write_with_origin(&mut out, line, id);
    }
    r.payload = out;
    r
}

fn write_with_origin(out: &mut Vec<u8>, line: &[u8], id: &str) {
    let has = |needle: &[u8]| line.windows(needle.len()).any(|w| w == needle);
    let tag = format!("|#container_id:{id}");
    if line.is_empty() {
        return;
    }
    if line.starts_with(b"_e{") {
        out.extend_from_slice(line);
        if !has(b"#container_id:") && !has(b",container_id:") {
            out.extend_from_slice(tag.as_bytes());
        }
    } else if line.starts_with(b"_sc|") {
        if has(b"#container_id:") || has(b",container_id:") {
            out.extend_from_slice(line);
            return;
        }
        let message = line.windows(3).position(|w| w == b"|m:");
        let (head, tail) = line.split_at(message.unwrap_or(line.len()));
        out.extend_from_slice(head);
        out.extend_from_slice(tag.as_bytes());
        out.extend_from_slice(tail);
    } else {
        out.extend_from_slice(line);
        let own = line
            .split(|&b| b == b'|')
            .skip(1)
            .any(|s| s.starts_with(b"c:") && s.len() > 2);
        if !own {
            out.extend_from_slice(b"|c:");
            out.extend_from_slice(id.as_bytes());
        }
    }
}

/// The datagrams that replay `r`: the payload whole if it fits in `max` bytes, else split
/// after newlines into pieces of at most `max` bytes (a longer line alone). A record the
/// receiver cut keeps only its complete lines.
pub fn datagrams(r: &Record, max: usize) -> Vec<&[u8]> {
    let mut payload = r.payload.as_slice();
    if r.truncated {
        let end = payload
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        payload = payload.get(..end).unwrap_or_default();
    }
    if payload.is_empty() {
        return Vec::new();
    }
    if payload.len() <= max {
        return vec![payload];
    }
    let mut out = Vec::new();
    let mut start = 0;
    // End of the last complete line after `start` that still fits.
    let mut fits = start;
    let mut pos = 0;
    while pos < payload.len() {
        let end = payload
            .get(pos..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
            .map_or(payload.len(), |i| pos + i + 1);
        if end - start > max && fits > start {
            out.extend(payload.get(start..fits));
            start = fits;
        }
        if end - start > max {
            // One line longer than a datagram: alone.
            out.extend(payload.get(start..end));
            start = end;
        }
        fits = end;
        pos = end;
    }
    if start < payload.len() {
        out.extend(payload.get(start..));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::capture::Transport;

    fn rec(payload: &[u8], truncated: bool) -> Record {
        Record {
            transport: Transport::Tcp,
            truncated,
            offset_ns: 0,
            origin: Vec::new(),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn small_records_go_whole() {
        let r = rec(b"a:1|c\nb:2|c", false);
        assert_eq!(datagrams(&r, 100), vec![&b"a:1|c\nb:2|c"[..]]);
        assert!(datagrams(&rec(b"", false), 100).is_empty());
    }

    #[test]
    fn large_records_split_after_newlines() {
        let r = rec(b"aaaa\nbbbb\ncccc\ndd", false);
        assert_eq!(
            datagrams(&r, 10),
            vec![&b"aaaa\nbbbb\n"[..], &b"cccc\ndd"[..]]
        );
        // A line longer than a datagram goes alone; the lines around it keep their order.
        let r = rec(b"aa\nbbbbbbbbbbbbbb\ncc\n", false);
        assert_eq!(
            datagrams(&r, 5),
            vec![&b"aa\n"[..], &b"bbbbbbbbbbbbbb\n"[..], &b"cc\n"[..]]
        );
    }

    #[test]
    fn split_pieces_hold_every_byte_once_and_fit() {
        let payload: Vec<u8> = (0..500u32)
            .flat_map(|i| format!("metric.{i}:{}|c\n", i * 7).into_bytes())
            .collect();
        let r = rec(&payload, false);
        let parts = datagrams(&r, 256);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.len() <= 256 && p.ends_with(b"\n")));
        assert_eq!(parts.concat(), payload);
    }

    #[test]
    fn a_record_origin_is_written_into_its_lines() {
        let mut r = rec(
            b"a:1|c|#x\nb:1|c|c:own\n_e{1,1}:t|x|#k\n_sc|n|0|m:hi|there\n_sc|n|1|#container_id:mine\n",
            false,
        );
        r.origin = b"cid".to_vec();
        let got = with_origin(r);
        assert_eq!(
            String::from_utf8_lossy(&got.payload),
            "a:1|c|#x|c:cid\nb:1|c|c:own\n_e{1,1}:t|x|#k|#container_id:cid\n\
             _sc|n|0|#container_id:cid|m:hi|there\n_sc|n|1|#container_id:mine\n"
        );
        // A cut record keeps its cut: the incomplete last line is still dropped.
        let mut r = rec(b"a:1|c\nb:2", true);
        r.origin = b"cid".to_vec();
        assert_eq!(datagrams(&with_origin(r), 100), vec![&b"a:1|c|c:cid\n"[..]]);
        let plain = rec(b"a:1|c", false);
        assert_eq!(with_origin(plain).payload, b"a:1|c");
    }

    #[test]
    fn a_cut_record_loses_its_incomplete_line() {
        assert_eq!(
            datagrams(&rec(b"a:1|c\nb:2", true), 100),
            vec![&b"a:1|c\n"[..]]
        );
        assert!(datagrams(&rec(b"a:1", true), 100).is_empty());
    }
}
