//! Metadata endpoint tests (`series`, `labels`, label values, `metadata`, exemplars,
//! buildinfo, `format_query`, `parse_query`, `stores`) and Grafana's request sequence.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

use super::tests::{app, app_with, assert_error, data, get, labels, post, send};
use super::{ApiSettings, MemSource};
use crate::StoreStatus;

#[tokio::test]
async fn series_endpoint() {
    let app = app();
    assert_error(
        &get(&app, "/api/v1/series").await,
        400,
        "bad_data",
        "no match[] parameter provided",
    );
    let want = json!({"status": "success", "data": [
        {"__name__": "up", "instance": "h1:9100", "job": "a"},
        {"__name__": "up", "instance": "h2:9100", "job": "b"}
    ]});
    let got = get(&app, "/api/v1/series?match%5B%5D=up&start=0&end=600").await;
    assert_eq!(got, (StatusCode::OK, want.clone()));
    // Grafana POSTs the form; two overlapping selectors give the union once.
    let got = post(
        &app,
        "/api/v1/series",
        "match[]=up&match[]=up%7Bjob%3D%22a%22%7D&start=0&end=600",
    )
    .await;
    assert_eq!(got, (StatusCode::OK, want));
    let (_, v) = get(&app, "/api/v1/series?match[]=up&limit=1").await;
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["warnings"], json!(["results truncated due to limit"]));
    assert_error(
        &get(&app, "/api/v1/series?match[]=%7Bjob%3D~%22.*%22%7D").await,
        400,
        "bad_data",
        r#"invalid parameter "match[]": match[] must contain at least one non-empty matcher"#,
    );
    assert_error(
        &get(&app, "/api/v1/series?match[]=up&limit=-1").await,
        400,
        "bad_data",
        r#"invalid parameter "limit": limit must be non-negative"#,
    );
    assert_error(
        &get(&app, "/api/v1/series?match[]=up&start=x").await,
        400,
        "bad_data",
        r#"invalid parameter "start": invalid time value for 'start': cannot parse "x" to a valid timestamp"#,
    );
    // Outside the data's time range: an empty list, not null.
    let got = get(&app, "/api/v1/series?match[]=up&start=100000&end=200000").await;
    assert_eq!(got.1, json!({"status": "success", "data": []}));
}

#[tokio::test]
async fn labels_and_label_values_endpoints() {
    let app = app();
    let got = get(&app, "/api/v1/labels").await;
    assert_eq!(
        got.1,
        json!({"status": "success", "data": ["__name__", "instance", "job"]})
    );
    let got = post(
        &app,
        "/api/v1/labels",
        "match[]=http_requests_total&start=0&end=600",
    )
    .await;
    assert_eq!(
        got.1,
        json!({"status": "success", "data": ["__name__", "job"]})
    );
    // Grafana's metric browser.
    let got = get(
        &app,
        "/api/v1/label/__name__/values?match[]=%7Bjob%3D%22a%22%7D&start=0&end=600",
    )
    .await;
    assert_eq!(
        got.1,
        json!({"status": "success", "data": ["http_requests_total", "up"]})
    );
    let got = get(&app, "/api/v1/label/job/values").await;
    assert_eq!(got.1, json!({"status": "success", "data": ["a", "b"]}));
    let got = get(&app, "/api/v1/label/job/values?limit=1").await;
    assert_eq!(
        got.1,
        json!({"status": "success", "data": ["a"], "warnings": ["results truncated due to limit"]})
    );
    let got = get(&app, "/api/v1/label/nope/values").await;
    assert_eq!(got.1, json!({"status": "success", "data": []}));
    let got = get(&app, "/api/v1/labels?start=100000").await;
    assert_eq!(got.1, json!({"status": "success", "data": []}));
}

#[tokio::test]
async fn metadata_exemplars_and_buildinfo() {
    let app = app();
    assert_eq!(
        get(&app, "/api/v1/metadata").await.1,
        json!({"status": "success", "data": {}})
    );
    assert_eq!(
        get(&app, "/api/v1/metadata?metric=up&limit=10").await.1,
        json!({"status": "success", "data": {}})
    );
    assert_eq!(
        post(&app, "/api/v1/query_exemplars", "query=up&start=0&end=10")
            .await
            .1,
        json!({"status": "success", "data": []})
    );
    let (_, v) = get(&app, "/api/v1/status/buildinfo").await;
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["version"], json!(env!("CARGO_PKG_VERSION")));
    for k in ["revision", "branch", "buildUser", "buildDate", "goVersion"] {
        assert!(v["data"][k].is_string(), "{k}: {v}");
    }
}

#[tokio::test]
async fn format_and_parse_query() {
    let app = app();
    let got = get(
        &app,
        "/api/v1/format_query?query=sum%20by(job)(rate(x%5B5m%5D))",
    )
    .await;
    assert_eq!(
        got.1,
        json!({"status": "success", "data": "sum by (job) (rate(x[5m]))"})
    );
    let (status, v) = post(&app, "/api/v1/parse_query", "query=up%20%2B%201").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["data"]["type"], "binaryExpr");
    assert_eq!(v["data"]["lhs"]["name"], "up");
    let (status, v) = get(&app, "/api/v1/parse_query?query=up%7B").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.starts_with(r#"invalid parameter "query": "#)),
        "{v}"
    );
}

#[tokio::test]
async fn stores_in_thanos_shape() {
    let stores = vec![
        StoreStatus {
            name: "10.0.0.1:10901".into(),
            component_type: Some("sidecar".into()),
            healthy: true,
            last_error: None,
            last_check_ms: 1_700_000_000_123,
            label_sets: vec![labels(&[("cluster", "eu"), ("replica", "0")])],
            min_time: 1_000,
            max_time: i64::MAX,
        },
        StoreStatus {
            name: "10.0.0.2:10901".into(),
            component_type: Some("store".into()),
            healthy: false,
            last_error: Some("connection refused".into()),
            last_check_ms: 0,
            label_sets: vec![],
            min_time: 0,
            max_time: 0,
        },
        StoreStatus {
            name: "never-reached:10901".into(),
            component_type: None,
            healthy: false,
            last_error: Some("dial timeout".into()),
            last_check_ms: 0,
            label_sets: vec![],
            min_time: 0,
            max_time: 0,
        },
    ];
    let app = app_with(
        Arc::new(MemSource::new(data()).with_stores(stores)),
        ApiSettings::default(),
    );
    let got = get(&app, "/api/v1/stores").await;
    assert_eq!(
        got.1,
        json!({"status": "success", "data": {
            "sidecar": [{
                "name": "10.0.0.1:10901",
                "lastCheck": "2023-11-14T22:13:20.123Z",
                "lastError": null,
                "labelSets": [{"cluster": "eu", "replica": "0"}],
                "minTime": 1000,
                "maxTime": i64::MAX
            }],
            "store": [{
                "name": "10.0.0.2:10901",
                "lastCheck": "0001-01-01T00:00:00Z",
                "lastError": "connection refused",
                "labelSets": [],
                "minTime": 0,
                "maxTime": 0
            }]
        }})
    );
}

/// The requests Grafana's Prometheus data source makes, in its shapes: the health check, the
/// metric browser and label pickers (form POSTs with a charset), a panel query.
#[tokio::test]
async fn grafana_data_source_requests() {
    let app = app();
    let form = |uri: &str, body: &str| {
        Request::post(uri)
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=UTF-8",
            )
            .body(Body::from(body.to_string()))
            .expect("request")
    };
    let (status, v) = get(&app, "/api/v1/status/buildinfo").await;
    assert_eq!((status, &v["status"]), (StatusCode::OK, &json!("success")));
    let (status, v) = send(&app, form("/api/v1/query", "query=1%2B1&time=1700000000")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["data"]["result"], json!([1700000000, "2"]));
    let (_, v) = send(
        &app,
        form(
            "/api/v1/label/__name__/values",
            "match%5B%5D=%7B__name__%21%3D%22%22%7D&start=0&end=600",
        ),
    )
    .await;
    assert_eq!(v["data"], json!(["http_requests_total", "up"]));
    let (_, v) = send(
        &app,
        form("/api/v1/labels", "match%5B%5D=up&start=0&end=600"),
    )
    .await;
    assert_eq!(v["data"], json!(["__name__", "instance", "job"]));
    let (_, v) = send(
        &app,
        form(
            "/api/v1/series",
            "match%5B%5D=up%7Bjob%3D%22b%22%7D&start=0&end=600",
        ),
    )
    .await;
    assert_eq!(
        v["data"],
        json!([{"__name__": "up", "instance": "h2:9100", "job": "b"}])
    );
    let (_, v) = get(&app, "/api/v1/metadata?metric=up").await;
    assert_eq!(v["data"], json!({}));
    let (status, v) = send(
        &app,
        form(
            "/api/v1/query_range",
            "query=sum+by+%28job%29+%28up%29&start=0&end=600&step=300",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v["data"]["result"],
        json!([
            {"metric": {"job": "a"}, "values": [[0, "1"], [300, "1"], [600, "1"]]},
            {"metric": {"job": "b"}, "values": [[0, "0"], [300, "0"], [600, "0"]]}
        ])
    );
}

#[tokio::test]
async fn metadata_from_the_view_with_limits() {
    let t = |x: &str, y: &str, z: &str| (x.to_owned(), y.to_owned(), z.to_owned());
    let mut md = crate::MetricMetadata::new();
    md.insert("a_total".into(), vec![t("counter", "A \"q\".", "")]);
    md.insert(
        "b_bytes".into(),
        vec![t("gauge", "B one.", "bytes"), t("gauge", "B two.", "bytes")],
    );
    md.insert("c".into(), vec![t("untyped", "", "")]);
    let app = app_with(
        Arc::new(MemSource::new(data()).with_metadata(md)),
        ApiSettings::default(),
    );
    let a = json!([{"type": "counter", "help": "A \"q\".", "unit": ""}]);
    let b = json!([
        {"type": "gauge", "help": "B one.", "unit": "bytes"},
        {"type": "gauge", "help": "B two.", "unit": "bytes"}
    ]);
    let c = json!([{"type": "untyped", "help": "", "unit": ""}]);
    let all = json!({"a_total": a, "b_bytes": b, "c": c});
    assert_eq!(get(&app, "/api/v1/metadata").await.1["data"], all);
    assert_eq!(get(&app, "/api/v1/metadata?limit=-1").await.1["data"], all);
    assert_eq!(
        get(&app, "/api/v1/metadata?limit=2").await.1["data"],
        json!({"a_total": a, "b_bytes": b})
    );
    assert_eq!(
        get(&app, "/api/v1/metadata?limit=0").await.1["data"],
        json!({})
    );
    assert_eq!(
        get(&app, "/api/v1/metadata?metric=b_bytes&limit_per_metric=1")
            .await
            .1["data"],
        json!({"b_bytes": [{"type": "gauge", "help": "B one.", "unit": "bytes"}]})
    );
    assert_eq!(
        get(&app, "/api/v1/metadata?metric=b_bytes&limit_per_metric=0")
            .await
            .1["data"],
        json!({"b_bytes": b})
    );
    assert_eq!(
        get(&app, "/api/v1/metadata?metric=nope").await.1["data"],
        json!({})
    );
    let (status, v) = get(&app, "/api/v1/metadata?limit=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "limit must be a number");
    let (status, v) = get(&app, "/api/v1/metadata?limit_per_metric=1.5").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "limit_per_metric must be a number");
}
