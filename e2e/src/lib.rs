//! The real-server test harness. Starts the peers a Strata user has — Prometheus and promtool, a MinIO
//! S3 server, etcd and kube-apiserver, helm, Thanos query and sidecar — on free loopback ports, waits
//! until they are ready, keeps their logs (printed when a test fails) and kills them when dropped, also
//! when the test panics.
//!
//! Peers are built from pinned Go modules by `e2e/tools/install.sh`, which writes their paths to
//! `~/.cache/strata/tools/env.sh`. A missing peer is an error, never a skip.

mod error;
mod kube;
mod minio;
mod ports;
mod process;
mod prometheus;
mod proxy;
mod thanos;
mod tools;

pub use error::{Error, Result};
pub use kube::{Etcd, KubeApiserver};
pub use minio::Minio;
pub use ports::free_port;
pub use process::{Process, wait_until};
pub use prometheus::{Prometheus, PrometheusBuilder, promtool};
pub use proxy::Proxy;
pub use thanos::{
    ThanosQuery, ThanosQueryBuilder, ThanosSidecar, ThanosSidecarBuilder, thanos_version,
};
pub use tools::{Tool, helm, run_tool, tool_path};
