//! Signal handling: [`install`] registers SIGTERM and SIGINT handlers at once and returns the
//! future that resolves on the first of them, which the binary passes to [`crate::run`].
//!
//! Registering before anything is bound matters: a signal that arrives between start-up and the
//! first poll of a lazily registered handler would kill the process with nothing flushed.

use std::future::Future;

/// Installs the handlers now (inside a tokio runtime) and returns the shutdown future.
pub fn install() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
                    _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
                }
            }
            _ => {
                tracing::warn!("cannot install signal handlers; falling back to ctrl-c");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
