//! `strata query`: the querier. Flags (named as in `thanos query`) here; the HTTP API is in
//! `strata_query::api`, the store fan-out in `strata_query::fanout`. The API is served on
//! `--http-address` next to `/metrics`, `/-/healthy` and `/-/ready`, as Thanos does, with the
//! web UI (`/graph`, `/stores`; `strata_query::ui`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use prometheus_client::registry::Registry;
use strata_promql::Engine;
use strata_query::StoreSource;
use strata_query::api::{ApiMetrics, ApiSettings, BuildInfo, parse_prometheus_duration};
use strata_query::endpoints::{EndpointSet, EndpointSetConfig};
use strata_query::fanout::{FanoutConfig, FanoutSource};
use strata_runtime::{AdminServer, Readiness, ServerArgs, Shutdown, admin_router, init_logging};
use strata_storeapi::ClientOptions;
use strata_storeapi::tls::ClientTlsFiles;

use crate::exit::ConfigError;

/// A Prometheus duration flag value (`2m`, `1h30m`, `0ms`).
fn duration(s: &str) -> Result<Duration, String> {
    let ms = parse_prometheus_duration(s)?;
    Ok(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// `strata query` flags (names as in `thanos query`).
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// StoreAPI endpoint to query: `host:port`, `dns+host:port` or `dnssrv+_grpc._tcp.name`.
    /// Repeatable.
    #[arg(
        long = "endpoint",
        env = "STRATA_ENDPOINT",
        value_delimiter = ',',
        value_name = "ADDRESS"
    )]
    endpoints: Vec<String>,

    /// File SD file (YAML or JSON target groups) listing endpoints, re-read when it changes.
    /// Repeatable.
    #[arg(
        long = "endpoint.sd-files",
        env = "STRATA_ENDPOINT_SD_FILES",
        value_delimiter = ',',
        value_name = "PATH"
    )]
    endpoint_sd_files: Vec<PathBuf>,

    /// External label that tells HA replicas apart; series differing only in it are merged.
    /// Repeatable.
    #[arg(
        long = "query.replica-label",
        env = "STRATA_QUERY_REPLICA_LABEL",
        value_delimiter = ',',
        value_name = "LABEL"
    )]
    replica_labels: Vec<String>,

    /// Answer with a warning when some stores fail (the default; `partial_response` overrides
    /// it per request).
    #[arg(
        long = "query.partial-response",
        env = "STRATA_QUERY_PARTIAL_RESPONSE",
        overrides_with = "no_partial_response"
    )]
    partial_response: bool,

    /// Fail a query when any store fails, unless the request asks for `partial_response`.
    #[arg(
        long = "no-query.partial-response",
        env = "STRATA_NO_QUERY_PARTIAL_RESPONSE",
        overrides_with = "partial_response"
    )]
    no_partial_response: bool,

    /// Pick the downsampling resolution from the query step unless the request gives
    /// `max_source_resolution`.
    #[arg(
        long = "query.auto-downsampling",
        env = "STRATA_QUERY_AUTO_DOWNSAMPLING"
    )]
    auto_downsampling: bool,

    /// Longest a query may run, queue wait included; the `timeout` parameter may only lower it.
    #[arg(long = "query.timeout", env = "STRATA_QUERY_TIMEOUT", value_name = "DURATION", value_parser = duration, default_value = "2m")]
    query_timeout: Duration,

    /// Queries evaluated at once; further queries wait for a slot.
    #[arg(
        long = "query.max-concurrent",
        env = "STRATA_QUERY_MAX_CONCURRENT",
        default_value_t = 20,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    max_concurrent: u32,

    /// How far back an instant selector looks for a sample.
    #[arg(long = "query.lookback-delta", env = "STRATA_QUERY_LOOKBACK_DELTA", value_name = "DURATION", value_parser = duration, default_value = "5m")]
    lookback_delta: Duration,

    /// Step of subqueries that give none (`x[1h:]`).
    #[arg(long = "query.default-evaluation-interval", env = "STRATA_QUERY_DEFAULT_EVALUATION_INTERVAL", value_name = "DURATION", value_parser = duration, default_value = "1m")]
    default_evaluation_interval: Duration,

    /// Longest one store may take to answer a request; 0 waits as long as the query may.
    #[arg(long = "store.response-timeout", env = "STRATA_STORE_RESPONSE_TIMEOUT", value_name = "DURATION", value_parser = duration, default_value = "0ms")]
    store_response_timeout: Duration,

    /// Use TLS towards the endpoints.
    #[arg(long = "grpc-client-tls-secure", env = "STRATA_GRPC_CLIENT_TLS_SECURE")]
    grpc_client_tls_secure: bool,

    /// Do not verify the endpoints' certificates.
    #[arg(
        long = "grpc-client-tls-skip-verify",
        env = "STRATA_GRPC_CLIENT_TLS_SKIP_VERIFY",
        requires = "grpc_client_tls_secure"
    )]
    grpc_client_tls_skip_verify: bool,

    /// Client certificate (PEM) presented to the endpoints.
    #[arg(
        long = "grpc-client-tls-cert",
        env = "STRATA_GRPC_CLIENT_TLS_CERT",
        requires_all = ["grpc_client_tls_key", "grpc_client_tls_secure"]
    )]
    grpc_client_tls_cert: Option<PathBuf>,

    /// Private key (PEM) of the client certificate.
    #[arg(
        long = "grpc-client-tls-key",
        env = "STRATA_GRPC_CLIENT_TLS_KEY",
        requires = "grpc_client_tls_cert"
    )]
    grpc_client_tls_key: Option<PathBuf>,

    /// CA (PEM) the endpoints' certificates must be signed by (default: system roots).
    #[arg(
        long = "grpc-client-tls-ca",
        env = "STRATA_GRPC_CLIENT_TLS_CA",
        requires = "grpc_client_tls_secure"
    )]
    grpc_client_tls_ca: Option<PathBuf>,

    /// Server name expected in the endpoints' certificates (default: the host dialled).
    #[arg(
        long = "grpc-client-server-name",
        env = "STRATA_GRPC_CLIENT_SERVER_NAME",
        requires = "grpc_client_tls_secure"
    )]
    grpc_client_server_name: Option<String>,

    #[command(flatten)]
    server: ServerArgs,
}

/// TLS towards the endpoints, from the `--grpc-client-tls-*` flags.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientTls {
    /// Skip certificate verification.
    pub skip_verify: bool,
    /// Client certificate and key.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// CA bundle.
    pub ca: Option<PathBuf>,
    /// Expected server name.
    pub server_name: Option<String>,
}

/// What the store side needs from the flags.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointFlags {
    /// `--endpoint` values.
    pub endpoints: Vec<String>,
    /// `--endpoint.sd-files` values.
    pub sd_files: Vec<PathBuf>,
    /// `--query.replica-label` values.
    pub replica_labels: Vec<String>,
    /// `--store.response-timeout` (zero: none).
    pub store_response_timeout: Duration,
    /// `--grpc-client-tls-*`, when `--grpc-client-tls-secure`.
    pub tls: Option<ClientTls>,
}

impl QueryArgs {
    fn endpoint_flags(&self) -> EndpointFlags {
        EndpointFlags {
            endpoints: self.endpoints.clone(),
            sd_files: self.endpoint_sd_files.clone(),
            replica_labels: self.replica_labels.clone(),
            store_response_timeout: self.store_response_timeout,
            tls: self.grpc_client_tls_secure.then(|| ClientTls {
                skip_verify: self.grpc_client_tls_skip_verify,
                cert_and_key: self
                    .grpc_client_tls_cert
                    .clone()
                    .zip(self.grpc_client_tls_key.clone()),
                ca: self.grpc_client_tls_ca.clone(),
                server_name: self.grpc_client_server_name.clone(),
            }),
        }
    }

    fn api_settings(&self) -> ApiSettings {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        ApiSettings {
            engine: Engine {
                lookback_ms: ms(self.lookback_delta),
                default_subquery_step_ms: ms(self.default_evaluation_interval),
                ..Engine::default()
            },
            query_timeout: self.query_timeout,
            max_concurrent: self.max_concurrent as usize,
            partial_response: !self.no_partial_response,
            auto_downsampling: self.auto_downsampling,
            build_info: build_info(),
            metrics: None,
            ..ApiSettings::default()
        }
    }
}

/// What `/api/v1/status/buildinfo` reports: this binary's version, commit and compiler.
pub(crate) fn build_info() -> BuildInfo {
    BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        revision: env!("STRATA_GIT_COMMIT").to_string(),
        branch: String::new(),
        build_user: String::new(),
        build_date: String::new(),
        go_version: env!("STRATA_RUSTC_VERSION").to_string(),
    }
}

/// The store side: every endpoint from the flags, fanned out, health-checked, de-duplicated.
pub(crate) async fn store_source(flags: EndpointFlags) -> anyhow::Result<Arc<dyn StoreSource>> {
    let mut client = ClientOptions::default();
    if let Some(tls) = flags.tls {
        if tls.skip_verify {
            anyhow::bail!("--grpc-client-tls-skip-verify is not supported by the store client");
        }
        let (cert, key) = tls.cert_and_key.unzip();
        client.tls = Some(ClientTlsFiles {
            ca: tls.ca,
            cert,
            key,
            server_name: tls.server_name,
        });
    }
    let endpoints = EndpointSet::new(EndpointSetConfig {
        endpoints: flags.endpoints,
        sd_files: flags.sd_files,
        client,
        ..EndpointSetConfig::default()
    })
    .context("--endpoint")?;
    endpoints.start().await;
    Ok(Arc::new(FanoutSource::new(
        endpoints,
        FanoutConfig {
            replica_labels: flags.replica_labels,
            store_response_timeout: flags.store_response_timeout,
        },
    )))
}

/// Runs the querier until SIGTERM/SIGINT.
pub fn run(args: QueryArgs) -> anyhow::Result<()> {
    init_logging(args.server.log_level, args.server.log_format).context("set up logging")?;
    let runtime = tokio::runtime::Runtime::new().context("start async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: QueryArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals().context("install signal handlers")?;
    let readiness = Readiness::new();
    let mut registry = Registry::default();
    let server = AdminServer::bind(args.server.http_address)
        .await
        .context(ConfigError(format!(
            "--http-address {}",
            args.server.http_address
        )))?;
    let source = store_source(args.endpoint_flags())
        .await
        .map_err(|e| e.context(ConfigError("store endpoints".into())))?;
    let settings = ApiSettings {
        metrics: Some(ApiMetrics::register(&mut registry)),
        ..args.api_settings()
    };
    let api = strata_query::api::router(source, settings);
    let ui = strata_query::ui::router(strata_query::ui::UiOptions::default());
    let router = admin_router(Arc::new(registry), readiness.clone())
        .merge(api)
        .merge(ui);
    tracing::info!(address = %server.local_addr(), "serving the query API");
    let serving = tokio::spawn(server.serve(router, shutdown.clone()));
    readiness.set(true);
    let served =
        strata_runtime::run_until_shutdown(serving, &shutdown, args.server.shutdown_timeout).await;
    readiness.set(false);
    served.context("shutdown")?.context("HTTP server task")??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        args: QueryArgs,
    }

    fn parse(args: &[&str]) -> Result<QueryArgs, clap::Error> {
        let mut full = vec!["strata-query"];
        full.extend_from_slice(args);
        Wrap::try_parse_from(full).map(|w| w.args)
    }

    #[test]
    fn defaults_match_thanos() {
        let a = parse(&[]).expect("parses");
        let s = a.api_settings();
        assert_eq!(s.query_timeout, Duration::from_secs(120));
        assert_eq!(s.max_concurrent, 20);
        assert!(s.partial_response);
        assert!(!s.auto_downsampling);
        assert_eq!(s.engine.lookback_ms, 300_000);
        assert_eq!(s.engine.default_subquery_step_ms, 60_000);
        let f = a.endpoint_flags();
        assert_eq!(f.store_response_timeout, Duration::ZERO);
        assert_eq!(f.tls, None);
    }

    #[test]
    fn flags_map_to_settings() {
        let a = parse(&[
            "--endpoint=a:10901",
            "--endpoint",
            "dns+b:10901",
            "--endpoint.sd-files=/etc/sd.yaml",
            "--query.replica-label=replica",
            "--query.replica-label=prometheus_replica",
            "--no-query.partial-response",
            "--query.auto-downsampling",
            "--query.timeout=30s",
            "--query.max-concurrent=4",
            "--query.lookback-delta=1m30s",
            "--query.default-evaluation-interval=15s",
            "--store.response-timeout=5s",
            "--grpc-client-tls-secure",
            "--grpc-client-tls-cert=/c.pem",
            "--grpc-client-tls-key=/k.pem",
            "--grpc-client-tls-ca=/ca.pem",
        ])
        .expect("parses");
        let s = a.api_settings();
        assert_eq!(s.query_timeout, Duration::from_secs(30));
        assert_eq!(s.max_concurrent, 4);
        assert!(!s.partial_response);
        assert!(s.auto_downsampling);
        assert_eq!(s.engine.lookback_ms, 90_000);
        assert_eq!(s.engine.default_subquery_step_ms, 15_000);
        let f = a.endpoint_flags();
        assert_eq!(f.endpoints, vec!["a:10901", "dns+b:10901"]);
        assert_eq!(f.sd_files, vec![PathBuf::from("/etc/sd.yaml")]);
        assert_eq!(f.replica_labels, vec!["replica", "prometheus_replica"]);
        assert_eq!(f.store_response_timeout, Duration::from_secs(5));
        let tls = f.tls.expect("tls");
        assert_eq!(
            tls.cert_and_key,
            Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
        );
        assert_eq!(tls.ca, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn the_last_partial_response_flag_wins() {
        let a = parse(&["--no-query.partial-response", "--query.partial-response"]).expect("ok");
        assert!(a.api_settings().partial_response);
        let a = parse(&["--query.partial-response", "--no-query.partial-response"]).expect("ok");
        assert!(!a.api_settings().partial_response);
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            &["--query.timeout=soon"][..],
            &["--query.max-concurrent=0"],
            &["--query.lookback-delta=5"],
            &["--grpc-client-tls-cert=/c.pem"],
            &["--grpc-client-tls-secure", "--grpc-client-tls-cert=/c.pem"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
