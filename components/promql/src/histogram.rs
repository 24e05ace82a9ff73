//! Native histograms as the engine sees them: float counts, exponential or custom buckets.
//!
//! The layout follows Prometheus's data model (a fact of the wire and file formats): buckets are
//! addressed by an integer index, stored as runs (`spans`) of consecutive indexes with absolute
//! float counts. For exponential schemas (−4…8) the upper bound of bucket `i` is `2^(i·2^−schema)`;
//! for the custom-bucket schema (−53) bucket `i` ends at `custom_values[i]` (and the last bucket at
//! +Inf).

/// The schema number of custom-bucket histograms (NHCB).
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;

/// A run of consecutive buckets, starting `offset` indexes after the end of the previous run
/// (the first run's offset is its start index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// Gap to the previous span (or start index for the first span).
    pub offset: i32,
    /// Number of consecutive buckets.
    pub length: u32,
}

/// What the writer said about counter resets for this sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CounterResetHint {
    /// Unknown; detected at query time by comparing with the previous sample.
    #[default]
    Unknown,
    /// A counter reset happened right before this sample.
    CounterReset,
    /// No counter reset happened.
    NotCounterReset,
    /// A gauge histogram: counter resets do not apply.
    Gauge,
}

/// A native histogram with float counts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FloatHistogram {
    /// Counter reset hint.
    pub counter_reset_hint: CounterResetHint,
    /// Resolution schema: −4…8 exponential, [`CUSTOM_BUCKETS_SCHEMA`] custom.
    pub schema: i32,
    /// Half-width of the zero bucket.
    pub zero_threshold: f64,
    /// Observations in the zero bucket.
    pub zero_count: f64,
    /// Total observations.
    pub count: f64,
    /// Sum of observations.
    pub sum: f64,
    /// Positive bucket spans.
    pub positive_spans: Vec<Span>,
    /// Negative bucket spans (unused for custom buckets).
    pub negative_spans: Vec<Span>,
    /// Positive bucket counts, absolute, one per index covered by `positive_spans`.
    pub positive_buckets: Vec<f64>,
    /// Negative bucket counts, absolute.
    pub negative_buckets: Vec<f64>,
    /// Upper bounds of the custom buckets (schema −53 only), ascending, without +Inf.
    pub custom_values: Vec<f64>,
}

/// One bucket with its bounds, as the HTTP API and `histogram_quantile` see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Lower bound.
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
    /// Whether `lower` belongs to the bucket.
    pub lower_inclusive: bool,
    /// Whether `upper` belongs to the bucket.
    pub upper_inclusive: bool,
    /// Observations in the bucket.
    pub count: f64,
}

impl Bucket {
    /// The boundary rule number of Prometheus's JSON API: 0 open left, 1 open right,
    /// 2 open both, 3 closed both.
    pub fn boundary_rule(&self) -> u8 {
        match (self.lower_inclusive, self.upper_inclusive) {
            (false, true) => 0,
            (true, false) => 1,
            (false, false) => 2,
            (true, true) => 3,
        }
    }
}

impl FloatHistogram {
    /// True for custom-bucket (NHCB) histograms.
    pub fn uses_custom_buckets(&self) -> bool {
        self.schema == CUSTOM_BUCKETS_SCHEMA
    }

    /// The upper bound of bucket `index` in this histogram's schema.
    pub fn bucket_upper_bound(&self, index: i32) -> f64 {
        if self.uses_custom_buckets() {
            match usize::try_from(index) {
                Ok(i) if i < self.custom_values.len() => self.custom_values[i],
                Ok(_) => f64::INFINITY,
                Err(_) => f64::NEG_INFINITY,
            }
        } else {
            exponential_bound(index, self.schema)
        }
    }

    /// `(index, count)` of every positive bucket, ascending by index (empty buckets included,
    /// as stored).
    pub fn positive_indexed(&self) -> impl Iterator<Item = (i32, f64)> + '_ {
        indexed(&self.positive_spans, &self.positive_buckets)
    }

    /// `(index, count)` of every negative bucket, ascending by index.
    pub fn negative_indexed(&self) -> impl Iterator<Item = (i32, f64)> + '_ {
        indexed(&self.negative_spans, &self.negative_buckets)
    }

    /// Every non-empty bucket with its bounds, ascending by bound: negative buckets (largest
    /// magnitude first), the zero bucket, then positive buckets; the order the JSON API uses.
    pub fn buckets(&self) -> Vec<Bucket> {
        let mut out = Vec::new();
        let custom = self.uses_custom_buckets();
        let mut neg: Vec<(i32, f64)> = self.negative_indexed().filter(|b| b.1 != 0.0).collect();
        neg.reverse();
        for (i, c) in neg {
            out.push(Bucket {
                lower: -self.bucket_upper_bound(i),
                upper: -self.bucket_upper_bound(i - 1),
                lower_inclusive: true,
                upper_inclusive: false,
                count: c,
            });
        }
        if !custom && self.zero_count != 0.0 {
            out.push(Bucket {
                lower: -self.zero_threshold,
                upper: self.zero_threshold,
                lower_inclusive: true,
                upper_inclusive: true,
                count: self.zero_count,
            });
        }
        for (i, c) in self.positive_indexed().filter(|b| b.1 != 0.0) {
            let lower = if custom && i == 0 {
                f64::NEG_INFINITY
            } else {
                self.bucket_upper_bound(i - 1)
            };
            out.push(Bucket {
                lower,
                upper: self.bucket_upper_bound(i),
                lower_inclusive: false,
                upper_inclusive: true,
                count: c,
            });
        }
        out
    }
}

fn indexed<'a>(spans: &'a [Span], counts: &'a [f64]) -> impl Iterator<Item = (i32, f64)> + 'a {
    let mut idx = 0i32;
    let mut first = true;
    spans
        .iter()
        .flat_map(move |s| {
            idx = if first { s.offset } else { idx + s.offset };
            first = false;
            let start = idx;
            idx += s.length as i32;
            (0..s.length as i32).map(move |k| start + k)
        })
        .zip(counts.iter().copied())
}

/// Upper bound of bucket `index` for exponential `schema`: `2^(index · 2^−schema)`, computed
/// as `frexp`-style mantissa/exponent so that bounds at powers of two are exact.
pub fn exponential_bound(index: i32, schema: i32) -> f64 {
    if schema <= 0 {
        let exp = i64::from(index) << (-schema).min(62);
        return pow2(exp);
    }
    let per = 1i64 << schema; // buckets per power of two
    let i = i64::from(index);
    let whole = i.div_euclid(per);
    let frac = i.rem_euclid(per);
    let m = (frac as f64 / per as f64).exp2();
    m * pow2(whole)
}

fn pow2(e: i64) -> f64 {
    if e > 1023 {
        f64::INFINITY
    } else if e < -1074 {
        0.0
    } else {
        (e as f64).exp2()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_bounds() {
        assert_eq!(exponential_bound(0, 0), 1.0);
        assert_eq!(exponential_bound(1, 0), 2.0);
        assert_eq!(exponential_bound(-1, 0), 0.5);
        assert_eq!(exponential_bound(1, -1), 4.0);
        assert_eq!(exponential_bound(2, 1), 2.0);
        assert!((exponential_bound(1, 1) - std::f64::consts::SQRT_2).abs() < 1e-15);
        assert_eq!(exponential_bound(4000, 0), f64::INFINITY);
    }

    #[test]
    fn buckets_in_bound_order() {
        let h = FloatHistogram {
            schema: 0,
            zero_threshold: 0.001,
            zero_count: 2.0,
            count: 8.0,
            positive_spans: vec![Span {
                offset: 0,
                length: 2,
            }],
            positive_buckets: vec![1.0, 2.0],
            negative_spans: vec![Span {
                offset: 1,
                length: 1,
            }],
            negative_buckets: vec![3.0],
            ..Default::default()
        };
        let b = h.buckets();
        assert_eq!(b.len(), 4);
        assert_eq!((b[0].lower, b[0].upper, b[0].count), (-2.0, -1.0, 3.0));
        assert_eq!((b[1].lower, b[1].upper), (-0.001, 0.001));
        assert_eq!(b[1].boundary_rule(), 3);
        assert_eq!((b[2].lower, b[2].upper, b[2].count), (0.5, 1.0, 1.0));
        assert_eq!((b[3].lower, b[3].upper, b[3].count), (1.0, 2.0, 2.0));
        assert_eq!(b[3].boundary_rule(), 0);
    }

    #[test]
    fn custom_bucket_bounds() {
        let h = FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            custom_values: vec![1.0, 5.0],
            positive_spans: vec![Span {
                offset: 0,
                length: 3,
            }],
            positive_buckets: vec![1.0, 0.0, 4.0],
            ..Default::default()
        };
        let b = h.buckets();
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].lower, b[0].upper), (f64::NEG_INFINITY, 1.0));
        assert_eq!((b[1].lower, b[1].upper), (5.0, f64::INFINITY));
    }
}
