//! Reading health results in: go-micro JSON bodies (one object or an array, numbers also as
//! strings) validated into [`HealthResult`]s with errors that name the field, and
//! [`from_service_check`], which turns an `_sc` line's check into a result for the store.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{HealthResult, Service, ERROR, OK, UNKNOWN};
use crate::point::ServiceCheck;

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

/// Converts an `_sc` line's check into a store result (`docs/health.md#service-check-lines`): OK→1,
/// WARNING and CRITICAL→2, UNKNOWN→0; service from a `service:` tag (else the check name), version
/// from `version:`, service id from `h:` (else the hostname).
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
    use serde_json::json;

    use super::super::fixtures::{store, PING};
    use super::super::Origin;
    use super::*;

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
