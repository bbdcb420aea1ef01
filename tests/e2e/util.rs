//! Test harness: the real `meterd` binary on ephemeral loopback ports, and a capturing HTTP
//! server that plays a sink's endpoint (answering 200, 500, or hanging, as told).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How long any wait in these tests may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `f` every 20 ms until it returns `Some`, or panics with `what` after [`DEADLINE`].
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Path of a fixture file.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit i64")
}

/// A running meterd.
pub struct Meterd {
    child: Child,
    /// Bound addresses by transport (`udp`, `tcp`, `unix`, `http`), in log order.
    pub addrs: HashMap<String, Vec<String>>,
    log: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<u8>>>,
    /// Holds the config file (and any socket paths) alive.
    pub dir: tempfile::TempDir,
}

impl Meterd {
    /// Starts meterd with `config` (TOML) and waits for its "meterd started" log line.
    pub fn start(config: &str) -> Meterd {
        Meterd::start_with_env(config, &[])
    }

    /// As [`Meterd::start`], with extra environment variables for the child.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Meterd {
        let m = Meterd::start_unguarded(config, env);
        // meterd installs its handlers before binding; check it still does.
        assert!(m.catches_sigterm(), "no SIGTERM handler after start");
        m
    }

    /// Whether meterd has a handler installed for SIGTERM (`SigCgt` in `/proc/PID/status`).
    pub fn catches_sigterm(&self) -> bool {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
    }

    /// As [`Meterd::start_with_env`], returning as soon as "meterd started" is logged.
    pub fn start_unguarded(config: &str, env: &[(&str, &str)]) -> Meterd {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config.replace("@DIR@", &dir.path().display().to_string());
        let path = dir.path().join("meterd.toml");
        std::fs::write(&path, &config).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_meterd"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meterd");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        // Keep stdout drained (and kept) so the console sink can never block on a full pipe.
        let mut stdout = child.stdout.take().expect("stdout");
        let stdout_buf = Arc::new(Mutex::new(Vec::new()));
        {
            let stdout_buf = stdout_buf.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n @ 1..) = stdout.read(&mut chunk) {
                    stdout_buf.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            });
        }
        let mut addrs: HashMap<String, Vec<String>> = HashMap::new();
        let start = Instant::now();
        loop {
            let remaining = DEADLINE.saturating_sub(start.elapsed());
            let line = match rx.recv_timeout(remaining) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "meterd did not start; log:\n{}",
                        log.lock().unwrap().join("\n")
                    );
                }
            };
            if line.contains(" listening") {
                let field = |k: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(k))
                        .map(|v| v.trim_matches('"').to_owned())
                };
                if let (Some(t), Some(a)) = (field("transport="), field("addr=")) {
                    addrs.entry(t).or_default().push(a);
                }
            }
            if line.contains("meterd started") {
                break;
            }
        }
        Meterd {
            child,
            addrs,
            log,
            stdout: stdout_buf,
            dir,
        }
    }

    /// The first bound address of `transport`.
    pub fn addr(&self, transport: &str) -> SocketAddr {
        self.addrs
            .get(transport)
            .and_then(|v| v.first())
            .unwrap_or_else(|| panic!("no {transport} listener"))
            .parse()
            .expect("socket address")
    }

    /// Everything meterd logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Everything meterd wrote to stdout so far (lossy UTF-8).
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Sends SIGTERM and waits for exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.send_sigterm();
        self.wait_exit()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM without waiting.
    pub fn send_sigterm(&self) {
        self.send_signal(libc::SIGTERM);
    }

    /// Sends `signal` without waiting.
    pub fn send_signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(pid, signal) };
    }

    /// Waits (up to the deadline) for meterd to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "meterd did not exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET `path` on the HTTP API; returns (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_request(self.addr("http"), "GET", path, &[])
    }

    /// The value of one sample at `GET /metrics`, e.g. `meterd_lines_received_total` or
    /// `meterd_sink_dropped_total{sink="http"}`; `None` if absent.
    pub fn prom(&self, series: &str) -> Option<f64> {
        let (_, text) = self.http_get("/metrics");
        prom_value(&text, series)
    }

    /// Waits until meterd has counted at least `n` lines (`meterd_lines_received_total`).
    pub fn wait_lines(&self, n: u64) {
        wait_for(&format!("{n} lines received"), || {
            let got = self.prom("meterd_lines_received_total").unwrap_or(0.0);
            (got >= n as f64).then_some(())
        });
    }
}

/// The value of the sample `series` (name plus labels, exactly as exposed) in Prometheus text.
pub fn prom_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

impl Drop for Meterd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal blocking HTTP/1.1 request; returns (status, body).
pub fn http_request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Sends each datagram to `addr` from a fresh loopback socket.
pub fn send_udp(addr: SocketAddr, datagrams: &[&[u8]]) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for d in datagrams {
        s.send_to(d, addr).expect("send");
    }
}

/// How the capture server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with an empty JSON object.
    Ok,
    /// This status, every time.
    Status(u16),
    /// Read the request, never answer (until the server is dropped).
    Hang,
    /// Answer 200, but only after this long.
    Slow(Duration),
}

/// One request the capture server received, body already gunzipped.
#[derive(Debug, Clone)]
pub struct Captured {
    /// `POST`, …
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Lower-cased header names.
    pub headers: HashMap<String, String>,
    /// Decoded body.
    pub body: Vec<u8>,
    /// The body as it arrived (before any gunzip).
    pub raw: Vec<u8>,
}

impl Captured {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A capturing HTTP server on 127.0.0.1:0.
pub struct CaptureServer {
    /// Its address.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Captured>>>,
    stop: Arc<AtomicBool>,
}

impl CaptureServer {
    /// Starts a server answering with `behaviour`.
    pub fn start(behaviour: Behaviour) -> CaptureServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let requests = requests.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let requests = requests.clone();
                    let stop = stop.clone();
                    std::thread::spawn(move || serve_conn(conn, behaviour, &requests, &stop));
                }
            });
        }
        CaptureServer {
            addr,
            requests,
            stop,
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:4567`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Captured> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests to paths starting with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Captured> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }
}

impl Drop for CaptureServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_conn(
    conn: TcpStream,
    behaviour: Behaviour,
    requests: &Mutex<Vec<Captured>>,
    stop: &AtomicBool,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut writer = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let raw = body.clone();
        if headers.get("content-encoding").map(String::as_str) == Some("gzip") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .expect("valid gzip body");
            body = out;
        }
        requests.lock().unwrap().push(Captured {
            method,
            path,
            headers,
            body,
            raw,
        });
        let status = match behaviour {
            Behaviour::Ok => 200,
            Behaviour::Status(s) => s,
            Behaviour::Hang => {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
            Behaviour::Slow(delay) => {
                std::thread::sleep(delay);
                200
            }
        };
        let resp = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        if writer.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// All metric points of every `http`-sink JSON document received, flattened.
pub fn metric_points(server: &CaptureServer) -> Vec<Value> {
    server
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .flat_map(|r| r.json()["metrics"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Points named `name` (from every flush).
pub fn points_named(points: &[Value], name: &str) -> Vec<Value> {
    points
        .iter()
        .filter(|p| p["name"] == name)
        .cloned()
        .collect()
}

/// Sum of the values of every point named `name`.
pub fn sum_named(points: &[Value], name: &str) -> f64 {
    points_named(points, name)
        .iter()
        .map(|p| p["value"].as_f64().unwrap_or(0.0))
        .sum()
}

/// Waits (up to the deadline) for an interval whose wall-clock end is at least `margin` away,
/// so a test's sends land in one interval. Returns immediately for long intervals.
pub fn avoid_boundary(interval: Duration, margin: Duration) {
    let step = interval.as_millis();
    loop {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let left = step - now % step;
        if left > margin.as_millis() {
            return;
        }
        std::thread::sleep(Duration::from_millis(u64::try_from(left).unwrap() + 5));
    }
}

/// Sum of the values of every point named `name` that carries the tag `tag`.
pub fn sum_tagged(points: &[Value], name: &str, tag: &str) -> f64 {
    points_named(points, name)
        .iter()
        .filter(|p| {
            p["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == tag))
        })
        .map(|p| p["value"].as_f64().unwrap_or(0.0))
        .sum()
}

/// The JSON documents of every POST the capture server received, in arrival order.
pub fn documents(server: &CaptureServer) -> Vec<Value> {
    server
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(Captured::json)
        .collect()
}

/// The final-flush pattern: starts a capture server and meterd with `config(capture_url)`,
/// runs `send`, then stops meterd with SIGTERM and asserts it exited 0. With `interval = "1h"`
/// (after [`avoid_boundary`]) everything lands in the one flush that SIGTERM triggers.
pub fn run_to_exit(
    config: impl FnOnce(&str) -> String,
    send: impl FnOnce(&Meterd),
) -> (Meterd, CaptureServer) {
    let capture = CaptureServer::start(Behaviour::Ok);
    let mut m = Meterd::start(&config(&capture.url()));
    send(&m);
    let status = m.terminate();
    assert!(
        status.success(),
        "meterd exited with {status}:\n{}",
        m.log()
    );
    (m, capture)
}
