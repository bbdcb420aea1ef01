//! The runner: one tokio task per sink behind a bounded queue. Each batch is filtered and encoded
//! once on the blocking pool, then delivered with a per-attempt timeout, retried with backoff
//! while the error is retryable and the interval lasts, and otherwise dropped and counted.
//! [`SinkSet`] starts the tasks, hands them each flush without blocking, and stops them.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::{validate_all, ValidKind};
use super::idempotency::{sink_tag, BatchId};
use super::{
    console, datadog, filter, http, influxdb, prometheus_remote_write, prometheus_scrape, Sink,
    SinkConfig, SinkConfigError, SinkError,
};
use crate::point::FlushBatch;

/// Batches each sink's queue holds besides the one it is delivering; a batch arriving at a full
/// queue is dropped for that sink (and counted), so a slow sink is never more than this many
/// flushes behind.
pub const QUEUE_BATCHES: usize = 2;

/// At most one warning per sink and kind of trouble in this period; the rest are counted into it.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Cumulative delivery counters of one sink, shared with self-metrics and health checks.
#[derive(Debug)]
pub struct SinkStats {
    /// Items (points, service checks, events; [`FlushBatch::len`] units) delivered.
    pub sent: AtomicU64,
    /// Failed attempts (each timeout, connection error or error status counts once).
    pub errors: AtomicU64,
    /// Items given up on: final failures, a full queue, shutdown.
    pub dropped: AtomicU64,
    /// Whether the last finished delivery succeeded (starts `true`): the sink's health check.
    pub last_ok: AtomicBool,
}

impl Default for SinkStats {
    fn default() -> Self {
        SinkStats {
            sent: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_ok: AtomicBool::new(true),
        }
    }
}

/// Backoff before the first retry.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Longest backoff between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Exponential backoff (×2 from [`INITIAL_BACKOFF`], capped at [`MAX_BACKOFF`]) with "equal
/// jitter": each delay is uniformly drawn from the upper half of the current step, so sinks that
/// failed together do not retry in lockstep, and no delay is shorter than half its step.
#[derive(Debug)]
struct Backoff {
    step: Duration,
    rng: u64,
}

impl Backoff {
    /// A fresh backoff, starting at [`INITIAL_BACKOFF`].
    fn new() -> Self {
        // Seeded per backoff from std's randomly keyed hasher; jitter needs no crypto quality.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Backoff {
            step: INITIAL_BACKOFF,
            rng: seed | 1,
        }
    }

    /// The delay before the next attempt; doubles the step for the one after.
    fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(MAX_BACKOFF);
        let half = step / 2;
        let half_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(self.next_random() % half_nanos.saturating_add(1))
    }

    /// xorshift64*.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A warning limiter: the first event logs, later ones within [`LOG_EVERY`] are counted into the
/// next warning.
#[derive(Debug, Default)]
struct LogLimiter {
    last: Option<std::time::Instant>,
    batches: u64,
    items: u64,
}

impl LogLimiter {
    /// Records one batch of `items`; returns the batches and items to report when a warning is
    /// due now.
    fn hit(&mut self, items: u64) -> Option<(u64, u64)> {
        self.batches += 1;
        self.items += items;
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < LOG_EVERY)
        {
            return None;
        }
        self.last = Some(now);
        Some((
            std::mem::take(&mut self.batches),
            std::mem::take(&mut self.items),
        ))
    }
}

/// What the [`SinkSet`] and a sink's task share.
struct Shared {
    name: String,
    stats: Arc<SinkStats>,
    /// Items queued or being delivered: what an abort at shutdown drops.
    in_flight: AtomicU64,
}

struct SinkHandle {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Arc<FlushBatch>>,
    task: JoinHandle<()>,
    /// Rate limit for "queue full" warnings from [`SinkSet::submit`].
    full_log: Mutex<LogLimiter>,
}

/// The running sinks: one task and one bounded queue each.
pub struct SinkSet {
    sinks: Vec<SinkHandle>,
}

impl fmt::Debug for SinkSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.sinks.iter().map(|s| &s.shared.name))
            .finish()
    }
}

impl SinkSet {
    /// Validates every config (names, `${ENV}` secrets, urls, durations) and spawns one tokio
    /// task per sink with a queue of [`QUEUE_BATCHES`]. `interval` is the flush interval: the
    /// deadline for delivering one batch and twice the longest per-attempt timeout.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn start(configs: &[SinkConfig], interval: Duration) -> Result<SinkSet, SinkConfigError> {
        let valid = validate_all(configs, interval)?;
        let mut sinks = Vec::with_capacity(valid.len());
        for (i, v) in valid.into_iter().enumerate() {
            let shared = Arc::new(Shared {
                name: v.name,
                stats: Arc::new(SinkStats::default()),
                in_flight: AtomicU64::new(0),
            });
            let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
            let task = Task {
                rx,
                tag: sink_tag(&shared.name),
                shared: Arc::clone(&shared),
                max_retries: v.max_retries,
                interval,
                filter: Arc::new(v.filter),
            };
            let build_error =
                |e: reqwest::Error| SinkConfigError::new(format!("sinks[{i}]"), e.to_string());
            let task = match v.kind {
                ValidKind::Console(s) => {
                    tokio::spawn(run_sink(console::ConsoleSink::new(s, v.timeout), task))
                }
                ValidKind::Http(s) => tokio::spawn(run_sink(
                    http::HttpSink::new(s, v.timeout).map_err(build_error)?,
                    task,
                )),
                ValidKind::Datadog(s) => tokio::spawn(run_sink(
                    datadog::DatadogSink::new(s, v.timeout).map_err(build_error)?,
                    task,
                )),
                ValidKind::PrometheusRemoteWrite(s) => tokio::spawn(run_sink(
                    prometheus_remote_write::RemoteWriteSink::new(s, v.timeout)
                        .map_err(build_error)?,
                    task,
                )),
                ValidKind::Influxdb(s) => tokio::spawn(run_sink(
                    influxdb::InfluxdbSink::new(s, v.timeout).map_err(build_error)?,
                    task,
                )),
                ValidKind::Prometheus(s) => {
                    let sink =
                        prometheus_scrape::ScrapeSink::start(s, &shared.name).map_err(|e| {
                            SinkConfigError::new(
                                format!("sinks[{i}].listen"),
                                format!("cannot bind: {e}"),
                            )
                        })?;
                    tokio::spawn(run_sink(sink, task))
                }
            };
            tracing::info!(sink = %shared.name, timeout = ?v.timeout, max_retries = v.max_retries, "sink started");
            sinks.push(SinkHandle {
                shared,
                tx,
                task,
                full_log: Mutex::new(LogLimiter::default()),
            });
        }
        Ok(SinkSet { sinks })
    }

    /// Validates only (for `meterd check-config`): no tasks, no clients, no runtime needed.
    pub fn validate(configs: &[SinkConfig], interval: Duration) -> Result<(), SinkConfigError> {
        validate_all(configs, interval).map(drop)
    }

    /// Hands `batch` to every sink without blocking or awaiting. A sink whose queue is full (or
    /// whose task has ended) drops the batch: counted in `dropped`, warned about at most once
    /// per sink per 10 s.
    pub fn submit(&self, batch: Arc<FlushBatch>) {
        let items = batch.len() as u64;
        for sink in &self.sinks {
            // Count before sending: the task may finish the batch before `try_send` returns.
            sink.shared.in_flight.fetch_add(items, Ordering::Relaxed);
            let reason = match sink.tx.try_send(Arc::clone(&batch)) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Full(_)) => "queue full",
                Err(mpsc::error::TrySendError::Closed(_)) => "sink stopped",
            };
            sink.shared.in_flight.fetch_sub(items, Ordering::Relaxed);
            sink.shared
                .stats
                .dropped
                .fetch_add(items, Ordering::Relaxed);
            let report = sink
                .full_log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .hit(items);
            if let Some((batches, items)) = report {
                tracing::warn!(
                    sink = %sink.shared.name,
                    dropped_batches = batches,
                    dropped_items = items,
                    "sink is falling behind ({reason}), batches dropped"
                );
            }
        }
    }

    /// `(name, stats)` per sink in config order, for self-metrics and health checks.
    pub fn stats(&self) -> Vec<(String, Arc<SinkStats>)> {
        self.sinks
            .iter()
            .map(|s| (s.shared.name.clone(), Arc::clone(&s.shared.stats)))
            .collect()
    }

    /// Closes the queues and lets each sink deliver what it holds, waiting at most `timeout`
    /// overall; sinks still busy then are aborted and their queued and in-progress items
    /// counted as dropped.
    pub async fn shutdown(self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut tasks = Vec::with_capacity(self.sinks.len());
        for sink in self.sinks {
            drop(sink.tx);
            tasks.push((sink.shared, sink.task));
        }
        for (shared, mut task) in tasks {
            let finished = tokio::time::timeout_at(deadline, &mut task).await;
            let result = match finished {
                Ok(result) => result,
                Err(_elapsed) => {
                    task.abort();
                    let result = task.await;
                    let lost = shared.in_flight.swap(0, Ordering::Relaxed);
                    shared.stats.dropped.fetch_add(lost, Ordering::Relaxed);
                    if lost > 0 {
                        shared.stats.last_ok.store(false, Ordering::Relaxed);
                    }
                    tracing::warn!(
                        sink = %shared.name,
                        dropped_items = lost,
                        "sink did not finish within the shutdown timeout, aborted"
                    );
                    result
                }
            };
            if let Err(err) = result {
                if err.is_panic() {
                    tracing::error!(sink = %shared.name, "sink task panicked");
                }
            }
        }
    }
}

/// What [`run_sink`] needs besides the sink itself.
struct Task {
    rx: mpsc::Receiver<Arc<FlushBatch>>,
    shared: Arc<Shared>,
    /// The sink's part of its batches' ids ([`sink_tag`] of its name).
    tag: u32,
    max_retries: u32,
    interval: Duration,
    /// Applied to each batch before encoding.
    filter: Arc<filter::SinkFilter>,
}

/// A sink's task: deliver queued batches one at a time until the queue closes.
async fn run_sink<S: Sink>(mut sink: S, mut task: Task) {
    let shared = Arc::clone(&task.shared);
    let stats = &shared.stats;
    let mut failures = LogLimiter::default();
    while let Some(batch) = task.rx.recv().await {
        // `queued` is what `submit` counted in flight; `items` what this sink is to deliver
        // after its filter (and without checks and events for a metrics-only sink). Items the
        // filter removes are neither sent nor dropped.
        let queued = batch.len() as u64;
        let started = Instant::now();
        // Drawn once per batch, never per attempt: every retry carries the same keys.
        let id = BatchId::next(task.tag);
        // Filtering and encoding are CPU work that grows with the batch (a million points take
        // seconds as gzipped JSON): they run on the blocking pool, never on a runtime thread.
        let encoding = {
            let batch = Arc::clone(&batch);
            let filter = Arc::clone(&task.filter);
            tokio::task::spawn_blocking(move || {
                let view = filter.apply(&batch);
                let items = if S::METRICS_ONLY {
                    view.metrics.len()
                } else {
                    view.len()
                } as u64;
                let encoded = sink.encode(&view, id);
                (sink, encoded, items)
            })
        };
        drop(batch);
        let (encoded, items) = match encoding.await {
            Ok((returned, encoded, items)) => {
                sink = returned;
                (encoded, items)
            }
            Err(err) => {
                // The encoder panicked and took the sink with it: stop, dropping the rest.
                tracing::error!(sink = %shared.name, error = %err, "sink encoder failed, sink stopped");
                task.rx.close();
                let mut lost = queued;
                while let Ok(queued) = task.rx.try_recv() {
                    lost += queued.len() as u64;
                }
                stats.errors.fetch_add(1, Ordering::Relaxed);
                stats.dropped.fetch_add(lost, Ordering::Relaxed);
                stats.last_ok.store(false, Ordering::Relaxed);
                shared.in_flight.fetch_sub(lost, Ordering::Relaxed);
                return;
            }
        };
        let outcome = match encoded {
            Ok(()) => deliver(&mut sink, task.max_retries, started + task.interval, stats).await,
            Err(err) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                Err((err, 0))
            }
        };
        let delivered = sink.delivered().min(items);
        stats.sent.fetch_add(delivered, Ordering::Relaxed);
        match outcome {
            Ok(attempts) => {
                let was_ok = stats.last_ok.swap(true, Ordering::Relaxed);
                if !was_ok {
                    tracing::info!(sink = %shared.name, "sink delivering again");
                }
                tracing::debug!(
                    sink = %shared.name,
                    items,
                    attempts,
                    elapsed = ?started.elapsed(),
                    "batch delivered"
                );
            }
            Err((err, attempts)) => {
                let lost = items - delivered;
                stats.dropped.fetch_add(lost, Ordering::Relaxed);
                stats.last_ok.store(false, Ordering::Relaxed);
                if let Some((batches, dropped_items)) = failures.hit(lost) {
                    tracing::warn!(
                        sink = %shared.name,
                        error = %err,
                        attempts,
                        failed_batches = batches,
                        dropped_items,
                        "sink delivery failed, batch dropped"
                    );
                }
            }
        }
        shared.in_flight.fetch_sub(queued, Ordering::Relaxed);
    }
}

/// Sends the encoded batch until it is delivered, a permanent error occurs,
/// `1 + max_retries` attempts have failed or `deadline` passes. Returns the attempts made.
async fn deliver<S: Sink>(
    sink: &mut S,
    max_retries: u32,
    deadline: Instant,
    stats: &SinkStats,
) -> Result<u32, (SinkError, u32)> {
    let mut backoff = Backoff::new();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let err = match tokio::time::timeout_at(deadline, sink.send()).await {
            Ok(Ok(())) => return Ok(attempts),
            Ok(Err(err)) => err,
            Err(_elapsed) => SinkError::Timeout(remaining),
        };
        stats.errors.fetch_add(1, Ordering::Relaxed);
        if !err.is_retryable() || attempts > max_retries {
            return Err((err, attempts));
        }
        let delay = backoff.next_delay();
        if Instant::now() + delay >= deadline {
            return Err((err, attempts));
        }
        tracing::debug!(error = %err, attempts, ?delay, "attempt failed, retrying");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::testing::{http_config, sample_batch, stat, wait_for, Answer, CaptureServer};

    #[tokio::test]
    async fn filters_apply_before_encoding() {
        let server = CaptureServer::start(Answer::Status(200)).await;
        let config = http_config(
            &server.url,
            "include = [\"api.req\"]\ndrop_tags = [\"route\"]\ntags = [\"sink:x\"]",
        );
        let set = SinkSet::start(&[config], Duration::from_secs(2)).expect("starts");
        let (_, stats) = set.stats().remove(0);
        set.submit(Arc::new(sample_batch()));
        // One point and the event (events have no name to filter by); the check is filtered.
        wait_for(Duration::from_secs(3), "delivery", || {
            stat(&stats, "sent") == 2
        })
        .await;
        let doc = server.requests()[0].json();
        assert_eq!(doc["metrics"].as_array().map(Vec::len), Some(1));
        assert_eq!(doc["metrics"][0]["name"], "api.requests");
        assert_eq!(
            doc["metrics"][0]["tags"],
            serde_json::json!(["env:prod", "sink:x"])
        );
        assert_eq!(doc["service_checks"], serde_json::json!([]));
        assert_eq!(doc["events"][0]["tags"], serde_json::json!(["sink:x"]));
        assert_eq!(stat(&stats, "dropped"), 0);
        set.shutdown(Duration::from_secs(1)).await;
    }

    #[test]
    fn stats_start_healthy() {
        let stats = SinkStats::default();
        assert!(stats.last_ok.load(Ordering::Relaxed));
        assert_eq!(
            stat(&stats, "sent") + stat(&stats, "errors") + stat(&stats, "dropped"),
            0
        );
    }

    #[test]
    fn log_limiter_counts_suppressed() {
        let mut limiter = LogLimiter::default();
        assert_eq!(limiter.hit(5), Some((1, 5)));
        assert_eq!(limiter.hit(3), None);
        assert_eq!(limiter.hit(2), None);
        limiter.last = std::time::Instant::now().checked_sub(LOG_EVERY);
        assert_eq!(limiter.hit(1), Some((3, 6)));
    }

    #[tokio::test]
    async fn delivered_batch_counts_sent() {
        let server = CaptureServer::start(Answer::Status(200)).await;
        let set = SinkSet::start(&[http_config(&server.url, "")], Duration::from_secs(2))
            .expect("starts");
        let stats = set.stats();
        assert_eq!(stats[0].0, "http");
        set.submit(Arc::new(sample_batch()));
        wait_for(Duration::from_secs(3), "delivery", || {
            stat(&stats[0].1, "sent") == 4
        })
        .await;
        assert_eq!(stat(&stats[0].1, "errors"), 0);
        assert_eq!(server.count(), 1);
        set.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn server_errors_are_retried_then_dropped() {
        let server = CaptureServer::start(Answer::Status(500)).await;
        let config = http_config(&server.url, "max_retries = 2\ntimeout = \"300ms\"");
        let set = SinkSet::start(&[config], Duration::from_secs(3)).expect("starts");
        let (_, stats) = set.stats().remove(0);
        set.submit(Arc::new(sample_batch()));
        wait_for(Duration::from_secs(4), "drop", || {
            stat(&stats, "dropped") == 4
        })
        .await;
        assert_eq!(server.count(), 3, "1 attempt + 2 retries");
        assert_eq!(stat(&stats, "errors"), 3);
        assert_eq!(stat(&stats, "sent"), 0);
        assert!(!stats.last_ok.load(Ordering::Relaxed));
        set.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn retry_then_success_recovers() {
        let server = CaptureServer::start(Answer::FailFirst(1)).await;
        let set = SinkSet::start(&[http_config(&server.url, "")], Duration::from_secs(3))
            .expect("starts");
        let (_, stats) = set.stats().remove(0);
        set.submit(Arc::new(sample_batch()));
        wait_for(Duration::from_secs(4), "delivery", || {
            stat(&stats, "sent") == 4
        })
        .await;
        assert_eq!(stat(&stats, "errors"), 1);
        assert_eq!(stat(&stats, "dropped"), 0);
        assert!(stats.last_ok.load(Ordering::Relaxed));
        assert_eq!(server.count(), 2);
        set.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        let server = CaptureServer::start(Answer::Status(400)).await;
        let set = SinkSet::start(&[http_config(&server.url, "")], Duration::from_secs(3))
            .expect("starts");
        let (_, stats) = set.stats().remove(0);
        set.submit(Arc::new(sample_batch()));
        wait_for(Duration::from_secs(3), "drop", || {
            stat(&stats, "dropped") == 4
        })
        .await;
        assert_eq!(server.count(), 1);
        assert_eq!(stat(&stats, "errors"), 1);
        assert!(!stats.last_ok.load(Ordering::Relaxed));
        set.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn connection_refused_is_retried() {
        // Bind then drop a listener: its port now refuses connections.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let set = SinkSet::start(
            &[http_config(&url, "max_retries = 1")],
            Duration::from_secs(3),
        )
        .expect("starts");
        let (_, stats) = set.stats().remove(0);
        set.submit(Arc::new(sample_batch()));
        wait_for(Duration::from_secs(4), "drop", || {
            stat(&stats, "dropped") == 4
        })
        .await;
        assert_eq!(stat(&stats, "errors"), 2);
        set.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn hanging_sink_does_not_delay_a_healthy_one() {
        let hang = CaptureServer::start(Answer::Hang).await;
        let ok = CaptureServer::start(Answer::Status(200)).await;
        let configs = [
            http_config(&hang.url, "name = \"stuck\"\ntimeout = \"400ms\""),
            http_config(&ok.url, "name = \"fine\""),
        ];
        let set = SinkSet::start(&configs, Duration::from_secs(1)).expect("starts");
        let stats = set.stats();
        let started = Instant::now();
        set.submit(Arc::new(sample_batch()));
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "submit blocked"
        );
        wait_for(Duration::from_secs(1), "healthy delivery", || {
            stat(&stats[1].1, "sent") == 4
        })
        .await;
        // Delivered before the stuck sink's first attempt even timed out.
        assert_eq!(stat(&stats[0].1, "errors"), 0, "healthy sink waited");
        assert!(started.elapsed() < Duration::from_millis(400));
        wait_for(Duration::from_secs(3), "stuck sink gives up", || {
            stat(&stats[0].1, "dropped") == 4
        })
        .await;
        assert!(stat(&stats[0].1, "errors") >= 2, "timeouts are retried");
        assert!(hang.count() >= 2);
        assert!(!stats[0].1.last_ok.load(Ordering::Relaxed));
        assert!(stats[1].1.last_ok.load(Ordering::Relaxed));
        assert_eq!(stat(&stats[1].1, "dropped"), 0);
        set.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn submit_never_blocks_and_counts_a_full_queue() {
        let hang = CaptureServer::start(Answer::Hang).await;
        let set = SinkSet::start(
            &[http_config(&hang.url, "timeout = \"2s\"")],
            Duration::from_secs(10),
        )
        .expect("starts");
        let (_, stats) = set.stats().remove(0);
        let batch = Arc::new(sample_batch());
        set.submit(Arc::clone(&batch));
        wait_for(Duration::from_secs(2), "first request", || {
            hang.count() == 1
        })
        .await;
        let started = Instant::now();
        for _ in 0..QUEUE_BATCHES + 1 {
            set.submit(Arc::clone(&batch));
        }
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "submit blocked"
        );
        assert_eq!(stat(&stats, "dropped"), 4, "exactly one batch did not fit");
        // The stuck batch and the queued ones are dropped when shutdown gives up.
        let started = Instant::now();
        set.shutdown(Duration::from_millis(200)).await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(stat(&stats, "dropped"), 4 * (QUEUE_BATCHES as u64 + 2));
        assert_eq!(stat(&stats, "sent"), 0);
    }

    #[tokio::test]
    async fn shutdown_lets_queued_batches_finish() {
        let server = CaptureServer::start(Answer::Status(200)).await;
        let set = SinkSet::start(&[http_config(&server.url, "")], Duration::from_secs(2))
            .expect("starts");
        let (_, stats) = set.stats().remove(0);
        set.submit(Arc::new(sample_batch()));
        set.submit(Arc::new(sample_batch()));
        set.shutdown(Duration::from_secs(2)).await;
        assert_eq!(stat(&stats, "sent"), 8);
        assert_eq!(server.count(), 2);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut backoff = Backoff::new();
        let mut step = INITIAL_BACKOFF;
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} outside {step:?}"
            );
            step = (step * 2).min(MAX_BACKOFF);
        }
        assert_eq!(backoff.step, MAX_BACKOFF);
    }

    #[test]
    fn backoff_is_jittered() {
        let delays: Vec<Duration> = (0..8).map(|_| Backoff::new().next_delay()).collect();
        assert!(
            delays.iter().any(|d| *d != delays[0]),
            "8 fresh backoffs gave the same delay: {delays:?}"
        );
    }
}
