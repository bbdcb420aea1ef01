//! Sink configuration: one [`SinkConfig`] per `[[sinks]]` table, tagged by its `type` key, and
//! its validation into what the runner starts.
//!
//! Values written as `"${NAME}"` in `url`, `api_key`, tokens, passwords and header values are read
//! from the environment when the configuration is validated; secrets never appear in `Debug`
//! output, errors or logs. The keys every sink type takes (`name`, `timeout`, `max_retries`, and
//! the filter's `include`, `exclude`, `drop_tags`, `tags`) are read and checked here, once, for
//! all of them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    console, datadog, filter, http, influxdb, prometheus_remote_write, prometheus_scrape,
    ConsoleConfig, DatadogConfig, HttpConfig, InfluxdbConfig, PrometheusConfig,
    PrometheusRemoteWriteConfig,
};
use crate::units::parse_duration;

/// Default per-attempt timeout, before clamping to half the interval.
const DEFAULT_TIMEOUT: &str = "5s";

/// Default `expire_after` of the Prometheus sinks.
const DEFAULT_EXPIRE_AFTER: &str = "5m";

/// One `[[sinks]]` table, tagged by its `type` key; unknown keys are rejected.
///
/// (De)serialised by hand as an internally tagged table: errors are raised while the table is
/// being read, so toml reports the line of the offending `[[sinks]]` table rather than of the
/// whole array; the keys every sink takes are read once into [`SinkCommon`], the rest by the
/// sink's own struct; and a table prints its keys in each sink's documented order.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    /// Human-readable table or one JSON object per flush on stdout.
    Console(ConsoleConfig),
    /// The JSON document of `docs/sinks.md` POSTed to any URL.
    Http(HttpConfig),
    /// Datadog's v1 API (`series`, `check_run`, `events`), or anything speaking it.
    Datadog(DatadogConfig),
    /// Prometheus remote write 1.0 (protobuf, snappy).
    PrometheusRemoteWrite(PrometheusRemoteWriteConfig),
    /// InfluxDB line protocol to 1.x `/write` or 2.x `/api/v2/write`.
    Influxdb(InfluxdbConfig),
    /// A Prometheus scrape endpoint serving the last flush.
    Prometheus(PrometheusConfig),
}

impl Default for SinkConfig {
    /// The embedded default: one `console` sink printing tables.
    fn default() -> Self {
        SinkConfig::Console(ConsoleConfig::default())
    }
}

/// The `type` values, for "unknown variant" errors.
const SINK_TYPES: &[&str] = &[
    "console",
    "http",
    "datadog",
    "prometheus_remote_write",
    "influxdb",
    "prometheus",
];

impl<'de> Deserialize<'de> for SinkConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(SinkConfigVisitor)
    }
}

struct SinkConfigVisitor;

impl<'de> serde::de::Visitor<'de> for SinkConfigVisitor {
    type Value = SinkConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sink table with a `type` key")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<SinkConfig, A::Error> {
        use serde::de::Error as _;
        let mut table =
            toml::Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        let kind = match table.remove("type") {
            Some(toml::Value::String(kind)) => kind,
            Some(other) => {
                return Err(A::Error::invalid_type(
                    serde::de::Unexpected::Other(other.type_str()),
                    &"a sink type string",
                ))
            }
            None => return Err(A::Error::missing_field("type")),
        };
        let parsed = match kind.as_str() {
            "console" => read_table(table).map(SinkConfig::Console),
            "http" => read_table(table).map(SinkConfig::Http),
            "datadog" => read_table(table).map(SinkConfig::Datadog),
            "prometheus_remote_write" => read_table(table).map(SinkConfig::PrometheusRemoteWrite),
            "influxdb" => read_table(table).map(SinkConfig::Influxdb),
            "prometheus" => read_table(table).map(SinkConfig::Prometheus),
            other => return Err(A::Error::unknown_variant(other, SINK_TYPES)),
        };
        parsed.map_err(|e| A::Error::custom(e.message()))
    }
}

impl Serialize for SinkConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            SinkConfig::Console(c) => write_table(serializer, self.type_name(), c),
            SinkConfig::Http(c) => write_table(serializer, self.type_name(), c),
            SinkConfig::Datadog(c) => write_table(serializer, self.type_name(), c),
            SinkConfig::PrometheusRemoteWrite(c) => write_table(serializer, self.type_name(), c),
            SinkConfig::Influxdb(c) => write_table(serializer, self.type_name(), c),
            SinkConfig::Prometheus(c) => write_table(serializer, self.type_name(), c),
        }
    }
}

/// The keys every sink type takes, read once for all of them by [`SinkConfig`]'s deserializer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkCommon {
    /// Sink name (default the type, then `<type>-2`, …): a tag value and part of the check name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Per-attempt timeout: one request, or one write to stdout (default `"5s"`, at most half
    /// the interval; the `prometheus` sink accepts it for symmetry).
    pub timeout: String,
    /// Further attempts after a retryable failure (default 3).
    pub max_retries: u32,
    /// Only metrics and service checks whose name starts with one of these (default: all).
    pub include: Vec<String>,
    /// No metric or service check whose name starts with one of these.
    pub exclude: Vec<String>,
    /// Tag keys removed before sending (`host` removes the host tag or label).
    pub drop_tags: Vec<String>,
    /// Tags added to everything sent.
    pub tags: Vec<String>,
}

impl Default for SinkCommon {
    fn default() -> Self {
        SinkCommon {
            name: None,
            timeout: DEFAULT_TIMEOUT.to_owned(),
            max_retries: 3,
            include: Vec::new(),
            exclude: Vec::new(),
            drop_tags: Vec::new(),
            tags: Vec::new(),
        }
    }
}

/// The keys of [`SinkCommon`].
const COMMON_KEYS: &[&str] = &[
    "name",
    "timeout",
    "max_retries",
    "include",
    "exclude",
    "drop_tags",
    "tags",
];

/// A sink type's own config struct: its keys besides [`SinkCommon`]'s, which it holds.
trait SinkTable: Serialize + serde::de::DeserializeOwned {
    /// Every key the type takes, the common ones included, in the order they are documented,
    /// printed and listed in "unknown field" errors.
    const KEYS: &'static [&'static str];

    fn common(&self) -> &SinkCommon;

    fn common_mut(&mut self) -> &mut SinkCommon;
}

macro_rules! sink_table {
    ($($config:ty => [$($key:literal),* $(,)?];)*) => {$(
        impl SinkTable for $config {
            const KEYS: &'static [&'static str] = &[$($key),*];

            fn common(&self) -> &SinkCommon {
                &self.common
            }

            fn common_mut(&mut self) -> &mut SinkCommon {
                &mut self.common
            }
        }
    )*};
}

sink_table! {
    ConsoleConfig => [
        "name", "format", "self_metrics", "timeout", "max_retries", "include", "exclude",
        "drop_tags", "tags",
    ];
    HttpConfig => [
        "name", "url", "headers", "compression", "timeout", "max_retries", "batch_max_bytes",
        "include", "exclude", "drop_tags", "tags",
    ];
    DatadogConfig => [
        "name", "url", "api_key", "compression", "timeout", "max_retries", "batch_max_bytes",
        "include", "exclude", "drop_tags", "tags",
    ];
    PrometheusRemoteWriteConfig => [
        "name", "url", "headers", "timeout", "max_retries", "batch_max_bytes", "expire_after",
        "include", "exclude", "drop_tags", "tags",
    ];
    InfluxdbConfig => [
        "name", "url", "version", "database", "username", "password", "org", "bucket", "token",
        "compression", "timeout", "max_retries", "batch_max_bytes", "include", "exclude",
        "drop_tags", "tags",
    ];
    PrometheusConfig => [
        "name", "listen", "expire_after", "timeout", "max_retries", "include", "exclude",
        "drop_tags", "tags",
    ];
}

/// Reads one sink table (without its `type`): the common keys into [`SinkCommon`], the others
/// into `T`. Errors are those serde would raise reading the table into one struct of all of
/// `T::KEYS`: the first bad key in table order, unknown ones listed against `T::KEYS`.
fn read_table<T: SinkTable>(table: toml::Table) -> Result<T, toml::de::Error> {
    use serde::de::Error as _;
    let own = |rest: toml::Table| T::deserialize(toml::Value::Table(rest));
    let mut common = toml::Table::new();
    let mut rest = toml::Table::new();
    for (key, value) in table {
        if !T::KEYS.contains(&key.as_str()) {
            // A bad value earlier in the table is reported first, as serde would.
            own(rest)?;
            return Err(toml::de::Error::unknown_field(&key, T::KEYS));
        }
        if COMMON_KEYS.contains(&key.as_str()) {
            common.insert(key, value);
            if let Err(err) = SinkCommon::deserialize(toml::Value::Table(common.clone())) {
                own(rest)?;
                return Err(err);
            }
        } else {
            rest.insert(key, value);
        }
    }
    let mut config = own(rest)?;
    *config.common_mut() = SinkCommon::deserialize(toml::Value::Table(common))?;
    Ok(config)
}

/// Writes one sink table: `type`, then `T::KEYS` in order (unset optional keys left out).
fn write_table<S: serde::Serializer, T: SinkTable>(
    serializer: S,
    type_name: &str,
    config: &T,
) -> Result<S::Ok, S::Error> {
    use serde::ser::{Error as _, SerializeMap as _};
    let own = toml::Table::try_from(config).map_err(S::Error::custom)?;
    let common = toml::Table::try_from(config.common()).map_err(S::Error::custom)?;
    let mut map = serializer.serialize_map(None)?;
    map.serialize_entry("type", type_name)?;
    for key in T::KEYS {
        if let Some(value) = own.get(*key).or_else(|| common.get(*key)) {
            map.serialize_entry(key, value)?;
        }
    }
    map.end()
}

impl SinkConfig {
    /// The `type` key's value: `console`, `http`, `datadog`, `prometheus_remote_write`,
    /// `influxdb` or `prometheus`.
    pub const fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::Console(_) => "console",
            SinkConfig::Http(_) => "http",
            SinkConfig::Datadog(_) => "datadog",
            SinkConfig::PrometheusRemoteWrite(_) => "prometheus_remote_write",
            SinkConfig::Influxdb(_) => "influxdb",
            SinkConfig::Prometheus(_) => "prometheus",
        }
    }

    /// The keys every sink type has.
    fn common(&self) -> CommonKeys<'_> {
        let common = match self {
            SinkConfig::Console(c) => &c.common,
            SinkConfig::Http(c) => &c.common,
            SinkConfig::Datadog(c) => &c.common,
            SinkConfig::PrometheusRemoteWrite(c) => &c.common,
            SinkConfig::Influxdb(c) => &c.common,
            SinkConfig::Prometheus(c) => &c.common,
        };
        CommonKeys {
            name: common.name.as_deref(),
            timeout: &common.timeout,
            max_retries: common.max_retries,
            filter: filter::FilterKeys {
                include: &common.include,
                exclude: &common.exclude,
                drop_tags: &common.drop_tags,
                tags: &common.tags,
            },
        }
    }
}

/// The keys every sink type has, as validation reads them: the filter's four apart.
struct CommonKeys<'a> {
    name: Option<&'a str>,
    timeout: &'a str,
    max_retries: u32,
    filter: filter::FilterKeys<'a>,
}

/// Default of the Prometheus sinks' `expire_after` key.
pub(super) fn default_expire_after() -> String {
    DEFAULT_EXPIRE_AFTER.to_owned()
}

/// Parses a positive `expire_after` duration.
pub(super) fn parse_expire_after(
    value: &str,
    key: &impl Fn(&str) -> String,
) -> Result<Duration, SinkConfigError> {
    let d = parse_duration(value)
        .map_err(|reason| SinkConfigError::new(key("expire_after"), reason))?;
    if d < Duration::from_secs(1) {
        return Err(SinkConfigError::new(
            key("expire_after"),
            "must be at least 1s",
        ));
    }
    Ok(d)
}

/// Whether request bodies are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain bodies.
    None,
    /// `Content-Encoding: gzip`.
    Gzip,
}

/// A configuration string that may hold a secret: written literally or as `"${NAME}"`, read
/// from the environment variable NAME at validation.
///
/// `Debug` prints `***`; serialising prints the `${NAME}` reference itself, or `***` for a
/// literal value, so printing an effective config never reveals it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a configured value (literal or `${NAME}`).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The environment variable's name when the value is a `${NAME}` reference.
    pub fn env_reference(&self) -> Option<&str> {
        env_reference(&self.0)
    }

    /// The value with `${NAME}` replaced by the environment variable; `key` names the setting
    /// in the error.
    pub fn resolve(&self, key: impl FnOnce() -> String) -> Result<String, SinkConfigError> {
        resolve_env(&self.0, key)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.env_reference() {
            Some(_) => serializer.serialize_str(&self.0),
            None if self.0.is_empty() => serializer.serialize_str(""),
            None => serializer.serialize_str("***"),
        }
    }
}

/// `NAME` when `value` is exactly `${NAME}` with a non-empty NAME.
fn env_reference(value: &str) -> Option<&str> {
    value
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
        .filter(|name| !name.is_empty())
}

/// Expands a whole-value `${NAME}` from the environment; any other value is returned as is.
pub(super) fn resolve_env(
    value: &str,
    key: impl FnOnce() -> String,
) -> Result<String, SinkConfigError> {
    let Some(var) = env_reference(value) else {
        return Ok(value.to_owned());
    };
    match std::env::var(var) {
        Ok(v) => Ok(v),
        Err(std::env::VarError::NotPresent) => Err(SinkConfigError::new(
            key(),
            format!("environment variable {var} is not set"),
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(SinkConfigError::new(
            key(),
            format!("environment variable {var} is not valid UTF-8"),
        )),
    }
}

/// A sink configuration that cannot be used; `key` names the setting, as in
/// `sinks[1].url: missing`. Never contains a secret's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct SinkConfigError {
    /// The setting, e.g. `sinks[0].api_key` or `sinks[2].headers.Authorization`.
    pub key: String,
    /// What is wrong with it, lowercase.
    pub reason: String,
}

impl SinkConfigError {
    pub(super) fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        SinkConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// A validated `[[sinks]]` table: everything parsed, secrets expanded, nothing started.
pub(super) struct ValidSink {
    pub(super) name: String,
    pub(super) timeout: Duration,
    pub(super) max_retries: u32,
    pub(super) filter: filter::SinkFilter,
    pub(super) kind: ValidKind,
}

pub(super) enum ValidKind {
    Console(console::ConsoleSettings),
    Http(http::HttpSettings),
    Datadog(datadog::DatadogSettings),
    PrometheusRemoteWrite(prometheus_remote_write::RemoteWriteSettings),
    Influxdb(influxdb::InfluxdbSettings),
    Prometheus(prometheus_scrape::ScrapeSettings),
}

/// Names may only use these, as they become a tag value and part of a check name.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

pub(super) fn validate_all(
    configs: &[SinkConfig],
    interval: Duration,
) -> Result<Vec<ValidSink>, SinkConfigError> {
    if interval.is_zero() {
        return Err(SinkConfigError::new("interval", "must be positive"));
    }
    let max_timeout = (interval / 2).max(Duration::from_millis(1));
    let mut valid: Vec<ValidSink> = Vec::with_capacity(configs.len());
    for (i, config) in configs.iter().enumerate() {
        let key = |k: &str| format!("sinks[{i}].{k}");
        // 1 for the first sink of its type, 2 for the second, … (named ones count too).
        let nth = configs
            .iter()
            .take(i + 1)
            .filter(|c| c.type_name() == config.type_name())
            .count();
        let common = config.common();
        let name = match common.name {
            Some(name) => {
                if name.is_empty() {
                    return Err(SinkConfigError::new(key("name"), "must not be empty"));
                }
                if !name.chars().all(is_name_char) {
                    return Err(SinkConfigError::new(
                        key("name"),
                        format!("{name:?} may only contain letters, digits, '_', '-' and '.'"),
                    ));
                }
                name.to_owned()
            }
            None if nth == 1 => config.type_name().to_owned(),
            None => format!("{}-{nth}", config.type_name()),
        };
        if let Some(j) = valid.iter().position(|v| v.name == name) {
            return Err(SinkConfigError::new(
                key("name"),
                format!("duplicate sink name {name:?} (also used by sinks[{j}])"),
            ));
        }
        let timeout = parse_duration(common.timeout)
            .map_err(|reason| SinkConfigError::new(key("timeout"), reason))?;
        if timeout.is_zero() {
            return Err(SinkConfigError::new(key("timeout"), "must be positive"));
        }
        if let SinkConfig::Prometheus(c) = config {
            // SO_REUSEPORT would let two endpoints share the address and split the scrapes.
            let addr = |listen: &str| listen.parse::<std::net::SocketAddr>().ok();
            let mine = addr(&c.listen).filter(|a| a.port() != 0);
            let same = |other: &SinkConfig| matches!(other, SinkConfig::Prometheus(o) if mine.is_some() && addr(&o.listen) == mine);
            if let Some(j) = configs.iter().take(i).position(same) {
                return Err(SinkConfigError::new(
                    key("listen"),
                    format!("{} is already the listen address of sinks[{j}]", c.listen),
                ));
            }
        }
        let filter = filter::SinkFilter::new(&common.filter, &key)?;
        let kind = match config {
            SinkConfig::Console(c) => ValidKind::Console(console::validate(c)),
            SinkConfig::Http(c) => ValidKind::Http(http::validate(c, &key)?),
            SinkConfig::Datadog(c) => ValidKind::Datadog(datadog::validate(c, &key)?),
            SinkConfig::PrometheusRemoteWrite(c) => {
                ValidKind::PrometheusRemoteWrite(prometheus_remote_write::validate(c, &key)?)
            }
            SinkConfig::Influxdb(c) => ValidKind::Influxdb(influxdb::validate(c, &key)?),
            SinkConfig::Prometheus(c) => {
                ValidKind::Prometheus(prometheus_scrape::validate(c, &key)?)
            }
        };
        valid.push(ValidSink {
            name,
            timeout: timeout.min(max_timeout),
            max_retries: common.max_retries,
            filter,
            kind,
        });
    }
    Ok(valid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::testing::{http_config, parse};
    use crate::sinks::{ConsoleFormat, SinkSet};

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
        for bad in [
            "",
            "5",
            "s",
            "5x",
            "-5s",
            "1.2.3s",
            "5 s",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn default_is_console_table() {
        let SinkConfig::Console(c) = SinkConfig::default() else {
            panic!("default sink is not console");
        };
        assert_eq!(c.format, ConsoleFormat::Table);
        assert_eq!(c.common.timeout, "5s");
        assert_eq!(c.common.max_retries, 3);
        let parsed = parse("[[sinks]]\ntype = \"console\"\n").expect("parses");
        assert_eq!(parsed, vec![SinkConfig::default()]);
    }

    #[test]
    fn unknown_key_in_tagged_variant_is_rejected() {
        let err = parse("[[sinks]]\ntype = \"http\"\nurl = \"http://x\"\nurll = \"y\"\n")
            .expect_err("unknown key accepted");
        assert!(err.to_string().contains("urll"), "{err}");
        let err = parse("[[sinks]]\ntype = \"console\"\napi_key = \"y\"\n")
            .expect_err("other type's key accepted");
        assert!(err.to_string().contains("api_key"), "{err}");
        let err = parse("[[sinks]]\ntype = \"kafka\"\n").expect_err("unknown type accepted");
        assert!(err.to_string().contains("kafka"), "{err}");
    }

    #[test]
    fn errors_point_at_the_offending_table() {
        let err = parse(
            "[[sinks]]\ntype = \"console\"\n\n[[sinks]]\ntype = \"http\"\nurl = \"http://x\"\nurll = 1\n",
        )
        .expect_err("unknown key accepted");
        let text = err.to_string();
        assert!(text.contains("line 4"), "{text}");
        assert!(text.contains("unknown field `urll`"), "{text}");
        let err = parse("[[sinks]]\nformat = \"json\"\n").expect_err("no type");
        assert!(err.to_string().contains("missing field `type`"), "{err}");
        let err = parse("[[sinks]]\ntype = 1\n").expect_err("numeric type");
        assert!(err.to_string().contains("sink type string"), "{err}");
        let err = parse("[[sinks]]\ntype = \"http\"\ntimeout = 5\n").expect_err("integer");
        assert!(err.to_string().contains("expected a string"), "{err}");
    }

    #[test]
    fn every_type_parses_by_its_name() {
        for config in [
            SinkConfig::default(),
            SinkConfig::Http(HttpConfig::default()),
            SinkConfig::Datadog(DatadogConfig::default()),
            SinkConfig::PrometheusRemoteWrite(PrometheusRemoteWriteConfig::default()),
            SinkConfig::Influxdb(InfluxdbConfig::default()),
            SinkConfig::Prometheus(PrometheusConfig::default()),
        ] {
            let text = format!("[[sinks]]\ntype = \"{}\"\n", config.type_name());
            assert!(SINK_TYPES.contains(&config.type_name()));
            assert_eq!(parse(&text).expect("parses"), vec![config]);
        }
    }

    #[test]
    fn every_type_takes_the_filter_keys() {
        for kind in SINK_TYPES {
            let text = format!(
                "[[sinks]]\ntype = \"{kind}\"\ninclude = [\"a.\"]\nexclude = [\"a.b\"]\n\
                 drop_tags = [\"k\"]\ntags = [\"x:y\"]\n"
            );
            let configs = parse(&text).unwrap_or_else(|e| panic!("{kind}: {e}"));
            let common = configs[0].common();
            assert_eq!(common.filter.include, ["a."], "{kind}");
            assert_eq!(common.filter.exclude, ["a.b"], "{kind}");
            assert_eq!(common.filter.drop_tags, ["k"], "{kind}");
            assert_eq!(common.filter.tags, ["x:y"], "{kind}");
        }
        let configs = vec![http_config("http://a", "include = [\"\"]")];
        let err = SinkSet::validate(&configs, Duration::from_secs(10)).expect_err("empty prefix");
        assert_eq!(err.key, "sinks[0].include[0]");
    }

    #[test]
    fn commented_examples_in_the_default_config_parse() {
        // Every `# [[sinks]]` block of config.example.toml, uncommented, up to the blank line.
        let mut blocks: Vec<String> = Vec::new();
        let mut inside = false;
        for line in crate::config::DEFAULT_CONFIG.lines() {
            if line == "# [[sinks]]" {
                blocks.push(String::new());
                inside = true;
            }
            match (inside, line.strip_prefix("# "), blocks.last_mut()) {
                (true, Some(rest), Some(block)) => {
                    block.push_str(rest);
                    block.push('\n');
                }
                _ => inside = false,
            }
        }
        let types: Vec<&str> = blocks
            .iter()
            .map(|b| {
                let configs = parse(b).unwrap_or_else(|e| panic!("{e}\n{b}"));
                configs[0].type_name()
            })
            .collect();
        assert_eq!(
            types,
            [
                "http",
                "datadog",
                "prometheus_remote_write",
                "influxdb",
                "prometheus"
            ]
        );
    }

    #[test]
    fn default_names_count_per_type() {
        let configs = parse(
            "[[sinks]]\ntype = \"http\"\nurl = \"http://a\"\n\
             [[sinks]]\ntype = \"console\"\n\
             [[sinks]]\ntype = \"http\"\nurl = \"http://b\"\n\
             [[sinks]]\ntype = \"http\"\nurl = \"http://c\"\nname = \"mine\"\n\
             [[sinks]]\ntype = \"http\"\nurl = \"http://d\"\n",
        )
        .expect("parses");
        let names: Vec<String> = validate_all(&configs, Duration::from_secs(10))
            .expect("valid")
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, ["http", "console", "http-2", "mine", "http-4"]);
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let configs = parse(
            "[[sinks]]\ntype = \"http\"\nurl = \"http://a\"\n\
             [[sinks]]\ntype = \"console\"\nname = \"http\"\n",
        )
        .expect("parses");
        let err = SinkSet::validate(&configs, Duration::from_secs(10)).expect_err("duplicate");
        assert_eq!(err.key, "sinks[1].name");
        assert!(err.to_string().contains("duplicate"), "{err}");
    }

    #[test]
    fn bad_names_are_rejected() {
        for bad in ["", "a b", "x,y", "a:b"] {
            let configs = vec![SinkConfig::Console(ConsoleConfig {
                common: SinkCommon {
                    name: Some(bad.to_owned()),
                    ..SinkCommon::default()
                },
                ..ConsoleConfig::default()
            })];
            let err = SinkSet::validate(&configs, Duration::from_secs(10)).expect_err(bad);
            assert_eq!(err.key, "sinks[0].name");
        }
    }

    #[test]
    fn timeout_is_clamped_to_half_the_interval() {
        let configs = vec![
            http_config("http://a", ""),
            http_config("http://b", "name = \"b\"\ntimeout = \"100ms\""),
        ];
        let valid = validate_all(&configs, Duration::from_secs(2)).expect("valid");
        assert_eq!(valid[0].timeout, Duration::from_secs(1));
        assert_eq!(valid[1].timeout, Duration::from_millis(100));
        let valid = validate_all(&configs, Duration::from_secs(60)).expect("valid");
        assert_eq!(valid[0].timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_timeout_names_the_key() {
        let configs = vec![
            SinkConfig::default(),
            http_config("http://a", "timeout = \"5 parsecs\""),
        ];
        let err = SinkSet::validate(&configs, Duration::from_secs(10)).expect_err("bad timeout");
        assert_eq!(err.key, "sinks[1].timeout");
        let configs = vec![http_config("http://a", "timeout = \"0s\"")];
        let err = SinkSet::validate(&configs, Duration::from_secs(10)).expect_err("zero timeout");
        assert_eq!(err.key, "sinks[0].timeout");
    }

    #[test]
    fn zero_interval_is_rejected() {
        assert!(SinkSet::validate(&[SinkConfig::default()], Duration::ZERO).is_err());
    }

    #[test]
    fn secret_debug_and_serialize_never_show_the_value() {
        let literal = Secret::new("hunter2");
        assert_eq!(format!("{literal:?}"), "\"***\"");
        assert_eq!(serde_json::to_string(&literal).expect("json"), "\"***\"");
        let reference = Secret::new("${SOME_VAR}");
        assert_eq!(reference.env_reference(), Some("SOME_VAR"));
        assert_eq!(
            serde_json::to_string(&reference).expect("json"),
            "\"${SOME_VAR}\""
        );
        assert_eq!(Secret::new("${}").env_reference(), None);
        assert_eq!(Secret::new("a${B}").env_reference(), None);
    }

    #[test]
    fn config_serializes_back_to_toml() {
        #[derive(Serialize)]
        struct File<'a> {
            sinks: &'a [SinkConfig],
        }
        let configs = parse(
            "[[sinks]]\ntype = \"datadog\"\napi_key = \"literal-key\"\n\
             [[sinks]]\ntype = \"http\"\nurl = \"http://a\"\nheaders = { X-Token = \"${TOK}\" }\n",
        )
        .expect("parses");
        let text = toml::to_string(&File { sinks: &configs }).expect("serializes");
        assert!(!text.contains("literal-key"), "{text}");
        assert!(text.contains("type = \"datadog\""), "{text}");
        assert!(text.contains("${TOK}"), "{text}");
        let back = parse(&text).expect("round trip parses");
        assert_eq!(back[1], configs[1]);
    }
}
