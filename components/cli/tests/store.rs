//! `strata store` as a process: the Thanos flag names, bad flags exit 2 naming the flag, and a real
//! `thanos query` v0.42 uses it as an endpoint over a real MinIO bucket, answering like a real
//! Prometheus serving the same blocks; SIGTERM stops it with exit 0.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use nix::sys::signal::Signal;
use strata_e2e::{
    BenchData, CompareOptions, Minio, PromApi, Prometheus, StrataStore, ThanosQuery, wait_until,
};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run strata")
}

#[test]
fn help_lists_the_thanos_flag_names() {
    let out = strata(&["store", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--objstore.config",
        "--objstore.config-file",
        "--data-dir",
        "--grpc-address",
        "--sync-block-duration",
        "--min-time",
        "--max-time",
        "--selector.relabel-config",
        "--selector.relabel-config-file",
        "--ignore-deletion-marks-delay",
        "--index-cache-size",
        "--chunk-cache-size",
        "--store.limits.request-series",
        "--store.limits.request-samples",
        "--store.grpc.series-max-concurrency",
        "--store.index-header-lazy-reader-idle-timeout",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = format!(
        "--objstore.config=type: FILESYSTEM\nconfig:\n  directory: {}\n",
        dir.path().display()
    );
    for (args, needle) in [
        (vec!["store", "--min-time=yesterday-ish"], "--min-time"),
        (
            vec!["store", "--index-cache-size=12parsecs"],
            "--index-cache-size",
        ),
        (
            vec!["store", "--objstore.config=type: NOPE"],
            "object storage",
        ),
        (
            vec![
                "store",
                &bucket,
                "--selector.relabel-config=- action: explode",
                "--http-address=127.0.0.1:0",
            ],
            "--selector.relabel-config",
        ),
    ] {
        let out = strata(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_thanos_query_uses_the_gateway_and_answers_like_prometheus() {
    let data = BenchData::generate(&["--targets", "4", "--hours", "3"]).expect("bench data");
    let prometheus = Prometheus::builder()
        .data_dir(&data.copy_to("prometheus").expect("copy"))
        .arg("--storage.tsdb.retention.time=100y")
        .start()
        .await
        .expect("start Prometheus");
    let minio = Minio::start().await.expect("MinIO");
    minio.create_bucket("blocks").await.expect("bucket");
    let upload = data.copy_to("upload").expect("copy");
    minio
        .upload_blocks("blocks", &upload, &[("cluster", "c1")])
        .await
        .expect("upload");
    let binary = Path::new(env!("CARGO_BIN_EXE_strata"));
    let store_dir = tempfile::tempdir().expect("tempdir");
    let mut store = StrataStore::start(
        binary,
        &minio.objstore_yaml("blocks"),
        store_dir.path(),
        &["--chunk-cache-size=64MB"],
    )
    .await
    .expect("start strata store");
    let thanos = ThanosQuery::start(&[store.grpc_address().to_string()])
        .await
        .expect("thanos query");
    thanos
        .wait_for_endpoints(Duration::from_secs(60))
        .await
        .expect("thanos sees the gateway");
    let stores = thanos.stores().await.expect("stores");
    assert!(
        stores.to_string().contains("c1"),
        "Thanos shows the gateway's label set: {stores}"
    );

    let reference = PromApi::new(prometheus.url(), Duration::from_secs(60)).expect("client");
    let ours = PromApi::new(thanos.url(), Duration::from_secs(60)).expect("client");
    let (start, end) = (data.start_secs(), data.end_secs());
    let opts = CompareOptions {
        drop_labels: vec!["cluster".into()],
        ..CompareOptions::default()
    };
    wait_until(
        "Thanos answers from the gateway",
        Duration::from_secs(60),
        || {
            let (ours, reference, opts) = (&ours, &reference, &opts);
            async move {
                let want = reference.instant("count(up)", end, &[]).await.ok()?;
                let got = ours.instant("count(up)", end, &[]).await.ok()?;
                strata_e2e::compare(&want, &got, opts)
                    .is_empty()
                    .then_some(())
            }
        },
    )
    .await
    .expect("count(up) agrees");
    let metric = |name: &'static str| {
        let url = format!("{}/metrics", store.url());
        async move {
            let text = reqwest::get(url).await.ok()?.text().await.ok()?;
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .reduce(|a, b| a + b)
        }
    };
    let mut compared = 0;
    let mut gets = Vec::new();
    // Twice: the second pass is served from the index and chunk caches (no GET), the same answers.
    for _ in 0..2 {
        for expr in [
            "up",
            "sum by (job) (rate(http_requests_total[5m]))",
            "histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
            "max_over_time(process_resident_memory_bytes[30m])",
            "{__name__=~\"kube_.*|up\", instance=~\".*1.*\"}",
        ] {
            let want = reference
                .range(expr, start, end, 120.0, &[])
                .await
                .expect("reference");
            let got = ours
                .range(expr, start, end, 120.0, &[])
                .await
                .expect("thanos");
            let diffs = strata_e2e::compare(&want, &got, &opts);
            assert!(diffs.is_empty(), "{expr}: {:?}", diffs.first());
            compared += 1;
        }
        gets.push(
            metric("strata_store_series_call_object_store_requests_sum")
                .await
                .expect("GET count"),
        );
    }
    assert_eq!(compared, 10);
    assert!(gets[0] > 0.0, "{gets:?}");
    assert_eq!(gets[0], gets[1], "the second pass read the bucket");
    assert!(
        metric("strata_store_chunk_cache_hits_total")
            .await
            .is_some_and(|h| h > 0.0)
    );

    store.process().signal(Signal::SIGTERM).expect("signal");
    let status = store
        .process()
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(0), "{}", store.process().log_tail());
}
