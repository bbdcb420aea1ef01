//! The `console` sink: each flush on stdout, as an aligned table for people or as one line of
//! the JSON document of `docs/sinks.md#the-json-document` for scripts. The table shows the
//! user's series and one summary line of meterd's own state, unless `self_metrics = "full"`
//! (`docs/sinks.md#console`).
//!
//! The whole flush is encoded into one reused buffer and written with stdout locked, so flushes
//! never interleave with each other. The write runs on tokio's blocking pool: a stdout nobody
//! reads (a paused pager, a full pipe) stalls only this sink, never a runtime thread. At most one
//! write is outstanding; a later batch waits for it (within its timeout) instead of piling up
//! blocked threads.

use std::io::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::config::SinkCommon;
use super::idempotency::BatchId;
use super::{Sink, SinkError};
use crate::point::{unix_secs, FlushBatch, Point, ServiceCheck};

/// `[[sinks]] type = "console"`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The keys every sink takes (`name`, `timeout`, `max_retries`, the filter's).
    #[serde(skip)]
    pub common: SinkCommon,
    /// Output format.
    pub format: ConsoleFormat,
    /// What the table shows of meterd's own points and checks.
    pub self_metrics: SelfMetrics,
}

/// What the `table` format shows of meterd's own state: its self-metrics (`meterd.*`), its own
/// health checks (`service:meterd`) and their `healthcheck.*` gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SelfMetrics {
    /// One summary line after the user's series.
    #[default]
    Summary,
    /// Every row, like any other series.
    Full,
}

/// How the console sink prints a flush.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleFormat {
    /// Aligned columns for people: a header line, then metrics, service checks and events.
    #[default]
    Table,
    /// Exactly one line per flush: the JSON document of `docs/sinks.md#the-json-document`.
    Json,
}

/// The validated console settings.
pub(super) struct ConsoleSettings {
    format: ConsoleFormat,
    self_metrics: SelfMetrics,
}

pub(super) fn validate(config: &ConsoleConfig) -> ConsoleSettings {
    ConsoleSettings {
        format: config.format,
        self_metrics: config.self_metrics,
    }
}

type WriteTask = JoinHandle<(Vec<u8>, std::io::Result<()>)>;

/// Writes flushes to stdout.
pub(super) struct ConsoleSink {
    format: ConsoleFormat,
    self_metrics: SelfMetrics,
    timeout: Duration,
    /// The reusable encode buffer, when no write holds it.
    spare: Vec<u8>,
    /// The encoded current batch, until its write starts.
    pending: Option<Vec<u8>>,
    /// The outstanding write: the current batch's (after `pending` was taken) or an earlier
    /// batch's that was given up on but is still blocked.
    inflight: Option<WriteTask>,
    items: u64,
    delivered: u64,
}

impl ConsoleSink {
    pub(super) fn new(settings: ConsoleSettings, timeout: Duration) -> Self {
        ConsoleSink {
            format: settings.format,
            self_metrics: settings.self_metrics,
            timeout,
            spare: Vec::new(),
            pending: None,
            inflight: None,
            items: 0,
            delivered: 0,
        }
    }
}

impl Sink for ConsoleSink {
    fn encode(&mut self, batch: &FlushBatch, _id: BatchId) -> Result<(), SinkError> {
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        match self.format {
            ConsoleFormat::Table => encode_table(&mut buf, batch, unix_secs(), self.self_metrics)?,
            ConsoleFormat::Json => encode_json(&mut buf, batch)?,
        }
        // An earlier batch's unwritten buffer is simply replaced.
        self.pending = Some(buf);
        self.items = batch.len() as u64;
        self.delivered = 0;
        Ok(())
    }

    async fn send(&mut self) -> Result<(), SinkError> {
        loop {
            if let Some(write) = self.inflight.as_mut() {
                // Awaiting by reference keeps the write if this attempt times out.
                let joined = tokio::time::timeout(self.timeout, write)
                    .await
                    .map_err(|_| SinkError::Timeout(self.timeout))?;
                self.inflight = None;
                let result = match joined {
                    Ok((buf, result)) => {
                        self.spare = buf;
                        result.map_err(SinkError::Io)
                    }
                    Err(join) => Err(SinkError::Io(std::io::Error::other(join))),
                };
                if self.pending.is_none() {
                    // That was this batch's write.
                    if result.is_ok() {
                        self.delivered = self.items;
                    }
                    return result;
                }
                // An abandoned earlier write finished; its outcome was already counted.
            }
            let Some(buf) = self.pending.take() else {
                return Ok(());
            };
            self.inflight = Some(tokio::task::spawn_blocking(move || {
                let result = write_stdout(&buf);
                (buf, result)
            }));
        }
    }

    fn delivered(&self) -> u64 {
        self.delivered
    }
}

/// One locked write of a whole flush.
fn write_stdout(buf: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(buf)?;
    out.flush()
}

fn io_encode_error(err: std::io::Error) -> SinkError {
    SinkError::Encode(err.to_string())
}

/// The `json` format: the JSON document of `docs/sinks.md` on one line.
fn encode_json(out: &mut Vec<u8>, batch: &FlushBatch) -> Result<(), SinkError> {
    serde_json::to_writer(&mut *out, batch).map_err(|e| SinkError::Encode(e.to_string()))?;
    out.push(b'\n');
    Ok(())
}

/// The `table` format. `now` (unix seconds) goes in the header line.
fn encode_table(
    out: &mut Vec<u8>,
    batch: &FlushBatch,
    now: i64,
    self_metrics: SelfMetrics,
) -> Result<(), SinkError> {
    write_table(out, batch, now, self_metrics).map_err(io_encode_error)
}

/// meterd's own health checks and their results carry this tag.
const OWN_SERVICE_TAG: &str = "service:meterd";

fn is_own_point(p: &Point) -> bool {
    p.name.starts_with("meterd.")
        || (p.name.starts_with("healthcheck.") && p.tags.iter().any(|t| t == OWN_SERVICE_TAG))
}

fn is_own_check(c: &ServiceCheck) -> bool {
    c.name.starts_with("meterd.") && c.tags.iter().any(|t| t == OWN_SERVICE_TAG)
}

fn write_table(
    out: &mut Vec<u8>,
    batch: &FlushBatch,
    now: i64,
    self_metrics: SelfMetrics,
) -> std::io::Result<()> {
    let full = self_metrics == SelfMetrics::Full;
    let metrics: Vec<&Point> = batch
        .metrics
        .iter()
        .filter(|p| full || !is_own_point(p))
        .collect();
    let checks: Vec<&ServiceCheck> = batch
        .service_checks
        .iter()
        .filter(|c| full || !is_own_check(c))
        .collect();
    write!(out, "flush at ")?;
    write_rfc3339(out, now)?;
    writeln!(
        out,
        " ({now}): {} points, {} service checks, {} events",
        metrics.len(),
        checks.len(),
        batch.events.len()
    )?;

    if !metrics.is_empty() {
        let mut value = String::new();
        let mut widths = [4, 4, 5, 4]; // name, kind, value, tags
        for p in &metrics {
            value.clear();
            write_value(&mut value, p.value);
            widths[0] = widths[0].max(p.name.chars().count());
            widths[1] = widths[1].max(p.kind.as_str().len());
            widths[2] = widths[2].max(value.len());
            widths[3] = widths[3].max(tags_width(&p.tags));
        }
        let [w_name, w_kind, w_value, w_tags] = widths;
        writeln!(
            out,
            "  {:<w_name$}  {:<w_kind$}  {:>w_value$}  {:<w_tags$}  host",
            "name", "kind", "value", "tags"
        )?;
        for p in &metrics {
            value.clear();
            write_value(&mut value, p.value);
            write!(
                out,
                "  {:<w_name$}  {:<w_kind$}  {:>w_value$}  ",
                p.name,
                p.kind.as_str(),
                value
            )?;
            write_tags(out, &p.tags, w_tags)?;
            writeln!(out, "  {}", or_dash(&p.host))?;
        }
    }

    if !checks.is_empty() {
        writeln!(out, "service checks:")?;
        let mut widths = [4, 6, 4, 4]; // name, status, host, tags
        for c in &checks {
            widths[0] = widths[0].max(c.name.chars().count());
            widths[1] = widths[1].max(status_word(c.status).len());
            widths[2] = widths[2].max(or_dash(&c.host).chars().count());
            widths[3] = widths[3].max(tags_width(&c.tags));
        }
        let [w_name, w_status, w_host, w_tags] = widths;
        writeln!(
            out,
            "  {:<w_name$}  {:<w_status$}  {:<w_host$}  {:<w_tags$}  message",
            "name", "status", "host", "tags"
        )?;
        for c in &checks {
            write!(
                out,
                "  {:<w_name$}  {:<w_status$}  {:<w_host$}  ",
                c.name,
                status_word(c.status),
                or_dash(&c.host)
            )?;
            write_tags(out, &c.tags, w_tags)?;
            out.extend_from_slice(b"  ");
            write_text(out, &c.message)?;
            out.push(b'\n');
        }
    }

    if !batch.events.is_empty() {
        writeln!(out, "events:")?;
        for e in &batch.events {
            write!(out, "  [{}/{}] ", e.alert_type, e.priority)?;
            write_text(out, &e.title)?;
            write!(out, "  host={}", or_dash(&e.host))?;
            if !e.aggregation_key.is_empty() {
                write!(out, " aggregation_key=")?;
                write_text(out, &e.aggregation_key)?;
            }
            if !e.source_type.is_empty() {
                write!(out, " source_type=")?;
                write_text(out, &e.source_type)?;
            }
            write!(out, " tags=")?;
            write_tags(out, &e.tags, 0)?;
            if !e.text.is_empty() {
                out.extend_from_slice(b": ");
                write_text(out, &e.text)?;
            }
            out.push(b'\n');
        }
    }
    if !full {
        write_summary(out, batch)?;
    }
    Ok(())
}

/// One line of meterd's own state in this flush: lines in, refused and dropped, series, sinks
/// (and forwarding) by their own checks. Absent figures (a batch without self-metrics) print 0.
fn write_summary(out: &mut Vec<u8>, batch: &FlushBatch) -> std::io::Result<()> {
    let sum = |name: &str| -> f64 {
        batch
            .metrics
            .iter()
            .filter(|p| p.name == name)
            .map(|p| p.value)
            .sum()
    };
    let dropped = sum("meterd.series.dropped") + sum("meterd.events.dropped");
    write!(
        out,
        "meterd: {} lines in {} packets, {} invalid, {} dropped, {} kernel drops; {} series",
        sum("meterd.lines.received"),
        sum("meterd.packets.received"),
        sum("meterd.lines.invalid"),
        dropped,
        sum("meterd.udp.kernel_drops"),
        sum("meterd.series.active"),
    )?;
    let mut ok = 0;
    let mut failing: Vec<&str> = Vec::new();
    for c in batch.service_checks.iter().filter(|c| is_own_check(c)) {
        let Some(sink) = c.name.strip_prefix("meterd.sink.") else {
            continue;
        };
        if c.status == 0 {
            ok += 1;
        } else {
            failing.push(sink);
        }
    }
    if ok + failing.len() > 0 {
        write!(out, "; sinks: {ok} OK")?;
        if !failing.is_empty() {
            write!(out, ", {} failing ({})", failing.len(), failing.join(", "))?;
        }
    }
    if let Some(f) = batch
        .service_checks
        .iter()
        .find(|c| c.name == "meterd.forward" && is_own_check(c))
    {
        write!(out, "; forward: {}", status_word(f.status))?;
    }
    out.push(b'\n');
    Ok(())
}

/// Values print in their shortest exact form (`12.5`, `3`, `0.001`).
fn write_value(out: &mut String, value: f64) {
    use std::fmt::Write as _;
    let _ = write!(out, "{value}");
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

fn status_word(status: u8) -> &'static str {
    match status {
        0 => "OK",
        1 => "WARNING",
        2 => "CRITICAL",
        3 => "UNKNOWN",
        _ => "INVALID",
    }
}

/// Width of the tags written comma-separated, or of `-` when there are none.
fn tags_width(tags: &[String]) -> usize {
    if tags.is_empty() {
        return 1;
    }
    tags.iter().map(|t| t.chars().count()).sum::<usize>() + tags.len() - 1
}

/// Tags comma-separated (`-` when none), padded to `width` characters.
fn write_tags(out: &mut Vec<u8>, tags: &[String], width: usize) -> std::io::Result<()> {
    if tags.is_empty() {
        out.push(b'-');
    }
    for (i, tag) in tags.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(tag.as_bytes());
    }
    let pad = width.saturating_sub(tags_width(tags));
    out.resize(out.len() + pad, b' ');
    Ok(())
}

/// Free text (messages, titles, event text) on one line: control characters are escaped.
fn write_text(out: &mut Vec<u8>, text: &str) -> std::io::Result<()> {
    for c in text.chars() {
        if c.is_control() {
            write!(out, "{}", c.escape_default())?;
        } else {
            let mut utf8 = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for unix seconds (proleptic Gregorian, UTC).
fn write_rfc3339(out: &mut Vec<u8>, unix: i64) -> std::io::Result<()> {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::testing::sample_batch;
    use std::sync::Arc;

    fn table(batch: &FlushBatch) -> String {
        let mut out = Vec::new();
        encode_table(&mut out, batch, 1_763_775_000, SelfMetrics::Full).expect("encodes");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn json_is_one_line_of_the_spec_document() {
        let batch = sample_batch();
        let mut out = Vec::new();
        encode_json(&mut out, &batch).expect("encodes");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.ends_with('\n'));
        assert_eq!(
            text.trim_end(),
            serde_json::to_string(&batch).expect("serializes")
        );
        let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(doc["metrics"][0]["name"], "api.latency.99percentile");
        assert_eq!(doc["metrics"][1]["kind"], "counter");
        assert_eq!(doc["service_checks"][0]["status"], 2);
        assert_eq!(doc["events"][0]["alert_type"], "info");
    }

    #[test]
    fn json_of_an_empty_batch_still_prints_the_object() {
        let mut out = Vec::new();
        encode_json(&mut out, &FlushBatch::default()).expect("encodes");
        assert_eq!(
            out,
            b"{\"metrics\":[],\"service_checks\":[],\"events\":[]}\n"
        );
    }

    #[test]
    fn table_aligns_columns() {
        let text = table(&sample_batch());
        let expected = "\
flush at 2025-11-22T01:30:00Z (1763775000): 2 points, 1 service checks, 1 events
  name                      kind     value  tags               host
  api.latency.99percentile  gauge     12.5  env:prod,route:/x  web-1
  api.requests              counter     25  env:prod,route:/x  web-1
service checks:
  name   status    host   tags         message
  db.up  CRITICAL  web-1  service:api  connection refused
events:
  [info/normal] deploy  host=web-1 tags=-: v1.2
";
        assert_eq!(text, expected);
    }

    /// `sample_batch` plus what a flush adds of meterd's own: self-metrics, its checks and their
    /// `healthcheck.*` gauges.
    fn batch_with_own_state() -> FlushBatch {
        let mut batch = sample_batch();
        let own: Arc<[String]> = vec![
            "check:meterd.ingest".to_owned(),
            "service:meterd".to_owned(),
        ]
        .into();
        let point = |name: &str, value: f64, tags: &[&str]| Point {
            name: name.into(),
            kind: crate::point::PointKind::Counter,
            value,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            host: "web-1".into(),
            timestamp: 1_763_775_000,
            interval: 10,
        };
        batch.metrics.extend([
            point("meterd.lines.received", 1200.0, &[]),
            point("meterd.packets.received", 40.0, &[]),
            point("meterd.lines.invalid", 2.0, &["reason:bad_value"]),
            point("meterd.lines.invalid", 1.0, &["reason:bad_type"]),
            point("meterd.series.dropped", 3.0, &["reason:limit"]),
            point("meterd.udp.kernel_drops", 0.0, &[]),
            point("meterd.series.active", 5.0, &["kind:counter"]),
            point("meterd.series.active", 2.0, &["kind:timer"]),
            Point {
                tags: Arc::clone(&own),
                ..point("healthcheck.lines", 1200.0, &[])
            },
            // A user's check reporting a number: theirs, shown.
            point("healthcheck.queue_depth", 7.0, &["service:api"]),
        ]);
        let check = |name: &str, status: u8| ServiceCheck {
            name: name.into(),
            status,
            tags: vec!["service:meterd".into()],
            host: "web-1".into(),
            timestamp: 1_763_775_000,
            message: String::new(),
        };
        batch.service_checks.extend([
            check("meterd.ingest", 0),
            check("meterd.sink.console", 0),
            check("meterd.sink.http", 2),
            check("meterd.forward", 0),
        ]);
        batch
    }

    #[test]
    fn table_summarises_meterds_own_state_in_one_line() {
        let mut out = Vec::new();
        encode_table(
            &mut out,
            &batch_with_own_state(),
            1_763_775_000,
            SelfMetrics::Summary,
        )
        .expect("encodes");
        let text = String::from_utf8(out).expect("utf-8");
        let expected = "\
flush at 2025-11-22T01:30:00Z (1763775000): 3 points, 1 service checks, 1 events
  name                      kind     value  tags               host
  api.latency.99percentile  gauge     12.5  env:prod,route:/x  web-1
  api.requests              counter     25  env:prod,route:/x  web-1
  healthcheck.queue_depth   counter      7  service:api        web-1
service checks:
  name   status    host   tags         message
  db.up  CRITICAL  web-1  service:api  connection refused
events:
  [info/normal] deploy  host=web-1 tags=-: v1.2
meterd: 1200 lines in 40 packets, 3 invalid, 3 dropped, 0 kernel drops; 7 series; sinks: 1 OK, 1 failing (http); forward: OK
";
        assert_eq!(text, expected);
    }

    #[test]
    fn table_in_full_shows_every_row() {
        let batch = batch_with_own_state();
        let mut out = Vec::new();
        encode_table(&mut out, &batch, 1_763_775_000, SelfMetrics::Full).expect("encodes");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.starts_with(&format!(
            "flush at 2025-11-22T01:30:00Z (1763775000): {} points, {} service checks, 1 events\n",
            batch.metrics.len(),
            batch.service_checks.len()
        )));
        assert!(text.contains("  meterd.lines.received "), "{text}");
        assert!(text.contains("  meterd.sink.http "), "{text}");
        assert!(!text.contains("meterd: "), "{text}");
    }

    #[test]
    fn table_of_an_empty_batch_is_one_line() {
        let text = table(&FlushBatch::default());
        assert_eq!(
            text,
            "flush at 2025-11-22T01:30:00Z (1763775000): 0 points, 0 service checks, 0 events\n"
        );
    }

    #[test]
    fn table_keeps_free_text_on_one_line() {
        let mut batch = sample_batch();
        batch.service_checks[0].message = "line one\nline two".into();
        batch.events[0].text = "a\nb".into();
        batch.metrics[0].host = "".into();
        let text = table(&batch);
        assert!(text.contains("line one\\nline two"), "{text}");
        assert!(text.contains(": a\\nb\n"), "{text}");
        assert_eq!(text.lines().count(), 9);
        assert!(text.contains("env:prod,route:/x  -\n"), "{text}");
    }

    #[test]
    fn rfc3339_dates() {
        let render = |t| {
            let mut out = Vec::new();
            write_rfc3339(&mut out, t).expect("writes");
            String::from_utf8(out).expect("utf-8")
        };
        assert_eq!(render(0), "1970-01-01T00:00:00Z");
        assert_eq!(render(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(render(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(render(-1), "1969-12-31T23:59:59Z");
    }

    #[tokio::test]
    async fn send_without_a_batch_is_a_no_op() {
        let mut sink = ConsoleSink::new(
            ConsoleSettings {
                format: ConsoleFormat::Json,
                self_metrics: SelfMetrics::Summary,
            },
            Duration::from_secs(1),
        );
        sink.send().await.expect("nothing to write");
        assert_eq!(sink.delivered(), 0);
    }
}
