//! The HTTP API (SPEC §7): `/healthz` and `/metrics` here; later routes join the same router.
//! Bodies are limited to `http.max_body_bytes`; errors are JSON `{"error": …}`.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::sinks::SinkSet;
use crate::telemetry::Telemetry;

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    /// Self-metrics.
    pub telemetry: Arc<Telemetry>,
    /// Sinks, for their counters.
    pub sinks: Arc<SinkSet>,
}

/// The router with every route.
pub fn router(state: ApiState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
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
    let body = s.telemetry.prometheus_text(&s.sinks.stats());
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
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"error": "no such route"})),
    )
        .into_response()
}
