//! Writing an index in one pass: symbols (sorted) first, then series in label order; postings
//! are kept in memory as `u32` lists per label pair and written at the end.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{ChunkMeta, INDEX_FORMAT_V2, MAGIC_INDEX, SERIES_ALIGN, Toc};
use crate::encoding::{crc32c, put_be32, put_uvarint, put_uvarint_str, put_varint};
use crate::error::{Error, Result};
use crate::labels::Labels;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Symbols,
    Series,
    Done,
}

/// Writes an index file.
///
/// Call [`add_symbol`](Self::add_symbol) for every label name and value in sorted order, then
/// [`add_series`](Self::add_series) for every series in label-set order, then
/// [`finish`](Self::finish). Memory: the symbol table, and one `u32` per (series, label).
#[derive(Debug)]
pub struct IndexWriter {
    path: PathBuf,
    w: BufWriter<File>,
    pos: u64,
    stage: Stage,
    toc: Toc,
    symbols_buf: Vec<u8>,
    num_symbols: u32,
    last_symbol: Option<String>,
    symbol_ids: HashMap<String, u32>,
    last_series: Option<Labels>,
    last_chunk_ref: u64,
    num_series: u64,
    postings: BTreeMap<(u32, u32), Vec<u32>>,
    all: Vec<u32>,
    series_max_size: u64,
    buf: Vec<u8>,
}

impl IndexWriter {
    /// Creates (truncates) the index file at `path`.
    pub fn new(path: &Path) -> Result<Self> {
        let f = File::create(path).map_err(|e| Error::io(path, e))?;
        let mut w = IndexWriter {
            path: path.to_path_buf(),
            w: BufWriter::with_capacity(1 << 20, f),
            pos: 0,
            stage: Stage::Symbols,
            toc: Toc::default(),
            symbols_buf: Vec::new(),
            num_symbols: 0,
            last_symbol: None,
            symbol_ids: HashMap::new(),
            last_series: None,
            last_chunk_ref: 0,
            num_series: 0,
            postings: BTreeMap::new(),
            all: Vec::new(),
            series_max_size: 0,
            buf: Vec::with_capacity(256),
        };
        let mut h = Vec::with_capacity(5);
        put_be32(&mut h, MAGIC_INDEX);
        h.push(INDEX_FORMAT_V2);
        w.write(&h)?;
        Ok(w)
    }

    fn write(&mut self, b: &[u8]) -> Result<()> {
        self.w.write_all(b).map_err(|e| Error::io(&self.path, e))?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self, align: u64) -> Result<()> {
        let rem = self.pos % align;
        if rem != 0 {
            let zeros = [0u8; 16];
            self.write(&zeros[..(align - rem) as usize])?;
        }
        Ok(())
    }

    /// Adds the next symbol; symbols must be strictly increasing.
    pub fn add_symbol(&mut self, s: &str) -> Result<()> {
        if self.stage != Stage::Symbols {
            return Err(Error::InvalidArgument(
                "symbols must be added before series".into(),
            ));
        }
        if let Some(last) = &self.last_symbol
            && s <= last.as_str()
        {
            return Err(Error::Unsorted {
                what: format!("symbol {s:?} added after {last:?}"),
            });
        }
        put_uvarint_str(&mut self.symbols_buf, s);
        self.symbol_ids.insert(s.to_string(), self.num_symbols);
        self.num_symbols = self
            .num_symbols
            .checked_add(1)
            .ok_or_else(|| Error::InvalidArgument("more than 2^32 symbols".into()))?;
        self.last_symbol = Some(s.to_string());
        Ok(())
    }

    fn finish_symbols(&mut self) -> Result<()> {
        if self.stage != Stage::Symbols {
            return Ok(());
        }
        self.toc.symbols = self.pos;
        let len = u32::try_from(self.symbols_buf.len() + 4)
            .map_err(|_| Error::InvalidArgument("symbol table exceeds 4 GiB".into()))?;
        let mut sec = Vec::with_capacity(self.symbols_buf.len() + 12);
        put_be32(&mut sec, len);
        put_be32(&mut sec, self.num_symbols);
        let crc = crc32c::crc32c_append(crc32c(&sec[4..8]), &self.symbols_buf);
        self.write(&sec)?;
        let body = std::mem::take(&mut self.symbols_buf);
        self.write(&body)?;
        self.write(&crc.to_be_bytes())?;
        self.toc.series = self.pos;
        self.stage = Stage::Series;
        Ok(())
    }

    fn sym(&self, s: &str) -> Result<u32> {
        self.symbol_ids
            .get(s)
            .copied()
            .ok_or_else(|| Error::InvalidArgument(format!("symbol {s:?} was not added")))
    }

    /// Adds the next series with its chunks. Series must be strictly increasing by label set;
    /// chunk refs non-decreasing across the whole index; chunk time ranges ordered and
    /// non-overlapping within a series.
    pub fn add_series(&mut self, labels: &Labels, chunks: &[ChunkMeta]) -> Result<()> {
        if self.stage == Stage::Done {
            return Err(Error::InvalidArgument("index already finished".into()));
        }
        self.finish_symbols()?;
        if labels.is_empty() {
            return Err(Error::InvalidArgument("series without labels".into()));
        }
        if let Some(last) = &self.last_series
            && labels <= last
        {
            return Err(Error::Unsorted {
                what: format!("series {labels} added after {last}"),
            });
        }
        let mut last_ref = self.last_chunk_ref;
        let mut last_maxt = i64::MIN;
        for (i, c) in chunks.iter().enumerate() {
            if c.chunk_ref.0 < last_ref {
                return Err(Error::Unsorted {
                    what: format!(
                        "series {labels}: chunk ref {:#x} after {last_ref:#x}",
                        c.chunk_ref.0
                    ),
                });
            }
            if i > 0 && c.min_time <= last_maxt {
                return Err(Error::Unsorted {
                    what: format!(
                        "series {labels}: chunk mint {} not after previous maxt {last_maxt}",
                        c.min_time
                    ),
                });
            }
            if c.max_time < c.min_time {
                return Err(Error::InvalidArgument(format!(
                    "series {labels}: chunk maxt {} before mint {}",
                    c.max_time, c.min_time
                )));
            }
            last_ref = c.chunk_ref.0;
            last_maxt = c.max_time;
        }

        self.pad(SERIES_ALIGN)?;
        let sref = u32::try_from(self.pos / SERIES_ALIGN)
            .map_err(|_| Error::InvalidArgument("index series section exceeds 64 GiB".into()))?;

        let mut body = std::mem::take(&mut self.buf);
        body.clear();
        put_uvarint(&mut body, labels.len() as u64);
        for (n, v) in labels.iter() {
            let (ni, vi) = (self.sym(n)?, self.sym(v)?);
            put_uvarint(&mut body, u64::from(ni));
            put_uvarint(&mut body, u64::from(vi));
            self.postings.entry((ni, vi)).or_default().push(sref);
        }
        put_uvarint(&mut body, chunks.len() as u64);
        if let Some(first) = chunks.first() {
            put_varint(&mut body, first.min_time);
            put_uvarint(
                &mut body,
                first.max_time.wrapping_sub(first.min_time) as u64,
            );
            put_uvarint(&mut body, first.chunk_ref.0);
            let (mut t0, mut r0) = (first.max_time, first.chunk_ref.0);
            for c in &chunks[1..] {
                put_uvarint(&mut body, c.min_time.wrapping_sub(t0) as u64);
                put_uvarint(&mut body, c.max_time.wrapping_sub(c.min_time) as u64);
                put_varint(&mut body, c.chunk_ref.0.wrapping_sub(r0) as i64);
                t0 = c.max_time;
                r0 = c.chunk_ref.0;
            }
        }
        let mut head = Vec::with_capacity(10);
        put_uvarint(&mut head, body.len() as u64);
        let crc = crc32c(&body);
        self.write(&head)?;
        self.write(&body)?;
        self.write(&crc.to_be_bytes())?;
        self.series_max_size = self
            .series_max_size
            .max((head.len() + body.len() + 4) as u64);
        self.buf = body;

        self.all.push(sref);
        self.last_series = Some(labels.clone());
        self.last_chunk_ref = last_ref;
        self.num_series += 1;
        Ok(())
    }

    /// Number of series added.
    pub fn num_series(&self) -> u64 {
        self.num_series
    }

    /// Size of the largest series entry (what Thanos records as `series_max_size`).
    pub fn series_max_size(&self) -> u64 {
        self.series_max_size
    }

    /// Writes a `len | body | crc` section whose body is `body`.
    fn write_section(&mut self, body: &[u8]) -> Result<()> {
        let len = u32::try_from(body.len())
            .map_err(|_| Error::InvalidArgument("index section exceeds 4 GiB".into()))?;
        self.write(&len.to_be_bytes())?;
        self.write(body)?;
        self.write(&crc32c(body).to_be_bytes())
    }

    /// Writes label indices, the label offset table, postings, the postings offset table and
    /// the TOC; fsyncs. Returns the index size in bytes.
    ///
    /// The label offset table goes before the postings (the TOC points at it), so that the last
    /// postings list ends right where the postings offset table starts, as in indexes Prometheus
    /// writes: Thanos's index-header derives the end of the last postings list from that.
    pub fn finish(mut self) -> Result<u64> {
        self.finish_symbols()?;
        self.stage = Stage::Done;
        let names: Vec<String> = {
            let mut by_id: Vec<(&String, &u32)> = self.symbol_ids.iter().collect();
            by_id.sort_by_key(|(_, id)| **id);
            by_id.into_iter().map(|(s, _)| s.clone()).collect()
        };
        let postings = std::mem::take(&mut self.postings);

        // Label indices (one per label name: its sorted values).
        self.pad(4)?;
        self.toc.label_indices = self.pos;
        let mut label_offsets: Vec<(u32, u64)> = Vec::new();
        let mut i = 0;
        let keys: Vec<(u32, u32)> = postings.keys().copied().collect();
        while i < keys.len() {
            let name = keys[i].0;
            let mut j = i;
            let mut body = Vec::new();
            put_be32(&mut body, 1);
            put_be32(&mut body, 0);
            while j < keys.len() && keys[j].0 == name {
                put_be32(&mut body, keys[j].1);
                j += 1;
            }
            let n = (j - i) as u32;
            body[4..8].copy_from_slice(&n.to_be_bytes());
            self.pad(4)?;
            label_offsets.push((name, self.pos));
            self.write_section(&body)?;
            i = j;
        }

        let sym = |id: u32| -> &str { names.get(id as usize).map_or("", String::as_str) };

        // Label offset table.
        self.toc.label_offset_table = self.pos;
        let mut body = Vec::new();
        put_be32(&mut body, label_offsets.len() as u32);
        for (name, off) in &label_offsets {
            put_uvarint(&mut body, 1);
            put_uvarint_str(&mut body, sym(*name));
            put_uvarint(&mut body, *off);
        }
        self.write_section(&body)?;

        // Postings: all series first, then every label pair in order.
        self.pad(4)?;
        self.toc.postings = self.pos;
        let mut posting_offsets: Vec<(Option<(u32, u32)>, u64)> =
            Vec::with_capacity(postings.len() + 1);
        let all = std::mem::take(&mut self.all);
        for (key, list) in
            std::iter::once((None, &all)).chain(postings.iter().map(|(k, v)| (Some(*k), v)))
        {
            self.pad(4)?;
            posting_offsets.push((key, self.pos));
            let mut body = Vec::with_capacity(4 + list.len() * 4);
            put_be32(&mut body, list.len() as u32);
            for &r in list {
                put_be32(&mut body, r);
            }
            self.write_section(&body)?;
        }

        // Postings offset table.
        self.toc.postings_offset_table = self.pos;
        let mut body = Vec::new();
        put_be32(&mut body, posting_offsets.len() as u32);
        for (key, off) in &posting_offsets {
            put_uvarint(&mut body, 2);
            let (n, v) = key.map_or(("", ""), |(n, v)| (sym(n), sym(v)));
            put_uvarint_str(&mut body, n);
            put_uvarint_str(&mut body, v);
            put_uvarint(&mut body, *off);
        }
        self.write_section(&body)?;

        // TOC.
        let t = self.toc;
        let mut toc = Vec::with_capacity(52);
        for v in [
            t.symbols,
            t.series,
            t.label_indices,
            t.label_offset_table,
            t.postings,
            t.postings_offset_table,
        ] {
            toc.extend_from_slice(&v.to_be_bytes());
        }
        let crc = crc32c(&toc);
        toc.extend_from_slice(&crc.to_be_bytes());
        self.write(&toc)?;

        let path = self.path.clone();
        let f = self
            .w
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io(&path, e))?;
        Ok(self.pos)
    }
}
