//! Two `strata rule` replicas in HA (issue 12), real binaries and peers: a real Prometheus
//! (scraping itself every second) behind a `strata sidecar` and a `strata query`, a real
//! Alertmanager, a MinIO bucket. Both replicas run the same rule file with
//! `--label=ruler_replica="a"|"b"` and `--alert.label-drop=ruler_replica`; replica a finds its
//! query endpoint through `--query` and Alertmanager through `--alertmanagers.url=dns+localhost:PORT`,
//! replica b finds its query endpoint only through `--query.sd-files` and Alertmanager by URL.
//! Asserted: Alertmanager lists exactly one alert for the rule, without `ruler_replica`, after both
//! replicas have delivered it (replica a to the address DNS gave); a `strata query` over both
//! rulers' StoreAPIs with `--query.replica-label=ruler_replica` returns one de-duplicated recorded
//! series (two with `dedup=false`); both replicas ship blocks to the bucket; replica b's SD file
//! rewritten to an endpoint where nothing listens makes its rules unhealthy, and rewritten back
//! makes them healthy again, without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_e2e::{
    Alertmanager, Minio, PromApi, Prometheus, StrataQuery, StrataServer, StrataSidecar, free_port,
    wait_until,
};

const BUCKET: &str = "rulers";
const WAIT: Duration = Duration::from_secs(120);

const RULES: &str = "\
groups:
  - name: ha
    interval: 1s
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: HaAlwaysOn
        expr: vector(1)
        for: 3s
        labels:
          severity: page
";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_strata"))
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// GET `url` as text; `None` on any failure (the caller polls).
async fn get_text(url: &str) -> Option<String> {
    let resp = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().await.ok()
}

/// The `health` of every rule in the ruler's `/api/v1/rules`, as `(name, health)`.
async fn rule_health(ruler: &StrataServer) -> Option<Vec<(String, String)>> {
    let body = get_text(&format!("{}/api/v1/rules", ruler.url())).await?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(
        v["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or_default().to_string(),
                    r["health"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
    )
}

/// Whether every rule of the ruler reports `health` (and there are two).
async fn all_rules(ruler: &StrataServer, health: &str) -> Option<()> {
    let rules = rule_health(ruler).await?;
    (rules.len() == 2 && rules.iter().all(|(_, h)| h == health)).then_some(())
}

/// The sum of `strata_rule_alertmanager_alerts_sent_total` series of the ruler whose
/// `alertmanager` label is `endpoint`.
async fn alerts_sent_to(ruler: &StrataServer, endpoint: &str) -> Option<f64> {
    let text = get_text(&format!("{}/metrics", ruler.url())).await?;
    let prefix =
        format!("strata_rule_alertmanager_alerts_sent_total{{alertmanager=\"{endpoint}\"}} ");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

fn write_sd(path: &Path, target: &str) {
    // Write then rename, as config management does, so the ruler never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!("- targets: ['{target}']\n  labels:\n    env: e2e\n"),
    )
    .expect("write SD file");
    std::fs::rename(&tmp, path).expect("rename SD file");
}

/// The recorded `job:up:sum` series (their label sets) read through `api`, with `params`.
async fn recorded_series(api: &PromApi, params: &[(&str, &str)]) -> Option<Vec<serde_json::Value>> {
    let r = api
        .instant("job:up:sum{job=\"prometheus\"}", now_secs(), params)
        .await
        .ok()?;
    if !r.is_success() {
        return None;
    }
    Some(r.series().iter().map(|s| s["metric"].clone()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ha_rulers_dedupe_alerts_and_series_and_follow_discovery() {
    let prom = Prometheus::builder()
        .external_label("cluster", "ha")
        .scrape_interval(Duration::from_secs(1))
        .start()
        .await
        .expect("start Prometheus (STRATA_PROMETHEUS, built by e2e/tools/install.sh)");
    let am = Alertmanager::start()
        .await
        .expect("start Alertmanager (STRATA_ALERTMANAGER, built by e2e/tools/install.sh)");
    let minio = Minio::start()
        .await
        .expect("start MinIO (STRATA_MINIO, built by e2e/tools/install.sh)");
    minio.create_bucket(BUCKET).await.expect("create bucket");
    let sidecar = StrataSidecar::start(binary(), prom.url(), prom.data_dir())
        .await
        .expect("start strata sidecar");
    let q_eval = StrataQuery::builder(binary())
        .endpoint(sidecar.grpc_address())
        .start()
        .await
        .expect("start strata query over the sidecar");
    let q_eval_addr = q_eval.url().trim_start_matches("http://").to_string();
    let am_port: u16 = am
        .url()
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("Alertmanager port");

    let dir = tempfile::tempdir().expect("temp dir");
    let rule_file = dir.path().join("rules.yml");
    std::fs::write(&rule_file, RULES).expect("write rule file");
    let sd_file = dir.path().join("query-sd.yml");
    write_sd(&sd_file, &q_eval_addr);

    let common = |replica: &str, data: PathBuf| {
        vec![
            format!("--rule-file={}", rule_file.display()),
            "--eval-interval=1s".to_string(),
            format!("--label=ruler_replica=\"{replica}\""),
            "--alert.label-drop=ruler_replica".to_string(),
            "--resend-delay=1s".to_string(),
            format!("--objstore.config={}", minio.objstore_yaml(BUCKET)),
            "--tsdb.block-duration=10s".to_string(),
            format!("--data-dir={}", data.display()),
        ]
    };
    let mut args_a = common("a", dir.path().join("data-a"));
    args_a.push(format!("--query={}", q_eval.url()));
    args_a.push(format!("--alertmanagers.url=dns+localhost:{am_port}"));
    args_a.push("--alertmanagers.sd-dns-interval=2s".to_string());
    let mut args_b = common("b", dir.path().join("data-b"));
    // b has no --query: its only endpoint comes from the SD file (default 5m re-read interval,
    // so the recovery below proves the change detection, not the periodic re-read).
    args_b.push(format!(
        "--query.sd-files={}/query-*.yml",
        dir.path().display()
    ));
    args_b.push(format!("--alertmanagers.url={}", am.url()));
    let mut ruler_a = StrataServer::new(binary(), "rule", &args_a, true);
    let mut ruler_b = StrataServer::new(binary(), "rule", &args_b, true);
    ruler_a.start().await.expect("start strata rule replica a");
    ruler_b.start().await.expect("start strata rule replica b");

    // 1. Both replicas evaluate (b through the endpoint from its SD file).
    for (name, ruler) in [("a", &ruler_a), ("b", &ruler_b)] {
        wait_until(&format!("replica {name} healthy"), WAIT, || {
            all_rules(ruler, "ok")
        })
        .await
        .unwrap_or_else(|e| panic!("replica {name}: both rules healthy: {e}"));
    }

    // 2. Both replicas delivered the alert (a to the address `dns+localhost` resolved to), and
    // Alertmanager holds it once, without the replica label.
    let am_endpoint = format!("http://127.0.0.1:{am_port}/api/v2/alerts");
    wait_until("replica a sent via DNS", WAIT, || async {
        alerts_sent_to(&ruler_a, &am_endpoint)
            .await
            .filter(|n| *n > 0.0)
    })
    .await
    .expect("replica a sends alerts to the Alertmanager found through dns+localhost");
    let am_endpoint_b = format!("{}/api/v2/alerts", am.url());
    wait_until("replica b sent", WAIT, || async {
        alerts_sent_to(&ruler_b, &am_endpoint_b)
            .await
            .filter(|n| *n > 0.0)
    })
    .await
    .expect("replica b sends alerts to Alertmanager");
    let listed: Vec<serde_json::Value> = am
        .alerts(&[])
        .await
        .expect("Alertmanager alerts")
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == "HaAlwaysOn")
        .collect();
    assert_eq!(listed.len(), 1, "one alert for two replicas: {listed:#?}");
    assert!(
        listed[0]["labels"].get("ruler_replica").is_none(),
        "the replica label is dropped: {}",
        listed[0]
    );
    assert_eq!(listed[0]["labels"]["severity"], "page");

    // 3. The recorded series over both rulers' StoreAPIs: one after dedup, two without.
    let q_read = StrataQuery::builder(binary())
        .endpoint(ruler_a.grpc_address().expect("ruler a gRPC"))
        .endpoint(ruler_b.grpc_address().expect("ruler b gRPC"))
        .replica_label("ruler_replica")
        .start()
        .await
        .expect("start strata query over both rulers");
    let read = PromApi::new(q_read.url(), Duration::from_secs(30)).expect("querier client");
    let raw = wait_until("both replicas' series", WAIT, || async {
        recorded_series(&read, &[("dedup", "false")])
            .await
            .filter(|s| s.len() == 2)
    })
    .await
    .expect("two recorded series without dedup, one per replica");
    let mut replicas: Vec<&str> = raw
        .iter()
        .filter_map(|m| m["ruler_replica"].as_str())
        .collect();
    replicas.sort();
    assert_eq!(replicas, ["a", "b"], "without dedup: {raw:?}");
    let deduped = recorded_series(&read, &[])
        .await
        .expect("deduplicated query");
    assert_eq!(
        deduped,
        vec![serde_json::json!({"__name__": "job:up:sum", "job": "prometheus"})],
        "one series after dedup, without the replica label"
    );

    // 4. Both replicas ship blocks to the shared bucket, under their own external labels.
    let store = minio.object_store(BUCKET).expect("bucket client");
    let shipped = wait_until("blocks of both replicas", WAIT, || async {
        use futures::TryStreamExt;
        use object_store::{ObjectStore, ObjectStoreExt};
        let mut replicas = Vec::new();
        let metas: Vec<_> = store
            .list(None)
            .try_collect::<Vec<_>>()
            .await
            .ok()?
            .into_iter()
            .filter(|m| m.location.to_string().ends_with("/meta.json"))
            .collect();
        for m in metas {
            let bytes = store.get(&m.location).await.ok()?.bytes().await.ok()?;
            let meta: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            if let Some(r) = meta["thanos"]["labels"]["ruler_replica"].as_str() {
                replicas.push(r.to_string());
            }
        }
        replicas.sort();
        replicas.dedup();
        (replicas.len() == 2).then_some(replicas)
    })
    .await
    .expect("both replicas ship blocks");
    assert_eq!(shipped, ["a", "b"]);

    // 5. b's SD file points to a dead endpoint: its rules fail; pointed back: they recover.
    let dead = format!("127.0.0.1:{}", free_port());
    write_sd(&sd_file, &dead);
    wait_until("replica b unhealthy", WAIT, || all_rules(&ruler_b, "err"))
        .await
        .expect("replica b's rules fail once its SD file names a dead endpoint");
    write_sd(&sd_file, &q_eval_addr);
    wait_until("replica b healthy again", WAIT, || {
        all_rules(&ruler_b, "ok")
    })
    .await
    .expect("replica b recovers without a restart once the SD file is good again");
    // A malformed SD file keeps the last good targets (and is counted).
    std::fs::write(&sd_file, "- targets: [broken\n").expect("write broken SD file");
    wait_until("SD failure counted", WAIT, || async {
        let text = get_text(&format!("{}/metrics", ruler_b.url())).await?;
        text.lines()
            .filter_map(|l| l.strip_prefix("strata_rule_query_sd_refresh_failures_total "))
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .find(|n| *n > 0.0)
    })
    .await
    .expect("the malformed SD file is counted as a failure");
    let before = now_secs();
    wait_until("replica b evaluates after the bad file", WAIT, || async {
        let body = get_text(&format!("{}/api/v1/rules", ruler_b.url())).await?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let last = v["data"]["groups"][0]["lastEvaluation"].as_str()?;
        let t = chrono::DateTime::parse_from_rfc3339(last).ok()?;
        (t.timestamp_millis() as f64 / 1000.0 > before + 1.0).then_some(())
    })
    .await
    .expect("replica b keeps evaluating");
    all_rules(&ruler_b, "ok")
        .await
        .expect("replica b keeps its last good endpoint after a malformed SD file");
    // a was never affected.
    all_rules(&ruler_a, "ok")
        .await
        .expect("replica a stays healthy");
}
