//! Pacing for meterd-load: an absolute schedule over lines (a token bucket whose depth is
//! `max_lag` worth of lines), consulted once per `sendmmsg` batch rather than per packet.
//!
//! The batch after `sent` lines is due at `sent / rate` seconds after the start. Because the
//! schedule is absolute, a late wake-up (timer slack, a busy machine) does not lower the average
//! rate: the next batches go out at once until the schedule is met again. A sender that falls
//! more than `max_lag` behind (descheduled, or simply too slow) moves the schedule forward
//! instead of bursting to catch up, so no burst carries more than `max_lag × rate` lines beyond a
//! batch; the moves are counted and reported.

use std::time::Duration;

/// Batches are sized to go out about this often at the requested rate.
pub const BATCH_PERIOD: Duration = Duration::from_millis(1);

/// The line schedule of one sender.
#[derive(Clone, Debug)]
pub struct Pacer {
    /// Lines per second; 0 = as fast as possible.
    rate: f64,
    /// The furthest the sender may fall behind before the schedule moves.
    max_lag: Duration,
    /// How far the schedule has been moved in total.
    shift: Duration,
    /// How often it moved.
    pub resets: u64,
}

impl Pacer {
    /// A schedule of `rate` lines per second (0 = unpaced).
    pub fn new(rate: f64, max_lag: Duration) -> Pacer {
        Pacer {
            rate: if rate.is_finite() && rate > 0.0 {
                rate
            } else {
                0.0
            },
            max_lag,
            shift: Duration::ZERO,
            resets: 0,
        }
    }

    /// When the batch that follows `sent` lines is due, measured from the start.
    pub fn due(&self, sent: u64) -> Duration {
        if self.rate == 0.0 {
            return Duration::ZERO;
        }
        let at = Duration::try_from_secs_f64(sent as f64 / self.rate).unwrap_or(Duration::MAX);
        at.saturating_add(self.shift)
    }

    /// How long to wait, `elapsed` after the start, before sending the batch that follows `sent`
    /// lines. Moves the schedule forward when the sender is more than `max_lag` behind it.
    pub fn wait(&mut self, sent: u64, elapsed: Duration) -> Duration {
        if self.rate == 0.0 {
            return Duration::ZERO;
        }
        let due = self.due(sent);
        if let Some(early) = due.checked_sub(elapsed) {
            return early;
        }
        let behind = elapsed - due;
        if behind > self.max_lag {
            self.shift += behind - self.max_lag;
            self.resets += 1;
        }
        Duration::ZERO
    }
}

/// Datagrams per `sendmmsg` batch: about [`BATCH_PERIOD`] worth of lines at `rate` (lines per
/// second for this sender, 0 = flat out), at least 1 and at most `max_batch`. Small batches at low
/// rates keep the traffic smooth; large ones at high rates keep the per-call cost low.
pub fn batch_datagrams(rate: f64, lines_per_datagram: f64, max_batch: usize) -> usize {
    let max_batch = max_batch.max(1);
    let paced = rate.is_finite() && rate > 0.0 && lines_per_datagram > 0.0;
    if !paced {
        return max_batch;
    }
    let per_period = rate * BATCH_PERIOD.as_secs_f64() / lines_per_datagram;
    if per_period >= max_batch as f64 {
        max_batch
    } else if per_period <= 1.0 {
        1
    } else {
        // In range 1..max_batch, so the conversion is exact enough and cannot truncate badly.
        per_period.round() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: Duration = Duration::from_millis(10);

    /// Runs a virtual sender: each batch of `batch` datagrams of `lpd` lines costs `cost`, every
    /// wait oversleeps by `slack`; returns the achieved lines per second over `lines` lines.
    fn simulate(rate: f64, lpd: u64, cost: Duration, slack: Duration, lines: u64) -> (f64, u64) {
        let mut p = Pacer::new(rate, LAG);
        let batch = batch_datagrams(rate, lpd as f64, 64) as u64;
        let mut now = Duration::ZERO;
        let mut sent = 0u64;
        while sent < lines {
            let w = p.wait(sent, now);
            if w > Duration::ZERO {
                now += w + slack;
            }
            now += cost;
            sent += batch * lpd;
        }
        (sent as f64 / now.as_secs_f64(), p.resets)
    }

    #[test]
    fn schedule_is_absolute() {
        let p = Pacer::new(1_000_000.0, LAG);
        assert_eq!(p.due(0), Duration::ZERO);
        assert_eq!(p.due(1_000), Duration::from_millis(1));
        assert_eq!(p.due(2_500_000), Duration::from_millis(2500));
    }

    #[test]
    fn early_batches_wait_until_due() {
        let mut p = Pacer::new(1_000_000.0, LAG);
        assert_eq!(
            p.wait(5_000, Duration::from_millis(2)),
            Duration::from_millis(3)
        );
        assert_eq!(p.wait(5_000, Duration::from_millis(6)), Duration::ZERO);
        assert_eq!(p.resets, 0);
    }

    #[test]
    fn falling_far_behind_moves_the_schedule_instead_of_bursting() {
        let mut p = Pacer::new(1_000_000.0, LAG);
        // Due at 1 ms, now at 101 ms: 100 ms behind, 10 ms allowed.
        assert_eq!(p.wait(1_000, Duration::from_millis(101)), Duration::ZERO);
        assert_eq!(p.resets, 1);
        assert_eq!(p.due(1_000), Duration::from_millis(91));
        // At most max_lag worth of lines (10k) goes out before the pacer asks to wait again.
        assert_eq!(p.wait(11_000, Duration::from_millis(101)), Duration::ZERO);
        assert!(p.wait(11_001, Duration::from_millis(101)) > Duration::ZERO);
    }

    #[test]
    fn unpaced_never_waits() {
        let mut p = Pacer::new(0.0, LAG);
        assert_eq!(p.wait(u64::MAX, Duration::ZERO), Duration::ZERO);
        assert_eq!(batch_datagrams(0.0, 70.0, 64), 64);
    }

    #[test]
    fn batches_cover_about_a_millisecond() {
        assert_eq!(batch_datagrams(1_000_000.0, 70.0, 64), 14);
        assert_eq!(batch_datagrams(20_000.0, 70.0, 64), 1);
        assert_eq!(batch_datagrams(8_000_000.0, 70.0, 64), 64);
        assert_eq!(batch_datagrams(2_000_000.0, 25.0, 64), 64);
        assert_eq!(batch_datagrams(500_000.0, 25.0, 0), 1);
    }

    #[test]
    fn accurate_at_millions_of_lines_per_second_despite_oversleeping() {
        // 60 µs of timer slack on every sleep and 20 µs per batch: the absolute schedule still
        // holds the rate within 0.1 %.
        for (rate, lpd) in [(1e6, 70), (2e6, 25), (6e6, 70), (20_000.0, 70)] {
            let lines = (rate * 5.0) as u64;
            let (achieved, resets) = simulate(
                rate,
                lpd,
                Duration::from_micros(20),
                Duration::from_micros(60),
                lines,
            );
            let err = (achieved - rate).abs() / rate;
            assert!(err < 1e-3, "{rate}: achieved {achieved} ({err})");
            assert_eq!(resets, 0);
        }
    }

    #[test]
    fn a_slow_sender_reports_what_it_achieved() {
        // Each 64-datagram batch costs 1 ms: at most 4.48M lines/s however much is asked.
        let (achieved, resets) = simulate(
            10e6,
            70,
            Duration::from_millis(1),
            Duration::ZERO,
            50_000_000,
        );
        assert!((achieved - 4.48e6).abs() / 4.48e6 < 1e-3, "{achieved}");
        assert!(resets > 0);
    }
}
