//! Index files: opening (header, TOC, symbols, postings offset table) and every lookup on
//! arbitrary bytes must return errors, never panic.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use strata_tsdb::index::IndexReader;
use strata_tsdb::matcher::{MatchOp, Matcher};
use strata_tsdb::source::{ByteSource, BytesSource};

fuzz_target!(|data: &[u8]| {
    let src: Arc<dyn ByteSource> = Arc::new(BytesSource::new("index", data.to_vec()));
    let Ok(r) = IndexReader::open(src) else {
        return;
    };
    for s in r.symbols().take(1000) {
        if s.is_err() {
            break;
        }
    }
    for name in r.label_names().into_iter().take(100) {
        let Ok(values) = r.label_values(&name) else {
            continue;
        };
        for v in values.iter().take(100) {
            let _ = r.postings(&name, v);
        }
        if let Ok(m) = Matcher::new(MatchOp::RegexMatch, name.clone(), "a.*|b") {
            let _ = r.postings_for_matchers(&[m]);
        }
        let _ = r.postings_for_matchers(&[Matcher::equal(name, "")]);
    }
    if let Ok(all) = r.all_postings() {
        for sr in all.into_iter().take(1000) {
            let _ = r.series(sr);
        }
    }
    // Series references straight from the input, valid or not.
    for w in data.chunks_exact(4).take(64) {
        let _ = r.series(u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]])));
    }
    let _ = r.check_label_indices();
});
