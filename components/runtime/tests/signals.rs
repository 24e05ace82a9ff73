//! SIGTERM and SIGINT fire the shutdown signal. A test binary of its own: it signals its own process.

use std::time::Duration;

use strata_runtime::Shutdown;

async fn signal_self(name: &str) {
    let status = tokio::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(std::process::id().to_string())
        .status()
        .await
        .expect("run kill");
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_then_sigint_fire_shutdown() {
    for name in ["TERM", "INT"] {
        let shutdown = Shutdown::on_signals().expect("install handlers");
        assert!(!shutdown.is_triggered());
        signal_self(name).await;
        tokio::time::timeout(Duration::from_secs(10), shutdown.cancelled())
            .await
            .unwrap_or_else(|_| panic!("SIG{name} did not trigger shutdown"));
    }
}
