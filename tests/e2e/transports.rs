//! Transports besides UDP: TCP with an over-long line (dropped alone, the connection stays
//! open), the Unix datagram socket (ingest, the socket file removed at exit, a stale one
//! replaced).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use serde_json::json;

use crate::support::udp_to_http::{config, one_flush, start_unix};
use crate::support::*;

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
    let (mut m, capture, path) = start_unix("");
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
