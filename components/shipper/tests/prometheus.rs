//! The shipper against a real Prometheus 3.x writing 20s blocks and a real MinIO: every shipped
//! object is byte-identical to the local file, meta.json carries the Thanos section, and the real
//! `promtool tsdb analyze` reads a copy downloaded from the bucket.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use prometheus_client::registry::Registry;
use strata_e2e::{Minio, Prometheus, promtool, wait_until};
use strata_objstore::{Bucket, BucketConfig};
use strata_shipper::{SHIPPER_META_FILENAME, Shipper, ShipperMeta, ShipperOptions};
use strata_tsdb::BlockMeta;
use ulid::Ulid;

fn local_files(block: &Path) -> Vec<String> {
    let mut out = vec!["index".to_string(), "meta.json".to_string()];
    for e in std::fs::read_dir(block.join("chunks")).expect("chunks dir") {
        let e = e.expect("entry");
        out.push(format!("chunks/{}", e.file_name().to_string_lossy()));
    }
    out.sort();
    out
}

fn finished_blocks(data: &Path) -> Vec<Ulid> {
    let Ok(rd) = std::fs::read_dir(data) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let id: Ulid = e.file_name().to_str()?.parse().ok()?;
            e.path().join("meta.json").is_file().then_some(id)
        })
        .collect()
}

#[tokio::test]
async fn ships_real_prometheus_blocks_to_minio() {
    let minio = Minio::start().await.expect("minio");
    wait_until(
        "MinIO accepts CreateBucket",
        Duration::from_secs(30),
        || async { minio.create_bucket("blocks").await.ok() },
    )
    .await
    .expect("create bucket");
    let cfg = BucketConfig::parse(&minio.objstore_yaml("blocks"), "minio.yml").expect("config");
    let mut registry = Registry::default();
    let bucket = Bucket::new(&cfg, &mut registry).expect("bucket");

    let scratch = tempfile::tempdir().expect("tempdir");
    let data = scratch.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let labels = BTreeMap::from([("cluster".to_string(), "e2e".to_string())]);
    let shipper = Shipper::new(
        &data,
        bucket.clone(),
        labels.clone(),
        ShipperOptions::default(),
        &mut registry,
    );
    shipper.init().expect("init shipper file");

    let _prom = Prometheus::builder()
        .external_label("cluster", "e2e")
        .data_dir(&data)
        .arg("--storage.tsdb.min-block-duration=20s")
        .arg("--storage.tsdb.max-block-duration=20s")
        .arg(&format!(
            "--storage.tsdb.delay-compact-file.path={}",
            data.join(SHIPPER_META_FILENAME).display()
        ))
        .start()
        .await
        .expect("prometheus");

    let blocks = wait_until("Prometheus cuts a block", Duration::from_secs(180), || {
        let data = data.clone();
        async move {
            let b = finished_blocks(&data);
            (!b.is_empty()).then_some(b)
        }
    })
    .await
    .expect("a block");

    let report = shipper.sync().await.expect("sync");
    assert!(
        report.failed.is_empty() && report.corrupted.is_empty(),
        "{report:?}"
    );
    for id in &blocks {
        assert!(
            report.uploaded.contains(id),
            "{id} not uploaded: {report:?}"
        );
    }
    let file = ShipperMeta::read(&data.join(SHIPPER_META_FILENAME))
        .expect("read")
        .expect("exists");
    for id in &blocks {
        assert!(file.uploaded.contains(id));
    }

    let download = tempfile::tempdir().expect("download dir");
    for id in &blocks {
        let local = data.join(id.to_string());
        let mut objects = bucket.list_recursive(&id.to_string()).await.expect("list");
        objects
            .iter_mut()
            .for_each(|o| *o = o[id.to_string().len() + 1..].to_string());
        assert_eq!(objects, local_files(&local), "objects of {id}");
        let copy = download.path().join(id.to_string());
        std::fs::create_dir_all(copy.join("chunks")).expect("mkdir");
        for rel in &objects {
            let got = bucket.get(&format!("{id}/{rel}")).await.expect("get");
            std::fs::write(copy.join(rel), &got).expect("write copy");
            if rel == "meta.json" {
                continue;
            }
            let want = std::fs::read(local.join(rel)).expect("local file");
            assert!(got == want[..], "{id}/{rel} differs from the local file");
        }
        let up = BlockMeta::from_slice(
            &std::fs::read(copy.join("meta.json")).expect("meta"),
            Path::new("meta.json"),
        )
        .expect("uploaded meta parses");
        let local_meta = BlockMeta::read_from_dir(&local).expect("local meta");
        assert!(local_meta.thanos.is_none(), "local meta.json was modified");
        assert_eq!(
            (up.min_time, up.max_time),
            (local_meta.min_time, local_meta.max_time)
        );
        let t = up.thanos.expect("thanos section");
        assert_eq!(t.labels, Some(labels.clone()));
        assert_eq!(t.source, "sidecar");
        assert_eq!(t.downsample.resolution, 0);
        assert!(!t.segment_files.is_empty());

        let out = promtool(&[
            "tsdb",
            "analyze",
            download.path().to_str().expect("utf-8 path"),
            &id.to_string(),
        ])
        .expect("run promtool");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "promtool analyze failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(&id.to_string()), "{stdout}");
        assert!(stdout.contains("prometheus_"), "{stdout}");
    }

    // Nothing is shipped twice.
    let again = shipper.sync().await.expect("sync again");
    assert!(
        again.uploaded.iter().all(|id| !blocks.contains(id)),
        "{again:?}"
    );
}

fn block_levels(data: &Path) -> Vec<(Ulid, u32)> {
    finished_blocks(data)
        .into_iter()
        .filter_map(|id| {
            let m = BlockMeta::read_from_dir(&data.join(id.to_string())).ok()?;
            Some((id, m.compaction.level))
        })
        .collect()
}

/// `--storage.tsdb.delay-compact-file.path`: Prometheus leaves level-1 blocks alone until the shipper
/// lists them in `thanos.shipper.json`, then compacts them.
#[tokio::test]
async fn prometheus_delays_compaction_until_blocks_are_shipped() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let data = scratch.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let mut registry = Registry::default();
    let shipper = Shipper::new(
        &data,
        Bucket::in_memory(),
        BTreeMap::from([("cluster".to_string(), "delay".to_string())]),
        ShipperOptions::default(),
        &mut registry,
    );
    shipper.init().expect("init");
    let _prom = Prometheus::builder()
        .external_label("cluster", "delay")
        .data_dir(&data)
        .arg("--storage.tsdb.min-block-duration=20s")
        .arg("--storage.tsdb.max-block-duration=60s")
        .arg(&format!(
            "--storage.tsdb.delay-compact-file.path={}",
            data.join(SHIPPER_META_FILENAME).display()
        ))
        .start()
        .await
        .expect("prometheus");

    // Enough level-1 blocks to fill a 60s range and more; none may be compacted while unshipped.
    let levels = wait_until("five level-1 blocks", Duration::from_secs(240), || {
        let data = data.clone();
        async move {
            let l = block_levels(&data);
            (l.len() >= 5 || l.iter().any(|(_, lvl)| *lvl > 1)).then_some(l)
        }
    })
    .await
    .expect("blocks");
    assert!(
        levels.iter().all(|(_, lvl)| *lvl == 1),
        "Prometheus compacted unshipped blocks: {levels:?}"
    );

    // Ship them; Prometheus re-reads the file within a minute and compacts. Keep shipping like a
    // sidecar does, so blocks cut meanwhile do not hold a range back.
    let report = shipper.sync().await.expect("sync");
    assert!(report.uploaded.len() >= 5, "{report:?}");
    let started = std::time::Instant::now();
    while !block_levels(&data).iter().any(|(_, lvl)| *lvl > 1) {
        assert!(
            started.elapsed() < Duration::from_secs(360),
            "Prometheus did not compact shipped blocks: {:?}",
            block_levels(&data)
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        shipper.sync().await.expect("sync");
    }
}
