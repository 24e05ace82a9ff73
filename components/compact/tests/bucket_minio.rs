//! The compactor over a real S3 server (MinIO): compaction of aligned blocks into one whose
//! samples equal the union, a halted group next to one that compacts, vertical de-duplication
//! of two replicas, and downsampling of long blocks.

#![allow(clippy::unwrap_used)] // test code: fixtures we made

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use prometheus_client::registry::Registry;
use strata_bucket::{sync, transfer};
use strata_compact::run::{Compactor, CompactorConfig};
use strata_compact::{RES_5M, RES_RAW};
use strata_e2e::Minio;
use strata_objstore::{Bucket, BucketConfig};
use strata_tsdb::meta::BlockMeta;
use strata_tsdb::{Block, BlockWriter, BlockWriterOptions, Labels, Sample};
use ulid::Ulid;

const H: i64 = 3600 * 1000;

type Samples = BTreeMap<Labels, Vec<(i64, f64)>>;

/// Writes a block of 4 series over `[from, to)` under `dir`; returns its id.
fn write_block(dir: &Path, from: i64, to: i64, step: i64, seed: f64) -> Ulid {
    let mut w = BlockWriter::new(dir, BlockWriterOptions::default()).unwrap();
    for i in 0..4 {
        let l = Labels::from_pairs([("__name__", "up"), ("job", &*format!("j{i}"))]).unwrap();
        let s: Vec<(i64, f64)> = (from..to)
            .step_by(step as usize)
            .map(|t| (t, seed + ((t / step) % 97) as f64 * (i + 1) as f64))
            .collect();
        w.add_series(&l, &s).unwrap();
    }
    w.set_time_range(from, to);
    w.finish().unwrap()
}

fn samples_of(dir: &Path) -> Samples {
    let b = Block::open(dir).unwrap();
    let mut out = Samples::new();
    for r in b.index().all_postings().unwrap() {
        let s = b.series_samples(r, i64::MIN, i64::MAX).unwrap();
        let v = s
            .samples
            .iter()
            .map(|s| match s {
                Sample::Float { t, v } => (*t, *v),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        out.insert(s.labels, v);
    }
    out
}

/// Live blocks of resolution `res` (meta.json present, no deletion mark) and, for raw blocks,
/// their samples merged per series with labels prefixed by the external labels; panics when
/// a sample is in two live blocks.
async fn live(bucket: &Bucket, res: i64) -> (Vec<BlockMeta>, BTreeMap<String, Vec<(i64, f64)>>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut metas = Vec::new();
    let mut all: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for (id, o) in sync::list_blocks(bucket).await.unwrap() {
        if !o.meta || o.deletion_mark {
            continue;
        }
        let m = transfer::download_block(bucket, id, tmp.path())
            .await
            .unwrap();
        if sync::resolution(&m) != res {
            continue;
        }
        let ext = format!("{:?}", m.thanos.as_ref().and_then(|t| t.labels.clone()));
        if res == RES_RAW {
            for (l, s) in samples_of(&tmp.path().join(id.to_string())) {
                let e = all.entry(format!("{ext}{l:?}")).or_default();
                e.extend(s);
                e.sort_by_key(|p| p.0);
                let n = e.len();
                e.dedup_by_key(|p| p.0);
                assert_eq!(n, e.len(), "a sample of {ext}{l:?} is in two live blocks");
            }
        }
        metas.push(m);
    }
    metas.sort_by_key(|m| (m.min_time, m.ulid));
    (metas, all)
}

async fn setup(name: &str) -> (Minio, Bucket) {
    let minio = Minio::start().await.expect("MinIO");
    minio.create_bucket(name).await.unwrap();
    let cfg = BucketConfig::parse(&minio.objstore_yaml(name), "test").unwrap();
    let bucket = Bucket::from_config(&cfg).unwrap();
    (minio, bucket)
}

fn config(dir: &Path) -> CompactorConfig {
    let mut c = CompactorConfig::new(dir);
    c.consistency_delay = Duration::ZERO;
    c
}

fn metrics(reg: &Registry) -> String {
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, reg).unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_2h_blocks_become_one_8h_block_with_the_same_samples() {
    let (minio, bucket) = setup("compact").await;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(write_block(
            &src,
            i * 2 * H,
            (i + 1) * 2 * H,
            15_000,
            i as f64,
        ));
    }
    minio
        .upload_blocks("compact", &src, &[("cluster", "eu"), ("replica", "a")])
        .await
        .unwrap();
    let (_, before) = live(&bucket, RES_RAW).await;

    let mut reg = Registry::default();
    let c = Compactor::new(bucket.clone(), config(&tmp.path().join("data")), &mut reg).unwrap();
    let r = c.run_once().await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.compacted.len(), 1, "{r:?}");
    assert_eq!(r.marked, ids[..4].to_vec());
    for id in &ids[..4] {
        assert!(
            bucket
                .exists(&format!("{id}/deletion-mark.json"))
                .await
                .unwrap()
        );
    }
    let (metas, after) = live(&bucket, RES_RAW).await;
    assert_eq!(
        after, before,
        "the output's samples are not the inputs' union"
    );
    assert_eq!(metas.len(), 2);
    assert_eq!((metas[0].min_time, metas[0].max_time), (0, 8 * H));
    assert_eq!(metas[0].compaction.sources, ids[..4].to_vec());
    assert_eq!(metas[0].compaction.parents.len(), 4);
    assert!(metrics(&reg).contains("strata_compact_group_compactions_total 1"));

    // A second pass does nothing.
    let r = c.run_once().await.unwrap();
    assert!(
        r.is_ok() && r.compacted.is_empty() && r.marked.is_empty(),
        "{r:?}"
    );
    assert_eq!(live(&bucket, RES_RAW).await.1, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlap_halts_its_group_and_the_other_group_compacts() {
    let (minio, bucket) = setup("halt").await;
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad");
    let a = write_block(&bad, 0, 2 * H, 60_000, 0.0);
    let b = write_block(&bad, 90 * 60_000, 4 * H, 60_000, 1.0);
    minio
        .upload_blocks("halt", &bad, &[("cluster", "bad")])
        .await
        .unwrap();
    let good = tmp.path().join("good");
    for i in 0..5 {
        write_block(&good, i * 2 * H, (i + 1) * 2 * H, 60_000, 0.0);
    }
    minio
        .upload_blocks("halt", &good, &[("cluster", "good")])
        .await
        .unwrap();

    let mut reg = Registry::default();
    let c = Compactor::new(bucket.clone(), config(&tmp.path().join("data")), &mut reg).unwrap();
    let r = c.run_once().await.unwrap();
    assert_eq!(r.halted.len(), 1, "{r:?}");
    let msg = r.halted[0].to_string();
    assert!(
        msg.contains(&a.to_string()) && msg.contains(&b.to_string()),
        "{msg}"
    );
    assert!(metrics(&reg).contains("strata_compact_halted 1"));
    assert_eq!(r.compacted.len(), 1, "the good group compacts: {r:?}");
    assert!(!r.marked.contains(&a) && !r.marked.contains(&b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vertical_compaction_deduplicates_two_replicas() {
    let (minio, bucket) = setup("dedup").await;
    let tmp = tempfile::tempdir().unwrap();
    for (replica, sub) in [("a", "ra"), ("b", "rb")] {
        let dir = tmp.path().join(sub);
        write_block(&dir, 0, 2 * H, 30_000, 3.0);
        minio
            .upload_blocks("dedup", &dir, &[("cluster", "eu"), ("replica", replica)])
            .await
            .unwrap();
    }
    let one = {
        let dir = tmp.path().join("ra");
        let id = std::fs::read_dir(&dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        samples_of(&id)
    };
    let mut cfg = config(&tmp.path().join("data"));
    cfg.vertical = true;
    cfg.dedup_replica_labels = vec!["replica".into()];
    let c = Compactor::new(bucket.clone(), cfg, &mut Registry::default()).unwrap();
    let r = c.run_once().await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.compacted.len(), 1);
    assert_eq!(r.marked.len(), 2);
    let (metas, _) = live(&bucket, RES_RAW).await;
    assert_eq!(metas.len(), 1);
    let labels = metas[0].thanos.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(labels, [("cluster".to_string(), "eu".to_string())].into());
    let tmp2 = tempfile::tempdir().unwrap();
    transfer::download_block(&bucket, metas[0].ulid, tmp2.path())
        .await
        .unwrap();
    assert_eq!(
        samples_of(&tmp2.path().join(metas[0].ulid.to_string())),
        one
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_of_40h_are_downsampled_and_raw_kept() {
    let (minio, bucket) = setup("downsample").await;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let long = write_block(&src, 0, 40 * H, 60_000, 0.0);
    let short = write_block(&src, 40 * H, 42 * H, 60_000, 0.0);
    minio
        .upload_blocks("downsample", &src, &[("cluster", "eu")])
        .await
        .unwrap();
    let mut reg = Registry::default();
    let c = Compactor::new(bucket.clone(), config(&tmp.path().join("data")), &mut reg).unwrap();
    let r = c.run_once().await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.downsampled.len(), 1, "{r:?}");
    let (five, _) = live(&bucket, RES_5M).await;
    assert_eq!(five.len(), 1);
    assert_eq!(five[0].compaction.sources, vec![long]);
    assert_eq!(
        five[0].thanos.as_ref().unwrap().downsample.resolution,
        RES_5M
    );
    let (raw, _) = live(&bucket, RES_RAW).await;
    assert_eq!(
        raw.iter().map(|m| m.ulid).collect::<Vec<_>>(),
        [long, short]
    );
    assert!(metrics(&reg).contains("strata_compact_downsample_total 1"));
    let r = c.run_once().await.unwrap();
    assert!(r.downsampled.is_empty(), "{r:?}");
}
