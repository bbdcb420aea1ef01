//! meterd: a statsd/DogStatsD-compatible metrics aggregator.
//!
//! Data flows top to bottom (ARCHITECTURE.md has the whole map, the threads and the locks):
//!
//! ```text
//! ingest      transports (udp, unix, tcp): bytes in, lines out; one splitter for all
//!   → aggregate::Ingestor   per reader: parse (protocol), encode + hash the key, batch per shard
//!   → aggregate             the interval's sharded state; one lock per shard batch
//!   → flush                 wall-clock ticks: swap the shards, render points off-lock
//!   → sinks / forward       one task per sink (queue, timeout, retries); state to globals
//! ```
//!
//! Beside the flow: [`health`] (health-check results, from `_sc` lines, the API and imports),
//! [`slo`] (service level objectives: config, history, burn rates; counted in `aggregate`,
//! evaluated by `flush`),
//! [`telemetry`] (meterd's own metrics), [`api`] (the HTTP API and status page), [`config`]
//! (TOML → validated [`config::Runtime`]), [`server`] (wiring and shutdown order). Shared leaves:
//! [`point`] (the flushed data model and the clock), [`sys`] (libc calls), [`release`] (the
//! thread that frees each flush's leftovers at the readers' priority), [`units`]
//! (durations), [`instance`] (this process's random id), [`tls`] (PEM files → rustls configs,
//! the reloadable holder listeners read, the HTTPS listener; imports nothing of ours).
//! Clients: [`send`] (`meterd send`), [`checks_cli`] (`meterd checks`), [`top_cli`] (`meterd
//! top`), both API clients through [`api_client`], [`capture_cli`] (`meterd capture`, `meterd
//! replay`); [`shutdown`] is the
//! signal future `main` hands to [`run`].
#![deny(missing_docs)]

pub mod aggregate;
pub mod api;
pub mod api_client;
pub mod capture_cli;
pub mod checks_cli;
pub mod config;
pub mod flush;
pub mod forward;
pub mod health;
pub mod ingest;
pub mod instance;
pub mod mapping;
pub mod point;
pub mod protocol;
pub mod release;
pub mod send;
pub mod server;
pub mod shutdown;
pub mod sinks;
pub mod slo;
pub mod sys;
pub mod telemetry;
pub mod tls;
pub mod top_cli;
pub mod units;

pub use server::run;
