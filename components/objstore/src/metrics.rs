//! Per-operation metrics of a bucket.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `operation` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// `get`, `get_range`, `upload`, `exists`, `delete`, `iter`, `attributes`.
    pub operation: &'static str,
}

fn new_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.5, 12))
}

/// Counters and histograms of bucket operations (cheap to clone; clones share values).
#[derive(Debug, Clone)]
pub struct Metrics {
    pub(crate) ops: Family<OpLabels, Counter>,
    pub(crate) failures: Family<OpLabels, Counter>,
    pub(crate) duration: Family<OpLabels, Histogram, fn() -> Histogram>,
    pub(crate) bytes_read: Family<OpLabels, Counter>,
    pub(crate) bytes_written: Family<OpLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            ops: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(new_histogram),
            bytes_read: Family::default(),
            bytes_written: Family::default(),
        }
    }
}

impl Metrics {
    /// Registers the metrics (`strata_objstore_*`) on `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("strata_objstore");
        sub.register(
            "operations",
            "Bucket operations started, by operation",
            self.ops.clone(),
        );
        sub.register(
            "operation_failures",
            "Bucket operations that failed (a missing object on get/exists is not a failure)",
            self.failures.clone(),
        );
        sub.register(
            "operation_duration_seconds",
            "Duration of bucket operations, retries included",
            self.duration.clone(),
        );
        sub.register(
            "bytes_read",
            "Bytes read from the bucket",
            self.bytes_read.clone(),
        );
        sub.register(
            "bytes_written",
            "Bytes written to the bucket",
            self.bytes_written.clone(),
        );
    }
}
