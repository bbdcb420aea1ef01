//! The `http` sink: SPEC §4's JSON document POSTed to any URL, optionally gzipped, with
//! configured headers; with `batch_max_bytes` set, a large flush is split into several complete
//! documents. Also the HTTP plumbing the other HTTP sinks share: URL and header validation, the
//! client, an [`Outbox`] of encoded requests (plain, gzip or snappy) that resumes after a partial
//! delivery, and [`post`] with its status classification.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::{Client, Url};
use serde::{Deserialize, Serialize};

use super::{
    default_max_retries, default_timeout, resolve_env, Compression, Secret, Sink, SinkConfigError,
    SinkError,
};
use crate::point::FlushBatch;

/// Response bytes read (and discarded) after a success so the connection can be reused; a
/// longer answer closes the connection instead.
const MAX_DRAIN_BYTES: usize = 64 * 1024;

/// Bytes of an error response kept for the DEBUG log.
const ERROR_EXCERPT_BYTES: usize = 512;

/// Headers meterd sets itself; configuring them is an error.
const RESERVED_HEADERS: [&str; 5] = [
    "content-type",
    "content-encoding",
    "content-length",
    "transfer-encoding",
    "host",
];

/// `[[sinks]] type = "http"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Sink name (default `http`, then `http-2`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where to POST (required; `http` or `https`; may be `"${ENV}"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Extra request headers; values may be `"${ENV}"` (e.g. `Authorization`).
    pub headers: BTreeMap<String, Secret>,
    /// Body compression (default `none`).
    pub compression: Compression,
    /// Per-request timeout (default `"5s"`, at most half the interval).
    pub timeout: String,
    /// Further attempts after a retryable failure (default 3).
    pub max_retries: u32,
    /// Uncompressed bytes after which a document is closed and the flush's remaining metrics
    /// go into another one (default: unset, one document per flush).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_max_bytes: Option<usize>,
    /// Only metrics and service checks whose name starts with one of these (default: all).
    pub include: Vec<String>,
    /// No metric or service check whose name starts with one of these.
    pub exclude: Vec<String>,
    /// Tag keys removed before sending.
    pub drop_tags: Vec<String>,
    /// Tags added to everything sent.
    pub tags: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            name: None,
            url: None,
            headers: BTreeMap::new(),
            compression: Compression::None,
            timeout: default_timeout(),
            max_retries: default_max_retries(),
            batch_max_bytes: None,
            include: Vec::new(),
            exclude: Vec::new(),
            drop_tags: Vec::new(),
            tags: Vec::new(),
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

/// Smallest accepted `batch_max_bytes`: below it almost every request would carry one item.
pub(super) const MIN_BATCH_BYTES: usize = 1024;

/// Checks a `batch_max_bytes` value.
pub(super) fn check_batch_max_bytes(
    n: usize,
    key: &impl Fn(&str) -> String,
) -> Result<usize, SinkConfigError> {
    if n < MIN_BATCH_BYTES {
        return Err(SinkConfigError::new(
            key("batch_max_bytes"),
            format!("must be at least {MIN_BATCH_BYTES}"),
        ));
    }
    Ok(n)
}

/// Adds configured `headers` (values may be secrets) to `headers`, refusing the ones meterd
/// sets itself ([`RESERVED_HEADERS`] and `also_reserved`).
pub(super) fn add_headers(
    headers: &mut HeaderMap,
    configured: &BTreeMap<String, Secret>,
    also_reserved: &[&str],
    key: &impl Fn(&str) -> String,
) -> Result<(), SinkConfigError> {
    for (name, value) in configured {
        let header_key = || key(&format!("headers.{name}"));
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| SinkConfigError::new(header_key(), "invalid header name"))?;
        if RESERVED_HEADERS.contains(&header.as_str()) || also_reserved.contains(&header.as_str()) {
            return Err(SinkConfigError::new(header_key(), "is set by meterd"));
        }
        headers.insert(header, secret_header(value, header_key)?);
    }
    Ok(())
}

/// Parses an `http`/`https` URL with a host. Errors never echo the value (it may be a secret).
pub(super) fn parse_url(raw: &str, key: impl Fn() -> String) -> Result<Url, SinkConfigError> {
    if raw.is_empty() {
        return Err(SinkConfigError::new(key(), "missing"));
    }
    let url =
        Url::parse(raw).map_err(|e| SinkConfigError::new(key(), format!("invalid url: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SinkConfigError::new(key(), "scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(SinkConfigError::new(key(), "url has no host"));
    }
    Ok(url)
}

/// A header value from a secret: expanded, checked, and marked sensitive so it never shows in
/// reqwest's `Debug` output.
pub(super) fn secret_header(
    value: &Secret,
    key: impl Fn() -> String,
) -> Result<HeaderValue, SinkConfigError> {
    let expanded = value.resolve(&key)?;
    let mut header = HeaderValue::from_str(&expanded)
        .map_err(|_| SinkConfigError::new(key(), "invalid header value (control characters?)"))?;
    header.set_sensitive(true);
    Ok(header)
}

/// `Content-Type: application/json`, plus `Content-Encoding: gzip` when compressing.
pub(super) fn json_headers(gzip: bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if gzip {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    headers
}

/// One client per sink, so connections are reused between flushes. Redirects are not followed:
/// a POST redirected is a misconfigured URL, reported as its 3xx status.
pub(super) fn build_client(timeout: Duration) -> Result<Client, reqwest::Error> {
    Client::builder()
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("meterd/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// How an [`Outbox`] request's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyEncoding {
    /// As written.
    Plain,
    /// gzip (`Content-Encoding: gzip`).
    Gzip,
    /// Snappy's block format, unframed (Prometheus remote write).
    Snappy,
}

impl BodyEncoding {
    /// [`BodyEncoding::Gzip`] when `gzip`, else [`BodyEncoding::Plain`].
    pub(super) const fn gzip_if(gzip: bool) -> Self {
        if gzip {
            BodyEncoding::Gzip
        } else {
            BodyEncoding::Plain
        }
    }
}

/// One encoded request waiting in an [`Outbox`].
#[derive(Debug, Default)]
struct Encoded {
    /// Index into the URLs given to [`Outbox::send`].
    endpoint: usize,
    /// Batch items this request carries.
    items: u64,
    /// Shared with the request in flight, so a retry sends it again without a copy.
    body: Bytes,
}

/// A batch encoded as one or more requests, sent in order. A retry resumes at the first request
/// not yet delivered.
///
/// Bodies live only as long as their batch; the scratch buffer is reused across batches but
/// shrinks back when a batch needed far less than an earlier peak, so one large flush does not
/// hold its memory for the life of the process.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    /// Requests of the current batch.
    requests: Vec<Encoded>,
    /// First request not yet delivered.
    next: usize,
    delivered: u64,
    raw: Vec<u8>,
    /// The longest uncompressed body of the current batch.
    raw_peak: usize,
}

/// Scratch capacity an [`Outbox`] keeps whatever its batches need.
const RAW_KEEP: usize = 64 * 1024;

impl Outbox {
    /// Forgets the previous batch and frees its bodies; the scratch buffer shrinks to the
    /// previous batch's need when it holds more than twice that.
    pub(super) fn clear(&mut self) {
        self.requests.clear();
        self.next = 0;
        self.delivered = 0;
        let need = self.raw_peak.max(RAW_KEEP);
        if self.raw.capacity() > 2 * need {
            self.raw = Vec::with_capacity(need);
        }
        self.raw_peak = 0;
    }

    /// The cleared scratch buffer to write the next request's uncompressed body into.
    pub(super) fn raw(&mut self) -> &mut Vec<u8> {
        self.raw.clear();
        &mut self.raw
    }

    /// The scratch buffer as it is, to go on writing the current request's body.
    pub(super) fn raw_mut(&mut self) -> &mut Vec<u8> {
        &mut self.raw
    }

    /// What was written into [`Outbox::raw`] so far (the current request's uncompressed body).
    pub(super) fn raw_len(&self) -> usize {
        self.raw.len()
    }

    /// Turns what was written into [`Outbox::raw`] into a request for `endpoint` carrying
    /// `items` batch items, compressed as asked.
    pub(super) fn push(
        &mut self,
        endpoint: usize,
        items: u64,
        encoding: BodyEncoding,
    ) -> Result<(), SinkError> {
        self.raw_peak = self.raw_peak.max(self.raw.len());
        let body = match encoding {
            BodyEncoding::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(
                    Vec::with_capacity(self.raw.len() / 4),
                    flate2::Compression::default(),
                );
                encoder
                    .write_all(&self.raw)
                    .and_then(|()| encoder.finish())
                    .map_err(|e| SinkError::Encode(format!("gzip: {e}")))?
            }
            BodyEncoding::Snappy => snap::raw::Encoder::new()
                .compress_vec(&self.raw)
                .map_err(|e| SinkError::Encode(format!("snappy: {e}")))?,
            // The body takes the scratch buffer as it is; the next request starts a new one.
            BodyEncoding::Plain => std::mem::take(&mut self.raw),
        };
        self.requests.push(Encoded {
            endpoint,
            items,
            body: Bytes::from(body),
        });
        Ok(())
    }

    /// Sends the requests not yet delivered, in order, stopping at the first failure.
    pub(super) async fn send(
        &mut self,
        client: &Client,
        urls: &[Url],
        headers: &HeaderMap,
        timeout: Duration,
    ) -> Result<(), SinkError> {
        while let Some(request) = self.requests.get(self.next) {
            let Some(url) = urls.get(request.endpoint) else {
                return Err(SinkError::InvalidRequest("no url for endpoint".into()));
            };
            post(client, url, headers, request.body.clone(), timeout).await?;
            self.delivered += request.items;
            self.next += 1;
        }
        Ok(())
    }

    /// Items delivered of the current batch.
    pub(super) fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The current batch's request bodies, for tests.
    #[cfg(test)]
    pub(super) fn bodies(&self) -> impl Iterator<Item = (usize, u64, &[u8])> {
        self.requests
            .iter()
            .map(|r| (r.endpoint, r.items, r.body.as_ref()))
    }
}

/// POSTs one body and classifies the outcome: 2xx is success, anything else a
/// [`SinkError::Status`]; the whole exchange is bounded by `timeout`.
pub(super) async fn post(
    client: &Client,
    url: &Url,
    headers: &HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<(), SinkError> {
    let request = client.post(url.clone()).headers(headers.clone()).body(body);
    let exchange = async {
        let mut response = request.send().await.map_err(SinkError::from_reqwest)?;
        let status = response.status();
        if status.is_success() {
            let mut read = 0;
            while read < MAX_DRAIN_BYTES {
                match response.chunk().await {
                    Ok(Some(chunk)) => read += chunk.len(),
                    Ok(None) | Err(_) => break,
                }
            }
            return Ok(());
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let mut excerpt = Vec::new();
            while excerpt.len() < ERROR_EXCERPT_BYTES {
                match response.chunk().await {
                    Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
                    Ok(None) | Err(_) => break,
                }
            }
            excerpt.truncate(ERROR_EXCERPT_BYTES);
            let text = String::from_utf8_lossy(&excerpt);
            tracing::debug!(%status, response = %text.escape_debug(), "error response");
        }
        Err(SinkError::Status(status))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(SinkError::Timeout(timeout)))
}

/// POSTs each batch as SPEC §4's JSON document (or several, with `batch_max_bytes`).
pub(super) struct HttpSink {
    client: Client,
    urls: [Url; 1],
    headers: HeaderMap,
    gzip: bool,
    batch_max_bytes: Option<usize>,
    timeout: Duration,
    outbox: Outbox,
}

impl HttpSink {
    pub(super) fn new(settings: HttpSettings, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(HttpSink {
            client: build_client(timeout)?,
            urls: [settings.url],
            headers: settings.headers,
            gzip: settings.gzip,
            batch_max_bytes: settings.batch_max_bytes,
            timeout,
            outbox: Outbox::default(),
        })
    }
}

fn json_error(err: serde_json::Error) -> SinkError {
    SinkError::Encode(err.to_string())
}

/// Encodes `batch` as documents of about `max_bytes` uncompressed bytes each: a document is
/// closed once it passes the limit (so it holds at least one metric). The first carries the
/// service checks and events (counted towards its size); every document has all three keys, like
/// one built by serde from a [`FlushBatch`].
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
    first_tail.push(b'}');
    const TAIL: &[u8] = b"],\"service_checks\":[],\"events\":[]}";
    let mut points = batch.metrics.iter().peekable();
    let mut first = true;
    while first || points.peek().is_some() {
        let tail: &[u8] = if first { &first_tail } else { TAIL };
        let raw = outbox.raw();
        raw.extend_from_slice(b"{\"metrics\":[");
        let mut items = 0u64;
        while let Some(point) = points.next_if(|_| items == 0 || raw.len() + tail.len() < max_bytes)
        {
            if items > 0 {
                raw.push(b',');
            }
            serde_json::to_writer(&mut *raw, point).map_err(json_error)?;
            items += 1;
        }
        raw.extend_from_slice(tail);
        if first {
            items += (batch.service_checks.len() + batch.events.len()) as u64;
        }
        outbox.push(0, items, encoding)?;
        first = false;
    }
    Ok(())
}

impl Sink for HttpSink {
    fn encode(&mut self, batch: &FlushBatch) -> Result<(), SinkError> {
        self.outbox.clear();
        let encoding = BodyEncoding::gzip_if(self.gzip);
        if let Some(max_bytes) = self.batch_max_bytes {
            return encode_split(&mut self.outbox, batch, max_bytes, encoding);
        }
        serde_json::to_writer(self.outbox.raw(), batch).map_err(json_error)?;
        self.outbox.push(0, batch.len() as u64, encoding)
    }

    async fn send(&mut self) -> Result<(), SinkError> {
        self.outbox
            .send(&self.client, &self.urls, &self.headers, self.timeout)
            .await
    }

    fn delivered(&self) -> u64 {
        self.outbox.delivered()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::tests::{sample_batch, wait_for, Answer, CaptureServer};
    use crate::sinks::{SinkConfig, SinkSet};
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
        s.encode(&batch).expect("encodes");
        let bodies: Vec<_> = s.outbox.bodies().collect();
        assert_eq!(bodies.len(), 1);
        let (endpoint, items, body) = bodies[0];
        assert_eq!((endpoint, items), (0, 4));
        assert_eq!(body, serde_json::to_vec(&batch).expect("json").as_slice());
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
            s.encode(&batch).expect("encodes");
            let bodies: Vec<_> = s.outbox.bodies().collect();
            assert_eq!(bodies.len(), 1);
            let doc: serde_json::Value =
                serde_json::from_slice(&gunzip(bodies[0].2)).expect("json");
            assert_eq!(doc, serde_json::to_value(&batch).expect("value"));
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
        s.encode(&large).expect("encodes");
        let peak = s.outbox.raw.capacity();
        assert!(peak > 4 * RAW_KEEP, "the large batch needed {peak} bytes");
        // The batch after the large one still sees its peak; the one after that shrinks.
        s.encode(&small).expect("encodes");
        s.encode(&small).expect("encodes");
        assert!(
            s.outbox.raw.capacity() <= 2 * RAW_KEEP,
            "scratch kept {} bytes",
            s.outbox.raw.capacity()
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&gunzip(s.outbox.bodies().next().expect("body").2))
                .expect("json");
        assert_eq!(doc, serde_json::to_value(&small).expect("value"));
    }

    #[test]
    fn batch_max_bytes_splits_into_complete_documents() {
        let mut batch = sample_batch();
        let point = batch.metrics[0].clone();
        batch.metrics = vec![point; 40];
        let mut c = config("http://127.0.0.1:9/");
        c.batch_max_bytes = Some(2048);
        let mut s = sink(&c);
        s.encode(&batch).expect("encodes");
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
        let mut metrics = Vec::new();
        for (i, (items, len, doc)) in docs.iter().enumerate() {
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
        s.encode(&batch).expect("encodes");
        let bodies: Vec<_> = s.outbox.bodies().collect();
        assert_eq!(bodies.len(), 1);
        assert_eq!(
            bodies[0].2,
            serde_json::to_vec(&batch).expect("json").as_slice()
        );
        assert_eq!(bodies[0].1, 4);
        // An empty flush is still one document.
        s.encode(&FlushBatch::default()).expect("encodes");
        let bodies: Vec<_> = s.outbox.bodies().collect();
        assert_eq!(bodies.len(), 1);
        assert_eq!(
            bodies[0].2,
            br#"{"metrics":[],"service_checks":[],"events":[]}"#
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
        assert_eq!(r.json(), serde_json::to_value(&*batch).expect("value"));
        set.shutdown(Duration::from_secs(1)).await;
    }
}
