//! Leader election over a `coordination.k8s.io/v1` `Lease`, so that of several operator replicas
//! only one runs the controllers. The lease itself is held by the `kube-lease-manager` crate
//! (server-side apply with conflict detection, renewal before expiry, release on shutdown).
//!
//! A replica that loses the lease stops its controllers and [`run_as_leader`] returns
//! [`LeaderError::Lost`]: the process exits and Kubernetes restarts it as a follower. That is
//! simpler to reason about than a controller that pauses and resumes.

use std::future::Future;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use strata_runtime::Shutdown;
use tracing::{Instrument, info, info_span, warn};

/// How a replica takes part in leader election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElection {
    /// The `Lease`'s name.
    pub lease_name: String,
    /// The `Lease`'s namespace; `None`: the client's default (in a pod: the operator's own).
    pub namespace: Option<String>,
    /// This replica's name in `spec.holderIdentity` (the pod name in a cluster).
    pub identity: String,
    /// How long a lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// How long before expiry the holder renews; also the clock skew tolerated between replicas.
    pub renew_before: Duration,
}

impl LeaderElection {
    /// The chart's defaults: lease `strata-operator`, 15 s valid, renewed 5 s before expiry.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            lease_name: "strata-operator".into(),
            namespace: None,
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_before: Duration::from_secs(5),
        }
    }

    /// Whole seconds of duration and grace, checked: both at least 1 s, grace below duration.
    fn seconds(&self) -> Result<(u64, u64), LeaderError> {
        let duration = self.lease_duration.as_secs();
        let grace = self.renew_before.as_secs();
        if grace == 0 || duration <= grace {
            return Err(LeaderError::Durations {
                duration: self.lease_duration,
                renew_before: self.renew_before,
            });
        }
        Ok((duration, grace))
    }
}

/// A default identity: `$POD_NAME`, else `$HOSTNAME`, else `strata-operator`, with the process id.
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "strata-operator".into());
    format!("{host}-{}", std::process::id())
}

/// Why leading stopped.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The durations cannot work.
    #[error(
        "--leader-election.lease-duration ({duration:?}) must be longer than --leader-election.renew-before ({renew_before:?}), and both at least 1s"
    )]
    Durations {
        /// The lease duration given.
        duration: Duration,
        /// The renewal grace given.
        renew_before: Duration,
    },
    /// The `Lease` could not be read or created.
    #[error("lease {name}: {source}")]
    Lease {
        /// `namespace/name` of the lease.
        name: String,
        /// The lease manager's error.
        #[source]
        source: LeaseManagerError,
    },
    /// Another replica took the lease; the controllers were stopped.
    #[error(
        "lost the lease {0} to another replica; exiting so that this replica restarts as a follower"
    )]
    Lost(String),
}

/// `strata_operator_leader`: 1 while this replica holds the lease.
pub fn register_metrics(registry: &mut Registry) -> Gauge {
    let gauge = Gauge::default();
    registry.register(
        "strata_operator_leader",
        "1 while this replica holds the leader lease and runs the controllers",
        gauge.clone(),
    );
    gauge
}

/// Waits for the lease, then runs `work` until `shutdown` fires (then releases the lease and
/// returns `Ok`) or the lease is lost (then stops `work` and returns [`LeaderError::Lost`]).
///
/// `work` gets a future that resolves when it must stop.
pub async fn run_as_leader<W, F>(
    client: Client,
    election: &LeaderElection,
    shutdown: Shutdown,
    is_leader: Gauge,
    work: W,
) -> Result<(), LeaderError>
where
    W: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>) -> F,
    F: Future<Output = ()>,
{
    let (duration, grace) = election.seconds()?;
    let namespace = election
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let lease = format!("{namespace}/{}", election.lease_name);
    let span = info_span!("leader_election", %lease, identity = %election.identity);
    let manager = LeaseManagerBuilder::new(client, &election.lease_name)
        .with_namespace(&namespace)
        .with_identity(&election.identity)
        .with_field_manager(format!("strata-operator-{}", election.identity))
        .with_duration(duration)
        .with_grace(grace)
        .build()
        .instrument(span.clone())
        .await
        .map_err(|source| LeaderError::Lease {
            name: lease.clone(),
            source,
        })?;
    let (mut leading, task) = manager.watch().await;

    info!(parent: &span, "waiting for the lease");
    let acquired = tokio::select! {
        _ = shutdown.cancelled() => None,
        // Err: the manager task ended, which it does only on an error it already logged.
        ok = async { leading.wait_for(|l| *l).await.is_ok() } => Some(ok),
    };
    match acquired {
        None => {
            release(leading, task).await;
            return Ok(());
        }
        Some(false) => return Err(LeaderError::Lost(lease)),
        Some(true) => {}
    }
    info!(parent: &span, "acquired the lease; starting the controllers");
    is_leader.set(1);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop = Box::pin(async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|s| *s).await;
    });
    let work = work(stop);
    tokio::pin!(work);
    let mut lost = false;
    let mut lost_watch = leading.clone();
    tokio::select! {
        _ = &mut work => {}
        _ = shutdown.cancelled() => {
            let _ = stop_tx.send(true);
            (&mut work).await;
        }
        _ = async { lost_watch.wait_for(|l| !*l).await.is_ok() } => {
            lost = true;
            warn!(parent: &span, "lost the lease; stopping the controllers");
            let _ = stop_tx.send(true);
            (&mut work).await;
        }
    }
    is_leader.set(0);
    drop(lost_watch);
    release(leading, task).await;
    if lost {
        Err(LeaderError::Lost(lease))
    } else {
        Ok(())
    }
}

/// Closes the channel, which makes the manager's task release the lease (if held) and end.
async fn release<T>(
    leading: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<Result<T, LeaseManagerError>>,
) {
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(10), task).await {
        Ok(Ok(Ok(_))) => info!("released the lease"),
        Ok(Ok(Err(e))) => warn!(error = %e, "release the lease"),
        Ok(Err(e)) => warn!(error = %e, "lease task"),
        Err(_) => warn!("releasing the lease took over 10s; it expires by itself"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_checked_not_panicked_on() {
        let mut e = LeaderElection::new("a");
        assert_eq!(e.seconds().ok(), Some((15, 5)));
        e.renew_before = Duration::from_secs(15);
        assert!(matches!(e.seconds(), Err(LeaderError::Durations { .. })));
        e.renew_before = Duration::from_millis(300);
        assert!(matches!(e.seconds(), Err(LeaderError::Durations { .. })));
    }

    #[test]
    fn identity_is_unique_per_process() {
        assert!(default_identity().ends_with(&std::process::id().to_string()));
    }
}
