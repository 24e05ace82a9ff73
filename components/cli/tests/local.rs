//! `strata local`: two real Prometheus HA replicas (external labels `cluster`, `replica`) scrape the
//! same target; one `strata local` process federates both. Asserted: the querier answers with one
//! de-duplicated series (two with `dedup=false`); the replicas' blocks are shipped into the
//! filesystem bucket under `--data-dir`; after both Prometheus servers are stopped, the range they
//! had answers the same from the store gateway alone. With `--rule-file`, a recording rule's
//! series is queryable through the same querier, the rule API and the web UI answer on the same
//! address, and the UI script is valid JavaScript calling only paths that answer there.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use strata_e2e::{
    ApiResponse, MetricsTarget, Process, PromApi, Prometheus, free_port, label_key, parse_value,
    wait_until,
};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_strata"))
}

async fn replica(target: &MetricsTarget, name: &str) -> Prometheus {
    Prometheus::builder()
        .external_label("cluster", "demo")
        .external_label("replica", name)
        .scrape_interval(Duration::from_secs(1))
        .scrape_config(&format!(
            "job_name: demo\nstatic_configs:\n  - targets: ['{}']",
            target.address()
        ))
        .arg("--storage.tsdb.min-block-duration=20s")
        .arg("--storage.tsdb.max-block-duration=20s")
        .start()
        .await
        .expect("start Prometheus replica")
}

/// `timestamp ms -> value` of every series of a range answer, keyed by labels.
fn points(r: &ApiResponse) -> BTreeMap<String, BTreeMap<i64, f64>> {
    r.series()
        .iter()
        .map(|s| {
            let pts = s["values"]
                .as_array()
                .map(|vals| {
                    vals.iter()
                        .filter_map(|p| {
                            Some((
                                (p[0].as_f64()? * 1000.0).round() as i64,
                                parse_value(&p[1])?,
                            ))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (label_key(&s["metric"]), pts)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_federates_two_replicas_and_keeps_their_history() {
    let t0 = Instant::now();
    let target = MetricsTarget::start(move |path| {
        (path == "/metrics").then(|| {
            format!(
                "# TYPE demo_requests counter\ndemo_requests_total {}\n",
                (t0.elapsed().as_secs_f64() * 10.0).floor()
            )
        })
    })
    .await
    .expect("start the scrape target");
    let mut a = replica(&target, "a").await;
    let mut b = replica(&target, "b").await;

    let data = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut cmd = Command::new(binary());
    cmd.arg("local")
        .arg(format!("--data-dir={}", data.path().display()))
        .arg(format!("--http-address=127.0.0.1:{port}"))
        .arg(format!(
            "--prometheus={},{}",
            a.url(),
            a.data_dir().display()
        ))
        .arg(format!(
            "--prometheus={},{}",
            b.url(),
            b.data_dir().display()
        ))
        .arg("--shipper.sync-interval=1s")
        .arg("--sync-block-duration=2s");
    let mut local = Process::spawn("strata-local", cmd).expect("spawn strata local");
    let url = format!("http://127.0.0.1:{port}");
    local
        .wait_http_ok(&format!("{url}/-/ready"), Duration::from_secs(60))
        .await
        .expect("strata local ready");
    let log = local.log();
    assert!(log.contains("strata local is running"), "{log}");
    assert!(log.contains(&url), "the querier's URL is printed: {log}");
    assert_eq!(
        log.matches("  - sidecar on 127.0.0.1:").count(),
        2,
        "both sidecars are announced: {log}"
    );

    assert!(log.contains("  - compactor (a pass every 5m"), "{log}");
    wait_until("a compactor pass", Duration::from_secs(60), || async {
        let m = reqwest::get(format!("{url}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        m.lines()
            .find_map(|l| l.strip_prefix("strata_compact_iterations_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|n| *n >= 1.0)
    })
    .await
    .expect("the compactor ran over the local bucket");

    let api = PromApi::new(&url, Duration::from_secs(30)).expect("HTTP client");
    // Without dedup, both replicas' series (once both have scraped)…
    let last = std::sync::Mutex::new(None);
    wait_until("both replicas' series", Duration::from_secs(60), || async {
        let r = match api
            .get(
                "query",
                &[("query", "demo_requests_total"), ("dedup", "false")],
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string().into());
                return None;
            }
        };
        if r.is_success() && r.series().len() == 2 {
            return Some(());
        }
        *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.body);
        None
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; last answer {:?}", last.lock()));
    // …and de-duplicated by the default replica label: one series, without `replica`.
    let deduped = api
        .get("query", &[("query", "demo_requests_total")])
        .await
        .expect("query with dedup");
    assert_eq!(deduped.series().len(), 1, "{:?}", deduped.body);
    let labels = label_key(&deduped.series()[0]["metric"]);
    assert!(labels.contains("cluster=\"demo\""), "{labels}");
    assert!(!labels.contains("replica"), "{labels}");

    // Both replicas ship blocks into the bucket under --data-dir. Wait for a time window that
    // both replicas have shipped as a block of the same range (blocks are cut on the same 20 s
    // boundaries), so the bucket alone holds every sample of that window.
    let bucket = data.path().join("bucket");
    let window = wait_until(
        "a window shipped by both replicas",
        Duration::from_secs(180),
        || {
            let bucket = bucket.clone();
            async move { common_shipped_window(&bucket) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; bucket holds {:?}", shipped_ranges(&bucket)));
    let shipped_blocks = std::fs::read_dir(&bucket)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().join("meta.json").is_file())
                .count()
        })
        .unwrap_or(0);
    wait_until(
        "the store gateway to serve them",
        Duration::from_secs(60),
        || async {
            let m = reqwest::get(format!("{url}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            m.lines()
                .find(|l| l.starts_with("strata_store_blocks "))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .filter(|n| *n >= shipped_blocks as f64)
        },
    )
    .await
    .expect("store gateway synced the shipped blocks");

    // The window, answered while the replicas still run…
    let (start, end) = window;
    let range = |dedup: &'static str| {
        let api = &api;
        let (s, e) = (start.to_string(), end.to_string());
        async move {
            api.get(
                "query_range",
                &[
                    ("query", "demo_requests_total"),
                    ("start", &s),
                    ("end", &e),
                    ("step", "1"),
                    ("dedup", dedup),
                ],
            )
            .await
            .expect("range query")
        }
    };
    let before = range("true").await;
    assert!(before.is_success(), "{:?}", before.body);
    let before_points = points(&before);
    assert_eq!(before_points.len(), 1, "{:?}", before.body);
    assert!(
        before_points
            .values()
            .all(|p| p.len() as u64 >= (end - start) / 2),
        "most steps of {start}..{end} answered: {before_points:?}"
    );

    // …is answered identically from the bucket once both Prometheus servers are gone.
    // The querier learns the gateway's new time range at its next health check of it, so the
    // answer may take a few seconds to come from the gateway.
    a.process().kill();
    b.process().kill();
    let last = std::sync::Mutex::new(None);
    wait_until(
        "the gateway alone answers the window",
        Duration::from_secs(60),
        || async {
            let after = range("true").await;
            let got = points(&after);
            if got == before_points {
                return Some(());
            }
            *last.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((got, after.warnings().join("; ")));
            None
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: want {before_points:?}, last answer and warnings {:?}",
            last.lock()
        )
    });
}

/// A `[start, end]` (Unix seconds) that both replicas (`replica` label in `thanos.labels`) have
/// shipped in blocks; the latest such window.
fn common_shipped_window(bucket: &Path) -> Option<(u64, u64)> {
    let ranges = shipped_ranges(bucket);
    let a = ranges.get("a")?;
    let b = ranges.get("b")?;
    // Blocks end on the same boundaries; each starts at its replica's first sample in the range.
    let (min, max) = a
        .iter()
        .filter_map(|&(a_min, a_max)| {
            let &(b_min, _) = b.iter().find(|&&(_, b_max)| b_max == a_max)?;
            Some((a_min.max(b_min), a_max))
        })
        .max_by_key(|&(_, max)| max)?;
    // Whole seconds strictly inside the block, at least 10 s of them.
    let start = u64::try_from(min.div_euclid(1000) + 1).ok()?;
    let end = u64::try_from((max - 1).div_euclid(1000)).ok()?;
    (end >= start + 10).then_some((start, end))
}

/// `replica -> [(minTime, maxTime)]` of the blocks with a meta.json in the bucket directory.
fn shipped_ranges(bucket: &Path) -> BTreeMap<String, Vec<(i64, i64)>> {
    let mut ranges: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(bucket) else {
        return ranges;
    };
    for entry in dir.filter_map(Result::ok) {
        let Ok(text) = std::fs::read_to_string(entry.path().join("meta.json")) else {
            continue;
        };
        let Ok(meta) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let replica = meta["thanos"]["labels"]["replica"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        let (Some(min), Some(max)) = (meta["minTime"].as_i64(), meta["maxTime"].as_i64()) else {
            continue;
        };
        ranges.entry(replica).or_default().push((min, max));
    }
    ranges
}

/// `strata local --rule-file`: a recording rule over two HA replicas is evaluated by the embedded
/// engine on de-duplicated data, its series is queryable through the local querier, the rule API
/// and the web UI are served on the same address, and the UI's script only calls API paths that
/// answer there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_runs_rules_and_serves_the_ui() {
    let t0 = Instant::now();
    let target = MetricsTarget::start(move |path| {
        (path == "/metrics").then(|| {
            format!(
                "# TYPE demo_requests counter\ndemo_requests_total {}\n",
                (t0.elapsed().as_secs_f64() * 10.0).floor()
            )
        })
    })
    .await
    .expect("start the scrape target");
    let a = replica(&target, "a").await;
    let b = replica(&target, "b").await;

    let data = tempfile::tempdir().expect("temp dir");
    let rules = data.path().join("demo.rules.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: demo\n  interval: 1s\n  rules:\n  - record: job:demo_requests:sum\n    expr: sum by (job) (demo_requests_total)\n  - alert: DemoUp\n    expr: count(demo_requests_total) > 0\n    annotations:\n      summary: the demo target is scraped\n",
    )
    .expect("write the rule file");
    let port = free_port();
    let mut cmd = Command::new(binary());
    cmd.arg("local")
        .arg(format!("--data-dir={}", data.path().display()))
        .arg(format!("--http-address=127.0.0.1:{port}"))
        .arg(format!("--prometheus={}", a.url()))
        .arg(format!("--prometheus={}", b.url()))
        .arg(format!(
            "--rule-file={}",
            data.path().join("*.rules.yml").display()
        ))
        .arg("--compact.disable");
    let mut local = Process::spawn("strata-local", cmd).expect("spawn strata local");
    let url = format!("http://127.0.0.1:{port}");
    local
        .wait_http_ok(&format!("{url}/-/ready"), Duration::from_secs(60))
        .await
        .expect("strata local ready");
    let log = local.log();
    assert!(log.contains("  - ruler on 127.0.0.1:"), "{log}");
    assert!(log.contains("1 rule groups"), "{log}");
    assert!(log.contains(&format!("{url}/graph")), "{log}");
    assert!(
        data.path().join("rule").join("wal").is_dir(),
        "the ruler's storage is under <data-dir>/rule"
    );

    // The recorded series, through the local querier: one series (the ruler read de-duplicated
    // data, so the sum is not doubled by the two replicas).
    let api = PromApi::new(&url, Duration::from_secs(30)).expect("HTTP client");
    let last = std::sync::Mutex::new(None);
    let recorded = wait_until("the recorded series", Duration::from_secs(60), || async {
        let r = api
            .get("query", &[("query", "job:demo_requests:sum[30s]")])
            .await
            .ok()?;
        let pts: Vec<(f64, f64)> = r
            .series()
            .first()?
            .get("values")?
            .as_array()?
            .iter()
            .filter_map(|p| Some((p[0].as_f64()?, parse_value(&p[1])?)))
            .collect();
        *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.body.clone());
        (r.series().len() == 1 && pts.len() >= 6).then_some((r, pts))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; last answer {:?}", last.lock()));
    let (answer, pts) = recorded;
    let labels = label_key(&answer.series()[0]["metric"]);
    assert_eq!(labels, "{__name__=\"job:demo_requests:sum\", job=\"demo\"}");
    // Each recorded value is what the querier gives for the expression at (about) that time:
    // between its answers 2 s before and at the evaluation time (the latest points, whose
    // 2 s before lie in the data).
    for &(t, v) in &pts[pts.len() - 3..] {
        let direct = |at: f64| {
            let api = &api;
            async move {
                let r = api
                    .get(
                        "query",
                        &[
                            ("query", "sum by (job) (demo_requests_total)"),
                            ("time", &format!("{at:.3}")),
                        ],
                    )
                    .await
                    .expect("direct query");
                assert_eq!(r.series().len(), 1, "{:?}", r.body);
                parse_value(&r.series()[0]["value"][1]).expect("a value")
            }
        };
        let (lo, hi) = (direct(t - 2.0).await, direct(t).await);
        assert!(
            lo <= v && v <= hi,
            "recorded {v} at {t} outside the querier's [{lo}, {hi}]"
        );
    }

    // The rule API on the same address: the group is healthy, the alert fires.
    let rules_body: serde_json::Value = reqwest::get(format!("{url}/api/v1/rules"))
        .await
        .expect("GET /api/v1/rules")
        .json()
        .await
        .expect("rules JSON");
    let group = &rules_body["data"]["groups"][0];
    assert_eq!(group["name"], "demo", "{rules_body}");
    for r in group["rules"].as_array().expect("rules") {
        assert_eq!(r["health"], "ok", "{rules_body}");
    }
    let alerts = wait_until("the alert to fire", Duration::from_secs(30), || async {
        let body: serde_json::Value = reqwest::get(format!("{url}/api/v1/alerts"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (body["data"]["alerts"][0]["state"] == "firing").then_some(body)
    })
    .await
    .expect("DemoUp fires");
    assert_eq!(alerts["data"]["alerts"][0]["labels"]["alertname"], "DemoUp");
    let reload = reqwest::Client::new()
        .post(format!("{url}/-/reload"))
        .send()
        .await
        .expect("POST /-/reload");
    assert!(reload.status().is_success(), "{}", reload.status());

    // The ruler is one of the querier's stores.
    let stores: serde_json::Value = reqwest::get(format!("{url}/api/v1/stores"))
        .await
        .expect("GET /api/v1/stores")
        .json()
        .await
        .expect("stores JSON");
    for kind in ["rule", "sidecar", "store"] {
        assert!(
            stores["data"][kind]
                .as_array()
                .is_some_and(|v| !v.is_empty()),
            "{kind} in {stores}"
        );
    }

    // The UI: `/` leads to the graph page, every page is HTML, the script is JavaScript that
    // node accepts, and each API path it calls answers here.
    let client = reqwest::Client::new();
    let home = client.get(&url).send().await.expect("GET /");
    assert_eq!(home.url().path(), "/graph");
    for page in ["/graph", "/stores", "/rules", "/alerts"] {
        let r = client
            .get(format!("{url}{page}"))
            .send()
            .await
            .expect("GET page");
        assert_eq!(r.status(), 200, "{page}");
        let ct = content_type(&r);
        assert!(ct.starts_with("text/html"), "{page}: {ct}");
        let html = r.text().await.expect("page body");
        assert!(html.contains("/ui/app.js"), "{page}: {html}");
        assert!(html.contains("data-rules=\"true\""), "{page}: {html}");
    }
    let js = client
        .get(format!("{url}/ui/app.js"))
        .send()
        .await
        .expect("GET /ui/app.js");
    assert!(content_type(&js).starts_with("text/javascript"));
    let js = js.text().await.expect("script body");
    let script = data.path().join("app.js");
    std::fs::write(&script, &js).expect("write the script");
    let have_node = match Command::new("node").arg("--check").arg(&script).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "node --check: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            true
        }
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("node (Node.js) is needed under CI=true to check the UI script: {e}")
        }
        Err(e) => {
            eprintln!("node not found ({e}): the script is neither checked nor run");
            false
        }
    };
    let css = client
        .get(format!("{url}/ui/style.css"))
        .send()
        .await
        .expect("GET /ui/style.css");
    assert!(content_type(&css).starts_with("text/css"));
    let called = api_paths(&js);
    assert!(called.len() >= 5, "{called:?}");
    for path in called {
        let r = client
            .get(format!("{url}{path}"))
            .query(&[
                ("query", "up"),
                ("start", "0"),
                ("end", "60"),
                ("step", "15"),
            ])
            .send()
            .await
            .expect("GET an API path of the script");
        assert_eq!(r.status(), 200, "{path}");
        let body: serde_json::Value = r.json().await.expect("JSON answer");
        assert_eq!(body["status"], "success", "{path}: {body}");
    }

    // The script itself, run by node against this server (a minimal DOM stand-in records what
    // it draws): tables, a graph, the dedup toggle, errors, and the store/rule/alert pages.
    if have_node {
        let draw = |page: &str, search: &str| {
            let out = Command::new("node")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ui_smoke.js"))
                .args([url.as_str(), &script.display().to_string(), page, search])
                .output()
                .expect("run the UI script in node");
            assert!(
                out.status.success(),
                "{page}{search}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let drawn: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("the smoke runner prints JSON");
            let text = drawn["text"].as_str().unwrap_or("");
            assert!(
                !text.contains("undefined") && !text.contains("null") && !text.contains("NaN"),
                "{page}{search}: a missing value was drawn: {drawn}"
            );
            drawn
        };
        let no_errors = |d: &serde_json::Value| d["errors"].as_array().is_some_and(Vec::is_empty);
        let table = draw("/graph", "?expr=demo_requests_total&tab=table");
        assert!(no_errors(&table), "{table}");
        assert_eq!(
            table["rows"], 2,
            "header + one de-duplicated series: {table}"
        );
        let both = draw("/graph", "?expr=demo_requests_total&tab=table&dedup=false");
        assert_eq!(
            both["rows"], 3,
            "header + both replicas without dedup: {both}"
        );
        let graph = draw("/graph", "?expr=job:demo_requests:sum&tab=graph&range=1m");
        assert!(no_errors(&graph), "{graph}");
        assert_eq!(
            graph["lines"], 1,
            "one line for the recorded series: {graph}"
        );
        let bad = draw("/graph", "?expr=sum(&tab=table");
        assert!(!no_errors(&bad), "a parse error is shown: {bad}");
        let stores = draw("/stores", "");
        assert!(no_errors(&stores), "{stores}");
        let text = stores["text"].as_str().unwrap_or("");
        assert!(text.contains("rule") && text.contains("UP"), "{stores}");
        let rules = draw("/rules", "");
        let text = rules["text"].as_str().unwrap_or("");
        assert!(
            text.contains("record: job:demo_requests:sum") && text.contains("ok"),
            "{rules}"
        );
        let alerts = draw("/alerts", "");
        let text = alerts["text"].as_str().unwrap_or("");
        assert!(
            text.contains("firing") && text.contains("DemoUp"),
            "{alerts}"
        );
    }
    drop((a, b));
}

fn content_type(r: &reqwest::Response) -> String {
    r.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The `'/api/v1/…'` string literals of the UI script.
fn api_paths(js: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = js;
    while let Some(i) = rest.find("'/api/v1/") {
        let tail = &rest[i + 1..];
        let Some(end) = tail.find('\'') else { break };
        let path = &tail[..end];
        if !out.iter().any(|p| p == path) {
            out.push(path.to_string());
        }
        rest = &tail[end..];
    }
    out
}
