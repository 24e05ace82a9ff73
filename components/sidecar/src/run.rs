//! Starting and running the sidecar: wait for Prometheus, read its external labels, serve gRPC.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use strata_runtime::{Readiness, Shutdown};
use strata_storeapi::{Listen, ServerOptions, ServerTlsFiles};
use tokio::net::TcpListener;

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
        // NOT DONE / integrator: the shipper (`--objstore.config`) starts here and calls
        // `state.set_min_time` with the oldest uploaded block's min time.
        Ok(Self {
            state,
            listener,
            tls,
            refresh_interval: config.refresh_interval,
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

    /// Serves the StoreAPI and Info until `shutdown`, refreshing external labels in the background.
    pub async fn serve(self, shutdown: Shutdown) -> Result<(), RunError> {
        let refresher = tokio::spawn(refresh_loop(
            self.state.clone(),
            self.refresh_interval,
            shutdown.clone(),
        ));
        let svc = SidecarStore::new(self.state.clone());
        let opts = ServerOptions {
            tls: self.tls,
            ..ServerOptions::default()
        };
        let result = strata_storeapi::serve(
            Listen::Listener(self.listener),
            svc.clone(),
            svc,
            opts,
            async move { shutdown.cancelled().await },
        )
        .await;
        refresher.abort();
        result.map_err(|e| RunError::Serve(e.to_string()))
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
