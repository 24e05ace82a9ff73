//! Prometheus's PromQL test-script language: parse a script, run it against the engine over an
//! in-memory store, and report pass/fail per statement (`load` and `eval` commands).

use std::fmt;

use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;

use crate::engine::{Annotation, AnnotationKind, Engine, QueryValue, RangeSeries};
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

/// A value in the series notation: a float, a staleness marker, or nothing (`_`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Point {
    /// No sample at this step.
    Omitted,
    /// A float sample (a staleness marker is the stale NaN).
    Value(f64),
    /// A native histogram sample, which this slice cannot represent.
    Histogram,
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

/// Expands the series notation (`1 2+3x4 _ _x2 stale Inf -1-1x3`) to points.
pub fn expand_values<S: AsRef<str>>(tokens: &[S]) -> Result<Vec<Point>, ScriptError> {
    const MAX_POINTS: u64 = 1_000_000;
    let mut out = Vec::new();
    for tok in tokens {
        let tok = tok.as_ref();
        if tok.starts_with("{{") {
            // `{{…}}` or `{{…}}xN`: one histogram, or N+1 of them.
            let n = match tok.rsplit_once("}}x") {
                Some((_, n)) => n
                    .parse::<u64>()
                    .map_err(|_| ScriptError::BadValue(tok.into()))?,
                None => 0,
            };
            if n > MAX_POINTS {
                return Err(ScriptError::BadValue(tok.into()));
            }
            out.extend(std::iter::repeat_n(Point::Histogram, n as usize + 1));
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

struct Shown<'a>(&'a [(Labels, Vec<(i64, f64)>)]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, (l, pts)) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            let v: Vec<String> = pts.iter().map(|(t, v)| format!("{v}@{t}")).collect();
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
                for (ln, l) in series {
                    let (desc, vals) = split_series_line(&l);
                    let toks = value_tokens(vals);
                    let res = parse_series(desc)
                        .and_then(|labels| expand_values(&toks).map(|p| (labels, p)));
                    match res {
                        Ok((labels, points)) => {
                            if points.contains(&Point::Histogram) {
                                err = Some(format!(
                                    "line {ln}: unsupported: native histogram samples (the float samples were loaded)"
                                ));
                            }
                            let samples: Vec<(i64, f64)> = points
                                .iter()
                                .enumerate()
                                .filter_map(|(i, p)| match p {
                                    Point::Value(f) => Some((i as i64 * interval, *f)),
                                    Point::Omitted | Point::Histogram => None,
                                })
                                .collect();
                            store.add(labels, &samples);
                        }
                        Err(e) => err = Some(format!("line {ln}: {e}")),
                    }
                }
                if nhcb && err.is_none() {
                    err = Some(
                        "unsupported: load_with_nhcb (native histograms with custom buckets)"
                            .into(),
                    );
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
            let got: Vec<(Labels, Vec<(i64, f64)>)> = v
                .into_iter()
                .map(|s| (s.labels, vec![(s.t, s.f)]))
                .collect();
            compare(got, results, start, 0, expect.ordered)
        }
        QueryValue::Matrix(m) => {
            let got: Vec<(Labels, Vec<(i64, f64)>)> = m
                .into_iter()
                .map(|RangeSeries { labels, points, .. }| (labels, points))
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
    got: Vec<(Labels, Vec<(i64, f64)>)>,
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
    if want.iter().any(|(_, p)| p.contains(&Point::Histogram)) {
        return Err("unsupported: native histogram samples in the expected result".into());
    }
    let mismatch = || format!("expected {} got {}", show_want(&want), Shown(&got));
    if want.len() != got.len() {
        return Err(mismatch());
    }
    for (wi, (wl, wp)) in want.iter().enumerate() {
        let Some(gi) = got.iter().position(|(gl, _)| gl == wl) else {
            return Err(mismatch());
        };
        if ordered && gi != wi {
            return Err(format!("ordering: {}", mismatch()));
        }
        let gp = &got[gi].1;
        let wpts: Vec<(i64, f64)> = wp
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Point::Value(f) => Some((start + i as i64 * step, *f)),
                Point::Omitted | Point::Histogram => None,
            })
            .collect();
        if wpts.len() != gp.len() {
            return Err(mismatch());
        }
        for (a, b) in wpts.iter().zip(gp) {
            if a.0 != b.0 || !almost_equal(a.1, b.1) {
                return Err(mismatch());
            }
        }
    }
    Ok(())
}

fn show_want(w: &[(Labels, Vec<Point>)]) -> String {
    let parts: Vec<String> = w
        .iter()
        .map(|(l, p)| {
            let v: Vec<String> = p
                .iter()
                .map(|x| match x {
                    Point::Omitted => "_".into(),
                    Point::Histogram => "{{…}}".into(),
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
        assert_eq!(
            expand_values(&["{{schema:0}}x2"]),
            Ok(vec![Point::Histogram; 3])
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
}
