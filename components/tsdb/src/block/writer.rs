//! Writing a block: chunks are streamed to segment files as series arrive; the series' labels
//! and chunk metas are spilled to a temporary file and turned into the index at the end, once
//! every symbol is known.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ulid::Ulid;

use super::cut::{cut_float_chunks, cut_float_histogram_chunks, cut_histogram_chunks};
use super::{CHUNKS_DIRNAME, INDEX_FILENAME};
use crate::chunkenc::{Chunk, Encoding, FloatHistogram, Histogram};
use crate::chunks::{DEFAULT_SEGMENT_SIZE, SegmentWriter};
use crate::encoding::{put_uvarint, put_varint};
use crate::error::{Error, Result};
use crate::index::{ChunkMeta, DEFAULT_POSTINGS_BUDGET, IndexWriter};
use crate::labels::Labels;
use crate::meta::{BlockMeta, BlockMetaCompaction, ThanosMeta, sync_dir};
use crate::tombstones::Tombstones;

/// Default chunk range: 2 h, Prometheus's block (and head chunk) range.
pub const DEFAULT_CHUNK_RANGE_MS: i64 = 2 * 60 * 60 * 1000;
/// Default target samples per chunk, as Prometheus.
pub const DEFAULT_SAMPLES_PER_CHUNK: usize = 120;
/// Suffix of the directory a block is written into before it is renamed into place.
pub const TMP_FOR_CREATION_SUFFIX: &str = ".tmp-for-creation";
const SPILL_FILENAME: &str = "index.series.tmp";

/// Options of a [`BlockWriter`]; `Default` gives Prometheus's values.
#[derive(Debug, Clone)]
pub struct BlockWriterOptions {
    /// Chunk range in ms (Prometheus's head chunk range; `promtool tsdb create-blocks-from`
    /// uses the block duration). Chunks are cut at multiples of it and, within it, spread
    /// evenly. Default 2 h.
    pub chunk_range: i64,
    /// Target samples per chunk (min 4). Default 120.
    pub samples_per_chunk: usize,
    /// Maximum chunk segment size. Default 512 MiB.
    pub segment_size: u64,
    /// Block id; a new ULID (current time) when `None`.
    pub ulid: Option<Ulid>,
    /// Thanos section to write into `meta.json` (its `index_stats` are filled in).
    pub thanos: Option<ThanosMeta>,
    /// Postings entries the index writer holds in memory before spilling sorted runs into the
    /// block's temporary directory. Default [`DEFAULT_POSTINGS_BUDGET`] (16 MiB of refs).
    pub postings_budget: usize,
}

impl Default for BlockWriterOptions {
    fn default() -> Self {
        BlockWriterOptions {
            chunk_range: DEFAULT_CHUNK_RANGE_MS,
            samples_per_chunk: DEFAULT_SAMPLES_PER_CHUNK,
            segment_size: DEFAULT_SEGMENT_SIZE,
            ulid: None,
            thanos: None,
            postings_budget: DEFAULT_POSTINGS_BUDGET,
        }
    }
}

/// Writes one block. Add series in strictly increasing label order, then call
/// [`finish`](Self::finish). Dropping an unfinished writer removes its temporary directory.
#[derive(Debug)]
pub struct BlockWriter {
    parent: PathBuf,
    ulid: Ulid,
    tmp: PathBuf,
    opts: BlockWriterOptions,
    segments: Option<SegmentWriter>,
    spill: Option<BufWriter<File>>,
    spill_path: PathBuf,
    intern: HashMap<String, u32>,
    strings: Vec<String>,
    last: Option<Labels>,
    min_time: i64,
    max_time: i64,
    meta: BlockMeta,
    chunk_max_size: u64,
    done: bool,
    buf: Vec<u8>,
    time_range: Option<(i64, i64)>,
}

impl BlockWriter {
    /// Starts a block under `parent_dir` (created if missing), in `<ulid>.tmp-for-creation`.
    pub fn new(parent_dir: impl AsRef<Path>, opts: BlockWriterOptions) -> Result<Self> {
        if opts.chunk_range <= 0 {
            return Err(Error::InvalidArgument(
                "chunk range must be positive".into(),
            ));
        }
        if opts.samples_per_chunk < 4 {
            return Err(Error::InvalidArgument(
                "samples per chunk must be at least 4".into(),
            ));
        }
        let parent = parent_dir.as_ref().to_path_buf();
        let ulid = match opts.ulid {
            Some(u) => u,
            None => {
                let ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                Ulid::from_parts(ms, rand_u128())
            }
        };
        let tmp = parent.join(format!("{ulid}{TMP_FOR_CREATION_SUFFIX}"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let segments = SegmentWriter::new(&tmp.join(CHUNKS_DIRNAME), opts.segment_size)?;
        let spill_path = tmp.join(SPILL_FILENAME);
        let spill = BufWriter::with_capacity(
            1 << 20,
            File::create(&spill_path).map_err(|e| Error::io(&spill_path, e))?,
        );
        Ok(BlockWriter {
            parent,
            ulid,
            tmp,
            meta: BlockMeta::new(ulid, 0, 0),
            opts,
            segments: Some(segments),
            spill: Some(spill),
            spill_path,
            intern: HashMap::new(),
            strings: Vec::new(),
            last: None,
            min_time: i64::MAX,
            max_time: i64::MIN,
            chunk_max_size: 0,
            done: false,
            buf: Vec::with_capacity(256),
            time_range: None,
        })
    }

    /// The block's id.
    pub fn ulid(&self) -> Ulid {
        self.ulid
    }

    /// Sets the `compaction` section written into `meta.json` (by default level 1 with this
    /// block as its only source), as a compactor does for the block it writes.
    pub fn set_compaction(&mut self, compaction: BlockMetaCompaction) {
        self.meta.compaction = compaction;
    }

    /// Sets the `[min_time, max_time)` range written into `meta.json` in place of the range
    /// of the samples added, as a compactor does (the inputs' range).
    pub fn set_time_range(&mut self, min_time: i64, max_time: i64) {
        self.time_range = Some((min_time, max_time));
    }

    /// Samples added so far (for aggregate chunks: aggregation windows).
    pub fn num_samples(&self) -> u64 {
        self.meta.stats.num_samples
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.intern.get(s) {
            return i;
        }
        let i = self.strings.len() as u32;
        self.strings.push(s.to_string());
        self.intern.insert(s.to_string(), i);
        i
    }

    fn check_order(&self, labels: &Labels) -> Result<()> {
        if labels.is_empty() {
            return Err(Error::InvalidArgument("series without labels".into()));
        }
        if let Some(last) = &self.last
            && labels <= last
        {
            return Err(Error::Unsorted {
                what: format!("series {labels} added after {last}"),
            });
        }
        Ok(())
    }

    /// Adds a float series. Timestamps must be strictly increasing. Samples are cut into XOR
    /// chunks like Prometheus's head does. A series without samples is skipped (but still
    /// counts for ordering).
    pub fn add_series(&mut self, labels: &Labels, samples: &[(i64, f64)]) -> Result<()> {
        self.check_order(labels)?;
        check_times(labels, samples.iter().map(|s| s.0))?;
        let chunks = cut_float_chunks(samples, self.opts.chunk_range, self.opts.samples_per_chunk)?;
        self.add_series_chunks(labels, chunks)
    }

    /// Adds an integer native histogram series. Timestamps must be strictly increasing. Chunks
    /// are cut like Prometheus's head cuts them (1 KiB target, at least 10 samples, chunk range
    /// boundaries), and also on counter resets and bucket layout changes (Prometheus would
    /// re-code the chunk to a merged layout instead; both are valid).
    pub fn add_histogram_series(
        &mut self,
        labels: &Labels,
        samples: &[(i64, Histogram)],
    ) -> Result<()> {
        self.check_order(labels)?;
        check_times(labels, samples.iter().map(|s| s.0))?;
        let chunks = cut_histogram_chunks(samples, self.opts.chunk_range)?;
        self.add_series_chunks(labels, chunks)
    }

    /// Adds a float native histogram series; see [`Self::add_histogram_series`].
    pub fn add_float_histogram_series(
        &mut self,
        labels: &Labels,
        samples: &[(i64, FloatHistogram)],
    ) -> Result<()> {
        self.check_order(labels)?;
        check_times(labels, samples.iter().map(|s| s.0))?;
        let chunks = cut_float_histogram_chunks(samples, self.opts.chunk_range)?;
        self.add_series_chunks(labels, chunks)
    }

    /// Adds a series from already encoded chunks (any encoding), each with its min and max
    /// sample time. Chunks must be in time order without overlap.
    pub fn add_series_chunks(
        &mut self,
        labels: &Labels,
        chunks: Vec<(Chunk, i64, i64)>,
    ) -> Result<()> {
        self.check_order(labels)?;
        self.last = Some(labels.clone());
        if chunks.is_empty() {
            return Ok(());
        }
        for w in chunks.windows(2) {
            if w[1].1 <= w[0].2 {
                return Err(Error::Unsorted {
                    what: format!(
                        "series {labels}: chunk starting {} overlaps chunk ending {}",
                        w[1].1, w[0].2
                    ),
                });
            }
        }
        let Some(segments) = self.segments.as_mut() else {
            return Err(Error::InvalidArgument(
                "block writer already finished".into(),
            ));
        };
        let mut metas = Vec::with_capacity(chunks.len());
        for (c, mn, mx) in &chunks {
            if mx < mn {
                return Err(Error::InvalidArgument(format!(
                    "series {labels}: chunk max time {mx} before min time {mn}"
                )));
            }
            let r = segments.write_chunk(c.encoding(), c.data())?;
            metas.push(ChunkMeta {
                min_time: *mn,
                max_time: *mx,
                chunk_ref: r,
            });
            let n = if c.encoding() == Encoding::Aggr {
                aggr_windows(c)
            } else {
                u64::from(c.num_samples())
            };
            self.meta.stats.num_samples += n;
            match c.encoding() {
                // Aggregate windows count as samples only, as Thanos counts them.
                Encoding::Aggr => {}
                Encoding::Xor | Encoding::Xor2 => self.meta.stats.num_float_samples += n,
                _ => self.meta.stats.num_histogram_samples += n,
            }
            self.chunk_max_size = self.chunk_max_size.max(c.data().len() as u64 + 1);
            self.min_time = self.min_time.min(*mn);
            self.max_time = self.max_time.max(*mx);
        }
        self.meta.stats.num_chunks += metas.len() as u64;
        self.meta.stats.num_series += 1;

        let mut b = std::mem::take(&mut self.buf);
        b.clear();
        put_uvarint(&mut b, labels.len() as u64);
        for (n, v) in labels.iter() {
            let (ni, vi) = (self.intern(n), self.intern(v));
            put_uvarint(&mut b, u64::from(ni));
            put_uvarint(&mut b, u64::from(vi));
        }
        put_uvarint(&mut b, metas.len() as u64);
        for m in &metas {
            put_varint(&mut b, m.min_time);
            put_varint(&mut b, m.max_time);
            put_uvarint(&mut b, m.chunk_ref.0);
        }
        let mut len = Vec::with_capacity(10);
        put_uvarint(&mut len, b.len() as u64);
        let spill = self
            .spill
            .as_mut()
            .ok_or_else(|| Error::InvalidArgument("block writer already finished".into()))?;
        spill
            .write_all(&len)
            .and_then(|_| spill.write_all(&b))
            .map_err(|e| Error::io(&self.spill_path, e))?;
        self.buf = b;
        Ok(())
    }

    /// Writes the index, tombstones and meta.json, fsyncs, and renames the directory to
    /// `<parent>/<ulid>`. Errors if no samples were added (Prometheus writes no empty blocks).
    pub fn finish(mut self) -> Result<Ulid> {
        if self.meta.stats.num_samples == 0 {
            return Err(Error::InvalidArgument("block has no samples".into()));
        }
        if let Some(s) = self.spill.take() {
            let f = s
                .into_inner()
                .map_err(|e| Error::io(&self.spill_path, e.into_error()))?;
            drop(f);
        }

        // The chunk segments are flushed and fsynced on another thread while the index is built.
        let segments = self.segments.take();
        let (segments_done, index_done) = std::thread::scope(|scope| {
            let sync = scope.spawn(move || segments.map_or(Ok(Vec::new()), SegmentWriter::finish));
            let index = self.write_index();
            let synced = sync.join().unwrap_or_else(|_| {
                Err(Error::InvalidArgument(
                    "segment fsync thread panicked".into(),
                ))
            });
            (synced, index)
        });
        segments_done?;
        let series_max_size = index_done?;
        fs::remove_file(&self.spill_path).map_err(|e| Error::io(&self.spill_path, e))?;

        Tombstones::new().write_to_dir(&self.tmp)?;

        (self.meta.min_time, self.meta.max_time) = self
            .time_range
            .unwrap_or((self.min_time, self.max_time.saturating_add(1)));
        if let Some(mut t) = self.opts.thanos.clone() {
            let stats = t.index_stats.get_or_insert_with(Default::default);
            stats.series_max_size = series_max_size as i64;
            stats.chunk_max_size = self.chunk_max_size as i64;
            self.meta.thanos = Some(t);
        }
        sync_dir(&self.tmp)?;
        self.meta.write_to_dir(&self.tmp)?;

        let dst = self.parent.join(self.ulid.to_string());
        if dst.exists() {
            fs::remove_dir_all(&dst).map_err(|e| Error::io(&dst, e))?;
        }
        fs::rename(&self.tmp, &dst).map_err(|e| Error::io(&dst, e))?;
        sync_dir(&self.parent)?;
        self.done = true;
        Ok(self.ulid)
    }

    /// Writes the index: symbols in order (moved into the index writer, not copied), then the
    /// series replayed from the spill file with their strings' ranks in that order as symbol
    /// ids. Returns the largest series entry's size.
    fn write_index(&mut self) -> Result<u64> {
        self.intern = HashMap::new();
        let mut order: Vec<u32> = (0..self.strings.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.strings[a as usize].cmp(&self.strings[b as usize]));
        let mut rank = vec![0u32; order.len()];
        let index_path = self.tmp.join(INDEX_FILENAME);
        let mut iw = IndexWriter::with_postings_budget(&index_path, self.opts.postings_budget)?;
        let mut strings = std::mem::take(&mut self.strings);
        for (r, &i) in order.iter().enumerate() {
            rank[i as usize] = r as u32;
            iw.add_symbol(&std::mem::take(&mut strings[i as usize]))?;
        }
        drop((order, strings));
        self.replay_spill(&mut iw, &rank)?;
        let series_max_size = iw.series_max_size();
        iw.finish()?;
        Ok(series_max_size)
    }

    fn replay_spill(&self, iw: &mut IndexWriter, rank: &[u32]) -> Result<()> {
        let p = &self.spill_path;
        let name = p.display().to_string();
        let mut r = BufReader::with_capacity(1 << 20, File::open(p).map_err(|e| Error::io(p, e))?);
        let mut data = Vec::new();
        let mut ids = Vec::new();
        let mut metas = Vec::new();
        let id = |i: u64| {
            rank.get(i as usize).copied().ok_or_else(|| {
                Error::InvalidArgument(format!("spill file refers to unknown string {i}"))
            })
        };
        while let Some(len) = read_uvarint(&mut r).map_err(|e| Error::io(p, e))? {
            data.resize(len as usize, 0);
            r.read_exact(&mut data).map_err(|e| Error::io(p, e))?;
            let mut c = crate::encoding::Cursor::new(&name, &data, 0);
            let nl = c.uvarint("labels")?;
            ids.clear();
            for _ in 0..nl {
                let n = id(c.uvarint("name")?)?;
                let v = id(c.uvarint("value")?)?;
                ids.push((n, v));
            }
            let nc = c.uvarint("chunks")?;
            metas.clear();
            for _ in 0..nc {
                metas.push(ChunkMeta {
                    min_time: c.varint("mint")?,
                    max_time: c.varint("maxt")?,
                    chunk_ref: crate::chunks::ChunkRef(c.uvarint("ref")?),
                });
            }
            iw.add_series_symbols(&ids, &metas)?;
        }
        Ok(())
    }
}

/// Windows in an aggregate chunk: the sample count of its count sub-chunk (0 if absent or bad).
fn aggr_windows(c: &Chunk) -> u64 {
    crate::chunkenc::aggr::decode(c.data())
        .ok()
        .and_then(|subs| subs[0].clone())
        .map_or(0, |(enc, data)| {
            Chunk::new(enc, data).map_or(0, |c| u64::from(c.num_samples()))
        })
}

fn check_times(labels: &Labels, ts: impl Iterator<Item = i64>) -> Result<()> {
    let mut prev: Option<i64> = None;
    for t in ts {
        if let Some(p) = prev
            && t <= p
        {
            return Err(Error::Unsorted {
                what: format!("series {labels}: sample at {t} after {p}"),
            });
        }
        prev = Some(t);
    }
    Ok(())
}

impl Drop for BlockWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Reads a uvarint from a stream; `None` at a clean end of stream.
fn read_uvarint(r: &mut impl Read) -> std::io::Result<Option<u64>> {
    let mut x = 0u64;
    let mut s = 0u32;
    for i in 0..10 {
        let mut b = [0u8; 1];
        if r.read(&mut b)? == 0 {
            if i == 0 {
                return Ok(None);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if b[0] < 0x80 {
            return Ok(Some(x | (u64::from(b[0]) << s)));
        }
        x |= u64::from(b[0] & 0x7f) << s;
        s += 7;
    }
    Err(std::io::ErrorKind::InvalidData.into())
}

/// Randomness for new ULIDs without a RNG dependency: std's randomly seeded hasher.
fn rand_u128() -> u128 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut out = 0u128;
    for i in 0..2u64 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(i);
        out = (out << 64) | u128::from(h.finish());
    }
    out & ((1u128 << 80) - 1)
}
