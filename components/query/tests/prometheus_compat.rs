//! Side by side with a real Prometheus 3: the same series are backfilled into Prometheus (with
//! the real `promtool`) and loaded into the API's in-memory source; the same requests must get
//! the same status codes and the same JSON (results compared as sets, sample values within
//! float tolerance, error messages exactly where the API claims Prometheus's wording).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use strata_e2e::{Prometheus, promtool};
use strata_promql::{Labels, MemQueryable};
use strata_query::api::{ApiSettings, MemSource, router};
use tower::ServiceExt;

/// One series of the test data: labels and one value per 15 s step from the base time.
struct Fixture {
    labels: Vec<(&'static str, &'static str)>,
    values: Vec<f64>,
}

fn fixtures() -> Vec<Fixture> {
    let n = 41;
    vec![
        Fixture {
            labels: vec![("__name__", "http_requests_total"), ("job", "a")],
            values: (0..n).map(|i| i as f64 * 3.0).collect(),
        },
        Fixture {
            labels: vec![("__name__", "temp"), ("room", "x")],
            values: (0..n)
                .map(|i| [21.5, 1e-7, 123_456_789.125, -0.25][i % 4])
                .collect(),
        },
        Fixture {
            labels: vec![("__name__", "up"), ("instance", "h1:9100"), ("job", "a")],
            values: vec![1.0; n],
        },
        Fixture {
            labels: vec![("__name__", "up"), ("instance", "h2:9100"), ("job", "b")],
            values: vec![0.0; n],
        },
    ]
}

fn openmetrics(base_ms: i64) -> String {
    let mut out = String::new();
    let mut last_family = "";
    for f in fixtures() {
        let name = f.labels[0].1;
        if name != last_family {
            out.push_str(&format!("# TYPE {name} unknown\n"));
            last_family = name;
        }
        let labels: Vec<String> = f.labels[1..]
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        for (i, v) in f.values.iter().enumerate() {
            let t = base_ms + i as i64 * 15_000;
            out.push_str(&format!(
                "{name}{{{}}} {v} {}.{:03}\n",
                labels.join(","),
                t / 1000,
                t % 1000
            ));
        }
    }
    out.push_str("# EOF\n");
    out
}

fn mem(base_ms: i64) -> MemQueryable {
    let mut m = MemQueryable::new();
    for f in fixtures() {
        let labels = Labels::new(f.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let samples: Vec<(i64, f64)> = f
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| (base_ms + i as i64 * 15_000, *v))
            .collect();
        m.add(labels, &samples);
    }
    m
}

/// How strictly a request's answers are compared.
#[derive(Clone, Copy, PartialEq)]
enum Check {
    /// Everything, error messages included.
    Exact,
    /// The bodies byte for byte.
    Bytes,
    /// Everything, but Prometheus's `line:column: ` positions are taken out of its error
    /// message first (the parser we use keeps no positions).
    NoPosition,
    /// Like `Exact`, but the numbers under `data.stats` are not compared (only the keys).
    StatsShape,
}

/// One request: path under `/api/v1/`, parameters, how to compare, whether to POST a form.
struct Case {
    path: &'static str,
    params: Vec<(&'static str, String)>,
    check: Check,
    post: bool,
}

fn case(path: &'static str, params: Vec<(&'static str, String)>, check: Check) -> Case {
    Case {
        path,
        params,
        check,
        post: false,
    }
}

fn post(path: &'static str, params: Vec<(&'static str, String)>, check: Check) -> Case {
    Case {
        path,
        params,
        check,
        post: true,
    }
}

/// Removes `12:34: ` source positions from a Prometheus error message.
fn strip_positions(msg: &str) -> String {
    let mut out = String::new();
    let mut rest = msg;
    while !rest.is_empty() {
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let line = digits(rest);
        if line > 0 && rest[line..].starts_with(':') {
            let col = digits(&rest[line + 1..]);
            let after = line + 1 + col;
            if col > 0 && rest[after..].starts_with(": ") {
                rest = &rest[after + 2..];
                continue;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// Zeroes every number below `v`.
fn zero_numbers(v: &mut Value) {
    match v {
        Value::Number(_) => *v = Value::from(0),
        Value::Object(m) => m.values_mut().for_each(zero_numbers),
        Value::Array(a) => a.iter_mut().for_each(zero_numbers),
        _ => {}
    }
}

/// Sorts vector/matrix results and series lists so order does not matter.
fn normalize(v: &mut Value) {
    if let Some(data) = v.get_mut("data") {
        if let Some(result) = data.get_mut("result").and_then(Value::as_array_mut) {
            result.sort_by_key(|s| s["metric"].to_string());
        }
        if let Some(list) = data.as_array_mut()
            && list.iter().all(Value::is_object)
        {
            list.sort_by_key(|s| s.to_string());
        }
    }
}

/// Structural equality with sample strings compared as floats (relative 1e-9).
fn same(a: &Value, b: &Value, path: &str, diffs: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => same(p, q, &format!("{path}.{k}"), diffs),
                    (p, q) => diffs.push(format!("{path}.{k}: ours {p:?}, prometheus {q:?}")),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                same(p, q, &format!("{path}[{i}]"), diffs);
            }
        }
        (Value::String(x), Value::String(y)) if x != y => {
            let close = match (x.parse::<f64>(), y.parse::<f64>()) {
                (Ok(p), Ok(q)) => (p - q).abs() <= 1e-9 * p.abs().max(q.abs()),
                _ => false,
            };
            if !close {
                diffs.push(format!("{path}: ours {x:?}, prometheus {y:?}"));
            }
        }
        _ if a != b => diffs.push(format!("{path}: ours {a}, prometheus {b}")),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_match_a_real_prometheus() {
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    // An hour ago, on a minute boundary; the data covers 10 minutes.
    let base_ms = (now_s - 3600) / 60 * 60 * 1000;
    let scratch = tempfile::tempdir().expect("tempdir");
    let om = scratch.path().join("data.om");
    std::fs::write(&om, openmetrics(base_ms)).expect("write openmetrics");
    let data_dir = scratch.path().join("tsdb");
    let out = promtool(&[
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        om.to_str().expect("utf-8 path"),
        data_dir.to_str().expect("utf-8 path"),
    ])
    .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prometheus = Prometheus::builder()
        .config("global:\n  scrape_interval: 1h\n")
        .data_dir(&data_dir)
        .start()
        .await
        .expect("start prometheus");
    let ours = router(
        Arc::new(MemSource::new(mem(base_ms))),
        ApiSettings::default(),
    );

    let s = |offset_s: f64| format!("{}", base_ms as f64 / 1000.0 + offset_s);
    let t = s(300.0);
    let (start, end) = (s(0.0), s(600.0));
    let end_before = s(-1.0);
    use Check::*;
    let cases: Vec<Case> = vec![
        case(
            "query",
            vec![("query", "up".into()), ("time", t.clone())],
            Exact,
        ),
        case(
            "query",
            vec![("query", "1+1".into()), ("time", t.clone())],
            Exact,
        ),
        case(
            "query",
            vec![("query", "sum by (job) (up)".into()), ("time", t.clone())],
            Exact,
        ),
        case(
            "query",
            vec![("query", "temp".into()), ("time", s(315.0))],
            Exact,
        ),
        case(
            "query",
            vec![("query", "temp".into()), ("time", s(330.0))],
            Exact,
        ),
        case(
            "query",
            vec![("query", "up / 0".into()), ("time", t.clone())],
            Exact,
        ),
        case(
            "query",
            vec![("query", "\"hi\"".into()), ("time", s(1.5))],
            Exact,
        ),
        case(
            "query",
            vec![("query", "up[1m]".into()), ("time", t.clone())],
            Exact,
        ),
        case(
            "query",
            vec![
                ("query", "rate(http_requests_total[1m])".into()),
                ("time", t.clone()),
            ],
            Exact,
        ),
        case(
            "query",
            vec![("query", "rate(up[5m])".into()), ("time", t.clone())],
            Exact,
        ),
        case(
            "query",
            vec![("query", "quantile(2, up)".into()), ("time", t.clone())],
            Exact,
        ),
        case(
            "query",
            vec![
                ("query", "up".into()),
                ("time", t.clone()),
                ("lookback_delta", "1s".into()),
            ],
            Exact,
        ),
        case(
            "query_range",
            vec![
                ("query", "up".into()),
                ("start", start.clone()),
                ("end", end.clone()),
                ("step", "60".into()),
            ],
            Exact,
        ),
        case(
            "query_range",
            vec![
                ("query", "sum(rate(http_requests_total[1m]))".into()),
                ("start", s(60.5)),
                ("end", end.clone()),
                ("step", "30s".into()),
            ],
            Exact,
        ),
        case(
            "query_range",
            vec![
                ("query", "temp * 2".into()),
                ("start", start.clone()),
                ("end", end.clone()),
                ("step", "1m30s".into()),
            ],
            Exact,
        ),
        case(
            "series",
            vec![
                ("match[]", "up".into()),
                ("start", start.clone()),
                ("end", end.clone()),
            ],
            Exact,
        ),
        case(
            "series",
            vec![
                ("match[]", "up".into()),
                ("match[]", "{job=\"a\"}".into()),
                ("start", start.clone()),
                ("end", end.clone()),
            ],
            Exact,
        ),
        case(
            "series",
            vec![
                ("match[]", "{__name__=~\"up|temp\"}".into()),
                ("limit", "1".into()),
                ("start", start.clone()),
                ("end", end.clone()),
            ],
            Exact,
        ),
        case(
            "labels",
            vec![("start", start.clone()), ("end", end.clone())],
            Exact,
        ),
        case(
            "labels",
            vec![
                ("match[]", "temp".into()),
                ("start", start.clone()),
                ("end", end.clone()),
            ],
            Exact,
        ),
        case(
            "label/__name__/values",
            vec![
                ("match[]", "{job=\"a\"}".into()),
                ("start", start.clone()),
                ("end", end.clone()),
            ],
            Exact,
        ),
        case(
            "label/job/values",
            vec![("start", start.clone()), ("end", end.clone())],
            Exact,
        ),
        case("label/job/values", vec![("limit", "1".into())], Exact),
        case("label/nope/values", vec![], Exact),
        case("metadata", vec![], Exact),
        case(
            "query_exemplars",
            vec![
                ("query", "up".into()),
                ("start", start.clone()),
                ("end", end.clone()),
            ],
            Exact,
        ),
        case(
            "format_query",
            vec![("query", "sum by(job)(rate(x[5m]))".into())],
            Exact,
        ),
        case(
            "parse_query",
            vec![(
                "query",
                "sum by (job) (rate(x{a=\"b\"}[5m] offset 1m))".into(),
            )],
            Exact,
        ),
        case(
            "parse_query",
            vec![("query", "a / on (job) group_left (team) b > bool 1".into())],
            Exact,
        ),
        case(
            "parse_query",
            vec![("query", "-(max_over_time(x[1h:5m] @ start()))".into())],
            Exact,
        ),
        case(
            "parse_query",
            vec![("query", "topk(3, x) or vector(1)".into())],
            Exact,
        ),
        case(
            "query",
            vec![("query", "up".into()), ("time", s(300.5))],
            Bytes,
        ),
        case(
            "query",
            vec![("query", "temp".into()), ("time", s(315.0))],
            Bytes,
        ),
        case(
            "query_range",
            vec![
                ("query", "temp".into()),
                ("start", s(0.25)),
                ("end", s(90.0)),
                ("step", "15".into()),
            ],
            Bytes,
        ),
        case("series", vec![("match[]", "temp".into())], Bytes),
        case("labels", vec![], Bytes),
        case(
            "query",
            vec![
                ("query", "up".into()),
                ("time", t.clone()),
                ("stats", "all".into()),
            ],
            StatsShape,
        ),
        case(
            "query_range",
            vec![
                ("query", "rate(up[1m])".into()),
                ("start", start.clone()),
                ("end", end.clone()),
                ("step", "60".into()),
                ("stats", "1".into()),
            ],
            StatsShape,
        ),
        case(
            "query",
            vec![
                ("query", "up".into()),
                ("time", t.clone()),
                ("limit", "1".into()),
            ],
            Exact,
        ),
        case(
            "query_range",
            vec![
                ("query", "up".into()),
                ("start", start.clone()),
                ("end", end.clone()),
                ("step", "60".into()),
                ("limit", "1".into()),
            ],
            Exact,
        ),
        case(
            "query_range",
            vec![
                ("query", "up".into()),
                ("start", start.clone()),
                ("end", end.clone()),
                ("step", "60".into()),
                ("lookback_delta", "1s".into()),
            ],
            Exact,
        ),
        case("metadata", vec![("limit", "x".into())], Exact),
        case(
            "metadata",
            vec![("metric", "up".into()), ("limit_per_metric", "2".into())],
            Exact,
        ),
        case("query_exemplars", vec![], Exact),
        case(
            "query_exemplars",
            vec![("query", "up".into()), ("start", "x".into())],
            Exact,
        ),
        case("format_query", vec![], Exact),
        case("parse_query", vec![], Exact),
        case(
            "query",
            vec![
                ("query", "up".into()),
                ("time", t.clone()),
                ("lookback_delta", "x".into()),
            ],
            Exact,
        ),
        case(
            "query",
            vec![
                ("query", "up".into()),
                ("time", t.clone()),
                ("limit", "-1".into()),
            ],
            Exact,
        ),
        case(
            "query",
            vec![
                ("query", "up".into()),
                ("time", t.clone()),
                ("limit", "x".into()),
            ],
            Exact,
        ),
        case(
            "query",
            vec![
                ("query", "sum(up)".into()),
                ("time", t.clone()),
                ("limit", "1".into()),
            ],
            Exact,
        ),
        case("metadata", vec![("limit_per_metric", "y".into())], Exact),
        case(
            "query_exemplars",
            vec![("query", "sum(".into())],
            NoPosition,
        ),
        // Grafana sends form POSTs.
        post(
            "query",
            vec![("query", "1+1".into()), ("time", t.clone())],
            Bytes,
        ),
        post(
            "query_range",
            vec![
                ("query", "sum by (job) (up)".into()),
                ("start", start.clone()),
                ("end", end.clone()),
                ("step", "120".into()),
            ],
            Exact,
        ),
        post(
            "series",
            vec![
                ("match[]", "up".into()),
                ("start", start.clone()),
                ("end", end.clone()),
            ],
            Exact,
        ),
        post(
            "labels",
            vec![
                ("match[]", "{job=\"a\"}".into()),
                ("start", start.clone()),
                ("end", end.clone()),
            ],
            Exact,
        ),
        post("query_exemplars", vec![("query", "up".into())], Exact),
        // Errors.
        case(
            "query",
            vec![("query", "up".into()), ("time", "abc".into())],
            Exact,
        ),
        case("query", vec![("time", t.clone())], Exact),
        case(
            "query",
            vec![("query", "up".into()), ("timeout", "soon".into())],
            Exact,
        ),
        case("query", vec![("query", "sum(up".into())], NoPosition),
        case(
            "query_range",
            vec![
                ("query", "up".into()),
                ("end", end.clone()),
                ("step", "1".into()),
            ],
            Exact,
        ),
        case(
            "query_range",
            vec![
                ("query", "up".into()),
                ("start", start.clone()),
                ("end", end_before),
                ("step", "1".into()),
            ],
            Exact,
        ),
        case(
            "query_range",
            vec![
                ("query", "up".into()),
                ("start", start.clone()),
                ("end", end.clone()),
                ("step", "0".into()),
            ],
            Exact,
        ),
        case(
            "query_range",
            vec![
                ("query", "up".into()),
                ("start", start.clone()),
                ("end", end.clone()),
                ("step", "x".into()),
            ],
            Exact,
        ),
        case(
            "query_range",
            vec![
                ("query", "up".into()),
                ("start", "0".into()),
                ("end", "11001".into()),
                ("step", "1".into()),
            ],
            Exact,
        ),
        case(
            "query_range",
            vec![
                ("query", "up[5m]".into()),
                ("start", start.clone()),
                ("end", end.clone()),
                ("step", "60".into()),
            ],
            Exact,
        ),
        case("series", vec![], Exact),
        case("series", vec![("match[]", "{job=~\".*\"}".into())], Exact),
        case(
            "series",
            vec![("match[]", "up".into()), ("limit", "-1".into())],
            Exact,
        ),
        case("labels", vec![("start", "x".into())], Exact),
        case(
            "query_range",
            vec![
                ("query", "\"s\"".into()),
                ("start", start.clone()),
                ("end", end.clone()),
                ("step", "60".into()),
            ],
            Exact,
        ),
        case("query", vec![("query", "rate(up)".into())], NoPosition),
        case("query", vec![("query", "up{".into())], NoPosition),
        case("parse_query", vec![("query", "up{".into())], NoPosition),
        case("format_query", vec![("query", "sum(".into())], NoPosition),
        case("label/job/values", vec![("limit", "x".into())], NoPosition),
        case(
            "query",
            vec![
                ("query", "up".into()),
                ("time", "1".into()),
                ("timeout", "1e30".into()),
            ],
            Exact,
        ),
    ];

    let client = reqwest::Client::new();
    let mut report = Vec::new();
    for Case {
        path,
        params,
        check,
        post,
    } in &cases
    {
        let form: String = params
            .iter()
            .map(|(k, v)| {
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair(k, v)
                    .finish()
            })
            .collect::<Vec<_>>()
            .join("&");
        let (uri, request) = if *post {
            let uri = format!("/api/v1/{path}");
            let request = Request::post(&uri)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(form.clone()));
            (uri, request)
        } else {
            let uri = format!("/api/v1/{path}?{form}");
            let request = Request::get(&uri).body(Body::empty());
            (uri, request)
        };
        let theirs = if *post {
            client
                .post(format!("{}{uri}", prometheus.url()))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.clone())
        } else {
            client.get(format!("{}{uri}", prometheus.url()))
        }
        .send()
        .await
        .expect("prometheus answers");
        let their_status = theirs.status().as_u16();
        let their_body = theirs.text().await.expect("body");
        let resp = ours
            .clone()
            .oneshot(request.expect("request"))
            .await
            .expect("infallible");
        let our_status = resp.status().as_u16();
        let our_body =
            String::from_utf8_lossy(&resp.into_body().collect().await.expect("body").to_bytes())
                .into_owned();
        let mut a: Value = serde_json::from_str(&our_body).expect("our JSON");
        let mut b: Value = serde_json::from_str(&their_body).expect("their JSON");
        let mut diffs = Vec::new();
        if our_status != their_status {
            diffs.push(format!(
                "status: ours {our_status}, prometheus {their_status}"
            ));
        }
        if *check == NoPosition
            && let Some(e) = b.get_mut("error")
        {
            *e = Value::String(strip_positions(e.as_str().unwrap_or_default()));
        }
        if *check == StatsShape {
            for v in [&mut a, &mut b] {
                if let Some(stats) = v["data"].get_mut("stats") {
                    zero_numbers(stats);
                }
            }
        }
        if *check == Bytes {
            if our_body != their_body {
                diffs.push("bodies differ byte for byte".into());
            }
        } else {
            normalize(&mut a);
            normalize(&mut b);
            same(&a, &b, "", &mut diffs);
        }
        if !diffs.is_empty() {
            report.push(format!(
                "{uri}\n  ours:       {our_body}\n  prometheus: {their_body}\n  {}",
                diffs.join("\n  ")
            ));
        }
    }
    assert!(
        report.is_empty(),
        "{} of {} requests differ from Prometheus:\n{}",
        report.len(),
        cases.len(),
        report.join("\n")
    );
}
