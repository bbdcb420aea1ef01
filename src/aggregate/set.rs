//! Set (`s`) state: a mergeable cardinality sketch.
//!
//! Cloudflare's `cardinality-estimator` keeps up to 128 distinct 32-bit encoded hashes exactly and
//! then switches to a HyperLogLog with 2^14 registers (about 0.8 % standard error, 12 KiB), which
//! meets `docs/protocol.md#edge-cases`: exact below 100 members, within 2 % above.

use cardinality_estimator::CardinalityEstimator;

/// 2^14 registers of 6 bits.
pub type SetSketch = CardinalityEstimator<[u8], wyhash::WyHash, 14, 6>;

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
    fn exact_below_one_hundred() {
        for n in [1, 2, 3, 50, 99, 100] {
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
    }

    #[test]
    fn within_two_percent_above() {
        for n in [1_000u64, 20_000, 200_000] {
            let est = sketch_of(n).estimate() as f64;
            assert!((est - n as f64).abs() / (n as f64) < 0.02, "{n}: {est}");
        }
    }

    #[test]
    fn merge_equals_union() {
        let mut a = SetSketch::new();
        let mut b = SetSketch::new();
        for i in 0..5000u64 {
            a.insert_hash(hash_member(&i.to_le_bytes()));
            b.insert_hash(hash_member(&(i + 2500).to_le_bytes()));
        }
        a.merge(&b);
        let est = a.estimate() as f64;
        assert!((est - 7500.0).abs() / 7500.0 < 0.02, "{est}");
    }
}
