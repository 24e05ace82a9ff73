//! Chunk records read in the order a block's series ask for them, from merged range reads that
//! are themselves read as streams: what is held is the piece being cut up, not the whole read.
//!
//! A block's chunks are written series after series (in label order, each series' chunks in
//! time order), so a label-ordered answer wants them at increasing offsets: each merged range is
//! consumed front to back while its series are sent. The caller checks that order
//! ([`is_increasing`]) and reads the block whole otherwise.

use std::collections::VecDeque;
use std::ops::{Deref, Range};
use std::sync::atomic::Ordering::Relaxed;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::{BoxStream, Fuse};
use strata_tsdb::ChunkRef;
use strata_tsdb::chunks::chunk_record_size;

use super::{BucketBlock, ChunkBytes};
use crate::error::Result;
use crate::stats::{QueryStats, RequestBudget};

/// Merged reads opened ahead of the one being consumed (their GETs in flight meanwhile).
pub(crate) const READ_AHEAD: usize = 3;
/// The longest chunk length varint.
const LEN_FIELD_MAX: u64 = 5;

/// One planned GET: a merged range of a segment file.
#[derive(Debug, Clone)]
pub(crate) struct PlannedRead {
    /// Segment (0-based).
    pub seg: u32,
    /// Segment object name.
    pub obj: String,
    /// Segment size in bytes.
    pub size: u64,
    /// The range to GET.
    pub range: Range<u64>,
}

/// Whether `refs` (in the order they will be asked for) lie at strictly increasing offsets.
pub(crate) fn is_increasing(refs: impl IntoIterator<Item = ChunkRef>) -> bool {
    let mut last: Option<(u32, u32)> = None;
    for r in refs {
        let at = (r.segment(), r.offset());
        if last.is_some_and(|l| l >= at) {
            return false;
        }
        last = Some(at);
    }
    true
}

/// Bytes of one merged read, as they arrive.
struct Current {
    read: PlannedRead,
    /// Object offset of the first buffered byte.
    pos: u64,
    parts: VecDeque<Bytes>,
    buffered: u64,
    body: Fuse<BoxStream<'static, strata_objstore::Result<Bytes>>>,
}

/// A merged read being opened (a whole small read, or a stream's GET being sent).
type Opening = tokio::task::JoinHandle<strata_objstore::Result<Current>>;

/// Reads chunk records at increasing offsets (see the module docs).
pub(crate) struct ChunkReader<B, Bu, St>
where
    B: Deref<Target = BucketBlock>,
    Bu: Deref<Target = RequestBudget>,
    St: Deref<Target = QueryStats>,
{
    block: B,
    budget: Bu,
    stats: St,
    /// Reads not opened yet.
    planned: VecDeque<PlannedRead>,
    /// Reads opened ahead, in order.
    opening: VecDeque<Opening>,
    current: Option<Current>,
}

impl<B, Bu, St> Drop for ChunkReader<B, Bu, St>
where
    B: Deref<Target = BucketBlock>,
    Bu: Deref<Target = RequestBudget>,
    St: Deref<Target = QueryStats>,
{
    fn drop(&mut self) {
        for h in &self.opening {
            h.abort();
        }
    }
}

impl<B, Bu, St> ChunkReader<B, Bu, St>
where
    B: Deref<Target = BucketBlock>,
    Bu: Deref<Target = RequestBudget>,
    St: Deref<Target = QueryStats>,
{
    /// A reader over `planned` reads (in offset order; their bytes already charged to `budget`).
    pub(crate) fn new(block: B, budget: Bu, stats: St, planned: Vec<PlannedRead>) -> Self {
        ChunkReader {
            block,
            budget,
            stats,
            planned: planned.into(),
            opening: VecDeque::new(),
            current: None,
        }
    }

    /// Starts reads ahead until [`READ_AHEAD`] are in flight.
    fn open_ahead(&mut self) {
        while self.opening.len() < READ_AHEAD {
            let Some(read) = self.planned.pop_front() else {
                return;
            };
            let bucket = self.block.bucket.clone();
            let whole = self.block.opts.whole_read_max;
            // Counted when sent: a read opened ahead and then dropped (the call cancelled) was
            // still a request to the bucket.
            self.stats.get_requests.fetch_add(1, Relaxed);
            self.opening
                .push_back(tokio::spawn(open(bucket, read, whole)));
        }
    }

    /// Moves to the next merged read; `false` when there is none.
    async fn advance(&mut self) -> Result<bool> {
        self.current = None;
        // Once started, `open_ahead` keeps reads in flight while any are planned; the first one
        // is opened right here (no task hand-off for a one-read answer), the next ones meanwhile
        // on their own tasks.
        let next = if let Some(h) = self.opening.pop_front() {
            Some(h.await.map_err(|e| crate::error::Error::ReadTask {
                block: self.block.ulid(),
                msg: e.to_string(),
            })?)
        } else if let Some(read) = self.planned.pop_front() {
            self.stats.get_requests.fetch_add(1, Relaxed);
            self.open_ahead();
            Some(
                open(
                    self.block.bucket.clone(),
                    read,
                    self.block.opts.whole_read_max,
                )
                .await,
            )
        } else {
            None
        };
        self.open_ahead();
        match next {
            Some(c) => {
                let c = c.map_err(|e| self.block.os_err(e))?;
                self.stats.get_bytes.fetch_add(c.buffered, Relaxed);
                self.current = Some(c);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The chunk record at `r`.
    pub(crate) async fn chunk(&mut self, r: ChunkRef) -> Result<ChunkBytes> {
        let (seg, off) = (r.segment(), u64::from(r.offset()));
        loop {
            match &self.current {
                Some(c) if c.read.seg == seg && c.read.range.contains(&off) && c.pos <= off => {
                    break;
                }
                Some(c) if (c.read.seg, c.read.range.end) > (seg, off) => {
                    return Err(self.unplanned(r));
                }
                _ => {
                    if !self.advance().await? {
                        return Err(self.unplanned(r));
                    }
                }
            }
        }
        let block = &*self.block;
        let stats = &*self.stats;
        let Some(c) = self.current.as_mut() else {
            return Err(self.unplanned(r));
        };
        let obj = c.read.obj.clone();
        let truncated = |what| strata_tsdb::Error::Truncated {
            file: obj.clone(),
            offset: off,
            what,
        };
        c.skip_to(off, stats).await.map_err(|e| block.os_err(e))?;
        let head_end = (off + LEN_FIELD_MAX).min(c.read.range.end);
        c.fill(head_end, stats).await.map_err(|e| block.os_err(e))?;
        let head = c.peek((head_end - off) as usize);
        let need = chunk_record_size(&obj, &head, off)
            .map_err(|e| block.tsdb_err(e))?
            .ok_or_else(|| block.tsdb_err(truncated("chunk length")))?;
        if off.saturating_add(need) <= c.read.range.end {
            if !c
                .fill(off + need, stats)
                .await
                .map_err(|e| block.os_err(e))?
            {
                return Err(block.tsdb_err(truncated("chunk record")));
            }
            let rec = c.take(need as usize);
            return block.decode_chunk(&obj, &rec, off);
        }
        // Longer than the estimate the range was cut to: read exactly (rare).
        if off.saturating_add(need) > c.read.size {
            return Err(block.tsdb_err(strata_tsdb::Error::TooLarge {
                file: obj,
                offset: off,
                what: "chunk record",
                len: need,
            }));
        }
        let exact: Range<u64> = off..off + need;
        let f = block
            .fetch(&obj, std::slice::from_ref(&exact), &self.budget, stats)
            .await?;
        let rec = f.parts.into_iter().next().unwrap_or_default();
        block.decode_chunk(&obj, &rec, off)
    }

    /// The block read.
    pub(crate) fn block(&self) -> &BucketBlock {
        &self.block
    }

    fn unplanned(&self, r: ChunkRef) -> crate::error::Error {
        self.block
            .tsdb_err(strata_tsdb::Error::InvalidArgument(format!(
                "chunk {:#x} asked for out of order or not planned",
                r.0
            )))
    }
}

/// Sends the GET of `read`: one of at most `whole_max` bytes is read whole, a longer one is
/// opened as a stream.
async fn open(
    bucket: strata_objstore::Bucket,
    read: PlannedRead,
    whole_max: u64,
) -> strata_objstore::Result<Current> {
    let (body, parts, buffered): (BoxStream<'static, _>, VecDeque<Bytes>, u64) =
        if read.range.end - read.range.start <= whole_max {
            let b = bucket.get_range(&read.obj, read.range.clone()).await?;
            let n = b.len() as u64;
            (futures::stream::empty().boxed(), VecDeque::from([b]), n)
        } else {
            let s = bucket
                .get_range_stream(&read.obj, read.range.clone())
                .await?;
            (s, VecDeque::new(), 0)
        };
    Ok(Current {
        pos: read.range.start,
        read,
        parts,
        buffered,
        body: body.fuse(),
    })
}

impl Current {
    /// Reads pieces until the bytes before `upto` are buffered; `false` if the body ended first.
    async fn fill(&mut self, upto: u64, stats: &QueryStats) -> strata_objstore::Result<bool> {
        while self.pos + self.buffered < upto {
            match self.body.next().await {
                Some(Ok(b)) => {
                    stats.get_bytes.fetch_add(b.len() as u64, Relaxed);
                    self.buffered += b.len() as u64;
                    self.parts.push_back(b);
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Drops the bytes before `off`, reading (and dropping) pieces as needed.
    async fn skip_to(&mut self, off: u64, stats: &QueryStats) -> strata_objstore::Result<()> {
        while self.pos < off {
            if self.buffered == 0 && !self.fill(self.pos + 1, stats).await? {
                // Short body: `fill` on the record reports it.
                return Ok(());
            }
            self.consume(off - self.pos, |_| {});
        }
        Ok(())
    }

    /// Takes up to `n` buffered bytes off the front, handing them to `sink` piece by piece.
    fn consume(&mut self, n: u64, mut sink: impl FnMut(&[u8])) {
        let mut left = n;
        while left > 0 {
            let Some(front) = self.parts.front_mut() else {
                return;
            };
            let k = left.min(front.len() as u64) as usize;
            sink(&front[..k]);
            if k == front.len() {
                self.parts.pop_front();
            } else {
                let _ = front.split_to(k);
            }
            self.pos += k as u64;
            self.buffered -= k as u64;
            left -= k as u64;
        }
    }

    /// A copy of the first `n` buffered bytes (fewer if fewer are buffered).
    fn peek(&self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        for p in &self.parts {
            let left = n - out.len();
            if left == 0 {
                break;
            }
            out.extend_from_slice(&p[..left.min(p.len())]);
        }
        out
    }

    /// The first `n` buffered bytes (all must be buffered), copied out so that the piece they
    /// came from is freed once read past.
    fn take(&mut self, n: usize) -> Bytes {
        let mut out = BytesMut::with_capacity(n);
        self.consume(n as u64, |b| out.extend_from_slice(b));
        out.freeze()
    }
}
