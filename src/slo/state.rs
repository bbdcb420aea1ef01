//! `[slo] state_file`: the SLOs' histories written at each flush (a temporary file renamed over
//! the old one, so a crash leaves one whole file) and read at start. The file is versioned JSON;
//! an SLO whose config changed since (its fingerprint differs), or whose history does not fit
//! its windows any more, starts empty. The intervals meterd was down for count as empty ones.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{History, SloSet, Status, Tracked};
use crate::point::unix_now;

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    /// Unix milliseconds of the write.
    saved_at_ms: u64,
    /// Milliseconds per interval at the write.
    interval_ms: u64,
    slos: Vec<Saved>,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    name: String,
    fingerprint: String,
    status: Status,
    history: History,
}

fn now_ms() -> u64 {
    u64::try_from(unix_now().as_millis()).unwrap_or(u64::MAX)
}

impl SloSet {
    /// The state file's path and contents, when one is configured and there are SLOs: taken
    /// under the caller's lock, written outside it with [`write_atomic`].
    pub fn to_state(&self, interval_ms: u64) -> Option<(PathBuf, Vec<u8>)> {
        if self.state_file.as_os_str().is_empty() || self.slos.is_empty() {
            return None;
        }
        let file = File {
            version: VERSION,
            saved_at_ms: now_ms(),
            interval_ms,
            slos: self
                .slos
                .iter()
                .map(|t| Saved {
                    name: t.spec.name.to_string(),
                    fingerprint: t.spec.fingerprint.clone(),
                    status: t.status,
                    history: t.history.clone(),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&file).ok()?;
        Some((self.state_file.clone(), bytes))
    }

    /// Reads the state file, if any, into the SLOs it still describes.
    pub(super) fn load(&mut self) {
        if self.state_file.as_os_str().is_empty() {
            return;
        }
        let bytes = match std::fs::read(&self.state_file) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(file = %self.state_file.display(), error = %e, "SLO state not read; history starts empty");
                return;
            }
        };
        let file: File = match serde_json::from_slice(&bytes) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(file = %self.state_file.display(), error = %e, "SLO state unreadable; history starts empty");
                return;
            }
        };
        if file.version != VERSION || file.interval_ms == 0 {
            tracing::warn!(file = %self.state_file.display(), version = file.version, "SLO state of another version; history starts empty");
            return;
        }
        let missed = now_ms().saturating_sub(file.saved_at_ms) / file.interval_ms;
        let mut restored = 0;
        for saved in file.slos {
            let Some(t) = self
                .slos
                .iter_mut()
                .find(|t| t.spec.fingerprint == saved.fingerprint)
            else {
                continue;
            };
            if !saved.history.fits(t.longest(), t.spec.budget_intervals) {
                continue;
            }
            restore(t, saved, missed);
            restored += 1;
        }
        tracing::info!(file = %self.state_file.display(), restored, "SLO history restored");
    }
}

fn restore(t: &mut Tracked, saved: Saved, missed: u64) {
    t.history = saved.history;
    t.status = saved.status;
    let cap = t.longest().max(t.spec.budget_intervals);
    let missed = usize::try_from(missed).unwrap_or(usize::MAX).min(cap);
    for _ in 0..missed {
        t.history.push(super::Counts::default());
    }
}

/// Writes `bytes` to `path` through a temporary file beside it and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::super::tests::{specs, RATIO};
    use super::*;
    use crate::slo::Counts;

    #[test]
    fn history_survives_a_restart_and_a_changed_slo_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slo.json");
        let mut set = SloSet::new(specs(RATIO, 1), path.clone());
        let counts = HashMap::from([(
            Arc::from("api"),
            Counts {
                good: 9.0,
                total: 10.0,
            },
        )]);
        set.evaluate(&counts);
        let (p, bytes) = set.to_state(1000).unwrap();
        write_atomic(&p, &bytes).unwrap();
        let again = SloSet::new(specs(RATIO, 1), path.clone());
        assert_eq!(again.views()[0].total, 10.0);
        assert_eq!(again.views()[0].good, 9.0);
        let changed = SloSet::new(specs(&RATIO.replace("\"1m\"", "\"2m\""), 1), path.clone());
        assert_eq!(changed.views()[0].total, 0.0);
        std::fs::write(&path, b"not json").unwrap();
        let broken = SloSet::new(specs(RATIO, 1), path);
        assert_eq!(broken.views()[0].total, 0.0);
    }

    #[test]
    fn no_state_file_writes_nothing() {
        let set = SloSet::new(specs(RATIO, 1), PathBuf::new());
        assert!(set.to_state(1000).is_none());
    }
}
