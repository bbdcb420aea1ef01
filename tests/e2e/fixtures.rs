//! Captured datagrams per DogStatsD protocol version (`fixtures/datagrams/*.txt`) sent over UDP,
//! the `http` sink's document compared with `fixtures/expected/*.json` (the format is described
//! in `fixtures/README.md`): every point, service check and event exactly, and
//! `meterd.lines.invalid` by reason. Plus the datagram size limit (`reason:truncated`).

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::support::*;

const HOST: &str = "test-host";
const INTERVAL: u64 = 3600;

/// Every `reason:` of `meterd.lines.invalid` (docs/protocol.md).
const REASONS: [&str; 11] = [
    "bad_name",
    "bad_value",
    "bad_type",
    "bad_sample_rate",
    "bad_tags",
    "bad_timestamp",
    "bad_event",
    "bad_service_check",
    "not_utf8",
    "too_long",
    "truncated",
];

fn config(url: &str, ingest: &str) -> String {
    format!(
        r#"
hostname = "{HOST}"
interval = "1h"
percentiles = []
aggregates = ["min", "max", "count", "sum"]
[ingest]
statsd_udp = ["127.0.0.1:0"]
readers = 2
{ingest}
[http]
listen = "127.0.0.1:0"
[[sinks]]
type = "http"
url = "{url}/fixture"
"#
    )
}

/// One fixture line as bytes: `\xNN` is the byte 0xNN, everything else is taken as written.
fn unescape(line: &str) -> Vec<u8> {
    let bytes = line.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"\\x") {
            let hex = line.get(i + 2..i + 4).expect("two hex digits after \\x");
            out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// The datagrams of `fixtures/datagrams/NAME.txt`.
fn read_datagrams(name: &str) -> Vec<Vec<u8>> {
    let path = fixture(&format!("datagrams/{name}.txt"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut datagrams = Vec::new();
    let mut current: Vec<Vec<u8>> = Vec::new();
    for line in text.lines() {
        if line == "---" {
            datagrams.push(current.join(&b'\n'));
            current.clear();
        } else if !line.starts_with(";;") {
            current.push(unescape(line));
        }
    }
    if !current.is_empty() {
        datagrams.push(current.join(&b'\n'));
    }
    datagrams
}

fn read_expected(name: &str) -> Value {
    let path = fixture(&format!("expected/{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `v` with `defaults` filled in where it has no such key.
fn with_defaults(v: &Value, defaults: &Value) -> Value {
    let mut out: Map<String, Value> = v.as_object().expect("an object").clone();
    for (k, d) in defaults.as_object().expect("an object") {
        out.entry(k.clone()).or_insert_with(|| d.clone());
    }
    Value::Object(out)
}

/// Deep equality with numbers compared as `f64` (`3` equals `3.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Asserts that `actual` holds exactly the objects of `expected`, in any order. An expected
/// object without `timestamp` matches an actual one whose timestamp satisfies `ts_ok`.
fn assert_same_objects(
    what: &str,
    actual: &[Value],
    expected: &[Value],
    ts_ok: impl Fn(&Value) -> bool,
) {
    let mut unused: Vec<Option<&Value>> = actual.iter().map(Some).collect();
    let mut missing = Vec::new();
    for e in expected {
        let found = unused.iter_mut().find(|slot| {
            slot.is_some_and(|a| {
                if e.get("timestamp").is_some() {
                    return same(e, a);
                }
                let mut a = a.clone();
                let ts = a
                    .as_object_mut()
                    .and_then(|o| o.remove("timestamp"))
                    .unwrap_or(Value::Null);
                ts_ok(&ts) && same(e, &a)
            })
        });
        match found {
            Some(slot) => *slot = None,
            None => missing.push(e),
        }
    }
    let extra: Vec<&Value> = unused.into_iter().flatten().collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what} differ from the fixture\nexpected but not emitted:\n{}\nemitted but not expected:\n{}",
        pretty(&missing),
        pretty(&extra)
    );
}

fn pretty(values: &[&Value]) -> String {
    values
        .iter()
        .map(|v| format!("  {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Sends `datagrams` to one meterd (each over UDP from one socket, so they arrive in order),
/// waits until it has counted `lines`, stops it and returns its one flush document plus the
/// unix seconds before the first send and after exit.
fn run(datagrams: &[Vec<u8>], lines: u64, ingest: &str) -> (Value, i64, i64) {
    avoid_boundary(Duration::from_secs(3600), Duration::from_secs(10));
    let started = unix_now();
    let (m, capture) = run_to_exit(
        |url| config(url, ingest),
        |m| {
            let refs: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
            send_udp(m.addr("udp"), &refs);
            m.wait_lines(lines);
        },
    );
    let ended = unix_now();
    let mut docs = documents(&capture);
    assert_eq!(docs.len(), 1, "expected one flush:\n{}", m.log());
    (docs.remove(0), started, ended)
}

/// meterd's own points and checks: self-metrics (`meterd.*`) and the results of its own health
/// checks (`service:meterd`, docs/health.md), which ride along with every flush.
fn is_meterds_own(v: &Value) -> bool {
    let name = v["name"].as_str().unwrap_or_default();
    let tags = v["tags"].as_array().map(Vec::as_slice).unwrap_or_default();
    name.starts_with("meterd.") || tags.iter().any(|t| t == "service:meterd")
}

/// The timestamp meterd's own points carry: the flush's.
fn flush_timestamp(doc: &Value) -> i64 {
    let own = points_named(
        doc["metrics"].as_array().expect("metrics"),
        "meterd.lines.received",
    );
    assert_eq!(own.len(), 1, "one meterd.lines.received point: {own:?}");
    own[0]["timestamp"].as_i64().expect("timestamp")
}

fn check_fixture(name: &str) {
    let datagrams = read_datagrams(name);
    let expected = read_expected(name);
    let lines = expected["lines_received"].as_u64().expect("lines_received");
    let (doc, started, ended) = run(&datagrams, lines, "");

    let metrics = doc["metrics"].as_array().expect("metrics array").clone();
    let flush_ts = flush_timestamp(&doc);
    let (own, user): (Vec<Value>, Vec<Value>) = metrics.into_iter().partition(is_meterds_own);

    let point_defaults =
        json!({"tags": [], "host": HOST, "interval": INTERVAL, "timestamp": flush_ts});
    let expected_points: Vec<Value> = expected["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .map(|p| with_defaults(p, &point_defaults))
        .collect();
    assert_same_objects(
        &format!("{name}: metric points"),
        &user,
        &expected_points,
        |_| false,
    );

    // Without `d:` an event or check carries the time it was received.
    let received_now = |ts: &Value| ts.as_i64().is_some_and(|t| (started..=ended).contains(&t));
    let check_defaults = json!({"tags": [], "host": HOST, "message": ""});
    let expected_checks: Vec<Value> = expected["service_checks"]
        .as_array()
        .expect("service_checks")
        .iter()
        .map(|c| with_defaults(c, &check_defaults))
        .collect();
    let checks: Vec<Value> = doc["service_checks"]
        .as_array()
        .expect("service_checks")
        .iter()
        .filter(|c| !is_meterds_own(c))
        .cloned()
        .collect();
    assert_same_objects(
        &format!("{name}: service checks"),
        &checks,
        &expected_checks,
        received_now,
    );
    let event_defaults = json!({"tags": [], "host": HOST, "aggregation_key": "",
        "priority": "normal", "source_type": "", "alert_type": "info"});
    let expected_events: Vec<Value> = expected["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| with_defaults(e, &event_defaults))
        .collect();
    assert_same_objects(
        &format!("{name}: events"),
        doc["events"].as_array().expect("events"),
        &expected_events,
        received_now,
    );

    assert_eq!(
        sum_named(&own, "meterd.lines.received"),
        lines as f64,
        "{name}: meterd.lines.received"
    );
    for reason in REASONS {
        let want = expected["invalid"][reason].as_f64().unwrap_or(0.0);
        let got = sum_tagged(&own, "meterd.lines.invalid", &format!("reason:{reason}"));
        assert_eq!(got, want, "{name}: meterd.lines.invalid reason:{reason}");
    }
}

#[test]
fn protocol_v1_0_plain_statsd() {
    check_fixture("v1_0");
}

#[test]
fn protocol_v1_1_tags_and_multi_value() {
    check_fixture("v1_1");
}

#[test]
fn protocol_v1_2_container_id() {
    check_fixture("v1_2");
}

#[test]
fn protocol_v1_3_timestamps() {
    check_fixture("v1_3");
}

#[test]
fn events_with_every_field() {
    check_fixture("events");
}

#[test]
fn service_checks_with_every_field() {
    check_fixture("service_checks");
}

#[test]
fn malformed_lines_are_dropped_alone_and_counted_by_reason() {
    check_fixture("malformed");
}

#[test]
fn fixture_escapes_decode() {
    assert_eq!(
        unescape(r"a\x00b\xffc\nm\:"),
        b"a\x00b\xffc\\nm\\:".to_vec()
    );
    let v13 = read_datagrams("v1_3");
    assert_eq!(v13.len(), 2);
    assert!(v13[0].starts_with(b"v13.ts:1|c|T1700000000\nv13.ts:2|c"));
    let v10 = read_datagrams("v1_0");
    assert!(v10[1].starts_with(b"v10.crlf:1|c\r\nv10.crlf:1|c\r\n\n"));
    assert!(v10[1].ends_with(b"|c|\n"), "trailing newline kept");
}

#[test]
fn datagram_over_max_datagram_bytes_keeps_its_complete_lines() {
    // 39 complete lines (507 bytes), then a line cut at byte 512 right after `t:1|c` — which
    // would parse as a valid counter if the cut went unnoticed.
    let mut long = "trunc.ok:1|c\n".repeat(39).into_bytes();
    long.extend_from_slice(b"t:1|c|#cut:here\ntrunc.lost:1|c\n");
    assert!(long.len() > 512);
    assert!(long[..512].ends_with(b"\nt:1|c"));
    // Exactly at the limit: kept whole.
    let head = "exact:1|c|#pad:";
    let exact = format!("{head}{}", "p".repeat(512 - head.len())).into_bytes();
    assert_eq!(exact.len(), 512);
    let after = b"trunc.next:1|c".to_vec();

    let (doc, _, _) = run(
        &[long, exact, after],
        39 + 1 + 1 + 1,
        "max_datagram_bytes = 512",
    );
    let points = doc["metrics"].as_array().expect("metrics").clone();
    assert_eq!(sum_named(&points, "trunc.ok"), 39.0);
    assert!(
        points_named(&points, "t").is_empty(),
        "the cut line was parsed"
    );
    assert!(points_named(&points, "trunc.lost").is_empty());
    assert_eq!(sum_named(&points, "trunc.next"), 1.0);
    let exact_points = points_named(&points, "exact");
    assert_eq!(exact_points.len(), 1, "{exact_points:?}");
    assert_eq!(exact_points[0]["value"], 1.0);
    assert_eq!(
        sum_tagged(&points, "meterd.lines.invalid", "reason:truncated"),
        1.0
    );
    for reason in REASONS.iter().filter(|r| **r != "truncated") {
        assert_eq!(
            sum_tagged(&points, "meterd.lines.invalid", &format!("reason:{reason}")),
            0.0,
            "reason:{reason}"
        );
    }
    assert_eq!(sum_named(&points, "meterd.packets.received"), 3.0);
}
