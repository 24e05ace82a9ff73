//! A block's end of life, as Thanos does it: first a `deletion-mark.json` (readers stop using the
//! block), then, after the delete delay, the objects themselves — `meta.json` first (so a crash
//! mid-way leaves a partial block, never a corrupt one), the mark last. Partial uploads older than
//! a threshold are cleaned up the same way.
//!
//! NOT DONE: skeleton only (helper `bucket-tools` fills it in).

use std::time::Duration;

use strata_objstore::Bucket;
use ulid::Ulid;

use crate::error::Result;

/// Writes a deletion mark for `id` unless one is already there. Returns whether a new mark was
/// written.
pub async fn mark_for_deletion(
    bucket: &Bucket,
    id: Ulid,
    details: &str,
    now_ms: i64,
) -> Result<bool> {
    let _ = (bucket, id, details, now_ms);
    unimplemented!("mark_for_deletion")
}

/// Deletes every object of block `id`: `meta.json` first, `deletion-mark.json` last.
pub async fn delete_block(bucket: &Bucket, id: Ulid) -> Result<()> {
    let _ = (bucket, id);
    unimplemented!("delete_block")
}

/// What [`cleanup`] does.
#[derive(Debug, Clone)]
pub struct CleanupOptions {
    /// Blocks marked for deletion longer ago than this are deleted.
    pub delete_delay: Duration,
    /// Partial blocks (no `meta.json`) whose ULID time is older than this are marked for deletion
    /// (and deleted once the mark is older than `delete_delay`).
    pub partial_upload_threshold: Duration,
    /// The current time in Unix milliseconds.
    pub now_ms: i64,
    /// Report what would be done, change nothing.
    pub dry_run: bool,
}

/// What [`cleanup`] did (or would do, with `dry_run`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Blocks whose objects were deleted.
    pub deleted: Vec<Ulid>,
    /// Partial blocks newly marked for deletion.
    pub partial_marked: Vec<Ulid>,
}

/// One cleanup pass over the bucket: deletes blocks marked long enough ago, marks old partial
/// uploads.
pub async fn cleanup(bucket: &Bucket, opts: &CleanupOptions) -> Result<CleanupReport> {
    let _ = (bucket, opts);
    unimplemented!("cleanup")
}
