//! meta.json: parsing arbitrary bytes must not panic; whatever parses must serialize and parse
//! back to the same known fields.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use strata_tsdb::meta::BlockMeta;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = BlockMeta::from_slice(data, Path::new("meta.json")) else {
        return;
    };
    let out = m.to_json_bytes().expect("a parsed meta serializes");
    let back = BlockMeta::from_slice(&out, Path::new("meta.json")).expect("our output parses");
    assert_eq!(back.ulid, m.ulid);
    assert_eq!((back.min_time, back.max_time), (m.min_time, m.max_time));
    assert_eq!(back.stats.num_samples, m.stats.num_samples);
    assert_eq!(back.compaction.sources, m.compaction.sources);
    assert_eq!(
        back.thanos.as_ref().map(|t| &t.labels),
        m.thanos.as_ref().map(|t| &t.labels)
    );
});
