//! Reading an index over a [`ByteSource`].

use std::sync::Arc;

use bytes::Bytes;

use super::postings::{intersect_all, subtract, union_all};
use super::{
    ChunkMeta, HEADER_LEN, INDEX_FORMAT_V2, INDEX_FORMAT_V3, MAGIC_INDEX, SERIES_ALIGN, SeriesRef,
    TOC_LEN, Toc,
};
use crate::chunks::ChunkRef;
use crate::encoding::{Cursor, check_crc, uvarint};
use crate::error::{Error, Result};
use crate::labels::Labels;
use crate::matcher::{MatchOp, Matcher};
use crate::source::ByteSource;

/// Every how many values of a label name the reader keeps one in memory.
const SAMPLE_EVERY: usize = 32;

/// The entries of one label name in the postings offset table.
#[derive(Debug, Clone)]
struct NameEntry {
    name: String,
    /// Byte range of this name's entries inside `pot`.
    start: usize,
    end: usize,
    /// Number of values.
    count: usize,
    /// Every `SAMPLE_EVERY`th value and the last one, with their entry position in `pot`.
    samples: Vec<(String, usize)>,
}

/// A reader for an index file (format v2; v3 is read the same way).
///
/// Opening reads the header, the TOC, the symbol table and the postings offset table and checks
/// their CRC32C; series and postings lists are read (and checked) on demand.
pub struct IndexReader {
    src: Arc<dyn ByteSource>,
    name: String,
    version: u8,
    toc: Toc,
    /// Symbol table entries (after the count), and the start of each symbol in it.
    symbols: Bytes,
    symbols_base: u64,
    symbol_offsets: Vec<u32>,
    /// Postings offset table entries (after the count).
    pot: Bytes,
    pot_base: u64,
    names: Vec<NameEntry>,
}

impl std::fmt::Debug for IndexReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexReader")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("toc", &self.toc)
            .field("symbols", &self.symbol_offsets.len())
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

        let (symbols, symbols_base, symbol_offsets) = if toc.symbols == 0 {
            (Bytes::new(), 0, Vec::new())
        } else {
            let (sec, base) = read_section(src.as_ref(), toc.symbols, "symbol table")?;
            let mut c = Cursor::new(&name, &sec, base);
            let n = c.be32("symbol count")?;
            // Each symbol takes at least one byte.
            if u64::from(n) > c.remaining() as u64 {
                return Err(Error::TooLarge {
                    file: name,
                    offset: base,
                    what: "symbol count",
                    len: u64::from(n),
                });
            }
            let mut offs = Vec::with_capacity(n as usize);
            for _ in 0..n {
                offs.push(c.position() as u32);
                c.uvarint_str("symbol")?;
            }
            (sec, base, offs)
        };

        let (pot, pot_base, names) = if toc.postings_offset_table == 0 {
            (Bytes::new(), 0, Vec::new())
        } else {
            let (sec, base) = read_section(
                src.as_ref(),
                toc.postings_offset_table,
                "postings offset table",
            )?;
            let names = Self::scan_pot(&name, &sec, base)?;
            (sec, base, names)
        };

        Ok(IndexReader {
            src,
            name,
            version,
            toc,
            symbols,
            symbols_base,
            symbol_offsets,
            pot,
            pot_base,
            names,
        })
    }

    fn scan_pot(file: &str, sec: &Bytes, base: u64) -> Result<Vec<NameEntry>> {
        let mut c = Cursor::new(file, sec, base);
        let n = c.be32("postings offset table count")?;
        let mut names: Vec<NameEntry> = Vec::new();
        let mut last_pos = 0usize;
        let mut last_value = String::new();
        for _ in 0..n {
            let pos = c.position();
            let keys = c.uvarint("postings offset key count")?;
            if keys != 2 {
                return Err(c.corrupt(format!("postings offset entry has {keys} keys, want 2")));
            }
            let lname = c.uvarint_str("label name")?;
            let value = c.uvarint_str("label value")?;
            c.uvarint("postings offset")?;
            let new_name = names.last().is_none_or(|e| e.name != lname);
            if new_name {
                if let Some(prev) = names.last_mut() {
                    prev.end = pos;
                    if prev.samples.last().is_none_or(|s| s.1 != last_pos) {
                        prev.samples
                            .push((std::mem::take(&mut last_value), last_pos));
                    }
                }
                if let Some(prev) = names.last()
                    && prev.name.as_str() > lname
                {
                    return Err(c.corrupt("postings offset table not sorted by label name"));
                }
                names.push(NameEntry {
                    name: lname.to_string(),
                    start: pos,
                    end: pos,
                    count: 0,
                    samples: Vec::new(),
                });
            }
            let e = names
                .last_mut()
                .ok_or_else(|| c.corrupt("internal: no name entry"))?;
            if e.count % SAMPLE_EVERY == 0 {
                e.samples.push((value.to_string(), pos));
            }
            e.count += 1;
            last_pos = pos;
            last_value = value.to_string();
        }
        if let Some(prev) = names.last_mut() {
            prev.end = c.position();
            if prev.samples.last().is_none_or(|s| s.1 != last_pos) {
                prev.samples.push((last_value, last_pos));
            }
        }
        Ok(names)
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
        self.symbol_offsets.len()
    }

    /// Symbol `i` of the sorted symbol table.
    pub fn symbol(&self, i: u32) -> Result<&str> {
        let Some(&off) = self.symbol_offsets.get(i as usize) else {
            return Err(Error::OutOfRange {
                file: self.name.clone(),
                offset: self.toc.symbols,
                what: format!(
                    "symbol reference {i} (table has {})",
                    self.symbol_offsets.len()
                ),
            });
        };
        let mut c = Cursor::new(
            &self.name,
            &self.symbols[off as usize..],
            self.symbols_base + u64::from(off),
        );
        c.uvarint_str("symbol")
    }

    /// All symbols, in order.
    pub fn symbols(&self) -> impl Iterator<Item = Result<&str>> {
        (0..self.symbol_offsets.len() as u32).map(|i| self.symbol(i))
    }

    fn entry_at(&self, pos: usize) -> Result<(&str, &str, u64, usize)> {
        let mut c = Cursor::new(&self.name, &self.pot[pos..], self.pot_base + pos as u64);
        c.uvarint("postings offset key count")?;
        let n = c.uvarint_str("label name")?;
        let v = c.uvarint_str("label value")?;
        let off = c.uvarint("postings offset")?;
        Ok((n, v, off, pos + c.position()))
    }

    fn name_entry(&self, name: &str) -> Option<&NameEntry> {
        self.names
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.names[i])
    }

    /// Label names of all series, sorted (the empty name of the all-postings key excluded).
    pub fn label_names(&self) -> Vec<String> {
        self.names
            .iter()
            .filter(|e| !e.name.is_empty())
            .map(|e| e.name.clone())
            .collect()
    }

    /// Visits `(value, postings offset)` of `name` in order.
    fn for_each_value(&self, name: &str, f: impl FnMut(&str, u64) -> Result<bool>) -> Result<()> {
        self.for_each_value_from(name, "", f)
    }

    /// Like [`Self::for_each_value`], starting near the first value ≥ `from` (earlier values
    /// may still be visited).
    fn for_each_value_from(
        &self,
        name: &str,
        from: &str,
        mut f: impl FnMut(&str, u64) -> Result<bool>,
    ) -> Result<()> {
        let Some(e) = self.name_entry(name) else {
            return Ok(());
        };
        let i = e.samples.partition_point(|(v, _)| v.as_str() < from);
        let mut pos = if i == 0 { e.start } else { e.samples[i - 1].1 };
        while pos < e.end {
            let (_, v, off, next) = self.entry_at(pos)?;
            if !f(v, off)? {
                break;
            }
            pos = next;
        }
        Ok(())
    }

    /// Sorted values of label `name` (empty when the name is unknown).
    pub fn label_values(&self, name: &str) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(self.name_entry(name).map_or(0, |e| e.count));
        self.for_each_value(name, |v, _| {
            out.push(v.to_string());
            Ok(true)
        })?;
        Ok(out)
    }

    /// Postings list offset of `name=value`, if the pair exists.
    fn postings_offset(&self, name: &str, value: &str) -> Result<Option<u64>> {
        let Some(e) = self.name_entry(name) else {
            return Ok(None);
        };
        // Start from the last sample ≤ value.
        let i = e.samples.partition_point(|(v, _)| v.as_str() <= value);
        if i == 0 {
            return Ok(None);
        }
        let mut pos = e.samples[i - 1].1;
        while pos < e.end {
            let (_, v, off, next) = self.entry_at(pos)?;
            match v.cmp(value) {
                std::cmp::Ordering::Equal => return Ok(Some(off)),
                std::cmp::Ordering::Greater => return Ok(None),
                std::cmp::Ordering::Less => pos = next,
            }
        }
        Ok(None)
    }

    /// Reads the postings list at file offset `off`.
    pub fn read_postings_at(&self, off: u64) -> Result<Vec<SeriesRef>> {
        let (b, base) = read_section(self.src.as_ref(), off, "postings list")?;
        let mut c = Cursor::new(&self.name, &b, base);
        let n = c.be32("postings count")? as usize;
        if n.checked_mul(4) != Some(c.remaining()) {
            return Err(c.corrupt(format!(
                "postings list of {n} entries has {} bytes",
                c.remaining()
            )));
        }
        let body = c.bytes(n * 4, "postings")?;
        Ok(body
            .chunks_exact(4)
            .map(|w| u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]])))
            .collect())
    }

    /// Series having `name=value` (empty when the pair does not exist).
    pub fn postings(&self, name: &str, value: &str) -> Result<Vec<SeriesRef>> {
        match self.postings_offset(name, value)? {
            Some(off) => self.read_postings_at(off),
            None => Ok(Vec::new()),
        }
    }

    /// Byte ranges of every postings list, in postings offset table order: label name, value,
    /// offset of the list's length field, and the offset just past its CRC.
    pub fn postings_ranges(&self) -> Result<Vec<(String, String, u64, u64)>> {
        let mut out = Vec::new();
        for e in &self.names {
            let mut pos = e.start;
            while pos < e.end {
                let (n, v, off, next) = self.entry_at(pos)?;
                let (body, base) = read_section(self.src.as_ref(), off, "postings list")?;
                out.push((
                    n.to_string(),
                    v.to_string(),
                    off,
                    base + body.len() as u64 + 4,
                ));
                pos = next;
            }
        }
        Ok(out)
    }

    /// Every series.
    pub fn all_postings(&self) -> Result<Vec<SeriesRef>> {
        self.postings(super::ALL_POSTINGS_KEY.0, super::ALL_POSTINGS_KEY.1)
    }

    /// Union of the postings of `name=v` for every value `v` accepted by `pred`.
    pub fn postings_for_values(
        &self,
        name: &str,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<Vec<SeriesRef>> {
        let mut offs = Vec::new();
        self.for_each_value(name, |v, off| {
            if pred(v) {
                offs.push(off);
            }
            Ok(true)
        })?;
        let lists = offs
            .into_iter()
            .map(|o| self.read_postings_at(o))
            .collect::<Result<Vec<_>>>()?;
        Ok(union_all(&lists))
    }

    /// Union of the postings of `name=v` for `v` starting with `prefix`.
    fn postings_for_prefix(&self, name: &str, prefix: &str, m: &Matcher) -> Result<Vec<SeriesRef>> {
        let mut offs = Vec::new();
        self.for_each_value_from(name, prefix, |v, off| {
            if v.starts_with(prefix) {
                if m.matches(v) {
                    offs.push(off);
                }
                Ok(true)
            } else {
                // Values are sorted: once past the prefix range, stop.
                Ok(v < prefix)
            }
        })?;
        let lists = offs
            .into_iter()
            .map(|o| self.read_postings_at(o))
            .collect::<Result<Vec<_>>>()?;
        Ok(union_all(&lists))
    }

    /// Series whose values of `m.name` match `m` positively (the label present).
    fn matching_values_postings(&self, m: &Matcher, invert: bool) -> Result<Vec<SeriesRef>> {
        if !invert {
            if let Some(set) = m.literal_set() {
                let lists = set
                    .iter()
                    .map(|v| self.postings(&m.name, v))
                    .collect::<Result<Vec<_>>>()?;
                return Ok(union_all(&lists));
            }
            if let Some(p) = m.prefix() {
                return self.postings_for_prefix(&m.name, p, m);
            }
        }
        self.postings_for_values(&m.name, |v| m.matches(v) != invert)
    }

    /// Series matching all `matchers`, sorted. Semantics follow Prometheus: a missing label has
    /// the value `""`, so `{a=""}` selects series without `a` and `{a!="x"}` includes them.
    /// No matchers select nothing.
    pub fn postings_for_matchers(&self, matchers: &[Matcher]) -> Result<Vec<SeriesRef>> {
        if matchers.is_empty() {
            return Ok(Vec::new());
        }
        let mut include: Vec<Vec<SeriesRef>> = Vec::new();
        let mut exclude: Vec<Vec<SeriesRef>> = Vec::new();
        for m in matchers {
            let matches_empty = m.matches("");
            if matches_empty {
                // Accepts "": every series except those whose present value does not match.
                exclude.push(self.matching_values_postings(m, true)?);
            } else if m.op == MatchOp::Equal {
                include.push(self.postings(&m.name, &m.value)?);
            } else {
                include.push(self.matching_values_postings(m, false)?);
            }
        }
        let base = if include.is_empty() {
            self.all_postings()?
        } else {
            intersect_all(include)
        };
        if exclude.is_empty() || base.is_empty() {
            return Ok(base);
        }
        Ok(subtract(&base, &union_all(&exclude)))
    }

    /// Reads series `r`: its labels and chunk metas.
    pub fn series(&self, r: SeriesRef) -> Result<(Labels, Vec<ChunkMeta>)> {
        self.read_series(r).map_err(|e| e.in_series(r))
    }

    fn read_series(&self, r: SeriesRef) -> Result<(Labels, Vec<ChunkMeta>)> {
        let size = self.src.len();
        let end = if self.toc.label_indices > self.toc.series {
            self.toc.label_indices
        } else {
            size - TOC_LEN
        };
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
        let (len, n) = match uvarint(&head) {
            Ok(Some(v)) => v,
            Ok(None) => {
                return Err(Error::Truncated {
                    file: self.name.clone(),
                    offset: off,
                    what: "series length",
                });
            }
            Err(()) => {
                return Err(Error::Corrupt {
                    file: self.name.clone(),
                    offset: off,
                    what: "series length varint overflows".into(),
                });
            }
        };
        let body_off = off + n as u64;
        if len.checked_add(4).is_none_or(|l| l > end - body_off) {
            return Err(Error::TooLarge {
                file: self.name.clone(),
                offset: off,
                what: "series entry",
                len,
            });
        }
        let b = self.src.read_range(body_off, len as usize + 4)?;
        check_crc(&self.name, off, &b[..len as usize], &b[len as usize..])?;
        self.decode_series(&b[..len as usize], body_off)
    }

    fn decode_series(&self, b: &[u8], base: u64) -> Result<(Labels, Vec<ChunkMeta>)> {
        let mut c = Cursor::new(&self.name, b, base);
        let nl = c.uvarint("label count")?;
        if nl > c.remaining() as u64 / 2 {
            return Err(Error::TooLarge {
                file: self.name.clone(),
                offset: base,
                what: "label count",
                len: nl,
            });
        }
        let mut pairs = Vec::with_capacity(nl as usize);
        for _ in 0..nl {
            let ni = c.uvarint32("label name ref")?;
            let vi = c.uvarint32("label value ref")?;
            pairs.push((self.symbol(ni)?.to_string(), self.symbol(vi)?.to_string()));
        }
        if !Labels::is_sorted_unique(&pairs) {
            return Err(c.corrupt("series labels not sorted by name"));
        }
        let nc = c.uvarint("chunk count")?;
        if nc > c.remaining() as u64 / 3 {
            return Err(Error::TooLarge {
                file: self.name.clone(),
                offset: c.offset(),
                what: "chunk count",
                len: nc,
            });
        }
        let mut chunks = Vec::with_capacity(nc as usize);
        if nc > 0 {
            let mint = c.varint("chunk mint")?;
            let maxt = (c.uvarint("chunk maxt delta")? as i64).wrapping_add(mint);
            let mut r = c.uvarint("chunk ref")?;
            chunks.push(ChunkMeta {
                min_time: mint,
                max_time: maxt,
                chunk_ref: ChunkRef(r),
            });
            let mut t0 = maxt;
            for _ in 1..nc {
                let mint = (c.uvarint("chunk mint delta")? as i64).wrapping_add(t0);
                let maxt = (c.uvarint("chunk maxt delta")? as i64).wrapping_add(mint);
                r = (r as i64).wrapping_add(c.varint("chunk ref delta")?) as u64;
                t0 = maxt;
                chunks.push(ChunkMeta {
                    min_time: mint,
                    max_time: maxt,
                    chunk_ref: ChunkRef(r),
                });
            }
        }
        Ok((Labels::from_sorted(pairs), chunks))
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
