//! Block sync: lists the bucket once, fetches the meta.json of new blocks concurrently (caching
//! each on local disk, since a block's meta.json never changes), skips partial uploads and blocks
//! marked for deletion past the delay, and applies the time and relabel filters.
//!
//! One recursive listing per pass tells which block directories have `meta.json`,
//! `deletion-mark.json` and `no-compact-mark.json`, so a steady-state pass makes no GET at all: metas
//! are kept in memory, deletion marks are read once when they appear.
//!
//! NOT DONE: Thanos's `--consistency-delay` (store default 0s) is not implemented; a meta.json
//! is read whole without a size bound (the bucket is trusted to hold small metas).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use strata_objstore::Bucket;
use strata_tsdb::Labels;
use strata_tsdb::meta::{BlockMeta, META_FILENAME};
use tracing::{debug, warn};
use ulid::Ulid;

use crate::error::{Error, Result};
use crate::marks::read_deletion_mark;
pub use crate::marks::{DELETION_MARK_FILENAME, DeletionMark, NO_COMPACT_MARK_FILENAME};
use crate::relabel::RelabelConfig;

/// Directory under the data dir holding cached metas as `<ulid>.json`.
pub const META_CACHE_DIR: &str = "meta";

/// A time bound given on the command line: RFC 3339, or relative to now (`-2w`, `-36h`, `0d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBound {
    /// Milliseconds since the epoch.
    Absolute(i64),
    /// This long before now.
    Ago(Duration),
    /// This long after now (a duration without a leading `-`, as Thanos accepts).
    Ahead(Duration),
}

impl TimeBound {
    /// The bound as milliseconds since the epoch at `now_ms`.
    pub fn resolve(&self, now_ms: i64) -> i64 {
        let ms = |d: &Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        match self {
            TimeBound::Absolute(t) => *t,
            TimeBound::Ago(d) => now_ms.saturating_sub(ms(d)),
            TimeBound::Ahead(d) => now_ms.saturating_add(ms(d)),
        }
    }
}

/// Why a time bound did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid time {input:?}: {reason} (expected RFC 3339 like 2024-01-02T15:04:05Z, or a duration like -2w, -36h, 0d)"
)]
pub struct TimeBoundError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for TimeBound {
    type Err = TimeBoundError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Ok(TimeBound::Absolute(t.timestamp_millis()));
        }
        let err = |reason| TimeBoundError {
            input: s.to_string(),
            reason,
        };
        let (negative, rest) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let d = parse_duration(rest).map_err(err)?;
        Ok(if negative || d.is_zero() {
            TimeBound::Ago(d)
        } else {
            TimeBound::Ahead(d)
        })
    }
}

/// Parses a Prometheus duration (`1y2w3d4h5m6s7ms`; units in that order, each at most once; `0`
/// alone is zero).
pub fn parse_duration(s: &str) -> Result<Duration, &'static str> {
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 24 * 3600 * 1000),
        ("w", 7 * 24 * 3600 * 1000),
        ("d", 24 * 3600 * 1000),
        ("h", 3600 * 1000),
        ("m", 60 * 1000),
        ("s", 1000),
        ("ms", 1),
    ];
    if s.is_empty() {
        return Err("empty duration");
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut next_unit = 0;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err("not a number followed by a unit");
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| "duration out of range")?;
        rest = &rest[digits..];
        let unit = if rest.starts_with("ms") {
            "ms"
        } else {
            let len = rest.chars().next().map_or(0, char::len_utf8);
            &rest[..len]
        };
        let Some(pos) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err("unknown unit (ms, s, m, h, d, w, y)");
        };
        if pos < next_unit {
            return Err("units must go from largest to smallest, each at most once");
        }
        next_unit = pos + 1;
        rest = &rest[unit.len()..];
        total = n
            .checked_mul(UNITS[pos].1)
            .and_then(|v| total.checked_add(v))
            .ok_or("duration out of range")?;
    }
    if total > i64::MAX as u64 {
        return Err("duration out of range");
    }
    Ok(Duration::from_millis(total))
}

/// Which of the files the sync cares about a block directory holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockObjects {
    /// `meta.json` (without it the block is a partial upload).
    pub meta: bool,
    /// `deletion-mark.json`.
    pub deletion_mark: bool,
    /// `no-compact-mark.json` (noted, no effect on serving).
    pub no_compact_mark: bool,
}

/// Lists the bucket once and returns every top-level `<ULID>/` directory with the marker files it
/// holds. Other top-level entries (debug dirs, files) are ignored.
pub async fn list_blocks(bucket: &Bucket) -> Result<BTreeMap<Ulid, BlockObjects>> {
    let names = bucket.list_recursive("").await?;
    let mut out: BTreeMap<Ulid, BlockObjects> = BTreeMap::new();
    for name in &names {
        let Some((dir, file)) = name.split_once('/') else {
            continue;
        };
        let Ok(id) = Ulid::from_string(dir) else {
            continue;
        };
        if id.to_string() != dir {
            debug!(
                dir,
                "skipping block directory whose name is not a canonical ULID"
            );
            continue;
        }
        let e = out.entry(id).or_default();
        match file {
            META_FILENAME => e.meta = true,
            DELETION_MARK_FILENAME => e.deletion_mark = true,
            NO_COMPACT_MARK_FILENAME => e.no_compact_mark = true,
            _ => {}
        }
    }
    Ok(out)
}

/// The external labels (`thanos.labels`) of a meta, sorted; invalid sets (empty names) are empty.
pub fn external_labels(meta: &BlockMeta) -> Labels {
    let pairs = meta
        .thanos
        .as_ref()
        .and_then(|t| t.labels.as_ref())
        .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Labels::new(pairs).unwrap_or_default()
}

/// The downsampling resolution of a meta (0 for raw blocks and blocks without a Thanos section).
pub fn resolution(meta: &BlockMeta) -> i64 {
    meta.thanos.as_ref().map_or(0, |t| t.downsample.resolution)
}

/// Milliseconds since the epoch now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Why a block with a readable meta is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterReason {
    /// Its time range lies outside `--min-time`/`--max-time`.
    Time,
    /// The selector relabel config dropped it.
    Relabel,
    /// It was marked for deletion longer ago than the deletion delay.
    Deleted,
}

/// The filters a block must pass to be served.
#[derive(Debug, Clone, Default)]
pub struct BlockFilter {
    /// Serve only blocks whose range reaches this.
    pub min_time: Option<TimeBound>,
    /// Serve only blocks whose range starts at or before this.
    pub max_time: Option<TimeBound>,
    /// Selector rules over external labels and `__block_id`.
    pub relabel: Option<RelabelConfig>,
    /// Blocks marked for deletion longer ago than this are not served.
    pub deletion_delay: Duration,
}

impl BlockFilter {
    /// Why `meta` is not served at `now_ms` (None: it is served). The time check is Thanos's:
    /// served when `max_time >= --min-time && min_time <= --max-time`.
    pub fn check(
        &self,
        meta: &BlockMeta,
        labels: &Labels,
        mark: Option<&DeletionMark>,
        now_ms: i64,
    ) -> Option<FilterReason> {
        let lo = self.min_time.map_or(i64::MIN, |b| b.resolve(now_ms));
        let hi = self.max_time.map_or(i64::MAX, |b| b.resolve(now_ms));
        if meta.max_time < lo || meta.min_time > hi {
            return Some(FilterReason::Time);
        }
        if let Some(r) = &self.relabel
            && !r.keeps_block(meta.ulid, labels)
        {
            return Some(FilterReason::Relabel);
        }
        if let Some(m) = mark {
            let delay_ms = i64::try_from(self.deletion_delay.as_millis()).unwrap_or(i64::MAX);
            let marked_ms = m.deletion_time.saturating_mul(1000);
            if now_ms.saturating_sub(marked_ms) > delay_ms {
                return Some(FilterReason::Deleted);
            }
        }
        None
    }
}

/// The blocks whose data another block already holds, as Thanos's `DeduplicateFilter` finds
/// them: within one resolution, a block is a duplicate when another block's
/// `compaction.sources` include all of its sources and that block has more sources (or the same
/// sources and a smaller ULID). This hides the inputs of a compaction until they are deleted.
pub fn duplicates<'a>(metas: impl IntoIterator<Item = &'a BlockMeta>) -> HashSet<Ulid> {
    let mut by_res: HashMap<i64, Vec<&BlockMeta>> = HashMap::new();
    for m in metas {
        by_res.entry(resolution(m)).or_default().push(m);
    }
    let mut dups = HashSet::new();
    for group in by_res.values() {
        let sources: Vec<HashSet<Ulid>> = group
            .iter()
            .map(|m| m.compaction.sources.iter().copied().collect())
            .collect();
        // Which blocks hold each source.
        let mut holders: HashMap<Ulid, Vec<usize>> = HashMap::new();
        for (i, s) in sources.iter().enumerate() {
            for src in s {
                holders.entry(*src).or_default().push(i);
            }
        }
        let wins = |a: usize, b: usize| {
            let (la, lb) = (sources[a].len(), sources[b].len());
            la > lb || (la == lb && group[a].ulid < group[b].ulid)
        };
        for (i, s) in sources.iter().enumerate() {
            let candidates: Vec<usize> = match s.iter().next() {
                Some(first) => holders.get(first).cloned().unwrap_or_default(),
                None => (0..group.len()).collect(),
            };
            let covered = candidates
                .into_iter()
                .any(|j| j != i && wins(j, i) && s.is_subset(&sources[j]));
            if covered {
                dups.insert(group[i].ulid);
            }
        }
    }
    dups
}

/// What one [`MetaFetcher::fetch`] found.
#[derive(Debug, Default)]
pub struct FetchOutcome {
    /// Every block with a readable meta.json, before filtering.
    pub metas: BTreeMap<Ulid, Arc<BlockMeta>>,
    /// Deletion marks of those blocks.
    pub deletion_marks: HashMap<Ulid, DeletionMark>,
    /// Blocks whose state could not be checked this pass (a transient error reading the deletion
    /// mark): keep serving them if already served, do not add them.
    pub uncertain: HashSet<Ulid>,
    /// Block directories without meta.json.
    pub partial: Vec<Ulid>,
    /// Blocks whose meta.json could not be read or parsed, with the reason.
    pub failed: Vec<(Ulid, String)>,
    /// Metas taken from memory or the disk cache instead of the bucket.
    pub cache_hits: usize,
    /// meta.json objects fetched from the bucket.
    pub fetched: usize,
}

enum MetaResult {
    Cached(Arc<BlockMeta>),
    Fetched(Arc<BlockMeta>),
    Missing,
    Failed(String),
}

/// Fetches metas and deletion marks, keeping metas in memory and on disk across passes.
#[derive(Debug)]
pub struct MetaFetcher {
    bucket: Bucket,
    cache_dir: PathBuf,
    concurrency: usize,
    metas: HashMap<Ulid, Arc<BlockMeta>>,
    marks: HashMap<Ulid, DeletionMark>,
    disk_cleaned: bool,
}

impl MetaFetcher {
    /// A fetcher caching metas under `<data_dir>/meta/`, fetching `concurrency` objects at a time.
    pub fn new(bucket: Bucket, data_dir: &Path, concurrency: usize) -> Result<Self> {
        let cache_dir = data_dir.join(META_CACHE_DIR);
        std::fs::create_dir_all(&cache_dir).map_err(|e| Error::io(&cache_dir, e))?;
        Ok(MetaFetcher {
            bucket,
            cache_dir,
            concurrency: concurrency.max(1),
            metas: HashMap::new(),
            marks: HashMap::new(),
            disk_cleaned: false,
        })
    }

    /// The disk cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// One pass: list, read new metas (disk cache first, then the bucket), read new deletion
    /// marks, and forget (and delete from disk) metas of blocks gone from the bucket. Fails only
    /// when the listing fails.
    pub async fn fetch(&mut self) -> Result<FetchOutcome> {
        let listing = list_blocks(&self.bucket).await?;
        let mut out = FetchOutcome::default();

        // Forget blocks gone from the bucket (their cached meta files go too).
        let gone: Vec<Ulid> = self
            .metas
            .keys()
            .filter(|id| !listing.get(id).is_some_and(|o| o.meta))
            .copied()
            .collect();
        for id in &gone {
            self.metas.remove(id);
            remove_file_quietly(&self.cache_file(*id)).await;
        }
        self.marks
            .retain(|id, _| listing.get(id).is_some_and(|o| o.deletion_mark));
        if !self.disk_cleaned {
            self.clean_disk_cache(&listing).await;
            self.disk_cleaned = true;
        }

        // Metas: memory, then disk, then bucket.
        let mut todo = Vec::new();
        for (id, objs) in &listing {
            if !objs.meta {
                out.partial.push(*id);
            } else if let Some(m) = self.metas.get(id) {
                out.cache_hits += 1;
                out.metas.insert(*id, m.clone());
            } else {
                todo.push(*id);
            }
        }
        let this = &*self;
        let results: Vec<(Ulid, MetaResult)> = futures::stream::iter(todo)
            .map(|id| async move { (id, this.load_meta(id).await) })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        for (id, r) in results {
            match r {
                MetaResult::Cached(m) => {
                    out.cache_hits += 1;
                    self.metas.insert(id, m.clone());
                    out.metas.insert(id, m);
                }
                MetaResult::Fetched(m) => {
                    out.fetched += 1;
                    self.metas.insert(id, m.clone());
                    out.metas.insert(id, m);
                }
                MetaResult::Missing => out.partial.push(id),
                MetaResult::Failed(reason) => {
                    warn!(block = %id, error = %reason, "block meta.json unreadable; block not served");
                    out.failed.push((id, reason));
                }
            }
        }

        // Deletion marks: read once when they appear.
        let new_marks: Vec<Ulid> = listing
            .iter()
            .filter(|(id, o)| {
                o.deletion_mark && out.metas.contains_key(id) && !self.marks.contains_key(id)
            })
            .map(|(id, _)| *id)
            .collect();
        let bucket = &self.bucket;
        let marks: Vec<(Ulid, Result<Option<DeletionMark>, String>)> =
            futures::stream::iter(new_marks)
                .map(|id| async move { (id, read_deletion_mark(bucket, id).await) })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
        for (id, r) in marks {
            match r {
                Ok(Some(m)) => {
                    self.marks.insert(id, m);
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(block = %id, error = %e, "reading deletion mark failed; block state kept");
                    out.uncertain.insert(id);
                }
            }
        }
        out.deletion_marks = self
            .marks
            .iter()
            .filter(|(id, _)| out.metas.contains_key(id))
            .map(|(id, m)| (*id, m.clone()))
            .collect();
        Ok(out)
    }

    fn cache_file(&self, id: Ulid) -> PathBuf {
        self.cache_dir.join(format!("{id}.json"))
    }

    async fn load_meta(&self, id: Ulid) -> MetaResult {
        let path = self.cache_file(id);
        if let Ok(data) = tokio::fs::read(&path).await {
            match parse_meta(id, &data, &path) {
                Ok(m) => return MetaResult::Cached(Arc::new(m)),
                Err(e) => {
                    warn!(block = %id, error = %e, "cached meta unreadable; fetching it again");
                    remove_file_quietly(&path).await;
                }
            }
        }
        let name = format!("{id}/{META_FILENAME}");
        let data = match self.bucket.get(&name).await {
            Ok(d) => d,
            Err(e) if e.is_not_found() => return MetaResult::Missing,
            Err(e) => return MetaResult::Failed(e.to_string()),
        };
        let meta = match parse_meta(id, &data, Path::new(&name)) {
            Ok(m) => m,
            Err(e) => return MetaResult::Failed(e),
        };
        if let Err(e) = write_atomically(&path, &data).await {
            warn!(block = %id, error = %e, "caching meta.json on disk failed");
        }
        MetaResult::Fetched(Arc::new(meta))
    }

    /// Deletes cached metas of blocks not in the listing, and stray temporary files.
    async fn clean_disk_cache(&self, listing: &BTreeMap<Ulid, BlockObjects>) {
        let Ok(mut rd) = tokio::fs::read_dir(&self.cache_dir).await else {
            return;
        };
        while let Ok(Some(e)) = rd.next_entry().await {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let keep = name
                .strip_suffix(".json")
                .and_then(|s| Ulid::from_string(s).ok())
                .is_some_and(|id| listing.get(&id).is_some_and(|o| o.meta));
            if !keep {
                remove_file_quietly(&e.path()).await;
            }
        }
    }
}

/// Parses a meta.json and checks it describes block `id`.
fn parse_meta(id: Ulid, data: &[u8], path: &Path) -> Result<BlockMeta, String> {
    let meta = BlockMeta::from_slice(data, path).map_err(|e| {
        let cause = std::error::Error::source(&e).map(|c| format!(": {c}"));
        format!("{e}{}", cause.unwrap_or_default())
    })?;
    if meta.ulid != id {
        return Err(format!(
            "{}: names block {} but lies in {id}/",
            path.display(),
            meta.ulid
        ));
    }
    Ok(meta)
}

async fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    tokio::fs::write(&tmp, data)
        .await
        .map_err(|e| Error::io(&tmp, e))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|e| Error::io(path, e))
}

async fn remove_file_quietly(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %e, "removing cached file failed");
    }
}

/// Removes `<data_dir>/<ulid>/` directories (index-headers) of blocks not in `served`. Returns how
/// many were removed.
pub fn remove_unserved_block_dirs(data_dir: &Path, served: &HashSet<Ulid>) -> usize {
    let Ok(rd) = std::fs::read_dir(data_dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(id) = name.to_str().and_then(|s| Ulid::from_string(s).ok()) else {
            continue;
        };
        if served.contains(&id) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        match std::fs::remove_dir_all(e.path()) {
            Ok(()) => removed += 1,
            Err(err) => {
                warn!(block = %id, error = %err, "removing local block directory failed")
            }
        }
    }
    removed
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
