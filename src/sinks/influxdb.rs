//! The `influxdb` sink: InfluxDB line protocol to InfluxDB 1.x (`/write?db=`), 2.x
//! (`/api/v2/write`, token, org, bucket), or anything speaking it (VictoriaMetrics).
//!
//! One line per point (`docs/sinks.md#formats-per-sink`): measurement = the point's name, tags =
//! its tags (bare `k` as `k=true`, empty values skipped) plus `host`, sorted by key, one float
//! field `value`, timestamp in seconds. Counters are per-interval totals, as in the JSON document.
//! Lines are split over requests of at most `batch_max_bytes` (uncompressed), optionally gzipped.
//! Service checks and events are not sent.
//!
//! Escaping follows the line protocol reference: in measurements `,` and space get a backslash;
//! in tag keys and values `,`, `=` and space. Other backslashes are written as they are (InfluxDB
//! 1.x would store an escaped `\\` as two), except one right before a character that gets escaped,
//! which is doubled so that it cannot swallow the separator (VictoriaMetrics reads it back
//! exactly; InfluxDB 1.x keeps the doubled backslash). Trailing backslashes are dropped: InfluxDB
//! 1.x cannot parse them in any form. Newlines cannot appear in line protocol: `\n`, `\r` and tab
//! are written as `\n`, `\r`, `\t`. Checked against InfluxDB 1.6 and VictoriaMetrics 1.79.

use std::time::Duration;

use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::config::SinkCommon;
use super::transport::{
    check_batch_max_bytes, content_headers, sensitive_header, BaseUrl, BodyEncoding,
    EncodeRequests, Outbox, Poster,
};
use super::{write_number, Compression, Secret, SinkConfigError, SinkError};
use crate::point::{FlushBatch, Point};

/// Default server base.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8086";

/// Default InfluxDB 1.x database.
pub const DEFAULT_DATABASE: &str = "meterd";

/// Default `batch_max_bytes`: 1 MiB of line protocol per request (InfluxDB suggests batches of
/// about 5000 lines).
pub const DEFAULT_BATCH_MAX_BYTES: usize = 1 << 20;

/// `[[sinks]] type = "influxdb"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InfluxdbConfig {
    /// The keys every sink takes (`name`, `timeout`, `max_retries`, the filter's).
    #[serde(skip)]
    pub common: SinkCommon,
    /// Server base (default `http://127.0.0.1:8086`); meterd appends `/write` or
    /// `/api/v2/write`. May be `"${ENV}"`.
    pub url: String,
    /// 1 (default) or 2: which write API.
    pub version: u8,
    /// Version 1: the database (default `meterd`; it must exist).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Version 1: user name for HTTP basic authentication (with `password`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<Secret>,
    /// Version 1: password, usually `"${INFLUX_PASSWORD}"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// Version 2: organisation name or ID (InfluxDB OSS needs it; Cloud does not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// Version 2: the bucket (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Version 2: API token, sent as `Authorization: Token …`; usually `"${INFLUX_TOKEN}"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Body compression (default `none`).
    pub compression: Compression,
    /// Uncompressed bytes of line protocol per request (default 1048576).
    pub batch_max_bytes: usize,
}

impl Default for InfluxdbConfig {
    fn default() -> Self {
        InfluxdbConfig {
            common: SinkCommon::default(),
            url: DEFAULT_URL.to_owned(),
            version: 1,
            database: None,
            username: None,
            password: None,
            org: None,
            bucket: None,
            token: None,
            compression: Compression::None,
            batch_max_bytes: DEFAULT_BATCH_MAX_BYTES,
        }
    }
}

/// The validated settings.
pub(super) struct InfluxdbSettings {
    url: Url,
    headers: HeaderMap,
    gzip: bool,
    batch_max_bytes: usize,
}

/// Standard base64 with padding (RFC 4648), for the basic authentication header.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = (n >> (18 - 6 * i)) & 0x3f;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(super) fn validate(
    config: &InfluxdbConfig,
    key: &impl Fn(&str) -> String,
) -> Result<InfluxdbSettings, SinkConfigError> {
    let base = BaseUrl::parse(&config.url, "a server base", key("url"))?;
    let gzip = config.compression == Compression::Gzip;
    let mut headers = content_headers("text/plain; charset=utf-8", gzip);
    let not_for = |k: &str, set: bool, version: u8| {
        if set {
            Err(SinkConfigError::new(
                key(k),
                format!("is not used with version = {version}"),
            ))
        } else {
            Ok(())
        }
    };
    let url = match config.version {
        1 => {
            not_for("org", config.org.is_some(), 1)?;
            not_for("bucket", config.bucket.is_some(), 1)?;
            not_for("token", config.token.is_some(), 1)?;
            let database = config.database.as_deref().unwrap_or(DEFAULT_DATABASE);
            if database.is_empty() {
                return Err(SinkConfigError::new(key("database"), "must not be empty"));
            }
            match (&config.username, &config.password) {
                (Some(user), Some(password)) => {
                    let user = user.resolve(|| key("username"))?;
                    let password = password.resolve(|| key("password"))?;
                    let credentials = base64(format!("{user}:{password}").as_bytes());
                    headers.insert(
                        AUTHORIZATION,
                        sensitive_header(&format!("Basic {credentials}"), || key("username"))?,
                    );
                }
                (None, None) => {}
                (Some(_), None) => return Err(SinkConfigError::new(key("password"), "missing")),
                (None, Some(_)) => return Err(SinkConfigError::new(key("username"), "missing")),
            }
            let mut url = base.join("/write")?;
            url.query_pairs_mut()
                .append_pair("db", database)
                .append_pair("precision", "s");
            url
        }
        2 => {
            not_for("database", config.database.is_some(), 2)?;
            not_for("username", config.username.is_some(), 2)?;
            not_for("password", config.password.is_some(), 2)?;
            let bucket = config
                .bucket
                .as_deref()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| SinkConfigError::new(key("bucket"), "missing"))?;
            if let Some(token) = &config.token {
                let token = token.resolve(|| key("token"))?;
                headers.insert(
                    AUTHORIZATION,
                    sensitive_header(&format!("Token {token}"), || key("token"))?,
                );
            }
            let mut url = base.join("/api/v2/write")?;
            {
                let mut query = url.query_pairs_mut();
                if let Some(org) = config.org.as_deref().filter(|o| !o.is_empty()) {
                    query.append_pair("org", org);
                }
                query
                    .append_pair("bucket", bucket)
                    .append_pair("precision", "s");
            }
            url
        }
        other => {
            return Err(SinkConfigError::new(
                key("version"),
                format!("must be 1 or 2, not {other}"),
            ))
        }
    };
    Ok(InfluxdbSettings {
        url,
        headers,
        gzip,
        batch_max_bytes: check_batch_max_bytes(config.batch_max_bytes, key)?,
    })
}

/// Appends `s` escaped (see the module docs): trailing backslashes dropped, `specials` and a
/// backslash before one of them get a backslash, `\n`, `\r` and tab become `\n`, `\r`, `\t`.
fn escape_into(out: &mut Vec<u8>, s: &str, specials: &[u8]) {
    let bytes = s.trim_end_matches('\\').as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\\' if bytes.get(i + 1).is_some_and(|next| specials.contains(next)) => {
                out.extend_from_slice(b"\\\\");
            }
            _ if specials.contains(&b) => {
                out.push(b'\\');
                out.push(b);
            }
            _ => out.push(b),
        }
    }
}

/// A measurement: `,` and space escaped.
fn escape_measurement(out: &mut Vec<u8>, s: &str) {
    escape_into(out, s, b", ");
}

/// A tag key or value: `,`, `=` and space escaped.
fn escape_tag(out: &mut Vec<u8>, s: &str) {
    escape_into(out, s, b",= ");
}

/// The tag pairs of a point, sorted by key (as InfluxDB recommends); for a key given twice the
/// later tag wins, and `host` wins over a tag.
fn tag_pairs<'a>(point: &'a Point, pairs: &mut Vec<(&'a str, &'a str)>) {
    pairs.clear();
    for tag in point.tags.iter() {
        let (k, v) = tag.split_once(':').unwrap_or((tag.as_str(), "true"));
        // What escaping would leave of them (trailing backslashes go).
        let (k, v) = (k.trim_end_matches('\\'), v.trim_end_matches('\\'));
        if !k.is_empty() && !v.is_empty() {
            pairs.push((k, v));
        }
    }
    if !point.host.is_empty() {
        pairs.push(("host", &point.host));
    }
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    // Keep the last of equal keys.
    let mut write = 0;
    for read in 0..pairs.len() {
        if write > 0 && pairs.get(write - 1).map(|p| p.0) == pairs.get(read).map(|p| p.0) {
            write -= 1;
        }
        pairs.swap(write, read);
        write += 1;
    }
    pairs.truncate(write);
}

/// Appends one line (with its `\n`).
fn encode_line<'a>(out: &mut Vec<u8>, point: &'a Point, pairs: &mut Vec<(&'a str, &'a str)>) {
    escape_measurement(out, &point.name);
    tag_pairs(point, pairs);
    for (k, v) in pairs.iter() {
        out.push(b',');
        escape_tag(out, k);
        out.push(b'=');
        escape_tag(out, v);
    }
    out.extend_from_slice(b" value=");
    write_number(out, point.value);
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(point.timestamp).as_bytes());
    out.push(b'\n');
}

/// Encodes `points` into requests of at most `max_bytes` (a longer single line goes alone).
fn encode_lines(
    outbox: &mut Outbox,
    points: &[Point],
    max_bytes: usize,
    encoding: BodyEncoding,
) -> Result<(), SinkError> {
    outbox.clear();
    let mut line = Vec::with_capacity(256);
    let mut pairs = Vec::new();
    let mut items = 0u64;
    for point in points {
        line.clear();
        encode_line(&mut line, point, &mut pairs);
        if items > 0 && outbox.raw_len() + line.len() > max_bytes {
            outbox.push(0, items, encoding)?;
            items = 0;
        }
        if items == 0 {
            outbox.raw();
        }
        outbox.raw_mut().extend_from_slice(&line);
        items += 1;
    }
    if items > 0 {
        outbox.push(0, items, encoding)?;
    }
    Ok(())
}

/// How the `influxdb` sink encodes a batch: line protocol in requests of at most
/// `batch_max_bytes`.
pub(super) struct LineProtocol {
    gzip: bool,
    batch_max_bytes: usize,
}

/// Writes each flush's points as line protocol.
pub(super) type InfluxdbSink = Poster<LineProtocol>;

impl InfluxdbSink {
    pub(super) fn new(
        settings: InfluxdbSettings,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let encoder = LineProtocol {
            gzip: settings.gzip,
            batch_max_bytes: settings.batch_max_bytes,
        };
        Poster::build(encoder, [settings.url], settings.headers, timeout)
    }
}

impl EncodeRequests for LineProtocol {
    const METRICS_ONLY: bool = true;

    fn encode(&mut self, batch: &FlushBatch, outbox: &mut Outbox) -> Result<(), SinkError> {
        encode_lines(
            outbox,
            &batch.metrics,
            self.batch_max_bytes,
            BodyEncoding::gzip_if(self.gzip),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::point::PointKind;
    use crate::sinks::testing::{sample_batch, wait_for, Answer, CaptureServer};
    use crate::sinks::{SinkConfig, SinkSet};
    use reqwest::header::CONTENT_ENCODING;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    fn key(k: &str) -> String {
        format!("sinks[0].{k}")
    }

    fn point(name: &str, tags: &[&str], host: &str, value: f64) -> Point {
        Point {
            name: name.to_owned(),
            kind: PointKind::Gauge,
            value,
            tags: tags
                .iter()
                .map(|t| (*t).to_owned())
                .collect::<Vec<_>>()
                .into(),
            host: host.into(),
            timestamp: 1_763_775_000,
            interval: 10,
        }
    }

    fn line(p: &Point) -> String {
        let mut out = Vec::new();
        encode_line(&mut out, p, &mut Vec::new());
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn lines_for_the_sample_batch() {
        let batch = sample_batch();
        let mut outbox = Outbox::default();
        encode_lines(&mut outbox, &batch.metrics, 1 << 20, BodyEncoding::Plain).expect("encodes");
        let bodies: Vec<_> = outbox.bodies().collect();
        assert_eq!(bodies.len(), 1);
        assert_eq!(bodies[0].1, 2);
        assert_eq!(
            std::str::from_utf8(bodies[0].2).expect("utf-8"),
            "api.latency.99percentile,env=prod,host=web-1,route=/x value=12.5 1763775000\n\
             api.requests,env=prod,host=web-1,route=/x value=25 1763775000\n"
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(
            line(&point(
                "a b,c=d",
                &["k y:v,w", "k=z:x=y z", "bare"],
                "h 1",
                -1.5
            )),
            "a\\ b\\,c=d,bare=true,host=h\\ 1,k\\ y=v\\,w,k\\=z=x\\=y\\ z value=-1.5 1763775000\n"
        );
        // A lone backslash stays; one before an escaped character is doubled; trailing ones go.
        assert_eq!(
            line(&point(
                "back\\slash\\",
                &["t:ends\\", "u:a\\,b", "v:\\", "w:C:\\dir"],
                "",
                2.0
            )),
            "back\\slash,t=ends,u=a\\\\\\,b,w=C:\\dir value=2 1763775000\n"
        );
        assert_eq!(
            line(&point("a\\ b\\=c", &[], "", 2.0)),
            "a\\\\\\ b\\=c value=2 1763775000\n"
        );
        assert_eq!(
            line(&point("nl", &["t:a\nb\tc"], "", 0.25)),
            "nl,t=a\\nb\\tc value=0.25 1763775000\n"
        );
    }

    #[test]
    fn empty_values_are_skipped_and_duplicates_keep_the_last() {
        assert_eq!(
            line(&point("m", &[":v", "e:", "env:dev", "env:prod"], "", 1.0)),
            "m,env=prod value=1 1763775000\n"
        );
        assert_eq!(
            line(&point("m", &["host:tag"], "web-1", 1.0)),
            "m,host=web-1 value=1 1763775000\n"
        );
        assert_eq!(
            line(&point("m", &[], "", 1e20)),
            "m value=1e20 1763775000\n"
        );
    }

    #[test]
    fn lines_are_batched_by_size() {
        let points: Vec<Point> = (0..50)
            .map(|i| point(&format!("metric.{i:02}"), &["env:prod"], "web-1", 1.0))
            .collect();
        let one = line(&points[0]).len();
        let mut outbox = Outbox::default();
        encode_lines(&mut outbox, &points, one * 10, BodyEncoding::Plain).expect("encodes");
        let bodies: Vec<_> = outbox.bodies().collect();
        assert_eq!(bodies.len(), 5);
        assert!(bodies.iter().all(|b| b.1 == 10 && b.2.len() == one * 10));
        // A line longer than the limit goes alone.
        encode_lines(&mut outbox, &points[..3], one - 1, BodyEncoding::Plain).expect("encodes");
        assert_eq!(outbox.bodies().count(), 3);
    }

    #[test]
    fn v1_urls_and_basic_auth() {
        let mut c = InfluxdbConfig {
            url: "http://influx:8086/".into(),
            ..InfluxdbConfig::default()
        };
        let s = validate(&c, &key).expect("valid");
        assert_eq!(
            s.url.as_str(),
            "http://influx:8086/write?db=meterd&precision=s"
        );
        assert!(s.headers.get(AUTHORIZATION).is_none());
        c.database = Some("my db&x".into());
        c.username = Some(Secret::new("Aladdin"));
        c.password = Some(Secret::new("open sesame"));
        let s = validate(&c, &key).expect("valid");
        assert_eq!(
            s.url.as_str(),
            "http://influx:8086/write?db=my+db%26x&precision=s"
        );
        assert_eq!(
            s.headers[AUTHORIZATION],
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert!(s.headers[AUTHORIZATION].is_sensitive());
        c.password = None;
        assert_eq!(
            validate(&c, &key).err().expect("no password").key,
            "sinks[0].password"
        );
        c.username = None;
        c.token = Some(Secret::new("t"));
        assert_eq!(
            validate(&c, &key).err().expect("token").key,
            "sinks[0].token"
        );
    }

    #[test]
    fn v2_urls_and_token() {
        let mut c = InfluxdbConfig {
            version: 2,
            org: Some("acme".into()),
            bucket: Some("metrics".into()),
            token: Some(Secret::new("s3cr3t")),
            compression: Compression::Gzip,
            ..InfluxdbConfig::default()
        };
        let s = validate(&c, &key).expect("valid");
        assert_eq!(
            s.url.as_str(),
            "http://127.0.0.1:8086/api/v2/write?org=acme&bucket=metrics&precision=s"
        );
        assert_eq!(s.headers[AUTHORIZATION], "Token s3cr3t");
        assert_eq!(s.headers[CONTENT_ENCODING], "gzip");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        c.bucket = None;
        assert_eq!(
            validate(&c, &key).err().expect("bucket").key,
            "sinks[0].bucket"
        );
        c.bucket = Some("b".into());
        c.database = Some("d".into());
        assert_eq!(
            validate(&c, &key).err().expect("db").key,
            "sinks[0].database"
        );
        c.database = None;
        c.version = 3;
        assert_eq!(
            validate(&c, &key).err().expect("v3").key,
            "sinks[0].version"
        );
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input}");
        }
    }

    #[tokio::test]
    async fn posts_line_protocol() {
        let server = CaptureServer::start(Answer::Status(204)).await;
        let c = InfluxdbConfig {
            url: server.url.clone(),
            compression: Compression::Gzip,
            ..InfluxdbConfig::default()
        };
        let set =
            SinkSet::start(&[SinkConfig::Influxdb(c)], Duration::from_secs(2)).expect("starts");
        let (name, stats) = set.stats().remove(0);
        assert_eq!(name, "influxdb");
        set.submit(Arc::new(sample_batch()));
        wait_for(Duration::from_secs(3), "delivery", || {
            stats.sent.load(Ordering::Relaxed) == 2
        })
        .await;
        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert_eq!(r.path, "/write?db=meterd&precision=s");
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        assert!(r.key().ends_with("-0"), "{}", r.key());
        let text = String::from_utf8(r.decoded()).expect("utf-8");
        assert_eq!(text.lines().count(), 2);
        assert!(
            text.starts_with("api.latency.99percentile,env=prod,host=web-1,route=/x value=12.5 ")
        );
        set.shutdown(Duration::from_secs(1)).await;
    }
}
