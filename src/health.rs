//! Health checks (SPEC §6): the latest result per (check id, service id), a short history, and
//! staleness, fed by `POST /api/v1/healthchecks`, by `_sc` lines from any statsd transport and by
//! meterd's own checks; drained at each flush into service checks, `healthcheck.KEY` gauges and
//! status-change events.
//!
//! The store is one `Mutex` over a map: writes are rare (one per check per interval) and every
//! operation is short. Memory is bounded by `max_checks` entries of at most `history` + 1 results;
//! a new check beyond the limit is refused and counted.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::point::{Event, Point, PointKind, ServiceCheck};

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

impl HealthResult {
    /// The service-check message: the error, else `results.msg`.
    fn message(&self) -> String {
        if !self.error.is_empty() {
            return self.error.clone();
        }
        match self.results.get("msg") {
            Some(Value::String(s)) => s.clone(),
            Some(v @ Value::Number(_)) => v.to_string(),
            _ => String::new(),
        }
    }

    fn tags(&self) -> Vec<String> {
        let mut tags = vec![
            format!("service:{}", self.service.name),
            format!("service_id:{}", self.service.id),
        ];
        if !self.service.version.is_empty() {
            tags.push(format!("version:{}", self.service.version));
        }
        tags.sort_unstable();
        tags
    }
}

/// A body that failed validation; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValidationError(pub String);

fn field_err(index: Option<usize>, field: &str, what: &str) -> ValidationError {
    match index {
        Some(i) => ValidationError(format!("[{i}].{field}: {what}")),
        None => ValidationError(format!("{field}: {what}")),
    }
}

/// Reads a JSON number or numeric string as an integer.
fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse::<i64>().ok().or_else(|| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        _ => None,
    }
}

fn optional_string(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    index: Option<usize>,
    field: &str,
) -> Result<String, ValidationError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(field_err(index, field, "must be a string")),
    }
}

fn optional_seconds(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    index: Option<usize>,
) -> Result<u64, ValidationError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => integer(v)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| field_err(index, key, "must be a non-negative integer (seconds)")),
    }
}

/// Validates one result object; `now` fills a missing timestamp.
pub fn parse_result(
    v: &Value,
    index: Option<usize>,
    now: i64,
) -> Result<HealthResult, ValidationError> {
    let Value::Object(obj) = v else {
        return Err(match index {
            Some(i) => ValidationError(format!("[{i}]: must be an object")),
            None => ValidationError("body must be a JSON object or an array of objects".into()),
        });
    };
    let id = match obj.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(field_err(index, "id", "must be a string")),
        None => return Err(field_err(index, "id", "is required")),
    };
    let status = match obj.get("status") {
        None => return Err(field_err(index, "status", "is required")),
        Some(v) => match integer(v) {
            Some(s @ 0..=2) => s as u8,
            _ => return Err(field_err(index, "status", "must be 0, 1 or 2")),
        },
    };
    let timestamp = match obj.get("timestamp") {
        None | Some(Value::Null) => now,
        Some(v) => integer(v)
            .filter(|t| *t >= 0)
            .ok_or_else(|| field_err(index, "timestamp", "must be unix seconds"))?,
    };
    let service = match obj.get("service") {
        Some(Value::Object(s)) => s,
        Some(_) => return Err(field_err(index, "service", "must be an object")),
        None => return Err(field_err(index, "service", "is required")),
    };
    let name = match service.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => {
            return Err(field_err(index, "service.name", "must not be empty"))
        }
        Some(_) => return Err(field_err(index, "service.name", "must be a string")),
        None => return Err(field_err(index, "service.name", "is required")),
    };
    let mut service_id = optional_string(service, "id", index, "service.id")?;
    match service.get("nodes") {
        None | Some(Value::Null) => {}
        Some(Value::Array(nodes)) => {
            for (n, node) in nodes.iter().enumerate() {
                let field = format!("service.nodes[{n}].id");
                let Value::Object(node) = node else {
                    return Err(field_err(
                        index,
                        &format!("service.nodes[{n}]"),
                        "must be an object",
                    ));
                };
                let nid = optional_string(node, "id", index, &field)?;
                if service_id.is_empty() {
                    service_id = nid;
                }
            }
        }
        Some(_) => return Err(field_err(index, "service.nodes", "must be an array")),
    }
    let version = optional_string(service, "version", index, "service.version")?;
    let mut results = BTreeMap::new();
    match obj.get("results") {
        None | Some(Value::Null) => {}
        Some(Value::Object(r)) => {
            for (k, v) in r {
                match v {
                    Value::String(_) | Value::Number(_) => {
                        results.insert(k.clone(), v.clone());
                    }
                    _ => {
                        return Err(field_err(
                            index,
                            &format!("results.{k}"),
                            "must be a string or a number",
                        ))
                    }
                }
            }
        }
        Some(_) => return Err(field_err(index, "results", "must be an object")),
    }
    Ok(HealthResult {
        id,
        description: optional_string(obj, "description", index, "description")?,
        timestamp,
        interval: optional_seconds(obj, "interval", index)?,
        ttl: optional_seconds(obj, "ttl", index)?,
        status,
        error: optional_string(obj, "error", index, "error")?,
        service: Service {
            id: service_id,
            name,
            version,
        },
        results,
    })
}

/// Validates a whole body (one object or an array); nothing is returned unless all of it is valid.
pub fn parse_body(body: &[u8], now: i64) -> Result<Vec<HealthResult>, ValidationError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ValidationError(format!("body is not valid JSON: {e}")))?;
    match &v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_result(item, Some(i), now))
            .collect(),
        _ => parse_result(&v, None, now).map(|r| vec![r]),
    }
}

/// Store settings (`[health]`).
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// Silence after which a check without its own `interval` turns UNKNOWN.
    pub stale_after: Duration,
    /// Silence after which a check without its own `ttl` leaves the store.
    pub ttl: Duration,
    /// Previous results kept per check.
    pub history: usize,
    /// Distinct (id, service id) pairs kept.
    pub max_checks: usize,
    /// meterd's hostname: the host of emitted checks.
    pub hostname: Arc<str>,
    /// This instance forwards to globals: keep what it records (except forwarded results) for
    /// [`HealthStore::take_forward`].
    pub forwarding: bool,
}

/// Where a result came from, which decides what the next flush emits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `POST /api/v1/healthchecks` or meterd's own checks: emitted as a service check + gauges.
    Api,
    /// An `_sc` line: its own service check is already emitted as it was sent; store only.
    ServiceCheckLine,
    /// Forwarded by a local: the fleet view keeps it; never emitted or forwarded again.
    Forwarded,
}

struct Entry {
    latest: HealthResult,
    /// Unix seconds (f64 for sub-second staleness in tests) when `latest` was received.
    received: f64,
    history: VecDeque<HealthResult>,
    /// The status last reported to sinks and used for change events (UNKNOWN once stale).
    effective: u8,
    stale: bool,
}

impl Entry {
    fn stale_after(&self, cfg: &HealthConfig) -> f64 {
        if self.latest.interval > 0 {
            3.0 * self.latest.interval as f64
        } else {
            cfg.stale_after.as_secs_f64()
        }
    }

    fn ttl(&self, cfg: &HealthConfig) -> f64 {
        if self.latest.ttl > 0 {
            self.latest.ttl as f64
        } else {
            cfg.ttl.as_secs_f64()
        }
    }
}

#[derive(Default)]
struct Inner {
    checks: HashMap<(String, String), Entry>,
    /// Results to emit at the next flush.
    pending: Vec<HealthResult>,
    /// Stale transitions to emit as UNKNOWN service checks at the next flush.
    pending_stale: Vec<HealthResult>,
    events: Vec<Event>,
    /// Results to forward to the globals at the next flush (bounded by `max_checks`).
    forward: Vec<HealthResult>,
    /// Sequence for "most recently received first" ties.
    seq: u64,
    order: HashMap<(String, String), u64>,
}

/// The health-check store.
pub struct HealthStore {
    inner: Mutex<Inner>,
    config: HealthConfig,
    /// Results refused by `max_checks`.
    pub dropped: AtomicU64,
}

/// A query (`GET /api/v1/healthchecks`).
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Check id; empty = any.
    pub id: String,
    /// Service name; empty = any.
    pub service: String,
    /// 0 = any, else 1 OK or 2 ERROR (UNKNOWN by staleness is status 0 and matches only "any").
    pub status: u8,
    /// 0 = no limit.
    pub limit: usize,
    /// Results skipped after filtering.
    pub offset: usize,
    /// Include previous results.
    pub history: bool,
}

/// One answer row.
#[derive(Debug, Clone, Serialize)]
pub struct CheckView {
    /// The latest result with its effective status (UNKNOWN once stale).
    #[serde(flatten)]
    pub result: HealthResult,
    /// Previous results, newest first (only with `history=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HealthResult>>,
    /// Seconds since it was received (for the status page; not serialised).
    #[serde(skip)]
    pub age_s: f64,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_f64() -> f64 {
    crate::point::unix_now().as_secs_f64()
}

impl HealthStore {
    /// An empty store.
    pub fn new(config: HealthConfig) -> HealthStore {
        HealthStore {
            inner: Mutex::new(Inner::default()),
            config,
            dropped: AtomicU64::new(0),
        }
    }

    /// Store settings.
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// Stores results (already validated as a whole). Returns how many were stored; the rest
    /// were refused by `max_checks` and counted.
    pub fn record(&self, results: Vec<HealthResult>, origin: Origin) -> usize {
        self.record_at(results, origin, now_f64())
    }

    fn record_at(&self, results: Vec<HealthResult>, origin: Origin, now: f64) -> usize {
        let mut inner = lock(&self.inner);
        let mut stored = 0;
        for r in results {
            let key = (r.id.clone(), r.service.id.clone());
            let inner = &mut *inner;
            if !inner.checks.contains_key(&key) && inner.checks.len() >= self.config.max_checks {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            inner.seq += 1;
            inner.order.insert(key.clone(), inner.seq);
            match inner.checks.get_mut(&key) {
                Some(e) => {
                    if e.effective != r.status {
                        inner.events.push(change_event(
                            &r,
                            e.effective,
                            r.status,
                            &self.config.hostname,
                        ));
                    }
                    let previous = std::mem::replace(&mut e.latest, r.clone());
                    e.history.push_front(previous);
                    e.history.truncate(self.config.history);
                    e.received = now;
                    e.effective = r.status;
                    e.stale = false;
                }
                None => {
                    inner.checks.insert(
                        key,
                        Entry {
                            latest: r.clone(),
                            received: now,
                            history: VecDeque::new(),
                            effective: r.status,
                            stale: false,
                        },
                    );
                }
            }
            if self.config.forwarding
                && origin != Origin::Forwarded
                && inner.forward.len() < self.config.max_checks
            {
                inner.forward.push(r.clone());
            }
            if origin == Origin::Api {
                inner.pending.push(r);
            }
            stored += 1;
        }
        stored
    }

    /// Marks silent checks UNKNOWN (queueing an UNKNOWN service check and a change event) and
    /// removes checks silent past their ttl.
    pub fn sweep(&self) {
        self.sweep_at(now_f64());
    }

    fn sweep_at(&self, now: f64) {
        let mut inner = lock(&self.inner);
        let inner = &mut *inner;
        let cfg = &self.config;
        let mut gone = Vec::new();
        for (key, e) in inner.checks.iter_mut() {
            let silent = now - e.received;
            if silent >= e.ttl(cfg) {
                gone.push(key.clone());
                continue;
            }
            if !e.stale && silent >= e.stale_after(cfg) {
                e.stale = true;
                if e.effective != UNKNOWN {
                    inner
                        .events
                        .push(change_event(&e.latest, e.effective, UNKNOWN, &cfg.hostname));
                }
                e.effective = UNKNOWN;
                let mut r = e.latest.clone();
                r.status = UNKNOWN;
                inner.pending_stale.push(r);
            }
        }
        for key in gone {
            inner.checks.remove(&key);
            inner.order.remove(&key);
        }
    }

    /// Sweeps, then takes what the next flush emits: service checks, `healthcheck.KEY` gauges,
    /// and status-change events.
    pub fn drain(&self, interval: u64) -> (Vec<ServiceCheck>, Vec<Point>, Vec<Event>) {
        self.drain_at(interval, now_f64())
    }

    fn drain_at(&self, interval: u64, now: f64) -> (Vec<ServiceCheck>, Vec<Point>, Vec<Event>) {
        self.sweep_at(now);
        let mut inner = lock(&self.inner);
        let pending = std::mem::take(&mut inner.pending);
        let stale = std::mem::take(&mut inner.pending_stale);
        let events = std::mem::take(&mut inner.events);
        drop(inner);
        let host = &self.config.hostname;
        let host_arc: Arc<str> = host.clone();
        let mut checks = Vec::with_capacity(pending.len() + stale.len());
        let mut gauges = Vec::new();
        for r in pending.iter().chain(stale.iter()) {
            checks.push(ServiceCheck {
                name: if r.id.is_empty() {
                    "healthcheck".to_owned()
                } else {
                    r.id.clone()
                },
                status: service_check_status(r.status),
                tags: r.tags(),
                host: host.to_string(),
                timestamp: r.timestamp,
                message: r.message(),
            });
        }
        for r in &pending {
            let mut tags = r.tags();
            tags.push(format!("check:{}", r.id));
            tags.sort_unstable();
            let tags: Arc<[String]> = Arc::from(tags);
            for (k, v) in &r.results {
                let value = match v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok(),
                    _ => None,
                };
                if let Some(value) = value.filter(|v| v.is_finite()) {
                    gauges.push(Point {
                        name: format!("healthcheck.{k}"),
                        kind: PointKind::Gauge,
                        value,
                        tags: tags.clone(),
                        host: host_arc.clone(),
                        timestamp: r.timestamp,
                        interval,
                    });
                }
            }
        }
        (checks, gauges, events)
    }

    /// Takes the results recorded since the last call, as JSON objects, for forwarding.
    pub fn take_forward(&self) -> Vec<String> {
        let results = std::mem::take(&mut lock(&self.inner).forward);
        results
            .iter()
            .filter_map(|r| serde_json::to_string(r).ok())
            .collect()
    }

    /// Answers a query: filter, order (most recently received first, ties by id), then page.
    pub fn query(&self, q: &Query) -> Vec<CheckView> {
        let now = now_f64();
        let inner = lock(&self.inner);
        let mut rows: Vec<(u64, CheckView)> = inner
            .checks
            .iter()
            .filter(|(_, e)| q.id.is_empty() || e.latest.id == q.id)
            .filter(|(_, e)| q.service.is_empty() || e.latest.service.name == q.service)
            .filter(|(_, e)| q.status == 0 || e.effective == q.status)
            .map(|(key, e)| {
                let mut result = e.latest.clone();
                result.status = e.effective;
                let seq = inner.order.get(key).copied().unwrap_or(0);
                (
                    seq,
                    CheckView {
                        result,
                        history: q.history.then(|| e.history.iter().cloned().collect()),
                        age_s: (now - e.received).max(0.0),
                    },
                )
            })
            .collect();
        rows.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| a.1.result.id.cmp(&b.1.result.id))
        });
        let rows = rows.into_iter().map(|(_, v)| v).skip(q.offset);
        if q.limit == 0 {
            rows.collect()
        } else {
            rows.take(q.limit).collect()
        }
    }

    /// Number of checks held.
    pub fn len(&self) -> usize {
        lock(&self.inner).checks.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn change_event(r: &HealthResult, old: u8, new: u8, host: &str) -> Event {
    let id = if r.id.is_empty() {
        "healthcheck"
    } else {
        &r.id
    };
    Event {
        title: format!("{id} on {} is now {}", r.service.id, status_word(new)),
        text: format!(
            "{id} on {} ({}) changed from {} to {}",
            r.service.id,
            r.service.name,
            status_word(old),
            status_word(new)
        ),
        tags: {
            let mut t = vec![
                format!("check:{}", r.id),
                format!("service:{}", r.service.name),
                format!("service_id:{}", r.service.id),
            ];
            t.sort_unstable();
            t
        },
        host: host.to_owned(),
        timestamp: i64::try_from(crate::point::unix_now().as_secs()).unwrap_or(0),
        aggregation_key: r.id.clone(),
        priority: "normal",
        source_type: String::new(),
        alert_type: match new {
            OK => "success",
            ERROR => "error",
            _ => "warning",
        },
    }
}

/// Converts an `_sc` line's check into a store result (SPEC §6): OK→1, WARNING and CRITICAL→2,
/// UNKNOWN→0; service from a `service:` tag (else the check name), version from `version:`,
/// service id from `h:` (else the hostname).
pub fn from_service_check(
    sc: &ServiceCheck,
    explicit_host: Option<&str>,
    hostname: &str,
) -> HealthResult {
    let tag = |k: &str| {
        sc.tags
            .iter()
            .find_map(|t| t.strip_prefix(k).and_then(|v| v.strip_prefix(':')))
            .map(str::to_owned)
    };
    HealthResult {
        id: sc.name.clone(),
        description: String::new(),
        timestamp: sc.timestamp,
        interval: 0,
        ttl: 0,
        status: match sc.status {
            0 => OK,
            1 | 2 => ERROR,
            _ => UNKNOWN,
        },
        error: if sc.status == 0 {
            String::new()
        } else {
            sc.message.clone()
        },
        service: Service {
            id: explicit_host.unwrap_or(hostname).to_owned(),
            name: tag("service").unwrap_or_else(|| sc.name.clone()),
            version: tag("version").unwrap_or_default(),
        },
        results: if sc.status == 0 && !sc.message.is_empty() {
            BTreeMap::from([("msg".to_owned(), Value::String(sc.message.clone()))])
        } else {
            BTreeMap::new()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PING: &str = r#"{"id": "go.micro.healthcheck.ping", "description": "This is a ping healthcheck that succeeds",
 "timestamp": 1451096504, "status": 1, "error": "",
 "service": {"id": "go-server-672d50a7", "name": "go-server", "version": "1.0.0"},
 "results": {"msg": "a successful check", "metric": "1", "stats": "123.0"}}"#;

    fn store() -> HealthStore {
        HealthStore::new(HealthConfig {
            stale_after: Duration::from_secs(30),
            ttl: Duration::from_secs(3600),
            history: 2,
            max_checks: 3,
            hostname: Arc::from("meterd-host"),
            forwarding: true,
        })
    }

    fn result(id: &str, svc: &str, status: u8) -> HealthResult {
        parse_result(
            &json!({"id": id, "status": status, "service": {"id": format!("{svc}-1"), "name": svc}}),
            None,
            100,
        )
        .unwrap()
    }

    #[test]
    fn monitor_sample_parses() {
        let r = parse_body(PING.as_bytes(), 0).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].service.id, "go-server-672d50a7");
        assert_eq!(r[0].status, OK);
        assert_eq!(r[0].timestamp, 1451096504);
        assert_eq!(r[0].results["stats"], json!("123.0"));
    }

    #[test]
    fn nodes_shape_and_numeric_strings() {
        let body = json!({"id": "x", "status": "2", "timestamp": "1700000000", "interval": "10", "ttl": 60,
            "service": {"name": "api", "nodes": [{"id": "api-7"}]}});
        let r = parse_result(&body, None, 0).unwrap();
        assert_eq!(r.service.id, "api-7");
        assert_eq!(
            (r.status, r.timestamp, r.interval, r.ttl),
            (ERROR, 1_700_000_000, 10, 60)
        );
    }

    #[test]
    fn empty_id_is_allowed() {
        let r = parse_result(
            &json!({"id": "", "status": 1, "service": {"name": "s"}}),
            None,
            5,
        )
        .unwrap();
        assert_eq!(r.id, "");
        assert_eq!(r.timestamp, 5);
    }

    #[test]
    fn validation_names_the_field() {
        let cases = [
            (
                json!({"status": 1, "service": {"name": "s"}}),
                "id: is required",
            ),
            (
                json!({"id": 3, "status": 1, "service": {"name": "s"}}),
                "id: must be a string",
            ),
            (
                json!({"id": "a", "service": {"name": "s"}}),
                "status: is required",
            ),
            (
                json!({"id": "a", "status": 7, "service": {"name": "s"}}),
                "status: must be 0, 1 or 2",
            ),
            (json!({"id": "a", "status": 1}), "service: is required"),
            (
                json!({"id": "a", "status": 1, "service": {"name": ""}}),
                "service.name: must not be empty",
            ),
            (
                json!({"id": "a", "status": 1, "service": {"name": "s"}, "results": {"k": [1]}}),
                "results.k: must be a string or a number",
            ),
            (
                json!({"id": "a", "status": 1, "service": {"name": "s"}, "timestamp": "soon"}),
                "timestamp: must be unix seconds",
            ),
        ];
        for (body, want) in cases {
            let err = parse_result(&body, None, 0).unwrap_err().0;
            assert_eq!(err, want, "{body}");
        }
        let arr = format!("[{PING}, {{\"id\": \"b\"}}]");
        let err = parse_body(arr.as_bytes(), 0).unwrap_err().0;
        assert!(err.starts_with("[1].status"), "{err}");
        assert!(parse_body(b"{nope", 0)
            .unwrap_err()
            .0
            .contains("not valid JSON"));
        assert!(parse_body(b"42", 0).is_err());
    }

    #[test]
    fn latest_per_check_and_service_with_history() {
        let s = store();
        s.record(vec![result("a", "svc", OK)], Origin::Api);
        s.record(vec![result("a", "svc", ERROR)], Origin::Api);
        s.record(vec![result("a", "svc", OK)], Origin::Api);
        s.record(vec![result("a", "svc", OK)], Origin::Api);
        let rows = s.query(&Query {
            history: true,
            ..Query::default()
        });
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].history.as_ref().unwrap().len(), 2);
        let (_, _, events) = s.drain(10);
        // OK→ERROR and ERROR→OK; not the first report, not the repeat.
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].title, "a on svc-1 is now ERROR");
        assert_eq!(events[0].alert_type, "error");
        assert_eq!(events[1].alert_type, "success");
    }

    #[test]
    fn filters_then_pages_newest_first() {
        let s = store();
        s.record(vec![result("a", "one", OK)], Origin::Api);
        s.record(vec![result("b", "one", ERROR)], Origin::Api);
        s.record(vec![result("c", "two", OK)], Origin::Api);
        let ids = |q: Query| {
            s.query(&q)
                .into_iter()
                .map(|v| v.result.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(Query::default()), ["c", "b", "a"]);
        assert_eq!(
            ids(Query {
                service: "one".into(),
                ..Query::default()
            }),
            ["b", "a"]
        );
        assert_eq!(
            ids(Query {
                status: OK,
                ..Query::default()
            }),
            ["c", "a"]
        );
        assert_eq!(
            ids(Query {
                status: OK,
                offset: 1,
                ..Query::default()
            }),
            ["a"]
        );
        assert_eq!(
            ids(Query {
                limit: 1,
                offset: 1,
                ..Query::default()
            }),
            ["b"]
        );
        assert!(ids(Query {
            id: "zzz".into(),
            ..Query::default()
        })
        .is_empty());
    }

    #[test]
    fn max_checks_refuses_new_and_counts() {
        let s = store();
        for id in ["a", "b", "c", "d"] {
            s.record(vec![result(id, "svc", OK)], Origin::Api);
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.dropped.load(Ordering::Relaxed), 1);
        // An existing check still updates.
        assert_eq!(s.record(vec![result("a", "svc", ERROR)], Origin::Api), 1);
    }

    #[test]
    fn stale_turns_unknown_with_event_then_expires() {
        let s = store();
        let mut r = result("a", "svc", OK);
        r.interval = 2;
        r.ttl = 100;
        s.record_at(vec![r], Origin::Api, 1000.0);
        assert_eq!(s.drain_at(10, 1001.0).0.len(), 1);
        let (checks, _, events) = s.drain_at(10, 1007.0);
        let rows = s.query(&Query::default());
        assert_eq!(rows[0].result.status, UNKNOWN);
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].status, 3);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].title, "a on svc-1 is now UNKNOWN");
        assert_eq!(events[0].alert_type, "warning");
        // Stale once: no second UNKNOWN check or event.
        let (checks, _, events) = s.drain_at(10, 1010.0);
        assert!(checks.is_empty() && events.is_empty());
        s.sweep_at(1101.0);
        assert!(s.is_empty());
    }

    #[test]
    fn drain_emits_service_checks_and_numeric_gauges() {
        let s = store();
        s.record(parse_body(PING.as_bytes(), 0).unwrap(), Origin::Api);
        let (checks, gauges, _) = s.drain(10);
        assert_eq!(checks.len(), 1);
        let c = &checks[0];
        assert_eq!(c.name, "go.micro.healthcheck.ping");
        assert_eq!(c.status, 0);
        assert_eq!(c.message, "a successful check");
        assert_eq!(
            c.tags,
            [
                "service:go-server",
                "service_id:go-server-672d50a7",
                "version:1.0.0"
            ]
        );
        assert_eq!(c.host, "meterd-host");
        let names: Vec<_> = gauges.iter().map(|g| (g.name.as_str(), g.value)).collect();
        assert_eq!(
            names,
            [("healthcheck.metric", 1.0), ("healthcheck.stats", 123.0)]
        );
        assert!(gauges[0]
            .tags
            .contains(&"check:go.micro.healthcheck.ping".to_owned()));
        // Emitted once.
        assert!(s.drain(10).0.is_empty());
    }

    #[test]
    fn forwarded_results_round_trip_and_are_not_forwarded_again() {
        let s = store();
        s.record(parse_body(PING.as_bytes(), 0).unwrap(), Origin::Api);
        let out = s.take_forward();
        assert_eq!(out.len(), 1);
        let v: Value = serde_json::from_str(&out[0]).unwrap();
        let back = parse_result(&v, None, 0).unwrap();
        assert_eq!(back, parse_body(PING.as_bytes(), 0).unwrap()[0]);
        let global = store();
        global.record(vec![back], Origin::Forwarded);
        assert_eq!(global.len(), 1);
        assert!(global.take_forward().is_empty());
        assert!(
            global.drain(10).0.is_empty(),
            "a global does not emit forwarded results"
        );
    }

    #[test]
    fn service_check_lines_map_statuses() {
        let sc = ServiceCheck {
            name: "db.up".into(),
            status: 1,
            tags: vec!["service:db".into(), "version:2".into()],
            host: "h".into(),
            timestamp: 7,
            message: "slow".into(),
        };
        let r = from_service_check(&sc, Some("db-host"), "me");
        assert_eq!(
            (r.status, r.service.name.as_str(), r.service.id.as_str()),
            (ERROR, "db", "db-host")
        );
        assert_eq!(r.service.version, "2");
        let r = from_service_check(
            &ServiceCheck {
                status: 3,
                tags: vec![],
                ..sc.clone()
            },
            None,
            "me",
        );
        assert_eq!(
            (r.status, r.service.name.as_str(), r.service.id.as_str()),
            (UNKNOWN, "db.up", "me")
        );
        let s = store();
        s.record(vec![r], Origin::ServiceCheckLine);
        assert_eq!(s.len(), 1);
        assert!(
            s.drain(10).0.is_empty(),
            "an _sc line's check is not emitted twice"
        );
    }
}
