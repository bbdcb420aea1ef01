//! Checking a parsed configuration: [`Config::validate`] applies the cross-field rules and
//! derives the [`Runtime`]; its errors, and `toml`'s, name the key and the line it is on
//! ([`line_of`], [`describe_toml_error`]).

use std::sync::Arc;
use std::time::Duration;

use super::{Config, ConfigError, Runtime};
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
        Ok(Runtime {
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

/// The 1-based line where dotted `key` is set (`[section]` then `name = `), if it is.
/// `sinks[N].name` looks inside the N-th `[[sinks]]` table.
fn line_of(source: &str, key: &str) -> Option<usize> {
    if let Some(rest) = key.strip_prefix("sinks[") {
        let (index, field) = rest.split_once(']')?;
        let index: usize = index.parse().ok()?;
        let field = field.trim_start_matches('.');
        let mut seen = 0usize;
        let mut inside = false;
        for (i, raw) in source.lines().enumerate() {
            let line = raw.trim();
            if line.starts_with('[') {
                inside = line == "[[sinks]]" && {
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
}
