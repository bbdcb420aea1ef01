//! The sink-neutral flushed data model: what every sink receives from one flush (`docs/flush.md`,
//! `docs/sinks.md`).
//!
//! One [`FlushBatch`] is built per interval and shared by every sink through an `Arc`; sinks encode
//! it into their own wire format and never mutate it. The serde shape of [`FlushBatch`] is exactly
//! the `http` sink's JSON document (`docs/sinks.md#the-json-document`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::release::Releaser;

/// Whether a point is a per-interval count or a sampled level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PointKind {
    /// The interval's total (statsd counters, `x.count`).
    Counter,
    /// A level: gauges, set cardinalities, histogram aggregates.
    Gauge,
}

impl PointKind {
    /// `counter` or `gauge`.
    pub const fn as_str(self) -> &'static str {
        match self {
            PointKind::Counter => "counter",
            PointKind::Gauge => "gauge",
        }
    }
}

/// One flushed metric point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// Full name, aggregate suffix included (`api.latency.99percentile`).
    pub name: String,
    /// Counter or gauge.
    pub kind: PointKind,
    /// Always finite: non-finite aggregates are dropped before a batch is built.
    pub value: f64,
    /// Sorted, de-duplicated tags, shared between the points of one series.
    pub tags: Arc<[String]>,
    /// The configured hostname, a `host:` tag's value, or empty (fleet-wide points).
    pub host: Arc<str>,
    /// Unix seconds: the end of the interval, or the line's `|T` timestamp.
    pub timestamp: i64,
    /// Interval length in seconds.
    pub interval: u64,
}

/// One flushed service check (`_sc` lines, `docs/protocol.md#service-checks`; health results,
/// `docs/health.md`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceCheck {
    /// Check name.
    pub name: String,
    /// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    pub status: u8,
    /// Sorted tags.
    pub tags: Vec<String>,
    /// Host the check describes.
    pub host: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// Message, newlines unescaped; empty when none.
    pub message: String,
}

/// One flushed event (`docs/protocol.md#events`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Title, non-empty.
    pub title: String,
    /// Text, newlines unescaped; may be empty.
    pub text: String,
    /// Sorted tags.
    pub tags: Vec<String>,
    /// Host the event comes from.
    pub host: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// `k:`, empty when none.
    pub aggregation_key: String,
    /// `normal` or `low`.
    pub priority: &'static str,
    /// `s:`, empty when none.
    pub source_type: String,
    /// `info`, `warning`, `error` or `success`.
    pub alert_type: &'static str,
}

/// Everything one flush hands to the sinks; serialises to the JSON document of `docs/sinks.md`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FlushBatch {
    /// Metric points.
    pub metrics: Vec<Point>,
    /// Service checks received or produced in the interval.
    pub service_checks: Vec<ServiceCheck>,
    /// Events received or produced in the interval.
    pub events: Vec<Event>,
    /// Declared last, so dropped after the points: returns the freed heap to the kernel.
    #[serde(skip)]
    pub release: ReleaseOnDrop,
}

/// When armed, hands the heap's free pages back to the kernel as it is dropped.
///
/// A flush of a million series renders about a hundred megabytes of points, which every sink
/// shares and the last one to finish drops. glibc keeps that memory in its arenas, so without
/// this the process stayed near twice what its tables hold until the next flush
/// (`benches/memory.sh`). The interval's batch arms this (so test and filtered batches do not),
/// and its drop asks the releaser for a `malloc_trim` ([`Releaser::trim`]: on a thread at the
/// readers' priority, as `malloc_trim` holds each arena's lock while it works).
#[derive(Debug, Default)]
pub struct ReleaseOnDrop(Option<Releaser>);

impl ReleaseOnDrop {
    /// A guard that has `releaser` return free memory when dropped.
    pub fn armed(releaser: Releaser) -> ReleaseOnDrop {
        ReleaseOnDrop(Some(releaser))
    }
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if let Some(releaser) = &self.0 {
            releaser.trim();
        }
    }
}

/// A copy releases nothing: only the interval's own batch does.
impl Clone for ReleaseOnDrop {
    fn clone(&self) -> ReleaseOnDrop {
        ReleaseOnDrop(None)
    }
}

/// Not part of a batch's content.
impl PartialEq for ReleaseOnDrop {
    fn eq(&self, _: &ReleaseOnDrop) -> bool {
        true
    }
}

impl FlushBatch {
    /// Number of items (points, checks and events): the unit of `meterd.sink.sent` and
    /// `meterd.sink.dropped`.
    pub fn len(&self) -> usize {
        self.metrics.len() + self.service_checks.len() + self.events.len()
    }

    /// Whether the batch holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Time since the Unix epoch (zero on a clock set before 1970).
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Unix seconds now, as points carry them.
pub fn unix_secs() -> i64 {
    i64::try_from(unix_now().as_secs()).unwrap_or(i64::MAX)
}
