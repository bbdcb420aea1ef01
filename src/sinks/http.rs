//! The `http` sink: the JSON document of `docs/sinks.md#the-json-document` POSTed to any URL,
//! optionally gzipped, with configured headers; with `batch_max_bytes` set, a large flush is split
//! into several complete documents. Each document carries its request's `Idempotency-Key` as
//! `"idempotency_key"` too, for receivers that see the body but not the headers. Posted by the
//! transport every HTTP sink shares (`transport.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::config::{resolve_env, SinkCommon};
use super::transport::{
    add_headers, check_batch_max_bytes, json_error, json_headers, parse_url, BodyEncoding,
    EncodeRequests, Outbox, Poster,
};
use super::{Compression, Secret, SinkConfigError, SinkError};
use crate::point::FlushBatch;

/// `[[sinks]] type = "http"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// The keys every sink takes (`name`, `timeout`, `max_retries`, the filter's).
    #[serde(skip)]
    pub common: SinkCommon,
    /// Where to POST (required; `http` or `https`; may be `"${ENV}"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Extra request headers; values may be `"${ENV}"` (e.g. `Authorization`).
    pub headers: BTreeMap<String, Secret>,
    /// Body compression (default `none`).
    pub compression: Compression,
    /// Uncompressed bytes after which a document is closed and the flush's remaining metrics
    /// go into another one (default: unset, one document per flush).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_max_bytes: Option<usize>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            common: SinkCommon::default(),
            url: None,
            headers: BTreeMap::new(),
            compression: Compression::None,
            batch_max_bytes: None,
        }
    }
}

/// The validated `http` settings.
pub(super) struct HttpSettings {
    url: Url,
    headers: HeaderMap,
    gzip: bool,
    batch_max_bytes: Option<usize>,
}

pub(super) fn validate(
    config: &HttpConfig,
    key: &impl Fn(&str) -> String,
) -> Result<HttpSettings, SinkConfigError> {
    let raw = config
        .url
        .as_deref()
        .ok_or_else(|| SinkConfigError::new(key("url"), "missing"))?;
    let url = parse_url(&resolve_env(raw, || key("url"))?, || key("url"))?;
    let gzip = config.compression == Compression::Gzip;
    let mut headers = json_headers(gzip);
    add_headers(&mut headers, &config.headers, &[], key)?;
    let batch_max_bytes = config
        .batch_max_bytes
        .map(|n| check_batch_max_bytes(n, key))
        .transpose()?;
    Ok(HttpSettings {
        url,
        headers,
        gzip,
        batch_max_bytes,
    })
}

/// How the `http` sink encodes a batch: the JSON document of `docs/sinks.md#the-json-document` (or
/// several, with `batch_max_bytes`).
pub(super) struct JsonDocuments {
    gzip: bool,
    batch_max_bytes: Option<usize>,
}

/// POSTs each batch as the JSON document of `docs/sinks.md#the-json-document` (or several, with
/// `batch_max_bytes`).
pub(super) type HttpSink = Poster<JsonDocuments>;

impl HttpSink {
    pub(super) fn new(settings: HttpSettings, timeout: Duration) -> Result<Self, reqwest::Error> {
        let encoder = JsonDocuments {
            gzip: settings.gzip,
            batch_max_bytes: settings.batch_max_bytes,
        };
        Poster::build(encoder, [settings.url], settings.headers, timeout)
    }
}

/// One document: the batch's three arrays, then the request's key.
#[derive(Serialize)]
struct Document<'a> {
    #[serde(flatten)]
    batch: &'a FlushBatch,
    idempotency_key: &'a str,
}

/// `,"idempotency_key":KEY}`: what closes every document.
fn key_field(key: &str) -> Result<Vec<u8>, SinkError> {
    let mut field = Vec::from(&b",\"idempotency_key\":"[..]);
    serde_json::to_writer(&mut field, key).map_err(json_error)?;
    field.push(b'}');
    Ok(field)
}

/// Encodes `batch` as documents of about `max_bytes` uncompressed bytes each: a document is
/// closed once it passes the limit (so it holds at least one metric). The first carries the
/// service checks and events (counted towards its size); every document has all four keys, like
/// a [`Document`] built by serde.
fn encode_split(
    outbox: &mut Outbox,
    batch: &FlushBatch,
    max_bytes: usize,
    encoding: BodyEncoding,
) -> Result<(), SinkError> {
    let mut first_tail = Vec::from(&b"],\"service_checks\":"[..]);
    serde_json::to_writer(&mut first_tail, &batch.service_checks).map_err(json_error)?;
    first_tail.extend_from_slice(b",\"events\":");
    serde_json::to_writer(&mut first_tail, &batch.events).map_err(json_error)?;
    const TAIL: &[u8] = b"],\"service_checks\":[],\"events\":[]";
    let mut points = batch.metrics.iter().peekable();
    let mut first = true;
    while first || points.peek().is_some() {
        let tail: &[u8] = if first { &first_tail } else { TAIL };
        let key = key_field(&outbox.next_key())?;
        let raw = outbox.raw();
        raw.extend_from_slice(b"{\"metrics\":[");
        let mut items = 0u64;
        while let Some(point) =
            points.next_if(|_| items == 0 || raw.len() + tail.len() + key.len() < max_bytes)
        {
            if items > 0 {
                raw.push(b',');
            }
            serde_json::to_writer(&mut *raw, point).map_err(json_error)?;
            items += 1;
        }
        raw.extend_from_slice(tail);
        raw.extend_from_slice(&key);
        if first {
            items += (batch.service_checks.len() + batch.events.len()) as u64;
        }
        outbox.push(0, items, encoding)?;
        first = false;
    }
    Ok(())
}

impl EncodeRequests for JsonDocuments {
    fn encode(&mut self, batch: &FlushBatch, outbox: &mut Outbox) -> Result<(), SinkError> {
        outbox.clear();
        let encoding = BodyEncoding::gzip_if(self.gzip);
        if let Some(max_bytes) = self.batch_max_bytes {
            return encode_split(outbox, batch, max_bytes, encoding);
        }
        let key = outbox.next_key();
        let document = Document {
            batch,
            idempotency_key: &key,
        };
        serde_json::to_writer(outbox.raw(), &document).map_err(json_error)?;
        outbox.push(0, batch.len() as u64, encoding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::idempotency::BatchId;
    use crate::sinks::testing::{batch_of, sample_batch, wait_for, Answer, CaptureServer};
    use crate::sinks::transport::RAW_KEEP;
    use crate::sinks::Sink;
    use crate::sinks::{SinkConfig, SinkSet};
    use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
    use std::io::Read;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    fn key(k: &str) -> String {
        format!("sinks[0].{k}")
    }

    fn config(url: &str) -> HttpConfig {
        HttpConfig {
            url: Some(url.to_owned()),
            ..HttpConfig::default()
        }
    }

    fn gunzip(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    fn sink(config: &HttpConfig) -> HttpSink {
        let settings = validate(config, &key).expect("valid");
        HttpSink::new(settings, Duration::from_secs(1)).expect("client")
    }

    /// `batch` as serde writes it, with `key` as its `idempotency_key`.
    fn document(batch: &FlushBatch, key: &str) -> Vec<u8> {
        serde_json::to_vec(&Document {
            batch,
            idempotency_key: key,
        })
        .expect("json")
    }

    /// `batch` as a JSON value, with `key` as its `idempotency_key`.
    fn document_value(batch: &FlushBatch, key: &str) -> serde_json::Value {
        serde_json::from_slice(&document(batch, key)).expect("json")
    }

    #[test]
    fn missing_url_names_the_key() {
        let err = validate(&HttpConfig::default(), &key)
            .err()
            .expect("missing url");
        assert_eq!(err.to_string(), "sinks[0].url: missing");
    }

    #[test]
    fn bad_urls_are_rejected() {
        for bad in [
            "",
            "example.com/x",
            "ftp://example.com/",
            "http://",
            "unix:/tmp/x",
        ] {
            let err = validate(&config(bad), &key).err().expect(bad);
            assert_eq!(err.key, "sinks[0].url", "{bad}");
        }
        assert!(validate(&config("https://example.com:8443/ingest?x=1"), &key).is_ok());
    }

    #[test]
    fn secrets_are_expanded_from_the_environment() {
        // PATH is always set; a test never modifies the process environment.
        let path = std::env::var("PATH").expect("PATH set");
        let mut c = config("http://127.0.0.1:9/");
        c.headers.insert("X-Token".into(), Secret::new("${PATH}"));
        let settings = validate(&c, &key).expect("valid");
        assert_eq!(settings.headers["x-token"], path.as_str());
        assert!(settings.headers["x-token"].is_sensitive());
    }

    #[test]
    fn missing_secret_names_key_and_variable() {
        let mut c = config("http://127.0.0.1:9/");
        c.headers.insert(
            "Authorization".into(),
            Secret::new("${METERD_TEST_SURELY_UNSET_VARIABLE}"),
        );
        let err = validate(&c, &key).err().expect("unset variable");
        assert_eq!(
            err.to_string(),
            "sinks[0].headers.Authorization: environment variable \
             METERD_TEST_SURELY_UNSET_VARIABLE is not set"
        );
        let c = config("${METERD_TEST_SURELY_UNSET_VARIABLE}");
        let err = validate(&c, &key).err().expect("unset variable");
        assert_eq!(err.key, "sinks[0].url");
    }

    #[test]
    fn header_secrets_stay_out_of_debug_output() {
        let mut c = config("http://127.0.0.1:9/");
        c.headers
            .insert("Authorization".into(), Secret::new("Bearer hunter2"));
        let as_sink_config = SinkConfig::Http(c.clone());
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{as_sink_config:?}").contains("hunter2"));
        let settings = validate(&c, &key).expect("valid");
        assert!(!format!("{:?}", settings.headers).contains("hunter2"));
    }

    #[test]
    fn bad_and_reserved_headers_are_rejected() {
        let mut c = config("http://127.0.0.1:9/");
        c.headers
            .insert("Content-Type".into(), Secret::new("text/plain"));
        let err = validate(&c, &key).err().expect("reserved header");
        assert_eq!(err.key, "sinks[0].headers.Content-Type");
        let mut c = config("http://127.0.0.1:9/");
        c.headers.insert("X-Bad".into(), Secret::new("a\nb"));
        let err = validate(&c, &key).err().expect("bad value");
        assert_eq!(err.key, "sinks[0].headers.X-Bad");
        assert!(!err.to_string().contains("a\nb"));
        let mut c = config("http://127.0.0.1:9/");
        c.headers.insert("bad name".into(), Secret::new("x"));
        assert!(validate(&c, &key).is_err());
    }

    #[test]
    fn encodes_the_spec_document() {
        let batch = sample_batch();
        let mut s = sink(&config("http://127.0.0.1:9/"));
        s.encode(&batch, BatchId::default()).expect("encodes");
        let bodies: Vec<_> = s.outbox.bodies().collect();
        assert_eq!(bodies.len(), 1);
        let (endpoint, items, body) = bodies[0];
        assert_eq!((endpoint, items), (0, 4));
        let key = s.outbox.keys()[0];
        assert_eq!(key, BatchId::default().request_key(0));
        assert_eq!(body, document(&batch, key).as_slice());
        // The spec document, plus the key as a last top-level field.
        let mut want = serde_json::to_value(&batch).expect("value");
        want["idempotency_key"] = key.into();
        let got: serde_json::Value = serde_json::from_slice(body).expect("json");
        assert_eq!(got, want);
        assert!(body.ends_with(format!(",\"idempotency_key\":\"{key}\"}}").as_bytes()));
        assert_eq!(s.headers[CONTENT_TYPE], "application/json");
        assert!(s.headers.get(CONTENT_ENCODING).is_none());
    }

    #[test]
    fn gzip_round_trips_and_old_batches_are_freed() {
        let batch = sample_batch();
        let mut c = config("http://127.0.0.1:9/");
        c.compression = Compression::Gzip;
        let mut s = sink(&c);
        assert_eq!(s.headers[CONTENT_ENCODING], "gzip");
        for _ in 0..3 {
            let id = BatchId::next(1);
            s.encode(&batch, id).expect("encodes");
            let bodies: Vec<_> = s.outbox.bodies().collect();
            assert_eq!(bodies.len(), 1);
            let doc: serde_json::Value =
                serde_json::from_slice(&gunzip(bodies[0].2)).expect("json");
            assert_eq!(doc, document_value(&batch, &id.request_key(0)));
        }
        assert_eq!(
            s.outbox.requests.len(),
            1,
            "earlier batches' bodies are gone"
        );
    }

    #[test]
    fn scratch_shrinks_after_a_large_batch() {
        let mut large = sample_batch();
        let point = large.metrics[0].clone();
        large.metrics = vec![point; 20_000];
        let small = sample_batch();
        let mut c = config("http://127.0.0.1:9/");
        c.compression = Compression::Gzip;
        let mut s = sink(&c);
        s.encode(&large, BatchId::default()).expect("encodes");
        let peak = s.outbox.raw.capacity();
        assert!(peak > 4 * RAW_KEEP, "the large batch needed {peak} bytes");
        // The batch after the large one still sees its peak; the one after that shrinks.
        s.encode(&small, BatchId::default()).expect("encodes");
        s.encode(&small, BatchId::default()).expect("encodes");
        assert!(
            s.outbox.raw.capacity() <= 2 * RAW_KEEP,
            "scratch kept {} bytes",
            s.outbox.raw.capacity()
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&gunzip(s.outbox.bodies().next().expect("body").2))
                .expect("json");
        assert_eq!(
            doc,
            document_value(&small, &BatchId::default().request_key(0))
        );
    }

    #[test]
    fn batch_max_bytes_splits_into_complete_documents() {
        let mut batch = sample_batch();
        let point = batch.metrics[0].clone();
        batch.metrics = vec![point; 40];
        let mut c = config("http://127.0.0.1:9/");
        c.batch_max_bytes = Some(2048);
        let mut s = sink(&c);
        let id = BatchId::next(7);
        s.encode(&batch, id).expect("encodes");
        let docs: Vec<(u64, usize, serde_json::Value)> = s
            .outbox
            .bodies()
            .map(|(_, items, body)| {
                (
                    items,
                    body.len(),
                    serde_json::from_slice(body).expect("json"),
                )
            })
            .collect();
        assert!(docs.len() > 2, "{} documents", docs.len());
        let keys = s.outbox.keys();
        let mut metrics = Vec::new();
        for (i, (items, len, doc)) in docs.iter().enumerate() {
            // Each part has a key of its own, in its header and its document.
            assert_eq!(keys[i], id.request_key(i));
            assert_eq!(doc["idempotency_key"], keys[i]);
            let m = doc["metrics"].as_array().expect("metrics");
            let checks = doc["service_checks"]
                .as_array()
                .expect("service_checks")
                .len();
            let events = doc["events"].as_array().expect("events").len();
            assert_eq!(*items as usize, m.len() + checks + events);
            if i > 0 {
                assert_eq!(
                    (checks, events),
                    (0, 0),
                    "checks and events go in the first"
                );
            }
            // Closed once past the limit: at most one point over it.
            assert!(*len < 2048 + 300, "{len}");
            metrics.extend(m.iter().cloned());
        }
        assert_eq!(
            serde_json::Value::Array(metrics),
            serde_json::to_value(&batch.metrics).expect("value")
        );
        // Everything fits: the same bytes as one serde document.
        c.batch_max_bytes = Some(1 << 20);
        let mut s = sink(&c);
        let batch = sample_batch();
        s.encode(&batch, id).expect("encodes");
        let bodies: Vec<_> = s.outbox.bodies().collect();
        assert_eq!(bodies.len(), 1);
        assert_eq!(bodies[0].2, document(&batch, &id.request_key(0)).as_slice());
        assert_eq!(bodies[0].1, 4);
        // An empty flush is still one document.
        s.encode(&FlushBatch::default(), id).expect("encodes");
        let bodies: Vec<_> = s.outbox.bodies().collect();
        assert_eq!(bodies.len(), 1);
        assert_eq!(
            bodies[0].2,
            format!(
                r#"{{"metrics":[],"service_checks":[],"events":[],"idempotency_key":"{}"}}"#,
                id.request_key(0)
            )
            .as_bytes()
        );
        c.batch_max_bytes = Some(10);
        assert_eq!(
            validate(&c, &key).err().expect("tiny").key,
            "sinks[0].batch_max_bytes"
        );
    }

    #[tokio::test]
    async fn posts_with_headers_and_gzip() {
        let server = CaptureServer::start(Answer::Status(200)).await;
        let path = std::env::var("PATH").expect("PATH set");
        let mut c = config(&format!("{}/ingest/v1?src=meterd", server.url));
        c.compression = Compression::Gzip;
        c.headers.insert("X-Path".into(), Secret::new("${PATH}"));
        let set = SinkSet::start(&[SinkConfig::Http(c)], Duration::from_secs(2)).expect("starts");
        let (_, stats) = set.stats().remove(0);
        let batch = Arc::new(sample_batch());
        set.submit(Arc::clone(&batch));
        wait_for(Duration::from_secs(3), "delivery", || {
            stats.sent.load(Ordering::Relaxed) == 4
        })
        .await;
        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert_eq!(r.path, "/ingest/v1?src=meterd");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.header("x-path"), Some(path.as_str()));
        assert!(r
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("meterd/")));
        assert_eq!(r.json(), document_value(&batch, r.key()));
        set.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn retries_repeat_the_key_and_parts_and_batches_differ() {
        let server = CaptureServer::start(Answer::FailFirst(1)).await;
        let mut c = config(&server.url);
        c.batch_max_bytes = Some(1024);
        let set = SinkSet::start(&[SinkConfig::Http(c)], Duration::from_secs(3)).expect("starts");
        let (_, stats) = set.stats().remove(0);
        let mut batch = sample_batch();
        let point = batch.metrics[0].clone();
        batch.metrics = vec![point; 20];
        let items = batch.len() as u64;
        let batch = Arc::new(batch);
        set.submit(Arc::clone(&batch));
        wait_for(Duration::from_secs(4), "first batch", || {
            stats.sent.load(Ordering::Relaxed) == items
        })
        .await;
        set.submit(Arc::clone(&batch));
        wait_for(Duration::from_secs(4), "second batch", || {
            stats.sent.load(Ordering::Relaxed) == 2 * items
        })
        .await;
        let requests = server.requests();
        let keys: Vec<&str> = requests.iter().map(|r| r.key()).collect();
        // Every document says which request it is, as its header does.
        for r in &requests {
            assert_eq!(r.json()["idempotency_key"], r.key());
        }
        // The first request failed and was sent again: the same key on both attempts.
        assert_eq!(keys[0], keys[1]);
        assert_eq!(requests[0].body, requests[1].body);
        // Every other request has a key of its own: parts of one batch and the two batches.
        let distinct: std::collections::BTreeSet<&str> = keys.iter().copied().collect();
        assert_eq!(distinct.len(), keys.len() - 1, "{keys:?}");
        let parts = (keys.len() - 1) / 2;
        assert!(parts > 1, "the batch was not split: {keys:?}");
        let first = batch_of(keys[0]);
        assert!(keys[..=parts].iter().all(|k| batch_of(k) == first));
        assert!(keys[parts + 1..].iter().all(|k| batch_of(k) != first));
        set.shutdown(Duration::from_secs(1)).await;
    }
}
