//! Cardinality you can see: `GET /api/v1/cardinality` counts the current interval's series and
//! lines per name and distinct values per tag key, marks a name at `max_series_per_metric` with
//! the lines it refused; `meterd top --once` shows the same as a table.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::udp_to_http::config;
use crate::support::*;

/// meterd with a one-hour interval, started clear of its boundary: nothing is flushed during a
/// test, so the interval holds everything sent.
fn start(extra: &str) -> (Meterd, CaptureServer) {
    avoid_boundary(Duration::from_secs(3600), Duration::from_secs(30));
    let sink = CaptureServer::start(Behaviour::Ok);
    let m = Meterd::start(&config(&sink.url(), "1h", extra, ""));
    (m, sink)
}

fn cardinality(m: &Meterd, query: &str) -> Value {
    let (status, body) = m.http_get(&format!("/api/v1/cardinality{query}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls the API until it holds `series` series.
fn wait_series(m: &Meterd, series: u64) -> Value {
    wait_for(&format!("{series} series in the interval"), || {
        let c = cardinality(m, "");
        (c["total_series"] == series).then_some(c)
    })
}

fn top_once(api: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(["top", "--once", "--api", api])
        .output()
        .unwrap()
}

#[test]
fn series_lines_and_tag_keys_of_the_interval() {
    let (m, _sink) = start("");
    let lines = [
        "web.req:1|c|#env:prod,code:200",
        "web.req:1|c|#env:prod,code:200",
        "web.req:1|c|#code:200,env:prod",
        "web.req:1|c|#env:prod,code:500",
        "web.req:1|c|#env:dev,code:200",
        "db.q:1:2:3|h|#env:prod",
        "db.q:5|g|#host:db1",
        "solo:1|s|#canary",
    ];
    send_udp(m.addr("udp"), &[lines.join("\n").as_bytes()]);
    m.wait_lines(8);
    let c = wait_series(&m, 6);
    let metric = |name: &str, series: u64, lines: u64| json!({"name": name, "series": series, "lines": lines, "limited": false, "dropped": 0});
    let tag_key = |key: &str, values: u64| json!({"key": key, "values": values});
    assert_eq!(
        c,
        json!({
            "total_series": 6,
            "metrics": [metric("web.req", 3, 5), metric("db.q", 2, 2), metric("solo", 1, 1)],
            "tag_keys": [tag_key("code", 2), tag_key("env", 2), tag_key("canary", 1), tag_key("host", 1)],
        })
    );

    let one = cardinality(&m, "?limit=1");
    assert_eq!(one["total_series"], 6);
    assert_eq!(one["metrics"], json!([metric("web.req", 3, 5)]));
    assert_eq!(one["tag_keys"], json!([tag_key("code", 2)]));

    let api = m.addr("http").to_string();
    let out = top_once(&api);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_succeeded(&out);
    assert!(table.contains("series this interval: 6"), "{table}");
    for name in ["web.req", "db.q", "solo", "TAG KEY", "canary"] {
        assert!(table.contains(name), "{name} missing:\n{table}");
    }
    let row = table.lines().find(|l| l.starts_with("web.req")).unwrap();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["web.req", "3", "5", "-"]
    );
}

#[test]
fn a_bad_limit_is_refused_with_a_json_error() {
    let (m, _sink) = start("");
    for query in ["?limit=x", "?limit=-1", "?limit=10001", "?limit="] {
        let (status, body) = m.http_get(&format!("/api/v1/cardinality{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("limit"), "{body}");
    }
}

#[test]
fn a_metric_at_max_series_per_metric_is_marked_with_its_dropped_lines() {
    let (m, _sink) = start("max_series_per_metric = 3");
    let burst: Vec<String> = (0..10).map(|i| format!("boom:1|c|#id:{i}")).collect();
    let burst = burst.join("\n");
    // Twice: the 3 admitted series count their lines again, the 7 refused ones are refused again.
    send_udp(m.addr("udp"), &[burst.as_bytes(), b"calm:1|c|#id:calm"]);
    m.wait_lines(11);
    send_udp(m.addr("udp"), &[burst.as_bytes()]);
    m.wait_lines(21);
    let c = wait_series(&m, 4);
    assert_eq!(
        c["metrics"],
        json!([
            {"name": "boom", "series": 3, "lines": 6, "limited": true, "dropped": 14},
            {"name": "calm", "series": 1, "lines": 1, "limited": false, "dropped": 0},
        ])
    );
    assert_eq!(c["tag_keys"], json!([{"key": "id", "values": 4}]));

    let out = top_once(&m.addr("http").to_string());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let row = table.lines().find(|l| l.starts_with("boom")).unwrap();
    assert!(row.ends_with("LIMITED, dropped 14"), "{table}");
}

#[test]
fn top_names_an_api_it_cannot_reach() {
    // A port just freed: nothing listens there.
    let api = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = top_once(&api);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&api), "{stderr}");
}
