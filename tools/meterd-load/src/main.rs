//! `meterd-load`: a deterministic statsd/DogStatsD load generator for benchmarking meterd and its
//! peers, with exact totals of what it sent.
//!
//! It pre-generates a ring of datagrams from a workload [`Spec`] and a seed, sends them with
//! `sendmmsg` from one or more (optionally CPU-pinned) threads, paced per batch or flat out, for a
//! bounded count or duration, and writes a totals file: lines, datagrams, bytes, send errors,
//! rate achieved, and per series what the aggregator must report (counter sums of value ÷ rate,
//! timer sample counts), so that loss is computed exactly from what an aggregator flushed.
//!
//! Series are named `load.<type>.m<index>` (the type code second, so statsd's sumlog backend
//! groups by type); `--prefix P` replaces `load`, so that consecutive runs with different
//! prefixes send disjoint series (series churn in `benches/soak.sh`). The totals file
//! (`--totals`) is one JSON object:
//!
//! ```text
//! lines, datagrams, bytes, avg_lines_per_datagram      what went out (datagrams the kernel accepted)
//! send_errors, send_errors_by_kind {"ECONNREFUSED": n} datagrams refused, by errno; never fatal
//! duration_s, lines_per_s, datagrams_per_s             first send → last send; achieved rates
//! target_rate, count, deadline_s, complete, pacing_resets, seed, threads, command,
//! workload {preset, prefix, series, types, tags, ...}
//! lines_by_type {"c": n, ...}, series_sent
//! counter_sum, counters {"KEY": Σ value ÷ rate}         what the aggregator's counters must sum to
//! timer_samples, timer_count,
//! timers {"KEY": {"type", "samples", "count"}}         samples sent; count = Σ 1 ÷ rate (x.count)
//! gauges {"KEY": lines}, sets {"KEY": distinct members}
//! ```
//!
//! KEY is the series name, followed by `|#` and its tags sorted by bytes and joined with `,` when
//! it has tags: `load.c.m00153|#env:env0,region:r0,service:svc2` (or `P.c.m00153|#…` with
//! `--prefix P`).

mod pacing;
mod send;
mod workload;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};

use send::{SenderConfig, SenderReport, MAX_BATCH};
use workload::{MetricType, Ring, Sent, Spec, Totals};

/// The longest run allowed: every run is bounded, whatever the arguments.
const MAX_DURATION_S: f64 = 3600.0;
/// Format version of the totals file.
const TOTALS_FORMAT: u32 = 1;

/// Workload presets (issue 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Plain statsd: no tags, 10k series, counters/timers/gauges, ~70 lines per 1432 bytes.
    Plain,
    /// DogStatsD: 3 tags, sample rates 1/0.5/0.25, histograms and distributions, 25 lines per
    /// datagram, 100k series.
    Dogstatsd,
    /// Plain statsd with every type: 10k series, 40 % counters, 15 % gauges and timers, 10 %
    /// histograms, sets and distributions, a tenth of the sampled series at `@0.5`, values 0–999.
    Mixed,
}

/// Sends a deterministic mix of statsd/DogStatsD lines over UDP and writes exact totals.
///
/// Every run is bounded: give --count and/or --duration (at most 3600 s). With --rate and
/// --duration but no --count, the count is rate × duration (so the totals are deterministic) and
/// the run stops anyway at duration + max(0.5 s, 5 %). Same seed and arguments → same datagrams
/// and, for a given count, the same totals.
#[derive(Parser, Debug)]
#[command(name = "meterd-load", version, about, long_about)]
struct Cli {
    /// Destination.
    #[arg(long, default_value = "127.0.0.1:8125", value_name = "HOST:PORT")]
    to: String,
    /// Preset the options below start from.
    #[arg(long, value_enum, default_value_t = Workload::Plain)]
    workload: Workload,
    /// First component of every series name: `PREFIX.<type>.m<index>` ([A-Za-z0-9_.-], at most
    /// 64 bytes). Different prefixes give disjoint series.
    #[arg(long, default_value = workload::DEFAULT_PREFIX, value_name = "PREFIX")]
    prefix: String,
    /// Distinct series (name + type + tags) [plain, mixed 10000; dogstatsd 100000].
    #[arg(long, value_name = "N")]
    series: Option<u32>,
    /// Most lines per datagram, 0 = as many as fit in --datagram-bytes [plain 0, dogstatsd 25].
    #[arg(long, value_name = "N")]
    lines_per_datagram: Option<usize>,
    /// Largest datagram payload in bytes, 64..=65507 [1432].
    #[arg(long, value_name = "BYTES")]
    datagram_bytes: Option<usize>,
    /// Type mix as TYPE[:WEIGHT],… with types c, g, s, ms, h, d [plain c:5,ms:3,g:2; dogstatsd
    /// c:3,g:2,ms:1,h:2,d:2; mixed c:8,g:3,ms:3,h:2,s:2,d:2].
    #[arg(long, value_name = "MIX")]
    types: Option<String>,
    /// Tags per line, 0..=16 (each takes 4 values) [plain 0, dogstatsd 3].
    #[arg(long, value_name = "N")]
    tags: Option<u32>,
    /// Sample rates in (0, 1], comma-separated, spread over the series of sampled types (c, ms,
    /// h, d) [plain 1; dogstatsd 1,0.5,0.25; mixed 1 (nine times),0.5].
    #[arg(long, value_name = "RATE[,RATE…]")]
    sample_rate: Option<String>,
    /// Values with one decimal (gauges, timers, histograms, distributions) [dogstatsd only].
    #[arg(long)]
    decimals: Option<bool>,
    /// Lines per second over all threads; 0 = flat out.
    #[arg(long, default_value_t = 0.0, value_name = "LINES_PER_SEC")]
    rate: f64,
    /// Lines to send (a datagram the kernel refuses is counted as an error, not retried).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Seconds to send for, at most 3600.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Seed of the line order and values.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Sender threads, each with its own socket, a share of the rate and count.
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,
    /// CPUs to pin the sender threads to (thread i → the i-th, round robin); the ring is
    /// generated on the first.
    #[arg(long, value_delimiter = ',', value_name = "N[,N…]")]
    cpu: Vec<usize>,
    /// Most datagrams per sendmmsg call (1..=1024); at lower rates batches shrink to ~1 ms.
    #[arg(long, default_value_t = 64, value_name = "N")]
    batch: usize,
    /// Largest burst when a sender falls behind its schedule, in milliseconds of traffic.
    #[arg(long, default_value_t = 10, value_name = "MS")]
    max_lag_ms: u64,
    /// Pre-generated datagrams (default: at least 1024 and two passes over the series).
    #[arg(long, value_name = "N")]
    ring_datagrams: Option<usize>,
    /// Write the totals as JSON to FILE (`-` = stdout).
    #[arg(long, value_name = "FILE")]
    totals: Option<PathBuf>,
    /// Print the first N datagrams (thread 0's order) and exit without sending.
    #[arg(long, value_name = "N")]
    dump: Option<usize>,
    /// No summary line on stderr.
    #[arg(long)]
    quiet: bool,
}

/// `c:5,ms:3` → kinds with weights (a bare type weighs 1).
fn parse_types(text: &str) -> Result<Vec<(MetricType, u32)>> {
    let mut out: Vec<(MetricType, u32)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (code, weight) = match item.split_once(':') {
            Some((c, w)) => (
                c,
                w.parse::<u32>()
                    .with_context(|| format!("--types: bad weight in {item:?}"))?,
            ),
            None => (item, 1),
        };
        let kind = workload::type_from_code(code)
            .with_context(|| format!("--types: unknown type {code:?} (c, g, s, ms, h, d)"))?;
        if out.iter().any(|&(k, _)| k == kind) {
            bail!("--types: {code} given twice");
        }
        out.push((kind, weight));
    }
    Ok(out)
}

/// `1,0.5` → rates.
fn parse_rates(text: &str) -> Result<Vec<f64>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|r| {
            r.parse::<f64>()
                .with_context(|| format!("--sample-rate: bad rate {r:?}"))
        })
        .collect()
}

/// The preset with the command line's overrides.
fn spec_of(cli: &Cli) -> Result<Spec> {
    let mut spec = match cli.workload {
        Workload::Plain => Spec::plain(),
        Workload::Dogstatsd => Spec::dogstatsd(),
        Workload::Mixed => Spec::mixed(),
    };
    spec.prefix.clone_from(&cli.prefix);
    if let Some(n) = cli.series {
        spec.series = n;
    }
    if let Some(n) = cli.lines_per_datagram {
        spec.lines_per_datagram = n;
    }
    if let Some(n) = cli.datagram_bytes {
        spec.datagram_bytes = n;
    }
    if let Some(t) = &cli.types {
        spec.types = parse_types(t)?;
    }
    if let Some(n) = cli.tags {
        spec.tags = n;
    }
    if let Some(r) = &cli.sample_rate {
        spec.sample_rates = parse_rates(r)?;
    }
    if let Some(d) = cli.decimals {
        spec.decimals = d;
    }
    spec.validate().map_err(anyhow::Error::msg)?;
    Ok(spec)
}

/// How long and how much: `(count, deadline)`, refusing unbounded runs.
fn bounds(cli: &Cli) -> Result<(Option<u64>, Duration)> {
    if !(cli.rate.is_finite() && cli.rate >= 0.0) {
        bail!("--rate must be a number of lines per second, 0 for flat out");
    }
    if cli.count == Some(0) {
        bail!("--count must be at least 1");
    }
    let duration = match cli.duration {
        Some(d) if !(d > 0.0 && d <= MAX_DURATION_S) => {
            bail!("--duration must be in (0, {MAX_DURATION_S}] seconds")
        }
        d => d,
    };
    match (cli.count, duration) {
        (None, None) => bail!("give --count and/or --duration: every run must be bounded"),
        (Some(c), Some(d)) => Ok((Some(c), Duration::from_secs_f64(d))),
        (Some(c), None) => Ok((Some(c), Duration::from_secs_f64(MAX_DURATION_S))),
        (None, Some(d)) if cli.rate > 0.0 => {
            // Deterministic: the count the schedule reaches at `d`, with slack for the last batch.
            let count = (cli.rate * d).round().max(1.0);
            let slack = (d * 0.05).max(0.5);
            Ok((
                Some(count as u64),
                Duration::from_secs_f64((d + slack).min(MAX_DURATION_S)),
            ))
        }
        (None, Some(d)) => Ok((None, Duration::from_secs_f64(d))),
    }
}

/// Splits `total` over `threads` senders, the first ones taking the remainder.
fn share(total: u64, threads: usize, thread: usize) -> u64 {
    let t = threads.max(1) as u64;
    total / t + u64::from((thread as u64) < total % t)
}

fn resolve(to: &str) -> Result<SocketAddr> {
    to.to_socket_addrs()
        .with_context(|| format!("cannot resolve --to {to}"))?
        .next()
        .with_context(|| format!("--to {to} resolves to no address"))
}

fn dump(ring: &Ring, n: usize) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let mut plan = workload::Plan::new(0, 1, None);
    for i in 0..n.min(ring.slots.len()) {
        let Some((slot, lines)) = plan.next_datagram(ring) else {
            break;
        };
        if i > 0 {
            let _ = out.write_all(b"\n");
        }
        let _ = out.write_all(ring.payload(slot, lines));
        let _ = out.write_all(b"\n");
    }
}

/// Writes `value` to `path` through a temporary file and a rename, so a reader never sees half.
fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string(value).context("cannot encode the totals")?;
    if path == Path::new("-") {
        println!("{text}");
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text + "\n").with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn run(cli: &Cli) -> Result<()> {
    let spec = spec_of(cli)?;
    if !(1..=64).contains(&cli.threads) {
        bail!("--threads must be 1..=64");
    }
    if !(1..=MAX_BATCH).contains(&cli.batch) {
        bail!("--batch must be 1..={MAX_BATCH}");
    }
    if !(1..=10_000).contains(&cli.max_lag_ms) {
        bail!("--max-lag-ms must be 1..=10000");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(&bad) = cli.cpu.iter().find(|&&c| c >= cpus.max(1024)) {
        bail!("--cpu {bad} does not exist");
    }
    if let Some(&first) = cli.cpu.first() {
        send::pin_to_cpu(first).with_context(|| format!("cannot pin to cpu {first}"))?;
    }
    let min_datagrams = cli.ring_datagrams.unwrap_or(1024);
    let ring = workload::build_ring(&spec, cli.seed, min_datagrams).map_err(anyhow::Error::msg)?;
    if let Some(n) = cli.dump {
        dump(&ring, n);
        return Ok(());
    }
    let (count, deadline) = bounds(cli)?;
    let to = resolve(&cli.to)?;

    let ring = Arc::new(ring);
    let start = Instant::now() + Duration::from_millis(20);
    let mut handles = Vec::with_capacity(cli.threads);
    for t in 0..cli.threads {
        let cfg = SenderConfig {
            to,
            rate: cli.rate / cli.threads as f64,
            count: count.map(|c| share(c, cli.threads, t)),
            deadline,
            max_batch: cli.batch,
            max_lag: Duration::from_millis(cli.max_lag_ms),
            cpu: (!cli.cpu.is_empty()).then(|| cli.cpu[t % cli.cpu.len()]),
            thread: t,
            threads: cli.threads,
        };
        let ring = Arc::clone(&ring);
        handles.push(
            std::thread::Builder::new()
                .name(format!("sender-{t}"))
                .spawn(move || send::run_sender(&cfg, &ring, start))
                .context("cannot start a sender thread")?,
        );
    }
    let mut reports: Vec<SenderReport> = Vec::with_capacity(handles.len());
    for h in handles {
        match h.join() {
            Ok(r) => reports.push(r.context("sender failed")?),
            Err(_) => bail!("a sender thread panicked"),
        }
    }

    let mut sent = Sent::new(ring.slots.len());
    let mut errors = std::collections::BTreeMap::<String, u64>::new();
    let (mut lines, mut datagrams, mut bytes, mut resets) = (0u64, 0u64, 0u64, 0u64);
    let mut elapsed = Duration::ZERO;
    let mut complete = true;
    for r in &reports {
        sent.merge(&r.sent);
        for (&errno, &n) in &r.errors {
            *errors.entry(send::errno_name(errno)).or_default() += n;
        }
        lines += r.lines;
        datagrams += r.datagrams;
        bytes += r.bytes;
        resets += r.lag_resets;
        elapsed = elapsed.max(r.elapsed);
        complete &= r.complete;
    }
    let totals = Totals::of(&spec, &ring, &sent);
    debug_assert_eq!(totals.lines(), lines);
    let secs = elapsed.as_secs_f64().max(1e-9);
    let send_errors: u64 = errors.values().sum();
    if !cli.quiet {
        eprintln!(
            "meterd-load: sent {lines} lines in {datagrams} datagrams ({bytes} bytes) in {secs:.3} s: \
             {:.0} lines/s{}, {send_errors} send errors{}",
            lines as f64 / secs,
            if cli.rate > 0.0 {
                format!(" (target {:.0})", cli.rate)
            } else {
                String::new()
            },
            if complete { "" } else { ", stopped by the deadline" },
        );
    }
    if let Some(path) = &cli.totals {
        let mut doc = serde_json::json!({
            "tool": "meterd-load",
            "format": TOTALS_FORMAT,
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "to": to.to_string(),
            "workload": {
                "preset": format!("{:?}", cli.workload).to_lowercase(),
                "prefix": spec.prefix,
                "series": spec.series,
                "types": spec.types.iter().map(|(k, w)| format!("{}:{w}", k.as_str())).collect::<Vec<_>>().join(","),
                "tags": spec.tags,
                "sample_rates": spec.sample_rates,
                "decimals": spec.decimals,
                "datagram_bytes": spec.datagram_bytes,
                "lines_per_datagram": spec.lines_per_datagram,
                "ring_datagrams": ring.slots.len(),
                "ring_lines": ring.lines.len(),
            },
            "seed": cli.seed,
            "threads": cli.threads,
            "target_rate": cli.rate,
            "count": count,
            "deadline_s": deadline.as_secs_f64(),
            "complete": complete,
            "lines": lines,
            "datagrams": datagrams,
            "bytes": bytes,
            "avg_lines_per_datagram": lines as f64 / datagrams.max(1) as f64,
            "send_errors": send_errors,
            "send_errors_by_kind": errors,
            "pacing_resets": resets,
            "duration_s": secs,
            "lines_per_s": lines as f64 / secs,
            "datagrams_per_s": datagrams as f64 / secs,
        });
        if let (Some(obj), serde_json::Value::Object(per_series)) =
            (doc.as_object_mut(), totals.to_json(&spec))
        {
            obj.extend(per_series);
        }
        write_json(path, &doc)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meterd-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("meterd-load").chain(args.iter().copied()))
            .expect("arguments")
    }

    #[test]
    fn unbounded_runs_are_refused() {
        assert!(bounds(&cli(&[])).is_err());
        assert!(bounds(&cli(&["--rate", "1000"])).is_err());
        assert!(bounds(&cli(&["--duration", "4000"])).is_err());
        assert!(bounds(&cli(&["--duration", "0"])).is_err());
        assert!(bounds(&cli(&["--count", "0"])).is_err());
    }

    #[test]
    fn rate_and_duration_make_a_deterministic_count() {
        let (count, deadline) =
            bounds(&cli(&["--rate", "1000000", "--duration", "2"])).expect("bounds");
        assert_eq!(count, Some(2_000_000));
        assert_eq!(deadline, Duration::from_millis(2500));
        let (count, deadline) = bounds(&cli(&["--duration", "3"])).expect("bounds");
        assert_eq!(count, None);
        assert_eq!(deadline, Duration::from_secs(3));
        let (count, deadline) = bounds(&cli(&["--count", "5"])).expect("bounds");
        assert_eq!(count, Some(5));
        assert_eq!(deadline, Duration::from_secs(3600));
    }

    #[test]
    fn overrides_apply_to_the_preset() {
        let spec = spec_of(&cli(&[
            "--workload",
            "dogstatsd",
            "--series",
            "500",
            "--types",
            "c:2,s",
            "--tags",
            "1",
            "--sample-rate",
            "0.5",
            "--lines-per-datagram",
            "10",
        ]))
        .expect("spec");
        assert_eq!(spec.series, 500);
        assert_eq!(
            spec.types,
            vec![(MetricType::Counter, 2), (MetricType::Set, 1)]
        );
        assert_eq!(spec.tags, 1);
        assert_eq!(spec.sample_rates, vec![0.5]);
        assert_eq!(spec.lines_per_datagram, 10);
        assert_eq!(spec.datagram_bytes, 1432);
        assert_eq!(spec.prefix, "load");
        assert_eq!(
            spec_of(&cli(&["--prefix", "soak7"])).expect("spec").prefix,
            "soak7"
        );
        assert!(spec_of(&cli(&["--prefix", "a:b"])).is_err());
        assert!(spec_of(&cli(&["--types", "c,x"])).is_err());
        assert!(spec_of(&cli(&["--types", "c,c"])).is_err());
        assert!(spec_of(&cli(&["--sample-rate", "2"])).is_err());
    }

    #[test]
    fn shares_add_up() {
        for (total, threads) in [(10u64, 3usize), (1, 4), (1_000_001, 2)] {
            let sum: u64 = (0..threads).map(|t| share(total, threads, t)).sum();
            assert_eq!(sum, total);
        }
    }
}
