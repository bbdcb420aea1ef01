//! The reader loop shared by UDP and Unix datagram sockets: batch receive with `recvmmsg` into
//! reused buffers, hand each datagram to the ingestor, commit once per batch.
//!
//! Each socket has a receive timeout, so the loop notices shutdown within [`POLL`]; on shutdown
//! it drains whatever the kernel still holds (non-blocking) and returns. Linux only (`recvmmsg`).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::aggregate::Ingestor;

/// How often a blocked reader checks for shutdown.
pub const POLL: Duration = Duration::from_millis(100);
/// Datagrams received per `recvmmsg` call.
const BATCH: usize = 64;

/// Reused receive buffers and message headers for one socket.
struct RecvBatch {
    buf: Vec<u8>,
    slot: usize,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside `iovecs`/`headers` point into `buf`/`iovecs`, which this struct
// owns and never reallocates; moving the struct to another thread moves those heap blocks' owner.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    fn new(slot: usize) -> RecvBatch {
        let mut b = RecvBatch {
            buf: vec![0u8; slot * BATCH],
            slot,
            iovecs: Vec::with_capacity(BATCH),
            headers: Vec::with_capacity(BATCH),
        };
        {
            for chunk in b.buf.chunks_mut(slot) {
                b.iovecs.push(libc::iovec {
                    iov_base: chunk.as_mut_ptr().cast(),
                    iov_len: chunk.len(),
                });
            }
            for iov in b.iovecs.iter_mut() {
                // SAFETY: mmsghdr is a plain C struct for which all-zero is a valid value.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                b.headers.push(h);
            }
        }
        b
    }

    /// Receives up to [`BATCH`] datagrams; returns how many. `wait` blocks (up to the socket's
    /// timeout) for the first one.
    fn recv(&mut self, fd: RawFd, wait: bool) -> io::Result<usize> {
        for h in self.headers.iter_mut() {
            h.msg_len = 0;
            h.msg_hdr.msg_flags = 0;
        }
        let flags = if wait {
            libc::MSG_WAITFORONE
        } else {
            libc::MSG_DONTWAIT
        };
        // SAFETY: `headers` holds BATCH valid mmsghdrs whose single iovec each points into a
        // distinct `slot`-byte region of `buf`; all outlive the call; a null timeout is allowed.
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
    fn get(&self, i: usize) -> (&[u8], bool) {
        let Some(h) = self.headers.get(i) else {
            return (&[], false);
        };
        let len = (h.msg_len as usize).min(self.slot);
        let start = i * self.slot;
        let data = self.buf.get(start..start + len).unwrap_or_default();
        (data, h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0)
    }
}

/// Reads `socket` until `shutdown` is set, then drains it. `max_datagram` bytes per datagram:
/// longer ones are cut by the kernel and their last line counted as `truncated`.
pub fn run_reader<S: AsRawFd>(
    socket: S,
    mut ingestor: Ingestor,
    max_datagram: usize,
    shutdown: Arc<AtomicBool>,
    label: &'static str,
) {
    let fd = socket.as_raw_fd();
    let mut batch = RecvBatch::new(max_datagram);
    let mut last_error_log: Option<Instant> = None;
    let mut draining = false;
    loop {
        if !draining && shutdown.load(Ordering::Acquire) {
            draining = true;
        }
        match batch.recv(fd, !draining) {
            Ok(n) => {
                for i in 0..n {
                    let (data, truncated) = batch.get(i);
                    ingestor.ingest_datagram(data, truncated);
                }
                ingestor.commit();
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
