//! One block in the bucket, queried with few range reads: matchers → postings (index-header
//! offsets, merged range reads) → series entries → chunk ranges merged per segment file.
//!
//! The merged strategy: every list of ranges (postings lists, series entries, the chunks of one
//! segment file) is sorted and ranges closer than [`BlockOptions::max_gap`] are read in one GET.
//! Series entries and chunks have no length before they are read, so their reads are sized by
//! an estimate (`meta.thanos.index_stats`, or the next wanted entry's start) and entries that
//! did not fit are read again, exactly. Postings lists and series entries go through the
//! [`IndexCache`]. Bytes are charged to the [`RequestBudget`] before each batch of GETs is sent,
//! series and estimated samples before any chunk is read.
//!
//! Chunks are read while the answer is taken ([`PlannedSeries::into_stream`], `reader`): a
//! block's writer lays them out in series order, so each merged read is consumed front to back
//! as the series go out, and only the piece being cut up is held.
//!
//! Downsampled blocks (`thanos.downsample.resolution > 0`) store Thanos aggregate chunks
//! (encoding 0xff); [`BucketBlock::series`] splits them and returns the requested aggregates.
//!
//! NOT DONE:
//! - Tombstones are not applied (bucket blocks are not expected to have any); a block whose
//!   `thanos.files` lists a non-empty `tombstones` is logged at open.
//! - No chunk cache (only postings and series entries are cached).
//! - `label_names`/`label_values` with matchers take no time range (the contract has none), so
//!   series without chunks in the request's range still contribute.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use strata_objstore::Bucket;
use strata_tsdb::chunkenc::aggr::{self, AGGR_ENCODING};
use strata_tsdb::chunks::{
    SEGMENT_HEADER_SIZE, chunk_record_size, decode_chunk_record, segment_file_name,
};
use strata_tsdb::index::{
    HEADER_LEN, PostingsRef, SERIES_ALIGN, decode_postings, decode_series_entry, series_entry_size,
};
use strata_tsdb::meta::BlockMeta;
use strata_tsdb::{ChunkMeta, ChunkRef, Labels, Matcher, SeriesRef};
use tracing::Instrument;
use ulid::Ulid;

use crate::cache::{CacheKey, IndexCache};
use crate::error::{Error, Result};
use crate::indexheader::{INDEX_HEADER_FILENAME, IndexHeader};
use crate::ranges::{Fetched, fetch_ranges, plan, planned_bytes};
use crate::stats::{QueryStats, RequestBudget, SAMPLES_PER_CHUNK_ESTIMATE};
use reader::PlannedRead;

mod reader;

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
    /// Merged chunk reads up to this many bytes are fetched whole (ahead of need); longer ones
    /// are streamed and cut up as the answer is sent.
    pub whole_read_max: u64,
    /// Where chunks read once are kept (`None`, the default: every chunk is read from the
    /// bucket). Used when a block's chunks are read in order (always, for blocks a TSDB wrote).
    pub chunk_cache: Option<Arc<dyn IndexCache>>,
}

impl Default for BlockOptions {
    fn default() -> Self {
        BlockOptions {
            max_gap: 512 * 1024,
            naive: false,
            whole_read_max: 1024 * 1024,
            chunk_cache: None,
        }
    }
}

/// Bytes read per series entry when `meta.thanos.index_stats.series_max_size` is unknown.
pub const DEFAULT_SERIES_ESTIMATE: u64 = 64 * 1024;
/// Bytes read per chunk when neither the next chunk's start nor `chunk_max_size` is known.
pub const DEFAULT_CHUNK_ESTIMATE: u64 = 16 * 1024;
/// Size of a tombstones file without entries.
const EMPTY_TOMBSTONES_SIZE: i64 = 9;
/// Segment files of one block read at the same time.
const SEGMENT_CONCURRENCY: usize = 4;
/// Bytes a chunk record adds to its data: length varint (at most 5), encoding byte, CRC.
const CHUNK_RECORD_OVERHEAD: u64 = 5 + 1 + 4;
/// Lazy postings: when the most selective matcher leaves at most this many candidate series, the
/// other matchers are checked on the candidates' labels instead of fetching their postings lists
/// (each list elsewhere in the index would cost a GET of its own).
const LAZY_MAX_CANDIDATES: u64 = 512;
/// Otherwise a matcher's lists are skipped when they are larger than this many bytes per candidate
/// (about what a candidate's series entry costs to read).
const LAZY_BYTES_PER_CANDIDATE: u64 = 64;

/// A block being served: its meta, its loaded index-header and a handle on the bucket.
#[derive(Debug)]
pub struct BucketBlock {
    meta: Arc<BlockMeta>,
    bucket: Bucket,
    header: IndexHeader,
    cache: Arc<dyn IndexCache>,
    opts: BlockOptions,
    index_obj: String,
    /// Known segment file sizes (from `thanos.files`, or asked for once).
    segment_sizes: Mutex<HashMap<u32, u64>>,
}

/// A series resolved from the index: its labels and chunk metas.
type ResolvedSeries = (Labels, Vec<ChunkMeta>);

/// What a request wants of one block, resolved from the index; no chunk read yet.
#[derive(Debug)]
struct Plan {
    series: Vec<ResolvedSeries>,
    skip_chunks: bool,
    /// For downsampled blocks: the aggregates to answer with.
    aggrs: Vec<Aggr>,
}

/// A block's series for one request, resolved from the index (and their series and estimated
/// samples charged to the request's budget), their chunks not read yet: see [`Self::into_stream`].
#[derive(Debug)]
pub struct PlannedSeries {
    block: Arc<BucketBlock>,
    plan: Plan,
}

impl PlannedSeries {
    /// The block.
    pub fn ulid(&self) -> Ulid {
        self.block.ulid()
    }

    /// Whether no series matched.
    pub fn is_empty(&self) -> bool {
        self.plan.series.is_empty()
    }

    /// The series' labels as stored, in answer order.
    pub fn labels(&self) -> impl Iterator<Item = &Labels> {
        self.plan.series.iter().map(|(l, _)| l)
    }

    /// Puts the series in the order `order` (indices into the current order, each once).
    pub fn reorder(&mut self, order: &[usize]) {
        let mut taken: Vec<Option<ResolvedSeries>> = std::mem::take(&mut self.plan.series)
            .into_iter()
            .map(Some)
            .collect();
        self.plan.series = order
            .iter()
            .filter_map(|&i| taken.get_mut(i)?.take())
            .collect();
    }

    /// The series in answer order with their chunks. When the chunks lie in the segment files in
    /// that order (as a block's writer puts them), each merged range read is streamed and cut up
    /// as the series are taken, so what is held is a piece of a read, not the block's answer;
    /// otherwise the chunks are read first, as [`BucketBlock::series`] does. The bytes of the
    /// reads are charged to `budget` before the first one is sent.
    pub fn into_stream(
        self,
        budget: Arc<RequestBudget>,
        stats: Arc<QueryStats>,
    ) -> futures::stream::BoxStream<'static, Result<BlockSeries>> {
        stream_series(self.block, budget, stats, self.plan)
    }
}

/// The series of `plan` with their chunks (see [`PlannedSeries::into_stream`]).
fn stream_series<'a, B, Bu, St>(
    block: B,
    budget: Bu,
    stats: St,
    plan: Plan,
) -> futures::stream::BoxStream<'a, Result<BlockSeries>>
where
    B: std::ops::Deref<Target = BucketBlock> + Send + Sync + 'a,
    Bu: std::ops::Deref<Target = RequestBudget> + Send + Sync + 'a,
    St: std::ops::Deref<Target = QueryStats> + Send + Sync + 'a,
{
    let Plan {
        series,
        skip_chunks,
        aggrs,
    } = plan;
    if skip_chunks {
        let out = series.into_iter().map(|(labels, _)| {
            Ok(BlockSeries {
                labels,
                chunks: Vec::new(),
            })
        });
        return futures::stream::iter(out).boxed();
    }
    let refs: Vec<ChunkRef> = series
        .iter()
        .flat_map(|(_, m)| m.iter().map(|m| m.chunk_ref))
        .collect();
    stats.chunks_touched.fetch_add(refs.len() as u64, Relaxed);
    if !reader::is_increasing(refs.iter().copied()) {
        // Chunks out of label order (not what a block's writer makes): read them all first.
        return futures::stream::once(async move {
            let mut fetched = block.chunks(&refs, &budget, &stats).await?;
            let mut out = Vec::with_capacity(series.len());
            for (labels, metas) in series {
                let mut chunks = Vec::with_capacity(metas.len());
                for m in metas {
                    let Some(c) = fetched.remove(&m.chunk_ref) else {
                        return Err(block.tsdb_err(strata_tsdb::Error::InvalidArgument(format!(
                            "chunk {:#x} referenced twice",
                            m.chunk_ref.0
                        ))));
                    };
                    chunks.push(block.block_chunk(&m, c, &aggrs)?);
                }
                out.push(Ok(BlockSeries { labels, chunks }));
            }
            Ok::<_, Error>(futures::stream::iter(out))
        })
        .try_flatten()
        .boxed();
    }
    futures::stream::once(async move {
        // Chunks in the chunk cache are taken out now (an eviction meanwhile cannot leave one
        // neither cached nor planned); only the others are read.
        let (cached, reads) = match &block.opts.chunk_cache {
            Some(cache) => {
                let (cached, missing) = block.cached_chunks(cache.as_ref(), &refs, &budget)?;
                (cached, block.plan_reads(&missing, &budget).await?)
            }
            None => (HashMap::new(), block.plan_reads(&refs, &budget).await?),
        };
        let reader = reader::ChunkReader::new(block, budget, stats, reads);
        let state = (reader, series.into_iter(), aggrs, cached);
        Ok::<_, Error>(futures::stream::try_unfold(
            state,
            |(mut reader, mut rest, aggrs, mut cached)| async move {
                let Some((labels, metas)) = rest.next() else {
                    return Ok(None);
                };
                let mut chunks = Vec::with_capacity(metas.len());
                for m in metas {
                    let c = match cached.remove(&m.chunk_ref) {
                        Some(c) => c,
                        None => {
                            let c = reader.chunk(m.chunk_ref).await?;
                            reader.block().cache_chunk(m.chunk_ref, &c);
                            c
                        }
                    };
                    chunks.push(reader.block().block_chunk(&m, c, &aggrs)?);
                }
                Ok(Some((
                    BlockSeries { labels, chunks },
                    (reader, rest, aggrs, cached),
                )))
            },
        ))
    })
    .try_flatten()
    .boxed()
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
        let ulid = meta.ulid;
        let span = tracing::info_span!("block_open", block = %ulid, built = tracing::field::Empty);
        async move {
            let path = dir.join(INDEX_HEADER_FILENAME);
            let (header, built) = IndexHeader::load_or_build(&bucket, ulid, &path, stats).await?;
            tracing::Span::current().record("built", built);
            let mut sizes = HashMap::new();
            for f in meta.thanos.iter().flat_map(|t| &t.files) {
                // An empty tombstones file is 9 bytes (magic, version, CRC).
                if f.rel_path == "tombstones" && f.size_bytes > EMPTY_TOMBSTONES_SIZE {
                    tracing::warn!(
                        block = %ulid,
                        size = f.size_bytes,
                        "block has tombstones; they are not applied by the store gateway"
                    );
                }
                if let Some(seq) = f
                    .rel_path
                    .strip_prefix("chunks/")
                    .and_then(|s| s.parse::<u32>().ok())
                    && seq > 0
                    && f.size_bytes > 0
                {
                    sizes.insert(seq - 1, f.size_bytes as u64);
                }
            }
            Ok(BucketBlock {
                index_obj: format!("{ulid}/index"),
                meta,
                bucket,
                header,
                cache,
                opts,
                segment_sizes: Mutex::new(sizes),
            })
        }
        .instrument(span)
        .await
    }

    /// The block's meta.json.
    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    /// The loaded index-header.
    pub fn index_header(&self) -> &IndexHeader {
        &self.header
    }

    fn ulid(&self) -> Ulid {
        self.meta.ulid
    }

    fn tsdb_err(&self, source: strata_tsdb::Error) -> Error {
        Error::Tsdb {
            block: self.ulid(),
            source,
        }
    }

    fn os_err(&self, source: strata_objstore::Error) -> Error {
        Error::Objstore {
            block: self.ulid(),
            source,
        }
    }

    fn index_stats(&self) -> (u64, u64) {
        let s = self
            .meta
            .thanos
            .as_ref()
            .and_then(|t| t.index_stats.as_ref());
        (
            s.map_or(0, |s| s.series_max_size.max(0) as u64),
            s.map_or(0, |s| s.chunk_max_size.max(0) as u64),
        )
    }

    /// Splits `matchers` into those resolved through postings lists and those checked on the
    /// candidates' labels afterwards (lazy postings): the most selective matcher (fewest postings
    /// bytes) is always resolved through postings; the others are left to the label check when
    /// their lists would cost more than reading the candidates' series entries. Same answer
    /// either way; fewer GETs and bytes for selective queries.
    fn lazy_split(&self, matchers: &[Matcher]) -> Result<(Vec<Matcher>, Vec<Matcher>)> {
        let all = || Ok((matchers.to_vec(), Vec::new()));
        if matchers.len() < 2 || self.opts.naive {
            return all();
        }
        let table = self.header.postings();
        let mut sized = Vec::with_capacity(matchers.len());
        for (i, m) in matchers.iter().enumerate() {
            let plan = table
                .plan(std::slice::from_ref(m))
                .map_err(|e| self.tsdb_err(e))?;
            let include = !m.matches("");
            if include && plan.include.is_empty() {
                // Nothing has a matching value: postings answer "none" without any read.
                return all();
            }
            let bytes: u64 = plan
                .refs()
                .iter()
                .map(|r| r.range.end.saturating_sub(r.range.start))
                .sum();
            sized.push((bytes, include, i));
        }
        let Some(&(anchor_bytes, _, anchor)) = sized.iter().filter(|s| s.1).min_by_key(|s| s.0)
        else {
            // Only matchers that accept the empty value: every series is a candidate anyway.
            return all();
        };
        let candidates = anchor_bytes / 4;
        let (mut fetch, mut check) = (vec![matchers[anchor].clone()], Vec::new());
        for &(bytes, _, i) in &sized {
            if i == anchor {
                continue;
            }
            if candidates <= LAZY_MAX_CANDIDATES
                || bytes > candidates.saturating_mul(LAZY_BYTES_PER_CANDIDATE)
            {
                check.push(matchers[i].clone());
            } else {
                fetch.push(matchers[i].clone());
            }
        }
        Ok((fetch, check))
    }

    /// Series entries matching `matchers`: postings for the selective matchers, the rest checked
    /// on labels (see [`Self::lazy_split`]).
    async fn matching_series(
        &self,
        matchers: &[Matcher],
        budget: &RequestBudget,
        stats: &QueryStats,
    ) -> Result<Vec<ResolvedSeries>> {
        let (fetch, check) = self.lazy_split(matchers)?;
        let refs = self.postings(&fetch, budget, stats).await?;
        let mut resolved = self.series_entries(&refs, budget, stats).await?;
        if !check.is_empty() {
            resolved.retain(|(labels, _)| {
                check
                    .iter()
                    .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
            });
        }
        Ok(resolved)
    }

    /// Series references matching `matchers`, sorted (postings fetched, cached, combined).
    async fn postings(
        &self,
        matchers: &[Matcher],
        budget: &RequestBudget,
        stats: &QueryStats,
    ) -> Result<Vec<SeriesRef>> {
        let plan = self
            .header
            .postings()
            .plan(matchers)
            .map_err(|e| self.tsdb_err(e))?;
        let refs = plan.refs();
        stats.postings_touched.fetch_add(refs.len() as u64, Relaxed);
        let mut lists: HashMap<u64, Vec<SeriesRef>> = HashMap::with_capacity(refs.len());
        let mut missing: Vec<&PostingsRef> = Vec::new();
        for r in &refs {
            let key = CacheKey::Postings {
                block: self.ulid(),
                name: r.name.clone(),
                value: r.value.clone(),
            };
            match self.cache.get(&key) {
                Some(b) => {
                    stats.cache_hits.fetch_add(1, Relaxed);
                    budget.add_bytes(b.len() as u64)?;
                    let l = decode_postings(&self.index_obj, &b, r.range.start)
                        .map_err(|e| self.tsdb_err(e))?;
                    lists.insert(r.range.start, l);
                }
                None => {
                    stats.cache_misses.fetch_add(1, Relaxed);
                    missing.push(r);
                }
            }
        }
        if !missing.is_empty() {
            let ranges: Vec<Range<u64>> = missing.iter().map(|r| r.range.clone()).collect();
            let f = self.fetch(&self.index_obj, &ranges, budget, stats).await?;
            for (r, b) in missing.iter().zip(f.parts) {
                let l = decode_postings(&self.index_obj, &b, r.range.start)
                    .map_err(|e| self.tsdb_err(e))?;
                // Cache the list without padding: length, count, refs, CRC.
                let exact = (12 + 4 * l.len()).min(b.len());
                self.cache.put(
                    CacheKey::Postings {
                        block: self.ulid(),
                        name: r.name.clone(),
                        value: r.value.clone(),
                    },
                    // A copy: a slice would keep the whole merged read alive.
                    Bytes::copy_from_slice(&b[..exact]),
                );
                lists.insert(r.range.start, l);
            }
        }
        plan.evaluate(|r| {
            lists.get(&r.range.start).cloned().ok_or_else(|| {
                strata_tsdb::Error::InvalidArgument(format!(
                    "internal: postings list {}={} not fetched",
                    r.name, r.value
                ))
            })
        })
        .map_err(|e| self.tsdb_err(e))
    }

    /// Reads the series entries of `refs` (cache first, then merged range reads, then exact
    /// re-reads of entries longer than the estimate).
    async fn series_entries(
        &self,
        refs: &[SeriesRef],
        budget: &RequestBudget,
        stats: &QueryStats,
    ) -> Result<Vec<ResolvedSeries>> {
        stats.series_touched.fetch_add(refs.len() as u64, Relaxed);
        // Series entries lie before the first postings list.
        let end = self.header.postings().first_offset();
        let mut raw: Vec<Option<Bytes>> = vec![None; refs.len()];
        let mut missing: Vec<usize> = Vec::new();
        for (i, &r) in refs.iter().enumerate() {
            let key = CacheKey::Series {
                block: self.ulid(),
                series: r,
            };
            match self.cache.get(&key) {
                Some(b) => {
                    stats.cache_hits.fetch_add(1, Relaxed);
                    budget.add_bytes(b.len() as u64)?;
                    raw[i] = Some(b);
                }
                None => {
                    stats.cache_misses.fetch_add(1, Relaxed);
                    missing.push(i);
                }
            }
        }
        let (series_max, _) = self.index_stats();
        let estimate = if series_max > 0 {
            series_max
        } else {
            DEFAULT_SERIES_ESTIMATE
        };
        let mut offsets = Vec::with_capacity(missing.len());
        for &i in &missing {
            let r = refs[i];
            let off = r
                .checked_mul(SERIES_ALIGN)
                .filter(|&o| o >= HEADER_LEN && o < end)
                .ok_or_else(|| {
                    self.tsdb_err(strata_tsdb::Error::OutOfRange {
                        file: self.index_obj.clone(),
                        offset: r.saturating_mul(SERIES_ALIGN),
                        what: format!("series reference {r}"),
                    })
                })?;
            offsets.push(off);
        }
        // An entry ends before the next wanted one starts (refs are sorted), within the estimate.
        let ranges: Vec<Range<u64>> = offsets
            .iter()
            .enumerate()
            .map(|(i, &o)| {
                let next = offsets
                    .get(i + 1)
                    .copied()
                    .filter(|&n| n > o)
                    .unwrap_or(end);
                o..o.saturating_add(estimate).min(end).min(next)
            })
            .collect();
        let f = self.fetch(&self.index_obj, &ranges, budget, stats).await?;
        // Entries that did not fit in their estimate are read again, exactly.
        let mut short: Vec<(usize, Range<u64>)> = Vec::new();
        for ((&i, &off), b) in missing.iter().zip(&offsets).zip(f.parts) {
            let size = series_entry_size(&self.index_obj, &b, off)
                .map_err(|e| self.tsdb_err(e))?
                .unwrap_or(u64::MAX);
            if size <= b.len() as u64 {
                raw[i] = Some(b.slice(..size as usize));
            } else if size == u64::MAX || off.saturating_add(size) > end {
                return Err(self.tsdb_err(strata_tsdb::Error::TooLarge {
                    file: self.index_obj.clone(),
                    offset: off,
                    what: "series entry",
                    len: size,
                }));
            } else {
                short.push((i, off..off + size));
            }
        }
        if !short.is_empty() {
            let ranges: Vec<Range<u64>> = short.iter().map(|(_, r)| r.clone()).collect();
            let f = self.fetch(&self.index_obj, &ranges, budget, stats).await?;
            for ((i, _), b) in short.iter().zip(f.parts) {
                raw[*i] = Some(b);
            }
        }
        let mut out = Vec::with_capacity(refs.len());
        for ((&r, b), was_missing) in refs
            .iter()
            .zip(raw)
            .zip((0..refs.len()).map(|i| missing.binary_search(&i).is_ok()))
        {
            let b = b.unwrap_or_default();
            let s =
                decode_series_entry(&self.index_obj, &b, r * SERIES_ALIGN, self.header.symbols())
                    .map_err(|e| self.tsdb_err(e.in_series(r)))?;
            if was_missing {
                self.cache.put(
                    CacheKey::Series {
                        block: self.ulid(),
                        series: r,
                    },
                    Bytes::copy_from_slice(&b),
                );
            }
            out.push(s);
        }
        Ok(out)
    }

    /// Size of segment `seg` (0-based), from `thanos.files` or asked for once.
    async fn segment_size(&self, seg: u32) -> Result<u64> {
        if let Some(&s) = self.lock_sizes().get(&seg) {
            return Ok(s);
        }
        let obj = self.segment_obj(seg);
        let size = self
            .bucket
            .attributes(&obj)
            .await
            .map_err(|e| self.os_err(e))?
            .size;
        self.lock_sizes().insert(seg, size);
        Ok(size)
    }

    fn lock_sizes(&self) -> std::sync::MutexGuard<'_, HashMap<u32, u64>> {
        self.segment_sizes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn segment_obj(&self, seg: u32) -> String {
        format!(
            "{}/chunks/{}",
            self.ulid(),
            segment_file_name(seg.saturating_add(1))
        )
    }

    /// Reads the chunk records at `refs` (any order, duplicates allowed): ranges merged per
    /// segment file, each chunk's end estimated from the next requested chunk in the same
    /// segment or the block's largest chunk, short reads read again exactly.
    async fn chunks(
        &self,
        refs: &[ChunkRef],
        budget: &RequestBudget,
        stats: &QueryStats,
    ) -> Result<HashMap<ChunkRef, ChunkBytes>> {
        stats.chunks_touched.fetch_add(refs.len() as u64, Relaxed);
        let mut by_seg: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for r in refs {
            by_seg
                .entry(r.segment())
                .or_default()
                .push(u64::from(r.offset()));
        }
        let estimate = self.chunk_estimate();
        // Segments are read concurrently (a few at a time), each with merged range reads.
        let per_seg: Vec<Vec<(ChunkRef, ChunkBytes)>> = futures::stream::iter(
            by_seg
                .into_iter()
                .map(|(seg, offs)| self.segment_chunks(seg, offs, estimate, budget, stats)),
        )
        .buffer_unordered(SEGMENT_CONCURRENCY)
        .try_collect()
        .await?;
        Ok(per_seg.into_iter().flatten().collect())
    }

    /// Reads the chunk records at `offs` of segment `seg` (see [`Self::chunks`]).
    async fn segment_chunks(
        &self,
        seg: u32,
        mut offs: Vec<u64>,
        estimate: u64,
        budget: &RequestBudget,
        stats: &QueryStats,
    ) -> Result<Vec<(ChunkRef, ChunkBytes)>> {
        let mut out = Vec::with_capacity(offs.len());
        offs.sort_unstable();
        offs.dedup();
        let size = self.segment_size(seg).await?;
        let obj = self.segment_obj(seg);
        let ranges = self.chunk_ranges(&obj, &offs, estimate, size)?;
        let f = self.fetch(&obj, &ranges, budget, stats).await?;
        let mut short: Vec<Range<u64>> = Vec::new();
        for (&o, b) in offs.iter().zip(f.parts) {
            // The length varint always fits unless the record is cut off by the segment end.
            let need = chunk_record_size(&obj, &b, o)
                .map_err(|e| self.tsdb_err(e))?
                .ok_or_else(|| {
                    self.tsdb_err(strata_tsdb::Error::Truncated {
                        file: obj.clone(),
                        offset: o,
                        what: "chunk length",
                    })
                })?;
            if need <= b.len() as u64 {
                out.push((
                    ChunkRef::new(seg, o as u32),
                    self.decode_chunk(&obj, &b, o)?,
                ));
            } else if o.saturating_add(need) > size {
                return Err(self.tsdb_err(strata_tsdb::Error::TooLarge {
                    file: obj.clone(),
                    offset: o,
                    what: "chunk record",
                    len: need,
                }));
            } else {
                short.push(o..o + need);
            }
        }
        if !short.is_empty() {
            let f = self.fetch(&obj, &short, budget, stats).await?;
            for (r, b) in short.iter().zip(f.parts) {
                out.push((
                    ChunkRef::new(seg, r.start as u32),
                    self.decode_chunk(&obj, &b, r.start)?,
                ));
            }
        }
        Ok(out)
    }

    /// Bytes read for a chunk whose end is not known from the next wanted chunk.
    fn chunk_estimate(&self) -> u64 {
        let (_, chunk_max) = self.index_stats();
        if chunk_max > 0 {
            chunk_max + CHUNK_RECORD_OVERHEAD
        } else {
            DEFAULT_CHUNK_ESTIMATE
        }
    }

    /// The range to read for each chunk at `offs` (sorted, distinct) of segment `obj` of `size`
    /// bytes: up to the next wanted chunk, at most `estimate` bytes, within the file.
    fn chunk_ranges(
        &self,
        obj: &str,
        offs: &[u64],
        estimate: u64,
        size: u64,
    ) -> Result<Vec<Range<u64>>> {
        let mut ranges = Vec::with_capacity(offs.len());
        for (i, &o) in offs.iter().enumerate() {
            if o < SEGMENT_HEADER_SIZE || o >= size {
                return Err(self.tsdb_err(strata_tsdb::Error::OutOfRange {
                    file: obj.to_string(),
                    offset: o,
                    what: format!("chunk offset {o:#x}"),
                }));
            }
            let guess = o.saturating_add(estimate).min(size);
            let end = offs.get(i + 1).map_or(guess, |&next| next.min(guess));
            ranges.push(o..end);
        }
        Ok(ranges)
    }

    /// Reads `ranges` of `obj` (merged unless naive), charging the bytes the GETs will ask for
    /// to `budget` before sending them.
    async fn fetch(
        &self,
        obj: &str,
        ranges: &[Range<u64>],
        budget: &RequestBudget,
        stats: &QueryStats,
    ) -> Result<Fetched> {
        budget.add_bytes(planned_bytes(ranges, self.opts.max_gap, self.opts.naive))?;
        fetch_ranges(
            &self.bucket,
            obj,
            ranges,
            self.opts.max_gap,
            self.opts.naive,
            stats,
        )
        .await
        .map_err(|e| self.os_err(e))
    }

    fn decode_chunk(&self, obj: &str, b: &Bytes, off: u64) -> Result<ChunkBytes> {
        let (encoding, data) = decode_chunk_record(obj, b, off).map_err(|e| self.tsdb_err(e))?;
        // A copy: a slice would keep the whole merged read (mostly other series' chunks) alive
        // until the response is sent.
        Ok(ChunkBytes {
            encoding,
            data: Bytes::copy_from_slice(&data),
        })
    }

    /// Series matching `req`, sorted by labels, with their chunks in range, all read before
    /// returning ([`Self::plan_series`] and [`PlannedSeries::into_stream`] read them as sent).
    pub async fn series(
        &self,
        req: &BlockSeriesRequest,
        budget: &RequestBudget,
        stats: &QueryStats,
    ) -> Result<Vec<BlockSeries>> {
        let plan = self.plan(req, budget, stats).await?;
        stream_series(self, budget, stats, plan).try_collect().await
    }

    /// Resolves the series of `req` from the index and charges their series and estimated
    /// samples to `budget`; no chunk is read yet.
    pub async fn plan_series(
        self: &Arc<Self>,
        req: &BlockSeriesRequest,
        budget: &RequestBudget,
        stats: &QueryStats,
    ) -> Result<PlannedSeries> {
        Ok(PlannedSeries {
            block: self.clone(),
            plan: self.plan(req, budget, stats).await?,
        })
    }

    async fn plan(
        &self,
        req: &BlockSeriesRequest,
        budget: &RequestBudget,
        stats: &QueryStats,
    ) -> Result<Plan> {
        let span = tracing::debug_span!(
            "block_plan",
            block = %self.ulid(),
            series = tracing::field::Empty,
        );
        async move {
            stats.blocks_queried.fetch_add(1, Relaxed);
            let resolved = self.matching_series(&req.matchers, budget, stats).await?;
            let mut kept: Vec<ResolvedSeries> = Vec::with_capacity(resolved.len());
            for (labels, metas) in resolved {
                let metas: Vec<ChunkMeta> = metas
                    .into_iter()
                    .filter(|m| m.max_time >= req.min_time && m.min_time <= req.max_time)
                    .collect();
                if metas.is_empty() {
                    continue;
                }
                budget.add_series(1)?;
                if !req.skip_chunks {
                    budget.add_samples(metas.len() as u64 * SAMPLES_PER_CHUNK_ESTIMATE)?;
                }
                kept.push((labels, metas));
            }
            tracing::Span::current().record("series", kept.len());
            Ok(Plan {
                series: kept,
                skip_chunks: req.skip_chunks,
                aggrs: if req.aggrs.is_empty() {
                    vec![Aggr::Count, Aggr::Sum]
                } else {
                    req.aggrs.clone()
                },
            })
        }
        .instrument(span)
        .await
    }

    /// The chunks of `refs` found in `cache` (their bytes charged to `budget`), and the refs left
    /// to read, in their order.
    fn cached_chunks(
        &self,
        cache: &dyn IndexCache,
        refs: &[ChunkRef],
        budget: &RequestBudget,
    ) -> Result<(HashMap<ChunkRef, ChunkBytes>, Vec<ChunkRef>)> {
        let mut cached = HashMap::new();
        let mut missing = Vec::new();
        for &r in refs {
            let key = CacheKey::Chunk {
                block: self.ulid(),
                chunk: r.0,
            };
            match cache.get(&key) {
                Some(b) if !b.is_empty() => {
                    budget.add_bytes(b.len() as u64)?;
                    cached.insert(
                        r,
                        ChunkBytes {
                            encoding: b[0],
                            data: b.slice(1..),
                        },
                    );
                }
                _ => missing.push(r),
            }
        }
        Ok((cached, missing))
    }

    /// Keeps a chunk read from the bucket in the chunk cache, if there is one.
    fn cache_chunk(&self, r: ChunkRef, c: &ChunkBytes) {
        let Some(cache) = &self.opts.chunk_cache else {
            return;
        };
        let mut b = BytesMut::with_capacity(c.data.len() + 1);
        b.put_u8(c.encoding);
        b.extend_from_slice(&c.data);
        cache.put(
            CacheKey::Chunk {
                block: self.ulid(),
                chunk: r.0,
            },
            b.freeze(),
        );
    }

    /// The merged reads of `refs` (at increasing offsets), their bytes charged to `budget`.
    async fn plan_reads(
        &self,
        refs: &[ChunkRef],
        budget: &RequestBudget,
    ) -> Result<Vec<PlannedRead>> {
        let estimate = self.chunk_estimate();
        let mut reads = Vec::new();
        let mut i = 0;
        while i < refs.len() {
            let seg = refs[i].segment();
            let n = refs[i..].iter().take_while(|r| r.segment() == seg).count();
            let offs: Vec<u64> = refs[i..i + n]
                .iter()
                .map(|r| u64::from(r.offset()))
                .collect();
            i += n;
            let size = self.segment_size(seg).await?;
            let obj = self.segment_obj(seg);
            let ranges = self.chunk_ranges(&obj, &offs, estimate, size)?;
            budget.add_bytes(planned_bytes(&ranges, self.opts.max_gap, self.opts.naive))?;
            reads.extend(
                plan(&ranges, self.opts.max_gap, self.opts.naive)
                    .into_iter()
                    .map(|range| PlannedRead {
                        seg,
                        obj: obj.clone(),
                        size,
                        range,
                    }),
            );
        }
        Ok(reads)
    }

    /// A chunk's answer: raw, or the requested aggregates of a downsampled block's chunk.
    fn block_chunk(&self, m: &ChunkMeta, c: ChunkBytes, aggrs: &[Aggr]) -> Result<BlockChunk> {
        let mut bc = BlockChunk {
            min_time: m.min_time,
            max_time: m.max_time,
            ..Default::default()
        };
        let downsampled = self
            .meta
            .thanos
            .as_ref()
            .is_some_and(|t| t.downsample.resolution > 0);
        if downsampled && c.encoding == AGGR_ENCODING {
            let subs = aggr::decode(&c.data).map_err(|e| {
                self.tsdb_err(e.with_file(
                    &self.segment_obj(m.chunk_ref.segment()),
                    u64::from(m.chunk_ref.offset()),
                ))
            })?;
            for &a in aggrs {
                bc.aggrs[a as usize] = subs[a as usize]
                    .clone()
                    .map(|(encoding, data)| ChunkBytes { encoding, data });
            }
        } else {
            bc.raw = Some(c);
        }
        Ok(bc)
    }

    /// Labels of every series matching `matchers` (postings and series entries only).
    async fn matching_labels(
        &self,
        matchers: &[Matcher],
        stats: &QueryStats,
    ) -> Result<Vec<Labels>> {
        let budget = RequestBudget::unlimited();
        Ok(self
            .matching_series(matchers, &budget, stats)
            .await?
            .into_iter()
            .map(|(l, _)| l)
            .collect())
    }

    /// Sorted label names of the series matching `matchers` (all names when empty).
    pub async fn label_names(
        &self,
        matchers: &[Matcher],
        stats: &QueryStats,
    ) -> Result<Vec<String>> {
        if matchers.is_empty() {
            return Ok(self.header.label_names());
        }
        let mut names = BTreeSet::new();
        for l in self.matching_labels(matchers, stats).await? {
            for (n, _) in l.iter() {
                if !names.contains(n) {
                    names.insert(n.to_string());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    /// Sorted values of `name` among the series matching `matchers` (all values when empty).
    pub async fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        stats: &QueryStats,
    ) -> Result<Vec<String>> {
        if matchers.is_empty() {
            return self
                .header
                .postings()
                .label_values(name)
                .map_err(|e| self.tsdb_err(e));
        }
        let mut values = BTreeSet::new();
        for l in self.matching_labels(matchers, stats).await? {
            if let Some(v) = l.get(name)
                && !values.contains(v)
            {
                values.insert(v.to_string());
            }
        }
        Ok(values.into_iter().collect())
    }

    /// Bytes of memory the loaded index-header holds (for the loaded-bytes gauge).
    pub fn memory_bytes(&self) -> u64 {
        self.header.memory_bytes()
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod tests_support;
