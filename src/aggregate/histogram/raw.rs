//! The raw form of a histogram state: every sample up to [`RAW_LIMIT`], stored compactly
//! (values as `f64`, one shared weight until two differ), with exact weighted nearest-rank
//! percentiles over an in-place total-order sort. [`super::HistogramState`] holds this until
//! the sample that outgrows it, then switches to `hdr.rs`.

use super::RAW_LIMIT;

/// Capacity of a new series' raw values; doubles up to [`RAW_LIMIT`].
const RAW_INITIAL: usize = 4;

/// Raw samples: values, and their weights (1 ÷ rate) in parallel.
#[derive(Debug, Clone)]
pub(super) struct Raw {
    pub(super) values: Vec<f64>,
    pub(super) weights: Weights,
}

#[derive(Debug, Clone)]
pub(super) enum Weights {
    /// Every sample has this weight: the usual case, exact, and free.
    Uniform(f64),
    /// One weight per sample, `values.len()` of them, once two samples' weights differed.
    /// `f32` is plenty for ranking; weights beyond `f32::MAX` clamp to it.
    Each(Vec<f32>),
}

/// A `u64` that orders as [`f64::total_cmp`] orders the floats: the sign bit flipped for
/// positives, every bit for negatives. Sorting these keys (integer compares) is much faster than
/// sorting the floats with `total_cmp`, and the sort of raw samples is most of a raw series'
/// flush (criterion `flush_render/2k_raw_timers`).
fn total_key(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | 1 << 63
    }
}

/// The float whose [`total_key`] is `k` (bit for bit).
fn from_total_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// Sorts `values` as `sort_unstable_by(f64::total_cmp)` does, through [`total_key`]s held in
/// place as float bit patterns, so nothing is allocated per series (faster than a key vector:
/// criterion `flush_render/20k_timers_25_samples`).
fn sort_total(values: &mut [f64]) {
    for v in values.iter_mut() {
        *v = f64::from_bits(total_key(*v));
    }
    values.sort_unstable_by_key(|v| v.to_bits());
    for v in values.iter_mut() {
        *v = from_total_key(v.to_bits());
    }
}

/// Grows `v` to hold `extra` more elements: doubling, but never past [`RAW_LIMIT`] unless it
/// must, so a raw series never holds more than `RAW_LIMIT` elements of capacity.
fn reserve_raw<T>(v: &mut Vec<T>, extra: usize) {
    let need = v.len() + extra;
    if need > v.capacity() {
        let target = v
            .capacity()
            .saturating_mul(2)
            .clamp(need, RAW_LIMIT.max(need));
        v.reserve_exact(target - v.len());
    }
}

pub(super) fn weight_f32(w: f64) -> f32 {
    // `as` saturates to ±inf beyond f32's range; clamp so the percentile walk stays finite.
    (w as f32).min(f32::MAX)
}

impl Raw {
    pub(super) fn one(value: f64, weight: f64) -> Raw {
        let mut values = Vec::with_capacity(RAW_INITIAL);
        values.push(value);
        Raw {
            values,
            weights: Weights::Uniform(weight),
        }
    }

    /// No samples, and no allocation.
    pub(super) fn empty() -> Raw {
        Raw {
            values: Vec::new(),
            weights: Weights::Uniform(1.0),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.values.len()
    }

    /// Hands `f` the per-sample weights with room for `extra` more, converting from a uniform
    /// weight first if need be.
    fn with_each_weights(&mut self, extra: usize, f: impl FnOnce(&mut Vec<f32>)) {
        let mut each = match std::mem::replace(&mut self.weights, Weights::Uniform(1.0)) {
            Weights::Each(each) => each,
            Weights::Uniform(w) => {
                let mut each = Vec::with_capacity(self.values.capacity());
                each.resize(self.values.len(), weight_f32(w));
                each
            }
        };
        reserve_raw(&mut each, extra);
        f(&mut each);
        self.weights = Weights::Each(each);
    }

    pub(super) fn push(&mut self, value: f64, weight: f64) {
        match self.weights {
            Weights::Uniform(w) if w == weight => {}
            _ => self.with_each_weights(1, |ws| ws.push(weight_f32(weight))),
        }
        reserve_raw(&mut self.values, 1);
        self.values.push(value);
    }

    pub(super) fn extend(&mut self, other: &Raw) {
        match (&self.weights, &other.weights) {
            (Weights::Uniform(a), Weights::Uniform(b)) if a == b => {}
            (_, Weights::Uniform(b)) => {
                let (b, n) = (weight_f32(*b), other.len());
                self.with_each_weights(n, |ws| ws.resize(ws.len() + n, b));
            }
            (_, Weights::Each(b)) => self.with_each_weights(b.len(), |ws| ws.extend_from_slice(b)),
        }
        reserve_raw(&mut self.values, other.len());
        self.values.extend_from_slice(&other.values);
    }

    /// Calls `f(value, weight)` for every sample.
    pub(super) fn for_each(&self, mut f: impl FnMut(f64, f64)) {
        match &self.weights {
            Weights::Uniform(w) => self.values.iter().for_each(|&v| f(v, *w)),
            Weights::Each(ws) => self
                .values
                .iter()
                .zip(ws)
                .for_each(|(&v, &w)| f(v, f64::from(w))),
        }
    }

    /// Exact weighted nearest-rank percentile: the smallest value whose cumulative weight
    /// reaches `q` × the total. Sorts the samples (once: later calls find them sorted). `None`
    /// only if empty, which a state never is.
    pub(super) fn percentile(&mut self, q: f64) -> Option<f64> {
        let sorted = self
            .values
            .windows(2)
            .all(|p| matches!(p, [a, b] if a.total_cmp(b).is_le()));
        match &mut self.weights {
            Weights::Uniform(_) => {
                // Equal weights do not change ranks: the unweighted nearest rank, which also
                // spares the float error of a sum of weights.
                if !sorted {
                    sort_total(&mut self.values);
                }
                let n = self.values.len();
                // `as` saturates; a rank outside 1..=n is clamped.
                let rank = ((q * n as f64).ceil() as usize).clamp(1, n.max(1));
                self.values.get(rank - 1).copied()
            }
            Weights::Each(ws) => {
                if !sorted {
                    let mut pairs: Vec<(u64, f32)> = self
                        .values
                        .iter()
                        .map(|&v| total_key(v))
                        .zip(ws.iter().copied())
                        .collect();
                    pairs.sort_unstable_by_key(|&(k, _)| k);
                    for ((v, w), (pk, pw)) in self.values.iter_mut().zip(ws.iter_mut()).zip(pairs) {
                        (*v, *w) = (from_total_key(pk), pw);
                    }
                }
                // The first value whose cumulative weight reaches q × total: for whole weights
                // the same as rank ⌈q × total⌉, and for equal weights the unweighted rank.
                let total: f64 = ws.iter().map(|&w| f64::from(w)).sum();
                let target = q * total;
                let mut seen = 0.0;
                for (&v, &w) in self.values.iter().zip(ws.iter()) {
                    seen += f64::from(w);
                    // Tolerate float error in the weights' sum.
                    if seen >= target - 1e-9 * target {
                        return Some(v);
                    }
                }
                self.values.last().copied()
            }
        }
    }

    pub(super) fn heap_bytes(&self) -> usize {
        let weights = match &self.weights {
            Weights::Uniform(_) => 0,
            Weights::Each(ws) => ws.capacity() * std::mem::size_of::<f32>(),
        };
        self.values.capacity() * std::mem::size_of::<f64>() + weights
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sort_total_is_sort_by_total_cmp(bits in proptest::collection::vec(any::<u64>(), 0..300)) {
            let mut mine: Vec<f64> = bits.iter().map(|&b| f64::from_bits(b)).collect();
            let mut theirs = mine.clone();
            sort_total(&mut mine);
            theirs.sort_by(f64::total_cmp);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&mine), bits(&theirs));
        }
    }
}
