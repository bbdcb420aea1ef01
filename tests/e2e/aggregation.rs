//! Aggregation across intervals and tags: gauge deltas in both modes (`dogstatsd`, `etsy`),
//! `|T` timestamps across flushes, and global tags on every series, meterd's own included.

use std::net::UdpSocket;

use serde_json::{json, Value};

use crate::support::udp_to_http::{config, one_flush};
use crate::support::*;

/// Runs `first`, waits for a regular flush carrying `marker`, then `second`, and returns the
/// points of every flush (interval 1 s).
fn two_intervals(extra: &str, first: &[u8], marker: &str, second: &[u8], lines: u64) -> Vec<Value> {
    let capture = CaptureServer::start(Behaviour::Ok);
    let mut m = Meterd::start(&config(&capture.url(), "1s", extra, ""));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(first, m.addr("udp")).unwrap();
    wait_for(&format!("a flush with {marker}"), || {
        (!points_named(&metric_points(&capture), marker).is_empty()).then_some(())
    });
    socket.send_to(second, m.addr("udp")).unwrap();
    m.wait_lines(lines);
    let status = m.terminate();
    assert!(status.success(), "exit {status}:\n{}", m.log());
    metric_points(&capture)
}

/// The values of `name` in flush order.
fn values(points: &[Value], name: &str) -> Vec<f64> {
    points_named(points, name)
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect()
}

#[test]
fn gauge_deltas_dogstatsd() {
    let points = two_intervals(
        "",
        b"g.a:10|g\ng.a:+5|g\ng.neg:10|g\ng.neg:-3|g\ng.fresh:+4|g\ng.mark:1|g",
        "g.mark",
        b"g.a:+1|g\ng.neg:+2|g\ng.neg:+2|g",
        9,
    );
    // +N adds to the last value, remembered across intervals; -N sets.
    assert_eq!(values(&points, "g.a"), [15.0, 16.0]);
    assert_eq!(values(&points, "g.neg"), [-3.0, 1.0]);
    assert_eq!(values(&points, "g.fresh"), [4.0]);
}

#[test]
fn gauge_deltas_etsy() {
    let points = two_intervals(
        "gauge_deltas = \"etsy\"",
        b"g.a:10|g\ng.a:-3|g\ng.a:+5|g\ng.fresh:-4|g\ng.mark:1|g",
        "g.mark",
        b"g.a:-2|g\ng.fresh:+1|g\ng.set:-1|g\ng.set:3|g",
        9,
    );
    // -N subtracts, +N adds, both from the last value across intervals; N sets.
    assert_eq!(values(&points, "g.a"), [12.0, 10.0]);
    assert_eq!(values(&points, "g.fresh"), [-4.0, -3.0]);
    assert_eq!(values(&points, "g.set"), [3.0]);
}

#[test]
fn timestamped_counters_are_emitted_at_their_timestamp() {
    let t1 = unix_now() - 120;
    let t2 = unix_now() - 60;
    let first = format!("ts.c:1|c|T{t1}\nts.c:2|c|T{t1}\nts.c:4|c|T{t2}\nts.c:8|c\nts.mark:1|c");
    let second = format!("ts.c:16|c|T{t1}\nts.g:3|g|T{t2}\nts.g:5|g|T{t2}");
    let started = unix_now();
    let points = two_intervals("", first.as_bytes(), "ts.mark", second.as_bytes(), 8);
    let mut at: Vec<(i64, f64)> = points_named(&points, "ts.c")
        .iter()
        .map(|p| {
            (
                p["timestamp"].as_i64().unwrap(),
                p["value"].as_f64().unwrap(),
            )
        })
        .collect();
    at.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // t1: 3 in the first flush, 16 in the second (one point per flush, never merged with the
    // interval's own point); t2: 4; the untimed 8 at a flush time.
    assert_eq!(at.len(), 4, "{at:?}");
    assert_eq!(at[0], (t1, 3.0));
    assert_eq!(at[1], (t1, 16.0));
    assert_eq!(at[2], (t2, 4.0));
    assert_eq!(at[3].1, 8.0);
    assert!(at[3].0 >= started, "{at:?}");
    let g = only_point(&points, "ts.g");
    assert_eq!(
        (g["timestamp"].as_i64(), g["value"].as_f64()),
        (Some(t2), Some(5.0))
    );
}

fn global_tags_run() -> Vec<Value> {
    one_flush("tags = [\"env:test\", \"zone:a\"]", "", |m| {
        send_udp(
            m.addr("udp"),
            &[b"gt.c:1|c|#zeta,alpha\ngt.dup:1|c|#env:test\ngt.h:1|h|#b\ngt.g:1|g|#host:elsewhere"],
        );
        m.wait_lines(4);
    })
}

fn without_global_tags(points: &[Value]) -> Vec<&Value> {
    points
        .iter()
        .filter(|p| {
            let tags = p["tags"].as_array().unwrap();
            !(tags.contains(&json!("env:test")) && tags.contains(&json!("zone:a")))
        })
        .collect()
}

#[test]
fn global_tags_are_on_every_series() {
    let points = global_tags_run();
    assert_eq!(
        only_point(&points, "gt.c")["tags"],
        json!(["alpha", "env:test", "zeta", "zone:a"])
    );
    assert_eq!(
        only_point(&points, "gt.dup")["tags"],
        json!(["env:test", "zone:a"])
    );
    for aggregate in ["min", "max", "count", "50percentile", "99percentile"] {
        assert_eq!(
            only_point(&points, &format!("gt.h.{aggregate}"))["tags"],
            json!(["b", "env:test", "zone:a"])
        );
    }
    let g = only_point(&points, "gt.g");
    assert_eq!(g["tags"], json!(["env:test", "zone:a"]));
    assert_eq!(g["host"], "elsewhere");
    let user: Vec<Value> = points
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("gt.")))
        .cloned()
        .collect();
    assert_eq!(user.len(), 3 + 6, "{user:?}");
    let missing = without_global_tags(&user);
    assert!(missing.is_empty(), "{missing:?}");
}

/// `tags` (config.example.toml): "added to every series", and docs/self-metrics.md: self-metrics
/// are emitted "through the normal pipeline"; so a dashboard filtering on `env:` sees meterd's own
/// points too.
#[test]
fn global_tags_are_on_meterds_own_points_too() {
    let points = global_tags_run();
    let missing = without_global_tags(&points);
    assert!(
        missing.is_empty(),
        "points without the global tags: {missing:?}"
    );
}
