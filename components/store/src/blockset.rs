//! The set of blocks a gateway serves: filled by [`crate::sync`], loaded lazily on first query,
//! unloaded after an idle timeout, selected per request by time range and resolution.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use strata_objstore::Bucket;
use strata_tsdb::Labels;
use strata_tsdb::meta::BlockMeta;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};
use ulid::Ulid;

use crate::block::{BlockOptions, BucketBlock};
use crate::cache::IndexCache;
use crate::error::{Error, Result};
use crate::relabel::RelabelConfig;
use crate::stats::QueryStats;
use crate::sync::{
    BlockFilter, FilterReason, MetaFetcher, TimeBound, duplicates, external_labels, now_ms,
    remove_unserved_block_dirs, resolution,
};

/// After a failed load, a block is not loaded again before this has passed.
pub const LOAD_RETRY_BACKOFF: Duration = Duration::from_secs(30);

/// How the set is kept.
#[derive(Debug, Clone)]
pub struct BlockSetOptions {
    /// Local directory: `<data_dir>/meta/<ulid>.json` (meta cache) and `<data_dir>/<ulid>/index-header`.
    pub data_dir: PathBuf,
    /// How blocks read from the bucket.
    pub block: BlockOptions,
    /// Serve only blocks whose `maxTime` is at or after this (Thanos's `--min-time` check).
    pub min_time: Option<TimeBound>,
    /// Serve only blocks whose `minTime` is at or before this (Thanos's `--max-time` check).
    pub max_time: Option<TimeBound>,
    /// Sharding / selection over external labels and `__block_id`.
    pub relabel: Option<RelabelConfig>,
    /// Blocks with a deletion mark older than this are no longer served.
    pub deletion_delay: Duration,
    /// Concurrent meta.json fetches.
    pub sync_concurrency: usize,
    /// Loaded blocks unused this long release their index-header (None: never).
    pub idle_timeout: Option<Duration>,
}

/// What one sync pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Blocks served after the pass.
    pub blocks: usize,
    /// Blocks added by the pass.
    pub added: usize,
    /// Blocks dropped by the pass.
    pub removed: usize,
    /// Block directories without meta.json (partial uploads), not served.
    pub partial: usize,
    /// meta.json files taken from the local cache (disk, or memory after the first pass) instead
    /// of the bucket.
    pub meta_cache_hits: usize,
    /// Blocks filtered out (time, relabel, deletion mark).
    pub filtered: usize,
    /// Blocks whose meta.json could not be read or parsed (named in the log).
    pub failed: usize,
    /// meta.json objects fetched from the bucket by the pass.
    pub meta_fetched: usize,
    /// Blocks not served because another served block holds all their sources (compaction inputs
    /// not yet deleted).
    pub duplicates: usize,
}

/// The block set's metrics (`strata_store_*`); cheap to clone, clones share values.
#[derive(Debug, Clone)]
pub struct BlockSetMetrics {
    /// Blocks whose reader is in memory.
    pub blocks_loaded: Gauge,
    /// Blocks served.
    pub blocks: Gauge,
    /// Block load attempts.
    pub block_loads: Counter,
    /// Block loads that failed.
    pub block_load_failures: Counter,
    /// Blocks dropped from the set by a sync.
    pub block_drops: Counter,
    /// Readers released after the idle timeout.
    pub block_unloads: Counter,
    /// Duration of sync passes.
    pub sync_duration: Histogram,
    /// Sync passes that failed.
    pub sync_failures: Counter,
    /// Blocks whose last load failed.
    pub unhealthy_blocks: Gauge,
}

impl Default for BlockSetMetrics {
    fn default() -> Self {
        BlockSetMetrics {
            blocks_loaded: Gauge::default(),
            blocks: Gauge::default(),
            block_loads: Counter::default(),
            block_load_failures: Counter::default(),
            block_drops: Counter::default(),
            block_unloads: Counter::default(),
            sync_duration: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            sync_failures: Counter::default(),
            unhealthy_blocks: Gauge::default(),
        }
    }
}

impl BlockSetMetrics {
    /// Registers the metrics under the `strata_store` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("strata_store");
        r.register(
            "blocks_loaded",
            "Blocks whose index-header is loaded in memory",
            self.blocks_loaded.clone(),
        );
        r.register("blocks", "Blocks served", self.blocks.clone());
        r.register(
            "block_loads",
            "Block load attempts",
            self.block_loads.clone(),
        );
        r.register(
            "block_load_failures",
            "Block loads that failed",
            self.block_load_failures.clone(),
        );
        r.register(
            "block_drops",
            "Blocks dropped from the served set by a sync",
            self.block_drops.clone(),
        );
        r.register(
            "block_unloads",
            "Block readers released after the idle timeout",
            self.block_unloads.clone(),
        );
        r.register(
            "sync_duration_seconds",
            "Duration of block sync passes",
            self.sync_duration.clone(),
        );
        r.register(
            "sync_failures",
            "Block sync passes that failed",
            self.sync_failures.clone(),
        );
        r.register(
            "unhealthy_blocks",
            "Blocks whose last load failed",
            self.unhealthy_blocks.clone(),
        );
    }
}

/// What every block of a set shares for loading.
#[derive(Debug)]
struct LoadContext {
    bucket: Bucket,
    cache: Arc<dyn IndexCache>,
    block: BlockOptions,
    data_dir: PathBuf,
    metrics: BlockSetMetrics,
}

/// The load state of one block, generic over the reader so its rules are testable without a
/// real block: a loaded reader with its last use, or the last load failure with its time.
#[derive(Debug)]
struct LoadSlot<T> {
    reader: Option<Arc<T>>,
    last_used: Instant,
    failure: Option<(String, Instant)>,
}

/// What [`LoadSlot::ready`] says.
#[derive(Debug)]
enum Ready<T> {
    /// The reader (its use now recorded).
    Loaded(Arc<T>),
    /// The last load failed less than [`LOAD_RETRY_BACKOFF`] ago.
    Backoff { msg: String, retry_in: Duration },
    /// A load is due.
    Due,
}

impl<T> LoadSlot<T> {
    fn new(now: Instant) -> Self {
        LoadSlot {
            reader: None,
            last_used: now,
            failure: None,
        }
    }

    fn ready(&mut self, now: Instant) -> Ready<T> {
        if let Some(r) = &self.reader {
            let r = r.clone();
            self.last_used = now;
            return Ready::Loaded(r);
        }
        if let Some((msg, at)) = &self.failure {
            let retry_at = *at + LOAD_RETRY_BACKOFF;
            if now < retry_at {
                return Ready::Backoff {
                    msg: msg.clone(),
                    retry_in: retry_at - now,
                };
            }
        }
        Ready::Due
    }

    /// Records a successful load; returns (newly loaded, healthy again).
    fn loaded(&mut self, reader: Arc<T>, now: Instant) -> (bool, bool) {
        let recovered = self.failure.take().is_some();
        let newly = self.reader.replace(reader).is_none();
        self.last_used = now;
        (newly, recovered)
    }

    /// Records a failed load; returns whether the block just became unhealthy.
    fn failed(&mut self, msg: String, now: Instant) -> bool {
        self.failure.replace((msg, now)).is_none()
    }

    /// Drops the reader if unused for `idle` at `now`; returns whether it did.
    fn unload_if_idle(&mut self, idle: Duration, now: Instant) -> bool {
        if self.reader.is_some() && now.saturating_duration_since(self.last_used) >= idle {
            self.reader = None;
            return true;
        }
        false
    }
}

/// A served block: always its meta, its reader only while loaded.
#[derive(Debug)]
pub struct LazyBlock {
    meta: Arc<BlockMeta>,
    labels: Labels,
    ctx: Arc<LoadContext>,
    state: Mutex<LoadSlot<BucketBlock>>,
    load_lock: tokio::sync::Mutex<()>,
}

impl LazyBlock {
    fn new(meta: Arc<BlockMeta>, ctx: Arc<LoadContext>) -> Self {
        let labels = external_labels(&meta);
        LazyBlock {
            meta,
            labels,
            ctx,
            state: Mutex::new(LoadSlot::new(Instant::now())),
            load_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The block's meta.json.
    pub fn meta(&self) -> &Arc<BlockMeta> {
        &self.meta
    }

    /// The block's ULID.
    pub fn id(&self) -> Ulid {
        self.meta.ulid
    }

    /// The block's downsampling resolution in ms (0: raw).
    pub fn resolution(&self) -> i64 {
        resolution(&self.meta)
    }

    /// The block's external labels (`thanos.labels`), sorted.
    pub fn external_labels(&self) -> &Labels {
        &self.labels
    }

    /// The local directory of the block's index-header.
    pub fn dir(&self) -> PathBuf {
        self.ctx.data_dir.join(self.meta.ulid.to_string())
    }

    fn state(&self) -> MutexGuard<'_, LoadSlot<BucketBlock>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ready(&self) -> Option<Result<Arc<BucketBlock>>> {
        match self.state().ready(Instant::now()) {
            Ready::Loaded(r) => Some(Ok(r)),
            Ready::Backoff { msg, retry_in } => Some(Err(Error::Unhealthy {
                block: self.meta.ulid,
                msg,
                retry_in,
            })),
            Ready::Due => None,
        }
    }

    /// The reader, loading (and if needed building the index-header) on first use. Concurrent
    /// callers share one load. A block whose data failed to load is reported unhealthy and the
    /// error returned; it is tried again at most every [`LOAD_RETRY_BACKOFF`] (meanwhile callers
    /// get [`Error::Unhealthy`]). An object-storage failure is returned but not remembered.
    pub async fn get(&self, stats: &QueryStats) -> Result<Arc<BucketBlock>> {
        if let Some(r) = self.ready() {
            return r;
        }
        let _load = self.load_lock.lock().await;
        if let Some(r) = self.ready() {
            return r;
        }
        let ctx = &self.ctx;
        let dir = self.dir();
        ctx.metrics.block_loads.inc();
        let span = info_span!("load_block", block = %self.meta.ulid);
        let opened = async {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| Error::io(&dir, e))?;
            BucketBlock::open(
                ctx.bucket.clone(),
                self.meta.clone(),
                &dir,
                ctx.cache.clone(),
                ctx.block.clone(),
                stats,
            )
            .await
        }
        .instrument(span)
        .await;
        let m = &ctx.metrics;
        let now = Instant::now();
        match opened {
            Ok(r) => {
                let r = Arc::new(r);
                let (newly, recovered) = self.state().loaded(r.clone(), now);
                if newly {
                    m.blocks_loaded.inc();
                }
                if recovered {
                    m.unhealthy_blocks.dec();
                    info!(block = %self.meta.ulid, "block loaded; healthy again");
                }
                Ok(r)
            }
            Err(e) if matches!(e, Error::Objstore { .. } | Error::Bucket(_)) => {
                // The bucket's fault, not the block's: not remembered, the next query retries.
                m.block_load_failures.inc();
                warn!(block = %self.meta.ulid, error = %e, "block load failed: object storage");
                Err(e)
            }
            Err(e) => {
                m.block_load_failures.inc();
                warn!(block = %self.meta.ulid, error = %e, "block load failed; marked unhealthy");
                if self.state().failed(e.to_string(), now) {
                    m.unhealthy_blocks.inc();
                }
                Err(e)
            }
        }
    }

    /// Whether the reader is in memory now.
    pub fn is_loaded(&self) -> bool {
        self.state().reader.is_some()
    }

    /// The last load error, if the block is unhealthy.
    pub fn unhealthy(&self) -> Option<String> {
        self.state().failure.as_ref().map(|(m, _)| m.clone())
    }

    /// Releases the reader if unused for `idle` at `now`; returns whether it did. The
    /// index-header file stays on disk.
    fn unload_if_idle(&self, idle: Duration, now: Instant) -> bool {
        if self.state().unload_if_idle(idle, now) {
            self.ctx.metrics.blocks_loaded.dec();
            self.ctx.metrics.block_unloads.inc();
            debug!(block = %self.meta.ulid, "idle block unloaded");
            return true;
        }
        false
    }
}

impl Drop for LazyBlock {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if st.reader.is_some() {
            self.ctx.metrics.blocks_loaded.dec();
        }
        if st.failure.is_some() {
            self.ctx.metrics.unhealthy_blocks.dec();
        }
    }
}

/// One immutable view of the served blocks.
#[derive(Debug, Default)]
struct Snapshot {
    by_id: HashMap<Ulid, Arc<LazyBlock>>,
    /// Per resolution, coarsest first; blocks sorted by (min time, max time, id).
    levels: Vec<(i64, Vec<Arc<LazyBlock>>)>,
}

fn block_order(a: &LazyBlock, b: &LazyBlock) -> std::cmp::Ordering {
    (a.meta.min_time, a.meta.max_time, a.meta.ulid).cmp(&(
        b.meta.min_time,
        b.meta.max_time,
        b.meta.ulid,
    ))
}

impl Snapshot {
    fn new(by_id: HashMap<Ulid, Arc<LazyBlock>>) -> Self {
        let mut levels: Vec<(i64, Vec<Arc<LazyBlock>>)> = Vec::new();
        let mut sorted: Vec<&Arc<LazyBlock>> = by_id.values().collect();
        sorted.sort_by(|a, b| {
            b.resolution()
                .cmp(&a.resolution())
                .then_with(|| block_order(a, b))
        });
        for b in sorted {
            match levels.last_mut() {
                Some((r, v)) if *r == b.resolution() => v.push(b.clone()),
                _ => levels.push((b.resolution(), vec![b.clone()])),
            }
        }
        Snapshot { by_id, levels }
    }
}

/// Thanos's block choice: at the coarsest resolution ≤ `max_res`, every block overlapping
/// `[mint, maxt]`; the parts of the range those blocks leave uncovered are filled the same way from
/// the next finer resolution.
fn select_levels(
    levels: &[(i64, Vec<Arc<LazyBlock>>)],
    mint: i64,
    maxt: i64,
    max_res: i64,
    out: &mut Vec<Arc<LazyBlock>>,
) {
    if mint > maxt {
        return;
    }
    let Some(i) = levels.iter().position(|(r, _)| *r <= max_res) else {
        return;
    };
    let finer = &levels[i + 1..];
    let next_res = finer.first().map(|(r, _)| *r);
    let mut start = mint;
    for b in &levels[i].1 {
        if b.meta.max_time <= mint {
            continue;
        }
        if b.meta.min_time > maxt {
            break;
        }
        if let Some(r) = next_res {
            select_levels(finer, start, b.meta.min_time.saturating_sub(1), r, out);
        }
        out.push(b.clone());
        start = b.meta.max_time;
    }
    if let Some(r) = next_res {
        select_levels(finer, start, maxt, r, out);
    }
}

/// Every block the gateway serves.
#[derive(Debug)]
pub struct BlockSet {
    ctx: Arc<LoadContext>,
    opts: BlockSetOptions,
    filter: BlockFilter,
    fetcher: tokio::sync::Mutex<MetaFetcher>,
    blocks: RwLock<Arc<Snapshot>>,
}

impl BlockSet {
    /// An empty set; call [`BlockSet::sync`] to fill it. Creates `data_dir` and its meta cache.
    pub fn new(bucket: Bucket, cache: Arc<dyn IndexCache>, opts: BlockSetOptions) -> Result<Self> {
        std::fs::create_dir_all(&opts.data_dir).map_err(|e| Error::io(&opts.data_dir, e))?;
        let fetcher = MetaFetcher::new(bucket.clone(), &opts.data_dir, opts.sync_concurrency)?;
        let filter = BlockFilter {
            min_time: opts.min_time,
            max_time: opts.max_time,
            relabel: opts.relabel.clone(),
            deletion_delay: opts.deletion_delay,
        };
        Ok(BlockSet {
            ctx: Arc::new(LoadContext {
                bucket,
                cache,
                block: opts.block.clone(),
                data_dir: opts.data_dir.clone(),
                metrics: BlockSetMetrics::default(),
            }),
            opts,
            filter,
            fetcher: tokio::sync::Mutex::new(fetcher),
            blocks: RwLock::new(Arc::new(Snapshot::default())),
        })
    }

    /// The set's metrics (register them with [`BlockSetMetrics::register`]).
    pub fn metrics(&self) -> &BlockSetMetrics {
        &self.ctx.metrics
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.blocks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// One sync pass against the bucket: adds new blocks, drops removed and filtered ones, keeps
    /// the loaded readers of unchanged blocks. Passes run one at a time. Fails (leaving the set as
    /// it was) only when the bucket cannot be listed.
    pub async fn sync(&self) -> Result<SyncReport> {
        let started = Instant::now();
        let result = self.sync_pass().instrument(info_span!("block_sync")).await;
        let m = &self.ctx.metrics;
        m.sync_duration.observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            m.sync_failures.inc();
            warn!(error = %e, "block sync failed; keeping the current block set");
        }
        result
    }

    async fn sync_pass(&self) -> Result<SyncReport> {
        let mut fetcher = self.fetcher.lock().await;
        let outcome = fetcher.fetch().await?;
        let now = now_ms();
        let old = self.snapshot();
        let mut report = SyncReport {
            partial: outcome.partial.len(),
            failed: outcome.failed.len(),
            meta_cache_hits: outcome.cache_hits,
            meta_fetched: outcome.fetched,
            ..Default::default()
        };
        let mut next: HashMap<Ulid, Arc<LazyBlock>> = HashMap::with_capacity(outcome.metas.len());
        for (id, meta) in &outcome.metas {
            let existing = old.by_id.get(id);
            if outcome.uncertain.contains(id) {
                if let Some(b) = existing {
                    next.insert(*id, b.clone());
                }
                continue;
            }
            let labels = match existing {
                Some(b) => b.labels.clone(),
                None => external_labels(meta),
            };
            if let Some(reason) =
                self.filter
                    .check(meta, &labels, outcome.deletion_marks.get(id), now)
            {
                report.filtered += 1;
                if reason == FilterReason::Deleted && existing.is_some() {
                    info!(block = %id, "block marked for deletion past the delay; no longer served");
                }
                continue;
            }
            let block = match existing {
                Some(b) => b.clone(),
                None => {
                    report.added += 1;
                    Arc::new(LazyBlock::new(meta.clone(), self.ctx.clone()))
                }
            };
            next.insert(*id, block);
        }
        let dups = duplicates(next.values().map(|b| b.meta.as_ref()));
        next.retain(|id, _| !dups.contains(id));
        report.duplicates = dups.len();
        report.removed = old.by_id.keys().filter(|id| !next.contains_key(id)).count();
        report.blocks = next.len();
        let served: HashSet<Ulid> = next.keys().copied().collect();
        let snapshot = Arc::new(Snapshot::new(next));
        *self.blocks.write().unwrap_or_else(|p| p.into_inner()) = snapshot;
        drop(old);
        drop(fetcher);

        let m = &self.ctx.metrics;
        m.blocks
            .set(i64::try_from(report.blocks).unwrap_or(i64::MAX));
        m.block_drops.inc_by(report.removed as u64);
        let data_dir = self.opts.data_dir.clone();
        let cleaned =
            tokio::task::spawn_blocking(move || remove_unserved_block_dirs(&data_dir, &served))
                .await
                .unwrap_or(0);
        if report.added > 0 || report.removed > 0 || cleaned > 0 {
            info!(
                blocks = report.blocks,
                added = report.added,
                removed = report.removed,
                partial = report.partial,
                filtered = report.filtered,
                failed = report.failed,
                local_dirs_removed = cleaned,
                "block set synced"
            );
        }
        Ok(report)
    }

    /// Every served block, ordered by min time (then max time, then ULID).
    pub fn all(&self) -> Vec<Arc<LazyBlock>> {
        let s = self.snapshot();
        let mut v: Vec<Arc<LazyBlock>> = s.by_id.values().cloned().collect();
        v.sort_by(|a, b| block_order(a, b));
        v
    }

    /// The served block with this ULID.
    pub fn get(&self, id: &Ulid) -> Option<Arc<LazyBlock>> {
        self.snapshot().by_id.get(id).cloned()
    }

    /// Number of served blocks.
    pub fn len(&self) -> usize {
        self.snapshot().by_id.len()
    }

    /// Whether no block is served.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The blocks a request over `[min_time, max_time]` reads: for each part of the range the
    /// coarsest resolution ≤ `max_resolution` that covers it, gaps filled with finer ones (as
    /// Thanos's block set does). Ordered by min time.
    pub fn select(&self, min_time: i64, max_time: i64, max_resolution: i64) -> Vec<Arc<LazyBlock>> {
        let s = self.snapshot();
        let mut out = Vec::new();
        select_levels(&s.levels, min_time, max_time, max_resolution, &mut out);
        out.sort_by_key(|b| b.meta.min_time);
        out
    }

    /// The union `[min, max]` of the served blocks' ranges, clamped to `--min-time`/`--max-time`
    /// as Thanos's store reports it in Info; `None` when no block is served.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let s = self.snapshot();
        let min = s.by_id.values().map(|b| b.meta.min_time).min()?;
        let max = s.by_id.values().map(|b| b.meta.max_time).max()?;
        let now = now_ms();
        let min = match self.opts.min_time {
            Some(b) => min.max(b.resolve(now)),
            None => min,
        };
        let max = match self.opts.max_time {
            Some(b) => max.min(b.resolve(now)),
            None => max,
        };
        Some((min, max))
    }

    /// The distinct external label sets of the served blocks, sorted.
    pub fn label_sets(&self) -> Vec<Labels> {
        let s = self.snapshot();
        let set: BTreeSet<&Labels> = s.by_id.values().map(|b| &b.labels).collect();
        set.into_iter().cloned().collect()
    }

    /// Releases the readers of blocks idle past the timeout; returns how many were unloaded.
    pub fn unload_idle(&self) -> usize {
        let Some(idle) = self.opts.idle_timeout else {
            return 0;
        };
        let now = Instant::now();
        self.snapshot()
            .by_id
            .values()
            .filter(|b| b.unload_if_idle(idle, now))
            .count()
    }

    /// Spawns a task that syncs every `interval` and unloads idle blocks (checked every
    /// `interval`, or every quarter of the idle timeout when that is shorter, at least every
    /// second), until `shutdown` completes. The first sync runs one `interval` from now: run
    /// [`BlockSet::sync`] yourself before serving.
    pub fn spawn_sync_loop<F>(
        self: Arc<Self>,
        interval: Duration,
        shutdown: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let interval = interval.max(Duration::from_millis(10));
        let unload_every = self.opts.idle_timeout.map_or(interval, |t| {
            (t / 4).max(Duration::from_secs(1)).min(interval)
        });
        tokio::spawn(async move {
            tokio::pin!(shutdown);
            let start = Instant::now();
            let mut sync_tick = tokio::time::interval_at(start + interval, interval);
            sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut unload_tick = tokio::time::interval_at(start + unload_every, unload_every);
            unload_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = sync_tick.tick() => {
                        tokio::select! {
                            _ = &mut shutdown => break,
                            r = self.sync() => if let Ok(r) = r {
                                debug!(blocks = r.blocks, added = r.added, removed = r.removed, "periodic block sync");
                            },
                        }
                    }
                    _ = unload_tick.tick() => {
                        let n = self.unload_idle();
                        if n > 0 {
                            debug!(unloaded = n, "idle blocks unloaded");
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
#[path = "blockset_tests.rs"]
mod tests;
