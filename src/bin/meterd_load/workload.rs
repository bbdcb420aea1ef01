//! What meterd-load sends: the series (name, type, tags, sample rate), the lines, and the ring of
//! pre-generated datagrams the senders cycle through, plus the exact totals of any multiset of
//! those datagrams.
//!
//! Everything here is a pure function of the [`Spec`] and the seed, so the same arguments give
//! byte-identical datagrams and identical totals. Series properties (type, tags, rate) depend on
//! the series index only; the seed picks the order of lines and their values.

use std::collections::BTreeMap;
use std::io::Write as _;

/// Largest UDP payload over IPv4.
pub const MAX_DATAGRAM_BYTES: usize = 65_507;
/// Smallest `--datagram-bytes` accepted: below it a tagged line may not fit.
pub const MIN_DATAGRAM_BYTES: usize = 64;
/// Most series a workload may have (the totals keep a few words per series).
pub const MAX_SERIES: u32 = 10_000_000;
/// Most tags per line (the first eight have realistic keys, the rest `tagN`).
pub const MAX_TAGS: u32 = 16;
/// Upper bound of the ring's payload; beyond it generation is refused, not swapped.
pub const MAX_RING_BYTES: usize = 1 << 30;
/// Distinct values each tag takes: a name with `t` tags has `TAG_FANOUT^t` series.
pub const TAG_FANOUT: u64 = 4;
/// Distinct members a set series draws from (kept as a 128-bit mask in the totals).
pub const SET_MEMBERS: u64 = 100;
/// The first component of every name unless `--prefix` says otherwise.
pub const DEFAULT_PREFIX: &str = "load";
/// Longest `--prefix` in bytes (it is repeated on every line).
pub const MAX_PREFIX_BYTES: usize = 64;

/// The metric types meterd-load can emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `c`
    Counter,
    /// `g`
    Gauge,
    /// `s`
    Set,
    /// `ms`
    Timer,
    /// `h`
    Histogram,
    /// `d`
    Distribution,
}

impl Kind {
    /// Every kind, in the order of [`Kind::index`].
    pub const ALL: [Kind; 6] = [
        Kind::Counter,
        Kind::Gauge,
        Kind::Set,
        Kind::Timer,
        Kind::Histogram,
        Kind::Distribution,
    ];

    /// The statsd type code, also the second component of the generated names.
    pub const fn code(self) -> &'static str {
        match self {
            Kind::Counter => "c",
            Kind::Gauge => "g",
            Kind::Set => "s",
            Kind::Timer => "ms",
            Kind::Histogram => "h",
            Kind::Distribution => "d",
        }
    }

    /// Position in [`Kind::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Kind::Counter => 0,
            Kind::Gauge => 1,
            Kind::Set => 2,
            Kind::Timer => 3,
            Kind::Histogram => 4,
            Kind::Distribution => 5,
        }
    }

    /// The kind for a statsd type code.
    pub fn from_code(code: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// Whether lines of this kind carry `|@rate` (gauges and sets ignore rates, so they get none).
    pub const fn sampled(self) -> bool {
        match self {
            Kind::Counter | Kind::Timer | Kind::Histogram | Kind::Distribution => true,
            Kind::Gauge | Kind::Set => false,
        }
    }
}

/// The shape of a workload: which series exist and how lines are packed into datagrams.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// First component of every name (`PREFIX.<type>.m<index>`): runs with different prefixes
    /// send disjoint series, e.g. to churn series over a soak.
    pub prefix: String,
    /// Distinct series (name + type + tags).
    pub series: u32,
    /// Types with relative weights; series `i` takes its type from `i mod Σweights`.
    pub types: Vec<(Kind, u32)>,
    /// Tags per line; each has [`TAG_FANOUT`] values, so the series of one name differ in tags.
    pub tags: u32,
    /// Sample rates, each in (0, 1], assigned to the series of sampled kinds by index hash; a
    /// rate of 1 is not written.
    pub sample_rates: Vec<f64>,
    /// Values with one decimal (`37.5`) instead of integers, for gauges, timers, histograms and
    /// distributions.
    pub decimals: bool,
    /// Largest datagram payload.
    pub datagram_bytes: usize,
    /// Most lines per datagram; 0 = as many as fit in `datagram_bytes`.
    pub lines_per_datagram: usize,
}

impl Spec {
    /// Plain statsd as the peers understand it: no tags, no sample rates, 10k series of counters,
    /// timers and gauges, as many short lines as fit in 1432 bytes (about 70).
    pub fn plain() -> Spec {
        Spec {
            prefix: DEFAULT_PREFIX.to_owned(),
            series: 10_000,
            types: vec![(Kind::Counter, 5), (Kind::Timer, 3), (Kind::Gauge, 2)],
            tags: 0,
            sample_rates: vec![1.0],
            decimals: false,
            datagram_bytes: 1432,
            lines_per_datagram: 0,
        }
    }

    /// DogStatsD: 100k series, 3 tags per line, sample rates, histograms and distributions,
    /// 25 lines per datagram.
    pub fn dogstatsd() -> Spec {
        Spec {
            prefix: DEFAULT_PREFIX.to_owned(),
            series: 100_000,
            types: vec![
                (Kind::Counter, 3),
                (Kind::Gauge, 2),
                (Kind::Timer, 1),
                (Kind::Histogram, 2),
                (Kind::Distribution, 2),
            ],
            tags: 3,
            sample_rates: vec![1.0, 0.5, 0.25],
            decimals: true,
            datagram_bytes: 1432,
            lines_per_datagram: 25,
        }
    }

    /// Checks the ranges; the message names the option.
    pub fn validate(&self) -> Result<(), String> {
        let prefix_ok = !self.prefix.is_empty()
            && self.prefix.len() <= MAX_PREFIX_BYTES
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            && !self.prefix.starts_with('.')
            && !self.prefix.ends_with('.')
            && !self.prefix.contains("..");
        if !prefix_ok {
            return Err(format!(
                "--prefix must be 1..={MAX_PREFIX_BYTES} bytes of [A-Za-z0-9_.-], \
                 without a leading, trailing or doubled dot"
            ));
        }
        if self.series == 0 || self.series > MAX_SERIES {
            return Err(format!("--series must be 1..={MAX_SERIES}"));
        }
        if self.types.is_empty() || self.types.iter().all(|&(_, w)| w == 0) {
            return Err("--types needs at least one type with a weight above 0".into());
        }
        if self.types.iter().map(|&(_, w)| u64::from(w)).sum::<u64>() > 1_000_000 {
            return Err("--types weights must add up to at most 1000000".into());
        }
        if self.tags > MAX_TAGS {
            return Err(format!("--tags must be 0..={MAX_TAGS}"));
        }
        if self.sample_rates.is_empty()
            || self
                .sample_rates
                .iter()
                .any(|r| !r.is_finite() || *r <= 0.0 || *r > 1.0)
        {
            return Err("--sample-rate values must be in (0, 1]".into());
        }
        if !(MIN_DATAGRAM_BYTES..=MAX_DATAGRAM_BYTES).contains(&self.datagram_bytes) {
            return Err(format!(
                "--datagram-bytes must be {MIN_DATAGRAM_BYTES}..={MAX_DATAGRAM_BYTES}"
            ));
        }
        Ok(())
    }

    /// Sum of the type weights.
    fn weight_total(&self) -> u64 {
        self.types.iter().map(|&(_, w)| u64::from(w)).sum()
    }

    /// Series sharing one name: `TAG_FANOUT^tags`, saturating.
    fn combos(&self) -> u64 {
        TAG_FANOUT.saturating_pow(self.tags)
    }

    /// The type of series `i`.
    pub fn kind_of(&self, i: u32) -> Kind {
        let total = self.weight_total().max(1);
        let mut pos = u64::from(i) % total;
        for &(kind, w) in &self.types {
            if pos < u64::from(w) {
                return kind;
            }
            pos -= u64::from(w);
        }
        Kind::Counter
    }

    /// The sample rate of series `i` (1 for gauges and sets).
    pub fn rate_of(&self, i: u32) -> f64 {
        let n = self.sample_rates.len() as u64;
        if !self.kind_of(i).sampled() || n == 0 {
            return 1.0;
        }
        let pick = usize::try_from(splitmix64(u64::from(i)) % n).unwrap_or(0);
        self.sample_rates.get(pick).copied().unwrap_or(1.0)
    }

    /// Digits of the largest name index, so that names of one workload have one length.
    fn name_width(&self) -> usize {
        let max_index = u64::from(self.series.saturating_sub(1)) / self.combos().max(1);
        max_index.to_string().len().max(NAME_DIGITS)
    }

    /// Writes series `i`'s name: `<prefix>.<code>.m<index>` (prefix `load` by default). The type
    /// code follows the prefix so that statsd's `sumlog` backend groups its totals by type.
    fn write_name(&self, i: u32, width: usize, out: &mut Vec<u8>) {
        let index = u64::from(i) / self.combos().max(1);
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "{}.{}.m{index:0width$}",
            self.prefix,
            self.kind_of(i).code()
        );
    }

    /// The tags of series `i`, in the order they are written.
    pub fn tags_of(&self, i: u32) -> Vec<String> {
        let combo = u64::from(i) % self.combos().max(1);
        (0..self.tags)
            .map(|k| {
                let value = combo / TAG_FANOUT.saturating_pow(k) % TAG_FANOUT;
                match TAG_KEYS.get(k as usize) {
                    Some((key, prefix)) => format!("{key}:{prefix}{value}"),
                    None => format!("tag{k}:v{value}"),
                }
            })
            .collect()
    }

    /// Series `i`'s identity as the totals name it: the name, then `|#` and the tags sorted by
    /// bytes and joined with `,` when it has tags (the aggregator's series identity, SPEC §2).
    pub fn series_key(&self, i: u32) -> String {
        let mut name = Vec::new();
        self.write_name(i, self.name_width(), &mut name);
        let mut key = String::from_utf8_lossy(&name).into_owned();
        let mut tags = self.tags_of(i);
        if !tags.is_empty() {
            tags.sort();
            key.push_str("|#");
            key.push_str(&tags.join(","));
        }
        key
    }
}

/// Least digits of the name index: sizes the plain preset's lines to ~70 per 1432 bytes (with the
/// default prefix; a longer prefix packs fewer lines into a datagram).
const NAME_DIGITS: usize = 5;

/// Tag keys and value prefixes: 3 tags add 32 bytes to a line, which sizes the dogstatsd preset's
/// lines to a little over 25 per 1432 bytes.
const TAG_KEYS: [(&str, &str); 8] = [
    ("env", "env"),
    ("service", "svc"),
    ("region", "r"),
    ("zone", "z"),
    ("version", "v1."),
    ("team", "team-"),
    ("shard", "s"),
    ("pod", "pod-"),
];

/// SplitMix64: a tiny, well-mixed PRNG step; enough for workloads, no dependency.
pub const fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seeded stream of [`splitmix64`] values.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A stream for `seed`.
    pub const fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.0)
    }

    /// A value in `0..n` (`n > 0`; the modulo bias is irrelevant for workloads).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

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
        Kind::Counter => {
            let v = 1 + rng.below(3);
            let _ = write!(out, "{v}");
            v as f64
        }
        Kind::Set => {
            let m = rng.below(SET_MEMBERS);
            let _ = write!(out, "u{m}");
            m as f64
        }
        Kind::Gauge | Kind::Timer | Kind::Histogram | Kind::Distribution => {
            // Gauges from 0, timers from 1: collectd leaves 0 ms samples out of its counts.
            let low = u64::from(kind != Kind::Gauge);
            if spec.decimals {
                let tenths = low * 10 + rng.below(10_000 - low * 10);
                let _ = write!(out, "{}.{}", tenths / 10, tenths % 10);
                tenths as f64 / 10.0
            } else {
                let v = low + rng.below(10_000 - low);
                let _ = write!(out, "{v}");
                v as f64
            }
        }
    };
    out.push(b'|');
    out.extend_from_slice(kind.code().as_bytes());
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

/// How often each datagram of the ring went out whole, plus the datagrams that went out cut
/// (the last one of a `--count` run): exactly what was sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Per slot: times sent whole.
    pub slot_counts: Vec<u64>,
    /// `(slot, lines)`: a datagram sent once with only its first `lines` lines.
    pub partial: Vec<(usize, usize)>,
}

impl Sent {
    /// Nothing sent yet, for a ring of `slots` datagrams.
    pub fn new(slots: usize) -> Sent {
        Sent {
            slot_counts: vec![0; slots],
            partial: Vec::new(),
        }
    }

    /// Adds another sender's record.
    pub fn merge(&mut self, other: &Sent) {
        if self.slot_counts.len() < other.slot_counts.len() {
            self.slot_counts.resize(other.slot_counts.len(), 0);
        }
        for (a, b) in self.slot_counts.iter_mut().zip(&other.slot_counts) {
            *a += b;
        }
        self.partial.extend_from_slice(&other.partial);
    }
}

/// Per-series totals of what was sent, as the aggregator must compute them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// Lines by [`Kind::index`].
    pub lines_by_kind: [u64; 6],
    /// Counter series → Σ value ÷ rate.
    pub counters: BTreeMap<u32, f64>,
    /// Timer, histogram and distribution series → (samples sent, Σ 1 ÷ rate).
    pub timers: BTreeMap<u32, (u64, f64)>,
    /// Gauge series → lines sent.
    pub gauges: BTreeMap<u32, u64>,
    /// Set series → members sent (bit `m` for member `u<m>`).
    pub sets: BTreeMap<u32, u128>,
}

impl Totals {
    /// Totals of `sent` over `ring`. Per-slot contributions are multiplied by the slot's count,
    /// so this costs one pass over the ring whatever was sent.
    pub fn of(spec: &Spec, ring: &Ring, sent: &Sent) -> Totals {
        let mut t = Totals::default();
        for (slot, &times) in sent.slot_counts.iter().enumerate() {
            if times > 0 {
                for l in ring.slot_lines(slot) {
                    t.add(spec, l, times);
                }
            }
        }
        for &(slot, n) in &sent.partial {
            for l in ring.slot_lines(slot).iter().take(n) {
                t.add(spec, l, 1);
            }
        }
        t
    }

    fn add(&mut self, spec: &Spec, l: &LineRec, times: u64) {
        let kind = spec.kind_of(l.series);
        if let Some(n) = self.lines_by_kind.get_mut(kind.index()) {
            *n += times;
        }
        let rate = spec.rate_of(l.series);
        match kind {
            Kind::Counter => {
                *self.counters.entry(l.series).or_default() += times as f64 * (l.value / rate)
            }
            Kind::Timer | Kind::Histogram | Kind::Distribution => {
                let e = self.timers.entry(l.series).or_default();
                e.0 += times;
                e.1 += times as f64 / rate;
            }
            Kind::Gauge => *self.gauges.entry(l.series).or_default() += times,
            Kind::Set => {
                *self.sets.entry(l.series).or_default() |= 1u128 << (l.value as u32).min(127)
            }
        }
    }

    /// All lines.
    pub fn lines(&self) -> u64 {
        self.lines_by_kind.iter().sum()
    }

    /// The per-series part of the totals file.
    pub fn to_json(&self, spec: &Spec) -> serde_json::Value {
        let mut by_kind = serde_json::Map::new();
        for k in Kind::ALL {
            let n = self.lines_by_kind.get(k.index()).copied().unwrap_or(0);
            if n > 0 {
                by_kind.insert(k.code().into(), n.into());
            }
        }
        let counters: serde_json::Map<String, serde_json::Value> = self
            .counters
            .iter()
            .map(|(&i, &v)| (spec.series_key(i), v.into()))
            .collect();
        let timers: serde_json::Map<String, serde_json::Value> = self
            .timers
            .iter()
            .map(|(&i, &(samples, count))| {
                let kind = spec.kind_of(i).code();
                (
                    spec.series_key(i),
                    serde_json::json!({"type": kind, "samples": samples, "count": count}),
                )
            })
            .collect();
        let gauges: serde_json::Map<String, serde_json::Value> = self
            .gauges
            .iter()
            .map(|(&i, &n)| (spec.series_key(i), n.into()))
            .collect();
        let sets: serde_json::Map<String, serde_json::Value> = self
            .sets
            .iter()
            .map(|(&i, &m)| (spec.series_key(i), m.count_ones().into()))
            .collect();
        let series = self.counters.len() + self.timers.len() + self.gauges.len() + self.sets.len();
        serde_json::json!({
            "lines_by_type": by_kind,
            "series_sent": series,
            "counter_sum": self.counters.values().sum::<f64>(),
            "timer_samples": self.timers.values().map(|t| t.0).sum::<u64>(),
            "timer_count": self.timers.values().map(|t| t.1).sum::<f64>(),
            "counters": counters,
            "timers": timers,
            "gauges": gauges,
            "sets": sets,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A naive parser of the generated lines, independent of the generator's records.
    fn parse(line: &str) -> (String, f64, String, f64, Vec<String>) {
        let (name, rest) = line.split_once(':').expect("name");
        let mut sections = rest.split('|');
        let value = sections.next().expect("value");
        let kind = sections.next().expect("type").to_string();
        let value = if kind == "s" {
            value.trim_start_matches('u').parse().expect("member")
        } else {
            value.parse().expect("number")
        };
        let mut rate = 1.0;
        let mut tags = Vec::new();
        for s in sections {
            if let Some(r) = s.strip_prefix('@') {
                rate = r.parse().expect("rate");
            } else if let Some(t) = s.strip_prefix('#') {
                tags = t.split(',').map(String::from).collect();
            } else {
                panic!("unexpected section {s}");
            }
        }
        tags.sort();
        let key = if tags.is_empty() {
            name.to_string()
        } else {
            format!("{name}|#{}", tags.join(","))
        };
        (key, value, kind, rate, tags)
    }

    /// Totals computed by parsing every sent datagram back, line by line.
    fn parsed_totals(ring: &Ring, sent: &Sent) -> serde_json::Value {
        let mut counters: BTreeMap<String, f64> = BTreeMap::new();
        let mut timers: BTreeMap<String, (u64, f64)> = BTreeMap::new();
        let mut lines = 0u64;
        let mut visit = |payload: &[u8], times: u64| {
            let text = std::str::from_utf8(payload).expect("utf-8");
            for line in text.split('\n') {
                let (key, value, kind, rate, _) = parse(line);
                lines += times;
                match kind.as_str() {
                    "c" => *counters.entry(key).or_default() += times as f64 * (value / rate),
                    "ms" | "h" | "d" => {
                        let e = timers.entry(key).or_default();
                        e.0 += times;
                        e.1 += times as f64 / rate;
                    }
                    _ => {}
                }
            }
        };
        for (slot, &times) in sent.slot_counts.iter().enumerate() {
            if times > 0 {
                visit(ring.payload(slot, usize::MAX), times);
            }
        }
        for &(slot, n) in &sent.partial {
            visit(ring.payload(slot, n), 1);
        }
        serde_json::json!({"lines": lines, "counters": counters, "timers": timers})
    }

    fn small(mut spec: Spec, series: u32) -> Spec {
        spec.series = series;
        spec
    }

    #[test]
    fn same_seed_same_ring() {
        let spec = small(Spec::dogstatsd(), 2000);
        let a = build_ring(&spec, 7, 64).expect("ring");
        let b = build_ring(&spec, 7, 64).expect("ring");
        assert_eq!(a.bytes, b.bytes);
        assert_eq!(a.slots, b.slots);
        assert_eq!(a.lines, b.lines);
        let c = build_ring(&spec, 8, 64).expect("ring");
        assert_ne!(a.bytes, c.bytes);
    }

    #[test]
    fn datagrams_respect_size_and_line_limits() {
        for (spec, max_lines) in [
            (Spec::plain(), usize::MAX),
            (small(Spec::dogstatsd(), 5000), 25),
        ] {
            let ring = build_ring(&spec, 1, 256).expect("ring");
            for (i, s) in ring.slots.iter().enumerate() {
                assert!(s.len <= spec.datagram_bytes, "slot {i}: {} bytes", s.len);
                assert!(s.n_lines >= 1 && s.n_lines <= max_lines);
                let payload = ring.payload(i, usize::MAX);
                assert_eq!(payload.len(), s.len);
                assert_eq!(payload.split(|&b| b == b'\n').count(), s.n_lines);
                assert!(!payload.ends_with(b"\n"));
            }
        }
        let mut tiny = Spec::plain();
        tiny.datagram_bytes = 64;
        tiny.lines_per_datagram = 2;
        let ring = build_ring(&tiny, 1, 16).expect("ring");
        assert!(ring.slots.iter().all(|s| s.len <= 64 && s.n_lines <= 2));
    }

    #[test]
    fn presets_pack_as_the_issue_describes() {
        let plain = build_ring(&Spec::plain(), 1, 1024).expect("ring");
        let lpd = plain.avg_lines_per_datagram();
        assert!(
            (65.0..=75.0).contains(&lpd),
            "plain: {lpd} lines per datagram"
        );
        let dd = build_ring(&Spec::dogstatsd(), 1, 1024).expect("ring");
        let lpd = dd.avg_lines_per_datagram();
        assert!(
            (23.0..=25.0).contains(&lpd),
            "dogstatsd: {lpd} lines per datagram"
        );
    }

    #[test]
    fn every_series_appears_in_the_ring() {
        let spec = small(Spec::dogstatsd(), 3000);
        let ring = build_ring(&spec, 3, 1).expect("ring");
        let mut seen = vec![0u32; 3000];
        for l in &ring.lines {
            seen[l.series as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n >= 2), "two passes over the series");
    }

    #[test]
    fn totals_equal_the_parsed_datagrams() {
        for spec in [small(Spec::plain(), 500), small(Spec::dogstatsd(), 4000)] {
            let ring = build_ring(&spec, 11, 128).expect("ring");
            let mut sent = Sent::new(ring.slots.len());
            let mut rng = Rng::new(99);
            for c in sent.slot_counts.iter_mut() {
                *c = rng.below(4);
            }
            sent.partial.push((3, 2));
            sent.partial.push((5, 1));
            let totals = Totals::of(&spec, &ring, &sent);
            let json = totals.to_json(&spec);
            let parsed = parsed_totals(&ring, &sent);
            assert_eq!(totals.lines(), parsed["lines"].as_u64().expect("lines"));
            assert_eq!(json["counters"], parsed["counters"]);
            let timers: BTreeMap<String, (u64, f64)> = json["timers"]
                .as_object()
                .expect("timers")
                .iter()
                .map(|(k, v)| {
                    let samples = v["samples"].as_u64().expect("samples");
                    let count = v["count"].as_f64().expect("count");
                    (k.clone(), (samples, count))
                })
                .collect();
            assert_eq!(serde_json::json!(timers), parsed["timers"]);
        }
    }

    #[test]
    fn sampled_counter_sums_divide_by_the_rate() {
        let mut spec = small(Spec::dogstatsd(), 64);
        spec.types = vec![(Kind::Counter, 1)];
        spec.sample_rates = vec![0.25];
        let ring = build_ring(&spec, 5, 4).expect("ring");
        let mut sent = Sent::new(ring.slots.len());
        sent.slot_counts[0] = 1;
        let totals = Totals::of(&spec, &ring, &sent);
        let raw: f64 = ring.slot_lines(0).iter().map(|l| l.value).sum();
        assert_eq!(totals.counters.values().sum::<f64>(), raw * 4.0);
        assert!(std::str::from_utf8(ring.payload(0, 1))
            .expect("utf-8")
            .contains("|c|@0.25|#"));
    }

    #[test]
    fn series_keys_are_unique_and_tags_sorted() {
        let spec = small(Spec::dogstatsd(), 10_000);
        let keys: std::collections::HashSet<String> =
            (0..spec.series).map(|i| spec.series_key(i)).collect();
        assert_eq!(keys.len(), 10_000);
        let key = spec.series_key(77);
        let tags = key.split_once("|#").expect("tags").1;
        let list: Vec<&str> = tags.split(',').collect();
        let mut sorted = list.clone();
        sorted.sort();
        assert_eq!(list, sorted);
        assert_eq!(list.len(), 3);
    }

    #[test]
    fn kinds_follow_the_weights() {
        let spec = Spec::plain();
        let mut n = [0u32; 6];
        for i in 0..spec.series {
            n[spec.kind_of(i).index()] += 1;
        }
        assert_eq!(n[Kind::Counter.index()], 5000);
        assert_eq!(n[Kind::Timer.index()], 3000);
        assert_eq!(n[Kind::Gauge.index()], 2000);
        assert!((0..spec.series).all(|i| spec.rate_of(i) == 1.0));
    }

    #[test]
    fn plans_send_exactly_the_count() {
        let spec = small(Spec::plain(), 300);
        let ring = build_ring(&spec, 1, 8).expect("ring");
        for (threads, count) in [(1usize, 1u64), (1, 12_345), (3, 10_000), (2, 71)] {
            let mut total = 0u64;
            let mut slots_seen = std::collections::HashSet::new();
            for t in 0..threads {
                let share = count / threads as u64 + u64::from((t as u64) < count % threads as u64);
                let mut plan = Plan::new(t, threads, Some(share));
                let mut mine = 0u64;
                while let Some((slot, n)) = plan.next_datagram(&ring) {
                    assert!(n >= 1 && n <= ring.slots[slot].n_lines);
                    mine += n as u64;
                    slots_seen.insert((t, slot));
                }
                assert_eq!(mine, share);
                total += mine;
            }
            assert_eq!(total, count);
        }
        let mut open = Plan::new(0, 1, None);
        for _ in 0..3 * ring.slots.len() {
            assert!(open.next_datagram(&ring).is_some());
        }
    }

    #[test]
    fn oversized_lines_are_refused() {
        let mut spec = Spec::dogstatsd();
        spec.tags = 16;
        spec.datagram_bytes = 64;
        assert!(build_ring(&spec, 1, 1).is_err());
    }

    #[test]
    fn prefix_renames_every_series() {
        let mut spec = small(Spec::dogstatsd(), 1000);
        assert!(spec.series_key(7).starts_with("load.h.m"));
        spec.prefix = "soak-0003".into();
        let ring = build_ring(&spec, 1, 16).expect("ring");
        let keys: std::collections::HashSet<String> =
            (0..spec.series).map(|i| spec.series_key(i)).collect();
        assert!(keys.iter().all(|k| k.starts_with("soak-0003.")));
        for slot in 0..ring.slots.len() {
            let text = std::str::from_utf8(ring.payload(slot, usize::MAX)).expect("utf-8");
            for line in text.split('\n') {
                assert!(line.starts_with("soak-0003."), "{line}");
                assert!(keys.contains(&parse(line).0), "{line}");
            }
        }
    }

    #[test]
    fn validation_names_the_option() {
        for bad in [
            "",
            ".x",
            "x.",
            "a..b",
            "a b",
            "a:b",
            "a|b",
            "a#b",
            &"p".repeat(65),
        ] {
            let mut spec = Spec::plain();
            spec.prefix = bad.into();
            assert!(spec.validate().unwrap_err().contains("--prefix"), "{bad:?}");
        }
        let mut spec = Spec::plain();
        spec.prefix = "soak.g-1_x".into();
        assert!(spec.validate().is_ok());
        let mut spec = Spec::plain();
        spec.sample_rates = vec![0.0];
        assert!(spec.validate().unwrap_err().contains("--sample-rate"));
        let mut spec = Spec::plain();
        spec.series = 0;
        assert!(spec.validate().unwrap_err().contains("--series"));
        let mut spec = Spec::plain();
        spec.datagram_bytes = 70_000;
        assert!(spec.validate().unwrap_err().contains("--datagram-bytes"));
    }
}
