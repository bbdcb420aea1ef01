//! Shutdown: SIGTERM after and during a paced UDP stream (nothing sent before the signal is
//! lost), SIGINT like SIGTERM, SIGTERM right after start, the final flush stamped after the last
//! regular one, and a prompt exit when idle.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::udp_to_http::config;
use crate::support::*;

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
