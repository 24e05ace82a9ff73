//! `strata rule` in stateless mode against a real Prometheus started with
//! `--web.enable-remote-write-receiver`: the same Prometheus is the rule query endpoint (`--query`)
//! and, through a cuttable TCP proxy, the remote-write receiver. Asserted: the recording rule's
//! series arrives with the rule's and the external labels and Prometheus's own values at the same
//! timestamps; with the receiver cut off the sender retries and, once it is back, the samples
//! evaluated during the outage arrive, none failed or dropped; samples queued while the receiver
//! is down survive `kill -9` in the remote-write WAL and are sent by the next ruler (configured
//! with `--remote-write.config`), whose alert comes back firing with its old `activeAt`,
//! restored from `ALERTS_FOR_STATE` read through the query API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use strata_e2e::{Prometheus, Proxy, StrataServer, parse_value, wait_until};

const WAIT: Duration = Duration::from_secs(90);

const RULES: &str = "\
groups:
  - name: stateless
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: AlwaysOn
        expr: vector(1)
        for: 4s
        labels:
          severity: page
";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_strata"))
}

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

/// The ruler's `AlwaysOn` alert from `/api/v1/alerts`, if listed.
async fn ruler_alert(ruler: &StrataServer) -> Option<serde_json::Value> {
    let text = get_text(&format!("{}/api/v1/alerts", ruler.url())).await?;
    let body: serde_json::Value = serde_json::from_str(&text).ok()?;
    body["data"]["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["labels"]["alertname"] == "AlwaysOn")
        .cloned()
}

/// Sum of a metric's samples (all label sets) in the ruler's `/metrics`.
async fn metric(ruler: &StrataServer, name: &str) -> Option<f64> {
    let text = get_text(&format!("{}/metrics", ruler.url())).await?;
    Some(
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// Raw samples (`ms -> value`) and labels of `expr` (a range selector) at `at_ms` in Prometheus.
async fn raw(
    prom: &Prometheus,
    expr: &str,
    at_ms: i64,
) -> Vec<(serde_json::Value, BTreeMap<i64, f64>)> {
    let time = format!("{:.3}", at_ms as f64 / 1000.0);
    let Ok(data) = prom.api("query", &[("query", expr), ("time", &time)]).await else {
        return Vec::new();
    };
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let pts = s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        (p[0].as_f64()? * 1000.0).round() as i64,
                        parse_value(&p[1])?,
                    ))
                })
                .collect();
            (s["metric"].clone(), pts)
        })
        .collect()
}

/// Prometheus's own `sum by (job) (up)` for job="prometheus" at `t_ms`.
async fn prom_value(prom: &Prometheus, t_ms: i64) -> Option<f64> {
    let time = format!("{:.3}", t_ms as f64 / 1000.0);
    let data = prom
        .api(
            "query",
            &[
                ("query", "sum by (job) (up{job=\"prometheus\"})"),
                ("time", &time),
            ],
        )
        .await
        .ok()?;
    parse_value(&data["result"].as_array()?.first()?["value"][1])
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateless_ruler_remote_writes_retries_and_restores_alert_state() {
    let prom = Prometheus::builder()
        .scrape_interval(Duration::from_secs(1))
        .arg("--web.enable-remote-write-receiver")
        .start()
        .await
        .expect("start Prometheus (STRATA_PROMETHEUS, built by e2e/tools/install.sh)");
    let prom_addr: SocketAddr = prom
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("Prometheus address");
    let proxy = Proxy::start(prom_addr).await.expect("start proxy");
    let write_url = format!("{}/api/v1/write", proxy.http_url());

    let dir = tempfile::tempdir().expect("temp dir");
    let rule_file = dir.path().join("rules.yml");
    std::fs::write(&rule_file, RULES).expect("write rule file");
    let common = vec![
        format!("--rule-file={}", rule_file.display()),
        format!("--query={}", prom.url()),
        "--eval-interval=1s".to_string(),
        "--resend-delay=1s".to_string(),
        "--for-grace-period=1s".to_string(),
        "--label=ruler=\"r1\"".to_string(),
        // Holds only the remote-write WAL in stateless mode (checked at the end).
        format!("--data-dir={}", dir.path().join("data").display()),
    ];
    let mut args = common.clone();
    args.push(format!("--remote-write.url={write_url}"));
    let mut ruler = StrataServer::new(binary(), "rule", &args, false);
    ruler.start().await.expect("start strata rule");

    // 1. The recorded series reaches the receiver with exactly the rule's and external labels,
    // and its values equal Prometheus's own answer at the same timestamps.
    let samples = wait_until("recorded samples in the receiver", WAIT, || async {
        let got = raw(&prom, "job:up:sum[1m]", now_ms()).await;
        let (labels, pts) = got.into_iter().next()?;
        (pts.len() >= 4).then_some((labels, pts))
    })
    .await
    .expect("the recording rule's series is remote-written");
    assert_eq!(
        samples.0,
        serde_json::json!({"__name__": "job:up:sum", "job": "prometheus", "ruler": "r1"}),
        "labels of the written series"
    );
    for (&t, &v) in &samples.1 {
        assert_eq!(Some(v), prom_value(&prom, t).await, "value at {t}");
    }

    // 2. The alert fires; its ALERTS_FOR_STATE series is in the receiver.
    let firing = wait_until("alert firing", WAIT, || async {
        ruler_alert(&ruler).await.filter(|a| a["state"] == "firing")
    })
    .await
    .expect("AlwaysOn fires");
    let active_at = firing["activeAt"].as_str().expect("activeAt").to_string();
    wait_until("ALERTS_FOR_STATE in the receiver", WAIT, || async {
        let got = raw(
            &prom,
            "ALERTS_FOR_STATE{alertname=\"AlwaysOn\",ruler=\"r1\"}[1m]",
            now_ms(),
        )
        .await;
        (!got.is_empty()).then_some(())
    })
    .await
    .expect("ALERTS_FOR_STATE is remote-written");

    // 3. Receiver cut off: sends fail and are retried; once it is back, the samples evaluated
    // during the outage arrive.
    let retried_before = metric(&ruler, "strata_rule_remote_write_samples_retried_total")
        .await
        .expect("ruler metrics");
    proxy.set_down(true);
    let down_at = now_ms();
    wait_until("retries while the receiver is down", WAIT, || async {
        let r = metric(&ruler, "strata_rule_remote_write_samples_retried_total").await?;
        let pending = metric(&ruler, "strata_rule_remote_write_samples_pending").await?;
        // Several evaluations' samples wait while the sender keeps retrying.
        (r > retried_before && pending >= 9.0).then_some(())
    })
    .await
    .expect("the sender retries and samples queue up");
    let up_at = now_ms();
    proxy.set_down(false);
    wait_until("queue drained", WAIT, || async {
        let pending = metric(&ruler, "strata_rule_remote_write_samples_pending").await?;
        (pending == 0.0).then_some(())
    })
    .await
    .expect("the queue drains after the receiver is back");
    let after = wait_until("outage samples in the receiver", WAIT, || async {
        let got = raw(&prom, "job:up:sum[5m]", now_ms()).await;
        let (_, pts) = got.into_iter().next()?;
        let during = pts.keys().filter(|&&t| t > down_at && t < up_at).count();
        (during >= 2).then_some(pts)
    })
    .await
    .expect("samples evaluated while the receiver was down arrive after it is back");
    let ts: Vec<i64> = after.keys().copied().collect();
    for w in ts.windows(2) {
        assert_eq!(
            (w[1] - w[0]) % 1000,
            0,
            "samples on the 1s evaluation grid, none doubled: {w:?}"
        );
    }
    for name in [
        "strata_rule_remote_write_samples_failed_total",
        "strata_rule_remote_write_samples_dropped_total",
    ] {
        assert_eq!(metric(&ruler, name).await, Some(0.0), "{name}");
    }
    assert!(
        metric(&ruler, "strata_rule_remote_write_samples_sent_total")
            .await
            .is_some_and(|v| v > 0.0)
    );

    // 4. Receiver cut off again, samples queue (and go to the remote-write WAL), then kill -9.
    // A new ruler on the same data dir, configured with `--remote-write.config`, replays the WAL
    // (the samples evaluated before the kill arrive) and restores the firing alert with its old
    // `activeAt` from the receiver through the query API.
    proxy.set_down(true);
    let down2_at = now_ms();
    wait_until("samples queued before the kill", WAIT, || async {
        let pending = metric(&ruler, "strata_rule_remote_write_samples_pending").await?;
        (pending >= 9.0).then_some(())
    })
    .await
    .expect("samples queue while the receiver is down");
    ruler.kill9();
    let killed_at = now_ms();
    proxy.set_down(false);
    let mut args = common.clone();
    args.push(format!(
        "--remote-write.config=remote_write:\n- url: {write_url}\n  queue_config:\n    batch_send_deadline: 1s\n    min_backoff: 50ms\n    max_backoff: 1s\n"
    ));
    let mut second = StrataServer::new(binary(), "rule", &args, false);
    second
        .start()
        .await
        .expect("start the second stateless ruler");
    let restored = wait_until("restored alert firing", WAIT, || async {
        ruler_alert(&second)
            .await
            .filter(|a| a["state"] == "firing")
    })
    .await
    .expect("the alert fires again after the restart");
    assert_eq!(
        restored["activeAt"].as_str(),
        Some(active_at.as_str()),
        "activeAt restored through the query API: {restored}"
    );
    // The second ruler writes too (the config-file form works).
    let before = raw(&prom, "job:up:sum[5m]", now_ms()).await;
    let last_before = before.first().and_then(|(_, p)| p.keys().last().copied());
    wait_until("second ruler's samples", WAIT, || async {
        let got = raw(&prom, "job:up:sum[5m]", now_ms()).await;
        let last = got.first().and_then(|(_, p)| p.keys().last().copied());
        (last > last_before).then_some(())
    })
    .await
    .expect("the second ruler remote-writes");
    let replayed = raw(&prom, "job:up:sum[5m]", now_ms()).await;
    let (_, pts) = replayed.first().expect("the recorded series");
    assert!(
        pts.keys().any(|&t| t > down2_at && t < killed_at),
        "samples evaluated while the receiver was down, before kill -9, arrive from the WAL"
    );
    assert!(
        !dir.path().join("data").join("wal").exists(),
        "stateless mode writes no local TSDB"
    );
    assert!(dir.path().join("data").join("remote-write").is_dir());
}
