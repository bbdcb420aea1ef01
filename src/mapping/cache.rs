//! A reader's memory of what the rules made of each (name, type) it has seen, so a repeated
//! name costs one hash lookup, and its mapped name and tags are borrowed from here by the key
//! encoding without any allocation per line.
//!
//! Each reader (UDP/Unix thread, TCP connection) owns one: no lock, no sharing. It holds at
//! most [`CACHE_CAPACITY`] entries; when full, the next lookup empties it (the names in use
//! come back on their next line), which keeps it bounded under unbounded name churn at the
//! cost of re-resolving. Hits, misses and evicted entries are counted for the self-metrics.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use smallvec::SmallVec;

use super::{Outcome, Rules};
use crate::protocol::MetricType;

/// Entries one cache holds before it starts over (a sixteenth of a megabyte of names, at
/// typical lengths, is well within a reader's budget; more distinct names than this per
/// reader re-resolve after each reset).
pub const CACHE_CAPACITY: usize = 16 * 1024;

/// What a line of a cached (name, type) becomes.
#[derive(Debug)]
pub enum Cached {
    /// As it came (no rule, a `keep` rule, or an empty result).
    Unchanged,
    /// Dropped by a rule.
    Dropped,
    /// Renamed and tagged.
    Mapped(Box<MappedKey>),
}

/// A mapped name and its rule's tags in one allocation.
#[derive(Debug)]
pub struct MappedKey {
    /// The name, then each `key:value` tag.
    data: Box<[u8]>,
    /// Where the name ends in `data`.
    name_end: usize,
    /// Each tag's range in `data` and the length of its key.
    tags: SmallVec<[(u32, u32, u32); 4]>,
}

impl MappedKey {
    fn new(name: &str, tags: &[String]) -> MappedKey {
        let mut data = Vec::with_capacity(name.len() + tags.iter().map(String::len).sum::<usize>());
        data.extend_from_slice(name.as_bytes());
        let at = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let mut spans = SmallVec::new();
        for t in tags {
            let start = data.len();
            data.extend_from_slice(t.as_bytes());
            let key = t.find(':').unwrap_or(t.len());
            spans.push((at(start), at(data.len()), at(key)));
        }
        MappedKey {
            data: data.into_boxed_slice(),
            name_end: name.len(),
            tags: spans,
        }
    }

    /// The new name.
    #[inline]
    pub fn name(&self) -> &[u8] {
        self.data.get(..self.name_end).unwrap_or_default()
    }

    /// Pushes onto `out` the rule's tags whose key no tag of `line` has (a line's own tag
    /// wins over a rule's).
    #[inline]
    pub fn added_tags<'c>(&'c self, line: &[&[u8]], out: &mut SmallVec<[&'c [u8]; 8]>) {
        for &(start, end, key_len) in &self.tags {
            let Some(tag) = self.data.get(start as usize..end as usize) else {
                continue;
            };
            let key = tag.get(..key_len as usize).unwrap_or_default();
            let shadowed = line.iter().any(|t| {
                t.starts_with(key) && (t.len() == key.len() || t.get(key.len()) == Some(&b':'))
            });
            if !shadowed {
                out.push(tag);
            }
        }
    }
}

impl Cached {
    fn from_outcome(o: Outcome) -> Cached {
        match o {
            Outcome::Unchanged | Outcome::Kept(_) => Cached::Unchanged,
            Outcome::Dropped(_) => Cached::Dropped,
            Outcome::Mapped(m) => Cached::Mapped(Box::new(MappedKey::new(&m.name, &m.tags))),
        }
    }
}

/// Names up to this long are held in the entry itself: a hit then reads one slot, with no
/// pointer to follow to compare the name (criterion `mapping`).
const INLINE_NAME: usize = 32;

struct Slot {
    hash: u64,
    name: SmallVec<[u8; INLINE_NAME]>,
    kind: MetricType,
    value: Cached,
}

/// Counts since the last [`MappingCache::take_counts`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheCounts {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that ran the rules.
    pub misses: u64,
    /// Entries dropped to stay within [`CACHE_CAPACITY`].
    pub evictions: u64,
}

/// One reader's cache over one rule table.
pub struct MappingCache {
    rules: Arc<Rules>,
    table: HashTable<Slot>,
    hasher: foldhash::fast::FixedState,
    capacity: usize,
    counts: CacheCounts,
}

impl MappingCache {
    /// An empty cache over `rules`.
    pub fn new(rules: Arc<Rules>) -> MappingCache {
        MappingCache::with_capacity(rules, CACHE_CAPACITY)
    }

    /// An empty cache over `rules` holding at most `capacity` entries.
    pub fn with_capacity(rules: Arc<Rules>, capacity: usize) -> MappingCache {
        MappingCache {
            rules,
            table: HashTable::new(),
            hasher: foldhash::fast::FixedState::with_seed(0x6d61_7070),
            capacity: capacity.max(1),
            counts: CacheCounts::default(),
        }
    }

    /// The rules it answers for.
    pub fn rules(&self) -> &Arc<Rules> {
        &self.rules
    }

    /// What a line named `name` of type `kind` becomes.
    ///
    /// A name whose first byte no rule starts with is answered before any lookup. Others look
    /// in the cache first, and only a name not cached is checked against the rules' first parts
    /// (a set lookup, which a cached mapped name then never pays: `benches/mapping.rs`); one
    /// that no rule's first part matches is answered without being cached or counted.
    #[inline]
    pub fn resolve(&mut self, name: &[u8], kind: MetricType) -> &Cached {
        if !self.rules.may_match_first_byte(name) {
            return &Cached::Unchanged;
        }
        let hash = self.hasher.hash_one(name) ^ kind.index() as u64;
        self.resolve_hashed(name, kind, hash)
    }

    /// [`MappingCache::resolve`] with the hash given (the tests give colliding ones).
    #[inline]
    fn resolve_hashed(&mut self, name: &[u8], kind: MetricType, hash: u64) -> &Cached {
        // `find_entry`, not `entry`: a hit neither reserves nor looks for an insert slot.
        let found = self.table.find_entry(hash, |s| {
            s.hash == hash && s.kind == kind && s.name.as_slice() == name
        });
        match found {
            Ok(o) => {
                self.counts.hits += 1;
                &o.into_mut().value
            }
            Err(_) if !self.rules.may_match_first_part(name) => &Cached::Unchanged,
            Err(absent) => {
                self.counts.misses += 1;
                // Parsed names are UTF-8; anything else is left alone.
                let value = match std::str::from_utf8(name) {
                    Ok(s) => Cached::from_outcome(self.rules.resolve(s, Some(kind))),
                    Err(_) => Cached::Unchanged,
                };
                let slot = Slot {
                    hash,
                    kind,
                    name: SmallVec::from_slice(name),
                    value,
                };
                let table = absent.into_table();
                // Full: start over (a hit never clears).
                if table.len() >= self.capacity {
                    self.counts.evictions += table.len() as u64;
                    table.clear();
                }
                &table.insert_unique(hash, slot, |s| s.hash).into_mut().value
            }
        }
    }

    /// The counts since the last call, zeroed.
    pub fn take_counts(&mut self) -> CacheCounts {
        std::mem::take(&mut self.counts)
    }
}

#[cfg(test)]
impl MappingCache {
    /// [`MappingCache::resolve`] with a chosen hash.
    pub(crate) fn resolve_with_hash(
        &mut self,
        name: &[u8],
        kind: MetricType,
        hash: u64,
    ) -> &Cached {
        self.resolve_hashed(name, kind, hash)
    }
}
