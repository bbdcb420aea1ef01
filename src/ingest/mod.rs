//! Transports only: bytes in, lines out. Each reader owns an [`crate::aggregate::Ingestor`] that
//! parses and batches; nothing here knows the statsd grammar.
//!
//! UDP and Unix datagram sockets are read by dedicated threads ([`datagram`]), because a blocking
//! `recvmmsg` loop on its own thread is the cheapest way to empty a socket; TCP connections are
//! tokio tasks ([`tcp`]).

pub mod datagram;
pub mod tcp;
pub mod udp;
pub mod unix;
