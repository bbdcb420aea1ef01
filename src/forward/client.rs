//! The local side: route each forwarded series to one global by rendezvous hashing, and deliver
//! per global from its own task with a bounded buffer of undelivered intervals.
//!
//! Every flush is one numbered interval. Its payload for a global is split into parts of at most
//! [`MAX_PART_SERIES`] series, each encoded once into a body that names it (this process's
//! [`instance_id`], the interval, the part): a retry sends the same bytes, and a global that
//! already merged that identity answers success without merging again (`docs/fleet.md#exactly-once`).
//! Parts are delivered in order, one request at a time per global.
//!
//! A global that fails [`LEAVE_AFTER`] forwards in a row leaves the ring (new series go to the
//! others by the same hashing) until its `/healthz` answers again; what it could not take stays
//! in its buffer (the last `buffer_intervals` intervals, older ones dropped and counted) and is
//! replayed on recovery. Nothing here ever blocks the flusher: `submit` only `try_send`s.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::proto::{ForwardBatch, SeriesState, SloCount, VERSION};
use crate::instance::instance_id;
use crate::sinks::SinkError;

/// Consecutive failed forwards after which a global leaves the ring.
pub const LEAVE_AFTER: u32 = 3;

/// Series per request: a large interval goes as several parts, each retried on its own, so one
/// body stays well inside a global's `http.max_body_bytes`.
pub const MAX_PART_SERIES: usize = 10_000;

/// Counters and ring state of one global.
#[derive(Debug)]
pub struct GlobalStats {
    /// Base URL (the `global:` tag on self-metrics).
    pub url: String,
    /// Series delivered.
    pub sent: AtomicU64,
    /// Failed requests.
    pub errors: AtomicU64,
    /// Series dropped (buffer overflow, or a permanent refusal).
    pub dropped: AtomicU64,
    /// In the ring: not failed [`LEAVE_AFTER`] times in a row since it last answered.
    pub in_ring: AtomicBool,
    /// Consecutive failures.
    pub failures: AtomicU32,
    /// The last delivery attempt succeeded (or none was needed yet).
    pub last_ok: AtomicBool,
    seed: u64,
}

/// One interval's worth for one global, as the flush hands it over.
#[derive(Debug, Default)]
struct Payload {
    /// The interval's number (the identity's `interval`).
    interval: u64,
    series: Vec<SeriesState>,
    health_results: Vec<String>,
    slo_counts: Vec<SloCount>,
}

/// One part of an interval, encoded once: every attempt sends these bytes.
#[derive(Debug)]
struct Part {
    interval: u64,
    series: u64,
    body: bytes::Bytes,
}

/// Settings of the forwarder.
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// Global base URLs.
    pub globals: Vec<String>,
    /// Intervals kept per global while it is unreachable.
    pub buffer_intervals: usize,
    /// Bearer token, empty for none.
    pub token: String,
    /// Flush interval: the retry and probe period, and the bound on one delivery.
    pub interval: Duration,
    /// This host (the batch's `source`).
    pub source: String,
    /// `[forward]` TLS for `https://` globals; `None` = reqwest's defaults.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// The HTTP client every delivery task uses; SIGHUP swaps in one with re-read certificates
/// (connections of the old one are not reused).
type SharedClient = Arc<RwLock<reqwest::Client>>;

/// Routes and delivers forwarded state.
pub struct Forwarder {
    globals: Vec<Arc<GlobalStats>>,
    queues: Vec<mpsc::Sender<Payload>>,
    tasks: Vec<JoinHandle<()>>,
    /// The last interval number handed out.
    intervals: AtomicU64,
    client: SharedClient,
    client_timeout: Duration,
}

/// splitmix64's finaliser: a strong 64-bit mix for rendezvous scores.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Rendezvous (highest random weight) choice among `seeds` whose `eligible` is true: adding or
/// removing one of N targets moves only the series that belong to it (about 1/N).
pub fn rendezvous(hash: u64, seeds: &[u64], eligible: impl Fn(usize) -> bool) -> Option<usize> {
    seeds
        .iter()
        .enumerate()
        .filter(|(i, _)| eligible(*i))
        .max_by_key(|(_, &seed)| mix(hash ^ seed))
        .map(|(i, _)| i)
}

fn seed_of(url: &str) -> u64 {
    use std::hash::BuildHasher;
    mix(foldhash::quality::FixedState::with_seed(0x676c_6f62).hash_one(url))
}

impl Forwarder {
    /// Spawns one delivery task per global. Needs a tokio runtime.
    pub fn start(cfg: ForwarderConfig) -> Forwarder {
        let client_timeout = (cfg.interval / 2).min(Duration::from_secs(5));
        let client =
            crate::tls::forward_client(client_timeout, cfg.tls.as_ref()).unwrap_or_else(|e| {
                tracing::error!(error = %e, "forwarding without the configured TLS");
                reqwest::Client::default()
            });
        let client: SharedClient = Arc::new(RwLock::new(client));
        let mut globals = Vec::new();
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for url in &cfg.globals {
            let stats = Arc::new(GlobalStats {
                url: url.clone(),
                sent: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                in_ring: AtomicBool::new(true),
                failures: AtomicU32::new(0),
                last_ok: AtomicBool::new(true),
                seed: seed_of(url),
            });
            let (tx, rx) = mpsc::channel(cfg.buffer_intervals.max(1));
            tasks.push(tokio::spawn(deliver(
                rx,
                stats.clone(),
                client.clone(),
                cfg.clone(),
            )));
            globals.push(stats);
            queues.push(tx);
        }
        Forwarder {
            globals,
            queues,
            tasks,
            intervals: AtomicU64::new(0),
            client,
            client_timeout,
        }
    }

    /// Rebuilds the HTTP client with `tls` (SIGHUP, after re-reading `[forward]`'s PEM files);
    /// deliveries use it from their next attempt. A client that cannot be built leaves the
    /// running one in place.
    pub fn reload_client(&self, tls: Option<&Arc<rustls::ClientConfig>>) {
        match crate::tls::forward_client(self.client_timeout, tls) {
            Ok(c) => *self.client.write().unwrap_or_else(PoisonError::into_inner) = c,
            Err(e) => tracing::error!(error = %e, "SIGHUP: keeping the running forward client"),
        }
    }

    /// The global a series hash goes to: by rendezvous over the globals in the ring, or over
    /// all of them when none is (so the state waits in that global's buffer).
    pub fn route(&self, hash: u64) -> usize {
        let seeds: Vec<u64> = self.globals.iter().map(|g| g.seed).collect();
        rendezvous(hash, &seeds, |i| {
            self.globals
                .get(i)
                .is_some_and(|g| g.in_ring.load(Ordering::Relaxed))
        })
        .or_else(|| rendezvous(hash, &seeds, |_| true))
        .unwrap_or(0)
    }

    /// Hands one interval's series (with their key hashes) and health results to the globals;
    /// health results go to every global (each keeps the fleet view). Never blocks: a global
    /// whose queue is full loses this interval, counted. Every global hears of every interval
    /// (an empty one too), so each ages its buffer by intervals, not by payloads.
    ///
    /// SLO counts, like health results, go to every global: each evaluates the fleet's SLOs.
    pub fn submit(
        &self,
        series: Vec<(u64, SeriesState)>,
        health_results: Vec<String>,
        slo_counts: Vec<SloCount>,
    ) {
        let interval = self.intervals.fetch_add(1, Ordering::Relaxed) + 1;
        let mut payloads: Vec<Payload> = self
            .globals
            .iter()
            .map(|_| Payload {
                interval,
                ..Payload::default()
            })
            .collect();
        for (hash, s) in series {
            if let Some(p) = payloads.get_mut(self.route(hash)) {
                p.series.push(s);
            }
        }
        for p in payloads.iter_mut() {
            p.health_results = health_results.clone();
            p.slo_counts = slo_counts.clone();
        }
        for ((p, q), g) in payloads.into_iter().zip(&self.queues).zip(&self.globals) {
            let n = p.series.len() as u64;
            if q.try_send(p).is_err() {
                g.dropped.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Per-global counters.
    pub fn stats(&self) -> &[Arc<GlobalStats>] {
        &self.globals
    }

    /// Closes the queues and waits (at most `timeout`) for each task's last delivery attempt.
    pub async fn shutdown(self, timeout: Duration) {
        drop(self.queues);
        let all = futures_join(self.tasks);
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!("forwarding did not finish within the shutdown timeout");
        }
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// What every part of this process's forwards carries beside its series.
#[derive(Debug, Clone)]
struct Sender {
    source: String,
    window: u32,
    interval_ms: u64,
}

/// Splits one interval's payload into parts and encodes each (gzip) with its identity. Runs on a
/// blocking thread: a large flush takes milliseconds. Health results ride in the first part.
fn encode_parts(p: Payload, sender: &Sender) -> Vec<Part> {
    let Payload {
        interval,
        series,
        health_results,
        slo_counts,
    } = p;
    let parts = series.len().div_ceil(MAX_PART_SERIES).max(1);
    let mut out = Vec::with_capacity(parts);
    let mut health_results = Some(health_results);
    let mut slo_counts = Some(slo_counts);
    // Taken from the front without shifting what is left (`drain(..n)` would, once per part).
    let mut series = series.into_iter();
    for part in 0..parts {
        let chunk: Vec<SeriesState> = series.by_ref().take(MAX_PART_SERIES).collect();
        let batch = ForwardBatch {
            version: VERSION,
            source: sender.source.clone(),
            series: chunk,
            health_results: health_results.take().unwrap_or_default(),
            slo_counts: slo_counts.take().unwrap_or_default(),
            sender: instance_id().to_owned(),
            interval,
            part: u32::try_from(part).unwrap_or(u32::MAX),
            parts: u32::try_from(parts).unwrap_or(u32::MAX),
            window: sender.window,
            interval_ms: sender.interval_ms,
        };
        let raw = batch.encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 4 + 64),
            flate2::Compression::fast(),
        );
        // Writing into a Vec cannot fail.
        let _ = gz.write_all(&raw);
        out.push(Part {
            interval,
            series: batch.series.len() as u64,
            body: gz.finish().unwrap_or_default().into(),
        });
    }
    out
}

enum Outcome {
    Delivered,
    /// Worth retrying next interval.
    Retry(String),
    /// The global refused it (4xx other than 429): retrying cannot help.
    Refused(String),
}

async fn post(client: &reqwest::Client, url: &str, token: &str, body: bytes::Bytes) -> Outcome {
    let mut req = client
        .post(format!("{url}/import"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "gzip")
        .body(body);
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    match req.send().await {
        Ok(r) if r.status().is_success() => Outcome::Delivered,
        Ok(r) => {
            let why = format!("status {}", r.status());
            // The sinks' classification: 429 and 5xx are worth another try, the rest is refused.
            if SinkError::Status(r.status()).is_retryable() {
                Outcome::Retry(why)
            } else {
                Outcome::Refused(why)
            }
        }
        // Every transport failure (connect, timeout, a request reqwest could not build) is
        // retried next interval.
        Err(e) => Outcome::Retry(e.without_url().to_string()),
    }
}

async fn healthy(client: &reqwest::Client, url: &str) -> bool {
    client
        .get(format!("{url}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn deliver(
    mut rx: mpsc::Receiver<Payload>,
    g: Arc<GlobalStats>,
    shared_client: SharedClient,
    cfg: ForwarderConfig,
) {
    let sender = Sender {
        source: cfg.source.clone(),
        window: u32::try_from(cfg.buffer_intervals).unwrap_or(u32::MAX),
        interval_ms: u64::try_from(cfg.interval.as_millis()).unwrap_or(u64::MAX),
    };
    let mut buffer: VecDeque<Part> = VecDeque::new();
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_warn: Option<Instant> = None;
    let mut open = true;
    while open {
        tokio::select! {
            p = rx.recv() => match p {
                Some(p) => {
                    let interval = p.interval;
                    if !p.series.is_empty() || !p.health_results.is_empty() || !p.slo_counts.is_empty() {
                        let sender = sender.clone();
                        let parts = tokio::task::spawn_blocking(move || encode_parts(p, &sender))
                            .await
                            .unwrap_or_default();
                        buffer.extend(parts);
                    }
                    // Keep the last `buffer_intervals` intervals (the window a global remembers).
                    let oldest_kept = interval.saturating_sub(cfg.buffer_intervals as u64);
                    while buffer.front().is_some_and(|old| old.interval <= oldest_kept) {
                        if let Some(old) = buffer.pop_front() {
                            g.dropped.fetch_add(old.series, Ordering::Relaxed);
                        }
                    }
                }
                None => open = false,
            },
            _ = ticker.tick() => {}
        }
        if buffer.is_empty() {
            continue;
        }
        let client = shared_client
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if !g.in_ring.load(Ordering::Relaxed) {
            if !healthy(&client, &g.url).await {
                continue;
            }
            tracing::info!(global = %g.url, "global answers /healthz again; rejoining the ring");
            g.in_ring.store(true, Ordering::Relaxed);
            g.failures.store(0, Ordering::Relaxed);
        }
        while let Some(p) = buffer.front() {
            let n = p.series;
            match post(&client, &g.url, &cfg.token, p.body.clone()).await {
                Outcome::Delivered => {
                    buffer.pop_front();
                    g.sent.fetch_add(n, Ordering::Relaxed);
                    g.failures.store(0, Ordering::Relaxed);
                    g.last_ok.store(true, Ordering::Relaxed);
                }
                Outcome::Refused(why) => {
                    buffer.pop_front();
                    g.errors.fetch_add(1, Ordering::Relaxed);
                    g.dropped.fetch_add(n, Ordering::Relaxed);
                    g.last_ok.store(false, Ordering::Relaxed);
                    tracing::error!(global = %g.url, series = n, error = %why, "global refused a forward; dropped");
                }
                Outcome::Retry(why) => {
                    g.errors.fetch_add(1, Ordering::Relaxed);
                    g.last_ok.store(false, Ordering::Relaxed);
                    let failures = g.failures.fetch_add(1, Ordering::Relaxed) + 1;
                    if failures >= LEAVE_AFTER && g.in_ring.swap(false, Ordering::Relaxed) {
                        tracing::warn!(global = %g.url, failures, "global leaves the ring until /healthz answers");
                    }
                    if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(global = %g.url, error = %why, buffered = buffer.len(), "forward failed; will retry");
                        last_warn = Some(Instant::now());
                    }
                    break;
                }
            }
        }
    }
    let left: u64 = buffer.iter().map(|p| p.series).sum();
    if left > 0 {
        g.dropped.fetch_add(left, Ordering::Relaxed);
        tracing::warn!(global = %g.url, series = left, "undelivered at shutdown; dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A large interval goes as numbered parts of at most `MAX_PART_SERIES` series, in order,
    /// each naming this process, the interval and the part count; health results in part 0.
    #[test]
    fn an_interval_is_split_into_identified_parts() {
        use prost::Message as _;
        use std::io::Read as _;
        let series: Vec<SeriesState> = (0..2 * MAX_PART_SERIES + 1)
            .map(|i| SeriesState {
                name: format!("s{i}"),
                ..SeriesState::default()
            })
            .collect();
        let payload = Payload {
            interval: 7,
            series,
            health_results: vec!["{}".to_owned()],
            slo_counts: vec![SloCount {
                name: "api".to_owned(),
                good: 1.0,
                total: 2.0,
            }],
        };
        let sender = Sender {
            source: "local-1".to_owned(),
            window: 3,
            interval_ms: 10_000,
        };
        let parts = encode_parts(payload, &sender);
        let mut names = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(&p.body[..])
                .read_to_end(&mut raw)
                .expect("gzip");
            let b = ForwardBatch::decode(&raw[..]).expect("a forward batch");
            assert_eq!((p.interval, b.interval), (7, 7));
            assert_eq!((b.part, b.parts), (i as u32, 3));
            assert_eq!((b.window, b.interval_ms), (3, 10_000));
            assert_eq!(b.sender, instance_id());
            assert_eq!(b.source, "local-1");
            assert_eq!(b.health_results.len(), usize::from(i == 0));
            assert_eq!(b.slo_counts.len(), usize::from(i == 0));
            assert_eq!(p.series, b.series.len() as u64);
            names.extend(b.series.into_iter().map(|s| s.name));
        }
        let sizes: Vec<u64> = parts.iter().map(|p| p.series).collect();
        assert_eq!(sizes, [MAX_PART_SERIES as u64, MAX_PART_SERIES as u64, 1]);
        let want: Vec<String> = (0..2 * MAX_PART_SERIES + 1)
            .map(|i| format!("s{i}"))
            .collect();
        assert_eq!(names, want, "every series once, in order");
    }

    #[test]
    fn adding_a_global_moves_about_one_in_n() {
        let three: Vec<u64> = ["http://g1:8127", "http://g2:8127", "http://g3:8127"]
            .iter()
            .map(|u| seed_of(u))
            .collect();
        let mut four = three.clone();
        four.push(seed_of("http://g4:8127"));
        let n = 20_000u64;
        let mut moved = 0;
        let mut per = [0u64; 4];
        for i in 0..n {
            let h = mix(i);
            let a = rendezvous(h, &three, |_| true).unwrap();
            let b = rendezvous(h, &four, |_| true).unwrap();
            per[b] += 1;
            if a != b {
                moved += 1;
                assert_eq!(b, 3, "a moved series only ever moves to the new global");
            }
        }
        let frac = moved as f64 / n as f64;
        assert!((frac - 0.25).abs() < 0.02, "moved {frac}");
        for c in per {
            assert!((c as f64 / n as f64 - 0.25).abs() < 0.02, "{per:?}");
        }
    }

    #[test]
    fn leaving_the_ring_moves_only_its_series() {
        let seeds: Vec<u64> = (0..3).map(|i| seed_of(&format!("http://g{i}"))).collect();
        for i in 0..5000u64 {
            let h = mix(i);
            let all = rendezvous(h, &seeds, |_| true).unwrap();
            let without_1 = rendezvous(h, &seeds, |j| j != 1).unwrap();
            if all != 1 {
                assert_eq!(all, without_1);
            }
        }
    }
}
