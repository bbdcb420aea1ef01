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
//! Arguments: `[ITERATIONS] [SHAPE] [cold]` (default 100, `plain`); cargo's `--bench` is ignored.
//!
//! `SHAPE` prices one kind of line alone, on the same 10k series and ~1400-byte datagrams:
//! `plain` (the mix above), `set` (`load.s.m01234:u42|s`, members from 100 per series),
//! `histogram` / `distribution` (`|h` / `|d`, raw samples: each series gets under 100 per run),
//! `sampled` (`load.c.m01234:2|c|@0.5`), `tagged` (counters with three tags, `env`, `region` and
//! `az`, whose values follow the series), or `mixed` (meterd-load's `mixed` preset shares:
//! counters 40 %, gauges, timers 15 %, histograms, sets, distributions 10 %; a tenth of the
//! sampled types' series at `@0.5`). E.g. `cargo bench --bench ingest_loop -- 100 tagged`.
//!
//! `cold` evicts the caches before each pass (by writing over a buffer larger than the last
//! level cache, outside the timed part): at 1M lines/s a reader works in short bursts between
//! which other work takes the caches, so the series it updates are cold, as they are not when
//! the loop runs back to back (the table lookups then weighed far more in a profile at the
//! offered rate: `benches/ab.py --perf`).

use std::sync::Arc;
use std::time::Instant;

use meterd::aggregate::{Aggregator, AggregatorConfig, GaugeDeltas, Ingestor, Limits};

/// Names the lines are drawn from (a prime stride over them).
const SERIES: usize = 10_000;
const DATAGRAMS: usize = 100;
/// Passes over the datagrams before the measured ones, so every series exists.
const WARM_UP: usize = 3;
/// What `cold` writes over before each pass: more than this machine's last level cache.
const EVICT_BYTES: usize = 64 << 20;

fn datagrams(shape: &str) -> Vec<Vec<u8>> {
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
            d.push_str(&line(shape, s, v));
            n += 7919; // a prime stride spreads consecutive lines over the series
        }
        out.push(d.into_bytes());
    }
    out
}

/// Series `s`'s line of `shape` with the random `v`.
fn line(shape: &str, s: usize, v: u64) -> String {
    let rate = if s % 10 == 0 { "|@0.5" } else { "" };
    match shape {
        "set" => format!("load.s.m{s:05}:u{}|s\n", v % 100),
        "histogram" => format!("load.h.m{s:05}:{}|h\n", 1 + v % 1000),
        "distribution" => format!("load.d.m{s:05}:{}|d\n", 1 + v % 1000),
        "sampled" => format!("load.c.m{s:05}:{}|c|@0.5\n", 1 + v % 3),
        "tagged" => format!(
            "load.c.m{:05}:{}|c|#env:e{},region:r{},az:z{}\n",
            s / 64,
            1 + v % 3,
            s % 4,
            s / 4 % 4,
            s / 16 % 4
        ),
        "mixed" => match s % 20 {
            0..=7 => format!("load.c.m{s:05}:{}|c{rate}\n", 1 + v % 3),
            8..=10 => format!("load.g.m{s:05}:{}|g\n", v % 1000),
            11..=13 => format!("load.ms.m{s:05}:{}|ms{rate}\n", 1 + v % 999),
            14 | 15 => format!("load.h.m{s:05}:{}|h{rate}\n", 1 + v % 999),
            16 | 17 => format!("load.s.m{s:05}:u{}|s\n", v % 100),
            _ => format!("load.d.m{s:05}:{}|d{rate}\n", 1 + v % 999),
        },
        _ => match s % 10 {
            0..=4 => format!("load.c.m{s:05}:{}|c\n", 1 + v % 3),
            5..=7 => format!("load.ms.m{s:05}:{}|ms\n", 1 + v),
            _ => format!("load.g.m{s:05}:{v}|g\n"),
        },
    }
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
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let iterations: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100);
    let shape = args.get(1).map_or("plain", String::as_str);
    let cold = args.get(2).is_some_and(|a| a == "cold");
    const SHAPES: [&str; 7] = [
        "plain",
        "set",
        "histogram",
        "distribution",
        "sampled",
        "tagged",
        "mixed",
    ];
    assert!(SHAPES.contains(&shape), "SHAPE must be one of {SHAPES:?}");
    // Spelled out, not `AggregatorConfig::default()`: `loop_ab.sh` builds this harness against
    // older commits too, which lack it.
    let aggregator = Arc::new(Aggregator::new(AggregatorConfig {
        shards: 8,
        limits: Limits::default(),
        gauge_deltas: GaugeDeltas::Dogstatsd,
        hostname: Arc::from("bench"),
        gauge_memory_flushes: 360,
    }));
    let data = datagrams(shape);
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
    let mut evict = vec![0u8; if cold { EVICT_BYTES } else { 0 }];
    let mut elapsed = std::time::Duration::ZERO;
    for i in 0..iterations {
        for b in evict.iter_mut().step_by(64) {
            *b = b.wrapping_add(i as u8);
        }
        std::hint::black_box(&mut evict);
        let start = Instant::now();
        measured(&mut ing, &data);
        elapsed += start.elapsed();
    }
    assert_eq!(aggregator.series_count(), series);
    println!(
        "shape {shape}{} lines_per_pass {lines} passes {} ns_per_line {:.1}",
        if cold { " cold" } else { "" },
        WARM_UP + iterations,
        elapsed.as_nanos() as f64 / (lines * iterations).max(1) as f64
    );
}
