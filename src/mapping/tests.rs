//! Rule semantics: statsd_exporter's glob mapping cases where our rules mean the same, regex
//! rules, type filters, actions, errors, the cache and `check-config --map`'s lines.

use std::sync::Arc;

use super::*;

/// The rule set the mapping tests share, the aggregator's and the end-to-end ones too.
pub(crate) const ROUTES: &str = include_str!("../../fixtures/mapping/routes.toml");

/// Compiles the `[[mappings]]` tables of `toml_text` (also the aggregate's mapping tests).
pub(crate) fn rules(toml_text: &str) -> Result<Option<Rules>, RuleError> {
    #[derive(serde::Deserialize)]
    struct File {
        mappings: Vec<RuleConfig>,
    }
    let f: File = toml::from_str(toml_text).unwrap();
    Rules::compile(&f.mappings)
}

fn mapped(name: &str, tags: &[&str], rule: usize) -> Outcome {
    Outcome::Mapped(Mapped {
        rule,
        name: name.to_owned(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
    })
}

#[test]
fn no_rules_compile_to_nothing() {
    assert!(Rules::compile(&[]).unwrap().is_none());
}

/// statsd_exporter's "several mapping definitions" case, as far as our rules mean the same
/// (a capture that does not exist is an error here, not an empty label).
#[test]
fn several_glob_and_regex_rules() {
    let r = rules(
        r#"
        [[mappings]]
        match = "test.dispatcher.*.*.*"
        name = "dispatch_events"
        tags = { processor = "$1", action = "$2", result = "$3", job = "test_dispatcher" }
        [[mappings]]
        match = "test.my-dispatch-host01.name.dispatcher.*.*.*"
        name = "host_dispatch_events"
        tags = { processor = "$1", action = "$2", result = "$3", job = "test_dispatcher" }
        [[mappings]]
        match = "*.*"
        name = "catchall"
        tags = { first = "$1", second = "$2", job = "$1-$2" }
        [[mappings]]
        match = '(.*)\.(.*)-(.*)\.(.*)'
        match_type = "regex"
        name = "proxy_requests_total"
        tags = { job = "$1", protocol = "$2", endpoint = "$3", result = "$4" }
        "#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        r.resolve("test.dispatcher.FooProcessor.send.succeeded", None),
        mapped(
            "dispatch_events",
            &[
                "action:send",
                "job:test_dispatcher",
                "processor:FooProcessor",
                "result:succeeded"
            ],
            0
        )
    );
    assert_eq!(
        r.resolve(
            "test.my-dispatch-host01.name.dispatcher.FooProcessor.send.succeeded",
            None
        ),
        mapped(
            "host_dispatch_events",
            &[
                "action:send",
                "job:test_dispatcher",
                "processor:FooProcessor",
                "result:succeeded"
            ],
            1
        )
    );
    assert_eq!(
        r.resolve("foo.bar", None),
        mapped("catchall", &["first:foo", "job:foo-bar", "second:bar"], 2)
    );
    assert_eq!(r.resolve("foo.bar.baz", None), Outcome::Unchanged);
    assert_eq!(
        r.resolve("proxy-1.http-goober.success", None),
        mapped(
            "proxy_requests_total",
            &[
                "endpoint:goober",
                "job:proxy-1",
                "protocol:http",
                "result:success"
            ],
            3
        )
    );
}

/// statsd_exporter's dynamic names and escaped-star cases.
#[test]
fn names_from_captures() {
    let r = rules(
        r#"
        [[mappings]]
        match = "test1.*.*"
        name = "$1"
        [[mappings]]
        match = "test2.*.*"
        name = "${1}_$2"
        [[mappings]]
        match = 'test3\.(\w+)\.(\w+)'
        match_type = "regex"
        name = "${2}_$1"
        [[mappings]]
        match = "*.test.*"
        name = "name"
        tags = { label = "${2}_foo" }
        "#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        r.resolve("test1.total_requests.count", None),
        mapped("total_requests", &[], 0)
    );
    assert_eq!(
        r.resolve("test2.total_requests.count", None),
        mapped("total_requests_count", &[], 1)
    );
    assert_eq!(
        r.resolve("test3.total_requests.count", None),
        mapped("count_total_requests", &[], 2)
    );
    assert_eq!(
        r.resolve("foo.test.a", None),
        mapped("name", &["label:a_foo"], 3)
    );
}

/// Glob and regex rules interleave in file order: an earlier regex beats a later glob and the
/// other way round; a regex is anchored.
#[test]
fn rule_order_holds_across_match_types() {
    let r = rules(
        r#"
        [[mappings]]
        match = 'api\.(?P<route>[a-z]+)\.latency'
        match_type = "regex"
        name = "regex.${route}"
        [[mappings]]
        match = "api.*.*"
        name = "glob.$1.$2"
        [[mappings]]
        match = 'api\.([a-z]+)\.([0-9]+)'
        match_type = "regex"
        name = "never"
        [[mappings]]
        match = 'b'
        match_type = "regex"
        name = "anchored"
        "#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        r.resolve("api.pay.latency", None),
        mapped("regex.pay", &[], 0)
    );
    assert_eq!(
        r.resolve("api.pay.200", None),
        mapped("glob.pay.200", &[], 1)
    );
    assert_eq!(r.resolve("abc", None), Outcome::Unchanged);
    assert_eq!(r.resolve("b", None), mapped("anchored", &[], 3));
}

#[test]
fn type_filters_actions_and_empty_tags() {
    let r = rules(
        r#"
        [[mappings]]
        match = "noisy.*"
        action = "drop"
        [[mappings]]
        match = "api.*"
        match_metric_type = "timer"
        name = "api.latency"
        tags = { route = "$1" }
        [[mappings]]
        match = "api.*"
        action = "keep"
        [[mappings]]
        match = "*.*"
        name = "all"
        [[mappings]]
        match = '(a)(x?)'
        match_type = "regex"
        name = "r"
        tags = { empty = "$2", full = "$1" }
        [[mappings]]
        match = '(y?)'
        match_type = "regex"
        name = "$1"
        "#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        r.resolve("noisy.thing", Some(MetricType::Counter)),
        Outcome::Dropped(0)
    );
    assert_eq!(
        r.resolve("api.pay", Some(MetricType::Timer)),
        mapped("api.latency", &["route:pay"], 1)
    );
    // A counter skips the timer rule and stops at `keep`, before the catch-all.
    assert_eq!(
        r.resolve("api.pay", Some(MetricType::Counter)),
        Outcome::Kept(2)
    );
    assert_eq!(
        r.resolve("web.hits", Some(MetricType::Gauge)),
        mapped("all", &[], 3)
    );
    // A tag whose value is empty is left out; an empty name leaves the line as it was.
    assert_eq!(r.resolve("a", None), mapped("r", &["full:a"], 4));
    assert_eq!(r.resolve("", None), Outcome::Unchanged);
}

#[test]
fn errors_name_the_rule_and_key() {
    let err = |t: &str| rules(t).unwrap_err().to_string();
    assert!(err(
        "[[mappings]]\nmatch = \"a\"\nname = \"x\"\n[[mappings]]\nmatch = \"(\"\nmatch_type = \"regex\"\nname = \"x\""
    )
    .starts_with("rule 2, key `match`: invalid regex"));
    assert!(err("[[mappings]]\nmatch = \"a.*\"\nname = \"$2\"")
        .starts_with("rule 1, key `name`: capture $2 does not exist"));
    assert!(
        err("[[mappings]]\nmatch = \"a.*\"\nname = \"x\"\ntags = { t = \"${n}\" }")
            .starts_with("rule 1, key `tags.t`: capture `n` does not exist")
    );
    assert!(err("[[mappings]]\nmatch = \"a.*\"\nname = \"\"")
        .starts_with("rule 1, key `name`: the resulting name is empty"));
    assert!(err("[[mappings]]\nmatch = \"a.*\"\nname = \"a:b\"").starts_with("rule 1, key `name`"));
    assert!(err("[[mappings]]\nmatch = \"a.**\"\nname = \"x\"").starts_with("rule 1, key `match`"));
    assert!(
        err("[[mappings]]\nmatch = \"a\"\naction = \"drop\"\nname = \"x\"")
            .starts_with("rule 1, key `name`")
    );
    assert!(
        err("[[mappings]]\nmatch = \"a\"\nname = \"x\"\ntags = { \"a:b\" = \"x\" }")
            .starts_with("rule 1, key `tags.a:b`")
    );
}

#[test]
fn explain_prints_one_line_per_query() {
    let r = rules(ROUTES).unwrap().unwrap();
    let x = |q| Rules::explain(Some(&r), q).unwrap();
    assert_eq!(
        x("api.pay.POST.latency|ms"),
        "api.pay.POST.latency|ms -> api.latency method:POST,route:pay (rule 1)"
    );
    assert_eq!(
        x("api.pay.POST.latency"),
        "api.pay.POST.latency -> api.latency method:POST,route:pay (rule 1)"
    );
    assert_eq!(
        x("api.pay.POST.latency|c"),
        "api.pay.POST.latency|c -> unchanged"
    );
    assert_eq!(x("debug.x|g"), "debug.x|g -> dropped (rule 4)");
    assert_eq!(
        x("legacy.web.count|c"),
        "legacy.web.count|c -> requests service:web (rule 2)"
    );
    assert_eq!(
        x("web.requests|s"),
        "web.requests|s -> requests service:web (rule 3)"
    );
    assert!(Rules::explain(Some(&r), "a|q")
        .unwrap_err()
        .contains("unknown type"));
    assert_eq!(Rules::explain(None, "a|c").unwrap(), "a|c -> unchanged");
}

/// What a cached entry says, as text: `name [tags]`, `dropped` or `unchanged`.
fn describe(c: &Cached) -> String {
    match c {
        Cached::Mapped(m) => {
            let mut tags = smallvec::SmallVec::new();
            m.added_tags(&[], &mut tags);
            let tags: Vec<_> = tags.iter().map(|t| String::from_utf8_lossy(t)).collect();
            format!("{} {tags:?}", String::from_utf8_lossy(m.name()))
        }
        Cached::Dropped => "dropped".to_owned(),
        Cached::Unchanged => "unchanged".to_owned(),
    }
}

/// Every name hashes alike here: the cache must still tell them apart by name and type.
#[test]
fn the_cache_answers_as_the_rules_and_stays_bounded() {
    let r = rules(
        "[[mappings]]\nmatch = \"a.*\"\nname = \"a\"\ntags = { k = \"$1\" }\n[[mappings]]\nmatch = \"d.*\"\naction = \"drop\"",
    )
    .unwrap()
    .unwrap();
    let mut cache = MappingCache::with_capacity(Arc::new(r), 4);
    let mut ask = |name: &[u8], kind| describe(cache.resolve_with_hash(name, kind, 7));
    assert_eq!(ask(b"a.x", MetricType::Counter), "a [\"k:x\"]");
    assert_eq!(ask(b"a.x", MetricType::Counter), "a [\"k:x\"]");
    assert_eq!(ask(b"d.x", MetricType::Counter), "dropped");
    assert_eq!(ask(b"a", MetricType::Counter), "unchanged");
    assert_eq!(ask(b"a", MetricType::Gauge), "unchanged");
    // No rule starts with `z`: answered without being cached or counted.
    assert_eq!(ask(b"z", MetricType::Counter), "unchanged");
    // A name longer than the entry holds in place.
    let long = b"a.a-name-much-longer-than-thirty-two-bytes-in-one-segment";
    assert_eq!(
        cache.take_counts(),
        CacheCounts {
            hits: 1,
            misses: 4,
            evictions: 0
        }
    );
    // Full: the next miss starts over.
    assert_eq!(
        describe(cache.resolve_with_hash(long, MetricType::Counter, 7)),
        "a [\"k:a-name-much-longer-than-thirty-two-bytes-in-one-segment\"]"
    );
    assert_eq!(
        describe(cache.resolve_with_hash(long, MetricType::Counter, 7)),
        "a [\"k:a-name-much-longer-than-thirty-two-bytes-in-one-segment\"]"
    );
    assert_eq!(
        cache.take_counts(),
        CacheCounts {
            hits: 1,
            misses: 1,
            evictions: 4
        }
    );
}

#[test]
fn a_line_tag_shadows_a_rule_tag_of_the_same_key() {
    let r = rules(
        "[[mappings]]\nmatch = \"*\"\nname = \"n\"\ntags = { route = \"pay\", status = \"200\", env = \"x\" }",
    )
    .unwrap()
    .unwrap();
    let mut cache = MappingCache::new(Arc::new(r));
    let Cached::Mapped(m) = cache.resolve(b"a", MetricType::Counter) else {
        panic!("not mapped");
    };
    let mut out = smallvec::SmallVec::new();
    m.added_tags(&[b"route:other", b"env", b"stat:1"], &mut out);
    assert_eq!(out.as_slice(), &[&b"status:200"[..]]);
}

/// With every rule starting with a literal segment, a name starting with none of them skips the
/// cache (neither a hit nor a miss); a rule starting with `*`, or a regex rule, turns that off.
#[test]
fn names_outside_every_rules_first_segment_skip_the_cache() {
    let r = rules(
        "[[mappings]]\nmatch = \"api.*.latency\"\nname = \"api\"\n[[mappings]]\nmatch = \"jobs\"\naction = \"drop\"",
    )
    .unwrap()
    .unwrap();
    assert!(r.may_match(b"api.pay.latency"));
    assert!(r.may_match(b"api"));
    assert!(r.may_match(b"jobs"));
    assert!(!r.may_match(b"apis.pay.latency"));
    assert!(!r.may_match(b"load.c.m00001"));
    let mut cache = MappingCache::new(Arc::new(r));
    assert_eq!(
        describe(cache.resolve(b"load.c.m1", MetricType::Counter)),
        "unchanged"
    );
    assert_eq!(
        describe(cache.resolve(b"api.pay.latency", MetricType::Counter)),
        "api []"
    );
    assert_eq!(
        describe(cache.resolve(b"jobs", MetricType::Counter)),
        "dropped"
    );
    assert_eq!(
        cache.take_counts(),
        CacheCounts {
            hits: 0,
            misses: 2,
            evictions: 0
        }
    );
    for text in [
        "[[mappings]]\nmatch = \"api.*\"\n[[mappings]]\nmatch = \"*.latency\"",
        "[[mappings]]\nmatch = \"api.*\"\n[[mappings]]\nmatch = \"web-*.cpu\"",
        "[[mappings]]\nmatch = \"api.*\"\n[[mappings]]\nmatch = 'load\\..*'\nmatch_type = \"regex\"",
    ] {
        let r = rules(text).unwrap().unwrap();
        assert!(r.may_match(b"load.c.m00001"), "{text}");
    }
}
