//! `strata-sidecar`: serves one Prometheus server's live data over the Thanos-compatible StoreAPI.
//!
//! Series come from Prometheus's streamed remote read ([`remote_read`]), labels from its HTTP API
//! ([`prom`]); external labels are read from Prometheus's configuration and added to every series
//! (an external label replaces a series label of the same name, as in Thanos). [`run`] waits for
//! Prometheus, refuses to start when it has no external labels, re-reads them periodically and serves
//! `thanos.Store` + `thanos.info.Info` + `thanos.Metadata` (metric metadata from Prometheus's
//! `/api/v1/metadata`, advertised as `metric_metadata` in Info) through
//! `strata_storeapi::serve_with_metadata`.
//!
//! Semantics chosen to match the Thanos sidecar:
//! - matchers on external labels are checked against their values and removed before asking
//!   Prometheus; a failing one selects nothing; no matcher left → InvalidArgument;
//! - `skip_chunks` uses Prometheus's series API; `without_replica_labels` drops those external labels;
//! - Info: component type `sidecar`, max time `i64::MAX`, min time `i64::MIN` until the shipper sets it
//!   ([`store::State::set_min_time`]), as a Thanos sidecar without uploads advertises;
//! - Prometheus unreachable → `Unavailable` naming the URL; the sidecar keeps serving and recovers.
//!
//! NOT DONE:
//! - block shipping (`--objstore.config`): the integrator wires `strata-shipper` in `Sidecar::start`'s
//!   marked place and `strata sidecar`'s TODO;
//! - `--min-time` (Thanos's lower bound on served data) and hints in responses (`hints` Any fields);
//! - `supports_sharding` is advertised false: `shard_info` is ignored;
//! - back-pressure is tested by counting frames read ahead of a stalled client (≤ 10), not by
//!   measuring process memory on a huge real response.

pub mod matchers;
pub mod prom;
pub mod remote_read;
mod run;
pub mod store;

pub use run::{RunError, ShippingConfig, Sidecar, SidecarConfig, run};
pub use strata_storeapi::ServerTlsFiles;

/// The Prometheus remote-read protobuf messages (package `prometheus`, the subset the sidecar needs).
#[allow(missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

/// Errors of the sidecar.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `--prometheus.url` is not a usable URL.
    #[error("prometheus url {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why it is unusable.
        reason: String,
    },
    /// Prometheus could not be reached.
    #[error("request {url}: {reason}")]
    Http {
        /// The URL requested.
        url: String,
        /// What the HTTP client said.
        reason: String,
    },
    /// Prometheus answered with an unexpected HTTP status.
    #[error("request {url}: HTTP {status}: {body}")]
    Status {
        /// The URL requested.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// Prometheus's API answered with an error.
    #[error("request {url}: {error_type}: {error}")]
    Api {
        /// The URL requested.
        url: String,
        /// Prometheus's `errorType`.
        error_type: String,
        /// Prometheus's `error`.
        error: String,
    },
    /// The answer was not the JSON expected.
    #[error("decode answer of {url}: {reason}")]
    Json {
        /// The URL requested.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// An answer was larger than allowed.
    #[error("answer of {url} is larger than {max} bytes")]
    BodyTooLarge {
        /// The URL requested.
        url: String,
        /// The limit.
        max: usize,
    },
    /// Prometheus's configuration YAML did not parse.
    #[error("parse prometheus configuration: {0}")]
    ConfigYaml(String),
    /// Remote read answered with something other than streamed chunks.
    #[error(
        "remote read {url}: unexpected content type {content_type:?} (need streamed XOR chunks, Prometheus >= 2.13)"
    )]
    ContentType {
        /// The URL requested.
        url: String,
        /// What it answered with.
        content_type: String,
    },
    /// Snappy compression of the request failed.
    #[error("snappy-compress remote read request: {0}")]
    Snappy(String),
    /// A frame announced more bytes than allowed.
    #[error("remote read frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A frame length varint was malformed.
    #[error("remote read frame length is not a valid varint")]
    FrameLength,
    /// A frame's CRC32-Castagnoli did not match its data.
    #[error("remote read frame checksum mismatch: header {expected:#010x}, data {actual:#010x}")]
    FrameChecksum {
        /// The checksum in the frame header.
        expected: u32,
        /// The checksum of the data received.
        actual: u32,
    },
    /// The body ended inside a frame.
    #[error("remote read body ended inside a frame ({buffered} bytes left over)")]
    TruncatedFrame {
        /// Bytes of the incomplete frame.
        buffered: usize,
    },
    /// A frame's protobuf did not decode.
    #[error("decode remote read frame")]
    DecodeFrame(#[source] prost::DecodeError),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
