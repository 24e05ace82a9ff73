//! `strata rule`: evaluates Prometheus-format rule files against the querier. Flags here (named
//! as in `thanos rule`); the work is in `strata-rule`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use prometheus_client::registry::Registry;
use strata_objstore::{Bucket, ObjstoreArgs};
use strata_promql::Labels;
use strata_rule::RuleConfig;
use strata_rule::remote_write::{EndpointConfig, RemoteWriteFile};
use strata_runtime::{ServerArgs, Shutdown, init_logging};

use crate::exit::ConfigError;

/// `strata rule` flags.
#[derive(Debug, Args)]
pub struct RuleArgs {
    /// Rule file (Prometheus format) or glob; repeatable.
    #[arg(
        long = "rule-file",
        env = "STRATA_RULE_FILE",
        value_delimiter = ',',
        required = true
    )]
    rule_files: Vec<String>,

    /// Base URL of a Prometheus-compatible query API (`strata query`); repeatable, tried in order.
    #[arg(
        long = "query",
        env = "STRATA_QUERY",
        value_delimiter = ',',
        required_unless_present = "query_sd_files"
    )]
    query: Vec<String>,

    /// Timeout of one rule query.
    #[arg(long = "query.timeout", env = "STRATA_QUERY_TIMEOUT", value_parser = humantime::parse_duration, default_value = "2m")]
    query_timeout: Duration,

    /// Evaluation interval of groups that set none.
    #[arg(long = "eval-interval", env = "STRATA_EVAL_INTERVAL", value_parser = humantime::parse_duration, default_value = "1m")]
    eval_interval: Duration,

    /// Directory of the ruler's TSDB (WAL and blocks).
    #[arg(long = "data-dir", env = "STRATA_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,

    /// External label `name="value"` of the ruler's data; repeatable.
    #[arg(long = "label", env = "STRATA_LABEL", value_parser = parse_label)]
    labels: Vec<(String, String)>,

    /// URL this ruler is reached at, used in alerts' generator URLs.
    #[arg(
        long = "alert.query-url",
        env = "STRATA_ALERT_QUERY_URL",
        default_value = ""
    )]
    alert_query_url: String,

    /// Alertmanager base URL (API v2); repeatable. A `dns+` prefix (`dns+host:port`) resolves
    /// the host's A/AAAA records, `dnssrv+` (`dnssrv+_web._tcp.name`) its SRV records.
    #[arg(
        long = "alertmanagers.url",
        env = "STRATA_ALERTMANAGERS_URL",
        value_delimiter = ','
    )]
    alertmanagers: Vec<String>,

    /// Timeout of one send to an Alertmanager.
    #[arg(long = "alertmanagers.send-timeout", env = "STRATA_ALERTMANAGERS_SEND_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    alertmanagers_timeout: Duration,

    /// Label dropped from alerts before sending (e.g. the replica label of HA rulers); repeatable.
    #[arg(
        long = "alert.label-drop",
        env = "STRATA_ALERT_LABEL_DROP",
        value_delimiter = ','
    )]
    alert_label_drop: Vec<String>,

    /// How often a firing alert is sent again.
    #[arg(long = "resend-delay", env = "STRATA_RESEND_DELAY", value_parser = humantime::parse_duration, default_value = "1m")]
    resend_delay: Duration,

    /// How long after a ruler outage alert state is still restored.
    #[arg(long = "for-outage-tolerance", env = "STRATA_FOR_OUTAGE_TOLERANCE", value_parser = humantime::parse_duration, default_value = "1h")]
    for_outage_tolerance: Duration,

    /// Least time a restored alert waits before firing, for alerts with a longer `for`.
    #[arg(long = "for-grace-period", env = "STRATA_FOR_GRACE_PERIOD", value_parser = humantime::parse_duration, default_value = "10m")]
    for_grace_period: Duration,

    /// Length of the local TSDB blocks.
    #[arg(long = "tsdb.block-duration", env = "STRATA_TSDB_BLOCK_DURATION", value_parser = humantime::parse_duration, default_value = "2h")]
    block_duration: Duration,

    /// How long local blocks are kept.
    #[arg(long = "tsdb.retention", env = "STRATA_TSDB_RETENTION", value_parser = humantime::parse_duration, default_value = "48h")]
    retention: Duration,

    /// File SD file (Prometheus `file_sd` YAML/JSON) or glob of query endpoints `host:port`,
    /// used besides `--query`; re-read on change. Repeatable.
    #[arg(
        long = "query.sd-files",
        env = "STRATA_QUERY_SD_FILES",
        value_delimiter = ','
    )]
    query_sd_files: Vec<String>,

    /// How often `--query.sd-files` are re-read at the latest (changes are seen within a second).
    #[arg(long = "query.sd-interval", env = "STRATA_QUERY_SD_INTERVAL", value_parser = humantime::parse_duration, default_value = "5m")]
    query_sd_interval: Duration,

    /// How often `dns+`/`dnssrv+` `--alertmanagers.url` values are resolved again.
    #[arg(long = "alertmanagers.sd-dns-interval", env = "STRATA_ALERTMANAGERS_SD_DNS_INTERVAL", value_parser = humantime::parse_duration, default_value = "30s")]
    alertmanagers_dns_interval: Duration,

    /// Remote-write receiver URL (e.g. `http://prometheus:9090/api/v1/write`); repeatable. Any
    /// remote-write endpoint makes the ruler stateless: no local TSDB, StoreAPI or shipping.
    #[arg(
        long = "remote-write.url",
        env = "STRATA_REMOTE_WRITE_URL",
        value_delimiter = ','
    )]
    remote_write_urls: Vec<String>,

    /// File with Prometheus `remote_write:` configuration (subset: url, name, remote_timeout,
    /// headers, basic_auth, queue_config); stateless mode.
    #[arg(
        long = "remote-write.config-file",
        env = "STRATA_REMOTE_WRITE_CONFIG_FILE",
        conflicts_with = "remote_write_config"
    )]
    remote_write_config_file: Option<PathBuf>,

    /// The `--remote-write.config-file` content given inline.
    #[arg(long = "remote-write.config", env = "STRATA_REMOTE_WRITE_CONFIG")]
    remote_write_config: Option<String>,

    #[command(flatten)]
    grpc: crate::grpc::GrpcServerArgs,

    /// Bucket the ruler's blocks are shipped to (Thanos objstore YAML); without one they stay local.
    #[command(flatten)]
    objstore: ObjstoreArgs,

    #[command(flatten)]
    server: ServerArgs,
}

/// Parses `name="value"` (quotes optional).
fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label {s:?} is not name=\"value\""))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("label {s:?} has an empty name"));
    }
    let v = v.trim();
    let v = if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        serde_json::from_str::<String>(v).map_err(|e| format!("label {s:?}: {e}"))?
    } else {
        v.to_string()
    };
    Ok((k.to_string(), v))
}

impl RuleArgs {
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

    /// The remote-write endpoints of `--remote-write.url` and `--remote-write.config(-file)`.
    fn remote_write(&self) -> anyhow::Result<Vec<EndpointConfig>> {
        let yaml = match (&self.remote_write_config_file, &self.remote_write_config) {
            (Some(path), _) => Some(std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("read {}: {e}", path.display())
                    .context(ConfigError("remote write".into()))
            })?),
            (None, inline) => inline.clone(),
        };
        let mut out: Vec<EndpointConfig> = self
            .remote_write_urls
            .iter()
            .map(EndpointConfig::new)
            .collect();
        if let Some(yaml) = yaml {
            let file = RemoteWriteFile::parse(&yaml)
                .map_err(|e| anyhow::Error::new(e).context(ConfigError("remote write".into())))?;
            out.extend(file.remote_write);
        }
        Ok(out)
    }

    fn config(&self, bucket: Option<Bucket>, remote_write: Vec<EndpointConfig>) -> RuleConfig {
        RuleConfig {
            rule_files: self.rule_files.clone(),
            query_urls: self.query.clone(),
            query_timeout: self.query_timeout,
            eval_interval: self.eval_interval,
            data_dir: self.data_dir.clone(),
            external_labels: Labels::new(self.labels.iter().cloned()),
            external_url: if self.alert_query_url.is_empty() {
                format!("http://{}", self.server.http_address)
            } else {
                self.alert_query_url.clone()
            },
            alertmanager_urls: self.alertmanagers.clone(),
            alertmanager_timeout: self.alertmanagers_timeout,
            alert_label_drop: self.alert_label_drop.clone(),
            resend_delay: self.resend_delay,
            for_outage_tolerance: self.for_outage_tolerance,
            for_grace_period: self.for_grace_period,
            block_duration: self.block_duration,
            retention: self.retention,
            bucket,
            grpc_address: self.grpc.grpc_address,
            grpc_options: strata_storeapi::ServerOptions {
                tls: self.grpc.tls(),
                ..Default::default()
            },
            http_address: self.server.http_address,
            query_sd_files: self.query_sd_files.clone(),
            query_sd_interval: self.query_sd_interval,
            alertmanager_dns_interval: self.alertmanagers_dns_interval,
            remote_write,
        }
    }
}

/// Runs the ruler until SIGTERM/SIGINT.
pub fn run(args: RuleArgs) -> anyhow::Result<()> {
    init_logging(args.server.log_level, args.server.log_format).context("set up logging")?;
    let runtime = tokio::runtime::Runtime::new().context("start async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: RuleArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals().context("install signal handlers")?;
    // Bucket metrics are not exported yet: `run` owns the registry it serves.
    let mut bucket_registry = Registry::default();
    let config = args.config(args.bucket(&mut bucket_registry)?, args.remote_write()?);
    match strata_rule::run(config, shutdown).await {
        Ok(()) => Ok(()),
        Err(e @ (strata_rule::Error::RuleFile { .. } | strata_rule::Error::Config(_))) => {
            Err(anyhow::Error::new(e).context(ConfigError("rule configuration".into())))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        args: RuleArgs,
    }

    fn parse(extra: &[&str]) -> Result<RuleArgs, clap::Error> {
        let mut full = vec!["strata-rule", "--rule-file=r.yml", "--query=http://q"];
        full.extend_from_slice(extra);
        Wrap::try_parse_from(full).map(|w| w.args)
    }

    #[test]
    fn remote_write_flags_merge_urls_and_config() {
        let a = parse(&[
            "--remote-write.url=http://a/api/v1/write",
            "--remote-write.config=remote_write:\n- url: http://b/api/v1/write\n  queue_config: {max_samples_per_send: 7}\n",
        ])
        .expect("parses");
        let rw = a.remote_write().expect("remote write config");
        assert_eq!(rw.len(), 2);
        assert_eq!(rw[0].url, "http://a/api/v1/write");
        assert_eq!(rw[1].queue_config.max_samples_per_send, 7);
        assert!(
            parse(&[])
                .expect("parses")
                .remote_write()
                .expect("none")
                .is_empty()
        );
        let bad = parse(&["--remote-write.config=remote_write:\n- url: http://b\n  nope: 1\n"])
            .expect("parses");
        assert!(bad.remote_write().is_err(), "unknown fields are rejected");
        assert!(
            parse(&["--remote-write.config=x", "--remote-write.config-file=f"]).is_err(),
            "inline and file forms conflict"
        );
    }

    #[test]
    fn labels_parse_quoted_and_bare() {
        assert_eq!(parse_label("a=\"b c\""), Ok(("a".into(), "b c".into())));
        assert_eq!(
            parse_label("replica=r1"),
            Ok(("replica".into(), "r1".into()))
        );
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=x").is_err());
    }

    #[test]
    fn query_or_sd_files_is_required() {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            rule: RuleArgs,
        }
        use clap::Parser;
        assert!(Cli::try_parse_from(["t", "--rule-file=r.yml"]).is_err());
        let sd = Cli::try_parse_from(["t", "--rule-file=r.yml", "--query.sd-files=sd/*.yml"])
            .expect("SD files alone are enough");
        assert_eq!(sd.rule.query_sd_files, ["sd/*.yml"]);
        assert_eq!(sd.rule.query_sd_interval, Duration::from_secs(300));
        assert_eq!(sd.rule.alertmanagers_dns_interval, Duration::from_secs(30));
        assert!(Cli::try_parse_from(["t", "--rule-file=r.yml", "--query=http://q:1"]).is_ok());
    }
}
