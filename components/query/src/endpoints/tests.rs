//! Endpoint parsing, discovery (DNS, SRV against a loopback server, file SD) and health.

use super::*;

#[test]
fn spec_forms() {
    let ok = [
        (
            "10.0.0.1:10901",
            EndpointSpec::Static("10.0.0.1:10901".into()),
        ),
        ("[::1]:10901", EndpointSpec::Static("[::1]:10901".into())),
        (
            "dns+store.svc:10901",
            EndpointSpec::Dns {
                host: "store.svc".into(),
                port: 10901,
            },
        ),
        (
            "dnssrv+_grpc._tcp.store.svc",
            EndpointSpec::DnsSrv {
                name: "_grpc._tcp.store.svc".into(),
                port: None,
            },
        ),
        (
            "dnssrv+_grpc._tcp.store.svc:9999",
            EndpointSpec::DnsSrv {
                name: "_grpc._tcp.store.svc".into(),
                port: Some(9999),
            },
        ),
    ];
    for (s, want) in ok {
        assert_eq!(EndpointSpec::parse(s).expect(s), want, "{s}");
    }
    for bad in [
        "store",
        "dns+store",
        "dnssrv+",
        "foo+bar:1",
        "dns+:80",
        "dnssrv+x:y",
    ] {
        assert!(EndpointSpec::parse(bad).is_err(), "{bad} must be rejected");
    }
}

#[tokio::test]
async fn dns_resolves_localhost_without_network() {
    let spec = EndpointSpec::parse("dns+localhost:10901").expect("parses");
    let got = spec.resolve().await.expect("localhost resolves");
    assert!(
        got.iter()
            .any(|a| a == "127.0.0.1:10901" || a == "[::1]:10901"),
        "{got:?}"
    );
}

#[tokio::test]
async fn dnssrv_takes_ports_from_records_or_the_spec() {
    let dns = strata_runtime::discovery::testing::fake_srv_server(
        "_grpc._tcp.store.test",
        vec![10901, 10902],
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
    )
    .await
    .expect("fake dns");
    let local = |addrs: &[String], port: u16| {
        addrs
            .iter()
            .any(|a| a == &format!("127.0.0.1:{port}") || a == &format!("[::1]:{port}"))
    };
    let spec = EndpointSpec::parse("dnssrv+_grpc._tcp.store.test").expect("parses");
    let got = spec.resolve_with(Some(dns)).await.expect("resolves");
    assert!(local(&got, 10901) && local(&got, 10902), "{got:?}");
    let spec = EndpointSpec::parse("dnssrv+_grpc._tcp.store.test:9999").expect("parses");
    let got = spec.resolve_with(Some(dns)).await.expect("resolves");
    assert!(local(&got, 9999) && !local(&got, 10901), "{got:?}");
    let spec = EndpointSpec::parse("dnssrv+_grpc._tcp.nothing.test").expect("parses");
    let e = spec.resolve_with(Some(dns)).await.expect_err("nxdomain");
    assert!(
        e.to_string().contains("dnssrv+_grpc._tcp.nothing.test"),
        "{e}"
    );
}

#[tokio::test]
async fn sd_file_reload_keeps_last_good_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sd.yaml");
    std::fs::write(&path, "- targets: ['127.0.0.1:1', '127.0.0.1:2']\n").expect("write");
    let set = EndpointSet::new(EndpointSetConfig {
        sd_files: vec![path.clone()],
        endpoints: vec!["127.0.0.1:3".into()],
        health_timeout: Duration::from_millis(500),
        ..Default::default()
    })
    .expect("config");
    set.refresh().await;
    let addrs = |s: &EndpointSet| {
        s.all()
            .iter()
            .map(|e| e.addr().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        addrs(&set),
        vec!["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    );
    // nothing listens there: all unhealthy, with the error kept
    assert!(set.healthy().is_empty());
    assert!(set.statuses().iter().all(|s| s.last_error.is_some()));
    std::fs::write(&path, "- targets: [broken").expect("write");
    set.refresh().await;
    assert_eq!(
        addrs(&set),
        vec!["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    );
    std::fs::write(&path, "[{\"targets\": [\"127.0.0.1:2\"]}]").expect("write");
    set.refresh().await;
    assert_eq!(addrs(&set), vec!["127.0.0.1:2", "127.0.0.1:3"]);
}

#[test]
fn bad_endpoint_fails_config() {
    let e = EndpointSet::new(EndpointSetConfig {
        endpoints: vec!["nope".into()],
        ..Default::default()
    })
    .expect_err("bad spec");
    assert!(e.to_string().contains("need host:port"), "{e}");
}
