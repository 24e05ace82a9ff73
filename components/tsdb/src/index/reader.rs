//! Reading an index over a [`ByteSource`].

use std::sync::Arc;

use bytes::Bytes;

use super::postings::union_all;
use super::tables::{PostingsTable, Symbols, decode_series_entry, series_entry_size};
use super::{
    ChunkMeta, HEADER_LEN, INDEX_FORMAT_V2, INDEX_FORMAT_V3, MAGIC_INDEX, SERIES_ALIGN, SeriesRef,
    TOC_LEN, Toc,
};
use crate::encoding::{Cursor, check_crc};
use crate::error::{Error, Result};
use crate::labels::Labels;
use crate::matcher::Matcher;
use crate::source::ByteSource;

/// A reader for an index file (format v2; v3 is read the same way).
///
/// Opening reads the header, the TOC, the symbol table and the postings offset table and checks
/// their CRC32C; series and postings lists are read (and checked) on demand.
pub struct IndexReader {
    src: Arc<dyn ByteSource>,
    name: String,
    version: u8,
    toc: Toc,
    symbols: Symbols,
    pot: PostingsTable,
}

impl std::fmt::Debug for IndexReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexReader")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("toc", &self.toc)
            .field("symbols", &self.symbols.len())
            .finish()
    }
}

/// Reads a `len(4) | body | crc(4)` section at `off`; returns the body and its file offset.
fn read_section(src: &dyn ByteSource, off: u64, what: &'static str) -> Result<(Bytes, u64)> {
    let name = src.name();
    let size = src.len();
    if off.checked_add(4).is_none_or(|e| e > size) {
        return Err(Error::Truncated {
            file: name.to_string(),
            offset: off,
            what,
        });
    }
    let l = src.read_range(off, 4)?;
    let len = u64::from(u32::from_be_bytes([l[0], l[1], l[2], l[3]]));
    if off + 4 + len + 4 > size {
        return Err(Error::TooLarge {
            file: name.to_string(),
            offset: off,
            what,
            len,
        });
    }
    let b = src.read_range(off + 4, len as usize + 4)?;
    check_crc(name, off, &b[..len as usize], &b[len as usize..])?;
    Ok((b.slice(..len as usize), off + 4))
}

impl IndexReader {
    /// Opens an index over `src`.
    pub fn open(src: Arc<dyn ByteSource>) -> Result<Self> {
        let name = src.name().to_string();
        let size = src.len();
        if size < HEADER_LEN + TOC_LEN {
            return Err(Error::Truncated {
                file: name,
                offset: 0,
                what: "index header and TOC",
            });
        }
        let h = src.read_range(0, HEADER_LEN as usize)?;
        let magic = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        if magic != MAGIC_INDEX {
            return Err(Error::BadMagic {
                file: name,
                expected: MAGIC_INDEX,
                actual: magic,
            });
        }
        let version = h[4];
        if version != INDEX_FORMAT_V2 && version != INDEX_FORMAT_V3 {
            return Err(Error::BadVersion {
                file: name,
                version: u32::from(version),
            });
        }
        let toc_off = size - TOC_LEN;
        let t = src.read_range(toc_off, TOC_LEN as usize)?;
        check_crc(&name, toc_off, &t[..48], &t[48..])?;
        let mut c = Cursor::new(&name, &t, toc_off);
        let toc = Toc {
            symbols: c.be64("toc")?,
            series: c.be64("toc")?,
            label_indices: c.be64("toc")?,
            label_offset_table: c.be64("toc")?,
            postings: c.be64("toc")?,
            postings_offset_table: c.be64("toc")?,
        };
        for (what, v) in [
            ("symbols", toc.symbols),
            ("series", toc.series),
            ("label indices", toc.label_indices),
            ("label offset table", toc.label_offset_table),
            ("postings", toc.postings),
            ("postings offset table", toc.postings_offset_table),
        ] {
            if v > toc_off {
                return Err(Error::OutOfRange {
                    file: name,
                    offset: toc_off,
                    what: format!("TOC {what} offset {v}"),
                });
            }
        }

        let symbols = if toc.symbols == 0 {
            Symbols::default()
        } else {
            let (sec, base) = read_section(src.as_ref(), toc.symbols, "symbol table")?;
            Symbols::parse(&name, sec, base)?
        };
        let pot = if toc.postings_offset_table == 0 {
            PostingsTable::default()
        } else {
            let (sec, base) = read_section(
                src.as_ref(),
                toc.postings_offset_table,
                "postings offset table",
            )?;
            PostingsTable::parse(&name, sec, base, toc.postings_offset_table)?
        };

        Ok(IndexReader {
            src,
            name,
            version,
            toc,
            symbols,
            pot,
        })
    }

    /// The name used in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Format version (2 or 3).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The table of contents.
    pub fn toc(&self) -> Toc {
        self.toc
    }

    /// Size of the index in bytes.
    pub fn size(&self) -> u64 {
        self.src.len()
    }

    /// The byte source.
    pub fn source(&self) -> &Arc<dyn ByteSource> {
        &self.src
    }

    /// Number of symbols.
    pub fn num_symbols(&self) -> usize {
        self.symbols.len()
    }

    /// Symbol `i` of the sorted symbol table.
    pub fn symbol(&self, i: u32) -> Result<&str> {
        self.symbols.symbol(i)
    }

    /// All symbols, in order.
    pub fn symbols(&self) -> impl Iterator<Item = Result<&str>> {
        (0..self.symbols.len() as u32).map(|i| self.symbols.symbol(i))
    }

    /// The parsed symbol table.
    pub fn symbol_table(&self) -> &Symbols {
        &self.symbols
    }

    /// The parsed postings offset table.
    pub fn postings_table(&self) -> &PostingsTable {
        &self.pot
    }

    /// Label names of all series, sorted (the empty name of the all-postings key excluded).
    pub fn label_names(&self) -> Vec<String> {
        self.pot.label_names()
    }

    /// Sorted values of label `name` (empty when the name is unknown).
    pub fn label_values(&self, name: &str) -> Result<Vec<String>> {
        self.pot.label_values(name)
    }

    /// Reads the postings list at file offset `off`.
    pub fn read_postings_at(&self, off: u64) -> Result<Vec<SeriesRef>> {
        Ok(AllPostings {
            body: self.postings_body(off)?,
            pos: 0,
        }
        .collect())
    }

    /// The entries (4 bytes each) of the checksummed postings list at file offset `off`.
    fn postings_body(&self, off: u64) -> Result<Bytes> {
        let (b, base) = read_section(self.src.as_ref(), off, "postings list")?;
        let mut c = Cursor::new(&self.name, &b, base);
        let n = c.be32("postings count")? as usize;
        if n.checked_mul(4) != Some(c.remaining()) {
            return Err(c.corrupt(format!(
                "postings list of {n} entries has {} bytes",
                c.remaining()
            )));
        }
        Ok(b.slice(4..))
    }

    /// Series having `name=value` (empty when the pair does not exist).
    pub fn postings(&self, name: &str, value: &str) -> Result<Vec<SeriesRef>> {
        match self.pot.postings_ref(name, value)? {
            Some(r) => self.read_postings_at(r.range.start),
            None => Ok(Vec::new()),
        }
    }

    /// Byte ranges of every postings list, in postings offset table order: label name, value,
    /// offset of the list's length field, and the offset just past its CRC.
    pub fn postings_ranges(&self) -> Result<Vec<(String, String, u64, u64)>> {
        let mut out = Vec::new();
        for r in self.pot.all_refs()? {
            let (body, base) = read_section(self.src.as_ref(), r.range.start, "postings list")?;
            out.push((r.name, r.value, r.range.start, base + body.len() as u64 + 4));
        }
        Ok(out)
    }

    /// Every series.
    pub fn all_postings(&self) -> Result<Vec<SeriesRef>> {
        self.postings(super::ALL_POSTINGS_KEY.0, super::ALL_POSTINGS_KEY.1)
    }

    /// Every series, read lazily from the (checksummed) list as the iterator advances: for
    /// walking a whole index without holding one reference per series.
    pub fn all_postings_iter(&self) -> Result<AllPostings> {
        let (k, v) = super::ALL_POSTINGS_KEY;
        let body = match self.pot.postings_ref(k, v)? {
            Some(r) => self.postings_body(r.range.start)?,
            None => Bytes::new(),
        };
        Ok(AllPostings { body, pos: 0 })
    }

    /// Union of the postings of `name=v` for every value `v` accepted by `pred`.
    pub fn postings_for_values(
        &self,
        name: &str,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<Vec<SeriesRef>> {
        let lists = self
            .pot
            .refs_for_values(name, &mut pred)?
            .into_iter()
            .map(|r| self.read_postings_at(r.range.start))
            .collect::<Result<Vec<_>>>()?;
        Ok(union_all(&lists))
    }

    /// Series matching all `matchers`, sorted. Semantics follow Prometheus: a missing label has
    /// the value `""`, so `{a=""}` selects series without `a` and `{a!="x"}` includes them.
    /// No matchers select nothing. (The plan is [`PostingsTable::plan`], shared with the
    /// store gateway's bucket reader.)
    pub fn postings_for_matchers(&self, matchers: &[Matcher]) -> Result<Vec<SeriesRef>> {
        self.pot
            .plan(matchers)?
            .evaluate(|r| self.read_postings_at(r.range.start))
    }

    /// Reads series `r`: its labels and chunk metas.
    pub fn series(&self, r: SeriesRef) -> Result<(Labels, Vec<ChunkMeta>)> {
        self.read_series(r).map_err(|e| e.in_series(r))
    }

    /// The end of the series section (where series entries stop).
    pub fn series_end(&self) -> u64 {
        if self.toc.label_indices > self.toc.series {
            self.toc.label_indices
        } else {
            self.src.len() - TOC_LEN
        }
    }

    fn read_series(&self, r: SeriesRef) -> Result<(Labels, Vec<ChunkMeta>)> {
        let end = self.series_end();
        let off = r
            .checked_mul(SERIES_ALIGN)
            .filter(|&o| o >= self.toc.series && o < end);
        let Some(off) = off else {
            return Err(Error::OutOfRange {
                file: self.name.clone(),
                offset: r.saturating_mul(SERIES_ALIGN),
                what: format!("series reference {r}"),
            });
        };
        let head = self.src.read_range(off, (end - off).min(10) as usize)?;
        let Some(size) = series_entry_size(&self.name, &head, off)? else {
            return Err(Error::Truncated {
                file: self.name.clone(),
                offset: off,
                what: "series length",
            });
        };
        if size > end - off {
            return Err(Error::TooLarge {
                file: self.name.clone(),
                offset: off,
                what: "series entry",
                len: size,
            });
        }
        let b = self.src.read_range(off, size as usize)?;
        decode_series_entry(&self.name, &b, off, &self.symbols)
    }

    /// Checks the v1-style label indices and the label offset table, if the index has them
    /// (Prometheus stopped writing them; its TOC then points the label offset table at the
    /// postings offset table). Returns the number of label index sections checked.
    pub fn check_label_indices(&self) -> Result<usize> {
        let t = self.toc;
        if t.label_offset_table == 0 || t.label_offset_table == t.postings_offset_table {
            return Ok(0);
        }
        let (sec, base) = read_section(
            self.src.as_ref(),
            t.label_offset_table,
            "label offset table",
        )?;
        let mut c = Cursor::new(&self.name, &sec, base);
        let n = c.be32("label offset table count")?;
        let mut checked = 0;
        for _ in 0..n {
            let keys = c.uvarint("label offset key count")?;
            if keys != 1 {
                return Err(c.corrupt(format!("label offset entry has {keys} keys, want 1")));
            }
            c.uvarint_str("label name")?;
            let off = c.uvarint("label index offset")?;
            let (li, lbase) = read_section(self.src.as_ref(), off, "label index")?;
            let mut lc = Cursor::new(&self.name, &li, lbase);
            let names = lc.be32("label index name count")?;
            let entries = lc.be32("label index entry count")?;
            if names != 1 || u64::from(entries) * 4 != lc.remaining() as u64 {
                return Err(lc.corrupt("label index size does not match its counts"));
            }
            for _ in 0..entries {
                self.symbol(lc.be32("label index value ref")?)?;
            }
            checked += 1;
        }
        Ok(checked)
    }
}

/// A postings list decoded as it is walked (the list of every series from
/// [`IndexReader::all_postings_iter`]).
#[derive(Debug, Clone)]
pub struct AllPostings {
    body: Bytes,
    pos: usize,
}

impl Iterator for AllPostings {
    type Item = SeriesRef;

    fn next(&mut self) -> Option<SeriesRef> {
        let w = self.body.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        Some(u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]])))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.body.len() - self.pos.min(self.body.len())) / 4;
        (n, Some(n))
    }
}
