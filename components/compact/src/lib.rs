//! `strata-compact`: the compactor's local core. It works on block directories on local disk,
//! with no bucket involved:
//!
//! - [`compact`] merges blocks into one (streaming, one series at a time; chunks copied
//!   unchanged when they need no merging; tombstones applied; Thanos-compatible
//!   `compaction.level/sources/parents`), optionally de-duplicating HA replicas (vertical
//!   compaction, [`CompactOptions::dedup_replica_labels`]);
//! - [`downsample`] turns a raw block into a 5m block, or a 5m block into a 1h block, of
//!   Thanos aggregate chunks (count, sum, min, max, counter) that a Thanos store gateway reads.
//!
//! - [`plan`] decides, with no I/O, what a Thanos compactor would do next on a bucket's metas:
//!   groups ([`plan::group_key`]), the next compaction ([`plan::plan`]), downsampling
//!   candidates and retention.
//! - [`run`] is the compactor over a bucket ([`run::Compactor::run_once`]): sync, duplicate
//!   garbage collection, per-group plan → download → compact → upload (meta.json last) → mark
//!   sources, overlap halts (`strata_compact_halted`), downsampling, retention and cleanup,
//!   crash-safe at every step; [`retention`] marks blocks past retention.
//!
//! Choices worth knowing:
//! - Downsampled chunks are batched exactly as Thanos batches them (about 140 windows per chunk
//!   when the raw data is at least one sample a minute, more when it is sparser), not at a
//!   fixed 120 windows: chunk boundaries carry the counter's true first/last values and the
//!   5m → 1h step aggregates along them, so matching Thanos chunk for chunk keeps both
//!   resolutions identical to what a Thanos compactor writes.
//! - Vertical compaction merges like Thanos's compactor (`--deduplication.func=penalty`), not
//!   like its querier: chunks that overlap no other are copied; each run of overlapping chunks
//!   is de-duplicated on its own ([`merge::dedup_chunks`], pairwise penalty de-duplication in
//!   [`merge::dedup_pair`]), so the follow-one-replica state restarts at every run. The small
//!   penalty core duplicates the idea of `strata-query`'s `dedup` (without its counter-aware
//!   mode) rather than depending on the query crate. The real Thanos compactor gives the same
//!   samples (tested).
//! - The output's symbol table is built from the labels of the series actually written (the
//!   block writer interns them), so symbols only used by fully deleted series are dropped.
//!
//! - A real `thanos compact` and `strata compact` given the same bucket leave the same live
//!   blocks (ranges, levels, sources) with the same samples (`cli/tests/compact.rs`).
//! - Memory: the inputs are walked lazily from their mapped indexes, merged series reach the
//!   writing thread in bounded batches, and the block writer spills series entries and (beyond
//!   a budget) postings to the output's directory; what grows with the data is the symbol
//!   table (each distinct label name and value), as in Prometheus's compactor.
//!
//! NOT DONE:
//! - no fault point inside a single object upload (a partial output upload is covered by the
//!   meta.json-last rule and cleanup's partial-upload marking, not by a kill test); the
//!   "kill during delete" test builds the state a kill inside `lifecycle::delete_block` leaves
//!   (meta.json gone, other objects and the mark still there) instead of killing mid-delete;
//! - no-compact marks are found with a second bucket listing per pass
//!   ([`strata_bucket::sync::list_blocks`]): `FetchOutcome` does not report them;
//! - compaction failures are retried every pass; Thanos's marking of blocks with broken
//!   indexes as `no-compact` is not done;
//! - the output's symbol table is held in memory (strings plus an interning map) while the
//!   block is written;
//! - native histograms are skipped (with a counted warning) by downsampling;
//! - `strata tools bucket …` lives in the bucket-tools slice.

mod compact;
mod downsample;
mod error;
pub mod merge;
pub mod plan;
pub mod retention;
pub mod run;

pub use compact::{COMPACTOR_SOURCE, CompactOptions, CompactStats, compact, compact_with_stats};
pub use downsample::{DownsampleStats, RES_1H, RES_5M, RES_RAW, downsample, downsample_with_stats};
pub use error::{Error, Result};
