//! The cost of `GET /api/v1/cardinality`: `cargo bench --bench cardinality`. An aggregator holds
//! 1M series (1,000 names × 1,000 series, three tags and a host each: `env` with 3 values,
//! `region` with 10, `user` with 1,000, `host:` with 100) in 8 shards, the default on 2 cores;
//! each iteration is one query. Read the result as series counted per second. After the timed
//! runs, it prints the CPU time of one query (steadier than wall time on a busy machine) and
//! the longest a query held a shard's lock (what a reader can wait for its batch), at 8 and at
//! 64 shards.

use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use meterd::aggregate::{Aggregator, AggregatorConfig, GaugeDeltas, Ingestor, Limits};

const NAMES: usize = 1_000;
const PER_NAME: usize = 1_000;

fn populated(shards: usize) -> Arc<Aggregator> {
    let agg = Arc::new(Aggregator::new(AggregatorConfig {
        shards,
        limits: Limits {
            max_series: 2_000_000,
            ..Limits::default()
        },
        gauge_deltas: GaugeDeltas::Dogstatsd,
        hostname: Arc::from("bench"),
        gauge_memory_flushes: 360,
    }));
    let mut ing = Ingestor::new(agg.clone());
    for n in 0..NAMES {
        for s in 0..PER_NAME {
            let line = format!(
                "app.metric.{n}:1|c|#env:e{},region:r{},user:u{s},host:h{}",
                s % 3,
                s % 10,
                s % 100
            );
            ing.ingest_line(line.as_bytes());
        }
    }
    ing.commit();
    assert_eq!(agg.series_count(), NAMES * PER_NAME);
    agg
}

fn bench_cardinality(c: &mut Criterion) {
    let mut g = c.benchmark_group("cardinality");
    g.sample_size(10);
    g.throughput(Throughput::Elements((NAMES * PER_NAME) as u64));
    for shards in [8, 64] {
        let agg = populated(shards);
        g.bench_function(format!("1M_series_{shards}_shards"), |b| {
            b.iter(|| black_box(agg.cardinality(20)))
        });
        let mut longest = Duration::ZERO;
        let cpu = thread_cpu();
        for _ in 0..5 {
            let answer = agg.cardinality(20);
            assert_eq!(answer.total_series, NAMES * PER_NAME);
            longest = longest.max(answer.longest_lock);
        }
        let cpu = (thread_cpu() - cpu) / 5;
        eprintln!(
            "cardinality {shards} shards: CPU time per query {cpu:?}; longest shard lock hold \
             over 5 queries {longest:?}"
        );
    }
    g.finish();
}

/// CPU time of this thread: unlike wall time, it leaves out the time other processes had the
/// core (the query's cost on a busy machine).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

criterion_group!(benches, bench_cardinality);
criterion_main!(benches);
