//! The gRPC server flags every StoreAPI server shares (`strata sidecar`, `strata store`), named as in
//! Thanos.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use strata_storeapi::ServerTlsFiles;

/// `--grpc-address` and the server TLS flags.
#[derive(Debug, Args)]
pub struct GrpcServerArgs {
    /// Address of the StoreAPI and Info gRPC server.
    #[arg(
        long = "grpc-address",
        env = "STRATA_GRPC_ADDRESS",
        default_value = "0.0.0.0:10901"
    )]
    pub grpc_address: SocketAddr,

    /// TLS certificate (PEM) of the gRPC server; enables TLS together with the key.
    #[arg(
        long = "grpc-server-tls-cert",
        env = "STRATA_GRPC_SERVER_TLS_CERT",
        requires = "grpc_server_tls_key"
    )]
    grpc_server_tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) of the gRPC server.
    #[arg(
        long = "grpc-server-tls-key",
        env = "STRATA_GRPC_SERVER_TLS_KEY",
        requires = "grpc_server_tls_cert"
    )]
    grpc_server_tls_key: Option<PathBuf>,

    /// CA (PEM) that client certificates must be signed by; enables mutual TLS.
    #[arg(
        long = "grpc-server-tls-client-ca",
        env = "STRATA_GRPC_SERVER_TLS_CLIENT_CA",
        requires = "grpc_server_tls_cert"
    )]
    grpc_server_tls_client_ca: Option<PathBuf>,
}

impl GrpcServerArgs {
    /// The TLS files when `--grpc-server-tls-cert` and `--grpc-server-tls-key` are given.
    pub fn tls(&self) -> Option<ServerTlsFiles> {
        match (&self.grpc_server_tls_cert, &self.grpc_server_tls_key) {
            (Some(cert), Some(key)) => Some(ServerTlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.grpc_server_tls_client_ca.clone(),
            }),
            _ => None,
        }
    }
}
