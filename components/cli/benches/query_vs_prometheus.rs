//! The querier's speed against Prometheus's own engine on the same data, in the same run.
//!
//! Part 1, the standard set: the shared bench data (`gen-openmetrics`) is backfilled with the real
//! promtool into a real Prometheus 3.x; Strata reads the same blocks two ways — `strata query` →
//! `strata sidecar` → that Prometheus (column `strata`), and `strata query` → `strata store` over
//! the blocks in a local filesystem bucket (column `via-store`: no Prometheus in the path). Every
//! query of the standard set (`shared/bench/queries.txt`) runs as an instant query (at the last
//! sample) and as a range query (whole span, 60s step) against each HTTP API, alternating, `ROUNDS`
//! times; the table shows each side's median latency, the ratio (Prometheus / Strata: above 1
//! means Strata is faster) and whether the answers matched.
//!
//! Part 2, long range: `STRATA_BENCH_LONG_DAYS` (default 30) days of the same generator (6 targets,
//! 60 s scrape), backfilled into 2h blocks by `strata tools tsdb create-blocks-from` (promtool
//! re-reads the whole input for every 2h block: too slow for a month) and given to a second
//! Prometheus, which compacts them itself before timing; the
//! same raw blocks in a filesystem bucket, compacted and downsampled by one `strata compact` pass
//! (5m and 1h blocks), served by `strata store`. Dashboard-style range queries over the whole span
//! at a 1h step run against Prometheus (raw data), against the querier at raw resolution, and with
//! `max_source_resolution=auto` (the 5m aggregates, as Thanos picks them: a fifth of the step). Raw
//! answers must be equal; downsampled ones are checked within 5 % (`close`) from the second step on
//! (a 5m aggregate is stamped at its window's end: none stands at the first sample's time).
//!
//! Nothing is asserted about time. Run with `cargo bench -p strata --bench query_vs_prometheus`.
//! Knobs (environment): `STRATA_BENCH_TARGETS` (default 20), `STRATA_BENCH_HOURS` (6),
//! `STRATA_BENCH_ROUNDS` (5), `STRATA_BENCH_TARGETS=0` skips part 1, `STRATA_BENCH_LONG_DAYS` (30; 0 skips part 2),
//! `STRATA_BENCH_LONG_TARGETS` (6), `STRATA_BENCH_CHUNK_CACHE` (the store's `--chunk-cache-size`,
//! default `256MB`, as a store gateway serving dashboards would run; `0` turns it off — Prometheus
//! keeps its blocks memory-mapped), and `STRATA_BENCH_THANOS=1` to add a column for a real
//! `thanos query` over the same Strata sidecar.
//! `cargo test --benches` runs it without `--bench`: then it only checks that it was built.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::path::Path;
use std::time::{Duration, Instant};

use strata_e2e::{
    BenchData, CompareOptions, PromApi, Prometheus, StrataQuery, StrataSidecar, StrataStore,
    ThanosQuery, Tolerance, standard_queries, upload_blocks_to, wait_until,
};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

/// One side of the comparison.
struct Side {
    name: &'static str,
    api: PromApi,
}

/// Runs one query on one side; the latency in ms and the answer.
async fn timed(
    api: &PromApi,
    expr: &str,
    range: Option<(f64, f64)>,
    at: f64,
) -> (f64, strata_e2e::ApiResponse) {
    let start = Instant::now();
    let r = match range {
        Some((from, to)) => api.range(expr, from, to, 60.0, &[]).await,
        None => api.instant(expr, at, &[]).await,
    }
    .expect("query answered");
    (start.elapsed().as_secs_f64() * 1000.0, r)
}

async fn run() {
    let binary = Path::new(env!("CARGO_BIN_EXE_strata"));
    let rounds = env_or("STRATA_BENCH_ROUNDS", 5).max(1) as usize;
    if env_or("STRATA_BENCH_TARGETS", 20) == 0 {
        println!("standard set: skipped (STRATA_BENCH_TARGETS=0)");
        long_range(binary, rounds).await;
        return;
    }
    let targets = env_or("STRATA_BENCH_TARGETS", 20).to_string();
    let hours = env_or("STRATA_BENCH_HOURS", 6).to_string();
    let gen_args = ["--targets", targets.as_str(), "--hours", hours.as_str()];
    let data = BenchData::generate(&gen_args).expect("bench data");
    let blocks = data.copy_to("prometheus").expect("copy blocks");
    let prometheus = prometheus_on(&blocks).await;
    let sidecar = StrataSidecar::start(binary, prometheus.url(), &blocks)
        .await
        .expect("start strata sidecar");
    let strata = StrataQuery::builder(binary)
        .endpoint(sidecar.grpc_address())
        .start()
        .await
        .expect("start strata query");
    // The same blocks in a local filesystem bucket behind `strata store`, read by a second querier.
    let scratch = tempfile::tempdir().expect("tempdir");
    let (yaml, _) = filesystem_bucket(scratch.path(), "bucket", data.blocks_dir()).await;
    let (store, via_store) = querier_over_store(binary, &yaml, scratch.path()).await;
    let thanos = if std::env::var("STRATA_BENCH_THANOS").is_ok_and(|v| v == "1") {
        Some(
            ThanosQuery::builder()
                .endpoint(sidecar.grpc_address())
                .start()
                .await
                .expect("start thanos query"),
        )
    } else {
        None
    };
    let timeout = Duration::from_secs(600);
    let mut sides = vec![
        Side {
            name: "prometheus",
            api: PromApi::new(prometheus.url(), timeout).expect("client"),
        },
        Side {
            name: "strata",
            api: PromApi::new(strata.url(), timeout).expect("client"),
        },
    ];
    sides.push(Side {
        name: "via-store",
        api: PromApi::new(via_store.url(), timeout).expect("client"),
    });
    if let Some(t) = &thanos {
        sides.push(Side {
            name: "thanos",
            api: PromApi::new(t.url(), timeout).expect("client"),
        });
    }
    let (start, end) = (data.start_secs(), data.end_secs());
    // Queriers learn their endpoints asynchronously.
    for side in &sides[1..] {
        wait_until(
            &format!("{} sees the data", side.name),
            Duration::from_secs(60),
            || async {
                let r = side.api.instant("count(up)", end, &[]).await.ok()?;
                (!r.series().is_empty()).then_some(())
            },
        )
        .await
        .expect("querier ready");
    }

    let queries = standard_queries().expect("shared/bench/queries.txt");
    let opts = CompareOptions {
        drop_labels: vec!["cluster".into()],
        ..CompareOptions::default()
    };
    println!(
        "query_vs_prometheus: gen-openmetrics {} ({} samples, {} block series), {} queries x instant/range (step 60s over {:.1} h), median of {rounds}",
        gen_args.join(" "),
        data.samples(),
        data.block_series(),
        queries.len(),
        (end - start) / 3600.0
    );
    let mut header = format!("{:<7} {:>10}", "kind", "prom ms");
    for side in &sides[1..] {
        header.push_str(&format!(
            " {:>10} {:>7} {:>5}",
            format!("{} ms", side.name),
            "ratio",
            "same"
        ));
    }
    println!("{header}  query");
    let mut totals = vec![0.0; sides.len()];
    let mut log_ratio_sums = vec![0.0; sides.len()];
    let mut worst: Vec<(f64, String)> = vec![(f64::INFINITY, String::new()); sides.len()];
    let mut rows = 0usize;
    for expr in &queries {
        for range in [None, Some((start, end))] {
            let mut times = vec![Vec::new(); sides.len()];
            let mut answers = Vec::new();
            // Warm-up round (not counted) also collects the answers to compare.
            for side in &sides {
                answers.push(timed(&side.api, expr, range, end).await.1);
            }
            for _ in 0..rounds {
                for (i, side) in sides.iter().enumerate() {
                    times[i].push(timed(&side.api, expr, range, end).await.0);
                }
            }
            let medians: Vec<f64> = times.into_iter().map(median).collect();
            let kind = if range.is_some() { "range" } else { "instant" };
            let mut line = format!("{kind:<7} {:>10.2}", medians[0]);
            for i in 1..sides.len() {
                let ratio = medians[0] / medians[i];
                let same = strata_e2e::compare(&answers[0], &answers[i], &opts).is_empty();
                line.push_str(&format!(
                    " {:>10.2} {:>6.2}x {:>5}",
                    medians[i],
                    ratio,
                    if same { "yes" } else { "NO" }
                ));
                log_ratio_sums[i] += ratio.ln();
                if ratio < worst[i].0 {
                    worst[i] = (ratio, format!("{kind} {expr}"));
                }
            }
            for (i, m) in medians.iter().enumerate() {
                totals[i] += m;
            }
            rows += 1;
            println!("{line}  {expr}");
        }
    }
    for i in 1..sides.len() {
        println!(
            "{}: total {:.1} ms vs prometheus {:.1} ms -> {:.2}x overall (sum of medians), {:.2}x geometric mean; slowest relative: {:.2}x on {}",
            sides[i].name,
            totals[i],
            totals[0],
            totals[0] / totals[i],
            (log_ratio_sums[i] / rows as f64).exp(),
            worst[i].0,
            worst[i].1
        );
    }
    println!("(ratio = prometheus median / querier median; above 1 means the querier is faster)");
    drop((sidecar, strata, via_store, store, thanos, prometheus));
    long_range(binary, rounds).await;
}

/// A real Prometheus over the block directory `blocks` (external label `cluster=bench`).
async fn prometheus_on(blocks: &Path) -> Prometheus {
    Prometheus::builder()
        .config("global:\n  external_labels:\n    cluster: bench\n")
        .data_dir(blocks)
        .arg("--storage.tsdb.retention.time=100y")
        .start()
        .await
        .expect("start Prometheus")
}

/// `strata store` over the bucket of `objstore_yaml` (index-headers under `dir/store`) and a
/// `strata query` reading it.
async fn querier_over_store(
    binary: &Path,
    objstore_yaml: &str,
    dir: &Path,
) -> (StrataStore, StrataQuery) {
    let chunk_cache = std::env::var("STRATA_BENCH_CHUNK_CACHE").unwrap_or_else(|_| "256MB".into());
    let store = StrataStore::start(
        binary,
        objstore_yaml,
        &dir.join("store"),
        &[&format!("--chunk-cache-size={chunk_cache}")],
    )
    .await
    .expect("start strata store");
    let querier = StrataQuery::builder(binary)
        .endpoint(store.grpc_address())
        .start()
        .await
        .expect("start strata query over the store gateway");
    (store, querier)
}

/// Copies the blocks under `blocks` into a filesystem bucket `<dir>/<name>` (with `cluster=bench`
/// external labels, as a shipper would); returns its objstore YAML and its directory.
async fn filesystem_bucket(dir: &Path, name: &str, blocks: &Path) -> (String, std::path::PathBuf) {
    let bucket = dir.join(name);
    std::fs::create_dir_all(&bucket).expect("bucket dir");
    let fs = object_store::local::LocalFileSystem::new_with_prefix(&bucket).expect("local store");
    upload_blocks_to(&fs, blocks, &[("cluster", "bench")])
        .await
        .expect("upload blocks");
    let yaml = format!(
        "type: FILESYSTEM\nconfig:\n  directory: {}\n",
        bucket.display()
    );
    (yaml, bucket)
}

/// Block directories (with a meta.json) under `dir`, by downsampling resolution (ms).
fn blocks_by_resolution(dir: &Path) -> std::collections::BTreeMap<i64, usize> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(dir).expect("read bucket").flatten() {
        let Ok(raw) = std::fs::read(e.path().join("meta.json")) else {
            continue;
        };
        let meta: serde_json::Value = serde_json::from_slice(&raw).expect("meta.json");
        let res = meta["thanos"]["downsample"]["resolution"]
            .as_i64()
            .unwrap_or(0);
        *out.entry(res).or_insert(0) += 1;
    }
    out
}

/// Part 2: a month of data at a 1h step, raw in Prometheus, raw and downsampled in Strata.
async fn long_range(binary: &Path, rounds: usize) {
    let days = env_or("STRATA_BENCH_LONG_DAYS", 30);
    if days == 0 {
        println!("long range: skipped (STRATA_BENCH_LONG_DAYS=0)");
        return;
    }
    let targets = env_or("STRATA_BENCH_LONG_TARGETS", 6).to_string();
    let hours = (days * 24).to_string();
    let gen_args = [
        "--targets",
        targets.as_str(),
        "--hours",
        hours.as_str(),
        "--interval",
        "60",
        "--high-cardinality",
        "50",
    ];
    let data = BenchData::generate_with_strata(&gen_args, binary).expect("bench data");
    let (start, end) = (data.start_secs(), data.end_secs());

    // Prometheus gets the backfilled 2h blocks and compacts them as it would on its own; the
    // timing starts once its block count has stopped changing.
    let prom_blocks = data.copy_to("prometheus").expect("copy blocks");
    let count_blocks = |dir: &Path| {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join("meta.json").is_file())
                    .count()
            })
            .unwrap_or(0)
    };
    let backfilled = count_blocks(&prom_blocks);
    let prometheus = prometheus_on(&prom_blocks).await;
    let settle = Instant::now();
    let (mut last, mut since) = (count_blocks(&prom_blocks), Instant::now());
    while settle.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let now = count_blocks(&prom_blocks);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if settle.elapsed() > Duration::from_secs(90)
            && since.elapsed() > Duration::from_secs(30)
        {
            break;
        }
    }

    // Strata: the same raw blocks in a filesystem bucket, one compactor pass, a store gateway.
    let scratch = tempfile::tempdir().expect("tempdir");
    let (yaml, bucket) = filesystem_bucket(scratch.path(), "bucket", data.blocks_dir()).await;
    let compact_start = Instant::now();
    let out = std::process::Command::new(binary)
        .arg("compact")
        .arg(format!("--objstore.config={yaml}"))
        .arg(format!(
            "--data-dir={}",
            scratch.path().join("compact").display()
        ))
        .args(["--consistency-delay=0s", "--delete-delay=0s"])
        .output()
        .expect("run strata compact");
    assert!(
        out.status.success(),
        "strata compact failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let compact_secs = compact_start.elapsed().as_secs_f64();
    let layout = blocks_by_resolution(&bucket);
    let (_store, querier) = querier_over_store(binary, &yaml, scratch.path()).await;
    let timeout = Duration::from_secs(600);
    let prom = PromApi::new(prometheus.url(), timeout).expect("client");
    let ours = PromApi::new(querier.url(), timeout).expect("client");
    wait_until(
        "the querier sees the data",
        Duration::from_secs(60),
        || async {
            let r = ours.instant("count(up)", end, &[]).await.ok()?;
            (!r.series().is_empty()).then_some(())
        },
    )
    .await
    .expect("querier ready");

    let queries = [
        "sum by (namespace) (rate(http_requests_total[1h]))",
        "rate(http_requests_total{code=\"500\"}[1h])",
        "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[1h])))",
        "topk(5, sum by (instance) (rate(http_requests_total[1h])))",
        "sum by (code) (increase(http_requests_total[1d]))",
        "max_over_time(process_resident_memory_bytes[1h])",
        "avg_over_time(process_resident_memory_bytes[1h])",
        "min_over_time(up[1h])",
        "count by (node) (kube_pod_info)",
    ];
    println!();
    println!(
        "long range: gen-openmetrics {} ({} samples, {} block series); Prometheus: {backfilled} 2h blocks compacted by itself into {}; Strata: one `strata compact` pass ({compact_secs:.1} s) left blocks by resolution (ms: count) {layout:?}; range queries over {:.1} days at 1h step, median of {rounds}",
        gen_args.join(" "),
        data.samples(),
        data.block_series(),
        count_blocks(&prom_blocks),
        (end - start) / 86400.0
    );
    println!(
        "{:>10} {:>10} {:>7} {:>5} {:>10} {:>7} {:>5}  query",
        "prom ms", "raw ms", "ratio", "same", "auto ms", "ratio", "close"
    );
    let exact = CompareOptions {
        drop_labels: vec!["cluster".into()],
        ..CompareOptions::default()
    };
    let close = CompareOptions {
        tolerance: Tolerance {
            relative: 0.05,
            absolute: 1e-9,
        },
        ..exact.clone()
    };
    let auto: &[(&str, &str)] = &[("max_source_resolution", "auto")];
    let sides: [(&PromApi, &[(&str, &str)]); 3] = [(&prom, &[]), (&ours, &[]), (&ours, auto)];
    let mut totals = [0.0; 3];
    let mut differences = Vec::new();
    for expr in queries {
        // Compared from the second step on: a 5m aggregate is stamped at the end of its window, so
        // the downsampled answer has no point at the very first sample's time.
        let mut answers = Vec::new();
        for (api, extra) in sides {
            let r = api.range(expr, start + 3600.0, end, 3600.0, extra);
            answers.push(r.await.expect("answered"));
        }
        let mut times = vec![Vec::new(); 3];
        for _ in 0..rounds {
            for (i, (api, extra)) in sides.iter().enumerate() {
                let t = Instant::now();
                api.range(expr, start, end, 3600.0, extra)
                    .await
                    .expect("answered");
                times[i].push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let m: Vec<f64> = times.into_iter().map(median).collect();
        let same = strata_e2e::compare(&answers[0], &answers[1], &exact);
        let near = strata_e2e::compare(&answers[0], &answers[2], &close);
        if let Some(d) = same.first().or(near.first()) {
            differences.push(format!("{expr}: {}", d.detail));
        }
        println!(
            "{:>10.2} {:>10.2} {:>6.2}x {:>5} {:>10.2} {:>6.2}x {:>5}  {expr}",
            m[0],
            m[1],
            m[0] / m[1],
            if same.is_empty() { "yes" } else { "NO" },
            m[2],
            m[0] / m[2],
            if near.is_empty() { "yes" } else { "NO" },
        );
        for i in 0..3 {
            totals[i] += m[i];
        }
    }
    println!(
        "long range: prometheus {:.1} ms, strata raw {:.1} ms ({:.2}x), strata auto-downsampled {:.1} ms ({:.2}x) (sum of medians)",
        totals[0],
        totals[1],
        totals[0] / totals[1],
        totals[2],
        totals[0] / totals[2]
    );
    for d in differences {
        println!("first difference of {d}");
    }
}
