//! Turning a [`BucketConfig`] into an `object_store` client.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, Certificate, ClientOptions, ObjectStore, RetryConfig};

use crate::config::{BucketConfig, BucketLookupType, HttpConfig, ProviderConfig};
use crate::error::ConfigError;

/// Default retries of a failed request (minio-go's and object_store's default).
const DEFAULT_MAX_RETRIES: usize = 10;

/// Limits derived from the configuration that the [`crate::Bucket`] enforces itself.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub part_size: u64,
    pub disable_multipart: bool,
    /// Upper bound of one whole operation (retries included), except multipart uploads.
    pub op_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            part_size: 64 * 1024 * 1024,
            disable_multipart: false,
            op_timeout: None,
        }
    }
}

struct Http {
    options: ClientOptions,
    retry: RetryConfig,
    op_timeout: Duration,
}

fn http(
    cfg: &BucketConfig,
    h: &HttpConfig,
    max_retries: i64,
    request_timeout: Option<Duration>,
) -> Result<Http, ConfigError> {
    let mut options = ClientOptions::new().with_allow_invalid_certificates(
        h.insecure_skip_verify || h.tls_config.insecure_skip_verify,
    );
    let timeout = request_timeout.unwrap_or(h.response_header_timeout.0);
    if !timeout.is_zero() {
        options = options.with_timeout(timeout);
    }
    if !h.tls_handshake_timeout.0.is_zero() {
        options = options.with_connect_timeout(h.tls_handshake_timeout.0);
    }
    if !h.idle_conn_timeout.0.is_zero() {
        options = options.with_pool_idle_timeout(h.idle_conn_timeout.0);
    }
    if h.max_idle_conns_per_host > 0 {
        options = options.with_pool_max_idle_per_host(h.max_idle_conns_per_host as usize);
    }
    if !h.tls_config.ca_file.is_empty() {
        let invalid = |message: String| ConfigError::Invalid {
            origin: cfg.origin.clone(),
            key: "config.http_config.tls_config.ca_file".into(),
            message,
        };
        let pem = std::fs::read(&h.tls_config.ca_file)
            .map_err(|e| invalid(format!("read {}: {e}", h.tls_config.ca_file)))?;
        let certs = Certificate::from_pem_bundle(&pem)
            .map_err(|e| invalid(format!("parse {}: {e}", h.tls_config.ca_file)))?;
        for cert in certs {
            options = options.with_root_certificate(cert);
        }
    }
    let max_retries = if max_retries > 0 {
        max_retries as usize
    } else {
        DEFAULT_MAX_RETRIES
    };
    // The whole operation may take one request timeout per attempt plus backoff; cap it at 5 minutes.
    let per_try = if timeout.is_zero() {
        Duration::from_secs(120)
    } else {
        timeout
    };
    let retry_timeout = (per_try * (max_retries as u32 + 1)).min(Duration::from_secs(300));
    let retry = RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries,
        retry_timeout,
    };
    let op_timeout = retry_timeout + per_try + Duration::from_secs(1);
    Ok(Http {
        options,
        retry,
        op_timeout,
    })
}

/// Builds the store (with the prefix applied) and the limits the bucket enforces.
pub(crate) fn build(cfg: &BucketConfig) -> Result<(Arc<dyn ObjectStore>, Limits), ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        origin: cfg.origin.clone(),
        key: key.to_string(),
        message,
    };
    let build_err = |provider: &'static str| {
        move |source| ConfigError::Build {
            origin: cfg.origin.clone(),
            provider,
            source,
        }
    };
    let mut limits = Limits::default();
    let store: Arc<dyn ObjectStore> = match &cfg.provider {
        ProviderConfig::S3(c) => {
            let h = http(cfg, &c.http_config, c.max_retries, None)?;
            limits.part_size = c.part_size;
            limits.disable_multipart = c.disable_multipart;
            limits.op_timeout = Some(h.op_timeout);
            let mut b = if c.access_key.is_empty() {
                // The environment's credential chain (env vars, web identity, instance metadata).
                AmazonS3Builder::from_env()
            } else {
                AmazonS3Builder::new()
                    .with_access_key_id(&c.access_key)
                    .with_secret_access_key(&c.secret_key)
            };
            if !c.session_token.is_empty() {
                b = b.with_token(&c.session_token);
            }
            let region = if c.region.is_empty() {
                "us-east-1"
            } else {
                &c.region
            };
            // Client options first: `with_allow_http` writes into them.
            b = b
                .with_client_options(h.options)
                .with_retry(h.retry)
                .with_bucket_name(&c.bucket)
                .with_region(region)
                .with_allow_http(c.insecure);
            if !c.endpoint.is_empty() {
                let scheme = if c.insecure { "http" } else { "https" };
                let endpoint = match c.bucket_lookup_type {
                    BucketLookupType::VirtualHosted => {
                        b = b.with_virtual_hosted_style_request(true);
                        format!("{scheme}://{}.{}", c.bucket, c.endpoint)
                    }
                    BucketLookupType::Auto | BucketLookupType::Path => {
                        format!("{scheme}://{}", c.endpoint)
                    }
                };
                b = b.with_endpoint(endpoint);
            } else if c.bucket_lookup_type == BucketLookupType::VirtualHosted {
                b = b.with_virtual_hosted_style_request(true);
            }
            match c.sse_config.kind.as_str() {
                "SSE-S3" => {
                    let key: AmazonS3ConfigKey = "aws_server_side_encryption"
                        .parse()
                        .map_err(build_err("S3"))?;
                    b = b.with_config(key, "AES256");
                }
                "SSE-KMS" => b = b.with_sse_kms_encryption(&c.sse_config.kms_key_id),
                "SSE-C" => {
                    let path = &c.sse_config.encryption_key;
                    let key = std::fs::read(path).map_err(|e| {
                        invalid(
                            "config.sse_config.encryption_key",
                            format!("read {path}: {e}"),
                        )
                    })?;
                    if key.len() != 32 {
                        return Err(invalid(
                            "config.sse_config.encryption_key",
                            format!("{path} holds {} bytes; an SSE-C key is 32 bytes", key.len()),
                        ));
                    }
                    b = b.with_ssec_encryption(
                        base64::engine::general_purpose::STANDARD.encode(key),
                    );
                }
                _ => {}
            }
            Arc::new(b.build().map_err(build_err("S3"))?)
        }
        ProviderConfig::Gcs(c) => {
            let h = http(cfg, &c.http_config, c.max_retries, None)?;
            limits.op_timeout = Some(h.op_timeout);
            let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(&c.bucket);
            if !c.service_account.is_empty() {
                b = b.with_service_account_key(&c.service_account);
            }
            b = b.with_client_options(h.options).with_retry(h.retry);
            Arc::new(b.build().map_err(build_err("GCS"))?)
        }
        ProviderConfig::Azure(c) => {
            let retries = c
                .max_retries
                .max(c.reader_config.max_retry_requests)
                .max(c.pipeline_config.max_tries - 1);
            let try_timeout = Some(c.pipeline_config.try_timeout.0).filter(|d| !d.is_zero());
            let mut h = http(cfg, &c.http_config, retries, try_timeout)?;
            if !c.pipeline_config.retry_delay.0.is_zero() {
                h.retry.backoff.init_backoff = c.pipeline_config.retry_delay.0;
            }
            if !c.pipeline_config.max_retry_delay.0.is_zero() {
                h.retry.backoff.max_backoff = c.pipeline_config.max_retry_delay.0;
            }
            limits.op_timeout = Some(h.op_timeout);
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_account(&c.storage_account)
                .with_container_name(&c.container);
            if !c.storage_account_key.is_empty() {
                b = b.with_access_key(&c.storage_account_key);
            } else if !c.client_secret.is_empty() {
                b = b.with_client_secret_authorization(
                    &c.client_id,
                    &c.client_secret,
                    &c.az_tenant_id,
                );
            } else if !c.user_assigned_id.is_empty() {
                b = b.with_client_id(&c.user_assigned_id);
            }
            if !c.endpoint.is_empty() && c.endpoint != "blob.core.windows.net" {
                b = b.with_endpoint(format!("https://{}.{}", c.storage_account, c.endpoint));
            }
            b = b.with_client_options(h.options).with_retry(h.retry);
            Arc::new(b.build().map_err(build_err("AZURE"))?)
        }
        ProviderConfig::Filesystem(c) => {
            std::fs::create_dir_all(&c.directory)
                .map_err(|e| invalid("config.directory", format!("create {}: {e}", c.directory)))?;
            Arc::new(
                LocalFileSystem::new_with_prefix(&c.directory).map_err(build_err("FILESYSTEM"))?,
            )
        }
    };
    if cfg.prefix.is_empty() {
        return Ok((store, limits));
    }
    let prefix = object_store::path::Path::parse(&cfg.prefix)
        .map_err(|e| invalid("prefix", e.to_string()))?;
    Ok((Arc::new(PrefixStore::new(store, prefix)), limits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_err(yaml: &str) -> String {
        let cfg = BucketConfig::parse(yaml, "b.yml").expect("parse");
        match build(&cfg) {
            Ok(_) => panic!("expected a build error for {yaml}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn file_backed_keys_fail_naming_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("absent.pem");
        let msg = build_err(&format!(
            "type: S3\nconfig:\n  bucket: b\n  endpoint: h:1\n  access_key: a\n  secret_key: s\n  http_config:\n    tls_config:\n      ca_file: {}\n",
            missing.display()
        ));
        assert!(
            msg.contains("config.http_config.tls_config.ca_file") && msg.contains("b.yml"),
            "{msg}"
        );

        let short_key = dir.path().join("key");
        std::fs::write(&short_key, b"too short").expect("write");
        let msg = build_err(&format!(
            "type: S3\nconfig:\n  bucket: b\n  endpoint: h:1\n  access_key: a\n  secret_key: s\n  sse_config:\n    type: SSE-C\n    encryption_key: {}\n",
            short_key.display()
        ));
        assert!(
            msg.contains("config.sse_config.encryption_key") && msg.contains("32 bytes"),
            "{msg}"
        );
    }

    #[test]
    fn every_provider_builds_offline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key");
        std::fs::write(&key, [7u8; 32]).expect("write key");
        let yamls = [
            format!(
                "type: S3\nprefix: p\nconfig:\n  bucket: b\n  endpoint: minio:9000\n  access_key: a\n  secret_key: s\n  insecure: true\n  bucket_lookup_type: virtual-hosted\n  sse_config:\n    type: SSE-C\n    encryption_key: {}\n",
                key.display()
            ),
            "type: S3\nconfig:\n  bucket: b\n  region: eu-west-1\n  access_key: a\n  secret_key: s\n  sse_config:\n    type: SSE-KMS\n    kms_key_id: k\n".to_string(),
            "type: GCS\nconfig:\n  bucket: g\n".to_string(),
            "type: AZURE\nconfig:\n  storage_account: acct\n  storage_account_key: a2V5\n  container: c\n  endpoint: blob.core.chinacloudapi.cn\n".to_string(),
            format!("type: FILESYSTEM\nconfig:\n  directory: {}\n", dir.path().join("fs").display()),
        ];
        for yaml in &yamls {
            let cfg = BucketConfig::parse(yaml, "b.yml").expect("parse");
            let (_, limits) = build(&cfg).unwrap_or_else(|e| panic!("{yaml}: {e}"));
            if !matches!(cfg.provider, ProviderConfig::Filesystem(_)) {
                assert!(limits.op_timeout.is_some(), "{yaml}");
            }
        }
        assert!(
            dir.path().join("fs").is_dir(),
            "FILESYSTEM creates its directory"
        );
    }
}
