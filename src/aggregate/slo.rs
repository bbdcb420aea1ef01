//! Counting for service level objectives (`docs/slo.md`), as plain rules the server fills from
//! the config: the aggregator knows no SLO, only which series to tally and how.
//!
//! Latency SLIs are counted at ingest, exactly: when a timer, histogram or distribution series is
//! created (once per series per interval), [`SloRules::tally_for`] decides whether any latency
//! rule wants it; only then does its state carry a [`SloTally`], which every sample recorded
//! into that state updates (Σ weight, and Σ weight of samples at or below each threshold).
//! Other series pay one predictable branch per sample. Ratio SLIs need nothing at ingest:
//! counters are already weighted sums, read at the flush by [`SloRules::count`].

use std::collections::HashMap;
use std::sync::Arc;

use hashbrown::HashTable;

use super::key::{KeyParts, Scope};
use super::{Series, State};
use crate::protocol::MetricType;

/// A latency SLI: samples of `metric` (on series carrying every tag of `tags`) at or below
/// `threshold` are good.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyRule {
    /// The SLO's name.
    pub slo: Arc<str>,
    /// Timer, histogram or distribution name.
    pub metric: String,
    /// Tags the series must carry.
    pub tags: Vec<String>,
    /// Inclusive upper bound of a good sample.
    pub threshold: f64,
}

/// A ratio SLI: the interval's `total` and `errors` counters (series carrying every tag of
/// `tags`); good = total − errors.
#[derive(Debug, Clone, PartialEq)]
pub struct RatioRule {
    /// The SLO's name.
    pub slo: Arc<str>,
    /// Counter of all events.
    pub total: String,
    /// Counter of bad events.
    pub errors: String,
    /// Tags the series must carry.
    pub tags: Vec<String>,
}

/// Every SLO's counting rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SloRules {
    /// Latency SLIs, tallied at ingest.
    pub latency: Vec<LatencyRule>,
    /// Ratio SLIs, summed at the flush.
    pub ratio: Vec<RatioRule>,
}

/// One latency rule's good count on one series.
#[derive(Debug, Clone, PartialEq)]
pub struct TallyEntry {
    /// The SLO's name.
    pub slo: Arc<str>,
    /// Inclusive upper bound of a good sample.
    pub threshold: f64,
    /// Σ weight of samples at or below `threshold`.
    pub good: f64,
}

/// What a series of a latency SLI counts besides its histogram: the weight of every sample, and
/// of the good ones per rule. Imports never carry one (a local's counts arrive as counts).
#[derive(Debug, Clone, PartialEq)]
pub struct SloTally {
    /// Σ weight (1 ÷ sample rate) of the samples recorded since the series was created.
    pub total: f64,
    /// One entry per rule the series matches.
    pub entries: Box<[TallyEntry]>,
}

impl SloTally {
    /// Counts one sample of weight `weight`.
    #[inline]
    pub fn record(&mut self, value: f64, weight: f64) {
        self.total += weight;
        for e in self.entries.iter_mut() {
            if value <= e.threshold {
                e.good += weight;
            }
        }
    }
}

/// Whether a series of `parts` carries every tag of `tags` (`host:` matches its host).
fn has_tags(parts: &KeyParts<'_>, tags: &[String]) -> bool {
    tags.iter().all(|t| match t.strip_prefix("host:") {
        Some(h) if parts.host.is_some() => parts.host == Some(h),
        _ => parts.tags().any(|x| x == t),
    })
}

impl SloRules {
    /// Whether any latency rule exists (the aggregator only then asks [`SloRules::tally_for`]).
    pub fn has_latency(&self) -> bool {
        !self.latency.is_empty()
    }

    /// The tally a new series with `key` carries, if any latency rule wants it.
    pub fn tally_for(&self, key: &[u8]) -> Option<Box<SloTally>> {
        let parts = KeyParts::decode(key)?;
        if !matches!(
            parts.kind,
            MetricType::Timer | MetricType::Histogram | MetricType::Distribution
        ) || matches!(parts.scope, Scope::ImportedAll | Scope::ImportedPercentiles)
        {
            return None;
        }
        let entries: Vec<TallyEntry> = self
            .latency
            .iter()
            .filter(|r| r.metric == parts.name && has_tags(&parts, &r.tags))
            .map(|r| TallyEntry {
                slo: r.slo.clone(),
                threshold: r.threshold,
                good: 0.0,
            })
            .collect();
        (!entries.is_empty()).then(|| {
            Box::new(SloTally {
                total: 0.0,
                entries: entries.into_boxed_slice(),
            })
        })
    }

    /// The interval's (good, total) per SLO in swapped-out tables: latency tallies summed,
    /// ratio counters read. Series imported from locals are skipped: their counts arrive
    /// forwarded as counts.
    pub fn count(&self, tables: &[HashTable<Series>]) -> HashMap<Arc<str>, (f64, f64)> {
        let mut out: HashMap<Arc<str>, (f64, f64)> = HashMap::new();
        let latency = !self.latency.is_empty();
        let ratio = !self.ratio.is_empty();
        if !(latency || ratio) {
            return out;
        }
        for series in tables.iter().flat_map(HashTable::iter) {
            match &series.state {
                State::Histogram(h) if latency => {
                    if let Some(t) = &h.slo {
                        for e in t.entries.iter() {
                            let c = out.entry(e.slo.clone()).or_default();
                            c.0 += e.good;
                            c.1 += t.total;
                        }
                    }
                }
                State::Counter(v) if ratio => {
                    let Some(parts) = KeyParts::decode(&series.key) else {
                        continue;
                    };
                    if matches!(parts.scope, Scope::ImportedAll | Scope::ImportedPercentiles) {
                        continue;
                    }
                    for r in &self.ratio {
                        let total = r.total == parts.name;
                        let errors = r.errors == parts.name;
                        if !(total || errors) || !has_tags(&parts, &r.tags) {
                            continue;
                        }
                        let c = out.entry(r.slo.clone()).or_default();
                        // good = total − errors: a total adds to both, an error takes from good.
                        if total {
                            c.0 += v;
                            c.1 += v;
                        }
                        if errors {
                            c.0 -= v;
                        }
                    }
                }
                _ => {}
            }
        }
        for c in out.values_mut() {
            c.0 = c.0.clamp(0.0, c.1.max(0.0));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{Aggregator, AggregatorConfig, GaugeDeltas, Ingestor, Limits};

    fn agg(rules: SloRules) -> Arc<Aggregator> {
        let a = Aggregator::new(AggregatorConfig {
            shards: 4,
            limits: Limits::default(),
            gauge_deltas: GaugeDeltas::Dogstatsd,
            hostname: Arc::from("h"),
            gauge_memory_flushes: 10,
        });
        a.set_slo_rules(rules);
        Arc::new(a)
    }

    fn feed(a: &Arc<Aggregator>, lines: &[&str]) {
        let mut ing = Ingestor::new(a.clone());
        for l in lines {
            ing.ingest_line(l.as_bytes());
        }
        ing.commit();
    }

    fn latency(slo: &str, metric: &str, threshold: f64, tags: &[&str]) -> LatencyRule {
        LatencyRule {
            slo: Arc::from(slo),
            metric: metric.into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            threshold,
        }
    }

    #[test]
    fn latency_samples_at_or_below_the_threshold_are_good_weighted_by_rate() {
        let a = agg(SloRules {
            latency: vec![
                latency("pay", "lat", 300.0, &["route:/pay"]),
                latency("all", "lat", 100.0, &[]),
            ],
            ratio: Vec::new(),
        });
        feed(
            &a,
            &[
                "lat:300|ms|#route:/pay",     // good for both? 300 > 100: good for pay only
                "lat:300.001|ms|#route:/pay", // bad for both
                "lat:50|ms|@0.5|#route:/pay", // weight 2, good for both
                "lat:301|h|@0.25|#route:/pay,x:y", // weight 4, bad, another series
                "lat:10|ms|#route:/other",    // only "all": good
                "other:1|ms|#route:/pay",     // no rule
            ],
        );
        // A second batch into the same series keeps counting.
        feed(&a, &["lat:1|ms|#route:/pay"]);
        let snap = a.swap();
        let rules = a.slo_rules.read().unwrap().clone();
        let c = rules.count(&snap.tables);
        assert_eq!(c.get("pay"), Some(&(4.0, 9.0)));
        assert_eq!(c.get("all"), Some(&(4.0, 10.0)));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn ratio_counts_totals_minus_errors_with_the_tag_filter() {
        let rules = SloRules {
            latency: Vec::new(),
            ratio: vec![RatioRule {
                slo: Arc::from("api"),
                total: "req".into(),
                errors: "err".into(),
                tags: vec!["svc:a".into()],
            }],
        };
        let a = agg(rules.clone());
        feed(
            &a,
            &[
                "req:100|c|#svc:a",
                "req:10|c|@0.1|#svc:a,region:x",
                "err:3|c|#svc:a",
                "err:1|c|@0.5|#svc:a",
                "req:1000|c|#svc:b",
                "err:1000|c",
            ],
        );
        let snap = a.swap();
        assert_eq!(rules.count(&snap.tables).get("api"), Some(&(195.0, 200.0)));
    }

    #[test]
    fn series_without_a_rule_carry_no_tally_and_imports_count_nothing() {
        let a = agg(SloRules {
            latency: vec![latency("pay", "lat", 300.0, &[])],
            ratio: Vec::new(),
        });
        feed(&a, &["other:1|ms"]);
        let mut key = Vec::new();
        crate::aggregate::key::encode_key_parts(
            &mut key,
            MetricType::Timer,
            Scope::ImportedAll,
            None,
            "lat",
            None,
            &[],
        );
        let mut h = crate::aggregate::histogram::HistogramState::new(1.0, 1.0);
        h.slo = None;
        a.merge_series(vec![(
            key.into_boxed_slice(),
            State::Histogram(Box::new(h)),
        )]);
        let snap = a.swap();
        for s in snap.tables.iter().flat_map(HashTable::iter) {
            if let State::Histogram(h) = &s.state {
                assert!(h.slo.is_none());
            }
        }
        let rules = a.slo_rules.read().unwrap().clone();
        assert!(rules.count(&snap.tables).is_empty());
    }
}
