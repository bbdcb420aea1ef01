//! Local → global forwarding proven under faults (docs/fleet.md): a fault-injecting proxy between
//! a local and a global answers late (after the global merged), cuts requests in half, and hangs
//! up mid-body; a global is SIGKILLed and restarted; one of two globals flaps. The globals'
//! emitted totals (summed over every flush) equal what was sent — or, across a killed global,
//! never exceed it, short by at most what it had merged and not yet flushed.
//!
//! Every test sends raw datagrams once per wall-clock second, 250 ms into it (flushes are
//! aligned to the second), so each local interval carries exactly one tick of traffic.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::*;

/// Sleeps into the next wall-clock second, `offset_ms` past its start (at most ~2 s).
fn next_second(offset_ms: u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    let into = u64::try_from(now % 1000).expect("below 1000");
    std::thread::sleep(Duration::from_millis(1000 - into + offset_ms));
}

/// The traffic of one test: per tick, for each of `series` series, a `veneurglobalonly` counter,
/// `veneurglobalonly` timer samples, distribution samples and set members never sent before (so
/// a set's per-flush sizes sum to its distinct members however retries spread them over the
/// global's flushes). Every tick sends the same volume per kind.
struct Traffic {
    series: usize,
    ticks: u64,
    /// What the global must emit in total, by emitted name: counters by name, timers and
    /// distributions as `<name>.count`, sets by name.
    expected: BTreeMap<String, f64>,
    lines: u64,
    socket: UdpSocket,
}

/// The kinds, by the prefix of their series names.
const KINDS: [(&str, &str); 4] = [
    ("counter", "ff.c"),
    ("timer", "ff.t"),
    ("distribution", "ff.d"),
    ("set", "ff.s"),
];

impl Traffic {
    fn new(series: usize) -> Traffic {
        Traffic {
            series,
            ticks: 0,
            expected: BTreeMap::new(),
            lines: 0,
            socket: UdpSocket::bind("127.0.0.1:0").expect("bind a sender"),
        }
    }

    /// Sends one tick's lines to `to`, in datagrams of at most ~1200 bytes.
    fn send_tick(&mut self, to: SocketAddr) {
        let k = self.ticks;
        self.ticks += 1;
        let mut lines: Vec<String> = Vec::new();
        let add = |expected: &mut BTreeMap<String, f64>, key: String, by: f64| {
            *expected.entry(key).or_insert(0.0) += by;
        };
        for s in 0..self.series {
            let v = (s % 5 + 1) as f64;
            lines.push(format!("ff.c{s}:{v}|c|#veneurglobalonly"));
            add(&mut self.expected, format!("ff.c{s}"), v);
            for j in 0..(s % 3 + 2) as u64 {
                let v = 1 + (k * 7 + j * 13 + s as u64) % 500;
                lines.push(format!("ff.t{s}:{v}|ms|#veneurglobalonly"));
                add(&mut self.expected, format!("ff.t{s}.count"), 1.0);
            }
            for j in 0..(s % 4 + 1) as u64 {
                let v = 1 + (k * 11 + j * 17 + s as u64) % 900;
                lines.push(format!("ff.d{s}:{v}|d"));
                add(&mut self.expected, format!("ff.d{s}.count"), 1.0);
            }
            for j in 0..s % 4 + 2 {
                lines.push(format!("ff.s{s}:m{k}x{j}|s"));
                add(&mut self.expected, format!("ff.s{s}"), 1.0);
            }
        }
        self.send_lines(to, &lines);
    }

    /// A global-only counter, once: when the global emits it, every earlier part was delivered
    /// (a local delivers its parts in order).
    fn send_sentinel(&mut self, to: SocketAddr) {
        self.send_lines(to, &["ff.sentinel:1|c|#veneurglobalonly".to_owned()]);
    }

    fn send_lines(&mut self, to: SocketAddr, lines: &[String]) {
        let mut datagram = String::new();
        for line in lines {
            if !datagram.is_empty() && datagram.len() + line.len() + 1 > 1200 {
                self.socket
                    .send_to(datagram.as_bytes(), to)
                    .expect("send a datagram");
                datagram.clear();
            }
            if !datagram.is_empty() {
                datagram.push('\n');
            }
            datagram.push_str(line);
        }
        if !datagram.is_empty() {
            self.socket
                .send_to(datagram.as_bytes(), to)
                .expect("send a datagram");
        }
        self.lines += lines.len() as u64;
    }

    /// One tick's volume of `kind` (a prefix of [`KINDS`]).
    fn per_tick(&self, prefix: &str) -> f64 {
        kind_total(&self.expected, prefix) / self.ticks.max(1) as f64
    }
}

fn kind_total(by_name: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    by_name
        .iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// What the captured flushes hold for each expected name, summed over every flush.
fn emitted(points: &[Value], expected: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    expected
        .keys()
        .map(|name| (name.clone(), sum_named(points, name)))
        .collect()
}

/// Names whose emitted total differs from the expected one: (name, expected, emitted).
fn differences(
    expected: &BTreeMap<String, f64>,
    got: &BTreeMap<String, f64>,
) -> Vec<(String, f64, f64)> {
    expected
        .iter()
        .filter_map(|(n, &want)| {
            let have = got.get(n).copied().unwrap_or(0.0);
            (have != want).then(|| (n.clone(), want, have))
        })
        .collect()
}

/// Polls (every 200 ms, at most `limit`) until every expected name has reached its total in
/// `points()`; returns how long that took, or `None`.
fn wait_until_reached(
    limit: Duration,
    expected: &BTreeMap<String, f64>,
    points: impl Fn() -> Vec<Value>,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let got = emitted(&points(), expected);
        if expected
            .iter()
            .all(|(n, &want)| got.get(n).copied().unwrap_or(0.0) >= want)
        {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// Asserts that `points` hold exactly the expected totals, listing every difference.
fn assert_exact(expected: &BTreeMap<String, f64>, points: &[Value], context: &str) {
    let got = emitted(points, expected);
    let diff = differences(expected, &got);
    assert!(
        diff.is_empty(),
        "{context}: {} of {} series differ (name, sent, emitted): {diff:?}",
        diff.len(),
        expected.len()
    );
}

fn forward_series(m: &Meterd, metric: &str, global: &str) -> f64 {
    m.prom(&format!(
        "meterd_forward_{metric}_total{{global=\"{global}\"}}"
    ))
    .unwrap_or(0.0)
}

/// One local → fault proxy → one global: a seeded mix of late answers, cut requests and
/// hang-ups mid-body over twelve intervals; once the proxy passes everything, the global has
/// merged every part exactly once.
#[test]
fn a_fault_mix_is_merged_exactly_once() {
    let global_sink = CaptureServer::start(Behaviour::Ok);
    let local_sink = CaptureServer::start(Behaviour::Ok);
    let g = Meterd::start(&global_config(&global_sink.url(), "127.0.0.1:0", "1s"));
    // Pass 50 %, late answer 25 %, cut request 15 %, kill mid-body 10 %. Seed 58 draws
    // L P L K P L C C P C C P C L P C … (every fault within the first eight requests).
    let proxy = FaultProxy::start(g.addr("http"), Schedule::mix(58, [50, 25, 15, 10]));
    let l = Meterd::start(&local_config(
        "local-1",
        &local_sink.url(),
        std::slice::from_ref(&proxy.url()),
        "1s",
        20,
    ));
    let udp = l.addr("udp");
    let mut traffic = Traffic::new(4);
    let started = Instant::now();
    for _ in 0..12 {
        next_second(250);
        traffic.send_tick(udp);
    }
    l.wait_lines(traffic.lines);
    let under_faults = proxy.summary();

    // Everything passes from now on: the local's buffer drains.
    proxy.set(Fault::Pass);
    let drained = wait_until_reached(Duration::from_secs(25), &traffic.expected, || {
        metric_points(&global_sink)
    });
    // A few more intervals: any late copy of a part would show up now.
    std::thread::sleep(Duration::from_secs(3));
    let points = metric_points(&global_sink);
    let errors = forward_series(&l, "errors", &proxy.url());
    let dropped = forward_series(&l, "dropped", &proxy.url());
    let duplicates = g.prom("meterd_import_duplicates_total").unwrap_or(0.0);
    let received = g.prom("meterd_import_received_total").unwrap_or(0.0);
    eprintln!(
        "fault mix: under faults {under_faults}; in total {}; global import received={received} \
         duplicates={duplicates}; local forward errors={errors} dropped={dropped}; drained after \
         {drained:?}; test ran {:?}",
        proxy.summary(),
        started.elapsed()
    );
    assert_exact(
        &traffic.expected,
        &points,
        &format!(
            "after the fault mix ({}); local log:\n{}",
            proxy.summary(),
            l.log()
        ),
    );
    assert!(proxy.count(Fault::LateAnswer) >= 1, "{}", proxy.summary());
    assert!(proxy.count(Fault::CutRequest) >= 1, "{}", proxy.summary());
    assert!(proxy.count(Fault::KillMidBody) >= 1, "{}", proxy.summary());
    assert!(
        duplicates >= 1.0,
        "a late answer's retry is a duplicate: {duplicates}"
    );
    assert!(errors >= 1.0, "the local counted its failures: {errors}");
    assert_eq!(dropped, 0.0, "nothing aged out of a 20-interval buffer");
}

/// One local → proxy (passing) → a global that is SIGKILLed a few intervals in and restarted on
/// the same port two seconds later: nothing is counted twice, and what is lost is what the killed
/// global had merged and not yet flushed (the interval it received last).
#[test]
fn a_killed_global_loses_at_most_its_unflushed_interval_and_never_counts_twice() {
    let global_sink = CaptureServer::start(Behaviour::Ok);
    let local_sink = CaptureServer::start(Behaviour::Ok);
    let config = global_config(&global_sink.url(), "127.0.0.1:0", "1s");
    let g = Meterd::start(&config);
    let gaddr = g.addr("http");
    let proxy = FaultProxy::start(gaddr, Schedule::Always(Fault::Pass));
    let l = Meterd::start(&local_config(
        "local-1",
        &local_sink.url(),
        std::slice::from_ref(&proxy.url()),
        "1s",
        20,
    ));
    let udp = l.addr("udp");
    let mut traffic = Traffic::new(4);
    for _ in 0..4 {
        next_second(250);
        traffic.send_tick(udp);
    }
    // 600 ms into the next second: the global has merged the interval flushed at its start and
    // will not flush it for another 400 ms.
    next_second(600);
    let received = g.prom("meterd_import_received_total").unwrap_or(0.0);
    assert!(
        received >= 1.0,
        "the global received imports before the kill"
    );
    let flushed_before_kill = global_sink.requests().len();
    drop(g); // SIGKILL
    let killed_at = Instant::now();
    for _ in 0..2 {
        next_second(250);
        traffic.send_tick(udp);
    }
    let down_for = killed_at.elapsed();
    let g2 = Meterd::start(&global_config(&global_sink.url(), &gaddr.to_string(), "1s"));
    for _ in 0..4 {
        next_second(250);
        traffic.send_tick(udp);
    }
    traffic.send_sentinel(udp);
    l.wait_lines(traffic.lines);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(25)
        && sum_named(&metric_points(&global_sink), "ff.sentinel") < 1.0
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        sum_named(&metric_points(&global_sink), "ff.sentinel"),
        1.0,
        "the last interval reached the restarted global ({}); local log:\n{}",
        proxy.summary(),
        l.log()
    );
    std::thread::sleep(Duration::from_secs(2));

    let points = metric_points(&global_sink);
    let got = emitted(&points, &traffic.expected);
    for (name, &want) in &traffic.expected {
        let have = got.get(name).copied().unwrap_or(0.0);
        assert!(
            have <= want,
            "{name}: emitted {have} > sent {want}: counted twice"
        );
    }
    let dropped = forward_series(&l, "dropped", &proxy.url());
    assert_eq!(dropped, 0.0, "nothing aged out of the local's buffer");
    assert!(g2.prom("meterd_import_received_total").unwrap_or(0.0) >= 1.0);
    let mut report = Vec::new();
    for (kind, prefix) in KINDS {
        let sent = kind_total(&traffic.expected, prefix);
        let have = kind_total(&got, prefix);
        let per_tick = traffic.per_tick(prefix);
        let lost_ticks = (sent - have) / per_tick;
        report.push(format!(
            "{kind}: sent {sent} emitted {have} lost {} ({lost_ticks:.2} intervals)",
            sent - have
        ));
        assert!(
            lost_ticks <= 2.0,
            "{kind}: lost {lost_ticks} intervals' worth, more than the killed global held"
        );
    }
    eprintln!(
        "global restart (down {down_for:?}, {flushed_before_kill} flushes before the kill; \
         proxy {}; local forward errors {}): {}",
        proxy.summary(),
        forward_series(&l, "errors", &proxy.url()),
        report.join("; ")
    );
}

/// One local → two globals, one direct and one behind a proxy that flaps every two seconds
/// between a fault (hanging up mid-body, answering late, cutting the request) and passing: every series is emitted exactly
/// once in total across both globals, whichever of them took it in each interval.
#[test]
fn two_globals_one_flapping_merge_exactly_once() {
    let sink1 = CaptureServer::start(Behaviour::Ok);
    let sink2 = CaptureServer::start(Behaviour::Ok);
    let local_sink = CaptureServer::start(Behaviour::Ok);
    let g1 = Meterd::start(&global_config(&sink1.url(), "127.0.0.1:0", "1s"));
    let g2 = Meterd::start(&global_config(&sink2.url(), "127.0.0.1:0", "1s"));
    let proxy = FaultProxy::start(g2.addr("http"), Schedule::Always(Fault::Pass));
    let l = Meterd::start(&local_config(
        "local-1",
        &local_sink.url(),
        &[format!("http://{}", g1.addr("http")), proxy.url()],
        "1s",
        20,
    ));
    let udp = l.addr("udp");
    let mut traffic = Traffic::new(16);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let phases = [
                Fault::KillMidBody,
                Fault::Pass,
                Fault::LateAnswer,
                Fault::Pass,
                Fault::CutRequest,
                Fault::Pass,
            ];
            // At most 10 phases of 2 s; stops early when sending is done.
            'phases: for phase in phases.iter().cycle().take(10) {
                proxy.set(*phase);
                for _ in 0..20 {
                    if stop.load(Ordering::Relaxed) {
                        break 'phases;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            proxy.set(Fault::Pass);
        });
        for _ in 0..12 {
            next_second(250);
            traffic.send_tick(udp);
        }
        stop.store(true, Ordering::Relaxed);
    });
    proxy.set(Fault::Pass);
    l.wait_lines(traffic.lines);
    let both = || {
        let mut p = metric_points(&sink1);
        p.extend(metric_points(&sink2));
        p
    };
    let drained = wait_until_reached(Duration::from_secs(25), &traffic.expected, both);
    std::thread::sleep(Duration::from_secs(3));
    let points = both();
    let ours = |sink: &CaptureServer| {
        metric_points(sink)
            .iter()
            .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("ff.")))
            .count()
    };
    let (on1, on2) = (ours(&sink1), ours(&sink2));
    eprintln!(
        "flapping global: proxy {}; g2 duplicates {}; local forward errors to g2 {}; points \
         from g1 {on1}, from g2 {on2}; drained after {drained:?}",
        proxy.summary(),
        g2.prom("meterd_import_duplicates_total").unwrap_or(0.0),
        forward_series(&l, "errors", &proxy.url()),
    );
    assert_exact(
        &traffic.expected,
        &points,
        &format!(
            "across both globals ({}); local log:\n{}",
            proxy.summary(),
            l.log()
        ),
    );
    assert!(on1 > 0 && on2 > 0, "both globals took series: {on1} {on2}");
    assert!(proxy.count(Fault::KillMidBody) >= 1, "{}", proxy.summary());
    assert!(proxy.count(Fault::LateAnswer) >= 1, "{}", proxy.summary());
    assert!(
        g2.prom("meterd_import_duplicates_total").unwrap_or(0.0) >= 1.0,
        "a late answer's retry is a duplicate"
    );
    assert_eq!(forward_series(&l, "dropped", &proxy.url()), 0.0);
    assert_eq!(
        forward_series(&l, "dropped", &format!("http://{}", g1.addr("http"))),
        0.0
    );
}
