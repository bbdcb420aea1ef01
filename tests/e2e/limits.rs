//! Limits: `max_series` refuses new series and keeps counting existing ones, the next interval
//! starts empty; non-finite aggregates are dropped and counted; the input limits
//! (`max_series_per_metric`, name and tag lengths, tags per line) bite and are counted.

use std::net::UdpSocket;
use std::time::Duration;

use serde_json::Value;

use crate::support::udp_to_http::{config, one_flush};
use crate::support::*;

#[test]
fn max_series_refuses_new_series_and_keeps_counting_existing_ones() {
    let points = one_flush("max_series = 10", "", |m| {
        let first: Vec<String> = (0..10).map(|i| format!("lim.{i}:1|c")).collect();
        send_udp(m.addr("udp"), &[first.join("\n").as_bytes()]);
        m.wait_lines(10);
        // Ten new series (one of them twice) are refused; existing ones keep counting.
        let mut second: Vec<String> = (10..20).map(|i| format!("lim.{i}:1|c")).collect();
        second.push("lim.15:1|c".into());
        second.push("lim.0:5|c".into());
        second.push("lim.9:1|g".into()); // same name, other type: a new series
        send_udp(m.addr("udp"), &[second.join("\n").as_bytes()]);
        m.wait_lines(23);
        wait_for("refusals counted", || {
            (m.prom("meterd_series_dropped_total{reason=\"limit\"}") == Some(12.0)).then_some(())
        });
    });
    let user: Vec<&Value> = points
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("lim.")))
        .collect();
    assert_eq!(user.len(), 10, "{user:?}");
    for i in 0..10 {
        let p = only_point(&points, &format!("lim.{i}"));
        assert_eq!(p["kind"], "counter");
        assert_eq!(p["value"], if i == 0 { 6.0 } else { 1.0 }, "lim.{i}");
    }
    assert_eq!(
        sum_tagged(&points, "meterd.series.dropped", "reason:limit"),
        12.0
    );
}

#[test]
fn max_series_next_interval_starts_empty() {
    // Each step must land in one 1 s interval; on a busy machine one can straddle a flush, which
    // changes what is refused. Such an attempt is detected by the clock and run again.
    for attempt in 1..=3 {
        if let Some(points) = max_series_attempt() {
            for (name, want) in [
                ("ns.a", 1.0),
                ("ns.b", 1.0),
                ("ns.c", 1.0),
                ("ns.d", 1.0),
                ("ns.e", 0.0),
            ] {
                assert_eq!(sum_named(&points, name), want, "{name}");
            }
            assert_eq!(
                sum_tagged(&points, "meterd.series.dropped", "reason:limit"),
                3.0,
                "ns.c in the first interval; ns.e and ns.a (a third series) in the second"
            );
            return;
        }
        eprintln!("attempt {attempt}: a step straddled a flush; running it again");
    }
    panic!("three attempts straddled a flush");
}

/// One run of `max_series_next_interval_starts_empty`'s two steps: every point flushed, or
/// `None` when a step did not fit in one interval.
fn max_series_attempt() -> Option<Vec<Value>> {
    let capture = CaptureServer::start(Behaviour::Ok);
    let mut m = Meterd::start(&config(&capture.url(), "1s", "max_series = 2", ""));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let margin = Duration::from_millis(400);
    // Which series of one datagram win the last free slots is not defined (lines are applied
    // per shard), so each step sends only what must be accepted, then what must be refused.
    // Returns whether the step stayed within one (wall-clock aligned) second.
    let mut sent = 0;
    let mut step = |accepted: &[u8], refused: &[u8]| {
        avoid_boundary(Duration::from_secs(1), margin);
        let second = unix_now();
        for datagram in [accepted, refused] {
            socket.send_to(datagram, m.addr("udp")).unwrap();
            sent += datagram.split(|&b| b == b'\n').count() as u64;
            m.wait_lines(sent);
        }
        unix_now() == second
    };
    let first = step(b"ns.a:1|c\nns.b:1|c", b"ns.c:1|c");
    wait_for("a flush with ns.a", || {
        (!points_named(&metric_points(&capture), "ns.a").is_empty()).then_some(())
    });
    let second = step(b"ns.c:1|c\nns.d:1|c", b"ns.e:1|c\nns.a:1|c");
    let status = m.terminate();
    assert!(status.success(), "exit {status}:\n{}", m.log());
    (first && second).then(|| metric_points(&capture))
}

#[test]
fn non_finite_aggregates_are_dropped_and_counted() {
    let points = one_flush(
        "aggregates = [\"min\", \"max\", \"count\", \"sum\"]\npercentiles = []",
        "",
        |m| {
            send_udp(
                m.addr("udp"),
                &[b"nf.c:1e300|c|@1e-10\nnf.g:1e308|g\nnf.g:+1e308|g\nnf.h:1e300|h|@1e-10\nnf.ok:1|c"],
            );
            m.wait_lines(5);
        },
    );
    // serde_json writes a non-finite f64 as null: every value must be a finite number.
    let bad: Vec<&Value> = points
        .iter()
        .filter(|p| !p["value"].as_f64().is_some_and(f64::is_finite))
        .collect();
    assert!(
        bad.is_empty(),
        "non-finite values reached the sink: {bad:?}"
    );
    for gone in ["nf.c", "nf.g", "nf.h.sum"] {
        assert!(points_named(&points, gone).is_empty(), "{gone} emitted");
    }
    assert_eq!(only_point(&points, "nf.h.max")["value"], 1e300);
    assert_eq!(only_point(&points, "nf.h.count")["value"], 1e10);
    assert_eq!(only_point(&points, "nf.ok")["value"], 1.0);
    assert_eq!(
        sum_tagged(&points, "meterd.series.dropped", "reason:non_finite"),
        3.0
    );
}

#[test]
fn input_limits_bite_and_are_counted() {
    let sink = CaptureServer::start(Behaviour::Ok);
    let config = format!(
        r#"
interval = "1h"
max_series_per_metric = 5
max_name_length = 16
max_tags_per_line = 3
max_tag_length = 12
[ingest]
statsd_udp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
[[sinks]]
type = "http"
url = "{}/x"
"#,
        sink.url()
    );
    let mut m = Meterd::start(&config);
    let mut lines = String::new();
    // Twice: the 5 admitted series keep counting, the 15 refused ones are refused again.
    for _ in 0..2 {
        for i in 0..20 {
            lines.push_str(&format!("explode:1|c|#id:{i}\n"));
        }
    }
    lines.push_str("calm:1|c|#id:1\ncalm:1|c|#id:2\n");
    lines.push_str("a.very.long.metric.name:1|c\n");
    lines.push_str("tags:1|c|#a,b,c,d\n");
    lines.push_str("tag:1|c|#this-tag-is-too-long\n");
    lines.push_str("ok:1|c|#a,b,c\n");
    send_udp(m.addr("udp"), &[lines.as_bytes()]);
    m.wait_lines(46);
    assert!(m.terminate().success());
    let pts = metric_points(&sink);
    let explode: Vec<Value> = points_named(&pts, "explode");
    assert_eq!(explode.len(), 5, "only 5 series of one name");
    assert_eq!(sum_named(&pts, "explode"), 10.0);
    assert_eq!(
        points_named(&pts, "calm").len(),
        2,
        "other names unaffected"
    );
    assert_eq!(points_named(&pts, "ok").len(), 1);
    assert!(points_named(&pts, "a.very.long.metric.name").is_empty());
    assert_eq!(
        sum_tagged(&pts, "meterd.series.dropped", "reason:metric_limit"),
        30.0
    );
    assert_eq!(
        sum_tagged(&pts, "meterd.lines.invalid", "reason:bad_name"),
        1.0
    );
    assert_eq!(
        sum_tagged(&pts, "meterd.lines.invalid", "reason:bad_tags"),
        2.0
    );
}
