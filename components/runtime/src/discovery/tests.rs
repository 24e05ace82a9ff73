use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::testing::fake_srv_server;
use super::*;

#[test]
fn file_sd_yaml_and_json() {
    let yaml = "- targets: ['a:1', ' b:2 ']\n  labels:\n    x: y\n- targets: [dns+c:3]\n";
    assert_eq!(
        file_sd_targets(yaml).expect("yaml"),
        vec!["a:1", "b:2", "dns+c:3"]
    );
    let json = r#"[{"targets": ["a:1"]}, {"targets": [], "labels": {}}]"#;
    assert_eq!(file_sd_targets(json).expect("json"), vec!["a:1"]);
    assert_eq!(file_sd_targets(" \n").expect("empty"), Vec::<String>::new());
    assert!(file_sd_targets("targets: a").is_err(), "not a list");
    assert!(file_sd_targets("[{\"targets\": [1, ").is_err(), "truncated");
    let e = file_sd_targets("- targets: [a:1]\n  target: [b:2]\n").expect_err("unknown key");
    assert!(e.contains("target"), "{e}");
}

fn has_local(addrs: &[SocketAddr], port: u16) -> bool {
    addrs
        .iter()
        .any(|a| a.ip().is_loopback() && a.port() == port)
}

#[tokio::test]
async fn localhost_resolves_without_network() {
    let got = lookup_host("localhost", 10901).await.expect("resolves");
    assert!(has_local(&got, 10901), "{got:?}");
}

#[tokio::test]
async fn srv_ports_come_from_records_or_the_override() {
    let answer = Arc::new(AtomicBool::new(true));
    let dns = fake_srv_server("_x._tcp.test", vec![7001, 7002], answer.clone())
        .await
        .expect("fake dns");
    let got = lookup_srv("_x._tcp.test", None, Some(dns))
        .await
        .expect("resolves");
    assert!(has_local(&got, 7001) && has_local(&got, 7002), "{got:?}");
    let got = lookup_srv("_x._tcp.test", Some(9999), Some(dns))
        .await
        .expect("resolves");
    assert!(has_local(&got, 9999) && !has_local(&got, 7001), "{got:?}");
    assert!(lookup_srv("_x._tcp.other", None, Some(dns)).await.is_err());
    answer.store(false, Ordering::SeqCst);
    assert!(
        lookup_srv("_x._tcp.test", None, Some(dns)).await.is_err(),
        "NXDOMAIN is an error"
    );
}
