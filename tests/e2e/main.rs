//! End-to-end tests: the real `meterd` binary on ephemeral loopback ports, real statsd clients
//! and raw datagrams in, a capturing HTTP server as the sinks' endpoint.

mod cli;
mod fixtures;
mod fleet;
mod flood;
mod hardening;
mod health;
mod lifecycle;
mod real_sinks;
mod sinks;
mod statsd;
mod support;
