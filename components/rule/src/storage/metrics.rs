//! The local storage's metrics (`strata_rule_storage_*`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Default)]
pub(super) struct Metrics {
    pub head_series: Gauge,
    pub samples_appended: Counter,
    pub samples_rejected: Counter,
    pub wal_size: Gauge,
    pub blocks_cut: Counter,
    pub blocks_deleted: Counter,
    pub local_blocks: Gauge,
}

impl Metrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let sub = registry.sub_registry_with_prefix("strata_rule_storage");
        sub.register(
            "head_series",
            "Series in the in-memory head",
            m.head_series.clone(),
        );
        sub.register(
            "samples_appended",
            "Samples written to the WAL and the head",
            m.samples_appended.clone(),
        );
        sub.register(
            "samples_rejected",
            "Samples rejected as out of order (older than their series' last sample, or inside a cut block's range)",
            m.samples_rejected.clone(),
        );
        sub.register(
            "wal_size_bytes",
            "Size of the write-ahead log",
            m.wal_size.clone(),
        );
        sub.register(
            "blocks_cut",
            "Blocks written from the head",
            m.blocks_cut.clone(),
        );
        sub.register(
            "blocks_deleted",
            "Local blocks deleted by retention",
            m.blocks_deleted.clone(),
        );
        sub.register(
            "local_blocks",
            "Blocks in the data directory",
            m.local_blocks.clone(),
        );
        m
    }
}
