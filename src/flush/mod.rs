//! The interval flush: wall-clock-aligned ticks, swap the aggregator's state, render the
//! points outside every lock and off the reader threads, and hand one batch to every sink.

pub mod naming;
pub mod slo;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashTable;

use crate::aggregate::histogram::SpareHdr;
use crate::aggregate::key::{KeyParts, Scope};
use crate::aggregate::{Aggregator, Series, Snapshot, State};
use crate::forward::client::Forwarder;
use crate::forward::proto::SeriesState;
use crate::health::{self, HealthResult, HealthStore, Origin, Service};
use crate::point::{unix_now, FlushBatch, Point, PointKind, ReleaseOnDrop};
use crate::protocol::MetricType;
use crate::release::Releaser;
use crate::sinks::SinkSet;
use crate::telemetry::Telemetry;
use naming::{aggregate_suffix, percentile_suffix, Aggregate};

/// What rendering takes from the validated config ([`crate::config::Runtime::render_settings`]).
#[derive(Debug, Clone)]
pub struct RenderSettings {
    /// `host` of every point that has no `host:` tag.
    pub hostname: Arc<str>,
    /// Tags added to every series.
    pub tags: Vec<String>,
    /// Histogram aggregates besides percentiles.
    pub aggregates: Vec<Aggregate>,
    /// Percentiles, each in (0, 1].
    pub percentiles: Vec<f64>,
    /// The flush interval.
    pub interval: Duration,
    /// Whether this instance forwards to globals (a local splits its series).
    pub forwarding: bool,
}

/// What rendering needs from the config, precomputed once.
#[derive(Debug, Clone)]
pub struct Renderer {
    hostname: Arc<str>,
    empty_host: Arc<str>,
    tags: Vec<String>,
    aggregates: Vec<Aggregate>,
    percentiles: Vec<(f64, String)>,
    interval: u64,
    forwarding: bool,
}

/// What [`Renderer::render`] makes of a snapshot.
#[derive(Debug)]
pub struct Rendered {
    /// The sinks' batch.
    pub batch: FlushBatch,
    /// Counts for self-metrics.
    pub stats: RenderStats,
    /// Series to forward, with their key hashes (for routing).
    pub forward: Vec<(u64, SeriesState)>,
    /// Emptied HDR arrays per shard, for [`Aggregator::recycle`].
    pub spares: Vec<Vec<SpareHdr>>,
    /// The snapshot's tables, rendered: the readers allocated their series, so the server
    /// frees them on the releaser thread ([`crate::release`]), not on the rendering thread.
    pub spent: Vec<HashTable<Series>>,
}

/// Counts from one render, for self-metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct RenderStats {
    /// Series by [`MetricType::index`].
    pub series_by_kind: [u64; 6],
    /// Points dropped for a non-finite value.
    pub non_finite: u64,
}

impl Renderer {
    /// Precomputes names and settings.
    pub fn new(settings: RenderSettings) -> Renderer {
        Renderer {
            hostname: settings.hostname,
            empty_host: Arc::from(""),
            tags: settings.tags,
            aggregates: settings.aggregates,
            percentiles: settings
                .percentiles
                .iter()
                .map(|&p| (p, percentile_suffix(p)))
                .collect(),
            interval: settings.interval.as_secs(),
            forwarding: settings.forwarding,
        }
    }

    /// The configured hostname.
    pub fn hostname(&self) -> &Arc<str> {
        &self.hostname
    }

    /// Renders a snapshot into a batch stamped `timestamp` (the end of the interval). With
    /// forwarding on, the series a global must merge are encoded into the returned list
    /// (with their key hash, for routing) instead of, or besides, local points (`docs/fleet.md`).
    pub fn render(&self, snapshot: Snapshot, timestamp: i64) -> Rendered {
        let mut stats = RenderStats::default();
        let mut metrics = Vec::with_capacity(snapshot.series() * 2);
        let mut forward = Vec::new();
        let mut spares = Vec::with_capacity(snapshot.tables.len());
        let mut spent = Vec::with_capacity(snapshot.tables.len());
        // Series are rendered in place and the tables handed back whole: nothing a reader
        // allocated is freed on this thread.
        for mut table in snapshot.tables {
            let mut spare = Vec::new();
            for series in table.iter_mut() {
                let Some(parts) = KeyParts::decode(&series.key) else {
                    continue;
                };
                if let Some(n) = stats.series_by_kind.get_mut(parts.kind.index()) {
                    *n += 1;
                }
                let (emit, forwarded) = self.decide(parts.kind, parts.scope);
                self.render_series(
                    &parts,
                    &mut series.state,
                    emit,
                    timestamp,
                    &mut metrics,
                    &mut stats,
                );
                if forwarded {
                    if let Some(s) = crate::forward::encode_series(&series.key, &series.state) {
                        forward.push((series.hash, s));
                    }
                }
                if let State::Histogram(h) = &mut series.state {
                    spare.extend(h.take_spare());
                }
            }
            spares.push(spare);
            spent.push(table);
        }
        let batch = FlushBatch {
            metrics,
            service_checks: snapshot.service_checks,
            events: snapshot.events,
            ..FlushBatch::default()
        };
        Rendered {
            batch,
            stats,
            forward,
            spares,
            spent,
        }
    }

    /// The scope rules of `docs/fleet.md#local-and-global-rules`: what this instance emits of a
    /// series, and whether it forwards it.
    fn decide(&self, kind: MetricType, scope: Scope) -> (Emit, bool) {
        match scope {
            Scope::ImportedPercentiles => (Emit::Percentiles, false),
            Scope::ImportedAll | Scope::LocalOnly => (Emit::All, false),
            Scope::Default | Scope::GlobalOnly if !self.forwarding => (Emit::All, false),
            Scope::GlobalOnly => (Emit::Nothing, true),
            Scope::Default => match kind {
                MetricType::Counter | MetricType::Gauge => (Emit::All, false),
                MetricType::Timer | MetricType::Histogram => (Emit::Aggregates, true),
                MetricType::Set | MetricType::Distribution => (Emit::Nothing, true),
            },
        }
    }

    /// Adds the configured `tags` to what did not come from a series key: the points from
    /// `own_from` on (health gauges, self-metrics), every service check and every event.
    pub fn add_global_tags(&self, batch: &mut FlushBatch, own_from: usize) {
        if self.tags.is_empty() {
            return;
        }
        let merge = |tags: &mut Vec<String>| {
            tags.extend(self.tags.iter().cloned());
            tags.sort_unstable();
            tags.dedup();
        };
        for p in batch.metrics.iter_mut().skip(own_from) {
            let mut tags = p.tags.to_vec();
            merge(&mut tags);
            p.tags = Arc::from(tags);
        }
        for c in &mut batch.service_checks {
            merge(&mut c.tags);
        }
        for e in &mut batch.events {
            merge(&mut e.tags);
        }
    }

    fn tags_of(&self, parts: &KeyParts<'_>) -> Arc<[String]> {
        let mut tags: Vec<String> = parts.tags().map(str::to_owned).collect();
        if !self.tags.is_empty() {
            tags.extend(self.tags.iter().cloned());
            tags.sort_unstable();
            tags.dedup();
        }
        Arc::from(tags)
    }

    /// Pushes the points `emit` asks for (percentiles settle a histogram state in place).
    fn render_series(
        &self,
        parts: &KeyParts<'_>,
        state: &mut State,
        emit: Emit,
        flush_ts: i64,
        out: &mut Vec<Point>,
        stats: &mut RenderStats,
    ) {
        if emit == Emit::Nothing {
            return;
        }
        let tags = self.tags_of(parts);
        let host = match parts.host {
            Some("") => self.empty_host.clone(),
            Some(h) => Arc::from(h),
            None => self.hostname.clone(),
        };
        let timestamp = parts
            .timestamp
            .and_then(|t| i64::try_from(t).ok())
            .unwrap_or(flush_ts);
        let mut push = |name: String, kind: PointKind, value: f64| {
            if !value.is_finite() {
                stats.non_finite += 1;
                return;
            }
            out.push(Point {
                name,
                kind,
                value,
                tags: tags.clone(),
                host: host.clone(),
                timestamp,
                interval: self.interval,
            });
        };
        match state {
            State::Counter(v) => push(parts.name.to_owned(), PointKind::Counter, *v),
            State::Gauge(v) => push(parts.name.to_owned(), PointKind::Gauge, *v),
            State::Set(s) => push(parts.name.to_owned(), PointKind::Gauge, s.estimate() as f64),
            State::Histogram(h) => {
                if emit != Emit::Percentiles {
                    for &a in &self.aggregates {
                        let (kind, value) = match a {
                            Aggregate::Min => (PointKind::Gauge, h.min),
                            Aggregate::Max => (PointKind::Gauge, h.max),
                            Aggregate::Count => (PointKind::Counter, h.count),
                            Aggregate::Sum => (PointKind::Gauge, h.sum),
                            Aggregate::Avg => (PointKind::Gauge, h.avg()),
                            Aggregate::Median => (PointKind::Gauge, h.percentile(0.5)),
                            Aggregate::Hmean => (PointKind::Gauge, h.hmean()),
                        };
                        push(
                            format!("{}.{}", parts.name, aggregate_suffix(a)),
                            kind,
                            value,
                        );
                    }
                }
                if emit != Emit::Aggregates {
                    for (p, suffix) in &self.percentiles {
                        let v = h.percentile(*p);
                        push(format!("{}.{}", parts.name, suffix), PointKind::Gauge, v);
                    }
                }
            }
        }
    }
}

/// Which points of a series this instance emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emit {
    /// None (a global emits it).
    Nothing,
    /// Every point.
    All,
    /// Histogram aggregates only (the global emits the percentiles).
    Aggregates,
    /// Percentiles only (the local emitted the aggregates).
    Percentiles,
}

/// Time until the next wall-clock multiple of `interval`, and that multiple in unix seconds.
pub fn next_boundary(interval: Duration) -> (Duration, i64) {
    let now = unix_now();
    let step = interval.as_millis().max(1);
    let now_ms = now.as_millis();
    let next = (now_ms / step + 1) * step;
    let wait = Duration::from_millis(u64::try_from(next - now_ms).unwrap_or(0));
    (wait, i64::try_from(next / 1000).unwrap_or(i64::MAX))
}

/// Everything one flush needs.
pub struct Flusher {
    /// The state.
    pub aggregator: Arc<Aggregator>,
    /// Renders points.
    pub renderer: Renderer,
    /// Where batches go.
    pub sinks: Arc<SinkSet>,
    /// UDP ports, for the kernel drop counter.
    pub udp_ports: Vec<u16>,
    /// Health checks: meterd's own are recorded here each flush, and everything pending drained.
    pub health: Arc<HealthStore>,
    /// Delivery to globals, when this instance forwards.
    pub forwarder: Option<Forwarder>,
    /// meterd's own counters, rendered into each flush.
    pub telemetry: Arc<Telemetry>,
    /// Frees each flush's leftovers and returns free heap to the kernel ([`Releaser::inline`]
    /// unless [`Flusher::with_releaser`] gave it the server's thread).
    pub releaser: Releaser,
    previous: std::collections::HashMap<(&'static str, String), u64>,
    /// The SLOs ([`Flusher::with_slos`]); none by default.
    slos: slo::SharedSlos,
    /// Their counting rules, read on the rendering thread.
    slo_rules: Arc<crate::aggregate::slo::SloRules>,
    last_kernel_drops: u64,
    last_packets: u64,
    last_lines: u64,
}

impl Flusher {
    /// A flusher over these parts.
    pub fn new(
        aggregator: Arc<Aggregator>,
        renderer: Renderer,
        sinks: Arc<SinkSet>,
        udp_ports: Vec<u16>,
        health: Arc<HealthStore>,
        forwarder: Option<Forwarder>,
        telemetry: Arc<Telemetry>,
    ) -> Flusher {
        let last_kernel_drops = telemetry.udp_kernel_drops.load(Ordering::Relaxed);
        Flusher {
            aggregator,
            renderer,
            sinks,
            udp_ports,
            health,
            forwarder,
            telemetry,
            releaser: Releaser::inline(),
            previous: std::collections::HashMap::new(),
            slos: slo::SharedSlos::default(),
            slo_rules: Arc::default(),
            last_kernel_drops,
            last_packets: 0,
            last_lines: 0,
        }
    }

    /// Frees each flush's leftovers on `releaser`'s thread (the server's, at the readers'
    /// priority) instead of the calling thread.
    pub fn with_releaser(mut self, releaser: Releaser) -> Flusher {
        self.releaser = releaser;
        self
    }

    /// meterd's own checks (`docs/health.md#meterds-own-checks`): `meterd.ingest` and one
    /// `meterd.sink.NAME` per sink.
    fn record_self_checks(&mut self, timestamp: i64) {
        let t = self.telemetry.clone();
        let drops = t.udp_kernel_drops.load(Ordering::Relaxed);
        let packets = t.ingest.packets_received.load(Ordering::Relaxed);
        let lines = t.ingest.lines_received.load(Ordering::Relaxed);
        let new_drops = drops.saturating_sub(self.last_kernel_drops);
        let new_packets = packets.saturating_sub(self.last_packets);
        let new_lines = lines.saturating_sub(self.last_lines);
        self.last_kernel_drops = drops;
        self.last_packets = packets;
        self.last_lines = lines;
        t.lines_last_interval.store(new_lines, Ordering::Relaxed);
        let interval = self.renderer.interval;
        let host = self.renderer.hostname().to_string();
        let own = |id: String, ok: bool, error: String, results: Vec<(&str, u64)>| HealthResult {
            id,
            description: String::new(),
            timestamp,
            interval,
            ttl: 0,
            status: if ok { health::OK } else { health::ERROR },
            error: if ok { String::new() } else { error },
            service: Service {
                id: host.clone(),
                name: "meterd".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
            results: results
                .into_iter()
                .map(|(k, v)| (k.to_owned(), serde_json::Value::from(v)))
                .collect(),
        };
        let mut results = vec![own(
            "meterd.ingest".to_owned(),
            new_drops == 0,
            format!("the kernel dropped {new_drops} datagrams in the last interval (socket buffer full)"),
            vec![("packets", new_packets), ("lines", new_lines), ("kernel_drops", new_drops)],
        )];
        for (name, stats) in self.sinks.stats() {
            let ok = stats.last_ok.load(Ordering::Relaxed);
            results.push(own(
                format!("meterd.sink.{name}"),
                ok,
                format!("the last delivery to sink {name} failed"),
                vec![
                    ("sent", stats.sent.load(Ordering::Relaxed)),
                    ("dropped", stats.dropped.load(Ordering::Relaxed)),
                ],
            ));
        }
        if let Some(f) = &self.forwarder {
            let globals = f.stats();
            let down: Vec<&str> = globals
                .iter()
                .filter(|g| {
                    !g.in_ring.load(Ordering::Relaxed) || !g.last_ok.load(Ordering::Relaxed)
                })
                .map(|g| g.url.as_str())
                .collect();
            let sent: u64 = globals.iter().map(|g| g.sent.load(Ordering::Relaxed)).sum();
            let dropped: u64 = globals
                .iter()
                .map(|g| g.dropped.load(Ordering::Relaxed))
                .sum();
            results.push(own(
                "meterd.forward".to_owned(),
                down.is_empty(),
                format!("forwarding to {} is failing", down.join(", ")),
                vec![("sent", sent), ("dropped", dropped)],
            ));
        }
        self.health.record(results, Origin::Api);
    }

    /// Swaps, renders (on a blocking thread) and submits one flush stamped `timestamp`.
    pub async fn flush(&mut self, timestamp: i64) {
        let started = Instant::now();
        let snapshot = self.aggregator.swap();
        let (gauges, gauge_bytes) = self.aggregator.gauge_memory();
        let t = &self.telemetry;
        t.gauges_remembered
            .store(u64::try_from(gauges).unwrap_or(u64::MAX), Ordering::Relaxed);
        t.gauges_remembered_bytes.store(
            u64::try_from(gauge_bytes).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let renderer = self.renderer.clone();
        let rules = self.slo_rules.clone();
        let rendered = tokio::task::spawn_blocking(move || {
            let counts = rules.count(&snapshot.tables);
            (renderer.render(snapshot, timestamp), counts)
        })
        .await;
        let (
            Rendered {
                mut batch,
                stats,
                forward,
                spares,
                spent,
            },
            slo_counts,
        ) = match rendered {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "flush render failed; interval lost");
                return;
            }
        };
        self.releaser.drop_later(spent);
        let unused = self.aggregator.recycle(spares);
        self.releaser.drop_later(unused);
        let t = self.telemetry.clone();
        for (counter, n) in t.series_active.iter().zip(stats.series_by_kind) {
            counter.store(n, Ordering::Relaxed);
        }
        t.series_dropped_non_finite
            .fetch_add(stats.non_finite, Ordering::Relaxed);
        if let Some(drops) = crate::sys::read_udp_kernel_drops(&self.udp_ports) {
            t.udp_kernel_drops.store(drops, Ordering::Relaxed);
        }
        // Own checks first, so each global's fleet view gets every local's, every flush.
        self.record_self_checks(timestamp);
        // A local forwards its SLO counts; a standalone or global instance evaluates them.
        let (slo_forward, slo_counts) = match self.forwarder {
            Some(_) => (slo::forwarded(&slo_counts), None),
            None => (Vec::new(), Some(slo_counts)),
        };
        if let Some(f) = &self.forwarder {
            f.submit(forward, self.health.take_forward(), slo_forward);
        }
        let (checks, gauges, events) = self.health.drain(self.renderer.interval);
        batch.service_checks.extend(checks);
        let own_from = batch.metrics.len();
        batch.metrics.extend(gauges);
        batch.events.extend(events);
        if let Some(counts) = slo_counts {
            self.evaluate_slos(counts, timestamp, &mut batch).await;
        }
        t.health_dropped.store(
            self.health.dropped.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        let sink_stats = self.sinks.stats();
        let globals = self
            .forwarder
            .as_ref()
            .map(|f| f.stats().to_vec())
            .unwrap_or_default();
        batch.metrics.extend(t.points(
            &mut self.previous,
            &sink_stats,
            &globals,
            self.renderer.hostname(),
            timestamp,
            self.renderer.interval,
        ));
        self.renderer.add_global_tags(&mut batch, own_from);
        let points = batch.metrics.len();
        batch.release = ReleaseOnDrop::armed(self.releaser.clone());
        self.sinks.submit(Arc::new(batch));
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        t.flush_duration_ms.store(ms, Ordering::Relaxed);
        t.last_flush_unix
            .store(u64::try_from(timestamp).unwrap_or(0), Ordering::Relaxed);
        tracing::debug!(points, ms, "flushed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{AggregatorConfig, GaugeDeltas, Ingestor, Limits};

    /// HDR arrays recycled from one interval into the next carry nothing over: the second
    /// interval's percentiles are its own samples', and the spares are used.
    #[test]
    fn recycled_hdr_arrays_start_empty() {
        let aggregator = Arc::new(Aggregator::new(AggregatorConfig {
            shards: 2,
            limits: Limits::default(),
            gauge_deltas: GaugeDeltas::Dogstatsd,
            hostname: Arc::from("h"),
            gauge_memory_flushes: 360,
        }));
        let renderer = Renderer::new(
            crate::config::Config::default()
                .validate("")
                .unwrap()
                .render_settings(),
        );
        let mut ingestor = Ingestor::new(aggregator.clone());
        let send = |ingestor: &mut Ingestor, base: u32| {
            for series in 0..20 {
                for v in 1..=2000 {
                    let line = format!("t{series}:{}|ms", base + v);
                    crate::ingest::ingest_datagram(ingestor, line.as_bytes(), false);
                }
            }
            ingestor.commit();
        };
        // Interval 1: values 1_000_001..=1_002_000, all HDR.
        send(&mut ingestor, 1_000_000);
        let first = renderer.render(aggregator.swap(), 1);
        let spares: usize = first.spares.iter().map(Vec::len).sum();
        assert_eq!(spares, 20, "every HDR series leaves its arrays");
        aggregator.recycle(first.spares);
        assert_eq!(aggregator.spare_hdr_count(), 20);
        // Interval 2: values 1..=2000 in the recycled arrays.
        send(&mut ingestor, 0);
        assert_eq!(aggregator.spare_hdr_count(), 0, "the spares were taken");
        let second = renderer.render(aggregator.swap(), 2);
        let point = |name: &str| {
            second
                .batch
                .metrics
                .iter()
                .find(|p| p.name == name)
                .map(|p| p.value)
        };
        for series in 0..20 {
            let name = format!("t{series}.99percentile");
            let v = point(&name).expect("p99 rendered");
            assert!((v - 1980.0).abs() <= 1980.0 * 0.01, "{name} = {v}");
            assert_eq!(point(&format!("t{series}.count")), Some(2000.0));
        }
        let spares: usize = second.spares.iter().map(Vec::len).sum();
        assert_eq!(spares, 20);
    }
}
