//! `strata local`: the federation in one process, for a laptop or a single VM. A store gateway over
//! a bucket (a directory under `--data-dir` unless `--objstore.config(-file)` names another), a
//! compactor on that bucket, a sidecar for each `--prometheus` (shipping its blocks when a TSDB
//! path is given), the querier over all of them and its web UI, on one HTTP address. With
//! `--rule-file`, a ruler too: it evaluates with the embedded PromQL engine over the querier's
//! stores, keeps its results in `<data-dir>/rule` (shipped to the bucket, and one of the
//! querier's stores), and serves its API (`/api/v1/rules`, `/api/v1/alerts`, `/-/reload`) on
//! the same address. The parts talk over the StoreAPI on loopback ports, exactly as the
//! separate processes do.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use prometheus_client::registry::Registry;
use strata_compact::run::{Compactor, CompactorConfig};
use strata_objstore::{Bucket, BucketConfig, ObjstoreArgs};
use strata_promql::{Engine, Labels};
use strata_query::api::{ApiMetrics, ApiSettings};
use strata_query::{QueryOptions, SourceQueryable};
use strata_rule::eval::EmbeddedEngine;
use strata_rule::notifier::{Alertmanagers, NotifierOptions};
use strata_rule::storage::{LocalStorage, StorageOptions};
use strata_runtime::{AdminServer, Readiness, ServerArgs, Shutdown, admin_router, init_logging};
use strata_sidecar::{RunError, ShippingConfig, SidecarConfig};
use strata_storeapi::Listen;

use crate::exit::ConfigError;
use crate::query::{EndpointFlags, build_info, store_source};
use crate::store::{Gateway, GatewaySettings};

/// A Prometheus to federate: its URL and, optionally, its TSDB directory (whose blocks are shipped).
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusTarget {
    url: String,
    tsdb_path: Option<PathBuf>,
}

fn prometheus_target(s: &str) -> Result<PrometheusTarget, String> {
    let (url, path) = match s.split_once(',') {
        Some((u, p)) => (u.trim(), Some(p.trim())),
        None => (s.trim(), None),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "{s:?}: expected URL[,TSDB_PATH] with an http:// or https:// URL"
        ));
    }
    if path.is_some_and(str::is_empty) {
        return Err(format!("{s:?}: the TSDB path after the comma is empty"));
    }
    Ok(PrometheusTarget {
        url: url.to_string(),
        tsdb_path: path.map(PathBuf::from),
    })
}

/// `strata local` flags.
#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Where Strata keeps its state: the bucket (unless `--objstore.config` is given) and the
    /// store gateway's cache.
    #[arg(
        long = "data-dir",
        env = "STRATA_DATA_DIR",
        default_value = "./strata-data"
    )]
    data_dir: PathBuf,

    /// A Prometheus to federate, `URL[,TSDB_PATH]`: its live data is queried through a sidecar,
    /// and with a TSDB path its finished blocks are uploaded to the bucket. Repeatable.
    #[arg(long = "prometheus", env = "STRATA_PROMETHEUS_TARGETS", value_delimiter = ';', value_parser = prometheus_target, value_name = "URL[,TSDB_PATH]")]
    prometheus: Vec<PrometheusTarget>,

    /// External label that tells HA replicas apart; series differing only in it are merged.
    /// Repeatable.
    #[arg(
        long = "query.replica-label",
        env = "STRATA_QUERY_REPLICA_LABEL",
        value_delimiter = ',',
        default_value = "replica,prometheus_replica",
        value_name = "LABEL"
    )]
    replica_labels: Vec<String>,

    /// How often the sidecars look for new TSDB blocks to upload.
    #[arg(long = "shipper.sync-interval", env = "STRATA_SHIPPER_SYNC_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    shipper_sync_interval: Duration,

    /// How often the store gateway re-lists the bucket for new and deleted blocks.
    #[arg(long = "sync-block-duration", env = "STRATA_SYNC_BLOCK_DURATION", value_parser = humantime::parse_duration, default_value = "1m")]
    sync_block_duration: Duration,

    /// Do not run the compactor.
    #[arg(long = "compact.disable", env = "STRATA_COMPACT_DISABLE")]
    compact_disable: bool,

    /// Time between compactor passes.
    #[arg(long = "compact.wait-interval", env = "STRATA_COMPACT_WAIT_INTERVAL", value_parser = humantime::parse_duration, default_value = "5m")]
    compact_wait_interval: Duration,

    /// Rule file (Prometheus format) or glob, evaluated in this process over the querier's
    /// stores; repeatable. Without it no ruler runs.
    #[arg(long = "rule-file", env = "STRATA_RULE_FILE", value_delimiter = ',')]
    rule_files: Vec<String>,

    /// Evaluation interval of rule groups that set none.
    #[arg(long = "eval-interval", env = "STRATA_EVAL_INTERVAL", value_parser = humantime::parse_duration, default_value = "1m")]
    eval_interval: Duration,

    /// Alertmanager base URL (API v2) the ruler sends alerts to; repeatable.
    #[arg(
        long = "alertmanagers.url",
        env = "STRATA_ALERTMANAGERS_URL",
        value_delimiter = ','
    )]
    alertmanagers: Vec<String>,

    /// The bucket (Thanos objstore YAML); without it, a FILESYSTEM bucket in `<data-dir>/bucket`.
    #[command(flatten)]
    objstore: ObjstoreArgs,

    #[command(flatten)]
    server: ServerArgs,
}

impl LocalArgs {
    fn bucket_config(&self) -> anyhow::Result<BucketConfig> {
        let configured = self.objstore.config.is_some() || self.objstore.config_file.is_some();
        let config = if configured {
            self.objstore.load()
        } else {
            let dir = self.data_dir.join("bucket");
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("create {}", dir.display()))
                .context(ConfigError("--data-dir".into()))?;
            let yaml = format!(
                "type: FILESYSTEM\nconfig:\n  directory: {}\n",
                yaml_string(&dir.display().to_string())
            );
            BucketConfig::parse(&yaml, "the default local bucket")
        };
        config.map_err(|e| anyhow::Error::new(e).context(ConfigError("object storage".into())))
    }
}

/// A YAML double-quoted scalar (a JSON string is valid YAML).
fn yaml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Runs the all-in-one federation until SIGTERM/SIGINT.
pub fn run(args: LocalArgs) -> anyhow::Result<()> {
    init_logging(args.server.log_level, args.server.log_format).context("set up logging")?;
    let runtime = tokio::runtime::Runtime::new().context("start async runtime")?;
    runtime.block_on(serve(args))
}

const LOOPBACK_ANY_PORT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

async fn serve(args: LocalArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals().context("install signal handlers")?;
    let readiness = Readiness::new();
    let mut registry = Registry::default();
    let config = args.bucket_config()?;
    let bucket = Bucket::new(&config, &mut registry)
        .map_err(|e| anyhow::Error::new(e).context(ConfigError("object storage".into())))?;
    let admin = AdminServer::bind(args.server.http_address)
        .await
        .context(ConfigError(format!(
            "--http-address {}",
            args.server.http_address
        )))?;

    let mut tasks = tokio::task::JoinSet::new();
    let mut endpoints = Vec::new();
    let mut started = Vec::new();

    // The store gateway over the bucket.
    let mut settings = GatewaySettings::defaults(args.data_dir.join("store"));
    settings.sync_interval = args.sync_block_duration;
    let gateway = Gateway::new(settings, bucket.clone(), &mut registry)?;
    let sync_task = gateway.start_syncing(&shutdown).await?;
    let listener = tokio::net::TcpListener::bind(LOOPBACK_ANY_PORT)
        .await
        .context("bind the store gateway's loopback port")?;
    let store_addr = listener.local_addr().context("store gateway address")?;
    endpoints.push(store_addr.to_string());
    started.push(
        if args.objstore.config.is_none() && args.objstore.config_file.is_none() {
            format!(
                "store gateway on {store_addr} over the bucket in {}",
                args.data_dir.join("bucket").display()
            )
        } else {
            format!(
                "store gateway on {store_addr} over the {} bucket",
                config.provider.type_name()
            )
        },
    );
    let service = gateway.service;
    let signal = shutdown.clone();
    tasks.spawn(async move {
        strata_storeapi::serve(
            Listen::Listener(listener),
            service.clone(),
            service,
            strata_storeapi::ServerOptions::default(),
            async move { signal.cancelled().await },
        )
        .await
        .context("store gateway")
    });

    // The compactor, passes every --compact.wait-interval; replica blocks are merged (vertical
    // compaction on the replica labels), as the querier merges them.
    if !args.compact_disable {
        let mut cfg = CompactorConfig::new(args.data_dir.join("compact"));
        cfg.vertical = !args.replica_labels.is_empty();
        cfg.dedup_replica_labels = args.replica_labels.clone();
        let compactor = Compactor::new(bucket.clone(), cfg, &mut registry)
            .context(ConfigError("--data-dir".into()))?;
        let stop = shutdown.clone();
        let every = args.compact_wait_interval;
        tasks.spawn(async move {
            crate::compact::wait_loop(&compactor, every, &stop).await;
            Ok(())
        });
        started.push(format!(
            "compactor (a pass every {}, replica labels merged: {})",
            humantime::format_duration(every),
            args.replica_labels.join(", ")
        ));
    }

    // One sidecar per Prometheus.
    for (i, target) in args.prometheus.iter().enumerate() {
        let mut c = SidecarConfig::new(&target.url, LOOPBACK_ANY_PORT);
        c.tsdb_path = target.tsdb_path.clone();
        c.shipping = target.tsdb_path.as_ref().map(|_| ShippingConfig {
            bucket: bucket.clone(),
            interval: args.shipper_sync_interval,
            upload_compacted: false,
        });
        // Every sidecar registers the same metric names; a second family of the same name would
        // make `/metrics` unparseable, so only the first sidecar's metrics are exported.
        let mut scratch = Registry::default();
        let metrics = if i == 0 { &mut registry } else { &mut scratch };
        let sidecar = match strata_sidecar::Sidecar::start(c, metrics, &shutdown).await {
            Ok(s) => s,
            Err(
                e @ (RunError::NoExternalLabels { .. }
                | RunError::Config(_)
                | RunError::Bind { .. }),
            ) => {
                return Err(anyhow::Error::new(e)
                    .context(ConfigError(format!("--prometheus {}", target.url))));
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("sidecar for {}", target.url)));
            }
        };
        let addr = sidecar.local_addr().context("sidecar address")?.to_string();
        started.push(match &target.tsdb_path {
            Some(p) => format!(
                "sidecar on {addr} for {} (shipping blocks from {})",
                target.url,
                p.display()
            ),
            None => format!("sidecar on {addr} for {} (no shipping)", target.url),
        });
        endpoints.push(addr);
        let stop = shutdown.clone();
        let url = target.url.clone();
        tasks.spawn(async move {
            sidecar
                .serve(stop)
                .await
                .with_context(|| format!("sidecar for {url}"))
        });
    }

    // The ruler's storage: one more store of the querier, its blocks shipped to the bucket.
    let rule_storage = if args.rule_files.is_empty() {
        None
    } else {
        let storage = LocalStorage::open(
            StorageOptions {
                dir: args.data_dir.join("rule"),
                external_labels: Labels::new(Vec::new()),
                block_duration_ms: RULE_BLOCK_DURATION_MS,
                retention_ms: RULE_RETENTION_MS,
            },
            &mut registry,
        )
        .await
        .context("open the ruler's storage")?;
        let listener = tokio::net::TcpListener::bind(LOOPBACK_ANY_PORT)
            .await
            .context("bind the ruler's loopback port")?;
        let addr = listener.local_addr().context("ruler StoreAPI address")?;
        endpoints.push(addr.to_string());
        let (served, stop) = (storage.clone(), shutdown.clone());
        tasks.spawn(async move {
            strata_rule::storage::serve(
                served,
                Listen::Listener(listener),
                strata_storeapi::ServerOptions::default(),
                async move { stop.cancelled().await },
            )
            .await
            .context("ruler StoreAPI")
        });
        // A shipping sidecar has registered the shipper's metric names already (see above).
        let mut scratch = Registry::default();
        let shipper_metrics = if args.prometheus.iter().any(|t| t.tsdb_path.is_some()) {
            &mut scratch
        } else {
            &mut registry
        };
        let stop = shutdown.clone();
        let upkeep = strata_rule::storage::run_background(
            storage.clone(),
            Some(bucket.clone()),
            shipper_metrics,
            async move { stop.cancelled().await },
        );
        tasks.spawn(async move { upkeep.await.context("ruler storage upkeep") });
        Some((storage, addr))
    };

    // The querier over all of them, on the one HTTP address.
    let source = store_source(EndpointFlags {
        endpoints,
        sd_files: Vec::new(),
        replica_labels: args.replica_labels.clone(),
        store_response_timeout: Duration::ZERO,
        tls: None,
    })
    .await
    .map_err(|e| e.context(ConfigError("store endpoints".into())))?;
    let api = strata_query::api::router(
        source.clone(),
        ApiSettings {
            build_info: build_info(),
            metrics: Some(ApiMetrics::register(&mut registry)),
            ..ApiSettings::default()
        },
    );
    let http = admin.local_addr();

    // The ruler's groups, evaluated by the embedded engine over the querier's stores.
    let mut rules = None;
    let mut rule_api = None;
    if let Some((storage, addr)) = rule_storage {
        let queryable = SourceQueryable::new(
            source.clone(),
            QueryOptions {
                // A failing store fails the rule (Thanos's default `abort` strategy).
                partial_response: false,
                ..QueryOptions::default()
            },
        );
        let backend = Arc::new(EmbeddedEngine::new(Engine::default(), Arc::new(queryable)));
        let notify = Arc::new(
            Alertmanagers::start(
                NotifierOptions {
                    urls: args.alertmanagers.clone(),
                    timeout: Duration::from_secs(10),
                    queue_capacity: 10_000,
                    label_drop: Vec::new(),
                    dns_interval: Duration::from_secs(30),
                    dns_server: None,
                },
                &mut registry,
            )
            .context(ConfigError("--alertmanagers.url".into()))?,
        );
        let config = rule_config(&args, &bucket, addr, http);
        let (manager, routes) = strata_rule::run::start_rules(
            &config,
            backend,
            storage.clone(),
            notify,
            Some(storage),
            &mut registry,
        )
        .map_err(|e| match e {
            strata_rule::Error::RuleFile { .. } | strata_rule::Error::Config(_) => {
                anyhow::Error::new(e).context(ConfigError("--rule-file".into()))
            }
            e => anyhow::Error::new(e).context("start the ruler"),
        })?;
        rule_api = Some(routes);
        let groups = manager.groups().len();
        let hup = strata_rule::run::reload_on_sighup(manager.clone(), shutdown.clone());
        started.push(format!(
            "ruler on {addr} ({groups} rule groups from {}; results in {})",
            args.rule_files.join(", "),
            args.data_dir.join("rule").display()
        ));
        rules = Some((manager, hup));
    }
    let ui = strata_query::ui::router(strata_query::ui::UiOptions {
        rules: rules.is_some(),
    });
    let mut router = admin_router(Arc::new(registry), readiness.clone())
        .merge(api)
        .merge(ui);
    if let Some(routes) = rule_api {
        router = router.merge(routes);
    }
    let serving = tokio::spawn(admin.serve(router, shutdown.clone()));
    readiness.set(true);
    for line in &started {
        tracing::info!("started {line}");
    }
    announce(&started, http, &args.replica_labels);

    // Run until a signal, or until a part fails (then stop the others).
    let failed = tokio::select! {
        () = shutdown.cancelled() => None,
        Some(res) = tasks.join_next() => Some(res),
    };
    shutdown.trigger();
    readiness.set(false);
    if let Some((manager, hup)) = rules {
        manager.stop();
        hup.abort();
    }
    let deadline = args.server.shutdown_timeout;
    let rest = async {
        let mut first_err = None;
        if let Some(res) = failed {
            first_err = flatten(res).err();
        }
        while let Some(res) = tasks.join_next().await {
            if let Err(e) = flatten(res)
                && first_err.is_none()
            {
                first_err = Some(e);
            }
        }
        let _ = sync_task.await;
        if let Ok(Err(e)) = serving.await
            && first_err.is_none()
        {
            first_err = Some(anyhow::Error::new(e).context("HTTP server"));
        }
        first_err
    };
    match tokio::time::timeout(deadline, rest).await {
        Ok(None) => Ok(()),
        Ok(Some(e)) => Err(e),
        Err(_) => anyhow::bail!("shutdown took longer than --shutdown-timeout {deadline:?}"),
    }
}

/// Block length of the ruler's storage (Prometheus's).
const RULE_BLOCK_DURATION_MS: i64 = 2 * 3600 * 1000;
/// How long the ruler keeps its blocks locally (they are in the bucket too).
const RULE_RETENTION_MS: i64 = 48 * 3600 * 1000;

/// The embedded ruler's settings: `strata rule`'s defaults, with the evaluation interval, rule
/// files and Alertmanagers from the flags.
fn rule_config(
    args: &LocalArgs,
    bucket: &Bucket,
    grpc: SocketAddr,
    http: SocketAddr,
) -> strata_rule::RuleConfig {
    let ms = |d: i64| Duration::from_millis(u64::try_from(d).unwrap_or(0));
    strata_rule::RuleConfig {
        rule_files: args.rule_files.clone(),
        query_urls: Vec::new(),
        query_timeout: Duration::from_secs(120),
        eval_interval: args.eval_interval,
        data_dir: args.data_dir.join("rule"),
        external_labels: Labels::new(Vec::new()),
        external_url: format!("http://{http}"),
        alertmanager_urls: args.alertmanagers.clone(),
        alertmanager_timeout: Duration::from_secs(10),
        alert_label_drop: Vec::new(),
        resend_delay: Duration::from_secs(60),
        for_outage_tolerance: Duration::from_secs(3600),
        for_grace_period: Duration::from_secs(600),
        block_duration: ms(RULE_BLOCK_DURATION_MS),
        retention: ms(RULE_RETENTION_MS),
        bucket: Some(bucket.clone()),
        grpc_address: grpc,
        grpc_options: strata_storeapi::ServerOptions::default(),
        http_address: http,
        query_sd_files: Vec::new(),
        query_sd_interval: Duration::from_secs(300),
        alertmanager_dns_interval: Duration::from_secs(30),
        remote_write: Vec::new(),
    }
}

fn flatten(res: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
    res.context("task panicked or was cancelled")?
}

/// Tells the person at the terminal what runs and where to point Grafana.
#[allow(clippy::print_stdout)]
fn announce(started: &[String], http: SocketAddr, replica_labels: &[String]) {
    let host = if http.ip().is_unspecified() {
        format!("localhost:{}", http.port())
    } else {
        http.to_string()
    };
    println!("strata local is running:");
    for line in started {
        println!("  - {line}");
    }
    println!(
        "  - querier (replica labels {}) at http://{host}",
        replica_labels.join(", ")
    );
    println!("Open http://{host}/graph in a browser (the query UI).");
    println!(
        "Point Grafana at http://{host} as a Prometheus data source, or try:\n  curl 'http://{host}/api/v1/query?query=up'"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_targets_parse() {
        assert_eq!(
            prometheus_target("http://localhost:9090"),
            Ok(PrometheusTarget {
                url: "http://localhost:9090".into(),
                tsdb_path: None
            })
        );
        assert_eq!(
            prometheus_target("http://p:9090,/var/prom").map(|t| t.tsdb_path),
            Ok(Some(PathBuf::from("/var/prom")))
        );
        assert!(prometheus_target("localhost:9090").is_err());
        assert!(prometheus_target("http://p:9090,").is_err());
    }

    #[test]
    fn bucket_path_is_quoted_for_yaml() {
        assert_eq!(yaml_string(r#"a"b\c: d"#), r#""a\"b\\c: d""#);
    }
}
