//! The workload's tests: rings, datagrams and totals checked against a naive parser.

use std::collections::BTreeMap;

use super::*;

/// A naive parser of the generated lines, independent of the generator's records.
fn parse(line: &str) -> (String, f64, String, f64, Vec<String>) {
    let (name, rest) = line.split_once(':').expect("name");
    let mut sections = rest.split('|');
    let value = sections.next().expect("value");
    let kind = sections.next().expect("type").to_string();
    let value = if kind == "s" {
        value.trim_start_matches('u').parse().expect("member")
    } else {
        value.parse().expect("number")
    };
    let mut rate = 1.0;
    let mut tags = Vec::new();
    for s in sections {
        if let Some(r) = s.strip_prefix('@') {
            rate = r.parse().expect("rate");
        } else if let Some(t) = s.strip_prefix('#') {
            tags = t.split(',').map(String::from).collect();
        } else {
            panic!("unexpected section {s}");
        }
    }
    tags.sort();
    let key = if tags.is_empty() {
        name.to_string()
    } else {
        format!("{name}|#{}", tags.join(","))
    };
    (key, value, kind, rate, tags)
}

/// Totals computed by parsing every sent datagram back, line by line.
fn parsed_totals(ring: &Ring, sent: &Sent) -> serde_json::Value {
    let mut counters: BTreeMap<String, f64> = BTreeMap::new();
    let mut timers: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    let mut lines = 0u64;
    let mut visit = |payload: &[u8], times: u64| {
        let text = std::str::from_utf8(payload).expect("utf-8");
        for line in text.split('\n') {
            let (key, value, kind, rate, _) = parse(line);
            lines += times;
            match kind.as_str() {
                "c" => *counters.entry(key).or_default() += times as f64 * (value / rate),
                "ms" | "h" | "d" => {
                    let e = timers.entry(key).or_default();
                    e.0 += times;
                    e.1 += times as f64 / rate;
                }
                _ => {}
            }
        }
    };
    for (slot, &times) in sent.slot_counts.iter().enumerate() {
        if times > 0 {
            visit(ring.payload(slot, usize::MAX), times);
        }
    }
    for &(slot, n) in &sent.partial {
        visit(ring.payload(slot, n), 1);
    }
    serde_json::json!({"lines": lines, "counters": counters, "timers": timers})
}

fn small(mut spec: Spec, series: u32) -> Spec {
    spec.series = series;
    spec
}

#[test]
fn same_seed_same_ring() {
    let spec = small(Spec::dogstatsd(), 2000);
    let a = build_ring(&spec, 7, 64).expect("ring");
    let b = build_ring(&spec, 7, 64).expect("ring");
    assert_eq!(a.bytes, b.bytes);
    assert_eq!(a.slots, b.slots);
    assert_eq!(a.lines, b.lines);
    let c = build_ring(&spec, 8, 64).expect("ring");
    assert_ne!(a.bytes, c.bytes);
}

#[test]
fn datagrams_respect_size_and_line_limits() {
    for (spec, max_lines) in [
        (Spec::plain(), usize::MAX),
        (small(Spec::dogstatsd(), 5000), 25),
    ] {
        let ring = build_ring(&spec, 1, 256).expect("ring");
        for (i, s) in ring.slots.iter().enumerate() {
            assert!(s.len <= spec.datagram_bytes, "slot {i}: {} bytes", s.len);
            assert!(s.n_lines >= 1 && s.n_lines <= max_lines);
            let payload = ring.payload(i, usize::MAX);
            assert_eq!(payload.len(), s.len);
            assert_eq!(payload.split(|&b| b == b'\n').count(), s.n_lines);
            assert!(!payload.ends_with(b"\n"));
        }
    }
    let mut tiny = Spec::plain();
    tiny.datagram_bytes = 64;
    tiny.lines_per_datagram = 2;
    let ring = build_ring(&tiny, 1, 16).expect("ring");
    assert!(ring.slots.iter().all(|s| s.len <= 64 && s.n_lines <= 2));
}

#[test]
fn presets_pack_as_the_issue_describes() {
    let plain = build_ring(&Spec::plain(), 1, 1024).expect("ring");
    let lpd = plain.avg_lines_per_datagram();
    assert!(
        (65.0..=75.0).contains(&lpd),
        "plain: {lpd} lines per datagram"
    );
    let dd = build_ring(&Spec::dogstatsd(), 1, 1024).expect("ring");
    let lpd = dd.avg_lines_per_datagram();
    assert!(
        (23.0..=25.0).contains(&lpd),
        "dogstatsd: {lpd} lines per datagram"
    );
}

#[test]
fn every_series_appears_in_the_ring() {
    let spec = small(Spec::dogstatsd(), 3000);
    let ring = build_ring(&spec, 3, 1).expect("ring");
    let mut seen = vec![0u32; 3000];
    for l in &ring.lines {
        seen[l.series as usize] += 1;
    }
    assert!(seen.iter().all(|&n| n >= 2), "two passes over the series");
}

#[test]
fn totals_equal_the_parsed_datagrams() {
    for spec in [small(Spec::plain(), 500), small(Spec::dogstatsd(), 4000)] {
        let ring = build_ring(&spec, 11, 128).expect("ring");
        let mut sent = Sent::new(ring.slots.len());
        let mut rng = Rng::new(99);
        for c in sent.slot_counts.iter_mut() {
            *c = rng.below(4);
        }
        sent.partial.push((3, 2));
        sent.partial.push((5, 1));
        let totals = Totals::of(&spec, &ring, &sent);
        let json = totals.to_json(&spec);
        let parsed = parsed_totals(&ring, &sent);
        assert_eq!(totals.lines(), parsed["lines"].as_u64().expect("lines"));
        assert_eq!(json["counters"], parsed["counters"]);
        let timers: BTreeMap<String, (u64, f64)> = json["timers"]
            .as_object()
            .expect("timers")
            .iter()
            .map(|(k, v)| {
                let samples = v["samples"].as_u64().expect("samples");
                let count = v["count"].as_f64().expect("count");
                (k.clone(), (samples, count))
            })
            .collect();
        assert_eq!(serde_json::json!(timers), parsed["timers"]);
    }
}

#[test]
fn sampled_counter_sums_divide_by_the_rate() {
    let mut spec = small(Spec::dogstatsd(), 64);
    spec.types = vec![(MetricType::Counter, 1)];
    spec.sample_rates = vec![0.25];
    let ring = build_ring(&spec, 5, 4).expect("ring");
    let mut sent = Sent::new(ring.slots.len());
    sent.slot_counts[0] = 1;
    let totals = Totals::of(&spec, &ring, &sent);
    let raw: f64 = ring.slot_lines(0).iter().map(|l| l.value).sum();
    assert_eq!(totals.counters.values().sum::<f64>(), raw * 4.0);
    assert!(std::str::from_utf8(ring.payload(0, 1))
        .expect("utf-8")
        .contains("|c|@0.25|#"));
}

#[test]
fn series_keys_are_unique_and_tags_sorted() {
    let spec = small(Spec::dogstatsd(), 10_000);
    let keys: std::collections::HashSet<String> =
        (0..spec.series).map(|i| spec.series_key(i)).collect();
    assert_eq!(keys.len(), 10_000);
    let key = spec.series_key(77);
    let tags = key.split_once("|#").expect("tags").1;
    let list: Vec<&str> = tags.split(',').collect();
    let mut sorted = list.clone();
    sorted.sort();
    assert_eq!(list, sorted);
    assert_eq!(list.len(), 3);
}

#[test]
fn kinds_follow_the_weights() {
    let spec = Spec::plain();
    let mut n = [0u32; 6];
    for i in 0..spec.series {
        n[spec.kind_of(i).index()] += 1;
    }
    assert_eq!(n[MetricType::Counter.index()], 5000);
    assert_eq!(n[MetricType::Timer.index()], 3000);
    assert_eq!(n[MetricType::Gauge.index()], 2000);
    assert!((0..spec.series).all(|i| spec.rate_of(i) == 1.0));
}

#[test]
fn mixed_preset_has_the_issue_shares() {
    let spec = Spec::mixed();
    let ring = build_ring(&spec, 1, 1024).expect("ring");
    let mut lines = [0u64; 6];
    let (mut sampleable, mut sampled) = (0u64, 0u64);
    for l in &ring.lines {
        let kind = spec.kind_of(l.series);
        lines[kind.index()] += 1;
        if matches!(kind, MetricType::Gauge | MetricType::Set) {
            continue;
        }
        sampleable += 1;
        if spec.rate_of(l.series) == 0.5 {
            sampled += 1;
        }
        if kind != MetricType::Counter {
            assert!(
                (1.0..1000.0).contains(&l.value),
                "{kind:?} value {}",
                l.value
            );
        }
    }
    let total: u64 = lines.iter().sum();
    let share = |k: MetricType| lines[k.index()] as f64 / total as f64;
    for (kind, want) in [
        (MetricType::Counter, 0.40),
        (MetricType::Gauge, 0.15),
        (MetricType::Timer, 0.15),
        (MetricType::Histogram, 0.10),
        (MetricType::Set, 0.10),
        (MetricType::Distribution, 0.10),
    ] {
        assert!(
            (share(kind) - want).abs() < 0.01,
            "{kind:?}: {}",
            share(kind)
        );
    }
    let sampled = sampled as f64 / sampleable as f64;
    assert!((0.07..0.13).contains(&sampled), "sampled share {sampled}");
    let lpd = ring.avg_lines_per_datagram();
    assert!(
        (50.0..=90.0).contains(&lpd),
        "mixed: {lpd} lines per datagram"
    );
    assert!(ring.slots.iter().all(|s| s.len <= 1432));
}

#[test]
fn plans_send_exactly_the_count() {
    let spec = small(Spec::plain(), 300);
    let ring = build_ring(&spec, 1, 8).expect("ring");
    for (threads, count) in [(1usize, 1u64), (1, 12_345), (3, 10_000), (2, 71)] {
        let mut total = 0u64;
        let mut slots_seen = std::collections::HashSet::new();
        for t in 0..threads {
            let share = count / threads as u64 + u64::from((t as u64) < count % threads as u64);
            let mut plan = Plan::new(t, threads, Some(share));
            let mut mine = 0u64;
            while let Some((slot, n)) = plan.next_datagram(&ring) {
                assert!(n >= 1 && n <= ring.slots[slot].n_lines);
                mine += n as u64;
                slots_seen.insert((t, slot));
            }
            assert_eq!(mine, share);
            total += mine;
        }
        assert_eq!(total, count);
    }
    let mut open = Plan::new(0, 1, None);
    for _ in 0..3 * ring.slots.len() {
        assert!(open.next_datagram(&ring).is_some());
    }
}

#[test]
fn oversized_lines_are_refused() {
    let mut spec = Spec::dogstatsd();
    spec.tags = 16;
    spec.datagram_bytes = 64;
    assert!(build_ring(&spec, 1, 1).is_err());
}

#[test]
fn prefix_renames_every_series() {
    let mut spec = small(Spec::dogstatsd(), 1000);
    assert!(spec.series_key(7).starts_with("load.h.m"));
    spec.prefix = "soak-0003".into();
    let ring = build_ring(&spec, 1, 16).expect("ring");
    let keys: std::collections::HashSet<String> =
        (0..spec.series).map(|i| spec.series_key(i)).collect();
    assert!(keys.iter().all(|k| k.starts_with("soak-0003.")));
    for slot in 0..ring.slots.len() {
        let text = std::str::from_utf8(ring.payload(slot, usize::MAX)).expect("utf-8");
        for line in text.split('\n') {
            assert!(line.starts_with("soak-0003."), "{line}");
            assert!(keys.contains(&parse(line).0), "{line}");
        }
    }
}

#[test]
fn validation_names_the_option() {
    for bad in [
        "",
        ".x",
        "x.",
        "a..b",
        "a b",
        "a:b",
        "a|b",
        "a#b",
        &"p".repeat(65),
    ] {
        let mut spec = Spec::plain();
        spec.prefix = bad.into();
        assert!(spec.validate().unwrap_err().contains("--prefix"), "{bad:?}");
    }
    let mut spec = Spec::plain();
    spec.prefix = "soak.g-1_x".into();
    assert!(spec.validate().is_ok());
    let mut spec = Spec::plain();
    spec.sample_rates = vec![0.0];
    assert!(spec.validate().unwrap_err().contains("--sample-rate"));
    let mut spec = Spec::plain();
    spec.series = 0;
    assert!(spec.validate().unwrap_err().contains("--series"));
    let mut spec = Spec::plain();
    spec.datagram_bytes = 70_000;
    assert!(spec.validate().unwrap_err().contains("--datagram-bytes"));
}
