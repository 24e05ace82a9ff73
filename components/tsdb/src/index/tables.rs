//! The parts of an index that a reader keeps in memory, parsed from [`Bytes`] wherever they
//! came from (the index file itself, or a store gateway's index-header): the symbol table
//! ([`Symbols`]) and the postings offset table ([`PostingsTable`]); plus the decoders of the
//! parts read on demand (postings lists, series entries) and the matcher → postings plan
//! ([`PostingsPlan`]) that both the local reader and the bucket reader evaluate.

use std::ops::Range;

use bytes::Bytes;

use super::postings::{intersect_all, subtract, union_all};
use super::{ALL_POSTINGS_KEY, ChunkMeta, SeriesRef};
use crate::chunks::ChunkRef;
use crate::encoding::{Cursor, check_crc, uvarint};
use crate::error::{Error, Result};
use crate::labels::Labels;
use crate::matcher::{MatchOp, Matcher};

/// Every how many values of a label name the table keeps one in memory.
const SAMPLE_EVERY: usize = 32;

/// Splits a `len(4) | body | crc(4)` section held in `b` (whose first byte is at `off` in
/// `file`), checking the CRC32C; returns the body. Trailing bytes after the CRC are ignored.
pub fn section_body(file: &str, b: &Bytes, off: u64, what: &'static str) -> Result<Bytes> {
    if b.len() < 4 {
        return Err(Error::Truncated {
            file: file.to_string(),
            offset: off,
            what,
        });
    }
    let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    if len.checked_add(8).is_none_or(|n| n > b.len()) {
        return Err(Error::TooLarge {
            file: file.to_string(),
            offset: off,
            what,
            len: len as u64,
        });
    }
    check_crc(file, off, &b[4..4 + len], &b[4 + len..8 + len])?;
    Ok(b.slice(4..4 + len))
}

/// The symbol table: every string the index uses, sorted; series refer to them by position
/// (index format v2).
#[derive(Clone, Default)]
pub struct Symbols {
    file: String,
    /// The section body (count and entries).
    data: Bytes,
    /// File offset of `data[0]`.
    base: u64,
    /// Start of each symbol in `data`.
    offsets: Vec<u32>,
}

impl std::fmt::Debug for Symbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbols")
            .field("file", &self.file)
            .field("len", &self.offsets.len())
            .finish()
    }
}

impl Symbols {
    /// Parses a symbol table section body (after the length, without the CRC) whose first byte
    /// is at `base` in `file`.
    pub fn parse(file: &str, data: Bytes, base: u64) -> Result<Self> {
        let mut c = Cursor::new(file, &data, base);
        let n = c.be32("symbol count")?;
        // Each symbol takes at least one byte.
        if u64::from(n) > c.remaining() as u64 {
            return Err(Error::TooLarge {
                file: file.to_string(),
                offset: base,
                what: "symbol count",
                len: u64::from(n),
            });
        }
        let mut offsets = Vec::with_capacity(n as usize);
        for _ in 0..n {
            offsets.push(c.position() as u32);
            c.uvarint_str("symbol")?;
        }
        Ok(Symbols {
            file: file.to_string(),
            data,
            base,
            offsets,
        })
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Symbol `i`.
    pub fn symbol(&self, i: u32) -> Result<&str> {
        let Some(&off) = self.offsets.get(i as usize) else {
            return Err(Error::OutOfRange {
                file: self.file.clone(),
                offset: self.base,
                what: format!("symbol reference {i} (table has {})", self.offsets.len()),
            });
        };
        let mut c = Cursor::new(
            &self.file,
            &self.data[off as usize..],
            self.base + u64::from(off),
        );
        c.uvarint_str("symbol")
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.data.len() + self.offsets.len() * 4
    }
}

/// The entries of one label name in the postings offset table.
#[derive(Debug, Clone)]
struct NameEntry {
    name: String,
    /// Byte range of this name's entries inside `data`.
    start: usize,
    end: usize,
    /// Number of values.
    count: usize,
    /// Every `SAMPLE_EVERY`th value and the last one, with their entry position in `data`.
    samples: Vec<(String, usize)>,
}

/// The postings offset table: for every label pair, where its postings list starts in the
/// index file. Only every 32nd value of each name is kept decoded; lookups scan from there.
#[derive(Clone, Default)]
pub struct PostingsTable {
    file: String,
    /// The section body (count and entries).
    data: Bytes,
    /// File offset of `data[0]`.
    base: u64,
    names: Vec<NameEntry>,
    /// Index file offset where the last postings list ends at the latest.
    postings_end: u64,
    /// The smallest postings offset in the table (where the postings section starts).
    first_offset: u64,
}

impl std::fmt::Debug for PostingsTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostingsTable")
            .field("file", &self.file)
            .field("names", &self.names.len())
            .field("postings_end", &self.postings_end)
            .finish()
    }
}

/// One postings list the table points to: its label pair and its byte range in the index
/// (`start` is the list's length field; `end` is the next list's start, or the end of the
/// postings, so it may include padding).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PostingsRef {
    /// Label name.
    pub name: String,
    /// Label value.
    pub value: String,
    /// Byte range in the index file.
    pub range: Range<u64>,
}

impl PostingsTable {
    /// Parses a postings offset table section body (after the length, without the CRC) whose
    /// first byte is at `base` in `file`. `postings_end` bounds the last postings list (the
    /// index's postings offset table position).
    pub fn parse(file: &str, data: Bytes, base: u64, postings_end: u64) -> Result<Self> {
        let (names, first_offset) = scan(file, &data, base)?;
        Ok(PostingsTable {
            file: file.to_string(),
            data,
            base,
            names,
            postings_end,
            first_offset: first_offset.unwrap_or(postings_end),
        })
    }

    /// The smallest postings offset in the table: series entries (and label indices) lie
    /// before it.
    pub fn first_offset(&self) -> u64 {
        self.first_offset
    }

    /// Where the last postings list ends at the latest.
    pub fn postings_end(&self) -> u64 {
        self.postings_end
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.data.len()
            + self
                .names
                .iter()
                .map(|e| {
                    e.name.len() + 64 + e.samples.iter().map(|(v, _)| v.len() + 32).sum::<usize>()
                })
                .sum::<usize>()
    }

    /// Entry at `pos`: name, value, postings offset, position of the next entry.
    fn entry_at(&self, pos: usize) -> Result<(&str, &str, u64, usize)> {
        let mut c = Cursor::new(&self.file, &self.data[pos..], self.base + pos as u64);
        c.uvarint("postings offset key count")?;
        let n = c.uvarint_str("label name")?;
        let v = c.uvarint_str("label value")?;
        let off = c.uvarint("postings offset")?;
        Ok((n, v, off, pos + c.position()))
    }

    /// The end of the postings list starting at `off` whose table entry is followed by `next`.
    fn list_end(&self, off: u64, next: usize) -> Result<u64> {
        let end = if next < self.data.len() {
            self.entry_at(next)?.2
        } else {
            self.postings_end
        };
        Ok(if end > off {
            end
        } else {
            self.postings_end.max(off)
        })
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

    /// Number of values of `name`.
    pub fn num_values(&self, name: &str) -> usize {
        self.name_entry(name).map_or(0, |e| e.count)
    }

    /// Visits `(value, postings offset, next entry position)` of `name` in order, starting
    /// near the first value ≥ `from` (earlier values may still be visited), until `f` says stop.
    fn for_each_value_from(
        &self,
        name: &str,
        from: &str,
        mut f: impl FnMut(&str, u64, usize) -> Result<bool>,
    ) -> Result<()> {
        let Some(e) = self.name_entry(name) else {
            return Ok(());
        };
        let i = e.samples.partition_point(|(v, _)| v.as_str() < from);
        let mut pos = if i == 0 { e.start } else { e.samples[i - 1].1 };
        while pos < e.end {
            let (_, v, off, next) = self.entry_at(pos)?;
            if !f(v, off, next)? {
                break;
            }
            pos = next;
        }
        Ok(())
    }

    /// Sorted values of label `name` (empty when the name is unknown).
    pub fn label_values(&self, name: &str) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(self.num_values(name));
        self.for_each_value_from(name, "", |v, _, _| {
            out.push(v.to_string());
            Ok(true)
        })?;
        Ok(out)
    }

    /// The postings list of `name=value`, if the pair exists.
    pub fn postings_ref(&self, name: &str, value: &str) -> Result<Option<PostingsRef>> {
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
                std::cmp::Ordering::Equal => {
                    return Ok(Some(PostingsRef {
                        name: name.to_string(),
                        value: value.to_string(),
                        range: off..self.list_end(off, next)?,
                    }));
                }
                std::cmp::Ordering::Greater => return Ok(None),
                std::cmp::Ordering::Less => pos = next,
            }
        }
        Ok(None)
    }

    /// Every postings list, in table order.
    pub fn all_refs(&self) -> Result<Vec<PostingsRef>> {
        let mut out = Vec::new();
        for e in &self.names {
            let mut pos = e.start;
            while pos < e.end {
                let (n, v, off, next) = self.entry_at(pos)?;
                out.push(PostingsRef {
                    name: n.to_string(),
                    value: v.to_string(),
                    range: off..self.list_end(off, next)?,
                });
                pos = next;
            }
        }
        Ok(out)
    }

    /// Lists of `name=v` for every value `v` accepted by `pred`.
    pub fn refs_for_values(
        &self,
        name: &str,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Result<Vec<PostingsRef>> {
        let mut out = Vec::new();
        self.for_each_value_from(name, "", |v, off, next| {
            if pred(v) {
                out.push(PostingsRef {
                    name: name.to_string(),
                    value: v.to_string(),
                    range: off..self.list_end(off, next)?,
                });
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Lists of `name=v` for `v` starting with `prefix` and matching `m`.
    fn refs_for_prefix(&self, name: &str, prefix: &str, m: &Matcher) -> Result<Vec<PostingsRef>> {
        let mut out = Vec::new();
        self.for_each_value_from(name, prefix, |v, off, next| {
            if v.starts_with(prefix) {
                if m.matches(v) {
                    out.push(PostingsRef {
                        name: name.to_string(),
                        value: v.to_string(),
                        range: off..self.list_end(off, next)?,
                    });
                }
                Ok(true)
            } else {
                // Values are sorted: once past the prefix range, stop.
                Ok(v < prefix)
            }
        })?;
        Ok(out)
    }

    /// Lists of the values of `m.name` that match `m` (or, inverted, that do not).
    fn matching_refs(&self, m: &Matcher, invert: bool) -> Result<Vec<PostingsRef>> {
        if !invert {
            if let Some(set) = m.literal_set() {
                let mut out = Vec::new();
                for v in set.iter() {
                    out.extend(self.postings_ref(&m.name, v)?);
                }
                return Ok(out);
            }
            if let Some(p) = m.prefix() {
                return self.refs_for_prefix(&m.name, p, m);
            }
        }
        self.refs_for_values(&m.name, |v| m.matches(v) != invert)
    }

    /// Which postings lists `matchers` need and how to combine them. Semantics follow
    /// Prometheus: a missing label has the value `""`, so `{a=""}` selects series without `a`
    /// and `{a!="x"}` includes them. No matchers select nothing.
    pub fn plan(&self, matchers: &[Matcher]) -> Result<PostingsPlan> {
        let mut plan = PostingsPlan::default();
        if matchers.is_empty() {
            return Ok(plan);
        }
        for m in matchers {
            if m.matches("") {
                // Accepts "": every series except those whose present value does not match.
                plan.exclude.push(self.matching_refs(m, true)?);
            } else {
                let refs = if m.op == MatchOp::Equal {
                    self.postings_ref(&m.name, &m.value)?.into_iter().collect()
                } else {
                    self.matching_refs(m, false)?
                };
                if refs.is_empty() {
                    // Nothing can match: no list needs reading.
                    return Ok(PostingsPlan::default());
                }
                plan.include.push(refs);
            }
        }
        if plan.include.is_empty() {
            match self.postings_ref(ALL_POSTINGS_KEY.0, ALL_POSTINGS_KEY.1)? {
                Some(all) => plan.include.push(vec![all]),
                None => return Ok(PostingsPlan::default()),
            }
        }
        plan.exclude.retain(|t| !t.is_empty());
        Ok(plan)
    }
}

/// What a set of matchers needs: the intersection of the `include` terms minus the union of
/// the `exclude` terms, each term the union of its postings lists. No include term selects
/// nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostingsPlan {
    /// Terms to intersect.
    pub include: Vec<Vec<PostingsRef>>,
    /// Terms to subtract.
    pub exclude: Vec<Vec<PostingsRef>>,
}

impl PostingsPlan {
    /// Every list the plan reads, each once, sorted by offset.
    pub fn refs(&self) -> Vec<&PostingsRef> {
        let mut v: Vec<&PostingsRef> = self.include.iter().chain(&self.exclude).flatten().collect();
        v.sort_by_key(|r| r.range.start);
        v.dedup_by_key(|r| r.range.start);
        v
    }

    /// Evaluates the plan, reading each list with `get`.
    pub fn evaluate(
        &self,
        mut get: impl FnMut(&PostingsRef) -> Result<Vec<SeriesRef>>,
    ) -> Result<Vec<SeriesRef>> {
        if self.include.is_empty() {
            return Ok(Vec::new());
        }
        let mut include = Vec::with_capacity(self.include.len());
        for term in &self.include {
            let lists = term.iter().map(&mut get).collect::<Result<Vec<_>>>()?;
            include.push(union_all(&lists));
        }
        let base = intersect_all(include);
        if self.exclude.is_empty() || base.is_empty() {
            return Ok(base);
        }
        let mut exclude = Vec::with_capacity(self.exclude.len());
        for term in &self.exclude {
            let lists = term.iter().map(&mut get).collect::<Result<Vec<_>>>()?;
            exclude.push(union_all(&lists));
        }
        Ok(subtract(&base, &union_all(&exclude)))
    }
}

fn scan(file: &str, sec: &[u8], base: u64) -> Result<(Vec<NameEntry>, Option<u64>)> {
    let mut first: Option<u64> = None;
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
        let off = c.uvarint("postings offset")?;
        first = Some(first.map_or(off, |f| f.min(off)));
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
    Ok((names, first))
}

/// Decodes a postings list `len(4) | count(4) | refs(4 each) | crc(4)` held at the start of
/// `b` (file offset `off`), checking the CRC; bytes after the CRC (padding) are ignored.
pub fn decode_postings(file: &str, b: &Bytes, off: u64) -> Result<Vec<SeriesRef>> {
    let body = section_body(file, b, off, "postings list")?;
    let mut c = Cursor::new(file, &body, off + 4);
    let n = c.be32("postings count")? as usize;
    if n.checked_mul(4) != Some(c.remaining()) {
        return Err(c.corrupt(format!(
            "postings list of {n} entries has {} bytes",
            c.remaining()
        )));
    }
    let refs = c.bytes(n * 4, "postings")?;
    Ok(refs
        .chunks_exact(4)
        .map(|w| u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]])))
        .collect())
}

/// The full size of the series entry starting at `b[0]` (length varint, body and CRC), or
/// `None` when `b` is too short to hold the length varint.
pub fn series_entry_size(file: &str, b: &[u8], off: u64) -> Result<Option<u64>> {
    match uvarint(b) {
        Ok(Some((len, n))) => Ok(Some(len.saturating_add(n as u64 + 4))),
        Ok(None) if b.len() >= crate::encoding::MAX_VARINT_LEN64 => Err(Error::Corrupt {
            file: file.to_string(),
            offset: off,
            what: "series length varint overflows".into(),
        }),
        Ok(None) => Ok(None),
        Err(()) => Err(Error::Corrupt {
            file: file.to_string(),
            offset: off,
            what: "series length varint overflows".into(),
        }),
    }
}

/// Decodes the series entry at the start of `b` (file offset `off`): checks its CRC and
/// resolves its labels with `symbols`. `b` must hold the whole entry (see
/// [`series_entry_size`]); trailing bytes are ignored.
pub fn decode_series_entry(
    file: &str,
    b: &[u8],
    off: u64,
    symbols: &Symbols,
) -> Result<(Labels, Vec<ChunkMeta>)> {
    let (len, n) = match uvarint(b) {
        Ok(Some(v)) => v,
        Ok(None) => {
            return Err(Error::Truncated {
                file: file.to_string(),
                offset: off,
                what: "series length",
            });
        }
        Err(()) => {
            return Err(Error::Corrupt {
                file: file.to_string(),
                offset: off,
                what: "series length varint overflows".into(),
            });
        }
    };
    let rest = &b[n..];
    if len.checked_add(4).is_none_or(|l| l > rest.len() as u64) {
        return Err(Error::TooLarge {
            file: file.to_string(),
            offset: off,
            what: "series entry",
            len,
        });
    }
    let len = len as usize;
    check_crc(file, off, &rest[..len], &rest[len..len + 4])?;
    decode_series_body(file, &rest[..len], off + n as u64, symbols)
}

fn decode_series_body(
    file: &str,
    b: &[u8],
    base: u64,
    symbols: &Symbols,
) -> Result<(Labels, Vec<ChunkMeta>)> {
    let mut c = Cursor::new(file, b, base);
    let nl = c.uvarint("label count")?;
    if nl > c.remaining() as u64 / 2 {
        return Err(Error::TooLarge {
            file: file.to_string(),
            offset: base,
            what: "label count",
            len: nl,
        });
    }
    let mut pairs = Vec::with_capacity(nl as usize);
    for _ in 0..nl {
        let ni = c.uvarint32("label name ref")?;
        let vi = c.uvarint32("label value ref")?;
        pairs.push((
            symbols.symbol(ni)?.to_string(),
            symbols.symbol(vi)?.to_string(),
        ));
    }
    if !Labels::is_sorted_unique(&pairs) {
        return Err(c.corrupt("series labels not sorted by name"));
    }
    let nc = c.uvarint("chunk count")?;
    if nc > c.remaining() as u64 / 3 {
        return Err(Error::TooLarge {
            file: file.to_string(),
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
