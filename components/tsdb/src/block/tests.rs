//! Block write → open → select round trips, chunk cutting, verification, corruption, and (when
//! a promtool binary is available) readability by Prometheus itself.

use std::path::{Path, PathBuf};

use super::cut::cut_float_chunks;
use super::*;
use crate::chunkenc::{CounterResetHint, FloatHistogram, Histogram, Span, encode_histogram_chunk};
use crate::error::Error;
use crate::matcher::MatchOp;
use crate::meta::ThanosMeta;

type TestSeries = Vec<(Labels, Vec<(i64, f64)>)>;

fn ls(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied()).unwrap()
}

fn write_block(dir: &Path, n_series: usize, n_samples: i64, step: i64) -> (ulid::Ulid, TestSeries) {
    let mut series: TestSeries = (0..n_series)
        .map(|i| {
            let l = ls(&[
                ("__name__", if i % 2 == 0 { "up" } else { "requests_total" }),
                ("instance", &format!("host-{i:03}")),
                ("job", if i % 3 == 0 { "api" } else { "db" }),
            ]);
            let s = (0..n_samples)
                .map(|j| (j * step, (i as f64) * 1000.0 + j as f64))
                .collect();
            (l, s)
        })
        .collect();
    series.sort_by(|a, b| a.0.cmp(&b.0));
    let mut w = BlockWriter::new(dir, BlockWriterOptions::default()).unwrap();
    for (l, s) in &series {
        w.add_series(l, s).unwrap();
    }
    (w.finish().unwrap(), series)
}

#[test]
fn chunk_cutting_follows_prometheus_head() {
    // 15 s scrape over 2 h: 480 samples → 4 chunks of 120.
    let s: Vec<(i64, f64)> = (0..480).map(|i| (i * 15_000, 1.0)).collect();
    let c = cut_float_chunks(&s, DEFAULT_CHUNK_RANGE_MS, 120).unwrap();
    let sizes: Vec<u16> = c.iter().map(|(c, _, _)| c.num_samples()).collect();
    assert_eq!(sizes, [120, 120, 120, 120]);
    // Crossing the chunk range boundary always cuts.
    let s: Vec<(i64, f64)> = (0..10)
        .map(|i| (DEFAULT_CHUNK_RANGE_MS - 5 + i, 1.0))
        .collect();
    let c = cut_float_chunks(&s, DEFAULT_CHUNK_RANGE_MS, 120).unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c[1].1, DEFAULT_CHUNK_RANGE_MS);
    // Dense samples cut at 2 × 120.
    let s: Vec<(i64, f64)> = (0..1000).map(|i| (i, 1.0)).collect();
    let c = cut_float_chunks(&s, DEFAULT_CHUNK_RANGE_MS, 120).unwrap();
    assert!(c.iter().all(|(c, _, _)| c.num_samples() <= 240));
    // Random values hit the 1 KiB size limit first.
    let s: Vec<(i64, f64)> = (0..240)
        .map(|i| {
            (
                i * 1000,
                f64::from_bits(
                    0x4000_0000_0000_0000 ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 12,
                ),
            )
        })
        .collect();
    let c = cut_float_chunks(&s, DEFAULT_CHUNK_RANGE_MS, 120).unwrap();
    assert!(
        c.iter().all(|(c, _, _)| c.data().len() <= 1024),
        "{:?}",
        c.iter().map(|x| x.0.data().len()).collect::<Vec<_>>()
    );
}

#[test]
fn write_open_select_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (id, series) = write_block(dir.path(), 20, 300, 15_000);
    let bdir = dir.path().join(id.to_string());
    assert!(!dir.path().join(format!("{id}.tmp-for-creation")).exists());
    let b = Block::open(&bdir).unwrap();
    let m = b.meta();
    assert_eq!(m.ulid, id);
    assert_eq!(m.min_time, 0);
    assert_eq!(m.max_time, 299 * 15_000 + 1);
    assert_eq!(m.stats.num_series, 20);
    assert_eq!(m.stats.num_samples, 20 * 300);
    assert_eq!(m.stats.num_float_samples, 20 * 300);
    assert_eq!(m.compaction.level, 1);
    assert_eq!(m.compaction.sources, vec![id]);
    assert_eq!(b.index().label_values("job").unwrap(), ["api", "db"]);

    let ms = [Matcher::new(MatchOp::RegexMatch, "job", "api").unwrap()];
    let got: Vec<SeriesSamples> = b
        .select(&ms, 15_000, 30_000)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let want: Vec<&(Labels, Vec<(i64, f64)>)> = series
        .iter()
        .filter(|(l, _)| l.get("job") == Some("api"))
        .collect();
    assert_eq!(got.len(), want.len());
    for (g, (l, s)) in got.iter().zip(want) {
        assert_eq!(&g.labels, l);
        let vals: Vec<(i64, f64)> = g
            .samples
            .iter()
            .map(|s| match s {
                Sample::Float { t, v } => (*t, *v),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(vals, s[1..=2].to_vec());
    }
    let all: Vec<SeriesSamples> = b
        .select(
            &[Matcher::new(MatchOp::RegexMatch, "__name__", ".+").unwrap()],
            i64::MIN,
            i64::MAX,
        )
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(all.len(), 20);
    assert!(all.iter().all(|s| s.samples.len() == 300));

    let rep = verify(&bdir).unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    assert_eq!(rep.num_samples, 6000);
    assert_eq!(rep.num_chunks, m.stats.num_chunks);
    assert!(rep.num_label_indices > 0);
}

#[test]
fn writer_rejects_bad_input_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = BlockWriter::new(dir.path(), BlockWriterOptions::default()).unwrap();
    let id = w.ulid();
    w.add_series(&ls(&[("a", "2")]), &[(1, 1.0)]).unwrap();
    assert!(matches!(
        w.add_series(&ls(&[("a", "1")]), &[(1, 1.0)]),
        Err(Error::Unsorted { .. })
    ));
    assert!(matches!(
        w.add_series(&ls(&[("a", "3")]), &[(2, 1.0), (2, 2.0)]),
        Err(Error::Unsorted { .. })
    ));
    assert!(dir.path().join(format!("{id}.tmp-for-creation")).exists());
    drop(w);
    assert!(!dir.path().join(format!("{id}.tmp-for-creation")).exists());
    let w = BlockWriter::new(dir.path(), BlockWriterOptions::default()).unwrap();
    assert!(w.finish().is_err(), "empty block");
}

#[test]
fn histogram_chunks_and_thanos_meta() {
    let dir = tempfile::tempdir().unwrap();
    let h = |c: u64| Histogram {
        schema: 0,
        count: c,
        sum: c as f64,
        positive_spans: vec![Span {
            offset: 0,
            length: 1,
        }],
        positive_buckets: vec![c as i64],
        ..Default::default()
    };
    let samples: Vec<(i64, Histogram)> = (0..10).map(|i| (i * 1000, h(i as u64))).collect();
    let chunk = Chunk::from_parts(
        crate::chunkenc::Encoding::Histogram,
        encode_histogram_chunk(&samples, CounterResetHint::Unknown)
            .unwrap()
            .into(),
    );
    let opts = BlockWriterOptions {
        thanos: Some(ThanosMeta::new(
            [("cluster".to_string(), "eu".to_string())].into(),
            "sidecar",
            0,
        )),
        ..Default::default()
    };
    let mut w = BlockWriter::new(dir.path(), opts).unwrap();
    w.add_series_chunks(&ls(&[("__name__", "h")]), vec![(chunk, 0, 9000)])
        .unwrap();
    w.add_series(&ls(&[("__name__", "z")]), &[(0, 1.0)])
        .unwrap();
    let id = w.finish().unwrap();
    let bdir = dir.path().join(id.to_string());
    let b = Block::open(&bdir).unwrap();
    assert_eq!(b.meta().stats.num_histogram_samples, 10);
    let t = b.meta().thanos.as_ref().unwrap();
    assert!(t.index_stats.as_ref().unwrap().series_max_size > 0);
    let files = crate::meta::gather_file_stats(&bdir).unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f.rel_path.as_str()).collect();
    assert_eq!(paths, ["chunks/000001", "index", "meta.json"]);
    assert!(files[0].size_bytes > 8 && files[2].size_bytes == 0);
    let s: Vec<SeriesSamples> = b
        .select(&[Matcher::equal("__name__", "h")], 0, 5000)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(s[0].samples.len(), 6);
    assert!(verify(&bdir).unwrap().is_ok());
}

/// Flips bytes in each file of a written block: opening, selecting or verifying must fail
/// (or succeed) without panicking, and checksummed regions must not go unnoticed.
#[test]
fn corrupt_block_files_error() {
    let dir = tempfile::tempdir().unwrap();
    let (id, _) = write_block(dir.path(), 3, 50, 1000);
    let bdir = dir.path().join(id.to_string());
    let files = ["index", "chunks/000001", "tombstones", "meta.json"];
    for f in files {
        let p = bdir.join(f);
        let orig = std::fs::read(&p).unwrap();
        let step = (orig.len() / 40).max(1);
        for i in (0..orig.len()).step_by(step) {
            let mut b = orig.clone();
            b[i] ^= 0x21;
            std::fs::write(&p, &b).unwrap();
            let _ = verify(&bdir);
        }
        for cut in [0, orig.len() / 2, orig.len().saturating_sub(1)] {
            std::fs::write(&p, &orig[..cut]).unwrap();
            assert!(verify(&bdir).map_or(true, |r| !r.is_ok()), "{f} cut {cut}");
        }
        std::fs::write(&p, &orig).unwrap();
    }
    assert!(verify(&bdir).unwrap().is_ok());
}

/// The real promtool from `e2e/tools/install.sh`; a missing one fails the test, never skips it.
/// A tiny postings budget spills sorted runs into the block's temporary directory; the index
/// comes out byte for byte the same and nothing is left behind.
#[test]
fn spilled_postings_leave_the_block_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (a, series) = write_block(&dir.path().join("a"), 50, 10, 15_000);
    let mut w = BlockWriter::new(
        dir.path().join("b"),
        BlockWriterOptions {
            postings_budget: 7,
            ..Default::default()
        },
    )
    .unwrap();
    for (l, s) in &series {
        w.add_series(l, s).unwrap();
    }
    let b = w.finish().unwrap();
    let index = |d: &str, u: ulid::Ulid| {
        std::fs::read(dir.path().join(d).join(u.to_string()).join("index")).unwrap()
    };
    assert!(
        index("a", a) == index("b", b),
        "index differs when postings spill"
    );
    let left: Vec<String> = std::fs::read_dir(dir.path().join("b").join(b.to_string()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(left, ["chunks", "index", "meta.json", "tombstones"]);
}

fn promtool() -> PathBuf {
    strata_e2e::tool_path(strata_e2e::Tool::Promtool).unwrap()
}

/// `promtool tsdb analyze` and `promtool tsdb dump` read a block we wrote and see exactly our
/// samples.
#[test]
fn promtool_reads_our_blocks() {
    let promtool = promtool();
    let dir = tempfile::tempdir().unwrap();
    let (id, series) = write_block(dir.path(), 5, 200, 15_000);
    let out = std::process::Command::new(&promtool)
        .args(["tsdb", "analyze"])
        .arg(dir.path())
        .arg(id.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "analyze: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Series: 5"), "{text}");
    // `dump` opens the directory as a read-only TSDB, which wants a (possibly empty) WAL.
    std::fs::create_dir(dir.path().join("wal")).unwrap();
    let out = std::process::Command::new(&promtool)
        .args([
            "tsdb",
            "dump",
            "--min-time=-9223372036854775808",
            "--max-time=9223372036854775807",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5 * 200, "{}", &text[..text.len().min(500)]);
    let (l, s) = &series[0];
    assert!(
        lines
            .iter()
            .any(|x| x.starts_with(&l.to_string())
                && x.ends_with(&format!(" {} {}", s[7].1, s[7].0))),
        "{}",
        lines[0]
    );
}

/// The other direction: blocks written by `promtool tsdb create-blocks-from openmetrics` open,
/// verify and select correctly here, and our writer cuts the same chunks for the same samples.
#[test]
fn we_read_promtool_blocks_and_cut_chunks_alike() {
    let promtool = promtool();
    let dir = tempfile::tempdir().unwrap();
    let start = 1_700_006_400i64; // a multiple of 2 h, in seconds
    let mut om = String::from("# TYPE m gauge\n");
    let mut want: TestSeries = Vec::new();
    for s in 0..3 {
        let mut samples = Vec::new();
        for i in 0..700i64 {
            // Irregular spacing exercises the cut-early prediction.
            let t = start + i * 15 + if i > 300 { i % 7 } else { 0 };
            let v = ((i * (s + 1)) as f64 * 0.37).sin();
            om.push_str(&format!("m{{s=\"{s}\"}} {v:?} {t}\n"));
            samples.push((t * 1000, v));
        }
        want.push((ls(&[("__name__", "m"), ("s", &s.to_string())]), samples));
    }
    om.push_str("# EOF\n");
    let input = dir.path().join("in.om");
    std::fs::write(&input, om).unwrap();
    let out_dir = dir.path().join("blocks");
    let out = std::process::Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut blocks: Vec<Block> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("meta.json").exists())
        .map(|p| Block::open(p).unwrap())
        .collect();
    blocks.sort_by_key(|b| b.meta().min_time);
    assert!(blocks.len() >= 2);
    let mut seen: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 3];
    for b in &blocks {
        let rep = verify(b.dir()).unwrap();
        assert!(rep.is_ok(), "{:?}", rep.problems);
        for s in b
            .select(&[Matcher::equal("__name__", "m")], i64::MIN, i64::MAX)
            .unwrap()
        {
            let s = s.unwrap();
            let i: usize = s.labels.get("s").unwrap().parse().unwrap();
            seen[i].extend(s.samples.iter().map(|x| match x {
                Sample::Float { t, v } => (*t, *v),
                other => panic!("{other:?}"),
            }));
            // Same samples through our chunk cutter give the same chunk boundaries.
            let (_, metas) = b.index().series(s.series_ref).unwrap();
            let theirs: Vec<(i64, i64)> = metas.iter().map(|m| (m.min_time, m.max_time)).collect();
            let in_block: Vec<(i64, f64)> = want[i]
                .1
                .iter()
                .copied()
                .filter(|(t, _)| *t >= b.meta().min_time && *t < b.meta().max_time)
                .collect();
            let ours: Vec<(i64, i64)> = cut_float_chunks(&in_block, DEFAULT_CHUNK_RANGE_MS, 120)
                .unwrap()
                .iter()
                .map(|c| (c.1, c.2))
                .collect();
            assert_eq!(ours, theirs, "series {i} in block {}", b.meta().ulid);
        }
    }
    for (i, (_, w)) in want.iter().enumerate() {
        assert_eq!(&seen[i], w);
    }
}

fn hist(i: u64, extra_bucket: bool) -> Histogram {
    let mut h = Histogram {
        schema: 2,
        zero_threshold: 1e-128,
        count: 3 * i + 2,
        zero_count: i,
        sum: i as f64 * 1.5,
        positive_spans: vec![Span {
            offset: 0,
            length: 2,
        }],
        positive_buckets: vec![i as i64 + 1, 1],
        ..Default::default()
    };
    if extra_bucket {
        h.positive_spans.push(Span {
            offset: 2,
            length: 1,
        });
        h.positive_buckets.push(-1);
        h.count += 1;
    }
    h
}

#[test]
fn histogram_series_are_cut_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let samples: Vec<(i64, Histogram)> = (0..300u64)
        .map(|i| {
            // A counter reset at 150 (counts start over), a new bucket from 200 on.
            let j = if i >= 150 { i - 150 } else { i };
            (i as i64 * 15_000, hist(j, i >= 200))
        })
        .collect();
    let fsamples: Vec<(i64, FloatHistogram)> = (0..50)
        .map(|i| {
            (
                i * 60_000,
                FloatHistogram {
                    counter_reset_hint: CounterResetHint::Gauge,
                    schema: 0,
                    count: (i % 7) as f64,
                    sum: -(i as f64),
                    positive_spans: vec![Span {
                        offset: 1,
                        length: 1,
                    }],
                    positive_buckets: vec![(i % 7) as f64],
                    ..Default::default()
                },
            )
        })
        .collect();
    let mut w = BlockWriter::new(dir.path(), BlockWriterOptions::default()).unwrap();
    w.add_float_histogram_series(&ls(&[("__name__", "gauge_h")]), &fsamples)
        .unwrap();
    w.add_histogram_series(&ls(&[("__name__", "req_h")]), &samples)
        .unwrap();
    let id = w.finish().unwrap();
    let bdir = dir.path().join(id.to_string());
    let rep = verify(&bdir).unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    assert_eq!(rep.num_histogram_samples, 350);

    let b = Block::open(&bdir).unwrap();
    let r = b.index().postings("__name__", "req_h").unwrap()[0];
    let (_, metas) = b.index().series(r).unwrap();
    let starts: Vec<i64> = metas.iter().map(|m| m.min_time / 15_000).collect();
    assert!(
        starts.contains(&150),
        "cut at the counter reset: {starts:?}"
    );
    assert!(
        starts.contains(&200),
        "cut at the layout change: {starts:?}"
    );
    let reset_chunk = metas.iter().find(|m| m.min_time == 150 * 15_000).unwrap();
    let data = b.chunk(reset_chunk.chunk_ref).unwrap();
    assert_eq!(
        crate::chunkenc::chunk_counter_reset_header(data.data()).unwrap(),
        CounterResetHint::CounterReset
    );
    let got = b.series_samples(r, i64::MIN, i64::MAX).unwrap();
    assert_eq!(got.samples.len(), 300);
    for (g, (t, w)) in got.samples.iter().zip(&samples) {
        let Sample::Histogram { t: gt, h } = g else {
            panic!("{g:?}")
        };
        assert_eq!(gt, t);
        let mut h = (**h).clone();
        h.counter_reset_hint = CounterResetHint::Unknown;
        assert_eq!(&h, w);
    }
    let g = b.index().postings("__name__", "gauge_h").unwrap()[0];
    let got = b.series_samples(g, i64::MIN, i64::MAX).unwrap();
    for (g, (t, w)) in got.samples.iter().zip(&fsamples) {
        let Sample::FloatHistogram { t: gt, h } = g else {
            panic!("{g:?}")
        };
        assert_eq!((gt, &**h), (t, w));
    }

    {
        let promtool = promtool();
        std::fs::create_dir(dir.path().join("wal")).unwrap();
        let out = std::process::Command::new(&promtool)
            .args([
                "tsdb",
                "dump",
                "--min-time=-9223372036854775808",
                "--max-time=9223372036854775807",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let req: Vec<&str> = text.lines().filter(|l| l.contains("req_h")).collect();
        let gauge: Vec<&str> = text.lines().filter(|l| l.contains("gauge_h")).collect();
        // promtool's dump loops `for it.Next() == ValFloat {..}`, then the same for float
        // histograms, then histograms: each loop's failing `Next` swallows one sample. So it
        // prints all but the first two integer-histogram and the first float-histogram sample
        // of each series (Prometheus's own block reader sees all of them).
        assert_eq!(
            (req.len(), gauge.len()),
            (298, 49),
            "{:?} {:?}",
            &req[..req.len().min(3)],
            &gauge[..gauge.len().min(3)]
        );
        let out = std::process::Command::new(&promtool)
            .args(["tsdb", "analyze"])
            .arg(dir.path())
            .arg(id.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "analyze: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn writer_takes_a_compaction_section_and_time_range_and_counts_aggregate_windows() {
    use crate::chunkenc::aggr;
    use crate::meta::{BlockDesc, BlockMetaCompaction};
    let tmp = tempfile::tempdir().unwrap();
    let mut w = BlockWriter::new(tmp.path(), BlockWriterOptions::default()).unwrap();
    let parent = ulid::Ulid::from_parts(1, 1);
    w.set_compaction(BlockMetaCompaction {
        level: 3,
        sources: vec![parent],
        parents: vec![BlockDesc {
            ulid: parent,
            min_time: -5,
            max_time: 1_000,
        }],
        ..Default::default()
    });
    w.set_time_range(-5, 1_000);
    // An aggregate chunk of three windows (count sub-chunk) and a counter of five samples.
    let count = Chunk::from_floats(&[(10, 2.0), (20, 2.0), (30, 1.0)]).unwrap();
    let counter =
        Chunk::from_floats(&[(1, 0.0), (10, 1.0), (20, 2.0), (30, 3.0), (30, 3.0)]).unwrap();
    let payload = aggr::encode(&[
        Some((1, count.data().clone())),
        None,
        None,
        None,
        Some((1, counter.data().clone())),
    ]);
    let c = Chunk::from_parts(crate::Encoding::Aggr, payload.into());
    w.add_series_chunks(&ls(&[("__name__", "x")]), vec![(c, 10, 30)])
        .unwrap();
    assert_eq!(w.num_samples(), 3);
    let u = w.finish().unwrap();
    let m = BlockMeta::read_from_dir(&tmp.path().join(u.to_string())).unwrap();
    assert_eq!(m.compaction.level, 3);
    assert_eq!(m.compaction.sources, [parent]);
    assert_eq!(m.compaction.parents.len(), 1);
    assert_eq!((m.min_time, m.max_time), (-5, 1_000));
    assert_eq!(m.stats.num_samples, 3);
    assert_eq!(m.stats.num_float_samples + m.stats.num_histogram_samples, 0);
}
