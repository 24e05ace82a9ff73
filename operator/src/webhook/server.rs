//! The webhook's HTTPS server: `POST /mutate-pod` takes an `AdmissionReview` of a Pod and answers
//! with the sidecar patch of [`super::inject`]. A Pod is never rejected: when the operator cannot
//! look up its clusters it admits the Pod unchanged with a warning.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::ListParams;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::{Api, Client};
use strata_runtime::Shutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::WebhookError;
use super::inject::{PodContext, inject};
use super::tls::{CertResolver, server_config};
use crate::crd::MetricsCluster;

/// The path the `MutatingWebhookConfiguration` points at.
pub const MUTATE_POD_PATH: &str = "/mutate-pod";

/// Longest a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a Pod's admission needs to know of the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lookup {
    /// Labels of the Pod's Namespace.
    pub namespace_labels: BTreeMap<String, String>,
    /// The `MetricsCluster`s the operator watches.
    pub clusters: Vec<MetricsCluster>,
}

/// Reads what [`Lookup`] holds from the API server.
#[derive(Clone)]
pub struct Admission {
    client: Client,
    /// Only `MetricsCluster`s of this namespace count; `None`: all namespaces.
    scope: Option<String>,
}

impl Admission {
    /// Looks clusters up through `client`, in `scope` or everywhere.
    pub fn new(client: Client, scope: Option<String>) -> Self {
        Self { client, scope }
    }

    async fn lookup(&self, namespace: &str) -> Result<Lookup, kube::Error> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let namespace_labels = namespaces
            .get_opt(namespace)
            .await?
            .and_then(|n| n.metadata.labels)
            .unwrap_or_default();
        let clusters: Api<MetricsCluster> = match &self.scope {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let clusters = clusters.list(&ListParams::default()).await?.items;
        Ok(Lookup {
            namespace_labels,
            clusters,
        })
    }
}

/// The response to one admission request, given what the lookup found (or why it failed).
pub fn respond(
    request: &AdmissionRequest<DynamicObject>,
    lookup: Result<Lookup, String>,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    if request.operation != Operation::Create {
        return response;
    }
    let Some(object) = request.object.as_ref() else {
        return response;
    };
    let pod: Pod = match serde_json::to_value(object).and_then(serde_json::from_value) {
        Ok(p) => p,
        Err(e) => {
            return with_warnings(
                response,
                vec![format!(
                    "strata: not a readable Pod ({e}); no sidecar injected"
                )],
            );
        }
    };
    let lookup = match lookup {
        Ok(l) => l,
        Err(e) => {
            return with_warnings(
                response,
                vec![format!(
                    "strata: no sidecar injected: the operator could not read MetricsClusters ({e})"
                )],
            );
        }
    };
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let injection = inject(
        &pod,
        PodContext {
            namespace,
            namespace_labels: &lookup.namespace_labels,
        },
        &lookup.clusters,
    );
    let warnings = injection.warnings;
    let response = match injection.patch {
        Some(patch) => {
            tracing::info!(cluster = ?injection.cluster, "injecting the sidecar");
            match response.clone().with_patch(patch) {
                Ok(r) => r,
                Err(e) => {
                    return with_warnings(
                        response,
                        vec![format!("strata: no sidecar injected: {e}")],
                    );
                }
            }
        }
        None => response,
    };
    with_warnings(response, warnings)
}

fn with_warnings(mut response: AdmissionResponse, warnings: Vec<String>) -> AdmissionResponse {
    for w in &warnings {
        tracing::info!(warning = %w, "admission warning");
    }
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response
}

fn review_json(review: &AdmissionReview<DynamicObject>) -> Vec<u8> {
    serde_json::to_vec(review).unwrap_or_default()
}

async fn mutate_pod(State(admission): State<Admission>, body: Bytes) -> Response {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return malformed(format!("malformed AdmissionReview: {e}")),
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(_) => return malformed("AdmissionReview has no request".into()),
    };
    let span = tracing::info_span!(
        "admit_pod",
        uid = %request.uid,
        namespace = request.namespace.as_deref().unwrap_or_default(),
        name = %request.name,
    );
    async move {
        let namespace = request.namespace.clone().unwrap_or_default();
        let lookup = if request.operation == Operation::Create {
            admission
                .lookup(&namespace)
                .await
                .map_err(|e| e.to_string())
        } else {
            Ok(Lookup::default())
        };
        let review = respond(&request, lookup).into_review();
        (
            StatusCode::OK,
            [("content-type", "application/json")],
            review_json(&review),
        )
            .into_response()
    }
    .instrument(span)
    .await
}

fn malformed(message: String) -> Response {
    tracing::warn!(%message, "rejected a malformed admission review");
    let review = AdmissionResponse::invalid(&message).into_review();
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/json")],
        review_json(&review),
    )
        .into_response()
}

/// The webhook's routes: `POST /mutate-pod` and `GET /healthz`.
pub fn router(admission: Admission) -> Router {
    Router::new()
        .route(MUTATE_POD_PATH, post(mutate_pod))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(admission)
}

/// A bound HTTPS listener whose certificate comes from a [`CertResolver`].
pub struct WebhookServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for WebhookServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookServer")
            .field("address", &self.listener.local_addr().ok())
            .finish()
    }
}

impl WebhookServer {
    /// Binds `address` (fails at startup on a bad or busy address).
    pub async fn bind(
        address: SocketAddr,
        resolver: Arc<CertResolver>,
    ) -> Result<Self, WebhookError> {
        let config = server_config(resolver)?;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| WebhookError::Bind { address, source })?;
        Ok(Self {
            listener,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, WebhookError> {
        self.listener
            .local_addr()
            .map_err(|source| WebhookError::Io {
                path: "webhook listener".into(),
                source,
            })
    }

    /// Serves `router` until `shutdown`; connections in flight are dropped then.
    pub async fn serve(self, router: Router, shutdown: Shutdown) {
        loop {
            let (tcp, peer) = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let acceptor = self.acceptor.clone();
            let service = TowerToHyperService::new(router.clone());
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "webhook TLS handshake");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "webhook TLS handshake timed out");
                        return;
                    }
                };
                let builder = auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(tls), service);
                tokio::select! {
                    r = conn => if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "webhook connection");
                    },
                    () = stop.cancelled() => {}
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(operation: &str, object: serde_json::Value) -> AdmissionRequest<DynamicObject> {
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "name": "p", "namespace": "mon", "operation": operation,
                "userInfo": {"username": "me"}, "object": object, "dryRun": false,
            }
        }))
        .expect("review");
        review.try_into().expect("request")
    }

    fn pod() -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "mon"},
            "spec": {"containers": [{"name": "prometheus", "image": "prom/prometheus"}]}})
    }

    #[test]
    fn lookup_failure_admits_unchanged_with_a_warning() {
        let r = respond(&request("CREATE", pod()), Err("forbidden".into()));
        assert!(r.allowed);
        assert_eq!(r.uid, "u-1");
        assert!(r.patch.is_none());
        let w = r.warnings.expect("warnings");
        assert!(
            w[0].contains("could not read MetricsClusters (forbidden)"),
            "{w:?}"
        );
    }

    #[test]
    fn unreadable_pod_is_admitted_with_a_warning() {
        let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": "not a list"}});
        let r = respond(&request("CREATE", bad), Ok(Lookup::default()));
        assert!(r.allowed);
        assert!(r.patch.is_none());
        assert!(r.warnings.expect("warning")[0].contains("not a readable Pod"));
    }

    #[test]
    fn updates_pass_through() {
        let r = respond(&request("UPDATE", pod()), Err("not consulted".into()));
        assert!(r.allowed);
        assert!(r.patch.is_none());
        assert!(r.warnings.is_none());
    }

    #[test]
    fn malformed_review_gets_an_invalid_response() {
        let response = malformed("malformed AdmissionReview: eof".into());
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
