//! A real etcd and kube-apiserver on loopback: TLS from a throw-away CA, a static admin token, RBAC.
//! [`KubeControlPlane`] adds the real kube-controller-manager and kube-scheduler and one kwok fake
//! node, so workloads get Pods that are scheduled and become Running/Ready (no containers run).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::tools::{Tool, tool_path};
use crate::{Error, Process, Result, free_port};

/// A running single-member etcd; killed when dropped.
#[derive(Debug)]
pub struct Etcd {
    process: Process,
    client_url: String,
    _data: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd on free loopback ports and waits for `/health`.
    pub async fn start() -> Result<Self> {
        let binary = tool_path(Tool::Etcd)?;
        let data = tempfile::Builder::new()
            .prefix("strata-e2e-etcd-")
            .tempdir()
            .map_err(Error::io("create etcd data dir"))?;
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let mut command = Command::new(binary);
        command
            .arg("--name=e2e")
            .arg(format!("--data-dir={}", data.path().join("etcd").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=e2e={peer_url}"))
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn");
        let mut process = Process::spawn("etcd", command)?;
        process
            .wait_http_ok(&format!("{client_url}/health"), Duration::from_secs(60))
            .await?;
        Ok(Self {
            process,
            client_url,
            _data: data,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The process (logs, signals).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// A running kube-apiserver backed by an [`Etcd`]; killed when dropped.
#[derive(Debug)]
pub struct KubeApiserver {
    process: Process,
    url: String,
    token: String,
    ca_pem: String,
    kubeconfig: PathBuf,
    audit_log: PathBuf,
    ca_file: PathBuf,
    sa_key_file: PathBuf,
    _dir: tempfile::TempDir,
}

const ADMIN_TOKEN: &str = "strata-e2e-admin-token";

fn cert_err(step: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |e| Error::Request {
        step: step.to_string(),
        message: e.to_string(),
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, contents).map_err(Error::io(format!("write {}", path.display())))?;
    Ok(path)
}

impl KubeApiserver {
    /// Starts kube-apiserver on a free loopback port against `etcd` and waits for `/readyz`.
    pub async fn start(etcd: &Etcd) -> Result<Self> {
        let binary = tool_path(Tool::KubeApiserver)?;
        let dir = tempfile::Builder::new()
            .prefix("strata-e2e-apiserver-")
            .tempdir()
            .map_err(Error::io("create kube-apiserver dir"))?;
        let d = dir.path();

        // A throw-away CA and a serving certificate for 127.0.0.1 / localhost.
        let ca_key = KeyPair::generate().map_err(cert_err("generate CA key"))?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(cert_err("CA params"))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "strata-e2e-ca");
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(cert_err("sign CA"))?;
        let ca_pem = ca_cert.pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let serving_key = KeyPair::generate().map_err(cert_err("generate serving key"))?;
        let serving = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "kubernetes.default.svc".to_string(),
        ])
        .map_err(cert_err("serving params"))?
        .signed_by(&serving_key, &issuer)
        .map_err(cert_err("sign serving cert"))?;
        let sa_key = KeyPair::generate().map_err(cert_err("generate service-account key"))?;

        let ca_file = write(d, "ca.crt", &ca_pem)?;
        let cert_file = write(d, "apiserver.crt", &serving.pem())?;
        let key_file = write(d, "apiserver.key", &serving_key.serialize_pem())?;
        let sa_file = write(d, "sa.key", &sa_key.serialize_pem())?;
        let sa_pub = write(d, "sa.pub", &sa_key.public_key_pem())?;
        let tokens = write(
            d,
            "tokens.csv",
            &format!("{ADMIN_TOKEN},strata-e2e-admin,strata-e2e-admin-uid,\"system:masters\"\n"),
        )?;

        // Every request's user, verb and response code, one JSON line each (tests look for 403s).
        let audit_policy = write(
            d,
            "audit-policy.yaml",
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n",
        )?;
        let audit_log = d.join("audit.log");

        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let mut command = Command::new(binary);
        command
            .arg(format!("--etcd-servers={}", etcd.client_url()))
            .arg(format!("--etcd-prefix=/strata-e2e-{port}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", d.join("certs").display()))
            .arg(format!("--tls-cert-file={}", cert_file.display()))
            .arg(format!("--tls-private-key-file={}", key_file.display()))
            .arg(format!("--client-ca-file={}", ca_file.display()))
            .arg(format!("--token-auth-file={}", tokens.display()))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-account-key-file={}", sa_pub.display()))
            .arg(format!(
                "--service-account-signing-key-file={}",
                sa_file.display()
            ))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--allow-privileged=true")
            .arg("--enable-priority-and-fairness=false")
            // Do not publish a loopback address as the `kubernetes` Service's endpoints.
            .arg("--endpoint-reconciler-type=none")
            .arg(format!("--audit-policy-file={}", audit_policy.display()))
            .arg(format!("--audit-log-path={}", audit_log.display()))
            .arg("--audit-log-mode=blocking")
            .arg("--v=1");
        let process = Process::spawn("kube-apiserver", command)?;

        let kubeconfig = write(
            d,
            "kubeconfig",
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\ncontexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: admin\ncurrent-context: e2e\nusers:\n- name: admin\n  user:\n    token: {ADMIN_TOKEN}\n",
                ca = ca_file.display()
            ),
        )?;
        let server = Self {
            process,
            url,
            token: ADMIN_TOKEN.to_string(),
            ca_pem,
            kubeconfig,
            audit_log,
            ca_file,
            sa_key_file: sa_file,
            _dir: dir,
        };
        let client = server.client()?;
        let readyz = format!("{}/readyz", server.url);
        let mut server = server;
        server
            .process
            .wait_http_ok_with(&client, &readyz, Duration::from_secs(120))
            .await?;
        Ok(server)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin bearer token (group `system:masters`).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The CA certificate (PEM) that signed the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A kubeconfig file for the admin user.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The process (logs, signals).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// The audit log: one JSON event per request (policy level `Metadata`: user, verb, object,
    /// response code), written before the response is sent.
    pub fn audit_log(&self) -> &Path {
        &self.audit_log
    }

    /// An HTTP client that trusts the CA and sends the admin token.
    pub fn client(&self) -> Result<reqwest::Client> {
        let fail = |message: String| Error::Request {
            step: "build kube-apiserver client".into(),
            message,
        };
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
        let mut headers = reqwest::header::HeaderMap::new();
        let auth = format!("Bearer {}", self.token)
            .parse()
            .map_err(|e: reqwest::header::InvalidHeaderValue| fail(e.to_string()))?;
        headers.insert(reqwest::header::AUTHORIZATION, auth);
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .default_headers(headers)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| fail(e.to_string()))
    }
}

/// The name of the fake node [`KubeControlPlane`] registers (annotated for kwok).
pub const FAKE_NODE: &str = "kwok-node-0";

/// The rest of a control plane beside a [`KubeApiserver`]: kube-controller-manager (workload
/// controllers, garbage collector, service accounts), kube-scheduler, and kwok keeping one fake
/// node Ready and moving the Pods bound to it to Running/Ready (and deleted ones away) with its
/// stock "fast" stages. Nothing runs inside the Pods; their IPs are loopback addresses
/// (`127.N.0.0/16`), so a test can serve a Pod's port itself by binding the Pod's IP. Killed when
/// dropped.
#[derive(Debug)]
pub struct KubeControlPlane {
    controller_manager: Process,
    scheduler: Process,
    kwok: Process,
}

impl KubeControlPlane {
    /// Starts the three processes against `api`, registers [`FAKE_NODE`], and waits until a probe
    /// Pod is scheduled on it and Ready (proof that all three work), then deletes the probe.
    pub async fn start(api: &KubeApiserver) -> Result<Self> {
        let kubeconfig = api.kubeconfig().display().to_string();
        let mut cm = Command::new(tool_path(Tool::KubeControllerManager)?);
        cm.arg(format!("--kubeconfig={kubeconfig}"))
            .arg(format!("--authentication-kubeconfig={kubeconfig}"))
            .arg(format!("--authorization-kubeconfig={kubeconfig}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", free_port()))
            .arg("--leader-elect=false")
            .arg(format!(
                "--service-account-private-key-file={}",
                api.sa_key_file.display()
            ))
            .arg(format!("--root-ca-file={}", api.ca_file.display()))
            .arg("--use-service-account-credentials=false")
            // Quick reactions in tests; the defaults are tuned for large clusters.
            .arg("--concurrent-statefulset-syncs=10")
            .arg("--v=1");
        let controller_manager = Process::spawn("kube-controller-manager", cm)?;

        let mut sched = Command::new(tool_path(Tool::KubeScheduler)?);
        sched
            .arg(format!("--kubeconfig={kubeconfig}"))
            .arg(format!("--authentication-kubeconfig={kubeconfig}"))
            .arg(format!("--authorization-kubeconfig={kubeconfig}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", free_port()))
            .arg("--leader-elect=false")
            .arg("--v=1");
        let scheduler = Process::spawn("kube-scheduler", sched)?;

        // Pod IPs on loopback (127.N.0.1, .2, ...; N differs per plane): a test can play a Pod's
        // process by binding its IP, and the operator reaches it as it would a real Pod.
        let pod_cidr = format!("127.{}.0.0/16", 2 + free_port() % 250);
        let kwok_bin = tool_path(Tool::Kwok)?;
        let stages = kwok_bin.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut kw = Command::new(&kwok_bin);
        kw.arg(format!("--kubeconfig={kubeconfig}"))
            .arg("--manage-all-nodes=false")
            .arg("--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake")
            .arg(format!("--cidr={pod_cidr}"))
            .arg("--node-ip=127.0.0.1")
            .arg("--node-lease-duration-seconds=40")
            .arg(format!("--server-address=127.0.0.1:{}", free_port()));
        for stage in [
            "node-initialize.yaml",
            "pod-ready.yaml",
            "pod-complete.yaml",
            "pod-delete.yaml",
        ] {
            let file = stages.join(stage);
            if !file.is_file() {
                return Err(Error::MissingTool {
                    tool: "kwok",
                    detail: format!("stage file {} (install.sh copies it)", file.display()),
                });
            }
            kw.arg(format!("--config={}", file.display()));
        }
        let kwok = Process::spawn("kwok", kw)?;
        let mut plane = Self {
            controller_manager,
            scheduler,
            kwok,
        };

        let client = api.client()?;
        let base = api.url().to_string();
        let node = serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": FAKE_NODE,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {"kubernetes.io/hostname": FAKE_NODE, "kubernetes.io/os": "linux", "type": "kwok"}},
        });
        send(
            &client,
            reqwest::Method::POST,
            &format!("{base}/api/v1/nodes"),
            Some(&node),
            "register the fake node",
        )
        .await?;

        // A probe Pod: needs the default ServiceAccount (controller-manager), a binding
        // (scheduler) and a Ready status (kwok).
        let probe_url = format!("{base}/api/v1/namespaces/default/pods");
        let probe = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "strata-e2e-probe"},
            "spec": {"containers": [{"name": "probe", "image": "strata.invalid/probe"}]},
        });
        let mut last = String::from("no attempt yet");
        let start = std::time::Instant::now();
        let timeout = Duration::from_secs(120);
        loop {
            for p in [
                &mut plane.controller_manager,
                &mut plane.scheduler,
                &mut plane.kwok,
            ] {
                p.check_running()?;
            }
            if start.elapsed() > timeout {
                return Err(Error::NotReady {
                    name: "kube control plane".into(),
                    waited: timeout,
                    last,
                    log: format!(
                        "{}\n{}\n{}",
                        plane.controller_manager.log_tail(),
                        plane.scheduler.log_tail(),
                        plane.kwok.log_tail()
                    ),
                });
            }
            let got = send(
                &client,
                reqwest::Method::GET,
                &format!("{probe_url}/strata-e2e-probe"),
                None,
                "read the probe pod",
            )
            .await;
            match got {
                Ok(pod) => {
                    let ready = pod["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    });
                    if ready && pod["spec"]["nodeName"] == FAKE_NODE {
                        break;
                    }
                    last = format!("probe pod not ready yet: {}", pod["status"]);
                }
                Err(e) => {
                    last = e.to_string();
                    // Not created yet (or refused: the default ServiceAccount is not there yet).
                    if let Err(e) = send(
                        &client,
                        reqwest::Method::POST,
                        &probe_url,
                        Some(&probe),
                        "create the probe pod",
                    )
                    .await
                    {
                        last = e.to_string();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        send(
            &client,
            reqwest::Method::DELETE,
            &format!("{probe_url}/strata-e2e-probe"),
            None,
            "delete the probe pod",
        )
        .await?;
        Ok(plane)
    }

    /// kube-controller-manager (logs, signals).
    pub fn controller_manager(&mut self) -> &mut Process {
        &mut self.controller_manager
    }

    /// kube-scheduler (logs, signals).
    pub fn scheduler(&mut self) -> &mut Process {
        &mut self.scheduler
    }

    /// kwok (logs, signals).
    pub fn kwok(&mut self) -> &mut Process {
        &mut self.kwok
    }
}

/// One JSON request to the API server; a non-2xx answer is an error carrying the body.
async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&serde_json::Value>,
    step: &str,
) -> Result<serde_json::Value> {
    let fail = |message: String| Error::Request {
        step: step.to_string(),
        message,
    };
    let mut req = client.request(method, url);
    if let Some(body) = body {
        req = req.json(body);
    }
    let resp = req.send().await.map_err(|e| fail(e.to_string()))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| fail(e.to_string()))?;
    if !status.is_success() {
        return Err(fail(format!("HTTP {status}: {text}")));
    }
    serde_json::from_str(&text).map_err(|e| fail(format!("{e}: {text}")))
}
