//! Stateless mode's source of old alert state: a [`Queryable`] over Prometheus-compatible query
//! APIs (the querier, or the remote-write receiver's own API). `select` runs one instant query of
//! a range selector, which returns the raw samples; the ruler's external labels are removed from
//! the answer so the series match the alerts' own label sets.

use std::time::Duration;

use promql_parser::label::{MatchOp, Matcher};
use strata_promql::{Labels, Queryable, QueryableError, Series};

use crate::sd::UrlList;
use crate::{Error, Result};

/// Reads series through `/api/v1/query` of the first URL that answers.
#[derive(Debug, Clone)]
pub struct QueryRestore {
    urls: UrlList,
    external_labels: Labels,
    client: reqwest::Client,
}

impl QueryRestore {
    /// A reader over `urls` (base URLs, tried in order, kept current by discovery);
    /// `external_labels` are the ruler's, removed from answers where the value matches.
    pub fn new(urls: UrlList, external_labels: Labels, timeout: Duration) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Config(format!("http client: {e}")))?;
        Ok(Self {
            urls,
            external_labels,
            client,
        })
    }
}

/// A PromQL string literal (double-quoted, escaped).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `{a="b",c=~"d"}[Nms]` selecting raw samples in `[min_t, max_t]` when evaluated at `max_t`.
pub fn range_selector(matchers: &[Matcher], min_t: i64, max_t: i64) -> String {
    let parts: Vec<String> = matchers
        .iter()
        .map(|m| {
            let (op, value) = match &m.op {
                MatchOp::Equal => ("=", m.value.clone()),
                MatchOp::NotEqual => ("!=", m.value.clone()),
                MatchOp::Re(_) => ("=~", m.value.clone()),
                MatchOp::NotRe(_) => ("!~", m.value.clone()),
            };
            let bare =
                m.name.chars().enumerate().all(|(i, c)| {
                    c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
                }) && !m.name.is_empty();
            let name = if bare { m.name.clone() } else { quote(&m.name) };
            format!("{name}{op}{}", quote(&value))
        })
        .collect();
    // A range selector at t covers (t - range, t]: one more ms includes min_t.
    let range = max_t.saturating_sub(min_t).saturating_add(1).max(1);
    format!("{{{}}}[{range}ms]", parts.join(","))
}

fn parse_value(v: &serde_json::Value) -> Option<(i64, f64)> {
    let t = v.get(0)?.as_f64()?;
    let s = v.get(1)?.as_str()?;
    let v = match s {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => s.parse().ok()?,
    };
    Some(((t * 1000.0).round() as i64, v))
}

/// Series of a `matrix` answer, external labels (same name and value) removed.
fn parse_matrix(
    body: &[u8],
    external: &Labels,
) -> std::result::Result<Vec<Series>, QueryableError> {
    let bad = |m: &str| QueryableError::Storage(format!("query answer: {m}"));
    let a: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(&format!("decode: {e}")))?;
    if a["status"] != "success" {
        return Err(bad(a["error"].as_str().unwrap_or("query failed")));
    }
    if a["data"]["resultType"] != "matrix" {
        return Err(bad("not a matrix"));
    }
    let mut out = Vec::new();
    for s in a["data"]["result"].as_array().into_iter().flatten() {
        let mut labels = Labels::new(
            s["metric"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())),
        );
        for (k, v) in external.iter() {
            if labels.get(k) == Some(v.as_str()) {
                labels.remove(k);
            }
        }
        let samples = s["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(parse_value)
            .collect();
        out.push(Series {
            labels,
            samples,
            ..Default::default()
        });
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Queryable for QueryRestore {
    async fn select(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> std::result::Result<Vec<Series>, QueryableError> {
        let query = range_selector(matchers, min_t, max_t);
        let time = format!("{:.3}", max_t as f64 / 1000.0);
        let mut last_err = String::new();
        for base in self.urls.get().iter() {
            let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
            let form = [
                ("query", query.as_str()),
                ("time", time.as_str()),
                ("dedup", "true"),
                ("partial_response", "true"),
            ];
            let resp = match self.client.post(&url).form(&form).send().await {
                Ok(r) => r,
                Err(e) => {
                    last_err = format!("{url}: {e}");
                    continue;
                }
            };
            let status = resp.status();
            let body = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    last_err = format!("{url}: read answer: {e}");
                    continue;
                }
            };
            if status.is_server_error() {
                last_err = format!("{url}: {status}");
                continue;
            }
            return parse_matrix(&body, &self.external_labels);
        }
        Err(QueryableError::Storage(last_err))
    }

    async fn label_names(
        &self,
        _min_t: i64,
        _max_t: i64,
    ) -> std::result::Result<Vec<String>, QueryableError> {
        Err(QueryableError::Unsupported(
            "label names over the query API",
        ))
    }

    async fn label_values(
        &self,
        _name: &str,
        _min_t: i64,
        _max_t: i64,
    ) -> std::result::Result<Vec<String>, QueryableError> {
        Err(QueryableError::Unsupported(
            "label values over the query API",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_covers_min_t_and_quotes_values() {
        let m = [
            Matcher::new(MatchOp::Equal, "__name__", "ALERTS_FOR_STATE"),
            Matcher::new(MatchOp::Equal, "alertname", "A\"b"),
        ];
        assert_eq!(
            range_selector(&m, 1000, 4000),
            r#"{__name__="ALERTS_FOR_STATE",alertname="A\"b"}[3001ms]"#
        );
        assert!(promql_parser::parser::parse(&range_selector(&m, 1000, 4000)).is_ok());
        let dotted = [Matcher::new(MatchOp::Equal, "a.b", "x")];
        assert_eq!(range_selector(&dotted, 0, 0), r#"{"a.b"="x"}[1ms]"#);
    }

    #[test]
    fn matrix_answer_loses_matching_external_labels_only() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"ALERTS_FOR_STATE","alertname":"A","ruler":"r1","env":"x"},
             "values":[[1.5,"100"],[2.5,"NaN"]]}]}}"#;
        let ext = Labels::new([
            ("ruler".to_string(), "r1".to_string()),
            ("env".to_string(), "other".to_string()),
        ]);
        let s = parse_matrix(body, &ext).expect("parse");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].labels.get("ruler"), None);
        assert_eq!(s[0].labels.get("env"), Some("x"), "different value kept");
        assert_eq!(s[0].samples[0], (1500, 100.0));
        assert!(s[0].samples[1].1.is_nan());
        assert!(parse_matrix(br#"{"status":"error","error":"boom"}"#, &ext).is_err());
    }
}
