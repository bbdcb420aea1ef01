//! Writes the seed corpus in fuzz/seeds/<target>/ from fixtures/ (and a few built-in bodies):
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds
//! ```
//!
//! - parse_line: every distinct line of fixtures/datagrams/*.txt;
//! - ingest_datagram: every datagram, behind a flags byte that cycles through the 8 modes;
//! - health_body: the bodies of tests/e2e/health.rs, valid and refused;
//! - import_decode: one forward batch per fixture file (every series it aggregates to, encoded
//!   as a local would, plus health results), raw and gzip, and one of large sets and histograms.
//!
//! Output is deterministic; the directories are emptied first.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use meterd::aggregate::{GaugeDeltas, Ingestor};
use meterd::forward::{encode_series, proto::ForwardBatch, proto::VERSION};
use prost::Message as _;

const PING: &str = r#"{"id": "go.micro.healthcheck.ping", "description": "This is a ping healthcheck that succeeds",
 "timestamp": 1451096504, "status": 1, "error": "",
 "service": {"id": "go-server-672d50a7", "name": "go-server", "version": "1.0.0"},
 "results": {"msg": "a successful check", "metric": "1", "stats": "123.0"}}"#;

const PONG: &str = r#"{"id": "go.micro.healthcheck.pong", "description": "This is a pong healthcheck that fails",
 "timestamp": "1451096505", "status": "2", "error": "Unsuccessful", "interval": 60, "ttl": 3600,
 "service": {"name": "go-server", "version": "1.0.0", "nodes": [{"id": "go-server-672d50a7"}]},
 "results": {"latency_ms": 12.5}}"#;

const WORKER: &str =
    r#"{"id": "worker.alive", "status": 1, "service": {"id": "w-1", "name": "worker"}}"#;

fn main() {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = fuzz_dir.join("../fixtures/datagrams");
    let seeds = fuzz_dir.join("seeds");

    let mut files: Vec<PathBuf> = fs::read_dir(&fixtures)
        .expect("fixtures/datagrams")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let fixture_sets: Vec<(String, Vec<Vec<u8>>)> = files
        .iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            (stem, datagrams(&fs::read_to_string(p).expect("fixture")))
        })
        .collect();

    // parse_line
    let dir = reset(&seeds, "parse_line");
    let mut seen = BTreeSet::new();
    for (stem, dgrams) in &fixture_sets {
        let mut n = 0;
        for line in dgrams.iter().flat_map(|d| d.split(|&b| b == b'\n')) {
            if !line.is_empty() && seen.insert(line.to_vec()) {
                write(&dir, &format!("{stem}-{n:02}"), line);
                n += 1;
            }
        }
    }

    // ingest_datagram
    let dir = reset(&seeds, "ingest_datagram");
    let mut flags = 0u8;
    for (stem, dgrams) in &fixture_sets {
        for (i, d) in dgrams.iter().enumerate() {
            let mut seed = vec![flags];
            seed.extend_from_slice(d);
            write(&dir, &format!("{stem}-{i:02}"), &seed);
            flags = (flags + 1) % 8;
        }
    }

    // health_body
    let dir = reset(&seeds, "health_body");
    let fixed = PONG
        .replace("\"status\": \"2\"", "\"status\": 1")
        .replace("Unsuccessful", "");
    let bodies = [
        ("ping", PING.to_owned()),
        ("pong", PONG.to_owned()),
        ("pong-fixed", fixed),
        ("worker", WORKER.to_owned()),
        ("array", format!("[{PING}, {PONG}, {WORKER}]")),
        ("bad-not-json", "{not json".to_owned()),
        ("bad-number", "42".to_owned()),
        (
            "bad-no-id",
            r#"{"status": 1, "service": {"name": "s"}}"#.to_owned(),
        ),
        (
            "bad-status",
            r#"{"id": "a", "status": 5, "service": {"name": "s"}}"#.to_owned(),
        ),
        (
            "bad-service-name",
            r#"{"id": "a", "status": 1, "service": {"name": ""}}"#.to_owned(),
        ),
        (
            "bad-results",
            r#"{"id": "a", "status": 1, "service": {"name": "s"}, "results": {"x": {}}}"#
                .to_owned(),
        ),
        (
            "bad-array-item",
            format!("[{PING}, {{\"id\": \"b\", \"status\": 1}}]"),
        ),
    ];
    for (name, body) in &bodies {
        write(&dir, name, body.as_bytes());
    }

    // import_decode
    let dir = reset(&seeds, "import_decode");
    let health = vec![PING.replace('\n', ""), WORKER.to_owned()];
    let mut big = Vec::new();
    for i in 0..300 {
        writeln!(big, "big.timer:{}|ms|#env:prod", i * 7 % 1000).unwrap();
        writeln!(big, "big.dist:-{}.5|d", i % 250).unwrap();
        writeln!(big, "big.set:member{i}|s").unwrap();
        if i < 40 {
            writeln!(big, "mid.set:member{i}|s|#g:1").unwrap();
        }
    }
    let mut batches = vec![("big".to_owned(), vec![big])];
    batches.extend(fixture_sets.iter().cloned());
    for (i, (stem, dgrams)) in batches.iter().enumerate() {
        let batch = ForwardBatch {
            version: VERSION,
            source: "seed-host".to_owned(),
            series: encoded_series(dgrams),
            health_results: if i % 2 == 0 {
                health.clone()
            } else {
                Vec::new()
            },
        };
        let raw = batch.encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&raw).unwrap();
        let gz = gz.finish().unwrap();
        for (body, gzip) in [(&raw, false), (&gz, true)] {
            let import = meterd::forward::import::decode(body, gzip, 1 << 20, meterd_fuzz::NOW)
                .unwrap_or_else(|e| panic!("{stem}: the seed is not a valid import: {e}"));
            assert_eq!(import.series.len(), batch.series.len(), "{stem}");
        }
        write(&dir, &format!("{stem}-raw"), &raw);
        write(&dir, &format!("{stem}-gzip"), &gz);
    }
}

/// Every series the datagrams aggregate to, encoded as a local forwards it.
fn encoded_series(dgrams: &[Vec<u8>]) -> Vec<meterd::forward::proto::SeriesState> {
    let aggregator = meterd_fuzz::aggregator(GaugeDeltas::Dogstatsd);
    let mut ingestor = Ingestor::new(aggregator.clone());
    for d in dgrams {
        meterd::ingest::ingest_datagram(&mut ingestor, d, false);
    }
    ingestor.commit();
    let mut out: Vec<_> = aggregator
        .swap()
        .tables
        .into_iter()
        .flatten()
        .filter_map(|s| encode_series(&s.key, &s.state))
        .collect();
    for s in &mut out {
        // A sketch with register words carries its heap address in `data` (bits 2..56), which
        // decoding ignores: zero it so the seeds are the same on every run.
        if let Some(set) = s.set.as_mut().filter(|set| set.has_words) {
            set.data &= !(((1u64 << 56) - 1) & !3);
        }
    }
    out.sort_by(|a, b| (&a.name, &a.tags, a.kind).cmp(&(&b.name, &b.tags, b.kind)));
    out
}

/// Splits a fixture file into datagrams (fixtures/README.md: `---` ends a datagram, `;;` lines
/// are comments, `\xNN` is a byte).
fn datagrams(text: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for line in text.lines() {
        if line.starts_with(";;") {
            continue;
        }
        if line == "---" {
            out.push(lines.join(&b'\n'));
            lines.clear();
        } else {
            lines.push(unescape(line));
        }
    }
    if !lines.is_empty() {
        out.push(lines.join(&b'\n'));
    }
    out.retain(|d| !d.is_empty());
    out
}

fn unescape(line: &str) -> Vec<u8> {
    let b = line.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 4 <= b.len() {
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn reset(seeds: &Path, target: &str) -> PathBuf {
    let dir = seeds.join(target);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create seed dir");
    dir
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    fs::write(dir.join(name), data).expect("write seed");
}
