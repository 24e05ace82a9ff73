//! Background upkeep: cutting blocks when due, shipping them with the sidecar's shipper, and
//! local retention.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use strata_shipper::{SHIPPER_META_FILENAME, Shipper, ShipperMeta, ShipperOptions};
use tracing::Instrument;

use super::LocalStorage;
use crate::{Error, Result};

/// How often the head is checked for a due cut (and new blocks shipped).
const CHECK_INTERVAL: Duration = Duration::from_secs(15);

/// Background upkeep until `shutdown` completes: cuts the head into blocks when due, ships new
/// blocks to `bucket` (when set) with the sidecar's shipper, applies local retention.
///
/// The shipper's metrics are registered in `registry` when this is called; the returned future
/// does the work (spawn it).
pub fn run_background<F>(
    storage: Arc<LocalStorage>,
    bucket: Option<strata_objstore::Bucket>,
    registry: &mut Registry,
    shutdown: F,
) -> impl Future<Output = Result<()>> + Send + use<F>
where
    F: Future<Output = ()> + Send,
{
    let ext = storage.opts.external_labels.iter().cloned().collect();
    let shipper = bucket.map(|b| {
        Shipper::new(
            storage.opts.dir.clone(),
            b,
            ext,
            ShipperOptions {
                source: "ruler".into(),
                ..Default::default()
            },
            registry,
        )
    });
    async move {
        if let Some(s) = &shipper {
            s.init()
                .map_err(|e| Error::Storage(format!("shipper meta file: {e}")))?;
        }
        let mut shutdown = std::pin::pin!(shutdown);
        let mut tick = tokio::time::interval(CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {}
            }
            upkeep(&storage, shipper.as_ref())
                .instrument(tracing::info_span!("storage_upkeep"))
                .await;
        }
        // A last pass so blocks cut just before shutdown are shipped.
        if let Some(s) = &shipper
            && let Err(e) = s.sync().await
        {
            tracing::warn!(error = %e, "final shipping pass failed");
        }
        Ok(())
    }
}

/// One round: cut, ship, retention. Errors are logged; the next round retries.
pub(super) async fn upkeep(storage: &Arc<LocalStorage>, shipper: Option<&Shipper>) {
    let s = storage.clone();
    match tokio::task::spawn_blocking(move || s.cut_due_blocks()).await {
        Ok(Ok(cut)) if !cut.is_empty() => tracing::info!(blocks = ?cut, "cut blocks"),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cutting a block failed; retrying later"),
        Err(e) => tracing::error!(error = %e, "block cutting task failed"),
    }
    let shipped: Option<HashSet<ulid::Ulid>> = match shipper {
        None => None,
        Some(sh) => {
            if let Err(e) = sh.sync().await {
                tracing::error!(error = %e, "shipping failed; retrying later");
            }
            let path = storage.opts.dir.join(SHIPPER_META_FILENAME);
            match ShipperMeta::read(&path) {
                Ok(m) => Some(
                    m.map(|m| m.uploaded.into_iter().collect())
                        .unwrap_or_default(),
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the shipper meta file failed; no retention this round");
                    return;
                }
            }
        }
    };
    let s = storage.clone();
    match tokio::task::spawn_blocking(move || s.apply_retention(shipped.as_ref())).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "local retention failed"),
        Err(e) => tracing::error!(error = %e, "retention task failed"),
    }
}
