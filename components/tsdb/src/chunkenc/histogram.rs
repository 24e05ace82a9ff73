//! Native histogram chunks (encodings 2 and 3): decoding of integer and float histogram
//! chunks, and encoding for the common case of a fixed bucket layout per chunk.

use crate::chunkenc::bstream::{BitReader, BitWriter};
use crate::chunkenc::varbit::{
    read_varbit_int, read_varbit_uint, write_varbit_int, write_varbit_uint,
};
use crate::chunkenc::xor::xor_read;
use crate::error::{Error, Result};

/// Bytes before the bit stream: 2 bytes sample count, 1 byte flags.
pub(crate) const HISTOGRAM_HEADER_SIZE: usize = 3;
/// The schema of histograms with custom bucket boundaries.
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;
/// The staleness marker NaN.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether `v` is the Prometheus staleness marker.
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A run of consecutive buckets, `offset` buckets after the end of the previous span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// Gap to the previous span (or start index for the first span).
    pub offset: i32,
    /// Number of consecutive buckets.
    pub length: u32,
}

/// What a histogram chunk says about counter resets (the top two bits of the flags byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CounterResetHint {
    /// Unknown; must be detected at query time.
    #[default]
    Unknown,
    /// A counter reset happened.
    CounterReset,
    /// No counter reset happened.
    NotCounterReset,
    /// A gauge histogram: counter resets do not apply.
    Gauge,
}

impl CounterResetHint {
    fn from_flags(b: u8) -> Self {
        match b & 0b1100_0000 {
            0b1000_0000 => CounterResetHint::CounterReset,
            0b0100_0000 => CounterResetHint::NotCounterReset,
            0b1100_0000 => CounterResetHint::Gauge,
            _ => CounterResetHint::Unknown,
        }
    }

    pub(crate) fn to_flags(self) -> u8 {
        match self {
            CounterResetHint::Unknown => 0,
            CounterResetHint::CounterReset => 0b1000_0000,
            CounterResetHint::NotCounterReset => 0b0100_0000,
            CounterResetHint::Gauge => 0b1100_0000,
        }
    }

    /// The hint an individual sample gets, as Prometheus derives it from the chunk header:
    /// gauge chunks stay gauge, samples after the first are "not a reset", the first is unknown.
    fn for_sample(header: Self, index: u16) -> Self {
        match header {
            CounterResetHint::Gauge => CounterResetHint::Gauge,
            _ if index > 0 => CounterResetHint::NotCounterReset,
            _ => CounterResetHint::Unknown,
        }
    }
}

/// An integer native histogram. Buckets are deltas: each the difference to the previous bucket
/// (the first is absolute). A stale marker has `sum` = stale NaN and every other field default.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    /// Counter reset hint.
    pub counter_reset_hint: CounterResetHint,
    /// Resolution schema (−4…8 exponential, −53 custom buckets).
    pub schema: i32,
    /// Width of the zero bucket.
    pub zero_threshold: f64,
    /// Observations in the zero bucket.
    pub zero_count: u64,
    /// Total observations.
    pub count: u64,
    /// Sum of observations.
    pub sum: f64,
    /// Positive bucket spans.
    pub positive_spans: Vec<Span>,
    /// Negative bucket spans.
    pub negative_spans: Vec<Span>,
    /// Positive bucket counts, delta encoded.
    pub positive_buckets: Vec<i64>,
    /// Negative bucket counts, delta encoded.
    pub negative_buckets: Vec<i64>,
    /// Upper bounds for custom-bucket histograms.
    pub custom_values: Vec<f64>,
}

/// A float native histogram; buckets are absolute counts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FloatHistogram {
    /// Counter reset hint.
    pub counter_reset_hint: CounterResetHint,
    /// Resolution schema.
    pub schema: i32,
    /// Width of the zero bucket.
    pub zero_threshold: f64,
    /// Observations in the zero bucket.
    pub zero_count: f64,
    /// Total observations.
    pub count: f64,
    /// Sum of observations.
    pub sum: f64,
    /// Positive bucket spans.
    pub positive_spans: Vec<Span>,
    /// Negative bucket spans.
    pub negative_spans: Vec<Span>,
    /// Positive bucket counts.
    pub positive_buckets: Vec<f64>,
    /// Negative bucket counts.
    pub negative_buckets: Vec<f64>,
    /// Upper bounds for custom-bucket histograms.
    pub custom_values: Vec<f64>,
}

/// The per-chunk layout written before the first sample.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Layout {
    pub(crate) schema: i32,
    pub(crate) zero_threshold: f64,
    pub(crate) positive_spans: Vec<Span>,
    pub(crate) negative_spans: Vec<Span>,
    pub(crate) custom_values: Vec<f64>,
}

fn read_zero_threshold(r: &mut BitReader<'_>) -> Result<f64> {
    match r.read_byte()? {
        0 => Ok(0.0),
        255 => Ok(f64::from_bits(r.read_bits(64)?)),
        b => Ok(ldexp_half(i32::from(b) - 243)),
    }
}

/// 0.5 × 2^exp, exact for the exponents the encoding allows (−242…11).
fn ldexp_half(exp: i32) -> f64 {
    // 0.5 * 2^exp = 2^(exp-1); all such values are normal doubles.
    let e = exp - 1;
    f64::from_bits(((e + 1023) as u64) << 52)
}

fn write_zero_threshold(w: &mut BitWriter, t: f64) {
    if t == 0.0 {
        w.write_byte(0);
        return;
    }
    // Powers of two 2^-243 … 2^10 are stored as one byte: frexp exponent + 243.
    let bits = t.to_bits();
    let mantissa = bits & ((1u64 << 52) - 1);
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if t > 0.0 && mantissa == 0 && biased != 0 && biased != 0x7ff {
        let frexp_exp = biased - 1022; // t = 0.5 × 2^frexp_exp
        if (-242..=11).contains(&frexp_exp) {
            w.write_byte((frexp_exp + 243) as u8);
            return;
        }
    }
    w.write_byte(255);
    w.write_bits(bits, 64);
}

fn read_spans(r: &mut BitReader<'_>) -> Result<Vec<Span>> {
    let n = read_varbit_uint(r)?;
    // Each span needs at least two bits; anything larger cannot be real.
    if n > (r.remaining_bits() / 2) as u64 {
        return Err(Error::TooLarge {
            file: "chunk".into(),
            offset: r.byte_offset(),
            what: "histogram span count",
            len: n,
        });
    }
    let mut spans = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let length = read_varbit_uint(r)?;
        let offset = read_varbit_int(r)?;
        let length = u32::try_from(length).map_err(|_| r.corrupt("span length exceeds 32 bits"))?;
        let offset = i32::try_from(offset).map_err(|_| r.corrupt("span offset exceeds 32 bits"))?;
        spans.push(Span { offset, length });
    }
    Ok(spans)
}

fn write_spans(w: &mut BitWriter, spans: &[Span]) {
    write_varbit_uint(w, spans.len() as u64);
    for s in spans {
        write_varbit_uint(w, u64::from(s.length));
        write_varbit_int(w, i64::from(s.offset));
    }
}

fn read_custom_bound(r: &mut BitReader<'_>) -> Result<f64> {
    match read_varbit_uint(r)? {
        0 => Ok(f64::from_bits(r.read_bits(64)?)),
        v => Ok((v - 1) as f64 / 1000.0),
    }
}

fn write_custom_bound(w: &mut BitWriter, f: f64) {
    let tf = f * 1000.0;
    let whole = {
        let i = (f * 1000.0).round();
        // Go converts to uint; negative or NaN values never reach this branch's use.
        i >= 0.0 && i / 1000.0 == f
    };
    if !(0.0..=33_554_430.0).contains(&tf) || !whole {
        w.write_bit(false);
        w.write_bits(f.to_bits(), 64);
        return;
    }
    write_varbit_uint(w, tf.round() as u64 + 1);
}

pub(crate) fn read_layout(r: &mut BitReader<'_>) -> Result<Layout> {
    let zero_threshold = read_zero_threshold(r)?;
    let schema = read_varbit_int(r)?;
    let schema = i32::try_from(schema).map_err(|_| r.corrupt("schema exceeds 32 bits"))?;
    let positive_spans = read_spans(r)?;
    let negative_spans = read_spans(r)?;
    let mut custom_values = Vec::new();
    if schema == CUSTOM_BUCKETS_SCHEMA {
        let n = read_varbit_uint(r)?;
        if n > r.remaining_bits() as u64 {
            return Err(Error::TooLarge {
                file: "chunk".into(),
                offset: r.byte_offset(),
                what: "custom bucket bound count",
                len: n,
            });
        }
        custom_values.reserve(n as usize);
        for _ in 0..n {
            custom_values.push(read_custom_bound(r)?);
        }
    }
    // Known schemas: reserved exponential range −9…52 and custom buckets.
    if !((-9..=52).contains(&schema) || schema == CUSTOM_BUCKETS_SCHEMA) {
        return Err(r.corrupt(format!("unknown histogram schema {schema}")));
    }
    Ok(Layout {
        schema,
        zero_threshold,
        positive_spans,
        negative_spans,
        custom_values,
    })
}

pub(crate) fn write_layout(w: &mut BitWriter, l: &Layout) {
    write_zero_threshold(w, l.zero_threshold);
    write_varbit_int(w, i64::from(l.schema));
    write_spans(w, &l.positive_spans);
    write_spans(w, &l.negative_spans);
    if l.schema == CUSTOM_BUCKETS_SCHEMA {
        write_varbit_uint(w, l.custom_values.len() as u64);
        for &v in &l.custom_values {
            write_custom_bound(w, v);
        }
    }
}

/// Total buckets of `spans`, bounded by `limit` (the bits left, since every bucket costs at
/// least one bit).
fn bucket_count(spans: &[Span], limit: usize, r: &BitReader<'_>) -> Result<usize> {
    let total: u64 = spans.iter().map(|s| u64::from(s.length)).sum();
    if total > limit as u64 {
        return Err(Error::TooLarge {
            file: "chunk".into(),
            offset: r.byte_offset(),
            what: "histogram bucket count",
            len: total,
        });
    }
    Ok(total as usize)
}

fn header(data: &[u8]) -> Result<(u16, CounterResetHint)> {
    if data.len() < HISTOGRAM_HEADER_SIZE {
        return Err(Error::Truncated {
            file: "chunk".into(),
            offset: data.len() as u64,
            what: "histogram chunk header",
        });
    }
    Ok((
        u16::from_be_bytes([data[0], data[1]]),
        CounterResetHint::from_flags(data[2]),
    ))
}

/// The counter reset hint stored in a histogram chunk's header.
pub fn chunk_counter_reset_header(data: &[u8]) -> Result<CounterResetHint> {
    header(data).map(|(_, h)| h)
}

/// Iterates the samples of an integer histogram chunk.
#[derive(Debug)]
pub struct HistogramIterator<'a> {
    r: BitReader<'a>,
    total: u16,
    read: u16,
    header: CounterResetHint,
    header_err: Option<Error>,
    layout: Layout,
    t: i64,
    cnt: u64,
    zcnt: u64,
    t_delta: i64,
    cnt_delta: i64,
    zcnt_delta: i64,
    p_buckets: Vec<i64>,
    n_buckets: Vec<i64>,
    p_deltas: Vec<i64>,
    n_deltas: Vec<i64>,
    sum: u64,
    leading: u8,
    trailing: u8,
    failed: bool,
}

impl<'a> HistogramIterator<'a> {
    /// An iterator over chunk data (starting with the 3-byte header).
    pub fn new(data: &'a [u8]) -> Self {
        let (total, hdr, err, body) = match header(data) {
            Ok((t, h)) => (t, h, None, &data[HISTOGRAM_HEADER_SIZE..]),
            Err(e) => (1, CounterResetHint::Unknown, Some(e), &data[..0]),
        };
        HistogramIterator {
            r: BitReader::new(body, HISTOGRAM_HEADER_SIZE),
            total,
            read: 0,
            header: hdr,
            header_err: err,
            layout: Layout::default(),
            t: 0,
            cnt: 0,
            zcnt: 0,
            t_delta: 0,
            cnt_delta: 0,
            zcnt_delta: 0,
            p_buckets: Vec::new(),
            n_buckets: Vec::new(),
            p_deltas: Vec::new(),
            n_deltas: Vec::new(),
            sum: 0,
            leading: 0,
            trailing: 0,
            failed: false,
        }
    }

    fn step(&mut self) -> Result<(i64, Histogram)> {
        if let Some(e) = self.header_err.take() {
            return Err(e);
        }
        let r = &mut self.r;
        if self.read == 0 {
            self.layout = read_layout(r)?;
            let np = bucket_count(&self.layout.positive_spans, r.remaining_bits(), r)?;
            let nn = bucket_count(
                &self.layout.negative_spans,
                r.remaining_bits().saturating_sub(np),
                r,
            )?;
            self.t = read_varbit_int(r)?;
            self.cnt = read_varbit_uint(r)?;
            self.zcnt = read_varbit_uint(r)?;
            self.sum = r.read_bits(64)?;
            self.p_buckets = Vec::with_capacity(np);
            for _ in 0..np {
                self.p_buckets.push(read_varbit_int(r)?);
            }
            self.n_buckets = Vec::with_capacity(nn);
            for _ in 0..nn {
                self.n_buckets.push(read_varbit_int(r)?);
            }
            self.p_deltas = vec![0; np];
            self.n_deltas = vec![0; nn];
        } else {
            let t_dod = read_varbit_int(r)?;
            self.t_delta = self.t_delta.wrapping_add(t_dod);
            self.t = self.t.wrapping_add(self.t_delta);
            let cnt_dod = read_varbit_int(r)?;
            self.cnt_delta = self.cnt_delta.wrapping_add(cnt_dod);
            self.cnt = (self.cnt as i64).wrapping_add(self.cnt_delta) as u64;
            let zcnt_dod = read_varbit_int(r)?;
            self.zcnt_delta = self.zcnt_delta.wrapping_add(zcnt_dod);
            self.zcnt = (self.zcnt as i64).wrapping_add(self.zcnt_delta) as u64;
            xor_read(r, &mut self.sum, &mut self.leading, &mut self.trailing)?;
            if self.sum != STALE_NAN_BITS {
                for (b, d) in self.p_buckets.iter_mut().zip(self.p_deltas.iter_mut()) {
                    *d = d.wrapping_add(read_varbit_int(r)?);
                    *b = b.wrapping_add(*d);
                }
                for (b, d) in self.n_buckets.iter_mut().zip(self.n_deltas.iter_mut()) {
                    *d = d.wrapping_add(read_varbit_int(r)?);
                    *b = b.wrapping_add(*d);
                }
            }
        }
        let index = self.read;
        self.read += 1;
        if self.sum == STALE_NAN_BITS {
            return Ok((
                self.t,
                Histogram {
                    sum: f64::from_bits(self.sum),
                    ..Default::default()
                },
            ));
        }
        Ok((
            self.t,
            Histogram {
                counter_reset_hint: CounterResetHint::for_sample(self.header, index),
                schema: self.layout.schema,
                zero_threshold: self.layout.zero_threshold,
                zero_count: self.zcnt,
                count: self.cnt,
                sum: f64::from_bits(self.sum),
                positive_spans: self.layout.positive_spans.clone(),
                negative_spans: self.layout.negative_spans.clone(),
                positive_buckets: self.p_buckets.clone(),
                negative_buckets: self.n_buckets.clone(),
                custom_values: self.layout.custom_values.clone(),
            },
        ))
    }
}

impl Iterator for HistogramIterator<'_> {
    type Item = Result<(i64, Histogram)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.read >= self.total {
            return None;
        }
        let res = self.step();
        if res.is_err() {
            self.failed = true;
        }
        Some(res)
    }
}

/// An XOR-coded float with its window state.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct XorState {
    pub(crate) bits: u64,
    pub(crate) leading: u8,
    pub(crate) trailing: u8,
}

impl XorState {
    fn read(&mut self, r: &mut BitReader<'_>) -> Result<()> {
        xor_read(r, &mut self.bits, &mut self.leading, &mut self.trailing)
    }
    fn value(&self) -> f64 {
        f64::from_bits(self.bits)
    }
}

/// Iterates the samples of a float histogram chunk.
#[derive(Debug)]
pub struct FloatHistogramIterator<'a> {
    r: BitReader<'a>,
    total: u16,
    read: u16,
    header: CounterResetHint,
    header_err: Option<Error>,
    layout: Layout,
    t: i64,
    t_delta: i64,
    cnt: XorState,
    zcnt: XorState,
    sum: XorState,
    p_buckets: Vec<XorState>,
    n_buckets: Vec<XorState>,
    failed: bool,
}

impl<'a> FloatHistogramIterator<'a> {
    /// An iterator over chunk data (starting with the 3-byte header).
    pub fn new(data: &'a [u8]) -> Self {
        let (total, hdr, err, body) = match header(data) {
            Ok((t, h)) => (t, h, None, &data[HISTOGRAM_HEADER_SIZE..]),
            Err(e) => (1, CounterResetHint::Unknown, Some(e), &data[..0]),
        };
        FloatHistogramIterator {
            r: BitReader::new(body, HISTOGRAM_HEADER_SIZE),
            total,
            read: 0,
            header: hdr,
            header_err: err,
            layout: Layout::default(),
            t: 0,
            t_delta: 0,
            cnt: XorState::default(),
            zcnt: XorState::default(),
            sum: XorState::default(),
            p_buckets: Vec::new(),
            n_buckets: Vec::new(),
            failed: false,
        }
    }

    fn step(&mut self) -> Result<(i64, FloatHistogram)> {
        if let Some(e) = self.header_err.take() {
            return Err(e);
        }
        let r = &mut self.r;
        if self.read == 0 {
            self.layout = read_layout(r)?;
            let limit = r.remaining_bits() / 64;
            let np = bucket_count(&self.layout.positive_spans, limit, r)?;
            let nn = bucket_count(&self.layout.negative_spans, limit.saturating_sub(np), r)?;
            self.t = read_varbit_int(r)?;
            self.cnt.bits = r.read_bits(64)?;
            self.zcnt.bits = r.read_bits(64)?;
            self.sum.bits = r.read_bits(64)?;
            self.p_buckets = Vec::with_capacity(np);
            for _ in 0..np {
                self.p_buckets.push(XorState {
                    bits: r.read_bits(64)?,
                    ..Default::default()
                });
            }
            self.n_buckets = Vec::with_capacity(nn);
            for _ in 0..nn {
                self.n_buckets.push(XorState {
                    bits: r.read_bits(64)?,
                    ..Default::default()
                });
            }
        } else {
            let t_dod = read_varbit_int(r)?;
            self.t_delta = self.t_delta.wrapping_add(t_dod);
            self.t = self.t.wrapping_add(self.t_delta);
            self.cnt.read(r)?;
            self.zcnt.read(r)?;
            self.sum.read(r)?;
            if self.sum.bits != STALE_NAN_BITS {
                for b in self.p_buckets.iter_mut().chain(self.n_buckets.iter_mut()) {
                    b.read(r)?;
                }
            }
        }
        let index = self.read;
        self.read += 1;
        if self.sum.bits == STALE_NAN_BITS {
            return Ok((
                self.t,
                FloatHistogram {
                    sum: self.sum.value(),
                    ..Default::default()
                },
            ));
        }
        Ok((
            self.t,
            FloatHistogram {
                counter_reset_hint: CounterResetHint::for_sample(self.header, index),
                schema: self.layout.schema,
                zero_threshold: self.layout.zero_threshold,
                zero_count: self.zcnt.value(),
                count: self.cnt.value(),
                sum: self.sum.value(),
                positive_spans: self.layout.positive_spans.clone(),
                negative_spans: self.layout.negative_spans.clone(),
                positive_buckets: self.p_buckets.iter().map(XorState::value).collect(),
                negative_buckets: self.n_buckets.iter().map(XorState::value).collect(),
                custom_values: self.layout.custom_values.clone(),
            },
        ))
    }
}

impl Iterator for FloatHistogramIterator<'_> {
    type Item = Result<(i64, FloatHistogram)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.read >= self.total {
            return None;
        }
        let res = self.step();
        if res.is_err() {
            self.failed = true;
        }
        Some(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunkenc::histogram_append::{encode_float_histogram_chunk, encode_histogram_chunk};

    fn h(count: u64, zc: u64, sum: f64, pb: Vec<i64>) -> Histogram {
        Histogram {
            counter_reset_hint: CounterResetHint::Unknown,
            schema: 1,
            zero_threshold: 2f64.powi(-128),
            zero_count: zc,
            count,
            sum,
            positive_spans: vec![
                Span {
                    offset: 0,
                    length: 2,
                },
                Span {
                    offset: 3,
                    length: 1,
                },
            ],
            negative_spans: vec![],
            positive_buckets: pb,
            negative_buckets: vec![],
            custom_values: vec![],
        }
    }

    #[test]
    fn int_histogram_roundtrip_with_stale() {
        let samples = vec![
            (1000, h(10, 1, 12.5, vec![2, 1, -1])),
            (2000, h(15, 2, 20.0, vec![3, 2, -2])),
            (3000, h(22, 2, 31.0, vec![4, 4, -3])),
            (
                4000,
                Histogram {
                    sum: f64::from_bits(STALE_NAN_BITS),
                    ..Default::default()
                },
            ),
        ];
        let bytes = encode_histogram_chunk(&samples, CounterResetHint::NotCounterReset).unwrap();
        // Zero threshold 2^-128 is the one-byte code 116.
        assert_eq!(bytes[3], 116);
        let got: Vec<_> = HistogramIterator::new(&bytes).map(|r| r.unwrap()).collect();
        assert_eq!(got.len(), 4);
        for (i, (t, g)) in got.iter().enumerate().take(3) {
            let mut want = samples[i].1.clone();
            want.counter_reset_hint = if i == 0 {
                CounterResetHint::Unknown
            } else {
                CounterResetHint::NotCounterReset
            };
            assert_eq!(*t, samples[i].0);
            assert_eq!(*g, want);
        }
        assert!(is_stale_nan(got[3].1.sum));
        assert_eq!(got[3].0, 4000);
        for cut in 0..bytes.len() {
            let r: Result<Vec<_>> = HistogramIterator::new(&bytes[..cut]).collect();
            assert!(r.is_err(), "cut {cut}");
        }
    }

    #[test]
    fn float_histogram_custom_buckets_roundtrip() {
        let fh = |c: f64, s: f64, b: Vec<f64>| FloatHistogram {
            counter_reset_hint: CounterResetHint::Gauge,
            schema: CUSTOM_BUCKETS_SCHEMA,
            zero_threshold: 0.0,
            zero_count: 0.0,
            count: c,
            sum: s,
            positive_spans: vec![Span {
                offset: 0,
                length: 3,
            }],
            negative_spans: vec![],
            positive_buckets: b,
            negative_buckets: vec![],
            custom_values: vec![0.1, 1.0, 2.5, -7.25, 1e10],
        };
        let samples = vec![
            (10, fh(3.0, 1.5, vec![1.0, 1.0, 1.0])),
            (20, fh(4.5, 2.5, vec![1.0, 2.5, 1.0])),
            (35, fh(4.5, 2.5, vec![1.0, 2.5, 1.0])),
        ];
        let bytes = encode_float_histogram_chunk(&samples, CounterResetHint::Gauge).unwrap();
        let got: Vec<_> = FloatHistogramIterator::new(&bytes)
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(got.len(), 3);
        for (g, w) in got.iter().zip(&samples) {
            assert_eq!(g, w);
        }
    }

    #[test]
    fn zero_threshold_codes() {
        for (v, one_byte) in [
            (0.0, true),
            (2f64.powi(-128), true),
            (1024.0, true),
            (2048.0, false),
            (0.3, false),
            (2f64.powi(-243), true),
        ] {
            let mut w = BitWriter::with_header(&[]);
            write_zero_threshold(&mut w, v);
            let b = w.into_bytes();
            assert_eq!(b.len() == 1, one_byte, "{v}");
            let mut r = BitReader::new(&b, 0);
            assert_eq!(read_zero_threshold(&mut r).unwrap(), v);
        }
    }

    #[test]
    fn absurd_span_count_is_rejected_without_allocating() {
        // threshold 0, schema 0, then varbit uint with 64-bit width all ones.
        let mut w = BitWriter::with_header(&[0, 1, 0]);
        w.write_byte(0);
        write_varbit_int(&mut w, 0);
        write_varbit_uint(&mut w, u64::MAX);
        let b = w.into_bytes();
        let r: Result<Vec<_>> = HistogramIterator::new(&b).collect();
        assert!(matches!(r, Err(Error::TooLarge { .. })), "{r:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        #[test]
        fn int_histograms_roundtrip(
            schema in -4i32..=8,
            steps in proptest::collection::vec(
                (0i64..100_000, proptest::prelude::any::<u32>(), proptest::collection::vec(-1000i64..1000, 3)),
                1..50,
            ),
        ) {
            let mut t = 0i64;
            let samples: Vec<(i64, Histogram)> = steps
                .into_iter()
                .map(|(dt, c, b)| {
                    t += dt + 1;
                    (t, Histogram {
                        schema,
                        count: u64::from(c),
                        zero_count: u64::from(c / 3),
                        sum: f64::from(c) * 0.25,
                        positive_spans: vec![Span { offset: 1, length: 2 }],
                        negative_spans: vec![Span { offset: -3, length: 1 }],
                        positive_buckets: b[..2].to_vec(),
                        negative_buckets: b[2..].to_vec(),
                        ..Default::default()
                    })
                })
                .collect();
            let bytes = encode_histogram_chunk(&samples, CounterResetHint::Unknown).unwrap();
            let got: Vec<_> = HistogramIterator::new(&bytes).map(|r| r.unwrap()).collect();
            proptest::prop_assert_eq!(got.len(), samples.len());
            for (i, ((gt, gh), (wt, wh))) in got.iter().zip(&samples).enumerate() {
                proptest::prop_assert_eq!(gt, wt);
                let mut wh = wh.clone();
                if i > 0 {
                    wh.counter_reset_hint = CounterResetHint::NotCounterReset;
                }
                proptest::prop_assert_eq!(gh, &wh);
            }
        }

        #[test]
        fn histogram_decoding_garbage_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            for s in HistogramIterator::new(&data) {
                if s.is_err() {
                    break;
                }
            }
            for s in FloatHistogramIterator::new(&data) {
                if s.is_err() {
                    break;
                }
            }
        }
    }
}
