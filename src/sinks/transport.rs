//! The one path for posting a batch over HTTP, shared by the `http`, `datadog`, `influxdb` and
//! `prometheus_remote_write` sinks (and the forwarder's status classification): URL and header
//! validation, the client, an [`Outbox`] of encoded requests (plain, gzip or snappy) that resumes
//! after a partial delivery, [`post`] with its status classification, and [`Poster`], the [`Sink`]
//! every HTTP sink is: its own [`EncodeRequests`] plus this transport.
//!
//! Every request carries an [`IDEMPOTENCY_KEY`] header, fixed when the request is encoded (one
//! key per request of a batch, `idempotency.rs`), so each attempt sends the same key.
//!
//! Whether another attempt may help is a property of the error ([`SinkError::is_retryable`]):
//! retryable are timeouts, connection failures, broken connections, HTTP 429 and 5xx; permanent
//! are other non-2xx statuses (the same request would fail again), encode errors and invalid
//! requests. The runner bounds all attempts of one batch by the flush interval.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use reqwest::{Client, StatusCode, Url};

use super::config::resolve_env;
use super::idempotency::BatchId;
use super::{Secret, Sink, SinkConfigError};
use crate::point::FlushBatch;

/// Response bytes read (and discarded) after a success so the connection can be reused; a
/// longer answer closes the connection instead.
const MAX_DRAIN_BYTES: usize = 64 * 1024;

/// Bytes of an error response kept for the DEBUG log.
const ERROR_EXCERPT_BYTES: usize = 512;

/// The header naming the request (`docs/sinks.md#retries-and-duplicates`): the same on every
/// attempt, different for every other request.
pub(super) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Headers meterd sets itself; configuring them is an error.
const RESERVED_HEADERS: [&str; 6] = [
    "content-type",
    "content-encoding",
    "content-length",
    "transfer-encoding",
    "host",
    "idempotency-key",
];

/// Why one delivery attempt failed. Whether another attempt may help is
/// [`SinkError::is_retryable`] (policy below).
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

/// Whether an HTTP status is worth another attempt: 429 Too Many Requests and every 5xx.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

impl SinkError {
    /// Whether the same request may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Timeout(_) | SinkError::Connect(_) | SinkError::Request(_) => true,
            SinkError::Status(status) => is_retryable_status(*status),
            SinkError::InvalidRequest(_) | SinkError::Encode(_) => false,
            SinkError::Io(err) => matches!(
                err.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
            ),
        }
    }

    /// Classifies a reqwest failure. The URL is stripped from the message: it may hold a secret
    /// expanded from `${ENV}`.
    pub(crate) fn from_reqwest(err: reqwest::Error) -> SinkError {
        let err = err.without_url();
        let message = error_chain(&err);
        if err.is_builder() {
            SinkError::InvalidRequest(message)
        } else if err.is_connect() {
            SinkError::Connect(message)
        } else {
            SinkError::Request(message)
        }
    }
}

/// `err` and its sources joined by `: `, so "error sending request" says why.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // hyper and reqwest sometimes repeat their source's text; keep it once.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
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
    sensitive_header(&value.resolve(&key)?, key)
}

/// A header value holding a secret, checked and marked sensitive (never shown in `Debug` output).
pub(super) fn sensitive_header(
    value: &str,
    key: impl Fn() -> String,
) -> Result<HeaderValue, SinkConfigError> {
    let mut header = HeaderValue::from_str(value)
        .map_err(|_| SinkConfigError::new(key(), "invalid header value (control characters?)"))?;
    header.set_sensitive(true);
    Ok(header)
}

/// An API or server base URL (`url` of the `datadog` and `influxdb` sinks) that endpoint paths
/// are appended to.
pub(super) struct BaseUrl {
    /// Without a trailing `/`.
    base: String,
    /// The setting, for errors.
    key: String,
}

impl BaseUrl {
    /// Expands `${ENV}` in `configured` and checks it: an `http`/`https` URL without query or
    /// fragment; `what` names it in that error (`an API base`).
    pub(super) fn parse(
        configured: &str,
        what: &str,
        key: String,
    ) -> Result<BaseUrl, SinkConfigError> {
        let url_key = || key.clone();
        let base = parse_url(&resolve_env(configured, url_key)?, url_key)?;
        if base.query().is_some() || base.fragment().is_some() {
            return Err(SinkConfigError::new(
                key,
                format!("must be {what} without query or fragment"),
            ));
        }
        let base = base.as_str().trim_end_matches('/').to_owned();
        Ok(BaseUrl { base, key })
    }

    /// The base followed by `path`.
    pub(super) fn join(&self, path: &str) -> Result<Url, SinkConfigError> {
        Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| SinkConfigError::new(self.key.clone(), format!("invalid url: {e}")))
    }
}

/// `Content-Type: application/json`, plus `Content-Encoding: gzip` when compressing.
pub(super) fn json_headers(gzip: bool) -> HeaderMap {
    content_headers("application/json", gzip)
}

/// `Content-Type: content_type`, plus `Content-Encoding: gzip` when compressing.
pub(super) fn content_headers(content_type: &'static str, gzip: bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
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
#[derive(Debug)]
pub(super) struct Encoded {
    /// Index into the URLs given to [`Outbox::send`].
    endpoint: usize,
    /// Batch items this request carries.
    items: u64,
    /// Shared with the request in flight, so a retry sends it again without a copy.
    body: Bytes,
    /// Its [`IDEMPOTENCY_KEY`], sent with every attempt.
    key: HeaderValue,
}

/// A batch encoded as one or more requests, sent in order. A retry resumes at the first request
/// not yet delivered.
///
/// Bodies live only as long as their batch; the scratch buffer is reused across batches but
/// shrinks back when a batch needed far less than an earlier peak, so one large flush does not
/// hold its memory for the life of the process.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    /// Requests of the current batch (read by the sinks' tests).
    pub(super) requests: Vec<Encoded>,
    /// First request not yet delivered.
    next: usize,
    delivered: u64,
    /// The scratch buffer (read by the sinks' tests).
    pub(super) raw: Vec<u8>,
    /// The longest uncompressed body of the current batch.
    raw_peak: usize,
    /// The current batch, whose id its requests' keys are made from.
    batch: BatchId,
}

/// Scratch capacity an [`Outbox`] keeps whatever its batches need.
pub(super) const RAW_KEEP: usize = 64 * 1024;

impl Outbox {
    /// Names the batch about to be encoded: its requests' keys are made from `batch`.
    pub(super) fn begin(&mut self, batch: BatchId) {
        self.batch = batch;
    }

    /// The [`IDEMPOTENCY_KEY`] the next [`Outbox::push`] gives its request, for an encoder
    /// that also writes it into the body (the `http` sink's JSON).
    pub(super) fn next_key(&self) -> String {
        self.batch.request_key(self.requests.len())
    }

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
        let key = HeaderValue::try_from(self.next_key())
            .map_err(|e| SinkError::Encode(format!("idempotency key: {e}")))?;
        self.requests.push(Encoded {
            endpoint,
            items,
            body: Bytes::from(body),
            key,
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
            post(
                client,
                url,
                headers,
                &request.key,
                request.body.clone(),
                timeout,
            )
            .await?;
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

    /// The current batch's request keys, for tests.
    #[cfg(test)]
    pub(super) fn keys(&self) -> Vec<&str> {
        self.requests
            .iter()
            .map(|r| r.key.to_str().expect("ascii key"))
            .collect()
    }
}

/// POSTs one body with `headers` and `key` as its [`IDEMPOTENCY_KEY`], and classifies the
/// outcome: 2xx is success, anything else a [`SinkError::Status`]; the whole exchange is bounded
/// by `timeout`.
pub(super) async fn post(
    client: &Client,
    url: &Url,
    headers: &HeaderMap,
    key: &HeaderValue,
    body: Bytes,
    timeout: Duration,
) -> Result<(), SinkError> {
    let request = client
        .post(url.clone())
        .headers(headers.clone())
        .header(IDEMPOTENCY_KEY, key.clone())
        .body(body);
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

/// What an HTTP sink adds to the transport: turning a batch into the requests of an [`Outbox`].
pub(super) trait EncodeRequests: Send + 'static {
    /// As [`Sink::METRICS_ONLY`].
    const METRICS_ONLY: bool = false;

    /// Clears `outbox` and encodes `batch` into it as one or more requests.
    fn encode(&mut self, batch: &FlushBatch, outbox: &mut Outbox) -> Result<(), SinkError>;
}

/// An HTTP sink: its encoder, and how every HTTP sink sends: one client per sink (connections
/// reused between flushes), the endpoints its [`Outbox`] requests index, fixed headers, and the
/// per-request timeout.
pub(super) struct Poster<E> {
    encoder: E,
    client: Client,
    urls: Box<[Url]>,
    /// Sent with every request.
    pub(super) headers: HeaderMap,
    timeout: Duration,
    /// The current batch's requests.
    pub(super) outbox: Outbox,
}

impl<E: EncodeRequests> Poster<E> {
    /// A sink posting what `encoder` writes to `urls` (indexed by each request's endpoint).
    pub(super) fn build(
        encoder: E,
        urls: impl Into<Box<[Url]>>,
        headers: HeaderMap,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Poster {
            encoder,
            client: build_client(timeout)?,
            urls: urls.into(),
            headers,
            timeout,
            outbox: Outbox::default(),
        })
    }
}

impl<E: EncodeRequests> Sink for Poster<E> {
    const METRICS_ONLY: bool = E::METRICS_ONLY;

    fn encode(&mut self, batch: &FlushBatch, id: BatchId) -> Result<(), SinkError> {
        self.outbox.begin(id);
        self.encoder.encode(batch, &mut self.outbox)
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

/// Maps a JSON encoding failure.
pub(super) fn json_error(err: serde_json::Error) -> SinkError {
    SinkError::Encode(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_statuses() {
        for code in [429, 500, 502, 503, 504] {
            let status = StatusCode::from_u16(code).expect("status");
            assert!(SinkError::Status(status).is_retryable(), "{code}");
        }
        for code in [400, 401, 403, 404, 413, 301] {
            let status = StatusCode::from_u16(code).expect("status");
            assert!(!SinkError::Status(status).is_retryable(), "{code}");
        }
    }

    #[test]
    fn retryable_kinds() {
        assert!(SinkError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(SinkError::Connect("refused".into()).is_retryable());
        assert!(SinkError::Request("reset".into()).is_retryable());
        assert!(!SinkError::Encode("bad".into()).is_retryable());
        assert!(!SinkError::InvalidRequest("bad".into()).is_retryable());
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(!SinkError::Io(pipe).is_retryable());
        let interrupted = std::io::Error::from(std::io::ErrorKind::Interrupted);
        assert!(SinkError::Io(interrupted).is_retryable());
    }

    #[test]
    fn every_request_of_a_batch_has_its_own_key() {
        let mut outbox = Outbox::default();
        let first = BatchId::next(9);
        outbox.begin(first);
        outbox.clear();
        for part in 0..3 {
            assert_eq!(outbox.next_key(), first.request_key(part));
            outbox.raw().extend_from_slice(b"x");
            outbox.push(0, 1, BodyEncoding::Plain).expect("push");
        }
        let keys: Vec<String> = outbox.keys().into_iter().map(str::to_owned).collect();
        assert_eq!(
            keys,
            (0..3).map(|p| first.request_key(p)).collect::<Vec<_>>()
        );
        // The next batch starts again at part 0, under another key.
        let second = BatchId::next(9);
        outbox.begin(second);
        outbox.clear();
        outbox.raw().extend_from_slice(b"y");
        outbox.push(0, 1, BodyEncoding::Plain).expect("push");
        assert_eq!(outbox.keys(), [second.request_key(0).as_str()]);
        assert!(!keys.contains(&second.request_key(0)));
    }

    #[test]
    fn the_key_header_cannot_be_configured() {
        let mut configured = BTreeMap::new();
        configured.insert("Idempotency-Key".to_owned(), Secret::new("mine"));
        let err = add_headers(&mut HeaderMap::new(), &configured, &[], &|k: &str| {
            format!("sinks[0].{k}")
        })
        .expect_err("reserved");
        assert_eq!(
            err.to_string(),
            "sinks[0].headers.Idempotency-Key: is set by meterd"
        );
    }

    #[test]
    fn error_chain_includes_sources() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(inner);
        assert_eq!(error_chain(&outer), "refused");
        #[derive(Debug, thiserror::Error)]
        #[error("sending failed")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("connection reset"));
        assert_eq!(error_chain(&err), "sending failed: connection reset");
    }
}
