//! Parser throughput by line type: `cargo bench --bench parse`. Read results as lines/s
//! (each iteration parses a block of 1,000 lines). `parse/*` calls `parse_line`, which returns
//! each line by value; `parse_into/*` parses as ingest does, into one `MetricLine` per block.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use meterd::protocol::{parse_line, parse_line_into, MetricLine};

const BLOCK: usize = 1000;

fn lines(template: impl Fn(usize) -> String) -> Vec<Vec<u8>> {
    (0..BLOCK).map(|i| template(i).into_bytes()).collect()
}

fn bench_parse(c: &mut Criterion) {
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "counter_plain",
            lines(|i| format!("app.requests.{}:1|c", i % 100)),
        ),
        (
            "counter_tags_rate",
            lines(|i| {
                format!(
                    "app.requests:{}|c|@0.5|#env:prod,route:/api/{},code:200",
                    i % 7,
                    i % 50
                )
            }),
        ),
        ("gauge", lines(|i| format!("app.queue.depth:{}|g", i * 3))),
        (
            "timer_tags",
            lines(|i| {
                format!(
                    "api.request.latency:{}.{}|ms|@0.5|#env:prod,route:/x",
                    i % 500,
                    i % 10
                )
            }),
        ),
        (
            "histogram_multi",
            lines(|i| format!("db.rows:{}:{}:{}|h", i, i + 1, i + 2)),
        ),
        (
            "distribution_dogstatsd",
            lines(|i| {
                format!(
                    "payload.bytes:{}|d|#env:prod,service:api,version:1.{}|c:abc123|T1763775000",
                    i * 17,
                    i % 3
                )
            }),
        ),
        (
            "set",
            lines(|i| format!("users.unique:user-{}|s|#env:prod", i)),
        ),
        (
            "event",
            lines(|i| {
                format!(
                    "_e{{6,12}}:deploy|version 1.{:02}|t:success|#env:prod",
                    i % 100
                )
            }),
        ),
        (
            "service_check",
            lines(|i| format!("_sc|db.up|{}|h:web-1|#env:prod|m:connection ok", i % 4)),
        ),
    ];
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(BLOCK as u64));
    for (name, block) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let mut ok = 0usize;
                for l in block {
                    ok += usize::from(parse_line(black_box(l)).is_ok());
                }
                assert_eq!(ok, BLOCK);
                ok
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("parse_into");
    g.throughput(Throughput::Elements(BLOCK as u64));
    for (name, block) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let mut metric = MetricLine::new();
                let mut ok = 0usize;
                for l in block {
                    ok += usize::from(parse_line_into(black_box(l), &mut metric).is_ok());
                    black_box(&metric);
                }
                assert_eq!(ok, BLOCK);
                ok
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
