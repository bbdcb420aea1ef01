//! Prefetching a shard table's lookups ahead of [`super::Aggregator::apply`].
//!
//! A reader at a moderate rate works in bursts and finds the table out of its caches, so each
//! op's lookup would wait for several misses in a row: the entry its hash points to, the entry's
//! heap key (tagged lines) and the state a sample goes to. Each is prefetched a few ops before it
//! is needed, the later ones from what an earlier prefetch brought in (BENCHMARKS.md, "Where
//! the time goes at 1M lines/s"). The first two are here; the states, which a batch's samples
//! reach after its lookups, are prefetched where they are recorded (`record_deferred`).

use hashbrown::HashTable;

use super::{key, Series};

/// A hint to bring the cache line at `p` into every cache level. Any address will do: a
/// prefetch never faults.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// How many ops ahead [`super::Aggregator::apply`] prefetches the table entry an op's key
/// hashes to.
pub(super) const ENTRY_AHEAD: usize = 16;

/// How many ops ahead [`super::Aggregator::apply`] prefetches the heap key of an op whose key is
/// too long to be stored in place, once [`ENTRY_AHEAD`]'s prefetch brought its entry in.
pub(super) const KEY_AHEAD: usize = 8;

/// Hands `f` each entry of `table` that a lookup of `hash` would compare, without comparing:
/// the probe reads only the control bytes.
#[inline(always)]
fn for_each_candidate(table: &HashTable<Series>, hash: u64, mut f: impl FnMut(&Series)) {
    let _ = table.find(hash, |s| {
        f(s);
        false
    });
}

/// Prefetches the entries a lookup of `hash` would compare (their addresses only; nothing in
/// them is read).
#[inline(always)]
pub(super) fn prefetch_entry(table: &HashTable<Series>, hash: u64) {
    for_each_candidate(table, hash, |s| prefetch(std::ptr::from_ref(s).cast()));
}

/// Prefetches the heap key of the entry with `hash` (read from the entry, which
/// [`prefetch_entry`] brought in earlier).
#[inline(always)]
pub(super) fn prefetch_heap_key(table: &HashTable<Series>, hash: u64) {
    for_each_candidate(table, hash, |s| {
        if let (true, key::SeriesKey::Heap(k)) = (s.hash == hash, &s.key) {
            prefetch(k.as_ptr());
        }
    });
}
