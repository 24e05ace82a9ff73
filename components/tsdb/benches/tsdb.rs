//! Benchmarks: XOR encode/decode, postings intersection, matcher lookups on a 1M-series index,
//! and writing a 100k-series block. Quick run: `cargo bench -p strata-tsdb -- --quick`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use strata_tsdb::chunkenc::{XorAppender, XorIterator};
use strata_tsdb::chunks::ChunkRef;
use strata_tsdb::index::{self, ChunkMeta, IndexReader, IndexWriter};
use strata_tsdb::source::{ByteSource, MmapSource};
use strata_tsdb::{BlockWriter, BlockWriterOptions, Labels, MatchOp, Matcher};

/// A scrape-like series: 15 s steps with a little jitter, slowly changing gauge values.
fn series(n: usize, seed: u64) -> Vec<(i64, f64)> {
    let mut x = seed | 1;
    (0..n as i64)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (
                1_700_000_000_000 + i * 15_000 + (x % 5) as i64,
                100.0 + ((x >> 20) % 1000) as f64 / 10.0,
            )
        })
        .collect()
}

fn xor(c: &mut Criterion) {
    let chunks: Vec<Vec<(i64, f64)>> = (0..100).map(|s| series(120, s)).collect();
    let total = (chunks.len() * 120) as u64;
    let mut g = c.benchmark_group("xor");
    g.throughput(Throughput::Elements(total));
    g.bench_function("encode_120_samples_x100", |b| {
        b.iter(|| {
            for s in &chunks {
                let mut a = XorAppender::new();
                for &(t, v) in s {
                    a.append(t, v).expect("fits");
                }
                black_box(a.len_bytes());
            }
        })
    });
    let encoded: Vec<Vec<u8>> = chunks
        .iter()
        .map(|s| {
            let mut a = XorAppender::new();
            for &(t, v) in s {
                a.append(t, v).expect("fits");
            }
            a.into_bytes()
        })
        .collect();
    g.bench_function("decode_120_samples_x100", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for e in &encoded {
                for s in XorIterator::new(e) {
                    sum += s.expect("valid").1;
                }
            }
            black_box(sum)
        })
    });
    g.finish();
}

fn postings(c: &mut Criterion) {
    let a: Vec<u64> = (0..2_000_000).step_by(2).collect();
    let b: Vec<u64> = (0..3_000_000).step_by(3).collect();
    let mut g = c.benchmark_group("postings");
    g.throughput(Throughput::Elements((a.len() + b.len()) as u64));
    g.bench_function("intersect_1M_x_1M", |bch| {
        bch.iter(|| black_box(index::intersect(&a, &b).len()))
    });
    g.bench_function("union_1M_x_1M", |bch| {
        bch.iter(|| black_box(index::union_all(&[&a[..], &b[..]]).len()))
    });
    g.bench_function("subtract_1M_x_1M", |bch| {
        bch.iter(|| black_box(index::subtract(&a, &b).len()))
    });
    g.finish();
}

/// Writes a 1M-series index: 100 metric names × 10 000 instances, 10 jobs.
fn big_index(dir: &std::path::Path) -> IndexReader {
    let path = dir.join("index");
    let metrics: Vec<String> = (0..100).map(|i| format!("metric_{i:03}")).collect();
    let hosts: Vec<String> = (0..10_000).map(|i| format!("host-{i:05}")).collect();
    let jobs: Vec<String> = (0..10).map(|i| format!("job-{i}")).collect();
    let mut syms: Vec<&str> = vec!["__name__", "instance", "job"];
    syms.extend(metrics.iter().map(String::as_str));
    syms.extend(hosts.iter().map(String::as_str));
    syms.extend(jobs.iter().map(String::as_str));
    syms.sort_unstable();
    let mut w = IndexWriter::new(&path).expect("create index");
    for s in syms {
        w.add_symbol(s).expect("sorted symbols");
    }
    let mut r = 8u64;
    for m in &metrics {
        for (h, host) in hosts.iter().enumerate() {
            let l = Labels::from_pairs([
                ("__name__", m.as_str()),
                ("instance", host),
                ("job", &jobs[h % 10]),
            ])
            .expect("labels");
            let c = [ChunkMeta {
                min_time: 0,
                max_time: 7_199_999,
                chunk_ref: ChunkRef(r),
            }];
            r += 100;
            w.add_series(&l, &c).expect("sorted series");
        }
    }
    w.finish().expect("finish index");
    let src: Arc<dyn ByteSource> = Arc::new(MmapSource::open(&path).expect("mmap"));
    IndexReader::open(src).expect("open index")
}

fn lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let idx = big_index(dir.path());
    let mut g = c.benchmark_group("index_1M_series");
    g.sample_size(20);
    let cases = [
        (
            "name_and_job",
            vec![
                Matcher::equal("__name__", "metric_042"),
                Matcher::equal("job", "job-3"),
            ],
        ),
        (
            "regex_prefix_and_regex",
            vec![
                Matcher::new(MatchOp::RegexMatch, "__name__", "metric_04.*").expect("regex"),
                Matcher::new(MatchOp::RegexMatch, "instance", "host-0000.*").expect("regex"),
            ],
        ),
        (
            "not_equal_only",
            vec![
                Matcher::equal("__name__", "metric_007"),
                Matcher::new(MatchOp::NotEqual, "job", "job-1").expect("matcher"),
            ],
        ),
    ];
    for (name, ms) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let refs = idx.postings_for_matchers(ms).expect("postings");
                for r in refs.iter().take(1000) {
                    black_box(idx.series(*r).expect("series"));
                }
                refs.len()
            })
        });
    }
    g.bench_function("label_values_instance", |b| {
        b.iter(|| black_box(idx.label_values("instance").expect("values").len()))
    });
    g.finish();
}

fn block_write(c: &mut Criterion) {
    const SERIES: usize = 100_000;
    let samples = series(120, 7);
    let labels: Vec<Labels> = (0..SERIES)
        .map(|i| {
            Labels::from_pairs([
                ("__name__", "bench_metric"),
                ("i", &format!("{i:06}")),
                ("job", "bench"),
            ])
            .expect("labels")
        })
        .collect();
    let mut g = c.benchmark_group("block_write");
    g.sample_size(10);
    g.throughput(Throughput::Elements((SERIES * samples.len()) as u64));
    g.bench_function("100k_series_x_120_samples", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tempdir"),
            |dir| {
                let mut w =
                    BlockWriter::new(dir.path(), BlockWriterOptions::default()).expect("writer");
                for l in &labels {
                    w.add_series(l, &samples).expect("add");
                }
                black_box(w.finish().expect("finish"));
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, xor, postings, lookup, block_write);
criterion_main!(benches);
