//! One SLO's history: the (good, total) counts of its recent flush intervals, and of its budget
//! window in coarse buckets, with the burn-rate and error-budget arithmetic over them.
//!
//! Memory is bounded by the config: a ring of one [`Counts`] (16 bytes) per flush interval of
//! the longest alert window, plus at most [`COARSE_BUCKETS`] buckets for the budget window:
//! `16 × (⌈longest window ÷ interval⌉ + 720)` bytes per SLO, plus a few hundred bytes fixed
//! (e.g. 1h + 3d windows at a 10 s interval: 16 × (25,920 + 720) ≈ 426 KB).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Buckets the budget window is kept in at most.
pub const COARSE_BUCKETS: usize = 720;

/// Good and total events of one or more intervals (weighted: Σ 1 ÷ sample rate).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Good events.
    pub good: f64,
    /// All events.
    pub total: f64,
}

impl Counts {
    /// Adds `other`.
    pub fn add(&mut self, other: Counts) {
        self.good += other.good;
        self.total += other.total;
    }

    /// Bad events: total − good, never below 0.
    pub fn bad(&self) -> f64 {
        (self.total - self.good).max(0.0)
    }
}

/// Burn rate of `c` for `objective`: (bad ÷ total) ÷ (1 − objective); 0 when total is 0.
pub fn burn_rate(c: Counts, objective: f64) -> f64 {
    if c.total <= 0.0 {
        return 0.0;
    }
    (c.bad() / c.total) / (1.0 - objective)
}

/// Fraction of the error budget left: 1 − bad ÷ ((1 − objective) × total); 1 when total is 0;
/// negative once the budget is overspent.
pub fn budget_remaining(c: Counts, objective: f64) -> f64 {
    if c.total <= 0.0 {
        return 1.0;
    }
    1.0 - c.bad() / ((1.0 - objective) * c.total)
}

/// The per-interval ring and the budget buckets of one SLO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Newest last; at most `fine_cap`.
    fine: VecDeque<Counts>,
    fine_cap: usize,
    /// Newest last; at most `coarse_cap`, each of `per_bucket` intervals.
    coarse: VecDeque<Counts>,
    coarse_cap: usize,
    per_bucket: usize,
    /// Intervals in the newest bucket.
    filled: usize,
}

impl History {
    /// Empty history for windows of at most `longest` intervals and a budget window of
    /// `budget` intervals.
    pub fn new(longest: usize, budget: usize) -> History {
        let per_bucket = budget.div_ceil(COARSE_BUCKETS).max(1);
        History {
            fine: VecDeque::new(),
            fine_cap: longest.max(1),
            coarse: VecDeque::new(),
            coarse_cap: budget.div_ceil(per_bucket).max(1),
            per_bucket,
            filled: 0,
        }
    }

    /// Whether a history loaded from disk fits these sizes.
    pub fn fits(&self, longest: usize, budget: usize) -> bool {
        let fresh = History::new(longest, budget);
        self.fine_cap == fresh.fine_cap
            && self.coarse_cap == fresh.coarse_cap
            && self.per_bucket == fresh.per_bucket
            && self.fine.len() <= self.fine_cap
            && self.coarse.len() <= self.coarse_cap
            && self.filled <= self.per_bucket
    }

    /// Appends one interval's counts, dropping what falls out of every window.
    pub fn push(&mut self, c: Counts) {
        if self.fine.len() == self.fine_cap {
            self.fine.pop_front();
        }
        self.fine.push_back(c);
        match self.coarse.back_mut() {
            Some(b) if self.filled < self.per_bucket => {
                b.add(c);
                self.filled += 1;
            }
            _ => {
                if self.coarse.len() == self.coarse_cap {
                    self.coarse.pop_front();
                }
                self.coarse.push_back(c);
                self.filled = 1;
            }
        }
    }

    /// Sum of the newest `intervals` intervals (all there are, if fewer).
    pub fn last(&self, intervals: usize) -> Counts {
        let skip = self.fine.len().saturating_sub(intervals);
        let mut sum = Counts::default();
        for c in self.fine.iter().skip(skip) {
            sum.add(*c);
        }
        sum
    }

    /// Sum over the budget window: between the window less one bucket and the whole window.
    pub fn budget(&self) -> Counts {
        let mut sum = Counts::default();
        for c in &self.coarse {
            sum.add(*c);
        }
        sum
    }

    /// Intervals held in the ring.
    pub fn len(&self) -> usize {
        self.fine.len()
    }

    /// Whether nothing was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.fine.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(good: f64, total: f64) -> Counts {
        Counts { good, total }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn burn_rate_is_error_ratio_over_allowed_ratio() {
        // 999 good of 1000 at 99.9 %: exactly on budget.
        assert!(close(burn_rate(c(999.0, 1000.0), 0.999), 1.0));
        // 10 bad of 1000 at 99.9 %: ten times too fast.
        assert!(close(burn_rate(c(990.0, 1000.0), 0.999), 10.0));
        // 1 bad of 100 at 99 %.
        assert!(close(burn_rate(c(99.0, 100.0), 0.99), 1.0));
        // No traffic burns nothing.
        assert_eq!(burn_rate(c(0.0, 0.0), 0.999), 0.0);
        // All bad at 90 %: 10.
        assert!(close(burn_rate(c(0.0, 5.0), 0.9), 10.0));
    }

    #[test]
    fn budget_remaining_goes_negative_when_overspent() {
        assert_eq!(budget_remaining(c(0.0, 0.0), 0.999), 1.0);
        assert!(close(budget_remaining(c(1000.0, 1000.0), 0.999), 1.0));
        // Half the 1 bad of 1000 allowed... 0.5 bad is half the budget.
        assert!(close(budget_remaining(c(999.5, 1000.0), 0.999), 0.5));
        // 3 bad where 1 was allowed: −2.
        assert!(close(budget_remaining(c(997.0, 1000.0), 0.999), -2.0));
    }

    /// Objective 0.999, windows of 12 and 1 intervals, 100 events an interval, and one
    /// interval with a burst of 50 errors.
    #[test]
    fn a_burst_burns_the_short_window_then_leaves_both() {
        let mut h = History::new(12, 24);
        for _ in 0..20 {
            h.push(c(100.0, 100.0));
        }
        assert_eq!(burn_rate(h.last(12), 0.999), 0.0);
        h.push(c(50.0, 100.0));
        // Short window: 50 bad of 100 = 0.5 ÷ 0.001 = 500.
        assert!(close(burn_rate(h.last(1), 0.999), 500.0));
        // Long window: 50 bad of 1200 = 0.041666… ÷ 0.001 = 41.666…
        assert!(close(burn_rate(h.last(12), 0.999), 50.0 / 1200.0 / 0.001));
        h.push(c(100.0, 100.0));
        assert_eq!(burn_rate(h.last(1), 0.999), 0.0);
        for _ in 0..10 {
            h.push(c(100.0, 100.0));
        }
        // The burst is 12 intervals back: still in the long window.
        assert!(close(burn_rate(h.last(12), 0.999), 50.0 / 1200.0 / 0.001));
        h.push(c(100.0, 100.0));
        assert_eq!(burn_rate(h.last(12), 0.999), 0.0);
        assert_eq!(h.len(), 12, "the ring never grows past the longest window");
    }

    #[test]
    fn a_window_with_fewer_intervals_than_it_spans_sums_what_there_is() {
        let mut h = History::new(10, 10);
        h.push(c(1.0, 2.0));
        h.push(c(3.0, 4.0));
        assert_eq!(h.last(10), c(4.0, 6.0));
        assert_eq!(h.last(1), c(3.0, 4.0));
    }

    #[test]
    fn budget_buckets_cover_the_budget_window() {
        // 1440 intervals: buckets of 2 intervals, at most 720 of them.
        let mut h = History::new(4, 1440);
        for i in 0..1440 {
            h.push(c(if i == 0 { 0.0 } else { 1.0 }, 1.0));
        }
        assert_eq!(h.budget(), c(1439.0, 1440.0));
        // One more interval starts a new bucket and drops the oldest (2 intervals).
        h.push(c(1.0, 1.0));
        assert_eq!(h.budget(), c(1439.0, 1439.0));
        // The next fills that bucket: one bad in 1440.
        h.push(c(0.0, 1.0));
        assert_eq!(h.budget(), c(1439.0, 1440.0));
        assert!(h.coarse.len() <= COARSE_BUCKETS);
        assert!(close(budget_remaining(h.budget(), 0.999), 1.0 - 1.0 / 1.44));
    }

    #[test]
    fn fits_checks_sizes_of_a_loaded_history() {
        let h = History::new(12, 24);
        assert!(h.fits(12, 24));
        assert!(!h.fits(13, 24));
        assert!(!h.fits(12, 2000));
    }
}
