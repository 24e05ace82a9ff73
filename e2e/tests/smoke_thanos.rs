//! Smoke test: a real `thanos query` reads a real Prometheus through a real `thanos sidecar` (StoreAPI
//! over gRPC) and answers exactly what the Prometheus answers.

use std::time::Duration;

use serde_json::Value;
use strata_e2e::{Prometheus, ThanosQuery, ThanosSidecar, thanos_version, wait_until};

/// A result vector/matrix as `(labels, samples)` pairs sorted by labels, so that two answers can be
/// compared whatever order the servers return series in.
fn by_series(result: &Value) -> Vec<(String, String)> {
    let mut series: Vec<(String, String)> = result
        .as_array()
        .unwrap_or_else(|| panic!("result is not an array: {result}"))
        .iter()
        .map(|s| {
            let values = if s["values"].is_null() {
                &s["value"]
            } else {
                &s["values"]
            };
            (s["metric"].to_string(), values.to_string())
        })
        .collect();
    series.sort();
    series
}

#[test]
fn thanos_binary_is_the_pinned_version() {
    let version = thanos_version().unwrap();
    println!("{version}");
    assert!(
        version.starts_with("thanos, version 0.42."),
        "want Thanos 0.42.x, got {version:?}"
    );
}

#[tokio::test]
async fn thanos_query_through_sidecar_returns_what_prometheus_returns() {
    let prom = Prometheus::builder()
        .external_label("replica", "a")
        .start()
        .await
        .unwrap();
    let sidecar = ThanosSidecar::start(prom.url(), prom.data_dir(), None)
        .await
        .unwrap();
    let query = ThanosQuery::builder()
        .endpoint(sidecar.grpc_address())
        .replica_label("replica")
        .start()
        .await
        .unwrap();
    let stores = query
        .wait_for_endpoints(Duration::from_secs(60))
        .await
        .unwrap();
    println!("stores: {stores}");
    // The querier learnt the sidecar's external labels over the StoreAPI Info call.
    let sidecars = stores["sidecar"].as_array().unwrap();
    assert_eq!(sidecars.len(), 1, "{stores}");
    assert_eq!(
        sidecars[0]["labelSets"],
        serde_json::json!([{"replica": "a"}]),
        "{stores}"
    );

    // Evaluate at the timestamp of a committed scrape: every sample at or before it is final (one
    // target, scraped sequentially), so both servers see exactly the same samples.
    wait_until("three scrapes", Duration::from_secs(30), || async {
        let data = prom.query("count_over_time(up[1m])").await.ok()?;
        let n: f64 = data["result"][0]["value"][1].as_str()?.parse().ok()?;
        (n >= 3.0).then_some(())
    })
    .await
    .unwrap();
    let last = prom.query("timestamp(up)").await.unwrap();
    let at_s = last["result"][0]["value"][1]
        .as_str()
        .unwrap_or_else(|| panic!("no timestamp: {last}"))
        .to_string();
    let at: f64 = at_s.parse().unwrap();

    // `up`: one series, the Prometheus scraping itself.
    let params = [("query", "up"), ("time", at_s.as_str())];
    let from_prom = prom.api("query", &params).await.unwrap();
    let from_thanos = query.api("query", &params).await.unwrap();
    println!("prometheus: {from_prom}\nthanos:     {from_thanos}");
    assert_eq!(from_prom["resultType"], "vector");
    assert_eq!(from_prom["result"].as_array().unwrap().len(), 1);
    assert_eq!(from_prom["result"][0]["value"][1], "1");
    assert_eq!(from_thanos["resultType"], "vector");
    assert_eq!(
        by_series(&from_thanos["result"]),
        by_series(&from_prom["result"])
    );

    // Without deduplication the sidecar's external label is on every series.
    let raw = query
        .api(
            "query",
            &[("query", "up"), ("time", &at_s), ("dedup", "false")],
        )
        .await
        .unwrap();
    let mut want = from_prom["result"][0]["metric"].clone();
    want["replica"] = "a".into();
    assert_eq!(raw["result"][0]["metric"], want, "{raw}");

    // Every series of the scrape job, over a range: many series, many samples, same answer.
    let start = format!("{:.3}", at - 20.0);
    let params = [
        ("query", "{job=\"prometheus\"}"),
        ("start", start.as_str()),
        ("end", at_s.as_str()),
        ("step", "1"),
    ];
    let from_prom = prom.api("query_range", &params).await.unwrap();
    let from_thanos = query.api("query_range", &params).await.unwrap();
    let want = by_series(&from_prom["result"]);
    let samples: usize = from_prom["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["values"].as_array().map(Vec::len))
        .sum();
    println!("range query: {} series, {samples} samples", want.len());
    assert!(want.len() > 100, "only {} series", want.len());
    let got = by_series(&from_thanos["result"]);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
}
