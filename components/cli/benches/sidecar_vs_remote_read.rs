//! The sidecar's overhead: streams every sample of a ~1M-sample data set (the shared bench generator,
//! backfilled with real promtool into a real Prometheus 3.x) once through Prometheus remote read
//! directly and once through `strata sidecar`'s StoreAPI `Series`, both decoded the same way, and
//! prints the throughput of each, their ratio and the sidecar's peak RSS.
//!
//! Run with `cargo bench -p strata --bench sidecar_vs_remote_read`. `cargo test --benches` runs it
//! without `--bench`: then it only checks that it was built.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata_e2e::{Process, Prometheus, free_port, promtool};
use strata_sidecar::prom::{MatchKind, Matcher, PrometheusClient};
use strata_storeapi::pb::thanos::{
    LabelMatcher, SeriesRequest, label_matcher::Type, series_response,
};
use strata_storeapi::{ClientOptions, connect};
use strata_tsdb::chunkenc::Chunk;

const ROUNDS: usize = 3;

fn bench_dir() -> PathBuf {
    std::env::var_os("STRATA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/bench"))
}

/// Samples in a chunk (Prometheus encoding numbers), decoded in full.
fn count(encoding: u8, data: Vec<u8>) -> u64 {
    let chunk = Chunk::new(encoding, data.into()).expect("known chunk encoding");
    let mut n = 0;
    for s in chunk.iter() {
        s.expect("decodes");
        n += 1;
    }
    n
}

/// Peak resident set of `pid` in KiB, from /proc.
fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn via_remote_read(client: &PrometheusClient, max_t: i64) -> u64 {
    let all = [Matcher {
        kind: MatchKind::Regex,
        name: "__name__".into(),
        value: ".+".into(),
    }];
    let mut stream = client
        .remote_read(0, max_t, &all)
        .await
        .expect("remote read");
    let mut n = 0;
    while let Some(series) = stream.next_series().await.expect("frame") {
        for c in series.chunks {
            n += count(c.r#type as u8, c.data);
        }
    }
    n
}

async fn via_sidecar(endpoint: &str, max_t: i64) -> u64 {
    let mut clients = connect(endpoint, &ClientOptions::default())
        .await
        .expect("connect to the sidecar");
    let req = SeriesRequest {
        min_time: 0,
        max_time: max_t,
        matchers: vec![LabelMatcher {
            r#type: Type::Re as i32,
            name: "__name__".into(),
            value: ".+".into(),
        }],
        ..Default::default()
    };
    let mut stream = clients
        .store
        .series(req)
        .await
        .expect("series")
        .into_inner();
    let mut n = 0;
    let mut add = |s: strata_storeapi::pb::thanos::Series| {
        for c in s.chunks {
            let raw = c.raw.expect("raw chunk");
            // Thanos numbers encodings from 0 (XOR); Prometheus from 1.
            n += count(raw.r#type as u8 + 1, raw.data.to_vec());
        }
    };
    while let Some(resp) = stream.message().await.expect("series frame") {
        match resp.result {
            Some(series_response::Result::Series(s)) => add(s),
            Some(series_response::Result::Batch(b)) => b.series.into_iter().for_each(&mut add),
            _ => {}
        }
    }
    n
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

async fn run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let om = tmp.path().join("data.om");
    let script = bench_dir().join("gen-openmetrics");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--targets", "45", "--hours", "3"])
        .output()
        .expect("run gen-openmetrics");
    assert!(out.status.success(), "gen-openmetrics failed");
    std::fs::write(&om, &out.stdout).expect("write data");
    let data = tmp.path().join("prometheus");
    let out = promtool(&[
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        om.to_str().expect("utf-8"),
        data.to_str().expect("utf-8"),
    ])
    .expect("promtool backfill");
    assert!(
        out.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let prom = Prometheus::builder()
        .external_label("cluster", "bench")
        .data_dir(&data)
        .arg("--storage.tsdb.retention.time=100y")
        .start()
        .await
        .expect("start Prometheus");
    let grpc = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.arg("sidecar")
        .arg(format!("--prometheus.url={}", prom.url()))
        .arg(format!("--tsdb.path={}", data.display()))
        .arg(format!("--grpc-address={grpc}"))
        .arg(format!("--http-address=127.0.0.1:{}", free_port()))
        .arg("--log.level=warn");
    let mut sidecar = Process::spawn("strata-sidecar", cmd).expect("spawn sidecar");
    let ready = Instant::now();
    while connect(&grpc, &ClientOptions::default()).await.is_err() {
        sidecar.check_running().expect("sidecar running");
        assert!(
            ready.elapsed() < Duration::from_secs(60),
            "sidecar not serving"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let client = PrometheusClient::new(prom.url(), Duration::from_secs(600)).expect("client");
    let max_t = i64::MAX / 2;
    // Warm both paths (page cache, Prometheus's block readers).
    let warm = via_remote_read(&client, max_t).await;
    assert_eq!(
        warm,
        via_sidecar(&grpc, max_t).await,
        "both paths return every sample"
    );

    let pid = sidecar.pid();
    let (mut rr, mut sc) = (Vec::new(), Vec::new());
    let peak = Arc::new(AtomicU64::new(0));
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let n = via_remote_read(&client, max_t).await;
        rr.push(n as f64 / start.elapsed().as_secs_f64());

        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (done, peak) = (done.clone(), peak.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::SeqCst) {
                    peak.fetch_max(vm_rss_kib(pid), Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        let start = Instant::now();
        let m = via_sidecar(&grpc, max_t).await;
        sc.push(m as f64 / start.elapsed().as_secs_f64());
        done.store(true, Ordering::SeqCst);
        sampler.await.expect("sampler");
        assert_eq!(n, m);
    }
    rr.sort_by(f64::total_cmp);
    sc.sort_by(f64::total_cmp);
    let (rr, sc) = (rr[ROUNDS / 2], sc[ROUNDS / 2]);
    println!(
        "sidecar Series vs Prometheus remote read, {warm} samples (gen-openmetrics --targets 45 --hours 3), median of {ROUNDS}:"
    );
    println!("  remote read direct: {:.1} M samples/s", rr / 1e6);
    println!("  through the sidecar: {:.1} M samples/s", sc / 1e6);
    println!(
        "  sidecar throughput is {:.2}x direct ({:+.1}% overhead)",
        sc / rr,
        (rr / sc - 1.0) * 100.0
    );
    println!(
        "  sidecar RSS while streaming: peak {:.1} MiB sampled, VmHWM {:.1} MiB",
        peak.load(Ordering::SeqCst) as f64 / 1024.0,
        vm_hwm_kib(pid) as f64 / 1024.0
    );
}
