//! Rule evaluation: the [`QueryBackend`]s (a Prometheus-compatible HTTP API, or the embedded
//! engine over any `Queryable`), one group's evaluation (rules in order, labels, `limit`, stale
//! markers, alert state) and the group loop (aligned ticks, missed iterations counted).

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use strata_promql::{Engine, Labels, QueryValue, Queryable, STALE_NAN_BITS};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::alerts::{AlertOptions, AlertingState};
use crate::rules::{PartialResponseStrategy, Rule, RuleGroup, RuleKind};
use crate::sd::UrlList;
use crate::{Error, Notify, OutSample, Result, SampleSink};

/// An instant query's result as rules use it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryOutput {
    /// The vector's elements (a scalar is one element without labels).
    pub samples: Vec<(Labels, f64)>,
    /// Warnings the querier returned (partial responses among them).
    pub warnings: Vec<String>,
}

/// Where rule expressions are evaluated.
#[async_trait::async_trait]
pub trait QueryBackend: Send + Sync {
    /// Evaluates `expr` at `ts_ms`. `partial_response` allows a result some stores did not
    /// contribute to (it then carries warnings). Strings and range vectors are errors.
    async fn instant(&self, expr: &str, ts_ms: i64, partial_response: bool) -> Result<QueryOutput>;
}

/// Evaluates against one or more Prometheus-compatible query APIs (`--query`, `--query.sd-files`),
/// trying the next on a connection error or a 5xx answer. The URLs come from a shared
/// [`UrlList`] read at every query, so discovery can change them while rules run.
#[derive(Debug, Clone)]
pub struct HttpQuerier {
    urls: UrlList,
    client: reqwest::Client,
}

impl HttpQuerier {
    /// A querier over fixed `urls` (base URLs such as `http://query:10902`), with a per-request
    /// timeout.
    pub fn new(urls: Vec<String>, timeout: Duration) -> Result<Self> {
        if urls.is_empty() {
            return Err(Error::Config("at least one --query URL is needed".into()));
        }
        Self::with_urls(UrlList::new(urls), timeout)
    }

    /// A querier over a list that discovery keeps up to date (it may be empty for a while:
    /// queries then fail and the rules report it).
    pub fn with_urls(urls: UrlList, timeout: Duration) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Config(format!("http client: {e}")))?;
        Ok(Self { urls, client })
    }
}

#[derive(serde::Deserialize)]
struct ApiAnswer {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(serde::Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

fn parse_value(v: &serde_json::Value) -> Result<f64> {
    let s = v
        .get(1)
        .and_then(|s| s.as_str())
        .ok_or_else(|| Error::Query("malformed sample value in query answer".into()))?;
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s
            .parse()
            .map_err(|_| Error::Query(format!("bad sample value {s:?} in query answer"))),
    }
}

fn parse_answer(body: &[u8]) -> Result<QueryOutput> {
    let a: ApiAnswer = serde_json::from_slice(body)
        .map_err(|e| Error::Query(format!("decode query answer: {e}")))?;
    if a.status != "success" {
        return Err(Error::Query(
            a.error.unwrap_or_else(|| "query failed".into()),
        ));
    }
    let data = a
        .data
        .ok_or_else(|| Error::Query("query answer without data".into()))?;
    let samples = match data.result_type.as_str() {
        "scalar" => vec![(Labels::default(), parse_value(&data.result)?)],
        "vector" => {
            let items = data.result.as_array().cloned().unwrap_or_default();
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                let labels =
                    it.get("metric")
                        .and_then(|m| m.as_object())
                        .map(|m| {
                            Labels::new(m.iter().map(|(k, v)| {
                                (k.clone(), v.as_str().unwrap_or_default().to_string())
                            }))
                        })
                        .unwrap_or_default();
                let Some(value) = it.get("value") else {
                    return Err(Error::Query(
                        "native histogram results cannot be recorded yet".into(),
                    ));
                };
                out.push((labels, parse_value(value)?));
            }
            out
        }
        other => {
            return Err(Error::Query(format!(
                "rule result is not a vector or scalar: {other}"
            )));
        }
    };
    Ok(QueryOutput {
        samples,
        warnings: a.warnings,
    })
}

#[async_trait::async_trait]
impl QueryBackend for HttpQuerier {
    async fn instant(&self, expr: &str, ts_ms: i64, partial_response: bool) -> Result<QueryOutput> {
        let time = format!("{:.3}", ts_ms as f64 / 1000.0);
        let urls = self.urls.get();
        let mut last_err = String::from("no query endpoints (--query, --query.sd-files) known yet");
        for base in urls.iter() {
            let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
            let form = [
                ("query", expr),
                ("time", time.as_str()),
                ("dedup", "true"),
                (
                    "partial_response",
                    if partial_response { "true" } else { "false" },
                ),
            ];
            let resp = match self.client.post(&url).form(&form).send().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%url, error = %e, "query endpoint unreachable, trying the next");
                    last_err = format!("{url}: {e}");
                    continue;
                }
            };
            let status = resp.status();
            let body = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    last_err = format!("{url}: read answer: {e}");
                    continue;
                }
            };
            if status.is_server_error() {
                last_err = format!("{url}: {status}: {}", String::from_utf8_lossy(&body));
                tracing::warn!(%url, %status, "query endpoint failed, trying the next");
                continue;
            }
            return parse_answer(&body);
        }
        Err(Error::Query(last_err))
    }
}

/// Evaluates with the in-process PromQL engine over any `Queryable` (for `strata local`).
#[derive(Clone)]
pub struct EmbeddedEngine {
    engine: Engine,
    queryable: Arc<dyn Queryable>,
}

impl std::fmt::Debug for EmbeddedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedEngine").finish_non_exhaustive()
    }
}

impl EmbeddedEngine {
    /// An engine with default settings over `queryable`.
    pub fn new(engine: Engine, queryable: Arc<dyn Queryable>) -> Self {
        Self { engine, queryable }
    }
}

#[async_trait::async_trait]
impl QueryBackend for EmbeddedEngine {
    async fn instant(&self, expr: &str, ts_ms: i64, _partial: bool) -> Result<QueryOutput> {
        let r = self
            .engine
            .instant_query(self.queryable.as_ref(), expr, ts_ms)
            .await
            .map_err(|e| Error::Query(e.to_string()))?;
        let warnings = r.annotations.into_iter().map(|a| a.message).collect();
        let samples = match r.value {
            QueryValue::Scalar(_, v) => vec![(Labels::default(), v)],
            QueryValue::Vector(v) => {
                if v.iter().any(|s| s.h.is_some()) {
                    return Err(Error::Query(
                        "native histogram results cannot be recorded yet".into(),
                    ));
                }
                v.into_iter().map(|s| (s.labels, s.f)).collect()
            }
            QueryValue::String(_) => {
                return Err(Error::Query(
                    "rule result is not a vector or scalar: string".into(),
                ));
            }
            QueryValue::Matrix(_) => {
                return Err(Error::Query(
                    "rule result is not a vector or scalar: matrix".into(),
                ));
            }
        };
        Ok(QueryOutput { samples, warnings })
    }
}

/// A rule's health as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not evaluated yet.
    Unknown,
    /// The last evaluation succeeded.
    Ok,
    /// The last evaluation failed.
    Err,
}

impl Health {
    /// `unknown`, `ok` or `err`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Ok => "ok",
            Health::Err => "err",
        }
    }
}

/// One rule's definition and evaluation state.
#[derive(Debug, Clone)]
pub struct RuleState {
    /// The rule as parsed.
    pub rule: Rule,
    /// Health of the last evaluation.
    pub health: Health,
    /// The last evaluation's error.
    pub last_error: Option<String>,
    /// When it was last evaluated, ms.
    pub last_eval_ms: Option<i64>,
    /// How long the last evaluation took.
    pub last_duration: Duration,
    /// Series written by the last successful evaluation (they get stale markers when gone).
    pub series: HashSet<Labels>,
    /// Alert state, for alerting rules.
    pub alerting: Option<AlertingState>,
}

impl RuleState {
    /// A rule that has not been evaluated yet.
    pub fn new(rule: Rule) -> Self {
        let alerting = match &rule.kind {
            RuleKind::Alerting {
                alert,
                for_,
                keep_firing_for,
                annotations,
            } => Some(AlertingState::new(
                alert,
                &rule.expr,
                *for_,
                *keep_firing_for,
                rule.labels.clone(),
                annotations.clone(),
            )),
            RuleKind::Recording { .. } => None,
        };
        Self {
            rule,
            health: Health::Unknown,
            last_error: None,
            last_eval_ms: None,
            last_duration: Duration::ZERO,
            series: HashSet::new(),
            alerting,
        }
    }
}

/// A group's definition and the state of its rules.
#[derive(Debug, Clone)]
pub struct GroupState {
    /// The group as parsed.
    pub spec: RuleGroup,
    /// The effective interval (the group's, else the global one).
    pub interval: Duration,
    /// The rules, in order.
    pub rules: Vec<RuleState>,
    /// When the group was last evaluated, ms.
    pub last_eval_ms: Option<i64>,
    /// How long the last evaluation took.
    pub last_duration: Duration,
}

impl GroupState {
    /// A fresh group; `default_interval` applies when the group names none.
    pub fn new(spec: RuleGroup, default_interval: Duration) -> Self {
        let interval = spec.interval.unwrap_or(default_interval);
        let rules = spec.rules.iter().cloned().map(RuleState::new).collect();
        Self {
            spec,
            interval,
            rules,
            last_eval_ms: None,
            last_duration: Duration::ZERO,
        }
    }

    /// `file;name`, the key of the group in metrics (as Prometheus's `rule_group` label).
    pub fn key(&self) -> String {
        format!("{};{}", self.spec.file, self.spec.name)
    }
}

/// The label of the per-group metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    /// `file;group`.
    pub rule_group: String,
}

/// The ruler's evaluation metrics, one series per group.
#[derive(Debug, Clone)]
pub struct RuleMetrics {
    /// Duration of group evaluations.
    pub evaluation_duration: Family<GroupLabel, Histogram>,
    /// Rule evaluations.
    pub evaluations: Family<GroupLabel, Counter>,
    /// Failed rule evaluations.
    pub evaluation_failures: Family<GroupLabel, Counter>,
    /// Group evaluations done.
    pub iterations: Family<GroupLabel, Counter>,
    /// Group evaluations skipped because the previous one overran its interval.
    pub iterations_missed: Family<GroupLabel, Counter>,
    /// Duration of the last group evaluation, seconds.
    pub last_duration: Family<GroupLabel, Gauge<f64, AtomicU64>>,
    /// Time of the last group evaluation, Unix seconds.
    pub last_evaluation: Family<GroupLabel, Gauge<f64, AtomicU64>>,
    /// Samples the last group evaluation produced.
    pub last_samples: Family<GroupLabel, Gauge>,
    /// Rules per group.
    pub rules: Family<GroupLabel, Gauge>,
    /// 1 when the last reload of the rule files succeeded.
    pub reload_successful: Gauge,
    /// Time of the last successful reload, Unix seconds.
    pub reload_success_time: Gauge<f64, AtomicU64>,
}

impl RuleMetrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            evaluation_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 4.0, 10))
            }),
            evaluations: Family::default(),
            evaluation_failures: Family::default(),
            iterations: Family::default(),
            iterations_missed: Family::default(),
            last_duration: Family::default(),
            last_evaluation: Family::default(),
            last_samples: Family::default(),
            rules: Family::default(),
            reload_successful: Gauge::default(),
            reload_success_time: Gauge::default(),
        };
        let r = registry;
        r.register_with_unit(
            "strata_rule_evaluation_duration",
            "Duration of rule group evaluations.",
            prometheus_client::registry::Unit::Seconds,
            m.evaluation_duration.clone(),
        );
        r.register(
            "strata_rule_evaluations",
            "Rule evaluations.",
            m.evaluations.clone(),
        );
        r.register(
            "strata_rule_evaluation_failures",
            "Rule evaluations that failed.",
            m.evaluation_failures.clone(),
        );
        r.register(
            "strata_rule_group_iterations",
            "Group evaluations done.",
            m.iterations.clone(),
        );
        r.register(
            "strata_rule_group_iterations_missed",
            "Group evaluations skipped because an evaluation took longer than the interval.",
            m.iterations_missed.clone(),
        );
        r.register_with_unit(
            "strata_rule_group_last_duration",
            "Duration of the last group evaluation.",
            prometheus_client::registry::Unit::Seconds,
            m.last_duration.clone(),
        );
        r.register_with_unit(
            "strata_rule_group_last_evaluation_timestamp",
            "Time of the last group evaluation (Unix).",
            prometheus_client::registry::Unit::Seconds,
            m.last_evaluation.clone(),
        );
        r.register(
            "strata_rule_group_last_evaluation_samples",
            "Samples the last group evaluation produced.",
            m.last_samples.clone(),
        );
        r.register(
            "strata_rule_group_rules",
            "Rules in the group.",
            m.rules.clone(),
        );
        r.register(
            "strata_rule_config_last_reload_successful",
            "1 when the last reload of the rule files succeeded.",
            m.reload_successful.clone(),
        );
        r.register_with_unit(
            "strata_rule_config_last_reload_success_timestamp",
            "Time of the last successful reload (Unix).",
            prometheus_client::registry::Unit::Seconds,
            m.reload_success_time.clone(),
        );
        m
    }
}

/// What every group evaluation needs.
#[derive(Clone)]
pub struct EvalContext {
    /// Where expressions are evaluated.
    pub backend: Arc<dyn QueryBackend>,
    /// Where samples go.
    pub sink: Arc<dyn SampleSink>,
    /// Where alerts go.
    pub notify: Arc<dyn Notify>,
    /// External labels, URL and resend delay.
    pub alert_opts: AlertOptions,
    /// Metrics.
    pub metrics: RuleMetrics,
}

/// The current time, Unix ms.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn stale(labels: Labels, t: i64) -> OutSample {
    OutSample {
        labels,
        t,
        v: f64::from_bits(STALE_NAN_BITS),
    }
}

/// The samples of a recording rule's result: `__name__` set, rule labels applied, `limit` held.
fn record_samples(
    record: &str,
    rule_labels: &std::collections::BTreeMap<String, String>,
    result: Vec<(Labels, f64)>,
    ts: i64,
    limit: usize,
) -> std::result::Result<Vec<OutSample>, String> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(result.len());
    for (mut labels, v) in result {
        labels.set("__name__", record);
        for (k, val) in rule_labels {
            labels.set(k, val);
        }
        if !seen.insert(labels.clone()) {
            return Err(
                "vector contains metrics with the same labelset after applying rule labels".into(),
            );
        }
        out.push(OutSample { labels, t: ts, v });
    }
    if limit > 0 && out.len() > limit {
        return Err(format!(
            "exceeded limit of {limit} with {} series",
            out.len()
        ));
    }
    Ok(out)
}

/// Evaluates every rule of `group` once at `ts` (ms), writes samples and sends due alerts.
/// As in Prometheus, the group's `query_offset` is subtracted for the queries and for the
/// timestamps of the samples written (recorded series, `ALERTS`, stale markers); alert state
/// (`for`, `activeAt`) still runs on `ts`. Returns the number of samples written.
pub async fn eval_group(group: &Mutex<GroupState>, ctx: &EvalContext, ts: i64) -> usize {
    let (key, n, offset_ms, limit, partial, interval) = {
        let g = lock(group);
        (
            g.key(),
            g.rules.len(),
            g.spec
                .query_offset
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(0))
                .unwrap_or(0),
            g.spec.limit,
            g.spec.partial_response_strategy == PartialResponseStrategy::Warn,
            g.interval,
        )
    };
    let label = GroupLabel {
        rule_group: key.clone(),
    };
    let span = tracing::info_span!("rule_group_eval", group = %key, ts);
    let started = Instant::now();
    let mut total = 0usize;
    async {
        for i in 0..n {
            let rule_started = Instant::now();
            let expr = match lock(group).rules.get(i) {
                Some(r) => r.rule.expr.clone(),
                None => break,
            };
            ctx.metrics.evaluations.get_or_create(&label).inc();
            let query_ts = ts - offset_ms;
            let result = ctx.backend.instant(&expr, query_ts, partial).await;
            let (samples, alerts) = {
                let mut g = lock(group);
                let Some(r) = g.rules.get_mut(i) else { break };
                let produced = match result {
                    Err(e) => Err(e.to_string()),
                    Ok(out) => {
                        for w in &out.warnings {
                            tracing::warn!(rule = r.rule.name(), warning = %w, "rule query warning");
                        }
                        match (&r.rule.kind, r.alerting.as_mut()) {
                            (RuleKind::Recording { record }, _) => {
                                record_samples(record, &r.rule.labels, out.samples, query_ts, limit)
                            }
                            (RuleKind::Alerting { .. }, Some(a)) => a
                                .eval(ts, &out.samples, limit, &ctx.alert_opts)
                                .map(|mut v| {
                                    for s in v.iter_mut() {
                                        s.t = query_ts;
                                    }
                                    v
                                })
                                .map_err(|e| e.to_string()),
                            (RuleKind::Alerting { .. }, None) => Ok(Vec::new()),
                        }
                    }
                };
                r.last_eval_ms = Some(ts);
                let mut samples = Vec::new();
                match produced {
                    Err(e) => {
                        tracing::warn!(rule = r.rule.name(), error = %e, "rule evaluation failed");
                        ctx.metrics.evaluation_failures.get_or_create(&label).inc();
                        r.health = Health::Err;
                        r.last_error = Some(e);
                    }
                    Ok(out) => {
                        r.health = Health::Ok;
                        r.last_error = None;
                        let current: HashSet<Labels> =
                            out.iter().map(|s| s.labels.clone()).collect();
                        let mut gone: Vec<Labels> =
                            r.series.difference(&current).cloned().collect();
                        gone.sort();
                        samples = out;
                        samples.extend(gone.into_iter().map(|l| stale(l, query_ts)));
                        r.series = current;
                    }
                }
                let alerts = r
                    .alerting
                    .as_mut()
                    .map(|a| a.due(ts, interval, &ctx.alert_opts))
                    .unwrap_or_default();
                r.last_duration = rule_started.elapsed();
                (samples, alerts)
            };
            if !samples.is_empty() {
                if let Err(e) = ctx.sink.append(&samples).await {
                    tracing::warn!(error = %e, "writing rule results failed");
                    ctx.metrics.evaluation_failures.get_or_create(&label).inc();
                    if let Some(r) = lock(group).rules.get_mut(i) {
                        r.health = Health::Err;
                        r.last_error = Some(format!("store results: {e}"));
                    }
                } else {
                    total += samples.len();
                }
            }
            if !alerts.is_empty() {
                ctx.notify.send(alerts);
            }
        }
    }
    .instrument(span)
    .await;
    let took = started.elapsed();
    {
        let mut g = lock(group);
        g.last_eval_ms = Some(ts);
        g.last_duration = took;
    }
    let m = &ctx.metrics;
    m.evaluation_duration
        .get_or_create(&label)
        .observe(took.as_secs_f64());
    m.iterations.get_or_create(&label).inc();
    m.last_duration
        .get_or_create(&label)
        .set(took.as_secs_f64());
    m.last_evaluation
        .get_or_create(&label)
        .set(ts as f64 / 1000.0);
    m.last_samples
        .get_or_create(&label)
        .set(i64::try_from(total).unwrap_or(i64::MAX));
    total
}

/// Locks a group's state; a poisoned lock (a panic elsewhere) still yields the data.
pub fn lock(group: &Mutex<GroupState>) -> std::sync::MutexGuard<'_, GroupState> {
    group.lock().unwrap_or_else(|p| p.into_inner())
}

/// The group's offset within its interval, from a hash of its file and name, so groups with
/// the same interval spread over it (as Prometheus spreads them).
pub fn group_offset_ms(key: &str, interval_ms: i64) -> i64 {
    if interval_ms <= 0 {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % interval_ms as u64) as i64
}

/// The first evaluation time at or after `now`: `k * interval + offset`.
pub fn next_aligned(now: i64, interval_ms: i64, offset_ms: i64) -> i64 {
    if interval_ms <= 0 {
        return now;
    }
    let base = (now - offset_ms).div_euclid(interval_ms) * interval_ms + offset_ms;
    if base < now { base + interval_ms } else { base }
}

/// Called after a group's first evaluation (to restore alert state from storage).
pub type AfterFirst = Box<dyn FnOnce() -> futures::future::BoxFuture<'static, ()> + Send>;

/// Runs `group` every interval until `stop` is cancelled. Missed ticks (an evaluation longer
/// than the interval) are counted, not made up.
pub async fn run_group(
    group: Arc<Mutex<GroupState>>,
    ctx: EvalContext,
    stop: CancellationToken,
    after_first: Option<AfterFirst>,
) {
    let (key, interval_ms) = {
        let g = lock(&group);
        (
            g.key(),
            i64::try_from(g.interval.as_millis())
                .unwrap_or(i64::MAX)
                .max(1),
        )
    };
    let label = GroupLabel {
        rule_group: key.clone(),
    };
    ctx.metrics
        .rules
        .get_or_create(&label)
        .set(i64::try_from(lock(&group).rules.len()).unwrap_or(0));
    let offset = group_offset_ms(&key, interval_ms);
    let mut next = next_aligned(now_ms(), interval_ms, offset);
    let mut after_first = after_first;
    loop {
        let wait = u64::try_from((next - now_ms()).max(0)).unwrap_or(0);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
        }
        eval_group(&group, &ctx, next).await;
        if let Some(f) = after_first.take() {
            f().await;
        }
        next += interval_ms;
        let now = now_ms();
        if now > next {
            let missed = (now - next) / interval_ms + 1;
            ctx.metrics
                .iterations_missed
                .get_or_create(&label)
                .inc_by(u64::try_from(missed).unwrap_or(0));
            tracing::warn!(group = %key, missed, "rule group evaluation took longer than its interval");
            next += missed * interval_ms;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use strata_promql::{MemQueryable, is_stale_nan};

    use super::*;
    use crate::rules::parse_rules;
    use crate::{Alert, Notify};

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[derive(Default)]
    struct FakeSink(Mutex<Vec<OutSample>>);

    #[async_trait::async_trait]
    impl SampleSink for FakeSink {
        async fn append(&self, samples: &[OutSample]) -> Result<()> {
            self.0.lock().expect("lock").extend_from_slice(samples);
            Ok(())
        }
    }

    #[derive(Default)]
    struct FakeNotify(Mutex<Vec<Alert>>);

    impl Notify for FakeNotify {
        fn send(&self, alerts: Vec<Alert>) {
            self.0.lock().expect("lock").extend(alerts);
        }
    }

    type Answer = std::result::Result<Vec<(Labels, f64)>, String>;

    /// Answers from a script: expr → result, or an error.
    #[derive(Default)]
    struct FakeBackend(Mutex<BTreeMap<String, Answer>>);

    impl FakeBackend {
        fn set(&self, expr: &str, r: Answer) {
            self.0.lock().expect("lock").insert(expr.into(), r);
        }
    }

    #[async_trait::async_trait]
    impl QueryBackend for FakeBackend {
        async fn instant(&self, expr: &str, _ts: i64, _p: bool) -> Result<QueryOutput> {
            match self.0.lock().expect("lock").get(expr).cloned() {
                Some(Ok(samples)) => Ok(QueryOutput {
                    samples,
                    warnings: Vec::new(),
                }),
                Some(Err(e)) => Err(Error::Query(e)),
                None => Ok(QueryOutput::default()),
            }
        }
    }

    struct Fixture {
        backend: Arc<FakeBackend>,
        sink: Arc<FakeSink>,
        notify: Arc<FakeNotify>,
        ctx: EvalContext,
        registry: Registry,
    }

    fn fixture() -> Fixture {
        let backend = Arc::new(FakeBackend::default());
        let sink = Arc::new(FakeSink::default());
        let notify = Arc::new(FakeNotify::default());
        let mut registry = Registry::default();
        let ctx = EvalContext {
            backend: backend.clone(),
            sink: sink.clone(),
            notify: notify.clone(),
            alert_opts: AlertOptions {
                external_labels: l(&[("replica", "a")]),
                external_url: "http://ruler".into(),
                resend_delay: Duration::from_secs(60),
            },
            metrics: RuleMetrics::new(&mut registry),
        };
        Fixture {
            backend,
            sink,
            notify,
            ctx,
            registry,
        }
    }

    fn group(yaml: &str) -> Mutex<GroupState> {
        let mut g = parse_rules("f.yml", yaml).expect("rules parse");
        Mutex::new(GroupState::new(g.remove(0), Duration::from_secs(60)))
    }

    #[tokio::test]
    async fn recording_rule_writes_labelled_samples_and_stale_markers() {
        let f = fixture();
        let g = group(
            "groups:\n- name: g\n  rules:\n  - record: job:x\n    expr: x\n    labels: {team: t, job: over}\n",
        );
        f.backend.set(
            "x",
            Ok(vec![
                (l(&[("__name__", "x"), ("instance", "a")]), 1.0),
                (l(&[("__name__", "x"), ("instance", "b")]), 2.0),
            ]),
        );
        assert_eq!(eval_group(&g, &f.ctx, 1000).await, 2);
        f.backend.set(
            "x",
            Ok(vec![(l(&[("__name__", "x"), ("instance", "a")]), 3.0)]),
        );
        eval_group(&g, &f.ctx, 2000).await;
        eval_group(&g, &f.ctx, 3000).await;
        let got = f.sink.0.lock().expect("lock").clone();
        let first = &got[0];
        assert_eq!(
            first.labels,
            l(&[
                ("__name__", "job:x"),
                ("instance", "a"),
                ("job", "over"),
                ("team", "t")
            ])
        );
        let stale: Vec<_> = got.iter().filter(|s| is_stale_nan(s.v)).collect();
        assert_eq!(stale.len(), 1, "one stale marker, once: {got:?}");
        assert_eq!(stale[0].t, 2000);
        assert_eq!(stale[0].labels.get("instance"), Some("b"));
        assert_eq!(lock(&g).rules[0].health, Health::Ok);
    }

    #[tokio::test]
    async fn query_offset_shifts_queries_and_written_samples_but_not_alert_timing() {
        let f = fixture();
        let g = group(
            "groups:\n- name: g\n  query_offset: 10s\n  rules:\n  - record: r\n    expr: x\n  - alert: A\n    expr: y\n    for: 1m\n",
        );
        f.backend.set("x", Ok(vec![(l(&[("i", "a")]), 1.0)]));
        f.backend.set("y", Ok(vec![(l(&[("i", "a")]), 1.0)]));
        eval_group(&g, &f.ctx, 100_000).await;
        eval_group(&g, &f.ctx, 160_000).await;
        f.backend.set("x", Ok(vec![]));
        eval_group(&g, &f.ctx, 220_000).await;
        let got = f.sink.0.lock().expect("lock").clone();
        let times = |name: &str| -> Vec<i64> {
            got.iter()
                .filter(|s| s.labels.get("__name__") == Some(name))
                .map(|s| s.t)
                .collect()
        };
        assert_eq!(times("r"), vec![90_000, 150_000, 210_000], "{got:?}");
        assert!(is_stale_nan(
            got.iter()
                .rfind(|s| s.labels.get("__name__") == Some("r"))
                .map_or(0.0, |s| s.v)
        ));
        assert!(
            times("ALERTS")
                .iter()
                .all(|t| [90_000, 150_000, 210_000].contains(t))
        );
        // `for: 1m` counts from the evaluation time: firing at the second evaluation.
        let firing: Vec<_> = got
            .iter()
            .filter(|s| s.labels.get("alertstate") == Some("firing") && !is_stale_nan(s.v))
            .map(|s| s.t)
            .collect();
        assert_eq!(firing, vec![150_000, 210_000], "{got:?}");
        assert!(
            !f.notify.0.lock().expect("lock").is_empty(),
            "the firing alert is sent"
        );
    }

    #[tokio::test]
    async fn limit_fails_the_rule_and_stores_nothing() {
        let f = fixture();
        let g = group("groups:\n- name: g\n  limit: 1\n  rules:\n  - record: r\n    expr: x\n");
        f.backend.set(
            "x",
            Ok(vec![(l(&[("i", "a")]), 1.0), (l(&[("i", "b")]), 2.0)]),
        );
        assert_eq!(eval_group(&g, &f.ctx, 1000).await, 0);
        assert!(f.sink.0.lock().expect("lock").is_empty());
        let st = lock(&g);
        assert_eq!(st.rules[0].health, Health::Err);
        assert_eq!(
            st.rules[0].last_error.as_deref(),
            Some("exceeded limit of 1 with 2 series")
        );
    }

    #[tokio::test]
    async fn failing_query_marks_rule_unhealthy_then_recovers() {
        let f = fixture();
        let g = group(
            "groups:\n- name: g\n  rules:\n  - record: r\n    expr: x\n  - record: s\n    expr: y\n",
        );
        f.backend.set("x", Err("querier down".into()));
        f.backend.set("y", Ok(vec![(l(&[]), 1.0)]));
        eval_group(&g, &f.ctx, 1000).await;
        {
            let st = lock(&g);
            assert_eq!(st.rules[0].health, Health::Err);
            assert!(
                st.rules[0]
                    .last_error
                    .as_deref()
                    .unwrap_or("")
                    .contains("querier down")
            );
            assert_eq!(st.rules[1].health, Health::Ok, "later rules still run");
        }
        f.backend.set("x", Ok(vec![(l(&[]), 1.0)]));
        eval_group(&g, &f.ctx, 2000).await;
        assert_eq!(lock(&g).rules[0].health, Health::Ok);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &f.registry).expect("encode");
        assert!(
            text.contains("strata_rule_evaluation_failures_total{rule_group=\"f.yml;g\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn alerting_rule_writes_alerts_series_and_notifies() {
        let f = fixture();
        let g =
            group("groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    for: 1m\n");
        f.backend.set(
            "up == 0",
            Ok(vec![(l(&[("__name__", "up"), ("job", "j")]), 0.0)]),
        );
        eval_group(&g, &f.ctx, 0).await;
        assert!(
            f.notify.0.lock().expect("lock").is_empty(),
            "pending not sent"
        );
        eval_group(&g, &f.ctx, 60_000).await;
        let sent = f.notify.0.lock().expect("lock").clone();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].labels.get("replica"), Some("a"));
        f.backend.set("up == 0", Ok(vec![]));
        eval_group(&g, &f.ctx, 120_000).await;
        let samples = f.sink.0.lock().expect("lock").clone();
        let firing_stale = samples.iter().any(|s| {
            s.t == 120_000 && is_stale_nan(s.v) && s.labels.get("alertstate") == Some("firing")
        });
        assert!(
            firing_stale,
            "ALERTS{{alertstate=firing}} goes stale: {samples:?}"
        );
        assert_eq!(f.notify.0.lock().expect("lock").len(), 2, "resolved sent");
    }

    #[tokio::test]
    async fn embedded_engine_evaluates_over_a_queryable() {
        let mut q = MemQueryable::new();
        q.add(l(&[("__name__", "m"), ("a", "1")]), &[(0, 2.0)]);
        q.add(l(&[("__name__", "m"), ("a", "2")]), &[(0, 3.0)]);
        let e = EmbeddedEngine::new(Engine::default(), Arc::new(q));
        let out = e.instant("sum(m)", 1000, false).await.expect("query");
        assert_eq!(out.samples, vec![(l(&[]), 5.0)]);
        let out = e.instant("1 + 1", 1000, false).await.expect("query");
        assert_eq!(
            out.samples,
            vec![(l(&[]), 2.0)],
            "scalar becomes one sample"
        );
        assert!(
            e.instant("m[1m]", 1000, false).await.is_err(),
            "matrix is an error"
        );
        assert!(
            e.instant("\"s\"", 1000, false).await.is_err(),
            "string is an error"
        );
    }

    #[test]
    fn parses_http_answers() {
        let v = parse_answer(
            br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"b"},"value":[1,"2.5"]}]},"warnings":["w"]}"#,
        )
        .expect("parse");
        assert_eq!(v.samples, vec![(l(&[("a", "b")]), 2.5)]);
        assert_eq!(v.warnings, vec!["w".to_string()]);
        let s = parse_answer(
            br#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#,
        )
        .expect("parse");
        assert_eq!(s.samples, vec![(l(&[]), f64::INFINITY)]);
        assert!(
            parse_answer(br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#)
                .is_err()
        );
        assert!(parse_answer(br#"{"status":"error","error":"bad"}"#).is_err());
        assert!(parse_answer(b"not json").is_err());
    }

    #[test]
    fn alignment_spreads_groups_and_counts_from_offset() {
        assert_eq!(next_aligned(1000, 60_000, 5000), 5000);
        assert_eq!(next_aligned(5000, 60_000, 5000), 5000);
        assert_eq!(next_aligned(5001, 60_000, 5000), 65_000);
        let a = group_offset_ms("f;a", 60_000);
        assert!((0..60_000).contains(&a));
    }
}
