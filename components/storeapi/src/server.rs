//! `serve`: one gRPC server with the Store and Info services, TLS/mTLS, gzip and snappy.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Status;
use tonic::codec::CompressionEncoding;
use tonic::transport::Server;

use crate::error::{Error, Result};
use crate::pb::info::info_server::{Info, InfoServer};
use crate::pb::thanos::metadata_server::{Metadata, MetadataServer};
use crate::pb::thanos::store_server::{Store, StoreServer};
use crate::pb::thanos::{MetricMetadataRequest, MetricMetadataResponse};
use crate::snappy::SnappyLayer;
use crate::tls::ServerTlsFiles;

/// Where the server listens.
#[derive(Debug)]
pub enum Listen {
    /// Bind this address.
    Addr(SocketAddr),
    /// Use an already bound listener (tests bind port 0 and read the address first).
    Listener(TcpListener),
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// TLS (and mTLS with a client CA); plaintext when unset.
    pub tls: Option<ServerTlsFiles>,
    /// Accept gzip-compressed requests and compress responses with gzip when the client accepts it.
    pub gzip: bool,
    /// Accept snappy-compressed requests (Thanos `--grpc-compression=snappy`) and answer in snappy
    /// when the client asks for it.
    pub snappy: bool,
    /// Largest request message accepted, bytes (default 4 MiB as in gRPC).
    pub max_decoding_message_size: usize,
    /// Largest response message sent, bytes (default: no limit, as grpc-go servers).
    pub max_encoding_message_size: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            tls: None,
            gzip: true,
            snappy: true,
            max_decoding_message_size: 4 << 20,
            max_encoding_message_size: usize::MAX,
        }
    }
}

/// Serves `store` and `info` until `shutdown` completes, then drains in-flight calls.
pub async fn serve<S, I, F>(
    listen: Listen,
    store: S,
    info: I,
    opts: ServerOptions,
    shutdown: F,
) -> Result<()>
where
    S: Store,
    I: Info,
    F: Future<Output = ()> + Send,
{
    serve_with_metadata::<S, I, NoMetadata, F>(listen, store, info, None, opts, shutdown).await
}

/// A `thanos.Metadata` service that is never registered (the type parameter of [`serve`]).
#[derive(Debug, Clone, Copy)]
pub struct NoMetadata;

#[tonic::async_trait]
impl Metadata for NoMetadata {
    type MetricMetadataStream = std::pin::Pin<
        Box<
            dyn tokio_stream::Stream<Item = std::result::Result<MetricMetadataResponse, Status>>
                + Send,
        >,
    >;

    async fn metric_metadata(
        &self,
        _: tonic::Request<MetricMetadataRequest>,
    ) -> std::result::Result<tonic::Response<Self::MetricMetadataStream>, Status> {
        Err(Status::unimplemented("thanos.Metadata is not served"))
    }
}

/// As [`serve`], plus the `thanos.Metadata` service when `metadata` is set.
pub async fn serve_with_metadata<S, I, M, F>(
    listen: Listen,
    store: S,
    info: I,
    metadata: Option<M>,
    opts: ServerOptions,
    shutdown: F,
) -> Result<()>
where
    S: Store,
    I: Info,
    M: Metadata,
    F: Future<Output = ()> + Send,
{
    let listener = match listen {
        Listen::Listener(l) => l,
        Listen::Addr(addr) => TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?,
    };
    let local = listener.local_addr().ok();
    let mut store = StoreServer::new(store)
        .max_decoding_message_size(opts.max_decoding_message_size)
        .max_encoding_message_size(opts.max_encoding_message_size);
    let mut info = InfoServer::new(info)
        .max_decoding_message_size(opts.max_decoding_message_size)
        .max_encoding_message_size(opts.max_encoding_message_size);
    let metadata = metadata.map(|m| {
        let svc = MetadataServer::new(m)
            .max_decoding_message_size(opts.max_decoding_message_size)
            .max_encoding_message_size(opts.max_encoding_message_size);
        if opts.gzip {
            svc.accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
        } else {
            svc
        }
    });
    if opts.gzip {
        store = store
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);
        info = info
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);
    }
    // Small gRPC frames (headers, the last message) must not wait for Nagle's algorithm and the
    // peer's delayed ACK: without TCP_NODELAY short calls stall ~40 ms.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.and_then(|s| {
            s.set_nodelay(true)?;
            Ok(s)
        })
    });
    let mut builder = Server::builder();
    if let Some(tls) = &opts.tls {
        builder = builder.tls_config(tls.load()?).map_err(Error::Tls)?;
    }
    tracing::info!(address = ?local, tls = opts.tls.is_some(), "serving StoreAPI and Info over gRPC");
    builder
        .trace_fn(|req| tracing::info_span!("grpc", path = %req.uri().path()))
        .layer(SnappyLayer::new(opts.snappy))
        .add_service(store)
        .add_service(info)
        .add_optional_service(metadata)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(Error::Serve)
}
