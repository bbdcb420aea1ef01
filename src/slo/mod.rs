//! Service level objectives (`docs/slo.md`): each flush, the instance with the fleet view (a
//! standalone or global meterd) adds the interval's good and total events of every SLO to its
//! history, computes the burn rate over each alert window and the error budget left, and says
//! whether an alert fires.
//!
//! This module is pure and sits low: it knows the config's shape (`config.rs`), the history and
//! its arithmetic (`history.rs`), what an evaluation emits (`emit.rs`) and how the history is
//! kept across restarts (`state.rs`). Counting happens elsewhere: latency samples in
//! `aggregate` as they are recorded, counters at the flush; `flush` hands the interval's
//! [`Counts`] to [`SloSet::evaluate`].

mod config;
mod emit;
mod history;
mod state;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

pub use config::{
    validate, AlertConfig, AlertLevel, Sli, SloConfig, SloError, SloSection, SloSpec, Window,
    MAX_RING, MAX_WINDOW,
};
pub use emit::emit;
pub use history::{budget_remaining, burn_rate, Counts, History, COARSE_BUCKETS};
pub use state::write_atomic;

/// The state of an SLO's check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub enum Status {
    /// No alert fires.
    Ok,
    /// A warning alert fires, no critical one.
    Warning,
    /// A critical alert fires.
    Critical,
}

impl Status {
    /// `OK`, `WARNING` or `CRITICAL`.
    pub const fn word(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
        }
    }

    /// The service-check status: 0, 1 or 2.
    pub const fn check_status(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
        }
    }

    fn of(level: AlertLevel) -> Status {
        match level {
            AlertLevel::Warning => Status::Warning,
            AlertLevel::Critical => Status::Critical,
        }
    }
}

/// One SLO's result at one flush.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The SLO.
    pub name: Arc<str>,
    /// The interval's counts.
    pub interval: Counts,
    /// Burn rate per window, as written, in the order of [`SloSpec::windows`].
    pub burn_rates: Vec<(String, f64)>,
    /// Counts over the budget window.
    pub budget: Counts,
    /// Fraction of the budget left (may be negative).
    pub budget_remaining: f64,
    /// The worst firing alert's status, or OK.
    pub status: Status,
    /// The check's message: the alert that fired and its windows' burn rates.
    pub message: String,
    /// The previous status, when it differs (a status-change event).
    pub changed_from: Option<Status>,
}

/// One SLO as `GET /api/v1/slos` and the status page show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloView {
    /// Name.
    pub name: String,
    /// Objective.
    pub objective: f64,
    /// good ÷ total over the budget window; `null` when nothing was counted.
    pub sli: Option<f64>,
    /// Good events over the budget window.
    pub good: f64,
    /// Events over the budget window.
    pub total: f64,
    /// Burn rate per window (as written).
    pub burn_rates: BTreeMap<String, f64>,
    /// Fraction of the budget left (may be negative).
    pub error_budget_remaining: f64,
    /// `OK`, `WARNING` or `CRITICAL`.
    pub status: &'static str,
}

#[derive(Debug)]
struct Tracked {
    spec: SloSpec,
    history: History,
    status: Status,
}

impl Tracked {
    fn new(spec: SloSpec) -> Tracked {
        let longest = spec.windows.iter().map(|w| w.intervals).max().unwrap_or(1);
        let history = History::new(longest, spec.budget_intervals);
        Tracked {
            spec,
            history,
            status: Status::Ok,
        }
    }

    fn longest(&self) -> usize {
        self.spec
            .windows
            .iter()
            .map(|w| w.intervals)
            .max()
            .unwrap_or(1)
    }

    /// Burn rate per window, the worst firing alert and the check's message.
    fn judge(&self) -> (Vec<(String, f64)>, Status, String) {
        let objective = self.spec.objective;
        let rates: Vec<(String, f64)> = self
            .spec
            .windows
            .iter()
            .map(|w| {
                let r = burn_rate(self.history.last(w.intervals), objective);
                (w.label.clone(), r)
            })
            .collect();
        let rate = |i: usize| rates.get(i).map_or(0.0, |r| r.1);
        let describe = |a: &config::Alert| {
            let labels: Vec<&str> = a
                .windows
                .iter()
                .filter_map(|&i| rates.get(i).map(|r| r.0.as_str()))
                .collect();
            let burns: Vec<String> = a
                .windows
                .iter()
                .filter_map(|&i| rates.get(i).map(|(l, r)| format!("{l} {r:.3}")))
                .collect();
            format!(
                "alert {} at burn rate {} ({}) fired: burn rate {}",
                labels.join(" + "),
                a.burn_rate,
                Status::of(a.level).word(),
                burns.join(", ")
            )
        };
        let mut worst: Option<&config::Alert> = None;
        for a in &self.spec.alerts {
            let fires = a.windows.iter().all(|&i| rate(i) >= a.burn_rate);
            if fires && worst.is_none_or(|w| a.level > w.level) {
                worst = Some(a);
            }
        }
        let budget = budget_remaining(self.history.budget(), objective);
        match worst {
            Some(a) => {
                let status = Status::of(a.level);
                (
                    rates.clone(),
                    status,
                    format!("alert {} fired", describe(a)),
                )
            }
            None => {
                let burns: Vec<String> = rates.iter().map(|(l, r)| format!("{l} {r:.3}")).collect();
                let message = format!(
                    "no alert fires: burn rate {}; {:.1} % of the error budget left",
                    burns.join(", "),
                    budget * 100.0
                );
                (rates, Status::Ok, message)
            }
        }
    }

    fn view(&self) -> SloView {
        let (rates, status, _) = self.judge();
        let budget = self.history.budget();
        SloView {
            name: self.spec.name.to_string(),
            objective: self.spec.objective,
            sli: (budget.total > 0.0).then(|| budget.good / budget.total),
            good: budget.good,
            total: budget.total,
            burn_rates: rates.into_iter().collect(),
            error_budget_remaining: budget_remaining(budget, self.spec.objective),
            status: status.word(),
        }
    }
}

/// Every configured SLO with its history: one per process, behind a lock shared by the flush
/// (evaluate), the API (read) and SIGHUP (reconfigure).
#[derive(Debug, Default)]
pub struct SloSet {
    slos: Vec<Tracked>,
    state_file: PathBuf,
    /// Counts forwarded by locals, added to the next evaluation.
    imported: HashMap<Arc<str>, Counts>,
}

impl SloSet {
    /// The SLOs of `specs`, with the history kept in `state_file` for those whose config is
    /// unchanged (when set and readable).
    pub fn new(specs: Vec<SloSpec>, state_file: PathBuf) -> SloSet {
        let mut set = SloSet {
            slos: specs.into_iter().map(Tracked::new).collect(),
            state_file,
            imported: HashMap::new(),
        };
        set.load();
        set
    }

    /// Whether no SLO is configured.
    pub fn is_empty(&self) -> bool {
        self.slos.is_empty()
    }

    /// The SLOs' specs, in config order.
    pub fn specs(&self) -> impl Iterator<Item = &SloSpec> {
        self.slos.iter().map(|t| &t.spec)
    }

    /// Applies a reloaded config: an SLO whose config is unchanged keeps its history and status;
    /// a new or changed one starts empty; a removed one is forgotten.
    pub fn reconfigure(&mut self, specs: Vec<SloSpec>, state_file: PathBuf) {
        let mut old = std::mem::take(&mut self.slos);
        self.slos = specs
            .into_iter()
            .map(|spec| {
                match old
                    .iter()
                    .position(|t| t.spec.fingerprint == spec.fingerprint)
                {
                    Some(i) => old.swap_remove(i),
                    None => Tracked::new(spec),
                }
            })
            .collect();
        self.state_file = state_file;
    }

    /// Adds counts a local forwarded for this interval (admitted once by the import ledger).
    pub fn add_imported(&mut self, name: &str, counts: Counts) {
        if let Some(t) = self.slos.iter().find(|t| &*t.spec.name == name) {
            self.imported
                .entry(t.spec.name.clone())
                .or_default()
                .add(counts);
        }
    }

    /// Pushes each SLO's interval counts (`counts` by SLO name, plus what locals forwarded
    /// since the last call) into its history and evaluates it.
    pub fn evaluate(&mut self, counts: &HashMap<Arc<str>, Counts>) -> Vec<Evaluation> {
        let imported = std::mem::take(&mut self.imported);
        let mut out = Vec::with_capacity(self.slos.len());
        for t in &mut self.slos {
            let mut c = counts.get(&t.spec.name).copied().unwrap_or_default();
            if let Some(i) = imported.get(&t.spec.name) {
                c.add(*i);
            }
            t.history.push(c);
            let (burn_rates, status, message) = t.judge();
            let budget = t.history.budget();
            let changed_from = (status != t.status).then_some(t.status);
            t.status = status;
            out.push(Evaluation {
                name: t.spec.name.clone(),
                interval: c,
                burn_rates,
                budget,
                budget_remaining: budget_remaining(budget, t.spec.objective),
                status,
                message,
                changed_from,
            });
        }
        out
    }

    /// Every SLO as the API shows it.
    pub fn views(&self) -> Vec<SloView> {
        self.slos.iter().map(Tracked::view).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    pub(super) fn specs(text: &str, interval_s: u64) -> Vec<SloSpec> {
        #[derive(serde::Deserialize)]
        struct File {
            slos: Vec<SloConfig>,
        }
        let f: File = toml::from_str(text).unwrap();
        validate(&f.slos, Duration::from_secs(interval_s)).unwrap()
    }

    pub(super) const RATIO: &str = "[[slos]]\nname = \"api\"\nobjective = 0.999\n\
        total = \"req\"\nerrors = \"err\"\nbudget_window = \"1m\"\n\
        alerts = [{ windows = [\"3s\", \"1s\"], burn_rate = 14.4, status = \"critical\" },\n\
                  { windows = [\"6s\"], burn_rate = 1, status = \"warning\" }]\n";

    fn counts(good: f64, total: f64) -> HashMap<Arc<str>, Counts> {
        HashMap::from([(Arc::from("api"), Counts { good, total })])
    }

    #[test]
    fn a_burst_turns_critical_then_warning_then_ok() {
        let mut set = SloSet::new(specs(RATIO, 1), PathBuf::new());
        for _ in 0..6 {
            let e = set.evaluate(&counts(1000.0, 1000.0));
            assert_eq!(e[0].status, Status::Ok);
            assert_eq!(e[0].changed_from, None);
        }
        // 20 bad of 1000 at 99.9 %: 20 over 1 s, 20 ÷ 3 over 3 s (≥ 14.4 both).
        let e = set.evaluate(&counts(980.0, 1000.0));
        assert_eq!(e[0].burn_rates[0].0, "3s");
        assert!((e[0].burn_rates[0].1 - 20.0 / 3.0).abs() < 1e-9);
        assert!((e[0].burn_rates[1].1 - 20.0).abs() < 1e-9);
        // 20/3 < 14.4: only the warning (6 s: 20 / 6000 / 0.001 = 3.33 ≥ 1) fires.
        assert_eq!(e[0].status, Status::Warning);
        assert_eq!(e[0].changed_from, Some(Status::Ok));
        assert!(
            e[0].message.contains("6s at burn rate 1 (WARNING)"),
            "{}",
            e[0].message
        );
        // A bigger burst: 100 bad → 3 s: 120 / 3000 / 0.001 = 40; 1 s: 100.
        let e = set.evaluate(&counts(900.0, 1000.0));
        assert_eq!(e[0].status, Status::Critical);
        assert_eq!(e[0].changed_from, Some(Status::Warning));
        assert!(
            e[0].message
                .contains("3s + 1s at burn rate 14.4 (CRITICAL)"),
            "{}",
            e[0].message
        );
        // Clean intervals: the 1 s window clears at once (critical needs both).
        let e = set.evaluate(&counts(1000.0, 1000.0));
        assert_eq!(e[0].status, Status::Warning);
        for _ in 0..5 {
            set.evaluate(&counts(1000.0, 1000.0));
        }
        let e = set.evaluate(&counts(1000.0, 1000.0));
        assert_eq!(e[0].status, Status::Ok);
        // The budget window (60 intervals) still holds the 120 bad of 15,000 events.
        assert_eq!(e[0].budget.total, 15_000.0);
        assert!((e[0].budget_remaining - (1.0 - 120.0 / 15.0)).abs() < 1e-9);
        let v = &set.views()[0];
        assert_eq!(v.status, "OK");
        assert_eq!(v.total, 15_000.0);
        assert_eq!(v.burn_rates.get("6s"), Some(&0.0));
    }

    #[test]
    fn imported_counts_add_to_the_next_evaluation_once() {
        let mut set = SloSet::new(specs(RATIO, 1), PathBuf::new());
        set.add_imported(
            "api",
            Counts {
                good: 5.0,
                total: 7.0,
            },
        );
        set.add_imported("unknown", Counts::default());
        let e = set.evaluate(&counts(10.0, 10.0));
        assert_eq!(
            e[0].interval,
            Counts {
                good: 15.0,
                total: 17.0
            }
        );
        let e = set.evaluate(&HashMap::new());
        assert_eq!(e[0].interval, Counts::default());
    }

    #[test]
    fn reconfigure_keeps_unchanged_history_and_restarts_changed() {
        let mut set = SloSet::new(specs(RATIO, 1), PathBuf::new());
        set.evaluate(&counts(1.0, 2.0));
        set.reconfigure(specs(RATIO, 1), PathBuf::new());
        assert_eq!(set.views()[0].total, 2.0);
        let changed = RATIO.replace("0.999", "0.99");
        set.reconfigure(specs(&changed, 1), PathBuf::new());
        assert_eq!(set.views()[0].total, 0.0);
        assert_eq!(set.views()[0].sli, None);
    }
}
