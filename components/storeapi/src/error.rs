//! The crate's error type, and helpers mapping backend failures to gRPC statuses.

use std::path::PathBuf;

use tonic::Status;

/// Errors of the server and client helpers (configuration, TLS files, transport).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A TLS file could not be read.
    #[error("read {what} file {path}")]
    ReadFile {
        /// Which file this is (e.g. "server certificate").
        what: &'static str,
        /// The file's path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file holds no PEM block.
    #[error("{what} file {path} holds no PEM block")]
    NotPem {
        /// Which file this is.
        what: &'static str,
        /// The file's path.
        path: PathBuf,
    },
    /// A client certificate was given without its key, or a key without its certificate.
    #[error("client TLS needs both a certificate and a key (got only the {given})")]
    HalfIdentity {
        /// The one that was given ("certificate" or "key").
        given: &'static str,
    },
    /// The endpoint is not a valid URI.
    #[error("invalid endpoint {endpoint:?}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// The parse error.
        #[source]
        source: tonic::transport::Error,
    },
    /// Binding the listen address failed.
    #[error("bind gRPC listener on {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Applying a TLS configuration failed.
    #[error("configure TLS")]
    Tls(#[source] tonic::transport::Error),
    /// Connecting to an endpoint failed.
    #[error("connect to {endpoint}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server")]
    Serve(#[source] tonic::transport::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A backend (Prometheus, a bucket, a peer store) cannot be reached: `Unavailable` with the reason.
pub fn unavailable(backend: &str, reason: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("{backend} unavailable: {reason}"))
}

/// A request exceeds a limit (series, samples, bytes): `ResourceExhausted`.
pub fn limit_exceeded(what: &str, limit: u64) -> Status {
    Status::resource_exhausted(format!("{what} limit {limit} exceeded"))
}

/// A backend answered with something it should not have: `Internal` naming the step.
pub fn internal(step: &str, reason: impl std::fmt::Display) -> Status {
    Status::internal(format!("{step}: {reason}"))
}

/// The request's deadline passed while waiting for a backend: `DeadlineExceeded`.
pub fn deadline_exceeded(step: &str) -> Status {
    Status::deadline_exceeded(format!("{step}: deadline exceeded"))
}

/// Maps an I/O error of a backend call to a status: connection problems become `Unavailable`,
/// timeouts `DeadlineExceeded`, anything else `Internal`.
pub fn from_io(backend: &str, err: &std::io::Error) -> Status {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::ConnectionRefused
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::NotConnected
        | ErrorKind::BrokenPipe
        | ErrorKind::AddrNotAvailable
        | ErrorKind::HostUnreachable
        | ErrorKind::NetworkUnreachable => unavailable(backend, err),
        ErrorKind::TimedOut => deadline_exceeded(backend),
        _ => internal(backend, err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn io_errors_map_to_codes() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let st = from_io("prometheus", &refused);
        assert_eq!(st.code(), Code::Unavailable);
        assert_eq!(st.message(), "prometheus unavailable: refused");
        let t = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert_eq!(from_io("bucket", &t).code(), Code::DeadlineExceeded);
        let other = std::io::Error::other("bad");
        assert_eq!(from_io("bucket", &other).code(), Code::Internal);
        assert_eq!(limit_exceeded("series", 10).code(), Code::ResourceExhausted);
    }
}
