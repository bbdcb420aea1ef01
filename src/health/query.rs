//! Reading the store for `GET /api/v1/healthchecks` and the status page: filter by id, service
//! and status, order most recently received first, then page.

use serde::Serialize;

use super::store::{lock, now_f64, HealthStore};
use super::HealthResult;

/// A query (`GET /api/v1/healthchecks`).
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Check id; empty = any.
    pub id: String,
    /// Service name; empty = any.
    pub service: String,
    /// 0 = any, else 1 OK or 2 ERROR (UNKNOWN by staleness is status 0 and matches only "any").
    pub status: u8,
    /// 0 = no limit.
    pub limit: usize,
    /// Results skipped after filtering.
    pub offset: usize,
    /// Include previous results.
    pub history: bool,
}

/// One answer row.
#[derive(Debug, Clone, Serialize)]
pub struct CheckView {
    /// The latest result with its effective status (UNKNOWN once stale).
    #[serde(flatten)]
    pub result: HealthResult,
    /// Previous results, newest first (only with `history=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HealthResult>>,
    /// Seconds since it was received (for the status page; not serialised).
    #[serde(skip)]
    pub age_s: f64,
}

impl HealthStore {
    /// Answers a query: filter, order (most recently received first, ties by id), then page.
    pub fn query(&self, q: &Query) -> Vec<CheckView> {
        let now = now_f64();
        let inner = lock(&self.inner);
        let mut rows: Vec<(u64, CheckView)> = inner
            .checks
            .iter()
            .filter(|(_, e)| q.id.is_empty() || e.latest.id == q.id)
            .filter(|(_, e)| q.service.is_empty() || e.latest.service.name == q.service)
            .filter(|(_, e)| q.status == 0 || e.effective == q.status)
            .map(|(key, e)| {
                let mut result = e.latest.clone();
                result.status = e.effective;
                let seq = inner.order.get(key).copied().unwrap_or(0);
                (
                    seq,
                    CheckView {
                        result,
                        history: q.history.then(|| e.history.iter().cloned().collect()),
                        age_s: (now - e.received).max(0.0),
                    },
                )
            })
            .collect();
        rows.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| a.1.result.id.cmp(&b.1.result.id))
        });
        let rows = rows.into_iter().map(|(_, v)| v).skip(q.offset);
        if q.limit == 0 {
            rows.collect()
        } else {
            rows.take(q.limit).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{result, store};
    use super::super::{Origin, ERROR, OK};
    use super::*;

    #[test]
    fn filters_then_pages_newest_first() {
        let s = store();
        s.record(vec![result("a", "one", OK)], Origin::Api);
        s.record(vec![result("b", "one", ERROR)], Origin::Api);
        s.record(vec![result("c", "two", OK)], Origin::Api);
        let ids = |q: Query| {
            s.query(&q)
                .into_iter()
                .map(|v| v.result.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(Query::default()), ["c", "b", "a"]);
        assert_eq!(
            ids(Query {
                service: "one".into(),
                ..Query::default()
            }),
            ["b", "a"]
        );
        assert_eq!(
            ids(Query {
                status: OK,
                ..Query::default()
            }),
            ["c", "a"]
        );
        assert_eq!(
            ids(Query {
                status: OK,
                offset: 1,
                ..Query::default()
            }),
            ["a"]
        );
        assert_eq!(
            ids(Query {
                limit: 1,
                offset: 1,
                ..Query::default()
            }),
            ["b"]
        );
        assert!(ids(Query {
            id: "zzz".into(),
            ..Query::default()
        })
        .is_empty());
    }
}
