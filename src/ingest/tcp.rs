//! TCP listeners: newline-delimited statsd over many connections.
//!
//! Each connection is a task with its own [`Ingestor`] and a read buffer of at most
//! `max_line` bytes plus one read. A line longer than `max_line` is dropped alone (counted as
//! `too_long`) and the connection stays open. At most `max_connections` are served at once;
//! more are accepted and closed immediately. A connection silent for `idle` is closed.
//!
//! A `statsd_tcp_tls` listener serves the same protocol after a TLS handshake, which runs in
//! the connection's task (bounded by [`crate::tls::HANDSHAKE_TIMEOUT`]) so a slow client holds up
//! no one else; the connection limit counts handshaking connections too. A failed handshake
//! closes the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::aggregate::{Aggregator, Ingestor};
use crate::protocol::{MetricLine, ParseError};
use crate::tls::{log_handshake_failure, ServerTls};

use super::capture::{Datagram, Tap, Transport};
use super::lines::{find_newline, for_each_line};

/// How long a connection may stay silent during shutdown before it is closed.
const DRAIN_IDLE: Duration = Duration::from_millis(200);

/// Accepts connections until shutdown; returns when every connection task has finished. With
/// `tls`, each connection first completes a handshake with the configuration `tls` holds when
/// it arrives. While a capture runs, the complete lines of each read are offered to `tap`.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    aggregator: Arc<Aggregator>,
    max_line: usize,
    max_connections: usize,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
    tap: Arc<Tap>,
) {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "tcp accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, max_connections, "tcp connection limit reached; closing");
                    continue;
                };
                let ingestor = Ingestor::new(aggregator.clone());
                let mut rx = shutdown.clone();
                let tls = tls.clone();
                let tap = Captured { tap: tap.clone(), transport: if tls.is_some() { Transport::TcpTls } else { Transport::Tcp } };
                tasks.spawn(async move {
                    match tls {
                        None => connection(stream, peer, ingestor, max_line, idle, rx, tap).await,
                        Some(tls) => {
                            let shaken = tokio::select! {
                                s = tls.accept(stream) => s,
                                // Nothing was read yet: nothing to drain.
                                _ = rx.changed() => return,
                            };
                            match shaken {
                                Ok(s) => connection(s, peer, ingestor, max_line, idle, rx, tap).await,
                                Err(e) => log_handshake_failure("tcp_tls", peer, &e),
                            }
                        }
                    }
                    drop(permit);
                });
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

/// A connection's capture tap and the transport its records are marked with.
struct Captured {
    tap: Arc<Tap>,
    transport: Transport,
}

impl Captured {
    /// Offers `lines` (complete lines, or the unterminated last one at EOF) as one record.
    fn offer(&self, lines: &[u8]) {
        if !lines.is_empty() {
            let d = Datagram {
                payload: lines,
                truncated: false,
                origin: &[],
            };
            self.tap.offer(self.transport, [d]);
        }
    }
}

async fn connection<S: AsyncRead + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    mut ingestor: Ingestor,
    max_line: usize,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
    capture: Captured,
) {
    let mut buf = vec![0u8; max_line + 4096];
    let mut filled = 0usize;
    // True while discarding the rest of an over-long line.
    let mut skipping = false;
    let mut draining = *shutdown.borrow();
    while let Some(free) = buf.get_mut(filled..) {
        let read = if draining {
            match tokio::time::timeout(DRAIN_IDLE, stream.read(free)).await {
                Ok(r) => r,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                r = tokio::time::timeout(idle, stream.read(free)) => match r {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::debug!(%peer, "tcp connection idle; closing");
                        break;
                    }
                },
                _ = shutdown.changed() => { draining = true; continue; }
            }
        };
        let n = match read {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "tcp read failed");
                break;
            }
        };
        filled += n;
        let mut consumed;
        {
            let data = buf.get(..filled).unwrap_or_default();
            let skipped_first = skipping;
            // One parse target for every line of this read, as for a datagram's lines.
            let mut metric = MetricLine::new();
            let tail = for_each_line(data, |line| {
                if skipping {
                    skipping = false;
                } else if line.len() > max_line {
                    ingestor.count_refused_line(ParseError::TooLong);
                } else {
                    ingestor.ingest_line_into(line, &mut metric);
                }
            });
            consumed = filled - tail.len();
            // One relaxed load per read while no capture runs. The record holds the lines this
            // read completed, without the rest of an over-long line skipped from an earlier read.
            if capture.tap.is_on() {
                let lines = data.get(..consumed).unwrap_or_default();
                let from = match (skipped_first, find_newline(lines)) {
                    (true, Some(i)) => i + 1,
                    (true, None) => lines.len(),
                    (false, _) => 0,
                };
                capture.offer(lines.get(from..).unwrap_or_default());
            }
        }
        if filled - consumed > max_line {
            // No newline within max_line bytes: drop what we have, skip to the next newline.
            if !skipping {
                ingestor.count_refused_line(ParseError::TooLong);
            }
            skipping = true;
            consumed = filled;
        }
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        ingestor.commit();
    }
    // A last line without a newline at EOF still counts.
    if filled > 0 && !skipping {
        if let Some(line) = buf.get(..filled) {
            if capture.tap.is_on() {
                capture.offer(line);
            }
            ingestor.ingest_line(line);
        }
    }
    ingestor.commit();
}
