//! `strata sidecar`: serves a Prometheus's data over the StoreAPI. Flags here; the work is in
//! `strata-sidecar`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use prometheus_client::registry::Registry;
use strata_objstore::{Bucket, ObjstoreArgs};
use strata_runtime::{AdminServer, Readiness, ServerArgs, Shutdown, admin_router, init_logging};
use strata_sidecar::{RunError, ShippingConfig, SidecarConfig};

use crate::exit::ConfigError;

/// `strata sidecar` flags (names as in `thanos sidecar`).
#[derive(Debug, Args)]
pub struct SidecarArgs {
    /// URL of the Prometheus to serve.
    #[arg(
        long = "prometheus.url",
        env = "STRATA_PROMETHEUS_URL",
        default_value = "http://localhost:9090"
    )]
    prometheus_url: String,

    /// Prometheus's TSDB directory (read by the block shipper).
    #[arg(long = "tsdb.path", env = "STRATA_TSDB_PATH", default_value = "./data")]
    tsdb_path: PathBuf,

    #[command(flatten)]
    grpc: crate::grpc::GrpcServerArgs,

    /// How long to wait for Prometheus to become ready at start.
    #[arg(long = "prometheus.ready_timeout", env = "STRATA_PROMETHEUS_READY_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10m")]
    ready_timeout: Duration,

    /// How often Prometheus's external labels are re-read.
    #[arg(long = "prometheus.refresh-interval", env = "STRATA_PROMETHEUS_REFRESH_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    refresh_interval: Duration,

    /// Bucket for block uploads (Thanos objstore YAML); without one the sidecar only serves.
    #[command(flatten)]
    objstore: ObjstoreArgs,

    /// How often the TSDB directory is scanned for new blocks to upload.
    #[arg(long = "shipper.sync-interval", env = "STRATA_SHIPPER_SYNC_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    shipper_sync_interval: Duration,

    /// Also upload blocks Prometheus compacted itself (level > 1), as `thanos sidecar
    /// --shipper.upload-compacted`.
    #[arg(
        long = "shipper.upload-compacted",
        env = "STRATA_SHIPPER_UPLOAD_COMPACTED"
    )]
    shipper_upload_compacted: bool,

    #[command(flatten)]
    server: ServerArgs,
}

impl SidecarArgs {
    /// The bucket when `--objstore.config(-file)` is given; errors name the flag or file.
    fn bucket(&self, registry: &mut Registry) -> anyhow::Result<Option<Bucket>> {
        if self.objstore.config.is_none() && self.objstore.config_file.is_none() {
            return Ok(None);
        }
        let config = self
            .objstore
            .load()
            .map_err(|e| anyhow::Error::new(e).context(ConfigError("object storage".into())))?;
        let bucket = Bucket::new(&config, registry)
            .map_err(|e| anyhow::Error::new(e).context(ConfigError("object storage".into())))?;
        Ok(Some(bucket))
    }

    fn config(&self) -> SidecarConfig {
        let mut c = SidecarConfig::new(&self.prometheus_url, self.grpc.grpc_address);
        c.tsdb_path = Some(self.tsdb_path.clone());
        c.ready_timeout = self.ready_timeout;
        c.refresh_interval = self.refresh_interval;
        c.tls = self.grpc.tls();
        c
    }
}

/// Runs the sidecar until SIGTERM/SIGINT.
pub fn run(args: SidecarArgs) -> anyhow::Result<()> {
    init_logging(args.server.log_level, args.server.log_format).context("set up logging")?;
    let runtime = tokio::runtime::Runtime::new().context("start async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: SidecarArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals().context("install signal handlers")?;
    let readiness = Readiness::new();
    let mut registry = Registry::default();
    let mut config = args.config();
    config.shipping = args.bucket(&mut registry)?.map(|bucket| ShippingConfig {
        bucket,
        interval: args.shipper_sync_interval,
        upload_compacted: args.shipper_upload_compacted,
    });
    let admin = AdminServer::bind(args.server.http_address)
        .await
        .context(ConfigError(format!(
            "--http-address {}",
            args.server.http_address
        )))?;
    // The sidecar registers its metrics before the registry is shared with /metrics.
    let started = strata_sidecar::Sidecar::start(config, &mut registry, &shutdown).await;
    let sidecar = match started {
        Ok(s) => s,
        Err(
            e @ (RunError::NoExternalLabels { .. } | RunError::Config(_) | RunError::Bind { .. }),
        ) => {
            return Err(anyhow::Error::new(e).context(ConfigError("sidecar configuration".into())));
        }
        Err(e) => return Err(e.into()),
    };
    let router = admin_router(Arc::new(registry), readiness.clone());
    let admin_task = tokio::spawn(admin.serve(router, shutdown.clone()));
    if let Ok(addr) = sidecar.local_addr() {
        tracing::info!(%addr, prometheus = %args.prometheus_url, "serving StoreAPI");
    }
    readiness.set(true);
    let served = strata_runtime::run_until_shutdown(
        sidecar.serve(shutdown.clone()),
        &shutdown,
        args.server.shutdown_timeout,
    )
    .await;
    readiness.set(false);
    served.context("shutdown")??;
    admin_task.await.context("admin server task")??;
    Ok(())
}
