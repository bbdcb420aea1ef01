//! Origin detection's cost: `cargo bench --bench origin`.
//!
//! - `origin/socket`: 64 datagrams of ~40 lines each sent over a real Unix datagram socket pair,
//!   then received with one `recvmmsg` (`RecvBatch`) and ingested, as a reader does: `off` (no
//!   `SO_PASSCRED`, no control buffers: today's path) against `on` (credentials with every
//!   datagram, one cache lookup per datagram; the sender is this process, outside any
//!   container, so no tag). Both include the 64 sends.
//! - `origin/ingest`: the same datagrams ingested without and with a container id to tag each
//!   line with (`ingest_datagram` vs `ingest_datagram_from`): the tag is one more in each key,
//!   no system call.
//! - `origin/cache_hit`: one `OriginCache` lookup of a known pid.
//!
//! Read results as lines/s (datagrams/s for the cache).

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use meterd::aggregate::{Aggregator, AggregatorConfig, Ingestor};
use meterd::ingest::datagram::{RecvBatch, BATCH};
use meterd::ingest::lines::{ingest_datagram, ingest_datagram_from};
use meterd::ingest::origin::OriginCache;

const LINES_PER_DATAGRAM: usize = 40;
const SLOT: usize = 8192;
const ID: &[u8] = b"3e74d3fd9db4c9dd921ae05c2502fb984d0cde1b36e581b13f79c639da4518a1";

fn aggregator() -> Arc<Aggregator> {
    Arc::new(Aggregator::new(AggregatorConfig::default()))
}

/// `BATCH` datagrams over 1,000 series of counters, gauges and timers.
fn datagrams() -> Vec<Vec<u8>> {
    let mut n = 0usize;
    (0..BATCH)
        .map(|_| {
            let mut d = String::new();
            for _ in 0..LINES_PER_DATAGRAM {
                let s = n % 1000;
                d.push_str(&match s % 3 {
                    0 => format!("app.counter.{s}:1|c|#env:prod\n"),
                    1 => format!("app.gauge.{s}:{n}|g\n"),
                    _ => format!("app.timer.{s}:{}|ms\n", n % 500),
                });
                n += 7;
            }
            d.into_bytes()
        })
        .collect()
}

fn socket(c: &mut Criterion) {
    let data = datagrams();
    let mut g = c.benchmark_group("origin/socket");
    g.throughput(Throughput::Elements((BATCH * LINES_PER_DATAGRAM) as u64));
    for on in [false, true] {
        let (rx, tx) = UnixDatagram::pair().unwrap();
        socket2::SockRef::from(&rx)
            .set_recv_buffer_size(4 << 20)
            .unwrap();
        socket2::SockRef::from(&rx).set_passcred(on).unwrap();
        let mut batch = RecvBatch::new(SLOT, on);
        let mut cache = on.then(OriginCache::default);
        let mut ing = Ingestor::new(aggregator());
        g.bench_function(if on { "on" } else { "off" }, |b| {
            b.iter(|| {
                for d in &data {
                    tx.send(d).unwrap();
                }
                let mut got = 0;
                while got < BATCH {
                    let n = batch.recv(rx.as_raw_fd(), false).unwrap();
                    let now = Instant::now();
                    for i in 0..n {
                        let (d, truncated) = batch.get(i);
                        let from = match cache.as_mut() {
                            Some(c) => c.container_id(batch.sender_pid(i).unwrap_or(0), now),
                            None => None,
                        };
                        match from {
                            None => ingest_datagram(&mut ing, d, truncated),
                            Some(id) => ingest_datagram_from(&mut ing, d, truncated, id),
                        }
                    }
                    ing.commit();
                    got += n;
                }
            })
        });
    }
    g.finish();
}

fn ingest(c: &mut Criterion) {
    let data = datagrams();
    let mut g = c.benchmark_group("origin/ingest");
    g.throughput(Throughput::Elements((BATCH * LINES_PER_DATAGRAM) as u64));
    for tagged in [false, true] {
        let mut ing = Ingestor::new(aggregator());
        g.bench_function(if tagged { "tagged" } else { "untagged" }, |b| {
            b.iter(|| {
                for d in &data {
                    if tagged {
                        ingest_datagram_from(&mut ing, d, false, ID);
                    } else {
                        ingest_datagram(&mut ing, d, false);
                    }
                }
                ing.commit();
            })
        });
    }
    g.finish();
}

fn cache_hit(c: &mut Criterion) {
    let mut cache = OriginCache::default();
    let pid = i32::try_from(std::process::id()).unwrap();
    let now = Instant::now();
    cache.container_id(pid, now);
    let mut g = c.benchmark_group("origin/cache_hit");
    g.throughput(Throughput::Elements(1));
    g.bench_function("lookup", |b| {
        b.iter(|| black_box(cache.container_id(black_box(pid), now).is_some()))
    });
    g.finish();
}

criterion_group!(benches, socket, ingest, cache_hit);
criterion_main!(benches);
