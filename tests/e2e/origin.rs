//! Origin detection on the Unix socket: a sender process moved into a cgroup whose path holds a
//! container id has its metrics (and events) tagged `container_id:ID`; a line's own `|c:` wins;
//! a sender in the hierarchy's root cgroup is not tagged.
//!
//! Needs root (to create a cgroup and move a process into it) and a writable cgroup hierarchy
//! (cgroup v2, or a v1 one such as `pids`); without either it prints a `SKIP` line naming the
//! reason. The cgroup is removed however the test ends ([`TestCgroup`]'s `Drop`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::udp_to_http::start_unix;
use crate::support::*;

/// The container id the test's cgroup names.
const ID: &str = "0e1d2c3b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff0";

/// A cgroup `meterd-e2e-PID/docker-ID.scope` under a writable hierarchy; removed on drop, after
/// moving any process left in it back to the hierarchy's root.
struct TestCgroup {
    /// The hierarchy's mount point (its root cgroup).
    root: PathBuf,
    parent: PathBuf,
    leaf: PathBuf,
}

impl TestCgroup {
    /// Creates the cgroup in the first hierarchy that allows it: cgroup v2 first, then v1 ones
    /// (not `cpuset`, whose cgroups need CPUs and memory nodes assigned before any process).
    fn create() -> Result<TestCgroup, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let mut mounts: Vec<(bool, PathBuf)> = Vec::new();
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(dash) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            let (Some(mount), Some(fstype), Some(opts)) =
                (fields.get(4), fields.get(dash + 1), fields.get(dash + 3))
            else {
                continue;
            };
            match *fstype {
                "cgroup2" => mounts.push((true, PathBuf::from(mount))),
                "cgroup" if !opts.split(',').any(|o| o == "cpuset") => {
                    mounts.push((false, PathBuf::from(mount)))
                }
                _ => {}
            }
        }
        mounts.sort_by_key(|(v2, _)| !v2);
        let mut tried = Vec::new();
        for (_, root) in mounts {
            let parent = root.join(format!("meterd-e2e-{}", std::process::id()));
            let leaf = parent.join(format!("docker-{ID}.scope"));
            match std::fs::create_dir_all(&leaf) {
                Ok(()) => return Ok(TestCgroup { root, parent, leaf }),
                Err(e) => {
                    let _ = std::fs::remove_dir(&parent);
                    tried.push(format!("{}: {e}", root.display()));
                }
            }
        }
        Err(format!(
            "no cgroup hierarchy lets us create a cgroup ({})",
            if tried.is_empty() {
                "none mounted".to_owned()
            } else {
                tried.join("; ")
            }
        ))
    }

    /// Moves process `pid` into the test's cgroup.
    fn add(&self, pid: u32) -> std::io::Result<()> {
        std::fs::write(self.leaf.join("cgroup.procs"), pid.to_string())
    }

    /// Moves process `pid` into the hierarchy's root cgroup.
    fn add_to_root(&self, pid: u32) -> std::io::Result<()> {
        std::fs::write(self.root.join("cgroup.procs"), pid.to_string())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = std::fs::read_to_string(self.leaf.join("cgroup.procs")).unwrap_or_default();
            for pid in left.split_whitespace() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
            // A process still exiting keeps the cgroup busy for a moment.
            if std::fs::remove_dir(&self.leaf).is_ok() || !self.leaf.exists() {
                break;
            }
            if Instant::now() > deadline {
                eprintln!("could not remove {}", self.leaf.display());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir(&self.parent);
    }
}

/// `meterd send --unix PATH -`: sends each line written to its stdin at once and stays alive
/// until its stdin closes (meterd reads the sender's cgroup when the datagram arrives, and an
/// exited process has none). Killed on drop.
struct Sender {
    child: Child,
}

impl Sender {
    fn spawn(socket: &Path) -> Sender {
        let child = Command::new(env!("CARGO_BIN_EXE_meterd"))
            .args(["send", "--unix"])
            .arg(socket)
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meterd send --unix");
        Sender { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `lines` (one datagram: the sender sends what it has whenever its input pauses).
    fn send(&mut self, lines: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(lines.as_bytes()).expect("write to sender");
        stdin.flush().expect("flush sender");
    }

    /// Closes its stdin and checks it exited well.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().expect("wait for meterd send");
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        assert!(status.success(), "{stderr}");
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tags of the one point named `name` with value `value`.
fn tags_of(points: &[Value], name: &str, value: f64) -> Value {
    let found: Vec<Value> = points_named(points, name)
        .into_iter()
        .filter(|p| p["value"] == value)
        .collect();
    assert_eq!(found.len(), 1, "{name} = {value} in {points:#?}");
    found[0]["tags"].clone()
}

#[test]
fn unix_senders_are_tagged_with_their_container() {
    // SAFETY: `geteuid` takes nothing and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP origin: not root (moving a process into a cgroup needs root)");
        return;
    }
    let cgroup = match TestCgroup::create() {
        Ok(c) => c,
        Err(why) => {
            println!("SKIP origin: {why}");
            return;
        }
    };
    let (mut m, capture, path) = start_unix("origin_detection = true");

    let mut inside = Sender::spawn(&path);
    if let Err(e) = cgroup.add(inside.pid()) {
        println!(
            "SKIP origin: cannot move a process into {}: {e}",
            cgroup.leaf.display()
        );
        return;
    }
    // A capture of the same traffic records each datagram's origin.
    let file = m.dir.path().join("traffic.cap");
    let cli = crate::capture::start_capture(&m, &file, &["--seconds", "600"]);
    crate::capture::wait_capture_started(&m);
    inside.send("origin.c:1|c|#k:v\norigin.own:1|c|c:other\n_e{2,2}:hi|yo|d:1796000000\n");

    let mut outside = Sender::spawn(&path);
    cgroup
        .add_to_root(outside.pid())
        .expect("move a process to the root cgroup");
    // The root cgroup of this hierarchy names no container; another hierarchy still might,
    // when the tests themselves run in a container: expect what meterd's parser finds there.
    let outside_cgroup = std::fs::read(format!("/proc/{}/cgroup", outside.pid())).unwrap();
    let outside_id = ::meterd::ingest::origin::parse_container_id(&outside_cgroup)
        .map(|id| String::from_utf8_lossy(id).into_owned());
    assert_ne!(outside_id.as_deref(), Some(ID));
    outside.send("origin.c:2|c|#k:v\n");

    // Both senders stay alive until meterd has read their datagrams.
    m.wait_lines(4);
    inside.finish();
    outside.finish();
    let status = m.terminate();
    assert!(status.success(), "exit {status}:\n{}", m.log());

    let points = metric_points(&capture);
    let tagged = format!("container_id:{ID}");
    assert_eq!(tags_of(&points, "origin.c", 1.0), json!([tagged, "k:v"]));
    let outside_origin = outside_id.clone().unwrap_or_default();
    let untagged = match outside_id {
        Some(id) => json!([format!("container_id:{id}"), "k:v"]),
        None => json!(["k:v"]),
    };
    assert_eq!(tags_of(&points, "origin.c", 2.0), untagged);
    assert_eq!(
        tags_of(&points, "origin.own", 1.0),
        json!(["container_id:other"]),
        "a line's own |c: wins"
    );
    let events: Vec<Value> = documents(&capture)
        .iter()
        .flat_map(|d| d["events"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["tags"], json!([tagged]));
    // One /proc read per sender, and one lookup per datagram (not per line).
    assert_eq!(
        sum_tagged(&points, "meterd.origin.lookups", "result:miss"),
        2.0
    );
    assert_eq!(
        sum_named(&points, "meterd.origin.lookups"),
        sum_named(&points, "meterd.packets.received")
    );

    // The capture holds the inside sender's datagram with its origin, the outside one's without
    // (or with whatever id its cgroup names); replayed into a meterd without origin detection,
    // the same series and events come out, tagged alike.
    let out = crate::capture::wait_child(cli, "meterd capture");
    assert_succeeded(&out);
    let (records, _) = crate::capture::read_file(&file);
    let mut origins: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.origin).into_owned())
        .collect();
    // The two senders' datagrams, in whichever order they arrived.
    origins.sort();
    let mut want = vec![ID.to_owned(), outside_origin];
    want.sort();
    assert_eq!(origins, want);
    let sink_b = crate::capture::replay_into_fresh(&file, 4);
    assert_eq!(
        crate::capture::user_data(&capture),
        crate::capture::user_data(&sink_b)
    );
}
