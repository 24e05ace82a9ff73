//! Writing an index in one pass: symbols (sorted) first, then series in label order; postings
//! are gathered as `u32` lists per label pair (in memory up to a budget, then spilled to sorted
//! runs beside the index) and written at the end.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::spill::{Key, Postings};
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
/// [`finish`](Self::finish). Memory: the symbol table, the last series, and at most
/// [`DEFAULT_POSTINGS_BUDGET`] (or the budget given) postings entries of 4 bytes; beyond that
/// the postings go to sorted runs in `<index>.postings.tmp`, merged by `finish`.
#[derive(Debug)]
pub struct IndexWriter {
    path: PathBuf,
    w: BufWriter<File>,
    pos: u64,
    stage: Stage,
    toc: Toc,
    symbols_buf: Vec<u8>,
    /// Symbols in the order added (sorted): a symbol's id is its index.
    symbols: Vec<String>,
    last_series: Vec<(u32, u32)>,
    last_chunk_ref: u64,
    num_series: u64,
    postings: Postings,
    series_max_size: u64,
    buf: Vec<u8>,
}

/// Postings entries (one per series and label, plus one per series) an [`IndexWriter`] holds
/// in memory before spilling them: 4 Mi entries, 16 MiB of series refs.
pub const DEFAULT_POSTINGS_BUDGET: usize = 4 << 20;

impl IndexWriter {
    /// Creates (truncates) the index file at `path`.
    pub fn new(path: &Path) -> Result<Self> {
        Self::with_postings_budget(path, DEFAULT_POSTINGS_BUDGET)
    }

    /// Like [`new`](Self::new), holding at most `budget` postings entries in memory.
    pub fn with_postings_budget(path: &Path, budget: usize) -> Result<Self> {
        let f = File::create(path).map_err(|e| Error::io(path, e))?;
        let mut spill = path.as_os_str().to_owned();
        spill.push(".postings.tmp");
        let mut w = IndexWriter {
            path: path.to_path_buf(),
            w: BufWriter::with_capacity(1 << 20, f),
            pos: 0,
            stage: Stage::Symbols,
            toc: Toc::default(),
            symbols_buf: Vec::new(),
            symbols: Vec::new(),
            last_series: Vec::new(),
            last_chunk_ref: 0,
            num_series: 0,
            postings: Postings::new(PathBuf::from(spill), budget),
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
        if let Some(last) = self.symbols.last()
            && s <= last.as_str()
        {
            return Err(Error::Unsorted {
                what: format!("symbol {s:?} added after {last:?}"),
            });
        }
        if self.symbols.len() >= u32::MAX as usize {
            return Err(Error::InvalidArgument("more than 2^32 symbols".into()));
        }
        put_uvarint_str(&mut self.symbols_buf, s);
        self.symbols.push(s.to_string());
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
        put_be32(&mut sec, self.symbols.len() as u32);
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
        self.symbols
            .binary_search_by(|x| x.as_str().cmp(s))
            .map(|i| i as u32)
            .map_err(|_| Error::InvalidArgument(format!("symbol {s:?} was not added")))
    }

    /// The series with symbol ids `ids`, for messages.
    fn describe(&self, ids: &[(u32, u32)]) -> String {
        let s = |i: u32| self.symbols.get(i as usize).map_or("?", String::as_str);
        Labels::from_sorted(
            ids.iter()
                .map(|&(n, v)| (s(n).to_string(), s(v).to_string()))
                .collect(),
        )
        .to_string()
    }

    /// Adds the next series with its chunks. Series must be strictly increasing by label set;
    /// chunk refs non-decreasing across the whole index; chunk time ranges ordered and
    /// non-overlapping within a series.
    pub fn add_series(&mut self, labels: &Labels, chunks: &[ChunkMeta]) -> Result<()> {
        self.finish_symbols()?;
        let ids = labels
            .iter()
            .map(|(n, v)| Ok((self.sym(n)?, self.sym(v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.add_series_symbols(&ids, chunks)
    }

    /// [`add_series`](Self::add_series) with the labels given as (name, value) symbol ids
    /// (positions in the sorted symbol table), sorted by name. Saves the writer looking each
    /// string up when the caller already knows the ids.
    pub fn add_series_symbols(&mut self, ids: &[(u32, u32)], chunks: &[ChunkMeta]) -> Result<()> {
        if self.stage == Stage::Done {
            return Err(Error::InvalidArgument("index already finished".into()));
        }
        self.finish_symbols()?;
        if ids.is_empty() {
            return Err(Error::InvalidArgument("series without labels".into()));
        }
        let n_sym = self.symbols.len();
        if let Some(&(n, v)) = ids
            .iter()
            .find(|&&(n, v)| n as usize >= n_sym || v as usize >= n_sym)
        {
            return Err(Error::InvalidArgument(format!(
                "symbol id {} not in the table of {n_sym} symbols",
                n.max(v)
            )));
        }
        if ids.windows(2).any(|w| w[1].0 <= w[0].0) {
            return Err(Error::Unsorted {
                what: format!(
                    "series {}: label names not sorted and unique",
                    self.describe(ids)
                ),
            });
        }
        // Ids are ranks in the sorted symbol table, so comparing them compares the strings.
        if self.num_series > 0 && ids <= self.last_series.as_slice() {
            return Err(Error::Unsorted {
                what: format!(
                    "series {} added after {}",
                    self.describe(ids),
                    self.describe(&self.last_series)
                ),
            });
        }
        let mut last_ref = self.last_chunk_ref;
        let mut last_maxt = i64::MIN;
        for (i, c) in chunks.iter().enumerate() {
            if c.chunk_ref.0 < last_ref {
                return Err(Error::Unsorted {
                    what: format!(
                        "series {}: chunk ref {:#x} after {last_ref:#x}",
                        self.describe(ids),
                        c.chunk_ref.0
                    ),
                });
            }
            if i > 0 && c.min_time <= last_maxt {
                return Err(Error::Unsorted {
                    what: format!(
                        "series {}: chunk mint {} not after previous maxt {last_maxt}",
                        self.describe(ids),
                        c.min_time
                    ),
                });
            }
            if c.max_time < c.min_time {
                return Err(Error::InvalidArgument(format!(
                    "series {}: chunk maxt {} before mint {}",
                    self.describe(ids),
                    c.max_time,
                    c.min_time
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
        put_uvarint(&mut body, ids.len() as u64);
        for &(n, v) in ids {
            put_uvarint(&mut body, u64::from(n));
            put_uvarint(&mut body, u64::from(v));
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

        self.postings.push(None, sref)?;
        for &(n, v) in ids {
            self.postings.push(Some((n, v)), sref)?;
        }
        self.last_series.clear();
        self.last_series.extend_from_slice(ids);
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

    fn symbol(&self, id: u32) -> &str {
        self.symbols.get(id as usize).map_or("", String::as_str)
    }

    /// Writes the label index section of label name `name` (its count patched into `body`).
    fn write_label_index(
        &mut self,
        name: u32,
        body: &mut [u8],
        offsets: &mut Vec<(u32, u64)>,
    ) -> Result<()> {
        let n = ((body.len() - 8) / 4) as u32;
        body[4..8].copy_from_slice(&n.to_be_bytes());
        self.pad(4)?;
        offsets.push((name, self.pos));
        self.write_section(body)
    }

    /// Number of sorted postings runs spilled to disk so far (0 when they fit the budget).
    pub fn postings_runs(&self) -> usize {
        self.postings.runs()
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
        let mut postings = std::mem::replace(&mut self.postings, Postings::new(PathBuf::new(), 1));

        // Label indices (one per label name: its sorted values), from the keys alone.
        self.pad(4)?;
        self.toc.label_indices = self.pos;
        let mut label_offsets: Vec<(u32, u64)> = Vec::new();
        let mut cur: Option<u32> = None;
        let mut body: Vec<u8> = Vec::new();
        postings.visit(false, &mut |key, _| {
            let Some((name, value)) = key else {
                return Ok(());
            };
            if cur != Some(name) {
                if let Some(prev) = cur {
                    self.write_label_index(prev, &mut body, &mut label_offsets)?;
                }
                cur = Some(name);
                body.clear();
                put_be32(&mut body, 1);
                put_be32(&mut body, 0);
            }
            put_be32(&mut body, value);
            Ok(())
        })?;
        if let Some(prev) = cur {
            self.write_label_index(prev, &mut body, &mut label_offsets)?;
        }

        // Label offset table.
        self.toc.label_offset_table = self.pos;
        let mut body = Vec::new();
        put_be32(&mut body, label_offsets.len() as u32);
        for (name, off) in &label_offsets {
            put_uvarint(&mut body, 1);
            put_uvarint_str(&mut body, self.symbol(*name));
            put_uvarint(&mut body, *off);
        }
        self.write_section(&body)?;

        // Postings: all series first (the `None` key sorts first), then every label pair.
        self.pad(4)?;
        self.toc.postings = self.pos;
        let mut posting_offsets: Vec<(Key, u64)> = Vec::new();
        let mut body = Vec::new();
        let mut wrote_all = false;
        postings.visit(true, &mut |key, list| {
            if !wrote_all && key.is_some() {
                // No series: the list of all series is still written, empty.
                self.pad(4)?;
                posting_offsets.push((None, self.pos));
                self.write_section(&0u32.to_be_bytes())?;
            }
            wrote_all = true;
            self.pad(4)?;
            posting_offsets.push((key, self.pos));
            body.clear();
            put_be32(&mut body, list.len() as u32);
            for &r in list {
                put_be32(&mut body, r);
            }
            self.write_section(&body)
        })?;
        if !wrote_all {
            self.pad(4)?;
            posting_offsets.push((None, self.pos));
            self.write_section(&0u32.to_be_bytes())?;
        }
        drop(postings);

        // Postings offset table.
        self.toc.postings_offset_table = self.pos;
        let mut body = Vec::new();
        put_be32(&mut body, posting_offsets.len() as u32);
        for (key, off) in &posting_offsets {
            put_uvarint(&mut body, 2);
            let (n, v) = key.map_or(("", ""), |(n, v)| (self.symbol(n), self.symbol(v)));
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
