//! The Helm chart (`charts/strata-operator`) and leader election against real peers: the real `helm`
//! CLI and a real kube-apiserver + etcd (no controller-manager or kubelet: objects are stored and
//! validated, no pods run). A missing peer fails the test with the installer's name in the message.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolume, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope as ApiScope};
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;
use serde_json::json;
use strata_e2e::{Etcd, KubeApiserver, KubeControlPlane, Tool, free_port, tool_path, wait_until};
use strata_operator::crd::{Compactor, MetricsCluster, Ruler, StoreGateway};
use strata_operator::leader::LeaderElection;
use strata_operator::server::{OperatorConfig, run};
use strata_operator::webhook::tls::{OperatorTls, service_sans};
use strata_operator::webhook::{TlsMode, WebhookConfig};
use strata_runtime::Shutdown;

const WAIT: Duration = Duration::from_secs(90);
/// The release the RBAC test renders: its objects are named `strata-operator`.
const RELEASE: &str = "strata-operator";
const RELEASE_NS: &str = "strata-system";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    repo().join("charts/strata-operator")
}

/// Runs the real helm with its caches in `home` (never the user's), returning stdout; panics with
/// stderr on a non-zero exit unless `may_fail`.
fn helm(home: &Path, args: &[&str], may_fail: bool) -> (bool, String, String) {
    let bin = tool_path(Tool::Helm).unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(&bin)
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() && !may_fail {
        panic!(
            "helm {} failed ({}):\n{stderr}\n{stdout}",
            args.join(" "),
            out.status
        );
    }
    (out.status.success(), stdout, stderr)
}

fn template(home: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().expect("utf-8 path"),
        "--namespace",
        RELEASE_NS,
    ];
    args.extend_from_slice(extra);
    let (_, out, _) = helm(home, &args, false);
    documents(&out)
}

fn documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| serde_json::Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(docs: &[serde_json::Value]) -> Vec<String> {
    let mut k: Vec<String> = docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap_or("?"),
                d["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    k.sort();
    k
}

#[test]
fn chart_crds_are_the_top_level_crds() {
    let top = repo().join("crds");
    let ours = chart().join("crds");
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&top),
        names(&ours),
        "copy crds/*.yaml into {}",
        ours.display()
    );
    for name in names(&top) {
        let a = std::fs::read(top.join(&name)).expect("top-level CRD");
        let b = std::fs::read(ours.join(&name)).expect("chart CRD");
        assert!(
            a == b,
            "charts/strata-operator/crds/{name} differs from crds/{name}: copy it"
        );
    }
}

#[test]
fn chart_lints_and_renders_every_mode() {
    let home = tempfile::tempdir().expect("tempdir");
    let chart = chart();
    let chart = chart.to_str().expect("utf-8 path");
    let (ok, out, err) = helm(home.path(), &["lint", chart], true);
    println!("helm lint:\n{out}{err}");
    assert!(
        ok && !out.contains("[ERROR]"),
        "helm lint failed:\n{out}\n{err}"
    );

    // Defaults: all namespaces, webhook with operator TLS, two replicas with a PDB.
    let docs = template(home.path(), &[]);
    let k = kinds(&docs);
    for want in [
        "ClusterRole/strata-operator-controller",
        "ClusterRole/strata-operator-webhook",
        "ClusterRoleBinding/strata-operator-controller",
        "Deployment/strata-operator",
        "MutatingWebhookConfiguration/strata-operator",
        "PodDisruptionBudget/strata-operator",
        "Role/strata-operator",
        "Service/strata-operator-webhook",
        "ServiceAccount/strata-operator",
    ] {
        assert!(k.iter().any(|x| x == want), "{want} not rendered: {k:?}");
    }
    let deploy = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("Deployment");
    let args: Vec<&str> = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(args.first(), Some(&"operator"), "{args:?}");
    for want in [
        "--leader-election=true",
        "--leader-election.lease-name=strata-operator",
        "--webhook.tls-mode=operator",
        "--webhook.enabled",
        "--webhook.secret=strata-operator-webhook-tls",
        "--webhook.configuration=strata-operator",
        "--webhook.service=strata-operator-webhook",
    ] {
        assert!(args.contains(&want), "{want} missing: {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--namespace")),
        "{args:?}"
    );
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    assert_eq!(deploy["spec"]["replicas"], 2);
    let hook = docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .expect("webhook");
    assert_eq!(hook["webhooks"][0]["failurePolicy"], "Ignore");
    assert_eq!(
        hook["webhooks"][0]["clientConfig"]["service"]["path"],
        "/mutate-pod"
    );

    // One watched namespace: a Role there instead of the controller ClusterRole, and --namespace.
    let docs = template(home.path(), &["--set", "watchNamespaces={team-a}"]);
    let k = kinds(&docs);
    assert!(
        !k.contains(&"ClusterRole/strata-operator-controller".to_string()),
        "{k:?}"
    );
    let role = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == "strata-operator-controller")
        .expect("controller Role");
    assert_eq!(role["metadata"]["namespace"], "team-a");
    let deploy = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("Deployment");
    assert!(
        deploy.to_string().contains("--namespace=team-a"),
        "{deploy}"
    );

    // cert-manager: a Certificate (+ self-signed Issuer), files mode, the secret mounted.
    let docs = template(home.path(), &["--set", "webhook.tlsMode=certManager"]);
    let k = kinds(&docs);
    assert!(
        k.contains(&"Certificate/strata-operator-webhook-tls".to_string()),
        "{k:?}"
    );
    assert!(
        k.contains(&"Issuer/strata-operator-selfsigned".to_string()),
        "{k:?}"
    );
    let deploy = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("Deployment");
    let text = deploy.to_string();
    assert!(
        text.contains("--webhook.tls-mode=files") && text.contains("/etc/strata/webhook-tls"),
        "{text}"
    );

    // Refused: two watched namespaces, several replicas without leader election, an unknown TLS mode.
    let refused = |set: &str, needle: &str| {
        let (ok, _, err) = helm(
            home.path(),
            &["template", RELEASE, chart, "--set", set],
            true,
        );
        assert!(
            !ok && err.contains(needle),
            "--set {set}: expected a failure naming {needle:?}, got: {err}"
        );
    };
    refused("watchNamespaces={a,b}", "watchNamespaces");
    refused("leaderElection.enabled=false", "leaderElection.enabled");
    refused("webhook.tlsMode=magic", "webhook.tlsMode");
}

async fn admin_client(api: &KubeApiserver) -> Client {
    let kc = Kubeconfig::read_from(api.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("admin client")
}

async fn create_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    api.create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
}

async fn create_objstore_secret(client: &Client, ns: &str) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("strata-objstore".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "objstore.yml".to_string(),
            ByteString(b"type: FILESYSTEM\nconfig:\n  directory: /data\n".to_vec()),
        )])),
        ..Default::default()
    };
    api.create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
}

/// Installs the chart's CRDs (server-side apply) and waits until they are served.
async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for entry in std::fs::read_dir(chart().join("crds")).expect("chart crds") {
        let path = entry.expect("entry").path();
        let crd: CustomResourceDefinition =
            serde_norway::from_str(&std::fs::read_to_string(&path).expect("read CRD"))
                .expect("CRD yaml");
        api.patch(
            &crd.name_any(),
            &PatchParams::apply("e2e-install").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {}: {e}", path.display()));
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

fn prometheus_rule_resource() -> kube::api::ApiResource {
    kube::api::ApiResource::from_gvk(&GroupVersionKind::gvk(
        "monitoring.coreos.com",
        "v1",
        "PrometheusRule",
    ))
}

/// Installs prometheus-operator's real PrometheusRule CRD (a required peer) and waits until it is served.
async fn install_prometheus_rule_crd(client: &Client) {
    let path = tool_path(Tool::PrometheusOperatorCrds).expect(
        "prometheus-operator's PrometheusRule CRD (bash e2e/tools/install.sh prometheus-operator-crds)",
    );
    let crd: CustomResourceDefinition =
        serde_norway::from_str(&std::fs::read_to_string(&path).expect("read CRD"))
            .expect("CRD yaml");
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch(
            &crd.name_any(),
            &PatchParams::apply("e2e-install").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply the PrometheusRule CRD");
    let prs: Api<DynamicObject> = Api::all_with(client.clone(), &prometheus_rule_resource());
    wait_until("PrometheusRule to be served", WAIT, || async {
        prs.list(&ListParams::default()).await.ok()
    })
    .await
    .expect("PrometheusRule served");
}

/// Server-side applies every rendered object (or only dry-runs it), as `manager`.
async fn apply_all(client: &Client, docs: &[serde_json::Value], manager: &str, dry_run: bool) {
    for doc in docs {
        let api_version = doc["apiVersion"].as_str().expect("apiVersion");
        let kind = doc["kind"].as_str().expect("kind");
        let name = doc["metadata"]["name"].as_str().expect("name");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (ar, caps) = discovery::pinned_kind(client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("discover {api_version} {kind}: {e}"));
        let api: Api<DynamicObject> = match caps.scope {
            ApiScope::Namespaced => Api::namespaced_with(
                client.clone(),
                doc["metadata"]["namespace"].as_str().unwrap_or(RELEASE_NS),
                &ar,
            ),
            ApiScope::Cluster => Api::all_with(client.clone(), &ar),
        };
        let mut pp = PatchParams::apply(manager);
        if dry_run {
            pp = pp.dry_run();
        }
        api.patch(name, &pp, &Patch::Apply(doc))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "apply{} {kind} {name}: {e}",
                    if dry_run { " --dry-run=server" } else { "" }
                )
            });
    }
}

/// A kubeconfig like the admin's but authenticating with `token`.
fn kubeconfig_with_token(api: &KubeApiserver, token: &str, dir: &Path) -> PathBuf {
    let admin = std::fs::read_to_string(api.kubeconfig()).expect("admin kubeconfig");
    let needle = format!("token: {}", api.token());
    assert!(
        admin.contains(&needle),
        "admin kubeconfig holds the admin token"
    );
    let path = dir.join("sa.kubeconfig");
    std::fs::write(&path, admin.replace(&needle, &format!("token: {token}")))
        .expect("write kubeconfig");
    path
}

/// `verb resource namespace/name → code` of every request `user` made that got a 403.
fn forbidden(audit_log: &Path, user: &str) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(audit_log).unwrap_or_default();
    let mut seen = 0;
    let mut denied = Vec::new();
    for line in text.lines() {
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if ev["user"]["username"] != user {
            continue;
        }
        seen += 1;
        if ev["responseStatus"]["code"] == 403 {
            let o = &ev["objectRef"];
            denied.push(format!(
                "{} {}/{} {}/{}",
                ev["verb"].as_str().unwrap_or("?"),
                o["apiGroup"].as_str().unwrap_or(""),
                o["resource"].as_str().unwrap_or("?"),
                o["namespace"].as_str().unwrap_or(""),
                o["name"].as_str().unwrap_or(""),
            ));
        }
    }
    (seen, denied)
}

fn example() -> serde_json::Value {
    serde_norway::from_str(
        &std::fs::read_to_string(repo().join("examples/metricscluster.yaml")).expect("example"),
    )
    .expect("example yaml")
}

fn condition(mc: &MetricsCluster, type_: &str) -> Option<String> {
    mc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

/// The chart against a real API server: server-side dry-run of every object, the operator running
/// as the chart's ServiceAccount with only the chart's RBAC (zero 403s in the audit log), GitOps
/// re-apply without drift, and `helm install`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_on_a_real_api_server() {
    let home = tempfile::tempdir().expect("tempdir");
    let docs = template(home.path(), &[]);
    let etcd = Etcd::start().await.expect("etcd");
    let apiserver = KubeApiserver::start(&etcd).await.expect("kube-apiserver");
    // Real workload controllers and kwok's fake node: the example's Pods become Ready, so the
    // operator also reads what it reads only of running Pods (the compactor's), under the
    // chart's RBAC.
    let _plane = KubeControlPlane::start(&apiserver)
        .await
        .expect("controller-manager, scheduler, kwok");
    let admin = admin_client(&apiserver).await;
    let pvs: Api<PersistentVolume> = Api::all(admin.clone());
    for i in 0..8 {
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": format!("pv-{i}")},
            "spec": {"capacity": {"storage": "100Gi"}, "accessModes": ["ReadWriteOnce"],
                     "hostPath": {"path": format!("/tmp/strata-e2e-pv-{i}")}},
        }))
        .expect("pv");
        pvs.create(&PostParams::default(), &pv).await.expect("pv");
    }
    install_crds(&admin).await;
    install_prometheus_rule_crd(&admin).await;
    create_namespace(&admin, RELEASE_NS).await;

    // --- Every rendered object passes the API server's validation (server-side dry run).
    apply_all(&admin, &docs, "helm-dry-run", true).await;

    // --- Applied for real: the ServiceAccount and exactly the chart's RBAC.
    apply_all(&admin, &docs, "helm", false).await;
    let sa = format!("system:serviceaccount:{RELEASE_NS}:{RELEASE}");
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), RELEASE_NS)
        .create_token_request(
            RELEASE,
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("TokenRequest for the chart's ServiceAccount")
        .status
        .expect("token status")
        .token
        .expect("token");
    let sa_kubeconfig = kubeconfig_with_token(&apiserver, &token, home.path());

    // --- The operator as that ServiceAccount, with leader election on the chart's Lease.
    let team = "monitoring";
    create_namespace(&admin, team).await;
    create_objstore_secret(&admin, team).await;
    let shutdown = Shutdown::new();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let config = OperatorConfig {
        kubeconfig: Some(sa_kubeconfig.clone()),
        namespace: None,
        http_address: http,
        // The webhook runs too, with the names the chart passes it, so its Secret and
        // caBundle writes are checked against the chart's RBAC as well.
        webhook: Some(WebhookConfig {
            address: format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
            tls: TlsMode::Operator(OperatorTls {
                namespace: RELEASE_NS.into(),
                secret: format!("{RELEASE}-webhook-tls"),
                sans: service_sans(&format!("{RELEASE}-webhook"), RELEASE_NS),
                validity: Duration::from_secs(365 * 24 * 3600),
                webhook_configuration: RELEASE.into(),
            }),
            scope: None,
        }),
        leader_election: Some(LeaderElection {
            namespace: Some(RELEASE_NS.into()),
            lease_name: RELEASE.into(),
            ..LeaderElection::new("rbac-test")
        }),
    };
    let operator = tokio::spawn(run(config, shutdown.clone()));

    // --- GitOps: the example applied as Argo CD would (server-side, its own field manager).
    let mcs: Api<MetricsCluster> = Api::namespaced(admin.clone(), team);
    let argo = PatchParams::apply("argocd-controller");
    mcs.patch("prod", &argo, &Patch::Apply(&example()))
        .await
        .expect("apply the example as argocd-controller");
    // A second cluster whose Secret is missing: a Degraded condition and a Warning Event.
    let mut broken = example();
    broken["metadata"]["name"] = json!("broken");
    broken["spec"]["objectStorage"]["secretRef"]["name"] = json!("does-not-exist");
    mcs.patch("broken", &argo, &Patch::Apply(&broken))
        .await
        .expect("apply broken");

    // A Ruler over a rule ConfigMap and a PrometheusRule (their watches and reads go through the
    // chart's RBAC too).
    let ssa = PatchParams::apply("e2e").force();
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), team);
    cms.patch(
        "team-rules",
        &ssa,
        &Patch::Apply(&json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "team-rules", "labels": {"role": "rules"}},
        "data": {"r.yaml": "groups:\n- name: g\n  rules:\n  - record: r\n    expr: up\n"}})),
    )
    .await
    .expect("rule ConfigMap");
    let prs: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), team, &prometheus_rule_resource());
    prs.patch(
        "node",
        &ssa,
        &Patch::Apply(&json!({"apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule", "metadata": {"name": "node", "labels": {"role": "rules"}},
        "spec": {"groups": [{"name": "n", "rules": [{"alert": "Down", "expr": "up == 0"}]}]}})),
    )
    .await
    .expect("PrometheusRule");
    let rulers: Api<Ruler> = Api::namespaced(admin.clone(), team);
    rulers
        .patch(
            "global",
            &argo,
            &Patch::Apply(&json!({"apiVersion": "strata.dev/v1alpha1",
        "kind": "Ruler", "metadata": {"name": "global"},
        "spec": {"clusterRef": {"name": "prod"},
            "ruleSelector": {"matchLabels": {"role": "rules"}},
            "prometheusRuleSelector": {"matchLabels": {"role": "rules"}}}})),
        )
        .await
        .expect("Ruler");

    let deploys: Api<Deployment> = Api::namespaced(admin.clone(), team);
    let stss: Api<StatefulSet> = Api::namespaced(admin.clone(), team);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), team);
    let events: Api<Event> = Api::namespaced(admin.clone(), team);
    let sgs: Api<StoreGateway> = Api::namespaced(admin.clone(), team);
    let cs: Api<Compactor> = Api::namespaced(admin.clone(), team);
    wait_until(
        "the operator (as the chart's ServiceAccount) to reconcile the example",
        WAIT,
        || async {
            deploys.get_opt("prod-query").await.ok()??;
            stss.get_opt("prod-store-s2-0").await.ok()??;
            stss.get_opt("prod-store-s2-1").await.ok()??;
            pdbs.get_opt("prod-store-s2-1").await.ok()??;
            stss.get_opt("prod-compactor").await.ok()??;
            stss.get_opt("global").await.ok()??;
            let rules = cms.get_opt("global-rules").await.ok()??.data?;
            rules.get("configmap_team-rules_r.yaml")?;
            rules.get("prometheusrule_node.yaml")?;
            let prod = mcs.get_opt("prod").await.ok()??;
            (condition(&prod, "Degraded")? == "False").then_some(())?;
            // Ready: the querier, both shards and the compactor have Ready Pods.
            (condition(&prod, "Ready")? == "True").then_some(())?;
            sgs.get_opt("prod-store").await.ok()??.status?;
            // The compactor's Pod was read (its IP): nothing serves it here, so Halted is
            // Unknown because the endpoint is unreadable, not because the Pod was forbidden.
            let halted = cs
                .get_opt("prod-compactor")
                .await
                .ok()??
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Halted")?;
            (halted.reason == "StatusUnreadable").then_some(())?;
            let broken = mcs.get_opt("broken").await.ok()??;
            (condition(&broken, "Degraded")? == "True").then_some(())?;
            let evs = events.list(&ListParams::default()).await.ok()?;
            evs.items
                .iter()
                .any(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken"))
                .then_some(())?;
            // The webhook's certificate Secret exists and the chart's configuration got its CA.
            let secrets: Api<Secret> = Api::namespaced(admin.clone(), RELEASE_NS);
            secrets
                .get_opt(&format!("{RELEASE}-webhook-tls"))
                .await
                .ok()??;
            let mwcs: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
            let mwc = mwcs.get_opt(RELEASE).await.ok()??;
            mwc.webhooks?
                .first()?
                .client_config
                .ca_bundle
                .as_ref()
                .filter(|b| !b.0.is_empty())
                .map(|_| ())
        },
    )
    .await
    .unwrap_or_else(|e| {
        let (_, denied) = forbidden(apiserver.audit_log(), &sa);
        panic!("{e}; 403s so far: {denied:#?}")
    });

    // --- Re-applying what Git holds changes nothing and conflicts with nothing.
    let before = mcs.get("prod").await.expect("prod");
    let after = mcs
        .patch("prod", &argo, &Patch::Apply(&example()))
        .await
        .expect("re-apply without force: no conflict with the operator's fields");
    assert_eq!(
        before.resource_version(),
        after.resource_version(),
        "re-apply changed the object"
    );
    assert_eq!(
        before.metadata.managed_fields,
        after.metadata.managed_fields
    );
    let managers: Vec<String> = after
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.contains(&"argocd-controller".to_string()),
        "{managers:?}"
    );
    assert!(
        after
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|m| m.manager.as_deref() != Some("argocd-controller"))
            .all(|m| m.subresource.as_deref() == Some("status")),
        "the operator owns only status fields of the MetricsCluster: {:?}",
        after.metadata.managed_fields
    );

    // --- The operator held the chart's Lease.
    let lease = Api::<Lease>::namespaced(admin.clone(), RELEASE_NS)
        .get(RELEASE)
        .await
        .expect("the chart's Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("rbac-test")
    );

    // --- Zero 403s for the ServiceAccount, in a log that does record its requests and denials.
    let (seen, denied) = forbidden(apiserver.audit_log(), &sa);
    assert!(
        seen > 20,
        "the audit log holds only {seen} requests of {sa}"
    );
    assert!(
        denied.is_empty(),
        "the chart's RBAC denied the operator: {denied:#?}"
    );
    let sa_client = {
        let kc = Kubeconfig::read_from(&sa_kubeconfig).expect("sa kubeconfig");
        let c = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("sa config");
        Client::try_from(c).expect("sa client")
    };
    let err = Api::<Secret>::all(sa_client)
        .list(&ListParams::default())
        .await
        .expect_err("the chart grants no listing of Secrets");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );
    let (_, denied) = forbidden(apiserver.audit_log(), &sa);
    assert_eq!(denied.len(), 1, "the audit check sees a denial: {denied:?}");

    shutdown.trigger();
    operator
        .await
        .expect("operator task")
        .expect("operator stops cleanly");

    // --- helm install against the same API server (a second release, its own namespace).
    let kubeconfig = apiserver
        .kubeconfig()
        .to_str()
        .expect("utf-8 path")
        .to_string();
    let chart = chart();
    helm(
        home.path(),
        &[
            "install",
            "demo",
            chart.to_str().expect("utf-8 path"),
            "--namespace",
            "demo-system",
            "--create-namespace",
            "--kubeconfig",
            &kubeconfig,
        ],
        false,
    );
    let ns = "demo-system";
    let name = "demo-strata-operator";
    Api::<Deployment>::namespaced(admin.clone(), ns)
        .get(name)
        .await
        .expect("Deployment");
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .get(name)
        .await
        .expect("ServiceAccount");
    Api::<Service>::namespaced(admin.clone(), ns)
        .get(&format!("{name}-webhook"))
        .await
        .expect("webhook Service");
    Api::<PodDisruptionBudget>::namespaced(admin.clone(), ns)
        .get(name)
        .await
        .expect("PDB");
    Api::<Role>::namespaced(admin.clone(), ns)
        .get(name)
        .await
        .expect("Role");
    Api::<ClusterRole>::all(admin.clone())
        .get(&format!("{name}-controller"))
        .await
        .expect("ClusterRole");
    Api::<ClusterRoleBinding>::all(admin.clone())
        .get(&format!("{name}-webhook"))
        .await
        .expect("ClusterRoleBinding");
    Api::<MutatingWebhookConfiguration>::all(admin.clone())
        .get(name)
        .await
        .expect("MutatingWebhookConfiguration");
    let (_, status, _) = helm(
        home.path(),
        &[
            "status",
            "demo",
            "--namespace",
            ns,
            "--kubeconfig",
            &kubeconfig,
        ],
        false,
    );
    assert!(status.contains("STATUS: deployed"), "{status}");
}

/// One operator replica on its own runtime, so that dropping the runtime kills it like a crash:
/// nothing runs afterwards, the lease is not released.
struct Replica {
    identity: String,
    http: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    done: tokio::sync::oneshot::Receiver<Result<(), String>>,
}

impl Replica {
    fn start(kubeconfig: &Path, identity: &str, namespace: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let config = OperatorConfig {
            kubeconfig: Some(kubeconfig.to_path_buf()),
            namespace: Some(namespace.into()),
            http_address: http,
            webhook: None,
            leader_election: Some(LeaderElection {
                namespace: Some(RELEASE_NS.into()),
                lease_duration: Duration::from_secs(4),
                renew_before: Duration::from_secs(2),
                ..LeaderElection::new(identity)
            }),
        };
        let (tx, done) = tokio::sync::oneshot::channel();
        let _detached = runtime.spawn(async move {
            let r = run(config, Shutdown::new()).await;
            let _ = tx.send(r.map_err(|e| e.to_string()));
        });
        Self {
            identity: identity.into(),
            http,
            runtime: Some(runtime),
            done,
        }
    }

    /// `strata_operator_reconciles_total` summed over kinds, and `strata_operator_leader`.
    async fn metrics(&self) -> Option<(f64, f64)> {
        let text = reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let mut reconciles = 0.0;
        let mut leader = None;
        for line in text.lines() {
            let value = || line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            if line.starts_with("strata_operator_reconciles_total") {
                reconciles += value()?;
            } else if line.starts_with("strata_operator_leader ") {
                leader = value();
            }
        }
        Some((reconciles, leader?))
    }

    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("strata-operator")
        .await
        .ok()??
        .spec?
        .holder_identity
}

/// Two replicas: one leads and reconciles, the other does nothing; the leader is killed and the
/// other takes over; a leader whose lease is taken stops and returns an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_between_two_replicas() {
    let etcd = Etcd::start().await.expect("etcd");
    let apiserver = KubeApiserver::start(&etcd).await.expect("kube-apiserver");
    let admin = admin_client(&apiserver).await;
    install_crds(&admin).await;
    create_namespace(&admin, RELEASE_NS).await;
    let team = "team";
    create_namespace(&admin, team).await;
    create_objstore_secret(&admin, team).await;

    let mut a = Replica::start(apiserver.kubeconfig(), "replica-a", team);
    let mut b = Replica::start(apiserver.kubeconfig(), "replica-b", team);
    let leases: Api<Lease> = Api::namespaced(admin.clone(), RELEASE_NS);
    let first = wait_until("a leader", WAIT, || async { holder(&leases).await })
        .await
        .expect("one replica takes the lease");
    let (leader, follower) = if first == a.identity {
        (&mut a, &mut b)
    } else {
        assert_eq!(first, b.identity);
        (&mut b, &mut a)
    };

    let mcs: Api<MetricsCluster> = Api::namespaced(admin.clone(), team);
    mcs.patch(
        "prod",
        &PatchParams::apply("e2e"),
        &Patch::Apply(&example()),
    )
    .await
    .expect("apply example");
    let deploys: Api<Deployment> = Api::namespaced(admin.clone(), team);
    wait_until("the leader to reconcile", WAIT, || async {
        deploys.get_opt("prod-query").await.ok()?
    })
    .await
    .expect("querier Deployment");
    let (leader_reconciles, leader_flag) = leader.metrics().await.expect("leader metrics");
    let (follower_reconciles, follower_flag) = follower.metrics().await.expect("follower metrics");
    assert!(leader_reconciles > 0.0, "the leader reconciled nothing");
    assert_eq!(leader_flag, 1.0);
    assert_eq!(follower_reconciles, 0.0, "the follower reconciled");
    assert_eq!(follower_flag, 0.0);

    // Kill the leader (no release): the follower takes over once the lease expires.
    let killed = Instant::now();
    leader.kill();
    let next = follower.identity.clone();
    wait_until("the follower to take the lease", WAIT, || async {
        (holder(&leases).await? == next).then_some(())
    })
    .await
    .expect("takeover");
    println!("takeover after {:?} (lease duration 4s)", killed.elapsed());
    let mut edited = example();
    edited["spec"]["query"]["replicas"] = json!(3);
    mcs.patch("prod", &PatchParams::apply("e2e"), &Patch::Apply(&edited))
        .await
        .expect("edit the cluster");
    wait_until("the new leader to reconcile the edit", WAIT, || async {
        let d = deploys.get_opt("prod-query").await.ok()??;
        (d.spec?.replicas? == 3).then_some(())
    })
    .await
    .expect("the new leader reconciles");
    let (reconciles, flag) = follower.metrics().await.expect("new leader metrics");
    assert!(reconciles > 0.0 && flag == 1.0, "{reconciles} {flag}");

    // Someone else takes the lease: the leader stops its controllers and returns an error.
    let now = serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    ))
    .expect("MicroTime");
    leases
        .patch(
            "strata-operator",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "thief", "renewTime": now,
                "leaseDurationSeconds": 3600}})),
        )
        .await
        .expect("steal the lease");
    let result = tokio::time::timeout(WAIT, &mut follower.done)
        .await
        .expect("the leader notices the lost lease")
        .expect("result sent");
    let err = result.expect_err("losing the lease is an error (the pod restarts)");
    assert!(err.contains("lost the lease"), "{err}");
}
