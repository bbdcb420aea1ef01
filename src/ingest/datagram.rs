//! The reader loop shared by UDP and Unix datagram sockets: batch receive with `recvmmsg` into
//! reused buffers, hand each datagram to the ingestor, commit once per batch.
//!
//! A receive that empties the socket is followed by a short nap ([`Coalesce`]), so that at
//! moderate rates one wake-up takes many datagrams instead of one burst's first few.
//!
//! Each socket has a receive timeout, so the loop notices shutdown within [`POLL`]; on shutdown
//! it drains whatever the kernel still holds (non-blocking) and returns. Linux only (`recvmmsg`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::origin::OriginCache;
use crate::aggregate::Ingestor;

use super::capture::{Datagram, Tap, Transport};

/// How often a blocked reader checks for shutdown.
pub const POLL: Duration = Duration::from_millis(100);
/// Datagrams received per `recvmmsg` call.
pub const BATCH: usize = 64;

/// Reused receive buffers and message headers for one socket (public for
/// `benches/origin.rs`, which times it with and without credentials).
pub struct RecvBatch {
    buf: Vec<u8>,
    slot: usize,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// One control buffer per header for the sender's credentials ([`CRED_SPACE`] bytes each),
    /// `u64`s so every one is aligned for a `cmsghdr`; empty when origin detection is off.
    control: Vec<u64>,
}

/// Control-message space for one `SCM_CREDENTIALS` message.
// SAFETY: `CMSG_SPACE` is arithmetic on its argument; `unsafe` only by its libc declaration.
const CRED_SPACE: usize = unsafe { libc::CMSG_SPACE(size_of::<libc::ucred>() as u32) } as usize;
/// [`CRED_SPACE`] in `u64`s.
const CRED_WORDS: usize = CRED_SPACE.div_ceil(size_of::<u64>());

// SAFETY: the raw pointers inside `iovecs`/`headers` point into `buf`/`iovecs`/`control`, which
// this struct owns and never reallocates; moving the struct to another thread moves those heap
// blocks' owner.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// Buffers for `BATCH` datagrams of up to `slot` bytes; with `credentials`, each datagram's
    /// header also gets room for its sender's credentials.
    pub fn new(slot: usize, credentials: bool) -> RecvBatch {
        let mut b = RecvBatch {
            buf: vec![0u8; slot * BATCH],
            slot,
            iovecs: Vec::with_capacity(BATCH),
            headers: Vec::with_capacity(BATCH),
            control: vec![0u64; if credentials { CRED_WORDS * BATCH } else { 0 }],
        };
        {
            for chunk in b.buf.chunks_mut(slot) {
                b.iovecs.push(libc::iovec {
                    iov_base: chunk.as_mut_ptr().cast(),
                    iov_len: chunk.len(),
                });
            }
            let mut control = b.control.chunks_mut(CRED_WORDS);
            for iov in b.iovecs.iter_mut() {
                // SAFETY: mmsghdr is a plain C struct for which all-zero is a valid value.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                if let Some(c) = control.next() {
                    h.msg_hdr.msg_control = c.as_mut_ptr().cast();
                }
                b.headers.push(h);
            }
        }
        b
    }

    /// Receives up to [`BATCH`] datagrams; returns how many. `wait` blocks (up to the socket's
    /// timeout) for the first one.
    pub fn recv(&mut self, fd: RawFd, wait: bool) -> io::Result<usize> {
        for h in self.headers.iter_mut() {
            h.msg_len = 0;
            h.msg_hdr.msg_flags = 0;
        }
        if !self.control.is_empty() {
            // The kernel sets each length to what it wrote: give every header its room back.
            for h in self.headers.iter_mut() {
                h.msg_hdr.msg_controllen = CRED_SPACE;
            }
        }
        let flags = if wait {
            libc::MSG_WAITFORONE
        } else {
            libc::MSG_DONTWAIT
        };
        // SAFETY: `headers` holds BATCH valid mmsghdrs whose single iovec each points into a
        // distinct `slot`-byte region of `buf`, and whose control buffer (if any) is a distinct
        // `CRED_SPACE`-byte region of `control`; all outlive the call; a null timeout is
        // allowed.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                self.headers.len() as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Datagram `i` of the last receive and whether the kernel cut it.
    pub fn get(&self, i: usize) -> (&[u8], bool) {
        let Some(h) = self.headers.get(i) else {
            return (&[], false);
        };
        let len = (h.msg_len as usize).min(self.slot);
        let start = i * self.slot;
        let data = self.buf.get(start..start + len).unwrap_or_default();
        (data, h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0)
    }

    /// The sender's pid of datagram `i` of the last receive, from its `SCM_CREDENTIALS`
    /// control message; `None` without one (origin detection off, or nothing received).
    pub fn sender_pid(&self, i: usize) -> Option<i32> {
        let h = &self.headers.get(i)?.msg_hdr;
        if h.msg_control.is_null() {
            return None;
        }
        // The kernel writes at most `CRED_SPACE` bytes here, and reports what it wrote.
        let controllen = h.msg_controllen.min(CRED_SPACE);
        // SAFETY: `h` is a header of ours whose `msg_control` points at `CRED_SPACE` bytes of
        // `control`, aligned for a `cmsghdr`, and whose `msg_controllen` (capped just above)
        // is what the kernel wrote there. `CMSG_FIRSTHDR` returns null unless a whole
        // `cmsghdr` fits in that length, and the data is read only when the message's own
        // length covers a `ucred` that lies within the buffer; `read_unaligned` needs no
        // alignment.
        unsafe {
            let mut m = *h;
            m.msg_controllen = controllen;
            let c = libc::CMSG_FIRSTHDR(&m);
            if c.is_null() {
                return None;
            }
            let cred_len = libc::CMSG_LEN(size_of::<libc::ucred>() as u32) as usize;
            let data = libc::CMSG_DATA(c);
            let end = data.add(size_of::<libc::ucred>());
            let buffer_end = h.msg_control.cast::<u8>().add(controllen);
            if (*c).cmsg_level != libc::SOL_SOCKET
                || (*c).cmsg_type != libc::SCM_CREDENTIALS
                || (*c).cmsg_len < cred_len
                || end > buffer_end
            {
                return None;
            }
            let cred = data.cast::<libc::ucred>().read_unaligned();
            Some(cred.pid)
        }
    }
}

/// Naps shorter than this are not taken: a timer wake-up costs as much as the socket wake-ups
/// it would save (very short naps cost more CPU per line than none: `benches/ab.py`).
const MIN_NAP: Duration = Duration::from_millis(1);
/// Socket buffer (as `SO_RCVBUF` reports it: twice what was asked) at which the full
/// `read_coalesce` nap is allowed; smaller buffers get proportionally shorter naps.
const FULL_NAP_BUFFER: f64 = 8.0 * 1024.0 * 1024.0;
/// Estimated kernel memory per datagram beyond its payload (`sk_buff`, slab rounding), which the
/// socket buffer is charged for.
const DATAGRAM_OVERHEAD: usize = 1024;
/// A reader busy more than this share of the time since its last nap takes none: near its
/// capacity the wake-ups saved are a small share of its work, and any stall (a flush, series
/// switching to HDR) needs all the buffer's headroom.
const MAX_BUSY: f64 = 0.35;

/// How long a reader naps after a receive that emptied its socket.
///
/// Every wake-up of a blocked reader costs a context switch and, on a virtual machine, an exit
/// to the hypervisor: a sender that writes a burst every millisecond woke the reader a thousand
/// times a second, a noticeable share of its CPU (`benches/ab.py`; BENCHMARKS.md). After a nap the
/// next receive finds several bursts waiting. The nap is bounded so that the socket buffer always
/// has room for what arrives meanwhile: by `read_coalesce`, scaled down in proportion for buffers
/// smaller than [`FULL_NAP_BUFFER`] (a nap that comes out under [`MIN_NAP`] is not taken); and by
/// the rate since the last nap, so that a nap fills at most a quarter of the buffer at that rate. A
/// reader busy more than [`MAX_BUSY`] of the time does not nap, and a flooded one never does (its
/// receives come back full).
struct Coalesce {
    max: Duration,
    /// Buffer bytes a nap may fill.
    budget: f64,
    since: Instant,
    /// Buffer bytes charged for the datagrams received since `since`.
    charged: f64,
    /// Time spent ingesting since `since`.
    busy: Duration,
}

impl Coalesce {
    fn new(max: Duration, rcvbuf: usize) -> Coalesce {
        let rcvbuf = rcvbuf as f64;
        Coalesce {
            max: max.mul_f64((rcvbuf / FULL_NAP_BUFFER).min(1.0)),
            budget: rcvbuf / 4.0,
            since: Instant::now(),
            charged: 0.0,
            busy: Duration::ZERO,
        }
    }

    /// Counts time spent ingesting what a receive returned.
    fn worked(&mut self, d: Duration) {
        self.busy += d;
    }

    /// Counts a received datagram of `len` bytes.
    fn received(&mut self, len: usize) {
        self.charged += (len + DATAGRAM_OVERHEAD) as f64;
    }

    /// The nap to take now that the socket is empty, if one is worth taking; starts the next
    /// rate window.
    fn nap(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.since).as_secs_f64().max(1e-6);
        let rate = self.charged / elapsed;
        let load = std::mem::take(&mut self.busy).as_secs_f64() / elapsed;
        self.since = now;
        self.charged = 0.0;
        if load > MAX_BUSY {
            return None;
        }
        let fill_limit = if rate > 0.0 {
            Duration::try_from_secs_f64(self.budget / rate).unwrap_or(Duration::MAX)
        } else {
            Duration::MAX
        };
        Some(self.max.min(fill_limit)).filter(|&d| d >= MIN_NAP)
    }
}

/// What a datagram reader is told besides its socket, ingestor, origin cache and stop flag.
pub struct ReaderOptions {
    /// Bytes per datagram: longer ones are cut by the kernel.
    pub max_datagram: usize,
    /// The longest nap after a receive that emptied the socket ([`Coalesce`]; zero: never).
    pub coalesce: Duration,
    /// What the socket is, for logs and capture records.
    pub transport: Transport,
    /// The capture tap every reader offers its batches to while a capture runs.
    pub tap: Arc<Tap>,
}

/// Reads `socket` until `shutdown` is set, then drains it. `max_datagram` bytes per datagram:
/// longer ones are cut by the kernel and their last line counted as `truncated`. After a
/// receive that empties the socket the reader naps up to `coalesce` ([`Coalesce`]; zero: never).
/// While a capture runs, each receive batch is offered to `tap` as `transport`.
///
/// With an `origin` cache (origin detection, Unix sockets with `SO_PASSCRED` only), each
/// datagram is received with its sender's credentials and its metrics tagged with the sender's
/// container id ([`super::origin`]): one cache lookup per datagram. Without, no control buffers
/// and no per-datagram work.
pub fn run_reader<S: AsFd>(
    socket: S,
    mut ingestor: Ingestor,
    options: ReaderOptions,
    mut origin: Option<OriginCache>,
    shutdown: Arc<AtomicBool>,
) {
    let ReaderOptions {
        max_datagram,
        coalesce,
        transport,
        tap,
    } = options;
    let label = transport.name();
    let fd = socket.as_fd().as_raw_fd();
    let mut batch = RecvBatch::new(max_datagram, origin.is_some());
    // The buffer as the kernel reports it (twice what was asked), 0 if unknown: no naps.
    let rcvbuf = socket2::SockRef::from(&socket)
        .recv_buffer_size()
        .unwrap_or(0);
    let mut naps = Coalesce::new(coalesce, rcvbuf);
    let mut last_error_log: Option<Instant> = None;
    let mut draining = false;
    loop {
        if !draining && shutdown.load(Ordering::Acquire) {
            draining = true;
        }
        match batch.recv(fd, !draining) {
            Ok(n) => {
                let start = Instant::now();
                for i in 0..n {
                    let (data, truncated) = batch.get(i);
                    naps.received(data.len());
                    // The sender's container id (origin detection on, sender in a container).
                    let from: Option<&[u8]> = match origin.as_mut() {
                        Some(cache) => cache.container_id(batch.sender_pid(i).unwrap_or(0), start),
                        None => None,
                    };
                    match from {
                        None => super::lines::ingest_datagram(&mut ingestor, data, truncated),
                        Some(id) => {
                            super::lines::ingest_datagram_from(&mut ingestor, data, truncated, id)
                        }
                    }
                }
                if let Some(cache) = origin.as_mut() {
                    let c = cache.take_counts();
                    ingestor.count_origin_lookups(c.hits, c.misses);
                }
                // The whole cost of capture while none runs: one relaxed load per batch. Offered
                // after ingesting, so that each datagram's origin is in the cache.
                if tap.is_on() {
                    let cache = origin.as_ref();
                    tap.offer(
                        transport,
                        (0..n).map(|i| {
                            let (payload, truncated) = batch.get(i);
                            let from = cache
                                .zip(batch.sender_pid(i))
                                .and_then(|(c, pid)| c.peek(pid));
                            Datagram {
                                payload,
                                truncated,
                                origin: from.unwrap_or_default(),
                            }
                        }),
                    );
                }
                ingestor.commit();
                naps.worked(start.elapsed());
                if n < BATCH && !draining {
                    if let Some(nap) = naps.nap() {
                        std::thread::sleep(nap);
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if draining {
                    break;
                }
            }
            Err(e) => {
                if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(transport = label, error = %e, "receive failed");
                    last_error_log = Some(Instant::now());
                }
                if draining {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    ingestor.commit();
    drop(socket);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over a real Unix socket pair: with credentials on, every datagram of a batch carries
    /// this process's pid; off, none has control data.
    #[test]
    fn credentials_come_with_each_datagram_only_when_asked() {
        use std::os::unix::net::UnixDatagram;
        for credentials in [false, true] {
            let (rx, tx) = UnixDatagram::pair().unwrap();
            socket2::SockRef::from(&rx)
                .set_passcred(credentials)
                .unwrap();
            for i in 0..3 {
                tx.send(format!("a:{i}|c").as_bytes()).unwrap();
            }
            let mut batch = RecvBatch::new(512, credentials);
            let n = batch.recv(rx.as_raw_fd(), false).unwrap();
            assert_eq!(n, 3);
            for i in 0..n {
                assert_eq!(batch.get(i).0, format!("a:{i}|c").as_bytes());
                let want = credentials.then(|| i32::try_from(std::process::id()).unwrap());
                assert_eq!(batch.sender_pid(i), want, "datagram {i}");
            }
            // A later, smaller receive still finds each header's full control room.
            tx.send(b"b:1|c").unwrap();
            assert_eq!(batch.recv(rx.as_raw_fd(), false).unwrap(), 1);
            assert_eq!(batch.sender_pid(0).is_some(), credentials);
            assert_eq!(batch.sender_pid(BATCH), None);
        }
    }

    const BIG: usize = 16 * 1024 * 1024;

    #[test]
    fn an_idle_or_slow_socket_naps_the_full_time() {
        let mut c = Coalesce::new(Duration::from_millis(5), BIG);
        assert_eq!(c.nap(), Some(Duration::from_millis(5)));
        // One millisecond burst of 1M lines/s (14 datagrams of 1432 bytes) in 10 ms: a quarter
        // of the buffer lasts over a second at that rate, so the full nap stands.
        c.since = Instant::now() - Duration::from_millis(10);
        for _ in 0..14 {
            c.received(1432);
        }
        assert_eq!(c.nap(), Some(Duration::from_millis(5)));
    }

    #[test]
    fn a_fast_socket_naps_only_as_long_as_a_quarter_buffer_lasts() {
        let mut c = Coalesce::new(Duration::from_millis(5), BIG);
        // 100 ms at 1 GB/s of buffer charge: a quarter of 16 MiB lasts ~4.2 ms.
        c.since = Instant::now() - Duration::from_millis(100);
        c.charged = 1e8;
        let nap = c.nap().expect("over a millisecond");
        assert!(nap < Duration::from_millis(5), "{nap:?}");
        assert!(nap > Duration::from_millis(3), "{nap:?}");
        // Ten times that rate: under a millisecond, so no nap at all.
        c.since = Instant::now() - Duration::from_millis(100);
        c.charged = 1e9;
        assert_eq!(c.nap(), None);
    }

    #[test]
    fn a_busy_reader_does_not_nap() {
        let mut c = Coalesce::new(Duration::from_millis(5), BIG);
        c.since = Instant::now() - Duration::from_millis(10);
        c.worked(Duration::from_millis(6));
        assert_eq!(c.nap(), None);
        // The next window starts empty.
        c.since = Instant::now() - Duration::from_millis(10);
        c.worked(Duration::from_millis(2));
        assert_eq!(c.nap(), Some(Duration::from_millis(5)));
    }

    #[test]
    fn small_buffers_and_zero_never_nap() {
        // The kernel's default buffer (212,992 bytes, reported doubled): 5 ms × 0.05 < 1 ms.
        assert_eq!(Coalesce::new(Duration::from_millis(5), 425_984).nap(), None);
        assert_eq!(Coalesce::new(Duration::ZERO, BIG).nap(), None);
        assert_eq!(Coalesce::new(Duration::from_millis(5), 0).nap(), None);
        // Half the full buffer: half the nap.
        let half = Coalesce::new(Duration::from_millis(5), 4 * 1024 * 1024).nap();
        assert_eq!(half, Some(Duration::from_micros(2500)));
    }
}
