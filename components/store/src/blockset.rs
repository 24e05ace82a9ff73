//! The set of blocks a gateway serves: filled by [`crate::sync`], loaded lazily on first query,
//! unloaded after an idle timeout, selected per request by time range and resolution.
//!
//! CONTRACT (skeleton; the implementation replaces the bodies, not the signatures).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use strata_objstore::Bucket;
use strata_tsdb::Labels;
use strata_tsdb::meta::BlockMeta;

use crate::block::{BlockOptions, BucketBlock};
use crate::cache::IndexCache;
use crate::error::Result;
use crate::relabel::RelabelConfig;
use crate::stats::QueryStats;
use crate::sync::TimeBound;

/// How the set is kept.
#[derive(Debug, Clone)]
pub struct BlockSetOptions {
    /// Local directory: `<data_dir>/meta/<ulid>.json` (meta cache) and `<data_dir>/<ulid>/index-header`.
    pub data_dir: PathBuf,
    /// How blocks read from the bucket.
    pub block: BlockOptions,
    /// Serve only blocks whose range ends after this.
    pub min_time: Option<TimeBound>,
    /// Serve only blocks whose range starts before this.
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
    /// meta.json files read from the local cache instead of the bucket.
    pub meta_cache_hits: usize,
    /// Blocks filtered out (time, relabel, deletion mark).
    pub filtered: usize,
    /// Blocks whose meta.json could not be read or parsed (named in the log).
    pub failed: usize,
}

/// A served block: always its meta, its reader only while loaded.
#[derive(Debug)]
pub struct LazyBlock {
    meta: Arc<BlockMeta>,
    labels: Labels,
}

impl LazyBlock {
    /// The block's meta.json.
    pub fn meta(&self) -> &Arc<BlockMeta> {
        &self.meta
    }

    /// The block's external labels (`thanos.labels`), sorted.
    pub fn external_labels(&self) -> &Labels {
        &self.labels
    }

    /// The reader, loading (and if needed building the index-header) on first use. A block that
    /// failed to load is reported unhealthy and the error returned.
    pub async fn get(&self, stats: &QueryStats) -> Result<Arc<BucketBlock>> {
        let _ = stats;
        Err(crate::Error::Config("LazyBlock::get: not implemented yet".into()))
    }

    /// Whether the reader is in memory now.
    pub fn is_loaded(&self) -> bool {
        false
    }

    /// The last load error, if the block is unhealthy.
    pub fn unhealthy(&self) -> Option<String> {
        None
    }
}

/// Every block the gateway serves.
#[derive(Debug)]
pub struct BlockSet {
    bucket: Bucket,
    cache: Arc<dyn IndexCache>,
    opts: BlockSetOptions,
}

impl BlockSet {
    /// An empty set; call [`BlockSet::sync`] to fill it.
    pub fn new(bucket: Bucket, cache: Arc<dyn IndexCache>, opts: BlockSetOptions) -> Result<Self> {
        Ok(BlockSet {
            bucket,
            cache,
            opts,
        })
    }

    /// One sync pass against the bucket.
    pub async fn sync(&self) -> Result<SyncReport> {
        let _ = (&self.bucket, &self.cache, &self.opts);
        Ok(SyncReport::default())
    }

    /// Every served block, ordered by min time.
    pub fn all(&self) -> Vec<Arc<LazyBlock>> {
        Vec::new()
    }

    /// The blocks a request over `[min_time, max_time]` reads: for each part of the range the
    /// coarsest resolution ≤ `max_resolution` that covers it, gaps filled with finer ones (as
    /// Thanos's block set does). Ordered by min time.
    pub fn select(&self, min_time: i64, max_time: i64, max_resolution: i64) -> Vec<Arc<LazyBlock>> {
        let _ = (min_time, max_time, max_resolution);
        Vec::new()
    }

    /// Releases the readers of blocks idle past the timeout; returns how many were unloaded.
    pub fn unload_idle(&self) -> usize {
        0
    }
}
