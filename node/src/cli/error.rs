//! The CLI's errors and the exit code each one maps to. Scripts branch on
//! the exit code, so the mapping is part of the interface (docs/cli.md).

use kafka_protocol::ResponseError;

/// Exit codes. 2 is clap's own code for usage errors; we reuse it for
/// argument values that only we can check (e.g. a `--config` without `=`).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// A local failure: reading stdin, writing stdout, bad input data.
    pub const LOCAL: i32 = 1;
    /// Bad usage: unknown flag, missing argument, malformed value.
    pub const USAGE: i32 = 2;
    /// Cannot connect to a broker, the connection dropped, or a timeout.
    pub const NETWORK: i32 = 3;
    /// The broker answered with a Kafka error code.
    pub const KAFKA: i32 = 4;
    /// The broker's answer could not be used: malformed, oversized, or no
    /// API version both sides support.
    pub const PROTOCOL: i32 = 5;
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out waiting for {addr}")]
    Timeout { addr: String },
    #[error("connection to {addr} lost: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{context}: {name} (error code {code}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kafka {
        context: String,
        code: i16,
        name: String,
        message: Option<String>,
    },
    #[error("malformed response from {addr}: {detail}")]
    Malformed { addr: String, detail: String },
    #[error("broker {addr} does not support {api} in versions {min}..={max} (it serves {served})")]
    Unsupported {
        addr: String,
        api: String,
        min: i16,
        max: i16,
        served: String,
    },
    #[error("{0}")]
    Local(String),
    /// stdout was closed (e.g. `| head`): stop quietly.
    #[error("broken pipe")]
    BrokenPipe,
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Connect { .. } | CliError::Timeout { .. } | CliError::Io { .. } => {
                exit::NETWORK
            }
            CliError::Kafka { .. } => exit::KAFKA,
            CliError::Malformed { .. } | CliError::Unsupported { .. } => exit::PROTOCOL,
            CliError::Local(_) => exit::LOCAL,
            CliError::BrokenPipe => exit::OK,
        }
    }

    /// An error for Kafka error `code` (non-zero) found while doing `context`.
    pub fn kafka(context: impl Into<String>, code: i16, message: Option<&str>) -> Self {
        CliError::Kafka {
            context: context.into(),
            code,
            name: error_name(code),
            message: message.filter(|m| !m.is_empty()).map(str::to_string),
        }
    }

    /// A failure writing output.
    pub fn output(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Local(format!("writing output: {e}"))
        }
    }
}

/// Kafka's name for an error code, e.g. `UNKNOWN_TOPIC_OR_PARTITION`.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".into(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN_ERROR_{c}"),
        Some(e) => {
            let camel = e.to_string();
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, ch) in camel.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_uppercase());
            }
            out
        }
    }
}

/// `Err` for a non-zero error code.
pub fn check(
    context: impl FnOnce() -> String,
    code: i16,
    message: Option<&str>,
) -> Result<(), CliError> {
    if code == 0 {
        Ok(())
    } else {
        Err(CliError::kafka(context(), code, message))
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;
