//! What was sent ([`Sent`]) and what it adds up to per series ([`Totals`]), the per-series part
//! of the totals file.

use std::collections::BTreeMap;

use super::{LineRec, MetricType, Ring, Spec};

/// How often each datagram of the ring went out whole, plus the datagrams that went out cut
/// (the last one of a `--count` run): exactly what was sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Per slot: times sent whole.
    pub slot_counts: Vec<u64>,
    /// `(slot, lines)`: a datagram sent once with only its first `lines` lines.
    pub partial: Vec<(usize, usize)>,
}

impl Sent {
    /// Nothing sent yet, for a ring of `slots` datagrams.
    pub fn new(slots: usize) -> Sent {
        Sent {
            slot_counts: vec![0; slots],
            partial: Vec::new(),
        }
    }

    /// Adds another sender's record.
    pub fn merge(&mut self, other: &Sent) {
        if self.slot_counts.len() < other.slot_counts.len() {
            self.slot_counts.resize(other.slot_counts.len(), 0);
        }
        for (a, b) in self.slot_counts.iter_mut().zip(&other.slot_counts) {
            *a += b;
        }
        self.partial.extend_from_slice(&other.partial);
    }
}

/// Per-series totals of what was sent, as the aggregator must compute them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    /// Lines by [`MetricType::index`].
    pub lines_by_kind: [u64; 6],
    /// Counter series → Σ value ÷ rate.
    pub counters: BTreeMap<u32, f64>,
    /// Timer, histogram and distribution series → (samples sent, Σ 1 ÷ rate).
    pub timers: BTreeMap<u32, (u64, f64)>,
    /// Gauge series → lines sent.
    pub gauges: BTreeMap<u32, u64>,
    /// Set series → members sent (bit `m` for member `u<m>`).
    pub sets: BTreeMap<u32, u128>,
}

impl Totals {
    /// Totals of `sent` over `ring`. Per-slot contributions are multiplied by the slot's count,
    /// so this costs one pass over the ring whatever was sent.
    pub fn of(spec: &Spec, ring: &Ring, sent: &Sent) -> Totals {
        let mut t = Totals::default();
        for (slot, &times) in sent.slot_counts.iter().enumerate() {
            if times > 0 {
                for l in ring.slot_lines(slot) {
                    t.add(spec, l, times);
                }
            }
        }
        for &(slot, n) in &sent.partial {
            for l in ring.slot_lines(slot).iter().take(n) {
                t.add(spec, l, 1);
            }
        }
        t
    }

    fn add(&mut self, spec: &Spec, l: &LineRec, times: u64) {
        let kind = spec.kind_of(l.series);
        if let Some(n) = self.lines_by_kind.get_mut(kind.index()) {
            *n += times;
        }
        let rate = spec.rate_of(l.series);
        match kind {
            MetricType::Counter => {
                *self.counters.entry(l.series).or_default() += times as f64 * (l.value / rate)
            }
            MetricType::Timer | MetricType::Histogram | MetricType::Distribution => {
                let e = self.timers.entry(l.series).or_default();
                e.0 += times;
                e.1 += times as f64 / rate;
            }
            MetricType::Gauge => *self.gauges.entry(l.series).or_default() += times,
            MetricType::Set => {
                *self.sets.entry(l.series).or_default() |= 1u128 << (l.value as u32).min(127)
            }
        }
    }

    /// All lines.
    pub fn lines(&self) -> u64 {
        self.lines_by_kind.iter().sum()
    }

    /// The per-series part of the totals file.
    pub fn to_json(&self, spec: &Spec) -> serde_json::Value {
        let mut by_kind = serde_json::Map::new();
        for k in MetricType::ALL {
            let n = self.lines_by_kind.get(k.index()).copied().unwrap_or(0);
            if n > 0 {
                by_kind.insert(k.as_str().into(), n.into());
            }
        }
        let counters: serde_json::Map<String, serde_json::Value> = self
            .counters
            .iter()
            .map(|(&i, &v)| (spec.series_key(i), v.into()))
            .collect();
        let timers: serde_json::Map<String, serde_json::Value> = self
            .timers
            .iter()
            .map(|(&i, &(samples, count))| {
                let kind = spec.kind_of(i).as_str();
                (
                    spec.series_key(i),
                    serde_json::json!({"type": kind, "samples": samples, "count": count}),
                )
            })
            .collect();
        let gauges: serde_json::Map<String, serde_json::Value> = self
            .gauges
            .iter()
            .map(|(&i, &n)| (spec.series_key(i), n.into()))
            .collect();
        let sets: serde_json::Map<String, serde_json::Value> = self
            .sets
            .iter()
            .map(|(&i, &m)| (spec.series_key(i), m.count_ones().into()))
            .collect();
        let series = self.counters.len() + self.timers.len() + self.gauges.len() + self.sets.len();
        serde_json::json!({
            "lines_by_type": by_kind,
            "series_sent": series,
            "counter_sum": self.counters.values().sum::<f64>(),
            "timer_samples": self.timers.values().map(|t| t.0).sum::<u64>(),
            "timer_count": self.timers.values().map(|t| t.1).sum::<f64>(),
            "counters": counters,
            "timers": timers,
            "gauges": gauges,
            "sets": sets,
        })
    }
}
