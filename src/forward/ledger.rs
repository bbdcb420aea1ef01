//! The global's memory of the imports it merged, so a retried import is merged once
//! (`docs/fleet.md#exactly-once`).
//!
//! An import's identity is (sender, interval, part): the sender is a local's random id, new at
//! each of its starts; intervals count its flushes. A local keeps an undelivered interval for at
//! most `window` intervals (its `buffer_intervals`) and delivers each global's parts in order, so
//! per sender the ledger keeps the parts merged within `window` intervals of the newest one it
//! has seen; anything older is a part the local has already given up, and arrives only as a very
//! late copy of one merged before: it is answered as a duplicate too.
//!
//! Bounds: per sender at most `(window + 1) × parts` identities; a sender is forgotten once it
//! has been silent for longer than it could still retry (`(window + 2)` of its intervals, at
//! least [`MIN_KEEP`]); at most [`MAX_SENDERS`] senders, the longest silent forgotten first.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Senders remembered at once (a fleet's locals, and their restarts within [`MIN_KEEP`]).
pub const MAX_SENDERS: usize = 100_000;

/// The shortest time a silent sender is remembered: covers a local whose flushes stall.
pub const MIN_KEEP: Duration = Duration::from_secs(15 * 60);

/// How often expired senders are swept (a sweep visits every sender).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The identity an import carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportId {
    /// The sending process's id.
    pub sender: String,
    /// Its flush number, from 1.
    pub interval: u64,
    /// The part of that interval's payload, from 0.
    pub part: u32,
    /// How many intervals back the sender may still retry.
    pub window: u32,
    /// The sender's flush interval.
    pub interval_len: Duration,
}

/// What to do with an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Not seen before: merge it (it is now recorded as merged).
    New,
    /// Merged before (or older than the sender's retry window): answer success, merge nothing.
    Duplicate,
}

#[derive(Debug)]
struct SenderLog {
    /// The newest interval merged.
    newest: u64,
    /// Parts merged within the window below `newest`.
    merged: BTreeSet<(u64, u32)>,
    /// When it last sent.
    last_seen: Instant,
    /// How long after `last_seen` it may still retry.
    keep: Duration,
}

#[derive(Debug)]
struct Inner {
    senders: HashMap<String, SenderLog>,
    last_sweep: Instant,
}

/// The identities a global merged; shared by every `/import` request.
#[derive(Debug)]
pub struct ImportLedger {
    inner: Mutex<Inner>,
    max_senders: usize,
}

impl Default for ImportLedger {
    fn default() -> Self {
        ImportLedger::new(MAX_SENDERS)
    }
}

impl ImportLedger {
    /// A ledger remembering at most `max_senders` senders.
    pub fn new(max_senders: usize) -> ImportLedger {
        ImportLedger {
            inner: Mutex::new(Inner {
                senders: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            max_senders: max_senders.max(1),
        }
    }

    /// Decides whether `id` is merged, and records it when it is. Callers merge a `New` import
    /// in full (validation comes first): the record and the merge are one decision.
    pub fn admit(&self, id: &ImportId, now: Instant) -> Admission {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.saturating_duration_since(inner.last_sweep) >= SWEEP_EVERY {
            inner
                .senders
                .retain(|_, log| now.saturating_duration_since(log.last_seen) <= log.keep);
            inner.last_sweep = now;
        }
        let window = u64::from(id.window);
        let keep = id
            .interval_len
            .saturating_mul(id.window.saturating_add(2))
            .max(MIN_KEEP);
        if !inner.senders.contains_key(&id.sender) && inner.senders.len() >= self.max_senders {
            let quietest = inner
                .senders
                .iter()
                .min_by_key(|(_, log)| log.last_seen)
                .map(|(k, _)| k.clone());
            if let Some(k) = quietest {
                inner.senders.remove(&k);
            }
        }
        let log = inner
            .senders
            .entry(id.sender.clone())
            .or_insert_with(|| SenderLog {
                newest: 0,
                merged: BTreeSet::new(),
                last_seen: now,
                keep,
            });
        log.last_seen = now;
        log.keep = keep;
        let floor = log.newest.saturating_sub(window);
        if log.newest > 0 && id.interval <= floor {
            return Admission::Duplicate;
        }
        if !log.merged.insert((id.interval, id.part)) {
            return Admission::Duplicate;
        }
        if id.interval > log.newest {
            log.newest = id.interval;
            let floor = log.newest.saturating_sub(window);
            // Everything at or below the floor is refused by the check above without a lookup.
            log.merged = log.merged.split_off(&(floor + 1, 0));
        }
        Admission::New
    }

    /// Senders remembered now.
    pub fn senders(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .senders
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sender: &str, interval: u64, part: u32) -> ImportId {
        ImportId {
            sender: sender.into(),
            interval,
            part,
            window: 3,
            interval_len: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_repeat_is_a_duplicate_and_parts_are_separate() {
        let l = ImportLedger::default();
        let t = Instant::now();
        assert_eq!(l.admit(&id("a", 1, 0), t), Admission::New);
        assert_eq!(l.admit(&id("a", 1, 0), t), Admission::Duplicate);
        assert_eq!(l.admit(&id("a", 1, 1), t), Admission::New);
        assert_eq!(l.admit(&id("b", 1, 0), t), Admission::New, "another sender");
        assert_eq!(l.admit(&id("a", 2, 0), t), Admission::New);
        assert_eq!(l.admit(&id("a", 1, 1), t), Admission::Duplicate);
    }

    #[test]
    fn out_of_order_within_the_window_is_merged_once() {
        let l = ImportLedger::default();
        let t = Instant::now();
        assert_eq!(l.admit(&id("a", 5, 0), t), Admission::New);
        assert_eq!(l.admit(&id("a", 3, 0), t), Admission::New, "within 3 of 5");
        assert_eq!(l.admit(&id("a", 3, 0), t), Admission::Duplicate);
        assert_eq!(
            l.admit(&id("a", 2, 0), t),
            Admission::Duplicate,
            "beyond the window"
        );
        assert_eq!(l.admit(&id("a", 9, 0), t), Admission::New);
        assert_eq!(l.admit(&id("a", 5, 0), t), Admission::Duplicate);
        assert_eq!(l.admit(&id("a", 7, 0), t), Admission::New);
    }

    #[test]
    fn memory_per_sender_is_bounded_by_the_window() {
        let l = ImportLedger::default();
        let t = Instant::now();
        for i in 1..=1000 {
            for p in 0..4 {
                assert_eq!(l.admit(&id("a", i, p), t), Admission::New);
            }
        }
        let inner = l.inner.lock().unwrap();
        let log = &inner.senders["a"];
        assert_eq!(log.merged.len(), 3 * 4, "parts of intervals 998..=1000");
    }

    #[test]
    fn silent_senders_are_forgotten_and_the_count_is_capped() {
        let l = ImportLedger::new(2);
        let t = Instant::now();
        l.admit(&id("a", 1, 0), t);
        l.admit(&id("b", 1, 0), t + Duration::from_secs(1));
        l.admit(&id("c", 1, 0), t + Duration::from_secs(2));
        assert_eq!(l.senders(), 2);
        // "a" was the quietest: forgotten, so its repeat is merged again.
        assert_eq!(
            l.admit(&id("a", 1, 0), t + Duration::from_secs(3)),
            Admission::New
        );
        let later = t + MIN_KEEP + Duration::from_secs(60);
        l.admit(&id("d", 1, 0), later);
        assert_eq!(l.senders(), 1, "everyone else was silent past their keep");
    }
}
