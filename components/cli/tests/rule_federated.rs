//! `strata rule` over a federation (issue 12): two real Prometheus instances (external labels
//! `cluster="a"` and `cluster="b"`, each scraping itself every second), a `strata sidecar` next to
//! each, a `strata query` over both sidecars as the ruler's query endpoint, and the ruler recording
//! `sum by (cluster) (prometheus_tsdb_head_series)` and `sum(up)` every second.
//! Asserted, reading the recorded series back through a second `strata query` over both sidecars
//! and the ruler's StoreAPI: the per-cluster series exist for both clusters and carry the ruler's
//! external label; at each of the last recorded timestamps t, `global:up:sum` is exactly 3 and
//! each cluster's value equals that Prometheus's own `sum(prometheus_tsdb_head_series)` at t, or
//! (scrape jitter: the ruler may have seen the scrape before or after) at t ± one scrape interval.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use strata_e2e::{
    PromApi, Prometheus, StrataQuery, StrataServer, StrataSidecar, parse_value, wait_until,
};

const WAIT: Duration = Duration::from_secs(120);
/// How many recorded timestamps are checked against the reference evaluation.
const POINTS: usize = 6;
/// The scrape interval of both Prometheus instances, in milliseconds.
const SCRAPE_MS: i64 = 1000;

const RULES: &str = "\
groups:
  - name: federated
    interval: 1s
    rules:
      - record: cluster:prometheus_tsdb_head_series:sum
        expr: sum by (cluster) (prometheus_tsdb_head_series)
      - record: global:up:sum
        expr: sum(up)
";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_strata"))
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Raw samples (`ms -> value`) of `selector` in the 10 minutes before `at`, per series, keyed by
/// the series' `cluster` label (empty when absent); `None` when the query fails or finds nothing.
async fn recorded(
    api: &PromApi,
    selector: &str,
    at: f64,
) -> Option<BTreeMap<String, (serde_json::Value, BTreeMap<i64, f64>)>> {
    let r = api
        .instant(&format!("{selector}[10m]"), at, &[])
        .await
        .ok()?;
    if !r.is_success() {
        return None;
    }
    let mut out = BTreeMap::new();
    for s in r.series() {
        let cluster = s["metric"]["cluster"].as_str().unwrap_or("").to_string();
        let pts: BTreeMap<i64, f64> = s["values"]
            .as_array()?
            .iter()
            .filter_map(|p| {
                Some((
                    (p[0].as_f64()? * 1000.0).round() as i64,
                    parse_value(&p[1])?,
                ))
            })
            .collect();
        out.insert(cluster, (s["metric"].clone(), pts));
    }
    (!out.is_empty()).then_some(out)
}

/// `sum(prometheus_tsdb_head_series)` on one Prometheus at `ms`; `None` if it has no answer there.
async fn head_series_at(api: &PromApi, ms: i64) -> Option<f64> {
    let r = api
        .instant("sum(prometheus_tsdb_head_series)", ms as f64 / 1000.0, &[])
        .await
        .expect("reference query on Prometheus");
    assert!(r.is_success(), "reference query failed: {r:?}");
    r.series().first().and_then(|s| parse_value(&s["value"][1]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ruler_records_over_two_prometheus_through_the_querier() {
    let builder = |cluster: &str| {
        Prometheus::builder()
            .external_label("cluster", cluster)
            .scrape_interval(Duration::from_millis(SCRAPE_MS as u64))
    };
    let prom_a = builder("a")
        .start()
        .await
        .expect("start Prometheus a (STRATA_PROMETHEUS, built by e2e/tools/install.sh)");
    // b also scrapes a, so the two clusters' head-series counts differ clearly and a ruler that
    // mixed the clusters up would be caught by the per-cluster comparison.
    let prom_b = builder("b")
        .scrape_config(&format!(
            "job_name: other\nstatic_configs:\n  - targets: ['{}']",
            prom_a.url().trim_start_matches("http://")
        ))
        .start()
        .await
        .expect("start Prometheus b (STRATA_PROMETHEUS, built by e2e/tools/install.sh)");
    let sidecar_a = StrataSidecar::start(binary(), prom_a.url(), prom_a.data_dir())
        .await
        .expect("start strata sidecar a");
    let sidecar_b = StrataSidecar::start(binary(), prom_b.url(), prom_b.data_dir())
        .await
        .expect("start strata sidecar b");

    // The querier the ruler evaluates through: both sidecars.
    let q_eval = StrataQuery::builder(binary())
        .endpoint(sidecar_a.grpc_address())
        .endpoint(sidecar_b.grpc_address())
        .start()
        .await
        .expect("start strata query over both sidecars");
    let eval_api = PromApi::new(q_eval.url(), Duration::from_secs(30)).expect("querier client");
    // Start the ruler only once the querier sees both clusters, so every evaluation sees both.
    wait_until("querier sees both clusters", WAIT, || async {
        let r = eval_api.instant("up", now_secs(), &[]).await.ok()?;
        let clusters: Vec<&str> = r
            .series()
            .iter()
            .filter_map(|s| s["metric"]["cluster"].as_str())
            .collect();
        (clusters.contains(&"a") && clusters.contains(&"b")).then_some(())
    })
    .await
    .expect("strata query serves `up` from both sidecars");

    let dir = tempfile::tempdir().expect("temp dir");
    let rule_file = dir.path().join("rules.yml");
    std::fs::write(&rule_file, RULES).expect("write rule file");
    let args = vec![
        format!("--rule-file={}", rule_file.display()),
        format!("--query={}", q_eval.url()),
        "--eval-interval=1s".to_string(),
        "--label=ruler=\"r1\"".to_string(),
        format!("--data-dir={}", dir.path().join("data").display()),
    ];
    let mut ruler = StrataServer::new(binary(), "rule", &args, true);
    ruler.start().await.expect("start strata rule");
    let ruler_grpc = ruler
        .grpc_address()
        .expect("ruler gRPC address")
        .to_string();

    // The querier the results are read through: both sidecars and the ruler's StoreAPI.
    let q_read = StrataQuery::builder(binary())
        .endpoint(sidecar_a.grpc_address())
        .endpoint(sidecar_b.grpc_address())
        .endpoint(&ruler_grpc)
        .start()
        .await
        .expect("start strata query over the sidecars and the ruler");
    let read_api = PromApi::new(q_read.url(), Duration::from_secs(30)).expect("querier client");

    // Wait for enough samples of both rules, for both clusters.
    let enough = |m: &BTreeMap<String, (serde_json::Value, BTreeMap<i64, f64>)>, keys: &[&str]| {
        keys.iter()
            .all(|k| m.get(*k).is_some_and(|(_, pts)| pts.len() >= POINTS + 2))
    };
    let per_cluster = wait_until("per-cluster recorded samples", WAIT, || async {
        recorded(
            &read_api,
            "cluster:prometheus_tsdb_head_series:sum",
            now_secs(),
        )
        .await
        .filter(|m| enough(m, &["a", "b"]))
    })
    .await
    .expect("cluster:prometheus_tsdb_head_series:sum is served for clusters a and b");
    let global = wait_until("global recorded samples", WAIT, || async {
        recorded(&read_api, "global:up:sum", now_secs())
            .await
            .filter(|m| enough(m, &[""]))
    })
    .await
    .expect("global:up:sum is served through the querier");

    // Labels: exactly the grouping label (none for the global sum) plus the ruler's label.
    assert_eq!(
        per_cluster.keys().collect::<Vec<_>>(),
        ["a", "b"],
        "one recorded series per cluster"
    );
    for (cluster, (metric, _)) in &per_cluster {
        assert_eq!(
            metric,
            &serde_json::json!({
                "__name__": "cluster:prometheus_tsdb_head_series:sum",
                "cluster": cluster,
                "ruler": "r1",
            }),
            "labels of the cluster {cluster} series"
        );
    }
    assert_eq!(global.len(), 1, "one global:up:sum series: {global:?}");
    let (global_metric, global_pts) = &global[""];
    assert_eq!(
        global_metric,
        &serde_json::json!({"__name__": "global:up:sum", "ruler": "r1"}),
        "labels of global:up:sum"
    );

    // global:up:sum: a and b scrape themselves and b also scrapes a, so exactly 3 at every
    // checked timestamp.
    for (&ts, &v) in global_pts.iter().rev().take(POINTS) {
        assert_eq!(v, 3.0, "global:up:sum at {ts} ms");
    }

    // Per cluster: the reference is that Prometheus's own answer at t (or the adjacent scrape).
    let prom_api = |p: &Prometheus| PromApi::new(p.url(), Duration::from_secs(30));
    let refs = [
        ("a", prom_api(&prom_a).expect("Prometheus a client")),
        ("b", prom_api(&prom_b).expect("Prometheus b client")),
    ];
    for (cluster, api) in &refs {
        let pts = &per_cluster[*cluster].1;
        for (&ts, &v) in pts.iter().rev().take(POINTS) {
            let mut allowed = Vec::new();
            for at in [ts, ts - SCRAPE_MS, ts + SCRAPE_MS] {
                if let Some(want) = head_series_at(api, at).await {
                    allowed.push(want);
                }
            }
            assert!(
                allowed.contains(&v),
                "cluster {cluster}: recorded {v} at {ts} ms; Prometheus {cluster} says \
                 {allowed:?} at t, t-1s, t+1s"
            );
        }
    }
    drop(ruler);
}
