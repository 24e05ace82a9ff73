//! The marker files Thanos puts into a block directory: `deletion-mark.json` (the block is to be
//! deleted after a delay; readers stop using it) and `no-compact-mark.json` (the compactor leaves
//! the block alone). Both are small JSON objects; the formats are Thanos's, so a Thanos compactor
//! and store gateway honour marks Strata writes and the other way round.

use serde::{Deserialize, Serialize};
use strata_objstore::Bucket;
use tracing::warn;
use ulid::Ulid;

use crate::error::{Error, Result};

/// The file Thanos writes into a block directory when the block is to be deleted.
pub const DELETION_MARK_FILENAME: &str = "deletion-mark.json";
/// The file Thanos writes into a block directory to exclude it from compaction.
pub const NO_COMPACT_MARK_FILENAME: &str = "no-compact-mark.json";
/// The only marker format version Thanos writes.
pub const MARK_VERSION: u32 = 1;

/// `deletion-mark.json` as Thanos writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionMark {
    /// The block.
    pub id: Ulid,
    /// When the block was marked, seconds since the epoch.
    pub deletion_time: i64,
    /// Format version (1).
    pub version: u32,
    /// Free-form reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// `no-compact-mark.json` as Thanos writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoCompactMark {
    /// The block.
    pub id: Ulid,
    /// Format version (1).
    pub version: u32,
    /// Free-form details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// When the block was marked, seconds since the epoch.
    pub no_compact_time: i64,
    /// Why (Thanos writes `manual` for operator-made marks, or the name of the check that failed,
    /// e.g. `block-index-out-of-order-chunk`).
    pub reason: String,
}

/// Writes `<id>/deletion-mark.json` (replacing an existing mark).
pub async fn write_deletion_mark(bucket: &Bucket, mark: &DeletionMark) -> Result<()> {
    let data = serde_json::to_vec_pretty(mark).map_err(|source| Error::Encode {
        file: DELETION_MARK_FILENAME,
        source,
    })?;
    bucket
        .put(
            &format!("{}/{DELETION_MARK_FILENAME}", mark.id),
            bytes::Bytes::from(data),
        )
        .await?;
    Ok(())
}

/// Writes `<id>/no-compact-mark.json` (replacing an existing mark).
pub async fn write_no_compact_mark(bucket: &Bucket, mark: &NoCompactMark) -> Result<()> {
    let data = serde_json::to_vec_pretty(mark).map_err(|source| Error::Encode {
        file: NO_COMPACT_MARK_FILENAME,
        source,
    })?;
    bucket
        .put(
            &format!("{}/{NO_COMPACT_MARK_FILENAME}", mark.id),
            bytes::Bytes::from(data),
        )
        .await?;
    Ok(())
}

/// Reads `<id>/deletion-mark.json`: `Ok(None)` when missing or unparseable (logged; Thanos treats
/// a partial mark the same way), `Err` on other bucket errors.
pub async fn read_deletion_mark(bucket: &Bucket, id: Ulid) -> Result<Option<DeletionMark>, String> {
    let name = format!("{id}/{DELETION_MARK_FILENAME}");
    match bucket.get(&name).await {
        Ok(data) => match serde_json::from_slice::<DeletionMark>(&data) {
            Ok(m) => Ok(Some(m)),
            Err(e) => {
                warn!(block = %id, error = %e, "unparseable deletion-mark.json ignored");
                Ok(None)
            }
        },
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_compact_mark_has_thanos_field_names() {
        let mark = NoCompactMark {
            id: Ulid::nil(),
            version: MARK_VERSION,
            details: Some("why".into()),
            no_compact_time: 1_700_000_000,
            reason: "manual".into(),
        };
        let v: serde_json::Value = serde_json::to_value(&mark).expect("encodes");
        let mut keys: Vec<_> = v.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["details", "id", "no_compact_time", "reason", "version"]
        );
        assert_eq!(v["id"], "00000000000000000000000000");
    }

    #[test]
    fn deletion_mark_round_trips() {
        let json = r#"{"id":"01ARZ3NDEKTSV4RRFFQ69G5FAV","deletion_time":1700000000,"version":1}"#;
        let m: DeletionMark = serde_json::from_str(json).expect("parses");
        assert_eq!(m.deletion_time, 1_700_000_000);
        assert_eq!(m.details, None);
        let back = serde_json::to_string(&m).expect("encodes");
        assert!(!back.contains("details"), "{back}");
    }
}
