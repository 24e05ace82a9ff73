//! How samples are split into chunks: the rules of Prometheus's head appender, so blocks we
//! write have the chunk boundaries Prometheus would produce for the same samples.

use crate::chunkenc::{
    Chunk, CounterResetHint, Encoding, FloatHistogram, FloatHistogramAppender, Histogram,
    HistogramAppender, XorAppender, is_stale_nan,
};
use crate::error::Result;

/// An XOR chunk is cut before appending once it is larger than this (1024 − 19 bytes).
const MAX_XOR_BYTES_BEFORE_APPEND: usize = 1024 - 19;
/// Size target of histogram chunks.
const TARGET_BYTES_PER_HISTOGRAM_CHUNK: usize = 1024;
/// Histogram chunks are not cut for size before holding this many samples.
const MIN_SAMPLES_PER_HISTOGRAM_CHUNK: usize = 10;

fn range_for_timestamp(t: i64, width: i64) -> i64 {
    (t / width).saturating_mul(width).saturating_add(width)
}

fn compute_chunk_end_time(start: i64, cur: i64, max_t: i64, ratio_to_full: f64) -> i64 {
    let n = (max_t as f64 - start as f64) / ((cur as f64 - start as f64 + 1.0) * ratio_to_full);
    if n <= 1.0 {
        return max_t;
    }
    (start as f64 + (max_t as f64 - start as f64) / n.floor()) as i64
}

/// Splits float samples into XOR chunks the way Prometheus's head cuts them: at 2× the target
/// sample count, at the chunk range boundary, at an end time predicted after a quarter of the
/// target count, and before a chunk exceeds 1 KiB.
pub fn cut_float_chunks(
    samples: &[(i64, f64)],
    chunk_range: i64,
    spc: usize,
) -> Result<Vec<(Chunk, i64, i64)>> {
    let mut out = Vec::new();
    let mut cur: Option<(XorAppender, i64, i64)> = None; // appender, min, max
    let mut next_at = i64::MAX;
    for &(t, v) in samples {
        let mut cut = cur.is_none();
        if let Some((app, _, _)) = &cur
            && app.len_bytes() > MAX_XOR_BYTES_BEFORE_APPEND
        {
            cut = true;
        }
        if cut {
            if let Some((app, mn, mx)) = cur.take() {
                out.push((
                    Chunk::from_parts(Encoding::Xor, app.into_bytes().into()),
                    mn,
                    mx,
                ));
            }
            cur = Some((XorAppender::new(), t, i64::MIN));
            next_at = range_for_timestamp(t, chunk_range);
        }
        let num = cur.as_ref().map_or(0, |c| usize::from(c.0.num_samples()));
        if num == spc / 4
            && let Some((_, mn, mx)) = &cur
        {
            next_at = compute_chunk_end_time(*mn, *mx, next_at, 4.0);
        }
        if num > 0 && (t >= next_at || num >= spc * 2) {
            if let Some((app, mn, mx)) = cur.take() {
                out.push((
                    Chunk::from_parts(Encoding::Xor, app.into_bytes().into()),
                    mn,
                    mx,
                ));
            }
            cur = Some((XorAppender::new(), t, i64::MIN));
            next_at = range_for_timestamp(t, chunk_range);
        }
        if let Some((app, _, mx)) = cur.as_mut() {
            app.append(t, v)?;
            *mx = t;
        }
    }
    if let Some((app, mn, mx)) = cur.take() {
        out.push((
            Chunk::from_parts(Encoding::Xor, app.into_bytes().into()),
            mn,
            mx,
        ));
    }
    Ok(out)
}

/// What the histogram cutter needs from an appender and its sample type.
trait HistogramKind {
    type H;
    type App;
    const ENCODING: Encoding;
    fn new_app(hint: CounterResetHint) -> Self::App;
    fn fits(a: &Self::App, h: &Self::H) -> bool;
    fn append(a: &mut Self::App, t: i64, h: &Self::H) -> Result<()>;
    fn len_bytes(a: &Self::App) -> usize;
    fn num_samples(a: &Self::App) -> usize;
    fn into_bytes(a: Self::App) -> Vec<u8>;
    fn is_gauge(h: &Self::H) -> bool;
    fn is_stale(h: &Self::H) -> bool;
    /// Whether `cur` shows a counter reset relative to `prev` (same layout).
    fn is_reset(prev: &Self::H, cur: &Self::H) -> bool;
}

struct IntKind;
struct FloatKind;

fn absolute(deltas: &[i64]) -> impl Iterator<Item = i64> + '_ {
    deltas.iter().scan(0i64, |acc, d| {
        *acc = acc.wrapping_add(*d);
        Some(*acc)
    })
}

impl HistogramKind for IntKind {
    type H = Histogram;
    type App = HistogramAppender;
    const ENCODING: Encoding = Encoding::Histogram;
    fn new_app(hint: CounterResetHint) -> HistogramAppender {
        HistogramAppender::new(hint)
    }
    fn fits(a: &HistogramAppender, h: &Histogram) -> bool {
        a.fits(h)
    }
    fn append(a: &mut HistogramAppender, t: i64, h: &Histogram) -> Result<()> {
        a.append(t, h)
    }
    fn len_bytes(a: &HistogramAppender) -> usize {
        a.len_bytes()
    }
    fn num_samples(a: &HistogramAppender) -> usize {
        usize::from(a.num_samples())
    }
    fn into_bytes(a: HistogramAppender) -> Vec<u8> {
        a.into_bytes()
    }
    fn is_gauge(h: &Histogram) -> bool {
        h.counter_reset_hint == CounterResetHint::Gauge
    }
    fn is_stale(h: &Histogram) -> bool {
        is_stale_nan(h.sum)
    }
    fn is_reset(p: &Histogram, c: &Histogram) -> bool {
        c.counter_reset_hint == CounterResetHint::CounterReset
            || c.count < p.count
            || c.zero_count < p.zero_count
            || absolute(&c.positive_buckets)
                .zip(absolute(&p.positive_buckets))
                .any(|(a, b)| a < b)
            || absolute(&c.negative_buckets)
                .zip(absolute(&p.negative_buckets))
                .any(|(a, b)| a < b)
    }
}

impl HistogramKind for FloatKind {
    type H = FloatHistogram;
    type App = FloatHistogramAppender;
    const ENCODING: Encoding = Encoding::FloatHistogram;
    fn new_app(hint: CounterResetHint) -> FloatHistogramAppender {
        FloatHistogramAppender::new(hint)
    }
    fn fits(a: &FloatHistogramAppender, h: &FloatHistogram) -> bool {
        a.fits(h)
    }
    fn append(a: &mut FloatHistogramAppender, t: i64, h: &FloatHistogram) -> Result<()> {
        a.append(t, h)
    }
    fn len_bytes(a: &FloatHistogramAppender) -> usize {
        a.len_bytes()
    }
    fn num_samples(a: &FloatHistogramAppender) -> usize {
        usize::from(a.num_samples())
    }
    fn into_bytes(a: FloatHistogramAppender) -> Vec<u8> {
        a.into_bytes()
    }
    fn is_gauge(h: &FloatHistogram) -> bool {
        h.counter_reset_hint == CounterResetHint::Gauge
    }
    fn is_stale(h: &FloatHistogram) -> bool {
        is_stale_nan(h.sum)
    }
    fn is_reset(p: &FloatHistogram, c: &FloatHistogram) -> bool {
        c.counter_reset_hint == CounterResetHint::CounterReset
            || c.count < p.count
            || c.zero_count < p.zero_count
            || c.positive_buckets
                .iter()
                .zip(&p.positive_buckets)
                .any(|(a, b)| a < b)
            || c.negative_buckets
                .iter()
                .zip(&p.negative_buckets)
                .any(|(a, b)| a < b)
    }
}

fn cut_histograms<K: HistogramKind>(
    samples: &[(i64, K::H)],
    chunk_range: i64,
) -> Result<Vec<(Chunk, i64, i64)>> {
    let mut out = Vec::new();
    let mut cur: Option<(K::App, i64, i64)> = None;
    let mut next_at = i64::MAX;
    let mut computed_end = false;
    let mut prev: Option<&K::H> = None;
    let finish = |out: &mut Vec<(Chunk, i64, i64)>, c: Option<(K::App, i64, i64)>| {
        if let Some((a, mn, mx)) = c {
            out.push((
                Chunk::from_parts(K::ENCODING, K::into_bytes(a).into()),
                mn,
                mx,
            ));
        }
    };
    for (t, h) in samples {
        let t = *t;
        let gauge = K::is_gauge(h);
        let cut_hint = match &cur {
            None => Some(if gauge {
                CounterResetHint::Gauge
            } else {
                CounterResetHint::Unknown
            }),
            Some((a, _, _)) if !K::fits(a, h) => Some(if gauge {
                CounterResetHint::Gauge
            } else {
                CounterResetHint::Unknown
            }),
            Some(_)
                if !gauge
                    && !K::is_stale(h)
                    && prev.is_some_and(|p| !K::is_stale(p) && K::is_reset(p, h)) =>
            {
                Some(CounterResetHint::CounterReset)
            }
            Some((a, mn, mx)) => {
                let num = K::num_samples(a);
                let bytes = K::len_bytes(a);
                let next_range_start = if computed_end {
                    range_for_timestamp(*mn, chunk_range)
                } else {
                    next_at
                };
                if !computed_end && bytes >= TARGET_BYTES_PER_HISTOGRAM_CHUNK / 4 {
                    let ratio = TARGET_BYTES_PER_HISTOGRAM_CHUNK as f64 / bytes as f64;
                    next_at = compute_chunk_end_time(*mn, *mx, next_at, ratio);
                    computed_end = true;
                }
                let due = t >= next_at || bytes >= TARGET_BYTES_PER_HISTOGRAM_CHUNK * 2;
                if due && (num >= MIN_SAMPLES_PER_HISTOGRAM_CHUNK || t >= next_range_start) {
                    Some(if gauge {
                        CounterResetHint::Gauge
                    } else {
                        CounterResetHint::NotCounterReset
                    })
                } else {
                    None
                }
            }
        };
        if let Some(hint) = cut_hint {
            finish(&mut out, cur.take());
            cur = Some((K::new_app(hint), t, t));
            next_at = range_for_timestamp(t, chunk_range);
            computed_end = false;
        }
        if let Some((a, _, mx)) = cur.as_mut() {
            K::append(a, t, h)?;
            *mx = t;
        }
        prev = Some(h);
    }
    finish(&mut out, cur.take());
    Ok(out)
}

/// Splits integer histogram samples into histogram chunks.
pub fn cut_histogram_chunks(
    samples: &[(i64, Histogram)],
    chunk_range: i64,
) -> Result<Vec<(Chunk, i64, i64)>> {
    cut_histograms::<IntKind>(samples, chunk_range)
}

/// Splits float histogram samples into float histogram chunks.
pub fn cut_float_histogram_chunks(
    samples: &[(i64, FloatHistogram)],
    chunk_range: i64,
) -> Result<Vec<(Chunk, i64, i64)>> {
    cut_histograms::<FloatKind>(samples, chunk_range)
}
