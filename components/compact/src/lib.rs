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
//! NOT DONE (next slice):
//! - the planner (grouping by external labels and resolution, level ranges, no-compact marks,
//!   consistency delay) and overlap halting with the `strata_compact_halted` metric;
//! - bucket orchestration (download, upload with meta.json last, deletion marks), crash
//!   safety across restarts, retention, partial block cleanup;
//! - the `strata compact` CLI, `/metrics`, and `strata tools bucket …`;
//! - spilling: the output index writer keeps every series' labels and chunk refs in a spill
//!   file but interns all symbols in memory (as large as the inputs' symbol tables);
//! - native histograms are skipped (with a counted warning) by downsampling.

mod compact;
mod downsample;
mod error;
pub mod merge;

pub use compact::{COMPACTOR_SOURCE, CompactOptions, CompactStats, compact, compact_with_stats};
pub use downsample::{DownsampleStats, RES_1H, RES_5M, RES_RAW, downsample, downsample_with_stats};
pub use error::{Error, Result};
