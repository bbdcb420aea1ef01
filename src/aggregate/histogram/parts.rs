//! The portable form of a histogram state, [`HistogramParts`]: exact aggregates plus raw
//! samples or sparse HDR buckets, as a local forwards a series and a global validates and
//! merges it ([`HistogramState::to_parts`], [`HistogramState::from_parts`]).

use hdrhistogram::Histogram;

use super::hdr::{new_hdr, Count, Hdr, MAX_SCALED};
use super::raw::{weight_f32, Raw, Weights};
use super::{HistogramState, Repr, FORWARD_RAW_LIMIT};

/// Sparse `(lowest value of bucket, count)` pairs of `h`, for forwarding. Each bucket travels as
/// its lowest value: recording it lands in the same bucket, and it never exceeds a recorded
/// value (the top bucket's highest value can be above MAX_SCALED, which a receiver rightly
/// refuses).
fn push_buckets(h: &Histogram<Count>, buckets: &mut Vec<u64>, counts: &mut Vec<u64>) {
    for v in h.iter_recorded() {
        buckets.push(h.lowest_equivalent(v.value_iterated_to()));
        counts.push(u64::from(v.count_at_value()));
    }
}

impl HistogramState {
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
        // More raw samples than a global accepts travel in HDR form, settled here so that
        // `settled` below borrows it instead of copying it.
        let from_raw;
        let repr = match &self.repr {
            Repr::Raw(raw) if raw.len() > FORWARD_RAW_LIMIT => {
                let mut hdr = Hdr::from_raw(raw, None);
                hdr.settle();
                from_raw = Repr::Hdr(hdr);
                &from_raw
            }
            repr => repr,
        };
        match repr {
            Repr::Raw(raw) => {
                parts.raw_values.clone_from(&raw.values);
                parts.raw_weights = match &raw.weights {
                    Weights::Uniform(w) => vec![*w; raw.len()],
                    Weights::Each(ws) => ws.iter().map(|&w| f64::from(w)).collect(),
                };
            }
            Repr::Hdr(h) => {
                let h = h.settled();
                push_buckets(&h.pos, &mut parts.pos_buckets, &mut parts.pos_counts);
                if let Some(neg) = &h.neg {
                    push_buckets(neg, &mut parts.neg_buckets, &mut parts.neg_counts);
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
        if p.raw_values.len() > FORWARD_RAW_LIMIT {
            return Err("too many raw samples");
        }
        if p.pos_buckets.len() + p.neg_buckets.len() > 1 << 16 {
            return Err("too many histogram buckets");
        }
        let repr = if hdr_parts {
            let mut hdr = Hdr::new();
            let h = &mut *hdr.arrays;
            if !p.neg_buckets.is_empty() {
                h.neg = Some(new_hdr());
            }
            for (hist, buckets, counts) in [
                (Some(&mut h.pos), &p.pos_buckets, &p.pos_counts),
                (h.neg.as_mut(), &p.neg_buckets, &p.neg_counts),
            ] {
                let Some(hist) = hist else { continue };
                for (&b, &c) in buckets.iter().zip(counts.iter()) {
                    if b == 0 || b > MAX_SCALED || c == 0 {
                        return Err("histogram bucket out of range");
                    }
                    // A count beyond the bucket type saturates, as it would have here.
                    let c = Count::try_from(c).unwrap_or(Count::MAX);
                    if hist.record_n(b, c).is_err() {
                        return Err("histogram bucket out of range");
                    }
                }
            }
            h.zeros = p.zeros;
            Repr::Hdr(hdr)
        } else {
            if p.raw_values
                .iter()
                .zip(&p.raw_weights)
                .any(|(v, w)| !v.is_finite() || !w.is_finite() || *w <= 0.0)
            {
                return Err("raw samples must be finite with positive weights");
            }
            let mut values = Vec::with_capacity(p.raw_values.len());
            values.extend_from_slice(&p.raw_values);
            let weights = match p.raw_weights.split_first() {
                Some((&w, rest)) if rest.iter().all(|&x| x == w) => Weights::Uniform(w),
                _ => Weights::Each(p.raw_weights.iter().map(|&w| weight_f32(w)).collect()),
            };
            Repr::Raw(Raw { values, weights })
        };
        Ok(HistogramState {
            count: p.count,
            sum: p.sum,
            min: p.min,
            max: p.max,
            recip_sum: p.recip_sum,
            slo: None,
            repr,
        })
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
    use super::super::tests::{build, build_weighted, is_raw};
    use super::super::{FORWARD_RAW_LIMIT, RAW_LIMIT};
    use super::*;

    #[test]
    fn parts_round_trip() {
        for vals in [
            vec![1.0, 2.0, 3.5],
            (0..3000).map(|i| i as f64 - 1500.0).collect(),
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

    #[test]
    fn parts_round_trip_every_form() {
        let forms = [
            build_weighted(&[(1.5, 1.0 / 0.3), (2.5, 1.0 / 0.3)]),
            build_weighted(&[(1.5, 1.0), (2.5, 4.0), (-3.0, 2.0)]),
            build(&(0..3000).map(f64::from).collect::<Vec<_>>()),
            build(&(0..3000).map(|i| f64::from(i) - 1500.0).collect::<Vec<_>>()),
        ];
        for h in forms {
            let parts = h.to_parts();
            assert_eq!(parts.raw_values.len(), parts.raw_weights.len());
            let back = HistogramState::from_parts(&parts).unwrap();
            assert_eq!(back.to_parts(), parts);
            assert_eq!(is_raw(&back), is_raw(&h));
        }
        // A uniform weight travels exactly.
        let p = build_weighted(&[(1.0, 1.0 / 0.3), (2.0, 1.0 / 0.3)]).to_parts();
        assert_eq!(p.raw_weights, vec![1.0 / 0.3; 2]);
        // Negative buckets appear on the wire only when there were negatives.
        let p = build(&(1..=3000).map(f64::from).collect::<Vec<_>>()).to_parts();
        assert!(p.neg_buckets.is_empty() && !p.pos_buckets.is_empty());
    }

    #[test]
    fn too_many_raw_samples_are_refused() {
        let n = FORWARD_RAW_LIMIT + 1;
        let p = HistogramParts {
            count: n as f64,
            min: 1.0,
            max: 1.0,
            raw_values: vec![1.0; n],
            raw_weights: vec![1.0; n],
            ..HistogramParts::default()
        };
        assert!(HistogramState::from_parts(&p).is_err());
        let p = HistogramParts {
            raw_values: vec![1.0; FORWARD_RAW_LIMIT],
            raw_weights: vec![1.0; FORWARD_RAW_LIMIT],
            ..p
        };
        assert!(HistogramState::from_parts(&p).is_ok());
    }

    /// A raw series with more samples than a global accepts raw is forwarded as buckets, and
    /// the global's view keeps its count and percentiles.
    #[test]
    fn large_raw_series_travel_as_buckets() {
        let values: Vec<f64> = (1..=RAW_LIMIT).map(|v| v as f64).collect();
        let h = build(&values);
        assert!(is_raw(&h));
        let p = h.to_parts();
        assert!(p.raw_values.is_empty() && !p.pos_buckets.is_empty());
        let mut back = HistogramState::from_parts(&p).expect("a global accepts it");
        assert_eq!(back.count, RAW_LIMIT as f64);
        let exact = (RAW_LIMIT as f64 * 0.99).ceil();
        assert!((back.percentile(0.99) - exact).abs() <= exact * 0.01);
        // At the forward limit, samples still travel raw.
        let p = build(&values[..FORWARD_RAW_LIMIT]).to_parts();
        assert_eq!(p.raw_values.len(), FORWARD_RAW_LIMIT);
    }
}
