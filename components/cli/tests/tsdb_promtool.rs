//! `strata tools tsdb` against the real Prometheus 3.x and promtool: blocks either side wrote must
//! read the same on both sides.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use strata_e2e::{Prometheus, promtool, wait_until};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run strata")
}

fn stdout_ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn strata_dump(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["tools", "tsdb", "dump"];
    args.extend_from_slice(extra);
    args.push(path_str(dir));
    stdout_ok("strata tools tsdb dump", strata(&args))
}

/// promtool dumps a database directory: `dir` (a data directory, or one block copied into a fresh
/// one) gets an empty `wal/` as promtool's read-only open requires.
fn promtool_dump(dir: &Path, extra: &[&str]) -> String {
    let db = tempfile::tempdir().expect("tempdir");
    if dir.join("meta.json").is_file() {
        copy_dir(dir, &db.path().join(dir.file_name().expect("block name")));
    } else {
        copy_dir(dir, db.path());
    }
    std::fs::create_dir_all(db.path().join("wal")).expect("mkdir wal");
    let mut args = vec!["tsdb", "dump"];
    args.extend_from_slice(extra);
    args.push(path_str(db.path()));
    stdout_ok(
        "promtool tsdb dump",
        promtool(&args).expect("promtool installed"),
    )
}

/// Equal dumps, or a panic naming the first differing line.
fn assert_same_dump(ours: &str, theirs: &str) {
    if ours == theirs {
        return;
    }
    let (a, b): (Vec<_>, Vec<_>) = (ours.lines().collect(), theirs.lines().collect());
    let i = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    panic!(
        "dumps differ at line {} (strata {} lines, promtool {} lines):\n strata:   {:?}\n promtool: {:?}",
        i + 1,
        a.len(),
        b.len(),
        a.get(i),
        b.get(i)
    );
}

fn block_dirs(data: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(data)
        .expect("read data dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            p.join("meta.json").is_file() && name.is_some_and(|n| !n.contains(".tmp"))
        })
        .collect();
    dirs.sort();
    dirs
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Runs the bench data generator from `shared/bench` (beside the checkout, or `$STRATA_BENCH_DIR`).
fn generate_openmetrics(dir: &Path, args: &[&str]) -> PathBuf {
    let bench = std::env::var_os("STRATA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/bench"));
    let script = bench.join("gen-openmetrics");
    assert!(
        script.is_file(),
        "{} not found: the shared bench generator must sit beside the checkout (or set STRATA_BENCH_DIR)",
        script.display()
    );
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "gen-openmetrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("data.om");
    std::fs::write(&path, out.stdout).expect("write data.om");
    path
}

/// `(labels, value, timestamp)` of a dump line.
fn split_line(line: &str) -> (&str, &str, i64) {
    let mut parts = line.rsplitn(3, ' ');
    let t = parts
        .next()
        .expect("timestamp")
        .parse()
        .expect("integer timestamp");
    let v = parts.next().expect("value");
    (parts.next().expect("labels"), v, t)
}

#[tokio::test]
async fn blocks_cut_by_a_scraping_prometheus_dump_like_promtool() {
    // Small block ranges so Prometheus cuts blocks within the test; no merging compactions.
    let prom = Prometheus::builder()
        .external_label("replica", "a")
        .arg("--storage.tsdb.min-block-duration=20s")
        .arg("--storage.tsdb.max-block-duration=20s")
        .start()
        .await
        .unwrap();
    let data = prom.data_dir().to_path_buf();
    wait_until(
        "Prometheus to cut two blocks",
        Duration::from_secs(180),
        || async { (block_dirs(&data).len() >= 2).then_some(()) },
    )
    .await
    .unwrap();

    let scratch = tempfile::tempdir().unwrap();
    for b in block_dirs(&data) {
        copy_dir(&b, &scratch.path().join(b.file_name().unwrap()));
    }
    drop(prom);

    // Every block alone, then the directory of blocks (merged), then with matchers and a time range.
    let blocks = block_dirs(scratch.path());
    for b in &blocks {
        let ours = strata_dump(b, &[]);
        assert!(
            ours.lines().count() > 100,
            "too few samples in {}",
            b.display()
        );
        assert_same_dump(&ours, &promtool_dump(b, &[]));
        let verify = stdout_ok(
            "strata verify",
            strata(&["tools", "tsdb", "verify", path_str(b)]),
        );
        assert!(verify.contains(": ok:"), "{verify}");
    }
    assert_same_dump(
        &strata_dump(scratch.path(), &[]),
        &promtool_dump(scratch.path(), &[]),
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blocks[0].join("meta.json")).unwrap()).unwrap();
    let (mint, maxt) = (
        meta["minTime"].as_i64().unwrap(),
        meta["maxTime"].as_i64().unwrap(),
    );
    // The first half of the first block (which may be a short, partial one).
    let (from, to) = (mint.to_string(), (mint + (maxt - mint) / 2).to_string());
    let args = [
        "--match",
        "{__name__=~\"prometheus_tsdb_.*\",job=\"prometheus\"}",
        "--match",
        "up",
        "--min-time",
        from.as_str(),
        "--max-time",
        to.as_str(),
    ];
    let ours = strata_dump(scratch.path(), &args);
    assert!(ours.contains("{__name__=\"up\""), "{ours}");
    assert_same_dump(&ours, &promtool_dump(scratch.path(), &args));
}

#[test]
fn backfilled_blocks_read_the_same_in_strata_and_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate_openmetrics(
        dir.path(),
        &[
            "--targets",
            "2",
            "--hours",
            "5",
            "--high-cardinality",
            "300",
        ],
    );
    let input = path_str(&input);

    // promtool writes blocks; strata reads them.
    let theirs = dir.path().join("promtool-blocks");
    let out = promtool(&[
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        input,
        path_str(&theirs),
    ])
    .unwrap();
    stdout_ok("promtool create-blocks-from", out);
    assert!(block_dirs(&theirs).len() >= 3, "expected several 2h blocks");
    let promtool_view = promtool_dump(&theirs, &[]);
    assert_same_dump(&strata_dump(&theirs, &[]), &promtool_view);

    // strata writes blocks; promtool reads exactly what it wrote itself from the same input.
    let ours = dir.path().join("strata-blocks");
    let created = stdout_ok(
        "strata create-blocks-from",
        strata(&[
            "tools",
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            input,
            path_str(&ours),
        ]),
    );
    assert_eq!(
        created.lines().count() - 1,
        block_dirs(&theirs).len(),
        "{created}"
    );
    assert_same_dump(&promtool_dump(&ours, &[]), &promtool_view);
    for b in block_dirs(&ours) {
        let id = b.file_name().unwrap().to_str().unwrap();
        let analyzed = stdout_ok(
            "promtool tsdb analyze",
            promtool(&["tsdb", "analyze", path_str(&ours), id]).unwrap(),
        );
        assert!(
            analyzed.contains("Highest cardinality metric names"),
            "{analyzed}"
        );
        let ours_analyzed = stdout_ok(
            "strata analyze",
            strata(&["tools", "tsdb", "analyze", path_str(&b)]),
        );
        // The headline figures agree with promtool's.
        for line in analyzed.lines().take_while(|l| !l.is_empty()) {
            assert!(
                ours_analyzed.contains(line),
                "promtool says {line:?}; strata says:\n{ours_analyzed}"
            );
        }
    }
}

#[tokio::test]
async fn prometheus_serves_a_block_strata_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate_openmetrics(dir.path(), &["--targets", "1", "--hours", "3"]);
    let data = dir.path().join("prometheus-data");
    stdout_ok(
        "strata create-blocks-from",
        strata(&[
            "tools",
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            path_str(&input),
            path_str(&data),
        ]),
    );
    let dump = strata_dump(&data, &[]);
    // The last sample time, and the series with samples in the hour up to it.
    let last_t = dump.lines().map(|l| split_line(l).2).max().unwrap();
    let from = (last_t - 3_600_000 + 1).to_string();
    let last_hour = strata_dump(&data, &["--min-time", &from]);
    let mut series: Vec<&str> = last_hour.lines().map(|l| split_line(l).0).collect();
    series.dedup();

    let prom = Prometheus::builder()
        .config("global:\n  scrape_interval: 1m\n")
        .data_dir(&data)
        .start()
        .await
        .unwrap();
    let at = format!("{:.3}", last_t as f64 / 1000.0);
    let count = prom
        .api(
            "query",
            &[
                ("query", "count(last_over_time({__name__=~\".+\"}[1h]))"),
                ("time", &at),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        count["result"][0]["value"][1],
        series.len().to_string(),
        "{count}"
    );

    // One sample read back exactly: a dump's label set is also a PromQL selector.
    let line = last_hour
        .lines()
        .find(|l| l.contains("http_requests_total"))
        .unwrap();
    let (labels, v, t) = split_line(line);
    let at = format!("{:.3}", t as f64 / 1000.0);
    let got = prom
        .api("query", &[("query", labels), ("time", &at)])
        .await
        .unwrap();
    let got: f64 = got["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(got, v.parse::<f64>().unwrap(), "{labels} at {t}");
}
