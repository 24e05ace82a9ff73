//! Native-histogram arithmetic the evaluator needs, as private helpers of the engine.
//!
//! These work on a sparse `index → count` view of a [`FloatHistogram`] and always return
//! compacted histograms (no empty buckets). They follow Prometheus's rules: exponential
//! histograms are added at the coarser schema and the wider zero bucket; custom-bucket
//! histograms with different bounds are reconciled to the bounds both share; mixing the two
//! kinds is an error.

use std::collections::BTreeMap;

use crate::histogram::{CUSTOM_BUCKETS_SCHEMA, CounterResetHint, FloatHistogram, Span};

/// Why two histograms cannot be combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IncompatibleSchema;

/// Sparse buckets: index → count.
type Sparse = BTreeMap<i32, f64>;

fn sparse(h: &FloatHistogram, positive: bool) -> Sparse {
    let mut m = Sparse::new();
    let it: Box<dyn Iterator<Item = (i32, f64)>> = if positive {
        Box::new(h.positive_indexed())
    } else {
        Box::new(h.negative_indexed())
    };
    for (i, c) in it {
        *m.entry(i).or_insert(0.0) += c;
    }
    m
}

/// Spans and counts of the non-empty buckets of `m`.
fn spans_of(m: &Sparse) -> (Vec<Span>, Vec<f64>) {
    let mut spans: Vec<Span> = Vec::new();
    let mut counts = Vec::new();
    let mut next: Option<i32> = None;
    for (&i, &c) in m {
        if c == 0.0 {
            continue;
        }
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
        next = Some(i + 1);
    }
    (spans, counts)
}

fn rebuild(mut h: FloatHistogram, pos: &Sparse, neg: &Sparse) -> FloatHistogram {
    (h.positive_spans, h.positive_buckets) = spans_of(pos);
    (h.negative_spans, h.negative_buckets) = spans_of(neg);
    h
}

/// `h` without empty buckets, spans merged.
pub(crate) fn compact(h: &FloatHistogram) -> FloatHistogram {
    let (p, n) = (sparse(h, true), sparse(h, false));
    rebuild(h.clone(), &p, &n)
}

/// Every count, the sum and the buckets multiplied by `f` (a negative factor makes a gauge).
pub(crate) fn mul(h: &FloatHistogram, f: f64) -> FloatHistogram {
    let mut o = h.clone();
    o.zero_count *= f;
    o.count *= f;
    o.sum *= f;
    o.positive_buckets.iter_mut().for_each(|c| *c *= f);
    o.negative_buckets.iter_mut().for_each(|c| *c *= f);
    if f < 0.0 {
        o.counter_reset_hint = CounterResetHint::Gauge;
    }
    compact(&o)
}

/// Every count, the sum and the buckets divided by `f`; division by zero drops the buckets
/// and makes the counts infinite (or NaN), as Prometheus does.
pub(crate) fn div(h: &FloatHistogram, f: f64) -> FloatHistogram {
    let mut o = h.clone();
    o.zero_count /= f;
    o.count /= f;
    o.sum /= f;
    if f == 0.0 {
        o.positive_spans.clear();
        o.positive_buckets.clear();
        o.negative_spans.clear();
        o.negative_buckets.clear();
    } else {
        o.positive_buckets.iter_mut().for_each(|c| *c /= f);
        o.negative_buckets.iter_mut().for_each(|c| *c /= f);
    }
    if f < 0.0 {
        o.counter_reset_hint = CounterResetHint::Gauge;
    }
    compact(&o)
}

/// Index of bucket `i` at the coarser schema `to` (`from` ≥ `to`).
fn reduce_index(i: i32, from: i32, to: i32) -> i32 {
    ((i - 1) >> (from - to)) + 1
}

fn reduce(m: &Sparse, from: i32, to: i32) -> Sparse {
    if from == to {
        return m.clone();
    }
    let mut o = Sparse::new();
    for (&i, &c) in m {
        *o.entry(reduce_index(i, from, to)).or_insert(0.0) += c;
    }
    o
}

/// Moves buckets that lie inside the zero bucket of half-width `thr` into it; returns the
/// threshold actually needed (widened to a bucket bound when a bucket straddles it).
fn widen_zero(h: &FloatHistogram, schema: i32, pos: &mut Sparse, neg: &mut Sparse, mut thr: f64) -> (f64, f64) {
    let mut zero = h.zero_count;
    loop {
        let mut widened = false;
        for m in [&mut *pos, &mut *neg] {
            let keys: Vec<i32> = m.keys().copied().collect();
            for i in keys {
                let upper = crate::histogram::exponential_bound(i, schema);
                let lower = crate::histogram::exponential_bound(i - 1, schema);
                if upper <= thr {
                    zero += m.remove(&i).unwrap_or(0.0);
                } else if lower < thr {
                    thr = upper;
                    zero += m.remove(&i).unwrap_or(0.0);
                    widened = true;
                }
            }
        }
        if !widened {
            break;
        }
    }
    (thr, zero)
}

/// Custom bounds both lists share (the coarser common layout).
fn common_bounds(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().copied().filter(|x| b.contains(x)).collect()
}

/// Re-buckets custom buckets of `h` to `bounds` (each old bucket goes to the first new bucket
/// whose upper bound is ≥ its own).
fn rebucket_custom(h: &FloatHistogram, bounds: &[f64]) -> Sparse {
    let mut o = Sparse::new();
    for (i, c) in h.positive_indexed() {
        let ub = h.bucket_upper_bound(i);
        let ni = bounds.partition_point(|b| *b < ub) as i32;
        *o.entry(ni).or_insert(0.0) += c;
    }
    o
}

fn combine(
    a: &FloatHistogram,
    b: &FloatHistogram,
    sign: f64,
) -> Result<(FloatHistogram, bool), IncompatibleSchema> {
    let (ca, cb) = (a.uses_custom_buckets(), b.uses_custom_buckets());
    if ca != cb {
        return Err(IncompatibleSchema);
    }
    let mut out = FloatHistogram {
        counter_reset_hint: a.counter_reset_hint,
        count: a.count + sign * b.count,
        sum: a.sum + sign * b.sum,
        ..Default::default()
    };
    if ca {
        let reconciled = a.custom_values != b.custom_values;
        let bounds = if reconciled {
            common_bounds(&a.custom_values, &b.custom_values)
        } else {
            a.custom_values.clone()
        };
        let mut pa = rebucket_custom(a, &bounds);
        for (i, c) in rebucket_custom(b, &bounds) {
            *pa.entry(i).or_insert(0.0) += sign * c;
        }
        out.schema = CUSTOM_BUCKETS_SCHEMA;
        out.custom_values = bounds;
        return Ok((rebuild(out, &pa, &Sparse::new()), reconciled));
    }
    let schema = a.schema.min(b.schema);
    let (mut pa, mut na) = (
        reduce(&sparse(a, true), a.schema, schema),
        reduce(&sparse(a, false), a.schema, schema),
    );
    let (mut pb, mut nb) = (
        reduce(&sparse(b, true), b.schema, schema),
        reduce(&sparse(b, false), b.schema, schema),
    );
    let thr = a.zero_threshold.max(b.zero_threshold);
    let (t1, _) = widen_zero(a, schema, &mut pa.clone(), &mut na.clone(), thr);
    let (t2, _) = widen_zero(b, schema, &mut pb.clone(), &mut nb.clone(), t1);
    let thr = t1.max(t2);
    let (_, za) = widen_zero(a, schema, &mut pa, &mut na, thr);
    let (_, zb) = widen_zero(b, schema, &mut pb, &mut nb, thr);
    for (i, c) in pb {
        *pa.entry(i).or_insert(0.0) += sign * c;
    }
    for (i, c) in nb {
        *na.entry(i).or_insert(0.0) += sign * c;
    }
    out.schema = schema;
    out.zero_threshold = thr;
    out.zero_count = za + sign * zb;
    Ok((rebuild(out, &pa, &na), false))
}

/// `a + b`; the flag says custom bounds were reconciled.
pub(crate) fn add(
    a: &FloatHistogram,
    b: &FloatHistogram,
) -> Result<(FloatHistogram, bool), IncompatibleSchema> {
    combine(a, b, 1.0)
}

/// `a - b` (a gauge histogram); the flag says custom bounds were reconciled.
pub(crate) fn sub(
    a: &FloatHistogram,
    b: &FloatHistogram,
) -> Result<(FloatHistogram, bool), IncompatibleSchema> {
    let (mut h, r) = combine(a, b, -1.0)?;
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

fn bits_eq(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
}

/// Prometheus's histogram equality (counter-reset hints ignored, empty buckets ignored).
pub(crate) fn equals(a: &FloatHistogram, b: &FloatHistogram) -> bool {
    if a.schema != b.schema
        || !bits_eq(a.count, b.count)
        || !bits_eq(a.sum, b.sum)
        || (a.uses_custom_buckets() && a.custom_values != b.custom_values)
        || a.zero_threshold != b.zero_threshold
        || !bits_eq(a.zero_count, b.zero_count)
    {
        return false;
    }
    let eq = |x: Sparse, y: Sparse| {
        let x: Vec<_> = x.into_iter().filter(|p| p.1 != 0.0).collect();
        let y: Vec<_> = y.into_iter().filter(|p| p.1 != 0.0).collect();
        x.len() == y.len()
            && x.iter()
                .zip(&y)
                .all(|(p, q)| p.0 == q.0 && bits_eq(p.1, q.1))
    };
    eq(sparse(a, true), sparse(b, true)) && eq(sparse(a, false), sparse(b, false))
}

/// Whether `cur` follows a counter reset after `prev`, as Prometheus detects it.
pub(crate) fn detect_reset(cur: &FloatHistogram, prev: &FloatHistogram) -> bool {
    match cur.counter_reset_hint {
        CounterResetHint::CounterReset => return true,
        CounterResetHint::NotCounterReset => return false,
        _ => {}
    }
    if cur.count < prev.count {
        return true;
    }
    if cur.uses_custom_buckets() != prev.uses_custom_buckets() {
        return true;
    }
    if cur.uses_custom_buckets() {
        if cur.custom_values != prev.custom_values {
            return true;
        }
    } else if cur.schema > prev.schema || cur.zero_threshold < prev.zero_threshold {
        return true;
    }
    let schema = cur.schema.min(prev.schema);
    let mut cp = reduce(&sparse(cur, true), cur.schema, schema);
    let mut cn = reduce(&sparse(cur, false), cur.schema, schema);
    let mut pp = reduce(&sparse(prev, true), prev.schema, schema);
    let mut pn = reduce(&sparse(prev, false), prev.schema, schema);
    let (mut cz, mut pz) = (cur.zero_count, prev.zero_count);
    if !cur.uses_custom_buckets() && cur.zero_threshold != prev.zero_threshold {
        let thr = cur.zero_threshold.max(prev.zero_threshold);
        (_, cz) = widen_zero(cur, schema, &mut cp, &mut cn, thr);
        (_, pz) = widen_zero(prev, schema, &mut pp, &mut pn, thr);
    }
    if cz < pz {
        return true;
    }
    let dropped = |c: &Sparse, p: &Sparse| p.iter().any(|(i, v)| c.get(i).copied().unwrap_or(0.0) < *v);
    dropped(&cp, &pp) || dropped(&cn, &pn)
}

/// Go's `%g` for the histogram string form.
fn g(x: f64) -> String {
    crate::functions::go_g(x)
}

/// Go's `FloatHistogram.String()`: `{count:N, sum:S, [lo,hi):c, …}` (what `count_values` uses).
pub(crate) fn go_string(h: &FloatHistogram) -> String {
    let mut s = format!("{{count:{}, sum:{}", g(h.count), g(h.sum));
    for b in h.buckets() {
        let open = if b.lower_inclusive { '[' } else { '(' };
        let close = if b.upper_inclusive { ']' } else { ')' };
        s.push_str(&format!(", {open}{},{}{close}:{}", g(b.lower), g(b.upper), g(b.count)));
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(schema: i32, buckets: &[(i32, f64)]) -> FloatHistogram {
        let mut m = Sparse::new();
        for &(i, c) in buckets {
            m.insert(i, c);
        }
        let count = buckets.iter().map(|b| b.1).sum();
        rebuild(
            FloatHistogram {
                schema,
                count,
                sum: count,
                ..Default::default()
            },
            &m,
            &Sparse::new(),
        )
    }

    #[test]
    fn add_reduces_to_the_coarser_schema() {
        // Schema 1 buckets 1 and 2 are (1,√2] and (√2,2]: both fall into schema-0 bucket 1.
        let a = exp(1, &[(1, 1.0), (2, 2.0)]);
        let b = exp(0, &[(1, 4.0), (2, 1.0)]);
        let (s, r) = add(&a, &b).expect("compatible");
        assert!(!r);
        assert_eq!(s.schema, 0);
        assert_eq!(s.positive_indexed().collect::<Vec<_>>(), vec![(1, 7.0), (2, 1.0)]);
        assert_eq!(s.count, 8.0);
    }

    #[test]
    fn sub_makes_a_gauge_and_mixed_kinds_fail() {
        let a = exp(0, &[(0, 3.0)]);
        let b = exp(0, &[(0, 1.0)]);
        let (d, _) = sub(&a, &b).expect("compatible");
        assert_eq!(d.counter_reset_hint, CounterResetHint::Gauge);
        assert_eq!(d.positive_buckets, vec![2.0]);
        let c = FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            custom_values: vec![1.0],
            ..Default::default()
        };
        assert_eq!(add(&a, &c).err(), Some(IncompatibleSchema));
    }

    #[test]
    fn custom_buckets_reconcile_to_shared_bounds() {
        let mk = |cv: Vec<f64>, counts: &[(i32, f64)]| {
            let mut m = Sparse::new();
            for &(i, c) in counts {
                m.insert(i, c);
            }
            rebuild(
                FloatHistogram {
                    schema: CUSTOM_BUCKETS_SCHEMA,
                    custom_values: cv,
                    ..Default::default()
                },
                &m,
                &Sparse::new(),
            )
        };
        let a = mk(vec![1.0, 2.0, 4.0], &[(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0)]);
        let b = mk(vec![2.0, 4.0], &[(0, 5.0), (2, 1.0)]);
        let (s, r) = add(&a, &b).expect("both custom");
        assert!(r);
        assert_eq!(s.custom_values, vec![2.0, 4.0]);
        assert_eq!(
            s.positive_indexed().collect::<Vec<_>>(),
            vec![(0, 7.0), (1, 1.0), (2, 2.0)]
        );
    }

    #[test]
    fn resets_are_detected_per_bucket() {
        let a = exp(0, &[(0, 3.0), (1, 1.0)]);
        let b = exp(0, &[(0, 2.0), (1, 3.0)]);
        assert!(detect_reset(&b, &a));
        assert!(!detect_reset(&a, &exp(0, &[(0, 1.0)])));
        assert!(equals(&a, &compact(&a)));
        assert!(!equals(&a, &b));
    }

    #[test]
    fn go_string_lists_buckets_with_bounds() {
        let h = exp(0, &[(0, 1.0), (1, 2.0)]);
        assert_eq!(go_string(&h), "{count:3, sum:3, (0.5,1]:1, (1,2]:2}");
    }
}
