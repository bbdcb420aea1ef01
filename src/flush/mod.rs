//! The interval flush: wall-clock-aligned ticks, swap the aggregator's state, render SPEC §3's
//! points outside every lock and off the reader threads, and hand one batch to every sink.

pub mod naming;
pub mod point;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::aggregate::key::KeyParts;
use crate::aggregate::{Aggregator, Snapshot, State};
use crate::config::{Aggregate, Runtime};
use crate::health::{self, HealthResult, HealthStore, Origin, Service};
use crate::protocol::MetricType;
use crate::sinks::SinkSet;
use naming::{aggregate_suffix, percentile_suffix};
use point::{FlushBatch, Point, PointKind};

/// What rendering needs from the config, precomputed once.
#[derive(Debug, Clone)]
pub struct Renderer {
    hostname: Arc<str>,
    empty_host: Arc<str>,
    tags: Vec<String>,
    aggregates: Vec<Aggregate>,
    percentiles: Vec<(f64, String)>,
    interval: u64,
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
    pub fn new(rt: &Runtime) -> Renderer {
        Renderer {
            hostname: rt.hostname.clone(),
            empty_host: Arc::from(""),
            tags: rt.tags.clone(),
            aggregates: rt.config.aggregates.clone(),
            percentiles: rt
                .config
                .percentiles
                .iter()
                .map(|p| (p.0, percentile_suffix(p.0)))
                .collect(),
            interval: rt.interval.as_secs(),
        }
    }

    /// The configured hostname.
    pub fn hostname(&self) -> &Arc<str> {
        &self.hostname
    }

    /// Renders a snapshot into a batch stamped `timestamp` (the end of the interval).
    pub fn render(&self, snapshot: Snapshot, timestamp: i64) -> (FlushBatch, RenderStats) {
        let mut stats = RenderStats::default();
        let mut metrics = Vec::with_capacity(snapshot.series() * 2);
        for table in snapshot.tables {
            for series in table {
                let Some(parts) = KeyParts::decode(&series.key) else {
                    continue;
                };
                if let Some(n) = stats.series_by_kind.get_mut(parts.kind.index()) {
                    *n += 1;
                }
                self.render_series(&parts, series.state, timestamp, &mut metrics, &mut stats);
            }
        }
        let batch = FlushBatch {
            metrics,
            service_checks: snapshot.service_checks,
            events: snapshot.events,
        };
        (batch, stats)
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

    fn render_series(
        &self,
        parts: &KeyParts<'_>,
        state: State,
        flush_ts: i64,
        out: &mut Vec<Point>,
        stats: &mut RenderStats,
    ) {
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
        match (parts.kind, state) {
            (MetricType::Counter, State::Counter(v)) => {
                push(parts.name.to_owned(), PointKind::Counter, v)
            }
            (MetricType::Gauge, State::Gauge(v)) => {
                push(parts.name.to_owned(), PointKind::Gauge, v)
            }
            (MetricType::Set, State::Set(s)) => {
                push(parts.name.to_owned(), PointKind::Gauge, s.estimate() as f64)
            }
            (
                MetricType::Timer | MetricType::Histogram | MetricType::Distribution,
                State::Histogram(mut h),
            ) => {
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
                for (p, suffix) in &self.percentiles {
                    let v = h.percentile(*p);
                    push(format!("{}.{}", parts.name, suffix), PointKind::Gauge, v);
                }
            }
            // The key's type decides the state's type (aggregate::new_state).
            _ => {}
        }
    }
}

/// Unix seconds now.
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
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
    previous: Vec<u64>,
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
    ) -> Flusher {
        let t = aggregator.telemetry().clone();
        Flusher {
            aggregator,
            renderer,
            sinks,
            udp_ports,
            health,
            previous: Vec::new(),
            last_kernel_drops: t.udp_kernel_drops.load(Ordering::Relaxed),
            last_packets: 0,
            last_lines: 0,
        }
    }

    /// meterd's own checks (SPEC §6): `meterd.ingest` and one `meterd.sink.NAME` per sink.
    fn record_self_checks(&mut self, timestamp: i64) {
        let t = self.aggregator.telemetry().clone();
        let drops = t.udp_kernel_drops.load(Ordering::Relaxed);
        let packets = t.packets_received.load(Ordering::Relaxed);
        let lines = t.lines_received.load(Ordering::Relaxed);
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
        self.health.record(results, Origin::Api);
    }

    /// Swaps, renders (on a blocking thread) and submits one flush stamped `timestamp`.
    pub async fn flush(&mut self, timestamp: i64) {
        let started = Instant::now();
        let snapshot = self.aggregator.swap();
        let renderer = self.renderer.clone();
        let rendered =
            tokio::task::spawn_blocking(move || renderer.render(snapshot, timestamp)).await;
        let (mut batch, stats) = match rendered {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "flush render failed; interval lost");
                return;
            }
        };
        let t = self.aggregator.telemetry().clone();
        for (counter, n) in t.series_active.iter().zip(stats.series_by_kind) {
            counter.store(n, Ordering::Relaxed);
        }
        t.series_dropped_non_finite
            .fetch_add(stats.non_finite, Ordering::Relaxed);
        if let Some(drops) = crate::telemetry::read_udp_kernel_drops(&self.udp_ports) {
            t.udp_kernel_drops.store(drops, Ordering::Relaxed);
        }
        self.record_self_checks(timestamp);
        let (checks, gauges, events) = self.health.drain(self.renderer.interval);
        batch.service_checks.extend(checks);
        batch.metrics.extend(gauges);
        batch.events.extend(events);
        t.health_dropped.store(
            self.health.dropped.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        let sink_stats = self.sinks.stats();
        batch.metrics.extend(t.points(
            &mut self.previous,
            &sink_stats,
            self.renderer.hostname(),
            timestamp,
            self.renderer.interval,
        ));
        let points = batch.metrics.len();
        self.sinks.submit(Arc::new(batch));
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        t.flush_duration_ms.store(ms, Ordering::Relaxed);
        t.last_flush_unix
            .store(u64::try_from(timestamp).unwrap_or(0), Ordering::Relaxed);
        tracing::debug!(points, ms, "flushed");
    }
}
