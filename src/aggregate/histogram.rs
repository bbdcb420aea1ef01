//! Timer, histogram and distribution state: exact min, max, sum and count beside a percentile
//! structure that starts as raw samples and switches to HDR histograms when it grows.
//!
//! Values are `f64`; HDR needs integers, so magnitudes are scaled to fixed-point thousandths
//! ([`SCALE`]) and negatives go into a mirrored histogram of their magnitudes. Magnitudes below
//! 0.001 count as zero (SPEC §3). HDR runs at two significant digits with auto-resize, and a
//! percentile reports the midpoint of its bucket, so its relative error stays under 0.4 % while a
//! series of millisecond timers costs about 10 KiB instead of 64 KiB at three digits. Below
//! [`RAW_LIMIT`] samples the raw values are kept and percentiles are exact.

use hdrhistogram::Histogram;

/// Fixed-point scale: HDR unit = 1/1000 of a value.
pub const SCALE: f64 = 1000.0;
/// Raw samples kept before switching to HDR. 64 × 16 bytes = 1 KiB per series at most.
pub const RAW_LIMIT: usize = 64;
/// HDR significant digits (see module docs for the error bound).
const SIGFIG: u8 = 2;
/// Largest scaled magnitude recorded; larger values saturate (|v| ≤ 1e15 is the contract).
const MAX_SCALED: u64 = 1 << 62;

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
    repr: Repr,
}

#[derive(Debug, Clone)]
enum Repr {
    /// (value, weight) pairs, at most [`RAW_LIMIT`].
    Raw(Vec<(f64, f64)>),
    /// HDR histograms of scaled magnitudes.
    Hdr(Box<Hdr>),
}

#[derive(Debug, Clone)]
struct Hdr {
    pos: Histogram<u64>,
    neg: Histogram<u64>,
    zeros: u64,
}

impl Hdr {
    fn new() -> Hdr {
        Hdr {
            pos: new_hdr(),
            neg: new_hdr(),
            zeros: 0,
        }
    }

    fn record(&mut self, value: f64, weight: f64) {
        // Weights are 1 ÷ rate ≥ 1; HDR counts are integers, so round (exact for 1, 2, 4, 10…).
        let n = if weight.is_finite() && weight < 1e18 {
            (weight.round() as u64).max(1)
        } else {
            u64::MAX / 4
        };
        let scaled = (value.abs() * SCALE).round();
        // NaN never reaches here (values are finite), but would count as zero too.
        if scaled.is_nan() || scaled < 1.0 {
            self.zeros = self.zeros.saturating_add(n);
            return;
        }
        let m = if scaled >= MAX_SCALED as f64 {
            MAX_SCALED
        } else {
            scaled as u64
        };
        let h = if value < 0.0 {
            &mut self.neg
        } else {
            &mut self.pos
        };
        // Auto-resize grows the histogram to cover every value up to MAX_SCALED; should it ever
        // refuse, clamping to the largest trackable value keeps the count exact.
        if h.record_n(m, n).is_err() {
            h.saturating_record_n(m, n);
        }
    }

    fn total(&self) -> u64 {
        self.neg
            .len()
            .saturating_add(self.zeros)
            .saturating_add(self.pos.len())
    }

    /// The value of nearest rank `rank` (1-based) over negatives, zeros and positives.
    fn value_at_rank(&self, rank: u64) -> f64 {
        let neg = self.neg.len();
        if rank <= neg {
            // The r-th smallest value overall is the (neg - r + 1)-th smallest magnitude.
            return -magnitude_at_rank(&self.neg, neg - rank + 1);
        }
        let rank = rank - neg;
        if rank <= self.zeros {
            return 0.0;
        }
        magnitude_at_rank(&self.pos, rank - self.zeros)
    }
}

fn new_hdr() -> Histogram<u64> {
    let mut h = Histogram::new(SIGFIG).expect("2 significant digits is a valid HDR precision");
    h.auto(true);
    h
}

fn magnitude_at_rank(h: &Histogram<u64>, rank: u64) -> f64 {
    let mut seen = 0u64;
    for v in h.iter_recorded() {
        seen = seen.saturating_add(v.count_at_value());
        if seen >= rank {
            return h.median_equivalent(v.value_iterated_to()) as f64 / SCALE;
        }
    }
    h.max() as f64 / SCALE
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
        let mut raw = Vec::with_capacity(4);
        raw.push((value, weight));
        HistogramState {
            count: weight,
            sum: value * weight,
            min: value,
            max: value,
            recip_sum: reciprocal(value, weight),
            repr: Repr::Raw(raw),
        }
    }

    /// Adds one sample with weight 1 ÷ rate.
    pub fn record(&mut self, value: f64, weight: f64) {
        self.count += weight;
        self.sum += value * weight;
        self.recip_sum += reciprocal(value, weight);
        if value < self.min {
            self.min = value;
        }
        if value > self.max {
            self.max = value;
        }
        match &mut self.repr {
            Repr::Raw(raw) if raw.len() < RAW_LIMIT => raw.push((value, weight)),
            Repr::Raw(raw) => {
                let mut hdr = Box::new(Hdr::new());
                for &(v, w) in raw.iter() {
                    hdr.record(v, w);
                }
                hdr.record(value, weight);
                self.repr = Repr::Hdr(hdr);
            }
            Repr::Hdr(hdr) => hdr.record(value, weight),
        }
    }

    /// Nearest-rank percentile `q` in (0, 1]; exact while raw, within HDR precision after, and
    /// always clamped to the exact [min, max].
    pub fn percentile(&mut self, q: f64) -> f64 {
        let v = match &mut self.repr {
            Repr::Raw(raw) => {
                raw.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
                let total: f64 = raw.iter().map(|s| s.1).sum();
                let rank = (q * total).ceil().max(1.0);
                let mut seen = 0.0;
                let mut out = self.max;
                for &(v, w) in raw.iter() {
                    seen += w;
                    // Tolerate float error in the weights' sum.
                    if seen >= rank - 1e-9 * rank {
                        out = v;
                        break;
                    }
                }
                out
            }
            Repr::Hdr(hdr) => {
                let total = hdr.total();
                let rank = ((q * total as f64).ceil() as u64).clamp(1, total.max(1));
                hdr.value_at_rank(rank)
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
            (Repr::Raw(a), Repr::Raw(b)) if a.len() + b.len() <= RAW_LIMIT => {
                a.extend_from_slice(b);
            }
            _ => {
                let mut hdr = match std::mem::replace(&mut self.repr, Repr::Raw(Vec::new())) {
                    Repr::Hdr(h) => h,
                    Repr::Raw(raw) => {
                        let mut h = Box::new(Hdr::new());
                        for &(v, w) in &raw {
                            h.record(v, w);
                        }
                        h
                    }
                };
                match &other.repr {
                    Repr::Raw(raw) => {
                        for &(v, w) in raw {
                            hdr.record(v, w);
                        }
                    }
                    Repr::Hdr(o) => {
                        // Same precision on both sides: adding bucket counts is exact.
                        let _ = hdr.pos.add(&o.pos);
                        let _ = hdr.neg.add(&o.neg);
                        hdr.zeros = hdr.zeros.saturating_add(o.zeros);
                    }
                }
                self.repr = Repr::Hdr(hdr);
            }
        }
    }

    /// The percentile structure in a portable form, for forwarding.
    pub fn to_parts(&self) -> HistogramParts {
        let mut parts = HistogramParts {
            count: self.count,
            sum: self.sum,
            min: self.min,
            max: self.max,
            recip_sum: self.recip_sum,
            ..HistogramParts::default()
        };
        match &self.repr {
            Repr::Raw(raw) => {
                parts.raw_values = raw.iter().map(|s| s.0).collect();
                parts.raw_weights = raw.iter().map(|s| s.1).collect();
            }
            Repr::Hdr(h) => {
                // Each bucket travels as its lowest value: recording it lands in the same bucket,
                // and it never exceeds a recorded value (the top bucket's highest value can be
                // above MAX_SCALED, which a receiver rightly refuses).
                for v in h.pos.iter_recorded() {
                    parts
                        .pos_buckets
                        .push(h.pos.lowest_equivalent(v.value_iterated_to()));
                    parts.pos_counts.push(v.count_at_value());
                }
                for v in h.neg.iter_recorded() {
                    parts
                        .neg_buckets
                        .push(h.neg.lowest_equivalent(v.value_iterated_to()));
                    parts.neg_counts.push(v.count_at_value());
                }
                parts.zeros = h.zeros;
            }
        }
        parts
    }

    /// Rebuilds a state from [`HistogramState::to_parts`] output, validating it: min and max
    /// finite, min ≤ max, count positive, arrays paired and bounded, buckets in range. The sums
    /// (`sum`, `recip_sum`, and `count` upwards) may have overflowed on the sender exactly as
    /// they can here, so they are taken as they are; the renderer drops non-finite points.
    pub fn from_parts(p: &HistogramParts) -> Result<HistogramState, &'static str> {
        if !p.min.is_finite() || !p.max.is_finite() {
            return Err("histogram min and max must be finite");
        }
        if p.count.is_nan() || p.count <= 0.0 || p.min > p.max {
            return Err("histogram count must be positive and min ≤ max");
        }
        if p.raw_values.len() != p.raw_weights.len()
            || p.pos_buckets.len() != p.pos_counts.len()
            || p.neg_buckets.len() != p.neg_counts.len()
        {
            return Err("histogram arrays must be paired");
        }
        let hdr_parts = !p.pos_buckets.is_empty() || !p.neg_buckets.is_empty() || p.zeros > 0;
        // Exactly one of the two representations.
        if hdr_parts != p.raw_values.is_empty() {
            return Err("histogram must hold either raw samples or buckets");
        }
        if p.raw_values.len() > RAW_LIMIT {
            return Err("too many raw samples");
        }
        if p.pos_buckets.len() + p.neg_buckets.len() > 1 << 16 {
            return Err("too many histogram buckets");
        }
        let repr = if hdr_parts {
            let mut h = Box::new(Hdr::new());
            for (side, buckets, counts) in [
                (false, &p.pos_buckets, &p.pos_counts),
                (true, &p.neg_buckets, &p.neg_counts),
            ] {
                let hist = if side { &mut h.neg } else { &mut h.pos };
                for (&b, &c) in buckets.iter().zip(counts.iter()) {
                    if b == 0 || b > MAX_SCALED || c == 0 {
                        return Err("histogram bucket out of range");
                    }
                    if hist.record_n(b, c).is_err() {
                        return Err("histogram bucket out of range");
                    }
                }
            }
            h.zeros = p.zeros;
            Repr::Hdr(h)
        } else {
            let mut raw = Vec::with_capacity(p.raw_values.len());
            for (&v, &w) in p.raw_values.iter().zip(p.raw_weights.iter()) {
                if !v.is_finite() || !w.is_finite() || w <= 0.0 {
                    return Err("raw samples must be finite with positive weights");
                }
                raw.push((v, w));
            }
            Repr::Raw(raw)
        };
        Ok(HistogramState {
            count: p.count,
            sum: p.sum,
            min: p.min,
            max: p.max,
            recip_sum: p.recip_sum,
            repr,
        })
    }

    /// Heap bytes held by the percentile structure (for memory accounting and tests).
    pub fn heap_bytes(&self) -> usize {
        match &self.repr {
            Repr::Raw(raw) => raw.capacity() * std::mem::size_of::<(f64, f64)>(),
            Repr::Hdr(hdr) => {
                (hdr.pos.distinct_values() + hdr.neg.distinct_values()) * 8
                    + std::mem::size_of::<Hdr>()
            }
        }
    }
}

/// A histogram state in portable form: exact aggregates plus either raw (value, weight) samples
/// or sparse HDR buckets (scaled magnitude at the bucket's top, count).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramParts {
    /// Weighted count.
    pub count: f64,
    /// Weighted sum.
    pub sum: f64,
    /// Exact minimum.
    pub min: f64,
    /// Exact maximum.
    pub max: f64,
    /// Weighted Σ 1/value.
    pub recip_sum: f64,
    /// Raw sample values.
    pub raw_values: Vec<f64>,
    /// Raw sample weights.
    pub raw_weights: Vec<f64>,
    /// Positive buckets.
    pub pos_buckets: Vec<u64>,
    /// Counts of the positive buckets.
    pub pos_counts: Vec<u64>,
    /// Negative buckets (magnitudes).
    pub neg_buckets: Vec<u64>,
    /// Counts of the negative buckets.
    pub neg_counts: Vec<u64>,
    /// Samples that count as zero.
    pub zeros: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact_nearest_rank(values: &mut [f64], q: f64) -> f64 {
        values.sort_by(|a, b| a.total_cmp(b));
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    }

    fn build(values: &[f64]) -> HistogramState {
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
        let mut values: Vec<f64> = (1..=1000).map(|i| i as f64 / 997.0).collect();
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

    #[test]
    fn parts_round_trip() {
        for vals in [
            vec![1.0, 2.0, 3.5],
            (0..500).map(|i| i as f64 - 250.0).collect(),
        ] {
            let mut h = build(&vals);
            let mut back = HistogramState::from_parts(&h.to_parts()).unwrap();
            assert_eq!(back.count, h.count);
            assert_eq!(back.percentile(0.9), h.percentile(0.9));
            assert_eq!(back.percentile(0.1), h.percentile(0.1));
        }
    }

    #[test]
    fn bad_parts_are_refused() {
        let good = build(&[1.0, 2.0]).to_parts();
        let cases = [
            HistogramParts {
                count: f64::NAN,
                ..good.clone()
            },
            HistogramParts {
                min: 5.0,
                max: 1.0,
                ..good.clone()
            },
            HistogramParts {
                raw_weights: vec![1.0],
                ..good.clone()
            },
            HistogramParts {
                raw_values: vec![],
                raw_weights: vec![],
                ..good.clone()
            },
            HistogramParts {
                raw_values: vec![],
                raw_weights: vec![],
                pos_buckets: vec![u64::MAX],
                pos_counts: vec![1],
                ..good.clone()
            },
        ];
        for c in cases {
            assert!(HistogramState::from_parts(&c).is_err(), "{c:?}");
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
    }
}
