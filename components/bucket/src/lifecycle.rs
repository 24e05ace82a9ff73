//! A block's end of life, as Thanos does it: first a `deletion-mark.json` (readers stop using the
//! block), then, after the delete delay, the objects themselves — `meta.json` first (so a crash
//! mid-way leaves a partial block, never a corrupt one), the mark last. Partial uploads older than
//! a threshold are cleaned up the same way.

use std::time::Duration;

use strata_objstore::Bucket;
use tracing::{debug, info, warn};
use ulid::Ulid;

use crate::error::Result;
use crate::marks::{DELETION_MARK_FILENAME, DeletionMark, MARK_VERSION, write_deletion_mark};
use crate::sync::list_blocks;

/// The `details` of the deletion mark [`cleanup`] writes for an old partial upload.
pub const PARTIAL_UPLOAD_DETAILS: &str = "aborted partial upload";

/// The name of `meta.json`.
const META_FILENAME: &str = "meta.json";

/// Writes a deletion mark for `id` unless one is already there. Returns whether a new mark was
/// written. The mark's `deletion_time` is `now_ms` in whole seconds.
pub async fn mark_for_deletion(
    bucket: &Bucket,
    id: Ulid,
    details: &str,
    now_ms: i64,
) -> Result<bool> {
    let name = format!("{id}/{DELETION_MARK_FILENAME}");
    if bucket.exists(&name).await? {
        warn!(block = %id, "requested to mark for deletion, but a deletion mark already exists");
        return Ok(false);
    }
    let mark = DeletionMark {
        id,
        deletion_time: now_ms.div_euclid(1000),
        version: MARK_VERSION,
        details: (!details.is_empty()).then(|| details.to_string()),
    };
    write_deletion_mark(bucket, &mark).await?;
    info!(block = %id, details, "block marked for deletion");
    Ok(true)
}

/// Deletes every object of block `id`: `meta.json` first, `deletion-mark.json` last. Deleting a
/// block that is already (partly) gone is not an error.
pub async fn delete_block(bucket: &Bucket, id: Ulid) -> Result<()> {
    let dir = format!("{id}/");
    let meta = format!("{id}/{META_FILENAME}");
    let mark = format!("{id}/{DELETION_MARK_FILENAME}");
    let names = bucket.list_recursive(&dir).await?;
    if names.contains(&meta) {
        delete_ignoring_missing(bucket, &meta).await?;
        debug!(block = %id, "deleted meta.json");
    }
    let mut has_mark = false;
    for name in &names {
        if *name == meta {
            continue;
        }
        if *name == mark {
            has_mark = true;
            continue;
        }
        delete_ignoring_missing(bucket, name).await?;
    }
    if has_mark {
        delete_ignoring_missing(bucket, &mark).await?;
    }
    info!(block = %id, objects = names.len(), "deleted block");
    Ok(())
}

/// Reads `<id>/deletion-mark.json`: `None` when missing or unparseable (logged).
async fn get_deletion_mark(bucket: &Bucket, id: Ulid) -> Result<Option<DeletionMark>> {
    let name = format!("{id}/{DELETION_MARK_FILENAME}");
    match bucket.get(&name).await {
        Ok(data) => match serde_json::from_slice::<DeletionMark>(&data) {
            Ok(m) => Ok(Some(m)),
            Err(e) => {
                warn!(block = %id, error = %e, "unparseable deletion-mark.json left alone");
                Ok(None)
            }
        },
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn delete_ignoring_missing(bucket: &Bucket, name: &str) -> Result<()> {
    match bucket.delete(name).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
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

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One cleanup pass over the bucket: deletes blocks marked long enough ago, marks old partial
/// uploads. A partial block marked in this pass is deleted in a later pass, once its mark is
/// older than the delete delay. Unparseable marks are left alone (logged).
pub async fn cleanup(bucket: &Bucket, opts: &CleanupOptions) -> Result<CleanupReport> {
    let blocks = list_blocks(bucket).await?;
    let delay_ms = duration_ms(opts.delete_delay);
    let threshold_ms = duration_ms(opts.partial_upload_threshold);
    let mut report = CleanupReport::default();
    for (id, objects) in &blocks {
        if objects.deletion_mark {
            let Some(mark) = get_deletion_mark(bucket, *id).await? else {
                continue;
            };
            let marked_ms = mark.deletion_time.saturating_mul(1000);
            if opts.now_ms.saturating_sub(marked_ms) > delay_ms {
                if !opts.dry_run {
                    delete_block(bucket, *id).await?;
                }
                report.deleted.push(*id);
            }
            continue;
        }
        if !objects.meta {
            let created_ms = i64::try_from(id.timestamp_ms()).unwrap_or(i64::MAX);
            if opts.now_ms.saturating_sub(created_ms) <= threshold_ms {
                continue;
            }
            if opts.dry_run
                || mark_for_deletion(bucket, *id, PARTIAL_UPLOAD_DETAILS, opts.now_ms).await?
            {
                report.partial_marked.push(*id);
            }
        }
    }
    info!(
        deleted = report.deleted.len(),
        partial_marked = report.partial_marked.len(),
        dry_run = opts.dry_run,
        "cleanup pass done"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    fn ulid_at(ms: i64, n: u8) -> Ulid {
        Ulid::from_parts(u64::try_from(ms).expect("positive"), u128::from(n))
    }

    async fn put(bucket: &Bucket, name: &str, data: &str) {
        bucket
            .put(name, Bytes::from(data.to_string()))
            .await
            .expect("put");
    }

    async fn full_block(bucket: &Bucket, id: Ulid) {
        put(bucket, &format!("{id}/meta.json"), "{}").await;
        put(bucket, &format!("{id}/index"), "i").await;
        put(bucket, &format!("{id}/chunks/000001"), "c").await;
    }

    async fn names(bucket: &Bucket) -> Vec<String> {
        bucket.list_recursive("").await.expect("list")
    }

    #[tokio::test]
    async fn mark_for_deletion_writes_once() {
        let bucket = Bucket::in_memory();
        let id = ulid_at(1_000, 1);
        full_block(&bucket, id).await;
        assert!(
            mark_for_deletion(&bucket, id, "why", 1_700_000_123_456)
                .await
                .expect("mark")
        );
        let data = bucket
            .get(&format!("{id}/deletion-mark.json"))
            .await
            .expect("mark exists");
        let mark: DeletionMark = serde_json::from_slice(&data).expect("parses");
        assert_eq!(mark.id, id);
        assert_eq!(mark.deletion_time, 1_700_000_123);
        assert_eq!(mark.details.as_deref(), Some("why"));
        assert!(
            !mark_for_deletion(&bucket, id, "again", 1_800_000_000_000)
                .await
                .expect("mark again")
        );
        let again: DeletionMark = serde_json::from_slice(
            &bucket
                .get(&format!("{id}/deletion-mark.json"))
                .await
                .expect("mark"),
        )
        .expect("parses");
        assert_eq!(again, mark, "the first mark is kept");
    }

    #[tokio::test]
    async fn delete_block_removes_only_that_block() {
        let bucket = Bucket::in_memory();
        let a = ulid_at(1_000, 1);
        let b = ulid_at(2_000, 2);
        full_block(&bucket, a).await;
        full_block(&bucket, b).await;
        mark_for_deletion(&bucket, a, "", 0).await.expect("mark");
        delete_block(&bucket, a).await.expect("delete");
        let left = names(&bucket).await;
        assert!(
            left.iter().all(|n| n.starts_with(&b.to_string())),
            "{left:?}"
        );
        assert_eq!(left.len(), 3);
        // Deleting again (nothing left) is fine.
        delete_block(&bucket, a).await.expect("delete twice");
    }

    fn opts(now_ms: i64, dry_run: bool) -> CleanupOptions {
        CleanupOptions {
            delete_delay: Duration::from_secs(2 * 3600),
            partial_upload_threshold: Duration::from_secs(48 * 3600),
            now_ms,
            dry_run,
        }
    }

    #[tokio::test]
    async fn cleanup_deletes_after_the_delay_only() {
        let bucket = Bucket::in_memory();
        let now = 1_700_000_000_000;
        let old = ulid_at(now - 100 * HOUR_MS, 1);
        let young = ulid_at(now - 100 * HOUR_MS, 2);
        let kept = ulid_at(now - 100 * HOUR_MS, 3);
        for id in [old, young, kept] {
            full_block(&bucket, id).await;
        }
        mark_for_deletion(&bucket, old, "", now - 3 * HOUR_MS)
            .await
            .expect("mark");
        mark_for_deletion(&bucket, young, "", now - HOUR_MS)
            .await
            .expect("mark");

        let before = names(&bucket).await;
        let dry = cleanup(&bucket, &opts(now, true)).await.expect("dry run");
        assert_eq!(dry.deleted, vec![old]);
        assert_eq!(names(&bucket).await, before, "dry run changes nothing");

        let done = cleanup(&bucket, &opts(now, false)).await.expect("cleanup");
        assert_eq!(done, dry);
        let left = names(&bucket).await;
        assert!(
            !left.iter().any(|n| n.starts_with(&old.to_string())),
            "{left:?}"
        );
        assert!(left.contains(&format!("{young}/deletion-mark.json")));
        assert!(left.contains(&format!("{kept}/meta.json")));

        // Later, the young mark is old enough too.
        let later = cleanup(&bucket, &opts(now + 2 * HOUR_MS, false))
            .await
            .expect("cleanup");
        assert_eq!(later.deleted, vec![young]);
    }

    #[tokio::test]
    async fn old_partial_uploads_are_marked_then_deleted() {
        let bucket = Bucket::in_memory();
        let now = 1_700_000_000_000;
        let old_partial = ulid_at(now - 49 * HOUR_MS, 1);
        let new_partial = ulid_at(now - 47 * HOUR_MS, 2);
        put(&bucket, &format!("{old_partial}/index"), "i").await;
        put(&bucket, &format!("{new_partial}/chunks/000001"), "c").await;

        let dry = cleanup(&bucket, &opts(now, true)).await.expect("dry");
        assert_eq!(dry.partial_marked, vec![old_partial]);
        assert!(dry.deleted.is_empty());
        assert_eq!(names(&bucket).await.len(), 2, "dry run writes no mark");

        let first = cleanup(&bucket, &opts(now, false)).await.expect("cleanup");
        assert_eq!(first.partial_marked, vec![old_partial]);
        assert!(first.deleted.is_empty(), "not deleted before the delay");
        let mark: DeletionMark = serde_json::from_slice(
            &bucket
                .get(&format!("{old_partial}/deletion-mark.json"))
                .await
                .expect("mark"),
        )
        .expect("parses");
        assert_eq!(mark.details.as_deref(), Some(PARTIAL_UPLOAD_DETAILS));

        // Marked already: not marked again; deleted once the delay passed.
        let second = cleanup(&bucket, &opts(now + HOUR_MS, false))
            .await
            .expect("cleanup");
        assert_eq!(second, CleanupReport::default());
        let third = cleanup(&bucket, &opts(now + 3 * HOUR_MS, false))
            .await
            .expect("cleanup");
        assert_eq!(third.deleted, vec![old_partial]);
        assert_eq!(third.partial_marked, vec![new_partial]);
        let left = names(&bucket).await;
        assert!(
            !left.iter().any(|n| n.starts_with(&old_partial.to_string())),
            "{left:?}"
        );
    }

    #[tokio::test]
    async fn unparseable_mark_is_left_alone() {
        let bucket = Bucket::in_memory();
        let id = ulid_at(1_000, 1);
        full_block(&bucket, id).await;
        put(&bucket, &format!("{id}/deletion-mark.json"), "{not json").await;
        let report = cleanup(&bucket, &opts(1_800_000_000_000, false))
            .await
            .expect("cleanup");
        assert_eq!(report, CleanupReport::default());
        assert_eq!(names(&bucket).await.len(), 4);
    }
}
