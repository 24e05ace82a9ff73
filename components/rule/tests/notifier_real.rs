//! The Alertmanager client against a real Alertmanager (v0.35.0, built by e2e/tools/install.sh):
//! a firing alert arrives with its labels and annotations (label_drop applied), a resolved one
//! leaves the active list, and alerts sent while Alertmanager is down are delivered once it is back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::registry::Registry;
use strata_e2e::{Alertmanager, wait_until};
use strata_promql::Labels;
use strata_rule::notifier::{Alertmanagers, NotifierOptions};
use strata_rule::{Alert, Notify};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn alert(name: &str, ends_at: i64) -> Alert {
    Alert {
        labels: Labels::new([
            ("alertname".to_string(), name.to_string()),
            ("severity".to_string(), "page".to_string()),
            ("replica".to_string(), "ruler-a".to_string()),
        ]),
        annotations: BTreeMap::from([("summary".to_string(), format!("{name} is on fire"))]),
        starts_at: now_ms() - 60_000,
        ends_at: Some(ends_at),
        generator_url: "http://ruler.example/graph?g0.expr=up".into(),
    }
}

/// The alerts Alertmanager lists with `alertname`.
async fn listed(am: &Alertmanager, name: &str) -> Vec<serde_json::Value> {
    am.alerts(&[])
        .await
        .expect("list alerts")
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == name)
        .collect()
}

fn metrics(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode metrics");
    text
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_a_real_alertmanager() {
    let am = Alertmanager::start().await.expect("start Alertmanager");
    let mut registry = Registry::default();
    let notifier = Alertmanagers::start(
        NotifierOptions {
            urls: vec![format!("{}/", am.url())],
            timeout: Duration::from_secs(2),
            queue_capacity: 100,
            label_drop: vec!["replica".into()],
            dns_interval: Duration::from_secs(30),
            dns_server: None,
        },
        &mut registry,
    )
    .expect("start notifier");

    // firing
    notifier.send(vec![alert("StrataFiring", now_ms() + 3_600_000)]);
    let got = wait_until("firing alert listed", WAIT, || async {
        let l = listed(&am, "StrataFiring").await;
        (!l.is_empty()).then_some(l)
    })
    .await
    .expect("alert arrives");
    assert_eq!(got.len(), 1);
    let a = &got[0];
    assert_eq!(a["labels"]["severity"], "page");
    assert!(
        a["labels"].get("replica").is_none(),
        "label_drop not applied: {a}"
    );
    assert_eq!(a["annotations"]["summary"], "StrataFiring is on fire");
    assert_eq!(a["generatorURL"], "http://ruler.example/graph?g0.expr=up");
    assert_eq!(a["status"]["state"], "active");

    // resolved: endsAt in the past; Alertmanager no longer lists it
    notifier.send(vec![alert("StrataFiring", now_ms() - 1_000)]);
    wait_until("resolved alert gone", WAIT, || async {
        listed(&am, "StrataFiring").await.is_empty().then_some(())
    })
    .await
    .expect("alert resolves");

    // Alertmanager down: the alert waits in the queue and is delivered when it is back
    let stopped = am.stop();
    notifier.send(vec![alert("StrataWhileDown", now_ms() + 3_600_000)]);
    // a whole delivery round (retries until the timeout) fails; the alert is still queued
    wait_until("a failed delivery round", WAIT, || async {
        let failed = metrics(&registry).contains("strata_rule_alertmanager_errors_total{");
        (failed && notifier.queue_len() == 1).then_some(())
    })
    .await
    .expect("alert stays queued after a failed delivery");
    let am = stopped.start_again().await.expect("restart Alertmanager");
    let got = wait_until("queued alert delivered", WAIT, || async {
        let l = listed(&am, "StrataWhileDown").await;
        (!l.is_empty()).then_some(l)
    })
    .await
    .expect("alert delivered after restart");
    assert_eq!(got[0]["labels"]["severity"], "page");
    // Delivery is at least once: an attempt that timed out while Alertmanager was starting may
    // have been accepted and is retried; the queue empties either way.
    wait_until("queue drained", WAIT, || async {
        (notifier.queue_len() == 0).then_some(())
    })
    .await
    .expect("queue drains");

    let text = metrics(&registry);
    assert!(
        text.contains("strata_rule_alertmanager_alerts_sent_total{"),
        "{text}"
    );
}
