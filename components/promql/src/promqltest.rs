//! Prometheus's PromQL test-script language: parse a script, run it against the engine over an
//! in-memory store, and report pass/fail per statement (`load` and `eval` commands).
//!
//! Native histograms: `{{…}}` samples (with `{{a}}+{{b}}xN` sequences) load into
//! [`MemQueryable`] with the counter-reset hints Prometheus's TSDB would read back
//! ([`tsdb_counter_reset_hints`]); `load_with_nhcb` also turns classic `_bucket`/`_sum`/`_count`
//! series into custom-bucket histograms; expected histograms compare as Prometheus's runner
//! does ([`histogram_matches`]).
//!
//! NOT DONE: start timestamps (`@st` series), Prometheus's chunk cut by size (a long histogram
//! series reads back "unknown" at each chunk start in Prometheus, here only at resets, layout
//! changes and float samples), and the histogram validation Prometheus's appender does.

use std::fmt;
use std::sync::Arc;

use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;

use crate::engine::{Annotation, AnnotationKind, Engine, QueryValue, RangeSeries};
use crate::histogram::{CounterResetHint, FloatHistogram, Span};
use crate::queryable::MemQueryable;
use crate::value::{Labels, STALE_NAN_BITS};

/// One failing statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// 1-based line of the command.
    pub line: usize,
    /// What was expected and what happened.
    pub message: String,
}

/// The outcome of running one script.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Statements that passed.
    pub passed: usize,
    /// Statements that failed (unsupported ones included).
    pub failures: Vec<Failure>,
}

impl Report {
    /// The number of failed statements.
    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// Writes one `file:line: message` line per failure and a final `N passed, M failed` line.
    pub fn render(&self, file: &str) -> String {
        let mut s = String::new();
        for f in &self.failures {
            s.push_str(&format!("{file}:{}: {}\n", f.line, f.message));
        }
        s.push_str(&format!(
            "{} passed, {} failed\n",
            self.passed,
            self.failed()
        ));
        s
    }
}

/// A value in the series notation: a float, a staleness marker, a native histogram, or
/// nothing (`_`).
#[derive(Debug, Clone, PartialEq)]
pub enum Point {
    /// No sample at this step.
    Omitted,
    /// A float sample (a staleness marker is the stale NaN).
    Value(f64),
    /// A native histogram sample, and whether its counter reset hint was written out (an
    /// expected histogram's hint is compared only then).
    Histogram(Arc<FloatHistogram>, bool),
}

/// Splits a values field into tokens, keeping `{{…}}` histograms (which hold spaces) whole.
fn value_tokens(vals: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut open = false;
    for w in vals.split_whitespace() {
        if open {
            if let Some(last) = out.last_mut() {
                last.push(' ');
                last.push_str(w);
            }
        } else {
            out.push(w.to_string());
        }
        let cur = out.last().map(String::as_str).unwrap_or("");
        open = cur.matches("{{").count() > cur.matches("}}").count();
    }
    out
}

/// Errors in a script's syntax.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScriptError {
    /// A value token of the series notation is malformed.
    #[error("invalid series value {0:?}")]
    BadValue(String),
    /// A series descriptor does not parse.
    #[error("invalid series descriptor {0:?}: {1}")]
    BadSeries(String, String),
    /// A duration or timestamp does not parse.
    #[error("invalid duration {0:?}")]
    BadDuration(String),
    /// A command is malformed.
    #[error("invalid command: {0}")]
    BadCommand(String),
    /// A feature of the language this runner does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "Inf" | "+Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => s.parse::<f64>().ok(),
    }
}

/// Bound on the points one `…xN` token expands to.
const MAX_POINTS: u64 = 1_000_000;

/// Expands a histogram token: `{{…}}`, `{{…}}xN` (N+1 copies), `{{a}}+{{b}}xN` or
/// `{{a}}-{{b}}xN` (a, then N times the previous value plus or minus b).
fn expand_histograms(tok: &str) -> Result<Vec<Point>, ScriptError> {
    let bad = |why: &str| ScriptError::BadValue(format!("{tok}: {why}"));
    let end = tok.find("}}").ok_or_else(|| bad("missing }}"))?;
    let (base, base_hint) = parse_histogram(&tok[2..end])?;
    let rest = &tok[end + 2..];
    if rest.is_empty() {
        return Ok(vec![Point::Histogram(Arc::new(base), base_hint)]);
    }
    let times = |n: &str| -> Result<usize, ScriptError> {
        let n: u64 = n.parse().map_err(|_| bad("bad repeat count"))?;
        if n > MAX_POINTS {
            return Err(bad("too many points"));
        }
        Ok(n as usize)
    };
    if let Some(n) = rest.strip_prefix('x') {
        let n = times(n)?;
        let h = Arc::new(base);
        return Ok(vec![Point::Histogram(h, base_hint); n + 1]);
    }
    let sign = match rest.as_bytes()[0] {
        b'+' => 1.0,
        b'-' => -1.0,
        _ => return Err(bad("expected x, + or - after }}")),
    };
    let inc_src = rest[1..]
        .strip_prefix("{{")
        .ok_or_else(|| bad("expected {{ after + or -"))?;
    let inc_end = inc_src.find("}}").ok_or_else(|| bad("missing }}"))?;
    let (inc, inc_hint) = parse_histogram(&inc_src[..inc_end])?;
    let n = inc_src[inc_end + 2..]
        .strip_prefix('x')
        .ok_or_else(|| bad("expected xN after the increment"))?;
    let n = times(n)?;
    // Like Prometheus, every point of the sequence carries the increment's "hint written" flag.
    let mut out = Vec::with_capacity(n + 1);
    let mut cur = base;
    out.push(Point::Histogram(Arc::new(cur.clone()), inc_hint));
    for _ in 0..n {
        if cur.schema > inc.schema {
            return Err(bad(&format!(
                "cannot merge from schema {} to {}",
                inc.schema, cur.schema
            )));
        }
        let res = if sign > 0.0 {
            cur.add(&inc)
        } else {
            cur.sub(&inc)
        };
        res.map_err(|e| bad(&e.to_string()))?;
        out.push(Point::Histogram(Arc::new(cur.clone()), inc_hint));
    }
    Ok(out)
}

/// Parses the inside of `{{…}}`: `schema:1 sum:-0.3 count:3.1 z_bucket:7.1 z_bucket_w:0.05
/// buckets:[5.1 10 7] offset:-3 n_buckets:[4.1 5] n_offset:-5 counter_reset_hint:gauge
/// custom_values:[1 2]`. Returns the histogram and whether a counter reset hint was given.
pub fn parse_histogram(desc: &str) -> Result<(FloatHistogram, bool), ScriptError> {
    let bad = |why: String| ScriptError::BadValue(format!("{{{{{desc}}}}}: {why}"));
    let mut h = FloatHistogram::default();
    let mut seen: Vec<String> = Vec::new();
    let (mut pos_buckets, mut neg_buckets) = (Vec::new(), Vec::new());
    let (mut pos_offset, mut neg_offset) = (0i32, 0i32);
    let mut hint_set = false;
    let mut rest = desc.trim_start();
    while !rest.is_empty() {
        let colon = rest
            .find(':')
            .ok_or_else(|| bad(format!("missing `:` in {rest:?}")))?;
        let key = rest[..colon].trim().to_ascii_lowercase();
        rest = rest[colon + 1..].trim_start();
        let value: &str;
        if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']').ok_or_else(|| bad("missing ]".into()))?;
            value = &r[..close];
            rest = r[close + 1..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value = &rest[..end];
            rest = rest[end..].trim_start();
        }
        if seen.contains(&key) {
            return Err(bad(format!("duplicate key \"{key}\" in histogram")));
        }
        seen.push(key.clone());
        let num =
            |v: &str| parse_float(v).ok_or_else(|| bad(format!("bad number {v:?} for {key}")));
        let int = |v: &str| {
            v.parse::<i32>()
                .map_err(|_| bad(format!("bad integer {v:?} for {key}")))
        };
        let list =
            |v: &str| -> Result<Vec<f64>, ScriptError> { v.split_whitespace().map(num).collect() };
        match key.as_str() {
            "schema" => h.schema = int(value)?,
            "sum" => h.sum = num(value)?,
            "count" => h.count = num(value)?,
            "z_bucket" => h.zero_count = num(value)?,
            "z_bucket_w" => h.zero_threshold = num(value)?,
            "custom_values" => h.custom_values = list(value)?,
            "buckets" => pos_buckets = list(value)?,
            "n_buckets" => neg_buckets = list(value)?,
            "offset" => pos_offset = int(value)?,
            "n_offset" => neg_offset = int(value)?,
            "counter_reset_hint" => {
                hint_set = true;
                h.counter_reset_hint = match value.to_ascii_lowercase().as_str() {
                    "unknown" => CounterResetHint::Unknown,
                    "reset" => CounterResetHint::CounterReset,
                    "not_reset" => CounterResetHint::NotCounterReset,
                    "gauge" => CounterResetHint::Gauge,
                    other => return Err(bad(format!("unknown counter_reset_hint {other:?}"))),
                };
            }
            other => return Err(bad(format!("bad histogram descriptor found: {other:?}"))),
        }
    }
    let span = |offset: i32, n: usize| -> Result<Vec<Span>, ScriptError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let length = u32::try_from(n).map_err(|_| bad("too many buckets".into()))?;
        Ok(vec![Span { offset, length }])
    };
    h.positive_spans = span(pos_offset, pos_buckets.len())?;
    h.negative_spans = span(neg_offset, neg_buckets.len())?;
    h.positive_buckets = pos_buckets;
    h.negative_buckets = neg_buckets;
    Ok((h, hint_set))
}

/// Expands the series notation (`1 2+3x4 _ _x2 stale Inf -1-1x3`) to points.
pub fn expand_values<S: AsRef<str>>(tokens: &[S]) -> Result<Vec<Point>, ScriptError> {
    let mut out = Vec::new();
    for tok in tokens {
        let tok = tok.as_ref();
        if tok.starts_with("{{") {
            out.extend(expand_histograms(tok)?);
            continue;
        }
        if tok == "_" {
            out.push(Point::Omitted);
            continue;
        }
        if tok == "stale" {
            out.push(Point::Value(f64::from_bits(STALE_NAN_BITS)));
            continue;
        }
        if let Some(f) = parse_float(tok) {
            out.push(Point::Value(f));
            continue;
        }
        // `…xN` forms.
        let Some(xpos) = tok.rfind('x') else {
            return Err(ScriptError::BadValue(tok.into()));
        };
        let (head, count) = (&tok[..xpos], &tok[xpos + 1..]);
        let n: u64 = count
            .parse()
            .map_err(|_| ScriptError::BadValue(tok.into()))?;
        if n > MAX_POINTS {
            return Err(ScriptError::BadValue(tok.into()));
        }
        if head == "_" {
            out.extend(std::iter::repeat_n(Point::Omitted, n as usize));
            continue;
        }
        if head == "stale" {
            out.extend(std::iter::repeat_n(
                Point::Value(f64::from_bits(STALE_NAN_BITS)),
                n as usize + 1,
            ));
            continue;
        }
        if let Some(f) = parse_float(head) {
            out.extend(std::iter::repeat_n(Point::Value(f), n as usize + 1));
            continue;
        }
        // a+b or a-b: the operator is the last +/- not at the start and not after an exponent `e`.
        let bytes = head.as_bytes();
        let op = (1..bytes.len()).rev().find(|&i| {
            (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E')
        });
        let Some(op) = op else {
            return Err(ScriptError::BadValue(tok.into()));
        };
        let a = parse_float(&head[..op]).ok_or_else(|| ScriptError::BadValue(tok.into()))?;
        let mut b =
            parse_float(&head[op + 1..]).ok_or_else(|| ScriptError::BadValue(tok.into()))?;
        if bytes[op] == b'-' {
            b = -b;
        }
        let mut cur = a;
        for _ in 0..=n {
            out.push(Point::Value(cur));
            cur += b;
        }
    }
    Ok(out)
}

/// Parses a series descriptor such as `metric{a="b"}` or `{a="b"}` to a label set.
pub fn parse_series(desc: &str) -> Result<Labels, ScriptError> {
    let d = desc.trim();
    if d == "{}" {
        return Ok(Labels::default());
    }
    let expr = promql_parser::parser::parse(d).map_err(|e| ScriptError::BadSeries(d.into(), e))?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(ScriptError::BadSeries(
            d.into(),
            "not a series selector".into(),
        ));
    };
    let mut pairs = Vec::new();
    if let Some(n) = &vs.name {
        pairs.push(("__name__".to_string(), n.clone()));
    }
    for m in &vs.matchers.matchers {
        if !matches!(m.op, MatchOp::Equal) {
            return Err(ScriptError::BadSeries(
                d.into(),
                "only = matchers describe a series".into(),
            ));
        }
        pairs.push((m.name.clone(), m.value.clone()));
    }
    Ok(Labels::new(pairs))
}

/// Splits `desc values…` where desc may contain spaces inside `{…}` and quotes.
fn split_series_line(line: &str) -> (&str, &str) {
    let mut depth = 0i32;
    let mut in_q: Option<char> = None;
    let mut prev = '\0';
    for (i, ch) in line.char_indices() {
        if let Some(q) = in_q {
            if ch == q && prev != '\\' {
                in_q = None;
            }
        } else {
            match ch {
                '"' | '\'' | '`' => in_q = Some(ch),
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return (&line[..=i], line[i + 1..].trim());
                    }
                }
                c if c.is_whitespace() && depth == 0 => return (&line[..i], line[i..].trim()),
                _ => {}
            }
        }
        prev = if prev == '\\' && ch == '\\' { '\0' } else { ch };
    }
    (line, "")
}

/// Parses a duration such as `5m`, `1h30m`, `0`, `0s`, `-10s`; returns ms.
pub fn parse_duration_ms(s: &str) -> Result<i64, ScriptError> {
    let s = s.trim();
    let bad = || ScriptError::BadDuration(s.into());
    if s == "0" {
        return Ok(0);
    }
    if let Some(rest) = s.strip_prefix('-') {
        return parse_duration_ms(rest).map(|v| -v);
    }
    let b = s.as_bytes();
    let (mut i, mut total) = (0usize, 0i64);
    if b.is_empty() {
        return Err(bad());
    }
    while i < b.len() {
        let ds = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let n: i64 = s[ds..i].parse().map_err(|_| bad())?;
        let us = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = match &s[us..i] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

#[derive(Debug, Default)]
struct Expect {
    fail: bool,
    fail_msg: Option<String>,
    fail_regex: Option<String>,
    ordered: bool,
    /// `expect warn`/`expect info` lines: kind, and an optional exact message or regex.
    annos: Vec<(AnnotationKind, Option<String>, Option<String>)>,
    no_warn: bool,
    no_info: bool,
    string: Option<String>,
    range_vector: Option<(i64, i64)>,
}

enum Cmd {
    Load {
        line: usize,
        interval: i64,
        series: Vec<(usize, String)>,
        nhcb: bool,
    },
    Clear,
    Eval {
        line: usize,
        query: String,
        start: i64,
        end: i64,
        step: Option<i64>,
        expect: Expect,
        results: Vec<(usize, String)>,
    },
    Bad {
        line: usize,
        msg: String,
    },
}

fn parse_script(src: &str) -> Vec<Cmd> {
    let lines: Vec<&str> = src.lines().collect();
    let mut cmds = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let raw = lines[i];
        let t = raw.trim();
        let lineno = i + 1;
        i += 1;
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        // The block: following non-blank lines.
        let mut block = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() {
            let l = lines[i].trim();
            if !l.starts_with('#') {
                if is_command(l) {
                    break;
                }
                block.push((i + 1, l.to_string()));
            }
            i += 1;
        }
        cmds.push(parse_cmd(lineno, t, block));
    }
    cmds
}

fn is_command(l: &str) -> bool {
    let w = l.split_whitespace().next().unwrap_or("");
    matches!(
        w,
        "load"
            | "load_with_nhcb"
            | "clear"
            | "eval"
            | "eval_fail"
            | "eval_ordered"
            | "eval_warn"
            | "eval_info"
    )
}

fn parse_cmd(line: usize, t: &str, block: Vec<(usize, String)>) -> Cmd {
    let mut words = t.split_whitespace();
    let cmd = words.next().unwrap_or("");
    match cmd {
        "clear" => Cmd::Clear,
        "load" | "load_with_nhcb" => match words.next().map(parse_duration_ms) {
            Some(Ok(interval)) => Cmd::Load {
                line,
                interval,
                series: block,
                nhcb: cmd == "load_with_nhcb",
            },
            _ => Cmd::Bad {
                line,
                msg: format!("invalid load command: {t}"),
            },
        },
        "eval" | "eval_fail" | "eval_ordered" | "eval_warn" | "eval_info" => {
            match parse_eval(line, cmd, t, block) {
                Ok(c) => c,
                Err(e) => Cmd::Bad {
                    line,
                    msg: e.to_string(),
                },
            }
        }
        _ => Cmd::Bad {
            line,
            msg: format!("unknown command: {t}"),
        },
    }
}

fn parse_eval(
    line: usize,
    cmd: &str,
    t: &str,
    block: Vec<(usize, String)>,
) -> Result<Cmd, ScriptError> {
    let rest = t[cmd.len()..].trim_start();
    let mut expect = Expect {
        fail: cmd == "eval_fail",
        ordered: cmd == "eval_ordered",
        annos: match cmd {
            "eval_warn" => vec![(AnnotationKind::Warning, None, None)],
            "eval_info" => vec![(AnnotationKind::Info, None, None)],
            _ => Vec::new(),
        },
        ..Default::default()
    };
    let (start, end, step, query) = if let Some(r) = rest.strip_prefix("instant") {
        let r = r
            .trim_start()
            .strip_prefix("at")
            .ok_or_else(|| ScriptError::BadCommand(t.into()))?
            .trim_start();
        let (at, q) = r
            .split_once(char::is_whitespace)
            .ok_or_else(|| ScriptError::BadCommand(t.into()))?;
        let at = parse_duration_ms(at)?;
        (at, at, None, q.trim().to_string())
    } else if let Some(r) = rest.strip_prefix("range") {
        let w: Vec<&str> = r.split_whitespace().collect();
        if w.len() < 7 || w[0] != "from" || w[2] != "to" || w[4] != "step" {
            return Err(ScriptError::BadCommand(t.into()));
        }
        let query = skip_words(r, 6).trim().to_string();
        (
            parse_duration_ms(w[1])?,
            parse_duration_ms(w[3])?,
            Some(parse_duration_ms(w[5])?),
            query,
        )
    } else {
        return Err(ScriptError::BadCommand(t.into()));
    };
    let mut results = Vec::new();
    for (ln, l) in block {
        if let Some(e) = l.strip_prefix("expect ") {
            let e = e.trim();
            let (kind, arg) = match e.split_once(char::is_whitespace) {
                Some((k, a)) => (k, Some(a.trim())),
                None => (e, None),
            };
            let parse_arg = |a: Option<&str>| -> (Option<String>, Option<String>) {
                match a {
                    Some(a) if a.starts_with("msg:") => {
                        (Some(unquote(a["msg:".len()..].trim())), None)
                    }
                    Some(a) if a.starts_with("regex:") => {
                        (None, Some(unquote(a["regex:".len()..].trim())))
                    }
                    _ => (None, None),
                }
            };
            match kind {
                "fail" => {
                    expect.fail = true;
                    let (m, r) = parse_arg(arg);
                    expect.fail_msg = m;
                    expect.fail_regex = r;
                }
                "ordered" => expect.ordered = true,
                "string" => expect.string = Some(unquote(arg.unwrap_or(""))),
                "range" => {
                    // `expect range vector from A to B step S`
                    let w: Vec<&str> = arg.unwrap_or("").split_whitespace().collect();
                    if w.len() != 7
                        || w[0] != "vector"
                        || w[1] != "from"
                        || w[3] != "to"
                        || w[5] != "step"
                    {
                        return Err(ScriptError::BadCommand(l.clone()));
                    }
                    expect.range_vector =
                        Some((parse_duration_ms(w[2])?, parse_duration_ms(w[6])?));
                }
                "warn" | "info" => {
                    let kind = if kind == "warn" {
                        AnnotationKind::Warning
                    } else {
                        AnnotationKind::Info
                    };
                    let (m, r) = parse_arg(arg);
                    expect.annos.push((kind, m, r));
                }
                "no_warn" => expect.no_warn = true,
                "no_info" => expect.no_info = true,
                other => return Err(ScriptError::BadCommand(format!("unknown expect {other}"))),
            }
        } else if let Some(m) = l.strip_prefix("expected_fail_message") {
            expect.fail_msg = Some(m.trim().to_string());
        } else if let Some(m) = l.strip_prefix("expected_fail_regexp") {
            expect.fail_regex = Some(m.trim().to_string());
        } else {
            results.push((ln, l));
        }
    }
    Ok(Cmd::Eval {
        line,
        query,
        start,
        end,
        step,
        expect,
        results,
    })
}

/// `s` after its first `n` whitespace-separated words.
fn skip_words(s: &str, n: usize) -> &str {
    let mut rest = s;
    for _ in 0..n {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        rest = &rest[end..];
    }
    rest
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('`') && s.ends_with('`')))
    {
        return s[1..s.len() - 1].to_string();
    }
    s.to_string()
}

/// Prometheus's float comparison in tests: equal, both NaN, or within a relative 1e-6.
pub fn almost_equal(a: f64, b: f64) -> bool {
    const EPS: f64 = 1e-6;
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a == b || (a.is_nan() && b.is_nan()) {
        return true;
    }
    let diff = (a - b).abs();
    let abs_sum = a.abs() + b.abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < EPS * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < EPS
}

struct Shown<'a>(&'a [GotSeries]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, (l, pts, hs)) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            let mut v: Vec<(i64, String)> =
                pts.iter().map(|(t, v)| (*t, format!("{v}@{t}"))).collect();
            v.extend(
                hs.iter()
                    .map(|(t, h)| (*t, format!("{}@{t}", h.test_expression()))),
            );
            v.sort_by_key(|p| p.0);
            let v: Vec<String> = v.into_iter().map(|p| p.1).collect();
            write!(f, "{l} {}", v.join(" "))?;
        }
        write!(f, "]")
    }
}

/// Runs a script; every `load` and `eval` is one statement.
pub fn run_script(src: &str) -> Report {
    let engine = Engine::default();
    let mut store = MemQueryable::new();
    let mut report = Report::default();
    for cmd in parse_script(src) {
        match cmd {
            Cmd::Clear => store.clear(),
            Cmd::Bad { line, msg } => report.failures.push(Failure { line, message: msg }),
            Cmd::Load {
                line,
                interval,
                series,
                nhcb,
            } => {
                let mut err = None;
                let mut loaded: Vec<(Labels, Vec<Point>)> = Vec::new();
                for (ln, l) in series {
                    let (desc, vals) = split_series_line(&l);
                    let toks = value_tokens(vals);
                    let res = parse_series(desc)
                        .and_then(|labels| expand_values(&toks).map(|p| (labels, p)));
                    match res {
                        Ok(lp) => loaded.push(lp),
                        Err(e) => err = Some(format!("line {ln}: {e}")),
                    }
                }
                if let Err(e) = load_series(&mut store, &loaded, interval, nhcb) {
                    err.get_or_insert(e);
                }
                match err {
                    None => report.passed += 1,
                    Some(message) => report.failures.push(Failure { line, message }),
                }
            }
            Cmd::Eval {
                line,
                query,
                start,
                end,
                step,
                expect,
                results,
            } => match run_eval(&engine, &store, &query, start, end, step, &expect, &results) {
                Ok(()) => report.passed += 1,
                Err(message) => report.failures.push(Failure {
                    line,
                    message: format!("{query}: {message}"),
                }),
            },
        }
    }
    report
}

/// Stores loaded series: point `i` at `i × interval`; floats and histograms go to their
/// lists with the counter reset hints Prometheus's TSDB would give back (see
/// [`tsdb_counter_reset_hints`]). With `nhcb`, classic `_bucket`/`_sum`/`_count` series are
/// also stored as custom-bucket histograms under their base name.
fn load_series(
    store: &mut MemQueryable,
    loaded: &[(Labels, Vec<Point>)],
    interval: i64,
    nhcb: bool,
) -> Result<(), String> {
    for (labels, points) in loaded {
        let mut floats = Vec::new();
        let mut hists = Vec::new();
        for (i, p) in points.iter().enumerate() {
            let t = i as i64 * interval;
            match p {
                Point::Value(f) => floats.push((t, *f)),
                Point::Histogram(h, _) => hists.push((t, h.clone())),
                Point::Omitted => {}
            }
        }
        tsdb_counter_reset_hints(&floats, &mut hists);
        store.add(labels.clone(), &floats);
        store.add_histograms(labels.clone(), &hists);
    }
    if nhcb {
        for (labels, hists) in classic_to_nhcb(loaded, interval)? {
            let mut hists: Vec<(i64, Arc<FloatHistogram>)> =
                hists.into_iter().map(|(t, h)| (t, Arc::new(h))).collect();
            tsdb_counter_reset_hints(&[], &mut hists);
            store.add_histograms(labels, &hists);
        }
    }
    Ok(())
}

/// Sets the counter reset hints a histogram series reads back with from Prometheus's TSDB:
/// the first histogram of a chunk reads "unknown", the later ones of a counter chunk "not a
/// counter reset", every histogram of a gauge chunk "gauge". A new chunk starts after a
/// float sample, on a switch between gauge and counter, on a counter reset (hinted or
/// detected), and on a schema or zero-threshold change.
pub fn tsdb_counter_reset_hints(floats: &[(i64, f64)], hists: &mut [(i64, Arc<FloatHistogram>)]) {
    let mut prev: Option<Arc<FloatHistogram>> = None;
    let mut fi = 0;
    for (t, h) in hists.iter_mut() {
        // A float sample between two histograms ends the chunk.
        while fi < floats.len() && floats[fi].0 < *t {
            prev = None;
            fi += 1;
        }
        let gauge = h.counter_reset_hint == CounterResetHint::Gauge;
        let continues = match &prev {
            None => false,
            Some(p) => {
                let p_gauge = p.counter_reset_hint == CounterResetHint::Gauge;
                let same_layout = p.schema == h.schema
                    && p.zero_threshold == h.zero_threshold
                    && (!h.uses_custom_buckets() || p.custom_values == h.custom_values);
                if gauge != p_gauge {
                    false
                } else if gauge {
                    same_layout
                } else {
                    same_layout
                        && h.counter_reset_hint != CounterResetHint::CounterReset
                        && !append_is_reset(h, p)
                }
            }
        };
        let hint = if gauge {
            CounterResetHint::Gauge
        } else if continues {
            CounterResetHint::NotCounterReset
        } else {
            CounterResetHint::Unknown
        };
        let stored = Arc::make_mut(h);
        stored.counter_reset_hint = hint;
        prev = Some(h.clone());
    }
}

/// The TSDB appender's reset check between consecutive counter histograms of one layout: a
/// smaller count or zero count, or a bucket that shrank or vanished.
fn append_is_reset(h: &FloatHistogram, prev: &FloatHistogram) -> bool {
    if h.count < prev.count || h.zero_count < prev.zero_count {
        return true;
    }
    let mut probe = h.clone();
    probe.counter_reset_hint = CounterResetHint::Unknown;
    probe.detect_reset(prev)
}

/// One classic histogram at one timestamp, collected from its `_bucket`, `_sum` and `_count`
/// samples.
#[derive(Default)]
struct ClassicAt {
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: f64,
    err: Option<String>,
}

impl ClassicAt {
    fn set_bucket(&mut self, le: f64, count: f64) {
        if self.err.is_some() {
            return;
        }
        if count < 0.0 {
            self.err = Some(format!(
                "bucket count must be non-negative: le={le}, count={count}"
            ));
            return;
        }
        match self.buckets.iter().position(|b| b.0 >= le) {
            Some(i) if self.buckets[i].0 == le => {}
            Some(i) => self.buckets.insert(i, (le, count)),
            None => self.buckets.push((le, count)),
        }
    }

    /// The custom-bucket histogram, as Prometheus's converter builds it.
    fn convert(mut self) -> Result<FloatHistogram, String> {
        if let Some(e) = self.err {
            return Err(e);
        }
        for w in self.buckets.windows(2) {
            if w[1].1 < w[0].1 {
                return Err(format!("count is not cumulative: {} < {}", w[1].1, w[0].1));
            }
        }
        let count = match (self.count, self.buckets.last()) {
            (Some(c), _) => c,
            (None, Some(b)) => b.1,
            (None, None) => 0.0,
        };
        if self.buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
            self.buckets.push((f64::INFINITY, count));
        }
        let mut h = FloatHistogram {
            schema: crate::histogram::CUSTOM_BUCKETS_SCHEMA,
            count,
            sum: self.sum,
            ..Default::default()
        };
        let mut prev = 0.0;
        let mut pairs = Vec::new();
        for (i, (le, c)) in self.buckets.iter().enumerate() {
            pairs.push((i as i32, c - prev));
            prev = *c;
            if *le != f64::INFINITY {
                h.custom_values.push(*le);
            }
        }
        let last = self.buckets.last().map(|b| b.1).unwrap_or(0.0);
        if count != last {
            return Err(format!(
                "count mismatch: count={count} != le=+Inf count={last}"
            ));
        }
        let n = u32::try_from(pairs.len()).map_err(|_| "too many buckets".to_string())?;
        h.positive_spans = vec![Span {
            offset: 0,
            length: n,
        }];
        h.positive_buckets = pairs.into_iter().map(|p| p.1).collect();
        h.compact(0);
        Ok(h)
    }
}

/// A converted series: base labels and its custom-bucket histograms.
type NhcbSeries = (Labels, Vec<(i64, FloatHistogram)>);

/// `load_with_nhcb`: groups the float samples of `X_bucket{le=…}`, `X_sum` and `X_count`
/// series by base labels (`__name__` X, no `le`) and timestamp, and converts each group to a
/// custom-bucket histogram.
fn classic_to_nhcb(
    loaded: &[(Labels, Vec<Point>)],
    interval: i64,
) -> Result<Vec<NhcbSeries>, String> {
    type Group = (Labels, std::collections::BTreeMap<i64, ClassicAt>);
    let mut groups: Vec<Group> = Vec::new();
    for (labels, points) in loaded {
        let name = labels.get("__name__").unwrap_or("");
        let (kind, base) = if let Some(b) = name.strip_suffix("_bucket") {
            (0, b)
        } else if let Some(b) = name.strip_suffix("_sum") {
            (1, b)
        } else if let Some(b) = name.strip_suffix("_count") {
            (2, b)
        } else {
            continue;
        };
        let le = if kind == 0 {
            let Some(le) = labels.get("le") else {
                return Err(format!("expected bucket label in metric {labels}"));
            };
            match parse_float(le) {
                Some(v) if !v.is_nan() => Some(v),
                _ => continue,
            }
        } else {
            None
        };
        let mut base_labels = labels.clone();
        base_labels.set("__name__", base);
        base_labels.remove("le");
        let gi = match groups.iter().position(|g| g.0 == base_labels) {
            Some(i) => i,
            None => {
                groups.push((base_labels, Default::default()));
                groups.len() - 1
            }
        };
        for (i, p) in points.iter().enumerate() {
            let Point::Value(f) = p else { continue };
            let at = groups[gi].1.entry(i as i64 * interval).or_default();
            match (kind, le) {
                (0, Some(le)) => at.set_bucket(le, *f),
                (1, _) => at.sum = *f,
                _ => {
                    if *f < 0.0 {
                        at.err
                            .get_or_insert(format!("count must be non-negative: count={f}"));
                    } else {
                        at.count = Some(*f);
                    }
                }
            }
        }
    }
    groups
        .into_iter()
        .map(|(labels, by_t)| {
            let hists = by_t
                .into_iter()
                .map(|(t, c)| c.convert().map(|h| (t, h)))
                .collect::<Result<Vec<_>, String>>()?;
            Ok((labels, hists))
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn run_eval(
    engine: &Engine,
    store: &MemQueryable,
    query: &str,
    start: i64,
    end: i64,
    step: Option<i64>,
    expect: &Expect,
    results: &[(usize, String)],
) -> Result<(), String> {
    let res = futures::executor::block_on(async {
        match step {
            None => engine.instant_query(store, query, start).await,
            Some(s) => engine.range_query(store, query, start, end, s).await,
        }
    });
    let got = match res {
        Err(e) => {
            if !expect.fail {
                return Err(format!("expected success, got error: {e}"));
            }
            // An unimplemented feature is not the failure the script expects.
            if matches!(e, crate::EngineError::Unsupported(_)) {
                return Err(format!("expected a query error, got {e}"));
            }
            let msg = e.to_string();
            if let Some(m) = expect.fail_msg.as_ref().filter(|m| **m != msg) {
                return Err(format!("expected error {m:?}, got {msg:?}"));
            }
            if let Some(r) = &expect.fail_regex {
                let re = regex::Regex::new(r).map_err(|e| format!("bad regex in test: {e}"))?;
                if !re.is_match(&msg) {
                    return Err(format!("expected error matching {r:?}, got {msg:?}"));
                }
            }
            return Ok(());
        }
        Ok(v) => v,
    };
    if expect.fail {
        return Err("expected error, got success".into());
    }
    check_annotations(expect, &got.annotations)?;
    let got = got.value;
    // Expected: scalar / string / series lines.
    match got {
        QueryValue::Scalar(_, f) => {
            let [(_, l)] = results else {
                return Err(format!("expected {} lines, got scalar {f}", results.len()));
            };
            let want =
                parse_float(l.trim()).ok_or_else(|| format!("expected {l}, got scalar {f}"))?;
            if !almost_equal(want, f) {
                return Err(format!("expected scalar {want}, got {f}"));
            }
            Ok(())
        }
        QueryValue::String(s) => match &expect.string {
            Some(want) if *want == s && results.is_empty() => Ok(()),
            _ => Err(format!("expected {:?}, got string {s:?}", expect.string)),
        },
        QueryValue::Vector(v) => {
            let got: Vec<GotSeries> = v
                .into_iter()
                .map(|s| match s.h {
                    Some(h) => (s.labels, Vec::new(), vec![(s.t, h)]),
                    None => (s.labels, vec![(s.t, s.f)], Vec::new()),
                })
                .collect();
            compare(got, results, start, 0, expect.ordered)
        }
        QueryValue::Matrix(m) => {
            let got: Vec<GotSeries> = m
                .into_iter()
                .map(
                    |RangeSeries {
                         labels,
                         points,
                         histograms,
                     }| (labels, points, histograms),
                )
                .collect();
            match (step, expect.range_vector) {
                (Some(step), _) => compare(got, results, start, step, expect.ordered),
                (None, Some((from, step))) => compare(got, results, from, step, expect.ordered),
                (None, None) => Err(
                    "instant query returned a range vector; expected `expect range vector`".into(),
                ),
            }
        }
    }
}

/// A result series: labels, float points, histogram points.
type GotSeries = (Labels, Vec<(i64, f64)>, Vec<(i64, Arc<FloatHistogram>)>);

/// Every `expect warn/info` line must match an annotation of its kind; when a kind has expect
/// lines, every annotation of that kind must match one; `no_warn`/`no_info` forbid the kind.
fn check_annotations(expect: &Expect, got: &[Annotation]) -> Result<(), String> {
    let matches =
        |m: &Option<String>, r: &Option<String>, a: &Annotation| -> Result<bool, String> {
            if let Some(m) = m {
                return Ok(a.message == *m);
            }
            if let Some(r) = r {
                let re = regex::Regex::new(r).map_err(|e| format!("bad regex in test: {e}"))?;
                return Ok(re.is_match(&a.message));
            }
            Ok(true)
        };
    for kind in [AnnotationKind::Warning, AnnotationKind::Info] {
        let of_kind: Vec<&Annotation> = got.iter().filter(|a| a.kind == kind).collect();
        let lines: Vec<_> = expect.annos.iter().filter(|e| e.0 == kind).collect();
        let forbidden = match kind {
            AnnotationKind::Warning => expect.no_warn,
            AnnotationKind::Info => expect.no_info,
        };
        if forbidden && !of_kind.is_empty() {
            return Err(format!("expected no {kind:?} annotations, got {of_kind:?}"));
        }
        for (_, m, r) in &lines {
            let mut hit = false;
            for a in &of_kind {
                hit |= matches(m, r, a)?;
            }
            if !hit {
                return Err(format!(
                    "expected a {kind:?} annotation matching {m:?}{r:?}, got {of_kind:?}"
                ));
            }
        }
        if !lines.is_empty() {
            for a in &of_kind {
                let mut hit = false;
                for (_, m, r) in &lines {
                    hit |= matches(m, r, a)?;
                }
                if !hit {
                    return Err(format!("unexpected {kind:?} annotation {:?}", a.message));
                }
            }
        }
    }
    Ok(())
}

fn compare(
    got: Vec<GotSeries>,
    results: &[(usize, String)],
    start: i64,
    step: i64,
    ordered: bool,
) -> Result<(), String> {
    let mut want: Vec<(Labels, Vec<Point>)> = Vec::new();
    for (_, l) in results {
        let (desc, vals) = split_series_line(l);
        let labels = parse_series(desc).map_err(|e| e.to_string())?;
        let toks = value_tokens(vals);
        want.push((labels, expand_values(&toks).map_err(|e| e.to_string())?));
    }
    let mismatch = || format!("expected {} got {}", show_want(&want), Shown(&got));
    if want.len() != got.len() {
        return Err(mismatch());
    }
    for (wi, (wl, wp)) in want.iter().enumerate() {
        let Some(gi) = got.iter().position(|(gl, _, _)| gl == wl) else {
            return Err(mismatch());
        };
        if ordered && gi != wi {
            return Err(format!("ordering: {}", mismatch()));
        }
        let (_, gp, gh) = &got[gi];
        let mut wpts: Vec<(i64, f64)> = Vec::new();
        let mut whs: Vec<(i64, &FloatHistogram, bool)> = Vec::new();
        for (i, p) in wp.iter().enumerate() {
            let t = start + i as i64 * step;
            match p {
                Point::Value(f) => wpts.push((t, *f)),
                Point::Histogram(h, hint_set) => whs.push((t, h, *hint_set)),
                Point::Omitted => {}
            }
        }
        if wpts.len() != gp.len() || whs.len() != gh.len() {
            return Err(mismatch());
        }
        for (a, b) in wpts.iter().zip(gp) {
            if a.0 != b.0 || !almost_equal(a.1, b.1) {
                return Err(mismatch());
            }
        }
        for ((t, w, hint_set), (gt, g)) in whs.iter().zip(gh) {
            if t != gt || !histogram_matches(w, g, *hint_set) {
                return Err(mismatch());
            }
        }
    }
    Ok(())
}

/// Prometheus's test comparison of histograms: both compacted (empty buckets dropped), the
/// same schema, zero threshold and custom bounds, the same bucket indexes, counts and sum
/// within the float tolerance; the hint only when the expectation wrote it.
pub fn histogram_matches(want: &FloatHistogram, got: &FloatHistogram, hint_set: bool) -> bool {
    let (mut w, mut g) = (want.clone(), got.clone());
    w.compact(0);
    g.compact(0);
    let buckets_match = |a: Vec<(i32, f64)>, b: Vec<(i32, f64)>| {
        a.len() == b.len()
            && a.iter()
                .zip(&b)
                .all(|(x, y)| x.0 == y.0 && almost_equal(x.1, y.1))
    };
    w.schema == g.schema
        && almost_equal(w.count, g.count)
        && almost_equal(w.sum, g.sum)
        && (!w.uses_custom_buckets() || w.custom_values == g.custom_values)
        && w.zero_threshold == g.zero_threshold
        && almost_equal(w.zero_count, g.zero_count)
        && buckets_match(
            w.negative_indexed().collect(),
            g.negative_indexed().collect(),
        )
        && buckets_match(
            w.positive_indexed().collect(),
            g.positive_indexed().collect(),
        )
        && (!hint_set || w.counter_reset_hint == g.counter_reset_hint)
}

fn show_want(w: &[(Labels, Vec<Point>)]) -> String {
    let parts: Vec<String> = w
        .iter()
        .map(|(l, p)| {
            let v: Vec<String> = p
                .iter()
                .map(|x| match x {
                    Point::Omitted => "_".into(),
                    Point::Histogram(h, _) => h.test_expression(),
                    Point::Value(f) => format!("{f}"),
                })
                .collect();
            format!("{l} {}", v.join(" "))
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_notation_expands() {
        let got = expand_values(&[
            "1", "2+3x2", "_", "_x2", "5-1x1", "stale", "Inf", "NaN", "7x2",
        ])
        .expect("valid notation");
        let v = |f| Point::Value(f);
        assert_eq!(got.len(), 15);
        assert_eq!(
            &got[..6],
            &[
                v(1.0),
                v(2.0),
                v(5.0),
                v(8.0),
                Point::Omitted,
                Point::Omitted
            ]
        );
        assert_eq!(&got[6..9], &[Point::Omitted, v(5.0), v(4.0)]);
        assert!(matches!(got[9], Point::Value(f) if f.to_bits() == STALE_NAN_BITS));
        assert_eq!(got[10], v(f64::INFINITY));
        assert!(matches!(got[11], Point::Value(f) if f.is_nan() && f.to_bits() != STALE_NAN_BITS));
        assert_eq!(&got[12..], &[v(7.0), v(7.0), v(7.0)]);
        assert!(expand_values(&["1+x"]).is_err());
        assert!(expand_values(&["1x99999999999"]).is_err());
        let h = expand_values(&["{{schema:0}}x2"]).expect("histogram repeat");
        assert_eq!(h.len(), 3);
        assert!(
            h.iter()
                .all(|p| matches!(p, Point::Histogram(h, false) if h.schema == 0))
        );
        assert_eq!(
            value_tokens("{{sum:6 count:6}}+{{sum:3 count:3}}x5 7"),
            vec!["{{sum:6 count:6}}+{{sum:3 count:3}}x5", "7"]
        );
        assert_eq!(
            value_tokens("1 {{schema:0 sum:1}} 2"),
            vec!["1", "{{schema:0 sum:1}}", "2"]
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_ms("0"), Ok(0));
        assert_eq!(parse_duration_ms("0m"), Ok(0));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("-10s"), Ok(-10_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert!(parse_duration_ms("10").is_err());
        assert!(parse_duration_ms("5x").is_err());
    }

    /// A small script over what this slice implements; every statement must pass, and the
    /// deliberately wrong ones at the end must fail.
    const SCRIPT: &str = r#"
load 1m
    http_requests{job="api", instance="0"} 0+10x10
    http_requests{job="api", instance="1"} 0+20x10
    http_requests{job="db", instance="0"}  5 _ stale 7
    up{job="api"} 1x10

# lookback, staleness, offset, @
eval instant at 10m http_requests{job="api"}
    http_requests{job="api", instance="0"} 100
    http_requests{job="api", instance="1"} 200

eval instant at 2m http_requests{job="db"}

eval instant at 1m http_requests{job="db"}
    http_requests{job="db", instance="0"} 5

eval instant at 10m http_requests{instance="1"} offset 5m
    http_requests{job="api", instance="1"} 100

eval instant at 10m http_requests{instance="1"} @ 120
    http_requests{job="api", instance="1"} 40

eval range from 0 to 4m step 1m http_requests{job="db"}
    http_requests{job="db", instance="0"} 5 5 _ 7 7

# range functions (left-open windows)
eval instant at 10m rate(http_requests{job="api"}[5m])
    {job="api", instance="0"} 0.16666666666666666
    {job="api", instance="1"} 0.3333333333333333

eval instant at 10m count_over_time(http_requests{instance="0", job="api"}[2m])
    {job="api", instance="0"} 2

eval instant at 10m last_over_time(http_requests{instance="0", job="api"}[2m])
    http_requests{job="api", instance="0"} 100

# aggregation, binary operators, matching
eval instant at 10m sum by (job) (http_requests)
    {job="api"} 300

eval instant at 10m http_requests{job="api"} / ignoring(instance) group_left up
    {job="api", instance="0"} 100
    {job="api", instance="1"} 200

eval instant at 10m http_requests > bool 100
    {job="api", instance="0"} 0
    {job="api", instance="1"} 1

eval instant at 4m http_requests{job="api"} unless on(instance) http_requests{job="db"}
    http_requests{job="api", instance="1"} 80

eval instant at 10m topk(1, http_requests)
    expect ordered
    http_requests{job="api", instance="1"} 200

eval instant at 10m scalar(up) * 2
    2

eval range from 0 to 2m step 1m time()
    {} 0 60 120

eval instant at 10m label_replace(up, "dst", "x-$1", "job", "(.*)")
    up{job="api", dst="x-api"} 1

eval instant at 10m absent(nonexistent{job="x"})
    {job="x"} 1

eval instant at 1m "hello"
    expect string "hello"

eval instant at 1m http_requests{job="api"} + on() up
    expect fail regex: many-to-one matching must be explicit

eval instant at 10m quantile(2, up)
    expect warn msg: PromQL warning: quantile value should be between 0 and 1, got 2 (1:10)
    expect no_info
    {} +Inf

eval instant at 10m rate(up[5m])
    expect info msg: PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: "up" (1:6)
    expect no_warn
    {job="api"} 0

# wrong on purpose: these three must be reported as failures
eval instant at 10m up
    up{job="api"} 2

eval instant at 10m up
    expect fail

eval instant at 10m nonexistent_function(up)
    {} 1
"#;

    #[test]
    fn inline_script_runs() {
        let report = run_script(SCRIPT);
        let lines: Vec<usize> = report.failures.iter().map(|f| f.line).collect();
        assert_eq!(report.failed(), 3, "{}", report.render("inline"));
        assert_eq!(report.passed, 23, "{}", report.render("inline"));
        let text: Vec<&str> = SCRIPT.lines().collect();
        for l in lines {
            assert!(text[l - 1].starts_with("eval instant at 10m"), "line {l}");
        }
        let out = report.render("inline");
        assert!(out.ends_with("23 passed, 3 failed\n"), "{out}");
        assert!(
            out.contains("expected [up{job=\"api\"} 2] got [up{job=\"api\"} 1@600000]"),
            "{out}"
        );
    }

    fn load(src: &str) -> MemQueryable {
        let mut store = MemQueryable::new();
        for cmd in parse_script(src) {
            match cmd {
                Cmd::Load {
                    interval,
                    series,
                    nhcb,
                    ..
                } => {
                    let loaded: Vec<(Labels, Vec<Point>)> = series
                        .iter()
                        .map(|(_, l)| {
                            let (d, v) = split_series_line(l);
                            (
                                parse_series(d).expect("series"),
                                expand_values(&value_tokens(v)).expect("values"),
                            )
                        })
                        .collect();
                    load_series(&mut store, &loaded, interval, nhcb).expect("load");
                }
                _ => panic!("only load commands here"),
            }
        }
        store
    }

    fn select(store: &MemQueryable, name: &str) -> Vec<crate::value::Series> {
        use crate::queryable::Queryable;
        let m = promql_parser::label::Matcher::new(MatchOp::Equal, "__name__", name);
        futures::executor::block_on(store.select(&[m], 0, i64::MAX)).expect("select")
    }

    #[test]
    fn histogram_notation_parses() {
        let (h, hint) = parse_histogram(
            "schema:1 sum:-0.3 count:3.1 z_bucket:7.1 z_bucket_w:0.05 buckets:[5.1 10 7] \
             offset:-3 n_buckets:[4.1 5] n_offset:-5 counter_reset_hint:gauge",
        )
        .expect("valid");
        assert!(hint);
        assert_eq!((h.schema, h.sum, h.count), (1, -0.3, 3.1));
        assert_eq!((h.zero_count, h.zero_threshold), (7.1, 0.05));
        assert_eq!(
            h.positive_spans,
            vec![Span {
                offset: -3,
                length: 3
            }]
        );
        assert_eq!(h.positive_buckets, vec![5.1, 10.0, 7.0]);
        assert_eq!(
            h.negative_spans,
            vec![Span {
                offset: -5,
                length: 2
            }]
        );
        assert_eq!(h.negative_buckets, vec![4.1, 5.0]);
        assert_eq!(h.counter_reset_hint, CounterResetHint::Gauge);
        let (c, hint) =
            parse_histogram("schema:-53 custom_values:[1 2.5] buckets:[1 Inf]").expect("valid");
        assert!(!hint);
        assert_eq!(c.custom_values, vec![1.0, 2.5]);
        assert_eq!(c.positive_buckets, vec![1.0, f64::INFINITY]);
        assert_eq!(
            parse_histogram("").expect("empty").0,
            FloatHistogram::default()
        );
        for bad in [
            "sum:1 sum:2",
            "bogus:1",
            "schema:x",
            "buckets:[1 2",
            "counter_reset_hint:maybe",
            "sum",
        ] {
            assert!(parse_histogram(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn histogram_sequences_expand() {
        let pts = expand_values(&[
            "{{sum:6 count:6 buckets:[1 2]}}+{{sum:3 count:3 buckets:[1 1] counter_reset_hint:gauge}}x2",
            "_",
            "stale",
            "{{schema:1 count:9 buckets:[9]}}-{{schema:1 count:1 buckets:[1]}}x1",
            "7",
        ])
        .expect("valid");
        assert_eq!(pts.len(), 8);
        let hist = |p: &Point| match p {
            Point::Histogram(h, set) => ((**h).clone(), *set),
            other => panic!("not a histogram: {other:?}"),
        };
        let (h0, set0) = hist(&pts[0]);
        let (h2, set2) = hist(&pts[2]);
        // The increment's hint makes the sum a gauge, and its "hint written" flag covers the
        // whole sequence.
        assert!(set0 && set2);
        assert_eq!(
            (h0.count, h0.counter_reset_hint),
            (6.0, CounterResetHint::Unknown)
        );
        assert_eq!((h2.count, h2.sum), (12.0, 12.0));
        assert_eq!(h2.positive_buckets, vec![3.0, 4.0]);
        assert_eq!(h2.counter_reset_hint, CounterResetHint::Gauge);
        assert_eq!(pts[3], Point::Omitted);
        assert!(matches!(pts[4], Point::Value(f) if f.to_bits() == STALE_NAN_BITS));
        let (h6, _) = hist(&pts[6]);
        assert_eq!((h6.count, h6.positive_buckets.clone()), (8.0, vec![8.0]));
        assert_eq!(pts[7], Point::Value(7.0));
        // Prometheus refuses to add an increment of a lower schema than the running value.
        assert!(expand_values(&["{{schema:1 count:1}}+{{schema:0 count:1}}x1"]).is_err());
        assert!(expand_values(&["{{count:1}}+{{count:1}}"]).is_err());
        assert!(expand_values(&["{{count:1}}x99999999999"]).is_err());
    }

    #[test]
    fn loads_carry_tsdb_counter_reset_hints() {
        let store = load(
            r#"
load 1m
  g {{sum:4 count:4 counter_reset_hint:gauge buckets:[1 2 1]}}+{{sum:2 count:3 counter_reset_hint:gauge buckets:[1 1 1]}}x2
  c {{count:5 buckets:[2 2 1]}}+{{count:3 buckets:[1 1 1]}}x2 {{count:1 buckets:[1]}} {{count:2 buckets:[2]}} 5 {{count:3 buckets:[3]}} {{schema:1 count:4 buckets:[4]}} {{schema:1 count:5 buckets:[5] counter_reset_hint:reset}}
"#,
        );
        let g = select(&store, "g");
        assert!(
            g[0].histograms
                .iter()
                .all(|(_, h)| h.counter_reset_hint == CounterResetHint::Gauge)
        );
        let c = select(&store, "c");
        use CounterResetHint::{NotCounterReset as N, Unknown as U};
        let hints: Vec<(i64, CounterResetHint)> = c[0]
            .histograms
            .iter()
            .map(|(t, h)| (t / 60_000, h.counter_reset_hint))
            .collect();
        // 3m: a reset starts a chunk; 5m: a float sample in between; 7m: a schema change;
        // 8m: an explicit reset hint.
        assert_eq!(
            hints,
            vec![
                (0, U),
                (1, N),
                (2, N),
                (3, U),
                (4, N),
                (6, U),
                (7, U),
                (8, U)
            ]
        );
        assert_eq!(c[0].samples, vec![(300_000, 5.0)]);
    }

    #[test]
    fn load_with_nhcb_builds_custom_bucket_histograms() {
        let store = load(
            r#"
load_with_nhcb 5m
  req_bucket{le="0.1", job="a"} 1 2 _
  req_bucket{le="1", job="a"} 3 5 6
  req_bucket{le="+Inf", job="a"} 4 7 9
  req_sum{job="a"} 2 4 8
  req_count{job="a"} 4 7 9
"#,
        );
        let h = select(&store, "req");
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].labels.get("job"), Some("a"));
        assert_eq!(h[0].labels.get("le"), None);
        let at = |i: usize| (*h[0].histograms[i].1).clone();
        let h0 = at(0);
        assert_eq!(h0.schema, crate::histogram::CUSTOM_BUCKETS_SCHEMA);
        assert_eq!(h0.custom_values, vec![0.1, 1.0]);
        assert_eq!(
            h0.positive_indexed().collect::<Vec<_>>(),
            vec![(0, 1.0), (1, 2.0), (2, 1.0)]
        );
        assert_eq!((h0.count, h0.sum), (4.0, 2.0));
        let h1 = at(1);
        assert_eq!(h1.counter_reset_hint, CounterResetHint::NotCounterReset);
        // At 10m the 0.1 bucket is missing: its series had no sample.
        let h2 = at(2);
        assert_eq!(h2.custom_values, vec![1.0]);
        assert_eq!(
            h2.positive_indexed().collect::<Vec<_>>(),
            vec![(0, 6.0), (1, 3.0)]
        );
        // The classic series stay as floats.
        assert_eq!(select(&store, "req_count")[0].samples.len(), 3);
        // Non-cumulative buckets fail the load.
        let mut bad = MemQueryable::new();
        let loaded = vec![
            (
                parse_series(r#"x_bucket{le="1"}"#).expect("series"),
                vec![Point::Value(5.0)],
            ),
            (
                parse_series(r#"x_bucket{le="2"}"#).expect("series"),
                vec![Point::Value(3.0)],
            ),
        ];
        assert!(load_series(&mut bad, &loaded, 1000, true).is_err());
    }

    #[test]
    fn histogram_results_compare_like_prometheus() {
        let (want, set) =
            parse_histogram("count:4 sum:5 buckets:[1 0 3] counter_reset_hint:gauge").expect("ok");
        let (mut got, _) =
            parse_histogram("count:4.000000001 sum:5 buckets:[1] offset:0").expect("ok");
        got.positive_spans.push(Span {
            offset: 1,
            length: 1,
        });
        got.positive_buckets.push(3.0);
        assert!(
            !histogram_matches(&want, &got, set),
            "hint written and different"
        );
        got.counter_reset_hint = CounterResetHint::Gauge;
        assert!(histogram_matches(&want, &got, set));
        assert!(histogram_matches(
            &want,
            &{
                let mut g = got.clone();
                g.counter_reset_hint = CounterResetHint::Unknown;
                g
            },
            false
        ));
        got.zero_threshold = 0.001;
        assert!(!histogram_matches(&want, &got, set));
        let results = vec![(1, "m {{count:4 sum:5 buckets:[1 0 3]}} 7".to_string())];
        let l = parse_series("m").expect("labels");
        let mut h = want.clone();
        h.counter_reset_hint = CounterResetHint::NotCounterReset;
        let got = vec![(l.clone(), vec![(60_000, 7.0)], vec![(0, Arc::new(h))])];
        assert_eq!(compare(got.clone(), &results, 0, 60_000, false), Ok(()));
        let late = vec![(
            l,
            vec![(60_000, 7.0)],
            vec![(60_000, got[0].2[0].1.clone())],
        )];
        assert!(compare(late, &results, 0, 60_000, false).is_err());
    }
}
