//! The flags every Strata server shares, flattened into each component's `Args`.

use std::net::SocketAddr;
use std::time::Duration;

/// Flags common to every server subcommand (`strata sidecar`, `strata store`, …).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Log level: error, warn, info, debug or trace.
    #[arg(long = "log.level", env = "STRATA_LOG_LEVEL", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Log format: logfmt (human and machine readable) or json.
    #[arg(long = "log.format", env = "STRATA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Logfmt)]
    pub log_format: LogFormat,

    /// Address of the HTTP server for /metrics, /-/healthy, /-/ready (and the component's own HTTP API).
    #[arg(
        long = "http-address",
        env = "STRATA_HTTP_ADDRESS",
        default_value = "0.0.0.0:10902"
    )]
    pub http_address: SocketAddr,

    /// How long a graceful shutdown may take after SIGTERM/SIGINT before the process gives up and exits 1.
    #[arg(long = "shutdown-timeout", env = "STRATA_SHUTDOWN_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub shutdown_timeout: Duration,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    /// Only errors.
    Error,
    /// Errors and warnings.
    Warn,
    /// The default: what an operator wants to see.
    Info,
    /// Detail for debugging.
    Debug,
    /// Everything, including per-request spans.
    Trace,
}

impl LogLevel {
    /// The `tracing` level this maps to.
    pub fn as_tracing(self) -> tracing::Level {
        match self {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `key=value` pairs, as Prometheus and Thanos log.
    Logfmt,
    /// One JSON object per line.
    Json,
}
