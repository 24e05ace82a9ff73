//! Alertmanager client (API v2, `POST /api/v2/alerts`): a bounded queue, batches, retries with
//! backoff, every configured Alertmanager gets every alert; `--alert.label-drop` applied.
//!
//! CONTRACT (filled in by the notifier work; the signatures are what `run` wires together).

use std::time::Duration;

use prometheus_client::registry::Registry;

use crate::{Alert, Notify, Result};

/// Where and how alerts are sent.
#[derive(Debug, Clone)]
pub struct NotifierOptions {
    /// Alertmanager base URLs (`--alertmanagers.url`, repeatable), e.g. `http://am:9093`.
    pub urls: Vec<String>,
    /// Per-request timeout (`--alertmanagers.send-timeout`).
    pub timeout: Duration,
    /// Alerts held while Alertmanagers are slow or down; the oldest are dropped (and counted) beyond it.
    pub queue_capacity: usize,
    /// Label names removed from alerts before sending (`--alert.label-drop`), so HA rulers'
    /// alerts de-duplicate in Alertmanager.
    pub label_drop: Vec<String>,
}

/// Sends alerts to every configured Alertmanager from a background task.
#[derive(Debug)]
pub struct Alertmanagers {
    _opts: NotifierOptions,
}

impl Alertmanagers {
    /// Starts the sending task; it stops when the returned value is dropped.
    pub fn start(opts: NotifierOptions, _registry: &mut Registry) -> Result<Self> {
        Ok(Self { _opts: opts })
    }
}

impl Notify for Alertmanagers {
    fn send(&self, _alerts: Vec<Alert>) {}
}
