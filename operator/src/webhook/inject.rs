//! Sidecar injection as a pure function: a Pod, its namespace's labels and the `MetricsCluster`s
//! in view go in; an RFC 6902 patch adding the `strata-sidecar` container and admission warnings
//! come out. No I/O here; the webhook server gathers the inputs.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, HTTPGetAction, KeyToPath, Pod, Probe,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};
use serde_json::Value;

use crate::crd::MetricsCluster;
use crate::desired::{GRPC_PORT, HTTP_PORT, OBJSTORE_DIR, image_of};

/// Name of the injected container; its presence makes injection a no-op.
pub const SIDECAR_CONTAINER: &str = "strata-sidecar";
/// Name of the Pod volume holding the objstore Secret.
pub const OBJSTORE_VOLUME: &str = "strata-sidecar-objstore";
/// Pod annotation: `"false"` opts the pod out of injection.
pub const INJECT_ANNOTATION: &str = "strata.dev/inject";
/// Pod annotation naming the Prometheus container when the defaults do not find it.
pub const PROMETHEUS_CONTAINER_ANNOTATION: &str = "strata.dev/prometheus-container";
/// Pod annotation giving the TSDB directory (absolute) when the flags do not tell.
pub const TSDB_PATH_ANNOTATION: &str = "strata.dev/tsdb-path";
/// Annotation the webhook adds: `<namespace>/<name>` of the `MetricsCluster` that injected it.
pub const INJECTED_BY_ANNOTATION: &str = "strata.dev/sidecar-injected-by";
/// The working directory of the official Prometheus image, used for a relative TSDB path when the
/// container sets no `workingDir`.
pub const PROMETHEUS_IMAGE_WORKDIR: &str = "/prometheus";
/// Prometheus's own default `--storage.tsdb.path`.
const DEFAULT_TSDB_PATH: &str = "data/";
/// The file the sidecar's shipper writes into the TSDB directory (`strata_shipper::SHIPPER_META_FILENAME`).
const SHIPPER_META_FILE: &str = "thanos.shipper.json";
/// Prometheus's default listen port.
const DEFAULT_PROMETHEUS_PORT: i32 = 9090;
/// Prometheus's default `--storage.tsdb.min-block-duration`.
const DEFAULT_MIN_BLOCK: &str = "2h";

/// What admission does with one Pod.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Injection {
    /// The patch to return; `None` admits the pod unchanged.
    pub patch: Option<Patch>,
    /// Admission warnings for the client that created the pod.
    pub warnings: Vec<String>,
    /// `<namespace>/<name>` of the `MetricsCluster` whose sidecar was injected.
    pub cluster: Option<String>,
}

impl Injection {
    fn skip() -> Self {
        Self::default()
    }

    fn warn(message: String) -> Self {
        Self {
            warnings: vec![message],
            ..Self::default()
        }
    }
}

/// The Pod's surroundings: its namespace, that namespace's labels, the operator's default image.
#[derive(Debug, Clone, Copy)]
pub struct PodContext<'a> {
    /// The Pod's namespace.
    pub namespace: &'a str,
    /// Labels of that Namespace object.
    pub namespace_labels: &'a BTreeMap<String, String>,
}

/// Decides whether `pod` gets a sidecar from one of `clusters` and builds the patch.
///
/// Never fails: a pod that cannot be handled is admitted unchanged, with a warning saying why.
pub fn inject(pod: &Pod, ctx: PodContext<'_>, clusters: &[MetricsCluster]) -> Injection {
    let annotations = pod.annotations();
    if annotations
        .get(INJECT_ANNOTATION)
        .is_some_and(|v| v.eq_ignore_ascii_case("false"))
    {
        return Injection::skip();
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Injection::skip();
    };
    if spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == SIDECAR_CONTAINER)
    {
        return Injection::skip();
    }
    let mut selecting: Vec<&MetricsCluster> = clusters
        .iter()
        .filter(|mc| selects(mc, pod.labels(), ctx))
        .collect();
    selecting.sort_by_key(|mc| (mc.namespace().unwrap_or_default(), mc.name_any()));
    let Some(mc) = selecting.first().copied() else {
        return Injection::skip();
    };
    let cluster_id = format!("{}/{}", mc.namespace().unwrap_or_default(), mc.name_any());
    let mut warnings = Vec::new();
    if selecting.len() > 1 {
        let others: Vec<String> = selecting[1..]
            .iter()
            .map(|m| format!("{}/{}", m.namespace().unwrap_or_default(), m.name_any()))
            .collect();
        warnings.push(format!(
            "strata: pod is selected by several MetricsClusters; injected {cluster_id}'s sidecar, ignored {}",
            others.join(", ")
        ));
    }

    let Some(prom) = prometheus_container(&spec.containers, annotations) else {
        let hint = match annotations.get(PROMETHEUS_CONTAINER_ANNOTATION) {
            Some(name) => {
                format!("annotation {PROMETHEUS_CONTAINER_ANNOTATION}={name} names no container")
            }
            None => format!("set the {PROMETHEUS_CONTAINER_ANNOTATION} annotation"),
        };
        return Injection::warn(format!(
            "strata: no sidecar injected: {cluster_id} selects this pod but no Prometheus container was found ({hint})"
        ));
    };
    let flags = Flags::of(prom);

    let (tsdb, mut path_warnings) = tsdb_path(prom, &flags, annotations);
    warnings.append(&mut path_warnings);
    let Some(mount) = mount_holding(prom, &tsdb) else {
        warnings.push(format!(
            "strata: no sidecar injected: the TSDB directory {} of container {:?} is on no volume, so a sidecar cannot read its blocks; mount a volume there",
            tsdb.display(),
            prom.name
        ));
        return Injection {
            warnings,
            ..Injection::default()
        };
    };
    warnings.extend(compaction_warning(&flags, &tsdb));
    if ctx.namespace != mc.namespace().unwrap_or_default() {
        warnings.push(format!(
            "strata: the sidecar reads Secret {:?} in namespace {:?}; copy it there from {cluster_id}'s namespace",
            mc.spec.object_storage.secret_ref.name, ctx.namespace
        ));
    }

    let secret = &mc.spec.object_storage.secret_ref;
    let sidecar = sidecar_container(
        mc,
        prom,
        spec.security_context.as_ref(),
        &flags,
        &tsdb,
        mount,
    );
    let objstore = Volume {
        name: OBJSTORE_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.name.clone()),
            items: Some(vec![KeyToPath {
                key: secret.key.clone(),
                path: secret.key.clone(),
                mode: None,
            }]),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };

    let mut ops = Vec::new();
    ops.push(add(&["spec", "containers", "-"], to_value(&sidecar)));
    if spec.volumes.is_some() {
        ops.push(add(&["spec", "volumes", "-"], to_value(&objstore)));
    } else {
        ops.push(add(
            &["spec", "volumes"],
            Value::Array(vec![to_value(&objstore)]),
        ));
    }
    if pod.metadata.annotations.is_some() {
        ops.push(add(
            &["metadata", "annotations", INJECTED_BY_ANNOTATION],
            Value::String(cluster_id.clone()),
        ));
    } else {
        ops.push(add(
            &["metadata", "annotations"],
            serde_json::json!({ INJECTED_BY_ANNOTATION: cluster_id }),
        ));
    }
    Injection {
        patch: Some(Patch(ops)),
        warnings,
        cluster: Some(cluster_id),
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    // Serializing k8s-openapi types to a Value cannot fail (no maps with non-string keys).
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// An `add` operation at the path made of `tokens` (escaped as RFC 6901 asks).
fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}

/// Whether `mc` selects a pod with `labels` in `ctx.namespace`. An empty pod selector selects no
/// pod: injecting into every pod of a namespace is never what a cluster means.
pub fn selects(
    mc: &MetricsCluster,
    labels: &BTreeMap<String, String>,
    ctx: PodContext<'_>,
) -> bool {
    let sidecar = &mc.spec.sidecar;
    if is_empty(&sidecar.selector) || !matches(&sidecar.selector, labels) {
        return false;
    }
    match &sidecar.namespace_selector {
        None => mc.namespace().as_deref() == Some(ctx.namespace),
        Some(sel) => matches(sel, ctx.namespace_labels),
    }
}

fn is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && sel.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

fn matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    // A selector the API server would not accept (bad operator) selects nothing.
    Selector::try_from(sel.clone()).is_ok_and(|s| s.matches(labels))
}

/// The Prometheus container: the annotation's, else one named `prometheus`, else one given
/// `--storage.tsdb.path`, else one whose image is Prometheus (not its config reloader).
fn prometheus_container<'a>(
    containers: &'a [Container],
    annotations: &BTreeMap<String, String>,
) -> Option<&'a Container> {
    if let Some(name) = annotations.get(PROMETHEUS_CONTAINER_ANNOTATION) {
        return containers.iter().find(|c| &c.name == name);
    }
    containers
        .iter()
        .find(|c| c.name == "prometheus")
        .or_else(|| {
            containers
                .iter()
                .find(|c| Flags::of(c).get("storage.tsdb.path").is_some())
        })
        .or_else(|| {
            containers.iter().find(|c| {
                let image = c.image.as_deref().unwrap_or_default();
                image.contains("prometheus") && !image.contains("reloader")
            })
        })
}

/// A container's `--flag=value` / `--flag value` arguments (command and args together).
#[derive(Debug, Default)]
struct Flags(BTreeMap<String, String>);

impl Flags {
    fn of(c: &Container) -> Self {
        let words: Vec<&String> = c
            .command
            .iter()
            .flatten()
            .chain(c.args.iter().flatten())
            .collect();
        let mut flags = BTreeMap::new();
        let mut i = 0;
        while i < words.len() {
            if let Some(flag) = words[i]
                .strip_prefix("--")
                .or_else(|| words[i].strip_prefix('-'))
            {
                match flag.split_once('=') {
                    Some((k, v)) => {
                        flags.insert(k.to_string(), v.to_string());
                    }
                    None => {
                        let value = words.get(i + 1).filter(|w| !w.starts_with('-'));
                        if let Some(v) = value {
                            flags.insert(flag.to_string(), v.to_string());
                            i += 1;
                        } else {
                            flags.insert(flag.to_string(), String::new());
                        }
                    }
                }
            }
            i += 1;
        }
        Self(flags)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// The TSDB directory as an absolute, normalized path, and warnings about how it was guessed.
fn tsdb_path(
    prom: &Container,
    flags: &Flags,
    annotations: &BTreeMap<String, String>,
) -> (PathBuf, Vec<String>) {
    let mut warnings = Vec::new();
    let given = annotations
        .get(TSDB_PATH_ANNOTATION)
        .map(String::as_str)
        .or_else(|| flags.get("storage.tsdb.path").filter(|p| !p.is_empty()))
        .unwrap_or(DEFAULT_TSDB_PATH);
    let path = Path::new(given);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let base = match prom
            .working_dir
            .as_deref()
            .filter(|d| Path::new(d).is_absolute())
        {
            Some(dir) => dir.to_string(),
            None => {
                warnings.push(format!(
                    "strata: TSDB path {given:?} is relative and container {:?} sets no workingDir; assumed {PROMETHEUS_IMAGE_WORKDIR} (the Prometheus image's); set the {TSDB_PATH_ANNOTATION} annotation if that is wrong",
                    prom.name
                ));
                PROMETHEUS_IMAGE_WORKDIR.to_string()
            }
        };
        Path::new(&base).join(path)
    };
    (normalize(&absolute), warnings)
}

/// Removes `.` and resolves `..` lexically, as a path inside a container has no symlinks we know of.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The volume mount of `prom` whose path holds `tsdb` (the deepest one).
fn mount_holding<'a>(prom: &'a Container, tsdb: &Path) -> Option<&'a VolumeMount> {
    prom.volume_mounts
        .iter()
        .flatten()
        .filter(|m| tsdb.starts_with(normalize(Path::new(&m.mount_path))))
        .max_by_key(|m| normalize(Path::new(&m.mount_path)).components().count())
}

/// `http://localhost:<port><prefix>` of the Prometheus container.
fn prometheus_url(prom: &Container, flags: &Flags) -> String {
    let port = flags
        .get("web.listen-address")
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse::<i32>().ok())
        .or_else(|| {
            let ports = prom.ports.iter().flatten();
            let named = ports
                .clone()
                .find(|p| matches!(p.name.as_deref(), Some("web" | "http" | "http-web")));
            named
                .or_else(|| ports.clone().next())
                .map(|p| p.container_port)
        })
        .unwrap_or(DEFAULT_PROMETHEUS_PORT);
    let prefix = flags
        .get("web.route-prefix")
        .map(|p| p.trim_end_matches('/'))
        .filter(|p| !p.is_empty())
        .map(|p| {
            if p.starts_with('/') {
                p.to_string()
            } else {
                format!("/{p}")
            }
        })
        .unwrap_or_default();
    format!("http://localhost:{port}{prefix}")
}

/// A warning when Prometheus compacts blocks locally without holding back unshipped ones.
fn compaction_warning(flags: &Flags, tsdb: &Path) -> Option<String> {
    let shipper_file = tsdb.join(SHIPPER_META_FILE);
    if let Some(delay) = flags
        .get("storage.tsdb.delay-compact-file.path")
        .filter(|p| !p.is_empty())
    {
        if Path::new(delay).is_absolute() {
            return None;
        }
        return Some(format!(
            "strata: --storage.tsdb.delay-compact-file.path={delay} is relative; the sidecar will refuse to ship: use {}",
            shipper_file.display()
        ));
    }
    let min = flags
        .get("storage.tsdb.min-block-duration")
        .unwrap_or(DEFAULT_MIN_BLOCK);
    let max = flags.get("storage.tsdb.max-block-duration");
    if max.is_some_and(|max| same_duration(min, max)) {
        return None;
    }
    Some(format!(
        "strata: Prometheus compacts blocks locally (min-block-duration={min}, max-block-duration={}), so the sidecar will not ship blocks: set both to 2h, or (Prometheus >= 3.9) add --storage.tsdb.delay-compact-file.path={}",
        max.unwrap_or("<default: 10% of retention>"),
        shipper_file.display()
    ))
}

/// Whether two Prometheus durations (`2h`, `120m`, `1d`) are equal.
fn same_duration(a: &str, b: &str) -> bool {
    match (humantime::parse_duration(a), humantime::parse_duration(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn sidecar_container(
    mc: &MetricsCluster,
    prom: &Container,
    pod_security: Option<&k8s_openapi::api::core::v1::PodSecurityContext>,
    flags: &Flags,
    tsdb: &Path,
    tsdb_mount: &VolumeMount,
) -> Container {
    let secret = &mc.spec.object_storage.secret_ref;
    // The shipper writes thanos.shipper.json into the TSDB directory, so this mount is writable.
    let data_mount = VolumeMount {
        name: tsdb_mount.name.clone(),
        mount_path: tsdb_mount.mount_path.clone(),
        sub_path: tsdb_mount.sub_path.clone(),
        sub_path_expr: tsdb_mount.sub_path_expr.clone(),
        mount_propagation: None,
        read_only: None,
        recursive_read_only: None,
    };
    let objstore_mount = VolumeMount {
        name: OBJSTORE_VOLUME.into(),
        mount_path: OBJSTORE_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    // Run as Prometheus's user so the shipper can write next to its blocks.
    let prom_sc = prom.security_context.as_ref();
    let run_as_user = prom_sc
        .and_then(|s| s.run_as_user)
        .or_else(|| pod_security.and_then(|s| s.run_as_user));
    let run_as_group = prom_sc
        .and_then(|s| s.run_as_group)
        .or_else(|| pod_security.and_then(|s| s.run_as_group));
    let non_root_asked = prom_sc
        .and_then(|s| s.run_as_non_root)
        .or_else(|| pod_security.and_then(|s| s.run_as_non_root))
        .unwrap_or(false);
    let run_as_non_root = (non_root_asked || run_as_user.is_some_and(|u| u != 0)).then_some(true);
    let http = IntOrString::String("http".into());
    Container {
        name: SIDECAR_CONTAINER.into(),
        image: Some(image_of(mc)),
        args: Some(vec![
            "sidecar".into(),
            format!("--prometheus.url={}", prometheus_url(prom, flags)),
            format!("--tsdb.path={}", tsdb.display()),
            format!("--grpc-address=0.0.0.0:{GRPC_PORT}"),
            format!("--http-address=0.0.0.0:{HTTP_PORT}"),
            format!("--objstore.config-file={OBJSTORE_DIR}/{}", secret.key),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".into()),
                container_port: GRPC_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("http".into()),
                container_port: HTTP_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        liveness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/-/healthy".into()),
                port: http,
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(10),
            failure_threshold: Some(6),
            ..Probe::default()
        }),
        resources: mc.spec.sidecar.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            run_as_user,
            run_as_group,
            run_as_non_root,
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![data_mount, objstore_mount]),
        ..Container::default()
    }
}

#[cfg(test)]
#[path = "inject_tests.rs"]
mod tests;
