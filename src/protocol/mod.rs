//! Pure, sans-I/O parsing of one statsd/DogStatsD line (`docs/protocol.md`).
//!
//! Transports in [`crate::ingest`] frame datagrams and TCP streams into lines; this module turns
//! one `&[u8]` line into a [`Line`] that borrows from it. Nothing here allocates for metric lines:
//! tags and values are collected into inline [`SmallVec`]s. Events and service checks are rare and
//! carry escaped text; the ingestor converts them to owned [`crate::point`] values.
//!
//! Errors are a small `Copy` enum whose [`ParseError::reason`] is the `reason:` tag of
//! `meterd.lines.invalid`.

mod event;
mod metric;
mod service_check;

pub use event::parse_event;
pub use metric::{parse_metric, parse_metric_into};
pub use service_check::parse_service_check;

use smallvec::SmallVec;

/// Tags of one line, as sent: unsorted, possibly repeated, empty tags already removed.
pub type RawTags<'a> = SmallVec<[&'a [u8]; 8]>;

/// The statsd metric types meterd understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// `c`: summed over the interval, weighted by 1 ÷ sample rate.
    Counter,
    /// `g`: last value wins; `+N` (and `-N` in etsy mode) adjusts the last value.
    Gauge,
    /// `s`: number of distinct members.
    Set,
    /// `ms`: distribution of values.
    Timer,
    /// `h`: as `ms`.
    Histogram,
    /// `d`: as `h`, aggregated globally.
    Distribution,
}

impl MetricType {
    /// Every type, in a stable order (used to index per-type tables).
    pub const ALL: [MetricType; 6] = [
        MetricType::Counter,
        MetricType::Gauge,
        MetricType::Set,
        MetricType::Timer,
        MetricType::Histogram,
        MetricType::Distribution,
    ];

    /// The wire form of the type (`c`, `g`, `s`, `ms`, `h`, `d`).
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "c",
            MetricType::Gauge => "g",
            MetricType::Set => "s",
            MetricType::Timer => "ms",
            MetricType::Histogram => "h",
            MetricType::Distribution => "d",
        }
    }

    /// A stable small index (0..6), the position in [`MetricType::ALL`].
    pub const fn index(self) -> usize {
        match self {
            MetricType::Counter => 0,
            MetricType::Gauge => 1,
            MetricType::Set => 2,
            MetricType::Timer => 3,
            MetricType::Histogram => 4,
            MetricType::Distribution => 5,
        }
    }

    /// Inverse of [`MetricType::index`].
    pub const fn from_index(i: u8) -> Option<MetricType> {
        match i {
            0 => Some(MetricType::Counter),
            1 => Some(MetricType::Gauge),
            2 => Some(MetricType::Set),
            3 => Some(MetricType::Timer),
            4 => Some(MetricType::Histogram),
            5 => Some(MetricType::Distribution),
            _ => None,
        }
    }

    /// Timers, histograms and distributions: the types aggregated into a histogram.
    pub const fn is_histogram(self) -> bool {
        matches!(
            self,
            MetricType::Timer | MetricType::Histogram | MetricType::Distribution
        )
    }
}

/// One numeric value of a metric line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Value {
    /// The parsed, finite value (sign included).
    pub value: f64,
    /// Whether the text started with an explicit `+` or `-`: gauges treat `+N` (and, in etsy
    /// mode, `-N`) as a delta.
    pub signed: bool,
}

/// A parsed metric line, borrowing from the received bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricLine<'a> {
    /// The metric name: non-empty, valid UTF-8, no control characters.
    pub name: &'a [u8],
    /// The type section.
    pub kind: MetricType,
    /// The values (one or more, `a:1:2:3|h`). Empty for sets: see [`MetricLine::set_member`].
    pub values: SmallVec<[Value; 4]>,
    /// For sets: the member, everything between the first `:` and the first `|` (never split).
    pub set_member: &'a [u8],
    /// `@rate`, 0 < rate ≤ 1; 1.0 when absent.
    pub sample_rate: f64,
    /// `1 ÷ sample_rate`, the weight of each value: computed where the parser reads a rate (1.0
    /// when absent), so the common line without one costs no division (the division's latency
    /// was the reader's costliest wait in `push_metric`, `perf annotate`).
    pub weight: f64,
    /// Tags from every `#` section, in the order sent, empty entries removed.
    pub tags: RawTags<'a>,
    /// `|c:ID`, the container id (becomes the tag `container_id:ID`).
    pub container_id: Option<&'a [u8]>,
    /// `|T` unix seconds, a positive integer.
    pub timestamp: Option<u64>,
    /// The container id of the line's sender, when its transport knows it (origin detection);
    /// not part of the line, so never set or reset by the parser: the ingestor uses it for a
    /// line without `|c:ID`, and for events and service checks.
    pub origin: Option<&'a [u8]>,
}

impl MetricLine<'_> {
    /// An empty line (no name, a counter without values), to be filled by [`parse_metric_into`]
    /// or [`parse_line_into`].
    pub fn new() -> Self {
        MetricLine {
            name: &[],
            kind: MetricType::Counter,
            values: SmallVec::new(),
            set_member: &[],
            sample_rate: 1.0,
            weight: 1.0,
            tags: RawTags::new(),
            container_id: None,
            timestamp: None,
            origin: None,
        }
    }
}

impl Default for MetricLine<'_> {
    fn default() -> Self {
        Self::new()
    }
}

/// Alert type of an event (`t:`), unknown values fall back to `info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlertType {
    /// `info`, the default.
    #[default]
    Info,
    /// `warning`.
    Warning,
    /// `error`.
    Error,
    /// `success`.
    Success,
}

impl AlertType {
    /// The wire and JSON form.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertType::Info => "info",
            AlertType::Warning => "warning",
            AlertType::Error => "error",
            AlertType::Success => "success",
        }
    }
}

/// Priority of an event (`p:`), unknown values fall back to `normal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// `normal`, the default.
    #[default]
    Normal,
    /// `low`.
    Low,
}

impl Priority {
    /// The wire and JSON form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// A parsed event line `_e{title_len,text_len}:title|text|...`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventLine<'a> {
    /// Non-empty title, exactly `title_len` UTF-8 bytes.
    pub title: &'a str,
    /// Text as sent (`\n` escapes not yet replaced), exactly `text_len` bytes; may be empty.
    pub text: &'a str,
    /// `d:` unix seconds.
    pub timestamp: Option<i64>,
    /// `h:` host.
    pub host: Option<&'a str>,
    /// `k:` aggregation key.
    pub aggregation_key: Option<&'a str>,
    /// `p:` priority.
    pub priority: Priority,
    /// `s:` source type name.
    pub source_type: Option<&'a str>,
    /// `t:` alert type.
    pub alert_type: AlertType,
    /// Tags from every `#` section, empty entries removed.
    pub tags: SmallVec<[&'a str; 8]>,
}

/// A parsed service check line `_sc|name|status|...`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceCheckLine<'a> {
    /// Non-empty check name.
    pub name: &'a str,
    /// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    pub status: u8,
    /// `d:` unix seconds.
    pub timestamp: Option<i64>,
    /// `h:` host.
    pub host: Option<&'a str>,
    /// Tags from every `#` section, empty entries removed.
    pub tags: SmallVec<[&'a str; 8]>,
    /// `m:` message as sent (`\n` and `m\:` escapes not yet replaced); always the last section.
    pub message: Option<&'a str>,
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub enum Line<'a> {
    /// A metric sample line.
    Metric(MetricLine<'a>),
    /// An `_e{..}` event.
    Event(EventLine<'a>),
    /// An `_sc|` service check.
    ServiceCheck(ServiceCheckLine<'a>),
}

/// What [`parse_line_into`] found: a metric (written into the caller's [`MetricLine`]), or an
/// event or service check (returned; they are rare).
#[derive(Debug, Clone, PartialEq)]
pub enum ParsedLine<'a> {
    /// A metric sample line, now in the [`MetricLine`] passed in.
    Metric,
    /// An `_e{..}` event.
    Event(EventLine<'a>),
    /// An `_sc|` service check.
    ServiceCheck(ServiceCheckLine<'a>),
}

/// Why a line was refused; [`ParseError::reason`] is the `reason:` tag on `meterd.lines.invalid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ParseError {
    /// Empty name, control characters or invalid UTF-8 in the name, or no `:` before the first `|`.
    #[error("bad metric name")]
    BadName,
    /// A value that is not a finite number (or an empty set member / value).
    #[error("bad value")]
    BadValue,
    /// Missing or unknown type section.
    #[error("bad metric type")]
    BadType,
    /// `@rate` not a number in (0, 1], or repeated.
    #[error("bad sample rate")]
    BadSampleRate,
    /// Tags with invalid UTF-8 or control characters, or a repeated `c:` section.
    #[error("bad tags")]
    BadTags,
    /// `|T` not a positive integer, or repeated.
    #[error("bad timestamp")]
    BadTimestamp,
    /// A malformed `_e{..}` event.
    #[error("bad event")]
    BadEvent,
    /// A malformed `_sc|` service check.
    #[error("bad service check")]
    BadServiceCheck,
    /// Invalid UTF-8 in a part that must be text (other than name and tags).
    #[error("not valid utf-8")]
    NotUtf8,
    /// A line longer than the configured maximum (TCP).
    #[error("line too long")]
    TooLong,
    /// A line cut by the datagram size limit.
    #[error("line truncated")]
    Truncated,
}

impl ParseError {
    /// Every reason, in a stable order (used to index per-reason counters).
    pub const ALL: [ParseError; 11] = [
        ParseError::BadName,
        ParseError::BadValue,
        ParseError::BadType,
        ParseError::BadSampleRate,
        ParseError::BadTags,
        ParseError::BadTimestamp,
        ParseError::BadEvent,
        ParseError::BadServiceCheck,
        ParseError::NotUtf8,
        ParseError::TooLong,
        ParseError::Truncated,
    ];

    /// The stable `reason:` tag value.
    pub const fn reason(self) -> &'static str {
        match self {
            ParseError::BadName => "bad_name",
            ParseError::BadValue => "bad_value",
            ParseError::BadType => "bad_type",
            ParseError::BadSampleRate => "bad_sample_rate",
            ParseError::BadTags => "bad_tags",
            ParseError::BadTimestamp => "bad_timestamp",
            ParseError::BadEvent => "bad_event",
            ParseError::BadServiceCheck => "bad_service_check",
            ParseError::NotUtf8 => "not_utf8",
            ParseError::TooLong => "too_long",
            ParseError::Truncated => "truncated",
        }
    }

    /// Position in [`ParseError::ALL`].
    pub const fn index(self) -> usize {
        match self {
            ParseError::BadName => 0,
            ParseError::BadValue => 1,
            ParseError::BadType => 2,
            ParseError::BadSampleRate => 3,
            ParseError::BadTags => 4,
            ParseError::BadTimestamp => 5,
            ParseError::BadEvent => 6,
            ParseError::BadServiceCheck => 7,
            ParseError::NotUtf8 => 8,
            ParseError::TooLong => 9,
            ParseError::Truncated => 10,
        }
    }
}

/// Parses one line (without its `\n`; a trailing `\r` is tolerated) into a [`Line`].
///
/// Lines starting with `_e{` are events, `_sc|` service checks, anything else a metric. The
/// ingest path uses [`parse_line_into`], which does not move a [`MetricLine`] per line.
pub fn parse_line(line: &[u8]) -> Result<Line<'_>, ParseError> {
    let mut metric = MetricLine::new();
    Ok(match parse_line_into(line, &mut metric)? {
        ParsedLine::Metric => Line::Metric(metric),
        ParsedLine::Event(e) => Line::Event(e),
        ParsedLine::ServiceCheck(sc) => Line::ServiceCheck(sc),
    })
}

/// As [`parse_line`], but a metric line is parsed into `metric` (see [`parse_metric_into`]),
/// so one [`MetricLine`] serves every line of a datagram.
///
/// # Errors
///
/// As [`parse_metric_into`], [`parse_event`] and [`parse_service_check`]. After an error, or
/// when the line was not a metric, the contents of `metric` are unspecified.
#[inline]
pub fn parse_line_into<'a>(
    line: &'a [u8],
    metric: &mut MetricLine<'a>,
) -> Result<ParsedLine<'a>, ParseError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let [b'_', b'e', b'{', ..] = line {
        parse_event(line).map(ParsedLine::Event)
    } else if let [b'_', b's', b'c', b'|', ..] = line {
        parse_service_check(line).map(ParsedLine::ServiceCheck)
    } else {
        parse_metric_into(line, metric).map(|()| ParsedLine::Metric)
    }
}

/// Replaces the two-byte escape `\n` with a newline (event text, service-check messages).
pub fn unescape_newlines(s: &str) -> String {
    s.replace("\\n", "\n")
}
