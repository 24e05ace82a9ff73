//! `strata-tsdb`: the Prometheus TSDB block format, read and write.
//!
//! A block is a directory `<ULID>/` holding `meta.json` ([`meta`]), `index` ([`index`]),
//! `chunks/000001…` ([`chunks`], chunk payloads in [`chunkenc`]) and `tombstones`
//! ([`tombstones`]). Every decoder is bounds-checked and returns [`Error`] on bad input; none
//! panics, and no allocation is sized by an untrusted length before it is checked against the
//! bytes that remain.
//!
//! # Reading
//!
//! ```no_run
//! use strata_tsdb::{Block, MatchOp, Matcher, Sample};
//! # fn main() -> strata_tsdb::Result<()> {
//! let block = Block::open("data/01HZY8XKZ7Q0R5W4V3M2N1P0AB")?;
//! println!("{} series", block.meta().stats.num_series);
//! let idx = block.index();
//! let _names = idx.label_names();
//! let _jobs = idx.label_values("job")?;
//! let matchers = [
//!     Matcher::new(MatchOp::Equal, "__name__", "up")?,
//!     Matcher::new(MatchOp::RegexMatch, "job", "api|db")?,
//! ];
//! for r in idx.postings_for_matchers(&matchers)? {
//!     let (labels, chunks) = idx.series(r)?;
//!     for c in &chunks {
//!         for s in block.chunk(c.chunk_ref)?.iter() {
//!             if let Sample::Float { t, v } = s? {
//!                 println!("{labels} {v} {t}");
//!             }
//!         }
//!     }
//! }
//! // Or, all at once with time bounds and tombstones applied:
//! for s in block.select(&matchers, 0, i64::MAX)? {
//!     let s = s?;
//!     println!("{} has {} samples", s.labels, s.samples.len());
//! }
//! # Ok(()) }
//! ```
//!
//! [`IndexReader`] works over any [`ByteSource`] (an mmap'd file, bytes in memory, or ranges
//! of an object); [`ChunksReader`](chunks::ChunksReader) likewise.
//!
//! # Writing
//!
//! ```no_run
//! use strata_tsdb::{BlockWriter, BlockWriterOptions, Labels};
//! # fn main() -> strata_tsdb::Result<()> {
//! let mut w = BlockWriter::new("data", BlockWriterOptions::default())?;
//! // Series in increasing label order; samples in increasing time order.
//! w.add_series(&Labels::from_pairs([("__name__", "up"), ("job", "a")])?, &[(0, 1.0), (15_000, 1.0)])?;
//! let ulid = w.finish()?; // data/<ulid>/ now exists
//! let report = strata_tsdb::verify(format!("data/{ulid}"))?;
//! assert!(report.is_ok());
//! # Ok(()) }
//! ```
//!
//! Lower-level writers: [`IndexWriter`], [`SegmentWriter`](chunks::SegmentWriter),
//! [`XorAppender`](chunkenc::XorAppender), [`encode_histogram_chunk`](chunkenc::encode_histogram_chunk).

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
