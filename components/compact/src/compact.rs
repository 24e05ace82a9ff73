//! Compaction: a streaming k-way merge of several blocks' series into one new block.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use strata_tsdb::index::{AllPostings, DEFAULT_POSTINGS_BUDGET};
use strata_tsdb::meta::{BlockDesc, BlockMetaCompaction, ThanosMeta};
use strata_tsdb::tombstones::Interval;
use strata_tsdb::{
    Block, BlockWriter, BlockWriterOptions, Chunk, ChunkMeta, Encoding, Labels, Sample,
};
use tracing::{debug, info_span};
use ulid::Ulid;

use crate::error::{Error, Result};
use crate::merge;

/// The `thanos.source` of blocks the compactor writes.
pub const COMPACTOR_SOURCE: &str = "compactor";

/// Options of [`compact`].
#[derive(Debug, Clone, Default)]
pub struct CompactOptions {
    /// Replica labels for vertical compaction: when non-empty, the inputs are blocks of HA
    /// replicas whose external labels differ only in these labels; the output drops them and
    /// overlapping chunks of a series are de-duplicated with the penalty algorithm, as the
    /// Thanos compactor does ([`crate::merge::dedup_chunks`]). When
    /// empty, series are merged as a union (equal timestamps keep the first input's sample).
    pub dedup_replica_labels: Vec<String>,
    /// Id of the output block; a new ULID when `None`.
    pub ulid: Option<Ulid>,
    /// Postings entries held in memory while the output's index is written before they are
    /// spilled to sorted runs in its directory; the block writer's default when `None`.
    pub postings_budget: Option<usize>,
}

/// What [`compact`] did, for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Series written.
    pub series: u64,
    /// Chunks copied byte for byte.
    pub chunks_copied: u64,
    /// Chunks written after decoding and merging.
    pub chunks_recut: u64,
}

/// Compacts `inputs` (block directories) into one new block under `out_parent`; returns its id,
/// or `None` when no sample is left (every series empty after tombstones).
///
/// Series are merged in label order, one at a time. A series whose chunks from the different
/// inputs do not overlap and are not touched by tombstones keeps its chunk bytes unchanged;
/// otherwise its samples are decoded, merged (see [`CompactOptions::dedup_replica_labels`]),
/// tombstones applied, and re-cut into chunks of at most 120 samples. `meta.json` gets level =
/// max input level + 1, the sorted union of sources, the inputs as parents, the inputs' time
/// range, and the inputs' `thanos` section (labels and resolution must agree) with source
/// `compactor`.
pub fn compact(
    inputs: &[PathBuf],
    out_parent: &Path,
    opts: &CompactOptions,
) -> Result<Option<Ulid>> {
    compact_with_stats(inputs, out_parent, opts).map(|(u, _)| u)
}

/// [`compact`], also returning what was done.
pub fn compact_with_stats(
    inputs: &[PathBuf],
    out_parent: &Path,
    opts: &CompactOptions,
) -> Result<(Option<Ulid>, CompactStats)> {
    let span = info_span!("compact", inputs = inputs.len(), out = %out_parent.display());
    let _g = span.enter();
    if inputs.is_empty() {
        return Err(Error::InvalidArgument("no input blocks".into()));
    }
    let blocks = inputs
        .iter()
        .map(|p| Block::open(p).map_err(Error::read(p)))
        .collect::<Result<Vec<_>>>()?;
    let thanos = merged_thanos(&blocks, &opts.dedup_replica_labels)?;
    let vertical = !opts.dedup_replica_labels.is_empty();

    let mut sources: Vec<Ulid> = blocks
        .iter()
        .flat_map(|b| b.meta().compaction.sources.iter().copied())
        .collect();
    sources.sort();
    sources.dedup();
    let compaction = BlockMetaCompaction {
        level: blocks
            .iter()
            .map(|b| b.meta().compaction.level)
            .max()
            .unwrap_or(0)
            + 1,
        sources,
        parents: blocks
            .iter()
            .map(|b| BlockDesc {
                ulid: b.meta().ulid,
                min_time: b.meta().min_time,
                max_time: b.meta().max_time,
            })
            .collect(),
        ..Default::default()
    };
    let min_time = blocks.iter().map(|b| b.meta().min_time).min().unwrap_or(0);
    let max_time = blocks.iter().map(|b| b.meta().max_time).max().unwrap_or(0);

    let mut w = BlockWriter::new(
        out_parent,
        BlockWriterOptions {
            ulid: opts.ulid,
            thanos,
            postings_budget: opts.postings_budget.unwrap_or(DEFAULT_POSTINGS_BUDGET),
            ..Default::default()
        },
    )
    .map_err(Error::write(out_parent))?;
    w.set_compaction(compaction);
    w.set_time_range(min_time, max_time);

    // Two threads: this one writes the output while a reader walks the inputs in label order
    // and merges each series, a bounded channel of batches between them.
    let (tx, rx) = mpsc::sync_channel::<Batch>(PIPELINE_BATCHES);
    let (read, written) = std::thread::scope(|scope| {
        let blocks = &blocks;
        let span = span.clone();
        let reader = scope.spawn(move || {
            let _g = span.enter();
            read_series(blocks, vertical, &tx)
        });
        let mut series = 0u64;
        let mut written: Result<()> = Ok(());
        for batch in rx {
            for (labels, chunks) in batch {
                if let Err(e) = w.add_series_chunks(&labels, chunks) {
                    written = Err(Error::write(out_parent)(e));
                    break;
                }
                series += 1;
            }
            if written.is_err() {
                // Dropping the receiver stops the reader at its next batch.
                break;
            }
        }
        let read = reader.join().unwrap_or_else(|_| {
            Err(Error::InvalidArgument(
                "compaction reader thread panicked".into(),
            ))
        });
        (read, written.map(|()| series))
    });
    let mut stats = read?;
    stats.series = written?;
    if w.num_samples() == 0 {
        debug!("no samples left; no block written");
        return Ok((None, stats));
    }
    let ulid = w.finish().map_err(Error::write(out_parent))?;
    debug!(%ulid, ?stats, "compacted");
    Ok((Some(ulid), stats))
}

/// Series per message from the reader thread to the writer, at most.
const PIPELINE_BATCH: usize = 256;
/// Chunk bytes per message, at most (a message holds one series more when that is exceeded).
const PIPELINE_BATCH_BYTES: usize = 1 << 20;
/// Messages in flight between the two threads: with the one being filled and the one being
/// written, about 10 MiB of chunks at most, however long the series.
const PIPELINE_BATCHES: usize = 8;

/// Merged series on their way to the writer.
type Batch = Vec<(Labels, Vec<(Chunk, i64, i64)>)>;

/// Walks the inputs' series in label order, merges each, and sends them in batches; stops early
/// (without error) when the writer has gone. Returns what was read and merged (`series` is
/// left for the writer to count).
fn read_series(
    blocks: &[Block],
    vertical: bool,
    tx: &mpsc::SyncSender<Batch>,
) -> Result<CompactStats> {
    let mut cursors = blocks.iter().map(Cursor::new).collect::<Result<Vec<_>>>()?;
    let mut stats = CompactStats::default();
    let mut batch = Vec::with_capacity(PIPELINE_BATCH);
    let mut batch_bytes = 0usize;
    // The smallest current labels among the inputs, and every input holding them.
    while let Some(labels) = cursors
        .iter()
        .filter_map(|c| c.cur.as_ref().map(|s| &s.0))
        .min()
        .cloned()
    {
        let mut parts = Vec::new();
        for (i, c) in cursors.iter_mut().enumerate() {
            if c.cur.as_ref().is_some_and(|s| s.0 == labels) {
                if let Some((_, r, metas)) = c.cur.take() {
                    parts.push(Part {
                        input: i,
                        series_ref: r,
                        metas,
                    });
                }
                c.advance()?;
            }
        }
        let chunks = merge_series(blocks, &labels, &parts, vertical, &mut stats)?;
        if chunks.is_empty() {
            continue;
        }
        batch_bytes += chunks.iter().map(|(c, _, _)| c.data().len()).sum::<usize>();
        batch.push((labels, chunks));
        if batch.len() < PIPELINE_BATCH && batch_bytes < PIPELINE_BATCH_BYTES {
            continue;
        }
        batch_bytes = 0;
        if tx
            .send(std::mem::replace(
                &mut batch,
                Vec::with_capacity(PIPELINE_BATCH),
            ))
            .is_err()
        {
            return Ok(stats);
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(batch);
    }
    Ok(stats)
}

/// One input's share of a series.
struct Part {
    input: usize,
    series_ref: u64,
    metas: Vec<ChunkMeta>,
}

/// Walks one block's series in index (label) order.
struct Cursor<'a> {
    block: &'a Block,
    refs: AllPostings,
    cur: Option<(Labels, u64, Vec<ChunkMeta>)>,
}

impl<'a> Cursor<'a> {
    fn new(block: &'a Block) -> Result<Self> {
        let refs = block
            .index()
            .all_postings_iter()
            .map_err(Error::read(block.dir()))?;
        let mut c = Cursor {
            block,
            refs,
            cur: None,
        };
        c.advance()?;
        Ok(c)
    }

    fn advance(&mut self) -> Result<()> {
        self.cur = match self.refs.next() {
            None => None,
            Some(r) => {
                let (l, m) = self
                    .block
                    .index()
                    .series(r)
                    .map_err(Error::read(self.block.dir()))?;
                if let Some((prev, _, _)) = &self.cur
                    && l <= *prev
                {
                    return Err(Error::Series {
                        block: self.block.dir().to_path_buf(),
                        series: l.to_string(),
                        what: format!("index series out of order (after {prev})"),
                    });
                }
                Some((l, r, m))
            }
        };
        Ok(())
    }
}

fn overlaps(iv: &Interval, m: &ChunkMeta) -> bool {
    iv.mint <= m.max_time && iv.maxt >= m.min_time
}

/// The output chunks of one series.
fn merge_series(
    blocks: &[Block],
    labels: &Labels,
    parts: &[Part],
    vertical: bool,
    stats: &mut CompactStats,
) -> Result<Vec<(Chunk, i64, i64)>> {
    let series_err = |input: usize, what: String| Error::Series {
        block: blocks[input].dir().to_path_buf(),
        series: labels.to_string(),
        what,
    };
    // Pass-through when no two chunks overlap and no tombstone touches a chunk.
    let mut all: Vec<(usize, ChunkMeta)> = parts
        .iter()
        .flat_map(|p| p.metas.iter().map(move |m| (p.input, *m)))
        .collect();
    all.sort_by_key(|(_, m)| (m.min_time, m.max_time));
    let no_overlap = all.windows(2).all(|w| w[1].1.min_time > w[0].1.max_time);
    let untouched = parts.iter().all(|p| {
        let del = blocks[p.input].tombstones().get(p.series_ref);
        p.metas
            .iter()
            .all(|m| !del.iter().any(|iv| overlaps(iv, m)))
    });
    if no_overlap && untouched {
        let mut out = Vec::with_capacity(all.len());
        for (i, m) in all {
            let c = blocks[i]
                .chunk(m.chunk_ref)
                .map_err(Error::read(blocks[i].dir()))?;
            out.push((c, m.min_time, m.max_time));
        }
        stats.chunks_copied += out.len() as u64;
        return Ok(out);
    }

    if vertical {
        // Thanos's way: chunk by chunk, tombstones cut out of the chunks they touch.
        let mut chunks = Vec::with_capacity(all.len());
        for p in parts {
            let block = &blocks[p.input];
            let del = block.tombstones().get(p.series_ref);
            for m in &p.metas {
                let c = block.chunk(m.chunk_ref).map_err(Error::read(block.dir()))?;
                if !del.iter().any(|iv| overlaps(iv, m)) {
                    chunks.push((c, m.min_time, m.max_time));
                    continue;
                }
                let kept: Vec<Sample> = c
                    .samples()
                    .map_err(|e| series_err(p.input, format!("chunk {}: {e}", m.chunk_ref.0)))?
                    .into_iter()
                    .filter(|s| !del.iter().any(|iv| iv.contains(s.t())))
                    .collect();
                chunks.extend(merge::cut(&kept).map_err(|e| series_err(p.input, e.to_string()))?);
            }
        }
        let total = chunks.len();
        let (out, recut) =
            merge::dedup_chunks(chunks).map_err(|e| series_err(parts[0].input, e.to_string()))?;
        stats.chunks_recut += recut as u64;
        stats.chunks_copied += (out.len() - recut).min(total) as u64;
        return Ok(out);
    }

    let mut per_input = Vec::with_capacity(parts.len());
    for p in parts {
        let block = &blocks[p.input];
        let del = block.tombstones().get(p.series_ref);
        let mut samples: Vec<Sample> = Vec::new();
        for m in &p.metas {
            let c = block.chunk(m.chunk_ref).map_err(Error::read(block.dir()))?;
            if c.encoding() == Encoding::Aggr {
                return Err(series_err(
                    p.input,
                    "aggregate chunks overlap or are cut by tombstones; downsampled blocks cannot be merged sample by sample".into(),
                ));
            }
            for s in c.iter() {
                let s =
                    s.map_err(|e| series_err(p.input, format!("chunk {}: {e}", m.chunk_ref.0)))?;
                if !del.iter().any(|iv| iv.contains(s.t())) {
                    samples.push(s);
                }
            }
        }
        // Chunks of one block should not overlap; if they do, keep each timestamp once.
        if samples.windows(2).any(|w| w[1].t() <= w[0].t()) {
            samples = merge::union(vec![samples]);
        }
        per_input.push(samples);
    }
    let merged = merge::union(per_input);
    let out = merge::cut(&merged).map_err(|e| series_err(parts[0].input, e.to_string()))?;
    stats.chunks_recut += out.len() as u64;
    Ok(out)
}

fn labels_string(l: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// The output's `thanos` section: the inputs' labels (without replica labels) and resolution,
/// which must agree; `None` when no input has one.
fn merged_thanos(blocks: &[Block], replica_labels: &[String]) -> Result<Option<ThanosMeta>> {
    let key = |b: &Block| {
        let t = b.meta().thanos.as_ref();
        let mut labels = t.and_then(|t| t.labels.clone()).unwrap_or_default();
        labels.retain(|k, _| !replica_labels.contains(k));
        (labels, t.map_or(0, |t| t.downsample.resolution))
    };
    let first = &blocks[0];
    let (labels, res) = key(first);
    for b in &blocks[1..] {
        let (l, r) = key(b);
        if l != labels {
            return Err(Error::LabelsMismatch {
                a: first.meta().ulid.to_string(),
                a_labels: labels_string(&labels),
                b: b.meta().ulid.to_string(),
                b_labels: labels_string(&l),
            });
        }
        if r != res {
            return Err(Error::ResolutionMismatch {
                a: first.meta().ulid.to_string(),
                a_res: res,
                b: b.meta().ulid.to_string(),
                b_res: r,
            });
        }
    }
    if blocks.iter().all(|b| b.meta().thanos.is_none()) {
        return Ok(None);
    }
    Ok(Some(ThanosMeta::new(labels, COMPACTOR_SOURCE, res)))
}

#[cfg(test)]
mod tests;
