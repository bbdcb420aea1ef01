//! Local → global aggregation (`docs/fleet.md`).
//!
//! A local (an instance with `[forward] addresses`) splits each flush by the scope rules in
//! [`crate::flush`]: what a global must merge goes to [`client::Forwarder`], which routes every
//! series to one global by rendezvous hashing, encodes it as [`proto::ForwardBatch`] and POSTs it
//! to `/import`. A global decodes and validates a whole body in [`import`], checks its identity
//! against the [`ledger`] of imports it merged (a retry is answered, not merged again), and only
//! then merges it into its aggregator, so its flush emits one fleet-wide series per key.

pub mod client;
pub mod import;
pub mod ledger;
pub mod proto;

use crate::aggregate::histogram::{HistogramParts, HistogramState};
use crate::aggregate::key::{encode_key_parts, KeyParts, Scope};
use crate::aggregate::set::SetSketch;
use crate::aggregate::State;
use crate::protocol::MetricType;
use proto::{HistogramStateProto, SeriesState, SetSketchState};

/// Encodes one series for forwarding; `None` if its key does not decode (never for our keys).
pub fn encode_series(key: &[u8], state: &State) -> Option<SeriesState> {
    let parts = KeyParts::decode(key)?;
    let mut s = SeriesState {
        name: parts.name.to_owned(),
        kind: parts.kind.index() as u32,
        scope: u32::from(parts.scope.as_byte()),
        host: parts.host.map(str::to_owned),
        tags: parts.tags().map(str::to_owned).collect(),
        timestamp: parts.timestamp,
        ..SeriesState::default()
    };
    match state {
        State::Counter(v) | State::Gauge(v) => s.value = Some(*v),
        State::Set(sketch) => s.set = Some(encode_set(sketch)?),
        State::Histogram(h) => {
            let p = h.to_parts();
            s.histogram = Some(HistogramStateProto {
                count: p.count,
                sum: p.sum,
                min: p.min,
                max: p.max,
                recip_sum: p.recip_sum,
                raw_values: p.raw_values,
                raw_weights: p.raw_weights,
                pos_buckets: p.pos_buckets,
                pos_counts: p.pos_counts,
                neg_buckets: p.neg_buckets,
                neg_counts: p.neg_counts,
                zeros: p.zeros,
            });
        }
    }
    Some(s)
}

fn encode_set(sketch: &SetSketch) -> Option<SetSketchState> {
    let (data, words) = sketch.to_wire();
    Some(SetSketchState {
        data,
        has_words: words.is_some(),
        words: words.unwrap_or_default(),
    })
}

fn decode_set(s: &SetSketchState) -> Result<SetSketch, String> {
    let words = s.has_words.then_some(s.words.as_slice());
    SetSketch::from_wire(s.data, words).map_err(|e| format!("bad set sketch: {e}"))
}

/// Names and tags are refused for the bytes the statsd parser refuses (ASCII control
/// characters), so every series a local forwards is one a global accepts.
fn valid_text(s: &str) -> bool {
    !s.bytes().any(|b| b.is_ascii_control())
}

/// Validates a forwarded series and turns it into the key and state a global merges. The key
/// gets the imported scope (what the global emits) and an explicit host (empty unless the
/// series had one: fleet-wide points carry no host).
pub fn decode_series(s: &SeriesState) -> Result<(Box<[u8]>, State), String> {
    if s.name.is_empty() || !valid_text(&s.name) {
        return Err(format!(
            "series name {:?} is empty or has control characters",
            s.name
        ));
    }
    let kind = u8::try_from(s.kind)
        .ok()
        .and_then(MetricType::from_index)
        .ok_or_else(|| format!("{}: unknown kind {}", s.name, s.kind))?;
    let local_scope = u8::try_from(s.scope)
        .map(Scope::from_byte)
        .unwrap_or(Scope::Default);
    let scope = match (kind, local_scope) {
        (MetricType::Timer | MetricType::Histogram, Scope::Default) => Scope::ImportedPercentiles,
        _ => Scope::ImportedAll,
    };
    if let Some(h) = &s.host {
        if !valid_text(h) {
            return Err(format!("{}: host has control characters", s.name));
        }
    }
    let mut tags = s.tags.clone();
    if tags.iter().any(|t| t.is_empty() || !valid_text(t)) {
        return Err(format!(
            "{}: empty tag or control characters in a tag",
            s.name
        ));
    }
    tags.sort_unstable();
    tags.dedup();
    let state = match kind {
        MetricType::Counter | MetricType::Gauge => {
            let v = s
                .value
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("{}: missing or non-finite value", s.name))?;
            if kind == MetricType::Counter {
                State::Counter(v)
            } else {
                State::Gauge(v)
            }
        }
        MetricType::Set => State::Set(decode_set(
            s.set
                .as_ref()
                .ok_or_else(|| format!("{}: missing set sketch", s.name))?,
        )?),
        MetricType::Timer | MetricType::Histogram | MetricType::Distribution => {
            let p = s
                .histogram
                .as_ref()
                .ok_or_else(|| format!("{}: missing histogram", s.name))?;
            let parts = HistogramParts {
                count: p.count,
                sum: p.sum,
                min: p.min,
                max: p.max,
                recip_sum: p.recip_sum,
                raw_values: p.raw_values.clone(),
                raw_weights: p.raw_weights.clone(),
                pos_buckets: p.pos_buckets.clone(),
                pos_counts: p.pos_counts.clone(),
                neg_buckets: p.neg_buckets.clone(),
                neg_counts: p.neg_counts.clone(),
                zeros: p.zeros,
            };
            State::Histogram(Box::new(
                HistogramState::from_parts(&parts).map_err(|e| format!("{}: {e}", s.name))?,
            ))
        }
    };
    let timestamp = match kind {
        MetricType::Counter | MetricType::Gauge => s.timestamp.filter(|t| *t > 0),
        _ => None,
    };
    let mut key = Vec::with_capacity(64);
    encode_key_parts(
        &mut key,
        kind,
        scope,
        timestamp,
        &s.name,
        Some(s.host.as_deref().unwrap_or("")),
        &tags,
    );
    Ok((key.into_boxed_slice(), state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::set::hash_member;

    fn key(kind: MetricType, scope: Scope, host: Option<&str>) -> Vec<u8> {
        let mut k = Vec::new();
        encode_key_parts(
            &mut k,
            kind,
            scope,
            None,
            "api.latency",
            host,
            &["env:prod".to_owned()],
        );
        k
    }

    #[test]
    fn histogram_round_trip_gets_imported_scope_and_fleet_host() {
        let mut h = HistogramState::new(1.0, 1.0);
        for i in 0..200 {
            h.record(i as f64, 1.0);
        }
        let s = encode_series(
            &key(MetricType::Timer, Scope::Default, None),
            &State::Histogram(Box::new(h)),
        )
        .unwrap();
        let (k, state) = decode_series(&s).unwrap();
        let p = KeyParts::decode(&k).unwrap();
        assert_eq!(p.scope, Scope::ImportedPercentiles);
        assert_eq!(p.host, Some(""));
        assert_eq!(p.tags().collect::<Vec<_>>(), ["env:prod"]);
        let State::Histogram(h) = state else { panic!() };
        assert_eq!(h.count, 201.0);
        assert_eq!((h.min, h.max), (0.0, 199.0));
    }

    #[test]
    fn global_only_and_explicit_host_kept() {
        let s = encode_series(
            &key(MetricType::Counter, Scope::GlobalOnly, Some("db-1")),
            &State::Counter(5.0),
        )
        .unwrap();
        let (k, state) = decode_series(&s).unwrap();
        let p = KeyParts::decode(&k).unwrap();
        assert_eq!(p.scope, Scope::ImportedAll);
        assert_eq!(p.host, Some("db-1"));
        assert!(matches!(state, State::Counter(v) if v == 5.0));
    }

    /// Ingests `datagram` as a local that forwards, renders, and decodes every forwarded series
    /// as a global would (what the `ingest_datagram` fuzz target checks).
    fn forwarded_series_all_accepted(datagram: &[u8]) -> usize {
        use crate::aggregate::{Aggregator, AggregatorConfig, GaugeDeltas, Ingestor, Limits};
        use std::sync::Arc;
        let aggregator = Arc::new(Aggregator::new(AggregatorConfig {
            shards: 4,
            limits: Limits::default(),
            gauge_deltas: GaugeDeltas::Dogstatsd,
            hostname: Arc::from("local"),
            gauge_memory_flushes: 360,
        }));
        let mut ingestor = Ingestor::new(aggregator.clone());
        crate::ingest::ingest_datagram(&mut ingestor, datagram, false);
        ingestor.commit();
        let mut config = crate::config::Config::default();
        config.forward.addresses = vec!["http://127.0.0.1:8127".to_owned()];
        let renderer = crate::flush::Renderer::new(config.validate("").unwrap().render_settings());
        let crate::flush::Rendered { batch, forward, .. } =
            renderer.render(aggregator.swap(), 1_763_775_000);
        for p in &batch.metrics {
            assert!(p.value.is_finite(), "non-finite point rendered: {p:?}");
        }
        for (_, s) in &forward {
            if let Err(e) = decode_series(s) {
                panic!("a global refuses {s:?}: {e}");
            }
        }
        forward.len()
    }

    #[test]
    fn fuzz_c1_control_tag_is_forwardable() {
        // fuzz/regressions/ingest_datagram-c1-control-tag.bin: the parser took U+0080 in a tag,
        // the import decoder refused it as a control character.
        assert_eq!(
            forwarded_series_all_accepted("t:1|d|#env:\u{80}".as_bytes()),
            1
        );
    }

    #[test]
    fn fuzz_histogram_top_bucket_is_forwardable() {
        // fuzz/regressions/ingest_datagram-histogram-top-bucket.bin: a saturated sample's HDR
        // bucket was sent as its highest value, above what a receiver accepts.
        let mut line = b"t:1e16".to_vec();
        for _ in 0..80 {
            line.extend_from_slice(b":1");
        }
        line.extend_from_slice(b"|d");
        assert_eq!(forwarded_series_all_accepted(&line), 1);
    }

    #[test]
    fn fuzz_recip_sum_nan_is_forwardable() {
        // fuzz/regressions/ingest_datagram-recip-sum-nan.bin: 1/0 + 1/-0 summed to NaN.
        assert_eq!(forwarded_series_all_accepted(b"t:0:-0|d"), 1);
        let mut h = HistogramState::new(0.0, 1.0);
        h.record(-0.0, 1.0);
        assert_eq!(h.hmean(), 0.0);
    }

    #[test]
    fn fuzz_sum_overflow_is_forwardable() {
        // fuzz/regressions/ingest_datagram-sum-overflow.bin: the sum overflowed to +inf, which
        // the renderer drops but the import decoder refused the whole series for.
        assert_eq!(forwarded_series_all_accepted(b"t:1e308:1e308|d"), 1);
    }

    #[test]
    fn set_sketches_send_no_heap_address() {
        for n in [3u64, 5, 100, 5000] {
            let mut sk = SetSketch::new();
            for i in 0..n {
                sk.insert_hash(hash_member(&i.to_le_bytes()));
            }
            let s = encode_series(&key(MetricType::Set, Scope::Default, None), &State::Set(sk))
                .unwrap();
            let data = s.set.as_ref().unwrap().data;
            assert!(
                data <= 3,
                "n={n}: data word {data:#x} carries more than its tag"
            );
            let (_, state) = decode_series(&s).unwrap();
            let State::Set(back) = state else { panic!() };
            assert!(back.estimate() as u64 >= n * 9 / 10, "n={n}");
        }
    }

    #[test]
    fn sets_round_trip_small_and_large() {
        for n in [1u64, 2, 3, 5, 7, 50, 127, 128, 129, 5000] {
            let mut sk = SetSketch::new();
            for i in 0..n {
                sk.insert_hash(hash_member(&i.to_le_bytes()));
            }
            let est = sk.estimate();
            let s = encode_series(&key(MetricType::Set, Scope::Default, None), &State::Set(sk))
                .unwrap();
            let (_, state) = decode_series(&s).unwrap();
            let State::Set(back) = state else { panic!() };
            assert_eq!(back.estimate(), est, "n={n}");
        }
    }

    #[test]
    fn malformed_series_refused() {
        let good = encode_series(
            &key(MetricType::Gauge, Scope::Default, None),
            &State::Gauge(1.0),
        )
        .unwrap();
        let cases = [
            SeriesState {
                name: String::new(),
                ..good.clone()
            },
            SeriesState {
                name: "a\0b".into(),
                ..good.clone()
            },
            SeriesState {
                kind: 9,
                ..good.clone()
            },
            SeriesState {
                value: None,
                ..good.clone()
            },
            SeriesState {
                value: Some(f64::INFINITY),
                ..good.clone()
            },
            SeriesState {
                tags: vec!["".into()],
                ..good.clone()
            },
            SeriesState {
                kind: MetricType::Set.index() as u32,
                ..good.clone()
            },
            SeriesState {
                kind: MetricType::Set.index() as u32,
                set: Some(SetSketchState {
                    data: 1,
                    words: vec![1],
                    has_words: true,
                }),
                ..good.clone()
            },
            SeriesState {
                kind: MetricType::Timer.index() as u32,
                ..good.clone()
            },
        ];
        for c in cases {
            assert!(decode_series(&c).is_err(), "{c:?}");
        }
    }
}
