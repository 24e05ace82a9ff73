//! Retention applied to a bucket: blocks past the retention of their resolution get a deletion
//! mark (deleted later by [`strata_bucket::lifecycle::cleanup`] after the delete delay).
//!
//! NOT DONE: skeleton only (helper `bucket-tools` fills it in).

use strata_objstore::Bucket;
use strata_tsdb::meta::BlockMeta;
use ulid::Ulid;

use crate::error::Result;

/// Retention per resolution; `None` keeps blocks of that resolution forever.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Raw blocks (`--retention.resolution-raw`), milliseconds.
    pub raw_ms: Option<i64>,
    /// 5m blocks (`--retention.resolution-5m`), milliseconds.
    pub five_m_ms: Option<i64>,
    /// 1h blocks (`--retention.resolution-1h`), milliseconds.
    pub one_h_ms: Option<i64>,
}

/// Marks for deletion every block in `metas` older than its resolution's retention (see
/// [`crate::plan::retention`]); returns the blocks marked (or that would be, with `dry_run`).
pub async fn apply_retention(
    bucket: &Bucket,
    metas: &[BlockMeta],
    retention: &Retention,
    now_ms: i64,
    dry_run: bool,
) -> Result<Vec<Ulid>> {
    let _ = (bucket, metas, retention, now_ms, dry_run);
    unimplemented!("apply_retention")
}
