//! A real MinIO S3 server on loopback, with helpers to create buckets and reach them.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::tools::{Tool, tool_path};
use crate::{Error, Process, Result, free_port};

const ACCESS_KEY: &str = "strata-e2e";
const SECRET_KEY: &str = "strata-e2e-secret";
const REGION: &str = "us-east-1";

/// A running MinIO server with a fresh data directory; killed when dropped.
#[derive(Debug)]
pub struct Minio {
    process: Process,
    endpoint: String,
    _data: tempfile::TempDir,
}

impl Minio {
    /// Starts MinIO on a free loopback port and waits until it is live.
    pub async fn start() -> Result<Self> {
        let binary = tool_path(Tool::Minio)?;
        let data = tempfile::Builder::new()
            .prefix("strata-e2e-minio-")
            .tempdir()
            .map_err(Error::io("create MinIO data dir"))?;
        let port = free_port();
        let console = free_port();
        let mut command = Command::new(binary);
        command
            .arg("server")
            .arg("--quiet")
            .arg("--address")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--console-address")
            .arg(format!("127.0.0.1:{console}"))
            .arg(data.path())
            .env("MINIO_ROOT_USER", ACCESS_KEY)
            .env("MINIO_ROOT_PASSWORD", SECRET_KEY)
            .env("MINIO_BROWSER", "off")
            .env("MINIO_UPDATE", "off");
        let mut process = Process::spawn("minio", command)?;
        let endpoint = format!("http://127.0.0.1:{port}");
        process
            .wait_http_ok(
                &format!("{endpoint}/minio/health/ready"),
                Duration::from_secs(60),
            )
            .await?;
        Ok(Self {
            process,
            endpoint,
            _data: data,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The access key.
    pub fn access_key(&self) -> &str {
        ACCESS_KEY
    }

    /// The secret key.
    pub fn secret_key(&self) -> &str {
        SECRET_KEY
    }

    /// The process (logs, signals).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Creates a bucket (S3 `CreateBucket`, SigV4-signed).
    pub async fn create_bucket(&self, name: &str) -> Result<()> {
        let step = format!("create bucket {name} on {}", self.endpoint);
        let bad = |message: String| Error::Request {
            step: step.clone(),
            message,
        };
        let url = self
            .endpoint
            .parse()
            .map_err(|e: url::ParseError| bad(e.to_string()))?;
        let bucket = Bucket::new(url, UrlStyle::Path, name.to_string(), REGION)
            .map_err(|e| bad(e.to_string()))?;
        let credentials = Credentials::new(ACCESS_KEY, SECRET_KEY);
        let signed = bucket
            .create_bucket(&credentials)
            .sign(Duration::from_secs(60));
        // MinIO may answer 503 XMinioServerNotInitialized for a moment after it reports ready.
        let started = std::time::Instant::now();
        loop {
            let resp = reqwest::Client::new()
                .put(signed.as_str())
                .send()
                .await
                .map_err(|e| bad(e.to_string()))?;
            let status = resp.status();
            if status.is_success() {
                return Ok(());
            }
            let body = resp.text().await.unwrap_or_default();
            if status != reqwest::StatusCode::SERVICE_UNAVAILABLE
                || started.elapsed() > Duration::from_secs(30)
            {
                return Err(bad(format!("HTTP {status}: {body}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An `object_store` client for `bucket`.
    pub fn object_store(&self, bucket: &str) -> Result<Arc<AmazonS3>> {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_region(REGION)
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .build()
            .map(Arc::new)
            .map_err(|e| Error::Request {
                step: format!("build S3 client for bucket {bucket}"),
                message: e.to_string(),
            })
    }

    /// Uploads every block directory under `blocks_dir` (`<ULID>/…`) into `bucket`, as a shipper
    /// does (meta.json last), adding a `thanos` section with `external_labels` and resolution 0 to
    /// each meta.json. Returns the uploaded ULIDs, sorted.
    pub async fn upload_blocks(
        &self,
        bucket: &str,
        blocks_dir: &Path,
        external_labels: &[(&str, &str)],
    ) -> Result<Vec<String>> {
        let store = self.object_store(bucket)?;
        upload_blocks_to(&*store, blocks_dir, external_labels).await
    }

    /// A Thanos objstore YAML for `bucket` on this server.
    pub fn objstore_yaml(&self, bucket: &str) -> String {
        self.objstore_yaml_via(bucket, self.endpoint.trim_start_matches("http://"))
    }

    /// A Thanos objstore YAML for `bucket` reached through `host:port` (e.g. a [`crate::Proxy`]).
    pub fn objstore_yaml_via(&self, bucket: &str, host: &str) -> String {
        format!(
            "type: S3\nconfig:\n  bucket: {bucket}\n  endpoint: {host}\n  region: {REGION}\n  access_key: {ACCESS_KEY}\n  secret_key: {SECRET_KEY}\n  insecure: true\n"
        )
    }

    /// The server's socket address (to put a [`crate::Proxy`] in front of it).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.endpoint
            .trim_start_matches("http://")
            .parse()
            .expect("the endpoint is http://127.0.0.1:<port>, made in start()")
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(Error::io(format!("read {}", dir.display())))?;
    for e in entries {
        let e = e.map_err(Error::io("read dir entry"))?;
        let p = e.path();
        if p.is_dir() {
            collect_files(root, &p, out)?;
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    out.sort();
    Ok(())
}

/// Uploads every block directory under `blocks_dir` (`<ULID>/…`) into `store`, as a shipper does
/// (meta.json last), adding a `thanos` section with `external_labels` and resolution 0 to each
/// meta.json. Returns the uploaded ULIDs, sorted. Any object store: MinIO's, or a local directory
/// (`object_store::local::LocalFileSystem`) that `type: FILESYSTEM` objstore configs read.
pub async fn upload_blocks_to(
    store: &dyn object_store::ObjectStore,
    blocks_dir: &Path,
    external_labels: &[(&str, &str)],
) -> Result<Vec<String>> {
    let mut ulids = Vec::new();
    let entries = std::fs::read_dir(blocks_dir)
        .map_err(Error::io(format!("read {}", blocks_dir.display())))?;
    for e in entries {
        let e = e.map_err(Error::io("read dir entry"))?;
        let dir = e.path();
        if !dir.join("meta.json").is_file() {
            continue;
        }
        let ulid = e.file_name().to_string_lossy().into_owned();
        let mut files = Vec::new();
        collect_files(&dir, &dir, &mut files)?;
        for rel in files.iter().filter(|r| r.as_str() != "meta.json") {
            let data = std::fs::read(dir.join(rel))
                .map_err(Error::io(format!("read {}/{rel}", dir.display())))?;
            put(store, &format!("{ulid}/{rel}"), data).await?;
        }
        let meta_path = dir.join("meta.json");
        let raw = std::fs::read(&meta_path)
            .map_err(Error::io(format!("read {}", meta_path.display())))?;
        let mut meta: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|e| Error::Request {
                step: format!("parse {}", meta_path.display()),
                message: e.to_string(),
            })?;
        let labels: serde_json::Map<String, serde_json::Value> = external_labels
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        meta["thanos"] = serde_json::json!({
            "version": 1,
            "labels": labels,
            "downsample": {"resolution": 0},
            "source": "e2e",
        });
        let body = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Request {
            step: "encode meta.json".into(),
            message: e.to_string(),
        })?;
        put(store, &format!("{ulid}/meta.json"), body).await?;
        ulids.push(ulid);
    }
    ulids.sort();
    Ok(ulids)
}

async fn put(store: &dyn object_store::ObjectStore, name: &str, data: Vec<u8>) -> Result<()> {
    use object_store::ObjectStoreExt;
    store
        .put(&object_store::path::Path::from(name), data.into())
        .await
        .map(|_| ())
        .map_err(|e| Error::Request {
            step: format!("upload {name}"),
            message: e.to_string(),
        })
}

impl Minio {
    /// Uploads the block directory `block_dir` (`…/<ULID>`) into `bucket` as it is, meta.json
    /// last and unchanged (so a downsampled or compacted block keeps its `thanos` section).
    /// Returns the block's ULID (the directory name).
    pub async fn upload_block_as_is(&self, bucket: &str, block_dir: &Path) -> Result<String> {
        let store = self.object_store(bucket)?;
        let ulid = block_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Request {
                step: format!("upload {}", block_dir.display()),
                message: "not a block directory".into(),
            })?;
        let mut files = Vec::new();
        collect_files(block_dir, block_dir, &mut files)?;
        if !files.iter().any(|f| f == "meta.json") {
            return Err(Error::Request {
                step: format!("upload {}", block_dir.display()),
                message: "no meta.json".into(),
            });
        }
        files.retain(|f| f != "meta.json");
        files.push("meta.json".into());
        for rel in &files {
            let data = std::fs::read(block_dir.join(rel))
                .map_err(Error::io(format!("read {}/{rel}", block_dir.display())))?;
            put(&*store, &format!("{ulid}/{rel}"), data).await?;
        }
        Ok(ulid)
    }
}
