//! Aggregations and function calls.

use std::collections::HashMap;

use promql_parser::parser::Expr;
use promql_parser::parser::ast::{AggregateExpr, Call, LabelModifier};

use crate::engine::{AnnotationKind, Ctx, EngineError, MatrixVal, VSeries, Val, window};

/// Warns, as Prometheus does, when a quantile is outside [0, 1] at any step; `pos` is the
/// quantile argument's ` (line:column)` suffix, or "".
fn check_quantile(ctx: &Ctx<'_>, q: &[f64], pos: &str) {
    for &x in q {
        if x.is_nan() || !(0.0..=1.0).contains(&x) {
            ctx.annotate(
                AnnotationKind::Warning,
                format!(
                    "PromQL warning: quantile value should be between 0 and 1, got {}{pos}",
                    go_g(x)
                ),
            );
        }
    }
}

/// Go's `%g` for the values annotations print.
fn go_g(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{x}")
    }
}
use crate::value::Labels;

type Result<T> = std::result::Result<T, EngineError>;

/// Kahan–Babuška summation step, as Prometheus does it.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

fn kahan_sum(vals: impl Iterator<Item = f64>) -> f64 {
    let (mut s, mut c) = (0.0, 0.0);
    for v in vals {
        (s, c) = kahan_inc(v, s, c);
    }
    s + c
}

fn avg(vals: &[f64]) -> f64 {
    if vals.len() == 1 {
        return vals[0];
    }
    let (mut sum, mut c) = (0.0, 0.0);
    let (mut mean, mut kc) = (0.0, 0.0);
    let mut incremental = false;
    for (i, &f) in vals.iter().enumerate() {
        let count = (i + 1) as f64;
        if !incremental {
            let (ns, nc) = kahan_inc(f, sum, c);
            if i == 0 || !ns.is_infinite() {
                (sum, c) = (ns, nc);
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            kc = c / (count - 1.0);
        }
        let q = (count - 1.0) / count;
        (mean, kc) = kahan_inc(f / count, q * mean, q * kc);
    }
    if incremental {
        mean + kc
    } else {
        sum / vals.len() as f64 + c / vals.len() as f64
    }
}

fn stdvar(vals: &[f64]) -> f64 {
    let (mut count, mut mean, mut cm, mut aux, mut ca) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &f in vals {
        count += 1.0;
        let delta = f - (mean + cm);
        (mean, cm) = kahan_inc(delta / count, mean, cm);
        (aux, ca) = kahan_inc(delta * (f - (mean + cm)), aux, ca);
    }
    (aux + ca) / count
}

/// Prometheus's quantile over a sample set (linear interpolation between closest ranks).
fn quantile(q: f64, vals: &mut [f64]) -> f64 {
    if vals.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // NaN sorts first, as Go's sort.Float64s does.
    vals.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    let n = vals.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let w = rank - rank.floor();
    vals[lower as usize] * (1.0 - w) + vals[upper as usize] * w
}

fn group_labels(l: &Labels, m: &Option<LabelModifier>) -> Labels {
    match m {
        Some(LabelModifier::Include(by)) => l.keep(&by.labels),
        Some(LabelModifier::Exclude(without)) => {
            let mut g = l.drop(&without.labels);
            g.remove("__name__");
            g
        }
        None => Labels::default(),
    }
}

fn format_go_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{f}")
    }
}

pub(crate) fn aggregate(ctx: &Ctx<'_>, a: &AggregateExpr) -> Result<Val> {
    let op = a.op.to_string().to_lowercase();
    let n = ctx.n();
    let input = ctx.eval_vector(&a.expr)?;
    let param_scalar = |p: &Option<Box<Expr>>| -> Result<Vec<f64>> {
        match p {
            Some(e) => ctx.eval_scalar(e),
            None => Err(EngineError::Eval(format!("{op} requires a parameter"))),
        }
    };
    // Grouping sees names not yet dropped (Prometheus 3's delayed name removal); a group drops
    // its name when any member would.
    let keys: Vec<Labels> = input
        .iter()
        .map(|s| group_labels(&s.labels, &a.modifier))
        .collect();
    // Groups in first-seen order.
    let mut groups: Vec<(Labels, Vec<usize>)> = Vec::new();
    let mut gi: HashMap<Labels, usize> = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        let g = *gi.entry(k.clone()).or_insert_with(|| {
            groups.push((k.clone(), Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    match op.as_str() {
        "limit_ratio" => {
            let r = param_scalar(&a.param)?;
            if r.iter().any(|x| x.is_nan()) {
                return Err(EngineError::Eval("Ratio value is NaN".into()));
            }
            return Err(EngineError::Unsupported("aggregation limit_ratio".into()));
        }
        "topk" | "bottomk" | "limitk" => {
            let k = param_scalar(&a.param)?;
            let mut out: Vec<VSeries> = input
                .iter()
                .map(|s| VSeries {
                    labels: s.labels.clone(),
                    vals: vec![None; n],
                    drop_name: s.drop_name,
                })
                .collect();
            for (step, &kf) in k.iter().enumerate() {
                if kf.is_nan() {
                    return Err(EngineError::Eval("Parameter value is NaN".into()));
                }
                let kk = if kf >= 9.2e18 {
                    usize::MAX
                } else {
                    kf.max(0.0) as usize
                };
                if kk < 1 {
                    continue;
                }
                for (_, members) in &groups {
                    let mut m: Vec<(usize, f64)> = members
                        .iter()
                        .filter_map(|&i| input[i].vals[step].map(|v| (i, v)))
                        .collect();
                    // NaN sorts last for both; limitk keeps input (label) order.
                    m.sort_by(|x, y| {
                        if op == "limitk" {
                            return std::cmp::Ordering::Equal;
                        }
                        let (a, b) = (x.1, y.1);
                        match (a.is_nan(), b.is_nan()) {
                            (true, true) => std::cmp::Ordering::Equal,
                            (true, false) => std::cmp::Ordering::Greater,
                            (false, true) => std::cmp::Ordering::Less,
                            _ if op == "topk" => b.total_cmp(&a),
                            _ => a.total_cmp(&b),
                        }
                    });
                    for (i, v) in m.into_iter().take(kk) {
                        out[i].vals[step] = Some(v);
                    }
                }
            }
            out.retain(|s| s.vals.iter().any(Option::is_some));
            if op == "limitk" {
                return Ok(Val::Vector(out));
            }
            // Instant results come out best first, as Prometheus returns them.
            let last = n - 1;
            out.sort_by(|x, y| {
                let (a, b) = (
                    x.vals[last].unwrap_or(f64::NAN),
                    y.vals[last].unwrap_or(f64::NAN),
                );
                cmp_nan_last(a, b, op == "topk")
            });
            return Ok(Val::Vector(out));
        }
        "count_values" => {
            let label = match a.param.as_deref() {
                Some(e) => match ctx.eval(e)? {
                    Val::Str(s) => s,
                    _ => {
                        return Err(EngineError::Eval(
                            "count_values requires a string parameter".into(),
                        ));
                    }
                },
                None => {
                    return Err(EngineError::Eval(
                        "count_values requires a parameter".into(),
                    ));
                }
            };
            if let Some(q) = ctx.positions.invalid_utf8(&label) {
                return Err(EngineError::Eval(format!("invalid label name {q}")));
            }
            if !valid_label_name(&label) {
                return Err(EngineError::Eval(format!("invalid label name {label:?}")));
            }
            let mut out: Vec<VSeries> = Vec::new();
            let mut idx: HashMap<Labels, usize> = HashMap::new();
            for step in 0..n {
                for (g, members) in &groups {
                    let mut counts: Vec<(String, f64)> = Vec::new();
                    for &i in members {
                        if let Some(v) = input[i].vals[step] {
                            let s = format_go_float(v);
                            match counts.iter_mut().find(|c| c.0 == s) {
                                Some(c) => c.1 += 1.0,
                                None => counts.push((s, 1.0)),
                            }
                        }
                    }
                    for (s, c) in counts {
                        let mut l = g.clone();
                        l.set(&label, &s);
                        let j = *idx.entry(l.clone()).or_insert_with(|| {
                            out.push(VSeries {
                                labels: l,
                                vals: vec![None; n],
                                drop_name: false,
                            });
                            out.len() - 1
                        });
                        out[j].vals[step] = Some(c);
                    }
                }
            }
            return Ok(Val::Vector(out));
        }
        _ => {}
    }
    let q = if op == "quantile" {
        let q = param_scalar(&a.param)?;
        check_quantile(ctx, &q, &ctx.positions.of_first_arg(a));
        Some(q)
    } else {
        None
    };
    let mut out = Vec::with_capacity(groups.len());
    for (g, members) in groups {
        let mut vals = vec![None; n];
        for (step, slot) in vals.iter_mut().enumerate() {
            let mut xs: Vec<f64> = members
                .iter()
                .filter_map(|&i| input[i].vals[step])
                .collect();
            if xs.is_empty() {
                continue;
            }
            *slot = Some(match op.as_str() {
                "sum" => kahan_sum(xs.iter().copied()),
                "avg" => avg(&xs),
                "count" => xs.len() as f64,
                "group" => 1.0,
                "min" => xs
                    .iter()
                    .copied()
                    .fold(f64::NAN, |m, x| if x < m || m.is_nan() { x } else { m }),
                "max" => xs
                    .iter()
                    .copied()
                    .fold(f64::NAN, |m, x| if x > m || m.is_nan() { x } else { m }),
                "stdvar" => stdvar(&xs),
                "stddev" => stdvar(&xs).sqrt(),
                "quantile" => quantile(q.as_ref().map(|q| q[step]).unwrap_or(f64::NAN), &mut xs),
                other => return Err(EngineError::Unsupported(format!("aggregation {other}"))),
            });
        }
        let drop_name = members.iter().any(|&i| input[i].drop_name);
        out.push(VSeries {
            labels: g,
            vals,
            drop_name,
        });
    }
    Ok(Val::Vector(out))
}

fn arg(c: &Call, i: usize) -> Result<&Expr> {
    c.args
        .args
        .get(i)
        .map(|b| b.as_ref())
        .ok_or_else(|| EngineError::Eval(format!("missing argument {i} of {}", c.func.name)))
}

fn unwrap_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_parens(&p.expr),
        other => other,
    }
}

fn map_vector(v: Vec<VSeries>, f: impl Fn(f64) -> f64, drop_name: bool) -> Val {
    Val::Vector(
        v.into_iter()
            .map(|mut s| {
                s.vals.iter_mut().for_each(|x| *x = x.map(&f));
                if drop_name {
                    s.drop_name = true;
                }
                s
            })
            .collect(),
    )
}

/// Applies `f` to each window; the result series drop their name unless `keep_name`.
fn over_time(
    m: MatrixVal,
    keep_name: bool,
    f: impl Fn(&[(i64, f64)], usize, &MatrixVal) -> Option<f64>,
) -> Val {
    let mut out = Vec::with_capacity(m.series.len());
    for s in &m.series {
        let vals: Vec<Option<f64>> = (0..m.ends.len())
            .map(|i| {
                let w = window(&s.samples, m.ends[i], m.range);
                if w.is_empty() { None } else { f(w, i, &m) }
            })
            .collect();
        if vals.iter().any(Option::is_some) {
            out.push(VSeries {
                labels: s.labels.clone(),
                vals,
                drop_name: s.drop_name || !keep_name,
            });
        }
    }
    Val::Vector(out)
}

fn extrapolated_rate(
    w: &[(i64, f64)],
    i: usize,
    m: &MatrixVal,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let range_end = m.ends[i];
    let range_start = range_end - m.range;
    let (first, last) = (w[0], w[w.len() - 1]);
    let mut result = last.1 - first.1;
    if counter {
        let mut prev = first.1;
        for &(_, v) in &w[1..] {
            if v < prev {
                result += prev;
            }
            prev = v;
        }
    }
    let mut to_start = (first.0 - range_start) as f64 / 1000.0;
    let mut to_end = (range_end - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let avg_between = sampled / (w.len() - 1) as f64;
    let threshold = avg_between * 1.1;
    if to_start >= threshold {
        to_start = avg_between / 2.0;
    }
    if counter && result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg_between / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if rate {
        factor /= m.range as f64 / 1000.0;
    }
    Some(result * factor)
}

fn linear_regression(w: &[(i64, f64)], intercept_t: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init_y = w[0].1;
    let mut const_y = true;
    for (i, &(t, f)) in w.iter().enumerate() {
        if i > 0 && f != w[i - 1].1 {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_t) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(f, sy, cy);
        (sxy, cxy) = kahan_inc(x * f, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    let intercept = sy / n - slope * sx / n;
    (slope, intercept)
}

fn bucket_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    match buckets.last() {
        Some(b) if b.0 == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    // Coalesce equal upper bounds.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(ub, c) in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    *buckets = merged;
    // Force monotonic counts, ignoring tiny deltas.
    let mut prev = buckets[0].1;
    for b in buckets.iter_mut().skip(1) {
        let curr = b.1;
        if curr == prev {
            continue;
        }
        let tol = 1e-12;
        if (prev - curr).abs() <= tol * prev.abs().max(curr.abs()) || curr < prev {
            b.1 = prev;
            continue;
        }
        prev = curr;
    }
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let obs = buckets[buckets.len() - 1].1;
    if obs == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * obs;
    let last = buckets.len() - 1;
    let b = buckets[..last].partition_point(|x| x.1 < rank);
    if b == last {
        return buckets[last - 1].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// The fraction of observations between `lower` and `upper` in classic cumulative buckets
/// `(upper bound, count)`, interpolating linearly inside buckets.
fn bucket_fraction(lower: f64, upper: f64, buckets: &mut [(f64, f64)]) -> f64 {
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    match buckets.last() {
        Some(b) if b.0 == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(ub, c) in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    let total = merged[merged.len() - 1].1;
    if total == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    // Positive-only buckets start at 0; otherwise the first bucket reaches down to -Inf.
    let mut lb = if merged[0].0 <= 0.0 {
        f64::NEG_INFINITY
    } else {
        0.0
    };
    for (i, &(ub, count)) in merged.iter().enumerate() {
        if i > 0 {
            lb = merged[i - 1].0;
        }
        let interp = |v: f64| rank + (count - rank) * (v - lb) / (ub - lb);
        if !lower_set && lb >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lb >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lb < lower && ub > lower {
            lower_rank = interp(lower);
            lower_set = true;
        }
        if !upper_set && lb < upper && ub > upper {
            upper_rank = interp(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = count;
    }
    if !lower_set || lower_rank > total {
        lower_rank = total;
    }
    if !upper_set || upper_rank > total {
        upper_rank = total;
    }
    (upper_rank - lower_rank) / total
}

/// Groups classic `le` bucket series by their other labels and applies `f` to each group's
/// `(upper bound, count)` buckets at every step.
fn classic_buckets(
    v: &[VSeries],
    n: usize,
    f: impl Fn(&mut Vec<(f64, f64)>, usize) -> f64,
) -> Vec<VSeries> {
    let mut groups: Vec<(Labels, Vec<(f64, usize)>)> = Vec::new();
    let mut gi: HashMap<Labels, usize> = HashMap::new();
    for (k, s) in v.iter().enumerate() {
        let Some(le) = s.labels.get("le").and_then(parse_le) else {
            continue;
        };
        let mut l = s.labels.clone();
        l.remove("le");
        l.remove("__name__");
        let g = *gi.entry(l.clone()).or_insert_with(|| {
            groups.push((l, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push((le, k));
    }
    let mut out = Vec::new();
    for (l, members) in groups {
        let vals: Vec<Option<f64>> = (0..n)
            .map(|i| {
                let mut b: Vec<(f64, f64)> = members
                    .iter()
                    .filter_map(|&(le, k)| v[k].vals[i].map(|c| (le, c)))
                    .collect();
                if b.is_empty() {
                    None
                } else {
                    Some(f(&mut b, i))
                }
            })
            .collect();
        out.push(VSeries {
            labels: l,
            vals,
            drop_name: false,
        });
    }
    out
}

fn go_regex(re: &str) -> Result<regex::Regex> {
    regex::Regex::new(&format!("^(?s:{re})$")).map_err(|_| {
        EngineError::Eval(format!(
            "invalid regular expression in label_replace(): {re}"
        ))
    })
}

fn string_arg(ctx: &Ctx<'_>, c: &Call, i: usize) -> Result<String> {
    match ctx.eval(arg(c, i)?)? {
        Val::Str(s) => Ok(s),
        _ => Err(EngineError::Eval(format!(
            "argument {i} of {} must be a string",
            c.func.name
        ))),
    }
}

fn valid_label_name(s: &str) -> bool {
    !s.is_empty()
}

pub(crate) fn call(ctx: &Ctx<'_>, c: &Call) -> Result<Val> {
    let name = c.func.name;
    let n = ctx.n();
    let math = |f: fn(f64) -> f64| -> Result<Val> {
        Ok(map_vector(ctx.eval_vector(arg(c, 0)?)?, f, true))
    };
    match name {
        "abs" => math(f64::abs),
        "ceil" => math(f64::ceil),
        "floor" => math(f64::floor),
        "sqrt" => math(f64::sqrt),
        "exp" => math(f64::exp),
        "ln" => math(f64::ln),
        "log2" => math(f64::log2),
        "log10" => math(f64::log10),
        "sgn" => math(|x| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        }),
        "sin" => math(f64::sin),
        "cos" => math(f64::cos),
        "tan" => math(f64::tan),
        "asin" => math(f64::asin),
        "acos" => math(f64::acos),
        "atan" => math(f64::atan),
        "sinh" => math(f64::sinh),
        "cosh" => math(f64::cosh),
        "tanh" => math(f64::tanh),
        "asinh" => math(f64::asinh),
        "acosh" => math(f64::acosh),
        "atanh" => math(f64::atanh),
        "deg" => math(f64::to_degrees),
        "rad" => math(f64::to_radians),
        "pi" => Ok(Val::Scalar(vec![std::f64::consts::PI; n])),
        "start" => Ok(Val::Scalar(vec![ctx.query_start as f64 / 1000.0; n])),
        "end" => Ok(Val::Scalar(vec![ctx.query_end as f64 / 1000.0; n])),
        "range" => Ok(Val::Scalar(vec![
            (ctx.query_end - ctx.query_start) as f64
                / 1000.0;
            n
        ])),
        "step" => {
            let step = if ctx.query_end == ctx.query_start {
                0
            } else {
                ctx.query_step
            };
            Ok(Val::Scalar(vec![step as f64 / 1000.0; n]))
        }
        "min_of" | "max_of" => {
            let mut acc: Option<Vec<f64>> = None;
            for a in &c.args.args {
                let v = ctx.eval_scalar(a)?;
                acc = Some(match acc {
                    None => v,
                    Some(prev) => prev
                        .iter()
                        .zip(&v)
                        .map(|(x, y)| {
                            if name == "min_of" {
                                go_min(*x, *y)
                            } else {
                                go_max(*x, *y)
                            }
                        })
                        .collect(),
                });
            }
            Ok(Val::Scalar(acc.unwrap_or_else(|| vec![f64::NAN; n])))
        }
        "double_exponential_smoothing" => {
            let m = ctx.eval_matrix(arg(c, 0)?)?;
            let sf = ctx.eval_scalar(arg(c, 1)?)?;
            let tf = ctx.eval_scalar(arg(c, 2)?)?;
            for i in 0..n {
                if !(sf[i] > 0.0 && sf[i] < 1.0) {
                    return Err(EngineError::Eval(format!(
                        "invalid smoothing factor. Expected: 0 < sf < 1, got: {:.6}",
                        sf[i]
                    )));
                }
                if !(tf[i] > 0.0 && tf[i] < 1.0) {
                    return Err(EngineError::Eval(format!(
                        "invalid trend factor. Expected: 0 < tf < 1, got: {:.6}",
                        tf[i]
                    )));
                }
            }
            Ok(over_time(m, false, |w, i, _| {
                if w.len() < 2 {
                    return None;
                }
                let (sf, tf) = (sf[i], tf[i]);
                let (mut s0, mut s1) = (0.0, w[0].1);
                let mut b = w[1].1 - w[0].1;
                for (j, p) in w.iter().enumerate().skip(1) {
                    let x = sf * p.1;
                    if j > 1 {
                        b = tf * (s1 - s0) + (1.0 - tf) * b;
                    }
                    let y = (1.0 - sf) * (s1 + b);
                    s0 = s1;
                    s1 = x + y;
                }
                Some(s1)
            }))
        }
        "round" => {
            let v = ctx.eval_vector(arg(c, 0)?)?;
            let to = match c.args.args.get(1) {
                Some(e) => ctx.eval_scalar(e)?,
                None => vec![1.0; n],
            };
            Ok(Val::Vector(
                v.into_iter()
                    .map(|mut s| {
                        for (i, x) in s.vals.iter_mut().enumerate() {
                            let inv = 1.0 / to[i];
                            *x = x.map(|f| (f * inv + 0.5).floor() / inv);
                        }
                        s.drop_name = true;
                        s
                    })
                    .collect(),
            ))
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let v = ctx.eval_vector(arg(c, 0)?)?;
            let (lo, hi) = match name {
                "clamp" => (ctx.eval_scalar(arg(c, 1)?)?, ctx.eval_scalar(arg(c, 2)?)?),
                "clamp_min" => (ctx.eval_scalar(arg(c, 1)?)?, vec![f64::INFINITY; n]),
                _ => (vec![f64::NEG_INFINITY; n], ctx.eval_scalar(arg(c, 1)?)?),
            };
            let mut out = Vec::new();
            for mut s in v {
                for (i, x) in s.vals.iter_mut().enumerate() {
                    if name == "clamp" && hi[i] < lo[i] {
                        *x = None;
                        continue;
                    }
                    // NaN bounds propagate, as Go's math.Max/Min do.
                    *x = x.map(|f| go_min(go_max(f, lo[i]), hi[i]));
                }
                s.drop_name = true;
                if s.vals.iter().any(Option::is_some) {
                    out.push(s);
                }
            }
            Ok(Val::Vector(out))
        }
        "time" => Ok(Val::Scalar(
            ctx.ts.iter().map(|t| *t as f64 / 1000.0).collect(),
        )),
        "timestamp" => {
            let a = unwrap_parens(arg(c, 0)?);
            let v = match a {
                Expr::VectorSelector(vs) => ctx.vector_selector(vs, true),
                other => {
                    let mut v = ctx.eval_vector(other)?;
                    for s in &mut v {
                        for (i, x) in s.vals.iter_mut().enumerate() {
                            *x = x.map(|_| ctx.ts[i] as f64 / 1000.0);
                        }
                    }
                    v
                }
            };
            Ok(map_vector(v, |x| x, true))
        }
        "vector" => {
            let s = ctx.eval_scalar(arg(c, 0)?)?;
            Ok(Val::Vector(vec![VSeries {
                labels: Labels::default(),
                vals: s.into_iter().map(Some).collect(),
                drop_name: false,
            }]))
        }
        "scalar" => {
            let v = ctx.eval_vector(arg(c, 0)?)?;
            let out = (0..n)
                .map(|i| {
                    let mut it = v.iter().filter_map(|s| s.vals[i]);
                    match (it.next(), it.next()) {
                        (Some(x), None) => x,
                        _ => f64::NAN,
                    }
                })
                .collect();
            Ok(Val::Scalar(out))
        }
        "absent" | "absent_over_time" => {
            let present: Vec<bool> = if name == "absent" {
                let v = ctx.eval_vector(arg(c, 0)?)?;
                (0..n)
                    .map(|i| v.iter().any(|s| s.vals[i].is_some()))
                    .collect()
            } else {
                let m = ctx.eval_matrix(arg(c, 0)?)?;
                (0..n)
                    .map(|i| {
                        m.series
                            .iter()
                            .any(|s| !window(&s.samples, m.ends[i], m.range).is_empty())
                    })
                    .collect()
            };
            let labels = absent_labels(arg(c, 0)?);
            let vals: Vec<Option<f64>> = present
                .iter()
                .map(|p| if *p { None } else { Some(1.0) })
                .collect();
            if vals.iter().all(Option::is_none) {
                return Ok(Val::Vector(vec![]));
            }
            Ok(Val::Vector(vec![VSeries {
                labels,
                vals,
                drop_name: false,
            }]))
        }
        "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" => {
            let mut v = ctx.eval_vector(arg(c, 0)?)?;
            if ctx.query_start != ctx.query_end {
                ctx.annotate(
                    AnnotationKind::Warning,
                    format!(
                        "PromQL warning: sort is ineffective for range queries since results are always ordered by labels{}",
                        ctx.positions.of(c)
                    ),
                );
            }
            let last = |s: &VSeries| s.vals[n - 1].unwrap_or(f64::NAN);
            match name {
                "sort" => v.sort_by(|a, b| cmp_nan_last(last(a), last(b), false)),
                "sort_desc" => v.sort_by(|a, b| cmp_nan_last(last(a), last(b), true)),
                _ => {
                    let mut names = Vec::new();
                    for i in 1..c.args.args.len() {
                        names.push(string_arg(ctx, c, i)?);
                    }
                    let desc = name == "sort_by_label_desc";
                    v.sort_by(|a, b| {
                        for l in &names {
                            let o = natural_cmp(
                                a.labels.get(l).unwrap_or(""),
                                b.labels.get(l).unwrap_or(""),
                            );
                            if o != std::cmp::Ordering::Equal {
                                return if desc { o.reverse() } else { o };
                            }
                        }
                        let o = a.labels.cmp(&b.labels);
                        if desc { o.reverse() } else { o }
                    });
                }
            }
            Ok(Val::Vector(v))
        }
        "label_replace" => {
            let v = ctx.eval_vector(arg(c, 0)?)?;
            let dst = string_arg(ctx, c, 1)?;
            let repl = string_arg(ctx, c, 2)?;
            let src = string_arg(ctx, c, 3)?;
            let re_s = string_arg(ctx, c, 4)?;
            let re = go_regex(&re_s)?;
            if !valid_label_name(&dst) || ctx.positions.invalid_utf8(&dst).is_some() {
                return Err(EngineError::Eval(format!(
                    "invalid destination label name in label_replace(): {dst}"
                )));
            }
            let mut out = Vec::with_capacity(v.len());
            for mut s in v {
                let sv = s.labels.get(&src).unwrap_or("").to_string();
                if let Some(caps) = re.captures(&sv) {
                    let mut res = String::new();
                    caps.expand(&go_template(&repl), &mut res);
                    s.labels.set(&dst, &res);
                    if dst == "__name__" {
                        s.drop_name = false;
                    }
                }
                out.push(s);
            }
            Ok(Val::Vector(out))
        }
        "label_join" => {
            let v = ctx.eval_vector(arg(c, 0)?)?;
            let dst = string_arg(ctx, c, 1)?;
            let sep = string_arg(ctx, c, 2)?;
            let mut srcs = Vec::new();
            for i in 3..c.args.args.len() {
                let src = string_arg(ctx, c, i)?;
                if !valid_label_name(&src) || ctx.positions.invalid_utf8(&src).is_some() {
                    return Err(EngineError::Eval(format!(
                        "invalid source label name in label_join(): {src}"
                    )));
                }
                srcs.push(src);
            }
            if !valid_label_name(&dst) || ctx.positions.invalid_utf8(&dst).is_some() {
                return Err(EngineError::Eval(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            let mut out = Vec::with_capacity(v.len());
            for mut s in v {
                let joined: Vec<&str> =
                    srcs.iter().map(|l| s.labels.get(l).unwrap_or("")).collect();
                let joined = joined.join(&sep);
                s.labels.set(&dst, &joined);
                if dst == "__name__" {
                    s.drop_name = false;
                }
                out.push(s);
            }
            Ok(Val::Vector(out))
        }
        "histogram_quantiles" => {
            let v = ctx.eval_vector(arg(c, 0)?)?;
            let label = string_arg(ctx, c, 1)?;
            if v.iter().any(|s| s.labels.get(&label).is_some()) {
                return Err(EngineError::Eval(format!(
                    "label {label:?} already exists in the input to histogram_quantiles"
                )));
            }
            let mut out = Vec::new();
            for i in 2..c.args.args.len() {
                let q = ctx.eval_scalar(arg(c, i)?)?;
                check_quantile(ctx, &q, &ctx.positions.of_arg(c, i));
                let q_label = format!("{:?}", q.first().copied().unwrap_or(f64::NAN));
                for mut s in classic_buckets(&v, n, |b, step| bucket_quantile(q[step], b)) {
                    s.labels.set(&label, &q_label);
                    out.push(s);
                }
            }
            Ok(Val::Vector(out))
        }
        "histogram_quantile" | "histogram_fraction" => {
            let fraction = name == "histogram_fraction";
            let q = ctx.eval_scalar(arg(c, 0)?)?;
            if !fraction {
                check_quantile(ctx, &q, &ctx.positions.of_first_arg(c));
            }
            let upper = if fraction {
                ctx.eval_scalar(arg(c, 1)?)?
            } else {
                Vec::new()
            };
            let v = ctx.eval_vector(arg(c, if fraction { 2 } else { 1 })?)?;
            Ok(Val::Vector(classic_buckets(&v, n, |b, i| {
                if fraction {
                    bucket_fraction(q[i], upper[i], b)
                } else {
                    bucket_quantile(q[i], b)
                }
            })))
        }
        "rate" | "increase" | "delta" => {
            let m = ctx.eval_matrix(arg(c, 0)?)?;
            if name != "delta" && matches!(unwrap_parens(arg(c, 0)?), Expr::MatrixSelector(_)) {
                for s in &m.series {
                    let Some(metric) = s.labels.get("__name__") else {
                        continue;
                    };
                    let counter_like = ["_total", "_sum", "_count", "_bucket"]
                        .iter()
                        .any(|suffix| metric.ends_with(suffix));
                    let sampled = (0..m.ends.len())
                        .any(|i| !window(&s.samples, m.ends[i], m.range).is_empty());
                    if !counter_like && sampled {
                        ctx.annotate(
                            AnnotationKind::Info,
                            format!(
                                "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {metric:?}{}",
                                ctx.positions.of_first_arg(c)
                            ),
                        );
                    }
                }
            }
            let counter = name != "delta";
            let rate = name == "rate";
            Ok(over_time(m, false, |w, i, m| {
                extrapolated_rate(w, i, m, counter, rate)
            }))
        }
        "irate" | "idelta" => {
            let m = ctx.eval_matrix(arg(c, 0)?)?;
            let is_rate = name == "irate";
            Ok(over_time(m, false, |w, _, _| {
                if w.len() < 2 {
                    return None;
                }
                let (a, b) = (w[w.len() - 2], w[w.len() - 1]);
                let mut d = b.1 - a.1;
                if is_rate {
                    if b.1 < a.1 {
                        d = b.1;
                    }
                    let dt = b.0 - a.0;
                    if dt == 0 {
                        return None;
                    }
                    return Some(d / (dt as f64 / 1000.0));
                }
                Some(d)
            }))
        }
        "deriv" => {
            let m = ctx.eval_matrix(arg(c, 0)?)?;
            Ok(over_time(m, false, |w, _, _| {
                if w.len() < 2 {
                    None
                } else {
                    Some(linear_regression(w, w[0].0).0)
                }
            }))
        }
        "predict_linear" => {
            let m = ctx.eval_matrix(arg(c, 0)?)?;
            let d = ctx.eval_scalar(arg(c, 1)?)?;
            Ok(over_time(m, false, |w, i, m| {
                if w.len() < 2 {
                    return None;
                }
                let (slope, icpt) = linear_regression(w, m.eval_ts[i]);
                Some(slope * d[i] + icpt)
            }))
        }
        "changes" | "resets" => {
            let m = ctx.eval_matrix(arg(c, 0)?)?;
            let resets = name == "resets";
            Ok(over_time(m, false, |w, _, _| {
                let mut k = 0.0;
                for p in w.windows(2) {
                    let (a, b) = (p[0].1, p[1].1);
                    if resets {
                        if b < a {
                            k += 1.0;
                        }
                    } else if a != b && !(a.is_nan() && b.is_nan()) {
                        k += 1.0;
                    }
                }
                Some(k)
            }))
        }
        "sum_over_time"
        | "avg_over_time"
        | "count_over_time"
        | "min_over_time"
        | "max_over_time"
        | "last_over_time"
        | "present_over_time"
        | "stddev_over_time"
        | "stdvar_over_time"
        | "first_over_time"
        | "mad_over_time"
        | "ts_of_min_over_time"
        | "ts_of_max_over_time"
        | "ts_of_first_over_time"
        | "ts_of_last_over_time" => {
            let m = ctx.eval_matrix(arg(c, 0)?)?;
            let keep = name == "last_over_time" || name == "first_over_time";
            Ok(over_time(m, keep, |w, _, _| {
                let xs: Vec<f64> = w.iter().map(|p| p.1).collect();
                Some(match name {
                    "sum_over_time" => kahan_sum(xs.iter().copied()),
                    "avg_over_time" => avg(&xs),
                    "count_over_time" => xs.len() as f64,
                    "min_over_time" => xs
                        .iter()
                        .copied()
                        .fold(f64::NAN, |m, x| if x < m || m.is_nan() { x } else { m }),
                    "max_over_time" => xs
                        .iter()
                        .copied()
                        .fold(f64::NAN, |m, x| if x > m || m.is_nan() { x } else { m }),
                    "last_over_time" => xs[xs.len() - 1],
                    "first_over_time" => xs[0],
                    "ts_of_first_over_time" => w[0].0 as f64 / 1000.0,
                    "ts_of_last_over_time" => w[w.len() - 1].0 as f64 / 1000.0,
                    "ts_of_min_over_time" | "ts_of_max_over_time" => {
                        // The latest sample holding the extreme value; NaN only when all are NaN.
                        let min = name == "ts_of_min_over_time";
                        let mut best: Option<(i64, f64)> = None;
                        for &(t, f) in w {
                            let better = match best {
                                None => true,
                                Some((_, b)) => {
                                    b.is_nan() || (!f.is_nan() && if min { f <= b } else { f >= b })
                                }
                            };
                            if better {
                                best = Some((t, f));
                            }
                        }
                        best.map(|(t, _)| t as f64 / 1000.0).unwrap_or(f64::NAN)
                    }
                    "mad_over_time" if xs.iter().any(|x| x.is_nan()) => f64::NAN,
                    "mad_over_time" => {
                        let mut v = xs.clone();
                        let med = quantile(0.5, &mut v);
                        let mut dev: Vec<f64> = xs.iter().map(|x| (x - med).abs()).collect();
                        quantile(0.5, &mut dev)
                    }
                    "present_over_time" => 1.0,
                    "stdvar_over_time" => stdvar(&xs),
                    _ => stdvar(&xs).sqrt(),
                })
            }))
        }
        "quantile_over_time" => {
            let q = ctx.eval_scalar(arg(c, 0)?)?;
            check_quantile(ctx, &q, &ctx.positions.of_first_arg(c));
            let m = ctx.eval_matrix(arg(c, 1)?)?;
            Ok(over_time(m, false, |w, i, _| {
                let mut xs: Vec<f64> = w.iter().map(|p| p.1).collect();
                Some(quantile(q[i], &mut xs))
            }))
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => {
            let v = match c.args.args.first() {
                Some(e) => ctx.eval_vector(e)?,
                None => vec![VSeries {
                    labels: Labels::default(),
                    vals: ctx.ts.iter().map(|t| Some(*t as f64 / 1000.0)).collect(),
                    drop_name: false,
                }],
            };
            Ok(map_vector(v, |x| date_part(name, x), true))
        }
        other => Err(EngineError::Unsupported(format!("function {other}"))),
    }
}

fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn cmp_nan_last(a: f64, b: f64, desc: bool) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ if desc => b.total_cmp(&a),
        _ => a.total_cmp(&b),
    }
}

/// Compares strings with runs of digits compared as numbers.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut ai, mut bi) = (a.chars().peekable(), b.chars().peekable());
    loop {
        match (ai.peek().copied(), bi.peek().copied()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let mut na = String::new();
                while let Some(d) = ai.peek().copied().filter(char::is_ascii_digit) {
                    na.push(d);
                    ai.next();
                }
                let mut nb = String::new();
                while let Some(d) = bi.peek().copied().filter(char::is_ascii_digit) {
                    nb.push(d);
                    bi.next();
                }
                let ta = na.trim_start_matches('0');
                let tb = nb.trim_start_matches('0');
                let o = ta.len().cmp(&tb.len()).then(ta.cmp(tb));
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                ai.next();
                bi.next();
            }
        }
    }
}

/// Converts Go's `$1`/`${1}`/`$name` template to the regex crate's `${1}` form.
fn go_template(t: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = t.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '$'
            && i + 1 < chars.len()
            && (chars[i + 1].is_alphanumeric() || chars[i + 1] == '_')
        {
            let mut j = i + 1;
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            let name: String = chars[i + 1..j].iter().collect();
            out.push_str(&format!("${{{name}}}"));
            i = j;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn parse_le(s: &str) -> Option<f64> {
    match s.trim() {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

fn absent_labels(e: &Expr) -> Labels {
    let vs = match unwrap_parens(e) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::default(),
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for m in &vs.matchers.matchers {
        *seen.entry(m.name.as_str()).or_default() += 1;
    }
    let pairs = vs
        .matchers
        .matchers
        .iter()
        .filter(|m| {
            m.name != "__name__"
                && seen.get(m.name.as_str()) == Some(&1)
                && matches!(m.op, promql_parser::label::MatchOp::Equal)
        })
        .map(|m| (m.name.clone(), m.value.clone()));
    Labels::new(pairs)
}

fn date_part(name: &str, secs: f64) -> f64 {
    if !secs.is_finite() {
        return f64::NAN;
    }
    let t = secs.floor() as i64;
    let days = t.div_euclid(86400);
    let sod = t.rem_euclid(86400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_mar = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_mar + 2) / 153;
    let d = doy_mar - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let doy = cum[(m - 1) as usize] + d + i64::from(leap && m > 2);
    let dim = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    (match name {
        "day_of_month" => d,
        "day_of_week" => (days + 4).rem_euclid(7),
        "day_of_year" => doy,
        "days_in_month" => dim,
        "hour" => sod / 3600,
        "minute" => (sod % 3600) / 60,
        "month" => m,
        _ => y,
    }) as f64
}
