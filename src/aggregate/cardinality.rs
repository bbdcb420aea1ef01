//! What the current interval holds, by metric name and tag key (`GET /api/v1/cardinality`,
//! `meterd top`; `docs/api.md#cardinality`).
//!
//! Nothing is kept for it on the ingest path but a line count on each series (incremented where
//! the op is applied, under the shard lock the reader holds anyway). A query walks the shards one
//! at a time, taking each shard's lock for a few thousand series at a time and only to copy
//! their encoded keys and line counts into a buffer; decoding, counting names and distinct tag
//! values happen with no lock held. So a reader waits at most for one chunk's copy
//! (`benches/cardinality.rs` reports the longest), even when the query's thread (the API's, at a
//! lower priority than the readers') is preempted between chunks.
//!
//! The per-name counts of `max_series_per_metric` (admitted series, refused lines) live here too:
//! they are the only per-name state the aggregator keeps, and only while that limit is set.

use std::cmp::Ordering;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hashbrown::{HashMap, HashSet};

use super::key::KeyParts;
use super::{lock, prefetch, Aggregator, IdentityHash, Shard};

/// One metric name's share of the interval, as the limit of `max_series_per_metric` sees it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PerMetric {
    /// Series admitted this interval.
    series: usize,
    /// Lines refused because `series` had reached the limit.
    dropped: u64,
}

/// The interval's series by metric name and tag key: the answer of
/// [`Aggregator::cardinality`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Cardinality {
    /// Series held since the last flush, all names.
    pub total_series: usize,
    /// The names with the most series, most first (ties by name).
    pub metrics: Vec<MetricCardinality>,
    /// The tag keys with the most distinct values, most first (ties by key).
    pub tag_keys: Vec<TagKeyCardinality>,
    /// The longest a shard's lock was held by this query (for the benchmark; not serialised).
    #[serde(skip)]
    pub longest_lock: Duration,
}

/// One metric name in [`Cardinality`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MetricCardinality {
    /// The metric name (all types and scopes of it together).
    pub name: String,
    /// Series of that name.
    pub series: u64,
    /// Lines aggregated into them this interval.
    pub lines: u64,
    /// Whether the name reached `max_series_per_metric` this interval.
    pub limited: bool,
    /// Lines refused because it had (0 unless `limited`).
    pub dropped: u64,
}

/// One tag key in [`Cardinality`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TagKeyCardinality {
    /// The part of a tag before its first `:` (a tag without one is a key with the value "").
    pub key: String,
    /// Distinct values of that key among the interval's series.
    pub values: u64,
}

/// How many entries ahead of the one copied a query prefetches the key of.
const AHEAD: usize = 16;

/// Most series copied in one hold of a shard's lock.
const CHUNK: usize = 8192;

/// Walks of one shard started again (its table grew or was swapped) before the rest is copied
/// in one hold.
const MAX_RESTARTS: usize = 8;

/// One query at a time: concurrent callers wait for each other instead of scanning together.
static SCAN: Mutex<()> = Mutex::new(());

impl Aggregator {
    /// The interval's series counted by metric name and by tag key, the `limit` largest of each.
    ///
    /// Each shard's lock is taken for a few thousand series at a time, to copy their keys and
    /// line counts; the counting happens outside every lock. The host of a series (a `host:`
    /// tag) counts as tag key `host`; the scope tags (`veneurglobalonly`, ...) are not tags of
    /// the series and do not count.
    pub fn cardinality(&self, limit: usize) -> Cardinality {
        let _one = SCAN.lock().unwrap_or_else(PoisonError::into_inner);
        let mut names: HashMap<Box<str>, (u64, u64)> = HashMap::new();
        let mut tags: HashSet<Box<str>> = HashSet::new();
        let mut keys: Vec<u8> = Vec::new();
        let mut copied: Vec<Copied> = Vec::new();
        let mut host_tag = String::new();
        let mut total = 0;
        let mut longest_lock = Duration::ZERO;
        for m in self.shards.iter() {
            keys.clear();
            copied.clear();
            longest_lock = longest_lock.max(copy_shard(m, &mut keys, &mut copied));
            total += copied.len();
            for &Copied { key, lines, .. } in &copied {
                let key = keys.get(key.0..key.1).unwrap_or_default();
                let Some(parts) = KeyParts::decode(key) else {
                    continue;
                };
                match names.get_mut(parts.name) {
                    Some((series, l)) => {
                        *series += 1;
                        *l += lines;
                    }
                    None => {
                        names.insert(parts.name.into(), (1, lines));
                    }
                }
                for tag in parts.tags() {
                    if !tags.contains(tag) {
                        tags.insert(tag.into());
                    }
                }
                if let Some(host) = parts.host {
                    host_tag.clear();
                    host_tag.push_str("host:");
                    host_tag.push_str(host);
                    if !tags.contains(host_tag.as_str()) {
                        tags.insert(host_tag.as_str().into());
                    }
                }
            }
        }
        let limited = self.limited_names();
        let mut metrics: Vec<MetricCardinality> = names
            .into_iter()
            .map(|(name, (series, lines))| {
                let (limited, dropped) = limited.get(name.as_bytes()).copied().unwrap_or_default();
                MetricCardinality {
                    name: name.into(),
                    series,
                    lines,
                    limited,
                    dropped,
                }
            })
            .collect();
        top(&mut metrics, limit, |a, b| {
            b.series.cmp(&a.series).then_with(|| a.name.cmp(&b.name))
        });
        let mut per_key: HashMap<&str, u64> = HashMap::new();
        for tag in &tags {
            let key = tag.split_once(':').map_or(&**tag, |(k, _)| k);
            *per_key.entry(key).or_default() += 1;
        }
        let mut tag_keys: Vec<TagKeyCardinality> = per_key
            .into_iter()
            .map(|(key, values)| TagKeyCardinality {
                key: key.to_owned(),
                values,
            })
            .collect();
        top(&mut tag_keys, limit, |a, b| {
            b.values.cmp(&a.values).then_with(|| a.key.cmp(&b.key))
        });
        Cardinality {
            total_series: total,
            metrics,
            tag_keys,
            longest_lock,
        }
    }

    /// The names at `max_series_per_metric` this interval (at the limit in force, or refusing
    /// lines since an earlier one): whether limited, and the lines refused.
    fn limited_names(&self) -> HashMap<Box<[u8]>, (bool, u64)> {
        let limit = self.limits().max_series_per_metric;
        let map = lock(&self.per_metric);
        map.iter()
            .filter(|(_, p)| p.dropped > 0 || (limit > 0 && p.series >= limit))
            .map(|(name, p)| (name.clone(), (true, p.dropped)))
            .collect()
    }

    /// Admits one new series of the metric in `key` under `max_series_per_metric`; a refusal
    /// counts against the name when the op starts a line (`new_line`).
    pub(super) fn admit_per_metric(&self, key: &[u8], limit: usize, new_line: bool) -> bool {
        let Some(parts) = KeyParts::decode(key) else {
            return true;
        };
        let mut map = lock(&self.per_metric);
        if let Some(p) = map.get_mut(parts.name.as_bytes()) {
            if p.series >= limit {
                p.dropped += u64::from(new_line);
                return false;
            }
            p.series += 1;
            return true;
        }
        map.insert(
            parts.name.as_bytes().into(),
            PerMetric {
                series: 1,
                dropped: 0,
            },
        );
        true
    }
}

/// One series as a query copied it.
#[derive(Clone, Copy)]
struct Copied {
    /// Where its encoded key is in the query's buffer.
    key: (usize, usize),
    /// Its lines this interval.
    lines: u64,
    /// Its key's hash (its identity, for [`copy_shard`]'s de-duplication).
    hash: u64,
}

/// Copies the encoded key, line count and hash of every series in the shard's table into `keys`
/// and `copied`, taking the lock for at most [`CHUNK`] series at a time: a reader waits for one
/// chunk, never for the whole table. Returns the longest hold.
///
/// Between holds, the walk skips as many entries as it copied and goes on. Series are never
/// removed from a table in its shard, and inserts that do not grow the table move no entry; but
/// a series inserted before the place the walk had reached pushes the entries after it one
/// further, so the next chunk starts that much earlier and copies some series again. So when the
/// table gained series between holds, the copies are de-duplicated by hash at the end. A table
/// that grew (rehashed) or was swapped out for a fresh one is walked again from the start; after
/// [`MAX_RESTARTS`] restarts, the rest is copied in one hold.
fn copy_shard(m: &Mutex<Shard>, keys: &mut Vec<u8>, copied: &mut Vec<Copied>) -> Duration {
    let mut longest = Duration::ZERO;
    let mut walked: Option<(usize, u64, usize)> = None;
    let mut restarts = 0;
    let mut gained = false;
    loop {
        let locked = Instant::now();
        let shard = lock(m);
        let table = &shard.table;
        if let Some((capacity, swaps, len)) = walked {
            if (capacity, swaps) != (table.capacity(), shard.swaps) {
                keys.clear();
                copied.clear();
                restarts += 1;
                gained = false;
            } else {
                gained |= table.len() != len;
            }
        }
        let chunk = if restarts >= MAX_RESTARTS {
            usize::MAX
        } else {
            CHUNK
        };
        let done = copied.len();
        copied.reserve(table.len().saturating_sub(done).min(chunk));
        // A long key is on the heap, nowhere near its entry: loading each where it is copied
        // waited for one cache miss per series. A second iterator runs `AHEAD` entries in front
        // and prefetches, so the misses overlap.
        let mut ahead = table.iter().skip(done);
        for s in ahead.by_ref().take(AHEAD) {
            prefetch(s.key.as_ptr());
        }
        for s in table.iter().skip(done).take(chunk) {
            if let Some(next) = ahead.next() {
                prefetch(next.key.as_ptr());
            }
            let start = keys.len();
            keys.extend_from_slice(&s.key);
            copied.push(Copied {
                key: (start, keys.len()),
                lines: s.lines,
                hash: s.hash,
            });
        }
        let finished = copied.len() >= table.len();
        walked = Some((table.capacity(), shard.swaps, table.len()));
        drop(shard);
        longest = longest.max(locked.elapsed());
        if finished {
            break;
        }
    }
    if gained {
        let mut seen: HashSet<u64, IdentityHash> =
            HashSet::with_capacity_and_hasher(copied.len(), IdentityHash);
        copied.retain(|c| seen.insert(c.hash));
    }
    longest
}

/// Keeps the `n` first of `v` in the order `cmp`, sorted: a selection first, so a million names
/// cost a linear pass and a sort of `n`.
fn top<T>(v: &mut Vec<T>, n: usize, cmp: impl Fn(&T, &T) -> Ordering) {
    if n < v.len() {
        v.select_nth_unstable_by(n, &cmp);
        v.truncate(n);
    }
    v.sort_unstable_by(cmp);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{AggregatorConfig, GaugeDeltas, Ingestor, Limits};
    use std::sync::Arc;

    fn aggregator(max_series_per_metric: usize) -> Arc<Aggregator> {
        Arc::new(Aggregator::new(AggregatorConfig {
            shards: 4,
            limits: Limits {
                max_series_per_metric,
                ..Limits::default()
            },
            gauge_deltas: GaugeDeltas::Dogstatsd,
            hostname: Arc::from("test"),
            gauge_memory_flushes: 360,
        }))
    }

    fn ingest(agg: &Arc<Aggregator>, lines: &[&str]) {
        let mut ing = Ingestor::new(agg.clone());
        for l in lines {
            ing.ingest_line(l.as_bytes());
        }
        ing.commit();
    }

    fn metric(name: &str, series: u64, lines: u64) -> MetricCardinality {
        MetricCardinality {
            name: name.into(),
            series,
            lines,
            limited: false,
            dropped: 0,
        }
    }

    fn tag_key(key: &str, values: u64) -> TagKeyCardinality {
        TagKeyCardinality {
            key: key.into(),
            values,
        }
    }

    #[test]
    fn counts_series_and_lines_per_name() {
        let agg = aggregator(0);
        ingest(
            &agg,
            &[
                "a:1|c|#env:prod",
                "a:1|c|#env:prod",
                "a:1|c|#env:dev",
                "a:2|g",
                "b:1|ms",
                "b:1|ms",
                "b:1|ms",
            ],
        );
        let c = agg.cardinality(20);
        assert_eq!(c.total_series, 4);
        assert_eq!(c.metrics, vec![metric("a", 3, 4), metric("b", 1, 3)]);
    }

    #[test]
    fn a_line_with_several_values_counts_once() {
        let agg = aggregator(0);
        ingest(&agg, &["h:1:2:3|h", "h:4|h", "d:1:2|d|#x:1"]);
        let c = agg.cardinality(20);
        assert_eq!(c.metrics, vec![metric("d", 1, 1), metric("h", 1, 2)]);
    }

    #[test]
    fn lines_span_commits_and_restart_after_swap() {
        let agg = aggregator(0);
        ingest(&agg, &["a:1|c"]);
        ingest(&agg, &["a:1|c", "a:1|c"]);
        assert_eq!(agg.cardinality(20).metrics, vec![metric("a", 1, 3)]);
        agg.swap();
        let empty = agg.cardinality(20);
        assert_eq!(empty.total_series, 0);
        assert!(empty.metrics.is_empty() && empty.tag_keys.is_empty());
        ingest(&agg, &["a:1|c"]);
        assert_eq!(agg.cardinality(20).metrics, vec![metric("a", 1, 1)]);
    }

    #[test]
    fn sorted_by_series_then_name_and_limited() {
        let agg = aggregator(0);
        let mut lines = Vec::new();
        for (name, n) in [("c", 2), ("a", 2), ("b", 5), ("d", 1)] {
            for i in 0..n {
                lines.push(format!("{name}:1|c|#i:{i}"));
            }
        }
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        ingest(&agg, &refs);
        let c = agg.cardinality(3);
        assert_eq!(c.total_series, 10);
        let order: Vec<&str> = c.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(order, ["b", "a", "c"]);
        assert!(agg.cardinality(0).metrics.is_empty());
        assert_eq!(agg.cardinality(0).total_series, 10);
        assert_eq!(agg.cardinality(100).metrics.len(), 4);
    }

    #[test]
    fn distinct_values_per_tag_key() {
        let agg = aggregator(0);
        ingest(
            &agg,
            &[
                "a:1|c|#env:prod,zone:1",
                "a:1|c|#env:dev,zone:1",
                "b:1|c|#env:prod,zone:2,canary",
                "b:1|c|#env:prod,zone:3,url:http://x",
                "c:1|c|#host:web1",
                "c:1|c|#host:web2",
                "c:1|c|#veneurglobalonly",
            ],
        );
        let c = agg.cardinality(20);
        assert_eq!(
            c.tag_keys,
            vec![
                tag_key("zone", 3),
                tag_key("env", 2),
                tag_key("host", 2),
                tag_key("canary", 1),
                tag_key("url", 1),
            ]
        );
        assert_eq!(agg.cardinality(2).tag_keys.len(), 2);
    }

    #[test]
    fn a_metric_at_its_limit_is_marked_with_its_dropped_lines() {
        let agg = aggregator(2);
        // One commit per line: within one, shards admit in shard order, not line order.
        for line in [
            "busy:1|c|#i:1",
            "busy:1|c|#i:2",
            "busy:1|c|#i:3",
            "busy:1:2|h|#i:4",
            "busy:1|c|#i:1",
            "calm:1|c|#i:1",
        ] {
            ingest(&agg, &[line]);
        }
        let c = agg.cardinality(20);
        let mut busy = metric("busy", 2, 3);
        busy.limited = true;
        busy.dropped = 2;
        assert_eq!(c.metrics, vec![busy, metric("calm", 1, 1)]);
        assert_eq!(
            agg.stats()
                .series_dropped_metric_limit
                .load(std::sync::atomic::Ordering::Relaxed),
            3
        );
        agg.swap();
        ingest(&agg, &["busy:1|c|#i:1"]);
        assert_eq!(agg.cardinality(20).metrics, vec![metric("busy", 1, 1)]);
    }

    #[test]
    fn a_shard_larger_than_a_chunk_is_counted_once() {
        let agg = Arc::new(Aggregator::new(AggregatorConfig {
            shards: 1,
            ..(*aggregator(0).config()).clone()
        }));
        let lines: Vec<String> = (0..CHUNK * 2 + 5)
            .map(|i| format!("a:1|c|#i:{i}"))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        ingest(&agg, &refs);
        let c = agg.cardinality(20);
        let n = (CHUNK * 2 + 5) as u64;
        assert_eq!(c.total_series, CHUNK * 2 + 5);
        assert_eq!(c.metrics, vec![metric("a", n, n)]);
        assert_eq!(c.tag_keys, vec![tag_key("i", n)]);
    }

    /// Series inserted between the holds of a walk shift the entries after them: the copies
    /// are de-duplicated, and nothing that was there before the query is missed.
    #[test]
    fn a_walk_during_inserts_counts_each_series_once() {
        let agg = Arc::new(Aggregator::new(AggregatorConfig {
            shards: 1,
            ..(*aggregator(0).config()).clone()
        }));
        let first = CHUNK * 3;
        let lines: Vec<String> = (0..first).map(|i| format!("a:1|c|#i:{i}")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        ingest(&agg, &refs);
        let writer = {
            let agg = agg.clone();
            std::thread::spawn(move || {
                for i in first..first + 20_000 {
                    ingest(&agg, &[&format!("a:1|c|#i:{i}")]);
                }
            })
        };
        for _ in 0..20 {
            let before = agg.series_count();
            let c = agg.cardinality(20);
            let after = agg.series_count();
            assert!(before <= c.total_series && c.total_series <= after);
            assert_eq!(c.metrics[0].series as usize, c.total_series);
            assert_eq!(c.tag_keys[0].values as usize, c.total_series);
        }
        writer.join().unwrap();
        assert_eq!(agg.cardinality(20).total_series, first + 20_000);
    }

    #[test]
    fn imported_series_count_without_lines() {
        let agg = aggregator(0);
        ingest(&agg, &["a:1|c"]);
        let snapshot = agg.swap();
        let items = snapshot
            .tables
            .iter()
            .flat_map(|t| t.iter())
            .map(|s| (Box::<[u8]>::from(s.key.as_bytes()), s.state.clone()))
            .collect();
        assert_eq!(agg.merge_series(items), 0);
        assert_eq!(agg.cardinality(20).metrics, vec![metric("a", 1, 0)]);
    }
}
