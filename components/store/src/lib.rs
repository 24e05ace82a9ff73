//! `strata-store`: the store gateway. It serves every block in an object-storage bucket over the
//! StoreAPI, fetching only the byte ranges a query needs.
//!
//! Data flow of one `Series` call:
//!
//! ```text
//! sync (meta.json of every block, cached on disk) ─► BlockSet ─ select(time, resolution) ─► LazyBlock
//!   LazyBlock::get ─► BucketBlock (index-header on local disk, built once from range reads)
//!   BucketBlock::series: matchers ─► postings offsets (index-header) ─► merged range reads of
//!       postings ─► series entries ─► chunk ranges merged per segment file ─► BlockSeries
//!   server: per-block results merged in label order, external labels added, framed as SeriesResponse
//! ```
//!
//! Modules: [`indexheader`] (the Thanos binary index-header: build, write, load), [`ranges`]
//! (merging nearby byte ranges into few GETs), [`block`] (one block's query path), [`cache`]
//! (size-bounded postings/series cache), [`sync`] (meta.json sync, filters, disk cache),
//! [`relabel`] (the `--selector.relabel-config` subset used for sharding), [`blockset`] (the
//! loaded set, lazy loading and idle unloading, time/resolution selection), [`stats`] (per-request
//! counters and limits), [`server`] (the gRPC services).

// `Error` carries `strata_objstore::Error` (≥ 128 bytes) unboxed, as the shared contract defines it.
#![allow(clippy::result_large_err)]

pub mod block;
pub mod blockset;
pub mod cache;
pub mod error;
pub mod indexheader;
pub mod ranges;
pub mod server;
pub mod stats;

pub use error::{Error, Result};
/// Block listing, meta sync, marks and selection live in `strata-bucket` (shared with the compactor).
pub use strata_bucket::{relabel, sync};
