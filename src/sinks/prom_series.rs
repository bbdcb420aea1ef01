//! Prometheus conventions shared by the `prometheus_remote_write` and `prometheus` (scrape)
//! sinks (`docs/sinks.md#prometheus-conventions`): sanitised names, tags as labels plus `host`, and
//! counters made cumulative.
//!
//! statsd counters are per-interval totals; Prometheus counters only go up, so `rate()` can work.
//! [`Cumulative`] keeps every series' running total (counters, named `NAME_total`) or last value
//! (gauges) across flushes, grouped into metric families by sanitised name. A series that no
//! flush has updated for `expire_after` is forgotten (a counter coming back later restarts from 0,
//! which Prometheus reads as a reset). The state is bounded by the series the flushes carried
//! during the last `expire_after`: `max_series` × `expire_after` / `interval` at most.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::point::{Point, PointKind};

/// Sorted label pairs of one series, without `__name__`.
pub(super) type Labels = Vec<(String, String)>;

/// `name` with every character outside `[a-zA-Z0-9_:]`, and a leading digit, replaced by `_`
/// (`docs/sinks.md#prometheus-conventions`), appended to `out`.
pub(super) fn sanitize_name(name: &str, out: &mut String) {
    for (i, c) in name.chars().enumerate() {
        let ok = c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit());
        out.push(if ok { c } else { '_' });
    }
}

/// A tag key as a label name, appended to `out`: sanitised like a metric name, except that `:`
/// also becomes `_` (label names may not hold colons), an empty key becomes `_`, and a name
/// starting with `__` (reserved for Prometheus' own labels, e.g. `__name__`) is prefixed `tag`.
pub(super) fn sanitize_label(key: &str, out: &mut String) {
    let start = out.len();
    for (i, c) in key.chars().enumerate() {
        let ok = c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit());
        out.push(if ok { c } else { '_' });
    }
    if out.len() == start {
        out.push('_');
    }
    if out[start..].starts_with("__") {
        out.insert_str(start, "tag");
    }
}

/// The labels of a point: one per tag (`k:v` → `k="v"`, bare `k` → `k="true"`, empty values
/// skipped, as Prometheus treats an empty label as absent) plus `host` unless empty. Sorted by
/// name; when two tags give one label name, the later tag (in sorted tag order) wins, and `host`
/// wins over a tag.
pub(super) fn labels_of(tags: &[String], host: &str) -> Labels {
    let mut labels: Labels = Vec::with_capacity(tags.len() + 1);
    for tag in tags {
        let (key, value) = tag.split_once(':').unwrap_or((tag.as_str(), "true"));
        if value.is_empty() {
            continue;
        }
        let mut name = String::with_capacity(key.len());
        sanitize_label(key, &mut name);
        labels.push((name, value.to_owned()));
    }
    if !host.is_empty() {
        labels.push(("host".to_owned(), host.to_owned()));
    }
    // Stable: equal names keep their order, so the last of them is the one to keep.
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    let mut deduped: Labels = Vec::with_capacity(labels.len());
    for label in labels {
        match deduped.last_mut() {
            Some(last) if last.0 == label.0 => *last = label,
            _ => deduped.push(label),
        }
    }
    deduped
}

/// One series' state.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Series {
    /// Running total (counters) or last value (gauges).
    pub value: f64,
    /// Unix seconds of the last flush that carried a point of this series: its age for expiry.
    updated: i64,
    /// Unix ms of the newest point ever folded in: an older gauge point does not overwrite.
    newest_ms: i64,
    /// Unix ms of the newest point the last update carried; `None` when it carried none.
    batch_ms: Option<i64>,
    /// Points the last update folded in.
    pub points: u64,
    /// Unix ms of the last sample sent by remote write: samples never go backwards.
    pub sent_ms: Option<i64>,
}

impl Series {
    /// The timestamp (unix ms) of this series' sample for the flush at `flush_ts`: the newest
    /// point it just received, else the flush's own time.
    pub(super) fn sample_ms(&self, flush_ts: i64) -> i64 {
        self.batch_ms.unwrap_or(flush_ts.saturating_mul(1000))
    }
}

/// The series sharing one sanitised name.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Family {
    /// Fixed by the family's first series; points of the other kind under this name are
    /// refused (an exposition may give a name one TYPE only).
    pub kind: PointKind,
    /// The statsd name of the family's first series, for `# HELP`.
    pub help: String,
    /// By sorted labels.
    pub series: BTreeMap<Labels, Series>,
}

/// What one [`Cumulative::update`] saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct UpdateStats {
    /// Unix seconds this flush is taken to be at: the newest point timestamp not in the future
    /// (the flusher stamps points with the end of the interval), else `now`.
    pub flush_ts: i64,
    /// Points refused because their name is a family of the other kind.
    pub conflicts: u64,
    /// Series forgotten for being older than `expire_after`.
    pub expired: u64,
}

/// Every live series, by family name.
#[derive(Debug, Clone, Default)]
pub(super) struct Cumulative {
    families: BTreeMap<String, Family>,
    /// Seconds without an update after which a series is forgotten.
    expire_after: i64,
    /// Reused for each point's family name.
    name: String,
}

impl Cumulative {
    /// Empty state forgetting series after `expire_after_secs` without an update.
    pub(super) fn new(expire_after_secs: u64) -> Self {
        Cumulative {
            families: BTreeMap::new(),
            expire_after: i64::try_from(expire_after_secs).unwrap_or(i64::MAX),
            name: String::new(),
        }
    }

    /// Families by name, each with its series by labels.
    pub(super) fn families(&self) -> &BTreeMap<String, Family> {
        &self.families
    }

    /// Mutable families, for remote write's `sent_ms`.
    pub(super) fn families_mut(&mut self) -> &mut BTreeMap<String, Family> {
        &mut self.families
    }

    /// Folds one flush's points in (counters added, gauges replaced) and forgets expired
    /// series. `now` is the wall clock in unix seconds.
    pub(super) fn update(&mut self, points: &[Point], now: i64) -> UpdateStats {
        let flush_ts = points
            .iter()
            .map(|p| p.timestamp)
            .filter(|&t| t <= now.saturating_add(1))
            .max()
            .unwrap_or(now);
        let mut stats = UpdateStats {
            flush_ts,
            ..UpdateStats::default()
        };
        for family in self.families.values_mut() {
            for series in family.series.values_mut() {
                series.batch_ms = None;
                series.points = 0;
            }
        }
        // Points of one series are adjacent and share their tags and host: build labels once.
        let mut cached: Option<(*const [String], *const str, Labels)> = None;
        for point in points {
            self.name.clear();
            sanitize_name(&point.name, &mut self.name);
            if point.kind == PointKind::Counter {
                self.name.push_str("_total");
            }
            let tags_ptr = Arc::as_ptr(&point.tags);
            let host_ptr = Arc::as_ptr(&point.host);
            let labels = match &cached {
                Some((t, h, labels))
                    if std::ptr::eq(*t, tags_ptr) && std::ptr::eq(*h, host_ptr) =>
                {
                    labels
                }
                _ => {
                    let labels = labels_of(&point.tags, &point.host);
                    &cached.insert((tags_ptr, host_ptr, labels)).2
                }
            };
            // Look up borrowed; allocate the owned name only for a new family.
            if !self.families.contains_key(self.name.as_str()) {
                let family = Family {
                    kind: point.kind,
                    help: point.name.clone(),
                    series: BTreeMap::new(),
                };
                self.families.insert(self.name.clone(), family);
            }
            let Some(family) = self.families.get_mut(self.name.as_str()) else {
                continue;
            };
            if family.kind != point.kind {
                stats.conflicts += 1;
                continue;
            }
            if !family.series.contains_key(labels.as_slice()) {
                let series = Series {
                    value: 0.0,
                    updated: flush_ts,
                    newest_ms: i64::MIN,
                    batch_ms: None,
                    points: 0,
                    sent_ms: None,
                };
                family.series.insert(labels.clone(), series);
            }
            let Some(series) = family.series.get_mut(labels.as_slice()) else {
                continue;
            };
            let ts_ms = point.timestamp.saturating_mul(1000);
            match point.kind {
                PointKind::Counter => series.value += point.value,
                PointKind::Gauge => {
                    if ts_ms >= series.newest_ms {
                        series.value = point.value;
                    }
                }
            }
            series.newest_ms = series.newest_ms.max(ts_ms);
            series.batch_ms = Some(series.batch_ms.map_or(ts_ms, |t| t.max(ts_ms)));
            series.updated = flush_ts;
            series.points += 1;
        }
        let expire_after = self.expire_after;
        self.families.retain(|_, family| {
            let before = family.series.len();
            family
                .series
                .retain(|_, s| flush_ts.saturating_sub(s.updated) < expire_after);
            stats.expired += (before - family.series.len()) as u64;
            !family.series.is_empty()
        });
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> String {
        let mut out = String::new();
        sanitize_name(s, &mut out);
        out
    }

    fn label(s: &str) -> String {
        let mut out = String::new();
        sanitize_label(s, &mut out);
        out
    }

    fn point(name: &str, kind: PointKind, value: f64, tags: &[&str], ts: i64) -> Point {
        Point {
            name: name.to_owned(),
            kind,
            value,
            tags: tags
                .iter()
                .map(|t| (*t).to_owned())
                .collect::<Vec<_>>()
                .into(),
            host: "web-1".into(),
            timestamp: ts,
            interval: 10,
        }
    }

    fn pairs(v: &[(&str, &str)]) -> Labels {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn names_are_sanitised() {
        assert_eq!(name("api.latency.99percentile"), "api_latency_99percentile");
        assert_eq!(name("a-b c/d:e_F9"), "a_b_c_d:e_F9");
        assert_eq!(name("9lives"), "_lives");
        assert_eq!(name("héllo"), "h_llo");
        assert_eq!(name(":ok"), ":ok");
    }

    #[test]
    fn label_names_are_sanitised() {
        assert_eq!(label("route"), "route");
        assert_eq!(label("k8s.pod-name"), "k8s_pod_name");
        assert_eq!(label("a:b"), "a_b");
        assert_eq!(label("1st"), "_st");
        assert_eq!(label(""), "_");
        assert_eq!(label("__name__"), "tag__name__");
        assert_eq!(label("_private"), "_private");
    }

    #[test]
    fn tags_become_sorted_labels_with_host() {
        let tags: Vec<String> = ["env:prod", "canary", "route:/x", "Zone:a", "empty:"]
            .map(String::from)
            .into();
        assert_eq!(
            labels_of(&tags, "web-1"),
            pairs(&[
                ("Zone", "a"),
                ("canary", "true"),
                ("env", "prod"),
                ("host", "web-1"),
                ("route", "/x")
            ])
        );
        assert_eq!(labels_of(&tags[..1], ""), pairs(&[("env", "prod")]));
    }

    #[test]
    fn colliding_labels_keep_the_last() {
        let tags: Vec<String> = ["a.b:1", "a_b:2", "env:dev", "env:prod", "host:x"]
            .map(String::from)
            .into();
        assert_eq!(
            labels_of(&tags, "web-1"),
            pairs(&[("a_b", "2"), ("env", "prod"), ("host", "web-1")])
        );
    }

    #[test]
    fn counters_accumulate_and_gauges_replace() {
        let mut state = Cumulative::new(300);
        let flush = |v: f64, g: f64, ts: i64| {
            vec![
                point("api.requests", PointKind::Counter, v, &["env:prod"], ts),
                point("api.temp", PointKind::Gauge, g, &["env:prod"], ts),
            ]
        };
        state.update(&flush(5.0, 20.0, 1000), 1000);
        state.update(&flush(3.0, 21.5, 1010), 1010);
        let stats = state.update(&flush(0.5, 19.0, 1020), 1020);
        assert_eq!(stats.flush_ts, 1020);
        let labels = pairs(&[("env", "prod"), ("host", "web-1")]);
        let counter = &state.families()["api_requests_total"];
        assert_eq!(counter.kind, PointKind::Counter);
        assert_eq!(counter.help, "api.requests");
        assert_eq!(counter.series[&labels].value, 8.5);
        assert_eq!(counter.series[&labels].sample_ms(1020), 1_020_000);
        let gauge = &state.families()["api_temp"];
        assert_eq!(gauge.series[&labels].value, 19.0);
    }

    #[test]
    fn names_colliding_after_sanitising_share_a_series() {
        let mut state = Cumulative::new(300);
        state.update(
            &[
                point("a.b", PointKind::Counter, 1.0, &[], 1000),
                point("a_b", PointKind::Counter, 2.0, &[], 1000),
            ],
            1000,
        );
        let family = &state.families()["a_b_total"];
        assert_eq!(family.series.len(), 1);
        assert_eq!(family.series.values().next().map(|s| s.value), Some(3.0));
    }

    #[test]
    fn a_name_keeps_its_first_kind() {
        let mut state = Cumulative::new(300);
        let stats = state.update(
            &[
                point("x", PointKind::Counter, 1.0, &[], 1000),
                point("x_total", PointKind::Gauge, 7.0, &[], 1000),
            ],
            1000,
        );
        assert_eq!(stats.conflicts, 1);
        assert_eq!(state.families()["x_total"].kind, PointKind::Counter);
        assert_eq!(
            state.families()["x_total"]
                .series
                .values()
                .next()
                .map(|s| s.value),
            Some(1.0)
        );
    }

    #[test]
    fn series_expire_after_their_last_update() {
        let mut state = Cumulative::new(30);
        let c = |ts| vec![point("c", PointKind::Counter, 1.0, &[], ts)];
        let g = |ts| vec![point("g", PointKind::Gauge, 1.0, &[], ts)];
        state.update(&c(1000), 1000);
        state.update(&g(1010), 1010);
        // 20 s after its update the counter is kept, with its value and the flush's time.
        let stats = state.update(&g(1020), 1020);
        assert_eq!(stats.expired, 0);
        let counter = state.families()["c_total"].series.values().next().cloned();
        let counter = counter.expect("kept");
        assert_eq!((counter.value, counter.points), (1.0, 0));
        assert_eq!(counter.sample_ms(1020), 1_020_000);
        // 30 s after: gone; coming back, it restarts from 0.
        let stats = state.update(&g(1030), 1030);
        assert_eq!(stats.expired, 1);
        assert!(!state.families().contains_key("c_total"));
        state.update(&c(1040), 1040);
        assert_eq!(
            state.families()["c_total"]
                .series
                .values()
                .next()
                .map(|s| s.value),
            Some(1.0)
        );
        // An empty flush ages everything by the wall clock.
        let stats = state.update(&[], 5000);
        assert_eq!(stats.flush_ts, 5000);
        assert!(state.families().is_empty());
    }

    #[test]
    fn timestamped_points_keep_their_time_and_old_gauges_do_not_overwrite() {
        let mut state = Cumulative::new(300);
        state.update(
            &[
                point("g", PointKind::Gauge, 2.0, &[], 1000),
                point("g", PointKind::Gauge, 1.0, &[], 990),
                point("t", PointKind::Gauge, 5.0, &[], 1000),
                point("t", PointKind::Gauge, 6.0, &[], 1005),
            ],
            1000,
        );
        let value = |n: &str| {
            state.families()[n]
                .series
                .values()
                .next()
                .cloned()
                .expect(n)
        };
        assert_eq!(value("g").value, 2.0);
        assert_eq!(value("t").value, 6.0);
        // The future |T point does not move the flush's time, but stamps its own sample.
        assert_eq!(value("t").sample_ms(1000), 1_005_000);
        assert_eq!(value("g").sample_ms(1000), 1_000_000);
    }
}
