//! `strata operator`: the Kubernetes operator. Flags here; the controllers are in `strata-operator`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
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
    server: ServerArgs,
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
        };
        match strata_operator::server::run(config, shutdown).await {
            Ok(()) => Ok(()),
            Err(e @ RunError::Kubeconfig(_)) => {
                Err(anyhow::Error::new(e).context(ConfigError("--kubeconfig".into())))
            }
            Err(e) => Err(e.into()),
        }
    })
}
