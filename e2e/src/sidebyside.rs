//! Side-by-side runs: a query list sent to a reference Prometheus and to a Strata querier over the
//! same data, instant (at the data's end) and range (whole span), answers compared with
//! [`compare`]. Used by the querier and federation e2e tests.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::benchdata::{BenchData, query_lines, standard_queries};
use crate::promapi::{ApiResponse, CompareOptions, PromApi, compare};
use crate::{Error, Result};

/// One expression of a query list.
#[derive(Debug, Clone)]
pub struct ListedQuery {
    /// The PromQL expression.
    pub expr: String,
    /// The reference must reject it (the list says `error:`).
    pub must_fail: bool,
}

/// The shared bench query set plus the queries of `own_list` (lines; `error:` marks a query
/// Prometheus must reject; `#` comments).
pub fn listed_queries(own_list: &Path) -> Result<Vec<ListedQuery>> {
    let own = std::fs::read_to_string(own_list)
        .map_err(Error::io(format!("read {}", own_list.display())))?;
    let mut all: Vec<ListedQuery> = standard_queries()?
        .into_iter()
        .map(|expr| ListedQuery {
            expr,
            must_fail: false,
        })
        .collect();
    for line in query_lines(&own) {
        match line.strip_prefix("error:") {
            Some(expr) => all.push(ListedQuery {
                expr: expr.trim().to_string(),
                must_fail: true,
            }),
            None => all.push(ListedQuery {
                expr: line,
                must_fail: false,
            }),
        }
    }
    Ok(all)
}

/// What a side-by-side run found.
#[derive(Debug, Default)]
pub struct SideBySide {
    /// Queries sent (instant and range count separately).
    pub compared: usize,
    /// Of those, how many the reference answered with a non-empty result.
    pub non_empty: usize,
    /// Of those, how many the reference rejected.
    pub errors: usize,
    /// `(query kind and expression, difference)`.
    pub mismatches: Vec<(String, String)>,
    /// Queries whose answers differed at least once.
    pub mismatched_queries: usize,
    /// List errors: an `error:` query that the reference answered.
    pub list_errors: Vec<String>,
    /// `(reference, ours)` latency of each query.
    pub latencies: Vec<(Duration, Duration)>,
}

impl SideBySide {
    /// The `q`-quantile (0..=1) of the reference's and of our latencies.
    pub fn latency_quantile(&self, q: f64) -> (Duration, Duration) {
        let pick = |mut v: Vec<Duration>| {
            v.sort();
            let i = ((v.len().saturating_sub(1)) as f64 * q.clamp(0.0, 1.0)).round() as usize;
            v.get(i).copied().unwrap_or_default()
        };
        (
            pick(self.latencies.iter().map(|l| l.0).collect()),
            pick(self.latencies.iter().map(|l| l.1).collect()),
        )
    }
}

fn has_data(r: &ApiResponse) -> bool {
    match r.result_type() {
        Some("vector") | Some("matrix") => !r.series().is_empty(),
        Some(_) => true,
        None => false,
    }
}

/// How [`side_by_side`] compares.
#[derive(Debug, Clone)]
pub struct SideBySideOptions<'a> {
    /// Range query step, seconds.
    pub step: f64,
    /// Labels removed from our answers before comparing (e.g. external labels).
    pub drop_labels: &'a [&'a str],
    /// Compare warnings and infos too.
    pub annotations: bool,
}

/// Sends every query to both APIs as an instant query at the data's end and as a range query over
/// its whole span, and compares the answers. Prints one `MISMATCH` line per difference and a
/// summary line. Also records each request's latency (reference, ours) in the report.
#[allow(clippy::print_stdout)] // the report is for the test log
pub async fn side_by_side(
    queries: &[ListedQuery],
    reference: &PromApi,
    ours: &PromApi,
    data: &BenchData,
    opts: &SideBySideOptions<'_>,
) -> Result<SideBySide> {
    let (step, drop_labels) = (opts.step, opts.drop_labels);
    let (start, end) = (data.start_secs(), data.end_secs());
    let mut report = SideBySide::default();
    for q in queries {
        let sorted = q.expr.starts_with("sort");
        for kind in ["instant", "range"] {
            let t0 = Instant::now();
            let r = if kind == "instant" {
                reference.instant(&q.expr, end, &[]).await
            } else {
                reference.range(&q.expr, start, end, step, &[]).await
            };
            let t1 = Instant::now();
            let o = if kind == "instant" {
                ours.instant(&q.expr, end, &[]).await
            } else {
                ours.range(&q.expr, start, end, step, &[]).await
            };
            report.latencies.push((t1 - t0, t1.elapsed()));
            let r = r?;
            let what = format!("{kind} {}", q.expr);
            report.compared += 1;
            if r.is_success() {
                report.non_empty += usize::from(has_data(&r));
                if q.must_fail {
                    report.list_errors.push(what.clone());
                }
            } else {
                report.errors += 1;
            }
            let opts = CompareOptions {
                ordered: sorted && kind == "instant",
                ordered_labels: q.expr.starts_with("sort_by_label"),
                annotations: opts.annotations,
                drop_labels: drop_labels.iter().map(|s| s.to_string()).collect(),
                ..CompareOptions::default()
            };
            let found: Vec<String> = match o {
                Ok(o) => compare(&r, &o, &opts)
                    .into_iter()
                    .map(|m| m.detail)
                    .collect(),
                Err(e) => vec![format!("request failed: {e}")],
            };
            if !found.is_empty() {
                report.mismatched_queries += 1;
            }
            for m in found {
                report.mismatches.push((what.clone(), m));
            }
        }
    }
    for (what, m) in &report.mismatches {
        println!("MISMATCH {what}: {m}");
    }
    for what in &report.list_errors {
        println!("LIST ERROR (reference did not fail) {what}");
    }
    println!(
        "side by side: {} queries ({} instant + range), {} with data, {} errors; {} differ ({} differences)",
        report.compared,
        report.compared / 2,
        report.non_empty,
        report.errors,
        report.mismatched_queries,
        report.mismatches.len()
    );
    Ok(report)
}
