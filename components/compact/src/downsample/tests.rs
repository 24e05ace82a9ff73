//! Downsampling tests: aggregates against values computed directly from raw samples (a
//! proptest), whole blocks, errors, and value-for-value equality with the real Thanos.

use std::collections::BTreeMap;
use std::path::PathBuf;

use proptest::prelude::*;
use strata_tsdb::meta::ThanosMeta;
use strata_tsdb::{BlockMeta, Labels};

use super::*;

/// `(t, v)` samples of a sub-chunk.
fn floats(sub: &Option<SubChunk>) -> Vec<(i64, f64)> {
    match sub {
        None => Vec::new(),
        Some((enc, data)) => Chunk::new(*enc, data.clone())
            .unwrap()
            .float_iter()
            .unwrap()
            .map(|s| s.unwrap())
            .collect(),
    }
}

/// The counter a reader sees: the raw first value plus every increase, resets removed.
fn raw_counter(data: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let mut out: Vec<(i64, f64)> = Vec::with_capacity(data.len());
    for (i, &(t, v)) in data.iter().enumerate() {
        let total = match i {
            0 => v,
            _ => {
                let prev = data[i - 1].1;
                out[i - 1].1 + if v >= prev { v - prev } else { v }
            }
        };
        out.push((t, total));
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Checks `chunks` (from `data` at `res`) against aggregates computed straight from `data`.
fn check_against_raw(data: &[(i64, f64)], res: i64, chunks: &[AggrOut]) {
    // Windows straight from the raw samples: key, count, sum, min, max, last sample time.
    let mut want: Vec<(i64, f64, f64, f64, f64, i64)> = Vec::new();
    for &(t, v) in data {
        let key = t.div_euclid(res);
        match want.last_mut() {
            Some(w) if w.0 == key => {
                w.1 += 1.0;
                w.2 += v;
                w.3 = w.3.min(v);
                w.4 = w.4.max(v);
                w.5 = t;
            }
            _ => want.push((key, 1.0, v, v, v, t)),
        }
    }
    let mut got = Vec::new();
    for (subs, mn, mx) in chunks {
        let cols: Vec<Vec<(i64, f64)>> = (0..4).map(|i| floats(&subs[i])).collect();
        assert!(cols.iter().all(|c| c.len() == cols[0].len()));
        assert_eq!(cols[0].first().map(|s| s.0), Some(*mn));
        assert_eq!(cols[0].last().map(|s| s.0), Some(*mx));
        for (i, &(t, count)) in cols[0].iter().enumerate() {
            assert!(cols[1..].iter().all(|c| c[i].0 == t));
            got.push((t, count, cols[1][i].1, cols[2][i].1, cols[3][i].1));
        }
    }
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        // Stamped with the window's last millisecond, or (a chunk's last window) its last sample.
        assert!(
            g.0 == window_end(w.0 * res, res) || g.0 == w.5,
            "{g:?} {w:?}"
        );
        assert_eq!((g.1, g.2, g.3, g.4), (w.1, w.2, w.3, w.4));
    }
    // Counter: joined across chunks, its value at each window equals the raw counter there.
    // (For a counter: with negative values, as for any gauge, the aggregate is meaningless.)
    if data.iter().any(|s| s.1 < 0.0) {
        return;
    }
    let counters: Vec<&SubChunk> = chunks
        .iter()
        .filter_map(|c| c.0[AGGR_COUNTER].as_ref())
        .collect();
    let (series, last_v) = counter_series(&counters).unwrap();
    let raw = raw_counter(data);
    assert_eq!(series.first().copied(), raw.first().copied());
    assert_eq!(Some(last_v), data.last().map(|s| s.1));
    for &(t, v) in &series {
        let at = raw.iter().rev().find(|s| s.0 <= t).unwrap();
        assert!(close(at.1, v), "counter at {t}: {v} vs raw {}", at.1);
    }
    assert!(close(series.last().unwrap().1, raw.last().unwrap().1));
}

fn series_strategy() -> impl Strategy<Value = Vec<(i64, f64)>> {
    (
        0i64..2_000_000_000_000,
        prop::collection::vec((1i64..240_000, 0u32..100, -50.0f64..50.0), 1..3000),
        any::<bool>(),
    )
        .prop_map(|(start, steps, counter)| {
            let mut t = start;
            let mut v = 0.0;
            steps
                .into_iter()
                .map(|(dt, r, g)| {
                    t += dt;
                    v = if !counter {
                        g
                    } else if r < 3 {
                        f64::from(r) // a reset
                    } else {
                        v + f64::from(r % 10)
                    };
                    (t, v)
                })
                .collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn raw_aggregates_equal_values_computed_from_raw(data in series_strategy()) {
        for res in [RES_5M, RES_1H] {
            check_against_raw(&data, res, &downsample_raw(&data, res).unwrap());
        }
    }
}

#[test]
fn counter_with_a_reset_by_hand() {
    // 1-minute samples over 12 minutes; a reset at 7 min.
    let data: Vec<(i64, f64)> = [1.0, 2.0, 4.0, 4.0, 6.0, 9.0, 10.0, 1.0, 3.0, 3.0, 5.0, 6.0]
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64 * 60_000, *v))
        .collect();
    let out = downsample_raw(&data, RES_5M).unwrap();
    assert_eq!(out.len(), 1);
    let subs = &out[0].0;
    let ts = [299_999, 599_999, 660_000];
    assert_eq!(
        floats(&subs[AGGR_COUNT]),
        [(ts[0], 5.0), (ts[1], 5.0), (ts[2], 2.0)]
    );
    assert_eq!(
        floats(&subs[AGGR_SUM]),
        [(ts[0], 17.0), (ts[1], 26.0), (ts[2], 11.0)]
    );
    assert_eq!(
        floats(&subs[AGGR_MIN]),
        [(ts[0], 1.0), (ts[1], 1.0), (ts[2], 5.0)]
    );
    assert_eq!(
        floats(&subs[AGGR_MAX]),
        [(ts[0], 6.0), (ts[1], 10.0), (ts[2], 6.0)]
    );
    // First raw value, the counter per window (10, then 1 and 2 more after the reset: 13 in
    // the second window), then the last raw value repeated at the last window's time.
    assert_eq!(
        floats(&subs[AGGR_COUNTER]),
        [
            (0, 1.0),
            (ts[0], 6.0),
            (ts[1], 13.0),
            (ts[2], 16.0),
            (ts[2], 6.0)
        ]
    );
}

fn ls(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied()).unwrap()
}

/// A raw block over `hours` of 2-minute samples: a counter with resets, a gauge, a series
/// with a gap, and a native-histogram series when `histogram`.
fn raw_block(dir: &Path, start: i64, hours: i64, histogram: bool) -> PathBuf {
    let n = hours * 30;
    let t = |i: i64| start + i * 120_000;
    let mut series: Vec<(Labels, Vec<(i64, f64)>)> = vec![
        (
            ls(&[("__name__", "requests_total"), ("job", "api")]),
            (0..n)
                .map(|i| (t(i), ((i * 7) % 1000) as f64 + (i % 3) as f64 * 0.25))
                .collect(),
        ),
        (
            ls(&[("__name__", "temperature"), ("job", "api")]),
            (0..n)
                .map(|i| (t(i), ((i * 37) % 101) as f64 - 50.5))
                .collect(),
        ),
        (
            ls(&[("__name__", "up"), ("job", "db")]),
            (0..n)
                .filter(|i| !(n / 3..n / 2).contains(i))
                .map(|i| (t(i), 1.0))
                .collect(),
        ),
    ];
    series.sort_by(|a, b| a.0.cmp(&b.0));
    let labels = [("cluster".to_string(), "eu".to_string())]
        .into_iter()
        .collect();
    let mut w = BlockWriter::new(
        dir,
        BlockWriterOptions {
            thanos: Some(ThanosMeta::new(labels, "sidecar", 0)),
            ..Default::default()
        },
    )
    .unwrap();
    if histogram {
        let h = strata_tsdb::Histogram {
            count: 1,
            sum: 1.0,
            ..Default::default()
        };
        w.add_histogram_series(
            &ls(&[("__name__", "a_histogram")]),
            &[(start, h.clone()), (start + 60_000, h)],
        )
        .unwrap();
    }
    for (l, s) in &series {
        w.add_series(l, s).unwrap();
    }
    dir.join(w.finish().unwrap().to_string())
}

/// A chunk's time range and its sub-chunks' samples.
type DecodedChunk = (i64, i64, Vec<Vec<(i64, f64)>>);
/// Per series: its decoded chunks.
type Decoded = BTreeMap<Labels, Vec<DecodedChunk>>;

fn decode_block(dir: &Path) -> Decoded {
    let b = Block::open(dir).unwrap();
    let mut out = Decoded::new();
    for r in b.index().all_postings().unwrap() {
        let (l, metas) = b.index().series(r).unwrap();
        let chunks = metas
            .iter()
            .map(|m| {
                let c = b.chunk(m.chunk_ref).unwrap();
                assert_eq!(c.encoding(), Encoding::Aggr);
                let subs = aggr::decode(c.data()).unwrap();
                (m.min_time, m.max_time, subs.iter().map(floats).collect())
            })
            .collect();
        out.insert(l, chunks);
    }
    out
}

#[test]
fn blocks_downsample_to_5m_and_1h_with_meta_and_skipped_histograms() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = raw_block(tmp.path(), 1_700_000_000_000, 48, true);
    let out = tmp.path().join("out");
    let (u5, stats) = downsample_with_stats(&raw, &out, RES_5M).unwrap();
    assert_eq!(stats.series, 3);
    assert_eq!(stats.histogram_series_skipped, 1);
    let d5 = out.join(u5.to_string());
    let (mr, m5) = (
        BlockMeta::read_from_dir(&raw).unwrap(),
        BlockMeta::read_from_dir(&d5).unwrap(),
    );
    assert_eq!(m5.thanos.as_ref().unwrap().downsample.resolution, RES_5M);
    assert_eq!(
        m5.thanos.as_ref().unwrap().labels,
        mr.thanos.as_ref().unwrap().labels
    );
    assert_eq!((m5.min_time, m5.max_time), (mr.min_time, mr.max_time));
    assert_eq!(m5.compaction.sources, mr.compaction.sources);
    // Each series' aggregates equal values computed from its raw samples.
    let rb = Block::open(&raw).unwrap();
    let decoded = decode_block(&d5);
    for r in rb.index().all_postings().unwrap() {
        let s = rb.series_samples(r, i64::MIN, i64::MAX).unwrap();
        if !s.samples[0].is_float() {
            assert!(!decoded.contains_key(&s.labels));
            continue;
        }
        let data: Vec<(i64, f64)> = s
            .samples
            .iter()
            .map(|x| match x {
                Sample::Float { t, v } => (*t, *v),
                _ => unreachable!(),
            })
            .collect();
        let b5 = Block::open(&d5).unwrap();
        let refs = b5
            .index()
            .postings("__name__", s.labels.get("__name__").unwrap())
            .unwrap();
        let (_, metas) = b5.index().series(refs[0]).unwrap();
        let chunks: Vec<AggrOut> = metas
            .iter()
            .map(|m| {
                let c = b5.chunk(m.chunk_ref).unwrap();
                (aggr::decode(c.data()).unwrap(), m.min_time, m.max_time)
            })
            .collect();
        check_against_raw(&data, RES_5M, &chunks);
    }
    // (strata_tsdb::verify does not decode aggregate chunks; the block's stats are checked.)
    let m5 = BlockMeta::read_from_dir(&d5).unwrap();
    let windows: usize = decode_block(&d5)
        .values()
        .flat_map(|c| c.iter().map(|x| x.2[AGGR_COUNT].len()))
        .sum();
    assert_eq!(m5.stats.num_samples as usize, windows);
    assert_eq!(m5.stats.num_series, 3);

    // 5m → 1h: totals are kept (count, sum), extremes too.
    let u1 = downsample(&d5, &out, RES_1H).unwrap();
    let d1 = out.join(u1.to_string());
    assert_eq!(
        BlockMeta::read_from_dir(&d1)
            .unwrap()
            .thanos
            .unwrap()
            .downsample
            .resolution,
        RES_1H
    );
    let (a5, a1) = (decode_block(&d5), decode_block(&d1));
    assert_eq!(a5.keys().collect::<Vec<_>>(), a1.keys().collect::<Vec<_>>());
    for (l, c5) in &a5 {
        let total = |c: &[DecodedChunk], i: usize| -> f64 {
            c.iter().flat_map(|x| x.2[i].iter().map(|s| s.1)).sum()
        };
        let c1 = &a1[l];
        assert_eq!(total(c5, AGGR_COUNT), total(c1, AGGR_COUNT), "{l}");
        assert!(close(total(c5, AGGR_SUM), total(c1, AGGR_SUM)), "{l}");
        let ext = |c: &[DecodedChunk], i: usize, f: fn(f64, f64) -> f64| {
            c.iter()
                .flat_map(|x| x.2[i].iter().map(|s| s.1))
                .reduce(f)
                .unwrap()
        };
        assert_eq!(ext(c5, AGGR_MIN, f64::min), ext(c1, AGGR_MIN, f64::min));
        assert_eq!(ext(c5, AGGR_MAX, f64::max), ext(c1, AGGR_MAX, f64::max));
        let last = |c: &[DecodedChunk]| {
            let subs: Vec<SubChunk> = c
                .iter()
                .map(|x| {
                    let mut a = XorAppender::new();
                    for &(t, v) in &x.2[AGGR_COUNTER] {
                        a.append(t, v).unwrap();
                    }
                    (Encoding::Xor.as_u8(), Bytes::from(a.into_bytes()))
                })
                .collect();
            let refs: Vec<&SubChunk> = subs.iter().collect();
            let (s, v) = counter_series(&refs).unwrap();
            (*s.last().unwrap(), v)
        };
        // The counter's final value survives (counters only: gauges go negative).
        if ext(c5, AGGR_MIN, f64::min) >= 0.0 {
            let (l5, l1) = (last(c5), last(c1));
            assert!(close(l5.0.1, l1.0.1) && l5.1 == l1.1, "{l}: {l5:?} {l1:?}");
        }
    }

    // Resolution must get coarser.
    assert!(matches!(
        downsample(&d5, &out, RES_5M),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        downsample(&raw, &out, 0),
        Err(Error::InvalidArgument(_))
    ));
}

/// Our downsampling equals the real Thanos's, chunk for chunk and value for value, for raw → 5m
/// and (from Thanos's own 5m block) 5m → 1h.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equals_thanos_downsampling_value_for_value() {
    use std::process::Command;
    use std::time::Duration;

    use strata_e2e::{Process, Tool, free_port, tool_path, wait_until};

    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    // 10 days + 4 h: Thanos downsamples raw → 5m (≥ 40 h) and 5m → 1h (≥ 10 d).
    let raw = raw_block(&bucket, 1_700_000_000_000, 244, false);
    let raw_ulid = BlockMeta::read_from_dir(&raw).unwrap().ulid;

    let mut cmd = Command::new(tool_path(Tool::Thanos).unwrap());
    cmd.args(["tools", "bucket", "downsample"])
        .arg(format!(
            "--data-dir={}",
            tmp.path().join("ds-data").display()
        ))
        .arg(format!(
            "--objstore.config=type: FILESYSTEM\nconfig:\n  directory: {}\n",
            bucket.display()
        ))
        .arg(format!("--http-address=127.0.0.1:{}", free_port()));
    let mut thanos = Process::spawn("thanos-downsample", cmd).unwrap();
    let find = |res: i64| {
        std::fs::read_dir(&bucket).ok().and_then(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<Ulid>().ok())
                .filter(|u| *u != raw_ulid)
                .find(|u| {
                    BlockMeta::read_from_dir(&bucket.join(u.to_string()))
                        .ok()
                        .and_then(|m| m.thanos)
                        .is_some_and(|t| t.downsample.resolution == res)
                })
        })
    };
    let t5 = wait_until("Thanos's 5m block", Duration::from_secs(120), || {
        let f = find(RES_5M);
        async move { f }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", thanos.log_tail()));
    let t1 = wait_until("Thanos's 1h block", Duration::from_secs(120), || {
        let f = find(RES_1H);
        async move { f }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", thanos.log_tail()));
    thanos.kill();
    let (t5, t1) = (bucket.join(t5.to_string()), bucket.join(t1.to_string()));

    let out = tmp.path().join("ours");
    let o5 = out.join(downsample(&raw, &out, RES_5M).unwrap().to_string());
    let o1 = out.join(downsample(&t5, &out, RES_1H).unwrap().to_string());
    for (ours, theirs) in [(&o5, &t5), (&o1, &t1)] {
        let (a, b) = (decode_block(ours), decode_block(theirs));
        assert_eq!(a.len(), 3);
        assert!(a.values().all(|c| c.len() > 1), "several chunks per series");
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (l, ca) in &a {
            let cb = &b[l];
            assert_eq!(ca.len(), cb.len(), "{l}: chunk count");
            for (x, y) in ca.iter().zip(cb) {
                for i in 0..NUM_AGGRS {
                    let bits = |v: &[(i64, f64)]| {
                        v.iter().map(|s| (s.0, s.1.to_bits())).collect::<Vec<_>>()
                    };
                    assert_eq!(bits(&x.2[i]), bits(&y.2[i]), "{l}: aggregate {i}");
                }
                assert_eq!(x.0, y.0, "{l}: chunk min time");
            }
        }
        let (ma, mb) = (
            BlockMeta::read_from_dir(ours).unwrap(),
            BlockMeta::read_from_dir(theirs).unwrap(),
        );
        assert_eq!((ma.min_time, ma.max_time), (mb.min_time, mb.max_time));
        assert_eq!(ma.stats.num_samples, mb.stats.num_samples);
        assert_eq!(ma.stats.num_series, mb.stats.num_series);
        assert_eq!(ma.stats.num_chunks, mb.stats.num_chunks);
        assert_eq!(
            ma.thanos.as_ref().unwrap().labels,
            mb.thanos.as_ref().unwrap().labels
        );
        assert_eq!(ma.thanos.unwrap().downsample, mb.thanos.unwrap().downsample);
    }
}
