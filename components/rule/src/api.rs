//! The ruler's HTTP API: `GET /api/v1/rules` and `GET /api/v1/alerts` in Prometheus's JSON
//! shapes (so Grafana's alerting views read them), and `POST /-/reload`. Merged with the admin
//! router (`/metrics`, `/-/healthy`, `/-/ready`) by [`crate::run`].

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::alerts::{ActiveAlert, AlertState};
use crate::eval::{GroupState, RuleState, lock};
use crate::rules::RuleKind;
use crate::run::Manager;
use crate::template::go_float;

/// The API routes over `manager`'s groups.
pub fn router(manager: Arc<Manager>) -> Router {
    Router::new()
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/alerts", get(alerts))
        .route("/-/reload", post(reload))
        .with_state(manager)
}

/// Go's `time.Time` JSON form of a Unix-ms time; the zero time when never.
fn time_json(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string())
}

fn alert_json(a: &ActiveAlert) -> Value {
    json!({
        "labels": a.labels.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect::<serde_json::Map<_, _>>(),
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": time_json(Some(a.active_at)),
        "value": go_float(a.value, None),
    })
}

fn sorted_alerts(r: &RuleState) -> Vec<&ActiveAlert> {
    let mut v: Vec<&ActiveAlert> = r
        .alerting
        .as_ref()
        .map(|a| {
            a.active
                .values()
                .filter(|x| x.state != AlertState::Inactive)
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| a.labels.cmp(&b.labels));
    v
}

fn rule_json(r: &RuleState) -> Value {
    let mut v = json!({
        "name": r.rule.name(),
        "query": r.rule.expr,
        "labels": r.rule.labels,
        "health": r.health.as_str(),
        "evaluationTime": r.last_duration.as_secs_f64(),
        "lastEvaluation": time_json(r.last_eval_ms),
    });
    if let Some(e) = &r.last_error {
        v["lastError"] = Value::from(e.clone());
    }
    match &r.rule.kind {
        RuleKind::Recording { .. } => v["type"] = Value::from("recording"),
        RuleKind::Alerting {
            for_,
            keep_firing_for,
            annotations,
            ..
        } => {
            v["type"] = Value::from("alerting");
            v["duration"] = Value::from(for_.as_secs_f64());
            v["keepFiringFor"] = Value::from(keep_firing_for.as_secs_f64());
            v["annotations"] = json!(annotations);
            v["state"] = Value::from(
                r.alerting
                    .as_ref()
                    .map(|a| a.state())
                    .unwrap_or(AlertState::Inactive)
                    .as_str(),
            );
            v["alerts"] = Value::Array(sorted_alerts(r).into_iter().map(alert_json).collect());
        }
    }
    v
}

fn group_json(g: &GroupState, want: Option<&str>) -> Option<Value> {
    let rules: Vec<Value> = g
        .rules
        .iter()
        .filter(|r| {
            matches!(
                (want, &r.rule.kind),
                (None, _)
                    | (Some("alert"), RuleKind::Alerting { .. })
                    | (Some("record"), RuleKind::Recording { .. })
            )
        })
        .map(rule_json)
        .collect();
    if want.is_some() && rules.is_empty() {
        return None;
    }
    Some(json!({
        "name": g.spec.name,
        "file": g.spec.file,
        "rules": rules,
        "interval": g.interval.as_secs_f64(),
        "limit": g.spec.limit,
        "evaluationTime": g.last_duration.as_secs_f64(),
        "lastEvaluation": time_json(g.last_eval_ms),
        "partialResponseStrategy": match g.spec.partial_response_strategy {
            crate::rules::PartialResponseStrategy::Abort => "ABORT",
            crate::rules::PartialResponseStrategy::Warn => "WARN",
        },
    }))
}

fn bad_data(msg: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"status": "error", "errorType": "bad_data", "error": msg})),
    )
        .into_response()
}

async fn rules(
    State(m): State<Arc<Manager>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let want = match q.get("type").map(String::as_str) {
        None | Some("") => None,
        Some(t @ ("alert" | "record")) => Some(t),
        Some(other) => return bad_data(&format!("unsupported type {other:?}")),
    };
    let groups: Vec<Value> = m
        .groups()
        .iter()
        .filter_map(|g| group_json(&lock(g), want))
        .collect();
    Json(json!({"status": "success", "data": {"groups": groups}})).into_response()
}

async fn alerts(State(m): State<Arc<Manager>>) -> Response {
    let mut out = Vec::new();
    for g in m.groups() {
        let g = lock(&g);
        for r in &g.rules {
            out.extend(sorted_alerts(r).into_iter().map(alert_json));
        }
    }
    Json(json!({"status": "success", "data": {"alerts": out}})).into_response()
}

async fn reload(State(m): State<Arc<Manager>>) -> Response {
    match m.reload() {
        Ok(()) => (StatusCode::OK, "rules reloaded\n").into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload rules: {e}\n"),
        )
            .into_response(),
    }
}
