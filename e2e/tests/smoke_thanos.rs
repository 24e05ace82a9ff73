//! Smoke test: a real `thanos query` reads a real Prometheus through a real `thanos sidecar` (StoreAPI
//! over gRPC) and answers exactly what the Prometheus answers; the sidecar ships a block to a real MinIO
//! with the objstore YAML the harness writes.

use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::Value;
use strata_e2e::{
    Minio, Prometheus, ThanosQuery, ThanosSidecar, promtool, thanos_version, wait_until,
};

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

#[tokio::test]
async fn thanos_sidecar_uploads_a_block_to_minio_with_the_objstore_yaml() {
    // A block backfilled by the real promtool, a few hours old, so Prometheus keeps it and the sidecar's
    // shipper (which uploads level-1 blocks at start and then every 30 s) finds it.
    let scratch = tempfile::tempdir().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    // Start just after a 2h boundary a few hours back: promtool cuts blocks at 2h-aligned boundaries,
    // and 15 minutes of samples from there stay in one block whatever the time of day.
    let t0 = ((now_ms / 1000 - 3 * 3600) / 7200) * 7200 + 60;
    let mut om = String::from("# TYPE strata_backfill gauge\n");
    for i in 0..60u128 {
        om.push_str(&format!("strata_backfill{{n=\"1\"}} {i} {}\n", t0 + i * 15));
    }
    om.push_str("# EOF\n");
    let input = scratch.path().join("in.om");
    std::fs::write(&input, om).unwrap();
    let data = scratch.path().join("data");
    let out = promtool(&[
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        input.to_str().unwrap(),
        data.to_str().unwrap(),
    ])
    .unwrap();
    assert!(out.status.success(), "{out:?}");

    let minio = Minio::start().await.unwrap();
    // MinIO can still answer 503 XMinioServerNotInitialized right after /minio/health/ready.
    wait_until("bucket created", Duration::from_secs(30), || async {
        minio.create_bucket("thanos").await.ok()
    })
    .await
    .unwrap();
    let prom = Prometheus::builder()
        .external_label("replica", "a")
        .data_dir(&data)
        // The sidecar refuses to upload unless Prometheus itself never compacts.
        .arg("--storage.tsdb.min-block-duration=2h")
        .arg("--storage.tsdb.max-block-duration=2h")
        .start()
        .await
        .unwrap();
    let _sidecar = ThanosSidecar::start(
        prom.url(),
        prom.data_dir(),
        Some(&minio.objstore_yaml("thanos")),
    )
    .await
    .unwrap();

    let store = minio.object_store("thanos").unwrap();
    let metas = wait_until("a block in the bucket", Duration::from_secs(60), || async {
        let listed: Vec<String> = store
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .ok()?;
        let metas: Vec<String> = listed
            .into_iter()
            .filter(|p| p.ends_with("/meta.json"))
            .collect();
        (!metas.is_empty()).then_some(metas)
    })
    .await
    .unwrap();
    assert_eq!(metas.len(), 1, "{metas:?}");
    let meta = store
        .get(&Path::from(metas[0].as_str()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let meta: Value = serde_json::from_slice(&meta).unwrap();
    println!("uploaded {}: {meta}", metas[0]);
    assert_eq!(meta["stats"]["numSamples"], 60, "{meta}");
    assert_eq!(
        meta["thanos"]["labels"],
        serde_json::json!({"replica": "a"})
    );
    assert_eq!(meta["thanos"]["source"], "sidecar");
    assert_eq!(meta["compaction"]["level"], 1);
}

#[tokio::test]
async fn thanos_sidecar_without_external_labels_fails_with_its_log() {
    let prom = Prometheus::builder().start().await.unwrap();
    let err = ThanosSidecar::start(prom.url(), prom.data_dir(), None)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("exited") && text.contains("no external labels configured"),
        "{text}"
    );
}
