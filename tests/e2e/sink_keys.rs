//! Which flush a sink request carries: an `http` and a `datadog` sink whose receivers fail the
//! first request and accept its retry. Both attempts carry the same `Idempotency-Key`, every
//! other request a key of its own, and the `http` sink's documents carry their key as
//! `idempotency_key` too.

use std::collections::BTreeSet;

use crate::support::*;

/// The `Idempotency-Key` of a request.
fn key(r: &Captured) -> &str {
    r.headers
        .get("idempotency-key")
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no Idempotency-Key on {}", r.path))
}

/// Checks that the first request was retried with its key and its body, and that no other two
/// requests share a key. Returns the keys.
fn retried_once(requests: &[Captured]) -> Vec<String> {
    let keys: Vec<String> = requests.iter().map(|r| key(r).to_owned()).collect();
    assert_eq!(keys[0], keys[1], "the retry changed the key");
    assert_eq!(requests[0].path, requests[1].path);
    assert_eq!(
        requests[0].raw, requests[1].raw,
        "the retry changed the body"
    );
    let distinct: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len() - 1, "{keys:?}");
    keys
}

/// `<instance>-<sink>-<batch>-<part>`.
fn fields(key: &str) -> [&str; 4] {
    let parts: Vec<&str> = key.split('-').collect();
    let [instance, sink, batch, part] = parts[..] else {
        panic!("{key}: not instance-sink-batch-part");
    };
    assert!(
        instance.len() == 16 && instance.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );
    assert!(
        sink.len() == 8 && sink.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );
    assert!(
        batch.parse::<u64>().is_ok() && part.parse::<u64>().is_ok(),
        "{key}"
    );
    [instance, sink, batch, part]
}

#[test]
fn a_retried_batch_carries_the_same_key() {
    let http = CaptureServer::start(Behaviour::FailFirst(1));
    let datadog = CaptureServer::start(Behaviour::FailFirst(1));
    let mut m = Meterd::start(&format!(
        r#"
hostname = "test-host"
interval = "1s"
[ingest]
statsd_udp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
[[sinks]]
type = "http"
url = "{}/ingest"
[[sinks]]
type = "datadog"
url = "{}"
api_key = "k"
"#,
        http.url(),
        datadog.url()
    ));
    send_udp(m.addr("udp"), &[b"keys.count:1|c"]);
    // The failed first batch, its retry, and at least one more batch at each sink.
    wait_for("three requests at each sink", || {
        (http.requests().len() >= 3 && datadog.requests_to("/api/v1/series").len() >= 3)
            .then_some(())
    });
    wait_for("one error and no drop per sink", || {
        let (_, text) = m.http_get("/metrics");
        ["http", "datadog"]
            .iter()
            .all(|sink| {
                prom_value(
                    &text,
                    &format!("meterd_sink_errors_total{{sink=\"{sink}\"}}"),
                ) == Some(1.0)
                    && prom_value(
                        &text,
                        &format!("meterd_sink_dropped_total{{sink=\"{sink}\"}}"),
                    ) == Some(0.0)
            })
            .then_some(())
    });
    let status = m.terminate();
    assert!(status.success(), "exit {status}:\n{}", m.log());

    let http_requests = http.requests();
    let http_keys = retried_once(&http_requests);
    for r in &http_requests {
        // One document per flush: part 0, its key in the body as in the header.
        assert_eq!(r.json()["idempotency_key"], key(r), "{}", r.path);
        assert_eq!(fields(key(r))[3], "0");
    }
    let dd_keys = retried_once(&datadog.requests());
    assert_eq!(datadog.requests()[0].path, "/api/v1/series");

    // One instance; two sinks, told apart by their part of the key; batches never shared.
    let instance = fields(&http_keys[0])[0];
    let http_sink = fields(&http_keys[0])[1];
    let dd_sink = fields(&dd_keys[0])[1];
    assert_ne!(http_sink, dd_sink);
    for k in &http_keys {
        assert_eq!(fields(k)[..2], [instance, http_sink], "{k}");
    }
    for k in &dd_keys {
        assert_eq!(fields(k)[..2], [instance, dd_sink], "{k}");
    }
    let http_batches: BTreeSet<&str> = http_keys.iter().map(|k| fields(k)[2]).collect();
    let dd_batches: BTreeSet<&str> = dd_keys.iter().map(|k| fields(k)[2]).collect();
    assert!(http_batches.is_disjoint(&dd_batches));
}
