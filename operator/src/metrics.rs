//! The operator's own metrics and the API-write log that proves idleness.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-kind series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `MetricsCluster`, `StoreGateway` or `Compactor`.
    pub kind: &'static str,
}

/// Labels of error series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The resource kind.
    pub kind: &'static str,
    /// [`crate::Error::category`].
    pub category: &'static str,
}

/// Reconcile counters and durations per kind, and API writes.
#[derive(Debug)]
pub struct Metrics {
    /// Reconciles run.
    pub reconciles: Family<KindLabels, Counter>,
    /// Reconciles that failed.
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconcile durations.
    pub duration: Family<KindLabels, Histogram>,
    /// Write requests (anything but GET/HEAD/OPTIONS) the operator's client sent.
    pub api_writes: Counter,
}

impl Metrics {
    /// New metrics registered under `strata_operator_`.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Self {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 12))
            }),
            api_writes: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("strata_operator");
        r.register(
            "reconciles",
            "Reconciles run, by kind",
            m.reconciles.clone(),
        );
        r.register(
            "reconcile_errors",
            "Reconciles that failed, by kind and error category",
            m.errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Reconcile durations, by kind",
            m.duration.clone(),
        );
        r.register(
            "api_writes",
            "Write requests sent to the Kubernetes API",
            m.api_writes.clone(),
        );
        Arc::new(m)
    }
}

/// A log of the write requests a client sent (`METHOD path`), the newest [`WriteLog::CAPACITY`] kept.
#[derive(Debug, Clone, Default)]
pub struct WriteLog {
    count: Arc<AtomicU64>,
    recent: Arc<Mutex<VecDeque<String>>>,
    counter: Option<Counter>,
}

impl WriteLog {
    /// How many entries are kept.
    pub const CAPACITY: usize = 10_000;

    /// A log that also increments `counter` (e.g. [`Metrics::api_writes`]).
    pub fn with_counter(counter: Counter) -> Self {
        Self {
            counter: Some(counter),
            ..Self::default()
        }
    }

    /// Records one request if it writes.
    pub fn record(&self, method: &http::Method, path: &str) {
        if matches!(
            *method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        ) {
            return;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = &self.counter {
            c.inc();
        }
        if let Ok(mut r) = self.recent.lock() {
            if r.len() == Self::CAPACITY {
                r.pop_front();
            }
            r.push_back(format!("{method} {path}"));
        }
    }

    /// Writes recorded so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The recent writes, oldest first.
    pub fn recent(&self) -> Vec<String> {
        self.recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// A client whose every request passes through `log`.
pub fn logging_client(config: kube::Config, log: WriteLog) -> Result<kube::Client, kube::Error> {
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        log.record(req.method(), req.uri().path());
        req
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_not_writes() {
        let log = WriteLog::default();
        log.record(&http::Method::GET, "/api/v1/pods");
        log.record(
            &http::Method::PATCH,
            "/apis/apps/v1/namespaces/a/statefulsets/x",
        );
        log.record(
            &http::Method::DELETE,
            "/apis/apps/v1/namespaces/a/statefulsets/y",
        );
        assert_eq!(log.count(), 2);
        assert_eq!(
            log.recent(),
            vec![
                "PATCH /apis/apps/v1/namespaces/a/statefulsets/x".to_string(),
                "DELETE /apis/apps/v1/namespaces/a/statefulsets/y".to_string()
            ]
        );
    }
}
