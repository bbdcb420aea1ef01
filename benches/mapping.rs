//! Mapping rules on the reader's path: `cargo bench --bench mapping`. 10k distinct names go
//! through an `Ingestor` (parse, map, key, hash, batch, apply) into an aggregator that already
//! holds their series, with no rules and with a table of 1,000 glob rules compiled into one
//! trie. Each reader's cache then holds every name, as in steady state:
//!
//! - `plain/*`: names no rule matches (`load.c.m01234`), no rules vs 1,000 rules: the cost of
//!   a cache hit that leaves the line as it is;
//! - `mapped/1000_rules`: names a rule maps (`svc0042.r01234.POST.latency` → `svc.latency`
//!   with tags `svc`, `route`, `method`), against `premapped/no_rules`: the same series sent
//!   already named and tagged (`svc.latency:5|ms|#svc:svc,route:r01234,method:POST`). The
//!   difference is what mapping a cached name costs over a client that sends the tags itself.
//!
//! Read results as ns per line (criterion's time ÷ the lines of an iteration, printed first).

use std::collections::BTreeMap;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meterd::aggregate::{Aggregator, AggregatorConfig, Ingestor};
use meterd::mapping::{RuleConfig, Rules, TypeName};

const SERIES: usize = 10_000;
const DATAGRAMS: usize = 100;
const RULES: usize = 1_000;

/// 1,000 rules of several shapes: none matches `load.*` names; rule `i % 250 == 0` matches the
/// `svcNNNN` names.
fn rules() -> Arc<Rules> {
    let configs: Vec<RuleConfig> = (0..RULES)
        .map(|i| {
            let tags = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            };
            let (pattern, name, tags, kind) = match i % 4 {
                0 => (
                    format!("svc{:04}.*.*.latency", i / 4),
                    "svc.latency".to_owned(),
                    tags(&[("svc", "svc"), ("route", "$1"), ("method", "$2")]),
                    Some(TypeName::Timer),
                ),
                1 => (
                    format!("app{i}.*.requests"),
                    "app.requests".to_owned(),
                    tags(&[("host", "$1")]),
                    None,
                ),
                2 => (
                    format!("servers.web-*.{i}.cpu"),
                    "cpu".to_owned(),
                    tags(&[("host", "web-$1")]),
                    None,
                ),
                _ => (
                    format!("jobs.*.q{i}.*"),
                    "jobs.$2".to_owned(),
                    tags(&[("job", "$1")]),
                    None,
                ),
            };
            RuleConfig {
                pattern,
                match_type: meterd::mapping::MatchType::Glob,
                match_metric_type: kind,
                name: Some(name),
                tags,
                action: meterd::mapping::Action::Map,
            }
        })
        .collect();
    match Rules::compile(&configs) {
        Ok(Some(r)) => Arc::new(r),
        other => panic!("bench rules: {other:?}"),
    }
}

/// Datagrams of ~1400 bytes over `SERIES` names made by `line(series, value)`.
fn datagrams(line: impl Fn(usize, u64) -> String) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(DATAGRAMS);
    let (mut n, mut r) = (0usize, 12_345u64);
    for _ in 0..DATAGRAMS {
        let mut d = String::new();
        while d.len() < 1400 {
            r = r
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            d.push_str(&line(n % SERIES, (r >> 33) % 10_000));
            n += 7919;
        }
        out.push(d.into_bytes());
    }
    out
}

fn plain_line(s: usize, v: u64) -> String {
    match s % 10 {
        0..=4 => format!("load.c.m{s:05}:{}|c\n", 1 + v % 3),
        5..=7 => format!("load.ms.m{s:05}:{}|ms\n", 1 + v),
        _ => format!("load.g.m{s:05}:{v}|g\n"),
    }
}

fn mapped_line(s: usize, v: u64) -> String {
    let method = if s % 2 == 0 { "GET" } else { "POST" };
    // Services that rule `4 * k` matches: svc0000..svc0249.
    format!("svc{:04}.r{s:05}.{method}.latency:{}|ms\n", s % 250, 1 + v)
}

/// [`mapped_line`] as the rules map it, sent so by the client: the baseline a mapped line
/// compares with (its series has the same key).
fn premapped_line(s: usize, v: u64) -> String {
    let method = if s % 2 == 0 { "GET" } else { "POST" };
    format!(
        "svc.latency:{}|ms|#svc:svc,route:r{s:05},method:{method}\n",
        1 + v
    )
}

fn ingest_all(ing: &mut Ingestor, data: &[Vec<u8>]) {
    for d in data {
        meterd::ingest::ingest_datagram(ing, d, false);
    }
    ing.commit();
}

fn bench(c: &mut Criterion) {
    let rules = rules();
    let mut group = c.benchmark_group("mapping");
    for (shape, line, cases) in [
        (
            "plain",
            plain_line as fn(usize, u64) -> String,
            &[("no_rules", false), ("1000_rules", true)][..],
        ),
        ("mapped", mapped_line, &[("1000_rules", true)][..]),
        ("premapped", premapped_line, &[("no_rules", false)][..]),
    ] {
        let data = datagrams(line);
        let lines: usize = data
            .iter()
            .map(|d| d.iter().filter(|&&b| b == b'\n').count())
            .sum();
        group.throughput(Throughput::Elements(lines as u64));
        for &(case, with_rules) in cases {
            let with_rules = with_rules.then(|| rules.clone());
            let aggregator = Arc::new(Aggregator::new(AggregatorConfig::default()));
            aggregator.set_mapping(with_rules);
            let mut ing = Ingestor::new(aggregator.clone());
            for _ in 0..3 {
                ingest_all(&mut ing, &data);
            }
            eprintln!(
                "mapping/{shape}/{case}: {lines} lines per iteration, {} series",
                aggregator.series_count()
            );
            group.bench_function(format!("{shape}/{case}"), |b| {
                b.iter(|| ingest_all(&mut ing, &data))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
