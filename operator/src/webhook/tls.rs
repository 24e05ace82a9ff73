//! The webhook's TLS: certificates the operator makes itself (a CA and a serving certificate,
//! kept in a Secret, renewed when a third of their validity is left, the CA published as the
//! `MutatingWebhookConfiguration`'s `caBundle`), or files someone else keeps (cert-manager),
//! re-read when they change. Either way the HTTPS server reads the current certificate through a
//! [`CertResolver`], so a renewal needs no restart.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use strata_runtime::Shutdown;

use super::WebhookError;

/// Key of the CA bundle (PEM; the current CA, then the previous one while it is still valid).
pub const CA_KEY: &str = "ca.crt";
/// Key of the serving certificate (PEM).
pub const CERT_KEY: &str = "tls.crt";
/// Key of the serving certificate's private key (PEM, PKCS#8).
pub const KEY_KEY: &str = "tls.key";
/// Field manager of the operator's writes to the webhook Secret and configuration.
pub const FIELD_MANAGER: &str = "strata-operator-webhook";

/// A CA and a serving certificate it signed, PEM-encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct CertBundle {
    /// The CA bundle clients trust.
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's private key.
    pub key_pem: String,
}

impl std::fmt::Debug for CertBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertBundle")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

fn tls_err(step: &'static str) -> impl FnOnce(rcgen::Error) -> WebhookError {
    move |e| WebhookError::Tls {
        step,
        message: e.to_string(),
    }
}

/// Makes a new CA and a serving certificate for `sans` (DNS names or IP addresses), both valid
/// from `now` (Unix seconds, minus a minute for clock skew) for `validity`.
pub fn generate(sans: &[String], validity: Duration, now: i64) -> Result<CertBundle, WebhookError> {
    let not_before =
        time::OffsetDateTime::from_unix_timestamp(now - 60).map_err(|e| WebhookError::Tls {
            step: "certificate start time",
            message: e.to_string(),
        })?;
    let not_after = not_before + validity + Duration::from_secs(60);

    let ca_key = KeyPair::generate().map_err(tls_err("generate CA key"))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(tls_err("CA parameters"))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("strata-operator-webhook-ca-{now}"),
    );
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key).map_err(tls_err("sign CA"))?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().map_err(tls_err("generate serving key"))?;
    let mut serving = CertificateParams::new(sans.to_vec()).map_err(tls_err("serving SANs"))?;
    serving.distinguished_name.push(
        DnType::CommonName,
        sans.first().cloned().unwrap_or_default(),
    );
    serving.not_before = not_before;
    serving.not_after = not_after;
    let cert = serving
        .signed_by(&key, &issuer)
        .map_err(tls_err("sign serving certificate"))?;
    Ok(CertBundle {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// What the operator needs to know of a stored certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// DNS names and IP addresses it is valid for.
    pub sans: Vec<String>,
}

/// Reads the first certificate of a PEM text.
pub fn cert_info(pem: &str) -> Result<CertInfo, WebhookError> {
    let bad = |message: String| WebhookError::Tls {
        step: "read certificate",
        message,
    };
    let block = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .next()
        .ok_or_else(|| bad("no PEM block".into()))?
        .map_err(|e| bad(e.to_string()))?;
    let cert = block.parse_x509().map_err(|e| bad(e.to_string()))?;
    let validity = cert.validity();
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => sans.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes)
                            .ok()
                            .map(|b| std::net::IpAddr::from(b).to_string()),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(|b| std::net::IpAddr::from(b).to_string()),
                        _ => None,
                    };
                    sans.extend(ip);
                }
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        sans,
    })
}

/// Whether a certificate must be replaced at `now`: not yet or no longer valid, less than a third
/// of its validity left, or missing one of the `sans` it must carry.
pub fn needs_renewal(info: &CertInfo, now: i64, sans: &[String]) -> bool {
    let lifetime = info.not_after - info.not_before;
    let renew_at = info.not_after - lifetime / 3;
    now < info.not_before || now >= renew_at || sans.iter().any(|s| !info.sans.contains(s))
}

/// The DNS names a Service answers to from inside the cluster.
pub fn service_sans(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_string(),
    ]
}

/// Serves whichever certificate was set last; handshakes before the first one fail.
#[derive(Debug, Default)]
pub struct CertResolver {
    current: RwLock<Option<(Arc<CertifiedKey>, String)>>,
}

impl CertResolver {
    /// Switches to `cert_pem` (with its chain) and `key_pem`; the same pair again is a no-op.
    /// Returns whether the served certificate changed.
    pub fn set(&self, cert_pem: &str, key_pem: &str) -> Result<bool, WebhookError> {
        if self
            .current
            .read()
            .map(|c| c.as_ref().is_some_and(|(_, pem)| pem == cert_pem))
            .unwrap_or(false)
        {
            return Ok(false);
        }
        let bad = |message: String| WebhookError::Tls {
            step: "load serving certificate",
            message,
        };
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?;
        if chain.is_empty() {
            return Err(bad("no certificate in PEM".into()));
        }
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let signing = aws_lc_rs::sign::any_supported_type(&key).map_err(|e| bad(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|e| bad(e.to_string()))?;
        if let Ok(mut current) = self.current.write() {
            *current = Some((Arc::new(certified), cert_pem.to_string()));
        }
        Ok(true)
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|(k, _)| k.clone()))
    }
}

/// A rustls server configuration (TLS 1.2/1.3, HTTP/2 and HTTP/1.1) serving `resolver`'s certificate.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<rustls::ServerConfig, WebhookError> {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| WebhookError::Tls {
                step: "TLS versions",
                message: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Where the operator keeps its certificates and whom it tells about the CA.
#[derive(Debug, Clone)]
pub struct OperatorTls {
    /// Namespace of the Secret (the operator's own).
    pub namespace: String,
    /// The Secret holding `ca.crt`, `tls.crt`, `tls.key`.
    pub secret: String,
    /// DNS names / IPs of the serving certificate (the Service's names and any extra ones).
    pub sans: Vec<String>,
    /// Validity of each new CA and serving certificate.
    pub validity: Duration,
    /// The `MutatingWebhookConfiguration` whose webhooks get the CA as `caBundle`.
    pub webhook_configuration: String,
}

impl OperatorTls {
    /// How often the Secret and the `caBundle` are checked: a 24th of the validity, 5 s to 1 min.
    pub fn check_every(&self) -> Duration {
        (self.validity / 24).clamp(Duration::from_secs(5), Duration::from_secs(60))
    }
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let data = secret.data.as_ref()?.get(key)?;
    String::from_utf8(data.0.clone()).ok()
}

/// The stored bundle when it is complete, parseable and not due for renewal.
fn usable(secret: &Secret, cfg: &OperatorTls, now: i64) -> Option<CertBundle> {
    let bundle = CertBundle {
        ca_pem: secret_text(secret, CA_KEY)?,
        cert_pem: secret_text(secret, CERT_KEY)?,
        key_pem: secret_text(secret, KEY_KEY)?,
    };
    let info = cert_info(&bundle.cert_pem).ok()?;
    (!needs_renewal(&info, now, &cfg.sans)).then_some(bundle)
}

/// Appends the previous CA to a new one while the previous is still valid, so clients holding the
/// old `caBundle` and servers holding the new certificate (or the reverse) agree during a rotation.
fn with_previous_ca(new_ca: &str, old_ca: Option<&str>, now: i64) -> String {
    let Some(old) = old_ca else {
        return new_ca.to_string();
    };
    let previous = x509_parser::pem::Pem::iter_from_buffer(old.as_bytes())
        .next()
        .and_then(Result::ok)
        .filter(|p| {
            p.parse_x509()
                .is_ok_and(|c| c.validity().not_after.timestamp() > now)
        });
    match previous {
        Some(p) => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&p.contents);
            let mut out = new_ca.trim_end().to_string();
            out.push_str("\n-----BEGIN CERTIFICATE-----\n");
            for line in b64.as_bytes().chunks(64) {
                out.push_str(&String::from_utf8_lossy(line));
                out.push('\n');
            }
            out.push_str("-----END CERTIFICATE-----\n");
            out
        }
        None => new_ca.to_string(),
    }
}

/// One pass of the operator-managed TLS: makes sure the Secret holds a valid certificate (creating
/// or renewing it; a concurrent writer wins and is read next time), loads it into `resolver`, and
/// makes every webhook of the configuration carry its CA. Returns the bundle served.
pub async fn reconcile_operator_tls(
    client: &Client,
    cfg: &OperatorTls,
    resolver: &CertResolver,
) -> Result<CertBundle, WebhookError> {
    let now = now_unix();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let kube_err = |action: &str| {
        let action = format!("{action} Secret {}/{}", cfg.namespace, cfg.secret);
        move |source| WebhookError::Kube { action, source }
    };
    let existing = secrets
        .get_opt(&cfg.secret)
        .await
        .map_err(kube_err("read"))?;
    let bundle = match existing.as_ref().and_then(|s| usable(s, cfg, now)) {
        Some(bundle) => bundle,
        None => {
            let mut bundle = generate(&cfg.sans, cfg.validity, now)?;
            let old_ca = existing.as_ref().and_then(|s| secret_text(s, CA_KEY));
            bundle.ca_pem = with_previous_ca(&bundle.ca_pem, old_ca.as_deref(), now);
            // The caBundle first, so the API server trusts the new certificate before it is served.
            // A configuration not created yet is not a reason to serve nothing; it is retried below.
            match patch_ca_bundle(client, cfg, &bundle.ca_pem).await {
                Ok(()) | Err(WebhookError::MissingWebhookConfiguration(_)) => {}
                Err(e) => return Err(e),
            }
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(cfg.secret.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    resource_version: existing
                        .as_ref()
                        .and_then(|s| s.metadata.resource_version.clone()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_string(),
                        crate::desired::MANAGED_BY.to_string(),
                    )])),
                    ..ObjectMeta::default()
                },
                type_: Some("kubernetes.io/tls".into()),
                data: Some(BTreeMap::from([
                    (
                        CA_KEY.to_string(),
                        ByteString(bundle.ca_pem.clone().into_bytes()),
                    ),
                    (
                        CERT_KEY.to_string(),
                        ByteString(bundle.cert_pem.clone().into_bytes()),
                    ),
                    (
                        KEY_KEY.to_string(),
                        ByteString(bundle.key_pem.clone().into_bytes()),
                    ),
                ])),
                ..Secret::default()
            };
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            if existing.is_some() {
                secrets
                    .replace(&cfg.secret, &pp, &secret)
                    .await
                    .map_err(kube_err("renew"))?;
                tracing::info!(secret = %cfg.secret, "renewed the webhook certificate");
            } else {
                secrets
                    .create(&pp, &secret)
                    .await
                    .map_err(kube_err("create"))?;
                tracing::info!(secret = %cfg.secret, "created the webhook certificate");
            }
            bundle
        }
    };
    if resolver.set(&bundle.cert_pem, &bundle.key_pem)? {
        tracing::info!("serving a new webhook certificate");
    }
    patch_ca_bundle(client, cfg, &bundle.ca_pem).await?;
    Ok(bundle)
}

/// Sets `caBundle` on every webhook of the configuration that lacks it; no write when all match.
async fn patch_ca_bundle(
    client: &Client,
    cfg: &OperatorTls,
    ca_pem: &str,
) -> Result<(), WebhookError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let name = &cfg.webhook_configuration;
    let err = |action: &str| {
        let action = format!("{action} MutatingWebhookConfiguration {name}");
        move |source| WebhookError::Kube { action, source }
    };
    let Some(current) = api.get_opt(name).await.map_err(err("read"))? else {
        return Err(WebhookError::MissingWebhookConfiguration(name.clone()));
    };
    let webhooks = current.webhooks.unwrap_or_default();
    let stale: Vec<&str> = webhooks
        .iter()
        .filter(|w| {
            w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(ca_pem.as_bytes())
        })
        .map(|w| w.name.as_str())
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let entries: Vec<serde_json::Value> = webhooks
        .iter()
        .map(|w| serde_json::json!({"name": w.name, "clientConfig": {"caBundle": encoded}}))
        .collect();
    let patch = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": entries,
    });
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(err("apply caBundle to"))?;
    tracing::info!(configuration = %name, webhooks = ?stale, "published the webhook CA");
    Ok(())
}

/// Keeps the operator-managed certificate current until `shutdown`; errors are logged and retried.
pub async fn run_operator_tls(
    client: Client,
    cfg: OperatorTls,
    resolver: Arc<CertResolver>,
    shutdown: Shutdown,
) {
    let every = cfg.check_every();
    loop {
        if let Err(e) = reconcile_operator_tls(&client, &cfg, &resolver).await {
            tracing::warn!(error = %e, "webhook TLS");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Certificate and key files someone else keeps current (cert-manager, a mounted Secret).
#[derive(Debug, Clone)]
pub struct FileTls {
    /// The serving certificate (PEM, with its chain).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// Loads the files into `resolver` now (failing if they are unusable) and returns.
pub fn load_files(files: &FileTls, resolver: &CertResolver) -> Result<bool, WebhookError> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).map_err(|source| WebhookError::Io {
            path: p.clone(),
            source,
        })
    };
    resolver.set(&read(&files.cert)?, &read(&files.key)?)
}

/// Re-reads the files every `every` until `shutdown`, switching certificates when they change.
pub async fn run_file_tls(
    files: FileTls,
    resolver: Arc<CertResolver>,
    every: Duration,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match load_files(&files, &resolver) {
            Ok(true) => {
                tracing::info!(cert = %files.cert.display(), "reloaded the webhook certificate")
            }
            Ok(false) => {}
            // A half-written pair (cert updated, key not yet) is retried next time.
            Err(e) => tracing::warn!(error = %e, "webhook certificate files"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sans() -> Vec<String> {
        vec!["hook.strata.svc".into(), "127.0.0.1".into()]
    }

    #[test]
    fn generated_certificate_carries_sans_and_validity() {
        let now = 1_800_000_000;
        let b = generate(&sans(), Duration::from_secs(3600), now).expect("generate");
        let info = cert_info(&b.cert_pem).expect("info");
        assert_eq!(info.sans, sans());
        assert_eq!(info.not_before, now - 60);
        assert_eq!(info.not_after, now + 3600);
        assert!(!needs_renewal(&info, now, &sans()));
        let resolver = CertResolver::default();
        assert!(resolver.set(&b.cert_pem, &b.key_pem).expect("load"));
        assert!(!resolver.set(&b.cert_pem, &b.key_pem).expect("again"));
        assert!(resolver.is_loaded());
    }

    #[test]
    fn renewal_when_a_third_is_left_or_a_san_is_missing() {
        let info = CertInfo {
            not_before: 0,
            not_after: 300,
            sans: sans(),
        };
        assert!(!needs_renewal(&info, 199, &sans()));
        assert!(needs_renewal(&info, 200, &sans()));
        assert!(needs_renewal(&info, -1, &sans()));
        assert!(needs_renewal(&info, 10, &["other.svc".to_string()]));
    }

    #[test]
    fn mismatched_key_is_refused() {
        let a = generate(&sans(), Duration::from_secs(3600), 1_800_000_000).expect("a");
        let b = generate(&sans(), Duration::from_secs(3600), 1_800_000_000).expect("b");
        let resolver = CertResolver::default();
        assert!(resolver.set(&a.cert_pem, &b.key_pem).is_err());
        assert!(!resolver.is_loaded());
    }

    #[test]
    fn rotation_bundle_keeps_the_previous_ca_while_valid() {
        let now = 1_800_000_000;
        let old = generate(&sans(), Duration::from_secs(3600), now).expect("old");
        let new = generate(&sans(), Duration::from_secs(3600), now + 10).expect("new");
        let both = with_previous_ca(&new.ca_pem, Some(&old.ca_pem), now + 10);
        assert_eq!(both.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(both.starts_with(new.ca_pem.trim_end()));
        let old_der = CertificateDer::pem_slice_iter(old.ca_pem.as_bytes())
            .next()
            .expect("one")
            .expect("der");
        let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(both.as_bytes())
            .collect::<Result<_, _>>()
            .expect("bundle parses");
        assert_eq!(ders[1], old_der);
        let expired = with_previous_ca(&new.ca_pem, Some(&old.ca_pem), now + 7200);
        assert_eq!(expired, new.ca_pem);
    }
}
