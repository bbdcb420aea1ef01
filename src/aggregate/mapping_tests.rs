//! Mapping rules as the readers apply them: identity after mapping, tag precedence, magic
//! tags, drops, reload at commit, and what mapping leaves alone (events, checks, imports).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::key::{encode_key_parts, KeyParts, Scope};
use super::{Aggregator, AggregatorConfig, GaugeDeltas, Ingestor, Limits, State};
use crate::mapping::tests::ROUTES;
use crate::protocol::MetricType;

/// The compiled rules of `toml_text`, as the server installs them.
fn rules(toml_text: &str) -> Option<Arc<crate::mapping::Rules>> {
    crate::mapping::tests::rules(toml_text)
        .unwrap()
        .map(Arc::new)
}

fn aggregator(mapping: &str) -> Arc<Aggregator> {
    let a = Arc::new(Aggregator::new(AggregatorConfig {
        shards: 2,
        limits: Limits::default(),
        gauge_deltas: GaugeDeltas::Dogstatsd,
        hostname: Arc::from("h"),
        gauge_memory_flushes: 1,
    }));
    a.set_mapping(rules(mapping));
    a
}

/// Every series as `name|type scope host [tags] = value`, sorted.
fn series(a: &Aggregator) -> Vec<String> {
    let mut out = Vec::new();
    for table in a.swap().tables {
        for s in table {
            let p = KeyParts::decode(&s.key).unwrap();
            let value = match &s.state {
                State::Counter(v) | State::Gauge(v) => v.to_string(),
                State::Set(set) => format!("{} members", set.estimate()),
                State::Histogram(h) => format!("{} samples", h.count),
            };
            let tags: Vec<&str> = p.tags().collect();
            out.push(format!(
                "{}|{} {:?} {:?} {:?} = {value}",
                p.name,
                p.kind.as_str(),
                p.scope,
                p.host,
                tags
            ));
        }
    }
    out.sort();
    out
}

fn ingest(a: &Arc<Aggregator>, datagram: &str) {
    let mut i = Ingestor::new(a.clone());
    feed(&mut i, datagram);
    i.commit();
}

/// The lines of `datagram`, one by one.
fn feed(i: &mut Ingestor, datagram: &str) {
    for line in datagram.lines() {
        i.ingest_line(line.as_bytes());
    }
}

#[test]
fn mapped_lines_take_the_mapped_identity_and_merge() {
    let a = aggregator(ROUTES);
    ingest(
        &a,
        "api.pay.POST.latency:10|ms\napi.pay.POST.latency:20|ms|#env:prod\n\
         web.requests:1|c\nweb.requests:2|c|@0.5\napi.pay.GET.latency:1|c\nplain:3|c",
    );
    // Two source names, one series: `a.requests` and `b.requests` both map to `requests` but
    // with their own `service`; the same (name, tags) from two names sum.
    ingest(&a, "x.requests:5|c|#service:web\nweb.requests:1|c");
    assert_eq!(
        series(&a),
        [
            "api.latency|ms Default None [\"env:prod\", \"method:POST\", \"route:pay\"] = 1 samples",
            "api.latency|ms Default None [\"method:POST\", \"route:pay\"] = 1 samples",
            "api.pay.GET.latency|c Default None [] = 1",
            "plain|c Default None [] = 3",
            "requests|c Default None [\"service:web\"] = 11",
        ]
    );
}

#[test]
fn line_tags_win_and_magic_tags_host_and_container_survive() {
    let a = aggregator(ROUTES);
    ingest(
        &a,
        "api.pay.POST.latency:1|ms|#route:own,veneurglobalonly,host:h9|c:abc\n\
         a.requests:1|c|#veneurlocalonly:true",
    );
    assert_eq!(
        series(&a),
        [
            "api.latency|ms GlobalOnly Some(\"h9\") [\"container_id:abc\", \"method:POST\", \"route:own\"] = 1 samples",
            "requests|c LocalOnly None [\"service:a\"] = 1",
        ]
    );
}

#[test]
fn drops_are_counted_and_events_and_checks_untouched() {
    let a = aggregator(ROUTES);
    ingest(
        &a,
        "debug.x:1|c\ndebug.y:1|g\n_e{10,2}:x.requests|hi\n_sc|x.requests|0\nkept:1|c",
    );
    let stats = a.stats();
    assert_eq!(stats.lines_dropped_mapping.load(Ordering::Relaxed), 2);
    assert_eq!(stats.mapping_cache_misses.load(Ordering::Relaxed), 3);
    let snap = a.swap();
    assert_eq!(snap.events.len(), 1);
    assert_eq!(snap.events[0].title, "x.requests");
    assert_eq!(snap.service_checks[0].name, "x.requests");
    assert_eq!(snap.tables.iter().map(|t| t.len()).sum::<usize>(), 1);
}

/// New rules reach a running reader at its next commit, with an empty cache; `None` turns
/// mapping off.
#[test]
fn rules_reload_at_commit() {
    let a = aggregator(ROUTES);
    let mut i = Ingestor::new(a.clone());
    feed(&mut i, "a.requests:1|c");
    i.commit();
    a.set_mapping(rules(
        "[[mappings]]\nmatch = \"*.requests\"\nname = \"reqs.$1\"",
    ));
    feed(&mut i, "a.requests:1|c");
    i.commit(); // the batch before the commit still used the old rules
    feed(&mut i, "a.requests:1|c");
    i.commit();
    a.set_mapping(None);
    feed(&mut i, "a.requests:1|c");
    i.commit();
    feed(&mut i, "a.requests:1|c");
    i.commit();
    assert_eq!(
        series(&a),
        [
            "a.requests|c Default None [] = 1",
            "reqs.a|c Default None [] = 2",
            "requests|c Default None [\"service:a\"] = 2",
        ]
    );
    assert_eq!(a.stats().mapping_cache_hits.load(Ordering::Relaxed), 2);
}

/// Forwarded series were mapped by the local that sent them: a global merges them as they
/// are, whatever its own rules.
#[test]
fn imported_series_are_not_mapped_again() {
    let a = aggregator(ROUTES);
    let mut key = Vec::new();
    encode_key_parts(
        &mut key,
        MetricType::Counter,
        Scope::Default,
        None,
        "web.requests",
        None,
        &[],
    );
    assert_eq!(a.merge_series(vec![(key.into(), State::Counter(4.0))]), 0);
    assert_eq!(series(&a), ["web.requests|c Default None [] = 4"]);
}
