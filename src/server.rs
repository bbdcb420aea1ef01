//! Wires the tasks together and owns the shutdown order: stop reading, drain the sockets, flush
//! once more, let the sinks finish (bounded by `shutdown_timeout`), exit.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::watch;

use crate::aggregate::{Aggregator, AggregatorConfig, Ingestor};
use crate::api::{self, ApiState};
use crate::config::{Config, Runtime};
use crate::flush::{next_boundary, Flusher, Renderer};
use crate::forward::client::{Forwarder, ForwarderConfig};
use crate::health::{self, HealthConfig, HealthStore, Origin};
use crate::ingest;
use crate::ingest::capture::Transport;
use crate::sinks::{SharedSinks, SinkSet};
use crate::telemetry::Telemetry;
use crate::tls::{listener::TlsListener, ServerTls};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot bind {transport} {addr}: {source}")]
    Bind {
        /// `udp`, `tcp`, `tcp_tls`, `unix` or `http`.
        transport: &'static str,
        /// The address or path.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The sinks' configuration was refused.
    #[error("sinks: {0}")]
    Sinks(String),
    /// A reader thread could not be started.
    #[error("cannot start a reader thread: {0}")]
    Thread(std::io::Error),
    /// The releaser thread ([`crate::release`]) could not be started.
    #[error("cannot start the releaser thread: {0}")]
    Releaser(std::io::Error),
}

fn bind_err(
    transport: &'static str,
    addr: impl ToString,
) -> impl FnOnce(std::io::Error) -> ServerError {
    move |source| ServerError::Bind {
        transport,
        addr: addr.to_string(),
        source,
    }
}

/// Runs meterd until `shutdown` resolves, then shuts down in order and returns.
pub async fn run(rt: Runtime, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let cfg = &rt.config;
    // Before binding anything: a SIGHUP without a handler would kill the process.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let interval = rt.interval;
    let gauge_memory_flushes = (3600 / interval.as_secs().max(1)).max(1);
    let health = Arc::new(HealthStore::new(HealthConfig {
        stale_after: cfg.health.stale_after.0,
        ttl: cfg.health.ttl.0,
        history: cfg.health.history,
        max_checks: cfg.health.max_checks,
        hostname: rt.hostname.clone(),
        forwarding: !rt.globals.is_empty(),
    }));
    // `_sc` lines land in the health store as they arrive, as well as in the next flush.
    let sc_store = health.clone();
    let aggregator = Arc::new(
        Aggregator::new(AggregatorConfig {
            shards: rt.shards,
            limits: cfg.limits(),
            gauge_deltas: cfg.gauge_deltas,
            hostname: rt.hostname.clone(),
            gauge_memory_flushes,
        })
        .with_service_check_hook(Box::new(move |check| {
            let result = health::from_service_check(check, None, &check.host);
            sc_store.record(vec![result], Origin::ServiceCheckLine);
        })),
    );
    // The SLOs' counting rules are in place before the first datagram is read.
    let slo_set = crate::slo::SloSet::new(rt.slos.clone(), cfg.slo.state_file.clone());
    aggregator.set_slo_rules(crate::flush::slo::rules_of(&slo_set));
    let slos: crate::flush::slo::SharedSlos = Arc::new(std::sync::Mutex::new(slo_set));
    aggregator.set_mapping(rt.mappings.clone());
    let telemetry = Arc::new(Telemetry::new(aggregator.stats().clone()));
    // Every reader holds the capture tap; the API subscribes to it.
    let tap = Arc::new(ingest::capture::Tap::new(telemetry.capture_dropped.clone()));
    let stop_threads = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let max_datagram = cfg.ingest.max_datagram_bytes;
    let coalesce = cfg.ingest.read_coalesce.0;

    // Bind everything first, so a bad address fails start-up before anything runs.
    let mut udp_ports = Vec::new();
    let mut datagram_sockets: Vec<(std::os::fd::OwnedFd, Transport)> = Vec::new();
    for &addr in &cfg.ingest.statsd_udp {
        let (sockets, bound, granted) =
            ingest::udp::bind(addr, rt.readers, cfg.ingest.read_buffer_bytes)
                .map_err(bind_err("udp", addr))?;
        tracing::info!(
            transport = "udp",
            addr = %bound,
            readers = sockets.len(),
            rcvbuf_requested = cfg.ingest.read_buffer_bytes,
            rcvbuf_granted = granted,
            "listening"
        );
        udp_ports.push(bound.port());
        for s in sockets {
            datagram_sockets.push((s.into(), Transport::Udp));
        }
    }
    let mut unix_paths: Vec<PathBuf> = Vec::new();
    for path in &cfg.ingest.statsd_unix {
        let origin = cfg.ingest.origin_detection;
        let s = ingest::unix::bind(path, cfg.ingest.read_buffer_bytes, origin)
            .map_err(bind_err("unix", path.display()))?;
        tracing::info!(transport = "unix", addr = %path.display(), origin_detection = origin, "listening");
        unix_paths.push(path.clone());
        datagram_sockets.push((s.into(), Transport::Unix));
    }
    let mut tcp_listeners = Vec::new();
    for &addr in &cfg.ingest.statsd_tcp {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_err("tcp", addr))?;
        let bound: SocketAddr = l.local_addr().map_err(bind_err("tcp", addr))?;
        tracing::info!(transport = "tcp", addr = %bound, "listening");
        tcp_listeners.push((l, None));
    }
    // TLS listeners share one holder, so SIGHUP swaps their certificate at once.
    let ingest_tls = match (&rt.ingest_tls, cfg.ingest.statsd_tcp_tls.is_empty()) {
        (Some(c), false) => Some(Arc::new(ServerTls::new(c.clone()))),
        _ => None,
    };
    for &addr in &cfg.ingest.statsd_tcp_tls {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(bind_err("tcp_tls", addr))?;
        let bound: SocketAddr = l.local_addr().map_err(bind_err("tcp_tls", addr))?;
        tracing::info!(transport = "tcp_tls", addr = %bound, client_certificates = !cfg.ingest.tls_client_ca.as_os_str().is_empty(), "listening");
        tcp_listeners.push((l, ingest_tls.clone()));
    }
    let http = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .map_err(bind_err("http", cfg.http.listen))?;
    let http_addr = http
        .local_addr()
        .map_err(bind_err("http", cfg.http.listen))?;
    let http_tls = rt.http_tls.clone().map(|c| Arc::new(ServerTls::new(c)));
    tracing::info!(
        transport = "http",
        addr = %http_addr,
        tls = http_tls.is_some(),
        client_certificates = !cfg.http.tls_client_ca.as_os_str().is_empty(),
        "listening"
    );

    let sinks = Arc::new(
        SinkSet::start(&cfg.sinks, interval).map_err(|e| ServerError::Sinks(e.to_string()))?,
    );

    // The releaser and the readers, started from this thread, so at its priority (the
    // runtime's own threads run lower).
    let (releaser, _releaser_thread) =
        crate::release::Releaser::start().map_err(ServerError::Releaser)?;
    let mut threads = Vec::new();
    for (i, (socket, transport)) in datagram_sockets.into_iter().enumerate() {
        let ingestor = Ingestor::new(aggregator.clone());
        let stop = stop_threads.clone();
        let tap = tap.clone();
        let origin = (transport == Transport::Unix && cfg.ingest.origin_detection)
            .then(ingest::origin::OriginCache::default);
        let t = std::thread::Builder::new()
            .name(format!("meterd-{}-{i}", transport.name()))
            .spawn(move || {
                let options = ingest::datagram::ReaderOptions {
                    max_datagram,
                    coalesce,
                    transport,
                    tap,
                };
                ingest::datagram::run_reader(socket, ingestor, options, origin, stop)
            })
            .map_err(ServerError::Thread)?;
        threads.push(t);
    }
    let mut tcp_tasks = tokio::task::JoinSet::new();
    for (l, tls) in tcp_listeners {
        tcp_tasks.spawn(ingest::tcp::serve(
            l,
            tls,
            aggregator.clone(),
            max_datagram,
            cfg.ingest.tcp_max_connections,
            cfg.ingest.tcp_idle_timeout.0,
            stop_rx.clone(),
            tap.clone(),
        ));
    }
    let forwarder = (!rt.globals.is_empty()).then(|| {
        tracing::info!(globals = ?rt.globals, "forwarding to globals");
        Forwarder::start(ForwarderConfig {
            globals: rt.globals.clone(),
            buffer_intervals: cfg.forward.buffer_intervals,
            token: rt.forward_token.clone(),
            interval,
            source: rt.hostname.to_string(),
            tls: rt.forward_tls.clone(),
        })
    });
    let shared_sinks: SharedSinks = Arc::new(RwLock::new(sinks.clone()));
    let api_state = ApiState {
        globals: forwarder
            .as_ref()
            .map(|f| f.stats().to_vec())
            .unwrap_or_default(),
        aggregator: aggregator.clone(),
        import_token: Arc::from(rt.import_token.as_str()),
        healthcheck_token: Arc::from(rt.healthcheck_token.as_str()),
        max_import_bytes: cfg.http.max_body_bytes.saturating_mul(16),
        ledger: Arc::new(crate::forward::ledger::ImportLedger::default()),
        telemetry: telemetry.clone(),
        sinks: shared_sinks.clone(),
        health: health.clone(),
        interval_s: interval.as_secs(),
        tap: tap.clone(),
        slos: slos.clone(),
    };
    let app = api::router(api_state, cfg.http.max_body_bytes);
    let api_task = match &http_tls {
        Some(tls) => {
            let listener =
                TlsListener::new(http, tls.clone()).map_err(bind_err("http", http_addr))?;
            tokio::spawn(serve_api(listener, app, stop_rx.clone()))
        }
        None => tokio::spawn(serve_api(http, app, stop_rx.clone())),
    };

    tracing::info!(
        interval_s = interval.as_secs(),
        shards = aggregator.shard_count(),
        hostname = %rt.hostname,
        sinks = sinks.stats().len(),
        "meterd started"
    );

    // Flush loop.
    let mut flusher = Flusher::new(
        aggregator.clone(),
        Renderer::new(rt.render_settings()),
        sinks.clone(),
        udp_ports,
        health,
        forwarder,
        telemetry.clone(),
    )
    .with_releaser(releaser)
    .with_slos(slos);
    tokio::pin!(shutdown);
    let mut running = rt.clone();
    let mut retired: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    loop {
        let (wait, boundary) = next_boundary(interval);
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(wait) => flusher.flush(boundary).await,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                let tls = TlsHolders { http: http_tls.as_ref(), ingest: ingest_tls.as_ref() };
                if let Some(next) = reload(&running, &mut flusher, &aggregator, &shared_sinks, &mut retired, tls) {
                    running = next;
                }
            }
        }
    }

    // Shutdown: stop reading, drain, final flush, sinks.
    tracing::info!("stopping readers and draining sockets");
    stop_threads.store(true, Ordering::Release);
    let _ = stop_tx.send(true);
    let joined = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
    if joined.is_err() {
        tracing::error!("a reader thread panicked");
    }
    while tcp_tasks.join_next().await.is_some() {}
    // A running capture ends with what the readers drained (its trailer says "shutdown").
    tap.close();
    // The final flush ends the interval in progress now. Stamp it now, but always later than
    // the last regular flush: two flushes of one series at one timestamp would overwrite each
    // other at the backend. (Not the interval's end: that may be far in the future, which
    // Datadog refuses beyond 10 minutes.)
    let now = i64::try_from(crate::point::unix_now().as_secs()).unwrap_or(i64::MAX);
    let last = i64::try_from(telemetry.last_flush_unix.load(Ordering::Relaxed)).unwrap_or(0);
    flusher.flush(now.max(last + 1)).await;
    tracing::info!("final flush submitted; waiting for sinks");
    if let Some(f) = flusher.forwarder.take() {
        f.shutdown(cfg.shutdown_timeout.0).await;
    }
    let flusher_sinks = flusher.sinks.clone();
    drop(flusher);
    let _ = api_task.await;
    for p in unix_paths {
        let _ = std::fs::remove_file(p);
    }
    for t in retired {
        let _ = t.await;
    }
    drop(sinks);
    drop(shared_sinks);
    let sinks = flusher_sinks;
    match Arc::try_unwrap(sinks) {
        Ok(s) => s.shutdown(cfg.shutdown_timeout.0).await,
        Err(_) => tracing::warn!("sinks still referenced at shutdown; not waiting for them"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Serves the API on `listener` until the shutdown watch changes; requests in flight finish.
async fn serve_api<L>(listener: L, app: axum::Router, mut stop: watch::Receiver<bool>)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let served = axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "http api failed");
    }
}

/// The TLS configurations running listeners read; SIGHUP replaces what they hold.
#[derive(Clone, Copy)]
struct TlsHolders<'a> {
    http: Option<&'a Arc<ServerTls>>,
    ingest: Option<&'a Arc<ServerTls>>,
}

/// SIGHUP: re-reads the config file. Renderer settings (tags, percentiles, aggregates), limits
/// and sinks change from the next flush on; aggregated state and sockets are untouched. An
/// invalid file is refused with a logged reason and the running config stays. Settings that
/// need new sockets or threads are reported as needing a restart. TLS certificates, keys and
/// CAs (re-read by validation, which refuses bad files) serve new connections from now on, and
/// the forward client is rebuilt with them; turning a listener's TLS on or off needs a restart.
/// Returns the new runtime config when it was applied.
fn reload(
    running: &Runtime,
    flusher: &mut Flusher,
    aggregator: &Arc<Aggregator>,
    shared: &SharedSinks,
    retired: &mut Vec<tokio::task::JoinHandle<()>>,
    tls: TlsHolders<'_>,
) -> Option<Runtime> {
    let Some(path) = running.source.clone() else {
        tracing::warn!("SIGHUP: meterd runs on embedded defaults (no --config); nothing to reload");
        return None;
    };
    let next = match Config::from_file(&path).and_then(|c| {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        c.validate(&text)
    }) {
        Ok(mut rt) => {
            rt.source = Some(path.clone());
            rt
        }
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "SIGHUP: config refused; keeping the running config");
            return None;
        }
    };
    let (old, new) = (&running.config, &next.config);
    let mut restart = Vec::new();
    if differs(
        &old.ingest.without_tls_paths(),
        &new.ingest.without_tls_paths(),
    ) {
        restart.push("ingest");
    }
    if differs(&old.http.without_tls_paths(), &new.http.without_tls_paths()) {
        restart.push("http");
    }
    // The API's TLS on or off is a different listener.
    let http_tls_swaps = running.http_tls.is_some() == next.http_tls.is_some();
    if !http_tls_swaps {
        restart.push("http.tls_cert");
    }
    if differs(
        &old.forward.without_tls_paths(),
        &new.forward.without_tls_paths(),
    ) {
        restart.push("forward");
    }
    if differs(&old.health, &new.health) {
        restart.push("health");
    }
    if running.interval != next.interval {
        restart.push("interval");
    }
    if running.hostname != next.hostname {
        restart.push("hostname");
    }
    if old.gauge_deltas != new.gauge_deltas {
        restart.push("gauge_deltas");
    }
    if !restart.is_empty() {
        tracing::warn!(keys = ?restart, "SIGHUP: these settings change only on restart; keeping their running values");
    }
    let new_sinks = differs(&old.sinks, &new.sinks);
    if new_sinks {
        match SinkSet::start(&new.sinks, running.interval) {
            Ok(set) => {
                let set = Arc::new(set);
                let previous = std::mem::replace(&mut flusher.sinks, set.clone());
                *shared.write().unwrap_or_else(PoisonError::into_inner) = set;
                let timeout = running.config.shutdown_timeout.0;
                retired.retain(|t| !t.is_finished());
                retired.push(tokio::spawn(async move {
                    // The retired set finishes what it holds (the API may still hold a clone
                    // for a moment; then it is dropped without waiting).
                    let mut previous = previous;
                    for _ in 0..50 {
                        match Arc::try_unwrap(previous) {
                            Ok(s) => return s.shutdown(timeout).await,
                            Err(p) => previous = p,
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                }));
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: sinks refused; keeping the running config");
                return None;
            }
        }
    }
    aggregator.set_limits(&new.limits());
    // SLOs: an unchanged one keeps its history, a changed one restarts it.
    flusher
        .slos()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .reconfigure(next.slos.clone(), new.slo.state_file.clone());
    flusher.refresh_slo_rules();
    aggregator.set_mapping(next.mappings.clone());
    // Keep what needs a restart at its running value, take the rest.
    let mut applied = next.clone();
    applied.interval = running.interval;
    applied.hostname = running.hostname.clone();
    // TLS: the files validation just read serve new connections (TLS listeners that stay TLS
    // listeners); the forward client is rebuilt with them.
    let ingest_tls_swaps = match (tls.ingest, &next.ingest_tls) {
        (Some(holder), Some(config)) => {
            holder.replace(config.clone());
            true
        }
        _ => false,
    };
    let mut tls_reloaded = Vec::new();
    if ingest_tls_swaps {
        tls_reloaded.push("ingest");
    }
    if let (Some(holder), Some(config), true) = (tls.http, &next.http_tls, http_tls_swaps) {
        holder.replace(config.clone());
        tls_reloaded.push("http");
    }
    if let Some(f) = &flusher.forwarder {
        f.reload_client(next.forward_tls.as_ref());
        tls_reloaded.push("forward");
    }
    applied.config.ingest = if ingest_tls_swaps {
        old.ingest.with_tls_paths_of(&new.ingest)
    } else {
        applied.ingest_tls = running.ingest_tls.clone();
        old.ingest.clone()
    };
    applied.config.http = if http_tls_swaps {
        old.http.with_tls_paths_of(&new.http)
    } else {
        applied.http_tls = running.http_tls.clone();
        old.http.clone()
    };
    applied.config.forward = old.forward.with_tls_paths_of(&new.forward);
    applied.config.health = old.health.clone();
    applied.config.gauge_deltas = old.gauge_deltas;
    flusher.renderer = Renderer::new(applied.render_settings());
    tracing::info!(
        file = %path.display(),
        sinks_restarted = new_sinks,
        tls_reloaded = ?tls_reloaded,
        "SIGHUP: config reloaded; applies from the next flush"
    );
    Some(applied)
}

/// Whether two config sections differ, compared as their TOML (sinks hold secrets and have no
/// `PartialEq` on every field; TOML is what the user wrote anyway).
fn differs<T: serde::Serialize>(a: &T, b: &T) -> bool {
    let text = |v: &T| {
        // A bare array (sinks) is not a TOML document; wrap it.
        toml::to_string(&std::collections::BTreeMap::from([("v", v)])).unwrap_or_default()
    };
    text(a) != text(b)
}
