//! `strata operator`: the Kubernetes operator. Flags here; the controllers are in `strata-operator`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use strata_operator::leader::{LeaderElection, LeaderError, default_identity};
use strata_operator::server::{OperatorConfig, RunError};
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

/// Runs the operator until SIGTERM/SIGINT.
pub fn run(args: OperatorArgs) -> anyhow::Result<()> {
    init_logging(args.server.log_level, args.server.log_format).context("set up logging")?;
    let runtime = tokio::runtime::Runtime::new().context("start async runtime")?;
    runtime.block_on(async move {
        let shutdown = Shutdown::on_signals().context("install signal handlers")?;
        let config = OperatorConfig {
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
            Err(e) => Err(e.into()),
        }
    })
}
