//! `strata`: one binary, one subcommand per component. Parses flags, hands them to the component crates,
//! and turns the outcome into an exit code: 0 ok, 1 runtime failure, 2 bad flags or configuration.

mod compact;
mod exit;
mod grpc;
mod local;
mod operator;
mod query;
mod rule;
mod selector;
mod sidecar;
mod store;
mod tools;
mod tools_bucket;
mod version;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: the query and store paths allocate many small,
/// short-lived buffers (decoded samples, protobuf messages), where glibc's malloc showed up as a
/// third of the querier's profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Strata: a Prometheus metrics federation.
#[derive(Debug, Parser)]
#[command(name = "strata", version = version::SHORT, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the version, the git commit and the compiler it was built with.
    Version,
    /// Serve a Prometheus's data over the StoreAPI (gRPC), next to it.
    Sidecar(Box<sidecar::SidecarArgs>),
    /// Serve the blocks in object storage over the StoreAPI (the store gateway).
    Store(Box<store::StoreArgs>),
    /// Answer PromQL over every store: the Prometheus HTTP API, fanned out and de-duplicated.
    Query(Box<query::QueryArgs>),
    /// The whole federation in one process (store gateway, compactor, sidecars, querier) for a laptop or one VM.
    Local(Box<local::LocalArgs>),
    /// Evaluate recording and alerting rules against the querier; keep results in local blocks, send alerts.
    Rule(Box<rule::RuleArgs>),
    /// Compact, de-duplicate, downsample and apply retention to the blocks in a bucket.
    Compact(Box<compact::CompactArgs>),
    /// Run the Kubernetes operator (MetricsCluster, StoreGateway, Compactor).
    Operator(Box<operator::OperatorArgs>),
    /// Offline tools (TSDB blocks, …).
    Tools(tools::ToolsArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return exit::clap_error(e),
    };
    let result = match cli.command {
        Command::Version => version::print(),
        Command::Sidecar(args) => sidecar::run(*args),
        Command::Query(args) => query::run(*args),
        Command::Store(args) => store::run(*args),
        Command::Local(args) => local::run(*args),
        Command::Rule(args) => rule::run(*args),
        Command::Compact(args) => compact::run(*args),
        Command::Operator(args) => operator::run(*args),
        Command::Tools(args) => tools::run(args),
    };
    exit::from_result(result)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
