//! The API's errors: Prometheus's error types and status codes, and parse errors worded as
//! Prometheus words them where `promql-parser` allows.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use strata_promql::{EngineError, QueryableError};

use super::{json, json_response, params};

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
    pub(super) fn invalid(param: &'static str, message: impl Into<String>) -> Self {
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

    pub(super) fn from_storage(e: QueryableError) -> Self {
        match e {
            QueryableError::Storage(m) => ApiError::Execution(format!("expanding series: {m}")),
            e @ QueryableError::Unsupported(_) => ApiError::Internal(e.to_string()),
        }
    }

    pub(super) fn from_engine(e: EngineError) -> Self {
        // (see `parse_error_message` for the wording of parse errors)
        match e {
            EngineError::Parse(m) => ApiError::invalid("query", parse_error_message(m)),
            EngineError::Eval(m) => ApiError::Execution(m),
            e @ EngineError::Unsupported(_) => ApiError::Execution(e.to_string()),
            EngineError::Storage(e) => ApiError::from_storage(e),
            e @ EngineError::TooManySamples => ApiError::Execution(e.to_string()),
            EngineError::Timeout => ApiError::Timeout("expression evaluation"),
            EngineError::Canceled => ApiError::Canceled("expression evaluation"),
        }
    }
}

/// A parse error worded as close to Prometheus as the parser allows: Prometheus writes
/// `1:5: parse error: …`, or `unknown position: parse error: …` when it has no position;
/// `promql-parser` keeps no positions, so only the empty query gets Prometheus's exact text.
pub(super) fn parse_error_message(m: String) -> String {
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
pub(super) fn prometheus_wording(m: String) -> String {
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
pub(super) fn parse_bare(q: &str) -> Result<promql_parser::parser::Expr, ApiError> {
    strata_promql::engine::parse(q).map_err(|e| match e {
        EngineError::Parse(m) => ApiError::BadData(parse_error_message(m)),
        other => ApiError::from_engine(other),
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(
            self.status(),
            json::error(self.error_type(), &self.to_string()),
        )
    }
}
