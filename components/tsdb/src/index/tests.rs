//! Index write → read round trips, matcher semantics and corrupt-input handling.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::chunks::ChunkRef;
use crate::labels::Labels;
use crate::matcher::{MatchOp, Matcher};
use crate::source::{ByteSource, BytesSource};

/// Writes `series` (sorted here) into an in-memory index.
fn build(series: &[Labels]) -> (Vec<u8>, Vec<Labels>) {
    let (bytes, sorted, _) = build_with_budget(series, DEFAULT_POSTINGS_BUDGET);
    (bytes, sorted)
}

/// [`build`] with a postings budget; also returns how many runs were spilled.
fn build_with_budget(series: &[Labels], budget: usize) -> (Vec<u8>, Vec<Labels>, usize) {
    let mut sorted: Vec<Labels> = series.to_vec();
    sorted.sort();
    sorted.dedup();
    let syms: BTreeSet<String> = sorted
        .iter()
        .flat_map(|l| l.iter().flat_map(|(n, v)| [n.to_string(), v.to_string()]))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    let mut w = IndexWriter::with_postings_budget(&path, budget).unwrap();
    for s in &syms {
        w.add_symbol(s).unwrap();
    }
    for (i, l) in sorted.iter().enumerate() {
        let i = i as i64;
        let chunks = [
            ChunkMeta {
                min_time: i * 100,
                max_time: i * 100 + 50,
                chunk_ref: ChunkRef(1000 + i as u64 * 64),
            },
            ChunkMeta {
                min_time: i * 100 + 51,
                max_time: i * 100 + 99,
                chunk_ref: ChunkRef(1000 + i as u64 * 64 + 32),
            },
        ];
        w.add_series(l, &chunks).unwrap();
    }
    let runs = w.postings_runs();
    w.finish().unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the index is left: {left:?}");
    (std::fs::read(&path).unwrap(), sorted, runs)
}

fn open(bytes: Vec<u8>) -> crate::Result<IndexReader> {
    let src: Arc<dyn ByteSource> = Arc::new(BytesSource::new("index", bytes));
    IndexReader::open(src)
}

fn ls(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied()).unwrap()
}

fn sample_series() -> Vec<Labels> {
    vec![
        ls(&[("__name__", "up"), ("job", "a"), ("instance", "1")]),
        ls(&[("__name__", "up"), ("job", "b"), ("instance", "2")]),
        ls(&[
            ("__name__", "up"),
            ("job", "foo"),
            ("instance", "3"),
            ("env", "prod"),
        ]),
        ls(&[("__name__", "http"), ("job", "foobar"), ("code", "200")]),
        ls(&[("__name__", "http"), ("code", "500")]),
    ]
}

/// What a matcher set selects, computed naively over label sets.
fn naive(series: &[Labels], ms: &[Matcher]) -> Vec<usize> {
    series
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            !ms.is_empty() && ms.iter().all(|m| m.matches(l.get(&m.name).unwrap_or("")))
        })
        .map(|(i, _)| i)
        .collect()
}

fn select(r: &IndexReader, sorted: &[Labels], ms: &[Matcher]) -> Vec<usize> {
    let refs = r.postings_for_matchers(ms).unwrap();
    refs.into_iter()
        .map(|sr| {
            let (l, _) = r.series(sr).unwrap();
            sorted.iter().position(|x| *x == l).unwrap()
        })
        .collect()
}

#[test]
fn roundtrip_lookups() {
    let (bytes, sorted) = build(&sample_series());
    let r = open(bytes).unwrap();
    assert_eq!(
        r.label_names(),
        ["__name__", "code", "env", "instance", "job"]
    );
    assert_eq!(r.label_values("job").unwrap(), ["a", "b", "foo", "foobar"]);
    assert!(r.label_values("nope").unwrap().is_empty());
    let all = r.all_postings().unwrap();
    assert_eq!(all.len(), sorted.len());
    for (i, sr) in all.iter().enumerate() {
        let (l, c) = r.series(*sr).unwrap();
        assert_eq!(l, sorted[i]);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].min_time, i as i64 * 100 + 51);
        assert_eq!(c[1].chunk_ref, ChunkRef(1000 + i as u64 * 64 + 32));
    }
    assert_eq!(r.postings("job", "b").unwrap().len(), 1);
    assert!(r.postings("job", "zzz").unwrap().is_empty());
    assert_eq!(r.check_label_indices().unwrap(), 5);
    // Postings lists are contiguous and the last one ends where the postings offset table
    // starts (Thanos's index-header relies on it).
    let mut ranges = r.postings_ranges().unwrap();
    assert_eq!(ranges.len(), 1 + 12);
    ranges.sort_by_key(|x| x.2);
    assert_eq!(ranges[0].2, r.toc().postings);
    for w in ranges.windows(2) {
        assert_eq!(w[0].3, w[1].2);
    }
    assert_eq!(ranges.last().unwrap().3, r.toc().postings_offset_table);
    assert!(r.series(3).is_err(), "not a series offset");
    assert!(r.series(u64::MAX).is_err());
}

#[test]
fn matcher_semantics_match_naive_model() {
    let (bytes, sorted) = build(&sample_series());
    let r = open(bytes).unwrap();
    let m = |op, n: &str, v: &str| Matcher::new(op, n, v).unwrap();
    use MatchOp::*;
    let cases: Vec<Vec<Matcher>> = vec![
        vec![m(Equal, "job", "a")],
        vec![m(Equal, "env", "")],
        vec![m(NotEqual, "env", "")],
        vec![m(NotEqual, "job", "a")],
        vec![m(RegexMatch, "job", "foo.*")],
        vec![m(RegexMatch, "job", "a|b|nope")],
        vec![m(RegexMatch, "job", "fo+")],
        vec![m(RegexMatch, "job", ".*")],
        vec![m(RegexMatch, "job", ".+")],
        vec![m(RegexMatch, "job", "a|")],
        vec![m(RegexNoMatch, "job", "foo.*")],
        vec![m(RegexNoMatch, "job", ".*")],
        vec![m(RegexNoMatch, "job", "")],
        vec![m(Equal, "__name__", "up"), m(RegexNoMatch, "job", "a|b")],
        vec![m(Equal, "__name__", "http"), m(Equal, "job", "")],
        vec![m(NotEqual, "nope", "x")],
        vec![m(Equal, "nope", "")],
        vec![m(Equal, "nope", "x")],
        vec![],
    ];
    for ms in cases {
        assert_eq!(select(&r, &sorted, &ms), naive(&sorted, &ms), "{ms:?}");
    }
}

#[test]
fn empty_index_roundtrip() {
    let (bytes, _) = build(&[]);
    let r = open(bytes).unwrap();
    assert!(r.all_postings().unwrap().is_empty());
    assert!(r.label_names().is_empty());
    assert!(
        r.postings_for_matchers(&[Matcher::equal("a", "")])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn writer_rejects_unsorted_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = IndexWriter::new(&dir.path().join("i")).unwrap();
    w.add_symbol("b").unwrap();
    assert!(w.add_symbol("a").is_err());
    let mut w = IndexWriter::new(&dir.path().join("j")).unwrap();
    for s in ["a", "b", "c"] {
        w.add_symbol(s).unwrap();
    }
    w.add_series(&ls(&[("a", "c")]), &[]).unwrap();
    assert!(matches!(
        w.add_series(&ls(&[("a", "b")]), &[]),
        Err(crate::Error::Unsorted { .. })
    ));
    assert!(w.add_series(&ls(&[("a", "c")]), &[]).is_err(), "duplicate");
    assert!(
        w.add_series(&ls(&[("b", "zzz")]), &[]).is_err(),
        "unknown symbol"
    );
}

#[test]
fn corrupt_index_never_panics() {
    let (bytes, _) = build(&sample_series());
    let ms = [
        Matcher::new(MatchOp::RegexMatch, "job", "foo.*").unwrap(),
        Matcher::new(MatchOp::NotEqual, "env", "x").unwrap(),
    ];
    let exercise = |b: Vec<u8>| -> crate::Result<()> {
        let r = open(b)?;
        for n in r.label_names() {
            for v in r.label_values(&n)? {
                r.postings(&n, &v)?;
            }
        }
        for sr in r.postings_for_matchers(&ms)? {
            r.series(sr)?;
        }
        for sr in r.all_postings()? {
            r.series(sr)?;
        }
        for sr in r.all_postings_iter()? {
            r.series(sr)?;
        }
        r.check_label_indices()?;
        Ok(())
    };
    exercise(bytes.clone()).unwrap();
    let mut detected = 0;
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        if exercise(b).is_err() {
            detected += 1;
        }
    }
    // Only padding bytes may go unnoticed.
    assert!(
        detected as f64 > bytes.len() as f64 * 0.9,
        "{detected}/{}",
        bytes.len()
    );
    for cut in 0..bytes.len() {
        assert!(exercise(bytes[..cut].to_vec()).is_err(), "cut {cut}");
    }
}

fn label_set() -> impl Strategy<Value = Labels> {
    proptest::collection::btree_map("[a-d_]{1,3}", "[a-z0-9]{0,4}", 1..5)
        .prop_map(|m: BTreeMap<String, String>| Labels::new(m.into_iter().collect()).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_label_sets_roundtrip(sets in proptest::collection::vec(label_set(), 0..60), probe in label_set()) {
        let (bytes, sorted) = build(&sets);
        let r = open(bytes).unwrap();
        let all = r.all_postings().unwrap();
        prop_assert_eq!(all.len(), sorted.len());
        prop_assert_eq!(r.all_postings_iter().unwrap().collect::<Vec<_>>(), all.clone());
        for (sr, want) in all.iter().zip(&sorted) {
            prop_assert_eq!(&r.series(*sr).unwrap().0, want);
        }
        let names: BTreeSet<String> = sorted.iter().flat_map(|l| l.iter().map(|(n, _)| n.to_string())).collect();
        prop_assert_eq!(r.label_names(), names.iter().cloned().collect::<Vec<_>>());
        for n in &names {
            let vals: BTreeSet<String> = sorted.iter().filter_map(|l| l.get(n).map(str::to_string)).collect();
            prop_assert_eq!(r.label_values(n).unwrap(), vals.into_iter().collect::<Vec<_>>());
        }
        for (n, v) in probe.iter() {
            for op in [MatchOp::Equal, MatchOp::NotEqual, MatchOp::RegexMatch, MatchOp::RegexNoMatch] {
                let pat = if matches!(op, MatchOp::RegexMatch | MatchOp::RegexNoMatch) { format!("{v}.*") } else { v.to_string() };
                let ms = vec![Matcher::new(op, n, pat).unwrap()];
                prop_assert_eq!(select(&r, &sorted, &ms), naive(&sorted, &ms));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Spilling postings in sorted runs changes nothing in the file, whatever the budget.
    #[test]
    fn spilled_postings_give_the_same_index(sets in proptest::collection::vec(label_set(), 0..60), budget in 1usize..40) {
        let (want, _, none) = build_with_budget(&sets, DEFAULT_POSTINGS_BUDGET);
        prop_assert_eq!(none, 0);
        let (got, sorted, runs) = build_with_budget(&sets, budget);
        let entries: usize = sorted.iter().map(|l| l.len() + 1).sum();
        prop_assert_eq!(runs, entries / budget, "runs for {} entries", entries);
        prop_assert!(got == want, "index differs with budget {}", budget);
    }
}

#[test]
fn series_by_symbol_ids_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = IndexWriter::new(&dir.path().join("i")).unwrap();
    for s in ["a", "b", "c"] {
        w.add_symbol(s).unwrap();
    }
    w.add_series_symbols(&[(0, 2)], &[]).unwrap();
    let err = w
        .add_series_symbols(&[(0, 1)], &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(r#"series {a="b"} added after {a="c"}"#),
        "{err}"
    );
    let err = w
        .add_series_symbols(&[(0, 9)], &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("symbol id 9 not in the table of 3 symbols"),
        "{err}"
    );
    let err = w
        .add_series_symbols(&[(1, 0), (0, 0)], &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("label names not sorted"), "{err}");
    w.add_series_symbols(&[(1, 0)], &[]).unwrap();
    w.finish().unwrap();
}

#[test]
fn tables_give_exact_ranges_and_decoders_read_what_the_reader_reads() {
    let (bytes, sorted) = build(&sample_series());
    let r = open(bytes.clone()).unwrap();
    let all = bytes::Bytes::from(bytes);
    let pot = r.postings_table();
    let ranges = r.postings_ranges().unwrap();
    let refs = pot.all_refs().unwrap();
    assert_eq!(refs.len(), ranges.len());
    for (w, (n, v, start, end)) in refs.windows(2).zip(&ranges) {
        // A list's range runs to the next list's start: its bytes plus at most 3 of padding.
        assert_eq!((&w[0].name, &w[0].value, w[0].range.start), (n, v, *start));
        assert_eq!(w[0].range.end, w[1].range.start);
        assert!(w[0].range.end >= *end && w[0].range.end - *end <= 3);
        let b = all.slice(w[0].range.start as usize..w[0].range.end as usize);
        assert_eq!(
            decode_postings("index", &b, w[0].range.start).unwrap(),
            r.postings(n, v).unwrap()
        );
    }
    assert_eq!(refs.last().unwrap().range.end, pot.postings_end());
    assert!(pot.first_offset() > r.toc().series);
    // Series entries decode from a slice with trailing bytes, and need exactly their size.
    for sref in r.all_postings().unwrap() {
        let off = sref * SERIES_ALIGN;
        let tail = &all[off as usize..];
        let size = series_entry_size("index", tail, off).unwrap().unwrap();
        let got = decode_series_entry("index", tail, off, r.symbol_table()).unwrap();
        assert_eq!(got, r.series(sref).unwrap());
        assert!(
            decode_series_entry("index", &tail[..size as usize - 1], off, r.symbol_table())
                .is_err()
        );
        let mut bad = tail[..size as usize].to_vec();
        bad[size as usize - 6] ^= 1;
        assert!(decode_series_entry("index", &bad, off, r.symbol_table()).is_err());
    }
    // The plan reads the same lists the reader combines.
    let ms = [Matcher::new(MatchOp::RegexMatch, "job", ".+").unwrap()];
    let plan = pot.plan(&ms).unwrap();
    assert!(!plan.refs().is_empty());
    assert_eq!(
        plan.evaluate(|p| r.read_postings_at(p.range.start))
            .unwrap(),
        r.postings_for_matchers(&ms).unwrap()
    );
    assert!(!sorted.is_empty());
}
