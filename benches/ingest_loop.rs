//! The reader's loop without the socket. `bash benches/instructions.sh` runs it under callgrind
//! and prints instructions per line, by function: counts do not move with a neighbour's load on
//! a shared machine the way times do. `bash benches/loop_ab.sh` times it built at two commits,
//! in turns. Either judges a small change to the hot path; `benches/ab.py` then says what it
//! does end to end.
//!
//! Datagrams of the plain workload's shapes (`load.c.m01234:2|c`, `load.ms.m01234:5123|ms`,
//! `load.g.m01234:77|g`; ~7,000 of 10k names, ~1400 bytes each) go through an `Ingestor` into an
//! aggregator that already holds every series, as `aggregate_existing` does; only the function
//! `measured` is counted. `cargo bench --bench ingest_loop` runs it once and prints ns per line.
//! Arguments: `[ITERATIONS]` (default 100); cargo's `--bench` is ignored.

use std::sync::Arc;
use std::time::Instant;

use meterd::aggregate::{Aggregator, AggregatorConfig, GaugeDeltas, Ingestor, Limits};

/// Names the lines are drawn from (a prime stride over them).
const SERIES: usize = 10_000;
const DATAGRAMS: usize = 100;
/// Passes over the datagrams before the measured ones, so every series exists.
const WARM_UP: usize = 3;

fn datagrams() -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(DATAGRAMS);
    let mut n = 0usize;
    let mut r = 12_345u64;
    for _ in 0..DATAGRAMS {
        let mut d = String::new();
        while d.len() < 1400 {
            let s = n % SERIES;
            r = r
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let v = (r >> 33) % 10_000;
            d.push_str(&match s % 10 {
                0..=4 => format!("load.c.m{s:05}:{}|c\n", 1 + v % 3),
                5..=7 => format!("load.ms.m{s:05}:{}|ms\n", 1 + v),
                _ => format!("load.g.m{s:05}:{v}|g\n"),
            });
            n += 7919; // a prime stride spreads consecutive lines over the series
        }
        out.push(d.into_bytes());
    }
    out
}

/// The counted work: every datagram through the ingestor, then one commit.
#[inline(never)]
fn measured(ing: &mut Ingestor, data: &[Vec<u8>]) {
    for d in data {
        meterd::ingest::ingest_datagram(ing, d, false);
    }
    ing.commit();
}

fn main() {
    let iterations: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let aggregator = Arc::new(Aggregator::new(AggregatorConfig {
        shards: 8,
        limits: Limits::default(),
        gauge_deltas: GaugeDeltas::Dogstatsd,
        hostname: Arc::from("bench"),
        gauge_memory_flushes: 360,
    }));
    let data = datagrams();
    let lines: usize = data
        .iter()
        .map(|d| d.iter().filter(|&&b| b == b'\n').count())
        .sum();
    let mut ing = Ingestor::new(aggregator.clone());
    for _ in 0..WARM_UP {
        measured(&mut ing, &data);
    }
    // Every measured line updates a series that exists.
    let series = aggregator.series_count();
    let start = Instant::now();
    for _ in 0..iterations {
        measured(&mut ing, &data);
    }
    let elapsed = start.elapsed();
    assert_eq!(aggregator.series_count(), series);
    println!(
        "lines_per_pass {lines} passes {} ns_per_line {:.1}",
        WARM_UP + iterations,
        elapsed.as_nanos() as f64 / (lines * iterations).max(1) as f64
    );
}
