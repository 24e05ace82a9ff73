//! Where the peer binaries are: `STRATA_<TOOL>` in the environment, else the `env.sh` that
//! `e2e/tools/install.sh` writes into the tools cache (`$STRATA_TOOLS_DIR`, default `~/.cache/strata/tools`).

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::{Error, Result};

/// The peers the harness can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// The Prometheus server.
    Prometheus,
    /// Prometheus's `promtool`.
    Promtool,
    /// The MinIO S3 server.
    Minio,
    /// etcd, for kube-apiserver.
    Etcd,
    /// The Kubernetes API server.
    KubeApiserver,
    /// The Kubernetes controller-manager (workload controllers, garbage collector).
    KubeControllerManager,
    /// The Kubernetes scheduler.
    KubeScheduler,
    /// kwok: fake nodes that run the Pods scheduled on them (status only, no containers).
    Kwok,
    /// The Helm CLI.
    Helm,
    /// Thanos (one binary for query, sidecar, store, compact, ...).
    Thanos,
    /// Prometheus Alertmanager.
    Alertmanager,
    /// prometheus-operator's `PrometheusRule` CRD (a YAML file, not a binary).
    PrometheusOperatorCrds,
}

impl Tool {
    /// The environment variable (and `env.sh` key) holding the binary's path.
    pub fn env_var(self) -> &'static str {
        match self {
            Tool::Prometheus => "STRATA_PROMETHEUS",
            Tool::Promtool => "STRATA_PROMTOOL",
            Tool::Minio => "STRATA_MINIO",
            Tool::Etcd => "STRATA_ETCD",
            Tool::KubeApiserver => "STRATA_KUBE_APISERVER",
            Tool::KubeControllerManager => "STRATA_KUBE_CONTROLLER_MANAGER",
            Tool::KubeScheduler => "STRATA_KUBE_SCHEDULER",
            Tool::Kwok => "STRATA_KWOK",
            Tool::Helm => "STRATA_HELM",
            Tool::Thanos => "STRATA_THANOS",
            Tool::Alertmanager => "STRATA_ALERTMANAGER",
            Tool::PrometheusOperatorCrds => "STRATA_PROMETHEUS_OPERATOR_CRDS",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Tool::Prometheus => "prometheus",
            Tool::Promtool => "promtool",
            Tool::Minio => "minio",
            Tool::Etcd => "etcd",
            Tool::KubeApiserver => "kube-apiserver",
            Tool::KubeControllerManager => "kube-controller-manager",
            Tool::KubeScheduler => "kube-scheduler",
            Tool::Kwok => "kwok",
            Tool::Helm => "helm",
            Tool::Thanos => "thanos",
            Tool::Alertmanager => "alertmanager",
            Tool::PrometheusOperatorCrds => "prometheus-operator-crds",
        }
    }

    /// The install directory's name before `-<version>` (the control-plane binaries share one).
    fn dir_name(self) -> &'static str {
        match self {
            Tool::KubeControllerManager | Tool::KubeScheduler => Tool::KubeApiserver.name(),
            other => other.name(),
        }
    }

    /// The file under `<dir>-<version>/bin/` install.sh puts the peer in.
    fn file_name(self) -> &'static str {
        match self {
            Tool::PrometheusOperatorCrds => "monitoring.coreos.com_prometheusrules.yaml",
            other => other.name(),
        }
    }
}

fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STRATA_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/strata/tools")
}

/// Reads `KEY=value` / `export KEY="value"` lines of the installer's `env.sh`.
fn from_env_file(key: &str) -> Option<String> {
    let text = std::fs::read_to_string(tools_dir().join("env.sh")).ok()?;
    text.lines().find_map(|line| {
        let line = line.trim().strip_prefix("export ").unwrap_or(line.trim());
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches(['"', '\'']).to_string())
    })
}

/// Last resort: `<tools dir>/<name>-<version>/bin/<name>` as install.sh lays peers out (newest
/// version name wins), for a peer installed after another install.sh run rewrote env.sh without it.
fn installed_dir(tool: Tool) -> Option<(String, String)> {
    let prefix = format!("{}-", tool.dir_name());
    let mut found: Vec<PathBuf> = std::fs::read_dir(tools_dir())
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path().join("bin").join(tool.file_name()))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    let p = found.pop()?;
    Some((
        p.display().to_string(),
        format!("{}", tools_dir().display()),
    ))
}

/// The path of an installed peer binary, or [`Error::MissingTool`].
pub fn tool_path(tool: Tool) -> Result<PathBuf> {
    let key = tool.env_var();
    let (path, origin) = match std::env::var(key) {
        Ok(p) if !p.is_empty() => (p, format!("${key}")),
        _ => match from_env_file(key)
            .map(|p| (p, format!("{}/env.sh", tools_dir().display())))
            .or_else(|| installed_dir(tool))
        {
            Some(found) => found,
            None => {
                return Err(Error::MissingTool {
                    tool: tool.name(),
                    detail: format!(
                        "neither ${key} nor {key} in {}/env.sh",
                        tools_dir().display()
                    ),
                });
            }
        },
    };
    let path = PathBuf::from(path);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingTool {
            tool: tool.name(),
            detail: format!("{} (from {origin}) does not exist", path.display()),
        })
    }
}

/// Runs a peer's CLI to completion and returns its output (any exit status).
pub fn run_tool(tool: Tool, args: &[&str]) -> Result<Output> {
    let path = tool_path(tool)?;
    Command::new(&path)
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            name: format!("{} {}", path.display(), args.join(" ")),
            source,
        })
}

/// Runs `helm` with `args`.
pub fn helm(args: &[&str]) -> Result<Output> {
    run_tool(Tool::Helm, args)
}
