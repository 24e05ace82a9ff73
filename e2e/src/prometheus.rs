//! A real Prometheus server (scraping itself for real) and the real `promtool`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::tools::{Tool, run_tool, tool_path};
use crate::{Error, Process, Result, free_port};

/// How to start a Prometheus.
#[derive(Debug, Default)]
pub struct PrometheusBuilder {
    external_labels: Vec<(String, String)>,
    scrape_interval: Option<Duration>,
    extra_scrape_configs: Vec<String>,
    config: Option<String>,
    data_dir: Option<PathBuf>,
    args: Vec<String>,
}

impl PrometheusBuilder {
    /// Adds an external label (the sidecar needs at least one).
    pub fn external_label(mut self, name: &str, value: &str) -> Self {
        self.external_labels.push((name.into(), value.into()));
        self
    }

    /// The global scrape interval (default 1s, so tests see data quickly).
    pub fn scrape_interval(mut self, interval: Duration) -> Self {
        self.scrape_interval = Some(interval);
        self
    }

    /// Appends a YAML scrape config (a list item under `scrape_configs:`, without the leading `- `).
    pub fn scrape_config(mut self, yaml: &str) -> Self {
        self.extra_scrape_configs.push(yaml.into());
        self
    }

    /// Replaces the whole generated configuration file.
    pub fn config(mut self, yaml: &str) -> Self {
        self.config = Some(yaml.into());
        self
    }

    /// Uses this TSDB directory instead of a fresh temporary one (it is not deleted afterwards).
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    /// An extra command-line flag, e.g. `--storage.tsdb.min-block-duration=5m`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    fn render_config(&self, port: u16) -> String {
        if let Some(config) = &self.config {
            return config.clone();
        }
        let interval = self.scrape_interval.unwrap_or(Duration::from_secs(1));
        let mut yaml = format!(
            "global:\n  scrape_interval: {}ms\n  evaluation_interval: {}ms\n",
            interval.as_millis(),
            interval.as_millis()
        );
        if !self.external_labels.is_empty() {
            yaml.push_str("  external_labels:\n");
            for (k, v) in &self.external_labels {
                yaml.push_str(&format!(
                    "    {k}: {}\n",
                    serde_json::Value::String(v.clone())
                ));
            }
        }
        yaml.push_str(&format!(
            "scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ));
        for extra in &self.extra_scrape_configs {
            let mut lines = extra.lines();
            if let Some(first) = lines.next() {
                yaml.push_str(&format!("  - {first}\n"));
            }
            for line in lines {
                yaml.push_str(&format!("    {line}\n"));
            }
        }
        yaml
    }

    /// Starts Prometheus on a free loopback port and waits for `/-/ready`.
    pub async fn start(self) -> Result<Prometheus> {
        let binary = tool_path(Tool::Prometheus)?;
        let port = free_port();
        let scratch = tempfile::Builder::new()
            .prefix("strata-e2e-prometheus-")
            .tempdir()
            .map_err(Error::io("create Prometheus scratch dir"))?;
        let config_path = scratch.path().join("prometheus.yml");
        std::fs::write(&config_path, self.render_config(port))
            .map_err(Error::io(format!("write {}", config_path.display())))?;
        let data_dir = match &self.data_dir {
            Some(d) => d.clone(),
            None => scratch.path().join("data"),
        };
        let mut command = Command::new(binary);
        command
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", data_dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-lifecycle")
            .arg("--log.level=info")
            .args(&self.args);
        let mut process = Process::spawn("prometheus", command)?;
        let url = format!("http://127.0.0.1:{port}");
        process
            .wait_http_ok(&format!("{url}/-/ready"), Duration::from_secs(60))
            .await?;
        Ok(Prometheus {
            process,
            url,
            data_dir,
            config_path,
            _scratch: scratch,
        })
    }
}

/// A running Prometheus; stopped (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Prometheus {
    process: Process,
    url: String,
    data_dir: PathBuf,
    config_path: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Prometheus {
    /// Configures a Prometheus to start.
    pub fn builder() -> PrometheusBuilder {
        PrometheusBuilder::default()
    }

    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The TSDB directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The configuration file it was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The process (logs, signals).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// `GET /api/v1/<path>` with query parameters; returns the `data` field of a success response.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<serde_json::Value> {
        let url = format!("{}/api/v1/{path}", self.url);
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
        let body: serde_json::Value = resp.json().await.map_err(|e| Error::Request {
            step: step.clone(),
            message: e.to_string(),
        })?;
        if body["status"] != "success" {
            return Err(Error::Request {
                step,
                message: body.to_string(),
            });
        }
        Ok(body["data"].clone())
    }

    /// An instant query; returns `data` (`resultType` + `result`).
    pub async fn query(&self, expr: &str) -> Result<serde_json::Value> {
        self.api("query", &[("query", expr)]).await
    }

    /// The Prometheus version from `/api/v1/status/buildinfo`.
    pub async fn version(&self) -> Result<String> {
        let info = self.api("status/buildinfo", &[]).await?;
        Ok(info["version"].as_str().unwrap_or_default().to_string())
    }
}

/// Runs the real `promtool` with `args` (any exit status is returned, not judged).
pub fn promtool(args: &[&str]) -> Result<Output> {
    run_tool(Tool::Promtool, args)
}
