//! The querier: the Prometheus HTTP API ([`api`]) over the PromQL engine, reading every StoreAPI
//! endpoint ([`endpoints`]) through a fan-out [`Queryable`](strata_promql::Queryable)
//! ([`fanout`]) that merges and de-duplicates HA replicas ([`dedup`]).
//!
//! The two halves meet at [`StoreSource`]: the API asks it for a per-request [`StoreView`]
//! (carrying the request's dedup / partial-response / resolution options), evaluates the query
//! over it, and adds the view's warnings (failed stores under partial response) to the response.
//! [`ui`] is the web UI served beside the API; [`SourceQueryable`] lets an in-process engine (the
//! ruler of `strata local`) read the same stores.

use std::sync::Arc;

use async_trait::async_trait;
use promql_parser::label::Matcher;
use strata_promql::{Labels, Queryable, QueryableError};

pub mod api;
pub mod convert;
pub mod dedup;
pub mod endpoints;
pub mod fanout;
pub mod ui;

/// Per-request options the HTTP API passes to the store side.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryOptions {
    /// Merge series that differ only in the replica labels.
    pub dedup: bool,
    /// A failing store becomes a warning instead of failing the request.
    pub partial_response: bool,
    /// Coarsest downsampling resolution the request accepts, ms (0 = raw data only).
    pub max_source_resolution_ms: i64,
    /// Pick the resolution from the query step (`max_source_resolution=auto`).
    pub auto_downsampling: bool,
    /// The range-query step, ms (0 for instant queries); used by auto-downsampling.
    pub step_ms: i64,
    /// Replica labels of this request (`replicaLabels[]`); empty: the querier's
    /// `--query.replica-label` flags.
    pub replica_labels: Vec<String>,
    /// Store selectors (`storeMatch[]`): only stores whose external labels, plus `__address__`
    /// holding the endpoint's address, satisfy one of the sets are asked; empty: every store.
    pub store_matchers: Vec<Vec<promql_parser::label::Matcher>>,
}

impl Default for QueryOptions {
    fn default() -> Self {
        Self {
            dedup: true,
            partial_response: true,
            max_source_resolution_ms: 0,
            auto_downsampling: false,
            step_ms: 0,
            replica_labels: Vec::new(),
            store_matchers: Vec::new(),
        }
    }
}

/// Health of one endpoint, as `/api/v1/stores` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreStatus {
    /// The address, e.g. `10.0.0.1:10901`.
    pub name: String,
    /// Component type from the Info API (`sidecar`, `store`, …), if known.
    pub component_type: Option<String>,
    /// Whether the last health check succeeded.
    pub healthy: bool,
    /// The last health-check error, if any.
    pub last_error: Option<String>,
    /// Last successful check, Unix ms (0 = never).
    pub last_check_ms: i64,
    /// The endpoint's external label sets.
    pub label_sets: Vec<Labels>,
    /// Data time range the endpoint advertises, ms.
    pub min_time: i64,
    /// Data time range the endpoint advertises, ms.
    pub max_time: i64,
}

/// The store side of one request: a [`Queryable`] for the engine plus the metadata calls of the
/// HTTP API, collecting warnings (e.g. stores that failed under partial response) as it goes.
#[async_trait]
pub trait StoreView: Queryable {
    /// Label sets of the series matching all `matchers` in `[min_t, max_t]` (no samples).
    async fn series_labels(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<Labels>, QueryableError>;

    /// Label names of the series matching `matchers` (all series when empty), sorted, unique.
    async fn label_names_matching(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<String>, QueryableError>;

    /// Values of label `name` on the series matching `matchers`, sorted, unique.
    async fn label_values_matching(
        &self,
        name: &str,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<String>, QueryableError>;

    /// Metric metadata (name → distinct `(type, help, unit)`, sorted), of `metric` only when set,
    /// at most `limit` metrics when set. The default serves none.
    async fn metric_metadata(
        &self,
        metric: Option<&str>,
        limit: Option<usize>,
    ) -> Result<MetricMetadata, QueryableError> {
        let _ = (metric, limit);
        Ok(MetricMetadata::new())
    }

    /// Warnings collected so far (each once, in the order raised).
    fn warnings(&self) -> Vec<String>;
}

/// Metric name → its distinct `(type, help, unit)` entries.
pub type MetricMetadata = std::collections::BTreeMap<String, Vec<(String, String, String)>>;

/// Where the HTTP API gets its data: a fresh [`StoreView`] per request, and endpoint health.
pub trait StoreSource: Send + Sync {
    /// A view for one request with `opts`.
    fn view(&self, opts: &QueryOptions) -> Arc<dyn StoreView>;

    /// Every configured endpoint and its health.
    fn stores(&self) -> Vec<StoreStatus>;
}

/// A [`Queryable`] over a [`StoreSource`]: each call asks a fresh [`StoreView`] with fixed
/// options, so the in-process PromQL engine (e.g. `strata local`'s ruler) reads what the
/// querier reads. A view's warnings are dropped; use `partial_response: false` in the options
/// to turn a failing store into an error instead.
pub struct SourceQueryable {
    source: Arc<dyn StoreSource>,
    opts: QueryOptions,
}

impl std::fmt::Debug for SourceQueryable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceQueryable")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl SourceQueryable {
    /// Reads `source` with `opts` on every call.
    pub fn new(source: Arc<dyn StoreSource>, opts: QueryOptions) -> Self {
        Self { source, opts }
    }
}

#[async_trait]
impl Queryable for SourceQueryable {
    async fn select(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<strata_promql::Series>, QueryableError> {
        self.source
            .view(&self.opts)
            .select(matchers, min_t, max_t)
            .await
    }

    async fn select_with_hints(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
        hints: &strata_promql::SelectHints,
    ) -> Result<Vec<strata_promql::Series>, QueryableError> {
        self.source
            .view(&self.opts)
            .select_with_hints(matchers, min_t, max_t, hints)
            .await
    }

    async fn label_names(&self, min_t: i64, max_t: i64) -> Result<Vec<String>, QueryableError> {
        self.source.view(&self.opts).label_names(min_t, max_t).await
    }

    async fn label_values(
        &self,
        name: &str,
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<String>, QueryableError> {
        self.source
            .view(&self.opts)
            .label_values(name, min_t, max_t)
            .await
    }
}
