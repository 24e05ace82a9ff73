//! Retention applied to a bucket: blocks past the retention of their resolution get a deletion
//! mark (deleted later by [`strata_bucket::lifecycle::cleanup`] after the delete delay).

use strata_objstore::Bucket;
use strata_tsdb::meta::BlockMeta;
use ulid::Ulid;

use strata_bucket::lifecycle;
use tracing::info;

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
    let expired = crate::plan::retention(
        metas,
        retention.raw_ms.unwrap_or(0),
        retention.five_m_ms.unwrap_or(0),
        retention.one_h_ms.unwrap_or(0),
        now_ms,
    );
    let mut marked = Vec::with_capacity(expired.len());
    for id in expired {
        let Some(meta) = metas.iter().find(|m| m.ulid == id) else {
            continue;
        };
        let res = strata_bucket::sync::resolution(meta);
        let keep_ms = match res {
            crate::RES_RAW => retention.raw_ms,
            crate::RES_5M => retention.five_m_ms,
            crate::RES_1H => retention.one_h_ms,
            _ => None,
        }
        .unwrap_or(0);
        let details = format!(
            "block exceeding retention of {}",
            format_duration_ms(keep_ms)
        );
        if dry_run {
            info!(block = %id, resolution = res, %details, "would mark block for deletion (dry run)");
            marked.push(id);
            continue;
        }
        if lifecycle::mark_for_deletion(bucket, id, &details, now_ms).await? {
            info!(block = %id, resolution = res, %details, "marked block for deletion");
            marked.push(id);
        }
    }
    Ok(marked)
}

/// A duration in Go's `time.Duration` string style (`336h0m0s`, `1m30s`, `500ms`), as Thanos
/// prints retentions in its deletion-mark details.
pub fn format_duration_ms(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let neg = ms < 0;
    let ms = ms.unsigned_abs();
    let sign = if neg { "-" } else { "" };
    if ms < 1000 {
        return format!("{sign}{ms}ms");
    }
    let h = ms / 3_600_000;
    let m = ms / 60_000 % 60;
    let s = ms / 1000 % 60;
    let frac = ms % 1000;
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:03}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    if h > 0 {
        format!("{sign}{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{sign}{m}m{secs}")
    } else {
        format!("{sign}{secs}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use strata_bucket::marks::DeletionMark;
    use strata_tsdb::meta::{BlockMeta, ThanosMeta};

    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    fn meta(n: u8, max_time: i64, resolution: i64) -> BlockMeta {
        let mut m = BlockMeta::new(
            Ulid::from_parts(1, u128::from(n)),
            max_time - 2 * HOUR_MS,
            max_time,
        );
        m.thanos = Some(ThanosMeta::new(
            BTreeMap::from([("a".to_string(), "b".to_string())]),
            "sidecar",
            resolution,
        ));
        m
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(format_duration_ms(336 * HOUR_MS), "336h0m0s");
        assert_eq!(format_duration_ms(90_000), "1m30s");
        assert_eq!(format_duration_ms(1_500), "1.5s");
        assert_eq!(format_duration_ms(500), "500ms");
        assert_eq!(format_duration_ms(0), "0s");
    }

    #[tokio::test]
    async fn marks_only_blocks_past_their_resolutions_retention() {
        let bucket = Bucket::in_memory();
        let now = 1_700_000_000_000;
        let old_raw = meta(1, now - 10 * HOUR_MS, crate::RES_RAW);
        let new_raw = meta(2, now - 2 * HOUR_MS, crate::RES_RAW);
        let old_5m = meta(3, now - 10 * HOUR_MS, crate::RES_5M);
        let old_1h = meta(4, now - 100 * HOUR_MS, crate::RES_1H);
        let metas = vec![old_raw.clone(), new_raw, old_5m, old_1h];
        let retention = Retention {
            raw_ms: Some(5 * HOUR_MS),
            five_m_ms: Some(20 * HOUR_MS),
            one_h_ms: None,
        };

        let dry = apply_retention(&bucket, &metas, &retention, now, true)
            .await
            .expect("dry run");
        assert_eq!(dry, vec![old_raw.ulid]);
        assert!(bucket.list_recursive("").await.expect("list").is_empty());

        let marked = apply_retention(&bucket, &metas, &retention, now, false)
            .await
            .expect("retention");
        assert_eq!(marked, vec![old_raw.ulid]);
        let names = bucket.list_recursive("").await.expect("list");
        assert_eq!(names, vec![format!("{}/deletion-mark.json", old_raw.ulid)]);
        let mark: DeletionMark =
            serde_json::from_slice(&bucket.get(&names[0]).await.expect("get")).expect("parses");
        assert_eq!(
            mark.details.as_deref(),
            Some("block exceeding retention of 5h0m0s")
        );
        assert_eq!(mark.deletion_time, now / 1000);

        // Applying again marks nothing new.
        let again = apply_retention(&bucket, &metas, &retention, now, false)
            .await
            .expect("retention");
        assert!(again.is_empty());
    }
}
