//! Process plumbing every Strata server shares: the common flags, logging, the admin HTTP endpoints
//! (`/metrics`, `/-/healthy`, `/-/ready`) and graceful shutdown on SIGTERM/SIGINT with a deadline.
//! [`discovery`] holds the file-SD and DNS lookups the querier and the ruler both use.
//!
//! Component crates take a [`Shutdown`] and a [`Readiness`] in their `run` functions and register their
//! metrics in a sub-registry of the one [`prometheus_client::registry::Registry`] the binary creates.

mod admin;
mod args;
pub mod discovery;
mod logging;
mod shutdown;

pub use admin::{AdminServer, Readiness, admin_router};
pub use args::{LogFormat, LogLevel, ServerArgs};
pub use logging::init_logging;
pub use shutdown::{Shutdown, run_until_shutdown};

/// Errors of the shared server plumbing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `--http-address` could not be bound.
    #[error("bind --http-address {address}")]
    Bind {
        /// The address from the flag.
        address: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The admin HTTP server failed while serving.
    #[error("serve admin HTTP on {address}")]
    Serve {
        /// The bound address.
        address: std::net::SocketAddr,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// Logging was already initialised, or the filter was invalid.
    #[error("initialise logging: {0}")]
    Logging(String),
    /// Installing the signal handlers failed.
    #[error("install signal handler")]
    Signal(#[source] std::io::Error),
    /// The component did not stop within the shutdown deadline.
    #[error("shutdown did not finish within {0:?}")]
    ShutdownDeadline(std::time::Duration),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
