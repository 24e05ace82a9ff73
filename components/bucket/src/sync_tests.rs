//! Tests of [`super`]: time bounds, filters, listing, the meta cache, deletion marks, dedup.

use std::collections::BTreeMap as Map;

use bytes::Bytes;
use strata_tsdb::meta::ThanosMeta;

use super::*;

const H: u64 = 3600 * 1000;

#[test]
fn time_bounds_parse_like_thanos() {
    let p = |s: &str| s.parse::<TimeBound>();
    assert_eq!(
        p("-2w"),
        Ok(TimeBound::Ago(Duration::from_secs(14 * 86400)))
    );
    assert_eq!(
        p("-36h"),
        Ok(TimeBound::Ago(Duration::from_secs(36 * 3600)))
    );
    assert_eq!(p("-1d"), Ok(TimeBound::Ago(Duration::from_secs(86400))));
    assert_eq!(p("0d"), Ok(TimeBound::Ago(Duration::ZERO)));
    assert_eq!(p("2h"), Ok(TimeBound::Ahead(Duration::from_secs(7200))));
    assert_eq!(
        p("-1y2w3d4h5m6s7ms"),
        Ok(TimeBound::Ago(Duration::from_millis(
            (365 + 14 + 3) * 86_400_000 + 4 * H + 5 * 60_000 + 6_000 + 7
        )))
    );
    assert_eq!(p("-90m"), Ok(TimeBound::Ago(Duration::from_secs(5400))));
    assert_eq!(
        p("2024-01-02T03:04:05Z"),
        Ok(TimeBound::Absolute(1_704_164_645_000))
    );
    assert_eq!(
        p("2024-01-02T05:04:05.250+02:00"),
        Ok(TimeBound::Absolute(1_704_164_645_250))
    );
    // Thanos's defaults for --min-time / --max-time.
    assert_eq!(
        p("0000-01-01T00:00:00Z"),
        Ok(TimeBound::Absolute(-62_167_219_200_000))
    );
    assert_eq!(
        p("9999-12-31T23:59:59Z"),
        Ok(TimeBound::Absolute(253_402_300_799_000))
    );
    for bad in [
        "",
        "-",
        "2",
        "-2x",
        "1h2d",
        "1h1h",
        "h",
        "2024-01-02",
        "-2w ",
        "99999999999999999999y",
    ] {
        let e = p(bad).unwrap_err();
        assert!(e.to_string().contains("invalid time"), "{bad}: {e}");
    }
    assert_eq!(TimeBound::Ago(Duration::from_secs(1)).resolve(5000), 4000);
    assert_eq!(TimeBound::Ahead(Duration::from_secs(1)).resolve(5000), 6000);
    assert_eq!(TimeBound::Absolute(7).resolve(5000), 7);
}

fn meta(min: i64, max: i64) -> BlockMeta {
    BlockMeta::new(Ulid::new(), min, max)
}

#[test]
fn time_filter_is_thanos_inclusive_overlap() {
    let f = BlockFilter {
        min_time: Some(TimeBound::Absolute(100)),
        max_time: Some(TimeBound::Absolute(200)),
        ..Default::default()
    };
    let l = Labels::default();
    let chk = |min, max| f.check(&meta(min, max), &l, None, 0);
    assert_eq!(chk(0, 99), Some(FilterReason::Time));
    assert_eq!(
        chk(0, 100),
        None,
        "max_time == --min-time is served (Thanos: >=)"
    );
    assert_eq!(chk(150, 160), None);
    assert_eq!(chk(200, 300), None, "min_time == --max-time is served");
    assert_eq!(chk(201, 300), Some(FilterReason::Time));
    assert_eq!(chk(0, 1000), None);
    // Relative bounds resolve against now.
    let f = BlockFilter {
        min_time: Some(TimeBound::Ago(Duration::from_millis(H))),
        ..Default::default()
    };
    let now = 10 * H as i64;
    assert_eq!(
        f.check(&meta(0, 8 * H as i64), &l, None, now),
        Some(FilterReason::Time)
    );
    assert_eq!(f.check(&meta(0, 9 * H as i64), &l, None, now), None);
}

#[test]
fn deletion_mark_respects_delay() {
    let f = BlockFilter {
        deletion_delay: Duration::from_secs(3600),
        ..Default::default()
    };
    let m = meta(0, 1);
    let now = 100_000_000;
    let mark = |secs_ago: i64| DeletionMark {
        id: m.ulid,
        deletion_time: now / 1000 - secs_ago,
        version: 1,
        details: None,
    };
    let l = Labels::default();
    assert_eq!(f.check(&m, &l, Some(&mark(60)), now), None);
    assert_eq!(f.check(&m, &l, Some(&mark(3600)), now), None);
    assert_eq!(
        f.check(&m, &l, Some(&mark(3601)), now),
        Some(FilterReason::Deleted)
    );
    // The Thanos JSON layout.
    let parsed: DeletionMark = serde_json::from_str(&format!(
        r#"{{"id":"{}","deletion_time":1700000000,"version":1}}"#,
        m.ulid
    ))
    .unwrap();
    assert_eq!(parsed.deletion_time, 1_700_000_000);
}

async fn put_meta(bucket: &Bucket, m: &BlockMeta) {
    bucket
        .put(
            &format!("{}/meta.json", m.ulid),
            Bytes::from(m.to_json_bytes().unwrap()),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn listing_finds_blocks_partials_and_marks() {
    let bucket = Bucket::in_memory();
    let a = meta(0, 10);
    put_meta(&bucket, &a).await;
    bucket
        .put(&format!("{}/index", a.ulid), Bytes::from_static(b"x"))
        .await
        .unwrap();
    let partial = Ulid::new();
    bucket
        .put(&format!("{partial}/index"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    let marked = meta(0, 10);
    put_meta(&bucket, &marked).await;
    for f in [DELETION_MARK_FILENAME, NO_COMPACT_MARK_FILENAME] {
        bucket
            .put(&format!("{}/{f}", marked.ulid), Bytes::from_static(b"{}"))
            .await
            .unwrap();
    }
    bucket
        .put("debug/meta.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    bucket
        .put("top.txt", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let l = list_blocks(&bucket).await.unwrap();
    assert_eq!(l.len(), 3);
    assert_eq!(
        l[&a.ulid],
        BlockObjects {
            meta: true,
            ..Default::default()
        }
    );
    assert_eq!(l[&partial], BlockObjects::default());
    assert_eq!(
        l[&marked.ulid],
        BlockObjects {
            meta: true,
            deletion_mark: true,
            no_compact_mark: true
        }
    );
}

#[tokio::test]
async fn fetcher_caches_on_disk_and_reports_partial_and_corrupt() {
    let bucket = Bucket::in_memory();
    let dir = tempfile::tempdir().unwrap();
    let mut good = meta(0, 2 * H as i64);
    good.thanos = Some(ThanosMeta::new(
        Map::from([("a".into(), "1".into())]),
        "sidecar",
        0,
    ));
    put_meta(&bucket, &good).await;
    let corrupt = Ulid::new();
    bucket
        .put(
            &format!("{corrupt}/meta.json"),
            Bytes::from_static(b"{\"ulid\": 3"),
        )
        .await
        .unwrap();
    let wrong_id = meta(0, 1);
    let elsewhere = Ulid::new();
    bucket
        .put(
            &format!("{elsewhere}/meta.json"),
            Bytes::from(wrong_id.to_json_bytes().unwrap()),
        )
        .await
        .unwrap();
    let partial = Ulid::new();
    bucket
        .put(&format!("{partial}/index"), Bytes::from_static(b"x"))
        .await
        .unwrap();

    let mut f = MetaFetcher::new(bucket.clone(), dir.path(), 4).unwrap();
    let o = f.fetch().await.unwrap();
    assert_eq!(o.metas.len(), 1);
    assert_eq!(*o.metas[&good.ulid], good);
    assert_eq!(o.partial, vec![partial]);
    let failed: HashSet<Ulid> = o.failed.iter().map(|(id, _)| *id).collect();
    assert_eq!(failed, HashSet::from([corrupt, elsewhere]));
    let why = &o.failed.iter().find(|(id, _)| *id == corrupt).unwrap().1;
    assert!(why.contains("expected a string"), "{why}");
    assert_eq!((o.fetched, o.cache_hits), (1, 0));
    assert!(
        dir.path()
            .join("meta")
            .join(format!("{}.json", good.ulid))
            .exists()
    );

    // Second pass on the same fetcher: from memory; corrupt ones are retried.
    let o = f.fetch().await.unwrap();
    assert_eq!((o.fetched, o.cache_hits, o.failed.len()), (0, 1, 2));

    // A new fetcher over the same dir reads the disk cache, even with the bucket object gone
    // missing content-wise (overwritten with garbage: the cache is trusted).
    bucket
        .put(
            &format!("{}/meta.json", good.ulid),
            Bytes::from_static(b"garbage"),
        )
        .await
        .unwrap();
    let mut f2 = MetaFetcher::new(bucket.clone(), dir.path(), 4).unwrap();
    let o = f2.fetch().await.unwrap();
    assert_eq!((o.fetched, o.cache_hits), (0, 1));
    assert_eq!(*o.metas[&good.ulid], good);

    // A corrupt cache file is dropped and the meta fetched again.
    let good2 = meta(5, 6);
    put_meta(&bucket, &good2).await;
    std::fs::write(
        dir.path().join("meta").join(format!("{}.json", good2.ulid)),
        b"{",
    )
    .unwrap();
    let mut f3 = MetaFetcher::new(bucket.clone(), dir.path(), 4).unwrap();
    let o = f3.fetch().await.unwrap();
    assert_eq!(*o.metas[&good2.ulid], good2);
    assert_eq!((o.fetched, o.cache_hits), (1, 1));

    // Blocks gone from the bucket lose their cached meta; stray files are cleaned at start.
    bucket
        .delete(&format!("{}/meta.json", good.ulid))
        .await
        .unwrap();
    std::fs::write(dir.path().join("meta").join("stray.json"), b"x").unwrap();
    let o = f3.fetch().await.unwrap();
    assert!(!o.metas.contains_key(&good.ulid));
    assert!(
        !dir.path()
            .join("meta")
            .join(format!("{}.json", good.ulid))
            .exists()
    );
    let mut f4 = MetaFetcher::new(bucket.clone(), dir.path(), 4).unwrap();
    f4.fetch().await.unwrap();
    assert!(!dir.path().join("meta").join("stray.json").exists());
    assert!(
        dir.path()
            .join("meta")
            .join(format!("{}.json", good2.ulid))
            .exists()
    );
}

#[tokio::test]
async fn fetcher_reads_deletion_marks_once_and_forgets_removed_ones() {
    let bucket = Bucket::in_memory();
    let dir = tempfile::tempdir().unwrap();
    let m = meta(0, 1);
    put_meta(&bucket, &m).await;
    let mark = DeletionMark {
        id: m.ulid,
        deletion_time: 42,
        version: 1,
        details: None,
    };
    let mark_name = format!("{}/{DELETION_MARK_FILENAME}", m.ulid);
    bucket
        .put(&mark_name, Bytes::from(serde_json::to_vec(&mark).unwrap()))
        .await
        .unwrap();
    let mut f = MetaFetcher::new(bucket.clone(), dir.path(), 2).unwrap();
    let o = f.fetch().await.unwrap();
    assert_eq!(o.deletion_marks.get(&m.ulid), Some(&mark));
    bucket.delete(&mark_name).await.unwrap();
    let o = f.fetch().await.unwrap();
    assert!(o.deletion_marks.is_empty());
    // A partial (unparseable) mark is ignored, as Thanos does.
    bucket
        .put(&mark_name, Bytes::from_static(b"{\"id\":"))
        .await
        .unwrap();
    let o = f.fetch().await.unwrap();
    assert!(o.deletion_marks.is_empty());
    assert!(o.uncertain.is_empty());
    assert_eq!(o.metas.len(), 1);
}

fn compacted(sources: &[Ulid], res: i64) -> BlockMeta {
    let mut m = meta(0, 1);
    m.compaction.sources = sources.to_vec();
    m.compaction.level = 2;
    m.thanos = Some(ThanosMeta::new(Map::new(), "compactor", res));
    m
}

#[test]
fn compaction_inputs_are_duplicates() {
    let a = meta(0, 1);
    let b = meta(1, 2);
    let c = meta(2, 3);
    let ab = compacted(&[a.ulid, b.ulid], 0);
    let abc = compacted(&[a.ulid, b.ulid, c.ulid], 0);
    // Same data downsampled is not a duplicate of the raw blocks.
    let ab_5m = compacted(&[a.ulid, b.ulid], 300_000);
    let d = duplicates([&a, &b, &c, &ab, &ab_5m]);
    assert_eq!(d, HashSet::from([a.ulid, b.ulid]));
    let d = duplicates([&a, &b, &c, &ab, &abc]);
    assert_eq!(d, HashSet::from([a.ulid, b.ulid, c.ulid, ab.ulid]));
    // Overlapping but not contained: both stay.
    let bc = compacted(&[b.ulid, c.ulid], 0);
    assert!(duplicates([&ab, &bc]).is_empty());
    // Identical sources: the smaller ULID stays.
    let twin1 = compacted(&[a.ulid, b.ulid], 0);
    let twin2 = compacted(&[a.ulid, b.ulid], 0);
    let (keep, dup) = if twin1.ulid < twin2.ulid {
        (twin1.ulid, twin2.ulid)
    } else {
        (twin2.ulid, twin1.ulid)
    };
    let d = duplicates([&twin1, &twin2]);
    assert_eq!(d, HashSet::from([dup]));
    assert!(!d.contains(&keep));
}

#[test]
fn unserved_block_dirs_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let keep = Ulid::new();
    let drop = Ulid::new();
    for id in [keep, drop] {
        std::fs::create_dir_all(dir.path().join(id.to_string())).unwrap();
        std::fs::write(dir.path().join(id.to_string()).join("index-header"), b"h").unwrap();
    }
    std::fs::create_dir_all(dir.path().join("meta")).unwrap();
    let n = remove_unserved_block_dirs(dir.path(), &HashSet::from([keep]));
    assert_eq!(n, 1);
    assert!(
        dir.path()
            .join(keep.to_string())
            .join("index-header")
            .exists()
    );
    assert!(!dir.path().join(drop.to_string()).exists());
    assert!(dir.path().join("meta").exists());
}
