//! The Thanos-compatible StoreAPI (`thanos.Store`), Info (`thanos.info.Info`) and Metadata
//! (`thanos.Metadata`, metric type/help/unit) gRPC services:
//! protos compiled without `protoc`, and domain-neutral server/client helpers — request validation,
//! external-label matching, k-way series merging, response framing with back-pressure, TLS/mTLS,
//! gzip and snappy compression, `serve` (optionally with Metadata: `serve_with_metadata`) and
//! `connect`.
//!
//! Interoperability: the protos follow Thanos main (`response_batch_size`/`SeriesBatch` from v0.41,
//! `limit` from v0.37, `without_replica_labels` from v0.31); the old `thanos.Store/Info` rpc, removed
//! in Thanos v0.37.0, is not served — peers discover us through `thanos.info.Info/Info`.
//!
//! NOT DONE:
//! - snappy is decoded on requests only; responses go back gzip or uncompressed (valid gRPC, and
//!   Thanos binaries register gzip). Our client does not send snappy (it can send gzip).
//! - replica de-duplication is not here: it lives in `strata-query` (`dedup`), which needs the engine's
//!   hints (see docs/architecture.md).

pub mod client;
pub mod error;
pub mod extlabels;
pub mod hints;
pub mod merge;
pub mod pb;
pub mod respond;
pub mod server;
pub mod snappy;
pub mod tls;
pub mod validate;

pub use client::{ClientOptions, Clients, connect};
pub use error::{Error, Result};
pub use server::{Listen, NoMetadata, ServerOptions, serve, serve_with_metadata};
pub use tls::{ClientTlsFiles, ServerTlsFiles};
