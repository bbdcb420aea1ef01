//! Real metric stores as child processes, for the sink tests in `real_sinks.rs`: Prometheus
//! (remote-write receiver on), VictoriaMetrics and InfluxDB 1.x from Debian's packages, each on an
//! ephemeral loopback port with its own temporary data directory, stopped by PID when dropped.
//! Never a system service.
//!
//! A missing binary skips the test with a `SKIP <test>: <binary> not found (apt-get install -y
//! <package>)` line, or fails it when `METERD_REQUIRE_SERVERS` is set (as in CI).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::clock::DEADLINE;

/// Whether a missing server fails the test instead of skipping it.
fn servers_required() -> bool {
    std::env::var("METERD_REQUIRE_SERVERS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The path of `binary` on `PATH`; `None` (after printing the skip line) when it is missing
/// and servers are not required.
pub fn find_binary(test: &str, binary: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            !servers_required(),
            "{test}: {binary} not found and METERD_REQUIRE_SERVERS is set \
             (apt-get install -y {package})"
        );
        // Straight to the process' stderr: the test harness would capture `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "SKIP {test}: {binary} not found (apt-get install -y {package})"
        );
    }
    found
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    l.local_addr().expect("local addr").port()
}

/// A running server.
pub struct Server {
    /// `prometheus`, `victoria-metrics`, `influxd`.
    pub name: &'static str,
    /// Its HTTP address.
    pub addr: SocketAddr,
    child: Child,
    /// Data directory, config and log; removed after the child is stopped.
    dir: tempfile::TempDir,
}

impl Server {
    /// Base URL, e.g. `http://127.0.0.1:4567`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// GET `path_and_query`; (status, body).
    pub fn get(&self, path_and_query: &str) -> (u16, String) {
        http10(self.addr, "GET", path_and_query)
    }

    /// POST `path_and_query` with an empty body; (status, body).
    pub fn post(&self, path_and_query: &str) -> (u16, String) {
        http10(self.addr, "POST", path_and_query)
    }

    /// A PromQL instant query (Prometheus or VictoriaMetrics): each result's labels and value.
    pub fn promql(&self, query: &str) -> Vec<(Value, f64)> {
        let (status, body) = self.get(&format!("/api/v1/query?query={}", encode(query)));
        assert_eq!(status, 200, "{} query {query:?}: {body}", self.name);
        let doc: Value = serde_json::from_str(&body).expect("query answer is JSON");
        doc["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                let v = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN);
                (r["metric"].clone(), v)
            })
            .collect()
    }

    /// Polls `query` until it yields exactly one series with value `want`; fails after
    /// [`DEADLINE`] showing the last answer and the server's log.
    pub fn wait_promql(&self, query: &str, want: f64) -> Value {
        let started = Instant::now();
        loop {
            let got = self.promql(query);
            if let [(labels, v)] = got.as_slice() {
                if *v == want {
                    return labels.clone();
                }
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{}: {query} should be {want}, last answer {got:?}\nserver log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An InfluxQL query against InfluxDB 1.x: the first series' rows.
    pub fn influxql(&self, db: &str, query: &str) -> Vec<Vec<Value>> {
        let (status, body) = self.get(&format!("/query?db={}&q={}", encode(db), encode(query)));
        assert_eq!(status, 200, "influxql {query:?}: {body}");
        let doc: Value = serde_json::from_str(&body).expect("influxql answer is JSON");
        doc["results"][0]["series"][0]["values"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|row| row.as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Polls an InfluxQL query whose first row's second column (after `time`) should be `want`.
    pub fn wait_influxql(&self, db: &str, query: &str, want: f64) {
        let started = Instant::now();
        loop {
            let rows = self.influxql(db, query);
            let got = rows.first().and_then(|r| r.get(1)).and_then(Value::as_f64);
            if got == Some(want) {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "influxd: {query} should be {want}, last answer {rows:?}\nserver log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts `binary` with `args(port, dir)` until `ready_path` answers `ready_status`; a port
    /// taken between choosing and binding is retried with another.
    fn start(
        name: &'static str,
        binary: &Path,
        ready_path: &str,
        ready_status: u16,
        args: impl Fn(u16, &Path) -> Vec<String>,
    ) -> Server {
        let mut last_log = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
            let child = Command::new(binary)
                .args(args(port, dir.path()))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let mut server = Server {
                name,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                child,
                dir,
            };
            let started = Instant::now();
            while started.elapsed() < DEADLINE {
                if server.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if try_http10(server.addr, "GET", ready_path)
                    .is_some_and(|(s, _)| s == ready_status)
                {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            last_log = server.log();
            // Dropping stops it; try again on another port.
        }
        panic!("{name} did not become ready:\n{last_log}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGKILL by PID: only this child, which owns nothing but its temporary directory.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus with the remote-write receiver on; scraping `scrape` every second if given.
pub fn prometheus(test: &str, scrape: Option<SocketAddr>) -> Option<Server> {
    let binary = find_binary(test, "prometheus", "prometheus")?;
    Some(Server::start(
        "prometheus",
        &binary,
        "/-/ready",
        200,
        |port, dir| {
            let mut config =
                String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
            if let Some(target) = scrape {
                config.push_str(&format!(
                    "scrape_configs:\n  - job_name: meterd\n    scrape_interval: 1s\n    \
                 static_configs:\n      - targets: ['{target}']\n"
                ));
            }
            let file = dir.join("prometheus.yml");
            std::fs::write(&file, config).expect("write prometheus.yml");
            vec![
                format!("--config.file={}", file.display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--web.enable-remote-write-receiver".into(),
                "--log.level=warn".into(),
            ]
        },
    ))
}

/// VictoriaMetrics single node: remote write at `/api/v1/write`, InfluxDB line protocol at
/// `/write` and `/api/v2/write`, Datadog at `/datadog/api/v1/series`, PromQL at `/api/v1/query`.
pub fn victoria_metrics(test: &str) -> Option<Server> {
    let binary = find_binary(test, "victoria-metrics", "victoria-metrics")?;
    Some(Server::start(
        "victoria-metrics",
        &binary,
        "/health",
        200,
        |port, dir| {
            vec![
                format!("-httpListenAddr=127.0.0.1:{port}"),
                format!("-storageDataPath={}", dir.join("data").display()),
                // Make samples queryable at once, and never answer from a cache.
                "-search.latencyOffset=0s".into(),
                "-search.disableCache".into(),
                "-loggerLevel=ERROR".into(),
            ]
        },
    ))
}

/// InfluxDB 1.x with an empty `meterd` database.
pub fn influxdb(test: &str) -> Option<Server> {
    let binary = find_binary(test, "influxd", "influxdb")?;
    let server = Server::start("influxd", &binary, "/ping", 204, |port, dir| {
        let rpc = free_port();
        let d = dir.display();
        let config = format!(
            "reporting-disabled = true\n\
             bind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [http]\n  enabled = true\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n\
             [monitor]\n  store-enabled = false\n\
             [continuous_queries]\n  enabled = false\n\
             [logging]\n  level = \"warn\"\n"
        );
        let file = dir.join("influxdb.conf");
        std::fs::write(&file, config).expect("write influxdb.conf");
        vec!["run".into(), "-config".into(), file.display().to_string()]
    });
    let (status, body) = server.post("/query?q=CREATE%20DATABASE%20meterd");
    assert_eq!(status, 200, "CREATE DATABASE: {body}");
    Some(server)
}

/// Percent-encodes a query-string value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One HTTP/1.0 exchange (so the answer is never chunked); `None` when nothing answers.
fn try_http10(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    s.write_all(head.as_bytes()).ok()?;
    let mut response = Vec::new();
    s.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

fn http10(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    try_http10(addr, method, path).unwrap_or_else(|| panic!("no answer from {addr}{path}"))
}
