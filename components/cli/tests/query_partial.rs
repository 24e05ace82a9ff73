//! Partial responses: a querier over one live `strata sidecar` (in front of a real Prometheus) and one
//! store that is down. By default the answer succeeds with the live store's data and a warning naming
//! the failed store; with `partial_response=false` (or `--no-query.partial-response`) it fails with an
//! error naming the store. Two kinds of "down": an address nobody listens on from the start, and a
//! store that was healthy and then is cut off (`Proxy::set_down`).
//!
//! The same scenario runs against a real `thanos query` (with the store as a strict endpoint, so Thanos
//! queries it although its health check fails) to show the test asks what Thanos users get.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_e2e::{
    ApiResponse, PromApi, Prometheus, Proxy, StrataQuery, StrataSidecar, ThanosQuery, free_port,
    wait_until,
};

/// Longer than the querier's health-check interval.
const HEALTH_CHECK_SLACK: Duration = Duration::from_secs(7);

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_strata"))
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

fn api(url: &str) -> PromApi {
    PromApi::new(url, Duration::from_secs(60)).expect("HTTP client")
}

/// A self-scraping Prometheus with `cluster=<name>` and a Strata sidecar in front of it.
async fn live_store(cluster: &str) -> (Prometheus, StrataSidecar) {
    let prometheus = Prometheus::builder()
        .external_label("cluster", cluster)
        .start()
        .await
        .expect("start Prometheus");
    let data = prometheus.data_dir().to_path_buf();
    let sidecar = StrataSidecar::start(binary(), prometheus.url(), &data)
        .await
        .expect("start strata sidecar");
    (prometheus, sidecar)
}

/// The `cluster` label values of a vector answer.
fn clusters(r: &ApiResponse) -> Vec<String> {
    let mut c: Vec<String> = r
        .series()
        .iter()
        .filter_map(|s| s["metric"]["cluster"].as_str().map(String::from))
        .collect();
    c.sort();
    c.dedup();
    c
}

fn warns_about(r: &ApiResponse, store: &str) -> bool {
    r.warnings().iter().any(|w| w.contains(store))
}

/// Waits until `up` through the querier shows every cluster in `want`.
async fn wait_for_clusters(q: &PromApi, want: &[&str]) {
    wait_until(
        &format!("querier answers with clusters {want:?}"),
        Duration::from_secs(60),
        || async {
            let r = q.instant("up", now(), &[]).await.ok()?;
            let got = clusters(&r);
            want.iter()
                .all(|w| got.iter().any(|g| g == w))
                .then_some(())
        },
    )
    .await
    .expect("querier sees the live stores");
}

/// The assertions, for a querier whose partial response is on by default and where `down` (an
/// address) fails while the store labelled `cluster=live` answers. `series_warning`: `/api/v1/series`
/// must warn too (ours does; Thanos 0.42 answers `series` without a warning).
async fn assert_partial_behaviour(q: &PromApi, down: &str, series_warning: bool) {
    let r = q.instant("up", now(), &[]).await.expect("query");
    assert!(r.is_success(), "partial response succeeds: {:?}", r.body);
    assert_eq!(clusters(&r), vec!["live"], "{:?}", r.body);
    assert!(
        warns_about(&r, down),
        "a warning names {down}: {:?}",
        r.body
    );

    let end = now();
    let r = q
        .range("up", end - 30.0, end, 5.0, &[])
        .await
        .expect("range");
    assert!(r.is_success(), "{:?}", r.body);
    assert!(warns_about(&r, down), "range: {:?}", r.body);

    let start = format!("{:.3}", end - 60.0);
    let endp = format!("{end:.3}");
    let r = q
        .get(
            "series",
            &[("match[]", "up"), ("start", &start), ("end", &endp)],
        )
        .await
        .expect("series");
    assert!(r.is_success(), "{:?}", r.body);
    assert!(
        r.body["data"].as_array().is_some_and(|a| !a.is_empty()),
        "live store's series are listed: {:?}",
        r.body
    );
    if series_warning {
        assert!(warns_about(&r, down), "series: {:?}", r.body);
    }

    let r = q
        .instant("up", now(), &[("partial_response", "false")])
        .await
        .expect("query");
    assert!(
        !r.is_success(),
        "partial_response=false fails: {:?}",
        r.body
    );
    assert!(
        r.error().is_some_and(|e| e.contains(down)),
        "the error names {down}: {:?}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_never_answers_gives_a_warning_or_an_error() {
    let (_prometheus, sidecar) = live_store("live").await;
    let down = format!("127.0.0.1:{}", free_port());
    let querier = StrataQuery::builder(binary())
        .endpoint(sidecar.grpc_address())
        .endpoint(&down)
        .start()
        .await
        .expect("start strata query");
    let q = api(querier.url());
    wait_for_clusters(&q, &["live"]).await;
    assert_partial_behaviour(&q, &down, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_cut_off_after_it_was_healthy_gives_a_warning_or_an_error() {
    let (_prometheus, sidecar) = live_store("live").await;
    let (_other_prometheus, other_sidecar) = live_store("other").await;
    let proxy = Proxy::start(other_sidecar.grpc_address().parse().expect("address"))
        .await
        .expect("start proxy");
    let cut = proxy.addr().to_string();
    let querier = StrataQuery::builder(binary())
        .endpoint(sidecar.grpc_address())
        .endpoint(&cut)
        .start()
        .await
        .expect("start strata query");
    let q = api(querier.url());
    wait_for_clusters(&q, &["live", "other"]).await;
    let r = q.instant("up", now(), &[]).await.expect("query");
    assert!(
        r.warnings().is_empty(),
        "no warning while all is well: {:?}",
        r.body
    );

    proxy.set_down(true);
    // Longer than a health-check interval (Thanos: 5s): a store that failed its checks is still
    // one the user configured, and its absence must show (as Thanos's strict endpoints do).
    tokio::time::sleep(HEALTH_CHECK_SLACK).await;
    assert_partial_behaviour(&q, &cut, true).await;

    proxy.set_down(false);
    wait_for_clusters(&q, &["live", "other"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_partial_response_flag_makes_failure_the_default() {
    let (_prometheus, sidecar) = live_store("live").await;
    let down = format!("127.0.0.1:{}", free_port());
    let querier = StrataQuery::builder(binary())
        .endpoint(sidecar.grpc_address())
        .endpoint(&down)
        .arg("--no-query.partial-response")
        .start()
        .await
        .expect("start strata query");
    let q = api(querier.url());
    // The live store's data is there when partial responses are asked for explicitly.
    wait_until(
        "live data with partial_response=true",
        Duration::from_secs(60),
        || async {
            let r = q
                .instant("up", now(), &[("partial_response", "true")])
                .await
                .ok()?;
            (clusters(&r) == ["live"]).then_some(r)
        },
    )
    .await
    .map(|r| assert!(warns_about(&r, &down), "{:?}", r.body))
    .expect("partial answer");
    let r = q.instant("up", now(), &[]).await.expect("query");
    assert!(!r.is_success(), "fails by default: {:?}", r.body);
    assert!(
        r.error().is_some_and(|e| e.contains(&down)),
        "names {down}: {:?}",
        r.body
    );
}

/// The reference: Thanos's own querier over the same kind of setup gives what the test demands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thanos_query_reference_behaves_as_the_test_demands() {
    let (_prometheus, sidecar) = live_store("live").await;
    let down = format!("127.0.0.1:{}", free_port());
    let thanos = ThanosQuery::builder()
        .endpoint(sidecar.grpc_address())
        .strict_endpoint(&down)
        .start()
        .await
        .expect("start thanos query");
    let q = api(thanos.url());
    wait_for_clusters(&q, &["live"]).await;
    assert_partial_behaviour(&q, &down, false).await;
}
