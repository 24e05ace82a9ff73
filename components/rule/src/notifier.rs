//! Alertmanager client (API v2, `POST /api/v2/alerts`): a bounded queue, batches, retries with
//! backoff, every configured (or DNS-discovered, see [`crate::sd`]) Alertmanager gets every
//! alert; `--alert.label-drop` applied.
//!
//! Delivery: alerts wait in one queue (the oldest are dropped, and counted, beyond its
//! capacity). A background task takes up to [`MAX_BATCH`] alerts and posts them to every
//! Alertmanager, retrying each with exponential backoff until the send timeout has passed. When
//! no Alertmanager took the batch, it goes back to the front of the queue and is retried after a
//! pause, so alerts raised while Alertmanager is down are delivered when it is back (the queue
//! bound still applies). An Alertmanager that failed while another succeeded misses that batch
//! (counted in the errors); the ruler re-sends firing alerts periodically anyway.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tracing::Instrument;

use tokio_util::sync::CancellationToken;

use crate::sd::{AlertmanagerSd, UrlList};
use crate::{Alert, Error, Notify, Result};

/// Most alerts per POST.
pub const MAX_BATCH: usize = 64;
/// First retry pause; doubled per attempt up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest retry pause.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where and how alerts are sent.
#[derive(Debug, Clone)]
pub struct NotifierOptions {
    /// Alertmanager base URLs (`--alertmanagers.url`, repeatable), e.g. `http://am:9093`, or
    /// `dns+host:port` / `dnssrv+name` to discover them.
    pub urls: Vec<String>,
    /// Per-request timeout (`--alertmanagers.send-timeout`).
    pub timeout: Duration,
    /// Alerts held while Alertmanagers are slow or down; the oldest are dropped (and counted) beyond it.
    pub queue_capacity: usize,
    /// Label names removed from alerts before sending (`--alert.label-drop`), so HA rulers'
    /// alerts de-duplicate in Alertmanager.
    pub label_drop: Vec<String>,
    /// How often `dns+`/`dnssrv+` URLs are resolved again (`--alertmanagers.sd-dns-interval`).
    pub dns_interval: Duration,
    /// A DNS server for SRV lookups instead of the system's (tests).
    pub dns_server: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Default)]
struct Metrics {
    sent: Family<Vec<(String, String)>, Counter>,
    errors: Family<Vec<(String, String)>, Counter>,
    dropped: Counter,
    queue_length: Gauge,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let sub = registry.sub_registry_with_prefix("strata_rule_alertmanager");
        sub.register(
            "alerts_sent",
            "Alerts accepted by an Alertmanager, per Alertmanager",
            m.sent.clone(),
        );
        sub.register(
            "errors",
            "Failed alert batch deliveries (after retries), per Alertmanager",
            m.errors.clone(),
        );
        sub.register(
            "alerts_dropped",
            "Alerts dropped because the queue was full",
            m.dropped.clone(),
        );
        sub.register(
            "queue_length",
            "Alerts waiting to be sent",
            m.queue_length.clone(),
        );
        m
    }
}

#[derive(Debug)]
struct Queue {
    alerts: Mutex<VecDeque<Alert>>,
    wake: tokio::sync::Notify,
    capacity: usize,
    metrics: Metrics,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Alert>> {
        self.alerts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds alerts at the back (or, for a batch put back, at the front), dropping the oldest
    /// beyond capacity.
    fn push(&self, alerts: Vec<Alert>, front: bool) {
        let mut q = self.lock();
        if front {
            for a in alerts.into_iter().rev() {
                q.push_front(a);
            }
        } else {
            q.extend(alerts);
        }
        let over = q.len().saturating_sub(self.capacity);
        if over > 0 {
            q.drain(..over);
            self.metrics.dropped.inc_by(over as u64);
            tracing::warn!(dropped = over, "alert queue full; oldest alerts dropped");
        }
        self.metrics.queue_length.set(q.len() as i64);
        drop(q);
        self.wake.notify_one();
    }

    fn take_batch(&self) -> Vec<Alert> {
        let mut q = self.lock();
        let n = q.len().min(MAX_BATCH);
        let batch: Vec<Alert> = q.drain(..n).collect();
        self.metrics.queue_length.set(q.len() as i64);
        batch
    }
}

/// Sends alerts to every configured Alertmanager from a background task.
#[derive(Debug)]
pub struct Alertmanagers {
    opts: NotifierOptions,
    queue: Arc<Queue>,
    task: tokio::task::JoinHandle<()>,
    sd_stop: CancellationToken,
}

impl Drop for Alertmanagers {
    fn drop(&mut self) {
        self.task.abort();
        self.sd_stop.cancel();
    }
}

impl Alertmanagers {
    /// Starts the sending task; it stops when the returned value is dropped. Must be called
    /// within a Tokio runtime.
    pub fn start(opts: NotifierOptions, registry: &mut Registry) -> Result<Self> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|e| Error::Notifier(format!("no async runtime to send alerts from: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(opts.timeout)
            .build()
            .map_err(|e| Error::Notifier(format!("HTTP client: {e}")))?;
        let sd = Arc::new(AlertmanagerSd::new(&opts.urls, opts.dns_server, registry)?);
        let endpoints = sd.urls();
        let sd_stop = CancellationToken::new();
        handle.spawn(
            sd.run(opts.dns_interval, sd_stop.clone())
                .instrument(tracing::info_span!("alertmanager_sd")),
        );
        let queue = Arc::new(Queue {
            alerts: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
            capacity: opts.queue_capacity.max(1),
            metrics: Metrics::register(registry),
        });
        let sender = Sender {
            client,
            endpoints,
            timeout: opts.timeout,
            queue: queue.clone(),
        };
        let task = handle.spawn(
            sender
                .run()
                .instrument(tracing::info_span!("alertmanager_sender")),
        );
        Ok(Self {
            opts,
            queue,
            task,
            sd_stop,
        })
    }

    /// Alerts waiting to be sent.
    pub fn queue_len(&self) -> usize {
        self.queue.lock().len()
    }
}

impl Notify for Alertmanagers {
    fn send(&self, alerts: Vec<Alert>) {
        if alerts.is_empty() || self.opts.urls.is_empty() {
            return;
        }
        self.queue
            .push(drop_labels(alerts, &self.opts.label_drop), false);
    }
}

/// Removes the `--alert.label-drop` labels from every alert.
fn drop_labels(alerts: Vec<Alert>, names: &[String]) -> Vec<Alert> {
    if names.is_empty() {
        return alerts;
    }
    alerts
        .into_iter()
        .map(|mut a| {
            a.labels = a.labels.drop(names);
            a
        })
        .collect()
}

/// The JSON shape of Alertmanager's `postableAlert`.
#[derive(Debug, Serialize)]
struct PostableAlert<'a> {
    labels: BTreeMap<&'a str, &'a str>,
    annotations: &'a BTreeMap<String, String>,
    #[serde(rename = "startsAt", skip_serializing_if = "Option::is_none")]
    starts_at: Option<String>,
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    ends_at: Option<String>,
    #[serde(rename = "generatorURL", skip_serializing_if = "str::is_empty")]
    generator_url: &'a str,
}

/// RFC 3339 with milliseconds, UTC (`None` for a time chrono cannot represent).
fn rfc3339(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// The request body for a batch.
pub fn encode_batch(alerts: &[Alert]) -> Vec<u8> {
    let body: Vec<PostableAlert<'_>> = alerts
        .iter()
        .map(|a| PostableAlert {
            labels: a
                .labels
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect(),
            annotations: &a.annotations,
            starts_at: rfc3339(a.starts_at),
            ends_at: a.ends_at.and_then(rfc3339),
            generator_url: &a.generator_url,
        })
        .collect();
    // Serializing maps of strings cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

struct Sender {
    client: reqwest::Client,
    /// Alertmanager base URLs, kept current by discovery.
    endpoints: UrlList,
    timeout: Duration,
    queue: Arc<Queue>,
}

impl Sender {
    async fn run(self) {
        let mut pause = MIN_BACKOFF;
        loop {
            let batch = self.queue.take_batch();
            if batch.is_empty() {
                self.queue.wake.notified().await;
                continue;
            }
            let body = encode_batch(&batch);
            let endpoints: Vec<String> = self
                .endpoints
                .get()
                .iter()
                .map(|u| format!("{}/api/v2/alerts", u.trim_end_matches('/')))
                .collect();
            // Every Alertmanager at once, so one that is down does not delay the others.
            let results = futures::future::join_all(
                endpoints.iter().map(|ep| self.post_with_retries(ep, &body)),
            )
            .await;
            let mut delivered = false;
            for (ep, result) in endpoints.iter().zip(results) {
                let label = vec![("alertmanager".to_string(), ep.clone())];
                match result {
                    Ok(()) => {
                        delivered = true;
                        self.queue
                            .metrics
                            .sent
                            .get_or_create(&label)
                            .inc_by(batch.len() as u64);
                    }
                    Err(e) => {
                        self.queue.metrics.errors.get_or_create(&label).inc();
                        tracing::warn!(alertmanager = %ep, error = %e, alerts = batch.len(), "sending alerts failed");
                    }
                }
            }
            if delivered {
                pause = MIN_BACKOFF;
            } else {
                // Nobody took it: keep it for when an Alertmanager is back.
                self.queue.push(batch, true);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Posts `body`, retrying with backoff until the timeout has passed.
    async fn post_with_retries(&self, url: &str, body: &[u8]) -> std::result::Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut pause = MIN_BACKOFF;
        loop {
            let r = self
                .client
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_vec())
                .send()
                .await;
            let err = match r {
                Ok(resp) if resp.status().is_success() => return Ok(()),
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    let e = format!("{status}: {}", text.trim());
                    // A 4xx (other than 429) will not get better by retrying.
                    if status.is_client_error() && status.as_u16() != 429 {
                        return Err(e);
                    }
                    e
                }
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() + pause > deadline {
                return Err(err);
            }
            tracing::debug!(alertmanager = %url, error = %err, "retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_promql::Labels;

    fn alert(name: &str, ends: Option<i64>) -> Alert {
        Alert {
            labels: Labels::new([
                ("alertname".to_string(), name.to_string()),
                ("replica".to_string(), "a".to_string()),
            ]),
            annotations: BTreeMap::from([("summary".to_string(), "s".to_string())]),
            starts_at: 1_700_000_000_123,
            ends_at: ends,
            generator_url: "http://ruler/graph".into(),
        }
    }

    #[test]
    fn batch_json_is_postable_alerts() {
        let body = encode_batch(&[alert("A", None), alert("B", Some(1_700_000_060_000))]);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v[0]["labels"]["alertname"], "A");
        assert_eq!(v[0]["startsAt"], "2023-11-14T22:13:20.123Z");
        assert!(v[0].get("endsAt").is_none());
        assert_eq!(v[1]["endsAt"], "2023-11-14T22:14:20.000Z");
        assert_eq!(v[1]["annotations"]["summary"], "s");
        assert_eq!(v[1]["generatorURL"], "http://ruler/graph");
    }

    #[test]
    fn queue_drops_oldest_beyond_capacity() {
        let q = Queue {
            alerts: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
            capacity: 3,
            metrics: Metrics::default(),
        };
        q.push(
            (0..5).map(|i| alert(&format!("a{i}"), None)).collect(),
            false,
        );
        assert_eq!(q.metrics.dropped.get(), 2);
        let b = q.take_batch();
        let names: Vec<&str> = b.iter().filter_map(|a| a.labels.get("alertname")).collect();
        assert_eq!(names, ["a2", "a3", "a4"]);
        // a batch put back goes first
        q.push(vec![alert("new", None)], false);
        q.push(vec![alert("back", None)], true);
        let b = q.take_batch();
        let names: Vec<&str> = b.iter().filter_map(|a| a.labels.get("alertname")).collect();
        assert_eq!(names, ["back", "new"]);
    }

    #[test]
    fn label_drop_removes_only_named_labels() {
        let out = drop_labels(vec![alert("A", None)], &["replica".to_string()]);
        assert_eq!(out[0].labels.get("replica"), None);
        assert_eq!(out[0].labels.get("alertname"), Some("A"));
        let kept = drop_labels(vec![alert("A", None)], &[]);
        assert_eq!(kept[0].labels.get("replica"), Some("a"));
    }

    #[test]
    fn start_needs_a_runtime() {
        let r = Alertmanagers::start(
            NotifierOptions {
                urls: vec!["http://127.0.0.1:1".into()],
                timeout: Duration::from_millis(50),
                queue_capacity: 10,
                label_drop: Vec::new(),
                dns_interval: Duration::from_secs(30),
                dns_server: None,
            },
            &mut Registry::default(),
        );
        assert!(matches!(r, Err(Error::Notifier(_))));
    }
}
