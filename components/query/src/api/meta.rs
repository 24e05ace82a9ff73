//! The metadata endpoints (`series`, `labels`, `label/<name>/values`, `metadata`,
//! `query_exemplars`), `status/buildinfo`, `format_query`, `parse_query` and Thanos's `stores`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Request, State};
use promql_parser::label::Matcher;
use strata_promql::{Labels, QueryableError};
use tracing::Instrument;

use super::query::deadline_after;
use super::{
    Api, ApiError, ApiResult, Success, add_view_warnings, ast, error::parse_bare, format, json,
    params, query_options, read_params,
};
use crate::QueryOptions;

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

pub(super) async fn with_deadline<T>(
    deadline: tokio::time::Instant,
    f: impl Future<Output = Result<T, QueryableError>>,
) -> Result<T, ApiError> {
    tokio::time::timeout_at(deadline, f)
        .await
        .map_err(|_| ApiError::Timeout("store request"))?
        .map_err(|e| ApiError::Execution(e.to_string()))
}

pub(super) async fn series(State(api): State<Arc<Api>>, req: Request) -> ApiResult {
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

pub(super) async fn labels(State(api): State<Arc<Api>>, req: Request) -> ApiResult {
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

pub(super) async fn label_values(
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

/// Prometheus's `limit` / `limit_per_metric`: a number, negative meaning no limit.
fn parse_signed_limit(p: &params::Params, name: &str) -> Result<Option<usize>, ApiError> {
    let v = p.get(name);
    if v.is_empty() {
        return Ok(None);
    }
    let n: i64 = v
        .parse()
        .map_err(|_| ApiError::BadData(format!("{name} must be a number")))?;
    Ok(usize::try_from(n).ok())
}

pub(super) async fn metadata(State(api): State<Arc<Api>>, req: Request) -> ApiResult {
    let p = read_params(req).await?;
    let limit = parse_signed_limit(&p, "limit")?;
    // As Prometheus: only a positive per-metric limit applies.
    let per_metric = parse_signed_limit(&p, "limit_per_metric")?.filter(|&n| n > 0);
    let metric = p.get("metric").to_owned();
    let opts = query_options(&api, &p, 0)?;
    let deadline =
        tokio::time::Instant::from_std(deadline_after(Instant::now(), api.settings.query_timeout));
    let span = tracing::info_span!("api_metadata", metric = %metric);
    async move {
        let view = api.source.view(&opts);
        let metric = Some(metric.as_str()).filter(|m| !m.is_empty());
        let mut all = with_deadline(deadline, view.metric_metadata(metric, limit)).await?;
        if let Some(l) = limit {
            // Stores each honour the limit; together they may exceed it.
            while all.len() > l {
                all.pop_last();
            }
        }
        let mut out = Success::data(metadata_json(&all, per_metric));
        add_view_warnings(&mut out, view.as_ref());
        Ok(out)
    }
    .instrument(span)
    .await
}

/// `{"name":[{"type":…,"help":…,"unit":…},…],…}`, at most `per_metric` entries a metric.
fn metadata_json(all: &crate::MetricMetadata, per_metric: Option<usize>) -> String {
    let mut out = String::from("{");
    for (i, (name, metas)) in all.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        format::write_json_str(&mut out, name);
        out.push_str(":[");
        for (j, (typ, help, unit)) in metas
            .iter()
            .take(per_metric.unwrap_or(usize::MAX))
            .enumerate()
        {
            if j > 0 {
                out.push(',');
            }
            out.push_str("{\"type\":");
            format::write_json_str(&mut out, typ);
            out.push_str(",\"help\":");
            format::write_json_str(&mut out, help);
            out.push_str(",\"unit\":");
            format::write_json_str(&mut out, unit);
            out.push('}');
        }
        out.push(']');
    }
    out.push('}');
    out
}

pub(super) async fn query_exemplars(req: Request) -> ApiResult {
    let p = read_params(req).await?;
    params::parse_time_or("start", p.get("start"), params::MIN_TIME_MS)
        .map_err(|e| ApiError::invalid("start", e))?;
    params::parse_time_or("end", p.get("end"), params::MAX_TIME_MS)
        .map_err(|e| ApiError::invalid("end", e))?;
    parse_bare(p.get("query"))?;
    Ok(Success::data("[]".into()))
}

pub(super) async fn buildinfo(State(api): State<Arc<Api>>) -> ApiResult {
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

pub(super) async fn format_query(req: Request) -> ApiResult {
    let p = read_params(req).await?;
    let expr = strata_promql::engine::parse(p.get("query")).map_err(ApiError::from_engine)?;
    let mut data = String::new();
    format::write_json_str(&mut data, &expr.prettify());
    Ok(Success::data(data))
}

pub(super) async fn parse_query(req: Request) -> ApiResult {
    let p = read_params(req).await?;
    let expr = strata_promql::engine::parse(p.get("query")).map_err(ApiError::from_engine)?;
    Ok(Success::data(ast::translate(&expr).to_string()))
}

/// Thanos's zero `time.Time`, for endpoints never checked.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

pub(super) async fn stores(State(api): State<Arc<Api>>) -> ApiResult {
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
