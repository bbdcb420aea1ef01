//! Capture and replay: `meterd capture` records what a running meterd receives over UDP and TCP;
//! `meterd replay` sends it into a fresh meterd, which aggregates exactly the same series and
//! values. A capture ends on time, and before its size bound.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use meterd::ingest::capture::format::{Decoder, EndReason, Item, Record, Trailer};
use serde_json::Value;

use crate::support::udp_to_http::config;
use crate::support::*;

/// Runs `meterd capture` against `m` into `out` with extra arguments, without waiting.
pub(crate) fn start_capture(m: &Meterd, out: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_meterd"))
        .arg("capture")
        .args(["--api", &m.addr("http").to_string()])
        .arg("--out")
        .arg(out)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meterd capture")
}

/// Waits (up to the deadline) for `child` to exit; its output.
pub(crate) fn wait_child(mut child: Child, what: &str) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("{what} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Waits until meterd logged that a capture runs (the CLI's request reached it).
pub(crate) fn wait_capture_started(m: &Meterd) {
    wait_for("capture started", || {
        m.log().contains("capture started").then_some(())
    });
}

/// The records and the trailer of a capture file.
pub(crate) fn read_file(path: &Path) -> (Vec<Record>, Option<Trailer>) {
    let bytes = std::fs::read(path).expect("read capture");
    let mut d = Decoder::new(&bytes[..]).expect("capture header");
    let (mut records, mut trailer) = (Vec::new(), None);
    while let Some(item) = d.next_item().expect("capture item") {
        match item {
            Item::Record(r) => records.push(r),
            Item::Trailer(t) => trailer = Some(t),
        }
    }
    (records, trailer)
}

/// Replays `file` flat out into a fresh meterd, waits for its `lines` and stops it; the sink
/// that received its final flush.
pub(crate) fn replay_into_fresh(file: &Path, lines: u64) -> CaptureServer {
    let sink = CaptureServer::start(Behaviour::Ok);
    let mut b = Meterd::start(&config(&sink.url(), "1h", "", ""));
    let replay = Command::new(env!("CARGO_BIN_EXE_meterd"))
        .arg("replay")
        .arg(file)
        .args(["--to", &b.addr("udp").to_string(), "--flat-out"])
        .output()
        .expect("run meterd replay");
    let said = String::from_utf8_lossy(&replay.stderr);
    assert!(replay.status.success(), "{said}");
    assert!(said.contains("0 send error(s)"), "{said}");
    b.wait_lines(lines);
    assert!(b.terminate().success(), "{}", b.log());
    sink
}

/// What a flush document says about the user's data, in a comparable order: metric points
/// without their flush timestamps (meterd's own and health series left out), and events.
pub(crate) fn user_data(capture: &CaptureServer) -> (Vec<String>, Vec<String>) {
    let mut points: Vec<String> = metric_points(capture)
        .into_iter()
        .filter(|p| {
            let name = p["name"].as_str().unwrap_or_default();
            !name.starts_with("meterd.") && !name.starts_with("healthcheck.")
        })
        .map(|mut p| {
            if let Value::Object(o) = &mut p {
                o.remove("timestamp");
            }
            p.to_string()
        })
        .collect();
    points.sort();
    let mut events: Vec<String> = documents(capture)
        .iter()
        .flat_map(|d| d["events"].as_array().cloned().unwrap_or_default())
        .map(|e| e.to_string())
        .collect();
    events.sort();
    (points, events)
}

/// Traffic of every kind: over UDP from one socket (so one reader applies it, in order) and
/// over one TCP connection in reads that split lines. Returns the number of lines sent.
fn send_traffic(m: &Meterd) -> u64 {
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let to = m.addr("udp");
    let mut lines = 0;
    let mut datagrams: Vec<String> = Vec::new();
    for i in 0..40 {
        let d = [
            format!("cap.count:{i}|c|#via:udp"),
            "cap.sampled:1|c|@0.25|#via:udp".to_owned(),
            format!("cap.timer:{}|ms|@0.5|#via:udp", i * 3 % 17),
            format!("cap.gauge:{i}|g|#via:udp"),
            format!("cap.gauge_delta:+{i}|g|#via:udp"),
            format!("cap.set:user{}|s|#via:udp", i % 7),
            format!("cap.dist:{}.5|d|#via:udp", i % 11),
            format!("cap.hist:{i}|h|@0.1|#via:udp"),
        ]
        .join("\n");
        lines += 8;
        datagrams.push(d);
    }
    datagrams.push("_e{9,4}:deploy ok|done|d:1700000000|#via:udp\nnot a metric".to_owned());
    lines += 2;
    for d in &datagrams {
        udp.send_to(d.as_bytes(), to).expect("send");
    }
    let mut tcp = TcpStream::connect(m.addr("tcp")).expect("connect");
    let mut text = String::new();
    for i in 0..300 {
        text.push_str(&format!(
            "cap.tcp.count:{}|c|#via:tcp\ncap.tcp.timer:{}|ms|@0.2|#via:tcp\ncap.tcp.gauge:{i}|g|#via:tcp\ncap.tcp.set:{}|s|#via:tcp\n",
            i % 5,
            i % 13,
            i % 23
        ));
        lines += 4;
    }
    text.push_str("_e{7,3}:tcp evt|txt|d:1700000001|#via:tcp\n");
    lines += 1;
    // An unterminated last line, read at EOF.
    text.push_str("cap.tcp.last:5|c|#via:tcp");
    lines += 1;
    for piece in text.as_bytes().chunks(1000) {
        tcp.write_all(piece).expect("write");
        tcp.flush().expect("flush");
    }
    drop(tcp);
    lines
}

#[test]
fn replaying_a_capture_reproduces_the_aggregates_exactly() {
    avoid_boundary(Duration::from_secs(3600), Duration::from_secs(30));
    let ingest = "statsd_tcp = [\"127.0.0.1:0\"]";
    let sink_a = CaptureServer::start(Behaviour::Ok);
    let mut a = Meterd::start(&config(&sink_a.url(), "1h", "", ingest));
    let file = a.dir.path().join("traffic.cap");
    let cli = start_capture(&a, &file, &["--seconds", "600"]);
    wait_capture_started(&a);
    let lines = send_traffic(&a);
    a.wait_lines(lines);
    // Stopping A ends the capture with everything A received; its final flush holds it all.
    assert!(a.terminate().success(), "{}", a.log());
    let out = wait_child(cli, "meterd capture");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("0 dropped"), "{said}");
    assert!(said.contains("ended: meterd shut down"), "{said}");
    let (records, trailer) = read_file(&file);
    let records = records.len() as u64;
    let trailer = trailer.expect("a complete capture");
    assert_eq!(trailer.records, records);
    assert_eq!(trailer.reason, EndReason::Shutdown);
    assert!(records > 41, "{records} records");

    let sink_b = replay_into_fresh(&file, lines);

    let (points_a, events_a) = user_data(&sink_a);
    let (points_b, events_b) = user_data(&sink_b);
    assert!(points_a.len() > 30, "{points_a:?}");
    assert_eq!(events_a.len(), 2, "{events_a:?}");
    assert_eq!(points_a, points_b);
    assert_eq!(events_a, events_b);
}

#[test]
fn a_capture_ends_on_time() {
    let sink = CaptureServer::start(Behaviour::Ok);
    let m = Meterd::start(&config(&sink.url(), "1h", "", ""));
    let file = m.dir.path().join("timed.cap");
    let started = Instant::now();
    let cli = start_capture(&m, &file, &["--seconds", "2"]);
    wait_capture_started(&m);
    send_udp(m.addr("udp"), &[b"timed:1|c"]);
    let out = wait_child(cli, "meterd capture");
    let took = started.elapsed();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(2) + DEADLINE / 2, "{took:?}");
    assert!(said.contains("ended: duration reached"), "{said}");
    let (records, trailer) = read_file(&file);
    let records = records.len() as u64;
    let trailer = trailer.expect("a complete capture");
    assert_eq!(trailer.reason, EndReason::Deadline);
    assert_eq!(records, 1);
    assert!(trailer.offset_ns >= 2_000_000_000, "{trailer:?}");
    // The next capture may start once this one ended; a bad duration is refused.
    assert_eq!(m.http_get("/api/v1/capture?seconds=1").0, 200);
    for bad in [
        "seconds=0",
        "seconds=3601",
        "seconds=x",
        "seconds=1&max_bytes=3",
    ] {
        let (status, body) = m.http_get(&format!("/api/v1/capture?{bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("\"error\""), "{body}");
    }
}

#[test]
fn a_capture_stops_at_its_size_bound_and_one_runs_at_a_time() {
    let sink = CaptureServer::start(Behaviour::Ok);
    let m = Meterd::start(&config(&sink.url(), "1h", "", ""));
    let file = m.dir.path().join("bounded.cap");
    let cli = start_capture(&m, &file, &["--seconds", "600", "--max-bytes", "4096"]);
    wait_capture_started(&m);
    // A second capture is refused while this one runs.
    let (status, body) = m.http_get("/api/v1/capture?seconds=1");
    assert_eq!(status, 409, "{body}");
    // Far more than 4 KiB, sent until the capture ends (bounded by the deadline).
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let line = format!("bounded.count:1|c|#pad:{}", "x".repeat(200));
    let start = Instant::now();
    let mut cli = cli;
    while cli.try_wait().expect("wait").is_none() {
        assert!(
            start.elapsed() < DEADLINE,
            "the capture did not stop at its bound"
        );
        udp.send_to(line.as_bytes(), m.addr("udp")).expect("send");
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = wait_child(cli, "meterd capture");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("ended: size bound reached"), "{said}");
    let size = std::fs::metadata(&file).expect("file").len();
    assert!(size <= 4096, "{size} bytes");
    assert!(
        size > 4096 - 300,
        "{size} bytes: stopped well before the bound"
    );
    let (records, trailer) = read_file(&file);
    let records = records.len() as u64;
    assert_eq!(
        trailer.expect("a complete capture").reason,
        EndReason::MaxBytes
    );
    assert!(records >= 10, "{records}");
    assert!(m.log().contains("capture ended"), "{}", m.log());
}
