//! Unix datagram sockets (DogStatsD's UDS), read like UDP by a dedicated thread.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use socket2::SockRef;

use super::datagram::POLL;

/// Binds a Unix datagram socket at `path`, replacing a stale socket file left by a previous run
/// (but never a regular file). With `credentials` (origin detection), the kernel passes each
/// datagram's sender credentials (`SO_PASSCRED`).
pub fn bind(path: &Path, rcvbuf: usize, credentials: bool) -> io::Result<UnixDatagram> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
    }
    let s = UnixDatagram::bind(path)?;
    crate::sys::set_receive_buffer(&SockRef::from(&s), rcvbuf);
    s.set_read_timeout(Some(POLL))?;
    if credentials {
        SockRef::from(&s).set_passcred(true)?;
    }
    Ok(s)
}
