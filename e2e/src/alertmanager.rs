//! A real Alertmanager on loopback: a minimal configuration (one receiver that sends nowhere),
//! storage in a temporary directory, clustering off; helpers to read its alerts API.

use std::process::Command;
use std::time::Duration;

use crate::tools::{Tool, tool_path};
use crate::{Error, Process, Result, free_port};

/// The configuration: every alert goes to a receiver without integrations, grouped per alert so
/// nothing waits long.
const CONFIG: &str = "\
route:
  receiver: blackhole
  group_by: ['...']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: blackhole
";

/// A running Alertmanager; killed when dropped.
#[derive(Debug)]
pub struct Alertmanager {
    process: Process,
    port: u16,
    url: String,
    dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager on a free loopback port and waits until it is ready.
    pub async fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("strata-e2e-alertmanager-")
            .tempdir()
            .map_err(Error::io("create Alertmanager dir"))?;
        let cfg = dir.path().join("alertmanager.yml");
        std::fs::write(&cfg, CONFIG).map_err(Error::io(format!("write {}", cfg.display())))?;
        Self::start_on(dir, free_port()).await
    }

    async fn start_on(dir: tempfile::TempDir, port: u16) -> Result<Self> {
        let binary = tool_path(Tool::Alertmanager)?;
        let mut command = Command::new(binary);
        command
            .arg(format!(
                "--config.file={}",
                dir.path().join("alertmanager.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=");
        let mut process = Process::spawn("alertmanager", command)?;
        let url = format!("http://127.0.0.1:{port}");
        process
            .wait_http_ok(&format!("{url}/-/ready"), Duration::from_secs(60))
            .await?;
        Ok(Self {
            process,
            port,
            url,
            dir,
        })
    }

    /// Kills the process, keeping its port and directory for [`Alertmanager::start_again`].
    pub fn stop(mut self) -> StoppedAlertmanager {
        self.process.kill();
        StoppedAlertmanager {
            port: self.port,
            dir: self.dir,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process (logs, signals).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// `GET /api/v2/alerts` with optional query parameters (`active`, `silenced`, `filter`, ...):
    /// the JSON array of gettable alerts.
    pub async fn alerts(&self, params: &[(&str, &str)]) -> Result<Vec<serde_json::Value>> {
        let step = format!("GET {}/api/v2/alerts", self.url);
        let bad = |message: String| Error::Request {
            step: step.clone(),
            message,
        };
        let resp = reqwest::Client::new()
            .get(format!("{}/api/v2/alerts", self.url))
            .query(params)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| bad(e.to_string()))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| bad(e.to_string()))?;
        if !status.is_success() {
            return Err(bad(format!("HTTP {status}: {body}")));
        }
        serde_json::from_str(&body).map_err(|e| bad(format!("{e}: {body}")))
    }
}

/// An Alertmanager that was stopped; its port stays reserved by nobody, so start it soon.
#[derive(Debug)]
pub struct StoppedAlertmanager {
    port: u16,
    dir: tempfile::TempDir,
}

impl StoppedAlertmanager {
    /// The URL it had (and will have again).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port with the same storage.
    pub async fn start_again(self) -> Result<Alertmanager> {
        Alertmanager::start_on(self.dir, self.port).await
    }
}
