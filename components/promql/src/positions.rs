//! Source positions of function calls and aggregations, for annotation suffixes.
//!
//! `promql-parser` keeps no positions, but Prometheus ends many annotations with the
//! `(line:column)` of the node that raised them. This module scans the query text for names
//! followed by `(` (skipping strings and comments) and pairs them, in source order, with the
//! AST's calls and aggregations, which a pre-order walk visits in the same order.
//!
//! It also finds string literals that are not valid UTF-8 the way Go reads them (`"\xff"` is
//! one byte 0xFF in Go, but `promql-parser` decodes it to the valid `char` U+00FF), so that
//! functions that take a label name can reject them as Prometheus does. Literals are matched
//! by decoded value, so a valid `"ÿ"` in a query that also spells `"\xff"` is rejected too.

use std::collections::HashMap;

use promql_parser::parser::Expr;

/// A name followed by `(`: where the name starts and where its first argument starts.
struct Opening {
    name: String,
    at: usize,
    /// Where each argument starts (top-level commas split them).
    args: Vec<usize>,
}

/// Positions keyed by AST node address.
#[derive(Default)]
pub(crate) struct Positions {
    /// `(line:column)` of a call's or aggregation's name, keyed by the `Call`/`AggregateExpr`.
    node: HashMap<usize, String>,
    /// `(line:column)` of each argument of a call or aggregation, keyed the same way.
    args: HashMap<usize, Vec<String>>,
    /// Decoded string literals whose Go bytes are not UTF-8, with Go's `%q` rendering.
    invalid_utf8: HashMap<String, String>,
    /// `(line:column)` where a binary expression starts (its left operand's start), keyed by
    /// the `BinaryExpr`, where that is known.
    binary: HashMap<usize, String>,
}

impl Positions {
    /// Works out the positions of every call and aggregation in `expr`, parsed from `query`.
    pub(crate) fn new(query: &str, expr: &Expr) -> Positions {
        let (openings, strings) = scan(query);
        let mut nodes = Vec::new();
        preorder(expr, &mut nodes);
        let mut out = Positions::default();
        let mut cursor = 0;
        for (key, name) in nodes {
            if let Some(i) = (cursor..openings.len()).find(|&i| openings[i].name == name) {
                out.node.insert(key, line_col(query, openings[i].at));
                let args = openings[i].args.iter().map(|&a| line_col(query, a));
                out.args.insert(key, args.collect());
                cursor = i + 1;
            }
        }
        // Binary expressions start where their left operand does: known for the whole query
        // and for call and aggregation arguments, and inherited down left operands.
        let first = {
            let b = query.as_bytes();
            let mut i = skip_ws(b, 0);
            while i < b.len() && b[i] == b'#' {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                i = skip_ws(b, i);
            }
            line_col(query, i)
        };
        out.binary_starts(expr, Some(first));
        for raw in strings {
            if let Some(bytes) = go_bytes(raw)
                && std::str::from_utf8(&bytes).is_err()
                && let Ok(decoded) = promql_parser::util::unquote_string(raw)
            {
                out.invalid_utf8.insert(decoded, go_quote(&bytes));
            }
        }
        out
    }

    /// Records the start of every binary expression under `expr`, which starts at `start`.
    fn binary_starts(&mut self, expr: &Expr, start: Option<String>) {
        match expr {
            Expr::Binary(b) => {
                if let Some(p) = &start {
                    self.binary.insert(b as *const _ as usize, p.clone());
                }
                self.binary_starts(&b.lhs, start);
                self.binary_starts(&b.rhs, None);
            }
            Expr::Aggregate(a) => {
                let key = a as *const _ as usize;
                let arg = |i: usize| self.args.get(&key).and_then(|v| v.get(i)).cloned();
                let (p0, p1) = (arg(0), arg(1));
                match &a.param {
                    Some(p) => {
                        self.binary_starts(p, p0);
                        self.binary_starts(&a.expr, p1);
                    }
                    None => self.binary_starts(&a.expr, p0),
                }
            }
            Expr::Call(c) => {
                let key = c as *const _ as usize;
                for (i, a) in c.args.args.iter().enumerate() {
                    let p = self.args.get(&key).and_then(|v| v.get(i)).cloned();
                    self.binary_starts(a, p);
                }
            }
            Expr::Subquery(sq) => self.binary_starts(&sq.expr, start),
            Expr::Paren(p) => self.binary_starts(&p.expr, None),
            Expr::Unary(u) => self.binary_starts(&u.expr, None),
            _ => {}
        }
    }

    /// The ` (line:column)` suffix for binary expression `node`, or "" when unknown.
    pub(crate) fn of_binary<T>(&self, node: &T) -> String {
        self.binary
            .get(&(node as *const T as usize))
            .map(|p| format!(" {p}"))
            .unwrap_or_default()
    }

    /// For a string the query spelled with bytes that are not UTF-8 in Go, its `%q` rendering.
    pub(crate) fn invalid_utf8(&self, decoded: &str) -> Option<&str> {
        self.invalid_utf8.get(decoded).map(String::as_str)
    }

    /// The ` (line:column)` suffix for `node` (a `Call` or `AggregateExpr`), or "" when unknown.
    pub(crate) fn of<T>(&self, node: &T) -> String {
        self.node
            .get(&(node as *const T as usize))
            .map(|p| format!(" {p}"))
            .unwrap_or_default()
    }

    /// The ` (line:column)` suffix for the first argument of `node`, or "".
    pub(crate) fn of_first_arg<T>(&self, node: &T) -> String {
        self.of_arg(node, 0)
    }

    /// The ` (line:column)` suffix for argument `i` of `node`, or "".
    pub(crate) fn of_arg<T>(&self, node: &T, i: usize) -> String {
        self.args
            .get(&(node as *const T as usize))
            .and_then(|a| a.get(i))
            .map(|p| format!(" {p}"))
            .unwrap_or_default()
    }
}

/// `(line:column)`, both 1-based, column in bytes as Prometheus counts it.
fn line_col(query: &str, at: usize) -> String {
    let before = &query.as_bytes()[..at.min(query.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let col = match before.iter().rposition(|b| *b == b'\n') {
        Some(nl) => at - nl,
        None => at + 1,
    };
    format!("({line}:{col})")
}

/// Calls and aggregations in source order, as `(address, lowercase name)`.
fn preorder(expr: &Expr, out: &mut Vec<(usize, String)>) {
    match expr {
        Expr::Aggregate(a) => {
            out.push((a as *const _ as usize, a.op.to_string().to_lowercase()));
            if let Some(p) = &a.param {
                preorder(p, out);
            }
            preorder(&a.expr, out);
        }
        Expr::Call(c) => {
            out.push((c as *const _ as usize, c.func.name.to_lowercase()));
            for a in &c.args.args {
                preorder(a, out);
            }
        }
        Expr::Unary(u) => preorder(&u.expr, out),
        Expr::Binary(b) => {
            preorder(&b.lhs, out);
            preorder(&b.rhs, out);
        }
        Expr::Paren(p) => preorder(&p.expr, out),
        Expr::Subquery(s) => preorder(&s.expr, out),
        _ => {}
    }
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_ident(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit()
}

/// Skips a string literal starting at `i` (its quote); returns the index after it.
fn skip_string(s: &[u8], i: usize) -> usize {
    let q = s[i];
    let mut j = i + 1;
    while j < s.len() {
        if s[j] == b'\\' && q != b'`' {
            j += 2;
            continue;
        }
        if s[j] == q {
            return j + 1;
        }
        j += 1;
    }
    s.len()
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The bytes Go's unquoting gives for a `"…"` or `'…'` literal (escapes `\xHH` and octal
/// `\NNN` are single bytes); `None` for raw strings or malformed escapes.
fn go_bytes(raw: &str) -> Option<Vec<u8>> {
    let s = raw.as_bytes();
    if s.len() < 2 || s[0] == b'`' {
        return None;
    }
    let inner = &s[1..s.len() - 1];
    let hex = |d: &[u8]| {
        std::str::from_utf8(d)
            .ok()
            .and_then(|d| u32::from_str_radix(d, 16).ok())
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        if inner[i] != b'\\' {
            out.push(inner[i]);
            i += 1;
            continue;
        }
        let e = *inner.get(i + 1)?;
        i += 2;
        match e {
            b'x' => {
                out.push(u8::try_from(hex(inner.get(i..i + 2)?)?).ok()?);
                i += 2;
            }
            b'0'..=b'7' => {
                let d = std::str::from_utf8(inner.get(i - 1..i + 2)?).ok()?;
                out.push(u8::try_from(u32::from_str_radix(d, 8).ok()?).ok()?);
                i += 2;
            }
            b'u' | b'U' => {
                let n = if e == b'u' { 4 } else { 8 };
                let c = char::from_u32(hex(inner.get(i..i + n)?)?)?;
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                i += n;
            }
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            other => out.push(other),
        }
    }
    Some(out)
}

/// Go's `%q` of a byte string: printable UTF-8 kept, invalid bytes as `\xHH`.
fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.push_str(&c.escape_default().to_string()),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

/// Where each argument of a call whose `(` ends just before `from` starts: the text after the
/// opening parenthesis and after each comma outside nested brackets and strings.
fn arg_starts(s: &[u8], from: usize) -> Vec<usize> {
    let mut out = vec![skip_ws(s, from)];
    let mut depth = 0usize;
    let mut i = from;
    while i < s.len() {
        match s[i] {
            b'"' | b'\'' | b'`' => {
                i = skip_string(s, i);
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            b',' if depth == 0 => out.push(skip_ws(s, i + 1)),
            _ => {}
        }
        i += 1;
    }
    out
}

/// Every identifier followed by `(` (allowing a `by (…)`/`without (…)` clause in between),
/// and every quoted string literal's source text.
fn scan(query: &str) -> (Vec<Opening>, Vec<&str>) {
    let s = query.as_bytes();
    let mut out = Vec::new();
    let mut strings = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'"' || b == b'\'' || b == b'`' {
            let start = i;
            i = skip_string(s, i);
            strings.push(&query[start..i]);
        } else if b == b'#' {
            while i < s.len() && s[i] != b'\n' {
                i += 1;
            }
        } else if is_ident_start(b) && (i == 0 || !is_ident(s[i - 1])) {
            let start = i;
            while i < s.len() && is_ident(s[i]) {
                i += 1;
            }
            let name = query[start..i].to_lowercase();
            let mut j = skip_ws(s, i);
            // An aggregation's grouping clause may come before its arguments.
            let word_end = {
                let mut k = j;
                while k < s.len() && is_ident(s[k]) {
                    k += 1;
                }
                k
            };
            let word = query[j..word_end].to_lowercase();
            if word == "by" || word == "without" {
                j = skip_ws(s, word_end);
                if j < s.len() && s[j] == b'(' {
                    j += 1;
                    while j < s.len() && s[j] != b')' {
                        if s[j] == b'"' || s[j] == b'\'' || s[j] == b'`' {
                            j = skip_string(s, j);
                        } else {
                            j += 1;
                        }
                    }
                    j = skip_ws(s, j + 1);
                }
            }
            if j < s.len() && s[j] == b'(' {
                out.push(Opening {
                    name,
                    at: start,
                    args: arg_starts(s, j + 1),
                });
            }
        } else {
            i += 1;
        }
    }
    (out, strings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use promql_parser::parser::parse;

    fn call_pos(q: &str) -> Vec<String> {
        let e = parse(q).expect("parses");
        let p = Positions::new(q, &e);
        let mut nodes = Vec::new();
        preorder(&e, &mut nodes);
        nodes
            .iter()
            .map(|(k, _)| p.node.get(k).cloned().unwrap_or_default())
            .collect()
    }

    #[test]
    fn calls_and_aggregations_get_their_name_positions() {
        assert_eq!(call_pos("sort(x)"), vec!["(1:1)"]);
        assert_eq!(call_pos("sum(sort(series))"), vec!["(1:1)", "(1:5)"]);
        assert_eq!(
            call_pos("sum by (a) (rate(x{l=\"abs(\"}[5m])) + abs(y)"),
            vec!["(1:1)", "(1:13)", "(1:38)"]
        );
        assert_eq!(call_pos("x +\n  abs(y)"), vec!["(2:3)"]);
    }

    #[test]
    fn go_invalid_utf8_literals_are_found() {
        let q = r#"label_replace(m, "a\xc5z", "\xc5\xbc", 'x\377', `\xff`)"#;
        let e = parse(q).expect("parses");
        let p = Positions::new(q, &e);
        assert_eq!(p.invalid_utf8("a\u{c5}z"), Some(r#""a\xc5z""#));
        assert_eq!(p.invalid_utf8("x\u{ff}"), Some(r#""x\xff""#));
        // `\xc5\xbc` is valid UTF-8 (ż) in Go; raw strings are never unquoted.
        assert_eq!(p.invalid_utf8("\u{c5}\u{bc}"), None);
        assert_eq!(p.invalid_utf8("\\xff"), None);
    }

    #[test]
    fn first_argument_after_a_grouping_clause() {
        let q = "quantile without(point)(NaN, data)";
        let e = parse(q).expect("parses");
        let p = Positions::new(q, &e);
        let Expr::Aggregate(a) = &e else {
            panic!("not an aggregation")
        };
        assert_eq!(p.of(a), " (1:1)");
        assert_eq!(p.of_first_arg(a), " (1:25)");
        assert_eq!(p.of_arg(a, 1), " (1:30)");
    }

    #[test]
    fn arguments_split_at_top_level_commas_only() {
        let q = r#"histogram_quantiles(sum by (a, b) (x{l=",", m="y"}), "q", 0.1,  0.5)"#;
        let e = parse(q).expect("parses");
        let p = Positions::new(q, &e);
        let Expr::Call(c) = &e else {
            panic!("not a call")
        };
        let got: Vec<String> = (0..5).map(|i| p.of_arg(c, i)).collect();
        assert_eq!(got, [" (1:21)", " (1:54)", " (1:59)", " (1:65)", ""]);
    }
}
