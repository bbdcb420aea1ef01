//! The `prometheus_remote_write` sink: Prometheus remote-write 1.0 to Prometheus (with
//! `--web.enable-remote-write-receiver`), VictoriaMetrics, Mimir, Thanos, Cortex.
//!
//! Each flush folds the batch's points into the sink's [`Cumulative`] state
//! (`docs/sinks.md#prometheus-conventions`: counters cumulative as `NAME_total`, gauges as gauges,
//! sanitised names, tags as labels plus `host`), then sends every live series' current value: one
//! sample per series, stamped with its newest point's time (else the flush's), never at or before
//! the series' previous sample, which Prometheus would refuse as out of order. The body is a
//! protobuf `WriteRequest`, snappy block-compressed; series are split over several requests so that
//! none exceeds `batch_max_bytes` uncompressed. Service checks and events have no place in remote
//! write and are not sent.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::config::{default_expire_after, parse_expire_after, resolve_env, SinkCommon};
use super::prom_series::Cumulative;
use super::transport::{
    add_headers, check_batch_max_bytes, parse_url, BodyEncoding, EncodeRequests, Outbox, Poster,
};
use super::{Secret, SinkConfigError, SinkError};
use crate::point::{unix_secs, FlushBatch, Point};

/// Default `batch_max_bytes`: 1 MiB of uncompressed protobuf per request.
pub const DEFAULT_BATCH_MAX_BYTES: usize = 1 << 20;

/// The remote-write protocol version header's value for 1.0.
const REMOTE_WRITE_VERSION: &str = "0.1.0";

/// `[[sinks]] type = "prometheus_remote_write"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrometheusRemoteWriteConfig {
    /// The keys every sink takes (`name`, `timeout`, `max_retries`, the filter's).
    #[serde(skip)]
    pub common: SinkCommon,
    /// The receiver's write URL (required), e.g. `http://127.0.0.1:9090/api/v1/write`; may be
    /// `"${ENV}"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Extra request headers (e.g. `Authorization`, `X-Scope-OrgID`); values may be `"${ENV}"`.
    pub headers: BTreeMap<String, Secret>,
    /// Uncompressed protobuf bytes per request; more series go into further requests
    /// (default 1048576).
    pub batch_max_bytes: usize,
    /// A series no flush updated for this long is no longer sent, and its counter forgotten
    /// (default `"5m"`).
    pub expire_after: String,
}

impl Default for PrometheusRemoteWriteConfig {
    fn default() -> Self {
        PrometheusRemoteWriteConfig {
            common: SinkCommon::default(),
            url: None,
            headers: BTreeMap::new(),
            batch_max_bytes: DEFAULT_BATCH_MAX_BYTES,
            expire_after: default_expire_after(),
        }
    }
}

/// The validated settings.
pub(super) struct RemoteWriteSettings {
    url: Url,
    headers: HeaderMap,
    batch_max_bytes: usize,
    expire_after: Duration,
}

pub(super) fn validate(
    config: &PrometheusRemoteWriteConfig,
    key: &impl Fn(&str) -> String,
) -> Result<RemoteWriteSettings, SinkConfigError> {
    let raw = config
        .url
        .as_deref()
        .ok_or_else(|| SinkConfigError::new(key("url"), "missing"))?;
    let url = parse_url(&resolve_env(raw, || key("url"))?, || key("url"))?;
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_ENCODING, HeaderValue::from_static("snappy"));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    headers.insert(
        HeaderName::from_static("x-prometheus-remote-write-version"),
        HeaderValue::from_static(REMOTE_WRITE_VERSION),
    );
    add_headers(
        &mut headers,
        &config.headers,
        &["x-prometheus-remote-write-version"],
        key,
    )?;
    Ok(RemoteWriteSettings {
        url,
        headers,
        batch_max_bytes: check_batch_max_bytes(config.batch_max_bytes, key)?,
        expire_after: parse_expire_after(&config.expire_after, key)?,
    })
}

/// Remote write 1.0's messages (prometheus/prompb `types.proto`, `remote.proto`), the fields
/// meterd sends.
pub mod proto {
    /// The request body, before snappy.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        /// Series with their samples.
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// One series: its labels (sorted by name, `__name__` included) and samples.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Sorted by name.
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        /// Oldest first.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    /// One label.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        /// `[a-zA-Z_][a-zA-Z0-9_]*`, or `__name__`.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Any UTF-8, non-empty.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// One sample.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Sample {
        /// The value.
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Unix milliseconds.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

use proto::{Label, Sample, TimeSeries};

/// Sets `labels` to `__name__ = name` merged into the sorted `others`, reusing the strings.
fn set_labels(labels: &mut Vec<Label>, name: &str, others: &[(String, String)]) {
    let at = others.partition_point(|(k, _)| k.as_str() < "__name__");
    let (before, after) = others.split_at(at);
    let all = before
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(std::iter::once(("__name__", name)))
        .chain(after.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    labels.resize_with(others.len() + 1, Label::default);
    for (slot, (k, v)) in labels.iter_mut().zip(all) {
        slot.name.clear();
        slot.name.push_str(k);
        slot.value.clear();
        slot.value.push_str(v);
    }
}

/// What one [`encode_series`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct EncodeStats {
    series: u64,
    requests: u64,
    conflicts: u64,
}

/// Folds `points` into `state` and encodes every live series' current sample into `outbox`,
/// starting a new request before one would pass `max_bytes`. `scratch` is reused across series
/// and flushes.
fn encode_series(
    state: &mut Cumulative,
    scratch: &mut TimeSeries,
    outbox: &mut Outbox,
    points: &[Point],
    now: i64,
    max_bytes: usize,
) -> Result<EncodeStats, SinkError> {
    outbox.clear();
    let update = state.update(points, now);
    let mut stats = EncodeStats {
        conflicts: update.conflicts,
        ..EncodeStats::default()
    };
    let mut open = false;
    let mut items = 0u64;
    for (name, family) in state.families_mut().iter_mut() {
        for (labels, series) in family.series.iter_mut() {
            let timestamp = series.sample_ms(update.flush_ts);
            if series.sent_ms.is_some_and(|sent| timestamp <= sent) {
                continue;
            }
            set_labels(&mut scratch.labels, name, labels);
            scratch.samples.clear();
            scratch.samples.push(Sample {
                value: series.value,
                timestamp,
            });
            let len = prost::encoding::message::encoded_len(1, &*scratch);
            if open && outbox.raw_len() + len > max_bytes {
                outbox.push(0, items, BodyEncoding::Snappy)?;
                stats.requests += 1;
                open = false;
                items = 0;
            }
            if !open {
                outbox.raw();
                open = true;
            }
            prost::encoding::message::encode(1, &*scratch, outbox.raw_mut());
            series.sent_ms = Some(timestamp);
            items += series.points;
            stats.series += 1;
        }
    }
    if open {
        outbox.push(0, items, BodyEncoding::Snappy)?;
        stats.requests += 1;
    }
    Ok(stats)
}

/// How the `prometheus_remote_write` sink encodes a batch: folded into its cumulative state,
/// then every live series' sample as snappy-compressed protobuf.
pub(super) struct RemoteWriteRequests {
    batch_max_bytes: usize,
    state: Cumulative,
    scratch: TimeSeries,
}

/// Sends every flush's series to a remote-write receiver.
pub(super) type RemoteWriteSink = Poster<RemoteWriteRequests>;

impl RemoteWriteSink {
    pub(super) fn new(
        settings: RemoteWriteSettings,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let encoder = RemoteWriteRequests {
            batch_max_bytes: settings.batch_max_bytes,
            state: Cumulative::new(settings.expire_after.as_secs()),
            scratch: TimeSeries::default(),
        };
        Poster::build(encoder, [settings.url], settings.headers, timeout)
    }
}

impl EncodeRequests for RemoteWriteRequests {
    const METRICS_ONLY: bool = true;

    fn encode(&mut self, batch: &FlushBatch, outbox: &mut Outbox) -> Result<(), SinkError> {
        let stats = encode_series(
            &mut self.state,
            &mut self.scratch,
            outbox,
            &batch.metrics,
            unix_secs(),
            self.batch_max_bytes,
        )?;
        if stats.conflicts > 0 {
            tracing::debug!(
                points = stats.conflicts,
                "points skipped: their name is already a metric of the other kind"
            );
        }
        tracing::trace!(series = stats.series, requests = stats.requests, "encoded");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::proto::WriteRequest;
    use super::*;
    use crate::point::PointKind;
    use crate::sinks::testing::{sample_batch, wait_for, Answer, CaptureServer};
    use crate::sinks::{SinkConfig, SinkSet};
    use prost::Message as _;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    fn key(k: &str) -> String {
        format!("sinks[0].{k}")
    }

    fn config(url: &str) -> PrometheusRemoteWriteConfig {
        PrometheusRemoteWriteConfig {
            url: Some(url.to_owned()),
            ..PrometheusRemoteWriteConfig::default()
        }
    }

    fn unsnappy(body: &[u8]) -> Vec<u8> {
        snap::raw::Decoder::new()
            .decompress_vec(body)
            .expect("valid snappy block")
    }

    /// Encodes and decodes every request of one flush.
    fn flush(
        state: &mut Cumulative,
        points: &[Point],
        now: i64,
        max: usize,
    ) -> Vec<(u64, WriteRequest)> {
        let mut outbox = Outbox::default();
        let mut scratch = TimeSeries::default();
        encode_series(state, &mut scratch, &mut outbox, points, now, max).expect("encodes");
        outbox
            .bodies()
            .map(|(_, items, body)| {
                let raw = unsnappy(body);
                (
                    items,
                    WriteRequest::decode(raw.as_slice()).expect("protobuf"),
                )
            })
            .collect()
    }

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.to_owned(),
            value: value.to_owned(),
        }
    }

    fn series(labels: &[(&str, &str)], value: f64, timestamp: i64) -> TimeSeries {
        TimeSeries {
            labels: labels.iter().map(|(k, v)| label(k, v)).collect(),
            samples: vec![Sample { value, timestamp }],
        }
    }

    #[test]
    fn write_request_decodes_exactly() {
        let mut state = Cumulative::new(300);
        let requests = flush(&mut state, &sample_batch().metrics, 1_763_775_000, 1 << 20);
        assert_eq!(requests.len(), 1);
        let (items, request) = &requests[0];
        assert_eq!(*items, 2);
        assert_eq!(
            request.timeseries,
            [
                series(
                    &[
                        ("__name__", "api_latency_99percentile"),
                        ("env", "prod"),
                        ("host", "web-1"),
                        ("route", "/x")
                    ],
                    12.5,
                    1_763_775_000_000
                ),
                series(
                    &[
                        ("__name__", "api_requests_total"),
                        ("env", "prod"),
                        ("host", "web-1"),
                        ("route", "/x")
                    ],
                    25.0,
                    1_763_775_000_000
                ),
            ]
        );
    }

    #[test]
    fn name_label_sorts_with_the_others() {
        let mut labels = Vec::new();
        let others = vec![
            ("Zone".to_owned(), "a".to_owned()),
            ("_x".to_owned(), "1".to_owned()),
            ("a".to_owned(), "2".to_owned()),
        ];
        set_labels(&mut labels, "m", &others);
        let names: Vec<&str> = labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["Zone", "__name__", "_x", "a"]);
        // Reused for a shorter set.
        set_labels(&mut labels, "n", &[]);
        assert_eq!(labels, [label("__name__", "n")]);
    }

    #[test]
    fn counters_are_cumulative_across_flushes_and_every_series_is_resent() {
        let mut state = Cumulative::new(300);
        let c = |v: f64, ts: i64| Point {
            name: "hits".into(),
            kind: PointKind::Counter,
            value: v,
            tags: Vec::new().into(),
            host: "".into(),
            timestamp: ts,
            interval: 10,
        };
        let g = |ts: i64| Point {
            name: "temp".into(),
            kind: PointKind::Gauge,
            value: 3.0,
            ..c(0.0, ts)
        };
        flush(&mut state, &[c(2.0, 1000), g(1000)], 1000, 1 << 20);
        let requests = flush(&mut state, &[c(3.0, 1010)], 1010, 1 << 20);
        assert_eq!(
            requests[0].1.timeseries,
            [
                series(&[("__name__", "hits_total")], 5.0, 1_010_000),
                series(&[("__name__", "temp")], 3.0, 1_010_000),
            ]
        );
        assert_eq!(requests[0].0, 1, "one point of this batch");
        // Nothing new, same second: nothing to send (a sample never repeats its timestamp).
        assert!(flush(&mut state, &[], 1010, 1 << 20).is_empty());
    }

    #[test]
    fn requests_are_split_by_size() {
        let mut state = Cumulative::new(300);
        let points: Vec<Point> = (0..100)
            .map(|i| Point {
                name: format!("metric.number.{i:03}"),
                kind: PointKind::Gauge,
                value: f64::from(i),
                tags: vec!["env:prod".to_owned()].into(),
                host: "web-1".into(),
                timestamp: 1000,
                interval: 10,
            })
            .collect();
        let requests = flush(&mut state, &points, 1000, 1024);
        assert!(requests.len() > 2, "{} requests", requests.len());
        let mut names = Vec::new();
        for (items, request) in &requests {
            assert!(request.encoded_len() <= 1024, "{}", request.encoded_len());
            assert_eq!(*items as usize, request.timeseries.len());
            for ts in &request.timeseries {
                names.push(ts.labels[0].value.clone());
            }
        }
        let mut want: Vec<String> = (0..100).map(|i| format!("metric_number_{i:03}")).collect();
        want.sort();
        assert_eq!(names, want);
    }

    #[test]
    fn validation() {
        let err = validate(&PrometheusRemoteWriteConfig::default(), &key)
            .err()
            .expect("missing url");
        assert_eq!(err.to_string(), "sinks[0].url: missing");
        let mut c = config("http://127.0.0.1:9/api/v1/write");
        c.expire_after = "0s".into();
        assert_eq!(
            validate(&c, &key).err().expect("zero").key,
            "sinks[0].expire_after"
        );
        let mut c = config("http://127.0.0.1:9/api/v1/write");
        c.batch_max_bytes = 10;
        assert_eq!(
            validate(&c, &key).err().expect("tiny").key,
            "sinks[0].batch_max_bytes"
        );
        let mut c = config("http://127.0.0.1:9/api/v1/write");
        c.headers
            .insert("X-Prometheus-Remote-Write-Version".into(), Secret::new("2"));
        assert!(validate(&c, &key).is_err());
        let mut c = config("http://127.0.0.1:9/api/v1/write");
        c.headers
            .insert("X-Scope-OrgID".into(), Secret::new("tenant-1"));
        let settings = validate(&c, &key).expect("valid");
        assert_eq!(settings.headers["x-scope-orgid"], "tenant-1");
        assert_eq!(settings.expire_after, Duration::from_secs(300));
    }

    #[tokio::test]
    async fn posts_snappy_protobuf_with_the_headers() {
        let server = CaptureServer::start(Answer::Status(204)).await;
        let c = config(&format!("{}/api/v1/write", server.url));
        let set = SinkSet::start(
            &[SinkConfig::PrometheusRemoteWrite(c)],
            Duration::from_secs(2),
        )
        .expect("starts");
        let (name, stats) = set.stats().remove(0);
        assert_eq!(name, "prometheus_remote_write");
        set.submit(Arc::new(sample_batch()));
        // The two points; the service check and the event are not this sink's to deliver.
        wait_for(Duration::from_secs(3), "delivery", || {
            stats.sent.load(Ordering::Relaxed) == 2
        })
        .await;
        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert_eq!(r.path, "/api/v1/write");
        assert_eq!(r.header("content-encoding"), Some("snappy"));
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
        assert_eq!(r.header("x-prometheus-remote-write-version"), Some("0.1.0"));
        let request = WriteRequest::decode(unsnappy(&r.body).as_slice()).expect("protobuf");
        assert_eq!(request.timeseries.len(), 2);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 0);
        set.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn client_errors_are_not_retried_and_server_errors_are() {
        for (code, attempts) in [(400u16, 1usize), (429, 3), (503, 3)] {
            let server = CaptureServer::start(Answer::Status(code)).await;
            let mut c = config(&server.url);
            c.common.max_retries = 2;
            let set = SinkSet::start(
                &[SinkConfig::PrometheusRemoteWrite(c)],
                Duration::from_secs(3),
            )
            .expect("starts");
            let (_, stats) = set.stats().remove(0);
            set.submit(Arc::new(sample_batch()));
            wait_for(Duration::from_secs(4), "drop", || {
                stats.dropped.load(Ordering::Relaxed) == 2
            })
            .await;
            assert_eq!(server.count(), attempts, "status {code}");
            // Every attempt of the batch's one request carries the same key.
            let requests = server.requests();
            assert!(requests.iter().all(|r| r.key() == requests[0].key()));
            assert!(!stats.last_ok.load(Ordering::Relaxed));
            set.shutdown(Duration::from_secs(1)).await;
        }
    }
}
