//! Whole runs of the plainest setup: UDP in, one `http` sink to a [`CaptureServer`] out, stopped
//! with SIGTERM so everything sent lands in the final flush.

use std::time::Duration;

use serde_json::Value;

use super::capture::{Behaviour, CaptureServer};
use super::clock::avoid_boundary;
use super::meterd::Meterd;
use super::points::metric_points;

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

/// Config with UDP and HTTP on port 0, `hostname = "test-host"`, two readers and an `http` sink
/// to `url`; `extra` goes at the top level and `ingest` into `[ingest]`.
pub fn config(url: &str, interval: &str, extra: &str, ingest: &str) -> String {
    format!(
        r#"
hostname = "test-host"
interval = "{interval}"
{extra}
[ingest]
statsd_udp = ["127.0.0.1:0"]
readers = 2
{ingest}
[http]
listen = "127.0.0.1:0"
[[sinks]]
type = "http"
url = "{url}/series"
"#
    )
}

/// A meterd on [`config`] with a one-hour interval (started away from its boundary) that also
/// listens on the Unix datagram socket `meterd.sock` in its directory, `ingest` added to
/// `[ingest]`, and sinks to a new capture server; and that socket's path.
pub fn start_unix(ingest: &str) -> (Meterd, CaptureServer, std::path::PathBuf) {
    avoid_boundary(Duration::from_secs(3600), Duration::from_secs(10));
    let capture = CaptureServer::start(Behaviour::Ok);
    let ingest = format!("statsd_unix = [\"@DIR@/meterd.sock\"]\n{ingest}");
    let m = Meterd::start(&config(&capture.url(), "1h", "", &ingest));
    let path = m.dir.path().join("meterd.sock");
    (m, capture, path)
}

/// The final-flush pattern with a one-hour interval; returns every metric point.
pub fn one_flush(extra: &str, ingest: &str, send: impl FnOnce(&Meterd)) -> Vec<Value> {
    avoid_boundary(Duration::from_secs(3600), Duration::from_secs(10));
    let (m, capture) = run_to_exit(|url| config(url, "1h", extra, ingest), send);
    assert_eq!(
        capture.requests_to("/series").len(),
        1,
        "one flush expected:\n{}",
        m.log()
    );
    metric_points(&capture)
}
