//! Configs of a global and a local meterd on loopback, shared by the fleet topics: the global
//! guards `/import` with a token the local sends; both flush to an `http` capture sink, the global
//! under `{sink}/global` and the local under `{sink}/local`.

/// A global: UDP on port 0, the HTTP API (and `/import`) on `listen`.
pub fn global_config(sink: &str, listen: &str, interval: &str) -> String {
    format!(
        r#"
hostname = "global"
interval = "{interval}"
percentiles = [0.5, 0.99]
[ingest]
statsd_udp = ["127.0.0.1:0"]
[http]
listen = "{listen}"
import_token = "s3cret"
[[sinks]]
type = "http"
url = "{sink}/global"
"#
    )
}

/// A local named `name` forwarding to `globals` (base URLs), keeping `buffer` intervals.
pub fn local_config(
    name: &str,
    sink: &str,
    globals: &[String],
    interval: &str,
    buffer: usize,
) -> String {
    let addrs: Vec<String> = globals.iter().map(|g| format!("\"{g}\"")).collect();
    format!(
        r#"
hostname = "{name}"
interval = "{interval}"
percentiles = [0.5, 0.99]
[ingest]
statsd_udp = ["127.0.0.1:0"]
[http]
listen = "127.0.0.1:0"
[forward]
addresses = [{}]
buffer_intervals = {buffer}
token = "s3cret"
[[sinks]]
type = "http"
url = "{sink}/local"
"#,
        addrs.join(", ")
    )
}
