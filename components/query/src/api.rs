//! The Prometheus HTTP API of the querier (`/api/v1/…`), as an axum [`Router`] over a
//! [`StoreSource`] and the PromQL [`Engine`].
//!
//! JSON shapes, status codes, error types and parameter error messages follow Prometheus's
//! `web/api/v1` (Prometheus 3): GET and form-encoded POST on every endpoint, `time`/`start`/`end`
//! as RFC 3339 or Unix seconds, `step`/`timeout` as seconds or Prometheus durations, `stats`,
//! `lookback_delta`, `limit`; plus the Thanos parameters `dedup`, `partial_response`,
//! `max_source_resolution`, `replicaLabels[]` and `storeMatch[]`, which become the request's
//! [`QueryOptions`]. `engine` and `analyze`
//! are accepted and ignored. `/api/v1/stores` lists endpoints in Thanos's shape.
//!
//! Every query runs under the smaller of the configured timeout and the `timeout` parameter
//! (queue wait included) and holds one of `max_concurrent` slots until its evaluation has
//! really stopped. Evaluation runs on a blocking thread, so the async workers keep serving;
//! when the client goes away or the timeout passes, the store calls in flight are dropped and
//! the engine stops at its next expression node ([`strata_promql::Interrupt`]).
//!
//! `tests/prometheus_compat.rs` sends 79 requests to a real Prometheus 3.14 and to this API
//! over the same backfilled data and requires the same status and JSON (six of them byte for
//! byte); `tests/thanos_compat.rs` does the same for `/api/v1/stores` and the Thanos
//! parameters against a real `thanos query`.
//!
//! NOT DONE:
//! - `/api/v1/query_exemplars` answers `[]`: the [`StoreView`] contract has no exemplar call yet;
//! - `stats`: `totalQueryableSamples` and `samplesRead` both count the samples the stores
//!   returned (Prometheus counts each sample once per step that reads it in the first),
//!   `peakSamples` is the larger of that and the result's point count, and
//!   `totalQueryableSamplesPerStep` is never given (as in Prometheus without
//!   `--enable-feature=promql-per-step-stats`);
//! - parse errors lack Prometheus's `line:column: ` position (`promql-parser` keeps none) and
//!   keep `promql-parser`'s wording except for the empty query and the function-argument type
//!   message; `parse_query` flattens `or` matcher alternatives, reports `anchored`/`smoothed`
//!   as false and duration expressions as null, and takes function signatures from
//!   `promql-parser`'s table;
//! - native histograms: the JSON writer is done (`histogram`/`histograms` with `count`, `sum`,
//!   `buckets`; a custom-bucket histogram renders exactly as a real Prometheus renders it), but
//!   the engine does not return histogram samples yet, so no request produces them, and
//!   exponential-schema histograms are not compared with a real Prometheus;
//! - a single expression node (say `rate` over 100k series) is not interrupted half-way; the
//!   query stops before the next node. `canceled` (499) is never answered (a client that went
//!   away gets no answer);
//! - `U__`-escaped label names in `/api/v1/label/<name>/values` are not unescaped, and the
//!   `minTime`/`maxTime` sentinel strings Go clients may send are not recognised.

mod ast;
mod error;
mod format;
mod json;
mod mem;
mod meta;
mod metrics;
mod params;
mod query;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_meta;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use metrics::ApiMetrics;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use strata_promql::Engine;
use tokio::sync::Semaphore;

pub use error::ApiError;
pub use format::{format_float, format_timestamp};
pub use json::QueryStats;
pub use mem::MemSource;
pub use params::{parse_duration_ns, parse_prometheus_duration, parse_time};

use meta::{
    buildinfo, format_query, label_values, labels, metadata, parse_query, query_exemplars, series,
    stores,
};

use crate::{QueryOptions, StoreSource, StoreView};

/// Largest request body (form-encoded POST) the API reads.
const MAX_BODY_BYTES: usize = 16 << 20;

/// What `/api/v1/status/buildinfo` reports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BuildInfo {
    /// Version, e.g. `0.1.0`.
    pub version: String,
    /// Source revision (git commit).
    pub revision: String,
    /// Source branch.
    pub branch: String,
    /// Who built the binary.
    pub build_user: String,
    /// When the binary was built.
    pub build_date: String,
    /// The compiler (Prometheus reports its Go version here).
    pub go_version: String,
}

/// Settings of the API (the querier's flags).
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// The engine: lookback delta and default subquery step.
    pub engine: Engine,
    /// Longest a query may take, queue wait included (`--query.timeout`).
    pub query_timeout: Duration,
    /// Queries evaluated at once; more wait (`--query.max-concurrent`).
    pub max_concurrent: usize,
    /// `partial_response` when the request does not say (`--query.partial-response`).
    pub partial_response: bool,
    /// Auto-downsampling when the request does not say (`--query.auto-downsampling`).
    pub auto_downsampling: bool,
    /// What `/api/v1/status/buildinfo` reports.
    pub build_info: BuildInfo,
    /// Request metrics to record into, if any.
    pub metrics: Option<ApiMetrics>,
    /// Evaluations up to this [`Prepared::cost`](strata_promql::Prepared::cost) run on the async
    /// worker that fetched their series; larger ones on a blocking thread. Handing a query to
    /// another thread and back costs more than a small evaluation itself.
    pub inline_eval_cost: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            engine: Engine::default(),
            query_timeout: Duration::from_secs(120),
            max_concurrent: 20,
            partial_response: true,
            auto_downsampling: false,
            build_info: BuildInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
                ..Default::default()
            },
            metrics: None,
            inline_eval_cost: 100_000,
        }
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A success body: data (JSON text) plus warnings and infos.
struct Success {
    data: String,
    warnings: Vec<String>,
    infos: Vec<String>,
}

impl Success {
    fn data(data: String) -> Self {
        Success {
            data,
            warnings: Vec::new(),
            infos: Vec::new(),
        }
    }
}

impl IntoResponse for Success {
    fn into_response(self) -> Response {
        json_response(
            StatusCode::OK,
            json::success(&self.data, &self.warnings, &self.infos),
        )
    }
}

type ApiResult = Result<Success, ApiError>;

struct Api {
    source: Arc<dyn StoreSource>,
    settings: ApiSettings,
    slots: Arc<Semaphore>,
}

/// The API's routes (`/api/v1/…`), to merge with the admin router on the same address.
pub fn router(source: Arc<dyn StoreSource>, settings: ApiSettings) -> Router {
    let slots = Arc::new(Semaphore::new(settings.max_concurrent.max(1)));
    let metrics = settings.metrics.clone();
    let api = Arc::new(Api {
        source,
        settings,
        slots,
    });
    let router = Router::new()
        .route("/api/v1/query", get(query::query).post(query::query))
        .route(
            "/api/v1/query_range",
            get(query::query_range).post(query::query_range),
        )
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route(
            "/api/v1/label/{name}/values",
            get(label_values).post(label_values),
        )
        .route("/api/v1/metadata", get(metadata).post(metadata))
        .route(
            "/api/v1/query_exemplars",
            get(query_exemplars).post(query_exemplars),
        )
        .route("/api/v1/status/buildinfo", get(buildinfo).post(buildinfo))
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route("/api/v1/parse_query", get(parse_query).post(parse_query))
        .route("/api/v1/stores", get(stores).post(stores));
    let router = match metrics {
        Some(m) => router.route_layer(axum::middleware::from_fn_with_state(m, metrics::track)),
        None => router,
    };
    router.with_state(api)
}

/// Reads the URL query and, for a form-encoded body, the body.
async fn read_params(req: Request) -> Result<params::Params, ApiError> {
    let query = req.uri().query().unwrap_or("").to_string();
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body = if is_form {
        axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|e| ApiError::BadData(format!("error parsing form values: {e}")))?
    } else {
        bytes::Bytes::new()
    };
    Ok(params::Params::parse(&body, &query))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn ms(ns: i64) -> i64 {
    ns / 1_000_000
}

/// The request's store options from the Thanos parameters and the flags' defaults.
fn query_options(api: &Api, p: &params::Params, step_ms: i64) -> Result<QueryOptions, ApiError> {
    let bool_param = |name: &'static str, default: bool| -> Result<bool, ApiError> {
        match p.get(name) {
            "" => Ok(default),
            v => params::parse_go_bool(v)
                .map_err(|e| ApiError::BadData(format!("'{name}' parameter: {e}"))),
        }
    };
    let dedup = bool_param("dedup", true)?;
    let partial_response = bool_param("partial_response", api.settings.partial_response)?;
    let res = p.get("max_source_resolution");
    let (auto, max_res_ms) = match res {
        "auto" => (true, step_ms / 5),
        "" if api.settings.auto_downsampling => (true, step_ms / 5),
        "" => (false, 0),
        v => {
            let ns = parse_duration_ns(v).map_err(|e| {
                ApiError::BadData(format!("'max_source_resolution' parameter: {e}"))
            })?;
            (false, ms(ns))
        }
    };
    if max_res_ms < 0 {
        return Err(ApiError::BadData(
            "negative 'max_source_resolution' is not accepted. Try a positive integer".into(),
        ));
    }
    let store_matchers = params::parse_match_sets(&p.all("storeMatch[]"))
        .map_err(|e| ApiError::BadData(format!("'storeMatch[]' parameter: {e}")))?;
    let replica_labels = p
        .all("replicaLabels[]")
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    Ok(QueryOptions {
        dedup,
        partial_response,
        max_source_resolution_ms: max_res_ms,
        auto_downsampling: auto,
        step_ms,
        replica_labels,
        store_matchers,
    })
}

fn add_view_warnings(out: &mut Success, view: &dyn StoreView) {
    for w in view.warnings() {
        if !out.warnings.contains(&w) {
            out.warnings.push(w);
        }
    }
}
