//! Typed errors of bucket operations and of configuration loading.

use std::path::PathBuf;
use std::time::Duration;

/// Result of bucket operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed bucket operation; every variant names the operation and the object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist.
    #[error("{op} {object}: object not found")]
    NotFound {
        /// Operation (`get`, `get_range`, `attributes`, …).
        op: &'static str,
        /// Object name (without the bucket prefix).
        object: String,
    },
    /// The operation did not finish in time (including its retries).
    #[error("{op} {object}: timed out after {after:?}")]
    Timeout {
        /// Operation.
        op: &'static str,
        /// Object name.
        object: String,
        /// How long it ran.
        after: Duration,
    },
    /// The object name is not a valid object path (empty segment, `..`, …).
    #[error("{op} {object}: invalid object name: {reason}")]
    InvalidName {
        /// Operation.
        op: &'static str,
        /// Object name.
        object: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A requested byte range is empty or reversed.
    #[error("{op} {object}: invalid range {start}..{end}")]
    InvalidRange {
        /// Operation.
        op: &'static str,
        /// Object name.
        object: String,
        /// Range start.
        start: u64,
        /// Range end.
        end: u64,
    },
    /// Reading a local file to upload failed.
    #[error("{op} {object}: read local file {path}: {source}")]
    LocalIo {
        /// Operation.
        op: &'static str,
        /// Object name.
        object: String,
        /// Local file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The storage backend failed (after its retries).
    #[error("{op} {object}: {source}")]
    Backend {
        /// Operation.
        op: &'static str,
        /// Object name.
        object: String,
        /// The backend error.
        #[source]
        source: object_store::Error,
    },
}

impl Error {
    /// True when the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True for a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// True for errors a retry may fix (backend failures and timeouts, not missing objects or bad names).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::Backend { source, .. } => !matches!(
                source,
                object_store::Error::NotFound { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
            ),
            _ => false,
        }
    }

    pub(crate) fn from_store(op: &'static str, object: &str, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => Error::NotFound {
                op,
                object: object.to_string(),
            },
            source => Error::Backend {
                op,
                object: object.to_string(),
                source,
            },
        }
    }
}

/// Whether `err` says the object does not exist (Thanos's `IsObjNotFoundErr`).
pub fn is_not_found(err: &Error) -> bool {
    err.is_not_found()
}

/// A bad or unreadable objstore configuration. `origin` is the file path or the flag it came from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Neither `--objstore.config-file` nor `--objstore.config` was given.
    #[error("no object storage configuration: set --objstore.config-file or --objstore.config")]
    Missing,
    /// Both flags were given.
    #[error("--objstore.config-file and --objstore.config are mutually exclusive")]
    Both,
    /// The configuration file could not be read.
    #[error("read objstore config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed, has an unknown key or a value of the wrong type.
    #[error("objstore config {origin}: {message}")]
    Yaml {
        /// File path or flag name.
        origin: String,
        /// The parser's message (names the key and, for top-level errors, the line).
        message: String,
    },
    /// `type:` names a provider Strata does not support.
    #[error(
        "objstore config {origin}: type: unsupported bucket type {kind:?} (supported: S3, GCS, AZURE, FILESYSTEM)"
    )]
    UnsupportedType {
        /// File path or flag name.
        origin: String,
        /// The given type.
        kind: String,
    },
    /// A key has a value Strata cannot honour.
    #[error("objstore config {origin}: {key}: {message}")]
    Invalid {
        /// File path or flag name.
        origin: String,
        /// The key, dotted (`config.sse_config.type`).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The object_store client could not be built from the configuration.
    #[error("objstore config {origin}: build {provider} client: {source}")]
    Build {
        /// File path or flag name.
        origin: String,
        /// Provider.
        provider: &'static str,
        /// The builder's error.
        #[source]
        source: object_store::Error,
    },
}
