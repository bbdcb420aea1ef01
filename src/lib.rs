//! meterd: a statsd/DogStatsD-compatible metrics aggregator.
//!
//! Data flows top to bottom:
//!
//! ```text
//! ingest (udp, tcp, unix)  bytes in, lines out; one Ingestor per reader
//!   → protocol             one line → Metric | Event | ServiceCheck, borrowing the bytes
//!   → aggregate            key encoded + hashed once, batched per shard, one lock per batch
//!   → flush                wall-clock ticks: swap shards, render SPEC §3 points off-lock
//!   → sinks                one task per sink, bounded queue, timeout, retries, counted drops
//! ```
//!
//! Beside the flow: [`config`] (TOML → validated [`config::Runtime`]), [`api`] (`/healthz`,
//! `/metrics`), [`telemetry`] (meterd's own metrics), [`server`] (wiring and shutdown order),
//! [`send`] (the `meterd send` client).
#![deny(missing_docs)]

pub mod aggregate;
pub mod api;
pub mod checks_cli;
pub mod config;
pub mod flush;
pub mod forward;
pub mod health;
pub mod ingest;
pub mod point;
pub mod protocol;
pub mod send;
pub mod server;
pub mod shutdown;
pub mod sinks;
pub mod sys;
pub mod telemetry;
pub mod units;

pub use server::run;
