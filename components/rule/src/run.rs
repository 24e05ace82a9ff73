//! Wiring: [`RuleConfig`], the [`Manager`] of running groups (load, reload keeping alert state,
//! restore after restart) and [`run`], which starts storage, StoreAPI, shipping, the notifier,
//! the group loops and the HTTP server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;
use promql_parser::label::{MatchOp, Matcher};
use strata_promql::{Labels, Queryable};
use strata_runtime::{AdminServer, Readiness, Shutdown, admin_router};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::alerts::AlertOptions;
use crate::eval::{
    AfterFirst, EvalContext, GroupState, HttpQuerier, QueryBackend, RuleMetrics, RuleState, lock,
    now_ms, run_group,
};
use crate::notifier::{Alertmanagers, NotifierOptions};
use crate::rules::{self, RuleKind};
use crate::sd::{QuerySd, UrlList};
use crate::storage::{self, LocalStorage, StorageOptions};
use crate::{Error, Notify, Result, SampleSink};

/// Everything `strata rule` is configured with.
#[derive(Debug, Clone)]
pub struct RuleConfig {
    /// Rule file paths or globs (`--rule-file`).
    pub rule_files: Vec<String>,
    /// Query API base URLs (`--query`), tried in order.
    pub query_urls: Vec<String>,
    /// Timeout of one rule query.
    pub query_timeout: Duration,
    /// Interval of groups that set none (`--eval-interval`).
    pub eval_interval: Duration,
    /// Local TSDB directory (`--data-dir`).
    pub data_dir: PathBuf,
    /// External labels (`--label`).
    pub external_labels: Labels,
    /// URL the ruler is reached at, for alerts' generator URLs (`--alert.query-url`).
    pub external_url: String,
    /// Alertmanager base URLs (`--alertmanagers.url`).
    pub alertmanager_urls: Vec<String>,
    /// Timeout of one send to Alertmanager (`--alertmanagers.send-timeout`).
    pub alertmanager_timeout: Duration,
    /// Labels removed from sent alerts (`--alert.label-drop`).
    pub alert_label_drop: Vec<String>,
    /// How often firing alerts are re-sent (`--resend-delay`).
    pub resend_delay: Duration,
    /// How far back alert state is restored from (`--for-outage-tolerance`).
    pub for_outage_tolerance: Duration,
    /// Least time a restored alert waits before firing (`--for-grace-period`).
    pub for_grace_period: Duration,
    /// Local block length (`--tsdb.block-duration`).
    pub block_duration: Duration,
    /// Local retention (`--tsdb.retention`).
    pub retention: Duration,
    /// Bucket for shipping blocks, when configured.
    pub bucket: Option<strata_objstore::Bucket>,
    /// StoreAPI address (`--grpc-address`).
    pub grpc_address: SocketAddr,
    /// StoreAPI server options (TLS, compression).
    pub grpc_options: strata_storeapi::ServerOptions,
    /// HTTP address (`--http-address`).
    pub http_address: SocketAddr,
    /// File SD files or globs of query endpoints (`--query.sd-files`).
    pub query_sd_files: Vec<String>,
    /// How often those files are re-read at the latest (`--query.sd-interval`).
    pub query_sd_interval: Duration,
    /// How often `dns+`/`dnssrv+` Alertmanager URLs are resolved (`--alertmanagers.sd-dns-interval`).
    pub alertmanager_dns_interval: Duration,
    /// Remote-write endpoints (`--remote-write.url`, `--remote-write.config(-file)`). When any is
    /// set the ruler runs stateless: no local TSDB, StoreAPI or shipping, results are
    /// remote-written and alert state is restored through the query API.
    pub remote_write: Vec<crate::remote_write::EndpointConfig>,
}

struct Running {
    state: Arc<Mutex<GroupState>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The running rule groups: loads rule files, starts a loop per group, swaps groups on reload.
pub struct Manager {
    patterns: Vec<String>,
    default_interval: Duration,
    ctx: EvalContext,
    restore: Mutex<Option<RestoreOptions>>,
    running: Mutex<Vec<Running>>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("patterns", &self.patterns)
            .finish_non_exhaustive()
    }
}

/// Where and how far back alert state is restored from at startup.
#[derive(Clone)]
pub struct RestoreOptions {
    /// The storage holding `ALERTS_FOR_STATE` (the ruler's own TSDB).
    pub queryable: Arc<dyn Queryable>,
    /// `--for-outage-tolerance`.
    pub outage_tolerance: Duration,
    /// `--for-grace-period`.
    pub grace_period: Duration,
}

fn same_rule(a: &rules::Rule, b: &rules::Rule) -> bool {
    a.name() == b.name()
        && a.expr == b.expr
        && a.labels == b.labels
        && std::mem::discriminant(&a.kind) == std::mem::discriminant(&b.kind)
}

/// The new group's rules, carrying over the state of rules that are unchanged (same group,
/// name, expression and labels) so a reload does not reset pending or firing alerts.
fn carry_over(new: &mut GroupState, old: &GroupState) {
    let mut taken = vec![false; old.rules.len()];
    for r in new.rules.iter_mut() {
        let found = old
            .rules
            .iter()
            .enumerate()
            .find(|(i, o)| !taken[*i] && same_rule(&o.rule, &r.rule));
        let Some((i, o)) = found else { continue };
        taken[i] = true;
        let rule = r.rule.clone();
        let fresh = RuleState::new(rule.clone());
        *r = o.clone();
        r.rule = rule;
        if let (Some(a), Some(f)) = (r.alerting.as_mut(), fresh.alerting) {
            a.hold_ms = f.hold_ms;
            a.keep_firing_for_ms = f.keep_firing_for_ms;
            a.annotations = f.annotations;
        }
    }
}

impl Manager {
    /// A manager with no groups yet; [`Manager::reload`] loads them.
    pub fn new(
        patterns: Vec<String>,
        default_interval: Duration,
        ctx: EvalContext,
        restore: Option<RestoreOptions>,
    ) -> Arc<Self> {
        Arc::new(Self {
            patterns,
            default_interval,
            ctx,
            restore: Mutex::new(restore),
            running: Mutex::new(Vec::new()),
        })
    }

    /// The groups' states, in file and group order.
    pub fn groups(&self) -> Vec<Arc<Mutex<GroupState>>> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|r| r.state.clone())
            .collect()
    }

    /// (Re)loads the rule files. Every file is parsed first; on any error the running groups
    /// stay as they are, the reload metric says failed and the error is returned.
    pub fn reload(&self) -> Result<()> {
        let m = &self.ctx.metrics;
        let specs = match rules::load_all(&self.patterns) {
            Ok(s) => s,
            Err(e) => {
                m.reload_successful.set(0);
                tracing::error!(error = %e, "loading rule files failed; keeping the old rules");
                return Err(e);
            }
        };
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let old: HashMap<String, Arc<Mutex<GroupState>>> = running
            .iter()
            .map(|r| (lock(&r.state).key(), r.state.clone()))
            .collect();
        for r in running.iter() {
            r.stop.cancel();
        }
        let restore = self
            .restore
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut next = Vec::new();
        for spec in specs {
            let mut g = GroupState::new(spec, self.default_interval);
            if let Some(o) = old.get(&g.key()) {
                carry_over(&mut g, &lock(o));
            }
            let state = Arc::new(Mutex::new(g));
            let stop = CancellationToken::new();
            let after_first = restore.clone().map(|r| restore_hook(state.clone(), r));
            let task = tokio::spawn(run_group(
                state.clone(),
                self.ctx.clone(),
                stop.clone(),
                after_first,
            ));
            next.push(Running { state, stop, task });
        }
        for r in running.drain(..) {
            r.task.abort();
        }
        *running = next;
        m.reload_successful.set(1);
        m.reload_success_time.set(now_ms() as f64 / 1000.0);
        tracing::info!(groups = running.len(), "rule files loaded");
        Ok(())
    }

    /// Stops every group loop.
    pub fn stop(&self) {
        for r in self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            r.stop.cancel();
        }
    }
}

/// After a group's first evaluation, restores its pending alerts' `active_at` from the
/// `ALERTS_FOR_STATE` series stored within the outage tolerance.
fn restore_hook(state: Arc<Mutex<GroupState>>, opts: RestoreOptions) -> AfterFirst {
    Box::new(move || {
        Box::pin(async move {
            let (ts, names): (i64, Vec<String>) = {
                let g = lock(&state);
                (
                    g.last_eval_ms.unwrap_or_else(now_ms),
                    g.rules
                        .iter()
                        .filter_map(|r| match &r.rule.kind {
                            RuleKind::Alerting { alert, .. } => Some(alert.clone()),
                            RuleKind::Recording { .. } => None,
                        })
                        .collect(),
                )
            };
            let tolerance = i64::try_from(opts.outage_tolerance.as_millis()).unwrap_or(i64::MAX);
            for name in names {
                let matchers = [
                    Matcher::new(MatchOp::Equal, "__name__", "ALERTS_FOR_STATE"),
                    Matcher::new(MatchOp::Equal, "alertname", &name),
                ];
                // Samples before this evaluation only: this run's own are not the old state.
                let series = match opts
                    .queryable
                    .select(&matchers, ts.saturating_sub(tolerance), ts - 1)
                    .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(alert = %name, error = %e, "restoring alert state failed");
                        continue;
                    }
                };
                let mut last: HashMap<Labels, (i64, f64)> = HashMap::new();
                for s in series {
                    let Some(&(t, v)) = s.samples.iter().rev().find(|(_, v)| v.is_finite()) else {
                        continue;
                    };
                    let mut l = s.labels.clone();
                    l.remove("__name__");
                    last.insert(l, (t, v));
                }
                let mut g = lock(&state);
                for r in g.rules.iter_mut() {
                    if let Some(a) = r.alerting.as_mut().filter(|a| a.name == name) {
                        a.restore(ts, &last, opts.grace_period);
                    }
                }
            }
        })
    })
}

/// Starts the rule groups over an already chosen backend, sink, notifier and restore source:
/// registers the rule metrics in `registry`, loads the rule files (an error here is returned)
/// and starts a loop per group. Returns the [`Manager`] and the rule API's routes
/// (`/api/v1/rules`, `/api/v1/alerts`, `POST /-/reload`) to serve on any HTTP address; stop the
/// groups with [`Manager::stop`].
pub fn start_rules(
    config: &RuleConfig,
    backend: Arc<dyn QueryBackend>,
    sink: Arc<dyn SampleSink>,
    notify: Arc<dyn Notify>,
    restore: Option<Arc<dyn Queryable>>,
    registry: &mut Registry,
) -> Result<(Arc<Manager>, axum::Router)> {
    let metrics = RuleMetrics::new(registry);
    let ctx = EvalContext {
        backend,
        sink,
        notify,
        alert_opts: AlertOptions {
            external_labels: config.external_labels.clone(),
            external_url: config.external_url.clone(),
            resend_delay: config.resend_delay,
        },
        metrics,
    };
    let restore = restore.map(|queryable| RestoreOptions {
        queryable,
        outage_tolerance: config.for_outage_tolerance,
        grace_period: config.for_grace_period,
    });
    let manager = Manager::new(
        config.rule_files.clone(),
        config.eval_interval,
        ctx,
        restore,
    );
    manager.reload()?;
    let router = crate::api::router(manager.clone());
    Ok((manager, router))
}

/// Reloads `manager`'s rule files on every SIGHUP until `shutdown`.
pub fn reload_on_sighup(manager: Arc<Manager>, shutdown: Shutdown) -> JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload with POST /-/reload");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hup.recv() => {
                    if got.is_none() { return; }
                    tracing::info!("SIGHUP: reloading rule files");
                    let _ = manager.reload();
                }
            }
        }
    })
}

/// Serves rules over an already chosen sink, notifier and restore source until `shutdown`:
/// loads the rule files (an error here fails startup), reloads on SIGHUP and `POST /-/reload`,
/// and serves the HTTP API with the admin routes. `registry` must hold every other metric.
#[allow(clippy::too_many_arguments)]
pub async fn serve_rules(
    config: &RuleConfig,
    backend: Arc<dyn QueryBackend>,
    sink: Arc<dyn SampleSink>,
    notify: Arc<dyn Notify>,
    restore: Option<Arc<dyn Queryable>>,
    mut registry: Registry,
    readiness: Readiness,
    shutdown: Shutdown,
) -> Result<()> {
    let (manager, rule_api) = start_rules(config, backend, sink, notify, restore, &mut registry)?;
    let admin = AdminServer::bind(config.http_address)
        .await
        .map_err(|e| Error::Config(e.to_string()))?;
    let router = admin_router(Arc::new(registry), readiness.clone()).merge(rule_api);
    let http = tokio::spawn(admin.serve(router, shutdown.clone()));
    let hup = reload_on_sighup(manager.clone(), shutdown.clone());
    readiness.set(true);
    shutdown.cancelled().await;
    readiness.set(false);
    manager.stop();
    hup.abort();
    match http.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Serve {
            what: "http",
            detail: e.to_string(),
        }),
        Err(e) => Err(Error::Serve {
            what: "http",
            detail: e.to_string(),
        }),
    }
}

/// The HTTP query backend over `--query` and `--query.sd-files`, the URL list discovery keeps
/// current, and the token that stops the task re-reading the SD files.
fn query_backend(
    config: &RuleConfig,
    registry: &mut Registry,
) -> Result<(Arc<HttpQuerier>, UrlList, CancellationToken)> {
    if config.query_urls.is_empty() && config.query_sd_files.is_empty() {
        return Err(Error::Config(
            "at least one --query URL or --query.sd-files file is needed".into(),
        ));
    }
    let sd = Arc::new(QuerySd::new(
        config.query_urls.clone(),
        config.query_sd_files.clone(),
        registry,
    )?);
    let urls = sd.urls();
    let backend = Arc::new(HttpQuerier::with_urls(urls.clone(), config.query_timeout)?);
    let stop = CancellationToken::new();
    tokio::spawn(sd.run(config.query_sd_interval, stop.clone()));
    Ok((backend, urls, stop))
}

/// Runs the ruler until `shutdown`: local storage (WAL + blocks), its StoreAPI server, block
/// cutting and shipping, the Alertmanager client, the group loops and the HTTP server.
pub async fn run(config: RuleConfig, shutdown: Shutdown) -> Result<()> {
    if !config.remote_write.is_empty() {
        return run_stateless(config, shutdown).await;
    }
    let mut registry = Registry::default();
    let readiness = Readiness::new();
    let storage = LocalStorage::open(
        StorageOptions {
            dir: config.data_dir.clone(),
            external_labels: config.external_labels.clone(),
            block_duration_ms: i64::try_from(config.block_duration.as_millis()).unwrap_or(i64::MAX),
            retention_ms: i64::try_from(config.retention.as_millis()).unwrap_or(i64::MAX),
        },
        &mut registry,
    )
    .await?;
    let notify = Arc::new(Alertmanagers::start(
        NotifierOptions {
            urls: config.alertmanager_urls.clone(),
            timeout: config.alertmanager_timeout,
            queue_capacity: 10_000,
            label_drop: config.alert_label_drop.clone(),
            dns_interval: config.alertmanager_dns_interval,
            dns_server: None,
        },
        &mut registry,
    )?);
    let (backend, _, query_sd_stop) = query_backend(&config, &mut registry)?;
    let grpc = {
        let (storage, sd) = (storage.clone(), shutdown.clone());
        let (addr, opts) = (config.grpc_address, config.grpc_options.clone());
        tokio::spawn(async move {
            storage::serve(
                storage,
                strata_storeapi::Listen::Addr(addr),
                opts,
                async move { sd.cancelled().await },
            )
            .await
        })
    };
    let background = {
        let (storage, sd, bucket) = (storage.clone(), shutdown.clone(), config.bucket.clone());
        tokio::spawn(storage::run_background(
            storage,
            bucket,
            &mut registry,
            async move { sd.cancelled().await },
        ))
    };
    // Alert state comes back from the ALERTS_FOR_STATE series in the local storage.
    let restore: Option<Arc<dyn Queryable>> = Some(storage.clone());
    let served = serve_rules(
        &config,
        backend,
        storage.clone(),
        notify,
        restore,
        registry,
        readiness,
        shutdown.clone(),
    )
    .await;
    shutdown.trigger();
    query_sd_stop.cancel();
    for (what, task) in [("storeapi", grpc), ("background", background)] {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(what, error = %e, "ruler task failed"),
            Err(e) => tracing::error!(what, error = %e, "ruler task panicked"),
        }
    }
    served
}

/// Runs the ruler in stateless mode until `shutdown`: results are remote-written (queued in a
/// WAL under `<data-dir>/remote-write`, see [`RemoteWrite`](crate::remote_write::RemoteWrite)),
/// alert state is restored from `ALERTS_FOR_STATE` read through the `--query` APIs, and no TSDB
/// is kept locally.
pub async fn run_stateless(config: RuleConfig, shutdown: Shutdown) -> Result<()> {
    let mut registry = Registry::default();
    let readiness = Readiness::new();
    if config.bucket.is_some() {
        tracing::warn!("stateless mode (remote write): the bucket is not used");
    }
    let notify = Arc::new(Alertmanagers::start(
        NotifierOptions {
            urls: config.alertmanager_urls.clone(),
            timeout: config.alertmanager_timeout,
            queue_capacity: 10_000,
            label_drop: config.alert_label_drop.clone(),
            dns_interval: config.alertmanager_dns_interval,
            dns_server: None,
        },
        &mut registry,
    )?);
    let (backend, urls, query_sd_stop) = query_backend(&config, &mut registry)?;
    let restore: Arc<dyn Queryable> = Arc::new(crate::query_restore::QueryRestore::new(
        urls,
        config.external_labels.clone(),
        config.query_timeout,
    )?);
    // The senders outlive the rule loops, so the last evaluations' samples are still sent.
    let senders_stop = CancellationToken::new();
    let sink = Arc::new(crate::remote_write::RemoteWrite::start(
        config.remote_write.clone(),
        config.external_labels.clone(),
        Some(&config.data_dir.join("remote-write")),
        &mut registry,
        senders_stop.clone(),
    )?);
    tracing::info!(
        endpoints = config.remote_write.len(),
        "stateless mode: rule results are remote-written"
    );
    let served = serve_rules(
        &config,
        backend,
        sink.clone(),
        notify,
        Some(restore),
        registry,
        readiness,
        shutdown.clone(),
    )
    .await;
    shutdown.trigger();
    query_sd_stop.cancel();
    senders_stop.cancel();
    sink.join().await;
    served
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::parse_rules;

    #[test]
    fn reload_carries_alert_state_of_unchanged_rules_only() {
        let spec = |expr: &str| {
            let y = format!(
                "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: {expr}\n    for: 5m\n    annotations: {{s: x}}\n  - alert: B\n    expr: up\n"
            );
            parse_rules("f", &y).expect("parse").remove(0)
        };
        let mut old = GroupState::new(spec("up == 0"), Duration::from_secs(60));
        for r in old.rules.iter_mut() {
            r.last_error = Some("kept".into());
        }
        let mut new = GroupState::new(spec("up == 0"), Duration::from_secs(60));
        carry_over(&mut new, &old);
        assert_eq!(new.rules[0].last_error.as_deref(), Some("kept"));
        let mut changed = GroupState::new(spec("up == 1"), Duration::from_secs(60));
        carry_over(&mut changed, &old);
        assert_eq!(
            changed.rules[0].last_error, None,
            "changed expr starts fresh"
        );
        assert_eq!(changed.rules[1].last_error.as_deref(), Some("kept"));
    }
}
