//! `strata tools bucket …` as a process against a real MinIO bucket holding blocks made by
//! `strata tools tsdb create-blocks-from openmetrics`: ls/inspect report the blocks' numbers,
//! verify finds an overlap, a deleted chunk segment and a corrupted index (and passes a clean
//! bucket), a deletion mark it writes is honoured by a real `thanos tools bucket ls
//! --exclude-delete`, retention marks only old blocks, cleanup deletes only after the delay.

use std::path::Path;
use std::process::{Command, Output};

use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use strata_e2e::{Minio, Tool, run_tool};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run strata")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `strata tools bucket --objstore.config=<yaml> <args…>`.
fn bucket_cmd(yaml: &str, args: &[&str]) -> Output {
    let flag = format!("--objstore.config={yaml}");
    let mut all = vec!["tools", "bucket", flag.as_str()];
    all.extend_from_slice(args);
    strata(&all)
}

fn ok(what: &str, out: Output) -> String {
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{what}: {stdout}\n{stderr}");
    stdout
}

/// Blocks of one series `m{i=…}` per `series`, one sample a minute from `start_s` for `minutes`.
fn make_blocks(dir: &Path, start_s: i64, minutes: i64, series: usize, value: f64) -> Vec<String> {
    let mut om = String::from("# TYPE m gauge\n");
    for s in 0..series {
        for i in 0..minutes {
            om.push_str(&format!(
                "m{{i=\"{s}\"}} {} {}\n",
                value + i as f64,
                start_s + i * 60
            ));
        }
    }
    om.push_str("# EOF\n");
    let input = dir.join("in.om");
    std::fs::write(&input, om).expect("write openmetrics");
    let blocks = dir.join("blocks");
    ok(
        "create-blocks-from",
        strata(&[
            "tools",
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "-q",
            input.to_str().expect("utf-8"),
            blocks.to_str().expect("utf-8"),
        ]),
    );
    let mut ids: Vec<String> = std::fs::read_dir(&blocks)
        .expect("blocks dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    ids
}

fn meta(dir: &Path, id: &str) -> serde_json::Value {
    let raw = std::fs::read(dir.join("blocks").join(id).join("meta.json")).expect("meta.json");
    serde_json::from_slice(&raw).expect("meta parses")
}

async fn objects(minio: &Minio, bucket: &str) -> Vec<String> {
    let store = minio.object_store(bucket).expect("client");
    let mut names: Vec<String> = store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list");
    names.sort();
    names
}

const HOUR_S: i64 = 3600;

#[tokio::test(flavor = "multi_thread")]
async fn ls_inspect_and_verify_against_minio() {
    let minio = Minio::start().await.expect("minio");
    let tmp = tempfile::tempdir().expect("tempdir");
    let a_dir = tmp.path().join("a");
    let b_dir = tmp.path().join("b");
    std::fs::create_dir_all(&a_dir).expect("mkdir");
    std::fs::create_dir_all(&b_dir).expect("mkdir");
    // Two blocks' worth of data (2h blocks), and an overlapping second set.
    let start = 1_700_000_000 / 7200 * 7200;
    let a = make_blocks(&a_dir, start, 180, 3, 1.0);
    let b = make_blocks(&b_dir, start + 1800, 30, 2, 100.0);
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(b.len(), 1, "{b:?}");

    minio.create_bucket("clean").await.expect("bucket");
    minio
        .upload_blocks("clean", &a_dir.join("blocks"), &[("cluster", "eu")])
        .await
        .expect("upload");
    minio
        .upload_blocks("clean", &b_dir.join("blocks"), &[("cluster", "us")])
        .await
        .expect("upload");
    let clean = minio.objstore_yaml("clean");

    // ls table: every block with its numbers and labels.
    let table = ok("ls", bucket_cmd(&clean, &["ls"]));
    let header = table.lines().next().expect("header");
    for col in [
        "ULID",
        "FROM",
        "UNTIL",
        "RANGE",
        "SERIES",
        "SAMPLES",
        "CHUNKS",
        "LEVEL",
        "RESOLUTION",
        "SOURCE",
        "LABELS",
        "MARKS",
    ] {
        assert!(header.contains(col), "{col} missing: {header}");
    }
    for id in a.iter().chain(&b) {
        let dir = if a.contains(id) { &a_dir } else { &b_dir };
        let m = meta(dir, id);
        let line = table
            .lines()
            .find(|l| l.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{id} not listed:\n{table}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[4], m["stats"]["numSeries"].to_string(), "{line}");
        assert_eq!(cols[5], m["stats"]["numSamples"].to_string(), "{line}");
        assert_eq!(cols[6], m["stats"]["numChunks"].to_string(), "{line}");
        let label = if a.contains(id) {
            "cluster=\"eu\""
        } else {
            "cluster=\"us\""
        };
        assert!(line.contains(label), "{line}");
    }

    // ls json: the metas themselves.
    let json: serde_json::Value =
        serde_json::from_str(&ok("ls -o json", bucket_cmd(&clean, &["ls", "-o", "json"])))
            .expect("json");
    let items = json.as_array().expect("array");
    assert_eq!(items.len(), 3);
    for item in items {
        let id = item["ulid"].as_str().expect("ulid");
        let dir = if a.iter().any(|x| x == id) {
            &a_dir
        } else {
            &b_dir
        };
        let m = meta(dir, id);
        assert_eq!(item["meta"]["minTime"], m["minTime"]);
        assert_eq!(item["meta"]["maxTime"], m["maxTime"]);
        assert_eq!(
            item["meta"]["stats"]["numSamples"],
            m["stats"]["numSamples"]
        );
        assert_eq!(item["marks"]["deletion"], false);
    }

    // inspect one block: its numbers, labels and files.
    let m = meta(&a_dir, &a[0]);
    let out = ok("inspect", bucket_cmd(&clean, &["inspect", "--id", &a[0]]));
    assert!(out.contains(&format!("Block {}", a[0])), "{out}");
    assert!(!out.contains(&a[1]), "only the asked block: {out}");
    for (field, key) in [
        ("series:", "numSeries"),
        ("samples:", "numSamples"),
        ("chunks:", "numChunks"),
    ] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(field))
            .expect(field);
        assert_eq!(
            line.split_whitespace().nth(1),
            Some(m["stats"][key].to_string().as_str()),
            "{line}"
        );
    }
    assert!(out.contains("cluster=\"eu\""), "{out}");
    let index_size = std::fs::metadata(a_dir.join("blocks").join(&a[0]).join("index"))
        .expect("index")
        .len();
    assert!(
        out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["index", index_size.to_string().as_str()]),
        "index size {index_size}: {out}"
    );
    // --selector picks by external labels.
    let us = ok(
        "inspect --selector",
        bucket_cmd(&clean, &["inspect", "--selector", "{cluster=\"us\"}"]),
    );
    assert!(
        us.contains(&b[0]) && !us.contains(&a[0]) && !us.contains(&a[1]),
        "{us}"
    );
    // Unknown ids and bad selectors are bad input.
    let unknown = bucket_cmd(&clean, &["inspect", "--id", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]);
    assert_eq!(unknown.status.code(), Some(2), "{:?}", text(&unknown));
    assert!(text(&unknown).1.contains("01ARZ3NDEKTSV4RRFFQ69G5FAV"));
    assert_eq!(
        bucket_cmd(&clean, &["inspect", "--id", "nope"])
            .status
            .code(),
        Some(2)
    );

    // A clean bucket verifies (index checks included).
    let out = ok("verify clean", bucket_cmd(&clean, &["verify", "--index"]));
    assert!(out.contains("no issues"), "{out}");

    // Same labels → the second set overlaps the first.
    minio.create_bucket("overlap").await.expect("bucket");
    minio
        .upload_blocks("overlap", &a_dir.join("blocks"), &[("cluster", "eu")])
        .await
        .expect("upload");
    minio
        .upload_blocks("overlap", &b_dir.join("blocks"), &[("cluster", "eu")])
        .await
        .expect("upload");
    let out = bucket_cmd(&minio.objstore_yaml("overlap"), &["verify"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("overlaps block") && stdout.contains(&b[0]) && stdout.contains(&a[0]),
        "{stdout}"
    );

    // A deleted chunk segment and a corrupted index.
    minio.create_bucket("broken").await.expect("bucket");
    minio
        .upload_blocks("broken", &a_dir.join("blocks"), &[("cluster", "eu")])
        .await
        .expect("upload");
    let store = minio.object_store("broken").expect("client");
    store
        .delete(&ObjPath::from(format!("{}/chunks/000001", a[0])))
        .await
        .expect("delete chunk file");
    let mut index = std::fs::read(a_dir.join("blocks").join(&a[1]).join("index")).expect("index");
    let mid = index.len() / 2;
    for byte in &mut index[mid..mid + 16] {
        *byte ^= 0xff;
    }
    store
        .put(&ObjPath::from(format!("{}/index", a[1])), index.into())
        .await
        .expect("corrupt index");
    let yaml = minio.objstore_yaml("broken");
    let out = bucket_cmd(&yaml, &["verify", "--index"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(a[0].as_str()) && l.contains("000001")),
        "missing segment of {}: {stdout}",
        a[0]
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(a[1].as_str()) && l.contains("index")),
        "corrupt index of {}: {stdout}",
        a[1]
    );
    // --id limits the checks to that block.
    let out = bucket_cmd(&yaml, &["verify", "--index", "--id", &a[1]]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(!stdout.contains(a[0].as_str()), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mark_retention_and_cleanup_against_minio() {
    let minio = Minio::start().await.expect("minio");
    let tmp = tempfile::tempdir().expect("tempdir");
    let old_dir = tmp.path().join("old");
    let new_dir = tmp.path().join("new");
    std::fs::create_dir_all(&old_dir).expect("mkdir");
    std::fs::create_dir_all(&new_dir).expect("mkdir");
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let old = make_blocks(
        &old_dir,
        (now_s - 30 * 24 * HOUR_S) / 7200 * 7200,
        60,
        2,
        1.0,
    );
    // An hour of data inside one 2h block range that started between 2h and 4h ago (unaligned,
    // it would straddle a block boundary at some times of day).
    let new = make_blocks(
        &new_dir,
        (now_s - 4 * HOUR_S) / 7200 * 7200 + 7200,
        60,
        2,
        1.0,
    );
    assert_eq!(old.len(), 1);
    assert_eq!(new.len(), 1);
    minio.create_bucket("life").await.expect("bucket");
    minio
        .upload_blocks("life", &old_dir.join("blocks"), &[("cluster", "eu")])
        .await
        .expect("upload");
    minio
        .upload_blocks("life", &new_dir.join("blocks"), &[("cluster", "eu")])
        .await
        .expect("upload");
    let yaml = minio.objstore_yaml("life");
    let flag = format!("--objstore.config={yaml}");

    // Retention: dry run changes nothing; then only the old block is marked.
    let before = objects(&minio, "life").await;
    let out = ok(
        "retention dry",
        bucket_cmd(
            &yaml,
            &["retention", "--retention.resolution-raw=7d", "--dry-run"],
        ),
    );
    assert!(
        out.contains(&format!("would mark {}", old[0])) && !out.contains(&new[0]),
        "{out}"
    );
    assert_eq!(objects(&minio, "life").await, before);
    let out = ok(
        "retention",
        bucket_cmd(&yaml, &["retention", "--retention.resolution-raw=7d"]),
    );
    assert!(
        out.contains(&format!("marked {}", old[0])) && !out.contains(&new[0]),
        "{out}"
    );
    let names = objects(&minio, "life").await;
    assert!(
        names.contains(&format!("{}/deletion-mark.json", old[0])),
        "{names:?}"
    );
    assert!(
        !names.contains(&format!("{}/deletion-mark.json", new[0])),
        "{names:?}"
    );

    // A real Thanos honours the mark: `ls --exclude-delete` leaves the block out.
    let thanos_ls = |exclude: bool| {
        let mut args = vec!["tools", "bucket", "ls", flag.as_str()];
        if exclude {
            args.push("--exclude-delete");
        }
        let out = run_tool(Tool::Thanos, &args).expect("thanos installed");
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "thanos ls: {stdout}\n{stderr}");
        stdout + &stderr
    };
    let all = thanos_ls(false);
    assert!(all.contains(&old[0]) && all.contains(&new[0]), "{all}");
    let live = thanos_ls(true);
    assert!(!live.contains(&old[0]) && live.contains(&new[0]), "{live}");

    // mark: no-compact on the new block (shown by ls), deletion via strata read by Thanos;
    // ids that are not blocks are refused.
    ok(
        "mark no-compact",
        bucket_cmd(
            &yaml,
            &[
                "mark",
                "--type",
                "no-compact",
                "--id",
                &new[0],
                "--details",
                "keep it",
            ],
        ),
    );
    let raw = minio
        .object_store("life")
        .expect("client")
        .get(&ObjPath::from(format!("{}/no-compact-mark.json", new[0])))
        .await
        .expect("mark written")
        .bytes()
        .await
        .expect("read");
    let mark: serde_json::Value = serde_json::from_slice(&raw).expect("json");
    assert_eq!(mark["id"], new[0].as_str());
    assert_eq!(mark["details"], "keep it");
    assert_eq!(mark["version"], 1);
    let table = ok("ls", bucket_cmd(&yaml, &["ls"]));
    let line = table
        .lines()
        .find(|l| l.starts_with(new[0].as_str()))
        .expect("listed");
    assert!(line.ends_with("no-compact"), "{line}");
    let bad = bucket_cmd(
        &yaml,
        &[
            "mark",
            "--type",
            "deletion",
            "--id",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "--details",
            "x",
        ],
    );
    assert_eq!(bad.status.code(), Some(2), "{:?}", text(&bad));

    // Cleanup: not before the delay; the dry run changes nothing; then the block is gone.
    let before = objects(&minio, "life").await;
    let out = ok(
        "cleanup delay",
        bucket_cmd(&yaml, &["cleanup", "--delete-delay=1h"]),
    );
    assert!(out.contains("deleted 0 block(s)"), "{out}");
    let out = ok(
        "cleanup dry",
        bucket_cmd(&yaml, &["cleanup", "--delete-delay=0s", "--dry-run"]),
    );
    assert!(out.contains(&format!("would delete {}", old[0])), "{out}");
    assert_eq!(objects(&minio, "life").await, before);
    let out = ok(
        "cleanup",
        bucket_cmd(&yaml, &["cleanup", "--delete-delay=0s"]),
    );
    assert!(out.contains(&format!("deleted {}", old[0])), "{out}");
    let names = objects(&minio, "life").await;
    assert!(
        !names.iter().any(|n| n.starts_with(old[0].as_str())),
        "{names:?}"
    );
    assert!(
        names.contains(&format!("{}/meta.json", new[0])),
        "{names:?}"
    );

    // Bad flags and an unreadable config exit 2.
    assert_eq!(
        bucket_cmd(&yaml, &["cleanup", "--delete-delay=soon"])
            .status
            .code(),
        Some(2)
    );
    let out = strata(&[
        "tools",
        "bucket",
        "--objstore.config-file=/nonexistent/bucket.yml",
        "ls",
    ]);
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
}
