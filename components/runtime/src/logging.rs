//! Logging through `tracing`, to stderr, in logfmt or JSON.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::{Error, LogFormat, LogLevel, Result};

/// Installs the global `tracing` subscriber. `RUST_LOG`, when set, refines the level per module.
pub fn init_logging(level: LogLevel, format: LogFormat) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::try_new(&spec)
            .map_err(|e| Error::Logging(format!("RUST_LOG={spec:?}: {e}")))?,
        _ => EnvFilter::new(level.as_tracing().as_str()),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Logfmt => registry
            .with(
                tracing_logfmt::builder()
                    .layer()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    result.map_err(|e| Error::Logging(e.to_string()))
}
