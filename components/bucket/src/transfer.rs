//! Moving whole blocks between a local directory and the bucket. An upload writes every file
//! first and `meta.json` last, so a reader never sees a block without all its files; a download
//! goes to a temporary directory renamed into place when complete.
//!
//! NOT DONE: skeleton only (helper `compact-run` fills it in).

use std::path::Path;

use strata_objstore::Bucket;
use strata_tsdb::meta::BlockMeta;
use ulid::Ulid;

use crate::error::Result;

/// Uploads the block in `dir` described by `meta` (whose `thanos` section must be set): chunks
/// and index first, then `meta.json` with the `thanos.files` / `segment_files` lists filled in.
pub async fn upload_block(bucket: &Bucket, dir: &Path, meta: &BlockMeta) -> Result<()> {
    let _ = (bucket, dir, meta);
    unimplemented!("upload_block")
}

/// Downloads block `id` into `dir/<id>` (replacing a partial earlier download) and returns its
/// meta.
pub async fn download_block(bucket: &Bucket, id: Ulid, dir: &Path) -> Result<BlockMeta> {
    let _ = (bucket, id, dir);
    unimplemented!("download_block")
}
