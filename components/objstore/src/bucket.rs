//! [`Bucket`]: the object storage handle every component uses, with Thanos semantics (prefix, one-level
//! listing with `/`-terminated directories), typed errors, timeouts, retries and metrics.

use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use prometheus_client::registry::Registry;
use tokio::io::AsyncReadExt;
use tracing::{Instrument, debug_span, warn};

use crate::build::{Limits, build};
use crate::config::BucketConfig;
use crate::error::{ConfigError, Error, Result};
use crate::metrics::{Metrics, OpLabels};

/// Extra attempts this crate makes for reads whose body failed mid-stream (requests themselves are
/// retried by object_store's `RetryConfig`).
const READ_RETRIES: u32 = 2;
/// Multipart parts in flight per upload; memory is bounded by `(this + 1) × part_size`.
const MAX_PARTS_IN_FLIGHT: usize = 2;
/// Read size when streaming a local file into a multipart upload.
const READ_CHUNK: usize = 1024 * 1024;

/// Size and modification time of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectAttributes {
    /// Size in bytes.
    pub size: u64,
    /// Last modification.
    pub last_modified: SystemTime,
}

/// A bucket (cheap to clone; clones share the client and metrics).
#[derive(Debug, Clone)]
pub struct Bucket {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn ObjectStore>,
    name: String,
    limits: Limits,
    metrics: Metrics,
}

impl Bucket {
    /// Builds the bucket from a parsed configuration and registers its metrics on `registry`. Keys that
    /// have no effect in Strata are logged as one warning.
    pub fn new(config: &BucketConfig, registry: &mut Registry) -> Result<Self, ConfigError> {
        let bucket = Self::from_config(config)?;
        bucket.register_metrics(registry);
        Ok(bucket)
    }

    /// Builds the bucket without registering metrics.
    pub fn from_config(config: &BucketConfig) -> Result<Self, ConfigError> {
        let unsupported = config.unsupported_keys();
        if !unsupported.is_empty() {
            warn!(
                origin = %config.origin,
                keys = %unsupported.join(","),
                "objstore config keys accepted but not supported by Strata; they have no effect"
            );
        }
        let (store, limits) = build(config)?;
        let name = format!(
            "{}:{}",
            config.provider.type_name().to_ascii_lowercase(),
            store
        );
        Ok(Self::with_limits(store, name, limits))
    }

    /// A bucket over any `object_store` implementation (tests wrap stores to inject faults).
    pub fn from_store(store: Arc<dyn ObjectStore>, name: impl Into<String>) -> Self {
        Self::with_limits(store, name.into(), Limits::default())
    }

    /// An empty in-memory bucket for unit tests.
    pub fn in_memory() -> Self {
        Self::from_store(Arc::new(InMemory::new()), "in-memory")
    }

    fn with_limits(store: Arc<dyn ObjectStore>, name: String, limits: Limits) -> Self {
        Bucket {
            inner: Arc::new(Inner {
                store,
                name,
                limits,
                metrics: Metrics::default(),
            }),
        }
    }

    /// The same bucket with another multipart part size (bytes; S3 needs ≥ 5 MiB).
    pub fn with_part_size(&self, part_size: u64) -> Self {
        let mut limits = self.inner.limits.clone();
        limits.part_size = part_size.max(1);
        Bucket {
            inner: Arc::new(Inner {
                store: self.inner.store.clone(),
                name: self.inner.name.clone(),
                limits,
                metrics: self.inner.metrics.clone(),
            }),
        }
    }

    /// Registers this bucket's `strata_objstore_*` metrics on `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.inner.metrics.register(registry);
    }

    /// A human-readable name of the bucket (provider and location).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The multipart part size in bytes.
    pub fn part_size(&self) -> u64 {
        self.inner.limits.part_size
    }

    /// The path of `name` for a read of `range`, which must not be empty.
    fn range_path(op: &'static str, name: &str, range: &Range<u64>) -> Result<ObjPath> {
        if range.start >= range.end {
            return Err(Error::InvalidRange {
                op,
                object: name.to_string(),
                start: range.start,
                end: range.end,
            });
        }
        Self::path(op, name)
    }

    fn path(op: &'static str, name: &str) -> Result<ObjPath> {
        ObjPath::parse(name).map_err(|e| Error::InvalidName {
            op,
            object: name.to_string(),
            reason: e.to_string(),
        })
    }

    /// Runs `f` with metrics, a span, the operation timeout and (for `retries` > 0) retries of
    /// transient failures with exponential backoff.
    async fn run<T, F, Fut>(
        &self,
        op: &'static str,
        object: &str,
        timeout: Option<Duration>,
        retries: u32,
        f: F,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let labels = OpLabels { operation: op };
        let m = &self.inner.metrics;
        m.ops.get_or_create(&labels).inc();
        let start = Instant::now();
        let attempts = async {
            let mut attempt = 0;
            loop {
                match f().await {
                    Err(e) if attempt < retries && e.is_transient() => {
                        attempt += 1;
                        let backoff = Duration::from_millis(100 * 2u64.pow(attempt));
                        tracing::debug!(error = %e, attempt, "retrying bucket operation");
                        tokio::time::sleep(backoff).await;
                    }
                    other => break other,
                }
            }
        };
        let span = debug_span!("objstore", op, object, bucket = %self.inner.name);
        let result = match timeout {
            Some(limit) => match tokio::time::timeout(limit, attempts).instrument(span).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout {
                    op,
                    object: object.to_string(),
                    after: start.elapsed(),
                }),
            },
            None => attempts.instrument(span).await,
        };
        m.duration
            .get_or_create(&labels)
            .observe(start.elapsed().as_secs_f64());
        if let Err(e) = &result
            && !e.is_not_found()
        {
            m.failures.get_or_create(&labels).inc();
        }
        result
    }

    fn read_bytes(&self, op: &'static str, n: usize) {
        self.inner
            .metrics
            .bytes_read
            .get_or_create(&OpLabels { operation: op })
            .inc_by(n as u64);
    }

    fn written_bytes(&self, n: u64) {
        self.inner
            .metrics
            .bytes_written
            .get_or_create(&OpLabels {
                operation: "upload",
            })
            .inc_by(n);
    }

    /// Reads a whole object.
    pub async fn get(&self, name: &str) -> Result<Bytes> {
        const OP: &str = "get";
        let path = Self::path(OP, name)?;
        let store = &self.inner.store;
        let data = self
            .run(
                OP,
                name,
                self.inner.limits.op_timeout,
                READ_RETRIES,
                || async {
                    let r = store
                        .get(&path)
                        .await
                        .map_err(|e| Error::from_store(OP, name, e))?;
                    r.bytes().await.map_err(|e| Error::from_store(OP, name, e))
                },
            )
            .await?;
        self.read_bytes(OP, data.len());
        Ok(data)
    }

    /// Reads `range` (end exclusive) of an object. A range past the end is an error.
    pub async fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes> {
        const OP: &str = "get_range";
        let path = Self::range_path(OP, name, &range)?;
        let store = &self.inner.store;
        let data = self
            .run(OP, name, self.inner.limits.op_timeout, READ_RETRIES, || {
                let range = range.clone();
                let path = &path;
                async move {
                    store
                        .get_range(path, range)
                        .await
                        .map_err(|e| Error::from_store(OP, name, e))
                }
            })
            .await?;
        self.read_bytes(OP, data.len());
        Ok(data)
    }

    /// Reads `range` (end exclusive) of an object as a stream of consecutive pieces, so a large
    /// range need not be held in memory at once: the reader takes the bytes as it needs them and
    /// the backend waits meanwhile (TCP flow control; a local file is read a MiB at a time).
    ///
    /// One GET for the whole range. Opening it has the operation timeout and retries; a body
    /// that fails or stalls (each piece has the operation timeout) is resumed from where it
    /// stopped, up to the same number of retries. The stream ends early when the object is
    /// shorter than `range` (the caller sees fewer bytes).
    pub async fn get_range_stream(
        &self,
        name: &str,
        range: Range<u64>,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes>>> {
        const OP: &str = "get_range";
        let path = Self::range_path(OP, name, &range)?;
        let body = self.open_body(OP, name, &path, range.clone()).await?;
        let state = RangeStream {
            bucket: self.clone(),
            name: name.to_string(),
            path,
            next: range.start,
            end: range.end,
            body: Some(body),
            retries_left: READ_RETRIES,
        };
        Ok(Box::pin(futures::stream::try_unfold(
            state,
            |mut st| async move {
                let piece = st.next_piece().await?;
                Ok(piece.map(|b| (b, st)))
            },
        )))
    }

    /// Sends the GET of `range` (with the operation timeout and retries) and returns its body.
    async fn open_body(
        &self,
        op: &'static str,
        name: &str,
        path: &ObjPath,
        range: Range<u64>,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes>>> {
        let store = &self.inner.store;
        let got = self
            .run(op, name, self.inner.limits.op_timeout, READ_RETRIES, || {
                let opts = object_store::GetOptions {
                    range: Some(range.clone().into()),
                    ..Default::default()
                };
                async move {
                    store
                        .get_opts(path, opts)
                        .await
                        .map_err(|e| Error::from_store(op, name, e))
                }
            })
            .await?;
        let object = name.to_string();
        Ok(match got.payload {
            // object_store reads local files 8 KiB per blocking task; a MiB is far cheaper.
            object_store::GetResultPayload::File(file, local) => {
                file_pieces(file, local, got.range, object, op)
            }
            object_store::GetResultPayload::Stream(s) => {
                Box::pin(s.map_err(move |e| Error::from_store(op, &object, e)))
            }
        })
    }

    /// Writes an object in one request (atomically: readers see the old object or the whole new one).
    pub async fn put(&self, name: &str, data: Bytes) -> Result<()> {
        const OP: &str = "upload";
        let path = Self::path(OP, name)?;
        let store = &self.inner.store;
        let len = data.len() as u64;
        self.run(OP, name, self.inner.limits.op_timeout, 0, || {
            let payload = PutPayload::from_bytes(data.clone());
            let path = &path;
            async move {
                store
                    .put(path, payload)
                    .await
                    .map(|_| ())
                    .map_err(|e| Error::from_store(OP, name, e))
            }
        })
        .await?;
        self.written_bytes(len);
        Ok(())
    }

    /// Uploads a local file. Files up to the part size (or any file when `disable_multipart` is set)
    /// go in one PUT; larger ones stream as a multipart upload with bounded memory. The object
    /// appears only when the upload completes. Returns the number of bytes uploaded.
    pub async fn upload_file(&self, name: &str, file: &Path) -> Result<u64> {
        const OP: &str = "upload";
        let io = |source| Error::LocalIo {
            op: OP,
            object: name.to_string(),
            path: file.to_path_buf(),
            source,
        };
        let size = tokio::fs::metadata(file).await.map_err(io)?.len();
        let limits = &self.inner.limits;
        if size <= limits.part_size || limits.disable_multipart {
            let data = tokio::fs::read(file).await.map_err(io)?;
            self.put(name, Bytes::from(data)).await?;
            return Ok(size);
        }
        let path = Self::path(OP, name)?;
        let store = &self.inner.store;
        let part_size = usize::try_from(limits.part_size).unwrap_or(usize::MAX);
        let sent = self
            .run(OP, name, None, 0, || async {
                let upload = store
                    .put_multipart(&path)
                    .await
                    .map_err(|e| Error::from_store(OP, name, e))?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
                let copied: Result<u64> = async {
                    let mut f = tokio::fs::File::open(file).await.map_err(io)?;
                    let mut buf = vec![0u8; READ_CHUNK];
                    let mut total = 0u64;
                    loop {
                        let n = f.read(&mut buf).await.map_err(io)?;
                        if n == 0 {
                            break;
                        }
                        writer
                            .wait_for_capacity(MAX_PARTS_IN_FLIGHT)
                            .await
                            .map_err(|e| Error::from_store(OP, name, e))?;
                        writer.write(&buf[..n]);
                        total += n as u64;
                    }
                    Ok(total)
                }
                .await;
                match copied {
                    Ok(total) => {
                        writer
                            .finish()
                            .await
                            .map_err(|e| Error::from_store(OP, name, e))?;
                        Ok(total)
                    }
                    Err(e) => {
                        if let Err(abort) = writer.abort().await {
                            warn!(object = name, error = %abort, "abort multipart upload");
                        }
                        Err(e)
                    }
                }
            })
            .await?;
        self.written_bytes(sent);
        Ok(sent)
    }

    /// Whether an object exists.
    pub async fn exists(&self, name: &str) -> Result<bool> {
        match self.attributes_op("exists", name).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Size and modification time of an object.
    pub async fn attributes(&self, name: &str) -> Result<ObjectAttributes> {
        self.attributes_op("attributes", name).await
    }

    async fn attributes_op(&self, op: &'static str, name: &str) -> Result<ObjectAttributes> {
        let path = Self::path(op, name)?;
        let store = &self.inner.store;
        self.run(
            op,
            name,
            self.inner.limits.op_timeout,
            READ_RETRIES,
            || async {
                let meta = store
                    .head(&path)
                    .await
                    .map_err(|e| Error::from_store(op, name, e))?;
                Ok(ObjectAttributes {
                    size: meta.size,
                    last_modified: SystemTime::from(meta.last_modified),
                })
            },
        )
        .await
    }

    /// Deletes an object. Deleting a missing object is a `NotFound` error on stores that report it
    /// (S3 does not; it succeeds).
    pub async fn delete(&self, name: &str) -> Result<()> {
        const OP: &str = "delete";
        let path = Self::path(OP, name)?;
        let store = &self.inner.store;
        self.run(OP, name, self.inner.limits.op_timeout, 0, || async {
            store
                .delete(&path)
                .await
                .map_err(|e| Error::from_store(OP, name, e))
        })
        .await
    }

    /// The listing prefix for `dir` (`None` for the bucket's root).
    fn dir_prefix(op: &'static str, dir: &str) -> Result<Option<ObjPath>> {
        let trimmed = dir.trim_end_matches('/');
        if trimmed.is_empty() {
            Ok(None)
        } else {
            Self::path(op, trimmed).map(Some)
        }
    }

    /// Thanos `Iter`: the entries directly under `dir` (`""` for the root), as full object names;
    /// "directories" end with `/`. Sorted.
    pub async fn list(&self, dir: &str) -> Result<Vec<String>> {
        const OP: &str = "iter";
        let prefix = Self::dir_prefix(OP, dir)?;
        let store = &self.inner.store;
        self.run(
            OP,
            dir,
            self.inner.limits.op_timeout,
            READ_RETRIES,
            || async {
                let res = store
                    .list_with_delimiter(prefix.as_ref())
                    .await
                    .map_err(|e| Error::from_store(OP, dir, e))?;
                let mut out: Vec<String> = res
                    .objects
                    .iter()
                    .map(|o| o.location.to_string())
                    .chain(res.common_prefixes.iter().map(|p| format!("{p}/")))
                    .collect();
                out.sort();
                Ok(out)
            },
        )
        .await
    }

    /// Thanos `Iter` with `WithRecursiveIter`: every object under `dir`, as full names. Sorted.
    pub async fn list_recursive(&self, dir: &str) -> Result<Vec<String>> {
        const OP: &str = "iter";
        let prefix = Self::dir_prefix(OP, dir)?;
        let store = &self.inner.store;
        self.run(
            OP,
            dir,
            self.inner.limits.op_timeout,
            READ_RETRIES,
            || async {
                let metas: Vec<_> = store
                    .list(prefix.as_ref())
                    .try_collect()
                    .await
                    .map_err(|e| Error::from_store(OP, dir, e))?;
                let mut out: Vec<String> = metas.iter().map(|m| m.location.to_string()).collect();
                out.sort();
                Ok(out)
            },
        )
        .await
    }
}

/// The state of [`Bucket::get_range_stream`]: the bytes still wanted and the body reading them.
struct RangeStream {
    bucket: Bucket,
    name: String,
    path: ObjPath,
    next: u64,
    end: u64,
    body: Option<futures::stream::BoxStream<'static, Result<Bytes>>>,
    retries_left: u32,
}

impl RangeStream {
    /// The next piece, `None` at the end of the range (or of a shorter object).
    async fn next_piece(&mut self) -> Result<Option<Bytes>> {
        const OP: &str = "get_range";
        loop {
            if self.next >= self.end {
                return Ok(None);
            }
            let body = match &mut self.body {
                Some(b) => b,
                None => {
                    let range = self.next..self.end;
                    let b = self
                        .bucket
                        .open_body(OP, &self.name, &self.path, range)
                        .await?;
                    self.body.insert(b)
                }
            };
            let piece = match self.bucket.inner.limits.op_timeout {
                Some(limit) => match tokio::time::timeout(limit, body.next()).await {
                    Ok(p) => p,
                    Err(_) => Some(Err(Error::Timeout {
                        op: OP,
                        object: self.name.clone(),
                        after: limit,
                    })),
                },
                None => body.next().await,
            };
            match piece {
                Some(Ok(mut b)) => {
                    let left = self.end - self.next;
                    if b.len() as u64 > left {
                        b.truncate(left as usize);
                    }
                    self.next += b.len() as u64;
                    self.bucket.read_bytes(OP, b.len());
                    if !b.is_empty() {
                        return Ok(Some(b));
                    }
                }
                Some(Err(e)) if self.retries_left > 0 && e.is_transient() => {
                    tracing::debug!(error = %e, object = %self.name, at = self.next, "resuming a range read");
                    self.retries_left -= 1;
                    self.body = None;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(None),
            }
        }
    }
}

/// `range` of an opened local file as pieces of [`READ_CHUNK`] bytes, each read on the blocking pool.
fn file_pieces(
    file: std::fs::File,
    local: std::path::PathBuf,
    range: Range<u64>,
    object: String,
    op: &'static str,
) -> futures::stream::BoxStream<'static, Result<Bytes>> {
    use std::io::{Read, Seek, SeekFrom};
    Box::pin(futures::stream::try_unfold(
        (file, range.start),
        move |(mut file, pos)| {
            let local = local.clone();
            let object = object.clone();
            let end = range.end;
            async move {
                if pos >= end {
                    return Ok(None);
                }
                let want = (end - pos).min(READ_CHUNK as u64);
                let io = |source| Error::LocalIo {
                    op,
                    object: object.clone(),
                    path: local.clone(),
                    source,
                };
                let (file, buf) = tokio::task::spawn_blocking(move || {
                    file.seek(SeekFrom::Start(pos))?;
                    let mut buf = Vec::with_capacity(want as usize);
                    (&mut file).take(want).read_to_end(&mut buf)?;
                    Ok::<_, std::io::Error>((file, buf))
                })
                .await
                .map_err(|e| io(std::io::Error::other(e)))?
                .map_err(io)?;
                if buf.is_empty() {
                    // The file is shorter than the range: the stream ends here.
                    return Ok(None);
                }
                let n = buf.len() as u64;
                Ok(Some((Bytes::from(buf), (file, pos + n))))
            }
        },
    ))
}
