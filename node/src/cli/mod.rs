//! The admin CLI: `odradek topic|produce|consume|group|cluster ...`. It
//! speaks the Kafka protocol to any Kafka-compatible broker (not only
//! Odradek), from a blocking client in [`client`]. See docs/cli.md.

pub mod client;
pub mod cluster;
pub mod consume;
pub mod error;
pub mod group;
pub mod member;
pub mod output;
pub mod produce;
pub mod records;
pub mod topic;

use std::time::Duration;

use clap::{Args, Subcommand};

pub use error::{exit, CliError};

/// Shown at the end of `odradek --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes (admin commands):
  0  success
  1  local failure (reading stdin, writing stdout)
  2  usage error (unknown flag, missing or malformed argument)
  3  cannot connect to a broker, connection lost, or timed out
  4  the broker answered with a Kafka error code (name and message on stderr)
  5  unusable answer: malformed, oversized, or no API version both sides support";

/// Flags every admin command takes.
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Broker to bootstrap from (admin commands; env ODRADEK_BOOTSTRAP).
    #[arg(
        long,
        global = true,
        env = "ODRADEK_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
    /// Machine-readable JSON output instead of tables (admin commands).
    #[arg(long, global = true)]
    pub json: bool,
    /// Time limit for connecting and for each request (admin commands).
    #[arg(long, global = true, default_value_t = 10_000, value_name = "MS")]
    pub request_timeout_ms: u64,
}

impl GlobalArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }
}

/// The admin subcommands, flattened into the binary's command list.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Write lines from stdin to a topic.
    Produce(produce::ProduceArgs),
    /// Print records of a topic to stdout.
    Consume(consume::ConsumeArgs),
    /// List and describe consumer groups (members, offsets, lag).
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Cluster id, controller, brokers and API versions.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

/// Run an admin command; returns the process exit code.
pub fn run(cmd: AdminCommand, global: &GlobalArgs) -> i32 {
    let result = match cmd {
        AdminCommand::Topic(c) => topic::run(c, global),
        AdminCommand::Produce(a) => produce::run(a, global),
        AdminCommand::Consume(a) => consume::run(a, global),
        AdminCommand::Group(c) => group::run(c, global),
        AdminCommand::Cluster(c) => cluster::run(c, global),
    };
    match result {
        Ok(()) => exit::OK,
        Err(CliError::BrokenPipe) => exit::OK,
        Err(e) => {
            if global.json {
                // Scripts that asked for JSON get the error as JSON too.
                let mut v = serde_json::json!({"error": e.to_string(), "exit_code": e.exit_code()});
                if let CliError::Kafka { code, name, .. } = &e {
                    v["kafka_error_code"] = serde_json::json!(code);
                    v["kafka_error"] = serde_json::json!(name);
                }
                eprintln!("{v}");
            } else {
                eprintln!("odradek: {e}");
            }
            e.exit_code()
        }
    }
}

/// Parse `k=v`.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}
