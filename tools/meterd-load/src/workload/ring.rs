//! The ring of pre-generated datagrams the senders cycle through, how it is generated, and the
//! order one sender takes its datagrams in ([`Plan`]).

use std::io::Write as _;

use super::{MetricType, Rng, Spec, MAX_RING_BYTES, SET_MEMBERS};

/// One line of the ring: what the totals need to know about it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LineRec {
    /// Series index.
    pub series: u32,
    /// The value written (for sets, the member number).
    pub value: f64,
    /// Offset just past the line's last byte within its datagram (the `\n` separator excluded),
    /// so that the first `k` lines of a datagram are `datagram[..lines[k-1].end]`.
    pub end: u32,
}

/// One pre-generated datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Offset of its payload in [`Ring::bytes`].
    pub start: usize,
    /// Payload length.
    pub len: usize,
    /// Index of its first line in [`Ring::lines`].
    pub first_line: usize,
    /// Lines it holds.
    pub n_lines: usize,
}

/// The pre-generated datagrams, back to back, with per-line records for the totals.
#[derive(Clone, Debug)]
pub struct Ring {
    /// Payloads of all datagrams, concatenated.
    pub bytes: Vec<u8>,
    /// The datagrams.
    pub slots: Vec<Slot>,
    /// Every line of every datagram, in order.
    pub lines: Vec<LineRec>,
}

impl Ring {
    /// Payload of datagram `slot` cut after its first `n_lines` lines (all of them if more).
    pub fn payload(&self, slot: usize, n_lines: usize) -> &[u8] {
        let Some(s) = self.slots.get(slot) else {
            return &[];
        };
        let len = if n_lines >= s.n_lines {
            s.len
        } else if n_lines == 0 {
            0
        } else {
            self.lines
                .get(s.first_line + n_lines - 1)
                .map_or(0, |l| l.end as usize)
        };
        self.bytes.get(s.start..s.start + len).unwrap_or_default()
    }

    /// The line records of datagram `slot`.
    pub fn slot_lines(&self, slot: usize) -> &[LineRec] {
        self.slots
            .get(slot)
            .and_then(|s| self.lines.get(s.first_line..s.first_line + s.n_lines))
            .unwrap_or_default()
    }

    /// Average lines per datagram.
    pub fn avg_lines_per_datagram(&self) -> f64 {
        self.lines.len() as f64 / self.slots.len().max(1) as f64
    }
}

/// Writes one line for series `i` with a value drawn from `rng`; returns the value recorded.
fn write_line(spec: &Spec, i: u32, width: usize, rng: &mut Rng, out: &mut Vec<u8>) -> f64 {
    let kind = spec.kind_of(i);
    spec.write_name(i, width, out);
    out.push(b':');
    let value = match kind {
        MetricType::Counter => {
            let v = 1 + rng.below(3);
            let _ = write!(out, "{v}");
            v as f64
        }
        MetricType::Set => {
            let m = rng.below(SET_MEMBERS);
            let _ = write!(out, "u{m}");
            m as f64
        }
        MetricType::Gauge
        | MetricType::Timer
        | MetricType::Histogram
        | MetricType::Distribution => {
            // Gauges from 0, timers from 1: collectd leaves 0 ms samples out of its counts.
            let low = u64::from(kind != MetricType::Gauge);
            let limit = spec.value_limit.max(low + 1);
            if spec.decimals {
                let tenths = low * 10 + rng.below(limit * 10 - low * 10);
                let _ = write!(out, "{}.{}", tenths / 10, tenths % 10);
                tenths as f64 / 10.0
            } else {
                let v = low + rng.below(limit - low);
                let _ = write!(out, "{v}");
                v as f64
            }
        }
    };
    out.push(b'|');
    out.extend_from_slice(kind.as_str().as_bytes());
    let rate = spec.rate_of(i);
    if rate < 1.0 {
        let _ = write!(out, "|@{rate}");
    }
    if spec.tags > 0 {
        out.extend_from_slice(b"|#");
        for (k, tag) in spec.tags_of(i).iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            out.extend_from_slice(tag.as_bytes());
        }
    }
    value
}

/// Generates the ring: lines visit the series in a fresh seeded permutation per pass (so every
/// series appears equally often), packed greedily into datagrams of at most `datagram_bytes` and
/// `lines_per_datagram` lines, until there are at least `min_datagrams` datagrams and two passes
/// over the series.
pub fn build_ring(spec: &Spec, seed: u64, min_datagrams: usize) -> Result<Ring, String> {
    spec.validate()?;
    let mut rng = Rng::new(seed);
    let n = spec.series;
    let width = spec.name_width();
    let mut order: Vec<u32> = (0..n).collect();
    let mut pos = order.len();
    let min_lines = 2 * u64::from(n);
    let mut ring = Ring {
        bytes: Vec::new(),
        slots: Vec::new(),
        lines: Vec::new(),
    };
    let mut line = Vec::with_capacity(256);
    let mut cur = Slot {
        start: 0,
        len: 0,
        first_line: 0,
        n_lines: 0,
    };
    loop {
        if pos == order.len() {
            shuffle(&mut order, &mut rng);
            pos = 0;
        }
        let Some(&series) = order.get(pos) else {
            return Err("empty series order".into());
        };
        pos += 1;
        line.clear();
        let value = write_line(spec, series, width, &mut rng, &mut line);
        if line.len() > spec.datagram_bytes {
            return Err(format!(
                "a line of {} bytes does not fit --datagram-bytes {}",
                line.len(),
                spec.datagram_bytes
            ));
        }
        let full_lines = spec.lines_per_datagram > 0 && cur.n_lines >= spec.lines_per_datagram;
        let full_bytes = cur.n_lines > 0 && cur.len + 1 + line.len() > spec.datagram_bytes;
        if full_lines || full_bytes {
            ring.slots.push(cur);
            let enough =
                ring.slots.len() >= min_datagrams.max(1) && ring.lines.len() as u64 >= min_lines;
            if enough {
                return Ok(ring);
            }
            if ring.bytes.len() > MAX_RING_BYTES {
                return Err(format!(
                    "the ring would exceed {MAX_RING_BYTES} bytes: fewer series or datagrams"
                ));
            }
            cur = Slot {
                start: ring.bytes.len(),
                len: 0,
                first_line: ring.lines.len(),
                n_lines: 0,
            };
        }
        if cur.n_lines > 0 {
            ring.bytes.push(b'\n');
            cur.len += 1;
        }
        ring.bytes.extend_from_slice(&line);
        cur.len += line.len();
        cur.n_lines += 1;
        ring.lines.push(LineRec {
            series,
            value,
            end: u32::try_from(cur.len).unwrap_or(u32::MAX),
        });
    }
}

/// Fisher–Yates with our PRNG.
fn shuffle(v: &mut [u32], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = usize::try_from(rng.below(i as u64 + 1)).unwrap_or(0);
        v.swap(i, j);
    }
}

/// The datagrams one sender sends, in order: slots `thread, thread + threads, …` round the ring,
/// the last one cut so that exactly `count` lines go out when a count is set.
#[derive(Clone, Debug)]
pub struct Plan {
    next: u64,
    thread: u64,
    threads: u64,
    remaining: Option<u64>,
}

impl Plan {
    /// The plan of sender `thread` of `threads`, for `count` lines (`None` = until stopped).
    pub fn new(thread: usize, threads: usize, count: Option<u64>) -> Plan {
        Plan {
            next: 0,
            thread: thread as u64,
            threads: threads.max(1) as u64,
            remaining: count,
        }
    }

    /// The next datagram: `(slot, lines to send of it)`, or `None` when the count is reached.
    pub fn next_datagram(&mut self, ring: &Ring) -> Option<(usize, usize)> {
        let slots = ring.slots.len() as u64;
        if slots == 0 || self.remaining == Some(0) {
            return None;
        }
        let slot = (self.thread + self.next.wrapping_mul(self.threads)) % slots;
        self.next += 1;
        let slot = usize::try_from(slot).ok()?;
        let full = ring.slots.get(slot)?.n_lines;
        let lines = match self.remaining.as_mut() {
            Some(r) => {
                let n = (*r).min(full as u64);
                *r -= n;
                usize::try_from(n).unwrap_or(full)
            }
            None => full,
        };
        Some((slot, lines))
    }
}
