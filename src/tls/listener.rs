//! [`TlsListener`]: the HTTP API's listener when `[http] tls_cert` is set. axum's accept loop
//! takes connections one at a time, so the handshakes happen before it: a task accepts TCP
//! connections and spawns one handshake task per connection (bounded by
//! [`super::HANDSHAKE_TIMEOUT`] and [`MAX_HANDSHAKES`] at once); finished handshakes queue for
//! axum. A slow or failing client holds up only its own task, and a plaintext request gets no
//! HTTP answer: its handshake fails and the connection closes.
//!
//! Graceful shutdown is axum's: it stops calling [`accept`](axum::serve::Listener::accept),
//! drops the listener (which ends the accept task, closing the socket) and waits for the
//! connections it serves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;

use super::{log_handshake_failure, ServerTls};

/// Handshakes in progress at once; connections beyond it are closed on arrival.
pub const MAX_HANDSHAKES: usize = 1024;

/// Finished handshakes waiting for axum to take them.
const READY_QUEUE: usize = 64;

type Ready = (TlsStream<TcpStream>, SocketAddr);

/// A TCP listener whose connections reach axum after their TLS handshake.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<Ready>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` with the configuration `tls` holds at each connection.
    /// Needs a tokio runtime.
    pub fn new(listener: TcpListener, tls: Arc<ServerTls>) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let accepting = tokio::spawn(accept_loop(listener, tls, tx));
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Also ends by itself once it sees the queue closed; aborting closes the socket now.
        self.accepting.abort();
    }
}

async fn accept_loop(listener: TcpListener, tls: Arc<ServerTls>, tx: mpsc::Sender<Ready>) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, peer) = tokio::select! {
            _ = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "https accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, MAX_HANDSHAKES, "https handshake limit reached; closing");
            continue;
        };
        let (tls, tx) = (tls.clone(), tx.clone());
        tokio::spawn(async move {
            let shaken = tls.accept(stream).await;
            drop(permit);
            match shaken {
                // If axum is gone (shutdown), the connection is dropped unserved.
                Ok(s) => {
                    let _ = tx.send((s, peer)).await;
                }
                Err(e) => log_handshake_failure("https", peer, &e),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept task ended: only after a panic, since it holds the sender until this
            // listener is dropped. Accept nothing more; shutdown still works.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
