//! TEMPORARY stub until the sinks land.
#![allow(missing_docs, dead_code, unused)]
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;
use crate::flush::point::FlushBatch;

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig { Console {} }
impl Default for SinkConfig { fn default() -> Self { SinkConfig::Console {} } }
#[derive(Debug)]
pub struct SinkConfigError(pub String);
impl std::fmt::Display for SinkConfigError { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(&self.0) } }
#[derive(Debug, Default)]
pub struct SinkStats { pub sent: AtomicU64, pub errors: AtomicU64, pub dropped: AtomicU64, pub last_ok: AtomicBool }
pub struct SinkSet { stats: Vec<(String, Arc<SinkStats>)> }
impl SinkSet {
    pub fn start(_c: &[SinkConfig], _i: Duration) -> Result<SinkSet, SinkConfigError> { Ok(SinkSet { stats: vec![("console".into(), Arc::default())] }) }
    pub fn validate(_c: &[SinkConfig], _i: Duration) -> Result<(), SinkConfigError> { Ok(()) }
    pub fn submit(&self, b: Arc<FlushBatch>) { eprintln!("{}", serde_json::to_string(&*b).unwrap_or_default()); }
    pub fn stats(&self) -> Vec<(String, Arc<SinkStats>)> { self.stats.clone() }
    pub async fn shutdown(self, _t: Duration) {}
}
