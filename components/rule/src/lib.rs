//! The ruler: evaluates Prometheus-format rule files against the querier (or an embedded engine),
//! writes recording-rule results and the `ALERTS` series into its own TSDB (head + WAL + 2h blocks),
//! serves them over the StoreAPI, ships the blocks to the bucket, and sends alerts to Alertmanager.
//!
//! Data flow: [`rules`] (files) → [`eval`] (group loops, [`alerts`] state) → [`SampleSink`]
//! ([`storage`], or [`remote_write`] in stateless mode) and [`Notify`] ([`notifier`]); [`api`] serves the rules' and alerts' state.

pub mod alerts;
pub mod api;
pub mod error;
pub mod eval;
pub mod notifier;
pub mod query_restore;
pub mod remote_write;
pub mod rules;
pub mod run;
pub mod sd;
pub mod storage;
pub mod template;

pub use error::{Error, Result};
pub use run::{RuleConfig, run};

use std::collections::BTreeMap;

use strata_promql::Labels;

/// One sample a rule produced: a recording rule's output, or an `ALERTS` / `ALERTS_FOR_STATE`
/// sample. Timestamps are Unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct OutSample {
    /// The series' labels, `__name__` included.
    pub labels: Labels,
    /// Timestamp, Unix ms.
    pub t: i64,
    /// Value (a stale NaN marks a series that a rule stopped producing).
    pub v: f64,
}

/// Where rule results go: the ruler's local TSDB, or a remote-write receiver in stateless mode.
#[async_trait::async_trait]
pub trait SampleSink: Send + Sync {
    /// Appends one evaluation's samples. The local TSDB returns only once they are durable (in
    /// the WAL), so an acknowledged evaluation survives a restart; the stateless mode's
    /// [`remote_write::RemoteWrite`] returns once they are queued (in its WAL when it has one),
    /// not once a receiver has them.
    async fn append(&self, samples: &[OutSample]) -> Result<()>;
}

/// An alert as sent to Alertmanager (its API v2 `postableAlert`).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Identifying labels (`alertname` included, external labels added, dropped labels removed).
    pub labels: Labels,
    /// Annotations after template expansion.
    pub annotations: BTreeMap<String, String>,
    /// When the alert started firing, Unix ms.
    pub starts_at: i64,
    /// When it resolved (or until when it is valid if still firing), Unix ms.
    pub ends_at: Option<i64>,
    /// Link back to the ruler's expression view.
    pub generator_url: String,
}

/// Sends alerts to Alertmanager(s). Must not block the evaluation loop: implementations queue.
pub trait Notify: Send + Sync {
    /// Queues alerts for sending (firing and resolved alike).
    fn send(&self, alerts: Vec<Alert>);
}
