//! The store gateway's errors.

use std::path::PathBuf;

use ulid::Ulid;

/// A store-gateway error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A block's files could not be decoded.
    #[error("block {block}: {source}")]
    Tsdb {
        /// The block.
        block: Ulid,
        /// What went wrong.
        #[source]
        source: strata_tsdb::Error,
    },
    /// Reading from the bucket failed.
    #[error("block {block}: object storage: {source}")]
    Objstore {
        /// The block.
        block: Ulid,
        /// What went wrong.
        #[source]
        source: strata_objstore::Error,
    },
    /// A block's read ran on a task that ended without an answer (it panicked or was cancelled).
    #[error("block {block}: read task ended without an answer: {msg}")]
    ReadTask {
        /// The block.
        block: Ulid,
        /// The task's end.
        msg: String,
    },
    /// Listing or reading bucket-level objects (not tied to one block) failed.
    #[error("object storage: {0}")]
    Bucket(#[from] strata_objstore::Error),
    /// Listing the bucket's blocks or caching their metas failed.
    #[error("block sync: {0}")]
    Sync(#[from] strata_bucket::Error),
    /// An index-header file is unreadable.
    #[error("index-header {path}: {msg}")]
    IndexHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A request went over one of the per-request limits.
    #[error(
        "{limit} limit {max} exceeded (at least {got}); narrow the query or raise --store.limits.{flag}"
    )]
    LimitExceeded {
        /// Human name of the limit ("series", "samples", "bytes").
        limit: &'static str,
        /// The flag suffix (`request-series`, …).
        flag: &'static str,
        /// The configured maximum.
        max: u64,
        /// How much the request needed so far.
        got: u64,
    },
    /// The block failed to load recently; it is not retried before the backoff has passed.
    #[error("block {block} is unhealthy (next load attempt in {retry_in:?}): {msg}")]
    Unhealthy {
        /// The block.
        block: Ulid,
        /// The last load error.
        msg: String,
        /// Time left before the next load attempt.
        retry_in: std::time::Duration,
    },
    /// Bad configuration (flags, relabel config).
    #[error("config: {0}")]
    Config(String),
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
            Error::Objstore { source, .. } | Error::Bucket(source) => {
                source.is_timeout() || source.is_transient()
            }
            Error::Sync(e) => e.is_unavailable(),
            _ => false,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
