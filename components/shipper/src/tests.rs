//! Unit tests of the shipper with in-memory buckets and hand-made block directories (the shipper
//! does not parse index or chunks; the real-Prometheus test is in `tests/prometheus.rs`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use strata_objstore::Bucket;
use strata_tsdb::BlockMeta;
use ulid::Ulid;

use super::*;

/// An in-memory store that records every completed PUT and can fail every PUT after the first `n`.
#[derive(Debug)]
struct Recording {
    inner: InMemory,
    puts: Mutex<Vec<String>>,
    allowed_puts: AtomicUsize,
}

impl Recording {
    fn new() -> Arc<Self> {
        Arc::new(Recording {
            inner: InMemory::new(),
            puts: Mutex::new(Vec::new()),
            allowed_puts: AtomicUsize::new(usize::MAX),
        })
    }
    fn puts(&self) -> Vec<String> {
        self.puts.lock().expect("lock").clone()
    }
    fn fail_after(&self, n: usize) {
        self.allowed_puts.store(n, Ordering::SeqCst);
    }
}

impl std::fmt::Display for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recording")
    }
}

#[async_trait]
impl ObjectStore for Recording {
    async fn put_opts(
        &self,
        location: &ObjPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let left = self.allowed_puts.load(Ordering::SeqCst);
        if left == 0 {
            return Err(object_store::Error::Generic {
                store: "Recording",
                source: "injected failure (simulated crash)".into(),
            });
        }
        if left != usize::MAX {
            self.allowed_puts.store(left - 1, Ordering::SeqCst);
        }
        let r = self.inner.put_opts(location, payload, opts).await?;
        self.puts.lock().expect("lock").push(location.to_string());
        Ok(r)
    }
    async fn put_multipart_opts(
        &self,
        location: &ObjPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &ObjPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjPath>> {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&ObjPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &ObjPath,
        to: &ObjPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("cluster".to_string(), "eu1".to_string())])
}

/// A block dir with meta.json, two chunk segments, an index and tombstones.
fn make_block(tsdb: &Path, min_time: i64, level: u32, samples: u64) -> Ulid {
    let id = Ulid::new();
    let dir = tsdb.join(id.to_string());
    fs::create_dir_all(dir.join("chunks")).expect("mkdir");
    fs::write(dir.join("chunks/000001"), format!("seg1-{id}")).expect("seg1");
    fs::write(dir.join("chunks/000002"), b"segment-two").expect("seg2");
    fs::write(dir.join("index"), format!("index-{id}")).expect("index");
    fs::write(dir.join("tombstones"), b"tomb").expect("tombstones");
    let mut meta = BlockMeta::new(id, min_time, min_time + 1000);
    meta.stats.num_samples = samples;
    meta.compaction.level = level;
    meta.write_to_dir(&dir).expect("meta");
    id
}

fn shipper(tsdb: &Path, bucket: &Bucket, opts: ShipperOptions) -> (Shipper, Registry) {
    let mut registry = Registry::default();
    let s = Shipper::new(tsdb, bucket.clone(), labels(), opts, &mut registry);
    (s, registry)
}

fn metrics(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).expect("encode");
    out
}

fn shipped(tsdb: &Path) -> Vec<Ulid> {
    ShipperMeta::read(&tsdb.join(SHIPPER_META_FILENAME))
        .expect("read")
        .expect("exists")
        .uploaded
}

#[tokio::test]
async fn ships_in_order_meta_last_with_thanos_section() {
    let tsdb = tempfile::tempdir().expect("tempdir");
    let store = Recording::new();
    let bucket = Bucket::from_store(store.clone(), "rec");
    let a = make_block(tsdb.path(), 0, 1, 10);
    let b = make_block(tsdb.path(), 5000, 1, 10);
    let local_meta_before =
        fs::read(tsdb.path().join(a.to_string()).join("meta.json")).expect("meta");
    let (s, registry) = shipper(tsdb.path(), &bucket, ShipperOptions::default());

    let report = s.sync().await.expect("sync");
    assert_eq!(report.uploaded, vec![a, b], "oldest first");
    let expected: Vec<String> = [a, b]
        .iter()
        .flat_map(|id| {
            ["chunks/000001", "chunks/000002", "index", "meta.json"]
                .iter()
                .map(move |f| format!("{id}/{f}"))
        })
        .collect();
    assert_eq!(
        store.puts(),
        expected,
        "chunks, index, meta.json last; no tombstones"
    );

    // Objects are the local bytes.
    let idx = bucket.get(&format!("{a}/index")).await.expect("index");
    assert_eq!(idx, format!("index-{a}"));

    // The uploaded meta carries the thanos section; the local one is untouched.
    let up = bucket.get(&format!("{a}/meta.json")).await.expect("meta");
    let m = BlockMeta::from_slice(&up, Path::new("meta.json")).expect("parse");
    let t = m.thanos.expect("thanos section");
    assert_eq!(t.labels, Some(labels()));
    assert_eq!(t.source, "sidecar");
    assert_eq!(t.downsample.resolution, 0);
    assert_eq!(t.segment_files, vec!["000001", "000002"]);
    let files: Vec<(String, i64)> = t
        .files
        .iter()
        .map(|f| (f.rel_path.clone(), f.size_bytes))
        .collect();
    assert_eq!(
        files,
        vec![
            (
                "chunks/000001".to_string(),
                format!("seg1-{a}").len() as i64
            ),
            ("chunks/000002".to_string(), 11),
            ("index".to_string(), format!("index-{a}").len() as i64),
            ("meta.json".to_string(), 0),
        ]
    );
    assert_eq!(
        fs::read(tsdb.path().join(a.to_string()).join("meta.json")).expect("meta"),
        local_meta_before
    );

    assert_eq!(shipped(tsdb.path()), vec![a, b]);
    let text = metrics(&registry);
    assert!(text.contains("strata_shipper_uploads_total 2"), "{text}");
    assert!(
        !text.contains("strata_shipper_last_successful_upload_time 0.0"),
        "{text}"
    );
    let lag: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("strata_shipper_last_upload_lag_seconds "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no upload lag in {text}"));
    // The test's blocks were created (ULID time) moments before the sync.
    assert!((0.0..60.0).contains(&lag), "lag {lag}");

    // A second sync uploads nothing.
    let report = s.sync().await.expect("sync 2");
    assert_eq!(
        report,
        SyncReport {
            oldest_local_min_time: Some(0),
            ..SyncReport::default()
        }
    );
    assert_eq!(store.puts().len(), 8);
}

#[tokio::test]
async fn selection_rules() {
    let tsdb = tempfile::tempdir().expect("tempdir");
    let bucket = Bucket::in_memory();
    let normal = make_block(tsdb.path(), 0, 1, 10);
    let empty = make_block(tsdb.path(), 1000, 1, 0);
    let compacted = make_block(tsdb.path(), 2000, 2, 10);
    let marked = make_block(tsdb.path(), 3000, 1, 10);
    fs::write(
        tsdb.path().join(marked.to_string()).join(DELETION_MARK),
        "{}",
    )
    .expect("mark");
    // A temporary dir as Prometheus leaves it, and a dir without meta.json.
    let tmp = format!("{}.tmp-for-creation", Ulid::new());
    fs::create_dir_all(tsdb.path().join(&tmp)).expect("tmp");
    fs::create_dir_all(tsdb.path().join(Ulid::new().to_string()).join("chunks")).expect("no meta");
    fs::create_dir_all(tsdb.path().join("wal")).expect("wal");

    let (s, _r) = shipper(tsdb.path(), &bucket, ShipperOptions::default());
    let report = s.sync().await.expect("sync");
    assert_eq!(report.uploaded, vec![normal]);
    assert!(report.corrupted.is_empty(), "{report:?}");
    let _ = empty;

    let opts = ShipperOptions {
        upload_compacted: true,
        source: "ruler".into(),
        ..Default::default()
    };
    let (s, _r) = shipper(tsdb.path(), &bucket, opts);
    let report = s.sync().await.expect("sync compacted");
    assert_eq!(report.uploaded, vec![compacted]);
    let m = bucket
        .get(&format!("{compacted}/meta.json"))
        .await
        .expect("meta");
    let m = BlockMeta::from_slice(&m, Path::new("m")).expect("parse");
    assert_eq!(m.thanos.expect("thanos").source, "ruler");

    let tsdb2 = tempfile::tempdir().expect("tempdir");
    let old = make_block(tsdb2.path(), 0, 1, 10);
    let new = make_block(tsdb2.path(), 10_000, 1, 10);
    let opts = ShipperOptions {
        min_time: Some(1000),
        ..Default::default()
    };
    let (s, _r) = shipper(tsdb2.path(), &bucket, opts);
    let report = s.sync().await.expect("sync min time");
    assert_eq!(report.uploaded, vec![new]);
    assert!(
        !bucket
            .exists(&format!("{old}/meta.json"))
            .await
            .expect("exists")
    );
}

#[tokio::test]
async fn crash_at_every_step_then_restart_ships_fully() {
    // Two blocks of 4 PUTs each; "crash" after every possible number of PUTs.
    for n in 0..8 {
        let tsdb = tempfile::tempdir().expect("tempdir");
        let store = Recording::new();
        let bucket = Bucket::from_store(store.clone(), "rec");
        let a = make_block(tsdb.path(), 0, 1, 10);
        let b = make_block(tsdb.path(), 5000, 1, 10);
        store.fail_after(n);
        let (s, registry) = shipper(tsdb.path(), &bucket, ShipperOptions::default());
        let report = s.sync().await.expect("sync with failures");
        assert!(!report.failed.is_empty(), "n={n}: {report:?}");
        // Never a meta.json without all files of its block.
        for id in [a, b] {
            if bucket
                .exists(&format!("{id}/meta.json"))
                .await
                .expect("exists")
            {
                for f in ["chunks/000001", "chunks/000002", "index"] {
                    assert!(
                        bucket.exists(&format!("{id}/{f}")).await.expect("exists"),
                        "n={n}: {id} has meta.json but no {f}"
                    );
                }
            }
        }
        assert!(
            metrics(&registry).contains("strata_shipper_upload_failures_total"),
            "n={n}"
        );
        // Restart: a new shipper ships what is missing.
        store.fail_after(usize::MAX);
        let (s, _r) = shipper(tsdb.path(), &bucket, ShipperOptions::default());
        let report = s.sync().await.expect("sync after restart");
        assert!(report.failed.is_empty(), "n={n}: {report:?}");
        for id in [a, b] {
            assert!(
                bucket
                    .exists(&format!("{id}/meta.json"))
                    .await
                    .expect("exists"),
                "n={n}"
            );
            let idx = bucket.get(&format!("{id}/index")).await.expect("index");
            assert_eq!(idx, format!("index-{id}"));
        }
        assert_eq!(shipped(tsdb.path()), vec![a, b], "n={n}");
    }
}

#[tokio::test]
async fn meta_in_bucket_is_recorded_without_reupload_and_file_is_trusted() {
    let tsdb = tempfile::tempdir().expect("tempdir");
    let store = Recording::new();
    let bucket = Bucket::from_store(store.clone(), "rec");
    let a = make_block(tsdb.path(), 0, 1, 10);
    let b = make_block(tsdb.path(), 5000, 1, 10);
    bucket
        .put(&format!("{a}/meta.json"), Bytes::from_static(b"{}"))
        .await
        .expect("pre-existing meta");
    // b is listed as shipped in the file (even though the bucket lacks it): never uploaded again.
    ShipperMeta {
        version: 1,
        uploaded: vec![b],
    }
    .write(&tsdb.path().join(SHIPPER_META_FILENAME))
    .expect("write file");
    let (s, _r) = shipper(tsdb.path(), &bucket, ShipperOptions::default());
    let report = s.sync().await.expect("sync");
    assert_eq!(report.already_in_bucket, vec![a]);
    assert!(report.uploaded.is_empty());
    assert_eq!(
        store.puts().len(),
        1,
        "only the test's own put: {:?}",
        store.puts()
    );
    let mut got = shipped(tsdb.path());
    got.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(got, want);

    // A block deleted locally (compacted away) drops out of the file.
    fs::remove_dir_all(tsdb.path().join(b.to_string())).expect("rm");
    s.sync().await.expect("sync");
    assert_eq!(shipped(tsdb.path()), vec![a]);
}

#[tokio::test]
async fn corrupt_blocks_are_skipped_and_counted() {
    let tsdb = tempfile::tempdir().expect("tempdir");
    let bucket = Bucket::in_memory();
    let good = make_block(tsdb.path(), 0, 1, 10);
    let no_index = make_block(tsdb.path(), 1000, 1, 10);
    fs::remove_file(tsdb.path().join(no_index.to_string()).join("index")).expect("rm index");
    let bad_meta = make_block(tsdb.path(), 2000, 1, 10);
    fs::write(
        tsdb.path().join(bad_meta.to_string()).join("meta.json"),
        "{not json",
    )
    .expect("bad");
    let later = make_block(tsdb.path(), 3000, 1, 10);
    // A garbage shipper file is overwritten, not fatal.
    fs::write(tsdb.path().join(SHIPPER_META_FILENAME), "garbage").expect("garbage");

    let (s, registry) = shipper(tsdb.path(), &bucket, ShipperOptions::default());
    let report = s.sync().await.expect("sync");
    assert_eq!(report.uploaded, vec![good, later]);
    assert_eq!(report.corrupted.len(), 2, "{report:?}");
    assert!(
        !bucket
            .exists(&format!("{no_index}/meta.json"))
            .await
            .expect("exists")
    );
    let text = metrics(&registry);
    assert!(
        text.contains("strata_shipper_corrupted_blocks_total 2"),
        "{text}"
    );
    assert_eq!(shipped(tsdb.path()), vec![good, later]);
}

#[tokio::test]
async fn init_writes_file_prometheus_can_read() {
    let tsdb = tempfile::tempdir().expect("tempdir");
    let (s, _r) = shipper(tsdb.path(), &Bucket::in_memory(), ShipperOptions::default());
    s.init().expect("init");
    let text = fs::read_to_string(tsdb.path().join(SHIPPER_META_FILENAME)).expect("read");
    // Prometheus only needs `uploaded` to be a JSON array of ULID strings.
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["uploaded"], serde_json::json!([]));
    assert_eq!(v["version"], 1);
}
