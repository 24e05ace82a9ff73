//! The operator Deployment in the Helm chart starts `strata operator` with flags this binary
//! accepts: every mode of the chart is rendered with the real helm, and the rendered args are
//! parsed by the real binary (`--help` last, so every flag before it is checked first).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use strata_e2e::{Tool, tool_path};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `helm template` of the chart with `extra` values, as the operator container's args.
fn rendered_args(home: &Path, extra: &[&str]) -> Vec<String> {
    let helm = tool_path(Tool::Helm).unwrap_or_else(|e| panic!("{e}"));
    let chart = repo().join("charts/strata-operator");
    let out = Command::new(&helm)
        .args(["template", "strata-operator"])
        .arg(&chart)
        .args(["--namespace", "strata-system"])
        .args(extra)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", helm.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "helm template {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found = None;
    for doc in serde_norway::Deserializer::from_str(&stdout) {
        let v = serde_json::Value::deserialize(doc).expect("rendered YAML");
        if v["kind"] == "Deployment" {
            let c = &v["spec"]["template"]["spec"]["containers"][0];
            let args: Vec<String> = c["args"]
                .as_array()
                .expect("operator container args")
                .iter()
                .map(|a| a.as_str().expect("string arg").to_owned())
                .collect();
            found = Some(args);
        }
    }
    found.expect("the chart renders a Deployment")
}

#[test]
fn the_binary_accepts_the_flags_the_chart_passes() {
    let home = tempfile::tempdir().expect("tempdir");
    let modes: [&[&str]; 4] = [
        &[],
        &["--set", "webhook.tlsMode=certManager"],
        &[
            "--set",
            "webhook.enabled=false",
            "--set",
            "leaderElection.enabled=false",
            "--set",
            "replicas=1",
        ],
        &["--set", "watchNamespaces={team-a}"],
    ];
    for extra in modes {
        let args = rendered_args(home.path(), extra);
        assert_eq!(
            args.first().map(String::as_str),
            Some("operator"),
            "{args:?}"
        );
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(&args)
            .arg("--help")
            .output()
            .expect("run strata");
        assert!(
            out.status.success(),
            "chart values {extra:?}: strata refused the chart's args {args:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
