//! The block `index` file, format v2: symbol table, series (labels as symbol references plus
//! delta-encoded chunk metas), label indices, postings lists, label offset table, postings
//! offset table and the table of contents. [`IndexReader`] reads one over any
//! [`ByteSource`](crate::source::ByteSource); [`IndexWriter`] writes one in a single pass.

mod postings;
mod reader;
mod spill;
mod tables;
mod writer;

pub use postings::{intersect, intersect_all, subtract, union_all};
pub use reader::{AllPostings, IndexReader};
pub use tables::{
    PostingsPlan, PostingsRef, PostingsTable, Symbols, decode_postings, decode_series_entry,
    section_body, series_entry_size,
};
pub use writer::{DEFAULT_POSTINGS_BUDGET, IndexWriter};

use crate::chunks::ChunkRef;

/// A series reference: in v2 the series' byte offset divided by 16.
pub type SeriesRef = u64;

/// Magic number at the start of the index.
pub const MAGIC_INDEX: u32 = 0xBAAA_D700;
/// Index format version 2 (what Prometheus 2.x/3.x writes).
pub const INDEX_FORMAT_V2: u8 = 2;
/// Version 3 is read like version 2.
pub const INDEX_FORMAT_V3: u8 = 3;
/// Bytes of the header (magic + version).
pub const HEADER_LEN: u64 = 5;
/// Bytes of the TOC (six offsets and a CRC).
pub const TOC_LEN: u64 = 6 * 8 + 4;
/// Series entries are 16-byte aligned.
pub const SERIES_ALIGN: u64 = 16;
/// The label pair whose postings list holds every series.
pub const ALL_POSTINGS_KEY: (&str, &str) = ("", "");

/// One chunk of a series as the index describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    /// Timestamp of the first sample.
    pub min_time: i64,
    /// Timestamp of the last sample.
    pub max_time: i64,
    /// Where the chunk is stored.
    pub chunk_ref: ChunkRef,
}

/// The table of contents: section offsets (0 = absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Toc {
    /// Symbol table.
    pub symbols: u64,
    /// First series.
    pub series: u64,
    /// First label index.
    pub label_indices: u64,
    /// Label offset table.
    pub label_offset_table: u64,
    /// First postings list.
    pub postings: u64,
    /// Postings offset table.
    pub postings_offset_table: u64,
}

#[cfg(test)]
mod tests;
