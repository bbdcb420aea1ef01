//! Health checks (docs/health.md): POST results, query them, see them flushed as service checks and
//! gauges, go stale, arrive as `_sc` lines, get refused whole when malformed; meterd's own
//! checks; `meterd checks`; the status page in a real headless Chromium.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const PING: &str = r#"{"id": "go.micro.healthcheck.ping", "description": "This is a ping healthcheck that succeeds",
 "timestamp": 1451096504, "status": 1, "error": "",
 "service": {"id": "go-server-672d50a7", "name": "go-server", "version": "1.0.0"},
 "results": {"msg": "a successful check", "metric": "1", "stats": "123.0"}}"#;

const PONG: &str = r#"{"id": "go.micro.healthcheck.pong", "description": "This is a pong healthcheck that fails",
 "timestamp": "1451096505", "status": "2", "error": "Unsuccessful", "interval": 60, "ttl": 3600,
 "service": {"name": "go-server", "version": "1.0.0", "nodes": [{"id": "go-server-672d50a7"}]},
 "results": {"latency_ms": 12.5}}"#;

fn config(url: &str, extra: &str) -> String {
    format!(
        r#"
hostname = "mon-host"
interval = "1s"
[ingest]
statsd_udp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
max_body_bytes = 4096
[health]
{extra}
[[sinks]]
type = "http"
url = "{url}/flush"
"#
    )
}

fn post(m: &Meterd, body: &str) -> (u16, Value) {
    let (status, text) = http_request(
        m.addr("http"),
        "POST",
        "/api/v1/healthchecks",
        body.as_bytes(),
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text})),
    )
}

fn get(m: &Meterd, query: &str) -> (u16, Value) {
    let (status, text) = m.http_get(&format!("/api/v1/healthchecks{query}"));
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text})),
    )
}

fn ids(v: &Value) -> Vec<String> {
    v["healthChecks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn flushed_checks(capture: &CaptureServer) -> Vec<Value> {
    capture
        .requests()
        .iter()
        .flat_map(|r| {
            r.json()["service_checks"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

fn flushed_events(capture: &CaptureServer) -> Vec<Value> {
    capture
        .requests()
        .iter()
        .flat_map(|r| r.json()["events"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn post_query_and_flush() {
    let capture = CaptureServer::start(Behaviour::Ok);
    let m = Meterd::start(&config(&capture.url(), ""));
    let (status, body) = post(&m, &format!("[{PING}, {PONG}]"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2);

    // Query by id: exactly the submitted shape, numbers as numbers.
    let (status, one) = get(&m, "?id=go.micro.healthcheck.ping");
    assert_eq!(status, 200);
    let checks = one["healthChecks"].as_array().unwrap();
    assert_eq!(checks.len(), 1);
    let c = &checks[0];
    assert_eq!(c["status"], 1);
    assert_eq!(c["timestamp"], 1451096504);
    assert_eq!(c["description"], "This is a ping healthcheck that succeeds");
    assert_eq!(
        c["service"],
        json!({"id": "go-server-672d50a7", "name": "go-server", "version": "1.0.0"})
    );
    assert_eq!(c["results"]["stats"], "123.0");
    // The nodes shape and numeric strings.
    let (_, pong) = get(&m, "?id=go.micro.healthcheck.pong");
    assert_eq!(pong["healthChecks"][0]["status"], 2);
    assert_eq!(pong["healthChecks"][0]["timestamp"], 1451096505);
    assert_eq!(
        pong["healthChecks"][0]["service"]["id"],
        "go-server-672d50a7"
    );

    // By status, by service, paging after filtering; the empty id means any.
    assert_eq!(ids(&get(&m, "?status=2").1), ["go.micro.healthcheck.pong"]);
    assert_eq!(
        ids(&get(&m, "?service=go-server&limit=1").1),
        ["go.micro.healthcheck.pong"]
    );
    assert_eq!(
        ids(&get(&m, "?service=go-server&limit=1&offset=1").1),
        ["go.micro.healthcheck.ping"]
    );
    assert_eq!(
        get(&m, "?id=&service=go-server").1["healthChecks"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(ids(&get(&m, "?id=nope").1).is_empty());
    assert_eq!(get(&m, "?status=9").0, 400);
    assert_eq!(get(&m, "?limit=x").0, 400);

    // Flushed once each as service checks, numeric results as gauges.
    let checks = wait_for("service checks in the sink", || {
        let all = flushed_checks(&capture);
        let ours: Vec<Value> = all
            .into_iter()
            .filter(|c| c["name"].as_str().unwrap().starts_with("go.micro"))
            .collect();
        (ours.len() >= 2).then_some(ours)
    });
    let ping = checks
        .iter()
        .find(|c| c["name"] == "go.micro.healthcheck.ping")
        .unwrap();
    assert_eq!(ping["status"], 0);
    assert_eq!(ping["message"], "a successful check");
    assert_eq!(ping["host"], "mon-host");
    assert_eq!(
        ping["tags"],
        json!([
            "service:go-server",
            "service_id:go-server-672d50a7",
            "version:1.0.0"
        ])
    );
    let pong = checks
        .iter()
        .find(|c| c["name"] == "go.micro.healthcheck.pong")
        .unwrap();
    assert_eq!(pong["status"], 2);
    assert_eq!(pong["message"], "Unsuccessful");
    let points = metric_points(&capture);
    let stats = points_named(&points, "healthcheck.stats");
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0]["value"], 123.0);
    assert!(stats[0]["tags"]
        .as_array()
        .unwrap()
        .contains(&json!("check:go.micro.healthcheck.ping")));
    assert_eq!(
        points_named(&points, "healthcheck.latency_ms")[0]["value"],
        12.5
    );
    assert!(points_named(&points, "healthcheck.msg").is_empty());

    // A change of status emits an event.
    let fixed = PONG
        .replace("\"status\": \"2\"", "\"status\": 1")
        .replace("Unsuccessful", "");
    assert_eq!(post(&m, &fixed).0, 200);
    let ev = wait_for("status change event", || {
        flushed_events(&capture)
            .into_iter()
            .find(|e| e["title"] == "go.micro.healthcheck.pong on go-server-672d50a7 is now OK")
    });
    assert_eq!(ev["alert_type"], "success");
    assert_eq!(ev["aggregation_key"], "go.micro.healthcheck.pong");
    assert!(ev["text"].as_str().unwrap().contains("ERROR"), "{ev}");
    let (_, hist) = get(&m, "?id=go.micro.healthcheck.pong&history=true");
    assert_eq!(hist["healthChecks"][0]["history"][0]["status"], 2);
}

#[test]
fn malformed_bodies_are_refused_whole() {
    let capture = CaptureServer::start(Behaviour::Ok);
    let m = Meterd::start(&config(&capture.url(), ""));
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "JSON"),
        ("42".into(), "object"),
        (r#"{"status": 1, "service": {"name": "s"}}"#.into(), "id"),
        (
            r#"{"id": "a", "status": 5, "service": {"name": "s"}}"#.into(),
            "status",
        ),
        (
            r#"{"id": "a", "status": 1, "service": {"name": ""}}"#.into(),
            "service.name",
        ),
        (
            r#"{"id": "a", "status": 1, "service": {"name": "s"}, "results": {"x": {}}}"#.into(),
            "results.x",
        ),
        (
            format!("[{PING}, {{\"id\": \"b\", \"status\": 1}}]"),
            "[1].service",
        ),
    ];
    for (body, field) in &cases {
        let (status, answer) = post(&m, body);
        assert_eq!(status, 400, "{body}");
        let err = answer["error"].as_str().unwrap_or_default();
        assert!(
            err.contains(field),
            "{body}: error {err:?} should name {field}"
        );
    }
    // Wrong content type: 400, not 415.
    let mut s = std::net::TcpStream::connect(m.addr("http")).unwrap();
    use std::io::{Read, Write};
    let req = format!(
        "POST /api/v1/healthchecks HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{PING}",
        PING.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    // Too large: 413 with a JSON error.
    let big = format!("[{}]", vec![PING; 20].join(","));
    let (status, answer) = post(&m, &big);
    assert_eq!(status, 413);
    assert!(answer["error"].is_string());
    // Nothing of any of it was stored (meterd's own checks aside).
    let (_, all) = get(&m, "");
    assert!(
        ids(&all).iter().all(|id| id.starts_with("meterd.")),
        "{all}"
    );
}

#[test]
fn stale_checks_turn_unknown_with_an_event() {
    let capture = CaptureServer::start(Behaviour::Ok);
    let m = Meterd::start(&config(
        &capture.url(),
        "stale_after = \"1s\"\nttl = \"1h\"",
    ));
    let body = r#"{"id": "worker.alive", "status": 1, "service": {"id": "w-1", "name": "worker"}}"#;
    assert_eq!(post(&m, body).0, 200);
    wait_for("UNKNOWN in the query", || {
        let (_, v) = get(&m, "?id=worker.alive");
        (v["healthChecks"][0]["status"] == 0).then_some(())
    });
    let ev = wait_for("UNKNOWN event", || {
        flushed_events(&capture)
            .into_iter()
            .find(|e| e["title"] == "worker.alive on w-1 is now UNKNOWN")
    });
    assert_eq!(ev["alert_type"], "warning");
    let unknown = wait_for("UNKNOWN service check", || {
        flushed_checks(&capture)
            .into_iter()
            .find(|c| c["name"] == "worker.alive" && c["status"] == 3)
    });
    assert!(unknown["tags"]
        .as_array()
        .unwrap()
        .contains(&json!("service:worker")));
    // Back to OK: another event.
    assert_eq!(post(&m, body).0, 200);
    wait_for("back-to-OK event", || {
        flushed_events(&capture)
            .into_iter()
            .find(|e| e["title"] == "worker.alive on w-1 is now OK")
    });
}

#[test]
fn service_check_lines_land_in_the_store() {
    let capture = CaptureServer::start(Behaviour::Ok);
    let m = Meterd::start(&config(&capture.url(), ""));
    send_udp(
        m.addr("udp"),
        &[b"_sc|db.up|2|h:db-7|#service:postgres,version:15|m:connection refused\n_sc|cache.up|0"],
    );
    let v = wait_for("_sc in the query", || {
        let (_, v) = get(&m, "?service=postgres");
        (!ids(&v).is_empty()).then_some(v)
    });
    let c = &v["healthChecks"][0];
    assert_eq!(c["id"], "db.up");
    assert_eq!(c["status"], 2);
    assert_eq!(c["error"], "connection refused");
    assert_eq!(
        c["service"],
        json!({"id": "db-7", "name": "postgres", "version": "15"})
    );
    let (_, cache) = get(&m, "?id=cache.up");
    assert_eq!(cache["healthChecks"][0]["status"], 1);
    assert_eq!(cache["healthChecks"][0]["service"]["id"], "mon-host");
    // The line's own service check is emitted once, with its own status.
    let sc = wait_for("the _sc service check flushed", || {
        flushed_checks(&capture)
            .into_iter()
            .find(|c| c["name"] == "db.up")
    });
    assert_eq!(sc["status"], 2);
    std::thread::sleep(Duration::from_millis(1500));
    let n = flushed_checks(&capture)
        .iter()
        .filter(|c| c["name"] == "db.up")
        .count();
    assert_eq!(n, 1, "an _sc line is emitted exactly once");
}

#[test]
fn meterd_checks_itself_and_the_cli_shows_it() {
    let capture = CaptureServer::start(Behaviour::Ok);
    let m = Meterd::start(&config(&capture.url(), ""));
    let v = wait_for("meterd's own checks", || {
        let (_, v) = get(&m, "?service=meterd");
        (ids(&v).len() >= 2).then_some(v)
    });
    let names = ids(&v);
    assert!(names.contains(&"meterd.ingest".to_owned()), "{names:?}");
    assert!(names.contains(&"meterd.sink.http".to_owned()), "{names:?}");
    let ingest = v["healthChecks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "meterd.ingest")
        .unwrap();
    assert_eq!(ingest["status"], 1);
    assert_eq!(ingest["interval"], 1);
    assert_eq!(ingest["service"]["id"], "mon-host");
    wait_for("meterd.ingest flushed as a service check", || {
        flushed_checks(&capture)
            .into_iter()
            .find(|c| c["name"] == "meterd.ingest" && c["status"] == 0)
    });

    let out = Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(["checks", "--service", "meterd", "--api"])
        .arg(m.addr("http").to_string())
        .output()
        .unwrap();
    assert_succeeded(&out);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("SERVICE"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains("meterd.ingest") && l.contains("OK")),
        "{table}"
    );
}

/// Finds Chromium; in CI (or with METERD_REQUIRE_SERVERS=1) its absence fails the test.
fn chromium() -> Option<String> {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(c.to_owned());
        }
    }
    let required =
        std::env::var_os("CI").is_some() || std::env::var_os("METERD_REQUIRE_SERVERS").is_some();
    assert!(
        !required,
        "chromium is required here: apt-get install -y chromium"
    );
    eprintln!("SKIP status_page_in_chromium: chromium not installed (apt-get install -y chromium)");
    None
}

fn chromium_args(dir: &std::path::Path) -> Vec<String> {
    vec![
        "--headless".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        format!("--user-data-dir={}", dir.join("profile").display()),
    ]
}

#[test]
fn status_page_in_chromium() {
    let Some(browser) = chromium() else { return };
    let capture = CaptureServer::start(Behaviour::Ok);
    let m = Meterd::start(&config(&capture.url(), ""));
    assert_eq!(post(&m, &format!("[{PING}, {PONG}]")).0, 200);
    wait_for("meterd's own checks", || {
        let (_, v) = get(&m, "?service=meterd");
        (!ids(&v).is_empty()).then_some(())
    });
    let url = format!("http://{}/", m.addr("http"));
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(&browser)
        .args(chromium_args(dir.path()))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    assert_succeeded(&out);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    // What a person sees: meterd's own group first, then the service, statuses in words.
    let meterd_at = dom.find("<h2>meterd</h2>").expect("meterd group");
    let server_at = dom.find("<h2>go-server</h2>").expect("go-server group");
    assert!(meterd_at < server_at, "meterd's own checks come first");
    assert!(dom.contains("go.micro.healthcheck.ping"));
    assert!(dom.contains("class=\"status OK\">OK<"));
    assert!(dom.contains("class=\"status ERROR\">ERROR<"));
    assert!(dom.contains("Unsuccessful"));
    assert!(dom.contains("lines/s"));
    assert!(dom.contains("http-equiv=\"refresh\" content=\"1\""));
    assert!(!dom.contains("<script"), "no JavaScript");

    let shot = dir.path().join("status.png");
    let out = Command::new(&browser)
        .args(chromium_args(dir.path()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1200,900")
        .arg(&url)
        .output()
        .unwrap();
    assert_succeeded(&out);
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    if let Ok(keep) = std::env::var("METERD_SCREENSHOT") {
        let _ = std::fs::copy(&shot, keep);
    }
}
