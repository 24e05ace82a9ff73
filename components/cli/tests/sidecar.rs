//! `strata sidecar` as a process against a real Prometheus: it serves, reports readiness and metrics,
//! stops cleanly on SIGTERM, and refuses (exit 2) a Prometheus without external labels or bad flags.

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use strata_e2e::{Process, Prometheus, free_port};

fn sidecar_command(prometheus_url: &str, grpc: u16, http: u16) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args([
        "sidecar",
        &format!("--prometheus.url={prometheus_url}"),
        &format!("--grpc-address=127.0.0.1:{grpc}"),
        &format!("--http-address=127.0.0.1:{http}"),
        "--prometheus.ready_timeout=20s",
    ]);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_and_stops_on_sigterm() {
    let p = Prometheus::builder()
        .external_label("cluster", "eu")
        .start()
        .await
        .expect("start prometheus");
    let (grpc, http) = (free_port(), free_port());
    let mut sidecar =
        Process::spawn("strata-sidecar", sidecar_command(p.url(), grpc, http)).expect("spawn");
    sidecar
        .wait_http_ok(
            &format!("http://127.0.0.1:{http}/-/ready"),
            Duration::from_secs(60),
        )
        .await
        .expect("sidecar ready");
    let metrics = reqwest::get(format!("http://127.0.0.1:{http}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("strata_sidecar_prometheus_up 1"),
        "{metrics}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", grpc)).is_ok(),
        "gRPC port listens"
    );
    sidecar.signal(Signal::SIGTERM).expect("signal");
    let status = sidecar
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(0), "{}", sidecar.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_external_labels_exits_2_with_a_clear_message() {
    let p = Prometheus::builder()
        .start()
        .await
        .expect("start prometheus");
    let out = sidecar_command(p.url(), free_port(), free_port())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no external labels"), "{stderr}");
}

#[test]
fn bad_flags_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["sidecar", "--grpc-address=not-an-address"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "sidecar",
            "--prometheus.url=ftp://x",
            "--http-address=127.0.0.1:0",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ftp://x"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "sidecar",
            "--http-address=127.0.0.1:0",
            "--grpc-server-tls-cert=/nonexistent/tls.crt",
            "--grpc-server-tls-key=/nonexistent/tls.key",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/tls.crt"), "{stderr}");
}
