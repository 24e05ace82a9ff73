//! The `Ruler` controller against a real kube-apiserver + etcd: rule ConfigMaps become the rulers'
//! StatefulSet, headless Service and generated rules ConfigMap; a bad rule file is reported (status
//! condition + Event) while the good ones keep running; without the PrometheusRule CRD the operator
//! works on ConfigMaps alone; with prometheus-operator's real CRD installed, PrometheusRules' groups
//! land in the generated rule files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, ResourceExt};
use prometheus_client::registry::Registry;
use serde_json::json;
use strata_e2e::{Etcd, KubeApiserver, Tool, tool_path, wait_until};
use strata_operator::controller::{self, Scope};
use strata_operator::crd::{MetricsCluster, Ruler};
use strata_operator::metrics::{Metrics, WriteLog, logging_client};

const NS: &str = "rules";
const WAIT: Duration = Duration::from_secs(60);

const GOOD: &str =
    "groups:\n- name: good\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n";
const BAD: &str = "groups:\n- name: bad\n  rules:\n  - record: broken\n    expr: sum(\n";

async fn config(api: &KubeApiserver) -> kube::Config {
    let kc = Kubeconfig::read_from(api.kubeconfig()).expect("kubeconfig");
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config")
}

fn ssa(manager: &str) -> PatchParams {
    PatchParams::apply(manager).force()
}

async fn apply_crd_file(client: &Client, path: &std::path::Path) -> String {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let crd: CustomResourceDefinition = serde_norway::from_str(&text).expect("CRD yaml");
    let name = crd.name_any();
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch(&name, &ssa("e2e-install"), &Patch::Apply(&crd))
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
    name
}

async fn apply_json<K>(api: &Api<K>, v: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    let name = v["metadata"]["name"].as_str().expect("name").to_string();
    api.patch(&name, &ssa("e2e"), &Patch::Apply(&v))
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

fn rule_cm(name: &str, labels: serde_json::Value, data: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels}, "data": data})
}

fn condition(r: &Ruler, type_: &str) -> Option<(String, String)> {
    r.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.message.clone()))
}

struct Operator {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    log: WriteLog,
}

async fn start_operator(apiserver: &KubeApiserver) -> Operator {
    let log = WriteLog::default();
    let client = logging_client(config(apiserver).await, log.clone()).expect("operator client");
    let mut registry = Registry::default();
    let metrics: Arc<Metrics> = Metrics::register(&mut registry);
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller::run(
        client,
        Scope {
            namespace: Some(NS.into()),
        },
        metrics,
        async move {
            let _ = rx.await;
        },
    ));
    Operator { stop, task, log }
}

async fn stop_operator(op: Operator) {
    let _ = op.stop.send(());
    tokio::time::timeout(Duration::from_secs(30), op.task)
        .await
        .expect("operator stops")
        .expect("operator task");
}

async fn generated(cms: &Api<ConfigMap>) -> Option<BTreeMap<String, String>> {
    cms.get_opt("global-rules").await.ok()??.data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rulers_from_configmaps_and_prometheus_rules() {
    // The PrometheusRule CRD file is a required peer: fail (not skip) without it.
    let prometheus_rule_crd = tool_path(Tool::PrometheusOperatorCrds)
        .expect("prometheus-operator's PrometheusRule CRD (bash e2e/tools/install.sh prometheus-operator-crds)");
    let etcd = Etcd::start().await.expect("etcd");
    let apiserver = KubeApiserver::start(&etcd).await.expect("kube-apiserver");
    let admin = Client::try_from(config(&apiserver).await).expect("admin client");
    let crd_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    for (name, _) in strata_operator::docs::crd_files() {
        apply_crd_file(&admin, &crd_dir.join(name)).await;
    }
    let rulers: Api<Ruler> = Api::namespaced(admin.clone(), NS);
    let mcs: Api<MetricsCluster> = Api::namespaced(admin.clone(), NS);
    wait_until("the Strata CRDs to be served", WAIT, || async {
        rulers.list(&ListParams::default()).await.ok()?;
        mcs.list(&ListParams::default()).await.ok()
    })
    .await
    .expect("CRDs served");
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).expect("ns");
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("bucket".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "objstore.yml".to_string(),
            ByteString(b"type: FILESYSTEM\nconfig:\n  directory: /data\n".to_vec()),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(admin.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    apply_json(&mcs, json!({"apiVersion": "strata.dev/v1alpha1", "kind": "MetricsCluster",
        "metadata": {"name": "prod"}, "spec": {"objectStorage": {"secretRef": {"name": "bucket"}}}}))
    .await;

    // The schema rejects what it can see is wrong.
    let err = rulers
        .patch(
            "neg",
            &ssa("e2e"),
            &Patch::Apply(&json!({"apiVersion": "strata.dev/v1alpha1",
            "kind": "Ruler", "metadata": {"name": "neg"},
            "spec": {"clusterRef": {"name": "prod"}, "replicas": -1}})),
        )
        .await
        .expect_err("negative replicas");
    assert!(err.to_string().contains("spec.replicas"), "{err}");

    // --- Phase 1: no PrometheusRule CRD. The operator works on ConfigMaps.
    let op = start_operator(&apiserver).await;
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), NS);
    apply_json(
        &cms,
        rule_cm(
            "good-rules",
            json!({"role": "rules"}),
            json!({"rules.yaml": GOOD}),
        ),
    )
    .await;
    apply_json(
        &cms,
        rule_cm(
            "bad-rules",
            json!({"role": "rules"}),
            json!({"bad.yaml": BAD, "fine.yaml": GOOD}),
        ),
    )
    .await;
    apply_json(
        &cms,
        rule_cm(
            "unselected",
            json!({"role": "other"}),
            json!({"x.yaml": GOOD}),
        ),
    )
    .await;
    apply_json(
        &rulers,
        json!({"apiVersion": "strata.dev/v1alpha1", "kind": "Ruler",
        "metadata": {"name": "global"},
        "spec": {"clusterRef": {"name": "prod"}, "replicas": 2,
            "ruleSelector": {"matchLabels": {"role": "rules"}},
            "prometheusRuleSelector": {"matchLabels": {"role": "rules"}},
            "alertmanagers": ["http://alertmanager.rules.svc:9093"],
            "externalLabels": {"tier": "global"}}}),
    )
    .await;

    let files = wait_until("the generated rules ConfigMap", WAIT, || async {
        let d = generated(&cms).await?;
        (d.len() == 2).then_some(d)
    })
    .await
    .expect("generated ConfigMap");
    assert_eq!(
        files.keys().cloned().collect::<Vec<_>>(),
        [
            "configmap_bad-rules_fine.yaml",
            "configmap_good-rules_rules.yaml"
        ]
    );
    assert_eq!(files["configmap_good-rules_rules.yaml"], GOOD);

    let stss: Api<StatefulSet> = Api::namespaced(admin.clone(), NS);
    let services: Api<Service> = Api::namespaced(admin.clone(), NS);
    let ruler_uid = rulers
        .get("global")
        .await
        .expect("ruler")
        .uid()
        .expect("uid");
    let sts = wait_until("the ruler StatefulSet and Service", WAIT, || async {
        services.get_opt("global").await.ok()??;
        stss.get_opt("global").await.ok()?
    })
    .await
    .expect("ruler objects");
    assert_eq!(sts.owner_references()[0].uid, ruler_uid);
    let spec = sts.spec.clone().expect("sts spec");
    assert_eq!(spec.replicas, Some(2));
    let args = spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.containers[0].args.clone())
        .unwrap_or_default();
    for want in [
        "rule",
        "--query=http://prod-query.rules.svc:10902",
        "--label=ruler_replica=\"$(POD_NAME)\"",
        "--alert.label-drop=ruler_replica",
        "--alertmanagers.url=http://alertmanager.rules.svc:9093",
    ] {
        assert!(args.contains(&want.to_string()), "{want} not in {args:?}");
    }

    // The bad file is named in the status and in an Event; the PrometheusRule selector is noted.
    let r = wait_until("RulesValid=False naming the bad file", WAIT, || async {
        let r = rulers.get_opt("global").await.ok()??;
        let (status, message) = condition(&r, "RulesValid")?;
        (status == "False" && message.contains("ConfigMap bad-rules key bad.yaml")).then_some(r)
    })
    .await
    .expect("RulesValid condition");
    let (_, message) = condition(&r, "RulesValid").expect("RulesValid");
    assert!(
        message.contains("PrometheusRule CRD was not served"),
        "{message}"
    );
    assert_eq!(
        r.status.as_ref().map(|s| s.rule_files.len()),
        Some(2),
        "{:?}",
        r.status
    );
    let events: Api<Event> = Api::namespaced(admin.clone(), NS);
    wait_until("an InvalidRuleFile Event", WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("InvalidRuleFile")
                && e.regarding.as_ref().and_then(|o| o.name.as_deref()) == Some("global")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("bad-rules") && n.contains("bad.yaml"))
        })
    })
    .await
    .expect("event");

    // The querier discovers the ruler's StoreAPI.
    wait_until("the querier endpoint of the ruler", WAIT, || async {
        let mc = mcs.get_opt("prod").await.ok()??;
        mc.status?
            .endpoints
            .contains(&"dnssrv+_grpc._tcp.global.rules.svc".to_string())
            .then_some(())
    })
    .await
    .expect("ruler endpoint");

    // Idle: nothing changes, so the operator writes nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = op.log.count();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(op.log.count(), before, "idle writes: {:?}", op.log.recent());

    // Fixing the bad file brings it in and rolls the pods (checksum).
    let checksum = |s: &StatefulSet| {
        s.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("strata.dev/config-checksum").cloned())
    };
    let old_checksum = checksum(&sts);
    apply_json(
        &cms,
        rule_cm(
            "bad-rules",
            json!({"role": "rules"}),
            json!({"bad.yaml": GOOD, "fine.yaml": GOOD}),
        ),
    )
    .await;
    wait_until(
        "the fixed file in the generated ConfigMap",
        WAIT,
        || async {
            generated(&cms)
                .await?
                .contains_key("configmap_bad-rules_bad.yaml")
                .then_some(())
        },
    )
    .await
    .expect("fixed file");
    wait_until("the pods to roll", WAIT, || async {
        let s = stss.get_opt("global").await.ok()??;
        (checksum(&s) != old_checksum).then_some(())
    })
    .await
    .expect("rolled");

    // Nonsense the schema lets through is a Degraded condition naming the field.
    apply_json(&rulers, json!({"apiVersion": "strata.dev/v1alpha1", "kind": "Ruler",
        "metadata": {"name": "badurl"},
        "spec": {"clusterRef": {"name": "prod"}, "alertmanagers": ["not a url"], "evalInterval": "1m"}}))
    .await;
    wait_until("Degraded naming spec.alertmanagers[0]", WAIT, || async {
        let r = rulers.get_opt("badurl").await.ok()??;
        let (status, message) = condition(&r, "Degraded")?;
        (status == "True" && message.starts_with("spec.alertmanagers[0]")).then_some(())
    })
    .await
    .expect("Degraded");
    assert!(stss.get_opt("badurl").await.expect("get").is_none());
    stop_operator(op).await;

    // --- Phase 2: prometheus-operator's real CRD installed; the operator (restarted: discovery is
    // at start) reads PrometheusRules too.
    apply_crd_file(&admin, &prometheus_rule_crd).await;
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "monitoring.coreos.com",
        "v1",
        "PrometheusRule",
    ));
    let prs: Api<DynamicObject> = Api::namespaced_with(admin.clone(), NS, &ar);
    wait_until("PrometheusRule to be served", WAIT, || async {
        prs.list(&ListParams::default()).await.ok()
    })
    .await
    .expect("PrometheusRule served");
    let pr = |expr: &str| {
        json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
        "metadata": {"name": "node", "labels": {"role": "rules"}},
        "spec": {"groups": [{"name": "node-alerts", "interval": "30s", "rules": [
            {"alert": "NodeDown", "expr": expr, "for": "5m",
             "labels": {"severity": "page"}, "annotations": {"summary": "{{ $labels.instance }} is down"}}
        ]}]}})
    };
    prs.patch(
        "node",
        &ssa("e2e"),
        &Patch::Apply(&pr("up{job=\"node\"} == 0")),
    )
    .await
    .expect("create PrometheusRule (validated by the real CRD schema)");

    let op = start_operator(&apiserver).await;
    let text = wait_until(
        "the PrometheusRule's groups in the generated rule files",
        WAIT,
        || async {
            generated(&cms)
                .await?
                .get("prometheusrule_node.yaml")
                .cloned()
        },
    )
    .await
    .expect("PrometheusRule file");
    let back: serde_json::Value = serde_norway::from_str(&text).expect("yaml");
    assert_eq!(back["groups"][0]["name"], "node-alerts");
    assert_eq!(back["groups"][0]["rules"][0]["alert"], "NodeDown");
    assert_eq!(
        back["groups"][0]["rules"][0]["expr"],
        "up{job=\"node\"} == 0"
    );
    wait_until("RulesValid=True", WAIT, || async {
        let r = rulers.get_opt("global").await.ok()??;
        (condition(&r, "RulesValid")?.0 == "True").then_some(())
    })
    .await
    .expect("all rules valid");

    // The PrometheusRule watch: an edit follows, a broken one is left out and named.
    prs.patch(
        "node",
        &ssa("e2e"),
        &Patch::Apply(&pr("up{job=\"node\"} < 1")),
    )
    .await
    .expect("edit PrometheusRule");
    wait_until("the edited PrometheusRule", WAIT, || async {
        generated(&cms)
            .await?
            .get("prometheusrule_node.yaml")?
            .contains("< 1")
            .then_some(())
    })
    .await
    .expect("edit followed");
    prs.patch("node", &ssa("e2e"), &Patch::Apply(&pr("up ==")))
        .await
        .expect("break PrometheusRule");
    wait_until(
        "the broken PrometheusRule left out and named",
        WAIT,
        || async {
            let r = rulers.get_opt("global").await.ok()??;
            let (status, message) = condition(&r, "RulesValid")?;
            let d = generated(&cms).await?;
            (status == "False"
                && message.contains("PrometheusRule node")
                && !d.contains_key("prometheusrule_node.yaml")
                && d.contains_key("configmap_good-rules_rules.yaml"))
            .then_some(())
        },
    )
    .await
    .expect("broken PrometheusRule reported");
    // A ConfigMap whose labels stop matching leaves the rule files at once (not at the resync).
    apply_json(
        &cms,
        rule_cm(
            "good-rules",
            json!({"role": "retired"}),
            json!({"rules.yaml": GOOD}),
        ),
    )
    .await;
    wait_until("the unselected ConfigMap's file to go", WAIT, || async {
        let d = generated(&cms).await?;
        (!d.contains_key("configmap_good-rules_rules.yaml")
            && d.contains_key("configmap_bad-rules_fine.yaml"))
        .then_some(())
    })
    .await
    .expect("unselected file removed");
    stop_operator(op).await;
}
