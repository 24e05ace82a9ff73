//! The ruler's local TSDB: an in-memory head with a write-ahead log, cut into Prometheus TSDB
//! blocks on disk, served over the StoreAPI with the ruler's external labels and shipped to the
//! bucket.
//!
//! Layout of `dir`: `wal/wal` (the log, see [`wal`]), `<ULID>/` blocks (meta.json with a `thanos`
//! section: external labels, source `ruler`, resolution 0), `thanos.shipper.json` (the shipper's
//! list of uploaded blocks).
//!
//! Guarantees: `append` returns once the accepted samples are fsynced in the WAL. A block is
//! written to `<ULID>.tmp-for-creation` and renamed into place; only then is the WAL rewritten
//! (temp file + rename) without the block's samples. After a crash between the two, the samples
//! the block already holds are skipped on replay (the head only accepts samples at or after the
//! newest block's end).

mod background;
mod head;
mod metrics;
mod store;
pub mod wal;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use prometheus_client::registry::Registry;
use strata_promql::{Labels, Queryable, QueryableError, Series};
use strata_tsdb::{Block, BlockWriter, BlockWriterOptions, Sample};
use ulid::Ulid;

use crate::{Error, OutSample, Result, SampleSink};

pub use background::run_background;
use head::Head;
use metrics::Metrics;
pub use store::serve;

/// How the local storage is laid out and kept.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Data directory (`--data-dir`): `wal/` and block directories live here.
    pub dir: PathBuf,
    /// The ruler's external labels, announced over the StoreAPI and written to blocks' meta.json.
    pub external_labels: Labels,
    /// Block length, ms (2h by default, as Prometheus).
    pub block_duration_ms: i64,
    /// Local blocks older than this are deleted (after they were shipped, when shipping is on), ms.
    pub retention_ms: i64,
}

/// Head + WAL + local blocks. Implements [`SampleSink`] (durable once `append` returns) and
/// [`strata_promql::Queryable`] (for restoring alert state from `ALERTS_FOR_STATE`).
#[derive(Debug)]
pub struct LocalStorage {
    opts: StorageOptions,
    inner: Mutex<Inner>,
    blocks: RwLock<Vec<Arc<Block>>>,
    metrics: Metrics,
}

#[derive(Debug)]
struct Inner {
    wal: wal::Wal,
    head: Head,
    /// Samples before this (the newest block's end) are rejected: a block holds that range.
    min_valid_t: i64,
}

/// Suffix of a block directory `BlockWriter` has not finished (it renames it when done).
const TMP_BLOCK_SUFFIX: &str = ".tmp-for-creation";

/// Series merged from blocks and the head: labels → time-sorted samples.
pub(crate) type Merged = BTreeMap<Labels, Vec<(i64, f64)>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn io_err(what: &str, path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::Storage(format!("{what} {}: {e}", path.display()))
}

impl LocalStorage {
    /// Opens the storage in `opts.dir`, replaying the WAL into the head.
    pub async fn open(opts: StorageOptions, registry: &mut Registry) -> Result<Arc<Self>> {
        if opts.block_duration_ms <= 0 {
            return Err(Error::Storage(format!(
                "block duration must be positive, got {} ms",
                opts.block_duration_ms
            )));
        }
        let dir = opts.dir.clone();
        fs::create_dir_all(&dir).map_err(|e| io_err("create data dir", &dir, e))?;
        let mut blocks = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| io_err("read data dir", &dir, e))? {
            let entry = entry.map_err(|e| io_err("read data dir", &dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.ends_with(TMP_BLOCK_SUFFIX) {
                tracing::warn!(dir = %path.display(), "removing an unfinished block (crash during a cut?)");
                fs::remove_dir_all(&path).map_err(|e| io_err("remove", &path, e))?;
                continue;
            }
            if name.parse::<Ulid>().is_err() || !path.is_dir() {
                continue;
            }
            let block = Block::open(&path).map_err(|e| io_err("open block", &path, e))?;
            blocks.push(Arc::new(block));
        }
        blocks.sort_by_key(|b| b.meta().min_time);
        let min_valid_t = blocks
            .iter()
            .map(|b| b.meta().max_time)
            .max()
            .unwrap_or(i64::MIN);
        let (wal, replay) = wal::Wal::open(&dir.join("wal"))?;
        let mut head = Head::default();
        let mut skipped = 0usize;
        for s in replay.samples {
            if s.t < min_valid_t || head.append_checked(s.labels, s.t, s.v).is_err() {
                skipped += 1;
            }
        }
        let metrics = Metrics::register(registry);
        metrics.wal_size.set(wal.size() as i64);
        metrics.head_series.set(head.num_series() as i64);
        metrics.local_blocks.set(blocks.len() as i64);
        tracing::info!(
            dir = %dir.display(),
            blocks = blocks.len(),
            head_series = head.num_series(),
            head_samples = head.num_samples(),
            skipped,
            truncated_bytes = replay.truncated_bytes,
            "local storage opened, WAL replayed"
        );
        Ok(Arc::new(LocalStorage {
            opts,
            inner: Mutex::new(Inner {
                wal,
                head,
                min_valid_t,
            }),
            blocks: RwLock::new(blocks),
            metrics,
        }))
    }

    /// The options the storage was opened with.
    pub fn options(&self) -> &StorageOptions {
        &self.opts
    }

    /// The local blocks' ids, oldest first.
    pub fn block_ids(&self) -> Vec<Ulid> {
        self.blocks_snapshot()
            .iter()
            .map(|b| b.meta().ulid)
            .collect()
    }

    fn blocks_snapshot(&self) -> Vec<Arc<Block>> {
        self.blocks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The time range of all data (blocks and head), `None` when empty.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let head = lock(&self.inner).head.time_range();
        let blocks = self.blocks_snapshot();
        let b = blocks
            .iter()
            .map(|b| (b.meta().min_time, b.meta().max_time - 1))
            .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
        match (head, b) {
            (Some(h), Some(b)) => Some((h.0.min(b.0), h.1.max(b.1))),
            (h, b) => h.or(b),
        }
    }

    /// Cuts blocks while the head spans more than 1.5 × the block duration: the oldest
    /// block-aligned range is written as a block, dropped from the head, and the WAL is rewritten
    /// without it. Returns the new blocks. Appends wait while a block is written.
    pub fn cut_due_blocks(&self) -> Result<Vec<Ulid>> {
        let bd = self.opts.block_duration_ms;
        let mut inner = lock(&self.inner);
        let mut cut = Vec::new();
        while let Some((min, max)) = inner.head.time_range() {
            if (max - min) as f64 <= 1.5 * bd as f64 {
                break;
            }
            let start = min.div_euclid(bd) * bd;
            let end = start + bd;
            let id = self.write_block(&inner.head, start, end)?;
            inner.head.truncate_before(end);
            inner.min_valid_t = end;
            if let Some(id) = id {
                cut.push(id);
            }
        }
        if !cut.is_empty() {
            let rest = inner.head.all_samples();
            inner.wal.rewrite(&rest)?;
            self.metrics.wal_size.set(inner.wal.size() as i64);
            self.metrics.head_series.set(inner.head.num_series() as i64);
            self.metrics.blocks_cut.inc_by(cut.len() as u64);
            self.metrics
                .local_blocks
                .set(self.blocks_snapshot().len() as i64);
        }
        Ok(cut)
    }

    /// Writes the head's samples in `[start, end)` as a block (none when there are none).
    fn write_block(&self, head: &Head, start: i64, end: i64) -> Result<Option<Ulid>> {
        let span = tracing::info_span!("cut_block", start, end);
        let _enter = span.enter();
        let dir = &self.opts.dir;
        let ext: BTreeMap<String, String> = self.opts.external_labels.iter().cloned().collect();
        let wopts = BlockWriterOptions {
            chunk_range: self.opts.block_duration_ms,
            thanos: Some(strata_tsdb::meta::ThanosMeta::new(ext, "ruler", 0)),
            ..Default::default()
        };
        let mut w = BlockWriter::new(dir, wopts).map_err(|e| io_err("start block in", dir, e))?;
        w.set_time_range(start, end);
        let mut any = false;
        for (labels, samples) in head.range(start, end) {
            let l = strata_tsdb::Labels::new(labels.iter().cloned().collect())
                .map_err(|e| Error::Storage(format!("series {labels}: {e}")))?;
            w.add_series(&l, &samples)
                .map_err(|e| Error::Storage(format!("write series {labels}: {e}")))?;
            any = true;
        }
        if !any {
            return Ok(None);
        }
        let id = w.finish().map_err(|e| io_err("finish block in", dir, e))?;
        let path = dir.join(id.to_string());
        let block = Block::open(&path).map_err(|e| io_err("open new block", &path, e))?;
        tracing::info!(block = %id, samples = block.meta().stats.num_samples, "block cut");
        let mut blocks = self.blocks.write().unwrap_or_else(|p| p.into_inner());
        blocks.push(Arc::new(block));
        blocks.sort_by_key(|b| b.meta().min_time);
        Ok(Some(id))
    }

    /// Deletes local blocks that ended more than the retention before the newest data; with
    /// `shipped` set, only blocks listed in it (so nothing unshipped is lost). Returns them.
    pub fn apply_retention(&self, shipped: Option<&HashSet<Ulid>>) -> Result<Vec<Ulid>> {
        let Some((_, newest)) = self.time_range() else {
            return Ok(Vec::new());
        };
        let cutoff = newest.saturating_sub(self.opts.retention_ms);
        let mut removed = Vec::new();
        let doomed: Vec<Arc<Block>> = {
            let mut blocks = self.blocks.write().unwrap_or_else(|p| p.into_inner());
            let (doomed, keep): (Vec<_>, Vec<_>) = blocks.drain(..).partition(|b| {
                b.meta().max_time <= cutoff && shipped.is_none_or(|s| s.contains(&b.meta().ulid))
            });
            *blocks = keep;
            doomed
        };
        for b in doomed {
            let path = b.dir().to_path_buf();
            let id = b.meta().ulid;
            drop(b);
            fs::remove_dir_all(&path).map_err(|e| io_err("delete block", &path, e))?;
            tracing::info!(block = %id, "local block deleted (retention)");
            removed.push(id);
        }
        if !removed.is_empty() {
            self.metrics.blocks_deleted.inc_by(removed.len() as u64);
            self.metrics
                .local_blocks
                .set(self.blocks_snapshot().len() as i64);
        }
        Ok(removed)
    }

    /// Series matching `tsdb_matchers` and `keep`, with samples in `[min_t, max_t]`, from the
    /// blocks and the head.
    pub(crate) fn collect(
        &self,
        tsdb_matchers: &[strata_tsdb::matcher::Matcher],
        keep: &dyn Fn(&Labels) -> bool,
        min_t: i64,
        max_t: i64,
    ) -> Result<Merged> {
        let mut out = Merged::new();
        for b in self.blocks_snapshot() {
            let m = b.meta();
            if m.min_time > max_t || m.max_time <= min_t {
                continue;
            }
            let iter = b
                .select(tsdb_matchers, min_t, max_t)
                .map_err(|e| io_err("select from block", b.dir(), e))?;
            for s in iter {
                let s = s.map_err(|e| io_err("read block", b.dir(), e))?;
                let labels = Labels::new(s.labels.into_vec());
                if !keep(&labels) {
                    continue;
                }
                let e = out.entry(labels).or_default();
                e.extend(s.samples.iter().filter_map(|x| match x {
                    Sample::Float { t, v } => Some((*t, *v)),
                    _ => None,
                }));
            }
        }
        lock(&self.inner)
            .head
            .collect_into(&mut out, keep, min_t, max_t);
        for v in out.values_mut() {
            v.sort_by_key(|p| p.0);
            v.dedup_by_key(|p| p.0);
        }
        out.retain(|_, v| !v.is_empty());
        Ok(out)
    }

    /// Label names (`values_of` unset) or the values of one label, over series matching `keep`
    /// with data in `[min_t, max_t]`.
    pub(crate) fn label_set(
        &self,
        keep: &dyn Fn(&Labels) -> bool,
        values_of: Option<&str>,
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<String>> {
        let all = [any_series_matcher()?];
        let merged = self.collect(&all, keep, min_t, max_t)?;
        let mut set = BTreeSet::new();
        for l in merged.keys() {
            match values_of {
                None => set.extend(l.iter().map(|(n, _)| n.clone())),
                Some(name) => set.extend(l.get(name).map(str::to_string)),
            }
        }
        Ok(set.into_iter().collect())
    }
}

/// A block matcher every series passes (blocks need at least one matcher).
pub(crate) fn any_series_matcher() -> Result<strata_tsdb::matcher::Matcher> {
    strata_tsdb::matcher::Matcher::new(strata_tsdb::matcher::MatchOp::NotEqual, "__name__", "")
        .map_err(|e| Error::Storage(format!("matcher: {e}")))
}

#[async_trait::async_trait]
impl SampleSink for LocalStorage {
    async fn append(&self, samples: &[OutSample]) -> Result<()> {
        let span = tracing::debug_span!("append", samples = samples.len());
        let _enter = span.enter();
        let mut inner = lock(&self.inner);
        let min_valid = inner.min_valid_t;
        let mut accepted = Vec::with_capacity(samples.len());
        let mut batch_last: HashMap<&Labels, (i64, u64)> = HashMap::new();
        let mut rejected = 0u64;
        for s in samples {
            if s.t < min_valid {
                rejected += 1;
                continue;
            }
            let last = batch_last
                .get(&s.labels)
                .copied()
                .or_else(|| inner.head.last(&s.labels).map(|(t, v)| (t, v.to_bits())));
            match last {
                Some((t, _)) if s.t < t => rejected += 1,
                Some((t, bits)) if s.t == t => {
                    if bits != s.v.to_bits() {
                        rejected += 1;
                    }
                }
                _ => {
                    batch_last.insert(&s.labels, (s.t, s.v.to_bits()));
                    accepted.push(s.clone());
                }
            }
        }
        drop(batch_last);
        if rejected > 0 {
            self.metrics.samples_rejected.inc_by(rejected);
            tracing::debug!(rejected, "out-of-order or out-of-bounds samples rejected");
        }
        inner.wal.append(&accepted)?;
        let n = accepted.len() as u64;
        for s in accepted {
            // Checked above against the head and the batch; cannot fail.
            let _ = inner.head.append_checked(s.labels, s.t, s.v);
        }
        self.metrics.samples_appended.inc_by(n);
        self.metrics.wal_size.set(inner.wal.size() as i64);
        self.metrics.head_series.set(inner.head.num_series() as i64);
        Ok(())
    }
}

fn to_tsdb_matchers(
    ms: &[promql_parser::label::Matcher],
) -> std::result::Result<Vec<strata_tsdb::matcher::Matcher>, QueryableError> {
    use promql_parser::label::MatchOp as P;
    use strata_tsdb::matcher::{MatchOp as T, Matcher};
    let mut out = Vec::with_capacity(ms.len() + 1);
    for m in ms {
        let op = match &m.op {
            P::Equal => T::Equal,
            P::NotEqual => T::NotEqual,
            P::Re(_) => T::RegexMatch,
            P::NotRe(_) => T::RegexNoMatch,
        };
        out.push(
            Matcher::new(op, m.name.clone(), m.value.clone())
                .map_err(|e| QueryableError::Storage(format!("matcher {m}: {e}")))?,
        );
    }
    if out.is_empty() {
        out.push(any_series_matcher().map_err(qerr)?);
    }
    Ok(out)
}

fn qerr(e: Error) -> QueryableError {
    QueryableError::Storage(e.to_string())
}

#[async_trait::async_trait]
impl Queryable for LocalStorage {
    async fn select(
        &self,
        matchers: &[promql_parser::label::Matcher],
        min_t: i64,
        max_t: i64,
    ) -> std::result::Result<Vec<Series>, QueryableError> {
        let tm = to_tsdb_matchers(matchers)?;
        let keep = |l: &Labels| {
            matchers
                .iter()
                .all(|m| m.is_match(l.get(&m.name).unwrap_or("")))
        };
        let merged = self.collect(&tm, &keep, min_t, max_t).map_err(qerr)?;
        Ok(merged
            .into_iter()
            .map(|(labels, samples)| Series {
                labels,
                samples,
                histograms: Vec::new(),
            })
            .collect())
    }

    async fn label_names(
        &self,
        min_t: i64,
        max_t: i64,
    ) -> std::result::Result<Vec<String>, QueryableError> {
        self.label_set(&|_| true, None, min_t, max_t).map_err(qerr)
    }

    async fn label_values(
        &self,
        name: &str,
        min_t: i64,
        max_t: i64,
    ) -> std::result::Result<Vec<String>, QueryableError> {
        self.label_set(&|_| true, Some(name), min_t, max_t)
            .map_err(qerr)
    }
}

#[cfg(test)]
mod tests;
