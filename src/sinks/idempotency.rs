//! Which flush a sink request carries: the `Idempotency-Key` of every HTTP sink request
//! (`docs/sinks.md#retries-and-duplicates`).
//!
//! The runner draws one [`BatchId`] per batch as it takes the batch from its queue; an HTTP sink
//! turns it into one key per request of that batch ([`BatchId::request_key`]) when it encodes the
//! batch, and every attempt sends the request with the key it was encoded with. A receiver that
//! remembers keys can therefore drop a retried request it already stored, and never drops a
//! request it has not seen: every request, including each part of a batch split over several, has
//! a key of its own.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::instance::instance_id;

/// The next batch sequence number of this process, shared by every sink: a SIGHUP restarts the
/// sinks with fresh state, and a per-sink counter starting again at 0 would repeat the keys of
/// the batches before it (same instance, same sink name) to a receiver that remembers them.
static NEXT_SEQ: AtomicU64 = AtomicU64::new(0);

/// A sink's part of its keys: 32 bits of FNV-1a over its name, stable across restarts and
/// reloads, so a receiver can tell two sinks of one meterd apart.
pub(super) fn sink_tag(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// One batch of one sink: unique within the process (the sequence number is never reused), and
/// combined with [`instance_id`] unique across processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BatchId {
    sink: u32,
    seq: u64,
}

impl BatchId {
    /// A new batch of the sink tagged `sink` ([`sink_tag`]).
    pub(super) fn next(sink: u32) -> BatchId {
        BatchId {
            sink,
            seq: NEXT_SEQ.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The key of the batch's request number `part` (from 0, in sending order):
    /// `<instance>-<sink>-<seq>-<part>`, 16 and 8 lowercase hex digits, then two decimal numbers.
    /// ASCII letters, digits and `-` only, so it is a valid header value and JSON string as is.
    pub(super) fn request_key(self, part: usize) -> String {
        format!("{}-{:08x}-{}-{part}", instance_id(), self.sink, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_instance_sink_batch_and_part() {
        let id = BatchId::next(sink_tag("http"));
        let key = id.request_key(3);
        let fields: Vec<&str> = key.split('-').collect();
        assert_eq!(fields.len(), 4, "{key}");
        assert_eq!(fields[0], instance_id());
        assert_eq!(fields[1], format!("{:08x}", sink_tag("http")));
        assert_eq!(fields[2], id.seq.to_string());
        assert_eq!(fields[3], "3");
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
        assert_eq!(key, id.request_key(3), "the same request, the same key");
        assert_ne!(key, id.request_key(4));
    }

    #[test]
    fn batches_never_share_a_key() {
        let a = BatchId::next(sink_tag("http"));
        let b = BatchId::next(sink_tag("http"));
        // A sink restarted by SIGHUP under the same name draws from the same sequence.
        let c = BatchId::next(sink_tag("http"));
        assert_ne!(a.request_key(0), b.request_key(0));
        assert_ne!(b.request_key(0), c.request_key(0));
        assert_ne!(sink_tag("http"), sink_tag("http-2"));
        // FNV-1a's published test vector.
        assert_eq!(sink_tag("a"), 0xe40c_292c);
    }
}
