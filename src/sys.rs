//! The operating-system calls meterd makes through `libc`, in one place (a leaf module): thread
//! priority, returning free heap to the kernel, the hostname, socket receive buffers and the
//! kernel's UDP drop counters. Every `unsafe` block here is a plain libc call on memory we own.

use socket2::Socket;

/// How much lower than the datagram readers the runtime's threads (flush rendering, sink
/// encoding, HTTP, TCP ingest) are scheduled, in nice steps.
///
/// Readers must never pause while a flush renders and encodes: on a busy core the kernel's
/// socket buffer holds only tens of milliseconds of traffic, while rendering a flush of a million
/// series takes a few hundred. At +10 a runtime thread competing with a reader for one core gets
/// about a tenth of it (CFS weights 110 vs 1024); on an idle core it runs at full speed.
pub const BACKGROUND_NICE: i32 = 10;

/// Sets the calling thread's nice value to the process's (its main thread's) plus
/// [`BACKGROUND_NICE`] (the kernel caps it at 19); meant for the tokio runtime's
/// `on_thread_start`.
///
/// An absolute value, not a step: tokio starts its blocking-pool threads from worker threads,
/// which already run lowered and pass their nice value on, so adding a step there ended them at
/// nice 19 instead of 10.
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        let target = (process_nice() + BACKGROUND_NICE).min(19);
        // On Linux, PRIO_PROCESS with id 0 is the calling thread alone. Raising a nice value
        // needs no privilege; should it fail anyway the thread keeps its priority.
        // SAFETY: `setpriority` takes integers and touches no memory of ours.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, 0, target);
        }
    }
}

/// The main thread's nice value (the process's, as started), 0 if it cannot be read.
#[cfg(target_os = "linux")]
fn process_nice() -> i32 {
    // SAFETY: `getpid` and `getpriority` take integers and touch no memory of ours; errno is
    // the calling thread's own.
    unsafe {
        // -1 is also a valid nice value: errno tells it from a failure.
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, libc::getpid() as libc::id_t);
        if nice == -1 && *libc::__errno_location() != 0 {
            0
        } else {
            nice
        }
    }
}

/// The calling thread's nice value.
#[cfg(all(test, target_os = "linux"))]
fn thread_nice() -> i32 {
    // SAFETY: as in `process_nice`.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

/// Returns the heap's free pages to the kernel (glibc keeps freed memory in its arenas).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes an integer and only walks glibc's own heap, under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The machine's hostname, or `localhost` if it cannot be read.
pub fn machine_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(buf.get(..end).unwrap_or_default()).into_owned()
}

/// `SO_RCVBUFFORCE` where permitted (root or CAP_NET_ADMIN, beyond `net.core.rmem_max`), else
/// `SO_RCVBUF` (capped by the kernel).
pub fn set_receive_buffer(s: &Socket, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: setsockopt reads sizeof(c_int) bytes from a valid c_int.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                std::ptr::from_ref(&v).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
    if let Err(e) = s.set_recv_buffer_size(bytes) {
        tracing::warn!(error = %e, bytes, "cannot set the socket receive buffer");
    }
}

/// Sum of the `drops` column of `/proc/net/udp` and `/proc/net/udp6` for sockets bound to any of
/// `ports`. Returns `None` where the files cannot be read (not Linux).
pub fn read_udp_kernel_drops(ports: &[u16]) -> Option<u64> {
    if ports.is_empty() {
        return Some(0);
    }
    let mut total = 0u64;
    let mut any = false;
    for file in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        any = true;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(drops)) = (fields.get(1), fields.last()) else {
                continue;
            };
            let port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if port.is_some_and(|p| ports.contains(&p)) {
                total += drops.parse::<u64>().unwrap_or(0);
            }
        }
    }
    any.then_some(total)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// A runtime thread started from another runtime thread (tokio's blocking pool) ends at the
    /// same nice value as one started from the main thread: base + 10, not base + 20.
    #[test]
    fn lowered_threads_are_lowered_once() {
        let expected = (process_nice() + BACKGROUND_NICE).min(19);
        let (outer, inner) = std::thread::spawn(|| {
            lower_thread_priority();
            let outer = thread_nice();
            let inner = std::thread::spawn(|| {
                lower_thread_priority();
                thread_nice()
            })
            .join()
            .unwrap_or(i32::MIN);
            (outer, inner)
        })
        .join()
        .unwrap_or((i32::MIN, i32::MIN));
        assert_eq!(outer, expected);
        assert_eq!(inner, expected);
    }
}
