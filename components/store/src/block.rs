//! One block in the bucket, queried with few range reads: matchers → postings (index-header
//! offsets, merged range reads) → series entries → chunk ranges merged per segment file.
//!
//! CONTRACT (skeleton; the implementation replaces the bodies, not the signatures).

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use strata_objstore::Bucket;
use strata_tsdb::meta::BlockMeta;
use strata_tsdb::{Labels, Matcher};

use crate::cache::IndexCache;
use crate::error::Result;
use crate::stats::{QueryStats, RequestBudget};

/// The aggregates of a downsampled chunk, in Thanos's `AggrType` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Aggr {
    /// Number of samples.
    Count = 0,
    /// Sum of samples.
    Sum = 1,
    /// Minimum.
    Min = 2,
    /// Maximum.
    Max = 3,
    /// Counter with resets removed.
    Counter = 4,
}

/// Chunk bytes as stored in a segment file: the encoding byte and the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkBytes {
    /// Prometheus's encoding number (1 XOR, 2 histogram, 3 float histogram).
    pub encoding: u8,
    /// The payload (without length, encoding byte and CRC).
    pub data: Bytes,
}

/// One chunk of a series in the answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockChunk {
    /// First sample's timestamp, ms.
    pub min_time: i64,
    /// Last sample's timestamp, ms.
    pub max_time: i64,
    /// The chunk of a raw (resolution 0) block.
    pub raw: Option<ChunkBytes>,
    /// The requested aggregates of a downsampled block, indexed by `Aggr as usize`.
    pub aggrs: [Option<ChunkBytes>; 5],
}

/// A series of one block: its labels as stored (no external labels) and its chunks in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSeries {
    /// Labels as stored in the block.
    pub labels: Labels,
    /// Chunks overlapping the request's time range (empty with `skip_chunks`).
    pub chunks: Vec<BlockChunk>,
}

/// What a [`BucketBlock::series`] call asks for.
#[derive(Debug, Clone)]
pub struct BlockSeriesRequest {
    /// Matchers on the block's own labels (external-label matchers already resolved by the caller).
    pub matchers: Vec<Matcher>,
    /// Inclusive range, ms.
    pub min_time: i64,
    /// Inclusive range, ms.
    pub max_time: i64,
    /// Labels only: no chunk reads.
    pub skip_chunks: bool,
    /// For downsampled blocks: which aggregates to return (empty: count and sum).
    pub aggrs: Vec<Aggr>,
}

/// How a block reads from the bucket.
#[derive(Debug, Clone)]
pub struct BlockOptions {
    /// Ranges closer than this many bytes are fetched in one GET.
    pub max_gap: u64,
    /// Read naively: one GET per postings list, per series entry and per chunk (the benchmark's
    /// baseline; never used in production).
    pub naive: bool,
}

impl Default for BlockOptions {
    fn default() -> Self {
        BlockOptions {
            max_gap: 512 * 1024,
            naive: false,
        }
    }
}

/// A block being served: its meta, its loaded index-header and a handle on the bucket.
#[derive(Debug)]
pub struct BucketBlock {
    meta: Arc<BlockMeta>,
}

impl BucketBlock {
    /// Opens the block: loads `<dir>/index-header` when present and valid, otherwise builds it from
    /// range reads of `<ulid>/index` (counted in `stats`) and writes it there atomically.
    pub async fn open(
        bucket: Bucket,
        meta: Arc<BlockMeta>,
        dir: &Path,
        cache: Arc<dyn IndexCache>,
        opts: BlockOptions,
        stats: &QueryStats,
    ) -> Result<Self> {
        let _ = (bucket, dir, cache, opts, stats);
        Err(crate::Error::Config(
            "BucketBlock::open: not implemented yet".into(),
        ))
        .map(|()| BucketBlock { meta })
    }

    /// The block's meta.json.
    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    /// Series matching `req`, sorted by labels, with their chunks in range.
    pub async fn series(
        &self,
        req: &BlockSeriesRequest,
        budget: &RequestBudget,
        stats: &QueryStats,
    ) -> Result<Vec<BlockSeries>> {
        let _ = (req, budget, stats);
        Ok(Vec::new())
    }

    /// Sorted label names of the series matching `matchers` (all names when empty).
    pub async fn label_names(
        &self,
        matchers: &[Matcher],
        stats: &QueryStats,
    ) -> Result<Vec<String>> {
        let _ = (matchers, stats);
        Ok(Vec::new())
    }

    /// Sorted values of `name` among the series matching `matchers` (all values when empty).
    pub async fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        stats: &QueryStats,
    ) -> Result<Vec<String>> {
        let _ = (name, matchers, stats);
        Ok(Vec::new())
    }

    /// Bytes of memory the loaded index-header holds (for the loaded-bytes gauge).
    pub fn memory_bytes(&self) -> u64 {
        0
    }
}
