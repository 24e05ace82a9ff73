//! Against a real `thanos query` (0.42, over a real Thanos sidecar and Prometheus): our
//! `/api/v1/stores` renders the endpoint statuses Thanos reports in Thanos's exact shape, and
//! the Thanos parameters (`dedup`, `partial_response`, `max_source_resolution`) are refused with
//! the same status, error type and message.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use strata_e2e::{Prometheus, ThanosQuery, ThanosSidecar, wait_until};
use strata_promql::{Labels, MemQueryable};
use strata_query::StoreStatus;
use strata_query::api::{ApiSettings, MemSource, parse_time, router};
use tower::ServiceExt;

async fn ours(app: &axum::Router, uri: &str) -> (u16, Value) {
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&body).expect("our JSON"))
}

async fn theirs(base: &str, uri: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("{base}{uri}"))
        .await
        .expect("thanos answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("their JSON"))
}

/// The statuses Thanos lists, as a [`StoreStatus`] list our API renders.
fn statuses(data: &Value) -> Vec<StoreStatus> {
    let mut out = Vec::new();
    for (kind, entries) in data.as_object().expect("object of types") {
        for e in entries.as_array().expect("list") {
            let label_sets = e["labelSets"]
                .as_array()
                .expect("labelSets")
                .iter()
                .map(|ls| {
                    Labels::new(
                        ls.as_object()
                            .expect("label set")
                            .iter()
                            .map(|(k, v)| (k.clone(), v.as_str().expect("value").to_string())),
                    )
                })
                .collect();
            out.push(StoreStatus {
                name: e["name"].as_str().expect("name").into(),
                component_type: Some(kind.clone()),
                healthy: e["lastError"].is_null(),
                last_error: e["lastError"].as_str().map(str::to_string),
                last_check_ms: parse_time(e["lastCheck"].as_str().expect("lastCheck"))
                    .expect("RFC 3339"),
                label_sets,
                min_time: e["minTime"].as_i64().expect("minTime"),
                max_time: e["maxTime"].as_i64().expect("maxTime"),
            });
        }
    }
    out
}

/// Replaces every `lastCheck` with its time in whole milliseconds (Thanos prints nanoseconds).
fn truncate_last_checks(v: &mut Value) {
    if let Some(types) = v["data"].as_object_mut() {
        for entry in types.values_mut().filter_map(Value::as_array_mut).flatten() {
            let ms = entry["lastCheck"].as_str().and_then(|s| parse_time(s).ok());
            entry["lastCheck"] = Value::from(ms);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_and_thanos_parameters_match_thanos_query() {
    let prometheus = Prometheus::builder()
        .external_label("cluster", "eu")
        .external_label("replica", "0")
        .start()
        .await
        .expect("start prometheus");
    let sidecar = ThanosSidecar::start(prometheus.url(), prometheus.data_dir(), None)
        .await
        .expect("start thanos sidecar");
    // Nothing listens here: an endpoint that never answers.
    let dead = format!("127.0.0.1:{}", strata_e2e::free_port());
    let query = ThanosQuery::builder()
        .endpoint(sidecar.grpc_address())
        .endpoint(&dead)
        .replica_label("replica")
        .start()
        .await
        .expect("start thanos query");
    // Wait until the sidecar reports a data range (Prometheus has scraped once).
    let (status, listed) = wait_until(
        "sidecar advertises data",
        Duration::from_secs(60),
        || async {
            let (status, v) = theirs(query.url(), "/api/v1/stores").await;
            let has_data = v["data"]["sidecar"][0]["minTime"]
                .as_i64()
                .is_some_and(|t| t > 0);
            has_data.then_some((status, v))
        },
    )
    .await
    .expect("stores listed");
    assert_eq!(status, 200);

    // Thanos leaves out an endpoint it never reached (its component type is unknown); ours is
    // given that endpoint as the fan-out reports it and must leave it out too.
    assert!(!listed.to_string().contains(&dead), "{listed}");
    let mut ours_statuses = statuses(&listed["data"]);
    ours_statuses.push(StoreStatus {
        name: dead.clone(),
        component_type: None,
        healthy: false,
        last_error: Some("connection refused".into()),
        last_check_ms: 1,
        label_sets: Vec::new(),
        min_time: 0,
        max_time: 0,
    });
    let app = router(
        Arc::new(MemSource::new(MemQueryable::new()).with_stores(ours_statuses)),
        ApiSettings::default(),
    );
    let (our_status, mut our_stores) = ours(&app, "/api/v1/stores").await;
    assert_eq!(our_status, 200);
    let mut their_stores = listed.clone();
    truncate_last_checks(&mut our_stores);
    truncate_last_checks(&mut their_stores);
    assert_eq!(our_stores, their_stores, "thanos listed {listed}");
    assert_eq!(
        listed["data"]["sidecar"][0]["labelSets"],
        serde_json::json!([{"cluster": "eu", "replica": "0"}])
    );

    let mut report = Vec::new();
    for params in [
        "dedup=maybe",
        "dedup=false",
        "partial_response=x",
        "partial_response=false",
        "max_source_resolution=x",
        "max_source_resolution=-300",
        "max_source_resolution=-5m",
        "max_source_resolution=auto",
        "max_source_resolution=1h",
        "max_source_resolution=300",
    ] {
        let uri = format!("/api/v1/query?query=vector(1)&time=1&{params}");
        let (a_status, a) = ours(&app, &uri).await;
        let (b_status, b) = theirs(query.url(), &uri).await;
        let comparable = |v: &Value| {
            (
                v["status"].clone(),
                v["errorType"].clone(),
                v["error"].clone(),
            )
        };
        if a_status != b_status || comparable(&a) != comparable(&b) {
            report.push(format!(
                "{uri}\n  ours:   {a_status} {a}\n  thanos: {b_status} {b}"
            ));
        }
    }
    assert!(
        report.is_empty(),
        "differ from thanos query:\n{}",
        report.join("\n")
    );
}
