//! `strata compact` over a real S3 server (MinIO): flags and exit codes, `/metrics` with
//! `--wait`, and kill -9 at several points of a pass (through the test-only fault hook
//! `STRATA_COMPACT_FAULT`) followed by a clean rerun that must leave a bucket with no
//! overlapping live blocks and every input sample exactly once.

#![allow(clippy::unwrap_used)] // test code: fixtures we made

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use strata_bucket::{sync, transfer};
use strata_e2e::{Minio, Process, free_port, wait_until};
use strata_objstore::{Bucket, BucketConfig};
use strata_tsdb::{Block, BlockWriter, BlockWriterOptions, Labels, Sample};

const H: i64 = 3600 * 1000;

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = strata();
    c.arg("compact").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run strata compact")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_lists_the_thanos_flag_names() {
    let o = strata().args(["compact", "--help"]).output().unwrap();
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--data-dir",
        "--objstore.config",
        "--objstore.config-file",
        "--wait",
        "--wait-interval",
        "--consistency-delay",
        "--compact.enable-vertical-compaction",
        "--deduplication.replica-label",
        "--downsampling.disable",
        "--retention.resolution-raw",
        "--retention.resolution-5m",
        "--retention.resolution-1h",
        "--delete-delay",
        "--compact.concurrency",
        "--block-sync-concurrency",
        "--selector.relabel-config",
        "--selector.relabel-config-file",
        "--http-address",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = format!(
        "type: FILESYSTEM\nconfig:\n  directory: {}\n",
        tmp.path().join("b").display()
    );
    for (args, needle) in [
        (vec!["--wait-interval", "soon"], "--wait-interval"),
        (
            vec!["--retention.resolution-raw", "forever"],
            "--retention.resolution-raw",
        ),
        (
            vec!["--objstore.config", &yaml, "--compact.concurrency", "0"],
            "--compact.concurrency",
        ),
        (
            vec!["--objstore.config", "type: NOPE\nconfig: {}"],
            "object storage",
        ),
        (
            vec![
                "--objstore.config",
                &yaml,
                "--selector.relabel-config=- action: bogus",
            ],
            "--selector.relabel-config",
        ),
        (vec![], "objstore"),
    ] {
        let o = run(&args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

/// Writes a block of 3 series over `[from, to)` into `dir`.
fn write_block(dir: &Path, from: i64, to: i64, seed: f64) -> String {
    let mut w = BlockWriter::new(dir, BlockWriterOptions::default()).unwrap();
    for i in 0..3 {
        let l = Labels::from_pairs([("__name__", "m"), ("i", &*i.to_string())]).unwrap();
        let s: Vec<(i64, f64)> = (from..to)
            .step_by(30_000)
            .map(|t| (t, seed + (t / 30_000) as f64 + i as f64))
            .collect();
        w.add_series(&l, &s).unwrap();
    }
    w.set_time_range(from, to);
    w.finish().unwrap().to_string()
}

type Samples = BTreeMap<String, Vec<(i64, f64)>>;

/// Checks the blocks a reader sees (meta.json, no deletion mark, not hidden by Thanos's
/// duplicate filter): no two of one group overlap, and returns all their samples (per external
/// labels + series), asserting none appears twice; also returns how many live blocks the
/// duplicate filter hides.
async fn read_bucket(bucket: &Bucket) -> (Samples, usize) {
    let tmp = tempfile::tempdir().unwrap();
    let mut all = Samples::new();
    let mut ranges: BTreeMap<String, Vec<(i64, i64, String)>> = BTreeMap::new();
    let mut metas = Vec::new();
    for (id, o) in sync::list_blocks(bucket).await.unwrap() {
        if !o.meta || o.deletion_mark {
            continue;
        }
        metas.push(
            transfer::download_block(bucket, id, tmp.path())
                .await
                .unwrap(),
        );
    }
    let dups = sync::duplicates(metas.iter());
    for m in metas.iter().filter(|m| !dups.contains(&m.ulid)) {
        let id = m.ulid;
        let ext = format!("{:?}", m.thanos.as_ref().and_then(|t| t.labels.clone()));
        ranges
            .entry(ext.clone())
            .or_default()
            .push((m.min_time, m.max_time, id.to_string()));
        let b = Block::open(tmp.path().join(id.to_string())).unwrap();
        for r in b.index().all_postings().unwrap() {
            let s = b.series_samples(r, i64::MIN, i64::MAX).unwrap();
            let e = all.entry(format!("{ext}{:?}", s.labels)).or_default();
            for smp in &s.samples {
                match smp {
                    Sample::Float { t, v } => e.push((*t, *v)),
                    other => panic!("unexpected {other:?}"),
                }
            }
            e.sort_by_key(|p| p.0);
            let n = e.len();
            e.dedup_by_key(|p| p.0);
            assert_eq!(n, e.len(), "a sample is in two live blocks");
        }
    }
    for (g, mut rs) in ranges {
        rs.sort();
        for w in rs.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "live blocks {} and {} of {g} overlap",
                w[0].2,
                w[1].2
            );
        }
    }
    (all, dups.len())
}

/// [`read_bucket`], asserting no live block is a duplicate (the bucket has converged).
async fn check_bucket(bucket: &Bucket) -> Samples {
    let (all, dups) = read_bucket(bucket).await;
    assert_eq!(dups, 0, "live duplicate blocks left");
    all
}

struct Setup {
    _minio: Minio,
    bucket: Bucket,
    yaml: String,
    _tmp: tempfile::TempDir,
    data: String,
}

/// MinIO with `name` holding five 2h blocks of one group (the first four compact together).
async fn setup(name: &str) -> Setup {
    let minio = Minio::start().await.expect("MinIO");
    minio.create_bucket(name).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..5 {
        write_block(&src, i * 2 * H, (i + 1) * 2 * H, i as f64);
    }
    minio
        .upload_blocks(name, &src, &[("cluster", "eu")])
        .await
        .unwrap();
    let yaml = minio.objstore_yaml(name);
    let bucket = Bucket::from_config(&BucketConfig::parse(&yaml, "test").unwrap()).unwrap();
    let data = tmp.path().join("data").display().to_string();
    Setup {
        _minio: minio,
        bucket,
        yaml,
        _tmp: tmp,
        data,
    }
}

fn compact_args<'a>(s: &'a Setup, port: &'a str, delete_delay: &'a str) -> Vec<&'a str> {
    vec![
        "--objstore.config",
        &s.yaml,
        "--data-dir",
        &s.data,
        "--consistency-delay",
        "0s",
        "--delete-delay",
        delete_delay,
        "--http-address",
        port,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_compacts_and_exits_0_then_an_overlap_exits_1() {
    let s = setup("once").await;
    let before = check_bucket(&s.bucket).await;
    let port = format!("127.0.0.1:{}", free_port());
    let o = run(&compact_args(&s, &port, "48h"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let after = check_bucket(&s.bucket).await;
    assert_eq!(after, before);
    let live = sync::list_blocks(&s.bucket).await.unwrap();
    assert_eq!(
        live.values().filter(|o| o.meta && !o.deletion_mark).count(),
        2
    );

    // An overlapping block in the group: exit 1 naming both blocks.
    let tmp = tempfile::tempdir().unwrap();
    let bad = write_block(tmp.path(), 9 * H, 11 * H, 100.0);
    s._minio
        .upload_blocks("once", tmp.path(), &[("cluster", "eu")])
        .await
        .unwrap();
    let o = run(&compact_args(&s, &port, "48h"), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(&bad) && err.contains("overlap"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_mode_serves_metrics_and_keeps_running_when_halted() {
    let s = setup("wait").await;
    let tmp = tempfile::tempdir().unwrap();
    let bad = write_block(tmp.path(), 9 * H, 11 * H, 100.0);
    s._minio
        .upload_blocks("wait", tmp.path(), &[("cluster", "eu")])
        .await
        .unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args = compact_args(&s, &addr, "48h");
    args.extend(["--wait", "--wait-interval", "1s"]);
    let mut cmd = strata();
    cmd.arg("compact").args(&args);
    let mut p = Process::spawn("strata-compact", cmd).unwrap();
    let url = format!("http://{addr}");
    p.wait_http_ok(&format!("{url}/-/ready"), Duration::from_secs(30))
        .await
        .unwrap();
    let metrics = wait_until("two passes, halted", Duration::from_secs(60), || {
        let url = url.clone();
        async move {
            let body = reqwest::get(format!("{url}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let iters: f64 = body
                .lines()
                .find_map(|l| l.strip_prefix("strata_compact_iterations_total "))?
                .parse()
                .ok()?;
            (iters >= 2.0 && body.contains("strata_compact_halted 1")).then_some(body)
        }
    })
    .await
    .unwrap();
    assert!(metrics.contains("strata_compact_last_successful_run_timestamp_seconds"));
    // The same, as the operator reads it: which blocks overlap, and no clean pass yet.
    let status: serde_json::Value = reqwest::get(format!("{url}/api/v1/status/compactor"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let halted = status["halted"].as_array().unwrap();
    assert_eq!(halted.len(), 1, "{status}");
    assert!(
        halted[0]["blocks"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(bad)),
        "{status}"
    );
    assert!(
        halted[0]["message"].as_str().unwrap().contains("overlap"),
        "{status}"
    );
    assert_eq!(
        status["lastSuccessfulRun"],
        serde_json::Value::Null,
        "{status}"
    );
    assert!(status["passes"].as_u64().unwrap() >= 2, "{status}");
    p.check_running().unwrap();
    p.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    let st = p.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert_eq!(st.code(), Some(0), "{}", p.log_tail());
}

/// Kills the compactor (abort, as kill -9 would) at `point`, reruns it without the fault and
/// checks the bucket converged: the output replaced the four sources, every sample once.
async fn crash_at(point: &str, bucket_name: &str) {
    let s = setup(bucket_name).await;
    let before = check_bucket(&s.bucket).await;
    let port = format!("127.0.0.1:{}", free_port());
    let o = run(
        &compact_args(&s, &port, "0s"),
        &[("STRATA_COMPACT_FAULT", point)],
    );
    assert_eq!(
        o.status.signal(),
        Some(6),
        "{point}: not aborted: {}",
        stderr(&o)
    );
    // Readers see the same samples even right after the crash.
    assert_eq!(
        read_bucket(&s.bucket).await.0,
        before,
        "{point}: after the crash"
    );

    let o = run(&compact_args(&s, &port, "0s"), &[]);
    assert_eq!(o.status.code(), Some(0), "{point}: rerun: {}", stderr(&o));
    // One more pass deletes whatever the rerun marked.
    let o = run(&compact_args(&s, &port, "0s"), &[]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{point}: third run: {}",
        stderr(&o)
    );
    assert_eq!(
        check_bucket(&s.bucket).await,
        before,
        "{point}: after the rerun"
    );
    let blocks = sync::list_blocks(&s.bucket).await.unwrap();
    let live: Vec<_> = blocks
        .values()
        .filter(|o| o.meta && !o.deletion_mark)
        .collect();
    assert_eq!(live.len(), 2, "{point}: {blocks:?}");
    assert!(
        blocks.values().all(|o| o.meta && !o.deletion_mark),
        "{point}: leftovers not deleted: {blocks:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_the_upload_before_any_mark_converges() {
    crash_at("after-upload", "crash-upload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_between_marks_converges() {
    crash_at("between-marks", "crash-marks").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_marks_converges() {
    crash_at("after-marks", "crash-after-marks").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_delete_converges() {
    // A first clean run marks the sources; a kill before cleanup leaves them marked.
    let s = setup("crash-delete").await;
    let before = check_bucket(&s.bucket).await;
    let port = format!("127.0.0.1:{}", free_port());
    let o = run(
        &compact_args(&s, &port, "0s"),
        &[("STRATA_COMPACT_FAULT", "before-cleanup")],
    );
    assert_eq!(o.status.signal(), Some(6), "{}", stderr(&o));
    // A kill in the middle of deleting a block leaves it without meta.json (deleted first) but
    // with its other objects and the mark (deleted last): make that state for one source.
    let marked: Vec<_> = sync::list_blocks(&s.bucket)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, o)| o.deletion_mark)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(marked.len(), 4);
    s.bucket
        .delete(&format!("{}/meta.json", marked[0]))
        .await
        .unwrap();
    s.bucket
        .delete(&format!("{}/index", marked[0]))
        .await
        .unwrap();
    assert_eq!(check_bucket(&s.bucket).await, before);

    let o = run(&compact_args(&s, &port, "0s"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(&compact_args(&s, &port, "0s"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(check_bucket(&s.bucket).await, before);
    let blocks = sync::list_blocks(&s.bucket).await.unwrap();
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    assert!(
        s.bucket
            .list_recursive(&format!("{}/", marked[0]))
            .await
            .unwrap()
            .is_empty()
    );
}

/// The live blocks of a bucket as a compactor leaves them: (external labels, min time, max
/// time, level, sources), sorted.
async fn live_blocks(bucket: &Bucket) -> Vec<(String, i64, i64, u32, Vec<String>)> {
    let tmp = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for (id, o) in sync::list_blocks(bucket).await.unwrap() {
        if !o.meta || o.deletion_mark {
            continue;
        }
        let m = transfer::download_block(bucket, id, tmp.path())
            .await
            .unwrap();
        let ext = format!("{:?}", m.thanos.as_ref().and_then(|t| t.labels.clone()));
        let mut sources: Vec<String> = m.compaction.sources.iter().map(|u| u.to_string()).collect();
        sources.sort();
        out.push((ext, m.min_time, m.max_time, m.compaction.level, sources));
    }
    out.sort();
    out
}

/// One bucket content in two buckets: a real `thanos compact` (one pass) compacts one, `strata
/// compact` the other. Both leave the same live blocks (time ranges, levels, sources: the same
/// plan) holding the same samples, so either compactor can take over the other's bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thanos_compact_and_strata_compact_leave_the_same_bucket() {
    let minio = Minio::start().await.expect("MinIO");
    let tmp = tempfile::tempdir().unwrap();
    // Two groups: 14 consecutive 2h blocks in one (8h ranges complete, a 2d range not), 5 in
    // the other.
    let (eu, us) = (tmp.path().join("eu"), tmp.path().join("us"));
    for i in 0..14 {
        write_block(&eu, i * 2 * H, (i + 1) * 2 * H, i as f64);
    }
    for i in 0..5 {
        write_block(&us, i * 2 * H, (i + 1) * 2 * H, 50.0 + i as f64);
    }
    for name in ["by-thanos", "by-strata"] {
        minio.create_bucket(name).await.unwrap();
        minio
            .upload_blocks(name, &eu, &[("cluster", "eu")])
            .await
            .unwrap();
        minio
            .upload_blocks(name, &us, &[("cluster", "us")])
            .await
            .unwrap();
    }
    let bucket = |name: &str| {
        Bucket::from_config(&BucketConfig::parse(&minio.objstore_yaml(name), "test").unwrap())
            .unwrap()
    };
    let (by_thanos, by_strata) = (bucket("by-thanos"), bucket("by-strata"));
    let before = check_bucket(&by_thanos).await;
    assert_eq!(check_bucket(&by_strata).await, before);

    let common = |data: &Path| {
        vec![
            format!("--data-dir={}", data.display()),
            "--consistency-delay=0s".to_string(),
            "--delete-delay=48h".to_string(),
            "--downsampling.disable".to_string(),
            format!("--http-address=127.0.0.1:{}", free_port()),
        ]
    };
    let thanos = Command::new(strata_e2e::tool_path(strata_e2e::Tool::Thanos).unwrap())
        .arg("compact")
        .arg(format!(
            "--objstore.config={}",
            minio.objstore_yaml("by-thanos")
        ))
        .args(common(&tmp.path().join("thanos-data")))
        .output()
        .unwrap();
    assert!(
        thanos.status.success(),
        "thanos compact: {}",
        stderr(&thanos)
    );
    let ours = strata()
        .arg("compact")
        .arg(format!(
            "--objstore.config={}",
            minio.objstore_yaml("by-strata")
        ))
        .args(common(&tmp.path().join("strata-data")))
        .output()
        .unwrap();
    assert!(ours.status.success(), "strata compact: {}", stderr(&ours));

    let (theirs, mine) = (live_blocks(&by_thanos).await, live_blocks(&by_strata).await);
    assert_eq!(mine, theirs, "live blocks after each compactor");
    // Thanos's plan: three 8h blocks of `eu` and one of `us`; the rest (the freshest 2h
    // blocks, an incomplete 8h range) left as they were.
    let levels: Vec<(i64, i64, u32)> = theirs.iter().map(|b| (b.1, b.2, b.3)).collect();
    let h = |n: i64| n * H;
    assert_eq!(
        levels,
        [
            (0, h(8), 2),
            (h(8), h(16), 2),
            (h(16), h(24), 2),
            (h(24), h(26), 1),
            (h(26), h(28), 1),
            (0, h(8), 2),
            (h(8), h(10), 1),
        ],
        "{theirs:?}"
    );
    assert_eq!(check_bucket(&by_strata).await, before);
    assert_eq!(check_bucket(&by_thanos).await, before);
}
