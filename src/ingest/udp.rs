//! UDP listeners: `readers` sockets on one address with `SO_REUSEPORT`, each with a large receive
//! buffer and its own reader thread.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use super::datagram::POLL;

/// Binds `readers` sockets to `addr` (port 0 picks one port for all of them) and returns them
/// with the address actually bound and the receive buffer the kernel granted.
pub fn bind(
    addr: SocketAddr,
    readers: usize,
    rcvbuf: usize,
) -> io::Result<(Vec<UdpSocket>, SocketAddr, usize)> {
    let mut sockets = Vec::with_capacity(readers.max(1));
    let mut bound = addr;
    let mut granted = 0;
    for _ in 0..readers.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_port(true)?;
        crate::sys::set_receive_buffer(&s, rcvbuf);
        granted = s.recv_buffer_size().unwrap_or(0);
        s.set_read_timeout(Some(POLL))?;
        s.bind(&bound.into())?;
        if let Some(local) = s.local_addr()?.as_socket() {
            bound = local;
        }
        sockets.push(UdpSocket::from(s));
    }
    Ok((sockets, bound, granted))
}
