//! `strata-bucket`: the blocks in a bucket, as the store gateway and the compactor both see them.
//!
//! - [`sync`] lists the bucket once a pass, fetches new blocks' `meta.json` concurrently (cached on
//!   local disk), and filters blocks (partial uploads, deletion marks, time range, relabel
//!   sharding, Thanos's duplicate filter);
//! - [`relabel`] is the Prometheus relabel config of Thanos's `--selector.relabel-config`;
//! - [`marks`] reads and writes `deletion-mark.json` and `no-compact-mark.json`;
//! - [`transfer`] uploads (meta.json last) and downloads whole blocks;
//! - [`inspect`] reads every block's meta and objects and verifies them (`strata tools bucket`);
//! - [`lifecycle`] marks blocks for deletion, deletes them after the delay, cleans partial uploads.

pub mod error;
pub mod inspect;
pub mod lifecycle;
pub mod marks;
pub mod relabel;
pub mod sync;
pub mod transfer;

pub use error::{Error, Result};
