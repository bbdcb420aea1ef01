//! Configuration: TOML → serde structs with validating field types → [`Config::validate`].
//!
//! Every key is optional; the defaults are the text of `config.example.toml`, which is embedded
//! as [`DEFAULT_CONFIG`] and printed by `meterd default-config`. Unknown keys are errors. Field
//! types that can be wrong on their own (durations, percentiles, addresses) validate while
//! deserialising, so `toml` reports the line; cross-field checks in [`Config::validate`] name
//! the key and find its line in the source.
//!
//! This file holds the file's shape: the serde structs with their defaults, parsing, and
//! [`DEFAULT_CONFIG`]. `validate.rs` checks a parsed file across fields and finds the line of a
//! key for error messages; `runtime.rs` holds [`Runtime`], what validation produces and the
//! server runs on.

mod runtime;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

pub use runtime::Runtime;

use crate::aggregate::GaugeDeltas;
pub use crate::flush::naming::Aggregate;
use crate::sinks::{Secret, SinkConfig};
use crate::slo::{SloConfig, SloSection};
use crate::units::Dur;
use validate::describe_toml_error;

/// The commented default configuration (`config.example.toml`).
pub const DEFAULT_CONFIG: &str = include_str!("../../config.example.toml");

/// A configuration error; the message names the key and, where known, the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax or a value of the wrong shape.
    #[error("{0}")]
    Parse(String),
    /// A value that parsed but is not acceptable.
    #[error("{key}{line}: {message}")]
    Invalid {
        /// Dotted key, e.g. `ingest.readers`.
        key: String,
        /// ` (line N)` or empty.
        line: String,
        /// What is wrong.
        message: String,
    },
}

/// A percentile in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentile(pub f64);

impl<'de> Deserialize<'de> for Percentile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p = f64::deserialize(d)?;
        if p > 0.0 && p <= 1.0 {
            Ok(Percentile(p))
        } else {
            Err(serde::de::Error::custom(format!(
                "percentile {p} must be in (0, 1], e.g. 0.99"
            )))
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `host` of every point; empty means the machine's hostname.
    pub hostname: String,
    /// Flush interval, whole seconds, at least 1 s.
    pub interval: Dur,
    /// Tags added to every series.
    pub tags: Vec<String>,
    /// Percentiles emitted for timers, histograms and distributions.
    pub percentiles: Vec<Percentile>,
    /// Other histogram aggregates.
    pub aggregates: Vec<Aggregate>,
    /// `-N` gauge semantics.
    pub gauge_deltas: GaugeDeltas,
    /// Distinct series per interval; beyond it new series are refused and counted.
    pub max_series: usize,
    /// Distinct series of one metric name per interval; 0 = no limit.
    pub max_series_per_metric: usize,
    /// Events plus service checks per interval; beyond it they are refused and counted.
    pub max_events: usize,
    /// Longest metric name (bytes).
    pub max_name_length: usize,
    /// Most tags on one line.
    pub max_tags_per_line: usize,
    /// Longest tag (bytes).
    pub max_tag_length: usize,
    /// How long the final flush at shutdown may wait for sinks.
    pub shutdown_timeout: Dur,
    /// Listeners.
    pub ingest: IngestConfig,
    /// The HTTP API.
    pub http: HttpConfig,
    /// Local → global forwarding.
    pub forward: ForwardSection,
    /// The health-check store.
    pub health: HealthSection,
    /// Where flushes go.
    pub sinks: Vec<SinkConfig>,
    /// Service level objectives (`docs/slo.md`).
    pub slos: Vec<SloConfig>,
    /// Settings shared by every SLO.
    pub slo: SloSection,
    /// `[[mappings]]` rules, in order (checked and compiled by validation, which names the
    /// rule of an error).
    pub mappings: Vec<toml::Table>,
}

/// `[ingest]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// UDP listen addresses.
    pub statsd_udp: Vec<SocketAddr>,
    /// TCP listen addresses (newline-delimited).
    pub statsd_tcp: Vec<SocketAddr>,
    /// TCP listen addresses speaking TLS only (the same newline protocol); needs `tls_cert`
    /// and `tls_key`.
    pub statsd_tcp_tls: Vec<SocketAddr>,
    /// PEM certificate chain of the `statsd_tcp_tls` listeners (leaf first).
    pub tls_cert: PathBuf,
    /// PEM private key of `tls_cert`.
    pub tls_key: PathBuf,
    /// PEM CA certificates; when set, `statsd_tcp_tls` clients must present a certificate
    /// issued by one of them. Empty = no client certificates asked for.
    pub tls_client_ca: PathBuf,
    /// Unix datagram socket paths.
    pub statsd_unix: Vec<PathBuf>,
    /// UDP sockets (reader threads) per address; 0 = one per core.
    pub readers: usize,
    /// Requested socket receive buffer.
    pub read_buffer_bytes: usize,
    /// Largest datagram (and TCP line) accepted.
    pub max_datagram_bytes: usize,
    /// Aggregation shards; 0 = 4 × cores. Rounded up to a power of two.
    pub shards: usize,
    /// Concurrent TCP connections; more are refused.
    pub tcp_max_connections: usize,
    /// A TCP connection silent this long is closed.
    pub tcp_idle_timeout: Dur,
    /// Longest nap of a datagram reader after a receive that emptied its socket (0 = none).
    pub read_coalesce: Dur,
    /// Tag metrics from `statsd_unix` sockets `container_id:ID`, with the id read from the
    /// sender's cgroup (through its pid, passed with each datagram).
    pub origin_detection: bool,
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// API listen address.
    pub listen: SocketAddr,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// When set, `POST /import` requires `Authorization: Bearer TOKEN`.
    pub import_token: Secret,
    /// When set, `POST /api/v1/healthchecks` requires `Authorization: Bearer TOKEN`.
    pub healthcheck_token: Secret,
    /// PEM certificate chain (leaf first); with `tls_key`, the API speaks HTTPS only.
    /// Empty = plain HTTP.
    pub tls_cert: PathBuf,
    /// PEM private key of `tls_cert`.
    pub tls_key: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate issued by one of
    /// them. Empty = no client certificates asked for.
    pub tls_client_ca: PathBuf,
}

/// `[forward]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardSection {
    /// Global instances' base URLs (`http://host:8127`); meterd appends `/import`. Empty means
    /// standalone.
    pub addresses: Vec<String>,
    /// Undelivered intervals kept per global while it is unreachable; older ones are dropped
    /// and counted in `meterd.forward.dropped`.
    pub buffer_intervals: usize,
    /// Bearer token sent with each import (the globals' `[http] import_token`).
    pub token: Secret,
    /// PEM CA certificates trusted for `https://` globals, beside the webpki roots.
    pub tls_ca: PathBuf,
    /// PEM client certificate chain presented to globals (with `tls_key`); for globals
    /// that set `[http] tls_client_ca`.
    pub tls_cert: PathBuf,
    /// PEM private key of `tls_cert`.
    pub tls_key: PathBuf,
}

impl Default for ForwardSection {
    fn default() -> Self {
        ForwardSection {
            addresses: Vec::new(),
            buffer_intervals: 3,
            token: Secret::default(),
            tls_ca: PathBuf::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
        }
    }
}

/// `[health]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSection {
    /// Silence after which a check that sends no `interval` turns UNKNOWN.
    pub stale_after: Dur,
    /// Silence after which a check that sends no `ttl` leaves the store.
    pub ttl: Dur,
    /// Previous results kept per check.
    pub history: usize,
    /// Distinct (check id, service id) pairs kept; new ones beyond it are refused and counted.
    pub max_checks: usize,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            stale_after: Dur(Duration::from_secs(30)),
            ttl: Dur(Duration::from_secs(3600)),
            history: 10,
            max_checks: 100_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: String::new(),
            interval: Dur(Duration::from_secs(10)),
            tags: Vec::new(),
            percentiles: vec![Percentile(0.5), Percentile(0.75), Percentile(0.99)],
            aggregates: vec![Aggregate::Min, Aggregate::Max, Aggregate::Count],
            gauge_deltas: GaugeDeltas::Dogstatsd,
            max_series: 1_000_000,
            max_series_per_metric: 0,
            max_events: 10_000,
            max_name_length: 512,
            max_tags_per_line: 64,
            max_tag_length: 512,
            shutdown_timeout: Dur(Duration::from_secs(10)),
            ingest: IngestConfig::default(),
            http: HttpConfig::default(),
            forward: ForwardSection::default(),
            health: HealthSection::default(),
            sinks: vec![SinkConfig::default()],
            slos: Vec::new(),
            slo: SloSection::default(),
            mappings: Vec::new(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            statsd_udp: vec![SocketAddr::from(([127, 0, 0, 1], 8125))],
            statsd_tcp: Vec::new(),
            statsd_tcp_tls: Vec::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            tls_client_ca: PathBuf::new(),
            statsd_unix: Vec::new(),
            readers: 0,
            read_buffer_bytes: 8 * 1024 * 1024,
            max_datagram_bytes: 8192,
            shards: 0,
            tcp_max_connections: 1024,
            tcp_idle_timeout: Dur(Duration::from_secs(300)),
            read_coalesce: Dur(Duration::from_millis(5)),
            origin_detection: false,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8127)),
            max_body_bytes: 10 * 1024 * 1024,
            import_token: Secret::default(),
            healthcheck_token: Secret::default(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            tls_client_ca: PathBuf::new(),
        }
    }
}

impl IngestConfig {
    /// This section with its TLS file paths cleared: what SIGHUP compares to decide on a
    /// restart (the files, and their paths, reload in place).
    pub fn without_tls_paths(&self) -> IngestConfig {
        self.with_tls_paths_of(&IngestConfig::default())
    }

    /// This section with `other`'s TLS file paths.
    pub fn with_tls_paths_of(&self, other: &IngestConfig) -> IngestConfig {
        IngestConfig {
            tls_cert: other.tls_cert.clone(),
            tls_key: other.tls_key.clone(),
            tls_client_ca: other.tls_client_ca.clone(),
            ..self.clone()
        }
    }
}

impl HttpConfig {
    /// This section with its TLS file paths cleared: what SIGHUP compares to decide on a
    /// restart (the files, and their paths, reload in place).
    pub fn without_tls_paths(&self) -> HttpConfig {
        self.with_tls_paths_of(&HttpConfig::default())
    }

    /// This section with `other`'s TLS file paths.
    pub fn with_tls_paths_of(&self, other: &HttpConfig) -> HttpConfig {
        HttpConfig {
            tls_cert: other.tls_cert.clone(),
            tls_key: other.tls_key.clone(),
            tls_client_ca: other.tls_client_ca.clone(),
            ..self.clone()
        }
    }
}

impl ForwardSection {
    /// This section with its TLS file paths cleared: what SIGHUP compares to decide on a
    /// restart (the forward client is rebuilt with the files on every SIGHUP).
    pub fn without_tls_paths(&self) -> ForwardSection {
        self.with_tls_paths_of(&ForwardSection::default())
    }

    /// This section with `other`'s TLS file paths.
    pub fn with_tls_paths_of(&self, other: &ForwardSection) -> ForwardSection {
        ForwardSection {
            tls_ca: other.tls_ca.clone(),
            tls_cert: other.tls_cert.clone(),
            tls_key: other.tls_key.clone(),
            ..self.clone()
        }
    }
}

impl Config {
    /// Parses TOML text; errors carry the line and name the key.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(describe_toml_error(text, &e)))
    }

    /// Reads and parses a file.
    pub fn from_file(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse(m) => ConfigError::Parse(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The input limits, as the aggregator takes them.
    pub fn limits(&self) -> crate::aggregate::Limits {
        crate::aggregate::Limits {
            max_series: self.max_series,
            max_series_per_metric: self.max_series_per_metric,
            max_events: self.max_events,
            max_name_length: self.max_name_length,
            max_tags_per_line: self.max_tags_per_line,
            max_tag_length: self.max_tag_length,
        }
    }

    /// The effective configuration as TOML; secrets print as their `${ENV}` reference or `***`.
    pub fn to_effective_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_the_default() {
        let parsed = Config::from_toml(DEFAULT_CONFIG).expect("example parses");
        let default = Config::default();
        assert_eq!(
            toml::to_string(&parsed).unwrap(),
            toml::to_string(&default).unwrap()
        );
        assert_eq!(parsed.sinks.len(), 1);
        parsed.validate(DEFAULT_CONFIG).expect("example validates");
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::from_toml("").unwrap();
        let rt = c.validate("").unwrap();
        assert_eq!(rt.interval, Duration::from_secs(10));
        assert!(rt.shards.is_power_of_two());
        assert!(!rt.hostname.is_empty());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = Config::from_toml("interval = \"10s\"\n\n[ingest]\nreaderz = 2\n").unwrap_err();
        let m = err.to_string();
        assert!(m.contains("readerz"), "{m}");
        assert!(m.contains("line 4"), "{m}");
    }

    #[test]
    fn bad_duration_names_key_and_line() {
        let m = Config::from_toml("\ninterval = \"10x\"\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("interval (line 2)"), "{m}");
        assert!(m.contains("unit"), "{m}");
    }

    #[test]
    fn bad_percentile_rejected() {
        let m = Config::from_toml("percentiles = [0.5, 99]\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("percentiles (line 1)"), "{m}");
    }

    #[test]
    fn slo_errors_name_the_slo_the_key_and_the_line() {
        let text = "[[slos]]\nname = \"a\"\nobjective = 0.9\ntotal = \"t\"\nerrors = \"e\"\n\n\
                    [[slos]]\nname = \"b\"\nobjective = 1.5\ntotal = \"t\"\nerrors = \"e\"\n";
        let m = Config::from_toml(text)
            .unwrap()
            .validate(text)
            .unwrap_err()
            .to_string();
        assert!(m.contains("slos[1].objective (line 9)"), "{m}");
        assert!(m.contains("slo \"b\""), "{m}");
        let ok = "[[slos]]\nname = \"a\"\nobjective = 0.9\ntotal = \"t\"\nerrors = \"e\"\n";
        let rt = Config::from_toml(ok).unwrap().validate(ok).unwrap();
        assert_eq!(rt.slos.len(), 1);
        assert!(rt.config.to_effective_toml().contains("[[slos]]"));
    }

    #[test]
    fn bad_address_rejected() {
        let m = Config::from_toml("[http]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("http.listen (line 2)"), "{m}");
    }
}
