//! Origin detection for Unix datagram sockets: which container sent a datagram.
//!
//! With `[ingest] origin_detection` on, a `statsd_unix` socket receives each datagram with its
//! sender's credentials (`SCM_CREDENTIALS`, see [`super::datagram`]); the sender's pid leads to
//! `/proc/PID/cgroup`, whose path names the container: container runtimes put a 64-hex-digit
//! container id in it ([`parse_container_id`]). The reader then tags the datagram's metrics
//! `container_id:ID` unless a line carries its own `|c:ID`.
//!
//! Reading `/proc` per datagram would cost a few system calls each, so every reader thread keeps
//! an [`OriginCache`] of its own (no lock): at most [`CACHE_PIDS`] pids, each answer, including
//! "no container", kept for [`CACHE_TTL`] (a pid is reused once its process exits; a process
//! also may move between cgroups). One lookup per datagram, never per line.

use std::collections::HashMap;
use std::io::Read;
use std::time::{Duration, Instant};

/// Pids an [`OriginCache`] remembers; beyond it the least recently used (by a clock sweep)
/// answer is forgotten.
pub const CACHE_PIDS: usize = 4096;
/// How long an answer is trusted before `/proc/PID/cgroup` is read again.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// Length of a container id: a SHA-256 digest in hex.
const ID_LEN: usize = 64;
/// The most of `/proc/PID/cgroup` read (a cgroup v1 file lists each hierarchy on its own line:
/// a dozen lines of a few hundred bytes).
const MAX_CGROUP_FILE: u64 = 64 * 1024;

/// The container id in the text of a `/proc/PID/cgroup` file, if any.
///
/// Each line is `HIERARCHY:CONTROLLERS:PATH` (cgroup v1: one line per hierarchy; v2: a single
/// `0::PATH`). The id is the deepest path component that is 64 lowercase hex digits, or that
/// ends in them after a `-` or `:` (with an optional `.scope`): Docker's `/docker/ID` and
/// `docker-ID.scope`, containerd's `cri-containerd-ID.scope`, CRI-O's `crio-ID.scope`, Podman's
/// `libpod-ID.scope`, Kubernetes' `/kubepods/…/podUID/ID`. The first line holding one wins (the
/// hierarchies of one process name the same container). Nested containers (Docker in Docker)
/// give the innermost.
pub fn parse_container_id(text: &[u8]) -> Option<&[u8]> {
    text.split(|&b| b == b'\n').find_map(|line| {
        let mut parts = line.splitn(3, |&b| b == b':');
        let path = parts.nth(2)?;
        path.rsplit(|&b| b == b'/').find_map(component_id)
    })
}

/// The container id in one path component (see [`parse_container_id`]).
fn component_id(c: &[u8]) -> Option<&[u8]> {
    let c = c.strip_suffix(b".scope").unwrap_or(c);
    let split = c.len().checked_sub(ID_LEN)?;
    let (head, id) = c.split_at(split);
    let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    let separated = matches!(head.last(), None | Some(b'-' | b':'));
    (separated && id.iter().all(lower_hex)).then_some(id)
}

/// What an [`OriginCache`] lookup did, for the self-metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OriginCounts {
    /// Answered from the cache.
    pub hits: u64,
    /// `/proc/PID/cgroup` read (new pid, or its answer expired).
    pub misses: u64,
}

/// One remembered pid.
struct Slot {
    pid: i32,
    /// The container id, `None` for a process outside any container (or gone).
    id: Option<Box<[u8]>>,
    read_at: Instant,
    /// Set by a cache hit, cleared by the clock hand passing: a slot is evicted only when the
    /// hand finds it without a hit since its last pass.
    referenced: bool,
}

/// A reader thread's pid → container id cache: bounded ([`CACHE_PIDS`]), answers expire after
/// [`CACHE_TTL`], eviction by a clock sweep (second chance). Owned by one thread: no lock.
pub struct OriginCache {
    slots: Vec<Slot>,
    index: HashMap<i32, usize>,
    hand: usize,
    capacity: usize,
    ttl: Duration,
    /// Reused buffer for `/proc/PID/cgroup`.
    buf: Vec<u8>,
    counts: OriginCounts,
    /// Where `/proc` is (a test points it at fixtures).
    proc_root: std::path::PathBuf,
}

impl Default for OriginCache {
    fn default() -> Self {
        OriginCache::new(CACHE_PIDS, CACHE_TTL)
    }
}

impl OriginCache {
    /// A cache of at most `capacity` pids (at least one) whose answers last `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> OriginCache {
        OriginCache {
            slots: Vec::new(),
            index: HashMap::new(),
            hand: 0,
            capacity: capacity.max(1),
            ttl,
            buf: Vec::with_capacity(4096),
            counts: OriginCounts::default(),
            proc_root: std::path::PathBuf::from("/proc"),
        }
    }

    /// The container id of process `pid` as of `now` (a time taken once per receive batch),
    /// `None` outside any container or when its cgroup file cannot be read (the process is
    /// gone, or in a pid namespace meterd cannot see: pid 0).
    pub fn container_id(&mut self, pid: i32, now: Instant) -> Option<&[u8]> {
        if pid <= 0 {
            return None;
        }
        let at = match self.index.get(&pid) {
            Some(&i) => {
                let fresh = self
                    .slots
                    .get(i)
                    .is_some_and(|s| now.saturating_duration_since(s.read_at) < self.ttl);
                if fresh {
                    self.counts.hits += 1;
                    if let Some(s) = self.slots.get_mut(i) {
                        s.referenced = true;
                    }
                } else {
                    self.counts.misses += 1;
                    let id = self.read(pid);
                    if let Some(s) = self.slots.get_mut(i) {
                        s.id = id;
                        s.read_at = now;
                    }
                }
                i
            }
            None => {
                self.counts.misses += 1;
                let id = self.read(pid);
                self.insert(pid, id, now)
            }
        };
        self.slots.get(at)?.id.as_deref()
    }

    /// The id cached for `pid` by an earlier [`OriginCache::container_id`], whatever its age,
    /// without counting or reading anything (a capture records what the lines were tagged with).
    pub fn peek(&self, pid: i32) -> Option<&[u8]> {
        let &i = self.index.get(&pid)?;
        self.slots.get(i)?.id.as_deref()
    }

    /// Takes the counts since the last call.
    pub fn take_counts(&mut self) -> OriginCounts {
        std::mem::take(&mut self.counts)
    }

    /// Stores an answer, evicting one if full; returns its slot.
    fn insert(&mut self, pid: i32, id: Option<Box<[u8]>>, now: Instant) -> usize {
        let slot = Slot {
            pid,
            id,
            read_at: now,
            referenced: false,
        };
        if self.slots.len() < self.capacity {
            self.slots.push(slot);
            let i = self.slots.len() - 1;
            self.index.insert(pid, i);
            return i;
        }
        // Second chance: at most one full turn clears every mark, so two turns always find one.
        let mut victim = self.hand;
        for _ in 0..2 * self.slots.len() {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            match self.slots.get_mut(i) {
                Some(s) if s.referenced => s.referenced = false,
                Some(_) => {
                    victim = i;
                    break;
                }
                None => {}
            }
        }
        if let Some(old) = self.slots.get_mut(victim) {
            self.index.remove(&old.pid);
            *old = slot;
        }
        self.index.insert(pid, victim);
        victim
    }

    /// Reads `/proc/PID/cgroup` and finds the container id in it.
    fn read(&mut self, pid: i32) -> Option<Box<[u8]>> {
        self.buf.clear();
        let path = self.proc_root.join(pid.to_string()).join("cgroup");
        let file = std::fs::File::open(path).ok()?;
        file.take(MAX_CGROUP_FILE).read_to_end(&mut self.buf).ok()?;
        parse_container_id(&self.buf).map(Box::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3e74d3fd9db4c9dd921ae05c2502fb984d0cde1b36e581b13f79c639da4518a1";
    const B: &str = "9b0c8dfa99473c1f8e4d9bb1f1a2c3d4e5f60718293a4b5c6d7e8f9012345678";
    const C: &str = "c7e4eb2c3ad9a4b5f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778a";
    const D: &str = "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970";

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/fixtures/cgroup/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn id_in(name: &str) -> Option<String> {
        parse_container_id(&fixture(name)).map(|id| String::from_utf8_lossy(id).into_owned())
    }

    #[test]
    fn container_ids_of_every_runtime_and_cgroup_version() {
        for (file, want) in [
            ("docker_v1.txt", A),
            ("docker_systemd_v1.txt", A),
            ("docker_v2.txt", A),
            ("containerd_kubepods_v2.txt", B),
            ("crio_kubepods_v1.txt", C),
            ("kubepods_cgroupfs_v1.txt", D),
            ("docker_in_docker_v1.txt", A),
        ] {
            assert_eq!(id_in(file).as_deref(), Some(want), "{file}");
        }
    }

    #[test]
    fn no_container_no_id() {
        for file in ["host_v2.txt", "host_hybrid.txt", "not_an_id.txt"] {
            assert_eq!(id_in(file), None, "{file}");
        }
        for text in ["", "\n", "0::", "0::/", "garbage", "1:cpu", ":::::"] {
            assert_eq!(parse_container_id(text.as_bytes()), None, "{text:?}");
        }
    }

    #[test]
    fn component_shapes() {
        let ok = |c: String| component_id(c.as_bytes()).map(<[u8]>::to_vec);
        let a = A.as_bytes().to_vec();
        assert_eq!(ok(A.to_owned()), Some(a.clone()));
        assert_eq!(ok(format!("{A}.scope")), Some(a.clone()));
        assert_eq!(ok(format!("libpod-{A}.scope")), Some(a.clone()));
        assert_eq!(ok(format!("cri-containerd:{A}")), Some(a.clone()));
        assert_eq!(ok(format!("pod{A}")), None, "no separator");
        assert_eq!(ok(format!("{A}.slice")), None);
        assert_eq!(ok(A[1..].to_owned()), None);
        assert_eq!(ok(A.to_uppercase()), None);
    }

    /// A fake `/proc` with `pid/cgroup` files.
    fn fake_proc(pids: &[(i32, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (pid, file) in pids {
            let d = dir.path().join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("cgroup"), fixture(file)).unwrap();
        }
        dir
    }

    #[test]
    fn answers_are_cached_until_they_expire() {
        let proc = fake_proc(&[(10, "docker_v2.txt"), (11, "host_v2.txt")]);
        let mut cache = OriginCache::new(8, Duration::from_secs(10));
        cache.proc_root = proc.path().to_owned();
        let t0 = Instant::now();
        assert_eq!(cache.container_id(10, t0), Some(A.as_bytes()));
        assert_eq!(cache.container_id(11, t0), None);
        assert_eq!(cache.container_id(12, t0), None, "no such process");
        assert_eq!(cache.container_id(0, t0), None, "pid unknown");
        assert_eq!(cache.take_counts(), OriginCounts { hits: 0, misses: 3 });
        // The process moves to another container: seen once its answer expires, not before;
        // negative answers are cached too.
        std::fs::write(
            proc.path().join("10/cgroup"),
            fixture("crio_kubepods_v1.txt"),
        )
        .unwrap();
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(cache.container_id(10, t1), Some(A.as_bytes()));
        assert_eq!(cache.container_id(11, t1), None);
        assert_eq!(cache.container_id(12, t1), None);
        assert_eq!(cache.take_counts(), OriginCounts { hits: 3, misses: 0 });
        let t2 = t0 + Duration::from_secs(10);
        assert_eq!(cache.container_id(10, t2), Some(C.as_bytes()));
        assert_eq!(cache.take_counts(), OriginCounts { hits: 0, misses: 1 });
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_what_is_used() {
        let pids: Vec<(i32, &str)> = (1..=20).map(|p| (p, "docker_v2.txt")).collect();
        let proc = fake_proc(&pids);
        let mut cache = OriginCache::new(4, Duration::from_secs(10));
        cache.proc_root = proc.path().to_owned();
        let now = Instant::now();
        for pid in 1..=20 {
            assert_eq!(cache.container_id(pid, now), Some(A.as_bytes()));
            // Pid 1 is looked up between every new pid: it stays.
            assert_eq!(cache.container_id(1, now), Some(A.as_bytes()));
            assert!(cache.slots.len() <= 4 && cache.index.len() <= 4);
        }
        let counts = cache.take_counts();
        assert_eq!(counts.misses, 20, "pid 1 was never evicted: {counts:?}");
        assert_eq!(counts.hits, 20);
        // Index and slots agree.
        for (&pid, &i) in &cache.index {
            assert_eq!(cache.slots[i].pid, pid);
        }
    }
}
