//! The sidecar-injection mutating admission webhook: which pods get a Strata sidecar and how
//! ([`inject`], pure), its HTTPS server ([`server`]) and its certificates ([`tls`]).

pub mod inject;
pub mod server;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::Client;
use strata_runtime::Shutdown;

use self::server::{Admission, MUTATE_POD_PATH, WebhookServer, router};
use self::tls::{CertResolver, FileTls, OperatorTls, load_files, run_file_tls, run_operator_tls};

/// What can go wrong running the webhook.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Making, reading or loading a certificate failed.
    #[error("{step}: {message}")]
    Tls {
        /// The step that failed.
        step: &'static str,
        /// Why.
        message: String,
    },
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the operator was doing.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The `MutatingWebhookConfiguration` to publish the CA in does not exist (yet).
    #[error(
        "MutatingWebhookConfiguration {0} not found: create it (the Helm chart does) or fix --webhook.configuration"
    )]
    MissingWebhookConfiguration(String),
    /// A file could not be read.
    #[error("read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The listen address could not be bound.
    #[error("bind --webhook.address {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Who keeps the serving certificate.
#[derive(Debug, Clone)]
pub enum TlsMode {
    /// The operator makes, stores, renews and publishes it.
    Operator(OperatorTls),
    /// Files someone else keeps current (cert-manager); re-read every interval.
    Files {
        /// The certificate and key files.
        files: FileTls,
        /// How often they are re-read.
        every: Duration,
    },
}

/// How to run the webhook.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The HTTPS listen address (`--webhook.address`).
    pub address: SocketAddr,
    /// Who keeps the certificate.
    pub tls: TlsMode,
    /// Only `MetricsCluster`s of this namespace select pods; `None`: all namespaces.
    pub scope: Option<String>,
}

/// A started webhook.
#[derive(Debug)]
pub struct RunningWebhook {
    /// The bound address.
    pub address: SocketAddr,
    /// The certificate being served.
    pub resolver: Arc<CertResolver>,
    /// Ends after `shutdown`.
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds the listener, starts the certificate keeper and serves until `shutdown`.
pub async fn start(
    client: Client,
    config: WebhookConfig,
    shutdown: Shutdown,
) -> Result<RunningWebhook, WebhookError> {
    let resolver = Arc::new(CertResolver::default());
    let server = WebhookServer::bind(config.address, resolver.clone()).await?;
    let address = server.local_addr()?;
    let keeper = match config.tls {
        TlsMode::Operator(cfg) => tokio::spawn(run_operator_tls(
            client.clone(),
            cfg,
            resolver.clone(),
            shutdown.clone(),
        )),
        TlsMode::Files { files, every } => {
            load_files(&files, &resolver)?;
            tokio::spawn(run_file_tls(
                files,
                resolver.clone(),
                every,
                shutdown.clone(),
            ))
        }
    };
    tracing::info!(%address, "sidecar injection webhook listening");
    let app = router(Admission::new(client, config.scope));
    let task = tokio::spawn(async move {
        server.serve(app, shutdown).await;
        if let Err(e) = keeper.await {
            tracing::warn!(error = %e, "webhook certificate task");
        }
    });
    Ok(RunningWebhook {
        address,
        resolver,
        task,
    })
}

/// Where the API server reaches the webhook.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A Service `name` in `namespace` on `port` (in-cluster).
    Service {
        /// Service name.
        name: String,
        /// Service namespace.
        namespace: String,
        /// Service port.
        port: i32,
    },
    /// A URL ending in `/mutate-pod` (out-of-cluster, tests).
    Url(String),
}

/// The `MutatingWebhookConfiguration` the operator expects (the Helm chart renders the same):
/// one webhook `sidecar.strata.dev` on Pod CREATE, `failurePolicy: Ignore` (a down operator must
/// not stop Prometheus from starting), namespaces `kube-system` and those labelled
/// `strata.dev/inject=disabled` excluded, no `caBundle` (the operator fills it).
pub fn configuration(name: &str, endpoint: &Endpoint) -> MutatingWebhookConfiguration {
    let client_config = match endpoint {
        Endpoint::Service {
            name,
            namespace,
            port,
        } => {
            serde_json::json!({"service": {"name": name, "namespace": namespace, "port": port, "path": MUTATE_POD_PATH}})
        }
        Endpoint::Url(url) => serde_json::json!({"url": url}),
    };
    let value = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "sidecar.strata.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "reinvocationPolicy": "IfNeeded",
            "timeoutSeconds": 10,
            "clientConfig": client_config,
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]},
                {"key": "strata.dev/inject", "operator": "NotIn", "values": ["disabled"]},
            ]},
        }],
    });
    // The literal above is a valid object of this type.
    serde_json::from_value(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_ignores_failures_and_skips_kube_system() {
        let c = configuration(
            "strata-operator",
            &Endpoint::Url("https://127.0.0.1:1/mutate-pod".into()),
        );
        let hooks = c.webhooks.expect("webhooks");
        assert_eq!(hooks.len(), 1);
        let h = &hooks[0];
        assert_eq!(h.failure_policy.as_deref(), Some("Ignore"));
        assert_eq!(h.side_effects, "None");
        assert!(h.client_config.ca_bundle.is_none());
        let exprs = h
            .namespace_selector
            .as_ref()
            .and_then(|s| s.match_expressions.clone())
            .expect("namespace selector");
        assert_eq!(
            exprs[0].values.as_deref(),
            Some(&["kube-system".to_string()][..])
        );
        let svc = configuration(
            "x",
            &Endpoint::Service {
                name: "strata-operator-webhook".into(),
                namespace: "strata-system".into(),
                port: 443,
            },
        );
        let cc = &svc.webhooks.expect("hooks")[0].client_config;
        assert_eq!(
            cc.service.as_ref().and_then(|s| s.path.as_deref()),
            Some(MUTATE_POD_PATH)
        );
    }
}
