//! `meterd send`: sends statsd lines over UDP or a Unix datagram socket, for people and scripts.

use std::io::BufRead;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use anyhow::{Context, Result};

/// Largest datagram `send` builds when packing several lines (fits a 1500-byte MTU).
const PACK_BYTES: usize = 1432;

/// Sends `lines` (or stdin's lines when the only argument is `-`) to `to`, packing several lines
/// per datagram. Returns the number of lines sent.
pub fn send(lines: &[String], to: &str) -> Result<usize> {
    let socket = udp_to(to)?;
    send_packets(lines, to, |p| socket.send(p))
}

/// A UDP socket connected to `to` (`HOST:PORT`, `[V6]:PORT`), bound to the matching family.
pub fn udp_to(to: &str) -> Result<UdpSocket> {
    let socket = UdpSocket::bind(if to.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    })
    .context("cannot open a UDP socket")?;
    socket
        .connect(to)
        .with_context(|| format!("cannot resolve or reach {to}"))?;
    Ok(socket)
}

/// [`send`] to the Unix datagram socket at `path` (a `statsd_unix` listener).
pub fn send_unix(lines: &[String], path: &Path) -> Result<usize> {
    let socket = UnixDatagram::unbound().context("cannot open a Unix datagram socket")?;
    socket
        .connect(path)
        .with_context(|| format!("cannot reach {}", path.display()))?;
    send_packets(lines, &path.display().to_string(), |p| socket.send(p))
}

/// Packs `lines` (or stdin's) into datagrams and hands each to `send`.
fn send_packets(
    lines: &[String],
    to: &str,
    send: impl Fn(&[u8]) -> std::io::Result<usize>,
) -> Result<usize> {
    let mut packet = Vec::with_capacity(PACK_BYTES);
    let mut sent = 0;
    let mut push = |line: &str, packet: &mut Vec<u8>| -> Result<()> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Ok(());
        }
        if !packet.is_empty() && packet.len() + 1 + line.len() > PACK_BYTES {
            send(packet).with_context(|| format!("cannot send to {to}"))?;
            packet.clear();
        }
        if !packet.is_empty() {
            packet.push(b'\n');
        }
        packet.extend_from_slice(line.as_bytes());
        sent += 1;
        Ok(())
    };
    if lines.len() == 1 && lines.first().is_some_and(|l| l == "-") {
        let mut stdin = std::io::BufReader::with_capacity(64 * 1024, std::io::stdin());
        let mut line = String::new();
        loop {
            line.clear();
            if stdin.read_line(&mut line).context("cannot read stdin")? == 0 {
                break;
            }
            push(&line, &mut packet)?;
            // Nothing more waiting: what is packed goes now, not at the end of input, so the
            // lines of a slow writer (`tail -f … | meterd send -`) are sent as they come.
            if stdin.buffer().is_empty() && !packet.is_empty() {
                send(&packet).with_context(|| format!("cannot send to {to}"))?;
                packet.clear();
            }
        }
    } else {
        for line in lines {
            push(line, &mut packet)?;
        }
    }
    if !packet.is_empty() {
        send(&packet).with_context(|| format!("cannot send to {to}"))?;
    }
    Ok(sent)
}
