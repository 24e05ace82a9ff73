//! Strata's own servers as processes: `strata sidecar` in front of a Prometheus and `strata query`
//! over StoreAPI endpoints. The caller passes the `strata` binary (in Cargo tests of the `strata`
//! package: `env!("CARGO_BIN_EXE_strata")`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Process, Result, free_port};

/// How long a Strata server gets to answer `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `strata sidecar`; killed when dropped.
#[derive(Debug)]
pub struct StrataSidecar {
    process: Process,
    grpc_address: String,
    http_url: String,
}

impl StrataSidecar {
    /// Starts `strata sidecar --prometheus.url=<url> --tsdb.path=<dir>` on free loopback ports and
    /// waits for its `/-/ready`.
    pub async fn start(binary: &Path, prometheus_url: &str, tsdb_path: &Path) -> Result<Self> {
        let (process, grpc_address, http_url) = start_grpc_server(
            binary,
            "sidecar",
            &[
                format!("--prometheus.url={prometheus_url}"),
                format!("--tsdb.path={}", tsdb_path.display()),
                "--prometheus.ready_timeout=30s".to_string(),
            ],
        )
        .await?;
        Ok(Self {
            process,
            grpc_address,
            http_url,
        })
    }

    /// The StoreAPI address, `127.0.0.1:PORT`.
    pub fn grpc_address(&self) -> &str {
        &self.grpc_address
    }

    /// The HTTP base URL (`/-/ready`, `/metrics`).
    pub fn url(&self) -> &str {
        &self.http_url
    }

    /// The process (logs, signals, kill).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// How to start a `strata query`.
#[derive(Debug)]
pub struct StrataQueryBuilder {
    binary: PathBuf,
    endpoints: Vec<String>,
    replica_labels: Vec<String>,
    args: Vec<String>,
}

impl StrataQueryBuilder {
    /// A StoreAPI endpoint (`host:port`).
    pub fn endpoint(mut self, address: &str) -> Self {
        self.endpoints.push(address.into());
        self
    }

    /// A `--query.replica-label`.
    pub fn replica_label(mut self, name: &str) -> Self {
        self.replica_labels.push(name.into());
        self
    }

    /// Any other flag, e.g. `--no-query.partial-response`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Starts the querier on a free loopback port and waits for `/-/ready`.
    pub async fn start(self) -> Result<StrataQuery> {
        let port = free_port();
        let mut cmd = Command::new(&self.binary);
        cmd.arg("query")
            .arg(format!("--http-address=127.0.0.1:{port}"))
            .arg("--log.level=info");
        for e in &self.endpoints {
            cmd.arg(format!("--endpoint={e}"));
        }
        for l in &self.replica_labels {
            cmd.arg(format!("--query.replica-label={l}"));
        }
        cmd.args(&self.args);
        let mut process = Process::spawn("strata-query", cmd)?;
        let url = format!("http://127.0.0.1:{port}");
        process
            .wait_http_ok(&format!("{url}/-/ready"), READY_TIMEOUT)
            .await?;
        Ok(StrataQuery { process, url })
    }
}

/// A running `strata query`; killed when dropped.
#[derive(Debug)]
pub struct StrataQuery {
    process: Process,
    url: String,
}

impl StrataQuery {
    /// Configures a querier run from `binary`.
    pub fn builder(binary: &Path) -> StrataQueryBuilder {
        StrataQueryBuilder {
            binary: binary.to_path_buf(),
            endpoints: Vec::new(),
            replica_labels: Vec::new(),
            args: Vec::new(),
        }
    }

    /// The HTTP base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process (logs, signals, kill).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// A running `strata store` (the store gateway); killed when dropped.
#[derive(Debug)]
pub struct StrataStore {
    process: Process,
    grpc_address: String,
    http_url: String,
}

impl StrataStore {
    /// Starts `strata store --objstore.config=<yaml> --data-dir=<dir> ARGS…` on free loopback ports
    /// and waits for its `/-/ready` (ready after the first block sync).
    pub async fn start(
        binary: &Path,
        objstore_yaml: &str,
        data_dir: &Path,
        args: &[&str],
    ) -> Result<Self> {
        let mut all = vec![
            format!("--objstore.config={objstore_yaml}"),
            format!("--data-dir={}", data_dir.display()),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let (process, grpc_address, http_url) = start_grpc_server(binary, "store", &all).await?;
        Ok(Self {
            process,
            grpc_address,
            http_url,
        })
    }

    /// The StoreAPI address, `127.0.0.1:PORT`.
    pub fn grpc_address(&self) -> &str {
        &self.grpc_address
    }

    /// The HTTP base URL (`/-/ready`, `/metrics`).
    pub fn url(&self) -> &str {
        &self.http_url
    }

    /// The process (logs, signals, kill).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// Starts `strata <subcommand> ARGS…` with gRPC and HTTP on free loopback ports and waits for its
/// `/-/ready`; returns the process, the gRPC address and the HTTP base URL.
async fn start_grpc_server(
    binary: &Path,
    subcommand: &str,
    args: &[String],
) -> Result<(Process, String, String)> {
    let grpc_address = format!("127.0.0.1:{}", free_port());
    let http_port = free_port();
    let mut cmd = Command::new(binary);
    cmd.arg(subcommand)
        .args(args)
        .arg(format!("--grpc-address={grpc_address}"))
        .arg(format!("--http-address=127.0.0.1:{http_port}"))
        .arg("--log.level=info");
    let mut process = Process::spawn(format!("strata-{subcommand}"), cmd)?;
    let http_url = format!("http://127.0.0.1:{http_port}");
    process
        .wait_http_ok(&format!("{http_url}/-/ready"), READY_TIMEOUT)
        .await?;
    Ok((process, grpc_address, http_url))
}

/// Any `strata` server started on fixed loopback ports, so that it can be killed and started again
/// in place (the querier's endpoint list and the scrape configs stay valid).
#[derive(Debug)]
pub struct StrataServer {
    binary: PathBuf,
    subcommand: String,
    args: Vec<String>,
    grpc_address: Option<String>,
    http_url: String,
    http_port: u16,
    process: Option<Process>,
    starts: u32,
}

impl StrataServer {
    /// Picks free ports (a gRPC one when `grpc`) without starting anything yet.
    pub fn new(binary: &Path, subcommand: &str, args: &[String], grpc: bool) -> Self {
        let http_port = free_port();
        Self {
            binary: binary.to_path_buf(),
            subcommand: subcommand.into(),
            args: args.to_vec(),
            grpc_address: grpc.then(|| format!("127.0.0.1:{}", free_port())),
            http_url: format!("http://127.0.0.1:{http_port}"),
            http_port,
            process: None,
            starts: 0,
        }
    }

    /// Starts (or starts again) the server and waits for its `/-/ready`.
    pub async fn start(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg(&self.subcommand).args(&self.args);
        if let Some(grpc) = &self.grpc_address {
            cmd.arg(format!("--grpc-address={grpc}"));
        }
        cmd.arg(format!("--http-address=127.0.0.1:{}", self.http_port))
            .arg("--log.level=info");
        self.starts += 1;
        let name = format!("strata-{}-{}", self.subcommand, self.starts);
        let mut process = Process::spawn(name, cmd)?;
        let ready = process
            .wait_http_ok(&format!("{}/-/ready", self.http_url), READY_TIMEOUT)
            .await;
        self.process = Some(process);
        ready
    }

    /// Kills the server with SIGKILL (no shutdown path runs) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(p) = self.process.as_mut() {
            p.kill();
        }
    }

    /// The StoreAPI address, `127.0.0.1:PORT`, when started with gRPC.
    pub fn grpc_address(&self) -> Option<&str> {
        self.grpc_address.as_deref()
    }

    /// The HTTP base URL (`/-/ready`, `/metrics`, the query API).
    pub fn url(&self) -> &str {
        &self.http_url
    }

    /// `127.0.0.1:PORT` of the HTTP server, for a scrape config.
    pub fn http_address(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// The current process, if started.
    pub fn process(&mut self) -> Option<&mut Process> {
        self.process.as_mut()
    }
}
