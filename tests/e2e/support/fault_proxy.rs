//! A fault-injecting HTTP/1.1 proxy between a local and a global: it reads each request (head
//! and `Content-Length` body) from the local, and for `POST /import` applies a fault mode chosen
//! by a seeded schedule that a test may change at runtime; other paths (`/healthz`) always pass.
//!
//! Every request goes to the upstream on a fresh connection with `Connection: close`, and every
//! client connection carries one request: the answer says `Connection: close` and the proxy
//! closes after it. Every wait is bounded by socket timeouts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does with one `/import` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward it and its answer.
    Pass,
    /// Forward it in full (the global merges it), then hold the answer for
    /// [`FaultProxy::LATE_BY`] — longer than the local's request timeout — before writing it.
    LateAnswer,
    /// Read it in full, forward the head and only half the body, then close both connections:
    /// the global sees a truncated body.
    CutRequest,
    /// Read the head and part of the body, then close the local's connection; nothing is
    /// forwarded.
    KillMidBody,
}

impl Fault {
    /// Every mode, in the order of [`FaultProxy::counts`].
    pub const ALL: [Fault; 4] = [
        Fault::Pass,
        Fault::LateAnswer,
        Fault::CutRequest,
        Fault::KillMidBody,
    ];

    fn index(self) -> usize {
        match self {
            Fault::Pass => 0,
            Fault::LateAnswer => 1,
            Fault::CutRequest => 2,
            Fault::KillMidBody => 3,
        }
    }
}

/// How faults are chosen for `/import` requests.
#[derive(Debug, Clone, Copy)]
pub enum Schedule {
    /// Always this mode.
    Always(Fault),
    /// Per request, weighted by `weights` (in [`Fault::ALL`] order), from a xorshift64* RNG.
    Mix {
        /// Relative weights of Pass, LateAnswer, CutRequest, KillMidBody.
        weights: [u32; 4],
        /// The RNG's state (non-zero).
        state: u64,
    },
}

impl Schedule {
    /// A seeded mix.
    pub fn mix(seed: u64, weights: [u32; 4]) -> Schedule {
        Schedule::Mix {
            weights,
            state: seed | 1,
        }
    }

    fn next(&mut self) -> Fault {
        match self {
            Schedule::Always(f) => *f,
            Schedule::Mix { weights, state } => {
                // xorshift64*: the state's xorshift, its output the high half of a multiple.
                let mut x = *state;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *state = x;
                let out = x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
                let total: u64 = weights.iter().map(|&w| u64::from(w)).sum::<u64>().max(1);
                let mut pick = out % total;
                for (f, &w) in Fault::ALL.iter().zip(weights.iter()) {
                    if pick < u64::from(w) {
                        return *f;
                    }
                    pick -= u64::from(w);
                }
                Fault::Pass
            }
        }
    }
}

struct Shared {
    upstream: SocketAddr,
    schedule: Mutex<Schedule>,
    /// `/import` requests per mode, in [`Fault::ALL`] order.
    counts: [AtomicU64; 4],
    /// Requests to other paths.
    other: AtomicU64,
    /// Requests the upstream could not be reached for (closed without an answer).
    upstream_failed: AtomicU64,
    stop: AtomicBool,
}

/// A fault-injecting proxy on 127.0.0.1:0 in front of `upstream`.
pub struct FaultProxy {
    /// Its address.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

/// Socket timeouts: every read and write of the proxy is bounded by this.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request or response head or body the proxy reads.
const MAX_BODY: usize = 64 << 20;

impl FaultProxy {
    /// How long a [`Fault::LateAnswer`] holds the answer: well past the local's request timeout
    /// (min(interval / 2, 5 s): 500 ms at the 1 s interval these tests use).
    pub const LATE_BY: Duration = Duration::from_millis(2000);

    /// Starts a proxy to `upstream` with `schedule`.
    pub fn start(upstream: SocketAddr, schedule: Schedule) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            schedule: Mutex::new(schedule),
            counts: Default::default(),
            other: AtomicU64::new(0),
            upstream_failed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if shared.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let shared = shared.clone();
                    std::thread::spawn(move || serve(conn, &shared));
                }
            });
        }
        FaultProxy { addr, shared }
    }

    /// Base URL, e.g. `http://127.0.0.1:4567`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the schedule.
    pub fn set_schedule(&self, schedule: Schedule) {
        *self.shared.schedule.lock().expect("schedule lock") = schedule;
    }

    /// Every `/import` request from now on gets `fault`.
    pub fn set(&self, fault: Fault) {
        self.set_schedule(Schedule::Always(fault));
    }

    /// `/import` requests seen with `fault`.
    pub fn count(&self, fault: Fault) -> u64 {
        self.shared.counts[fault.index()].load(Ordering::Relaxed)
    }

    /// `/import` requests per mode, in [`Fault::ALL`] order.
    pub fn counts(&self) -> [u64; 4] {
        Fault::ALL.map(|f| self.count(f))
    }

    /// Requests to other paths (all passed).
    pub fn other(&self) -> u64 {
        self.shared.other.load(Ordering::Relaxed)
    }

    /// Requests closed unanswered because the upstream could not be reached.
    pub fn upstream_failed(&self) -> u64 {
        self.shared.upstream_failed.load(Ordering::Relaxed)
    }

    /// A one-line summary for logs.
    pub fn summary(&self) -> String {
        let [pass, late, cut, kill] = self.counts();
        format!(
            "pass={pass} late_answer={late} cut_request={cut} kill_mid_body={kill} other={} upstream_failed={}",
            self.other(),
            self.upstream_failed()
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

/// One parsed request or response: the head's lines (start line first, without CRLF) and body.
struct Message {
    lines: Vec<String>,
    body: Vec<u8>,
}

impl Message {
    /// The head with `Connection: close` in place of any `Connection` header.
    fn head_closing(&self) -> Vec<u8> {
        let mut out = String::new();
        for (i, l) in self.lines.iter().enumerate() {
            let is_conn = i > 0
                && l.split_once(':')
                    .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"));
            if !is_conn {
                out.push_str(l);
                out.push_str("\r\n");
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        out.into_bytes()
    }
}

/// Reads a head (at most 200 lines); `None` on EOF, error or a malformed head.
fn read_head(r: &mut impl BufRead) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    for _ in 0..200 {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            return (!lines.is_empty()).then_some(lines);
        }
        lines.push(line);
    }
    None
}

fn content_length(lines: &[String]) -> Option<usize> {
    lines.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim().eq_ignore_ascii_case("content-length") {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

fn chunked(lines: &[String]) -> bool {
    lines.iter().skip(1).any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    })
}

/// Reads a whole message with a `Content-Length` body (or, for a response without one, a body
/// up to EOF). Chunked bodies are not supported (the forwarder never sends them; the proxy
/// fails the request loudly rather than mangle one).
fn read_message(r: &mut impl BufRead, response: bool) -> Option<Message> {
    let lines = read_head(r)?;
    assert!(
        !chunked(&lines),
        "fault proxy: chunked bodies are not supported: {lines:?}"
    );
    let body = match content_length(&lines) {
        Some(n) if n <= MAX_BODY => {
            let mut body = vec![0u8; n];
            r.read_exact(&mut body).ok()?;
            body
        }
        Some(_) => return None,
        None if response => {
            let mut body = Vec::new();
            r.take(MAX_BODY as u64).read_to_end(&mut body).ok()?;
            body
        }
        None => Vec::new(),
    };
    Some(Message { lines, body })
}

fn connect_upstream(shared: &Shared) -> Option<TcpStream> {
    let s = TcpStream::connect_timeout(&shared.upstream, IO_TIMEOUT).ok()?;
    s.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    s.set_write_timeout(Some(IO_TIMEOUT)).ok()?;
    Some(s)
}

/// Sends `req` upstream in full and reads the whole answer.
fn round_trip(shared: &Shared, req: &Message) -> Option<Message> {
    let mut up = connect_upstream(shared)?;
    up.write_all(&req.head_closing()).ok()?;
    up.write_all(&req.body).ok()?;
    let mut r = BufReader::new(up);
    read_message(&mut r, true)
}

fn write_response(client: &mut TcpStream, resp: &Message) {
    let _ = client.write_all(&resp.head_closing());
    let _ = client.write_all(&resp.body);
    let _ = client.flush();
}

fn serve(conn: TcpStream, shared: &Shared) {
    let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
    let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut client = conn;
    let Some(lines) = read_head(&mut reader) else {
        return;
    };
    let is_import = lines
        .first()
        .and_then(|l| l.split_whitespace().nth(1))
        .is_some_and(|p| p.starts_with("/import"));
    let fault = if is_import {
        shared.schedule.lock().expect("schedule lock").next()
    } else {
        Fault::Pass
    };
    if fault == Fault::KillMidBody {
        shared.counts[fault.index()].fetch_add(1, Ordering::Relaxed);
        // Take part of the body (what has arrived of its first half), then hang up: RST, as
        // unread bytes remain.
        let half = content_length(&lines).unwrap_or(0) / 2;
        let mut part = vec![0u8; half.max(1)];
        let _ = reader.read(&mut part);
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    assert!(
        !chunked(&lines),
        "fault proxy: chunked bodies are not supported: {lines:?}"
    );
    let n = content_length(&lines).unwrap_or(0).min(MAX_BODY);
    let mut body = vec![0u8; n];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let req = Message { lines, body };
    if is_import {
        shared.counts[fault.index()].fetch_add(1, Ordering::Relaxed);
    } else {
        shared.other.fetch_add(1, Ordering::Relaxed);
    }
    match fault {
        Fault::Pass | Fault::LateAnswer => {
            let Some(resp) = round_trip(shared, &req) else {
                shared.upstream_failed.fetch_add(1, Ordering::Relaxed);
                let _ = client.shutdown(Shutdown::Both);
                return;
            };
            if fault == Fault::LateAnswer {
                // The global has answered, so it has decided (merged or not); hold the answer
                // past the local's timeout. Bounded sleep in small steps, cut short on drop.
                let steps = FaultProxy::LATE_BY.as_millis() / 50;
                for _ in 0..steps {
                    if shared.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            write_response(&mut client, &resp);
            let _ = client.shutdown(Shutdown::Both);
        }
        Fault::CutRequest => {
            if let Some(mut up) = connect_upstream(shared) {
                let _ = up.write_all(&req.head_closing());
                let _ = up.write_all(&req.body[..req.body.len() / 2]);
                let _ = up.flush();
                // Give the global the half it was sent before hanging up on it.
                std::thread::sleep(Duration::from_millis(50));
                let _ = up.shutdown(Shutdown::Both);
            } else {
                shared.upstream_failed.fetch_add(1, Ordering::Relaxed);
            }
            let _ = client.shutdown(Shutdown::Both);
        }
        Fault::KillMidBody => unreachable!("handled before the body was read"),
    }
}
