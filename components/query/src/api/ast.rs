//! `/api/v1/parse_query`: the PromQL syntax tree as the JSON object Prometheus's UI tree view
//! reads (node `type`s `aggregation`, `binaryExpr`, `call`, `matrixSelector`, `subquery`,
//! `numberLiteral`, `parenExpr`, `stringLiteral`, `unaryExpr`, `vectorSelector`). Keys are
//! written in sorted order, as Go writes map keys. Fields of syntax `promql-parser` does not
//! know (Prometheus 3's experimental `anchored`/`smoothed` range modifiers, duration
//! expressions in `offsetExpr`/`rangeExpr`/`stepExpr`) are always `false` / `null`.

use std::time::{Duration, UNIX_EPOCH};

use promql_parser::label::{MatchOp, Matcher, Matchers};
use promql_parser::parser::ast::{AtModifier, LabelModifier, Offset, VectorMatchCardinality};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{Expr, VectorSelector};
use serde_json::{Map, Value, json};

use super::format::format_float_f;

/// Builds a JSON object from pairs, keys sorted.
fn object(mut pairs: Vec<(&str, Value)>) -> Value {
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert(k.to_string(), v);
    }
    Value::Object(m)
}

fn millis(d: &Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => millis(d),
        Some(Offset::Neg(d)) => -millis(d),
    }
}

/// `(timestamp, startOrEnd)` of an `@` modifier.
fn at_fields(at: &Option<AtModifier>) -> (Value, Value) {
    match at {
        None => (Value::Null, Value::Null),
        Some(AtModifier::Start) => (Value::Null, json!("start")),
        Some(AtModifier::End) => (Value::Null, json!("end")),
        Some(AtModifier::At(t)) => {
            let ms = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => millis(&d),
                Err(e) => -millis(&e.duration()),
            };
            (json!(ms), Value::Null)
        }
    }
}

fn match_type(m: &Matcher) -> &'static str {
    match m.op {
        MatchOp::Equal => "=",
        MatchOp::NotEqual => "!=",
        MatchOp::Re(_) => "=~",
        MatchOp::NotRe(_) => "!~",
    }
}

/// The selector's matchers as Prometheus keeps them: those written in braces, then the
/// `__name__` matcher for a name written outside them. `or` alternatives are flattened.
fn matchers(name: &Option<String>, ms: &Matchers) -> Value {
    let mut out: Vec<Value> = ms
        .matchers
        .iter()
        .chain(ms.or_matchers.iter().flatten())
        .map(|m| {
            object(vec![
                ("name", json!(m.name)),
                ("type", json!(match_type(m))),
                ("value", json!(m.value)),
            ])
        })
        .collect();
    if let Some(n) = name {
        out.push(object(vec![
            ("name", json!("__name__")),
            ("type", json!("=")),
            ("value", json!(n)),
        ]));
    }
    Value::Array(out)
}

fn vector_selector(vs: &VectorSelector) -> Vec<(&'static str, Value)> {
    let (timestamp, start_or_end) = at_fields(&vs.at);
    vec![
        ("name", json!(vs.name.clone().unwrap_or_default())),
        ("offset", json!(offset_ms(&vs.offset))),
        ("matchers", matchers(&vs.name, &vs.matchers)),
        ("timestamp", timestamp),
        ("startOrEnd", start_or_end),
        ("anchored", json!(false)),
        ("smoothed", json!(false)),
        ("offsetExpr", Value::Null),
    ]
}

fn labels(ls: &promql_parser::label::Labels) -> Value {
    json!(ls.labels)
}

fn value_type(t: ValueType) -> Value {
    json!(t.to_string())
}

/// The JSON tree of `expr` (Prometheus's `translateAST`).
pub fn translate(expr: &Expr) -> Value {
    match expr {
        Expr::Aggregate(a) => {
            let (grouping, without) = match &a.modifier {
                None => (json!([]), false),
                Some(LabelModifier::Include(l)) => (labels(l), false),
                Some(LabelModifier::Exclude(l)) => (labels(l), true),
            };
            object(vec![
                ("type", json!("aggregation")),
                ("op", json!(a.op.to_string())),
                ("expr", translate(&a.expr)),
                (
                    "param",
                    a.param.as_deref().map(translate).unwrap_or(Value::Null),
                ),
                ("grouping", grouping),
                ("without", json!(without)),
            ])
        }
        Expr::Binary(b) => {
            let both_vectors =
                b.lhs.value_type() == ValueType::Vector && b.rhs.value_type() == ValueType::Vector;
            let matching = if both_vectors {
                let set_op = b.op.is_set_operator();
                let (card, include) = match b.modifier.as_ref().map(|m| &m.card) {
                    Some(VectorMatchCardinality::ManyToOne(l)) => ("many-to-one", labels(l)),
                    Some(VectorMatchCardinality::OneToMany(l)) => ("one-to-many", labels(l)),
                    Some(VectorMatchCardinality::ManyToMany) => ("many-to-many", json!([])),
                    _ if set_op => ("many-to-many", json!([])),
                    _ => ("one-to-one", json!([])),
                };
                let (on, matching_labels) =
                    match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                        Some(LabelModifier::Include(l)) => (true, labels(l)),
                        Some(LabelModifier::Exclude(l)) => (false, labels(l)),
                        None => (false, json!([])),
                    };
                let fill = b.modifier.as_ref().map(|m| &m.fill_values);
                object(vec![
                    (
                        "fillValues",
                        object(vec![
                            ("lhs", json!(fill.and_then(|f| f.lhs))),
                            ("rhs", json!(fill.and_then(|f| f.rhs))),
                        ]),
                    ),
                    ("card", json!(card)),
                    ("labels", matching_labels),
                    ("on", json!(on)),
                    ("include", include),
                ])
            } else {
                Value::Null
            };
            let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
            object(vec![
                ("type", json!("binaryExpr")),
                ("op", json!(b.op.to_string())),
                ("lhs", translate(&b.lhs)),
                ("rhs", translate(&b.rhs)),
                ("matching", matching),
                ("bool", json!(return_bool)),
            ])
        }
        Expr::Call(c) => {
            let arg_types: Vec<Value> = c.func.arg_types.iter().map(|t| value_type(*t)).collect();
            object(vec![
                ("type", json!("call")),
                (
                    "func",
                    object(vec![
                        ("name", json!(c.func.name)),
                        ("argTypes", Value::Array(arg_types)),
                        ("variadic", json!(c.func.variadic)),
                        ("returnType", value_type(c.func.return_type)),
                    ]),
                ),
                (
                    "args",
                    Value::Array(c.args.args.iter().map(|a| translate(a)).collect()),
                ),
            ])
        }
        Expr::MatrixSelector(m) => {
            let mut pairs = vector_selector(&m.vs);
            pairs.push(("type", json!("matrixSelector")));
            pairs.push(("range", json!(millis(&m.range))));
            pairs.push(("rangeExpr", Value::Null));
            object(pairs)
        }
        Expr::Subquery(s) => {
            let (timestamp, start_or_end) = at_fields(&s.at);
            object(vec![
                ("type", json!("subquery")),
                ("expr", translate(&s.expr)),
                ("range", json!(millis(&s.range))),
                ("offset", json!(offset_ms(&s.offset))),
                ("step", json!(s.step.as_ref().map(millis).unwrap_or(0))),
                ("timestamp", timestamp),
                ("startOrEnd", start_or_end),
                ("offsetExpr", Value::Null),
                ("rangeExpr", Value::Null),
                ("stepExpr", Value::Null),
            ])
        }
        Expr::NumberLiteral(n) => object(vec![
            ("type", json!("numberLiteral")),
            ("val", json!(format_float_f(n.val))),
        ]),
        Expr::Paren(p) => object(vec![
            ("type", json!("parenExpr")),
            ("expr", translate(&p.expr)),
        ]),
        Expr::StringLiteral(s) => object(vec![
            ("type", json!("stringLiteral")),
            ("val", json!(s.val)),
        ]),
        Expr::Unary(u) => object(vec![
            ("type", json!("unaryExpr")),
            ("op", json!("-")),
            ("expr", translate(&u.expr)),
        ]),
        Expr::VectorSelector(vs) => {
            let mut pairs = vector_selector(vs);
            pairs.push(("type", json!("vectorSelector")));
            object(pairs)
        }
        // The parser never produces extension nodes.
        Expr::Extension(_) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(q: &str) -> Value {
        translate(&promql_parser::parser::parse(q).expect("parses"))
    }

    #[test]
    fn selector_with_offset_and_at() {
        assert_eq!(
            tree("up{job=\"a\"} offset 5m @ 100"),
            json!({
                "matchers": [
                    {"name": "job", "type": "=", "value": "a"},
                    {"name": "__name__", "type": "=", "value": "up"}
                ],
                "name": "up",
                "offset": 300000,
                "startOrEnd": null,
                "timestamp": 100000,
                "type": "vectorSelector",
                "anchored": false,
                "smoothed": false,
                "offsetExpr": null
            })
        );
    }

    #[test]
    fn aggregation_over_a_call_over_a_matrix_selector() {
        assert_eq!(
            tree("sum by (job) (rate(x[5m] @ end()))"),
            json!({
                "type": "aggregation",
                "op": "sum",
                "grouping": ["job"],
                "without": false,
                "param": null,
                "expr": {
                    "type": "call",
                    "func": {"name": "rate", "argTypes": ["matrix"], "variadic": 0, "returnType": "vector"},
                    "args": [{
                        "type": "matrixSelector",
                        "name": "x",
                        "range": 300000,
                        "offset": 0,
                        "matchers": [{"name": "__name__", "type": "=", "value": "x"}],
                        "timestamp": null,
                        "startOrEnd": "end",
                        "anchored": false,
                        "smoothed": false,
                        "offsetExpr": null,
                        "rangeExpr": null
                    }]
                }
            })
        );
    }

    #[test]
    fn binary_matching_only_between_vectors() {
        let t = tree("a / on (job) group_left (team) b");
        assert_eq!(
            t["matching"],
            json!({"card": "many-to-one", "labels": ["job"], "on": true, "include": ["team"],
                "fillValues": {"lhs": null, "rhs": null}})
        );
        assert_eq!(t["bool"], json!(false));
        let t = tree("a > bool 1");
        assert_eq!(t["matching"], Value::Null);
        assert_eq!(t["bool"], json!(true));
        assert_eq!(t["rhs"], json!({"type": "numberLiteral", "val": "1"}));
        let t = tree("a and b");
        assert_eq!(t["matching"]["card"], json!("many-to-many"));
        let t = tree("a + b");
        assert_eq!(
            t["matching"],
            json!({"card": "one-to-one", "labels": [], "on": false, "include": [],
                "fillValues": {"lhs": null, "rhs": null}})
        );
    }

    #[test]
    fn subquery_paren_unary_and_literals() {
        let t = tree("-(max_over_time(x[1h:5m] offset 1m))");
        assert_eq!(t["type"], json!("unaryExpr"));
        assert_eq!(t["op"], json!("-"));
        let sq = &t["expr"]["expr"]["args"][0];
        assert_eq!(sq["type"], json!("subquery"));
        assert_eq!(sq["range"], json!(3_600_000));
        assert_eq!(sq["step"], json!(300_000));
        assert_eq!(sq["offset"], json!(60_000));
        assert_eq!(
            tree("\"hi\""),
            json!({"type": "stringLiteral", "val": "hi"})
        );
        assert_eq!(tree("Inf"), json!({"type": "numberLiteral", "val": "+Inf"}));
    }
}
