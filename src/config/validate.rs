//! Checking a parsed configuration: [`Config::validate`] applies the cross-field rules and
//! derives the [`Runtime`]; its errors, and `toml`'s, name the key and the line it is on
//! ([`line_of`], [`describe_toml_error`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Config, ConfigError, Runtime};
use crate::tls::{self, PemRole};
use crate::units::format_duration;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Config {
    /// Cross-field checks and derived values. `source` is the TOML text (for line numbers).
    pub fn validate(self, source: &str) -> Result<Runtime, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_owned(),
            line: line_of(source, key).map_or(String::new(), |l| format!(" (line {l})")),
            message,
        };
        let interval = self.interval.0;
        if interval < Duration::from_secs(1) || interval.subsec_nanos() != 0 {
            return Err(invalid(
                "interval",
                format!(
                    "must be a whole number of seconds, at least 1s (got {})",
                    format_duration(interval)
                ),
            ));
        }
        if self.max_series == 0 {
            return Err(invalid("max_series", "must be at least 1".into()));
        }
        for (key, v) in [
            ("max_name_length", self.max_name_length),
            ("max_tags_per_line", self.max_tags_per_line),
            ("max_tag_length", self.max_tag_length),
            ("max_events", self.max_events),
            (
                "ingest.tcp_max_connections",
                self.ingest.tcp_max_connections,
            ),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        if self.ingest.tcp_idle_timeout.0.is_zero() {
            return Err(invalid(
                "ingest.tcp_idle_timeout",
                "must be more than 0".into(),
            ));
        }
        if self.ingest.read_coalesce.0 > Duration::from_millis(100) {
            return Err(invalid(
                "ingest.read_coalesce",
                "must be at most 100ms".into(),
            ));
        }
        let ingest = &self.ingest;
        if !(512..=65_535).contains(&ingest.max_datagram_bytes) {
            return Err(invalid(
                "ingest.max_datagram_bytes",
                "must be between 512 and 65535".into(),
            ));
        }
        if ingest.shards > 4096 {
            return Err(invalid("ingest.shards", "must be at most 4096".into()));
        }
        if ingest.readers > 256 {
            return Err(invalid("ingest.readers", "must be at most 256".into()));
        }
        if self.http.max_body_bytes == 0 {
            return Err(invalid("http.max_body_bytes", "must be at least 1".into()));
        }
        let mut globals = Vec::with_capacity(self.forward.addresses.len());
        for (i, a) in self.forward.addresses.iter().enumerate() {
            let url = a.trim_end_matches('/');
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                return Err(invalid(
                    "forward.addresses",
                    format!("address {i} ({a:?}) must be a base URL like \"http://10.0.0.5:8127\""),
                ));
            }
            if globals.iter().any(|g: &String| g == url) {
                return Err(invalid(
                    "forward.addresses",
                    format!("{a:?} is listed twice"),
                ));
            }
            globals.push(url.to_owned());
        }
        if self.forward.buffer_intervals == 0 || self.forward.buffer_intervals > 100 {
            return Err(invalid(
                "forward.buffer_intervals",
                "must be between 1 and 100".into(),
            ));
        }
        let forward_token = self
            .forward
            .token
            .resolve(|| "forward.token".into())
            .map_err(|e| invalid(&e.key, e.reason))?;
        let import_token = self
            .http
            .import_token
            .resolve(|| "http.import_token".into())
            .map_err(|e| invalid(&e.key, e.reason))?;
        let healthcheck_token = self
            .http
            .healthcheck_token
            .resolve(|| "http.healthcheck_token".into())
            .map_err(|e| invalid(&e.key, e.reason))?;
        let http_tls = listener_tls(
            "http",
            [
                &self.http.tls_cert,
                &self.http.tls_key,
                &self.http.tls_client_ca,
            ],
            None,
            &invalid,
        )?;
        let ingest_tls = listener_tls(
            "ingest",
            [&ingest.tls_cert, &ingest.tls_key, &ingest.tls_client_ca],
            (!ingest.statsd_tcp_tls.is_empty()).then_some("ingest.statsd_tcp_tls"),
            &invalid,
        )?;
        let forward_tls = self.forward_tls(&invalid)?;
        if self.health.stale_after.0.is_zero() {
            return Err(invalid("health.stale_after", "must be more than 0".into()));
        }
        if self.health.ttl.0 < self.health.stale_after.0 {
            return Err(invalid(
                "health.ttl",
                "must be at least health.stale_after".into(),
            ));
        }
        if self.health.history > 1000 {
            return Err(invalid("health.history", "must be at most 1000".into()));
        }
        for (i, t) in self.tags.iter().enumerate() {
            if t.is_empty() || t.contains(',') || t.chars().any(char::is_control) {
                return Err(invalid(
                    "tags",
                    format!(
                        "tag {i} ({t:?}) must be non-empty, without commas or control characters"
                    ),
                ));
            }
        }
        if self.percentiles.is_empty() && self.aggregates.is_empty() {
            tracing::warn!("no percentiles and no aggregates: timers will emit nothing");
        }
        crate::sinks::SinkSet::validate(&self.sinks, interval)
            .map_err(|e| invalid(&e.key, e.reason))?;
        let slos =
            crate::slo::validate(&self.slos, interval).map_err(|e| ConfigError::Invalid {
                line: line_of(source, &e.key).map_or(String::new(), |l| format!(" (line {l})")),
                key: e.key,
                message: e.message,
            })?;
        let hostname: Arc<str> = if self.hostname.is_empty() {
            Arc::from(crate::sys::machine_hostname())
        } else {
            Arc::from(self.hostname.as_str())
        };
        let mut tags = self.tags.clone();
        tags.sort_unstable();
        tags.dedup();
        let readers = if ingest.readers == 0 {
            cores()
        } else {
            ingest.readers
        };
        let shards = if ingest.shards == 0 {
            4 * cores()
        } else {
            ingest.shards
        }
        .next_power_of_two();
        let mappings = compile_mappings(&self.mappings, source)?;
        Ok(Runtime {
            slos,
            mappings,
            http_tls,
            ingest_tls,
            forward_tls,
            healthcheck_token,
            source: None,
            globals,
            forward_token,
            import_token,
            hostname,
            interval,
            tags,
            readers,
            shards,
            config: self,
        })
    }
}

/// The keys a `[[mappings]]` table may hold.
const MAPPING_KEYS: [&str; 6] = [
    "match",
    "match_type",
    "match_metric_type",
    "name",
    "tags",
    "action",
];

/// Checks and compiles `[[mappings]]`; an error names the rule (from 1) and its key.
fn compile_mappings(
    tables: &[toml::Table],
    source: &str,
) -> Result<Option<Arc<crate::mapping::Rules>>, ConfigError> {
    let invalid = |rule: usize, field: &str, message: String| {
        let key = format!("mappings[{}].{field}", rule - 1);
        ConfigError::Invalid {
            line: line_of(source, &key).map_or(String::new(), |l| format!(" (line {l})")),
            key,
            message: format!("rule {rule}: {message}"),
        }
    };
    let mut rules = Vec::with_capacity(tables.len());
    for (i, table) in tables.iter().enumerate() {
        if let Some(k) = table.keys().find(|k| !MAPPING_KEYS.contains(&k.as_str())) {
            let message = format!("unknown key (expected one of {})", MAPPING_KEYS.join(", "));
            return Err(invalid(i + 1, k, message));
        }
        if !table.contains_key("match") {
            return Err(invalid(i + 1, "match", "missing".into()));
        }
        let rule: crate::mapping::RuleConfig = table.clone().try_into().map_err(|e| {
            let message = e.to_string();
            let field = MAPPING_KEYS
                .into_iter()
                .find(|k| message.contains(&format!("`{k}`")) || message.contains(k))
                .unwrap_or("match");
            invalid(i + 1, field, message.trim().to_owned())
        })?;
        rules.push(rule);
    }
    crate::mapping::Rules::compile(&rules)
        .map(|r| r.map(Arc::new))
        .map_err(|e| invalid(e.rule, &e.key, e.message))
}

fn is_set(p: &Path) -> bool {
    !p.as_os_str().is_empty()
}

/// `[section] tls_cert` and `tls_key` set together, or neither; `ca` only with them.
fn pair_rule(
    section: &str,
    ca_name: &str,
    [cert, key, ca]: [&Path; 3],
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let k = |name: &str| format!("{section}.{name}");
    match (is_set(cert), is_set(key)) {
        (true, false) => Err(invalid(
            &k("tls_key"),
            format!("must be set with {}", k("tls_cert")),
        )),
        (false, true) => Err(invalid(
            &k("tls_cert"),
            format!("must be set with {}", k("tls_key")),
        )),
        (false, false) if is_set(ca) && ca_name == "tls_client_ca" => Err(invalid(
            &k(ca_name),
            format!("needs {} and {}", k("tls_cert"), k("tls_key")),
        )),
        _ => Ok(()),
    }
}

/// The key in `section` that holds the file a TLS error is about.
fn tls_error(
    section: &str,
    ca_name: &str,
    e: &tls::TlsError,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> ConfigError {
    let name = match e.role() {
        PemRole::Cert => "tls_cert",
        PemRole::Key => "tls_key",
        PemRole::Ca => ca_name,
    };
    invalid(&format!("{section}.{name}"), e.to_string())
}

/// A listener section's TLS (`tls_cert`, `tls_key`, `tls_client_ca`), its files read and
/// checked; `None` when off. `required_by` names the key that needs it on.
fn listener_tls(
    section: &str,
    paths: [&Path; 3],
    required_by: Option<&str>,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
    pair_rule(section, "tls_client_ca", paths, invalid)?;
    let [cert, key, ca] = paths;
    if !is_set(cert) {
        return match required_by {
            Some(by) => Err(invalid(
                &format!("{section}.tls_cert"),
                format!("required by {by} (with {section}.tls_key)"),
            )),
            None => Ok(None),
        };
    }
    tls::server_config(cert, key, is_set(ca).then_some(ca))
        .map(Some)
        .map_err(|e| tls_error(section, "tls_client_ca", &e, invalid))
}

impl Config {
    /// `[forward] tls_ca`, `tls_cert`, `tls_key` as the forwarder's client config; `None` when
    /// none is set (reqwest's defaults).
    fn forward_tls(
        &self,
        invalid: &impl Fn(&str, String) -> ConfigError,
    ) -> Result<Option<Arc<rustls::ClientConfig>>, ConfigError> {
        let f = &self.forward;
        pair_rule(
            "forward",
            "tls_ca",
            [&f.tls_cert, &f.tls_key, &f.tls_ca],
            invalid,
        )?;
        if !is_set(&f.tls_ca) && !is_set(&f.tls_cert) {
            return Ok(None);
        }
        if !f.addresses.iter().any(|a| a.starts_with("https://")) {
            tracing::warn!(
                "[forward] TLS keys are set but no address is https://; they are unused"
            );
        }
        let identity = is_set(&f.tls_cert).then_some((f.tls_cert.as_path(), f.tls_key.as_path()));
        tls::client_config(is_set(&f.tls_ca).then_some(f.tls_ca.as_path()), identity)
            .map(Some)
            .map_err(|e| tls_error("forward", "tls_ca", &e, invalid))
    }
}

/// The 1-based line where dotted `key` is set (`[section]` then `name = `), if it is.
/// `sinks[N].name` looks inside the N-th `[[sinks]]` table.
fn line_of(source: &str, key: &str) -> Option<usize> {
    if let Some((table, rest)) = ["sinks", "slos", "mappings"]
        .iter()
        .find_map(|t| Some((*t, key.strip_prefix(t)?.strip_prefix('[')?)))
    {
        let header = format!("[[{table}]]");
        let (index, field) = rest.split_once(']')?;
        let index: usize = index.parse().ok()?;
        let field = field.trim_start_matches('.');
        // `alerts[0].windows` is on the line of `alerts`.
        let field = field.split(['[', '.']).next().unwrap_or(field);
        let mut seen = 0usize;
        let mut inside = false;
        for (i, raw) in source.lines().enumerate() {
            let line = raw.trim();
            if line.starts_with('[') {
                inside = line == header && {
                    seen += 1;
                    seen == index + 1
                };
                if inside && field.is_empty() {
                    return Some(i + 1);
                }
                continue;
            }
            if inside && line.split_once('=').is_some_and(|(k, _)| k.trim() == field) {
                return Some(i + 1);
            }
        }
        return None;
    }
    let (section, name) = match key.rsplit_once('.') {
        Some((s, n)) => (s, n),
        None => ("", key),
    };
    let mut current = String::new();
    for (i, raw) in source.lines().enumerate() {
        let line = raw.trim();
        if let Some(h) = line.strip_prefix('[') {
            current = h.trim_matches(|c| c == '[' || c == ']').trim().to_owned();
            continue;
        }
        if current == section {
            if let Some((k, _)) = line.split_once('=') {
                if k.trim() == name {
                    return Some(i + 1);
                }
            }
        }
    }
    None
}

/// `toml`'s message with the key at the error's line spelled out first.
pub(super) fn describe_toml_error(source: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_owned();
    let Some(span) = e.span() else {
        return msg;
    };
    let before = source.get(..span.start).unwrap_or_default();
    let line_no = before.matches('\n').count() + 1;
    let line = source.lines().nth(line_no - 1).unwrap_or_default();
    let mut section = String::new();
    for l in source.lines().take(line_no) {
        let l = l.trim();
        if l.starts_with('[') {
            section = l.trim_matches(|c| c == '[' || c == ']').trim().to_owned();
        }
    }
    let key = line.split_once('=').map(|(k, _)| k.trim().to_owned());
    match key {
        Some(k) if !k.is_empty() => {
            let full = if section.is_empty() {
                k
            } else {
                format!("{section}.{k}")
            };
            format!("{full} (line {line_no}): {msg}")
        }
        _ if section.is_empty() => format!("line {line_no}: {msg}"),
        _ => format!("[{section}] (line {line_no}): {msg}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::units::Dur;

    #[test]
    fn fractional_interval_rejected_with_line() {
        let src = "tags = []\ninterval = \"1500ms\"\n";
        let m = Config::from_toml(src)
            .unwrap()
            .validate(src)
            .unwrap_err()
            .to_string();
        assert!(m.starts_with("interval (line 2)"), "{m}");
    }

    #[test]
    fn sink_errors_name_the_sink_key_and_line() {
        let src =
            "[[sinks]]\ntype = \"console\"\n\n[[sinks]]\ntype = \"http\"\nurl = \"ftp://x\"\n";
        let m = Config::from_toml(src)
            .unwrap()
            .validate(src)
            .unwrap_err()
            .to_string();
        assert!(m.starts_with("sinks[1].url (line 6)"), "{m}");
    }

    #[test]
    fn read_coalesce_is_bounded() {
        let text = "[ingest]\nread_coalesce = \"1s\"\n";
        let m = Config::from_toml(text)
            .and_then(|c| c.validate(text))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(m.contains("ingest.read_coalesce (line 2)"), "{m}");
        assert!(m.contains("at most 100ms"), "{m}");
        let text = "[ingest]\nread_coalesce = \"0ms\"\n";
        let off = Config::from_toml(text).map(|c| c.ingest.read_coalesce);
        assert_eq!(off.ok(), Some(Dur(Duration::ZERO)));
    }

    fn refusal(text: &str) -> String {
        Config::from_toml(text)
            .and_then(|c| c.validate(text))
            .map(|_| ())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn mapping_errors_name_the_rule_key_and_line() {
        let two = "[[mappings]]\nmatch = \"a.*\"\nname = \"a\"\n\n[[mappings]]\n";
        assert_eq!(
            refusal(&format!(
                "{two}match = \"(\"\nmatch_type = \"regex\"\nname = \"x\"\n"
            ))
            .lines()
            .next()
            .unwrap_or(""),
            "mappings[1].match (line 6): rule 2: invalid regex: regex parse error:"
        );
        assert_eq!(
            refusal(&format!("{two}match = \"b.*\"\nname = \"$2\"\n")),
            "mappings[1].name (line 7): rule 2: capture $2 does not exist (the pattern has 1)"
        );
        assert_eq!(
            refusal(&format!("{two}match = \"b.*\"\nname = \"\"\n")),
            "mappings[1].name (line 7): rule 2: the resulting name is empty"
        );
        assert_eq!(
            refusal(&format!(
                "{two}match = \"b.*\"\nname = \"b\"\ntags = {{ k = \"$3\" }}\n"
            )),
            "mappings[1].tags.k (line 8): rule 2: capture $3 does not exist (the pattern has 1)"
        );
        assert_eq!(
            refusal(&format!("{two}match = \"b.*\"\nrename = \"b\"\n")),
            "mappings[1].rename (line 7): rule 2: unknown key (expected one of match, \
             match_type, match_metric_type, name, tags, action)"
        );
        assert!(
            refusal(&format!("{two}match = \"b.*\"\naction = \"explode\"\n"))
                .starts_with("mappings[1].action (line 7): rule 2: unknown variant `explode`")
        );
        assert!(refusal(&format!("{two}name = \"b\"\n"))
            .starts_with("mappings[1].match: rule 2: missing"));
        let one = "[[mappings]]\nmatch = \"a.*\"\nname = \"a\"\n";
        let ok = Config::from_toml(one).unwrap().validate(one).unwrap();
        assert_eq!(ok.mappings.map(|r| r.len()), Some(1));
        let none = Config::default().validate("").unwrap();
        assert!(none.mappings.is_none());
    }

    /// The rule set `benches/ab.py --config-b` uses stays valid.
    #[test]
    fn the_bench_rule_set_is_valid() {
        let text = include_str!("../../benches/mapping_rules.toml");
        let rt = Config::from_toml(text).unwrap().validate(text).unwrap();
        assert_eq!(rt.mappings.map(|r| r.len()), Some(47));
    }

    #[test]
    fn tls_keys_come_in_pairs() {
        let m = refusal("[http]\ntls_cert = \"/x.crt\"\n");
        assert!(
            m.starts_with("http.tls_key: must be set with http.tls_cert"),
            "{m}"
        );
        let m = refusal("[forward]\n\ntls_key = \"/x.key\"\n");
        assert!(
            m.starts_with("forward.tls_cert: must be set with forward.tls_key"),
            "{m}"
        );
        let m = refusal("[http]\ntls_client_ca = \"/ca.crt\"\n");
        assert!(
            m.starts_with("http.tls_client_ca (line 2): needs http.tls_cert"),
            "{m}"
        );
        let m = refusal("[ingest]\nstatsd_tcp_tls = [\"127.0.0.1:0\"]\n");
        assert!(
            m.starts_with("ingest.tls_cert: required by ingest.statsd_tcp_tls"),
            "{m}"
        );
    }

    #[test]
    fn unreadable_tls_file_names_its_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_path = dir.path().join("c.pem");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        let text = format!(
            "[ingest]\nstatsd_tcp_tls = [\"127.0.0.1:0\"]\ntls_cert = {:?}\ntls_key = \"/nonexistent/k.pem\"\n",
            cert_path.display()
        );
        let m = refusal(&text);
        assert!(
            m.starts_with("ingest.tls_key (line 4): cannot read /nonexistent/k.pem"),
            "{m}"
        );
        let text = format!(
            "[forward]\ntls_ca = {:?}\n",
            dir.path().join("none.pem").display()
        );
        let m = refusal(&text);
        assert!(m.starts_with("forward.tls_ca (line 2): cannot read"), "{m}");
    }
}
