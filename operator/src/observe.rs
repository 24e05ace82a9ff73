//! What the operator reads from the pods it runs, beyond their Kubernetes status: the compactor's
//! own account of itself (`GET /api/v1/status/compactor` on its HTTP port), which says whether a
//! group halted on overlapping blocks and when the last clean pass ended.

use std::time::Duration;

use serde::Deserialize;

/// How long one read of a pod's status endpoint may take: a reconcile must not hang on a pod.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// The compactor's report, as `strata compact` serves it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompactorReport {
    /// Halted groups, one message each (which blocks overlap, and the fix).
    #[serde(default)]
    pub halted: Vec<HaltedGroup>,
    /// Unix time (seconds) of the end of the last pass with no halt and no failure.
    #[serde(default)]
    pub last_successful_run: Option<f64>,
    /// Passes run since the compactor started.
    #[serde(default)]
    pub passes: u64,
}

/// One halted group.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct HaltedGroup {
    /// The group key.
    #[serde(default)]
    pub group: String,
    /// The two overlapping blocks.
    #[serde(default)]
    pub blocks: Vec<String>,
    /// What the compactor says about it.
    #[serde(default)]
    pub message: String,
}

impl CompactorReport {
    /// Parses the endpoint's JSON body.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(body).map_err(|e| format!("malformed compactor status: {e}"))
    }

    /// `lastSuccessfulRun` as RFC 3339 (seconds precision), if there was one.
    pub fn last_successful_run_rfc3339(&self) -> Option<String> {
        let secs = self.last_successful_run?;
        if !secs.is_finite() || secs <= 0.0 {
            return None;
        }
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a Unix time in seconds fits i64"
        )]
        let ts = k8s_openapi::jiff::Timestamp::from_second(secs.floor() as i64).ok()?;
        Some(ts.to_string())
    }
}

/// The URL of the compactor status endpoint of a pod at `ip` serving HTTP on `port`.
pub fn compactor_status_url(ip: &str, port: i32) -> String {
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    format!("http://{host}:{port}/api/v1/status/compactor")
}

/// Reads and parses a compactor's report; the error is a one-line reason fit for a condition.
pub async fn read_compactor(http: &reqwest::Client, url: &str) -> Result<CompactorReport, String> {
    let resp = http
        .get(url)
        .timeout(READ_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("cannot read {url}: {}", short_reason(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("{url} answered HTTP {}", status.as_u16()));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("cannot read {url}: {}", short_reason(&e)))?;
    CompactorReport::parse(&body)
}

/// A stable, short reason for a failed request (no addresses or timings that change per try, so
/// that an unchanged situation writes an unchanged condition).
fn short_reason(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_decode() || e.is_body() {
        "bad response body"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_compactor_serves() {
        let body = br#"{"halted":[{"group":"0@123","blocks":["01A","01B"],"message":"group 0@123 halted: blocks 01A and 01B overlap (enable vertical compaction to merge them)"}],"lastSuccessfulRun":1765094400.25,"passes":7}"#;
        let r = CompactorReport::parse(body).expect("parse");
        assert_eq!(r.halted.len(), 1);
        assert_eq!(r.halted[0].blocks, ["01A", "01B"]);
        assert!(r.halted[0].message.contains("overlap"));
        assert_eq!(r.passes, 7);
        assert_eq!(
            r.last_successful_run_rfc3339().as_deref(),
            Some("2025-12-07T08:00:00Z")
        );
    }

    #[test]
    fn never_succeeded_and_garbage() {
        let r = CompactorReport::parse(br#"{"halted":[],"lastSuccessfulRun":null,"passes":0}"#)
            .expect("parse");
        assert_eq!(r.last_successful_run_rfc3339(), None);
        let err = CompactorReport::parse(b"<html>").expect_err("not json");
        assert!(err.contains("malformed compactor status"), "{err}");
    }

    #[test]
    fn urls_bracket_ipv6() {
        assert_eq!(
            compactor_status_url("10.0.0.7", 10902),
            "http://10.0.0.7:10902/api/v1/status/compactor"
        );
        assert_eq!(
            compactor_status_url("fd00::7", 10902),
            "http://[fd00::7]:10902/api/v1/status/compactor"
        );
    }
}
