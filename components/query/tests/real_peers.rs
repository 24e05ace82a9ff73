//! The fan-out against real peers: two real Prometheus servers (HA replicas `replica=a|b` scraping
//! the same target), each behind a Strata sidecar, discovered through `dns+localhost:port` and a
//! file SD file. The PromQL engine over a view must answer like Prometheus's own HTTP API; dedup
//! merges the replicas; a store that goes away gives a warning (partial response) or an error.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::registry::Registry;
use promql_parser::label::{MatchOp, Matcher};
use strata_e2e::{Prometheus, wait_until};
use strata_promql::{Engine, Labels, QueryValue};
use strata_query::endpoints::{EndpointSet, EndpointSetConfig};
use strata_query::fanout::{FanoutConfig, FanoutSource};
use strata_query::{QueryOptions, StoreSource};
use strata_runtime::Shutdown;
use strata_sidecar::{RunError, Sidecar, SidecarConfig};

struct Running {
    addr: std::net::SocketAddr,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<(), RunError>>,
}

async fn sidecar(url: &str) -> Running {
    let mut c = SidecarConfig::new(url, "127.0.0.1:0".parse().expect("addr"));
    c.ready_timeout = Duration::from_secs(30);
    let shutdown = Shutdown::new();
    let mut registry = Registry::default();
    let s = Sidecar::start(c, &mut registry, &shutdown)
        .await
        .expect("sidecar starts");
    let addr = s.local_addr().expect("addr");
    let task = tokio::spawn(s.serve(shutdown.clone()));
    Running {
        addr,
        shutdown,
        task,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

type Answer = BTreeMap<String, Vec<(i64, f64)>>;

fn json_labels(m: &serde_json::Value) -> String {
    let obj = m.as_object().expect("metric object");
    Labels::new(
        obj.iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("str").to_string())),
    )
    .to_string()
}

fn json_point(v: &serde_json::Value) -> (i64, f64) {
    let t = (v[0].as_f64().expect("t") * 1000.0).round() as i64;
    let f: f64 = v[1].as_str().expect("value").parse().expect("float");
    (t, f)
}

/// Prometheus's answer as labels → points.
fn from_prometheus(data: &serde_json::Value) -> Answer {
    let mut out = Answer::new();
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("vector") => {
            for e in result.as_array().expect("array") {
                out.insert(json_labels(&e["metric"]), vec![json_point(&e["value"])]);
            }
        }
        Some("matrix") => {
            for e in result.as_array().expect("array") {
                let pts = e["values"]
                    .as_array()
                    .expect("values")
                    .iter()
                    .map(json_point)
                    .collect();
                out.insert(json_labels(&e["metric"]), pts);
            }
        }
        Some("scalar") => {
            out.insert(String::new(), vec![json_point(result)]);
        }
        other => panic!("unexpected result type {other:?}: {data}"),
    }
    out
}

/// Our answer as labels → points, without the labels in `drop`.
fn from_engine(v: &QueryValue, drop: &[String]) -> Answer {
    let mut out = Answer::new();
    match v {
        QueryValue::Vector(vs) => {
            for s in vs {
                out.insert(s.labels.drop(drop).to_string(), vec![(s.t, s.f)]);
            }
        }
        QueryValue::Matrix(m) => {
            for s in m {
                out.insert(s.labels.drop(drop).to_string(), s.points.clone());
            }
        }
        QueryValue::Scalar(t, f) => {
            out.insert(String::new(), vec![(*t, *f)]);
        }
        QueryValue::String(s) => panic!("string result {s}"),
    }
    out
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn assert_same(query: &str, ours: &Answer, theirs: &Answer) {
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "{query}: label sets differ"
    );
    for (k, a) in ours {
        let b = &theirs[k];
        assert_eq!(a.len(), b.len(), "{query} {k}: ours {a:?} prometheus {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!(
                x.0 == y.0 && same(x.1, y.1),
                "{query} {k}: ours {a:?} prometheus {b:?}"
            );
        }
    }
}

const QUERIES: &[&str] = &[
    "up",
    "prometheus_tsdb_head_series",
    "rate(prometheus_tsdb_head_samples_appended_total[20s])",
    "sum by (job) (rate(prometheus_http_requests_total[30s]))",
    "max_over_time(process_resident_memory_bytes[30s])",
    "count_over_time(up[30s])",
    "count({__name__=~\"prometheus_tsdb_.*\"})",
    "up offset 5s",
    "resets(prometheus_tsdb_head_samples_appended_total[30s])",
    "prometheus_http_requests_total{handler=~\"/api/v1/.*\", code!=\"200\"}",
    "histogram_quantile(0.9, sum by (le) (rate(prometheus_http_request_duration_seconds_bucket[30s])))",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_over_real_sidecars() {
    // replica a scrapes itself; replica b scrapes the same target (a) with the same job.
    let pa = Prometheus::builder()
        .external_label("replica", "a")
        .start()
        .await
        .expect("start prometheus a");
    let target = pa.url().trim_start_matches("http://").to_string();
    let pb = Prometheus::builder()
        .config(&format!(
            "global:\n  scrape_interval: 1s\n  external_labels:\n    replica: b\n\
             scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['{target}']\n"
        ))
        .start()
        .await
        .expect("start prometheus b");
    for (name, p, n) in [("a", &pa, 25.0), ("b", &pb, 5.0)] {
        wait_until(
            &format!("{n} scrapes on replica {name}"),
            Duration::from_secs(90),
            || async {
                let d = p.query("count_over_time(up[1m])").await.ok()?;
                let got: f64 = d["result"][0]["value"][1].as_str()?.parse().ok()?;
                (got >= n).then_some(())
            },
        )
        .await
        .expect("scrapes");
    }
    let sa = sidecar(pa.url()).await;
    let sb = sidecar(pb.url()).await;

    // Replica a alone: the engine over the fan-out answers as Prometheus a does.
    let only_a = EndpointSet::new(EndpointSetConfig {
        endpoints: vec![sa.addr.to_string()],
        ..Default::default()
    })
    .expect("config");
    only_a.refresh().await;
    let src_a = FanoutSource::new(only_a, FanoutConfig::default());
    let st = src_a.stores();
    assert_eq!(st.len(), 1);
    assert!(st[0].healthy, "{st:?}");
    assert_eq!(st[0].component_type.as_deref(), Some("sidecar"));
    assert_eq!(
        st[0].label_sets,
        vec![Labels::new([("replica".to_string(), "a".to_string())])]
    );
    let engine = Engine::default();
    let t = now_ms() - 3_000;
    let replica = vec!["replica".to_string()];
    let mut compared = 0;
    for q in QUERIES {
        let view = src_a.view(&QueryOptions::default());
        let ours = engine
            .instant_query(view.as_ref(), q, t)
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        assert!(view.warnings().is_empty(), "{q}: {:?}", view.warnings());
        let theirs = pa
            .api("query", &[("query", q), ("time", &secs(t))])
            .await
            .expect("prometheus query");
        let theirs = from_prometheus(&theirs);
        // Every query here has data except the error-code filter (often no non-200 answers).
        assert!(
            !theirs.is_empty() || q.contains("code!="),
            "{q}: prometheus has no data, the comparison would prove nothing"
        );
        compared += theirs.values().map(Vec::len).sum::<usize>();
        assert_same(q, &from_engine(&ours.value, &replica), &theirs);

        let (start, step) = (t - 20_000, 1_000);
        let ours = engine
            .range_query(view.as_ref(), q, start, t, step)
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        let theirs = pa
            .api(
                "query_range",
                &[
                    ("query", q),
                    ("start", &secs(start)),
                    ("end", &secs(t)),
                    ("step", &secs(step)),
                ],
            )
            .await
            .expect("prometheus range query");
        let theirs = from_prometheus(&theirs);
        compared += theirs.values().map(Vec::len).sum::<usize>();
        assert_same(q, &from_engine(&ours.value, &replica), &theirs);
    }
    assert!(compared > 100, "only {compared} points compared");

    // Both replicas, discovered through DNS (localhost) and a file SD file.
    let dir = tempfile::tempdir().expect("tempdir");
    let sd = dir.path().join("stores.yaml");
    std::fs::write(&sd, format!("- targets: ['{}']\n", sb.addr)).expect("write sd file");
    let both = EndpointSet::new(EndpointSetConfig {
        endpoints: vec![format!("dns+localhost:{}", sa.addr.port())],
        sd_files: vec![sd],
        ..Default::default()
    })
    .expect("config");
    both.refresh().await;
    let src = FanoutSource::new(
        both.clone(),
        FanoutConfig {
            replica_labels: replica.clone(),
            store_response_timeout: Duration::from_secs(10),
        },
    );
    let healthy: Vec<String> = src
        .stores()
        .iter()
        .filter(|s| s.healthy)
        .map(|s| s.name.clone())
        .collect();
    assert!(healthy.contains(&sb.addr.to_string()), "{:?}", src.stores());
    assert!(
        healthy
            .iter()
            .any(|a| a.ends_with(&format!(":{}", sa.addr.port()))),
        "{:?}",
        src.stores()
    );
    let t = now_ms() - 3_000;
    let dedup = QueryOptions::default();
    let no_dedup = QueryOptions {
        dedup: false,
        ..Default::default()
    };
    let run = |opts: QueryOptions, q: &'static str| {
        let src = src.clone();
        let engine = engine.clone();
        async move {
            let view = src.view(&opts);
            let r = engine
                .range_query(view.as_ref(), q, t - 30_000, t, 2_000)
                .await;
            (r, view.warnings())
        }
    };
    let (r, w) = run(dedup.clone(), "up").await;
    assert!(w.is_empty(), "{w:?}");
    let ours = from_engine(&r.expect("dedup up").value, &[]);
    let theirs = from_prometheus(
        &pa.api(
            "query_range",
            &[
                ("query", "up"),
                ("start", &secs(t - 30_000)),
                ("end", &secs(t)),
                ("step", "2"),
            ],
        )
        .await
        .expect("prometheus"),
    );
    // One series, equal to one Prometheus's answer (up is 1 on both replicas).
    assert_same("dedup up", &ours, &theirs);
    let (r, _) = run(no_dedup.clone(), "up").await;
    let ours = from_engine(&r.expect("up").value, &[]);
    assert_eq!(ours.len(), 2, "{ours:?}");
    assert!(ours.keys().any(|k| k.contains("replica=\"a\"")));
    assert!(ours.keys().any(|k| k.contains("replica=\"b\"")));
    let (r, _) = run(dedup.clone(), "rate(prometheus_http_requests_total[10s])").await;
    let deduped = from_engine(&r.expect("rate").value, &[]);
    assert!(
        deduped.keys().all(|k| !k.contains("replica")),
        "{deduped:?}"
    );
    let (r, _) = run(
        no_dedup.clone(),
        "rate(prometheus_http_requests_total[10s])",
    )
    .await;
    assert_eq!(
        from_engine(&r.expect("rate").value, &[]).len(),
        2 * deduped.len()
    );

    // Metadata through LabelNames / LabelValues / Series(skip_chunks), replica label hidden.
    let view = src.view(&dedup);
    let (lo, hi) = (t - 20_000, t);
    let range = [("start", secs(lo)), ("end", secs(hi))];
    let range: Vec<(&str, &str)> = range.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let strings = |v: serde_json::Value| -> Vec<String> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|x| x.as_str().expect("string").to_string())
            .collect()
    };
    let names = view.label_names_matching(&[], lo, hi).await.expect("names");
    assert!(!names.contains(&"replica".to_string()), "{names:?}");
    assert_eq!(
        names,
        strings(pa.api("labels", &range).await.expect("labels"))
    );
    let jobs = view
        .label_values_matching("job", &[], lo, hi)
        .await
        .expect("values");
    assert_eq!(jobs, vec!["prometheus"]);
    let up =
        promql_parser::label::Matcher::new(promql_parser::label::MatchOp::Equal, "__name__", "up");
    let series = view
        .series_labels(std::slice::from_ref(&up), lo, hi)
        .await
        .expect("series");
    let mut want = range.clone();
    want.push(("match[]", "up"));
    let theirs = pa.api("series", &want).await.expect("series");
    let theirs: Vec<String> = theirs
        .as_array()
        .expect("array")
        .iter()
        .map(json_labels)
        .collect();
    let ours: Vec<String> = series.iter().map(|l| l.to_string()).collect();
    assert_eq!(ours, theirs);
    assert!(view.warnings().is_empty(), "{:?}", view.warnings());
    let names = src
        .view(&no_dedup)
        .label_names_matching(std::slice::from_ref(&up), lo, hi)
        .await
        .expect("names");
    assert!(names.contains(&"replica".to_string()), "{names:?}");

    // Replica b's store goes away between its health check and the query.
    sb.shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), sb.task).await;
    let (r, w) = run(dedup.clone(), "up").await;
    assert_eq!(from_engine(&r.expect("partial").value, &[]).len(), 1);
    let name = format!("store {}: ", sb.addr);
    assert!(
        w.len() == 1 && w[0].starts_with(&name) && w[0].contains("rpc error"),
        "{w:?}"
    );
    let strict = QueryOptions {
        partial_response: false,
        ..Default::default()
    };
    let (r, _) = run(strict, "up").await;
    let e = r.expect_err("no partial response").to_string();
    assert!(e.contains(&name), "{e}");
    // The next health check marks it down: it is no longer called, but still named in a
    // warning (never silently missing).
    both.refresh().await;
    let down = src
        .stores()
        .into_iter()
        .find(|s| s.name == sb.addr.to_string())
        .expect("still listed");
    assert!(!down.healthy && down.last_error.is_some(), "{down:?}");
    let (r, w) = run(dedup, "up").await;
    assert_eq!(from_engine(&r.expect("up").value, &[]).len(), 1);
    assert!(
        w.len() == 1 && w[0].starts_with(&format!("{name}unhealthy: ")),
        "{w:?}"
    );
    sa.shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), sa.task).await;
}

/// Native histograms scraped by a real Prometheus come through the sidecar's histogram chunks
/// and our decoding with the same timestamps, count, sum and buckets as Prometheus's own API
/// shows. (Read through `select`, the raw path under the engine.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_histograms_through_the_fanout() {
    let p = Prometheus::builder()
        .config(
            "global:\n  scrape_interval: 1s\n  scrape_native_histograms: true\n  external_labels:\n    replica: a\n\
             scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['PLACEHOLDER']\n",
        )
        .start()
        .await;
    // The builder's port is only known after start: rewrite the target and reload.
    let p = p.expect("start prometheus");
    let target = p.url().trim_start_matches("http://").to_string();
    let cfg = std::fs::read_to_string(p.config_path()).expect("read config");
    std::fs::write(p.config_path(), cfg.replace("PLACEHOLDER", &target)).expect("write config");
    reqwest::Client::new()
        .post(format!("{}/-/reload", p.url()))
        .send()
        .await
        .expect("reload");
    let selector = "prometheus_http_request_duration_seconds{handler=\"/metrics\"}";
    wait_until(
        "native histogram samples",
        Duration::from_secs(60),
        || async {
            let d = p
                .query(&format!("count_over_time({selector}[1m])"))
                .await
                .ok()?;
            let n: f64 = d["result"][0]["value"][1].as_str()?.parse().ok()?;
            let h = p.query(selector).await.ok()?;
            (n >= 5.0 && h["result"][0].get("histogram").is_some()).then_some(())
        },
    )
    .await
    .expect("prometheus scrapes native histograms");
    let s = sidecar(p.url()).await;
    let set = EndpointSet::new(EndpointSetConfig {
        endpoints: vec![s.addr.to_string()],
        ..Default::default()
    })
    .expect("config");
    set.refresh().await;
    let src = FanoutSource::new(set, FanoutConfig::default());
    let t = now_ms() - 2_000;
    let view = src.view(&QueryOptions::default());
    // The raw samples of (t - 60s, t], as Prometheus returns them for a range selector.
    let matchers = [
        Matcher::new(
            MatchOp::Equal,
            "__name__",
            "prometheus_http_request_duration_seconds",
        ),
        Matcher::new(MatchOp::Equal, "handler", "/metrics"),
    ];
    let ours = view.select(&matchers, t - 59_999, t).await.expect("select");
    assert!(view.warnings().is_empty(), "{:?}", view.warnings());
    let theirs = p
        .api(
            "query",
            &[("query", &format!("{selector}[1m]")), ("time", &secs(t))],
        )
        .await
        .expect("prometheus");
    let theirs = theirs["result"].as_array().expect("result").clone();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    let ours = &ours[0];
    let jhs = theirs[0]["histograms"]
        .as_array()
        .expect("histogram samples");
    assert!(ours.samples.is_empty());
    assert_eq!(ours.histograms.len(), jhs.len());
    assert!(jhs.len() >= 3, "{jhs:?}");
    let num = |v: &serde_json::Value| -> f64 { v.as_str().expect("str").parse().expect("f64") };
    for ((ts, h), jh) in ours.histograms.iter().zip(jhs) {
        assert_eq!(*ts, (jh[0].as_f64().expect("t") * 1000.0).round() as i64);
        let jh = &jh[1];
        assert_eq!(h.count, num(&jh["count"]), "count");
        assert!(
            same(h.sum, num(&jh["sum"])),
            "sum {} vs {}",
            h.sum,
            jh["sum"]
        );
        let buckets = h.buckets();
        let jb = jh["buckets"].as_array().expect("buckets");
        assert_eq!(buckets.len(), jb.len(), "{buckets:?} vs {jb:?}");
        for (b, j) in buckets.iter().zip(jb) {
            assert_eq!(u64::from(b.boundary_rule()), j[0].as_u64().expect("rule"));
            assert!(
                same(b.lower, num(&j[1])) && same(b.upper, num(&j[2])),
                "{b:?} vs {j}"
            );
            assert_eq!(b.count, num(&j[3]), "{b:?} vs {j}");
        }
    }
    s.shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.task).await;
}

/// Starts a Prometheus scraping itself with `instance` relabelled to `self`, so two replicas
/// produce the same series (with different counter values: each counts its own work).
async fn self_scraping(replica: &str) -> Prometheus {
    let p = Prometheus::builder()
        .config(&format!(
            "global:\n  scrape_interval: 1s\n  external_labels:\n    replica: {replica}\n\
             scrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['PLACEHOLDER']\n\
             \x20   relabel_configs:\n      - target_label: instance\n        replacement: self\n"
        ))
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
    p
}

async fn wait_scrapes(p: &Prometheus, n: f64) {
    wait_until("scrapes", Duration::from_secs(60), || async {
        let d = p.query("count_over_time(up[1m])").await.ok()?;
        let got: f64 = d["result"][0]["value"][1].as_str()?.parse().ok()?;
        (got >= n).then_some(())
    })
    .await
    .expect("scrapes");
}

/// Thanos issue 2890 on real replicas: replica a (older, so its counter is higher) stops for a
/// few seconds, the merge switches to replica b, whose counter is lower. Plain dedup shows a
/// drop there (a fake reset, a `rate` spike); counter-aware dedup, used for `rate`/`resets`,
/// does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_aware_dedup_over_real_replicas() {
    let mut pa = self_scraping("a").await;
    wait_scrapes(&pa, 10.0).await;
    // The range starts while only replica a has data, so the merge begins on a whatever the
    // two replicas' scrape phases are (with both present from the start it may begin on b and
    // never switch, and the fake reset this test needs would not happen).
    let start = now_ms();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pb = self_scraping("b").await;
    wait_scrapes(&pb, 5.0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A gap in replica a: no scrapes while it is stopped.
    pa.process()
        .signal(nix::sys::signal::Signal::SIGSTOP)
        .expect("stop a");
    tokio::time::sleep(Duration::from_secs(5)).await;
    pa.process()
        .signal(nix::sys::signal::Signal::SIGCONT)
        .expect("continue a");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let end = now_ms() - 1_000;

    let (sa, sb) = (sidecar(pa.url()).await, sidecar(pb.url()).await);
    let set = EndpointSet::new(EndpointSetConfig {
        endpoints: vec![sa.addr.to_string(), sb.addr.to_string()],
        ..Default::default()
    })
    .expect("config");
    set.refresh().await;
    let src = FanoutSource::new(
        set,
        FanoutConfig {
            replica_labels: vec!["replica".into()],
            ..Default::default()
        },
    );
    let counter = "prometheus_tsdb_head_samples_appended_total";
    let matchers = [
        Matcher::new(MatchOp::Equal, "__name__", counter),
        Matcher::new(MatchOp::Equal, "type", "float"),
    ];
    let view = src.view(&QueryOptions::default());
    let plain = view.select(&matchers, start, end).await.expect("plain");
    assert_eq!(plain.len(), 1, "{plain:?}");
    let drops = |s: &[(i64, f64)]| s.windows(2).filter(|w| w[1].1 < w[0].1).count();
    assert!(
        drops(&plain[0].samples) > 0,
        "the setup must produce a fake reset under plain dedup: {:?}",
        plain[0].samples
    );
    let hints = strata_promql::SelectHints {
        step_ms: 1_000,
        range_ms: 10_000,
        func: Some("rate".into()),
    };
    let aware = view
        .select_with_hints(&matchers, start, end, &hints)
        .await
        .expect("counter-aware");
    assert_eq!(aware.len(), 1);
    assert_eq!(drops(&aware[0].samples), 0, "{:?}", aware[0].samples);
    assert_eq!(aware[0].samples.len(), plain[0].samples.len());

    // Through the engine: resets() over the merged counter finds none, rate has no spike.
    let engine = Engine::default();
    let q = format!("resets({counter}{{type=\"float\"}}[10s])");
    let r = engine
        .range_query(view.as_ref(), &q, start, end, 1_000)
        .await
        .expect("resets");
    let r = from_engine(&r.value, &[]);
    assert_eq!(r.len(), 1);
    assert!(r.values().flatten().all(|(_, v)| *v == 0.0), "{r:?}");
    let q = format!("rate({counter}{{type=\"float\"}}[5s])");
    let ours = engine
        .range_query(view.as_ref(), &q, start, end, 1_000)
        .await
        .expect("rate");
    let max_ours = from_engine(&ours.value, &[])
        .values()
        .flatten()
        .map(|(_, v)| *v)
        .fold(0.0, f64::max);
    let mut max_replica = 0.0f64;
    for p in [&pa, &pb] {
        let d = p
            .api(
                "query_range",
                &[
                    ("query", q.as_str()),
                    ("start", &secs(start)),
                    ("end", &secs(end)),
                    ("step", "1"),
                ],
            )
            .await
            .expect("replica rate");
        max_replica = from_prometheus(&d)
            .values()
            .flatten()
            .map(|(_, v)| *v)
            .fold(max_replica, f64::max);
    }
    assert!(
        max_ours <= 2.0 * max_replica,
        "rate spike: merged max {max_ours}, replicas' max {max_replica}"
    );
    for s in [sa, sb] {
        s.shutdown.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.task).await;
    }
}

/// Prometheus's `/api/v1/metadata` (optionally of one metric) as name → sorted distinct entries.
async fn prom_metadata(
    p: &Prometheus,
    metric: Option<&str>,
) -> BTreeMap<String, Vec<(String, String, String)>> {
    let params: Vec<(&str, &str)> = metric.map(|m| ("metric", m)).into_iter().collect();
    let data = p
        .api("metadata", &params)
        .await
        .expect("prometheus metadata");
    let mut out = BTreeMap::new();
    for (name, metas) in data.as_object().expect("metadata object") {
        let mut v: Vec<(String, String, String)> = metas
            .as_array()
            .expect("metas")
            .iter()
            .map(|m| {
                let s = |k: &str| m[k].as_str().expect("string field").to_owned();
                (s("type"), s("help"), s("unit"))
            })
            .collect();
        v.sort();
        v.dedup();
        out.insert(name.clone(), v);
    }
    out
}

/// Metric metadata scraped (HELP/TYPE) by two real Prometheus replicas comes through the sidecars'
/// `thanos.Metadata` service and the fan-out merged: equal to the union of what each Prometheus
/// shows, identical entries once; `metric` and `limit` are honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_metadata_through_sidecars() {
    let pa = self_scraping("a").await;
    let pb = self_scraping("b").await;
    wait_scrapes(&pa, 3.0).await;
    wait_scrapes(&pb, 3.0).await;
    let sa = sidecar(pa.url()).await;
    let sb = sidecar(pb.url()).await;
    let set = EndpointSet::new(EndpointSetConfig {
        endpoints: vec![sa.addr.to_string(), sb.addr.to_string()],
        ..Default::default()
    })
    .expect("config");
    set.refresh().await;
    let healthy = set.healthy();
    assert_eq!(healthy.len(), 2, "both sidecars healthy");
    assert!(
        healthy.iter().all(|e| e.info().metric_metadata),
        "sidecars advertise metric_metadata in Info"
    );
    let src = FanoutSource::new(set, FanoutConfig::default());
    let opts = QueryOptions {
        partial_response: false,
        ..Default::default()
    };

    // The scraped families may still change between our call and Prometheus's: retry until equal.
    let (ours, theirs) = wait_until("metadata equal", Duration::from_secs(30), || async {
        let view = src.view(&opts);
        let ours = view.metric_metadata(None, None).await.ok()?;
        let mut theirs = prom_metadata(&pa, None).await;
        for (name, metas) in prom_metadata(&pb, None).await {
            let e = theirs.entry(name).or_default();
            e.extend(metas);
            e.sort();
            e.dedup();
        }
        (ours == theirs).then_some((ours, theirs))
    })
    .await
    .expect("fan-out metadata equals Prometheus's");
    assert_eq!(ours, theirs);
    assert!(ours.len() > 20, "a Prometheus exposes many families");
    let requests = ours
        .get("prometheus_http_requests_total")
        .expect("prometheus_http_requests_total");
    assert_eq!(requests.len(), 1, "both replicas' identical entry once");
    assert_eq!(requests[0].0, "counter");
    assert!(!requests[0].1.is_empty(), "HELP text present");

    let view = src.view(&opts);
    let one = view
        .metric_metadata(Some("prometheus_http_requests_total"), None)
        .await
        .expect("one metric");
    assert_eq!(
        one,
        prom_metadata(&pa, Some("prometheus_http_requests_total")).await
    );
    let limited = view.metric_metadata(None, Some(3)).await.expect("limited");
    assert_eq!(limited.len(), 3);
    for (name, metas) in &limited {
        assert_eq!(Some(metas), ours.get(name), "{name}");
    }
    assert!(view.warnings().is_empty(), "{:?}", view.warnings());

    // The HTTP API over the same fan-out answers as Prometheus's own endpoint.
    let src: std::sync::Arc<dyn StoreSource> = std::sync::Arc::new(src);
    let app = strata_query::api::router(src, strata_query::api::ApiSettings::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api_url = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let metric = "prometheus_http_requests_total";
    let ours: serde_json::Value =
        reqwest::get(format!("{api_url}/api/v1/metadata?metric={metric}"))
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
    assert_eq!(ours["status"], "success");
    let theirs = pa
        .api("metadata", &[("metric", metric)])
        .await
        .expect("prometheus metadata");
    assert_eq!(ours["data"], theirs);
    let ours: serde_json::Value = reqwest::get(format!("{api_url}/api/v1/metadata?limit=2"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(ours["data"].as_object().map(|o| o.len()), Some(2), "{ours}");
    server.abort();

    for s in [sa, sb] {
        s.shutdown.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.task).await;
    }
}

/// Wire compatibility of `thanos.Metadata` both ways: a real `thanos query` reads metric metadata
/// from a Strata sidecar, and our fan-out reads it from a real Thanos sidecar; both equal
/// Prometheus's own `/api/v1/metadata`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_metadata_interoperates_with_thanos() {
    let p = self_scraping("a").await;
    wait_scrapes(&p, 3.0).await;
    let ours = sidecar(p.url()).await;
    let thanos_sidecar = strata_e2e::ThanosSidecar::start(p.url(), p.data_dir(), None)
        .await
        .expect("start thanos sidecar");
    let query = strata_e2e::ThanosQuery::builder()
        .endpoint(&ours.addr.to_string())
        .start()
        .await
        .expect("start thanos query");
    let metric = "prometheus_http_requests_total";
    let want = p
        .api("metadata", &[("metric", metric)])
        .await
        .expect("prometheus metadata");
    assert!(want[metric].is_array(), "{want}");
    let got = wait_until("thanos query metadata", Duration::from_secs(60), || async {
        let v = query.api("metadata", &[("metric", metric)]).await.ok()?;
        v.get(metric).is_some().then_some(v)
    })
    .await
    .expect("thanos query reads metadata from the strata sidecar");
    assert_eq!(got, want);

    let set = EndpointSet::new(EndpointSetConfig {
        endpoints: vec![thanos_sidecar.grpc_address().to_string()],
        ..Default::default()
    })
    .expect("config");
    set.refresh().await;
    let healthy = set.healthy();
    assert_eq!(healthy.len(), 1, "thanos sidecar healthy");
    assert!(
        healthy[0].info().metric_metadata,
        "thanos advertises metadata"
    );
    let src = FanoutSource::new(set, FanoutConfig::default());
    let opts = QueryOptions {
        partial_response: false,
        ..Default::default()
    };
    let view = src.view(&opts);
    let from_thanos = view
        .metric_metadata(Some(metric), None)
        .await
        .expect("metadata from thanos sidecar");
    assert_eq!(from_thanos, prom_metadata(&p, Some(metric)).await);
    assert_eq!(from_thanos.len(), 1);

    ours.shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), ours.task).await;
}
