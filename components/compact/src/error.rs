//! Errors of compaction and downsampling.

use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong compacting or downsampling blocks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading an input block failed (the inner error names the file).
    #[error("block {block}: {source}")]
    Read {
        /// The block directory.
        block: PathBuf,
        /// The cause.
        #[source]
        source: strata_tsdb::Error,
    },
    /// Writing the output block failed.
    #[error("writing block under {dir}: {source}")]
    Write {
        /// The output parent directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: strata_tsdb::Error,
    },
    /// Two inputs carry different external labels (after dropping replica labels).
    #[error("blocks {a} and {b} have different external labels: {a_labels} vs {b_labels}")]
    LabelsMismatch {
        /// First block.
        a: String,
        /// Its labels.
        a_labels: String,
        /// Second block.
        b: String,
        /// Its labels.
        b_labels: String,
    },
    /// Two inputs have different downsample resolutions.
    #[error("blocks {a} and {b} have different downsample resolutions: {a_res} ms vs {b_res} ms")]
    ResolutionMismatch {
        /// First block.
        a: String,
        /// Its resolution.
        a_res: i64,
        /// Second block.
        b: String,
        /// Its resolution.
        b_res: i64,
    },
    /// A series' chunks cannot be merged (overlapping aggregate chunks, undecodable chunks…).
    #[error("block {block}, series {series}: {what}")]
    Series {
        /// The block directory.
        block: PathBuf,
        /// The series labels.
        series: String,
        /// What is wrong.
        what: String,
    },
    /// A block-level bucket operation (listing, marks, transfer) failed.
    #[error(transparent)]
    Bucket(#[from] strata_bucket::Error),
    /// Object storage failed.
    #[error("object storage: {0}")]
    Objstore(#[from] strata_objstore::Error),
    /// Bad arguments (no inputs, bad resolution, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    pub(crate) fn read(block: &std::path::Path) -> impl FnOnce(strata_tsdb::Error) -> Error + '_ {
        move |source| Error::Read {
            block: block.to_path_buf(),
            source,
        }
    }

    pub(crate) fn write(dir: &std::path::Path) -> impl FnOnce(strata_tsdb::Error) -> Error + '_ {
        move |source| Error::Write {
            dir: dir.to_path_buf(),
            source,
        }
    }
}
