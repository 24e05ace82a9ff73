//! The sidecar against a real Prometheus: Series equals Prometheus's own raw samples, matchers (also on
//! external labels), skip_chunks, batching, limits, label APIs, Info, errors, outage and recovery, TLS.

use std::time::Duration;

use prometheus_client::registry::Registry;
use strata_e2e::{Process, Prometheus, Tool, free_port, tool_path, wait_until};
use strata_runtime::Shutdown;
use strata_sidecar::{RunError, Sidecar, SidecarConfig};
use strata_storeapi::pb::info::{InfoRequest, info_client::InfoClient};
use strata_storeapi::pb::thanos::{
    LabelMatcher, LabelNamesRequest, LabelValuesRequest, Series, SeriesRequest,
    label_matcher::Type, series_response, store_client::StoreClient,
};
use strata_tsdb::chunkenc::{Chunk, Sample};
use tonic::transport::Channel;

fn m(t: Type, name: &str, value: &str) -> LabelMatcher {
    LabelMatcher {
        r#type: t as i32,
        name: name.into(),
        value: value.into(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

struct Running {
    addr: std::net::SocketAddr,
    registry: Registry,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), RunError>>,
}

async fn start_sidecar(config: SidecarConfig) -> Result<Running, RunError> {
    let shutdown = Shutdown::new();
    let mut registry = Registry::default();
    let sidecar = Sidecar::start(config, &mut registry, &shutdown).await?;
    let addr = sidecar.local_addr().expect("bound address");
    let task = tokio::spawn(sidecar.serve(shutdown.clone()));
    Ok(Running {
        addr,
        registry,
        shutdown,
        task,
    })
}

fn config(url: &str) -> SidecarConfig {
    let mut c = SidecarConfig::new(url, "127.0.0.1:0".parse().expect("addr"));
    c.ready_timeout = Duration::from_secs(30);
    c.refresh_interval = Duration::from_secs(1);
    c
}

async fn client(addr: std::net::SocketAddr) -> StoreClient<Channel> {
    StoreClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

/// Runs a Series request and returns all series (batches flattened) and how many responses came.
async fn series(
    c: &mut StoreClient<Channel>,
    req: SeriesRequest,
) -> Result<(Vec<Series>, usize), tonic::Status> {
    let mut stream = c.series(req).await?.into_inner();
    let mut out = Vec::new();
    let mut responses = 0;
    while let Some(resp) = stream.message().await? {
        responses += 1;
        match resp.result {
            Some(series_response::Result::Series(s)) => out.push(s),
            Some(series_response::Result::Batch(b)) => out.extend(b.series),
            _ => {}
        }
    }
    Ok((out, responses))
}

fn labels(s: &Series) -> Vec<(String, String)> {
    s.labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

/// Decodes the series' chunks (Thanos encodings) into float samples within `[start, end]`.
fn samples(s: &Series, start: i64, end: i64) -> Vec<(i64, f64)> {
    let mut out = Vec::new();
    for c in &s.chunks {
        let raw = c.raw.as_ref().expect("raw chunk");
        assert_eq!(raw.r#type, 0, "XOR in Thanos numbering");
        // Thanos XOR (0) is Prometheus encoding 1.
        let chunk = Chunk::new(1, raw.data.clone()).expect("chunk");
        for sample in chunk.samples().expect("decode") {
            match sample {
                Sample::Float { t, v } if t >= start && t <= end => out.push((t, v)),
                Sample::Float { .. } => {}
                other => panic!("`up` has float samples only, got {other:?}"),
            }
        }
    }
    out
}

/// Raw samples of `selector` in `(end - range_s, end]` from Prometheus's own query API.
async fn prometheus_samples(
    p: &Prometheus,
    selector: &str,
    range_s: i64,
    end: i64,
) -> Vec<(i64, f64)> {
    let time = format!("{}.{:03}", end / 1000, end % 1000);
    let data = p
        .api(
            "query",
            &[
                ("query", &format!("{selector}[{range_s}s]")),
                ("time", &time),
            ],
        )
        .await
        .expect("query");
    let result = data["result"].as_array().expect("result");
    assert_eq!(result.len(), 1, "one series: {data}");
    result[0]["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| {
            let t = (v[0].as_f64().expect("t") * 1000.0).round() as i64;
            let val: f64 = v[1].as_str().expect("v").parse().expect("float");
            (t, val)
        })
        .collect()
}

async fn prometheus_with_labels() -> Prometheus {
    let p = Prometheus::builder()
        .external_label("cluster", "eu")
        .external_label("replica", "0")
        .start()
        .await
        .expect("start prometheus");
    // Wait for a few scrapes.
    wait_until("five scrapes of up", Duration::from_secs(30), || async {
        let d = p.query("count_over_time(up[1m])").await.ok()?;
        let n: f64 = d["result"][0]["value"][1].as_str()?.parse().ok()?;
        (n >= 5.0).then_some(())
    })
    .await
    .expect("scrapes");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_labels_and_info_match_prometheus() {
    let p = prometheus_with_labels().await;
    let sc = start_sidecar(config(p.url()))
        .await
        .expect("sidecar starts");
    let mut c = client(sc.addr).await;

    let end = now_ms();
    let start = end - 60_000;
    let up = || m(Type::Eq, "__name__", "up");
    let base = SeriesRequest {
        min_time: start + 1,
        max_time: end,
        matchers: vec![up(), m(Type::Re, "job", "prom.*")],
        ..Default::default()
    };

    // Samples are exactly Prometheus's raw samples in the same window.
    let (got, _) = series(&mut c, base.clone()).await.expect("series");
    assert_eq!(got.len(), 1);
    let names: Vec<_> = labels(&got[0]).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["__name__", "cluster", "instance", "job", "replica"]);
    assert!(labels(&got[0]).contains(&("cluster".into(), "eu".into())));
    let ours = samples(&got[0], start + 1, end);
    let theirs = prometheus_samples(&p, "up{job=\"prometheus\"}", 60, end).await;
    assert!(ours.len() >= 5, "{ours:?}");
    assert_eq!(ours, theirs);

    // External-label matchers: satisfied (eq and regex) → same series; not satisfied → nothing.
    for ext in [
        m(Type::Eq, "cluster", "eu"),
        m(Type::Re, "cluster", "e.|us"),
        m(Type::Neq, "replica", "1"),
    ] {
        let mut req = base.clone();
        req.matchers.push(ext.clone());
        let (s, _) = series(&mut c, req).await.expect("series");
        assert_eq!(s.len(), 1, "{ext:?}");
    }
    for ext in [m(Type::Eq, "cluster", "us"), m(Type::Nre, "replica", "0|1")] {
        let mut req = base.clone();
        req.matchers.push(ext.clone());
        let (s, _) = series(&mut c, req).await.expect("series");
        assert!(s.is_empty(), "{ext:?}");
    }
    // A matcher that selects no series in Prometheus.
    let mut req = base.clone();
    req.matchers.push(m(Type::Eq, "job", "nope"));
    assert!(series(&mut c, req).await.expect("series").0.is_empty());

    // skip_chunks: same labels, no chunks.
    let mut req = base.clone();
    req.skip_chunks = true;
    let (s, _) = series(&mut c, req).await.expect("series");
    assert_eq!(s.len(), 1);
    assert_eq!(labels(&s[0]), labels(&got[0]));
    assert!(s[0].chunks.is_empty());

    // without_replica_labels drops the external replica label.
    let mut req = base.clone();
    req.without_replica_labels = vec!["replica".into()];
    let (s, _) = series(&mut c, req).await.expect("series");
    assert!(!labels(&s[0]).iter().any(|(n, _)| n == "replica"));

    // All series, plain vs batched vs limited.
    let all = SeriesRequest {
        matchers: vec![m(Type::Re, "__name__", ".+")],
        ..base.clone()
    };
    let (plain, plain_responses) = series(&mut c, all.clone()).await.expect("series");
    assert!(
        plain.len() > 20,
        "prometheus exposes many series: {}",
        plain.len()
    );
    assert_eq!(plain_responses, plain.len());
    let mut sorted = plain.iter().map(labels).collect::<Vec<_>>();
    sorted.sort();
    assert_eq!(
        sorted,
        plain.iter().map(labels).collect::<Vec<_>>(),
        "series arrive sorted"
    );
    let mut batched = all.clone();
    batched.response_batch_size = 10;
    let (b, b_responses) = series(&mut c, batched).await.expect("series");
    assert_eq!(b.len(), plain.len());
    assert_eq!(b_responses, plain.len().div_ceil(10));
    let mut limited = all.clone();
    limited.limit = 3;
    assert_eq!(series(&mut c, limited).await.expect("series").0.len(), 3);

    // Invalid requests.
    let mut bad = base.clone();
    bad.matchers.push(m(Type::Re, "job", "("));
    let err = series(&mut c, bad).await.expect_err("bad regex");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let mut inverted = base.clone();
    inverted.min_time = end;
    inverted.max_time = start;
    let err = series(&mut c, inverted).await.expect_err("inverted");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // Label APIs, external labels included.
    let names = c
        .label_names(LabelNamesRequest {
            start,
            end,
            ..Default::default()
        })
        .await
        .expect("names")
        .into_inner()
        .names;
    for n in ["__name__", "cluster", "instance", "job", "replica"] {
        assert!(names.contains(&n.to_string()), "{n} in {names:?}");
    }
    let values = |label: &str, matchers: Vec<LabelMatcher>| LabelValuesRequest {
        label: label.into(),
        start,
        end,
        matchers,
        ..Default::default()
    };
    let job = c
        .label_values(values("job", vec![]))
        .await
        .expect("values")
        .into_inner()
        .values;
    assert_eq!(job, ["prometheus"]);
    let cluster = c
        .label_values(values("cluster", vec![]))
        .await
        .expect("values")
        .into_inner()
        .values;
    assert_eq!(cluster, ["eu"]);
    let none = c
        .label_values(values("job", vec![m(Type::Eq, "cluster", "us")]))
        .await
        .expect("values")
        .into_inner()
        .values;
    assert!(none.is_empty());
    let metric_names = c
        .label_values(values("__name__", vec![m(Type::Eq, "__name__", "up")]))
        .await
        .expect("values")
        .into_inner()
        .values;
    assert_eq!(metric_names, ["up"]);

    // Info.
    let info = InfoClient::connect(format!("http://{}", sc.addr))
        .await
        .expect("connect")
        .info(InfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.component_type, "sidecar");
    let set: Vec<_> = info.label_sets[0]
        .labels
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect();
    assert_eq!(set, [("cluster", "eu"), ("replica", "0")]);
    assert_eq!(info.store.expect("store info").max_time, i64::MAX);

    sc.shutdown.trigger();
    sc.task.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_without_external_labels() {
    let p = Prometheus::builder()
        .start()
        .await
        .expect("start prometheus");
    let err = start_sidecar(config(p.url())).await.err().expect("refused");
    assert!(matches!(err, RunError::NoExternalLabels { .. }), "{err}");
    assert!(err.to_string().contains("external_labels"), "{err}");
}

/// Starts Prometheus on a fixed port (so it can come back on the same address).
async fn prometheus_on(port: u16, dir: &std::path::Path) -> Process {
    prometheus_with(port, dir, "").await
}

/// Starts Prometheus on `port` scraping itself, with `job_extra` lines added to its scrape job.
async fn prometheus_with(port: u16, dir: &std::path::Path, job_extra: &str) -> Process {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  external_labels:\n    cluster: eu\nscrape_configs:\n  - job_name: prometheus\n{job_extra}    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .expect("write config");
    let mut cmd =
        std::process::Command::new(tool_path(Tool::Prometheus).expect("prometheus installed"));
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    let mut p = Process::spawn("prometheus", cmd).expect("spawn");
    p.wait_http_ok(
        &format!("http://127.0.0.1:{port}/-/ready"),
        Duration::from_secs(60),
    )
    .await
    .expect("ready");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_outage_is_unavailable_then_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut prom = prometheus_on(port, dir.path()).await;
    let sc = start_sidecar(config(&format!("http://127.0.0.1:{port}")))
        .await
        .expect("sidecar");
    let mut c = client(sc.addr).await;
    let req = SeriesRequest {
        min_time: now_ms() - 600_000,
        max_time: now_ms() + 60_000,
        matchers: vec![m(Type::Eq, "__name__", "up")],
        ..Default::default()
    };
    wait_until("up is scraped", Duration::from_secs(30), || {
        let mut c = c.clone();
        let req = req.clone();
        async move {
            series(&mut c, req)
                .await
                .ok()
                .filter(|(s, _)| !s.is_empty())
        }
    })
    .await
    .expect("series before the outage");

    prom.kill();
    let err = series(&mut c, req.clone())
        .await
        .expect_err("prometheus is down");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("127.0.0.1"),
        "names the URL: {}",
        err.message()
    );
    let err = c
        .label_names(LabelNamesRequest::default())
        .await
        .expect_err("down");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let metrics = encode(&sc.registry);
    assert!(
        metrics.contains("strata_sidecar_prometheus_up 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strata_sidecar_series_requests_total{outcome=\"error\"} 1"),
        "{metrics}"
    );

    let _prom = prometheus_on(port, dir.path()).await;
    let (s, _) = series(&mut c, req)
        .await
        .expect("works again without a sidecar restart");
    assert_eq!(s.len(), 1);
    assert!(encode(&sc.registry).contains("strata_sidecar_prometheus_up 1"));
    sc.shutdown.trigger();
    sc.task.await.expect("join").expect("clean stop");
}

fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("encode metrics");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_tls() {
    let p = prometheus_with_labels().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    std::fs::write(dir.path().join("tls.crt"), cert.pem()).expect("write");
    std::fs::write(dir.path().join("tls.key"), key.serialize_pem()).expect("write");

    let mut cfg = config(p.url());
    cfg.tls = Some(strata_sidecar::ServerTlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        client_ca: None,
    });
    let sc = start_sidecar(cfg).await.expect("sidecar");
    std::fs::write(dir.path().join("ca.crt"), ca.pem()).expect("write");
    let opts = strata_storeapi::ClientOptions {
        tls: Some(strata_storeapi::ClientTlsFiles {
            ca: Some(dir.path().join("ca.crt")),
            cert: None,
            key: None,
            server_name: Some("localhost".into()),
        }),
        ..Default::default()
    };
    let mut c = strata_storeapi::connect(&format!("127.0.0.1:{}", sc.addr.port()), &opts)
        .await
        .expect("connect over TLS")
        .store;
    let (s, _) = series(
        &mut c,
        SeriesRequest {
            min_time: now_ms() - 60_000,
            max_time: now_ms(),
            matchers: vec![m(Type::Eq, "__name__", "up")],
            ..Default::default()
        },
    )
    .await
    .expect("series over TLS");
    assert_eq!(s.len(), 1);
    // A plaintext client is refused.
    let plain = StoreClient::connect(format!("http://{}", sc.addr)).await;
    if let Ok(mut plain) = plain {
        assert!(
            plain
                .label_names(LabelNamesRequest::default())
                .await
                .is_err()
        );
    }
}

/// Backfills a block with `samples` of `backfilled{src="promtool"}` (ms timestamps) into `dir`.
fn backfill(dir: &std::path::Path, samples: &[(i64, f64)]) {
    let mut om = String::from(
        "# HELP backfilled Backfilled for the sidecar test.\n# TYPE backfilled gauge\n",
    );
    for (t, v) in samples {
        om.push_str(&format!(
            "backfilled{{src=\"promtool\"}} {v} {}.{:03}\n",
            t / 1000,
            t % 1000
        ));
    }
    om.push_str("# EOF\n");
    let input = dir.join("input.om");
    std::fs::write(&input, om).expect("write openmetrics");
    let data = dir.join("data");
    let out = strata_e2e::promtool(&[
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        input.to_str().expect("utf-8 path"),
        data.to_str().expect("utf-8 path"),
    ])
    .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_split_over_many_frames_arrives_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 900 samples, 5 s apart, ending ten minutes ago: several chunks in a block on disk.
    let last = (now_ms() - 600_000) / 1000 * 1000;
    let written: Vec<(i64, f64)> = (0..900)
        .map(|i| (last - (899 - i) * 5_000, (i * i % 1000) as f64 / 8.0))
        .collect();
    backfill(dir.path(), &written);
    // One chunk per frame: Prometheus must split the series into many frames.
    let p = Prometheus::builder()
        .external_label("cluster", "eu")
        .data_dir(&dir.path().join("data"))
        .arg("--storage.remote.read-max-bytes-in-frame=1")
        .start()
        .await
        .expect("start prometheus");
    let sc = start_sidecar(config(p.url())).await.expect("sidecar");
    let mut c = client(sc.addr).await;
    let (first, end) = (written[0].0, last);
    let (got, _) = series(
        &mut c,
        SeriesRequest {
            min_time: first,
            max_time: end,
            matchers: vec![m(Type::Eq, "__name__", "backfilled")],
            ..Default::default()
        },
    )
    .await
    .expect("series");
    assert_eq!(got.len(), 1, "one series, not one per frame");
    assert!(
        got[0].chunks.len() >= 5,
        "several chunks: {}",
        got[0].chunks.len()
    );
    assert_eq!(
        labels(&got[0]),
        [
            ("__name__".to_string(), "backfilled".to_string()),
            ("cluster".into(), "eu".into()),
            ("src".into(), "promtool".into())
        ]
    );
    assert_eq!(samples(&got[0], first, end), written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_histogram_chunks_pass_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _prom = prometheus_with(port, dir.path(), "    scrape_native_histograms: true\n").await;
    let url = format!("http://127.0.0.1:{port}");
    let selector = "prometheus_http_request_duration_seconds{handler=\"/metrics\"}";
    let api = reqwest::Client::new();
    // Wait until a few native histogram samples exist.
    wait_until("native histograms scraped", Duration::from_secs(30), || {
        let api = api.clone();
        let url = url.clone();
        async move {
            let body: serde_json::Value = api
                .get(format!("{url}/api/v1/query"))
                .query(&[("query", format!("{selector}[1m]"))])
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let n = body["data"]["result"][0]["histograms"].as_array()?.len();
            (n >= 4).then_some(())
        }
    })
    .await
    .expect("histograms");

    let sc = start_sidecar(config(&url)).await.expect("sidecar");
    let mut c = client(sc.addr).await;
    let end = now_ms();
    let start = end - 60_000;
    let (got, _) = series(
        &mut c,
        SeriesRequest {
            min_time: start + 1,
            max_time: end,
            matchers: vec![
                m(
                    Type::Eq,
                    "__name__",
                    "prometheus_http_request_duration_seconds",
                ),
                m(Type::Eq, "handler", "/metrics"),
            ],
            ..Default::default()
        },
    )
    .await
    .expect("series");
    assert_eq!(got.len(), 1);
    let mut ours = Vec::new();
    for ch in &got[0].chunks {
        let raw = ch.raw.as_ref().expect("raw");
        assert_eq!(raw.r#type, 1, "HISTOGRAM in Thanos numbering");
        let chunk = Chunk::new(2, raw.data.clone()).expect("histogram chunk");
        for sample in chunk.samples().expect("decode") {
            match sample {
                Sample::Histogram { t, h } if t > start && t <= end => {
                    ours.push((t, h.count, h.sum))
                }
                Sample::Histogram { .. } => {}
                other => panic!("expected integer histograms, got {other:?}"),
            }
        }
    }
    let time = format!("{}.{:03}", end / 1000, end % 1000);
    let body: serde_json::Value = api
        .get(format!("{url}/api/v1/query"))
        .query(&[("query", format!("{selector}[60s]")), ("time", time)])
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    let theirs: Vec<(i64, u64, f64)> = body["data"]["result"][0]["histograms"]
        .as_array()
        .expect("histograms")
        .iter()
        .map(|h| {
            let t = (h[0].as_f64().expect("t") * 1000.0).round() as i64;
            let count = h[1]["count"].as_str().expect("count").parse().expect("int");
            let sum = h[1]["sum"].as_str().expect("sum").parse().expect("float");
            (t, count, sum)
        })
        .collect();
    assert!(ours.len() >= 4, "{ours:?}");
    assert_eq!(ours, theirs);
}

/// `thanos.Metadata` answers from Prometheus's `/api/v1/metadata`: the same entries, `metric`
/// and `limit` forwarded (negative: all), and Info advertises the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_metadata_matches_prometheus() {
    use strata_storeapi::pb::thanos::{
        MetricMetadataRequest, PartialResponseStrategy, metric_metadata_response,
    };
    let p = Prometheus::builder()
        .config(
            "global:\n  scrape_interval: 1s\n  external_labels:\n    replica: a\n\
             scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['PLACEHOLDER']\n",
        )
        .start()
        .await
        .expect("start prometheus");
    let target = p.url().trim_start_matches("http://").to_string();
    let cfg = std::fs::read_to_string(p.config_path()).expect("read config");
    std::fs::write(p.config_path(), cfg.replace("PLACEHOLDER", &target)).expect("write config");
    reqwest::Client::new()
        .post(format!("{}/-/reload", p.url()))
        .send()
        .await
        .expect("reload");
    let metric = "prometheus_http_requests_total";
    wait_until("metadata scraped", Duration::from_secs(30), || async {
        let d = p.api("metadata", &[("metric", metric)]).await.ok()?;
        d.get(metric).is_some().then_some(())
    })
    .await
    .expect("metadata");
    let sc = start_sidecar(config(p.url())).await.expect("sidecar");
    let mut c = strata_storeapi::connect(&sc.addr.to_string(), &Default::default())
        .await
        .expect("connect");
    let info = c
        .info
        .info(InfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert!(info.metric_metadata.is_some(), "metric_metadata advertised");

    let mut ask = async |metric: &str, limit: i32| {
        let mut stream = c
            .metadata
            .metric_metadata(MetricMetadataRequest {
                metric: metric.to_owned(),
                limit,
                partial_response_strategy: PartialResponseStrategy::Abort as i32,
            })
            .await
            .expect("metadata call")
            .into_inner();
        let mut out = serde_json::Map::new();
        while let Some(msg) = stream.message().await.expect("message") {
            match msg.result {
                Some(metric_metadata_response::Result::Metadata(m)) => {
                    for (name, e) in m.metadata {
                        let metas: Vec<serde_json::Value> = e
                            .metas
                            .into_iter()
                            .map(|m| {
                                serde_json::json!({"type": m.r#type, "help": m.help, "unit": m.unit})
                            })
                            .collect();
                        out.insert(name, serde_json::Value::Array(metas));
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        serde_json::Value::Object(out)
    };
    let one = ask(metric, -1).await;
    let want = p
        .api("metadata", &[("metric", metric)])
        .await
        .expect("prometheus metadata");
    assert_eq!(one, want);
    let limited = ask("", 2).await;
    assert_eq!(limited.as_object().map(|o| o.len()), Some(2), "{limited}");
    let all = ask("", -1).await;
    assert!(all.as_object().map(|o| o.len()).unwrap_or(0) > 20, "{all}");
    assert!(all.get(metric).is_some());

    sc.shutdown.trigger();
    sc.task.await.expect("join").expect("clean stop");
}
