//! The `prometheus` sink: a scrape endpoint on its own `listen` address serving the last flush
//! at `GET /metrics` in the text exposition format 0.0.4.
//!
//! Each flush is folded into the sink's [`Cumulative`] state
//! (`docs/sinks.md#prometheus-conventions`: counters cumulative as `NAME_total` with TYPE
//! `counter`, gauges as gauges, sanitised names, tags as labels plus `host`), rendered once on the
//! blocking pool, and published: a scrape only clones the rendered bytes, so scrapes never wait for
//! a flush and cost nothing however often they come. A series no flush updated for `expire_after`
//! leaves the exposition. Samples carry no timestamp: Prometheus stamps them with the scrape's
//! time, as with any exporter. Delivery cannot fail; service checks and events are not exposed.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::config::{default_expire_after, parse_expire_after, SinkCommon};
use super::idempotency::BatchId;
use super::prom_series::{Cumulative, Family};
use super::{write_number, Sink, SinkConfigError, SinkError};
use crate::point::{unix_secs, FlushBatch, PointKind};

/// Default `listen` address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9102";

/// The exposition's content type.
const CONTENT_TYPE_0_0_4: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `[[sinks]] type = "prometheus"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrometheusConfig {
    /// The keys every sink takes (`name`, `timeout`, `max_retries`, the filter's).
    #[serde(skip)]
    pub common: SinkCommon,
    /// Where to serve `GET /metrics` (default `127.0.0.1:9102`; port 0 picks a free one, logged
    /// as `listening transport="prometheus"`).
    pub listen: String,
    /// A series no flush updated for this long leaves the exposition (default `"5m"`).
    pub expire_after: String,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            common: SinkCommon::default(),
            listen: DEFAULT_LISTEN.to_owned(),
            expire_after: default_expire_after(),
        }
    }
}

/// The validated settings.
pub(super) struct ScrapeSettings {
    listen: SocketAddr,
    expire_after: Duration,
}

pub(super) fn validate(
    config: &PrometheusConfig,
    key: &impl Fn(&str) -> String,
) -> Result<ScrapeSettings, SinkConfigError> {
    let listen = config.listen.parse().map_err(|_| {
        SinkConfigError::new(
            key("listen"),
            format!("{:?} is not an IP:port address", config.listen),
        )
    })?;
    Ok(ScrapeSettings {
        listen,
        expire_after: parse_expire_after(&config.expire_after, key)?,
    })
}

/// `s` with `\` and newlines escaped, and `"` too when `quote` (label values); HELP text escapes
/// only the first two.
fn escape_into(out: &mut Vec<u8>, s: &str, quote: bool) {
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if quote => out.extend_from_slice(b"\\\""),
            _ => out.push(b),
        }
    }
}

/// Renders one family: HELP, TYPE, then a line per series.
fn render_family(out: &mut Vec<u8>, name: &str, family: &Family) {
    let kind = match family.kind {
        PointKind::Counter => "counter",
        PointKind::Gauge => "gauge",
    };
    let _ = write!(out, "# HELP {name} meterd {kind} ");
    escape_into(out, &family.help, false);
    let _ = writeln!(out, "\n# TYPE {name} {kind}");
    for (labels, series) in &family.series {
        out.extend_from_slice(name.as_bytes());
        for (i, (k, v)) in labels.iter().enumerate() {
            out.push(if i == 0 { b'{' } else { b',' });
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"=\"");
            escape_into(out, v, true);
            out.push(b'"');
        }
        if !labels.is_empty() {
            out.push(b'}');
        }
        out.push(b' ');
        write_number(out, series.value);
        out.push(b'\n');
    }
}

/// Renders every family, sorted by name.
fn render(out: &mut Vec<u8>, state: &Cumulative) {
    out.clear();
    for (name, family) in state.families() {
        render_family(out, name, family);
    }
}

/// A non-blocking listener on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`.
fn bind_reusable(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The rendered exposition, shared with the HTTP handler.
type Published = Arc<Mutex<Bytes>>;

/// Aborts the HTTP server when the sink goes away (its task ended).
struct ServerGuard(JoinHandle<()>);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve_metrics(State(published): State<Published>) -> impl IntoResponse {
    let body = published
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    ([(CONTENT_TYPE, CONTENT_TYPE_0_0_4)], body)
}

/// Keeps the cumulative state and publishes each flush's exposition.
pub(super) struct ScrapeSink {
    state: Cumulative,
    published: Published,
    /// Rendered by `encode`, published by `send`.
    pending: Option<Bytes>,
    /// Capacity of the last rendering, to size the next.
    last_len: usize,
    items: u64,
    delivered: u64,
    _server: ServerGuard,
}

impl ScrapeSink {
    /// Binds `listen` and starts serving `/metrics` (empty until the first flush).
    ///
    /// The socket is bound with `SO_REUSEPORT`: when SIGHUP replaces the sinks, the new set's
    /// endpoint binds the same address while the retired one finishes; until it has, a scrape
    /// may still get the retired sink's last flush. (Two sinks of one config on one address
    /// are refused at validation.)
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub(super) fn start(settings: ScrapeSettings, sink: &str) -> std::io::Result<Self> {
        let listener = bind_reusable(settings.listen)?;
        let bound = listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tracing::info!(transport = "prometheus", addr = %bound, sink, "listening");
        let published: Published = Arc::new(Mutex::new(Bytes::new()));
        let app = axum::Router::new()
            .route("/metrics", axum::routing::get(serve_metrics))
            .with_state(Arc::clone(&published));
        let sink = sink.to_owned();
        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::error!(sink, error = %err, "prometheus scrape endpoint failed");
            }
        });
        Ok(ScrapeSink {
            state: Cumulative::new(settings.expire_after.as_secs()),
            published,
            pending: None,
            last_len: 0,
            items: 0,
            delivered: 0,
            _server: ServerGuard(server),
        })
    }
}

impl Sink for ScrapeSink {
    const METRICS_ONLY: bool = true;

    fn encode(&mut self, batch: &FlushBatch, _id: BatchId) -> Result<(), SinkError> {
        let stats = self.state.update(&batch.metrics, unix_secs());
        if stats.conflicts > 0 {
            tracing::debug!(
                points = stats.conflicts,
                "points skipped: their name is already a metric of the other kind"
            );
        }
        let mut out = Vec::with_capacity(self.last_len + self.last_len / 8);
        render(&mut out, &self.state);
        self.last_len = out.len();
        self.pending = Some(Bytes::from(out));
        self.items = batch.metrics.len() as u64 - stats.conflicts;
        self.delivered = 0;
        Ok(())
    }

    async fn send(&mut self) -> Result<(), SinkError> {
        if let Some(text) = self.pending.take() {
            *self
                .published
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = text;
            self.delivered = self.items;
        }
        Ok(())
    }

    fn delivered(&self) -> u64 {
        self.delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::point::Point;
    use crate::sinks::testing::{sample_batch, wait_for};
    use crate::sinks::{SinkConfig, SinkSet};
    use std::sync::atomic::Ordering;

    fn text(state: &Cumulative) -> String {
        let mut out = Vec::new();
        render(&mut out, state);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn exposition_of_the_sample_batch() {
        let mut state = Cumulative::new(300);
        state.update(&sample_batch().metrics, 1_763_775_000);
        state.update(&sample_batch().metrics, 1_763_775_010);
        assert_eq!(
            text(&state),
            "# HELP api_latency_99percentile meterd gauge api.latency.99percentile\n\
             # TYPE api_latency_99percentile gauge\n\
             api_latency_99percentile{env=\"prod\",host=\"web-1\",route=\"/x\"} 12.5\n\
             # HELP api_requests_total meterd counter api.requests\n\
             # TYPE api_requests_total counter\n\
             api_requests_total{env=\"prod\",host=\"web-1\",route=\"/x\"} 50\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut state = Cumulative::new(300);
        let point = Point {
            name: "odd\\name".into(),
            kind: PointKind::Gauge,
            value: 0.5,
            tags: vec![
                "path:C:\\dir".to_owned(),
                "q:say \"hi\"".to_owned(),
                "nl:a\nb".to_owned(),
            ]
            .into(),
            host: "".into(),
            timestamp: 1000,
            interval: 10,
        };
        state.update(&[point], 1000);
        assert_eq!(
            text(&state),
            "# HELP odd_name meterd gauge odd\\\\name\n\
             # TYPE odd_name gauge\n\
             odd_name{nl=\"a\\nb\",path=\"C:\\\\dir\",q=\"say \\\"hi\\\"\"} 0.5\n"
        );
    }

    #[test]
    fn several_series_share_one_help_and_type() {
        let mut state = Cumulative::new(300);
        let mut batch = sample_batch();
        let mut other = batch.metrics[1].clone();
        other.tags = vec!["env:dev".to_owned()].into();
        other.host = "".into();
        batch.metrics.push(other);
        state.update(&batch.metrics, 1000);
        let text = text(&state);
        assert_eq!(text.matches("# TYPE api_requests_total counter").count(), 1);
        assert_eq!(text.matches("# HELP api_requests_total").count(), 1);
        assert!(
            text.contains("api_requests_total{env=\"dev\"} 25\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn publishes_on_send() {
        let config = PrometheusConfig {
            listen: "127.0.0.1:0".into(),
            ..PrometheusConfig::default()
        };
        let settings = validate(&config, &|k: &str| k.to_owned()).expect("valid");
        let mut sink = ScrapeSink::start(settings, "prometheus").expect("binds");
        let shared = Arc::clone(&sink.published);
        let published = || {
            shared
                .lock()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .expect("lock")
        };
        assert_eq!(published(), "", "empty before the first flush");
        sink.encode(&sample_batch(), BatchId::default())
            .expect("encodes");
        assert_eq!(published(), "", "encode does not publish");
        assert_eq!(sink.delivered(), 0);
        sink.send().await.expect("publishes");
        assert_eq!(sink.delivered(), 2);
        let response = serve_metrics(State(Arc::clone(&sink.published)))
            .await
            .into_response();
        assert_eq!(response.headers()[CONTENT_TYPE], CONTENT_TYPE_0_0_4);
        assert!(published().contains("# TYPE api_requests_total counter\n"));
    }

    #[tokio::test]
    async fn runs_in_a_sink_set_over_http() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let config = PrometheusConfig {
            listen: addr.to_string(),
            ..PrometheusConfig::default()
        };
        let set = SinkSet::start(&[SinkConfig::Prometheus(config)], Duration::from_secs(2))
            .expect("starts");
        let (name, stats) = set.stats().remove(0);
        assert_eq!(name, "prometheus");
        set.submit(Arc::new(sample_batch()));
        wait_for(Duration::from_secs(3), "publish", || {
            stats.sent.load(Ordering::Relaxed) == 2
        })
        .await;
        let body = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("scrape");
        assert_eq!(
            body.headers()[CONTENT_TYPE.as_str()],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = body.text().await.expect("text");
        assert!(
            text.contains("api_requests_total{env=\"prod\",host=\"web-1\",route=\"/x\"} 25\n"),
            "{text}"
        );
        let missing = reqwest::get(format!("http://{addr}/other"))
            .await
            .expect("get");
        assert_eq!(missing.status(), 404);
        set.shutdown(Duration::from_secs(1)).await;
        // The endpoint stops with the sink.
        wait_for(Duration::from_secs(2), "endpoint closed", || {
            std::net::TcpStream::connect(addr).is_err()
        })
        .await;
    }

    #[tokio::test]
    async fn a_replacement_binds_the_same_address() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = free.local_addr().expect("addr");
        drop(free);
        let config = PrometheusConfig {
            listen: addr.to_string(),
            ..PrometheusConfig::default()
        };
        let settings = || validate(&config, &|k: &str| k.to_owned()).expect("valid");
        let old = ScrapeSink::start(settings(), "prometheus").expect("binds");
        let new = ScrapeSink::start(settings(), "prometheus").expect("binds the same address");
        drop(old);
        let mut new = new;
        new.encode(&sample_batch(), BatchId::default())
            .expect("encodes");
        new.send().await.expect("publishes");
        // Once the old endpoint is gone (its task is aborted asynchronously; a connection it
        // had queued is reset), scrapes reach the new one.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let scraped = match reqwest::get(format!("http://{addr}/metrics")).await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if scraped.contains("api_requests_total") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never served: {scraped:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn two_scrape_sinks_on_one_address_are_refused() {
        let text = "[[sinks]]\ntype = \"prometheus\"\n\
                    [[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:9102\"\n\
                    [[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\n\
                    [[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\n";
        #[derive(Deserialize)]
        struct File {
            sinks: Vec<SinkConfig>,
        }
        let configs = toml::from_str::<File>(text).expect("parses").sinks;
        let err = SinkSet::validate(&configs, Duration::from_secs(10)).expect_err("same address");
        assert_eq!(err.key, "sinks[1].listen");
        assert!(SinkSet::validate(&configs[1..], Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn bad_listen_names_the_key() {
        let config = PrometheusConfig {
            listen: "localhost".into(),
            ..PrometheusConfig::default()
        };
        let err = validate(&config, &|k: &str| format!("sinks[3].{k}"))
            .err()
            .expect("bad address");
        assert_eq!(err.key, "sinks[3].listen");
    }
}
