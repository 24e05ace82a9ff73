//! The fan-out [`StoreSource`]: each request's [`FanoutView`] asks every healthy endpoint whose
//! time range and external labels can match (`thanos.Store/Series`, `LabelNames`, `LabelValues`),
//! concurrently and each within a timeout, merges what they return, and de-duplicates replicas.
//! A failing store is a warning under partial response and an error naming it otherwise.
//!
//! Unlike Thanos, a configured endpoint that failed its last health check is not silently left
//! out: it is not called, but counts as a failed store (warning or error) for every request its
//! last advertised range and labels could match (all requests, if it was never reached).
//!
//! Choices that follow Thanos: stores are
//! pruned by time range and by external label sets (a matcher on an external label name must hold
//! for its value in some label set); replica labels are removed from results when dedup is on;
//! a store's own warnings become warnings (partial response) or errors (not). Replica dedup is
//! done here, not pushed to stores (`without_replica_labels` is not sent).
//!
//! NOT DONE:
//! - no per-request series/sample limit and no bound on a store's answer size beyond the gRPC
//!   message size of the client options (default: unlimited, as Thanos's client);
//! - store hints (`hints` Any fields), `shard_info` and projections are neither sent nor read;
//! - `label_values_matching` of a replica label with dedup on still returns the replicas' values.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use promql_parser::label::Matcher;
use strata_promql::{Labels, Queryable, QueryableError, SelectHints, Series};
use strata_storeapi::pb::thanos::{
    self as pb, LabelNamesRequest, LabelValuesRequest, MetricMetadata as PbMetricMetadata,
    MetricMetadataRequest, PartialResponseStrategy, SeriesRequest, metric_metadata_response,
    series_response,
};
use strata_storeapi::{ClientOptions, Clients};
use tonic::Status;
use tracing::Instrument;

use crate::convert::{AggrChoice, DecodeError, decode_series, labels_from_pb, matchers_to_pb};
use crate::endpoints::{Endpoint, EndpointInfo, EndpointSet};
use crate::{MetricMetadata, QueryOptions, StoreSource, StoreStatus, StoreView, dedup};

/// Settings of the fan-out.
#[derive(Debug, Clone, Default)]
pub struct FanoutConfig {
    /// `--query.replica-label`: labels that tell HA replicas apart.
    pub replica_labels: Vec<String>,
    /// `--store.response-timeout`: how long one store may take for one call (zero: no limit).
    pub store_response_timeout: Duration,
}

/// A [`StoreSource`] over an [`EndpointSet`].
#[derive(Debug, Clone)]
pub struct FanoutSource {
    endpoints: EndpointSet,
    cfg: Arc<FanoutConfig>,
}

impl FanoutSource {
    /// A source reading `endpoints` with `cfg`.
    pub fn new(endpoints: EndpointSet, cfg: FanoutConfig) -> Self {
        Self {
            endpoints,
            cfg: Arc::new(cfg),
        }
    }

    /// The endpoint set.
    pub fn endpoints(&self) -> &EndpointSet {
        &self.endpoints
    }

    /// A concrete view (what [`StoreSource::view`] returns, without the trait object).
    pub fn fanout_view(&self, opts: &QueryOptions) -> FanoutView {
        let (stores, unhealthy) = self
            .endpoints
            .all()
            .into_iter()
            .filter(|e| store_selected(e.addr(), &e.info(), &opts.store_matchers))
            .partition(|e| e.info().healthy);
        FanoutView {
            stores,
            unhealthy,
            client: self.endpoints.client_options().clone(),
            cfg: self.cfg.clone(),
            opts: opts.clone(),
            warnings: Mutex::new(Vec::new()),
        }
    }
}

impl StoreSource for FanoutSource {
    fn view(&self, opts: &QueryOptions) -> Arc<dyn StoreView> {
        Arc::new(self.fanout_view(opts))
    }

    fn stores(&self) -> Vec<StoreStatus> {
        self.endpoints.statuses()
    }
}

/// One request's view of the stores: the endpoints healthy when it was made are asked; the
/// configured ones that were not count as failed stores (a warning under partial response,
/// else an error), so a store that is down is never silently missing from an answer.
#[derive(Debug)]
pub struct FanoutView {
    stores: Vec<Arc<Endpoint>>,
    unhealthy: Vec<Arc<Endpoint>>,
    client: ClientOptions,
    cfg: Arc<FanoutConfig>,
    opts: QueryOptions,
    warnings: Mutex<Vec<String>>,
}

/// The `max_resolution_window` sent to stores: the request's `max_source_resolution`, or with
/// auto-downsampling a fifth of the query step (as Thanos picks it).
pub fn max_resolution_window(opts: &QueryOptions, hints: &SelectHints) -> i64 {
    if opts.auto_downsampling {
        let step = if opts.step_ms > 0 {
            opts.step_ms
        } else {
            hints.step_ms
        };
        (step / 5).max(0)
    } else {
        opts.max_source_resolution_ms.max(0)
    }
}

/// Whether a store may hold series matching `matchers` in `[min_t, max_t]`: its time range
/// overlaps, and some external label set agrees with every matcher on its label names.
pub fn store_matches(info: &EndpointInfo, matchers: &[Matcher], min_t: i64, max_t: i64) -> bool {
    if info.min_time > max_t || info.max_time < min_t {
        return false;
    }
    if info.label_sets.is_empty() {
        return true;
    }
    info.label_sets.iter().any(|set| {
        matchers.iter().all(|m| {
            set.iter()
                .find(|l| l.name == m.name)
                .is_none_or(|l| m.is_match(&l.value))
        })
    })
}

/// Whether a store passes the request's `storeMatch[]` selectors: one set must hold for some
/// external label set of the store, with `__address__` set to its address (a store not reached
/// yet has only `__address__`). No selectors: every store.
pub fn store_selected(addr: &str, info: &EndpointInfo, selectors: &[Vec<Matcher>]) -> bool {
    if selectors.is_empty() {
        return true;
    }
    let value_of = |set: Option<&Vec<pb::Label>>, name: &str| -> String {
        if name == "__address__" {
            return addr.to_string();
        }
        set.and_then(|s| s.iter().find(|l| l.name == name))
            .map(|l| l.value.clone())
            .unwrap_or_default()
    };
    let sets: Vec<Option<&Vec<pb::Label>>> = if info.label_sets.is_empty() {
        vec![None]
    } else {
        info.label_sets.iter().map(Some).collect()
    };
    selectors.iter().any(|sel| {
        sets.iter()
            .any(|set| sel.iter().all(|m| m.is_match(&value_of(*set, &m.name))))
    })
}

/// Go's gRPC error text: `rpc error: code = Unavailable desc = …`.
fn status_text(s: &Status) -> String {
    format!("rpc error: code = {:?} desc = {}", s.code(), s.message())
}

impl FanoutView {
    /// A view over `stores` (tests; normally made by [`FanoutSource`]).
    pub fn new(
        stores: Vec<Arc<Endpoint>>,
        client: ClientOptions,
        cfg: FanoutConfig,
        opts: QueryOptions,
    ) -> Self {
        Self {
            stores,
            unhealthy: Vec::new(),
            client,
            cfg: Arc::new(cfg),
            opts,
            warnings: Mutex::new(Vec::new()),
        }
    }

    fn warn(&self, w: String) {
        if let Ok(mut ws) = self.warnings.lock()
            && !ws.contains(&w)
        {
            ws.push(w);
        }
    }

    fn strategy(&self) -> (bool, i32) {
        let s = if self.opts.partial_response {
            PartialResponseStrategy::Warn
        } else {
            PartialResponseStrategy::Abort
        };
        (!self.opts.partial_response, s as i32)
    }

    fn dedup_on(&self) -> bool {
        self.opts.dedup && !self.replica_labels().is_empty()
    }

    /// The request's `replicaLabels[]`, else the configured replica labels.
    fn replica_labels(&self) -> &[String] {
        if self.opts.replica_labels.is_empty() {
            &self.cfg.replica_labels
        } else {
            &self.opts.replica_labels
        }
    }

    /// Calls `call` on every store that may match, concurrently, each within the store timeout.
    /// Returns the successful answers; failures become warnings or the error.
    async fn fan_out<T, F, Fut>(
        &self,
        rpc: &'static str,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
        call: F,
    ) -> Result<Vec<T>, QueryableError>
    where
        F: Fn(Clients) -> Fut,
        Fut: Future<Output = Result<(T, Vec<String>), Status>>,
    {
        self.fan_out_where(
            rpc,
            |info| store_matches(info, matchers, min_t, max_t),
            call,
        )
        .await
    }

    /// As [`fan_out`](Self::fan_out), to the stores whose Info satisfies `wanted`.
    async fn fan_out_where<T, W, F, Fut>(
        &self,
        rpc: &'static str,
        wanted: W,
        call: F,
    ) -> Result<Vec<T>, QueryableError>
    where
        W: Fn(&EndpointInfo) -> bool,
        F: Fn(Clients) -> Fut,
        Fut: Future<Output = Result<(T, Vec<String>), Status>>,
    {
        for e in &self.unhealthy {
            let info = e.info();
            // Never reached: nothing is known of its range or labels, so it may hold anything.
            if info.last_check_ms != 0 && !wanted(&info) {
                continue;
            }
            let why = info
                .last_error
                .unwrap_or_else(|| "not checked yet".to_owned());
            let msg = format!("store {}: unhealthy: {why}", e.addr());
            tracing::warn!(store = %e.addr(), rpc, error = %why, "store skipped: unhealthy");
            if self.opts.partial_response {
                self.warn(msg);
            } else {
                return Err(QueryableError::Storage(msg));
            }
        }
        let timeout = self.cfg.store_response_timeout;
        let calls = self
            .stores
            .iter()
            .filter(|e| wanted(&e.info()))
            .map(|e| {
                let call = &call;
                let fut = async move {
                    let clients = e.clients(&self.client).await?;
                    call(clients).await.map_err(|s| status_text(&s))
                };
                let span = tracing::debug_span!("store", store = %e.addr(), rpc);
                async move {
                    let r = if timeout.is_zero() {
                        fut.await
                    } else {
                        tokio::time::timeout(timeout, fut).await.unwrap_or_else(|_| {
                            Err(format!(
                                "rpc error: code = DeadlineExceeded desc = no answer within {timeout:?}"
                            ))
                        })
                    };
                    (e.addr().to_owned(), r)
                }
                .instrument(span)
            });
        // Answers as they come: without partial response the first failure ends the request
        // (dropping, so cancelling, the calls still running).
        let mut pending: futures::stream::FuturesUnordered<_> = calls
            .enumerate()
            .map(|(i, f)| async move { (i, f.await) })
            .collect();
        let mut out = Vec::new();
        while let Some((i, (addr, r))) = pending.next().await {
            match r {
                Ok((v, warnings)) => {
                    for w in warnings {
                        if self.opts.partial_response {
                            self.warn(format!("store {addr}: {w}"));
                        } else {
                            return Err(QueryableError::Storage(format!("store {addr}: {w}")));
                        }
                    }
                    out.push((i, v));
                }
                Err(e) => {
                    tracing::warn!(store = %addr, rpc, error = %e, "store call failed");
                    if self.opts.partial_response {
                        self.warn(format!("store {addr}: {e}"));
                    } else {
                        return Err(QueryableError::Storage(format!("store {addr}: {e}")));
                    }
                }
            }
        }
        // In store order, so that merging is deterministic.
        out.sort_by_key(|(i, _)| *i);
        Ok(out.into_iter().map(|(_, v)| v).collect())
    }

    /// One `Series` call to every matching store, each answer's series mapped by `map` as they
    /// arrive; `chunks` is the aggregate to read from downsampled data, `None` asks for labels only.
    async fn series_raw<T, M>(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
        hints: &SelectHints,
        chunks: Option<AggrChoice>,
        map: M,
    ) -> Result<Vec<Vec<T>>, QueryableError>
    where
        M: Fn(pb::Series) -> Result<T, DecodeError> + Clone,
    {
        let (disabled, strategy) = self.strategy();
        let req = SeriesRequest {
            min_time: min_t,
            max_time: max_t,
            matchers: matchers_to_pb(matchers),
            max_resolution_window: max_resolution_window(&self.opts, hints),
            aggregates: chunks.unwrap_or(AggrChoice::Avg).aggregates(),
            partial_response_disabled: disabled,
            partial_response_strategy: strategy,
            skip_chunks: chunks.is_none(),
            step: hints.step_ms,
            range: hints.range_ms,
            query_hints: Some(pb::QueryHints {
                step_millis: hints.step_ms,
                func: hints.func.clone().map(|name| pb::Func { name }),
                range: (hints.range_ms > 0).then_some(pb::Range {
                    millis: hints.range_ms,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        // Each series is mapped (decoded) as it arrives, while the store sends the next ones.
        let per_store = self
            .fan_out("Series", matchers, min_t, max_t, |mut c| {
                let (req, map) = (req.clone(), map.clone());
                async move {
                    let mut stream = c.store.series(req).await?.into_inner();
                    let mut mapped: Result<Vec<T>, DecodeError> = Ok(Vec::new());
                    let mut warnings = Vec::new();
                    let mut take = |s: pb::Series| {
                        if let Ok(out) = &mut mapped {
                            match map(s) {
                                Ok(t) => out.push(t),
                                Err(e) => mapped = Err(e),
                            }
                        }
                    };
                    while let Some(msg) = stream.message().await? {
                        match msg.result {
                            Some(series_response::Result::Series(s)) => take(s),
                            Some(series_response::Result::Batch(b)) => {
                                b.series.into_iter().for_each(&mut take)
                            }
                            Some(series_response::Result::Warning(w)) => warnings.push(w),
                            Some(series_response::Result::Hints(_)) | None => {}
                        }
                    }
                    Ok((mapped, warnings))
                }
            })
            .await?;
        per_store
            .into_iter()
            .map(|r| r.map_err(|e| QueryableError::Storage(e.to_string())))
            .collect()
    }

    fn strip(&self, labels: Labels) -> Labels {
        if self.dedup_on() {
            labels.drop(self.replica_labels())
        } else {
            labels
        }
    }
}

/// Merges series with equal labels from several stores; a timestamp present in several is kept
/// once (the first store's sample).
pub fn merge_same_labels(mut series: Vec<Series>) -> Vec<Series> {
    // One store's answer is already sorted and distinct.
    if series.windows(2).all(|w| w[0].labels < w[1].labels) {
        return series;
    }
    // Stable: copies of one series stay in arrival order, the first wins a shared timestamp.
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    let mut out: Vec<Series> = Vec::with_capacity(series.len());
    for s in series {
        match out.last_mut() {
            Some(acc) if acc.labels == s.labels => {
                acc.samples = merge_points(std::mem::take(&mut acc.samples), s.samples);
                acc.histograms = merge_points(std::mem::take(&mut acc.histograms), s.histograms);
                // A timestamp may not be both a float and a histogram: floats win.
                let floats: BTreeSet<i64> = acc.samples.iter().map(|(t, _)| *t).collect();
                acc.histograms.retain(|(t, _)| !floats.contains(t));
            }
            _ => out.push(s),
        }
    }
    out
}

fn merge_points<V>(a: Vec<(i64, V)>, b: Vec<(i64, V)>) -> Vec<(i64, V)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut a = a.into_iter().peekable();
    let mut b = b.into_iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => {
                if x.0 <= y.0 {
                    if x.0 == y.0 {
                        b.next();
                    }
                    out.extend(a.next());
                } else {
                    out.extend(b.next());
                }
            }
            (Some(_), None) => out.extend(a.next()),
            (None, Some(_)) => out.extend(b.next()),
            (None, None) => break,
        }
    }
    out
}

#[async_trait]
impl Queryable for FanoutView {
    async fn select(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<Series>, QueryableError> {
        self.select_with_hints(matchers, min_t, max_t, &SelectHints::default())
            .await
    }

    #[tracing::instrument(skip_all, fields(min_t, max_t, func = ?hints.func, stores = self.stores.len()))]
    async fn select_with_hints(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
        hints: &SelectHints,
    ) -> Result<Vec<Series>, QueryableError> {
        let aggr = AggrChoice::for_func(hints.func.as_deref());
        let decode = move |s| decode_series(s, aggr, min_t, max_t);
        let per_store = self
            .series_raw(matchers, min_t, max_t, hints, Some(aggr), decode)
            .await?;
        let merged = merge_same_labels(per_store.into_iter().flatten().collect());
        if self.dedup_on() {
            Ok(dedup::dedup(
                merged,
                self.replica_labels(),
                hints.reads_counter(),
            ))
        } else {
            Ok(merged)
        }
    }

    async fn label_names(&self, min_t: i64, max_t: i64) -> Result<Vec<String>, QueryableError> {
        self.label_names_matching(&[], min_t, max_t).await
    }

    async fn label_values(
        &self,
        name: &str,
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<String>, QueryableError> {
        self.label_values_matching(name, &[], min_t, max_t).await
    }
}

#[async_trait]
impl StoreView for FanoutView {
    async fn series_labels(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<Labels>, QueryableError> {
        let per_store = self
            .series_raw(matchers, min_t, max_t, &SelectHints::default(), None, |s| {
                Ok(s.labels)
            })
            .await?;
        let set: BTreeSet<Labels> = per_store
            .into_iter()
            .flatten()
            .map(|labels| self.strip(labels_from_pb(labels)))
            .collect();
        Ok(set.into_iter().collect())
    }

    async fn label_names_matching(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<String>, QueryableError> {
        let (disabled, strategy) = self.strategy();
        let req = LabelNamesRequest {
            partial_response_disabled: disabled,
            partial_response_strategy: strategy,
            start: min_t,
            end: max_t,
            matchers: matchers_to_pb(matchers),
            ..Default::default()
        };
        let answers = self
            .fan_out("LabelNames", matchers, min_t, max_t, |mut c| {
                let req = req.clone();
                async move {
                    let r = c.store.label_names(req).await?.into_inner();
                    Ok((r.names, r.warnings))
                }
            })
            .await?;
        let mut set: BTreeSet<String> = answers.into_iter().flatten().collect();
        if self.dedup_on() {
            set.retain(|n| !self.replica_labels().contains(n));
        }
        Ok(set.into_iter().collect())
    }

    async fn label_values_matching(
        &self,
        name: &str,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<String>, QueryableError> {
        let (disabled, strategy) = self.strategy();
        let req = LabelValuesRequest {
            label: name.to_owned(),
            partial_response_disabled: disabled,
            partial_response_strategy: strategy,
            start: min_t,
            end: max_t,
            matchers: matchers_to_pb(matchers),
            ..Default::default()
        };
        let answers = self
            .fan_out("LabelValues", matchers, min_t, max_t, |mut c| {
                let req = req.clone();
                async move {
                    let r = c.store.label_values(req).await?.into_inner();
                    Ok((r.values, r.warnings))
                }
            })
            .await?;
        let set: BTreeSet<String> = answers.into_iter().flatten().collect();
        Ok(set.into_iter().collect())
    }

    async fn metric_metadata(
        &self,
        metric: Option<&str>,
        limit: Option<usize>,
    ) -> Result<MetricMetadata, QueryableError> {
        let (_, strategy) = self.strategy();
        let req = MetricMetadataRequest {
            metric: metric.unwrap_or_default().to_owned(),
            limit: limit.map_or(-1, |l| i32::try_from(l).unwrap_or(i32::MAX)),
            partial_response_strategy: strategy,
        };
        let answers = self
            .fan_out_where(
                "MetricMetadata",
                |info| info.metric_metadata,
                |mut c| {
                    let req = req.clone();
                    async move {
                        let mut stream = c.metadata.metric_metadata(req).await?.into_inner();
                        let mut parts = Vec::new();
                        let mut warnings = Vec::new();
                        while let Some(msg) = stream.message().await? {
                            match msg.result {
                                Some(metric_metadata_response::Result::Metadata(m)) => {
                                    parts.push(m)
                                }
                                Some(metric_metadata_response::Result::Warning(w)) => {
                                    warnings.push(w)
                                }
                                None => {}
                            }
                        }
                        Ok((parts, warnings))
                    }
                },
            )
            .await?;
        Ok(merge_metadata(answers.into_iter().flatten(), limit))
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }
}

/// Merges metadata answers: per metric the distinct `(type, help, unit)` entries, sorted; the
/// first `limit` metric names (in name order) when `limit` is set.
pub fn merge_metadata(
    parts: impl IntoIterator<Item = PbMetricMetadata>,
    limit: Option<usize>,
) -> MetricMetadata {
    let mut sets: BTreeMap<String, BTreeSet<(String, String, String)>> = BTreeMap::new();
    for part in parts {
        for (name, entry) in part.metadata {
            let set = sets.entry(name).or_default();
            set.extend(entry.metas.into_iter().map(|m| (m.r#type, m.help, m.unit)));
        }
    }
    sets.into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(|(name, set)| (name, set.into_iter().collect()))
        .collect()
}

#[cfg(test)]
mod tests;
