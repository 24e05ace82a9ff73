//! Unit tests of the local storage: append, replay, torn WAL, cut, queryable.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use promql_parser::label::{MatchOp, Matcher};
use strata_promql::{Labels, Queryable};

use super::*;

const H: i64 = 3_600_000;

fn labels(name: &str, job: &str) -> Labels {
    Labels::new([
        ("__name__".to_string(), name.to_string()),
        ("job".to_string(), job.to_string()),
    ])
}

fn s(name: &str, job: &str, t: i64, v: f64) -> OutSample {
    OutSample {
        labels: labels(name, job),
        t,
        v,
    }
}

fn opts(dir: &std::path::Path) -> StorageOptions {
    StorageOptions {
        dir: dir.to_path_buf(),
        external_labels: Labels::new([("ruler".to_string(), "r1".to_string())]),
        block_duration_ms: H,
        retention_ms: 3 * H,
    }
}

async fn open(dir: &std::path::Path) -> Arc<LocalStorage> {
    LocalStorage::open(opts(dir), &mut Registry::default())
        .await
        .expect("open")
}

async fn all(st: &LocalStorage, name: &str) -> Vec<Series> {
    let m = Matcher::new(MatchOp::Equal, "__name__", name);
    st.select(&[m], i64::MIN, i64::MAX).await.expect("select")
}

#[tokio::test]
async fn append_rejects_out_of_order_and_replays_after_restart() {
    let d = tempfile::tempdir().expect("tempdir");
    let st = open(d.path()).await;
    st.append(&[s("m", "a", 10, 1.0), s("m", "b", 5, 2.0)])
        .await
        .expect("append");
    // older than the series' last: rejected; same time and value: a no-op; newer: kept
    st.append(&[
        s("m", "a", 9, 9.0),
        s("m", "a", 10, 1.0),
        s("m", "a", 10, 7.0),
        s("m", "a", 20, 3.0),
    ])
    .await
    .expect("append");
    assert_eq!(st.metrics.samples_rejected.get(), 2);
    assert_eq!(st.metrics.samples_appended.get(), 3);
    let got = all(&st, "m").await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].samples, vec![(10, 1.0), (20, 3.0)]);
    drop(st);
    let st = open(d.path()).await;
    let got = all(&st, "m").await;
    assert_eq!(got[0].samples, vec![(10, 1.0), (20, 3.0)]);
    assert_eq!(got[1].samples, vec![(5, 2.0)]);
}

#[tokio::test]
async fn torn_wal_tail_loses_only_the_torn_batch() {
    let d = tempfile::tempdir().expect("tempdir");
    let st = open(d.path()).await;
    st.append(&[s("m", "a", 1, 1.0)]).await.expect("append");
    st.append(&[s("m", "a", 2, 2.0)]).await.expect("append");
    drop(st);
    let path = d.path().join("wal").join(wal::WAL_FILENAME);
    let len = std::fs::metadata(&path).expect("meta").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_len(len - 1).expect("tear");
    drop(f);
    let st = open(d.path()).await;
    assert_eq!(all(&st, "m").await[0].samples, vec![(1, 1.0)]);
    // and the log is usable again
    st.append(&[s("m", "a", 3, 3.0)]).await.expect("append");
    drop(st);
    let st = open(d.path()).await;
    assert_eq!(all(&st, "m").await[0].samples, vec![(1, 1.0), (3, 3.0)]);
}

#[tokio::test]
async fn cut_writes_aligned_blocks_and_keeps_every_sample() {
    let d = tempfile::tempdir().expect("tempdir");
    let st = open(d.path()).await;
    // 3.5 h of samples every minute, two series
    let mut want = Vec::new();
    for i in 0..210i64 {
        let t = 1_000 + i * 60_000;
        st.append(&[s("m", "a", t, i as f64), s("m", "b", t, -(i as f64))])
            .await
            .expect("append");
        want.push((t, i as f64));
    }
    let cut = st.cut_due_blocks().expect("cut");
    // head spans 3.5h > 1.5h: [0,1h) and [1h,2h) are cut; then 2h..3.5h = 1.5h stays
    assert_eq!(cut.len(), 2, "{cut:?}");
    assert!(st.cut_due_blocks().expect("cut again").is_empty());
    let metas: Vec<_> = st
        .blocks_snapshot()
        .iter()
        .map(|b| b.meta().clone())
        .collect();
    assert_eq!((metas[0].min_time, metas[0].max_time), (0, H));
    assert_eq!((metas[1].min_time, metas[1].max_time), (H, 2 * H));
    let th = metas[0].thanos.as_ref().expect("thanos section");
    assert_eq!(th.source, "ruler");
    assert_eq!(th.downsample.resolution, 0);
    assert_eq!(
        th.labels
            .as_ref()
            .and_then(|l| l.get("ruler"))
            .map(String::as_str),
        Some("r1")
    );
    for id in &cut {
        let report = strata_tsdb::verify(d.path().join(id.to_string())).expect("verify");
        assert!(report.is_ok(), "{:?}", report.problems);
    }
    let m = Matcher::new(MatchOp::Equal, "job", "a");
    let got = st.select(&[m], i64::MIN, i64::MAX).await.expect("select");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].samples, want);
    // a sample inside a cut block's range is rejected now
    st.append(&[s("m", "c", 10, 1.0)]).await.expect("append");
    assert_eq!(st.metrics.samples_rejected.get(), 1);
    // restart: blocks + checkpointed WAL give the same data, nothing doubled
    drop(st);
    let st = open(d.path()).await;
    let m = Matcher::new(MatchOp::Equal, "job", "a");
    let got = st.select(&[m], i64::MIN, i64::MAX).await.expect("select");
    assert_eq!(got[0].samples, want);
    assert_eq!(st.block_ids().len(), 2);
    let names = st.label_names(i64::MIN, i64::MAX).await.expect("names");
    assert_eq!(names, ["__name__", "job"]);
    let jobs = st.label_values("job", 0, H).await.expect("values");
    assert_eq!(jobs, ["a", "b"]);
}

#[tokio::test]
async fn crash_after_block_before_wal_checkpoint_does_not_double() {
    let d = tempfile::tempdir().expect("tempdir");
    let st = open(d.path()).await;
    // 0..2h29m: one block [0,1h) is due
    for i in 0..150i64 {
        st.append(&[s("m", "a", i * 60_000, i as f64)])
            .await
            .expect("append");
    }
    // keep a copy of the full WAL, cut, then put the old WAL back (as if the checkpoint never ran)
    let wal_path = d.path().join("wal").join(wal::WAL_FILENAME);
    let old = std::fs::read(&wal_path).expect("read wal");
    assert_eq!(st.cut_due_blocks().expect("cut").len(), 1);
    drop(st);
    std::fs::write(&wal_path, old).expect("restore wal");
    let st = open(d.path()).await;
    let got = all(&st, "m").await;
    let want: Vec<(i64, f64)> = (0..150).map(|i| (i * 60_000, i as f64)).collect();
    assert_eq!(got[0].samples, want);
    // the head did not take the block's samples back: up to 3h59m, the next cuts write
    // [1h,2h) and [2h,3h) only
    for i in 150..240i64 {
        st.append(&[s("m", "a", i * 60_000, i as f64)])
            .await
            .expect("append");
    }
    let cut = st.cut_due_blocks().expect("cut");
    assert_eq!(cut.len(), 2);
    let mins: Vec<i64> = st
        .blocks_snapshot()
        .iter()
        .map(|b| b.meta().min_time)
        .collect();
    assert_eq!(mins, [0, H, 2 * H]);
}

#[tokio::test]
async fn retention_deletes_only_shipped_old_blocks() {
    let d = tempfile::tempdir().expect("tempdir");
    let st = open(d.path()).await;
    for i in 0..(8 * 60) {
        st.append(&[s("m", "a", i * 60_000, 1.0)])
            .await
            .expect("append");
    }
    let cut = st.cut_due_blocks().expect("cut");
    assert_eq!(cut.len(), 7); // [0..7h) cut; 7h..7h59m stays in the head
    // newest data at 8h - 1m, retention 3h: blocks ending at or before 5h - 1m are old (4 blocks)
    let shipped: HashSet<Ulid> = cut[..2].iter().copied().collect();
    let removed = st.apply_retention(Some(&shipped)).expect("retention");
    assert_eq!(removed, cut[..2].to_vec());
    assert!(!d.path().join(cut[0].to_string()).exists());
    let removed = st.apply_retention(None).expect("retention");
    assert_eq!(removed, cut[2..4].to_vec());
    assert_eq!(st.block_ids(), cut[4..].to_vec());
}
