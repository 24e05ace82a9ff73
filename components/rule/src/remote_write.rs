//! Stateless mode: a [`SampleSink`] that sends rule results to Prometheus-compatible receivers
//! with the remote-write 1.0 protocol (snappy-compressed protobuf `prometheus.WriteRequest`).
//!
//! Each endpoint has its own bounded in-memory queue and one sender task: samples are batched
//! (up to `max_samples_per_send`, or what is pending after `batch_send_deadline`), sent in order,
//! and retried with exponential backoff on connection errors, 5xx and 429. Any other 4xx drops the
//! batch (logged and counted), as Prometheus does.
//!
//! Without a WAL directory an acknowledged [`SampleSink::append`] means *queued in memory*, not
//! durable. With one (the ruler uses `<data-dir>/remote-write/<endpoint>/`) every appended batch
//! is fsynced to the storage's WAL format first and replayed into the queue on start; the log is
//! rewritten to what is still queued after a batch leaves (when the queue is empty, or past
//! 32 MiB). Delivery is then at least once: samples sent just before a crash may be sent again
//! (a receiver takes an identical sample as a no-op).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use prost::Message;
use serde::Deserialize;
use strata_promql::Labels;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::rules::parse_duration;
use crate::storage::wal::Wal;
use crate::{Error, OutSample, Result, SampleSink};

/// The remote-write 1.0 messages (`prometheus.WriteRequest` and the types it holds), written
/// with prost derives; field numbers as in Prometheus's `prompb` protos.
pub mod proto {
    /// A batch of series sent in one request.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        /// The series with their samples.
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// One series: its labels (sorted by name, `__name__` included) and samples (by time).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// The labels.
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        /// The samples.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    /// A label pair.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        /// Name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Value.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// A float sample.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// Value.
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Timestamp, Unix ms.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

/// The `remote_write:` file of `--remote-write.config(-file)`: a subset of Prometheus's
/// configuration (unknown fields are rejected, not ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteFile {
    /// The endpoints.
    #[serde(default)]
    pub remote_write: Vec<EndpointConfig>,
}

impl RemoteWriteFile {
    /// Parses the YAML text.
    pub fn parse(yaml: &str) -> Result<Self> {
        let f: Self = serde_norway::from_str(yaml)
            .map_err(|e| Error::Config(format!("remote-write config: {e}")))?;
        for e in &f.remote_write {
            e.validate()?;
        }
        Ok(f)
    }
}

/// One remote-write endpoint (Prometheus `remote_write` entry, subset).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Receiver URL, e.g. `http://prometheus:9090/api/v1/write`.
    pub url: String,
    /// Name used in metrics and logs (default: the URL).
    #[serde(default)]
    pub name: Option<String>,
    /// Timeout of one request (default 30s).
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    pub remote_timeout: Duration,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// HTTP basic authentication.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// Queueing and retry settings.
    #[serde(default)]
    pub queue_config: QueueConfig,
}

impl EndpointConfig {
    /// An endpoint with default settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            name: None,
            remote_timeout: default_timeout(),
            headers: BTreeMap::new(),
            basic_auth: None,
            queue_config: QueueConfig::default(),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("remote write {}: {m}", self.url)));
        if let Err(e) = url::Url::parse(&self.url) {
            return bad(format!("bad url: {e}"));
        }
        let q = &self.queue_config;
        if q.max_samples_per_send == 0 || q.capacity == 0 {
            return bad("max_samples_per_send and capacity must be positive".into());
        }
        if q.min_backoff.is_zero() || q.min_backoff > q.max_backoff {
            return bad("min_backoff must be positive and at most max_backoff".into());
        }
        Ok(())
    }

    fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.url.clone())
    }
}

/// HTTP basic authentication (`password` or `password_file`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// File holding the password (read at startup).
    #[serde(default)]
    pub password_file: Option<String>,
}

/// Queueing and retry settings of one endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Most samples kept queued; beyond it the oldest are dropped and counted (default 100000).
    pub capacity: usize,
    /// Most samples per request (default 2000).
    pub max_samples_per_send: usize,
    /// Longest a sample waits for a batch to fill (default 5s).
    #[serde(deserialize_with = "de_duration")]
    pub batch_send_deadline: Duration,
    /// First retry delay (default 30ms), doubled per retry.
    #[serde(deserialize_with = "de_duration")]
    pub min_backoff: Duration,
    /// Longest retry delay (default 5s).
    #[serde(deserialize_with = "de_duration")]
    pub max_backoff: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            max_samples_per_send: 2000,
            batch_send_deadline: Duration::from_secs(5),
            min_backoff: Duration::from_millis(30),
            max_backoff: Duration::from_secs(5),
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).ok_or_else(|| serde::de::Error::custom(format!("bad duration {s:?}")))
}

/// The metrics' label: which endpoint.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RemoteLabel {
    remote_name: String,
}

#[derive(Debug, Clone)]
struct Metrics {
    sent: Family<RemoteLabel, Counter>,
    failed: Family<RemoteLabel, Counter>,
    retried: Family<RemoteLabel, Counter>,
    dropped: Family<RemoteLabel, Counter>,
    pending: Family<RemoteLabel, Gauge>,
    duration: Family<RemoteLabel, Histogram>,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 12))
            }),
            sent: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            dropped: Family::default(),
            pending: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("strata_rule_remote_write");
        r.register(
            "samples_sent",
            "Samples the receiver accepted.",
            m.sent.clone(),
        );
        r.register(
            "samples_failed",
            "Samples dropped because the receiver rejected them (4xx other than 429).",
            m.failed.clone(),
        );
        r.register(
            "samples_retried",
            "Samples sent again after a recoverable error (connection, 5xx, 429).",
            m.retried.clone(),
        );
        r.register(
            "samples_dropped",
            "Samples dropped unsent: queue over capacity, or still queued at shutdown.",
            m.dropped.clone(),
        );
        r.register(
            "samples_pending",
            "Samples queued or in flight.",
            m.pending.clone(),
        );
        r.register_with_unit(
            "send_duration",
            "Duration of one remote-write request.",
            Unit::Seconds,
            m.duration.clone(),
        );
        m
    }
}

/// One endpoint's queue and client.
struct Endpoint {
    config: EndpointConfig,
    label: RemoteLabel,
    client: reqwest::Client,
    password: Option<String>,
    /// The queue's write-ahead log (lock order: `wal`, then `queue`), when a directory is set.
    wal: Option<Mutex<Wal>>,
    queue: Mutex<VecDeque<OutSample>>,
    in_flight: Mutex<usize>,
    wake: tokio::sync::Notify,
    metrics: Metrics,
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How one send ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    Sent,
    /// Try again later (after at least this long, when the receiver said so).
    Retry(String, Option<Duration>),
    /// The receiver rejected the batch for good.
    Rejected(String),
}

impl Endpoint {
    fn new(config: EndpointConfig, metrics: Metrics, wal_root: Option<&Path>) -> Result<Self> {
        config.validate()?;
        let mut queue = VecDeque::new();
        let wal = match wal_root {
            Some(root) => {
                let dir = root.join(format!("{:016x}", fnv64(&config.name())));
                let (wal, replay) = Wal::open(&dir)?;
                let keep = replay.samples.len().min(config.queue_config.capacity);
                let skip = replay.samples.len() - keep;
                if !replay.samples.is_empty() {
                    tracing::info!(remote = %config.name(), samples = keep, dropped = skip, "remote-write queue replayed from its WAL");
                }
                queue.extend(replay.samples.into_iter().skip(skip));
                Some(Mutex::new(wal))
            }
            None => None,
        };
        let client = reqwest::Client::builder()
            .timeout(config.remote_timeout)
            .user_agent(concat!("strata-rule/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("http client: {e}")))?;
        let password = match &config.basic_auth {
            Some(BasicAuth {
                password_file: Some(f),
                ..
            }) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| Error::Config(format!("read password_file {f}: {e}")))?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
            ),
            Some(b) => b.password.clone(),
            None => None,
        };
        let e = Self {
            label: RemoteLabel {
                remote_name: config.name(),
            },
            config,
            client,
            password,
            wal,
            queue: Mutex::new(queue),
            in_flight: Mutex::new(0),
            wake: tokio::sync::Notify::new(),
            metrics,
        };
        e.update_pending();
        Ok(e)
    }

    fn update_pending(&self) {
        let n = guard(&self.queue).len() + *guard(&self.in_flight);
        self.metrics
            .pending
            .get_or_create(&self.label)
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn push(&self, samples: &[OutSample]) -> Result<()> {
        let over = {
            let mut wal = self.wal.as_ref().map(guard);
            if let Some(w) = wal.as_mut() {
                w.append(samples)?;
            }
            let mut q = guard(&self.queue);
            q.extend(samples.iter().cloned());
            let over = q.len().saturating_sub(self.config.queue_config.capacity);
            q.drain(..over);
            over
        };
        if over > 0 {
            tracing::warn!(remote = %self.label.remote_name, dropped = over, "remote-write queue full; dropped the oldest samples");
            self.metrics
                .dropped
                .get_or_create(&self.label)
                .inc_by(over as u64);
        }
        self.update_pending();
        self.wake.notify_one();
        Ok(())
    }

    /// After a batch left the queue: shrinks the WAL to what is still queued, when the queue is
    /// empty (cheap) or the log has grown past 32 MiB.
    fn checkpoint(&self) {
        let Some(wal) = &self.wal else { return };
        let mut wal = guard(wal);
        let q = guard(&self.queue);
        if !q.is_empty() && wal.size() < 32 << 20 {
            return;
        }
        let (a, b) = q.as_slices();
        let pending: Vec<OutSample> = a.iter().chain(b).cloned().collect();
        drop(q);
        if let Err(e) = wal.rewrite(&pending) {
            tracing::warn!(remote = %self.label.remote_name, error = %e, "remote-write WAL checkpoint failed");
        }
    }

    /// Takes up to one batch from the queue, marking it in flight.
    fn take_batch(&self) -> Vec<OutSample> {
        let mut q = guard(&self.queue);
        let n = q.len().min(self.config.queue_config.max_samples_per_send);
        let batch: Vec<OutSample> = q.drain(..n).collect();
        *guard(&self.in_flight) = batch.len();
        batch
    }

    fn queued(&self) -> usize {
        guard(&self.queue).len()
    }

    /// Sends one encoded request once.
    async fn send_once(&self, body: &[u8]) -> Outcome {
        let mut req = self
            .client
            .post(&self.config.url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0");
        for (k, v) in &self.config.headers {
            req = req.header(k, v);
        }
        if let Some(b) = &self.config.basic_auth {
            req = req.basic_auth(&b.username, self.password.as_ref());
        }
        let started = Instant::now();
        let resp = req.body(body.to_vec()).send().await;
        self.metrics
            .duration
            .get_or_create(&self.label)
            .observe(started.elapsed().as_secs_f64());
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(format!("send: {e}"), None),
        };
        let status = resp.status();
        if status.is_success() {
            return Outcome::Sent;
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        let msg = format!("{status}: {}", text.chars().take(256).collect::<String>());
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Outcome::Retry(msg, retry_after)
        } else {
            Outcome::Rejected(msg)
        }
    }

    /// Sends `batch`, retrying recoverable errors with backoff until it goes through, is
    /// rejected, or `stop` is cancelled (then at most one more attempt is made). Returns false
    /// when it gave up at shutdown with a WAL, which keeps the batch for the next start.
    #[tracing::instrument(skip_all, fields(remote = %self.label.remote_name, samples = batch.len()))]
    async fn send_batch(&self, batch: Vec<OutSample>, stop: &CancellationToken) -> bool {
        let n = batch.len() as u64;
        let body = match encode(&batch) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "encoding a remote-write batch failed; dropped");
                self.metrics.failed.get_or_create(&self.label).inc_by(n);
                return true;
            }
        };
        let qc = &self.config.queue_config;
        let mut backoff = qc.min_backoff;
        loop {
            match self.send_once(&body).await {
                Outcome::Sent => {
                    self.metrics.sent.get_or_create(&self.label).inc_by(n);
                    return true;
                }
                Outcome::Rejected(msg) => {
                    tracing::error!(error = %msg, "remote-write receiver rejected a batch; dropped");
                    self.metrics.failed.get_or_create(&self.label).inc_by(n);
                    return true;
                }
                Outcome::Retry(msg, after) => {
                    if stop.is_cancelled() {
                        if self.wal.is_some() {
                            tracing::warn!(error = %msg, "remote write failed at shutdown; the queue stays in the WAL");
                            return false;
                        }
                        tracing::warn!(error = %msg, "remote write failed at shutdown; batch dropped");
                        self.metrics.dropped.get_or_create(&self.label).inc_by(n);
                        return true;
                    }
                    tracing::warn!(error = %msg, backoff = ?backoff, "remote write failed; retrying");
                    self.metrics.retried.get_or_create(&self.label).inc_by(n);
                    let wait = after.map_or(backoff, |a| a.max(backoff));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(qc.max_backoff);
                }
            }
        }
    }

    /// The sender loop: batches and sends until `stop`, then sends what is still queued once.
    async fn run(self: Arc<Self>, stop: CancellationToken) {
        let qc = self.config.queue_config.clone();
        loop {
            // Wait for a first sample, then until the batch is full or the deadline passes.
            while self.queued() == 0 {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = stop.cancelled() => return,
                }
            }
            let deadline = tokio::time::Instant::now() + qc.batch_send_deadline;
            while self.queued() < qc.max_samples_per_send && !stop.is_cancelled() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = stop.cancelled() => break,
                }
            }
            let batch = self.take_batch();
            self.update_pending();
            if !self.send_batch(batch, &stop).await {
                // Shutting down with the receiver unreachable: the WAL keeps everything unsent.
                return;
            }
            *guard(&self.in_flight) = 0;
            self.checkpoint();
            self.update_pending();
            if stop.is_cancelled() && self.queued() == 0 {
                return;
            }
        }
    }
}

/// FNV-1a, a stable name for an endpoint's WAL directory.
fn fnv64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Encodes samples as one snappy-compressed `WriteRequest`: one `TimeSeries` per label set (in
/// order of first appearance), samples in the order given.
pub fn encode(samples: &[OutSample]) -> Result<Vec<u8>> {
    let mut index: HashMap<&Labels, usize> = HashMap::new();
    let mut req = proto::WriteRequest::default();
    for s in samples {
        let i = *index.entry(&s.labels).or_insert_with(|| {
            req.timeseries.push(proto::TimeSeries {
                labels: s
                    .labels
                    .iter()
                    .map(|(name, value)| proto::Label {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                samples: Vec::new(),
            });
            req.timeseries.len() - 1
        });
        req.timeseries[i].samples.push(proto::Sample {
            value: s.v,
            timestamp: s.t,
        });
    }
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .map_err(|e| Error::Config(format!("snappy: {e}")))
}

/// Decodes what [`encode`] produces (for tests and debugging).
pub fn decode(body: &[u8]) -> Result<proto::WriteRequest> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| Error::Query(format!("snappy: {e}")))?;
    proto::WriteRequest::decode(raw.as_slice()).map_err(|e| Error::Query(format!("protobuf: {e}")))
}

/// Adds the external labels a series does not already have.
fn with_external(labels: &Labels, external: &Labels) -> Labels {
    if external.is_empty() {
        return labels.clone();
    }
    let mut out = labels.clone();
    for (k, v) in external.iter() {
        if labels.get(k).is_none() {
            out.set(k, v);
        }
    }
    out
}

/// The stateless ruler's sink: queues samples (external labels added) for every endpoint.
pub struct RemoteWrite {
    endpoints: Vec<Arc<Endpoint>>,
    external_labels: Labels,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for RemoteWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWrite")
            .field(
                "endpoints",
                &self
                    .endpoints
                    .iter()
                    .map(|e| &e.config.url)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl RemoteWrite {
    /// Starts one sender per endpoint; they run until `stop`, then send what is queued once.
    /// Must be called within a Tokio runtime.
    pub fn start(
        endpoints: Vec<EndpointConfig>,
        external_labels: Labels,
        wal_dir: Option<&Path>,
        registry: &mut Registry,
        stop: CancellationToken,
    ) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(Error::Config("no remote-write endpoint".into()));
        }
        let metrics = Metrics::register(registry);
        let endpoints = endpoints
            .into_iter()
            .map(|c| Endpoint::new(c, metrics.clone(), wal_dir).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let tasks = endpoints
            .iter()
            .map(|e| tokio::spawn(e.clone().run(stop.clone())))
            .collect();
        Ok(Self {
            endpoints,
            external_labels,
            tasks: Mutex::new(tasks),
        })
    }

    /// Waits for the senders to finish (after `stop` was cancelled).
    pub async fn join(&self) {
        let tasks: Vec<_> = guard(&self.tasks).drain(..).collect();
        for t in tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "remote-write sender panicked");
            }
        }
    }
}

#[async_trait::async_trait]
impl SampleSink for RemoteWrite {
    /// Queues the samples for every endpoint (in its WAL first, when there is one) and returns;
    /// it does not wait for the receivers.
    async fn append(&self, samples: &[OutSample]) -> Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        let labelled: Vec<OutSample> = samples
            .iter()
            .map(|s| OutSample {
                labels: with_external(&s.labels, &self.external_labels),
                t: s.t,
                v: s.v,
            })
            .collect();
        for e in &self.endpoints {
            e.push(&labelled)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    fn sample(name: &str, t: i64, v: f64) -> OutSample {
        OutSample {
            labels: Labels::new([
                ("__name__".to_string(), name.to_string()),
                ("job".to_string(), "a".to_string()),
            ]),
            t,
            v,
        }
    }

    #[test]
    fn encoding_round_trips_through_prost() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let samples = vec![
            sample("x", 1000, 1.5),
            sample("y", 1000, 2.0),
            sample("x", 2000, stale),
        ];
        let req = decode(&encode(&samples).expect("encode")).expect("decode");
        assert_eq!(req.timeseries.len(), 2);
        let x = &req.timeseries[0];
        let names: Vec<_> = x.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "job"], "labels sorted by name");
        assert_eq!(x.labels[0].value, "x");
        assert_eq!(x.samples.len(), 2);
        assert_eq!((x.samples[0].timestamp, x.samples[0].value), (1000, 1.5));
        assert_eq!(
            x.samples[1].value.to_bits(),
            stale.to_bits(),
            "stale marker bits kept"
        );
        assert_eq!(req.timeseries[1].samples[0].value, 2.0);
    }

    #[test]
    fn external_labels_added_but_never_override() {
        let ext = Labels::new([
            ("ruler".to_string(), "r1".to_string()),
            ("job".to_string(), "ext".to_string()),
        ]);
        let l = with_external(&sample("x", 0, 0.0).labels, &ext);
        assert_eq!(l.get("ruler"), Some("r1"));
        assert_eq!(l.get("job"), Some("a"));
    }

    #[test]
    fn config_file_subset_parses_and_rejects_unknown_fields() {
        let f = RemoteWriteFile::parse(
            "remote_write:\n- url: http://r/api/v1/write\n  remote_timeout: 10s\n  headers: {X-A: b}\n  basic_auth: {username: u, password: p}\n  queue_config:\n    max_samples_per_send: 10\n    batch_send_deadline: 1s\n    min_backoff: 10ms\n    max_backoff: 1s\n",
        )
        .expect("parse");
        let e = &f.remote_write[0];
        assert_eq!(e.remote_timeout, Duration::from_secs(10));
        assert_eq!(e.queue_config.max_samples_per_send, 10);
        assert_eq!(e.queue_config.capacity, 100_000, "default kept");
        assert_eq!(e.queue_config.min_backoff, Duration::from_millis(10));
        assert_eq!(e.headers["X-A"], "b");
        assert!(
            RemoteWriteFile::parse("remote_write:\n- url: http://r\n  tls_config: {}\n").is_err()
        );
        assert!(
            RemoteWriteFile::parse(
                "remote_write:\n- url: http://r\n  queue_config: {min_backoff: 2s, max_backoff: 1s}\n"
            )
            .is_err()
        );
        assert!(RemoteWriteFile::parse("remote_write:\n- url: 'not a url'\n").is_err());
    }

    /// A receiver that answers with the given statuses in turn (then 204) and keeps every
    /// request it got.
    struct Fake {
        url: String,
        got: Arc<Mutex<Vec<(HeaderMap, proto::WriteRequest)>>>,
    }

    async fn fake(statuses: Vec<u16>) -> Fake {
        let got: Arc<Mutex<Vec<(HeaderMap, proto::WriteRequest)>>> = Arc::default();
        let answers = Arc::new(Mutex::new(VecDeque::from(statuses)));
        let g = got.clone();
        let app = axum::Router::new().route(
            "/api/v1/write",
            post(move |headers: HeaderMap, body: Bytes| {
                let (g, answers) = (g.clone(), answers.clone());
                async move {
                    let req = decode(&body).expect("body decodes");
                    guard(&g).push((headers, req));
                    let code = guard(&answers).pop_front().unwrap_or(204);
                    StatusCode::from_u16(code).expect("status")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Fake {
            url: format!("http://{addr}/api/v1/write"),
            got,
        }
    }

    fn config(url: &str) -> EndpointConfig {
        let mut c = EndpointConfig::new(url);
        c.queue_config.max_samples_per_send = 2;
        c.queue_config.batch_send_deadline = Duration::from_millis(20);
        c.queue_config.min_backoff = Duration::from_millis(5);
        c.queue_config.max_backoff = Duration::from_millis(20);
        c.headers.insert("X-Scope-OrgID".into(), "t1".into());
        c
    }

    async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..2000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("timed out waiting for {what}");
    }

    fn value(registry: &Registry, metric: &str) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text.lines()
            .find(|l| l.starts_with(metric))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    #[tokio::test]
    async fn batches_carry_headers_labels_and_retry_5xx_and_429_in_order() {
        let f = fake(vec![503, 429]).await;
        let mut registry = Registry::default();
        let stop = CancellationToken::new();
        let ext = Labels::new([("ruler".to_string(), "r1".to_string())]);
        let rw = RemoteWrite::start(vec![config(&f.url)], ext, None, &mut registry, stop.clone())
            .expect("start");
        rw.append(&[
            sample("x", 1, 1.0),
            sample("x", 2, 2.0),
            sample("x", 3, 3.0),
        ])
        .await
        .expect("append");
        wait_for("all samples sent", || {
            value(&registry, "strata_rule_remote_write_samples_sent_total") == 3.0
        })
        .await;
        let got = guard(&f.got).clone();
        // The first batch (2 samples) was refused twice, then taken; then the last sample.
        assert_eq!(got.len(), 4);
        let (h, first) = &got[0];
        assert_eq!(h["content-encoding"], "snappy");
        assert_eq!(h["content-type"], "application/x-protobuf");
        assert_eq!(h["x-prometheus-remote-write-version"], "0.1.0");
        assert_eq!(h["x-scope-orgid"], "t1");
        assert!(
            h["user-agent"]
                .to_str()
                .expect("ua")
                .starts_with("strata-rule/")
        );
        let ts = &first.timeseries[0];
        assert!(
            ts.labels
                .iter()
                .any(|l| l.name == "ruler" && l.value == "r1")
        );
        assert_eq!(got[0].1, got[2].1, "the retried batch is the same batch");
        let accepted: Vec<i64> = [&got[2].1, &got[3].1]
            .iter()
            .flat_map(|r| {
                r.timeseries
                    .iter()
                    .flat_map(|s| s.samples.iter().map(|x| x.timestamp))
            })
            .collect();
        assert_eq!(accepted, [1, 2, 3], "each sample accepted once, in order");
        assert_eq!(
            value(&registry, "strata_rule_remote_write_samples_retried_total"),
            4.0
        );
        assert_eq!(
            value(&registry, "strata_rule_remote_write_samples_pending"),
            0.0
        );
        stop.cancel();
        rw.join().await;
    }

    #[tokio::test]
    async fn a_4xx_drops_the_batch_and_later_samples_still_go() {
        let f = fake(vec![400]).await;
        let mut registry = Registry::default();
        let stop = CancellationToken::new();
        let rw = RemoteWrite::start(
            vec![config(&f.url)],
            Labels::default(),
            None,
            &mut registry,
            stop.clone(),
        )
        .expect("start");
        rw.append(&[sample("x", 1, 1.0), sample("x", 2, 2.0)])
            .await
            .expect("append");
        wait_for("the batch rejected", || {
            value(&registry, "strata_rule_remote_write_samples_failed_total") == 2.0
        })
        .await;
        rw.append(&[sample("x", 3, 3.0)]).await.expect("append");
        wait_for("the next sample sent", || {
            value(&registry, "strata_rule_remote_write_samples_sent_total") == 1.0
        })
        .await;
        assert_eq!(guard(&f.got).len(), 2, "the rejected batch is not retried");
        stop.cancel();
        rw.join().await;
    }

    #[tokio::test]
    async fn wal_keeps_unsent_samples_for_the_next_start() {
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let down = format!(
            "http://{}/api/v1/write",
            listener.local_addr().expect("addr")
        );
        drop(listener);
        let named = |url: &str| {
            let mut c = config(url);
            c.name = Some("rw".into());
            c
        };
        let mut registry = Registry::default();
        let stop = CancellationToken::new();
        let rw = RemoteWrite::start(
            vec![named(&down)],
            Labels::default(),
            Some(dir.path()),
            &mut registry,
            stop.clone(),
        )
        .expect("start");
        rw.append(&[
            sample("x", 1, 1.0),
            sample("x", 2, 2.0),
            sample("x", 3, 3.0),
        ])
        .await
        .expect("append");
        wait_for("retries", || {
            value(&registry, "strata_rule_remote_write_samples_retried_total") >= 2.0
        })
        .await;
        stop.cancel();
        rw.join().await;
        assert_eq!(
            value(&registry, "strata_rule_remote_write_samples_dropped_total"),
            0.0
        );

        // Started again (same name, now a receiver that answers): the WAL's samples are sent.
        let f = fake(vec![]).await;
        let mut registry = Registry::default();
        let stop = CancellationToken::new();
        let rw = RemoteWrite::start(
            vec![named(&f.url)],
            Labels::default(),
            Some(dir.path()),
            &mut registry,
            stop.clone(),
        )
        .expect("restart");
        wait_for("replayed samples sent", || {
            value(&registry, "strata_rule_remote_write_samples_sent_total") == 3.0
        })
        .await;
        let got: Vec<i64> = guard(&f.got)
            .iter()
            .flat_map(|(_, r)| {
                r.timeseries
                    .iter()
                    .flat_map(|s| s.samples.iter().map(|x| x.timestamp))
            })
            .collect();
        assert_eq!(got, [1, 2, 3]);
        stop.cancel();
        rw.join().await;

        // Everything was delivered: a third start has nothing to replay.
        let mut registry = Registry::default();
        let stop = CancellationToken::new();
        let rw = RemoteWrite::start(
            vec![named(&down)],
            Labels::default(),
            Some(dir.path()),
            &mut registry,
            stop.clone(),
        )
        .expect("third start");
        assert_eq!(
            value(&registry, "strata_rule_remote_write_samples_pending"),
            0.0
        );
        stop.cancel();
        rw.join().await;
    }

    #[tokio::test]
    async fn queue_over_capacity_drops_oldest_and_unreachable_receiver_is_retried() {
        // Nothing listens on this port: every send is a connection error.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://{}/api/v1/write",
            listener.local_addr().expect("addr")
        );
        drop(listener);
        let mut c = config(&url);
        c.queue_config.capacity = 3;
        let mut registry = Registry::default();
        let stop = CancellationToken::new();
        let rw = RemoteWrite::start(
            vec![c],
            Labels::default(),
            None,
            &mut registry,
            stop.clone(),
        )
        .expect("start");
        rw.append(&[sample("x", 1, 1.0), sample("x", 2, 2.0)])
            .await
            .expect("append");
        wait_for("retries", || {
            value(&registry, "strata_rule_remote_write_samples_retried_total") >= 4.0
        })
        .await;
        // In flight: 2; queued: 3 of these 5 (the 2 oldest dropped).
        rw.append(&[
            sample("x", 3, 3.0),
            sample("x", 4, 4.0),
            sample("x", 5, 5.0),
            sample("x", 6, 6.0),
            sample("x", 7, 7.0),
        ])
        .await
        .expect("append");
        assert_eq!(
            value(&registry, "strata_rule_remote_write_samples_dropped_total"),
            2.0
        );
        assert_eq!(
            value(&registry, "strata_rule_remote_write_samples_pending"),
            5.0
        );
        stop.cancel();
        rw.join().await;
        assert_eq!(
            value(&registry, "strata_rule_remote_write_samples_sent_total"),
            0.0
        );
        assert_eq!(
            value(&registry, "strata_rule_remote_write_samples_dropped_total"),
            7.0,
            "unsent samples at shutdown are counted as dropped"
        );
    }
}
