//! The per-sink filter every sink applies before encoding: `include`/`exclude` by name prefix,
//! `drop_tags` by tag key, and extra `tags`. Keys common to every sink type; validated here,
//! applied by the runner in [`super`] on the blocking pool, so a sink's encoder only ever sees
//! what it is meant to deliver.
//!
//! Name filters apply to metric points and service checks (events have no name and always pass);
//! tag changes apply to all three. `drop_tags = ["host"]` also clears the point's host, which the
//! Prometheus and InfluxDB sinks show as a `host` label or tag.

use std::borrow::Cow;
use std::sync::Arc;

use super::SinkConfigError;
use crate::point::{FlushBatch, Point};

/// A validated filter. The identity filter (all keys empty) costs nothing: the batch is passed
/// on borrowed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct SinkFilter {
    include: Vec<String>,
    exclude: Vec<String>,
    drop_tags: Vec<String>,
    /// `drop_tags` holds `host`: points and checks lose their host.
    drop_host: bool,
    /// Sorted, de-duplicated.
    tags: Vec<String>,
}

/// The filter keys as configured.
pub(super) struct FilterKeys<'a> {
    pub include: &'a [String],
    pub exclude: &'a [String],
    pub drop_tags: &'a [String],
    pub tags: &'a [String],
}

impl SinkFilter {
    /// Checks the keys; `key` names a setting in errors (`sinks[0].include`).
    pub(super) fn new(
        keys: &FilterKeys<'_>,
        key: &impl Fn(&str) -> String,
    ) -> Result<SinkFilter, SinkConfigError> {
        let checked = |name: &str, values: &[String], what: &str, ok: fn(&str) -> bool| {
            for (i, v) in values.iter().enumerate() {
                if !ok(v) {
                    return Err(SinkConfigError::new(
                        format!("{}[{i}]", key(name)),
                        format!("{v:?} must be {what}"),
                    ));
                }
            }
            Ok(values.to_vec())
        };
        fn prefix(v: &str) -> bool {
            !v.is_empty() && !v.chars().any(char::is_control)
        }
        fn tag_key(v: &str) -> bool {
            prefix(v) && !v.contains([':', ','])
        }
        fn tag(v: &str) -> bool {
            prefix(v) && !v.contains(',')
        }
        let include = checked("include", keys.include, "a non-empty name prefix", prefix)?;
        let exclude = checked("exclude", keys.exclude, "a non-empty name prefix", prefix)?;
        let drop_tags = checked(
            "drop_tags",
            keys.drop_tags,
            "a tag key (non-empty, without ':' or ',')",
            tag_key,
        )?;
        let mut tags = checked(
            "tags",
            keys.tags,
            "a non-empty tag without commas or control characters",
            tag,
        )?;
        tags.sort_unstable();
        tags.dedup();
        let drop_host = drop_tags.iter().any(|k| k == "host");
        Ok(SinkFilter {
            include,
            exclude,
            drop_tags,
            drop_host,
            tags,
        })
    }

    /// Whether the filter changes nothing.
    pub(super) fn is_identity(&self) -> bool {
        self.include.is_empty()
            && self.exclude.is_empty()
            && self.drop_tags.is_empty()
            && self.tags.is_empty()
    }

    /// Whether a metric or service check called `name` passes `include` and `exclude`.
    pub(super) fn passes(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| name.starts_with(p.as_str())))
            && !self.exclude.iter().any(|p| name.starts_with(p.as_str()))
    }

    fn changes_tags(&self) -> bool {
        !self.drop_tags.is_empty() || !self.tags.is_empty()
    }

    /// `tags` without the dropped keys, plus the extra tags; sorted and de-duplicated.
    fn retag(&self, tags: &[String]) -> Vec<String> {
        let mut out: Vec<String> = tags
            .iter()
            .filter(|t| {
                let k = t.split_once(':').map_or(t.as_str(), |(k, _)| k);
                !self.drop_tags.iter().any(|d| d == k)
            })
            .cloned()
            .collect();
        if !self.tags.is_empty() {
            out.extend(self.tags.iter().cloned());
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    /// The batch as this sink should see it: borrowed when the filter changes nothing.
    pub(super) fn apply<'a>(&self, batch: &'a FlushBatch) -> Cow<'a, FlushBatch> {
        if self.is_identity() {
            return Cow::Borrowed(batch);
        }
        let retag = self.changes_tags();
        let empty_host: Arc<str> = Arc::from("");
        // Points of one series share their tags: retag each shared list once (consecutive).
        let mut last: Option<(*const [String], Arc<[String]>)> = None;
        let metrics = batch
            .metrics
            .iter()
            .filter(|p| self.passes(&p.name))
            .map(|p| {
                let tags = if retag {
                    let ptr = Arc::as_ptr(&p.tags);
                    match &last {
                        Some((seen, out)) if std::ptr::eq(*seen, ptr) => Arc::clone(out),
                        _ => {
                            let out: Arc<[String]> = self.retag(&p.tags).into();
                            last = Some((ptr, Arc::clone(&out)));
                            out
                        }
                    }
                } else {
                    Arc::clone(&p.tags)
                };
                Point {
                    tags,
                    host: if self.drop_host {
                        Arc::clone(&empty_host)
                    } else {
                        Arc::clone(&p.host)
                    },
                    ..p.clone()
                }
            })
            .collect();
        let service_checks = batch
            .service_checks
            .iter()
            .filter(|c| self.passes(&c.name))
            .map(|c| {
                let mut c = c.clone();
                if retag {
                    c.tags = self.retag(&c.tags);
                }
                if self.drop_host {
                    c.host.clear();
                }
                c
            })
            .collect();
        let events = batch
            .events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                if retag {
                    e.tags = self.retag(&e.tags);
                }
                if self.drop_host {
                    e.host.clear();
                }
                e
            })
            .collect();
        Cow::Owned(FlushBatch {
            metrics,
            service_checks,
            events,
            ..FlushBatch::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::testing::sample_batch;

    fn key(k: &str) -> String {
        format!("sinks[0].{k}")
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn filter(include: &[&str], exclude: &[&str], drop: &[&str], tags: &[&str]) -> SinkFilter {
        let (include, exclude, drop_tags, tags) = (
            strings(include),
            strings(exclude),
            strings(drop),
            strings(tags),
        );
        SinkFilter::new(
            &FilterKeys {
                include: &include,
                exclude: &exclude,
                drop_tags: &drop_tags,
                tags: &tags,
            },
            &key,
        )
        .expect("valid filter")
    }

    fn names(batch: &FlushBatch) -> Vec<&str> {
        batch.metrics.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn identity_borrows() {
        let batch = sample_batch();
        let f = filter(&[], &[], &[], &[]);
        assert!(f.is_identity());
        assert!(matches!(f.apply(&batch), Cow::Borrowed(_)));
    }

    #[test]
    fn include_and_exclude_by_prefix() {
        let batch = sample_batch();
        let only_latency = filter(&["api.lat"], &[], &[], &[]);
        assert_eq!(
            names(&only_latency.apply(&batch)),
            ["api.latency.99percentile"]
        );
        let no_requests = filter(&[], &["api.requests"], &[], &[]);
        assert_eq!(
            names(&no_requests.apply(&batch)),
            ["api.latency.99percentile"]
        );
        // Exclude wins over include.
        let both = filter(&["api."], &["api.latency"], &[], &[]);
        assert_eq!(names(&both.apply(&batch)), ["api.requests"]);
        // Service checks are filtered by name too; events always pass.
        let out = filter(&["api."], &[], &[], &[]).apply(&batch);
        assert!(out.service_checks.is_empty());
        assert_eq!(out.events.len(), 1);
        let out = filter(&["db."], &[], &[], &[]).apply(&batch);
        assert!(out.metrics.is_empty());
        assert_eq!(out.service_checks.len(), 1);
    }

    #[test]
    fn drop_tags_by_key_and_add_extra_tags() {
        let batch = sample_batch();
        let out = filter(&[], &[], &["route"], &["team:core", "az:b"]).apply(&batch);
        for p in &out.metrics {
            assert_eq!(&*p.tags, ["az:b", "env:prod", "team:core"]);
            assert_eq!(&*p.host, "web-1");
        }
        assert!(
            Arc::ptr_eq(&out.metrics[0].tags, &out.metrics[1].tags),
            "a series' retagged list is shared"
        );
        assert_eq!(
            out.service_checks[0].tags,
            ["az:b", "service:api", "team:core"]
        );
        assert_eq!(out.events[0].tags, ["az:b", "team:core"]);
    }

    #[test]
    fn bare_tags_and_duplicates() {
        let mut batch = sample_batch();
        batch.metrics[0].tags = strings(&["canary", "env:prod", "envx:1"]).into();
        let out = filter(&[], &[], &["canary", "env"], &["envx:1"]).apply(&batch);
        assert_eq!(&*out.metrics[0].tags, ["envx:1"]);
    }

    #[test]
    fn dropping_host_clears_it() {
        let batch = sample_batch();
        let out = filter(&[], &[], &["host"], &[]).apply(&batch);
        assert!(out.metrics.iter().all(|p| p.host.is_empty()));
        assert!(out.service_checks[0].host.is_empty());
        assert!(out.events[0].host.is_empty());
        assert_eq!(&*out.metrics[0].tags, ["env:prod", "route:/x"]);
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases: [(&str, FilterKeys<'_>); 4] = [
            (
                "sinks[0].include[1]",
                FilterKeys {
                    include: &strings(&["a", ""]),
                    exclude: &[],
                    drop_tags: &[],
                    tags: &[],
                },
            ),
            (
                "sinks[0].exclude[0]",
                FilterKeys {
                    include: &[],
                    exclude: &strings(&["a\n"]),
                    drop_tags: &[],
                    tags: &[],
                },
            ),
            (
                "sinks[0].drop_tags[0]",
                FilterKeys {
                    include: &[],
                    exclude: &[],
                    drop_tags: &strings(&["env:prod"]),
                    tags: &[],
                },
            ),
            (
                "sinks[0].tags[0]",
                FilterKeys {
                    include: &[],
                    exclude: &[],
                    drop_tags: &[],
                    tags: &strings(&["a,b"]),
                },
            ),
        ];
        for (want, keys) in cases {
            let err = SinkFilter::new(&keys, &key).expect_err(want);
            assert_eq!(err.key, want);
        }
    }
}
