//! JSON bodies of the API, written by hand so numbers come out exactly as Prometheus writes
//! them: sample values as Go-formatted strings, timestamps as seconds with three decimals.

use std::fmt::Write;

use strata_promql::engine::RangeSeries;
use strata_promql::{FloatHistogram, Labels, QueryValue, Sample};

use super::format::{write_float, write_json_str, write_timestamp};

/// Writes a label set as a JSON object (`{"__name__":"up","job":"a"}`).
pub fn write_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_str(out, k);
        out.push(':');
        write_json_str(out, v);
    }
    out.push('}');
}

fn write_float_str(out: &mut String, f: f64) {
    out.push('"');
    write_float(out, f);
    out.push('"');
}

/// `[t,"v"]`.
fn write_point(out: &mut String, t: i64, f: f64) {
    out.push('[');
    write_timestamp(out, t);
    out.push(',');
    write_float_str(out, f);
    out.push(']');
}

/// A native histogram: `{"count":"…","sum":"…","buckets":[[rule,"lower","upper","count"],…]}`;
/// `buckets` is left out when every bucket is empty.
pub fn write_histogram(out: &mut String, h: &FloatHistogram) {
    out.push_str("{\"count\":");
    write_float_str(out, h.count);
    out.push_str(",\"sum\":");
    write_float_str(out, h.sum);
    let buckets: Vec<_> = h.buckets().into_iter().filter(|b| b.count != 0.0).collect();
    if !buckets.is_empty() {
        out.push_str(",\"buckets\":[");
        for (i, b) in buckets.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Prometheus counts -Inf into the first custom bucket (rule 3, closed both sides);
            // `Bucket` from strata-promql marks that bound open, so close it here.
            let mut b = *b;
            if b.lower == f64::NEG_INFINITY {
                b.lower_inclusive = true;
            }
            let _ = write!(out, "[{},", b.boundary_rule());
            write_float_str(out, b.lower);
            out.push(',');
            write_float_str(out, b.upper);
            out.push(',');
            write_float_str(out, b.count);
            out.push(']');
        }
        out.push(']');
    }
    out.push('}');
}

fn write_histogram_point(out: &mut String, t: i64, h: &FloatHistogram) {
    out.push('[');
    write_timestamp(out, t);
    out.push(',');
    write_histogram(out, h);
    out.push(']');
}

fn write_sample(out: &mut String, s: &Sample) {
    out.push_str("{\"metric\":");
    write_labels(out, &s.labels);
    match &s.h {
        Some(h) => {
            out.push_str(",\"histogram\":");
            write_histogram_point(out, s.t, h);
        }
        None => {
            out.push_str(",\"value\":");
            write_point(out, s.t, s.f);
        }
    }
    out.push('}');
}

fn write_series(out: &mut String, s: &RangeSeries) {
    out.push_str("{\"metric\":");
    write_labels(out, &s.labels);
    if !s.points.is_empty() {
        out.push_str(",\"values\":[");
        for (i, (t, f)) in s.points.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_point(out, *t, *f);
        }
        out.push(']');
    }
    if !s.histograms.is_empty() {
        out.push_str(",\"histograms\":[");
        for (i, (t, h)) in s.histograms.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_histogram_point(out, *t, h);
        }
        out.push(']');
    }
    out.push('}');
}

/// Query statistics in Prometheus's `stats` shape (seconds for timings).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryStats {
    /// Whole evaluation (fetch + evaluate), s.
    pub eval_total_s: f64,
    /// Parsing and planning, s.
    pub preparation_s: f64,
    /// Evaluation after the data was fetched, s.
    pub inner_eval_s: f64,
    /// Waiting for a concurrency slot, s.
    pub queue_s: f64,
    /// Queue plus evaluation, s.
    pub exec_total_s: f64,
    /// Samples read from the stores.
    pub total_queryable_samples: u64,
    /// Samples read from storage.
    pub samples_read: u64,
    /// Largest number of samples held at once (approximated, see the module docs).
    pub peak_samples: u64,
}

fn write_seconds(out: &mut String, s: f64) {
    if s.is_finite() {
        let _ = write!(out, "{s}");
    } else {
        out.push('0');
    }
}

fn write_stats(out: &mut String, s: &QueryStats) {
    out.push_str("{\"timings\":{\"evalTotalTime\":");
    write_seconds(out, s.eval_total_s);
    out.push_str(",\"resultSortTime\":0,\"queryPreparationTime\":");
    write_seconds(out, s.preparation_s);
    out.push_str(",\"innerEvalTime\":");
    write_seconds(out, s.inner_eval_s);
    out.push_str(",\"execQueueTime\":");
    write_seconds(out, s.queue_s);
    out.push_str(",\"execTotalTime\":");
    write_seconds(out, s.exec_total_s);
    let _ = write!(
        out,
        "}},\"samples\":{{\"totalQueryableSamples\":{},\"samplesRead\":{},\"peakSamples\":{}}}}}",
        s.total_queryable_samples, s.samples_read, s.peak_samples
    );
}

/// The `data` of a query response: `{"resultType":…,"result":…}` plus `stats` when asked.
/// `t` is the evaluation time, used for string results.
pub fn query_data(value: &QueryValue, t: i64, stats: Option<&QueryStats>) -> String {
    // Room for the usual text (a point is `[1700000000,"123.456"]`, a series' labels some
    // dozens of bytes each), so the text is seldom copied while it grows.
    let guess = match value {
        QueryValue::Matrix(m) => m
            .iter()
            .map(|s| 160 + 32 * (s.points.len() + s.histograms.len()))
            .sum(),
        QueryValue::Vector(v) => 192 * v.len(),
        _ => 0,
    };
    let mut out = String::with_capacity(256 + guess);
    out.push_str("{\"resultType\":");
    match value {
        QueryValue::Scalar(ts, f) => {
            out.push_str("\"scalar\",\"result\":");
            write_point(&mut out, *ts, *f);
        }
        QueryValue::String(s) => {
            out.push_str("\"string\",\"result\":[");
            write_timestamp(&mut out, t);
            out.push(',');
            write_json_str(&mut out, s);
            out.push(']');
        }
        QueryValue::Vector(v) => {
            out.push_str("\"vector\",\"result\":[");
            for (i, s) in v.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sample(&mut out, s);
            }
            out.push(']');
        }
        QueryValue::Matrix(m) => {
            out.push_str("\"matrix\",\"result\":[");
            for (i, s) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_series(&mut out, s);
            }
            out.push(']');
        }
    }
    if let Some(s) = stats {
        out.push_str(",\"stats\":");
        write_stats(&mut out, s);
    }
    out.push('}');
    out
}

/// A JSON array of strings.
pub fn string_array(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_json_str(&mut out, s);
    }
    out.push(']');
    out
}

/// The success envelope: `{"status":"success","data":DATA}` plus `warnings` / `infos` when
/// there are any. `data` must already be JSON.
pub fn success(data: &str, warnings: &[String], infos: &[String]) -> String {
    let mut out = String::with_capacity(data.len() + 64);
    out.push_str("{\"status\":\"success\",\"data\":");
    out.push_str(data);
    if !warnings.is_empty() {
        out.push_str(",\"warnings\":");
        out.push_str(&string_array(warnings));
    }
    if !infos.is_empty() {
        out.push_str(",\"infos\":");
        out.push_str(&string_array(infos));
    }
    out.push('}');
    out
}

/// The error envelope: `{"status":"error","errorType":TYPE,"error":MESSAGE}`.
pub fn error(error_type: &str, message: &str) -> String {
    let mut out = String::from("{\"status\":\"error\",\"errorType\":");
    write_json_str(&mut out, error_type);
    out.push_str(",\"error\":");
    write_json_str(&mut out, message);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};
    use strata_promql::histogram::Span;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap_or_else(|e| panic!("invalid JSON {s}: {e}"))
    }

    #[test]
    fn vector_and_scalar_shapes() {
        let v = QueryValue::Vector(vec![Sample {
            labels: labels(&[("__name__", "up"), ("job", "a")]),
            t: 1_435_781_451_781,
            f: f64::NAN,
            h: None,
        }]);
        let body = query_data(&v, 0, None);
        assert_eq!(
            body,
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a"},"value":[1435781451.781,"NaN"]}]}"#
        );
        assert_eq!(
            parse(&query_data(&QueryValue::Scalar(1000, 2.0), 1000, None)),
            json!({"resultType": "scalar", "result": [1, "2"]})
        );
        assert_eq!(
            parse(&query_data(&QueryValue::String("x".into()), 1500, None)),
            json!({"resultType": "string", "result": [1.5, "x"]})
        );
    }

    #[test]
    fn matrix_with_floats_and_histograms() {
        let h = FloatHistogram {
            schema: 0,
            count: 3.0,
            sum: 5.5,
            zero_count: 1.0,
            zero_threshold: 0.001,
            positive_spans: vec![Span {
                offset: 1,
                length: 2,
            }],
            positive_buckets: vec![2.0, 0.0],
            ..Default::default()
        };
        let m = QueryValue::Matrix(vec![
            RangeSeries {
                labels: labels(&[("a", "b")]),
                points: vec![(1000, 1.0), (2000, f64::INFINITY)],
                histograms: vec![],
            },
            RangeSeries {
                labels: labels(&[("c", "d")]),
                points: vec![],
                histograms: vec![(3000, Arc::new(h))],
            },
        ]);
        assert_eq!(
            parse(&query_data(&m, 0, None)),
            json!({"resultType": "matrix", "result": [
                {"metric": {"a": "b"}, "values": [[1, "1"], [2, "+Inf"]]},
                {"metric": {"c": "d"}, "histograms": [[3, {
                    "count": "3", "sum": "5.5",
                    "buckets": [[3, "-0.001", "0.001", "1"], [0, "1", "2", "2"]]
                }]]}
            ]})
        );
    }

    #[test]
    fn envelopes() {
        assert_eq!(success("[]", &[], &[]), r#"{"status":"success","data":[]}"#);
        assert_eq!(
            parse(&success("1", &["w".into()], &["i".into()])),
            json!({"status": "success", "data": 1, "warnings": ["w"], "infos": ["i"]})
        );
        assert_eq!(
            error("bad_data", "x \"y\""),
            r#"{"status":"error","errorType":"bad_data","error":"x \"y\""}"#
        );
    }

    #[test]
    fn stats_shape() {
        let s = QueryStats {
            total_queryable_samples: 7,
            samples_read: 5,
            peak_samples: 3,
            ..Default::default()
        };
        let v = parse(&query_data(&QueryValue::Scalar(0, 1.0), 0, Some(&s)));
        let stats = &v["stats"];
        for k in [
            "evalTotalTime",
            "resultSortTime",
            "queryPreparationTime",
            "innerEvalTime",
            "execQueueTime",
            "execTotalTime",
        ] {
            assert!(stats["timings"][k].is_number(), "{k}");
        }
        assert_eq!(
            stats["samples"],
            json!({"totalQueryableSamples": 7, "samplesRead": 5, "peakSamples": 3})
        );
    }
}

/// Native histograms as a real Prometheus 3 renders them: Prometheus scrapes a classic
/// histogram from a test target and converts it to a custom-bucket native histogram (NHCB);
/// the same histogram written by [`write_histogram`] must give the same JSON.
#[cfg(test)]
mod prometheus_histogram {
    use std::time::Duration;

    use serde_json::Value;
    use strata_e2e::{Prometheus, wait_until};
    use strata_promql::FloatHistogram;
    use strata_promql::histogram::{CUSTOM_BUCKETS_SCHEMA, Span};

    use super::write_histogram;

    /// Bounds (one below 1e-6, so Prometheus's `e` form shows) and cumulative counts, with an
    /// empty bucket in the middle.
    const EXPOSITION: &str = "# TYPE req_seconds histogram\n\
        req_seconds_bucket{le=\"0.0000005\"} 2\n\
        req_seconds_bucket{le=\"0.1\"} 5\n\
        req_seconds_bucket{le=\"0.5\"} 5\n\
        req_seconds_bucket{le=\"1\"} 9\n\
        req_seconds_bucket{le=\"+Inf\"} 10\n\
        req_seconds_sum 4.25\n\
        req_seconds_count 10\n";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn custom_bucket_histograms_render_as_prometheus_renders_them() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let target = listener.local_addr().expect("addr");
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(|| async {
                ([("content-type", "text/plain; version=0.0.4")], EXPOSITION)
            }),
        );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let prometheus = Prometheus::builder()
            .scrape_config(&format!(
                "job_name: app\nconvert_classic_histograms_to_nhcb: true\nstatic_configs:\n  - targets: ['{target}']"
            ))
            .start()
            .await
            .expect("start prometheus");
        let theirs: Value = wait_until("histogram scraped", Duration::from_secs(60), || async {
            let data = prometheus.query("req_seconds{job=\"app\"}").await.ok()?;
            let h = data["result"][0]["histogram"][1].clone();
            h.is_object().then_some(h)
        })
        .await
        .expect("prometheus has the histogram");

        let h = FloatHistogram {
            schema: CUSTOM_BUCKETS_SCHEMA,
            custom_values: vec![0.0000005, 0.1, 0.5, 1.0],
            positive_spans: vec![Span {
                offset: 0,
                length: 5,
            }],
            positive_buckets: vec![2.0, 3.0, 0.0, 4.0, 1.0],
            count: 10.0,
            sum: 4.25,
            ..Default::default()
        };
        let mut ours = String::new();
        write_histogram(&mut ours, &h);
        let ours: Value = serde_json::from_str(&ours).expect("our JSON");
        assert_eq!(ours, theirs);
        server.abort();
    }
}
