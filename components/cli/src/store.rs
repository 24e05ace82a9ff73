//! `strata store`: the store gateway. Flags (named as in `thanos store`) here; the work is in
//! `strata-store`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use prometheus_client::registry::Registry;
use strata_objstore::{Bucket, ObjstoreArgs};
use strata_runtime::{AdminServer, Readiness, ServerArgs, Shutdown, admin_router, init_logging};
use strata_store::block::BlockOptions;
use strata_store::blockset::{BlockSet, BlockSetOptions};
use strata_store::cache::{IndexCache, LruCache, NoCache};
use strata_store::server::{ServerMetrics, ServerOptions, StoreService};
use strata_store::sync::TimeBound;
use strata_storeapi::Listen;

use crate::exit::ConfigError;

/// A byte size flag value: `250MB`, `1GiB`, `512KiB`, `0`, or plain bytes.
fn bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 250MB or 1GiB"))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        u => {
            return Err(format!(
                "unknown size unit {u:?} in {s:?} (B, KB, MB, GB, KiB, MiB, GiB)"
            ));
        }
    };
    Ok((n * mult) as u64)
}

/// `strata store` flags (names as in `thanos store`).
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Local directory for index-headers and the meta.json cache.
    #[arg(long = "data-dir", env = "STRATA_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,

    #[command(flatten)]
    grpc: crate::grpc::GrpcServerArgs,

    /// The bucket (Thanos objstore YAML).
    #[command(flatten)]
    objstore: ObjstoreArgs,

    /// How often the bucket is re-listed for new and deleted blocks.
    #[arg(long = "sync-block-duration", env = "STRATA_SYNC_BLOCK_DURATION", value_parser = humantime::parse_duration, default_value = "3m")]
    sync_block_duration: Duration,

    /// meta.json files fetched at once during a sync.
    #[arg(
        long = "block-meta-fetch-concurrency",
        env = "STRATA_BLOCK_META_FETCH_CONCURRENCY",
        default_value_t = 32
    )]
    block_meta_fetch_concurrency: usize,

    /// Serve only blocks ending after this time: RFC 3339 or relative (`-2w`, `-36h`).
    #[arg(long = "min-time", env = "STRATA_MIN_TIME", value_parser = parse_time_bound)]
    min_time: Option<TimeBound>,

    /// Serve only blocks starting before this time: RFC 3339 or relative (`-2w`, `-36h`).
    #[arg(long = "max-time", env = "STRATA_MAX_TIME", value_parser = parse_time_bound)]
    max_time: Option<TimeBound>,

    #[command(flatten)]
    selector: crate::selector::SelectorArgs,

    /// Blocks marked for deletion longer ago than this are no longer served.
    #[arg(long = "ignore-deletion-marks-delay", env = "STRATA_IGNORE_DELETION_MARKS_DELAY", value_parser = humantime::parse_duration, default_value = "24h")]
    ignore_deletion_marks_delay: Duration,

    /// Size of the in-memory postings and series cache (`0` disables it).
    #[arg(long = "index-cache-size", env = "STRATA_INDEX_CACHE_SIZE", value_parser = bytes, default_value = "250MB")]
    index_cache_size: u64,

    /// Size of the in-memory chunk cache (`0`, the default, disables it): chunks read once are
    /// served from memory until evicted, least recently used first.
    #[arg(long = "chunk-cache-size", env = "STRATA_CHUNK_CACHE_SIZE", value_parser = bytes, default_value = "0")]
    chunk_cache_size: u64,

    /// A loaded block's index-header is released after this long without queries (`0s`: never).
    #[arg(long = "store.index-header-lazy-reader-idle-timeout", env = "STRATA_INDEX_HEADER_IDLE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5m")]
    index_header_idle_timeout: Duration,

    /// Series one Series call may touch (0: unlimited); over it the call fails with
    /// ResourceExhausted.
    #[arg(
        long = "store.limits.request-series",
        env = "STRATA_STORE_LIMITS_REQUEST_SERIES",
        default_value_t = 0
    )]
    limit_series: u64,

    /// Samples one Series call may touch, estimated as 120 per chunk (0: unlimited).
    #[arg(
        long = "store.limits.request-samples",
        env = "STRATA_STORE_LIMITS_REQUEST_SAMPLES",
        default_value_t = 0
    )]
    limit_samples: u64,

    /// Bytes one Series call may fetch from the bucket or cache (0: unlimited).
    #[arg(long = "store.limits.request-bytes", env = "STRATA_STORE_LIMITS_REQUEST_BYTES", value_parser = bytes, default_value = "0")]
    limit_bytes: u64,

    /// Series calls served at once; more wait their turn.
    #[arg(
        long = "store.grpc.series-max-concurrency",
        env = "STRATA_STORE_SERIES_MAX_CONCURRENCY",
        default_value_t = 20
    )]
    series_max_concurrency: usize,

    /// Ranges in an index or segment file closer than this are fetched in one request.
    #[arg(long = "store.max-gap", env = "STRATA_STORE_MAX_GAP", value_parser = bytes, default_value = "512KiB")]
    max_gap: u64,

    #[command(flatten)]
    server: ServerArgs,
}

fn parse_time_bound(s: &str) -> Result<TimeBound, String> {
    s.parse::<TimeBound>().map_err(|e| e.to_string())
}

/// Runs the store gateway until SIGTERM/SIGINT.
pub fn run(args: StoreArgs) -> anyhow::Result<()> {
    init_logging(args.server.log_level, args.server.log_format).context("set up logging")?;
    let runtime = tokio::runtime::Runtime::new().context("start async runtime")?;
    runtime.block_on(serve(args))
}

impl StoreArgs {
    fn gateway_settings(&self) -> anyhow::Result<GatewaySettings> {
        Ok(GatewaySettings {
            block_set: BlockSetOptions {
                data_dir: self.data_dir.clone(),
                block: BlockOptions {
                    max_gap: self.max_gap,
                    ..BlockOptions::default()
                },
                min_time: self.min_time,
                max_time: self.max_time,
                relabel: self.selector.relabel()?,
                deletion_delay: self.ignore_deletion_marks_delay,
                sync_concurrency: self.block_meta_fetch_concurrency.max(1),
                idle_timeout: (!self.index_header_idle_timeout.is_zero())
                    .then_some(self.index_header_idle_timeout),
            },
            server: ServerOptions {
                max_series: self.limit_series,
                max_samples: self.limit_samples,
                max_bytes: self.limit_bytes,
                max_concurrency: self.series_max_concurrency.max(1),
                ..ServerOptions::default()
            },
            index_cache_size: self.index_cache_size,
            chunk_cache_size: self.chunk_cache_size,
            sync_interval: self.sync_block_duration,
        })
    }
}

/// How a store gateway runs, whoever starts it (`strata store` or `strata local`).
pub(crate) struct GatewaySettings {
    pub(crate) block_set: BlockSetOptions,
    pub(crate) server: ServerOptions,
    pub(crate) index_cache_size: u64,
    pub(crate) chunk_cache_size: u64,
    pub(crate) sync_interval: Duration,
}

impl GatewaySettings {
    /// The settings `strata store` has with no flags but `--data-dir`.
    pub(crate) fn defaults(data_dir: PathBuf) -> Self {
        GatewaySettings {
            block_set: BlockSetOptions {
                data_dir,
                block: BlockOptions::default(),
                min_time: None,
                max_time: None,
                relabel: None,
                deletion_delay: Duration::from_secs(24 * 3600),
                sync_concurrency: 32,
                idle_timeout: Some(Duration::from_secs(300)),
            },
            server: ServerOptions::default(),
            index_cache_size: 250_000_000,
            chunk_cache_size: 0,
            sync_interval: Duration::from_secs(180),
        }
    }
}

/// A store gateway with its metrics registered, not yet synced or serving.
pub(crate) struct Gateway {
    blocks: Arc<BlockSet>,
    sync_interval: Duration,
    /// The StoreAPI (Store + Info) to serve.
    pub(crate) service: StoreService,
}

impl Gateway {
    /// Builds the gateway over `bucket`, registering its metrics.
    pub(crate) fn new(
        settings: GatewaySettings,
        bucket: Bucket,
        registry: &mut Registry,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&settings.block_set.data_dir)
            .with_context(|| {
                format!(
                    "create --data-dir {}",
                    settings.block_set.data_dir.display()
                )
            })
            .context(ConfigError("--data-dir".into()))?;
        let cache: Arc<dyn IndexCache> = if settings.index_cache_size == 0 {
            Arc::new(NoCache)
        } else {
            let cache = LruCache::new(settings.index_cache_size);
            cache.register(registry);
            Arc::new(cache)
        };
        let mut block_set = settings.block_set;
        if settings.chunk_cache_size > 0 {
            let chunks = LruCache::chunks(settings.chunk_cache_size);
            chunks.register(registry);
            block_set.block.chunk_cache = Some(Arc::new(chunks));
        }
        let blocks = Arc::new(
            BlockSet::new(bucket, cache, block_set)
                .map_err(|e| anyhow::Error::new(e).context(ConfigError("store gateway".into())))?,
        );
        blocks.metrics().register(registry);
        let metrics = ServerMetrics::register(registry);
        let service = StoreService::new(blocks.clone(), settings.server, metrics);
        Ok(Gateway {
            blocks,
            sync_interval: settings.sync_interval,
            service,
        })
    }

    /// Syncs the bucket's blocks once (the gateway is ready after it), then keeps them in sync
    /// until `shutdown`.
    pub(crate) async fn start_syncing(
        &self,
        shutdown: &Shutdown,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let report = self.blocks.sync().await.context("initial block sync")?;
        tracing::info!(
            blocks = report.blocks,
            partial = report.partial,
            filtered = report.filtered,
            failed = report.failed,
            meta_cache_hits = report.meta_cache_hits,
            "initial block sync done"
        );
        let stop = shutdown.clone();
        Ok(self
            .blocks
            .clone()
            .spawn_sync_loop(self.sync_interval, async move { stop.cancelled().await }))
    }
}

async fn serve(args: StoreArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals().context("install signal handlers")?;
    let readiness = Readiness::new();
    let mut registry = Registry::default();
    let config = args
        .objstore
        .load()
        .map_err(|e| anyhow::Error::new(e).context(ConfigError("object storage".into())))?;
    let bucket = Bucket::new(&config, &mut registry)
        .map_err(|e| anyhow::Error::new(e).context(ConfigError("object storage".into())))?;
    let gateway = Gateway::new(args.gateway_settings()?, bucket, &mut registry)?;
    let admin = AdminServer::bind(args.server.http_address)
        .await
        .context(ConfigError(format!(
            "--http-address {}",
            args.server.http_address
        )))?;
    let router = admin_router(Arc::new(registry), readiness.clone());
    let admin_task = tokio::spawn(admin.serve(router, shutdown.clone()));

    // The first sync: the gateway is ready once it knows the bucket's blocks.
    let sync_task = gateway.start_syncing(&shutdown).await?;
    let listener = tokio::net::TcpListener::bind(args.grpc.grpc_address)
        .await
        .with_context(|| format!("bind --grpc-address {}", args.grpc.grpc_address))
        .context(ConfigError(format!(
            "--grpc-address {}",
            args.grpc.grpc_address
        )))?;
    tracing::info!(address = %args.grpc.grpc_address, "serving StoreAPI");
    readiness.set(true);
    let service = gateway.service;
    let grpc_opts = strata_storeapi::ServerOptions {
        tls: args.grpc.tls(),
        ..Default::default()
    };
    let signal = shutdown.clone();
    let served = strata_runtime::run_until_shutdown(
        strata_storeapi::serve(
            Listen::Listener(listener),
            service.clone(),
            service,
            grpc_opts,
            async move { signal.cancelled().await },
        ),
        &shutdown,
        args.server.shutdown_timeout,
    )
    .await;
    readiness.set(false);
    served.context("shutdown")??;
    let _ = sync_task.await;
    admin_task.await.context("admin server task")??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(bytes("250MB"), Ok(250_000_000));
        assert_eq!(bytes("512KiB"), Ok(512 * 1024));
        assert_eq!(bytes("0"), Ok(0));
        assert!(bytes("12 parsecs").is_err());
        assert!(bytes("MB").is_err());
    }
}
