//! Compaction tests: sample unions, chunk pass-through, overlaps, tombstones, meta.json, label
//! checks, vertical de-duplication, and readability by the real promtool.

use std::collections::{BTreeMap, HashSet};

use strata_tsdb::meta::ThanosMeta;
use strata_tsdb::tombstones::{Interval, Tombstones};

use super::*;

type Series = Vec<(Labels, Vec<(i64, f64)>)>;

fn ls(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied()).unwrap()
}

fn ext(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Writes `series` (sorted here) as a block with the given external labels.
fn write(dir: &Path, mut series: Series, labels: Option<BTreeMap<String, String>>) -> PathBuf {
    series.sort_by(|a, b| a.0.cmp(&b.0));
    let mut w = BlockWriter::new(
        dir,
        BlockWriterOptions {
            thanos: labels.map(|l| ThanosMeta::new(l, "sidecar", 0)),
            ..Default::default()
        },
    )
    .unwrap();
    for (l, s) in &series {
        w.add_series(l, s).unwrap();
    }
    dir.join(w.finish().unwrap().to_string())
}

/// Every series' float samples, tombstones applied.
fn read_all(dir: &Path) -> BTreeMap<Labels, Vec<(i64, f64)>> {
    let b = Block::open(dir).unwrap();
    let mut out = BTreeMap::new();
    for r in b.index().all_postings().unwrap() {
        let s = b.series_samples(r, i64::MIN, i64::MAX).unwrap();
        let v: Vec<(i64, f64)> = s
            .samples
            .iter()
            .map(|s| match s {
                Sample::Float { t, v } => (*t, *v),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        if !v.is_empty() {
            out.insert(s.labels, v);
        }
    }
    out
}

fn chunk_bytes(dir: &Path) -> Vec<Vec<u8>> {
    let b = Block::open(dir).unwrap();
    let mut out = Vec::new();
    for r in b.index().all_postings().unwrap() {
        for m in b.index().series(r).unwrap().1 {
            out.push(b.chunk(m.chunk_ref).unwrap().data().to_vec());
        }
    }
    out
}

fn series_over(names: &[&str], from: i64, to: i64, step: i64, base: f64) -> Series {
    names
        .iter()
        .map(|n| {
            (
                ls(&[("__name__", "m"), ("instance", n)]),
                (from..to)
                    .step_by(step as usize)
                    .map(|t| (t, base + t as f64 / 1000.0))
                    .collect(),
            )
        })
        .collect()
}

const H2: i64 = 2 * 3600 * 1000;

#[test]
fn non_overlapping_blocks_are_unioned_with_chunk_bytes_copied_and_promtool_reads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let l = ext(&[("cluster", "eu")]);
    let a = write(
        tmp.path(),
        series_over(&["a", "b", "c"], 0, H2, 15_000, 0.0),
        Some(l.clone()),
    );
    let b = write(
        tmp.path(),
        series_over(&["b", "c", "d"], H2, 2 * H2, 15_000, 0.5),
        Some(l.clone()),
    );
    let out = tmp.path().join("out");
    let (ulid, stats) =
        compact_with_stats(&[a.clone(), b.clone()], &out, &CompactOptions::default()).unwrap();
    let ulid = ulid.unwrap();
    let dir = out.join(ulid.to_string());

    // Samples: the union of the inputs.
    let mut want = read_all(&a);
    for (l, s) in read_all(&b) {
        want.entry(l).or_default().extend(s);
    }
    assert_eq!(read_all(&dir), want);
    assert_eq!(want.len(), 4);

    // Every output chunk is an input chunk, byte for byte.
    let inputs: HashSet<Vec<u8>> = chunk_bytes(&a).into_iter().chain(chunk_bytes(&b)).collect();
    let outputs = chunk_bytes(&dir);
    assert!(!outputs.is_empty());
    assert!(outputs.iter().all(|c| inputs.contains(c)));
    assert_eq!(stats.chunks_recut, 0);
    assert_eq!(stats.chunks_copied as usize, outputs.len());
    assert_eq!(stats.series, 4);

    // meta.json: level, sources, parents, range, thanos section, stats.
    let (ma, mb) = (
        strata_tsdb::BlockMeta::read_from_dir(&a).unwrap(),
        strata_tsdb::BlockMeta::read_from_dir(&b).unwrap(),
    );
    let m = strata_tsdb::BlockMeta::read_from_dir(&dir).unwrap();
    assert_eq!(m.compaction.level, 2);
    let mut srcs = vec![ma.ulid, mb.ulid];
    srcs.sort();
    assert_eq!(m.compaction.sources, srcs);
    let parents: Vec<_> = m
        .compaction
        .parents
        .iter()
        .map(|p| (p.ulid, p.min_time, p.max_time))
        .collect();
    assert_eq!(
        parents,
        [
            (ma.ulid, ma.min_time, ma.max_time),
            (mb.ulid, mb.min_time, mb.max_time)
        ]
    );
    assert_eq!((m.min_time, m.max_time), (ma.min_time, mb.max_time));
    let t = m.thanos.unwrap();
    assert_eq!(t.labels, Some(l));
    assert_eq!(t.source, COMPACTOR_SOURCE);
    let total: usize = want.values().map(Vec::len).sum();
    assert_eq!(m.stats.num_samples as usize, total);
    assert_eq!(m.stats.num_series, 4);
    assert!(strata_tsdb::verify(&dir).unwrap().is_ok());

    // The real promtool reads it: analyze succeeds, dump prints every sample once.
    let o = strata_e2e::promtool(&["tsdb", "analyze", out.to_str().unwrap(), &ulid.to_string()])
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // promtool's dump opens the directory as a database, which needs a WAL directory.
    std::fs::create_dir_all(out.join("wal")).unwrap();
    let o = strata_e2e::promtool(&[
        "tsdb",
        "dump",
        "--min-time=-9223372036854775808",
        "--max-time=9223372036854775807",
        out.to_str().unwrap(),
    ])
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dump = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = dump.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(lines.len(), total, "{}", &dump[..dump.len().min(500)]);
    let l0 = format!(
        "{} {}",
        want.values().next().unwrap()[0].1,
        want.values().next().unwrap()[0].0
    );
    assert!(lines.iter().any(|l| l.ends_with(&l0)), "{l0}");
}

#[test]
fn overlapping_blocks_merge_without_duplicates_first_input_wins() {
    let tmp = tempfile::tempdir().unwrap();
    // a: every 10 s over [0, 3000 s); b: every 15 s over [1500 s, 4500 s), other values.
    let a = write(
        tmp.path(),
        series_over(&["x"], 0, 3_000_000, 10_000, 0.0),
        None,
    );
    let b = write(
        tmp.path(),
        series_over(&["x", "y"], 1_500_000, 4_500_000, 15_000, 0.25),
        None,
    );
    let out = tmp.path().join("out");
    let (ulid, stats) =
        compact_with_stats(&[a.clone(), b.clone()], &out, &CompactOptions::default()).unwrap();
    let dir = out.join(ulid.unwrap().to_string());
    let got = read_all(&dir);
    let (ra, rb) = (read_all(&a), read_all(&b));
    let x = ls(&[("__name__", "m"), ("instance", "x")]);
    let mut want: BTreeMap<i64, f64> = rb[&x].iter().copied().collect();
    want.extend(ra[&x].iter().copied()); // a's value wins on equal timestamps
    let want: Vec<(i64, f64)> = want.into_iter().collect();
    assert_eq!(got[&x], want);
    assert!(got[&x].windows(2).all(|w| w[0].0 < w[1].0));
    // Timestamps present in both inputs keep a's value (a's values have no 0.25 offset).
    assert_eq!(got[&x].iter().find(|s| s.0 == 1_500_000).unwrap().1, 1500.0);
    let y = ls(&[("__name__", "m"), ("instance", "y")]);
    assert_eq!(got[&y], rb[&y]);
    assert!(stats.chunks_recut > 0);
    // Re-cut chunks (series x) hold at most 120 samples.
    let blk = Block::open(&dir).unwrap();
    for r in blk.index().postings("instance", "x").unwrap() {
        for m in blk.index().series(r).unwrap().1 {
            assert!(blk.chunk(m.chunk_ref).unwrap().num_samples() <= 120);
        }
    }
    assert!(strata_tsdb::verify(&dir).unwrap().is_ok());
}

#[test]
fn tombstones_are_applied_and_fully_deleted_input_gives_no_block() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write(
        tmp.path(),
        series_over(&["p", "q"], 0, H2, 15_000, 0.0),
        None,
    );
    // Delete [600 s, 1200 s] of the first series and all of the second.
    let blk = Block::open(&a).unwrap();
    let refs = blk.index().all_postings().unwrap();
    let mut ts = Tombstones::new();
    ts.add(
        refs[0],
        Interval {
            mint: 600_000,
            maxt: 1_200_000,
        },
    );
    ts.add(
        refs[1],
        Interval {
            mint: i64::MIN,
            maxt: i64::MAX,
        },
    );
    drop(blk);
    ts.write_to_dir(&a).unwrap();
    let before = read_all(&a); // tombstones applied by the reader
    assert_eq!(before.len(), 1);
    let out = tmp.path().join("out");
    let ulid = compact(std::slice::from_ref(&a), &out, &CompactOptions::default())
        .unwrap()
        .unwrap();
    let dir = out.join(ulid.to_string());
    let got = read_all(&dir);
    assert_eq!(got, before);
    let p = ls(&[("__name__", "m"), ("instance", "p")]);
    assert!(
        got[&p]
            .iter()
            .all(|s| !(600_000..=1_200_000).contains(&s.0))
    );
    assert!(Tombstones::read_from_dir(&dir).unwrap().is_empty());
    assert_eq!(Block::open(&dir).unwrap().meta().stats.num_series, 1);

    // Everything deleted: no block.
    let mut all = Tombstones::new();
    for r in Block::open(&a).unwrap().index().all_postings().unwrap() {
        all.add(
            r,
            Interval {
                mint: i64::MIN,
                maxt: i64::MAX,
            },
        );
    }
    all.write_to_dir(&a).unwrap();
    let out2 = tmp.path().join("out2");
    assert_eq!(
        compact(&[a], &out2, &CompactOptions::default()).unwrap(),
        None
    );
    let left: Vec<_> = std::fs::read_dir(&out2)
        .map(|d| d.count())
        .into_iter()
        .collect();
    assert!(
        left.iter().all(|n| *n == 0),
        "temporary directory left behind"
    );
}

#[test]
fn mismatched_external_labels_or_resolutions_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write(
        tmp.path(),
        series_over(&["a"], 0, 60_000, 15_000, 0.0),
        Some(ext(&[("cluster", "eu")])),
    );
    let b = write(
        tmp.path(),
        series_over(&["a"], H2, H2 + 60_000, 15_000, 0.0),
        Some(ext(&[("cluster", "us")])),
    );
    let out = tmp.path().join("out");
    let e = compact(&[a.clone(), b.clone()], &out, &CompactOptions::default()).unwrap_err();
    let (ua, ub) = (
        strata_tsdb::BlockMeta::read_from_dir(&a)
            .unwrap()
            .ulid
            .to_string(),
        strata_tsdb::BlockMeta::read_from_dir(&b)
            .unwrap()
            .ulid
            .to_string(),
    );
    let msg = e.to_string();
    assert!(matches!(e, Error::LabelsMismatch { .. }), "{msg}");
    assert!(
        msg.contains(&ua) && msg.contains(&ub) && msg.contains("eu") && msg.contains("us"),
        "{msg}"
    );
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().count() == 0);

    let mut mb = strata_tsdb::BlockMeta::read_from_dir(&b).unwrap();
    let t = mb.thanos.as_mut().unwrap();
    t.labels = Some(ext(&[("cluster", "eu")]));
    t.downsample.resolution = 300_000;
    mb.write_to_dir(&b).unwrap();
    let e = compact(&[a, b], &out, &CompactOptions::default()).unwrap_err();
    assert!(matches!(e, Error::ResolutionMismatch { .. }), "{e}");

    assert!(matches!(
        compact(&[], &out, &CompactOptions::default()),
        Err(Error::InvalidArgument(_))
    ));
    let e = compact(
        &[tmp.path().join("missing")],
        &out,
        &CompactOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn vertical_compaction_keeps_one_replica_and_fills_its_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let name = ls(&[("__name__", "up"), ("job", "api")]);
    // Replica a: every 15 s over 1 h, with a gap [20 min, 30 min); values 1.
    let sa: Vec<(i64, f64)> = (0..240)
        .map(|i| i * 15_000)
        .filter(|t| !(1_200_000..1_800_000).contains(t))
        .map(|t| (t, 1.0))
        .collect();
    // Replica b: every 15 s, 5 s later; values 2.
    let sb: Vec<(i64, f64)> = (0..240).map(|i| (i * 15_000 + 5_000, 2.0)).collect();
    let a = write(
        tmp.path(),
        vec![(name.clone(), sa.clone())],
        Some(ext(&[("cluster", "eu"), ("replica", "a")])),
    );
    let b = write(
        tmp.path(),
        vec![(name.clone(), sb.clone())],
        Some(ext(&[("cluster", "eu"), ("replica", "b")])),
    );
    let out = tmp.path().join("out");
    // Without replica labels the label sets differ: refused.
    assert!(compact(&[a.clone(), b.clone()], &out, &CompactOptions::default()).is_err());
    let opts = CompactOptions {
        dedup_replica_labels: vec!["replica".into()],
        ..Default::default()
    };
    let ulid = compact(&[a, b], &out, &opts).unwrap().unwrap();
    let dir = out.join(ulid.to_string());
    let m = strata_tsdb::BlockMeta::read_from_dir(&dir).unwrap();
    assert_eq!(m.thanos.unwrap().labels, Some(ext(&[("cluster", "eu")])));
    let got = &read_all(&dir)[&name];
    // Replica a until its gap, which is filled from replica b; never both replicas' samples
    // interleaved: about one replica's worth of samples, each from one of them.
    let before_gap: Vec<_> = sa.iter().copied().filter(|s| s.0 < 1_200_000).collect();
    assert_eq!(&got[..before_gap.len()], &before_gap[..]);
    let in_gap: Vec<_> = got
        .iter()
        .filter(|s| (1_200_000..1_800_000).contains(&s.0))
        .collect();
    let b_in_gap = sb
        .iter()
        .filter(|s| (1_220_000..1_800_000).contains(&s.0))
        .count();
    assert!(in_gap.len() >= b_in_gap, "{} < {b_in_gap}", in_gap.len());
    assert!(in_gap.iter().all(|s| s.1 == 2.0 && sb.contains(s)));
    assert!(got.iter().all(|s| sa.contains(s) || sb.contains(s)));
    assert!(got.windows(2).all(|w| w[1].0 - w[0].0 >= 5_000));
    assert!((235..=245).contains(&got.len()), "{}", got.len());
}

fn hist(n: u64) -> strata_tsdb::Histogram {
    strata_tsdb::Histogram {
        count: 3 * n,
        zero_count: n,
        sum: n as f64 * 1.5,
        positive_spans: vec![strata_tsdb::chunkenc::Span {
            offset: 0,
            length: 2,
        }],
        positive_buckets: vec![n as i64, 0],
        ..Default::default()
    }
}

#[test]
fn overlapping_native_histograms_are_merged_and_re_encoded() {
    let tmp = tempfile::tempdir().unwrap();
    let name = ls(&[("__name__", "latency")]);
    let write_h = |samples: Vec<(i64, strata_tsdb::Histogram)>| {
        let mut w = BlockWriter::new(tmp.path(), BlockWriterOptions::default()).unwrap();
        w.add_histogram_series(&name, &samples).unwrap();
        tmp.path().join(w.finish().unwrap().to_string())
    };
    // a: every 10 s, t/10 s as the count; b: every 15 s, shifted by 1000 in value.
    let sa: Vec<_> = (0..300).map(|i| (i * 10_000, hist(i as u64))).collect();
    let sb: Vec<_> = (0..300)
        .map(|i| (1_000_000 + i * 15_000, hist(1000 + i as u64)))
        .collect();
    let a = write_h(sa.clone());
    let b = write_h(sb.clone());
    let out = tmp.path().join("out");
    let ulid = compact(&[a, b], &out, &CompactOptions::default())
        .unwrap()
        .unwrap();
    let dir = out.join(ulid.to_string());
    let blk = Block::open(&dir).unwrap();
    let r = blk.index().all_postings().unwrap()[0];
    let got: Vec<(i64, u64)> = blk
        .series_samples(r, i64::MIN, i64::MAX)
        .unwrap()
        .samples
        .iter()
        .map(|s| match s {
            Sample::Histogram { t, h } => (*t, h.count),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let mut want: BTreeMap<i64, u64> = sb.iter().map(|(t, h)| (*t, h.count)).collect();
    want.extend(sa.iter().map(|(t, h)| (*t, h.count)));
    assert_eq!(got, want.into_iter().collect::<Vec<_>>());
    assert!(strata_tsdb::verify(&dir).unwrap().is_ok());
    let o = strata_e2e::promtool(&["tsdb", "analyze", out.to_str().unwrap(), &ulid.to_string()])
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn downsampled_blocks_compact_by_copying_aggregate_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let l = ext(&[("cluster", "eu")]);
    let day = 24 * 3600 * 1000;
    let a = write(
        tmp.path(),
        series_over(&["a"], 0, 2 * day, 60_000, 0.0),
        Some(l.clone()),
    );
    let b = write(
        tmp.path(),
        series_over(&["a"], 2 * day, 4 * day, 60_000, 0.0),
        Some(l),
    );
    let ds = tmp.path().join("ds");
    let da = ds.join(
        crate::downsample(&a, &ds, crate::RES_5M)
            .unwrap()
            .to_string(),
    );
    let db = ds.join(
        crate::downsample(&b, &ds, crate::RES_5M)
            .unwrap()
            .to_string(),
    );
    let out = tmp.path().join("out");
    let (ulid, stats) =
        compact_with_stats(&[da.clone(), db.clone()], &out, &CompactOptions::default()).unwrap();
    let dir = out.join(ulid.unwrap().to_string());
    assert_eq!(stats.chunks_recut, 0);
    let inputs: HashSet<Vec<u8>> = chunk_bytes(&da)
        .into_iter()
        .chain(chunk_bytes(&db))
        .collect();
    let outputs = chunk_bytes(&dir);
    assert_eq!(outputs.len(), inputs.len());
    assert!(outputs.iter().all(|c| inputs.contains(c)));
    let m = strata_tsdb::BlockMeta::read_from_dir(&dir).unwrap();
    assert_eq!(m.thanos.unwrap().downsample.resolution, crate::RES_5M);
    // Overlapping downsampled blocks cannot be merged sample by sample: a clear error.
    let e = compact(
        &[da.clone(), da],
        &tmp.path().join("out2"),
        &CompactOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("aggregate chunks"), "{e}");
}

/// Vertical compaction of two replicas' blocks gives the same samples as the real Thanos
/// compactor with `--deduplication.func=penalty`.
#[test]
fn vertical_compaction_equals_thanos_penalty_dedup() {
    use strata_e2e::{Tool, free_port, tool_path};

    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    let start = (1_700_000_000_000 / H2 + 1) * H2;
    let mut inputs = Vec::new();
    for (replica, phase, gap) in [("a", 0, true), ("b", 5_000, false)] {
        let series: Series = ["api", "db"]
            .iter()
            .enumerate()
            .map(|(k, job)| {
                let s: Vec<(i64, f64)> = (0..480)
                    .map(|i| (start + i * 15_000 + phase, i))
                    .filter(|(t, _)| !gap || !(start + 1_800_000..start + 2_400_000).contains(t))
                    .map(|(t, i)| {
                        (
                            t,
                            i as f64 + if replica == "a" { 0.0 } else { 0.5 } + k as f64,
                        )
                    })
                    .collect();
                (ls(&[("__name__", "up"), ("job", job)]), s)
            })
            .collect();
        inputs.push(write(
            &bucket,
            series,
            Some(ext(&[("cluster", "eu"), ("replica", replica)])),
        ));
    }
    let ours = tmp.path().join("ours");
    let opts = CompactOptions {
        dedup_replica_labels: vec!["replica".into()],
        ..Default::default()
    };
    let ulid = compact(&inputs, &ours, &opts).unwrap().unwrap();
    let got = read_all(&ours.join(ulid.to_string()));

    let o = std::process::Command::new(tool_path(Tool::Thanos).unwrap())
        .arg("compact")
        .arg(format!(
            "--data-dir={}",
            tmp.path().join("thanos-data").display()
        ))
        .arg(format!(
            "--objstore.config=type: FILESYSTEM\nconfig:\n  directory: {}\n",
            bucket.display()
        ))
        .arg(format!("--http-address=127.0.0.1:{}", free_port()))
        .args([
            "--consistency-delay=0s",
            "--downsampling.disable",
            "--deduplication.replica-label=replica",
            "--deduplication.func=penalty",
        ])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    let theirs = std::fs::read_dir(&bucket)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<Ulid>().ok())
        .map(|u| bucket.join(u.to_string()))
        .find(|d| {
            !d.join("deletion-mark.json").exists()
                && strata_tsdb::BlockMeta::read_from_dir(d).is_ok_and(|m| m.compaction.level == 2)
        })
        .unwrap_or_else(|| panic!("no compacted block from Thanos:\n{log}"));
    let want = read_all(&theirs);
    assert_eq!(want.len(), 2);
    for (l, w) in &want {
        let g = &got[l];
        assert_eq!(g.len(), w.len(), "{l}");
        assert_eq!(g, w, "{l}");
    }
    let tm = strata_tsdb::BlockMeta::read_from_dir(&theirs).unwrap();
    let om = strata_tsdb::BlockMeta::read_from_dir(&ours.join(ulid.to_string())).unwrap();
    assert_eq!(om.compaction.sources, tm.compaction.sources);
    assert_eq!(om.compaction.level, tm.compaction.level);
    let parents = |m: &strata_tsdb::BlockMeta| {
        let mut p: Vec<_> = m
            .compaction
            .parents
            .iter()
            .map(|p| (p.ulid, p.min_time, p.max_time))
            .collect();
        p.sort();
        p
    };
    assert_eq!(parents(&om), parents(&tm));
    assert_eq!(om.stats.num_samples, tm.stats.num_samples);
    assert_eq!(om.stats.num_series, tm.stats.num_series);
    let (ot, tt) = (om.thanos.unwrap(), tm.thanos.unwrap());
    assert_eq!(ot.labels, tt.labels);
    assert_eq!(ot.source, tt.source);
    assert_eq!(ot.downsample, tt.downsample);
    assert_eq!((om.min_time, om.max_time), (tm.min_time, tm.max_time));
}

/// Enough series for several reader → writer batches, and a postings budget so small the
/// output's postings go through sorted runs on disk: the output is the same block, byte for
/// byte, as with everything in memory, and holds the union of the inputs.
#[test]
fn many_series_with_spilled_postings_give_the_same_block() {
    let tmp = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..700).map(|i| format!("i{i:04}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let inputs = [
        write(
            tmp.path(),
            series_over(&names[..500], 0, H2, 15_000, 0.0),
            None,
        ),
        write(
            tmp.path(),
            series_over(&names[200..], H2, 2 * H2, 15_000, 1.0),
            None,
        ),
        // Overlaps the second one in time for a few series: those are re-cut.
        write(
            tmp.path(),
            series_over(&names[600..610], H2 + 7_500, H2 + 600_000, 15_000, 2.0),
            None,
        ),
    ];
    let id = Ulid::from_parts(1, 2);
    let run = |out: &str, budget: Option<usize>| {
        let opts = CompactOptions {
            ulid: Some(id),
            postings_budget: budget,
            ..Default::default()
        };
        let (u, stats) = compact_with_stats(&inputs, &tmp.path().join(out), &opts).unwrap();
        (tmp.path().join(out).join(u.unwrap().to_string()), stats)
    };
    let (mem, mem_stats) = run("mem", None);
    let (spilled, spilled_stats) = run("spilled", Some(5));
    assert_eq!(mem_stats, spilled_stats);
    assert_eq!(mem_stats.series, 700);
    assert!(
        mem_stats.chunks_recut > 0 && mem_stats.chunks_copied > 0,
        "{mem_stats:?}"
    );
    for f in ["index", "chunks/000001", "meta.json"] {
        assert!(
            std::fs::read(mem.join(f)).unwrap() == std::fs::read(spilled.join(f)).unwrap(),
            "{f} differs"
        );
    }
    let mut want: BTreeMap<Labels, BTreeMap<i64, f64>> = BTreeMap::new();
    for input in &inputs {
        for (l, s) in read_all(input) {
            let e = want.entry(l).or_default();
            for (t, v) in s {
                e.entry(t).or_insert(v);
            }
        }
    }
    let want: BTreeMap<Labels, Vec<(i64, f64)>> = want
        .into_iter()
        .map(|(l, s)| (l, s.into_iter().collect()))
        .collect();
    assert_eq!(read_all(&spilled), want);
    assert!(strata_tsdb::verify(&spilled).unwrap().is_ok());
}
