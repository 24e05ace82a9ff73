//! Aggregations and function calls.

use std::collections::HashMap;

use promql_parser::parser::Expr;
use promql_parser::parser::ast::{AggregateExpr, Call, LabelModifier};

use crate::engine::{
    AnnotationKind, Ctx, ElemOut, EngineError, H, Interrupt, MSeries, MatrixVal, VSeries, Val,
    advance_past, window,
};

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

/// Prometheus's label-set hash (`labels.Labels.Hash`): xxHash64 over every `name`, 0xff,
/// `value`, 0xff in name order.
fn label_hash(l: &Labels) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    for (name, value) in l.iter() {
        h.update(name.as_bytes());
        h.update(&[0xff]);
        h.update(value.as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
}

/// Go's `%g` for the values annotations print.
pub(crate) fn go_g(x: f64) -> String {
    crate::histogram::go_g(x)
}
use crate::eval_hist;
use crate::histogram::FloatHistogram;
use crate::value::Labels;
use std::sync::Arc;

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

/// Each series' group, with the interrupt polled along the way (the loops of an aggregation over
/// many series stop soon after it is raised; the other loops check per step or per 64 groups).
fn group_keys(
    interrupt: &Interrupt,
    input: &[VSeries],
    modifier: &Option<LabelModifier>,
) -> Result<Vec<Labels>> {
    crate::engine::map_polled(interrupt, input, |s| group_labels(&s.labels, modifier))
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
    let keys = group_keys(ctx.interrupt, &input, &a.modifier)?;
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
            // Each series' place in [0, 1) comes from its label hash, so a ratio keeps the
            // same series at every step and `limit_ratio(r)` / `limit_ratio(r - 1)` split the
            // input into complements.
            let offsets: Vec<f64> = input
                .iter()
                .map(|s| label_hash(&s.labels) as f64 / u64::MAX as f64)
                .collect();
            let mut out: Vec<VSeries> = input
                .iter()
                .map(|s| VSeries::floats(s.labels.clone(), vec![None; n], s.drop_name))
                .collect();
            for (step, &param) in r.iter().enumerate() {
                ctx.interrupt.check()?;
                let ratio = if !(-1.0..=1.0).contains(&param) {
                    let capped = param.clamp(-1.0, 1.0);
                    ctx.annotate(
                        AnnotationKind::Warning,
                        format!(
                            "PromQL warning: ratio value should be between -1 and 1, got {}, capping to {}{}",
                            go_g(param),
                            go_g(capped),
                            ctx.positions.of_first_arg(a)
                        ),
                    );
                    capped
                } else {
                    param
                };
                if ratio == 0.0 {
                    continue;
                }
                for (i, s) in input.iter().enumerate() {
                    let keep = if ratio >= 0.0 {
                        offsets[i] < ratio
                    } else {
                        offsets[i] >= 1.0 + ratio
                    };
                    if !keep || !s.has(step) {
                        continue;
                    }
                    match s.hist(step) {
                        Some(h) => out[i].set_hist(step, h.clone()),
                        None => out[i].vals[step] = s.vals[step],
                    }
                }
            }
            out.retain(VSeries::any);
            return Ok(Val::Vector(out));
        }
        "topk" | "bottomk" | "limitk" => {
            let k = param_scalar(&a.param)?;
            let mut out: Vec<VSeries> = input
                .iter()
                .map(|s| VSeries::floats(s.labels.clone(), vec![None; n], s.drop_name))
                .collect();
            for (step, &kf) in k.iter().enumerate() {
                ctx.interrupt.check()?;
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
                    if op == "limitk" {
                        // limitk keeps histograms too, in input order.
                        for &i in members.iter().filter(|&&i| input[i].has(step)).take(kk) {
                            match input[i].hist(step) {
                                Some(h) => out[i].set_hist(step, h.clone()),
                                None => out[i].vals[step] = input[i].vals[step],
                            }
                        }
                        continue;
                    }
                    if members.iter().any(|&i| input[i].hist(step).is_some()) {
                        ctx.annotate(
                            AnnotationKind::Info,
                            format!(
                                "PromQL info: ignored histogram in {op} aggregation{}",
                                ctx.positions.of(a)
                            ),
                        );
                    }
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
            out.retain(VSeries::any);
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
            // Prometheus sets the value label first and groups the relabelled series, so
            // a `by`/`without` clause naming the label sees the new value.
            let mut out: Vec<VSeries> = Vec::new();
            let mut idx: HashMap<Labels, usize> = HashMap::new();
            for step in 0..n {
                ctx.interrupt.check()?;
                let mut counts: Vec<(Labels, f64)> = Vec::new();
                let mut at: HashMap<Labels, usize> = HashMap::new();
                for s in &input {
                    let v = match (s.vals[step], s.hist(step)) {
                        (Some(v), _) => format_go_float(v),
                        (None, Some(h)) => crate::eval_hist::go_string(h),
                        (None, None) => continue,
                    };
                    let mut l = s.labels.clone();
                    l.set(&label, &v);
                    let mut g = group_labels(&l, &a.modifier);
                    if matches!(a.modifier, None | Some(LabelModifier::Include(_))) {
                        // `by` keeps only the listed labels: the value label is added back.
                        g.set(&label, &v);
                    }
                    match at.get(&g) {
                        Some(&k) => counts[k].1 += 1.0,
                        None => {
                            at.insert(g.clone(), counts.len());
                            counts.push((g, 1.0));
                        }
                    }
                }
                for (l, c) in counts {
                    let j = *idx.entry(l.clone()).or_insert_with(|| {
                        out.push(VSeries::floats(l, vec![None; n], false));
                        out.len() - 1
                    });
                    out[j].vals[step] = Some(c);
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
    // Where Prometheus places aggregation annotations: the aggregated expression.
    let expr_pos = if a.param.is_some() {
        ctx.positions.of_arg(a, 1)
    } else {
        ctx.positions.of_first_arg(a)
    };
    let any_hists = input.iter().any(VSeries::has_hists);
    let mut out = Vec::with_capacity(groups.len());
    for (gi, (g, members)) in groups.into_iter().enumerate() {
        if gi % 64 == 63 {
            ctx.interrupt.check()?;
        }
        let mut vals = vec![None; n];
        let mut hist_out: Vec<Option<crate::engine::H>> = Vec::new();
        for (step, slot) in vals.iter_mut().enumerate() {
            let mut xs: Vec<f64> = members
                .iter()
                .filter_map(|&i| input[i].vals[step])
                .collect();
            if any_hists {
                let hs: Vec<(usize, &crate::engine::H)> = members
                    .iter()
                    .filter_map(|&i| input[i].hist(step).map(|h| (i, h)))
                    .collect();
                if !hs.is_empty() {
                    match op.as_str() {
                        "count" => {
                            *slot = Some((xs.len() + hs.len()) as f64);
                            continue;
                        }
                        "group" => {
                            *slot = Some(1.0);
                            continue;
                        }
                        "sum" | "avg" => {
                            if !xs.is_empty() {
                                ctx.annotate(
                                    AnnotationKind::Warning,
                                    format!(
                                        "PromQL warning: encountered a mix of histograms and floats for aggregation{expr_pos}"
                                    ),
                                );
                                continue;
                            }
                            let named = hs.iter().map(|(i, h)| (&input[*i].labels, h.as_ref()));
                            if let Some(h) = sum_histograms(ctx, named, &expr_pos, op == "avg") {
                                if hist_out.is_empty() {
                                    hist_out = vec![None; n];
                                }
                                hist_out[step] = Some(std::sync::Arc::new(h));
                            }
                            continue;
                        }
                        other => ctx.annotate(
                            AnnotationKind::Info,
                            format!(
                                "PromQL info: ignored histogram in {other} aggregation{expr_pos}"
                            ),
                        ),
                    }
                }
            }
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
            hists: hist_out,
            drop_name,
        });
    }
    Ok(Val::Vector(out))
}

/// The compensated sum (or, with `mean`, the average) of histograms `(labels, histogram)`
/// with Prometheus's annotations at `pos`; `None` (after a warning naming the offending series)
/// when exponential and custom-bucket histograms meet. An average whose running sum would
/// overflow switches to an incremental mean, as Prometheus does. Used by `sum`/`avg` and
/// `sum_over_time`/`avg_over_time`.
fn sum_histograms<'h>(
    ctx: &Ctx<'_>,
    hs: impl IntoIterator<Item = (&'h Labels, &'h FloatHistogram)>,
    pos: &str,
    mean: bool,
) -> Option<FloatHistogram> {
    use crate::histogram::CounterResetHint;
    let mut acc: Option<FloatHistogram> = None;
    let mut comp: Option<FloatHistogram> = None;
    // Incremental mean, once the running sum overflows.
    let mut running_mean: Option<FloatHistogram> = None;
    let mut count = 0.0;
    let (mut reset, mut not_reset, mut reconciled) = (false, false, false);
    for (labels, h) in hs {
        count += 1.0;
        match h.counter_reset_hint {
            CounterResetHint::CounterReset => reset = true,
            CounterResetHint::NotCounterReset => not_reset = true,
            _ => {}
        }
        let Some(sum) = acc.as_mut() else {
            acc = Some(h.clone());
            continue;
        };
        let added = if running_mean.is_none() {
            let mut v = sum.clone();
            let mut c = comp.clone();
            let r = v.kahan_add(h, &mut c);
            if r.is_ok() && (!mean || !has_overflow(&v)) {
                *sum = v;
                comp = c;
                r
            } else if r.is_err() {
                r
            } else {
                // The sum would overflow: continue with the mean of what was summed so far.
                let mut m = sum.clone();
                m.div(count - 1.0);
                if let Some(c) = comp.as_mut() {
                    c.div(count - 1.0);
                }
                running_mean = Some(m);
                add_to_mean(running_mean.as_mut(), h, count, &mut comp)
            }
        } else {
            add_to_mean(running_mean.as_mut(), h, count, &mut comp)
        };
        match added {
            Ok(outcome) => reconciled |= outcome.nhcb_reconciled,
            Err(_) => {
                mixed_schemas_warning(ctx, labels, pos);
                return None;
            }
        }
    }
    if reconciled {
        reconciled_info(ctx, "aggregation", pos);
    }
    if reset && not_reset {
        ctx.annotate(
            AnnotationKind::Warning,
            format!("PromQL warning: conflicting counter resets during histogram aggregation{pos}"),
        );
    }
    let mut sum = match running_mean {
        Some(m) => m,
        None => {
            let mut s = acc?;
            if mean {
                s.div(count);
                if let Some(c) = comp.as_mut() {
                    c.div(count);
                }
            }
            s
        }
    };
    if let Some(c) = comp {
        // Same layout as the sum by construction: this cannot fail. The compensation carries
        // no counter-reset information, so the sum keeps its hint.
        let hint = sum.counter_reset_hint;
        let _ = sum.add(&c);
        sum.counter_reset_hint = hint;
    }
    sum.compact(0);
    Some(sum)
}

/// One step of the incremental mean: `mean = mean·(n−1)/n + h/n`, compensation scaled alike.
fn add_to_mean(
    mean: Option<&mut FloatHistogram>,
    h: &FloatHistogram,
    n: f64,
    comp: &mut Option<FloatHistogram>,
) -> std::result::Result<crate::histogram::HistOpOutcome, crate::histogram::HistogramError> {
    let q = (n - 1.0) / n;
    if let Some(c) = comp.as_mut() {
        c.mul(q);
    }
    let mut to_add = h.clone();
    to_add.div(n);
    match mean {
        Some(m) => {
            m.mul(q);
            m.kahan_add(&to_add, comp)
        }
        None => Ok(Default::default()),
    }
}

/// True when a count, the sum or a bucket is infinite.
fn has_overflow(h: &FloatHistogram) -> bool {
    h.count.is_infinite()
        || h.sum.is_infinite()
        || h.zero_count.is_infinite()
        || h.positive_buckets.iter().any(|b| b.is_infinite())
        || h.negative_buckets.iter().any(|b| b.is_infinite())
}

fn arg(c: &Call, i: usize) -> Result<&Expr> {
    c.args
        .args
        .get(i)
        .map(|b| b.as_ref())
        .ok_or_else(|| EngineError::Eval(format!("missing argument {i} of {}", c.func.name)))
}

/// `e` without enclosing parentheses.
pub(crate) fn unwrap_parens(e: &Expr) -> &Expr {
    match e {
        Expr::Paren(p) => unwrap_parens(&p.expr),
        other => other,
    }
}

/// Applies `f` to every float sample; histogram samples are dropped, as Prometheus's float
/// functions drop them.
fn map_vector(v: Vec<VSeries>, f: impl Fn(f64) -> f64, drop_name: bool) -> Val {
    Val::Vector(
        v.into_iter()
            .map(|mut s| {
                s.vals.iter_mut().for_each(|x| *x = x.map(&f));
                s.drop_hists();
                if drop_name {
                    s.drop_name = true;
                }
                s
            })
            .filter(VSeries::any)
            .collect(),
    )
}

/// Applies `f` to each window's float samples; the result series drop their name unless
/// `keep_name`. Windows holding only histograms give no value; with `mixed_info` set, a window
/// holding both raises Prometheus's "ignored histograms" info at that position suffix.
fn over_time(
    stop: &Interrupt,
    m: MatrixVal,
    keep_name: bool,
    mixed_info: Option<(&Ctx<'_>, String)>,
    f: impl Fn(&[(i64, f64)], usize, &MatrixVal) -> Option<f64>,
) -> Val {
    over_time_h(stop, &m, keep_name, |w| {
        if w.floats.is_empty() {
            return None;
        }
        if let Some((ctx, pos)) = &mixed_info
            && !w.hists.is_empty()
        {
            ctx.annotate(
                AnnotationKind::Info,
                format!(
                    "PromQL info: ignored histograms in a range containing both floats and histograms for metric name {:?}{pos}",
                    metric_name(&w.series.labels)
                ),
            );
        }
        f(w.floats, w.step, &m).map(ElemOut::F)
    })
}

/// The `__name__` of a label set, or "".
pub(crate) fn metric_name(l: &Labels) -> &str {
    l.get("__name__").unwrap_or("")
}

/// One step's window over one series, as [`over_time_h`] hands it out.
struct Window<'m> {
    /// The float samples in the window.
    floats: &'m [(i64, f64)],
    /// The index in the series of the window's first float sample.
    first: usize,
    /// The histogram samples in the window.
    hists: &'m [(i64, H)],
    /// The step.
    step: usize,
    /// The series, and its index in the matrix.
    series: &'m MSeries,
    k: usize,
}

/// Applies `f` to each non-empty window, float samples and histogram samples apart; `f` may
/// return a float or a histogram. The result series drop their name unless `keep_name`.
fn over_time_h(
    stop: &Interrupt,
    m: &MatrixVal,
    keep_name: bool,
    mut f: impl FnMut(&Window<'_>) -> Option<ElemOut>,
) -> Val {
    let mut out = Vec::with_capacity(m.series.len());
    for (k, s) in m.series.iter().enumerate() {
        if stop.is_raised() {
            break;
        }
        let mut v = VSeries::floats(
            s.labels.clone(),
            vec![None; m.ends.len()],
            s.drop_name || !keep_name,
        );
        // Window ends ascend (or, with `@`, stay put): both edges only move forward.
        let (mut flo, mut fhi, mut hlo, mut hhi) = (0, 0, 0, 0);
        for i in 0..m.ends.len() {
            let (start, end) = (m.ends[i] - m.range, m.ends[i]);
            flo = advance_past(&s.samples, flo, start);
            fhi = advance_past(&s.samples, fhi.max(flo), end);
            hlo = advance_past(&s.hists, hlo, start);
            hhi = advance_past(&s.hists, hhi.max(hlo), end);
            if flo >= fhi && hlo >= hhi {
                continue;
            }
            let w = Window {
                floats: s.samples.get(flo..fhi).unwrap_or(&[]),
                first: flo,
                hists: s.hists.get(hlo..hhi).unwrap_or(&[]),
                step: i,
                series: s,
                k,
            };
            match f(&w) {
                Some(ElemOut::F(x)) => v.vals[i] = Some(x),
                Some(ElemOut::H(h)) => v.set_hist(i, h),
                None => {}
            }
        }
        if v.any() {
            out.push(v);
        }
    }
    Val::Vector(out)
}

/// Per series of `m`, the indices `j ≥ 1` of the float samples where `hit(previous, sample)`.
fn marks(m: &MatrixVal, hit: impl Fn(f64, f64) -> bool) -> Vec<Vec<usize>> {
    m.series
        .iter()
        .map(|s| {
            (1..s.samples.len())
                .filter(|&j| hit(s.samples[j - 1].1, s.samples[j].1))
                .collect()
        })
        .collect()
}

/// The marks of a window's float samples after its first (`first` and `len` as in
/// [`Window`]): the sample pairs inside the window.
fn marks_within(marks: &[usize], first: usize, len: usize) -> &[usize] {
    let a = marks.partition_point(|&j| j <= first);
    let b = marks.partition_point(|&j| j < first + len);
    marks.get(a..b).unwrap_or(&[])
}

/// A counter's drop: the sample is below the one before it.
fn is_drop(prev: f64, cur: f64) -> bool {
    cur < prev
}

/// `delta`, or with `drops` (the value before each drop of the counter in the window, in
/// time order) `increase`, or with `rate` also per second, of the window `w` at step `i`.
fn extrapolated_rate(
    w: &[(i64, f64)],
    i: usize,
    m: &MatrixVal,
    drops: Option<impl Iterator<Item = f64>>,
    rate: bool,
) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (first, last) = (w[0], w[w.len() - 1]);
    let mut result = last.1 - first.1;
    let counter = drops.is_some();
    for before_drop in drops.into_iter().flatten() {
        result += before_drop;
    }
    let zero_ratio = (result > 0.0 && first.1 >= 0.0).then(|| first.1 / result);
    Some(result * rate_factor(first.0, last.0, w.len(), i, m, counter, rate, zero_ratio))
}

/// Prometheus's extrapolation factor for a window whose samples span `first_t..=last_t`;
/// `zero_ratio` (first value / increase) lets a counter's extrapolation stop at zero.
#[allow(clippy::too_many_arguments)]
fn rate_factor(
    first_t: i64,
    last_t: i64,
    samples: usize,
    i: usize,
    m: &MatrixVal,
    counter: bool,
    rate: bool,
    zero_ratio: Option<f64>,
) -> f64 {
    let range_end = m.ends[i];
    let range_start = range_end - m.range;
    let mut to_start = (first_t - range_start) as f64 / 1000.0;
    let mut to_end = (range_end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let avg_between = sampled / (samples - 1) as f64;
    let threshold = avg_between * 1.1;
    if to_start >= threshold {
        to_start = avg_between / 2.0;
    }
    if counter && let Some(r) = zero_ratio {
        let to_zero = sampled * r;
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
    factor
}

fn mixed_floats_warning(ctx: &Ctx<'_>, labels: &Labels, pos: &str) {
    ctx.annotate(
        AnnotationKind::Warning,
        format!(
            "PromQL warning: encountered a mix of histograms and floats for metric name {:?}{pos}",
            metric_name(labels)
        ),
    );
}

fn mixed_schemas_warning(ctx: &Ctx<'_>, labels: &Labels, pos: &str) {
    ctx.annotate(
        AnnotationKind::Warning,
        format!(
            "PromQL warning: vector contains a mix of histograms with exponential and custom buckets schemas for metric name {:?}{pos}",
            metric_name(labels)
        ),
    );
}

fn not_counter_warning(ctx: &Ctx<'_>, labels: &Labels, pos: &str) {
    ctx.annotate(
        AnnotationKind::Warning,
        format!(
            "PromQL warning: this native histogram metric is not a counter: {:?}{pos}",
            metric_name(labels)
        ),
    );
}

fn not_gauge_warning(ctx: &Ctx<'_>, labels: &Labels, pos: &str) {
    ctx.annotate(
        AnnotationKind::Warning,
        format!(
            "PromQL warning: this native histogram metric is not a gauge: {:?}{pos}",
            metric_name(labels)
        ),
    );
}

fn reconciled_info(ctx: &Ctx<'_>, what: &str, pos: &str) {
    ctx.annotate(
        AnnotationKind::Info,
        format!("PromQL info: mismatched custom buckets were reconciled during {what}{pos}"),
    );
}

/// The increase (counter) or difference (gauge) of a window of at least two histograms, with
/// counter resets accounted for, as Prometheus's `histogramRate` computes it (not yet scaled).
fn histogram_rate(
    ctx: &Ctx<'_>,
    wh: &[(i64, H)],
    counter: bool,
    labels: &Labels,
    pos: &str,
) -> Option<FloatHistogram> {
    use crate::histogram::CounterResetHint::Gauge;
    let last = &wh[wh.len() - 1].1;
    let mut prev: FloatHistogram = FloatHistogram::clone(&wh[0].1);
    if counter && (prev.counter_reset_hint == Gauge || last.counter_reset_hint == Gauge) {
        not_counter_warning(ctx, labels, pos);
    }
    if counter {
        let second = &wh[1].1;
        if eval_hist::detect_reset(second, &prev) {
            prev = FloatHistogram {
                schema: second.schema,
                custom_values: second.custom_values.clone(),
                ..Default::default()
            };
        }
    }
    if last.uses_custom_buckets() != prev.uses_custom_buckets() {
        mixed_schemas_warning(ctx, labels, pos);
        return None;
    }
    for (_, cur) in &wh[1..wh.len() - 1] {
        if !counter {
            continue;
        }
        if cur.counter_reset_hint == Gauge {
            not_counter_warning(ctx, labels, pos);
        }
        if cur.uses_custom_buckets() != prev.uses_custom_buckets() {
            mixed_schemas_warning(ctx, labels, pos);
            return None;
        }
    }
    let (mut h, reconciled) = match eval_hist::sub(last, &prev) {
        Ok(r) => r,
        Err(_) => {
            mixed_schemas_warning(ctx, labels, pos);
            return None;
        }
    };
    if reconciled {
        reconciled_info(ctx, "subtraction", pos);
    }
    if counter {
        let mut p: &FloatHistogram = &prev;
        for (_, cur) in &wh[1..] {
            if eval_hist::detect_reset(cur, p) {
                match eval_hist::add(&h, p) {
                    Ok((sum, reconciled)) => {
                        h = sum;
                        if reconciled {
                            reconciled_info(ctx, "addition", pos);
                        }
                    }
                    Err(_) => {
                        mixed_schemas_warning(ctx, labels, pos);
                        return None;
                    }
                }
            }
            p = cur;
        }
    } else if wh[0].1.counter_reset_hint != Gauge || last.counter_reset_hint != Gauge {
        not_gauge_warning(ctx, labels, pos);
    }
    h.counter_reset_hint = Gauge;
    Some(eval_hist::compact(&h))
}

/// `irate`/`idelta` over the last two samples of a window (floats and histograms merged).
fn instant_value(
    ctx: &Ctx<'_>,
    wf: &[(i64, f64)],
    wh: &[(i64, H)],
    is_rate: bool,
    labels: &Labels,
    pos: &str,
) -> Option<ElemOut> {
    use crate::engine::El;
    use crate::histogram::CounterResetHint::Gauge;
    if wf.len() + wh.len() < 2 {
        return None;
    }
    // The last two samples in time order; on equal timestamps the histogram goes first.
    let mut ss: Vec<(i64, El<'_>)> = wf[wf.len().saturating_sub(2)..]
        .iter()
        .map(|p| (p.0, El::F(p.1)))
        .collect();
    for p in &wh[wh.len().saturating_sub(2)..] {
        let s = (p.0, El::H(&p.1));
        match ss.len() {
            0 => ss.push(s),
            1 => {
                if s.0 < ss[0].0 {
                    ss.insert(0, s)
                } else {
                    ss.push(s)
                }
            }
            _ if s.0 < ss[0].0 => {}
            _ if s.0 > ss[1].0 => {
                ss.remove(0);
                ss.push(s);
            }
            _ => ss[0] = s,
        }
    }
    let ((t0, v0), (t1, v1)) = (&ss[0], &ss[1]);
    let dt = t1 - t0;
    if dt == 0 {
        return None;
    }
    let secs = dt as f64 / 1000.0;
    match (v0, v1) {
        (El::F(a), El::F(b)) => {
            let d = if is_rate && b < a { *b } else { b - a };
            Some(ElemOut::F(if is_rate { d / secs } else { d }))
        }
        (El::H(a), El::H(b)) => {
            if is_rate && (b.counter_reset_hint == Gauge || a.counter_reset_hint == Gauge) {
                not_counter_warning(ctx, labels, pos);
            }
            if !is_rate && (b.counter_reset_hint != Gauge || a.counter_reset_hint != Gauge) {
                not_gauge_warning(ctx, labels, pos);
            }
            let mut h = FloatHistogram::clone(b);
            if !is_rate || !eval_hist::detect_reset(b, a) {
                match eval_hist::sub(b, a) {
                    Ok((d, reconciled)) => {
                        h = d;
                        if reconciled {
                            reconciled_info(ctx, "subtraction", pos);
                        }
                    }
                    Err(_) => {
                        mixed_schemas_warning(ctx, labels, pos);
                        return None;
                    }
                }
            }
            h.counter_reset_hint = Gauge;
            let h = if is_rate {
                eval_hist::div(&h, secs)
            } else {
                eval_hist::compact(&h)
            };
            Some(ElemOut::H(Arc::new(h)))
        }
        _ => {
            mixed_floats_warning(ctx, labels, pos);
            None
        }
    }
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

/// Classic buckets `(upper bound, count)` sorted by bound, counts of equal bounds added up;
/// `None` when there is no `+Inf` bucket (the result is then NaN).
fn coalesced_buckets(buckets: &mut [(f64, f64)]) -> Option<Vec<(f64, f64)>> {
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return None;
    }
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(ub, c) in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    Some(merged)
}

/// Where `histogram_quantile` had to force classic bucket counts to be monotonic:
/// `(lowest bucket, highest bucket, largest decrease)`.
type Forced = Option<(f64, f64, f64)>;

fn bucket_quantile(q: f64, buckets: &mut Vec<(f64, f64)>, forced: &mut Forced) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let Some(merged) = coalesced_buckets(buckets) else {
        return f64::NAN;
    };
    *buckets = merged;
    // Force monotonic counts, ignoring tiny deltas.
    let mut prev = buckets[0].1;
    for b in buckets.iter_mut().skip(1) {
        let curr = b.1;
        if curr == prev {
            continue;
        }
        let tol = 1e-12;
        if (prev - curr).abs() <= tol * prev.abs().max(curr.abs()) {
            b.1 = prev;
            continue;
        }
        if curr < prev {
            let (lo, hi, d) = forced.unwrap_or((f64::INFINITY, f64::NEG_INFINITY, 0.0));
            *forced = Some((lo.min(b.0), hi.max(b.0), d.max(prev - curr)));
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
    let Some(merged) = coalesced_buckets(buckets) else {
        return f64::NAN;
    };
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
        // An infinitely wide first bucket is not interpolated into: its whole count.
        let interp = |v: f64| {
            if lb == f64::NEG_INFINITY {
                count
            } else {
                rank + (count - rank) * (v - lb) / (ub - lb)
            }
        };
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

/// One value per step computed from classic `le` buckets or a native histogram.
struct HistFamily<'c, 'a> {
    ctx: &'c Ctx<'a>,
    /// Position suffix of the vector argument.
    pos: String,
}

impl HistFamily<'_, '_> {
    /// Applies `native` to every histogram sample and `classic` to every group of classic
    /// bucket series (grouped by their labels without `le`), per step, with Prometheus's
    /// checks: malformed `le` labels warn, and a native histogram with the labels of a
    /// classic group at the same step drops both with a warning. Results drop their name.
    fn apply(
        &self,
        v: &[VSeries],
        n: usize,
        mut native: impl FnMut(&FloatHistogram, usize, &Labels) -> f64,
        mut classic: impl FnMut(&mut Vec<(f64, f64)>, usize, &Labels) -> f64,
    ) -> Vec<VSeries> {
        let ctx = self.ctx;
        let pos = &self.pos;
        // Classic groups: key (labels without `le`) → members (le, series index).
        let mut groups: Vec<(Labels, Vec<(f64, usize)>)> = Vec::new();
        let mut gi: HashMap<Labels, usize> = HashMap::new();
        let mut bad_le: Vec<usize> = Vec::new();
        for (k, s) in v.iter().enumerate() {
            if !s.vals.iter().any(Option::is_some) {
                continue;
            }
            let Some(le) = s.labels.get("le").and_then(parse_le) else {
                bad_le.push(k);
                continue;
            };
            let mut l = s.labels.clone();
            l.remove("le");
            let g = *gi.entry(l.clone()).or_insert_with(|| {
                groups.push((l, Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push((le, k));
        }
        let mut out: Vec<VSeries> = Vec::new();
        let mut oi: HashMap<Labels, usize> = HashMap::new();
        let mut put = |out: &mut Vec<VSeries>, l: &Labels, i: usize, x: f64| {
            let j = *oi.entry(l.clone()).or_insert_with(|| {
                out.push(VSeries::floats(l.clone(), vec![None; n], true));
                out.len() - 1
            });
            out[j].vals[i] = Some(x);
        };
        for i in 0..n {
            for &k in &bad_le {
                if v[k].vals[i].is_some() {
                    let le = v[k].labels.get("le").unwrap_or("");
                    ctx.annotate(
                        AnnotationKind::Warning,
                        format!(
                            "PromQL warning: bucket label \"le\" is missing or has a malformed value of {le:?}{}{pos}",
                            for_metric(&v[k].labels)
                        ),
                    );
                }
            }
            let mut conflicted: Vec<usize> = Vec::new();
            for s in v.iter() {
                let Some(h) = s.hist(i) else { continue };
                if let Some(&g) = gi.get(&s.labels)
                    && groups[g].1.iter().any(|&(_, k)| v[k].vals[i].is_some())
                {
                    ctx.annotate(
                        AnnotationKind::Warning,
                        format!(
                            "PromQL warning: vector contains a mix of classic and native histograms{}{pos}",
                            for_metric(&s.labels)
                        ),
                    );
                    conflicted.push(g);
                    continue;
                }
                let x = native(h, i, &s.labels);
                put(&mut out, &s.labels, i, x);
            }
            for (g, (l, members)) in groups.iter().enumerate() {
                if conflicted.contains(&g) {
                    continue;
                }
                let mut b: Vec<(f64, f64)> = members
                    .iter()
                    .filter_map(|&(le, k)| v[k].vals[i].map(|c| (le, c)))
                    .collect();
                if b.is_empty() {
                    continue;
                }
                let x = classic(&mut b, i, l);
                put(&mut out, l, i, x);
            }
        }
        out
    }

    /// Raises a native quantile/fraction NaN-observation info.
    fn nan_note(&self, note: Option<crate::histogram::NanNote>, labels: &Labels) {
        use crate::histogram::NanNote;
        let Some(note) = note else { return };
        let what = match note {
            NanNote::QuantileNaNResult => {
                "input to histogram_quantile has NaN observations, result is NaN"
            }
            NanNote::QuantileNaNSkew => {
                "input to histogram_quantile has NaN observations, result is skewed higher"
            }
            NanNote::FractionNaNs => {
                "input to histogram_fraction has NaN observations, which are excluded from all fractions"
            }
        };
        self.ctx.annotate(
            AnnotationKind::Info,
            format!("PromQL info: {what}{}{}", for_metric(labels), self.pos),
        );
    }

    /// Raises the forced-monotonicity info for a classic group.
    fn forced(&self, forced: Forced, labels: &Labels, t: i64) {
        let Some((lo, hi, diff)) = forced else { return };
        let when = rfc3339(t);
        self.ctx.annotate(
            AnnotationKind::Info,
            format!(
                "PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile){}, from buckets {} to {}, with a max diff of {}, over 1 samples from {when} to {when}{}",
                for_metric(labels),
                go_g(lo),
                go_g(hi),
                go_g((diff * 100.0).round() / 100.0),
                self.pos
            ),
        );
    }
}

/// ` for metric name "x"`, or "" for a series without a name.
fn for_metric(labels: &Labels) -> String {
    match labels.get("__name__") {
        Some(n) if !n.is_empty() => format!(" for metric name {n:?}"),
        _ => String::new(),
    }
}

/// A millisecond timestamp as RFC 3339 UTC seconds (`2006-01-02T15:04:05Z`).
fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Prometheus's OpenMetrics float form for quantile labels: `0.0`, `0.25`, `+Inf`, `NaN`.
fn openmetrics_float(q: f64) -> String {
    if q.is_nan() {
        "NaN".into()
    } else if q.is_infinite() {
        if q > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{q:?}")
    }
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
            let mixed = Some((ctx, ctx.positions.of_first_arg(c)));
            Ok(over_time(ctx.interrupt, m, false, mixed, |w, i, _| {
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
                        s.drop_hists();
                        s.drop_name = true;
                        s
                    })
                    .filter(VSeries::any)
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
                s.drop_hists();
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
                        for i in 0..n {
                            if s.has(i) {
                                s.vals[i] = Some(ctx.ts[i] as f64 / 1000.0);
                            }
                        }
                        s.drop_hists();
                    }
                    v
                }
            };
            Ok(map_vector(v, |x| x, true))
        }
        "vector" => {
            let s = ctx.eval_scalar(arg(c, 0)?)?;
            Ok(Val::Vector(vec![VSeries::floats(
                Labels::default(),
                s.into_iter().map(Some).collect(),
                false,
            )]))
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
                (0..n).map(|i| v.iter().any(|s| s.has(i))).collect()
            } else {
                let m = ctx.eval_matrix(arg(c, 0)?)?;
                (0..n)
                    .map(|i| {
                        m.series.iter().any(|s| {
                            !window(&s.samples, m.ends[i], m.range).is_empty()
                                || !window(&s.hists, m.ends[i], m.range).is_empty()
                        })
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
            Ok(Val::Vector(vec![VSeries::floats(labels, vals, false)]))
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
            if matches!(name, "sort" | "sort_desc") {
                // Prometheus sorts float samples only; histograms are dropped.
                for s in &mut v {
                    s.drop_hists();
                }
                v.retain(VSeries::any);
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
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => {
            let v = ctx.eval_vector(arg(c, 0)?)?;
            let f = |h: &FloatHistogram| match name {
                "histogram_count" => h.count,
                "histogram_sum" => h.sum,
                "histogram_avg" => h.sum / h.count,
                "histogram_stddev" => h.stddev(),
                _ => h.stdvar(),
            };
            let mut out = Vec::new();
            for s in v {
                if !s.has_hists() {
                    continue;
                }
                let vals = (0..n).map(|i| s.hist(i).map(|h| f(h))).collect();
                out.push(VSeries::floats(s.labels, vals, true));
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
            let fam = HistFamily {
                ctx,
                pos: ctx.positions.of_first_arg(c),
            };
            let mut out = Vec::new();
            for i in 2..c.args.args.len() {
                let q = ctx.eval_scalar(arg(c, i)?)?;
                check_quantile(ctx, &q, &ctx.positions.of_arg(c, i));
                let q_label = openmetrics_float(q.first().copied().unwrap_or(f64::NAN));
                let got = fam.apply(
                    &v,
                    n,
                    |h, step, l| {
                        let (x, note) = h.quantile(q[step]);
                        fam.nan_note(note, l);
                        x
                    },
                    |b, step, l| {
                        let mut forced = None;
                        let x = bucket_quantile(q[step], b, &mut forced);
                        fam.forced(forced, l, ctx.ts[step]);
                        x
                    },
                );
                for mut s in got {
                    s.labels.set(&label, &q_label);
                    out.push(s);
                }
            }
            Ok(Val::Vector(out))
        }
        "histogram_quantile" => {
            let q = ctx.eval_scalar(arg(c, 0)?)?;
            check_quantile(ctx, &q, &ctx.positions.of_first_arg(c));
            let v = ctx.eval_vector(arg(c, 1)?)?;
            let fam = HistFamily {
                ctx,
                pos: ctx.positions.of_arg(c, 1),
            };
            Ok(Val::Vector(fam.apply(
                &v,
                n,
                |h, step, l| {
                    let (x, note) = h.quantile(q[step]);
                    fam.nan_note(note, l);
                    x
                },
                |b, step, l| {
                    let mut forced = None;
                    let x = bucket_quantile(q[step], b, &mut forced);
                    fam.forced(forced, l, ctx.ts[step]);
                    x
                },
            )))
        }
        "histogram_fraction" => {
            let lower = ctx.eval_scalar(arg(c, 0)?)?;
            let upper = ctx.eval_scalar(arg(c, 1)?)?;
            let v = ctx.eval_vector(arg(c, 2)?)?;
            let fam = HistFamily {
                ctx,
                pos: ctx.positions.of_arg(c, 2),
            };
            Ok(Val::Vector(fam.apply(
                &v,
                n,
                |h, step, l| {
                    let (x, note) = h.fraction(lower[step], upper[step]);
                    fam.nan_note(note, l);
                    x
                },
                |b, step, _| bucket_fraction(lower[step], upper[step], b),
            )))
        }
        "rate" | "increase" | "delta" => {
            let m = ctx.eval_matrix(arg(c, 0)?)?;
            let counter = name != "delta";
            let rate = name == "rate";
            let pos = ctx.positions.of_first_arg(c);
            // Where each counter drops, found once per series rather than once per window.
            let drops = counter.then(|| marks(&m, is_drop));
            let out = over_time_h(ctx.interrupt, &m, false, |w| {
                let (wf, wh, i, s) = (w.floats, w.hists, w.step, w.series);
                if !wf.is_empty() && !wh.is_empty() {
                    mixed_floats_warning(ctx, &s.labels, &pos);
                    return None;
                }
                if wh.is_empty() {
                    let before_drops = drops.as_ref().map(|d| {
                        marks_within(&d[w.k], w.first, wf.len())
                            .iter()
                            .map(|&j| s.samples[j - 1].1)
                    });
                    return extrapolated_rate(wf, i, &m, before_drops, rate).map(ElemOut::F);
                }
                if wh.len() < 2 {
                    return None;
                }
                let h = histogram_rate(ctx, wh, counter, &s.labels, &pos)?;
                let f = wh[0].1.count;
                let factor = rate_factor(
                    wh[0].0,
                    wh[wh.len() - 1].0,
                    wh.len(),
                    i,
                    &m,
                    counter,
                    rate,
                    (h.count > 0.0 && f >= 0.0).then(|| f / h.count),
                );
                Some(ElemOut::H(Arc::new(eval_hist::mul(&h, factor))))
            });
            if name != "delta"
                && matches!(unwrap_parens(arg(c, 0)?), Expr::MatrixSelector(_))
                && let Val::Vector(v) = &out
            {
                for s in v {
                    let Some(metric) = s.labels.get("__name__") else {
                        continue;
                    };
                    let counter_like = ["_total", "_sum", "_count", "_bucket"]
                        .iter()
                        .any(|suffix| metric.ends_with(suffix));
                    if !counter_like && s.vals.iter().any(Option::is_some) {
                        ctx.annotate(
                            AnnotationKind::Info,
                            format!(
                                "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {metric:?}{pos}"
                            ),
                        );
                    }
                }
            }
            Ok(out)
        }
        "irate" | "idelta" => {
            let m = ctx.eval_matrix(arg(c, 0)?)?;
            let is_rate = name == "irate";
            let pos = ctx.positions.of_first_arg(c);
            Ok(over_time_h(ctx.interrupt, &m, false, |w| {
                instant_value(ctx, w.floats, w.hists, is_rate, &w.series.labels, &pos)
            }))
        }
        "deriv" => {
            let m = ctx.eval_matrix(arg(c, 0)?)?;
            let mixed = Some((ctx, ctx.positions.of_first_arg(c)));
            Ok(over_time(ctx.interrupt, m, false, mixed, |w, _, _| {
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
            let mixed = Some((ctx, ctx.positions.of_first_arg(c)));
            Ok(over_time(ctx.interrupt, m, false, mixed, |w, i, m| {
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
            // For windows of floats only, the count is the number of marks inside the window.
            let float_marks = if resets {
                marks(&m, is_drop)
            } else {
                marks(&m, |a, b| a != b && !(a.is_nan() && b.is_nan()))
            };
            Ok(over_time_h(ctx.interrupt, &m, false, |w| {
                let (wf, wh) = (w.floats, w.hists);
                if wh.is_empty()
                    && let Some(d) = float_marks.get(w.k)
                {
                    return Some(ElemOut::F(marks_within(d, w.first, wf.len()).len() as f64));
                }
                // Floats and histograms merged in time order.
                let mut k = 0.0;
                let (mut fi, mut hi) = (0, 0);
                let mut prev: Option<crate::engine::El<'_>> = None;
                while fi < wf.len() || hi < wh.len() {
                    let cur = if hi >= wh.len() || (fi < wf.len() && wf[fi].0 < wh[hi].0) {
                        fi += 1;
                        crate::engine::El::F(wf[fi - 1].1)
                    } else {
                        hi += 1;
                        crate::engine::El::H(&wh[hi - 1].1)
                    };
                    if let Some(p) = &prev {
                        use crate::engine::El;
                        let changed = match (p, &cur) {
                            (El::F(a), El::F(b)) => {
                                if resets {
                                    b < a
                                } else {
                                    a != b && !(a.is_nan() && b.is_nan())
                                }
                            }
                            (El::H(a), El::H(b)) => {
                                if resets {
                                    eval_hist::detect_reset(b, a)
                                } else {
                                    !eval_hist::equals(b, a)
                                }
                            }
                            _ => true,
                        };
                        if changed {
                            k += 1.0;
                        }
                    }
                    prev = Some(cur);
                }
                Some(ElemOut::F(k))
            }))
        }
        "sum_over_time" | "avg_over_time" => {
            let m = ctx.eval_matrix(arg(c, 0)?)?;
            let avg_of = name == "avg_over_time";
            let pos = ctx.positions.of_first_arg(c);
            let mut xs: Vec<f64> = Vec::new();
            Ok(over_time_h(ctx.interrupt, &m, false, |w| {
                let (wf, wh, s) = (w.floats, w.hists, w.series);
                if !wf.is_empty() && !wh.is_empty() {
                    mixed_floats_warning(ctx, &s.labels, &pos);
                    return None;
                }
                if wh.is_empty() {
                    xs.clear();
                    xs.extend(wf.iter().map(|p| p.1));
                    return Some(ElemOut::F(if avg_of {
                        avg(&xs)
                    } else {
                        kahan_sum(xs.iter().copied())
                    }));
                }
                let named = wh.iter().map(|p| (&s.labels, p.1.as_ref()));
                let h = sum_histograms(ctx, named, &pos, avg_of)?;
                Some(ElemOut::H(Arc::new(h)))
            }))
        }
        "count_over_time"
        | "present_over_time"
        | "last_over_time"
        | "first_over_time"
        | "ts_of_first_over_time"
        | "ts_of_last_over_time" => {
            let m = ctx.eval_matrix(arg(c, 0)?)?;
            let keep = name == "last_over_time" || name == "first_over_time";
            Ok(over_time_h(ctx.interrupt, &m, keep, |w| {
                let (wf, wh) = (w.floats, w.hists);
                let first = match (wf.first(), wh.first()) {
                    (Some(f), Some(h)) if h.0 < f.0 => (h.0, ElemOut::H(h.1.clone())),
                    (Some(f), _) => (f.0, ElemOut::F(f.1)),
                    (None, Some(h)) => (h.0, ElemOut::H(h.1.clone())),
                    (None, None) => return None,
                };
                let last = match (wf.last(), wh.last()) {
                    (Some(f), Some(h)) if h.0 > f.0 => (h.0, ElemOut::H(h.1.clone())),
                    (Some(f), _) => (f.0, ElemOut::F(f.1)),
                    (None, Some(h)) => (h.0, ElemOut::H(h.1.clone())),
                    (None, None) => return None,
                };
                Some(match name {
                    "count_over_time" => ElemOut::F((wf.len() + wh.len()) as f64),
                    "present_over_time" => ElemOut::F(1.0),
                    "last_over_time" => last.1,
                    "first_over_time" => first.1,
                    "ts_of_first_over_time" => ElemOut::F(first.0 as f64 / 1000.0),
                    _ => ElemOut::F(last.0 as f64 / 1000.0),
                })
            }))
        }
        "min_over_time"
        | "max_over_time"
        | "stddev_over_time"
        | "stdvar_over_time"
        | "mad_over_time"
        | "ts_of_min_over_time"
        | "ts_of_max_over_time" => {
            let m = ctx.eval_matrix(arg(c, 0)?)?;
            let mixed = Some((ctx, ctx.positions.of_first_arg(c)));
            Ok(over_time(ctx.interrupt, m, false, mixed, |w, _, _| {
                let values = || w.iter().map(|p| p.1);
                Some(match name {
                    "min_over_time" => {
                        values().fold(f64::NAN, |m, x| if x < m || m.is_nan() { x } else { m })
                    }
                    "max_over_time" => {
                        values().fold(f64::NAN, |m, x| if x > m || m.is_nan() { x } else { m })
                    }
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
                    "mad_over_time" if values().any(|x| x.is_nan()) => f64::NAN,
                    "mad_over_time" => {
                        let mut v: Vec<f64> = values().collect();
                        let med = quantile(0.5, &mut v);
                        let mut dev: Vec<f64> = values().map(|x| (x - med).abs()).collect();
                        quantile(0.5, &mut dev)
                    }
                    "stdvar_over_time" => stdvar(&values().collect::<Vec<_>>()),
                    _ => stdvar(&values().collect::<Vec<_>>()).sqrt(),
                })
            }))
        }
        "quantile_over_time" => {
            let q = ctx.eval_scalar(arg(c, 0)?)?;
            check_quantile(ctx, &q, &ctx.positions.of_first_arg(c));
            let m = ctx.eval_matrix(arg(c, 1)?)?;
            // Prometheus reports ignored histograms at the quantile argument.
            let mixed = Some((ctx, ctx.positions.of_first_arg(c)));
            Ok(over_time(ctx.interrupt, m, false, mixed, |w, i, _| {
                let mut xs: Vec<f64> = w.iter().map(|p| p.1).collect();
                Some(quantile(q[i], &mut xs))
            }))
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => {
            let v = match c.args.args.first() {
                Some(e) => ctx.eval_vector(e)?,
                None => vec![VSeries::floats(
                    Labels::default(),
                    ctx.ts.iter().map(|t| Some(*t as f64 / 1000.0)).collect(),
                    false,
                )],
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;

    fn matrix(series: usize) -> MatrixVal {
        let samples: Vec<(i64, f64)> = (0..10).map(|i| (i * 1000, i as f64)).collect();
        MatrixVal {
            series: (0..series)
                .map(|i| MSeries {
                    labels: Labels::new(vec![("i".to_string(), i.to_string())]),
                    samples: samples.clone(),
                    hists: Vec::new(),
                    drop_name: false,
                })
                .collect(),
            range: 5000,
            ends: vec![9000],
            eval_ts: vec![9000],
        }
    }

    /// An aggregation's grouping stops within 1024 series of a raised interrupt.
    #[test]
    fn grouping_stops_when_interrupted() {
        let input: Vec<VSeries> = (0..5000)
            .map(|i| {
                VSeries::floats(
                    Labels::new([("pod".to_string(), format!("p{i}"))]),
                    vec![Some(1.0)],
                    false,
                )
            })
            .collect();
        let raised = Interrupt::new(None, Some(Arc::new(AtomicBool::new(true))));
        assert!(matches!(
            group_keys(&raised, &input, &None),
            Err(EngineError::Canceled)
        ));
        let keys = group_keys(&Interrupt::none(), &input, &None).expect("keys");
        assert_eq!(keys.len(), 5000);
    }

    /// A raised interrupt ends a range function's loop over the series at once (the
    /// evaluation then fails at its next check), and an unraised one lets every series through.
    #[test]
    fn range_functions_stop_between_series_when_interrupted() {
        let raised = Interrupt::new(None, Some(Arc::new(AtomicBool::new(true))));
        let count = |stop: &Interrupt| {
            let Val::Vector(v) = over_time_h(stop, &matrix(50), false, |w| {
                Some(ElemOut::F(w.floats.len() as f64))
            }) else {
                return usize::MAX;
            };
            v.len()
        };
        assert_eq!(count(&Interrupt::none()), 50);
        assert_eq!(count(&raised), 0);
        let Val::Vector(v) = over_time(&raised, matrix(50), false, None, |w, _, _| {
            Some(w.len() as f64)
        }) else {
            panic!("a vector");
        };
        assert!(v.is_empty());
    }
}
