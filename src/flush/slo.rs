//! The flush's part in SLOs (`docs/slo.md`): the rules the aggregator counts by, and at each
//! flush the interval's counts — evaluated here on a standalone or global instance (points,
//! the `slo.NAME` service checks, status-change events, a row per SLO in the health store, the
//! state file), or encoded for the forwarder on a local ([`forwarded`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::Flusher;
use crate::aggregate::slo::{LatencyRule, RatioRule, SloRules};
use crate::forward::proto::SloCount;
use crate::health::{self, HealthResult, Origin, Service};
use crate::point::FlushBatch;
use crate::slo::{Counts, Evaluation, Sli, SloSet, Status};

/// The SLOs of a process, shared by the flush, the API and SIGHUP.
pub type SharedSlos = Arc<Mutex<SloSet>>;

/// One SLO's counts of one interval, by SLO name.
pub type SloCounts = HashMap<Arc<str>, (f64, f64)>;

/// The counting rules of `set`'s SLOs, as the aggregator takes them.
pub fn rules_of(set: &SloSet) -> SloRules {
    let mut rules = SloRules::default();
    for s in set.specs() {
        match &s.sli {
            Sli::Latency { metric, threshold } => rules.latency.push(LatencyRule {
                slo: s.name.clone(),
                metric: metric.clone(),
                tags: s.tags.clone(),
                threshold: *threshold,
            }),
            Sli::Ratio { total, errors } => rules.ratio.push(RatioRule {
                slo: s.name.clone(),
                total: total.clone(),
                errors: errors.clone(),
                tags: s.tags.clone(),
            }),
        }
    }
    rules
}

/// A local's interval counts as its import carries them (by name, for a stable order).
pub fn forwarded(counts: &SloCounts) -> Vec<SloCount> {
    let mut out: Vec<SloCount> = counts
        .iter()
        .map(|(name, &(good, total))| SloCount {
            name: name.to_string(),
            good,
            total,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn to_counts(counts: &SloCounts) -> HashMap<Arc<str>, Counts> {
    counts
        .iter()
        .map(|(k, &(good, total))| (k.clone(), Counts { good, total }))
        .collect()
}

impl Flusher {
    /// Evaluates SLOs at each flush (and counts what their rules ask for from now on).
    pub fn with_slos(mut self, slos: SharedSlos) -> Flusher {
        self.slos = slos;
        self.refresh_slo_rules();
        self
    }

    /// The SLOs evaluated at each flush.
    pub fn slos(&self) -> &SharedSlos {
        &self.slos
    }

    /// Installs the rules of the SLOs as they are now (after a reload) in the aggregator.
    pub fn refresh_slo_rules(&mut self) {
        let rules = rules_of(&self.slos.lock().unwrap_or_else(PoisonError::into_inner));
        self.aggregator.set_slo_rules(rules.clone());
        self.slo_rules = Arc::new(rules);
    }

    /// Evaluates the interval's counts (and what locals forwarded) on a standalone or global
    /// instance, adding points, checks and events to `batch`.
    pub(super) async fn evaluate_slos(
        &mut self,
        counts: SloCounts,
        timestamp: i64,
        batch: &mut FlushBatch,
    ) {
        let interval = self.renderer.interval;
        let (evaluations, state) = {
            let mut set = self.slos.lock().unwrap_or_else(PoisonError::into_inner);
            if set.is_empty() {
                return;
            }
            let e = set.evaluate(&to_counts(&counts));
            (e, set.to_state(interval.saturating_mul(1000)))
        };
        let host = self.renderer.hostname().clone();
        let (points, checks, events) = crate::slo::emit(&evaluations, &host, timestamp, interval);
        batch.metrics.extend(points);
        batch.service_checks.extend(checks);
        batch.events.extend(events);
        let results = evaluations
            .iter()
            .map(|e| health_result(e, &host, timestamp, interval))
            .collect();
        self.health.record(results, Origin::Evaluated);
        if let Some((path, bytes)) = state {
            let written =
                tokio::task::spawn_blocking(move || crate::slo::write_atomic(&path, &bytes)).await;
            if let Ok(Err(e)) = written {
                tracing::warn!(error = %e, "SLO state file not written");
            }
        }
    }
}

/// The row an evaluation keeps in the health store (`meterd checks`, the status page): service
/// `slo`, OK while no alert fires, ERROR otherwise (the service check says WARNING or CRITICAL).
fn health_result(e: &Evaluation, host: &str, timestamp: i64, interval: u64) -> HealthResult {
    let ok = e.status == Status::Ok;
    let mut results = std::collections::BTreeMap::new();
    results.insert("msg".to_owned(), serde_json::Value::from(e.message.clone()));
    results.insert(
        "status".to_owned(),
        serde_json::Value::from(e.status.word()),
    );
    if e.budget_remaining.is_finite() {
        results.insert(
            "error_budget_remaining".to_owned(),
            serde_json::Value::from(e.budget_remaining),
        );
    }
    HealthResult {
        id: format!("slo.{}", e.name),
        description: String::new(),
        timestamp,
        interval,
        ttl: 0,
        status: if ok { health::OK } else { health::ERROR },
        error: if ok {
            String::new()
        } else {
            format!("{}: {}", e.status.word(), e.message)
        },
        service: Service {
            id: host.to_owned(),
            name: "slo".to_owned(),
            version: String::new(),
        },
        results,
    }
}
