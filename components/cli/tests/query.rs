//! `strata query` as a process: `--help` lists the Thanos flag names, bad flags exit 2 with a
//! clear message, the server becomes ready, answers Grafana's `1+1` health check over HTTP on
//! `--http-address`, and exits 0 on SIGTERM.

use std::process::{Command, Output};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use strata_e2e::{Process, free_port};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run strata")
}

#[test]
fn help_lists_the_thanos_flags() {
    let out = strata(&["query", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--endpoint ",
        "--endpoint.sd-files",
        "--query.replica-label",
        "--query.partial-response",
        "--no-query.partial-response",
        "--query.auto-downsampling",
        "--query.timeout",
        "--query.max-concurrent",
        "--query.lookback-delta",
        "--query.default-evaluation-interval",
        "--store.response-timeout",
        "--grpc-client-tls-secure",
        "--grpc-client-tls-cert",
        "--grpc-client-tls-key",
        "--grpc-client-tls-ca",
        "--http-address",
        "--log.level",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    for (args, needle) in [
        (&["query", "--query.timeout=soon"][..], "--query.timeout"),
        (
            &["query", "--query.max-concurrent=0"],
            "--query.max-concurrent",
        ),
        (&["query", "--http-address=nowhere"], "--http-address"),
        (
            &["query", "--grpc-client-tls-cert=/c.pem"],
            "--grpc-client-tls-key",
        ),
        (&["query", "--no-such-flag"], "--no-such-flag"),
    ] {
        let out = strata(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn a_taken_http_address_exits_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let out = strata(&["query", &format!("--http-address={addr}")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--http-address"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_api_on_the_http_address_and_stops_on_sigterm() {
    let http = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args([
        "query",
        &format!("--http-address=127.0.0.1:{http}"),
        "--endpoint=127.0.0.1:1",
        "--query.replica-label=replica",
    ]);
    let mut query = Process::spawn("strata-query", cmd).expect("spawn");
    let base = format!("http://127.0.0.1:{http}");
    query
        .wait_http_ok(&format!("{base}/-/ready"), Duration::from_secs(30))
        .await
        .expect("ready");

    let client = reqwest::Client::new();
    // Grafana's health check, as a form POST.
    let resp = client
        .post(format!("{base}/api/v1/query"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("query=1%2B1&time=1700000000")
        .send()
        .await
        .expect("query");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(
        v,
        json!({"status": "success", "data": {"resultType": "scalar", "result": [1700000000, "2"]}})
    );
    let v: Value = client
        .get(format!("{base}/api/v1/status/buildinfo"))
        .send()
        .await
        .expect("buildinfo")
        .json()
        .await
        .expect("json");
    assert_eq!(v["data"]["version"], json!(env!("CARGO_PKG_VERSION")));
    let resp = client
        .get(format!("{base}/api/v1/query?query=sum("))
        .send()
        .await
        .expect("bad query");
    assert_eq!(resp.status(), 400);
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);

    query.signal(Signal::SIGTERM).expect("signal");
    let status = query
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(0), "{}", query.log_tail());
}
