//! The `datadog` sink: Datadog's v1 intake API, or anything speaking it (VictoriaMetrics).
//!
//! Per batch: the points as `POST /api/v1/series` in requests of at most
//! [`MAX_SERIES_PER_REQUEST`] series (and a bounded body size), all service checks in one
//! `POST /api/v1/check_run`, and one `POST /api/v1/events` per event; requests with nothing to
//! carry are skipped. Counters go out as type `rate` with value ÷ interval, gauges as `gauge`,
//! both with `interval`, as DogStatsD and Veneur send them. Bodies are gzipped by default, the
//! key goes in the `DD-API-KEY` header. A retry resumes at the first request not delivered.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::config::SinkCommon;
use super::transport::{
    check_batch_max_bytes, json_error, json_headers, secret_header, BaseUrl, BodyEncoding,
    EncodeRequests, Outbox, Poster,
};
use super::{Compression, Secret, SinkConfigError, SinkError};
use crate::point::{Event, FlushBatch, Point, PointKind, ServiceCheck};

/// Default API base.
pub const DEFAULT_URL: &str = "https://api.datadoghq.com";

/// Series per `/api/v1/series` request; more are split over several requests.
pub const MAX_SERIES_PER_REQUEST: usize = 20_000;

/// Uncompressed body size after which a series request is closed when sending plain bodies:
/// under the API's 3.2 MB payload limit.
const MAX_PLAIN_BODY_BYTES: usize = 3_000_000;

/// Uncompressed body size after which a series request is closed when gzipping: under the
/// API's 62 MB decompressed limit, and under its 3.2 MB compressed limit at the ≥ 5× ratio
/// that series JSON compresses by.
const MAX_GZIP_RAW_BYTES: usize = 16_000_000;

/// Endpoint indices into the sink's URLs.
const SERIES: usize = 0;
const CHECK_RUN: usize = 1;
const EVENTS: usize = 2;

/// `[[sinks]] type = "datadog"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatadogConfig {
    /// The keys every sink takes (`name`, `timeout`, `max_retries`, the filter's).
    #[serde(skip)]
    pub common: SinkCommon,
    /// API base; meterd appends `/api/v1/series`, `/api/v1/check_run`, `/api/v1/events`
    /// (default `https://api.datadoghq.com`; may be `"${ENV}"`).
    pub url: String,
    /// API key (required), usually `"${DD_API_KEY}"`; sent as the `DD-API-KEY` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// Body compression (default `gzip`).
    pub compression: Compression,
    /// Uncompressed bytes after which a `series` request is closed (default: unset, 3 MB
    /// plain or 16 MB gzipped, under the API's payload limits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_max_bytes: Option<usize>,
}

impl Default for DatadogConfig {
    fn default() -> Self {
        DatadogConfig {
            common: SinkCommon::default(),
            url: DEFAULT_URL.to_owned(),
            api_key: None,
            compression: Compression::Gzip,
            batch_max_bytes: None,
        }
    }
}

/// The validated `datadog` settings.
pub(super) struct DatadogSettings {
    urls: [Url; 3],
    headers: HeaderMap,
    gzip: bool,
    /// Uncompressed size limit of a `series` request.
    max_raw: usize,
}

pub(super) fn validate(
    config: &DatadogConfig,
    key: &impl Fn(&str) -> String,
) -> Result<DatadogSettings, SinkConfigError> {
    let base = BaseUrl::parse(&config.url, "an API base", key("url"))?;
    let urls = [
        base.join("/api/v1/series")?,
        base.join("/api/v1/check_run")?,
        base.join("/api/v1/events")?,
    ];

    let api_key_key = || key("api_key");
    let api_key = config
        .api_key
        .as_ref()
        .ok_or_else(|| SinkConfigError::new(api_key_key(), "missing"))?;
    let api_key = secret_header(api_key, api_key_key)?;
    if api_key.is_empty() {
        return Err(SinkConfigError::new(api_key_key(), "is empty"));
    }
    let gzip = config.compression == Compression::Gzip;
    let mut headers = json_headers(gzip);
    headers.insert(HeaderName::from_static("dd-api-key"), api_key);
    let max_raw = match config.batch_max_bytes {
        Some(n) => check_batch_max_bytes(n, key)?,
        None if gzip => MAX_GZIP_RAW_BYTES,
        None => MAX_PLAIN_BODY_BYTES,
    };
    Ok(DatadogSettings {
        urls,
        headers,
        gzip,
        max_raw,
    })
}

/// One element of `/api/v1/series`' `series` array.
#[derive(Serialize)]
struct DdSeries<'a> {
    metric: &'a str,
    /// `[[timestamp, value]]`.
    points: [(i64, f64); 1],
    #[serde(rename = "type")]
    kind: &'static str,
    interval: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    host: &'a str,
    tags: &'a [String],
}

impl<'a> DdSeries<'a> {
    fn new(point: &'a Point) -> Self {
        // A zero interval cannot come out of the flusher; never divide by it anyway.
        let interval = point.interval.max(1);
        let (kind, value) = match point.kind {
            PointKind::Counter => ("rate", point.value / interval as f64),
            PointKind::Gauge => ("gauge", point.value),
        };
        DdSeries {
            metric: &point.name,
            points: [(point.timestamp, value)],
            kind,
            interval,
            host: &point.host,
            tags: &point.tags,
        }
    }
}

/// One element of `/api/v1/check_run`'s array.
#[derive(Serialize)]
struct DdCheck<'a> {
    check: &'a str,
    host_name: &'a str,
    status: u8,
    timestamp: i64,
    message: &'a str,
    tags: &'a [String],
}

impl<'a> DdCheck<'a> {
    fn new(check: &'a ServiceCheck) -> Self {
        DdCheck {
            check: &check.name,
            host_name: &check.host,
            status: check.status,
            timestamp: check.timestamp,
            message: &check.message,
            tags: &check.tags,
        }
    }
}

/// The body of one `/api/v1/events` request.
#[derive(Serialize)]
struct DdEvent<'a> {
    title: &'a str,
    text: &'a str,
    date_happened: i64,
    #[serde(skip_serializing_if = "str::is_empty")]
    host: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    aggregation_key: &'a str,
    priority: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    source_type_name: &'a str,
    alert_type: &'a str,
    tags: &'a [String],
}

impl<'a> DdEvent<'a> {
    fn new(event: &'a Event) -> Self {
        DdEvent {
            title: &event.title,
            text: &event.text,
            date_happened: event.timestamp,
            host: &event.host,
            aggregation_key: &event.aggregation_key,
            priority: event.priority,
            source_type_name: &event.source_type,
            alert_type: event.alert_type,
            tags: &event.tags,
        }
    }
}

/// Encodes `batch` into `outbox`: series requests (each closed once past `max_raw`
/// uncompressed bytes), then check runs, then events.
fn encode_batch(
    outbox: &mut Outbox,
    batch: &FlushBatch,
    gzip: bool,
    max_raw: usize,
) -> Result<(), SinkError> {
    outbox.clear();
    let encoding = BodyEncoding::gzip_if(gzip);
    let mut points = batch.metrics.iter().peekable();
    while points.peek().is_some() {
        let raw = outbox.raw();
        raw.extend_from_slice(b"{\"series\":[");
        let mut n = 0usize;
        while let Some(point) =
            points.next_if(|_| n < MAX_SERIES_PER_REQUEST && raw.len() < max_raw)
        {
            if n > 0 {
                raw.push(b',');
            }
            serde_json::to_writer(&mut *raw, &DdSeries::new(point)).map_err(json_error)?;
            n += 1;
        }
        raw.extend_from_slice(b"]}");
        outbox.push(SERIES, n as u64, encoding)?;
    }

    if !batch.service_checks.is_empty() {
        let raw = outbox.raw();
        raw.push(b'[');
        for (i, check) in batch.service_checks.iter().enumerate() {
            if i > 0 {
                raw.push(b',');
            }
            serde_json::to_writer(&mut *raw, &DdCheck::new(check)).map_err(json_error)?;
        }
        raw.push(b']');
        outbox.push(CHECK_RUN, batch.service_checks.len() as u64, encoding)?;
    }

    for event in &batch.events {
        serde_json::to_writer(outbox.raw(), &DdEvent::new(event)).map_err(json_error)?;
        outbox.push(EVENTS, 1, encoding)?;
    }
    Ok(())
}

/// How the `datadog` sink encodes a batch: series, check runs, events.
pub(super) struct DatadogRequests {
    gzip: bool,
    max_raw: usize,
}

/// Sends batches to Datadog's v1 API: `series`, `check_run`, `events`, indexed by [`SERIES`],
/// [`CHECK_RUN`], [`EVENTS`].
pub(super) type DatadogSink = Poster<DatadogRequests>;

impl DatadogSink {
    pub(super) fn new(
        settings: DatadogSettings,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let encoder = DatadogRequests {
            gzip: settings.gzip,
            max_raw: settings.max_raw,
        };
        Poster::build(encoder, settings.urls, settings.headers, timeout)
    }
}

impl EncodeRequests for DatadogRequests {
    fn encode(&mut self, batch: &FlushBatch, outbox: &mut Outbox) -> Result<(), SinkError> {
        encode_batch(outbox, batch, self.gzip, self.max_raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::testing::{batch_of, sample_batch, wait_for, Answer, CaptureServer};
    use crate::sinks::{SinkConfig, SinkSet};
    use serde_json::{json, Value};
    use std::io::Read;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    fn key(k: &str) -> String {
        format!("sinks[0].{k}")
    }

    fn config(url: &str, api_key: &str) -> DatadogConfig {
        DatadogConfig {
            url: url.to_owned(),
            api_key: Some(Secret::new(api_key)),
            ..DatadogConfig::default()
        }
    }

    /// Encodes and decodes every request: `(endpoint, items, json)`.
    fn encode(batch: &FlushBatch, gzip: bool) -> Vec<(usize, u64, Value)> {
        let mut outbox = Outbox::default();
        let max_raw = if gzip {
            MAX_GZIP_RAW_BYTES
        } else {
            MAX_PLAIN_BODY_BYTES
        };
        encode_batch(&mut outbox, batch, gzip, max_raw).expect("encodes");
        outbox
            .bodies()
            .map(|(endpoint, items, body)| {
                let json = if gzip {
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(body)
                        .read_to_end(&mut out)
                        .expect("gzip");
                    serde_json::from_slice(&out)
                } else {
                    serde_json::from_slice(body)
                };
                (endpoint, items, json.expect("json"))
            })
            .collect()
    }

    #[test]
    fn series_shape_and_counter_rate() {
        let requests = encode(&sample_batch(), false);
        let (endpoint, items, series) = &requests[0];
        assert_eq!((*endpoint, *items), (SERIES, 2));
        assert_eq!(
            *series,
            json!({"series": [
                {"metric": "api.latency.99percentile", "points": [[1763775000, 12.5]],
                 "type": "gauge", "interval": 10, "host": "web-1",
                 "tags": ["env:prod", "route:/x"]},
                {"metric": "api.requests", "points": [[1763775000, 2.5]],
                 "type": "rate", "interval": 10, "host": "web-1",
                 "tags": ["env:prod", "route:/x"]}
            ]})
        );
    }

    #[test]
    fn fleet_points_omit_the_host() {
        let mut batch = sample_batch();
        batch.metrics[0].host = "".into();
        batch.metrics[0].tags = Vec::new().into();
        let requests = encode(&batch, false);
        let first = &requests[0].2["series"][0];
        assert!(first.get("host").is_none(), "{first}");
        assert_eq!(first["tags"], json!([]));
    }

    #[test]
    fn check_run_shape() {
        let requests = encode(&sample_batch(), false);
        let (endpoint, items, checks) = &requests[1];
        assert_eq!((*endpoint, *items), (CHECK_RUN, 1));
        assert_eq!(
            *checks,
            json!([{"check": "db.up", "host_name": "web-1", "status": 2,
                    "timestamp": 1763775000, "message": "connection refused",
                    "tags": ["service:api"]}])
        );
    }

    #[test]
    fn event_shape_omits_empty_optional_strings() {
        let mut batch = sample_batch();
        batch.events.push(Event {
            title: "deploy done".into(),
            text: "".into(),
            tags: vec!["team:a".into()],
            host: "".into(),
            timestamp: 1_763_775_001,
            aggregation_key: "deploys".into(),
            priority: "low",
            source_type: "jenkins".into(),
            alert_type: "success",
        });
        let requests = encode(&batch, false);
        assert_eq!(requests.len(), 4);
        assert_eq!((requests[2].0, requests[2].1), (EVENTS, 1));
        assert_eq!(
            requests[2].2,
            json!({"title": "deploy", "text": "v1.2", "date_happened": 1763775000,
                   "host": "web-1", "priority": "normal", "alert_type": "info", "tags": []})
        );
        assert_eq!(
            requests[3].2,
            json!({"title": "deploy done", "text": "", "date_happened": 1763775001,
                   "aggregation_key": "deploys", "priority": "low",
                   "source_type_name": "jenkins", "alert_type": "success",
                   "tags": ["team:a"]})
        );
    }

    #[test]
    fn empty_parts_send_nothing() {
        assert!(encode(&FlushBatch::default(), true).is_empty());
        let mut batch = sample_batch();
        batch.metrics.clear();
        batch.events.clear();
        let requests = encode(&batch, true);
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].0, CHECK_RUN);
    }

    #[test]
    fn gzip_round_trips() {
        let plain = encode(&sample_batch(), false);
        let gzipped = encode(&sample_batch(), true);
        assert_eq!(plain, gzipped);
    }

    #[test]
    fn series_are_split_by_count() {
        let mut batch = sample_batch();
        let point = batch.metrics[0].clone();
        batch.metrics = vec![point; MAX_SERIES_PER_REQUEST + 1];
        let requests = encode(&batch, true);
        let series: Vec<(u64, usize)> = requests
            .iter()
            .filter(|r| r.0 == SERIES)
            .map(|r| (r.1, r.2["series"].as_array().map_or(0, Vec::len)))
            .collect();
        assert_eq!(
            series,
            [
                (MAX_SERIES_PER_REQUEST as u64, MAX_SERIES_PER_REQUEST),
                (1, 1)
            ]
        );
    }

    #[test]
    fn plain_series_are_split_by_size() {
        let mut batch = sample_batch();
        let mut point = batch.metrics[0].clone();
        point.tags = vec!["big:".to_owned() + &"x".repeat(100_000)].into();
        batch.metrics = vec![point; 50];
        let mut outbox = Outbox::default();
        encode_batch(&mut outbox, &batch, false, MAX_PLAIN_BODY_BYTES).expect("encodes");
        let sizes: Vec<(u64, usize)> = outbox
            .bodies()
            .filter(|b| b.0 == SERIES)
            .map(|b| (b.1, b.2.len()))
            .collect();
        assert_eq!(sizes.len(), 2, "{sizes:?}");
        assert_eq!(sizes.iter().map(|s| s.0).sum::<u64>(), 50);
        // Closed once past the limit: at most one series over it.
        assert!(sizes.iter().all(|s| s.1 < MAX_PLAIN_BODY_BYTES + 110_000));
    }

    #[test]
    fn batch_max_bytes_closes_series_requests() {
        let mut c = config(DEFAULT_URL, "k");
        assert_eq!(
            validate(&c, &key).expect("valid").max_raw,
            MAX_GZIP_RAW_BYTES
        );
        c.compression = Compression::None;
        assert_eq!(
            validate(&c, &key).expect("valid").max_raw,
            MAX_PLAIN_BODY_BYTES
        );
        c.batch_max_bytes = Some(4096);
        let settings = validate(&c, &key).expect("valid");
        assert_eq!(settings.max_raw, 4096);
        let mut batch = sample_batch();
        let point = batch.metrics[0].clone();
        batch.metrics = vec![point; 100];
        let mut outbox = Outbox::default();
        encode_batch(&mut outbox, &batch, false, settings.max_raw).expect("encodes");
        let series: Vec<(u64, usize)> = outbox
            .bodies()
            .filter(|b| b.0 == SERIES)
            .map(|b| (b.1, b.2.len()))
            .collect();
        assert!(series.len() > 2, "{series:?}");
        assert_eq!(series.iter().map(|s| s.0).sum::<u64>(), 100);
        assert!(series.iter().all(|s| s.1 < 4096 + 200), "{series:?}");
        c.batch_max_bytes = Some(100);
        assert_eq!(
            validate(&c, &key).err().expect("tiny").key,
            "sinks[0].batch_max_bytes"
        );
    }

    #[test]
    fn urls_append_the_api_paths() {
        let settings = validate(&config("https://api.datadoghq.eu/", "k"), &key).expect("valid");
        assert_eq!(
            settings.urls.each_ref().map(Url::as_str),
            [
                "https://api.datadoghq.eu/api/v1/series",
                "https://api.datadoghq.eu/api/v1/check_run",
                "https://api.datadoghq.eu/api/v1/events"
            ]
        );
        let settings = validate(&config("http://vm:8428/datadog", "k"), &key).expect("valid");
        assert_eq!(
            settings.urls[0].as_str(),
            "http://vm:8428/datadog/api/v1/series"
        );
        let default = DatadogConfig {
            api_key: Some(Secret::new("k")),
            ..DatadogConfig::default()
        };
        let settings = validate(&default, &key).expect("valid");
        assert_eq!(
            settings.urls[0].as_str(),
            "https://api.datadoghq.com/api/v1/series"
        );
        assert!(settings.gzip);
        let err = validate(&config("http://x/?a=b", "k"), &key)
            .err()
            .expect("query");
        assert_eq!(err.key, "sinks[0].url");
    }

    #[test]
    fn api_key_is_required_and_expanded() {
        let missing = DatadogConfig::default();
        let err = validate(&missing, &key).err().expect("missing key");
        assert_eq!(err.to_string(), "sinks[0].api_key: missing");

        let err = validate(&config(DEFAULT_URL, "${METERD_TEST_UNSET_DD_KEY}"), &key)
            .err()
            .expect("unset variable");
        assert_eq!(
            err.to_string(),
            "sinks[0].api_key: environment variable METERD_TEST_UNSET_DD_KEY is not set"
        );
        let err = validate(&config(DEFAULT_URL, ""), &key)
            .err()
            .expect("empty");
        assert_eq!(err.key, "sinks[0].api_key");

        let path = std::env::var("PATH").expect("PATH set");
        let settings = validate(&config(DEFAULT_URL, "${PATH}"), &key).expect("valid");
        assert_eq!(settings.headers["dd-api-key"], path.as_str());
        assert!(settings.headers["dd-api-key"].is_sensitive());
    }

    #[test]
    fn api_key_stays_out_of_debug_output() {
        let c = config(DEFAULT_URL, "0123456789abcdef");
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
        assert!(!format!("{:?}", SinkConfig::Datadog(c.clone())).contains("0123456789abcdef"));
        let settings = validate(&c, &key).expect("valid");
        assert!(!format!("{:?}", settings.headers).contains("0123456789abcdef"));
    }

    #[tokio::test]
    async fn posts_to_the_v1_endpoints_with_the_key() {
        let server = CaptureServer::start(Answer::Status(202)).await;
        let c = config(&server.url, "abc123");
        let set =
            SinkSet::start(&[SinkConfig::Datadog(c)], Duration::from_secs(2)).expect("starts");
        let (name, stats) = set.stats().remove(0);
        assert_eq!(name, "datadog");
        set.submit(Arc::new(sample_batch()));
        wait_for(Duration::from_secs(3), "delivery", || {
            stats.sent.load(Ordering::Relaxed) == 4
        })
        .await;
        let requests = server.requests();
        let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/api/v1/series", "/api/v1/check_run", "/api/v1/events"]
        );
        for r in &requests {
            assert_eq!(r.header("dd-api-key"), Some("abc123"));
            assert_eq!(r.header("content-encoding"), Some("gzip"));
            assert_eq!(r.header("content-type"), Some("application/json"));
        }
        assert_eq!(requests[0].json()["series"][1]["type"], "rate");
        assert_eq!(requests[1].json()[0]["check"], "db.up");
        assert_eq!(requests[2].json()["title"], "deploy");
        // One batch, three requests: one key each, numbered in sending order.
        let batch = batch_of(requests[0].key());
        for (part, r) in requests.iter().enumerate() {
            assert_eq!(r.key(), format!("{batch}-{part}"));
        }
        set.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn retry_resumes_after_the_delivered_requests() {
        let server = CaptureServer::start(Answer::FailFirst(1)).await;
        let mut batch = sample_batch();
        batch.events.clear();
        let c = config(&server.url, "k");
        let set =
            SinkSet::start(&[SinkConfig::Datadog(c)], Duration::from_secs(3)).expect("starts");
        let (_, stats) = set.stats().remove(0);
        set.submit(Arc::new(batch));
        wait_for(Duration::from_secs(4), "delivery", || {
            stats.sent.load(Ordering::Relaxed) == 3
        })
        .await;
        let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(
            paths,
            ["/api/v1/series", "/api/v1/series", "/api/v1/check_run"]
        );
        // The retried series request keeps its key; the check run has its own.
        let keys: Vec<String> = server
            .requests()
            .iter()
            .map(|r| r.key().to_owned())
            .collect();
        assert_eq!(keys[0], keys[1]);
        assert_ne!(keys[1], keys[2]);
        assert_eq!(batch_of(&keys[1]), batch_of(&keys[2]));
        assert_eq!(stats.errors.load(Ordering::Relaxed), 1);
        set.shutdown(Duration::from_secs(1)).await;
    }
}
