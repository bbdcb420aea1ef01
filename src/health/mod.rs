//! Health checks (`docs/health.md`): the latest result per (check id, service id), a short history,
//! and staleness, fed by `POST /api/v1/healthchecks`, by `_sc` lines from any statsd transport and
//! by meterd's own checks; drained at each flush into service checks, `healthcheck.KEY` gauges and
//! status-change events.
//!
//! The store is one `Mutex` over a map: writes are rare (one per check per interval) and every
//! operation is short. Memory is bounded by `max_checks` entries of at most `history` + 1 results;
//! a new check beyond the limit is refused and counted.
//!
//! This file holds the result model ([`HealthResult`], [`Service`], the status numbers) and
//! re-exports the rest: `parse.rs` validates go-micro bodies and converts `_sc` lines,
//! `store.rs` keeps the latest result per (id, instance) with history and staleness,
//! `query.rs` answers the API's filtered, paged reads, and `emit.rs` turns what the store
//! queued into service checks, gauges and status-change events at each flush.

mod emit;
mod parse;
mod query;
mod store;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

pub use parse::{from_service_check, parse_body, parse_result, ValidationError};
pub use query::{CheckView, Query};
pub use store::{HealthConfig, HealthStore, Origin};

/// Status of a health result as go-micro's monitor numbers it.
pub const UNKNOWN: u8 = 0;
/// Passing.
pub const OK: u8 = 1;
/// Failing.
pub const ERROR: u8 = 2;

/// The word for a monitor status.
pub const fn status_word(status: u8) -> &'static str {
    match status {
        OK => "OK",
        ERROR => "ERROR",
        _ => "UNKNOWN",
    }
}

/// Service-check status (0 OK, 2 CRITICAL, 3 UNKNOWN) for a monitor status.
pub const fn service_check_status(status: u8) -> u8 {
    match status {
        OK => 0,
        ERROR => 2,
        _ => 3,
    }
}

/// The service a result describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Instance id (`service.id`, or the first of `service.nodes[].id`).
    pub id: String,
    /// Service name, non-empty.
    pub name: String,
    /// Version, possibly empty.
    pub version: String,
}

/// One health-check result, in the shape go-micro services send and the query API answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthResult {
    /// Check id; may be empty.
    pub id: String,
    /// Free text.
    pub description: String,
    /// Unix seconds of the result (default: when received).
    pub timestamp: i64,
    /// Seconds between reports the check promises; 0 when not sent.
    pub interval: u64,
    /// Seconds after which a silent check leaves the store; 0 when not sent.
    pub ttl: u64,
    /// 0 UNKNOWN, 1 OK, 2 ERROR.
    pub status: u8,
    /// Error text, empty when passing.
    pub error: String,
    /// Who reported it.
    pub service: Service,
    /// Named results: strings or numbers, as sent.
    pub results: BTreeMap<String, Value>,
}

/// Shared by the tests of every file here: a go-micro monitor sample, a small store, a result.
#[cfg(test)]
mod fixtures {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::json;

    use super::{parse_result, HealthConfig, HealthResult, HealthStore};

    pub(super) const PING: &str = r#"{"id": "go.micro.healthcheck.ping", "description": "This is a ping healthcheck that succeeds",
 "timestamp": 1451096504, "status": 1, "error": "",
 "service": {"id": "go-server-672d50a7", "name": "go-server", "version": "1.0.0"},
 "results": {"msg": "a successful check", "metric": "1", "stats": "123.0"}}"#;

    pub(super) fn store() -> HealthStore {
        HealthStore::new(HealthConfig {
            stale_after: Duration::from_secs(30),
            ttl: Duration::from_secs(3600),
            history: 2,
            max_checks: 3,
            hostname: Arc::from("meterd-host"),
            forwarding: true,
        })
    }

    pub(super) fn result(id: &str, svc: &str, status: u8) -> HealthResult {
        parse_result(
            &json!({"id": id, "status": status, "service": {"id": format!("{svc}-1"), "name": svc}}),
            None,
            100,
        )
        .unwrap()
    }
}
