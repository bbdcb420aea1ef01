//! Lifecycle and ingest paths: SIGTERM in the middle of a stream, TCP with an over-long line,
//! the Unix datagram socket, `max_series`, `meterd send`, gauge deltas in both modes, `|T`
//! timestamps across flushes, and global tags.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

fn config(url: &str, interval: &str, extra: &str, ingest: &str) -> String {
    format!(
        r#"
hostname = "test-host"
interval = "{interval}"
{extra}
[ingest]
statsd_udp = ["127.0.0.1:0"]
readers = 2
{ingest}
[http]
listen = "127.0.0.1:0"
[[sinks]]
type = "http"
url = "{url}/series"
"#
    )
}

/// The final-flush pattern with a one-hour interval; returns every metric point.
fn one_flush(extra: &str, ingest: &str, send: impl FnOnce(&Meterd)) -> Vec<Value> {
    avoid_boundary(Duration::from_secs(3600), Duration::from_secs(10));
    let (m, capture) = run_to_exit(|url| config(url, "1h", extra, ingest), send);
    assert_eq!(
        capture.requests_to("/series").len(),
        1,
        "one flush expected:\n{}",
        m.log()
    );
    metric_points(&capture)
}

fn only_point(points: &[Value], name: &str) -> Value {
    let found = points_named(points, name);
    assert_eq!(found.len(), 1, "one point named {name}: {found:?}");
    found[0].clone()
}

const STREAM_LINES_PER_DATAGRAM: u64 = 20;
const STREAM_MAX_DATAGRAMS: u64 = 2000;

/// Sends datagrams of 20 `stream.count:1|c` lines, paced (so loopback never overflows the
/// receive buffer), until `stop` or the bound; `sent` counts lines whose datagram was sent.
fn stream_sender(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let datagram = vec!["stream.count:1|c"; STREAM_LINES_PER_DATAGRAM as usize].join("\n");
        for _ in 0..STREAM_MAX_DATAGRAMS {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            // After meterd exits, sends may fail (ICMP unreachable): those are not counted.
            if socket.send_to(datagram.as_bytes(), addr).is_ok() {
                sent.fetch_add(STREAM_LINES_PER_DATAGRAM, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

fn stream_meterd(capture: &CaptureServer) -> Meterd {
    Meterd::start(&config(&capture.url(), "1s", "", ""))
}

/// Waits until a regular flush carried part of the stream and `lines` lines were counted.
fn wait_mid_stream(m: &Meterd, capture: &CaptureServer, lines: u64) {
    wait_for("a flush with part of the stream", || {
        (sum_named(&metric_points(capture), "stream.count") > 0.0).then_some(())
    });
    m.wait_lines(lines);
}

fn rcvbuf_log(m: &Meterd) -> String {
    m.log()
        .lines()
        .filter(|l| l.contains("rcvbuf"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn sigterm_after_the_stream_stops_loses_nothing() {
    let capture = CaptureServer::start(Behaviour::Ok);
    let mut m = stream_meterd(&capture);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = stream_sender(m.addr("udp"), stop.clone(), sent.clone());
    wait_mid_stream(&m, &capture, 2000);
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    let total = sent.load(Ordering::SeqCst);
    let status = m.terminate();
    assert!(status.success(), "exit {status}:\n{}", m.log());
    let points = metric_points(&capture);
    let drops = sum_named(&points, "meterd.udp.kernel_drops");
    assert_eq!(
        sum_named(&points, "stream.count"),
        total as f64,
        "sent {total} lines; kernel drops {drops}; {}",
        rcvbuf_log(&m)
    );
    assert_eq!(sum_named(&points, "meterd.lines.received"), total as f64);
}

#[test]
fn sigterm_during_the_stream_keeps_everything_sent_before_it() {
    let capture = CaptureServer::start(Behaviour::Ok);
    let mut m = stream_meterd(&capture);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = stream_sender(m.addr("udp"), stop.clone(), sent.clone());
    wait_mid_stream(&m, &capture, 2000);
    // Every datagram whose send returned before the signal is in meterd's socket buffer.
    let before = sent.load(Ordering::SeqCst);
    m.send_sigterm();
    let status = m.wait_exit();
    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    let total = sent.load(Ordering::SeqCst);
    assert!(status.success(), "exit {status}:\n{}", m.log());
    let flushed = sum_named(&metric_points(&capture), "stream.count");
    assert!(
        flushed >= before as f64 && flushed <= total as f64,
        "flushed {flushed}, sent {before} before SIGTERM and {total} in all; {}",
        rcvbuf_log(&m)
    );
}

#[test]
fn tcp_over_long_line_is_dropped_alone_and_the_connection_stays_open() {
    avoid_boundary(Duration::from_secs(3600), Duration::from_secs(10));
    let capture = CaptureServer::start(Behaviour::Ok);
    let mut m = Meterd::start(&config(
        &capture.url(),
        "1h",
        "",
        "statsd_tcp = [\"127.0.0.1:0\"]\nmax_datagram_bytes = 512",
    ));
    let addr = m.addr("tcp");
    let connections: usize = 4;
    // Even connections: a line a little over the limit; odd ones: a line longer than meterd's
    // whole read buffer (the limit plus one read), so it arrives in several reads.
    let long = |i: usize| {
        let n = if i % 2 == 0 { 600 } else { 20_000 };
        format!("tcp.long:1|c|#{}\n", "a".repeat(n))
    };
    let mut streams: Vec<TcpStream> = (0..connections)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    std::thread::scope(|s| {
        for (i, stream) in streams.iter_mut().enumerate() {
            let long = long(i);
            s.spawn(move || {
                let mut before: String = (0..50)
                    .map(|_| format!("tcp.count:1|c|#conn:{i}\n"))
                    .collect();
                // An invalid line is dropped alone too.
                before.push_str("not a metric\n");
                let after: String = (0..50)
                    .map(|_| format!("tcp.count:2|c|#conn:{i}\n"))
                    .collect();
                // Written in pieces that split lines, the long one included.
                let all = format!("{before}{long}{after}");
                for piece in all.as_bytes().chunks(97) {
                    stream.write_all(piece).expect("write");
                }
            });
        }
    });
    m.wait_lines(connections as u64 * 102);
    for stream in &mut streams {
        // Still open: no EOF from meterd, and more lines on it are still read.
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut buf = [0u8; 16];
        match stream.read(&mut buf) {
            Ok(0) => panic!("meterd closed the connection after the long line"),
            Ok(n) => panic!("unexpected {n} bytes from meterd"),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{e}"
            ),
        }
        stream.write_all(b"tcp.after:1|c\n").expect("write after");
    }
    m.wait_lines(connections as u64 * 103);
    drop(streams);
    let status = m.terminate();
    assert!(status.success(), "exit {status}:\n{}", m.log());

    let points = metric_points(&capture);
    for i in 0..connections {
        let tag = format!("conn:{i}");
        assert_eq!(
            sum_tagged(&points, "tcp.count", &tag),
            150.0,
            "{tag}: 50 × 1 before and 50 × 2 after the long line"
        );
    }
    assert_eq!(sum_named(&points, "tcp.after"), connections as f64);
    assert!(points_named(&points, "tcp.long").is_empty());
    assert_eq!(
        sum_tagged(&points, "meterd.lines.invalid", "reason:too_long"),
        connections as f64
    );
    assert_eq!(
        sum_tagged(&points, "meterd.lines.invalid", "reason:bad_name"),
        connections as f64
    );
    assert_eq!(
        sum_named(&points, "meterd.lines.invalid"),
        2.0 * connections as f64,
        "nothing else was invalid"
    );
}

#[test]
fn unix_datagram_socket_ingest() {
    avoid_boundary(Duration::from_secs(3600), Duration::from_secs(10));
    let capture = CaptureServer::start(Behaviour::Ok);
    let mut m = Meterd::start(&config(
        &capture.url(),
        "1h",
        "",
        "statsd_unix = [\"@DIR@/meterd.sock\"]",
    ));
    let path = m.dir.path().join("meterd.sock");
    assert_eq!(
        m.addrs.get("unix"),
        Some(&vec![path.display().to_string()]),
        "{}",
        m.log()
    );
    let client = UnixDatagram::unbound().expect("unbound unix socket");
    client
        .send_to(b"uds.count:1|c|#via:uds\nuds.count:2|c|#via:uds", &path)
        .expect("send");
    client
        .send_to(b"uds.gauge:7|g\nuds.hist:5|h", &path)
        .expect("send");
    m.wait_lines(4);
    let status = m.terminate();
    assert!(status.success(), "exit {status}:\n{}", m.log());
    assert!(!path.exists(), "the socket file is removed at exit");

    let points = metric_points(&capture);
    let count = only_point(&points, "uds.count");
    assert_eq!(count["value"], 3.0);
    assert_eq!(count["tags"], json!(["via:uds"]));
    assert_eq!(only_point(&points, "uds.gauge")["value"], 7.0);
    assert_eq!(only_point(&points, "uds.hist.max")["value"], 5.0);
    assert_eq!(sum_named(&points, "meterd.packets.received"), 2.0);
}

#[test]
fn max_series_refuses_new_series_and_keeps_counting_existing_ones() {
    let points = one_flush("max_series = 10", "", |m| {
        let first: Vec<String> = (0..10).map(|i| format!("lim.{i}:1|c")).collect();
        send_udp(m.addr("udp"), &[first.join("\n").as_bytes()]);
        m.wait_lines(10);
        // Ten new series (one of them twice) are refused; existing ones keep counting.
        let mut second: Vec<String> = (10..20).map(|i| format!("lim.{i}:1|c")).collect();
        second.push("lim.15:1|c".into());
        second.push("lim.0:5|c".into());
        second.push("lim.9:1|g".into()); // same name, other type: a new series
        send_udp(m.addr("udp"), &[second.join("\n").as_bytes()]);
        m.wait_lines(23);
        wait_for("refusals counted", || {
            (m.prom("meterd_series_dropped_total{reason=\"limit\"}") == Some(12.0)).then_some(())
        });
    });
    let user: Vec<&Value> = points
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("lim.")))
        .collect();
    assert_eq!(user.len(), 10, "{user:?}");
    for i in 0..10 {
        let p = only_point(&points, &format!("lim.{i}"));
        assert_eq!(p["kind"], "counter");
        assert_eq!(p["value"], if i == 0 { 6.0 } else { 1.0 }, "lim.{i}");
    }
    assert_eq!(
        sum_tagged(&points, "meterd.series.dropped", "reason:limit"),
        12.0
    );
}

#[test]
fn max_series_next_interval_starts_empty() {
    let capture = CaptureServer::start(Behaviour::Ok);
    let mut m = Meterd::start(&config(&capture.url(), "1s", "max_series = 2", ""));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let margin = Duration::from_millis(400);
    // Which series of one datagram win the last free slots is not defined (lines are applied
    // per shard), so each step sends only what must be accepted, then what must be refused.
    avoid_boundary(Duration::from_secs(1), margin);
    socket
        .send_to(b"ns.a:1|c\nns.b:1|c", m.addr("udp"))
        .unwrap();
    m.wait_lines(2);
    socket.send_to(b"ns.c:1|c", m.addr("udp")).unwrap();
    m.wait_lines(3);
    wait_for("a flush with ns.a", || {
        (!points_named(&metric_points(&capture), "ns.a").is_empty()).then_some(())
    });
    avoid_boundary(Duration::from_secs(1), margin);
    socket
        .send_to(b"ns.c:1|c\nns.d:1|c", m.addr("udp"))
        .unwrap();
    m.wait_lines(5);
    socket
        .send_to(b"ns.e:1|c\nns.a:1|c", m.addr("udp"))
        .unwrap();
    m.wait_lines(7);
    let status = m.terminate();
    assert!(status.success(), "exit {status}:\n{}", m.log());
    let points = metric_points(&capture);
    for (name, want) in [
        ("ns.a", 1.0),
        ("ns.b", 1.0),
        ("ns.c", 1.0),
        ("ns.d", 1.0),
        ("ns.e", 0.0),
    ] {
        assert_eq!(sum_named(&points, name), want, "{name}");
    }
    assert_eq!(
        sum_tagged(&points, "meterd.series.dropped", "reason:limit"),
        3.0,
        "ns.c in the first interval; ns.e and ns.a (a third series) in the second"
    );
}

#[test]
fn non_finite_aggregates_are_dropped_and_counted() {
    let points = one_flush(
        "aggregates = [\"min\", \"max\", \"count\", \"sum\"]\npercentiles = []",
        "",
        |m| {
            send_udp(
                m.addr("udp"),
                &[b"nf.c:1e300|c|@1e-10\nnf.g:1e308|g\nnf.g:+1e308|g\nnf.h:1e300|h|@1e-10\nnf.ok:1|c"],
            );
            m.wait_lines(5);
        },
    );
    // serde_json writes a non-finite f64 as null: every value must be a finite number.
    let bad: Vec<&Value> = points
        .iter()
        .filter(|p| !p["value"].as_f64().is_some_and(f64::is_finite))
        .collect();
    assert!(
        bad.is_empty(),
        "non-finite values reached the sink: {bad:?}"
    );
    for gone in ["nf.c", "nf.g", "nf.h.sum"] {
        assert!(points_named(&points, gone).is_empty(), "{gone} emitted");
    }
    assert_eq!(only_point(&points, "nf.h.max")["value"], 1e300);
    assert_eq!(only_point(&points, "nf.h.count")["value"], 1e10);
    assert_eq!(only_point(&points, "nf.ok")["value"], 1.0);
    assert_eq!(
        sum_tagged(&points, "meterd.series.dropped", "reason:non_finite"),
        3.0
    );
}

#[test]
fn unix_socket_replaces_a_stale_socket_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(UnixDatagram::bind(&path).unwrap());
    assert!(path.exists());
    let points = one_flush(
        "",
        &format!("statsd_unix = [\"{}\"]", path.display()),
        |m| {
            UnixDatagram::unbound()
                .unwrap()
                .send_to(b"stale.count:1|c", &path)
                .expect("send to the re-bound socket");
            m.wait_lines(1);
        },
    );
    assert_eq!(only_point(&points, "stale.count")["value"], 1.0);
}

#[test]
fn sigint_stops_like_sigterm() {
    avoid_boundary(Duration::from_secs(3600), Duration::from_secs(10));
    let capture = CaptureServer::start(Behaviour::Ok);
    let mut m = Meterd::start(&config(&capture.url(), "1h", "", ""));
    send_udp(m.addr("udp"), &[b"int.count:2|c"]);
    m.wait_lines(1);
    m.send_signal(libc::SIGINT);
    let status = m.wait_exit();
    assert!(status.success(), "exit {status}:\n{}", m.log());
    assert_eq!(sum_named(&metric_points(&capture), "int.count"), 2.0);
}

#[test]
fn meterd_send_delivers_arguments_and_stdin() {
    let points = one_flush("", "", |m| {
        let to = m.addr("udp").to_string();
        let out = Command::new(env!("CARGO_BIN_EXE_meterd"))
            .args(["send", "--to", &to, "cli.a:1|c", "cli.b:2|g|#k:v"])
            .output()
            .expect("run meterd send");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
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
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
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

/// SPEC §9 `tags`: "added to every series", and §8: self-metrics are emitted "through the
/// normal pipeline"; so a dashboard filtering on `env:` sees meterd's own points too.
#[test]
fn global_tags_are_on_meterds_own_points_too() {
    let points = global_tags_run();
    let missing = without_global_tags(&points);
    assert!(
        missing.is_empty(),
        "points without the global tags: {missing:?}"
    );
}

/// SIGTERM at once after "meterd started", with a datagram already sent: exit 0, and the
/// datagram is in the final flush. Regression: the signal handler was installed only when the
/// flush loop first polled the shutdown future, after the sockets were bound and read.
#[test]
fn sigterm_right_after_start_still_flushes() {
    for _ in 0..5 {
        let capture = CaptureServer::start(Behaviour::Ok);
        let mut m = Meterd::start_unguarded(&config(&capture.url(), "1h", "", ""), &[]);
        send_udp(m.addr("udp"), &[b"early.count:1|c"]);
        let t = Instant::now();
        let status = m.terminate();
        assert!(status.success(), "exit {status}:\n{}", m.log());
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let docs = documents(&capture);
        assert_eq!(docs.len(), 1, "one final flush");
        assert_eq!(sum_named(&metric_points(&capture), "early.count"), 1.0);
    }
}

/// Two flushes must never carry a point of one series at one timestamp: a backend keeps only
/// one of them (Datadog overwrites, Prometheus remote write refuses the duplicate). The final
/// flush is stamped with the current second, which is the previous regular flush's timestamp
/// whenever SIGTERM comes less than a second after it.
#[test]
fn final_flush_is_stamped_after_the_last_regular_flush() {
    let capture = CaptureServer::start(Behaviour::Ok);
    let mut m = Meterd::start(&config(&capture.url(), "1s", "", ""));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(b"ff.count:1|c", m.addr("udp")).unwrap();
    wait_for("a regular flush with ff.count", || {
        (!points_named(&metric_points(&capture), "ff.count").is_empty()).then_some(())
    });
    // Within the same second: more of the same series, then SIGTERM.
    socket.send_to(b"ff.count:2|c", m.addr("udp")).unwrap();
    m.wait_lines(2);
    let status = m.terminate();
    assert!(status.success(), "exit {status}:\n{}", m.log());
    let points = metric_points(&capture);
    assert_eq!(sum_named(&points, "ff.count"), 3.0);
    let stamps: Vec<i64> = points_named(&points, "ff.count")
        .iter()
        .map(|p| p["timestamp"].as_i64().unwrap())
        .collect();
    assert_eq!(stamps.len(), 2, "{stamps:?}");
    assert!(
        stamps[1] > stamps[0],
        "ff.count twice at one timestamp: {stamps:?}"
    );
}

#[test]
fn shutdown_is_prompt_when_idle() {
    let capture = CaptureServer::start(Behaviour::Ok);
    let mut m = Meterd::start(&config(&capture.url(), "1h", "", ""));
    let t = Instant::now();
    let status = m.terminate();
    assert!(status.success(), "exit {status}:\n{}", m.log());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(documents(&capture).len(), 1, "one final flush");
}

/// Nice value of each of a process's threads, by thread name, from `/proc/PID/task/*/stat`.
fn thread_nices(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's tasks");
    for task in tasks.flatten() {
        let path = task.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        // Fields after the `(comm)` one; nice is field 19 of the whole line, 17 after it.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let nice = after
            .split_whitespace()
            .nth(16)
            .and_then(|n| n.parse().ok())
            .expect("a nice field");
        out.push((comm.trim().to_string(), nice));
    }
    out
}

#[test]
fn datagram_readers_outrank_flush_and_sink_threads() {
    let capture = CaptureServer::start(Behaviour::Ok);
    let mut m = Meterd::start(&config(&capture.url(), "1s", "", ""));
    // One flush first, so the blocking pool that renders and encodes has threads.
    send_udp(m.addr("udp"), &[b"prio.c:1|c"]);
    wait_for("a flush at the sink", || {
        (!capture.requests().is_empty()).then_some(())
    });
    let nices = thread_nices(m.pid());
    let readers: Vec<_> = nices
        .iter()
        .filter(|(n, _)| n.starts_with("meterd-udp"))
        .collect();
    let runtime: Vec<_> = nices
        .iter()
        .filter(|(n, _)| n.starts_with("meterd-rt"))
        .collect();
    assert_eq!(readers.len(), 2, "two UDP readers: {nices:?}");
    assert!(!runtime.is_empty(), "runtime threads: {nices:?}");
    let reader_nice = readers[0].1;
    assert!(readers.iter().all(|(_, n)| *n == reader_nice), "{nices:?}");
    for (name, nice) in &runtime {
        assert!(
            *nice >= (reader_nice + 10).min(19),
            "{name} runs at nice {nice}, readers at {reader_nice}: {nices:?}"
        );
    }
    assert!(m.terminate().success());
}
