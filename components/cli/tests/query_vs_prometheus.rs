//! Side by side with a real Prometheus 3.x: the shared bench data is backfilled with the real
//! `promtool`, a real Prometheus serves it, `strata sidecar` fronts that Prometheus and `strata query`
//! reads the sidecar. Every query of `shared/bench/queries.txt` and `tests/data/queries.txt` is sent as
//! an instant query (at the last sample) and as a range query (whole span, 60s step) to Prometheus and
//! to the querier; the answers must match (see `strata_e2e::compare`). One line per mismatch, then a
//! summary; any mismatch fails.
//!
//! The comparator itself is proven against two real Prometheus servers: on copies of the same blocks
//! they must agree, and on a data set made with another seed they must disagree.

#![allow(clippy::print_stdout)] // the test reports every mismatch

use std::path::Path;
use std::time::Duration;

use strata_e2e::{
    BenchData, CompareOptions, ListedQuery, PromApi, Prometheus, SideBySide, SideBySideOptions,
    StrataQuery, StrataSidecar, listed_queries, wait_until,
};

/// The data set: 10 targets × 2 h at 15 s (~140k samples, ~700 series).
const GEN_ARGS: &[&str] = &[
    "--targets",
    "10",
    "--hours",
    "2",
    "--high-cardinality",
    "200",
];
/// The external label the sidecar needs; Prometheus's own API does not show it.
const EXTERNAL_LABEL: (&str, &str) = ("cluster", "side-by-side");
/// Range query step, seconds.
const STEP: f64 = 60.0;

fn queries() -> Vec<ListedQuery> {
    let own = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/queries.txt");
    listed_queries(&own).expect("the query lists (set STRATA_BENCH_DIR for shared/bench)")
}

/// A Prometheus serving `blocks` (no scraping), with the features the query list needs.
async fn prometheus_on(blocks: &Path) -> Prometheus {
    Prometheus::builder()
        .config(&format!(
            "global:\n  external_labels:\n    {}: {}\n",
            EXTERNAL_LABEL.0, EXTERNAL_LABEL.1
        ))
        .data_dir(blocks)
        .arg("--storage.tsdb.retention.time=100y")
        .arg("--enable-feature=promql-experimental-functions")
        .start()
        .await
        .expect("start Prometheus")
}

fn api(url: &str) -> PromApi {
    PromApi::new(url, Duration::from_secs(120)).expect("HTTP client")
}

async fn side_by_side(
    reference: &PromApi,
    ours: &PromApi,
    data: &BenchData,
    drop_labels: &[&str],
) -> SideBySide {
    let opts = SideBySideOptions {
        step: STEP,
        drop_labels,
        annotations: true,
    };
    strata_e2e::side_by_side(&queries(), reference, ours, data, &opts)
        .await
        .expect("the reference Prometheus answers")
}

#[test]
fn the_query_list_is_big_and_parses_into_both_kinds() {
    let qs = queries();
    assert!(qs.len() >= 100, "only {} queries", qs.len());
    assert!(qs.iter().filter(|q| q.must_fail).count() >= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comparator_agrees_on_two_prometheus_servers_with_the_same_blocks() {
    let data = BenchData::generate(GEN_ARGS).expect("bench data");
    let a = prometheus_on(&data.copy_to("a").expect("copy")).await;
    let b = prometheus_on(&data.copy_to("b").expect("copy")).await;
    let report = side_by_side(&api(a.url()), &api(b.url()), &data, &[]).await;
    assert!(report.list_errors.is_empty(), "{:?}", report.list_errors);
    assert!(report.compared >= 200);
    assert!(
        report.non_empty >= report.compared * 6 / 10,
        "too few queries return data: {report:?}"
    );
    assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comparator_finds_a_different_data_set() {
    let data = BenchData::generate(GEN_ARGS).expect("bench data");
    let mut other_args = GEN_ARGS.to_vec();
    other_args.extend(["--seed", "2"]);
    let other = BenchData::generate(&other_args).expect("other bench data");
    let a = prometheus_on(&data.copy_to("a").expect("copy")).await;
    let b = prometheus_on(&other.copy_to("b").expect("copy")).await;
    let report = side_by_side(&api(a.url()), &api(b.url()), &data, &[]).await;
    // Errors, absent() and constant queries (`up == 1`, literals, time functions) agree on any data;
    // everything that reads the random values must not.
    assert!(
        report.mismatched_queries >= report.non_empty / 2,
        "only {} of {} answers with data differ: {report:?}",
        report.mismatched_queries,
        report.non_empty
    );
}

/// Waits until the querier sees the data (it learns its endpoints asynchronously), then requires
/// every query of the list to be answered exactly as the reference Prometheus answers it.
async fn querier_answers_like(reference: &PromApi, ours: &PromApi, data: &BenchData) {
    let end = data.end_secs();
    let want = reference
        .instant("count(up)", end, &[])
        .await
        .expect("count");
    wait_until("querier sees the data", Duration::from_secs(60), || {
        let want = &want;
        async move {
            let got = ours.instant("count(up)", end, &[]).await.ok()?;
            strata_e2e::compare(want, &got, &CompareOptions::default())
                .is_empty()
                .then_some(())
        }
    })
    .await
    .expect("querier ready");
    let report = side_by_side(reference, ours, data, &[EXTERNAL_LABEL.0]).await;
    assert!(report.list_errors.is_empty(), "{:?}", report.list_errors);
    assert!(report.compared >= 200);
    assert!(
        report.mismatches.is_empty(),
        "{} of {} queries differ (see MISMATCH lines above)",
        report.mismatched_queries,
        report.compared
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_query_answers_like_prometheus() {
    let data = BenchData::generate(GEN_ARGS).expect("bench data");
    let blocks = data.copy_to("prometheus").expect("copy");
    let prometheus = prometheus_on(&blocks).await;
    let binary = Path::new(env!("CARGO_BIN_EXE_strata"));
    let sidecar = StrataSidecar::start(binary, prometheus.url(), &blocks)
        .await
        .expect("start strata sidecar");
    let querier = StrataQuery::builder(binary)
        .endpoint(sidecar.grpc_address())
        .start()
        .await
        .expect("start strata query");
    querier_answers_like(&api(prometheus.url()), &api(querier.url()), &data).await;
}

/// The same blocks, uploaded to a real MinIO bucket and served by `strata store` instead of a
/// sidecar: the querier must still answer exactly like Prometheus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_query_over_the_store_gateway_answers_like_prometheus() {
    let data = BenchData::generate(GEN_ARGS).expect("bench data");
    let blocks = data.copy_to("prometheus").expect("copy");
    let uploaded = data.copy_to("bucket").expect("copy");
    let prometheus = prometheus_on(&blocks).await;
    let minio = strata_e2e::Minio::start().await.expect("start MinIO");
    minio.create_bucket("blocks").await.expect("bucket");
    let ulids = minio
        .upload_blocks("blocks", &uploaded, &[EXTERNAL_LABEL])
        .await
        .expect("upload");
    assert!(!ulids.is_empty());
    let binary = Path::new(env!("CARGO_BIN_EXE_strata"));
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = strata_e2e::StrataStore::start(
        binary,
        &minio.objstore_yaml("blocks"),
        store_dir.path(),
        &[],
    )
    .await
    .expect("start strata store");
    let querier = StrataQuery::builder(binary)
        .endpoint(store.grpc_address())
        .start()
        .await
        .expect("start strata query");
    querier_answers_like(&api(prometheus.url()), &api(querier.url()), &data).await;
    // The gateway really served it: its Series calls and object-store GETs show on /metrics.
    let metrics = reqwest::get(format!("{}/metrics", store.url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics.contains("strata_store_series_requests_total{outcome=\"ok\"}"),
        "{metrics}"
    );
}
