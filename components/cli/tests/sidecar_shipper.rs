//! `strata sidecar` shipping blocks a real Prometheus 3.x cuts to a real S3 server (MinIO): every block
//! arrives byte-identical with a Thanos-style meta.json, also when the sidecar is killed with SIGKILL in
//! the middle of uploads (a slow link through a proxy widens the window) and when the bucket is down.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use strata_e2e::{Minio, Process, Prometheus, Proxy, free_port, promtool};

const BUCKET: &str = "blocks";

async fn prometheus() -> Prometheus {
    Prometheus::builder()
        .external_label("cluster", "eu-1")
        .external_label("replica", "a")
        .arg("--storage.tsdb.min-block-duration=20s")
        .arg("--storage.tsdb.max-block-duration=20s")
        .start()
        .await
        .expect("start Prometheus")
}

fn start_sidecar(prom: &Prometheus, objstore_yaml: &str) -> Process {
    start_sidecar_on(prom, objstore_yaml, &format!("127.0.0.1:{}", free_port()))
}

fn start_sidecar_on(prom: &Prometheus, objstore_yaml: &str, grpc: &str) -> Process {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.arg("sidecar")
        .arg(format!("--prometheus.url={}", prom.url()))
        .arg(format!("--tsdb.path={}", prom.data_dir().display()))
        .arg(format!("--grpc-address={grpc}"))
        .arg(format!("--http-address=127.0.0.1:{}", free_port()))
        .arg(format!("--objstore.config={objstore_yaml}"))
        .arg("--shipper.sync-interval=1s")
        .arg("--log.level=debug");
    Process::spawn("strata-sidecar", cmd).expect("spawn strata sidecar")
}

/// Polls `check` every 500 ms until it returns `Ok`, failing after `timeout` with its last reason;
/// fails at once when the sidecar has died.
async fn poll<T, Fut>(
    what: &str,
    timeout: Duration,
    sidecar: &mut Process,
    mut check: impl FnMut() -> Fut,
) -> T
where
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Err(e) = sidecar.check_running() {
            panic!("waiting for {what}: the sidecar died: {e:?}");
        }
        match check().await {
            Ok(v) => return v,
            Err(why) if start.elapsed() > timeout => panic!("no {what} after {timeout:?}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Local level-1 blocks (ULID dir names with a meta.json).
fn local_blocks(data: &Path) -> BTreeSet<String> {
    std::fs::read_dir(data)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("meta.json").is_file())
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.len() == 26)
                .collect()
        })
        .unwrap_or_default()
}

/// Every object in the bucket with its size, by full name.
async fn bucket_objects(store: &Arc<object_store::aws::AmazonS3>) -> BTreeMap<String, u64> {
    store
        .list(None)
        .map_ok(|m| (m.location.to_string(), m.size))
        .try_collect::<BTreeMap<_, _>>()
        .await
        .expect("list bucket")
}

/// The invariant readers rely on: a block with meta.json in the bucket has every file meta.json
/// lists, with the listed sizes.
async fn check_complete_blocks(store: &Arc<object_store::aws::AmazonS3>) -> BTreeSet<String> {
    let objects = bucket_objects(store).await;
    let mut complete = BTreeSet::new();
    for name in objects.keys().filter(|n| n.ends_with("/meta.json")) {
        let block = name.trim_end_matches("/meta.json").to_owned();
        let meta = store
            .get(&ObjPath::from(name.as_str()))
            .await
            .expect("get meta.json")
            .bytes()
            .await
            .expect("read meta.json");
        let meta: serde_json::Value = serde_json::from_slice(&meta).expect("meta.json is JSON");
        let files = meta["thanos"]["files"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has thanos.files: {meta}"));
        for f in files {
            let rel = f["rel_path"].as_str().expect("rel_path");
            if rel == "meta.json" {
                continue;
            }
            let size = objects
                .get(&format!("{block}/{rel}"))
                .unwrap_or_else(|| panic!("{block} has meta.json but no {rel}"));
            assert_eq!(
                Some(*size),
                f["size_bytes"].as_u64(),
                "{block}/{rel} size differs from meta.json"
            );
        }
        complete.insert(block);
    }
    complete
}

/// Files of a local block, relative to it, except meta.json and tombstones (which Thanos's shipper
/// does not upload either).
fn block_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read block dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .is_some_and(|n| n != "meta.json" && n != "tombstones")
            {
                out.push(p.strip_prefix(dir).expect("inside").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_block_shipped_exactly_once_across_sigkills() {
    let minio = Minio::start().await.expect("start MinIO");
    minio.create_bucket(BUCKET).await.expect("create bucket");
    let store = minio.object_store(BUCKET).expect("S3 client");
    let proxy = Proxy::start(minio.addr()).await.expect("start proxy");
    let yaml = minio.objstore_yaml_via(BUCKET, &proxy.addr().to_string());
    let prom = prometheus().await;

    // A slow link: a block takes seconds to upload, so kills land mid-upload.
    proxy.set_rate(20 * 1024);
    let mut sidecar = start_sidecar(&prom, &yaml);
    let mut kills = 0;
    let mut partial_seen = 0;
    while kills < 3 {
        // Wait for an upload in progress: objects of a block whose meta.json is not there yet.
        let partial = poll(
            "an upload in progress",
            Duration::from_secs(180),
            &mut sidecar,
            || async {
                let objects = bucket_objects(&store).await;
                let complete = check_complete_blocks(&store).await;
                let started: BTreeSet<String> = objects
                    .keys()
                    .filter_map(|n| n.split('/').next().map(str::to_owned))
                    .collect();
                let partial: Vec<String> = started.difference(&complete).cloned().collect();
                if partial.is_empty() {
                    return Err("no partial block yet".to_owned());
                }
                Ok(partial)
            },
        )
        .await;
        partial_seen += partial.len();
        sidecar
            .signal(nix::sys::signal::Signal::SIGKILL)
            .expect("SIGKILL");
        sidecar
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("dies");
        kills += 1;
        // No reader may ever see a block without all its files.
        check_complete_blocks(&store).await;
        sidecar = start_sidecar(&prom, &yaml);
    }
    assert!(partial_seen >= 3, "every kill interrupted an upload");

    // Full speed: everything Prometheus has cut must arrive, complete and byte-identical.
    proxy.set_rate(0);
    let data = prom.data_dir().to_path_buf();
    let wanted = local_blocks(&data);
    assert!(!wanted.is_empty(), "Prometheus has cut blocks");
    let shipped = poll(
        "all blocks shipped",
        Duration::from_secs(120),
        &mut sidecar,
        || async {
            let complete = check_complete_blocks(&store).await;
            if wanted.is_subset(&complete) {
                Ok(complete)
            } else {
                Err(format!("have {complete:?}, want {wanted:?}"))
            }
        },
    )
    .await;

    // Exactly once: no stray block dirs beyond complete blocks (the ones cut meanwhile are complete
    // too, or still being uploaded — wait for them as well).
    let objects = bucket_objects(&store).await;
    let dirs: BTreeSet<String> = objects
        .keys()
        .filter_map(|n| n.split('/').next().map(str::to_owned))
        .collect();
    for d in &dirs {
        if !shipped.contains(d) {
            assert!(
                local_blocks(&data).contains(d),
                "{d} in the bucket is no local block"
            );
        }
    }

    let tmp = tempfile::tempdir().expect("tempdir");
    for block in &wanted {
        let local = data.join(block);
        for rel in block_files(&local) {
            let name = format!("{block}/{}", rel.display());
            let remote = store
                .get(&ObjPath::from(name.as_str()))
                .await
                .unwrap_or_else(|e| panic!("get {name}: {e}"))
                .bytes()
                .await
                .expect("read object");
            let here = std::fs::read(local.join(&rel)).expect("read local file");
            assert!(
                remote.as_ref() == here.as_slice(),
                "{name} differs from the local file"
            );
            let copy = tmp.path().join(block).join(&rel);
            std::fs::create_dir_all(copy.parent().expect("parent")).expect("mkdir");
            std::fs::write(&copy, &remote).expect("write copy");
        }
        // meta.json: the local one plus the thanos section.
        let meta = store
            .get(&ObjPath::from(format!("{block}/meta.json").as_str()))
            .await
            .expect("get meta.json")
            .bytes()
            .await
            .expect("read meta.json");
        let remote: serde_json::Value = serde_json::from_slice(&meta).expect("JSON");
        let local: serde_json::Value =
            serde_json::from_slice(&std::fs::read(local.join("meta.json")).expect("read"))
                .expect("JSON");
        assert_eq!(remote["ulid"], local["ulid"]);
        assert_eq!(remote["minTime"], local["minTime"]);
        assert_eq!(remote["maxTime"], local["maxTime"]);
        assert_eq!(remote["stats"], local["stats"]);
        assert_eq!(remote["thanos"]["source"], "sidecar");
        assert_eq!(remote["thanos"]["downsample"]["resolution"], 0);
        assert_eq!(
            remote["thanos"]["labels"],
            serde_json::json!({"cluster": "eu-1", "replica": "a"})
        );
        std::fs::write(tmp.path().join(block).join("meta.json"), &meta).expect("write");
        // promtool reads the downloaded copy.
        let out = promtool(&[
            "tsdb",
            "analyze",
            tmp.path().to_str().expect("utf-8"),
            block,
        ])
        .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool tsdb analyze {block}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The sidecar remembers what it shipped in Thanos's format.
    let shipped_file: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join("thanos.shipper.json")).expect("thanos.shipper.json"),
    )
    .expect("JSON");
    assert_eq!(shipped_file["version"], 1);
    let listed: BTreeSet<String> = shipped_file["uploaded"]
        .as_array()
        .expect("uploaded")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert!(
        wanted.is_subset(&listed),
        "{listed:?} lacks some of {wanted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_outage_delays_uploads_and_loses_nothing() {
    let minio = Minio::start().await.expect("start MinIO");
    minio.create_bucket(BUCKET).await.expect("create bucket");
    let store = minio.object_store(BUCKET).expect("S3 client");
    let proxy = Proxy::start(minio.addr()).await.expect("start proxy");
    let yaml = minio.objstore_yaml_via(BUCKET, &proxy.addr().to_string());
    let prom = prometheus().await;

    proxy.set_down(true);
    let grpc = format!("127.0.0.1:{}", free_port());
    let mut sidecar = start_sidecar_on(&prom, &yaml, &grpc);
    let data = prom.data_dir().to_path_buf();
    // Blocks get cut while the bucket is unreachable; the sidecar keeps running.
    poll(
        "a block while the bucket is down",
        Duration::from_secs(180),
        &mut sidecar,
        || async {
            if local_blocks(&data).is_empty() {
                Err("no block yet".to_owned())
            } else {
                Ok(())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sidecar
        .check_running()
        .expect("the sidecar survives a bucket outage");
    assert!(bucket_objects(&store).await.is_empty());

    proxy.set_down(false);
    let wanted = local_blocks(&data);
    poll(
        "blocks shipped after the outage",
        Duration::from_secs(120),
        &mut sidecar,
        || async {
            let complete = check_complete_blocks(&store).await;
            if wanted.is_subset(&complete) {
                Ok(())
            } else {
                Err(format!("have {complete:?}, want {wanted:?}"))
            }
        },
    )
    .await;

    // With uploads on, Info advertises the oldest local block's min time, as a Thanos sidecar does:
    // older data is the store gateway's.
    let oldest = std::fs::read_dir(&data)
        .expect("read data dir")
        .filter_map(|e| std::fs::read(e.ok()?.path().join("meta.json")).ok())
        .filter_map(|raw| {
            serde_json::from_slice::<serde_json::Value>(&raw).ok()?["minTime"].as_i64()
        })
        .min()
        .expect("local blocks");
    let clients = strata_storeapi::connect(&grpc, &strata_storeapi::ClientOptions::default())
        .await
        .expect("connect to the sidecar");
    let min = poll(
        "Info min time",
        Duration::from_secs(30),
        &mut sidecar,
        || {
            let mut info = clients.info.clone();
            async move {
                let r = info
                    .info(strata_storeapi::pb::info::InfoRequest::default())
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner();
                let min = r.store.as_ref().map(|s| s.min_time).unwrap_or_default();
                if min == i64::MIN {
                    Err("min time not set yet".to_owned())
                } else {
                    Ok(min)
                }
            }
        },
    )
    .await;
    // Prometheus may cut (and we ship) newer blocks meanwhile; the oldest stays the oldest.
    assert_eq!(min, oldest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_compaction_needs_the_delay_compact_file() {
    let minio = Minio::start().await.expect("start MinIO");
    minio.create_bucket(BUCKET).await.expect("create bucket");
    let yaml = minio.objstore_yaml(BUCKET);

    // Local compaction on, nothing holding unshipped blocks back: refused, naming the way out.
    let prom = Prometheus::builder()
        .external_label("replica", "a")
        .arg("--storage.tsdb.min-block-duration=20s")
        .arg("--storage.tsdb.max-block-duration=60s")
        .start()
        .await
        .expect("start Prometheus");
    let mut refused = start_sidecar(&prom, &yaml);
    let status = refused
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("the sidecar exits");
    assert_eq!(status.code(), Some(2), "{}", refused.log());
    let log = refused.log();
    assert!(
        log.contains("compacts blocks locally") && log.contains("delay-compact-file.path"),
        "{log}"
    );
    drop(prom);

    // With Prometheus's delay-compact file pointed at the shipper's file: runs and ships.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let prom = Prometheus::builder()
        .external_label("replica", "a")
        .data_dir(&data)
        .arg("--storage.tsdb.min-block-duration=20s")
        .arg("--storage.tsdb.max-block-duration=60s")
        .arg(&format!(
            "--storage.tsdb.delay-compact-file.path={}",
            data.join("thanos.shipper.json").display()
        ))
        .start()
        .await
        .expect("start Prometheus");
    let store = minio.object_store(BUCKET).expect("S3 client");
    let mut sidecar = start_sidecar(&prom, &yaml);
    let shipped = poll(
        "a shipped block",
        Duration::from_secs(180),
        &mut sidecar,
        || async {
            let complete = check_complete_blocks(&store).await;
            if complete.is_empty() {
                Err("nothing shipped yet".to_owned())
            } else {
                Ok(complete)
            }
        },
    )
    .await;
    // Only level-1 blocks are shipped, each once.
    for block in &shipped {
        let meta = store
            .get(&ObjPath::from(format!("{block}/meta.json").as_str()))
            .await
            .expect("get meta.json")
            .bytes()
            .await
            .expect("read");
        let meta: serde_json::Value = serde_json::from_slice(&meta).expect("JSON");
        assert_eq!(meta["compaction"]["level"], 1, "{meta}");
    }
}
