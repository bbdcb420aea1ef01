//! The sending side of meterd-load: one connected UDP socket per sender thread, `sendmmsg`
//! batches taken straight from the pre-generated ring, one pacing decision per batch, and a
//! per-datagram record of what went out (for the totals). Send errors are counted by errno and
//! never end the run.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::pacing::{batch_datagrams, Pacer};
use super::workload::{Plan, Ring, Sent};

/// Most datagrams one `sendmmsg` call takes (the kernel's `UIO_MAXIOV`).
pub const MAX_BATCH: usize = 1024;

/// What one sender does.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// Destination.
    pub to: SocketAddr,
    /// Lines per second for this sender; 0 = flat out.
    pub rate: f64,
    /// Lines for this sender; `None` = until the deadline.
    pub count: Option<u64>,
    /// Stop sending this long after the start, whatever is left.
    pub deadline: Duration,
    /// Most datagrams per `sendmmsg`.
    pub max_batch: usize,
    /// How far behind schedule the sender may fall before the schedule moves (see pacing).
    pub max_lag: Duration,
    /// CPU to pin this sender's thread to.
    pub cpu: Option<usize>,
    /// This sender's number, `0..threads`.
    pub thread: usize,
    /// Senders in all.
    pub threads: usize,
}

/// What one sender did.
#[derive(Clone, Debug, Default)]
pub struct SenderReport {
    /// Exactly which datagrams went out.
    pub sent: Sent,
    /// Lines sent.
    pub lines: u64,
    /// Datagrams sent.
    pub datagrams: u64,
    /// Payload bytes sent.
    pub bytes: u64,
    /// Datagrams not sent, by errno.
    pub errors: BTreeMap<i32, u64>,
    /// Times the pacing schedule moved because the sender fell behind.
    pub lag_resets: u64,
    /// From the start until the last send returned.
    pub elapsed: Duration,
    /// Whether the count was reached (always true without a count, when the deadline ends it).
    pub complete: bool,
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(0);
    if cpu >= max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cpu {cpu} is beyond the {max} a cpu set can name"),
        ));
    }
    // SAFETY: cpu_set_t is a plain bit array for which all-zero is the valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET sets one bit inside `set`, and `cpu < CPU_SETSIZE` was checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 means the calling thread; `set` is a valid cpu_set_t whose size is passed.
    let rc = unsafe {
        libc::sched_setaffinity(
            0,
            std::mem::size_of::<libc::cpu_set_t>(),
            std::ptr::from_ref(&set),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A readable name for an errno (the common send errors by their C names).
pub fn errno_name(errno: i32) -> String {
    match errno {
        libc::ENOBUFS => "ENOBUFS".into(),
        libc::EAGAIN => "EAGAIN".into(),
        libc::ECONNREFUSED => "ECONNREFUSED".into(),
        libc::EMSGSIZE => "EMSGSIZE".into(),
        libc::ENETUNREACH => "ENETUNREACH".into(),
        libc::EHOSTUNREACH => "EHOSTUNREACH".into(),
        libc::EPERM => "EPERM".into(),
        libc::ENOMEM => "ENOMEM".into(),
        other => format!("errno {other}"),
    }
}

/// Reused `sendmmsg` headers. Each header points at its own entry of `iovecs`, which is never
/// resized, so the pointers stay valid for the life of the struct.
struct Batch {
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// `(slot, lines, bytes)` of each datagram in the current batch.
    items: Vec<(usize, usize, usize)>,
}

impl Batch {
    fn new(capacity: usize) -> Batch {
        let mut b = Batch {
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                capacity
            ],
            headers: Vec::with_capacity(capacity),
            items: Vec::with_capacity(capacity),
        };
        for iov in b.iovecs.iter_mut() {
            // SAFETY: mmsghdr is a plain C struct for which all-zero is a valid value (no
            // address, no control data, no iovecs until set below).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            b.headers.push(h);
        }
        b
    }
}

/// Sends this sender's share, starting at `start`, and reports exactly what went out.
pub fn run_sender(cfg: &SenderConfig, ring: &Ring, start: Instant) -> io::Result<SenderReport> {
    if let Some(cpu) = cfg.cpu {
        pin_to_cpu(cpu)?;
    }
    let socket = UdpSocket::bind(match cfg.to {
        SocketAddr::V4(_) => "0.0.0.0:0",
        SocketAddr::V6(_) => "[::]:0",
    })?;
    // Connected: no per-datagram route lookup, and asynchronous errors (ECONNREFUSED) surface.
    socket.connect(cfg.to)?;
    let fd = socket.as_raw_fd();

    let per_batch = batch_datagrams(
        cfg.rate,
        ring.avg_lines_per_datagram(),
        cfg.max_batch.clamp(1, MAX_BATCH),
    );
    let mut batch = Batch::new(per_batch);
    let mut plan = Plan::new(cfg.thread, cfg.threads, cfg.count);
    let mut pacer = Pacer::new(cfg.rate, cfg.max_lag);
    let mut report = SenderReport {
        sent: Sent::new(ring.slots.len()),
        ..SenderReport::default()
    };
    if let Some(wait) = start.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    loop {
        let elapsed = start.elapsed();
        if elapsed >= cfg.deadline {
            report.complete = cfg.count.is_none();
            break;
        }
        let wait = pacer.wait(report.lines, elapsed);
        if wait > Duration::ZERO {
            std::thread::sleep(wait.min(cfg.deadline - elapsed));
            continue;
        }
        batch.items.clear();
        while batch.items.len() < per_batch {
            let Some((slot, lines)) = plan.next_datagram(ring) else {
                break;
            };
            let payload = ring.payload(slot, lines);
            let Some(iov) = batch.iovecs.get_mut(batch.items.len()) else {
                break;
            };
            // sendmmsg only reads through iov_base; the ring outlives the call.
            iov.iov_base = payload.as_ptr().cast_mut().cast();
            iov.iov_len = payload.len();
            batch.items.push((slot, lines, payload.len()));
        }
        if batch.items.is_empty() {
            report.complete = true;
            break;
        }
        send_batch(fd, &mut batch, ring, &mut report);
    }
    report.elapsed = start.elapsed();
    report.lag_resets = pacer.resets;
    Ok(report)
}

/// Sends every datagram of `batch`, retrying after partial sends; a datagram the kernel refuses
/// is counted under its errno and skipped.
fn send_batch(fd: i32, batch: &mut Batch, ring: &Ring, report: &mut SenderReport) {
    let n = batch.items.len();
    let mut off = 0;
    while off < n {
        let Some(first) = batch.headers.get_mut(off..n) else {
            break;
        };
        let vlen = libc::c_uint::try_from(first.len()).unwrap_or(0);
        // SAFETY: `first` is a slice of initialised mmsghdrs, each pointing at one iovec of
        // `batch.iovecs` (alive, never resized) whose base/len describe a live slice of the
        // ring; sendmmsg writes only each header's msg_len.
        let r = unsafe { libc::sendmmsg(fd, first.as_mut_ptr(), vlen, 0) };
        if r < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            *report
                .errors
                .entry(err.raw_os_error().unwrap_or(0))
                .or_default() += 1;
            off += 1;
            continue;
        }
        let done = usize::try_from(r).unwrap_or(0);
        if done == 0 {
            // Cannot happen with vlen > 0; never spin on it.
            *report.errors.entry(0).or_default() += 1;
            off += 1;
            continue;
        }
        for &(slot, lines, bytes) in batch.items.get(off..off + done).unwrap_or_default() {
            let full = ring.slots.get(slot).map_or(0, |s| s.n_lines);
            if lines == full {
                if let Some(c) = report.sent.slot_counts.get_mut(slot) {
                    *c += 1;
                }
            } else {
                report.sent.partial.push((slot, lines));
            }
            report.lines += lines as u64;
            report.datagrams += 1;
            report.bytes += bytes as u64;
        }
        off += done;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{build_ring, Spec, Totals};

    /// Receives on `socket` until `datagrams` arrived or a second passes; returns the payloads.
    fn receive(socket: &UdpSocket, datagrams: u64) -> Vec<Vec<u8>> {
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_536];
        while (out.len() as u64) < datagrams {
            match socket.recv(&mut buf) {
                Ok(n) => out.push(buf[..n].to_vec()),
                Err(_) => break,
            }
        }
        out
    }

    #[test]
    fn sends_exactly_the_count_over_loopback() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut spec = Spec::plain();
        spec.series = 200;
        let ring = build_ring(&spec, 4, 8).expect("ring");
        let cfg = SenderConfig {
            to: rx.local_addr().expect("addr"),
            rate: 0.0,
            count: Some(1_000),
            deadline: Duration::from_secs(5),
            max_batch: 4,
            max_lag: Duration::from_millis(10),
            cpu: None,
            thread: 0,
            threads: 1,
        };
        let report = run_sender(&cfg, &ring, Instant::now()).expect("send");
        assert!(report.complete);
        assert_eq!(report.lines, 1_000);
        assert!(report.errors.is_empty());
        let got = receive(&rx, report.datagrams);
        assert_eq!(got.len() as u64, report.datagrams);
        let lines: usize = got.iter().map(|d| d.split(|&b| b == b'\n').count()).sum();
        assert_eq!(lines, 1_000);
        assert_eq!(Totals::of(&spec, &ring, &report.sent).lines(), 1_000);
        assert_eq!(
            got.iter().map(|d| d.len() as u64).sum::<u64>(),
            report.bytes
        );
    }

    #[test]
    fn refused_datagrams_are_counted_not_fatal() {
        // Nothing listens on the port once the socket is closed: loopback answers with ICMP
        // port unreachable, which the connected socket reports as ECONNREFUSED.
        let to = {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.local_addr().expect("addr")
        };
        let mut spec = Spec::plain();
        spec.series = 50;
        let ring = build_ring(&spec, 1, 4).expect("ring");
        let cfg = SenderConfig {
            to,
            rate: 0.0,
            count: Some(5_000),
            deadline: Duration::from_secs(5),
            max_batch: 1,
            max_lag: Duration::from_millis(10),
            cpu: None,
            thread: 0,
            threads: 1,
        };
        let report = run_sender(&cfg, &ring, Instant::now()).expect("send");
        let refused = report.errors.get(&libc::ECONNREFUSED).copied().unwrap_or(0);
        assert!(refused > 0, "{:?}", report.errors);
        assert_eq!(Totals::of(&spec, &ring, &report.sent).lines(), report.lines);
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::ENOBUFS), "ENOBUFS");
        assert_eq!(errno_name(9999), "errno 9999");
    }
}
