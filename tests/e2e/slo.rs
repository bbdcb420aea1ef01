//! Service level objectives (docs/slo.md): exact good/total counts from latency samples around the
//! threshold and from counters, a burst of errors turning the check CRITICAL and back to OK,
//! `GET /api/v1/slos`, `meterd checks` and the status page, history across SIGHUP and restarts.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn config(url: &str, slos: &str, state_file: &str) -> String {
    format!(
        r#"
hostname = "slo-host"
interval = "1s"
[ingest]
statsd_udp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
[[sinks]]
type = "http"
url = "{url}/flush"
{slos}
[slo]
state_file = "{state_file}"
"#
    )
}

const LATENCY: &str = r#"
[[slos]]
name = "checkout"
objective = 0.999
metric = "checkout.latency"
threshold = 300
tags = ["route:/pay"]
alerts = [{ windows = ["3s", "1s"], burn_rate = 14.4, status = "critical" }]
budget_window = "1m"
"#;

const RATIO: &str = r#"
[[slos]]
name = "api"
objective = 0.9
total = "api.requests"
errors = "api.errors"
alerts = [{ windows = ["3s", "1s"], burn_rate = 5, status = "critical" },
          { windows = ["2s"], burn_rate = 100, status = "warning" }]
budget_window = "1m"
"#;

fn slos(m: &Meterd) -> Vec<Value> {
    let (status, text) = m.http_get("/api/v1/slos");
    assert_eq!(status, 200, "{text}");
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap()
}

fn checks_named(capture: &CaptureServer, name: &str) -> Vec<Value> {
    documents(capture)
        .iter()
        .flat_map(|d| d["service_checks"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["name"] == name)
        .collect()
}

#[test]
fn latency_samples_around_the_threshold_count_exactly() {
    let capture = CaptureServer::start(Behaviour::Ok);
    let m = Meterd::start(&config(&capture.url(), LATENCY, ""));
    avoid_boundary(Duration::from_secs(1), Duration::from_millis(300));
    send_udp(
        m.addr("udp"),
        &[b"checkout.latency:300|ms|#route:/pay\n\
            checkout.latency:300.001|ms|#route:/pay\n\
            checkout.latency:299|ms|@0.5|#route:/pay\n\
            checkout.latency:301|ms|@0.5|#route:/pay\n\
            checkout.latency:10|h|@0.25|#route:/pay,az:b\n\
            checkout.latency:10|ms|#route:/other\n\
            other.latency:10|ms|#route:/pay"],
    );
    // good: 300 (1) + 299 @0.5 (2) + 10 @0.25 (4) = 7; bad: 300.001 (1) + 301 @0.5 (2) = 3.
    let points = wait_for("slo.total of 10", || {
        let p = metric_points(&capture);
        (sum_tagged(&p, "slo.total", "slo:checkout") == 10.0).then_some(p)
    });
    assert_eq!(sum_tagged(&points, "slo.good", "slo:checkout"), 7.0);
    let total = points_named(&points, "slo.total");
    assert!(total.iter().all(|p| p["kind"] == "counter"), "{total:?}");
    let burn = points_named(&points, "slo.burn_rate");
    let windows: Vec<&Value> = burn
        .iter()
        .flat_map(|p| p["tags"].as_array().unwrap())
        .collect();
    assert!(windows.iter().any(|t| *t == "window:3s"), "{burn:?}");
    assert!(windows.iter().any(|t| *t == "window:1s"), "{burn:?}");
    assert!(!points_named(&points, "slo.error_budget_remaining").is_empty());
    // The API: the budget window's counts, the SLI, burn rates by window as written.
    let v = &slos(&m)[0];
    assert_eq!(v["name"], "checkout");
    assert_eq!(v["objective"], 0.999);
    assert_eq!(v["good"], 7.0);
    assert_eq!(v["total"], 10.0);
    assert_eq!(v["sli"], 0.7);
    // 3 bad of 10 at 0.1 % allowed: 299 budgets spent.
    assert!(
        (v["error_budget_remaining"].as_f64().unwrap() - (1.0 - 300.0)).abs() < 1e-6,
        "{v}"
    );
    assert!(v["burn_rates"]["3s"].is_number(), "{v}");
    assert!(v["burn_rates"]["1s"].is_number(), "{v}");
    assert!(
        ["OK", "WARNING", "CRITICAL"].contains(&v["status"].as_str().unwrap()),
        "{v}"
    );
}

#[test]
fn a_burst_of_errors_turns_critical_within_one_flush_and_back_to_ok() {
    let capture = CaptureServer::start(Behaviour::Ok);
    let m = Meterd::start(&config(&capture.url(), RATIO, ""));
    // Quiet intervals first: OK.
    wait_for("an OK slo.api check", || {
        checks_named(&capture, "slo.api")
            .into_iter()
            .find(|c| c["status"] == 0)
    });
    avoid_boundary(Duration::from_secs(1), Duration::from_millis(300));
    send_udp(m.addr("udp"), &[b"api.requests:100|c\napi.errors:80|c"]);
    // The flush that carries the burst's counts also carries the CRITICAL check: 80 bad of 100
    // at 10 % allowed burns 8 over both windows.
    let doc = wait_for("the burst's flush", || {
        documents(&capture).into_iter().find(|d| {
            d["metrics"].as_array().is_some_and(|ms| {
                ms.iter()
                    .any(|p| p["name"] == "slo.total" && p["value"] == 100.0)
            })
        })
    });
    let check = doc["service_checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "slo.api")
        .cloned()
        .unwrap();
    assert_eq!(check["status"], 2, "{check}");
    let message = check["message"].as_str().unwrap();
    assert!(
        message.contains("3s + 1s at burn rate 5 (CRITICAL)"),
        "{message}"
    );
    assert!(message.contains("1s 8.000"), "{message}");
    assert!(check["tags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == "slo:api"));
    let good: f64 = doc["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "slo.good")
        .map(|p| p["value"].as_f64().unwrap())
        .sum();
    assert_eq!(good, 20.0);
    let events: Vec<Value> = doc["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events
            .iter()
            .any(|e| e["title"] == "slo.api is now CRITICAL"),
        "{events:?}"
    );
    // The 1 s window holds no traffic at the next flush: OK again, and an event says so.
    wait_for("slo.api OK after the burst", || {
        let docs = documents(&capture);
        let after = docs.iter().skip_while(|d| {
            !d["events"]
                .as_array()
                .is_some_and(|es| es.iter().any(|e| e["title"] == "slo.api is now CRITICAL"))
        });
        after
            .flat_map(|d| d["events"].as_array().cloned().unwrap_or_default())
            .find(|e| e["title"] == "slo.api is now OK")
    });
    // `meterd checks` and the status page list it.
    let out = Command::new(env!("CARGO_BIN_EXE_meterd"))
        .args(["checks", "--api"])
        .arg(m.addr("http").to_string())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().any(|l| l.contains("slo.api")), "{table}");
    let (status, page) = m.http_get("/");
    assert_eq!(status, 200);
    assert!(
        page.contains("<h2>SLOs</h2>") && page.contains(">api<"),
        "{page}"
    );
    let v = &slos(&m)[0];
    assert_eq!(v["total"], 100.0);
    assert_eq!(v["good"], 20.0);
}

#[test]
fn history_survives_sighup_and_restarts_and_a_changed_slo_starts_over() {
    let capture = CaptureServer::start(Behaviour::Ok);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("slo-state.json");
    let state = state.display().to_string();
    let m = Meterd::start(&config(&capture.url(), RATIO, &state));
    send_udp(m.addr("udp"), &[b"api.requests:10|c\napi.errors:1|c"]);
    wait_for("10 events in the budget window", || {
        (slos(&m)[0]["total"] == 10.0).then_some(())
    });
    // SIGHUP with the same SLO: the history stays.
    let pid = libc::pid_t::try_from(m.pid()).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_for("the reload", || {
        m.log().contains("SIGHUP: config reloaded").then_some(())
    });
    assert_eq!(slos(&m)[0]["total"], 10.0);
    // A restart reads the state file.
    let mut m = m;
    m.terminate();
    let m = Meterd::start(&config(&capture.url(), RATIO, &state));
    assert_eq!(slos(&m)[0]["total"], 10.0);
    assert_eq!(slos(&m)[0]["good"], 9.0);
    // A changed objective restarts the history, on SIGHUP as at start.
    let changed = config(&capture.url(), &RATIO.replace("0.9", "0.95"), &state);
    std::fs::write(m.dir.path().join("meterd.toml"), changed).unwrap();
    let pid = libc::pid_t::try_from(m.pid()).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    wait_for("the changed SLO's empty history", || {
        let v = &slos(&m)[0];
        (v["objective"] == 0.95 && v["total"] == 0.0).then_some(())
    });
}

const FLEET_SLOS: &str = r#"
[[slos]]
name = "api"
objective = 0.9
total = "api.requests"
errors = "api.errors"
budget_window = "1m"
alerts = [{ windows = ["3s", "1s"], burn_rate = 5, status = "critical" }]

[[slos]]
name = "pay"
objective = 0.99
metric = "pay.latency"
threshold = 100
budget_window = "1m"
alerts = [{ windows = ["3s", "1s"], burn_rate = 14.4, status = "critical" }]
"#;

/// Two locals (one behind a proxy that answers its first imports too late, so the local retries
/// parts the global already merged) and the global itself: the global's SLOs count every
/// host's events once.
#[test]
fn two_locals_and_a_global_give_the_fleets_exact_counts_once() {
    let global_sink = CaptureServer::start(Behaviour::Ok);
    let local_sink = CaptureServer::start(Behaviour::Ok);
    let g = Meterd::start(&format!(
        "{}{FLEET_SLOS}",
        global_config(&global_sink.url(), "127.0.0.1:0", "1s")
    ));
    let proxy = FaultProxy::start(g.addr("http"), Schedule::Always(Fault::LateAnswer));
    let direct = format!("http://{}", g.addr("http"));
    let l1 = Meterd::start(&format!(
        "{}{FLEET_SLOS}",
        local_config("local-1", &local_sink.url(), &[direct], "1s", 10)
    ));
    let l2 = Meterd::start(&format!(
        "{}{FLEET_SLOS}",
        local_config("local-2", &local_sink.url(), &[proxy.url()], "1s", 10)
    ));
    send_udp(
        l1.addr("udp"),
        &[b"api.requests:100|c\napi.errors:5|c\npay.latency:100|ms\npay.latency:101|ms|@0.5"],
    );
    send_udp(
        l2.addr("udp"),
        &[b"api.requests:50|c|@0.5\napi.errors:10|c\npay.latency:50|ms|@0.25"],
    );
    send_udp(g.addr("udp"), &[b"api.requests:7|c\npay.latency:7|ms"]);
    // The late answers make local-2 send its import again: a duplicate the global answers
    // without adding it twice.
    wait_for("a late answer", || {
        (proxy.count(Fault::LateAnswer) >= 2).then_some(())
    });
    proxy.set(Fault::Pass);
    // api: total 100 + 100 + 7 = 207, errors 15; pay: total 1 + 2 + 4 + 1 = 8, bad 2.
    let want = |v: &Value, total: f64, good: f64| v["total"] == total && v["good"] == good;
    wait_for("the fleet's counts at the global", || {
        let v = slos(&g);
        (want(&v[0], 207.0, 192.0) && want(&v[1], 8.0, 6.0)).then_some(())
    });
    wait_for("a duplicate import", || {
        (g.prom("meterd_import_duplicates_total").unwrap_or(0.0) >= 1.0).then_some(())
    });
    // Three more intervals: a second copy of any import would show up now.
    let settled = g.prom("meterd_import_received_total").unwrap_or(0.0);
    wait_for("three more imports", || {
        (g.prom("meterd_import_received_total").unwrap_or(0.0) >= settled + 3.0).then_some(())
    });
    let v = slos(&g);
    assert!(want(&v[0], 207.0, 192.0), "{v:?}");
    assert!(want(&v[1], 8.0, 6.0), "{v:?}");
    // The global emitted the fleet's counts; the locals evaluate nothing.
    let points = metric_points(&global_sink);
    assert_eq!(sum_tagged(&points, "slo.total", "slo:api"), 207.0);
    assert_eq!(sum_tagged(&points, "slo.good", "slo:pay"), 6.0);
    assert!(points_named(&metric_points(&local_sink), "slo.total").is_empty());
}
