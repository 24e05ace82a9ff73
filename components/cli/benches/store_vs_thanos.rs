//! The store gateway against Thanos's, on the same bucket in the same run.
//!
//! A bucket of `STRATA_BENCH_BLOCKS` (default 20) blocks × `STRATA_BENCH_SERIES` (default 100 000)
//! series, written with `strata-tsdb` and uploaded to a real MinIO. Then:
//!
//! 1. **Requests and bytes per query** for four typical queries (one series; one metric of 100
//!    series; a `=~` over a label with 10 000 values; a wide `{job="x"}`), each sent once to a cold
//!    gateway: Strata's merged range reads (in process, exact counts) beside the naive strategy (one
//!    GET per postings list, series entry and chunk — measured for the small queries, computed from
//!    the touched counts for the wide one and marked so), and beside a real `thanos store` (from its
//!    `thanos_objstore_bucket_operations_total` / `…_fetched_bytes_total`).
//! 2. **RSS** of `strata store` and `thanos store` after the initial sync (lazy loading: nothing
//!    queried yet) and after the query set.
//! 3. **Series latency** p50/p99 under `STRATA_BENCH_CLIENTS` (8) concurrent clients, both gateways.
//! 4. **Restart over many blocks**: `STRATA_BENCH_META_BLOCKS` (10 000) meta.json-only blocks; time
//!    from start to ready, cold and with the meta cache of the first run, for both gateways.
//!
//! Nothing is asserted about time. Run with `cargo bench -p strata --bench store_vs_thanos`.
//! `cargo test --benches` runs it without `--bench`: then it only checks that it was built.

#![allow(clippy::print_stdout, clippy::unwrap_used)] // a benchmark reports on stdout; fixtures are ours

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use strata_e2e::{Minio, StrataStore, ThanosStore};
use strata_objstore::{Bucket, BucketConfig};
use strata_store::block::BlockOptions;
use strata_store::blockset::{BlockSet, BlockSetOptions};
use strata_store::cache::{IndexCache, NoCache};
use strata_store::server::{ServerMetrics, ServerOptions, StoreService};
use strata_storeapi::pb::thanos::{LabelMatcher, SeriesRequest, label_matcher::Type as MT};
use strata_storeapi::{ClientOptions, connect};
use strata_tsdb::meta::ThanosMeta;
use strata_tsdb::{BlockWriter, BlockWriterOptions, Labels};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

/// Thanos with lazy index-headers, like Strata (its default loads every header at sync).
const LAZY: &[&str] = &["--store.enable-index-header-lazy-reader"];

const T0: i64 = 1_750_000_000_000;
const BLOCK_MS: i64 = 2 * 3600 * 1000;

/// Series `i` of a block: 1 000 metric names of 100 series each, `pod` with 10 000 values, `job`
/// with 10, `shard` making every series unique.
fn series_labels(i: u64) -> Labels {
    Labels::from_pairs([
        ("__name__", format!("bench_metric_{}", i % 1000)),
        ("job", format!("job-{}", i % 10)),
        ("pod", format!("pod-{}", i % 10_000)),
        ("shard", format!("{}", i / 10_000)),
    ])
    .unwrap()
}

fn write_blocks(dir: &Path, blocks: u64, series: u64) {
    let mut labels: Vec<Labels> = (0..series).map(series_labels).collect();
    labels.sort();
    for b in 0..blocks {
        let start = T0 + b as i64 * BLOCK_MS;
        let opts = BlockWriterOptions {
            thanos: Some(ThanosMeta::new(
                [("cluster".to_string(), "bench".to_string())].into(),
                "bench",
                0,
            )),
            ..BlockWriterOptions::default()
        };
        let mut w = BlockWriter::new(dir, opts).unwrap();
        for (k, l) in labels.iter().enumerate() {
            // 240 samples at 30 s: two chunks per series and block.
            let samples: Vec<(i64, f64)> = (0..240)
                .map(|j| (start + j * 30_000, (k as i64 * 7 + j) as f64))
                .collect();
            w.add_series(l, &samples).unwrap();
        }
        w.finish().unwrap();
    }
}

fn m(ty: MT, name: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        r#type: ty as i32,
        name: name.into(),
        value: value.into(),
    }
}

fn queries() -> Vec<(&'static str, Vec<LabelMatcher>)> {
    vec![
        (
            "one series",
            vec![
                m(MT::Eq, "__name__", "bench_metric_7"),
                m(MT::Eq, "pod", "pod-7"),
                m(MT::Eq, "shard", "0"),
            ],
        ),
        (
            "one metric, 100 series",
            vec![m(MT::Eq, "__name__", "bench_metric_42")],
        ),
        ("=~ over 10k values", vec![m(MT::Re, "pod", "pod-12.*")]),
        ("wide {job=\"x\"}", vec![m(MT::Eq, "job", "job-3")]),
    ]
}

fn request(ms: &[LabelMatcher]) -> SeriesRequest {
    SeriesRequest {
        min_time: i64::MIN,
        max_time: i64::MAX,
        matchers: ms.to_vec(),
        response_batch_size: 256,
        ..Default::default()
    }
}

/// Sends one Series request over gRPC; returns (series, elapsed).
async fn series_call(addr: &str, ms: &[LabelMatcher]) -> (usize, Duration) {
    let mut c = connect(addr, &ClientOptions::default()).await.unwrap();
    let started = Instant::now();
    let mut stream = c.store.series(request(ms)).await.unwrap().into_inner();
    let mut n = 0;
    while let Some(f) = stream.next().await {
        use strata_storeapi::pb::thanos::series_response::Result as R;
        match f.unwrap().result {
            Some(R::Series(_)) => n += 1,
            Some(R::Batch(b)) => n += b.series.len(),
            _ => {}
        }
    }
    (n, started.elapsed())
}

/// Sums a metric family's samples whose line contains every `filter`.
async fn metric_sum(url: &str, name: &str, filters: &[&str]) -> f64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn bucket_of(yaml: &str) -> Bucket {
    Bucket::from_config(&BucketConfig::parse(yaml, "bench").unwrap()).unwrap()
}

async fn in_process(yaml: &str, naive: bool) -> StoreService {
    let dir = tempfile::tempdir().unwrap().keep();
    let cache: Arc<dyn IndexCache> = Arc::new(NoCache);
    let set = BlockSet::new(
        bucket_of(yaml),
        cache,
        BlockSetOptions {
            data_dir: dir,
            block: BlockOptions {
                naive,
                ..BlockOptions::default()
            },
            min_time: None,
            max_time: None,
            relabel: None,
            deletion_delay: Duration::ZERO,
            sync_concurrency: 32,
            idle_timeout: None,
        },
    )
    .unwrap();
    set.sync().await.unwrap();
    // Build every index-header first: what is measured below is the query, not the first load.
    let stats = strata_store::stats::QueryStats::default();
    for b in set.all() {
        b.get(&stats).await.unwrap();
    }
    StoreService::new(
        Arc::new(set),
        ServerOptions::default(),
        ServerMetrics::default(),
    )
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

async fn latency(addr: &str, clients: u64, per_client: u64) -> (f64, f64) {
    let qs = Arc::new(queries());
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (addr, qs) = (addr.to_string(), qs.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for r in 0..per_client {
                // The three selective queries; the wide one would dominate every percentile.
                let (_, ms) = &qs[((c + r) % 3) as usize];
                out.push(series_call(&addr, ms).await.1.as_secs_f64() * 1000.0);
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (percentile(&mut all, 0.5), percentile(&mut all, 0.99))
}

async fn run() {
    let blocks = env_or("STRATA_BENCH_BLOCKS", 20);
    let series = env_or("STRATA_BENCH_SERIES", 100_000);
    let clients = env_or("STRATA_BENCH_CLIENTS", 8);
    let meta_blocks = env_or("STRATA_BENCH_META_BLOCKS", 10_000);
    let binary = Path::new(env!("CARGO_BIN_EXE_strata"));
    println!(
        "store gateway bench: {blocks} blocks × {series} series, 2 chunks per series and block"
    );

    let tmp = tempfile::tempdir().unwrap();
    let t = Instant::now();
    write_blocks(&tmp.path().join("blocks"), blocks, series);
    println!("wrote blocks in {:.1}s", t.elapsed().as_secs_f64());
    let minio = Minio::start().await.unwrap();
    minio.create_bucket("bench").await.unwrap();
    let t = Instant::now();
    minio
        .upload_blocks("bench", &tmp.path().join("blocks"), &[("cluster", "bench")])
        .await
        .unwrap();
    println!("uploaded to MinIO in {:.1}s", t.elapsed().as_secs_f64());
    let yaml = minio.objstore_yaml("bench");

    // 1. Requests and bytes per query.
    let merged = in_process(&yaml, false).await;
    let naive = in_process(&yaml, true).await;
    let thanos_dir = tempfile::tempdir().unwrap();
    let mut thanos = ThanosStore::start(&yaml, thanos_dir.path(), LAZY)
        .await
        .unwrap();
    let strata_dir = tempfile::tempdir().unwrap();
    let mut strata = StrataStore::start(binary, &yaml, strata_dir.path(), &[])
        .await
        .unwrap();
    let rss_synced = (
        rss_mib(strata.process().pid()),
        rss_mib(thanos.process().pid()),
    );
    // Both processes build their index-headers on the first query; warm them with a query that
    // touches every block, so the table compares query reads only.
    let warm = [m(MT::Eq, "__name__", "no_such_metric")];
    series_call(strata.grpc_address(), &warm).await;
    series_call(thanos.grpc_address(), &warm).await;

    println!();
    println!(
        "| query | series | Strata GETs | naive GETs | Thanos GETs | Strata MiB | naive MiB | Thanos MiB | naive/Strata GETs | Thanos/Strata GETs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    for (name, ms) in queries() {
        let req = strata_storeapi::validate::series(&request(&ms)).unwrap();
        let (got, _, ours) = merged.select(&req).await.unwrap();
        let small = !name.starts_with("wide");
        let (naive_gets, naive_bytes, mark) = if small {
            let (_, _, n) = naive.select(&req).await.unwrap();
            (n.get_requests, n.get_bytes, "")
        } else {
            // One GET per postings list, series entry and chunk, by definition.
            (
                ours.postings_touched + ours.series_touched + ours.chunks_touched,
                0,
                " (computed)",
            )
        };
        let ops = |url: String| async move {
            (
                metric_sum(&url, "thanos_objstore_bucket_operations_total", &["get"]).await,
                metric_sum(
                    &url,
                    "thanos_objstore_bucket_operation_fetched_bytes_total",
                    &[],
                )
                .await,
            )
        };
        let before = ops(thanos.url().to_string()).await;
        let (thanos_series, _) = series_call(thanos.grpc_address(), &ms).await;
        let after = ops(thanos.url().to_string()).await;
        let (tg, tb) = (after.0 - before.0, after.1 - before.1);
        assert_eq!(
            thanos_series,
            got.len(),
            "{name}: Thanos and Strata return the same series"
        );
        println!(
            "| {name} | {} | {} | {naive_gets}{mark} | {tg} | {:.2} | {} | {:.2} | {:.1} | {:.2} |",
            got.len(),
            ours.get_requests,
            mib(ours.get_bytes),
            if small {
                format!("{:.2}", mib(naive_bytes))
            } else {
                "n/a".to_string()
            },
            tb / (1024.0 * 1024.0),
            naive_gets as f64 / ours.get_requests.max(1) as f64,
            tg / ours.get_requests.max(1) as f64,
        );
        series_call(strata.grpc_address(), &ms).await;
    }
    let rss_queried = (
        rss_mib(strata.process().pid()),
        rss_mib(thanos.process().pid()),
    );
    println!();
    println!("| RSS (MiB) | Strata | Thanos | Thanos/Strata |");
    println!("|---|---:|---:|---:|");
    println!(
        "| after sync (lazy) | {:.0} | {:.0} | {:.2} |",
        rss_synced.0,
        rss_synced.1,
        rss_synced.1 / rss_synced.0
    );
    println!(
        "| after the queries | {:.0} | {:.0} | {:.2} |",
        rss_queried.0,
        rss_queried.1,
        rss_queried.1 / rss_queried.0
    );

    // 3. Latency under concurrent clients.
    let per_client = env_or("STRATA_BENCH_REQUESTS", 30);
    let (sp50, sp99) = latency(strata.grpc_address(), clients, per_client).await;
    let (tp50, tp99) = latency(thanos.grpc_address(), clients, per_client).await;
    println!();
    println!(
        "| Series latency, {clients} clients × {per_client} | Strata ms | Thanos ms | Thanos/Strata |"
    );
    println!("|---|---:|---:|---:|");
    println!("| p50 | {sp50:.1} | {tp50:.1} | {:.2} |", tp50 / sp50);
    println!("| p99 | {sp99:.1} | {tp99:.1} | {:.2} |", tp99 / sp99);
    drop(strata);
    drop(thanos);

    // 4. Restart over many blocks (meta.json only: what sync reads).
    if meta_blocks > 0 {
        minio.create_bucket("many").await.unwrap();
        let store = minio.object_store("many").unwrap();
        let t = Instant::now();
        let ids: Vec<ulid::Ulid> = (0..meta_blocks).map(|_| ulid::Ulid::new()).collect();
        futures::stream::iter(ids.iter().enumerate())
            .for_each_concurrent(32, |(i, id)| {
                let store = store.clone();
                async move {
                    use object_store::ObjectStoreExt;
                    let start = T0 + i as i64 * BLOCK_MS;
                    let mut meta = strata_tsdb::meta::BlockMeta::new(*id, start, start + BLOCK_MS);
                    meta.thanos = Some(ThanosMeta::new(
                        [("cluster".to_string(), "many".to_string())].into(),
                        "bench",
                        0,
                    ));
                    let body = serde_json::to_vec(&meta).unwrap();
                    store
                        .put(
                            &object_store::path::Path::from(format!("{id}/meta.json")),
                            body.into(),
                        )
                        .await
                        .unwrap();
                }
            })
            .await;
        println!();
        println!(
            "uploaded {meta_blocks} meta.json in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        let yaml = minio.objstore_yaml("many");
        let (sd, td) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut times = Vec::new();
        for round in ["cold", "restart"] {
            let t = Instant::now();
            let s = StrataStore::start(binary, &yaml, sd.path(), &[])
                .await
                .unwrap();
            let st = t.elapsed().as_secs_f64();
            drop(s);
            let t = Instant::now();
            let th = ThanosStore::start(&yaml, td.path(), LAZY).await.unwrap();
            let tt = t.elapsed().as_secs_f64();
            drop(th);
            times.push((round, st, tt));
        }
        println!("| start to ready, {meta_blocks} blocks | Strata s | Thanos s | Thanos/Strata |");
        println!("|---|---:|---:|---:|");
        for (round, st, tt) in times {
            println!("| {round} | {st:.1} | {tt:.1} | {:.1} |", tt / st);
        }
    }
}
