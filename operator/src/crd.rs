//! The custom resources (group `strata.dev`, version `v1alpha1`, namespaced): [`MetricsCluster`],
//! [`StoreGateway`], [`Compactor`] and [`Ruler`]. Every defaulted field carries its default in the schema, so the
//! API server fills it and GitOps tools see no drift.

// Several `printcolumn(...)` entries of one `#[kube(...)]` repeat `type_ = …`, which this lint
// mistakes for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every Strata resource.
pub const GROUP: &str = "strata.dev";
/// The API version of this module's types.
pub const VERSION: &str = "v1alpha1";

/// Retention and duration strings as Thanos takes them: `0d` (forever), `30d`, `12h`, `1y`, `2w`.
const DURATION_PATTERN: &str = r"^[0-9]+(ms|s|m|h|d|w|y)$";
/// Byte sizes as `strata store --index-cache-size` takes them.
const SIZE_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(B|KB|MB|GB|KiB|MiB|GiB)?$";

/// A federation: the querier, the sidecars' discovery, and (inline or separate) store gateways and a
/// compactor over one bucket.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "strata.dev",
    version = "v1alpha1",
    kind = "MetricsCluster",
    namespaced,
    status = "MetricsClusterStatus",
    shortname = "mc",
    category = "strata",
    derive = "PartialEq",
    doc = "A Strata metrics federation: querier, sidecar discovery, store gateways and a compactor over one bucket.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.query.replicas"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MetricsClusterSpec {
    /// Container image of every Strata pod; unset means the operator's own version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Where the blocks live.
    pub object_storage: ObjectStorage,
    /// Which Prometheus pods carry (or get) a Strata sidecar.
    #[serde(default)]
    pub sidecar: SidecarSpec,
    /// The querier.
    #[serde(default)]
    pub query: QuerySpec,
    /// An inline store gateway; becomes an owned `StoreGateway` named `<cluster>-store`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_gateway: Option<StoreGatewayParams>,
    /// An inline compactor; becomes an owned `Compactor` named `<cluster>-compactor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compactor: Option<CompactorParams>,
}

/// The bucket, as a Thanos objstore YAML held in a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStorage {
    /// The Secret and the key in it holding the objstore YAML.
    pub secret_ref: SecretKeyRef,
}

/// A key of a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[serde(default = "default_objstore_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_objstore_key() -> String {
    "objstore.yml".to_string()
}

/// The Prometheus pods whose sidecars the querier reads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// Labels of the Prometheus pods (only `matchLabels` can back the sidecars' headless Service).
    #[serde(default)]
    pub selector: LabelSelector,
    /// Namespaces to look for them in; unset means the cluster's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Resources of the injected sidecar container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// How the querier's Service is exposed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ServiceType {
    /// A cluster-internal virtual IP.
    #[default]
    ClusterIP,
    /// A port on every node.
    NodePort,
    /// A cloud load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The querier (`strata query`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuerySpec {
    /// Querier pods.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// External labels telling HA Prometheus replicas apart (`--query.replica-label`).
    #[serde(default)]
    pub replica_labels: Vec<String>,
    /// Querier container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The querier Service's type.
    #[serde(default)]
    pub service_type: ServiceType,
    /// Extra `strata query` flags, appended as given (e.g. `--query.timeout=5m`).
    #[serde(default)]
    pub extra_args: Vec<String>,
}

impl Default for QuerySpec {
    fn default() -> Self {
        Self {
            replicas: 1,
            replica_labels: Vec::new(),
            resources: None,
            service_type: ServiceType::ClusterIP,
            extra_args: Vec::new(),
        }
    }
}

fn one() -> i32 {
    1
}

fn yes() -> bool {
    true
}

/// A persistent volume per pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size.
    pub size: Quantity,
    /// StorageClass; unset means the cluster's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

fn default_store_storage() -> StorageSpec {
    StorageSpec {
        size: Quantity("10Gi".to_string()),
        storage_class_name: None,
    }
}

fn default_compactor_storage() -> StorageSpec {
    StorageSpec {
        size: Quantity("100Gi".to_string()),
        storage_class_name: None,
    }
}

fn default_index_cache_size() -> String {
    "250MB".to_string()
}

/// The tunables of a store gateway, shared by the inline template and the `StoreGateway` resource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreGatewayParams {
    /// Hashmod shards over `__block_id`; each shard is a StatefulSet serving 1/shards of the blocks.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 64))]
    pub shards: i32,
    /// Identical pods per shard.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10))]
    pub replicas_per_shard: i32,
    /// Each pod's volume for index-headers and the meta.json cache.
    #[serde(default = "default_store_storage")]
    pub storage: StorageSpec,
    /// In-memory index cache (`--index-cache-size`), e.g. `250MB`, `1GiB`.
    #[serde(default = "default_index_cache_size")]
    #[schemars(regex(pattern = SIZE_PATTERN))]
    pub index_cache_size: String,
    /// In-memory chunk cache (`--chunk-cache-size`), e.g. `256MB`; unset: none (the gateway's
    /// default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = SIZE_PATTERN))]
    pub chunk_cache_size: Option<String>,
    /// Serve only blocks ending after this time (`--min-time`): RFC 3339 or relative (`-2w`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_time: Option<String>,
    /// Serve only blocks starting before this time (`--max-time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_time: Option<String>,
    /// Store container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The `MetricsCluster` a store gateway or compactor belongs to (same namespace).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "clusterRef is immutable"}]))]
pub struct ClusterRef {
    /// Name of the `MetricsCluster`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Store gateway shards (`strata store`) serving the blocks of a cluster's bucket.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "strata.dev",
    version = "v1alpha1",
    kind = "StoreGateway",
    namespaced,
    status = "StoreGatewayStatus",
    shortname = "sg",
    category = "strata",
    derive = "PartialEq",
    doc = "Hashmod-sharded Strata store gateways over a MetricsCluster's bucket.",
    scale(
        spec_replicas_path = ".spec.shards",
        status_replicas_path = ".status.shards"
    ),
    printcolumn(name = "Shards", type_ = "integer", json_path = ".spec.shards"),
    printcolumn(
        name = "Ready shards",
        type_ = "integer",
        json_path = ".status.readyShards"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct StoreGatewaySpec {
    /// The cluster whose bucket is served.
    pub cluster_ref: ClusterRef,
    /// Shards, replicas, storage, cache, time range, resources.
    #[serde(flatten)]
    pub params: StoreGatewayParams,
}

/// Compaction, downsampling and retention for a cluster's bucket (`strata compact`), one pod.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "strata.dev",
    version = "v1alpha1",
    kind = "Compactor",
    namespaced,
    status = "CompactorStatus",
    category = "strata",
    derive = "PartialEq",
    doc = "The singleton Strata compactor of a MetricsCluster's bucket.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Halted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Halted\")].status"
    ),
    printcolumn(
        name = "Last success",
        type_ = "date",
        json_path = ".status.lastSuccessfulRun"
    ),
    printcolumn(
        name = "Raw retention",
        type_ = "string",
        json_path = ".spec.retention.raw"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CompactorSpec {
    /// The cluster whose bucket is compacted.
    pub cluster_ref: ClusterRef,
    /// Retention, downsampling, de-duplication, storage, resources.
    #[serde(flatten)]
    pub params: CompactorParams,
}

/// How long blocks of each resolution are kept (`0d`: forever).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Raw samples (`--retention.resolution-raw`).
    #[serde(default = "forever")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub raw: String,
    /// 5-minute downsampled blocks (`--retention.resolution-5m`).
    #[serde(default = "forever")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub five_minutes: String,
    /// 1-hour downsampled blocks (`--retention.resolution-1h`).
    #[serde(default = "forever")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub one_hour: String,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            raw: forever(),
            five_minutes: forever(),
            one_hour: forever(),
        }
    }
}

fn forever() -> String {
    "0d".to_string()
}

/// The tunables of a compactor, shared by the inline template and the `Compactor` resource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.downsampling || (self.retention.fiveMinutes == '0d' && self.retention.oneHour == '0d')",
    "message": "retention.fiveMinutes and retention.oneHour apply to downsampled blocks: set downsampling: true or leave them at 0d"
}]))]
pub struct CompactorParams {
    /// Retention per resolution.
    #[serde(default)]
    pub retention: Retention,
    /// Downsample to 5m and 1h resolutions (`--downsampling.disable` when false).
    #[serde(default = "yes")]
    pub downsampling: bool,
    /// Replica labels for vertical de-duplication (`--deduplication.replica-label`); empty: off.
    #[serde(default)]
    pub deduplication_replica_labels: Vec<String>,
    /// The scratch volume compaction works in.
    #[serde(default = "default_compactor_storage")]
    pub storage: StorageSpec,
    /// Compactor container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The label every ruler pod adds to its data and alerts, set to the pod's name (HA pairs differ in it).
pub const RULER_REPLICA_LABEL: &str = "ruler_replica";

fn default_eval_interval() -> String {
    "1m".to_string()
}

fn default_ruler_retention() -> String {
    "48h".to_string()
}

fn default_ruler_storage() -> StorageSpec {
    StorageSpec {
        size: Quantity("10Gi".to_string()),
        storage_class_name: None,
    }
}

/// Rulers (`strata rule`) evaluating the rule files of selected ConfigMaps and PrometheusRules
/// against a cluster's querier.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "strata.dev",
    version = "v1alpha1",
    kind = "Ruler",
    namespaced,
    status = "RulerStatus",
    category = "strata",
    derive = "PartialEq",
    doc = "Strata rulers evaluating recording and alerting rules from ConfigMaps and PrometheusRules over a MetricsCluster's querier.",
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Rules valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"RulesValid\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RulerSpec {
    /// The cluster whose querier the rules are evaluated against and whose bucket gets the results.
    pub cluster_ref: ClusterRef,
    /// Ruler pods; more than one runs them as an HA set told apart by the `ruler_replica` label.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 10))]
    pub replicas: i32,
    /// ConfigMaps in the Ruler's namespace whose data keys are rule files; unset selects none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_selector: Option<LabelSelector>,
    /// `monitoring.coreos.com/v1` PrometheusRules in the Ruler's namespace; unset selects none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_rule_selector: Option<LabelSelector>,
    /// Alertmanager base URLs (API v2) alerts are sent to.
    #[serde(default)]
    pub alertmanagers: Vec<String>,
    /// Evaluation interval of groups that set none (`--eval-interval`).
    #[serde(default = "default_eval_interval")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub eval_interval: String,
    /// External labels of the ruler's data (`--label`); `ruler_replica` is reserved.
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    /// Each pod's volume for its TSDB (WAL and blocks).
    #[serde(default = "default_ruler_storage")]
    pub storage: StorageSpec,
    /// How long local blocks are kept (`--tsdb.retention`).
    #[serde(default = "default_ruler_retention")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub retention: String,
    /// Ruler container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Container image; unset means the cluster's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// What the operator observed of a `Ruler`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RulerStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ruler pods ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The rule files the rulers run (keys of the generated ConfigMap).
    #[serde(default)]
    pub rule_files: Vec<String>,
    /// `Ready`, `Progressing`, `Degraded`, `RulesValid`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// What the operator observed of a `MetricsCluster`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The StoreAPI endpoints the querier is given.
    #[serde(default)]
    pub endpoints: Vec<String>,
}

/// What the operator observed of a `StoreGateway`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreGatewayStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Shards of the set that serves now (during a re-shard: the old set until the new one is ready).
    #[serde(default)]
    pub shards: i32,
    /// Shards of the desired set whose pods are all ready.
    #[serde(default)]
    pub ready_shards: i32,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// What the operator observed of a `Compactor`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompactorStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`, and `Halted`: read every 30 s from the running
    /// compactor's `/api/v1/status/compactor` (`True` names the overlapping blocks; `Unknown` when
    /// the pod is not ready or its endpoint cannot be read).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// End of the compactor's last pass with no halt and no failure (RFC 3339), as the
    /// compactor reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_run: Option<String>,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn minimal_spec_fills_defaults_like_the_schema() {
        let spec: MetricsClusterSpec = serde_json::from_value(
            serde_json::json!({"objectStorage": {"secretRef": {"name": "s"}}}),
        )
        .expect("minimal spec");
        assert_eq!(spec.object_storage.secret_ref.key, "objstore.yml");
        assert_eq!(spec.query.replicas, 1);
        let crd = serde_json::to_value(MetricsCluster::crd()).expect("crd json");
        let props = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"];
        assert_eq!(props["query"]["properties"]["replicas"]["default"], 1);
        assert_eq!(
            props["query"]["properties"]["replicas"]["minimum"].as_f64(),
            Some(0.0)
        );
    }

    #[test]
    fn minimal_ruler_fills_defaults_like_the_schema() {
        let spec: RulerSpec =
            serde_json::from_value(serde_json::json!({"clusterRef": {"name": "prod"}}))
                .expect("minimal ruler");
        assert_eq!(spec.replicas, 1);
        assert_eq!(spec.eval_interval, "1m");
        assert_eq!(spec.retention, "48h");
        assert!(spec.rule_selector.is_none());
        let crd = serde_json::to_value(Ruler::crd()).expect("crd json");
        let props = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"];
        assert_eq!(props["replicas"]["default"], 1);
        assert_eq!(props["replicas"]["minimum"].as_f64(), Some(0.0));
        assert_eq!(props["evalInterval"]["default"], "1m");
        assert_eq!(props["evalInterval"]["pattern"], DURATION_PATTERN);
        assert_eq!(props["storage"]["default"]["size"], "10Gi");
    }

    #[test]
    fn store_gateway_has_a_scale_subresource_on_shards() {
        let crd = serde_json::to_value(StoreGateway::crd()).expect("crd json");
        let scale = &crd["spec"]["versions"][0]["subresources"]["scale"];
        assert_eq!(scale["specReplicasPath"], ".spec.shards");
        assert_eq!(scale["statusReplicasPath"], ".status.shards");
    }
}
