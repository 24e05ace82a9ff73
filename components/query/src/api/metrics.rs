//! Request metrics of the HTTP API: count and latency per route and status code, and the queries
//! in flight — what a dashboard needs to show the querier's load and latency.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    handler: String,
    code: u16,
}

type HistogramFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 5 ms … ~82 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// The API's request metrics; register once, pass in [`super::ApiSettings::metrics`].
#[derive(Debug, Clone)]
pub struct ApiMetrics {
    requests: Family<RouteLabels, Counter>,
    duration: HistogramFamily,
    in_flight: Gauge,
}

impl ApiMetrics {
    /// Registers the metrics under the `strata_query_http` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = ApiMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            in_flight: Gauge::default(),
        };
        let sub = registry.sub_registry_with_prefix("strata_query_http");
        sub.register(
            "requests",
            "API requests by route and HTTP status code",
            m.requests.clone(),
        );
        sub.register(
            "request_duration_seconds",
            "API request latency by route and HTTP status code",
            m.duration.clone(),
        );
        sub.register(
            "requests_in_flight",
            "API requests being answered",
            m.in_flight.clone(),
        );
        m
    }
}

/// Middleware recording one request (use with `route_layer`, so the matched route is known).
pub(super) async fn track(State(m): State<ApiMetrics>, req: Request, next: Next) -> Response {
    let handler = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let start = Instant::now();
    // Decremented on drop too: a request whose client went away is dropped mid-flight.
    let _in_flight = InFlight::enter(&m.in_flight);
    let response = next.run(req).await;
    let labels = RouteLabels {
        handler,
        code: response.status().as_u16(),
    };
    m.requests.get_or_create(&labels).inc();
    m.duration
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    response
}

/// Counts one request in the in-flight gauge for as long as it lives.
struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    fn enter(g: &'a Gauge) -> Self {
        g.inc();
        InFlight(g)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
