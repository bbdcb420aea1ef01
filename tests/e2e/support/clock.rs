//! The clock: the deadline every wait shares, polling until something happens, Unix seconds,
//! and keeping a test's sends clear of an interval boundary.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long any wait in these tests may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `f` every 20 ms until it returns `Some`, or panics with `what` after [`DEADLINE`].
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit i64")
}

/// Waits (up to the deadline) for an interval whose wall-clock end is at least `margin` away,
/// so a test's sends land in one interval. Returns immediately for long intervals.
pub fn avoid_boundary(interval: Duration, margin: Duration) {
    let step = interval.as_millis();
    loop {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let left = step - now % step;
        if left > margin.as_millis() {
            return;
        }
        std::thread::sleep(Duration::from_millis(u64::try_from(left).unwrap() + 5));
    }
}
