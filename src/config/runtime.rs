//! [`Runtime`]: the configuration as the server runs on it, what
//! [`Config::validate`](super::Config::validate) makes of a parsed file (resolved hostname,
//! tokens and counts, sorted tags).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Config;
use crate::flush::RenderSettings;

/// The validated configuration the server runs on.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The file as parsed.
    pub config: Config,
    /// Resolved hostname.
    pub hostname: Arc<str>,
    /// Flush interval.
    pub interval: Duration,
    /// Sorted, de-duplicated global tags.
    pub tags: Vec<String>,
    /// UDP readers per address.
    pub readers: usize,
    /// Shards (power of two).
    pub shards: usize,
    /// Global base URLs without a trailing slash; empty = standalone.
    pub globals: Vec<String>,
    /// Resolved `[forward] token` (empty = none).
    pub forward_token: String,
    /// Resolved `[http] import_token` (empty = none).
    pub import_token: String,
    /// Resolved `[http] healthcheck_token` (empty = none).
    pub healthcheck_token: String,
    /// `[http]` TLS, its files read at validation; `None` = plain HTTP.
    pub http_tls: Option<Arc<rustls::ServerConfig>>,
    /// `[ingest]` TLS for `statsd_tcp_tls`, its files read at validation; `None` = unset.
    pub ingest_tls: Option<Arc<rustls::ServerConfig>>,
    /// `[forward]` TLS for `https://` globals; `None` = reqwest's defaults (webpki roots, no
    /// client certificate).
    pub forward_tls: Option<Arc<rustls::ClientConfig>>,
    /// Validated `[[slos]]`.
    pub slos: Vec<crate::slo::SloSpec>,
    /// The compiled `[[mappings]]` rules; `None` when there are none.
    pub mappings: Option<Arc<crate::mapping::Rules>>,
    /// The file this came from (SIGHUP re-reads it); `None` on embedded defaults.
    pub source: Option<PathBuf>,
}

impl Runtime {
    /// What the flush's renderer takes from the config.
    pub fn render_settings(&self) -> RenderSettings {
        RenderSettings {
            hostname: self.hostname.clone(),
            tags: self.tags.clone(),
            aggregates: self.config.aggregates.clone(),
            percentiles: self.config.percentiles.iter().map(|p| p.0).collect(),
            interval: self.interval,
            forwarding: !self.config.forward.addresses.is_empty(),
        }
    }
}
