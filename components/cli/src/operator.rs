//! `strata operator`: the Kubernetes operator. Flags here; the controllers are in `strata-operator`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use strata_operator::leader::{LeaderElection, LeaderError, default_identity};
use strata_operator::server::{OperatorConfig, RunError};
use strata_operator::webhook::tls::{FileTls, OperatorTls, service_sans};
use strata_operator::webhook::{TlsMode, WebhookConfig};
use strata_runtime::{ServerArgs, Shutdown, init_logging};

use crate::exit::ConfigError;

/// `strata operator` flags.
#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// Kubeconfig file; unset: `$KUBECONFIG`, `~/.kube/config`, or the in-cluster service account.
    #[arg(long = "kubeconfig", env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,

    /// Watch only this namespace (default: all namespaces).
    #[arg(long = "namespace", env = "STRATA_OPERATOR_NAMESPACE")]
    namespace: Option<String>,

    #[command(flatten)]
    leader: LeaderArgs,

    #[command(flatten)]
    webhook: WebhookArgs,

    #[command(flatten)]
    server: ServerArgs,
}

/// Leader-election flags: with several replicas, only the holder of a `Lease` runs the controllers.
#[derive(Debug, Args)]
pub struct LeaderArgs {
    /// Run the controllers only while holding the lease (on for more than one replica).
    #[arg(
        long = "leader-election",
        env = "STRATA_LEADER_ELECTION",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    enabled: bool,

    /// Name of the coordination.k8s.io Lease.
    #[arg(
        long = "leader-election.lease-name",
        env = "STRATA_LEADER_ELECTION_LEASE_NAME",
        default_value = "strata-operator"
    )]
    lease_name: String,

    /// Namespace of the Lease (default: the operator's own, from the service account or kubeconfig).
    #[arg(long = "leader-election.namespace", env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,

    /// This replica's identity in the Lease (default: $POD_NAME or $HOSTNAME, and the process id).
    #[arg(
        long = "leader-election.identity",
        env = "STRATA_LEADER_ELECTION_IDENTITY"
    )]
    identity: Option<String>,

    /// How long the lease is valid after its last renewal (whole seconds).
    #[arg(long = "leader-election.lease-duration", env = "STRATA_LEADER_ELECTION_LEASE_DURATION",
        value_parser = humantime::parse_duration, default_value = "15s")]
    lease_duration: Duration,

    /// How long before expiry the holder renews it (whole seconds; below the lease duration).
    #[arg(long = "leader-election.renew-before", env = "STRATA_LEADER_ELECTION_RENEW_BEFORE",
        value_parser = humantime::parse_duration, default_value = "5s")]
    renew_before: Duration,
}

impl LeaderArgs {
    fn election(self) -> Option<LeaderElection> {
        self.enabled.then(|| LeaderElection {
            lease_name: self.lease_name,
            namespace: self.lease_namespace,
            identity: self.identity.unwrap_or_else(default_identity),
            lease_duration: self.lease_duration,
            renew_before: self.renew_before,
        })
    }
}

/// Who keeps the webhook's serving certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WebhookTlsMode {
    /// The operator makes a CA and certificate, stores them in a Secret, renews them and fills the
    /// MutatingWebhookConfiguration's caBundle.
    Operator,
    /// Certificate and key files kept by someone else (cert-manager), re-read when they change.
    Files,
}

/// `strata operator --webhook.*` flags: the sidecar-injection webhook.
#[derive(Debug, Args)]
struct WebhookArgs {
    /// Serve the sidecar-injection webhook.
    #[arg(long = "webhook.enabled", env = "STRATA_WEBHOOK_ENABLED")]
    webhook_enabled: bool,

    /// HTTPS listen address of the webhook.
    #[arg(
        long = "webhook.address",
        env = "STRATA_WEBHOOK_ADDRESS",
        default_value = "0.0.0.0:9443"
    )]
    address: SocketAddr,

    /// Who keeps the serving certificate.
    #[arg(
        long = "webhook.tls-mode",
        env = "STRATA_WEBHOOK_TLS_MODE",
        value_enum,
        default_value = "operator"
    )]
    tls_mode: WebhookTlsMode,

    /// Namespace of the webhook's Service and certificate Secret (the operator's own).
    #[arg(
        long = "webhook.namespace",
        env = "POD_NAMESPACE",
        default_value = "strata-system"
    )]
    webhook_namespace: String,

    /// The webhook's Service; the certificate is made for `<service>.<namespace>.svc`.
    #[arg(
        long = "webhook.service",
        env = "STRATA_WEBHOOK_SERVICE",
        default_value = "strata-operator-webhook"
    )]
    service: String,

    /// The Secret holding ca.crt, tls.crt and tls.key (tls-mode operator).
    #[arg(
        long = "webhook.secret",
        env = "STRATA_WEBHOOK_SECRET",
        default_value = "strata-operator-webhook-tls"
    )]
    secret: String,

    /// The MutatingWebhookConfiguration whose caBundle the operator keeps current (tls-mode operator).
    #[arg(
        long = "webhook.configuration",
        env = "STRATA_WEBHOOK_CONFIGURATION",
        default_value = "strata-operator"
    )]
    configuration: String,

    /// More DNS names or IP addresses for the certificate (repeatable).
    #[arg(
        long = "webhook.extra-san",
        env = "STRATA_WEBHOOK_EXTRA_SANS",
        value_delimiter = ','
    )]
    extra_sans: Vec<String>,

    /// Validity of each operator-made certificate; renewed when a third is left.
    #[arg(long = "webhook.cert-validity", hide = true, value_parser = humantime::parse_duration, default_value = "8760h")]
    cert_validity: Duration,

    /// Serving certificate file (tls-mode files).
    #[arg(
        long = "webhook.cert-file",
        env = "STRATA_WEBHOOK_CERT_FILE",
        default_value = "/etc/strata/webhook-tls/tls.crt"
    )]
    cert_file: PathBuf,

    /// Private key file (tls-mode files).
    #[arg(
        long = "webhook.key-file",
        env = "STRATA_WEBHOOK_KEY_FILE",
        default_value = "/etc/strata/webhook-tls/tls.key"
    )]
    key_file: PathBuf,
}

impl WebhookArgs {
    fn config(&self, scope: Option<String>) -> Option<WebhookConfig> {
        if !self.webhook_enabled {
            return None;
        }
        let tls = match self.tls_mode {
            WebhookTlsMode::Operator => {
                let mut sans = service_sans(&self.service, &self.webhook_namespace);
                sans.extend(self.extra_sans.iter().cloned());
                TlsMode::Operator(OperatorTls {
                    namespace: self.webhook_namespace.clone(),
                    secret: self.secret.clone(),
                    sans,
                    validity: self.cert_validity,
                    webhook_configuration: self.configuration.clone(),
                })
            }
            WebhookTlsMode::Files => TlsMode::Files {
                files: FileTls {
                    cert: self.cert_file.clone(),
                    key: self.key_file.clone(),
                },
                every: Duration::from_secs(10),
            },
        };
        Some(WebhookConfig {
            address: self.address,
            tls,
            scope,
        })
    }
}

/// Runs the operator until SIGTERM/SIGINT.
pub fn run(args: OperatorArgs) -> anyhow::Result<()> {
    init_logging(args.server.log_level, args.server.log_format).context("set up logging")?;
    let runtime = tokio::runtime::Runtime::new().context("start async runtime")?;
    runtime.block_on(async move {
        let shutdown = Shutdown::on_signals().context("install signal handlers")?;
        let config = OperatorConfig {
            webhook: args.webhook.config(args.namespace.clone()),
            kubeconfig: args.kubeconfig,
            namespace: args.namespace,
            http_address: args.server.http_address,
            leader_election: args.leader.election(),
        };
        match strata_operator::server::run(config, shutdown).await {
            Ok(()) => Ok(()),
            Err(e @ RunError::Kubeconfig(_)) => {
                Err(anyhow::Error::new(e).context(ConfigError("--kubeconfig".into())))
            }
            Err(e @ RunError::Leader(LeaderError::Durations { .. })) => Err(anyhow::Error::new(e)
                .context(ConfigError("--leader-election.lease-duration".into()))),
            Err(e @ RunError::Webhook(_)) => {
                Err(anyhow::Error::new(e).context(ConfigError("--webhook.*".into())))
            }
            Err(e) => Err(e.into()),
        }
    })
}
