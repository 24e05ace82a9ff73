//! A small expander for the Go-template subset alerting rules use in labels and annotations:
//! `{{ $labels.x }}`, `{{ $value }}`, `{{ $externalLabels.x }}`, `{{ .Labels.x }}`, pipelines
//! (`{{ $value | humanize }}`), `if`/`else`/`end`, comparisons and Prometheus's `humanize*`
//! functions. Parsing rejects what Go's parser rejects for these cases (unclosed actions,
//! undefined variables and functions, unbalanced `end`); a function Go knows but this expander
//! does not implement fails at expansion, and the text becomes Prometheus's
//! `<error expanding template: ...>`.

use std::collections::BTreeMap;

/// Functions Go's parser accepts in Prometheus templates (Go builtins and Prometheus's own).
const KNOWN_FUNCS: &[&str] = &[
    "and",
    "or",
    "not",
    "len",
    "index",
    "print",
    "printf",
    "println",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "html",
    "js",
    "urlquery",
    "call",
    "slice",
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "args",
    "reReplaceAll",
    "safeHtml",
    "match",
    "title",
    "toUpper",
    "toLower",
    "graphLink",
    "tableLink",
    "sortByLabel",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toTime",
    "toDuration",
    "pathPrefix",
    "externalURL",
    "parseDuration",
    "stripPort",
    "stripDomain",
    "now",
    "urlQueryEscape",
];

/// Variables every alert template has (Prometheus defines them before the text).
const KNOWN_VARS: &[&str] = &["$", "$labels", "$externalLabels", "$externalURL", "$value"];

/// The data an alert template is expanded with.
#[derive(Debug, Clone, Default)]
pub struct TemplateData {
    /// The alert's labels (`$labels`, `.Labels`).
    pub labels: BTreeMap<String, String>,
    /// The ruler's external labels (`$externalLabels`).
    pub external_labels: BTreeMap<String, String>,
    /// The ruler's external URL (`$externalURL`).
    pub external_url: String,
    /// The sample's value (`$value`, `.Value`).
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    /// `$name.f1.f2` (`$` alone is the data).
    Var(String, Vec<String>),
    /// `.f1.f2` (empty: the data itself).
    Field(Vec<String>),
    Str(String),
    Num(f64),
    Bool(bool),
    Func(String),
    Sub(Box<Pipeline>),
}

#[derive(Debug, Clone, PartialEq)]
struct Pipeline {
    decl: Option<String>,
    cmds: Vec<Vec<Operand>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    Unsupported(&'static str),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Val {
    Str(String),
    Num(f64),
    Bool(bool),
    Map(BTreeMap<String, String>),
    Data,
}

impl Val {
    fn truthy(&self) -> bool {
        match self {
            Val::Str(s) => !s.is_empty(),
            Val::Num(n) => *n != 0.0,
            Val::Bool(b) => *b,
            Val::Map(m) => !m.is_empty(),
            Val::Data => true,
        }
    }

    fn print(&self) -> String {
        match self {
            Val::Str(s) => s.clone(),
            Val::Num(n) => go_float(*n, None),
            Val::Bool(b) => b.to_string(),
            Val::Map(m) => {
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("map[{}]", parts.join(" "))
            }
            Val::Data => "{...}".into(),
        }
    }

    fn num(&self) -> Result<f64, String> {
        match self {
            Val::Num(n) => Ok(*n),
            Val::Str(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("can't convert {s:?} to float")),
            other => Err(format!("can't convert {} to float", other.print())),
        }
    }
}

/// Expands `text` with `data`; a parse or expansion error becomes Prometheus's error text.
pub fn expand(text: &str, data: &TemplateData) -> String {
    if !text.contains("{{") {
        return text.to_string();
    }
    match Template::parse(text).and_then(|t| t.execute(data)) {
        Ok(s) => s,
        Err(e) => format!("<error expanding template: {e}>"),
    }
}

impl Template {
    /// Parses a template; errors are worded like Go's parser's.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut trim_next = false;
        while !rest.is_empty() {
            match rest.find("{{") {
                None => {
                    let t = if trim_next { rest.trim_start() } else { rest };
                    pieces.push(Piece::Text(t.to_string()));
                    break;
                }
                Some(i) => {
                    let mut before = &rest[..i];
                    if trim_next {
                        before = before.trim_start();
                    }
                    let mut inner = &rest[i + 2..];
                    if inner.starts_with("- ")
                        || inner.starts_with("-\t")
                        || inner.starts_with("-\n")
                    {
                        before = before.trim_end();
                        inner = &inner[1..];
                    }
                    pieces.push(Piece::Text(before.to_string()));
                    let end = inner.find("}}").ok_or("unclosed action")?;
                    let mut action = &inner[..end];
                    trim_next = false;
                    if action.ends_with(" -") || action.ends_with("\t-") || action.ends_with("\n-")
                    {
                        action = &action[..action.len() - 1];
                        trim_next = true;
                    }
                    rest = &inner[end + 2..];
                    let a = action.trim();
                    if a.starts_with("/*") {
                        if !a.ends_with("*/") {
                            return Err("unclosed comment".into());
                        }
                        continue;
                    }
                    pieces.push(Piece::Action(a.to_string()));
                }
            }
        }
        let mut vars: Vec<String> = KNOWN_VARS.iter().map(|s| s.to_string()).collect();
        let mut it = pieces.into_iter().peekable();
        let (nodes, end) = parse_nodes(&mut it, &mut vars)?;
        match end {
            Stop::Eof => Ok(Template { nodes }),
            Stop::End => Err("unexpected {{end}}".into()),
            Stop::Else(_) => Err("unexpected {{else}}".into()),
        }
    }

    fn execute(&self, data: &TemplateData) -> Result<String, String> {
        let mut out = String::new();
        let mut scope: BTreeMap<String, Val> = BTreeMap::new();
        scope.insert("$labels".into(), Val::Map(data.labels.clone()));
        scope.insert(
            "$externalLabels".into(),
            Val::Map(data.external_labels.clone()),
        );
        scope.insert("$externalURL".into(), Val::Str(data.external_url.clone()));
        scope.insert("$value".into(), Val::Num(data.value));
        scope.insert("$".into(), Val::Data);
        exec_nodes(&self.nodes, data, &mut scope, &mut out)?;
        Ok(out)
    }
}

enum Piece {
    Text(String),
    Action(String),
}

enum Stop {
    Eof,
    End,
    Else(Option<String>),
}

fn parse_nodes(
    it: &mut std::iter::Peekable<std::vec::IntoIter<Piece>>,
    vars: &mut Vec<String>,
) -> Result<(Vec<Node>, Stop), String> {
    let mut nodes = Vec::new();
    while let Some(p) = it.next() {
        let a = match p {
            Piece::Text(t) => {
                if !t.is_empty() {
                    nodes.push(Node::Text(t));
                }
                continue;
            }
            Piece::Action(a) => a,
        };
        let (kw, rest) = match a.split_once(char::is_whitespace) {
            Some((k, r)) => (k, r.trim()),
            None => (a.as_str(), ""),
        };
        match kw {
            "end" => return Ok((nodes, Stop::End)),
            "else" => {
                return Ok((
                    nodes,
                    Stop::Else(Some(rest.to_string()).filter(|r| !r.is_empty())),
                ));
            }
            "if" | "with" | "range" => {
                if rest.is_empty() {
                    return Err(format!("missing value for {kw}"));
                }
                let cond = parse_pipeline(rest, vars)?;
                let (node, _) = parse_block(kw, cond, it, vars)?;
                nodes.push(node);
            }
            "define" | "template" | "block" | "break" | "continue" => {
                nodes.push(Node::Unsupported("define/template/block"));
                if kw == "define" || kw == "block" {
                    // Skip to the matching end.
                    let _ = parse_nodes(it, vars)?;
                }
            }
            _ => nodes.push(Node::Action(parse_pipeline(&a, vars)?)),
        }
    }
    Ok((nodes, Stop::Eof))
}

fn parse_block(
    kw: &str,
    cond: Pipeline,
    it: &mut std::iter::Peekable<std::vec::IntoIter<Piece>>,
    vars: &mut Vec<String>,
) -> Result<(Node, ()), String> {
    let (then, end) = parse_nodes(it, vars)?;
    let else_ = match end {
        Stop::Eof => return Err(format!("unexpected EOF in {kw}")),
        Stop::End => Vec::new(),
        Stop::Else(None) => {
            let (e, end2) = parse_nodes(it, vars)?;
            match end2 {
                Stop::End => e,
                Stop::Eof => return Err(format!("unexpected EOF in {kw}")),
                Stop::Else(_) => return Err("expected end; found {{else}}".into()),
            }
        }
        Stop::Else(Some(chained)) => {
            // `{{else if x}}` opens a nested if that shares this block's end.
            let (k2, r2) = match chained.split_once(char::is_whitespace) {
                Some((k, r)) => (k.to_string(), r.trim().to_string()),
                None => (chained.clone(), String::new()),
            };
            if k2 != "if" && k2 != "with" {
                return Err(format!("unexpected {chained:?} in else"));
            }
            let c2 = parse_pipeline(&r2, vars)?;
            let (n, ()) = parse_block(&k2, c2, it, vars)?;
            vec![n]
        }
    };
    let node = match kw {
        "if" => Node::If(cond, then, else_),
        "with" => Node::If(cond, then, else_),
        _ => Node::Unsupported("range"),
    };
    Ok((node, ()))
}

fn lex(s: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' {
            let mut t = String::from('"');
            i += 1;
            let mut closed = false;
            while i < chars.len() {
                t.push(chars[i]);
                if chars[i] == '\\' && i + 1 < chars.len() {
                    t.push(chars[i + 1]);
                    i += 2;
                    continue;
                }
                i += 1;
                if t.len() > 1 && t.ends_with('"') {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return Err("unterminated quoted string".into());
            }
            toks.push(t);
        } else if c == '`' {
            let mut t = String::from('`');
            i += 1;
            let mut closed = false;
            while i < chars.len() {
                t.push(chars[i]);
                i += 1;
                if t.ends_with('`') {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return Err("unterminated raw quoted string".into());
            }
            toks.push(t);
        } else if c == '|' || c == '(' || c == ')' {
            toks.push(c.to_string());
            i += 1;
        } else if c == ':' && chars.get(i + 1) == Some(&'=') {
            toks.push(":=".into());
            i += 2;
        } else {
            let mut t = String::new();
            while i < chars.len() {
                let c = chars[i];
                if c.is_whitespace() || c == '|' || c == '(' || c == ')' || c == '"' {
                    break;
                }
                if c == ':' && chars.get(i + 1) == Some(&'=') {
                    break;
                }
                t.push(c);
                i += 1;
            }
            toks.push(t);
        }
    }
    Ok(toks)
}

fn parse_pipeline(s: &str, vars: &mut Vec<String>) -> Result<Pipeline, String> {
    let toks = lex(s)?;
    let mut pos = 0;
    let p = parse_pipe_toks(&toks, &mut pos, vars)?;
    if pos != toks.len() {
        return Err(format!("unexpected {:?} in operand", toks[pos]));
    }
    Ok(p)
}

fn parse_pipe_toks(
    toks: &[String],
    pos: &mut usize,
    vars: &mut Vec<String>,
) -> Result<Pipeline, String> {
    let mut decl = None;
    if toks.len() > *pos + 1 && toks[*pos].starts_with('$') && toks[*pos + 1] == ":=" {
        decl = Some(toks[*pos].clone());
        *pos += 2;
    }
    let mut cmds = Vec::new();
    let mut cur = Vec::new();
    while *pos < toks.len() {
        let t = &toks[*pos];
        match t.as_str() {
            ")" => break,
            "|" => {
                if cur.is_empty() {
                    return Err("missing command".into());
                }
                cmds.push(std::mem::take(&mut cur));
                *pos += 1;
            }
            "(" => {
                *pos += 1;
                let sub = parse_pipe_toks(toks, pos, vars)?;
                if toks.get(*pos).map(String::as_str) != Some(")") {
                    return Err("unclosed left paren".into());
                }
                *pos += 1;
                cur.push(Operand::Sub(Box::new(sub)));
            }
            _ => {
                cur.push(parse_operand(t, vars)?);
                *pos += 1;
            }
        }
    }
    if cur.is_empty() {
        return Err("missing value for command".into());
    }
    cmds.push(cur);
    if let Some(d) = &decl {
        vars.push(d.clone());
    }
    Ok(Pipeline { decl, cmds })
}

fn parse_operand(t: &str, vars: &[String]) -> Result<Operand, String> {
    if let Some(body) = t.strip_prefix('"') {
        let lit = format!("\"{body}");
        return serde_json::from_str::<String>(&lit)
            .map(Operand::Str)
            .map_err(|_| format!("bad string literal {t}"));
    }
    if let Some(body) = t.strip_prefix('`') {
        return Ok(Operand::Str(body.trim_end_matches('`').to_string()));
    }
    if t.starts_with('$') {
        let mut parts = t.split('.');
        let name = parts.next().unwrap_or("$").to_string();
        if !vars.contains(&name) {
            return Err(format!("undefined variable {name:?}"));
        }
        return Ok(Operand::Var(name, parts.map(str::to_string).collect()));
    }
    if let Some(rest) = t.strip_prefix('.') {
        let fields = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('.').map(str::to_string).collect()
        };
        return Ok(Operand::Field(fields));
    }
    if t == "true" || t == "false" {
        return Ok(Operand::Bool(t == "true"));
    }
    if t.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') {
        return t
            .parse::<f64>()
            .map(Operand::Num)
            .map_err(|_| format!("bad number syntax: {t:?}"));
    }
    if t == "nil" {
        return Err("nil is not a command".into());
    }
    if KNOWN_FUNCS.contains(&t) {
        return Ok(Operand::Func(t.to_string()));
    }
    Err(format!("function {t:?} not defined"))
}

fn exec_nodes(
    nodes: &[Node],
    data: &TemplateData,
    scope: &mut BTreeMap<String, Val>,
    out: &mut String,
) -> Result<(), String> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = exec_pipeline(p, data, scope)?;
                if p.decl.is_none() {
                    out.push_str(&v.print());
                }
            }
            Node::If(c, then, else_) => {
                let v = exec_pipeline(c, data, scope)?;
                let branch = if v.truthy() { then } else { else_ };
                exec_nodes(branch, data, scope, out)?;
            }
            Node::Unsupported(what) => {
                return Err(format!("{what} is not supported by the strata ruler"));
            }
        }
    }
    Ok(())
}

fn exec_pipeline(
    p: &Pipeline,
    data: &TemplateData,
    scope: &mut BTreeMap<String, Val>,
) -> Result<Val, String> {
    let mut prev: Option<Val> = None;
    for cmd in &p.cmds {
        prev = Some(exec_cmd(cmd, prev, data, scope)?);
    }
    let v = prev.unwrap_or(Val::Str(String::new()));
    if let Some(d) = &p.decl {
        scope.insert(d.clone(), v.clone());
    }
    Ok(v)
}

fn field(v: Val, name: &str, data: &TemplateData) -> Result<Val, String> {
    match v {
        Val::Map(m) => Ok(Val::Str(m.get(name).cloned().unwrap_or_default())),
        Val::Data => match name {
            "Labels" => Ok(Val::Map(data.labels.clone())),
            "ExternalLabels" => Ok(Val::Map(data.external_labels.clone())),
            "ExternalURL" => Ok(Val::Str(data.external_url.clone())),
            "Value" => Ok(Val::Num(data.value)),
            other => Err(format!("can't evaluate field {other}")),
        },
        other => Err(format!("can't evaluate field {name} in {}", other.print())),
    }
}

fn eval_operand(
    o: &Operand,
    data: &TemplateData,
    scope: &mut BTreeMap<String, Val>,
) -> Result<Val, String> {
    match o {
        Operand::Var(name, fields) => {
            let mut v = scope
                .get(name)
                .cloned()
                .ok_or_else(|| format!("undefined variable {name:?}"))?;
            for f in fields {
                v = field(v, f, data)?;
            }
            Ok(v)
        }
        Operand::Field(fields) => {
            let mut v = Val::Data;
            for f in fields {
                v = field(v, f, data)?;
            }
            Ok(v)
        }
        Operand::Str(s) => Ok(Val::Str(s.clone())),
        Operand::Num(n) => Ok(Val::Num(*n)),
        Operand::Bool(b) => Ok(Val::Bool(*b)),
        Operand::Func(f) => call(f, Vec::new()),
        Operand::Sub(p) => exec_pipeline(p, data, scope),
    }
}

fn exec_cmd(
    cmd: &[Operand],
    prev: Option<Val>,
    data: &TemplateData,
    scope: &mut BTreeMap<String, Val>,
) -> Result<Val, String> {
    let Some(first) = cmd.first() else {
        return Err("empty command".into());
    };
    if let Operand::Func(f) = first {
        let mut args = Vec::new();
        for o in &cmd[1..] {
            args.push(eval_operand(o, data, scope)?);
        }
        if let Some(p) = prev {
            args.push(p);
        }
        return call(f, args);
    }
    if cmd.len() > 1 || prev.is_some() {
        return Err("can't give argument to non-function".into());
    }
    eval_operand(first, data, scope)
}

fn arg1(f: &str, args: &[Val]) -> Result<Val, String> {
    match args {
        [a] => Ok(a.clone()),
        _ => Err(format!(
            "wrong number of args for {f}: want 1 got {}",
            args.len()
        )),
    }
}

fn compare(a: &Val, b: &Val) -> Result<std::cmp::Ordering, String> {
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => Ok(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Ok(x.cmp(y)),
        _ => {
            let (x, y) = (a.num()?, b.num()?);
            x.partial_cmp(&y)
                .ok_or_else(|| "incomparable values".to_string())
        }
    }
}

fn call(f: &str, args: Vec<Val>) -> Result<Val, String> {
    use std::cmp::Ordering;
    let cmp = |want: &dyn Fn(Ordering) -> bool| -> Result<Val, String> {
        match args.as_slice() {
            [a, b] => Ok(Val::Bool(want(compare(a, b)?))),
            _ => Err(format!("wrong number of args for {f}: want 2")),
        }
    };
    match f {
        "humanize" => Ok(Val::Str(humanize(arg1(f, &args)?.num()?))),
        "humanize1024" => Ok(Val::Str(humanize1024(arg1(f, &args)?.num()?))),
        "humanizePercentage" => Ok(Val::Str(format!(
            "{}%",
            go_float(arg1(f, &args)?.num()? * 100.0, Some(4))
        ))),
        "humanizeDuration" => Ok(Val::Str(humanize_duration(arg1(f, &args)?.num()?))),
        "toUpper" => Ok(Val::Str(arg1(f, &args)?.print().to_uppercase())),
        "toLower" => Ok(Val::Str(arg1(f, &args)?.print().to_lowercase())),
        "title" => Ok(Val::Str(title(&arg1(f, &args)?.print()))),
        "safeHtml" => Ok(Val::Str(arg1(f, &args)?.print())),
        "stripPort" => {
            let s = arg1(f, &args)?.print();
            Ok(Val::Str(match s.rsplit_once(':') {
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
                    h.trim_start_matches('[').trim_end_matches(']').to_string()
                }
                _ => s,
            }))
        }
        "not" => Ok(Val::Bool(!arg1(f, &args)?.truthy())),
        "and" => Ok(args
            .iter()
            .find(|a| !a.truthy())
            .or(args.last())
            .cloned()
            .unwrap_or(Val::Bool(false))),
        "or" => Ok(args
            .iter()
            .find(|a| a.truthy())
            .or(args.last())
            .cloned()
            .unwrap_or(Val::Bool(false))),
        "eq" => cmp(&|o| o == Ordering::Equal),
        "ne" => cmp(&|o| o != Ordering::Equal),
        "lt" => cmp(&|o| o == Ordering::Less),
        "le" => cmp(&|o| o != Ordering::Greater),
        "gt" => cmp(&|o| o == Ordering::Greater),
        "ge" => cmp(&|o| o != Ordering::Less),
        "len" => match arg1(f, &args)? {
            Val::Str(s) => Ok(Val::Num(s.len() as f64)),
            Val::Map(m) => Ok(Val::Num(m.len() as f64)),
            other => Err(format!("len of {}", other.print())),
        },
        "index" => match args.as_slice() {
            [Val::Map(m), k] => Ok(Val::Str(m.get(&k.print()).cloned().unwrap_or_default())),
            _ => Err("index of a non-map".into()),
        },
        "print" => Ok(Val::Str(args.iter().map(Val::print).collect::<String>())),
        "printf" => match args.split_first() {
            Some((Val::Str(fmt), rest)) => printf(fmt, rest).map(Val::Str),
            _ => Err("printf needs a format string".into()),
        },
        other => Err(format!(
            "function {other:?} is not supported by the strata ruler"
        )),
    }
}

fn title(s: &str) -> String {
    let mut out = String::new();
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric();
    }
    out
}

/// `printf` with the verbs rule texts use: `%s %v %d %f %g %e %q %%`, precision and width.
fn printf(fmt: &str, args: &[Val]) -> Result<String, String> {
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    let mut ai = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&d) = it.peek() {
            if d.is_ascii_digit() || d == '.' || d == '-' || d == '+' {
                spec.push(d);
                it.next();
            } else {
                break;
            }
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(a) = args.get(ai) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        ai += 1;
        let prec: Option<usize> = spec.split_once('.').and_then(|(_, p)| p.parse().ok());
        let s = match verb {
            's' | 'v' => a.print(),
            'q' => format!("{:?}", a.print()),
            'd' => format!("{}", a.num()?.trunc() as i64),
            'f' => format!("{:.*}", prec.unwrap_or(6), a.num()?),
            'g' => go_float(a.num()?, prec),
            'e' => {
                let s = format!("{:.*e}", prec.unwrap_or(6), a.num()?);
                go_exp(&s)
            }
            other => format!("%!{other}({})", a.print()),
        };
        let width: usize = spec
            .split('.')
            .next()
            .map(|w| w.trim_start_matches(['-', '+']))
            .and_then(|w| w.parse().ok())
            .unwrap_or(0);
        let pad = width.saturating_sub(s.chars().count());
        if spec.starts_with('-') {
            out.push_str(&s);
            out.push_str(&" ".repeat(pad));
        } else {
            out.push_str(&" ".repeat(pad));
            out.push_str(&s);
        }
    }
    Ok(out)
}

/// Rust's `1.5e3` exponent form written as Go writes it: `1.5e+03`.
fn go_exp(s: &str) -> String {
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s.to_string(),
    }
}

/// Go's `%g` (with `prec` significant digits) or `%v` (`prec` = None, shortest) of a float.
pub fn go_float(v: f64, prec: Option<usize>) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let e = match prec {
        Some(p) => format!("{:.*e}", p.max(1) - 1, v),
        None => format!("{v:e}"),
    };
    let Some((mant, exp)) = e.split_once('e') else {
        return e;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    let neg = mant.starts_with('-');
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let nd = digits.len() as i32;
    let dp = exp + 1;
    let mut eprec = match prec {
        Some(p) => p.max(1) as i32,
        None => 6,
    };
    if prec.is_some() && eprec > nd && nd >= dp {
        eprec = nd;
    }
    let sign = if neg { "-" } else { "" };
    if exp < -4 || exp >= eprec {
        let (first, rest) = digits.split_at(1);
        let m = if rest.is_empty() {
            first.to_string()
        } else {
            format!("{first}.{rest}")
        };
        let (es, ea) = if exp < 0 { ('-', -exp) } else { ('+', exp) };
        return format!("{sign}{m}e{es}{ea:02}");
    }
    if dp <= 0 {
        let zeros = "0".repeat((-dp) as usize);
        return format!("{sign}0.{zeros}{digits}");
    }
    let dp = dp as usize;
    if digits.len() <= dp {
        format!("{sign}{digits}{}", "0".repeat(dp - digits.len()))
    } else {
        let (a, b) = digits.split_at(dp);
        format!("{sign}{a}.{b}")
    }
}

/// Prometheus's `humanize`: SI prefixes, 4 significant digits.
pub fn humanize(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return go_float(v, Some(4));
    }
    let mut v = v;
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", go_float(v, Some(4)))
}

fn humanize1024(v: f64) -> String {
    if v.abs() <= 1.0 || !v.is_finite() {
        return go_float(v, Some(4));
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", go_float(v, Some(4)))
}

/// Prometheus's `humanizeDuration` of seconds: `1d 2h 3m 4s`, or `1.5s`, `250ms`.
pub fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return go_float(v, Some(4));
    }
    if v == 0.0 {
        return "0s".into();
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let a = v.abs();
        let total = a.trunc() as i64;
        let (s, m, h, d) = (
            total % 60,
            (total / 60) % 60,
            (total / 3600) % 24,
            total / 86_400,
        );
        if d != 0 {
            return format!("{sign}{d}d {h}h {m}m {s}s");
        }
        if h != 0 {
            return format!("{sign}{h}h {m}m {s}s");
        }
        if m != 0 {
            return format!("{sign}{m}m {s}s");
        }
        return format!("{sign}{}s", go_float(a, Some(4)));
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", go_float(v, Some(4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> TemplateData {
        TemplateData {
            labels: [("job".to_string(), "api".to_string())].into(),
            external_labels: [("cluster".to_string(), "eu".to_string())].into(),
            external_url: "http://ruler".into(),
            value: 0.25,
        }
    }

    #[test]
    fn expands_variables_fields_and_pipelines() {
        let d = data();
        assert_eq!(expand("{{ $labels.job }} down", &d), "api down");
        assert_eq!(
            expand("{{ .Labels.job }}/{{ $externalLabels.cluster }}", &d),
            "api/eu"
        );
        assert_eq!(expand("v={{ $value }}", &d), "v=0.25");
        assert_eq!(expand("{{ $value | humanizePercentage }}", &d), "25%");
        assert_eq!(expand("{{ humanize 1234567 }}", &d), "1.235M");
        assert_eq!(expand("{{ printf \"%.1f\" $value }}", &d), "0.2");
        assert_eq!(expand("{{ $labels.missing }}x", &d), "x");
        assert_eq!(
            expand("{{ if gt $value 0.1 }}high{{ else }}low{{ end }}", &d),
            "high"
        );
        assert_eq!(expand("{{- \" a \" -}}  b", &d), " a b");
        assert_eq!(expand("{{ $x := 2 }}{{ $x }}", &d), "2");
        assert_eq!(expand("{{ toUpper $labels.job }}", &d), "API");
    }

    #[test]
    fn errors_become_text_never_panics() {
        let d = data();
        assert!(expand("{{ $labels.job ", &d).starts_with("<error expanding template: "));
        assert!(expand("{{ query \"up\" }}", &d).contains("not supported"));
        assert!(expand("{{ if 1 }}x", &d).contains("unexpected EOF"));
        for text in [
            "{{",
            "{{}}",
            "{{ ( }}",
            "{{ \" }}",
            "{{ end }}",
            "{{ | }}",
            "{{ printf }}",
        ] {
            let _ = expand(text, &d);
        }
    }

    #[test]
    fn parse_rejects_what_go_rejects() {
        assert!(Template::parse("{{ $nope }}").is_err());
        assert!(Template::parse("{{ nofunc 1 }}").is_err());
        assert!(Template::parse("{{ end }}").is_err());
        assert!(Template::parse("{{ $labels.x").is_err());
        assert!(Template::parse("plain text").is_ok());
        assert!(Template::parse("{{ range $labels }}{{ . }}{{ end }}").is_ok());
    }

    #[test]
    fn humanize_functions_match_prometheus() {
        assert_eq!(humanize(0.0), "0");
        assert_eq!(humanize(1000.0), "1k");
        assert_eq!(humanize(0.001), "1m");
        assert_eq!(humanize(12345.0), "12.35k");
        assert_eq!(humanize_duration(90.0), "1m 30s");
        assert_eq!(humanize_duration(86_400.0 + 3661.0), "1d 1h 1m 1s");
        assert_eq!(humanize_duration(1.5), "1.5s");
        assert_eq!(humanize_duration(0.25), "250ms");
        assert_eq!(go_float(1e6, Some(4)), "1e+06");
        assert_eq!(go_float(1234.0, None), "1234");
        assert_eq!(go_float(1e6, None), "1e+06");
        assert_eq!(go_float(123456.0, None), "123456");
        assert_eq!(go_float(0.00001, None), "1e-05");
    }
}
