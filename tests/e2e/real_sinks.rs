//! The sinks against the real servers (docs/sinks.md): statsd in through a real meterd with a 1 s
//! interval, the data queried back from Prometheus and VictoriaMetrics with PromQL and from
//! InfluxDB 1.x with InfluxQL, values compared exactly. Servers come from `support/servers.rs`;
//! without one a test prints a SKIP line (or fails under `METERD_REQUIRE_SERVERS`).
//!
//! Each test sends all its lines in one datagram, so they land in one interval; counters in the
//! Prometheus sinks are cumulative, so a value seen once stays until more arrives.

use serde_json::{json, Value};

use crate::support::servers;
use crate::support::*;

/// meterd with a 1 s interval, UDP and the API on port 0, and `sinks`.
fn config(sinks: &str) -> String {
    format!(
        r#"
hostname = "real-host"
interval = "1s"
percentiles = [0.5]
aggregates = ["min", "max", "count"]
[ingest]
statsd_udp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
{sinks}
"#
    )
}

/// Sends `lines` in one datagram and waits until meterd has counted them.
fn send(m: &Meterd, lines: &[&str]) {
    let before = m.prom("meterd_lines_received_total").unwrap_or(0.0) as u64;
    send_udp(m.addr("udp"), &[lines.join("\n").as_bytes()]);
    m.wait_lines(before + lines.len() as u64);
}

/// Lines of a counter, a gauge and a timer under `prefix`, with tags.
fn standard_lines(prefix: &str) -> Vec<String> {
    vec![
        format!("{prefix}.hits:3|c|#env:prod,route:/x"),
        format!("{prefix}.hits:2|c|#env:prod,route:/x"),
        format!("{prefix}.temp:21.5|g|#env:prod,canary"),
        format!("{prefix}.lat:10|ms|#env:prod"),
        format!("{prefix}.lat:30|ms|#env:prod"),
        format!("{prefix}.lat:20|ms|#env:prod"),
    ]
}

fn send_standard(m: &Meterd, prefix: &str) {
    let lines = standard_lines(prefix);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    send(m, &refs);
}

/// The status (1 OK, 2 ERROR) of meterd's own check `meterd.sink.NAME`, once it exists.
fn sink_check(m: &Meterd, name: &str, want: u64) {
    let id = format!("meterd.sink.{name}");
    wait_for(&format!("{id} to be {want}"), || {
        let (status, body) = m.http_get(&format!("/api/v1/healthchecks?id={id}"));
        let doc: Value = serde_json::from_str(&body).ok()?;
        let check = doc["healthChecks"].as_array()?.first()?.clone();
        (status == 200 && check["status"] == want).then_some(())
    });
}

/// The Prometheus conventions, as both Prometheus and VictoriaMetrics must show them after
/// remote write: `_total` counters cumulative across flushes, gauges, timer aggregates, labels.
fn check_remote_write(server: &servers::Server, m: &Meterd) {
    send_standard(m, "rw");
    let labels = server.wait_promql(r#"rw_hits_total{env="prod",route="/x"}"#, 5.0);
    assert_eq!(
        labels,
        json!({"__name__": "rw_hits_total", "env": "prod", "route": "/x", "host": "real-host"})
    );
    let labels = server.wait_promql("rw_temp", 21.5);
    assert_eq!(labels["canary"], "true");
    server.wait_promql(r#"rw_lat_count_total{env="prod"}"#, 3.0);
    server.wait_promql(r#"rw_lat_max{env="prod"}"#, 30.0);
    server.wait_promql(r#"rw_lat_min{env="prod"}"#, 10.0);
    // A later flush adds to the running total.
    send(m, &["rw.hits:4|c|#env:prod,route:/x"]);
    server.wait_promql(r#"rw_hits_total{env="prod",route="/x"}"#, 9.0);
    sink_check(m, "prometheus_remote_write", 1);
}

#[test]
fn remote_write_into_prometheus() {
    let Some(prom) = servers::prometheus("remote_write_into_prometheus", None) else {
        return;
    };
    let m = Meterd::start(&config(&format!(
        "[[sinks]]\ntype = \"prometheus_remote_write\"\nurl = \"{}/api/v1/write\"\n",
        prom.url()
    )));
    check_remote_write(&prom, &m);
    // rate() works on the cumulative counter.
    let rate = prom.promql(r#"rate(rw_hits_total{env="prod"}[1m])"#);
    assert!(
        rate.iter().all(|(_, v)| *v >= 0.0),
        "counter went down: {rate:?}"
    );
    assert_eq!(
        m.prom("meterd_sink_dropped_total{sink=\"prometheus_remote_write\"}"),
        Some(0.0)
    );
}

#[test]
fn remote_write_into_victoria_metrics() {
    let Some(vm) = servers::victoria_metrics("remote_write_into_victoria_metrics") else {
        return;
    };
    let m = Meterd::start(&config(&format!(
        "[[sinks]]\ntype = \"prometheus_remote_write\"\nurl = \"{}/api/v1/write\"\n\
         batch_max_bytes = 2048\n",
        vm.url()
    )));
    check_remote_write(&vm, &m);
}

#[test]
fn influxdb_v1_into_influxdb() {
    let Some(influx) = servers::influxdb("influxdb_v1_into_influxdb") else {
        return;
    };
    let m = Meterd::start(&config(&format!(
        "[[sinks]]\ntype = \"influxdb\"\nurl = \"{url}\"\n\
         [[sinks]]\ntype = \"influxdb\"\nname = \"no-such-db\"\nurl = \"{url}\"\n\
         database = \"missing\"\nmax_retries = 0\n",
        url = influx.url()
    )));
    let mut lines = standard_lines("inf");
    lines.push(r"inf.odd name,x=y:7|g|#path:a b=c,k=1:v w,win:C:\dir".to_owned());
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    send(&m, &refs);
    // Counters are per-interval totals here: summed over the flushes they may span.
    influx.wait_influxql(
        "meterd",
        r#"SELECT sum("value") FROM "inf.hits" WHERE "env" = 'prod' AND "route" = '/x' AND "host" = 'real-host'"#,
        5.0,
    );
    influx.wait_influxql(
        "meterd",
        r#"SELECT last("value") FROM "inf.temp" WHERE "canary" = 'true'"#,
        21.5,
    );
    influx.wait_influxql("meterd", r#"SELECT sum("value") FROM "inf.lat.count""#, 3.0);
    influx.wait_influxql("meterd", r#"SELECT max("value") FROM "inf.lat.max""#, 30.0);
    // Escaped measurement, tag key and tag value come back as sent.
    influx.wait_influxql(
        "meterd",
        r#"SELECT last("value") FROM "inf.odd name,x=y" WHERE "path" = 'a b=c' AND "k=1" = 'v w' AND "win" = 'C:\\dir'"#,
        7.0,
    );
    // A database that does not exist: 404, not retried, counted, and the sink's check is ERROR.
    sink_check(&m, "influxdb", 1);
    sink_check(&m, "no-such-db", 2);
    let errors = m
        .prom("meterd_sink_errors_total{sink=\"no-such-db\"}")
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "errors: {errors}");
}

#[test]
fn influxdb_v1_and_v2_into_victoria_metrics_with_filters() {
    let Some(vm) =
        servers::victoria_metrics("influxdb_v1_and_v2_into_victoria_metrics_with_filters")
    else {
        return;
    };
    let m = Meterd::start_with_env(
        &config(&format!(
            "[[sinks]]\ntype = \"influxdb\"\nname = \"vm-v1\"\nurl = \"{url}\"\n\
             include = [\"vmi1.\"]\n\
             [[sinks]]\ntype = \"influxdb\"\nname = \"vm-v2\"\nurl = \"{url}\"\nversion = 2\n\
             org = \"acme\"\nbucket = \"metrics\"\ntoken = \"${{METERD_TEST_INFLUX_TOKEN}}\"\n\
             compression = \"gzip\"\ninclude = [\"vmi2.\"]\nexclude = [\"vmi2.secret\"]\n\
             drop_tags = [\"drop\"]\ntags = [\"via:v2\"]\n",
            url = vm.url()
        )),
        &[("METERD_TEST_INFLUX_TOKEN", "t0ken")],
    );
    send(
        &m,
        &[
            r"vmi1.hits:5|c|#env:prod,win:C:\dir",
            "vmi2.hits:7|c|#env:prod,drop:me",
            "vmi2.secret:1|c",
        ],
    );
    // VictoriaMetrics names a line protocol field `MEASUREMENT_FIELD`; `/write?db=` adds `db`.
    let labels = vm.wait_promql(r#"sum_over_time({__name__="vmi1.hits_value"}[5m])"#, 5.0);
    assert_eq!(
        labels,
        json!({"db": "meterd", "env": "prod", "host": "real-host", "win": r"C:\dir"})
    );
    let labels = vm.wait_promql(r#"sum_over_time({__name__="vmi2.hits_value"}[5m])"#, 7.0);
    assert_eq!(
        labels,
        json!({"env": "prod", "host": "real-host", "via": "v2"})
    );
    assert!(vm.promql(r#"{__name__=~"vmi2[.]secret.*"}"#).is_empty());
    sink_check(&m, "vm-v1", 1);
    sink_check(&m, "vm-v2", 1);
}

#[test]
fn datadog_into_victoria_metrics() {
    let Some(vm) = servers::victoria_metrics("datadog_into_victoria_metrics") else {
        return;
    };
    let m = Meterd::start(&config(&format!(
        "[[sinks]]\ntype = \"datadog\"\nurl = \"{}/datadog\"\napi_key = \"test-key\"\n",
        vm.url()
    )));
    send_standard(&m, "ddv");
    // Counters arrive as rates (value ÷ interval) with interval 1 s: summed over time they give
    // the count, however many flushes they span.
    let labels = vm.wait_promql(r#"sum_over_time({__name__="ddv.hits"}[5m])"#, 5.0);
    assert_eq!(
        labels,
        json!({"env": "prod", "route": "/x", "host": "real-host"})
    );
    let labels = vm.wait_promql(r#"{__name__="ddv.temp"}"#, 21.5);
    // VictoriaMetrics turns a bare Datadog tag into a label with a placeholder value.
    assert_eq!(labels["canary"], "no_label_value");
    assert_eq!(labels["env"], "prod");
    vm.wait_promql(r#"sum_over_time({__name__="ddv.lat.count"}[5m])"#, 3.0);
    vm.wait_promql(r#"max_over_time({__name__="ddv.lat.max"}[5m])"#, 30.0);
    // Series and check_run requests were all accepted.
    sink_check(&m, "datadog", 1);
    assert_eq!(
        m.prom("meterd_sink_dropped_total{sink=\"datadog\"}"),
        Some(0.0)
    );
}

#[test]
fn prometheus_scrapes_the_scrape_sink() {
    if servers::find_binary(
        "prometheus_scrapes_the_scrape_sink",
        "prometheus",
        "prometheus",
    )
    .is_none()
    {
        return;
    }
    let m = Meterd::start(&config(
        "[[sinks]]\ntype = \"prometheus\"\nlisten = \"127.0.0.1:0\"\n",
    ));
    let target = m.addr("prometheus");
    let Some(prom) = servers::prometheus("prometheus_scrapes_the_scrape_sink", Some(target)) else {
        return;
    };
    let mut lines = standard_lines("sc");
    lines.push(r#"sc.odd-name:1|g|#path:C:\dir,q:say "hi""#.to_owned());
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    send(&m, &refs);
    let labels = prom.wait_promql(r#"sc_hits_total{env="prod"}"#, 5.0);
    assert_eq!(
        labels,
        json!({"__name__": "sc_hits_total", "env": "prod", "route": "/x",
               "host": "real-host", "job": "meterd", "instance": target.to_string()})
    );
    prom.wait_promql(r#"sc_temp{canary="true"}"#, 21.5);
    prom.wait_promql("sc_lat_count_total", 3.0);
    prom.wait_promql("sc_lat_max", 30.0);
    // Escaped label values come back exactly.
    let labels = prom.wait_promql("sc_odd_name", 1.0);
    assert_eq!(labels["path"], r"C:\dir");
    assert_eq!(labels["q"], r#"say "hi""#);
    // HELP and TYPE reached Prometheus' metadata.
    let metadata = wait_for("sc_hits_total metadata", || {
        let (status, body) = prom.get("/api/v1/metadata?metric=sc_hits_total");
        let doc: Value = serde_json::from_str(&body).ok()?;
        let first = doc["data"]["sc_hits_total"][0].clone();
        (status == 200 && !first.is_null()).then_some(first)
    });
    assert_eq!(
        metadata,
        json!({"type": "counter", "help": "meterd counter sc.hits", "unit": ""})
    );
    // Cumulative across flushes.
    send(&m, &["sc.hits:4|c|#env:prod,route:/x"]);
    prom.wait_promql(r#"sc_hits_total{env="prod"}"#, 9.0);
    sink_check(&m, "prometheus", 1);
}
