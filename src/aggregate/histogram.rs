//! Timer, histogram and distribution state: exact min, max, sum and count beside a percentile
//! structure that starts as raw samples and switches to HDR histograms when it grows.
//!
//! Values are `f64`; HDR needs integers, so magnitudes are scaled to fixed-point thousandths
//! ([`SCALE`]) and negatives go into a mirrored histogram of their magnitudes, created only when
//! the first negative arrives. Magnitudes below 0.001 count as zero (SPEC §3). HDR runs at two
//! significant digits with auto-resize, and a percentile reports the midpoint of its bucket, so
//! its relative error stays under 0.4 % while a series of millisecond timers up to 10 s costs
//! about 9 KiB with `u32` buckets (18 KiB with `u64`, 64 KiB at three digits).
//!
//! Up to [`RAW_LIMIT`] samples the raw values are kept and percentiles are exact. Raw samples
//! are stored compactly so that a series with 100 samples in its interval stays under 2 KiB
//! (issue 6): values as `f64`, and one shared weight while every sample has the same one (a
//! client samples a metric at one rate); only a series whose samples arrive with different
//! rates keeps a weight per sample, as `f32` (weights only rank samples for percentiles; the
//! exact weighted count lives in [`HistogramState::count`]).

use hdrhistogram::Histogram;

/// Fixed-point scale: HDR unit = 1/1000 of a value.
pub const SCALE: f64 = 1000.0;
/// Raw samples kept before switching to HDR: 1024 × 8 bytes of values (plus 1024 × 4 bytes of
/// weights when rates differ) = 8–12 KiB, about what the HDR arrays a series becomes cost (9.2
/// KiB for a millisecond timer up to 10 s), and percentiles stay exact up to there.
///
/// Appending a sample writes the cache line the previous sample wrote (one line per eight
/// samples); adding one to an HDR array lands anywhere in its ~9 KiB, which with thousands of
/// series is in neither L1 nor L2. With timers only at 1M lines/s (100 samples a second per
/// series, `benches/ab.py` and `meterd-load --types ms`) a limit of 2048 instead of 512 took
/// 136 → 114 ns per line; the plain mix (30 % timers) went 103.1 → 99.3 at 1024, with
/// `round_nonneg` (BENCHMARKS.md).
///
/// The switch is the expensive moment of a series' interval (the samples so far go into a new
/// array), and series fed at similar rates reach it together: with the limit at 128, 50k
/// DogStatsD histogram series at 1.5M lines/s all switched ~8.6 s into each interval, and the
/// reader spent ~300 ms at 100 % there while the socket buffer overflowed. At 1024 a series
/// switches only beyond ~100 samples a second (10 s interval), and the arrays it switches to
/// are the last interval's, recycled ([`SpareHdr`]).
pub const RAW_LIMIT: usize = 1024;
/// Most raw samples a forwarded histogram carries (and a global accepts); a series with more
/// travels as HDR buckets. Unchanged from when it was also the raw limit, so globals of that
/// version accept what a newer local sends.
pub const FORWARD_RAW_LIMIT: usize = 128;
/// Capacity of a new series' raw values; doubles up to [`RAW_LIMIT`].
const RAW_INITIAL: usize = 4;
/// HDR significant digits (see module docs for the error bound).
const SIGFIG: u8 = 2;
/// Largest scaled magnitude recorded; larger values saturate (|v| ≤ 1e15 is the contract).
const MAX_SCALED: u64 = 1 << 62;

/// HDR bucket count type: `u32` halves the arrays (and the cache lines a record touches). A
/// bucket saturates at 4.29e9 weighted samples in one interval rather than wrapping; ranks are
/// then taken over the saturated counts ([`recorded`]), and the exact weighted count is kept in
/// [`HistogramState::count`] regardless.
type Count = u32;

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
    /// At most [`RAW_LIMIT`] samples.
    Raw(Raw),
    /// HDR histograms of scaled magnitudes.
    Hdr(Hdr),
}

/// Raw samples: values, and their weights (1 ÷ rate) in parallel.
#[derive(Debug, Clone)]
struct Raw {
    values: Vec<f64>,
    weights: Weights,
}

#[derive(Debug, Clone)]
enum Weights {
    /// Every sample has this weight: the usual case, exact, and free.
    Uniform(f64),
    /// One weight per sample, `values.len()` of them, once two samples' weights differed.
    /// `f32` is plenty for ranking; weights beyond `f32::MAX` clamp to it.
    Each(Vec<f32>),
}

/// A `u64` that orders as [`f64::total_cmp`] orders the floats: the sign bit flipped for
/// positives, every bit for negatives. Sorting these keys takes half the time of sorting the
/// floats with `total_cmp` (integer compares; 1024 values: ~11.6 µs against ~22.6 µs), and the
/// sort of raw samples is most of a raw series' flush.
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
/// place as float bit patterns, so nothing is allocated per series (criterion
/// `flush_render/20k_timers_25_samples`: 22.3 ms with `total_cmp`, 21.2 with a key vector, 20.9
/// in place).
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

fn weight_f32(w: f64) -> f32 {
    // `as` saturates to ±inf beyond f32's range; clamp so the percentile walk stays finite.
    (w as f32).min(f32::MAX)
}

impl Raw {
    fn one(value: f64, weight: f64) -> Raw {
        let mut values = Vec::with_capacity(RAW_INITIAL);
        values.push(value);
        Raw {
            values,
            weights: Weights::Uniform(weight),
        }
    }

    fn len(&self) -> usize {
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

    fn push(&mut self, value: f64, weight: f64) {
        match self.weights {
            Weights::Uniform(w) if w == weight => {}
            _ => self.with_each_weights(1, |ws| ws.push(weight_f32(weight))),
        }
        reserve_raw(&mut self.values, 1);
        self.values.push(value);
    }

    fn extend(&mut self, other: &Raw) {
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
    fn for_each(&self, mut f: impl FnMut(f64, f64)) {
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
    fn percentile(&mut self, q: f64) -> Option<f64> {
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

    fn heap_bytes(&self) -> usize {
        let weights = match &self.weights {
            Weights::Uniform(_) => 0,
            Weights::Each(ws) => ws.capacity() * std::mem::size_of::<f32>(),
        };
        self.values.capacity() * std::mem::size_of::<f64>() + weights
    }
}

/// The HDR representation: the arrays behind one pointer, and the fill of their queue of
/// pending samples kept here, in the state the sample updates anyway.
#[derive(Debug, Clone)]
struct Hdr {
    arrays: Box<Arrays>,
    /// How many of `arrays.pending` are queued.
    len: u8,
    /// The count every queued sample is added with.
    n: Count,
}

/// HDR arrays of scaled magnitudes, and samples queued for them.
///
/// Adding a sample to an HDR array is one increment at a data-dependent place in a ~9 KiB
/// array: with thousands of series it misses the cache nearly every time, and with parsing in
/// between, the misses of consecutive samples cannot overlap (the perf profile of the plain
/// workload showed `record_n` at 22 % of the reader's time, ~100 ns per timer sample). Queued
/// in `pending` instead (a store, which does not wait for its cache line; the fill is counted in
/// [`Hdr`], which the sample's state already has in cache) and added [`PENDING`] at a time, the
/// increments are independent and their misses overlap. Every reader settles the queue first.
#[derive(Debug, Clone)]
struct Arrays {
    pos: Histogram<Count>,
    /// Magnitudes of negative values; most series never see one, so it starts absent (an empty
    /// auto-resizing histogram already holds a 256-bucket array).
    neg: Option<Histogram<Count>>,
    zeros: u64,
    /// Queued scaled magnitudes, [`NEGATIVE`] set for negative values.
    pending: [u64; PENDING],
}

/// Samples queued before they are added to the arrays: 256 bytes per HDR series (≈ 3 % of one).
const PENDING: usize = 32;
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

    fn total(&self) -> u64 {
        self.neg_len()
            .saturating_add(self.zeros)
            .saturating_add(recorded(&self.pos))
    }

    /// The value of nearest rank `rank` (1-based) over negatives, zeros and positives.
    fn value_at_rank(&self, rank: u64) -> f64 {
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
/// its raw samples ([`HistogramState::record_with`]).
///
/// Series fed at similar rates pass [`RAW_LIMIT`] samples at about the same moment of an
/// interval; each then needs a ~9 KiB array, which the reader had to allocate, zero and
/// fault in. Measured at 1.5M DogStatsD lines/s (50k histogram series): the reader spent
/// ~300 ms at 100 % in that switch, a third of it in page faults, and the socket buffer
/// overflowed. Arrays emptied by the flush (on its own low-priority thread) and handed back
/// to the shard cost the reader nothing of that.
#[derive(Debug)]
pub struct SpareHdr(Box<Arrays>);

impl Hdr {
    fn new() -> Hdr {
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
    fn from_raw(raw: &Raw, spare: Option<SpareHdr>) -> Hdr {
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
    fn record(&mut self, value: f64, weight: f64) {
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
    fn settle(&mut self) -> &Arrays {
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
    fn settled(&self) -> std::borrow::Cow<'_, Arrays> {
        if self.len == 0 {
            return std::borrow::Cow::Borrowed(&self.arrays);
        }
        let mut copy = (*self.arrays).clone();
        copy.add_queued(self.queued(), self.n);
        std::borrow::Cow::Owned(copy)
    }

    /// Adds `other`'s buckets and queued samples; same precision on both sides, so this is
    /// exact.
    fn add(&mut self, other: &Hdr) {
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

    fn heap_bytes(&self) -> usize {
        let a = &self.arrays;
        let buckets =
            a.pos.distinct_values() + a.neg.as_ref().map_or(0, Histogram::distinct_values);
        buckets * std::mem::size_of::<Count>() + std::mem::size_of::<Arrays>()
    }
}

fn new_hdr() -> Histogram<Count> {
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
    pub fn into_spare(self) -> Option<SpareHdr> {
        let Repr::Hdr(hdr) = self.repr else {
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
            repr,
        })
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

    fn build_weighted(samples: &[(f64, f64)]) -> HistogramState {
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

    fn is_raw(h: &HistogramState) -> bool {
        matches!(h.repr, Repr::Raw(_))
    }

    fn total_bytes(h: &HistogramState) -> usize {
        std::mem::size_of::<HistogramState>() + h.heap_bytes()
    }

    #[test]
    fn state_is_small() {
        assert!(std::mem::size_of::<HistogramState>() <= 88);
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
        fn sort_total_is_sort_by_total_cmp(bits in proptest::collection::vec(any::<u64>(), 0..300)) {
            let mut mine: Vec<f64> = bits.iter().map(|&b| f64::from_bits(b)).collect();
            let mut theirs = mine.clone();
            sort_total(&mut mine);
            theirs.sort_by(f64::total_cmp);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&mine), bits(&theirs));
        }

        #[test]
        fn round_nonneg_is_round(x in 0.0f64..1e17, bits in any::<u64>()) {
            prop_assert_eq!(round_nonneg(x).to_bits(), x.round().to_bits());
            let y = f64::from_bits(bits).abs();
            if !y.is_nan() {
                prop_assert_eq!(round_nonneg(y).to_bits(), y.round().to_bits());
            }
        }

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
