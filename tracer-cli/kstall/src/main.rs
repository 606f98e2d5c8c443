//! kstall: find out why a Kafka broker is slow, from the broker host, with eBPF.
//!
//! One data path, one direction: [`commands`] (arguments, where output goes) run a
//! [`session`] (discover the broker, attach the probes, drain the kernel: the only code that
//! touches the kernel and /proc), which feeds the analysis core (`kstall-core`, no I/O); the
//! core's summary goes to [`present`] (tables, JSON, Markdown, HTML, Prometheus).
mod commands;
mod present;
mod serve;
mod session;
mod stop;

use commands::{check, export, report, watch};

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

/// `kstall --version`: what exactly runs, for bug reports (set by build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("KSTALL_GIT_COMMIT"),
    ", target ",
    env!("KSTALL_TARGET"),
    ", built ",
    env!("KSTALL_BUILD_DATE"),
    ")"
);

#[derive(Parser)]
#[command(name = "kstall", version = VERSION, about = "Why is this Kafka broker slow? Syscall latency per thread role with page-cache hits and misses, Kafka request latency per API and client, and Produce stalls blamed on the cold reads behind them, from eBPF.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What to trace, and what a stall is: the same for `watch`, `report` and `export`.
#[derive(clap::Args)]
struct TraceArgs {
    /// Broker pid; default: the only process running kafka.Kafka on this host.
    #[arg(long)]
    pid: Option<u32>,
    /// Network-thread calls at least this slow are stalls (page-cache misses always are).
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration)]
    stall_threshold: Duration,
}

impl TraceArgs {
    fn session(self, interval: Duration, duration: Option<Duration>) -> session::SessionOptions {
        session::SessionOptions { pid: self.pid, interval, duration, stall_threshold: self.stall_threshold }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Trace a running broker and show per-role syscall latency with page-cache hit/miss.
    Watch {
        #[command(flatten)]
        trace: TraceArgs,
        /// Refresh period of the live table.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Stop after this long (e.g. 30s, 5m); default: until Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// table: the live full-screen view on a terminal, else the final table; json: the final
        /// summary; jsonl: one summary per interval, then the final one, a line each.
        #[arg(long, value_enum, default_value = "table")]
        format: watch::Format,
    },
    /// Serve Prometheus metrics at /metrics while tracing, following the broker across restarts.
    Export {
        /// With --pid, the broker traced first; after it exits, the next broker found is.
        #[command(flatten)]
        trace: TraceArgs,
        /// Trace the only broker found on this host (by its main class), now and after every
        /// restart: the default without --pid, said explicitly.
        #[arg(long, conflicts_with = "pid")]
        auto: bool,
        /// Address of the metrics endpoint; loopback unless you say otherwise.
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: std::net::SocketAddr,
        /// How often the metrics are refreshed from the kernel.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
        /// Trace for one interval, print one scrape to stdout and exit.
        #[arg(long)]
        once: bool,
        /// TLS and basic auth for the endpoint: a YAML file in the Prometheus exporter-toolkit
        /// format (tls_server_config: cert_file, key_file; basic_auth_users: name: bcrypt hash).
        #[arg(long = "web.config.file", value_name = "PATH")]
        web_config_file: Option<std::path::PathBuf>,
    },
    /// Say whether kstall can run on this kernel and which evidence it will have (loads and
    /// attaches every probe, pointed at no process, then detaches); touches no broker.
    Check {
        #[arg(long, value_enum, default_value = "text")]
        format: check::Format,
        /// Stay attached (pointed at no process) until Ctrl-C or SIGTERM: the bench's floor,
        /// what the hooks cost with programs that return at their first check.
        #[arg(long, hide = true)]
        hold: bool,
    },
    /// Trace a running broker for a while and write a report that explains its latency:
    /// findings first, then the measurements (tables, charts), then the context.
    Report {
        #[command(flatten)]
        trace: TraceArgs,
        /// How long to trace.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Report file, format by extension: .html (self-contained, with charts), .md, .json;
        /// repeat for several formats of the same trace. Default: Markdown on stdout.
        #[arg(long)]
        out: Vec<std::path::PathBuf>,
    },
}

/// Runs a command that traces on the one runtime for everything that waits: the tracing loop,
/// and export's HTTP server.
fn on_runtime(command: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(runtime) => runtime.block_on(command),
        Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
    }
}

fn main() -> ExitCode {
    // Before anything that takes time: a Ctrl-C from here on ends kstall with its output.
    stop::install();
    let cli = Cli::parse();
    // Levels for `export`'s log (RUST_LOG overrides); the other commands print, not log.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match cli.command {
        Command::Check { format, hold } => check::run(format, hold),
        Command::Watch { trace, interval, duration, format } => {
            on_runtime(watch::run(watch::WatchOptions { session: trace.session(interval, duration), format }))
        }
        Command::Export { trace, auto, listen, interval, once, web_config_file } => {
            // --auto conflicts with --pid: both say "the broker found on this host".
            let trace = TraceArgs { pid: if auto { None } else { trace.pid }, ..trace };
            on_runtime(export::run(export::ExportOptions { session: trace.session(interval, None), listen, once, web_config_file }))
        }
        Command::Report { trace, duration, out } => {
            on_runtime(report::run(report::ReportOptions { session: trace.session(Duration::from_secs(1), Some(duration)), out }))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Asked to stop before tracing began: said, and not a failure.
        Err(err) if err.is::<session::Interrupted>() => {
            eprintln!("kstall: {err}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            // One line: the error and its causes, which name the fix.
            eprintln!("kstall: {}", format!("{err:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
