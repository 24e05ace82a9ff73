//! The ruler's local storage against real peers: samples written through the sink over 4 block
//! durations are cut into blocks that the real `promtool tsdb dump` reads back exactly; the blocks
//! are shipped to a real MinIO and a store gateway (strata_store's BlockSet, in process) serves
//! them; the storage's own StoreAPI answers a Series call with head and block samples; a restart
//! keeps every acknowledged sample.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prometheus_client::registry::Registry;
use strata_e2e::{Minio, promtool, wait_until};
use strata_objstore::{Bucket, BucketConfig};
use strata_promql::{Labels, Queryable};
use strata_rule::storage::{LocalStorage, StorageOptions, run_background, serve};
use strata_rule::{OutSample, SampleSink};
use strata_store::block::BlockOptions;
use strata_store::blockset::{BlockSet, BlockSetOptions};
use strata_store::cache::{IndexCache, NoCache};
use strata_store::server::{ServerMetrics, ServerOptions, StoreService};
use strata_storeapi::pb::thanos::{
    self as tpb, LabelMatcher, SeriesRequest, label_matcher::Type as MT, series_response,
};
use strata_storeapi::{ClientOptions, Listen, connect};

const H: i64 = 3_600_000;
/// Block-aligned start.
const T0: i64 = 472_222 * H;
/// One evaluation every 30 s for 4 h.
const STEP: i64 = 30_000;
const EVALS: i64 = 4 * 120;
const BUCKET: &str = "ruler";

fn series_labels(job: &str) -> Labels {
    Labels::new([
        ("__name__".to_string(), "job:up:sum".to_string()),
        ("job".to_string(), job.to_string()),
    ])
}

/// What was appended: job → samples.
fn expected(min: i64, max: i64) -> BTreeMap<String, Vec<(i64, f64)>> {
    let mut out = BTreeMap::new();
    for (k, job) in ["api", "db"].into_iter().enumerate() {
        let v: Vec<(i64, f64)> = (0..EVALS)
            .map(|i| (T0 + i * STEP, i as f64 * 0.5 + k as f64 * 1000.0))
            .filter(|&(t, _)| t >= min && t <= max)
            .collect();
        out.insert(job.to_string(), v);
    }
    out
}

fn opts(dir: &Path) -> StorageOptions {
    StorageOptions {
        dir: dir.to_path_buf(),
        external_labels: Labels::new([("ruler".to_string(), "r1".to_string())]),
        block_duration_ms: H,
        retention_ms: 100 * H,
    }
}

fn m(ty: MT, name: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        r#type: ty as i32,
        name: name.into(),
        value: value.into(),
    }
}

/// Series from a StoreAPI: labels → samples.
type Answer = BTreeMap<Vec<(String, String)>, Vec<(i64, f64)>>;

/// Series from a StoreAPI (samples decoded from the XOR chunks).
async fn series(addr: &str, ms: &[LabelMatcher]) -> Answer {
    let mut c = connect(addr, &ClientOptions::default())
        .await
        .expect("connect");
    let req = SeriesRequest {
        min_time: i64::MIN,
        max_time: i64::MAX,
        matchers: ms.to_vec(),
        ..Default::default()
    };
    let mut stream = c.store.series(req).await.expect("series").into_inner();
    let mut out = Answer::new();
    let mut add = |s: tpb::Series| {
        let labels = s
            .labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        let e = out.entry(labels).or_default();
        for c in s.chunks {
            let raw = c.raw.expect("raw chunk");
            let chunk = strata_tsdb::Chunk::new((raw.r#type + 1) as u8, raw.data).expect("chunk");
            for smp in chunk.iter() {
                if let strata_tsdb::Sample::Float { t, v } = smp.expect("sample") {
                    e.push((t, v));
                }
            }
        }
    };
    while let Some(frame) = stream.next().await {
        match frame.expect("frame").result {
            Some(series_response::Result::Series(s)) => add(s),
            Some(series_response::Result::Batch(b)) => b.series.into_iter().for_each(&mut add),
            _ => {}
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|p| p.0);
        v.dedup_by_key(|p| p.0);
    }
    out
}

fn by_job(got: Answer, want_ruler_label: bool) -> BTreeMap<String, Vec<(i64, f64)>> {
    got.into_iter()
        .map(|(labels, samples)| {
            let has = labels.iter().any(|(n, v)| n == "ruler" && v == "r1");
            assert_eq!(has, want_ruler_label, "external label on {labels:?}");
            let job = labels
                .iter()
                .find(|(n, _)| n == "job")
                .map(|(_, v)| v.clone())
                .expect("job label");
            (job, samples)
        })
        .collect()
}

/// Parses `promtool tsdb dump` lines: `{labels} value timestamp`.
fn parse_dump(out: &str) -> BTreeMap<String, Vec<(i64, f64)>> {
    let mut got: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let mut it = line.rsplitn(3, ' ');
        let t: i64 = it.next().and_then(|s| s.parse().ok()).expect("timestamp");
        let v: f64 = it.next().and_then(|s| s.parse().ok()).expect("value");
        let labels = it.next().expect("labels");
        assert!(
            labels.contains("__name__=\"job:up:sum\""),
            "unexpected series {labels}"
        );
        let job = labels
            .split("job=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("job in dump line");
        got.entry(job.to_string()).or_default().push((t, v));
    }
    for v in got.values_mut() {
        v.sort_by_key(|p| p.0);
    }
    got
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_are_cut_read_by_promtool_shipped_and_served() {
    let minio = Minio::start().await.expect("start MinIO");
    minio.create_bucket(BUCKET).await.expect("create bucket");
    let cfg = BucketConfig::parse(&minio.objstore_yaml(BUCKET), "test").expect("bucket config");
    let bucket = Bucket::from_config(&cfg).expect("bucket");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    let storage = LocalStorage::open(opts(&data), &mut Registry::default())
        .await
        .expect("open storage");
    for i in 0..EVALS {
        let t = T0 + i * STEP;
        let batch: Vec<OutSample> = ["api", "db"]
            .into_iter()
            .enumerate()
            .map(|(k, job)| OutSample {
                labels: series_labels(job),
                t,
                v: i as f64 * 0.5 + k as f64 * 1000.0,
            })
            .collect();
        storage.append(&batch).await.expect("append");
    }

    // background: cuts [T0, T0+3h) as three blocks (3h..4h stays in the head) and ships them
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let bg_storage = storage.clone();
    let bg_bucket = bucket.clone();
    let background = tokio::spawn(async move {
        let mut registry = Registry::default();
        run_background(bg_storage, Some(bg_bucket), &mut registry, async {
            let _ = stop_rx.await;
        })
        .await
    });
    let ids = wait_until("three blocks cut", Duration::from_secs(60), || async {
        let ids = storage.block_ids();
        (ids.len() == 3).then_some(ids)
    })
    .await
    .expect("blocks cut");
    for id in &ids {
        let meta = format!("{id}/meta.json");
        wait_until(
            &format!("{meta} in the bucket"),
            Duration::from_secs(60),
            || async { bucket.exists(&meta).await.ok().filter(|&e| e) },
        )
        .await
        .expect("block shipped");
    }

    // promtool reads each cut block back exactly
    for (k, id) in ids.iter().enumerate() {
        let alone = tmp.path().join(format!("dump-{k}"));
        copy_dir(&data.join(id.to_string()), &alone.join(id.to_string()));
        // promtool opens the directory as a TSDB and wants a (here empty) Prometheus WAL dir
        std::fs::create_dir_all(alone.join("wal")).unwrap();
        let out = promtool(&["tsdb", "dump", alone.to_str().unwrap()]).expect("run promtool");
        assert!(
            out.status.success(),
            "promtool tsdb dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = parse_dump(&String::from_utf8_lossy(&out.stdout));
        let start = T0 + k as i64 * H;
        assert_eq!(got, expected(start, start + H - 1), "block {id}");
        let out = promtool(&["tsdb", "analyze", alone.to_str().unwrap(), &id.to_string()])
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool tsdb analyze failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // a store gateway over the bucket serves the shipped blocks with the ruler's labels
    let cache: Arc<dyn IndexCache> = Arc::new(NoCache);
    let set = BlockSet::new(
        bucket.clone(),
        cache,
        BlockSetOptions {
            data_dir: tmp.path().join("gateway"),
            block: BlockOptions::default(),
            min_time: None,
            max_time: None,
            relabel: None,
            deletion_delay: Duration::from_secs(0),
            sync_concurrency: 4,
            idle_timeout: None,
        },
    )
    .expect("block set");
    set.sync().await.expect("gateway sync");
    let svc = StoreService::new(
        Arc::new(set),
        ServerOptions::default(),
        ServerMetrics::default(),
    );
    let gw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw_addr = gw.local_addr().unwrap().to_string();
    tokio::spawn(strata_storeapi::serve(
        Listen::Listener(gw),
        svc.clone(),
        svc,
        strata_storeapi::ServerOptions::default(),
        std::future::pending(),
    ));
    let ms = [m(MT::Eq, "__name__", "job:up:sum")];
    let got = by_job(series(&gw_addr, &ms).await, true);
    assert_eq!(got, expected(T0, T0 + 3 * H - 1), "gateway answer");

    // the ruler's own StoreAPI: blocks and head, external labels attached and matchable
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (serve_tx, serve_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        storage.clone(),
        Listen::Listener(l),
        strata_storeapi::ServerOptions::default(),
        async {
            let _ = serve_rx.await;
        },
    ));
    let got = by_job(series(&addr, &ms).await, true);
    assert_eq!(got, expected(i64::MIN, i64::MAX), "ruler StoreAPI answer");
    let with_ext = [m(MT::Eq, "ruler", "r1"), m(MT::Eq, "job", "db")];
    let got = by_job(series(&addr, &with_ext).await, true);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["db"]);
    let other = [m(MT::Eq, "ruler", "r2"), m(MT::Eq, "job", "db")];
    assert!(series(&addr, &other).await.is_empty());

    // restart: stop everything, reopen; every acknowledged sample is there
    let _ = serve_tx.send(());
    server.await.unwrap().expect("server stopped cleanly");
    let _ = stop_tx.send(());
    background
        .await
        .unwrap()
        .expect("background stopped cleanly");
    assert_eq!(Arc::strong_count(&storage), 1, "storage still shared");
    drop(storage);
    let storage = LocalStorage::open(opts(&data), &mut Registry::default())
        .await
        .expect("reopen storage");
    let name = promql_parser::label::Matcher::new(
        promql_parser::label::MatchOp::Equal,
        "__name__",
        "job:up:sum",
    );
    let got: BTreeMap<String, Vec<(i64, f64)>> = storage
        .select(&[name], i64::MIN, i64::MAX)
        .await
        .expect("select")
        .into_iter()
        .map(|s| (s.labels.get("job").unwrap().to_string(), s.samples))
        .collect();
    assert_eq!(got, expected(i64::MIN, i64::MAX), "after restart");
    assert_eq!(storage.block_ids(), ids);
}
