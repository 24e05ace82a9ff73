//! Whole blocks: [`Block`] opens a block directory for reading, [`BlockWriter`] writes one,
//! [`verify`] checks one end to end.

pub mod cut;
mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use verify::{Report, verify};
pub use writer::{
    BlockWriter, BlockWriterOptions, DEFAULT_CHUNK_RANGE_MS, DEFAULT_SAMPLES_PER_CHUNK,
};

use crate::chunkenc::{Chunk, Sample};
use crate::chunks::{ChunkRef, ChunksReader};
use crate::error::Result;
use crate::index::{IndexReader, SeriesRef};
use crate::labels::Labels;
use crate::matcher::Matcher;
use crate::meta::BlockMeta;
use crate::source::{ByteSource, MmapSource};
use crate::tombstones::Tombstones;

/// File name of the index inside a block.
pub const INDEX_FILENAME: &str = "index";
/// Directory of the chunk segments inside a block.
pub const CHUNKS_DIRNAME: &str = "chunks";

/// An open block directory.
#[derive(Debug)]
pub struct Block {
    dir: PathBuf,
    meta: BlockMeta,
    index: IndexReader,
    chunks: ChunksReader,
    tombstones: Tombstones,
}

/// A series with its samples, as [`Block::select`] yields it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    /// The series reference in this block's index.
    pub series_ref: SeriesRef,
    /// Labels.
    pub labels: Labels,
    /// Samples in time order, restricted to the requested range, tombstones applied.
    pub samples: Vec<Sample>,
}

impl Block {
    /// Opens `dir`: reads `meta.json`, maps `index` and `chunks/*`, reads `tombstones`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let meta = BlockMeta::read_from_dir(&dir)?;
        let src: Arc<dyn ByteSource> = Arc::new(MmapSource::open(&dir.join(INDEX_FILENAME))?);
        let index = IndexReader::open(src)?;
        let chunks = ChunksReader::open_dir(&dir.join(CHUNKS_DIRNAME))?;
        let tombstones = Tombstones::read_from_dir(&dir)?;
        Ok(Block {
            dir,
            meta,
            index,
            chunks,
            tombstones,
        })
    }

    /// The block directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `meta.json`.
    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    /// The index.
    pub fn index(&self) -> &IndexReader {
        &self.index
    }

    /// The chunk segments.
    pub fn chunks(&self) -> &ChunksReader {
        &self.chunks
    }

    /// Deleted intervals.
    pub fn tombstones(&self) -> &Tombstones {
        &self.tombstones
    }

    /// Reads one chunk.
    pub fn chunk(&self, r: ChunkRef) -> Result<Chunk> {
        self.chunks.chunk(r)
    }

    /// Series matching all `matchers` that have samples in `[mint, maxt]` (inclusive), in
    /// index order, with their samples decoded. Deleted samples (tombstones) are left out.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<SeriesIter<'_>> {
        let refs = self.index.postings_for_matchers(matchers)?;
        Ok(SeriesIter {
            block: self,
            refs: refs.into_iter(),
            mint,
            maxt,
        })
    }

    /// Reads series `r` and its samples in `[mint, maxt]`.
    pub fn series_samples(&self, r: SeriesRef, mint: i64, maxt: i64) -> Result<SeriesSamples> {
        let (labels, metas) = self.index.series(r)?;
        let deleted = self.tombstones.get(r);
        let mut samples = Vec::new();
        for m in metas
            .iter()
            .filter(|m| m.max_time >= mint && m.min_time <= maxt)
        {
            let chunk = self.chunks.chunk(m.chunk_ref).map_err(|e| e.in_series(r))?;
            for s in chunk.iter() {
                let s = s.map_err(|e| locate(e, m.chunk_ref, &chunk).in_series(r))?;
                let t = s.t();
                if t < mint || t > maxt || deleted.iter().any(|iv| iv.contains(t)) {
                    continue;
                }
                samples.push(s);
            }
        }
        Ok(SeriesSamples {
            series_ref: r,
            labels,
            samples,
        })
    }
}

/// Rewrites a chunk decoding error (whose offsets are relative to the chunk data) to name the
/// segment file and the absolute offset.
pub(crate) fn locate(e: crate::Error, r: ChunkRef, chunk: &Chunk) -> crate::Error {
    let mut len = Vec::new();
    crate::encoding::put_uvarint(&mut len, chunk.data().len() as u64);
    let data_off = u64::from(r.offset()) + len.len() as u64 + 1;
    e.with_file(
        &format!(
            "{CHUNKS_DIRNAME}/{}",
            crate::chunks::segment_file_name(r.segment() + 1)
        ),
        data_off,
    )
}

/// Iterator returned by [`Block::select`].
#[derive(Debug)]
pub struct SeriesIter<'a> {
    block: &'a Block,
    refs: std::vec::IntoIter<SeriesRef>,
    mint: i64,
    maxt: i64,
}

impl Iterator for SeriesIter<'_> {
    type Item = Result<SeriesSamples>;

    fn next(&mut self) -> Option<Self::Item> {
        for r in self.refs.by_ref() {
            match self.block.series_samples(r, self.mint, self.maxt) {
                Ok(s) if s.samples.is_empty() => continue,
                other => return Some(other),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
