//! A range stream whose body breaks midway is resumed from where it stopped (a fake store
//! that cuts the first body short: a unit-level fault no real server can be made to do on cue).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use strata_objstore::Bucket;

/// InMemory, except that the first `breaks` bodies of a GET fail after their first piece.
#[derive(Debug)]
struct Breaking {
    inner: InMemory,
    breaks: AtomicUsize,
    gets: AtomicUsize,
}

impl std::fmt::Display for Breaking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Breaking")
    }
}

#[async_trait]
impl ObjectStore for Breaking {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let got = self.inner.get_opts(location, options).await?;
        let range: Range<u64> = got.range.clone();
        let meta = got.meta.clone();
        let data = got.bytes().await?;
        // Three pieces, so that a break after the first leaves the rest to resume.
        let third = data.len().div_ceil(3).max(1);
        let mut pieces: Vec<object_store::Result<Bytes>> = data
            .chunks(third)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let broken = self
            .breaks
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
            .is_ok();
        if broken {
            pieces.truncate(1);
            pieces.push(Err(object_store::Error::Generic {
                store: "Breaking",
                source: "connection reset mid-body".into(),
            }));
        }
        Ok(GetResult {
            payload: GetResultPayload::Stream(futures::stream::iter(pieces).boxed()),
            meta,
            range,
            attributes: Default::default(),
            extensions: Default::default(),
        })
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

async fn read(bucket: &Bucket, range: Range<u64>) -> Result<Vec<u8>, strata_objstore::Error> {
    let pieces: Vec<Bytes> = bucket
        .get_range_stream("obj", range)
        .await?
        .try_collect()
        .await?;
    Ok(pieces.concat())
}

#[tokio::test]
async fn a_broken_body_is_resumed_where_it_stopped() {
    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    let store = Arc::new(Breaking {
        inner: InMemory::new(),
        breaks: AtomicUsize::new(0),
        gets: AtomicUsize::new(0),
    });
    let bucket = Bucket::from_store(store.clone(), "breaking");
    bucket
        .put("obj", Bytes::from(data.clone()))
        .await
        .expect("put");

    // Twice broken: resumed twice (the retries), byte-identical, three GETs.
    store.breaks.store(2, Ordering::SeqCst);
    store.gets.store(0, Ordering::SeqCst);
    let got = read(&bucket, 100..2900).await.expect("resumed read");
    assert!(got == data[100..2900], "resumed bytes differ");
    assert_eq!(store.gets.load(Ordering::SeqCst), 3);

    // Broken more often than the retries allow: the error names the object.
    store.breaks.store(10, Ordering::SeqCst);
    let err = read(&bucket, 0..3000).await.expect_err("gives up");
    assert!(err.to_string().contains("obj"), "{err}");
    assert!(err.to_string().contains("connection reset"), "{err}");
}
