//! The ruler against a real Prometheus (scraping itself) as its `--query` endpoint: a recording
//! rule's samples equal what Prometheus answers for the same expression at the same timestamps;
//! a bad reload keeps the old rules (the API still shows them, the reload metric says failed)
//! and a good one takes the new ones.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;
use strata_e2e::{Prometheus, free_port, wait_until};
use strata_promql::{Labels, is_stale_nan};
use strata_rule::eval::HttpQuerier;
use strata_rule::run::serve_rules;
use strata_rule::{Alert, Notify, OutSample, Result, RuleConfig, SampleSink};
use strata_runtime::{Readiness, Shutdown};

#[derive(Default)]
struct MemSink(Mutex<Vec<OutSample>>);

#[async_trait::async_trait]
impl SampleSink for MemSink {
    async fn append(&self, samples: &[OutSample]) -> Result<()> {
        self.0.lock().expect("lock").extend_from_slice(samples);
        Ok(())
    }
}

#[derive(Default)]
struct NoAlerts;

impl Notify for NoAlerts {
    fn send(&self, _alerts: Vec<Alert>) {}
}

const EXPR: &str = "sum by (job) (prometheus_tsdb_head_samples_appended_total)";

fn config(rule_file: &str, query: &str, http: u16) -> RuleConfig {
    RuleConfig {
        rule_files: vec![rule_file.to_string()],
        query_urls: vec![query.to_string()],
        query_timeout: Duration::from_secs(10),
        eval_interval: Duration::from_secs(1),
        data_dir: std::env::temp_dir(),
        external_labels: Labels::new([("ruler".to_string(), "r1".to_string())]),
        external_url: format!("http://127.0.0.1:{http}"),
        alertmanager_urls: Vec::new(),
        alertmanager_timeout: Duration::from_secs(1),
        alert_label_drop: Vec::new(),
        resend_delay: Duration::from_secs(60),
        for_outage_tolerance: Duration::from_secs(3600),
        for_grace_period: Duration::from_secs(600),
        block_duration: Duration::from_secs(7200),
        retention: Duration::from_secs(86_400),
        bucket: None,
        grpc_address: "127.0.0.1:0".parse().expect("addr"),
        grpc_options: strata_storeapi::ServerOptions::default(),
        http_address: format!("127.0.0.1:{http}").parse().expect("addr"),
        query_sd_files: Vec::new(),
        query_sd_interval: Duration::from_secs(300),
        alertmanager_dns_interval: Duration::from_secs(30),
        remote_write: Vec::new(),
    }
}

async fn prom_value(client: &reqwest::Client, base: &str, t_ms: i64) -> Option<f64> {
    let body: serde_json::Value = client
        .get(format!("{base}/api/v1/query"))
        .query(&[
            ("query", EXPR),
            ("time", &format!("{:.3}", t_ms as f64 / 1000.0)),
        ])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_rule_matches_prometheus_and_bad_reload_keeps_rules() {
    let prom = Prometheus::builder()
        .start()
        .await
        .unwrap_or_else(|e| panic!("a real Prometheus is needed for this test: {e}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let rule_file = dir.path().join("rules.yml");
    std::fs::write(
        &rule_file,
        format!("groups:\n- name: g\n  interval: 1s\n  rules:\n  - record: job:samples:sum\n    expr: {EXPR}\n    labels: {{src: strata}}\n"),
    )
    .expect("write rules");
    let http = free_port();
    let cfg = config(rule_file.to_str().expect("utf-8"), prom.url(), http);
    let sink = Arc::new(MemSink::default());
    let shutdown = Shutdown::new();
    let backend =
        Arc::new(HttpQuerier::new(cfg.query_urls.clone(), cfg.query_timeout).expect("querier"));
    let server = {
        let (sink, shutdown) = (sink.clone(), shutdown.clone());
        tokio::spawn(async move {
            serve_rules(
                &cfg,
                backend,
                sink,
                Arc::new(NoAlerts),
                None,
                Registry::default(),
                Readiness::new(),
                shutdown,
            )
            .await
        })
    };
    let samples = wait_until("five rule evaluations", Duration::from_secs(60), || {
        let sink = sink.clone();
        async move {
            let s = sink.0.lock().expect("lock").clone();
            (s.len() >= 5).then_some(s)
        }
    })
    .await
    .expect("the ruler evaluates");

    let client = reqwest::Client::new();
    for s in &samples {
        assert!(!is_stale_nan(s.v), "unexpected stale marker {s:?}");
        assert_eq!(s.labels.get("__name__"), Some("job:samples:sum"));
        assert_eq!(s.labels.get("job"), Some("prometheus"));
        assert_eq!(s.labels.get("src"), Some("strata"));
        let theirs = prom_value(&client, prom.url(), s.t)
            .await
            .unwrap_or_else(|| panic!("Prometheus has no value at {}", s.t));
        assert_eq!(
            s.v, theirs,
            "at {}: ruler {} vs Prometheus {theirs}",
            s.t, s.v
        );
    }
    let ts: Vec<i64> = samples.iter().map(|s| s.t).collect();
    assert!(
        ts.windows(2).all(|w| w[1] - w[0] == 1000),
        "1s apart: {ts:?}"
    );

    // A bad file: the reload fails, the old rule keeps running and is still shown.
    let base = format!("http://127.0.0.1:{http}");
    std::fs::write(
        &rule_file,
        "groups:\n- name: g\n  rules:\n  - record: x\n    expr: sum(\n",
    )
    .expect("write bad rules");
    let r = client
        .post(format!("{base}/-/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 500);
    let rules: serde_json::Value = client
        .get(format!("{base}/api/v1/rules"))
        .send()
        .await
        .expect("rules")
        .json()
        .await
        .expect("json");
    assert_eq!(
        rules["data"]["groups"][0]["rules"][0]["name"], "job:samples:sum",
        "{rules}"
    );
    assert_eq!(
        rules["data"]["groups"][0]["rules"][0]["health"], "ok",
        "{rules}"
    );
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("strata_rule_config_last_reload_successful 0"),
        "{metrics}"
    );
    let before = sink.0.lock().expect("lock").len();
    wait_until(
        "evaluation after the failed reload",
        Duration::from_secs(30),
        || {
            let sink = sink.clone();
            async move { (sink.0.lock().expect("lock").len() > before + 1).then_some(()) }
        },
    )
    .await
    .expect("old rules keep running");

    // A good file with an alerting rule: taken.
    std::fs::write(
        &rule_file,
        "groups:\n- name: g\n  interval: 1s\n  rules:\n  - alert: Always\n    expr: vector(1)\n",
    )
    .expect("write new rules");
    let r = client
        .post(format!("{base}/-/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 200);
    let alerts = wait_until("the new alert firing", Duration::from_secs(30), || {
        let client = client.clone();
        let url = format!("{base}/api/v1/alerts");
        async move {
            let v: serde_json::Value = client.get(url).send().await.ok()?.json().await.ok()?;
            let a = v["data"]["alerts"].as_array()?.clone();
            (!a.is_empty()).then_some(a)
        }
    })
    .await
    .expect("alert listed");
    assert_eq!(alerts[0]["labels"]["alertname"], "Always");
    assert_eq!(alerts[0]["state"], "firing");
    let rec = client
        .get(format!("{base}/api/v1/rules?type=record"))
        .send()
        .await
        .expect("rules")
        .json::<serde_json::Value>()
        .await
        .expect("json");
    assert_eq!(
        rec["data"]["groups"],
        serde_json::json!([]),
        "no recording rules left"
    );

    shutdown.trigger();
    server.await.expect("join").expect("ruler stops cleanly");
}
