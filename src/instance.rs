//! This process's identity: a random id drawn once at start (a leaf).
//!
//! Forwarded imports carry it so a global can tell a retry of an import it already merged from a
//! new one (`docs/fleet.md#exactly-once`), and sink requests carry it in their `Idempotency-Key`
//! (`docs/sinks.md`). It changes on every start: a restarted local is a new sender whose
//! intervals a global has never seen.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// The id as 16 lowercase hex digits, the same for the life of the process.
pub fn instance_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| format!("{:016x}", draw()))
}

/// 64 random bits: std's per-process random hasher keys (seeded from the OS), mixed with the
/// clock and the pid so two processes started in one nanosecond still differ.
fn draw() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_within_a_process_and_hex() {
        let a = instance_id();
        assert_eq!(a, instance_id());
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(draw(), draw());
    }
}
