//! The querier's speed against Prometheus's own engine on the same data, in the same run: the shared
//! bench data (`gen-openmetrics`) is backfilled with the real promtool into a real Prometheus 3.x,
//! `strata sidecar` fronts it and `strata query` reads the sidecar. Every query of the standard set
//! (`shared/bench/queries.txt`) runs as an instant query (at the last sample) and as a range query
//! (whole span, 60s step) against both HTTP APIs, alternating, `ROUNDS` times; the table shows each
//! side's median latency, their ratio (Prometheus / Strata: above 1 means Strata is faster) and
//! whether the answers matched. Nothing is asserted about time.
//!
//! Run with `cargo bench -p strata --bench query_vs_prometheus`. Knobs (environment):
//! `STRATA_BENCH_TARGETS` (default 20), `STRATA_BENCH_HOURS` (6), `STRATA_BENCH_ROUNDS` (5), and
//! `STRATA_BENCH_THANOS=1` to add a column for a real `thanos query` over the same Strata sidecar. A
//! `via-store` column is always there: `strata query` over `strata store` serving the same blocks from a
//! real MinIO bucket (no Prometheus in the path).
//! `cargo test --benches` runs it without `--bench`: then it only checks that it was built.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::path::Path;
use std::time::{Duration, Instant};

use strata_e2e::{
    BenchData, CompareOptions, Minio, PromApi, Prometheus, StrataQuery, StrataSidecar, StrataStore,
    ThanosQuery, standard_queries, wait_until,
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
    let targets = env_or("STRATA_BENCH_TARGETS", 20).to_string();
    let hours = env_or("STRATA_BENCH_HOURS", 6).to_string();
    let rounds = env_or("STRATA_BENCH_ROUNDS", 5).max(1) as usize;
    let gen_args = ["--targets", targets.as_str(), "--hours", hours.as_str()];
    let data = BenchData::generate(&gen_args).expect("bench data");
    let blocks = data.copy_to("prometheus").expect("copy blocks");
    let prometheus = Prometheus::builder()
        .config("global:\n  external_labels:\n    cluster: bench\n")
        .data_dir(&blocks)
        .arg("--storage.tsdb.retention.time=100y")
        .start()
        .await
        .expect("start Prometheus");
    let binary = Path::new(env!("CARGO_BIN_EXE_strata"));
    let sidecar = StrataSidecar::start(binary, prometheus.url(), &blocks)
        .await
        .expect("start strata sidecar");
    let strata = StrataQuery::builder(binary)
        .endpoint(sidecar.grpc_address())
        .start()
        .await
        .expect("start strata query");
    // The same blocks in a real MinIO bucket behind `strata store`, read by a second querier.
    let minio = Minio::start().await.expect("start MinIO");
    minio.create_bucket("bench").await.expect("bucket");
    let upload = data.copy_to("bucket").expect("copy blocks");
    minio
        .upload_blocks("bench", &upload, &[("cluster", "bench")])
        .await
        .expect("upload blocks");
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = StrataStore::start(binary, &minio.objstore_yaml("bench"), store_dir.path(), &[])
        .await
        .expect("start strata store");
    let via_store = StrataQuery::builder(binary)
        .endpoint(store.grpc_address())
        .start()
        .await
        .expect("start strata query over the store gateway");
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
}
