//! The shape of a workload ([`Spec`]): its series (name, type, tags, sample rate), their names
//! and the keys the totals give them.

use std::io::Write as _;

use super::{
    is_sampled, splitmix64, MetricType, DEFAULT_PREFIX, MAX_DATAGRAM_BYTES, MAX_PREFIX_BYTES,
    MAX_SERIES, MAX_TAGS, MIN_DATAGRAM_BYTES, TAG_FANOUT,
};

/// The shape of a workload: which series exist and how lines are packed into datagrams.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// First component of every name (`PREFIX.<type>.m<index>`): runs with different prefixes
    /// send disjoint series, e.g. to churn series over a soak.
    pub prefix: String,
    /// Distinct series (name + type + tags).
    pub series: u32,
    /// Types with relative weights; series `i` takes its type from `i mod Σweights`.
    pub types: Vec<(MetricType, u32)>,
    /// Tags per line; each has [`TAG_FANOUT`] values, so the series of one name differ in tags.
    pub tags: u32,
    /// Sample rates, each in (0, 1], assigned to the series of sampled kinds by index hash; a
    /// rate of 1 is not written.
    pub sample_rates: Vec<f64>,
    /// Values with one decimal (`37.5`) instead of integers, for gauges, timers, histograms and
    /// distributions.
    pub decimals: bool,
    /// Gauge, timer, histogram and distribution values are below this (counters add 1–3).
    pub value_limit: u64,
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
            types: vec![
                (MetricType::Counter, 5),
                (MetricType::Timer, 3),
                (MetricType::Gauge, 2),
            ],
            tags: 0,
            sample_rates: vec![1.0],
            decimals: false,
            value_limit: 10_000,
            datagram_bytes: 1432,
            lines_per_datagram: 0,
        }
    }

    /// The mix real plain-statsd traffic has: 10k series of every type (counters 40 %, gauges
    /// 15 %, timers 15 %, histograms, sets and distributions 10 % each), a tenth of the sampled
    /// types' series at `@0.5`, integer values 0–999, no tags, as many lines as fit in 1432 bytes.
    pub fn mixed() -> Spec {
        let mut rates = vec![1.0; 9];
        rates.push(0.5);
        Spec {
            prefix: DEFAULT_PREFIX.to_owned(),
            series: 10_000,
            types: vec![
                (MetricType::Counter, 8),
                (MetricType::Gauge, 3),
                (MetricType::Timer, 3),
                (MetricType::Histogram, 2),
                (MetricType::Set, 2),
                (MetricType::Distribution, 2),
            ],
            tags: 0,
            sample_rates: rates,
            decimals: false,
            value_limit: 1_000,
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
                (MetricType::Counter, 3),
                (MetricType::Gauge, 2),
                (MetricType::Timer, 1),
                (MetricType::Histogram, 2),
                (MetricType::Distribution, 2),
            ],
            tags: 3,
            sample_rates: vec![1.0, 0.5, 0.25],
            decimals: true,
            value_limit: 10_000,
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
    pub fn kind_of(&self, i: u32) -> MetricType {
        let total = self.weight_total().max(1);
        let mut pos = u64::from(i) % total;
        for &(kind, w) in &self.types {
            if pos < u64::from(w) {
                return kind;
            }
            pos -= u64::from(w);
        }
        MetricType::Counter
    }

    /// The sample rate of series `i` (1 for gauges and sets).
    pub fn rate_of(&self, i: u32) -> f64 {
        let n = self.sample_rates.len() as u64;
        if !is_sampled(self.kind_of(i)) || n == 0 {
            return 1.0;
        }
        let pick = usize::try_from(splitmix64(u64::from(i)) % n).unwrap_or(0);
        self.sample_rates.get(pick).copied().unwrap_or(1.0)
    }

    /// Digits of the largest name index, so that names of one workload have one length.
    pub(super) fn name_width(&self) -> usize {
        let max_index = u64::from(self.series.saturating_sub(1)) / self.combos().max(1);
        max_index.to_string().len().max(NAME_DIGITS)
    }

    /// Writes series `i`'s name: `<prefix>.<code>.m<index>` (prefix `load` by default). The type
    /// code follows the prefix so that statsd's `sumlog` backend groups its totals by type.
    pub(super) fn write_name(&self, i: u32, width: usize, out: &mut Vec<u8>) {
        let index = u64::from(i) / self.combos().max(1);
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "{}.{}.m{index:0width$}",
            self.prefix,
            self.kind_of(i).as_str()
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
    /// bytes and joined with `,` when it has tags (the aggregator's series identity,
    /// docs/protocol.md).
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
