//! `odradek`: the broker binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use odradek_node::config::BrokerConfig;
use odradek_node::server::Server;

#[derive(Parser)]
#[command(
    name = "odradek",
    version,
    about = "Odradek: a Kafka-compatible event streaming broker",
    after_help = odradek_node::cli::EXIT_CODES_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    admin: odradek_node::cli::GlobalArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Start a broker (defaults: 127.0.0.1:9092, data in ./data, one shard per CPU).
    Serve(ServeArgs),
    #[command(flatten)]
    Admin(odradek_node::cli::AdminCommand),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML file with settings (Kafka names, e.g. `log.retention.ms = 600000`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (Kafka's `listeners`), e.g. 127.0.0.1:9092.
    #[arg(long)]
    listeners: Option<String>,
    /// Address given to clients (Kafka's `advertised.listeners`).
    #[arg(long)]
    advertised_listeners: Option<String>,
    /// Data directory (Kafka's `log.dirs`).
    #[arg(long)]
    log_dirs: Option<String>,
    /// Number of shards (0 = one per CPU but one, at least one).
    #[arg(long)]
    shards: Option<usize>,
    /// Where GET /metrics (Prometheus) and GET /health are served
    /// (default 127.0.0.1:9644; `none` turns it off).
    #[arg(long)]
    metrics_listener: Option<String>,
    /// Any setting by its Kafka name, repeatable: --set log.retention.ms=60000
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Log level filter (or ODRADEK_LOG), e.g. info, debug, odradek=trace.
    #[arg(long)]
    log_level: Option<String>,
    /// Log lines as JSON.
    #[arg(long)]
    log_json: bool,
}

fn init_logging(level: Option<&str>, json: bool) {
    let filter = level
        .map(str::to_string)
        .or_else(|| std::env::var("ODRADEK_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json || std::env::var("ODRADEK_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn build_config(args: &ServeArgs) -> Result<(BrokerConfig, bool), String> {
    let mut c = BrokerConfig::default();
    let mut advertised = false;
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let keys = c.apply_toml(&text, path).map_err(|e| e.to_string())?;
        advertised |= keys.iter().any(|k| k == "advertised.listeners");
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    advertised |= env.iter().any(|(k, _)| k == "ODRADEK_ADVERTISED_LISTENERS");
    for name in c.apply_env(env.into_iter()).map_err(|e| e.to_string())? {
        tracing::warn!(variable = %name, "environment variable names no setting; ignored");
    }
    let mut set = |k: &str, v: &str| c.set(k, v).map_err(|e| e.to_string());
    if let Some(v) = &args.listeners {
        set("listeners", v)?;
    }
    if let Some(v) = &args.advertised_listeners {
        set("advertised.listeners", v)?;
        advertised = true;
    }
    if let Some(v) = &args.log_dirs {
        set("log.dirs", v)?;
    }
    if let Some(n) = args.shards {
        set("num.shards", &n.to_string())?;
    }
    if let Some(v) = &args.metrics_listener {
        set("metrics.listener", v)?;
    }
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--set {kv}: expected KEY=VALUE"))?;
        advertised |= k.trim() == "advertised.listeners";
        set(k.trim(), v)?;
    }
    Ok((c, advertised))
}

/// Block SIGINT/SIGTERM in every thread (threads inherit the mask) so the
/// main thread can wait for them with sigwait.
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-mask calls on a zeroed sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` was initialised by block_signals.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

fn main() {
    // request buffers reused warm (see the function)
    odradek_engine::process::keep_freed_memory();
    let cli = Cli::parse();
    match cli.command {
        Command::Admin(cmd) => std::process::exit(odradek_node::cli::run(cmd, &cli.admin)),
        Command::Serve(args) => {
            init_logging(args.log_level.as_deref(), args.log_json);
            let (config, advertised) = match build_config(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("odradek: {e}");
                    std::process::exit(2);
                }
            };
            let signals = block_signals();
            let server = match Server::start(config, advertised) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot start: {e}");
                    std::process::exit(1);
                }
            };
            let sig = wait_for_signal(&signals);
            tracing::info!(signal = sig, "shutting down");
            server.shutdown();
        }
    }
}
