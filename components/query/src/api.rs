//! The Prometheus HTTP API of the querier (`/api/v1/…`), as an axum [`Router`] over a
//! [`StoreSource`] and the PromQL [`Engine`].
//!
//! JSON shapes, status codes, error types and parameter error messages follow Prometheus's
//! `web/api/v1` (Prometheus 3): GET and form-encoded POST on every endpoint, `time`/`start`/`end`
//! as RFC 3339 or Unix seconds, `step`/`timeout` as seconds or Prometheus durations, `stats`,
//! `lookback_delta`, `limit`; plus the Thanos parameters `dedup`, `partial_response` and
//! `max_source_resolution`, which become the request's [`QueryOptions`]. `engine` and `analyze`
//! are accepted and ignored. `/api/v1/stores` lists endpoints in Thanos's shape.
//!
//! Every query runs under the smaller of the configured timeout and the `timeout` parameter
//! (queue wait included) and holds one of `max_concurrent` slots; when the client goes away
//! the handler future is dropped, and with it the store calls in flight.
//!
//! `tests/prometheus_compat.rs` sends 79 requests to a real Prometheus 3.14 and to this API
//! over the same backfilled data and requires the same status and JSON (six of them byte for
//! byte); `tests/thanos_compat.rs` does the same for `/api/v1/stores` and the Thanos
//! parameters against a real `thanos query`.
//!
//! NOT DONE:
//! - `/api/v1/metadata` always answers `{}` and `/api/v1/query_exemplars` `[]`: the
//!   [`StoreView`] contract has no metadata or exemplar calls yet;
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
//! - the engine's evaluation phase is synchronous, so a timeout or a client disconnect stops a
//!   query at its next store call, not in the middle of evaluating; `canceled` (499) is never
//!   answered (a client that went away gets no answer);
//! - `U__`-escaped label names in `/api/v1/label/<name>/values` are not unescaped, and the
//!   `minTime`/`maxTime` sentinel strings Go clients may send are not recognised.

mod ast;
mod format;
mod json;
mod mem;
mod params;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use promql_parser::label::Matcher;
use promql_parser::parser::value::ValueType;
use strata_promql::{
    AnnotationKind, Engine, EngineError, Labels, QueryResult, QueryValue, Queryable,
    QueryableError, SelectHints, Series,
};
use tokio::sync::Semaphore;
use tracing::Instrument;

pub use format::{format_float, format_timestamp};
pub use json::QueryStats;
pub use mem::MemSource;
pub use params::{parse_duration_ns, parse_prometheus_duration, parse_time};

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
        }
    }
}

/// An API error: its Prometheus `errorType` and HTTP status follow from the variant.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter is malformed (`bad_data`, 400).
    #[error("invalid parameter {}: {message}", params::quote(param))]
    InvalidParam {
        /// The parameter's name.
        param: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The request is malformed in another way (`bad_data`, 400).
    #[error("{0}")]
    BadData(String),
    /// The query failed while running (`execution`, 422).
    #[error("{0}")]
    Execution(String),
    /// The query ran out of time (`timeout`, 503); names the phase.
    #[error("query timed out in {0}")]
    Timeout(&'static str),
    /// The query was cancelled (`canceled`, 499).
    #[error("query was canceled in {0}")]
    Canceled(&'static str),
    /// A fault of ours (`internal`, 500).
    #[error("{0}")]
    Internal(String),
    /// The querier cannot serve now (`unavailable`, 503).
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        ApiError::InvalidParam {
            param,
            message: message.into(),
        }
    }

    /// Prometheus's `errorType`.
    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::InvalidParam { .. } | ApiError::BadData(_) => "bad_data",
            ApiError::Execution(_) => "execution",
            ApiError::Timeout(_) => "timeout",
            ApiError::Canceled(_) => "canceled",
            ApiError::Internal(_) => "internal",
            ApiError::Unavailable(_) => "unavailable",
        }
    }

    /// The HTTP status Prometheus answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidParam { .. } | ApiError::BadData(_) => StatusCode::BAD_REQUEST,
            ApiError::Execution(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Timeout(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            // Prometheus's "client closed connection" status.
            ApiError::Canceled(_) => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn from_storage(e: QueryableError) -> Self {
        match e {
            QueryableError::Storage(m) => ApiError::Execution(format!("expanding series: {m}")),
            e @ QueryableError::Unsupported(_) => ApiError::Internal(e.to_string()),
        }
    }

    fn from_engine(e: EngineError) -> Self {
        // (see `parse_error_message` for the wording of parse errors)
        match e {
            EngineError::Parse(m) => ApiError::invalid("query", parse_error_message(m)),
            EngineError::Eval(m) => ApiError::Execution(m),
            e @ EngineError::Unsupported(_) => ApiError::Execution(e.to_string()),
            EngineError::Storage(e) => ApiError::from_storage(e),
            e @ EngineError::TooManySamples => ApiError::Execution(e.to_string()),
        }
    }
}

/// A parse error worded as close to Prometheus as the parser allows: Prometheus writes
/// `1:5: parse error: …`, or `unknown position: parse error: …` when it has no position;
/// `promql-parser` keeps no positions, so only the empty query gets Prometheus's exact text.
fn parse_error_message(m: String) -> String {
    let m = prometheus_wording(m);
    if m.contains("parse error") {
        m
    } else if m == "no expression found in input" {
        format!("unknown position: parse error: {m}")
    } else {
        format!("parse error: {m}")
    }
}

/// Rewrites `promql-parser` messages whose Prometheus wording differs and is known:
/// `expected type matrix in call to function 'rate', got vector` becomes
/// `expected type range vector in call to function "rate", got instant vector`.
fn prometheus_wording(m: String) -> String {
    let type_name = |t: &str| match t {
        "matrix" => "range vector".to_string(),
        "vector" => "instant vector".to_string(),
        other => other.to_string(),
    };
    let rewritten = (|| {
        let rest = m.strip_prefix("expected type ")?;
        let (want, rest) = rest.split_once(" in call to function '")?;
        let (func, got) = rest.split_once("', got ")?;
        Some(format!(
            "expected type {} in call to function \"{func}\", got {}",
            type_name(want),
            type_name(got)
        ))
    })();
    rewritten.unwrap_or(m)
}

/// Parses the `query` parameter; the error is bare `bad_data` (no parameter name), as
/// Prometheus's exemplar endpoint words it.
fn parse_bare(q: &str) -> Result<promql_parser::parser::Expr, ApiError> {
    strata_promql::engine::parse(q).map_err(|e| match e {
        EngineError::Parse(m) => ApiError::BadData(parse_error_message(m)),
        other => ApiError::from_engine(other),
    })
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(
            self.status(),
            json::error(self.error_type(), &self.to_string()),
        )
    }
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
    slots: Semaphore,
}

/// The API's routes (`/api/v1/…`), to merge with the admin router on the same address.
pub fn router(source: Arc<dyn StoreSource>, settings: ApiSettings) -> Router {
    let slots = Semaphore::new(settings.max_concurrent.max(1));
    let api = Arc::new(Api {
        source,
        settings,
        slots,
    });
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
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
        .route("/api/v1/stores", get(stores).post(stores))
        .with_state(api)
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
    Ok(QueryOptions {
        dedup,
        partial_response,
        max_source_resolution_ms: max_res_ms,
        auto_downsampling: auto,
        step_ms,
    })
}

/// A [`Queryable`] over the request's view that counts the samples the stores return.
struct Counting {
    view: Arc<dyn StoreView>,
    samples: AtomicU64,
}

impl Counting {
    fn count(&self, series: &[Series]) {
        let n: usize = series
            .iter()
            .map(|s| s.samples.len() + s.histograms.len())
            .sum();
        self.samples.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[async_trait]
impl Queryable for Counting {
    async fn select(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<Series>, QueryableError> {
        let out = self.view.select(matchers, min_t, max_t).await?;
        self.count(&out);
        Ok(out)
    }

    async fn select_with_hints(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
        hints: &SelectHints,
    ) -> Result<Vec<Series>, QueryableError> {
        let out = self
            .view
            .select_with_hints(matchers, min_t, max_t, hints)
            .await?;
        self.count(&out);
        Ok(out)
    }

    async fn label_names(&self, min_t: i64, max_t: i64) -> Result<Vec<String>, QueryableError> {
        self.view.label_names(min_t, max_t).await
    }

    async fn label_values(
        &self,
        name: &str,
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<String>, QueryableError> {
        self.view.label_values(name, min_t, max_t).await
    }
}

/// Parameters shared by instant and range queries.
struct QueryRequest {
    query: String,
    start: i64,
    end: i64,
    step: i64,
    range: bool,
    deadline: Instant,
    engine: Engine,
    opts: QueryOptions,
    stats: bool,
    stats_warning: Option<String>,
    limit: usize,
}

/// Reads `timeout`, `lookback_delta`, `stats` and the query itself (parsed up front so a
/// syntax error is `bad_data`, before any slot is taken).
fn common_query_params(
    api: &Api,
    p: &params::Params,
    started: Instant,
    range: bool,
) -> Result<(Instant, Engine, bool), ApiError> {
    let mut timeout = api.settings.query_timeout;
    let to = p.get("timeout");
    if !to.is_empty() {
        let ns = parse_duration_ns(to).map_err(|e| ApiError::invalid("timeout", e))?;
        timeout = timeout.min(Duration::from_nanos(u64::try_from(ns).unwrap_or(0)));
    }
    let mut engine = api.settings.engine.clone();
    let lb = p.get("lookback_delta");
    if !lb.is_empty() {
        let ns = parse_duration_ns(lb).map_err(|e| {
            ApiError::BadData(format!("error parsing lookback delta duration: {e}"))
        })?;
        if ns > 0 {
            engine.lookback_ms = ms(ns);
        }
    }
    let q = p.get("query");
    let expr = if q.trim().is_empty() {
        return Err(ApiError::invalid(
            "query",
            "unknown position: parse error: no expression found in input",
        ));
    } else {
        strata_promql::engine::parse(q).map_err(ApiError::from_engine)?
    };
    if range {
        let bad = match expr.value_type() {
            ValueType::String => Some("string"),
            ValueType::Matrix => Some("range vector"),
            _ => None,
        };
        if let Some(t) = bad {
            return Err(ApiError::invalid(
                "query",
                format!(
                    "invalid expression type \"{t}\" for range query, must be Scalar or instant Vector"
                ),
            ));
        }
    }
    Ok((
        deadline_after(started, timeout),
        engine,
        !p.get("stats").is_empty(),
    ))
}

/// `start + timeout`, or a century on when that is past what the clock can represent (an
/// absurd `--query.timeout` must not panic).
fn deadline_after(start: Instant, timeout: Duration) -> Instant {
    start
        .checked_add(timeout)
        .or_else(|| start.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(start)
}

/// Prometheus 3.14's warning for `stats` values other than `true` and `all`.
fn stats_warning(p: &params::Params) -> Option<String> {
    match p.get("stats") {
        "" | "true" | "all" => None,
        v => Some(format!(
            "value {} for parameter \"stats\" is deprecated and will be rejected in the next major release, use \"true\" or \"all\"",
            params::quote(v)
        )),
    }
}

async fn query(State(api): State<Arc<Api>>, req: Request) -> ApiResult {
    let started = Instant::now();
    let p = read_params(req).await?;
    let limit = params::parse_limit(p.get("limit")).map_err(|e| ApiError::invalid("limit", e))?;
    let t = params::parse_time_or("time", p.get("time"), now_ms())
        .map_err(|e| ApiError::invalid("time", e))?;
    let (deadline, engine, stats) = common_query_params(&api, &p, started, false)?;
    let opts = query_options(&api, &p, 0)?;
    let r = QueryRequest {
        query: p.get("query").to_string(),
        start: t,
        end: t,
        step: 0,
        range: false,
        deadline,
        engine,
        opts,
        stats,
        stats_warning: stats_warning(&p),
        limit,
    };
    let span = tracing::info_span!("api_query", query = %r.query, time = t);
    run_query(&api, r, started).instrument(span).await
}

async fn query_range(State(api): State<Arc<Api>>, req: Request) -> ApiResult {
    let started = Instant::now();
    let p = read_params(req).await?;
    let limit = params::parse_limit(p.get("limit")).map_err(|e| ApiError::invalid("limit", e))?;
    let start = params::parse_time(p.get("start")).map_err(|e| ApiError::invalid("start", e))?;
    let end = params::parse_time(p.get("end")).map_err(|e| ApiError::invalid("end", e))?;
    if end < start {
        return Err(ApiError::invalid(
            "end",
            "end timestamp must not be before start time",
        ));
    }
    let step_ns = parse_duration_ns(p.get("step")).map_err(|e| ApiError::invalid("step", e))?;
    if step_ns <= 0 {
        return Err(ApiError::invalid(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    let step = ms(step_ns).max(1);
    if (end - start) / step > 11_000 {
        return Err(ApiError::BadData(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
        ));
    }
    let (deadline, engine, stats) = common_query_params(&api, &p, started, true)?;
    let opts = query_options(&api, &p, step)?;
    let r = QueryRequest {
        query: p.get("query").to_string(),
        start,
        end,
        step,
        range: true,
        deadline,
        engine,
        opts,
        stats,
        stats_warning: stats_warning(&p),
        limit,
    };
    let span = tracing::info_span!("api_query_range", query = %r.query, start, end, step);
    run_query(&api, r, started).instrument(span).await
}

/// Waits for a slot and evaluates, both before the deadline.
async fn run_query(api: &Api, r: QueryRequest, started: Instant) -> ApiResult {
    if Instant::now() >= r.deadline {
        // A zero or negative timeout. Prometheus's answer then depends on where its expired
        // context is first noticed (timeout/503, or "context deadline exceeded" as 422 or 400);
        // this is its timeout answer.
        return Err(ApiError::Timeout("query execution"));
    }
    let deadline = tokio::time::Instant::from_std(r.deadline);
    let permit = tokio::time::timeout_at(deadline, api.slots.acquire())
        .await
        .map_err(|_| ApiError::Timeout("query queue"))?
        .map_err(|_| ApiError::Unavailable("the querier is shutting down".into()))?;
    let queued = started.elapsed();
    let view = api.source.view(&r.opts);
    let counting = Counting {
        view: view.clone(),
        samples: AtomicU64::new(0),
    };
    let eval_started = Instant::now();
    let eval = async {
        if r.range {
            r.engine
                .range_query(&counting, &r.query, r.start, r.end, r.step)
                .await
        } else {
            r.engine.instant_query(&counting, &r.query, r.start).await
        }
    };
    let mut result: QueryResult = tokio::time::timeout_at(deadline, eval)
        .await
        .map_err(|_| ApiError::Timeout("query execution"))?
        .map_err(ApiError::from_engine)?;
    drop(permit);
    let eval_s = eval_started.elapsed().as_secs_f64();
    let loaded = counting.samples.load(Ordering::Relaxed);
    let stats = r.stats.then(|| {
        let points = match &result.value {
            QueryValue::Vector(v) => v.len() as u64,
            QueryValue::Matrix(m) => m
                .iter()
                .map(|s| (s.points.len() + s.histograms.len()) as u64)
                .sum(),
            _ => 1,
        };
        QueryStats {
            eval_total_s: eval_s,
            preparation_s: 0.0,
            inner_eval_s: eval_s,
            queue_s: queued.as_secs_f64(),
            exec_total_s: started.elapsed().as_secs_f64(),
            total_queryable_samples: loaded,
            samples_read: loaded,
            peak_samples: loaded.max(points),
        }
    });
    let truncated = r.limit > 0
        && match &mut result.value {
            QueryValue::Vector(v) if v.len() > r.limit => {
                v.truncate(r.limit);
                true
            }
            QueryValue::Matrix(m) if m.len() > r.limit => {
                m.truncate(r.limit);
                true
            }
            _ => false,
        };
    let mut out = Success::data(json::query_data(&result.value, r.start, stats.as_ref()));
    out.warnings.extend(r.stats_warning);
    for a in result.annotations {
        match a.kind {
            AnnotationKind::Warning => out.warnings.push(a.message),
            AnnotationKind::Info => out.infos.push(a.message),
        }
    }
    add_view_warnings(&mut out, view.as_ref());
    if truncated {
        out.warnings.push("results truncated due to limit".into());
    }
    Ok(out)
}

fn add_view_warnings(out: &mut Success, view: &dyn StoreView) {
    for w in view.warnings() {
        if !out.warnings.contains(&w) {
            out.warnings.push(w);
        }
    }
}

/// `start`, `end`, `limit` and the `match[]` sets of the metadata endpoints.
struct MetaParams {
    start: i64,
    end: i64,
    limit: usize,
    sets: Vec<Vec<Matcher>>,
    opts: QueryOptions,
    deadline: tokio::time::Instant,
}

fn meta_params(api: &Api, p: &params::Params) -> Result<MetaParams, ApiError> {
    let limit = params::parse_limit(p.get("limit")).map_err(|e| ApiError::invalid("limit", e))?;
    let start = params::parse_time_or("start", p.get("start"), params::MIN_TIME_MS)
        .map_err(|e| ApiError::invalid("start", e))?;
    let end = params::parse_time_or("end", p.get("end"), params::MAX_TIME_MS)
        .map_err(|e| ApiError::invalid("end", e))?;
    let sets =
        params::parse_match_sets(&p.all("match[]")).map_err(|e| ApiError::invalid("match[]", e))?;
    let opts = query_options(api, p, 0)?;
    Ok(MetaParams {
        start,
        end,
        limit,
        sets,
        opts,
        deadline: tokio::time::Instant::from_std(deadline_after(
            Instant::now(),
            api.settings.query_timeout,
        )),
    })
}

/// Applies `limit` (0 = none), warning when it cut the list.
fn apply_limit<T>(items: &mut Vec<T>, limit: usize, out_warnings: &mut Vec<String>) {
    if limit > 0 && items.len() > limit {
        items.truncate(limit);
        out_warnings.push("results truncated due to limit".into());
    }
}

async fn with_deadline<T>(
    deadline: tokio::time::Instant,
    f: impl Future<Output = Result<T, QueryableError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout_at(deadline, f)
        .await
        .map_err(|_| ApiError::Timeout("store request"))?
        .map_err(|e| ApiError::Execution(e.to_string()))
}

async fn series(State(api): State<Arc<Api>>, req: Request) -> ApiResult {
    let p = read_params(req).await?;
    if p.all("match[]").is_empty() {
        return Err(ApiError::BadData("no match[] parameter provided".into()));
    }
    let m = meta_params(&api, &p)?;
    let span = tracing::info_span!("api_series", matchers = ?p.all("match[]"));
    async move {
        let view = api.source.view(&m.opts);
        let mut all: Vec<Labels> = Vec::new();
        for set in &m.sets {
            all.extend(with_deadline(m.deadline, view.series_labels(set, m.start, m.end)).await?);
        }
        all.sort();
        all.dedup();
        let mut warnings = Vec::new();
        apply_limit(&mut all, m.limit, &mut warnings);
        let mut data = String::from("[");
        for (i, l) in all.iter().enumerate() {
            if i > 0 {
                data.push(',');
            }
            json::write_labels(&mut data, l);
        }
        data.push(']');
        let mut out = Success::data(data);
        out.warnings = warnings;
        add_view_warnings(&mut out, view.as_ref());
        Ok(out)
    }
    .instrument(span)
    .await
}

async fn labels(State(api): State<Arc<Api>>, req: Request) -> ApiResult {
    let p = read_params(req).await?;
    let m = meta_params(&api, &p)?;
    let span = tracing::info_span!("api_labels", matchers = ?p.all("match[]"));
    async move {
        let view = api.source.view(&m.opts);
        let mut names: Vec<String> = if m.sets.is_empty() {
            with_deadline(m.deadline, view.label_names_matching(&[], m.start, m.end)).await?
        } else {
            let mut all = Vec::new();
            for set in &m.sets {
                all.extend(
                    with_deadline(m.deadline, view.label_names_matching(set, m.start, m.end))
                        .await?,
                );
            }
            all
        };
        names.sort();
        names.dedup();
        let mut out = Success::data(String::new());
        apply_limit(&mut names, m.limit, &mut out.warnings);
        out.data = json::string_array(&names);
        add_view_warnings(&mut out, view.as_ref());
        Ok(out)
    }
    .instrument(span)
    .await
}

async fn label_values(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult {
    let p = read_params(req).await?;
    if name.is_empty() {
        return Err(ApiError::BadData(format!(
            "invalid label name: {}",
            params::quote(&name)
        )));
    }
    let m = meta_params(&api, &p)?;
    let span = tracing::info_span!("api_label_values", label = %name, matchers = ?p.all("match[]"));
    async move {
        let view = api.source.view(&m.opts);
        let mut values: Vec<String> = if m.sets.is_empty() {
            with_deadline(
                m.deadline,
                view.label_values_matching(&name, &[], m.start, m.end),
            )
            .await?
        } else {
            let mut all = Vec::new();
            for set in &m.sets {
                all.extend(
                    with_deadline(
                        m.deadline,
                        view.label_values_matching(&name, set, m.start, m.end),
                    )
                    .await?,
                );
            }
            all
        };
        values.sort();
        values.dedup();
        let mut out = Success::data(String::new());
        apply_limit(&mut values, m.limit, &mut out.warnings);
        out.data = json::string_array(&values);
        add_view_warnings(&mut out, view.as_ref());
        Ok(out)
    }
    .instrument(span)
    .await
}

async fn metadata(req: Request) -> ApiResult {
    let p = read_params(req).await?;
    for name in ["limit", "limit_per_metric"] {
        let v = p.get(name);
        if !v.is_empty() && v.parse::<i64>().is_err() {
            return Err(ApiError::BadData(format!("{name} must be a number")));
        }
    }
    Ok(Success::data("{}".into()))
}

async fn query_exemplars(req: Request) -> ApiResult {
    let p = read_params(req).await?;
    params::parse_time_or("start", p.get("start"), params::MIN_TIME_MS)
        .map_err(|e| ApiError::invalid("start", e))?;
    params::parse_time_or("end", p.get("end"), params::MAX_TIME_MS)
        .map_err(|e| ApiError::invalid("end", e))?;
    parse_bare(p.get("query"))?;
    Ok(Success::data("[]".into()))
}

async fn buildinfo(State(api): State<Arc<Api>>) -> ApiResult {
    let b = &api.settings.build_info;
    let data = serde_json::json!({
        "version": b.version,
        "revision": b.revision,
        "branch": b.branch,
        "buildUser": b.build_user,
        "buildDate": b.build_date,
        "goVersion": b.go_version,
    });
    Ok(Success::data(data.to_string()))
}

async fn format_query(req: Request) -> ApiResult {
    let p = read_params(req).await?;
    let expr = strata_promql::engine::parse(p.get("query")).map_err(ApiError::from_engine)?;
    let mut data = String::new();
    format::write_json_str(&mut data, &expr.prettify());
    Ok(Success::data(data))
}

async fn parse_query(req: Request) -> ApiResult {
    let p = read_params(req).await?;
    let expr = strata_promql::engine::parse(p.get("query")).map_err(ApiError::from_engine)?;
    Ok(Success::data(ast::translate(&expr).to_string()))
}

/// Thanos's zero `time.Time`, for endpoints never checked.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

async fn stores(State(api): State<Arc<Api>>) -> ApiResult {
    // Thanos leaves out endpoints whose component type is not known yet; map keys are sorted.
    let mut by_type: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for s in api.source.stores() {
        let Some(kind) = s.component_type.clone() else {
            continue;
        };
        let label_sets: Vec<serde_json::Value> = s
            .label_sets
            .iter()
            .map(|ls| {
                serde_json::Value::Object(
                    ls.iter()
                        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                        .collect(),
                )
            })
            .collect();
        let last_check = if s.last_check_ms == 0 {
            GO_ZERO_TIME.to_string()
        } else {
            format::format_rfc3339_ms(s.last_check_ms)
        };
        by_type.entry(kind).or_default().push(serde_json::json!({
            "name": s.name,
            "lastCheck": last_check,
            "lastError": s.last_error,
            "labelSets": label_sets,
            "minTime": s.min_time,
            "maxTime": s.max_time,
        }));
    }
    Ok(Success::data(serde_json::json!(by_type).to_string()))
}
