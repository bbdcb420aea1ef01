//! Transports: bytes in, lines out. UDP and Unix datagram sockets are read by dedicated threads
//! ([`datagram`]), because a blocking `recvmmsg` loop on its own thread is the cheapest way to
//! empty a socket; TCP connections are tokio tasks ([`tcp`]). Every transport frames its bytes
//! with [`lines`] and hands each line to its reader's [`crate::aggregate::Ingestor`], which
//! parses and batches; nothing here knows the statsd grammar. Every reader also
//! holds the [`capture::Tap`], which copies what it receives while a capture runs.

pub mod capture;
pub mod datagram;
pub mod lines;
pub mod origin;
pub mod tcp;
pub mod udp;
pub mod unix;

pub use lines::ingest_datagram;
