//! End-to-end tests: the real `meterd` binary on ephemeral loopback ports, real statsd clients
//! and raw datagrams in, a capturing HTTP server (or a real metric store) as the sinks' endpoint.
//!
//! `support` is the harness, not tests. Every other module is one topic:
//!
//! - what goes in: `statsd`, `fixtures`, `transports`, `origin`;
//! - what aggregation makes of it: `aggregation`, `limits`, `mapping`, `flood`;
//! - what goes out: `sinks`, `sink_keys`, `real_sinks`, `fleet`, `fleet_faults`, `tls`;
//! - running meterd: `cli`, `health`, `shutdown`, `hardening`, `threads`, `capture`, `cardinality`, `slo`.

// The harness: meterd as a child process, a capture server, points, real metric stores.
mod support;

// What goes in.
// statsd/DogStatsD through a real client (cadence): every metric type, sample rates, tags, host.
mod statsd;
// Captured datagrams per protocol version against expected documents; malformed lines by reason.
mod fixtures;
// TCP with an over-long line; the Unix datagram socket, its file removed and a stale one replaced.
mod transports;
// Origin detection on the Unix socket: senders in a container's cgroup tagged with its id (root).
mod origin;

// What aggregation makes of it.
// Gauge deltas (dogstatsd and etsy), `|T` timestamps across flushes, global tags.
mod aggregation;
// `max_series`, per-metric series and input limits; non-finite aggregates dropped and counted.
mod limits;
// Mapping rules: dotted names renamed and tagged, merged, dropped; SIGHUP; check-config --map.
mod mapping;
// Ten million distinct series over TCP: memory stays bounded, established series stay exact.
mod flood;

// What goes out.
// Datadog, `http` (gzip, headers) and console sinks; failing, hanging and slow sinks.
mod sinks;
// `Idempotency-Key`s: the same on a retried request, new for every other request.
mod sink_keys;
// Into real Prometheus, VictoriaMetrics and InfluxDB (skipped when a binary is missing).
mod real_sinks;
// Locals forwarding to globals: exact merges, a dead global, guarded imports.
mod fleet;
// Forwarding through a fault-injecting proxy, a killed global, a flapping one: merged exactly once.
mod fleet_faults;
// TLS on both ends: HTTPS API, client certificates, mutual TLS forwarding, statsd over TLS,
// config errors naming the key, certificates re-read on SIGHUP.
mod tls;

// Running meterd.
// The command line: default-config, check-config, `meterd send`, --help; /healthz and /metrics.
mod cli;
// Health checks: the API, staleness, service-check lines, self-checks, the status page.
mod health;
// SIGTERM and SIGINT: nothing sent before the signal is lost; the final flush; prompt exit.
mod shutdown;
// SIGHUP reload without loss; secrets that never leak.
mod hardening;
// Datagram readers outrank the flush and sink threads.
mod threads;
// `meterd capture` and `meterd replay`: a replayed capture aggregates exactly as the original.
mod capture;
// What the interval holds: `GET /api/v1/cardinality` and `meterd top`.
mod cardinality;
// SLOs: exact counts, burn-rate checks, the API, history across SIGHUP and restarts, fleets.
mod slo;
