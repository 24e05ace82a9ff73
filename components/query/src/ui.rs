//! The querier's web UI: `/` redirects to `/graph` (an expression box with a table of an instant
//! query or a line graph of a range query, dedup and partial-response toggles), `/stores` (the
//! StoreAPI endpoints from `/api/v1/stores`) and, when rules run in the same process, `/rules`
//! and `/alerts`. One HTML page, one script and one style sheet, embedded in the binary; the
//! script draws each page from the HTTP API (`/api/v1/…`) with the DOM and inline SVG.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The page every UI path serves; the script picks the view from the path.
const INDEX_HTML: &str = include_str!("ui/index.html");
/// The UI's script (plain JavaScript, no build step).
pub const APP_JS: &str = include_str!("ui/app.js");
/// The UI's style sheet.
const STYLE_CSS: &str = include_str!("ui/style.css");

/// What the UI shows besides the query and store pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UiOptions {
    /// Rules run in this process: serve `/rules` and `/alerts` (over `/api/v1/rules` and
    /// `/api/v1/alerts`, which the caller serves) and link them.
    pub rules: bool,
}

fn with_type(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn page(rules: bool) -> Response {
    let html = INDEX_HTML.replace("{{RULES}}", if rules { "true" } else { "false" });
    let mut r = html.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// The UI's routes, to merge with the API router on the same address.
pub fn router(opts: UiOptions) -> Router {
    let rules = opts.rules;
    let mut r = Router::new()
        .route("/", get(|| async { Redirect::to("/graph") }))
        .route("/graph", get(move || async move { page(rules) }))
        .route("/stores", get(move || async move { page(rules) }))
        .route(
            "/ui/app.js",
            get(|| async { with_type(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/style.css",
            get(|| async { with_type(STYLE_CSS, "text/css; charset=utf-8") }),
        );
    if rules {
        r = r
            .route("/rules", get(move || async move { page(rules) }))
            .route("/alerts", get(move || async move { page(rules) }));
    }
    r
}

/// Every `/api/v1/…` path the script calls, in order of first use.
pub fn api_paths_called() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    let mut rest = APP_JS;
    while let Some(i) = rest.find("'/api/v1/") {
        let tail = &rest[i + 1..];
        let Some(end) = tail.find('\'') else { break };
        let path = &tail[..end];
        if !out.contains(&path) {
            out.push(path);
        }
        rest = &tail[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::api::{ApiSettings, MemSource};

    async fn get(app: &Router, path: &str) -> (StatusCode, String, String) {
        let resp = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let loc = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, ct, loc)
    }

    #[tokio::test]
    async fn pages_and_assets_have_their_content_types() {
        let app = router(UiOptions { rules: true });
        let (s, _, loc) = get(&app, "/").await;
        assert!(s.is_redirection(), "{s}");
        assert_eq!(loc, "/graph");
        for p in ["/graph", "/stores", "/rules", "/alerts"] {
            let (s, ct, _) = get(&app, p).await;
            assert_eq!(s, StatusCode::OK, "{p}");
            assert!(ct.starts_with("text/html"), "{p}: {ct}");
        }
        let (s, ct, _) = get(&app, "/ui/app.js").await;
        assert_eq!(
            (s, ct.starts_with("text/javascript")),
            (StatusCode::OK, true)
        );
        let (s, ct, _) = get(&app, "/ui/style.css").await;
        assert_eq!((s, ct.starts_with("text/css")), (StatusCode::OK, true));
    }

    #[tokio::test]
    async fn rule_pages_only_with_rules() {
        let app = router(UiOptions { rules: false });
        assert_eq!(get(&app, "/rules").await.0, StatusCode::NOT_FOUND);
        assert_eq!(get(&app, "/alerts").await.0, StatusCode::NOT_FOUND);
        assert!(page(false).into_response().status().is_success());
        assert!(INDEX_HTML.contains("data-rules=\"{{RULES}}\""));
    }

    #[tokio::test]
    async fn the_script_calls_only_paths_the_api_serves() {
        let paths = api_paths_called();
        for want in [
            "/api/v1/query",
            "/api/v1/query_range",
            "/api/v1/stores",
            "/api/v1/rules",
            "/api/v1/alerts",
        ] {
            assert!(paths.contains(&want), "{want} in {paths:?}");
        }
        let source = MemSource::new(strata_promql::MemQueryable::new());
        let app = crate::api::router(Arc::new(source), ApiSettings::default());
        for p in paths {
            // The rule endpoints are the ruler's (checked in the `strata local` e2e).
            if p == "/api/v1/rules" || p == "/api/v1/alerts" {
                continue;
            }
            let (s, ct, _) = get(&app, &format!("{p}?query=1&start=0&end=60&step=15")).await;
            assert_eq!(s, StatusCode::OK, "{p}");
            assert_eq!(ct, "application/json", "{p}");
        }
    }

    #[test]
    fn the_script_is_valid_javascript() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("app.js");
        std::fs::write(&file, APP_JS).expect("write app.js");
        let out = match std::process::Command::new("node")
            .arg("--check")
            .arg(&file)
            .output()
        {
            Ok(o) => o,
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("node is needed to syntax-check the UI script under CI=true: {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED: node not found ({e}); install Node.js to check app.js");
                return;
            }
        };
        assert!(
            out.status.success(),
            "node --check app.js: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
