//! The Thanos-compatible StoreAPI (`thanos.Store`) and Info (`thanos.info.Info`) gRPC services:
//! protos compiled without `protoc`, and domain-neutral server/client helpers — request validation,
//! external-label matching, k-way series merging, response framing with back-pressure, TLS/mTLS,
//! gzip and snappy compression, `serve` and `connect`.

pub mod client;
pub mod error;
pub mod extlabels;
pub mod merge;
pub mod pb;
pub mod respond;
pub mod server;
pub mod snappy;
pub mod tls;
pub mod validate;

pub use client::{ClientOptions, Clients, connect};
pub use error::{Error, Result};
pub use server::{Listen, ServerOptions, serve};
pub use tls::{ClientTlsFiles, ServerTlsFiles};
