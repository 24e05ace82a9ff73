//! HA replica de-duplication: two real Prometheus replicas (external labels `replica="a"` / `"b"`)
//! scrape the same target every second, each with a `strata sidecar`; the querier runs with
//! `--query.replica-label replica`.
//!
//! The target is served by the test, so it controls what each replica sees (`/a` and `/b`):
//! - `dedup_requests_total` is the same counter for both (10 per second);
//! - `dedup_offset_total` grows at the same 10/s but replica a sees it 95 000 higher than b (as two
//!   exporter processes would after one restarted); replica b sees it only from [`B_FROM`] on and
//!   replica a stops seeing it after [`CUT_AFTER`], so any de-duplication must switch from a to b.
//!
//! Asserted: with dedup, one series per target series, every value equal to one replica's value at
//! that step and no step missing; with `dedup=false`, both replicas' series; `rate()` over the
//! switching counter shows no spike (Thanos issue 2890); after replica a's sidecar is killed the
//! answer still covers the whole range from replica b.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strata_e2e::{
    ApiResponse, MetricsTarget, PromApi, Prometheus, StrataQuery, StrataSidecar, ThanosQuery,
    label_key, parse_value, wait_until,
};

/// When replica b starts seeing `dedup_offset_total`, after the target started.
const B_FROM: Duration = Duration::from_secs(15);
/// When replica a stops seeing `dedup_offset_total`, after the target started.
const CUT_AFTER: Duration = Duration::from_secs(28);
/// How long data is collected before the assertions, after the target started.
const COLLECT_FOR: Duration = Duration::from_secs(40);
/// The scrape interval, ms.
const SCRAPE_MS: i64 = 1000;
/// The counters' true rate, per second.
const TRUE_RATE: f64 = 10.0;
/// A `rate()` above this is a spike (the true rate is 10/s; a fake reset adds thousands).
const SPIKE: f64 = 25.0;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_strata"))
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

fn api(url: &str) -> PromApi {
    PromApi::new(url, Duration::from_secs(60)).expect("HTTP client")
}

async fn start_target() -> MetricsTarget {
    let t0 = Instant::now();
    MetricsTarget::start(move |path| {
        let elapsed = t0.elapsed();
        let ticks = (elapsed.as_secs_f64() * TRUE_RATE).floor();
        let mut body = format!("# TYPE dedup_requests counter\ndedup_requests_total {ticks}\n");
        let offset = match path {
            "/a" if elapsed < CUT_AFTER => Some(100_000.0),
            "/a" => None,
            "/b" if elapsed >= B_FROM => Some(5_000.0),
            "/b" => None,
            _ => return None,
        };
        if let Some(base) = offset {
            body.push_str(&format!(
                "# TYPE dedup_offset counter\ndedup_offset_total {}\n",
                base + ticks
            ));
        }
        Some(body)
    })
    .await
    .expect("start the scrape target")
}

/// A Prometheus scraping `target` at `/<replica>` every second, with `replica=<replica>`.
async fn replica(target: &MetricsTarget, replica: &str) -> (Prometheus, StrataSidecar) {
    let prometheus = Prometheus::builder()
        .external_label("replica", replica)
        .scrape_interval(Duration::from_secs(1))
        .scrape_config(&format!(
            "job_name: dedup\nmetrics_path: /{replica}\nstatic_configs:\n  - targets: ['{}']",
            target.address()
        ))
        .start()
        .await
        .expect("start Prometheus replica");
    let data = prometheus.data_dir().to_path_buf();
    let sidecar = StrataSidecar::start(binary(), prometheus.url(), &data)
        .await
        .expect("start strata sidecar");
    (prometheus, sidecar)
}

/// The querier under test, or the reference.
enum Querier {
    Strata(StrataQuery),
    Thanos(ThanosQuery),
}

impl Querier {
    fn url(&self) -> &str {
        match self {
            Querier::Strata(q) => q.url(),
            Querier::Thanos(q) => q.url(),
        }
    }
}

/// `timestamp ms -> value` of a range answer's only series with these labels (or of its only series).
fn points_of(r: &ApiResponse, labels: Option<&str>) -> BTreeMap<i64, f64> {
    let series: Vec<_> = r
        .series()
        .iter()
        .filter(|s| labels.is_none_or(|l| label_key(&s["metric"]) == l))
        .collect();
    assert_eq!(series.len(), 1, "one series wanted: {:?}", r.body);
    series[0]["values"]
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
        .unwrap_or_default()
}

/// `timestamp ms -> value` of the series with `replica=<replica>` in a range answer.
fn replica_points(r: &ApiResponse, replica: &str) -> BTreeMap<i64, f64> {
    let key = r
        .series()
        .iter()
        .find(|s| s["metric"]["replica"] == replica)
        .map(|s| label_key(&s["metric"]));
    let key = key.unwrap_or_else(|| panic!("no replica {replica} series: {:?}", r.body));
    points_of(r, Some(&key))
}

fn replica_values(r: &ApiResponse) -> Vec<String> {
    let mut v: Vec<String> = r
        .series()
        .iter()
        .filter_map(|s| s["metric"]["replica"].as_str().map(String::from))
        .collect();
    v.sort();
    v
}

/// Every step where a replica has a point has one in `got` too (one scrape interval of slack at the
/// edges), and each point equals `a` or `b` there.
fn assert_covered_by(
    what: &str,
    got: &BTreeMap<i64, f64>,
    a: &BTreeMap<i64, f64>,
    b: &BTreeMap<i64, f64>,
    steps: &[i64],
) {
    // One scrape interval of slack at each edge.
    let (first, last) = (
        steps.first().copied().unwrap_or_default(),
        steps.last().copied().unwrap_or_default(),
    );
    let missing: Vec<_> = steps
        .iter()
        .filter(|t| a.contains_key(t) || b.contains_key(t))
        .filter(|t| !got.contains_key(t) && **t > first + SCRAPE_MS && **t < last - SCRAPE_MS)
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: no point at {missing:?} (steps {first}..={last})"
    );
    assert!(
        got.len() + 4 >= steps.len(),
        "{what}: {} points for {} steps",
        got.len(),
        steps.len()
    );
    for (t, v) in got {
        let ok = [a.get(t), b.get(t)].into_iter().flatten().any(|x| x == v);
        assert!(
            ok,
            "{what}: {v} at {t} is neither replica's value ({:?}, {:?})",
            a.get(t),
            b.get(t)
        );
    }
}

async fn scenario(kind: &str) {
    let target = start_target().await;
    let (prom_a, mut sidecar_a) = replica(&target, "a").await;
    let (prom_b, sidecar_b) = replica(&target, "b").await;
    // Both replicas scrape from here on.
    let start = (now() + 3.0).ceil();
    let querier = match kind {
        "strata" => Querier::Strata(
            StrataQuery::builder(binary())
                .endpoint(sidecar_a.grpc_address())
                .endpoint(sidecar_b.grpc_address())
                .replica_label("replica")
                .start()
                .await
                .expect("start strata query"),
        ),
        _ => Querier::Thanos(
            ThanosQuery::builder()
                .endpoint(sidecar_a.grpc_address())
                .endpoint(sidecar_b.grpc_address())
                .replica_label("replica")
                .start()
                .await
                .expect("start thanos query"),
        ),
    };
    let q = api(querier.url());
    let (pa, pb) = (api(prom_a.url()), api(prom_b.url()));
    wait_until(
        "both replicas through the querier",
        Duration::from_secs(60),
        || async {
            let r = q
                .instant("dedup_requests_total", now(), &[("dedup", "false")])
                .await
                .ok()?;
            (replica_values(&r) == ["a", "b"]).then_some(())
        },
    )
    .await
    .expect("querier sees both replicas");
    let collect_until = start + COLLECT_FOR.as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64((collect_until - now()).max(0.0))).await;
    let end = now().floor() - 2.0;
    let steps: Vec<i64> = (0..)
        .map(|i| ((start + f64::from(i)) * 1000.0) as i64)
        .take_while(|t| *t <= (end * 1000.0) as i64)
        .collect();

    // Instant: one series without the replica label; both with dedup=false.
    let r = q
        .instant("dedup_requests_total", end, &[])
        .await
        .expect("query");
    assert!(r.is_success(), "{:?}", r.body);
    assert_eq!(r.series().len(), 1, "dedup gives one series: {:?}", r.body);
    assert_eq!(replica_values(&r), Vec::<String>::new(), "{:?}", r.body);
    let r = q
        .instant("dedup_requests_total", end, &[("dedup", "false")])
        .await
        .expect("query");
    assert_eq!(replica_values(&r), ["a", "b"], "{:?}", r.body);

    // Range: every step covered, every value one of the replicas' values at that step, the same
    // label set as one Prometheus's own answer.
    let range = |api: PromApi, expr: &'static str, extra: Vec<(&'static str, &'static str)>| async move {
        let r = api
            .range(expr, start, end, 1.0, &extra)
            .await
            .expect("range query");
        assert!(r.is_success(), "{expr}: {:?}", r.body);
        r
    };
    let (ra, rb) = (
        range(pa.clone(), "dedup_requests_total", vec![]).await,
        range(pb.clone(), "dedup_requests_total", vec![]).await,
    );
    let rd = range(q.clone(), "dedup_requests_total", vec![]).await;
    let own_labels = label_key(&ra.series()[0]["metric"]);
    assert_eq!(rd.series().len(), 1, "{:?}", rd.body);
    assert_eq!(
        label_key(&rd.series()[0]["metric"]),
        own_labels,
        "labels as Prometheus has them"
    );
    let (a, b) = (points_of(&ra, None), points_of(&rb, None));
    assert_covered_by("dedup range", &points_of(&rd, None), &a, &b, &steps);
    let rn = range(q.clone(), "dedup_requests_total", vec![("dedup", "false")]).await;
    assert_eq!(replica_values(&rn), ["a", "b"], "{:?}", rn.body);

    // Counter-aware: the switch from a (95 000 higher) to b is no counter reset.
    let rate = "rate(dedup_offset_total[5s])";
    let per_replica = range(q.clone(), rate, vec![("dedup", "false")]).await;
    assert_eq!(
        replica_values(&per_replica),
        ["a", "b"],
        "{:?}",
        per_replica.body
    );
    for s in per_replica.series() {
        for p in s["values"].as_array().into_iter().flatten() {
            let v = parse_value(&p[1]).unwrap_or(f64::NAN);
            assert!(v <= SPIKE, "replica data itself has no spike: {s}");
        }
    }
    // Control: a has the counter first and loses it, b gets it later and keeps it, so the
    // de-duplicated series has to switch from a to b somewhere in the range.
    let a_rate = replica_points(&per_replica, "a");
    let b_rate = replica_points(&per_replica, "b");
    let span = |m: &BTreeMap<i64, f64>| (m.keys().next().copied(), m.keys().next_back().copied());
    let ((a_first, a_last), (b_first, b_last)) = (span(&a_rate), span(&b_rate));
    assert!(
        a_first < b_first && a_last < b_last && a_last >= b_first,
        "replica a's counter must end and b's start mid-range: a {a_first:?}..{a_last:?}, b {b_first:?}..{b_last:?}"
    );
    let dedup_rate = points_of(&range(q.clone(), rate, vec![]).await, None);
    let spikes: Vec<_> = dedup_rate.iter().filter(|(_, v)| **v > SPIKE).collect();
    assert!(
        spikes.is_empty(),
        "rate() of the de-duplicated counter spikes at the replica switch (true rate {TRUE_RATE}/s): {spikes:?}"
    );
    let last = steps.last().copied().unwrap_or_default();
    assert!(
        dedup_rate.keys().any(|t| *t >= last - 2000),
        "the de-duplicated counter continues from replica b after a lost it: {dedup_rate:?}"
    );

    // One replica's store gone: the answer still covers the range, from b.
    sidecar_a.process().kill();
    let rd = range(q.clone(), "dedup_requests_total", vec![]).await;
    let empty = BTreeMap::new();
    assert_covered_by(
        "with replica a's sidecar stopped",
        &points_of(&rd, None),
        &empty,
        &b,
        &steps,
    );
    drop(sidecar_b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_query_deduplicates_replicas() {
    scenario("strata").await;
}

/// The reference: a real `thanos query` over the same two Strata sidecars.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thanos_query_reference_deduplicates_replicas() {
    scenario("thanos").await;
}
