//! The set of StoreAPI endpoints the querier reads: static addresses, DNS (`dns+host:port`,
//! `dnssrv+_grpc._tcp.name`) and file service discovery, resolved and health-checked through
//! `thanos.info.Info/Info` in the background. Only healthy endpoints are queried.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_promql::Labels;
use strata_runtime::discovery;
use strata_storeapi::pb::info::InfoRequest;
use strata_storeapi::pb::thanos::Label;
use strata_storeapi::{ClientOptions, Clients};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::StoreStatus;

/// Errors of endpoint configuration and discovery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// An `--endpoint` value is not `host:port`, `dns+host:port` or `dnssrv+name`.
    #[error("endpoint {spec:?}: {reason}")]
    BadSpec {
        /// The value given.
        spec: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file SD file could not be read.
    #[error("read endpoint sd file {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A file SD file is not Prometheus file_sd YAML/JSON.
    #[error("parse endpoint sd file {path}: {reason}")]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// A DNS lookup failed.
    #[error("resolve {spec:?}: {reason}")]
    Resolve {
        /// The endpoint value being resolved.
        spec: String,
        /// What the resolver said.
        reason: String,
    },
}

/// One `--endpoint` value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum EndpointSpec {
    /// `host:port`, used as given.
    Static(String),
    /// `dns+host:port`: every A/AAAA address of `host`, with `port`.
    Dns {
        /// The name to resolve.
        host: String,
        /// The port.
        port: u16,
    },
    /// `dnssrv+name` / `dnssrv+name:port`: the SRV targets of `name` (their A/AAAA addresses),
    /// with the SRV port or `port` when given.
    DnsSrv {
        /// The SRV name, e.g. `_grpc._tcp.store.monitoring.svc`.
        name: String,
        /// A port overriding the SRV records' ports.
        port: Option<u16>,
    },
}

fn split_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some((host, port))
}

impl EndpointSpec {
    /// Parses an endpoint value.
    pub fn parse(spec: &str) -> Result<Self, EndpointError> {
        let bad = |reason| EndpointError::BadSpec {
            spec: spec.to_owned(),
            reason,
        };
        if let Some(rest) = spec.strip_prefix("dnssrv+") {
            if rest.is_empty() {
                return Err(bad("empty SRV name"));
            }
            return Ok(match split_port(rest) {
                Some((name, port)) => EndpointSpec::DnsSrv {
                    name: name.to_owned(),
                    port: Some(port),
                },
                None if rest.contains(':') => return Err(bad("port is not a number")),
                None => EndpointSpec::DnsSrv {
                    name: rest.to_owned(),
                    port: None,
                },
            });
        }
        if let Some(rest) = spec.strip_prefix("dns+") {
            let (host, port) = split_port(rest).ok_or_else(|| bad("need dns+host:port"))?;
            return Ok(EndpointSpec::Dns {
                host: host.to_owned(),
                port,
            });
        }
        if spec.contains('+') && !spec.contains("://") {
            return Err(bad("unknown discovery prefix (dns+, dnssrv+)"));
        }
        if spec.contains("://") || split_port(spec).is_some() {
            Ok(EndpointSpec::Static(spec.to_owned()))
        } else {
            Err(bad("need host:port"))
        }
    }

    /// The addresses this value stands for now (SRV through the system's resolver).
    pub async fn resolve(&self) -> Result<Vec<String>, EndpointError> {
        self.resolve_with(None).await
    }

    /// [`resolve`](Self::resolve), asking SRV questions to `dns_server` when given. A/AAAA
    /// lookups (also of SRV targets) always go through the system resolver.
    pub async fn resolve_with(
        &self,
        dns_server: Option<SocketAddr>,
    ) -> Result<Vec<String>, EndpointError> {
        let found = match self {
            EndpointSpec::Static(a) => return Ok(vec![a.clone()]),
            EndpointSpec::Dns { host, port } => {
                discovery::lookup_host(host, *port)
                    .await
                    .map_err(|reason| EndpointError::Resolve {
                        spec: format!("{self:?}"),
                        reason,
                    })?
            }
            EndpointSpec::DnsSrv { name, port } => discovery::lookup_srv(name, *port, dns_server)
                .await
                .map_err(|reason| EndpointError::Resolve {
                    spec: format!("dnssrv+{name}"),
                    reason,
                })?,
        };
        Ok(found.into_iter().map(|a| a.to_string()).collect())
    }
}

/// Parses a Prometheus file_sd file (YAML or JSON: a list of `{targets: [...], labels: {...}}`)
/// into its targets (labels are ignored, as Thanos does).
pub fn parse_sd_file(text: &str) -> Result<Vec<String>, String> {
    discovery::file_sd_targets(text)
}

/// Settings of an [`EndpointSet`].
#[derive(Debug, Clone)]
pub struct EndpointSetConfig {
    /// `--endpoint` values (`host:port`, `dns+host:port`, `dnssrv+name`).
    pub endpoints: Vec<String>,
    /// `--endpoint.sd-files`: file_sd files re-read every `sd_interval`.
    pub sd_files: Vec<PathBuf>,
    /// How often SD files are re-read and DNS names resolved again.
    pub sd_interval: Duration,
    /// How often every endpoint's Info API is called (Thanos: 5 s).
    pub health_interval: Duration,
    /// Timeout of one Info call (and of connecting).
    pub health_timeout: Duration,
    /// gRPC client settings (TLS, gzip).
    pub client: ClientOptions,
    /// A DNS server for SRV lookups instead of the system's (`/etc/resolv.conf`).
    pub dns_server: Option<SocketAddr>,
}

impl Default for EndpointSetConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            sd_files: Vec::new(),
            sd_interval: Duration::from_secs(30),
            health_interval: Duration::from_secs(5),
            health_timeout: Duration::from_secs(5),
            client: ClientOptions::default(),
            dns_server: None,
        }
    }
}

/// What the last health check of an endpoint found.
#[derive(Debug, Clone, Default)]
pub struct EndpointInfo {
    /// Whether the last Info call succeeded.
    pub healthy: bool,
    /// The last error.
    pub last_error: Option<String>,
    /// Last successful check, Unix ms (0 = never).
    pub last_check_ms: i64,
    /// Component type (`sidecar`, `store`, …).
    pub component_type: Option<String>,
    /// External label sets, each sorted by name.
    pub label_sets: Vec<Vec<Label>>,
    /// Advertised data range, ms.
    pub min_time: i64,
    /// Advertised data range, ms.
    pub max_time: i64,
    /// Whether Info advertises the `thanos.Metadata` API (`metric_metadata`).
    pub metric_metadata: bool,
}

/// One StoreAPI endpoint: its address, clients and last health.
#[derive(Debug)]
pub struct Endpoint {
    addr: String,
    clients: Mutex<Option<Clients>>,
    info: RwLock<EndpointInfo>,
}

impl Endpoint {
    /// A not yet checked (unhealthy) endpoint.
    pub fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            clients: Mutex::new(None),
            info: RwLock::new(EndpointInfo {
                last_error: Some("not checked yet".into()),
                min_time: i64::MIN,
                max_time: i64::MAX,
                ..Default::default()
            }),
        }
    }

    /// The address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A copy of the last health-check result.
    pub fn info(&self) -> EndpointInfo {
        self.info.read().map(|i| i.clone()).unwrap_or_default()
    }

    /// Sets the health info directly (for tests and for sources that know it).
    pub fn set_info(&self, info: EndpointInfo) {
        if let Ok(mut i) = self.info.write() {
            *i = info;
        }
    }

    /// Clients of this endpoint, connecting when there are none.
    pub async fn clients(&self, opts: &ClientOptions) -> Result<Clients, String> {
        if let Some(c) = self.clients.lock().ok().and_then(|c| c.clone()) {
            return Ok(c);
        }
        let c = strata_storeapi::connect(&self.addr, opts)
            .await
            .map_err(|e| error_chain(&e))?;
        if let Ok(mut slot) = self.clients.lock() {
            *slot = Some(c.clone());
        }
        Ok(c)
    }

    fn forget_clients(&self) {
        if let Ok(mut slot) = self.clients.lock() {
            *slot = None;
        }
    }

    /// Calls the Info API once and records the outcome.
    pub async fn check(&self, opts: &ClientOptions, timeout: Duration) {
        let res = tokio::time::timeout(timeout, async {
            let mut c = self.clients(opts).await?;
            c.info
                .info(InfoRequest {})
                .await
                .map(|r| r.into_inner())
                .map_err(|s| format!("rpc error: code = {:?} desc = {}", s.code(), s.message()))
        })
        .instrument(tracing::debug_span!("info", endpoint = %self.addr))
        .await
        .unwrap_or_else(|_| Err(format!("info call timed out after {timeout:?}")));
        let mut info = self.info();
        match res {
            Ok(r) => {
                info.healthy = true;
                info.last_error = None;
                info.last_check_ms = now_ms();
                info.component_type = Some(r.component_type).filter(|c| !c.is_empty());
                info.metric_metadata = r.metric_metadata.is_some();
                info.label_sets = r
                    .label_sets
                    .into_iter()
                    .map(|s| {
                        let mut l = s.labels;
                        l.sort_by(|a, b| a.name.cmp(&b.name));
                        l
                    })
                    .collect();
                match r.store {
                    Some(s) => {
                        info.min_time = s.min_time;
                        info.max_time = s.max_time;
                    }
                    None => {
                        // Not a store (e.g. rules only): nothing to query.
                        info.min_time = i64::MAX;
                        info.max_time = i64::MIN;
                    }
                }
            }
            Err(e) => {
                if info.healthy {
                    tracing::warn!(endpoint = %self.addr, error = %e, "endpoint unhealthy");
                }
                info.healthy = false;
                info.last_error = Some(e);
                self.forget_clients();
            }
        }
        self.set_info(info);
    }

    /// The status line `/api/v1/stores` shows.
    pub fn status(&self) -> StoreStatus {
        let i = self.info();
        StoreStatus {
            name: self.addr.clone(),
            component_type: i.component_type,
            healthy: i.healthy,
            last_error: i.last_error,
            last_check_ms: i.last_check_ms,
            label_sets: i
                .label_sets
                .iter()
                .map(|s| Labels::new(s.iter().map(|l| (l.name.clone(), l.value.clone()))))
                .collect(),
            min_time: i.min_time,
            max_time: i.max_time,
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let m = x.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = x.source();
    }
    s
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug)]
struct Inner {
    cfg: EndpointSetConfig,
    specs: Vec<EndpointSpec>,
    endpoints: RwLock<BTreeMap<String, Arc<Endpoint>>>,
    /// Last good target list per SD file.
    sd_last: Mutex<BTreeMap<PathBuf, Vec<String>>>,
    /// Last good addresses per DNS spec.
    dns_last: Mutex<BTreeMap<EndpointSpec, Vec<String>>>,
}

#[derive(Debug)]
struct AbortOnDrop(Mutex<Option<JoinHandle<()>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Ok(mut h) = self.0.lock()
            && let Some(h) = h.take()
        {
            h.abort();
        }
    }
}

/// The endpoints of a querier, kept resolved and health-checked. Cheap to clone; the background
/// task stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct EndpointSet {
    inner: Arc<Inner>,
    task: Arc<AbortOnDrop>,
}

impl EndpointSet {
    /// Checks the configuration (every `--endpoint` value parses); discovers nothing yet.
    pub fn new(cfg: EndpointSetConfig) -> Result<Self, EndpointError> {
        let specs = cfg
            .endpoints
            .iter()
            .map(|s| EndpointSpec::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                specs,
                endpoints: RwLock::new(BTreeMap::new()),
                sd_last: Mutex::new(BTreeMap::new()),
                dns_last: Mutex::new(BTreeMap::new()),
            }),
            task: Arc::new(AbortOnDrop(Mutex::new(None))),
        })
    }

    /// The client settings stores are called with.
    pub fn client_options(&self) -> &ClientOptions {
        &self.inner.cfg.client
    }

    /// Discovers and checks once, then keeps doing so in a background task (discovery every
    /// `sd_interval`, health every `health_interval`). Must run inside a Tokio runtime.
    pub async fn start(&self) {
        self.refresh().await;
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let (health, sd) = (self.inner.cfg.health_interval, self.inner.cfg.sd_interval);
        let handle = tokio::spawn(async move {
            let mut health_tick = tokio::time::interval(health);
            let mut sd_tick = tokio::time::interval(sd);
            health_tick.tick().await;
            sd_tick.tick().await;
            loop {
                let discover = tokio::select! {
                    _ = health_tick.tick() => false,
                    _ = sd_tick.tick() => true,
                };
                let Some(inner) = weak.upgrade() else { return };
                if discover {
                    inner.discover().await;
                }
                inner.check_all().await;
            }
        });
        if let Ok(mut t) = self.task.0.lock() {
            if let Some(old) = t.take() {
                old.abort();
            }
            *t = Some(handle);
        }
    }

    /// Resolves every endpoint source and health-checks every endpoint once.
    pub async fn refresh(&self) {
        self.inner.discover().await;
        self.inner.check_all().await;
    }

    /// Every known endpoint.
    pub fn all(&self) -> Vec<Arc<Endpoint>> {
        self.inner
            .endpoints
            .read()
            .map(|e| e.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The endpoints whose last health check succeeded.
    pub fn healthy(&self) -> Vec<Arc<Endpoint>> {
        self.all()
            .into_iter()
            .filter(|e| e.info().healthy)
            .collect()
    }

    /// Status of every endpoint, sorted by address.
    pub fn statuses(&self) -> Vec<StoreStatus> {
        self.all().iter().map(|e| e.status()).collect()
    }
}

impl Inner {
    async fn discover(&self) {
        let mut addrs: Vec<String> = Vec::new();
        let mut specs = self.specs.clone();
        for path in &self.cfg.sd_files {
            let targets = match read_sd_file(path).await {
                Ok(t) => {
                    if let Ok(mut last) = self.sd_last.lock() {
                        last.insert(path.clone(), t.clone());
                    }
                    t
                }
                Err(e) => {
                    tracing::warn!(error = %e, "keeping the last good endpoint list of the sd file");
                    self.sd_last
                        .lock()
                        .ok()
                        .and_then(|l| l.get(path).cloned())
                        .unwrap_or_default()
                }
            };
            for t in targets {
                match EndpointSpec::parse(&t) {
                    Ok(s) => specs.push(s),
                    Err(e) => tracing::warn!(file = %path.display(), error = %e, "skipping target"),
                }
            }
        }
        for spec in specs {
            match spec.resolve_with(self.cfg.dns_server).await {
                Ok(a) => {
                    if !matches!(spec, EndpointSpec::Static(_))
                        && let Ok(mut last) = self.dns_last.lock()
                    {
                        last.insert(spec.clone(), a.clone());
                    }
                    addrs.extend(a);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "keeping the last resolved addresses");
                    if let Some(a) = self
                        .dns_last
                        .lock()
                        .ok()
                        .and_then(|l| l.get(&spec).cloned())
                    {
                        addrs.extend(a);
                    }
                }
            }
        }
        if let Ok(mut eps) = self.endpoints.write() {
            eps.retain(|a, _| addrs.contains(a));
            for a in addrs {
                eps.entry(a.clone())
                    .or_insert_with(|| Arc::new(Endpoint::new(&a)));
            }
        }
    }

    async fn check_all(&self) {
        let eps: Vec<Arc<Endpoint>> = self
            .endpoints
            .read()
            .map(|e| e.values().cloned().collect())
            .unwrap_or_default();
        let checks = eps
            .iter()
            .map(|e| e.check(&self.cfg.client, self.cfg.health_timeout));
        futures::future::join_all(checks).await;
    }
}

async fn read_sd_file(path: &PathBuf) -> Result<Vec<String>, EndpointError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| EndpointError::ReadFile {
            path: path.clone(),
            source,
        })?;
    parse_sd_file(&text).map_err(|reason| EndpointError::ParseFile {
        path: path.clone(),
        reason,
    })
}

#[cfg(test)]
mod tests;
