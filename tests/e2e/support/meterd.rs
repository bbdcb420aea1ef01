//! The real `meterd` binary: started on ephemeral loopback ports with a config file in a
//! temporary directory, its bound addresses read from its log, its `/metrics` read, signalled
//! and waited for; plus plain HTTP and UDP clients to talk to it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::clock::{wait_for, DEADLINE};

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

/// The `meterd` binary as a command, for its subcommands (`check-config`, `send`, …).
pub fn meterd_cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meterd"))
}

/// Runs `meterd check-config PATH`, asserts that it refuses the file (exit status 1) and returns
/// what it printed on stderr.
pub fn check_config_refused(path: &std::path::Path) -> String {
    let out = meterd_cli().arg("check-config").arg(path).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "check-config accepted {}",
        path.display()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that a command exited successfully, showing its stderr if not.
pub fn assert_succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
