//! Query endpoint tests over in-memory sources: JSON compared structurally, error shapes and
//! codes, parameter mapping, timeouts, concurrency and cancellation. The helpers here serve
//! `tests_meta` too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use promql_parser::label::Matcher;
use strata_promql::{Engine, QueryValue, Queryable, QueryableError, Series};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use strata_promql::{Labels, MemQueryable};
use tokio::sync::Notify;
use tower::ServiceExt;

use super::*;
use crate::{QueryOptions, StoreSource, StoreStatus, StoreView};

pub(super) fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

/// `up` for jobs a (1) and b (0), `http_requests_total` for job a (+1 per 15 s), every 15 s
/// from 0 to 600 s.
pub(super) fn data() -> MemQueryable {
    let mut m = MemQueryable::new();
    let ts: Vec<i64> = (0..=40).map(|i| i * 15_000).collect();
    let up_a: Vec<(i64, f64)> = ts.iter().map(|t| (*t, 1.0)).collect();
    let up_b: Vec<(i64, f64)> = ts.iter().map(|t| (*t, 0.0)).collect();
    let reqs: Vec<(i64, f64)> = ts.iter().map(|t| (*t, (*t / 15_000) as f64)).collect();
    m.add(
        labels(&[("__name__", "up"), ("job", "a"), ("instance", "h1:9100")]),
        &up_a,
    );
    m.add(
        labels(&[("__name__", "up"), ("job", "b"), ("instance", "h2:9100")]),
        &up_b,
    );
    m.add(
        labels(&[("__name__", "http_requests_total"), ("job", "a")]),
        &reqs,
    );
    m
}

pub(super) fn app() -> Router {
    app_with(Arc::new(MemSource::new(data())), ApiSettings::default())
}

pub(super) fn app_with(source: Arc<dyn StoreSource>, settings: ApiSettings) -> Router {
    router(source, settings)
}

pub(super) async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let v = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, v)
}

pub(super) async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    send(app, Request::get(uri).body(Body::empty()).expect("request")).await
}

pub(super) async fn post(app: &Router, uri: &str, form: &str) -> (StatusCode, Value) {
    let req = Request::post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form.to_string()))
        .expect("request");
    send(app, req).await
}

pub(super) fn assert_error(got: &(StatusCode, Value), status: u16, typ: &str, message: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    assert_eq!(
        got.1,
        json!({"status": "error", "errorType": typ, "error": message})
    );
}

#[tokio::test]
async fn instant_query_returns_a_vector() {
    let got = get(&app(), "/api/v1/query?query=up&time=300").await;
    assert_eq!(got.0, StatusCode::OK);
    assert_eq!(
        got.1,
        json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"__name__": "up", "instance": "h1:9100", "job": "a"}, "value": [300, "1"]},
            {"metric": {"__name__": "up", "instance": "h2:9100", "job": "b"}, "value": [300, "0"]}
        ]}})
    );
}

#[tokio::test]
async fn grafana_health_check_and_form_post() {
    let app = app();
    let want = json!({"status": "success", "data": {"resultType": "scalar", "result": [1700000000.5, "2"]}});
    let got = get(&app, "/api/v1/query?query=1%2B1&time=1700000000.5").await;
    assert_eq!(got, (StatusCode::OK, want.clone()));
    let got = post(&app, "/api/v1/query", "query=1%2B1&time=1700000000.5").await;
    assert_eq!(got, (StatusCode::OK, want.clone()));
    // Body values win over URL values, as with Go's r.FormValue.
    let got = post(
        &app,
        "/api/v1/query?query=3",
        "query=1%2B1&time=1700000000.5",
    )
    .await;
    assert_eq!(got, (StatusCode::OK, want));
}

#[tokio::test]
async fn special_values_are_formatted_as_go_does() {
    let app = app();
    let got = get(&app, "/api/v1/query?query=up%20/%200&time=300").await;
    let vals: Vec<&Value> = got.1["data"]["result"]
        .as_array()
        .expect("result")
        .iter()
        .map(|s| &s["value"][1])
        .collect();
    assert_eq!(vals, vec![&json!("+Inf"), &json!("NaN")]);
    let got = get(&app, "/api/v1/query?query=0.1%2B0.2&time=0.001").await;
    assert_eq!(
        got.1["data"]["result"],
        json!([0.001, "0.30000000000000004"])
    );
    let got = get(&app, "/api/v1/query?query=%22hi%22&time=2").await;
    assert_eq!(
        got.1["data"],
        json!({"resultType": "string", "result": [2, "hi"]})
    );
}

#[tokio::test]
async fn range_query_returns_a_matrix() {
    let app = app();
    let got = get(
        &app,
        "/api/v1/query_range?query=rate(http_requests_total%5B1m%5D)&start=60&end=120&step=30s",
    )
    .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    // The values are the engine's own (its arithmetic is tested by the conformance suite);
    // here they must come through as Go-formatted strings at float-second timestamps.
    let direct = Engine::default()
        .range_query(
            &data(),
            "rate(http_requests_total[1m])",
            60_000,
            120_000,
            30_000,
        )
        .await
        .expect("engine");
    let QueryValue::Matrix(m) = direct.value else {
        panic!("not a matrix")
    };
    assert_eq!(m.len(), 1);
    let values: Vec<Value> = m[0]
        .points
        .iter()
        .map(|(t, f)| {
            let ts: Value = serde_json::from_str(&format_timestamp(*t)).expect("number");
            json!([ts, format_float(*f)])
        })
        .collect();
    assert_eq!(values.len(), 3);
    assert_eq!(
        got.1["data"],
        json!({"resultType": "matrix", "result": [{"metric": {"job": "a"}, "values": values}]})
    );
    // RFC 3339 times and float-second steps give the same answer.
    let rfc = get(
        &app,
        "/api/v1/query_range?query=rate(http_requests_total%5B1m%5D)&start=1970-01-01T00:01:00Z&end=1970-01-01T00:02:00.000Z&step=30",
    )
    .await;
    assert_eq!(rfc, got);
}

#[tokio::test]
async fn query_parameter_errors_match_prometheus() {
    let app = app();
    assert_error(
        &get(&app, "/api/v1/query?query=up&time=abc").await,
        400,
        "bad_data",
        r#"invalid parameter "time": invalid time value for 'time': cannot parse "abc" to a valid timestamp"#,
    );
    assert_error(
        &get(&app, "/api/v1/query?time=1").await,
        400,
        "bad_data",
        r#"invalid parameter "query": unknown position: parse error: no expression found in input"#,
    );
    assert_error(
        &get(&app, "/api/v1/query?query=up&timeout=soon").await,
        400,
        "bad_data",
        r#"invalid parameter "timeout": cannot parse "soon" to a valid duration"#,
    );
    // Prometheus says `1:7: parse error: unclosed left parenthesis`; the parser we use knows
    // no positions.
    assert_error(
        &get(&app, "/api/v1/query?query=sum(up").await,
        400,
        "bad_data",
        r#"invalid parameter "query": parse error: unclosed left parenthesis"#,
    );
    assert_error(
        &post(
            &app,
            "/api/v1/query_range",
            "query=rate(up)&start=0&end=1&step=1",
        )
        .await,
        400,
        "bad_data",
        r#"invalid parameter "query": parse error: expected type range vector in call to function "rate", got instant vector"#,
    );

    let range = |q: &str| format!("/api/v1/query_range?query=up&{q}");
    assert_error(
        &get(&app, &range("end=1&step=1")).await,
        400,
        "bad_data",
        r#"invalid parameter "start": cannot parse "" to a valid timestamp"#,
    );
    assert_error(
        &get(&app, &range("start=10&end=1&step=1")).await,
        400,
        "bad_data",
        r#"invalid parameter "end": end timestamp must not be before start time"#,
    );
    assert_error(
        &get(&app, &range("start=1&end=10&step=0")).await,
        400,
        "bad_data",
        r#"invalid parameter "step": zero or negative query resolution step widths are not accepted. Try a positive integer"#,
    );
    assert_error(
        &get(&app, &range("start=1&end=10&step=x")).await,
        400,
        "bad_data",
        r#"invalid parameter "step": cannot parse "x" to a valid duration"#,
    );
    assert_error(
        &get(&app, &range("start=0&end=11001&step=1")).await,
        400,
        "bad_data",
        "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
    );
    assert_error(
        &get(
            &app,
            "/api/v1/query_range?query=up%5B5m%5D&start=0&end=10&step=1",
        )
        .await,
        400,
        "bad_data",
        r#"invalid parameter "query": invalid expression type "range vector" for range query, must be Scalar or instant Vector"#,
    );
}

/// A view whose every store call fails.
struct Failing;

#[async_trait]
impl Queryable for Failing {
    async fn select(&self, _: &[Matcher], _: i64, _: i64) -> Result<Vec<Series>, QueryableError> {
        Err(QueryableError::Storage(
            "store 10.0.0.1:10901: connection refused".into(),
        ))
    }
    async fn label_names(&self, _: i64, _: i64) -> Result<Vec<String>, QueryableError> {
        Err(QueryableError::Storage("down".into()))
    }
    async fn label_values(&self, _: &str, _: i64, _: i64) -> Result<Vec<String>, QueryableError> {
        Err(QueryableError::Storage("down".into()))
    }
}

#[async_trait]
impl StoreView for Failing {
    async fn series_labels(
        &self,
        _: &[Matcher],
        _: i64,
        _: i64,
    ) -> Result<Vec<Labels>, QueryableError> {
        Err(QueryableError::Storage(
            "store 10.0.0.1:10901: connection refused".into(),
        ))
    }
    async fn label_names_matching(
        &self,
        _: &[Matcher],
        _: i64,
        _: i64,
    ) -> Result<Vec<String>, QueryableError> {
        Err(QueryableError::Storage(
            "store 10.0.0.1:10901: connection refused".into(),
        ))
    }
    async fn label_values_matching(
        &self,
        _: &str,
        _: &[Matcher],
        _: i64,
        _: i64,
    ) -> Result<Vec<String>, QueryableError> {
        Err(QueryableError::Storage(
            "store 10.0.0.1:10901: connection refused".into(),
        ))
    }
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

struct FailingSource;

impl StoreSource for FailingSource {
    fn view(&self, _: &QueryOptions) -> Arc<dyn StoreView> {
        Arc::new(Failing)
    }
    fn stores(&self) -> Vec<StoreStatus> {
        Vec::new()
    }
}

#[tokio::test]
async fn store_failures_are_execution_errors_naming_the_store() {
    let app = app_with(Arc::new(FailingSource), ApiSettings::default());
    assert_error(
        &get(&app, "/api/v1/query?query=up&time=1").await,
        422,
        "execution",
        "expanding series: store 10.0.0.1:10901: connection refused",
    );
    let (status, v) = get(&app, "/api/v1/series?match[]=up").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["error"]
            .as_str()
            .expect("error")
            .contains("10.0.0.1:10901"),
        "{v}"
    );
    let (status, _) = get(&app, "/api/v1/labels").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn warnings_and_infos_from_engine_and_view() {
    let source = MemSource::new(data()).with_warnings(vec![
        "store 10.0.0.2:10901 failed: connection refused".into(),
    ]);
    let app = app_with(Arc::new(source), ApiSettings::default());
    let (status, v) = get(
        &app,
        "/api/v1/query?query=quantile(2,%20rate(up%5B1m%5D))&time=300",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let warnings = v["warnings"].as_array().expect("warnings");
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .is_some_and(|w| w.contains("quantile value should be between 0 and 1"))),
        "{v}"
    );
    assert!(
        warnings.contains(&json!("store 10.0.0.2:10901 failed: connection refused")),
        "{v}"
    );
    let infos = v["infos"].as_array().expect("infos");
    assert!(
        infos.iter().any(|w| w
            .as_str()
            .is_some_and(|w| w.contains("might not be a counter"))),
        "{v}"
    );
    // Metadata endpoints carry the view's warnings too.
    let (_, v) = get(&app, "/api/v1/labels").await;
    assert_eq!(
        v["warnings"],
        json!(["store 10.0.0.2:10901 failed: connection refused"])
    );
    // No warnings: the keys are absent.
    let (_, v) = get(&super::tests::app(), "/api/v1/query?query=up&time=300").await;
    assert!(
        v.get("warnings").is_none() && v.get("infos").is_none(),
        "{v}"
    );
}

#[tokio::test]
async fn stats_all_adds_timings_and_samples() {
    let (status, v) = get(
        &app(),
        "/api/v1/query_range?query=up&start=0&end=600&step=60&stats=all",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let stats = &v["data"]["stats"];
    for k in [
        "evalTotalTime",
        "resultSortTime",
        "queryPreparationTime",
        "innerEvalTime",
        "execQueueTime",
        "execTotalTime",
    ] {
        assert!(
            stats["timings"][k].as_f64().is_some_and(|s| s >= 0.0),
            "{k}: {stats}"
        );
    }
    // Two `up` series with 41 samples each were read.
    assert_eq!(stats["samples"]["totalQueryableSamples"], json!(82));
    assert!(
        stats["samples"]["peakSamples"]
            .as_u64()
            .is_some_and(|n| n >= 22),
        "{stats}"
    );
    assert!(v.get("warnings").is_none(), "{v}");
    let (_, v) = get(&app(), "/api/v1/query?query=up&time=60").await;
    assert!(v["data"].get("stats").is_none());
    // Prometheus 3.14 deprecates values other than `true` and `all`.
    let (_, v) = get(&app(), "/api/v1/query?query=up&time=60&stats=1").await;
    assert!(v["data"]["stats"].is_object());
    assert_eq!(
        v["warnings"],
        json!([
            r#"value "1" for parameter "stats" is deprecated and will be rejected in the next major release, use "true" or "all""#
        ])
    );
}

/// Records the options of every view it hands out.
struct Recording {
    inner: MemSource,
    seen: Mutex<Vec<QueryOptions>>,
}

impl StoreSource for Recording {
    fn view(&self, opts: &QueryOptions) -> Arc<dyn StoreView> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(opts.clone());
        }
        self.inner.view(opts)
    }
    fn stores(&self) -> Vec<StoreStatus> {
        self.inner.stores()
    }
}

async fn options_for(settings: ApiSettings, uri: &str) -> Result<QueryOptions, Value> {
    let source = Arc::new(Recording {
        inner: MemSource::new(data()),
        seen: Mutex::new(Vec::new()),
    });
    let app = app_with(source.clone(), settings);
    let (status, v) = get(&app, uri).await;
    if status != StatusCode::OK {
        return Err(v);
    }
    let seen = source.seen.lock().expect("lock");
    assert_eq!(seen.len(), 1, "one view per request");
    Ok(seen[0].clone())
}

#[tokio::test]
async fn thanos_parameters_map_to_query_options() {
    let d = ApiSettings::default;
    let o = options_for(d(), "/api/v1/query?query=up&time=1")
        .await
        .expect("ok");
    assert_eq!(
        o,
        QueryOptions {
            dedup: true,
            partial_response: true,
            max_source_resolution_ms: 0,
            auto_downsampling: false,
            step_ms: 0,
            ..QueryOptions::default()
        }
    );
    let o = options_for(
        d(),
        "/api/v1/query?query=up&time=1&dedup=false&partial_response=0&max_source_resolution=5m",
    )
    .await
    .expect("ok");
    assert_eq!(
        o,
        QueryOptions {
            dedup: false,
            partial_response: false,
            max_source_resolution_ms: 300_000,
            auto_downsampling: false,
            step_ms: 0,
            ..QueryOptions::default()
        }
    );
    let o = options_for(
        d(),
        "/api/v1/query_range?query=up&start=0&end=3600&step=300&max_source_resolution=auto",
    )
    .await
    .expect("ok");
    assert_eq!(
        o,
        QueryOptions {
            dedup: true,
            partial_response: true,
            max_source_resolution_ms: 60_000,
            auto_downsampling: true,
            step_ms: 300_000,
            ..QueryOptions::default()
        }
    );
    for (param, want) in [("1h", 3_600_000), ("0s", 0), ("300", 300_000)] {
        let o = options_for(
            d(),
            &format!("/api/v1/query?query=up&time=1&max_source_resolution={param}"),
        )
        .await
        .expect("ok");
        assert_eq!(o.max_source_resolution_ms, want, "{param}");
    }
    // Defaults come from the flags.
    let flags = ApiSettings {
        partial_response: false,
        auto_downsampling: true,
        ..d()
    };
    let o = options_for(
        flags.clone(),
        "/api/v1/query_range?query=up&start=0&end=60&step=10",
    )
    .await
    .expect("ok");
    assert!(
        !o.partial_response && o.auto_downsampling && o.max_source_resolution_ms == 2_000,
        "{o:?}"
    );
    let o = options_for(
        flags,
        "/api/v1/series?match[]=up&partial_response=true&max_source_resolution=0s",
    )
    .await
    .expect("ok");
    assert!(o.partial_response && !o.auto_downsampling, "{o:?}");

    // Per-request replica labels and store selectors.
    let o = options_for(
        d(),
        "/api/v1/query?query=up&replicaLabels[]=rule_replica&replicaLabels[]=replica&storeMatch[]={__address__=%22a:1%22}&storeMatch[]={cluster=~%22eu.*%22}",
    )
    .await
    .expect("ok");
    assert_eq!(o.replica_labels, ["rule_replica", "replica"]);
    assert_eq!(o.store_matchers.len(), 2);
    let bad = options_for(d(), "/api/v1/query?query=up&storeMatch[]={a=~%22.*%22}")
        .await
        .expect_err("a selector matching everything is refused");
    assert!(bad.to_string().contains("storeMatch[]"), "{bad}");
    let bad = options_for(d(), "/api/v1/query?query=up&dedup=maybe")
        .await
        .expect_err("bad");
    assert_eq!(
        bad["error"],
        json!(r#"'dedup' parameter: strconv.ParseBool: parsing "maybe": invalid syntax"#)
    );
    let bad = options_for(d(), "/api/v1/query?query=up&max_source_resolution=-5m")
        .await
        .expect_err("bad");
    assert_eq!(bad["errorType"], json!("bad_data"));
    let bad = options_for(d(), "/api/v1/query?query=up&max_source_resolution=-300")
        .await
        .expect_err("bad");
    assert_eq!(
        bad["error"],
        json!("negative 'max_source_resolution' is not accepted. Try a positive integer")
    );
    // engine and analyze are ignored.
    options_for(
        d(),
        "/api/v1/query?query=up&time=1&engine=thanos&analyze=true",
    )
    .await
    .expect("ok");
}

/// A source whose store calls never finish; notes when a call starts and when it is dropped.
#[derive(Clone, Default)]
struct Stuck {
    entered: Arc<Notify>,
    dropped: Arc<AtomicBool>,
}

struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Stuck {
    async fn hang<T>(&self) -> T {
        let _flag = DropFlag(self.dropped.clone());
        self.entered.notify_one();
        std::future::pending().await
    }
}

#[async_trait]
impl Queryable for Stuck {
    async fn select(&self, _: &[Matcher], _: i64, _: i64) -> Result<Vec<Series>, QueryableError> {
        self.hang().await
    }
    async fn label_names(&self, _: i64, _: i64) -> Result<Vec<String>, QueryableError> {
        self.hang().await
    }
    async fn label_values(&self, _: &str, _: i64, _: i64) -> Result<Vec<String>, QueryableError> {
        self.hang().await
    }
}

#[async_trait]
impl StoreView for Stuck {
    async fn series_labels(
        &self,
        _: &[Matcher],
        _: i64,
        _: i64,
    ) -> Result<Vec<Labels>, QueryableError> {
        self.hang().await
    }
    async fn label_names_matching(
        &self,
        _: &[Matcher],
        _: i64,
        _: i64,
    ) -> Result<Vec<String>, QueryableError> {
        self.hang().await
    }
    async fn label_values_matching(
        &self,
        _: &str,
        _: &[Matcher],
        _: i64,
        _: i64,
    ) -> Result<Vec<String>, QueryableError> {
        self.hang().await
    }
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

impl StoreSource for Stuck {
    fn view(&self, _: &QueryOptions) -> Arc<dyn StoreView> {
        Arc::new(self.clone())
    }
    fn stores(&self) -> Vec<StoreStatus> {
        Vec::new()
    }
}

#[tokio::test]
async fn query_timeout_flag_and_parameter_the_smaller_wins() {
    let stuck = Stuck::default();
    let short = ApiSettings {
        query_timeout: Duration::from_millis(100),
        ..ApiSettings::default()
    };
    let app = app_with(Arc::new(stuck.clone()), short);
    assert_error(
        &get(&app, "/api/v1/query?query=up&time=1").await,
        503,
        "timeout",
        "query timed out in query execution",
    );
    // The answer does not wait for the evaluation thread; its store call goes right after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stuck.dropped.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the store call was not dropped after the timeout"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let long = ApiSettings {
        query_timeout: Duration::from_secs(3600),
        ..ApiSettings::default()
    };
    let app = app_with(Arc::new(Stuck::default()), long);
    let started = Instant::now();
    assert_error(
        &get(
            &app,
            "/api/v1/query_range?query=up&start=0&end=60&step=15&timeout=0.1",
        )
        .await,
        503,
        "timeout",
        "query timed out in query execution",
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn max_concurrent_queries_queue_behind_a_semaphore() {
    let stuck = Stuck::default();
    let one = ApiSettings {
        max_concurrent: 1,
        ..ApiSettings::default()
    };
    let app = app_with(Arc::new(stuck.clone()), one);
    let first = tokio::spawn({
        let app = app.clone();
        async move { get(&app, "/api/v1/query?query=up&time=1").await }
    });
    stuck.entered.notified().await;
    // The only slot is taken: the second query times out waiting for it.
    assert_error(
        &get(&app, "/api/v1/query?query=up&time=1&timeout=0.2").await,
        503,
        "timeout",
        "query timed out in query queue",
    );
    // Metadata calls do not take a slot: this one reaches the store (and is then abandoned).
    let meta = tokio::spawn({
        let app = app.clone();
        async move { get(&app, "/api/v1/labels").await }
    });
    tokio::time::timeout(Duration::from_secs(5), stuck.entered.notified())
        .await
        .expect("labels call reached the store while the slot was taken");
    first.abort();
    meta.abort();
}

#[tokio::test]
async fn an_abandoned_request_stops_its_store_calls() {
    let stuck = Stuck::default();
    let app = app_with(Arc::new(stuck.clone()), ApiSettings::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let sent = client
        .get(format!("http://{addr}/api/v1/query?query=up&time=1"))
        .send()
        .await;
    assert!(
        sent.is_err(),
        "the query never finishes, the client gives up"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stuck.dropped.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "store call still running after the client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.abort();
}

#[tokio::test]
async fn lookback_delta_parameter() {
    let app = app();
    // The last sample is at 600 s; 700 s is within the default 5m lookback but not within 30 s.
    let (_, v) = get(&app, "/api/v1/query?query=up&time=700").await;
    assert_eq!(v["data"]["result"].as_array().map(Vec::len), Some(2));
    let (_, v) = get(&app, "/api/v1/query?query=up&time=700&lookback_delta=30s").await;
    assert_eq!(v["data"]["result"], json!([]));
}

#[tokio::test]
async fn an_absurd_timeout_flag_does_not_panic() {
    let settings = ApiSettings {
        query_timeout: Duration::MAX,
        ..ApiSettings::default()
    };
    let app = app_with(Arc::new(MemSource::new(data())), settings);
    let (status, _) = get(&app, "/api/v1/query?query=up&time=1").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get(&app, "/api/v1/labels").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_zero_or_negative_timeout_times_out_at_once() {
    for to in ["0", "0s", "-1"] {
        assert_error(
            &get(
                &app(),
                &format!("/api/v1/query?query=up&time=1&timeout={to}"),
            )
            .await,
            503,
            "timeout",
            "query timed out in query execution",
        );
    }
}

#[tokio::test]
async fn requests_are_counted_per_route_and_code() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ApiMetrics::register(&mut registry);
    let app = app_with(
        Arc::new(MemSource::new(data())),
        ApiSettings {
            metrics: Some(metrics),
            ..ApiSettings::default()
        },
    );
    assert_eq!(get(&app, "/api/v1/query?query=up&time=300").await.0, 200);
    assert_eq!(get(&app, "/api/v1/query?query=up&time=300").await.0, 200);
    assert_eq!(get(&app, "/api/v1/query?query=up(").await.0, 400);
    assert_eq!(get(&app, "/api/v1/label/job/values").await.0, 200);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    for line in [
        r#"strata_query_http_requests_total{handler="/api/v1/query",code="200"} 2"#,
        r#"strata_query_http_requests_total{handler="/api/v1/query",code="400"} 1"#,
        r#"strata_query_http_requests_total{handler="/api/v1/label/{name}/values",code="200"} 1"#,
        r#"strata_query_http_request_duration_seconds_count{handler="/api/v1/query",code="200"} 2"#,
        "strata_query_http_requests_in_flight 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

/// A request dropped mid-flight (its client went away) leaves the in-flight gauge.
#[tokio::test]
async fn an_abandoned_request_is_no_longer_in_flight() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ApiMetrics::register(&mut registry);
    let stuck = Stuck::default();
    let app = app_with(
        Arc::new(stuck.clone()),
        ApiSettings {
            metrics: Some(metrics),
            ..ApiSettings::default()
        },
    );
    let gauge = |registry: &prometheus_client::registry::Registry| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text.lines()
            .find(|l| l.starts_with("strata_query_http_requests_in_flight "))
            .map(str::to_string)
    };
    let request = tokio::spawn({
        let app = app.clone();
        async move { get(&app, "/api/v1/labels").await }
    });
    stuck.entered.notified().await;
    assert_eq!(
        gauge(&registry).as_deref(),
        Some("strata_query_http_requests_in_flight 1")
    );
    request.abort();
    assert!(request.await.is_err(), "aborted");
    assert_eq!(
        gauge(&registry).as_deref(),
        Some("strata_query_http_requests_in_flight 0")
    );
}

/// A view whose `select` waits (without blocking its thread) until the test opens the gate;
/// everything else comes from memory.
struct Gated {
    inner: Arc<dyn StoreView>,
    gate: Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl Queryable for Gated {
    async fn select(&self, m: &[Matcher], a: i64, b: i64) -> Result<Vec<Series>, QueryableError> {
        let opened = tokio::time::timeout(Duration::from_secs(60), self.gate.acquire()).await;
        if !matches!(opened, Ok(Ok(_))) {
            return Err(QueryableError::Storage("the gate was never opened".into()));
        }
        self.inner.select(m, a, b).await
    }
    async fn label_names(&self, a: i64, b: i64) -> Result<Vec<String>, QueryableError> {
        self.inner.label_names(a, b).await
    }
    async fn label_values(&self, n: &str, a: i64, b: i64) -> Result<Vec<String>, QueryableError> {
        self.inner.label_values(n, a, b).await
    }
}

#[async_trait]
impl StoreView for Gated {
    async fn series_labels(
        &self,
        m: &[Matcher],
        a: i64,
        b: i64,
    ) -> Result<Vec<Labels>, QueryableError> {
        self.inner.series_labels(m, a, b).await
    }
    async fn label_names_matching(
        &self,
        m: &[Matcher],
        a: i64,
        b: i64,
    ) -> Result<Vec<String>, QueryableError> {
        self.inner.label_names_matching(m, a, b).await
    }
    async fn label_values_matching(
        &self,
        n: &str,
        m: &[Matcher],
        a: i64,
        b: i64,
    ) -> Result<Vec<String>, QueryableError> {
        self.inner.label_values_matching(n, m, a, b).await
    }
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

struct GatedSource {
    inner: MemSource,
    gate: Arc<tokio::sync::Semaphore>,
}

impl StoreSource for GatedSource {
    fn view(&self, opts: &QueryOptions) -> Arc<dyn StoreView> {
        Arc::new(Gated {
            inner: self.inner.view(opts),
            gate: self.gate.clone(),
        })
    }
    fn stores(&self) -> Vec<StoreStatus> {
        self.inner.stores()
    }
}

/// A query waiting for a slow store holds no thread: on this test's single-threaded runtime,
/// another request is answered meanwhile.
#[tokio::test]
async fn a_query_waiting_for_a_store_leaves_the_server_answering() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let app = app_with(
        Arc::new(GatedSource {
            inner: MemSource::new(data()),
            gate: gate.clone(),
        }),
        ApiSettings::default(),
    );
    let slow = tokio::spawn({
        let app = app.clone();
        async move { get(&app, "/api/v1/query?query=up&time=300").await }
    });
    // Let the query reach its blocked store call, then ask for something else.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let other = tokio::time::timeout(
        Duration::from_secs(30),
        get(&app, "/api/v1/status/buildinfo"),
    )
    .await
    .expect("answered while the query's thread is blocked");
    assert_eq!(other.0, StatusCode::OK);
    assert!(
        !slow.is_finished(),
        "the query is still waiting at the gate"
    );
    gate.add_permits(1);
    let (status, v) = slow.await.expect("join");
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["result"].as_array().map(Vec::len), Some(2));
}

/// Records the thread on which each `evaluate` span is opened.
#[derive(Clone, Default)]
struct EvalThreads(Arc<Mutex<Vec<std::thread::ThreadId>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for EvalThreads {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() == "evaluate"
            && let Ok(mut t) = self.0.lock()
        {
            t.push(std::thread::current().id());
        }
    }
}

/// A small evaluation runs on the worker that fetched its series; one above
/// `inline_eval_cost` on another (blocking) thread — so a long evaluation never stalls the
/// async workers. The recording subscriber is this thread's only: the test's single-threaded
/// runtime runs here.
#[tokio::test]
async fn large_evaluations_leave_the_async_worker() {
    use tracing_subscriber::layer::SubscriberExt;
    let seen = EvalThreads::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(seen.clone()));
    let here = std::thread::current().id();
    let source = || Arc::new(MemSource::new(data()));
    let inline = app_with(source(), ApiSettings::default());
    let (status, v) = get(&inline, "/api/v1/query?query=up&time=300").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        *seen.0.lock().expect("lock"),
        vec![here],
        "evaluated inline"
    );

    let offloaded = app_with(
        source(),
        ApiSettings {
            inline_eval_cost: 0,
            ..ApiSettings::default()
        },
    );
    let (status, v) = get(&offloaded, "/api/v1/query?query=up&time=300").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["data"]["result"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        seen.0.lock().expect("lock").len(),
        1,
        "the second evaluation ran on another thread, outside this thread's subscriber"
    );
}
