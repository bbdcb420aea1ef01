//! Series identity: name + type + sorted, de-duplicated tags + host (+ `|T` timestamp), encoded
//! into one flat byte string that is hashed once on the reader thread.
//!
//! The encoding is the map key, so a lookup for an existing series compares bytes and allocates
//! nothing; the owned `Box<[u8]>` is made only when a series is new. Layout:
//!
//! ```text
//! [type index][scope][flags][timestamp: 8 bytes LE, if flags & HAS_TS] name 0 [host 0, if flags &
//! HAS_HOST] (tag 0)*
//! ```
//!
//! Names, hosts and tags never contain NUL (the parser refuses control characters), so `0`
//! separates them unambiguously.

use std::cmp::Ordering;

use crate::protocol::{MetricLine, MetricType};

const HAS_TS: u8 = 1;
const HAS_HOST: u8 = 2;

/// Where a series is aggregated and emitted (`docs/fleet.md#magic-tags`).
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
///
/// wyhash's construction (final v4), written out for byte strings: plain statsd keys are
/// 15–30 bytes, which this hashes with two or three 64×64→128-bit multiplies and no calls.
/// Through `BuildHasher::hash_one` (foldhash) the same keys took a length-prefix write, a call
/// into its byte loop and a finish, a measurable share of the reader's time (`benches/ab.py`).
/// Every bit of the result depends on every input bit (the tests check the bits the table and the
/// shards use). Not keyed: like the fixed seed before it, it does not resist chosen collisions;
/// `max_series` bounds what a flood of them costs.
#[inline]
pub fn hash_key(key: &[u8]) -> u64 {
    const S0: u64 = 0x2d35_8dcc_aa6c_78a5;
    const S1: u64 = 0x8bb8_4b93_962e_acc9;
    const SEED: u64 = 0x7365_7269_6573 ^ S0;
    let len = key.len();
    let mut seed = SEED;
    let (a, b) = if len <= 16 {
        if len >= 4 {
            // Two overlapping pairs of 4-byte reads cover 4..=16 bytes.
            let far = (len >> 3) << 2;
            (
                (read4(key, 0) << 32) | read4(key, far),
                (read4(key, len - 4) << 32) | read4(key, len - 4 - far),
            )
        } else if let (Some(&first), Some(&last)) = (key.first(), key.last()) {
            let mid = key.get(len / 2).copied().unwrap_or(0);
            (
                (u64::from(first) << 16) | (u64::from(mid) << 8) | u64::from(last),
                0,
            )
        } else {
            (0, 0)
        }
    } else {
        let mut rest = key;
        while let Some((chunk, tail)) = rest.split_first_chunk::<16>() {
            if tail.is_empty() {
                break; // the last 16 bytes are read below
            }
            seed = mix(read8(chunk, 0) ^ S1, read8(chunk, 8) ^ seed);
            rest = tail;
        }
        (read8(key, len - 16), read8(key, len - 8))
    };
    let product = u128::from(a ^ S1) * u128::from(b ^ seed);
    mix(
        (product as u64) ^ S0 ^ len as u64,
        ((product >> 64) as u64) ^ S1,
    )
}

/// The 128-bit product of `a` and `b`, its halves xored.
#[inline(always)]
fn mix(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Eight bytes of `s` from `at` (little-endian); 0 past the end (never, as called).
#[inline(always)]
fn read8(s: &[u8], at: usize) -> u64 {
    s.get(at..)
        .and_then(<[u8]>::first_chunk::<8>)
        .map_or(0, |c| u64::from_le_bytes(*c))
}

/// Four bytes of `s` from `at` (little-endian); 0 past the end (never, as called).
#[inline(always)]
fn read4(s: &[u8], at: usize) -> u64 {
    s.get(at..)
        .and_then(<[u8]>::first_chunk::<4>)
        .map_or(0, |c| u64::from(u32::from_le_bytes(*c)))
}

/// Whether two encoded keys are equal: `a == b`, inlined, eight bytes at a time.
///
/// The table compares a key only after its 64-bit hash matched, so nearly every comparison
/// is between equal keys of 20–100 bytes; `<[u8]>::eq` calls `memcmp` for those, which
/// stood out in aggregation profiles (criterion `aggregate`).
#[inline]
pub fn same_key(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (Some(a_last), Some(b_last)) = (a.last_chunk::<8>(), b.last_chunk::<8>()) else {
        return a == b; // shorter than eight bytes
    };
    let mut diff = u64::from_ne_bytes(*a_last) ^ u64::from_ne_bytes(*b_last);
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        if let (Ok(x), Ok(y)) = (<[u8; 8]>::try_from(x), <[u8; 8]>::try_from(y)) {
            diff |= u64::from_ne_bytes(x) ^ u64::from_ne_bytes(y);
        }
    }
    diff == 0
}

/// Longest key stored in place in a [`SeriesKey`]; with its length and variant that makes 32
/// bytes, the size of a boxed key's pointer and length plus what the allocator adds to it.
pub const INLINE_KEY: usize = 30;

/// A series' encoded key as the table stores it: in place when it is short (plain statsd names:
/// `api.requests.count` is a 22-byte key), else on the heap.
///
/// A lookup compares the key it found by hash; a boxed key is one more cache line to load, which
/// the reader waits for on nearly every line (much of `Aggregator::apply` in the plain
/// workload's profile). In place, the key shares the entry's line, and a short key also saves
/// its allocation (about 40 bytes with malloc's overhead) per series.
#[derive(Clone)]
pub enum SeriesKey {
    /// `len` bytes of `bytes`.
    Inline {
        /// Key length, at most [`INLINE_KEY`].
        len: u8,
        /// The key, zero-padded.
        bytes: [u8; INLINE_KEY],
    },
    /// A longer key.
    Heap(Box<[u8]>),
}

impl SeriesKey {
    /// Stores `key`, in place if it fits.
    pub fn new(key: &[u8]) -> SeriesKey {
        let mut bytes = [0; INLINE_KEY];
        match (bytes.get_mut(..key.len()), u8::try_from(key.len())) {
            (Some(dst), Ok(len)) => {
                dst.copy_from_slice(key);
                SeriesKey::Inline { len, bytes }
            }
            _ => SeriesKey::Heap(key.into()),
        }
    }

    /// Whether a key of `len` bytes is stored in place (else on the heap).
    #[inline(always)]
    pub fn fits_in_place(len: usize) -> bool {
        len <= INLINE_KEY
    }

    /// Takes an owned key, moving it in place if it fits.
    pub fn from_boxed(key: Box<[u8]>) -> SeriesKey {
        if SeriesKey::fits_in_place(key.len()) {
            SeriesKey::new(&key)
        } else {
            SeriesKey::Heap(key)
        }
    }

    /// The encoded key.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            SeriesKey::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or(&[]),
            SeriesKey::Heap(b) => b,
        }
    }
}

impl std::ops::Deref for SeriesKey {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::fmt::Debug for SeriesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SeriesKey")
            .field(&self.as_bytes().escape_ascii().to_string())
            .finish()
    }
}

/// Sorts `line`'s tags into the `host:` value (the last one, as DogStatsD), the magic-tag
/// scope, and the rest (handed to `rest` in their order).
#[inline(always)]
fn split_tags<'a>(
    tags: impl Iterator<Item = &'a [u8]>,
    mut rest: impl FnMut(&'a [u8]),
) -> (Option<&'a [u8]>, Scope) {
    let mut host = None;
    let mut scope = Scope::Default;
    for t in tags {
        // Most tags start with neither letter: one byte decides, where three comparisons with
        // the prefixes (`memcmp` calls) stood out in a tagged line's profile (`perf` over the
        // `tagged` shape of `benches/ingest_loop.rs`).
        match t.first() {
            Some(b'h') => match t.strip_prefix(b"host:") {
                Some(h) => host = Some(h),
                None => rest(t),
            },
            Some(b'v') if is_magic(t, b"veneurglobalonly") => scope = Scope::GlobalOnly,
            Some(b'v') if is_magic(t, b"veneurlocalonly") => scope = Scope::LocalOnly,
            _ => rest(t),
        }
    }
    (host, scope)
}

fn is_magic(tag: &[u8], magic: &[u8]) -> bool {
    tag == magic || (tag.starts_with(magic) && tag.get(magic.len()) == Some(&b':'))
}

/// The tag a `|c:ID` section becomes.
const CONTAINER_PREFIX: &[u8] = b"container_id:";

/// Orders the tag `container_id:ID` against `tag` as bytes, without building it.
fn cmp_container(id: &[u8], tag: &[u8]) -> Ordering {
    let (head, rest) = tag.split_at(CONTAINER_PREFIX.len().min(tag.len()));
    match CONTAINER_PREFIX.get(..head.len()).map(|p| p.cmp(head)) {
        Some(Ordering::Equal) if head.len() == CONTAINER_PREFIX.len() => id.cmp(rest),
        // `tag` is a proper prefix of `container_id:`.
        Some(Ordering::Equal) | None => Ordering::Greater,
        Some(order) => order,
    }
}

/// The first eight bytes of `tag`, zero-padded, as a big-endian number: two tags' prefixes
/// order as the tags do, or are equal. Tags hold no NUL (the parser refuses control bytes), so
/// padding sorts a tag before every longer tag it begins.
#[inline(always)]
fn sort_prefix(tag: &[u8]) -> u64 {
    let len = tag.len();
    if let Some(head) = tag.first_chunk::<8>() {
        return u64::from_be_bytes(*head);
    }
    let be4 = |at: usize| {
        tag.get(at..)
            .and_then(<[u8]>::first_chunk::<4>)
            .map_or(0, |c| u64::from(u32::from_be_bytes(*c)))
    };
    if len >= 4 {
        // Two overlapping reads (a byte loop here compiled to a `memcpy` call): the bytes both
        // read land in the same places, so or-ing them is exact.
        return (be4(0) << 32) | (be4(len - 4) << (64 - 8 * len));
    }
    let byte = |i: usize| tag.get(i).map_or(0, |&b| u64::from(b));
    (byte(0) << 56) | (byte(1) << 48) | (byte(2) << 40)
}

/// Appends one NUL-terminated part.
#[inline]
fn push_part(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(part);
    out.push(0);
}

/// Appends a key's head: kind, scope, flags, then the timestamp, name and host present.
#[inline(always)]
fn push_head(
    out: &mut Vec<u8>,
    kind: u8,
    scope: Scope,
    ts: Option<u64>,
    host: Option<&[u8]>,
    name: &[u8],
) {
    let mut flags = 0;
    if ts.is_some() {
        flags |= HAS_TS;
    }
    if host.is_some() {
        flags |= HAS_HOST;
    }
    // One capacity check for the head (3 + 8 + name + 0 + host + 0 at most).
    out.reserve(13 + name.len() + host.map_or(0, <[u8]>::len));
    out.extend_from_slice(&[kind, scope.to_byte(), flags]);
    if let Some(ts) = ts {
        out.extend_from_slice(&ts.to_le_bytes());
    }
    push_part(out, name);
    if let Some(h) = host {
        push_part(out, h);
    }
}

/// Appends the encoded key of `line` to `out` (which may hold other keys before it).
///
/// Tags are sorted as borrowed slices; `|c:ID` is merged in at its place as `container_id:ID`
/// without being built, so nothing is allocated for up to 16 tags.
#[inline]
pub fn encode_key(out: &mut Vec<u8>, line: &MetricLine<'_>) {
    if line.tags.is_empty() && line.container_id.is_none() {
        // Plain statsd: nothing to sort; inline in the reader's loop.
        push_head(
            out,
            line.kind.index() as u8,
            Scope::Default,
            line_ts(line),
            None,
            line.name,
        );
    } else {
        encode_tagged(out, line);
    }
}

/// The `|T` timestamp the key carries: counters' and gauges' only.
fn line_ts(line: &MetricLine<'_>) -> Option<u64> {
    match line.kind {
        MetricType::Counter | MetricType::Gauge => line.timestamp,
        _ => None,
    }
}

/// Appends the encoded key of `line` renamed to `name`, with the tags `extra` added to its own
/// (a mapping rule's; the caller leaves out any whose key the line has). `host:` and magic tags
/// among them count as on the line. Not inlined: the reader's plain path inlines
/// [`encode_key`] alone.
#[inline(never)]
pub fn encode_key_mapped(out: &mut Vec<u8>, line: &MetricLine<'_>, name: &[u8], extra: &[&[u8]]) {
    if line.tags.is_empty() && line.container_id.is_none() && extra.is_empty() {
        let kind = line.kind.index() as u8;
        push_head(out, kind, Scope::Default, line_ts(line), None, name);
    } else {
        encode_tagged_with(out, line, name, extra);
    }
}

/// [`encode_key`] of a line with tags or a container id.
#[inline(never)]
fn encode_tagged(out: &mut Vec<u8>, line: &MetricLine<'_>) {
    encode_tagged_with(out, line, line.name, &[]);
}

/// A tag and its [`sort_prefix`].
type Tag<'a> = (u64, &'a [u8]);

/// Lines with up to this many tags sort them in an array on the stack; more go to a vector.
const TAGS_IN_PLACE: usize = 16;

/// A tagged key under `name` with the line's tags and `extra`.
#[inline(always)]
fn encode_tagged_with(out: &mut Vec<u8>, line: &MetricLine<'_>, name: &[u8], extra: &[&[u8]]) {
    let all = line.tags.iter().chain(extra).copied();
    if line.tags.len() + extra.len() <= TAGS_IN_PLACE {
        let mut buf: [Tag<'_>; TAGS_IN_PLACE] = [(0, &[]); TAGS_IN_PLACE];
        let mut n = 0;
        let (host, scope) = split_tags(all, |t| {
            if let Some(slot) = buf.get_mut(n) {
                *slot = (sort_prefix(t), t);
                n += 1;
            }
        });
        let tags = buf.get_mut(..n).unwrap_or_default();
        sort_tags(tags);
        push_tagged(out, line, name, host, scope, tags);
    } else {
        let mut tags: Vec<Tag<'_>> = Vec::with_capacity(line.tags.len() + extra.len());
        let (host, scope) = split_tags(all, |t| tags.push((sort_prefix(t), t)));
        // A tuple orders as `sort_tags` does; not the insertion sort, whose quadratic worst
        // case is for a few tags only.
        tags.sort_unstable();
        push_tagged(out, line, name, host, scope, &tags);
    }
}

/// Sorts up to [`TAGS_IN_PLACE`] tags in byte order, decided by their prefixes in one comparison
/// nearly always. An insertion sort, inlined: for a line's few tags the standard sort, called
/// out of line, did more work than the rest of the tag encoding (callgrind over
/// `benches/ingest_loop.rs`'s `tagged` shape, BENCHMARKS.md).
#[inline(always)]
fn sort_tags(tags: &mut [Tag<'_>]) {
    for i in 1..tags.len() {
        // Moves tag `i` down past every tag greater than it.
        let mut j = i;
        while let (Some(a), Some(b)) = (j.checked_sub(1).and_then(|k| tags.get(k)), tags.get(j)) {
            if a.0 < b.0 || (a.0 == b.0 && a.1 <= b.1) {
                break;
            }
            tags.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// Appends the head and the sorted `tags`, each once, with the line's container id merged in
/// at its place.
#[inline(always)]
fn push_tagged(
    out: &mut Vec<u8>,
    line: &MetricLine<'_>,
    name: &[u8],
    host: Option<&[u8]>,
    scope: Scope,
    tags: &[Tag<'_>],
) {
    push_head(
        out,
        line.kind.index() as u8,
        scope,
        line_ts(line),
        host,
        name,
    );
    let mut container = line.container_id;
    let mut prev: Option<Tag<'_>> = None;
    for &(prefix, t) in tags {
        if let Some(id) = container {
            match cmp_container(id, t) {
                Ordering::Less => {
                    out.extend_from_slice(CONTAINER_PREFIX);
                    push_part(out, id);
                    container = None;
                }
                // The same tag sent literally: written once, below.
                Ordering::Equal => container = None,
                Ordering::Greater => {}
            }
        }
        if prev.is_some_and(|(p, pt)| p == prefix && pt == t) {
            continue;
        }
        push_part(out, t);
        prev = Some((prefix, t));
    }
    if let Some(id) = container {
        out.extend_from_slice(CONTAINER_PREFIX);
        push_part(out, id);
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
    push_head(
        out,
        kind.index() as u8,
        scope,
        timestamp,
        host.map(str::as_bytes),
        name.as_bytes(),
    );
    for t in tags {
        push_part(out, t.as_bytes());
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
    use smallvec::SmallVec;

    /// Every output bit flips with probability near ½ when any one input bit flips, at every
    /// length the hash's branches treat differently.
    #[test]
    fn hash_key_avalanches() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in [1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 64, 100] {
            let mut flips = [0u32; 64];
            let mut trials = 0u32;
            for _ in 0..40 {
                let key: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let h = hash_key(&key);
                for bit in 0..len * 8 {
                    let mut k = key.clone();
                    k[bit / 8] ^= 1 << (bit % 8);
                    let d = h ^ hash_key(&k);
                    for (o, f) in flips.iter_mut().enumerate() {
                        *f += u32::from(d >> o & 1 == 1);
                    }
                    trials += 1;
                }
            }
            for (o, &f) in flips.iter().enumerate() {
                let p = f64::from(f) / f64::from(trials);
                assert!(
                    (0.4..0.6).contains(&p),
                    "len {len}: output bit {o} flips {p:.3}"
                );
            }
        }
    }

    /// Keys that differ only in a counter (the usual statsd shape) spread evenly over the bits
    /// the table (top 7, low) and the shards (from bit 32) use.
    #[test]
    fn hash_key_spreads_similar_keys() {
        for prefix in [
            "",
            "load.c.m",
            "load.ms.m",
            "some.longer.service.name.requests.m",
        ] {
            let mut top = [0u32; 128];
            let mut low = [0u32; 256];
            let mut shard = [0u32; 256];
            let n = 64 * 1024;
            for i in 0..n {
                let h = hash_key(format!("{prefix}{i:05}").as_bytes());
                top[(h >> 57) as usize] += 1;
                low[(h & 255) as usize] += 1;
                shard[(h >> 32 & 255) as usize] += 1;
            }
            for (what, counts) in [("top", &top[..]), ("low", &low[..]), ("shard", &shard[..])] {
                let expected = f64::from(n) / counts.len() as f64;
                let chi2: f64 = counts
                    .iter()
                    .map(|&c| (f64::from(c) - expected).powi(2) / expected)
                    .sum();
                // Degrees of freedom 127 or 255: a fair spread stays well under 2× that.
                assert!(
                    chi2 < 2.0 * counts.len() as f64,
                    "{prefix:?} {what}: chi² {chi2:.0} over {} cells",
                    counts.len()
                );
            }
        }
    }

    #[test]
    fn series_keys_round_trip_in_place_and_boxed() {
        assert_eq!(std::mem::size_of::<SeriesKey>(), 32);
        for len in [0, 1, 7, 8, INLINE_KEY - 1, INLINE_KEY, INLINE_KEY + 1, 300] {
            let key: Vec<u8> = (0..len).map(|i| (i % 251 + 1) as u8).collect();
            let inline = len <= INLINE_KEY;
            // What `Aggregator::apply` decides a heap key's prefetch on.
            assert_eq!(SeriesKey::fits_in_place(len), inline, "length {len}");
            for stored in [
                SeriesKey::new(&key),
                SeriesKey::from_boxed(key.clone().into()),
            ] {
                assert_eq!(stored.as_bytes(), &key[..], "length {len}");
                assert_eq!(
                    matches!(stored, SeriesKey::Inline { .. }),
                    inline,
                    "length {len}"
                );
                assert!(same_key(&stored, &key));
            }
        }
    }

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
            weight: 1.0,
            tags: tags.iter().map(|t| t.as_bytes()).collect(),
            container_id: None,
            timestamp: None,
            origin: None,
        }
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

    /// The encoding before tags were sorted as borrowed slices: the oracle `encode_key` must
    /// match byte for byte.
    fn encode_key_reference(out: &mut Vec<u8>, line: &MetricLine<'_>) {
        let mut tags: SmallVec<[TagRef<'_>; 16]> = SmallVec::new();
        let (host, scope) = split_tags(line.tags.iter().copied(), |t| {
            tags.push(TagRef {
                prefix: b"",
                rest: t,
            })
        });
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

    #[test]
    fn container_id_against_every_kind_of_tag() {
        let tags = [
            "",
            "c",
            "container_id",
            "container_id:",
            "container_id:a",
            "container_id:abc",
            "container_id:abd",
            "container_id:ab",
            "container_idz",
            "container_iD:x",
            "d:1",
            "b",
        ];
        for id in ["a", "ab", "abc", "abd", "zz"] {
            for i in 0..tags.len() {
                for j in 0..tags.len() {
                    let mut l = line("x", MetricType::Counter, &[tags[i], tags[j], "host:h"]);
                    l.container_id = Some(id.as_bytes());
                    l.tags.retain(|t| !t.is_empty());
                    let mut reference = Vec::new();
                    encode_key_reference(&mut reference, &l);
                    assert_eq!(key(&l), reference, "{id} {} {}", tags[i], tags[j]);
                }
            }
        }
    }

    /// `split_tags` as first written, three prefix tests per tag: the first-byte dispatch must
    /// sort every tag the same way.
    fn split_tags_reference(tags: &[&[u8]]) -> (Option<Vec<u8>>, Scope, Vec<Vec<u8>>) {
        let (mut host, mut scope, mut rest) = (None, Scope::Default, Vec::new());
        for t in tags {
            if let Some(h) = t.strip_prefix(b"host:") {
                host = Some(h.to_vec());
            } else if is_magic(t, b"veneurglobalonly") {
                scope = Scope::GlobalOnly;
            } else if is_magic(t, b"veneurlocalonly") {
                scope = Scope::LocalOnly;
            } else {
                rest.push(t.to_vec());
            }
        }
        (host, scope, rest)
    }

    #[test]
    fn split_tags_matches_prefix_tests() {
        let tags: [&[u8]; 14] = [
            b"host:a",
            b"host:",
            b"host",
            b"hostname:b",
            b"h",
            b"veneurglobalonly",
            b"veneurglobalonly:x",
            b"veneurglobalonlyx",
            b"veneurlocalonly",
            b"veneurlocalonly:",
            b"veneur",
            b"v",
            b"env:prod",
            b"",
        ];
        for a in tags {
            for b in tags {
                let mut rest = Vec::new();
                let (host, scope) = split_tags([a, b].into_iter(), |t| rest.push(t.to_vec()));
                let got = (host.map(<[u8]>::to_vec), scope, rest);
                assert_eq!(got, split_tags_reference(&[a, b]), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn sort_prefix_orders_as_the_bytes_do() {
        let tags: [&[u8]; 14] = [
            b"",
            b"a",
            b"ab",
            b"abc",
            b"abcd",
            b"abce",
            b"abcde",
            b"abcdef",
            b"abcdefg",
            b"abcdefgh",
            b"abcdefgha",
            b"abcdefgi",
            b"b",
            b"\xff",
        ];
        for a in tags {
            for b in tags {
                let (pa, pb) = (sort_prefix(a), sort_prefix(b));
                let mut padded = a.get(..8).unwrap_or(a).to_vec();
                padded.resize(8, 0);
                let want = u64::from_be_bytes(padded.try_into().unwrap_or_default());
                assert_eq!(pa, want, "{a:?}");
                assert!(pa == pb || pa.cmp(&pb) == a.cmp(b), "{a:?} {b:?}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn encoding_matches_the_reference(
            name in "[a-z.]{1,40}",
            kind in proptest::sample::select(MetricType::ALL.to_vec()),
            tags in proptest::collection::vec(
                "(host:[a-z]{0,3}|host|ho|veneur(global|local)?(only)?(:[a-z]{0,2})?|container_id(:[a-c]{0,3})?|[a-c:]{0,5}|[ab]{6,11})",
                0..20,
            ),
            container in proptest::option::of("[a-c]{1,12}"),
            timestamp in proptest::option::of(1u64..u64::MAX),
        ) {
            let mut l = line(&name, kind, &[]);
            l.tags = tags.iter().map(|t| t.as_bytes()).collect();
            l.container_id = container.as_deref().map(str::as_bytes);
            l.timestamp = timestamp;
            let mut reference = vec![7];
            encode_key_reference(&mut reference, &l);
            let mut encoded = vec![7];
            encode_key(&mut encoded, &l);
            proptest::prop_assert_eq!(encoded, reference);
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
    fn the_last_host_tag_wins_and_none_is_kept() {
        let k = key(&line(
            "x",
            MetricType::Counter,
            &["host:a", "env:prod", "host:b"],
        ));
        let p = KeyParts::decode(&k).unwrap();
        assert_eq!(p.host, Some("b"));
        assert_eq!(p.tags().collect::<Vec<_>>(), ["env:prod"]);
        let k = key(&line("x", MetricType::Counter, &["host:a", "host:"]));
        assert_eq!(KeyParts::decode(&k).unwrap().host, Some(""));
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
    fn same_key_is_equality() {
        let keys: Vec<Vec<u8>> = (0..40)
            .flat_map(|n| {
                let base: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
                let mut variants = vec![base.clone()];
                for i in 0..n {
                    let mut v = base.clone();
                    v[i] ^= 1;
                    variants.push(v);
                }
                variants
            })
            .collect();
        for a in &keys {
            for b in &keys {
                assert_eq!(same_key(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(KeyParts::decode(b"").is_none());
        assert!(KeyParts::decode(&[9, 0, 0, b'a', 0]).is_none());
        assert!(KeyParts::decode(&[0, 0, 1, 1, 2]).is_none());
    }
}
