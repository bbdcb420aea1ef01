//! Flushed names for histogram aggregates and percentiles (`docs/flush.md#percentile-naming`), and
//! nowhere else.

use serde::{Deserialize, Serialize};

/// Histogram aggregates emitted besides percentiles (`docs/flush.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    /// `x.min`
    Min,
    /// `x.max`
    Max,
    /// `x.count` (counter)
    Count,
    /// `x.sum`
    Sum,
    /// `x.avg`
    Avg,
    /// `x.median`
    Median,
    /// `x.hmean`
    Hmean,
}

/// The suffix of a histogram aggregate: `min`, `max`, `count`, `sum`, `avg`, `median`, `hmean`.
pub const fn aggregate_suffix(a: Aggregate) -> &'static str {
    match a {
        Aggregate::Min => "min",
        Aggregate::Max => "max",
        Aggregate::Count => "count",
        Aggregate::Sum => "sum",
        Aggregate::Avg => "avg",
        Aggregate::Median => "median",
        Aggregate::Hmean => "hmean",
    }
}

/// The suffix of percentile `p`: 0.5 → `50percentile`, 0.999 → `99_9percentile`.
pub fn percentile_suffix(p: f64) -> String {
    // Round away binary noise (0.999 × 100 = 99.89999…) before printing the shortest form.
    let hundred = (p * 100.0 * 1e6).round() / 1e6;
    format!("{hundred}percentile").replace('.', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_names() {
        assert_eq!(percentile_suffix(0.5), "50percentile");
        assert_eq!(percentile_suffix(0.75), "75percentile");
        assert_eq!(percentile_suffix(0.99), "99percentile");
        assert_eq!(percentile_suffix(0.999), "99_9percentile");
        assert_eq!(percentile_suffix(0.9999), "99_99percentile");
        assert_eq!(percentile_suffix(1.0), "100percentile");
        assert_eq!(percentile_suffix(0.055), "5_5percentile");
    }

    #[test]
    fn aggregate_names() {
        assert_eq!(aggregate_suffix(Aggregate::Count), "count");
        assert_eq!(aggregate_suffix(Aggregate::Hmean), "hmean");
    }
}
