//! Thread priorities: the datagram readers (and the releaser, which frees what they allocated)
//! run at a better nice value than the runtime threads that flush, render and encode.

use crate::support::udp_to_http::config;
use crate::support::*;

/// Nice value of each of a process's threads, by thread name, from `/proc/PID/task/*/stat`.
fn thread_nices(pid: u32) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's tasks");
    for task in tasks.flatten() {
        let path = task.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        // Fields after the `(comm)` one; nice is field 19 of the whole line, 17 after it.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let nice = after
            .split_whitespace()
            .nth(16)
            .and_then(|n| n.parse().ok())
            .expect("a nice field");
        out.push((comm.trim().to_string(), nice));
    }
    out
}

#[test]
fn datagram_readers_outrank_flush_and_sink_threads() {
    let capture = CaptureServer::start(Behaviour::Ok);
    let mut m = Meterd::start(&config(&capture.url(), "1s", "", ""));
    // One flush first, so the blocking pool that renders and encodes has threads.
    send_udp(m.addr("udp"), &[b"prio.c:1|c"]);
    wait_for("a flush at the sink", || {
        (!capture.requests().is_empty()).then_some(())
    });
    let nices = thread_nices(m.pid());
    let readers: Vec<_> = nices
        .iter()
        .filter(|(n, _)| n.starts_with("meterd-udp"))
        .collect();
    let runtime: Vec<_> = nices
        .iter()
        .filter(|(n, _)| n.starts_with("meterd-rt"))
        .collect();
    assert_eq!(readers.len(), 2, "two UDP readers: {nices:?}");
    assert!(!runtime.is_empty(), "runtime threads: {nices:?}");
    let reader_nice = readers[0].1;
    assert!(readers.iter().all(|(_, n)| *n == reader_nice), "{nices:?}");
    for (name, nice) in &runtime {
        assert!(
            *nice >= (reader_nice + 10).min(19),
            "{name} runs at nice {nice}, readers at {reader_nice}: {nices:?}"
        );
    }
    // The releaser frees what readers allocated and trims their arenas: at their priority, so a
    // reader waiting for its arena's lock waits for work that gets the core.
    let release: Vec<_> = nices
        .iter()
        .filter(|(n, _)| n == "meterd-release")
        .collect();
    assert_eq!(release.len(), 1, "one releaser thread: {nices:?}");
    assert_eq!(release[0].1, reader_nice, "{nices:?}");
    assert!(m.terminate().success());
}
