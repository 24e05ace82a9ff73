//! `strata-tsdb`: the Prometheus TSDB block format, read and write.
//!
//! A block is a directory `<ULID>/` holding `meta.json` ([`meta`]), `index` ([`index`]),
//! `chunks/000001…` ([`chunks`], chunk payloads in [`chunkenc`]) and `tombstones`
//! ([`tombstones`]). [`Block`] opens one for reading, [`BlockWriter`] writes one, [`verify`]
//! checks one. Every decoder is bounds-checked and returns [`Error`] on bad input; none panics.

pub mod block;
pub mod chunkenc;
pub mod chunks;
mod encoding;
pub mod error;
pub mod index;
pub mod labels;
pub mod matcher;
pub mod meta;
pub mod source;
pub mod tombstones;
pub mod tools;

pub use block::{Block, BlockWriter, BlockWriterOptions, Report, SeriesSamples, verify};
pub use chunkenc::{Chunk, Encoding, FloatHistogram, Histogram, Sample};
pub use chunks::ChunkRef;
pub use encoding::crc32c;
pub use error::{Error, Result};
pub use index::{ChunkMeta, IndexReader, IndexWriter, SeriesRef};
pub use labels::Labels;
pub use matcher::{MatchOp, Matcher};
pub use meta::BlockMeta;
pub use source::{ByteSource, BytesSource, MmapSource};
