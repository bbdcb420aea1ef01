//! The health-check store: the latest result per (check id, service id) with a short history,
//! bounded by `max_checks`, turned UNKNOWN when silent past its staleness and dropped past its
//! ttl; it queues what the next flush emits (`emit.rs`) and what a local forwards.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::emit::change_event;
use super::{HealthResult, UNKNOWN};
use crate::point::Event;

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
    /// Evaluated by meterd itself with its own service check and status-change events (SLOs):
    /// store only, no events of the store's.
    Evaluated,
}

pub(super) struct Entry {
    pub(super) latest: HealthResult,
    /// Unix seconds (f64 for sub-second staleness in tests) when `latest` was received.
    pub(super) received: f64,
    pub(super) history: VecDeque<HealthResult>,
    /// The status last reported to sinks and used for change events (UNKNOWN once stale).
    pub(super) effective: u8,
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
pub(super) struct Inner {
    pub(super) checks: HashMap<(String, String), Entry>,
    /// Results to emit at the next flush.
    pub(super) pending: Vec<HealthResult>,
    /// Stale transitions to emit as UNKNOWN service checks at the next flush.
    pub(super) pending_stale: Vec<HealthResult>,
    pub(super) events: Vec<Event>,
    /// Results to forward to the globals at the next flush (bounded by `max_checks`).
    forward: Vec<HealthResult>,
    /// Sequence for "most recently received first" ties.
    seq: u64,
    pub(super) order: HashMap<(String, String), u64>,
}

/// The health-check store.
pub struct HealthStore {
    pub(super) inner: Mutex<Inner>,
    pub(super) config: HealthConfig,
    /// Results refused by `max_checks`.
    pub dropped: AtomicU64,
}

pub(super) fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn now_f64() -> f64 {
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
                    if e.effective != r.status && origin != Origin::Evaluated {
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

    pub(super) fn sweep_at(&self, now: f64) {
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

    /// Takes the results recorded since the last call, as JSON objects, for forwarding.
    pub fn take_forward(&self) -> Vec<String> {
        let results = std::mem::take(&mut lock(&self.inner).forward);
        results
            .iter()
            .filter_map(|r| serde_json::to_string(r).ok())
            .collect()
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

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::fixtures::{result, store, PING};
    use super::super::{parse_body, parse_result, Query, ERROR, OK};
    use super::*;

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
}
