//! Graceful shutdown: a token cancelled by SIGTERM/SIGINT (or by code), and a deadline for the drain.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// A cheap, cloneable shutdown signal. Every long-running task holds a clone and stops when it fires.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal that fires only when [`Shutdown::trigger`] is called.
    pub fn new() -> Self {
        Self::default()
    }

    /// A signal that also fires on SIGTERM or SIGINT. Must be called inside a Tokio runtime.
    pub fn on_signals() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let shutdown = Self::new();
        let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = trigger.cancelled() => return,
            };
            tracing::info!(signal = name, "received signal, shutting down");
            trigger.trigger();
        });
        Ok(shutdown)
    }

    /// Fires the signal; idempotent.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when the signal fires.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }
}

/// Runs `work` (which must watch `shutdown` itself) and, once `shutdown` fires, gives it `deadline` to
/// finish. Returns the work's own output, or [`Error::ShutdownDeadline`] if it overran.
pub async fn run_until_shutdown<F, T>(work: F, shutdown: &Shutdown, deadline: Duration) -> Result<T>
where
    F: Future<Output = T>,
{
    tokio::pin!(work);
    tokio::select! {
        out = &mut work => Ok(out),
        _ = shutdown.cancelled() => {
            match tokio::time::timeout(deadline, &mut work).await {
                Ok(out) => Ok(out),
                Err(_) => Err(Error::ShutdownDeadline(deadline)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_that_drains_in_time_returns_its_output() {
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        let work = async move {
            s.cancelled().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            7
        };
        shutdown.trigger();
        let out = run_until_shutdown(work, &shutdown, Duration::from_secs(5)).await;
        assert_eq!(out.unwrap(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_ignores_shutdown_hits_the_deadline() {
        let shutdown = Shutdown::new();
        shutdown.trigger();
        let work = std::future::pending::<()>();
        let err = run_until_shutdown(work, &shutdown, Duration::from_secs(3))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ShutdownDeadline(d) if d == Duration::from_secs(3)));
    }
}
