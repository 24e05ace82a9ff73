//! The Strata Kubernetes operator: the `MetricsCluster`, `StoreGateway`, `Compactor` and `Ruler` custom
//! resources ([`crd`]), the objects they stand for ([`desired`], pure), and the controllers that
//! server-side apply them ([`controller`]).
//!
//! Not done:
//! - writes are skipped when the `strata.dev/applied-hash` annotation matches, so a field another
//!   manager changed on an owned object is not reverted until the desired object changes;
//! - Secrets are not watched (that would need list/watch on every Secret): a changed objstore YAML
//!   rolls pods at the next resync (5 minutes);
//! - sidecars injected into other namespaces (`spec.sidecar.namespaceSelector`) need the objstore
//!   Secret there; the operator does not copy it (the webhook warns);
//! - `Ruler`: PrometheusRule support is decided by discovery at start (a CRD installed later needs a
//!   restart); rule changes roll the pods (checksum) rather than `POST /-/reload`; the generated
//!   rules ConfigMap is bounded by the 1 MiB object limit.

pub mod controller;
pub mod crd;
pub mod desired;
pub mod docs;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod rules;
pub mod server;
pub mod webhook;

/// Everything that can go wrong reconciling one object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec asks for something that cannot be built; the message names the fix.
    #[error("{field}: {message}")]
    InvalidSpec {
        /// The field at fault, e.g. `spec.objectStorage.secretRef.name`.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A field the API server always sets is missing.
    #[error("{field} is not set")]
    MissingField {
        /// The missing field.
        field: String,
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
    /// An object could not be serialized.
    #[error("serialize {what}: {source}")]
    Serialize {
        /// What was being serialized.
        what: String,
        /// The serializer error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// A short, fixed category for metrics labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::InvalidSpec { .. } => "InvalidSpec",
            Error::MissingField { .. } => "MissingField",
            Error::Kube { .. } => "ApiError",
            Error::Serialize { .. } => "Serialize",
        }
    }

    pub(crate) fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
