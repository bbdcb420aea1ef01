//! The reader side of aggregation: parse lines, encode and hash keys, batch per shard, and apply
//! each shard's batch under one lock.
//!
//! One [`Ingestor`] lives on each UDP/Unix reader thread and each TCP connection. Its buffers are
//! cleared, never re-created, so a steady stream of lines for known series allocates nothing.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use smallvec::SmallVec;

use super::{Aggregator, GaugeDeltas, Limits, OpValue};
use crate::aggregate::key::{encode_key, encode_key_mapped, hash_key};
use crate::aggregate::set::hash_member;
use crate::mapping::{Cached, MappingCache, Rules};
use crate::point::{unix_secs, Event, ServiceCheck};
use crate::protocol::{
    parse_line_into, unescape_newlines, EventLine, MetricLine, MetricType, ParseError, ParsedLine,
    ServiceCheckLine, Value,
};

/// Lines buffered before an automatic commit, bounding an ingestor's memory (with the line
/// length limit, which bounds each key).
const MAX_PENDING_OPS: usize = 4096;

/// Bytes of encoded keys buffered before an automatic commit: keeps every offset into the
/// buffer within `u32` ([`KeySpan`]; one key is at most a few times the longest line).
const MAX_KEY_BYTES: usize = 64 << 20;

/// Where an op's encoded key lies in the ingestor's `keys`, as 32-bit offsets: an [`Op`] is
/// then 40 bytes instead of 48, and a batch of them touches a sixth fewer cache lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeySpan {
    start: u32,
    end: u32,
}

impl KeySpan {
    /// A span no key has (its end is before its start).
    pub const NONE: KeySpan = KeySpan {
        start: u32::MAX,
        end: 0,
    };

    /// The span of `r` (offsets beyond `u32`, which [`MAX_KEY_BYTES`] rules out, give a span
    /// that [`KeySpan::of`] finds nothing at).
    fn new(r: Range<usize>) -> KeySpan {
        let at = |i| u32::try_from(i).unwrap_or(u32::MAX);
        KeySpan {
            start: at(r.start),
            end: at(r.end).max(at(r.start)),
        }
    }

    /// The key's length in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start) as usize
    }

    /// The key in `keys`.
    #[inline(always)]
    pub fn of<'k>(&self, keys: &'k [u8]) -> Option<&'k [u8]> {
        keys.get(self.start as usize..self.end as usize)
    }
}

/// One sample routed to a shard.
#[derive(Debug, Clone)]
pub(crate) struct Op {
    /// Where the encoded key is in the ingestor's `keys`.
    pub key: KeySpan,
    /// Hash of that key.
    pub hash: u64,
    /// What the sample contributes.
    pub value: OpValue,
}

/// The mapping rules in force and a generation that changes with them, so a reader checks one
/// atomic per commit and locks only when they changed.
#[derive(Debug, Default)]
pub(crate) struct MappingSlot {
    generation: AtomicU64,
    rules: Mutex<Option<Arc<Rules>>>,
}

impl MappingSlot {
    pub(crate) fn set(&self, rules: Option<Arc<Rules>>) {
        let mut slot = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        *slot = rules;
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A fresh cache over the current rules, and the generation it belongs to.
    fn cache(&self) -> (Option<Box<MappingCache>>, u64) {
        let slot = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        let cache = slot.clone().map(|r| Box::new(MappingCache::new(r)));
        (cache, self.generation())
    }
}

/// Per-reader parse-and-batch state. Call [`Ingestor::commit`] after each receive batch.
pub struct Ingestor {
    aggregator: Arc<Aggregator>,
    /// The encoded keys of every pending op, of all shards: each key is encoded here in place
    /// and hashed where it lies, never copied.
    keys: Vec<u8>,
    /// Pending ops per shard.
    batches: Vec<Vec<Op>>,
    /// The last line's op, its key encoded but not yet hashed ([`Ingestor::stage`]).
    staged: Option<(KeySpan, OpValue)>,
    pending: usize,
    packets: u64,
    lines: u64,
    invalid: [u64; ParseError::ALL.len()],
    etsy: bool,
    /// The aggregator's limits, refreshed at each commit (a reload applies from the next batch).
    limits: Limits,
    /// The mapping rules' cache; `None` when there are no rules (one branch per line).
    mapping: Option<Box<MappingCache>>,
    /// The rules' generation `mapping` was made for.
    mapping_generation: u64,
    /// Lines dropped by a mapping rule since the last commit.
    dropped_mapping: u64,
}

impl Ingestor {
    /// A new ingestor feeding `aggregator`.
    pub fn new(aggregator: Arc<Aggregator>) -> Ingestor {
        let shards = aggregator.shard_count();
        let etsy = aggregator.config().gauge_deltas == GaugeDeltas::Etsy;
        let (mapping, mapping_generation) = aggregator.mapping.cache();
        Ingestor {
            mapping,
            mapping_generation,
            dropped_mapping: 0,
            limits: aggregator.limits(),
            aggregator,
            keys: Vec::with_capacity(64 * 1024),
            batches: (0..shards).map(|_| Vec::new()).collect(),
            staged: None,
            pending: 0,
            packets: 0,
            lines: 0,
            invalid: [0; ParseError::ALL.len()],
            etsy,
        }
    }

    /// Counts one datagram (or TCP read) received; its lines come through
    /// [`Ingestor::ingest_line_into`].
    #[inline(always)]
    pub fn count_packet(&mut self) {
        self.packets += 1;
    }

    /// Ingests one line (without `\n`); blank lines are skipped, not counted.
    pub fn ingest_line(&mut self, line: &[u8]) {
        self.ingest_line_into(line, &mut MetricLine::new());
    }

    /// [`Ingestor::ingest_line`], parsing a metric into `metric`: a caller with many lines
    /// passes the same one for each, so it is filled in place, never moved or re-created.
    ///
    /// `metric.origin`, the sender's container id when origin detection knows it, becomes the
    /// container id of a metric without its own `|c:ID`, and the tag `container_id:ID` of an
    /// event or service check without a `container_id:` tag. It travels in `metric` rather than
    /// as an argument: an argument, or a second copy of this function, cost every line more
    /// than the branch on it (`benches/instructions.sh`).
    pub fn ingest_line_into<'a>(&mut self, line: &'a [u8], metric: &mut MetricLine<'a>) {
        // The parser strips a trailing `\r` itself.
        if line.is_empty() || line == b"\r" {
            return;
        }
        self.lines += 1;
        match parse_line_into(line, metric) {
            Ok(ParsedLine::Metric) => {
                if let Some(origin) = metric.origin {
                    if metric.container_id.is_none() {
                        metric.container_id = Some(origin);
                    }
                }
                match self.check_limits(metric) {
                    Ok(()) if self.mapping.is_none() => self.push_metric(metric),
                    Ok(()) => self.push_mapped(metric),
                    Err(e) => self.count_invalid(e),
                }
            }
            Ok(ParsedLine::Event(e)) => {
                let mut event = to_event(&e, &self.aggregator.config().hostname);
                add_origin_tag(&mut event.tags, metric.origin);
                self.aggregator.push_event(event);
            }
            Ok(ParsedLine::ServiceCheck(sc)) => {
                let mut check = to_service_check(&sc, &self.aggregator.config().hostname);
                add_origin_tag(&mut check.tags, metric.origin);
                self.aggregator.push_service_check(check);
            }
            Err(e) => self.count_invalid(e),
        }
        if self.pending >= MAX_PENDING_OPS || self.keys.len() >= MAX_KEY_BYTES {
            self.commit();
        }
    }

    /// Adds origin detection's per-batch lookup counts (answered from the reader's cache, or
    /// by reading `/proc`) to the self-metrics.
    pub fn count_origin_lookups(&mut self, hits: u64, misses: u64) {
        let t = self.aggregator.stats();
        if hits > 0 {
            t.origin_hits.fetch_add(hits, Ordering::Relaxed);
        }
        if misses > 0 {
            t.origin_misses.fetch_add(misses, Ordering::Relaxed);
        }
    }

    /// Counts a line refused before parsing (too long, truncated) or by the parser.
    pub fn count_invalid(&mut self, e: ParseError) {
        if let Some(n) = self.invalid.get_mut(e.index()) {
            *n += 1;
        }
    }

    /// Counts a line that was refused before it could be handed to [`Ingestor::ingest_line`].
    pub fn count_refused_line(&mut self, e: ParseError) {
        self.lines += 1;
        self.count_invalid(e);
    }

    /// Name and tag limits: a line over them is refused whole (`bad_name` / `bad_tags`).
    fn check_limits(&self, m: &MetricLine<'_>) -> Result<(), ParseError> {
        let l = &self.limits;
        if m.name.len() > l.max_name_length {
            return Err(ParseError::BadName);
        }
        let tags = m.tags.len() + usize::from(m.container_id.is_some());
        if tags > l.max_tags_per_line || m.tags.iter().any(|t| t.len() > l.max_tag_length) {
            return Err(ParseError::BadTags);
        }
        Ok(())
    }

    fn push_metric(&mut self, m: &MetricLine<'_>) {
        let start = self.keys.len();
        encode_key(&mut self.keys, m);
        self.push_encoded(start, m);
    }

    /// [`Ingestor::push_metric`] through the mapping rules: the line's key is encoded under its
    /// mapped name and tags (borrowed from the cache), or the line is dropped and counted.
    #[inline(never)]
    #[cold]
    fn push_mapped(&mut self, m: &MetricLine<'_>) {
        // Neither `encode_key`, `hash_key` nor `push_metric` is called from here, and this
        // function is marked cold: the reader's plain path (no rules) then inlines as it did
        // before mapping existed (`benches/instructions.sh` counts it).
        let start = self.keys.len();
        let Some(cache) = self.mapping.as_deref_mut() else {
            encode_key_mapped(&mut self.keys, m, m.name, &[]);
            return self.push_encoded(start, m);
        };
        match cache.resolve(m.name, m.kind) {
            Cached::Unchanged => encode_key_mapped(&mut self.keys, m, m.name, &[]),
            Cached::Dropped => {
                self.dropped_mapping += 1;
                return;
            }
            Cached::Mapped(mapped) => {
                let mut extra: SmallVec<[&[u8]; 8]> = SmallVec::new();
                mapped.added_tags(&m.tags, &mut extra);
                encode_key_mapped(&mut self.keys, m, mapped.name(), &extra);
            }
        }
        self.push_encoded(start, m);
    }

    /// Routes the ops of `m`, whose key was just encoded at `start..` in `keys`.
    #[inline(always)]
    fn push_encoded(&mut self, start: usize, m: &MetricLine<'_>) {
        let key = KeySpan::new(start..self.keys.len());
        let weight = m.weight;
        let etsy = self.etsy;
        let op = |v: &Value| match m.kind {
            MetricType::Counter => OpValue::Count(v.value * weight),
            MetricType::Gauge if v.signed && (etsy || !v.value.is_sign_negative()) => {
                OpValue::GaugeAdd(v.value)
            }
            MetricType::Gauge => OpValue::GaugeSet(v.value),
            // A set line has no values (its one op is its member, below): never reached.
            MetricType::Set
            | MetricType::Timer
            | MetricType::Histogram
            | MetricType::Distribution => OpValue::Sample(v.value, weight),
        };
        match (m.kind, m.values.as_slice()) {
            (MetricType::Set, _) => self.stage(key, OpValue::SetMember(hash_member(m.set_member))),
            (_, [v]) => self.stage(key, op(v)),
            (_, values) => {
                self.route_staged();
                let hash = hash_key(key.of(&self.keys).unwrap_or_default());
                let batch = self.batch(hash);
                for v in values {
                    batch.push(Op {
                        key,
                        hash,
                        value: op(v),
                    });
                }
            }
        }
        self.pending += m.values.len().max(1);
    }

    /// Holds `value` until the next line's key is encoded (or the commit), and routes the op
    /// held before it.
    ///
    /// Hashing a key right after encoding it read bytes still in the store buffer, written by
    /// several smaller stores: the load cannot be forwarded from them and waits until they
    /// reach the cache (the hash's first load stood out in the reader's profile;
    /// `benches/loop_ab.sh`). One line later they have.
    #[inline(always)]
    fn stage(&mut self, key: KeySpan, value: OpValue) {
        if let Some((key, value)) = self.staged.replace((key, value)) {
            self.route(key, value);
        }
    }

    /// Routes the held op, if any.
    fn route_staged(&mut self) {
        if let Some((key, value)) = self.staged.take() {
            self.route(key, value);
        }
    }

    /// Hashes the key at `key` in `keys` and appends the op to its shard's batch.
    #[inline(always)]
    fn route(&mut self, key: KeySpan, value: OpValue) {
        let hash = hash_key(key.of(&self.keys).unwrap_or_default());
        self.batch(hash).push(Op { key, hash, value });
    }

    /// The batch of the shard of `hash`.
    #[inline(always)]
    fn batch(&mut self, hash: u64) -> &mut Vec<Op> {
        let shard = self.aggregator.shard_of(hash);
        let last = self.batches.len() - 1;
        // `shard_of` masks the hash to the shard count: the index is always in range.
        &mut self.batches[shard.min(last)]
    }

    /// Applies every pending shard batch (one lock per non-empty shard) and publishes counters.
    pub fn commit(&mut self) {
        self.route_staged();
        let mut refused = 0;
        let mut refused_per_metric = 0;
        for (i, ops) in self.batches.iter_mut().enumerate() {
            if ops.is_empty() {
                continue;
            }
            let (r, m) = self.aggregator.apply(i, &self.keys, ops);
            refused += r;
            refused_per_metric += m;
            ops.clear();
        }
        self.keys.clear();
        self.pending = 0;
        let t = self.aggregator.stats();
        if refused > 0 {
            t.series_dropped_limit.fetch_add(refused, Ordering::Relaxed);
        }
        if refused_per_metric > 0 {
            t.series_dropped_metric_limit
                .fetch_add(refused_per_metric, Ordering::Relaxed);
        }
        self.limits = self.aggregator.limits();
        if self.packets > 0 {
            t.packets_received
                .fetch_add(std::mem::take(&mut self.packets), Ordering::Relaxed);
        }
        if self.lines > 0 {
            t.lines_received
                .fetch_add(std::mem::take(&mut self.lines), Ordering::Relaxed);
        }
        for (counter, n) in t.lines_invalid.iter().zip(self.invalid.iter_mut()) {
            if *n > 0 {
                counter.fetch_add(std::mem::take(n), Ordering::Relaxed);
            }
        }
        self.commit_mapping();
    }
}

impl Ingestor {
    /// Publishes the mapping counts, and takes new rules (with an empty cache) if they changed.
    fn commit_mapping(&mut self) {
        let t = self.aggregator.stats();
        if self.dropped_mapping > 0 {
            t.lines_dropped_mapping
                .fetch_add(std::mem::take(&mut self.dropped_mapping), Ordering::Relaxed);
        }
        if let Some(cache) = self.mapping.as_deref_mut() {
            let c = cache.take_counts();
            for (counter, n) in [
                (&t.mapping_cache_hits, c.hits),
                (&t.mapping_cache_misses, c.misses),
                (&t.mapping_cache_evictions, c.evictions),
            ] {
                if n > 0 {
                    counter.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
        if self.aggregator.mapping.generation() != self.mapping_generation {
            (self.mapping, self.mapping_generation) = self.aggregator.mapping.cache();
        }
    }
}

impl Drop for Ingestor {
    fn drop(&mut self) {
        self.commit();
    }
}

/// An event's or service check's tags, sorted and de-duplicated, and its host: the last `host:X`
/// tag's value (removed from the tags, as DogStatsD does; `host:` alone means an empty host),
/// else its `h:` section, else the configured `hostname`.
fn tags_and_host(tags: &[&str], h: Option<&str>, hostname: &str) -> (Vec<String>, String) {
    let mut host = h.unwrap_or(hostname);
    let mut v = Vec::with_capacity(tags.len());
    for t in tags {
        match t.strip_prefix("host:") {
            Some(value) => host = value,
            None => v.push((*t).to_owned()),
        }
    }
    v.sort_unstable();
    v.dedup();
    (v, host.to_owned())
}

/// Adds `container_id:ORIGIN` to the sorted `tags` of an event or service check, unless it
/// already has a `container_id:` tag (its own wins, as a metric's `|c:` does).
fn add_origin_tag(tags: &mut Vec<String>, origin: Option<&[u8]>) {
    let Some(id) = origin.and_then(|o| std::str::from_utf8(o).ok()) else {
        return;
    };
    if tags.iter().any(|t| t.starts_with("container_id:")) {
        return;
    }
    let tag = format!("container_id:{id}");
    let at = tags.partition_point(|t| *t < tag);
    tags.insert(at, tag);
}

fn to_event(e: &EventLine<'_>, hostname: &str) -> Event {
    let (tags, host) = tags_and_host(&e.tags, e.host, hostname);
    Event {
        title: unescape_newlines(e.title),
        text: unescape_newlines(e.text),
        tags,
        host,
        timestamp: e.timestamp.unwrap_or_else(unix_secs),
        aggregation_key: e.aggregation_key.unwrap_or("").to_owned(),
        priority: e.priority.as_str(),
        source_type: e.source_type.unwrap_or("").to_owned(),
        alert_type: e.alert_type.as_str(),
    }
}

fn to_service_check(sc: &ServiceCheckLine<'_>, hostname: &str) -> ServiceCheck {
    let (tags, host) = tags_and_host(&sc.tags, sc.host, hostname);
    ServiceCheck {
        name: sc.name.to_owned(),
        status: sc.status,
        tags,
        host,
        timestamp: sc.timestamp.unwrap_or_else(unix_secs),
        message: sc
            .message
            .map(|m| unescape_newlines(m).replace("m\\:", "m:"))
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use crate::aggregate::key::KeyParts;
    use crate::aggregate::{Aggregator, AggregatorConfig, Ingestor, State};
    use std::sync::Arc;

    #[test]
    fn key_spans_find_their_key_or_nothing() {
        use super::KeySpan;
        let keys = b"abcdef";
        assert_eq!(KeySpan::new(1..4).of(keys), Some(&b"bcd"[..]));
        assert_eq!(KeySpan::new(6..6).of(keys), Some(&b""[..]));
        assert_eq!(KeySpan::new(4..9).of(keys), None);
        // Past u32 (never, with MAX_KEY_BYTES): nothing, not a wrapped offset.
        let far = usize::try_from(u64::from(u32::MAX) + 2).unwrap_or(usize::MAX);
        assert_eq!(KeySpan::new(far..far.saturating_add(3)).of(keys), None);
        assert_eq!(KeySpan::new(2..far).of(keys), None);
    }

    /// DogStatsD's rule for events and service checks: a `host:` tag sets the host over `h:`, the
    /// last one wins, an empty one means an empty host, and none is kept as a tag.
    #[test]
    fn host_tags_set_the_host_of_events_and_checks() {
        use super::tags_and_host;
        let own = |v: &[&str]| v.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            tags_and_host(&["b", "a", "b"], None, "me"),
            (own(&["a", "b"]), "me".to_owned())
        );
        assert_eq!(
            tags_and_host(&["env:prod"], Some("h1"), "me"),
            (own(&["env:prod"]), "h1".to_owned())
        );
        assert_eq!(
            tags_and_host(&["host:t1", "env:prod"], Some("h1"), "me"),
            (own(&["env:prod"]), "t1".to_owned())
        );
        assert_eq!(
            tags_and_host(&["host:t1", "x", "host:t2"], None, "me"),
            (own(&["x"]), "t2".to_owned())
        );
        assert_eq!(
            tags_and_host(&["host:", "x"], Some("h1"), "me"),
            (own(&["x"]), String::new())
        );
        // Only the `host:` prefix: `hostname:x` and `host` are ordinary tags.
        assert_eq!(
            tags_and_host(&["hostname:x", "host"], None, "me"),
            (own(&["host", "hostname:x"]), "me".to_owned())
        );
    }

    /// An empty aggregator of `shards` shards with the default limits.
    fn aggregator(shards: usize) -> Arc<Aggregator> {
        Arc::new(Aggregator::new(AggregatorConfig {
            shards,
            limits: super::Limits::default(),
            gauge_deltas: super::GaugeDeltas::Dogstatsd,
            hostname: Arc::from("h"),
            gauge_memory_flushes: 1,
        }))
    }

    /// Every line's op lands, in order, though each is routed only when the next line is
    /// encoded (or at the commit): single values, several values, sets, over several shards.
    #[test]
    fn staged_ops_land_in_order() {
        let aggregator = aggregator(4);
        let mut ingestor = Ingestor::new(aggregator.clone());
        crate::ingest::ingest_datagram(
            &mut ingestor,
            b"g:1|g\ng:+2|g\nc:1:2:3|c\nc:4|c\ns:a|s\ns:b|s\nt:1:2|ms\ng:5|g\ng:+1|g",
            false,
        );
        ingestor.commit();
        let mut got: Vec<(String, String)> = Vec::new();
        for table in aggregator.swap().tables {
            for s in table {
                let name = KeyParts::decode(&s.key).map(|p| p.name.to_owned());
                let state = match &s.state {
                    State::Counter(v) | State::Gauge(v) => v.to_string(),
                    State::Set(set) => format!("{} members", set.estimate()),
                    State::Histogram(h) => format!("{} samples", h.count),
                };
                got.push((name.unwrap_or_default(), state));
            }
        }
        got.sort();
        let want = [
            ("c", "10"),
            ("g", "6"),
            ("s", "2 members"),
            ("t", "2 samples"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        assert_eq!(got, want);
    }

    /// Origin detection's container id: a metric line's own `|c:` wins, others get it as the
    /// `container_id:` tag; events and service checks get the tag unless they carry one.
    #[test]
    fn an_origin_tags_what_has_no_container_id_of_its_own() {
        let aggregator = aggregator(2);
        let mut ingestor = Ingestor::new(aggregator.clone());
        crate::ingest::lines::ingest_datagram_from(
            &mut ingestor,
            b"a:1|c|#z:1\nb:1|c|c:own\n_e{1,1}:t|x|#b\n_sc|n|0|#container_id:mine",
            false,
            b"cid",
        );
        crate::ingest::ingest_datagram(&mut ingestor, b"u:1|c\n_e{1,1}:t|x", false);
        ingestor.commit();
        let snapshot = aggregator.swap();
        let mut got: Vec<String> = snapshot
            .tables
            .iter()
            .flatten()
            .filter_map(|s| KeyParts::decode(&s.key))
            .map(|p| format!("{} {}", p.name, p.tags().collect::<Vec<_>>().join(",")))
            .collect();
        got.sort();
        assert_eq!(got, ["a container_id:cid,z:1", "b container_id:own", "u "]);
        let events: Vec<_> = snapshot.events.iter().map(|e| e.tags.clone()).collect();
        assert_eq!(events, [vec!["b", "container_id:cid"], vec![]]);
        let checks: Vec<_> = snapshot
            .service_checks
            .iter()
            .map(|c| c.tags.clone())
            .collect();
        assert_eq!(checks, [vec!["container_id:mine"]]);
    }

    /// Histogram samples are recorded after their batch's lookups (`Aggregator::apply`), with
    /// states prefetched ahead: every series must end exactly as if each sample had been
    /// recorded where it arrived. Many series interleaved (more than the prefetch distances),
    /// one crossing the raw limit inside one batch, one with mixed sample rates.
    #[test]
    fn deferred_samples_land_as_if_recorded_in_order() {
        use crate::aggregate::histogram::HistogramState;
        use std::collections::HashMap;
        let aggregator = aggregator(2);
        let mut ingestor = Ingestor::new(aggregator.clone());
        let mut want: HashMap<String, HistogramState> = HashMap::new();
        let mut r = 99u64;
        let mut datagram = String::new();
        for i in 0..3000usize {
            r = r.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let value = ((r >> 40) % 1_000_000) as f64 / 7.0;
            let name = if i % 2 == 0 {
                "hot".to_owned() // 1,500 samples: past the raw limit within the batch
            } else {
                format!("t{}", i % 37)
            };
            let rate = if name == "t5" && i % 3 == 0 { 0.5 } else { 1.0 };
            datagram.push_str(&format!("{name}:{value}|ms"));
            if rate < 1.0 {
                datagram.push_str(&format!("|@{rate}"));
            }
            datagram.push('\n');
            let weight = 1.0 / rate;
            want.entry(name)
                .and_modify(|h| h.record(value, weight))
                .or_insert_with(|| HistogramState::new(value, weight));
            if i % 50 == 49 {
                crate::ingest::ingest_datagram(&mut ingestor, datagram.as_bytes(), false);
                datagram.clear();
            }
        }
        ingestor.commit();
        let mut seen = 0;
        for table in aggregator.swap().tables {
            for s in table {
                let name = KeyParts::decode(&s.key).map(|p| p.name.to_owned());
                let name = name.unwrap_or_default();
                let State::Histogram(mut got) = s.state else {
                    panic!("{name} is not a histogram");
                };
                let mut w = want
                    .remove(&name)
                    .unwrap_or_else(|| panic!("unexpected {name}"));
                let bits = |h: &HistogramState| {
                    [h.count, h.sum, h.min, h.max, h.recip_sum].map(f64::to_bits)
                };
                assert_eq!(bits(&got), bits(&w), "{name}");
                for q in [0.01, 0.5, 0.9, 0.99, 1.0] {
                    assert_eq!(
                        got.percentile(q).to_bits(),
                        w.percentile(q).to_bits(),
                        "{name} p{q}"
                    );
                }
                if name == "hot" {
                    assert!(got.count > crate::aggregate::histogram::RAW_LIMIT as f64);
                }
                seen += 1;
            }
        }
        assert_eq!(seen, 38);
        assert!(want.is_empty(), "{:?}", want.keys());
    }
}
