//! Discovery for the ruler: query endpoints from file SD (`--query.sd-files`) and Alertmanagers
//! from DNS (`dns+` / `dnssrv+` prefixes on `--alertmanagers.url`). Both keep their result in a
//! shared [`UrlList`] that the querier and the notifier read on every use; a failed refresh keeps
//! the previous result.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use strata_runtime::discovery;
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// How often SD files are checked for changes (a `stat`, cheap) between full re-reads.
const CHANGE_CHECK: Duration = Duration::from_secs(1);
/// Default port of a `dns+` Alertmanager URL without one (Alertmanager's own default).
const ALERTMANAGER_PORT: u16 = 9093;

/// A list of base URLs shared between the discovery that writes it and the clients that read it.
#[derive(Debug, Clone, Default)]
pub struct UrlList(Arc<RwLock<Arc<Vec<String>>>>);

impl UrlList {
    /// A list holding `urls`.
    pub fn new(urls: Vec<String>) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(urls))))
    }

    /// The current URLs.
    pub fn get(&self) -> Arc<Vec<String>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the URLs.
    pub fn set(&self, urls: Vec<String>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(urls);
    }
}

/// Parses a Prometheus/Thanos file SD file (a YAML or JSON list of `{targets: [host:port, ...],
/// labels: {...}}`) into query base URLs: `http://host:port` (a target with a scheme is kept as
/// is). Labels are accepted and ignored, as Thanos does for query endpoints.
pub fn parse_sd_file(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    for t in discovery::file_sd_targets(text)? {
        let t = t.as_str();
        let url = if t.contains("://") {
            t.trim_end_matches('/').to_string()
        } else {
            format!("http://{t}")
        };
        let parsed = url::Url::parse(&url).map_err(|e| format!("target {t:?}: {e}"))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(format!("target {t:?} has no host"));
        }
        out.push(url);
    }
    Ok(out)
}

#[derive(Debug, Clone, Default)]
struct SdMetrics {
    failures: Counter,
    endpoints: Gauge,
}

/// `--query` plus the targets of `--query.sd-files`, kept in a [`UrlList`].
#[derive(Debug)]
pub struct QuerySd {
    static_urls: Vec<String>,
    patterns: Vec<String>,
    list: UrlList,
    /// The last good targets of every file seen.
    per_file: Mutex<BTreeMap<PathBuf, Vec<String>>>,
    /// Modification time and length of every file at the last read.
    stamps: Mutex<BTreeMap<PathBuf, (Option<SystemTime>, u64)>>,
    metrics: SdMetrics,
}

impl QuerySd {
    /// Discovery over `patterns` (globs) besides the static `urls`; files are read once here
    /// (a bad file is logged and counted, not fatal), so [`QuerySd::urls`] is filled at once.
    pub fn new(urls: Vec<String>, patterns: Vec<String>, registry: &mut Registry) -> Result<Self> {
        for p in &patterns {
            glob::Pattern::new(p)
                .map_err(|e| Error::Config(format!("--query.sd-files {p:?}: {e}")))?;
        }
        let metrics = SdMetrics::default();
        let sub = registry.sub_registry_with_prefix("strata_rule_query_sd");
        sub.register(
            "refresh_failures",
            "SD file reads or parses that failed (the file's previous targets are kept)",
            metrics.failures.clone(),
        );
        sub.register(
            "endpoints",
            "Query endpoints in use (--query plus SD file targets)",
            metrics.endpoints.clone(),
        );
        let sd = Self {
            list: UrlList::new(urls.clone()),
            static_urls: urls,
            patterns,
            per_file: Mutex::new(BTreeMap::new()),
            stamps: Mutex::new(BTreeMap::new()),
            metrics,
        };
        sd.refresh();
        Ok(sd)
    }

    /// The shared list the querier reads.
    pub fn urls(&self) -> UrlList {
        self.list.clone()
    }

    /// The files the patterns match now, sorted.
    fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for p in &self.patterns {
            match glob::glob(p) {
                Ok(paths) => out.extend(paths.filter_map(|r| r.ok())),
                Err(e) => tracing::warn!(pattern = %p, error = %e, "bad SD file pattern"),
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn stamp(path: &PathBuf) -> (Option<SystemTime>, u64) {
        std::fs::metadata(path)
            .map(|m| (m.modified().ok(), m.len()))
            .unwrap_or((None, 0))
    }

    /// Whether the set of files, or any file's modification time or size, changed since the
    /// last read.
    pub fn changed(&self) -> bool {
        let now: BTreeMap<PathBuf, (Option<SystemTime>, u64)> = self
            .files()
            .into_iter()
            .map(|f| {
                let s = Self::stamp(&f);
                (f, s)
            })
            .collect();
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) != now
    }

    /// Re-reads every file. A file that cannot be read or parsed keeps its previous targets (the
    /// error is logged and counted); a file no longer matched drops its targets.
    pub fn refresh(&self) {
        let files = self.files();
        let mut per_file = self.per_file.lock().unwrap_or_else(|p| p.into_inner());
        let mut stamps = BTreeMap::new();
        let mut next = BTreeMap::new();
        for f in files {
            stamps.insert(f.clone(), Self::stamp(&f));
            let parsed = std::fs::read_to_string(&f)
                .map_err(|e| e.to_string())
                .and_then(|t| parse_sd_file(&t));
            match parsed {
                Ok(urls) => {
                    next.insert(f, urls);
                }
                Err(e) => {
                    self.metrics.failures.inc();
                    tracing::error!(file = %f.display(), error = %e, "query SD file is bad; keeping its previous targets");
                    if let Some(old) = per_file.get(&f) {
                        next.insert(f, old.clone());
                    }
                }
            }
        }
        *per_file = next;
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = stamps;
        let mut urls = self.static_urls.clone();
        for u in per_file.values().flatten() {
            if !urls.contains(u) {
                urls.push(u.clone());
            }
        }
        self.metrics.endpoints.set(urls.len() as i64);
        if *self.list.get() != urls {
            tracing::info!(endpoints = ?urls, "query endpoints changed");
            self.list.set(urls);
        }
    }

    /// Re-reads the files every `interval`, and sooner when a `stat` every second sees a change,
    /// until `stop`.
    pub async fn run(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        if self.patterns.is_empty() {
            return;
        }
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(CHANGE_CHECK.min(interval)) => {}
            }
            let sd = self.clone();
            let due = last.elapsed() >= interval;
            // File I/O off the async workers.
            let _ = tokio::task::spawn_blocking(move || {
                if due || sd.changed() {
                    sd.refresh();
                }
            })
            .await;
            if due {
                last = tokio::time::Instant::now();
            }
        }
    }
}

/// One `--alertmanagers.url` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertmanagerSpec {
    /// A plain base URL, used as given.
    Static(String),
    /// `dns+[scheme://]host[:port][/path]`: every A/AAAA address of `host`, with `port`
    /// (default 9093).
    Dns {
        /// `http` or `https`.
        scheme: String,
        /// The name to resolve.
        host: String,
        /// The port.
        port: u16,
        /// Path prefix of the API (empty for none).
        path: String,
    },
    /// `dnssrv+[scheme://]name[:port][/path]`: the SRV targets of `name` (their A/AAAA
    /// addresses), with the SRV port unless `port` is given.
    DnsSrv {
        /// `http` or `https`.
        scheme: String,
        /// The SRV name, e.g. `_web._tcp.alertmanager.monitoring.svc`.
        name: String,
        /// A port overriding the SRV records' ports.
        port: Option<u16>,
        /// Path prefix of the API (empty for none).
        path: String,
    },
}

impl AlertmanagerSpec {
    /// Parses a value; a value without a scheme gets `http://`.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |why: String| Error::Config(format!("--alertmanagers.url {spec:?}: {why}"));
        let (kind, rest) = if let Some(r) = spec.strip_prefix("dnssrv+") {
            ("dnssrv", r)
        } else if let Some(r) = spec.strip_prefix("dns+") {
            ("dns", r)
        } else {
            ("", spec)
        };
        let with_scheme = if rest.contains("://") {
            rest.to_string()
        } else {
            format!("http://{rest}")
        };
        let url = url::Url::parse(&with_scheme).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!(
                "scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host".into()))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_string();
        let scheme = url.scheme().to_string();
        let path = url.path().trim_end_matches('/').to_string();
        Ok(match kind {
            "dns" => AlertmanagerSpec::Dns {
                scheme,
                host,
                port: url.port().unwrap_or(ALERTMANAGER_PORT),
                path,
            },
            "dnssrv" => AlertmanagerSpec::DnsSrv {
                scheme,
                name: host,
                port: url.port(),
                path,
            },
            _ => AlertmanagerSpec::Static(with_scheme.trim_end_matches('/').to_string()),
        })
    }

    /// The base URLs this value stands for now. SRV questions go to `dns_server` when given,
    /// else to the system's resolver; A/AAAA lookups go through the system's resolver.
    pub async fn resolve(&self, dns_server: Option<SocketAddr>) -> Result<Vec<String>> {
        let err = |why: String| Error::Notifier(format!("resolve {self}: {why}"));
        let (scheme, path, found) = match self {
            AlertmanagerSpec::Static(u) => return Ok(vec![u.clone()]),
            AlertmanagerSpec::Dns {
                scheme,
                host,
                port,
                path,
            } => (scheme, path, discovery::lookup_host(host, *port).await),
            AlertmanagerSpec::DnsSrv {
                scheme,
                name,
                port,
                path,
            } => (
                scheme,
                path,
                discovery::lookup_srv(name, *port, dns_server).await,
            ),
        };
        let mut out: Vec<String> = found
            .map_err(err)?
            .into_iter()
            .map(|a| format!("{scheme}://{a}{path}"))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl std::fmt::Display for AlertmanagerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AlertmanagerSpec::Static(u) => write!(f, "{u}"),
            AlertmanagerSpec::Dns {
                scheme,
                host,
                port,
                path,
            } => write!(f, "dns+{scheme}://{host}:{port}{path}"),
            AlertmanagerSpec::DnsSrv {
                scheme, name, path, ..
            } => write!(f, "dnssrv+{scheme}://{name}{path}"),
        }
    }
}

/// Alertmanager discovery: resolves every spec now and then every `interval`, writing the
/// union into a [`UrlList`]; a spec whose lookup fails keeps its previous addresses.
#[derive(Debug)]
pub struct AlertmanagerSd {
    specs: Vec<AlertmanagerSpec>,
    dns_server: Option<SocketAddr>,
    list: UrlList,
    last: Mutex<Vec<Vec<String>>>,
    failures: Counter,
}

impl AlertmanagerSd {
    /// Parses the `--alertmanagers.url` values; static URLs are in [`AlertmanagerSd::urls`] at
    /// once, DNS ones after the first [`AlertmanagerSd::refresh`].
    pub fn new(
        urls: &[String],
        dns_server: Option<SocketAddr>,
        registry: &mut Registry,
    ) -> Result<Self> {
        let specs = urls
            .iter()
            .map(|u| AlertmanagerSpec::parse(u))
            .collect::<Result<Vec<_>>>()?;
        let last: Vec<Vec<String>> = specs
            .iter()
            .map(|s| match s {
                AlertmanagerSpec::Static(u) => vec![u.clone()],
                _ => Vec::new(),
            })
            .collect();
        let failures = Counter::default();
        registry.register(
            "strata_rule_alertmanager_dns_failures",
            "Alertmanager DNS lookups that failed (the previous addresses are kept)",
            failures.clone(),
        );
        Ok(Self {
            list: UrlList::new(last.iter().flatten().cloned().collect()),
            specs,
            dns_server,
            last: Mutex::new(last),
            failures,
        })
    }

    /// The resolved Alertmanager base URLs.
    pub fn urls(&self) -> UrlList {
        self.list.clone()
    }

    /// Whether any value needs DNS.
    pub fn needs_dns(&self) -> bool {
        self.specs
            .iter()
            .any(|s| !matches!(s, AlertmanagerSpec::Static(_)))
    }

    /// Resolves every value again.
    pub async fn refresh(&self) {
        let mut results = Vec::with_capacity(self.specs.len());
        for s in &self.specs {
            results.push(s.resolve(self.dns_server).await);
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(urls) => last[i] = urls,
                Err(e) => {
                    self.failures.inc();
                    tracing::warn!(error = %e, "Alertmanager DNS lookup failed; keeping the previous addresses");
                }
            }
        }
        let mut urls: Vec<String> = last.iter().flatten().cloned().collect();
        urls.sort();
        urls.dedup();
        if *self.list.get() != urls {
            tracing::info!(alertmanagers = ?urls, "Alertmanagers changed");
            self.list.set(urls);
        }
    }

    /// Resolves now and every `interval` until `stop` (returns at once without DNS values).
    pub async fn run(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        if !self.needs_dns() {
            return;
        }
        loop {
            self.refresh().await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
