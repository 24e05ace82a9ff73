//! The ruler's local TSDB: an in-memory head with a write-ahead log, cut into 2h blocks on disk,
//! served over the StoreAPI with the ruler's external labels and shipped to the bucket.
//!
//! CONTRACT (filled in by the storage work; the signatures are what `run` wires together).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use strata_promql::Labels;

use crate::{Error, OutSample, Result, SampleSink};

/// How the local storage is laid out and kept.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Data directory (`--data-dir`): `wal/` and block directories live here.
    pub dir: PathBuf,
    /// The ruler's external labels, announced over the StoreAPI and written to blocks' meta.json.
    pub external_labels: Labels,
    /// Block length, ms (2h by default, as Prometheus).
    pub block_duration_ms: i64,
    /// Local blocks older than this are deleted (after they were shipped, when shipping is on), ms.
    pub retention_ms: i64,
}

/// Head + WAL + local blocks. Implements [`SampleSink`] (durable once `append` returns) and
/// [`strata_promql::Queryable`] (for restoring alert state from `ALERTS_FOR_STATE`).
#[derive(Debug)]
pub struct LocalStorage {
    _opts: StorageOptions,
}

impl LocalStorage {
    /// Opens the storage in `opts.dir`, replaying the WAL into the head.
    pub async fn open(opts: StorageOptions, _registry: &mut Registry) -> Result<Arc<Self>> {
        Err(Error::Storage(format!(
            "local storage in {} is not implemented yet",
            opts.dir.display()
        )))
    }
}

#[async_trait::async_trait]
impl SampleSink for LocalStorage {
    async fn append(&self, _samples: &[OutSample]) -> Result<()> {
        Err(Error::Storage("not implemented yet".into()))
    }
}

/// Serves the storage over the StoreAPI (Store + Info) until `shutdown` completes.
pub async fn serve(
    _storage: Arc<LocalStorage>,
    _listen: strata_storeapi::Listen,
    _opts: strata_storeapi::ServerOptions,
    _shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    Err(Error::Storage("StoreAPI serving is not implemented yet".into()))
}

/// Background upkeep until `shutdown` completes: cuts the head into blocks when due, ships new
/// blocks to `bucket` (when set) with the sidecar's shipper, applies local retention.
pub async fn run_background(
    _storage: Arc<LocalStorage>,
    _bucket: Option<strata_objstore::Bucket>,
    _registry: &mut Registry,
    _shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    Err(Error::Storage("block cutting and shipping are not implemented yet".into()))
}
