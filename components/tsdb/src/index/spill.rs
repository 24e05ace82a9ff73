//! Postings gathered while an index is written: in memory up to a budget of entries, then as
//! sorted runs in a spill file beside the index, merged run by run when the postings are
//! written. Memory stays bounded by the budget however many series the index gets.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use crate::error::{Error, Result};

/// A postings key: `None` for the list of every series, else (name, value) symbol ids.
pub(super) type Key = Option<(u32, u32)>;

/// Bytes of a run record's head: tag, name, value, count.
const RECORD_HEAD: usize = 13;

#[derive(Debug)]
pub(super) struct Postings {
    mem: BTreeMap<Key, Vec<u32>>,
    entries: usize,
    budget: usize,
    path: PathBuf,
    spill: Option<BufWriter<File>>,
    spill_len: u64,
    /// (offset, length) of each run in the spill file, oldest first.
    runs: Vec<(u64, u64)>,
}

impl Postings {
    /// Holds at most `budget` entries (one per series and label) in memory; more go to `path`.
    pub(super) fn new(path: PathBuf, budget: usize) -> Self {
        Postings {
            mem: BTreeMap::new(),
            entries: 0,
            budget: budget.max(1),
            path,
            spill: None,
            spill_len: 0,
            runs: Vec::new(),
        }
    }

    /// Appends `sref` to `key`'s list. Series refs arrive in increasing order.
    pub(super) fn push(&mut self, key: Key, sref: u32) -> Result<()> {
        self.mem.entry(key).or_default().push(sref);
        self.entries += 1;
        if self.entries >= self.budget {
            self.flush_run()?;
        }
        Ok(())
    }

    /// Number of runs spilled so far.
    pub(super) fn runs(&self) -> usize {
        self.runs.len()
    }

    fn flush_run(&mut self) -> Result<()> {
        if self.mem.is_empty() {
            return Ok(());
        }
        let path = &self.path;
        let w = match &mut self.spill {
            Some(w) => w,
            None => {
                let f = File::create(path).map_err(|e| Error::io(path, e))?;
                self.spill.insert(BufWriter::with_capacity(1 << 20, f))
            }
        };
        let start = self.spill_len;
        let mut head = [0u8; RECORD_HEAD];
        for (key, list) in std::mem::take(&mut self.mem) {
            let (tag, (n, v)) = key.map_or((0u8, (0, 0)), |k| (1, k));
            head[0] = tag;
            head[1..5].copy_from_slice(&n.to_be_bytes());
            head[5..9].copy_from_slice(&v.to_be_bytes());
            head[9..13].copy_from_slice(&(list.len() as u32).to_be_bytes());
            w.write_all(&head).map_err(|e| Error::io(path, e))?;
            for r in &list {
                w.write_all(&r.to_be_bytes())
                    .map_err(|e| Error::io(path, e))?;
            }
            self.spill_len += (RECORD_HEAD + 4 * list.len()) as u64;
        }
        self.runs.push((start, self.spill_len - start));
        self.entries = 0;
        Ok(())
    }

    /// Calls `f` with every key in order and its whole list (an empty slice when `lists` is
    /// false, which skips reading them). May be called several times.
    pub(super) fn visit(
        &mut self,
        lists: bool,
        f: &mut dyn FnMut(Key, &[u32]) -> Result<()>,
    ) -> Result<()> {
        if self.runs.is_empty() {
            for (k, v) in &self.mem {
                f(*k, if lists { v } else { &[] })?;
            }
            return Ok(());
        }
        self.flush_run()?;
        if let Some(w) = self.spill.take() {
            let file = w
                .into_inner()
                .map_err(|e| Error::io(&self.path, e.into_error()))?;
            drop(file);
        }
        let mut readers = self
            .runs
            .iter()
            .map(|&(off, len)| Run::open(&self.path, off, len))
            .collect::<Result<Vec<_>>>()?;
        let mut buf: Vec<u32> = Vec::new();
        loop {
            let Some(key) = readers.iter().filter_map(|r| r.cur.map(|(k, _)| k)).min() else {
                return Ok(());
            };
            buf.clear();
            // Runs are in series order, so their pieces of one list concatenate in order.
            for r in readers.iter_mut() {
                if r.cur.is_some_and(|(k, _)| k == key) {
                    r.take_list(lists, &mut buf)?;
                }
            }
            f(key, &buf)?;
        }
    }
}

impl Drop for Postings {
    fn drop(&mut self) {
        if self.spill_len > 0 || self.spill.is_some() {
            self.spill = None;
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A reader over one run of the spill file.
struct Run {
    path: PathBuf,
    r: BufReader<File>,
    left: u64,
    cur: Option<(Key, u32)>,
}

impl Run {
    fn open(path: &PathBuf, off: u64, len: u64) -> Result<Self> {
        let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
        f.seek(SeekFrom::Start(off))
            .map_err(|e| Error::io(path, e))?;
        let mut r = Run {
            path: path.clone(),
            r: BufReader::with_capacity(64 << 10, f),
            left: len,
            cur: None,
        };
        r.next_head()?;
        Ok(r)
    }

    fn next_head(&mut self) -> Result<()> {
        if self.left == 0 {
            self.cur = None;
            return Ok(());
        }
        let mut h = [0u8; RECORD_HEAD];
        self.read(&mut h)?;
        let be = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let key = (h[0] == 1).then(|| (be(1), be(5)));
        self.cur = Some((key, be(9)));
        Ok(())
    }

    fn read(&mut self, b: &mut [u8]) -> Result<()> {
        self.r.read_exact(b).map_err(|e| Error::io(&self.path, e))?;
        self.left = self.left.saturating_sub(b.len() as u64);
        Ok(())
    }

    /// Appends the current list to `out` (or skips it), then moves to the next record.
    fn take_list(&mut self, keep: bool, out: &mut Vec<u32>) -> Result<()> {
        let Some((_, n)) = self.cur else {
            return Ok(());
        };
        let bytes = 4 * u64::from(n);
        if keep {
            let mut b = vec![0u8; bytes as usize];
            self.read(&mut b)?;
            out.extend(
                b.chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])),
            );
        } else {
            self.r
                .seek_relative(bytes as i64)
                .map_err(|e| Error::io(&self.path, e))?;
            self.left = self.left.saturating_sub(bytes);
        }
        self.next_head()
    }
}
