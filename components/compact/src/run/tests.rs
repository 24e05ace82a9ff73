//! Compactor passes over an in-memory bucket: compaction of aligned blocks, crash recovery
//! through the duplicate filter, overlap halts, vertical de-duplication, no-compact marks,
//! downsampling and deletion after the delay.

use std::collections::BTreeMap;

use strata_bucket::marks::{MARK_VERSION, NoCompactMark, write_no_compact_mark};
use strata_tsdb::meta::ThanosMeta;
use strata_tsdb::{Block, BlockWriter, BlockWriterOptions, Labels, Sample};

use super::*;

const H: i64 = 3600 * 1000;

type Samples = BTreeMap<Labels, Vec<(i64, f64)>>;

fn ext(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Writes a block of `series` series over `[from, to)` (one sample every `step` ms, values
/// offset by `base`) with external labels `labels`, uploads it, and returns its meta.
async fn put_block(
    bucket: &Bucket,
    tmp: &Path,
    labels: &[(&str, &str)],
    from: i64,
    to: i64,
    step: i64,
    base: f64,
) -> BlockMeta {
    let mut w = BlockWriter::new(
        tmp,
        BlockWriterOptions {
            thanos: Some(ThanosMeta::new(ext(labels), "sidecar", 0)),
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..3 {
        let l = Labels::from_pairs([("__name__", "m"), ("i", &*i.to_string())]).unwrap();
        let s: Vec<(i64, f64)> = (from..to)
            .step_by(step as usize)
            .map(|t| (t, base + (t / step) as f64 + i as f64))
            .collect();
        w.add_series(&l, &s).unwrap();
    }
    w.set_time_range(from, to);
    let id = w.finish().unwrap();
    let dir = tmp.join(id.to_string());
    let meta = BlockMeta::read_from_dir(&dir).unwrap();
    transfer::upload_block(bucket, &dir, &meta).await.unwrap();
    meta
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

/// Live (unmarked, complete) blocks of a resolution: their metas and all their samples merged,
/// asserting no sample appears twice.
async fn live(bucket: &Bucket, res: i64) -> (Vec<BlockMeta>, Samples) {
    let tmp = tempfile::tempdir().unwrap();
    let mut metas = Vec::new();
    let mut all = Samples::new();
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
        if res == 0 {
            for (l, s) in samples_of(&tmp.path().join(id.to_string())) {
                let e = all.entry(l).or_default();
                e.extend(s);
                e.sort_by_key(|p| p.0);
                let n = e.len();
                e.dedup_by_key(|p| p.0);
                assert_eq!(n, e.len(), "a sample is in two live blocks");
            }
        }
        metas.push(m);
    }
    metas.sort_by_key(|m| m.min_time);
    (metas, all)
}

fn config(dir: &Path) -> CompactorConfig {
    let mut c = CompactorConfig::new(dir);
    c.consistency_delay = Duration::ZERO;
    c
}

fn encode(reg: &Registry) -> String {
    let mut s = String::new();
    prometheus_client::encoding::text::encode(&mut s, reg).unwrap();
    s
}

#[tokio::test]
async fn four_aligned_blocks_become_one_and_sources_are_marked() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Bucket::in_memory();
    let l = [("cluster", "a")];
    let mut inputs = Vec::new();
    for i in 0..5 {
        inputs.push(
            put_block(
                &bucket,
                tmp.path(),
                &l,
                i * 2 * H,
                (i + 1) * 2 * H,
                15_000,
                0.0,
            )
            .await,
        );
    }
    let (_, before) = live(&bucket, 0).await;

    let mut reg = Registry::default();
    let c = Compactor::new(bucket.clone(), config(&tmp.path().join("data")), &mut reg).unwrap();
    let r = c.run_once().await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.compacted.len(), 1, "{r:?}");
    let want: Vec<Ulid> = inputs[..4].iter().map(|m| m.ulid).collect();
    assert_eq!(r.marked, want);

    let (metas, after) = live(&bucket, 0).await;
    assert_eq!(after, before, "samples changed");
    assert_eq!(metas.len(), 2);
    assert_eq!((metas[0].min_time, metas[0].max_time), (0, 8 * H));
    assert_eq!(metas[0].compaction.level, 2);
    assert_eq!(metas[0].compaction.sources, want);
    assert_eq!(
        metas[1].ulid, inputs[4].ulid,
        "the freshest block is left alone"
    );
    let th = metas[0].thanos.as_ref().unwrap();
    assert_eq!(th.source, COMPACTOR_SOURCE);
    assert_eq!(th.labels.as_ref().unwrap(), &ext(&l));
    assert!(!th.files.is_empty());
    let m = encode(&reg);
    assert!(
        m.contains("strata_compact_group_compactions_total 1"),
        "{m}"
    );
    assert!(
        m.contains("strata_compact_blocks_marked_for_deletion_total 4"),
        "{m}"
    );
    assert!(m.contains("strata_compact_halted 0"), "{m}");

    // A second pass has nothing to do; the marked sources stay until the delete delay.
    let r = c.run_once().await.unwrap();
    assert!(r.compacted.is_empty() && r.marked.is_empty(), "{r:?}");
    assert!(r.cleanup.deleted.is_empty());
    assert!(
        bucket
            .exists(&format!("{}/index", inputs[0].ulid))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn uploaded_output_with_unmarked_sources_is_not_compacted_again() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Bucket::in_memory();
    let l = [("cluster", "a")];
    let mut inputs = Vec::new();
    for i in 0..5 {
        inputs.push(
            put_block(
                &bucket,
                tmp.path(),
                &l,
                i * 2 * H,
                (i + 1) * 2 * H,
                60_000,
                1.0,
            )
            .await,
        );
    }
    let (_, before) = live(&bucket, 0).await;
    // The state after a crash between the output's upload and the first mark.
    let dirs: Vec<PathBuf> = inputs[..4]
        .iter()
        .map(|m| tmp.path().join(m.ulid.to_string()))
        .collect();
    let out = crate::compact(&dirs, tmp.path(), &CompactOptions::default())
        .unwrap()
        .unwrap();
    let out_dir = tmp.path().join(out.to_string());
    transfer::upload_block(
        &bucket,
        &out_dir,
        &BlockMeta::read_from_dir(&out_dir).unwrap(),
    )
    .await
    .unwrap();

    let mut reg = Registry::default();
    let c = Compactor::new(bucket.clone(), config(&tmp.path().join("data")), &mut reg).unwrap();
    let r = c.run_once().await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert!(r.compacted.is_empty(), "compacted again: {r:?}");
    let mut marked = r.marked.clone();
    marked.sort();
    let mut want: Vec<Ulid> = inputs[..4].iter().map(|m| m.ulid).collect();
    want.sort();
    assert_eq!(marked, want);
    let (metas, after) = live(&bucket, 0).await;
    assert_eq!(after, before);
    assert_eq!(
        metas.iter().map(|m| m.ulid).collect::<Vec<_>>(),
        [out, inputs[4].ulid]
    );
}

#[tokio::test]
async fn overlap_halts_its_group_only() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Bucket::in_memory();
    let bad = [("cluster", "bad")];
    let good = [("cluster", "good")];
    let a = put_block(&bucket, tmp.path(), &bad, 0, 2 * H, 60_000, 0.0).await;
    let b = put_block(&bucket, tmp.path(), &bad, H, 3 * H, 60_000, 5.0).await;
    for i in 0..5 {
        put_block(
            &bucket,
            tmp.path(),
            &good,
            i * 2 * H,
            (i + 1) * 2 * H,
            60_000,
            0.0,
        )
        .await;
    }
    let mut reg = Registry::default();
    let c = Compactor::new(bucket.clone(), config(&tmp.path().join("data")), &mut reg).unwrap();
    let r = c.run_once().await.unwrap();
    assert!(!r.is_ok());
    assert_eq!(r.halted.len(), 1, "{r:?}");
    let msg = r.halted[0].to_string();
    assert!(
        msg.contains(&a.ulid.to_string()) && msg.contains(&b.ulid.to_string()),
        "{msg}"
    );
    assert_eq!(r.compacted.len(), 1, "the good group still compacts: {r:?}");
    assert!(encode(&reg).contains("strata_compact_halted 1"));
    // Nothing of the halted group was touched; a later pass still reports it.
    assert!(!r.marked.contains(&a.ulid) && !r.marked.contains(&b.ulid));
    let r = c.run_once().await.unwrap();
    assert_eq!(r.halted.len(), 1);
}

#[tokio::test]
async fn vertical_compaction_merges_replicas() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Bucket::in_memory();
    let r0 = put_block(
        &bucket,
        tmp.path(),
        &[("cluster", "a"), ("replica", "0")],
        0,
        2 * H,
        30_000,
        0.0,
    )
    .await;
    let r1 = put_block(
        &bucket,
        tmp.path(),
        &[("cluster", "a"), ("replica", "1")],
        0,
        2 * H,
        30_000,
        0.0,
    )
    .await;
    let mut cfg = config(&tmp.path().join("data"));
    cfg.vertical = true;
    cfg.dedup_replica_labels = vec!["replica".into()];
    let mut reg = Registry::default();
    let c = Compactor::new(bucket.clone(), cfg, &mut reg).unwrap();
    let r = c.run_once().await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.compacted.len(), 1);
    let (metas, after) = live(&bucket, 0).await;
    assert_eq!(metas.len(), 1);
    assert_eq!(
        metas[0].thanos.as_ref().unwrap().labels.as_ref().unwrap(),
        &ext(&[("cluster", "a")])
    );
    let mut srcs = vec![r0.ulid, r1.ulid];
    srcs.sort();
    assert_eq!(metas[0].compaction.sources, srcs);
    // Identical replicas: the output holds one replica's samples.
    let one = samples_of(&tmp.path().join(r0.ulid.to_string()));
    assert_eq!(after, one);
}

#[tokio::test]
async fn no_compact_marked_blocks_are_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Bucket::in_memory();
    let l = [("cluster", "a")];
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            put_block(
                &bucket,
                tmp.path(),
                &l,
                i * 2 * H,
                (i + 1) * 2 * H,
                60_000,
                0.0,
            )
            .await
            .ulid,
        );
    }
    // The mark cuts the 8h run [0, 8h) into block 0 alone and blocks 2-3: only those two merge.
    write_no_compact_mark(
        &bucket,
        &NoCompactMark {
            id: ids[1],
            version: MARK_VERSION,
            details: None,
            no_compact_time: 0,
            reason: "manual".into(),
        },
    )
    .await
    .unwrap();
    let mut reg = Registry::default();
    let c = Compactor::new(bucket.clone(), config(&tmp.path().join("data")), &mut reg).unwrap();
    let r = c.run_once().await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.marked, ids[2..4].to_vec(), "{r:?}");
    let (metas, _) = live(&bucket, 0).await;
    assert!(metas.iter().any(|m| m.ulid == ids[1]));
}

#[tokio::test]
async fn downsamples_long_blocks_once_and_keeps_raw() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Bucket::in_memory();
    let raw = put_block(
        &bucket,
        tmp.path(),
        &[("cluster", "a")],
        0,
        48 * H,
        60_000,
        0.0,
    )
    .await;
    let short = put_block(
        &bucket,
        tmp.path(),
        &[("cluster", "a")],
        48 * H,
        50 * H,
        60_000,
        0.0,
    )
    .await;
    let mut reg = Registry::default();
    let c = Compactor::new(bucket.clone(), config(&tmp.path().join("data")), &mut reg).unwrap();
    let r = c.run_once().await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.downsampled.len(), 1, "{r:?}");
    assert_eq!(r.downsampled[0].1, crate::RES_5M);
    let (five, _) = live(&bucket, crate::RES_5M).await;
    assert_eq!(five.len(), 1);
    assert_eq!(five[0].compaction.sources, vec![raw.ulid]);
    assert_eq!((five[0].min_time, five[0].max_time), (0, 48 * H));
    let (raws, _) = live(&bucket, 0).await;
    assert_eq!(
        raws.iter().map(|m| m.ulid).collect::<Vec<_>>(),
        [raw.ulid, short.ulid]
    );
    assert!(encode(&reg).contains("strata_compact_downsample_total 1"));
    // Already downsampled: nothing more.
    let r = c.run_once().await.unwrap();
    assert!(r.downsampled.is_empty(), "{r:?}");

    // Downsampling off: nothing.
    let bucket2 = Bucket::in_memory();
    put_block(
        &bucket2,
        tmp.path(),
        &[("cluster", "a")],
        0,
        48 * H,
        60_000,
        0.0,
    )
    .await;
    let mut cfg = config(&tmp.path().join("data2"));
    cfg.downsampling = false;
    let c = Compactor::new(bucket2, cfg, &mut Registry::default()).unwrap();
    assert!(c.run_once().await.unwrap().downsampled.is_empty());
}

#[tokio::test]
async fn sources_are_deleted_after_the_delete_delay_and_leftovers_wiped() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Bucket::in_memory();
    let l = [("cluster", "a")];
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            put_block(
                &bucket,
                tmp.path(),
                &l,
                i * 2 * H,
                (i + 1) * 2 * H,
                60_000,
                0.0,
            )
            .await
            .ulid,
        );
    }
    let data = tmp.path().join("data");
    let leftover = data.join(COMPACT_DIR).join("stale");
    std::fs::create_dir_all(&leftover).unwrap();
    let mut cfg = config(&data);
    cfg.delete_delay = Duration::ZERO;
    let c = Compactor::new(bucket.clone(), cfg, &mut Registry::default()).unwrap();
    let r = c.run_once().await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert!(!leftover.exists());
    // Marked in this pass and deleted by its cleanup (or by the next one).
    let r2 = c.run_once().await.unwrap();
    let mut deleted: Vec<Ulid> = r
        .cleanup
        .deleted
        .iter()
        .chain(&r2.cleanup.deleted)
        .copied()
        .collect();
    deleted.sort();
    assert_eq!(deleted, ids[..4].to_vec());
    for id in &ids[..4] {
        assert!(
            bucket
                .list_recursive(&format!("{id}/"))
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn retention_marks_blocks_past_their_resolution_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Bucket::in_memory();
    // Data from 1970: past a 1d raw retention; one block of "now" is kept.
    let old = put_block(
        &bucket,
        tmp.path(),
        &[("cluster", "a")],
        0,
        2 * H,
        60_000,
        0.0,
    )
    .await;
    let now = sync::now_ms() / H * H;
    let new = put_block(
        &bucket,
        tmp.path(),
        &[("cluster", "b")],
        now - 2 * H,
        now,
        60_000,
        0.0,
    )
    .await;
    let mut cfg = config(&tmp.path().join("data"));
    cfg.retention.raw_ms = Some(24 * H);
    let mut reg = Registry::default();
    let c = Compactor::new(bucket.clone(), cfg, &mut reg).unwrap();
    let r = c.run_once().await.unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.retention_marked, vec![old.ulid]);
    assert!(
        bucket
            .exists(&format!("{}/deletion-mark.json", old.ulid))
            .await
            .unwrap()
    );
    assert!(
        !bucket
            .exists(&format!("{}/deletion-mark.json", new.ulid))
            .await
            .unwrap()
    );
    assert!(encode(&reg).contains("strata_compact_blocks_marked_for_deletion_total 1"));
}
