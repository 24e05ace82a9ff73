use super::*;
use proptest::prelude::*;
use strata_tsdb::meta::ThanosMeta;

const H: i64 = HOUR_MS;
const NOW: i64 = 1_000_000 * H;

/// A raw block `[min, max)` hours with an old ULID (`n` keeps ULIDs distinct and ordered).
fn block(n: u64, min_h: i64, max_h: i64) -> BlockMeta {
    let ulid = Ulid::from_parts(1_000 + n, u128::from(n));
    let mut m = BlockMeta::new(ulid, min_h * H, max_h * H);
    m.compaction.sources = vec![ulid];
    m.thanos = Some(ThanosMeta::new(BTreeMap::new(), "sidecar", RES_RAW));
    m
}

fn opts() -> PlanOptions {
    PlanOptions {
        now_ms: NOW,
        ..PlanOptions::default()
    }
}

fn ids(ms: &[&BlockMeta]) -> Plan {
    Plan::Compact(ms.iter().map(|m| m.ulid).collect())
}

#[test]
fn labels_hash_matches_xxhash_of_prometheus_layout() {
    assert_eq!(labels_hash(&BTreeMap::new()), 0xef46_db37_51d8_e999);
    let l = BTreeMap::from([
        ("b".to_string(), "2".to_string()),
        ("a".to_string(), "1".to_string()),
    ]);
    assert_eq!(
        labels_hash(&l),
        xxhash_rust::xxh64::xxh64(b"a\xff1\xffb\xff2\xff", 0)
    );
    let m = block(1, 0, 2);
    assert_eq!(group_key(&m), format!("0@{}", 0xef46_db37_51d8_e999u64));
}

#[test]
fn planner_cases() {
    let b = |n, a, z| block(n, a, z);
    // Four 2h blocks filling 0-8h plus a fresh one: the freshest is set aside, the full 8h run wins.
    let full = [b(1, 0, 2), b(2, 2, 4), b(3, 4, 6), b(4, 6, 8), b(5, 8, 10)];
    let r: Vec<&BlockMeta> = full[..4].iter().collect();
    assert_eq!(plan(&full, &opts()), ids(&r));
    // Only two 2h blocks: the second is the freshest, one block left, nothing to do.
    assert_eq!(plan(&full[..2], &opts()), Plan::Nothing);
    // Three 2h blocks in an 8h window: after setting the freshest aside, the other two neither
    // cover 8h nor end before the last remaining block starts, so Thanos waits.
    let three = [b(1, 0, 2), b(2, 2, 4), b(3, 4, 6)];
    assert_eq!(plan(&three, &opts()), Plan::Nothing);
    // The 2h level merges 1h blocks first.
    let small = [b(1, 0, 1), b(2, 1, 2), b(3, 2, 3)];
    assert_eq!(plan(&small, &opts()), ids(&[&small[0], &small[1]]));
    // No-compact on the middle block cuts the run: the first piece of ≥ 2 blocks wins.
    let mut o = opts();
    o.no_compact.insert(full[1].ulid);
    assert_eq!(plan(&full, &o), ids(&[&full[2], &full[3]]));
    // A failed compaction disables its whole run at that level.
    let mut failed = full.clone();
    failed[0].compaction.failed = true;
    assert_eq!(plan(&failed, &opts()), Plan::Nothing);
    // Overlap without vertical compaction halts; with it, the overlapping blocks are merged.
    let over = [b(1, 0, 2), b(2, 1, 3), b(3, 4, 6)];
    assert_eq!(
        plan(&over, &opts()),
        Plan::Overlap {
            a: over[0].ulid,
            b: over[1].ulid
        }
    );
    let mut v = opts();
    v.vertical = true;
    assert_eq!(plan(&over, &v), ids(&[&over[0], &over[1]]));
    // Young blocks (by ULID time) are invisible unless a compactor wrote them.
    let mut young = b(9, 1, 3);
    young.ulid = Ulid::from_parts(NOW as u64 - 1000, 9);
    assert_eq!(plan(&[b(1, 0, 2), young.clone()], &opts()), Plan::Nothing);
    if let Some(t) = young.thanos.as_mut() {
        t.source = COMPACTOR_SOURCE.to_string();
    }
    assert!(matches!(
        plan(&[b(1, 0, 2), young], &opts()),
        Plan::Overlap { .. }
    ));
    // Deletion-marked blocks are gone: without 0-2h the 8h window is no longer full.
    let mut d = opts();
    d.deletion_marked.insert(full[0].ulid);
    assert_eq!(plan(&full, &d), Plan::Nothing);
    // A big block with > 5% tombstones is rewritten alone.
    let mut tomb = [b(1, 0, 48), b(2, 48, 96)];
    tomb[0].stats.num_series = 10;
    tomb[0].stats.num_tombstones = 1;
    assert_eq!(plan(&tomb, &opts()), ids(&[&tomb[0]]));
}

#[test]
fn downsample_and_retention() {
    let raw = block(1, 0, 40);
    let short = block(2, 40, 60);
    assert_eq!(
        downsample_candidates(&[raw.clone(), short.clone()]),
        vec![(raw.ulid, RES_5M)]
    );
    let mut five = block(3, 0, 40);
    five.compaction.sources = vec![raw.ulid];
    if let Some(t) = five.thanos.as_mut() {
        t.downsample.resolution = RES_5M;
    }
    assert_eq!(downsample_candidates(&[raw.clone(), five.clone()]), vec![]);
    let day = 24 * H;
    assert_eq!(
        retention(&[raw.clone(), five.clone()], day, 0, 0, 40 * H + day + 1),
        vec![raw.ulid]
    );
    assert_eq!(
        retention(std::slice::from_ref(&raw), day, 0, 0, 40 * H + day),
        vec![]
    );
}

fn arb_blocks() -> impl Strategy<Value = (Vec<BlockMeta>, Vec<bool>, Vec<bool>)> {
    prop::collection::vec((0i64..30, 1i64..5, 0u8..2), 1..12).prop_flat_map(|v| {
        let n = v.len();
        let metas: Vec<BlockMeta> = v
            .iter()
            .enumerate()
            .map(|(i, &(s, l, g))| {
                let mut m = block(i as u64, s * 2, (s + l) * 2);
                if g == 1 {
                    m.thanos = Some(ThanosMeta::new(
                        BTreeMap::from([("r".into(), "x".into())]),
                        "sidecar",
                        RES_RAW,
                    ));
                }
                m
            })
            .collect();
        (
            Just(metas),
            prop::collection::vec(any::<bool>(), n),
            any::<bool>().prop_map(|b| vec![b]),
        )
    })
}

proptest! {
    #[test]
    fn plans_stay_in_group_and_respect_marks((metas, nc, vert) in arb_blocks()) {
        let mut o = opts();
        o.vertical = vert[0];
        for (m, &x) in metas.iter().zip(&nc) { if x { o.no_compact.insert(m.ulid); } }
        let by_id: BTreeMap<Ulid, &BlockMeta> = metas.iter().map(|m| (m.ulid, m)).collect();
        for (key, group) in groups(&metas) {
            match plan(&group, &o) {
                Plan::Nothing => {}
                Plan::Overlap { a, b } => {
                    prop_assert!(!o.vertical);
                    let (a, b) = (by_id[&a], by_id[&b]);
                    prop_assert!(a.min_time < b.max_time && b.min_time < a.max_time);
                }
                Plan::Compact(picked) => {
                    let ms: Vec<&BlockMeta> = picked.iter().map(|u| by_id[u]).collect();
                    for m in &ms {
                        prop_assert_eq!(group_key(m), key.clone());
                        prop_assert!(!o.no_compact.contains(&m.ulid));
                    }
                    if ms.len() > 1 {
                        let mut max_t = ms[0].max_time;
                        let overlapping = ms.windows(2).any(|w| w[1].min_time < w[0].max_time);
                        for m in &ms[1..] {
                            prop_assert!(m.min_time >= ms[0].min_time);
                            if overlapping { prop_assert!(m.min_time < max_t); }
                            max_t = max_t.max(m.max_time);
                        }
                        if !overlapping {
                            let span = max_t - ms[0].min_time;
                            prop_assert!(o.ranges[1..].iter().any(|&r| span <= r
                                && ms[0].min_time.div_euclid(r) == (max_t - 1).div_euclid(r)));
                        }
                    }
                }
            }
        }
    }
}
