//! Smoke test: the real helm runs and renders a chart.

#[test]
fn helm_version_runs_and_templates_a_chart() {
    let out = strata_e2e::helm(&["version", "--short"]).unwrap();
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    println!("helm version {version}");
    assert!(out.status.success() && version.starts_with('v'), "{out:?}");

    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("smoke");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: smoke\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(chart.join("values.yaml"), "greeting: hello\n").unwrap();
    std::fs::write(
        chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: smoke\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
    )
    .unwrap();
    let out = strata_e2e::helm(&[
        "template",
        "s",
        chart.to_str().unwrap(),
        "--set",
        "greeting=hi",
    ])
    .unwrap();
    let rendered = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(rendered.contains("greeting: \"hi\""), "{rendered}");
}
