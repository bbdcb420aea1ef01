//! What an evaluation becomes at the flush: `slo.good` and `slo.total` (counters),
//! `slo.burn_rate` per window and `slo.error_budget_remaining` (gauges), all tagged `slo:NAME`;
//! the service check `slo.NAME`; and an event when its status changes.

use std::sync::Arc;

use super::{Evaluation, Status};
use crate::point::{Event, Point, PointKind, ServiceCheck};

/// Points, service checks and status-change events for one flush's evaluations, stamped
/// `timestamp` on `host`.
pub fn emit(
    evaluations: &[Evaluation],
    host: &Arc<str>,
    timestamp: i64,
    interval: u64,
) -> (Vec<Point>, Vec<ServiceCheck>, Vec<Event>) {
    let mut points = Vec::with_capacity(evaluations.len() * 6);
    let mut checks = Vec::with_capacity(evaluations.len());
    let mut events = Vec::new();
    for e in evaluations {
        let tag = format!("slo:{}", e.name);
        let tags: Arc<[String]> = Arc::from(vec![tag.clone()]);
        let mut push = |name: &str, kind, value: f64, tags: Arc<[String]>| {
            if value.is_finite() {
                points.push(Point {
                    name: name.to_owned(),
                    kind,
                    value,
                    tags,
                    host: host.clone(),
                    timestamp,
                    interval,
                });
            }
        };
        push(
            "slo.good",
            PointKind::Counter,
            e.interval.good,
            tags.clone(),
        );
        push(
            "slo.total",
            PointKind::Counter,
            e.interval.total,
            tags.clone(),
        );
        for (window, rate) in &e.burn_rates {
            let mut t = vec![tag.clone(), format!("window:{window}")];
            t.sort_unstable();
            push("slo.burn_rate", PointKind::Gauge, *rate, Arc::from(t));
        }
        push(
            "slo.error_budget_remaining",
            PointKind::Gauge,
            e.budget_remaining,
            tags,
        );
        let check = format!("slo.{}", e.name);
        checks.push(ServiceCheck {
            name: check.clone(),
            status: e.status.check_status(),
            tags: vec![tag.clone()],
            host: host.to_string(),
            timestamp,
            message: e.message.clone(),
        });
        if let Some(old) = e.changed_from {
            events.push(Event {
                title: format!("{check} is now {}", e.status.word()),
                text: format!(
                    "{check} changed from {} to {}: {}",
                    old.word(),
                    e.status.word(),
                    e.message
                ),
                tags: vec![tag],
                host: host.to_string(),
                timestamp,
                aggregation_key: check,
                priority: "normal",
                source_type: String::new(),
                alert_type: match e.status {
                    Status::Ok => "success",
                    Status::Warning => "warning",
                    Status::Critical => "error",
                },
            });
        }
    }
    (points, checks, events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::Counts;

    #[test]
    fn every_name_is_tagged_with_the_slo_and_windows_as_written() {
        let e = Evaluation {
            name: Arc::from("pay"),
            interval: Counts {
                good: 3.0,
                total: 4.0,
            },
            burn_rates: vec![("1h".into(), 2.5), ("5m".into(), 0.0)],
            budget: Counts::default(),
            budget_remaining: 0.25,
            status: Status::Critical,
            message: "m".into(),
            changed_from: Some(Status::Ok),
        };
        let (points, checks, events) = emit(&[e], &Arc::from("h"), 7, 10);
        let got: Vec<(String, Vec<String>, f64)> = points
            .iter()
            .map(|p| (p.name.clone(), p.tags.to_vec(), p.value))
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            got,
            [
                ("slo.good".into(), s(&["slo:pay"]), 3.0),
                ("slo.total".into(), s(&["slo:pay"]), 4.0),
                ("slo.burn_rate".into(), s(&["slo:pay", "window:1h"]), 2.5),
                ("slo.burn_rate".into(), s(&["slo:pay", "window:5m"]), 0.0),
                ("slo.error_budget_remaining".into(), s(&["slo:pay"]), 0.25),
            ]
        );
        assert_eq!(points[0].kind, PointKind::Counter);
        assert_eq!(checks[0].name, "slo.pay");
        assert_eq!(checks[0].status, 2);
        assert_eq!(events[0].title, "slo.pay is now CRITICAL");
        assert_eq!(events[0].alert_type, "error");
    }
}
