//! The HDR form of a histogram state: values scaled to fixed-point magnitudes in HDR arrays
//! (a mirrored one for negatives), samples queued and added in batches, rounding without libm,
//! nearest-rank lookups, and [`SpareHdr`], the emptied arrays a flush hands back for reuse.
//! [`super::HistogramState`] switches to this once its raw samples (`raw.rs`) outgrow
//! [`RAW_LIMIT`](super::RAW_LIMIT).

use hdrhistogram::Histogram;

use super::raw::Raw;
use super::SCALE;

/// HDR significant digits (see module docs for the error bound).
const SIGFIG: u8 = 2;
/// Largest scaled magnitude recorded; larger values saturate (|v| ≤ 1e15 is the contract).
pub(super) const MAX_SCALED: u64 = 1 << 62;

/// HDR bucket count type: `u32` halves the arrays (and the cache lines a record touches). A
/// bucket saturates at 4.29e9 weighted samples in one interval rather than wrapping; ranks are
/// then taken over the saturated counts ([`recorded`]), and the exact weighted count is kept in
/// [`HistogramState::count`](super::HistogramState::count) regardless.
pub(super) type Count = u32;

/// The HDR representation: the arrays behind one pointer, and the fill of their queue of
/// pending samples kept here, in the state the sample updates anyway.
#[derive(Debug, Clone)]
pub(super) struct Hdr {
    pub(super) arrays: Box<Arrays>,
    /// How many of `arrays.pending` are queued.
    len: u8,
    /// The count every queued sample is added with.
    n: Count,
}

/// HDR arrays of scaled magnitudes, and samples queued for them.
///
/// Adding a sample to an HDR array is one increment at a data-dependent place in a ~9 KiB array:
/// with thousands of series it misses the cache nearly every time, and with parsing in between, the
/// misses of consecutive samples cannot overlap (HDR recording led the reader's profile in the
/// plain workload; BENCHMARKS.md, ingest loop). Queued in `pending` instead (a store, which does
/// not wait for its cache line; the fill is counted in [`Hdr`], which the sample's state already
/// has in cache) and added [`PENDING`] at a time, the increments are independent and their misses
/// overlap. Every reader settles the queue first.
#[derive(Debug, Clone)]
pub(super) struct Arrays {
    pub(super) pos: Histogram<Count>,
    /// Magnitudes of negative values; most series never see one, so it starts absent (an empty
    /// auto-resizing histogram already holds a 256-bucket array).
    pub(super) neg: Option<Histogram<Count>>,
    pub(super) zeros: u64,
    /// Queued scaled magnitudes, [`NEGATIVE`] set for negative values.
    pending: [u64; PENDING],
}

/// Samples queued before they are added to the arrays: 256 bytes per HDR series (≈ 3 % of one).
pub(super) const PENDING: usize = 32;
/// Marks a queued magnitude as negative (magnitudes are at most [`MAX_SCALED`] = 2^62).
const NEGATIVE: u64 = 1 << 63;

impl Arrays {
    /// Adds `n` at each queued magnitude in `queued`.
    fn add_queued(&mut self, queued: &[u64], n: Count) {
        add_queued(&mut self.pos, &mut self.neg, queued, n);
    }

    fn neg_len(&self) -> u64 {
        self.neg.as_ref().map_or(0, recorded)
    }

    pub(super) fn total(&self) -> u64 {
        self.neg_len()
            .saturating_add(self.zeros)
            .saturating_add(recorded(&self.pos))
    }

    /// The value of nearest rank `rank` (1-based) over negatives, zeros and positives.
    pub(super) fn value_at_rank(&self, rank: u64) -> f64 {
        let neg = self.neg_len();
        if let Some(h) = self.neg.as_ref().filter(|_| rank <= neg) {
            // The r-th smallest value overall is the (neg - r + 1)-th smallest magnitude.
            return -magnitude_at_rank(h, neg - rank + 1);
        }
        let rank = rank - neg;
        if rank <= self.zeros {
            return 0.0;
        }
        magnitude_at_rank(&self.pos, rank - self.zeros)
    }
}

/// HDR arrays of a finished interval, emptied, for a series of the next interval that outgrows
/// its raw samples ([`HistogramState::record_with`](super::HistogramState::record_with)).
///
/// Series fed at similar rates pass [`RAW_LIMIT`](super::RAW_LIMIT) samples at about the same
/// moment of an interval; each then needs a ~9 KiB array, which the reader had to allocate, zero
/// and fault in: under the DogStatsD workload the reader stalled in that switch (much of it page
/// faults) until the socket buffer overflowed (`benches/soak.sh`). Arrays emptied by the flush (on
/// its own low-priority thread) and handed back to the shard cost the reader nothing of that.
#[derive(Debug)]
pub struct SpareHdr(pub(super) Box<Arrays>);

impl Hdr {
    pub(super) fn new() -> Hdr {
        Hdr::with_max(2)
    }

    /// `Hdr` over spare arrays (already empty).
    fn from_spare(spare: SpareHdr) -> Hdr {
        Hdr {
            arrays: spare.0,
            len: 0,
            n: 1,
        }
    }

    /// An empty `Hdr` whose positive array already covers magnitudes up to `max` (scaled), so
    /// that recording up to it never grows (re-allocates and copies) the array.
    fn with_max(max: u64) -> Hdr {
        Hdr {
            arrays: Box::new(Arrays {
                pos: new_hdr_to(max),
                neg: None,
                zeros: 0,
                pending: [0; PENDING],
            }),
            len: 0,
            n: 1,
        }
    }

    /// The samples of `raw` in HDR form: in `spare`'s arrays if there are any (they grow as
    /// needed), else in new ones sized for them.
    pub(super) fn from_raw(raw: &Raw, spare: Option<SpareHdr>) -> Hdr {
        let mut h = spare.map_or_else(
            || {
                let top = raw.values.iter().fold(0.0f64, |m, v| m.max(*v));
                Hdr::with_max(scale(top).unwrap_or(2))
            },
            Hdr::from_spare,
        );
        raw.for_each(|v, w| h.record(v, w));
        h
    }

    /// Queues one sample (see [`Arrays`]).
    #[inline]
    pub(super) fn record(&mut self, value: f64, weight: f64) {
        let n = count_of(weight);
        let Some(m) = scale(value) else {
            // NaN never reaches here (values are finite), but would count as zero too.
            self.arrays.zeros = self.arrays.zeros.saturating_add(u64::from(n));
            return;
        };
        if self.n != n || usize::from(self.len) == PENDING {
            self.settle();
            self.n = n;
        }
        if let Some(slot) = self.arrays.pending.get_mut(usize::from(self.len)) {
            *slot = if value < 0.0 { m | NEGATIVE } else { m };
            self.len += 1;
        }
    }

    fn queued(&self) -> &[u64] {
        self.arrays
            .pending
            .get(..usize::from(self.len))
            .unwrap_or(&[])
    }

    /// Adds the queued samples to the arrays; returns them, settled.
    pub(super) fn settle(&mut self) -> &Arrays {
        let len = std::mem::take(&mut self.len);
        let Arrays {
            pos, neg, pending, ..
        } = &mut *self.arrays;
        // The queue is read in place (split borrows), not copied out.
        add_queued(
            pos,
            neg,
            pending.get(..usize::from(len)).unwrap_or(&[]),
            self.n,
        );
        &self.arrays
    }

    /// The arrays with nothing queued: these, or a settled copy.
    pub(super) fn settled(&self) -> std::borrow::Cow<'_, Arrays> {
        if self.len == 0 {
            return std::borrow::Cow::Borrowed(&self.arrays);
        }
        let mut copy = (*self.arrays).clone();
        copy.add_queued(self.queued(), self.n);
        std::borrow::Cow::Owned(copy)
    }

    /// Adds `other`'s buckets and queued samples; same precision on both sides, so this is
    /// exact.
    pub(super) fn add(&mut self, other: &Hdr) {
        self.settle();
        let arrays = &mut *self.arrays;
        arrays.add_queued(other.queued(), other.n);
        let other = &other.arrays;
        let _ = arrays.pos.add(&other.pos);
        if let Some(o) = &other.neg {
            match &mut arrays.neg {
                Some(n) => {
                    let _ = n.add(o);
                }
                None => arrays.neg = Some(o.clone()),
            }
        }
        arrays.zeros = arrays.zeros.saturating_add(other.zeros);
    }

    pub(super) fn heap_bytes(&self) -> usize {
        let a = &self.arrays;
        let buckets =
            a.pos.distinct_values() + a.neg.as_ref().map_or(0, Histogram::distinct_values);
        buckets * std::mem::size_of::<Count>() + std::mem::size_of::<Arrays>()
    }
}

pub(super) fn new_hdr() -> Histogram<Count> {
    new_hdr_to(2)
}

/// An auto-resizing histogram sized for magnitudes up to `max` from the start. The bucket a
/// value falls in depends only on the lowest value (1) and the precision, so histograms of
/// different sizes still add exactly.
fn new_hdr_to(max: u64) -> Histogram<Count> {
    let mut h = Histogram::new_with_bounds(1, max.clamp(2, MAX_SCALED), SIGFIG)
        .or_else(|_| Histogram::new(SIGFIG))
        .expect("2 significant digits is a valid HDR precision");
    h.auto(true);
    h
}

/// The HDR count of a sample of weight 1 ÷ rate ≥ 1: HDR counts are integers, so rounded
/// (exact for 1, 2, 4, 10…), at least 1, saturating.
fn count_of(weight: f64) -> Count {
    let n = if weight.is_finite() && weight < 1e18 {
        (round_nonneg(weight) as u64).max(1)
    } else {
        u64::MAX / 4
    };
    Count::try_from(n).unwrap_or(Count::MAX)
}

/// `x.round()` for `0 ≤ x < 2^52`, without the call into libm that `f64::round` is on baseline
/// x86-64 (no SSE4.1 rounding instruction): `count_of` and `scale` made two such calls per HDR
/// sample. Exact: below 2^52 the truncation and the fraction `x − t` are exact. Any other `x`
/// comes back as it is: from 2^52 on every float is an integer already, and both callers treat
/// NaN and negatives alike before and after rounding.
#[inline]
fn round_nonneg(x: f64) -> f64 {
    if (0.0..4_503_599_627_370_496.0).contains(&x) {
        let t = x as i64 as f64;
        if x - t >= 0.5 {
            t + 1.0
        } else {
            t
        }
    } else {
        x
    }
}

/// `|value|` in HDR units, saturating at [`MAX_SCALED`]; `None` when it counts as zero (below
/// one unit) or is NaN.
fn scale(value: f64) -> Option<u64> {
    let scaled = round_nonneg(value.abs() * SCALE);
    if scaled.is_nan() || scaled < 1.0 {
        return None;
    }
    Some(if scaled >= MAX_SCALED as f64 {
        MAX_SCALED
    } else {
        scaled as u64
    })
}

/// Adds `n` at each queued magnitude in `queued` to `pos`, or to `neg` for negatives.
fn add_queued(
    pos: &mut Histogram<Count>,
    neg: &mut Option<Histogram<Count>>,
    queued: &[u64],
    n: Count,
) {
    for &m in queued {
        let h = if m & NEGATIVE != 0 {
            neg.get_or_insert_with(new_hdr)
        } else {
            &mut *pos
        };
        add_to(h, m & !NEGATIVE, n);
    }
}

/// Adds `n` at magnitude `m` (≥ 1). Auto-resize grows the histogram to cover every value up to
/// MAX_SCALED; should it ever refuse, clamping to the largest trackable value keeps the count
/// exact.
#[inline]
fn add_to(h: &mut Histogram<Count>, m: u64, n: Count) {
    if h.record_n(m, n).is_err() {
        h.saturating_record_n(m, n);
    }
}

/// Samples in `h` as its buckets count them. `len()` adds every recorded count in full, so once a
/// bucket has saturated it exceeds the buckets' sum, and ranks must come from the buckets. Below
/// `Count::MAX` in all no bucket can have saturated, and `len()` is that sum.
fn recorded(h: &Histogram<Count>) -> u64 {
    if h.len() < u64::from(Count::MAX) {
        return h.len();
    }
    h.iter_recorded()
        .map(|v| u64::from(v.count_at_value()))
        .fold(0, u64::saturating_add)
}

/// The median of the bucket holding the `rank`-th smallest magnitude (1-based) of `h`.
///
/// Below `Count::MAX` samples (no bucket can have saturated: see [`recorded`]) hdrhistogram's
/// quantile scan finds the bucket, summing eight counts at a time: the walk with
/// `iter_recorded` took two thirds of a flush's CPU for HDR series. The quantile
/// (rank − ½) ÷ total makes its ⌈quantile × total⌉ exactly `rank` for any total below 2^50.
fn magnitude_at_rank(h: &Histogram<Count>, rank: u64) -> f64 {
    let total = h.len();
    if (1..u64::from(Count::MAX)).contains(&total) && (1..=total).contains(&rank) {
        let q = (rank as f64 - 0.5) / total as f64;
        return h.median_equivalent(h.value_at_quantile(q)) as f64 / SCALE;
    }
    magnitude_at_rank_walk(h, rank)
}

/// [`magnitude_at_rank`] by walking the recorded buckets (any count).
fn magnitude_at_rank_walk(h: &Histogram<Count>, rank: u64) -> f64 {
    let mut seen = 0u64;
    for v in h.iter_recorded() {
        seen = seen.saturating_add(u64::from(v.count_at_value()));
        if seen >= rank {
            return h.median_equivalent(v.value_iterated_to()) as f64 / SCALE;
        }
    }
    h.max() as f64 / SCALE
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_nonneg_is_round_at_the_edges() {
        let half_below = 0.5 - f64::EPSILON / 4.0; // the classic `(x + 0.5).floor()` failure
        for x in [
            0.0,
            half_below,
            0.5,
            1.5,
            2.5,
            999.4999999999999,
            999.5,
            4_503_599_627_370_495.5,
            4_503_599_627_370_496.0,
            1e18,
            f64::MAX,
            f64::INFINITY,
        ] {
            assert_eq!(round_nonneg(x).to_bits(), x.round().to_bits(), "{x}");
        }
        assert!(round_nonneg(f64::NAN).is_nan());
    }

    proptest! {
        #[test]
        fn round_nonneg_is_round(x in 0.0f64..1e17, bits in any::<u64>()) {
            prop_assert_eq!(round_nonneg(x).to_bits(), x.round().to_bits());
            let y = f64::from_bits(bits).abs();
            if !y.is_nan() {
                prop_assert_eq!(round_nonneg(y).to_bits(), y.round().to_bits());
            }
        }

        /// The quantile scan finds the same bucket as the walk over recorded buckets, at
        /// every rank, whatever the magnitudes and counts.
        #[test]
        fn rank_scan_matches_the_walk(
            samples in proptest::collection::vec((1u64..1u64 << 40, 1u32..1000), 1..300),
        ) {
            let mut h = new_hdr();
            for &(m, n) in &samples {
                add_to(&mut h, m, n);
            }
            let total = h.len();
            let step = (total / 500).max(1);
            let mut rank = 1;
            while rank <= total {
                prop_assert_eq!(
                    magnitude_at_rank(&h, rank).to_bits(),
                    magnitude_at_rank_walk(&h, rank).to_bits(),
                    "rank {} of {}", rank, total
                );
                rank += step;
            }
            prop_assert_eq!(magnitude_at_rank(&h, total), magnitude_at_rank_walk(&h, total));
        }
    }
}
