//! The crate's one error type: every variant names the file (or logical object) and, where it
//! makes sense, the byte offset at which decoding failed.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors returned while reading or writing TSDB files.
///
/// `file` is a path or a logical name (`index`, `chunks/000001`, `chunk` for chunk bytes that
/// are not tied to a file yet). Offsets are byte offsets inside that file.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input ended before a complete structure could be read.
    #[error("{file}: truncated {what} at offset {offset}")]
    Truncated {
        /// File or object name.
        file: String,
        /// Byte offset where more data was expected.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// The magic number at the start of the file is wrong.
    #[error("{file}: bad magic number {actual:#010x}, expected {expected:#010x}")]
    BadMagic {
        /// File or object name.
        file: String,
        /// Magic number the format requires.
        expected: u32,
        /// Magic number found.
        actual: u32,
    },
    /// The format version is not one this crate understands.
    #[error("{file}: unsupported format version {version}")]
    BadVersion {
        /// File or object name.
        file: String,
        /// Version found.
        version: u32,
    },
    /// A CRC32C checksum did not match.
    #[error(
        "{file}: crc32c mismatch for section at offset {offset}: stored {expected:#010x}, computed {actual:#010x}"
    )]
    CrcMismatch {
        /// File or object name.
        file: String,
        /// Offset of the checksummed section.
        offset: u64,
        /// Checksum stored in the file.
        expected: u32,
        /// Checksum computed over the data.
        actual: u32,
    },
    /// A reference or value points outside the valid range.
    #[error("{file}: {what} out of range at offset {offset}")]
    OutOfRange {
        /// File or object name.
        file: String,
        /// Offset where the bad reference was read (or the reference itself).
        offset: u64,
        /// Description of the bad reference.
        what: String,
    },
    /// The data is structurally invalid (bad bit pattern, bad counts, …).
    #[error("{file}: corrupt data at offset {offset}: {what}")]
    Corrupt {
        /// File or object name.
        file: String,
        /// Offset of the bad data.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// Input given to a writer was not in the required order.
    #[error("unsorted input: {what}")]
    Unsorted {
        /// What was out of order.
        what: String,
    },
    /// A length field is absurdly large (larger than the remaining input or a hard limit).
    #[error("{file}: {what} length {len} too large at offset {offset}")]
    TooLarge {
        /// File or object name.
        file: String,
        /// Offset of the length field.
        offset: u64,
        /// What the length describes.
        what: &'static str,
        /// The length found.
        len: u64,
    },
    /// An error that happened while reading a given series.
    #[error("series {series_ref}")]
    Series {
        /// Series reference (index v2: offset / 16).
        series_ref: u64,
        /// The underlying error.
        #[source]
        source: Box<Error>,
    },
    /// An I/O error on a file.
    #[error("{}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file could not be parsed or written.
    #[error("{}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A label matcher could not be built (bad regex, bad name).
    #[error("invalid matcher: {0}")]
    InvalidMatcher(String),
    /// An argument given by the caller is invalid (empty label set, samples out of order, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps this error with the series it happened in.
    pub fn in_series(self, series_ref: u64) -> Self {
        Error::Series {
            series_ref,
            source: Box::new(self),
        }
    }

    /// Replaces the file name of a decoding error (used when bytes decoded in isolation turn out
    /// to belong to a known file).
    pub fn with_file(mut self, name: &str, base_offset: u64) -> Self {
        match &mut self {
            Error::Truncated { file, offset, .. }
            | Error::OutOfRange { file, offset, .. }
            | Error::Corrupt { file, offset, .. }
            | Error::TooLarge { file, offset, .. }
            | Error::CrcMismatch { file, offset, .. } => {
                *file = name.to_string();
                *offset = offset.saturating_add(base_offset);
            }
            Error::BadMagic { file, .. } | Error::BadVersion { file, .. } => {
                *file = name.to_string();
            }
            _ => {}
        }
        self
    }
}
