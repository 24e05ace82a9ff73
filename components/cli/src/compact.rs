//! `strata compact`: the compactor. Flags (named as in `thanos compact`) here; the work is in
//! `strata_compact::run`.
//!
//! Once mode (default): one pass, exit 0, or 1 when a group halted or a step failed (after the
//! other groups finished). `--wait`: a pass every `--wait-interval`, serving HTTP meanwhile;
//! halted groups are skipped in later passes (`strata_compact_halted` stays 1).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use prometheus_client::registry::Registry;
use strata_compact::retention::Retention;
use strata_compact::run::{Compactor, CompactorConfig};
use strata_objstore::{Bucket, ObjstoreArgs};
use strata_runtime::{AdminServer, Readiness, ServerArgs, Shutdown, admin_router, init_logging};

use crate::exit::ConfigError;

/// A Prometheus duration flag value (`30m`, `48h`, `2w`, `0d`), as Thanos's bucket flags take it.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    strata_bucket::sync::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like 30m, 48h or 2w: {e}"))
}

/// `strata compact` flags (names as in `thanos compact`).
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Local working directory (downloaded blocks, outputs, the meta.json cache).
    #[arg(long = "data-dir", env = "STRATA_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,

    /// The bucket (Thanos objstore YAML).
    #[command(flatten)]
    objstore: ObjstoreArgs,

    /// Keep running: a pass every `--wait-interval`, serving HTTP in between.
    #[arg(long = "wait", short = 'w', env = "STRATA_COMPACT_WAIT")]
    wait: bool,

    /// Time between passes with `--wait`.
    #[arg(long = "wait-interval", env = "STRATA_COMPACT_WAIT_INTERVAL", value_parser = duration, default_value = "5m")]
    wait_interval: Duration,

    /// Blocks younger than this (by ULID time) are left alone, unless a compactor wrote them.
    #[arg(long = "consistency-delay", env = "STRATA_COMPACT_CONSISTENCY_DELAY", value_parser = duration, default_value = "30m")]
    consistency_delay: Duration,

    /// Merge overlapping blocks of a group instead of halting it.
    #[arg(
        long = "compact.enable-vertical-compaction",
        env = "STRATA_COMPACT_ENABLE_VERTICAL_COMPACTION"
    )]
    vertical: bool,

    /// Label telling HA replicas apart (repeatable): ignored when grouping, dropped from the
    /// output, samples de-duplicated. Turns vertical compaction on (as in Thanos).
    #[arg(long = "deduplication.replica-label")]
    replica_labels: Vec<String>,

    /// Do not downsample.
    #[arg(
        long = "downsampling.disable",
        env = "STRATA_COMPACT_DOWNSAMPLING_DISABLE"
    )]
    downsampling_disable: bool,

    /// Shortest raw block downsampled to 5m (Thanos: 40h). For tests; hidden.
    #[arg(long = "debug.downsample-min-span-5m", value_parser = duration, default_value = "40h", hide = true)]
    downsample_min_span_5m: Duration,

    /// Shortest 5m block downsampled to 1h (Thanos: 10d). For tests; hidden.
    #[arg(long = "debug.downsample-min-span-1h", value_parser = duration, default_value = "10d", hide = true)]
    downsample_min_span_1h: Duration,

    /// How long raw blocks are kept (`0d`: forever).
    #[arg(long = "retention.resolution-raw", value_parser = duration, default_value = "0d")]
    retention_raw: Duration,

    /// How long 5m blocks are kept (`0d`: forever).
    #[arg(long = "retention.resolution-5m", value_parser = duration, default_value = "0d")]
    retention_5m: Duration,

    /// How long 1h blocks are kept (`0d`: forever).
    #[arg(long = "retention.resolution-1h", value_parser = duration, default_value = "0d")]
    retention_1h: Duration,

    /// Blocks marked for deletion are deleted this long after the mark.
    #[arg(long = "delete-delay", env = "STRATA_COMPACT_DELETE_DELAY", value_parser = duration, default_value = "48h")]
    delete_delay: Duration,

    /// Groups compacted at the same time.
    #[arg(
        long = "compact.concurrency",
        env = "STRATA_COMPACT_CONCURRENCY",
        default_value_t = 1
    )]
    compact_concurrency: usize,

    /// meta.json files fetched at once during a sync.
    #[arg(
        long = "block-sync-concurrency",
        env = "STRATA_COMPACT_BLOCK_SYNC_CONCURRENCY",
        default_value_t = 20
    )]
    block_sync_concurrency: usize,

    #[command(flatten)]
    selector: crate::selector::SelectorArgs,

    #[command(flatten)]
    server: ServerArgs,
}

fn ms(d: Duration) -> Option<i64> {
    (!d.is_zero()).then(|| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl CompactArgs {
    fn config(&self) -> anyhow::Result<CompactorConfig> {
        if self.compact_concurrency == 0 {
            return Err(ConfigError("--compact.concurrency must be at least 1".into()).into());
        }
        if self.block_sync_concurrency == 0 {
            return Err(ConfigError("--block-sync-concurrency must be at least 1".into()).into());
        }
        if self.replica_labels.iter().any(|l| l.is_empty()) {
            return Err(
                ConfigError("--deduplication.replica-label must not be empty".into()).into(),
            );
        }
        let mut cfg = CompactorConfig::new(&self.data_dir);
        cfg.consistency_delay = self.consistency_delay;
        cfg.vertical = self.vertical || !self.replica_labels.is_empty();
        cfg.dedup_replica_labels = self.replica_labels.clone();
        cfg.downsampling = !self.downsampling_disable;
        let span = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        cfg.downsample_min_span_5m = span(self.downsample_min_span_5m);
        cfg.downsample_min_span_1h = span(self.downsample_min_span_1h);
        cfg.retention = Retention {
            raw_ms: ms(self.retention_raw),
            five_m_ms: ms(self.retention_5m),
            one_h_ms: ms(self.retention_1h),
        };
        cfg.delete_delay = self.delete_delay;
        cfg.compaction_concurrency = self.compact_concurrency;
        cfg.block_sync_concurrency = self.block_sync_concurrency;
        cfg.relabel = self.selector.relabel()?;
        Ok(cfg)
    }
}

/// Runs the compactor: one pass, or passes until SIGTERM/SIGINT with `--wait`.
pub fn run(args: CompactArgs) -> anyhow::Result<()> {
    init_logging(args.server.log_level, args.server.log_format).context("set up logging")?;
    let runtime = tokio::runtime::Runtime::new().context("start async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: CompactArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    let shutdown = Shutdown::on_signals().context("install signal handlers")?;
    let readiness = Readiness::new();
    let mut registry = Registry::default();
    let config = args
        .objstore
        .load()
        .map_err(|e| anyhow::Error::new(e).context(ConfigError("object storage".into())))?;
    let bucket = Bucket::new(&config, &mut registry)
        .map_err(|e| anyhow::Error::new(e).context(ConfigError("object storage".into())))?;
    let compactor = Compactor::new(bucket, cfg, &mut registry)
        .with_context(|| format!("--data-dir {}", args.data_dir.display()))
        .context(ConfigError("--data-dir".into()))?;
    let admin = AdminServer::bind(args.server.http_address)
        .await
        .context(ConfigError(format!(
            "--http-address {}",
            args.server.http_address
        )))?;
    let compactor = Arc::new(compactor);
    let router =
        admin_router(Arc::new(registry), readiness.clone()).merge(status_router(compactor.clone()));
    let admin_task = tokio::spawn(admin.serve(router, shutdown.clone()));
    readiness.set(true);

    let result = if args.wait {
        wait_loop(&compactor, args.wait_interval, &shutdown).await;
        Ok(())
    } else {
        once(&compactor).await
    };
    readiness.set(false);
    shutdown.trigger();
    admin_task.await.context("admin server task")??;
    result
}

/// `GET /api/v1/status/compactor`: the halted groups and the last clean pass, as JSON
/// (`{"halted":[{"group","blocks","message"}],"lastSuccessfulRun":<unix s>|null,"passes":N}`).
/// The operator reads it to set a `Compactor`'s `Halted` condition and `lastSuccessfulRun`.
fn status_router(compactor: Arc<Compactor>) -> axum::Router {
    axum::Router::new().route(
        "/api/v1/status/compactor",
        axum::routing::get(move || {
            let state = compactor.state();
            async move {
                let halted: Vec<serde_json::Value> = state
                    .halted
                    .iter()
                    .map(|h| {
                        serde_json::json!({
                            "group": h.group,
                            "blocks": [h.a.to_string(), h.b.to_string()],
                            "message": h.to_string(),
                        })
                    })
                    .collect();
                axum::Json(serde_json::json!({
                    "halted": halted,
                    "lastSuccessfulRun": state.last_successful_run,
                    "passes": state.passes,
                }))
            }
        }),
    )
}

/// Runs a pass every `interval` until `shutdown`; a pass's halts and failures are logged (the
/// halted group stays halted, `strata_compact_halted` says so).
pub(crate) async fn wait_loop(compactor: &Compactor, interval: Duration, shutdown: &Shutdown) {
    loop {
        match compactor.run_once().await {
            Ok(r) if r.is_ok() => {}
            Ok(r) => {
                for h in &r.halted {
                    tracing::error!("{h}");
                }
                for e in &r.errors {
                    tracing::error!("{e}");
                }
            }
            Err(e) => tracing::error!(error = %e, "compaction pass failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

async fn once(compactor: &Compactor) -> anyhow::Result<()> {
    let r = compactor.run_once().await.context("compaction pass")?;
    if r.is_ok() {
        return Ok(());
    }
    let mut problems: Vec<String> = r.halted.iter().map(ToString::to_string).collect();
    problems.extend(r.errors.iter().cloned());
    anyhow::bail!("{}", problems.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_thanos() {
        assert_eq!(duration("0d"), Ok(Duration::ZERO));
        assert_eq!(duration("48h"), Ok(Duration::from_secs(48 * 3600)));
        assert_eq!(duration("2w"), Ok(Duration::from_secs(14 * 86400)));
        assert!(duration("forever").is_err());
        assert_eq!(ms(Duration::ZERO), None);
        assert_eq!(ms(Duration::from_secs(1)), Some(1000));
    }
}
