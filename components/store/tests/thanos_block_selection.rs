//! The blocks a Strata gateway serves equal the blocks real Thanos selects from the same bucket
//! (real MinIO), for the same `--selector.relabel-config` (hashmod sharding, label keep/drop),
//! `--min-time`/`--max-time`, deletion marks, partial uploads and a corrupt meta.json: `thanos tools bucket ls` runs Thanos's own meta
//! fetcher with those filters.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_e2e::{Minio, Tool, run_tool};
use strata_objstore::{Bucket, BucketConfig};
use strata_store::blockset::{BlockSet, BlockSetOptions};
use strata_store::cache::NoCache;
use strata_store::relabel::RelabelConfig;
use strata_store::sync::{DeletionMark, TimeBound, now_ms};
use strata_tsdb::meta::{BlockMeta, ThanosMeta};
use ulid::Ulid;

const H: i64 = 3600 * 1000;

/// The block ULIDs `thanos tools bucket ls` prints for these extra flags.
fn thanos_ls(objstore_yaml: &str, flags: &[String]) -> BTreeSet<Ulid> {
    let mut args = vec![
        "tools".to_string(),
        "bucket".to_string(),
        "ls".to_string(),
        format!("--objstore.config={objstore_yaml}"),
        "--exclude-delete".to_string(),
    ];
    args.extend(flags.iter().cloned());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_tool(Tool::Thanos, &argv).expect("thanos binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "thanos {argv:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.trim().parse::<Ulid>().ok())
        .collect()
}

async fn strata_serves(
    bucket: &Bucket,
    relabel: Option<&str>,
    min_time: Option<&str>,
    max_time: Option<&str>,
) -> BTreeSet<Ulid> {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = BlockSetOptions {
        data_dir: dir.path().to_path_buf(),
        block: Default::default(),
        min_time: min_time.map(|s| s.parse::<TimeBound>().expect("time bound")),
        max_time: max_time.map(|s| s.parse::<TimeBound>().expect("time bound")),
        relabel: relabel.map(|y| RelabelConfig::parse(y).expect("relabel config")),
        deletion_delay: Duration::ZERO,
        sync_concurrency: 8,
        idle_timeout: None,
    };
    let set = BlockSet::new(bucket.clone(), Arc::new(NoCache), opts).expect("block set");
    set.sync().await.expect("sync");
    set.all().iter().map(|b| b.id()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_selects_the_blocks_thanos_selects() {
    let minio = Minio::start().await.expect("minio starts");
    minio.create_bucket("blocks").await.expect("bucket");
    let yaml = minio.objstore_yaml("blocks");
    let bucket = Bucket::from_config(&BucketConfig::parse(&yaml, "test").expect("objstore yaml"))
        .expect("bucket");

    // 48 complete blocks over 96h with two clusters and two replicas; level-1 blocks only (each
    // its own source), so no block duplicates another.
    let now_s = now_ms() / 1000;
    let mut all = BTreeSet::new();
    for i in 0..48i64 {
        let id = Ulid::new();
        let mut m = BlockMeta::new(id, i * 2 * H, (i + 1) * 2 * H);
        let labels = BTreeMap::from([
            (
                "cluster".to_string(),
                if i % 3 == 0 { "us" } else { "eu" }.to_string(),
            ),
            ("replica".to_string(), format!("r{}", i % 2)),
        ]);
        m.thanos = Some(ThanosMeta::new(labels, "sidecar", 0));
        bucket
            .put(
                &format!("{id}/meta.json"),
                Bytes::from(m.to_json_bytes().expect("json")),
            )
            .await
            .expect("put meta");
        bucket
            .put(&format!("{id}/index"), Bytes::from_static(b"not read"))
            .await
            .expect("put index");
        if i % 11 == 5 {
            let mark = DeletionMark {
                id,
                deletion_time: now_s - 600,
                version: 1,
                details: None,
            };
            bucket
                .put(
                    &format!("{id}/deletion-mark.json"),
                    Bytes::from(serde_json::to_vec(&mark).expect("json")),
                )
                .await
                .expect("put mark");
        }
        all.insert(id);
    }
    // Partial uploads.
    for _ in 0..3 {
        bucket
            .put(
                &format!("{}/chunks/000001", Ulid::new()),
                Bytes::from_static(b"c"),
            )
            .await
            .expect("put chunk");
    }

    // A corrupt meta.json: both skip the block and serve the rest.
    bucket
        .put(
            &format!("{}/meta.json", Ulid::new()),
            Bytes::from_static(b"{\"ulid\": 3"),
        )
        .await
        .expect("put corrupt meta");

    let hashmod = |n: u64, k: u64| {
        format!(
            "- action: hashmod\n  source_labels: [__block_id]\n  target_label: shard\n  modulus: {n}\n- action: keep\n  source_labels: [shard]\n  regex: \"{k}\"\n"
        )
    };
    let by_cluster = "- action: drop\n  source_labels: [cluster, replica]\n  separator: '/'\n  regex: 'us/r1|eu/r0'\n".to_string();
    let cases: Vec<(Option<String>, Option<&str>, Option<&str>)> = vec![
        (None, None, None),
        (Some(hashmod(3, 0)), None, None),
        (Some(hashmod(3, 1)), None, None),
        (Some(hashmod(3, 2)), None, None),
        (Some(by_cluster), None, None),
        (
            Some(hashmod(2, 1)),
            Some("1970-01-02T00:00:00Z"),
            Some("1970-01-03T12:00:00+02:00"),
        ),
        (None, Some("1970-01-01T10:00:00Z"), None),
        (None, Some("-1d"), None),
    ];
    let mut shards: Vec<BTreeSet<Ulid>> = Vec::new();
    for (i, (relabel, min, max)) in cases.iter().enumerate() {
        let mut flags = Vec::new();
        if let Some(r) = relabel {
            flags.push(format!("--selector.relabel-config={r}"));
        }
        if let Some(t) = min {
            flags.push(format!("--min-time={t}"));
        }
        if let Some(t) = max {
            flags.push(format!("--max-time={t}"));
        }
        let thanos = thanos_ls(&yaml, &flags);
        let strata = strata_serves(&bucket, relabel.as_deref(), *min, *max).await;
        assert_eq!(strata, thanos, "case {i}: {relabel:?} {min:?} {max:?}");
        if (1..=3).contains(&i) {
            shards.push(strata);
        }
        if i == 0 {
            // Marked blocks (5, 16, 27, 38) are hidden; partial uploads are never listed.
            assert_eq!(thanos.len(), 44, "{thanos:?}");
        }
        if i == 7 {
            assert!(thanos.is_empty());
        }
    }
    // The three hashmod shards split the unmarked blocks exactly.
    let union: Vec<Ulid> = shards.iter().flatten().copied().collect();
    let distinct: BTreeSet<Ulid> = union.iter().copied().collect();
    assert_eq!(union.len(), distinct.len(), "no block in two shards");
    assert_eq!(distinct.len(), 44);
    assert!(distinct.is_subset(&all));
}
