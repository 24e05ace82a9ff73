//! The operator against a real control plane: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler, and kwok running one fake node. Workloads get real Pods that are scheduled and
//! become Ready (kwok sets their status; no container runs), the garbage collector deletes what a
//! deleted owner leaves, and every readiness the operator reports comes from those Pods.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt};
use prometheus_client::registry::Registry;
use serde_json::json;
use strata_e2e::{Etcd, FAKE_NODE, KubeApiserver, KubeControlPlane, wait_until};
use strata_operator::controller::{self, Scope};
use strata_operator::crd::{Compactor, MetricsCluster, StoreGateway};
use strata_operator::metrics::{Metrics, WriteLog, logging_client};

const NS: &str = "strata";
const WAIT: Duration = Duration::from_secs(60);

async fn config(api: &KubeApiserver) -> kube::Config {
    let kc = Kubeconfig::read_from(api.kubeconfig()).expect("kubeconfig");
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config")
}

fn ssa(manager: &str) -> PatchParams {
    PatchParams::apply(manager).force()
}

async fn create_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (name, yaml) in strata_operator::docs::crd_files() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crds")
            .join(&name);
        let checked_in = std::fs::read_to_string(&path).expect("checked-in CRD");
        assert_eq!(checked_in, yaml, "{} is stale", path.display());
        let crd: CustomResourceDefinition = serde_norway::from_str(&checked_in).expect("CRD yaml");
        api.patch(&crd.name_any(), &ssa("e2e-install"), &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("apply {name}: {e}"));
    }
    let mcs: Api<MetricsCluster> = Api::all(client.clone());
    let sgs: Api<StoreGateway> = Api::all(client.clone());
    let cs: Api<Compactor> = Api::all(client.clone());
    wait_until("the CRDs to be served", WAIT, || async {
        mcs.list(&ListParams::default()).await.ok()?;
        sgs.list(&ListParams::default()).await.ok()?;
        cs.list(&ListParams::default()).await.ok()?;
        Some(())
    })
    .await
    .expect("CRDs served");
}

async fn create_secret(client: &Client, ns: &str, name: &str, key: &str) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(b"type: FILESYSTEM\nconfig:\n  directory: /data\n".to_vec()),
        )])),
        ..Default::default()
    };
    api.create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
}

fn condition(status: &serde_json::Value, type_: &str) -> Option<(String, String)> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}

async fn status_of<K>(api: &Api<K>, name: &str) -> Option<(serde_json::Value, i64)>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    let obj = api.get_opt(name).await.ok()??;
    let generation = obj.meta().generation.unwrap_or_default();
    let v = serde_json::to_value(&obj).ok()?;
    Some((v["status"].clone(), generation))
}

/// Static volumes for the claims of the StatefulSets (no provisioner runs: an administrator's
/// pre-created PersistentVolumes, which the controller-manager's PV controller binds).
async fn create_volumes(client: &Client, count: usize) {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    for i in 0..count {
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": format!("e2e-pv-{i}")},
            "spec": {"capacity": {"storage": "100Gi"}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Delete",
                     "hostPath": {"path": format!("/tmp/strata-e2e-pv-{i}")}},
        }))
        .expect("pv");
        api.create(&PostParams::default(), &pv)
            .await
            .expect("create pv");
    }
}

/// Cordons (or uncordons) the fake node: new Pods stay Pending while it is cordoned.
async fn cordon(client: &Client, on: bool) {
    let api: Api<Node> = Api::all(client.clone());
    api.patch(
        FAKE_NODE,
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"unschedulable": on}})),
    )
    .await
    .expect("cordon");
}

/// Whether the StatefulSet has all its replicas ready, as the StatefulSet controller reports it.
fn sts_ready(sts: &StatefulSet) -> bool {
    let want = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = sts
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    want > 0 && ready >= want
}

/// Observes the shard StatefulSets of StoreGateway `instance` every 100 ms until `stop`, and
/// returns how many observations were made and every one in which no complete shard set (all
/// `N` shards `<instance>-sN-0..N`) was ready, i.e. some hashmod shard was unserved.
fn watch_serving(
    client: Client,
    instance: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let api: Api<StatefulSet> = Api::namespaced(client, NS);
        let lp = ListParams::default().labels(&format!("app.kubernetes.io/instance={instance}"));
        let (mut seen, mut gaps) = (0, Vec::new());
        while !stop.load(Ordering::SeqCst) {
            if let Ok(list) = api.list(&lp).await {
                seen += 1;
                let ready: BTreeMap<String, bool> = list
                    .items
                    .iter()
                    .map(|s| (s.name_any(), sts_ready(s)))
                    .collect();
                let serving = (1..=16).any(|n| {
                    (0..n).all(|i| ready.get(&format!("{instance}-s{n}-{i}")) == Some(&true))
                });
                if !serving {
                    gaps.push(format!("{ready:?}"));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (seen, gaps)
    })
}

async fn sts_names(client: &Client, instance: &str) -> Vec<String> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    let mut v: Vec<String> = api
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={instance}")))
        .await
        .expect("list")
        .items
        .iter()
        .map(|s| s.name_any())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_against_a_real_api_server() {
    let etcd = Etcd::start().await.expect("etcd");
    let apiserver = KubeApiserver::start(&etcd).await.expect("kube-apiserver");
    let _plane = KubeControlPlane::start(&apiserver)
        .await
        .expect("controller-manager, scheduler, kwok");
    let admin = Client::try_from(config(&apiserver).await).expect("admin client");
    create_volumes(&admin, 24).await;
    install_crds(&admin).await;
    create_namespace(&admin, NS).await;
    create_namespace(&admin, "gitops").await;

    // --- GitOps: a minimal CR applied twice is unchanged, and reads back with the schema defaults.
    let gitops: Api<MetricsCluster> = Api::namespaced(admin.clone(), "gitops");
    let minimal: serde_json::Value = json!({"apiVersion": "strata.dev/v1alpha1", "kind": "MetricsCluster",
        "metadata": {"name": "minimal"}, "spec": {"objectStorage": {"secretRef": {"name": "b"}}}});
    let first = gitops
        .patch("minimal", &ssa("argocd"), &Patch::Apply(&minimal))
        .await
        .expect("apply 1");
    let second = gitops
        .patch("minimal", &ssa("argocd"), &Patch::Apply(&minimal))
        .await
        .expect("apply 2");
    assert_eq!(
        first.resource_version(),
        second.resource_version(),
        "re-apply changed the object"
    );
    assert_eq!(
        first.metadata.managed_fields,
        second.metadata.managed_fields
    );
    assert_eq!(second.spec.query.replicas, 1);
    assert_eq!(second.spec.object_storage.secret_ref.key, "objstore.yml");
    let raw = serde_json::to_value(&second).expect("json");
    assert_eq!(raw["spec"]["query"]["serviceType"], "ClusterIP", "{raw}");
    assert_eq!(raw["spec"]["query"]["replicaLabels"], json!([]), "{raw}");
    // What the operator's own types would render for the same object equals what the server holds.
    let rendered: MetricsCluster = serde_json::from_value(minimal.clone()).expect("typed");
    assert_eq!(
        serde_json::to_value(&rendered.spec).expect("json"),
        raw["spec"]
    );

    // --- Bad input the schema rejects, with a message naming the field.
    let c_gitops: Api<Compactor> = Api::namespaced(admin.clone(), "gitops");
    let sg_gitops: Api<StoreGateway> = Api::namespaced(admin.clone(), "gitops");
    reject(&gitops, json!({"apiVersion": "strata.dev/v1alpha1", "kind": "MetricsCluster", "metadata": {"name": "neg"},
        "spec": {"objectStorage": {"secretRef": {"name": "b"}}, "query": {"replicas": -1}}}), "spec.query.replicas").await;
    reject(&gitops, json!({"apiVersion": "strata.dev/v1alpha1", "kind": "MetricsCluster", "metadata": {"name": "svc"},
        "spec": {"objectStorage": {"secretRef": {"name": "b"}}, "query": {"serviceType": "Magic"}}}), "spec.query.serviceType").await;
    reject(&c_gitops, json!({"apiVersion": "strata.dev/v1alpha1", "kind": "Compactor", "metadata": {"name": "unit"},
        "spec": {"clusterRef": {"name": "minimal"}, "retention": {"raw": "30 days"}}}), "spec.retention.raw").await;
    reject(&c_gitops, json!({"apiVersion": "strata.dev/v1alpha1", "kind": "Compactor", "metadata": {"name": "cel"},
        "spec": {"clusterRef": {"name": "minimal"}, "downsampling": false, "retention": {"oneHour": "1y"}}}), "set downsampling: true").await;
    reject(&sg_gitops, json!({"apiVersion": "strata.dev/v1alpha1", "kind": "StoreGateway", "metadata": {"name": "zero"},
        "spec": {"clusterRef": {"name": "minimal"}, "shards": 0}}), "spec.shards").await;
    let sg = json!({"apiVersion": "strata.dev/v1alpha1", "kind": "StoreGateway", "metadata": {"name": "imm"},
        "spec": {"clusterRef": {"name": "minimal"}}});
    sg_gitops
        .patch("imm", &ssa("argocd"), &Patch::Apply(&sg))
        .await
        .expect("valid StoreGateway");
    let moved = json!({"apiVersion": "strata.dev/v1alpha1", "kind": "StoreGateway", "metadata": {"name": "imm"},
        "spec": {"clusterRef": {"name": "other"}}});
    let err = sg_gitops
        .patch("imm", &ssa("argocd"), &Patch::Apply(&moved))
        .await
        .expect_err("immutable");
    assert!(err.to_string().contains("clusterRef is immutable"), "{err}");

    // --- The operator, in-process, with a client that logs every write it sends.
    let log = WriteLog::default();
    let op_client = logging_client(config(&apiserver).await, log.clone()).expect("operator client");
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(controller::run(
        op_client,
        Scope {
            namespace: Some(NS.into()),
        },
        metrics.clone(),
        async move {
            let _ = stop_rx.await;
        },
    ));

    // --- Create: the example applies, and every object it stands for exists with an owner.
    create_secret(&admin, NS, "strata-objstore", "objstore.yml").await;
    let example: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples/metricscluster.yaml"),
        )
        .expect("example"),
    )
    .expect("example yaml");
    let mcs: Api<MetricsCluster> = Api::namespaced(admin.clone(), NS);
    mcs.patch("prod", &ssa("e2e"), &Patch::Apply(&example))
        .await
        .expect("apply example");
    let mc_uid = mcs.get("prod").await.expect("prod").uid().expect("uid");

    let deploys: Api<Deployment> = Api::namespaced(admin.clone(), NS);
    let services: Api<Service> = Api::namespaced(admin.clone(), NS);
    let sgs: Api<StoreGateway> = Api::namespaced(admin.clone(), NS);
    let compactors: Api<Compactor> = Api::namespaced(admin.clone(), NS);
    let stss: Api<StatefulSet> = Api::namespaced(admin.clone(), NS);
    wait_until(
        "the querier and the owned StoreGateway/Compactor",
        WAIT,
        || async {
            let d = deploys.get_opt("prod-query").await.ok()??;
            let sg = sgs.get_opt("prod-store").await.ok()??;
            let c = compactors.get_opt("prod-compactor").await.ok()??;
            services.get_opt("prod-sidecar").await.ok()??;
            services.get_opt("prod-query").await.ok()??;
            Some((d, sg, c))
        },
    )
    .await
    .map(|(d, sg, c)| {
        for owners in [
            d.owner_references(),
            sg.owner_references(),
            c.owner_references(),
        ] {
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].uid, mc_uid);
            assert_eq!(owners[0].controller, Some(true));
        }
        assert_eq!(d.spec.and_then(|s| s.replicas), Some(2));
        assert_eq!(sg.spec.params.shards, 2);
    })
    .expect("cluster objects");
    wait_until("two store shards and the compactor", WAIT, || async {
        let names = sts_names(&admin, "prod-store").await;
        let c = stss.get_opt("prod-compactor").await.ok()??;
        (names == ["prod-store-s2-0", "prod-store-s2-1"]).then_some(c)
    })
    .await
    .expect("statefulsets");
    let sg_uid = sgs.get("prod-store").await.expect("sg").uid().expect("uid");
    let shard = stss.get("prod-store-s2-1").await.expect("shard");
    assert_eq!(shard.owner_references()[0].uid, sg_uid);
    let args = shard
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers[0].args.clone())
        .unwrap_or_default();
    assert!(
        args.iter()
            .any(|a| a.contains("modulus: 2") && a.contains("regex: \"1\"")),
        "{args:?}"
    );

    // Status tells the truth: endpoints list sidecars + shards, and Ready=True only once the
    // querier's Deployment, both shard StatefulSets and the compactor have ready Pods.
    let (status, generation) =
        wait_until("MetricsCluster Ready", Duration::from_secs(120), || async {
            let (s, g) = status_of(&mcs, "prod").await?;
            (condition(&s, "Ready")?.0 == "True").then_some((s, g))
        })
        .await
        .expect("prod Ready");
    assert_eq!(status["observedGeneration"], generation);
    assert_eq!(
        condition(&status, "Progressing").map(|c| c.0).as_deref(),
        Some("False"),
        "{status}"
    );
    assert_eq!(
        condition(&status, "Degraded").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert_eq!(
        status["endpoints"],
        json!([
            "dnssrv+_grpc._tcp.prod-sidecar.strata.svc",
            "dnssrv+_grpc._tcp.prod-store-s2-0.strata.svc",
            "dnssrv+_grpc._tcp.prod-store-s2-1.strata.svc"
        ])
    );
    // ... and it is the Pods' truth: every one of them is bound to the fake node and Ready. (A Pod
    // of an older template that is already being deleted may linger a moment; it serves nothing.)
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let listed = pods.list(&ListParams::default()).await.expect("pods");
    let mut ready_pods: Vec<String> = listed
        .items
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(FAKE_NODE)
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|p| p.name_any())
        .collect();
    ready_pods.sort();
    assert_eq!(
        ready_pods
            .iter()
            .filter(|n| n.starts_with("prod-query-"))
            .count(),
        2,
        "{ready_pods:?}"
    );
    for pod in ["prod-compactor-0", "prod-store-s2-0-0", "prod-store-s2-1-0"] {
        assert!(
            ready_pods.iter().any(|n| n == pod),
            "{pod} not Ready: {ready_pods:?}"
        );
    }

    // --- Edit: the objects follow and observedGeneration advances.
    let mut edited = example.clone();
    edited["spec"]["query"]["replicas"] = json!(3);
    edited["spec"]["query"]["extraArgs"] = json!(["--query.timeout=5m"]);
    mcs.patch("prod", &ssa("e2e"), &Patch::Apply(&edited))
        .await
        .expect("edit");
    wait_until("the querier to follow the edit", WAIT, || async {
        let d = deploys.get("prod-query").await.ok()?;
        let (s, g) = status_of(&mcs, "prod").await?;
        (d.spec?.replicas == Some(3) && s["observedGeneration"] == g && g > generation)
            .then_some(())
    })
    .await
    .expect("edit followed");

    // --- Re-shard 2 → 3 through the scale subresource of a standalone StoreGateway.
    let archive = json!({"apiVersion": "strata.dev/v1alpha1", "kind": "StoreGateway", "metadata": {"name": "archive"},
        "spec": {"clusterRef": {"name": "prod"}, "shards": 2, "maxTime": "-4w"}});
    sgs.patch("archive", &ssa("e2e"), &Patch::Apply(&archive))
        .await
        .expect("archive");
    wait_until("archive s2", WAIT, || async {
        (sts_names(&admin, "archive").await == ["archive-s2-0", "archive-s2-1"]).then_some(())
    })
    .await
    .expect("archive s2");
    wait_until("archive Ready", WAIT, || async {
        let (s, _) = status_of(&sgs, "archive").await?;
        (condition(&s, "Ready")?.0 == "True" && s["readyShards"] == 2).then_some(())
    })
    .await
    .expect("archive ready");

    // From here to the end of re-sharding, every observed moment must have one complete shard
    // set Ready. The node is cordoned first, so the new shard Pods stay Pending (not Ready) for
    // as long as the test likes: the operator must keep the old set meanwhile.
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = watch_serving(admin.clone(), "archive".into(), stop_watch.clone());
    cordon(&admin, true).await;
    let mark = log.recent().len();
    sgs.patch_scale(
        "archive",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 3}})),
    )
    .await
    .expect("scale to 3");
    wait_until("archive s3 next to s2", WAIT, || async {
        (sts_names(&admin, "archive").await.len() == 5).then_some(())
    })
    .await
    .expect("s3 created");
    // Not ready yet (Pending on the cordoned node): the old set must still be there, and the
    // status says so.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        sts_names(&admin, "archive").await.len(),
        5,
        "old shards removed before the new ones were ready"
    );
    let (s, _) = status_of(&sgs, "archive").await.expect("status");
    assert_eq!(s["shards"], 2, "{s}");
    assert_eq!(
        condition(&s, "Progressing").map(|c| c.0).as_deref(),
        Some("True")
    );
    let pending = pods
        .list(&ListParams::default().labels("app.kubernetes.io/instance=archive"))
        .await
        .expect("pods")
        .items
        .iter()
        .filter(|p| p.name_any().starts_with("archive-s3-"))
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending"))
        .count();
    assert_eq!(pending, 3, "the new shards' Pods wait on the cordoned node");
    cordon(&admin, false).await;
    wait_until("the s2 set to go", WAIT, || async {
        (sts_names(&admin, "archive").await == ["archive-s3-0", "archive-s3-1", "archive-s3-2"])
            .then_some(())
    })
    .await
    .expect("s2 removed");
    let writes: Vec<String> = log.recent()[mark..].to_vec();
    let last_new = writes
        .iter()
        .rposition(|w| w.starts_with("PATCH") && w.contains("statefulsets/archive-s3-"));
    let first_old_delete = writes
        .iter()
        .position(|w| w.starts_with("DELETE") && w.contains("statefulsets/archive-s2-"));
    assert!(
        matches!((last_new, first_old_delete), (Some(a), Some(b)) if a < b),
        "new shards must be written before old ones are deleted: {writes:#?}"
    );

    // 3 → 1.
    sgs.patch_scale(
        "archive",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 1}})),
    )
    .await
    .expect("scale to 1");
    wait_until("archive s1", WAIT, || async {
        sts_names(&admin, "archive")
            .await
            .contains(&"archive-s1-0".to_string())
            .then_some(())
    })
    .await
    .expect("s1 created");
    wait_until("the s3 set to go", WAIT, || async {
        (sts_names(&admin, "archive").await == ["archive-s1-0"]).then_some(())
    })
    .await
    .expect("s3 removed");
    let (s, _) = wait_until("archive settled", WAIT, || async {
        let (s, g) = status_of(&sgs, "archive").await?;
        (s["shards"] == 1 && condition(&s, "Ready")?.0 == "True").then_some((s, g))
    })
    .await
    .expect("archive settled");
    assert_eq!(s["readyShards"], 1);
    stop_watch.store(true, Ordering::SeqCst);
    let (seen, gaps) = watcher.await.expect("watcher");
    assert!(seen > 20, "too few observations ({seen}) to prove anything");
    assert!(
        gaps.is_empty(),
        "{} of {seen} observations had an unserved shard: {gaps:#?}",
        gaps.len()
    );

    // --- Orphans: removing the inline compactor deletes the owned Compactor.
    let mut no_compactor = edited.clone();
    no_compactor["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("compactor");
    mcs.patch("prod", &ssa("e2e"), &Patch::Apply(&no_compactor))
        .await
        .expect("drop compactor");
    wait_until("the inline Compactor to be deleted", WAIT, || async {
        compactors
            .get_opt("prod-compactor")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await
    .expect("orphan deleted");

    // --- Idle: after things settle, reconciles triggered by metadata-only changes write nothing.
    let mut last = log.count();
    wait_until("writes to settle", WAIT, || {
        let now = log.count();
        let settled = now == last;
        last = now;
        async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            settled.then_some(())
        }
    })
    .await
    .expect("settle");
    let before = log.count();
    let reconciles_before = total_reconciles(&registry);
    for (api_name, name) in [("mc", "prod"), ("sg", "archive"), ("sg", "prod-store")] {
        let p = json!({"metadata": {"annotations": {"e2e/touch": "1"}}});
        match api_name {
            "mc" => drop(
                mcs.patch(name, &PatchParams::default(), &Patch::Merge(&p))
                    .await
                    .expect("touch"),
            ),
            _ => drop(
                sgs.patch(name, &PatchParams::default(), &Patch::Merge(&p))
                    .await
                    .expect("touch"),
            ),
        }
    }
    // A minute of idling (the touches' reconciles, the periodic requeues, the controller-manager
    // and kwok updating what they own) must not make the operator write anything.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let reconciles_after = total_reconciles(&registry);
    assert!(
        reconciles_after > reconciles_before,
        "the touches must trigger reconciles"
    );
    assert_eq!(
        log.count(),
        before,
        "idle reconciles wrote: {:#?}",
        &log.recent()[log
            .recent()
            .len()
            .saturating_sub((log.count() - before) as usize)..]
    );

    // --- A missing Secret or key: Degraded naming the field, an Event, and the rest carries on.
    for (name, secret, key, field) in [
        (
            "nosecret",
            "does-not-exist",
            "objstore.yml",
            "spec.objectStorage.secretRef.name",
        ),
        (
            "nokey",
            "strata-objstore",
            "s3.yml",
            "spec.objectStorage.secretRef.key",
        ),
    ] {
        let bad = json!({"apiVersion": "strata.dev/v1alpha1", "kind": "MetricsCluster", "metadata": {"name": name},
            "spec": {"objectStorage": {"secretRef": {"name": secret, "key": key}}, "storeGateway": {}}});
        mcs.patch(name, &ssa("e2e"), &Patch::Apply(&bad))
            .await
            .expect("bad cluster");
        let msg = wait_until("Degraded", WAIT, || async {
            let (s, _) = status_of(&mcs, name).await?;
            let (st, msg) = condition(&s, "Degraded")?;
            (st == "True").then_some(msg)
        })
        .await
        .expect("degraded");
        assert!(msg.contains(field) && msg.contains(secret), "{msg}");
        let sg_name = format!("{name}-store");
        let msg = wait_until("the store gateway Degraded too", WAIT, || async {
            let (s, _) = status_of(&sgs, &sg_name).await?;
            let (st, msg) = condition(&s, "Degraded")?;
            (st == "True").then_some(msg)
        })
        .await
        .expect("sg degraded");
        assert!(msg.contains(field), "{msg}");
    }
    let events: Api<Event> = Api::namespaced(admin.clone(), NS);
    let found = wait_until("a Warning Event", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("nosecret")
        })
    })
    .await
    .expect("event");
    assert!(found.note.unwrap_or_default().contains("does-not-exist"));
    // Others keep being reconciled while the bad ones retry.
    mcs.patch("prod", &ssa("e2e"), &Patch::Apply(&edited))
        .await
        .expect("edit again");
    wait_until("the compactor back", WAIT, || async {
        compactors.get_opt("prod-compactor").await.ok()?.map(|_| ())
    })
    .await
    .expect("prod still reconciled");

    // --- Sidecars in other namespaces: a headless Service in each namespace the
    // namespaceSelector selects, listed as an endpoint; none in others; removed when the
    // namespace stops matching and, through the finalizer, when the cluster is deleted.
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    for (name, federate) in [("team-a", true), ("team-b", false)] {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name,
            "labels": {"strata.dev/federate": federate.to_string()}}}))
        .expect("ns");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("team namespace");
    }
    let fed = |replicas: i32| {
        json!({"apiVersion": "strata.dev/v1alpha1", "kind": "MetricsCluster", "metadata": {"name": "fed"},
            "spec": {"objectStorage": {"secretRef": {"name": "strata-objstore"}},
                     "query": {"replicas": replicas},
                     "sidecar": {"selector": {"matchLabels": {"app": "prometheus"}},
                                 "namespaceSelector": {"matchLabels": {"strata.dev/federate": "true"}}}}})
    };
    mcs.patch("fed", &ssa("e2e"), &Patch::Apply(&fed(1)))
        .await
        .expect("fed");
    let remote = |ns: &str| Api::<Service>::namespaced(admin.clone(), ns);
    let (team_a, team_b) = (remote("team-a"), remote("team-b"));
    let status = wait_until(
        "a sidecar Service in team-a, listed as an endpoint",
        WAIT,
        || async {
            let svc = team_a.get_opt("fed-strata-sidecar").await.ok()??;
            let (s, _) = status_of(&mcs, "fed").await?;
            let listed = s["endpoints"]
                .as_array()?
                .contains(&json!("dnssrv+_grpc._tcp.fed-strata-sidecar.team-a.svc"));
            listed.then_some((svc, s))
        },
    )
    .await
    .expect("remote sidecar Service");
    let (svc, fed_status) = status;
    assert_eq!(
        svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("None")
    );
    assert_eq!(
        svc.spec.as_ref().and_then(|s| s.selector.clone()),
        Some(BTreeMap::from([(
            "app".to_string(),
            "prometheus".to_string()
        )]))
    );
    assert!(
        team_b
            .get_opt("fed-strata-sidecar")
            .await
            .expect("get")
            .is_none(),
        "team-b is not selected"
    );
    assert_eq!(
        fed_status["endpoints"].as_array().map(Vec::len),
        Some(2),
        "{fed_status}"
    );
    let fed_mc = mcs.get("fed").await.expect("fed");
    assert!(
        fed_mc
            .finalizers()
            .iter()
            .any(|f| f == "strata.dev/remote-sidecar-services"),
        "{:?}",
        fed_mc.finalizers()
    );
    let querier_args = deploys
        .get("fed-query")
        .await
        .ok()
        .and_then(|d| d.spec)
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers[0].args.clone())
        .unwrap_or_default();
    assert!(
        querier_args
            .iter()
            .any(|a| a.contains("fed-strata-sidecar.team-a.svc")),
        "{querier_args:?}"
    );
    // team-a stops matching, team-b starts (the operator watches one namespace here, so the
    // cluster's edit triggers the reconcile; watching all namespaces, Namespace events do).
    for (name, federate) in [("team-a", "false"), ("team-b", "true")] {
        namespaces
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"labels": {"strata.dev/federate": federate}}})),
            )
            .await
            .expect("relabel");
    }
    mcs.patch("fed", &ssa("e2e"), &Patch::Apply(&fed(2)))
        .await
        .expect("fed edit");
    wait_until(
        "the Service to move from team-a to team-b",
        WAIT,
        || async {
            (team_a.get_opt("fed-strata-sidecar").await.ok()?.is_none()
                && team_b.get_opt("fed-strata-sidecar").await.ok()?.is_some())
            .then_some(())
        },
    )
    .await
    .expect("moved");
    mcs.delete("fed", &kube::api::DeleteParams::default())
        .await
        .expect("delete fed");
    wait_until(
        "the finalizer to remove team-b's Service and let fed go",
        WAIT,
        || async {
            (team_b.get_opt("fed-strata-sidecar").await.ok()?.is_none()
                && mcs.get_opt("fed").await.ok()?.is_none())
            .then_some(())
        },
    )
    .await
    .expect("finalized");

    // --- Delete: the garbage collector removes everything the cluster owned, down to the Pods.
    wait_until("prod Ready again", Duration::from_secs(120), || async {
        let (s, _) = status_of(&mcs, "prod").await?;
        (condition(&s, "Ready")?.0 == "True").then_some(())
    })
    .await
    .expect("prod Ready again");
    mcs.delete("prod", &kube::api::DeleteParams::foreground())
        .await
        .expect("delete prod");
    wait_until(
        "everything prod owned to be collected",
        Duration::from_secs(120),
        || async {
            let left_sts = sts_names(&admin, "prod-store").await;
            let left_pods: Vec<String> = pods
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .iter()
                .map(|p| p.name_any())
                .filter(|n| n.starts_with("prod-"))
                .collect();
            (mcs.get_opt("prod").await.ok()?.is_none()
                && deploys.get_opt("prod-query").await.ok()?.is_none()
                && services.get_opt("prod-query").await.ok()?.is_none()
                && sgs.get_opt("prod-store").await.ok()?.is_none()
                && compactors.get_opt("prod-compactor").await.ok()?.is_none()
                && stss.get_opt("prod-compactor").await.ok()?.is_none()
                && left_sts.is_empty()
                && left_pods.is_empty())
            .then_some(())
        },
    )
    .await
    .expect("garbage collected");

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(30), operator)
        .await
        .expect("graceful shutdown")
        .expect("operator task");
    let _ = Arc::clone(&metrics);
}

/// Applies `manifest` and expects the API server to refuse it with `needle` in the message.
async fn reject<K>(api: &Api<K>, manifest: serde_json::Value, needle: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = manifest["metadata"]["name"]
        .as_str()
        .unwrap_or("x")
        .to_string();
    let err = api
        .patch(&name, &ssa("argocd"), &Patch::Apply(&manifest))
        .await
        .expect_err("the API server must reject it");
    assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
}

fn total_reconciles(registry: &Registry) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
    text.lines()
        .filter(|l| l.starts_with("strata_operator_reconciles_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
