//! Smoke test: the real Prometheus scrapes itself and answers queries; the real promtool runs.

use std::time::Duration;

use strata_e2e::{Prometheus, promtool, wait_until};

#[tokio::test]
async fn prometheus_scrapes_itself_and_answers_queries() {
    let prom = Prometheus::builder()
        .external_label("cluster", "e2e")
        .external_label("replica", "0")
        .start()
        .await
        .unwrap();
    let version = prom.version().await.unwrap();
    println!("prometheus version {version}");
    assert!(
        version.starts_with("3."),
        "want Prometheus 3.x, got {version:?}"
    );

    let result = wait_until("a scrape of itself", Duration::from_secs(30), || async {
        let data = prom.query("up{job=\"prometheus\"}").await.ok()?;
        let first = data["result"].as_array()?.first()?.clone();
        Some(first)
    })
    .await
    .unwrap();
    assert_eq!(result["value"][1], "1", "{result}");
    assert_eq!(
        result["metric"]["instance"],
        prom.url().trim_start_matches("http://")
    );

    let config = prom.api("status/config", &[]).await.unwrap();
    let yaml = config["yaml"].as_str().unwrap();
    assert!(yaml.contains("replica: \"0\""), "{yaml}");
}

#[test]
fn promtool_runs_and_checks_a_config() {
    let out = promtool(&["--version"]).unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    assert!(
        out.status.success() && text.contains("promtool, version 3."),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yml");
    std::fs::write(&good, "global:\n  scrape_interval: 15s\n").unwrap();
    let out = promtool(&["check", "config", good.to_str().unwrap()]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, "global:\n  scrape_interval: nonsense\n").unwrap();
    let out = promtool(&["check", "config", bad.to_str().unwrap()]).unwrap();
    assert!(
        !out.status.success(),
        "promtool accepted a bad config: {out:?}"
    );
}
