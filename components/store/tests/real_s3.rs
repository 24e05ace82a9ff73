//! The store gateway against a real MinIO S3 server: blocks written by the real `promtool`
//! (Prometheus's own TSDB code) and by `strata-tsdb`'s writer are uploaded to MinIO, a
//! `StoreService` over a `BlockSet` on that bucket is served over gRPC, and every answer is checked
//! against reading the same block directories locally with `strata-tsdb`.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: fixtures we made, report lines

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use strata_e2e::{BenchData, Minio, Proxy};
use strata_objstore::{Bucket, BucketConfig};
use strata_store::block::BlockOptions;
use strata_store::blockset::{BlockSet, BlockSetOptions};
use strata_store::cache::{IndexCache, NoCache};
use strata_store::relabel::RelabelConfig;
use strata_store::server::{ServerMetrics, ServerOptions, StoreService};
use strata_store::stats::QueryStats;
use strata_storeapi::pb::thanos::{
    self as tpb, LabelMatcher, LabelNamesRequest, LabelValuesRequest, SeriesRequest,
    label_matcher::Type as MT, series_response,
};
use strata_storeapi::{ClientOptions, Listen, connect};
use strata_tsdb::{Block, BlockWriter, BlockWriterOptions, Labels, MatchOp, Matcher, Sample};

const BUCKET: &str = "blocks";

/// Bench data: 4 targets × 5 h (promtool cuts 2 h blocks → 3 blocks), plus a high-cardinality family.
const GEN_ARGS: &[&str] = &[
    "--targets",
    "4",
    "--hours",
    "5",
    "--high-cardinality",
    "300",
];

struct Fixture {
    minio: Minio,
    _bench: BenchData,
    _tmp: tempfile::TempDir,
    /// Local block directories with the external labels their upload got.
    blocks: Vec<(PathBuf, Vec<(String, String)>)>,
}

/// A strata-tsdb block: 600 series over a few label shapes, 3 chunks each (small chunks).
fn write_strata_block(dir: &Path) -> PathBuf {
    let mut series: Vec<Labels> = Vec::new();
    for i in 0..600 {
        let mut pairs = vec![
            ("__name__".to_string(), format!("strata_metric_{}", i % 3)),
            ("instance".to_string(), format!("host-{:03}", i % 50)),
            ("shard".to_string(), format!("{}", i / 50)),
        ];
        if i % 7 == 0 {
            pairs.push(("rare".to_string(), format!("r{i}")));
        }
        series.push(Labels::new(pairs).unwrap());
    }
    series.sort();
    let opts = BlockWriterOptions {
        samples_per_chunk: 40,
        segment_size: 64 * 1024,
        ..BlockWriterOptions::default()
    };
    let mut w = BlockWriter::new(dir, opts).unwrap();
    let t0 = 1_700_000_000_000i64;
    for (k, l) in series.iter().enumerate() {
        let samples: Vec<(i64, f64)> = (0..120)
            .map(|j| (t0 + j * 15_000, (k * 1000 + j as usize) as f64 / 7.0))
            .collect();
        w.add_series(l, &samples).unwrap();
    }
    let ulid = w.finish().unwrap();
    dir.join(ulid.to_string())
}

async fn fixture() -> Fixture {
    let minio = Minio::start().await.expect("start MinIO");
    minio.create_bucket(BUCKET).await.expect("create bucket");
    let bench = BenchData::generate(GEN_ARGS).expect("bench data (promtool)");
    let tmp = tempfile::tempdir().unwrap();
    let own = tmp.path().join("own");
    std::fs::create_dir_all(&own).unwrap();
    write_strata_block(&own);
    let mut blocks = Vec::new();
    for (dir, ext) in [
        (
            bench.blocks_dir().to_path_buf(),
            [("cluster", "prom"), ("replica", "0")],
        ),
        (own.clone(), [("cluster", "own"), ("replica", "0")]),
    ] {
        let ulids = minio
            .upload_blocks(BUCKET, &dir, &ext)
            .await
            .expect("upload blocks");
        for u in ulids {
            blocks.push((
                dir.join(&u),
                ext.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ));
        }
    }
    assert!(
        blocks.len() >= 3,
        "want several blocks, got {}",
        blocks.len()
    );
    Fixture {
        minio,
        _bench: bench,
        _tmp: tmp,
        blocks,
    }
}

fn bucket_of(yaml: &str) -> Bucket {
    let cfg = BucketConfig::parse(yaml, "test").unwrap();
    Bucket::from_config(&cfg).unwrap()
}

fn options(data_dir: &Path, relabel: Option<RelabelConfig>) -> BlockSetOptions {
    BlockSetOptions {
        data_dir: data_dir.to_path_buf(),
        block: BlockOptions::default(),
        min_time: None,
        max_time: None,
        relabel,
        deletion_delay: Duration::from_secs(0),
        sync_concurrency: 8,
        idle_timeout: None,
    }
}

async fn block_set(
    bucket: Bucket,
    data_dir: &Path,
    relabel: Option<RelabelConfig>,
) -> Arc<BlockSet> {
    let cache: Arc<dyn IndexCache> = Arc::new(NoCache);
    let set = BlockSet::new(bucket, cache, options(data_dir, relabel)).unwrap();
    set.sync().await.expect("sync");
    Arc::new(set)
}

/// Serves `set` over gRPC on a loopback port; returns the address.
async fn serve(set: Arc<BlockSet>, opts: ServerOptions) -> String {
    let svc = StoreService::new(set, opts, ServerMetrics::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(strata_storeapi::serve(
        Listen::Listener(listener),
        svc.clone(),
        svc,
        strata_storeapi::ServerOptions::default(),
        std::future::pending(),
    ));
    addr
}

fn m(ty: MT, name: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        r#type: ty as i32,
        name: name.into(),
        value: value.into(),
    }
}

type Answer = BTreeMap<Vec<(String, String)>, Vec<Sample>>;

/// Sends a Series request and decodes the answer: labels → samples in [min, max].
async fn series(
    addr: &str,
    min: i64,
    max: i64,
    ms: &[LabelMatcher],
) -> Result<(Answer, Vec<String>), tonic::Status> {
    let mut c = connect(addr, &ClientOptions::default()).await.unwrap();
    let req = SeriesRequest {
        min_time: min,
        max_time: max,
        matchers: ms.to_vec(),
        response_batch_size: 64,
        ..Default::default()
    };
    let mut stream = c.store.series(req).await?.into_inner();
    let mut out = Answer::new();
    let mut warnings = Vec::new();
    let mut add = |s: tpb::Series| {
        let labels = s
            .labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        let e: &mut Vec<Sample> = out.entry(labels).or_default();
        for c in s.chunks {
            let raw = c.raw.expect("raw chunk");
            let enc = (raw.r#type + 1) as u8; // Thanos 0-based → Prometheus 1-based
            let chunk = strata_tsdb::Chunk::new(enc, raw.data).unwrap();
            for smp in chunk.iter() {
                let smp = smp.unwrap();
                if smp.t() >= min && smp.t() <= max {
                    e.push(smp);
                }
            }
        }
    };
    while let Some(frame) = stream.next().await {
        match frame?.result {
            Some(series_response::Result::Series(s)) => add(s),
            Some(series_response::Result::Batch(b)) => b.series.into_iter().for_each(&mut add),
            Some(series_response::Result::Warning(w)) => warnings.push(w),
            _ => {}
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(Sample::t);
        v.dedup_by_key(|s| s.t());
    }
    Ok((out, warnings))
}

/// The label sets of a Series answer in the order they came, `strip` asked to be left out.
async fn frame_labels(
    addr: &str,
    ms: &[LabelMatcher],
    strip: &[&str],
) -> Vec<Vec<(String, String)>> {
    let mut c = connect(addr, &ClientOptions::default()).await.unwrap();
    let req = SeriesRequest {
        min_time: i64::MIN,
        max_time: i64::MAX,
        matchers: ms.to_vec(),
        without_replica_labels: strip.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let mut stream = c.store.series(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(frame) = stream.next().await {
        if let Some(series_response::Result::Series(s)) = frame.unwrap().result {
            out.push(
                s.labels
                    .into_iter()
                    .map(|l| (l.name, l.value))
                    .collect::<Vec<_>>(),
            );
        }
    }
    out
}

fn tsdb_matcher(l: &LabelMatcher) -> Matcher {
    let op = match MT::try_from(l.r#type).unwrap() {
        MT::Eq => MatchOp::Equal,
        MT::Neq => MatchOp::NotEqual,
        MT::Re => MatchOp::RegexMatch,
        MT::Nre => MatchOp::RegexNoMatch,
    };
    Matcher::new(op, l.name.clone(), l.value.clone()).unwrap()
}

/// The same request answered by reading the local block directories with strata-tsdb.
fn expected(fx: &Fixture, min: i64, max: i64, ms: &[LabelMatcher]) -> Answer {
    let mut out = Answer::new();
    for (dir, ext) in &fx.blocks {
        // External-label matchers decide for the whole block; the rest go to the index.
        let mut rest = Vec::new();
        let mut ok = true;
        for l in ms {
            match ext.iter().find(|(k, _)| *k == l.name) {
                Some((_, v)) => ok &= tsdb_matcher(l).matches(v),
                None => rest.push(tsdb_matcher(l)),
            }
        }
        if !ok {
            continue;
        }
        if rest.is_empty() {
            rest.push(Matcher::new(MatchOp::RegexMatch, "__name__", ".*").unwrap());
        }
        let block = Block::open(dir).unwrap();
        for s in block.select(&rest, min, max).unwrap() {
            let s = s.unwrap();
            if s.samples.is_empty() {
                continue;
            }
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .filter(|(k, _)| !ext.iter().any(|(e, _)| e == k))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            labels.extend(ext.iter().cloned());
            labels.sort();
            out.entry(labels).or_default().extend(s.samples);
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(Sample::t);
        v.dedup_by_key(|s| s.t());
    }
    out
}

fn matcher_shapes() -> Vec<(&'static str, Vec<LabelMatcher>)> {
    vec![
        ("one metric", vec![m(MT::Eq, "__name__", "strata_metric_1")]),
        (
            "metric and instance",
            vec![
                m(MT::Eq, "__name__", "strata_metric_2"),
                m(MT::Eq, "instance", "host-007"),
            ],
        ),
        (
            "negative",
            vec![
                m(MT::Eq, "__name__", "strata_metric_0"),
                m(MT::Neq, "shard", "3"),
            ],
        ),
        (
            "regex alternation",
            vec![m(MT::Re, "instance", "host-001|host-002|host-049")],
        ),
        ("regex prefix", vec![m(MT::Re, "instance", "host-01.*")]),
        (
            "negative regex",
            vec![
                m(MT::Eq, "__name__", "strata_metric_1"),
                m(MT::Nre, "instance", "host-0[0-3].*"),
            ],
        ),
        (
            "empty-matching regex",
            vec![
                m(MT::Eq, "__name__", "strata_metric_0"),
                m(MT::Re, "rare", ""),
            ],
        ),
        ("label present", vec![m(MT::Re, "rare", ".+")]),
        (
            "missing label equals empty",
            vec![
                m(MT::Eq, "__name__", "strata_metric_2"),
                m(MT::Eq, "nonexistent", ""),
            ],
        ),
        ("no match", vec![m(MT::Eq, "__name__", "does_not_exist")]),
        ("external label only", vec![m(MT::Eq, "cluster", "own")]),
        (
            "external label excludes",
            vec![m(MT::Eq, "cluster", "nope"), m(MT::Re, "__name__", ".+")],
        ),
        (
            "promtool job",
            vec![
                m(MT::Re, "__name__", ".+_total"),
                m(MT::Eq, "cluster", "prom"),
            ],
        ),
        (
            "wide regex over high-cardinality",
            vec![m(MT::Re, "__name__", ".*high.*|up")],
        ),
        ("dot-star everything", vec![m(MT::Re, "__name__", ".*")]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_equal_local_reads_for_many_matcher_shapes() {
    let fx = fixture().await;
    let data = tempfile::tempdir().unwrap();
    let set = block_set(
        bucket_of(&fx.minio.objstore_yaml(BUCKET)),
        data.path(),
        None,
    )
    .await;
    assert_eq!(
        set.all().len(),
        fx.blocks.len(),
        "every uploaded block is served"
    );
    let addr = serve(set, ServerOptions::default()).await;
    let mut checked = 0;
    let mut non_empty = 0;
    for (min, max) in [(i64::MIN, i64::MAX), (1_700_000_300_000, 1_700_000_900_000)] {
        for (name, ms) in matcher_shapes() {
            let (got, warnings) = series(&addr, min, max, &ms)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(warnings.is_empty(), "{name}: {warnings:?}");
            let want = expected(&fx, min, max, &ms);
            assert_eq!(got.len(), want.len(), "{name} [{min},{max}]: series count");
            for ((gl, gs), (wl, ws)) in got.iter().zip(&want) {
                assert_eq!(gl, wl, "{name}: labels");
                assert_eq!(gs, ws, "{name}: samples of {gl:?}");
            }
            checked += 1;
            non_empty += usize::from(!want.is_empty());
        }
    }
    println!("{checked} requests compared, {non_empty} non-empty");

    // Without the `instance` label the series of a block fall in another order (and some
    // collapse into one): the answer still comes sorted, each label set once.
    let all = vec![m(MT::Re, "__name__", ".+")];
    let order = frame_labels(&addr, &all, &["instance"]).await;
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "answer not sorted without `instance`"
    );
    let mut want: Vec<Vec<(String, String)>> = expected(&fx, i64::MIN, i64::MAX, &all)
        .into_keys()
        .map(|mut l| {
            l.retain(|(k, _)| k != "instance");
            l
        })
        .collect();
    want.sort();
    want.dedup();
    assert_eq!(order, want);
    assert!(
        non_empty >= checked / 2,
        "the shapes must mostly select data"
    );

    // Label names and values, with and without matchers.
    let mut c = connect(&addr, &ClientOptions::default()).await.unwrap();
    let names = c
        .store
        .label_names(LabelNamesRequest {
            start: i64::MIN,
            end: i64::MAX,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .names;
    let mut want_names: Vec<String> = vec!["cluster".into(), "replica".into()];
    for (dir, _) in &fx.blocks {
        want_names.extend(Block::open(dir).unwrap().index().label_names());
    }
    want_names.sort();
    want_names.dedup();
    assert_eq!(names, want_names);
    for label in ["instance", "__name__", "cluster", "shard"] {
        let values = c
            .store
            .label_values(LabelValuesRequest {
                label: label.into(),
                start: i64::MIN,
                end: i64::MAX,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .values;
        let mut want: Vec<String> = Vec::new();
        for (dir, ext) in &fx.blocks {
            match ext.iter().find(|(k, _)| k == label) {
                Some((_, v)) => want.push(v.clone()),
                None => want.extend(
                    Block::open(dir)
                        .unwrap()
                        .index()
                        .label_values(label)
                        .unwrap(),
                ),
            }
        }
        want.sort();
        want.dedup();
        assert_eq!(values, want, "values of {label}");
    }
    let with_matcher = c
        .store
        .label_values(LabelValuesRequest {
            label: "instance".into(),
            start: i64::MIN,
            end: i64::MAX,
            matchers: vec![m(MT::Eq, "shard", "0")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .values;
    let want: Vec<String> = (0..50).map(|i| format!("host-{i:03}")).collect();
    assert_eq!(with_matcher, want, "instances of shard 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reuses_index_headers_and_meta_cache() {
    let fx = fixture().await;
    let data = tempfile::tempdir().unwrap();
    let yaml = fx.minio.objstore_yaml(BUCKET);
    let first = block_set(bucket_of(&yaml), data.path(), None).await;
    let stats = QueryStats::default();
    for b in first.all() {
        b.get(&stats).await.expect("load block");
    }
    let built = stats.snapshot().get_requests;
    assert!(
        built >= 2 * fx.blocks.len() as u64,
        "building index-headers reads the index: {built} GETs"
    );
    drop(first);

    let cache: Arc<dyn IndexCache> = Arc::new(NoCache);
    let second = BlockSet::new(bucket_of(&yaml), cache, options(data.path(), None)).unwrap();
    let report = second.sync().await.unwrap();
    assert_eq!(
        report.meta_cache_hits,
        fx.blocks.len(),
        "metas come from the local cache: {report:?}"
    );
    let stats = QueryStats::default();
    for b in second.all() {
        b.get(&stats).await.expect("load block");
    }
    assert_eq!(
        stats.snapshot().get_requests,
        0,
        "no index range reads at the second start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hashmod_shards_serve_each_block_exactly_once() {
    let fx = fixture().await;
    let yaml = fx.minio.objstore_yaml(BUCKET);
    let shard = |n: u32| {
        RelabelConfig::parse(&format!(
            "- action: hashmod\n  source_labels: [__block_id]\n  target_label: shard\n  modulus: 2\n- action: keep\n  source_labels: [shard]\n  regex: \"{n}\"\n"
        ))
        .unwrap()
    };
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s0 = block_set(bucket_of(&yaml), d0.path(), Some(shard(0))).await;
    let s1 = block_set(bucket_of(&yaml), d1.path(), Some(shard(1))).await;
    let mut ids: Vec<String> = s0
        .all()
        .iter()
        .chain(s1.all().iter())
        .map(|b| b.meta().ulid.to_string())
        .collect();
    let (n0, n1) = (s0.all().len(), s1.all().len());
    ids.sort();
    let mut want: Vec<String> = fx
        .blocks
        .iter()
        .map(|(d, _)| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    want.sort();
    assert_eq!(
        ids, want,
        "shard 0 has {n0}, shard 1 has {n1}: together each block once"
    );

    // And the two shards together answer like one gateway.
    let (a0, a1) = (
        serve(s0, ServerOptions::default()).await,
        serve(s1, ServerOptions::default()).await,
    );
    let ms = vec![m(MT::Re, "__name__", ".+")];
    let (g0, _) = series(&a0, i64::MIN, i64::MAX, &ms).await.unwrap();
    let (g1, _) = series(&a1, i64::MIN, i64::MAX, &ms).await.unwrap();
    let mut merged = g0;
    for (k, v) in g1 {
        let e = merged.entry(k).or_default();
        e.extend(v);
        e.sort_by_key(Sample::t);
        e.dedup_by_key(|s| s.t());
    }
    assert_eq!(merged, expected(&fx, i64::MIN, i64::MAX, &ms));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_index_is_reported_and_the_other_blocks_answer() {
    use object_store::ObjectStoreExt;
    let fx = fixture().await;
    let (bad_dir, _) = fx.blocks.iter().find(|(_, e)| e[0].1 == "own").unwrap();
    let bad = bad_dir.file_name().unwrap().to_string_lossy().into_owned();
    // Overwrite the index in the bucket with the right size of garbage.
    let size = std::fs::metadata(bad_dir.join("index")).unwrap().len() as usize;
    let garbage: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    fx.minio
        .object_store(BUCKET)
        .unwrap()
        .put(
            &object_store::path::Path::from(format!("{bad}/index")),
            garbage.into(),
        )
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let set = block_set(
        bucket_of(&fx.minio.objstore_yaml(BUCKET)),
        data.path(),
        None,
    )
    .await;
    let addr = serve(set.clone(), ServerOptions::default()).await;
    let ms = vec![m(MT::Re, "__name__", ".+")];
    let (got, warnings) = series(&addr, i64::MIN, i64::MAX, &ms)
        .await
        .expect("the call succeeds");
    assert!(
        warnings.iter().any(|w| w.contains(&bad)),
        "a warning names the block: {warnings:?}"
    );
    let healthy: Vec<_> = fx
        .blocks
        .iter()
        .filter(|(d, _)| !d.ends_with(&bad))
        .cloned()
        .collect();
    let fx_healthy = Fixture {
        blocks: healthy,
        ..fx
    };
    assert_eq!(
        got,
        expected(&fx_healthy, i64::MIN, i64::MAX, &ms),
        "the other blocks answer in full"
    );
    let unhealthy: Vec<String> = set
        .all()
        .iter()
        .filter(|b| b.unhealthy().is_some())
        .map(|b| b.meta().ulid.to_string())
        .collect();
    assert_eq!(unhealthy, vec![bad]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_fail_with_resource_exhausted_and_a_dead_bucket_with_unavailable() {
    let fx = fixture().await;
    let proxy = Proxy::start(fx.minio.addr()).await.unwrap();
    let yaml = format!(
        "{}  http_config:\n    response_header_timeout: 2s\n  max_retries: 0\n",
        fx.minio
            .objstore_yaml_via(BUCKET, &proxy.addr().to_string())
    );
    let data = tempfile::tempdir().unwrap();
    let set = block_set(bucket_of(&yaml), data.path(), None).await;
    let limited = serve(
        set.clone(),
        ServerOptions {
            max_series: 10,
            ..ServerOptions::default()
        },
    )
    .await;
    let err = series(&limited, i64::MIN, i64::MAX, &[m(MT::Re, "__name__", ".+")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(
        err.message().contains("series limit 10"),
        "{}",
        err.message()
    );
    // A small request still passes.
    let small = [
        m(MT::Eq, "instance", "host-001"),
        m(MT::Eq, "__name__", "strata_metric_1"),
    ];
    let (few, _) = series(&limited, i64::MIN, i64::MAX, &small).await.unwrap();
    assert_eq!(few, expected(&fx, i64::MIN, i64::MAX, &small));
    assert_eq!(few.len(), 4, "shards 0, 3, 6, 9 of host-001");

    // The bucket goes away: a clear Unavailable, and the server keeps answering afterwards.
    let open = serve(set, ServerOptions::default()).await;
    proxy.set_down(true);
    let err = series(
        &open,
        i64::MIN,
        i64::MAX,
        &[m(MT::Re, "instance", "host-04.*")],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    proxy.set_down(false);
    let (back, _) = series(
        &open,
        i64::MIN,
        i64::MAX,
        &[m(MT::Re, "instance", "host-04.*")],
    )
    .await
    .unwrap();
    assert!(!back.is_empty(), "serves again once the bucket is back");
}
