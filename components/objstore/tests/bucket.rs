//! One conformance suite run against every bucket kind: in-memory, FILESYSTEM (with a prefix) and a real
//! MinIO server through the S3 config (with a prefix, multipart uploads and range reads); plus a
//! timeout test against a server that never answers.

use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use strata_e2e::Minio;
use strata_objstore::{Bucket, BucketConfig, Error};

/// The bytes of a streamed range read, concatenated.
async fn streamed(bucket: &Bucket, name: &str, range: std::ops::Range<u64>) -> Vec<u8> {
    use futures::TryStreamExt;
    let pieces: Vec<Bytes> = bucket
        .get_range_stream(name, range)
        .await
        .expect("open range stream")
        .try_collect()
        .await
        .expect("range stream");
    pieces.concat()
}

/// A range of several MiB arrives in pieces, in order, byte-identical.
async fn streams_a_large_range(bucket: &Bucket) {
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 5u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    bucket
        .put("stream/big", Bytes::from(big.clone()))
        .await
        .expect("put big");
    let r = 7..big.len() as u64 - 2;
    assert!(streamed(bucket, "stream/big", r).await == big[7..big.len() - 2]);
}

async fn conformance(bucket: &Bucket) {
    bucket
        .put("dir/a", Bytes::from_static(b"hello world"))
        .await
        .expect("put a");
    bucket
        .put("dir/sub/b", Bytes::from_static(b"b"))
        .await
        .expect("put b");
    bucket
        .put("top", Bytes::from_static(b"t"))
        .await
        .expect("put top");

    assert_eq!(bucket.get("dir/a").await.expect("get"), "hello world");
    assert_eq!(
        bucket.get_range("dir/a", 6..11).await.expect("range"),
        "world"
    );
    assert_eq!(bucket.get_range("dir/a", 0..1).await.expect("range"), "h");
    assert!(
        bucket.get_range("dir/a", 5..5).await.is_err(),
        "empty range"
    );
    assert_eq!(streamed(bucket, "dir/a", 6..11).await, b"world");
    // Past the end of the object: the stream stops where the object does.
    assert_eq!(streamed(bucket, "dir/a", 6..64).await, b"world");
    assert!(bucket.get_range_stream("dir/a", 3..3).await.is_err());

    assert_eq!(
        bucket.list("").await.expect("list root"),
        vec!["dir/".to_string(), "top".to_string()]
    );
    assert_eq!(
        bucket.list("dir").await.expect("list dir"),
        vec!["dir/a".to_string(), "dir/sub/".to_string()]
    );
    assert_eq!(
        bucket.list("dir/").await.expect("list dir/"),
        vec!["dir/a".to_string(), "dir/sub/".to_string()]
    );
    assert_eq!(
        bucket.list_recursive("dir").await.expect("recursive"),
        vec!["dir/a".to_string(), "dir/sub/b".to_string()]
    );
    assert!(bucket.list("nothing").await.expect("empty").is_empty());

    assert!(bucket.exists("dir/a").await.expect("exists"));
    assert!(!bucket.exists("dir/zzz").await.expect("exists missing"));
    let attrs = bucket.attributes("dir/a").await.expect("attributes");
    assert_eq!(attrs.size, 11);
    let age = std::time::SystemTime::now()
        .duration_since(attrs.last_modified)
        .unwrap_or_default();
    assert!(age < Duration::from_secs(600), "last_modified {age:?} ago");

    let missing = bucket.get("dir/zzz").await.expect_err("missing");
    assert!(missing.is_not_found(), "{missing}");
    assert!(missing.to_string().contains("dir/zzz"), "{missing}");
    assert!(
        bucket
            .attributes("dir/zzz")
            .await
            .expect_err("missing")
            .is_not_found()
    );
    let bad = bucket.get("a//b").await.expect_err("bad name");
    assert!(matches!(bad, Error::InvalidName { .. }), "{bad}");

    bucket.delete("dir/a").await.expect("delete");
    assert!(!bucket.exists("dir/a").await.expect("exists after delete"));
    assert_eq!(
        bucket.list("dir").await.expect("list after delete"),
        vec!["dir/sub/".to_string()]
    );
}

/// MinIO reports ready before it accepts bucket creation (`XMinioServerNotInitialized`); retry briefly.
async fn create_bucket(minio: &Minio, name: &str) {
    strata_e2e::wait_until(
        "MinIO accepts CreateBucket",
        Duration::from_secs(30),
        || async { minio.create_bucket(name).await.ok() },
    )
    .await
    .expect("create bucket");
}

fn metrics_text(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).expect("encode");
    out
}

#[tokio::test]
async fn in_memory_conformance() {
    conformance(&Bucket::in_memory()).await;
    streams_a_large_range(&Bucket::in_memory()).await;
}

#[tokio::test]
async fn filesystem_conformance_with_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "type: filesystem\nprefix: tenant/x\nconfig:\n  directory: {}\n",
        dir.path().join("bucket").display()
    );
    let cfg = BucketConfig::parse(&yaml, "test").expect("config");
    let mut registry = Registry::default();
    let bucket = Bucket::new(&cfg, &mut registry).expect("bucket");
    conformance(&bucket).await;
    // The prefix is applied on disk and invisible through the bucket.
    assert!(dir.path().join("bucket/tenant/x/top").is_file());
    let text = metrics_text(&registry);
    assert!(
        text.contains("strata_objstore_operations_total{operation=\"get\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("strata_objstore_operation_duration_seconds_count{operation=\"upload\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("strata_objstore_bytes_written_total{operation=\"upload\"} 13"),
        "{text}"
    );
    // A missing object is not an operation failure; the bad name never reached the store.
    assert!(
        !text.contains("strata_objstore_operation_failures_total{operation=\"get\"}"),
        "{text}"
    );
    streams_a_large_range(&bucket).await;
}

#[tokio::test]
async fn minio_conformance_prefix_multipart() {
    let minio = Minio::start().await.expect("start minio");
    create_bucket(&minio, "conf").await;
    let yaml = format!(
        "{}  part_size: 5242880\nprefix: pfx\n",
        minio.objstore_yaml("conf")
    );
    let cfg = BucketConfig::parse(&yaml, "minio.yml").expect("config");
    let mut registry = Registry::default();
    let bucket = Bucket::new(&cfg, &mut registry).expect("bucket");
    conformance(&bucket).await;

    // The prefix is real: the raw S3 client sees it.
    let raw = Bucket::from_store(minio.object_store("conf").expect("raw client"), "raw");
    assert_eq!(
        raw.list("").await.expect("raw list"),
        vec!["pfx/".to_string()]
    );
    assert_eq!(raw.get("pfx/top").await.expect("raw get"), "t");

    // A 12 MiB + 17 byte file goes as a 3-part multipart upload and comes back byte-identical.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("big");
    let data: Vec<u8> = (0..12 * 1024 * 1024 + 17u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &data).expect("write big");
    let sent = bucket.upload_file("blk/big", &file).await.expect("upload");
    assert_eq!(sent, data.len() as u64);
    let back = bucket.get("blk/big").await.expect("get big");
    assert!(back == data[..], "multipart object differs");
    let mid = 5 * 1024 * 1024 - 3..5 * 1024 * 1024 + 5;
    assert_eq!(
        bucket
            .get_range("blk/big", mid.start as u64..mid.end as u64)
            .await
            .expect("range across parts"),
        data[mid]
    );
    // The ETag of a multipart object ends with -<parts>: proof it was not one PUT.
    let head = reqwest_etag(&minio, "conf", "pfx/blk/big").await;
    assert!(head.ends_with("-3\""), "etag {head}");

    // A small file is one PUT (no part suffix).
    let small = dir.path().join("small");
    std::fs::write(&small, b"small").expect("write small");
    bucket
        .upload_file("blk/small", &small)
        .await
        .expect("small");
    let head = reqwest_etag(&minio, "conf", "pfx/blk/small").await;
    assert!(!head.contains('-'), "etag {head}");

    let text = metrics_text(&registry);
    assert!(
        text.contains(&format!(
            "strata_objstore_bytes_written_total{{operation=\"upload\"}} {}",
            13 + data.len() + 5
        )),
        "{text}"
    );
    streams_a_large_range(&bucket).await;
}

/// The ETag of an object, read with object_store's head through the harness client.
async fn reqwest_etag(minio: &Minio, bucket: &str, key: &str) -> String {
    use object_store::ObjectStoreExt;
    let store = minio.object_store(bucket).expect("client");
    let meta = store
        .head(&object_store::path::Path::from(key))
        .await
        .expect("head");
    meta.e_tag.unwrap_or_default()
}

#[tokio::test]
async fn unresponsive_endpoint_times_out_with_clear_error() {
    // A server that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let yaml = format!(
        "type: S3\nconfig:\n  bucket: b\n  endpoint: {addr}\n  access_key: a\n  secret_key: s\n  insecure: true\n  max_retries: 1\n  http_config:\n    response_header_timeout: 500ms\n"
    );
    let cfg = BucketConfig::parse(&yaml, "slow.yml").expect("config");
    let bucket = Bucket::from_config(&cfg).expect("bucket");
    let start = Instant::now();
    let err = bucket.get("some/object").await.expect_err("must fail");
    let took = start.elapsed();
    // Bounded by (retries + 1) × 500ms + one more try + 1s slack = 2.5s; well under 5s.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        took >= Duration::from_millis(500),
        "gave up before one timeout: {took:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("get some/object"), "{msg}");
    assert!(err.is_timeout(), "not a timeout: {msg}");
    assert!(msg.contains("timed out after"), "{msg}");
    assert!(!err.is_not_found());
    hold.abort();
}
