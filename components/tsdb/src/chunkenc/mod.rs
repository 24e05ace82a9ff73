//! Chunk payload encodings: XOR floats, integer and float native histograms.
//!
//! A [`Chunk`] is an encoding byte plus data bytes as stored in a chunk segment record.
//! [`Chunk::iter`] decodes every sample; [`Chunk::float_iter`] is the fast path for XOR chunks.

pub mod aggr;
mod bstream;
mod histogram;
mod histogram_append;
mod varbit;
mod xor;

use bytes::Bytes;

pub use histogram::{
    CUSTOM_BUCKETS_SCHEMA, CounterResetHint, FloatHistogram, FloatHistogramIterator, Histogram,
    HistogramIterator, STALE_NAN_BITS, Span, chunk_counter_reset_header, is_stale_nan,
};
pub use histogram_append::{
    FloatHistogramAppender, HistogramAppender, encode_float_histogram_chunk, encode_histogram_chunk,
};
pub use xor::{XorAppender, XorIterator};

use crate::error::{Error, Result};

/// The staleness marker value (a NaN with payload 2).
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Chunk encodings, numbered as Prometheus numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// Gorilla XOR floats.
    Xor,
    /// Integer native histograms.
    Histogram,
    /// Float native histograms.
    FloatHistogram,
    /// Experimental XOR2 floats (decoding not supported).
    Xor2,
    /// Experimental histograms with start timestamps (decoding not supported).
    HistogramSt,
    /// Experimental float histograms with start timestamps (decoding not supported).
    FloatHistogramSt,
    /// Thanos's aggregate chunk of a downsampled block (0xff); split it with [`aggr::decode`].
    Aggr,
}

impl Encoding {
    /// The on-disk byte.
    pub fn as_u8(self) -> u8 {
        match self {
            Encoding::Xor => 1,
            Encoding::Histogram => 2,
            Encoding::FloatHistogram => 3,
            Encoding::Xor2 => 4,
            Encoding::HistogramSt => 5,
            Encoding::FloatHistogramSt => 6,
            Encoding::Aggr => aggr::AGGR_ENCODING,
        }
    }

    /// Parses the on-disk byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Encoding::Xor,
            2 => Encoding::Histogram,
            3 => Encoding::FloatHistogram,
            4 => Encoding::Xor2,
            5 => Encoding::HistogramSt,
            6 => Encoding::FloatHistogramSt,
            aggr::AGGR_ENCODING => Encoding::Aggr,
            _ => return None,
        })
    }

    /// Prometheus's name for the encoding (`XOR`, `histogram`, …).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Xor => "XOR",
            Encoding::Histogram => "histogram",
            Encoding::FloatHistogram => "floathistogram",
            Encoding::Xor2 => "XOR2",
            Encoding::HistogramSt => "histogramST",
            Encoding::FloatHistogramSt => "floathistogramST",
            Encoding::Aggr => "aggr",
        }
    }
}

/// One decoded sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// A float sample.
    Float {
        /// Timestamp, ms.
        t: i64,
        /// Value.
        v: f64,
    },
    /// An integer histogram sample.
    Histogram {
        /// Timestamp, ms.
        t: i64,
        /// The histogram.
        h: Box<Histogram>,
    },
    /// A float histogram sample.
    FloatHistogram {
        /// Timestamp, ms.
        t: i64,
        /// The histogram.
        h: Box<FloatHistogram>,
    },
}

impl Sample {
    /// The sample's timestamp.
    pub fn t(&self) -> i64 {
        match self {
            Sample::Float { t, .. }
            | Sample::Histogram { t, .. }
            | Sample::FloatHistogram { t, .. } => *t,
        }
    }

    /// Whether this is a float sample.
    pub fn is_float(&self) -> bool {
        matches!(self, Sample::Float { .. })
    }
}

/// An encoded chunk: encoding plus data (the data starts with the sample count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    encoding: Encoding,
    data: Bytes,
}

impl Chunk {
    /// Wraps encoded bytes. Errors on an unknown encoding byte.
    pub fn new(encoding: u8, data: Bytes) -> Result<Self> {
        let encoding = Encoding::from_u8(encoding).ok_or_else(|| Error::Corrupt {
            file: "chunk".into(),
            offset: 0,
            what: format!("unknown chunk encoding {encoding}"),
        })?;
        Ok(Chunk { encoding, data })
    }

    /// Wraps bytes of a known encoding.
    pub fn from_parts(encoding: Encoding, data: Bytes) -> Self {
        Chunk { encoding, data }
    }

    /// Encodes float samples into an XOR chunk. Errors beyond 65535 samples.
    pub fn from_floats(samples: &[(i64, f64)]) -> Result<Self> {
        let mut a = XorAppender::new();
        for &(t, v) in samples {
            a.append(t, v)?;
        }
        Ok(Chunk::from_parts(
            Encoding::Xor,
            Bytes::from(a.into_bytes()),
        ))
    }

    /// The encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The data bytes (without the encoding byte).
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The sample count from the header (0 when the data is too short to have one).
    pub fn num_samples(&self) -> u16 {
        if self.data.len() < 2 {
            0
        } else {
            u16::from_be_bytes([self.data[0], self.data[1]])
        }
    }

    /// Iterates float samples; errors unless this is an XOR chunk.
    pub fn float_iter(&self) -> Result<XorIterator<'_>> {
        if self.encoding != Encoding::Xor {
            return Err(self.unsupported("float iteration"));
        }
        Ok(XorIterator::new(&self.data))
    }

    fn unsupported(&self, what: &str) -> Error {
        Error::Corrupt {
            file: "chunk".into(),
            offset: 0,
            what: format!("{what} not supported for {} chunks", self.encoding.name()),
        }
    }

    /// Iterates all samples, whatever the encoding. For encodings this crate cannot decode
    /// (XOR2 and the start-timestamp histogram variants), yields one error.
    pub fn iter(&self) -> SampleIter<'_> {
        let inner = match self.encoding {
            Encoding::Xor => Inner::Xor(XorIterator::new(&self.data)),
            Encoding::Histogram => Inner::Histogram(HistogramIterator::new(&self.data)),
            Encoding::FloatHistogram => {
                Inner::FloatHistogram(FloatHistogramIterator::new(&self.data))
            }
            _ => Inner::Unsupported(Some(self.unsupported("decoding"))),
        };
        SampleIter { inner }
    }

    /// Decodes every sample into a vector.
    pub fn samples(&self) -> Result<Vec<Sample>> {
        self.iter().collect()
    }
}

#[derive(Debug)]
enum Inner<'a> {
    Xor(XorIterator<'a>),
    Histogram(HistogramIterator<'a>),
    FloatHistogram(FloatHistogramIterator<'a>),
    Unsupported(Option<Error>),
}

/// Iterator over the samples of any chunk; see [`Chunk::iter`].
#[derive(Debug)]
pub struct SampleIter<'a> {
    inner: Inner<'a>,
}

impl Iterator for SampleIter<'_> {
    type Item = Result<Sample>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Xor(it) => it.next().map(|r| r.map(|(t, v)| Sample::Float { t, v })),
            Inner::Histogram(it) => it
                .next()
                .map(|r| r.map(|(t, h)| Sample::Histogram { t, h: Box::new(h) })),
            Inner::FloatHistogram(it) => it
                .next()
                .map(|r| r.map(|(t, h)| Sample::FloatHistogram { t, h: Box::new(h) })),
            Inner::Unsupported(e) => e.take().map(Err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_iter_dispatches() {
        let c = Chunk::from_floats(&[(1, 1.0), (2, 2.0)]).unwrap();
        assert_eq!(c.num_samples(), 2);
        let s = c.samples().unwrap();
        assert_eq!(
            s,
            vec![
                Sample::Float { t: 1, v: 1.0 },
                Sample::Float { t: 2, v: 2.0 }
            ]
        );
        assert!(Chunk::new(9, Bytes::new()).is_err());
        let x2 = Chunk::new(4, Bytes::from_static(&[0, 0])).unwrap();
        assert!(x2.samples().is_err());
        let empty_xor = Chunk::new(1, Bytes::new()).unwrap();
        assert!(empty_xor.samples().is_err());
    }
}
