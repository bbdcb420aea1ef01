//! A cardinality explosion: 10 million distinct series (one name, an exploding tag) over TCP
//! while a few established series keep counting. Resident memory stays under a documented bound
//! (`max_series_per_metric` and `max_series` cap what one interval can hold) and the established
//! series are exact. TCP, so the kernel cannot drop lines and the totals are exact.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

/// Resident-memory bound documented in README ("Operating meterd") for these limits.
const RSS_BOUND_BYTES: u64 = 128 * 1024 * 1024;

fn vm_hwm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn ten_million_distinct_series_stay_bounded() {
    // A debug build parses ~10× slower; keep its run short but the shape the same.
    let total: u64 = if cfg!(debug_assertions) {
        1_000_000
    } else {
        10_000_000
    };
    let sink = CaptureServer::start(Behaviour::Ok);
    // A sink request's timeout is clamped to half the interval: at "1s", a loaded machine once
    // took longer than 0.5 s to take a flush of 200,000 series, whose points were then dropped
    // (counted) and `steady.count` came out short. Four seconds leave it 2 s.
    let config = format!(
        r#"
interval = "4s"
max_series = 200000
max_series_per_metric = 50000
[ingest]
statsd_udp = ["127.0.0.1:0"]
statsd_tcp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
[[sinks]]
type = "http"
url = "{}/x"
compression = "gzip"
"#,
        sink.url()
    );
    let mut m = Meterd::start(&config);
    let mut conn = TcpStream::connect(m.addr("tcp")).unwrap();
    let started = Instant::now();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut steady = 0u64;
    for i in 0..total {
        writeln!(buf, "flood.requests:1|c|#id:{i}").unwrap();
        if i % 100 == 0 {
            buf.extend_from_slice(b"steady.count:1|c\n");
            steady += 1;
        }
        if buf.len() > (1 << 20) - 100 {
            conn.write_all(&buf).unwrap();
            buf.clear();
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "flood took too long"
        );
    }
    conn.write_all(&buf).unwrap();
    drop(conn);
    m.wait_lines(total + steady);
    let hwm = vm_hwm(m.pid());
    assert!(m.terminate().success(), "{}", m.log());
    assert!(hwm > 0, "could not read VmHWM");
    assert!(
        hwm < RSS_BOUND_BYTES,
        "peak RSS {} MiB over the bound",
        hwm >> 20
    );
    let pts = metric_points(&sink);
    assert_eq!(
        sum_named(&pts, "steady.count"),
        steady as f64,
        "established series exact"
    );
    let refused = sum_tagged(&pts, "meterd.series.dropped", "reason:metric_limit")
        + sum_tagged(&pts, "meterd.series.dropped", "reason:limit");
    let accepted = sum_named(&pts, "flood.requests");
    assert_eq!(
        accepted + refused,
        total as f64,
        "every flood line aggregated or counted"
    );
    eprintln!(
        "flood: {total} lines in {:?}, peak RSS {} MiB, {refused} refused",
        started.elapsed(),
        hwm >> 20
    );
}
