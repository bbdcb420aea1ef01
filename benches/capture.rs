//! What capture costs the readers: `cargo bench --bench capture`. A receive batch of 64
//! datagrams (~1,400 bytes of plain-workload lines each) through an `Ingestor`, as
//! `datagram::run_reader` handles it: without the tap, with the tap's check while no capture runs
//! (the state meterd is in almost always), and with a capture running (every datagram copied
//! into the queue, which the consumer empties between batches). Also the offer alone, running and
//! with a full queue (what a capture that cannot keep up costs per datagram). Read results as
//! lines/s and datagrams/s.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use meterd::aggregate::{Aggregator, AggregatorConfig, Ingestor};
use meterd::ingest::capture::{Datagram, Tap, Transport, QUEUE_RECORDS};

/// Datagrams per receive batch (the reader's `recvmmsg` batch).
const BATCH: usize = 64;
const SERIES: usize = 10_000;

fn datagrams() -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(BATCH);
    let mut n = 0usize;
    for _ in 0..BATCH {
        let mut d = String::new();
        while d.len() < 1400 {
            let s = n % SERIES;
            d.push_str(&match s % 10 {
                0..=4 => format!("load.c.m{s:05}:2|c\n"),
                5..=7 => format!("load.ms.m{s:05}:{}|ms\n", 1 + n % 5000),
                _ => format!("load.g.m{s:05}:{}|g\n", n % 100),
            });
            n += 7919;
        }
        out.push(d.into_bytes());
    }
    out
}

fn ingestor() -> Ingestor {
    let aggregator = Arc::new(Aggregator::new(AggregatorConfig::default()));
    let mut ing = Ingestor::new(aggregator);
    for d in datagrams() {
        meterd::ingest::ingest_datagram(&mut ing, &d, false);
    }
    ing.commit();
    ing
}

fn offered(data: &[Vec<u8>]) -> impl Iterator<Item = Datagram<'_>> {
    data.iter().map(|d| Datagram {
        payload: d,
        truncated: false,
        origin: &[],
    })
}

/// One receive batch as the reader handles it.
#[inline(never)]
fn batch(ing: &mut Ingestor, tap: Option<&Tap>, data: &[Vec<u8>]) {
    if let Some(tap) = tap {
        if tap.is_on() {
            tap.offer(Transport::Udp, offered(data));
        }
    }
    for d in data {
        meterd::ingest::ingest_datagram(ing, d, false);
    }
    ing.commit();
}

fn reader_batch(c: &mut Criterion) {
    let data = datagrams();
    let lines = data
        .iter()
        .map(|d| d.iter().filter(|&&b| b == b'\n').count())
        .sum::<usize>();
    let mut g = c.benchmark_group("capture_reader_batch");
    g.throughput(Throughput::Elements(lines as u64));
    let mut ing = ingestor();
    g.bench_function("no_tap", |b| {
        b.iter(|| batch(&mut ing, None, black_box(&data)))
    });
    let tap = Arc::new(Tap::new(Arc::new(AtomicU64::new(0))));
    g.bench_function("tap_off", |b| {
        b.iter(|| batch(&mut ing, Some(&tap), black_box(&data)))
    });
    let mut sub = tap.subscribe().expect("no capture yet");
    g.bench_function("tap_on", |b| {
        b.iter(|| {
            batch(&mut ing, Some(&tap), black_box(&data));
            while sub.try_recv().is_some() {}
        })
    });
    drop(sub);
    g.finish();
}

fn offer(c: &mut Criterion) {
    let data = datagrams();
    let mut g = c.benchmark_group("capture_offer");
    g.throughput(Throughput::Elements(BATCH as u64));
    let tap = Arc::new(Tap::new(Arc::new(AtomicU64::new(0))));
    let mut sub = tap.subscribe().expect("no capture yet");
    g.bench_function("running", |b| {
        b.iter(|| {
            tap.offer(Transport::Udp, offered(black_box(&data)));
            while sub.try_recv().is_some() {}
        })
    });
    // Fill the queue; every later offer is dropped and counted.
    let small = [b"x".to_vec()];
    for _ in 0..QUEUE_RECORDS {
        tap.offer(Transport::Udp, offered(&small));
    }
    g.bench_function("queue_full", |b| {
        b.iter(|| tap.offer(Transport::Udp, offered(black_box(&data))))
    });
    drop(sub);
    g.finish();
}

criterion_group!(benches, reader_batch, offer);
criterion_main!(benches);
