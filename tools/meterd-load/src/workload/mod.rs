//! What meterd-load sends: the series (name, type, tags, sample rate), the lines, and the ring of
//! pre-generated datagrams the senders cycle through, plus the exact totals of any multiset of
//! those datagrams.
//!
//! Everything here is a pure function of the [`Spec`] and the seed, so the same arguments give
//! byte-identical datagrams and identical totals. Series properties (type, tags, rate) depend on
//! the series index only; the seed picks the order of lines and their values.
//!
//! [`spec`] holds the workload's shape and the series it defines, [`ring`] the generated lines
//! and datagrams and the order senders take them in, [`totals`] what a multiset of sent datagrams
//! adds up to. Metric types are the library's [`MetricType`].

pub mod ring;
pub mod spec;
pub mod totals;

#[cfg(test)]
mod tests;

pub use meterd::protocol::MetricType;
pub use ring::{build_ring, LineRec, Plan, Ring};
pub use spec::Spec;
pub use totals::{Sent, Totals};

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

/// The metric type of a statsd type code (`c`, `g`, `s`, `ms`, `h`, `d`): the inverse of
/// [`MetricType::as_str`].
pub fn type_from_code(code: &str) -> Option<MetricType> {
    MetricType::ALL.into_iter().find(|t| t.as_str() == code)
}

/// Whether lines of type `t` carry `|@rate` (gauges and sets ignore rates, so they get none).
pub const fn is_sampled(t: MetricType) -> bool {
    match t {
        MetricType::Counter
        | MetricType::Timer
        | MetricType::Histogram
        | MetricType::Distribution => true,
        MetricType::Gauge | MetricType::Set => false,
    }
}

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
