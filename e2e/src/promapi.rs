//! A client for the Prometheus HTTP query API that keeps the whole answer (errors too), and a
//! comparator that tells whether two servers answered a query the same way: same `resultType`, same
//! series label sets, same timestamps, values within a float tolerance, same error type, same number
//! of warnings and infos.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::{Error, Result};

/// One HTTP answer of a Prometheus-compatible API: the status code and the parsed JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    /// The HTTP status code.
    pub http_status: u16,
    /// The JSON body (`status`, `data` or `errorType`/`error`, `warnings`, `infos`).
    pub body: Value,
}

impl ApiResponse {
    /// Whether `status` is `success`.
    pub fn is_success(&self) -> bool {
        self.body["status"] == "success"
    }

    /// `errorType` of an error answer (`bad_data`, `execution`, `timeout`, ...).
    pub fn error_type(&self) -> Option<&str> {
        self.body["errorType"].as_str()
    }

    /// `error` (the message) of an error answer.
    pub fn error(&self) -> Option<&str> {
        self.body["error"].as_str()
    }

    /// `data.resultType` of a query answer.
    pub fn result_type(&self) -> Option<&str> {
        self.body["data"]["resultType"].as_str()
    }

    /// `data.result` as a list (vector and matrix results), empty otherwise.
    pub fn series(&self) -> &[Value] {
        self.body["data"]["result"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The `warnings` strings (absent means none).
    pub fn warnings(&self) -> Vec<&str> {
        strings(&self.body["warnings"])
    }

    /// The `infos` strings (absent means none).
    pub fn infos(&self) -> Vec<&str> {
        strings(&self.body["infos"])
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A Prometheus HTTP API at a base URL (Prometheus itself, or a querier that speaks its API).
#[derive(Debug, Clone)]
pub struct PromApi {
    base: String,
    client: reqwest::Client,
}

impl PromApi {
    /// A client for `base_url` (e.g. `http://127.0.0.1:9090`) with a per-request timeout.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Request {
                step: "build HTTP client".into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            base: base_url.trim_end_matches('/').to_string(),
            client,
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// `GET <base>/api/v1/<path>?params`: any answer with a JSON body is returned, error or not.
    pub async fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<ApiResponse> {
        let url = format!("{}/api/v1/{path}", self.base);
        let step = format!("GET {url} {params:?}");
        let resp = self
            .client
            .get(&url)
            .query(params)
            .send()
            .await
            .map_err(|e| Error::Request {
                step: step.clone(),
                message: e.to_string(),
            })?;
        let http_status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| Error::Request {
            step: step.clone(),
            message: e.to_string(),
        })?;
        let body = serde_json::from_str(&text).map_err(|e| Error::Request {
            step,
            message: format!("HTTP {http_status}, body is not JSON ({e}): {text:.500}"),
        })?;
        Ok(ApiResponse { http_status, body })
    }

    /// An instant query at `time` (Unix seconds), with extra parameters (e.g. `("dedup", "false")`).
    pub async fn instant(
        &self,
        expr: &str,
        time: f64,
        extra: &[(&str, &str)],
    ) -> Result<ApiResponse> {
        let time = format_seconds(time);
        let mut params = vec![("query", expr), ("time", time.as_str())];
        params.extend_from_slice(extra);
        self.get("query", &params).await
    }

    /// A range query from `start` to `end` (Unix seconds) every `step` seconds, with extra parameters.
    pub async fn range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: f64,
        extra: &[(&str, &str)],
    ) -> Result<ApiResponse> {
        let (start, end, step) = (
            format_seconds(start),
            format_seconds(end),
            format_seconds(step),
        );
        let mut params = vec![
            ("query", expr),
            ("start", start.as_str()),
            ("end", end.as_str()),
            ("step", step.as_str()),
        ];
        params.extend_from_slice(extra);
        self.get("query_range", &params).await
    }
}

/// Seconds with millisecond precision, as Prometheus parses them.
fn format_seconds(s: f64) -> String {
    format!("{s:.3}")
}

/// How close two sample values must be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Largest relative difference `|a-b| / (|a|+|b|)` accepted (Prometheus's promqltest rule).
    pub relative: f64,
    /// Differences at most this large are accepted whatever the magnitudes (float noise around 0).
    pub absolute: f64,
}

impl Default for Tolerance {
    /// Relative 1e-9, absolute 1e-12.
    fn default() -> Self {
        Self {
            relative: 1e-9,
            absolute: 1e-12,
        }
    }
}

impl Tolerance {
    /// Whether `a` and `b` count as the same value (two NaNs are the same; infinities must match).
    pub fn equal(&self, a: f64, b: f64) -> bool {
        if a.is_nan() && b.is_nan() {
            return true;
        }
        if a == b {
            return true;
        }
        if !a.is_finite() || !b.is_finite() {
            return false;
        }
        let diff = (a - b).abs();
        if diff <= self.absolute {
            return true;
        }
        let sum = a.abs() + b.abs();
        if a == 0.0 || b == 0.0 || sum < f64::MIN_POSITIVE {
            return diff < self.relative * f64::MIN_POSITIVE;
        }
        diff / sum.min(f64::MAX) < self.relative
    }
}

/// One way the answer under test differs from the reference answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// What differs, e.g. `series {job="a"} at 1700000060: 1.5 vs 1.25`.
    pub detail: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// How to compare two answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompareOptions {
    /// Sample value tolerance.
    pub tolerance: Tolerance,
    /// The vector's order matters (`sort`, `sort_desc`, `sort_by_label`...): the sequences of values
    /// must match element by element (labels of tied values may come in any order).
    pub ordered: bool,
    /// With `ordered`, the sequences of label sets must match too (`sort_by_label`).
    pub ordered_labels: bool,
    /// Compare the number of `warnings` and of `infos` too.
    pub annotations: bool,
    /// Labels removed from our series before comparing (e.g. the external labels a querier adds that
    /// Prometheus's own API does not show).
    pub drop_labels: Vec<String>,
}

/// Compares `ours` against `reference` and lists every difference (empty: the same answer).
pub fn compare(
    reference: &ApiResponse,
    ours: &ApiResponse,
    opts: &CompareOptions,
) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut miss = |detail: String| out.push(Mismatch { detail });
    match (reference.is_success(), ours.is_success()) {
        (false, false) => {
            if reference.error_type() != ours.error_type() {
                miss(format!(
                    "error type {:?} vs {:?} ({:?} vs {:?})",
                    reference.error_type(),
                    ours.error_type(),
                    reference.error(),
                    ours.error()
                ));
            }
            return out;
        }
        (false, true) => {
            miss(format!(
                "reference failed ({:?}: {:?}) but ours succeeded",
                reference.error_type(),
                reference.error()
            ));
            return out;
        }
        (true, false) => {
            miss(format!(
                "ours failed (HTTP {}, {:?}: {:?}) but the reference succeeded",
                ours.http_status,
                ours.error_type(),
                ours.error()
            ));
            return out;
        }
        (true, true) => {}
    }
    if opts.annotations {
        let (rw, ow) = (reference.warnings(), ours.warnings());
        if rw.len() != ow.len() {
            miss(format!("warnings {rw:?} vs {ow:?}"));
        }
        let (ri, oi) = (reference.infos(), ours.infos());
        if ri.len() != oi.len() {
            miss(format!("infos {ri:?} vs {oi:?}"));
        }
    }
    let (rt, ot) = (reference.result_type(), ours.result_type());
    if rt != ot {
        miss(format!("resultType {rt:?} vs {ot:?}"));
        return out;
    }
    let rr = &reference.body["data"]["result"];
    let mut or = ours.body["data"]["result"].clone();
    if !opts.drop_labels.is_empty()
        && let Some(list) = or.as_array_mut()
    {
        for s in list {
            if let Some(m) = s.get_mut("metric").and_then(Value::as_object_mut) {
                m.retain(|k, _| !opts.drop_labels.contains(k));
            }
        }
    }
    let or = &or;
    let tol = &opts.tolerance;
    match rt {
        Some("scalar") | Some("string") => compare_point("result", rr, or, tol, &mut miss),
        Some("vector") => {
            compare_series_sets(rr, or, tol, &mut miss);
            if opts.ordered {
                compare_order(rr, or, tol, opts.ordered_labels, &mut miss);
            }
        }
        Some("matrix") => compare_series_sets(rr, or, tol, &mut miss),
        other => miss(format!("unknown resultType {other:?}")),
    }
    out
}

/// `{a="1", b="2"}` with labels sorted by name: the identity of a series.
pub fn label_key(metric: &Value) -> String {
    let mut labels: Vec<(&str, &str)> = metric
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("<not a string>")))
                .collect()
        })
        .unwrap_or_default();
    labels.sort_unstable();
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", Value::String((*v).to_string())))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

/// A sample value string (`"1.5"`, `"NaN"`, `"+Inf"`, `"-Inf"`) as a float.
pub fn parse_value(v: &Value) -> Option<f64> {
    match v.as_str()? {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        s => s.parse().ok(),
    }
}

/// A timestamp (seconds, possibly fractional) in milliseconds.
fn ts_ms(v: &Value) -> Option<i64> {
    v.as_f64().map(|s| (s * 1000.0).round() as i64)
}

fn compare_point(what: &str, r: &Value, o: &Value, tol: &Tolerance, miss: &mut impl FnMut(String)) {
    let (rt, ot) = (ts_ms(&r[0]), ts_ms(&o[0]));
    if rt != ot {
        miss(format!("{what}: timestamp {rt:?} ms vs {ot:?} ms"));
        return;
    }
    let (rv, ov) = (&r[1], &o[1]);
    if rv == ov {
        return;
    }
    match (parse_value(rv), parse_value(ov)) {
        (Some(a), Some(b)) if tol.equal(a, b) => {}
        _ => miss(format!("{what} at {}: value {rv} vs {ov}", r[0])),
    }
}

fn compare_histogram(
    what: &str,
    r: &Value,
    o: &Value,
    tol: &Tolerance,
    miss: &mut impl FnMut(String),
) {
    let (rt, ot) = (ts_ms(&r[0]), ts_ms(&o[0]));
    if rt != ot {
        miss(format!(
            "{what}: histogram timestamp {rt:?} ms vs {ot:?} ms"
        ));
        return;
    }
    let (rh, oh) = (&r[1], &o[1]);
    let close = |a: &Value, b: &Value| match (parse_value(a), parse_value(b)) {
        (Some(x), Some(y)) => tol.equal(x, y),
        _ => a == b,
    };
    let rb = rh["buckets"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let ob = oh["buckets"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let buckets_ok = rb.len() == ob.len()
        && rb.iter().zip(ob).all(|(x, y)| {
            // [boundary rule, lower, upper, count]
            x[0] == y[0] && close(&x[1], &y[1]) && close(&x[2], &y[2]) && close(&x[3], &y[3])
        });
    if !close(&rh["count"], &oh["count"]) || !close(&rh["sum"], &oh["sum"]) || !buckets_ok {
        miss(format!("{what} at {}: histogram {rh} vs {oh}", r[0]));
    }
}

/// Samples of one series: `(value points, histogram points)`.
type Points<'a> = (&'a [Value], &'a [Value]);

fn points(series: &Value) -> Points<'_> {
    let list = |key: &str| {
        series[key]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
    };
    if series.get("values").is_some() || series.get("histograms").is_some() {
        (list("values"), list("histograms"))
    } else if series.get("histogram").is_some() {
        (&[], std::slice::from_ref(&series["histogram"]))
    } else {
        (std::slice::from_ref(&series["value"]), &[])
    }
}

fn index(result: &Value) -> (BTreeMap<String, &Value>, Vec<String>) {
    let mut map = BTreeMap::new();
    let mut dups = Vec::new();
    for s in result.as_array().map(Vec::as_slice).unwrap_or_default() {
        let key = label_key(&s["metric"]);
        if map.insert(key.clone(), s).is_some() {
            dups.push(key);
        }
    }
    (map, dups)
}

/// At most this many sample differences are listed per series.
const MAX_POINT_MISMATCHES: usize = 3;

fn compare_series_sets(r: &Value, o: &Value, tol: &Tolerance, miss: &mut impl FnMut(String)) {
    let (rmap, rdups) = index(r);
    let (omap, odups) = index(o);
    for d in rdups {
        miss(format!("reference has duplicate series {d}"));
    }
    for d in odups {
        miss(format!("ours has duplicate series {d}"));
    }
    for key in rmap.keys().filter(|k| !omap.contains_key(*k)) {
        miss(format!("series {key} missing from ours"));
    }
    for key in omap.keys().filter(|k| !rmap.contains_key(*k)) {
        miss(format!("series {key} only in ours"));
    }
    for (key, rs) in &rmap {
        let Some(os) = omap.get(key) else { continue };
        let ((rv, rh), (ov, oh)) = (points(rs), points(os));
        let mut n = 0;
        let mut limited = |m: String| {
            n += 1;
            if n <= MAX_POINT_MISMATCHES {
                miss(m);
            } else if n == MAX_POINT_MISMATCHES + 1 {
                miss(format!("series {key}: more sample differences not shown"));
            }
        };
        if rv.len() != ov.len() || rh.len() != oh.len() {
            limited(format!(
                "series {key}: {} float / {} histogram samples vs {} / {}",
                rv.len(),
                rh.len(),
                ov.len(),
                oh.len()
            ));
        }
        let what = format!("series {key}");
        // Aligned by timestamp, so one missing sample is reported once, not as a shifted tail.
        let by_ts = |pts: &[Value]| -> BTreeMap<Option<i64>, Value> {
            pts.iter().map(|p| (ts_ms(&p[0]), p.clone())).collect()
        };
        for (cmp_hist, rp, op) in [(false, rv, ov), (true, rh, oh)] {
            let (ra, oa) = (by_ts(rp), by_ts(op));
            for (t, p) in &ra {
                match oa.get(t) {
                    Some(q) if cmp_hist => compare_histogram(&what, p, q, tol, &mut limited),
                    Some(q) => compare_point(&what, p, q, tol, &mut limited),
                    None if rp.len() == op.len() => {
                        limited(format!("{what}: no sample at {} in ours", p[0]))
                    }
                    None => {}
                }
            }
        }
    }
}

fn compare_order(
    r: &Value,
    o: &Value,
    tol: &Tolerance,
    labels: bool,
    miss: &mut impl FnMut(String),
) {
    if labels {
        let keys = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().map(|s| label_key(&s["metric"])).collect())
                .unwrap_or_default()
        };
        let (rk, ok) = (keys(r), keys(o));
        if rk != ok {
            miss(format!("order of series {rk:?} vs {ok:?}"));
        }
    }
    let values = |v: &Value| -> Vec<f64> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|s| parse_value(&s["value"][1]).unwrap_or(f64::NAN))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (rv, ov) = (values(r), values(o));
    if rv.len() == ov.len() && rv.iter().zip(&ov).all(|(a, b)| tol.equal(*a, *b)) {
        return;
    }
    miss(format!("order of values {rv:?} vs {ov:?}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(data: Value) -> ApiResponse {
        ApiResponse {
            http_status: 200,
            body: json!({"status": "success", "data": data}),
        }
    }

    fn err(kind: &str) -> ApiResponse {
        ApiResponse {
            http_status: 400,
            body: json!({"status": "error", "errorType": kind, "error": "boom"}),
        }
    }

    fn vector(items: &[(&str, f64, &str)]) -> ApiResponse {
        let result: Vec<Value> = items
            .iter()
            .map(|(job, t, v)| json!({"metric": {"job": job}, "value": [t, v]}))
            .collect();
        ok(json!({"resultType": "vector", "result": result}))
    }

    fn opts() -> CompareOptions {
        CompareOptions::default()
    }

    #[test]
    fn tolerance_follows_the_relative_rule() {
        let t = Tolerance::default();
        assert!(t.equal(1.0, 1.0 + 1e-12));
        assert!(!t.equal(1.0, 1.0 + 1e-6));
        assert!(t.equal(f64::NAN, f64::NAN));
        assert!(!t.equal(f64::NAN, 1.0));
        assert!(t.equal(f64::INFINITY, f64::INFINITY));
        assert!(!t.equal(f64::INFINITY, f64::NEG_INFINITY));
        assert!(t.equal(0.0, 1e-13), "absolute floor");
        assert!(!t.equal(0.0, 1e-6));
        assert!(t.equal(1e20, 1e20 * (1.0 + 1e-12)));
    }

    #[test]
    fn same_vector_in_other_order_is_equal_unless_ordered() {
        let a = vector(&[("a", 10.0, "1"), ("b", 10.0, "2")]);
        let b = vector(&[("b", 10.0, "2.0000000000001"), ("a", 10.0, "1")]);
        assert_eq!(compare(&a, &b, &opts()), vec![]);
        let ordered = CompareOptions {
            ordered: true,
            ..opts()
        };
        assert_eq!(compare(&a, &b, &ordered).len(), 1);
        let c = vector(&[("b", 10.0, "1"), ("a", 10.0, "1")]);
        let d = vector(&[("a", 10.0, "1"), ("b", 10.0, "1")]);
        assert_eq!(
            compare(&c, &d, &ordered),
            vec![],
            "ties may come in any order"
        );
        let by_labels = CompareOptions {
            ordered_labels: true,
            ..ordered
        };
        assert_eq!(compare(&c, &d, &by_labels).len(), 1);
    }

    #[test]
    fn dropped_labels_are_ignored_in_ours() {
        let a = vector(&[("a", 10.0, "1")]);
        let mut b = a.clone();
        b.body["data"]["result"][0]["metric"]["cluster"] = json!("eu");
        assert_eq!(compare(&a, &b, &opts()).len(), 2);
        let drop = CompareOptions {
            drop_labels: vec!["cluster".into()],
            ..opts()
        };
        assert_eq!(compare(&a, &b, &drop), vec![]);
        let scalar = ok(json!({"resultType": "scalar", "result": [10, "1"]}));
        assert_eq!(
            compare(&scalar, &scalar, &drop),
            vec![],
            "scalars have no labels"
        );
    }

    #[test]
    fn value_label_timestamp_and_type_differences_are_found() {
        let a = vector(&[("a", 10.0, "1"), ("b", 10.0, "2")]);
        assert_eq!(
            compare(
                &a,
                &vector(&[("a", 10.0, "1"), ("b", 10.0, "2.1")]),
                &opts()
            )
            .len(),
            1
        );
        assert_eq!(
            compare(&a, &vector(&[("a", 10.0, "1"), ("c", 10.0, "2")]), &opts()).len(),
            2
        );
        assert_eq!(
            compare(&a, &vector(&[("a", 10.0, "1"), ("b", 11.0, "2")]), &opts()).len(),
            1
        );
        assert_eq!(compare(&a, &vector(&[("a", 10.0, "1")]), &opts()).len(), 1);
        let scalar = ok(json!({"resultType": "scalar", "result": [10, "1"]}));
        assert_eq!(compare(&a, &scalar, &opts()).len(), 1);
        assert_eq!(compare(&scalar, &scalar, &opts()), vec![]);
    }

    #[test]
    fn matrices_are_compared_point_by_point() {
        let m = |vals: Value| {
            ok(
                json!({"resultType": "matrix", "result": [{"metric": {"__name__": "x"}, "values": vals}]}),
            )
        };
        let a = m(json!([[1, "1"], [2, "NaN"], [3, "+Inf"]]));
        assert_eq!(compare(&a, &a.clone(), &opts()), vec![]);
        assert_eq!(
            compare(&a, &m(json!([[1, "1"], [2, "NaN"], [3, "-Inf"]])), &opts()).len(),
            1
        );
        // A missing point is reported once (count), not as a shifted tail.
        assert_eq!(
            compare(&a, &m(json!([[1, "1"], [3, "+Inf"]])), &opts()).len(),
            1
        );
    }

    #[test]
    fn errors_compare_by_type() {
        assert_eq!(compare(&err("bad_data"), &err("bad_data"), &opts()), vec![]);
        assert_eq!(
            compare(&err("bad_data"), &err("execution"), &opts()).len(),
            1
        );
        assert_eq!(compare(&err("bad_data"), &vector(&[]), &opts()).len(), 1);
        assert_eq!(compare(&vector(&[]), &err("bad_data"), &opts()).len(), 1);
    }

    #[test]
    fn annotations_count_when_asked() {
        let a = vector(&[]);
        let mut b = vector(&[]);
        b.body["infos"] = json!(["PromQL info: metric might not be a counter"]);
        assert_eq!(compare(&a, &b, &opts()), vec![]);
        let with = CompareOptions {
            annotations: true,
            ..opts()
        };
        assert_eq!(compare(&a, &b, &with).len(), 1);
    }

    #[test]
    fn label_keys_ignore_label_order() {
        assert_eq!(
            label_key(&json!({"b": "2", "a": "1"})),
            label_key(&json!({"a": "1", "b": "2"}))
        );
        assert_ne!(label_key(&json!({"a": "1"})), label_key(&json!({"a": "2"})));
    }
}
