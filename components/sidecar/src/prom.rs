//! A client for the parts of Prometheus's HTTP API the sidecar uses: readiness, configuration
//! (external labels), build info, label names/values, series, and streamed remote read.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::pb::{Label, Query, ReadRequest, read_request::ResponseType};
use crate::remote_read::{STREAMED_CONTENT_TYPE, SeriesStream};
use crate::{Error, Result};

/// The most bytes of an error body kept for the error message.
const MAX_ERROR_BODY: usize = 4096;
/// The largest JSON answer accepted from the HTTP API.
const MAX_JSON_BODY: usize = 256 * 1024 * 1024;

/// Talks to one Prometheus server.
#[derive(Debug, Clone)]
pub struct PrometheusClient {
    base: String,
    http: reqwest::Client,
    max_frame_bytes: usize,
}

/// What `/api/v1/status/buildinfo` reports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BuildInfo {
    /// Prometheus's version, e.g. `3.14.0`.
    pub version: String,
    /// The git revision it was built from.
    #[serde(default)]
    pub revision: String,
}

/// A label selector as Prometheus's HTTP API and remote read understand it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// `=`, `!=`, `=~` or `!~`.
    pub kind: MatchKind,
    /// Label name.
    pub name: String,
    /// Value or regular expression.
    pub value: String,
}

/// How a [`Matcher`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
}

impl Matcher {
    /// The matcher in PromQL selector syntax, e.g. `job=~"a|b"`.
    pub fn to_promql(&self) -> String {
        let op = match self.kind {
            MatchKind::Equal => "=",
            MatchKind::NotEqual => "!=",
            MatchKind::Regex => "=~",
            MatchKind::NotRegex => "!~",
        };
        // JSON string escaping is a valid PromQL double-quoted string.
        let value = serde_json::Value::String(self.value.clone()).to_string();
        format!("{}{op}{value}", self.name)
    }

    fn to_pb(&self) -> crate::pb::LabelMatcher {
        use crate::pb::label_matcher::Type;
        let t = match self.kind {
            MatchKind::Equal => Type::Eq,
            MatchKind::NotEqual => Type::Neq,
            MatchKind::Regex => Type::Re,
            MatchKind::NotRegex => Type::Nre,
        };
        crate::pb::LabelMatcher {
            r#type: t as i32,
            name: self.name.clone(),
            value: self.value.clone(),
        }
    }
}

/// Builds a `{a="b",c=~"d"}` selector; `None` for no matchers.
pub fn selector(matchers: &[Matcher]) -> Option<String> {
    if matchers.is_empty() {
        return None;
    }
    let inner: Vec<String> = matchers.iter().map(Matcher::to_promql).collect();
    Some(format!("{{{}}}", inner.join(",")))
}

#[derive(Deserialize)]
struct ApiResponse<T> {
    status: String,
    data: Option<T>,
    #[serde(default)]
    error: String,
    #[serde(default, rename = "errorType")]
    error_type: String,
}

#[derive(Deserialize)]
struct ConfigData {
    yaml: String,
}

#[derive(Deserialize, Default)]
struct PromConfig {
    #[serde(default)]
    global: GlobalConfig,
}

#[derive(Deserialize, Default)]
struct GlobalConfig {
    #[serde(default)]
    external_labels: Option<BTreeMap<String, String>>,
}

/// Parses Prometheus's configuration YAML and returns `global.external_labels`, sorted by name.
pub fn parse_external_labels(yaml: &str) -> Result<Vec<Label>> {
    let config: PromConfig =
        serde_norway::from_str(yaml).map_err(|e| Error::ConfigYaml(e.to_string()))?;
    Ok(config
        .global
        .external_labels
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| Label { name, value })
        .collect())
}

/// Time range and limit of a label or series request (milliseconds; `None` = unbounded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Range {
    /// Inclusive start.
    pub start: Option<i64>,
    /// Inclusive end.
    pub end: Option<i64>,
    /// At most this many results (0 or `None` = all).
    pub limit: Option<u64>,
}

/// Formats milliseconds as the float seconds Prometheus's API accepts.
fn rfc3339ish(ms: i64) -> String {
    let abs = i128::from(ms).abs();
    let sign = if ms < 0 { "-" } else { "" };
    format!("{sign}{}.{:03}", abs / 1000, abs % 1000)
}

/// Prometheus rejects times it cannot represent; the widest times callers send (`i64::MIN`/`MAX` as
/// "unbounded") are left out of the request instead.
fn bounded(ms: Option<i64>) -> Option<i64> {
    // ±2^53 ms keeps float seconds exact and is far beyond any stored sample.
    const LIMIT: i64 = 1 << 53;
    ms.filter(|m| (-LIMIT..=LIMIT).contains(m))
}

impl PrometheusClient {
    /// A client for the Prometheus at `base_url` (e.g. `http://localhost:9090`).
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self> {
        let parsed = reqwest::Url::parse(base_url).map_err(|e| Error::BadUrl {
            url: base_url.to_string(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::BadUrl {
                url: base_url.to_string(),
                reason: "scheme must be http or https".into(),
            });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .build()
            .map_err(|e| Error::Http {
                url: base_url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            base: base_url.trim_end_matches('/').to_string(),
            http,
            max_frame_bytes: crate::remote_read::DEFAULT_MAX_FRAME_BYTES,
        })
    }

    /// Sets the largest remote-read frame accepted.
    pub fn with_max_frame_bytes(mut self, max: usize) -> Self {
        self.max_frame_bytes = max;
        self
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn http_err(url: &str, e: reqwest::Error) -> Error {
        // reqwest's Display hides the cause (connection refused etc.); walk the chain.
        let mut reason = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            reason.push_str(": ");
            reason.push_str(&s.to_string());
            src = s.source();
        }
        Error::Http {
            url: url.to_string(),
            reason,
        }
    }

    /// Succeeds when `/-/ready` answers 200.
    #[tracing::instrument(skip(self), fields(url = %self.base))]
    pub async fn ready(&self) -> Result<()> {
        let url = format!("{}/-/ready", self.base);
        let resp = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| Self::http_err(&url, e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(Error::Status {
                url,
                status: resp.status().as_u16(),
                body: read_error_body(resp).await,
            })
        }
    }

    async fn api<T: DeserializeOwned>(&self, path: &str, params: &[(&str, String)]) -> Result<T> {
        let url = format!("{}/api/v1/{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .query(params)
            .send()
            .await
            .map_err(|e| Self::http_err(&url, e))?;
        let status = resp.status();
        let body = read_limited(resp, MAX_JSON_BODY)
            .await
            .map_err(|e| Self::http_err(&url, e))?
            .ok_or_else(|| Error::BodyTooLarge {
                url: url.clone(),
                max: MAX_JSON_BODY,
            })?;
        let parsed: ApiResponse<T> = serde_json::from_slice(&body).map_err(|e| {
            if status.is_success() {
                Error::Json {
                    url: url.clone(),
                    reason: e.to_string(),
                }
            } else {
                Error::Status {
                    url: url.clone(),
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)]).into(),
                }
            }
        })?;
        if parsed.status != "success" {
            return Err(Error::Api {
                url,
                error_type: parsed.error_type,
                error: parsed.error,
            });
        }
        parsed.data.ok_or_else(|| Error::Json {
            url,
            reason: "success without data".into(),
        })
    }

    /// The external labels from Prometheus's loaded configuration, sorted by name.
    #[tracing::instrument(skip(self), fields(url = %self.base))]
    pub async fn external_labels(&self) -> Result<Vec<Label>> {
        let data: ConfigData = self.api("status/config", &[]).await?;
        parse_external_labels(&data.yaml)
    }

    /// Prometheus's version and revision.
    pub async fn build_info(&self) -> Result<BuildInfo> {
        self.api("status/buildinfo", &[]).await
    }

    /// Prometheus's command-line flags (name without dashes → value).
    pub async fn flags(&self) -> Result<BTreeMap<String, String>> {
        self.api("status/flags", &[]).await
    }

    fn params(matchers: &[Matcher], range: Range) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if let Some(sel) = selector(matchers) {
            p.push(("match[]", sel));
        }
        if let Some(s) = bounded(range.start) {
            p.push(("start", rfc3339ish(s)));
        }
        if let Some(e) = bounded(range.end) {
            p.push(("end", rfc3339ish(e)));
        }
        if let Some(l) = range.limit.filter(|&l| l > 0) {
            p.push(("limit", l.to_string()));
        }
        p
    }

    /// Metric metadata (`/api/v1/metadata`): of `metric` only when non-empty, at most `limit`
    /// metrics when `limit` is not negative.
    #[tracing::instrument(skip(self), fields(url = %self.base))]
    pub async fn metadata(&self, metric: &str, limit: i32) -> Result<BTreeMap<String, Vec<Meta>>> {
        let mut params = Vec::new();
        if !metric.is_empty() {
            params.push(("metric", metric.to_owned()));
        }
        if limit >= 0 {
            params.push(("limit", limit.to_string()));
        }
        self.api("metadata", &params).await
    }

    /// Label names of series matching `matchers` in `range` (`/api/v1/labels`).
    #[tracing::instrument(skip(self), fields(url = %self.base))]
    pub async fn label_names(&self, matchers: &[Matcher], range: Range) -> Result<Vec<String>> {
        let names: Option<Vec<String>> = self.api("labels", &Self::params(matchers, range)).await?;
        Ok(names.unwrap_or_default())
    }

    /// Values of label `name` on series matching `matchers` in `range` (`/api/v1/label/<name>/values`).
    #[tracing::instrument(skip(self), fields(url = %self.base))]
    pub async fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        range: Range,
    ) -> Result<Vec<String>> {
        // Prometheus takes names that are not plain identifiers in the `U__` escaped form; plain names
        // go as they are. Path-escape whatever we send.
        let escaped: String = url_path_escape(name);
        let values: Option<Vec<String>> = self
            .api(
                &format!("label/{escaped}/values"),
                &Self::params(matchers, range),
            )
            .await?;
        Ok(values.unwrap_or_default())
    }

    /// Label sets of series matching `matchers` in `range` (`/api/v1/series`), each sorted by name.
    #[tracing::instrument(skip(self), fields(url = %self.base))]
    pub async fn series(&self, matchers: &[Matcher], range: Range) -> Result<Vec<Vec<Label>>> {
        let mut params = Self::params(matchers, range);
        if matchers.is_empty() {
            // The series API needs a selector; this one matches every series.
            params.insert(0, ("match[]", "{__name__=~\".+\"}".into()));
        }
        let sets: Vec<BTreeMap<String, String>> = self.api("series", &params).await?;
        Ok(sets
            .into_iter()
            .map(|m| {
                m.into_iter()
                    .map(|(name, value)| Label { name, value })
                    .collect()
            })
            .collect())
    }

    /// Remote-reads `[start, end]` with `matchers`, streaming XOR chunks.
    #[tracing::instrument(skip(self), fields(url = %self.base))]
    pub async fn remote_read(
        &self,
        start: i64,
        end: i64,
        matchers: &[Matcher],
    ) -> Result<SeriesStream> {
        let url = format!("{}/api/v1/read", self.base);
        let request = ReadRequest {
            queries: vec![Query {
                start_timestamp_ms: start,
                end_timestamp_ms: end,
                matchers: matchers.iter().map(Matcher::to_pb).collect(),
                hints: None,
            }],
            accepted_response_types: vec![ResponseType::StreamedXorChunks as i32],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .map_err(|e| Error::Snappy(e.to_string()))?;
        let resp = self
            .http
            .post(&url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Read-Version", "0.1.0")
            .body(body)
            .send()
            .await
            .map_err(|e| Self::http_err(&url, e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::Status {
                url,
                status: status.as_u16(),
                body: read_error_body(resp).await,
            });
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if content_type != STREAMED_CONTENT_TYPE {
            return Err(Error::ContentType { url, content_type });
        }
        let body = resp
            .bytes_stream()
            .map(move |r| r.map_err(|e| Self::http_err(&url, e)));
        Ok(SeriesStream::new(body, self.max_frame_bytes))
    }
}

/// One metadata entry of `/api/v1/metadata`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Meta {
    /// Metric type (`counter`, `gauge`, …).
    #[serde(rename = "type", default)]
    pub typ: String,
    /// The HELP text.
    #[serde(default)]
    pub help: String,
    /// The unit.
    #[serde(default)]
    pub unit: String,
}

fn url_path_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads at most `max` bytes of a body; `None` when it is longer.
async fn read_limited(
    resp: reqwest::Response,
    max: usize,
) -> std::result::Result<Option<Vec<u8>>, reqwest::Error> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > max {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

async fn read_error_body(resp: reqwest::Response) -> String {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = MAX_ERROR_BODY.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    String::from_utf8_lossy(&out).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_labels_from_config_yaml() {
        let yaml = "global:\n  scrape_interval: 1s\n  external_labels:\n    zone: \"b\"\n    cluster: a\nscrape_configs: []\n";
        let got = parse_external_labels(yaml).expect("parse");
        let names: Vec<_> = got
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(names, [("cluster", "a"), ("zone", "b")]);
        assert!(
            parse_external_labels("global:\n  scrape_interval: 1s\n")
                .expect("parse")
                .is_empty()
        );
        assert!(parse_external_labels("global: [").is_err());
    }

    #[test]
    fn selectors_escape_values() {
        let m = [
            Matcher {
                kind: MatchKind::Equal,
                name: "a".into(),
                value: "x\"y\\".into(),
            },
            Matcher {
                kind: MatchKind::NotRegex,
                name: "b".into(),
                value: "c|d".into(),
            },
        ];
        assert_eq!(selector(&m).as_deref(), Some(r#"{a="x\"y\\",b!~"c|d"}"#));
        assert_eq!(selector(&[]), None);
    }

    #[test]
    fn bad_urls_are_rejected() {
        assert!(matches!(
            PrometheusClient::new("not a url", Duration::from_secs(1)),
            Err(Error::BadUrl { .. })
        ));
        assert!(matches!(
            PrometheusClient::new("ftp://x", Duration::from_secs(1)),
            Err(Error::BadUrl { .. })
        ));
    }

    #[test]
    fn timestamps_are_float_seconds() {
        assert_eq!(rfc3339ish(1_234), "1.234");
        assert_eq!(rfc3339ish(-1), "-0.001");
        assert_eq!(rfc3339ish(i64::MIN), "-9223372036854775.808");
        assert_eq!(bounded(Some(i64::MIN)), None);
        assert_eq!(bounded(Some(5)), Some(5));
    }
}
