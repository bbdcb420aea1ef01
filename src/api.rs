//! The HTTP API (`docs/api.md`): `/healthz`, `/metrics`, the health-check API and status page
//! (`docs/health.md`), the current interval's cardinality.
//!
//! Bodies are limited to `http.max_body_bytes` (413 beyond it); every error is JSON
//! `{"error": "…"}` with 400 for anything malformed (never 415 or 422); a body is validated
//! whole before anything of it is stored.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query as QueryParams, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::aggregate::Aggregator;
use crate::flush::slo::SharedSlos;
use crate::forward::client::GlobalStats;
use crate::forward::import::{self as importer, ImportError};
use crate::forward::ledger::{Admission, ImportLedger};
use crate::health::{self, HealthStore, Origin, Query};
use crate::ingest::capture::{self, Tap, TapError};
use crate::sinks::SharedSinks;
use crate::telemetry::Telemetry;

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    /// Self-metrics.
    pub telemetry: Arc<Telemetry>,
    /// Sinks, for their counters (replaced on reload).
    pub sinks: SharedSinks,
    /// Health checks.
    pub health: Arc<HealthStore>,
    /// Flush interval in seconds (status page refresh).
    pub interval_s: u64,
    /// Globals this instance forwards to (for `/metrics`).
    pub globals: Vec<Arc<GlobalStats>>,
    /// Where imports merge.
    pub aggregator: Arc<Aggregator>,
    /// Required bearer token for `/import`; empty = none.
    pub import_token: Arc<str>,
    /// Required bearer token for `POST /api/v1/healthchecks`; empty = none.
    pub healthcheck_token: Arc<str>,
    /// Largest decompressed import.
    pub max_import_bytes: usize,
    /// The imports merged, by identity: a retried import is answered, not merged again.
    pub ledger: Arc<ImportLedger>,
    /// What the readers receive, for `GET /api/v1/capture`.
    pub tap: Arc<Tap>,
    /// Service level objectives, evaluated by the flush.
    pub slos: SharedSlos,
}

/// The router with every route.
pub fn router(state: ApiState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/import", post(import))
        .route(
            "/api/v1/healthchecks",
            get(get_healthchecks).post(post_healthchecks),
        )
        .route("/api/v1/capture", get(capture))
        .route("/api/v1/cardinality", get(get_cardinality))
        .route("/api/v1/slos", get(get_slos))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}

async fn healthz(State(s): State<ApiState>) -> Response {
    Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": s.telemetry.started.elapsed().as_secs(),
    }))
    .into_response()
}

async fn metrics(State(s): State<ApiState>) -> Response {
    let sinks = s
        .sinks
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let body = s.telemetry.prometheus_text(&sinks.stats(), &s.globals);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such route")
}

/// Turns a body rejection into our JSON errors: 413 for too large, 400 for the rest.
fn body_error(r: BytesRejection) -> Response {
    let status = r.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        error(status, "body exceeds http.max_body_bytes")
    } else {
        error(StatusCode::BAD_REQUEST, format!("cannot read body: {r}"))
    }
}

async fn post_healthchecks(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(r) = authorize(&headers, &s.healthcheck_token) {
        return r;
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        if !ct.contains("json") {
            return error(
                StatusCode::BAD_REQUEST,
                "content type must be application/json",
            );
        }
    }
    let body = match body {
        Ok(b) => b,
        Err(r) => return body_error(r),
    };
    let now = crate::point::unix_secs();
    let results = match health::parse_body(&body, now) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.0),
    };
    let received = results.len();
    let stored = s.health.record(results, Origin::Api);
    Json(serde_json::json!({"accepted": stored, "refused": received - stored})).into_response()
}

/// Constant-time comparison, so a token cannot be guessed byte by byte from timings.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `Authorization: Bearer TOKEN` when `token` is set; 401 otherwise.
#[allow(clippy::result_large_err)]
fn authorize(headers: &HeaderMap, token: &str) -> Result<(), Response> {
    if token.is_empty() {
        return Ok(());
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if same_token(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ))
    }
}

async fn import(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(r) = authorize(&headers, &s.import_token) {
        return r;
    }
    let body = match body {
        Ok(b) => b,
        Err(r) => return body_error(r),
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let now = crate::point::unix_secs();
    let max = s.max_import_bytes;
    let decoded =
        tokio::task::spawn_blocking(move || importer::decode(&body, gzip, max, now)).await;
    let imp = match decoded {
        Ok(Ok(imp)) => imp,
        Ok(Err(ImportError::TooLarge(n))) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("decompressed body exceeds {n} bytes"),
            )
        }
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "import failed"),
    };
    let series = imp.series.len();
    s.telemetry.import_received.fetch_add(1, Ordering::Relaxed);
    if let Some(id) = &imp.id {
        if s.ledger.admit(id, std::time::Instant::now()) == Admission::Duplicate {
            s.telemetry
                .import_duplicates
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(sender = %id.sender, source = %imp.source, interval = id.interval, part = id.part, "import already merged; answered, not merged again");
            return Json(serde_json::json!({"series": series, "refused": 0, "duplicate": true}))
                .into_response();
        }
    }
    let refused = s.aggregator.merge_series(imp.series);
    s.health.record(imp.health_results, Origin::Forwarded);
    if !imp.slo_counts.is_empty() {
        let mut slos = s
            .slos
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, good, total) in &imp.slo_counts {
            slos.add_imported(
                name,
                crate::slo::Counts {
                    good: *good,
                    total: *total,
                },
            );
        }
    }
    Json(serde_json::json!({"series": series, "refused": refused, "duplicate": false}))
        .into_response()
}

fn parse_query(params: &HashMap<String, String>) -> Result<Query, String> {
    let number = |key: &str| -> Result<usize, String> {
        match params.get(key) {
            None => Ok(0),
            Some(v) if v.is_empty() => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| format!("{key}: must be a non-negative integer")),
        }
    };
    let status = number("status")?;
    if status > 2 {
        return Err("status: must be 0, 1 or 2".into());
    }
    let history = match params.get("history").map(String::as_str) {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(_) => return Err("history: must be true or false".into()),
    };
    Ok(Query {
        id: params.get("id").cloned().unwrap_or_default(),
        service: params.get("service").cloned().unwrap_or_default(),
        status: u8::try_from(status).unwrap_or(0),
        limit: number("limit")?,
        offset: number("offset")?,
        history,
    })
}

async fn get_healthchecks(
    State(s): State<ApiState>,
    params: Result<QueryParams<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(QueryParams(params)) = params else {
        return error(StatusCode::BAD_REQUEST, "malformed query string");
    };
    match parse_query(&params) {
        Ok(q) => Json(serde_json::json!({"healthChecks": s.health.query(&q)})).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// Default size bound of `GET /api/v1/capture` (the file it streams, trailer included).
pub const CAPTURE_DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// `GET /api/v1/capture?seconds=S[&max_bytes=N]`: streams the capture file (`docs/capture.md`)
/// of what the readers receive for `S` seconds (1 to 3600), ending early before the file would
/// exceed `N` bytes. One capture at a time: 409 while another runs.
async fn capture(
    State(s): State<ApiState>,
    params: Result<QueryParams<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(QueryParams(params)) = params else {
        return error(StatusCode::BAD_REQUEST, "malformed query string");
    };
    let max_s = capture::MAX_DURATION.as_secs();
    let seconds = match params.get("seconds").map(|v| v.parse::<u64>()) {
        Some(Ok(n @ 1..)) if n <= max_s => n,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("seconds must be a whole number from 1 to {max_s}"),
            )
        }
    };
    let least = (capture::format::HEADER_LEN + capture::format::TRAILER_LEN) as u64;
    let max_bytes = match params.get("max_bytes").map(|v| v.parse::<u64>()) {
        None => CAPTURE_DEFAULT_MAX_BYTES,
        Some(Ok(n)) if n >= least => n,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("max_bytes must be a whole number of at least {least}"),
            )
        }
    };
    let sub = match s.tap.subscribe() {
        Ok(sub) => sub,
        Err(e @ TapError::Busy) => return error(StatusCode::CONFLICT, e.to_string()),
        Err(e @ TapError::Closed) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    tracing::info!(seconds, max_bytes, "capture started");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let duration = std::time::Duration::from_secs(seconds);
        match capture::stream(sub, duration, max_bytes, tx).await {
            Some(t) => tracing::info!(
                records = t.records,
                dropped = t.dropped,
                reason = t.reason.name(),
                "capture ended"
            ),
            None => tracing::info!("capture ended: the client left"),
        }
    });
    (
        [(header::CONTENT_TYPE, "application/vnd.meterd.capture")],
        axum::body::Body::from_stream(Chunks(rx)),
    )
        .into_response()
}

/// A capture's chunks as a response body stream.
struct Chunks(tokio::sync::mpsc::Receiver<Vec<u8>>);

impl futures_core::Stream for Chunks {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|c| c.map(|c| Ok(Bytes::from(c))))
    }
}

/// Most names and tag keys one cardinality query may ask for.
const MAX_CARDINALITY_LIMIT: usize = 10_000;

/// `limit` of `GET /api/v1/cardinality`: 20 when absent, at most [`MAX_CARDINALITY_LIMIT`].
fn cardinality_limit(params: &HashMap<String, String>) -> Result<usize, String> {
    let bad = || format!("limit: must be an integer from 0 to {MAX_CARDINALITY_LIMIT}");
    match params.get("limit") {
        None => Ok(20),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= MAX_CARDINALITY_LIMIT => Ok(n),
            _ => Err(bad()),
        },
    }
}

/// The current interval's series by name and tag key, counted on a blocking thread (a scan of
/// every series).
async fn get_cardinality(
    State(s): State<ApiState>,
    params: Result<QueryParams<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(QueryParams(params)) = params else {
        return error(StatusCode::BAD_REQUEST, "malformed query string");
    };
    let limit = match cardinality_limit(&params) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let aggregator = s.aggregator.clone();
    match tokio::task::spawn_blocking(move || aggregator.cardinality(limit)).await {
        Ok(c) => Json(c).into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cardinality query failed",
        ),
    }
}

async fn get_slos(State(s): State<ApiState>) -> Response {
    let views = s
        .slos
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .views();
    Json(views).into_response()
}

/// The status page's SLO table: objective, SLI and budget left over the budget window, burn
/// rates, status.
fn slo_table(html: &mut String, slos: &SharedSlos) {
    let views = slos
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .views();
    if views.is_empty() {
        return;
    }
    html.push_str(
        "<h2>SLOs</h2><table id=\"slos\"><thead><tr><th>SLO</th><th>objective</th><th>SLI</th>\
<th>budget left</th><th>burn rates</th><th>status</th></tr></thead><tbody>",
    );
    for v in views {
        let sli = v
            .sli
            .map_or_else(|| "no events".to_owned(), |x| format!("{:.4} %", x * 100.0));
        let burns: Vec<String> = v
            .burn_rates
            .iter()
            .map(|(w, r)| format!("{w} {r:.2}"))
            .collect();
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{} %</td><td>{sli}</td><td>{:.1} %</td><td>{}</td>\
<td><span class=\"status {status}\">{status}</span></td></tr>",
            escape(&v.name),
            v.objective * 100.0,
            v.error_budget_remaining * 100.0,
            escape(&burns.join(", ")),
            status = v.status
        );
    }
    html.push_str("</tbody></table>");
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m {}s ago", s / 60, s % 60),
        _ => format!("{}h {}m ago", s / 3600, (s % 3600) / 60),
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222;background:#fafafa}
h1{font-size:1.4rem;margin:0 0 .5rem}h2{font-size:1.1rem;margin:1.5rem 0 .4rem}
.stats{display:flex;gap:1rem;flex-wrap:wrap}.stat{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem}
.stat b{display:block;font-size:1.3rem}table{border-collapse:collapse;background:#fff;min-width:40rem}
th,td{text-align:left;padding:.35rem .8rem;border-bottom:1px solid #eee}th{background:#f0f0f0}
.status{font-weight:bold;padding:.1rem .5rem;border-radius:4px;color:#fff}
.OK{background:#2e7d32}.ERROR,.CRITICAL{background:#c62828}.WARNING{background:#ef6c00}.UNKNOWN{background:#757575}
.msg{color:#555;max-width:40rem;overflow-wrap:anywhere}footer{margin-top:2rem;color:#888;font-size:.85rem}";

async fn status_page(State(s): State<ApiState>) -> Response {
    let t = &s.telemetry;
    let interval = s.interval_s.max(1);
    let rate = t.lines_last_interval.load(Ordering::Relaxed) as f64 / interval as f64;
    let series: u64 = t
        .series_active
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .sum();
    let last_flush = t.last_flush_unix.load(Ordering::Relaxed);
    let now = crate::point::unix_now().as_secs();
    let last_flush_text = if last_flush == 0 {
        "not yet".to_owned()
    } else {
        age(now.saturating_sub(last_flush) as f64)
    };
    let checks = s.health.query(&Query::default());
    let mut by_service: BTreeMap<(bool, String), Vec<&health::CheckView>> = BTreeMap::new();
    for c in &checks {
        let name = c.result.service.name.clone();
        by_service
            .entry((name != "meterd", name))
            .or_default()
            .push(c);
    }
    let mut html = String::with_capacity(8192);
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"{interval}\"><title>meterd status</title>\
<style>{STYLE}</style></head><body><h1>meterd {version} on {host}</h1>\
<div class=\"stats\"><div class=\"stat\">ingest rate<b id=\"rate\">{rate:.0} lines/s</b></div>\
<div class=\"stat\">series<b id=\"series\">{series}</b></div>\
<div class=\"stat\">last flush<b id=\"last-flush\">{last_flush_text}</b></div>\
<div class=\"stat\">checks<b>{n}</b></div></div>",
        version = env!("CARGO_PKG_VERSION"),
        host = escape(&s.health.config().hostname),
        n = checks.len(),
    );
    slo_table(&mut html, &s.slos);
    if checks.is_empty() {
        html.push_str("<p>No health checks reported yet.</p>");
    }
    for ((_, service), rows) in &by_service {
        let _ = write!(
            html,
            "<h2>{}</h2><table><thead><tr><th>check</th><th>instance</th><th>status</th>\
<th>age</th><th>message</th></tr></thead><tbody>",
            escape(service)
        );
        for c in rows {
            let r = &c.result;
            let word = health::status_word(r.status);
            let message = if r.error.is_empty() {
                r.results
                    .get("msg")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            } else {
                r.error.clone()
            };
            let id = if r.id.is_empty() {
                "healthcheck"
            } else {
                &r.id
            };
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td><span class=\"status {word}\">{word}</span></td>\
<td>{}</td><td class=\"msg\">{}</td></tr>",
                escape(id),
                escape(&r.service.id),
                age(c.age_s),
                escape(&message)
            );
        }
        html.push_str("</tbody></table>");
    }
    html.push_str("<footer>Refreshes every interval. JSON: <a href=\"/api/v1/healthchecks\">/api/v1/healthchecks</a>, metrics: <a href=\"/metrics\">/metrics</a></footer></body></html>");
    Html(html).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cardinality_limit_defaults_to_20_and_refuses_the_rest() {
        let q = |v: &str| HashMap::from([("limit".to_owned(), v.to_owned())]);
        assert_eq!(cardinality_limit(&HashMap::new()), Ok(20));
        assert_eq!(cardinality_limit(&q("0")), Ok(0));
        assert_eq!(cardinality_limit(&q("10000")), Ok(10_000));
        for bad in ["", "-1", "x", "10001", "1.5"] {
            assert!(cardinality_limit(&q(bad)).is_err(), "{bad:?}");
        }
    }
}
