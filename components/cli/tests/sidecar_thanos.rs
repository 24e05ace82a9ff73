//! Wire compatibility: a real `thanos query` (v0.42) uses `strata sidecar` as a StoreAPI endpoint and
//! answers exactly what the Prometheus behind it answers.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use strata_e2e::{Process, Prometheus, ThanosQuery, free_port, wait_until};

/// A result vector/matrix as `(labels, samples)` pairs sorted by labels.
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
            // Labels in name order, whatever order the server wrote them in.
            let metric: std::collections::BTreeMap<String, Value> = s["metric"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            (format!("{metric:?}"), values.to_string())
        })
        .collect();
    series.sort();
    series
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thanos_query_reads_strata_sidecar() {
    let prom = Prometheus::builder()
        .external_label("cluster", "eu-1")
        .external_label("replica", "a")
        .start()
        .await
        .expect("start Prometheus");
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.arg("sidecar")
        .arg(format!("--prometheus.url={}", prom.url()))
        .arg(format!("--tsdb.path={}", prom.data_dir().display()))
        .arg(format!("--grpc-address={grpc}"))
        .arg(format!("--http-address={http}"));
    let mut sidecar = Process::spawn("strata-sidecar", cmd).expect("spawn strata sidecar");
    sidecar
        .wait_http_ok(&format!("http://{http}/-/ready"), Duration::from_secs(60))
        .await
        .expect("sidecar ready");

    let query = ThanosQuery::builder()
        .endpoint(&grpc)
        .replica_label("replica")
        .start()
        .await
        .expect("start thanos query");
    let stores = query
        .wait_for_endpoints(Duration::from_secs(60))
        .await
        .expect("thanos query sees the strata sidecar as healthy");
    // Thanos learnt our component type and external labels through the Info service.
    let sidecars = stores["sidecar"]
        .as_array()
        .unwrap_or_else(|| panic!("no sidecar in {stores}"));
    assert_eq!(sidecars.len(), 1, "{stores}");
    assert_eq!(
        sidecars[0]["labelSets"],
        serde_json::json!([{"cluster": "eu-1", "replica": "a"}]),
        "{stores}"
    );

    // Evaluate at a committed scrape's timestamp so both see the same samples.
    wait_until("three scrapes", Duration::from_secs(30), || async {
        let data = prom.query("count_over_time(up[1m])").await.ok()?;
        let n: f64 = data["result"][0]["value"][1].as_str()?.parse().ok()?;
        (n >= 3.0).then_some(())
    })
    .await
    .expect("Prometheus scrapes");
    let last = prom.query("timestamp(up)").await.expect("query");
    let at_s = last["result"][0]["value"][1]
        .as_str()
        .unwrap_or_else(|| panic!("no timestamp: {last}"))
        .to_string();
    let at: f64 = at_s.parse().expect("a number");

    let params = [("query", "up"), ("time", at_s.as_str())];
    let from_prom = prom.api("query", &params).await.expect("prometheus query");
    let from_thanos = query.api("query", &params).await.expect("thanos query");
    assert_eq!(from_prom["result"].as_array().map(Vec::len), Some(1));
    // Deduplicated by `replica`, the cluster label stays: Prometheus's series plus cluster="eu-1".
    let mut want = from_prom["result"][0].clone();
    want["metric"]["cluster"] = "eu-1".into();
    assert_eq!(from_thanos["result"][0], want, "{from_thanos}");

    // Every series of the scrape job over a range, through gzip-less plain gRPC streaming.
    let start = format!("{:.3}", at - 20.0);
    let params = [
        ("query", "{job=\"prometheus\"}"),
        ("start", start.as_str()),
        ("end", at_s.as_str()),
        ("step", "1"),
    ];
    let from_prom = prom
        .api("query_range", &params)
        .await
        .expect("prometheus range");
    let mut from_thanos = query
        .api("query_range", &params)
        .await
        .expect("thanos range");
    if let Some(series) = from_thanos["result"].as_array_mut() {
        for s in series {
            if let Some(m) = s["metric"].as_object_mut() {
                assert_eq!(m.remove("cluster"), Some("eu-1".into()));
            }
        }
    }
    let want = by_series(&from_prom["result"]);
    assert!(want.len() > 100, "only {} series", want.len());
    let got = by_series(&from_thanos["result"]);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }

    // Label APIs through Thanos reach the sidecar too.
    let names = query.api("labels", &[]).await.expect("labels");
    let names: Vec<&str> = names
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        names.contains(&"cluster") && names.contains(&"job"),
        "{names:?}"
    );
    sidecar.check_running().expect("the sidecar still runs");
}
