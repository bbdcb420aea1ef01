//! Set (`s`) state: a mergeable count of distinct members.
//!
//! Exact up to 128 distinct members, then a HyperLogLog with 2^14 six-bit registers (about 0.8 %
//! standard error, 12 KiB): `docs/protocol.md#edge-cases` promises exact up to 128 members and
//! within 2 % above.
//!
//! A member is kept as a 31-bit encoding of its 64-bit hash: 25 low bits of the hash above a
//! 6-bit rank (one more than the trailing ones above the register index bits). The encoding, the
//! register packing, the HyperLogLog's words and the `(data, words)` form a sketch travels in are
//! those of Cloudflare's `cardinality-estimator` at precision 14 and width 6, which meterd used
//! before: instances before and after exchange sketches (`forward::proto::SetSketchState`). That
//! crate keeps its arrays behind integers tagged as pointers, which Miri reports as undefined
//! behaviour, and frees them with a layout a deserialised vector had to happen to match; this is
//! the same sketch in safe code, checked against the crate in the tests.
//!
//! The exact form is an open-addressed table (linear probing from the encoded hash's index
//! bits) of 4 to 128 slots, doubled when full: the same memory as the crate's array, where a
//! member already counted is looked for from its own slot instead of in a scan over every member.

/// Register index bits.
const P: u32 = 14;
/// Register width in bits.
const W: u32 = 6;
/// Registers.
const M: usize = 1 << P;
/// Words of a HyperLogLog: the number of zero registers, the harmonic sum of the registers
/// (`f32` bits), the registers packed `W` bits each, and one spare word so that a register
/// straddling two words is always read as a pair.
const HLL_WORDS: usize = M * W as usize / 32 + 3;
/// Most distinct members counted exactly.
const EXACT: usize = 128;
/// The two low bits of the data word: which form the words hold.
const TAG_SMALL: u64 = 0;
const TAG_TABLE: u64 = 1;
const TAG_HLL: u64 = 3;
/// An encoded hash in the small form's data word.
const SMALL_MASK: u64 = 0x7fff_ffff;

/// Distinct members of one set series in one interval.
#[derive(Clone, Default)]
pub struct SetSketch(Repr);

/// The exact forms hold encoded hashes in slots, 0 marking a free one (an encoded hash never is
/// 0: its rank is at least 1).
#[derive(Clone)]
enum Repr {
    /// At most two, filled in order.
    Small([u32; 2]),
    /// Open-addressed tables, each slot probed from the encoded hash's index bits.
    T4(Box<[u32; 4]>),
    T8(Box<[u32; 8]>),
    T16(Box<[u32; 16]>),
    T32(Box<[u32; 32]>),
    T64(Box<[u32; 64]>),
    T128(Box<[u32; 128]>),
    Hll(Box<[u32; HLL_WORDS]>),
}

impl Default for Repr {
    fn default() -> Repr {
        Repr::Small([0, 0])
    }
}

/// Counts `h` in `slots`, probing from its home slot when `hashed` (else from the first);
/// false when it is new and every slot is taken.
#[inline]
fn insert_slot(slots: &mut [u32], hashed: bool, h: u32) -> bool {
    let mask = slots.len() - 1;
    let mut i = if hashed { (h >> W) as usize & mask } else { 0 };
    for _ in 0..slots.len() {
        let Some(slot) = slots.get_mut(i) else {
            break;
        };
        if *slot == h {
            return true;
        }
        if *slot == 0 {
            *slot = h;
            return true;
        }
        i = (i + 1) & mask;
    }
    false
}

/// A table of `N` slots holding `items` (at most `N` distinct, as the caller ensures).
fn table<const N: usize>(items: impl Iterator<Item = u32>) -> Box<[u32; N]> {
    let mut slots = Box::new([0; N]);
    for h in items {
        insert_slot(&mut slots[..], true, h);
    }
    slots
}

/// The encoding of a member's 64-bit hash (see the module's documentation).
#[inline]
fn encode(hash: u64) -> u32 {
    let index = (hash as u32) & ((1 << (32 - W - 1)) - 1);
    let rank = (!hash >> P).trailing_zeros() + 1;
    (index << W) | rank
}

impl SetSketch {
    /// An empty set.
    pub fn new() -> SetSketch {
        SetSketch(Repr::Small([0, 0]))
    }

    /// Counts a member by its hash ([`hash_member`]).
    #[inline]
    pub fn insert_hash(&mut self, hash: u64) {
        self.insert_encoded(encode(hash));
    }

    /// The slots of the exact forms (none for the HyperLogLog).
    fn slots(&self) -> &[u32] {
        match &self.0 {
            Repr::Small(s) => s,
            Repr::T4(t) => &t[..],
            Repr::T8(t) => &t[..],
            Repr::T16(t) => &t[..],
            Repr::T32(t) => &t[..],
            Repr::T64(t) => &t[..],
            Repr::T128(t) => &t[..],
            Repr::Hll(_) => &[],
        }
    }

    /// The encoded hashes of the exact forms, in slot order.
    fn items(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots().iter().copied().filter(|&h| h != 0)
    }

    /// Counts an encoded hash, moving to the next form when the current one is full.
    fn insert_encoded(&mut self, h: u32) {
        let (slots, hashed): (&mut [u32], bool) = match &mut self.0 {
            Repr::Hll(words) => return hll_insert(words, h),
            Repr::Small(s) => (s, false),
            Repr::T4(t) => (&mut t[..], true),
            Repr::T8(t) => (&mut t[..], true),
            Repr::T16(t) => (&mut t[..], true),
            Repr::T32(t) => (&mut t[..], true),
            Repr::T64(t) => (&mut t[..], true),
            Repr::T128(t) => (&mut t[..], true),
        };
        if insert_slot(slots, hashed, h) {
            return;
        }
        let items = self.items().chain([h]);
        self.0 = match self.slots().len() {
            2 => Repr::T4(table(items)),
            4 => Repr::T8(table(items)),
            8 => Repr::T16(table(items)),
            16 => Repr::T32(table(items)),
            32 => Repr::T64(table(items)),
            64 => Repr::T128(table(items)),
            _ => Repr::Hll(hll_of(items)),
        };
    }

    /// Distinct members: exact up to 128, estimated above.
    pub fn estimate(&self) -> usize {
        match &self.0 {
            Repr::Hll(words) => hll_estimate(words),
            _ => self.items().count(),
        }
    }

    /// Adds `rhs`'s members: the union, exact while it has at most 128 members.
    pub fn merge(&mut self, rhs: &SetSketch) {
        match (&mut self.0, &rhs.0) {
            (Repr::Hll(lhs), Repr::Hll(rhs)) => {
                for idx in 0..M {
                    let (l, r) = (register(lhs, idx), register(rhs, idx));
                    if r > l {
                        set_register(lhs, idx, l, r);
                    }
                }
            }
            (_, Repr::Hll(words)) => {
                let mut words = words.clone();
                for h in self.items() {
                    hll_insert(&mut words, h);
                }
                self.0 = Repr::Hll(words);
            }
            _ => {
                for h in rhs.items() {
                    self.insert_encoded(h);
                }
            }
        }
    }

    /// The sketch as it travels between instances: a data word (two low bits: the form; the
    /// small form's two encoded hashes above them) and the words of the other forms.
    pub fn to_wire(&self) -> (u64, Option<Vec<u32>>) {
        match &self.0 {
            Repr::Small([a, b]) => ((u64::from(*a) << 2) | (u64::from(*b) << 33), None),
            Repr::Hll(words) => (TAG_HLL, Some(words.to_vec())),
            _ => (TAG_TABLE, Some(self.items().collect())),
        }
    }

    /// Reads [`SetSketch::to_wire`]'s form (or `cardinality-estimator`'s serde form, the same
    /// thing); an error says what is malformed.
    pub fn from_wire(data: u64, words: Option<&[u32]>) -> Result<SetSketch, String> {
        let mut s = SetSketch::new();
        match (data & 3, words) {
            (TAG_SMALL, None) => {
                for h in [(data >> 2) & SMALL_MASK, (data >> 33) & SMALL_MASK] {
                    if h != 0 {
                        s.insert_encoded(h as u32);
                    }
                }
            }
            (TAG_TABLE, Some(words)) if (3..=EXACT).contains(&words.len()) => {
                for &h in words.iter().filter(|&&h| h != 0) {
                    s.insert_encoded(h);
                }
            }
            (TAG_HLL, Some(words)) => {
                let words: Box<[u32; HLL_WORDS]> = words
                    .to_vec()
                    .into_boxed_slice()
                    .try_into()
                    .map_err(|w: Box<[u32]>| {
                        format!("a HyperLogLog of {} words, not {HLL_WORDS}", w.len())
                    })?;
                let (zeros, sum) = (words[0] as usize, f32::from_bits(words[1]));
                if zeros > M || !(sum.is_finite() && sum > 0.0) {
                    return Err(format!(
                        "a HyperLogLog with {zeros} zero registers and harmonic sum {sum}"
                    ));
                }
                s.0 = Repr::Hll(words);
            }
            (tag, words) => {
                return Err(format!(
                    "form {tag} with {} words",
                    words.map_or("no".to_owned(), |w| w.len().to_string())
                ))
            }
        }
        Ok(s)
    }
}

impl std::fmt::Debug for SetSketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let form = match &self.0 {
            Repr::Small(_) => "small",
            Repr::Hll(_) => "HyperLogLog",
            _ => "table",
        };
        write!(f, "SetSketch({form}, {})", self.estimate())
    }
}

/// A HyperLogLog holding `items`.
fn hll_of(items: impl Iterator<Item = u32>) -> Box<[u32; HLL_WORDS]> {
    let mut words = Box::new([0u32; HLL_WORDS]);
    words[0] = M as u32;
    words[1] = (M as f32).to_bits();
    for h in items {
        hll_insert(&mut words, h);
    }
    words
}

/// Raises the register `h` indexes to `h`'s rank.
#[inline]
fn hll_insert(words: &mut [u32; HLL_WORDS], h: u32) {
    let rank = h & ((1 << W) - 1);
    let idx = ((h >> W) as usize) & (M - 1);
    let old = register(words, idx);
    if rank > old {
        set_register(words, idx, old, rank);
    }
}

/// The two words register `idx` starts in, as one number, and its bit offset there.
#[inline]
fn register_pair(words: &[u32; HLL_WORDS], idx: usize) -> (usize, u64, u32) {
    let bit = idx * W as usize;
    let (at, shift) = (bit / 32 + 2, (bit % 32) as u32);
    let word = |i: usize| u64::from(words.get(i).copied().unwrap_or(0));
    (at, word(at) | (word(at + 1) << 32), shift)
}

#[inline]
fn register(words: &[u32; HLL_WORDS], idx: usize) -> u32 {
    let (_, pair, shift) = register_pair(words, idx);
    ((pair >> shift) & ((1 << W) - 1)) as u32
}

/// Sets register `idx` from `old` to `new`, keeping the zero count and the harmonic sum (in
/// `f32`, updated as `cardinality-estimator` does, so both give the same estimate).
#[inline]
fn set_register(words: &mut [u32; HLL_WORDS], idx: usize, old: u32, new: u32) {
    let (at, pair, shift) = register_pair(words, idx);
    let pair = (pair & !(((1 << W) - 1) << shift)) | (u64::from(new) << shift);
    for (i, part) in [(at, pair as u32), (at + 1, (pair >> 32) as u32)] {
        if let Some(w) = words.get_mut(i) {
            *w = part;
        }
    }
    if old == 0 && words[0] > 0 {
        words[0] -= 1;
    }
    let mut sum = f32::from_bits(words[1]);
    sum -= 1.0 / ((1u64 << old) as f32);
    sum += 1.0 / ((1u64 << new) as f32);
    words[1] = sum.to_bits();
}

/// The LogLog-Beta estimate (Qin et al. 2016, arXiv:1612.02284) from the zero count and the
/// harmonic sum.
fn hll_estimate(words: &[u32; HLL_WORDS]) -> usize {
    /// The paper's bias polynomial for precision 14.
    #[allow(clippy::excessive_precision)]
    const BETA: [f64; 8] = [
        -3.71009760230692e-01,
        9.78811941207509e-03,
        1.85796293324165e-01,
        2.03015527328432e-01,
        -1.16710521803686e-01,
        4.31106699492820e-02,
        -5.99583540511831e-03,
        4.49704299509437e-04,
    ];
    let m = M as f64;
    let zeros = f64::from(words[0]);
    let sum = f64::from(f32::from_bits(words[1]));
    let zl = (zeros + 1.0).ln();
    let beta = BETA[1..].iter().rev().fold(0.0, |acc, b| acc * zl + b) * zl + BETA[0] * zeros;
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let estimate = alpha * (m * (m - zeros)) / (sum + beta);
    (estimate + 0.5) as usize
}

/// Hashes a set member for [`SetSketch::insert_hash`]; done on the reader thread, outside locks.
#[inline]
pub fn hash_member(member: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    // A fixed seed: the same member hashes the same on every instance, so sketches merge.
    foldhash::quality::FixedState::with_seed(0x6d65_7465_7264).hash_one(member)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch_of(n: u64) -> SetSketch {
        let mut s = SetSketch::new();
        for i in 0..n {
            s.insert_hash(hash_member(format!("member-{i}").as_bytes()));
        }
        s
    }

    #[test]
    fn exact_up_to_one_hundred_and_twenty_eight() {
        for n in [0, 1, 2, 3, 4, 5, 50, 99, 100, 127, 128] {
            assert_eq!(sketch_of(n).estimate(), n as usize);
        }
    }

    #[test]
    fn duplicates_count_once() {
        let mut s = SetSketch::new();
        for _ in 0..10 {
            s.insert_hash(hash_member(b"same"));
        }
        assert_eq!(s.estimate(), 1);
        let mut s = sketch_of(100);
        for i in 0..100 {
            s.insert_hash(hash_member(format!("member-{i}").as_bytes()));
        }
        assert_eq!(s.estimate(), 100);
    }

    #[test]
    fn within_two_percent_above() {
        // Fewer under Miri: the interpreter is slow, and the small sizes cover every form.
        let sizes: &[u64] = if cfg!(miri) {
            &[129, 1_000]
        } else {
            &[129, 1_000, 20_000, 200_000]
        };
        for &n in sizes {
            let est = sketch_of(n).estimate() as f64;
            assert!((est - n as f64).abs() / (n as f64) < 0.02, "{n}: {est}");
        }
    }

    #[test]
    fn merge_equals_union_in_every_pair_of_forms() {
        let of = |range: std::ops::Range<u64>| {
            let mut s = SetSketch::new();
            for i in range {
                s.insert_hash(hash_member(&i.to_le_bytes()));
            }
            s
        };
        // (a's members, b's members): small, table, HyperLogLog on either side.
        let cases: &[(std::ops::Range<u64>, std::ops::Range<u64>)] = &[
            (0..2, 1..3),
            (0..2, 0..100),
            (0..100, 50..120),
            (0..100, 50..200),
            (0..2, 0..5_000),
            (0..100, 0..5_000),
            (0..5_000, 2_500..7_500),
            (0..5_000, 0..2),
        ];
        for (a, b) in cases {
            let union = (a.start.min(b.start)..a.end.max(b.end)).count() as f64;
            let mut x = of(a.clone());
            x.merge(&of(b.clone()));
            let est = x.estimate() as f64;
            if union <= EXACT as f64 {
                assert_eq!(est, union, "{a:?} ∪ {b:?}");
            } else {
                assert!((est - union).abs() / union < 0.02, "{a:?} ∪ {b:?}: {est}");
            }
        }
    }

    #[test]
    fn every_form_survives_the_wire() {
        for n in [0, 1, 2, 3, 100, 128, 129, 5_000] {
            let s = sketch_of(n);
            let (data, words) = s.to_wire();
            let back = SetSketch::from_wire(data, words.as_deref()).unwrap();
            assert_eq!(back.estimate(), s.estimate(), "{n}");
            // A table's slots may come back in another order (probing depends on it).
            let sorted = |(d, w): (u64, Option<Vec<u32>>)| {
                let mut w = w.unwrap_or_default();
                w.sort_unstable();
                (d, w)
            };
            assert_eq!(sorted(back.to_wire()), sorted((data, words)), "{n}");
        }
    }

    #[test]
    fn malformed_wire_forms_are_refused() {
        let hll = sketch_of(5_000).to_wire().1.unwrap();
        let mut zeros = hll.clone();
        zeros[0] = M as u32 + 1;
        let mut sum = hll.clone();
        sum[1] = f32::NAN.to_bits();
        let bad: [(u64, Option<&[u32]>); 7] = [
            (0, Some(&[1, 2, 3])),
            (1, None),
            (1, Some(&[1, 2])),
            (1, Some(&[7; 129])),
            (2, Some(&[1, 2, 3])),
            (3, Some(&hll[1..])),
            (3, Some(&zeros)),
        ];
        for (data, words) in bad {
            assert!(
                SetSketch::from_wire(data, words).is_err(),
                "{data} {words:?}"
            );
        }
        assert!(SetSketch::from_wire(3, Some(&sum)).is_err());
    }

    #[test]
    fn a_set_takes_no_more_room_in_a_state_than_a_pointer_and_a_tag() {
        assert_eq!(std::mem::size_of::<SetSketch>(), 16);
        assert_eq!(std::mem::size_of::<super::super::State>(), 16);
    }

    /// The same members in the same order give the crate's forms and estimates, and each side
    /// reads the other's wire form (instances before and after this module exchange sketches).
    #[cfg(not(miri))]
    mod against_cardinality_estimator {
        use super::*;
        use proptest::prelude::*;

        type Crate = cardinality_estimator::CardinalityEstimator<[u8], wyhash::WyHash, 14, 6>;

        fn crate_wire(c: &Crate) -> (u64, Option<Vec<u32>>) {
            serde_json::from_value(serde_json::to_value(c).unwrap()).unwrap()
        }

        fn both(hashes: &[u64]) -> (SetSketch, Crate) {
            let (mut ours, mut theirs) = (SetSketch::new(), Crate::new());
            for &h in hashes {
                ours.insert_hash(h);
                theirs.insert_hash(h);
            }
            (ours, theirs)
        }

        /// `n` hashes drawn from `distinct` values, so members repeat.
        fn hashes(distinct: u64, n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u64>> {
            (any::<u64>(), prop::collection::vec(0..distinct, n)).prop_map(|(seed, picks)| {
                picks
                    .into_iter()
                    .map(|p| hash_member(&(p ^ seed).to_le_bytes()))
                    .collect()
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            #[test]
            fn exact_forms_agree(hs in hashes(200, 0..400usize)) {
                let (ours, theirs) = both(&hs);
                prop_assert_eq!(ours.estimate(), theirs.estimate());
                let (data, words) = crate_wire(&theirs);
                let (our_data, our_words) = ours.to_wire();
                prop_assert_eq!(our_data & 3, data & 3);
                if theirs.estimate() <= EXACT {
                    let mut a = our_words.clone().unwrap_or_default();
                    let mut b = words.clone().unwrap_or_default();
                    a.sort_unstable();
                    b.sort_unstable();
                    prop_assert_eq!(a, b);
                    if data & 3 == TAG_SMALL {
                        prop_assert_eq!(our_data, data);
                    }
                }
            }

            #[test]
            fn hyperloglogs_agree(hs in hashes(1 << 40, 129..3_000usize)) {
                let (ours, theirs) = both(&hs);
                let (_, words) = crate_wire(&theirs);
                let (_, our_words) = ours.to_wire();
                let (words, our_words) = (words.unwrap(), our_words.unwrap());
                // The registers and the zero count agree exactly; the harmonic sum is added up
                // in another order when the table turns into registers, so it (and the
                // estimate) may differ in the last bits.
                prop_assert_eq!(&our_words[2..], &words[2..]);
                prop_assert_eq!(our_words[0], words[0]);
                let (a, b) = (ours.estimate() as f64, theirs.estimate() as f64);
                prop_assert!((a - b).abs() <= 1.0 + b * 1e-6, "{} vs {}", a, b);
            }

            #[test]
            fn wire_forms_cross(hs in hashes(1 << 40, 0..400usize)) {
                let (ours, theirs) = both(&hs);
                let (data, words) = crate_wire(&theirs);
                let data = if data & 3 == 0 { data } else { data & 3 };
                let read = SetSketch::from_wire(data, words.as_deref()).unwrap();
                prop_assert_eq!(read.estimate(), theirs.estimate());
                let (data, words) = ours.to_wire();
                let text = serde_json::to_string(&(data, words)).unwrap();
                let read: Crate = serde_json::from_str(&text).unwrap();
                prop_assert_eq!(read.estimate(), ours.estimate());
            }

            #[test]
            fn merges_agree(a in hashes(1 << 40, 0..300usize), b in hashes(1 << 40, 0..300usize)) {
                let (mut ours, mut theirs) = both(&a);
                let (ours_b, theirs_b) = both(&b);
                ours.merge(&ours_b);
                theirs.merge(&theirs_b);
                let (x, y) = (ours.estimate() as f64, theirs.estimate() as f64);
                prop_assert!((x - y).abs() <= 1.0 + y * 1e-6, "{} vs {}", x, y);
            }
        }
    }
}
