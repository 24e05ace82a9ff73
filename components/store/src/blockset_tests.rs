//! Tests of [`super`]: sync over in-memory buckets, resolution selection, the load state rules.

use std::collections::BTreeMap;

use bytes::Bytes;
use prometheus_client::encoding::text::encode;
use strata_tsdb::meta::ThanosMeta;

use super::*;
use crate::cache::NoCache;
use crate::sync::{DELETION_MARK_FILENAME, DeletionMark};

const H: i64 = 3600 * 1000;
const RES_5M: i64 = 5 * 60 * 1000;
const RES_1H: i64 = H;

fn opts(dir: &std::path::Path) -> BlockSetOptions {
    BlockSetOptions {
        data_dir: dir.to_path_buf(),
        block: BlockOptions::default(),
        min_time: None,
        max_time: None,
        relabel: None,
        deletion_delay: Duration::from_secs(3600),
        sync_concurrency: 8,
        idle_timeout: Some(Duration::from_secs(60)),
    }
}

fn meta_with(min: i64, max: i64, res: i64, labels: &[(&str, &str)]) -> BlockMeta {
    let mut m = BlockMeta::new(Ulid::new(), min, max);
    let l: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    m.thanos = Some(ThanosMeta::new(l, "test", res));
    m
}

async fn upload(bucket: &Bucket, m: &BlockMeta) {
    bucket
        .put(
            &format!("{}/meta.json", m.ulid),
            Bytes::from(m.to_json_bytes().expect("meta serializes")),
        )
        .await
        .expect("put meta");
    bucket
        .put(&format!("{}/index", m.ulid), Bytes::from_static(b"idx"))
        .await
        .expect("put index");
}

fn ids(blocks: &[Arc<LazyBlock>]) -> Vec<Ulid> {
    blocks.iter().map(|b| b.id()).collect()
}

fn set(bucket: &Bucket, o: BlockSetOptions) -> BlockSet {
    BlockSet::new(bucket.clone(), Arc::new(NoCache), o).expect("block set")
}

#[tokio::test]
async fn sync_serves_complete_blocks_and_counts_the_rest() {
    let bucket = Bucket::in_memory();
    let dir = tempfile::tempdir().unwrap();
    let a = meta_with(0, 2 * H, 0, &[("cluster", "eu")]);
    let b = meta_with(2 * H, 4 * H, 0, &[("cluster", "us")]);
    upload(&bucket, &a).await;
    upload(&bucket, &b).await;
    // Partial upload: chunks and index but no meta.json.
    let partial = Ulid::new();
    bucket
        .put(
            &format!("{partial}/chunks/000001"),
            Bytes::from_static(b"c"),
        )
        .await
        .unwrap();
    // Corrupt meta.json.
    let corrupt = Ulid::new();
    bucket
        .put(
            &format!("{corrupt}/meta.json"),
            Bytes::from_static(b"{\"ulid\":"),
        )
        .await
        .unwrap();

    let s = set(&bucket, opts(dir.path()));
    let r = s.sync().await.unwrap();
    assert_eq!(
        r,
        SyncReport {
            blocks: 2,
            added: 2,
            removed: 0,
            partial: 1,
            meta_cache_hits: 0,
            filtered: 0,
            failed: 1,
            meta_fetched: 2,
            duplicates: 0,
        }
    );
    assert_eq!(ids(&s.all()), vec![a.ulid, b.ulid]);
    assert_eq!(s.metrics().blocks.get(), 2);
    assert_eq!(s.time_range(), Some((0, 4 * H)));
    assert_eq!(
        s.label_sets(),
        vec![
            Labels::from_pairs([("cluster", "eu")]).unwrap(),
            Labels::from_pairs([("cluster", "us")]).unwrap()
        ]
    );
    assert!(s.get(&partial).is_none());
    assert!(s.get(&corrupt).is_none());

    // The upload completes: the block appears on the next pass; the others are kept as they are.
    let before = s.get(&a.ulid).unwrap();
    let late = meta_with(4 * H, 6 * H, 0, &[("cluster", "eu")]);
    bucket
        .put(
            &format!("{partial}/meta.json"),
            Bytes::from({
                let mut m = late.clone();
                m.ulid = partial;
                m.to_json_bytes().unwrap()
            }),
        )
        .await
        .unwrap();
    let r = s.sync().await.unwrap();
    assert_eq!((r.blocks, r.added, r.removed, r.partial), (3, 1, 0, 0));
    assert_eq!((r.meta_fetched, r.meta_cache_hits), (1, 2));
    assert!(
        Arc::ptr_eq(&before, &s.get(&a.ulid).unwrap()),
        "unchanged blocks are kept"
    );

    // A block deleted from the bucket is dropped, its local directory removed.
    let b_dir = dir.path().join(b.ulid.to_string());
    std::fs::create_dir_all(&b_dir).unwrap();
    std::fs::write(b_dir.join("index-header"), b"h").unwrap();
    let a_dir = dir.path().join(a.ulid.to_string());
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::write(a_dir.join("index-header"), b"h").unwrap();
    for f in bucket.list_recursive(&b.ulid.to_string()).await.unwrap() {
        bucket.delete(&f).await.unwrap();
    }
    let r = s.sync().await.unwrap();
    assert_eq!((r.blocks, r.added, r.removed), (2, 0, 1));
    assert!(!b_dir.exists());
    assert!(
        a_dir.join("index-header").exists(),
        "served block keeps its index-header"
    );
    assert_eq!(s.metrics().block_drops.get(), 1);
    assert_eq!(s.metrics().blocks.get(), 2);
    assert!(
        !dir.path()
            .join("meta")
            .join(format!("{}.json", b.ulid))
            .exists()
    );
}

#[tokio::test]
async fn deletion_marks_hide_blocks_after_the_delay() {
    let bucket = Bucket::in_memory();
    let dir = tempfile::tempdir().unwrap();
    let fresh = meta_with(0, H, 0, &[]);
    let old = meta_with(H, 2 * H, 0, &[]);
    let kept = meta_with(2 * H, 3 * H, 0, &[]);
    for m in [&fresh, &old, &kept] {
        upload(&bucket, m).await;
    }
    let now_s = now_ms() / 1000;
    for (m, ago) in [(&fresh, 600), (&old, 7200)] {
        let mark = DeletionMark {
            id: m.ulid,
            deletion_time: now_s - ago,
            version: 1,
            details: None,
        };
        bucket
            .put(
                &format!("{}/{DELETION_MARK_FILENAME}", m.ulid),
                Bytes::from(serde_json::to_vec(&mark).unwrap()),
            )
            .await
            .unwrap();
    }
    bucket
        .put(
            &format!("{}/no-compact-mark.json", kept.ulid),
            Bytes::from_static(b"{\"id\":\"x\"}"),
        )
        .await
        .unwrap();
    let s = set(&bucket, opts(dir.path()));
    let r = s.sync().await.unwrap();
    assert_eq!((r.blocks, r.filtered), (2, 1));
    assert_eq!(ids(&s.all()), vec![fresh.ulid, kept.ulid]);
}

#[tokio::test]
async fn compaction_inputs_are_hidden_behind_the_compacted_block() {
    let bucket = Bucket::in_memory();
    let dir = tempfile::tempdir().unwrap();
    let a = meta_with(0, 2 * H, 0, &[("r", "1")]);
    let b = meta_with(2 * H, 4 * H, 0, &[("r", "1")]);
    let mut ab = meta_with(0, 4 * H, 0, &[("r", "1")]);
    ab.compaction.sources = vec![a.ulid, b.ulid];
    ab.compaction.level = 2;
    for m in [&a, &b] {
        upload(&bucket, m).await;
    }
    let s = set(&bucket, opts(dir.path()));
    assert_eq!(s.sync().await.unwrap().blocks, 2);
    upload(&bucket, &ab).await;
    let r = s.sync().await.unwrap();
    assert_eq!((r.blocks, r.duplicates, r.added, r.removed), (1, 2, 1, 2));
    assert_eq!(ids(&s.all()), vec![ab.ulid]);
}

#[tokio::test]
async fn time_filters_select_blocks() {
    let bucket = Bucket::in_memory();
    let dir = tempfile::tempdir().unwrap();
    let metas: Vec<BlockMeta> = (0..5)
        .map(|i| meta_with(i * 2 * H, (i + 1) * 2 * H, 0, &[]))
        .collect();
    for m in &metas {
        upload(&bucket, m).await;
    }
    let mut o = opts(dir.path());
    o.min_time = Some(TimeBound::Absolute(3 * H));
    o.max_time = Some("1970-01-01T06:00:00Z".parse().unwrap());
    let s = set(&bucket, o);
    let r = s.sync().await.unwrap();
    assert_eq!((r.blocks, r.filtered), (3, 2));
    assert_eq!(
        ids(&s.all()),
        vec![metas[1].ulid, metas[2].ulid, metas[3].ulid]
    );
    assert_eq!(
        s.time_range(),
        Some((3 * H, 6 * H)),
        "clamped to the filter"
    );

    // A relative bound: everything older than a day ago is filtered (all of these blocks).
    let dir2 = tempfile::tempdir().unwrap();
    let mut o = opts(dir2.path());
    o.min_time = Some("-1d".parse().unwrap());
    let s = set(&bucket, o);
    let r = s.sync().await.unwrap();
    assert_eq!((r.blocks, r.filtered), (0, 5));
    assert_eq!(s.time_range(), None);
}

#[tokio::test]
async fn complementary_hashmod_shards_split_the_bucket_exactly() {
    let bucket = Bucket::in_memory();
    let n = 60;
    let mut all = Vec::new();
    for i in 0..n {
        let m = meta_with(i * H, (i + 1) * H, 0, &[("replica", "r0")]);
        all.push(m.ulid);
        upload(&bucket, &m).await;
    }
    let shard_cfg = |keep: u64| {
        RelabelConfig::parse(&format!(
            "- action: hashmod\n  source_labels: [\"__block_id\"]\n  target_label: shard\n  modulus: 2\n- action: keep\n  source_labels: [\"shard\"]\n  regex: \"{keep}\"\n"
        ))
        .unwrap()
    };
    let mut served: Vec<Vec<Ulid>> = Vec::new();
    for keep in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path());
        o.relabel = Some(shard_cfg(keep));
        let s = set(&bucket, o);
        let r = s.sync().await.unwrap();
        assert_eq!(r.blocks + r.filtered, n as usize);
        let mine = ids(&s.all());
        // Each block lands where Prometheus's hashmod puts it.
        for id in &mine {
            assert_eq!(crate::relabel::hashmod(&id.to_string(), 2), keep);
        }
        served.push(mine);
    }
    assert!(!served[0].is_empty() && !served[1].is_empty());
    let mut union: Vec<Ulid> = served.concat();
    union.sort();
    let mut expected = all.clone();
    expected.sort();
    assert_eq!(union, expected, "every block served exactly once");
}

/// Reads `strata_objstore_operations_total{operation="get"}` from a registry.
fn get_ops(registry: &Registry) -> u64 {
    let mut text = String::new();
    encode(&mut text, registry).unwrap();
    text.lines()
        .find(|l| l.starts_with("strata_objstore_operations_total{operation=\"get\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn restart_reads_metas_from_disk_not_the_bucket() {
    let bucket = Bucket::in_memory();
    let mut registry = Registry::default();
    bucket.register_metrics(&mut registry);
    let n = 2000;
    for i in 0..n {
        let m = meta_with(i * H, (i + 1) * H, 0, &[("r", "a")]);
        bucket
            .put(
                &format!("{}/meta.json", m.ulid),
                Bytes::from(m.to_json_bytes().unwrap()),
            )
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let first = set(&bucket, opts(dir.path()));
    let r = first.sync().await.unwrap();
    assert_eq!(
        (r.blocks, r.meta_fetched, r.meta_cache_hits),
        (2000, 2000, 0)
    );
    assert_eq!(get_ops(&registry), 2000);
    // Same set again: metas from memory, no GET.
    let r = first.sync().await.unwrap();
    assert_eq!(
        (r.blocks, r.meta_fetched, r.meta_cache_hits),
        (2000, 0, 2000)
    );
    assert_eq!(get_ops(&registry), 2000);
    drop(first);
    // A restarted gateway over the same data dir: metas from disk, no GET.
    let second = set(&bucket, opts(dir.path()));
    let r = second.sync().await.unwrap();
    assert_eq!(
        (r.blocks, r.meta_fetched, r.meta_cache_hits),
        (2000, 0, 2000)
    );
    assert_eq!(
        get_ops(&registry),
        2000,
        "second start fetched no meta.json"
    );
}

#[tokio::test]
async fn failed_load_marks_unhealthy_once_for_concurrent_callers() {
    let bucket = Bucket::in_memory();
    let dir = tempfile::tempdir().unwrap();
    let m = meta_with(0, H, 0, &[]);
    upload(&bucket, &m).await;
    let s = Arc::new(set(&bucket, opts(dir.path())));
    s.sync().await.unwrap();
    let b = s.get(&m.ulid).unwrap();
    let stats = Arc::new(QueryStats::default());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let b = b.clone();
        let stats = stats.clone();
        tasks.push(tokio::spawn(async move { b.get(&stats).await.err() }));
    }
    let mut errs = Vec::new();
    for t in tasks {
        errs.push(
            t.await
                .unwrap()
                .expect("the load fails (no block reader yet)"),
        );
    }
    // Exactly one caller attempted the load; the others saw the recorded failure.
    assert_eq!(s.metrics().block_loads.get(), 1);
    assert_eq!(s.metrics().block_load_failures.get(), 1);
    let backoff = errs
        .iter()
        .filter(|e| matches!(e, Error::Unhealthy { .. }))
        .count();
    assert_eq!(backoff, 7);
    assert!(b.unhealthy().is_some());
    assert!(!b.is_loaded());
    assert_eq!(s.metrics().unhealthy_blocks.get(), 1);
    let e = b.get(&stats).await.unwrap_err();
    assert!(e.to_string().contains(&m.ulid.to_string()), "{e}");
    assert_eq!(
        s.metrics().block_loads.get(),
        1,
        "no retry within the backoff"
    );
    // The load created the block's directory; dropping the block from the set removes it and
    // the unhealthy gauge follows the dropped block.
    assert!(dir.path().join(m.ulid.to_string()).is_dir());
    for f in bucket.list_recursive(&m.ulid.to_string()).await.unwrap() {
        bucket.delete(&f).await.unwrap();
    }
    s.sync().await.unwrap();
    drop(b);
    assert_eq!(s.metrics().unhealthy_blocks.get(), 0);
    assert!(!dir.path().join(m.ulid.to_string()).exists());
}

#[test]
fn load_slot_backoff_idle_and_recovery() {
    let t0 = Instant::now();
    let mut slot: LoadSlot<u32> = LoadSlot::new(t0);
    assert!(matches!(slot.ready(t0), Ready::Due));
    assert!(slot.failed("bad index".into(), t0));
    assert!(!slot.failed("still bad".into(), t0), "already unhealthy");
    match slot.ready(t0 + Duration::from_secs(10)) {
        Ready::Backoff { msg, retry_in } => {
            assert_eq!(msg, "still bad");
            assert_eq!(retry_in, Duration::from_secs(20));
        }
        other => panic!("expected backoff, got {other:?}"),
    }
    assert!(matches!(slot.ready(t0 + LOAD_RETRY_BACKOFF), Ready::Due));
    let t1 = t0 + Duration::from_secs(31);
    assert_eq!(slot.loaded(Arc::new(7), t1), (true, true));
    assert!(slot.failure.is_none());
    // Uses push the idle deadline.
    let t2 = t1 + Duration::from_secs(50);
    assert!(matches!(slot.ready(t2), Ready::Loaded(r) if *r == 7));
    let idle = Duration::from_secs(60);
    assert!(!slot.unload_if_idle(idle, t2 + Duration::from_secs(59)));
    assert!(slot.unload_if_idle(idle, t2 + Duration::from_secs(60)));
    assert!(
        !slot.unload_if_idle(idle, t2 + Duration::from_secs(600)),
        "already unloaded"
    );
    assert!(matches!(
        slot.ready(t2 + Duration::from_secs(61)),
        Ready::Due
    ));
    assert_eq!(slot.loaded(Arc::new(8), t2), (true, false));
}

/// Blocks of a snapshot without a bucket behind them.
fn snapshot(blocks: &[(i64, i64, i64)]) -> (Snapshot, Vec<Ulid>) {
    let ctx = Arc::new(LoadContext {
        bucket: Bucket::in_memory(),
        cache: Arc::new(NoCache),
        block: BlockOptions::default(),
        data_dir: PathBuf::from("/nonexistent"),
        metrics: BlockSetMetrics::default(),
    });
    let mut by_id = HashMap::new();
    let mut order = Vec::new();
    for &(min, max, res) in blocks {
        let m = meta_with(min, max, res, &[]);
        order.push(m.ulid);
        by_id.insert(m.ulid, Arc::new(LazyBlock::new(Arc::new(m), ctx.clone())));
    }
    (Snapshot::new(by_id), order)
}

fn pick(s: &Snapshot, mint: i64, maxt: i64, max_res: i64) -> Vec<Ulid> {
    let mut out = Vec::new();
    select_levels(&s.levels, mint, maxt, max_res, &mut out);
    ids(&out)
}

#[test]
fn resolution_selection_follows_thanos() {
    // 1h-resolution block over [0,100), 5m over [0,200), raw over [0,300) and [300,400).
    let (s, b) = snapshot(&[
        (0, 100, RES_1H),
        (0, 200, RES_5M),
        (0, 300, 0),
        (300, 400, 0),
    ]);
    assert_eq!(pick(&s, 0, 399, RES_1H), vec![b[0], b[1], b[2], b[3]]);
    assert_eq!(pick(&s, 0, 399, RES_5M), vec![b[1], b[2], b[3]]);
    assert_eq!(pick(&s, 0, 399, RES_5M - 1), vec![b[2], b[3]]);
    assert_eq!(pick(&s, 0, 399, 0), vec![b[2], b[3]]);
    // Inside the coarse block only that block is read.
    assert_eq!(pick(&s, 10, 90, RES_1H), vec![b[0]]);
    // Half-open blocks: a query starting at a block's max_time skips it; one ending at its
    // min_time includes it.
    assert_eq!(pick(&s, 300, 350, 0), vec![b[3]]);
    assert_eq!(pick(&s, 250, 300, 0), vec![b[2], b[3]]);
    assert!(pick(&s, 400, 500, RES_1H).is_empty());
    assert!(pick(&s, 10, 5, RES_1H).is_empty(), "empty range");
    assert!(pick(&s, 0, 399, -1).is_empty(), "no resolution qualifies");
}

#[test]
fn resolution_selection_fills_gaps_between_coarse_blocks() {
    // Downsampled blocks at [0,100) and [200,300); raw blocks everywhere.
    let (s, b) = snapshot(&[
        (0, 100, RES_5M),
        (200, 300, RES_5M),
        (0, 100, 0),
        (100, 200, 0),
        (200, 300, 0),
        (300, 400, 0),
    ]);
    assert_eq!(pick(&s, 0, 399, RES_1H), vec![b[0], b[3], b[1], b[5]]);
    assert_eq!(pick(&s, 50, 250, RES_5M), vec![b[0], b[3], b[1]]);
    // A raw block straddling the gap and the next coarse block is still read for the gap.
    let (s, b) = snapshot(&[(0, 100, RES_5M), (200, 300, RES_5M), (50, 250, 0)]);
    assert_eq!(pick(&s, 0, 299, RES_5M), vec![b[0], b[2], b[1]]);
    // Overlapping blocks of one resolution are all read.
    let (s, b) = snapshot(&[(0, 100, 0), (50, 150, 0), (50, 120, 0)]);
    assert_eq!(pick(&s, 60, 70, 0), vec![b[0], b[2], b[1]]);
}

#[tokio::test]
async fn select_orders_by_min_time_and_metrics_register() {
    let bucket = Bucket::in_memory();
    let dir = tempfile::tempdir().unwrap();
    let raw = meta_with(0, 4 * H, 0, &[]);
    let ds = meta_with(0, 2 * H, RES_5M, &[]);
    upload(&bucket, &raw).await;
    upload(&bucket, &ds).await;
    let s = set(&bucket, opts(dir.path()));
    s.sync().await.unwrap();
    assert_eq!(ids(&s.select(0, 4 * H, RES_1H)), vec![ds.ulid, raw.ulid]);
    assert_eq!(ids(&s.select(0, 4 * H, 0)), vec![raw.ulid]);
    let mut registry = Registry::default();
    s.metrics().register(&mut registry);
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    for name in [
        "strata_store_blocks_loaded ",
        "strata_store_blocks 2",
        "strata_store_block_loads_total 0",
        "strata_store_block_load_failures_total",
        "strata_store_block_drops_total",
        "strata_store_block_unloads_total",
        "strata_store_sync_duration_seconds_count 1",
        "strata_store_sync_failures_total 0",
        "strata_store_unhealthy_blocks 0",
    ] {
        assert!(text.contains(name), "{name} missing in\n{text}");
    }
    assert_eq!(s.unload_idle(), 0, "nothing loaded");
}

#[tokio::test]
async fn sync_loop_picks_up_new_blocks_and_stops_on_shutdown() {
    let bucket = Bucket::in_memory();
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(set(&bucket, opts(dir.path())));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = s
        .clone()
        .spawn_sync_loop(Duration::from_millis(20), async move {
            let _ = rx.await;
        });
    let m = meta_with(0, H, 0, &[]);
    upload(&bucket, &m).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.get(&m.ulid).is_none() {
        assert!(Instant::now() < deadline, "sync loop did not add the block");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("loop stops on shutdown")
        .unwrap();
}
