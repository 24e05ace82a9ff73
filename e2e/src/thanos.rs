//! A real Thanos: `thanos query` (the querier, a StoreAPI client) and `thanos sidecar` (a StoreAPI
//! server in front of a Prometheus), on free loopback ports.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::tools::{Tool, run_tool, tool_path};
use crate::{Error, Process, Result, free_port, wait_until};

/// How long a Thanos component gets to answer `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// `GET <base>/api/v1/<path>` with query parameters; the `data` field of a success response.
async fn api_get(base: &str, path: &str, params: &[(&str, &str)]) -> Result<serde_json::Value> {
    let url = format!("{base}/api/v1/{path}");
    let step = format!("GET {url}");
    let resp = reqwest::Client::new()
        .get(&url)
        .query(params)
        .send()
        .await
        .map_err(|e| Error::Request {
            step: step.clone(),
            message: e.to_string(),
        })?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.map_err(|e| Error::Request {
        step: step.clone(),
        message: format!("HTTP {status}: {e}"),
    })?;
    if body["status"] != "success" {
        return Err(Error::Request {
            step,
            message: format!("HTTP {status}: {body}"),
        });
    }
    Ok(body["data"].clone())
}

/// How to start a `thanos query`.
#[derive(Debug, Default)]
pub struct ThanosQueryBuilder {
    endpoints: Vec<(String, bool)>,
    replica_labels: Vec<String>,
    args: Vec<String>,
}

impl ThanosQueryBuilder {
    /// A StoreAPI endpoint (`host:port`, plain gRPC) to query.
    pub fn endpoint(mut self, address: &str) -> Self {
        self.endpoints.push((address.into(), false));
        self
    }

    /// A StoreAPI endpoint that is always queried, even while its health check fails.
    pub fn strict_endpoint(mut self, address: &str) -> Self {
        self.endpoints.push((address.into(), true));
        self
    }

    /// A label to deduplicate replicas along (`--query.replica-label`).
    pub fn replica_label(mut self, name: &str) -> Self {
        self.replica_labels.push(name.into());
        self
    }

    /// An extra command-line flag, e.g. `--query.promql-engine=thanos`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    /// The `--endpoint.sd-config` YAML listing the endpoints (the `--endpoint` flag is deprecated
    /// in Thanos 0.42).
    fn endpoint_config(&self) -> String {
        let mut yaml = String::from("endpoints:\n");
        for (address, strict) in &self.endpoints {
            // A JSON string is a valid YAML scalar, whatever the address contains.
            yaml.push_str(&format!(
                "  - address: {}\n    strict: {strict}\n",
                serde_json::Value::String(address.clone())
            ));
        }
        yaml
    }

    /// Starts `thanos query` on free loopback ports and waits for `/-/ready`. It does not wait for
    /// the endpoints: see [`ThanosQuery::wait_for_endpoints`].
    pub async fn start(self) -> Result<ThanosQuery> {
        let binary = tool_path(Tool::Thanos)?;
        let http_port = free_port();
        let grpc_port = free_port();
        let grpc_address = format!("127.0.0.1:{grpc_port}");
        let mut command = Command::new(binary);
        command
            .arg("query")
            .arg(format!("--http-address=127.0.0.1:{http_port}"))
            .arg(format!("--grpc-address={grpc_address}"))
            .arg(format!("--endpoint.sd-config={}", self.endpoint_config()))
            .arg("--log.level=info");
        for label in &self.replica_labels {
            command.arg(format!("--query.replica-label={label}"));
        }
        command.args(&self.args);
        let mut process = Process::spawn("thanos-query", command)?;
        let url = format!("http://127.0.0.1:{http_port}");
        process
            .wait_http_ok(&format!("{url}/-/ready"), READY_TIMEOUT)
            .await?;
        Ok(ThanosQuery {
            process,
            url,
            grpc_address,
            endpoints: self.endpoints.into_iter().map(|(a, _)| a).collect(),
        })
    }
}

/// A running `thanos query`; killed when dropped.
#[derive(Debug)]
pub struct ThanosQuery {
    process: Process,
    url: String,
    grpc_address: String,
    endpoints: Vec<String>,
}

impl ThanosQuery {
    /// Configures a `thanos query` to start.
    pub fn builder() -> ThanosQueryBuilder {
        ThanosQueryBuilder::default()
    }

    /// Starts `thanos query` over these StoreAPI endpoints (`host:port`) with default flags.
    pub async fn start(endpoints: &[String]) -> Result<Self> {
        endpoints
            .iter()
            .fold(Self::builder(), |b, e| b.endpoint(e))
            .start()
            .await
    }

    /// Base URL of the HTTP API, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `127.0.0.1:<port>` of its own gRPC StoreAPI.
    pub fn grpc_address(&self) -> &str {
        &self.grpc_address
    }

    /// The process (logs, signals).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// `GET /api/v1/<path>` with query parameters; returns the `data` field of a success response.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<serde_json::Value> {
        api_get(&self.url, path, params).await
    }

    /// An instant query (deduplicated along the replica labels); returns `data`.
    pub async fn query(&self, expr: &str) -> Result<serde_json::Value> {
        self.api("query", &[("query", expr)]).await
    }

    /// `/api/v1/stores`: the endpoints the querier currently uses, grouped by component type.
    pub async fn stores(&self) -> Result<serde_json::Value> {
        self.api("stores", &[]).await
    }

    /// Waits until every configured endpoint is listed in `/api/v1/stores` without an error, and
    /// returns that listing. The querier polls its endpoints every few seconds.
    pub async fn wait_for_endpoints(&self, timeout: Duration) -> Result<serde_json::Value> {
        let result = wait_until("thanos query sees its endpoints", timeout, || async {
            let stores = self.stores().await.ok()?;
            let healthy: Vec<&str> = stores
                .as_object()?
                .values()
                .filter_map(|group| group.as_array())
                .flatten()
                .filter(|s| s["lastError"].is_null())
                .filter_map(|s| s["name"].as_str())
                .collect();
            self.endpoints
                .iter()
                .all(|e| healthy.contains(&e.as_str()))
                .then_some(stores)
        })
        .await;
        result.map_err(|e| match e {
            Error::NotReady { name, waited, .. } => Error::NotReady {
                name,
                waited,
                last: "endpoints missing or unhealthy in /api/v1/stores".into(),
                log: self.process.log_tail(),
            },
            other => other,
        })
    }
}

/// How to start a `thanos sidecar`.
#[derive(Debug)]
pub struct ThanosSidecarBuilder {
    prometheus_url: String,
    tsdb_path: PathBuf,
    objstore_yaml: Option<String>,
    args: Vec<String>,
}

impl ThanosSidecarBuilder {
    /// Uploads the Prometheus's blocks to this bucket (Thanos objstore YAML, e.g.
    /// [`crate::Minio::objstore_yaml`]). Thanos then requires the Prometheus to run with equal
    /// `--storage.tsdb.min-block-duration` and `--storage.tsdb.max-block-duration`.
    pub fn objstore_yaml(mut self, yaml: &str) -> Self {
        self.objstore_yaml = Some(yaml.into());
        self
    }

    /// An extra command-line flag, e.g. `--shipper.upload-compacted`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Starts `thanos sidecar` on free loopback ports and waits for `/-/ready` (which needs the
    /// Prometheus to answer, and to have at least one external label).
    pub async fn start(self) -> Result<ThanosSidecar> {
        let binary = tool_path(Tool::Thanos)?;
        let http_port = free_port();
        let grpc_port = free_port();
        let grpc_address = format!("127.0.0.1:{grpc_port}");
        let mut command = Command::new(binary);
        command
            .arg("sidecar")
            .arg(format!("--http-address=127.0.0.1:{http_port}"))
            .arg(format!("--grpc-address={grpc_address}"))
            .arg(format!("--prometheus.url={}", self.prometheus_url))
            .arg(format!("--tsdb.path={}", self.tsdb_path.display()))
            .arg("--log.level=info");
        if let Some(yaml) = &self.objstore_yaml {
            command.arg(format!("--objstore.config={yaml}"));
        }
        command.args(&self.args);
        let mut process = Process::spawn("thanos-sidecar", command)?;
        let url = format!("http://127.0.0.1:{http_port}");
        process
            .wait_http_ok(&format!("{url}/-/ready"), READY_TIMEOUT)
            .await?;
        Ok(ThanosSidecar {
            process,
            url,
            grpc_address,
        })
    }
}

/// A running `thanos sidecar`; killed when dropped.
#[derive(Debug)]
pub struct ThanosSidecar {
    process: Process,
    url: String,
    grpc_address: String,
}

impl ThanosSidecar {
    /// Configures a sidecar for the Prometheus at `prometheus_url` whose TSDB is `tsdb_path`.
    pub fn builder(prometheus_url: &str, tsdb_path: &Path) -> ThanosSidecarBuilder {
        ThanosSidecarBuilder {
            prometheus_url: prometheus_url.into(),
            tsdb_path: tsdb_path.to_path_buf(),
            objstore_yaml: None,
            args: Vec::new(),
        }
    }

    /// Starts a sidecar for the Prometheus at `prometheus_url` whose TSDB is `tsdb_path`, uploading
    /// blocks to `objstore_yaml`'s bucket if given.
    pub async fn start(
        prometheus_url: &str,
        tsdb_path: &Path,
        objstore_yaml: Option<&str>,
    ) -> Result<Self> {
        let builder = Self::builder(prometheus_url, tsdb_path);
        match objstore_yaml {
            Some(yaml) => builder.objstore_yaml(yaml),
            None => builder,
        }
        .start()
        .await
    }

    /// `127.0.0.1:<port>` of its gRPC StoreAPI.
    pub fn grpc_address(&self) -> &str {
        &self.grpc_address
    }

    /// Base URL of its HTTP server (`/-/ready`, `/metrics`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process (logs, signals).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// A running `thanos store` (Thanos's store gateway) over a bucket; killed when dropped.
#[derive(Debug)]
pub struct ThanosStore {
    process: Process,
    url: String,
    grpc_address: String,
}

impl ThanosStore {
    /// Starts `thanos store --objstore.config=<yaml> --data-dir=<dir> ARGS…` on free loopback ports
    /// and waits for `/-/ready` (ready after its first block sync).
    pub async fn start(objstore_yaml: &str, data_dir: &Path, args: &[&str]) -> Result<Self> {
        let binary = tool_path(Tool::Thanos)?;
        let http_port = free_port();
        let grpc_address = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(binary);
        command
            .arg("store")
            .arg(format!("--http-address=127.0.0.1:{http_port}"))
            .arg(format!("--grpc-address={grpc_address}"))
            .arg(format!("--objstore.config={objstore_yaml}"))
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg("--log.level=info")
            .args(args);
        let mut process = Process::spawn("thanos-store", command)?;
        let url = format!("http://127.0.0.1:{http_port}");
        process
            .wait_http_ok(&format!("{url}/-/ready"), Duration::from_secs(600))
            .await?;
        Ok(ThanosStore {
            process,
            url,
            grpc_address,
        })
    }

    /// `127.0.0.1:<port>` of its gRPC StoreAPI.
    pub fn grpc_address(&self) -> &str {
        &self.grpc_address
    }

    /// Base URL of its HTTP server (`/-/ready`, `/metrics`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process (logs, signals, pid for RSS).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// The first line of `thanos --version`, e.g. `thanos, version 0.42.4 (branch: ...)`.
pub fn thanos_version() -> Result<String> {
    let out = run_tool(Tool::Thanos, &["--version"])?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(Error::Request {
            step: "thanos --version".into(),
            message: format!("{}: {text}", out.status),
        });
    }
    Ok(text.lines().next().unwrap_or_default().to_string())
}
