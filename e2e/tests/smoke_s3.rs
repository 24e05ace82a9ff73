//! Smoke test: the real MinIO takes put / get / range get / list / multipart through `object_store`.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use strata_e2e::Minio;

#[tokio::test]
async fn minio_serves_put_get_range_list_and_multipart() {
    let mut minio = Minio::start().await.unwrap();
    let version = String::from_utf8_lossy(&minio.process().log().into_bytes()).to_string();
    println!(
        "minio started: {}",
        version.lines().next().unwrap_or_default()
    );
    minio.create_bucket("smoke").await.unwrap();
    let store = minio.object_store("smoke").unwrap();

    let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let key = Path::from("01JBLOCK/chunks/000001");
    store
        .put(&key, PutPayload::from(data.clone()))
        .await
        .unwrap();

    let whole = store.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(whole, Bytes::from(data.clone()));
    let range = store.get_range(&key, 1000..1016).await.unwrap();
    assert_eq!(&range[..], &data[1000..1016]);

    // Multipart: 2 parts of 5 MiB (S3's minimum part size) plus a tail.
    let big: Vec<u8> = (0..(10 * 1024 * 1024 + 123))
        .map(|i| (i % 251) as u8)
        .collect();
    let big_key = Path::from("01JBLOCK/index");
    let upload = store.put_multipart(&big_key).await.unwrap();
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 5 * 1024 * 1024);
    writer.write(&big);
    writer.finish().await.unwrap();
    let meta = store.head(&big_key).await.unwrap();
    assert_eq!(meta.size, big.len() as u64);
    let tail = store
        .get_range(&big_key, (big.len() as u64 - 10)..big.len() as u64)
        .await
        .unwrap();
    assert_eq!(&tail[..], &big[big.len() - 10..]);

    let listed: Vec<_> = store
        .list(Some(&Path::from("01JBLOCK")))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    let mut listed = listed;
    listed.sort();
    assert_eq!(listed, vec!["01JBLOCK/chunks/000001", "01JBLOCK/index"]);

    let missing = store.get(&Path::from("nope")).await.unwrap_err();
    assert!(
        matches!(missing, object_store::Error::NotFound { .. }),
        "{missing}"
    );
}
