//! The admin HTTP endpoints every server exposes: `/metrics`, `/-/healthy`, `/-/ready`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::{Error, Result, Shutdown};

/// Whether the process is ready to serve; `/-/ready` answers 503 until a component marks it ready.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Not ready yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the ready state.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// The current ready state.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// The router for the admin endpoints; components merge their own routes into it.
pub fn admin_router(registry: Arc<Registry>, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(|| async { "Healthy.\n" }))
        .route("/-/ready", get(ready))
        .with_state(AdminState {
            registry,
            readiness,
        })
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encode metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn ready(State(state): State<AdminState>) -> Response {
    if state.readiness.is_ready() {
        (StatusCode::OK, "Ready.\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Not ready.\n").into_response()
    }
}

/// A bound HTTP listener; binding happens before serving so a bad `--http-address` fails at startup.
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    address: SocketAddr,
}

impl AdminServer {
    /// Binds the address (port 0 picks a free one).
    pub async fn bind(address: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| Error::Bind {
                address: address.to_string(),
                source,
            })?;
        let address = listener.local_addr().map_err(|source| Error::Bind {
            address: address.to_string(),
            source,
        })?;
        Ok(Self { listener, address })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Serves `router` until `shutdown` fires, then lets in-flight requests finish.
    pub async fn serve(self, router: Router, shutdown: Shutdown) -> Result<()> {
        let address = self.address;
        tracing::info!(%address, "serving HTTP");
        axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(|source| Error::Serve { address, source })
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[tokio::test]
    async fn endpoints_answer_and_shutdown_stops_the_server() {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        registry.register(
            "strata_test_events",
            "Events seen by the test.",
            counter.clone(),
        );
        counter.inc_by(3);
        let readiness = Readiness::new();
        let server = AdminServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let base = format!("http://{}", server.local_addr());
        let shutdown = Shutdown::new();
        let handle = tokio::spawn(server.serve(
            admin_router(Arc::new(registry), readiness.clone()),
            shutdown.clone(),
        ));

        let client = reqwest::Client::new();
        let get = |path: &str| client.get(format!("{base}{path}")).send();
        assert_eq!(get("/-/healthy").await.unwrap().status(), 200);
        assert_eq!(get("/-/ready").await.unwrap().status(), 503);
        readiness.set(true);
        assert_eq!(get("/-/ready").await.unwrap().status(), 200);
        let metrics = get("/metrics").await.unwrap().text().await.unwrap();
        assert!(metrics.contains("strata_test_events_total 3"), "{metrics}");

        shutdown.trigger();
        handle.await.unwrap().unwrap();
        assert!(
            get("/-/healthy").await.is_err(),
            "server still answering after shutdown"
        );
    }

    #[tokio::test]
    async fn binding_a_taken_port_names_the_flag() {
        let first = AdminServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let err = AdminServer::bind(first.local_addr()).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("bind --http-address 127.0.0.1:"),
            "{err}"
        );
    }
}
