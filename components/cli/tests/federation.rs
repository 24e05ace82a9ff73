//! The whole federation on real servers: a real MinIO bucket, two real Prometheus 3.x HA replicas
//! (external labels `cluster`, `replica`) holding the same history (the shared bench data, 6 h,
//! backfilled with promtool into 2 h blocks), a `strata sidecar` next to each (shipping the blocks),
//! a `strata store` over the bucket and a `strata query` over all three, de-duplicating on
//! `replica`. A third Prometheus on a copy of the same blocks is the reference.
//!
//! Asserted, with the standard query set (instant + range, ≥ 50 queries) compared to the reference:
//! 1. with every part up, the de-duplicated answers equal the reference's;
//! 2. after replica b and its data are gone (Prometheus killed, data deleted, sidecar killed), the
//!    answers are still equal — from replica a and the blocks it and b shipped — and the querier
//!    warns about the missing sidecar;
//! 3. after replica a is gone too, the store gateway alone answers the same;
//! 4. kill -9 of a sidecar, of the store gateway and of the querier, each restarted in place: the
//!    same answers (nothing lost or doubled);
//! 5. observability (checked while every part runs, after step 1): replica a scrapes every Strata
//!    component's `/metrics`; every query of the Grafana dashboard in `docs/grafana/` parses and
//!    returns data;
//! 6. a compactor killed with a real SIGKILL mid-pass (once files appear in its work
//!    directory), then crashing through its fault hook right after uploading its first output,
//!    then running again: vertical compaction merges the replicas' blocks, no block keeps the
//!    replica label, and the answers stay equal (no sample lost or doubled);
//! 7. downsampling (threshold lowered) with one day of raw retention, crashing once after a
//!    downsampled upload: only 5m blocks remain, raw-only queries find nothing, and
//!    `*_over_time` / `rate` / `increase` with `max_source_resolution=5m` agree with the
//!    reference's raw answers (exactly, or within a 5m window's share of the range).
//!
//! Printed, not asserted (machines are noisy): the shipper's upload lag and the query latency
//! p50/p99 through the querier vs straight to Prometheus.

#![allow(clippy::print_stdout)] // the test reports its figures

use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_e2e::{
    BenchData, ListedQuery, Minio, PromApi, Prometheus, SideBySide, SideBySideOptions,
    StrataServer, listed_queries, side_by_side, wait_until,
};

/// 10 targets × 6 h at 15 s from an 8 h-aligned start: three 2 h blocks per replica.
const GEN_ARGS: &[&str] = &[
    "--targets",
    "10",
    "--hours",
    "6",
    "--high-cardinality",
    "100",
    "--start",
    "1700006400",
];
const STEP: f64 = 60.0;
const BUCKET: &str = "federation";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_strata"))
}

fn api(url: &str) -> PromApi {
    PromApi::new(url, Duration::from_secs(120)).expect("HTTP client")
}

fn queries() -> Vec<ListedQuery> {
    let own = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/queries.txt");
    listed_queries(&own).expect("the query lists (set STRATA_BENCH_DIR for shared/bench)")
}

/// A Prometheus on `data` that keeps it (no compaction of its own, no retention) and scrapes the
/// targets listed in `sd_file`.
async fn prometheus(data: &Path, replica: Option<&str>, sd_file: &Path) -> Prometheus {
    let labels = match replica {
        Some(r) => format!("  external_labels:\n    cluster: fed\n    replica: {r}\n"),
        None => String::new(),
    };
    Prometheus::builder()
        .config(&format!(
            "global:\n  scrape_interval: 1s\n{labels}scrape_configs:\n  - job_name: strata\n    file_sd_configs:\n      - files: ['{}']\n",
            sd_file.display()
        ))
        .data_dir(data)
        .arg("--storage.tsdb.retention.time=100y")
        .arg("--storage.tsdb.min-block-duration=2h")
        .arg("--storage.tsdb.max-block-duration=2h")
        .arg("--enable-feature=promql-experimental-functions")
        .start()
        .await
        .expect("start Prometheus")
}

/// Writes a file-SD file: one target group per component.
fn write_sd(path: &Path, groups: &[(&str, Vec<String>)]) {
    let json: Vec<serde_json::Value> = groups
        .iter()
        .map(|(component, targets)| {
            serde_json::json!({"targets": targets, "labels": {"component": component}})
        })
        .collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&json).expect("json")).expect("write sd file");
    std::fs::rename(&tmp, path).expect("rename sd file");
}

async fn metric(url: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

struct Run {
    queries: Vec<ListedQuery>,
    reference: PromApi,
    querier: PromApi,
    data: BenchData,
}

/// Queries over downsampled data, with their relative tolerance against raw data. Evaluated at
/// the last millisecond of each hour, over ranges of whole hours, so the raw and the 5m
/// answers cover the same 5m windows: the `*_over_time` aggregates must then agree exactly
/// (up to float rounding), `rate`/`increase` within a 5m window's share of the 1h range.
const DOWNSAMPLED_QUERIES: &[(&str, f64)] = &[
    ("max_over_time(process_resident_memory_bytes[1h])", 1e-9),
    ("min_over_time(process_resident_memory_bytes[1h])", 1e-9),
    ("sum_over_time(process_resident_memory_bytes[1h])", 1e-9),
    ("avg_over_time(process_resident_memory_bytes[1h])", 1e-9),
    (
        "sum by (namespace) (rate(http_requests_total[1h]))",
        5.0 / 60.0,
    ),
    (
        "sum by (code) (increase(http_requests_total[1h]))",
        5.0 / 60.0,
    ),
];

impl Run {
    /// `(start, end)` of the downsampled checks: each whole hour's last millisecond.
    fn hours(&self) -> (f64, f64) {
        let first = (self.data.start_secs() / 3600.0).ceil() * 3600.0 + 3600.0 - 0.001;
        let last = (self.data.end_secs() / 3600.0).floor() * 3600.0 - 0.001;
        (first, last)
    }

    /// Waits until the querier answers from the 5m blocks, and checks raw data is gone.
    async fn settle_downsampled(&self) {
        let (start, end) = self.hours();
        wait_until("5m answers", Duration::from_secs(60), || async {
            let r = self
                .querier
                .range(
                    DOWNSAMPLED_QUERIES[0].0,
                    start,
                    end,
                    3600.0,
                    &[("max_source_resolution", "5m")],
                )
                .await
                .ok()?;
            (!r.series().is_empty()).then_some(())
        })
        .await
        .expect("the querier reads the 5m blocks");
        let raw = self
            .querier
            .instant(
                "up",
                self.data.end_secs(),
                &[("max_source_resolution", "0s")],
            )
            .await
            .expect("raw query");
        assert!(
            raw.is_success() && raw.series().is_empty(),
            "raw blocks are gone, so raw-only queries find nothing: {:?}",
            raw.body
        );
    }

    /// Every downsampled query agrees with the reference's raw answer within its tolerance.
    async fn compare_downsampled(&self) {
        println!("== downsampled (5m) against raw");
        let (start, end) = self.hours();
        let mut problems = Vec::new();
        for (expr, tol) in DOWNSAMPLED_QUERIES {
            let want = self
                .reference
                .range(expr, start, end, 3600.0, &[])
                .await
                .expect("reference");
            let got = self
                .querier
                .range(expr, start, end, 3600.0, &[("max_source_resolution", "5m")])
                .await
                .expect("querier");
            let (want, got) = (series_points(&want), series_points(&got));
            if want.is_empty() || want.len() != got.len() {
                problems.push(format!(
                    "{expr}: {} series vs {} raw",
                    got.len(),
                    want.len()
                ));
                continue;
            }
            let mut worst = 0.0f64;
            for (labels, pts) in &want {
                let Some(ours) = got.get(labels) else {
                    problems.push(format!("{expr}: no series {labels}"));
                    continue;
                };
                for (t, v) in pts {
                    let Some(o) = ours.get(t) else {
                        problems.push(format!("{expr} {labels}: no point at {t}"));
                        continue;
                    };
                    let rel = (o - v).abs() / v.abs().max(1e-12);
                    worst = worst.max(rel);
                    if rel > *tol {
                        problems.push(format!("{expr} {labels} @{t}: {o} vs raw {v} ({rel:.4})"));
                    }
                }
            }
            println!(
                "FIGURE downsampled {expr}: worst relative difference {worst:.6} (tolerance {tol})"
            );
        }
        assert!(
            problems.is_empty(),
            "downsampled answers out of tolerance:\n{}",
            problems.join("\n")
        );
    }

    async fn compare(&self, phase: &str, annotations: bool) -> SideBySide {
        println!("== {phase}");
        let opts = SideBySideOptions {
            step: STEP,
            drop_labels: &["cluster"],
            annotations,
        };
        let report = side_by_side(
            &self.queries,
            &self.reference,
            &self.querier,
            &self.data,
            &opts,
        )
        .await
        .expect("the reference answers");
        assert!(report.list_errors.is_empty(), "{:?}", report.list_errors);
        assert!(report.compared >= 100, "only {} queries", report.compared);
        assert!(
            report.non_empty >= report.compared / 2,
            "too few answers with data: {report:?}"
        );
        assert!(
            report.mismatches.is_empty(),
            "{phase}: {} of {} queries differ (see MISMATCH lines above)",
            report.mismatched_queries,
            report.compared
        );
        report
    }

    /// Waits until the querier answers `count(up)` like the reference (it learns endpoints and
    /// blocks asynchronously).
    async fn settle(&self, what: &str) {
        let end = self.data.end_secs();
        let want = self
            .reference
            .instant("count(up)", end, &[])
            .await
            .expect("count");
        wait_until(what, Duration::from_secs(90), || {
            let want = &want;
            async move {
                let got = self.querier.instant("count(up)", end, &[]).await.ok()?;
                let opts = strata_e2e::CompareOptions {
                    drop_labels: vec!["cluster".into()],
                    ..Default::default()
                };
                strata_e2e::compare(want, &got, &opts)
                    .is_empty()
                    .then_some(())
            }
        })
        .await
        .expect("querier settles");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_answers_like_one_prometheus_through_failures() {
    let data = BenchData::generate(GEN_ARGS).expect("bench data");
    let blocks_per_replica = std::fs::read_dir(data.blocks_dir())
        .expect("blocks dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("meta.json").is_file())
        .count();
    assert!(blocks_per_replica >= 3, "{blocks_per_replica} blocks");

    let scratch = tempfile::tempdir().expect("scratch dir");
    let sd_file = scratch.path().join("strata-targets.json");
    write_sd(&sd_file, &[]);
    let no_targets = scratch.path().join("no-targets.json");
    write_sd(&no_targets, &[]);
    let reference = prometheus(&data.copy_to("ref").expect("copy"), None, &no_targets).await;
    let dir_a: PathBuf = data.copy_to("a").expect("copy");
    let dir_b: PathBuf = data.copy_to("b").expect("copy");
    // Two real replicas never share block IDs; copies of one backfill do, so b's get new ones.
    give_blocks_new_ids(&dir_b);
    let mut prom_a = prometheus(&dir_a, Some("a"), &sd_file).await;
    let mut prom_b = prometheus(&dir_b, Some("b"), &sd_file).await;

    let minio = Minio::start().await.expect("start MinIO");
    minio.create_bucket(BUCKET).await.expect("bucket");
    let objstore = format!("--objstore.config={}", minio.objstore_yaml(BUCKET));
    let sidecar_args = |p: &Prometheus| {
        vec![
            format!("--prometheus.url={}", p.url()),
            format!("--tsdb.path={}", p.data_dir().display()),
            "--prometheus.ready_timeout=30s".to_string(),
            "--shipper.sync-interval=1s".to_string(),
            objstore.clone(),
        ]
    };
    let mut sidecar_a = StrataServer::new(binary(), "sidecar", &sidecar_args(&prom_a), true);
    let mut sidecar_b = StrataServer::new(binary(), "sidecar", &sidecar_args(&prom_b), true);
    let store_dir = scratch.path().join("store");
    let mut store = StrataServer::new(
        binary(),
        "store",
        &[
            objstore.clone(),
            format!("--data-dir={}", store_dir.display()),
            "--sync-block-duration=2s".to_string(),
        ],
        true,
    );
    let mut endpoints: Vec<String> = [&sidecar_a, &sidecar_b, &store]
        .iter()
        .filter_map(|s| s.grpc_address().map(|a| format!("--endpoint={a}")))
        .collect();
    endpoints.push("--query.replica-label=replica".to_string());
    let mut querier = StrataServer::new(binary(), "query", &endpoints, false);
    // A compactor in --wait mode while the replicas run, so it is scraped like the rest; it leaves
    // the fresh blocks alone (30m consistency delay) and is stopped before the compaction phase.
    let mut watcher = StrataServer::new(
        binary(),
        "compact",
        &[
            objstore.clone(),
            format!(
                "--data-dir={}",
                scratch.path().join("compact-wait").display()
            ),
            "--wait".to_string(),
        ],
        false,
    );

    sidecar_a.start().await.expect("sidecar a");
    sidecar_b.start().await.expect("sidecar b");
    store.start().await.expect("store gateway");
    querier.start().await.expect("querier");
    watcher.start().await.expect("compactor --wait");
    write_sd(
        &sd_file,
        &[
            (
                "sidecar",
                vec![sidecar_a.http_address(), sidecar_b.http_address()],
            ),
            ("store", vec![store.http_address()]),
            ("query", vec![querier.http_address()]),
            ("compact", vec![watcher.http_address()]),
        ],
    );

    // Both sidecars ship their three blocks; the gateway serves all six.
    let want_blocks = (2 * blocks_per_replica) as f64;
    wait_until(
        "the gateway serves both replicas' blocks",
        Duration::from_secs(120),
        || async {
            metric(store.url(), "strata_store_blocks")
                .await
                .filter(|n| *n >= want_blocks)
        },
    )
    .await
    .expect("blocks shipped and synced");
    for s in [&sidecar_a, &sidecar_b] {
        let lag = metric(s.url(), "strata_shipper_last_upload_lag_seconds").await;
        println!(
            "FIGURE upload lag (block ULID time → uploaded) {}: {lag:?} s",
            s.url()
        );
    }

    let run = Run {
        queries: queries(),
        reference: api(reference.url()),
        querier: api(querier.url()),
        data,
    };
    run.settle("querier sees all stores").await;

    // 1. Everything up.
    let all_up = run.compare("all parts up", true).await;
    let (ref_p50, ours_p50) = all_up.latency_quantile(0.5);
    let (ref_p99, ours_p99) = all_up.latency_quantile(0.99);
    println!(
        "FIGURE query latency over {} queries: Prometheus p50 {ref_p50:?} p99 {ref_p99:?}; through the querier (2 sidecars + store) p50 {ours_p50:?} p99 {ours_p99:?}",
        all_up.latencies.len()
    );

    // 5. Observability, while every part runs: replica a scrapes every component's /metrics, and
    // every query of the dashboard parses and returns data.
    let dashboard = dashboard_queries();
    assert!(
        dashboard.len() >= 10,
        "{} dashboard queries",
        dashboard.len()
    );
    let scraper = api(prom_a.url());
    wait_until(
        "replica a has scraped every component twice",
        Duration::from_secs(60),
        || async {
            let r = scraper
                .get(
                    "query",
                    &[(
                        "query",
                        "count(count_over_time(up{component!=\"\"}[1m]) >= 2)",
                    )],
                )
                .await
                .ok()?;
            let n = r.series().first()?["value"][1]
                .as_str()?
                .parse::<f64>()
                .ok()?;
            (n >= 5.0).then_some(())
        },
    )
    .await
    .expect("components scraped");
    let mut failures = Vec::new();
    for (title, expr) in &dashboard {
        let r = scraper
            .get("query", &[("query", expr)])
            .await
            .expect("query replica a");
        if !r.is_success() {
            failures.push(format!("{title}: {expr}: {:?}", r.error()));
        } else if r.series().is_empty() {
            failures.push(format!("{title}: {expr}: no data"));
        }
    }
    assert!(
        failures.is_empty(),
        "dashboard queries failing:\n{}",
        failures.join("\n")
    );

    // kill -9 of a sidecar, restarted in place: the same answers.
    sidecar_a.kill9();
    sidecar_a.start().await.expect("restart sidecar a");
    run.settle("querier sees the restarted sidecar").await;
    run.compare("after kill -9 of sidecar a", true).await;
    watcher.kill9();

    // 2. Replica b and its data are gone.
    prom_b.process().kill();
    sidecar_b.kill9();
    std::fs::remove_dir_all(&dir_b).expect("delete replica b's data");
    run.compare("replica b gone", false).await;
    let warned = run
        .querier
        .instant("count(up)", run.data.end_secs(), &[])
        .await
        .expect("query");
    let sidecar_b_addr = sidecar_b.grpc_address().unwrap_or_default().to_string();
    assert!(
        warned
            .warnings()
            .iter()
            .any(|w| w.contains(&sidecar_b_addr)),
        "a warning names the missing sidecar {sidecar_b_addr}: {:?}",
        warned.body
    );

    // 3. Replica a is gone too: the store gateway alone.
    prom_a.process().kill();
    sidecar_a.kill9();
    std::fs::remove_dir_all(&dir_a).expect("delete replica a's data");
    run.compare("both replicas gone: the bucket alone", false)
        .await;

    // 4. kill -9 of the gateway and of the querier, restarted in place.
    store.kill9();
    store.start().await.expect("restart the store gateway");
    run.settle("querier sees the restarted gateway").await;
    run.compare("after kill -9 of the store gateway", false)
        .await;
    querier.kill9();
    querier.start().await.expect("restart the querier");
    run.settle("restarted querier sees the gateway").await;
    run.compare("after kill -9 of the querier", false).await;

    // 6. The compactor: vertical compaction of the two replicas' blocks (replica label removed,
    // samples de-duplicated) and level compaction. It first crashes right after uploading its
    // first output (before marking any source), then runs again to the end.
    let compact_dir = scratch.path().join("compact");
    let compact_args = [
        objstore.clone(),
        format!("--data-dir={}", compact_dir.display()),
        "--consistency-delay=0s".to_string(),
        "--compact.enable-vertical-compaction".to_string(),
        "--deduplication.replica-label=replica".to_string(),
        "--downsampling.disable".to_string(),
        "--delete-delay=0s".to_string(),
        format!("--http-address=127.0.0.1:{}", strata_e2e::free_port()),
    ];
    // A real kill -9 first, while the compactor is busy (its work directory has files), then
    // the fault-hook crash right after its first upload, then a clean pass.
    compact_kill9_mid_pass(&compact_args, &compact_dir);
    compact_crash_then_finish(&compact_args, "after-upload");
    // What remains: blocks without the replica label, at least one of them compacted (level 2).
    let metas = bucket_metas(&minio).await;
    assert!(!metas.is_empty());
    for m in &metas {
        assert!(
            m["thanos"]["labels"].get("replica").is_none(),
            "every replica block was merged away: {m}"
        );
    }
    assert!(
        metas
            .iter()
            .any(|m| m["compaction"]["level"].as_i64() >= Some(2)),
        "a compacted block: {metas:?}"
    );
    let live = metas.len() as f64;
    wait_until(
        "the gateway serves the compacted blocks",
        Duration::from_secs(60),
        || async {
            metric(store.url(), "strata_store_blocks")
                .await
                .filter(|n| *n == live)
        },
    )
    .await
    .expect("store synced the compactor's output");
    run.compare("after compaction and vertical de-duplication", false)
        .await;

    // 7. Downsampling (the 40h threshold lowered to 1h for this 6 h history) with raw retention
    // of one day, so the 2023 raw blocks go and only 5m blocks remain; the compactor first
    // crashes right after uploading a downsampled block.
    let mut ds_args = compact_args.to_vec();
    ds_args.retain(|a| a != "--downsampling.disable");
    ds_args.push("--debug.downsample-min-span-5m=1h".to_string());
    ds_args.push("--retention.resolution-raw=1d".to_string());
    compact_crash_then_finish(&ds_args, "after-downsample-upload");
    let metas = bucket_metas(&minio).await;
    assert!(
        !metas.is_empty()
            && metas
                .iter()
                .all(|m| m["thanos"]["downsample"]["resolution"].as_i64() == Some(300_000)),
        "only 5m blocks are left: {metas:?}"
    );
    let live = metas.len() as f64;
    wait_until(
        "the gateway serves the 5m blocks",
        Duration::from_secs(60),
        || async {
            metric(store.url(), "strata_store_blocks")
                .await
                .filter(|n| *n == live)
        },
    )
    .await
    .expect("store synced the downsampled blocks");
    run.settle_downsampled().await;
    run.compare_downsampled().await;
}

/// Starts `strata compact ARGS` (one pass) and kills it with SIGKILL as soon as a file appears
/// under its work directories in `data_dir` (blocks being downloaded or written).
fn compact_kill9_mid_pass(args: &[String], data_dir: &Path) {
    use std::os::unix::process::ExitStatusExt;
    let mut child = std::process::Command::new(binary())
        .arg("compact")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start strata compact");
    let busy = || {
        ["compact", "downsample"]
            .iter()
            .any(|d| has_file(&data_dir.join(d)))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        if busy() {
            child.kill().expect("kill -9 strata compact");
            break;
        }
        if let Some(status) = child.try_wait().expect("poll strata compact") {
            panic!("strata compact ended ({status}) before it could be killed mid-pass");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "strata compact wrote no work file within 300 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let status = child.wait().expect("reap strata compact");
    assert_eq!(
        status.signal(),
        Some(9),
        "the compactor died of the SIGKILL, mid-pass: {status}"
    );
    println!("killed strata compact with SIGKILL mid-pass");
}

/// Whether any regular file lies under `dir` (any depth).
fn has_file(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        let p = e.path();
        if p.is_dir() {
            has_file(&p)
        } else {
            p.is_file()
        }
    })
}

/// Runs `strata compact ARGS` with the fault hook at `fault` (it must abort there), then again
/// without it (it must finish the pass cleanly).
fn compact_crash_then_finish(args: &[String], fault: &str) {
    let run = |fault: Option<&str>| {
        let mut cmd = std::process::Command::new(binary());
        cmd.arg("compact").args(args);
        if let Some(f) = fault {
            cmd.env("STRATA_COMPACT_FAULT", f);
        }
        cmd.output().expect("run strata compact")
    };
    let crashed = run(Some(fault));
    assert!(
        !crashed.status.success(),
        "the fault hook aborts the compactor at {fault}: {}",
        String::from_utf8_lossy(&crashed.stderr)
    );
    let finished = run(None);
    assert!(
        finished.status.success(),
        "compactor pass after the crash at {fault}: {}",
        String::from_utf8_lossy(&finished.stderr)
    );
}

/// The meta.json of every live block (no deletion mark) in the bucket.
async fn bucket_metas(minio: &Minio) -> Vec<serde_json::Value> {
    use futures::TryStreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};
    let store = minio.object_store(BUCKET).expect("S3 client");
    let names: Vec<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list bucket");
    let marked: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_suffix("/deletion-mark.json"))
        .collect();
    let mut out = Vec::new();
    for n in &names {
        let Some(id) = n.strip_suffix("/meta.json") else {
            continue;
        };
        if marked.contains(&id) {
            continue;
        }
        let body = store
            .get(&object_store::path::Path::from(n.as_str()))
            .await
            .expect("get meta.json")
            .bytes()
            .await
            .expect("read meta.json");
        out.push(serde_json::from_slice(&body).expect("meta.json is JSON"));
    }
    out
}

/// `(panel title, expr)` of every target of the dashboard JSON.
fn dashboard_queries() -> Vec<(String, String)> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/grafana/strata-federation.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        for t in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                out.push((title.clone(), expr.to_string()));
            }
        }
    }
    out
}

/// Renames every block in `dir` to a fresh ULID and rewrites its meta.json to match (`ulid` and
/// the single `compaction.sources` entry a level-1 block has).
fn give_blocks_new_ids(dir: &Path) {
    for entry in std::fs::read_dir(dir)
        .expect("read blocks dir")
        .filter_map(Result::ok)
    {
        let meta_path = entry.path().join("meta.json");
        let Ok(text) = std::fs::read_to_string(&meta_path) else {
            continue;
        };
        let mut meta: serde_json::Value = serde_json::from_str(&text).expect("meta.json");
        let id = ulid::Ulid::new().to_string();
        meta["ulid"] = serde_json::Value::String(id.clone());
        meta["compaction"]["sources"] = serde_json::json!([id]);
        std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).expect("json"))
            .expect("write meta.json");
        std::fs::rename(entry.path(), dir.join(&id)).expect("rename block dir");
        // Distinct ULID times within one millisecond are fine; keep them apart anyway.
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `labels (without cluster) -> (timestamp ms -> value)` of a range answer.
fn series_points(
    r: &strata_e2e::ApiResponse,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<i64, f64>> {
    r.series()
        .iter()
        .map(|s| {
            let mut metric = s["metric"].clone();
            if let Some(m) = metric.as_object_mut() {
                m.remove("cluster");
            }
            let pts = s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        (p[0].as_f64()? * 1000.0).round() as i64,
                        strata_e2e::parse_value(&p[1])?,
                    ))
                })
                .collect();
            (strata_e2e::label_key(&metric), pts)
        })
        .collect()
}
