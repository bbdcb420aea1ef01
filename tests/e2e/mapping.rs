//! Mapping rules end to end: dotted names renamed and tagged at the sink, two source names in
//! one series, drop rules counted, events untouched, rules reloaded on SIGHUP,
//! `check-config --map` and a bad rule refused.

use crate::support::udp_to_http::one_flush;
use crate::support::*;

/// Shared with the unit tests of the rules and of the aggregator.
const RULES: &str = include_str!("../../fixtures/mapping/routes.toml");

#[test]
fn dotted_names_arrive_renamed_tagged_and_merged() {
    let points = one_flush(RULES, "", |m| {
        let udp = m.addr("udp");
        send_udp(
            udp,
            &[
                b"api.pay.POST.latency:10|ms\napi.pay.POST.latency:20|ms\napi.pay.GET.latency:5|ms",
                b"legacy.web.count:3|c\nweb.requests:4|c\nweb.requests:1|c|@0.5",
                b"debug.noise:1|c\ndebug.noise:1|c\ndebug.other:2|g",
                b"api.pay.POST.latency:1|c\nplain.name:1|c",
            ],
        );
        m.wait_lines(11);
    });
    // Timers of two routes, by tag.
    let tagged = |name: &str, tags: &[&str]| -> f64 {
        points_named(&points, name)
            .iter()
            .filter(|p| {
                let have = p["tags"].as_array().cloned().unwrap_or_default();
                tags.iter().all(|t| have.iter().any(|h| h == t))
            })
            .map(|p| p["value"].as_f64().unwrap_or(0.0))
            .sum()
    };
    assert_eq!(
        tagged("api.latency.count", &["route:pay", "method:POST"]),
        2.0
    );
    assert_eq!(
        tagged("api.latency.count", &["route:pay", "method:GET"]),
        1.0
    );
    assert_eq!(tagged("api.latency.max", &["method:POST"]), 20.0);
    // Two source names, one series, exact: 3 + 4 + 1 ÷ 0.5.
    let requests = points_named(&points, "requests");
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["value"].as_f64(), Some(9.0));
    assert_eq!(requests[0]["tags"], serde_json::json!(["service:web"]));
    // The counter of the timer's name matched no rule (type filter): unchanged.
    assert_eq!(sum_named(&points, "api.pay.POST.latency"), 1.0);
    // Dropped lines are counted, and nothing of them is emitted.
    assert_eq!(
        sum_tagged(&points, "meterd.lines.dropped", "reason:mapping"),
        3.0
    );
    assert!(points_named(&points, "debug.noise").is_empty());
    assert!(points.iter().all(|p| p["name"] != "debug.other"));
    assert!(sum_named(&points, "meterd.mapping.cache_misses") >= 7.0);
}

#[test]
fn events_are_not_mapped() {
    let config = |url: &str| udp_to_http::config(url, "1h", RULES, "");
    avoid_boundary(
        std::time::Duration::from_secs(3600),
        std::time::Duration::from_secs(10),
    );
    let (_m, capture) = run_to_exit(config, |m| {
        send_udp(
            m.addr("udp"),
            &[b"_e{20,4}:api.pay.POST.latency|text|#debug.x"],
        );
        m.wait_lines(1);
    });
    let events: Vec<_> = documents(&capture)
        .iter()
        .flat_map(|d| d["events"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["title"], "api.pay.POST.latency");
}

fn sighup(m: &Meterd) {
    let pid = libc::pid_t::try_from(m.pid()).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
}

#[test]
fn sighup_reloads_the_rules() {
    let capture = CaptureServer::start(Behaviour::Ok);
    let rules = "[[mappings]]\nmatch = \"svc.*.hits\"\nname = \"first\"\ntags = { svc = \"$1\" }\n";
    let m = Meterd::start(&udp_to_http::config(&capture.url(), "1s", rules, ""));
    let udp = m.addr("udp");
    wait_for("the first rule's name at the sink", || {
        send_udp(udp, &[b"svc.a.hits:1|c"]);
        (sum_tagged(&metric_points(&capture), "first", "svc:a") > 0.0).then_some(())
    });
    let path = m.dir.path().join("meterd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"first\"", "\"second.$1\"")).unwrap();
    sighup(&m);
    wait_for("reload logged", || {
        m.log().contains("config reloaded").then_some(())
    });
    wait_for("the new rule's name at the sink", || {
        send_udp(udp, &[b"svc.a.hits:1|c"]);
        (sum_tagged(&metric_points(&capture), "second.a", "svc:a") > 0.0).then_some(())
    });
    // The reader dropped its cache with the old rules: no `first` after `second` appeared.
    let before = sum_named(&metric_points(&capture), "first");
    send_udp(udp, &[b"svc.a.hits:1|c"]);
    wait_for("another flush", || {
        let pts = metric_points(&capture);
        (sum_named(&pts, "second.a") >= 2.0).then_some(())
    });
    assert_eq!(sum_named(&metric_points(&capture), "first"), before);
}

#[test]
fn check_config_map_prints_what_names_become() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, RULES).unwrap();
    let out = meterd_cli()
        .arg("check-config")
        .arg(&path)
        .args(["--map", "api.pay.POST.latency|ms"])
        .args(["--map", "api.pay.POST.latency|c"])
        .args(["--map", "legacy.web.count"])
        .args(["--map", "debug.noise|g"])
        .output()
        .unwrap();
    assert_succeeded(&out);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "api.pay.POST.latency|ms -> api.latency method:POST,route:pay (rule 1)\n\
         api.pay.POST.latency|c -> unchanged\n\
         legacy.web.count -> requests service:web (rule 2)\n\
         debug.noise|g -> dropped (rule 4)\n"
    );
}

#[test]
fn check_config_refuses_a_bad_rule_naming_rule_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        format!("{RULES}\n[[mappings]]\nmatch = \"x.*\"\nname = \"x.$2\"\n"),
    )
    .unwrap();
    let err = check_config_refused(&path);
    assert!(
        err.contains("mappings[4].name") && err.contains("rule 5") && err.contains("$2"),
        "{err}"
    );
    std::fs::write(
        &path,
        "[[mappings]]\nmatch = '(x'\nmatch_type = \"regex\"\nname = \"y\"\n",
    )
    .unwrap();
    let err = check_config_refused(&path);
    assert!(
        err.contains("mappings[0].match (line 2): rule 1: invalid regex"),
        "{err}"
    );
}
