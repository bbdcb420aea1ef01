//! Retry policy for sink deliveries: exponential backoff with jitter between attempts, and the
//! retryable/permanent decision, which is a property of the [`SinkError`].
//!
//! Retryable: timeouts, connection failures, broken connections, HTTP 429 and 5xx. Permanent:
//! other non-2xx statuses (the same request would fail again), encode errors, invalid requests.
//! The runner in [`super`] bounds all attempts of one batch by the flush interval.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use reqwest::StatusCode;

use super::SinkError;

/// Backoff before the first retry.
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Longest backoff between two attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Exponential backoff (×2 from [`INITIAL_BACKOFF`], capped at [`MAX_BACKOFF`]) with "equal
/// jitter": each delay is uniformly drawn from the upper half of the current step, so sinks that
/// failed together do not retry in lockstep, and no delay is shorter than half its step.
#[derive(Debug)]
pub(crate) struct Backoff {
    step: Duration,
    rng: u64,
}

impl Backoff {
    /// A fresh backoff, starting at [`INITIAL_BACKOFF`].
    pub(crate) fn new() -> Self {
        // Seeded per backoff from std's randomly keyed hasher; jitter needs no crypto quality.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Backoff {
            step: INITIAL_BACKOFF,
            rng: seed | 1,
        }
    }

    /// The delay before the next attempt; doubles the step for the one after.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(MAX_BACKOFF);
        let half = step / 2;
        let half_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(self.next_random() % half_nanos.saturating_add(1))
    }

    /// xorshift64*.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Whether an HTTP status is worth another attempt: 429 Too Many Requests and every 5xx.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

impl SinkError {
    /// Whether the same request may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Timeout(_) | SinkError::Connect(_) | SinkError::Request(_) => true,
            SinkError::Status(status) => is_retryable_status(*status),
            SinkError::InvalidRequest(_) | SinkError::Encode(_) => false,
            SinkError::Io(err) => matches!(
                err.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
            ),
        }
    }

    /// Classifies a reqwest failure. The URL is stripped from the message: it may hold a secret
    /// expanded from `${ENV}`.
    pub(crate) fn from_reqwest(err: reqwest::Error) -> SinkError {
        let err = err.without_url();
        let message = error_chain(&err);
        if err.is_builder() {
            SinkError::InvalidRequest(message)
        } else if err.is_connect() {
            SinkError::Connect(message)
        } else {
            SinkError::Request(message)
        }
    }
}

/// `err` and its sources joined by `: `, so "error sending request" says why.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // hyper and reqwest sometimes repeat their source's text; keep it once.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut backoff = Backoff::new();
        let mut step = INITIAL_BACKOFF;
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} outside {step:?}"
            );
            step = (step * 2).min(MAX_BACKOFF);
        }
        assert_eq!(backoff.step, MAX_BACKOFF);
    }

    #[test]
    fn backoff_is_jittered() {
        let delays: Vec<Duration> = (0..8).map(|_| Backoff::new().next_delay()).collect();
        assert!(
            delays.iter().any(|d| *d != delays[0]),
            "8 fresh backoffs gave the same delay: {delays:?}"
        );
    }

    #[test]
    fn retryable_statuses() {
        for code in [429, 500, 502, 503, 504] {
            let status = StatusCode::from_u16(code).expect("status");
            assert!(SinkError::Status(status).is_retryable(), "{code}");
        }
        for code in [400, 401, 403, 404, 413, 301] {
            let status = StatusCode::from_u16(code).expect("status");
            assert!(!SinkError::Status(status).is_retryable(), "{code}");
        }
    }

    #[test]
    fn retryable_kinds() {
        assert!(SinkError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(SinkError::Connect("refused".into()).is_retryable());
        assert!(SinkError::Request("reset".into()).is_retryable());
        assert!(!SinkError::Encode("bad".into()).is_retryable());
        assert!(!SinkError::InvalidRequest("bad".into()).is_retryable());
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(!SinkError::Io(pipe).is_retryable());
        let interrupted = std::io::Error::from(std::io::ErrorKind::Interrupted);
        assert!(SinkError::Io(interrupted).is_retryable());
    }

    #[test]
    fn error_chain_includes_sources() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(inner);
        assert_eq!(error_chain(&outer), "refused");
        #[derive(Debug, thiserror::Error)]
        #[error("sending failed")]
        struct Outer(#[source] std::io::Error);
        let err = Outer(std::io::Error::other("connection reset"));
        assert_eq!(error_chain(&err), "sending failed: connection reset");
    }
}
