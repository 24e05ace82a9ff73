//! The block shipper: uploads the finished TSDB blocks of a Prometheus (or ruler) data directory to
//! object storage, the way Thanos's shipper does, so Thanos and Strata readers see the same bucket.
//!
//! Per [`Shipper::sync`]:
//! - candidates are the directories named by a ULID (so `*.tmp*` dirs are never candidates) that hold a
//!   `meta.json`; a block with an unreadable meta.json, or missing `index`/`chunks`, is skipped, logged and
//!   counted in `strata_shipper_corrupted_blocks_total`; the others still ship;
//! - skipped like Thanos: blocks without samples, blocks of compaction level > 1 unless
//!   [`ShipperOptions::upload_compacted`]; also (Strata) blocks with a local `deletion-mark.json` and,
//!   when [`ShipperOptions::min_time`] is set, blocks that end at or before it;
//! - a block listed in `thanos.shipper.json` is never uploaded again; a block whose `meta.json` already
//!   exists in the bucket is recorded without re-upload;
//! - upload order: `chunks/*` (sorted), `index`, then `<ULID>/meta.json` LAST, with the `thanos` section
//!   (external labels, `downsample.resolution` 0, `source`, `segment_files`, `files`); tombstones are
//!   not uploaded (as Thanos). The local meta.json is not modified;
//! - `thanos.shipper.json` is rewritten atomically after every shipped block and at the end of the sync,
//!   listing the shipped blocks that still exist locally.
//!
//! Crash safety: an object only appears when its upload completed, and meta.json goes last, so a kill at
//! any moment leaves at worst a block without meta.json in the bucket; the next sync sees no meta.json
//! there and uploads the whole block again (overwriting parts), then meta.json.
//!
//! Prometheus ≥ 3.9 `--storage.tsdb.delay-compact-file.path`: Prometheus reads a JSON file with an
//! `uploaded` array of block ULIDs (the Thanos shipper file; other fields are ignored) and does not compact
//! a level-1 block until its ULID is listed there (blocks of level > 1 are never held back). It re-reads
//! the file at most once a minute; when the file is missing or unparseable it logs a warning and holds
//! nothing back. Point the flag at `<tsdb dir>/thanos.shipper.json` (or at
//! [`ShipperOptions::meta_file`]). [`Shipper::init`] writes the file before the first upload so
//! compaction is held back from the start. With it, leave `upload_compacted` off: compacted blocks
//! contain only data already shipped.
//!
//! NOT DONE: Thanos's overlap check before shipping compacted blocks (`upload_compacted` ships them
//! without it); per-file hashes in `thanos.files`; hard-linking the block into a private upload dir
//! (Prometheus may delete a block mid-upload; the upload then fails and is not retried, which is right).

mod error;
mod meta_file;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use strata_objstore::Bucket;
use strata_tsdb::BlockMeta;
use strata_tsdb::meta::{META_FILENAME, ThanosMeta};
use tracing::{debug, error, info, warn};
use ulid::Ulid;

pub use error::{Error, Result};
pub use meta_file::{SHIPPER_META_FILENAME, SHIPPER_META_VERSION, ShipperMeta};

/// Name of a deletion mark inside a block directory.
const DELETION_MARK: &str = "deletion-mark.json";

/// How the shipper chooses blocks and describes them.
#[derive(Debug, Clone)]
pub struct ShipperOptions {
    /// `thanos.source` in uploaded metas: `sidecar` or `ruler`.
    pub source: String,
    /// Also ship blocks of compaction level > 1 (Thanos `--shipper.upload-compacted`).
    pub upload_compacted: bool,
    /// Skip blocks whose `maxTime` (ms) is at or before this.
    pub min_time: Option<i64>,
    /// Where the shipped-blocks file lives; default `<tsdb dir>/thanos.shipper.json`.
    pub meta_file: Option<PathBuf>,
}

impl Default for ShipperOptions {
    fn default() -> Self {
        ShipperOptions {
            source: "sidecar".into(),
            upload_compacted: false,
            min_time: None,
            meta_file: None,
        }
    }
}

/// What one [`Shipper::sync`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Blocks uploaded now.
    pub uploaded: Vec<Ulid>,
    /// Blocks found already complete in the bucket and recorded as shipped.
    pub already_in_bucket: Vec<Ulid>,
    /// Blocks that failed to upload (retried by the next sync), with the error.
    pub failed: Vec<(Ulid, String)>,
    /// Corrupt block directories, with the reason.
    pub corrupted: Vec<(PathBuf, String)>,
    /// The lowest `minTime` of the readable local blocks (`None` without any): the oldest data still on
    /// local disk, which a sidecar advertises as its min time once older data lives in the bucket.
    pub oldest_local_min_time: Option<i64>,
}

#[derive(Debug, Clone, Default)]
struct Metrics {
    uploads: Counter,
    upload_failures: Counter,
    corrupted: Counter,
    last_success: Gauge<f64, AtomicU64>,
    last_lag: Gauge<f64, AtomicU64>,
}

/// Ships the blocks of one TSDB directory to one bucket.
#[derive(Debug)]
pub struct Shipper {
    dir: PathBuf,
    bucket: Bucket,
    labels: BTreeMap<String, String>,
    opts: ShipperOptions,
    metrics: Metrics,
    lock: tokio::sync::Mutex<()>,
}

enum BlockError {
    Corrupt(String),
    Bucket(strata_objstore::Error),
}

impl Shipper {
    /// A shipper for `dir` with the given external labels, registering `strata_shipper_*` metrics.
    pub fn new(
        dir: impl Into<PathBuf>,
        bucket: Bucket,
        labels: BTreeMap<String, String>,
        opts: ShipperOptions,
        registry: &mut Registry,
    ) -> Self {
        let metrics = Metrics::default();
        let sub = registry.sub_registry_with_prefix("strata_shipper");
        sub.register(
            "uploads",
            "Blocks uploaded to the bucket",
            metrics.uploads.clone(),
        );
        sub.register(
            "upload_failures",
            "Block uploads that failed (retried on the next sync)",
            metrics.upload_failures.clone(),
        );
        sub.register(
            "corrupted_blocks",
            "Local block directories skipped because they are unreadable or incomplete",
            metrics.corrupted.clone(),
        );
        sub.register(
            "last_successful_upload_time",
            "Unix time of the last successful block upload",
            metrics.last_success.clone(),
        );
        sub.register(
            "last_upload_lag_seconds",
            "Seconds from the last uploaded block's creation (its ULID time) to the end of its upload",
            metrics.last_lag.clone(),
        );
        Shipper {
            dir: dir.into(),
            bucket,
            labels,
            opts,
            metrics,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Path of the shipped-blocks file.
    pub fn meta_file(&self) -> PathBuf {
        self.opts
            .meta_file
            .clone()
            .unwrap_or_else(|| self.dir.join(SHIPPER_META_FILENAME))
    }

    /// Writes an empty shipped-blocks file if none exists, so a Prometheus started with
    /// `--storage.tsdb.delay-compact-file.path` holds compaction back before the first upload.
    pub fn init(&self) -> Result<()> {
        let path = self.meta_file();
        match ShipperMeta::read(&path) {
            Ok(Some(_)) => Ok(()),
            Ok(None) | Err(Error::BadShipperMeta { .. }) => ShipperMeta {
                version: SHIPPER_META_VERSION,
                uploaded: Vec::new(),
            }
            .write(&path),
            Err(e) => Err(e),
        }
    }

    /// Ships every block not shipped yet. Per-block failures are reported in the [`SyncReport`] (and
    /// logged, and counted); an error means the TSDB directory or the shipped-blocks file is unusable.
    pub async fn sync(&self) -> Result<SyncReport> {
        let _guard = self.lock.lock().await;
        let meta_path = self.meta_file();
        let previous = match ShipperMeta::read(&meta_path) {
            Ok(m) => m.map(|m| m.uploaded).unwrap_or_default(),
            Err(e) => {
                warn!(error = %e, "reading shipper meta file failed; it will be rewritten");
                Vec::new()
            }
        };
        let mut report = SyncReport::default();
        let blocks = self.local_blocks(&mut report)?;
        report.oldest_local_min_time = blocks.iter().map(|(_, m)| m.min_time).min();
        let local: HashSet<Ulid> = blocks.iter().map(|(_, m)| m.ulid).collect();
        let shipped_before: HashSet<Ulid> = previous.iter().copied().collect();
        let mut shipped: Vec<Ulid> = previous
            .into_iter()
            .filter(|id| local.contains(id))
            .collect();

        for (dir, meta) in &blocks {
            let id = meta.ulid;
            if shipped_before.contains(&id) {
                continue;
            }
            if meta.stats.num_samples == 0 {
                debug!(block = %id, "ignoring empty block");
                continue;
            }
            if meta.compaction.level > 1 && !self.opts.upload_compacted {
                continue;
            }
            if self.opts.min_time.is_some_and(|min| meta.max_time <= min) {
                continue;
            }
            if dir.join(DELETION_MARK).exists() {
                info!(block = %id, "block marked for deletion locally; not shipping");
                continue;
            }
            let meta_name = format!("{id}/{META_FILENAME}");
            match self.bucket.exists(&meta_name).await {
                Ok(true) => {
                    report.already_in_bucket.push(id);
                    shipped.push(id);
                    self.write_meta(&meta_path, &shipped);
                    continue;
                }
                Ok(false) => {}
                Err(e) => {
                    error!(block = %id, error = %e, "shipping failed");
                    self.metrics.upload_failures.inc();
                    report.failed.push((id, e.to_string()));
                    continue;
                }
            }
            match self.upload(dir, meta).await {
                Ok(()) => {
                    info!(block = %id, "block shipped");
                    self.metrics.uploads.inc();
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or_default();
                    self.metrics.last_success.set(now);
                    let created = id.timestamp_ms() as f64 / 1000.0;
                    self.metrics.last_lag.set((now - created).max(0.0));
                    report.uploaded.push(id);
                    shipped.push(id);
                    self.write_meta(&meta_path, &shipped);
                }
                Err(BlockError::Corrupt(message)) => {
                    error!(block = %id, error = %message, "corrupt block skipped");
                    self.metrics.corrupted.inc();
                    report.corrupted.push((dir.clone(), message));
                }
                Err(BlockError::Bucket(e)) => {
                    error!(block = %id, error = %e, "shipping failed; retried on the next sync");
                    self.metrics.upload_failures.inc();
                    report.failed.push((id, e.to_string()));
                }
            }
        }
        ShipperMeta {
            version: SHIPPER_META_VERSION,
            uploaded: shipped,
        }
        .write(&meta_path)?;
        Ok(report)
    }

    fn write_meta(&self, path: &Path, shipped: &[Ulid]) {
        let m = ShipperMeta {
            version: SHIPPER_META_VERSION,
            uploaded: shipped.to_vec(),
        };
        if let Err(e) = m.write(path) {
            warn!(error = %e, "updating shipper meta file failed");
        }
    }

    /// Block directories with a readable meta.json, oldest first.
    fn local_blocks(&self, report: &mut SyncReport) -> Result<Vec<(PathBuf, BlockMeta)>> {
        let io = |source| Error::Io {
            path: self.dir.clone(),
            source,
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.parse::<Ulid>().ok()) else {
                continue;
            };
            let dir = entry.path();
            if !dir.is_dir() {
                continue;
            }
            if !dir.join(META_FILENAME).exists() {
                debug!(block = %id, "no meta.json; not a finished block");
                continue;
            }
            match BlockMeta::read_from_dir(&dir) {
                Ok(meta) if meta.ulid == id => out.push((dir, meta)),
                Ok(meta) => {
                    let message = format!("meta.json names block {}", meta.ulid);
                    error!(dir = %dir.display(), error = %message, "corrupt block skipped");
                    self.metrics.corrupted.inc();
                    report.corrupted.push((dir, message));
                }
                Err(e) => {
                    error!(dir = %dir.display(), error = %e, "corrupt block skipped");
                    self.metrics.corrupted.inc();
                    report.corrupted.push((dir, e.to_string()));
                }
            }
        }
        out.sort_by_key(|(_, m)| (m.min_time, m.ulid));
        Ok(out)
    }

    /// Uploads one block: chunks, index, then meta.json with the thanos section
    /// ([`strata_bucket::transfer::upload_block`]).
    async fn upload(&self, dir: &Path, meta: &BlockMeta) -> Result<(), BlockError> {
        let mut out = meta.clone();
        let mut thanos = out
            .thanos
            .take()
            .unwrap_or_else(|| ThanosMeta::new(self.labels.clone(), &self.opts.source, 0));
        thanos.labels = Some(self.labels.clone());
        thanos.source = self.opts.source.clone();
        thanos.downsample.resolution = 0;
        out.thanos = Some(thanos);
        strata_bucket::transfer::upload_block(&self.bucket, dir, &out)
            .await
            .map_err(|e| match e {
                strata_bucket::Error::Bucket(e @ strata_objstore::Error::LocalIo { .. }) => {
                    BlockError::Corrupt(e.to_string())
                }
                strata_bucket::Error::Bucket(e) => BlockError::Bucket(e),
                e => BlockError::Corrupt(e.to_string()),
            })
    }
}

#[cfg(test)]
mod tests;
