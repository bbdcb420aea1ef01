//! Whole runs of the plainest setup: UDP in, one `http` sink to a [`CaptureServer`] out, stopped
//! with SIGTERM so everything sent lands in the final flush.

use super::capture::{Behaviour, CaptureServer};
use super::meterd::Meterd;

/// The final-flush pattern: starts a capture server and meterd with `config(capture_url)`,
/// runs `send`, then stops meterd with SIGTERM and asserts it exited 0. With `interval = "1h"`
/// (after [`avoid_boundary`]) everything lands in the one flush that SIGTERM triggers.
pub fn run_to_exit(
    config: impl FnOnce(&str) -> String,
    send: impl FnOnce(&Meterd),
) -> (Meterd, CaptureServer) {
    let capture = CaptureServer::start(Behaviour::Ok);
    let mut m = Meterd::start(&config(&capture.url()));
    send(&m);
    let status = m.terminate();
    assert!(
        status.success(),
        "meterd exited with {status}:\n{}",
        m.log()
    );
    (m, capture)
}
