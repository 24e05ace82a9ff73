//! The controllers: one `kube-runtime` `Controller` per kind, watching its resources and the objects
//! they own. Objects are written by server-side apply under one field manager, and only when the
//! desired object differs from what was last applied (a hash annotation), so an idle cluster costs
//! no writes. Status is written only when it changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, debug, info_span, warn};

use crate::crd::{
    Compactor, CompactorStatus, MetricsCluster, MetricsClusterStatus, Ruler, RulerStatus,
    StoreGateway, StoreGatewayStatus,
};
use crate::desired::{self, CLUSTER_LABEL, ClusterInputs, SHARD_SET_LABEL, STOREAPI_LABEL};
use crate::metrics::{ErrorLabels, KindLabels, Metrics};
use crate::rules::{PROMETHEUS_RULE_GROUP, PROMETHEUS_RULE_KIND, PROMETHEUS_RULE_VERSION};
use crate::{Error, Result, observe};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "strata-operator";
/// Annotation holding the hash of the object as last applied; equal hash → no write.
pub const APPLIED_HASH_ANNOTATION: &str = "strata.dev/applied-hash";
/// How often a healthy object is re-checked without any watch event.
pub const RESYNC: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    client: Client,
    recorder: Recorder,
    /// `PrometheusRule`, when the API server served it at start.
    prometheus_rules: Option<ApiResource>,
    metrics: Arc<Metrics>,
    failures: Mutex<HashMap<String, u32>>,
    /// Reads pods' own status endpoints (the compactor's).
    http: reqwest::Client,
}

impl Context {
    /// A context writing through `client` and counting into `metrics`.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        prometheus_rules: Option<ApiResource>,
    ) -> Arc<Self> {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Arc::new(Self {
            client,
            recorder,
            prometheus_rules,
            metrics,
            failures: Mutex::new(HashMap::new()),
            http: reqwest::Client::new(),
        })
    }
}

/// Where the controllers look.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// One namespace, or all when `None`.
    pub namespace: Option<String>,
}

impl Scope {
    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
}

/// The `PrometheusRule` resource if the API server serves it (prometheus-operator's CRD is
/// installed); `None` otherwise, or when discovery fails (logged).
pub async fn discover_prometheus_rules(client: &Client) -> Option<ApiResource> {
    let gvk = GroupVersionKind::gvk(
        PROMETHEUS_RULE_GROUP,
        PROMETHEUS_RULE_VERSION,
        PROMETHEUS_RULE_KIND,
    );
    match kube::discovery::pinned_kind(client, &gvk).await {
        Ok((ar, _)) => {
            tracing::info!("PrometheusRule is served: Rulers may select PrometheusRules");
            Some(ar)
        }
        Err(e) => {
            tracing::info!(error = %e, "PrometheusRule is not served: Rulers read ConfigMaps only");
            None
        }
    }
}

/// Runs the controllers until `shutdown` resolves, then lets in-flight reconciles finish.
/// Whether `PrometheusRule`s are watched is decided once, here, by discovery.
pub async fn run(
    client: Client,
    scope: Scope,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let prometheus_rules = discover_prometheus_rules(&client).await;
    let ctx = Context::new(client.clone(), metrics, prometheus_rules.clone());
    let managed = watcher::Config::default().labels("app.kubernetes.io/managed-by=strata-operator");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let mc = Controller::new(
        scope.api::<MetricsCluster>(&client),
        watcher::Config::default(),
    )
    .owns(scope.api::<Deployment>(&client), managed.clone())
    .owns(
        scope.api::<StoreGateway>(&client),
        watcher::Config::default(),
    )
    .owns(scope.api::<Compactor>(&client), watcher::Config::default())
    .watches(
        scope.api::<Service>(&client),
        managed.clone(),
        |svc: Service| {
            let cluster = svc.labels().get(CLUSTER_LABEL)?.clone();
            // A sidecar Service in another namespace names its cluster's namespace.
            let ns = match svc.labels().get(desired::CLUSTER_NAMESPACE_LABEL) {
                Some(ns) => ns.clone(),
                None => svc.namespace()?,
            };
            Some(ObjectRef::<MetricsCluster>::new(&cluster).within(&ns))
        },
    );
    // Across namespaces: a Namespace's labels decide which clusters' sidecar Services it holds.
    let mc = if scope.namespace.is_none() {
        let clusters = mc.store();
        mc.watches(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
            move |_: Namespace| {
                clusters
                    .state()
                    .iter()
                    .filter(|c| c.spec.sidecar.namespace_selector.is_some())
                    .map(|c| ObjectRef::from_obj(c.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
    } else {
        mc
    };
    let mc = mc
        .graceful_shutdown_on(stop(rx.clone()))
        .run(reconcile_cluster, error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));

    let sg = Controller::new(
        scope.api::<StoreGateway>(&client),
        watcher::Config::default(),
    )
    .owns(scope.api::<StatefulSet>(&client), managed.clone())
    .owns(scope.api::<Service>(&client), managed.clone())
    .owns(scope.api::<PodDisruptionBudget>(&client), managed.clone())
    .graceful_shutdown_on(stop(rx.clone()))
    .run(reconcile_store_gateway, error_policy, ctx.clone())
    .for_each(|_| futures::future::ready(()));

    let cp = Controller::new(scope.api::<Compactor>(&client), watcher::Config::default())
        .owns(scope.api::<StatefulSet>(&client), managed.clone())
        .graceful_shutdown_on(stop(rx.clone()))
        .run(reconcile_compactor, error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));

    let ruler = Controller::new(scope.api::<Ruler>(&client), watcher::Config::default())
        .owns(scope.api::<StatefulSet>(&client), managed.clone())
        .owns(scope.api::<Service>(&client), managed.clone())
        .owns(scope.api::<ConfigMap>(&client), managed);
    let rulers = ruler.store();
    let ruler = ruler.watches(
        scope.api::<ConfigMap>(&client),
        watcher::Config::default(),
        move |cm: ConfigMap| {
            let prefix = crate::rules::configmap_file_prefix(&cm.name_any());
            rulers_selecting(
                &rulers.state(),
                &cm,
                |r| r.spec.rule_selector.as_ref(),
                &prefix,
            )
        },
    );
    let ruler = match &prometheus_rules {
        Some(ar) => {
            let rulers = ruler.store();
            let api = match &scope.namespace {
                Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, ar),
                None => Api::<DynamicObject>::all_with(client.clone(), ar),
            };
            ruler.watches_with(
                api,
                ar.clone(),
                watcher::Config::default(),
                move |pr: DynamicObject| {
                    let file = crate::rules::prometheus_rule_file_key(&pr.name_any());
                    rulers_selecting(
                        &rulers.state(),
                        &pr,
                        |r| r.spec.prometheus_rule_selector.as_ref(),
                        &file,
                    )
                },
            )
        }
        None => ruler,
    };
    let ruler = ruler
        .graceful_shutdown_on(stop(rx))
        .run(reconcile_ruler, error_policy, ctx)
        .for_each(|_| futures::future::ready(()));

    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    futures::join!(mc, sg, cp, ruler);
}

/// A kind the controllers reconcile.
trait Kind:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
}

impl Kind for MetricsCluster {
    const KIND: &'static str = "MetricsCluster";
}
impl Kind for StoreGateway {
    const KIND: &'static str = "StoreGateway";
}
impl Kind for Compactor {
    const KIND: &'static str = "Compactor";
}
impl Kind for Ruler {
    const KIND: &'static str = "Ruler";
}

/// Whether `selector` selects an object with `labels`; a selector that does not parse selects nothing.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(labels))
}

/// Whether an object is one of the operator's own (never a rule source).
fn is_managed<K: Resource>(obj: &K) -> bool {
    obj.meta()
        .labels
        .as_ref()
        .and_then(|l| l.get("app.kubernetes.io/managed-by"))
        .is_some_and(|v| v == desired::MANAGED_BY)
}

/// The Rulers in `obj`'s namespace whose selector (picked by `pick`) selects it, or that run a file
/// of it (a source whose labels no longer match must leave their rule files at once).
fn rulers_selecting<K: Resource>(
    rulers: &[Arc<Ruler>],
    obj: &K,
    pick: impl Fn(&Ruler) -> Option<&LabelSelector>,
    file_prefix: &str,
) -> Vec<ObjectRef<Ruler>> {
    if is_managed(obj) {
        return Vec::new();
    }
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let empty = BTreeMap::new();
    let labels = obj.meta().labels.as_ref().unwrap_or(&empty);
    rulers
        .iter()
        .filter(|r| r.namespace().as_deref() == Some(ns.as_str()))
        .filter(|r| {
            pick(r).is_some_and(|s| selects(s, labels))
                || r.status
                    .as_ref()
                    .is_some_and(|s| s.rule_files.iter().any(|f| f.starts_with(file_prefix)))
        })
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

fn key<K: Kind>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::KIND,
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

fn error_policy<K: Kind>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(key(obj.as_ref())).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let delay = Duration::from_secs(2u64.saturating_pow(n.min(8))).min(Duration::from_secs(300));
    warn!(kind = K::KIND, name = %obj.name_any(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Runs `inner`, records metrics, and on failure reports `Degraded` status + a Warning Event.
async fn instrumented<K, F, S>(
    obj: Arc<K>,
    ctx: Arc<Context>,
    inner: F,
    degraded: S,
) -> Result<Action>
where
    K: Kind,
    F: std::future::Future<Output = Result<Action>>,
    S: FnOnce(&K, &Error) -> Option<serde_json::Value>,
{
    let start = Instant::now();
    let labels = KindLabels { kind: K::KIND };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
    let span = info_span!("reconcile", kind = K::KIND, namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any());
    // Being deleted: the garbage collector removes what it owns. Applying now would re-create
    // children the collector has just deleted, and race it until the owner is gone.
    if obj.meta().deletion_timestamp.is_some() {
        span.in_scope(|| debug!("being deleted; nothing to reconcile"));
        return Ok(Action::await_change());
    }
    let result = inner.instrument(span).await;
    ctx.metrics
        .duration
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    match &result {
        Ok(_) => {
            if let Ok(mut f) = ctx.failures.lock() {
                f.remove(&key(obj.as_ref()));
            }
        }
        Err(e) => {
            ctx.metrics
                .errors
                .get_or_create(&ErrorLabels {
                    kind: K::KIND,
                    category: e.category(),
                })
                .inc();
            if let Some(status) = degraded(obj.as_ref(), e)
                && let Err(se) = write_status(&ctx.client, obj.as_ref(), status).await
            {
                warn!(error = %se, "write Degraded status");
            }
            let event = Event {
                type_: EventType::Warning,
                reason: e.category().into(),
                note: Some(truncate(&e.to_string(), 1000)),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(ee) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
                warn!(error = %ee, "publish event");
            }
        }
    }
    result
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Applies `obj` by server-side apply unless what was last applied is identical. Returns whether it wrote.
pub async fn apply<K>(api: &Api<K>, mut obj: K) -> Result<bool>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let name = obj.meta().name.clone().ok_or_else(|| Error::MissingField {
        field: "metadata.name".into(),
    })?;
    let json = serde_json::to_vec(&obj).map_err(|source| Error::Serialize {
        what: name.clone(),
        source,
    })?;
    let hash = desired::checksum(&[&json]);
    obj.meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(APPLIED_HASH_ANNOTATION.into(), hash.clone());
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let current = api
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("get {kind} {name}")))?;
    if current
        .as_ref()
        .and_then(|c| c.annotations().get(APPLIED_HASH_ANNOTATION))
        == Some(&hash)
    {
        return Ok(false);
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .map_err(Error::kube(format!("apply {kind} {name}")))?;
    Ok(true)
}

/// Deletes `name` if it exists and is controlled by the object with `owner_uid`.
async fn delete_owned<K>(api: &Api<K>, name: &str, owner_uid: &str) -> Result<bool>
where
    K: Resource + Clone + Debug + DeserializeOwned,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let Some(current) = api
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("get {kind} {name}")))?
    else {
        return Ok(false);
    };
    if !current
        .owner_references()
        .iter()
        .any(|o| o.uid == owner_uid)
    {
        return Ok(false);
    }
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(Error::Kube {
            action: format!("delete {kind} {name}"),
            source: e,
        }),
    }
}

async fn write_status<K: Kind>(client: &Client, obj: &K, status: serde_json::Value) -> Result<()> {
    let ns = obj.namespace().ok_or_else(|| Error::MissingField {
        field: "metadata.namespace".into(),
    })?;
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::KIND,
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube(format!("write {} status", K::KIND)))?;
    Ok(())
}

/// One wanted condition: status, reason, message.
type Want<'a> = (&'a str, bool, &'a str, String);

/// Conditions for `wants`, keeping `lastTransitionTime` from `old` where the status did not change.
pub fn conditions(
    old: &[Condition],
    generation: Option<i64>,
    wants: &[Want<'_>],
) -> Vec<Condition> {
    wants
        .iter()
        .map(|(type_, status, reason, message)| {
            let status = if *status { "True" } else { "False" };
            condition(old, generation, type_, status, reason, message.clone())
        })
        .collect()
}

/// One condition (`status` is `True`, `False` or `Unknown`), keeping `lastTransitionTime` from
/// `old` when the status did not change.
fn condition(
    old: &[Condition],
    generation: Option<i64>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> Condition {
    let last_transition_time = match old.iter().find(|c| c.type_ == type_) {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Conditions equal in everything but `lastTransitionTime`.
fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
                && x.observed_generation == y.observed_generation
        })
}

fn degraded_conditions(old: &[Condition], generation: Option<i64>, err: &Error) -> Vec<Condition> {
    conditions(
        old,
        generation,
        &[
            (
                "Ready",
                false,
                "Degraded",
                "see the Degraded condition".into(),
            ),
            (
                "Progressing",
                false,
                "Degraded",
                "blocked on an error".into(),
            ),
            ("Degraded", true, err.category(), err.to_string()),
        ],
    )
}

fn healthy_conditions(
    old: &[Condition],
    generation: Option<i64>,
    ready: bool,
    why: String,
) -> Vec<Condition> {
    conditions(
        old,
        generation,
        &[
            (
                "Ready",
                ready,
                if ready { "AllReady" } else { "NotReady" },
                if ready {
                    "all objects are ready".into()
                } else {
                    why.clone()
                },
            ),
            (
                "Progressing",
                !ready,
                if ready { "Settled" } else { "Rollout" },
                if ready { "nothing to do".into() } else { why },
            ),
            (
                "Degraded",
                false,
                "NoErrors",
                "the last reconcile succeeded".into(),
            ),
        ],
    )
}

/// Reads the objstore YAML named by `mc.spec.objectStorage.secretRef`.
async fn objstore_yaml(client: &Client, mc: &MetricsCluster) -> Result<Vec<u8>> {
    let ns = mc.namespace().unwrap_or_default();
    let r = &mc.spec.object_storage.secret_ref;
    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get_opt(&r.name)
        .await
        .map_err(Error::kube(format!("get Secret {}", r.name)))?
        .ok_or_else(|| Error::InvalidSpec {
            field: "spec.objectStorage.secretRef.name".into(),
            message: format!(
                "Secret {:?} does not exist in namespace {ns:?}: create it with the objstore YAML under key {:?}",
                r.name, r.key
            ),
        })?;
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| b.0.clone())
        .ok_or_else(|| Error::InvalidSpec {
            field: "spec.objectStorage.secretRef.key".into(),
            message: format!(
                "Secret {:?} has no key {:?}: add the objstore YAML under that key or point key at the one that holds it",
                r.name, r.key
            ),
        })
}

async fn cluster_of(client: &Client, ns: &str, name: &str) -> Result<MetricsCluster> {
    Api::<MetricsCluster>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("get MetricsCluster {name}")))?
        .ok_or_else(|| Error::InvalidSpec {
            field: "spec.clusterRef.name".into(),
            message: format!("MetricsCluster {name:?} does not exist in namespace {ns:?}"),
        })
}

fn uid_of<K: Resource>(obj: &K) -> Result<String> {
    obj.meta().uid.clone().ok_or_else(|| Error::MissingField {
        field: "metadata.uid".into(),
    })
}

fn ns_of<K: Resource>(obj: &K) -> Result<String> {
    obj.meta()
        .namespace
        .clone()
        .ok_or_else(|| Error::MissingField {
            field: "metadata.namespace".into(),
        })
}

/// Finalizer a `MetricsCluster` carries while it has sidecar Services in other namespaces (which
/// no owner reference can collect).
pub const REMOTE_SIDECARS_FINALIZER: &str = "strata.dev/remote-sidecar-services";

async fn reconcile_cluster(mc: Arc<MetricsCluster>, ctx: Arc<Context>) -> Result<Action> {
    if mc.metadata.deletion_timestamp.is_some() && has_remote_finalizer(&mc) {
        // Deleted: remove its Services in other namespaces, then let it go.
        let span = info_span!("finalize", kind = "MetricsCluster", name = %mc.name_any());
        let done = async {
            let ns = ns_of(mc.as_ref())?;
            prune_remote_sidecars(&ctx.client, &mc.name_any(), &ns, &[]).await?;
            set_remote_finalizer(&ctx.client, &mc, false).await
        }
        .instrument(span)
        .await;
        return done.map(|()| Action::await_change());
    }
    let degraded = |mc: &MetricsCluster, e: &Error| {
        let old = mc.status.clone().unwrap_or_default();
        let status = MetricsClusterStatus {
            observed_generation: mc.metadata.generation,
            conditions: degraded_conditions(&old.conditions, mc.metadata.generation, e),
            endpoints: old.endpoints.clone(),
        };
        (!same_status_mc(&old, &status)).then(|| serde_json::to_value(&status).unwrap_or_default())
    };
    instrumented(
        mc.clone(),
        ctx.clone(),
        reconcile_cluster_inner(mc, ctx),
        degraded,
    )
    .await
}

fn has_remote_finalizer(mc: &MetricsCluster) -> bool {
    mc.finalizers()
        .iter()
        .any(|f| f == REMOTE_SIDECARS_FINALIZER)
}

/// Adds or removes [`REMOTE_SIDECARS_FINALIZER`] (server-side apply of that one list item, so
/// other managers' finalizers and fields are untouched); no write when already so.
async fn set_remote_finalizer(client: &Client, mc: &MetricsCluster, on: bool) -> Result<()> {
    if has_remote_finalizer(mc) == on {
        return Ok(());
    }
    let ns = ns_of(mc)?;
    let finalizers: Vec<&str> = if on {
        vec![REMOTE_SIDECARS_FINALIZER]
    } else {
        vec![]
    };
    let patch = serde_json::json!({
        "apiVersion": MetricsCluster::api_version(&()),
        "kind": MetricsCluster::KIND,
        "metadata": {"name": mc.name_any(), "finalizers": finalizers},
    });
    Api::<MetricsCluster>::namespaced(client.clone(), &ns)
        .patch(
            &mc.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::kube("set the MetricsCluster finalizer"))?;
    Ok(())
}

/// The namespaces other than its own that `spec.sidecar.namespaceSelector` selects.
async fn remote_namespaces(client: &Client, mc: &MetricsCluster) -> Result<Vec<String>> {
    let Some(sel) = &mc.spec.sidecar.namespace_selector else {
        return Ok(Vec::new());
    };
    parse_selector("spec.sidecar.namespaceSelector", sel)?;
    let own = ns_of(mc)?;
    let list = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 403 => Error::InvalidSpec {
                field: "spec.sidecar.namespaceSelector".into(),
                message: format!(
                    "the operator may not list Namespaces ({}): run it for all namespaces (chart value watchNamespace unset) or remove the namespaceSelector",
                    s.message
                ),
            },
            e => Error::Kube {
                action: "list Namespaces".into(),
                source: e,
            },
        })?;
    let mut names: Vec<String> = list
        .items
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .filter(|n| selects(sel, n.labels()))
        .map(|n| n.name_any())
        .filter(|n| *n != own)
        .collect();
    names.sort();
    Ok(names)
}

/// Deletes the sidecar Services of cluster `cluster` (of namespace `ns`) in namespaces not in `keep`.
async fn prune_remote_sidecars(
    client: &Client,
    cluster: &str,
    ns: &str,
    keep: &[String],
) -> Result<()> {
    let all = Api::<Service>::all(client.clone())
        .list(&ListParams::default().labels(&format!(
            "{CLUSTER_LABEL}={cluster},{}={ns}",
            desired::CLUSTER_NAMESPACE_LABEL
        )))
        .await
        .map_err(Error::kube("list sidecar Services in other namespaces"))?;
    for svc in all.items {
        let Some(svc_ns) = svc.namespace() else {
            continue;
        };
        if keep.contains(&svc_ns) {
            continue;
        }
        match Api::<Service>::namespaced(client.clone(), &svc_ns)
            .delete(&svc.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(Error::Kube {
                    action: format!("delete Service {svc_ns}/{}", svc.name_any()),
                    source: e,
                });
            }
        }
    }
    Ok(())
}

/// Sidecar Services in the namespaces `spec.sidecar.namespaceSelector` selects (and none in
/// others), the finalizer that removes them with the cluster; returns their StoreAPI endpoints.
async fn sync_remote_sidecars(client: &Client, mc: &MetricsCluster) -> Result<Vec<String>> {
    let ns = ns_of(mc)?;
    let cluster = mc.name_any();
    let wanted = remote_namespaces(client, mc).await?;
    if !wanted.is_empty() {
        set_remote_finalizer(client, mc, true).await?;
    }
    let mut endpoints = Vec::new();
    for target in &wanted {
        let svc = desired::remote_sidecar_service(mc, target)?;
        apply(&Api::<Service>::namespaced(client.clone(), target), svc).await?;
        endpoints.push(desired::dnssrv_endpoint(
            &desired::remote_sidecar_service_name(&cluster, &ns),
            target,
        ));
    }
    // Only a cluster that has (or had) remote Services needs the cluster-wide listing.
    if mc.spec.sidecar.namespace_selector.is_some() || has_remote_finalizer(mc) {
        prune_remote_sidecars(client, &cluster, &ns, &wanted).await?;
    }
    if wanted.is_empty() {
        set_remote_finalizer(client, mc, false).await?;
    }
    Ok(endpoints)
}

fn same_status_mc(a: &MetricsClusterStatus, b: &MetricsClusterStatus) -> bool {
    a.observed_generation == b.observed_generation
        && a.endpoints == b.endpoints
        && same_conditions(&a.conditions, &b.conditions)
}

async fn reconcile_cluster_inner(mc: Arc<MetricsCluster>, ctx: Arc<Context>) -> Result<Action> {
    let client = &ctx.client;
    let ns = ns_of(mc.as_ref())?;
    let uid = uid_of(mc.as_ref())?;
    let cluster = mc.name_any();

    // The owned StoreGateway / Compactor of the inline templates (or their removal).
    let sg_api = Api::<StoreGateway>::namespaced(client.clone(), &ns);
    match desired::inline_store_gateway(&mc)? {
        Some(sg) => {
            apply(&sg_api, sg).await?;
        }
        None => {
            delete_owned(&sg_api, &desired::inline_store_gateway_name(&cluster), &uid).await?;
        }
    }
    let c_api = Api::<Compactor>::namespaced(client.clone(), &ns);
    match desired::inline_compactor(&mc)? {
        Some(c) => {
            apply(&c_api, c).await?;
        }
        None => {
            delete_owned(&c_api, &desired::inline_compactor_name(&cluster), &uid).await?;
        }
    }

    // The StoreAPI endpoints: the sidecars' headless Service, every store shard's and every ruler's.
    let svc_api = Api::<Service>::namespaced(client.clone(), &ns);
    let shard_services = svc_api
        .list(&ListParams::default().labels(&format!(
            "{CLUSTER_LABEL}={cluster},{STOREAPI_LABEL}=true,app.kubernetes.io/component in (store-gateway,ruler)"
        )))
        .await
        .map_err(Error::kube("list store shard and ruler Services"))?;
    let mut endpoints = BTreeSet::from([desired::dnssrv_endpoint(
        &desired::sidecar_service_name(&cluster),
        &ns,
    )]);
    endpoints.extend(
        shard_services
            .items
            .iter()
            .map(|s| desired::dnssrv_endpoint(&s.name_any(), &ns)),
    );
    endpoints.extend(sync_remote_sidecars(client, &mc).await?);
    let endpoints: Vec<String> = endpoints.into_iter().collect();

    let q = desired::querier(&mc, &endpoints)?;
    apply(
        &Api::<ServiceAccount>::namespaced(client.clone(), &ns),
        q.service_account,
    )
    .await?;
    apply(&svc_api, q.sidecar_service).await?;
    apply(&svc_api, q.service).await?;
    let deploy_api = Api::<Deployment>::namespaced(client.clone(), &ns);
    apply(&deploy_api, q.deployment).await?;

    // The Secret is only mounted by store gateways and the compactor, but a missing one is the
    // cluster's problem too: report it here.
    objstore_yaml(client, &mc).await?;

    let deploy = deploy_api
        .get_opt(&desired::querier_name(&cluster))
        .await
        .map_err(Error::kube("get querier Deployment"))?;
    let mut waiting = Vec::new();
    match deploy.as_ref() {
        Some(d) => waiting.extend(rollout_waiting(d).map(|w| format!("querier: {w}"))),
        None => waiting.push("querier: the Deployment is not there yet".into()),
    }
    // The owned StoreGateway and Compactor count too: the cluster is Ready when all it made is.
    if mc.spec.store_gateway.is_some() {
        let name = desired::inline_store_gateway_name(&cluster);
        waiting.extend(
            not_ready(&sg_api, &name, |o| {
                o.status.as_ref().map(|s| &s.conditions[..])
            })
            .await?,
        );
    }
    if mc.spec.compactor.is_some() {
        let name = desired::inline_compactor_name(&cluster);
        waiting.extend(
            not_ready(&c_api, &name, |o| {
                o.status.as_ref().map(|s| &s.conditions[..])
            })
            .await?,
        );
    }
    let ready = waiting.is_empty();
    let old = mc.status.clone().unwrap_or_default();
    let status = MetricsClusterStatus {
        observed_generation: mc.metadata.generation,
        conditions: healthy_conditions(
            &old.conditions,
            mc.metadata.generation,
            ready,
            waiting.join("; "),
        ),
        endpoints,
    };
    if !same_status_mc(&old, &status) {
        let v = serde_json::to_value(&status).map_err(|source| Error::Serialize {
            what: "status".into(),
            source,
        })?;
        write_status(client, mc.as_ref(), v).await?;
    }
    Ok(Action::requeue(RESYNC))
}

fn same_status_sg(a: &StoreGatewayStatus, b: &StoreGatewayStatus) -> bool {
    a.observed_generation == b.observed_generation
        && a.shards == b.shards
        && a.ready_shards == b.ready_shards
        && same_conditions(&a.conditions, &b.conditions)
}

async fn reconcile_store_gateway(sg: Arc<StoreGateway>, ctx: Arc<Context>) -> Result<Action> {
    let degraded = |sg: &StoreGateway, e: &Error| {
        let old = sg.status.clone().unwrap_or_default();
        let status = StoreGatewayStatus {
            observed_generation: sg.metadata.generation,
            conditions: degraded_conditions(&old.conditions, sg.metadata.generation, e),
            ..old.clone()
        };
        (!same_status_sg(&old, &status)).then(|| serde_json::to_value(&status).unwrap_or_default())
    };
    instrumented(
        sg.clone(),
        ctx.clone(),
        reconcile_store_gateway_inner(sg, ctx),
        degraded,
    )
    .await
}

/// `Some("<Kind> <name> is not Ready")` unless object `name` says `Ready=True` for its current spec.
async fn not_ready<K: Kind>(
    api: &Api<K>,
    name: &str,
    conditions: impl Fn(&K) -> Option<&[Condition]>,
) -> Result<Option<String>> {
    let obj = api
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("get {} {name}", K::KIND)))?;
    let ready = obj
        .as_ref()
        .is_some_and(|o| ready_condition(conditions(o), o.meta().generation));
    Ok((!ready).then(|| format!("{} {name} is not Ready", K::KIND)))
}

/// Whether `conditions` say `Ready=True` for `generation` (not for an older spec).
fn ready_condition(conditions: Option<&[Condition]>, generation: Option<i64>) -> bool {
    conditions
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True" && c.observed_generation == generation)
}

/// What a Deployment's rollout still waits for, or `None` once every replica runs the current
/// template and is available and no Pod of an older template is left (as `kubectl rollout status`
/// judges it). Counting available Pods alone says "ready" halfway through a rollout.
fn rollout_waiting(d: &Deployment) -> Option<String> {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = d.status.as_ref() else {
        return Some("the Deployment has no status yet".into());
    };
    let (updated, total, available) = (
        st.updated_replicas.unwrap_or(0),
        st.replicas.unwrap_or(0),
        st.available_replicas.unwrap_or(0),
    );
    if st.observed_generation < d.metadata.generation {
        Some("the Deployment controller has not seen the new template yet".into())
    } else if updated < want {
        Some(format!("{updated} of {want} replicas updated"))
    } else if total > updated {
        Some(format!("{} old replicas terminating", total - updated))
    } else if available < want {
        Some(format!("{available} of {want} replicas available"))
    } else {
        None
    }
}

/// Whether every StatefulSet of a shard set has all its replicas ready for its current spec.
fn statefulset_ready(sts: &StatefulSet) -> bool {
    let want = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = sts.status.as_ref() else {
        return false;
    };
    st.observed_generation >= sts.metadata.generation
        && st.ready_replicas.unwrap_or(0) >= want
        && st.updated_replicas.unwrap_or(0) >= want
}

async fn reconcile_store_gateway_inner(sg: Arc<StoreGateway>, ctx: Arc<Context>) -> Result<Action> {
    let client = &ctx.client;
    let ns = ns_of(sg.as_ref())?;
    let uid = uid_of(sg.as_ref())?;
    let name = sg.name_any();
    let mc = cluster_of(client, &ns, &sg.spec.cluster_ref.name).await?;
    let inputs = ClusterInputs::new(&mc, &objstore_yaml(client, &mc).await?);
    let shards = sg.spec.params.shards;

    // The new shard set first, so that no block is unserved while re-sharding.
    apply(
        &Api::<ServiceAccount>::namespaced(client.clone(), &ns),
        desired::store_service_account(&sg)?,
    )
    .await?;
    let sts_api = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    let svc_api = Api::<Service>::namespaced(client.clone(), &ns);
    let pdb_api = Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns);
    for shard in desired::store_shards(&sg, &inputs, shards)? {
        apply(&svc_api, shard.service).await?;
        apply(&pdb_api, shard.pdb).await?;
        apply(&sts_api, shard.statefulset).await?;
    }

    let existing = sts_api
        .list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={name},app.kubernetes.io/component=store-gateway"
        )))
        .await
        .map_err(Error::kube("list store shard StatefulSets"))?;
    let mut sets: BTreeMap<i32, Vec<&StatefulSet>> = BTreeMap::new();
    for sts in existing
        .items
        .iter()
        .filter(|s| s.owner_references().iter().any(|o| o.uid == uid))
    {
        if let Some(n) = sts
            .labels()
            .get(SHARD_SET_LABEL)
            .and_then(|v| v.parse().ok())
        {
            sets.entry(n).or_default().push(sts);
        }
    }
    let current = sets.get(&shards).cloned().unwrap_or_default();
    let ready_shards = current.iter().filter(|s| statefulset_ready(s)).count() as i32;
    let new_set_ready = ready_shards == shards && current.len() as i32 == shards;
    let old_sets: Vec<i32> = sets.keys().copied().filter(|n| *n != shards).collect();

    // Old shard sets go only once the new one serves every block.
    if new_set_ready {
        for n in &old_sets {
            for index in 0..*n {
                let shard = desired::shard_name(&name, *n, index);
                delete_owned(&sts_api, &shard, &uid).await?;
                delete_owned(&pdb_api, &shard, &uid).await?;
                delete_owned(&svc_api, &shard, &uid).await?;
            }
        }
    }
    let serving = if new_set_ready || old_sets.is_empty() {
        shards
    } else {
        old_sets.last().copied().unwrap_or(shards)
    };
    let why = if old_sets.is_empty() || new_set_ready {
        format!("{ready_shards} of {shards} shards ready")
    } else {
        format!(
            "re-sharding {} → {shards}: {ready_shards} of {shards} new shards ready; the old set serves until then",
            serving
        )
    };
    let ready = new_set_ready;
    let old = sg.status.clone().unwrap_or_default();
    let status = StoreGatewayStatus {
        observed_generation: sg.metadata.generation,
        shards: serving,
        ready_shards,
        conditions: healthy_conditions(&old.conditions, sg.metadata.generation, ready, why),
    };
    if !same_status_sg(&old, &status) {
        let v = serde_json::to_value(&status).map_err(|source| Error::Serialize {
            what: "status".into(),
            source,
        })?;
        write_status(client, sg.as_ref(), v).await?;
    }
    Ok(Action::requeue(RESYNC))
}

fn same_status_c(a: &CompactorStatus, b: &CompactorStatus) -> bool {
    a.observed_generation == b.observed_generation
        && a.last_successful_run == b.last_successful_run
        && same_conditions(&a.conditions, &b.conditions)
}

async fn reconcile_compactor(c: Arc<Compactor>, ctx: Arc<Context>) -> Result<Action> {
    let degraded = |c: &Compactor, e: &Error| {
        let old = c.status.clone().unwrap_or_default();
        let mut conditions = degraded_conditions(&old.conditions, c.metadata.generation, e);
        conditions.extend(
            old.conditions
                .iter()
                .filter(|c| c.type_ == "Halted")
                .cloned(),
        );
        let status = CompactorStatus {
            observed_generation: c.metadata.generation,
            conditions,
            ..old.clone()
        };
        (!same_status_c(&old, &status)).then(|| serde_json::to_value(&status).unwrap_or_default())
    };
    instrumented(
        c.clone(),
        ctx.clone(),
        reconcile_compactor_inner(c, ctx),
        degraded,
    )
    .await
}

async fn reconcile_compactor_inner(c: Arc<Compactor>, ctx: Arc<Context>) -> Result<Action> {
    let client = &ctx.client;
    let ns = ns_of(c.as_ref())?;
    let mc = cluster_of(client, &ns, &c.spec.cluster_ref.name).await?;
    let inputs = ClusterInputs::new(&mc, &objstore_yaml(client, &mc).await?);
    let objs = desired::compactor(&c, &inputs)?;
    apply(
        &Api::<ServiceAccount>::namespaced(client.clone(), &ns),
        objs.service_account,
    )
    .await?;
    apply(
        &Api::<Service>::namespaced(client.clone(), &ns),
        objs.service,
    )
    .await?;
    let sts_api = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    apply(&sts_api, objs.statefulset).await?;
    let sts = sts_api
        .get_opt(&c.name_any())
        .await
        .map_err(Error::kube("get compactor StatefulSet"))?;
    let ready = sts.as_ref().is_some_and(statefulset_ready);
    let old = c.status.clone().unwrap_or_default();
    // The compactor's own account (halted groups, last clean pass), read from its pod.
    let report = if ready {
        Some(read_compactor_pod(&ctx, &ns, &format!("{}-0", c.name_any())).await)
    } else {
        None
    };
    let mut conditions = healthy_conditions(
        &old.conditions,
        c.metadata.generation,
        ready,
        "the compactor pod is not ready".into(),
    );
    conditions.push(halted_condition(
        &old.conditions,
        c.metadata.generation,
        report.as_ref(),
    ));
    let last_successful_run = match &report {
        Some(Ok(r)) => r
            .last_successful_run_rfc3339()
            .or(old.last_successful_run.clone()),
        _ => old.last_successful_run.clone(),
    };
    let status = CompactorStatus {
        observed_generation: c.metadata.generation,
        conditions,
        last_successful_run,
    };
    if !same_status_c(&old, &status) {
        let v = serde_json::to_value(&status).map_err(|source| Error::Serialize {
            what: "status".into(),
            source,
        })?;
        write_status(client, c.as_ref(), v).await?;
    }
    // A new halt also becomes a Warning Event (what `kubectl describe` and event exporters show).
    let halted_now = |cs: &[Condition]| {
        cs.iter()
            .find(|c| c.type_ == "Halted" && c.status == "True")
            .map(|c| c.message.clone())
    };
    if let (None, Some(message)) = (halted_now(&old.conditions), halted_now(&status.conditions)) {
        let event = Event {
            type_: EventType::Warning,
            reason: "CompactionHalted".into(),
            note: Some(truncate(&message, 1000)),
            action: "ReadCompactorStatus".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &c.object_ref(&())).await {
            warn!(error = %e, "publish event");
        }
    }
    // A halt shows in no Kubernetes object: look again soon while the pod runs.
    Ok(Action::requeue(if ready { COMPACTOR_POLL } else { RESYNC }))
}

/// How often a running compactor's own status is read.
pub const COMPACTOR_POLL: Duration = Duration::from_secs(30);

/// Reads `strata compact`'s status endpoint on pod `pod` (its IP, the HTTP port).
async fn read_compactor_pod(
    ctx: &Context,
    ns: &str,
    pod: &str,
) -> std::result::Result<observe::CompactorReport, String> {
    let found = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .get_opt(pod)
        .await
        .map_err(|e| format!("cannot read Pod {pod}: {e}"))?;
    let ip = found
        .and_then(|p| p.status)
        .and_then(|s| s.pod_ip)
        .ok_or_else(|| format!("Pod {pod} has no IP yet"))?;
    let url = observe::compactor_status_url(&ip, desired::HTTP_PORT);
    observe::read_compactor(&ctx.http, &url).await
}

/// The `Halted` condition from the compactor's report: `True` naming the overlapping blocks,
/// `False`, or `Unknown` when the pod is not ready or could not be read.
fn halted_condition(
    old: &[Condition],
    generation: Option<i64>,
    report: Option<&std::result::Result<observe::CompactorReport, String>>,
) -> Condition {
    let (status, reason, message) = match report {
        None => (
            "Unknown",
            "NotRunning",
            "the compactor pod is not ready".to_string(),
        ),
        Some(Err(e)) => ("Unknown", "StatusUnreadable", e.clone()),
        Some(Ok(r)) if r.halted.is_empty() => (
            "False",
            "Compacting",
            "no compaction group is halted".to_string(),
        ),
        Some(Ok(r)) => (
            "True",
            "OverlappingBlocks",
            r.halted
                .iter()
                .map(|h| h.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    condition(old, generation, "Halted", status, reason, message)
}

fn same_status_ruler(a: &RulerStatus, b: &RulerStatus) -> bool {
    a.observed_generation == b.observed_generation
        && a.ready_replicas == b.ready_replicas
        && a.rule_files == b.rule_files
        && same_conditions(&a.conditions, &b.conditions)
}

async fn reconcile_ruler(r: Arc<Ruler>, ctx: Arc<Context>) -> Result<Action> {
    let degraded = |r: &Ruler, e: &Error| {
        let old = r.status.clone().unwrap_or_default();
        let mut conditions = degraded_conditions(&old.conditions, r.metadata.generation, e);
        conditions.extend(
            old.conditions
                .iter()
                .filter(|c| c.type_ == RULES_VALID)
                .cloned(),
        );
        let status = RulerStatus {
            observed_generation: r.metadata.generation,
            conditions,
            ..old.clone()
        };
        (!same_status_ruler(&old, &status))
            .then(|| serde_json::to_value(&status).unwrap_or_default())
    };
    instrumented(
        r.clone(),
        ctx.clone(),
        reconcile_ruler_inner(r, ctx),
        degraded,
    )
    .await
}

/// The condition saying whether every selected rule file is in use.
pub const RULES_VALID: &str = "RulesValid";

fn parse_selector(field: &str, s: &LabelSelector) -> Result<Selector> {
    Selector::try_from(s.clone()).map_err(|e| Error::InvalidSpec {
        field: field.into(),
        message: format!("not a valid label selector: {e}"),
    })
}

async fn reconcile_ruler_inner(r: Arc<Ruler>, ctx: Arc<Context>) -> Result<Action> {
    let client = &ctx.client;
    let ns = ns_of(r.as_ref())?;
    desired::validate_ruler(&r)?;
    let mc = cluster_of(client, &ns, &r.spec.cluster_ref.name).await?;
    let inputs = ClusterInputs::new(&mc, &objstore_yaml(client, &mc).await?);

    // The rule sources: selected ConfigMaps (never the operator's own) and PrometheusRules.
    let mut configmaps = Vec::new();
    if let Some(sel) = &r.spec.rule_selector {
        let sel = parse_selector("spec.ruleSelector", sel)?;
        configmaps = Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels_from(&sel))
            .await
            .map_err(Error::kube("list rule ConfigMaps"))?
            .items
            .into_iter()
            .filter(|c| !is_managed(c))
            .collect();
    }
    let mut prometheus_rules = Vec::new();
    let mut notes = Vec::new();
    if let Some(sel) = &r.spec.prometheus_rule_selector {
        let sel = parse_selector("spec.prometheusRuleSelector", sel)?;
        match &ctx.prometheus_rules {
            Some(ar) => {
                prometheus_rules = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, ar)
                    .list(&ListParams::default().labels_from(&sel))
                    .await
                    .map_err(Error::kube("list PrometheusRules"))?
                    .items;
            }
            None => notes.push(
                "spec.prometheusRuleSelector is set but the PrometheusRule CRD was not served when the operator started"
                    .to_string(),
            ),
        }
    }
    let collected = crate::rules::collect(&configmaps, &prometheus_rules);

    let objs = desired::ruler(&r, &inputs, &collected.files)?;
    apply(
        &Api::<ServiceAccount>::namespaced(client.clone(), &ns),
        objs.service_account,
    )
    .await?;
    apply(
        &Api::<ConfigMap>::namespaced(client.clone(), &ns),
        objs.config_map,
    )
    .await?;
    apply(
        &Api::<Service>::namespaced(client.clone(), &ns),
        objs.service,
    )
    .await?;
    let sts_api = Api::<StatefulSet>::namespaced(client.clone(), &ns);
    apply(&sts_api, objs.statefulset).await?;
    let sts = sts_api
        .get_opt(&r.name_any())
        .await
        .map_err(Error::kube("get ruler StatefulSet"))?;
    let ready = sts.as_ref().is_some_and(statefulset_ready);
    let ready_replicas = sts
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);

    let old = r.status.clone().unwrap_or_default();
    let mut problems: Vec<String> = collected.invalid.iter().map(|i| i.to_string()).collect();
    problems.extend(notes);
    let rules_valid = problems.is_empty();
    let rules_message = if rules_valid {
        format!("{} rule files in use", collected.files.len())
    } else {
        // No file count here: the message (and so the Events) changes only with the bad files.
        truncate(
            &format!("left out (the other files run): {}", problems.join("; ")),
            4000,
        )
    };
    let mut conditions = healthy_conditions(
        &old.conditions,
        r.metadata.generation,
        ready,
        format!("{ready_replicas} of {} ruler pods ready", r.spec.replicas),
    );
    conditions.extend(self::conditions(
        &old.conditions,
        r.metadata.generation,
        &[(
            RULES_VALID,
            rules_valid,
            if rules_valid {
                "AllValid"
            } else {
                "InvalidRuleFiles"
            },
            rules_message,
        )],
    ));
    let status = RulerStatus {
        observed_generation: r.metadata.generation,
        ready_replicas,
        rule_files: collected.files.keys().cloned().collect(),
        conditions,
    };
    if !same_status_ruler(&old, &status) {
        // One Warning Event per bad file, only when the set of bad files changed.
        let old_message = old
            .conditions
            .iter()
            .find(|c| c.type_ == RULES_VALID)
            .map(|c| c.message.as_str());
        let new_message = status
            .conditions
            .iter()
            .find(|c| c.type_ == RULES_VALID)
            .map(|c| c.message.as_str());
        if old_message != new_message {
            for bad in &collected.invalid {
                let event = Event {
                    type_: EventType::Warning,
                    reason: "InvalidRuleFile".into(),
                    note: Some(truncate(&bad.to_string(), 1000)),
                    action: "CollectRules".into(),
                    secondary: None,
                };
                if let Err(e) = ctx.recorder.publish(&event, &r.object_ref(&())).await {
                    warn!(error = %e, "publish event");
                }
            }
        }
        let v = serde_json::to_value(&status).map_err(|source| Error::Serialize {
            what: "status".into(),
            source,
        })?;
        write_status(client, r.as_ref(), v).await?;
    }
    Ok(Action::requeue(RESYNC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let first = healthy_conditions(&[], Some(1), false, "waiting".into());
        std::thread::sleep(Duration::from_millis(5));
        let again = healthy_conditions(&first, Some(1), false, "waiting".into());
        assert_eq!(first, again);
        let flipped = healthy_conditions(&first, Some(2), true, String::new());
        assert_ne!(
            flipped[0].last_transition_time,
            first[0].last_transition_time
        );
        assert!(!same_conditions(&first, &flipped));
    }

    #[test]
    fn degraded_names_the_field() {
        let err = Error::InvalidSpec {
            field: "spec.objectStorage.secretRef.name".into(),
            message: "Secret \"x\" does not exist".into(),
        };
        let c = degraded_conditions(&[], Some(3), &err);
        let d = c.iter().find(|c| c.type_ == "Degraded").expect("Degraded");
        assert_eq!(d.status, "True");
        assert!(d.message.starts_with("spec.objectStorage.secretRef.name"));
        assert_eq!(d.observed_generation, Some(3));
    }

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "q", "generation": generation},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": status,
        }))
        .expect("deployment")
    }

    #[test]
    fn a_deployment_is_ready_only_when_its_rollout_is_done() {
        let done = serde_json::json!({"observedGeneration": 2, "replicas": 2,
            "updatedReplicas": 2, "availableReplicas": 2, "readyReplicas": 2});
        assert_eq!(rollout_waiting(&deployment(2, done.clone())), None);
        // The controller has not acted on the new template yet.
        assert!(rollout_waiting(&deployment(3, done)).is_some());
        // Halfway: two old Pods and one new one are available, which is more than wanted.
        let halfway = serde_json::json!({"observedGeneration": 2, "replicas": 3,
            "updatedReplicas": 1, "availableReplicas": 3, "readyReplicas": 3});
        assert_eq!(
            rollout_waiting(&deployment(2, halfway)).as_deref(),
            Some("1 of 2 replicas updated")
        );
        // All new Pods are up but an old one is still there.
        let tail = serde_json::json!({"observedGeneration": 2, "replicas": 3,
            "updatedReplicas": 2, "availableReplicas": 3, "readyReplicas": 3});
        assert_eq!(
            rollout_waiting(&deployment(2, tail)).as_deref(),
            Some("1 old replicas terminating")
        );
        let starting = serde_json::json!({"observedGeneration": 2, "replicas": 2,
            "updatedReplicas": 2, "availableReplicas": 1});
        assert_eq!(
            rollout_waiting(&deployment(2, starting)).as_deref(),
            Some("1 of 2 replicas available")
        );
        assert!(rollout_waiting(&deployment(2, serde_json::Value::Null)).is_some());
    }

    #[test]
    fn long_event_notes_are_cut_on_a_char_boundary() {
        let s = "é".repeat(600);
        let t = truncate(&s, 1000);
        assert!(t.len() <= 1000);
        assert!(s.starts_with(&t));
    }
}
