//! The command line: default-config, check-config, `meterd send` (arguments and stdin), and the
//! HTTP API basics.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::support::udp_to_http::one_flush;
use crate::support::*;

#[test]
fn default_config_prints_the_example_file() {
    let out = meterd_cli().arg("default-config").output().unwrap();
    assert!(out.status.success());
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
            .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), example);
}

#[test]
fn check_config_accepts_the_example() {
    let out = meterd_cli()
        .arg("check-config")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
        .output()
        .unwrap();
    assert_succeeded(&out);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("interval = \"10s\""), "{stdout}");
}

#[test]
fn check_config_names_the_bad_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "interval = \"10s\"\n[ingest]\nreaders = 2\nshardz = 4\n",
    )
    .unwrap();
    let err = check_config_refused(&path);
    assert!(err.contains("shardz") && err.contains("line 4"), "{err}");

    std::fs::write(&path, "[http]\nmax_body_bytes = \"big\"\n").unwrap();
    let err = check_config_refused(&path);
    assert!(err.contains("http.max_body_bytes (line 2)"), "{err}");
}

#[test]
fn help_explains_each_command() {
    let out = meterd_cli().arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for cmd in ["check-config", "default-config", "send", "top", "--config"] {
        assert!(text.contains(cmd), "{cmd} missing from --help:\n{text}");
    }
}

#[test]
fn healthz_and_metrics_answer() {
    let m = Meterd::start(
        r#"
interval = "1h"
[ingest]
statsd_udp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
"#,
    );
    let (status, body) = m.http_get("/healthz");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert!(v["uptime_s"].is_u64());
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

    send_udp(m.addr("udp"), &[b"a:1|c\nb:1|c\nbad line\n"]);
    wait_for("lines counted at /metrics", || {
        let (_, text) = m.http_get("/metrics");
        (text.contains("meterd_lines_received_total 3")
            && text.contains("meterd_lines_invalid_total{reason=\"bad_name\"} 1"))
        .then_some(())
    });
    let (_, text) = m.http_get("/metrics");
    assert!(
        text.contains("# TYPE meterd_packets_received_total counter"),
        "{text}"
    );
    assert_eq!(m.http_get("/nope").0, 404);
}

#[test]
fn meterd_send_delivers_arguments_and_stdin() {
    let points = one_flush("", "", |m| {
        let to = m.addr("udp").to_string();
        let out = Command::new(env!("CARGO_BIN_EXE_meterd"))
            .args(["send", "--to", &to, "cli.a:1|c", "cli.b:2|g|#k:v"])
            .output()
            .expect("run meterd send");
        assert_succeeded(&out);
        assert!(String::from_utf8_lossy(&out.stderr).contains("sent 2 line(s)"));

        let mut child = Command::new(env!("CARGO_BIN_EXE_meterd"))
            .args(["send", "--to", &to, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meterd send -");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"cli.a:3|c\n\ncli.c:1|c|#x:y\r\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_succeeded(&out);
        assert!(String::from_utf8_lossy(&out.stderr).contains("sent 2 line(s)"));
        m.wait_lines(4);
    });
    assert_eq!(only_point(&points, "cli.a")["value"], 4.0);
    let b = only_point(&points, "cli.b");
    assert_eq!(
        (b["value"].as_f64(), &b["kind"]),
        (Some(2.0), &json!("gauge"))
    );
    assert_eq!(b["tags"], json!(["k:v"]));
    assert_eq!(only_point(&points, "cli.c")["tags"], json!(["x:y"]));
}
