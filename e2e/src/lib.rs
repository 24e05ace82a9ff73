//! The real-server test harness. Starts the peers a Strata user has — Prometheus and promtool, a MinIO
//! S3 server, etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, helm, Thanos query and sidecar, Alertmanager — on free loopback ports, waits
//! until they are ready, keeps their logs (printed when a test fails) and kills them when dropped, also
//! when the test panics.
//!
//! Peers are built from pinned Go modules by `e2e/tools/install.sh`, which writes their paths to
//! `~/.cache/strata/tools/env.sh`. A missing peer is an error, never a skip.

mod alertmanager;
mod benchdata;
mod error;
mod kube;
mod minio;
mod ports;
mod process;
mod promapi;
mod prometheus;
mod proxy;
mod sidebyside;
mod strata;
mod target;
mod thanos;
mod tools;

pub use alertmanager::{Alertmanager, StoppedAlertmanager};
pub use benchdata::{BenchData, bench_dir, query_lines, standard_queries};
pub use error::{Error, Result};
pub use kube::{Etcd, FAKE_NODE, KubeApiserver, KubeControlPlane};
pub use minio::{Minio, upload_blocks_to};
pub use ports::free_port;
pub use process::{Process, wait_until};
pub use promapi::{
    ApiResponse, CompareOptions, Mismatch, PromApi, Tolerance, compare, label_key, parse_value,
};
pub use prometheus::{Prometheus, PrometheusBuilder, promtool};
pub use proxy::Proxy;
pub use sidebyside::{ListedQuery, SideBySide, SideBySideOptions, listed_queries, side_by_side};
pub use strata::{StrataQuery, StrataQueryBuilder, StrataServer, StrataSidecar, StrataStore};
pub use target::{MetricsTarget, TargetHandler};
pub use thanos::{
    ThanosQuery, ThanosQueryBuilder, ThanosSidecar, ThanosSidecarBuilder, ThanosStore,
    thanos_version,
};
pub use tools::{Tool, helm, run_tool, tool_path};
