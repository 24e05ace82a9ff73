//! Downsampled blocks through the querier: a seeded raw block of 10 days (counters with resets,
//! random-walk gauges) is downsampled by `strata_compact::downsample` to 5m and then to 1h; the
//! three blocks go into a real MinIO bucket served by `strata store`, read by `strata query`. The
//! same PromQL over `max_source_resolution=5m` / `1h` / `auto` must agree with the raw answer
//! (`max_source_resolution=0s`) within what the resolution allows, and the store's lazy-loading
//! gauge shows that each resolution's queries opened exactly one more block.
//!
//! Tolerances (Thanos's downsampling docs: downsampled data keeps `min`, `max`, `sum`, `count`
//! and a reset-free `counter` per window, so `*_over_time` are exact when the range covers whole
//! windows, and `rate` is approximate by up to one window):
//! - Evaluation times sit on a window's last millisecond (where the aggregates are stamped) and
//!   ranges are multiples of the resolution, so a range `(t-r, t]` holds exactly the raw samples
//!   of `r / res` whole windows and exactly those windows' aggregates. Then `min_over_time`,
//!   `max_over_time`, `sum_over_time` must be equal (1e-9 relative: sums are added in another
//!   order); `avg_over_time` too, because the scrape is regular (every window holds the same
//!   number of samples, so the mean of window means is the mean).
//! - `rate`/`increase`: the downsampled series has one point per window, stamped at its end, so
//!   its first point in the range is up to one window later than the raw one: the rate is
//!   measured over `r - res` instead of `r` and extrapolated. The difference is at most the share
//!   of the missing window times how far that window's own rate is from the range's mean; the
//!   generated counters' per-scrape increments vary within ±50 % of their mean, so the bound
//!   `res / r` (8.3 % for 5m over 1h, 16.7 % for 1h over 6h) holds with room to spare and is
//!   still far below the error a mishandled counter reset causes (one reset adds the whole
//!   counter value, many times the rate).
//! - `count_over_time`: over downsampled data the querier reads the `count` aggregate and PromQL
//!   counts its points, one a window, exactly as a Thanos querier does; the test pins that
//!   (raw count / samples per window) rather than pretending it equals the raw count.

#![allow(clippy::print_stdout)] // the rate check prints how close each query came

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use strata_compact::{RES_1H, RES_5M, downsample};
use strata_e2e::{ApiResponse, Minio, PromApi, StrataQuery, StrataStore, label_key, wait_until};
use strata_tsdb::meta::ThanosMeta;
use strata_tsdb::{BlockWriter, BlockWriterOptions, Labels};

/// A day boundary (ms), so 5m and 1h windows align with the block start.
const T0: i64 = 20_254 * 86_400_000;
const DAYS: i64 = 10;
const SCRAPE_MS: i64 = 15_000;
const COUNTERS: u64 = 8;
const GAUGES: u64 = 8;

/// SplitMix64: seeded, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Counters: per scrape an increment within ±50 % of a per-series mean (integer for even
/// series), a reset to a small value about every 6 hours. Gauges: a random walk.
fn series(i: u64, rng: &mut Rng) -> (Labels, Vec<(i64, f64)>) {
    let n = (DAYS * 86_400_000 / SCRAPE_MS) as usize;
    let mut out = Vec::with_capacity(n);
    let counter = i < COUNTERS;
    let mean = 1.0 + rng.unit() * 100.0;
    let mut v = (rng.next() % 100_000) as f64;
    for k in 0..n {
        let t = T0 + k as i64 * SCRAPE_MS;
        if counter {
            if rng.next().is_multiple_of(1_440) {
                v = (rng.next() % 10) as f64;
            }
            let inc = mean * (0.5 + rng.unit());
            v += if i.is_multiple_of(2) {
                inc.round()
            } else {
                inc
            };
        } else {
            v += (rng.unit() - 0.5) * mean;
        }
        out.push((t, v));
    }
    let labels = if counter {
        Labels::from_pairs([
            ("__name__", "test_requests_total".to_string()),
            ("series", format!("c{i:02}")),
        ])
    } else {
        Labels::from_pairs([
            ("__name__", "test_gauge".to_string()),
            ("series", format!("g{i:02}")),
        ])
    }
    .expect("labels");
    (labels, out)
}

fn write_raw_block(dir: &Path) -> PathBuf {
    let mut rng = Rng(0xD0E5_A3F1);
    let mut all: Vec<(Labels, Vec<(i64, f64)>)> = (0..COUNTERS + GAUGES)
        .map(|i| series(i, &mut rng))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let opts = BlockWriterOptions {
        thanos: Some(ThanosMeta::new(
            [("cluster".to_string(), "c1".to_string())].into(),
            "test",
            0,
        )),
        ..BlockWriterOptions::default()
    };
    let mut w = BlockWriter::new(dir, opts).expect("writer");
    w.set_time_range(T0, T0 + DAYS * 86_400_000);
    for (l, s) in &all {
        w.add_series(l, s).expect("add series");
    }
    dir.join(w.finish().expect("finish").to_string())
}

/// `label key → [(t ms, value)]` of a matrix answer.
fn matrix(r: &ApiResponse, what: &str) -> BTreeMap<String, Vec<(i64, f64)>> {
    assert!(r.is_success(), "{what}: {:?}", r.body);
    r.series()
        .iter()
        .map(|s| {
            let points = s["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|p| {
                    let t = (p[0].as_f64().expect("time") * 1000.0).round() as i64;
                    let v = strata_e2e::parse_value(&p[1]).expect("value");
                    (t, v)
                })
                .collect();
            (label_key(&s["metric"]), points)
        })
        .collect()
}

/// The largest relative difference `|got - want| / |want|` over all points; panics when the
/// series or timestamps differ.
fn max_rel_diff(
    want: &BTreeMap<String, Vec<(i64, f64)>>,
    got: &BTreeMap<String, Vec<(i64, f64)>>,
    what: &str,
) -> (f64, String) {
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{what}: series"
    );
    assert!(!want.is_empty(), "{what}: no series");
    let mut worst = (0.0f64, String::new());
    for (k, w) in want {
        let g = &got[k];
        let wt: Vec<i64> = w.iter().map(|p| p.0).collect();
        let gt: Vec<i64> = g.iter().map(|p| p.0).collect();
        assert_eq!(wt, gt, "{what}: timestamps of {k}");
        for ((t, a), (_, b)) in w.iter().zip(g) {
            let d = if a == b {
                0.0
            } else {
                (a - b).abs() / a.abs().max(1e-300)
            };
            if d > worst.0 || d.is_nan() {
                worst = (d, format!("{k} at {t}: raw {a} vs downsampled {b}"));
            }
        }
    }
    worst
}

async fn metric(url: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

struct Fixture {
    api: PromApi,
    store_url: String,
}

impl Fixture {
    async fn range(&self, expr: &str, start: i64, step: i64, res: &str) -> ApiResponse {
        let end = T0 + DAYS * 86_400_000 - 1;
        self.api
            .range(
                expr,
                start as f64 / 1000.0,
                end as f64 / 1000.0,
                step as f64 / 1000.0,
                &[("max_source_resolution", res)],
            )
            .await
            .expect("query")
    }

    async fn loaded(&self) -> f64 {
        metric(&self.store_url, "strata_store_blocks_loaded").await
    }
}

/// One resolution's exact checks against raw: `*_over_time` equal, `count_over_time` = raw
/// count / samples per window.
async fn check_over_time(f: &Fixture, res_ms: i64, res_param: &str, range_ms: i64) {
    let range = format!("{}m", range_ms / 60_000);
    // First evaluation: a window end, with the whole range inside the block.
    let start = T0 + 2 * range_ms - 1;
    let step = range_ms;
    let exact = [
        "max_over_time",
        "min_over_time",
        "sum_over_time",
        "avg_over_time",
    ];
    for func in exact {
        let expr = format!("{func}({{__name__=~\"test_.*\"}}[{range}])");
        let raw = matrix(&f.range(&expr, start, step, "0s").await, &expr);
        let ds = matrix(&f.range(&expr, start, step, res_param).await, &expr);
        let (d, at) = max_rel_diff(&raw, &ds, &format!("{expr} at {res_param}"));
        assert!(d <= 1e-9, "{expr} at {res_param}: off by {d:e}: {at}");
    }
    let expr = format!("count_over_time({{__name__=~\"test_.*\"}}[{range}])");
    let raw = matrix(&f.range(&expr, start, step, "0s").await, &expr);
    let ds = matrix(&f.range(&expr, start, step, res_param).await, &expr);
    let per_window = (res_ms / SCRAPE_MS) as f64;
    let windows: BTreeMap<String, Vec<(i64, f64)>> = raw
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.iter().map(|(t, c)| (*t, c / per_window)).collect(),
            )
        })
        .collect();
    let (d, at) = max_rel_diff(&windows, &ds, &expr);
    assert!(
        d == 0.0,
        "{expr} at {res_param}: expected one point a window: {at}"
    );
}

/// `rate`/`increase` against raw within `res / range`, at window ends and 2 minutes off them.
async fn check_rate(f: &Fixture, res_ms: i64, res_param: &str, range_ms: i64) {
    let range = format!("{}m", range_ms / 60_000);
    let start = T0 + 2 * range_ms - 1;
    let tolerance = res_ms as f64 / range_ms as f64;
    for func in ["rate", "increase"] {
        for offset in [0, 120_000] {
            let expr = format!("{func}(test_requests_total[{range}])");
            let raw = matrix(&f.range(&expr, start + offset, range_ms, "0s").await, &expr);
            let ds = matrix(
                &f.range(&expr, start + offset, range_ms, res_param).await,
                &expr,
            );
            let (d, at) = max_rel_diff(&raw, &ds, &format!("{expr} at {res_param}"));
            println!("{expr} at {res_param} (offset {offset} ms): max relative diff {d:.4}");
            assert!(
                d <= tolerance,
                "{expr} at {res_param} (offset {offset} ms): off by {d:.4} > {tolerance:.4}: {at}"
            );
        }
    }
}

/// The raw block, its 5m and 1h downsamplings in a real MinIO bucket, `strata store` over it and
/// `strata query` over the store (dropped with the fixture).
struct Setup {
    f: Fixture,
    _query: StrataQuery,
    _store: StrataStore,
    _minio: Minio,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn setup() -> Setup {
    let work = tempfile::tempdir().expect("tempdir");
    let raw = write_raw_block(&work.path().join("raw"));
    let five = work.path().join("5m");
    let five = five.join(downsample(&raw, &five, RES_5M).expect("5m").to_string());
    let hour = work.path().join("1h");
    let hour = hour.join(downsample(&five, &hour, RES_1H).expect("1h").to_string());

    let minio = Minio::start().await.expect("MinIO");
    minio.create_bucket("blocks").await.expect("bucket");
    for b in [&raw, &five, &hour] {
        minio.upload_block_as_is("blocks", b).await.expect("upload");
    }
    let binary = Path::new(env!("CARGO_BIN_EXE_strata"));
    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = StrataStore::start(
        binary,
        &minio.objstore_yaml("blocks"),
        store_dir.path(),
        &[],
    )
    .await
    .expect("strata store");
    let query = StrataQuery::builder(binary)
        .endpoint(store.grpc_address())
        .start()
        .await
        .expect("strata query");
    let f = Fixture {
        api: PromApi::new(query.url(), Duration::from_secs(120)).expect("client"),
        store_url: store.url().to_string(),
    };
    assert_eq!(
        metric(&f.store_url, "strata_store_blocks").await,
        3.0,
        "the store serves the raw, 5m and 1h blocks"
    );
    wait_until(
        "the querier sees the store",
        Duration::from_secs(60),
        || {
            let api = f.api.clone();
            async move {
                let r = api
                    .instant("count(test_gauge)", (T0 + 3_600_000) as f64 / 1000.0, &[])
                    .await
                    .ok()?;
                (r.is_success() && !r.series().is_empty()).then_some(())
            }
        },
    )
    .await
    .expect("querier ready");
    Setup {
        f,
        _query: query,
        _store: store,
        _minio: minio,
        _dirs: (work, store_dir),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_time_functions_on_downsampled_blocks_match_raw() {
    let setup = setup().await;
    let f = &setup.f;
    // The readiness query (raw) opened the raw block only: blocks load lazily.
    assert_eq!(f.loaded().await, 1.0, "one query at raw resolution");

    check_over_time(f, RES_5M, "5m", 3_600_000).await;
    assert_eq!(f.loaded().await, 2.0, "the 5m queries opened the 5m block");

    // `auto` over a 30m step asks for up to 6m: the 5m block (one count a window), not raw.
    let expr = "count_over_time(test_gauge[1h])";
    let start = T0 + 2 * 3_600_000 - 1;
    let auto = matrix(&f.range(expr, start, 1_800_000, "auto").await, expr);
    let five_m = matrix(&f.range(expr, start, 1_800_000, "5m").await, expr);
    let raw_m = matrix(&f.range(expr, start, 1_800_000, "0s").await, expr);
    assert_eq!(auto, five_m, "auto with a 30m step reads the 5m block");
    assert_ne!(auto, raw_m, "and not the raw one");
    // With a 2m step auto asks for up to 24s: raw.
    let auto_fine = matrix(&f.range(expr, start, 120_000, "auto").await, expr);
    let raw_fine = matrix(&f.range(expr, start, 120_000, "0s").await, expr);
    assert_eq!(auto_fine, raw_fine, "auto with a 2m step reads raw data");
    assert_eq!(f.loaded().await, 2.0, "auto opened no other block");

    check_over_time(f, RES_1H, "1h", 6 * 3_600_000).await;
    assert_eq!(f.loaded().await, 3.0, "the 1h queries opened the 1h block");
}

/// A Thanos `counter` aggregate chunk starts at the raw value and ends with the raw last value
/// repeated at the last window's time; the querier carries the reset-free total across chunks (as
/// Thanos's querier does), so a reset inside one chunk is no spurious reset at the next boundary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_on_downsampled_blocks_matches_raw_within_the_resolution() {
    let setup = setup().await;
    check_rate(&setup.f, RES_5M, "5m", 3_600_000).await;
    check_rate(&setup.f, RES_1H, "1h", 6 * 3_600_000).await;
}
