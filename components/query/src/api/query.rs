//! `/api/v1/query` and `/api/v1/query_range`: parameters, the concurrency slot, the timeout,
//! evaluation over the request's view, and the response with stats and annotations.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{Request, State};
use promql_parser::label::Matcher;
use promql_parser::parser::value::ValueType;
use strata_promql::{
    AnnotationKind, Engine, Interrupt, QueryResult, QueryValue, Queryable, QueryableError,
    SelectHints, Series,
};
use tracing::Instrument;

use super::{
    Api, ApiError, ApiResult, QueryStats, Success, add_view_warnings, json, ms, now_ms, params,
    parse_duration_ns, query_options, read_params,
};
use crate::{QueryOptions, StoreView};

/// Raises its flag when dropped: an evaluation on a blocking thread stops at its next node.
#[derive(Default)]
struct CancelOnDrop {
    flag: Arc<AtomicBool>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.flag.store(true, Ordering::Relaxed);
    }
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
pub(super) fn deadline_after(start: Instant, timeout: Duration) -> Instant {
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

pub(super) async fn query(State(api): State<Arc<Api>>, req: Request) -> ApiResult {
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

pub(super) async fn query_range(State(api): State<Arc<Api>>, req: Request) -> ApiResult {
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
    let permit = tokio::time::timeout_at(deadline, api.slots.clone().acquire_owned())
        .await
        .map_err(|_| ApiError::Timeout("query queue"))?
        .map_err(|_| ApiError::Unavailable("the querier is shutting down".into()))?;
    let queued = started.elapsed();
    let view = api.source.view(&r.opts);
    let counting = Arc::new(Counting {
        view: view.clone(),
        samples: AtomicU64::new(0),
    });
    let eval_started = Instant::now();
    // The series are fetched here, on the async workers: when this future is dropped (the client
    // went away, or the timeout below) the store calls in flight are dropped with it. The
    // evaluation is synchronous: small ones run right here, large ones on a blocking thread
    // (the async workers stay free for other requests) that holds the slot until it really
    // stops — the guard's flag, raised on drop, stops it at its next node.
    let cancel = CancelOnDrop::default();
    let interrupt = Interrupt::new(Some(r.deadline), Some(cancel.flag.clone()));
    let work = async {
        let prepared = if r.range {
            r.engine
                .prepare_range(&*counting, &r.query, r.start, r.end, r.step, &interrupt)
                .await
        } else {
            r.engine
                .prepare_instant(&*counting, &r.query, r.start, &interrupt)
                .await
        }
        .map_err(ApiError::from_engine)?;
        if prepared.cost() <= api.settings.inline_eval_cost {
            let _permit = permit;
            return prepared.evaluate().map_err(ApiError::from_engine);
        }
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _g = span.enter();
            prepared.evaluate()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("query evaluation failed: {e}")))?
        .map_err(ApiError::from_engine)
    };
    let mut result: QueryResult = tokio::time::timeout_at(deadline, work)
        .await
        .map_err(|_| ApiError::Timeout("query execution"))??;
    drop(cancel);
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
