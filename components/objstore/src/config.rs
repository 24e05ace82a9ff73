//! The Thanos objstore YAML: `type`, `config`, `prefix`, with the keys thanos-io/objstore documents for
//! S3, GCS, AZURE and FILESYSTEM. Parsing is strict like Thanos (`UnmarshalStrict`): an unknown key is an
//! error naming the key. Keys Thanos accepts that have no `object_store` equivalent are accepted and
//! reported by [`BucketConfig::unsupported_keys`] (the bucket builder logs them as a warning).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;

/// A parsed objstore configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketConfig {
    /// The provider and its settings.
    pub provider: ProviderConfig,
    /// Prefix prepended to every object name (without leading/trailing `/`); empty for none.
    pub prefix: String,
    /// Where the configuration came from (a file path or a flag name), used in errors.
    pub origin: String,
}

/// Provider-specific settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderConfig {
    /// Amazon S3 and S3-compatible servers (MinIO, Ceph, …).
    S3(S3Config),
    /// Google Cloud Storage.
    Gcs(GcsConfig),
    /// Azure Blob Storage.
    Azure(AzureConfig),
    /// A local directory.
    Filesystem(FilesystemConfig),
}

impl ProviderConfig {
    /// The Thanos type name (`S3`, `GCS`, `AZURE`, `FILESYSTEM`).
    pub fn type_name(&self) -> &'static str {
        match self {
            ProviderConfig::S3(_) => "S3",
            ProviderConfig::Gcs(_) => "GCS",
            ProviderConfig::Azure(_) => "AZURE",
            ProviderConfig::Filesystem(_) => "FILESYSTEM",
        }
    }
}

/// A duration in Prometheus notation (`90s`, `2m`, `1h30m`, `0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PromDuration(pub Duration);

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_prom_duration(&s)
            .map(PromDuration)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid duration {s:?}")))
    }
}

/// Parses `0` or a sequence of `<n><unit>` with units y, w, d, h, m, s, ms.
pub fn parse_prom_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms_per = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(ms_per)?)?;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_millis(total))
}

/// `http_config` (S3, GCS, AZURE), as Thanos's `exthttp.HTTPConfig`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Idle keep-alive connections are closed after this long (default 90s).
    pub idle_conn_timeout: PromDuration,
    /// Time to wait for a response; Strata applies it to the whole request (default 2m).
    pub response_header_timeout: PromDuration,
    /// Skip TLS certificate verification.
    pub insecure_skip_verify: bool,
    /// Strata uses it as the connect timeout (default 10s).
    pub tls_handshake_timeout: PromDuration,
    /// Accepted, not used (object_store does not send `Expect: 100-continue`).
    pub expect_continue_timeout: PromDuration,
    /// Accepted, not used.
    pub max_idle_conns: i64,
    /// Idle connections kept per host (default 100).
    pub max_idle_conns_per_host: i64,
    /// Accepted, not used (object_store has no per-host connection cap).
    pub max_conns_per_host: i64,
    /// TLS settings.
    pub tls_config: TlsConfig,
    /// Accepted, not used.
    pub disable_compression: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            idle_conn_timeout: PromDuration(Duration::from_secs(90)),
            response_header_timeout: PromDuration(Duration::from_secs(120)),
            insecure_skip_verify: false,
            tls_handshake_timeout: PromDuration(Duration::from_secs(10)),
            expect_continue_timeout: PromDuration(Duration::from_secs(1)),
            max_idle_conns: 100,
            max_idle_conns_per_host: 100,
            max_conns_per_host: 0,
            tls_config: TlsConfig::default(),
            disable_compression: false,
        }
    }
}

/// `http_config.tls_config`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// CA certificate(s) to trust, PEM file.
    pub ca_file: String,
    /// Client certificate (not supported: rejected when set).
    pub cert_file: String,
    /// Client key (not supported: rejected when set).
    pub key_file: String,
    /// Server name override (accepted, not used).
    pub server_name: String,
    /// Skip verification.
    pub insecure_skip_verify: bool,
}

/// `sse_config` of S3.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SseConfig {
    /// `SSE-S3`, `SSE-KMS` or `SSE-C`; empty for none.
    #[serde(rename = "type")]
    pub kind: String,
    /// KMS key id (SSE-KMS).
    pub kms_key_id: String,
    /// KMS encryption context (SSE-KMS; not supported when non-empty).
    pub kms_encryption_context: BTreeMap<String, String>,
    /// File holding the 32-byte customer key (SSE-C).
    pub encryption_key: String,
}

/// `trace` of S3.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceConfig {
    /// Log HTTP traffic (accepted, not used).
    pub enable: bool,
}

/// How the bucket appears in S3 URLs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum BucketLookupType {
    /// Path style for custom endpoints (what object_store does by default).
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// `https://<bucket>.<endpoint>/…`.
    #[serde(rename = "virtual-hosted")]
    VirtualHosted,
    /// `https://<endpoint>/<bucket>/…`.
    #[serde(rename = "path")]
    Path,
}

/// S3 settings (`providers/s3` in thanos-io/objstore).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Bucket name (required).
    pub bucket: String,
    /// `host[:port]` without scheme; empty for AWS.
    pub endpoint: String,
    /// Region; `us-east-1` when empty.
    pub region: String,
    /// Accepted, not used.
    pub disable_dualstack: bool,
    /// Use the AWS SDK credential chain (object_store's default chain is used whenever no keys are given).
    pub aws_sdk_auth: bool,
    /// Access key.
    pub access_key: String,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    /// AWS signature v2 (not supported: rejected when true).
    pub signature_version2: bool,
    /// Secret key.
    pub secret_key: String,
    /// Session token.
    pub session_token: String,
    /// User metadata on uploads (accepted, not used).
    pub put_user_metadata: BTreeMap<String, String>,
    /// HTTP client settings.
    pub http_config: HttpConfig,
    /// Request tracing.
    pub trace: TraceConfig,
    /// `v1` or `v2`; object_store always lists with V2 (v1 accepted with a warning).
    pub list_objects_version: String,
    /// Bucket addressing.
    pub bucket_lookup_type: BucketLookupType,
    /// Accepted; object_store sends checksums its own way.
    pub send_content_md5: bool,
    /// Upload every object with a single PUT.
    pub disable_multipart: bool,
    /// Multipart part size in bytes (default 64 MiB; minimum 5 MiB).
    pub part_size: u64,
    /// Server-side encryption.
    pub sse_config: SseConfig,
    /// Accepted, not used.
    pub sts_endpoint: String,
    /// Retries of failed requests; 0 means the default (10).
    pub max_retries: i64,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            endpoint: String::new(),
            region: String::new(),
            disable_dualstack: false,
            aws_sdk_auth: false,
            access_key: String::new(),
            insecure: false,
            signature_version2: false,
            secret_key: String::new(),
            session_token: String::new(),
            put_user_metadata: BTreeMap::new(),
            http_config: HttpConfig::default(),
            trace: TraceConfig::default(),
            list_objects_version: String::new(),
            bucket_lookup_type: BucketLookupType::Auto,
            send_content_md5: true,
            disable_multipart: false,
            part_size: 64 * 1024 * 1024,
            sse_config: SseConfig::default(),
            sts_endpoint: String::new(),
            max_retries: 0,
        }
    }
}

/// GCS settings (`providers/gcs`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcsConfig {
    /// Bucket name (required).
    pub bucket: String,
    /// Service account JSON (the key file's content); empty for application default credentials.
    pub service_account: String,
    /// Accepted, not used (object_store speaks JSON/XML over HTTP).
    pub use_grpc: bool,
    /// Accepted, not used.
    pub grpc_conn_pool_size: i64,
    /// HTTP client settings.
    pub http_config: HttpConfig,
    /// Accepted, not used.
    pub chunk_size_bytes: i64,
    /// Retries; 0 means the default.
    pub max_retries: i64,
}

/// `reader_config` of AZURE.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AzureReaderConfig {
    /// Retries of reads (Strata uses the larger of this and `max_retries`).
    pub max_retry_requests: i64,
}

/// `pipeline_config` of AZURE.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AzurePipelineConfig {
    /// Attempts per request (retries + 1).
    pub max_tries: i64,
    /// Timeout of one attempt.
    pub try_timeout: PromDuration,
    /// First backoff.
    pub retry_delay: PromDuration,
    /// Largest backoff.
    pub max_retry_delay: PromDuration,
}

/// AZURE settings (`providers/azure`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AzureConfig {
    /// Tenant for client-secret auth.
    pub az_tenant_id: String,
    /// Client id (client-secret auth, or the managed identity's client id).
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
    /// Storage account (required).
    pub storage_account: String,
    /// Storage account key.
    pub storage_account_key: String,
    /// Connection string (not supported: rejected when set).
    pub storage_connection_string: String,
    /// Accepted, not used (Strata never creates containers).
    pub storage_create_container: bool,
    /// Container (required).
    pub container: String,
    /// Endpoint suffix, default `blob.core.windows.net`.
    pub endpoint: String,
    /// User-assigned managed identity id.
    pub user_assigned_id: String,
    /// Retries.
    pub max_retries: i64,
    /// Read retries.
    pub reader_config: AzureReaderConfig,
    /// Request pipeline retries and timeouts.
    pub pipeline_config: AzurePipelineConfig,
    /// HTTP client settings.
    pub http_config: HttpConfig,
    /// Accepted, not used.
    pub msi_resource: String,
}

/// FILESYSTEM settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesystemConfig {
    /// Root directory of the bucket (required; created if missing).
    pub directory: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    #[allow(dead_code)]
    config: serde::de::IgnoredAny,
    #[serde(default)]
    prefix: String,
}

/// The second pass: the same document with `config` typed, so errors carry the key path
/// (`config.http_config.idle_conn_timeout: …`).
#[derive(Deserialize)]
struct Typed<T> {
    #[serde(rename = "type")]
    #[allow(dead_code)]
    kind: serde::de::IgnoredAny,
    #[serde(default = "Option::default")]
    config: Option<T>,
    #[serde(default)]
    #[allow(dead_code)]
    prefix: serde::de::IgnoredAny,
}

impl BucketConfig {
    /// Parses the YAML. `origin` names its source (a file path or `--objstore.config`) in errors.
    pub fn parse(yaml: &str, origin: &str) -> Result<Self, ConfigError> {
        let yaml_err = |message: String| ConfigError::Yaml {
            origin: origin.to_string(),
            message,
        };
        let raw: RawConfig = serde_norway::from_str(yaml).map_err(|e| yaml_err(e.to_string()))?;
        let config = yaml;
        fn section<T: serde::de::DeserializeOwned + Default>(
            yaml: &str,
            origin: &str,
        ) -> Result<T, ConfigError> {
            let typed: Typed<T> = serde_norway::from_str(yaml).map_err(|e| ConfigError::Yaml {
                origin: origin.to_string(),
                message: e.to_string(),
            })?;
            Ok(typed.config.unwrap_or_default())
        }
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            origin: origin.to_string(),
            key: key.to_string(),
            message: message.to_string(),
        };
        let provider = match raw.kind.to_ascii_uppercase().as_str() {
            "S3" => {
                let c: S3Config = section(config, origin)?;
                if c.bucket.is_empty() {
                    return Err(invalid("config.bucket", "missing bucket name"));
                }
                if c.signature_version2 {
                    return Err(invalid(
                        "config.signature_version2",
                        "AWS signature v2 is not supported; Strata signs with v4",
                    ));
                }
                if !matches!(c.list_objects_version.as_str(), "" | "v1" | "v2") {
                    return Err(invalid("config.list_objects_version", "must be v1 or v2"));
                }
                if c.part_size < 5 * 1024 * 1024 {
                    return Err(invalid(
                        "config.part_size",
                        "must be at least 5242880 (5 MiB), the S3 minimum",
                    ));
                }
                if !c.access_key.is_empty() && c.secret_key.is_empty() {
                    return Err(invalid(
                        "config.secret_key",
                        "access_key is set but secret_key is empty",
                    ));
                }
                check_tls(&c.http_config, &invalid)?;
                match c.sse_config.kind.as_str() {
                    "" | "SSE-S3" => {}
                    "SSE-KMS" => {
                        if c.sse_config.kms_key_id.is_empty() {
                            return Err(invalid(
                                "config.sse_config.kms_key_id",
                                "required for SSE-KMS",
                            ));
                        }
                        if !c.sse_config.kms_encryption_context.is_empty() {
                            return Err(invalid(
                                "config.sse_config.kms_encryption_context",
                                "not supported",
                            ));
                        }
                    }
                    "SSE-C" => {
                        if c.sse_config.encryption_key.is_empty() {
                            return Err(invalid(
                                "config.sse_config.encryption_key",
                                "required for SSE-C",
                            ));
                        }
                    }
                    _ => {
                        return Err(invalid(
                            "config.sse_config.type",
                            "must be SSE-S3, SSE-KMS or SSE-C",
                        ));
                    }
                }
                ProviderConfig::S3(c)
            }
            "GCS" => {
                let c: GcsConfig = section(config, origin)?;
                if c.bucket.is_empty() {
                    return Err(invalid("config.bucket", "missing bucket name"));
                }
                check_tls(&c.http_config, &invalid)?;
                ProviderConfig::Gcs(c)
            }
            "AZURE" => {
                let c: AzureConfig = section(config, origin)?;
                if c.storage_account.is_empty() {
                    return Err(invalid("config.storage_account", "missing storage account"));
                }
                if c.container.is_empty() {
                    return Err(invalid("config.container", "missing container"));
                }
                if !c.storage_connection_string.is_empty() {
                    return Err(invalid(
                        "config.storage_connection_string",
                        "not supported; use storage_account and storage_account_key",
                    ));
                }
                check_tls(&c.http_config, &invalid)?;
                ProviderConfig::Azure(c)
            }
            "FILESYSTEM" => {
                let c: FilesystemConfig = section(config, origin)?;
                if c.directory.is_empty() {
                    return Err(invalid("config.directory", "missing directory"));
                }
                ProviderConfig::Filesystem(c)
            }
            _ => {
                return Err(ConfigError::UnsupportedType {
                    origin: origin.to_string(),
                    kind: raw.kind,
                });
            }
        };
        Ok(BucketConfig {
            provider,
            prefix: raw.prefix.trim_matches('/').to_string(),
            origin: origin.to_string(),
        })
    }

    /// Keys that are set to a non-default value but have no effect in Strata (logged as a warning when
    /// the bucket is built).
    pub fn unsupported_keys(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let http = |h: &HttpConfig, out: &mut Vec<&'static str>| {
            let d = HttpConfig::default();
            if h.expect_continue_timeout != d.expect_continue_timeout {
                out.push("config.http_config.expect_continue_timeout");
            }
            if h.max_idle_conns != d.max_idle_conns {
                out.push("config.http_config.max_idle_conns");
            }
            if h.max_conns_per_host != d.max_conns_per_host {
                out.push("config.http_config.max_conns_per_host");
            }
            if h.disable_compression {
                out.push("config.http_config.disable_compression");
            }
            if !h.tls_config.server_name.is_empty() {
                out.push("config.http_config.tls_config.server_name");
            }
        };
        match &self.provider {
            ProviderConfig::S3(c) => {
                http(&c.http_config, &mut out);
                if c.disable_dualstack {
                    out.push("config.disable_dualstack");
                }
                if !c.put_user_metadata.is_empty() {
                    out.push("config.put_user_metadata");
                }
                if c.trace.enable {
                    out.push("config.trace.enable");
                }
                if c.list_objects_version == "v1" {
                    out.push("config.list_objects_version");
                }
                if !c.send_content_md5 {
                    out.push("config.send_content_md5");
                }
                if !c.sts_endpoint.is_empty() {
                    out.push("config.sts_endpoint");
                }
            }
            ProviderConfig::Gcs(c) => {
                http(&c.http_config, &mut out);
                if c.use_grpc {
                    out.push("config.use_grpc");
                }
                if c.grpc_conn_pool_size != 0 {
                    out.push("config.grpc_conn_pool_size");
                }
                if c.chunk_size_bytes != 0 {
                    out.push("config.chunk_size_bytes");
                }
            }
            ProviderConfig::Azure(c) => {
                http(&c.http_config, &mut out);
                if c.storage_create_container {
                    out.push("config.storage_create_container");
                }
                if !c.msi_resource.is_empty() {
                    out.push("config.msi_resource");
                }
            }
            ProviderConfig::Filesystem(_) => {}
        }
        out
    }
}

fn check_tls(
    h: &HttpConfig,
    invalid: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<(), ConfigError> {
    if !h.tls_config.cert_file.is_empty() || !h.tls_config.key_file.is_empty() {
        return Err(invalid(
            "config.http_config.tls_config.cert_file",
            "TLS client certificates are not supported",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<BucketConfig, ConfigError> {
        BucketConfig::parse(yaml, "bucket.yml")
    }

    fn err(yaml: &str) -> String {
        match parse(yaml) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn s3_full() {
        let c = parse(
            "type: s3\nprefix: /tenant-a/\nconfig:\n  bucket: b\n  endpoint: minio:9000\n  region: eu-west-1\n  access_key: ak\n  secret_key: sk\n  session_token: tok\n  insecure: true\n  part_size: 10485760\n  disable_multipart: true\n  list_objects_version: v2\n  bucket_lookup_type: path\n  send_content_md5: false\n  max_retries: 3\n  sse_config:\n    type: SSE-KMS\n    kms_key_id: key-1\n  http_config:\n    idle_conn_timeout: 1m30s\n    response_header_timeout: 5s\n    insecure_skip_verify: true\n    tls_config:\n      ca_file: /etc/ca.pem\n",
        )
        .expect("parse");
        assert_eq!(c.prefix, "tenant-a");
        let ProviderConfig::S3(s3) = &c.provider else {
            panic!("not S3: {c:?}")
        };
        assert_eq!(s3.bucket, "b");
        assert_eq!(s3.endpoint, "minio:9000");
        assert_eq!(s3.region, "eu-west-1");
        assert_eq!(s3.session_token, "tok");
        assert!(s3.insecure && s3.disable_multipart && !s3.send_content_md5);
        assert_eq!(s3.part_size, 10 * 1024 * 1024);
        assert_eq!(s3.bucket_lookup_type, BucketLookupType::Path);
        assert_eq!(s3.max_retries, 3);
        assert_eq!(s3.sse_config.kms_key_id, "key-1");
        assert_eq!(s3.http_config.idle_conn_timeout.0, Duration::from_secs(90));
        assert_eq!(
            s3.http_config.response_header_timeout.0,
            Duration::from_secs(5)
        );
        assert_eq!(s3.http_config.tls_config.ca_file, "/etc/ca.pem");
        assert_eq!(c.unsupported_keys(), vec!["config.send_content_md5"]);
    }

    #[test]
    fn s3_defaults_match_thanos() {
        let c = parse("type: S3\nconfig:\n  bucket: b\n").expect("parse");
        let ProviderConfig::S3(s3) = c.provider else {
            panic!("not S3")
        };
        assert_eq!(s3.part_size, 64 * 1024 * 1024);
        assert!(s3.send_content_md5);
        assert_eq!(s3.bucket_lookup_type, BucketLookupType::Auto);
        assert_eq!(
            s3.http_config.response_header_timeout.0,
            Duration::from_secs(120)
        );
        assert_eq!(s3.http_config.idle_conn_timeout.0, Duration::from_secs(90));
        assert_eq!(c.prefix, "");
    }

    #[test]
    fn gcs_azure_filesystem() {
        let c = parse("type: GCS\nconfig:\n  bucket: g\n  service_account: '{\"type\":\"service_account\"}'\n  max_retries: 2\n  use_grpc: true\n").expect("gcs");
        let ProviderConfig::Gcs(g) = &c.provider else {
            panic!("not GCS")
        };
        assert_eq!(g.bucket, "g");
        assert!(g.service_account.contains("service_account"));
        assert_eq!(c.unsupported_keys(), vec!["config.use_grpc"]);

        let c = parse("type: azure\nconfig:\n  storage_account: acct\n  storage_account_key: a2V5\n  container: c\n  endpoint: blob.core.chinacloudapi.cn\n  max_retries: 4\n  reader_config:\n    max_retry_requests: 5\n  pipeline_config:\n    max_tries: 3\n    try_timeout: 30s\n    retry_delay: 1s\n    max_retry_delay: 10s\n").expect("azure");
        let ProviderConfig::Azure(a) = &c.provider else {
            panic!("not AZURE")
        };
        assert_eq!(a.storage_account, "acct");
        assert_eq!(a.container, "c");
        assert_eq!(a.reader_config.max_retry_requests, 5);
        assert_eq!(a.pipeline_config.try_timeout.0, Duration::from_secs(30));

        let c = parse("type: FILESYSTEM\nconfig:\n  directory: /data/bucket\n").expect("fs");
        assert_eq!(
            c.provider,
            ProviderConfig::Filesystem(FilesystemConfig {
                directory: "/data/bucket".into()
            })
        );
    }

    #[test]
    fn errors_name_the_key_and_origin() {
        let cases: &[(&str, &[&str])] = &[
            (
                "type: S3\nconfig:\n  bucket: b\n  bukket: x\n",
                &["bucket.yml", "bukket"],
            ),
            (
                "type: S3\nconfig:\n  bucket: b\n  http_config:\n    idle_timeout: 1s\n",
                &["idle_timeout"],
            ),
            (
                "type: S3\nconfig:\n  bucket: b\n  insecure: maybe\n",
                &["bucket.yml", "insecure"],
            ),
            (
                "type: S3\nconfig:\n  bucket: b\n  part_size: -1\n",
                &["part_size"],
            ),
            (
                "type: S3\nconfig:\n  bucket: b\n  part_size: 1024\n",
                &["config.part_size", "5 MiB"],
            ),
            (
                "type: S3\nconfig:\n  bucket: b\n  http_config:\n    idle_conn_timeout: soon\n",
                &["config.http_config", "soon", "line 5"],
            ),
            ("type: S3\nconfig:\n  endpoint: x\n", &["config.bucket"]),
            (
                "type: S3\nconfig:\n  bucket: b\n  signature_version2: true\n",
                &["signature_version2"],
            ),
            (
                "type: S3\nconfig:\n  bucket: b\n  sse_config:\n    type: SSE-X\n",
                &["sse_config.type"],
            ),
            (
                "type: S3\nconfig:\n  bucket: b\n  bucket_lookup_type: dns\n",
                &["bucket_lookup_type"],
            ),
            ("type: S3\nconfig:\n  bucket: b\nprefx: p\n", &["prefx"]),
            ("type: SWIFT\nconfig:\n  container: c\n", &["SWIFT", "type"]),
            ("config:\n  bucket: b\n", &["type"]),
            (
                "type: GCS\nconfig:\n  bucket: g\n  no_auth: true\n",
                &["no_auth"],
            ),
            (
                "type: AZURE\nconfig:\n  storage_account: a\n",
                &["config.container"],
            ),
            (
                "type: AZURE\nconfig:\n  storage_account: a\n  container: c\n  storage_connection_string: x\n",
                &["storage_connection_string"],
            ),
            ("type: FILESYSTEM\nconfig:\n  dir: /x\n", &["dir"]),
            ("type: FILESYSTEM\n", &["config.directory"]),
            ("type: [S3\n", &["bucket.yml"]),
        ];
        for (yaml, needles) in cases {
            let msg = err(yaml);
            for n in *needles {
                assert!(
                    msg.contains(n),
                    "error for {yaml:?} should mention {n:?}: {msg}"
                );
            }
        }
    }

    #[test]
    fn prom_durations() {
        assert_eq!(parse_prom_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_prom_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_prom_duration("1h30m"),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            parse_prom_duration("250ms"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_prom_duration("1d"), Some(Duration::from_secs(86400)));
        for bad in ["", "s", "10", "1x", "-1s", "1.5s"] {
            assert_eq!(parse_prom_duration(bad), None, "{bad:?}");
        }
    }
}
