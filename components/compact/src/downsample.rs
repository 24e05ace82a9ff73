//! Downsampling: per series and per window of the target resolution, the count, sum, min and max
//! of the samples and a counter with resets removed, written as Thanos aggregate chunks.
//!
//! The batching follows Thanos's `pkg/compact/downsample` so the output matches it value for
//! value: a raw series is split into batches (about 140 windows each, never splitting a window);
//! each batch becomes one aggregate chunk whose windows are stamped with the window's last
//! millisecond (the batch's last sample time for its last window). The counter sub-chunk also
//! holds the batch's first raw value (at its own time) and, repeated at the last window's time,
//! the last raw value, so readers can detect resets between chunks. A 5m block is downsampled
//! to 1h along its chunk boundaries, re-aggregating each aggregate.

use std::path::Path;

use bytes::Bytes;
use strata_tsdb::chunkenc::aggr::{self, NUM_AGGRS, SubChunk};
use strata_tsdb::chunkenc::{XorAppender, is_stale_nan};
use strata_tsdb::meta::ThanosMeta;
use strata_tsdb::{Block, BlockWriter, BlockWriterOptions, Chunk, Encoding, Sample};
use tracing::{info_span, warn};
use ulid::Ulid;

use crate::error::{Error, Result};

/// Raw resolution.
pub const RES_RAW: i64 = 0;
/// 5 minutes, ms.
pub const RES_5M: i64 = 5 * 60 * 1000;
/// 1 hour, ms.
pub const RES_1H: i64 = 60 * 60 * 1000;

const AGGR_COUNT: usize = 0;
const AGGR_SUM: usize = 1;
const AGGR_MIN: usize = 2;
const AGGR_MAX: usize = 3;
const AGGR_COUNTER: usize = 4;

/// What [`downsample`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownsampleStats {
    /// Series written.
    pub series: u64,
    /// Native-histogram series skipped (not downsampled).
    pub histogram_series_skipped: u64,
}

/// Downsamples the block at `input` to `resolution_ms` (raw → [`RES_5M`], 5m → [`RES_1H`]) into
/// a new block under `out_parent`, with `thanos.downsample.resolution` set and the input's time
/// range, compaction section and external labels. Native-histogram series are skipped with a
/// warning.
pub fn downsample(input: &Path, out_parent: &Path, resolution_ms: i64) -> Result<Ulid> {
    downsample_with_stats(input, out_parent, resolution_ms).map(|(u, _)| u)
}

/// [`downsample`], also returning what was done.
pub fn downsample_with_stats(
    input: &Path,
    out_parent: &Path,
    resolution_ms: i64,
) -> Result<(Ulid, DownsampleStats)> {
    let span = info_span!("downsample", input = %input.display(), resolution_ms);
    let _g = span.enter();
    let block = Block::open(input).map_err(Error::read(input))?;
    let meta = block.meta();
    let in_res = meta
        .thanos
        .as_ref()
        .map_or(RES_RAW, |t| t.downsample.resolution);
    if resolution_ms <= 0 || resolution_ms <= in_res {
        return Err(Error::InvalidArgument(format!(
            "block {}: target resolution {resolution_ms} ms is not coarser than its resolution {in_res} ms",
            meta.ulid
        )));
    }
    let mut thanos = meta
        .thanos
        .clone()
        .unwrap_or_else(|| ThanosMeta::new(Default::default(), crate::COMPACTOR_SOURCE, 0));
    thanos.downsample.resolution = resolution_ms;
    thanos.index_stats = None;
    thanos.files.clear();
    thanos.segment_files.clear();
    let mut w = BlockWriter::new(
        out_parent,
        BlockWriterOptions {
            thanos: Some(thanos),
            ..Default::default()
        },
    )
    .map_err(Error::write(out_parent))?;
    w.set_compaction(meta.compaction.clone());
    w.set_time_range(meta.min_time, meta.max_time);

    let mut stats = DownsampleStats::default();
    let refs = block.index().all_postings().map_err(Error::read(input))?;
    for r in refs {
        let (labels, metas) = block.index().series(r).map_err(Error::read(input))?;
        let series_err = |what: String| Error::Series {
            block: input.to_path_buf(),
            series: labels.to_string(),
            what,
        };
        if metas.windows(2).any(|w| w[0].max_time >= w[1].min_time) {
            return Err(series_err("overlapping chunks".into()));
        }
        let deleted = block.tombstones().get(r);
        let mut out = Vec::new();
        if in_res == RES_RAW {
            let mut samples = Vec::new();
            let mut histogram = false;
            for m in &metas {
                let c = block.chunk(m.chunk_ref).map_err(Error::read(input))?;
                let mut last_t = 0i64;
                for s in c.iter() {
                    match s.map_err(|e| series_err(format!("chunk {}: {e}", m.chunk_ref.0)))? {
                        Sample::Float { t, v } => {
                            // As Thanos: stale markers and samples going back in time dropped.
                            if is_stale_nan(v)
                                || t < last_t
                                || deleted.iter().any(|iv| iv.contains(t))
                            {
                                continue;
                            }
                            last_t = t;
                            samples.push((t, v));
                        }
                        _ => histogram = true,
                    }
                }
            }
            if histogram {
                stats.histogram_series_skipped += 1;
                warn!(series = %labels, "native histogram series not downsampled");
                continue;
            }
            let chunks =
                downsample_raw(&samples, resolution_ms).map_err(|e| series_err(e.to_string()))?;
            for (subs, mn, mx) in chunks {
                out.push((encode(&subs), mn, mx));
            }
        } else {
            let mut aggrs = Vec::with_capacity(metas.len());
            for m in &metas {
                if deleted
                    .iter()
                    .any(|iv| iv.mint <= m.max_time && iv.maxt >= m.min_time)
                {
                    return Err(series_err(
                        "tombstones in a downsampled block are not supported".into(),
                    ));
                }
                let c = block.chunk(m.chunk_ref).map_err(Error::read(input))?;
                match c.encoding() {
                    Encoding::Aggr => {
                        let subs = aggr::decode(c.data())
                            .map_err(|e| series_err(format!("chunk {}: {e}", m.chunk_ref.0)))?;
                        aggrs.push(subs);
                    }
                    _ if c.num_samples() == 0 => continue,
                    e => {
                        return Err(series_err(format!(
                            "{} chunk in a downsampled block",
                            e.name()
                        )));
                    }
                }
            }
            if aggrs.is_empty() {
                continue;
            }
            let (mint, maxt) = (metas[0].min_time, metas[metas.len() - 1].max_time);
            let chunks = downsample_aggr(&aggrs, mint, maxt, in_res, resolution_ms)
                .map_err(|e| series_err(e.to_string()))?;
            for (subs, mn, mx) in chunks {
                out.push((encode(&subs), mn, mx));
            }
        }
        if out.is_empty() {
            continue;
        }
        w.add_series_chunks(&labels, out)
            .map_err(Error::write(out_parent))?;
        stats.series += 1;
    }
    if w.num_samples() == 0 {
        return Err(Error::InvalidArgument(format!(
            "block {}: nothing to downsample",
            meta.ulid
        )));
    }
    let ulid = w.finish().map_err(Error::write(out_parent))?;
    Ok((ulid, stats))
}

fn encode(subs: &[Option<SubChunk>; NUM_AGGRS]) -> Chunk {
    Chunk::from_parts(Encoding::Aggr, Bytes::from(aggr::encode(subs)))
}

/// The last millisecond of the window of `resolution` holding `t`.
pub(crate) fn window_end(t: i64, resolution: i64) -> i64 {
    t - t.rem_euclid(resolution) + resolution - 1
}

/// How many chunks a series of `count` samples at resolution `in_res` over `[mint, maxt]`
/// should become at `out_res`: about 140 windows each at most.
fn target_chunk_count(mint: i64, maxt: i64, in_res: i64, out_res: i64, count: usize) -> usize {
    let max_windows = ((maxt - mint) / out_res) as f64;
    let fullness = (count as f64 / ((maxt - mint) as f64 / in_res as f64)).min(1.0);
    let expected = (max_windows * fullness) as usize + 1;
    let mut x = 1;
    while expected / x > 140 {
        x += 1;
    }
    x
}

/// Running aggregates of one window, plus the counter state since the start of the batch.
#[derive(Debug, Clone, Copy)]
struct Aggregator {
    total: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    counter: f64,
    last: f64,
}

impl Aggregator {
    fn new() -> Self {
        Aggregator {
            total: 0,
            count: 0,
            sum: 0.0,
            min: f64::MAX,
            max: -f64::MAX,
            counter: 0.0,
            last: 0.0,
        }
    }

    fn reset_window(&mut self) {
        self.count = 0;
        self.sum = 0.0;
        self.min = f64::MAX;
        self.max = -f64::MAX;
    }

    fn add(&mut self, v: f64) {
        if self.total == 0 {
            self.counter = v;
        } else if v < self.last {
            // A reset: the counter restarted from zero.
            self.counter += v;
        } else {
            self.counter += v - self.last;
        }
        self.last = v;
        self.sum += v;
        self.count += 1;
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// Aggregates time-ordered `data` per window, calling `emit(window time, aggregator)` at each
/// window's end; the last window is stamped with the last sample's time. Returns that time.
fn aggregate_windows(
    data: &[(i64, f64)],
    resolution: i64,
    mut emit: impl FnMut(i64, &Aggregator),
) -> i64 {
    let mut a = Aggregator::new();
    let mut next_t: i64 = -1;
    let last_t = data.last().map_or(-1, |s| s.0);
    for &(t, v) in data {
        if is_stale_nan(v) {
            continue;
        }
        if t > next_t {
            if next_t != -1 {
                emit(next_t, &a);
            }
            a.reset_window();
            next_t = window_end(t, resolution).min(last_t);
        }
        a.add(v);
    }
    emit(next_t, &a);
    next_t
}

type AggrOut = ([Option<SubChunk>; NUM_AGGRS], i64, i64);

struct Apps {
    apps: [Option<XorAppender>; NUM_AGGRS],
    mint: i64,
    maxt: i64,
}

impl Apps {
    fn new() -> Self {
        Apps {
            apps: Default::default(),
            mint: i64::MAX,
            maxt: i64::MIN,
        }
    }

    fn append(&mut self, at: usize, t: i64, v: f64) -> strata_tsdb::Result<()> {
        self.apps[at]
            .get_or_insert_with(XorAppender::new)
            .append(t, v)
    }

    fn window(&mut self, t: i64) {
        self.mint = self.mint.min(t);
        self.maxt = self.maxt.max(t);
    }

    fn finish(self) -> AggrOut {
        let subs = self
            .apps
            .map(|a| a.map(|a| (Encoding::Xor.as_u8(), Bytes::from(a.into_bytes()))));
        (subs, self.mint, self.maxt)
    }
}

/// Raw float samples (time-ordered, stale markers removed) → aggregate chunks, as Thanos
/// batches them.
pub(crate) fn downsample_raw(
    data: &[(i64, f64)],
    resolution: i64,
) -> strata_tsdb::Result<Vec<AggrOut>> {
    let Some((&(mint, _), &(maxt, _))) = data.first().zip(data.last()) else {
        return Ok(Vec::new());
    };
    let num_chunks = target_chunk_count(mint, maxt, 60_000, resolution, data.len());
    let batch_size = data.len() / num_chunks + 1;
    let mut out = Vec::with_capacity(num_chunks);
    let mut rest = data;
    while !rest.is_empty() {
        let mut j = batch_size.min(rest.len());
        let cur_w = window_end(rest[j - 1].0, resolution);
        while j < rest.len() && rest[j].0 <= cur_w {
            j += 1;
        }
        let batch: Vec<(i64, f64)> = rest[..j]
            .iter()
            .copied()
            .filter(|s| !s.1.is_nan())
            .collect();
        rest = &rest[j..];
        if batch.is_empty() {
            continue;
        }
        let mut apps = Apps::new();
        // Appends fail only past 65535 samples in one chunk.
        apps.append(AGGR_COUNTER, batch[0].0, batch[0].1)?;
        let mut res = Ok(());
        let last_t = aggregate_windows(&batch, resolution, |t, a| {
            apps.window(t);
            if res.is_ok() {
                res = apps
                    .append(AGGR_COUNT, t, a.count as f64)
                    .and_then(|_| apps.append(AGGR_SUM, t, a.sum))
                    .and_then(|_| apps.append(AGGR_MIN, t, a.min))
                    .and_then(|_| apps.append(AGGR_MAX, t, a.max))
                    .and_then(|_| apps.append(AGGR_COUNTER, t, a.counter));
            }
        });
        res?;
        apps.append(AGGR_COUNTER, last_t, batch[batch.len() - 1].1)?;
        out.push(apps.finish());
    }
    Ok(out)
}

/// Decodes the float samples of a sub-chunk, as Thanos expands them: stale markers and samples
/// before the previous one (or before 0) dropped.
fn expand(sub: &SubChunk, buf: &mut Vec<(i64, f64)>) -> strata_tsdb::Result<()> {
    let c = Chunk::new(sub.0, sub.1.clone())?;
    let mut last_t = 0;
    for s in c.float_iter()? {
        let (t, v) = s?;
        if is_stale_nan(v) || t < last_t {
            continue;
        }
        last_t = t;
        buf.push((t, v));
    }
    Ok(())
}

/// Joins the counter sub-chunks of consecutive aggregate chunks into one series with resets
/// removed: each chunk's repeated last timestamp carries the true last raw value, compared with
/// the next chunk's first value to find resets between chunks. Returns the samples and the last
/// raw value.
fn counter_series(subs: &[&SubChunk]) -> strata_tsdb::Result<(Vec<(i64, f64)>, f64)> {
    let mut out = Vec::new();
    let (mut last_t, mut last_v, mut total) = (0i64, 0f64, 0f64);
    let mut first = true;
    for sub in subs {
        let c = Chunk::new(sub.0, sub.1.clone())?;
        for s in c.float_iter()? {
            let (t, v) = s?;
            if v.is_nan() {
                continue;
            }
            if first {
                first = false;
                (last_t, last_v, total) = (t, v, v);
            } else if t > last_t {
                total += if v >= last_v { v - last_v } else { v };
                (last_t, last_v) = (t, v);
            } else {
                if t == last_t {
                    last_v = v;
                }
                continue;
            }
            if !(is_stale_nan(total) || out.last().is_some_and(|&(lt, _)| t < lt) || t < 0) {
                out.push((last_t, total));
            }
        }
    }
    Ok((out, last_v))
}

/// Aggregate chunks of one series (in time order) → aggregate chunks at `out_res`, along the
/// input chunk boundaries.
pub(crate) fn downsample_aggr(
    chunks: &[[Option<SubChunk>; NUM_AGGRS]],
    mint: i64,
    maxt: i64,
    in_res: i64,
    out_res: i64,
) -> strata_tsdb::Result<Vec<AggrOut>> {
    let mut windows = 0usize;
    for c in chunks {
        if let Some(sub) = &c[AGGR_COUNT] {
            windows += usize::from(Chunk::new(sub.0, sub.1.clone())?.num_samples());
        }
    }
    let num_chunks = target_chunk_count(mint, maxt, in_res, out_res, windows);
    let batch = (chunks.len() / num_chunks).max(1);
    let mut out = Vec::new();
    for part in chunks.chunks(batch) {
        out.push(downsample_aggr_batch(part, out_res)?);
    }
    Ok(out)
}

fn downsample_aggr_batch(
    part: &[[Option<SubChunk>; NUM_AGGRS]],
    res: i64,
) -> strata_tsdb::Result<AggrOut> {
    let mut apps = Apps::new();
    let mut buf = Vec::new();
    let mut err = None;
    for (at, pick) in [
        (
            AGGR_COUNT,
            (|a: &Aggregator| a.sum) as fn(&Aggregator) -> f64,
        ),
        (AGGR_SUM, |a| a.sum),
        (AGGR_MIN, |a| a.min),
        (AGGR_MAX, |a| a.max),
    ] {
        buf.clear();
        for c in part {
            if let Some(sub) = &c[at] {
                expand(sub, &mut buf)?;
            }
        }
        if buf.is_empty() {
            continue;
        }
        aggregate_windows(&buf, res, |t, a| {
            apps.window(t);
            if let Err(e) = apps.append(at, t, pick(a)) {
                err = Some(e);
            }
        });
    }
    let counters: Vec<&SubChunk> = part
        .iter()
        .filter_map(|c| c[AGGR_COUNTER].as_ref())
        .collect();
    let (series, last_v) = counter_series(&counters)?;
    if let Some(&(t0, v0)) = series.first() {
        apps.append(AGGR_COUNTER, t0, v0)?;
        let last_t = aggregate_windows(&series, res, |t, a| {
            apps.window(t);
            if let Err(e) = apps.append(AGGR_COUNTER, t, a.counter) {
                err = Some(e);
            }
        });
        apps.append(AGGR_COUNTER, last_t, last_v)?;
    }
    if let Some(e) = err {
        return Err(e);
    }
    Ok(apps.finish())
}

#[cfg(test)]
mod tests;
