//! Read-only views of the blocks in a bucket for `strata tools bucket ls|inspect|verify`: each
//! block's meta, marks and objects, and the problems a verification finds (overlaps within a
//! compaction group, files missing from the bucket, index problems).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use strata_objstore::Bucket;
use strata_tsdb::meta::BlockMeta;
use strata_tsdb::{BytesSource, IndexReader};
use tracing::warn;
use ulid::Ulid;

use crate::error::Result;
use crate::marks::{DELETION_MARK_FILENAME, NO_COMPACT_MARK_FILENAME};
use crate::sync::{BlockObjects, external_labels, resolution};

/// The largest index `verify_index` downloads (16 GiB).
pub const MAX_INDEX_BYTES: u64 = 16 << 30;

/// One block directory of the bucket.
#[derive(Debug, Clone)]
pub struct BlockInfo {
    /// The block.
    pub id: Ulid,
    /// Its `meta.json`; `None` for a partial upload (or an unparseable meta, see `meta_error`).
    pub meta: Option<BlockMeta>,
    /// Why `meta.json` could not be parsed, when it exists but is broken.
    pub meta_error: Option<String>,
    /// Which marker files it has.
    pub objects: BlockObjects,
    /// Every object under the block directory (relative name, e.g. `chunks/000001`), sorted.
    pub files: Vec<String>,
}

impl BlockInfo {
    /// The block's external labels rendered `{a="b", …}` (empty braces without meta).
    pub fn labels_string(&self) -> String {
        self.meta
            .as_ref()
            .map(|m| external_labels(m).to_string())
            .unwrap_or_else(|| "{}".into())
    }

    /// The block's resolution (0 without meta).
    pub fn resolution(&self) -> i64 {
        self.meta.as_ref().map_or(0, resolution)
    }
}

/// Lists the bucket once and reads the `meta.json` of every block (or only of `only`, when it is
/// not empty). Blocks are returned in ULID order.
pub async fn load_blocks(bucket: &Bucket, only: &[Ulid]) -> Result<Vec<BlockInfo>> {
    let names = bucket.list_recursive("").await?;
    let mut files: BTreeMap<Ulid, Vec<String>> = BTreeMap::new();
    for name in &names {
        let Some((dir, file)) = name.split_once('/') else {
            continue;
        };
        let Ok(id) = Ulid::from_string(dir) else {
            continue;
        };
        if id.to_string() != dir || (!only.is_empty() && !only.contains(&id)) {
            continue;
        }
        files.entry(id).or_default().push(file.to_string());
    }
    let mut out = Vec::with_capacity(files.len());
    for (id, files) in files {
        let objects = BlockObjects {
            meta: files.iter().any(|f| f == "meta.json"),
            deletion_mark: files.iter().any(|f| f == DELETION_MARK_FILENAME),
            no_compact_mark: files.iter().any(|f| f == NO_COMPACT_MARK_FILENAME),
        };
        let (meta, meta_error) = if objects.meta {
            let data = bucket.get(&format!("{id}/meta.json")).await?;
            match serde_json::from_slice::<BlockMeta>(&data) {
                Ok(m) => (Some(m), None),
                Err(e) => {
                    warn!(block = %id, error = %e, "unparseable meta.json");
                    (None, Some(e.to_string()))
                }
            }
        } else {
            (None, None)
        };
        out.push(BlockInfo {
            id,
            meta,
            meta_error,
            objects,
            files,
        });
    }
    Ok(out)
}

/// A problem [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Issue {
    /// The block (the first one, for overlaps).
    pub block: Ulid,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.block, self.what)
    }
}

/// The compaction group of a block, as Thanos forms it: resolution and external labels.
fn group_key(b: &BlockInfo) -> String {
    format!("{}@{}", b.resolution(), b.labels_string())
}

/// Blocks of one group (same external labels and resolution) whose time ranges overlap. Blocks
/// marked for deletion are left out (a compactor replaced them). Partial blocks have no range.
pub fn overlaps(blocks: &[BlockInfo]) -> Vec<Issue> {
    let mut groups: BTreeMap<String, Vec<(i64, i64, Ulid)>> = BTreeMap::new();
    for b in blocks {
        if b.objects.deletion_mark {
            continue;
        }
        if let Some(m) = &b.meta {
            groups
                .entry(group_key(b))
                .or_default()
                .push((m.min_time, m.max_time, b.id));
        }
    }
    let mut out = Vec::new();
    for (group, mut ranges) in groups {
        ranges.sort();
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                if b.0 >= a.1 {
                    break;
                }
                out.push(Issue {
                    block: a.2,
                    what: format!(
                        "overlaps block {} in group {group}: [{}, {}) and [{}, {})",
                        b.2, a.0, a.1, b.0, b.1
                    ),
                });
            }
        }
    }
    out
}

/// Files a block's meta promises that the bucket does not hold: entries of `thanos.files`, and
/// gaps in the chunk segment numbering (`chunks/000001`, `000002`, …).
pub fn missing_files(b: &BlockInfo) -> Vec<Issue> {
    let mut out = Vec::new();
    let Some(meta) = &b.meta else {
        return out;
    };
    let listed: std::collections::HashSet<&str> = b.files.iter().map(String::as_str).collect();
    if let Some(t) = &meta.thanos {
        for f in &t.files {
            if f.rel_path != "meta.json" && !listed.contains(f.rel_path.as_str()) {
                out.push(Issue {
                    block: b.id,
                    what: format!("file {} listed in meta.json is missing", f.rel_path),
                });
            }
        }
    }
    if !listed.contains("index") && !out.iter().any(|i| i.what.contains(" index ")) {
        out.push(Issue {
            block: b.id,
            what: "file index is missing".into(),
        });
    }
    let mut segs: Vec<u32> = b
        .files
        .iter()
        .filter_map(|f| f.strip_prefix("chunks/"))
        .filter_map(|s| s.parse::<u32>().ok())
        .collect();
    segs.sort_unstable();
    if segs.is_empty() && meta.stats.num_chunks > 0 {
        out.push(Issue {
            block: b.id,
            what: format!(
                "no chunk segments, but meta.json counts {} chunks",
                meta.stats.num_chunks
            ),
        });
    }
    if let Some(&last) = segs.last() {
        for n in 1..last {
            if segs.binary_search(&n).is_err() {
                let name = strata_tsdb::chunks::segment_file_name(n);
                if !out.iter().any(|i| i.what.contains(&name)) {
                    out.push(Issue {
                        block: b.id,
                        what: format!("chunk segment chunks/{name} is missing"),
                    });
                }
            }
        }
    }
    out
}

/// Downloads the block's index (at most [`MAX_INDEX_BYTES`]) and checks it: readable (checksums),
/// series sorted by labels, every chunk reference inside an existing segment, chunks of a series
/// in time order without overlap, and within the block's time range.
pub async fn verify_index(bucket: &Bucket, b: &BlockInfo) -> Result<Vec<Issue>> {
    let mut out = Vec::new();
    let Some(meta) = &b.meta else {
        return Ok(out);
    };
    let issue = |what: String| Issue {
        block: b.id,
        what: format!("index: {what}"),
    };
    let name = format!("{}/index", b.id);
    let attrs = match bucket.attributes(&name).await {
        Ok(a) => a,
        Err(e) if e.is_not_found() => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    if attrs.size > MAX_INDEX_BYTES {
        out.push(issue(format!(
            "{} bytes, more than the {MAX_INDEX_BYTES} verify reads",
            attrs.size
        )));
        return Ok(out);
    }
    let data = bucket.get(&name).await?;
    // Segment sizes, to check chunk references against.
    let mut seg_sizes: HashMap<u32, u64> = HashMap::new();
    for f in &b.files {
        if let Some(n) = f
            .strip_prefix("chunks/")
            .and_then(|s| s.parse::<u32>().ok())
        {
            let size = bucket.attributes(&format!("{}/{f}", b.id)).await?.size;
            seg_sizes.insert(n, size);
        }
    }
    let src = Arc::new(BytesSource::new(name.clone(), data));
    let index = match IndexReader::open(src) {
        Ok(i) => i,
        Err(e) => {
            out.push(issue(format!("unreadable: {e}")));
            return Ok(out);
        }
    };
    let refs = match index.all_postings() {
        Ok(r) => r,
        Err(e) => {
            out.push(issue(format!("postings unreadable: {e}")));
            return Ok(out);
        }
    };
    const MAX_REPORTED: usize = 20;
    let mut prev_labels: Option<strata_tsdb::Labels> = None;
    for r in refs {
        if out.len() >= MAX_REPORTED {
            out.push(issue("more problems not listed".into()));
            break;
        }
        let (labels, chunks) = match index.series(r) {
            Ok(s) => s,
            Err(e) => {
                out.push(issue(format!("series {r:?} unreadable: {e}")));
                continue;
            }
        };
        if let Some(p) = &prev_labels
            && p.iter().cmp(labels.iter()) != std::cmp::Ordering::Less
        {
            out.push(issue(format!("series not sorted: {p} before {labels}")));
        }
        let mut last_max: Option<i64> = None;
        for c in &chunks {
            // References hold the 0-based index of the segment; files are numbered from 1.
            let seg = c.chunk_ref.segment().saturating_add(1);
            match seg_sizes.get(&seg) {
                None => out.push(issue(format!(
                    "series {labels}: chunk ref {:#x} points to missing segment {}",
                    c.chunk_ref.0,
                    strata_tsdb::chunks::segment_file_name(seg)
                ))),
                Some(&size) if u64::from(c.chunk_ref.offset()) >= size => out.push(issue(format!(
                    "series {labels}: chunk ref {:#x} beyond the end of segment {} ({size} bytes)",
                    c.chunk_ref.0,
                    strata_tsdb::chunks::segment_file_name(seg)
                ))),
                Some(_) => {}
            }
            if c.min_time > c.max_time {
                out.push(issue(format!(
                    "series {labels}: chunk with min time {} after max time {}",
                    c.min_time, c.max_time
                )));
            }
            if let Some(lm) = last_max
                && c.min_time <= lm
            {
                out.push(issue(format!(
                    "series {labels}: out-of-order chunk [{}, {}] after one ending at {lm}",
                    c.min_time, c.max_time
                )));
            }
            if c.min_time < meta.min_time || c.max_time > meta.max_time {
                out.push(issue(format!(
                    "series {labels}: chunk [{}, {}] outside the block's range [{}, {})",
                    c.min_time, c.max_time, meta.min_time, meta.max_time
                )));
            }
            last_max = Some(c.max_time);
        }
        prev_labels = Some(labels);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use strata_tsdb::meta::{ThanosFile, ThanosMeta};

    use super::*;

    fn info(n: u8, min: i64, max: i64, cluster: &str, res: i64, files: &[&str]) -> BlockInfo {
        let id = Ulid::from_parts(1, u128::from(n));
        let mut meta = BlockMeta::new(id, min, max);
        meta.thanos = Some(ThanosMeta::new(
            BTreeMap::from([("cluster".to_string(), cluster.to_string())]),
            "test",
            res,
        ));
        BlockInfo {
            id,
            meta: Some(meta),
            meta_error: None,
            objects: BlockObjects {
                meta: true,
                ..BlockObjects::default()
            },
            files: files.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn overlaps_only_within_a_group() {
        let a = info(1, 0, 100, "eu", 0, &[]);
        let b = info(2, 50, 150, "eu", 0, &[]);
        let c = info(3, 50, 150, "us", 0, &[]);
        let d = info(4, 50, 150, "eu", 300_000, &[]);
        let e = info(5, 150, 200, "us", 0, &[]);
        let found = overlaps(&[a.clone(), b.clone(), c, d, e]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].block, a.id);
        assert!(found[0].what.contains(&b.id.to_string()));

        let mut marked = b;
        marked.objects.deletion_mark = true;
        assert!(overlaps(&[a, marked]).is_empty());
    }

    #[test]
    fn missing_files_and_segment_gaps() {
        let mut b = info(
            1,
            0,
            100,
            "eu",
            0,
            &["meta.json", "index", "chunks/000001", "chunks/000003"],
        );
        let meta = b.meta.as_mut().expect("meta");
        meta.stats.num_chunks = 3;
        meta.thanos.as_mut().expect("thanos").files =
            ["chunks/000001", "chunks/000004", "index", "meta.json"]
                .iter()
                .map(|p| ThanosFile {
                    rel_path: p.to_string(),
                    size_bytes: 1,
                    hash: None,
                })
                .collect();
        let found: Vec<String> = missing_files(&b).into_iter().map(|i| i.what).collect();
        assert_eq!(
            found,
            [
                "file chunks/000004 listed in meta.json is missing",
                "chunk segment chunks/000002 is missing"
            ]
        );

        let no_chunks = {
            let mut b = info(2, 0, 100, "eu", 0, &["meta.json", "index"]);
            b.meta.as_mut().expect("meta").stats.num_chunks = 5;
            b
        };
        let found = missing_files(&no_chunks);
        assert_eq!(found.len(), 1);
        assert!(found[0].what.contains("no chunk segments"), "{found:?}");

        let healthy = info(3, 0, 100, "eu", 0, &["meta.json", "index", "chunks/000001"]);
        assert!(missing_files(&healthy).is_empty());
    }

    #[tokio::test]
    async fn corrupt_index_is_an_issue_not_an_error() {
        let bucket = Bucket::in_memory();
        let b = info(1, 0, 100, "eu", 0, &["meta.json", "index"]);
        bucket
            .put(
                &format!("{}/index", b.id),
                bytes::Bytes::from_static(b"not an index at all"),
            )
            .await
            .expect("put");
        let found = verify_index(&bucket, &b).await.expect("verify");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].what.starts_with("index: unreadable"), "{found:?}");
    }
}
