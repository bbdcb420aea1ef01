//! What the store becomes at each flush: service checks for results received through the API
//! and for checks gone stale, `healthcheck.KEY` gauges for numeric results, and status-change
//! events.

use std::sync::Arc;

use serde_json::Value;

use super::store::{lock, now_f64, HealthStore};
use super::{service_check_status, status_word, HealthResult, ERROR, OK};
use crate::point::{Event, Point, PointKind, ServiceCheck};

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

impl HealthStore {
    /// Sweeps, then takes what the next flush emits: service checks, `healthcheck.KEY` gauges,
    /// and status-change events.
    pub fn drain(&self, interval: u64) -> (Vec<ServiceCheck>, Vec<Point>, Vec<Event>) {
        self.drain_at(interval, now_f64())
    }

    pub(super) fn drain_at(
        &self,
        interval: u64,
        now: f64,
    ) -> (Vec<ServiceCheck>, Vec<Point>, Vec<Event>) {
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
}

pub(super) fn change_event(r: &HealthResult, old: u8, new: u8, host: &str) -> Event {
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{store, PING};
    use super::super::{parse_body, Origin};

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
}
