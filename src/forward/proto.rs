//! meterd's own versioned protobuf for `POST /import` (`docs/fleet.md#forwarding-and-import`): the
//! mergeable state of the series a local forwards, plus the health results it received. Bodies are
//! gzip-compressed.
//!
//! Hand-written `prost` messages (no build script). Field numbers are the wire contract: add
//! fields, never renumber; bump [`VERSION`] for a change a global must refuse.

/// The protocol version a global accepts.
pub const VERSION: u32 = 1;

/// One forward request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ForwardBatch {
    /// [`VERSION`].
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// The local's hostname (for logs and metrics only; never part of a series' identity).
    #[prost(string, tag = "2")]
    pub source: String,
    /// Series states.
    #[prost(message, repeated, tag = "3")]
    pub series: Vec<SeriesState>,
    /// Health results as their JSON objects (the shape of `POST /api/v1/healthchecks`).
    #[prost(string, repeated, tag = "4")]
    pub health_results: Vec<String>,
    /// The sending process ([`crate::instance::instance_id`], new at each start); empty from a
    /// local that predates identities, whose imports are merged without deduplication.
    #[prost(string, tag = "5")]
    pub sender: String,
    /// The sender's flush number (1, 2, … since its start): with `part`, the import's identity.
    #[prost(uint64, tag = "6")]
    pub interval: u64,
    /// Which part of that interval's payload for this global (0-based).
    #[prost(uint32, tag = "7")]
    pub part: u32,
    /// How many parts the interval's payload for this global has.
    #[prost(uint32, tag = "8")]
    pub parts: u32,
    /// How many intervals back the sender may still retry (its `buffer_intervals`).
    #[prost(uint32, tag = "9")]
    pub window: u32,
    /// The sender's flush interval in milliseconds (how long a retry may lag its first try).
    #[prost(uint64, tag = "10")]
    pub interval_ms: u64,
    /// The interval's good and total events per SLO, counted by the local (in part 0 only);
    /// a global that predates SLOs ignores them.
    #[prost(message, repeated, tag = "11")]
    pub slo_counts: Vec<SloCount>,
}

/// One SLO's counts of one interval at a local (`docs/slo.md#in-a-fleet`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SloCount {
    /// The SLO's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Good events (Σ 1 ÷ sample rate).
    #[prost(double, tag = "2")]
    pub good: f64,
    /// All events.
    #[prost(double, tag = "3")]
    pub total: f64,
}

/// One series' identity and state.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SeriesState {
    /// Metric name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// `MetricType::index`.
    #[prost(uint32, tag = "2")]
    pub kind: u32,
    /// `Scope` byte at the local (0 default, 1 global-only).
    #[prost(uint32, tag = "3")]
    pub scope: u32,
    /// Explicit `host:` tag value, if the series had one.
    #[prost(string, optional, tag = "4")]
    pub host: Option<String>,
    /// Sorted, de-duplicated tags.
    #[prost(string, repeated, tag = "5")]
    pub tags: Vec<String>,
    /// `|T` timestamp (counters and gauges).
    #[prost(uint64, optional, tag = "6")]
    pub timestamp: Option<u64>,
    /// Counter total or gauge value.
    #[prost(double, optional, tag = "7")]
    pub value: Option<f64>,
    /// Set sketch.
    #[prost(message, optional, tag = "8")]
    pub set: Option<SetSketchState>,
    /// Histogram state.
    #[prost(message, optional, tag = "9")]
    pub histogram: Option<HistogramStateProto>,
}

/// A set sketch ([`crate::aggregate::set::SetSketch::to_wire`]; `cardinality-estimator`'s serde
/// form `(data, words)`, which earlier meterd versions sent).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetSketchState {
    /// The form (two low bits) and, in the small form, its two encoded hashes.
    #[prost(uint64, tag = "1")]
    pub data: u64,
    /// Its array or HLL registers, if any.
    #[prost(uint32, repeated, tag = "2")]
    pub words: Vec<u32>,
    /// Whether `words` is present (an empty array is not the same as none).
    #[prost(bool, tag = "3")]
    pub has_words: bool,
}

/// `HistogramParts` on the wire.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistogramStateProto {
    /// Weighted count.
    #[prost(double, tag = "1")]
    pub count: f64,
    /// Weighted sum.
    #[prost(double, tag = "2")]
    pub sum: f64,
    /// Minimum.
    #[prost(double, tag = "3")]
    pub min: f64,
    /// Maximum.
    #[prost(double, tag = "4")]
    pub max: f64,
    /// Σ weight ÷ value.
    #[prost(double, tag = "5")]
    pub recip_sum: f64,
    /// Raw values.
    #[prost(double, repeated, tag = "6")]
    pub raw_values: Vec<f64>,
    /// Raw weights.
    #[prost(double, repeated, tag = "7")]
    pub raw_weights: Vec<f64>,
    /// Positive bucket tops (scaled).
    #[prost(uint64, repeated, tag = "8")]
    pub pos_buckets: Vec<u64>,
    /// Their counts.
    #[prost(uint64, repeated, tag = "9")]
    pub pos_counts: Vec<u64>,
    /// Negative bucket tops (scaled magnitudes).
    #[prost(uint64, repeated, tag = "10")]
    pub neg_buckets: Vec<u64>,
    /// Their counts.
    #[prost(uint64, repeated, tag = "11")]
    pub neg_counts: Vec<u64>,
    /// Zero count.
    #[prost(uint64, tag = "12")]
    pub zeros: u64,
}
