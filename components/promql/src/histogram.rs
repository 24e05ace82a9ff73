//! Native histograms as the engine sees them: float counts, exponential or custom buckets.
//!
//! The layout follows Prometheus's data model (a fact of the wire and file formats): buckets are
//! addressed by an integer index, stored as runs (`spans`) of consecutive indexes with absolute
//! float counts. For exponential schemas (−4…8) the upper bound of bucket `i` is `2^(i·2^−schema)`;
//! for the custom-bucket schema (−53) bucket `i` ends at `custom_values[i]` (and the last bucket at
//! +Inf).
//!
//! Arithmetic and the functions' math follow Prometheus's semantics (for the engine):
//! - `add(&mut self, &other)` / `sub(&mut self, &other) -> Result<HistOpOutcome, HistogramError>`:
//!   in place; lower schema wins, zero buckets widen to a common threshold, custom bounds
//!   are reconciled to the shared bounds (`HistOpOutcome::nhcb_reconciled`), a
//!   reset/not-reset hint pair sets `counter_reset_collision`; exponential with custom →
//!   `HistogramError::IncompatibleSchema`. Subtraction does not make the result a gauge
//!   (Prometheus's engine sets that itself).
//! - `trim_buckets(rhs, upper)`: the `</` (upper) and `>/` trim operators.
//! - `kahan_add(&mut self, &other, &mut Option<FloatHistogram>)`: `add` with a compensation
//!   histogram (Prometheus's `KahanAdd`, for `sum`/`avg`/`*_over_time`); finish with
//!   `h.add(&comp)`.
//! - `mul(f64)`, `div(f64)` (÷0 drops the buckets), `negate()`: negative factors make gauges.
//! - `compact(max_empty_buckets)`, `reduce_resolution(schema) -> Result<(), HistogramError>`,
//!   `detect_reset(&previous) -> bool`, `equals(&other) -> bool`.
//! - `quantile(q) -> (f64, Option<NanNote>)`, `fraction(lower, upper) -> (f64, Option<NanNote>)`
//!   (the note asks for Prometheus's NaN-observation infos), `stddev()`, `stdvar()`, `avg()`.
//! - `go_string()` (Go's `String()`, the label value `count_values` writes), `test_expression()`
//!   (the `{{…}}` notation), [`go_g`] (Go's `%g`).

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
                upper: -self.bucket_upper_bound(i.saturating_sub(1)),
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
                self.bucket_upper_bound(i.saturating_sub(1))
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

/// Errors of histogram arithmetic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistogramError {
    /// One operand has exponential buckets, the other custom buckets.
    #[error(
        "cannot apply this operation on histograms with a mix of exponential and custom bucket schemas"
    )]
    IncompatibleSchema,
    /// A resolution change that cannot be done (to a higher schema, or with custom buckets).
    #[error("cannot reduce resolution from schema {from} to schema {to}")]
    BadResolution {
        /// The histogram's schema.
        from: i32,
        /// The requested schema.
        to: i32,
    },
}

/// What an addition or subtraction noticed besides its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistOpOutcome {
    /// One operand said "counter reset", the other "not a counter reset"; the result's hint
    /// was set to unknown.
    pub counter_reset_collision: bool,
    /// Custom-bucket operands had different bounds; the result uses the bounds both share.
    pub nhcb_reconciled: bool,
}

/// The index a bucket of `from` schema falls into at the lower `to` schema.
fn target_index(index: i32, from: i32, to: i32) -> i32 {
    let shift = (i64::from(from) - i64::from(to)).clamp(0, 63);
    let t = ((i64::from(index) - 1) >> shift) + 1;
    t.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// `(index, count)` pairs (ascending, unique) back to spans and counts; consecutive indexes
/// share a span.
fn spans_from_pairs(pairs: &[(i32, f64)]) -> (Vec<Span>, Vec<f64>) {
    let mut spans: Vec<Span> = Vec::new();
    let mut counts = Vec::with_capacity(pairs.len());
    let mut next: Option<i32> = None;
    for &(i, c) in pairs {
        match next {
            Some(n) if n == i => {
                if let Some(last) = spans.last_mut() {
                    last.length += 1;
                }
            }
            Some(n) => spans.push(Span {
                offset: i - n,
                length: 1,
            }),
            None => spans.push(Span {
                offset: i,
                length: 1,
            }),
        }
        counts.push(c);
        next = i.checked_add(1);
    }
    (spans, counts)
}

/// Adds `(index, count)` pairs into an ascending pair list (`sign` −1 subtracts).
fn merge_pairs(a: &[(i32, f64)], b: &[(i32, f64)], sign: f64) -> Vec<(i32, f64)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                out.push((x.0, x.1 + sign * y.1));
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                out.push(*x);
                i += 1;
            }
            (Some(x), None) => {
                out.push(*x);
                i += 1;
            }
            (_, Some(y)) => {
                out.push((y.0, sign * y.1));
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// Merges the buckets of `pairs` (at `from` schema) down to the `to` schema.
fn reduce_pairs(pairs: &[(i32, f64)], from: i32, to: i32) -> Vec<(i32, f64)> {
    if from <= to {
        return pairs.to_vec();
    }
    let mut out: Vec<(i32, f64)> = Vec::new();
    for &(i, c) in pairs {
        let t = target_index(i, from, to);
        match out.last_mut() {
            Some(last) if last.0 == t => last.1 += c,
            _ => out.push((t, c)),
        }
    }
    out
}

impl FloatHistogram {
    /// Positive buckets as `(index, count)` pairs.
    fn pos_pairs(&self) -> Vec<(i32, f64)> {
        self.positive_indexed().collect()
    }

    /// Negative buckets as `(index, count)` pairs.
    fn neg_pairs(&self) -> Vec<(i32, f64)> {
        self.negative_indexed().collect()
    }

    fn set_pos(&mut self, pairs: &[(i32, f64)]) {
        (self.positive_spans, self.positive_buckets) = spans_from_pairs(pairs);
    }

    fn set_neg(&mut self, pairs: &[(i32, f64)]) {
        (self.negative_spans, self.negative_buckets) = spans_from_pairs(pairs);
    }

    /// Multiplies every count and the sum by `factor`; a negative factor makes a gauge.
    pub fn mul(&mut self, factor: f64) {
        self.zero_count *= factor;
        self.count *= factor;
        self.sum *= factor;
        self.positive_buckets.iter_mut().for_each(|b| *b *= factor);
        self.negative_buckets.iter_mut().for_each(|b| *b *= factor);
        if factor < 0.0 {
            self.counter_reset_hint = CounterResetHint::Gauge;
        }
    }

    /// Divides every count and the sum by `divisor`; dividing by zero makes count, sum and
    /// zero count ±Inf/NaN and removes every bucket; a negative divisor makes a gauge.
    pub fn div(&mut self, divisor: f64) {
        self.zero_count /= divisor;
        self.count /= divisor;
        self.sum /= divisor;
        if divisor == 0.0 {
            self.positive_buckets.clear();
            self.negative_buckets.clear();
            self.positive_spans.clear();
            self.negative_spans.clear();
            return;
        }
        self.positive_buckets.iter_mut().for_each(|b| *b /= divisor);
        self.negative_buckets.iter_mut().for_each(|b| *b /= divisor);
        if divisor < 0.0 {
            self.counter_reset_hint = CounterResetHint::Gauge;
        }
    }

    /// Unary minus: every count and the sum negated; the result is a gauge.
    pub fn negate(&mut self) {
        self.mul(-1.0);
    }

    /// Removes empty buckets; runs of up to `max_empty_buckets` empty buckets between
    /// populated ones are kept inside one span (0 removes all of them).
    pub fn compact(&mut self, max_empty_buckets: usize) {
        fn fill(pairs: Vec<(i32, f64)>, max_empty: usize) -> Vec<(i32, f64)> {
            let populated: Vec<(i32, f64)> = pairs.into_iter().filter(|p| p.1 != 0.0).collect();
            let mut out: Vec<(i32, f64)> = Vec::with_capacity(populated.len());
            for (i, c) in populated {
                if let Some(&(prev, _)) = out.last() {
                    let gap = i64::from(i) - i64::from(prev) - 1;
                    if gap > 0 && gap as u64 <= max_empty as u64 {
                        for k in prev + 1..i {
                            out.push((k, 0.0));
                        }
                    }
                }
                out.push((i, c));
            }
            out
        }
        let pos = fill(self.pos_pairs(), max_empty_buckets);
        let neg = fill(self.neg_pairs(), max_empty_buckets);
        self.set_pos(&pos);
        self.set_neg(&neg);
    }

    /// Merges buckets down to the lower-resolution `schema` (a no-op at the same schema).
    pub fn reduce_resolution(&mut self, schema: i32) -> Result<(), HistogramError> {
        if schema == self.schema {
            return Ok(());
        }
        if self.uses_custom_buckets() || schema == CUSTOM_BUCKETS_SCHEMA || schema > self.schema {
            return Err(HistogramError::BadResolution {
                from: self.schema,
                to: schema,
            });
        }
        let pos = reduce_pairs(&self.pos_pairs(), self.schema, schema);
        let neg = reduce_pairs(&self.neg_pairs(), self.schema, schema);
        self.set_pos(&pos);
        self.set_neg(&neg);
        self.schema = schema;
        Ok(())
    }

    /// The zero count this histogram would have with the zero bucket widened to `larger`,
    /// and the threshold actually reached: when `larger` falls inside a populated bucket, the
    /// threshold grows to that bucket's outer bound.
    fn zero_count_for_threshold(&self, larger: f64) -> (f64, f64) {
        let mut threshold = larger;
        if threshold <= self.zero_threshold {
            return (self.zero_count, self.zero_threshold.max(threshold));
        }
        'outer: loop {
            let mut zero = self.zero_count;
            for (i, c) in self.positive_indexed() {
                let (lower, upper) = (
                    self.bucket_upper_bound(i.saturating_sub(1)),
                    self.bucket_upper_bound(i),
                );
                if lower >= threshold {
                    break;
                }
                zero += c;
                if upper > threshold {
                    if c != 0.0 {
                        threshold = upper;
                    }
                    break;
                }
            }
            for (i, c) in self.negative_indexed() {
                let (lower, upper) = (
                    self.bucket_upper_bound(i.saturating_sub(1)),
                    self.bucket_upper_bound(i),
                );
                if lower >= threshold {
                    break;
                }
                zero += c;
                if upper > threshold {
                    if c != 0.0 {
                        threshold = upper;
                        continue 'outer;
                    }
                    break;
                }
            }
            return (zero, threshold);
        }
    }

    /// Widens this histogram's zero bucket to `threshold` (which must be at a bucket bound or
    /// inside empty buckets), moving the buckets inside it into the zero count.
    fn widen_zero_bucket(&mut self, threshold: f64) {
        let (zero, t) = self.zero_count_for_threshold(threshold);
        self.zero_count = zero;
        self.zero_threshold = t;
        let inside = |h: &FloatHistogram, i: i32| h.bucket_upper_bound(i.saturating_sub(1)) < t;
        let pos: Vec<(i32, f64)> = self
            .positive_indexed()
            .filter(|&(i, _)| !inside(self, i))
            .collect();
        let neg: Vec<(i32, f64)> = self
            .negative_indexed()
            .filter(|&(i, _)| !inside(self, i))
            .collect();
        self.set_pos(&pos);
        self.set_neg(&neg);
    }

    /// Sets the counter reset hint for the sum or difference with `other`; true on a
    /// reset/not-reset collision.
    fn adjust_counter_reset(&mut self, other: &FloatHistogram) -> bool {
        use CounterResetHint::*;
        let (a, b) = (self.counter_reset_hint, other.counter_reset_hint);
        match (a, b) {
            _ if a == b => false,
            (Gauge, _) => false,
            (_, Gauge) => {
                self.counter_reset_hint = Gauge;
                false
            }
            (Unknown, _) => false,
            (_, Unknown) => {
                self.counter_reset_hint = Unknown;
                false
            }
            _ => {
                self.counter_reset_hint = Unknown;
                true
            }
        }
    }

    /// Adds `other` to this histogram (see [`FloatHistogram::sub`] for the rules).
    pub fn add(&mut self, other: &FloatHistogram) -> Result<HistOpOutcome, HistogramError> {
        self.add_signed(other, 1.0)
    }

    /// Subtracts `other` from this histogram. Both must use exponential buckets, or both
    /// custom buckets. Exponential operands meet at the lower schema and the wider zero
    /// bucket (buckets inside it are merged into the zero count); custom-bucket operands with
    /// different bounds are mapped onto the bounds both share (`nhcb_reconciled`).
    pub fn sub(&mut self, other: &FloatHistogram) -> Result<HistOpOutcome, HistogramError> {
        self.add_signed(other, -1.0)
    }

    fn add_signed(
        &mut self,
        other: &FloatHistogram,
        sign: f64,
    ) -> Result<HistOpOutcome, HistogramError> {
        if self.uses_custom_buckets() != other.uses_custom_buckets() {
            return Err(HistogramError::IncompatibleSchema);
        }
        let mut outcome = HistOpOutcome {
            counter_reset_collision: self.adjust_counter_reset(other),
            nhcb_reconciled: false,
        };
        self.count += sign * other.count;
        self.sum += sign * other.sum;
        if self.uses_custom_buckets() {
            if self.custom_values == other.custom_values {
                let pos = merge_pairs(&self.pos_pairs(), &other.pos_pairs(), sign);
                self.set_pos(&pos);
            } else {
                outcome.nhcb_reconciled = true;
                let shared = intersect_bounds(&self.custom_values, &other.custom_values);
                let mut target = vec![0.0; shared.len() + 1];
                map_custom(self, &shared, &mut target, 1.0);
                map_custom(other, &shared, &mut target, sign);
                let pairs: Vec<(i32, f64)> = target
                    .into_iter()
                    .enumerate()
                    .filter(|p| p.1 != 0.0)
                    .map(|(i, c)| (i as i32, c))
                    .collect();
                self.set_pos(&pairs);
                self.custom_values = shared;
            }
            return Ok(outcome);
        }
        // Zero buckets: both widen to a common threshold at a bucket bound of both.
        let mut other_zero = other.zero_count;
        let mut other_threshold = other.zero_threshold;
        // Each round only raises a threshold; NaN thresholds make no progress and stop it.
        while other_threshold != self.zero_threshold {
            let before = (other_threshold.to_bits(), self.zero_threshold.to_bits());
            if self.zero_threshold > other_threshold {
                (other_zero, other_threshold) = other.zero_count_for_threshold(self.zero_threshold);
            }
            if other_threshold > self.zero_threshold {
                self.widen_zero_bucket(other_threshold);
            }
            if (other_threshold.to_bits(), self.zero_threshold.to_bits()) == before {
                break;
            }
        }
        self.zero_count += sign * other_zero;
        let schema = self.schema.min(other.schema);
        let mut own_pos = reduce_pairs(&self.pos_pairs(), self.schema, schema);
        let mut own_neg = reduce_pairs(&self.neg_pairs(), self.schema, schema);
        self.schema = schema;
        let inside = |i: i32| exponential_bound(i, schema) <= self.zero_threshold;
        let o_pos: Vec<(i32, f64)> = reduce_pairs(&other.pos_pairs(), other.schema, schema)
            .into_iter()
            .filter(|p| !inside(p.0))
            .collect();
        let o_neg: Vec<(i32, f64)> = reduce_pairs(&other.neg_pairs(), other.schema, schema)
            .into_iter()
            .filter(|p| !inside(p.0))
            .collect();
        own_pos = merge_pairs(&own_pos, &o_pos, sign);
        own_neg = merge_pairs(&own_neg, &o_neg, sign);
        self.set_pos(&own_pos);
        self.set_neg(&own_neg);
        Ok(outcome)
    }

    /// Whether this histogram, following `previous`, starts over as a counter: the hint
    /// decides when it says reset or not-reset; otherwise a smaller count, a missing or
    /// smaller bucket, a higher schema, a smaller or bucket-splitting zero threshold, or a
    /// change between exponential and custom buckets is a reset. Different custom bounds are
    /// compared on the bounds both share.
    pub fn detect_reset(&self, previous: &FloatHistogram) -> bool {
        match self.counter_reset_hint {
            CounterResetHint::CounterReset => return true,
            CounterResetHint::NotCounterReset => return false,
            _ => {}
        }
        if self.count < previous.count {
            return true;
        }
        if self.uses_custom_buckets() != previous.uses_custom_buckets() {
            return true;
        }
        if self.uses_custom_buckets() {
            if self.custom_values != previous.custom_values {
                return custom_reset_on_shared_bounds(self, previous);
            }
            return pairs_reset(&self.pos_pairs(), &previous.pos_pairs());
        }
        if self.schema > previous.schema || self.zero_threshold < previous.zero_threshold {
            return true;
        }
        let (prev_zero, t) = previous.zero_count_for_threshold(self.zero_threshold);
        if t != self.zero_threshold {
            return true;
        }
        if self.zero_count < prev_zero {
            return true;
        }
        let outside = |pairs: Vec<(i32, f64)>, schema: i32| -> Vec<(i32, f64)> {
            pairs
                .into_iter()
                .filter(|p| exponential_bound(p.0, schema) > self.zero_threshold)
                .collect()
        };
        let cur_pos = outside(self.pos_pairs(), self.schema);
        let cur_neg = outside(self.neg_pairs(), self.schema);
        let prev_pos = outside(
            reduce_pairs(&previous.pos_pairs(), previous.schema, self.schema),
            self.schema,
        );
        let prev_neg = outside(
            reduce_pairs(&previous.neg_pairs(), previous.schema, self.schema),
            self.schema,
        );
        pairs_reset(&cur_pos, &prev_pos) || pairs_reset(&cur_neg, &prev_neg)
    }

    /// Exact equality as data: same schema, thresholds, custom bounds, and the same populated
    /// and empty buckets with bit-identical counts (span boundaries may differ).
    pub fn equals(&self, other: &FloatHistogram) -> bool {
        let bits = |pairs: Vec<(i32, f64)>| -> Vec<(i32, u64)> {
            pairs.into_iter().map(|(i, c)| (i, c.to_bits())).collect()
        };
        self.schema == other.schema
            && self.zero_threshold == other.zero_threshold
            && self.zero_count.to_bits() == other.zero_count.to_bits()
            && self.count.to_bits() == other.count.to_bits()
            && self.sum.to_bits() == other.sum.to_bits()
            && (!self.uses_custom_buckets() || self.custom_values == other.custom_values)
            && bits(self.pos_pairs()) == bits(other.pos_pairs())
            && bits(self.neg_pairs()) == bits(other.neg_pairs())
    }
}

impl FloatHistogram {
    /// The histogram in the notation of Prometheus's test scripts (`{{schema:1 count:3 …}}`),
    /// gaps of up to 1024 empty buckets between populated ones written as 0.
    pub fn test_expression(&self) -> String {
        let mut m = self.clone();
        m.compact(1024);
        let mut parts: Vec<String> = Vec::new();
        if m.schema != 0 {
            parts.push(format!("schema:{}", m.schema));
        }
        if m.count != 0.0 {
            parts.push(format!("count:{}", m.count));
        }
        if m.sum != 0.0 {
            parts.push(format!("sum:{}", m.sum));
        }
        if m.zero_count != 0.0 {
            parts.push(format!("z_bucket:{}", m.zero_count));
        }
        if m.zero_threshold != 0.0 {
            parts.push(format!("z_bucket_w:{}", m.zero_threshold));
        }
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        if m.uses_custom_buckets() {
            parts.push(format!("custom_values:[{}]", list(&m.custom_values)));
        }
        match m.counter_reset_hint {
            CounterResetHint::Unknown => {}
            CounterResetHint::CounterReset => parts.push("counter_reset_hint:reset".into()),
            CounterResetHint::NotCounterReset => parts.push("counter_reset_hint:not_reset".into()),
            CounterResetHint::Gauge => parts.push("counter_reset_hint:gauge".into()),
        }
        for (spans, buckets, off, key) in [
            (&m.positive_spans, &m.positive_buckets, "offset", "buckets"),
            (
                &m.negative_spans,
                &m.negative_buckets,
                "n_offset",
                "n_buckets",
            ),
        ] {
            if let Some(first) = spans.first().filter(|s| s.offset != 0) {
                parts.push(format!("{off}:{}", first.offset));
            }
            if !buckets.is_empty() {
                parts.push(format!("{key}:[{}]", list(buckets)));
            }
        }
        format!("{{{{{}}}}}", parts.join(" "))
    }
}

/// An annotation [`FloatHistogram::quantile`] or [`FloatHistogram::fraction`] asks for:
/// the histogram holds NaN observations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NanNote {
    /// The quantile fell among NaN observations; the result is NaN.
    QuantileNaNResult,
    /// NaN observations skew the quantile (it was computed without them).
    QuantileNaNSkew,
    /// NaN observations are in no bucket; the fraction leaves them out.
    FractionNaNs,
}

impl FloatHistogram {
    /// Every stored bucket (empty ones included) in ascending bound order: negative buckets,
    /// the zero bucket (when populated), positive buckets. Bucket bounds inside the zero
    /// bucket are clamped to its threshold.
    fn all_buckets(&self) -> Vec<Bucket> {
        let mut out = Vec::new();
        let t = self.zero_threshold;
        if self.uses_custom_buckets() {
            for (i, c) in self.positive_indexed() {
                let lower = if i == 0 {
                    f64::NEG_INFINITY
                } else {
                    self.bucket_upper_bound(i.saturating_sub(1))
                };
                out.push(Bucket {
                    lower,
                    upper: self.bucket_upper_bound(i),
                    lower_inclusive: false,
                    upper_inclusive: true,
                    count: c,
                });
            }
            return out;
        }
        let neg: Vec<(i32, f64)> = self.negative_indexed().collect();
        for &(i, c) in neg.iter().rev() {
            let mut upper = -self.bucket_upper_bound(i.saturating_sub(1));
            if upper < 0.0 && upper > -t {
                upper = -t;
            }
            out.push(Bucket {
                lower: -self.bucket_upper_bound(i),
                upper,
                lower_inclusive: true,
                upper_inclusive: false,
                count: c,
            });
        }
        if self.zero_count > 0.0 {
            out.push(Bucket {
                lower: -t,
                upper: t,
                lower_inclusive: true,
                upper_inclusive: true,
                count: self.zero_count,
            });
        }
        for (i, c) in self.positive_indexed() {
            let mut lower = self.bucket_upper_bound(i.saturating_sub(1));
            if lower > 0.0 && lower < t {
                lower = t;
            }
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

    /// The arithmetic mean of the observations: `sum / count`.
    pub fn avg(&self) -> f64 {
        self.sum / self.count
    }

    /// The estimated `q`-quantile (`histogram_quantile`): q < 0 gives −Inf, q > 1 +Inf, an
    /// empty histogram or NaN q gives NaN. Interpolates linearly in custom buckets and in the
    /// zero bucket (which starts or ends at 0 when all other buckets are on one side), and
    /// exponentially in exponential buckets; the first custom bucket ends at its upper bound
    /// when that is ≤ 0 (starts at 0 otherwise) and the +Inf bucket yields its lower bound.
    pub fn quantile(&self, q: f64) -> (f64, Option<NanNote>) {
        if q < 0.0 {
            return (f64::NEG_INFINITY, None);
        }
        if q > 1.0 {
            return (f64::INFINITY, None);
        }
        if self.count == 0.0 || q.is_nan() {
            return (f64::NAN, None);
        }
        let forward = self.sum.is_nan() || q < 0.5;
        let mut buckets = self.all_buckets();
        if !forward {
            buckets.reverse();
        }
        let mut rank = if forward {
            q * self.count
        } else {
            (1.0 - q) * self.count
        };
        let mut count = 0.0;
        let mut pos = 0;
        let mut bucket: Option<Bucket> = None;
        while pos < buckets.len() {
            let b = buckets[pos];
            pos += 1;
            bucket = Some(b);
            if b.count == 0.0 {
                continue;
            }
            count += b.count;
            if count >= rank {
                break;
            }
        }
        // With no buckets at all (only NaN observations), an empty [0,0] bucket stands in.
        let mut b = bucket.unwrap_or(Bucket {
            lower: 0.0,
            upper: 0.0,
            lower_inclusive: false,
            upper_inclusive: false,
            count: 0.0,
        });
        if !self.uses_custom_buckets() && b.lower < 0.0 && b.upper > 0.0 {
            if self.negative_buckets.is_empty() && !self.positive_buckets.is_empty() {
                b.lower = 0.0;
            } else if self.positive_buckets.is_empty() && !self.negative_buckets.is_empty() {
                b.upper = 0.0;
            }
        } else if self.uses_custom_buckets() {
            if b.lower == f64::NEG_INFINITY {
                if b.upper <= 0.0 {
                    return (b.upper, None);
                }
                b.lower = 0.0;
            } else if b.upper == f64::INFINITY {
                return (b.lower, None);
            }
        }
        if count > self.count {
            count = self.count;
        }
        if count < rank {
            if self.sum.is_nan() {
                return (f64::NAN, Some(NanNote::QuantileNaNResult));
            }
            return (b.upper, None);
        }
        if forward {
            rank -= count - b.count;
        } else {
            rank = count - rank;
        }
        let mut note = None;
        if self.sum.is_nan() {
            let total: f64 = count + buckets[pos..].iter().map(|b| b.count).sum::<f64>();
            if total < self.count {
                note = Some(NanNote::QuantileNaNSkew);
            }
        }
        let fraction = rank / b.count;
        if self.uses_custom_buckets() || (b.lower <= 0.0 && b.upper >= 0.0) {
            return (b.lower + (b.upper - b.lower) * fraction, note);
        }
        let log_lower = b.lower.abs().log2();
        let log_upper = b.upper.abs().log2();
        if b.lower > 0.0 {
            return (
                (log_lower + (log_upper - log_lower) * fraction).exp2(),
                note,
            );
        }
        (
            -(log_upper + (log_lower - log_upper) * (1.0 - fraction)).exp2(),
            note,
        )
    }

    /// The estimated fraction of observations between `lower` and `upper`
    /// (`histogram_fraction`), interpolated like [`quantile`](FloatHistogram::quantile); NaN
    /// for an empty histogram or a NaN bound, 0 when `lower >= upper`. Infinite-width buckets
    /// contribute nothing when a bound falls inside them.
    pub fn fraction(&self, lower: f64, upper: f64) -> (f64, Option<NanNote>) {
        if self.count == 0.0 || lower.is_nan() || upper.is_nan() {
            return (f64::NAN, None);
        }
        if lower >= upper {
            return (0.0, None);
        }
        let buckets = self.all_buckets();
        let custom = self.uses_custom_buckets();
        let (mut count, mut rank) = (0.0, 0.0);
        let (mut lower_rank, mut upper_rank) = (0.0, 0.0);
        let (mut lower_set, mut upper_set) = (false, false);
        let mut pos = 0;
        while pos < buckets.len() {
            let mut b = buckets[pos];
            pos += 1;
            count += b.count;
            let mut zero_bucket = false;
            if b.lower <= 0.0 && b.upper >= 0.0 {
                zero_bucket = true;
                if self.negative_buckets.is_empty() && !self.positive_buckets.is_empty() {
                    b.lower = 0.0;
                } else if self.positive_buckets.is_empty() && !self.negative_buckets.is_empty() {
                    b.upper = 0.0;
                }
            }
            let linear = custom || zero_bucket;
            let below = |v: f64| -> f64 {
                if linear {
                    if b.lower == f64::NEG_INFINITY {
                        return b.count;
                    }
                    return rank + b.count * fraction_below(&b, v, true);
                }
                rank + b.count * fraction_below(&b, v, false)
            };
            if !lower_set && b.lower >= lower {
                lower_rank = rank;
                lower_set = true;
            }
            if !upper_set && b.lower >= upper {
                upper_rank = rank;
                upper_set = true;
            }
            if lower_set && upper_set {
                break;
            }
            if !lower_set && b.lower < lower && b.upper > lower {
                lower_rank = below(lower);
                lower_set = true;
            }
            if !upper_set && b.lower < upper && b.upper > upper {
                upper_rank = below(upper);
                upper_set = true;
            }
            if lower_set && upper_set {
                break;
            }
            rank += b.count;
        }
        let mut note = None;
        if self.sum.is_nan() {
            count += buckets[pos.min(buckets.len())..]
                .iter()
                .map(|b| b.count)
                .sum::<f64>();
            if count < self.count {
                note = Some(NanNote::FractionNaNs);
            }
        } else {
            count = self.count;
        }
        if !lower_set || lower_rank > count {
            lower_rank = count;
        }
        if !upper_set || upper_rank > count {
            upper_rank = count;
        }
        ((upper_rank - lower_rank) / self.count, note)
    }

    /// The estimated population variance of the observations (`histogram_stdvar`): every
    /// bucket's observations sit at its representative value (the arithmetic middle for
    /// custom buckets, 0 in the zero bucket, the geometric middle of exponential buckets).
    pub fn stdvar(&self) -> f64 {
        let mean = self.sum / self.count;
        let custom = self.uses_custom_buckets();
        let (mut var, mut comp) = (0.0, 0.0);
        for b in self.all_buckets() {
            if b.count == 0.0 {
                continue;
            }
            let val = if custom {
                (b.upper + b.lower) / 2.0
            } else if b.lower <= 0.0 && b.upper >= 0.0 {
                0.0
            } else {
                let g = (b.upper * b.lower).sqrt();
                if b.upper < 0.0 { -g } else { g }
            };
            let delta = val - mean;
            kahan_inc(b.count * delta * delta, &mut var, &mut comp);
        }
        (var + comp) / self.count
    }

    /// The estimated standard deviation (`histogram_stddev`): the root of
    /// [`stdvar`](FloatHistogram::stdvar).
    pub fn stddev(&self) -> f64 {
        self.stdvar().sqrt()
    }

    /// Go's `String()` of a Prometheus float histogram, e.g. `{count:20, sum:10,
    /// [-2,-1):2, [-0.001,0.001]:2, (1,2]:2}` (what `count_values` uses as a label value).
    pub fn go_string(&self) -> String {
        let mut s = format!("{{count:{}, sum:{}", go_g(self.count), go_g(self.sum));
        for b in self.buckets() {
            s.push_str(&format!(
                ", {}{},{}{}:{}",
                if b.lower_inclusive { '[' } else { '(' },
                go_g(b.lower),
                go_g(b.upper),
                if b.upper_inclusive { ']' } else { ')' },
                go_g(b.count)
            ));
        }
        s.push('}');
        s
    }
}

impl FloatHistogram {
    /// The trim operators `h </ rhs` (`upper` true: keep observations below `rhs`) and
    /// `h >/ rhs` (keep those above): buckets beyond `rhs` are emptied, the bucket holding it
    /// keeps its interpolated share (linear for custom and zero buckets, logarithmic for
    /// exponential ones; infinite-width buckets are kept or dropped whole); when anything was
    /// trimmed, count and sum are re-estimated from the kept buckets' midpoints.
    pub fn trim_buckets(&mut self, rhs: f64, upper: bool) {
        let custom = self.uses_custom_buckets();
        let (mut count, mut sum) = (0.0, 0.0);
        let mut trimmed = false;
        let (mut has_pos, mut has_neg) = (false, false);
        for positive in [true, false] {
            let pairs: Vec<(i32, f64)> = if positive {
                self.pos_pairs()
            } else {
                self.neg_pairs()
            };
            for (k, (i, c)) in pairs.into_iter().enumerate() {
                if c == 0.0 {
                    continue;
                }
                let b = if positive {
                    has_pos = true;
                    let lower = if custom && i == 0 {
                        f64::NEG_INFINITY
                    } else {
                        self.bucket_upper_bound(i.saturating_sub(1))
                    };
                    Bucket {
                        lower,
                        upper: self.bucket_upper_bound(i),
                        lower_inclusive: false,
                        upper_inclusive: true,
                        count: c,
                    }
                } else {
                    has_neg = true;
                    Bucket {
                        lower: -self.bucket_upper_bound(i),
                        upper: -self.bucket_upper_bound(i.saturating_sub(1)),
                        lower_inclusive: true,
                        upper_inclusive: false,
                        count: c,
                    }
                };
                let whole = if upper {
                    b.upper <= rhs
                } else {
                    b.lower >= rhs
                };
                let partial = if upper { b.lower < rhs } else { b.upper > rhs };
                let new = if whole {
                    count += c;
                    sum += trim_midpoint(b.lower, b.upper, positive, custom) * c;
                    c
                } else if partial {
                    let (keep, mid) = bucket_trim(&b, rhs, upper, positive, custom);
                    count += keep;
                    sum += mid * keep;
                    keep
                } else {
                    0.0
                };
                if new != c {
                    trimmed = true;
                    let slot = if positive {
                        self.positive_buckets.get_mut(k)
                    } else {
                        self.negative_buckets.get_mut(k)
                    };
                    if let Some(slot) = slot {
                        *slot = new;
                    }
                }
            }
        }
        if self.zero_count > 0.0 {
            let (mut lower, mut hi) = (-self.zero_threshold, self.zero_threshold);
            if has_neg && !has_pos {
                hi = 0.0;
            }
            if has_pos && !has_neg {
                lower = 0.0;
            }
            let z = self.zero_count;
            let (keep, mid) = if upper {
                if rhs <= lower {
                    (0.0, 0.0)
                } else if rhs >= hi {
                    (z, (lower + hi) / 2.0)
                } else {
                    (z * (rhs - lower) / (hi - lower), (lower + rhs) / 2.0)
                }
            } else if rhs <= lower {
                (z, (lower + hi) / 2.0)
            } else if rhs >= hi {
                (0.0, 0.0)
            } else {
                (z * (hi - rhs) / (hi - lower), (rhs + hi) / 2.0)
            };
            if keep != z {
                self.zero_count = keep;
                trimmed = true;
            }
            sum += mid * keep;
            count += keep;
        }
        if trimmed {
            self.count = count;
            self.sum = sum;
            self.compact(0);
        }
    }
}

/// Where the kept part of a trimmed bucket sits: the arithmetic middle for linear buckets,
/// the geometric middle (mirrored for negative buckets) for exponential ones; with one
/// infinite bound, the finite bound (or half of a positive upper bound).
fn trim_midpoint(lower: f64, upper: f64, positive: bool, linear: bool) -> f64 {
    if lower.is_infinite() {
        if upper.is_infinite() {
            return 0.0;
        }
        return if upper > 0.0 { upper / 2.0 } else { upper };
    }
    if upper.is_infinite() {
        return lower;
    }
    if linear {
        return (lower + upper) / 2.0;
    }
    let g = (lower * upper).abs().sqrt();
    if positive { g } else { -g }
}

/// The kept count and its midpoint for a bucket that holds the trim point.
fn bucket_trim(b: &Bucket, rhs: f64, upper: bool, positive: bool, custom: bool) -> (f64, f64) {
    let finite_or_zero = |x: f64| if x.is_infinite() { 0.0 } else { x };
    if b.lower == f64::NEG_INFINITY {
        if upper {
            if rhs >= b.upper {
                return (b.count, 0.0);
            }
            if rhs > 0.0 && b.upper > 0.0 && b.upper.is_finite() {
                return (b.count * rhs / b.upper, rhs / 2.0);
            }
            if b.upper <= 0.0 {
                return (b.count, rhs);
            }
            return (0.0, finite_or_zero(b.upper));
        }
        if rhs >= 0.0 && b.upper > rhs && b.upper.is_finite() {
            return (b.count * (1.0 - rhs / b.upper), (rhs + b.upper) / 2.0);
        }
        return (0.0, finite_or_zero(b.upper));
    }
    if b.upper == f64::INFINITY {
        if upper {
            return (0.0, finite_or_zero(b.lower));
        }
        if rhs >= b.lower {
            return (b.count, rhs);
        }
        return (0.0, finite_or_zero(b.lower));
    }
    let under = if rhs <= b.lower {
        0.0
    } else if rhs >= b.upper {
        b.count
    } else {
        b.count * fraction_below(b, rhs, custom)
    };
    if upper {
        (under, trim_midpoint(b.lower, rhs, positive, custom))
    } else {
        (
            b.count - under,
            trim_midpoint(rhs, b.upper, positive, custom),
        )
    }
}

/// Kahan–Babuška summation step: adds `inc` to `sum` with compensation `c`.
fn kahan_inc(inc: f64, sum: &mut f64, c: &mut f64) {
    let t = *sum + inc;
    if t.is_infinite() {
        *c = 0.0;
    } else if sum.abs() >= inc.abs() {
        *c += (*sum - t) + inc;
    } else {
        *c += (inc - t) + *sum;
    }
    *sum = t;
}

/// The part of bucket `b`'s width at or below `v` (`b.lower < v < b.upper`), on a linear or
/// a logarithmic scale (negative buckets mirrored).
fn fraction_below(b: &Bucket, v: f64, linear: bool) -> f64 {
    if linear {
        return (v - b.lower) / (b.upper - b.lower);
    }
    let log_lower = b.lower.abs().log2();
    let log_upper = b.upper.abs().log2();
    let log_v = v.abs().log2();
    if v > 0.0 {
        return (log_v - log_lower) / (log_upper - log_lower);
    }
    1.0 - (log_v - log_upper) / (log_lower - log_upper)
}

/// A float formatted like Go's `%g`: the shortest digits that round-trip, in exponent form
/// (`1e+06`, `1e-05`) when the decimal exponent is below −4 or at least
/// `max(6, digits)` — except that plain form is kept while the digits reach the decimal point.
pub fn go_g(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let e = format!("{f:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((e.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits = mant.trim_start_matches('-').replace('.', "");
    let nd = digits.len() as i32;
    let dp = exp + 1;
    let mut eprec = 6;
    if eprec > nd && nd >= dp {
        eprec = nd;
    }
    if exp < -4 || exp >= eprec {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp.abs());
    }
    format!("{f}")
}

impl FloatHistogram {
    /// Adds `other` like [`add`](FloatHistogram::add), with Kahan–Babuška compensation kept
    /// in `comp` (created on first use, same layout as `self`). Finish the sum with
    /// `self.add(&comp)`. Used by `sum`/`avg` and `*_over_time`, where large values cancel.
    pub fn kahan_add(
        &mut self,
        other: &FloatHistogram,
        comp: &mut Option<FloatHistogram>,
    ) -> Result<HistOpOutcome, HistogramError> {
        use std::collections::BTreeMap;
        if self.uses_custom_buckets() != other.uses_custom_buckets() {
            return Err(HistogramError::IncompatibleSchema);
        }
        let mut outcome = HistOpOutcome {
            counter_reset_collision: self.adjust_counter_reset(other),
            nhcb_reconciled: false,
        };
        let mut c = comp.take().unwrap_or_else(|| FloatHistogram {
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            custom_values: self.custom_values.clone(),
            ..Default::default()
        });
        kahan_inc(other.count, &mut self.count, &mut c.count);
        kahan_inc(other.sum, &mut self.sum, &mut c.sum);
        let to_map = |pairs: Vec<(i32, f64)>| -> BTreeMap<i32, f64> { pairs.into_iter().collect() };
        if self.uses_custom_buckets() {
            let mut h = to_map(self.pos_pairs());
            let mut hc = to_map(c.pos_pairs());
            if self.custom_values == other.custom_values {
                for (i, v) in other.positive_indexed() {
                    let (hv, cv) = (h.entry(i).or_insert(0.0), hc.entry(i).or_insert(0.0));
                    kahan_inc(v, hv, cv);
                }
            } else {
                outcome.nhcb_reconciled = true;
                let shared = intersect_bounds(&self.custom_values, &other.custom_values);
                let mut target = vec![0.0; shared.len() + 1];
                let mut target_c = vec![0.0; shared.len() + 1];
                let slot = |h: &FloatHistogram, i: i32| -> usize {
                    let upper = h.bucket_upper_bound(i);
                    shared
                        .iter()
                        .position(|&b| b >= upper)
                        .unwrap_or(shared.len())
                };
                for (&i, &v) in &h {
                    let t = slot(self, i);
                    kahan_inc(v, &mut target[t], &mut target_c[t]);
                    if let Some(&cv) = hc.get(&i) {
                        kahan_inc(cv, &mut target[t], &mut target_c[t]);
                    }
                }
                for (i, v) in other.positive_indexed() {
                    let t = slot(other, i);
                    kahan_inc(v, &mut target[t], &mut target_c[t]);
                }
                h.clear();
                hc.clear();
                for (t, (v, cv)) in target.into_iter().zip(target_c).enumerate() {
                    if v != 0.0 || cv != 0.0 {
                        h.insert(t as i32, v);
                        hc.insert(t as i32, cv);
                    }
                }
                self.custom_values = shared.clone();
                c.custom_values = shared;
            }
            let pos: Vec<(i32, f64)> = h.into_iter().collect();
            let cpos: Vec<(i32, f64)> = pos
                .iter()
                .map(|&(i, _)| (i, hc.get(&i).copied().unwrap_or(0.0)))
                .collect();
            self.set_pos(&pos);
            c.set_pos(&cpos);
            c.schema = self.schema;
            *comp = Some(c);
            return Ok(outcome);
        }
        // Zero buckets: widen both (self and its compensation) to the common threshold.
        let mut other_zero = other.zero_count;
        let mut other_threshold = other.zero_threshold;
        while other_threshold != self.zero_threshold {
            let before = (other_threshold.to_bits(), self.zero_threshold.to_bits());
            if self.zero_threshold > other_threshold {
                (other_zero, other_threshold) = other.zero_count_for_threshold(self.zero_threshold);
            }
            if other_threshold > self.zero_threshold {
                let (_, t) = self.zero_count_for_threshold(other_threshold);
                let inside = |i: i32| exponential_bound(i.saturating_sub(1), self.schema) < t;
                let mut zero = self.zero_count;
                let mut zc = c.zero_count;
                for (i, v) in self.positive_indexed().chain(self.negative_indexed()) {
                    if inside(i) {
                        kahan_inc(v, &mut zero, &mut zc);
                    }
                }
                for (i, v) in c.positive_indexed().chain(c.negative_indexed()) {
                    if inside(i) {
                        kahan_inc(v, &mut zero, &mut zc);
                    }
                }
                let keep = |pairs: Vec<(i32, f64)>| -> Vec<(i32, f64)> {
                    pairs.into_iter().filter(|p| !inside(p.0)).collect()
                };
                let (sp, sn, cp, cn) = (
                    keep(self.pos_pairs()),
                    keep(self.neg_pairs()),
                    keep(c.pos_pairs()),
                    keep(c.neg_pairs()),
                );
                self.set_pos(&sp);
                self.set_neg(&sn);
                c.set_pos(&cp);
                c.set_neg(&cn);
                self.zero_count = zero;
                c.zero_count = zc;
                self.zero_threshold = t;
            }
            if (other_threshold.to_bits(), self.zero_threshold.to_bits()) == before {
                break;
            }
        }
        kahan_inc(other_zero, &mut self.zero_count, &mut c.zero_count);
        let schema = self.schema.min(other.schema);
        // Reduces `pairs` (with their compensations) to `schema`, summing with compensation.
        let reduce = |pairs: Vec<(i32, f64)>,
                      comp: &BTreeMap<i32, f64>,
                      from: i32|
         -> (BTreeMap<i32, f64>, BTreeMap<i32, f64>) {
            let (mut h, mut hc) = (BTreeMap::new(), BTreeMap::new());
            for (i, v) in pairs {
                let t = if from > schema {
                    target_index(i, from, schema)
                } else {
                    i
                };
                let (hv, cv) = (h.entry(t).or_insert(0.0), hc.entry(t).or_insert(0.0));
                kahan_inc(v, hv, cv);
                if let Some(&extra) = comp.get(&i) {
                    *cv += extra;
                }
            }
            (h, hc)
        };
        let none = BTreeMap::new();
        let threshold = self.zero_threshold;
        let inside = |i: i32| exponential_bound(i, schema) <= threshold;
        let mut merged = Vec::new();
        for (own, own_c, oth) in [
            (self.pos_pairs(), to_map(c.pos_pairs()), other.pos_pairs()),
            (self.neg_pairs(), to_map(c.neg_pairs()), other.neg_pairs()),
        ] {
            let (mut h, mut hc) = reduce(own, &own_c, self.schema);
            let (o, oc) = reduce(oth, &none, other.schema);
            for (i, v) in o {
                if inside(i) {
                    continue;
                }
                let (hv, cv) = (h.entry(i).or_insert(0.0), hc.entry(i).or_insert(0.0));
                kahan_inc(v, hv, cv);
                kahan_inc(oc.get(&i).copied().unwrap_or(0.0), hv, cv);
            }
            let pairs: Vec<(i32, f64)> = h.into_iter().collect();
            let cpairs: Vec<(i32, f64)> = pairs
                .iter()
                .map(|&(i, _)| (i, hc.get(&i).copied().unwrap_or(0.0)))
                .collect();
            merged.push((pairs, cpairs));
        }
        self.schema = schema;
        self.set_pos(&merged[0].0);
        self.set_neg(&merged[1].0);
        c.set_pos(&merged[0].1);
        c.set_neg(&merged[1].1);
        c.schema = schema;
        c.zero_threshold = self.zero_threshold;
        *comp = Some(c);
        Ok(outcome)
    }
}

/// True when some bucket populated in `prev` is missing (or empty) in `cur`, or smaller.
fn pairs_reset(cur: &[(i32, f64)], prev: &[(i32, f64)]) -> bool {
    let mut j = 0;
    for &(i, p) in prev {
        while j < cur.len() && cur[j].0 < i {
            j += 1;
        }
        match cur.get(j) {
            Some(&(ci, c)) if ci == i && c != 0.0 => {
                if c < p {
                    return true;
                }
            }
            _ => {
                if p != 0.0 {
                    return true;
                }
            }
        }
    }
    false
}

/// The bounds both sorted lists hold.
fn intersect_bounds(a: &[f64], b: &[f64]) -> Vec<f64> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(a[i]);
            i += 1;
            j += 1;
        } else if a[i] < b[j] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Adds `sign ×` the custom buckets of `h` into `target`, indexed by the `shared` bounds
/// (each bucket goes to the first shared bound at or above its own upper bound).
fn map_custom(h: &FloatHistogram, shared: &[f64], target: &mut [f64], sign: f64) {
    for (i, c) in h.positive_indexed() {
        let upper = h.bucket_upper_bound(i);
        let t = shared
            .iter()
            .position(|&b| b >= upper)
            .unwrap_or(shared.len());
        if let Some(slot) = target.get_mut(t) {
            *slot += sign * c;
        }
    }
}

/// Reset detection between custom-bucket histograms with different bounds: the cumulative
/// counts below each shared bound must not decrease.
fn custom_reset_on_shared_bounds(cur: &FloatHistogram, prev: &FloatHistogram) -> bool {
    let shared = intersect_bounds(&cur.custom_values, &prev.custom_values);
    let mut a = vec![0.0; shared.len() + 1];
    let mut b = vec![0.0; shared.len() + 1];
    map_custom(cur, &shared, &mut a, 1.0);
    map_custom(prev, &shared, &mut b, 1.0);
    a.iter().zip(&b).any(|(x, y)| x < y)
}

fn indexed<'a>(spans: &'a [Span], counts: &'a [f64]) -> impl Iterator<Item = (i32, f64)> + 'a {
    let mut idx = 0i32;
    let mut first = true;
    spans
        .iter()
        .flat_map(move |s| {
            idx = if first {
                s.offset
            } else {
                idx.saturating_add(s.offset)
            };
            first = false;
            let start = idx;
            let len = i32::try_from(s.length).unwrap_or(i32::MAX);
            idx = idx.saturating_add(len);
            (0..len).map_while(move |k| start.checked_add(k))
        })
        .zip(counts.iter().copied())
}

/// Upper bound of bucket `index` for exponential `schema`: `2^(index · 2^−schema)`, computed
/// as `frexp`-style mantissa/exponent so that bounds at powers of two are exact.
pub fn exponential_bound(index: i32, schema: i32) -> f64 {
    if schema <= 0 {
        // Index × 2^−schema; beyond ±2^11 the bound is 0 or +Inf anyway.
        let shift = (-i64::from(schema)).min(20);
        return pow2(i64::from(index) << shift);
    }
    let per = 1i64 << schema.min(62); // buckets per power of two
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

    fn h(desc: &str) -> FloatHistogram {
        crate::promqltest::parse_histogram(desc)
            .expect("valid histogram notation")
            .0
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
    }

    // Expected numbers below come from Prometheus's native_histograms.test.
    #[test]
    fn quantiles_as_prometheus_tests_expect() {
        let single = h("schema:0 sum:5 count:4 buckets:[1 2 1]");
        assert!(close(single.quantile(0.5).0, std::f64::consts::SQRT_2));
        let negative = h("schema:0 sum:-5 count:4 n_buckets:[1 2 1]");
        assert!(close(negative.quantile(0.5).0, -std::f64::consts::SQRT_2));
        let zero = h("schema:0 z_bucket:1 z_bucket_w:0.5 sum:0.25 count:1");
        assert_eq!(zero.quantile(0.5).0, 0.0);
        let mut balanced = h("schema:0 sum:4 count:4 buckets:[1 2 1]");
        balanced
            .add(&h("schema:0 sum:-4 count:4 n_buckets:[1 2 1]"))
            .expect("same schema kind");
        assert_eq!(balanced.quantile(0.5).0, 0.5);
        assert_eq!(single.quantile(-0.1).0, f64::NEG_INFINITY);
        assert_eq!(single.quantile(1.1).0, f64::INFINITY);
        assert!(single.quantile(f64::NAN).0.is_nan());
        assert!(h("").quantile(0.5).0.is_nan());
        // Custom buckets: linear, the first bucket starts at 0, the +Inf bucket gives its
        // lower bound.
        let nhcb = h("schema:-53 sum:10 count:4 custom_values:[1 2 4] buckets:[1 1 1 1]");
        assert_eq!(nhcb.quantile(0.5).0, 2.0);
        assert_eq!(nhcb.quantile(0.9).0, 4.0);
        assert!(close(nhcb.quantile(0.1).0, 0.4));
        // NaN observations: the count exceeds the buckets' total.
        let nan = h("schema:0 sum:NaN count:5 buckets:[1 2 1]");
        let (v, note) = nan.quantile(0.99);
        assert!(v.is_nan());
        assert_eq!(note, Some(NanNote::QuantileNaNResult));
        let (_, note) = nan.quantile(0.25);
        assert_eq!(note, Some(NanNote::QuantileNaNSkew));
        // Only NaN observations: no bucket at all.
        let (v, note) = h("schema:0 count:3 sum:NaN").quantile(0.8);
        assert!(v.is_nan());
        assert_eq!(note, Some(NanNote::QuantileNaNResult));
    }

    #[test]
    fn fractions_as_prometheus_tests_expect() {
        let single = h("schema:0 sum:5 count:4 buckets:[1 2 1]");
        assert_eq!(single.fraction(1.0, 2.0).0, 0.5);
        assert_eq!(single.fraction(0.0, 8.0), (1.0, None));
        let negative = h("schema:0 sum:-5 count:4 n_buckets:[1 2 1]");
        assert_eq!(negative.fraction(-2.0, -1.0).0, 0.5);
        let zero = h("schema:0 z_bucket:1 z_bucket_w:0.5 sum:0.25 count:1");
        assert_eq!(zero.fraction(-0.5, 0.5).0, 1.0);
        let mut balanced = h("schema:0 sum:4 count:4 buckets:[1 2 1]");
        balanced
            .add(&h("schema:0 sum:-4 count:4 n_buckets:[1 2 1]"))
            .expect("same schema kind");
        assert_eq!(balanced.fraction(0.0, 4.0).0, 0.5);
        assert!(h("").fraction(f64::NEG_INFINITY, f64::INFINITY).0.is_nan());
        assert_eq!(single.fraction(2.0, 1.0).0, 0.0);
        // Exponential interpolation inside (1,2]: sqrt(2) is the bucket's middle.
        assert!(close(
            single.fraction(1.0, std::f64::consts::SQRT_2).0,
            0.25
        ));
    }

    #[test]
    fn stddev_and_stdvar_as_prometheus_tests_expect() {
        let low = h("schema:2 count:4 sum:10 buckets:[1 0 0 0 1 0 0 1 1]");
        assert!(close(low.stddev(), 1.0787993180043811));
        assert!(close(low.stdvar(), 1.163807968526718));
        let high = h("schema:8 count:10 sum:10 buckets:[1 2 3 4]");
        assert!((high.stddev() - 0.0048960313898237465).abs() < 1e-15);
        assert!((high.stdvar() - 2.3971123370139447e-05).abs() < 1e-17);
        assert_eq!(h("schema:0 sum:5 count:4 buckets:[1 2 1]").avg(), 1.25);
    }

    #[test]
    fn add_meets_at_the_lower_schema() {
        let mut a = h("schema:1 count:10 sum:10 buckets:[1 2 3 4]");
        let out = a
            .add(&h("schema:0 count:1 sum:1 buckets:[1]"))
            .expect("add");
        assert_eq!(out, HistOpOutcome::default());
        assert_eq!(a.schema, 0);
        assert_eq!(
            a.positive_indexed().collect::<Vec<_>>(),
            vec![(0, 2.0), (1, 5.0), (2, 4.0)]
        );
        assert_eq!((a.count, a.sum), (11.0, 11.0));
    }

    #[test]
    fn add_widens_the_zero_bucket() {
        // Bucket -1 is (0.25,0.5]: inside a 0.5 zero bucket.
        let mut a = h("schema:0 count:4 z_bucket:1 z_bucket_w:0.001 buckets:[1 1] offset:-1");
        a.add(&h("schema:0 count:2 z_bucket:2 z_bucket_w:0.5"))
            .expect("add");
        assert_eq!((a.zero_threshold, a.zero_count), (0.5, 4.0));
        assert_eq!(a.positive_indexed().collect::<Vec<_>>(), vec![(0, 1.0)]);
        // A threshold inside a populated bucket grows to that bucket's upper bound, for both.
        let mut b = h("schema:0 count:4 z_bucket:1 z_bucket_w:0.001 buckets:[1 1] offset:-1");
        b.add(&h(
            "schema:0 count:2 z_bucket:2 z_bucket_w:0.3 buckets:[5] offset:-1",
        ))
        .expect("add");
        assert_eq!((b.zero_threshold, b.zero_count), (0.5, 9.0));
        assert_eq!(b.positive_indexed().collect::<Vec<_>>(), vec![(0, 1.0)]);
    }

    #[test]
    fn custom_bucket_arithmetic() {
        let mut a = h("schema:-53 count:10 custom_values:[1 2 4] buckets:[1 2 3 4]");
        let same = h("schema:-53 count:10 custom_values:[1 2 4] buckets:[1 2 3 4]");
        let mut twice = a.clone();
        assert_eq!(twice.add(&same), Ok(HistOpOutcome::default()));
        assert_eq!(twice.positive_buckets, vec![2.0, 4.0, 6.0, 8.0]);
        let out = a
            .add(&h(
                "schema:-53 count:4 custom_values:[2 4 8] buckets:[1 1 1 1]",
            ))
            .expect("both custom");
        assert!(out.nhcb_reconciled);
        assert_eq!(a.custom_values, vec![2.0, 4.0]);
        assert_eq!(
            a.positive_indexed().collect::<Vec<_>>(),
            vec![(0, 4.0), (1, 4.0), (2, 6.0)]
        );
        assert_eq!(a.count, 14.0);
        let mut mixed = h("schema:0 count:1 buckets:[1]");
        assert_eq!(mixed.sub(&same), Err(HistogramError::IncompatibleSchema));
    }

    #[test]
    fn counter_reset_hints_of_sums() {
        let mut a = h("count:1 counter_reset_hint:reset");
        let out = a
            .add(&h("count:1 counter_reset_hint:not_reset"))
            .expect("add");
        assert!(out.counter_reset_collision);
        assert_eq!(a.counter_reset_hint, CounterResetHint::Unknown);
        let mut b = h("count:1");
        b.add(&h("count:1 counter_reset_hint:gauge")).expect("add");
        assert_eq!(b.counter_reset_hint, CounterResetHint::Gauge);
        let mut c = h("count:1 counter_reset_hint:not_reset");
        c.sub(&h("count:1")).expect("sub");
        assert_eq!(c.counter_reset_hint, CounterResetHint::Unknown);
    }

    #[test]
    fn scaling() {
        let mut a = h("schema:0 count:4 sum:5 z_bucket:1 buckets:[1 2] n_buckets:[0]");
        a.mul(2.0);
        assert_eq!((a.count, a.sum, a.zero_count), (8.0, 10.0, 2.0));
        assert_eq!(a.positive_buckets, vec![2.0, 4.0]);
        assert_eq!(a.counter_reset_hint, CounterResetHint::Unknown);
        a.negate();
        assert_eq!(a.counter_reset_hint, CounterResetHint::Gauge);
        assert_eq!(a.positive_buckets, vec![-2.0, -4.0]);
        let mut d = h("schema:0 count:4 sum:5 buckets:[1 2]");
        d.div(0.0);
        assert_eq!(d.count, f64::INFINITY);
        assert!(d.positive_buckets.is_empty() && d.positive_spans.is_empty());
        let mut z = h("schema:0 count:0 sum:0");
        z.div(0.0);
        assert!(z.count.is_nan());
    }

    #[test]
    fn compaction_and_resolution() {
        let mut a = h("schema:0 count:3 buckets:[0 1 0 0 2 0]");
        let mut b = a.clone();
        a.compact(0);
        assert_eq!(
            a.positive_spans,
            vec![
                Span {
                    offset: 1,
                    length: 1
                },
                Span {
                    offset: 2,
                    length: 1
                }
            ]
        );
        assert_eq!(a.positive_buckets, vec![1.0, 2.0]);
        b.compact(2);
        assert_eq!(
            b.positive_spans,
            vec![Span {
                offset: 1,
                length: 4
            }]
        );
        assert_eq!(b.positive_buckets, vec![1.0, 0.0, 0.0, 2.0]);
        let mut r = h("schema:2 count:4 buckets:[1 1 1 1]");
        r.reduce_resolution(0).expect("lower schema");
        assert_eq!(
            r.positive_indexed().collect::<Vec<_>>(),
            vec![(0, 1.0), (1, 3.0)]
        );
        assert!(r.reduce_resolution(1).is_err());
        assert!(
            h("schema:-53 custom_values:[1]")
                .reduce_resolution(-1)
                .is_err()
        );
    }

    #[test]
    fn reset_detection() {
        let prev = h("schema:0 count:4 buckets:[1 2 1]");
        assert!(!h("schema:0 count:5 buckets:[1 2 2]").detect_reset(&prev));
        assert!(h("schema:0 count:3 buckets:[1 1 1]").detect_reset(&prev));
        assert!(h("schema:0 count:5 buckets:[1 1 3]").detect_reset(&prev));
        assert!(h("schema:0 count:5 buckets:[1 2]").detect_reset(&prev));
        assert!(!h("schema:0 count:3 counter_reset_hint:not_reset").detect_reset(&prev));
        assert!(h("schema:0 count:9 buckets:[1 2 1] counter_reset_hint:reset").detect_reset(&prev));
        assert!(
            h("schema:1 count:9 buckets:[9]").detect_reset(&prev),
            "schema increase"
        );
        // A lower schema merges the previous buckets: (0.5,0.7] and (0.7,1] are (0.5,1].
        let fine = h("schema:1 count:2 buckets:[1 1] offset:-1");
        assert!(!h("schema:0 count:2 buckets:[2]").detect_reset(&fine));
        let z = h("schema:0 count:4 z_bucket:1 z_bucket_w:0.5 buckets:[3]");
        assert!(h("schema:0 count:4 z_bucket:1 z_bucket_w:0.1 buckets:[3]").detect_reset(&z));
        let nhcb = h("schema:-53 count:4 custom_values:[1 2] buckets:[1 2 1]");
        assert!(h("schema:0 count:5").detect_reset(&nhcb));
        assert!(!h("schema:-53 count:5 custom_values:[2] buckets:[4 1]").detect_reset(&nhcb));
        assert!(h("schema:-53 count:5 custom_values:[2] buckets:[2 3]").detect_reset(&nhcb));
        // functions.test (irate, path /g) and native_histograms.test (resets of nhcb_metric):
        // no shared bound below +Inf, or the shared bound keeps its count: no reset.
        let before = h("schema:-53 sum:3 count:3 custom_values:[1] buckets:[3]");
        assert!(
            !h("schema:-53 sum:3 count:3 custom_values:[5 10] buckets:[3]").detect_reset(&before)
        );
        let five = h("schema:-53 sum:1 count:1 custom_values:[5] buckets:[1]");
        assert!(
            !h("schema:-53 sum:1 count:1 custom_values:[5 10] buckets:[1]").detect_reset(&five)
        );
    }

    #[test]
    fn equality_and_strings() {
        let a = h("schema:0 count:4 sum:5 buckets:[1 2 1]");
        let mut b = a.clone();
        assert!(a.equals(&b));
        b.positive_spans = vec![
            Span {
                offset: 0,
                length: 2,
            },
            Span {
                offset: 0,
                length: 1,
            },
        ];
        assert!(a.equals(&b), "span boundaries do not matter");
        b.sum = 5.000001;
        assert!(!a.equals(&b));
        let v =
            h("schema:0 sum:10 count:20 z_bucket_w:0.001 z_bucket:2 buckets:[1 2] n_buckets:[1 2]");
        assert_eq!(
            v.go_string(),
            "{count:20, sum:10, [-2,-1):2, [-1,-0.5):1, [-0.001,0.001]:2, (0.5,1]:1, (1,2]:2}"
        );
        assert_eq!(
            v.test_expression(),
            "{{count:20 sum:10 z_bucket:2 z_bucket_w:0.001 buckets:[1 2] n_buckets:[1 2]}}"
        );
        for (f, want) in [
            (1e6, "1e+06"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (0.5, "0.5"),
            (-2.0, "-2"),
            (f64::INFINITY, "+Inf"),
        ] {
            assert_eq!(go_g(f), want);
        }
    }

    #[test]
    fn kahan_sum_survives_cancellation() {
        // From native_histograms.test: sums of 1e100 and -1e100 must not lose the small parts.
        let parts = [
            h("schema:0 count:25 sum:3.1 z_bucket:4 z_bucket_w:0.001 buckets:[1 2 0 1 1]"),
            h("schema:0 count:41 sum:1e100 z_bucket:5 z_bucket_w:0.001 buckets:[1 3 1 2 1 1 1]"),
            h("schema:0 count:41 sum:-1e100 z_bucket:5 z_bucket_w:0.001 buckets:[1 3 1 2 1 1 1]"),
            h("schema:1 count:0 sum:1.3 z_bucket:3 z_bucket_w:0.001 buckets:[2 4 2 3 2 2]"),
        ];
        let mut acc = parts[0].clone();
        let mut comp = None;
        for p in &parts[1..] {
            acc.kahan_add(p, &mut comp).expect("same kind");
        }
        let mut plain = parts[0].clone();
        for p in &parts[1..] {
            plain.add(p).expect("same kind");
        }
        assert_eq!(plain.sum, 1.3, "plain addition loses 3.1");
        acc.add(&comp.expect("compensation")).expect("same kind");
        assert!(close(acc.sum, 4.4));
        assert_eq!(acc.count, 107.0);
        assert_eq!(acc.zero_count, 17.0);
        acc.compact(0);
        assert_eq!(
            acc.positive_buckets,
            vec![5.0, 14.0, 7.0, 7.0, 3.0, 2.0, 2.0]
        );
        assert_eq!(
            acc.positive_spans,
            vec![Span {
                offset: 0,
                length: 7
            }]
        );
        // Custom buckets with different bounds meet on the shared bounds.
        let mut a = h("schema:-53 count:3 custom_values:[1 2] buckets:[1 1 1]");
        let mut c = None;
        let out = a
            .kahan_add(
                &h("schema:-53 count:1 custom_values:[2] buckets:[1]"),
                &mut c,
            )
            .expect("both custom");
        assert!(out.nhcb_reconciled);
        assert_eq!(a.custom_values, vec![2.0]);
        assert_eq!(
            a.positive_indexed().collect::<Vec<_>>(),
            vec![(0, 3.0), (1, 1.0)]
        );
        assert!(a.kahan_add(&h("count:1"), &mut c).is_err());
    }

    #[test]
    fn hostile_input_does_not_panic() {
        let odd = [
            "schema:100 count:1 buckets:[1 2] offset:2147483647",
            "schema:-2147483648 count:1 buckets:[1 2] offset:-2147483648",
            "schema:0 count:1 z_bucket_w:NaN z_bucket:1 buckets:[1]",
            "schema:8 count:1 buckets:[1] n_buckets:[1] n_offset:2147483647",
        ];
        for a in odd {
            for b in odd {
                let (x, y) = (h(a), h(b));
                let mut s = x.clone();
                let _ = s.add(&y);
                let mut k = x.clone();
                let mut c = None;
                let _ = k.kahan_add(&y, &mut c);
                let _ = x.detect_reset(&y);
                let _ = x.quantile(0.5);
                let _ = x.fraction(0.0, 1.0);
                let _ = x.stddev();
                let _ = x.test_expression();
                let mut r = x.clone();
                let _ = r.reduce_resolution(-4);
                r.compact(3);
            }
        }
    }

    #[test]
    fn trims_as_prometheus_tests_expect() {
        let cmp = |got: &FloatHistogram, want: &str| {
            let w = h(want);
            assert!(
                crate::promqltest::histogram_matches(&w, got, false),
                "want {want}, got {}",
                got.test_expression()
            );
        };
        let base = h(
            "schema:0 sum:123.75 count:34 z_bucket:1 z_bucket_w:0.001 buckets:[2 4 8 16] n_buckets:[1 2]",
        );
        let mut all = base.clone();
        all.trim_buckets(f64::INFINITY, true);
        assert_eq!(all, base, "nothing trimmed, nothing re-estimated");
        let mut below2 = base.clone();
        below2.trim_buckets(2.0, true);
        cmp(
            &below2,
            "count:10 sum:3.5355339059327373 z_bucket:1 z_bucket_w:0.001 buckets:[2 4] n_buckets:[1 2]",
        );
        let mut above0 = base.clone();
        above0.trim_buckets(0.0, false);
        cmp(
            &above0,
            "schema:0 sum:120.20840280171308 count:30.5 z_bucket:0.5 z_bucket_w:0.001 buckets:[2 4 8 16]",
        );
        let cbh = h("schema:-53 sum:172.5 count:15 custom_values:[5 10 15 20] buckets:[1 6 4 3 1]");
        let mut below15 = cbh.clone();
        below15.trim_buckets(15.0, true);
        cmp(
            &below15,
            "schema:-53 count:11 sum:97.5 custom_values:[5 10 15 20] buckets:[1 6 4]",
        );
        let mut above13 = cbh.clone();
        above13.trim_buckets(13.0, false);
        cmp(
            &above13,
            "schema:-53 count:5.6 sum:94.9 custom_values:[5 10 15 20] offset:2 buckets:[1.6 3 1]",
        );
    }
}
