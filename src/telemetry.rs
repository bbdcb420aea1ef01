//! meterd's own metrics (`docs/self-metrics.md`): counters registered once, fed by readers in
//! per-batch sums, emitted every flush as per-interval counts through the normal pipeline and
//! served cumulatively at `GET /metrics`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::aggregate::IngestStats;
use crate::forward::client::GlobalStats;
use crate::point::{Point, PointKind};
use crate::protocol::{MetricType, ParseError};
use crate::sinks::SinkStats;

/// Cumulative counters since start: the flush's and the API's own, beside the aggregator's
/// [`IngestStats`] (lines, packets, refusals), which it reads.
#[derive(Debug)]
pub struct Telemetry {
    /// What the readers counted (shared with the aggregator that owns it).
    pub ingest: Arc<IngestStats>,
    /// Aggregates dropped at flush for not being finite.
    pub series_dropped_non_finite: AtomicU64,
    /// Duration of the last flush, milliseconds.
    pub flush_duration_ms: AtomicU64,
    /// Series active at the last flush, by [`MetricType::index`].
    pub series_active: [AtomicU64; MetricType::ALL.len()],
    /// Kernel drop counter of the UDP sockets (from `/proc/net/udp`), cumulative.
    pub udp_kernel_drops: AtomicU64,
    /// `POST /import` bodies accepted.
    pub import_received: AtomicU64,
    /// `POST /import` bodies answered as repeats of one already merged (not merged again).
    pub import_duplicates: AtomicU64,
    /// Health results refused by `[health] max_checks` (copied from the store at each flush).
    pub health_dropped: AtomicU64,
    /// Lines received in the last complete interval (for the status page).
    pub lines_last_interval: AtomicU64,
    /// Unix seconds of the last flush.
    pub last_flush_unix: AtomicU64,
    /// Gauges whose last value is kept for `+N`, and the bytes of the tables holding them
    /// ([`crate::aggregate::Aggregator::gauge_memory`]), as of the last flush.
    pub gauges_remembered: AtomicU64,
    /// See `gauges_remembered`.
    pub gauges_remembered_bytes: AtomicU64,
    /// Datagrams a capture left out because its queue was full (`meterd.capture.dropped`),
    /// counted by the capture tap, which shares this counter.
    pub capture_dropped: Arc<AtomicU64>,
    /// When meterd started.
    pub started: Instant,
}

impl Telemetry {
    /// Counters starting at zero, reading the readers' counts from `ingest`.
    pub fn new(ingest: Arc<IngestStats>) -> Self {
        Telemetry {
            ingest,
            series_dropped_non_finite: AtomicU64::new(0),
            flush_duration_ms: AtomicU64::new(0),
            series_active: Default::default(),
            udp_kernel_drops: AtomicU64::new(0),
            import_received: AtomicU64::new(0),
            import_duplicates: AtomicU64::new(0),
            health_dropped: AtomicU64::new(0),
            lines_last_interval: AtomicU64::new(0),
            last_flush_unix: AtomicU64::new(0),
            gauges_remembered: AtomicU64::new(0),
            gauges_remembered_bytes: AtomicU64::new(0),
            capture_dropped: Arc::default(),
            started: Instant::now(),
        }
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new(Arc::default())
    }
}

/// One named cumulative counter value, with at most one tag.
struct Sample {
    name: &'static str,
    tag: Option<(&'static str, String)>,
    value: u64,
    counter: bool,
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Telemetry {
    fn samples(
        &self,
        sinks: &[(String, Arc<SinkStats>)],
        globals: &[Arc<GlobalStats>],
    ) -> Vec<Sample> {
        let c = |name, value| Sample {
            name,
            tag: None,
            value,
            counter: true,
        };
        let tagged = |name, key, tag: &str, value, counter| Sample {
            name,
            tag: Some((key, tag.to_owned())),
            value,
            counter,
        };
        let ingest = &*self.ingest;
        let mut out = vec![
            c("packets.received", load(&ingest.packets_received)),
            c("lines.received", load(&ingest.lines_received)),
        ];
        for e in ParseError::ALL {
            let n = ingest.lines_invalid.get(e.index()).map_or(0, load);
            out.push(tagged("lines.invalid", "reason", e.reason(), n, true));
        }
        for t in MetricType::ALL {
            let n = self.series_active.get(t.index()).map_or(0, load);
            out.push(tagged("series.active", "kind", kind_name(t), n, false));
        }
        for (reason, v) in [
            ("limit", &ingest.series_dropped_limit),
            ("metric_limit", &ingest.series_dropped_metric_limit),
            ("non_finite", &self.series_dropped_non_finite),
        ] {
            out.push(tagged("series.dropped", "reason", reason, load(v), true));
        }
        out.push(tagged(
            "lines.dropped",
            "reason",
            "mapping",
            load(&ingest.lines_dropped_mapping),
            true,
        ));
        out.push(c("mapping.cache_hits", load(&ingest.mapping_cache_hits)));
        out.push(c(
            "mapping.cache_misses",
            load(&ingest.mapping_cache_misses),
        ));
        out.push(c(
            "mapping.cache_evictions",
            load(&ingest.mapping_cache_evictions),
        ));
        out.push(c("events.dropped", load(&ingest.events_dropped)));
        for (result, v) in [
            ("hit", &ingest.origin_hits),
            ("miss", &ingest.origin_misses),
        ] {
            out.push(tagged("origin.lookups", "result", result, load(v), true));
        }
        out.push(c("health.dropped", load(&self.health_dropped)));
        out.push(Sample {
            name: "flush.duration_ms",
            tag: None,
            value: load(&self.flush_duration_ms),
            counter: false,
        });
        for (name, s) in sinks {
            for (metric, v) in [
                ("sink.sent", &s.sent),
                ("sink.errors", &s.errors),
                ("sink.dropped", &s.dropped),
            ] {
                out.push(tagged(metric, "sink", name, load(v), true));
            }
        }
        for g in globals {
            for (metric, v) in [
                ("forward.sent", &g.sent),
                ("forward.errors", &g.errors),
                ("forward.dropped", &g.dropped),
            ] {
                out.push(tagged(metric, "global", &g.url, load(v), true));
            }
        }
        out.push(c("udp.kernel_drops", load(&self.udp_kernel_drops)));
        out.push(c("import.received", load(&self.import_received)));
        out.push(c("import.duplicates", load(&self.import_duplicates)));
        out.push(c("capture.dropped", load(&self.capture_dropped)));
        out
    }

    /// Self-metric points for one flush: counters as the change since `previous` (which is
    /// updated; keyed by name and tag, so sinks may come and go on reload), gauges as they are.
    /// Zeros included.
    pub fn points(
        &self,
        previous: &mut HashMap<(&'static str, String), u64>,
        sinks: &[(String, Arc<SinkStats>)],
        globals: &[Arc<GlobalStats>],
        host: &Arc<str>,
        timestamp: i64,
        interval: u64,
    ) -> Vec<Point> {
        let samples = self.samples(sinks, globals);
        samples
            .into_iter()
            .map(|s| {
                let value = if s.counter {
                    let tag = s.tag.as_ref().map(|t| t.1.clone()).unwrap_or_default();
                    let prev = previous.entry((s.name, tag)).or_insert(0);
                    let d = s.value.saturating_sub(*prev);
                    *prev = s.value;
                    d
                } else {
                    s.value
                };
                let tags: Arc<[String]> = match s.tag {
                    Some((k, v)) => Arc::from(vec![format!("{k}:{v}")]),
                    None => Arc::from(Vec::new()),
                };
                Point {
                    name: format!("meterd.{}", s.name),
                    kind: if s.counter {
                        PointKind::Counter
                    } else {
                        PointKind::Gauge
                    },
                    value: value as f64,
                    tags,
                    host: host.clone(),
                    timestamp,
                    interval,
                }
            })
            .collect()
    }

    /// Prometheus text exposition of the cumulative counters (`GET /metrics`).
    pub fn prometheus_text(
        &self,
        sinks: &[(String, Arc<SinkStats>)],
        globals: &[Arc<GlobalStats>],
    ) -> String {
        let mut out = String::with_capacity(4096);
        let mut last_name = "";
        for s in self.samples(sinks, globals) {
            let base = format!("meterd_{}", s.name.replace('.', "_"));
            let name = if s.counter {
                format!("{base}_total")
            } else {
                base
            };
            if s.name != last_name {
                let kind = if s.counter { "counter" } else { "gauge" };
                let _ = writeln!(out, "# HELP {name} meterd.{}", s.name);
                let _ = writeln!(out, "# TYPE {name} {kind}");
                last_name = s.name;
            }
            match s.tag {
                Some((k, v)) => {
                    let v = v.replace('\\', "\\\\").replace('"', "\\\"");
                    let _ = writeln!(out, "{name}{{{k}=\"{v}\"}} {}", s.value);
                }
                None => {
                    let _ = writeln!(out, "{name} {}", s.value);
                }
            }
        }
        let _ = writeln!(out, "# HELP meterd_uptime_seconds seconds since start");
        let _ = writeln!(out, "# TYPE meterd_uptime_seconds gauge");
        let _ = writeln!(
            out,
            "meterd_uptime_seconds {}",
            self.started.elapsed().as_secs()
        );
        for (name, help, v) in [
            (
                "meterd_gauges_remembered",
                "gauges whose last value is kept for +N (updated within the last hour)",
                &self.gauges_remembered,
            ),
            (
                "meterd_gauges_remembered_bytes",
                "bytes of the tables holding those last values",
                &self.gauges_remembered_bytes,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {}", load(v));
        }
        out
    }
}

/// The `kind:` tag value of `meterd.series.active`.
pub const fn kind_name(t: MetricType) -> &'static str {
    match t {
        MetricType::Counter => "counter",
        MetricType::Gauge => "gauge",
        MetricType::Set => "set",
        MetricType::Timer => "timer",
        MetricType::Histogram => "histogram",
        MetricType::Distribution => "distribution",
    }
}
