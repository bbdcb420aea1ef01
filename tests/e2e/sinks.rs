//! Sinks against a capturing HTTP server: the `datadog` sink's v1 API requests (API key from the
//! environment, gzip, counters as rates), failing and hanging sinks next to a healthy one, drops
//! counted exactly for refused, 500, hanging and slow sinks, the console sink's JSON lines, and
//! the `http` sink's gzip and custom headers.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::support::*;

const DD_KEY: &str = "dd-test-key-5f1c0a9e7b";

fn dd_config(url: &str) -> String {
    format!(
        r#"
hostname = "dd-host"
interval = "1h"
[ingest]
statsd_udp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
[[sinks]]
type = "datadog"
url = "{url}"
api_key = "${{METERD_TEST_DD_KEY}}"
"#
    )
}

fn series_named<'a>(series: &'a [Value], name: &str) -> Vec<&'a Value> {
    series.iter().filter(|s| s["metric"] == name).collect()
}

#[test]
fn datadog_sink_speaks_the_v1_api() {
    avoid_boundary(Duration::from_secs(3600), Duration::from_secs(10));
    let capture = CaptureServer::start(Behaviour::Ok);
    let mut m = Meterd::start_with_env(
        &dd_config(&capture.url()),
        &[("METERD_TEST_DD_KEY", DD_KEY)],
    );
    let started = unix_now();
    send_udp(
        m.addr("udp"),
        &[
            b"dd.count:3600|c|#env:test\ndd.count:3600|c|#env:test\ndd.gauge:42|g|#b,a\ndd.elsewhere:7|g|#host:other-host",
            b"_sc|dd.check|2|#service:api|m:boom",
            b"_e{6,4}:deploy|v1.2|t:success|#env:test",
        ],
    );
    m.wait_lines(6);
    let status = m.terminate();
    assert!(status.success(), "exit {status}:\n{}", m.log());
    let ended = unix_now();

    let requests = capture.requests();
    assert!(
        !requests.is_empty(),
        "nothing reached the sink:\n{}",
        m.log()
    );
    for r in &requests {
        assert_eq!(r.method, "POST", "{}", r.path);
        assert_eq!(
            r.headers.get("dd-api-key").map(String::as_str),
            Some(DD_KEY),
            "{}",
            r.path
        );
        assert_eq!(
            r.headers.get("content-encoding").map(String::as_str),
            Some("gzip"),
            "{}",
            r.path
        );
        assert!(r.raw.starts_with(&[0x1f, 0x8b]), "{}: not gzip", r.path);
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
    }

    // Series: counters as `rate` (value ÷ interval), gauges as `gauge`, tags sorted, host.
    let series: Vec<Value> = capture
        .requests_to("/api/v1/series")
        .iter()
        .flat_map(|r| {
            r.json()["series"]
                .as_array()
                .cloned()
                .expect("series array")
        })
        .collect();
    let count = series_named(&series, "dd.count");
    assert_eq!(count.len(), 1, "{count:?}");
    assert_eq!(count[0]["type"], "rate");
    assert_eq!(count[0]["interval"], 3600);
    assert_eq!(count[0]["points"][0][1].as_f64(), Some(2.0), "7200 / 3600");
    let ts = count[0]["points"][0][0].as_i64().expect("timestamp");
    assert!((started..=ended).contains(&ts), "{ts}");
    assert_eq!(count[0]["tags"], json!(["env:test"]));
    assert_eq!(count[0]["host"], "dd-host");
    let gauge = series_named(&series, "dd.gauge");
    assert_eq!(gauge.len(), 1, "{gauge:?}");
    assert_eq!(gauge[0]["type"], "gauge");
    assert_eq!(gauge[0]["points"][0][1].as_f64(), Some(42.0));
    assert_eq!(gauge[0]["tags"], json!(["a", "b"]));
    assert_eq!(gauge[0]["host"], "dd-host");
    let elsewhere = series_named(&series, "dd.elsewhere");
    assert_eq!(elsewhere.len(), 1, "{elsewhere:?}");
    assert_eq!(elsewhere[0]["host"], "other-host");
    assert_eq!(elsewhere[0]["tags"], json!([]));
    assert!(
        !series_named(&series, "meterd.lines.received").is_empty(),
        "self-metrics go to every sink"
    );

    // Service checks: one array per flush.
    let checks = capture.requests_to("/api/v1/check_run");
    assert_eq!(checks.len(), 1, "{checks:?}");
    let body = checks[0].json();
    let body: Vec<&Value> = body
        .as_array()
        .expect("check_run takes an array")
        .iter()
        .filter(|c| c["check"] == "dd.check")
        .collect();
    assert_eq!(body.len(), 1, "{body:?}");
    assert_eq!(body[0]["check"], "dd.check");
    assert_eq!(body[0]["status"], 2);
    assert_eq!(body[0]["host_name"], "dd-host");
    assert_eq!(body[0]["message"], "boom");
    assert_eq!(body[0]["tags"], json!(["service:api"]));
    assert!(body[0]["timestamp"]
        .as_i64()
        .is_some_and(|t| (started..=ended).contains(&t)));

    // Events: one object per request.
    let events = capture.requests_to("/api/v1/events");
    assert_eq!(events.len(), 1, "{events:?}");
    let event = events[0].json();
    assert_eq!(event["title"], "deploy");
    assert_eq!(event["text"], "v1.2");
    assert_eq!(event["alert_type"], "success");
    assert_eq!(event["priority"], "normal");
    assert_eq!(event["host"], "dd-host");
    assert_eq!(event["tags"], json!(["env:test"]));
    assert!(event["date_happened"]
        .as_i64()
        .is_some_and(|t| (started..=ended).contains(&t)));

    assert!(
        !m.log().contains(DD_KEY),
        "the API key leaked into the log:\n{}",
        m.log()
    );
}

#[test]
fn datadog_api_key_stays_out_of_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dd.toml");
    std::fs::write(&path, dd_config("http://127.0.0.1:9")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_meterd"))
        .arg("check-config")
        .arg(&path)
        .env("METERD_TEST_DD_KEY", DD_KEY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("${METERD_TEST_DD_KEY}"), "{stdout}");
    assert!(!stdout.contains(DD_KEY) && !stderr.contains(DD_KEY));

    // Without the variable the config is refused, naming the key and the variable.
    let out = Command::new(env!("CARGO_BIN_EXE_meterd"))
        .arg("check-config")
        .arg(&path)
        .env_remove("METERD_TEST_DD_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("api_key") && stderr.contains("METERD_TEST_DD_KEY"),
        "{stderr}"
    );
}

/// Whether `ts` holds `n` consecutive whole seconds.
fn consecutive_run(ts: &BTreeSet<i64>, n: usize) -> bool {
    let v: Vec<i64> = ts.iter().copied().collect();
    v.windows(n).any(|w| w.windows(2).all(|p| p[1] == p[0] + 1))
}

#[test]
fn failing_and_hanging_sinks_cost_the_healthy_one_nothing() {
    let failing = CaptureServer::start(Behaviour::Status(500));
    let hanging = CaptureServer::start(Behaviour::Hang);
    let healthy = CaptureServer::start(Behaviour::Ok);
    let sink = |url: String| {
        format!(
            "[[sinks]]\ntype = \"http\"\nurl = \"{url}/x\"\ntimeout = \"200ms\"\nmax_retries = 2\n"
        )
    };
    let config = format!(
        r#"
hostname = "test-host"
interval = "1s"
[ingest]
statsd_udp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
{}{}{}"#,
        sink(failing.url()),
        sink(hanging.url()),
        sink(healthy.url())
    );
    let mut m = Meterd::start(&config);

    // A counter a few times over about three seconds.
    let sends = 30;
    let addr = m.addr("udp");
    let sender = std::thread::spawn(move || {
        for _ in 0..sends {
            send_udp(addr, &[b"fs.count:1|c"]);
            std::thread::sleep(Duration::from_millis(100));
        }
    });

    // The healthy sink gets one flush per second, on time, while the others fail.
    wait_for("three consecutive flushes at the healthy sink", || {
        let stamps: BTreeSet<i64> = documents(&healthy)
            .iter()
            .filter_map(|d| {
                points_named(d["metrics"].as_array()?, "meterd.lines.received").first()?
                    ["timestamp"]
                    .as_i64()
            })
            .collect();
        consecutive_run(&stamps, 3).then_some(())
    });
    sender.join().unwrap();
    wait_for("every increment delivered to the healthy sink", || {
        (sum_named(&metric_points(&healthy), "fs.count") == f64::from(sends)).then_some(())
    });
    assert!(
        !failing.requests().is_empty(),
        "the 500 sink was never tried"
    );
    assert!(
        !hanging.requests().is_empty(),
        "the hanging sink was never tried"
    );

    wait_for("drops and errors counted per sink", || {
        let (_, text) = m.http_get("/metrics");
        let get = |s: &str| prom_value(&text, s);
        let failing_ok = get("meterd_sink_dropped_total{sink=\"http\"}")? > 0.0
            && get("meterd_sink_errors_total{sink=\"http\"}")? > 0.0;
        let hanging_ok = get("meterd_sink_dropped_total{sink=\"http-2\"}")? > 0.0
            && get("meterd_sink_errors_total{sink=\"http-2\"}")? > 0.0;
        let healthy_ok = get("meterd_sink_dropped_total{sink=\"http-3\"}")? == 0.0
            && get("meterd_sink_errors_total{sink=\"http-3\"}")? == 0.0
            && get("meterd_sink_sent_total{sink=\"http-3\"}")? > 0.0;
        (failing_ok && hanging_ok && healthy_ok).then_some(())
    });
    // Retries are bounded: at most 1 + max_retries attempts per flush at the failing sink.
    let flushes_so_far = documents(&healthy).len() + 1;
    assert!(
        failing.requests().len() <= 3 * (flushes_so_far + 1),
        "{} attempts for {flushes_so_far} flushes",
        failing.requests().len()
    );

    // Shutdown is bounded too, even with a sink that never answers.
    let stopping = Instant::now();
    let status = m.terminate();
    assert!(status.success(), "exit {status}:\n{}", m.log());
    assert!(
        stopping.elapsed() < Duration::from_secs(12),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    assert_eq!(
        sum_named(&metric_points(&healthy), "fs.count"),
        f64::from(sends)
    );
}

#[test]
fn console_sink_json_writes_one_object_per_flush() {
    let mut m = Meterd::start(&console_config("format = \"json\""));
    let parse = |m: &Meterd| -> Vec<Value> {
        m.stdout()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line is not one JSON object ({e}): {l}"))
            })
            .collect()
    };
    send_udp(m.addr("udp"), &[b"console.count:2|c|#b,a"]);
    wait_for("two flushes on stdout", || {
        let docs = parse(&m);
        (docs.len() >= 2 && sum_named(&flatten(&docs), "console.count") == 2.0).then_some(())
    });
    send_udp(m.addr("udp"), &[b"console.count:3|c|#a,b"]);
    m.wait_lines(2);
    let status = m.terminate();
    assert!(status.success(), "exit {status}:\n{}", m.log());

    let docs = wait_for("the final flush on stdout", || {
        let docs = parse(&m);
        (sum_named(&flatten(&docs), "console.count") == 5.0).then_some(docs)
    });
    assert!(docs.len() >= 3, "two regular flushes and the final one");
    for d in &docs {
        let keys: BTreeSet<&str> = d
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["metrics", "service_checks", "events"]),
            "{d}"
        );
        let own = points_named(d["metrics"].as_array().unwrap(), "meterd.lines.received");
        assert_eq!(own.len(), 1, "one flush per object: {d}");
    }
    let points = flatten(&docs);
    let counts = points_named(&points, "console.count");
    assert!(counts
        .iter()
        .all(|p| p["tags"] == json!(["a", "b"]) && p["host"] == "console-host"));
}

/// The default console table shows the user's series and one summary line of meterd's own
/// state; `self_metrics = "full"` shows meterd's rows too.
#[test]
fn console_table_shows_the_users_series_then_one_summary_line() {
    for (mode, want_own_rows) in [("summary", false), ("full", true)] {
        let mut m = Meterd::start(&console_config(&format!("self_metrics = \"{mode}\"")));
        send_udp(
            m.addr("udp"),
            &[b"app.requests:3|c|#route:/pay\napp.latency:12|ms"],
        );
        m.wait_lines(2);
        // The flush that holds the user's counter: its block runs to the next "flush at".
        let block = wait_for("a table with the user's counter", || {
            let out = m.stdout();
            out.split("flush at ")
                .find(|b| b.contains("  app.requests "))
                .map(str::to_owned)
        });
        let status = m.terminate();
        assert!(status.success(), "exit {status}:\n{}", m.log());
        assert!(block.contains("  app.latency.count "), "{mode}: {block}");
        let own_rows = block
            .lines()
            .filter(|l| l.starts_with("  meterd.") || l.starts_with("  healthcheck."))
            .count();
        let summary: Vec<&str> = block
            .lines()
            .filter(|l| l.starts_with("meterd: "))
            .collect();
        if want_own_rows {
            assert!(own_rows > 10, "{mode}: {block}");
            assert!(summary.is_empty(), "{mode}: {block}");
        } else {
            assert_eq!(own_rows, 0, "{mode}: {block}");
            assert_eq!(summary.len(), 1, "{mode}: {block}");
            let line = summary[0];
            assert!(
                line.starts_with("meterd: 2 lines in 1 packets, 0 invalid, 0 dropped, 0 kernel drops; 2 series; sinks: 1 OK"),
                "{line}"
            );
            // The user's rows come first, the summary last.
            assert_eq!(block.trim_end().lines().last(), Some(line), "{block}");
        }
    }
}

/// meterd on loopback with one console sink taking `keys`, flushing every second.
fn console_config(keys: &str) -> String {
    format!(
        r#"
hostname = "console-host"
interval = "1s"
[ingest]
statsd_udp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
[[sinks]]
type = "console"
{keys}
"#
    )
}

fn flatten(docs: &[Value]) -> Vec<Value> {
    docs.iter()
        .flat_map(|d| d["metrics"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn http_sink_gzip_and_custom_headers() {
    avoid_boundary(Duration::from_secs(3600), Duration::from_secs(10));
    let (m, capture) = run_to_exit(
        |url| {
            format!(
                r#"
hostname = "test-host"
interval = "1h"
[ingest]
statsd_udp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
[[sinks]]
type = "http"
url = "{url}/ingest?src=meterd"
compression = "gzip"
headers = {{ "X-Test" = "yes" }}
"#
            )
        },
        |m| {
            send_udp(m.addr("udp"), &[b"gz.count:4|c|#k:v"]);
            m.wait_lines(1);
        },
    );
    let requests = capture.requests();
    assert_eq!(requests.len(), 1, "{requests:?}\n{}", m.log());
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/ingest?src=meterd");
    assert_eq!(r.headers.get("x-test").map(String::as_str), Some("yes"));
    assert_eq!(
        r.headers.get("content-encoding").map(String::as_str),
        Some("gzip")
    );
    assert!(r.raw.starts_with(&[0x1f, 0x8b]), "body is not gzip");
    assert_ne!(r.raw, r.body);
    let doc = r.json();
    let points = doc["metrics"].as_array().unwrap();
    let gz = points_named(points, "gz.count");
    assert_eq!(gz.len(), 1, "{gz:?}");
    assert_eq!(gz[0]["value"], 4.0);
    assert_eq!(gz[0]["tags"], json!(["k:v"]));
}

/// Items (points, checks, events) in every document a capture server received.
fn items_received(server: &CaptureServer) -> f64 {
    documents(server)
        .iter()
        .map(|d| {
            ["metrics", "service_checks", "events"]
                .iter()
                .map(|k| d[*k].as_array().map_or(0, Vec::len))
                .sum::<usize>()
        })
        .sum::<usize>() as f64
}

#[test]
fn refused_failing_hanging_and_slow_sinks_are_counted_exactly() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let failing = CaptureServer::start(Behaviour::Status(500));
    let hanging = CaptureServer::start(Behaviour::Hang);
    let slow = CaptureServer::start(Behaviour::Slow(Duration::from_secs(1)));
    let healthy = CaptureServer::start(Behaviour::Ok);
    let sink = |name: &str, url: &str, timeout: &str| {
        format!(
            "[[sinks]]\nname = \"{name}\"\ntype = \"http\"\nurl = \"{url}/x\"\ntimeout = \"{timeout}\"\nmax_retries = 1\n"
        )
    };
    let config = format!(
        "hostname = \"test-host\"\ninterval = \"3s\"\n[ingest]\nstatsd_udp = [\"127.0.0.1:0\"]\n\
         [http]\nlisten = \"127.0.0.1:0\"\n{}{}{}{}{}",
        sink("refused", &refused_url, "300ms"),
        sink("failing", &failing.url(), "300ms"),
        sink("hanging", &hanging.url(), "300ms"),
        sink("slow", &slow.url(), "1500ms"),
        sink("healthy", &healthy.url(), "1500ms"),
    );
    let m = Meterd::start(&config);

    // A steady stream for about 7 s (three or four flushes): 2 lines every 10 ms.
    let addr = m.addr("udp");
    let datagrams = 700u64;
    let sender = std::thread::spawn(move || {
        let start = Instant::now();
        for i in 0..datagrams {
            let due = start + Duration::from_millis(10 * i);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            send_udp(addr, &[b"steady.count:1|c\nsteady.ms:3|ms"]);
        }
    });
    sender.join().unwrap();
    m.wait_lines(2 * datagrams);
    wait_for("every increment delivered to the healthy sink", || {
        (sum_named(&metric_points(&healthy), "steady.count") == datagrams as f64).then_some(())
    });
    assert_eq!(
        m.prom("meterd_lines_received_total"),
        Some(2.0 * datagrams as f64)
    );

    // Read the counters while every sink has settled: past the slow sink's second after a
    // flush, well before the next one.
    let sent = |text: &str, sink: &str| {
        prom_value(text, &format!("meterd_sink_sent_total{{sink=\"{sink}\"}}")).unwrap_or(-1.0)
    };
    let dropped = |text: &str, sink: &str| {
        prom_value(
            text,
            &format!("meterd_sink_dropped_total{{sink=\"{sink}\"}}"),
        )
        .unwrap_or(-1.0)
    };
    let text = loop {
        avoid_boundary(Duration::from_secs(3), Duration::from_millis(1200));
        let into = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 3000;
        if into < 1600 {
            std::thread::sleep(Duration::from_millis((1600 - into) as u64));
        }
        let before = items_received(&healthy);
        let (_, text) = m.http_get("/metrics");
        // A flush that arrived meanwhile makes this reading unsettled; take the next interval.
        if items_received(&healthy) == before && sent(&text, "healthy") == before {
            break text;
        }
    };
    let total = sent(&text, "healthy");
    assert!(total > 0.0);
    assert_eq!(dropped(&text, "healthy"), 0.0);
    for faulty in ["refused", "failing", "hanging"] {
        assert_eq!(sent(&text, faulty), 0.0, "{faulty}:\n{text}");
        assert_eq!(
            dropped(&text, faulty),
            total,
            "{faulty} drops every item once:\n{text}"
        );
    }
    assert_eq!(
        sent(&text, "slow"),
        total,
        "the slow sink delivers everything:\n{text}"
    );
    assert_eq!(dropped(&text, "slow"), 0.0);
    assert_eq!(items_received(&slow), total);
    // Bounded retries: 1 + max_retries attempts per flush at the failing sink.
    assert!(failing.requests().len() <= 2 * documents(&healthy).len());
}
