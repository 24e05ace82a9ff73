//! `BucketBlock` against the local reader (`strata_tsdb::Block`) and a brute-force matcher
//! oracle, over blocks written with `strata_tsdb::BlockWriter` into an in-memory bucket.

use std::sync::Arc;

use strata_tsdb::chunkenc::{Chunk, Encoding, aggr};
use strata_tsdb::meta::ThanosMeta;
use strata_tsdb::{Block, BlockWriter, BlockWriterOptions, MatchOp, Sample};

use super::tests_support::{upload_dir, write_block_opts};
use super::*;
use crate::cache::{LruCache, NoCache};

fn m(op: MatchOp, n: &str, v: &str) -> Matcher {
    Matcher::new(op, n, v).unwrap()
}

/// Matcher sets covering every shape the planner distinguishes.
fn matcher_sets() -> Vec<Vec<Matcher>> {
    use MatchOp::*;
    vec![
        vec![m(Equal, "__name__", "up")],
        vec![
            m(Equal, "job", "api"),
            m(Equal, "__name__", "requests_total"),
        ],
        vec![m(NotEqual, "job", "api")],
        vec![m(Equal, "__name__", "up"), m(NotEqual, "zone", "z3")],
        vec![m(RegexMatch, "job", "api|web")],
        vec![m(RegexMatch, "instance", "host-00.*")],
        vec![
            m(RegexMatch, "instance", "host-01[0-4].*"),
            m(Equal, "job", "db"),
        ],
        vec![m(RegexNoMatch, "job", "db|cache")],
        vec![
            m(Equal, "__name__", "latency_bucket"),
            m(RegexMatch, "zone", ".*"),
        ],
        vec![m(Equal, "__name__", "latency_bucket"), m(Equal, "zone", "")],
        vec![m(Equal, "job", "web"), m(RegexMatch, "zone", ".+")],
        vec![m(Equal, "missing", "x")],
        vec![m(Equal, "job", "api"), m(NotEqual, "missing", "x")],
        vec![m(Equal, "job", "nope")],
        vec![m(RegexMatch, "job", "nope|also-nope")],
        vec![m(Equal, "__name__", "up"), m(Equal, "job", "db")],
        vec![
            m(RegexMatch, "le", "0\\.1|\\+Inf"),
            m(RegexNoMatch, "instance", ".*7"),
        ],
        vec![m(RegexMatch, "__name__", ".*")],
    ]
}

type Flat = Vec<(Labels, Vec<(i64, f64)>)>;

fn local_select(block: &Block, ms: &[Matcher], mint: i64, maxt: i64) -> Flat {
    block
        .select(ms, mint, maxt)
        .unwrap()
        .map(|s| {
            let s = s.unwrap();
            let samples = s
                .samples
                .into_iter()
                .map(|x| match x {
                    Sample::Float { t, v } => (t, v),
                    other => panic!("unexpected sample {other:?}"),
                })
                .collect();
            (s.labels, samples)
        })
        .collect()
}

fn decode_remote(series: Vec<BlockSeries>, mint: i64, maxt: i64) -> Flat {
    series
        .into_iter()
        .map(|s| {
            let mut samples = Vec::new();
            for c in &s.chunks {
                let raw = c.raw.as_ref().expect("raw chunk");
                let chunk = Chunk::new(raw.encoding, raw.data.clone()).unwrap();
                for x in chunk.samples().unwrap() {
                    if let Sample::Float { t, v } = x
                        && t >= mint
                        && t <= maxt
                    {
                        samples.push((t, v));
                    }
                }
            }
            (s.labels, samples)
        })
        .filter(|(_, s)| !s.is_empty())
        .collect()
}

fn req(ms: &[Matcher], mint: i64, maxt: i64) -> BlockSeriesRequest {
    BlockSeriesRequest {
        matchers: ms.to_vec(),
        min_time: mint,
        max_time: maxt,
        skip_chunks: false,
        aggrs: Vec::new(),
    }
}

async fn open(
    bucket: &Bucket,
    tmp: &tempfile::TempDir,
    ulid: Ulid,
    cache: Arc<dyn IndexCache>,
    opts: BlockOptions,
    stats: &QueryStats,
) -> Result<BucketBlock> {
    let meta = strata_tsdb::BlockMeta::read_from_dir(&tmp.path().join(ulid.to_string())).unwrap();
    BucketBlock::open(
        bucket.clone(),
        Arc::new(meta),
        &tmp.path().join("cache").join(ulid.to_string()),
        cache,
        opts,
        stats,
    )
    .await
}

/// The block opened with no cache and default options.
async fn open_plain(
    bucket: &Bucket,
    tmp: &tempfile::TempDir,
    ulid: Ulid,
    stats: &QueryStats,
) -> BucketBlock {
    open(
        bucket,
        tmp,
        ulid,
        Arc::new(NoCache),
        BlockOptions::default(),
        stats,
    )
    .await
    .unwrap()
}

/// The block opened with no cache and default options, with fresh statistics and an unlimited
/// budget.
async fn open_shared(
    bucket: &Bucket,
    tmp: &tempfile::TempDir,
    ulid: Ulid,
) -> (Arc<BucketBlock>, Arc<QueryStats>, Arc<RequestBudget>) {
    let stats = Arc::new(QueryStats::default());
    let b = open_plain(bucket, tmp, ulid, &stats).await;
    (Arc::new(b), stats, Arc::new(RequestBudget::unlimited()))
}

#[tokio::test]
async fn series_equal_the_local_reader_for_every_matcher_shape() {
    // Small segments: chunks spread over many segment files.
    let (tmp, bucket, ulid) = write_block_opts(600, 16 * 1024, None).await;
    let local = Block::open(tmp.path().join(ulid.to_string())).unwrap();
    assert!(
        local.chunks().num_segments() >= 2,
        "test wants several segments"
    );
    let all_labels: Vec<Labels> = local_select(
        &local,
        &[m(MatchOp::RegexMatch, "__name__", ".+")],
        i64::MIN,
        i64::MAX,
    )
    .into_iter()
    .map(|(l, _)| l)
    .collect();
    assert_eq!(all_labels.len(), 600);
    let stats = QueryStats::default();
    let budget = RequestBudget::unlimited();
    let mut nonempty = 0;
    // Chunk reads fetched whole (what these small merged reads get by default), then streamed.
    for whole_read_max in [BlockOptions::default().whole_read_max, 0] {
        let opts = BlockOptions {
            whole_read_max,
            ..Default::default()
        };
        let b = open(&bucket, &tmp, ulid, Arc::new(NoCache), opts, &stats)
            .await
            .unwrap();
        for ms in matcher_sets() {
            for (mint, maxt) in [
                (i64::MIN, i64::MAX),
                (3_600_000, 7_200_000),
                (14_000_000, 20_000_000),
            ] {
                let want = local_select(&local, &ms, mint, maxt);
                let got = b
                    .series(&req(&ms, mint, maxt), &budget, &stats)
                    .await
                    .unwrap();
                for s in &got {
                    assert!(!s.chunks.is_empty());
                    for c in &s.chunks {
                        assert!(
                            c.max_time >= mint && c.min_time <= maxt,
                            "chunk outside range"
                        );
                    }
                }
                let got = decode_remote(got, mint, maxt);
                assert_eq!(got, want, "matchers {ms:?} range {mint}..{maxt}");
                // Independent oracle: brute-force matching over all labels.
                if mint == i64::MIN {
                    let oracle: Vec<&Labels> = all_labels
                        .iter()
                        .filter(|l| ms.iter().all(|m| m.matches(l.get(&m.name).unwrap_or(""))))
                        .collect();
                    let got_labels: Vec<&Labels> = got.iter().map(|(l, _)| l).collect();
                    assert_eq!(got_labels, oracle, "oracle for {ms:?}");
                    if !oracle.is_empty() {
                        nonempty += 1;
                    }
                }
            }
        }
    }
    assert!(
        nonempty >= 12,
        "most matcher sets select something ({nonempty})"
    );
}

#[tokio::test]
async fn label_names_and_values_match_and_need_no_gets_without_matchers() {
    let (tmp, bucket, ulid) = write_block_opts(300, 64 * 1024, None).await;
    let local = Block::open(tmp.path().join(ulid.to_string())).unwrap();
    let idx = local.index();
    let open_stats = QueryStats::default();
    let b = open_plain(&bucket, &tmp, ulid, &open_stats).await;
    let stats = QueryStats::default();
    assert_eq!(b.label_names(&[], &stats).await.unwrap(), idx.label_names());
    for n in idx.label_names() {
        assert_eq!(
            b.label_values(&n, &[], &stats).await.unwrap(),
            idx.label_values(&n).unwrap()
        );
    }
    assert_eq!(stats.snapshot().get_requests, 0);

    for ms in matcher_sets() {
        let refs = idx.postings_for_matchers(&ms).unwrap();
        let labels: Vec<Labels> = refs.iter().map(|&r| idx.series(r).unwrap().0).collect();
        let mut names: Vec<String> = labels
            .iter()
            .flat_map(|l| l.iter().map(|(n, _)| n.to_string()))
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(b.label_names(&ms, &stats).await.unwrap(), names, "{ms:?}");
        for n in ["job", "zone", "le", "missing"] {
            let mut vals: Vec<String> = labels
                .iter()
                .filter_map(|l| l.get(n).map(str::to_string))
                .collect();
            vals.sort();
            vals.dedup();
            assert_eq!(
                b.label_values(n, &ms, &stats).await.unwrap(),
                vals,
                "{n} {ms:?}"
            );
        }
    }
    assert!(stats.snapshot().get_requests > 0);
}

/// A whole-range query's series and what it cost.
async fn query(b: &BucketBlock, ms: &[Matcher]) -> (Flat, crate::stats::StatsSnapshot) {
    let stats = QueryStats::default();
    let got = b
        .series(
            &req(ms, i64::MIN, i64::MAX),
            &RequestBudget::unlimited(),
            &stats,
        )
        .await
        .unwrap();
    (decode_remote(got, i64::MIN, i64::MAX), stats.snapshot())
}

#[tokio::test]
async fn the_chunk_cache_serves_chunks_read_before_and_reads_only_the_others() {
    let (tmp, bucket, ulid) = write_block_opts(300, 16 * 1024, None).await;
    let with_cache = |chunk_cache: Arc<LruCache>| BlockOptions {
        chunk_cache: Some(chunk_cache),
        ..Default::default()
    };
    let chunks = Arc::new(LruCache::chunks(64 * 1024 * 1024));
    let setup = QueryStats::default();
    // The index cache keeps postings and series entries: what is left to read is chunks.
    let index = Arc::new(LruCache::new(64 * 1024 * 1024));
    let b = open(
        &bucket,
        &tmp,
        ulid,
        index,
        with_cache(chunks.clone()),
        &setup,
    )
    .await
    .unwrap();
    let plain = open_plain(&bucket, &tmp, ulid, &setup).await;
    let some = [m(MatchOp::Equal, "job", "db")];
    let all = [m(MatchOp::RegexMatch, "__name__", ".+")];

    let (first, s1) = query(&b, &some).await;
    assert!(!first.is_empty());
    assert!(s1.get_requests > 0);
    assert!(!chunks.is_empty());
    // The same query again: every chunk from the cache, the same answer.
    let (again, s2) = query(&b, &some).await;
    assert_eq!(again, first);
    assert_eq!(s2.get_requests, 0, "{s2:?}");
    // A wider query reads only the chunks it has not seen, and answers as without a cache.
    let (wide, s3) = query(&b, &all).await;
    let (want, s_plain) = query(&plain, &all).await;
    assert_eq!(wide, want);
    assert!(s3.get_bytes < s_plain.get_bytes, "{s3:?} vs {s_plain:?}");
    // A cache too small to keep anything: the right answer, read from the bucket.
    let tiny = open(
        &bucket,
        &tmp,
        ulid,
        Arc::new(NoCache),
        with_cache(Arc::new(LruCache::chunks(16))),
        &setup,
    )
    .await
    .unwrap();
    assert_eq!(query(&tiny, &some).await.0, first);
    assert_eq!(query(&tiny, &some).await.0, first);
}

#[tokio::test]
async fn merged_reads_need_far_fewer_gets_than_naive() {
    let (tmp, bucket, ulid) = write_block_opts(900, 32 * 1024, None).await;
    let setup = QueryStats::default();
    let merged = open_plain(&bucket, &tmp, ulid, &setup).await;
    let naive_opts = BlockOptions {
        naive: true,
        ..Default::default()
    };
    let naive = open(&bucket, &tmp, ulid, Arc::new(NoCache), naive_opts, &setup)
        .await
        .unwrap();
    let budget = RequestBudget::unlimited();
    for ms in [
        vec![m(MatchOp::Equal, "job", "api")],
        vec![m(MatchOp::RegexMatch, "instance", "host-00.*")],
        vec![
            m(MatchOp::Equal, "__name__", "up"),
            m(MatchOp::NotEqual, "zone", "z1"),
        ],
    ] {
        let (sm, sn) = (QueryStats::default(), QueryStats::default());
        let a = merged
            .series(&req(&ms, i64::MIN, i64::MAX), &budget, &sm)
            .await
            .unwrap();
        let b = naive
            .series(&req(&ms, i64::MIN, i64::MAX), &budget, &sn)
            .await
            .unwrap();
        assert_eq!(a, b, "{ms:?}");
        let (sm, sn) = (sm.snapshot(), sn.snapshot());
        eprintln!(
            "{ms:?}: merged {} GETs {} B, naive {} GETs {} B ({} postings, {} series, {} chunks)",
            sm.get_requests,
            sm.get_bytes,
            sn.get_requests,
            sn.get_bytes,
            sn.postings_touched,
            sn.series_touched,
            sn.chunks_touched
        );
        assert!(sm.get_requests > 0);
        assert!(
            sn.get_requests >= 10 * sm.get_requests,
            "{ms:?}: naive {} GETs vs merged {}",
            sn.get_requests,
            sm.get_requests
        );
        // Naive: at least one GET per postings list, series and chunk.
        assert!(sn.get_requests >= sn.postings_touched + sn.series_touched + sn.chunks_touched);
    }
}

#[tokio::test]
async fn selective_queries_read_only_the_smallest_postings_list() {
    let (tmp, bucket, ulid) = write_block_opts(900, 32 * 1024, None).await;
    let setup = QueryStats::default();
    let block = open_plain(&bucket, &tmp, ulid, &setup).await;
    let naive_opts = BlockOptions {
        naive: true,
        ..Default::default()
    };
    let naive = open(&bucket, &tmp, ulid, Arc::new(NoCache), naive_opts, &setup)
        .await
        .unwrap();
    let local = Block::open(tmp.path().join(ulid.to_string())).unwrap();
    let budget = RequestBudget::unlimited();
    let ms = vec![
        m(MatchOp::Equal, "job", "api"),
        m(MatchOp::Equal, "instance", "host-0008"),
        m(MatchOp::NotEqual, "zone", "z1"),
        m(MatchOp::RegexMatch, "__name__", "up|latency_bucket"),
    ];
    let (lazy, full) = (QueryStats::default(), QueryStats::default());
    let a = block
        .series(&req(&ms, i64::MIN, i64::MAX), &budget, &lazy)
        .await
        .unwrap();
    let b = naive
        .series(&req(&ms, i64::MIN, i64::MAX), &budget, &full)
        .await
        .unwrap();
    assert_eq!(a, b, "lazy postings give the same answer");
    let want = local_select(&local, &ms, i64::MIN, i64::MAX);
    assert!(!want.is_empty(), "the query selects something");
    assert_eq!(decode_remote(a, i64::MIN, i64::MAX), want);
    let (lazy, full) = (lazy.snapshot(), full.snapshot());
    assert_eq!(lazy.postings_touched, 1, "only instance=host-0008 is read");
    assert!(full.postings_touched >= 4, "{full:?}");
    // The other matchers still apply: the labels check removed candidates.
    assert!(lazy.series_touched == 3, "host-0008 has 3 series: {lazy:?}");
}

#[tokio::test]
async fn reopening_over_an_existing_index_header_needs_no_gets() {
    let (tmp, bucket, ulid) = write_block_opts(100, 64 * 1024, None).await;
    let first = QueryStats::default();
    open_plain(&bucket, &tmp, ulid, &first).await;
    assert_eq!(first.snapshot().get_requests, 3);
    let second = QueryStats::default();
    let b = open_plain(&bucket, &tmp, ulid, &second).await;
    assert_eq!(second.snapshot().get_requests, 0);
    assert!(b.memory_bytes() > 0);
}

#[tokio::test]
async fn cache_serves_postings_and_series_on_repeat() {
    let (tmp, bucket, ulid) = write_block_opts(300, 64 * 1024, None).await;
    let cache = Arc::new(LruCache::new(64 << 20));
    let setup = QueryStats::default();
    let b = open(
        &bucket,
        &tmp,
        ulid,
        cache.clone(),
        BlockOptions::default(),
        &setup,
    )
    .await
    .unwrap();
    let budget = RequestBudget::unlimited();
    let ms = vec![
        m(MatchOp::Equal, "job", "db"),
        m(MatchOp::RegexMatch, "zone", "z1|z2"),
    ];
    let (s1, s2) = (QueryStats::default(), QueryStats::default());
    let a = b
        .series(&req(&ms, i64::MIN, i64::MAX), &budget, &s1)
        .await
        .unwrap();
    let c = b
        .series(&req(&ms, i64::MIN, i64::MAX), &budget, &s2)
        .await
        .unwrap();
    assert_eq!(a, c);
    let (s1, s2) = (s1.snapshot(), s2.snapshot());
    assert_eq!(s1.cache_hits, 0);
    assert_eq!(s2.cache_misses, 0);
    assert_eq!(s2.cache_hits, s2.postings_touched + s2.series_touched);
    assert!(
        s2.get_requests < s1.get_requests,
        "index reads served from cache"
    );
    assert!(!cache.is_empty());
}

#[tokio::test]
async fn limits_and_skip_chunks() {
    let (tmp, bucket, ulid) = write_block_opts(200, 64 * 1024, None).await;
    let setup = QueryStats::default();
    let b = open_plain(&bucket, &tmp, ulid, &setup).await;
    let ms = vec![m(MatchOp::Equal, "job", "api")];
    let e = b
        .series(
            &req(&ms, i64::MIN, i64::MAX),
            &RequestBudget::new(10, 0, 0),
            &QueryStats::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                limit: "series",
                ..
            }
        ),
        "{e}"
    );
    let e = b
        .series(
            &req(&ms, i64::MIN, i64::MAX),
            &RequestBudget::new(0, 1000, 0),
            &QueryStats::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LimitExceeded {
                limit: "samples",
                ..
            }
        ),
        "{e}"
    );
    let bytes_stats = QueryStats::default();
    let e = b
        .series(
            &req(&ms, i64::MIN, i64::MAX),
            &RequestBudget::new(0, 0, 100),
            &bytes_stats,
        )
        .await
        .unwrap_err();
    assert_eq!(
        bytes_stats.snapshot().get_requests,
        0,
        "refused before the GET"
    );
    assert!(
        matches!(e, Error::LimitExceeded { limit: "bytes", .. }),
        "{e}"
    );

    let mut r = req(&ms, i64::MIN, i64::MAX);
    r.skip_chunks = true;
    let stats = QueryStats::default();
    let got = b
        .series(&r, &RequestBudget::unlimited(), &stats)
        .await
        .unwrap();
    assert_eq!(got.len(), 50);
    assert!(got.iter().all(|s| s.chunks.is_empty()));
    assert_eq!(stats.snapshot().chunks_touched, 0);
    let full = QueryStats::default();
    b.series(
        &req(&ms, i64::MIN, i64::MAX),
        &RequestBudget::unlimited(),
        &full,
    )
    .await
    .unwrap();
    assert!(full.snapshot().get_requests > stats.snapshot().get_requests);
}

#[tokio::test]
async fn a_corrupt_index_is_a_clean_error_naming_the_block() {
    let (tmp, bucket, ulid) = write_block_opts(200, 64 * 1024, None).await;
    let index = std::fs::read(tmp.path().join(ulid.to_string()).join("index")).unwrap();
    let local = Block::open(tmp.path().join(ulid.to_string())).unwrap();
    let toc = local.index().toc();
    let ms = vec![m(MatchOp::Equal, "job", "api")];
    let refs = local.index().postings_for_matchers(&ms).unwrap();
    let api_list = local
        .index()
        .postings_ranges()
        .unwrap()
        .into_iter()
        .find(|(n, v, _, _)| n == "job" && v == "api")
        .unwrap()
        .2;
    let mut errors = 0;
    // Flips in bytes the query reads: the symbol table, two series entries, the postings
    // list, the offset table and the TOC.
    let spots = [
        toc.symbols + 9,
        refs[0] * 16 + 3,
        refs[refs.len() / 2] * 16 + 5,
        api_list + 10,
        toc.postings_offset_table + 30,
        index.len() as u64 - 10,
    ];
    for at in spots {
        let mut b = index.clone();
        b[at as usize] ^= 0x55;
        bucket
            .put(&format!("{ulid}/index"), Bytes::from(b))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let meta = local.meta().clone();
        let stats = QueryStats::default();
        let res = match BucketBlock::open(
            bucket.clone(),
            Arc::new(meta),
            dir.path(),
            Arc::new(NoCache),
            BlockOptions::default(),
            &stats,
        )
        .await
        {
            Ok(blk) => blk
                .series(
                    &req(&ms, i64::MIN, i64::MAX),
                    &RequestBudget::unlimited(),
                    &stats,
                )
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            errors += 1;
            assert!(
                e.to_string().contains(&ulid.to_string()),
                "error names the block: {e}"
            );
        }
    }
    assert_eq!(errors, spots.len(), "every corruption is detected");
}

#[tokio::test]
async fn downsampled_blocks_answer_with_the_requested_aggregates() {
    let tmp = tempfile::tempdir().unwrap();
    let thanos = ThanosMeta::new(Default::default(), "compactor", 300_000);
    let opts = BlockWriterOptions {
        thanos: Some(thanos),
        ..Default::default()
    };
    let mut w = BlockWriter::new(tmp.path(), opts).unwrap();
    let mut expect = Vec::new();
    for i in 0..20 {
        let l = Labels::from_pairs([("__name__", "x"), ("i", &format!("{i:02}"))]).unwrap();
        let count = Chunk::from_floats(&[(0, 10.0), (300_000, 10.0 + i as f64)]).unwrap();
        let sum = Chunk::from_floats(&[(0, 1.5 * i as f64), (300_000, 2.0)]).unwrap();
        let max = Chunk::from_floats(&[(0, 9.0), (300_000, i as f64)]).unwrap();
        let subs = [
            Some((1, count.data().clone())),
            Some((1, sum.data().clone())),
            None,
            Some((1, max.data().clone())),
            None,
        ];
        let data = Bytes::from(aggr::encode(&subs));
        w.add_series_chunks(
            &l,
            vec![(Chunk::from_parts(Encoding::Aggr, data), 0, 300_000)],
        )
        .unwrap();
        expect.push((l, subs));
    }
    let ulid = w.finish().unwrap();
    let bucket = Bucket::in_memory();
    upload_dir(&bucket, &tmp.path().join(ulid.to_string()), ulid).await;
    let (b, stats, budget) = open_shared(&bucket, &tmp, ulid).await;
    let mut r = req(&[m(MatchOp::Equal, "__name__", "x")], 0, 1_000_000);
    let got = b.series(&r, &budget, &stats).await.unwrap();
    assert_eq!(got.len(), 20);
    for (s, (l, subs)) in got.iter().zip(&expect) {
        assert_eq!(&s.labels, l);
        let c = &s.chunks[0];
        assert!(c.raw.is_none());
        assert_eq!(
            c.aggrs[0].as_ref().map(|c| &c.data),
            subs[0].as_ref().map(|s| &s.1)
        );
        assert_eq!(
            c.aggrs[1].as_ref().map(|c| &c.data),
            subs[1].as_ref().map(|s| &s.1)
        );
        assert!(c.aggrs[3].is_none(), "max not requested");
    }
    r.aggrs = vec![Aggr::Max, Aggr::Min];
    let got = b.series(&r, &budget, &stats).await.unwrap();
    for (s, (_, subs)) in got.iter().zip(&expect) {
        let c = &s.chunks[0];
        assert!(c.aggrs[0].is_none() && c.aggrs[1].is_none());
        assert!(c.aggrs[2].is_none(), "min absent in the block");
        let max = c.aggrs[3].as_ref().unwrap();
        assert_eq!(max.encoding, 1);
        assert_eq!(Some(&max.data), subs[3].as_ref().map(|s| &s.1));
    }
}

#[tokio::test]
async fn a_promtool_block_reads_like_the_local_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let ulid = super::tests_support::promtool_block(tmp.path());
    let bucket = Bucket::in_memory();
    upload_dir(&bucket, &tmp.path().join(ulid.to_string()), ulid).await;
    let local = Block::open(tmp.path().join(ulid.to_string())).unwrap();
    let (b, stats, budget) = open_shared(&bucket, &tmp, ulid).await;
    use MatchOp::*;
    let sets = vec![
        vec![m(Equal, "__name__", "temp")],
        vec![m(RegexMatch, "room", "r0.*"), m(NotEqual, "floor", "2")],
        vec![
            m(Equal, "__name__", "hits_total"),
            m(RegexMatch, "path", "/p1|/p7"),
        ],
        vec![m(Equal, "floor", ""), m(RegexMatch, "__name__", ".+")],
        vec![m(RegexNoMatch, "__name__", "temp")],
    ];
    for ms in sets {
        let want = local_select(&local, &ms, i64::MIN, i64::MAX);
        assert!(!want.is_empty(), "{ms:?}");
        let got = b
            .series(&req(&ms, i64::MIN, i64::MAX), &budget, &stats)
            .await
            .unwrap();
        assert!(
            got.iter().any(|s| s.chunks.len() > 1),
            "several chunks per series"
        );
        assert_eq!(decode_remote(got, i64::MIN, i64::MAX), want, "{ms:?}");
    }
    assert_eq!(
        b.label_names(&[], &stats).await.unwrap(),
        local.index().label_names()
    );
}

mod proptests {
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;

    struct Fixture {
        rt: tokio::runtime::Runtime,
        _tmp: tempfile::TempDir,
        local: Block,
        all: Vec<Labels>,
        block: BucketBlock,
    }

    fn fixture() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let (tmp, block) = rt.block_on(async {
                let (tmp, bucket, ulid) = write_block_opts(240, 16 * 1024, None).await;
                let stats = QueryStats::default();
                let cache = Arc::new(LruCache::new(1 << 20));
                let b = open(&bucket, &tmp, ulid, cache, BlockOptions::default(), &stats)
                    .await
                    .unwrap();
                (tmp, b)
            });
            let local = Block::open(tmp.path().join(block.meta().ulid.to_string())).unwrap();
            let all = local_select(
                &local,
                &[m(MatchOp::RegexMatch, "__name__", ".+")],
                i64::MIN,
                i64::MAX,
            )
            .into_iter()
            .map(|(l, _)| l)
            .collect();
            Fixture {
                rt,
                _tmp: tmp,
                local,
                all,
                block,
            }
        })
    }

    fn matcher() -> impl Strategy<Value = Matcher> {
        let names =
            prop::sample::select(vec!["__name__", "job", "zone", "le", "instance", "missing"]);
        let ops = prop::sample::select(vec![
            MatchOp::Equal,
            MatchOp::NotEqual,
            MatchOp::RegexMatch,
            MatchOp::RegexNoMatch,
        ]);
        let values = prop::sample::select(vec![
            "",
            "up",
            "api",
            "db",
            "z1",
            "z1|z3",
            ".*",
            ".+",
            "host-00.*",
            "0\\.1",
            "nope",
            "db|web",
            "host-0012",
            "z.*",
            "latency_bucket|up",
        ]);
        (ops, names, values).prop_map(|(op, n, v)| Matcher::new(op, n, v).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn random_matcher_sets_match_the_local_reader_and_the_oracle(
            ms in prop::collection::vec(matcher(), 1..4),
            mint in prop::sample::select(vec![i64::MIN, 0, 5_000_000]),
        ) {
            let f = fixture();
            let maxt = i64::MAX;
            let got = f.rt.block_on(f.block.series(&req(&ms, mint, maxt), &RequestBudget::unlimited(), &QueryStats::default())).unwrap();
            let got = decode_remote(got, mint, maxt);
            prop_assert_eq!(&got, &local_select(&f.local, &ms, mint, maxt));
            if mint == i64::MIN {
                let oracle: Vec<&Labels> = f.all.iter()
                    .filter(|l| ms.iter().all(|m| m.matches(l.get(&m.name).unwrap_or(""))))
                    .collect();
                prop_assert_eq!(got.iter().map(|(l, _)| l).collect::<Vec<_>>(), oracle);
            }
        }
    }
}

/// A block downsampled by the real Thanos (`thanos tools bucket downsample`): its aggregate
/// chunks decode, and their totals agree with the raw block's samples.
#[tokio::test]
async fn a_thanos_downsampled_block_answers_with_consistent_aggregates() {
    use std::process::Command;
    use std::time::Duration;

    use strata_e2e::{Process, Tool, free_port, tool_path, wait_until};

    let tmp = tempfile::tempdir().unwrap();
    // 42 h of 1-minute samples inside one 54 h-aligned range: one block Thanos will downsample.
    let range = 54 * 3600;
    let start = (1_699_920_000 / range + 1) * range;
    let mut om = String::from("# HELP g a gauge\n# TYPE g gauge\n");
    for i in 0..3 {
        for t in (0..42 * 3600).step_by(60) {
            om.push_str(&format!(
                "g{{i=\"{i}\"}} {} {}\n",
                (i * 13 + t) % 97,
                start + t
            ));
        }
    }
    om.push_str("# EOF\n");
    let input = tmp.path().join("in.om");
    std::fs::write(&input, om).unwrap();
    let bucket_dir = tmp.path().join("bucket");
    let o = strata_e2e::promtool(&[
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        "--max-block-duration=54h",
        input.to_str().unwrap(),
        bucket_dir.to_str().unwrap(),
    ])
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let raw_ulid: Ulid = std::fs::read_dir(&bucket_dir)
        .unwrap()
        .find_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
        .unwrap();
    let raw_dir = bucket_dir.join(raw_ulid.to_string());
    // Thanos refuses blocks without external labels.
    let mut meta = strata_tsdb::BlockMeta::read_from_dir(&raw_dir).unwrap();
    let labels = [("replica".to_string(), "a".to_string())]
        .into_iter()
        .collect();
    meta.thanos = Some(ThanosMeta::new(labels, "sidecar", 0));
    meta.write_to_dir(&raw_dir).unwrap();

    let mut cmd = Command::new(tool_path(Tool::Thanos).unwrap());
    cmd.args(["tools", "bucket", "downsample"])
        .arg(format!(
            "--data-dir={}",
            tmp.path().join("ds-data").display()
        ))
        .arg(format!(
            "--objstore.config=type: FILESYSTEM\nconfig:\n  directory: {}\n",
            bucket_dir.display()
        ))
        .arg(format!("--http-address=127.0.0.1:{}", free_port()));
    let mut thanos = Process::spawn("thanos-downsample", cmd).unwrap();
    let dir = bucket_dir.clone();
    let ds_ulid = wait_until("a 5m downsampled block", Duration::from_secs(90), || {
        let found = std::fs::read_dir(&dir).ok().and_then(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<Ulid>().ok())
                .filter(|u| *u != raw_ulid)
                .find(|u| {
                    strata_tsdb::BlockMeta::read_from_dir(&dir.join(u.to_string()))
                        .ok()
                        .and_then(|m| m.thanos)
                        .is_some_and(|t| t.downsample.resolution == 300_000)
                })
        });
        async move { found }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", thanos.log_tail()));
    thanos.kill();

    let bucket = Bucket::in_memory();
    let ds_dir = bucket_dir.join(ds_ulid.to_string());
    upload_dir(&bucket, &ds_dir, ds_ulid).await;
    let meta = strata_tsdb::BlockMeta::read_from_dir(&ds_dir).unwrap();
    let stats = QueryStats::default();
    let b = BucketBlock::open(
        bucket,
        Arc::new(meta),
        &tmp.path().join("cache"),
        Arc::new(NoCache),
        BlockOptions::default(),
        &stats,
    )
    .await
    .unwrap();
    let all = [Aggr::Count, Aggr::Sum, Aggr::Min, Aggr::Max, Aggr::Counter];
    let mut r = req(&[m(MatchOp::Equal, "__name__", "g")], i64::MIN, i64::MAX);
    r.aggrs = all.to_vec();
    let got = b
        .series(&r, &RequestBudget::unlimited(), &stats)
        .await
        .unwrap();
    let raw = Block::open(&raw_dir).unwrap();
    let want = local_select(
        &raw,
        &[m(MatchOp::Equal, "__name__", "g")],
        i64::MIN,
        i64::MAX,
    );
    assert_eq!(got.len(), want.len());
    let values = |c: &Option<ChunkBytes>| -> Vec<f64> {
        let c = c.as_ref().expect("aggregate present");
        assert_eq!(c.encoding, 1, "XOR sub-chunk");
        Chunk::new(c.encoding, c.data.clone())
            .unwrap()
            .samples()
            .unwrap()
            .into_iter()
            .map(|s| match s {
                Sample::Float { v, .. } => v,
                other => panic!("{other:?}"),
            })
            .collect()
    };
    for (s, (labels, samples)) in got.iter().zip(&want) {
        assert_eq!(&s.labels, labels);
        assert!(!s.chunks.is_empty());
        let (mut count, mut sum, mut min, mut max) = (0.0, 0.0, f64::MAX, f64::MIN);
        for c in &s.chunks {
            assert!(c.raw.is_none());
            count += values(&c.aggrs[Aggr::Count as usize]).iter().sum::<f64>();
            sum += values(&c.aggrs[Aggr::Sum as usize]).iter().sum::<f64>();
            min = values(&c.aggrs[Aggr::Min as usize])
                .into_iter()
                .fold(min, f64::min);
            max = values(&c.aggrs[Aggr::Max as usize])
                .into_iter()
                .fold(max, f64::max);
            assert!(!values(&c.aggrs[Aggr::Counter as usize]).is_empty());
        }
        let raw_sum: f64 = samples.iter().map(|s| s.1).sum();
        assert_eq!(count as usize, samples.len(), "{labels}");
        assert!(
            (sum - raw_sum).abs() < 1e-6 * raw_sum.abs().max(1.0),
            "{labels}: {sum} vs {raw_sum}"
        );
        assert_eq!(min, samples.iter().map(|s| s.1).fold(f64::MAX, f64::min));
        assert_eq!(max, samples.iter().map(|s| s.1).fold(f64::MIN, f64::max));
    }
}

/// Estimates that are too small (a stale or wrong `index_stats`) cost extra GETs, never wrong
/// answers: short series entries and chunks are read again, exactly.
#[tokio::test]
async fn short_estimates_are_read_again() {
    let (tmp, bucket, ulid) = write_block_opts(200, 16 * 1024, None).await;
    let bucket2 = bucket.clone();
    let local = Block::open(tmp.path().join(ulid.to_string())).unwrap();
    let mut meta = local.meta().clone();
    let mut thanos = ThanosMeta::new(Default::default(), "test", 0);
    thanos.index_stats = Some(strata_tsdb::meta::IndexStats {
        series_max_size: 12,
        chunk_max_size: 3,
    });
    meta.thanos = Some(thanos);
    let stats = QueryStats::default();
    let dir = tempfile::tempdir().unwrap();
    let b = BucketBlock::open(
        bucket,
        Arc::new(meta),
        dir.path(),
        Arc::new(NoCache),
        BlockOptions::default(),
        &stats,
    )
    .await
    .unwrap();
    for ms in matcher_sets() {
        let want = local_select(&local, &ms, i64::MIN, i64::MAX);
        let s = QueryStats::default();
        let got = b
            .series(
                &req(&ms, i64::MIN, i64::MAX),
                &RequestBudget::unlimited(),
                &s,
            )
            .await
            .unwrap();
        assert_eq!(decode_remote(got, i64::MIN, i64::MAX), want, "{ms:?}");
        if !want.is_empty() {
            // Postings in one merged GET, then entries and chunks twice: estimate, exact.
            let s = s.snapshot();
            assert!(s.get_requests >= 5, "{ms:?}: {s:?}");
        }
    }
    // The same query with the default estimate needs fewer GETs.
    let ms = vec![m(MatchOp::Equal, "job", "api")];
    let (short, full) = (QueryStats::default(), QueryStats::default());
    b.series(
        &req(&ms, i64::MIN, i64::MAX),
        &RequestBudget::unlimited(),
        &short,
    )
    .await
    .unwrap();
    let dflt = open_plain(&bucket2, &tmp, ulid, &full).await;
    let before = full.snapshot().get_requests;
    dflt.series(
        &req(&ms, i64::MIN, i64::MAX),
        &RequestBudget::unlimited(),
        &full,
    )
    .await
    .unwrap();
    assert!(short.snapshot().get_requests > full.snapshot().get_requests - before);
}

#[tokio::test]
async fn a_large_read_is_cut_up_while_the_series_are_taken() {
    // Over 2 MiB of chunks in one segment file of a filesystem bucket: one merged read,
    // streamed a MiB at a time.
    let (tmp, _, ulid) = write_block_opts(6000, 1 << 30, None).await;
    let local = Block::open(tmp.path().join(ulid.to_string())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "type: FILESYSTEM\nconfig:\n  directory: {}\n",
        dir.path().display()
    );
    let fs =
        Bucket::from_config(&strata_objstore::BucketConfig::parse(&yaml, "test").unwrap()).unwrap();
    upload_dir(&fs, &tmp.path().join(ulid.to_string()), ulid).await;
    let (b, stats, budget) = open_shared(&fs, &tmp, ulid).await;
    let ms = vec![m(MatchOp::RegexMatch, "__name__", ".+")];
    let planned = b
        .plan_series(&req(&ms, i64::MIN, i64::MAX), &budget, &stats)
        .await
        .unwrap();
    let (gets, bytes) = (
        stats.get_requests.load(Relaxed),
        stats.get_bytes.load(Relaxed),
    );
    let mut stream = planned.into_stream(budget.clone(), stats.clone());
    let first = stream.next().await.unwrap().unwrap();
    let at_first = stats.get_bytes.load(Relaxed) - bytes;
    let mut got = vec![first];
    got.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    let total = stats.get_bytes.load(Relaxed) - bytes;
    assert!(
        total > 2 << 20,
        "the test wants a large read ({total} bytes)"
    );
    assert_eq!(stats.get_requests.load(Relaxed) - gets, 1, "one GET");
    // Read whole (whole_read_max above the read), this is every byte.
    assert!(
        at_first <= 1 << 20,
        "the first series came after {at_first} of {total} bytes"
    );
    assert_eq!(
        decode_remote(got, i64::MIN, i64::MAX),
        local_select(&local, &ms, i64::MIN, i64::MAX)
    );
}

/// Reads opened ahead are counted as GETs when sent: a call that stops after its first series
/// (a cancelled client) still reports the reads it had in flight.
#[tokio::test]
async fn reads_opened_ahead_count_even_when_the_call_stops_early() {
    // Small segment files: one merged read per segment.
    let (tmp, bucket, ulid) = write_block_opts(2000, 64 * 1024, None).await;
    let (b, stats, budget) = open_shared(&bucket, &tmp, ulid).await;
    let ms = vec![m(MatchOp::RegexMatch, "__name__", ".+")];
    let plan = |stats: &Arc<QueryStats>| {
        let (b, budget, stats, ms) = (b.clone(), budget.clone(), stats.clone(), ms.clone());
        async move {
            b.plan_series(&req(&ms, i64::MIN, i64::MAX), &budget, &stats)
                .await
                .unwrap()
        }
    };
    // The whole answer: one GET per segment.
    let planned = plan(&stats).await;
    let before = stats.get_requests.load(Relaxed);
    let all: Vec<_> = planned
        .into_stream(budget.clone(), stats.clone())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 2000);
    let reads = stats.get_requests.load(Relaxed) - before;
    assert!(reads > 1 + reader::READ_AHEAD as u64, "{reads} reads");
    // Stopped after the first series: the first read and those opened ahead of it.
    let early = Arc::new(QueryStats::default());
    let planned = plan(&early).await;
    let before = early.get_requests.load(Relaxed);
    let mut stream = planned.into_stream(budget.clone(), early.clone());
    stream.next().await.unwrap().unwrap();
    drop(stream);
    assert_eq!(
        early.get_requests.load(Relaxed) - before,
        1 + reader::READ_AHEAD as u64
    );
}
