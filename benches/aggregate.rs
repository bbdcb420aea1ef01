//! Aggregation throughput: `cargo bench --bench aggregate`. Each iteration ingests datagrams of
//! ~70 lines through an `Ingestor` (parse, key, hash, per-shard batch, one lock per shard batch)
//! into an aggregator that already holds the series, at 10k and 1M series. Read results as
//! lines/s. Also: lines that create new series, and rendering a flush.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use meterd::aggregate::histogram::RAW_LIMIT;
use meterd::aggregate::{Aggregator, AggregatorConfig, GaugeDeltas, Ingestor, Limits};
use meterd::config::{Config, Runtime};
use meterd::flush::Renderer;
use meterd::protocol::{parse_line_into, MetricLine};

const LINES_PER_DATAGRAM: usize = 70;
const DATAGRAMS: usize = 100;

fn aggregator(max_series: usize) -> Arc<Aggregator> {
    Arc::new(Aggregator::new(AggregatorConfig {
        shards: 8,
        limits: Limits {
            max_series,
            ..Limits::default()
        },
        gauge_deltas: GaugeDeltas::Dogstatsd,
        hostname: Arc::from("bench"),
        gauge_memory_flushes: 360,
    }))
}

/// Datagrams cycling over `series` distinct names, mixing counters, gauges and timers.
fn datagrams(series: usize, offset: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(DATAGRAMS);
    let mut n = offset;
    for _ in 0..DATAGRAMS {
        let mut d = String::new();
        for _ in 0..LINES_PER_DATAGRAM {
            let s = n % series;
            let line = match s % 4 {
                0 | 1 => format!("app.counter.{s}:1|c\n"),
                2 => format!("app.gauge.{s}:{}|g\n", n % 100),
                _ => format!("app.timer.{s}:{}.5|ms\n", n % 1000),
            };
            d.push_str(&line);
            n += 7919; // a prime stride spreads consecutive lines over the series
        }
        out.push(d.into_bytes());
    }
    out
}

fn populate(agg: &Arc<Aggregator>, series: usize) {
    let mut ing = Ingestor::new(agg.clone());
    for s in 0..series {
        let line = match s % 4 {
            0 | 1 => format!("app.counter.{s}:1|c"),
            2 => format!("app.gauge.{s}:1|g"),
            _ => format!("app.timer.{s}:1|ms"),
        };
        ing.ingest_line(line.as_bytes());
    }
    ing.commit();
}

fn bench_existing(c: &mut Criterion) {
    let mut g = c.benchmark_group("aggregate_existing");
    g.throughput(Throughput::Elements(
        (DATAGRAMS * LINES_PER_DATAGRAM) as u64,
    ));
    for series in [10_000usize, 1_000_000] {
        let agg = aggregator(2_000_000);
        populate(&agg, series);
        bench_ingest(&mut g, &agg, series);
        assert_eq!(agg.series_count(), series);
    }
    g.finish();
}

/// Benches `{series}_series` in `g`: the datagrams over `series` names through one ingestor
/// into `agg`, and a commit.
fn bench_ingest(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    agg: &Arc<Aggregator>,
    series: usize,
) {
    let data = datagrams(series, 0);
    let mut ing = Ingestor::new(agg.clone());
    g.bench_function(format!("{series}_series"), |b| {
        b.iter(|| {
            for d in &data {
                meterd::ingest::ingest_datagram(&mut ing, d, false);
            }
            ing.commit();
        })
    });
}

/// The parsing share of `aggregate_existing`: the same datagrams, split and parsed only, so
/// that aggregation's own cost per line is the difference.
fn bench_parse_only(c: &mut Criterion) {
    let mut g = c.benchmark_group("aggregate_parse_only");
    g.throughput(Throughput::Elements(
        (DATAGRAMS * LINES_PER_DATAGRAM) as u64,
    ));
    let data = datagrams(10_000, 0);
    g.bench_function("10000_series", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            for d in &data {
                let mut metric = MetricLine::new();
                for line in d.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    ok += usize::from(parse_line_into(black_box(line), &mut metric).is_ok());
                }
            }
            assert_eq!(ok, DATAGRAMS * LINES_PER_DATAGRAM);
            ok
        })
    });
    g.finish();
}

fn bench_new_series(c: &mut Criterion) {
    let mut g = c.benchmark_group("aggregate_new");
    g.throughput(Throughput::Elements(
        (DATAGRAMS * LINES_PER_DATAGRAM) as u64,
    ));
    g.bench_function("new_series", |b| {
        b.iter_batched(
            || (aggregator(2_000_000), datagrams(usize::MAX, 0)),
            |(agg, data)| {
                let mut ing = Ingestor::new(agg);
                for d in &data {
                    meterd::ingest::ingest_datagram(&mut ing, d, false);
                }
                ing.commit();
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_render(c: &mut Criterion) {
    let mut g = c.benchmark_group("flush_render");
    let series = 100_000;
    g.throughput(Throughput::Elements(series as u64));
    let rt: Runtime = Config::default().validate("").expect("default config");
    let renderer = Renderer::new(rt.render_settings());
    g.bench_function("100k_series", |b| {
        b.iter_batched(
            || {
                let agg = aggregator(2_000_000);
                populate(&agg, series);
                agg.swap()
            },
            |snap| renderer.render(snap, 1_763_775_000),
            BatchSize::LargeInput,
        )
    });
    // Timers with a whole interval each (one multi-value line per series): past the raw limit,
    // percentiles from HDR arrays (the path `populate` never reaches); within it, from sorted
    // raw samples.
    g.sample_size(20);
    // (name, series, samples each, step between a series' consecutive values)
    for (name, timers, samples, step) in [
        ("2k_hdr_timers", 2_000, 2 * RAW_LIMIT, 7),
        ("2k_raw_timers", 2_000, RAW_LIMIT, 7),
        // The dogstatsd workload's shape: many series with a few samples each, in no order.
        ("20k_timers_25_samples", 20_000, 25, 7_919),
    ] {
        g.throughput(Throughput::Elements(timers as u64));
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let agg = aggregator(2_000_000);
                    let mut ing = Ingestor::new(agg.clone());
                    for s in 0..timers {
                        let values: Vec<String> = (0..samples)
                            .map(|v| (1 + (v * step + s) % 5_000).to_string())
                            .collect();
                        let line = format!("app.timer.{s}:{}|ms", values.join(":"));
                        ing.ingest_line(line.as_bytes());
                    }
                    ing.commit();
                    agg.swap()
                },
                |snap| renderer.render(snap, 1_763_775_000),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// `aggregate_existing` at 10,000 series with a latency SLO on every timer series
/// (`app.timer.*` has no common name, so one rule per timer name would be unrealistic: the rule
/// matches the timers of names ending in 3, a quarter of them, and the rest pay the branch).
fn bench_existing_slo(c: &mut Criterion) {
    use meterd::aggregate::slo::{LatencyRule, SloRules};
    let mut g = c.benchmark_group("aggregate_existing_slo");
    g.throughput(Throughput::Elements(
        (DATAGRAMS * LINES_PER_DATAGRAM) as u64,
    ));
    let series = 10_000usize;
    let agg = aggregator(2_000_000);
    let latency = (0..series)
        .filter(|s| s % 4 == 3 && s % 10 == 3)
        .map(|s| LatencyRule {
            slo: Arc::from(format!("slo{s}")),
            metric: format!("app.timer.{s}"),
            tags: Vec::new(),
            threshold: 500.0,
        })
        .collect();
    agg.set_slo_rules(SloRules {
        latency,
        ratio: Vec::new(),
    });
    populate(&agg, series);
    bench_ingest(&mut g, &agg, series);
    g.finish();
}

criterion_group!(
    benches,
    bench_existing,
    bench_existing_slo,
    bench_parse_only,
    bench_new_series,
    bench_render
);
criterion_main!(benches);
