//! Between the engine's types and the StoreAPI's: matchers to the wire, wire labels to
//! [`Labels`], and chunks (raw or downsampled aggregates) decoded into [`Series`] samples.

use std::sync::Arc;

use promql_parser::label::{MatchOp, Matcher};
use strata_promql::histogram::{
    CounterResetHint as PromHint, FloatHistogram as PromFloatHistogram, Span as PromSpan,
};
use strata_promql::{Labels, Series};
use strata_storeapi::pb::thanos::{self as pb, Aggr, AggrChunk, LabelMatcher, label_matcher};
use strata_tsdb::chunkenc::{
    Chunk, CounterResetHint as TsdbHint, Encoding, FloatHistogram as TsdbFloatHistogram, Histogram,
    Sample, Span as TsdbSpan, XorIterator,
};

/// Why a series from a store could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A chunk's bytes did not decode.
    #[error("decode {encoding} chunk [{min_time}, {max_time}] of {series}: {reason}")]
    Chunk {
        /// The series' labels.
        series: String,
        /// The chunk's encoding name.
        encoding: &'static str,
        /// The chunk's time range.
        min_time: i64,
        /// The chunk's time range.
        max_time: i64,
        /// What the decoder said.
        reason: String,
    },
    /// A chunk's encoding number is not one the StoreAPI defines.
    #[error("chunk of {series} has unknown encoding {encoding}")]
    UnknownEncoding {
        /// The series' labels.
        series: String,
        /// The encoding number.
        encoding: i32,
    },
    /// A downsampled chunk lacks the aggregate the query needs.
    #[error("downsampled chunk [{min_time}, {max_time}] of {series} has no {aggregate} aggregate")]
    MissingAggregate {
        /// The series' labels.
        series: String,
        /// The aggregate wanted.
        aggregate: &'static str,
        /// The chunk's time range.
        min_time: i64,
        /// The chunk's time range.
        max_time: i64,
    },
    /// A downsampled aggregate held a histogram sample.
    #[error("downsampled {aggregate} chunk of {series} holds non-float samples")]
    NonFloatAggregate {
        /// The series' labels.
        series: String,
        /// The aggregate.
        aggregate: &'static str,
    },
}

/// Which aggregate of downsampled chunks a selection reads, chosen from the function the selector
/// feeds (as Thanos chooses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggrChoice {
    /// `count` (`count_over_time`, `count`).
    Count,
    /// `sum` (`sum_over_time`).
    Sum,
    /// `min` (`min_over_time`, `min`).
    Min,
    /// `max` (`max_over_time`, `max`).
    Max,
    /// `counter` (`rate`, `increase`, `irate`, `resets`).
    Counter,
    /// `sum / count`: the window average (everything else).
    Avg,
}

impl AggrChoice {
    /// The aggregate for a selector that feeds function `func` (`None`: no single function).
    pub fn for_func(func: Option<&str>) -> Self {
        let Some(f) = func else {
            return AggrChoice::Avg;
        };
        if f == "min" || f.starts_with("min_") {
            AggrChoice::Min
        } else if f == "max" || f.starts_with("max_") {
            AggrChoice::Max
        } else if f == "count" || f.starts_with("count_") {
            AggrChoice::Count
        } else if f.starts_with("sum_") {
            AggrChoice::Sum
        } else if matches!(f, "rate" | "increase" | "irate" | "resets") {
            AggrChoice::Counter
        } else {
            AggrChoice::Avg
        }
    }

    /// The aggregates to ask stores for (the request's `aggregates` field).
    pub fn aggregates(self) -> Vec<i32> {
        let a = match self {
            AggrChoice::Count => vec![Aggr::Count],
            AggrChoice::Sum => vec![Aggr::Sum],
            AggrChoice::Min => vec![Aggr::Min],
            AggrChoice::Max => vec![Aggr::Max],
            AggrChoice::Counter => vec![Aggr::Counter],
            AggrChoice::Avg => vec![Aggr::Count, Aggr::Sum],
        };
        a.into_iter().map(|a| a as i32).collect()
    }
}

/// Converts the engine's matchers to the wire form (regexes as written, unanchored).
pub fn matchers_to_pb(matchers: &[Matcher]) -> Vec<LabelMatcher> {
    matchers
        .iter()
        .map(|m| {
            let ty = match m.op {
                MatchOp::Equal => label_matcher::Type::Eq,
                MatchOp::NotEqual => label_matcher::Type::Neq,
                MatchOp::Re(_) => label_matcher::Type::Re,
                MatchOp::NotRe(_) => label_matcher::Type::Nre,
            };
            LabelMatcher {
                r#type: ty as i32,
                name: m.name.clone(),
                value: m.value.clone(),
            }
        })
        .collect()
}

/// Wire labels to a [`Labels`] set (the strings are moved, not copied).
pub fn labels_from_pb(labels: Vec<pb::Label>) -> Labels {
    Labels::new(labels.into_iter().map(|l| (l.name, l.value)))
}

/// One decoded sample value.
#[derive(Debug, Clone)]
enum Value {
    Float(f64),
    Hist(Arc<PromFloatHistogram>),
}

/// Decodes a wire series into engine samples in `[min_t, max_t]`, reading raw chunks as they are
/// and downsampled chunks through `aggr`. Samples repeated at one timestamp (overlapping chunks)
/// are kept once (the first).
pub fn decode_series(
    series: pb::Series,
    aggr: AggrChoice,
    min_t: i64,
    max_t: i64,
) -> Result<Series, DecodeError> {
    let labels = labels_from_pb(series.labels);
    let mut points: Vec<(i64, Value)> = Vec::new();
    // Downsampled counters are only meaningful read across chunk boundaries (see
    // `CounterResets`); raw-only series are read as they are, so `resets()` stays exact there.
    let counter = aggr == AggrChoice::Counter && series.chunks.iter().any(|c| c.raw.is_none());
    let mut chunks: Vec<&AggrChunk> = series
        .chunks
        .iter()
        .filter(|c| c.max_time >= min_t && c.min_time <= max_t)
        .collect();
    if counter {
        chunks.sort_by_key(|c| c.min_time);
    }
    if !counter && let Some(samples) = decode_raw_floats(&chunks, &labels, min_t, max_t)? {
        return Ok(Series {
            labels,
            samples,
            ..Default::default()
        });
    }
    let mut resets = CounterResets::default();
    for c in chunks {
        let mut chunk_points = Vec::new();
        match &c.raw {
            Some(raw) => decode_raw(raw, c, &labels, &mut chunk_points)?,
            None => decode_aggregate(c, aggr, &labels, &mut chunk_points)?,
        }
        if counter {
            resets.apply(chunk_points, &mut points);
        } else {
            points.append(&mut chunk_points);
        }
    }
    points.retain(|(t, _)| *t >= min_t && *t <= max_t);
    // Stable: the first of several samples at one timestamp wins.
    points.sort_by_key(|(t, _)| *t);
    points.dedup_by_key(|(t, _)| *t);
    let mut out = Series {
        labels,
        ..Default::default()
    };
    for (t, v) in points {
        match v {
            Value::Float(f) => out.samples.push((t, f)),
            Value::Hist(h) => out.histograms.push((t, h)),
        }
    }
    Ok(out)
}

/// The common case, decoded without intermediate copies: only raw XOR chunks, in time order and
/// not overlapping. Decodes each chunk straight into the output, keeping `[min_t, max_t]` and
/// stopping a chunk's decoding past `max_t`. `None` when the chunks are anything else (the
/// caller takes the general path).
fn decode_raw_floats(
    chunks: &[&AggrChunk],
    labels: &Labels,
    min_t: i64,
    max_t: i64,
) -> Result<Option<Vec<(i64, f64)>>, DecodeError> {
    let xor = pb::chunk::Encoding::Xor as i32;
    let simple = chunks
        .iter()
        .all(|c| c.raw.as_ref().is_some_and(|r| r.r#type == xor))
        && chunks.windows(2).all(|w| w[0].max_time < w[1].min_time);
    if !simple {
        return Ok(None);
    }
    // Room for the chunks wholly inside the range (their sample counts head their data).
    let inside: usize = chunks
        .iter()
        .filter(|c| c.min_time >= min_t && c.max_time <= max_t)
        .filter_map(|c| c.raw.as_ref()?.data.get(..2))
        .map(|n| usize::from(u16::from_be_bytes([n[0], n[1]])))
        .sum();
    let mut samples = Vec::with_capacity(inside);
    for c in chunks {
        let Some(raw) = &c.raw else { continue };
        for r in XorIterator::new(&raw.data) {
            let (t, v) = r.map_err(|e| DecodeError::Chunk {
                series: labels.to_string(),
                encoding: Encoding::Xor.name(),
                min_time: c.min_time,
                max_time: c.max_time,
                reason: e.to_string(),
            })?;
            if t > max_t {
                break;
            }
            if t >= min_t {
                samples.push((t, v));
            }
        }
    }
    // Chunk times that misstate their samples: order them as the general path does.
    if !samples.windows(2).all(|w| w[0].0 < w[1].0) {
        samples.sort_by_key(|(t, _)| *t);
        samples.dedup_by_key(|(t, _)| *t);
    }
    Ok(Some(samples))
}

/// Reads a series of downsampled `counter` aggregates the way Thanos's querier does
/// (`ApplyCounterResetsSeriesIterator`), so `rate()` over it equals `rate()` over the raw data:
/// - each aggregate chunk starts with the raw counter value at its start and ends with a repeat
///   of its last timestamp carrying the raw last value; that repeat is not a sample, it only tells
///   whether the next chunk starts after a reset;
/// - the output is one monotonic counter: a drop is a reset (the new value is added, not the
///   difference), so the engine sees no reset at all (`resets()` over downsampled data is 0, as
///   in Thanos);
/// - NaN values are skipped, and samples that go back in time (overlapping chunks) are dropped.
#[derive(Debug, Default)]
struct CounterResets {
    /// `(timestamp, raw value)` of the last sample read.
    last: Option<(i64, f64)>,
    /// The accumulated counter.
    total: f64,
}

impl CounterResets {
    fn apply(&mut self, chunk: Vec<(i64, Value)>, out: &mut Vec<(i64, Value)>) {
        for (t, v) in chunk {
            let f = match v {
                Value::Float(f) => f,
                hist => {
                    // Histogram counters carry their own reset hints.
                    if self.last.is_none_or(|(lt, _)| t > lt) {
                        self.last = Some((t, self.last.map_or(0.0, |(_, lv)| lv)));
                        out.push((t, hist));
                    }
                    continue;
                }
            };
            if f.is_nan() {
                continue;
            }
            match self.last {
                None => {
                    self.total = f;
                    self.last = Some((t, f));
                    out.push((t, Value::Float(f)));
                }
                Some((lt, lv)) if t > lt => {
                    self.total += if f >= lv { f - lv } else { f };
                    self.last = Some((t, f));
                    out.push((t, Value::Float(self.total)));
                }
                // The chunk's closing repeat: the true last raw value.
                Some((lt, _)) if t == lt => self.last = Some((t, f)),
                Some(_) => {}
            }
        }
    }
}

fn to_chunk(c: &pb::Chunk, labels: &Labels) -> Result<Chunk, DecodeError> {
    let enc = match pb::chunk::Encoding::try_from(c.r#type) {
        Ok(pb::chunk::Encoding::Xor) => Encoding::Xor,
        Ok(pb::chunk::Encoding::Histogram) => Encoding::Histogram,
        Ok(pb::chunk::Encoding::FloatHistogram) => Encoding::FloatHistogram,
        Err(_) => {
            return Err(DecodeError::UnknownEncoding {
                series: labels.to_string(),
                encoding: c.r#type,
            });
        }
    };
    Ok(Chunk::from_parts(enc, c.data.clone()))
}

fn decode_chunk(
    c: &pb::Chunk,
    ac: &AggrChunk,
    labels: &Labels,
) -> Result<Vec<Sample>, DecodeError> {
    let chunk = to_chunk(c, labels)?;
    chunk.samples().map_err(|e| DecodeError::Chunk {
        series: labels.to_string(),
        encoding: chunk.encoding().name(),
        min_time: ac.min_time,
        max_time: ac.max_time,
        reason: e.to_string(),
    })
}

fn decode_raw(
    raw: &pb::Chunk,
    ac: &AggrChunk,
    labels: &Labels,
    out: &mut Vec<(i64, Value)>,
) -> Result<(), DecodeError> {
    for s in decode_chunk(raw, ac, labels)? {
        let v = match s {
            Sample::Float { t, v } => (t, Value::Float(v)),
            Sample::Histogram { t, h } => (t, Value::Hist(Arc::new(int_histogram(&h)))),
            Sample::FloatHistogram { t, h } => (t, Value::Hist(Arc::new(float_histogram(&h)))),
        };
        out.push(v);
    }
    Ok(())
}

fn floats_of(
    c: Option<&pb::Chunk>,
    name: &'static str,
    ac: &AggrChunk,
    labels: &Labels,
) -> Result<Vec<(i64, f64)>, DecodeError> {
    let c = c.ok_or_else(|| DecodeError::MissingAggregate {
        series: labels.to_string(),
        aggregate: name,
        min_time: ac.min_time,
        max_time: ac.max_time,
    })?;
    decode_chunk(c, ac, labels)?
        .into_iter()
        .map(|s| match s {
            Sample::Float { t, v } => Ok((t, v)),
            _ => Err(DecodeError::NonFloatAggregate {
                series: labels.to_string(),
                aggregate: name,
            }),
        })
        .collect()
}

fn decode_aggregate(
    ac: &AggrChunk,
    aggr: AggrChoice,
    labels: &Labels,
    out: &mut Vec<(i64, Value)>,
) -> Result<(), DecodeError> {
    let floats = match aggr {
        AggrChoice::Count => floats_of(ac.count.as_ref(), "count", ac, labels)?,
        AggrChoice::Sum => floats_of(ac.sum.as_ref(), "sum", ac, labels)?,
        AggrChoice::Min => floats_of(ac.min.as_ref(), "min", ac, labels)?,
        AggrChoice::Max => floats_of(ac.max.as_ref(), "max", ac, labels)?,
        AggrChoice::Counter => floats_of(ac.counter.as_ref(), "counter", ac, labels)?,
        AggrChoice::Avg => {
            let sums = floats_of(ac.sum.as_ref(), "sum", ac, labels)?;
            let counts = floats_of(ac.count.as_ref(), "count", ac, labels)?;
            // Both aggregates have one sample per window at the same timestamps; pair them up.
            let mut avg = Vec::with_capacity(sums.len());
            let mut ci = counts.iter().peekable();
            for (t, s) in sums {
                while ci.next_if(|(ct, _)| *ct < t).is_some() {}
                if let Some((_, c)) = ci.next_if(|(ct, _)| *ct == t) {
                    avg.push((t, s / c));
                }
            }
            avg
        }
    };
    out.extend(floats.into_iter().map(|(t, v)| (t, Value::Float(v))));
    Ok(())
}

fn hint(h: TsdbHint) -> PromHint {
    match h {
        TsdbHint::Unknown => PromHint::Unknown,
        TsdbHint::CounterReset => PromHint::CounterReset,
        TsdbHint::NotCounterReset => PromHint::NotCounterReset,
        TsdbHint::Gauge => PromHint::Gauge,
    }
}

fn spans(s: &[TsdbSpan]) -> Vec<PromSpan> {
    s.iter()
        .map(|s| PromSpan {
            offset: s.offset,
            length: s.length,
        })
        .collect()
}

/// Integer bucket deltas to absolute float counts.
fn absolute(deltas: &[i64]) -> Vec<f64> {
    let mut acc: i64 = 0;
    deltas
        .iter()
        .map(|d| {
            acc = acc.wrapping_add(*d);
            acc as f64
        })
        .collect()
}

fn int_histogram(h: &Histogram) -> PromFloatHistogram {
    PromFloatHistogram {
        counter_reset_hint: hint(h.counter_reset_hint),
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: h.zero_count as f64,
        count: h.count as f64,
        sum: h.sum,
        positive_spans: spans(&h.positive_spans),
        negative_spans: spans(&h.negative_spans),
        positive_buckets: absolute(&h.positive_buckets),
        negative_buckets: absolute(&h.negative_buckets),
        custom_values: h.custom_values.clone(),
    }
}

fn float_histogram(h: &TsdbFloatHistogram) -> PromFloatHistogram {
    PromFloatHistogram {
        counter_reset_hint: hint(h.counter_reset_hint),
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: h.zero_count,
        count: h.count,
        sum: h.sum,
        positive_spans: spans(&h.positive_spans),
        negative_spans: spans(&h.negative_spans),
        positive_buckets: h.positive_buckets.clone(),
        negative_buckets: h.negative_buckets.clone(),
        custom_values: h.custom_values.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xor(samples: &[(i64, f64)]) -> pb::Chunk {
        let c = Chunk::from_floats(samples).expect("encode");
        pb::Chunk {
            r#type: pb::chunk::Encoding::Xor as i32,
            data: c.data().clone(),
            hash: 0,
        }
    }

    fn series(chunks: Vec<AggrChunk>) -> pb::Series {
        pb::Series {
            labels: vec![pb::Label {
                name: "__name__".into(),
                value: "m".into(),
            }],
            chunks,
        }
    }

    fn downsampled() -> AggrChunk {
        AggrChunk {
            min_time: 0,
            max_time: 600_000,
            raw: None,
            count: Some(xor(&[(300_000, 10.0), (600_000, 5.0)])),
            sum: Some(xor(&[(300_000, 100.0), (600_000, 200.0)])),
            min: Some(xor(&[(300_000, 1.0), (600_000, 2.0)])),
            max: Some(xor(&[(300_000, 30.0), (600_000, 60.0)])),
            counter: Some(xor(&[(300_000, 7.0), (600_000, 9.0)])),
        }
    }

    #[test]
    fn aggregate_follows_function() {
        let table = [
            (Some("rate"), AggrChoice::Counter, vec![7.0, 9.0]),
            (Some("increase"), AggrChoice::Counter, vec![7.0, 9.0]),
            (Some("min_over_time"), AggrChoice::Min, vec![1.0, 2.0]),
            (Some("max_over_time"), AggrChoice::Max, vec![30.0, 60.0]),
            (Some("count_over_time"), AggrChoice::Count, vec![10.0, 5.0]),
            (Some("sum_over_time"), AggrChoice::Sum, vec![100.0, 200.0]),
            (Some("avg_over_time"), AggrChoice::Avg, vec![10.0, 40.0]),
            (None, AggrChoice::Avg, vec![10.0, 40.0]),
            (Some("sum"), AggrChoice::Avg, vec![10.0, 40.0]),
        ];
        let s = series(vec![downsampled()]);
        for (func, want_choice, want) in table {
            let choice = AggrChoice::for_func(func);
            assert_eq!(choice, want_choice, "{func:?}");
            let got = decode_series(s.clone(), choice, 0, i64::MAX).expect("decodes");
            let vals: Vec<f64> = got.samples.iter().map(|(_, v)| *v).collect();
            assert_eq!(vals, want, "{func:?}");
        }
        assert_eq!(
            AggrChoice::Avg.aggregates(),
            vec![Aggr::Count as i32, Aggr::Sum as i32]
        );
    }

    /// Two 5m counter chunks in Thanos's layout: each starts with the raw value at its start and
    /// ends with a repeat of its last timestamp carrying the raw last value. The counter resets
    /// inside the first chunk's last window (raw 40 → 3, the aggregate already accumulated to
    /// 43) and between the chunks (raw 5 at the first's end, 2 at the second's start).
    #[test]
    fn downsampled_counters_are_read_across_chunks_without_resets() {
        let chunk = |min: i64, max: i64, counter: &[(i64, f64)]| AggrChunk {
            min_time: min,
            max_time: max,
            counter: Some(xor(counter)),
            ..Default::default()
        };
        let s = series(vec![
            chunk(
                600_000,
                1_200_000,
                &[
                    (600_000, 20.0),
                    (899_999, 30.0),
                    (1_199_999, 45.0),
                    (1_199_999, 5.0),
                ],
            ),
            chunk(
                0,
                599_999,
                &[(0, 10.0), (299_999, 12.0), (599_999, 18.0), (599_999, 18.0)],
            ),
            chunk(
                1_200_000,
                1_800_000,
                &[(1_200_000, 2.0), (1_499_999, 9.0), (1_499_999, 9.0)],
            ),
        ]);
        let got = decode_series(s, AggrChoice::Counter, 0, i64::MAX).expect("decodes");
        assert_eq!(
            got.samples,
            vec![
                (0, 10.0),
                (299_999, 12.0),
                (599_999, 18.0),
                // 18 → 20: +2 (no reset at the boundary).
                (600_000, 20.0),
                (899_999, 30.0),
                (1_199_999, 45.0),
                // Raw 5 at the end, 2 at the next start: a reset, +2; then +7.
                (1_200_000, 47.0),
                (1_499_999, 54.0),
            ]
        );
        // Other aggregates and raw-only counters are read as stored.
        let raw_only = series(vec![AggrChunk {
            min_time: 0,
            max_time: 30,
            raw: Some(xor(&[(0, 5.0), (10, 1.0), (20, 3.0)])),
            ..Default::default()
        }]);
        let got = decode_series(raw_only, AggrChoice::Counter, 0, i64::MAX).expect("decodes");
        assert_eq!(got.samples, vec![(0, 5.0), (10, 1.0), (20, 3.0)]);
    }

    #[test]
    fn missing_aggregate_is_an_error() {
        let mut c = downsampled();
        c.counter = None;
        let e = decode_series(series(vec![c]), AggrChoice::Counter, 0, i64::MAX)
            .expect_err("no counter chunk");
        assert!(e.to_string().contains("no counter aggregate"), "{e}");
    }

    #[test]
    fn raw_chunks_clip_and_drop_repeats() {
        let a = AggrChunk {
            min_time: 0,
            max_time: 30,
            raw: Some(xor(&[(0, 1.0), (10, 2.0), (20, 3.0), (30, 4.0)])),
            ..Default::default()
        };
        let b = AggrChunk {
            min_time: 20,
            max_time: 40,
            raw: Some(xor(&[(20, 3.0), (30, 4.0), (40, 5.0)])),
            ..Default::default()
        };
        let got = decode_series(series(vec![a, b]), AggrChoice::Avg, 10, 35).expect("decodes");
        assert_eq!(got.samples, vec![(10, 2.0), (20, 3.0), (30, 4.0)]);
    }

    #[test]
    fn garbage_chunk_is_an_error_not_a_panic() {
        let c = AggrChunk {
            min_time: 0,
            max_time: 10,
            raw: Some(pb::Chunk {
                r#type: 0,
                data: vec![0xff, 0xff, 0x01].into(),
                hash: 0,
            }),
            ..Default::default()
        };
        assert!(decode_series(series(vec![c.clone()]), AggrChoice::Avg, 0, 10).is_err());
        let mut bad = c;
        if let Some(r) = bad.raw.as_mut() {
            r.r#type = 9;
        }
        let e = decode_series(series(vec![bad]), AggrChoice::Avg, 0, 10).expect_err("enc");
        assert!(matches!(
            e,
            DecodeError::UnknownEncoding { encoding: 9, .. }
        ));
    }

    #[test]
    fn matchers_keep_regex_source() {
        let ms = vec![
            Matcher::new(MatchOp::Equal, "__name__", "up"),
            Matcher::new(MatchOp::NotEqual, "a", "b"),
            Matcher::new(
                MatchOp::Re(regex::Regex::new("^(?:x.*)$").expect("re")),
                "job",
                "x.*",
            ),
        ];
        let pb = matchers_to_pb(&ms);
        assert_eq!(pb[0].r#type, 0);
        assert_eq!(pb[1].r#type, 1);
        assert_eq!((pb[2].r#type, pb[2].value.as_str()), (2, "x.*"));
    }

    #[test]
    fn int_histogram_buckets_become_absolute() {
        let h = Histogram {
            count: 6,
            positive_spans: vec![TsdbSpan {
                offset: 0,
                length: 3,
            }],
            positive_buckets: vec![1, 2, -1],
            ..Default::default()
        };
        let f = int_histogram(&h);
        assert_eq!(f.positive_buckets, vec![1.0, 3.0, 2.0]);
        assert_eq!(f.count, 6.0);
    }
}
