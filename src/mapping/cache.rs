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

use hashbrown::hash_table::Entry;
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
    Mapped {
        /// The new name.
        name: Box<[u8]>,
        /// `key:value` tags with the length of their key.
        tags: Box<[(Box<[u8]>, usize)]>,
    },
}

impl Cached {
    fn from_outcome(o: Outcome) -> Cached {
        match o {
            Outcome::Unchanged | Outcome::Kept(_) => Cached::Unchanged,
            Outcome::Dropped(_) => Cached::Dropped,
            Outcome::Mapped(m) => Cached::Mapped {
                name: m.name.into_bytes().into_boxed_slice(),
                tags: m
                    .tags
                    .into_iter()
                    .map(|t| {
                        let key = t.find(':').unwrap_or(t.len());
                        (t.into_bytes().into_boxed_slice(), key)
                    })
                    .collect(),
            },
        }
    }
}

/// Pushes onto `out` the rule tags of `tags` whose key no tag of `line` has (a line's own tag
/// wins over a rule's).
#[inline]
pub fn added_tags<'c>(
    tags: &'c [(Box<[u8]>, usize)],
    line: &[&[u8]],
    out: &mut SmallVec<[&'c [u8]; 8]>,
) {
    for (tag, key_len) in tags {
        let key = tag.get(..*key_len).unwrap_or_default();
        let shadowed = line.iter().any(|t| {
            t.starts_with(key) && (t.len() == key.len() || t.get(key.len()) == Some(&b':'))
        });
        if !shadowed {
            out.push(tag);
        }
    }
}

struct Slot {
    hash: u64,
    kind: MetricType,
    name: Box<[u8]>,
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
    #[inline]
    pub fn resolve(&mut self, name: &[u8], kind: MetricType) -> &Cached {
        if self.table.len() >= self.capacity {
            self.counts.evictions += self.table.len() as u64;
            self.table.clear();
        }
        let hash = self.hasher.hash_one(name) ^ kind.index() as u64;
        let entry = self.table.entry(
            hash,
            |s| s.hash == hash && s.kind == kind && *s.name == *name,
            |s| s.hash,
        );
        match entry {
            Entry::Occupied(o) => {
                self.counts.hits += 1;
                &o.into_mut().value
            }
            Entry::Vacant(v) => {
                self.counts.misses += 1;
                // Parsed names are UTF-8; anything else is left alone.
                let value = match std::str::from_utf8(name) {
                    Ok(s) => Cached::from_outcome(self.rules.resolve(s, Some(kind))),
                    Err(_) => Cached::Unchanged,
                };
                let slot = Slot {
                    hash,
                    kind,
                    name: name.into(),
                    value,
                };
                &v.insert(slot).into_mut().value
            }
        }
    }

    /// The counts since the last call, zeroed.
    pub fn take_counts(&mut self) -> CacheCounts {
        std::mem::take(&mut self.counts)
    }
}
