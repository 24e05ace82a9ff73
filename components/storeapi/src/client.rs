//! `connect`: a channel to a StoreAPI endpoint with TLS/mTLS and gzip, as Store, Info and Metadata clients.

use std::time::Duration;

use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::pb::info::info_client::InfoClient;
use crate::pb::thanos::metadata_client::MetadataClient;
use crate::pb::thanos::store_client::StoreClient;
use crate::tls::ClientTlsFiles;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// TLS (and mTLS with a client certificate); plaintext when unset.
    pub tls: Option<ClientTlsFiles>,
    /// Compress requests with gzip and accept gzip responses.
    pub gzip: bool,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// Largest response message accepted, bytes.
    pub max_decoding_message_size: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            tls: None,
            gzip: false,
            connect_timeout: Duration::from_secs(5),
            max_decoding_message_size: usize::MAX,
        }
    }
}

/// Clients of one endpoint, sharing one channel.
#[derive(Debug, Clone)]
pub struct Clients {
    /// The `thanos.Store` client.
    pub store: StoreClient<Channel>,
    /// The `thanos.info.Info` client.
    pub info: InfoClient<Channel>,
    /// The `thanos.Metadata` client (answers only where Info advertises `metric_metadata`).
    pub metadata: MetadataClient<Channel>,
}

/// Connects to `endpoint` (`host:port` as Thanos `--endpoint` takes it, or a full `http(s)://` URI).
pub async fn connect(endpoint: &str, opts: &ClientOptions) -> Result<Clients> {
    let uri = if endpoint.contains("://") {
        endpoint.to_owned()
    } else if opts.tls.is_some() {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    };
    let mut ep = Endpoint::from_shared(uri).map_err(|source| Error::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        source,
    })?;
    ep = ep.connect_timeout(opts.connect_timeout);
    if let Some(tls) = &opts.tls {
        ep = ep.tls_config(tls.load()?).map_err(Error::Tls)?;
    }
    let channel = ep
        .connect()
        .instrument(tracing::debug_span!("connect", endpoint))
        .await
        .map_err(|source| Error::Connect {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    let mut store =
        StoreClient::new(channel.clone()).max_decoding_message_size(opts.max_decoding_message_size);
    let mut info =
        InfoClient::new(channel.clone()).max_decoding_message_size(opts.max_decoding_message_size);
    let mut metadata =
        MetadataClient::new(channel).max_decoding_message_size(opts.max_decoding_message_size);
    if opts.gzip {
        store = store
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip);
        info = info
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip);
        metadata = metadata
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip);
    }
    Ok(Clients {
        store,
        info,
        metadata,
    })
}
