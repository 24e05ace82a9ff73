//! `info(v [, {label selector}])`: Prometheus 3's experimental join of a vector with the data
//! labels of "info" series (`target_info` unless the selector names others) that share its
//! identifying labels (`instance`, `job`).
//!
//! Prometheus selects the info series only after evaluating `v` (restricted to the identifying
//! label values `v` holds); this engine fetches everything before evaluating, so the fetch phase
//! reads every info series matching the selector's name and data-label matchers over the time
//! range, and the evaluation keeps those whose identifying labels occur in `v`. The answer is
//! the same; the read can be wider.
//!
//! The info series are looked up at a reference time per step: the `@` time and offsets of the
//! first vector selector in `v` (its own, else its enclosing subqueries'), so that
//! `info(v @ T)` enriches with the info series as of `T`.

use std::collections::{BTreeSet, HashMap};

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::Expr;
use promql_parser::parser::ast::{Call, VectorSelector};

use super::{EngineError, Range, Result, VSeries, Val, at_ms, effective_matchers, offset_ms};
use crate::engine::Ctx;
use crate::functions::unwrap_parens;
use crate::value::{Labels, is_stale_nan};

/// The default info metric.
const TARGET_INFO: &str = "target_info";

/// Labels an info series and the series it enriches must share.
const IDENTIFYING: [&str; 2] = ["instance", "job"];

/// The matcher the parser fallback adds to an `info` label selector whose matchers all match
/// the empty string (which `promql-parser` refuses, Prometheus accepts); removed after parsing.
pub(super) const SENTINEL: &str = "__strata_info_selector__";

/// The label selector of an `info` call, split as Prometheus uses it.
struct Selector {
    /// Matchers on `__name__`: which info metrics to join.
    names: Vec<Matcher>,
    /// Every other matcher, by label name: which data labels to add (all when empty) and which
    /// info series qualify.
    data: Vec<Matcher>,
}

impl Selector {
    fn of(c: &Call) -> Result<Selector> {
        let Some(arg) = c.args.args.get(1) else {
            return Ok(Selector {
                names: vec![Matcher::new(MatchOp::Equal, "__name__", TARGET_INFO)],
                data: Vec::new(),
            });
        };
        let Expr::VectorSelector(vs) = unwrap_parens(arg) else {
            return Err(EngineError::Eval(
                "the second argument of info() must be a label selector".into(),
            ));
        };
        let ms = effective_matchers(vs);
        if !ms.or_matchers.is_empty() {
            return Err(EngineError::Unsupported(
                "`or` in the label selector of info()".into(),
            ));
        }
        let (names, data) = ms
            .matchers
            .into_iter()
            .filter(|m| m.name != SENTINEL)
            .partition(|m| m.name == "__name__");
        Ok(Selector { names, data })
    }

    /// The `__name__` matchers info series are selected with: the given ones when one is
    /// positive; `=~".+_info"` before them when all are negative; `target_info` when none.
    fn effective_names(&self) -> Vec<Matcher> {
        if self
            .names
            .iter()
            .any(|m| matches!(m.op, MatchOp::Equal | MatchOp::Re(_)))
        {
            return self.names.clone();
        }
        if self.names.is_empty() {
            return vec![Matcher::new(MatchOp::Equal, "__name__", TARGET_INFO)];
        }
        let mut out = Vec::with_capacity(self.names.len() + 1);
        if let Ok(re) = regex::Regex::new("^(?:.+_info)$") {
            out.push(Matcher::new(MatchOp::Re(re), "__name__", ".+_info"));
        }
        out.extend(self.names.iter().cloned());
        out
    }

    /// The matchers the fetch phase selects info series with.
    fn fetch_matchers(&self) -> Vec<Matcher> {
        let mut out = self.data.clone();
        out.extend(self.effective_names());
        out
    }
}

/// The key under which the fetch phase keeps an `info` call's info series.
fn data_key(ms: &[Matcher]) -> String {
    let mut parts: Vec<String> = ms.iter().map(|m| m.to_string()).collect();
    parts.sort();
    format!("info() {}", parts.join(","))
}

/// The first vector selector under `e` (depth first, children in order) and the subqueries
/// enclosing it, outermost first.
fn first_selector<'a>(e: &'a Expr, path: &mut Vec<&'a Expr>) -> Option<&'a VectorSelector> {
    let children: Vec<&Expr> = match e {
        Expr::VectorSelector(vs) => return Some(vs),
        Expr::MatrixSelector(ms) => return Some(&ms.vs),
        Expr::Aggregate(a) => {
            let mut c = vec![a.expr.as_ref()];
            c.extend(a.param.as_deref());
            c
        }
        Expr::Unary(u) => vec![u.expr.as_ref()],
        Expr::Binary(b) => vec![b.lhs.as_ref(), b.rhs.as_ref()],
        Expr::Paren(p) => vec![p.expr.as_ref()],
        Expr::Subquery(sq) => vec![sq.expr.as_ref()],
        Expr::Call(c) => c.args.args.iter().map(|a| a.as_ref()).collect(),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => Vec::new(),
    };
    path.push(e);
    for c in children {
        if let Some(vs) = first_selector(c, path) {
            return Some(vs);
        }
    }
    path.pop();
    None
}

/// The `@` time (if any) and offset (ms) at which `base`'s info series are looked up: those of
/// its first vector selector; without its own `@`, the enclosing subqueries' offsets add up
/// (innermost first) until one of them has an `@`.
fn reference(base: &Expr, top: Range) -> (Option<i64>, i64) {
    let mut path = Vec::new();
    let Some(vs) = first_selector(base, &mut path) else {
        return (None, 0);
    };
    let mut at = at_ms(&vs.at, top);
    let mut off = offset_ms(&vs.offset);
    for e in path.iter().rev() {
        if at.is_some() {
            break;
        }
        if let Expr::Subquery(sq) = e {
            off += offset_ms(&sq.offset);
            at = at_ms(&sq.at, top);
        }
    }
    (at, off)
}

/// What the fetch phase must read for an `info` call evaluated over `r`: the key, matchers and
/// `[min_t, max_t]` of its info series.
pub(super) fn need(
    c: &Call,
    top: Range,
    r: Range,
    lookback: i64,
) -> Result<(String, Vec<Matcher>, i64, i64)> {
    let sel = Selector::of(c)?;
    let ms = sel.fetch_matchers();
    let (at, off) = match c.args.args.first() {
        Some(base) => reference(base, top),
        None => (None, 0),
    };
    let (s, e) = at.map_or((r.start, r.end), |a| (a, a));
    Ok((data_key(&ms), ms, s - off - lookback, e - off))
}

/// An info series' value at one step: the timestamp of the sample found, and whether it is a
/// histogram (an error once used: info samples must be floats).
type InfoPoint = Option<(i64, bool)>;

/// Evaluates `info(...)` over the context's steps.
pub(super) fn eval(ctx: &Ctx<'_>, c: &Call) -> Result<Val> {
    let Some(base_expr) = c.args.args.first() else {
        return Err(EngineError::Eval("info() needs an instant vector".into()));
    };
    let (at, off) = reference(base_expr, ctx.top());
    let base = ctx.eval_vector(base_expr)?;
    let sel = Selector::of(c)?;
    let names = sel.effective_names();
    let fetch = sel.fetch_matchers();
    let ignored: Vec<bool> = base
        .iter()
        .map(|s| {
            let name = s.labels.get("__name__").unwrap_or("");
            names.iter().all(|m| m.is_match(name))
        })
        .collect();
    // Identifying label values of the series to enrich.
    let mut id_values: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for (s, _) in base.iter().zip(&ignored).filter(|(_, ig)| !**ig) {
        for l in IDENTIFYING {
            if let Some(v) = s.labels.get(l) {
                id_values.entry(l).or_default().insert(v);
            }
        }
    }
    let stored = ctx
        .data
        .get(&data_key(&fetch))
        .map_or(&[][..], Vec::as_slice);
    let infos: Vec<&crate::value::Series> = if id_values.is_empty() {
        Vec::new()
    } else {
        stored
            .iter()
            .filter(|s| {
                id_values
                    .iter()
                    .all(|(l, vals)| s.labels.get(l).is_some_and(|v| vals.contains(v)))
            })
            .collect()
    };
    let lookback = ctx.engine.lookback_ms;
    let points: Vec<Vec<InfoPoint>> = infos
        .iter()
        .map(|s| {
            ctx.ts
                .iter()
                .map(|&t| latest(s, at.unwrap_or(t) - off, lookback))
                .collect()
        })
        .collect();
    let info_names: BTreeSet<&str> = infos
        .iter()
        .filter_map(|s| s.labels.get("__name__"))
        .collect();
    let data_names: BTreeSet<&str> = sel.data.iter().map(|m| m.name.as_str()).collect();
    let needs_match = sel.data.iter().any(|m| !m.is_match(""));

    let mut out: Vec<VSeries> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut by_sig: HashMap<Signature<'_>, (usize, i64)> = HashMap::new();
    for (k, _) in ctx.ts.iter().enumerate() {
        ctx.interrupt.check()?;
        if !base.iter().any(|s| s.has(k)) {
            continue;
        }
        by_sig.clear();
        for (i, s) in infos.iter().enumerate() {
            let Some((t, hist)) = points[i][k] else {
                continue;
            };
            if hist {
                return Err(EngineError::Eval("info sample should be float".into()));
            }
            let name = s.labels.get("__name__").unwrap_or("");
            let sig = signature(name, &s.labels);
            match by_sig.get(&sig) {
                Some(&(j, prev)) if prev == t => {
                    return Err(EngineError::Eval(format!(
                        "found duplicate series for info metric: existing {} @ {prev}, new {} @ {t}",
                        infos[j].labels.go_string(),
                        s.labels.go_string()
                    )));
                }
                Some(&(_, prev)) if prev > t => {}
                _ => {
                    by_sig.insert(sig, (i, t));
                }
            }
        }
        for (b, s) in base.iter().enumerate() {
            if !s.has(k) {
                continue;
            }
            let labels = if ignored[b] {
                s.labels.clone()
            } else {
                let mut added: Vec<(&str, &str)> = Vec::new();
                let mut matched = false;
                for name in &info_names {
                    let Some(&(i, _)) = by_sig.get(&signature(name, &s.labels)) else {
                        continue;
                    };
                    for (n, v) in infos[i].labels.iter() {
                        if n == "__name__"
                            || (!data_names.is_empty() && !data_names.contains(n.as_str()))
                        {
                            continue;
                        }
                        match added.iter().find(|(a, _)| *a == n) {
                            Some((_, old)) if *old != v => {
                                return Err(EngineError::Eval(format!("conflicting label: {n}")));
                            }
                            Some(_) => continue,
                            None => {}
                        }
                        if s.labels.get(n).is_some() {
                            continue;
                        }
                        added.push((n, v));
                    }
                    matched = true;
                }
                if !matched && needs_match {
                    continue;
                }
                let mut l = s.labels.clone();
                for (n, v) in added {
                    l.set(n, v);
                }
                l
            };
            let o = match index.get(&labels) {
                Some(&o) => {
                    if out[o].has(k) {
                        return Err(EngineError::Eval(
                            "vector cannot contain metrics with the same labelset".into(),
                        ));
                    }
                    o
                }
                None => {
                    index.insert(labels.clone(), out.len());
                    out.push(VSeries::floats(labels, vec![None; ctx.n()], s.drop_name));
                    out.len() - 1
                }
            };
            match s.hist(k) {
                Some(h) => out[o].set_hist(k, h.clone()),
                None => out[o].vals[k] = s.vals[k],
            }
        }
    }
    Ok(Val::Vector(out))
}

/// An info metric's name and the identifying label values a series has.
type Signature<'a> = (&'a str, [Option<&'a str>; 2]);

fn signature<'a>(info_name: &'a str, l: &'a Labels) -> Signature<'a> {
    (info_name, IDENTIFYING.map(|n| l.get(n)))
}

/// The latest sample of `s` in `(t - lookback, t]`, unless it is a staleness marker.
fn latest(s: &crate::value::Series, t: i64, lookback: i64) -> InfoPoint {
    let f = s.samples.partition_point(|p| p.0 <= t);
    let h = s.histograms.partition_point(|p| p.0 <= t);
    let f = f.checked_sub(1).map(|i| s.samples[i]);
    let h = h.checked_sub(1).map(|i| &s.histograms[i]);
    let (ts, stale, hist) = match (f, h) {
        (None, None) => return None,
        (Some((ft, fv)), None) => (ft, is_stale_nan(fv), false),
        (None, Some((ht, hv))) => (*ht, is_stale_nan(hv.sum), true),
        (Some((ft, fv)), Some((ht, hv))) => {
            if *ht > ft {
                (*ht, is_stale_nan(hv.sum), true)
            } else {
                (ft, is_stale_nan(fv), false)
            }
        }
    };
    (ts > t - lookback && !stale).then_some((ts, hist))
}

/// `query` with a sentinel matcher added to the label selector of every `info` call, so that a
/// selector whose matchers all match the empty string (`{data=~".*"}`) gets past the parser;
/// `None` when there is no such call. [`strip_sentinels`] removes the sentinels again.
pub(super) fn mark_selectors(query: &str) -> Option<String> {
    let b = query.as_bytes();
    // Open brackets: `(` of an info call (with its argument count so far), other `(`, `{`, `[`.
    enum Open {
        Info(usize),
        Paren,
        Brace,
        Bracket,
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut inserts: Vec<(usize, String)> = Vec::new();
    let mut pending_info = false;
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        match ch {
            b'"' | b'\'' | b'`' => i = string_end(b, i),
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i + 1 < b.len()
                    && (b[i + 1].is_ascii_alphanumeric() || b"_:".contains(&b[i + 1]))
                {
                    i += 1;
                }
                pending_info =
                    !matches!(stack.last(), Some(Open::Brace)) && &query[start..=i] == "info";
            }
            b'(' => {
                stack.push(if pending_info {
                    Open::Info(0)
                } else {
                    Open::Paren
                });
                pending_info = false;
            }
            b',' => {
                if let Some(Open::Info(n)) = stack.last_mut() {
                    *n += 1;
                }
            }
            b'{' => {
                let second_arg = matches!(stack.last(), Some(Open::Info(1)));
                stack.push(Open::Brace);
                if second_arg {
                    // The matching `}`: the sentinel goes just before it.
                    let mut j = i + 1;
                    while j < b.len() && b[j] != b'}' {
                        if matches!(b[j], b'"' | b'\'' | b'`') {
                            j = string_end(b, j);
                        }
                        j += 1;
                    }
                    if j < b.len() {
                        let inner = query.get(i + 1..j).unwrap_or("").trim();
                        let comma = if inner.is_empty() || inner.ends_with(',') {
                            ""
                        } else {
                            ","
                        };
                        inserts.push((j, format!("{comma}{SENTINEL}=\"1\"")));
                    }
                }
            }
            b'[' => stack.push(Open::Bracket),
            b')' | b'}' | b']' => {
                stack.pop();
            }
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            _ => {}
        }
        if !ch.is_ascii_alphabetic() && ch != b'_' {
            pending_info = false;
        }
        i += 1;
    }
    if inserts.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(query.len() + inserts.len() * 32);
    let mut at = 0;
    for (pos, text) in inserts {
        out.push_str(&query[at..pos]);
        out.push_str(&text);
        at = pos;
    }
    out.push_str(&query[at..]);
    Some(out)
}

/// The index of the quote closing the string literal that opens at `start` (the end of `b` if
/// none): backslash escapes in `"` and `'` strings, none in `` ` `` strings.
fn string_end(b: &[u8], start: usize) -> usize {
    let q = b[start];
    let mut i = start + 1;
    while i < b.len() && b[i] != q {
        if b[i] == b'\\' && q != b'`' {
            i += 1;
        }
        i += 1;
    }
    i
}

/// Removes the matchers [`mark_selectors`] added.
pub(super) fn strip_sentinels(e: &mut Expr) {
    match e {
        Expr::VectorSelector(vs) => vs.matchers.matchers.retain(|m| m.name != SENTINEL),
        Expr::MatrixSelector(ms) => ms.vs.matchers.matchers.retain(|m| m.name != SENTINEL),
        Expr::Aggregate(a) => {
            strip_sentinels(&mut a.expr);
            if let Some(p) = a.param.as_mut() {
                strip_sentinels(p);
            }
        }
        Expr::Unary(u) => strip_sentinels(&mut u.expr),
        Expr::Binary(b) => {
            strip_sentinels(&mut b.lhs);
            strip_sentinels(&mut b.rhs);
        }
        Expr::Paren(p) => strip_sentinels(&mut p.expr),
        Expr::Subquery(sq) => strip_sentinels(&mut sq.expr),
        Expr::Call(c) => c.args.args.iter_mut().for_each(|a| strip_sentinels(a)),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sentinel_goes_into_info_label_selectors_only() {
        assert_eq!(mark_selectors("sum(up{a=~\".*\"})"), None);
        assert_eq!(
            mark_selectors(r#"info(up, {data=~".*"})"#).as_deref(),
            Some(r#"info(up, {data=~".*",__strata_info_selector__="1"})"#)
        );
        assert_eq!(
            mark_selectors("info(up,{})").as_deref(),
            Some(r#"info(up,{__strata_info_selector__="1"})"#)
        );
        // Commas, braces and `info` inside strings, nested calls and label names are not
        // mistaken for the call's structure; a trailing comma needs no other.
        let q =
            r#"info(label_replace(up{info="x"}, "a", "{,}", "b", "(info)"), {d=~".*",}) + info(x)"#;
        assert_eq!(
            mark_selectors(q).as_deref(),
            Some(
                r#"info(label_replace(up{info="x"}, "a", "{,}", "b", "(info)"), {d=~".*",__strata_info_selector__="1"}) + info(x)"#
            )
        );
    }

    #[test]
    fn the_reference_time_follows_the_first_selector_and_its_subqueries() {
        let top = Range {
            start: 0,
            end: 1_000_000,
            step: 1,
        };
        let of = |q: &str| match crate::engine::parse(q) {
            Ok(Expr::Call(c)) => reference(&c.args.args[0], top),
            other => panic!("{other:?}"),
        };
        assert_eq!(of("info(x)"), (None, 0));
        assert_eq!(of("info(x offset 1m + y @ 5)"), (None, 60_000));
        assert_eq!(of("info(x @ 60 offset 1m)"), (Some(60_000), 60_000));
        assert_eq!(
            of("info(max_over_time(x[5m:1m] offset 6m))"),
            (None, 360_000)
        );
        assert_eq!(
            of("info(last_over_time((x offset 1m)[10m:1m] @ 180 offset 1h))"),
            (Some(180_000), 60_000 + 3_600_000)
        );
        assert_eq!(
            of("info(max_over_time(x[5m:1m] @ end()))"),
            (Some(1_000_000), 0)
        );
    }
}
