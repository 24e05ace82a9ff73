//! Errors of the shipper.

use std::path::PathBuf;

/// Result of shipper operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A shipper failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A local file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `thanos.shipper.json` is malformed.
    #[error("shipper meta file {path}: {message}")]
    BadShipperMeta {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}
