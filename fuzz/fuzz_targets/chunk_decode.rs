//! Chunk payloads and chunk segment records: decoding arbitrary bytes must return errors, never
//! panic, and never allocate unboundedly.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use strata_tsdb::chunkenc::{Chunk, FloatHistogramIterator, HistogramIterator, XorIterator};
use strata_tsdb::chunks::{ChunkRef, ChunksReader};
use strata_tsdb::source::{ByteSource, BytesSource};

fuzz_target!(|data: &[u8]| {
    let Some((&enc, rest)) = data.split_first() else {
        return;
    };
    // The payload decoders directly.
    for s in XorIterator::new(rest) {
        if s.is_err() {
            break;
        }
    }
    for s in HistogramIterator::new(rest) {
        if s.is_err() {
            break;
        }
    }
    for s in FloatHistogramIterator::new(rest) {
        if s.is_err() {
            break;
        }
    }
    // Through the encoding dispatch.
    if let Ok(c) = Chunk::new(enc % 8, bytes::Bytes::copy_from_slice(rest)) {
        let _ = c.samples();
    }
    // As a segment file; the first byte picks the record offset.
    let src: Arc<dyn ByteSource> = Arc::new(BytesSource::new("seg", rest.to_vec()));
    if let Ok(r) = ChunksReader::new(vec![src]) {
        if let Ok(c) = r.chunk(ChunkRef::new(0, u32::from(enc))) {
            let _ = c.samples();
        }
    }
});
