//! Hardening: SIGHUP reload without loss, secrets that never leak.

use std::process::Command;

use crate::support::*;

fn sighup(m: &Meterd) {
    let pid = libc::pid_t::try_from(m.pid()).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
}

fn reload_config(url: &str, tags: &str, percentile: &str, max_series: usize) -> String {
    format!(
        r#"
interval = "1s"
tags = [{tags}]
percentiles = [{percentile}]
max_series = {max_series}
[ingest]
statsd_udp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
[[sinks]]
type = "http"
url = "{url}/flush"
"#
    )
}

#[test]
fn sighup_reloads_sinks_tags_percentiles_and_limits_without_loss() {
    let a = CaptureServer::start(Behaviour::Ok);
    let b = CaptureServer::start(Behaviour::Ok);
    let m = Meterd::start(&reload_config(&a.url(), "\"v:1\"", "0.5", 1000));
    let udp = m.addr("udp");
    let sent = std::cell::Cell::new(0u64);
    let send = |n: u64| {
        for _ in 0..n {
            send_udp(udp, &[b"reload.count:1|c\nreload.timer:5|ms"]);
        }
        sent.set(sent.get() + n);
    };
    send(10);
    wait_for("a flush at the first sink", || {
        let pts = metric_points(&a);
        points_named(&pts, "reload.timer.50percentile")
            .first()
            .filter(|p| p["tags"] == serde_json::json!(["v:1"]))
            .cloned()
    });

    // New sink, tags, percentiles; the listeners (ingest, http) are the same on both sides.
    let path = m.dir.path().join("meterd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let next = text
        .replace(&a.url(), &b.url())
        .replace("\"v:1\"", "\"v:2\"")
        .replace("percentiles = [0.5]", "percentiles = [0.9]");
    std::fs::write(&path, next).unwrap();
    send(10);
    sighup(&m);
    wait_for("reload logged", || {
        m.log().contains("config reloaded").then_some(())
    });
    send(10);
    wait_for("a flush at the new sink with the new settings", || {
        let pts = metric_points(&b);
        points_named(&pts, "reload.timer.90percentile")
            .first()
            .filter(|p| p["tags"] == serde_json::json!(["v:2"]))
            .cloned()
    });
    // Nothing lost across the switch: every increment reached one of the two sinks.
    wait_for("all increments delivered", || {
        let total = sum_named(&metric_points(&a), "reload.count")
            + sum_named(&metric_points(&b), "reload.count");
        (total == sent.get() as f64).then_some(())
    });

    // An invalid file is refused, the running config stays.
    std::fs::write(&path, "interval = \"soon\"\n").unwrap();
    sighup(&m);
    wait_for("refusal logged", || {
        m.log().contains("config refused").then_some(())
    });
    let before = metric_points(&b).len();
    send(5);
    wait_for("still flushing to the new sink", || {
        (metric_points(&b).len() > before).then_some(())
    });
    assert!(
        m.log().contains("interval"),
        "the refusal names the key:\n{}",
        m.log()
    );
}

#[test]
fn secrets_never_leak() {
    const SECRET: &str = "PLANTED-SECRET-7f3a9c";
    let refusing = CaptureServer::start(Behaviour::Status(403));
    let config = format!(
        r#"
interval = "1s"
[ingest]
statsd_udp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
import_token = "${{METERD_TEST_IMPORT}}"
[[sinks]]
type = "datadog"
url = "{}"
api_key = "${{METERD_TEST_DD}}"
[[sinks]]
type = "http"
url = "{}/x"
headers = {{ Authorization = "${{METERD_TEST_DD}}" }}
"#,
        refusing.url(),
        refusing.url()
    );
    let env = [("METERD_TEST_DD", SECRET), ("METERD_TEST_IMPORT", SECRET)];
    let m = Meterd::start_with_env(&config, &env);
    send_udp(m.addr("udp"), &[b"leak.test:1|c"]);
    // Let failing deliveries get logged.
    wait_for("the refusing sink saw requests", || {
        (refusing.requests().len() >= 2).then_some(())
    });
    wait_for("the failure logged", || {
        m.log().contains("WARN").then_some(())
    });
    assert!(refusing
        .requests()
        .iter()
        .any(|r| r.headers.get("dd-api-key").map(String::as_str) == Some(SECRET)));
    let (_, metrics) = m.http_get("/metrics");
    let (_, checks) = m.http_get("/api/v1/healthchecks");
    let (_, page) = m.http_get("/");
    for (what, text) in [
        ("log", m.log()),
        ("/metrics", metrics),
        ("healthchecks", checks),
        ("status page", page),
    ] {
        assert!(!text.contains(SECRET), "the secret leaked into {what}");
    }
    // check-config prints the ${ENV} reference, never the value.
    let path = m.dir.path().join("meterd.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_meterd"))
        .arg("check-config")
        .arg(&path)
        .envs(env)
        .output()
        .unwrap();
    assert_succeeded(&out);
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(printed.contains("${METERD_TEST_DD}"), "{printed}");
    assert!(
        !printed.contains(SECRET),
        "check-config leaked the secret:\n{printed}"
    );
    // A literal secret in the file prints masked.
    let literal = std::fs::read_to_string(&path)
        .unwrap()
        .replace("${METERD_TEST_DD}", SECRET);
    std::fs::write(&path, literal).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meterd"))
        .arg("check-config")
        .arg(&path)
        .envs(env)
        .output()
        .unwrap();
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !printed.contains(SECRET),
        "check-config leaked a literal secret:\n{printed}"
    );
    // Health-check posts can require a token too.
    let guarded = Meterd::start_with_env(
        "[ingest]\nstatsd_udp = [\"127.0.0.1:0\"]\n[http]\nlisten = \"127.0.0.1:0\"\nhealthcheck_token = \"${METERD_TEST_DD}\"\n",
        &env,
    );
    let body = br#"{"id": "x", "status": 1, "service": {"name": "s"}}"#;
    assert_eq!(
        http_request(guarded.addr("http"), "POST", "/api/v1/healthchecks", body).0,
        401
    );
    // A wrong import token is refused without echoing anything.
    let (status, body) = http_request(m.addr("http"), "POST", "/import", b"x");
    assert_eq!(status, 401);
    assert!(!body.contains(SECRET));
}
