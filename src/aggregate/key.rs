//! Series identity: name + type + sorted, de-duplicated tags + host (+ `|T` timestamp), encoded
//! into one flat byte string that is hashed once on the reader thread.
//!
//! The encoding is the map key, so a lookup for an existing series compares bytes and allocates
//! nothing; the owned `Box<[u8]>` is made only when a series is new. Layout:
//!
//! ```text
//! [type index][scope][flags][timestamp: 8 bytes LE, if flags & HAS_TS] name 0 [host 0, if flags & HAS_HOST] (tag 0)*
//! ```
//!
//! Names, hosts and tags never contain NUL (the parser refuses control characters), so `0`
//! separates them unambiguously.

use std::cmp::Ordering;
use std::hash::BuildHasher;

use smallvec::SmallVec;

use crate::protocol::{MetricLine, MetricType};

const HAS_TS: u8 = 1;
const HAS_HOST: u8 = 2;

/// Where a series is aggregated and emitted (SPEC §5 magic tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// No magic tag: the type's default rule.
    Default,
    /// `veneurglobalonly`.
    GlobalOnly,
    /// `veneurlocalonly`.
    LocalOnly,
    /// Forwarded to this (global) instance; emit percentiles only (the local emitted the rest).
    ImportedPercentiles,
    /// Forwarded to this (global) instance; emit everything.
    ImportedAll,
}

impl Scope {
    const fn to_byte(self) -> u8 {
        match self {
            Scope::Default => 0,
            Scope::GlobalOnly => 1,
            Scope::LocalOnly => 2,
            Scope::ImportedPercentiles => 3,
            Scope::ImportedAll => 4,
        }
    }

    /// Inverse of the key's scope byte (also the forward protocol's scope field).
    pub const fn from_byte(b: u8) -> Scope {
        match b {
            1 => Scope::GlobalOnly,
            2 => Scope::LocalOnly,
            3 => Scope::ImportedPercentiles,
            4 => Scope::ImportedAll,
            _ => Scope::Default,
        }
    }

    /// The key's scope byte.
    pub const fn as_byte(self) -> u8 {
        self.to_byte()
    }
}

/// Hashes an encoded key. The same function everywhere: shards are chosen from this hash.
#[inline]
pub fn hash_key(key: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(0x7365_7269_6573).hash_one(key)
}

/// One tag as a (static prefix, borrowed rest) pair, so `|c:ID` can become `container_id:ID`
/// without allocating.
#[derive(Clone, Copy)]
struct TagRef<'a> {
    prefix: &'static [u8],
    rest: &'a [u8],
}

impl TagRef<'_> {
    fn bytes(&self) -> impl Iterator<Item = &u8> {
        self.prefix.iter().chain(self.rest.iter())
    }

    fn cmp(&self, other: &Self) -> Ordering {
        if self.prefix.is_empty() && other.prefix.is_empty() {
            return self.rest.cmp(other.rest);
        }
        self.bytes().cmp(other.bytes())
    }
}

fn is_magic(tag: &[u8], magic: &[u8]) -> bool {
    tag == magic || (tag.starts_with(magic) && tag.get(magic.len()) == Some(&b':'))
}

/// Appends the encoded key of `line` to `out` (which may hold other keys before it).
pub fn encode_key(out: &mut Vec<u8>, line: &MetricLine<'_>) {
    let mut tags: SmallVec<[TagRef<'_>; 16]> = SmallVec::new();
    let mut host: Option<&[u8]> = None;
    let mut scope = Scope::Default;
    for &t in &line.tags {
        if let Some(h) = t.strip_prefix(b"host:") {
            host.get_or_insert(h);
        } else if is_magic(t, b"veneurglobalonly") {
            scope = Scope::GlobalOnly;
        } else if is_magic(t, b"veneurlocalonly") {
            scope = Scope::LocalOnly;
        } else {
            tags.push(TagRef {
                prefix: b"",
                rest: t,
            });
        }
    }
    if let Some(id) = line.container_id {
        tags.push(TagRef {
            prefix: b"container_id:",
            rest: id,
        });
    }
    tags.sort_unstable_by(|a, b| a.cmp(b));

    let ts = match line.kind {
        MetricType::Counter | MetricType::Gauge => line.timestamp,
        _ => None,
    };
    let mut flags = 0;
    if ts.is_some() {
        flags |= HAS_TS;
    }
    if host.is_some() {
        flags |= HAS_HOST;
    }
    out.extend_from_slice(&[line.kind.index() as u8, scope.to_byte(), flags]);
    if let Some(ts) = ts {
        out.extend_from_slice(&ts.to_le_bytes());
    }
    out.extend_from_slice(line.name);
    out.push(0);
    if let Some(h) = host {
        out.extend_from_slice(h);
        out.push(0);
    }
    let mut prev: Option<TagRef<'_>> = None;
    for t in tags {
        if prev.is_some_and(|p| p.cmp(&t) == Ordering::Equal) {
            continue;
        }
        out.extend_from_slice(t.prefix);
        out.extend_from_slice(t.rest);
        out.push(0);
        prev = Some(t);
    }
}

/// Appends the key of an already-decoded series (a forwarded one): `tags` must be sorted and
/// de-duplicated, and no part may contain NUL.
pub fn encode_key_parts(
    out: &mut Vec<u8>,
    kind: MetricType,
    scope: Scope,
    timestamp: Option<u64>,
    name: &str,
    host: Option<&str>,
    tags: &[String],
) {
    let mut flags = 0;
    if timestamp.is_some() {
        flags |= HAS_TS;
    }
    if host.is_some() {
        flags |= HAS_HOST;
    }
    out.extend_from_slice(&[kind.index() as u8, scope.to_byte(), flags]);
    if let Some(ts) = timestamp {
        out.extend_from_slice(&ts.to_le_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    if let Some(h) = host {
        out.extend_from_slice(h.as_bytes());
        out.push(0);
    }
    for t in tags {
        out.extend_from_slice(t.as_bytes());
        out.push(0);
    }
}

/// A decoded key, borrowing from its encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyParts<'a> {
    /// Metric type.
    pub kind: MetricType,
    /// Magic-tag scope.
    pub scope: Scope,
    /// `|T` timestamp (counters and gauges only).
    pub timestamp: Option<u64>,
    /// Metric name.
    pub name: &'a str,
    /// Explicit `host:` tag value.
    pub host: Option<&'a str>,
    /// Sorted, de-duplicated tags, NUL-terminated each; iterate with [`KeyParts::tags`].
    tags: &'a [u8],
}

impl<'a> KeyParts<'a> {
    /// Decodes a key produced by [`encode_key`]; `None` only if it was not one.
    pub fn decode(key: &'a [u8]) -> Option<KeyParts<'a>> {
        let (&[kind, scope, flags], mut rest) = key.split_first_chunk::<3>()?;
        let kind = MetricType::from_index(kind)?;
        let mut timestamp = None;
        if flags & HAS_TS != 0 {
            let (ts, r) = rest.split_first_chunk::<8>()?;
            timestamp = Some(u64::from_le_bytes(*ts));
            rest = r;
        }
        let (name, r) = split_nul(rest)?;
        rest = r;
        let mut host = None;
        if flags & HAS_HOST != 0 {
            let (h, r) = split_nul(rest)?;
            host = Some(h);
            rest = r;
        }
        Some(KeyParts {
            kind,
            scope: Scope::from_byte(scope),
            timestamp,
            name,
            host,
            tags: rest,
        })
    }

    /// The tags, in key order (sorted by bytes).
    pub fn tags(&self) -> impl Iterator<Item = &'a str> {
        let tags = self.tags;
        tags.split(|&b| b == 0)
            .filter(|t| !t.is_empty())
            .filter_map(|t| std::str::from_utf8(t).ok())
    }
}

fn split_nul(b: &[u8]) -> Option<(&str, &[u8])> {
    let i = b.iter().position(|&c| c == 0)?;
    let (s, rest) = b.split_at(i);
    Some((std::str::from_utf8(s).ok()?, rest.get(1..)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Value;

    fn line<'a>(name: &'a str, kind: MetricType, tags: &[&'a str]) -> MetricLine<'a> {
        MetricLine {
            name: name.as_bytes(),
            kind,
            values: smallvec::smallvec![Value {
                value: 1.0,
                signed: false
            }],
            set_member: b"",
            sample_rate: 1.0,
            tags: tags.iter().map(|t| t.as_bytes()).collect(),
            container_id: None,
            timestamp: None,
        }
    }

    fn key(l: &MetricLine<'_>) -> Vec<u8> {
        let mut v = Vec::new();
        encode_key(&mut v, l);
        v
    }

    #[test]
    fn tag_order_and_duplicates_do_not_matter() {
        let a = key(&line("x", MetricType::Counter, &["b:2", "a:1", "a:1"]));
        let b = key(&line("x", MetricType::Counter, &["a:1", "b:2"]));
        assert_eq!(a, b);
        let parts = KeyParts::decode(&a).unwrap();
        assert_eq!(parts.tags().collect::<Vec<_>>(), ["a:1", "b:2"]);
    }

    #[test]
    fn type_is_part_of_identity() {
        let c = key(&line("x", MetricType::Counter, &[]));
        let g = key(&line("x", MetricType::Gauge, &[]));
        assert_ne!(c, g);
    }

    #[test]
    fn host_tag_becomes_host() {
        let k = key(&line("x", MetricType::Gauge, &["host:web-2", "env:prod"]));
        let p = KeyParts::decode(&k).unwrap();
        assert_eq!(p.host, Some("web-2"));
        assert_eq!(p.tags().collect::<Vec<_>>(), ["env:prod"]);
    }

    #[test]
    fn magic_tags_set_scope_and_vanish() {
        let k = key(&line("x", MetricType::Timer, &["veneurglobalonly", "a"]));
        let p = KeyParts::decode(&k).unwrap();
        assert_eq!(p.scope, Scope::GlobalOnly);
        assert_eq!(p.tags().collect::<Vec<_>>(), ["a"]);
        let k = key(&line("x", MetricType::Set, &["veneurlocalonly"]));
        assert_eq!(KeyParts::decode(&k).unwrap().scope, Scope::LocalOnly);
    }

    #[test]
    fn container_id_sorts_among_tags() {
        let mut l = line("x", MetricType::Counter, &["z:1", "a:1"]);
        l.container_id = Some(b"abc");
        let k = key(&l);
        let p = KeyParts::decode(&k).unwrap();
        assert_eq!(
            p.tags().collect::<Vec<_>>(),
            ["a:1", "container_id:abc", "z:1"]
        );
    }

    #[test]
    fn timestamp_only_for_counters_and_gauges() {
        let mut l = line("x", MetricType::Counter, &[]);
        l.timestamp = Some(1_700_000_000);
        let k = key(&l);
        assert_eq!(KeyParts::decode(&k).unwrap().timestamp, Some(1_700_000_000));
        l.kind = MetricType::Histogram;
        let k = key(&l);
        assert_eq!(KeyParts::decode(&k).unwrap().timestamp, None);
    }

    #[test]
    fn parts_encoding_matches_line_encoding() {
        let mut l = line("x", MetricType::Timer, &["b:2", "host:h1", "a"]);
        l.timestamp = None;
        let from_line = key(&l);
        let p = KeyParts::decode(&from_line).unwrap();
        let tags: Vec<String> = p.tags().map(str::to_owned).collect();
        let mut from_parts = Vec::new();
        encode_key_parts(
            &mut from_parts,
            p.kind,
            p.scope,
            p.timestamp,
            p.name,
            p.host,
            &tags,
        );
        assert_eq!(from_line, from_parts);
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(KeyParts::decode(b"").is_none());
        assert!(KeyParts::decode(&[9, 0, 0, b'a', 0]).is_none());
        assert!(KeyParts::decode(&[0, 0, 1, 1, 2]).is_none());
    }
}
