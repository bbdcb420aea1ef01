//! statsd/DogStatsD in through a real client (cadence), aggregates out through the `http` sink:
//! exact counters with sample rates, gauges, sets, histogram min/max/count exact and percentiles
//! within 1 %, tags sorted, host. The interval is one hour, so everything lands in the final
//! flush that SIGTERM triggers; that also proves nothing sent before the signal is lost.

use std::net::UdpSocket;
use std::time::Duration;

use cadence::prelude::*;
use cadence::{BufferedUdpMetricSink, StatsdClient};
use serde_json::Value;

use crate::support::*;

/// Config for a one-flush run: UDP and HTTP on port 0, an `http` sink to `url`.
pub fn one_flush_config(url: &str, extra: &str) -> String {
    format!(
        r#"
hostname = "test-host"
interval = "1h"
percentiles = [0.5, 0.9, 0.99, 0.999]
aggregates = ["min", "max", "count", "sum", "avg", "median"]
{extra}
[ingest]
statsd_udp = ["127.0.0.1:0"]
readers = 2
[http]
listen = "127.0.0.1:0"
[[sinks]]
type = "http"
url = "{url}/series"
"#
    )
}

fn nearest_rank(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn value_of(points: &[Value], name: &str) -> f64 {
    let found = points_named(points, name);
    assert_eq!(
        found.len(),
        1,
        "expected one point named {name}, got {found:?}"
    );
    found[0]["value"].as_f64().unwrap()
}

fn run_one_flush(extra: &str, send: impl FnOnce(&Meterd)) -> Vec<Value> {
    avoid_boundary(Duration::from_secs(3600), Duration::from_secs(30));
    let capture = CaptureServer::start(Behaviour::Ok);
    let mut m = Meterd::start(&one_flush_config(&capture.url(), extra));
    send(&m);
    // Wait until meterd has counted every line, then stop it: the final flush carries them.
    let status = m.terminate();
    assert!(
        status.success(),
        "meterd exited with {status}:\n{}",
        m.log()
    );
    let reqs = capture.requests_to("/series");
    assert!(!reqs.is_empty(), "no flush reached the sink:\n{}", m.log());
    metric_points(&capture)
}

fn client(m: &Meterd) -> StatsdClient {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink = BufferedUdpMetricSink::from(m.addr("udp"), socket).unwrap();
    StatsdClient::builder("", sink)
        .with_error_handler(|e| panic!("statsd client error: {e}"))
        .build()
}

fn wait_lines(m: &Meterd, n: u64) {
    wait_for(&format!("{n} lines received"), || {
        let (_, text) = m.http_get("/metrics");
        let got = text
            .lines()
            .find_map(|l| l.strip_prefix("meterd_lines_received_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        (got >= n).then_some(())
    });
}

#[test]
fn cadence_counters_gauges_sets_and_timers() {
    let timer_values: Vec<u64> = (0..2000u64).map(|i| (i * 7919) % 1000 + 1).collect();
    let hist_values: Vec<f64> = (0..500).map(|i| (i as f64 - 100.0) * 0.25).collect();
    let points = run_one_flush("", |m| {
        let c = client(m);
        for _ in 0..100 {
            c.count_with_tags("req.count", 1)
                .with_tag("route", "/b")
                .with_tag("env", "prod")
                .send();
        }
        for _ in 0..50 {
            c.count_with_tags("req.sampled", 2)
                .with_sampling_rate(0.5)
                .send();
        }
        c.count_with_tags("req.tenth", 1)
            .with_sampling_rate(0.1)
            .send();
        c.gauge("queue.depth", 10u64).unwrap();
        c.gauge("queue.depth", 42u64).unwrap();
        c.gauge("temperature", 21.5f64).unwrap();
        for i in 0..150i64 {
            c.set("users", i).unwrap();
            c.set("users", i % 10).unwrap();
        }
        for i in 0..128i64 {
            c.set("users.small", i * 31).unwrap();
            c.set("users.small", 0).unwrap();
        }
        for &v in &timer_values {
            c.time("api.latency", v).unwrap();
        }
        for &v in &hist_values {
            c.histogram("payload.delta", v).unwrap();
        }
        c.distribution_with_tags("upload.size", 1024u64)
            .with_tag("host", "other-host")
            .send();
        c.flush().unwrap();
        let lines =
            100 + 50 + 1 + 3 + 300 + 256 + timer_values.len() as u64 + hist_values.len() as u64 + 1;
        wait_lines(m, lines);
    });

    // Counters: exact, weighted by 1 ÷ rate.
    let req = points_named(&points, "req.count");
    assert_eq!(req.len(), 1);
    assert_eq!(req[0]["value"], 100.0);
    assert_eq!(req[0]["kind"], "counter");
    assert_eq!(req[0]["tags"], serde_json::json!(["env:prod", "route:/b"]));
    assert_eq!(req[0]["host"], "test-host");
    assert_eq!(req[0]["interval"], 3600);
    assert_eq!(value_of(&points, "req.sampled"), 200.0);
    assert_eq!(value_of(&points, "req.tenth"), 10.0);

    // Gauges: the last value.
    assert_eq!(value_of(&points, "queue.depth"), 42.0);
    assert_eq!(value_of(&points, "temperature"), 21.5);
    assert_eq!(points_named(&points, "queue.depth")[0]["kind"], "gauge");

    // Sets: exact up to 128 distinct members, within 2 % above (docs/protocol.md).
    assert_eq!(value_of(&points, "users.small"), 128.0);
    let users = value_of(&points, "users");
    assert!((users - 150.0).abs() <= 3.0, "users: {users}");

    // Timers: min/max/count/sum exact, percentiles within 1 % of nearest rank.
    let tv: Vec<f64> = timer_values.iter().map(|&v| v as f64).collect();
    assert_eq!(value_of(&points, "api.latency.count"), tv.len() as f64);
    assert_eq!(value_of(&points, "api.latency.min"), 1.0);
    assert_eq!(value_of(&points, "api.latency.max"), 1000.0);
    assert_eq!(value_of(&points, "api.latency.sum"), tv.iter().sum::<f64>());
    assert_eq!(
        points_named(&points, "api.latency.count")[0]["kind"],
        "counter"
    );
    for (q, name) in [
        (0.5, "api.latency.50percentile"),
        (0.5, "api.latency.median"),
        (0.9, "api.latency.90percentile"),
        (0.99, "api.latency.99percentile"),
        (0.999, "api.latency.99_9percentile"),
    ] {
        let exact = nearest_rank(&tv, q);
        let got = value_of(&points, name);
        assert!(
            (got - exact).abs() <= exact * 0.01,
            "{name}: {got} vs exact {exact}"
        );
    }

    // Histograms with negative and fractional values.
    assert_eq!(value_of(&points, "payload.delta.min"), -25.0);
    assert_eq!(value_of(&points, "payload.delta.max"), 99.75);
    assert_eq!(value_of(&points, "payload.delta.count"), 500.0);
    for (q, name) in [
        (0.5, "payload.delta.50percentile"),
        (0.99, "payload.delta.99percentile"),
    ] {
        let exact = nearest_rank(&hist_values, q);
        let got = value_of(&points, name);
        assert!(
            (got - exact).abs() <= exact.abs() * 0.01,
            "{name}: {got} vs {exact}"
        );
    }

    // A host: tag sets the host and is not kept as a tag.
    let up = points_named(&points, "upload.size.max");
    assert_eq!(up.len(), 1);
    assert_eq!(up[0]["host"], "other-host");
    assert_eq!(up[0]["tags"], serde_json::json!([]));

    // Self-metrics ride along.
    assert!(!points_named(&points, "meterd.lines.received").is_empty());
}
