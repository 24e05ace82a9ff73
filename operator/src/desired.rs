//! The objects a resource's spec asks for, computed without I/O: querier Deployment + Services,
//! store-gateway shard StatefulSets + headless Services + PodDisruptionBudgets, the compactor
//! StatefulSet, the ruler StatefulSet + rules ConfigMap, ServiceAccounts, and the owned `StoreGateway` / `Compactor` of inline templates.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Service,
    ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::crd::{
    ClusterRef, Compactor, CompactorParams, CompactorSpec, MetricsCluster, RULER_REPLICA_LABEL,
    Ruler, SecretKeyRef, StorageSpec, StoreGateway, StoreGatewayParams, StoreGatewaySpec,
};
use crate::{Error, Result};

/// `app.kubernetes.io/name` of everything the operator makes.
pub const APP_NAME: &str = "strata";
/// `app.kubernetes.io/managed-by` of everything the operator makes.
pub const MANAGED_BY: &str = "strata-operator";
/// Label naming the `MetricsCluster` an object serves.
pub const CLUSTER_LABEL: &str = "strata.dev/cluster";
/// Label on Services whose pods serve the StoreAPI to the cluster's querier.
pub const STOREAPI_LABEL: &str = "strata.dev/storeapi";
/// Label with a store shard set's size (its hashmod modulus).
pub const SHARD_SET_LABEL: &str = "strata.dev/shard-set";
/// Label with a store shard's index in its set.
pub const SHARD_LABEL: &str = "strata.dev/shard";
/// Pod-template annotation with a checksum of the configuration pods read from files (rolls them).
pub const CHECKSUM_ANNOTATION: &str = "strata.dev/config-checksum";
/// The StoreAPI gRPC port of every Strata server.
pub const GRPC_PORT: i32 = 10901;
/// The HTTP port (`/metrics`, `/-/healthy`, `/-/ready`, APIs) of every Strata server.
pub const HTTP_PORT: i32 = 10902;
/// Where the objstore Secret is mounted.
pub const OBJSTORE_DIR: &str = "/etc/strata/objstore";
/// The file name of the objstore YAML inside [`OBJSTORE_DIR`].
pub const OBJSTORE_FILE: &str = "objstore.yml";
/// Longest name of a StatefulSet whose pods still get a valid `controller-revision-hash` label.
pub const MAX_STATEFULSET_NAME: usize = 52;
/// The default image: this operator's own version.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "ghcr.io/strata-dev/strata";

/// What every component of one cluster shares, resolved by the controller (the Secret is read).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterInputs {
    /// The `MetricsCluster` name.
    pub cluster: String,
    /// The container image.
    pub image: String,
    /// The objstore Secret reference.
    pub secret_ref: SecretKeyRef,
    /// Checksum of the objstore YAML (changes roll the pods).
    pub objstore_checksum: String,
}

impl ClusterInputs {
    /// Inputs from a cluster and the objstore YAML bytes read from its Secret.
    pub fn new(mc: &MetricsCluster, objstore_yaml: &[u8]) -> Self {
        Self {
            cluster: mc.name_any(),
            image: image_of(mc),
            secret_ref: mc.spec.object_storage.secret_ref.clone(),
            objstore_checksum: checksum(&[objstore_yaml]),
        }
    }
}

/// The image a cluster's pods run: `spec.image`, or this operator's version.
pub fn image_of(mc: &MetricsCluster) -> String {
    mc.spec
        .image
        .clone()
        .unwrap_or_else(|| format!("{DEFAULT_IMAGE_REPOSITORY}:{}", env!("CARGO_PKG_VERSION")))
}

/// Hex SHA-256 of the parts, each length-prefixed.
pub fn checksum(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The `app.kubernetes.io/*` labels plus the cluster label.
pub fn labels(component: &str, instance: &str, cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            instance.to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
        (CLUSTER_LABEL.to_string(), cluster.to_string()),
    ])
}

fn selector_labels(component: &str, instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            instance.to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
    ])
}

fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Result<OwnerReference> {
    owner
        .controller_owner_ref(&())
        .ok_or_else(|| Error::MissingField {
            field: "metadata.uid".into(),
        })
}

fn namespace_of<K: Resource>(obj: &K) -> Result<String> {
    obj.meta()
        .namespace
        .clone()
        .ok_or_else(|| Error::MissingField {
            field: "metadata.namespace".into(),
        })
}

fn meta(
    name: &str,
    namespace: &str,
    labels: BTreeMap<String, String>,
    owner: &OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

fn service_account(
    name: &str,
    namespace: &str,
    labels: BTreeMap<String, String>,
    owner: &OwnerReference,
) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(name, namespace, labels, owner),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65534),
        run_as_group: Some(65534),
        fs_group: Some(65534),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn ports(grpc: bool) -> Vec<ContainerPort> {
    let mut v = vec![ContainerPort {
        name: Some("http".into()),
        container_port: HTTP_PORT,
        ..ContainerPort::default()
    }];
    if grpc {
        v.insert(
            0,
            ContainerPort {
                name: Some("grpc".into()),
                container_port: GRPC_PORT,
                ..ContainerPort::default()
            },
        );
    }
    v
}

fn service_ports(grpc: bool) -> Vec<ServicePort> {
    let mut v = vec![ServicePort {
        name: Some("http".into()),
        port: HTTP_PORT,
        target_port: Some(IntOrString::String("http".into())),
        ..ServicePort::default()
    }];
    if grpc {
        v.insert(
            0,
            ServicePort {
                name: Some("grpc".into()),
                port: GRPC_PORT,
                target_port: Some(IntOrString::String("grpc".into())),
                ..ServicePort::default()
            },
        );
    }
    v
}

fn objstore_volume(secret: &SecretKeyRef) -> Volume {
    Volume {
        name: "objstore".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.name.clone()),
            items: Some(vec![KeyToPath {
                key: secret.key.clone(),
                path: OBJSTORE_FILE.into(),
                ..KeyToPath::default()
            }]),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn objstore_mount() -> VolumeMount {
    VolumeMount {
        name: "objstore".into(),
        mount_path: OBJSTORE_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

fn data_mount(path: &str) -> VolumeMount {
    VolumeMount {
        name: "data".into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    }
}

fn pvc_template(storage: &StorageSpec, labels: BTreeMap<String, String>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    storage.size.clone(),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn pod_template(
    labels: BTreeMap<String, String>,
    checksum: &str,
    service_account: &str,
    container: Container,
    volumes: Vec<Volume>,
) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                CHECKSUM_ANNOTATION.to_string(),
                checksum.to_string(),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(service_account.to_string()),
            automount_service_account_token: Some(false),
            security_context: Some(pod_security()),
            containers: vec![container],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
    }
}

fn container(
    name: &str,
    image: &str,
    args: Vec<String>,
    grpc: bool,
    mounts: Vec<VolumeMount>,
    resources: Option<ResourceRequirements>,
) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        args: Some(args),
        ports: Some(ports(grpc)),
        liveness_probe: Some(http_probe("/-/healthy", 10, 6)),
        readiness_probe: Some(http_probe("/-/ready", 5, 3)),
        security_context: Some(container_security()),
        volume_mounts: Some(mounts),
        resources,
        ..Container::default()
    }
}

fn check_name(kind: &str, name: &str, max: usize) -> Result<()> {
    if name.len() > max {
        return Err(Error::InvalidSpec {
            field: "metadata.name".into(),
            message: format!(
                "{kind} name {name:?} is {} characters, more than the {max} Kubernetes allows: choose a shorter name",
                name.len()
            ),
        });
    }
    Ok(())
}

/// The DNS SRV endpoint of a headless Service's `grpc` port, as `strata query --endpoint` takes it.
pub fn dnssrv_endpoint(service: &str, namespace: &str) -> String {
    format!("dnssrv+_grpc._tcp.{service}.{namespace}.svc")
}

/// The querier's objects.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerierObjects {
    /// `<cluster>-query`.
    pub service_account: ServiceAccount,
    /// `<cluster>-query`.
    pub deployment: Deployment,
    /// `<cluster>-query`: the querier's HTTP and gRPC ports.
    pub service: Service,
    /// `<cluster>-sidecar`: headless, selecting the Prometheus pods (their sidecars' `grpc` port).
    pub sidecar_service: Service,
}

/// Name of a cluster's querier Deployment, Service and ServiceAccount.
pub fn querier_name(cluster: &str) -> String {
    format!("{cluster}-query")
}

/// Name of a cluster's headless Service over its sidecars.
pub fn sidecar_service_name(cluster: &str) -> String {
    format!("{cluster}-sidecar")
}

/// The querier for `mc`, reading the StoreAPI `endpoints` (sorted, de-duplicated by the caller).
pub fn querier(mc: &MetricsCluster, endpoints: &[String]) -> Result<QuerierObjects> {
    let ns = namespace_of(mc)?;
    let owner = owner_ref(mc)?;
    let cluster = mc.name_any();
    let name = querier_name(&cluster);
    check_name("Deployment", &name, 63)?;
    let q = &mc.spec.query;
    let lbl = labels("query", &name, &cluster);
    let sel = selector_labels("query", &name);

    let mut args = vec![
        "query".to_string(),
        format!("--http-address=0.0.0.0:{HTTP_PORT}"),
    ];
    args.extend(endpoints.iter().map(|e| format!("--endpoint={e}")));
    args.extend(
        q.replica_labels
            .iter()
            .map(|l| format!("--query.replica-label={l}")),
    );
    args.extend(q.extra_args.iter().cloned());
    let checksum = checksum(&[args.join("\n").as_bytes()]);

    let deployment = Deployment {
        metadata: meta(&name, &ns, lbl.clone(), &owner),
        spec: Some(DeploymentSpec {
            replicas: Some(q.replicas),
            selector: LabelSelector {
                match_labels: Some(sel.clone()),
                ..LabelSelector::default()
            },
            template: pod_template(
                lbl.clone(),
                &checksum,
                &name,
                container(
                    "query",
                    &image_of(mc),
                    args,
                    false,
                    Vec::new(),
                    q.resources.clone(),
                ),
                Vec::new(),
            ),
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    let service = Service {
        metadata: meta(&name, &ns, lbl.clone(), &owner),
        spec: Some(ServiceSpec {
            type_: Some(q.service_type.as_str().into()),
            selector: Some(sel),
            ports: Some(service_ports(false)),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let sidecar_name = sidecar_service_name(&cluster);
    let sidecar_selector = &mc.spec.sidecar.selector;
    if sidecar_selector
        .match_expressions
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(Error::InvalidSpec {
            field: "spec.sidecar.selector.matchExpressions".into(),
            message: "a Service can only select pods by matchLabels: express the Prometheus pod selector with matchLabels".into(),
        });
    }
    let mut sidecar_labels = labels("sidecar", &sidecar_name, &cluster);
    sidecar_labels.insert(STOREAPI_LABEL.into(), "true".into());
    let sidecar_service = Service {
        metadata: meta(&sidecar_name, &ns, sidecar_labels, &owner),
        spec: Some(sidecar_service_spec(mc)),
        ..Service::default()
    };
    Ok(QuerierObjects {
        service_account: service_account(&name, &ns, lbl, &owner),
        deployment,
        service,
        sidecar_service,
    })
}

/// The sidecars' headless Service: the Prometheus pods' labels, the StoreAPI port.
fn sidecar_service_spec(mc: &MetricsCluster) -> ServiceSpec {
    ServiceSpec {
        cluster_ip: Some("None".into()),
        selector: Some(
            mc.spec
                .sidecar
                .selector
                .match_labels
                .clone()
                .unwrap_or_default(),
        ),
        ports: Some(service_ports(true)),
        publish_not_ready_addresses: Some(false),
        ..ServiceSpec::default()
    }
}

/// Label on the sidecar Services a cluster has in other namespaces: the cluster's own namespace.
pub const CLUSTER_NAMESPACE_LABEL: &str = "strata.dev/cluster-namespace";

/// Name of a cluster's sidecar Service in another namespace: `<cluster>-<cluster ns>-sidecar`
/// (the cluster's namespace in the name keeps two clusters of one name apart).
pub fn remote_sidecar_service_name(cluster: &str, cluster_ns: &str) -> String {
    format!("{cluster}-{cluster_ns}-sidecar")
}

/// The sidecars' headless Service in namespace `target`, which `spec.sidecar.namespaceSelector`
/// selects: the querier discovers the sidecars injected there through it. No owner reference
/// (owners cannot be in another namespace): the cluster's finalizer deletes it.
pub fn remote_sidecar_service(mc: &MetricsCluster, target: &str) -> Result<Service> {
    let ns = namespace_of(mc)?;
    let cluster = mc.name_any();
    let name = remote_sidecar_service_name(&cluster, &ns);
    check_name("Service", &name, 63)?;
    let mut lbl = labels("sidecar", &name, &cluster);
    lbl.insert(STOREAPI_LABEL.into(), "true".into());
    lbl.insert(CLUSTER_NAMESPACE_LABEL.into(), ns);
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(target.to_string()),
            labels: Some(lbl),
            ..ObjectMeta::default()
        },
        spec: Some(sidecar_service_spec(mc)),
        ..Service::default()
    })
}

/// Name of the owned `StoreGateway` an inline `spec.storeGateway` becomes.
pub fn inline_store_gateway_name(cluster: &str) -> String {
    format!("{cluster}-store")
}

/// Name of the owned `Compactor` an inline `spec.compactor` becomes.
pub fn inline_compactor_name(cluster: &str) -> String {
    format!("{cluster}-compactor")
}

/// The owned `StoreGateway` of `mc`'s inline template, if it has one.
pub fn inline_store_gateway(mc: &MetricsCluster) -> Result<Option<StoreGateway>> {
    let Some(params) = mc.spec.store_gateway.clone() else {
        return Ok(None);
    };
    let cluster = mc.name_any();
    let name = inline_store_gateway_name(&cluster);
    let mut sg = StoreGateway::new(
        &name,
        StoreGatewaySpec {
            cluster_ref: ClusterRef {
                name: cluster.clone(),
            },
            params,
        },
    );
    sg.metadata = meta(
        &name,
        &namespace_of(mc)?,
        labels("store-gateway", &name, &cluster),
        &owner_ref(mc)?,
    );
    Ok(Some(sg))
}

/// The owned `Compactor` of `mc`'s inline template, if it has one.
pub fn inline_compactor(mc: &MetricsCluster) -> Result<Option<Compactor>> {
    let Some(params) = mc.spec.compactor.clone() else {
        return Ok(None);
    };
    let cluster = mc.name_any();
    let name = inline_compactor_name(&cluster);
    let mut c = Compactor::new(
        &name,
        CompactorSpec {
            cluster_ref: ClusterRef {
                name: cluster.clone(),
            },
            params,
        },
    );
    c.metadata = meta(
        &name,
        &namespace_of(mc)?,
        labels("compactor", &name, &cluster),
        &owner_ref(mc)?,
    );
    Ok(Some(c))
}

/// One store-gateway shard: its StatefulSet, headless Service and PodDisruptionBudget.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardObjects {
    /// `<gateway>-s<shards>-<index>`.
    pub statefulset: StatefulSet,
    /// Same name, headless, labelled as a StoreAPI endpoint of the cluster.
    pub service: Service,
    /// Same name, `maxUnavailable: 1`.
    pub pdb: PodDisruptionBudget,
}

/// Name of shard `index` of the `shards`-wide set of store gateway `gateway`.
pub fn shard_name(gateway: &str, shards: i32, index: i32) -> String {
    format!("{gateway}-s{shards}-{index}")
}

/// The `--selector.relabel-config` YAML giving shard `index` of `shards` its blocks (hashmod over
/// `__block_id`).
pub fn shard_relabel_config(shards: i32, index: i32) -> String {
    format!(
        "- action: hashmod\n  source_labels: [__block_id]\n  target_label: shard\n  modulus: {shards}\n- action: keep\n  source_labels: [shard]\n  regex: \"{index}\"\n"
    )
}

/// The ServiceAccount every shard of store gateway `sg` runs as.
pub fn store_service_account(sg: &StoreGateway) -> Result<ServiceAccount> {
    let name = sg.name_any();
    Ok(service_account(
        &name,
        &namespace_of(sg)?,
        labels("store-gateway", &name, &sg.spec.cluster_ref.name),
        &owner_ref(sg)?,
    ))
}

/// The objects of the `shards`-wide shard set of `sg` (one per shard).
pub fn store_shards(
    sg: &StoreGateway,
    inputs: &ClusterInputs,
    shards: i32,
) -> Result<Vec<ShardObjects>> {
    if !(1..=64).contains(&shards) {
        return Err(Error::InvalidSpec {
            field: "spec.shards".into(),
            message: format!("{shards} shards: choose 1 to 64"),
        });
    }
    let ns = namespace_of(sg)?;
    let owner = owner_ref(sg)?;
    let gateway = sg.name_any();
    let p: &StoreGatewayParams = &sg.spec.params;
    (0..shards)
        .map(|index| {
            let name = shard_name(&gateway, shards, index);
            check_name("StatefulSet", &name, MAX_STATEFULSET_NAME)?;
            let mut lbl = labels("store-gateway", &gateway, &inputs.cluster);
            lbl.insert(SHARD_SET_LABEL.into(), shards.to_string());
            lbl.insert(SHARD_LABEL.into(), index.to_string());
            let mut sel = selector_labels("store-gateway", &gateway);
            sel.insert(SHARD_SET_LABEL.into(), shards.to_string());
            sel.insert(SHARD_LABEL.into(), index.to_string());

            let mut args = vec![
                "store".to_string(),
                "--data-dir=/var/strata/store".to_string(),
                format!("--objstore.config-file={OBJSTORE_DIR}/{OBJSTORE_FILE}"),
                format!("--grpc-address=0.0.0.0:{GRPC_PORT}"),
                format!("--http-address=0.0.0.0:{HTTP_PORT}"),
                format!("--index-cache-size={}", p.index_cache_size),
                format!(
                    "--selector.relabel-config={}",
                    shard_relabel_config(shards, index)
                ),
            ];
            if let Some(c) = &p.chunk_cache_size {
                args.push(format!("--chunk-cache-size={c}"));
            }
            if let Some(t) = &p.min_time {
                args.push(format!("--min-time={t}"));
            }
            if let Some(t) = &p.max_time {
                args.push(format!("--max-time={t}"));
            }
            let statefulset = StatefulSet {
                metadata: meta(&name, &ns, lbl.clone(), &owner),
                spec: Some(StatefulSetSpec {
                    replicas: Some(p.replicas_per_shard),
                    service_name: Some(name.clone()),
                    pod_management_policy: Some("Parallel".into()),
                    selector: LabelSelector {
                        match_labels: Some(sel.clone()),
                        ..LabelSelector::default()
                    },
                    template: pod_template(
                        lbl.clone(),
                        &inputs.objstore_checksum,
                        &gateway,
                        container(
                            "store",
                            &inputs.image,
                            args,
                            true,
                            vec![objstore_mount(), data_mount("/var/strata/store")],
                            p.resources.clone(),
                        ),
                        vec![objstore_volume(&inputs.secret_ref)],
                    ),
                    volume_claim_templates: Some(vec![pvc_template(&p.storage, sel.clone())]),
                    persistent_volume_claim_retention_policy: Some(
                        StatefulSetPersistentVolumeClaimRetentionPolicy {
                            when_deleted: Some("Delete".into()),
                            when_scaled: Some("Delete".into()),
                        },
                    ),
                    ..StatefulSetSpec::default()
                }),
                ..StatefulSet::default()
            };
            let mut svc_labels = lbl.clone();
            svc_labels.insert(STOREAPI_LABEL.into(), "true".into());
            let service = Service {
                metadata: meta(&name, &ns, svc_labels, &owner),
                spec: Some(ServiceSpec {
                    cluster_ip: Some("None".into()),
                    selector: Some(sel.clone()),
                    ports: Some(service_ports(true)),
                    ..ServiceSpec::default()
                }),
                ..Service::default()
            };
            let pdb = PodDisruptionBudget {
                metadata: meta(&name, &ns, lbl, &owner),
                spec: Some(PodDisruptionBudgetSpec {
                    max_unavailable: Some(IntOrString::Int(1)),
                    selector: Some(LabelSelector {
                        match_labels: Some(sel),
                        ..LabelSelector::default()
                    }),
                    ..PodDisruptionBudgetSpec::default()
                }),
                ..PodDisruptionBudget::default()
            };
            Ok(ShardObjects {
                statefulset,
                service,
                pdb,
            })
        })
        .collect()
}

/// The compactor's objects.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactorObjects {
    /// Named like the `Compactor`.
    pub service_account: ServiceAccount,
    /// Headless, for the StatefulSet's pod DNS and metrics scraping.
    pub service: Service,
    /// One replica, a `data` PVC.
    pub statefulset: StatefulSet,
}

/// The singleton compactor StatefulSet (and friends) of `c`.
pub fn compactor(c: &Compactor, inputs: &ClusterInputs) -> Result<CompactorObjects> {
    let ns = namespace_of(c)?;
    let owner = owner_ref(c)?;
    let name = c.name_any();
    check_name("StatefulSet", &name, MAX_STATEFULSET_NAME)?;
    let p: &CompactorParams = &c.spec.params;
    let lbl = labels("compactor", &name, &inputs.cluster);
    let sel = selector_labels("compactor", &name);
    let mut args = vec![
        "compact".to_string(),
        "--wait".to_string(),
        "--data-dir=/var/strata/compact".to_string(),
        format!("--objstore.config-file={OBJSTORE_DIR}/{OBJSTORE_FILE}"),
        format!("--http-address=0.0.0.0:{HTTP_PORT}"),
        format!("--retention.resolution-raw={}", p.retention.raw),
        format!("--retention.resolution-5m={}", p.retention.five_minutes),
        format!("--retention.resolution-1h={}", p.retention.one_hour),
    ];
    if !p.downsampling {
        args.push("--downsampling.disable".into());
    }
    args.extend(
        p.deduplication_replica_labels
            .iter()
            .map(|l| format!("--deduplication.replica-label={l}")),
    );
    let statefulset = StatefulSet {
        metadata: meta(&name, &ns, lbl.clone(), &owner),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name.clone()),
            selector: LabelSelector {
                match_labels: Some(sel.clone()),
                ..LabelSelector::default()
            },
            template: pod_template(
                lbl.clone(),
                &inputs.objstore_checksum,
                &name,
                container(
                    "compact",
                    &inputs.image,
                    args,
                    false,
                    vec![objstore_mount(), data_mount("/var/strata/compact")],
                    p.resources.clone(),
                ),
                vec![objstore_volume(&inputs.secret_ref)],
            ),
            volume_claim_templates: Some(vec![pvc_template(&p.storage, sel.clone())]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };
    let service = Service {
        metadata: meta(&name, &ns, lbl.clone(), &owner),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(sel),
            ports: Some(service_ports(false)),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    Ok(CompactorObjects {
        service_account: service_account(&name, &ns, lbl, &owner),
        service,
        statefulset,
    })
}

/// Name of the ConfigMap holding a ruler's collected rule files.
pub fn ruler_rules_name(ruler: &str) -> String {
    format!("{ruler}-rules")
}

/// Where a ruler's rule files are mounted.
pub const RULES_DIR: &str = "/etc/strata/rules";

/// A ruler's objects.
#[derive(Debug, Clone, PartialEq)]
pub struct RulerObjects {
    /// Named like the `Ruler`.
    pub service_account: ServiceAccount,
    /// `<ruler>-rules`: the collected rule files.
    pub config_map: ConfigMap,
    /// Headless, labelled as a StoreAPI endpoint of the cluster.
    pub service: Service,
    /// The ruler pods, each with a `data` PVC.
    pub statefulset: StatefulSet,
}

/// The querier URL rules are evaluated against (`strata rule --query`).
pub fn querier_url(cluster: &str, namespace: &str) -> String {
    format!(
        "http://{}.{namespace}.svc:{HTTP_PORT}",
        querier_name(cluster)
    )
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
    Error::InvalidSpec {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks what the schema cannot: positive durations, absolute http(s) URLs, label names.
pub fn validate_ruler(r: &Ruler) -> Result<()> {
    let s = &r.spec;
    if s.replicas < 0 {
        return Err(invalid(
            "spec.replicas",
            format!("{} replicas: choose 0 or more", s.replicas),
        ));
    }
    for (field, v) in [
        ("spec.evalInterval", &s.eval_interval),
        ("spec.retention", &s.retention),
    ] {
        match humantime::parse_duration(v) {
            Ok(d) if !d.is_zero() => {}
            Ok(_) => {
                return Err(invalid(
                    field,
                    format!("{v:?} is zero: choose a positive duration such as 1m"),
                ));
            }
            Err(e) => {
                return Err(invalid(
                    field,
                    format!("{v:?} is not a duration ({e}): write e.g. 30s, 1m, 48h"),
                ));
            }
        }
    }
    for (i, a) in s.alertmanagers.iter().enumerate() {
        let field = format!("spec.alertmanagers[{i}]");
        match url::Url::parse(a) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            Ok(_) => {
                return Err(invalid(
                    field,
                    format!("{a:?} is not an http(s) URL with a host"),
                ));
            }
            Err(e) => {
                return Err(invalid(
                    field,
                    format!("{a:?} is not a URL ({e}): write e.g. http://alertmanager:9093"),
                ));
            }
        }
        if a.contains(',') {
            return Err(invalid(
                field,
                format!("{a:?} contains a comma, which the ruler's flag splits on"),
            ));
        }
    }
    for k in s.external_labels.keys() {
        if k.is_empty() || k == RULER_REPLICA_LABEL {
            return Err(invalid(
                "spec.externalLabels",
                format!(
                    "label name {k:?} is empty or reserved ({RULER_REPLICA_LABEL} is set per pod)"
                ),
            ));
        }
    }
    Ok(())
}

/// The ruler objects of `r`, running the collected rule `files` (generated key → YAML).
pub fn ruler(
    r: &Ruler,
    inputs: &ClusterInputs,
    files: &BTreeMap<String, String>,
) -> Result<RulerObjects> {
    validate_ruler(r)?;
    let ns = namespace_of(r)?;
    let owner = owner_ref(r)?;
    let name = r.name_any();
    check_name("StatefulSet", &name, MAX_STATEFULSET_NAME)?;
    let s = &r.spec;
    let lbl = labels("ruler", &name, &inputs.cluster);
    let sel = selector_labels("ruler", &name);
    let image = s.image.clone().unwrap_or_else(|| inputs.image.clone());
    let quote = |v: &str| serde_json::to_string(v).unwrap_or_else(|_| format!("{v:?}"));

    let mut args = vec![
        "rule".to_string(),
        format!("--rule-file={RULES_DIR}/*.yaml"),
        format!("--query={}", querier_url(&inputs.cluster, &ns)),
        format!("--eval-interval={}", s.eval_interval),
        "--data-dir=/var/strata/rule".to_string(),
        format!("--tsdb.retention={}", s.retention),
        format!("--objstore.config-file={OBJSTORE_DIR}/{OBJSTORE_FILE}"),
        format!("--grpc-address=0.0.0.0:{GRPC_PORT}"),
        format!("--http-address=0.0.0.0:{HTTP_PORT}"),
        format!("--label={RULER_REPLICA_LABEL}=\"$(POD_NAME)\""),
        format!("--alert.label-drop={RULER_REPLICA_LABEL}"),
    ];
    args.extend(
        s.external_labels
            .iter()
            .map(|(k, v)| format!("--label={k}={}", quote(v))),
    );
    args.extend(
        s.alertmanagers
            .iter()
            .map(|a| format!("--alertmanagers.url={a}")),
    );

    let rules_bytes: Vec<&[u8]> = files
        .iter()
        .flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()])
        .collect();
    let pod_checksum = checksum(&[
        inputs.objstore_checksum.as_bytes(),
        checksum(&rules_bytes).as_bytes(),
    ]);
    let config_map_name = ruler_rules_name(&name);
    let config_map = ConfigMap {
        metadata: meta(&config_map_name, &ns, lbl.clone(), &owner),
        data: Some(files.clone()),
        ..ConfigMap::default()
    };
    let mut c = container(
        "rule",
        &image,
        args,
        true,
        vec![
            objstore_mount(),
            data_mount("/var/strata/rule"),
            VolumeMount {
                name: "rules".into(),
                mount_path: RULES_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ],
        s.resources.clone(),
    );
    c.env = Some(vec![EnvVar {
        name: "POD_NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }]);
    let statefulset = StatefulSet {
        metadata: meta(&name, &ns, lbl.clone(), &owner),
        spec: Some(StatefulSetSpec {
            replicas: Some(s.replicas),
            service_name: Some(name.clone()),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(sel.clone()),
                ..LabelSelector::default()
            },
            template: pod_template(
                lbl.clone(),
                &pod_checksum,
                &name,
                c,
                vec![
                    objstore_volume(&inputs.secret_ref),
                    Volume {
                        name: "rules".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: config_map_name,
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    },
                ],
            ),
            volume_claim_templates: Some(vec![pvc_template(&s.storage, sel.clone())]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };
    let mut svc_labels = lbl.clone();
    svc_labels.insert(STOREAPI_LABEL.into(), "true".into());
    let service = Service {
        metadata: meta(&name, &ns, svc_labels, &owner),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(sel),
            ports: Some(service_ports(true)),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    Ok(RulerObjects {
        service_account: service_account(&name, &ns, lbl, &owner),
        config_map,
        service,
        statefulset,
    })
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
