//! Local → global aggregation with real processes on loopback (docs/fleet.md): two locals, two
//! globals; timers, sets, distributions and global-only counters sent to both locals are merged
//! exactly once by the global that owns each series; a global killed and restarted mid-run costs
//! the local counted drops and nothing else.

use std::net::UdpSocket;
use std::time::Duration;

use cadence::prelude::*;
use cadence::{BufferedUdpMetricSink, StatsdClient};
use serde_json::Value;

use crate::support::*;

fn client(m: &Meterd) -> StatsdClient {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink = BufferedUdpMetricSink::from(m.addr("udp"), socket).unwrap();
    StatsdClient::builder("", sink).build()
}

fn nearest_rank(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn one(points: &[Value], name: &str) -> Value {
    let found = points_named(points, name);
    assert_eq!(found.len(), 1, "expected exactly one {name}: {found:?}");
    found.into_iter().next().unwrap()
}

#[test]
fn two_locals_two_globals_merge_exactly() {
    avoid_boundary(Duration::from_secs(3600), Duration::from_secs(30));
    let global_sink = CaptureServer::start(Behaviour::Ok);
    let local_sink = CaptureServer::start(Behaviour::Ok);
    let mut g1 = Meterd::start(&global_config(&global_sink.url(), "127.0.0.1:0", "1h"));
    let mut g2 = Meterd::start(&global_config(&global_sink.url(), "127.0.0.1:0", "1h"));
    let globals = vec![
        format!("http://{}", g1.addr("http")),
        format!("http://{}", g2.addr("http")),
    ];
    let mut l1 = Meterd::start(&local_config(
        "local-1",
        &local_sink.url(),
        &globals,
        "1h",
        3,
    ));
    let mut l2 = Meterd::start(&local_config(
        "local-2",
        &local_sink.url(),
        &globals,
        "1h",
        3,
    ));

    // Timers for one name on both locals; the union's percentiles are what the fleet wants.
    let a: Vec<u64> = (0..3000).map(|i| (i * 7919) % 2000 + 1).collect();
    let b: Vec<u64> = (0..1000).map(|i| (i * 104_729) % 5000 + 1000).collect();
    let (c1, c2) = (client(&l1), client(&l2));
    for &v in &a {
        c1.time("fleet.latency", v).unwrap();
        c1.time_with_tags("fleet.gtimer", v)
            .with_tag_value("veneurglobalonly")
            .send();
    }
    for &v in &b {
        c2.time("fleet.latency", v).unwrap();
        c2.time_with_tags("fleet.gtimer", v)
            .with_tag_value("veneurglobalonly")
            .send();
    }
    for i in 0..150i64 {
        c1.set("fleet.users", i).unwrap();
        c2.set("fleet.users", i + 100).unwrap();
    }
    for i in 0..10u64 {
        c1.distribution("fleet.payload", i).unwrap();
        c2.distribution("fleet.payload", 100 + i).unwrap();
    }
    c1.count_with_tags("fleet.requests", 3)
        .with_tag_value("veneurglobalonly")
        .send();
    c2.count_with_tags("fleet.requests", 4)
        .with_tag_value("veneurglobalonly")
        .send();
    c1.count("local.only", 1).unwrap();
    c1.flush().unwrap();
    c2.flush().unwrap();
    send_udp(l1.addr("udp"), &[b"_sc|fleet.db|2|#service:db|m:down"]);
    l1.wait_lines(2 * a.len() as u64 + 150 + 10 + 2 + 1);
    l2.wait_lines(2 * b.len() as u64 + 150 + 10 + 1);

    // The locals' final flushes forward to the globals.
    assert!(l1.terminate().success(), "{}", l1.log());
    assert!(l2.terminate().success(), "{}", l2.log());
    for g in [&g1, &g2] {
        wait_for("imports from both locals", || {
            (g.prom("meterd_import_received_total").unwrap_or(0.0) >= 2.0).then_some(())
        });
    }
    // The fleet view: a global's health store holds the local's _sc result.
    let (_, text) = g1.http_get("/api/v1/healthchecks?id=fleet.db");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["healthChecks"][0]["status"], 2, "{v}");
    assert_eq!(v["healthChecks"][0]["service"]["id"], "local-1");

    assert!(g1.terminate().success(), "{}", g1.log());
    assert!(g2.terminate().success(), "{}", g2.log());

    let local_points: Vec<Value> = local_sink
        .requests()
        .iter()
        .flat_map(|r| r.json()["metrics"].as_array().cloned().unwrap_or_default())
        .collect();
    let global_points: Vec<Value> = global_sink
        .requests()
        .iter()
        .flat_map(|r| r.json()["metrics"].as_array().cloned().unwrap_or_default())
        .collect();

    // Locals emit a default timer's aggregates per host, never its percentiles.
    assert_eq!(
        sum_named(&local_points, "fleet.latency.count"),
        (a.len() + b.len()) as f64
    );
    assert!(points_named(&local_points, "fleet.latency.50percentile").is_empty());
    assert!(points_named(&local_points, "fleet.users").is_empty());
    assert!(points_named(&local_points, "fleet.payload.max").is_empty());
    assert!(points_named(&local_points, "fleet.requests").is_empty());
    assert!(points_named(&local_points, "fleet.gtimer.count").is_empty());
    assert_eq!(one(&local_points, "local.only")["host"], "local-1");

    // Globals: exactly one of them emits each merged series, with an empty host.
    let union: Vec<f64> = a.iter().chain(b.iter()).map(|&v| v as f64).collect();
    for (q, name) in [
        (0.5, "fleet.latency.50percentile"),
        (0.99, "fleet.latency.99percentile"),
    ] {
        let p = one(&global_points, name);
        let exact = nearest_rank(&union, q);
        let got = p["value"].as_f64().unwrap();
        assert!(
            (got - exact).abs() <= exact * 0.01,
            "{name}: {got} vs {exact}"
        );
        assert_eq!(p["host"], "");
    }
    assert!(
        points_named(&global_points, "fleet.latency.count").is_empty(),
        "nothing is emitted twice"
    );
    // veneurglobalonly timer: the global emits everything, exactly.
    assert_eq!(
        one(&global_points, "fleet.gtimer.count")["value"],
        union.len() as f64
    );
    assert_eq!(one(&global_points, "fleet.gtimer.min")["value"], 1.0);
    assert_eq!(
        one(&global_points, "fleet.gtimer.max")["value"],
        union.iter().cloned().fold(0.0, f64::max)
    );
    let p99 = one(&global_points, "fleet.gtimer.99percentile")["value"]
        .as_f64()
        .unwrap();
    let exact = nearest_rank(&union, 0.99);
    assert!((p99 - exact).abs() <= exact * 0.01, "{p99} vs {exact}");
    assert!(
        one(&global_points, "fleet.gtimer.count")["tags"]
            .as_array()
            .unwrap()
            .is_empty(),
        "magic tags removed"
    );
    // Sets: the union's distinct count (250), within 2 %.
    let users = one(&global_points, "fleet.users")["value"]
        .as_f64()
        .unwrap();
    assert!((users - 250.0).abs() <= 5.0, "users {users}");
    // Distributions: everything global.
    assert_eq!(one(&global_points, "fleet.payload.count")["value"], 20.0);
    assert_eq!(one(&global_points, "fleet.payload.max")["value"], 109.0);
    // Global-only counters: summed.
    assert_eq!(one(&global_points, "fleet.requests")["value"], 7.0);
}

#[test]
fn a_dead_global_costs_counted_drops_and_forwarding_resumes() {
    let global_sink = CaptureServer::start(Behaviour::Ok);
    let local_sink = CaptureServer::start(Behaviour::Ok);
    let g = Meterd::start(&global_config(&global_sink.url(), "127.0.0.1:0", "1s"));
    let gaddr = g.addr("http");
    let globals = vec![format!("http://{gaddr}")];
    let l = Meterd::start(&local_config(
        "local-1",
        &local_sink.url(),
        &globals,
        "1s",
        2,
    ));
    let c = client(&l);
    let send_some = |n: u64| {
        for _ in 0..n {
            c.count_with_tags("flaky.requests", 1)
                .with_tag_value("veneurglobalonly")
                .send();
            c.count("local.heartbeat", 1).unwrap();
        }
        c.flush().unwrap();
    };
    send_some(10);
    wait_for("first forwards delivered", || {
        let sent = l
            .prom(&format!(
                "meterd_forward_sent_total{{global=\"http://{gaddr}\"}}"
            ))
            .unwrap_or(0.0);
        (sent >= 1.0).then_some(())
    });

    // Kill the global (SIGKILL) and keep the local busy for several intervals.
    drop(g);
    let dropped_series = format!("meterd_forward_dropped_total{{global=\"http://{gaddr}\"}}");
    let errors_series = format!("meterd_forward_errors_total{{global=\"http://{gaddr}\"}}");
    wait_for("forward drops counted while the global is down", || {
        send_some(5);
        std::thread::sleep(Duration::from_millis(200));
        let dropped = l.prom(&dropped_series).unwrap_or(0.0);
        let errors = l.prom(&errors_series).unwrap_or(0.0);
        (dropped >= 1.0 && errors >= 3.0).then_some(())
    });
    // The local stays healthy: its API answers and its own flushes keep reaching its sink.
    assert_eq!(l.http_get("/healthz").0, 200);
    let before = sum_named(&metric_points(&local_sink), "local.heartbeat");
    send_some(5);
    wait_for("local flushes continue", || {
        (sum_named(&metric_points(&local_sink), "local.heartbeat") >= before + 5.0).then_some(())
    });
    let (_, checks) = l.http_get("/api/v1/healthchecks?id=meterd.forward");
    assert!(
        checks.contains("\"status\":2"),
        "meterd.forward is ERROR while the global is down: {checks}"
    );

    // Restart the global on the same address: the local rejoins and forwarding resumes.
    let g2 = Meterd::start(&global_config(&global_sink.url(), &gaddr.to_string(), "1s"));
    wait_for("forwarding resumes", || {
        send_some(2);
        std::thread::sleep(Duration::from_millis(200));
        (g2.prom("meterd_import_received_total").unwrap_or(0.0) >= 1.0).then_some(())
    });
    wait_for("the restarted global emits the forwarded counter", || {
        let pts = metric_points(&global_sink);
        points_named(&pts, "flaky.requests")
            .iter()
            .any(|p| p["host"] == "")
            .then_some(())
    });
    let (_, checks) = l.http_get("/api/v1/healthchecks?id=meterd.forward");
    assert!(
        l.log().contains("rejoining the ring") || checks.contains("\"status\":1"),
        "{checks}"
    );
}

#[test]
fn imports_are_guarded_and_validated() {
    let sink = CaptureServer::start(Behaviour::Ok);
    let g = Meterd::start(&global_config(&sink.url(), "127.0.0.1:0", "1h").replace(
        "import_token = \"s3cret\"",
        "import_token = \"s3cret\"\nmax_body_bytes = 1024",
    ));
    let addr = g.addr("http");
    // No token: 401.
    let (status, _) = http_request(addr, "POST", "/import", b"");
    assert_eq!(status, 401);
    // Garbage with the token: 400; oversized: 413; nothing merged.
    let auth_post = |body: &[u8]| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST /import HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer s3cret\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp
    };
    let resp = auth_post(b"\x0a\xff\xff\xff\xff");
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("\"error\""), "{resp}");
    let resp = auth_post(&vec![b'x'; 4096]);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert_eq!(g.prom("meterd_import_received_total"), Some(0.0));
}

#[test]
fn a_global_down_from_the_start_costs_exactly_the_series_forwarded() {
    // An address nothing listens on: every forward is refused at connect.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let local_sink = CaptureServer::start(Behaviour::Ok);
    let global = format!("http://{dead_addr}");
    let l = Meterd::start(&local_config(
        "local-1",
        &local_sink.url(),
        std::slice::from_ref(&global),
        "1s",
        2,
    ));
    // 40 distinct timers, each once: 40 series to forward, all of which must be dropped and
    // counted once each. Plain counters stay local and keep reaching the local sink.
    let timers: Vec<String> = (0..40).map(|i| format!("down.t{i}:5|ms")).collect();
    let datagram = timers.join("\n");
    send_udp(l.addr("udp"), &[datagram.as_bytes()]);
    let heartbeats = 20u64;
    for _ in 0..heartbeats {
        send_udp(l.addr("udp"), &[b"down.heartbeat:1|c"]);
    }
    l.wait_lines(40 + heartbeats);

    let dropped = format!("meterd_forward_dropped_total{{global=\"{global}\"}}");
    let sent = format!("meterd_forward_sent_total{{global=\"{global}\"}}");
    wait_for("the 40 forwarded series dropped", || {
        (l.prom(&dropped).unwrap_or(0.0) >= 40.0).then_some(())
    });
    // Three more intervals: nothing else is forwarded, so the count stays exact.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(l.prom(&dropped), Some(40.0), "{}", l.http_get("/metrics").1);
    assert_eq!(l.prom(&sent).unwrap_or(0.0), 0.0);
    assert!(
        l.prom(&format!(
            "meterd_forward_errors_total{{global=\"{global}\"}}"
        ))
        .unwrap_or(0.0)
            >= 1.0
    );
    // Ingest lost nothing and the local sink got every heartbeat.
    assert_eq!(
        l.prom("meterd_lines_received_total"),
        Some((40 + heartbeats) as f64)
    );
    wait_for("every heartbeat flushed locally", || {
        (sum_named(&metric_points(&local_sink), "down.heartbeat") == heartbeats as f64)
            .then_some(())
    });
    assert_eq!(l.http_get("/healthz").0, 200);
}
