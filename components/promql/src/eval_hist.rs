//! Native-histogram helpers of the evaluator: thin wrappers over [`FloatHistogram`]'s
//! arithmetic that return new compacted values (the engine shares histograms between steps
//! through `Arc`, so it never mutates one in place), and Go's string form of a histogram.

use crate::histogram::{CounterResetHint, FloatHistogram};

/// Why two histograms cannot be combined: one has exponential, the other custom buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IncompatibleSchema;

/// `h` without empty buckets.
pub(crate) fn compact(h: &FloatHistogram) -> FloatHistogram {
    let mut o = h.clone();
    o.compact(0);
    o
}

/// Every count, the sum and the buckets multiplied by `f` (a negative factor makes a gauge).
pub(crate) fn mul(h: &FloatHistogram, f: f64) -> FloatHistogram {
    let mut o = h.clone();
    o.mul(f);
    o.compact(0);
    o
}

/// Every count, the sum and the buckets divided by `f`; division by zero drops the buckets.
pub(crate) fn div(h: &FloatHistogram, f: f64) -> FloatHistogram {
    let mut o = h.clone();
    o.div(f);
    o.compact(0);
    o
}

fn combine(
    a: &FloatHistogram,
    b: &FloatHistogram,
    sub: bool,
) -> Result<(FloatHistogram, bool), IncompatibleSchema> {
    let mut o = a.clone();
    let outcome = if sub { o.sub(b) } else { o.add(b) }.map_err(|_| IncompatibleSchema)?;
    o.compact(0);
    Ok((o, outcome.nhcb_reconciled))
}

/// `a + b`; the flag says custom bounds were reconciled.
pub(crate) fn add(
    a: &FloatHistogram,
    b: &FloatHistogram,
) -> Result<(FloatHistogram, bool), IncompatibleSchema> {
    combine(a, b, false)
}

/// `a - b` (a gauge histogram); the flag says custom bounds were reconciled.
pub(crate) fn sub(
    a: &FloatHistogram,
    b: &FloatHistogram,
) -> Result<(FloatHistogram, bool), IncompatibleSchema> {
    let (mut h, r) = combine(a, b, true)?;
    h.counter_reset_hint = CounterResetHint::Gauge;
    Ok((h, r))
}

/// True when one is marked a counter reset and the other explicitly not.
pub(crate) fn reset_collision(a: &FloatHistogram, b: &FloatHistogram) -> bool {
    use CounterResetHint::*;
    matches!(
        (a.counter_reset_hint, b.counter_reset_hint),
        (CounterReset, NotCounterReset) | (NotCounterReset, CounterReset)
    )
}

/// Prometheus's histogram equality (counter-reset hints ignored).
pub(crate) fn equals(a: &FloatHistogram, b: &FloatHistogram) -> bool {
    a.equals(b)
}

/// Whether `cur` follows a counter reset after `prev`.
pub(crate) fn detect_reset(cur: &FloatHistogram, prev: &FloatHistogram) -> bool {
    cur.detect_reset(prev)
}

/// Go's `FloatHistogram.String()`: `{count:N, sum:S, [lo,hi):c, …}` (what `count_values` uses).
pub(crate) fn go_string(h: &FloatHistogram) -> String {
    h.go_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::{CUSTOM_BUCKETS_SCHEMA, Span};

    fn exp(schema: i32, start: i32, counts: &[f64]) -> FloatHistogram {
        let count = counts.iter().sum();
        FloatHistogram {
            schema,
            count,
            sum: count,
            positive_spans: vec![Span {
                offset: start,
                length: counts.len() as u32,
            }],
            positive_buckets: counts.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn add_reduces_to_the_coarser_schema_and_leaves_operands_alone() {
        // Schema 1 buckets 1 and 2 are (1,√2] and (√2,2]: both fall into schema-0 bucket 1.
        let a = exp(1, 1, &[1.0, 2.0]);
        let b = exp(0, 1, &[4.0, 1.0]);
        let (s, r) = add(&a, &b).expect("compatible");
        assert!(!r);
        assert_eq!(s.schema, 0);
        assert_eq!(
            s.positive_indexed().collect::<Vec<_>>(),
            vec![(1, 7.0), (2, 1.0)]
        );
        assert_eq!(s.count, 8.0);
        assert_eq!(a.schema, 1);
    }

    #[test]
    fn sub_makes_a_gauge_and_mixed_kinds_fail() {
        let a = exp(0, 0, &[3.0]);
        let b = exp(0, 0, &[1.0]);
        let (d, _) = sub(&a, &b).expect("compatible");
        assert_eq!(d.counter_reset_hint, CounterResetHint::Gauge);
        assert_eq!(d.positive_buckets, vec![2.0]);
        let c = FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            custom_values: vec![1.0],
            ..Default::default()
        };
        assert_eq!(add(&a, &c).err(), Some(IncompatibleSchema));
        let (z, _) = sub(&a, &a).expect("compatible");
        assert!(
            z.positive_buckets.is_empty(),
            "empty buckets are compacted away"
        );
    }

    #[test]
    fn go_string_lists_buckets_with_bounds() {
        let h = exp(0, 0, &[1.0, 2.0]);
        assert_eq!(go_string(&h), "{count:3, sum:3, (0.5,1]:1, (1,2]:2}");
    }
}
