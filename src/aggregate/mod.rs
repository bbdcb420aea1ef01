//! The interval's state, sharded by series hash.
//!
//! [`Aggregator`] holds a power-of-two number of shards, each a `std::sync::Mutex` over a
//! `hashbrown::HashTable` from encoded series key ([`key`]) to its state. Readers never touch it
//! line by line: an [`Ingestor`] (one per reader thread or connection) parses, encodes and hashes
//! lines into per-shard batches and applies each batch under one lock. [`Aggregator::swap`] takes
//! every shard's table out (ingest goes on into fresh tables) for the flush to render outside the
//! locks.

pub mod histogram;
pub mod key;
pub mod set;
pub mod slo;

mod batch;
mod cardinality;
#[cfg(test)]
mod mapping_tests;
mod prefetch;
mod stats;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hashbrown::HashTable;

pub use batch::Ingestor;
pub use cardinality::{Cardinality, MetricCardinality, TagKeyCardinality};
pub use stats::IngestStats;

use crate::point::{Event, ServiceCheck};
use histogram::{HistogramState, SpareHdr};
pub(crate) use prefetch::prefetch;
use prefetch::{prefetch_entry, prefetch_heap_key, ENTRY_AHEAD, KEY_AHEAD};
use set::SetSketch;

/// How gauges treat a value written `-N` (`docs/protocol.md#edge-cases`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GaugeDeltas {
    /// `-N` sets the gauge to −N; only `+N` adds.
    #[default]
    Dogstatsd,
    /// `-N` subtracts N, as Etsy statsd does.
    Etsy,
}

/// Limits on what the network can make meterd hold; all can change at run time (SIGHUP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Distinct series per interval before new ones are refused.
    pub max_series: usize,
    /// Distinct series of one metric name per interval (0 = no limit): a tag explosion on one
    /// name cannot crowd out the rest.
    pub max_series_per_metric: usize,
    /// Events plus service checks kept per interval before new ones are refused.
    pub max_events: usize,
    /// Longest metric name in bytes; longer lines are `bad_name`.
    pub max_name_length: usize,
    /// Most tags on one line; more makes the line `bad_tags`.
    pub max_tags_per_line: usize,
    /// Longest tag in bytes; longer makes the line `bad_tags`.
    pub max_tag_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_series: 1_000_000,
            max_series_per_metric: 0,
            max_events: 10_000,
            max_name_length: 512,
            max_tags_per_line: 64,
            max_tag_length: 512,
        }
    }
}

#[derive(Debug, Default)]
struct AtomicLimits {
    max_series: AtomicUsize,
    max_series_per_metric: AtomicUsize,
    max_events: AtomicUsize,
    max_name_length: AtomicUsize,
    max_tags_per_line: AtomicUsize,
    max_tag_length: AtomicUsize,
}

impl AtomicLimits {
    fn store(&self, l: &Limits) {
        self.max_series.store(l.max_series, Ordering::Relaxed);
        self.max_series_per_metric
            .store(l.max_series_per_metric, Ordering::Relaxed);
        self.max_events.store(l.max_events, Ordering::Relaxed);
        self.max_name_length
            .store(l.max_name_length, Ordering::Relaxed);
        self.max_tags_per_line
            .store(l.max_tags_per_line, Ordering::Relaxed);
        self.max_tag_length
            .store(l.max_tag_length, Ordering::Relaxed);
    }

    fn load(&self) -> Limits {
        Limits {
            max_series: self.max_series.load(Ordering::Relaxed),
            max_series_per_metric: self.max_series_per_metric.load(Ordering::Relaxed),
            max_events: self.max_events.load(Ordering::Relaxed),
            max_name_length: self.max_name_length.load(Ordering::Relaxed),
            max_tags_per_line: self.max_tags_per_line.load(Ordering::Relaxed),
            max_tag_length: self.max_tag_length.load(Ordering::Relaxed),
        }
    }
}

/// Settings the aggregator needs, taken from the validated config.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// Number of shards; rounded up to a power of two.
    pub shards: usize,
    /// Input limits (changeable later with [`Aggregator::set_limits`]).
    pub limits: Limits,
    /// `-N` gauge semantics.
    pub gauge_deltas: GaugeDeltas,
    /// Hostname for events and service checks that carry no `h:`.
    pub hostname: Arc<str>,
    /// Flushes a gauge's last value is remembered for `+N` after its last update.
    pub gauge_memory_flushes: u64,
}

impl Default for AggregatorConfig {
    /// For tests and benches: 8 shards, the default limits, DogStatsD's `-N`, hostname
    /// `localhost`, gauges remembered 360 flushes (an hour at the default 10 s interval). A
    /// server builds its own from the config.
    fn default() -> AggregatorConfig {
        AggregatorConfig {
            shards: 8,
            limits: Limits::default(),
            gauge_deltas: GaugeDeltas::Dogstatsd,
            hostname: Arc::from("localhost"),
            gauge_memory_flushes: 360,
        }
    }
}

/// The aggregate state of one series over one interval.
#[derive(Debug, Clone)]
pub enum State {
    /// Σ value ÷ rate.
    Counter(f64),
    /// Last value (after deltas).
    Gauge(f64),
    /// Distinct members.
    Set(SetSketch),
    /// Timer, histogram or distribution samples.
    Histogram(Box<HistogramState>),
}

/// One series: its encoded key, the key's hash, its state.
///
/// Aligned to a cache line, which its 64 bytes fill: a table's entries are then one line each.
/// With the allocator's 16-byte alignment every entry straddled two, and a lookup read both
/// (the hash in one, the key in the other) where the entry prefetch had fetched one.
#[derive(Debug)]
#[repr(align(64))]
pub struct Series {
    /// Encoded key ([`key::encode_key`]).
    pub key: key::SeriesKey,
    /// [`key::hash_key`] of `key`.
    pub hash: u64,
    /// The interval's aggregate.
    pub state: State,
    /// Lines aggregated into it this interval (a line with several values counts once; imported
    /// states add none), for [`Aggregator::cardinality`].
    pub lines: u64,
}

struct Shard {
    table: HashTable<Series>,
    /// Last value of each gauge by key hash, for `+N` across intervals, with the flush number
    /// of its last update. Hash collisions (64-bit) are ignored: ~5e-8 at 1M gauges.
    gauge_last: hashbrown::HashMap<u64, (f64, u64), IdentityHash>,
    /// Emptied HDR arrays of the last interval, for series outgrowing their raw samples
    /// ([`Aggregator::recycle`]).
    spare_hdr: Vec<SpareHdr>,
    /// Samples of one batch for histogram series, recorded after its lookups
    /// ([`Aggregator::apply`]); empty between batches.
    deferred: Deferred,
    /// Tables swapped out of this shard so far: a walk over the table in several holds of the
    /// lock ([`Aggregator::cardinality`]) notices the table it walks was replaced.
    swaps: u64,
}

/// Samples waiting to be recorded into histogram states of a shard's table: the state, the
/// value and its weight. Empty except inside [`Aggregator::apply`].
#[derive(Default)]
struct Deferred(Vec<(*mut HistogramState, f64, f64)>);

// SAFETY: the pointers are only created, followed and dropped inside `Aggregator::apply`, on the
// thread holding the shard's lock; between calls the vector is empty.
unsafe impl Send for Deferred {}

/// Everything taken out of the aggregator by one [`Aggregator::swap`].
#[derive(Debug, Default)]
pub struct Snapshot {
    /// One table per shard.
    pub tables: Vec<HashTable<Series>>,
    /// Events received in the interval.
    pub events: Vec<Event>,
    /// Service checks received in the interval.
    pub service_checks: Vec<ServiceCheck>,
}

impl Snapshot {
    /// Number of series.
    pub fn series(&self) -> usize {
        self.tables.iter().map(HashTable::len).sum()
    }
}

/// Events and service checks, bounded per interval.
#[derive(Default)]
struct Passthrough {
    events: Vec<Event>,
    service_checks: Vec<ServiceCheck>,
}

/// The sharded interval state.
pub struct Aggregator {
    shards: Box<[Mutex<Shard>]>,
    shard_mask: u64,
    series: AtomicUsize,
    flushes: std::sync::atomic::AtomicU64,
    passthrough: Mutex<Passthrough>,
    config: AggregatorConfig,
    limits: AtomicLimits,
    /// Series admitted and lines refused per metric name this interval, kept only while
    /// `max_series_per_metric` > 0.
    per_metric: Mutex<HashMap<Box<[u8]>, cardinality::PerMetric>>,
    stats: Arc<IngestStats>,
    on_service_check: Option<ServiceCheckHook>,
    /// SLO rules ([`Aggregator::set_slo_rules`]); read per batch only while `slo_on`.
    slo_rules: std::sync::RwLock<Arc<slo::SloRules>>,
    /// Whether any latency SLO exists: new histogram series are then offered to the rules.
    slo_on: std::sync::atomic::AtomicBool,
    /// The mapping rules readers pick up at their next commit.
    mapping: batch::MappingSlot,
}

/// Called on the reader's thread with every `_sc` line's check as it is parsed, before the check
/// is queued for the next flush. The layer that owns health results installs it
/// ([`Aggregator::with_service_check_hook`]); the aggregator itself knows nothing of them.
pub type ServiceCheckHook = Box<dyn Fn(&ServiceCheck) + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Aggregator {
    /// An empty aggregator.
    pub fn new(config: AggregatorConfig) -> Aggregator {
        let n = config.shards.max(1).next_power_of_two();
        let shards = (0..n)
            .map(|_| {
                Mutex::new(Shard {
                    table: HashTable::new(),
                    gauge_last: hashbrown::HashMap::default(),
                    spare_hdr: Vec::new(),
                    deferred: Deferred::default(),
                    swaps: 0,
                })
            })
            .collect();
        Aggregator {
            shards,
            shard_mask: n as u64 - 1,
            series: AtomicUsize::new(0),
            flushes: std::sync::atomic::AtomicU64::new(0),
            passthrough: Mutex::new(Passthrough::default()),
            limits: {
                let l = AtomicLimits::default();
                l.store(&config.limits);
                l
            },
            per_metric: Mutex::new(HashMap::new()),
            config,
            stats: Arc::default(),
            on_service_check: None,
            slo_rules: std::sync::RwLock::default(),
            slo_on: std::sync::atomic::AtomicBool::new(false),
            mapping: batch::MappingSlot::default(),
        }
    }

    /// Replaces the mapping rules (`None`: no mapping); readers take them from their next
    /// batch on, with an empty cache.
    pub fn set_mapping(&self, rules: Option<Arc<crate::mapping::Rules>>) {
        self.mapping.set(rules);
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits.load()
    }

    /// Changes the limits; they apply from the next batch on (SIGHUP reload).
    pub fn set_limits(&self, limits: &Limits) {
        self.limits.store(limits);
    }

    /// Shows every `_sc` line's check to `hook` as it arrives, as well as queuing it for the
    /// sinks (the server records them as health results this way).
    pub fn with_service_check_hook(mut self, hook: ServiceCheckHook) -> Aggregator {
        self.on_service_check = Some(hook);
        self
    }

    /// Replaces the SLO counting rules; new series follow them from the next batch (series
    /// created before keep the tally they were given until the flush).
    pub fn set_slo_rules(&self, rules: slo::SloRules) {
        let on = rules.has_latency();
        *self
            .slo_rules
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(rules);
        self.slo_on.store(on, Ordering::Relaxed);
    }

    /// Number of shards (a power of two).
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The shard a key hash belongs to. Uses middle bits: hashbrown uses the top 7 bits and the
    /// low bits inside each table, and shards must not correlate with either.
    #[inline]
    pub fn shard_of(&self, hash: u64) -> usize {
        ((hash >> 32) & self.shard_mask) as usize
    }

    /// Settings.
    pub fn config(&self) -> &AggregatorConfig {
        &self.config
    }

    /// What readers and imports have counted since start (read by the self-metrics).
    pub fn stats(&self) -> &Arc<IngestStats> {
        &self.stats
    }

    /// Series currently held (all shards).
    pub fn series_count(&self) -> usize {
        self.series.load(Ordering::Relaxed)
    }

    /// Gauges whose last value is remembered for `+N` (all shards): every gauge series updated
    /// within the last `gauge_memory_flushes` flushes, plus up to 15 flushes' worth that expired
    /// since the last pruning (every 16th flush).
    pub fn remembered_gauges(&self) -> usize {
        self.gauge_memory().0
    }

    /// [`Aggregator::remembered_gauges`], and the bytes the tables holding them have allocated:
    /// a power-of-two number of buckets, each an entry and a control byte, at most 7/8 of them
    /// full, so about 30 to 60 bytes per gauge at the peak each table has grown to, up to twice
    /// that in a table that has just doubled (tables do not shrink; expired gauges' slots are
    /// reused).
    pub fn gauge_memory(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(n, bytes), m| {
            let shard = lock(m);
            let table = shard.gauge_last.allocation_size();
            (n + shard.gauge_last.len(), bytes + table)
        })
    }

    /// Queues an event for the next flush; refused (and counted) beyond `max_events`.
    pub fn push_event(&self, event: Event) {
        self.push_passthrough(|p| p.events.push(event));
    }

    /// Shows a service check to the hook, then queues it for the next flush; refused from the
    /// queue (and counted) beyond `max_events`.
    pub fn push_service_check(&self, check: ServiceCheck) {
        if let Some(hook) = &self.on_service_check {
            hook(&check);
        }
        self.push_passthrough(|p| p.service_checks.push(check));
    }

    /// Runs `push` on the passthrough queue unless it holds `max_events` items already.
    fn push_passthrough(&self, push: impl FnOnce(&mut Passthrough)) {
        let mut p = lock(&self.passthrough);
        if p.events.len() + p.service_checks.len() >= self.limits.max_events.load(Ordering::Relaxed)
        {
            self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        push(&mut p);
    }

    /// Applies one shard's batch under one lock. Returns the ops refused by `max_series` and by
    /// `max_series_per_metric`.
    ///
    /// Counters and gauges are updated where they are looked up. A sample for an existing
    /// histogram series is recorded after the batch's lookups instead ([`record_deferred`]): its
    /// state is behind a pointer and its raw samples in a buffer of their own, so recording it
    /// where it is found waited for two cache misses (a large share of the reader's time in the
    /// plain workload's profile), one after the other and one line at a time. Recorded together,
    /// each state and the slot its sample goes to are prefetched a few samples ahead, so the misses
    /// overlap. Each op's table entry is prefetched [`ENTRY_AHEAD`] ops ahead too: a reader at a
    /// moderate rate works in bursts and finds the table out of its caches, where the entry
    /// loads dominated this function (`benches/ab.py --perf`; `benches/ingest_loop.rs` with
    /// `cold`). A key too long to be stored in place (tagged lines) is compared on the heap, one
    /// more miss per line: [`KEY_AHEAD`] ops ahead, once the entry has arrived, its heap key is
    /// prefetched as well, for those ops only (BENCHMARKS.md, the dogstatsd preset flooded).
    fn apply(&self, shard: usize, keys: &[u8], ops: &[batch::Op]) -> (u64, u64) {
        let Some(m) = self.shards.get(shard) else {
            return (0, 0);
        };
        let max_series = self.limits.max_series.load(Ordering::Relaxed);
        let per_metric = self.limits.max_series_per_metric.load(Ordering::Relaxed);
        let mut refused = 0;
        let mut refused_per_metric = 0;
        // Read once per batch, and only with a latency SLO configured.
        let slo = self.slo_on.load(Ordering::Relaxed).then(|| {
            self.slo_rules
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        });
        let mut guard = lock(m);
        let shard = &mut *guard;
        let spares = &mut shard.spare_hdr;
        // Taken out of the shard for the call and put back empty, so its buffer is reused (and a
        // panic on the way leaves the shard's empty).
        let mut deferred = std::mem::take(&mut shard.deferred.0);
        // The values of one line are consecutive ops sharing its key's span; any other op starts
        // a line (each line's key is encoded at its own place in `keys`).
        let mut last = batch::KeySpan::NONE;
        for op in ops.iter().take(ENTRY_AHEAD) {
            prefetch_entry(&shard.table, op.hash);
        }
        for (i, op) in ops.iter().enumerate() {
            if let Some(ahead) = ops.get(i + ENTRY_AHEAD) {
                prefetch_entry(&shard.table, ahead.hash);
            }
            if let Some(ahead) = ops.get(i + KEY_AHEAD) {
                if !key::SeriesKey::fits_in_place(ahead.key.len()) {
                    prefetch_heap_key(&shard.table, ahead.hash);
                }
            }
            let new_line = op.key != last;
            last = op.key;
            let Some(key) = op.key.of(keys) else {
                continue;
            };
            let hash = op.hash;
            if let Some(series) = shard
                .table
                .find_mut(hash, |s| s.hash == hash && key::same_key(&s.key, key))
            {
                series.lines += u64::from(new_line);
                match (op.value, &mut series.state) {
                    (OpValue::Sample(v, w), State::Histogram(h)) => {
                        deferred.push((&raw mut **h, v, w));
                    }
                    (value, state) => update(state, value, spares),
                }
                continue;
            }
            if self.series.fetch_add(1, Ordering::Relaxed) >= max_series {
                self.series.fetch_sub(1, Ordering::Relaxed);
                refused += 1;
                continue;
            }
            if per_metric > 0 && !self.admit_per_metric(key, per_metric, new_line) {
                self.series.fetch_sub(1, Ordering::Relaxed);
                refused_per_metric += 1;
                continue;
            }
            let previous = shard.gauge_last.get(&hash).map(|g| g.0).unwrap_or(0.0);
            let mut state = new_state(op.value, previous);
            if let (Some(rules), State::Histogram(h), OpValue::Sample(v, w)) =
                (&slo, &mut state, op.value)
            {
                h.slo = rules.tally_for(key).map(|mut t| {
                    t.record(v, w);
                    t
                });
            }
            shard.table.insert_unique(
                hash,
                Series {
                    key: key::SeriesKey::new(key),
                    hash,
                    state,
                    lines: 1,
                },
                |s| s.hash,
            );
        }
        // SAFETY: every pointer in `deferred` was taken above, in this call, from a state box
        // of a series in `shard.table`, which this thread has locked. Series are never removed
        // from a table while it is in its shard, and a series' state is updated in place, never
        // replaced; the table may have grown since (inserts), which moves the boxes but not the
        // states they point to. Nothing else refers to those states until this returns.
        unsafe { record_deferred(&mut deferred, spares) };
        shard.deferred.0 = deferred;
        (refused, refused_per_metric)
    }

    /// Merges whole series states (forwarded from locals) under one lock per shard: counters
    /// add, gauges take the arriving value, sets and histograms merge. New series count against
    /// `max_series`; returns how many were refused.
    pub fn merge_series(&self, items: Vec<(Box<[u8]>, State)>) -> u64 {
        type Keyed = (u64, Box<[u8]>, State);
        let mut per_shard: Vec<Vec<Keyed>> = (0..self.shards.len()).map(|_| Vec::new()).collect();
        for (key, state) in items {
            let hash = key::hash_key(&key);
            if let Some(v) = per_shard.get_mut(self.shard_of(hash)) {
                v.push((hash, key, state));
            }
        }
        let mut refused = 0;
        let max_series = self.limits.max_series.load(Ordering::Relaxed);
        for (m, items) in self.shards.iter().zip(per_shard) {
            if items.is_empty() {
                continue;
            }
            let mut shard = lock(m);
            for (hash, key, state) in items {
                if let Some(series) = shard
                    .table
                    .find_mut(hash, |s| s.hash == hash && *s.key == *key)
                {
                    merge_state(&mut series.state, state);
                    continue;
                }
                if self.series.fetch_add(1, Ordering::Relaxed) >= max_series {
                    self.series.fetch_sub(1, Ordering::Relaxed);
                    refused += 1;
                    continue;
                }
                shard.table.insert_unique(
                    hash,
                    Series {
                        key: key::SeriesKey::from_boxed(key),
                        hash,
                        state,
                        lines: 0,
                    },
                    |s| s.hash,
                );
            }
        }
        if refused > 0 {
            self.stats
                .series_dropped_limit
                .fetch_add(refused, Ordering::Relaxed);
        }
        refused
    }

    /// Hands each shard the HDR arrays its last interval's series left (emptied by the flush),
    /// replacing those it was handed last time and did not use. So the spares never outnumber
    /// the HDR series of one interval. `spares[i]` belongs to shard `i`.
    ///
    /// Returns the replaced, unused arrays: a reader allocated them, so the caller frees them
    /// where the rest of the interval's memory is freed ([`crate::release`]).
    pub fn recycle(&self, spares: Vec<Vec<SpareHdr>>) -> Vec<Vec<SpareHdr>> {
        self.shards
            .iter()
            .zip(spares)
            .map(|(m, spare)| std::mem::replace(&mut lock(m).spare_hdr, spare))
            .collect()
    }

    /// Spare HDR arrays waiting in the shards.
    #[cfg(test)]
    pub(crate) fn spare_hdr_count(&self) -> usize {
        self.shards.iter().map(|m| lock(m).spare_hdr.len()).sum()
    }

    /// Takes the interval's state out of every shard; ingest continues into fresh tables.
    ///
    /// Each shard is locked once, for the time it takes to swap its table and remember its
    /// gauges' last values; rendering happens on the caller's side, outside every lock.
    ///
    /// A shard remembers at most its share of `max_series` gauges' last values: beyond it, a
    /// gauge not remembered yet is not (its next `+N` adds to 0) until older ones expire.
    pub fn swap(&self) -> Snapshot {
        let flush = self.flushes.fetch_add(1, Ordering::Relaxed) + 1;
        let memory = self.config.gauge_memory_flushes;
        let remember = self
            .limits
            .max_series
            .load(Ordering::Relaxed)
            .div_ceil(self.shards.len());
        let mut tables = Vec::with_capacity(self.shards.len());
        for m in self.shards.iter() {
            let mut shard = lock(m);
            let capacity = shard.table.len();
            let table = std::mem::replace(&mut shard.table, HashTable::with_capacity(capacity));
            shard.swaps += 1;
            for s in table.iter() {
                if let State::Gauge(v) = s.state {
                    if let Some(last) = shard.gauge_last.get_mut(&s.hash) {
                        *last = (v, flush);
                    } else if shard.gauge_last.len() < remember {
                        shard.gauge_last.insert(s.hash, (v, flush));
                    }
                }
            }
            if flush % 16 == 0 {
                shard
                    .gauge_last
                    .retain(|_, (_, seen)| flush.saturating_sub(*seen) <= memory);
            }
            drop(shard);
            self.series.fetch_sub(table.len(), Ordering::Relaxed);
            tables.push(table);
        }
        lock(&self.per_metric).clear();
        let p = std::mem::take(&mut *lock(&self.passthrough));
        Snapshot {
            tables,
            events: p.events,
            service_checks: p.service_checks,
        }
    }
}

/// The value one parsed sample contributes, decided on the reader thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum OpValue {
    /// Counter increment, already divided by the rate.
    Count(f64),
    /// Gauge set.
    GaugeSet(f64),
    /// Gauge delta (`+N`, or `-N` in etsy mode).
    GaugeAdd(f64),
    /// Set member hash.
    SetMember(u64),
    /// Histogram sample with weight 1 ÷ rate.
    Sample(f64, f64),
}

/// How many deferred samples ahead [`record_deferred`] prefetches a state.
const STATE_AHEAD: usize = 16;
/// How many deferred samples ahead [`record_deferred`] prefetches the slot a sample goes to (the
/// state's line has arrived by then).
const SLOT_AHEAD: usize = 8;

/// Records each `(state, value, weight)` of `deferred` in order, and empties it.
///
/// Measured against recording each sample where its series is found
/// (`python3 benches/ab.py OLD NEW --rounds 5 --secs 11 --nice -10`, plain): see BENCHMARKS.md.
///
/// # Safety
///
/// Every pointer must point to a live `HistogramState` that nothing else refers to during the
/// call (several entries may point to the same one).
unsafe fn record_deferred(
    deferred: &mut Vec<(*mut HistogramState, f64, f64)>,
    spares: &mut Vec<SpareHdr>,
) {
    for i in 0..deferred.len() {
        if let Some(&(state, ..)) = deferred.get(i + STATE_AHEAD) {
            prefetch(state.cast());
        }
        if let Some(&(state, ..)) = deferred.get(i + SLOT_AHEAD) {
            // SAFETY: live and unaliased (the caller's contract); this shared borrow ends
            // before the next exclusive one.
            unsafe { &*state }.prefetch_next_slot();
        }
        if let Some(&(state, value, weight)) = deferred.get(i) {
            // SAFETY: as above; the exclusive borrow ends with the statement.
            unsafe { &mut *state }.record_with(value, weight, spares);
        }
    }
    deferred.clear();
}

#[inline]
fn update(state: &mut State, value: OpValue, spares: &mut Vec<SpareHdr>) {
    match (state, value) {
        (State::Counter(c), OpValue::Count(v)) => *c += v,
        (State::Gauge(g), OpValue::GaugeSet(v)) => *g = v,
        (State::Gauge(g), OpValue::GaugeAdd(v)) => *g += v,
        (State::Set(s), OpValue::SetMember(h)) => s.insert_hash(h),
        (State::Histogram(h), OpValue::Sample(v, w)) => h.record_with(v, w, spares),
        // The type is part of the key, so a state and an op of different types never meet.
        _ => debug_assert!(false, "op type differs from series type"),
    }
}

fn merge_state(into: &mut State, from: State) {
    match (into, from) {
        (State::Counter(a), State::Counter(b)) => *a += b,
        (State::Gauge(a), State::Gauge(b)) => *a = b,
        (State::Set(a), State::Set(b)) => a.merge(&b),
        (State::Histogram(a), State::Histogram(b)) => a.merge(&b),
        // Keys carry the type, and imports build states from the key's type.
        _ => debug_assert!(false, "merged state type differs from series type"),
    }
}

fn new_state(value: OpValue, previous_gauge: f64) -> State {
    match value {
        OpValue::Count(v) => State::Counter(v),
        OpValue::GaugeSet(v) => State::Gauge(v),
        OpValue::GaugeAdd(v) => State::Gauge(previous_gauge + v),
        OpValue::SetMember(h) => {
            let mut s = SetSketch::new();
            s.insert_hash(h);
            State::Set(s)
        }
        OpValue::Sample(v, w) => State::Histogram(Box::new(HistogramState::new(v, w))),
    }
}

/// A `BuildHasher` for keys that are already hashes.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdentityHash;

impl std::hash::BuildHasher for IdentityHash {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

/// See [`IdentityHash`].
#[derive(Debug, Clone, Copy, Default)]
pub struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::key::{encode_key_parts, hash_key, KeyParts, Scope};
    use crate::protocol::{MetricType, ParseError};
    use std::sync::atomic::AtomicU64;

    const DOG: GaugeDeltas = GaugeDeltas::Dogstatsd;

    fn limits(max_series: usize, max_series_per_metric: usize, max_events: usize) -> Limits {
        let l = Limits::default();
        Limits {
            max_series,
            max_series_per_metric,
            max_events,
            ..l
        }
    }

    fn with(
        shards: usize,
        limits: Limits,
        gauge_deltas: GaugeDeltas,
        memory: u64,
    ) -> Arc<Aggregator> {
        let hostname = Arc::from("h");
        let c = AggregatorConfig {
            shards,
            limits,
            gauge_deltas,
            hostname,
            gauge_memory_flushes: memory,
        };
        Arc::new(Aggregator::new(c))
    }

    fn agg() -> Arc<Aggregator> {
        with(4, Limits::default(), DOG, 1)
    }

    /// Ingests `lines` through one ingestor as one batch (one commit).
    fn feed<S: AsRef<str>>(agg: &Arc<Aggregator>, lines: impl IntoIterator<Item = S>) {
        let mut ing = Ingestor::new(agg.clone());
        for l in lines {
            ing.ingest_line(l.as_ref().as_bytes());
        }
        ing.commit();
    }

    /// `name|kind|tag,tag` of an encoded key.
    fn describe(key: &[u8]) -> String {
        let p = KeyParts::decode(key).expect("an encoded key");
        format!(
            "{}|{:?}|{}",
            p.name,
            p.kind,
            p.tags().collect::<Vec<_>>().join(",")
        )
    }

    /// Swaps, and returns every series as (description, state), sorted.
    fn drain(agg: &Aggregator) -> Vec<(String, State)> {
        let tables = agg.swap().tables.into_iter().flatten();
        let mut all: Vec<(String, State)> = tables.map(|s| (describe(&s.key), s.state)).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Swaps, and renders every series (counters and gauges only) as `desc=value`, sorted.
    fn numbers(agg: &Aggregator) -> String {
        let num = |(k, s): (String, State)| match s {
            State::Counter(v) | State::Gauge(v) => format!("{k}={v}"),
            other => panic!("{k} is not a number: {other:?}"),
        };
        drain(agg)
            .into_iter()
            .map(num)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Swaps, and returns the one histogram series.
    fn only_histogram(agg: &Aggregator) -> HistogramState {
        match &mut drain(agg)[..] {
            [(_, State::Histogram(h))] => (**h).clone(),
            other => panic!("not one histogram: {other:?}"),
        }
    }

    fn key(kind: MetricType, name: &str) -> Box<[u8]> {
        let mut out = Vec::new();
        encode_key_parts(&mut out, kind, Scope::Default, None, name, None, &[]);
        out.into()
    }

    fn stat(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    #[test]
    fn counters_sum_value_over_rate_across_lines_and_batches() {
        let a = agg();
        feed(&a, ["c:1|c", "c:2|c|@0.5"]);
        feed(&a, ["c:3|c|@0.25", "c:1:1|c"]);
        assert_eq!(numbers(&a), "c|Counter|=19");
    }

    #[test]
    fn gauges_keep_the_last_value() {
        let a = agg();
        feed(&a, ["g:1|g", "g:5|g"]);
        feed(&a, ["g:3|g"]);
        assert_eq!(numbers(&a), "g|Gauge|=3");
    }

    #[test]
    fn dogstatsd_gauge_plus_adds_and_minus_sets() {
        let a = agg();
        feed(&a, ["p:10|g", "p:+5|g", "m:10|g", "m:-3|g", "fresh:+2|g"]);
        assert_eq!(numbers(&a), "fresh|Gauge|=2 m|Gauge|=-3 p|Gauge|=15");
    }

    #[test]
    fn etsy_gauge_minus_subtracts() {
        let a = with(4, Limits::default(), GaugeDeltas::Etsy, 1);
        feed(&a, ["g:10|g", "g:-3|g", "g:+1|g", "neg:-4|g"]);
        assert_eq!(numbers(&a), "g|Gauge|=8 neg|Gauge|=-4");
    }

    #[test]
    fn gauge_delta_adds_to_the_last_interval_value() {
        let a = agg();
        feed(&a, ["g:10|g"]);
        a.swap();
        feed(&a, ["g:+5|g"]);
        assert_eq!(numbers(&a), "g|Gauge|=15");
    }

    /// Last values older than `gauge_memory_flushes` are pruned every 16th flush.
    #[test]
    fn gauge_last_value_forgotten_after_gauge_memory_flushes() {
        for (memory, want) in [(1, "g|Gauge|=5"), (20, "g|Gauge|=15")] {
            let a = with(4, Limits::default(), DOG, memory);
            feed(&a, ["g:10|g"]);
            for _ in 0..16 {
                a.swap();
            }
            feed(&a, ["g:+5|g"]);
            assert_eq!(numbers(&a), want, "memory {memory}");
        }
    }

    /// The gauge memory under the soak's churn (`benches/soak.sh`: 20,000 new series every 30 s,
    /// a fifth of them gauges, 2 s flushes; 4 shards as under `taskset` on one CPU), minute by
    /// minute for 80 minutes: it grows for an hour, then levels off. Prints the curve
    /// (`cargo test --release --lib gauge_memory_at_soak_churn -- --ignored --nocapture`).
    #[test]
    #[ignore = "prints a curve; run by hand"]
    fn gauge_memory_at_soak_churn() {
        let a = with(4, Limits::default(), DOG, 3600 / 2);
        let mut ing = Ingestor::new(a.clone());
        let mut peak = 0;
        for flush in 0..(80 * 30) {
            let segment = flush / 15;
            let first = flush % 15 == 0;
            // Every segment's 4,000 gauges are updated in each of its flushes.
            for g in 0..4000 {
                if first || g % 15 == flush % 15 {
                    ing.ingest_line(format!("soak{segment:04}.g.m{g}:1|g").as_bytes());
                }
            }
            ing.commit();
            a.swap();
            let (n, bytes) = a.gauge_memory();
            peak = peak.max(bytes);
            if flush % 30 == 29 {
                println!(
                    "minute {:2}: {n:7} gauges, {:6.2} MiB",
                    flush / 30 + 1,
                    bytes as f64 / 1048576.0
                );
            }
        }
        let (n, bytes) = a.gauge_memory();
        assert!(
            n <= 4000 * (120 + 2) && bytes == peak,
            "{n} gauges, {bytes} bytes, peak {peak}"
        );
    }

    /// At most `max_series` gauges are remembered (each shard its share): a gauge beyond it
    /// starts from 0 for `+N`, while those remembered keep their last value.
    #[test]
    fn remembered_gauges_are_capped_at_max_series() {
        let a = with(1, limits(3, 0, 10), DOG, 360);
        feed(&a, ["a:1|g", "b:2|g", "c:3|g"]);
        a.swap();
        feed(&a, ["d:4|g"]);
        a.swap();
        assert_eq!(a.remembered_gauges(), 3);
        feed(&a, ["a:+10|g", "d:+10|g"]);
        assert_eq!(numbers(&a), "a|Gauge|=11 d|Gauge|=10");
    }

    /// Churning gauges (new names every flush, the old ones never seen again) are remembered
    /// for `gauge_memory_flushes` flushes: the count levels off at that many flushes' worth (up
    /// to 15 more between prunings) instead of growing with every name ever seen.
    #[test]
    // 600 flushes of safe code: minutes under Miri for nothing the unsafe blocks do.
    #[cfg_attr(miri, ignore)]
    fn remembered_gauges_level_off_under_churn() {
        let (memory, per_flush) = (32_usize, 7);
        let a = with(4, Limits::default(), DOG, memory as u64);
        let mut counts = Vec::new();
        for flush in 0..600 {
            feed(&a, (0..per_flush).map(|i| format!("g{flush}_{i}:1|g")));
            a.swap();
            counts.push(a.remembered_gauges());
        }
        // Pruned at every 16th flush to the last `memory + 1` flushes' gauges, then growing by
        // one flush's worth per flush until the next pruning.
        let (floor, cap) = (per_flush * (memory + 1), per_flush * (memory + 16));
        let tail = counts.get(64..).unwrap_or_default();
        assert_eq!(tail.iter().min(), Some(&floor), "{counts:?}");
        assert_eq!(counts.iter().max(), Some(&cap), "{counts:?}");
        // The tables are sized by that peak (each a power of two of buckets, an entry and a
        // control byte each), not by the 4,200 gauges seen in all.
        let (_, bytes) = a.gauge_memory();
        let entry = std::mem::size_of::<(u64, (f64, u64))>() + 1;
        assert!(bytes >= cap * entry && bytes <= 4 * cap * entry, "{bytes}");
    }

    #[test]
    fn sets_count_distinct_members() {
        let a = agg();
        feed(&a, ["s:a|s", "s:b|s", "s:a|s"]);
        feed(&a, ["s:c|s", "s:b|s"]);
        match &drain(&a)[..] {
            [(_, State::Set(s))] => assert_eq!(s.estimate(), 3),
            other => panic!("not one set: {other:?}"),
        }
    }

    #[test]
    fn histogram_samples_count_with_their_weight() {
        let a = agg();
        feed(&a, ["t:10|ms", "t:20|ms|@0.5", "t:1:4|ms|@0.25"]);
        let h = only_histogram(&a);
        assert_eq!(
            [h.count, h.sum, h.min, h.max],
            [11.0, 10.0 + 40.0 + 4.0 + 16.0, 1.0, 20.0]
        );
    }

    #[test]
    fn same_name_type_and_tags_in_any_order_is_one_series() {
        let a = agg();
        feed(&a, ["c:1|c|#a:1,b:2", "c:2|c|#b:2,a:1"]);
        feed(&a, ["c:4|c|#b:2,a:1,a:1"]);
        assert_eq!(a.series_count(), 1);
        assert_eq!(numbers(&a), "c|Counter|a:1,b:2=7");
    }

    #[test]
    fn different_type_or_tags_are_different_series() {
        let a = agg();
        feed(&a, ["m:1|c", "m:2|g", "m:3|c|#x", "m:4|c|#y", "m:5|c|#x,y"]);
        assert_eq!(a.series_count(), 5);
        let want = "m|Counter|=1 m|Counter|x=3 m|Counter|x,y=5 m|Counter|y=4 m|Gauge|=2";
        assert_eq!(numbers(&a), want);
    }

    #[test]
    fn table_entries_are_one_cache_line_each() {
        // Key, hash, state, line count: one cache line per table entry, aligned to it.
        assert_eq!(std::mem::size_of::<Series>(), 64);
        let mut table = HashTable::with_capacity(1000);
        for hash in 0..1000 {
            let (key, state) = (key::SeriesKey::new(b"k"), State::Counter(0.0));
            let series = Series {
                key,
                hash,
                state,
                lines: 0,
            };
            table.insert_unique(hash, series, |s| s.hash);
        }
        assert!(table.iter().all(|s| std::ptr::from_ref(s).addr() % 64 == 0));
    }

    #[test]
    fn swap_returns_every_series_once_and_empties_the_tables() {
        let a = with(8, Limits::default(), DOG, 1);
        feed(&a, (0..100).map(|i| format!("c{i}:1|c")));
        assert_eq!(a.series_count(), 100);
        let snap = a.swap();
        assert_eq!((snap.tables.len(), snap.series()), (8, 100));
        let mut names: Vec<String> = snap
            .tables
            .iter()
            .flatten()
            .map(|s| describe(&s.key))
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 100);
        assert_eq!(a.series_count(), 0);
        assert_eq!(a.swap().series(), 0);
    }

    #[test]
    fn swap_returns_and_clears_events_and_service_checks() {
        let a = agg();
        feed(&a, ["_e{5,4}:title|text|d:7", "_sc|db.up|2|d:7|m:down"]);
        let snap = a.swap();
        let titles: Vec<(&str, i64)> = snap
            .events
            .iter()
            .map(|e| (&*e.title, e.timestamp))
            .collect();
        assert_eq!(titles, [("title", 7)]);
        let checks: Vec<_> = snap
            .service_checks
            .iter()
            .map(|c| (&*c.name, c.status, &*c.message))
            .collect();
        assert_eq!(checks, [("db.up", 2, "down")]);
        let next = a.swap();
        assert_eq!((next.events.len(), next.service_checks.len()), (0, 0));
    }

    // One shard: a batch is applied shard by shard, so with one its lines are admitted in order.
    #[test]
    fn max_series_refuses_new_series_and_existing_ones_keep_aggregating() {
        let a = with(1, limits(2, 0, 10), DOG, 1);
        feed(&a, ["a:1|c", "b:1|c", "c:1|c"]);
        feed(&a, ["a:1|c", "c:1|c", "d:1|g", "b:2|c"]);
        assert_eq!(a.series_count(), 2);
        assert_eq!(stat(&a.stats().series_dropped_limit), 3);
        assert_eq!(numbers(&a), "a|Counter|=2 b|Counter|=3");
    }

    #[test]
    fn max_series_next_interval_starts_empty_and_admits_again() {
        let a = with(1, limits(2, 0, 10), DOG, 1);
        feed(&a, ["a:1|c", "b:1|c"]);
        a.swap();
        feed(&a, ["c:1|c", "d:1|c", "e:1|c"]);
        assert_eq!(stat(&a.stats().series_dropped_limit), 1);
        assert_eq!(numbers(&a), "c|Counter|=1 d|Counter|=1");
    }

    #[test]
    fn max_series_per_metric_refuses_per_name_only() {
        let a = with(1, limits(100, 2, 10), DOG, 1);
        feed(&a, ["m:1|c|#i:1", "m:1|c|#i:2", "m:1|c|#i:3", "m:1|c|#i:1"]);
        feed(&a, ["o:1|c|#i:1", "o:1|c|#i:2", "m:1|c|#i:4"]);
        assert_eq!(stat(&a.stats().series_dropped_metric_limit), 2);
        assert_eq!(stat(&a.stats().series_dropped_limit), 0);
        let want = "m|Counter|i:1=2 m|Counter|i:2=1 o|Counter|i:1=1 o|Counter|i:2=1";
        assert_eq!(numbers(&a), want);
        feed(&a, ["m:1|c|#i:3"]); // a new interval: counted afresh
        assert_eq!(numbers(&a), "m|Counter|i:3=1");
    }

    /// The aggregator's limits apply to the next batch applied; an ingestor's line limits
    /// (name length) from its next commit on.
    #[test]
    fn set_limits_apply_from_the_next_batch() {
        let a = with(1, Limits::default(), DOG, 1);
        let mut ing = Ingestor::new(a.clone());
        ing.ingest_line(b"longname:1|c");
        ing.ingest_line(b"b:1|c");
        a.set_limits(&Limits {
            max_name_length: 4,
            ..limits(1, 0, 10)
        });
        assert_eq!(a.limits().max_series, 1);
        ing.ingest_line(b"longname:1|c"); // parsed under the old name limit
        ing.commit(); // applied under the new max_series: `b` refused
        ing.ingest_line(b"longname:1|c");
        ing.commit();
        assert_eq!(
            stat(&a.stats().lines_invalid[ParseError::BadName.index()]),
            1
        );
        assert_eq!(stat(&a.stats().series_dropped_limit), 1);
        assert_eq!(numbers(&a), "longname|Counter|=2");
    }

    #[test]
    fn max_events_drops_events_and_service_checks_beyond_it() {
        let a = with(4, limits(100, 0, 2), DOG, 1);
        let e = "_e{1,1}:a|b|d:1";
        feed(&a, [e, "_sc|x|0|d:1", e, "_sc|y|0|d:1"]);
        assert_eq!(stat(&a.stats().events_dropped), 2);
        let snap = a.swap();
        assert_eq!((snap.events.len(), snap.service_checks.len()), (1, 1));
        feed(&a, [e, e]);
        assert_eq!(a.swap().events.len(), 2);
    }

    /// The hook is called before the `max_events` check: it sees checks the queue refuses.
    #[test]
    fn service_check_hook_sees_every_check_even_beyond_max_events() {
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let config = with(1, limits(100, 0, 1), DOG, 1).config().clone();
        let a = Arc::new(
            Aggregator::new(config).with_service_check_hook(Box::new(move |sc| {
                assert_eq!(sc.name, "x");
                counter.fetch_add(1, Ordering::Relaxed);
            })),
        );
        feed(&a, ["_sc|x|0|d:1", "_sc|x|1|d:1", "_sc|x|2|d:1"]);
        assert_eq!(seen.load(Ordering::Relaxed), 3);
        assert_eq!(stat(&a.stats().events_dropped), 2);
        assert_eq!(a.swap().service_checks.len(), 1);
    }

    #[test]
    fn merge_series_merges_into_existing_series() {
        let a = agg();
        feed(&a, ["c:1|c", "g:1|g", "s:a|s", "t:1|ms"]);
        let mut set = set::SetSketch::new();
        set.insert_hash(set::hash_member(b"a"));
        set.insert_hash(set::hash_member(b"b"));
        let h = State::Histogram(Box::new(HistogramState::new(3.0, 2.0)));
        let items = vec![
            (key(MetricType::Counter, "c"), State::Counter(2.5)),
            (key(MetricType::Gauge, "g"), State::Gauge(7.0)),
            (key(MetricType::Set, "s"), State::Set(set)),
            (key(MetricType::Timer, "t"), h),
        ];
        assert_eq!(a.merge_series(items), 0);
        assert_eq!(a.series_count(), 4);
        match &drain(&a)[..] {
            [(c, State::Counter(cv)), (g, State::Gauge(gv)), (s, State::Set(sv)), (t, State::Histogram(h))] =>
            {
                assert_eq!(
                    [&**c, g, s, t],
                    ["c|Counter|", "g|Gauge|", "s|Set|", "t|Timer|"]
                );
                assert_eq!((*cv, *gv, sv.estimate()), (3.5, 7.0, 2));
                assert_eq!([h.count, h.sum, h.min, h.max], [3.0, 7.0, 1.0, 3.0]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn merge_series_new_series_count_against_max_series() {
        let a = with(4, limits(2, 0, 10), DOG, 1);
        feed(&a, ["a:1|c"]);
        let items =
            ["a", "b", "c", "d"].map(|k| (key(MetricType::Counter, k), State::Counter(1.0)));
        assert_eq!(a.merge_series(items.into()), 2);
        assert_eq!(stat(&a.stats().series_dropped_limit), 2);
        assert_eq!(a.series_count(), 2);
        let got = numbers(&a);
        assert!(
            got.starts_with("a|Counter|=2 ") && got.matches('=').count() == 2,
            "{got}"
        );
    }

    #[test]
    fn every_series_lands_in_the_shard_of_its_hash() {
        let a = with(8, Limits::default(), DOG, 1);
        feed(&a, (0..200).map(|i| format!("m{i}:1|c|#t:{i}")));
        let snap = a.swap();
        assert_eq!((snap.tables.len(), snap.series()), (a.shard_count(), 200));
        for (i, table) in snap.tables.iter().enumerate() {
            assert!(!table.is_empty(), "shard {i} got none of 200 series");
            for s in table {
                assert_eq!(s.hash, hash_key(&s.key));
                assert_eq!(a.shard_of(s.hash), i, "{}", describe(&s.key));
            }
        }
    }

    /// Many samples of one histogram in one commit: all but the first are deferred
    /// (`record_deferred`), crossing the raw limit on the way.
    #[test]
    fn many_samples_of_one_histogram_in_one_commit_are_exact() {
        let a = agg();
        let lines = (1..=1100).map(|i| format!("t:{i}|ms"));
        feed(&a, lines.chain(["t:0.5:5000|ms|@0.5".to_owned()]));
        let h = only_histogram(&a);
        assert_eq!(
            [h.count, h.sum],
            [1104.0, 1100.0 * 1101.0 / 2.0 + 2.0 * 5000.5]
        );
        assert_eq!([h.min, h.max], [0.5, 5000.0]);
    }

    /// HDR arrays handed back by `recycle` are taken by a series outgrowing its raw samples.
    #[test]
    fn recycled_hdr_arrays_are_taken_by_a_series_outgrowing_raw() {
        let a = with(1, Limits::default(), DOG, 1);
        let mut big = HistogramState::new(0.0, 1.0);
        for i in 1..=histogram::RAW_LIMIT {
            big.record(i as f64, 1.0);
        }
        a.recycle(vec![vec![big.into_spare().expect("an HDR state")]]);
        assert_eq!(a.spare_hdr_count(), 1);
        feed(&a, (0..=histogram::RAW_LIMIT).map(|i| format!("t:{i}|ms")));
        assert_eq!(a.spare_hdr_count(), 0);
        assert_eq!(only_histogram(&a).count, (histogram::RAW_LIMIT + 1) as f64);
    }
}
