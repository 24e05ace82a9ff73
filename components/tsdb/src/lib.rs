//! `strata-tsdb`: the Prometheus TSDB block format, read and write.
//!
//! A block is a directory `<ULID>/` holding `meta.json` ([`meta`]) and chunk payloads
//! ([`chunkenc`]). Every decoder is bounds-checked and returns [`Error`] on bad input; none
//! panics.

pub mod chunkenc;
#[allow(dead_code)] // the index and segment modules (next commits) use the rest
mod encoding;
pub mod error;
#[allow(dead_code)]
pub mod labels;
pub mod meta;

pub use chunkenc::{Chunk, Encoding, FloatHistogram, Histogram, Sample};
pub use encoding::crc32c;
pub use error::{Error, Result};
pub use labels::Labels;
pub use meta::BlockMeta;
