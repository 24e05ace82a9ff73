//! Errors of block-level bucket operations.

use std::path::PathBuf;

/// A block-level bucket error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing or reading the bucket failed.
    #[error("object storage: {0}")]
    Bucket(#[from] strata_objstore::Error),
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A marker file could not be encoded.
    #[error("encoding {file}: {source}")]
    Encode {
        /// The file name (`deletion-mark.json`, …).
        file: &'static str,
        /// What went wrong.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the cause is an object-store timeout or another transient bucket failure.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Bucket(source) => source.is_timeout() || source.is_transient(),
            _ => false,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
