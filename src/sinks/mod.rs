//! Sinks: where each flush goes (`docs/sinks.md`).
//!
//! The flusher builds one [`FlushBatch`] per interval and hands it to every sink through
//! [`SinkSet::submit`], which never blocks: every sink runs in its own tokio task behind a bounded
//! queue of [`QUEUE_BATCHES`] batches (`runner.rs`), encodes a batch once, then delivers it with a
//! per-attempt timeout, retries with backoff and an overall deadline of one interval. A sink that
//! is slow, hangs or fails only loses its own batches, counted in its [`SinkStats`]; it never
//! delays ingest, the flusher or the other sinks.
//!
//! - `config.rs`: one [`SinkConfig`] per `[[sinks]]` table, tagged by `type`; the keys every sink
//!   takes (`name`, `timeout`, `max_retries`, and the filter's `include`, `exclude`, `drop_tags`,
//!   `tags`, applied by `filter.rs` before the sink encodes); `${ENV}` [`Secret`]s, which never
//!   appear in `Debug` output, errors or logs; validation.
//! - `runner.rs`: one task per sink: bounded queue, timeout, retries, counted drops; [`SinkSet`].
//! - `transport.rs`: the one path for posting a batch over HTTP (request building, compression,
//!   the send, status classification, delivered accounting) that the `http`, `datadog`,
//!   `influxdb` and `prometheus_remote_write` sinks share; whether a [`SinkError`] is retryable.
//! - `idempotency.rs`: the `BatchId` the runner draws per batch, and the `Idempotency-Key` of
//!   each HTTP request made from it.
//! - one file per sink: `console`, `http`, `datadog`, `influxdb`, `prometheus_remote_write`,
//!   `prometheus_scrape` (with `prom_series.rs`, the Prometheus sinks' cumulative state).

mod config;
mod console;
mod datadog;
mod filter;
mod http;
mod idempotency;
mod influxdb;
mod prom_series;
mod prometheus_remote_write;
mod prometheus_scrape;
mod runner;
#[cfg(test)]
pub(crate) mod testing;
mod transport;

use std::future::Future;
use std::sync::{Arc, RwLock};

use crate::point::FlushBatch;
use idempotency::BatchId;

pub use config::{Compression, Secret, SinkCommon, SinkConfig, SinkConfigError};
pub use console::{ConsoleConfig, ConsoleFormat, SelfMetrics};
pub use datadog::DatadogConfig;
pub use http::HttpConfig;
pub use influxdb::InfluxdbConfig;
pub use prometheus_remote_write::{proto as remote_write_proto, PrometheusRemoteWriteConfig};
pub use prometheus_scrape::PrometheusConfig;
pub use runner::{SinkSet, SinkStats, QUEUE_BATCHES};
pub use transport::SinkError;

/// The running sinks as the API and a reload see them: replaced as a whole when SIGHUP starts a
/// new [`SinkSet`].
pub type SharedSinks = Arc<RwLock<Arc<SinkSet>>>;

/// One sink's encoder and transport, driven by the runner's task: encode a batch once, then send it
/// one or more times until it is delivered or given up.
trait Sink: Send + 'static {
    /// Whether the sink delivers metric points only (no service checks or events): then only
    /// points count as its items in [`SinkStats`].
    const METRICS_ONLY: bool = false;

    /// Encodes `batch` into the sink's reused buffers, replacing whatever the last batch left.
    /// `id` names the batch: an HTTP sink derives its requests' `Idempotency-Key`s from it, once
    /// here, so every attempt of a request carries the same key. Runs on the blocking pool (pure
    /// CPU work, no I/O).
    fn encode(&mut self, batch: &FlushBatch, id: BatchId) -> Result<(), SinkError>;

    /// One attempt to deliver what [`Sink::encode`] prepared. Parts delivered by an earlier
    /// attempt are not sent again; must be cancel-safe (the runner drops it at the deadline).
    fn send(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Items of the current batch delivered so far.
    fn delivered(&self) -> u64;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
