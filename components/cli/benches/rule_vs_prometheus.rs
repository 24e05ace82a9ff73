//! Rule evaluation throughput against Prometheus on the same data, in the same run: ONE group of
//! 1 000 recording rules (a quarter each of `sum by (…) (rate(counter[w]))`,
//! `histogram_quantile` over the classic histogram buckets, `avg_over_time` of the gauges, and
//! `count by (…)` of the high-cardinality `kube_pod_info` family, with varied matchers, windows and
//! grouping labels so that every rule is distinct), checked with the real `promtool check rules`.
//!
//! Data: the shared bench set (`gen-openmetrics`, started so that it ends a few minutes before the
//! bench starts), backfilled into blocks with the real promtool. Every selector carries
//! `offset 1h`, so every evaluation reads one hour back, inside the data, while its results are
//! written at the current time (after the blocks, as Prometheus requires). The group's
//! `query_offset` is not used: Prometheus writes a group's results at the evaluation time minus
//! `query_offset`, which would land inside the backfilled blocks ("out of bounds").
//!
//! Three evaluators, one after the other (never two at once, so they do not share the CPU):
//! 1. **prometheus**: a real Prometheus 3.x over a copy of the blocks, the rule file in its config;
//!    `prometheus_rule_group_last_duration_seconds` is read from its `/metrics` after every
//!    evaluation. Its rules are then removed (reload) so it stays idle while it answers the checks.
//! 2. **strata rule**: `strata rule` over `strata query` over `strata store` serving the same blocks
//!    from a real MinIO bucket (the deployment shape: no Prometheus in the path);
//!    `strata_rule_group_last_duration_seconds` is read from the ruler's `/metrics`.
//! 3. **embedded**: `strata_rule`'s group evaluation in this process with the embedded engine over
//!    the ruler's local storage opened on a copy of the blocks, its results appended to a second
//!    local storage (WAL included), back to back (like Prometheus evaluating its local TSDB).
//!
//! The first evaluation of each is a warm-up and not counted. The table shows the median group
//! duration, rules/s (1 000 / median) and the ratio Prometheus median / our median (above 1 means
//! ours is faster). Correctness: the embedded evaluation at Prometheus's last evaluation time must
//! record exactly the series Prometheus recorded (all rules); the ruler's recorded series at its
//! last evaluation (read back through a `strata query` over the ruler's StoreAPI) must equal what
//! Prometheus answers for every rule's expression at the same time. Mismatches are counted and
//! printed; nothing is asserted about time.
//!
//! Run with `cargo bench -p strata --bench rule_vs_prometheus`. Knobs (environment):
//! `STRATA_BENCH_TARGETS` (default 50), `STRATA_BENCH_HOURS` (3), `STRATA_BENCH_EVALS` (5, after
//! the warm-up), `STRATA_BENCH_INTERVAL` (group interval in seconds, 15).
//! `cargo test --benches` runs it without `--bench`: then it only checks that it was built.

#![allow(clippy::print_stdout, clippy::expect_used, clippy::unwrap_used)] // a benchmark reports on stdout; fixtures are ours

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::registry::Registry;
use serde_json::Value;
use strata_e2e::{
    BenchData, Minio, PromApi, Prometheus, StrataQuery, StrataServer, StrataStore, promtool,
    wait_until,
};
use strata_promql::{Engine, Labels, QueryValue};
use strata_rule::alerts::AlertOptions;
use strata_rule::eval::{EmbeddedEngine, EvalContext, GroupState, RuleMetrics, eval_group};
use strata_rule::storage::{LocalStorage, StorageOptions};
use strata_rule::{Alert, Notify};

/// Every selector's `offset`, seconds: evaluations read one hour back, inside the data.
const OFFSET_S: i64 = 3600;
/// Rules in the group.
const RULES: usize = 1000;
/// Labels that differ by design between the sides: the store's and the ruler's external labels.
const DROPPED: [&str; 2] = ["cluster", "ruler"];
/// Selects every recorded series.
const RECORDED: &str = r#"{__name__=~"bench:.+"}"#;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

/// A selector: `name` or `name{matchers}`.
fn sel(name: &str, matchers: &str) -> String {
    if matchers.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{matchers}}}")
    }
}

/// `agg by (labels) (inner)`, or `agg(inner)` without grouping labels.
fn agg(op: &str, by: &str, inner: &str) -> String {
    if by.is_empty() {
        format!("{op}({inner})")
    } else {
        format!("{op} by ({by}) ({inner})")
    }
}

/// The 1 000 rules: (record name, expression), the four kinds interleaved.
fn bench_rules() -> Vec<(String, String)> {
    let per_kind = RULES / 4;
    let namespaces: Vec<String> = (0..7).map(|i| format!(r#"namespace="ns{i}""#)).collect();

    let mut rate = Vec::new();
    let rate_sels = [
        r#"method="GET""#,
        r#"method="POST""#,
        r#"method=~"PUT|DELETE""#,
        r#"code="200""#,
        r#"code!="200""#,
        r#"code=~"5..""#,
        r#"namespace="ns1""#,
        r#"namespace=~"ns[2-4]""#,
        r#"namespace!="ns0",method="GET""#,
    ];
    for w in ["1m", "2m", "5m", "10m", "15m"] {
        for by in [
            "namespace",
            "instance",
            "method",
            "code",
            "namespace, method",
            "job",
        ] {
            for s in rate_sels {
                let inner = format!("rate({}[{w}] offset 1h)", sel("http_requests_total", s));
                rate.push(agg("sum", by, &inner));
            }
        }
    }

    let mut quantile = Vec::new();
    let mut hist_sels: Vec<String> = vec![String::new(), r#"job="api""#.into()];
    hist_sels.extend(namespaces.iter().cloned());
    hist_sels.push(r#"instance=~"10.0.0.1.*""#.into());
    for by in ["le", "le, namespace", "le, instance"] {
        for w in ["1m", "5m", "10m"] {
            for s in &hist_sels {
                for q in ["0.5", "0.9", "0.95", "0.99"] {
                    let inner = format!(
                        "rate({}[{w}] offset 1h)",
                        sel("http_request_duration_seconds_bucket", s)
                    );
                    quantile.push(format!(
                        "histogram_quantile({q}, {})",
                        agg("sum", by, &inner)
                    ));
                }
            }
        }
    }

    let mut gauge = Vec::new();
    let mut gauge_sels: Vec<String> = vec![String::new(), r#"job="api""#.into()];
    gauge_sels.extend(namespaces.iter().cloned());
    for w in ["1m", "5m", "10m", "15m", "30m"] {
        for s in &gauge_sels {
            for metric in ["process_resident_memory_bytes", "up"] {
                let inner = format!("avg_over_time({}[{w}] offset 1h)", sel(metric, s));
                gauge.push(inner.clone());
                gauge.push(agg("avg", "namespace", &inner));
                gauge.push(agg("max", "namespace", &inner));
            }
        }
    }

    let mut count = Vec::new();
    let mut pod_sels: Vec<String> = vec![
        String::new(),
        r#"node=~"node-1.*""#.into(),
        r#"node=~"node-[23].*""#.into(),
    ];
    pod_sels.extend(namespaces.iter().cloned());
    pod_sels.extend((0..40).map(|i| format!(r#"node="node-{i}""#)));
    for windowed in [false, true] {
        for s in &pod_sels {
            for by in ["namespace", "node", "namespace, node", ""] {
                let series = sel("kube_pod_info", s);
                let inner = if windowed {
                    format!("last_over_time({series}[10m] offset 1h)")
                } else {
                    format!("{series} offset 1h")
                };
                count.push(agg("count", by, &inner));
            }
        }
    }

    let kinds = [
        ("rate", rate),
        ("quantile", quantile),
        ("gauge", gauge),
        ("count", count),
    ];
    for (name, list) in &kinds {
        assert!(list.len() >= per_kind, "{name}: only {} rules", list.len());
    }
    let mut out = Vec::with_capacity(RULES);
    for i in 0..per_kind {
        for (name, list) in &kinds {
            let n = out.len();
            out.push((format!("bench:r{n:04}:{name}"), list[i].clone()));
        }
    }
    out
}

/// The rule file: one group `bench` with all rules.
fn rule_file(rules: &[(String, String)], interval_s: u64) -> String {
    let mut y = format!("groups:\n  - name: bench\n    interval: {interval_s}s\n    rules:\n");
    for (record, expr) in rules {
        // A JSON string is a valid YAML double-quoted scalar.
        y.push_str(&format!(
            "      - record: {record}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    y
}

/// One evaluator's measured evaluations.
struct Measured {
    /// Evaluation timestamps (ms), oldest first, warm-up excluded.
    timestamps: Vec<i64>,
    /// Group durations, seconds, in the same order.
    durations: Vec<f64>,
    /// Iterations missed because an evaluation overran the interval.
    missed: f64,
    /// Rule evaluation failures.
    failures: f64,
}

/// The value of the first sample of `name` (followed by `{` or a space) in a text exposition.
fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            return None;
        }
        l.rsplit(' ').next()?.parse().ok()
    })
}

/// Polls `<url>/metrics` until `evals` evaluations after a warm-up were seen (`prefix` is
/// `prometheus_rule` or `strata_rule`; the bench has one group, so the first sample is its own).
async fn measure(client: &reqwest::Client, url: &str, prefix: &str, evals: usize) -> Measured {
    let last_duration = format!("{prefix}_group_last_duration_seconds");
    let last_eval = format!("{prefix}_group_last_evaluation_timestamp_seconds");
    let mut seen: BTreeMap<i64, f64> = BTreeMap::new();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(3600);
    while seen.len() < evals + 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(resp) = client.get(format!("{url}/metrics")).send().await else {
            continue;
        };
        let Ok(body) = resp.text().await else {
            continue;
        };
        text = body;
        let (Some(ts), Some(d)) = (
            metric_value(&text, &last_eval),
            metric_value(&text, &last_duration),
        ) else {
            continue;
        };
        if ts > 0.0 {
            let ts_ms = (ts * 1000.0).round() as i64;
            let fresh = !seen.contains_key(&ts_ms);
            seen.insert(ts_ms, d);
            if fresh {
                println!("  {prefix}: evaluation at {ts:.3} took {:.3} s", d);
            }
        }
    }
    if seen.len() < evals + 1 {
        println!(
            "  {prefix}: only {} evaluations seen before the deadline",
            seen.len()
        );
    }
    let kept: Vec<(i64, f64)> = seen.into_iter().skip(1).collect();
    Measured {
        timestamps: kept.iter().map(|p| p.0).collect(),
        durations: kept.iter().map(|p| p.1).collect(),
        // Our counters appear at their first increment: absent means zero.
        missed: metric_value(&text, &format!("{prefix}_group_iterations_missed_total"))
            .unwrap_or(0.0),
        failures: metric_value(&text, &format!("{prefix}_evaluation_failures_total"))
            .unwrap_or(0.0),
    }
}

/// A series' identity: its sorted labels without [`DROPPED`].
fn key<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut v: Vec<(&str, &str)> = pairs.filter(|(k, _)| !DROPPED.contains(k)).collect();
    v.sort_unstable();
    let inner: Vec<String> = v.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(","))
}

/// An API vector answer as key → value, `__name__` set to `name` when given.
fn api_vector(series: &[Value], name: Option<&str>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in series {
        let mut labels: Vec<(&str, &str)> = s["metric"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.as_str() != "__name__")
                    .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        let own_name = s["metric"]["__name__"].as_str();
        if let Some(n) = name.or(own_name) {
            labels.push(("__name__", n));
        }
        let v = strata_e2e::parse_value(&s["value"][1]).unwrap_or(f64::NAN);
        out.insert(key(labels.into_iter()), v);
    }
    out
}

fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-12
}

/// Series missing on either side or with different values; prints the first few.
fn mismatches(what: &str, expected: &BTreeMap<String, f64>, got: &BTreeMap<String, f64>) -> usize {
    let mut bad = Vec::new();
    for (k, e) in expected {
        match got.get(k) {
            None => bad.push(format!("missing {k} (expected {e})")),
            Some(g) if !same_value(*e, *g) => bad.push(format!("{k}: expected {e}, got {g}")),
            Some(_) => {}
        }
    }
    for k in got.keys().filter(|k| !expected.contains_key(*k)) {
        bad.push(format!("unexpected {k}"));
    }
    for b in bad.iter().take(5) {
        println!("  {what} mismatch: {b}");
    }
    bad.len()
}

/// The newest recorded sample's timestamp (ms) at or before `at_ms`, read with `timestamp()`.
async fn sample_time(api: &PromApi, at_ms: i64) -> i64 {
    // One record (`timestamp` drops names, so several records would collide); the first rule
    // always has results.
    let expr = "max(timestamp(bench:r0000:rate))";
    let r = api
        .instant(expr, at_ms as f64 / 1000.0 + 1.0, &[])
        .await
        .expect("query the recorded samples' time");
    let v = r
        .series()
        .first()
        .and_then(|s| strata_e2e::parse_value(&s["value"][1]))
        .expect("recorded samples");
    (v * 1000.0).round() as i64
}

struct NoAlerts;

impl Notify for NoAlerts {
    fn send(&self, _alerts: Vec<Alert>) {}
}

/// A result row.
struct Row {
    name: &'static str,
    durations: Vec<f64>,
    missed: f64,
    failures: f64,
    checked: usize,
    /// `None` for the reference (Prometheus).
    mismatched: Option<usize>,
}

async fn run() {
    let targets = env_or("STRATA_BENCH_TARGETS", 50).to_string();
    let hours = env_or("STRATA_BENCH_HOURS", 3).max(2);
    let evals = env_or("STRATA_BENCH_EVALS", 5).max(1) as usize;
    let interval_s = env_or("STRATA_BENCH_INTERVAL", 15).max(1);
    // The data ends five minutes before now (15s-aligned), so results (written at now) come after it.
    let start = (now_s() - hours as i64 * 3600 - 300) / 15 * 15;
    let (hours_s, start_s) = (hours.to_string(), start.to_string());
    let gen_args = [
        "--targets",
        targets.as_str(),
        "--hours",
        hours_s.as_str(),
        "--start",
        start_s.as_str(),
    ];
    let data = BenchData::generate(&gen_args).expect("bench data");
    let work = tempfile::tempdir().expect("tempdir");
    let rules = bench_rules();
    let rules_path = work.path().join("rules.yml");
    std::fs::write(&rules_path, rule_file(&rules, interval_s)).expect("write rules");
    let path_s = rules_path.to_string_lossy().into_owned();
    let check = promtool(&["check", "rules", path_s.as_str()]).expect("run promtool");
    assert!(
        check.status.success(),
        "promtool check rules failed: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    println!(
        "rule_vs_prometheus: gen-openmetrics {} ({} samples, {} block series); one group of {} recording rules, interval {interval_s}s, every selector `offset 1h`; promtool check rules: ok",
        gen_args.join(" "),
        data.samples(),
        data.block_series(),
        rules.len()
    );
    let client = reqwest::Client::new();
    let mut rows = Vec::new();

    // 1. Prometheus.
    let prom_blocks = data.copy_to("prometheus").expect("copy blocks");
    let prometheus = Prometheus::builder()
        .config(&format!(
            "global:\n  evaluation_interval: {interval_s}s\nrule_files:\n  - {}\n",
            serde_json::to_string(&path_s).unwrap()
        ))
        .data_dir(&prom_blocks)
        .arg("--storage.tsdb.retention.time=100y")
        // No compaction of the backfilled blocks while the rules run.
        .arg("--storage.tsdb.max-block-duration=2h")
        .start()
        .await
        .expect("start Prometheus");
    println!("measuring prometheus…");
    let prom = measure(&client, prometheus.url(), "prometheus_rule", evals).await;
    let last = *prom.timestamps.last().expect("a Prometheus evaluation");
    let prom_api = PromApi::new(prometheus.url(), Duration::from_secs(300)).expect("client");
    // The metric holds the wall-clock start; the samples carry the (aligned) evaluation time.
    let tp_ms = sample_time(&prom_api, last).await;
    let recorded = prom_api
        .instant(RECORDED, tp_ms as f64 / 1000.0, &[])
        .await
        .expect("query Prometheus's recorded series");
    let prom_recorded = api_vector(recorded.series(), None);
    // Idle from now on: no rules (it still answers the checks).
    std::fs::write(&rules_path, "groups: []\n").expect("empty rules");
    let reload = client
        .post(format!("{}/-/reload", prometheus.url()))
        .send()
        .await
        .expect("reload Prometheus");
    assert!(reload.status().is_success(), "reload: {}", reload.status());
    std::fs::write(&rules_path, rule_file(&rules, interval_s)).expect("write rules");
    rows.push(Row {
        name: "prometheus",
        durations: prom.durations,
        missed: prom.missed,
        failures: prom.failures,
        checked: prom_recorded.len(),
        mismatched: None,
    });

    // 3 (run second: it needs Prometheus's last evaluation time). The embedded engine.
    println!("measuring the embedded engine…");
    let row = embedded(&data, &rules_path, interval_s, evals, tp_ms, &prom_recorded).await;
    rows.push(row);

    // 2. strata rule -> strata query -> strata store -> MinIO.
    let binary = Path::new(env!("CARGO_BIN_EXE_strata"));
    let minio = Minio::start().await.expect("start MinIO");
    minio.create_bucket("bench").await.expect("bucket");
    let upload = data.copy_to("bucket").expect("copy blocks");
    minio
        .upload_blocks("bench", &upload, &[("cluster", "bench")])
        .await
        .expect("upload blocks");
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = StrataStore::start(binary, &minio.objstore_yaml("bench"), store_dir.path(), &[])
        .await
        .expect("start strata store");
    let query = StrataQuery::builder(binary)
        .endpoint(store.grpc_address())
        .start()
        .await
        .expect("start strata query");
    let query_api = PromApi::new(query.url(), Duration::from_secs(300)).expect("client");
    let probe_at = (tp_ms / 1000 - OFFSET_S) as f64;
    wait_until(
        "strata query sees the data",
        Duration::from_secs(120),
        || async {
            let r = query_api.instant("count(up)", probe_at, &[]).await.ok()?;
            (!r.series().is_empty()).then_some(())
        },
    )
    .await
    .expect("querier ready");
    let ruler_dir = tempfile::tempdir().expect("tempdir");
    let mut ruler = StrataServer::new(
        binary,
        "rule",
        &[
            format!("--rule-file={path_s}"),
            format!("--query={}", query.url()),
            format!("--eval-interval={interval_s}s"),
            format!("--data-dir={}", ruler_dir.path().display()),
            r#"--label=ruler="bench""#.to_string(),
        ],
        true,
    );
    ruler.start().await.expect("start strata rule");
    println!("measuring strata rule…");
    let ours = measure(&client, ruler.url(), "strata_rule", evals).await;
    let last = *ours.timestamps.last().expect("a ruler evaluation");
    // What the ruler recorded, through a querier over its StoreAPI…
    let readback = StrataQuery::builder(binary)
        .endpoint(ruler.grpc_address().expect("ruler gRPC"))
        .start()
        .await
        .expect("start strata query over the ruler");
    let readback_api = PromApi::new(readback.url(), Duration::from_secs(300)).expect("client");
    wait_until(
        "the ruler's results are readable",
        Duration::from_secs(60),
        || async {
            let r = readback_api
                .instant(RECORDED, last as f64 / 1000.0, &[])
                .await
                .ok()?;
            (!r.series().is_empty()).then_some(())
        },
    )
    .await
    .expect("ruler results");
    let ts_ms = sample_time(&readback_api, last).await;
    let r = readback_api
        .instant(RECORDED, ts_ms as f64 / 1000.0, &[])
        .await
        .expect("query the ruler's results");
    let got = api_vector(r.series(), None);
    // …against Prometheus evaluating every rule's expression at the same time.
    let mut expected = BTreeMap::new();
    let at = ts_ms as f64 / 1000.0;
    for (record, expr) in &rules {
        let r = prom_api
            .instant(expr, at, &[])
            .await
            .expect("Prometheus answers");
        expected.extend(api_vector(r.series(), Some(record)));
    }
    let mismatched = mismatches("strata rule", &expected, &got);
    rows.push(Row {
        name: "strata rule",
        durations: ours.durations,
        missed: ours.missed,
        failures: ours.failures,
        checked: expected.len(),
        mismatched: Some(mismatched),
    });

    print_table(&rows, rules.len());
}

/// The embedded evaluation: the group evaluated in this process over a local storage opened on a
/// copy of the blocks; first at Prometheus's last evaluation time (compared with what Prometheus
/// recorded), then `evals` more times back to back, timed.
async fn embedded(
    data: &BenchData,
    rules_path: &Path,
    interval_s: u64,
    evals: usize,
    tp_ms: i64,
    prom_recorded: &BTreeMap<String, f64>,
) -> Row {
    let year_ms = 365 * 24 * 3600 * 1000;
    let opts = |dir| StorageOptions {
        dir,
        external_labels: Labels::default(),
        block_duration_ms: 2 * 3600 * 1000,
        retention_ms: 100 * year_ms,
    };
    let source_dir = data.copy_to("embedded").expect("copy blocks");
    let source = LocalStorage::open(opts(source_dir), &mut Registry::default())
        .await
        .expect("open the blocks");
    let out_dir = tempfile::tempdir().expect("tempdir");
    let sink = LocalStorage::open(opts(out_dir.path().to_path_buf()), &mut Registry::default())
        .await
        .expect("open the results' storage");
    let ctx = EvalContext {
        backend: Arc::new(EmbeddedEngine::new(Engine::default(), source.clone())),
        sink: sink.clone(),
        notify: Arc::new(NoAlerts),
        alert_opts: AlertOptions {
            external_labels: Labels::default(),
            external_url: "http://bench".into(),
            resend_delay: Duration::from_secs(60),
        },
        metrics: RuleMetrics::new(&mut Registry::default()),
    };
    let spec = strata_rule::rules::load_file(rules_path)
        .expect("rules")
        .remove(0);
    let group = Mutex::new(GroupState::new(spec, Duration::from_secs(interval_s)));
    // Warm-up and correctness: at Prometheus's last evaluation time.
    eval_group(&group, &ctx, tp_ms).await;
    let failures = group
        .lock()
        .unwrap()
        .rules
        .iter()
        .filter(|r| r.last_error.is_some())
        .count();
    let answer = Engine::default()
        .instant_query(sink.as_ref(), RECORDED, tp_ms)
        .await
        .expect("query the recorded series");
    let mut got = BTreeMap::new();
    if let QueryValue::Vector(v) = answer.value {
        for s in v {
            got.insert(
                key(s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                s.f,
            );
        }
    }
    let mismatched = mismatches("embedded", prom_recorded, &got);
    let mut durations = Vec::new();
    for k in 1..=evals {
        let started = Instant::now();
        eval_group(&group, &ctx, tp_ms + k as i64 * interval_s as i64 * 1000).await;
        let d = started.elapsed().as_secs_f64();
        println!("  embedded: evaluation {k} took {d:.3} s");
        durations.push(d);
    }
    Row {
        name: "embedded",
        durations,
        missed: 0.0,
        failures: failures as f64,
        checked: prom_recorded.len(),
        mismatched: Some(mismatched),
    }
}

fn print_table(rows: &[Row], rules: usize) {
    let prom_median = median(rows[0].durations.clone());
    println!(
        "{:<12} {:>5} {:>5} {:>10} {:>9} {:>9} {:>6} {:>8} {:>8} {:>10}",
        "evaluator",
        "rules",
        "evals",
        "median ms",
        "min ms",
        "rules/s",
        "ratio",
        "missed",
        "failed",
        "mismatch"
    );
    for r in rows {
        let m = median(r.durations.clone());
        let min = r.durations.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{:<12} {:>5} {:>5} {:>10.1} {:>9.1} {:>9.0} {:>5.2}x {:>8} {:>8} {:>10}",
            r.name,
            rules,
            r.durations.len(),
            m * 1000.0,
            min * 1000.0,
            rules as f64 / m,
            prom_median / m,
            r.missed,
            r.failures,
            match r.mismatched {
                Some(m) => format!("{m}/{}", r.checked),
                None => format!("({} ref)", r.checked),
            }
        );
    }
    println!(
        "(ratio = prometheus median / evaluator median; above 1 means faster than Prometheus. mismatch = recorded series that differ / series compared: embedded vs Prometheus's recorded series at the same time, strata rule's recorded series vs Prometheus answering each rule's expression at the ruler's evaluation time; the store's `cluster` and the ruler's `ruler` external labels are left out of the comparison)"
    );
}
