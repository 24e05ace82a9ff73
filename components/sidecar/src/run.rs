//! Starting and running the sidecar: wait for Prometheus, read its external labels, serve gRPC.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use strata_runtime::{Readiness, Shutdown};
use strata_storeapi::{Listen, ServerOptions, ServerTlsFiles};
use tokio::net::TcpListener;

use strata_objstore::Bucket;
use strata_shipper::{Shipper, ShipperOptions};

use crate::prom::PrometheusClient;
use crate::store::{Metrics, SidecarStore, State};

/// Errors starting or running the sidecar.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A setting is unusable (bad URL, unreadable TLS file, …).
    #[error("{0}")]
    Config(String),
    /// Prometheus did not become ready in time.
    #[error("prometheus at {url} not ready after {waited:?}: {last}")]
    NotReady {
        /// Prometheus's URL.
        url: String,
        /// How long we waited.
        waited: Duration,
        /// The last failure.
        last: String,
    },
    /// Prometheus's configuration has no external labels.
    #[error(
        "prometheus at {url} has no external labels: set global.external_labels in its configuration \
         (at least one label that identifies this Prometheus, e.g. cluster and replica)"
    )]
    NoExternalLabels {
        /// Prometheus's URL.
        url: String,
    },
    /// Talking to Prometheus failed.
    #[error("read prometheus configuration")]
    Prometheus(#[source] crate::Error),
    /// The gRPC address could not be bound.
    #[error("bind --grpc-address {address}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("serve gRPC: {0}")]
    Serve(String),
}

/// Everything the sidecar needs to run.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// Prometheus's base URL, e.g. `http://localhost:9090`.
    pub prometheus_url: String,
    /// The TSDB directory of Prometheus (for the shipper; not read yet).
    pub tsdb_path: Option<PathBuf>,
    /// Where the StoreAPI and Info gRPC services listen.
    pub grpc_address: SocketAddr,
    /// Optional TLS for the gRPC server.
    pub tls: Option<ServerTlsFiles>,
    /// How long to wait for Prometheus to become ready at start.
    pub ready_timeout: Duration,
    /// How often external labels are re-read and Prometheus's health is checked.
    pub refresh_interval: Duration,
    /// Block shipping to object storage; `None` serves the StoreAPI only.
    pub shipping: Option<ShippingConfig>,
}

/// Where and how the sidecar uploads Prometheus's blocks.
#[derive(Debug, Clone)]
pub struct ShippingConfig {
    /// The bucket blocks go to.
    pub bucket: Bucket,
    /// How often the TSDB directory is scanned for new blocks.
    pub interval: Duration,
    /// Also upload blocks Prometheus compacted itself (level > 1), as Thanos's
    /// `--shipper.upload-compacted`.
    pub upload_compacted: bool,
}

impl SidecarConfig {
    /// Defaults for `prometheus_url` on `grpc_address`: 10 min ready wait, 30 s refresh, no TLS.
    pub fn new(prometheus_url: &str, grpc_address: SocketAddr) -> Self {
        Self {
            prometheus_url: prometheus_url.into(),
            tsdb_path: None,
            grpc_address,
            tls: None,
            ready_timeout: Duration::from_secs(600),
            refresh_interval: Duration::from_secs(30),
            shipping: None,
        }
    }
}

/// A sidecar that has found Prometheus and bound its gRPC port, ready to [`serve`](Self::serve).
#[derive(Debug)]
pub struct Sidecar {
    state: Arc<State>,
    listener: TcpListener,
    tls: Option<ServerTlsFiles>,
    refresh_interval: Duration,
    shipper: Option<(Arc<Shipper>, Duration)>,
}

impl Sidecar {
    /// Waits for Prometheus (up to `ready_timeout`, or until `shutdown`), reads its external labels
    /// (refusing to start without any) and binds the gRPC address.
    pub async fn start(
        config: SidecarConfig,
        registry: &mut Registry,
        shutdown: &Shutdown,
    ) -> Result<Self, RunError> {
        if let Some(tls) = &config.tls {
            // Fail at start, not at serve, on unreadable or invalid PEM files.
            tls.load()
                .map_err(|e| RunError::Config(format!("grpc server tls: {e}")))?;
        }
        let tls = config.tls.clone();
        let client = PrometheusClient::new(&config.prometheus_url, Duration::from_secs(5))
            .map_err(|e| RunError::Config(e.to_string()))?;
        let started = tokio::time::Instant::now();
        loop {
            let last = match client.ready().await {
                Ok(()) => break,
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= config.ready_timeout {
                return Err(RunError::NotReady {
                    url: client.url().to_string(),
                    waited: started.elapsed(),
                    last,
                });
            }
            tracing::info!(error = %last, "waiting for prometheus");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.cancelled() => return Err(RunError::NotReady {
                    url: client.url().to_string(), waited: started.elapsed(), last }),
            }
        }
        let external = client
            .external_labels()
            .await
            .map_err(RunError::Prometheus)?;
        if external.is_empty() {
            return Err(RunError::NoExternalLabels {
                url: client.url().to_string(),
            });
        }
        match client.build_info().await {
            Ok(info) => tracing::info!(version = %info.version, "prometheus found"),
            Err(e) => tracing::warn!(error = %e, "prometheus build info unavailable"),
        }
        let metrics = Metrics::register(registry);
        let state = Arc::new(State::new(client, external, metrics));
        state.set_up(true);
        let listener = TcpListener::bind(config.grpc_address)
            .await
            .map_err(|source| RunError::Bind {
                address: config.grpc_address,
                source,
            })?;
        let shipper = match &config.shipping {
            None => None,
            Some(shipping) => {
                let dir = config
                    .tsdb_path
                    .clone()
                    .ok_or_else(|| RunError::Config("block shipping needs --tsdb.path".into()))?;
                let meta_file = compaction_guard(state.client(), &dir).await?;
                let labels = state
                    .external_labels()
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect();
                let opts = ShipperOptions {
                    upload_compacted: shipping.upload_compacted,
                    meta_file,
                    ..ShipperOptions::default()
                };
                let shipper = Shipper::new(dir, shipping.bucket.clone(), labels, opts, registry);
                shipper.init().map_err(|e| {
                    RunError::Config(format!("prepare {}: {e}", shipper.meta_file().display()))
                })?;
                Some((Arc::new(shipper), shipping.interval))
            }
        };
        Ok(Self {
            state,
            listener,
            tls,
            refresh_interval: config.refresh_interval,
            shipper,
        })
    }

    /// The bound gRPC address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared state (external labels, Info min time, Prometheus client).
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Serves the StoreAPI, Info and Metadata until `shutdown`, refreshing external labels in the background.
    pub async fn serve(self, shutdown: Shutdown) -> Result<(), RunError> {
        let refresher = tokio::spawn(refresh_loop(
            self.state.clone(),
            self.refresh_interval,
            shutdown.clone(),
        ));
        let shipping = self.shipper.map(|(shipper, every)| {
            tokio::spawn(ship_loop(
                shipper,
                self.state.clone(),
                every,
                shutdown.clone(),
            ))
        });
        let svc = SidecarStore::new(self.state.clone());
        let opts = ServerOptions {
            tls: self.tls,
            ..ServerOptions::default()
        };
        let result = strata_storeapi::serve_with_metadata(
            Listen::Listener(self.listener),
            svc.clone(),
            svc.clone(),
            Some(svc),
            opts,
            async move { shutdown.cancelled().await },
        )
        .await;
        refresher.abort();
        if let Some(task) = shipping {
            // Stopping mid-upload is safe: meta.json goes last, a restart redoes the block.
            task.abort();
        }
        result.map_err(|e| RunError::Serve(e.to_string()))
    }
}

/// Flag names of Prometheus's block durations and (≥ 3.9) its delay-compact file.
const MIN_BLOCK: &str = "storage.tsdb.min-block-duration";
const MAX_BLOCK: &str = "storage.tsdb.max-block-duration";
const DELAY_COMPACT: &str = "storage.tsdb.delay-compact-file.path";

/// Refuses to ship from a Prometheus that compacts blocks locally unless it holds back unshipped
/// blocks through its delay-compact file; otherwise blocks would reach the bucket twice, in two
/// shapes, or be compacted away before they are shipped. Returns the shipped-blocks file to write
/// when it is not `<tsdb>/thanos.shipper.json`.
async fn compaction_guard(
    client: &crate::prom::PrometheusClient,
    tsdb: &std::path::Path,
) -> Result<Option<PathBuf>, RunError> {
    let flags = client.flags().await.map_err(RunError::Prometheus)?;
    let (min, max) = (
        flags.get(MIN_BLOCK).cloned().unwrap_or_default(),
        flags.get(MAX_BLOCK).cloned().unwrap_or_default(),
    );
    let delay = flags
        .get(DELAY_COMPACT)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    match delay {
        Some(path) if path.is_absolute() => {
            tracing::info!(file = %path.display(), "prometheus delays compaction of unshipped blocks");
            Ok((path != tsdb.join(strata_shipper::SHIPPER_META_FILENAME)).then_some(path))
        }
        Some(path) => Err(RunError::Config(format!(
            "prometheus's --{DELAY_COMPACT}={} is relative; give it as an absolute path both \
             processes see (e.g. {})",
            path.display(),
            tsdb.join(strata_shipper::SHIPPER_META_FILENAME).display()
        ))),
        None if min != max => Err(RunError::Config(format!(
            "prometheus compacts blocks locally (--{MIN_BLOCK}={min}, --{MAX_BLOCK}={max}), so \
             shipped blocks would be compacted again and uploaded twice: set both to the same \
             value, or (Prometheus >= 3.9) keep compaction and add \
             --{DELAY_COMPACT}={}",
            tsdb.join(strata_shipper::SHIPPER_META_FILENAME).display()
        ))),
        None => Ok(None),
    }
}

/// Ships new blocks every `every` until `shutdown`; failures are logged, counted by the shipper's
/// metrics and retried on the next round. After each round the Info min time follows the oldest
/// local block (0 before the first one), as a Thanos sidecar's does: older data is in the bucket.
async fn ship_loop(shipper: Arc<Shipper>, state: Arc<State>, every: Duration, shutdown: Shutdown) {
    loop {
        match shipper.sync().await {
            Ok(report) => {
                state.set_min_time(report.oldest_local_min_time.unwrap_or(0));
                for id in &report.uploaded {
                    tracing::info!(block = %id, "block uploaded");
                }
                for (id, why) in &report.failed {
                    tracing::warn!(block = %id, error = %why, "block upload failed; retrying later");
                }
                for (path, why) in &report.corrupted {
                    tracing::error!(dir = %path.display(), error = %why, "skipping unreadable block");
                }
            }
            Err(e) => tracing::warn!(error = %e, "block shipping round failed; retrying later"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Re-reads external labels and records Prometheus's reachability every `interval`.
async fn refresh_loop(state: Arc<State>, interval: Duration, shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        match state.client().external_labels().await {
            Ok(labels) if labels.is_empty() => {
                state.set_up(true);
                tracing::warn!("prometheus now has no external labels; keeping the previous ones");
            }
            Ok(labels) => {
                state.set_up(true);
                state.set_external_labels(labels);
            }
            Err(e) => {
                state.set_up(false);
                tracing::warn!(error = %e, "refresh external labels");
            }
        }
    }
}

/// Runs the sidecar until `shutdown`: [`Sidecar::start`], mark ready, [`Sidecar::serve`].
pub async fn run(
    config: SidecarConfig,
    registry: &mut Registry,
    readiness: Readiness,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    let sidecar = Sidecar::start(config, registry, &shutdown).await?;
    if let Ok(addr) = sidecar.local_addr() {
        tracing::info!(%addr, "serving StoreAPI");
    }
    readiness.set(true);
    let result = sidecar.serve(shutdown).await;
    readiness.set(false);
    result
}
