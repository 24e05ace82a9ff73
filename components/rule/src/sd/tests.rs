use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

#[test]
fn sd_file_yaml_and_json_become_urls() {
    let yaml =
        "- targets: ['q1:9090', 'https://q2:443/prefix/']\n  labels:\n    x: y\n- targets: []\n";
    assert_eq!(
        parse_sd_file(yaml).expect("yaml"),
        vec!["http://q1:9090", "https://q2:443/prefix"]
    );
    let json = r#"[{"targets": ["127.0.0.1:1"], "labels": {"a": "b"}}]"#;
    assert_eq!(
        parse_sd_file(json).expect("json"),
        vec!["http://127.0.0.1:1"]
    );
    assert_eq!(parse_sd_file(" \n").expect("empty"), Vec::<String>::new());
    for bad in [
        "targets: [a:1]",
        "[{\"targets\": [\"a:1\"",
        "- targets: ['a:1']\n  extra: 1\n",
        "- targets: ['http://:1']\n",
    ] {
        assert!(parse_sd_file(bad).is_err(), "{bad:?} must be rejected");
    }
}

#[test]
fn query_sd_keeps_last_good_targets_and_drops_removed_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.yml");
    let b = dir.path().join("b.json");
    std::fs::write(&a, "- targets: ['q1:1', 'static:9']\n").expect("write");
    std::fs::write(&b, r#"[{"targets": ["q2:2"]}]"#).expect("write");
    let pattern = format!("{}/*", dir.path().display());
    let mut registry = Registry::default();
    let sd =
        QuerySd::new(vec!["http://static:9".into()], vec![pattern], &mut registry).expect("sd");
    let list = sd.urls();
    assert_eq!(
        *list.get(),
        vec!["http://static:9", "http://q1:1", "http://q2:2"],
        "static first, duplicates once"
    );
    assert!(!sd.changed());
    std::fs::write(&a, "- targets: [broken").expect("write");
    assert!(sd.changed(), "a rewrite is seen by stat");
    sd.refresh();
    assert_eq!(
        *list.get(),
        vec!["http://static:9", "http://q1:1", "http://q2:2"],
        "a bad file keeps its targets"
    );
    assert_eq!(sd.metrics.failures.get(), 1);
    std::fs::write(&a, "- targets: ['q3:3']\n").expect("write");
    sd.refresh();
    assert_eq!(
        *list.get(),
        vec!["http://static:9", "http://q3:3", "http://q2:2"]
    );
    std::fs::remove_file(&b).expect("rm");
    assert!(sd.changed(), "a removed file is a change");
    sd.refresh();
    assert_eq!(*list.get(), vec!["http://static:9", "http://q3:3"]);
    assert_eq!(sd.metrics.endpoints.get(), 2);
}

#[test]
fn query_sd_rejects_bad_patterns() {
    let e = QuerySd::new(vec![], vec!["[".into()], &mut Registry::default()).expect_err("bad glob");
    assert!(e.to_string().contains("--query.sd-files"), "{e}");
}

#[tokio::test]
async fn query_sd_run_picks_up_a_rewrite_without_waiting_for_the_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("sd.yml");
    std::fs::write(&f, "- targets: ['a:1']\n").expect("write");
    let sd = Arc::new(
        QuerySd::new(
            vec![],
            vec![f.display().to_string()],
            &mut Registry::default(),
        )
        .expect("sd"),
    );
    let list = sd.urls();
    let stop = CancellationToken::new();
    let task = tokio::spawn(sd.clone().run(Duration::from_secs(3600), stop.clone()));
    std::fs::write(&f, "- targets: ['b:2', 'c:3']\n").expect("write");
    // Polls the shared list (no wall-time assertion: the loop ends as soon as it changes).
    while *list.get() != vec!["http://b:2".to_string(), "http://c:3".to_string()] {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    task.await.expect("join");
}

#[test]
fn alertmanager_specs_parse() {
    let p = |s: &str| AlertmanagerSpec::parse(s).expect(s);
    assert_eq!(
        p("http://am:9093/"),
        AlertmanagerSpec::Static("http://am:9093".into())
    );
    assert_eq!(
        p("am:9093"),
        AlertmanagerSpec::Static("http://am:9093".into())
    );
    assert_eq!(
        p("dns+localhost:9094"),
        AlertmanagerSpec::Dns {
            scheme: "http".into(),
            host: "localhost".into(),
            port: 9094,
            path: String::new()
        }
    );
    assert_eq!(
        p("dns+https://am.svc/prefix/"),
        AlertmanagerSpec::Dns {
            scheme: "https".into(),
            host: "am.svc".into(),
            port: ALERTMANAGER_PORT,
            path: "/prefix".into()
        }
    );
    assert_eq!(
        p("dnssrv+http://_web._tcp.am.svc"),
        AlertmanagerSpec::DnsSrv {
            scheme: "http".into(),
            name: "_web._tcp.am.svc".into(),
            port: None,
            path: String::new()
        }
    );
    assert_eq!(
        p("dnssrv+_web._tcp.am.svc:8080/x"),
        AlertmanagerSpec::DnsSrv {
            scheme: "http".into(),
            name: "_web._tcp.am.svc".into(),
            port: Some(8080),
            path: "/x".into()
        }
    );
    assert_eq!(
        p("dns+[::1]:9093").to_string(),
        "dns+http://::1:9093",
        "brackets stripped for the lookup"
    );
    for bad in [
        "dns+",
        "ftp://am:1",
        "dns+http://:9093",
        "dnssrv+http://x:y",
    ] {
        assert!(
            AlertmanagerSpec::parse(bad).is_err(),
            "{bad} must be rejected"
        );
    }
}

#[tokio::test]
async fn dns_resolves_localhost_keeping_port_and_path() {
    let got = AlertmanagerSpec::parse("dns+localhost:9094/am")
        .expect("parse")
        .resolve(None)
        .await
        .expect("localhost resolves");
    assert!(
        got.iter()
            .any(|u| u == "http://127.0.0.1:9094/am" || u == "http://[::1]:9094/am"),
        "{got:?}"
    );
}

/// The shared fake DNS server, answering `_am._tcp.test` with ports 9101 and 9102 while `answer`
/// is set.
async fn fake_srv_server(answer: Arc<AtomicBool>) -> SocketAddr {
    strata_runtime::discovery::testing::fake_srv_server("_am._tcp.test", vec![9101, 9102], answer)
        .await
        .expect("fake dns")
}

fn local(urls: &[String], port: u16, path: &str) -> bool {
    urls.iter().any(|u| {
        u == &format!("http://127.0.0.1:{port}{path}") || u == &format!("http://[::1]:{port}{path}")
    })
}

#[tokio::test]
async fn dnssrv_takes_ports_from_records_or_the_url() {
    let dns = fake_srv_server(Arc::new(AtomicBool::new(true))).await;
    let r = |s: &str| {
        let spec = AlertmanagerSpec::parse(s).expect("parse");
        async move { spec.resolve(Some(dns)).await }
    };
    let got = r("dnssrv+_am._tcp.test/api").await.expect("resolves");
    assert!(
        local(&got, 9101, "/api") && local(&got, 9102, "/api"),
        "{got:?}"
    );
    let got = r("dnssrv+http://_am._tcp.test:7777")
        .await
        .expect("resolves");
    assert!(local(&got, 7777, "") && !local(&got, 9101, ""), "{got:?}");
    let e = r("dnssrv+_am._tcp.nothing.test")
        .await
        .expect_err("nxdomain");
    assert!(e.to_string().contains("_am._tcp.nothing.test"), "{e}");
}

#[tokio::test]
async fn alertmanager_sd_keeps_previous_addresses_when_a_lookup_fails() {
    let answer = Arc::new(AtomicBool::new(true));
    let dns = fake_srv_server(answer.clone()).await;
    let mut registry = Registry::default();
    let sd = AlertmanagerSd::new(
        &["http://static:9093".into(), "dnssrv+_am._tcp.test".into()],
        Some(dns),
        &mut registry,
    )
    .expect("sd");
    assert!(sd.needs_dns());
    assert_eq!(
        *sd.urls().get(),
        vec!["http://static:9093"],
        "static at once"
    );
    sd.refresh().await;
    let first = sd.urls().get();
    assert!(
        local(&first, 9101, "") && first.contains(&"http://static:9093".to_string()),
        "{first:?}"
    );
    answer.store(false, Ordering::SeqCst);
    sd.refresh().await;
    assert_eq!(sd.urls().get(), first, "failed lookup keeps the old list");
    assert_eq!(sd.failures.get(), 1);
    let plain =
        AlertmanagerSd::new(&["http://a:1".into()], None, &mut Registry::default()).expect("sd");
    assert!(!plain.needs_dns());
}
