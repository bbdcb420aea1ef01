//! What the aggregator's readers and imports count: lines and packets in, lines refused and
//! why, series and events refused at their limits. Cumulative since start; ingestors add their
//! per-batch sums at each commit. The self-metrics read these; the aggregator knows nothing of
//! how they are emitted.

use std::sync::atomic::AtomicU64;

use crate::protocol::ParseError;

/// Cumulative counters of the ingest side, owned by the [`super::Aggregator`].
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Datagrams (and TCP reads) received.
    pub packets_received: AtomicU64,
    /// Non-blank lines received.
    pub lines_received: AtomicU64,
    /// Invalid lines by [`ParseError::index`].
    pub lines_invalid: [AtomicU64; ParseError::ALL.len()],
    /// Lines (and imported series) refused by `max_series`.
    pub series_dropped_limit: AtomicU64,
    /// Lines refused by `max_series_per_metric`.
    pub series_dropped_metric_limit: AtomicU64,
    /// Events and service checks refused by `max_events`.
    pub events_dropped: AtomicU64,
    /// Origin detection: datagrams whose sender's container came from a reader's cache.
    pub origin_hits: AtomicU64,
    /// Origin detection: datagrams whose sender's container was read from `/proc`.
    pub origin_misses: AtomicU64,
    /// Metric lines dropped by a mapping rule (`action = "drop"`).
    pub lines_dropped_mapping: AtomicU64,
    /// Mapping lookups answered by a reader's cache.
    pub mapping_cache_hits: AtomicU64,
    /// Mapping lookups that ran the rules.
    pub mapping_cache_misses: AtomicU64,
    /// Entries the readers' mapping caches dropped to stay bounded.
    pub mapping_cache_evictions: AtomicU64,
}
