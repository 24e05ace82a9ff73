//! The compactor over a bucket: one pass syncs the metas, then per group plans, downloads,
//! compacts, uploads (meta.json last) and marks the sources for deletion; then downsamples,
//! applies retention and cleans up.
//!
//! Crash safety (a `kill -9` at any point converges on the next pass):
//! - an output is uploaded with `meta.json` last: a partial output has no meta, is never read,
//!   and is cleaned up as a partial upload later;
//! - sources are marked only after the output's upload succeeded; when the process dies between
//!   the upload and (some of) the marks, the next pass finds the unmarked sources covered by the
//!   output's `compaction.sources` ([`strata_bucket::sync::duplicates`], Thanos's duplicate
//!   filter) and marks them instead of compacting them again;
//! - downsampled outputs are found by their sources ([`crate::plan::downsample_candidates`]), so
//!   a finished downsample is never redone and an unfinished one is redone;
//! - local work directories under `data_dir` are wiped at the start of every pass.
//!
//! A test-only fault hook: when the environment variable [`FAULT_ENV`] names one of the points
//! in [`FAULT_POINTS`], the process aborts (as `kill -9` would) the first time it reaches that
//! point. The variable is read once in [`Compactor::new`].

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use strata_bucket::lifecycle::{self, CleanupOptions, CleanupReport};
use strata_bucket::relabel::RelabelConfig;
use strata_bucket::sync::{self, MetaFetcher};
use strata_bucket::transfer;
use strata_objstore::Bucket;
use strata_tsdb::meta::BlockMeta;
use tracing::{Instrument, error, info, info_span, warn};
use ulid::Ulid;

use crate::error::{Error, Result};
use crate::plan::{self, Plan, PlanOptions};
use crate::retention::{Retention, apply_retention};
use crate::{COMPACTOR_SOURCE, CompactOptions};

/// The environment variable of the test-only fault hook.
pub const FAULT_ENV: &str = "STRATA_COMPACT_FAULT";

/// The named points of the fault hook, in the order a compaction reaches them:
/// `after-upload` (output uploaded, no source marked), `between-marks` (first source marked),
/// `after-marks` (every source marked, local dirs not yet removed), `after-downsample-upload`
/// (a downsampled block uploaded), `before-cleanup` (retention applied, nothing deleted).
pub const FAULT_POINTS: [&str; 5] = [
    "after-upload",
    "between-marks",
    "after-marks",
    "after-downsample-upload",
    "before-cleanup",
];

/// Working directory of compactions under the data dir (wiped at every pass).
const COMPACT_DIR: &str = "compact";
/// Working directory of downsampling under the data dir (wiped at every pass).
const DOWNSAMPLE_DIR: &str = "downsample";

/// Configuration of a [`Compactor`].
#[derive(Debug, Clone)]
pub struct CompactorConfig {
    /// Local working directory (downloads, outputs, the meta cache).
    pub data_dir: PathBuf,
    /// Compaction levels in milliseconds ([`plan::DEFAULT_RANGES`]).
    pub ranges: Vec<i64>,
    /// Blocks younger than this (by ULID time) are left alone, unless a compactor wrote them.
    pub consistency_delay: Duration,
    /// Vertical compaction: overlapping blocks of a group are merged instead of halting it.
    pub vertical: bool,
    /// Replica labels: ignored when grouping, dropped from outputs, their samples de-duplicated
    /// (penalty algorithm). Only used with [`CompactorConfig::vertical`].
    pub dedup_replica_labels: Vec<String>,
    /// Downsample raw blocks ≥ 40h to 5m and 5m blocks ≥ 10d to 1h.
    pub downsampling: bool,
    /// Shortest raw block downsampled to 5m, ms (Thanos: 40h; lowered only by tests).
    pub downsample_min_span_5m: i64,
    /// Shortest 5m block downsampled to 1h, ms (Thanos: 10d; lowered only by tests).
    pub downsample_min_span_1h: i64,
    /// Retention per resolution.
    pub retention: Retention,
    /// Blocks marked for deletion longer ago than this are deleted.
    pub delete_delay: Duration,
    /// Partial uploads older than this are marked for deletion.
    pub partial_upload_threshold: Duration,
    /// Concurrent meta.json fetches.
    pub block_sync_concurrency: usize,
    /// Groups compacted at the same time.
    pub compaction_concurrency: usize,
    /// Only blocks whose external labels this relabel config keeps are handled.
    pub relabel: Option<RelabelConfig>,
}

impl CompactorConfig {
    /// Thanos's defaults, working in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        CompactorConfig {
            data_dir: data_dir.into(),
            ranges: plan::DEFAULT_RANGES.to_vec(),
            consistency_delay: Duration::from_secs(30 * 60),
            vertical: false,
            dedup_replica_labels: Vec::new(),
            downsampling: true,
            downsample_min_span_5m: plan::DOWNSAMPLE_RANGE_5M,
            downsample_min_span_1h: plan::DOWNSAMPLE_RANGE_1H,
            retention: Retention::default(),
            delete_delay: Duration::from_secs(48 * 3600),
            partial_upload_threshold: Duration::from_secs(48 * 3600),
            block_sync_concurrency: 20,
            compaction_concurrency: 1,
            relabel: None,
        }
    }
}

/// A group that halted on a pass: two of its blocks overlap and vertical compaction is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHalt {
    /// The group key (`<resolution>@<labels hash>`).
    pub group: String,
    /// The earlier block.
    pub a: Ulid,
    /// The block overlapping it.
    pub b: Ulid,
}

impl std::fmt::Display for GroupHalt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "group {} halted: blocks {} and {} overlap (enable vertical compaction to merge them)",
            self.group, self.a, self.b
        )
    }
}

/// The compactor's standing, between passes: [`Compactor::state`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompactorState {
    /// Groups halted on an overlap; they stay halted until the process restarts (as in Thanos).
    pub halted: Vec<GroupHalt>,
    /// Unix time (seconds) of the end of the last pass with no halt and no failure.
    pub last_successful_run: Option<f64>,
    /// Passes run since the process started.
    pub passes: u64,
}

/// What one [`Compactor::run_once`] did.
#[derive(Debug, Clone, Default)]
pub struct PassReport {
    /// Blocks written by compaction.
    pub compacted: Vec<Ulid>,
    /// Blocks marked for deletion as compaction sources or duplicates.
    pub marked: Vec<Ulid>,
    /// Blocks written by downsampling, with their resolution.
    pub downsampled: Vec<(Ulid, i64)>,
    /// Blocks marked for deletion by retention.
    pub retention_marked: Vec<Ulid>,
    /// What cleanup deleted and marked.
    pub cleanup: CleanupReport,
    /// Groups halted on an overlap (this pass or an earlier one).
    pub halted: Vec<GroupHalt>,
    /// Other failures (a group's compaction, a downsample), one message each.
    pub errors: Vec<String>,
}

impl PassReport {
    /// Whether the pass finished with no halted group and no failure.
    pub fn is_ok(&self) -> bool {
        self.halted.is_empty() && self.errors.is_empty()
    }
}

#[derive(Debug, Default, Clone)]
struct Metrics {
    halted: Gauge,
    group_compactions: Counter,
    group_compaction_failures: Counter,
    blocks_marked: Counter,
    downsamples: Counter,
    downsample_failures: Counter,
    iterations: Counter,
    written_bytes: Counter,
    written_series: Counter,
    written_samples: Counter,
    last_success: Gauge<f64, AtomicU64>,
}

/// The compactor of one bucket. Call [`Compactor::run_once`] once, or in a loop (`--wait`).
#[derive(Debug)]
pub struct Compactor {
    bucket: Bucket,
    cfg: CompactorConfig,
    fetcher: tokio::sync::Mutex<MetaFetcher>,
    metrics: Metrics,
    halted: std::sync::Mutex<BTreeMap<String, GroupHalt>>,
    fault: Option<String>,
}

/// One group's state while it is compacted.
struct GroupOutcome {
    metas: Vec<BlockMeta>,
    compacted: Vec<Ulid>,
    marked: Vec<Ulid>,
    halt: Option<GroupHalt>,
    error: Option<String>,
}

impl Compactor {
    /// A compactor over `bucket`, registering `strata_compact_*` metrics in `registry`.
    pub fn new(bucket: Bucket, cfg: CompactorConfig, registry: &mut Registry) -> Result<Self> {
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| Error::Bucket(strata_bucket::Error::io(&cfg.data_dir, e)))?;
        let fetcher = MetaFetcher::new(
            bucket.clone(),
            &cfg.data_dir,
            cfg.block_sync_concurrency.max(1),
        )?;
        let metrics = Metrics::default();
        let sub = registry.sub_registry_with_prefix("strata_compact");
        sub.register(
            "halted",
            "1 when a group halted on overlapping blocks (Thanos: thanos_compact_halted)",
            metrics.halted.clone(),
        );
        sub.register(
            "group_compactions",
            "Compactions that wrote a block or found no sample left",
            metrics.group_compactions.clone(),
        );
        sub.register(
            "group_compactions_failures",
            "Compactions that failed",
            metrics.group_compaction_failures.clone(),
        );
        sub.register(
            "blocks_marked_for_deletion",
            "Blocks this compactor marked for deletion (sources, duplicates, retention)",
            metrics.blocks_marked.clone(),
        );
        sub.register(
            "downsample",
            "Blocks downsampled",
            metrics.downsamples.clone(),
        );
        sub.register(
            "downsample_failures",
            "Downsamplings that failed",
            metrics.downsample_failures.clone(),
        );
        sub.register(
            "iterations",
            "Compaction passes run",
            metrics.iterations.clone(),
        );
        sub.register(
            "written_bytes",
            "Bytes of blocks written (compaction and downsampling)",
            metrics.written_bytes.clone(),
        );
        sub.register(
            "written_series",
            "Series written (compaction and downsampling)",
            metrics.written_series.clone(),
        );
        sub.register(
            "written_samples",
            "Samples written by compaction",
            metrics.written_samples.clone(),
        );
        sub.register(
            "last_successful_run_timestamp_seconds",
            "Unix time of the end of the last pass with no halt and no failure",
            metrics.last_success.clone(),
        );
        let fault = std::env::var(FAULT_ENV).ok().filter(|s| !s.is_empty());
        if let Some(f) = &fault {
            warn!(point = %f, "test fault hook armed: the process aborts at this point");
        }
        Ok(Compactor {
            bucket,
            cfg,
            fetcher: tokio::sync::Mutex::new(fetcher),
            metrics,
            halted: std::sync::Mutex::new(BTreeMap::new()),
            fault,
        })
    }

    /// Aborts the process when the fault hook names `point`.
    fn fault(&self, point: &str) {
        if self.fault.as_deref() == Some(point) {
            error!(point, "{FAULT_ENV} fault hook reached: aborting");
            std::process::abort();
        }
    }

    fn halted_groups(&self) -> BTreeMap<String, GroupHalt> {
        self.halted.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// The halted groups and the end of the last clean pass, as of now (what an operator shows).
    pub fn state(&self) -> CompactorState {
        let last = self.metrics.last_success.get();
        CompactorState {
            halted: self.halted_groups().into_values().collect(),
            last_successful_run: (last > 0.0).then_some(last),
            passes: self.metrics.iterations.get(),
        }
    }

    /// One pass over the bucket. Fails only when the bucket cannot be listed (or the data dir
    /// cannot be prepared); group halts and other failures are in the report.
    pub async fn run_once(&self) -> Result<PassReport> {
        let span = info_span!("compact_pass", bucket = %self.bucket.name());
        self.pass().instrument(span).await
    }

    async fn pass(&self) -> Result<PassReport> {
        self.metrics.iterations.inc();
        let mut report = PassReport::default();
        for d in [COMPACT_DIR, DOWNSAMPLE_DIR] {
            let dir = self.cfg.data_dir.join(d);
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(strata_bucket::Error::io(&dir, e).into()),
            }
        }
        let now = sync::now_ms();
        let fetched = self.fetcher.lock().await.fetch().await?;
        let listing = sync::list_blocks(&self.bucket).await?;
        let no_compact: HashSet<Ulid> = listing
            .iter()
            .filter(|(_, o)| o.no_compact_mark)
            .map(|(id, _)| *id)
            .collect();

        // Live blocks this compactor handles: not marked, selected by the relabel config.
        let mut live: Vec<BlockMeta> = fetched
            .metas
            .values()
            .filter(|m| {
                !fetched.deletion_marks.contains_key(&m.ulid)
                    && !fetched.uncertain.contains(&m.ulid)
            })
            .filter(|m| {
                self.cfg
                    .relabel
                    .as_ref()
                    .is_none_or(|r| r.keeps_block(m.ulid, &sync::external_labels(m)))
            })
            .map(|m| (**m).clone())
            .collect();

        // Blocks whose data another block holds (a compaction whose sources were not all
        // marked before a crash): mark them now.
        let dups = sync::duplicates(live.iter());
        for id in &dups {
            match lifecycle::mark_for_deletion(
                &self.bucket,
                *id,
                "compactor: its sources are all in another block",
                now,
            )
            .await
            {
                Ok(new) => {
                    if new {
                        self.metrics.blocks_marked.inc();
                    }
                    report.marked.push(*id);
                }
                Err(e) => report.errors.push(format!("marking duplicate {id}: {e}")),
            }
        }
        live.retain(|m| !dups.contains(&m.ulid));

        // Compaction, group by group.
        let planning: Vec<BlockMeta> = live.iter().map(|m| self.without_replicas(m)).collect();
        let halted_before = self.halted_groups();
        let mut groups = plan::groups(&planning);
        let skipped: Vec<Vec<BlockMeta>> = halted_before
            .keys()
            .filter_map(|k| groups.remove(k))
            .collect();
        let outcomes: Vec<GroupOutcome> = futures::stream::iter(groups)
            .map(|(key, metas)| {
                let no_compact = &no_compact;
                let span = info_span!("compact_group", group = %key);
                async move { self.compact_group(&key, metas, no_compact, now).await }
                    .instrument(span)
            })
            .buffer_unordered(self.cfg.compaction_concurrency.max(1))
            .collect()
            .await;
        let mut after: Vec<BlockMeta> = skipped.into_iter().flatten().collect();
        for o in outcomes {
            after.extend(o.metas);
            report.compacted.extend(o.compacted);
            report.marked.extend(o.marked);
            if let Some(h) = o.halt
                && let Ok(mut halted) = self.halted.lock()
            {
                halted.insert(h.group.clone(), h);
            }
            report.errors.extend(o.error);
        }
        report.halted = self.halted_groups().into_values().collect();
        self.metrics
            .halted
            .set(i64::from(!report.halted.is_empty()));

        // Downsampling over what is left (never marking raw sources).
        if self.cfg.downsampling {
            self.downsample_all(&mut after, now, &mut report).await;
        }

        // Retention, then deletion of marked blocks and old partial uploads.
        let r = &self.cfg.retention;
        if r.raw_ms.is_some() || r.five_m_ms.is_some() || r.one_h_ms.is_some() {
            match apply_retention(&self.bucket, &after, r, now, false).await {
                Ok(ids) => {
                    self.metrics.blocks_marked.inc_by(ids.len() as u64);
                    report.retention_marked = ids;
                }
                Err(e) => report.errors.push(format!("retention: {e}")),
            }
        }
        self.fault("before-cleanup");
        let opts = CleanupOptions {
            delete_delay: self.cfg.delete_delay,
            partial_upload_threshold: self.cfg.partial_upload_threshold,
            now_ms: sync::now_ms(),
            dry_run: false,
        };
        match lifecycle::cleanup(&self.bucket, &opts).await {
            Ok(c) => report.cleanup = c,
            Err(e) => report.errors.push(format!("cleanup: {e}")),
        }

        if report.is_ok() {
            self.metrics
                .last_success
                .set(sync::now_ms() as f64 / 1000.0);
        }
        info!(
            compacted = report.compacted.len(),
            marked = report.marked.len(),
            downsampled = report.downsampled.len(),
            retention_marked = report.retention_marked.len(),
            deleted = report.cleanup.deleted.len(),
            halted = report.halted.len(),
            errors = report.errors.len(),
            "compaction pass done"
        );
        Ok(report)
    }

    /// The meta as the planner sees it: replica labels dropped (with vertical compaction), so
    /// that HA replicas' blocks share a group.
    fn without_replicas(&self, meta: &BlockMeta) -> BlockMeta {
        let mut m = meta.clone();
        if self.cfg.vertical
            && !self.cfg.dedup_replica_labels.is_empty()
            && let Some(labels) = m.thanos.as_mut().and_then(|t| t.labels.as_mut())
        {
            for l in &self.cfg.dedup_replica_labels {
                labels.remove(l);
            }
        }
        m
    }

    fn plan_options(&self, now: i64, no_compact: &HashSet<Ulid>) -> PlanOptions {
        PlanOptions {
            ranges: self.cfg.ranges.clone(),
            consistency_delay_ms: i64::try_from(self.cfg.consistency_delay.as_millis())
                .unwrap_or(i64::MAX),
            now_ms: now,
            no_compact: no_compact.clone(),
            deletion_marked: HashSet::new(),
            vertical: self.cfg.vertical,
        }
    }

    /// Plans and compacts one group until nothing is left to do, it halts, or a step fails.
    async fn compact_group(
        &self,
        key: &str,
        mut metas: Vec<BlockMeta>,
        no_compact: &HashSet<Ulid>,
        now: i64,
    ) -> GroupOutcome {
        let mut out = GroupOutcome {
            metas: Vec::new(),
            compacted: Vec::new(),
            marked: Vec::new(),
            halt: None,
            error: None,
        };
        let opts = self.plan_options(now, no_compact);
        // A bound on iterations: each compaction removes at least one block from the group.
        for _ in 0..=metas.len() {
            match plan::plan(&metas, &opts) {
                Plan::Nothing => break,
                Plan::Overlap { a, b } => {
                    let h = GroupHalt {
                        group: key.to_string(),
                        a,
                        b,
                    };
                    error!(group = %key, block_a = %a, block_b = %b, "{h}");
                    out.halt = Some(h);
                    break;
                }
                Plan::Compact(ids) => match self.compact_step(key, &ids).await {
                    Ok(done) => {
                        self.metrics.group_compactions.inc();
                        metas.retain(|m| !ids.contains(&m.ulid));
                        out.marked.extend(done.marked);
                        if let Some(m) = done.output {
                            out.compacted.push(m.ulid);
                            metas.push(self.without_replicas(&m));
                        }
                    }
                    Err(e) => {
                        self.metrics.group_compaction_failures.inc();
                        let ids: Vec<String> = ids.iter().map(Ulid::to_string).collect();
                        let msg = format!("group {key}: compacting {}: {e}", ids.join(", "));
                        error!("{msg}");
                        out.error = Some(msg);
                        break;
                    }
                },
            }
        }
        out.metas = metas;
        out
    }

    /// Downloads `ids`, compacts them, uploads the output and marks the sources.
    async fn compact_step(&self, key: &str, ids: &[Ulid]) -> Result<StepDone> {
        let work = self
            .cfg
            .data_dir
            .join(COMPACT_DIR)
            .join(key.replace(['@', '/'], "-"));
        let mut inputs = Vec::with_capacity(ids.len());
        for id in ids {
            transfer::download_block(&self.bucket, *id, &work).await?;
            inputs.push(work.join(id.to_string()));
        }
        let opts = CompactOptions {
            dedup_replica_labels: if self.cfg.vertical {
                self.cfg.dedup_replica_labels.clone()
            } else {
                Vec::new()
            },
            ulid: None,
            postings_budget: None,
        };
        let out_parent = work.clone();
        let (output, stats) = tokio::task::spawn_blocking(move || {
            crate::compact_with_stats(&inputs, &out_parent, &opts)
        })
        .await
        .map_err(|e| Error::InvalidArgument(format!("compaction task failed: {e}")))??;

        let mut done = StepDone {
            output: None,
            marked: Vec::new(),
        };
        if let Some(new_id) = output {
            let dir = work.join(new_id.to_string());
            let meta = BlockMeta::read_from_dir(&dir).map_err(Error::read(&dir))?;
            transfer::upload_block(&self.bucket, &dir, &meta).await?;
            self.count_written(&dir, &meta, stats.series);
            info!(block = %new_id, sources = ids.len(), "compacted block uploaded");
            self.fault("after-upload");
            done.output = Some(meta);
        } else {
            info!(
                sources = ids.len(),
                "no sample left after tombstones; sources marked, nothing uploaded"
            );
        }
        let now = sync::now_ms();
        let details = match &done.output {
            Some(m) => format!("compactor: compacted into {}", m.ulid),
            None => "compactor: no sample left after tombstones".to_string(),
        };
        for (i, id) in ids.iter().enumerate() {
            if i == 1 {
                self.fault("between-marks");
            }
            if lifecycle::mark_for_deletion(&self.bucket, *id, &details, now).await? {
                self.metrics.blocks_marked.inc();
            }
            done.marked.push(*id);
        }
        self.fault("after-marks");
        if let Err(e) = tokio::fs::remove_dir_all(&work).await {
            warn!(dir = %work.display(), error = %e, "removing compaction work dir");
        }
        Ok(done)
    }

    fn count_written(&self, dir: &Path, meta: &BlockMeta, series: u64) {
        let bytes: u64 = meta
            .thanos
            .as_ref()
            .map(|_| dir_size(dir))
            .unwrap_or_default();
        self.metrics.written_bytes.inc_by(bytes);
        self.metrics.written_series.inc_by(series);
        self.metrics.written_samples.inc_by(meta.stats.num_samples);
    }

    /// Downsamples every candidate (raw → 5m, then 5m → 1h), adding outputs to `metas`.
    async fn downsample_all(&self, metas: &mut Vec<BlockMeta>, now: i64, report: &mut PassReport) {
        let delay = i64::try_from(self.cfg.consistency_delay.as_millis()).unwrap_or(i64::MAX);
        let mut failed: HashSet<Ulid> = HashSet::new();
        // raw → 5m, then 5m → 1h (outputs can be candidates of the next round).
        for _ in 0..2 {
            let ready: Vec<BlockMeta> = metas
                .iter()
                .filter(|m| old_enough(m, now, delay))
                .cloned()
                .collect();
            let todo: Vec<(Ulid, i64)> = plan::downsample_candidates_with(
                &ready,
                self.cfg.downsample_min_span_5m,
                self.cfg.downsample_min_span_1h,
            )
            .into_iter()
            .filter(|(id, _)| !failed.contains(id))
            .collect();
            if todo.is_empty() {
                break;
            }
            for (id, res) in todo {
                let span = info_span!("downsample_block", block = %id, resolution = res);
                match self.downsample_one(id, res).instrument(span).await {
                    Ok(m) => {
                        self.metrics.downsamples.inc();
                        report.downsampled.push((m.ulid, res));
                        metas.push(m);
                    }
                    Err(e) => {
                        self.metrics.downsample_failures.inc();
                        failed.insert(id);
                        let msg = format!("downsampling {id} to {res} ms: {e}");
                        error!("{msg}");
                        report.errors.push(msg);
                    }
                }
            }
        }
    }

    async fn downsample_one(&self, id: Ulid, res: i64) -> Result<BlockMeta> {
        let work = self.cfg.data_dir.join(DOWNSAMPLE_DIR).join(id.to_string());
        transfer::download_block(&self.bucket, id, &work).await?;
        let input = work.join(id.to_string());
        let out_parent = work.clone();
        let (new_id, stats) = tokio::task::spawn_blocking(move || {
            crate::downsample_with_stats(&input, &out_parent, res)
        })
        .await
        .map_err(|e| Error::InvalidArgument(format!("downsampling task failed: {e}")))??;
        let dir = work.join(new_id.to_string());
        let mut meta = BlockMeta::read_from_dir(&dir).map_err(Error::read(&dir))?;
        if let Some(t) = meta.thanos.as_mut() {
            t.source = COMPACTOR_SOURCE.to_string();
        }
        transfer::upload_block(&self.bucket, &dir, &meta).await?;
        self.metrics.written_bytes.inc_by(dir_size(&dir));
        self.metrics.written_series.inc_by(stats.series);
        info!(block = %new_id, source_block = %id, resolution = res, "downsampled block uploaded");
        self.fault("after-downsample-upload");
        if let Err(e) = tokio::fs::remove_dir_all(&work).await {
            warn!(dir = %work.display(), error = %e, "removing downsample work dir");
        }
        Ok(meta)
    }
}

struct StepDone {
    output: Option<BlockMeta>,
    marked: Vec<Ulid>,
}

/// Past the consistency delay, or written by a compactor.
fn old_enough(meta: &BlockMeta, now: i64, delay_ms: i64) -> bool {
    let by_compactor = meta
        .thanos
        .as_ref()
        .is_some_and(|t| t.source == COMPACTOR_SOURCE);
    let created = i64::try_from(meta.ulid.timestamp_ms()).unwrap_or(i64::MAX);
    by_compactor || now.saturating_sub(created) >= delay_ms
}

/// Total size of the files of a block directory (chunks and index).
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(md) if md.is_dir() => stack.push(e.path()),
                Ok(md) => total += md.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests;
