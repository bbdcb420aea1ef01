//! The `meterd` binary: parses the command line, sets up logging, and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use meterd::config::{Config, DEFAULT_CONFIG};

/// A statsd/DogStatsD-compatible metrics aggregator.
///
/// With no subcommand, meterd runs: it listens for statsd lines (UDP 127.0.0.1:8125 by default),
/// aggregates them, and flushes every interval to the configured sinks (the console by default).
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// TOML config file; every key is optional (see `meterd default-config`).
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log filter when RUST_LOG is unset: error, warn, info, debug, trace.
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    log_level: String,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Where meterd's HTTP API is, for the commands that query it.
#[derive(clap::Args)]
struct ApiArgs {
    /// meterd's HTTP API: HOST:PORT (http; https with any --tls-* flag), http://HOST:PORT or
    /// https://HOST:PORT.
    #[arg(
        long,
        default_value = "127.0.0.1:8127",
        value_name = "[SCHEME://]HOST:PORT"
    )]
    api: String,
    /// CA certificates (PEM) to trust for an https API ([http] tls_cert), beside the bundled
    /// public roots.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) to present, for an API that requires one ([http] tls_client_ca).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl ApiArgs {
    /// A client of the API these flags name.
    fn client(self) -> Result<meterd::api_client::ApiClient> {
        let tls = meterd::api_client::ApiTls {
            ca: self.tls_ca,
            identity: self.tls_cert.zip(self.tls_key),
        };
        meterd::api_client::ApiClient::new(&self.api, &tls)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Parse and validate a config file, print the effective config; exit 1 naming the bad key.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
        /// Instead of the effective config, print what the file's `[[mappings]]` make of
        /// `NAME` or `NAME|TYPE` (TYPE: c g ms h d s; without it, any type); repeatable.
        #[arg(long = "map", value_name = "NAME[|TYPE]")]
        map: Vec<String>,
    },
    /// Print the commented default config (the same text as config.example.toml).
    DefaultConfig,
    /// Show the health checks a running meterd holds (GET /api/v1/healthchecks) as a table.
    Checks {
        /// Only this check id.
        #[arg(long)]
        id: Option<String>,
        /// Only this service name.
        #[arg(long)]
        service: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show what the current interval holds (GET /api/v1/cardinality): series and lines per
    /// metric name, distinct values per tag key; refreshed every second until Ctrl-C.
    Top {
        #[command(flatten)]
        api: ApiArgs,
        /// How many names and tag keys to show (largest first).
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: usize,
        /// Print one table and exit (for scripts).
        #[arg(long)]
        once: bool,
    },
    /// Send statsd lines over UDP, or a Unix datagram socket (`-` reads lines from stdin).
    Send {
        /// Lines such as `page.views:1|c` or `api.latency:12|ms|#env:prod`.
        #[arg(required = true)]
        lines: Vec<String>,
        /// Where to send them.
        #[arg(long, default_value = "127.0.0.1:8125", value_name = "HOST:PORT")]
        to: String,
        /// Send to this Unix datagram socket (a `statsd_unix` path) instead of `--to`.
        #[arg(long, value_name = "PATH", conflicts_with = "to")]
        unix: Option<std::path::PathBuf>,
    },
    /// Record what a running meterd receives (every transport, with arrival times) into a file.
    Capture {
        /// How long to capture (1 to 3600).
        #[arg(long, value_name = "S")]
        seconds: u64,
        /// The capture file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
        /// Largest file to write; the capture ends before it would grow past this.
        #[arg(long, default_value_t = meterd::capture_cli::DEFAULT_MAX_BYTES, value_name = "N")]
        max_bytes: u64,
    },
    /// Send a capture file's datagrams again over UDP.
    Replay {
        /// The capture file.
        file: PathBuf,
        /// Where to send them.
        #[arg(long, default_value = "127.0.0.1:8125", value_name = "HOST:PORT")]
        to: String,
        /// Timing: 1.0 as captured, 2.0 twice as fast.
        #[arg(
            long,
            default_value_t = 1.0,
            value_name = "X",
            conflicts_with = "flat_out"
        )]
        speed: f64,
        /// Send as fast as possible, ignoring the captured timing.
        #[arg(long)]
        flat_out: bool,
        /// Largest datagram to send; longer records (TCP reads) are split at line boundaries.
        #[arg(long, default_value_t = meterd::capture_cli::DEFAULT_MAX_DATAGRAM, value_name = "N")]
        max_datagram: usize,
    },
}

fn init_logging(level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn load(path: Option<&PathBuf>) -> Result<(Config, String)> {
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config {}", p.display()))?;
            let c = Config::from_toml(&text).with_context(|| format!("in {}", p.display()))?;
            Ok((c, text))
        }
        None => Ok((Config::default(), String::new())),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::DefaultConfig) => {
            print!("{DEFAULT_CONFIG}");
            Ok(())
        }
        Some(Command::CheckConfig { file, map }) => {
            let (config, text) = load(Some(&file))?;
            let rt = config
                .validate(&text)
                .with_context(|| format!("in {}", file.display()))?;
            if map.is_empty() {
                print!("{}", rt.config.to_effective_toml());
            }
            for query in &map {
                let line = meterd::mapping::Rules::explain(rt.mappings.as_deref(), query)
                    .map_err(anyhow::Error::msg)?;
                println!("{line}");
            }
            eprintln!("{}: ok", file.display());
            Ok(())
        }
        Some(Command::Checks { id, service, api }) => {
            print!(
                "{}",
                meterd::checks_cli::checks(&api.client()?, id.as_deref(), service.as_deref())?
            );
            Ok(())
        }
        Some(Command::Top { api, limit, once }) => {
            meterd::top_cli::top(&api.client()?, limit, once)
        }
        Some(Command::Send { lines, to, unix }) => {
            let (n, to) = match unix {
                Some(path) => (
                    meterd::send::send_unix(&lines, &path)?,
                    path.display().to_string(),
                ),
                None => (meterd::send::send(&lines, &to)?, to),
            };
            eprintln!("sent {n} line(s) to {to}");
            Ok(())
        }
        Some(Command::Capture {
            seconds,
            out,
            api,
            max_bytes,
        }) => {
            let summary = meterd::capture_cli::capture(&api.client()?, seconds, &out, max_bytes)?;
            eprintln!("captured to {}: {summary}", out.display());
            Ok(())
        }
        Some(Command::Replay {
            file,
            to,
            speed,
            flat_out,
            max_datagram,
        }) => {
            use meterd::capture_cli::Pace;
            let pace = if flat_out {
                Pace::FlatOut
            } else {
                Pace::Speed(speed)
            };
            let s = meterd::capture_cli::replay(&file, &to, pace, max_datagram.max(1))?;
            eprintln!(
                "replayed {} to {to}: {} datagram(s), {} bytes sent, {} send error(s); file: {}",
                file.display(),
                s.datagrams,
                s.bytes,
                s.send_errors,
                s.file
            );
            Ok(())
        }
        None => {
            init_logging(&cli.log_level);
            let (config, text) = load(cli.config.as_ref())?;
            let mut rt = config.validate(&text).context("invalid config")?;
            rt.source = cli.config.clone();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("meterd-rt")
                // Datagram readers are plain threads and keep the process's priority; flush
                // rendering and sink encoding yield to them.
                .on_thread_start(meterd::sys::lower_thread_priority)
                .build()
                .context("cannot start the tokio runtime")?;
            runtime.block_on(async {
                let shutdown = meterd::shutdown::install();
                meterd::run(rt, shutdown).await
            })?;
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meterd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
