//! Sinks: where each flush goes (SPEC §4).
//!
//! The flusher builds one [`FlushBatch`] per interval and hands it to [`SinkSet::submit`], which
//! never blocks: every sink runs in its own tokio task behind a bounded queue of
//! [`QUEUE_BATCHES`] batches, encodes a batch once, then delivers it with a per-attempt timeout,
//! retries with backoff (`retry.rs`) and an overall deadline of one interval. A sink that is slow,
//! hangs or fails only loses its own batches, counted in its [`SinkStats`]; it never delays
//! ingest, the flusher or the other sinks.
//!
//! Configuration is one [`SinkConfig`] per `[[sinks]]` table, tagged by `type`. Values written as
//! `"${NAME}"` in `url`, `api_key`, tokens, passwords and header values are read from the
//! environment when the configuration is validated; secrets never appear in `Debug` output,
//! errors or logs. Every sink also takes the filter keys `include`, `exclude`, `drop_tags` and
//! `tags` (`filter.rs`), applied to the batch before the sink encodes it.

mod console;
mod datadog;
mod filter;
mod http;
mod influxdb;
mod prom_series;
mod prometheus_remote_write;
mod prometheus_scrape;
mod retry;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::point::FlushBatch;
use crate::units::parse_duration;

pub use console::{ConsoleConfig, ConsoleFormat};
pub use datadog::DatadogConfig;
pub use http::HttpConfig;
pub use influxdb::InfluxdbConfig;
pub use prometheus_remote_write::{proto as remote_write_proto, PrometheusRemoteWriteConfig};
pub use prometheus_scrape::PrometheusConfig;

/// Batches each sink's queue holds besides the one it is delivering; a batch arriving at a full
/// queue is dropped for that sink (and counted), so a slow sink is never more than this many
/// flushes behind.
pub const QUEUE_BATCHES: usize = 2;

/// At most one warning per sink and kind of trouble in this period; the rest are counted into it.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Default per-attempt timeout, before clamping to half the interval.
const DEFAULT_TIMEOUT: &str = "5s";

/// Default `expire_after` of the Prometheus sinks.
const DEFAULT_EXPIRE_AFTER: &str = "5m";

/// One `[[sinks]]` table, tagged by its `type` key; unknown keys are rejected.
///
/// Serialises as an internally tagged enum. Deserialisation is written by hand (same shape) so
/// that errors are raised while the table is being read, and toml reports the line of the
/// offending `[[sinks]]` table rather than of the whole array.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    /// Human-readable table or one JSON object per flush on stdout.
    Console(ConsoleConfig),
    /// SPEC §4's JSON document POSTed to any URL.
    Http(HttpConfig),
    /// Datadog's v1 API (`series`, `check_run`, `events`), or anything speaking it.
    Datadog(DatadogConfig),
    /// Prometheus remote write 1.0 (protobuf, snappy).
    PrometheusRemoteWrite(PrometheusRemoteWriteConfig),
    /// InfluxDB line protocol to 1.x `/write` or 2.x `/api/v2/write`.
    Influxdb(InfluxdbConfig),
    /// A Prometheus scrape endpoint serving the last flush.
    Prometheus(PrometheusConfig),
}

impl Default for SinkConfig {
    /// The embedded default: one `console` sink printing tables.
    fn default() -> Self {
        SinkConfig::Console(ConsoleConfig::default())
    }
}

/// The `type` values, for "unknown variant" errors.
const SINK_TYPES: &[&str] = &[
    "console",
    "http",
    "datadog",
    "prometheus_remote_write",
    "influxdb",
    "prometheus",
];

impl<'de> Deserialize<'de> for SinkConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(SinkConfigVisitor)
    }
}

struct SinkConfigVisitor;

impl<'de> serde::de::Visitor<'de> for SinkConfigVisitor {
    type Value = SinkConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sink table with a `type` key")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<SinkConfig, A::Error> {
        use serde::de::Error as _;
        let mut table =
            toml::Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        let kind = match table.remove("type") {
            Some(toml::Value::String(kind)) => kind,
            Some(other) => {
                return Err(A::Error::invalid_type(
                    serde::de::Unexpected::Other(other.type_str()),
                    &"a sink type string",
                ))
            }
            None => return Err(A::Error::missing_field("type")),
        };
        let rest = toml::Value::Table(table);
        let parsed = match kind.as_str() {
            "console" => ConsoleConfig::deserialize(rest).map(SinkConfig::Console),
            "http" => HttpConfig::deserialize(rest).map(SinkConfig::Http),
            "datadog" => DatadogConfig::deserialize(rest).map(SinkConfig::Datadog),
            "prometheus_remote_write" => PrometheusRemoteWriteConfig::deserialize(rest)
                .map(SinkConfig::PrometheusRemoteWrite),
            "influxdb" => InfluxdbConfig::deserialize(rest).map(SinkConfig::Influxdb),
            "prometheus" => PrometheusConfig::deserialize(rest).map(SinkConfig::Prometheus),
            other => return Err(A::Error::unknown_variant(other, SINK_TYPES)),
        };
        parsed.map_err(|e| A::Error::custom(e.message()))
    }
}

impl SinkConfig {
    /// The `type` key's value: `console`, `http`, `datadog`, `prometheus_remote_write`,
    /// `influxdb` or `prometheus`.
    pub const fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::Console(_) => "console",
            SinkConfig::Http(_) => "http",
            SinkConfig::Datadog(_) => "datadog",
            SinkConfig::PrometheusRemoteWrite(_) => "prometheus_remote_write",
            SinkConfig::Influxdb(_) => "influxdb",
            SinkConfig::Prometheus(_) => "prometheus",
        }
    }

    /// The keys every sink type has.
    fn common(&self) -> CommonKeys<'_> {
        macro_rules! common {
            ($c:expr) => {
                CommonKeys {
                    name: $c.name.as_deref(),
                    timeout: &$c.timeout,
                    max_retries: $c.max_retries,
                    filter: filter::FilterKeys {
                        include: &$c.include,
                        exclude: &$c.exclude,
                        drop_tags: &$c.drop_tags,
                        tags: &$c.tags,
                    },
                }
            };
        }
        match self {
            SinkConfig::Console(c) => common!(c),
            SinkConfig::Http(c) => common!(c),
            SinkConfig::Datadog(c) => common!(c),
            SinkConfig::PrometheusRemoteWrite(c) => common!(c),
            SinkConfig::Influxdb(c) => common!(c),
            SinkConfig::Prometheus(c) => common!(c),
        }
    }
}

/// The keys every sink type has (`name`, `timeout`, `max_retries`, and the filter's
/// `include`, `exclude`, `drop_tags`, `tags`), borrowed from its struct.
///
/// Each sink struct declares these fields itself rather than `#[serde(flatten)]`ing a shared
/// struct, because flattening defeats `deny_unknown_fields`.
struct CommonKeys<'a> {
    name: Option<&'a str>,
    timeout: &'a str,
    max_retries: u32,
    filter: filter::FilterKeys<'a>,
}

/// Default of the Prometheus sinks' `expire_after` key.
fn default_expire_after() -> String {
    DEFAULT_EXPIRE_AFTER.to_owned()
}

/// Parses a positive `expire_after` duration.
fn parse_expire_after(
    value: &str,
    key: &impl Fn(&str) -> String,
) -> Result<Duration, SinkConfigError> {
    let d = parse_duration(value)
        .map_err(|reason| SinkConfigError::new(key("expire_after"), reason))?;
    if d < Duration::from_secs(1) {
        return Err(SinkConfigError::new(
            key("expire_after"),
            "must be at least 1s",
        ));
    }
    Ok(d)
}

/// Unix seconds now (0 before 1970).
fn unix_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Appends a finite value as Prometheus and InfluxDB parse it: integral values below 2^53 as
/// integers (`25`), others in ryu's shortest round-trip form (`12.5`, `1e20`).
fn write_number(out: &mut Vec<u8>, value: f64) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if value.fract() == 0.0 && value.abs() < EXACT {
        // In range and integral: the conversion is exact.
        let n = value as i64;
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    } else {
        out.extend_from_slice(ryu::Buffer::new().format(value).as_bytes());
    }
}

/// Default of every sink's `timeout` key.
fn default_timeout() -> String {
    DEFAULT_TIMEOUT.to_owned()
}

/// Default of every sink's `max_retries` key.
const fn default_max_retries() -> u32 {
    3
}

/// Whether request bodies are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain bodies.
    None,
    /// `Content-Encoding: gzip`.
    Gzip,
}

/// A configuration string that may hold a secret: written literally or as `"${NAME}"`, read
/// from the environment variable NAME at validation.
///
/// `Debug` prints `***`; serialising prints the `${NAME}` reference itself, or `***` for a
/// literal value, so printing an effective config never reveals it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a configured value (literal or `${NAME}`).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The environment variable's name when the value is a `${NAME}` reference.
    pub fn env_reference(&self) -> Option<&str> {
        env_reference(&self.0)
    }

    /// The value with `${NAME}` replaced by the environment variable; `key` names the setting
    /// in the error.
    pub fn resolve(&self, key: impl FnOnce() -> String) -> Result<String, SinkConfigError> {
        resolve_env(&self.0, key)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.env_reference() {
            Some(_) => serializer.serialize_str(&self.0),
            None if self.0.is_empty() => serializer.serialize_str(""),
            None => serializer.serialize_str("***"),
        }
    }
}

/// `NAME` when `value` is exactly `${NAME}` with a non-empty NAME.
fn env_reference(value: &str) -> Option<&str> {
    value
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
        .filter(|name| !name.is_empty())
}

/// Expands a whole-value `${NAME}` from the environment; any other value is returned as is.
fn resolve_env(value: &str, key: impl FnOnce() -> String) -> Result<String, SinkConfigError> {
    let Some(var) = env_reference(value) else {
        return Ok(value.to_owned());
    };
    match std::env::var(var) {
        Ok(v) => Ok(v),
        Err(std::env::VarError::NotPresent) => Err(SinkConfigError::new(
            key(),
            format!("environment variable {var} is not set"),
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(SinkConfigError::new(
            key(),
            format!("environment variable {var} is not valid UTF-8"),
        )),
    }
}

/// A sink configuration that cannot be used; `key` names the setting, as in
/// `sinks[1].url: missing`. Never contains a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct SinkConfigError {
    /// The setting, e.g. `sinks[0].api_key` or `sinks[2].headers.Authorization`.
    pub key: String,
    /// What is wrong with it, lowercase.
    pub reason: String,
}

impl SinkConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        SinkConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Why one delivery attempt failed. Whether another attempt may help is
/// [`SinkError::is_retryable`] (policy in `retry.rs`).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The attempt took longer than the sink's `timeout` (retryable).
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// No connection could be made: refused, DNS, TLS handshake, connect timeout (retryable).
    #[error("connect failed: {0}")]
    Connect(String),
    /// The connection broke while sending or receiving (retryable).
    #[error("request failed: {0}")]
    Request(String),
    /// The request could not be built from the configuration (permanent).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The server answered with a non-2xx status: 429 and 5xx are retryable, the rest permanent.
    #[error("server answered {0}")]
    Status(reqwest::StatusCode),
    /// The batch could not be encoded (permanent).
    #[error("encode failed: {0}")]
    Encode(String),
    /// Writing to stdout failed (permanent unless interrupted).
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
}

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

/// One sink's encoder and transport, driven by [`run_sink`]: encode a batch once, then send it
/// one or more times until it is delivered or given up.
trait Sink: Send + 'static {
    /// Whether the sink delivers metric points only (no service checks or events): then only
    /// points count as its items in [`SinkStats`].
    const METRICS_ONLY: bool = false;

    /// Encodes `batch` into the sink's reused buffers, replacing whatever the last batch left.
    /// Runs on the blocking pool (pure CPU work, no I/O).
    fn encode(&mut self, batch: &FlushBatch) -> Result<(), SinkError>;

    /// One attempt to deliver what [`Sink::encode`] prepared. Parts delivered by an earlier
    /// attempt are not sent again; must be cancel-safe (the runner drops it at the deadline).
    fn send(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Items of the current batch delivered so far.
    fn delivered(&self) -> u64;
}

/// A validated `[[sinks]]` table: everything parsed, secrets expanded, nothing started.
struct ValidSink {
    name: String,
    timeout: Duration,
    max_retries: u32,
    filter: filter::SinkFilter,
    kind: ValidKind,
}

enum ValidKind {
    Console(console::ConsoleSettings),
    Http(http::HttpSettings),
    Datadog(datadog::DatadogSettings),
    PrometheusRemoteWrite(prometheus_remote_write::RemoteWriteSettings),
    Influxdb(influxdb::InfluxdbSettings),
    Prometheus(prometheus_scrape::ScrapeSettings),
}

/// Names may only use these, as they become a tag value and part of a check name.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn validate_all(
    configs: &[SinkConfig],
    interval: Duration,
) -> Result<Vec<ValidSink>, SinkConfigError> {
    if interval.is_zero() {
        return Err(SinkConfigError::new("interval", "must be positive"));
    }
    let max_timeout = (interval / 2).max(Duration::from_millis(1));
    let mut valid: Vec<ValidSink> = Vec::with_capacity(configs.len());
    for (i, config) in configs.iter().enumerate() {
        let key = |k: &str| format!("sinks[{i}].{k}");
        // 1 for the first sink of its type, 2 for the second, … (named ones count too).
        let nth = configs
            .iter()
            .take(i + 1)
            .filter(|c| c.type_name() == config.type_name())
            .count();
        let common = config.common();
        let name = match common.name {
            Some(name) => {
                if name.is_empty() {
                    return Err(SinkConfigError::new(key("name"), "must not be empty"));
                }
                if !name.chars().all(is_name_char) {
                    return Err(SinkConfigError::new(
                        key("name"),
                        format!("{name:?} may only contain letters, digits, '_', '-' and '.'"),
                    ));
                }
                name.to_owned()
            }
            None if nth == 1 => config.type_name().to_owned(),
            None => format!("{}-{nth}", config.type_name()),
        };
        if let Some(j) = valid.iter().position(|v| v.name == name) {
            return Err(SinkConfigError::new(
                key("name"),
                format!("duplicate sink name {name:?} (also used by sinks[{j}])"),
            ));
        }
        let timeout = parse_duration(common.timeout)
            .map_err(|reason| SinkConfigError::new(key("timeout"), reason))?;
        if timeout.is_zero() {
            return Err(SinkConfigError::new(key("timeout"), "must be positive"));
        }
        if let SinkConfig::Prometheus(c) = config {
            // SO_REUSEPORT would let two endpoints share the address and split the scrapes.
            let addr = |listen: &str| listen.parse::<std::net::SocketAddr>().ok();
            let mine = addr(&c.listen).filter(|a| a.port() != 0);
            let same = |other: &SinkConfig| matches!(other, SinkConfig::Prometheus(o) if mine.is_some() && addr(&o.listen) == mine);
            if let Some(j) = configs.iter().take(i).position(same) {
                return Err(SinkConfigError::new(
                    key("listen"),
                    format!("{} is already the listen address of sinks[{j}]", c.listen),
                ));
            }
        }
        let filter = filter::SinkFilter::new(&common.filter, &key)?;
        let kind = match config {
            SinkConfig::Console(c) => ValidKind::Console(console::validate(c)),
            SinkConfig::Http(c) => ValidKind::Http(http::validate(c, &key)?),
            SinkConfig::Datadog(c) => ValidKind::Datadog(datadog::validate(c, &key)?),
            SinkConfig::PrometheusRemoteWrite(c) => {
                ValidKind::PrometheusRemoteWrite(prometheus_remote_write::validate(c, &key)?)
            }
            SinkConfig::Influxdb(c) => ValidKind::Influxdb(influxdb::validate(c, &key)?),
            SinkConfig::Prometheus(c) => {
                ValidKind::Prometheus(prometheus_scrape::validate(c, &key)?)
            }
        };
        valid.push(ValidSink {
            name,
            timeout: timeout.min(max_timeout),
            max_retries: common.max_retries,
            filter,
            kind,
        });
    }
    Ok(valid)
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
                let encoded = sink.encode(&view);
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
    let mut backoff = retry::Backoff::new();
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

/// Helpers shared by the sink tests: a capturing HTTP server on loopback and sample batches.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::point::{Event, Point, PointKind, ServiceCheck};
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri};
    use std::io::Read;

    /// How the capture server answers.
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Answer {
        Status(u16),
        /// Never answers.
        Hang,
        /// Answers 500 to the first `n` requests, then 200.
        FailFirst(usize),
    }

    /// One request the server saw.
    #[derive(Debug, Clone)]
    pub(crate) struct Captured {
        pub path: String,
        pub headers: HeaderMap,
        pub body: Vec<u8>,
    }

    impl Captured {
        /// The body, gunzipped when sent with `Content-Encoding: gzip`.
        pub fn decoded(&self) -> Vec<u8> {
            let gzip = self
                .headers
                .get("content-encoding")
                .is_some_and(|v| v == "gzip");
            if !gzip {
                return self.body.clone();
            }
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(self.body.as_slice())
                .read_to_end(&mut out)
                .expect("valid gzip body");
            out
        }

        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.decoded()).expect("JSON body")
        }

        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).and_then(|v| v.to_str().ok())
        }
    }

    #[derive(Clone)]
    struct ServerState {
        answer: Answer,
        seen: Arc<Mutex<Vec<Captured>>>,
    }

    /// A loopback HTTP server recording every request.
    pub(crate) struct CaptureServer {
        pub url: String,
        seen: Arc<Mutex<Vec<Captured>>>,
    }

    impl CaptureServer {
        pub async fn start(answer: Answer) -> CaptureServer {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            let addr = listener.local_addr().expect("local addr");
            let seen = Arc::new(Mutex::new(Vec::new()));
            let state = ServerState {
                answer,
                seen: Arc::clone(&seen),
            };
            let app = axum::Router::new()
                .fallback(capture)
                .layer(axum::extract::DefaultBodyLimit::disable())
                .with_state(state);
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            CaptureServer {
                url: format!("http://{addr}"),
                seen,
            }
        }

        pub fn requests(&self) -> Vec<Captured> {
            self.seen.lock().expect("lock").clone()
        }

        pub fn count(&self) -> usize {
            self.seen.lock().expect("lock").len()
        }
    }

    async fn capture(
        State(state): State<ServerState>,
        uri: Uri,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> StatusCode {
        let n = {
            let mut seen = state.seen.lock().expect("lock");
            seen.push(Captured {
                path: uri.to_string(),
                headers,
                body: body.to_vec(),
            });
            seen.len()
        };
        match state.answer {
            Answer::Status(code) => StatusCode::from_u16(code).expect("status"),
            Answer::Hang => std::future::pending().await,
            Answer::FailFirst(k) if n <= k => StatusCode::INTERNAL_SERVER_ERROR,
            Answer::FailFirst(_) => StatusCode::OK,
        }
    }

    /// Polls `cond` every 10 ms until it holds; panics after `limit`.
    pub(crate) async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Two points, a service check and an event: 4 items.
    pub(crate) fn sample_batch() -> FlushBatch {
        let tags: Arc<[String]> = vec!["env:prod".to_owned(), "route:/x".to_owned()].into();
        FlushBatch {
            metrics: vec![
                Point {
                    name: "api.latency.99percentile".into(),
                    kind: PointKind::Gauge,
                    value: 12.5,
                    tags: Arc::clone(&tags),
                    host: "web-1".into(),
                    timestamp: 1_763_775_000,
                    interval: 10,
                },
                Point {
                    name: "api.requests".into(),
                    kind: PointKind::Counter,
                    value: 25.0,
                    tags,
                    host: "web-1".into(),
                    timestamp: 1_763_775_000,
                    interval: 10,
                },
            ],
            service_checks: vec![ServiceCheck {
                name: "db.up".into(),
                status: 2,
                tags: vec!["service:api".into()],
                host: "web-1".into(),
                timestamp: 1_763_775_000,
                message: "connection refused".into(),
            }],
            events: vec![Event {
                title: "deploy".into(),
                text: "v1.2".into(),
                tags: vec![],
                host: "web-1".into(),
                timestamp: 1_763_775_000,
                aggregation_key: String::new(),
                priority: "normal",
                source_type: String::new(),
                alert_type: "info",
            }],
            ..FlushBatch::default()
        }
    }

    fn parse(toml_text: &str) -> Result<Vec<SinkConfig>, toml::de::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            sinks: Vec<SinkConfig>,
        }
        toml::from_str::<File>(toml_text).map(|f| f.sinks)
    }

    fn http_config(url: &str, extra: &str) -> SinkConfig {
        parse(&format!(
            "[[sinks]]\ntype = \"http\"\nurl = \"{url}\"\n{extra}\n"
        ))
        .expect("valid config")
        .remove(0)
    }

    fn stat(stats: &SinkStats, which: &str) -> u64 {
        match which {
            "sent" => stats.sent.load(Ordering::Relaxed),
            "errors" => stats.errors.load(Ordering::Relaxed),
            "dropped" => stats.dropped.load(Ordering::Relaxed),
            _ => unreachable!(),
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
        for bad in [
            "",
            "5",
            "s",
            "5x",
            "-5s",
            "1.2.3s",
            "5 s",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn default_is_console_table() {
        let SinkConfig::Console(c) = SinkConfig::default() else {
            panic!("default sink is not console");
        };
        assert_eq!(c.format, ConsoleFormat::Table);
        assert_eq!(c.timeout, "5s");
        assert_eq!(c.max_retries, 3);
        let parsed = parse("[[sinks]]\ntype = \"console\"\n").expect("parses");
        assert_eq!(parsed, vec![SinkConfig::default()]);
    }

    #[test]
    fn unknown_key_in_tagged_variant_is_rejected() {
        let err = parse("[[sinks]]\ntype = \"http\"\nurl = \"http://x\"\nurll = \"y\"\n")
            .expect_err("unknown key accepted");
        assert!(err.to_string().contains("urll"), "{err}");
        let err = parse("[[sinks]]\ntype = \"console\"\napi_key = \"y\"\n")
            .expect_err("other type's key accepted");
        assert!(err.to_string().contains("api_key"), "{err}");
        let err = parse("[[sinks]]\ntype = \"kafka\"\n").expect_err("unknown type accepted");
        assert!(err.to_string().contains("kafka"), "{err}");
    }

    #[test]
    fn errors_point_at_the_offending_table() {
        let err = parse(
            "[[sinks]]\ntype = \"console\"\n\n[[sinks]]\ntype = \"http\"\nurl = \"http://x\"\nurll = 1\n",
        )
        .expect_err("unknown key accepted");
        let text = err.to_string();
        assert!(text.contains("line 4"), "{text}");
        assert!(text.contains("unknown field `urll`"), "{text}");
        let err = parse("[[sinks]]\nformat = \"json\"\n").expect_err("no type");
        assert!(err.to_string().contains("missing field `type`"), "{err}");
        let err = parse("[[sinks]]\ntype = 1\n").expect_err("numeric type");
        assert!(err.to_string().contains("sink type string"), "{err}");
        let err = parse("[[sinks]]\ntype = \"http\"\ntimeout = 5\n").expect_err("integer");
        assert!(err.to_string().contains("expected a string"), "{err}");
    }

    #[test]
    fn every_type_parses_by_its_name() {
        for config in [
            SinkConfig::default(),
            SinkConfig::Http(HttpConfig::default()),
            SinkConfig::Datadog(DatadogConfig::default()),
            SinkConfig::PrometheusRemoteWrite(PrometheusRemoteWriteConfig::default()),
            SinkConfig::Influxdb(InfluxdbConfig::default()),
            SinkConfig::Prometheus(PrometheusConfig::default()),
        ] {
            let text = format!("[[sinks]]\ntype = \"{}\"\n", config.type_name());
            assert!(SINK_TYPES.contains(&config.type_name()));
            assert_eq!(parse(&text).expect("parses"), vec![config]);
        }
    }

    #[test]
    fn every_type_takes_the_filter_keys() {
        for kind in SINK_TYPES {
            let text = format!(
                "[[sinks]]\ntype = \"{kind}\"\ninclude = [\"a.\"]\nexclude = [\"a.b\"]\n\
                 drop_tags = [\"k\"]\ntags = [\"x:y\"]\n"
            );
            let configs = parse(&text).unwrap_or_else(|e| panic!("{kind}: {e}"));
            let common = configs[0].common();
            assert_eq!(common.filter.include, ["a."], "{kind}");
            assert_eq!(common.filter.exclude, ["a.b"], "{kind}");
            assert_eq!(common.filter.drop_tags, ["k"], "{kind}");
            assert_eq!(common.filter.tags, ["x:y"], "{kind}");
        }
        let configs = vec![http_config("http://a", "include = [\"\"]")];
        let err = SinkSet::validate(&configs, Duration::from_secs(10)).expect_err("empty prefix");
        assert_eq!(err.key, "sinks[0].include[0]");
    }

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
    fn numbers_are_written_as_prometheus_and_influxdb_parse_them() {
        let text = |v: f64| {
            let mut out = Vec::new();
            write_number(&mut out, v);
            String::from_utf8(out).expect("utf-8")
        };
        assert_eq!(text(25.0), "25");
        assert_eq!(text(-3.0), "-3");
        assert_eq!(text(0.0), "0");
        assert_eq!(text(12.5), "12.5");
        assert_eq!(text(1e20), "1e20");
        assert_eq!(text(1.5e-7), "1.5e-7");
        assert_eq!(text(9_007_199_254_740_993.0), "9007199254740992.0");
    }

    #[test]
    fn commented_examples_in_the_default_config_parse() {
        // Every `# [[sinks]]` block of config.example.toml, uncommented, up to the blank line.
        let mut blocks: Vec<String> = Vec::new();
        let mut inside = false;
        for line in crate::config::DEFAULT_CONFIG.lines() {
            if line == "# [[sinks]]" {
                blocks.push(String::new());
                inside = true;
            }
            match (inside, line.strip_prefix("# "), blocks.last_mut()) {
                (true, Some(rest), Some(block)) => {
                    block.push_str(rest);
                    block.push('\n');
                }
                _ => inside = false,
            }
        }
        let types: Vec<&str> = blocks
            .iter()
            .map(|b| {
                let configs = parse(b).unwrap_or_else(|e| panic!("{e}\n{b}"));
                configs[0].type_name()
            })
            .collect();
        assert_eq!(
            types,
            [
                "http",
                "datadog",
                "prometheus_remote_write",
                "influxdb",
                "prometheus"
            ]
        );
    }

    #[test]
    fn default_names_count_per_type() {
        let configs = parse(
            "[[sinks]]\ntype = \"http\"\nurl = \"http://a\"\n\
             [[sinks]]\ntype = \"console\"\n\
             [[sinks]]\ntype = \"http\"\nurl = \"http://b\"\n\
             [[sinks]]\ntype = \"http\"\nurl = \"http://c\"\nname = \"mine\"\n\
             [[sinks]]\ntype = \"http\"\nurl = \"http://d\"\n",
        )
        .expect("parses");
        let names: Vec<String> = validate_all(&configs, Duration::from_secs(10))
            .expect("valid")
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, ["http", "console", "http-2", "mine", "http-4"]);
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let configs = parse(
            "[[sinks]]\ntype = \"http\"\nurl = \"http://a\"\n\
             [[sinks]]\ntype = \"console\"\nname = \"http\"\n",
        )
        .expect("parses");
        let err = SinkSet::validate(&configs, Duration::from_secs(10)).expect_err("duplicate");
        assert_eq!(err.key, "sinks[1].name");
        assert!(err.to_string().contains("duplicate"), "{err}");
    }

    #[test]
    fn bad_names_are_rejected() {
        for bad in ["", "a b", "x,y", "a:b"] {
            let configs = vec![SinkConfig::Console(ConsoleConfig {
                name: Some(bad.to_owned()),
                ..ConsoleConfig::default()
            })];
            let err = SinkSet::validate(&configs, Duration::from_secs(10)).expect_err(bad);
            assert_eq!(err.key, "sinks[0].name");
        }
    }

    #[test]
    fn timeout_is_clamped_to_half_the_interval() {
        let configs = vec![
            http_config("http://a", ""),
            http_config("http://b", "name = \"b\"\ntimeout = \"100ms\""),
        ];
        let valid = validate_all(&configs, Duration::from_secs(2)).expect("valid");
        assert_eq!(valid[0].timeout, Duration::from_secs(1));
        assert_eq!(valid[1].timeout, Duration::from_millis(100));
        let valid = validate_all(&configs, Duration::from_secs(60)).expect("valid");
        assert_eq!(valid[0].timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_timeout_names_the_key() {
        let configs = vec![
            SinkConfig::default(),
            http_config("http://a", "timeout = \"5 parsecs\""),
        ];
        let err = SinkSet::validate(&configs, Duration::from_secs(10)).expect_err("bad timeout");
        assert_eq!(err.key, "sinks[1].timeout");
        let configs = vec![http_config("http://a", "timeout = \"0s\"")];
        let err = SinkSet::validate(&configs, Duration::from_secs(10)).expect_err("zero timeout");
        assert_eq!(err.key, "sinks[0].timeout");
    }

    #[test]
    fn zero_interval_is_rejected() {
        assert!(SinkSet::validate(&[SinkConfig::default()], Duration::ZERO).is_err());
    }

    #[test]
    fn secret_debug_and_serialize_never_show_the_value() {
        let literal = Secret::new("hunter2");
        assert_eq!(format!("{literal:?}"), "\"***\"");
        assert_eq!(serde_json::to_string(&literal).expect("json"), "\"***\"");
        let reference = Secret::new("${SOME_VAR}");
        assert_eq!(reference.env_reference(), Some("SOME_VAR"));
        assert_eq!(
            serde_json::to_string(&reference).expect("json"),
            "\"${SOME_VAR}\""
        );
        assert_eq!(Secret::new("${}").env_reference(), None);
        assert_eq!(Secret::new("a${B}").env_reference(), None);
    }

    #[test]
    fn config_serializes_back_to_toml() {
        #[derive(Serialize)]
        struct File<'a> {
            sinks: &'a [SinkConfig],
        }
        let configs = parse(
            "[[sinks]]\ntype = \"datadog\"\napi_key = \"literal-key\"\n\
             [[sinks]]\ntype = \"http\"\nurl = \"http://a\"\nheaders = { X-Token = \"${TOK}\" }\n",
        )
        .expect("parses");
        let text = toml::to_string(&File { sinks: &configs }).expect("serializes");
        assert!(!text.contains("literal-key"), "{text}");
        assert!(text.contains("type = \"datadog\""), "{text}");
        assert!(text.contains("${TOK}"), "{text}");
        let back = parse(&text).expect("round trip parses");
        assert_eq!(back[1], configs[1]);
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
}
