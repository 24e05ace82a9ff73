//! Encoding native histogram chunks: incremental appenders for integer and float histograms
//! that keep one bucket layout per chunk, writing what Prometheus's appenders write.

use crate::chunkenc::bstream::BitWriter;
use crate::chunkenc::histogram::{
    CounterResetHint, FloatHistogram, Histogram, Layout, Span, XorState, is_stale_nan, write_layout,
};
use crate::chunkenc::varbit::{write_varbit_int, write_varbit_uint};
use crate::chunkenc::xor::xor_write;
use crate::error::{Error, Result};

fn layout_of(schema: i32, zt: f64, ps: &[Span], ns: &[Span], cv: &[f64]) -> Layout {
    Layout {
        schema,
        zero_threshold: zt,
        positive_spans: ps.to_vec(),
        negative_spans: ns.to_vec(),
        custom_values: cv.to_vec(),
    }
}

fn layout_mismatch() -> Error {
    Error::InvalidArgument(
        "all histograms of a chunk must share schema, zero threshold, spans and custom values"
            .into(),
    )
}

fn buckets_of(l: &Layout) -> (usize, usize) {
    (
        l.positive_spans.iter().map(|s| s.length as usize).sum(),
        l.negative_spans.iter().map(|s| s.length as usize).sum(),
    )
}

impl Histogram {
    pub(crate) fn layout(&self) -> Layout {
        layout_of(
            self.schema,
            self.zero_threshold,
            &self.positive_spans,
            &self.negative_spans,
            &self.custom_values,
        )
    }
}

impl FloatHistogram {
    pub(crate) fn layout(&self) -> Layout {
        layout_of(
            self.schema,
            self.zero_threshold,
            &self.positive_spans,
            &self.negative_spans,
            &self.custom_values,
        )
    }
}

/// Builds an integer histogram chunk (encoding 2) sample by sample, writing what Prometheus's
/// appender writes for histograms that keep one bucket layout. The layout is fixed by the
/// first histogram; appending a histogram with another layout is an error (cut a new chunk).
#[derive(Debug, Clone)]
pub struct HistogramAppender {
    w: BitWriter,
    layout: Option<Layout>,
    num: u16,
    t: i64,
    t_delta: i64,
    cnt: u64,
    cnt_delta: i64,
    zcnt: u64,
    zcnt_delta: i64,
    sum: u64,
    leading: u8,
    trailing: u8,
    pb: Vec<i64>,
    nb: Vec<i64>,
    pd: Vec<i64>,
    nd: Vec<i64>,
}

impl HistogramAppender {
    /// An empty chunk with the given counter reset header.
    pub fn new(hint: CounterResetHint) -> Self {
        HistogramAppender {
            w: BitWriter::with_header(&[0, 0, hint.to_flags()]),
            layout: None,
            num: 0,
            t: 0,
            t_delta: 0,
            cnt: 0,
            cnt_delta: 0,
            zcnt: 0,
            zcnt_delta: 0,
            sum: 0,
            leading: 0xff,
            trailing: 0,
            pb: Vec::new(),
            nb: Vec::new(),
            pd: Vec::new(),
            nd: Vec::new(),
        }
    }

    /// Samples appended.
    pub fn num_samples(&self) -> u16 {
        self.num
    }

    /// Encoded size so far.
    pub fn len_bytes(&self) -> usize {
        self.w.bytes().len()
    }

    /// Whether `h` can be appended (same layout, or a stale marker, or the chunk is empty).
    pub fn fits(&self, h: &Histogram) -> bool {
        is_stale_nan(h.sum) || self.layout.as_ref().is_none_or(|l| *l == h.layout())
    }

    /// The chunk bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.w.into_bytes()
    }

    /// Appends a sample.
    pub fn append(&mut self, t: i64, h: &Histogram) -> Result<()> {
        if self.num == u16::MAX {
            return Err(Error::InvalidArgument(
                "histogram chunk holds 65535 samples already".into(),
            ));
        }
        let stale = is_stale_nan(h.sum);
        if !stale {
            let l = h.layout();
            let (np, nn) = buckets_of(&l);
            if h.positive_buckets.len() != np || h.negative_buckets.len() != nn {
                return Err(Error::InvalidArgument(
                    "histogram bucket counts do not match its spans".into(),
                ));
            }
            match &self.layout {
                Some(have) if *have != l => return Err(layout_mismatch()),
                _ => {}
            }
        }
        let (count, zero_count) = if stale {
            (0, 0)
        } else {
            (h.count, h.zero_count)
        };
        let w = &mut self.w;
        if self.num == 0 {
            let layout = if stale { Layout::default() } else { h.layout() };
            write_layout(w, &layout);
            let (np, nn) = buckets_of(&layout);
            self.pb = vec![0; np];
            self.nb = vec![0; nn];
            self.pd = vec![0; np];
            self.nd = vec![0; nn];
            self.layout = Some(layout);
            write_varbit_int(w, t);
            write_varbit_uint(w, count);
            write_varbit_uint(w, zero_count);
            w.write_bits(h.sum.to_bits(), 64);
            if !stale {
                for &b in h.positive_buckets.iter().chain(&h.negative_buckets) {
                    write_varbit_int(w, b);
                }
            }
            self.t_delta = 0;
            self.cnt_delta = 0;
            self.zcnt_delta = 0;
        } else {
            let td = t.wrapping_sub(self.t);
            let cd = (count as i64).wrapping_sub(self.cnt as i64);
            let zd = (zero_count as i64).wrapping_sub(self.zcnt as i64);
            write_varbit_int(w, td.wrapping_sub(self.t_delta));
            if stale {
                write_varbit_int(w, 0);
                write_varbit_int(w, 0);
            } else {
                write_varbit_int(w, cd.wrapping_sub(self.cnt_delta));
                write_varbit_int(w, zd.wrapping_sub(self.zcnt_delta));
            }
            xor_write(
                w,
                h.sum.to_bits(),
                self.sum,
                &mut self.leading,
                &mut self.trailing,
            );
            if !stale {
                for (j, &b) in h.positive_buckets.iter().enumerate() {
                    let d = b.wrapping_sub(self.pb[j]);
                    write_varbit_int(w, d.wrapping_sub(self.pd[j]));
                    self.pd[j] = d;
                }
                for (j, &b) in h.negative_buckets.iter().enumerate() {
                    let d = b.wrapping_sub(self.nb[j]);
                    write_varbit_int(w, d.wrapping_sub(self.nd[j]));
                    self.nd[j] = d;
                }
            }
            self.t_delta = td;
            self.cnt_delta = cd;
            self.zcnt_delta = zd;
        }
        self.t = t;
        self.cnt = count;
        self.zcnt = zero_count;
        self.sum = h.sum.to_bits();
        if !stale {
            self.pb.copy_from_slice(&h.positive_buckets);
            self.nb.copy_from_slice(&h.negative_buckets);
        }
        self.num += 1;
        let n = self.num.to_be_bytes();
        let b = self.w.bytes_mut();
        b[0] = n[0];
        b[1] = n[1];
        Ok(())
    }
}

/// Builds a float histogram chunk (encoding 3) sample by sample; see [`HistogramAppender`].
#[derive(Debug, Clone)]
pub struct FloatHistogramAppender {
    w: BitWriter,
    layout: Option<Layout>,
    num: u16,
    t: i64,
    t_delta: i64,
    cnt: XorState,
    zcnt: XorState,
    sum: XorState,
    buckets: Vec<XorState>,
}

impl FloatHistogramAppender {
    /// An empty chunk with the given counter reset header.
    pub fn new(hint: CounterResetHint) -> Self {
        let fresh = XorState {
            bits: 0,
            leading: 0xff,
            trailing: 0,
        };
        FloatHistogramAppender {
            w: BitWriter::with_header(&[0, 0, hint.to_flags()]),
            layout: None,
            num: 0,
            t: 0,
            t_delta: 0,
            cnt: fresh,
            zcnt: fresh,
            sum: fresh,
            buckets: Vec::new(),
        }
    }

    /// Samples appended.
    pub fn num_samples(&self) -> u16 {
        self.num
    }

    /// Encoded size so far.
    pub fn len_bytes(&self) -> usize {
        self.w.bytes().len()
    }

    /// Whether `h` can be appended (same layout, or a stale marker, or the chunk is empty).
    pub fn fits(&self, h: &FloatHistogram) -> bool {
        is_stale_nan(h.sum) || self.layout.as_ref().is_none_or(|l| *l == h.layout())
    }

    /// The chunk bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.w.into_bytes()
    }

    /// Appends a sample.
    pub fn append(&mut self, t: i64, h: &FloatHistogram) -> Result<()> {
        if self.num == u16::MAX {
            return Err(Error::InvalidArgument(
                "histogram chunk holds 65535 samples already".into(),
            ));
        }
        let stale = is_stale_nan(h.sum);
        if !stale {
            let l = h.layout();
            let (np, nn) = buckets_of(&l);
            if h.positive_buckets.len() != np || h.negative_buckets.len() != nn {
                return Err(Error::InvalidArgument(
                    "histogram bucket counts do not match its spans".into(),
                ));
            }
            match &self.layout {
                Some(have) if *have != l => return Err(layout_mismatch()),
                _ => {}
            }
        }
        let (count, zero_count) = if stale {
            (0.0, 0.0)
        } else {
            (h.count, h.zero_count)
        };
        let w = &mut self.w;
        if self.num == 0 {
            let layout = if stale { Layout::default() } else { h.layout() };
            write_layout(w, &layout);
            let (np, nn) = buckets_of(&layout);
            self.buckets = vec![self.cnt; np + nn];
            self.layout = Some(layout);
            write_varbit_int(w, t);
            w.write_bits(count.to_bits(), 64);
            w.write_bits(zero_count.to_bits(), 64);
            w.write_bits(h.sum.to_bits(), 64);
            self.cnt.bits = count.to_bits();
            self.zcnt.bits = zero_count.to_bits();
            self.sum.bits = h.sum.to_bits();
            if !stale {
                for (st, &b) in self
                    .buckets
                    .iter_mut()
                    .zip(h.positive_buckets.iter().chain(&h.negative_buckets))
                {
                    w.write_bits(b.to_bits(), 64);
                    st.bits = b.to_bits();
                }
            }
        } else {
            let put = |w: &mut BitWriter, st: &mut XorState, v: f64| {
                xor_write(w, v.to_bits(), st.bits, &mut st.leading, &mut st.trailing);
                st.bits = v.to_bits();
            };
            let td = t.wrapping_sub(self.t);
            write_varbit_int(w, td.wrapping_sub(self.t_delta));
            self.t_delta = td;
            put(w, &mut self.cnt, count);
            put(w, &mut self.zcnt, zero_count);
            put(w, &mut self.sum, h.sum);
            if !stale {
                for (st, &b) in self
                    .buckets
                    .iter_mut()
                    .zip(h.positive_buckets.iter().chain(&h.negative_buckets))
                {
                    put(w, st, b);
                }
            }
        }
        self.t = t;
        self.num += 1;
        let n = self.num.to_be_bytes();
        let b = self.w.bytes_mut();
        b[0] = n[0];
        b[1] = n[1];
        Ok(())
    }
}

fn check_samples<T>(samples: &[T]) -> Result<()> {
    if samples.is_empty() || samples.len() > usize::from(u16::MAX) {
        return Err(Error::InvalidArgument(format!(
            "a histogram chunk holds 1 to 65535 samples, got {}",
            samples.len()
        )));
    }
    Ok(())
}

/// Encodes integer histograms that share one bucket layout into a histogram chunk (encoding 2),
/// the way Prometheus's appender writes them. `hint` goes into the chunk header.
pub fn encode_histogram_chunk(
    samples: &[(i64, Histogram)],
    hint: CounterResetHint,
) -> Result<Vec<u8>> {
    check_samples(samples)?;
    let mut a = HistogramAppender::new(hint);
    for (t, h) in samples {
        a.append(*t, h)?;
    }
    Ok(a.into_bytes())
}

/// Encodes float histograms that share one bucket layout into a float histogram chunk
/// (encoding 3).
pub fn encode_float_histogram_chunk(
    samples: &[(i64, FloatHistogram)],
    hint: CounterResetHint,
) -> Result<Vec<u8>> {
    check_samples(samples)?;
    let mut a = FloatHistogramAppender::new(hint);
    for (t, h) in samples {
        a.append(*t, h)?;
    }
    Ok(a.into_bytes())
}
