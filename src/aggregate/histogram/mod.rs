//! Timer, histogram and distribution state: exact min, max, sum and count beside a percentile
//! structure that starts as raw samples and switches to HDR histograms when it grows.
//!
//! Values are `f64`; HDR needs integers, so magnitudes are scaled to fixed-point thousandths
//! ([`SCALE`]) and negatives go into a mirrored histogram of their magnitudes, created only when
//! the first negative arrives. Magnitudes below 0.001 count as zero (`docs/flush.md#precision`).
//! HDR runs at two significant digits with auto-resize, and a percentile reports the midpoint of
//! its bucket, so its relative error stays under 0.4 % while a series of millisecond timers up to
//! 10 s costs about 9 KiB with `u32` buckets (18 KiB with `u64`, 64 KiB at three digits).
//!
//! Up to [`RAW_LIMIT`] samples the raw values are kept and percentiles are exact. Raw samples
//! are stored compactly so that a series with 100 samples in its interval stays under 2 KiB
//! (issue 6): values as `f64`, and one shared weight while every sample has the same one (a
//! client samples a metric at one rate); only a series whose samples arrive with different
//! rates keeps a weight per sample, as `f32` (weights only rank samples for percentiles; the
//! exact weighted count lives in [`HistogramState::count`]).
//!
//! The state lives here ([`HistogramState`]: recording, percentiles, merging); its two
//! percentile forms have a file each, `raw.rs` (samples up to [`RAW_LIMIT`] and their in-place
//! sort) and `hdr.rs` (HDR recording, rounding and [`SpareHdr`]), and `parts.rs` holds the
//! portable [`HistogramParts`] a state is forwarded and merged as.

mod hdr;
mod parts;
mod raw;

pub use hdr::SpareHdr;
pub use parts::HistogramParts;

use hdr::Hdr;
use raw::Raw;

/// Fixed-point scale: HDR unit = 1/1000 of a value.
pub const SCALE: f64 = 1000.0;
/// Raw samples kept before switching to HDR: 1024 × 8 bytes of values (plus 1024 × 4 bytes of
/// weights when rates differ) = 8–12 KiB, about what the HDR arrays a series becomes cost (9.2
/// KiB for a millisecond timer up to 10 s), and percentiles stay exact up to there.
///
/// Appending a sample writes the cache line the previous sample wrote (one line per eight
/// samples); adding one to an HDR array lands anywhere in its ~9 KiB, which with thousands of
/// series is in neither L1 nor L2. So a higher limit costs less CPU per line, with timers only
/// and with the plain mix (`benches/ab.py`, `--types ms` for timers alone; BENCHMARKS.md).
///
/// The switch is the expensive moment of a series' interval (the samples so far go into a new
/// array), and series fed at similar rates reach it together: with a low limit, tens of
/// thousands of DogStatsD histogram series switched at the same moment of each interval and the
/// reader stalled there until the socket buffer overflowed (`benches/soak.sh`). At 1024 a series
/// switches only beyond ~100 samples a second (10 s interval), and the arrays it switches to
/// are the last interval's, recycled ([`SpareHdr`]).
pub const RAW_LIMIT: usize = 1024;
/// Most raw samples a forwarded histogram carries (and a global accepts); a series with more
/// travels as HDR buckets. Unchanged from when it was also the raw limit, so globals of that
/// version accept what a newer local sends.
pub const FORWARD_RAW_LIMIT: usize = 128;

/// The aggregate state of one timer/histogram/distribution series for one interval.
#[derive(Debug, Clone)]
pub struct HistogramState {
    /// Weighted count: Σ 1 ÷ rate.
    pub count: f64,
    /// Weighted sum: Σ value ÷ rate.
    pub sum: f64,
    /// Exact minimum.
    pub min: f64,
    /// Exact maximum.
    pub max: f64,
    /// Weighted Σ 1/value, for the harmonic mean.
    pub recip_sum: f64,
    /// SLO counts, on series of a latency SLO only ([`crate::aggregate::slo`]).
    pub slo: Option<Box<crate::aggregate::slo::SloTally>>,
    repr: Repr,
}

#[derive(Debug, Clone)]
enum Repr {
    /// At most [`RAW_LIMIT`] samples.
    Raw(Raw),
    /// HDR histograms of scaled magnitudes.
    Hdr(Hdr),
}

/// A sample's term of Σ weight ÷ value. Zero of either sign counts +∞ (so the harmonic mean of a
/// series with a zero is 0, and `0` and `-0` never sum to NaN); the sum can still be non-finite
/// with extreme values, and the renderer drops a non-finite hmean.
fn reciprocal(value: f64, weight: f64) -> f64 {
    if value == 0.0 {
        f64::INFINITY
    } else {
        weight / value
    }
}

impl HistogramState {
    /// A state holding one sample.
    pub fn new(value: f64, weight: f64) -> HistogramState {
        HistogramState {
            count: weight,
            sum: value * weight,
            min: value,
            max: value,
            recip_sum: reciprocal(value, weight),
            slo: None,
            repr: Repr::Raw(Raw::one(value, weight)),
        }
    }

    /// Prefetches the cache line a raw state's next sample goes to, the slot after its last
    /// value ([`super::record_deferred`]).
    #[inline(always)]
    pub(crate) fn prefetch_next_slot(&self) {
        if let Repr::Raw(raw) = &self.repr {
            super::prefetch(raw.values.as_ptr().wrapping_add(raw.len()).cast());
        }
    }

    /// Adds one sample with weight 1 ÷ rate.
    pub fn record(&mut self, value: f64, weight: f64) {
        self.record_with(value, weight, &mut Vec::new());
    }

    /// [`HistogramState::record`], taking HDR arrays from `spares` if the sample is the one
    /// that outgrows the raw form.
    pub fn record_with(&mut self, value: f64, weight: f64, spares: &mut Vec<SpareHdr>) {
        self.count += weight;
        self.sum += value * weight;
        self.recip_sum += reciprocal(value, weight);
        if let Some(t) = &mut self.slo {
            t.record(value, weight);
        }
        if value < self.min {
            self.min = value;
        }
        if value > self.max {
            self.max = value;
        }
        match &mut self.repr {
            Repr::Raw(raw) if raw.len() < RAW_LIMIT => raw.push(value, weight),
            Repr::Raw(raw) => {
                let mut hdr = Hdr::from_raw(raw, spares.pop());
                hdr.record(value, weight);
                self.repr = Repr::Hdr(hdr);
            }
            Repr::Hdr(hdr) => hdr.record(value, weight),
        }
    }

    /// The state's HDR arrays, emptied, for reuse; `None` while it is raw.
    pub fn into_spare(mut self) -> Option<SpareHdr> {
        self.take_spare()
    }

    /// Takes the state's HDR arrays out, emptied, for reuse (`None` while it is raw), leaving
    /// the state raw and empty. Whatever else the state holds stays in it, to be freed by
    /// whoever drops the state (the flush leaves that to [`crate::release`]).
    pub fn take_spare(&mut self) -> Option<SpareHdr> {
        if !matches!(self.repr, Repr::Hdr(_)) {
            return None;
        }
        let Repr::Hdr(hdr) = std::mem::replace(&mut self.repr, Repr::Raw(Raw::empty())) else {
            return None;
        };
        let mut arrays = hdr.arrays;
        arrays.pos.reset();
        arrays.neg = None;
        arrays.zeros = 0;
        Some(SpareHdr(arrays))
    }

    /// Nearest-rank percentile `q` in (0, 1]; exact while raw, within HDR precision after, and
    /// always clamped to the exact [min, max].
    pub fn percentile(&mut self, q: f64) -> f64 {
        let v = match &mut self.repr {
            Repr::Raw(raw) => raw.percentile(q).unwrap_or(self.max),
            Repr::Hdr(hdr) => {
                let arrays = hdr.settle();
                let total = arrays.total();
                let rank = ((q * total as f64).ceil() as u64).clamp(1, total.max(1));
                arrays.value_at_rank(rank)
            }
        };
        v.clamp(self.min, self.max)
    }

    /// Arithmetic mean (weighted).
    pub fn avg(&self) -> f64 {
        self.sum / self.count
    }

    /// Harmonic mean (weighted); 0 when a value is 0 (the limit of count ÷ Σ 1/v).
    pub fn hmean(&self) -> f64 {
        self.count / self.recip_sum
    }

    /// Merges `other` into `self` exactly: count, sum, min, max add up as if one instance had
    /// seen every sample; raw samples stay raw while they fit, else both become HDR.
    pub fn merge(&mut self, other: &HistogramState) {
        self.count += other.count;
        self.sum += other.sum;
        self.recip_sum += other.recip_sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        match (&mut self.repr, &other.repr) {
            (Repr::Raw(a), Repr::Raw(b)) if a.len() + b.len() <= RAW_LIMIT => a.extend(b),
            (Repr::Hdr(a), Repr::Raw(b)) => b.for_each(|v, w| a.record(v, w)),
            (Repr::Hdr(a), Repr::Hdr(b)) => a.add(b),
            (Repr::Raw(a), b) => {
                let mut hdr = Hdr::from_raw(a, None);
                match b {
                    Repr::Raw(b) => b.for_each(|v, w| hdr.record(v, w)),
                    Repr::Hdr(b) => hdr.add(b),
                }
                self.repr = Repr::Hdr(hdr);
            }
        }
    }

    /// Heap bytes held by the percentile structure, beyond `size_of::<HistogramState>()` (for
    /// memory accounting and tests).
    pub fn heap_bytes(&self) -> usize {
        match &self.repr {
            Repr::Raw(raw) => raw.heap_bytes(),
            Repr::Hdr(hdr) => hdr.heap_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::hdr::PENDING;
    use super::raw::Weights;
    use super::*;
    use proptest::prelude::*;

    pub(super) fn exact_nearest_rank(values: &mut [f64], q: f64) -> f64 {
        values.sort_by(|a, b| a.total_cmp(b));
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    }

    pub(super) fn build(values: &[f64]) -> HistogramState {
        let mut h = HistogramState::new(values[0], 1.0);
        for &v in &values[1..] {
            h.record(v, 1.0);
        }
        h
    }

    #[test]
    fn five_samples_exact() {
        let mut h = build(&[5.0, 1.0, 4.0, 2.0, 3.0]);
        assert_eq!(h.percentile(0.5), 3.0);
        assert_eq!(h.percentile(0.99), 5.0);
        assert_eq!(h.percentile(0.2), 1.0);
        assert_eq!(h.count, 5.0);
        assert_eq!(h.sum, 15.0);
        assert_eq!((h.min, h.max), (1.0, 5.0));
    }

    #[test]
    fn weighted_counts_and_sum() {
        let mut h = HistogramState::new(10.0, 2.0);
        h.record(20.0, 2.0);
        assert_eq!(h.count, 4.0);
        assert_eq!(h.sum, 60.0);
        assert_eq!(h.avg(), 15.0);
        assert_eq!(h.percentile(0.5), 10.0);
        assert_eq!(h.percentile(0.75), 20.0);
    }

    #[test]
    fn switches_to_hdr_and_stays_within_one_percent() {
        let mut values: Vec<f64> = (1..=10_000).map(|i| i as f64 * 0.37).collect();
        let mut h = build(&values);
        assert!(matches!(h.repr, Repr::Hdr(_)));
        for q in [0.5, 0.75, 0.9, 0.99, 0.999] {
            let exact = exact_nearest_rank(&mut values, q);
            let got = h.percentile(q);
            assert!(
                ((got - exact) / exact).abs() < 0.01,
                "q={q} {got} vs {exact}"
            );
        }
        assert_eq!(h.count, 10_000.0);
    }

    #[test]
    fn negatives_and_zeros_in_hdr() {
        let mut values: Vec<f64> = (-500..=500).map(|i| i as f64 * 1.5).collect();
        let mut h = build(&values);
        assert_eq!(h.min, -750.0);
        assert_eq!(h.max, 750.0);
        for q in [0.01, 0.1, 0.25, 0.5, 0.75, 0.99] {
            let exact = exact_nearest_rank(&mut values, q);
            let got = h.percentile(q);
            assert!(
                (got - exact).abs() <= exact.abs() * 0.01,
                "q={q} {got} vs {exact}"
            );
        }
    }

    #[test]
    fn fractional_values() {
        let mut values: Vec<f64> = (1..=3000).map(|i| i as f64 / 997.0).collect();
        let mut h = build(&values);
        let exact = exact_nearest_rank(&mut values, 0.99);
        let got = h.percentile(0.99);
        assert!(((got - exact) / exact).abs() < 0.01);
    }

    #[test]
    fn hmean_of_positive_values() {
        let h = build(&[1.0, 2.0, 4.0]);
        assert!((h.hmean() - 3.0 / 1.75).abs() < 1e-12);
        let z = build(&[0.0, 2.0]);
        assert_eq!(z.hmean(), 0.0);
    }

    #[test]
    fn huge_values_saturate_without_panic() {
        let mut h = build(&[1e300, -1e300, 1e15, 1.0]);
        for i in 0..100 {
            h.record(i as f64 * 1e14, 1.0);
        }
        assert_eq!(h.max, 1e300);
        let _ = h.percentile(0.99);
    }

    #[test]
    fn merge_is_exact_for_aggregates() {
        let a_vals: Vec<f64> = (0..300).map(|i| i as f64 * 1.7 - 40.0).collect();
        let b_vals: Vec<f64> = (0..30).map(|i| 1000.0 + i as f64).collect();
        let mut a = build(&a_vals);
        let b = build(&b_vals);
        a.merge(&b);
        let mut all: Vec<f64> = a_vals.iter().chain(b_vals.iter()).copied().collect();
        let one = build(&all);
        assert_eq!(a.count, one.count);
        assert_eq!((a.min, a.max), (one.min, one.max));
        assert!((a.sum - one.sum).abs() < 1e-9 * one.sum.abs().max(1.0));
        for q in [0.5, 0.9, 0.99] {
            let exact = exact_nearest_rank(&mut all, q);
            let got = a.percentile(q);
            assert!(
                (got - exact).abs() <= exact.abs() * 0.01,
                "{q}: {got} vs {exact}"
            );
        }
    }

    pub(super) fn build_weighted(samples: &[(f64, f64)]) -> HistogramState {
        let mut h = HistogramState::new(samples[0].0, samples[0].1);
        for &(v, w) in &samples[1..] {
            h.record(v, w);
        }
        h
    }

    /// Weighted nearest rank over (value, weight) pairs, summed in f64.
    fn exact_weighted(samples: &[(f64, f64)], q: f64) -> f64 {
        let mut s = samples.to_vec();
        s.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: f64 = s.iter().map(|p| p.1).sum();
        let target = q * total;
        let mut seen = 0.0;
        for &(v, w) in &s {
            seen += w;
            if seen >= target - 1e-9 * target {
                return v;
            }
        }
        s[s.len() - 1].0
    }

    pub(super) fn is_raw(h: &HistogramState) -> bool {
        matches!(h.repr, Repr::Raw(_))
    }

    fn total_bytes(h: &HistogramState) -> usize {
        std::mem::size_of::<HistogramState>() + h.heap_bytes()
    }

    #[test]
    fn state_is_small() {
        // 88 bytes of aggregates and samples, and the SLO tally's pointer.
        assert!(std::mem::size_of::<HistogramState>() <= 96);
        assert_eq!(std::mem::size_of::<Weights>(), 24);
    }

    #[test]
    fn hundred_samples_stay_raw_within_two_kib() {
        // Issue 6: ≤ 2 KiB per timer series with ≤ 100 samples in the interval.
        let uniform: Vec<(f64, f64)> = (0..100).map(|i| (i as f64 * 7.3 % 101.0, 1.0)).collect();
        let sampled: Vec<(f64, f64)> = uniform.iter().map(|&(v, _)| (v, 1.0 / 0.3)).collect();
        let mixed: Vec<(f64, f64)> = uniform
            .iter()
            .enumerate()
            .map(|(i, &(v, _))| (v, [1.0, 2.0, 4.0][i % 3]))
            .collect();
        for (samples, max_heap) in [(&uniform, 1024), (&sampled, 1024), (&mixed, 1536)] {
            let mut h = build_weighted(samples);
            assert!(is_raw(&h));
            assert!(h.heap_bytes() <= max_heap, "{}", h.heap_bytes());
            assert!(total_bytes(&h) <= 2048, "{}", total_bytes(&h));
            for q in [0.01, 0.5, 0.75, 0.99, 1.0] {
                assert_eq!(h.percentile(q), exact_weighted(samples, q), "q={q}");
            }
        }
    }

    #[test]
    fn raw_limit_samples_then_hdr() {
        let values: Vec<f64> = (1..=RAW_LIMIT).map(|i| i as f64).collect();
        let mut h = build(&values);
        assert!(is_raw(&h));
        assert!(h.heap_bytes() <= RAW_LIMIT * 8);
        assert_eq!(h.percentile(0.5), (RAW_LIMIT / 2) as f64);
        h.record(0.5, 1.0);
        assert!(!is_raw(&h));
        assert_eq!(h.count, RAW_LIMIT as f64 + 1.0);
    }

    #[test]
    fn raw_capacity_never_exceeds_the_limit() {
        // from_parts allocates exactly; growing from there must not double past RAW_LIMIT.
        let mut h = HistogramState::from_parts(&build(&vec![1.0; 100]).to_parts()).unwrap();
        h.merge(&build_weighted(&[(2.0, 2.0); 20]));
        for _ in 0..8 {
            h.record(3.0, 1.0);
        }
        assert!(is_raw(&h));
        assert_eq!(h.count, 148.0);
        assert!(h.heap_bytes() <= RAW_LIMIT * (8 + 4), "{}", h.heap_bytes());
    }

    #[test]
    fn uniform_weight_ranks_like_unweighted() {
        // Σ of 100 × (1/0.3) carries float error; equal weights must not shift the rank.
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let mut h = HistogramState::new(values[0], 1.0 / 0.3);
        for &v in &values[1..] {
            h.record(v, 1.0 / 0.3);
        }
        let mut v = values.clone();
        for q in [0.1, 0.5, 0.9, 0.99] {
            assert_eq!(h.percentile(q), exact_nearest_rank(&mut v, q), "q={q}");
        }
        assert!((h.count - 100.0 / 0.3).abs() < 1e-9);
    }

    #[test]
    fn mixed_weights_rank_by_weight() {
        let mut h = HistogramState::new(20.0, 3.0);
        h.record(10.0, 1.0);
        assert_eq!(h.count, 4.0);
        assert_eq!(h.percentile(0.25), 10.0);
        assert_eq!(h.percentile(0.5), 20.0);
        // Percentiles sort in place; recording after that keeps values and weights paired.
        h.record(5.0, 4.0);
        assert_eq!(h.percentile(0.5), 5.0);
        assert_eq!(h.percentile(0.6), 10.0);
        assert_eq!(h.percentile(0.7), 20.0);
    }

    #[test]
    fn huge_weights_stay_finite() {
        let mut h = HistogramState::new(1.0, 1.0);
        h.record(2.0, 1e300);
        h.record(3.0, f64::INFINITY);
        assert!(is_raw(&h));
        assert_eq!(h.percentile(0.01), 2.0);
        assert_eq!(h.percentile(0.99), 3.0);
        let parts = h.to_parts();
        assert!(parts.raw_weights.iter().all(|w| w.is_finite()));
        assert!(HistogramState::from_parts(&parts).is_ok());
    }

    /// Samples counted by a state's HDR parts.
    fn counted_in(parts: &HistogramParts) -> u64 {
        parts
            .pos_counts
            .iter()
            .chain(&parts.neg_counts)
            .sum::<u64>()
            + parts.zeros
    }

    /// Samples queued in an HDR state count in every reader: parts, percentiles, merges, whatever
    /// the queue's fill and however the weights change.
    #[test]
    fn pending_samples_count_everywhere() {
        for extra in [0, 1, PENDING - 1, PENDING, PENDING + 1, 3 * PENDING + 5] {
            let mut h = build(&(1..=RAW_LIMIT + 1).map(|v| v as f64).collect::<Vec<_>>());
            let mut expected = (RAW_LIMIT + 1) as u64;
            for i in 0..extra {
                // A weight change every 7 samples, and a negative and a zero now and then.
                let w = if (i / 7) % 2 == 0 { 1.0 } else { 4.0 };
                let v = match i % 11 {
                    3 => -2.5,
                    5 => 0.0,
                    _ => i as f64 + 0.5,
                };
                h.record(v, w);
                expected += w as u64;
            }
            let parts = h.to_parts();
            let counted = counted_in(&parts);
            assert_eq!(counted, expected, "to_parts with {extra} extra");
            // Merging an unsettled state into another counts its queue too.
            let mut merged = build(&[1.0; RAW_LIMIT + 1]);
            merged.merge(&h);
            let parts = merged.to_parts();
            let counted = counted_in(&parts);
            assert_eq!(
                counted,
                expected + RAW_LIMIT as u64 + 1,
                "merge with {extra} extra"
            );
            // And percentiles see the queued samples (a negative is the lowest rank).
            if extra > 3 {
                assert_eq!(h.percentile(1e-6), -2.5);
            }
        }
    }

    #[test]
    fn negative_histogram_only_when_negatives_arrive() {
        let mut values: Vec<f64> = (1..=3000).map(f64::from).collect();
        let mut h = build(&values);
        let Repr::Hdr(hdr) = &h.repr else {
            panic!("3000 samples are HDR")
        };
        assert!(hdr.arrays.neg.is_none());
        let before = h.heap_bytes();
        assert!(h.to_parts().neg_buckets.is_empty());
        h.record(-5.0, 1.0);
        values.push(-5.0);
        assert_eq!(h.percentile(0.0001), -5.0);
        assert!(h.heap_bytes() > before);
        assert_eq!(h.min, -5.0);
        for q in [0.5, 0.99] {
            let exact = exact_nearest_rank(&mut values, q);
            assert!((h.percentile(q) - exact).abs() <= exact * 0.01);
        }
        let back = HistogramState::from_parts(&h.to_parts()).unwrap();
        assert_eq!(back.to_parts(), h.to_parts());
    }

    #[test]
    fn saturated_buckets_keep_ranks_consistent() {
        // 6e9 samples at 1 overflow a u32 bucket; the median must still be 1, not the max.
        let mut h = HistogramState::new(1.0, 3e9);
        h.record(1.0, 3e9);
        h.record(100.0, 3e9);
        h.merge(&build(&(0..RAW_LIMIT).map(|_| 100.0).collect::<Vec<_>>()));
        assert!(!is_raw(&h));
        assert_eq!(h.count, 9e9 + RAW_LIMIT as f64);
        assert!((h.percentile(0.5) - 1.0).abs() < 0.01);
        assert!((h.percentile(0.99) - 100.0).abs() < 1.0);
        // Forwarded counts beyond the bucket type saturate too, and are accepted.
        let mut back = HistogramState::from_parts(&h.to_parts()).unwrap();
        assert!((back.percentile(0.5) - 1.0).abs() < 0.01);
    }

    #[test]
    fn merges_of_every_form_are_exact() {
        let small_a: Vec<f64> = (0..40).map(|i| i as f64 * 2.5 - 10.0).collect();
        let small_b: Vec<f64> = (0..50).map(|i| 100.0 + i as f64).collect();
        let big_a: Vec<f64> = (0..1400).map(|i| i as f64 * 0.9).collect();
        let big_b: Vec<f64> = (0..1800).map(|i| -(i as f64) * 1.1).collect();
        for (a, b, raw_after) in [
            (&small_a, &small_b, true),
            (&small_a, &big_a, false),
            (&big_a, &small_b, false),
            (&big_a, &big_b, false),
            (&big_b, &big_a, false),
        ] {
            let mut m = build(a);
            m.merge(&build(b));
            let mut all: Vec<f64> = a.iter().chain(b.iter()).copied().collect();
            let one = build(&all);
            assert_eq!(is_raw(&m), raw_after);
            assert_eq!(m.count, all.len() as f64);
            assert_eq!((m.min, m.max), (one.min, one.max));
            assert!((m.sum - one.sum).abs() <= 1e-9 * one.sum.abs().max(1.0));
            for q in [0.05, 0.5, 0.9, 0.99] {
                let exact = exact_nearest_rank(&mut all, q);
                let got = m.percentile(q);
                if raw_after {
                    assert_eq!(got, exact);
                } else {
                    assert!(
                        (got - exact).abs() <= exact.abs() * 0.01 + 1e-3,
                        "{got} {exact}"
                    );
                }
            }
        }
    }

    #[test]
    fn raw_merge_of_different_weights() {
        let mut a = build_weighted(&[(1.0, 2.0), (3.0, 2.0)]);
        a.merge(&build_weighted(&[(2.0, 1.0 / 0.3)]));
        a.merge(&build_weighted(&[(0.5, 1.0), (4.0, 1.0)]));
        assert!(is_raw(&a));
        let samples = [
            (1.0, 2.0),
            (3.0, 2.0),
            (2.0, 1.0 / 0.3),
            (0.5, 1.0),
            (4.0, 1.0),
        ];
        assert_eq!(a.count, samples.iter().map(|s| s.1).sum::<f64>());
        for q in [0.1, 0.3, 0.5, 0.7, 0.9, 1.0] {
            assert_eq!(a.percentile(q), exact_weighted(&samples, q), "q={q}");
        }
    }

    proptest! {
        #[test]
        fn merged_equals_one_instance(
            a in proptest::collection::vec(0.001f64..1e5, 1..200),
            b in proptest::collection::vec(-1e5f64..-0.001, 1..200),
            q in 0.01f64..1.0,
        ) {
            let mut m = build(&a);
            m.merge(&HistogramState::from_parts(&build(&b).to_parts()).unwrap());
            let mut all: Vec<f64> = a.iter().chain(b.iter()).copied().collect();
            let exact = exact_nearest_rank(&mut all, q);
            let got = m.percentile(q);
            prop_assert!((got - exact).abs() <= exact.abs() * 0.01 + 1e-3, "{} vs {}", got, exact);
            prop_assert_eq!(m.count, all.len() as f64);
        }

        #[test]
        fn percentiles_within_one_percent(
            values in proptest::collection::vec(
                prop_oneof![0.001f64..1e6, -1e6f64..-0.001], 1..400),
            q in 0.01f64..1.0,
        ) {
            let mut h = build(&values);
            let mut v = values.clone();
            let exact = exact_nearest_rank(&mut v, q);
            let got = h.percentile(q);
            prop_assert!((got - exact).abs() <= exact.abs() * 0.01 + 1e-3,
                "q={} got={} exact={}", q, got, exact);
            prop_assert_eq!(h.count, values.len() as f64);
        }

        #[test]
        fn raw_weighted_percentiles_are_exact(
            samples in proptest::collection::vec(
                (-1e6f64..1e6, prop_oneof![Just(1.0f64), Just(2.0), Just(4.0), Just(10.0)]),
                1..=100usize),
            q in 0.01f64..1.0,
        ) {
            let mut h = build_weighted(&samples);
            prop_assert!(is_raw(&h));
            prop_assert_eq!(h.percentile(q), exact_weighted(&samples, q));
            prop_assert!(total_bytes(&h) <= 2048);
        }
    }
}
