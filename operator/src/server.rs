//! The operator process: Kubernetes client, the controllers, and the admin HTTP server
//! (`/metrics`, `/healthz`, `/readyz`, `/-/healthy`, `/-/ready`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use kube::config::{KubeConfigOptions, Kubeconfig};
use prometheus_client::registry::Registry;
use strata_runtime::{AdminServer, Readiness, Shutdown, admin_router};

use crate::controller::{self, Scope};
use crate::leader::{self, LeaderElection, LeaderError};
use crate::metrics::{Metrics, WriteLog, logging_client};

/// How to run the operator.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// A kubeconfig file; `None` means `$KUBECONFIG`, `~/.kube/config`, or the in-cluster account.
    pub kubeconfig: Option<PathBuf>,
    /// Watch one namespace, or all when `None`.
    pub namespace: Option<String>,
    /// Address of the admin HTTP server.
    pub http_address: SocketAddr,
    /// Run the controllers only while holding this lease; `None`: always (one replica).
    pub leader_election: Option<LeaderElection>,
    /// The sidecar-injection webhook, when enabled.
    pub webhook: Option<crate::webhook::WebhookConfig>,
}

/// Why the operator could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// The Kubernetes client could not be built.
    #[error("kubernetes client: {0}")]
    Client(#[from] kube::Error),
    /// The admin HTTP server failed.
    #[error(transparent)]
    Admin(#[from] strata_runtime::Error),
    /// Leader election failed or the lease was lost.
    #[error(transparent)]
    Leader(#[from] LeaderError),
    /// The webhook could not start.
    #[error("webhook: {0}")]
    Webhook(#[from] crate::webhook::WebhookError),
}

async fn kube_config(path: Option<&PathBuf>) -> Result<kube::Config, RunError> {
    match path {
        Some(p) => {
            let kc = Kubeconfig::read_from(p)
                .map_err(|e| RunError::Kubeconfig(format!("{}: {e}", p.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| RunError::Kubeconfig(format!("{}: {e}", p.display())))
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| RunError::Kubeconfig(e.to_string())),
    }
}

/// Runs the operator until `shutdown` fires.
pub async fn run(config: OperatorConfig, shutdown: Shutdown) -> Result<(), RunError> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let is_leader = leader::register_metrics(&mut registry);
    let client = logging_client(
        kube_config(config.kubeconfig.as_ref()).await?,
        WriteLog::with_counter(metrics.api_writes.clone()),
    )?;
    let version = client.apiserver_version().await?;
    tracing::info!(server = %version.git_version, namespace = ?config.namespace, "connected to the Kubernetes API");

    let readiness = Readiness::new();
    let ready = readiness.clone();
    let router = admin_router(Arc::new(registry), readiness.clone())
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.is_ready() {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        );
    let admin = AdminServer::bind(config.http_address).await?;
    let admin_task = tokio::spawn(admin.serve(router, shutdown.clone()));

    let webhook = match config.webhook {
        Some(w) => Some(crate::webhook::start(client.clone(), w, shutdown.clone()).await?),
        None => None,
    };

    // Ready means "serving": a follower is ready too (the webhook answers on every replica).
    readiness.set(true);
    let scope = Scope {
        namespace: config.namespace,
    };
    let result = match &config.leader_election {
        Some(election) => {
            leader::run_as_leader(
                client.clone(),
                election,
                shutdown.clone(),
                is_leader,
                |stop| controller::run(client, scope, metrics, stop),
            )
            .await
        }
        None => {
            is_leader.set(1);
            let stop = shutdown.clone();
            controller::run(
                client,
                scope,
                metrics,
                async move { stop.cancelled().await },
            )
            .await;
            Ok(())
        }
    };
    if result.is_err() {
        // Lost the lease (or never got to elect): stop serving too, so the process exits.
        shutdown.trigger();
    }
    readiness.set(false);
    if let Some(w) = webhook
        && let Err(e) = w.task.await
    {
        tracing::warn!(error = %e, "webhook task");
    }
    match admin_task.await {
        Ok(r) => r?,
        Err(e) => tracing::warn!(error = %e, "admin server task"),
    }
    result.map_err(RunError::from)
}
