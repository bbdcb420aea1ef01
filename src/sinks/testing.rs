//! Helpers shared by the sink tests: a capturing HTTP server on loopback, sample batches, and
//! configs parsed from TOML.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde::Deserialize;
use tokio::time::Instant;

use super::{SinkConfig, SinkStats};
use crate::point::{Event, FlushBatch, Point, PointKind, ServiceCheck};

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

    /// The `Idempotency-Key` header, which every HTTP sink request carries.
    pub fn key(&self) -> &str {
        self.header("idempotency-key")
            .expect("an Idempotency-Key header")
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

/// A request key without its part number: the batch it belongs to.
pub(crate) fn batch_of(key: &str) -> &str {
    key.rsplit_once('-').expect("a part number").0
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

/// The `[[sinks]]` tables of a TOML document.
pub(crate) fn parse(toml_text: &str) -> Result<Vec<SinkConfig>, toml::de::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        sinks: Vec<SinkConfig>,
    }
    toml::from_str::<File>(toml_text).map(|f| f.sinks)
}

/// An `http` sink posting to `url`, with `extra` TOML lines.
pub(crate) fn http_config(url: &str, extra: &str) -> SinkConfig {
    parse(&format!(
        "[[sinks]]\ntype = \"http\"\nurl = \"{url}\"\n{extra}\n"
    ))
    .expect("valid config")
    .remove(0)
}

/// One of the `sent`, `errors`, `dropped` counters.
pub(crate) fn stat(stats: &SinkStats, which: &str) -> u64 {
    match which {
        "sent" => stats.sent.load(Ordering::Relaxed),
        "errors" => stats.errors.load(Ordering::Relaxed),
        "dropped" => stats.dropped.load(Ordering::Relaxed),
        _ => unreachable!(),
    }
}
