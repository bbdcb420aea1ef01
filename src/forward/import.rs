//! The global side of `POST /import`: decompress (bounded), decode, validate every series and
//! health result, and only then merge — a bad body changes nothing.

use std::io::Read as _;

use prost::Message as _;

use super::decode_series;
use super::ledger::ImportId;
use super::proto::{ForwardBatch, VERSION};
use crate::aggregate::State;
use crate::health::{parse_result, HealthResult};

/// Why an import was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The body is not a valid forward batch (400).
    #[error("{0}")]
    Malformed(String),
    /// The body decompresses past the limit (413).
    #[error("decompressed body exceeds {0} bytes")]
    TooLarge(usize),
}

/// A validated import, ready to merge.
#[derive(Debug, Default)]
pub struct Import {
    /// Keys (imported scope) and states.
    pub series: Vec<(Box<[u8]>, State)>,
    /// Health results for the fleet view.
    pub health_results: Vec<HealthResult>,
    /// Per-SLO (name, good, total) of the sender's interval, added once the import is admitted.
    pub slo_counts: Vec<(String, f64, f64)>,
    /// The sending host.
    pub source: String,
    /// Its identity; `None` from a local that predates identities (merged without a check).
    pub id: Option<ImportId>,
}

/// Decodes a whole body. `gzip` says `Content-Encoding: gzip`; the decompressed size is bounded
/// by `max_decompressed`.
pub fn decode(
    body: &[u8],
    gzip: bool,
    max_decompressed: usize,
    now: i64,
) -> Result<Import, ImportError> {
    let raw;
    let bytes = if gzip {
        let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max_decompressed));
        let limit = u64::try_from(max_decompressed)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        flate2::read::GzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| ImportError::Malformed(format!("bad gzip body: {e}")))?;
        if out.len() > max_decompressed {
            return Err(ImportError::TooLarge(max_decompressed));
        }
        raw = out;
        &raw[..]
    } else {
        body
    };
    let batch = ForwardBatch::decode(bytes)
        .map_err(|e| ImportError::Malformed(format!("not a meterd forward batch: {e}")))?;
    if batch.version != VERSION {
        return Err(ImportError::Malformed(format!(
            "forward protocol version {} is not supported (this meterd speaks {VERSION})",
            batch.version
        )));
    }
    let id = identity(&batch)?;
    let mut series = Vec::with_capacity(batch.series.len());
    for (i, s) in batch.series.iter().enumerate() {
        series.push(
            decode_series(s).map_err(|e| ImportError::Malformed(format!("series[{i}]: {e}")))?,
        );
    }
    let mut health_results = Vec::with_capacity(batch.health_results.len());
    for (i, text) in batch.health_results.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ImportError::Malformed(format!("health_results[{i}]: {e}")))?;
        health_results.push(
            parse_result(&v, Some(i), now)
                .map_err(|e| ImportError::Malformed(format!("health_results{e}")))?,
        );
    }
    let mut slo_counts = Vec::with_capacity(batch.slo_counts.len());
    for (i, c) in batch.slo_counts.iter().enumerate() {
        let ok = |x: f64| x.is_finite() && x >= 0.0;
        if !(ok(c.good) && ok(c.total) && c.good <= c.total) {
            return Err(ImportError::Malformed(format!(
                "slo_counts[{i}]: good and total must be finite, at least 0, good <= total"
            )));
        }
        slo_counts.push((c.name.clone(), c.good, c.total));
    }
    Ok(Import {
        series,
        health_results,
        slo_counts,
        source: batch.source,
        id,
    })
}

/// The longest sender id accepted (ours are 16 hex digits).
const MAX_SENDER_LEN: usize = 64;

/// The batch's identity, checked: a sender of visible ASCII, intervals from 1, a part within its
/// count. A batch without a sender has none.
fn identity(batch: &ForwardBatch) -> Result<Option<ImportId>, ImportError> {
    if batch.sender.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| Err(ImportError::Malformed(format!("identity: {why}")));
    if batch.sender.len() > MAX_SENDER_LEN || !batch.sender.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("sender must be at most 64 visible ASCII characters");
    }
    if batch.interval == 0 {
        return bad("interval must be 1 or more");
    }
    if batch.part >= batch.parts {
        return bad("part must be below parts");
    }
    Ok(Some(ImportId {
        sender: batch.sender.clone(),
        interval: batch.interval,
        part: batch.part,
        window: batch.window,
        interval_len: std::time::Duration::from_millis(batch.interval_ms),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::proto::SeriesState;
    use std::io::Write as _;

    fn gz(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn counter(name: &str, v: f64) -> SeriesState {
        SeriesState {
            name: name.into(),
            kind: 0,
            scope: 1,
            value: Some(v),
            ..SeriesState::default()
        }
    }

    #[test]
    fn valid_batch_decodes() {
        let b = ForwardBatch {
            version: VERSION,
            source: "web-1".into(),
            series: vec![counter("a", 2.0)],
            ..ForwardBatch::default()
        };
        let imp = decode(&gz(&b.encode_to_vec()), true, 1 << 20, 0).unwrap();
        assert_eq!(imp.series.len(), 1);
        assert_eq!(imp.source, "web-1");
        assert_eq!(imp.id, None, "no sender: an old local");
    }

    #[test]
    fn identities_are_read_and_checked() {
        let b = ForwardBatch {
            version: VERSION,
            sender: "00ff00ff00ff00ff".into(),
            interval: 7,
            part: 1,
            parts: 2,
            window: 3,
            interval_ms: 10_000,
            ..ForwardBatch::default()
        };
        let imp = decode(&b.encode_to_vec(), false, 1 << 20, 0).unwrap();
        let id = imp.id.unwrap();
        assert_eq!((id.interval, id.part, id.window), (7, 1, 3));
        for bad in [
            ForwardBatch {
                part: 2,
                ..b.clone()
            },
            ForwardBatch {
                interval: 0,
                ..b.clone()
            },
            ForwardBatch {
                sender: "a b".into(),
                ..b.clone()
            },
            ForwardBatch {
                sender: "x".repeat(65),
                ..b.clone()
            },
        ] {
            let err = decode(&bad.encode_to_vec(), false, 1 << 20, 0).unwrap_err();
            assert!(err.to_string().starts_with("identity:"), "{err}");
        }
    }

    #[test]
    fn one_bad_series_refuses_the_whole_body() {
        let b = ForwardBatch {
            version: VERSION,
            source: String::new(),
            series: vec![counter("a", 1.0), counter("", 1.0)],
            ..ForwardBatch::default()
        };
        let err = decode(&b.encode_to_vec(), false, 1 << 20, 0).unwrap_err();
        assert!(err.to_string().starts_with("series[1]"), "{err}");
    }

    #[test]
    fn garbage_wrong_version_bad_health_and_bombs() {
        assert!(matches!(
            decode(b"\xff\xff\xff", false, 1 << 20, 0),
            Err(ImportError::Malformed(_))
        ));
        assert!(matches!(
            decode(b"not gzip", true, 1 << 20, 0),
            Err(ImportError::Malformed(_))
        ));
        let v2 = ForwardBatch {
            version: 2,
            ..ForwardBatch::default()
        };
        assert!(decode(&v2.encode_to_vec(), false, 1 << 20, 0)
            .unwrap_err()
            .to_string()
            .contains("version"));
        let h = ForwardBatch {
            version: VERSION,
            health_results: vec!["{\"id\": 1}".into()],
            ..ForwardBatch::default()
        };
        assert!(decode(&h.encode_to_vec(), false, 1 << 20, 0)
            .unwrap_err()
            .to_string()
            .contains("health_results[0].id"));
        let slo = |good: f64, total: f64| ForwardBatch {
            version: VERSION,
            slo_counts: vec![crate::forward::proto::SloCount {
                name: "api".into(),
                good,
                total,
            }],
            ..ForwardBatch::default()
        };
        let ok = decode(&slo(9.0, 10.0).encode_to_vec(), false, 1 << 20, 0).unwrap();
        assert_eq!(ok.slo_counts, [("api".to_owned(), 9.0, 10.0)]);
        for (good, total) in [
            (11.0, 10.0),
            (-1.0, 1.0),
            (f64::NAN, 1.0),
            (1.0, f64::INFINITY),
        ] {
            assert!(decode(&slo(good, total).encode_to_vec(), false, 1 << 20, 0)
                .unwrap_err()
                .to_string()
                .contains("slo_counts[0]"));
        }
        let bomb = gz(&vec![0u8; 1 << 20]);
        assert!(matches!(
            decode(&bomb, true, 1 << 16, 0),
            Err(ImportError::TooLarge(_))
        ));
    }
}
