//! `[[slos]]` and `[slo]` as the file writes them ([`SloConfig`], [`SloSection`]), and their
//! validation into [`SloSpec`]s, whose errors name the SLO and the key.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::parse_duration;

/// Longest alert or budget window accepted.
pub const MAX_WINDOW: Duration = Duration::from_secs(90 * 86_400);
/// Most intervals one SLO's ring of per-interval counts may hold (16 bytes each).
pub const MAX_RING: usize = 1 << 20;

/// One `[[slos]]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// Unique name; emitted as the tag `slo:NAME` and the check `slo.NAME`.
    pub name: String,
    /// Target fraction of good events, in (0, 1), e.g. `0.999`.
    pub objective: f64,
    /// Latency SLI: the timer, histogram or distribution whose samples are counted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metric: String,
    /// Latency SLI: a sample at or below it is good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Ratio SLI: the counter of all events.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub total: String,
    /// Ratio SLI: the counter of bad events.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub errors: String,
    /// Only series carrying every one of these tags count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Burn-rate alerts; default: the multiwindow set of Google's SRE workbook.
    #[serde(default = "default_alerts")]
    pub alerts: Vec<AlertConfig>,
    /// The window the error budget is counted over.
    #[serde(default = "default_budget_window")]
    pub budget_window: String,
}

/// One alert of an SLO: fires when every window's burn rate reaches `burn_rate`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Windows as durations (`"1h"`, `"5m"`); the tag `window:` carries them as written.
    pub windows: Vec<String>,
    /// Burn rate every window must reach.
    pub burn_rate: f64,
    /// The check's status while it fires.
    pub status: AlertLevel,
}

/// What a firing alert makes of the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertLevel {
    /// WARNING.
    Warning,
    /// CRITICAL.
    Critical,
}

/// `[slo]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SloSection {
    /// Where the SLOs' history is written at each flush and read at start; empty: not kept
    /// across restarts.
    pub state_file: PathBuf,
}

fn default_alerts() -> Vec<AlertConfig> {
    let alert = |windows: [&str; 2], burn_rate, status| AlertConfig {
        windows: windows.iter().map(|w| (*w).to_owned()).collect(),
        burn_rate,
        status,
    };
    vec![
        alert(["1h", "5m"], 14.4, AlertLevel::Critical),
        alert(["6h", "30m"], 6.0, AlertLevel::Critical),
        alert(["3d", "6h"], 1.0, AlertLevel::Warning),
    ]
}

fn default_budget_window() -> String {
    "30d".to_owned()
}

/// What an SLO counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Sli {
    /// Samples of `metric` at or below `threshold` are good.
    Latency {
        /// Timer, histogram or distribution name.
        metric: String,
        /// Inclusive upper bound of a good sample.
        threshold: f64,
    },
    /// good = `total` − `errors` (counters).
    Ratio {
        /// Counter of all events.
        total: String,
        /// Counter of bad events.
        errors: String,
    },
}

/// A window of an SLO: as written, and as a whole number of flush intervals (rounded up).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// As the config writes it (the `window:` tag, the API's `burn_rates` key).
    pub label: String,
    /// Flush intervals it spans, at least 1.
    pub intervals: usize,
}

/// A validated alert: indexes into [`SloSpec::windows`].
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Indexes of its windows in [`SloSpec::windows`].
    pub windows: Vec<usize>,
    /// Burn rate every window must reach.
    pub burn_rate: f64,
    /// Status while it fires.
    pub level: AlertLevel,
}

/// A validated SLO.
#[derive(Debug, Clone, PartialEq)]
pub struct SloSpec {
    /// Name.
    pub name: Arc<str>,
    /// Objective in (0, 1).
    pub objective: f64,
    /// What is counted.
    pub sli: Sli,
    /// Tag filter.
    pub tags: Vec<String>,
    /// Distinct windows of all alerts, in order of first mention.
    pub windows: Vec<Window>,
    /// Alerts.
    pub alerts: Vec<Alert>,
    /// Budget window in flush intervals.
    pub budget_intervals: usize,
    /// Identity of the configuration (the table as TOML, plus the interval): history is kept
    /// across a reload or restart only while it is unchanged.
    pub fingerprint: String,
}

/// A refused `[[slos]]` table: the key (`slos[N].KEY`) and what is wrong, naming the SLO.
#[derive(Debug, Clone, PartialEq)]
pub struct SloError {
    /// Dotted key, `slos[N].KEY`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Intervals (rounded up, at least 1) a window written `text` spans.
fn intervals(text: &str, interval: Duration) -> Result<(usize, Duration), String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(format!("window {text:?} must be more than 0"));
    }
    if d > MAX_WINDOW {
        return Err(format!("window {text:?} must be at most 90d"));
    }
    let step = interval.as_millis().max(1);
    let n = d.as_millis().div_ceil(step);
    Ok((usize::try_from(n).unwrap_or(usize::MAX).max(1), d))
}

/// Validates every `[[slos]]` table against the flush `interval`.
pub fn validate(slos: &[SloConfig], interval: Duration) -> Result<Vec<SloSpec>, SloError> {
    let mut out: Vec<SloSpec> = Vec::with_capacity(slos.len());
    for (i, c) in slos.iter().enumerate() {
        let who = if c.name.is_empty() {
            format!("slo {i}")
        } else {
            format!("slo {:?}", c.name)
        };
        let err = |key: &str, what: String| SloError {
            key: format!("slos[{i}].{key}"),
            message: format!("{who}: {what}"),
        };
        if c.name.is_empty() || c.name.contains([',', ' ', '|', '#']) || c.name.len() > 200 {
            return Err(err(
                "name",
                "must be non-empty, at most 200 bytes, without spaces, commas, | or #".into(),
            ));
        }
        if out.iter().any(|s| *s.name == *c.name) {
            return Err(err("name", "is used by an earlier SLO".into()));
        }
        if !(c.objective > 0.0 && c.objective < 1.0) {
            return Err(err(
                "objective",
                format!("must be in (0, 1), e.g. 0.999 (got {})", c.objective),
            ));
        }
        let latency = !c.metric.is_empty() || c.threshold.is_some();
        let ratio = !c.total.is_empty() || !c.errors.is_empty();
        let sli = match (latency, ratio) {
            (true, true) => return Err(err(
                "metric",
                "set either metric and threshold (latency) or total and errors (ratio), not both"
                    .into(),
            )),
            (false, false) => {
                return Err(err(
                    "metric",
                    "needs metric and threshold (latency) or total and errors (ratio)".into(),
                ))
            }
            (true, false) => match (c.metric.is_empty(), c.threshold) {
                (true, _) => return Err(err("metric", "must be set with threshold".into())),
                (false, None) => return Err(err("threshold", "must be set with metric".into())),
                (false, Some(t)) if !t.is_finite() => {
                    return Err(err("threshold", "must be a finite number".into()))
                }
                (false, Some(threshold)) => Sli::Latency {
                    metric: c.metric.clone(),
                    threshold,
                },
            },
            (false, true) => {
                if c.total.is_empty() {
                    return Err(err("total", "must be set with errors".into()));
                }
                if c.errors.is_empty() {
                    return Err(err("errors", "must be set with total".into()));
                }
                Sli::Ratio {
                    total: c.total.clone(),
                    errors: c.errors.clone(),
                }
            }
        };
        for t in &c.tags {
            if t.is_empty() || t.contains(',') || t.chars().any(char::is_control) {
                return Err(err(
                    "tags",
                    format!("tag {t:?} must be non-empty, without commas or control characters"),
                ));
            }
        }
        if c.alerts.is_empty() {
            return Err(err("alerts", "needs at least one alert".into()));
        }
        let mut windows: Vec<Window> = Vec::new();
        let mut alerts = Vec::with_capacity(c.alerts.len());
        for (a, alert) in c.alerts.iter().enumerate() {
            let key = format!("alerts[{a}]");
            if alert.windows.is_empty() {
                return Err(err(
                    &format!("{key}.windows"),
                    "needs at least one window".into(),
                ));
            }
            if !(alert.burn_rate.is_finite() && alert.burn_rate > 0.0) {
                return Err(err(
                    &format!("{key}.burn_rate"),
                    "must be a number above 0".into(),
                ));
            }
            let mut idx = Vec::with_capacity(alert.windows.len());
            for w in &alert.windows {
                let (n, _) =
                    intervals(w, interval).map_err(|m| err(&format!("{key}.windows"), m))?;
                if n > MAX_RING {
                    return Err(err(
                        &format!("{key}.windows"),
                        format!("window {w:?} spans more than {MAX_RING} flush intervals"),
                    ));
                }
                let at = match windows.iter().position(|x| x.label == *w) {
                    Some(p) => p,
                    None => {
                        windows.push(Window {
                            label: w.clone(),
                            intervals: n,
                        });
                        windows.len() - 1
                    }
                };
                idx.push(at);
            }
            alerts.push(Alert {
                windows: idx,
                burn_rate: alert.burn_rate,
                level: alert.status,
            });
        }
        let (budget_intervals, _) =
            intervals(&c.budget_window, interval).map_err(|m| err("budget_window", m))?;
        let fingerprint = format!(
            "{}|{}",
            interval.as_millis(),
            toml::to_string(c).unwrap_or_default()
        );
        out.push(SloSpec {
            name: Arc::from(c.name.as_str()),
            objective: c.objective,
            sli,
            tags: c.tags.clone(),
            windows,
            alerts,
            budget_intervals,
            fingerprint,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        slos: Vec<SloConfig>,
    }

    fn parse(text: &str) -> Result<Vec<SloSpec>, SloError> {
        let f: File = toml::from_str(text).unwrap();
        validate(&f.slos, Duration::from_secs(10))
    }

    #[test]
    fn latency_slo_with_default_alerts() {
        let s = parse(
            "[[slos]]\nname = \"checkout\"\nobjective = 0.999\nmetric = \"checkout.latency\"\n\
             threshold = 300\ntags = [\"route:/pay\"]\n",
        )
        .unwrap();
        let s = &s[0];
        assert_eq!(
            s.sli,
            Sli::Latency {
                metric: "checkout.latency".into(),
                threshold: 300.0
            }
        );
        let labels: Vec<_> = s.windows.iter().map(|w| w.label.as_str()).collect();
        assert_eq!(labels, ["1h", "5m", "6h", "30m", "3d"]);
        assert_eq!(s.windows[0].intervals, 360);
        assert_eq!(s.windows[4].intervals, 3 * 8640);
        assert_eq!(s.alerts.len(), 3);
        assert_eq!(s.alerts[2].windows, [4, 2]);
        assert_eq!(s.alerts[2].level, AlertLevel::Warning);
        assert_eq!(s.budget_intervals, 30 * 8640);
    }

    #[test]
    fn ratio_slo_and_windows_round_up_to_intervals() {
        let s = parse(
            "[[slos]]\nname = \"api\"\nobjective = 0.99\ntotal = \"req\"\nerrors = \"err\"\n\
             alerts = [{ windows = [\"25s\", \"1s\"], burn_rate = 2, status = \"warning\" }]\n\
             budget_window = \"1m\"\n",
        )
        .unwrap();
        assert_eq!(s[0].windows[0].intervals, 3);
        assert_eq!(s[0].windows[1].intervals, 1);
        assert_eq!(s[0].budget_intervals, 6);
    }

    #[test]
    fn errors_name_the_slo_and_the_key() {
        let base = "[[slos]]\nname = \"a\"\nobjective = 0.9\ntotal = \"t\"\nerrors = \"e\"\n";
        let cases = [
            (
                "[[slos]]\nname = \"a\"\nobjective = 1.0\ntotal = \"t\"\nerrors = \"e\"\n",
                "slos[0].objective",
            ),
            (
                "[[slos]]\nname = \"a\"\nobjective = 0.9\nmetric = \"m\"\n",
                "slos[0].threshold",
            ),
            (
                "[[slos]]\nname = \"a\"\nobjective = 0.9\nmetric = \"m\"\nthreshold = 1\ntotal = \"t\"\n",
                "slos[0].metric",
            ),
            ("[[slos]]\nname = \"a\"\nobjective = 0.9\n", "slos[0].metric"),
            (
                "[[slos]]\nname = \"a\"\nobjective = 0.9\ntotal = \"t\"\n",
                "slos[0].errors",
            ),
            (
                &format!("{base}alerts = [{{ windows = [\"1x\"], burn_rate = 1, status = \"warning\" }}]\n"),
                "slos[0].alerts[0].windows",
            ),
            (
                &format!("{base}alerts = [{{ windows = [\"1h\"], burn_rate = 0, status = \"warning\" }}]\n"),
                "slos[0].alerts[0].burn_rate",
            ),
            (&format!("{base}budget_window = \"0s\"\n"), "slos[0].budget_window"),
            (&format!("{base}{base}"), "slos[1].name"),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.key, key, "{text}");
            assert!(e.message.starts_with("slo \"a\""), "{}", e.message);
        }
    }

    #[test]
    fn unknown_status_and_keys_are_refused_by_the_parser() {
        let r: Result<File, _> = toml::from_str(
            "[[slos]]\nname = \"a\"\nobjective = 0.9\ntotal = \"t\"\nerrors = \"e\"\nfoo = 1\n",
        );
        assert!(r.is_err());
        let r: Result<File, _> = toml::from_str(
            "[[slos]]\nname = \"a\"\nobjective = 0.9\ntotal = \"t\"\nerrors = \"e\"\n\
             alerts = [{ windows = [\"1h\"], burn_rate = 1, status = \"page\" }]\n",
        );
        assert!(r.is_err());
    }

    #[test]
    fn fingerprint_changes_with_any_key_and_the_interval() {
        let a = parse("[[slos]]\nname = \"a\"\nobjective = 0.9\ntotal = \"t\"\nerrors = \"e\"\n")
            .unwrap();
        let b = parse("[[slos]]\nname = \"a\"\nobjective = 0.99\ntotal = \"t\"\nerrors = \"e\"\n")
            .unwrap();
        assert_ne!(a[0].fingerprint, b[0].fingerprint);
        let f: File = toml::from_str(
            "[[slos]]\nname = \"a\"\nobjective = 0.9\ntotal = \"t\"\nerrors = \"e\"\n",
        )
        .unwrap();
        let c = validate(&f.slos, Duration::from_secs(5)).unwrap();
        assert_ne!(a[0].fingerprint, c[0].fingerprint);
    }
}
