//! The sidecar-injection webhook against a real control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, a kwok fake node): the webhook runs in-process on
//! 127.0.0.1 with operator-managed TLS, registered by URL; Pods are created through the API server,
//! directly or by the StatefulSet controller, and read back as stored.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, CustomResourceExt};
use serde_json::{Value, json};
use strata_e2e::{Etcd, FAKE_NODE, KubeApiserver, KubeControlPlane, free_port, wait_until};
use strata_operator::crd::MetricsCluster;
use strata_operator::webhook::inject::{
    INJECTED_BY_ANNOTATION, OBJSTORE_VOLUME, SIDECAR_CONTAINER,
};
use strata_operator::webhook::tls::{CA_KEY, CERT_KEY, OperatorTls, service_sans};
use strata_operator::webhook::{Endpoint, TlsMode, WebhookConfig, configuration, start};
use strata_runtime::Shutdown;

const NS: &str = "monitoring";
const OPERATOR_NS: &str = "strata-system";
const SECRET: &str = "strata-operator-webhook-tls";
const HOOKS: &str = "strata-operator";
const WAIT: Duration = Duration::from_secs(60);
/// Validity of the test certificates: renewed after two thirds, i.e. 80 s.
const VALIDITY: Duration = Duration::from_secs(120);

async fn config(api: &KubeApiserver) -> kube::Config {
    let kc = Kubeconfig::read_from(api.kubeconfig()).expect("kubeconfig");
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config")
}

async fn create_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

fn prometheus_pod(name: &str, labels: Value, annotations: Value, args: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "containers": [{
                "name": "prometheus", "image": "quay.io/prometheus/prometheus:v3.9.0",
                "args": args,
                "volumeMounts": [{"name": "db", "mountPath": "/prometheus"}],
            }],
            "volumes": [{"name": "db", "emptyDir": {}}],
        }
    })
}

fn shipping_args() -> Value {
    json!([
        "--config.file=/etc/prometheus/prometheus.yml",
        "--storage.tsdb.path=/prometheus",
        "--storage.tsdb.min-block-duration=2h",
        "--storage.tsdb.max-block-duration=2h"
    ])
}

/// Creates a pod, retrying while the API server cannot reach the webhook yet (the test's
/// configuration fails closed, so an unreachable webhook is an error here, not a silent skip).
async fn create_pod(pods: &Api<Pod>, manifest: &Value) -> Pod {
    let pod: Pod = serde_json::from_value(manifest.clone()).expect("pod");
    let last_error = std::sync::Mutex::new(String::new());
    let created = wait_until("the API server to admit the pod", WAIT, || async {
        match pods.create(&PostParams::default(), &pod).await {
            Ok(p) => Some(p),
            Err(e) => {
                if let Ok(mut last) = last_error.lock() {
                    *last = e.to_string();
                }
                None
            }
        }
    })
    .await;
    match created {
        Ok(p) => p,
        Err(e) => panic!(
            "{e}; last error: {}",
            last_error.lock().map(|l| l.clone()).unwrap_or_default()
        ),
    }
}

fn containers(pod: &Pod) -> Vec<Value> {
    let v = serde_json::to_value(pod).expect("json");
    v["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn sidecar_of(pod: &Pod) -> Option<Value> {
    containers(pod)
        .into_iter()
        .find(|c| c["name"] == SIDECAR_CONTAINER)
}

fn ca_bundle(mwc: &MutatingWebhookConfiguration) -> Option<Vec<u8>> {
    mwc.webhooks
        .as_ref()?
        .first()?
        .client_config
        .ca_bundle
        .as_ref()
        .map(|b| b.0.clone())
}

fn secret_key(secret: &Secret, key: &str) -> Vec<u8> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .unwrap_or_default()
}

/// The first certificate of a PEM bundle, PEM-encoded again.
fn first_pem(bundle: &[u8]) -> String {
    let text = String::from_utf8_lossy(bundle);
    let end = "-----END CERTIFICATE-----";
    let cut = text.find(end).map(|i| i + end.len()).unwrap_or(text.len());
    format!("{}\n", &text[..cut])
}

/// A client that trusts only `ca_pem`: it can talk to the webhook only while that CA's
/// certificate is served.
fn client_trusting(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("ca")])
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_injects_sidecars_through_a_real_api_server() {
    let etcd = Etcd::start().await.expect("etcd");
    let apiserver = KubeApiserver::start(&etcd).await.expect("kube-apiserver");
    let _plane = KubeControlPlane::start(&apiserver)
        .await
        .expect("controller-manager, scheduler, kwok");
    let admin = Client::try_from(config(&apiserver).await).expect("admin client");

    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    crds.patch(
        "metricsclusters.strata.dev",
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(&MetricsCluster::crd()),
    )
    .await
    .expect("apply CRD");
    let mcs: Api<MetricsCluster> = Api::namespaced(admin.clone(), NS);
    wait_until("the CRD to be served", WAIT, || async {
        mcs.list(&ListParams::default()).await.ok()
    })
    .await
    .expect("CRD served");
    create_namespace(&admin, NS).await;
    create_namespace(&admin, OPERATOR_NS).await;
    // The controller-manager gives each namespace its default ServiceAccount; pods need it.
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), NS);
    wait_until("the default ServiceAccount", WAIT, || async {
        sas.get_opt("default").await.ok()?
    })
    .await
    .expect("default ServiceAccount");

    // The configuration the chart creates, pointed at a URL; failing closed so that a webhook the
    // API server cannot reach shows up as an error instead of an uninjected pod.
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}/mutate-pod");
    let mut hooks = configuration(HOOKS, &Endpoint::Url(url.clone()));
    if let Some(w) = hooks.webhooks.as_mut() {
        w[0].failure_policy = Some("Fail".into());
    }
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(admin.clone());
    mwcs.create(&PostParams::default(), &hooks)
        .await
        .expect("create MutatingWebhookConfiguration");

    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some("bucket".into()),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(
                    "objstore.yml".to_string(),
                    ByteString(b"type: FILESYSTEM\nconfig:\n  directory: /data\n".to_vec()),
                )])),
                ..Default::default()
            },
        )
        .await
        .expect("objstore secret");
    let mc: MetricsCluster = serde_json::from_value(json!({
        "apiVersion": "strata.dev/v1alpha1", "kind": "MetricsCluster",
        "metadata": {"name": "prod", "namespace": NS},
        "spec": {"objectStorage": {"secretRef": {"name": "bucket"}},
                 "image": "registry.local/strata:e2e",
                 "sidecar": {"selector": {"matchLabels": {"app": "prometheus"}}}},
    }))
    .expect("cluster");
    mcs.create(&PostParams::default(), &mc)
        .await
        .expect("MetricsCluster");

    // --- The webhook, in-process, with the operator keeping its certificate.
    let mut sans = service_sans("strata-operator-webhook", OPERATOR_NS);
    sans.push("127.0.0.1".into());
    let shutdown = Shutdown::new();
    let running = start(
        Client::try_from(config(&apiserver).await).expect("operator client"),
        WebhookConfig {
            address: format!("127.0.0.1:{port}").parse().expect("address"),
            tls: TlsMode::Operator(OperatorTls {
                namespace: OPERATOR_NS.into(),
                secret: SECRET.into(),
                sans,
                validity: VALIDITY,
                webhook_configuration: HOOKS.into(),
            }),
            scope: None,
        },
        shutdown.clone(),
    )
    .await
    .expect("start webhook");

    let tls_secrets: Api<Secret> = Api::namespaced(admin.clone(), OPERATOR_NS);
    let (first_secret, first_bundle) = wait_until("the Secret and the caBundle", WAIT, || async {
        let s = tls_secrets.get_opt(SECRET).await.ok()??;
        let bundle = ca_bundle(&mwcs.get(HOOKS).await.ok()?)?;
        (bundle == secret_key(&s, CA_KEY)).then_some((s, bundle))
    })
    .await
    .expect("operator-managed TLS");
    assert_eq!(first_secret.type_.as_deref(), Some("kubernetes.io/tls"));

    // --- A selected Prometheus pod is stored with the sidecar.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let stored = create_pod(
        &pods,
        &prometheus_pod(
            "prom-0",
            json!({"app": "prometheus"}),
            json!({}),
            shipping_args(),
        ),
    )
    .await;
    let sidecar = sidecar_of(&stored).expect("the stored pod has the sidecar");
    assert_eq!(sidecar["image"], "registry.local/strata:e2e");
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in [
        "sidecar",
        "--prometheus.url=http://localhost:9090",
        "--tsdb.path=/prometheus",
        "--objstore.config-file=/etc/strata/objstore/objstore.yml",
        "--grpc-address=0.0.0.0:10901",
    ] {
        assert!(args.contains(&want), "{want} not in {args:?}");
    }
    assert_eq!(sidecar["volumeMounts"][0]["name"], "db");
    assert_eq!(sidecar["volumeMounts"][0]["mountPath"], "/prometheus");
    assert_eq!(sidecar["volumeMounts"][1]["name"], OBJSTORE_VOLUME);
    let volumes =
        serde_json::to_value(stored.spec.as_ref().expect("spec")).expect("json")["volumes"].clone();
    let objstore = volumes
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == OBJSTORE_VOLUME)
        .expect("objstore volume")
        .clone();
    assert_eq!(objstore["secret"]["secretName"], "bucket");
    assert_eq!(
        stored
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(INJECTED_BY_ANNOTATION))
            .map(String::as_str),
        Some("monitoring/prod")
    );

    // --- Re-admission changes nothing: a server-side dry-run create of the injected spec.
    let mut again = serde_json::to_value(&stored).expect("json");
    again["metadata"] = json!({"name": "prom-0-again", "labels": again["metadata"]["labels"],
        "annotations": again["metadata"]["annotations"]});
    let again: Pod = serde_json::from_value(again).expect("pod");
    let dry = pods
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &again,
        )
        .await
        .expect("dry-run create");
    assert_eq!(
        containers(&dry),
        containers(&stored),
        "a second admission changed the pod"
    );
    let objstore_volumes = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .map(|v| v.iter().filter(|v| v.name == OBJSTORE_VOLUME).count())
            .unwrap_or_default()
    };
    assert_eq!(
        objstore_volumes(&dry),
        1,
        "a second admission added a volume"
    );

    // --- Unlabelled and opted-out pods are stored as sent.
    for (name, labels, annotations) in [
        ("grafana", json!({"app": "grafana"}), json!({})),
        (
            "prom-opted-out",
            json!({"app": "prometheus"}),
            json!({"strata.dev/inject": "false"}),
        ),
    ] {
        let p = create_pod(
            &pods,
            &prometheus_pod(name, labels, annotations, shipping_args()),
        )
        .await;
        assert_eq!(containers(&p).len(), 1, "{name} was changed");
        assert!(
            !p.metadata
                .annotations
                .clone()
                .unwrap_or_default()
                .contains_key(INJECTED_BY_ANNOTATION),
            "{name} was annotated"
        );
        assert_eq!(objstore_volumes(&p), 0, "{name} got a volume");
    }

    // --- A compacting Prometheus is injected, and the client sees the warning header.
    let http = apiserver.client().expect("http client");
    let compacting = prometheus_pod(
        "prom-compacting",
        json!({"app": "prometheus"}),
        json!({}),
        json!(["--storage.tsdb.path=/prometheus"]),
    );
    let resp = http
        .post(format!("{}/api/v1/namespaces/{NS}/pods", apiserver.url()))
        .json(&compacting)
        .send()
        .await
        .expect("create compacting pod");
    assert!(resp.status().is_success(), "{}", resp.status());
    let warnings: Vec<String> = resp
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|h| h.to_str().ok().map(str::to_string))
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("compacts blocks locally")),
        "warnings: {warnings:?}"
    );
    let body: Pod = resp.json().await.expect("pod body");
    assert!(
        sidecar_of(&body).is_some(),
        "compacting pod still gets the sidecar"
    );

    // --- A malformed review gets a clear error, and the server keeps serving.
    let webhook = client_trusting(&first_pem(&first_bundle));
    let bad = webhook
        .post(&url)
        .body("{not json")
        .send()
        .await
        .expect("post malformed review");
    assert_eq!(bad.status(), reqwest::StatusCode::BAD_REQUEST);
    let text = bad.text().await.expect("body");
    assert!(text.contains("malformed AdmissionReview"), "{text}");

    // --- A StatefulSet's Pod, created by the real StatefulSet controller, is injected too, and
    // both containers are Ready on the (kwok) node.
    let stss: Api<StatefulSet> = Api::namespaced(admin.clone(), NS);
    let template = prometheus_pod(
        "ignored",
        json!({"app": "prometheus", "sts": "prom"}),
        json!({}),
        shipping_args(),
    );
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "prom-sts"},
        "spec": {"replicas": 2, "serviceName": "prom-sts",
                 "selector": {"matchLabels": {"sts": "prom"}},
                 "template": {"metadata": {"labels": template["metadata"]["labels"]},
                              "spec": template["spec"]}},
    }))
    .expect("statefulset");
    stss.create(&PostParams::default(), &sts)
        .await
        .expect("create StatefulSet");
    let sts_pods = wait_until(
        "the StatefulSet's Pods Ready",
        Duration::from_secs(120),
        || async {
            let s = stss.get("prom-sts").await.ok()?;
            (s.status?.ready_replicas? == 2).then_some(())?;
            let a = pods.get("prom-sts-0").await.ok()?;
            let b = pods.get("prom-sts-1").await.ok()?;
            Some([a, b])
        },
    )
    .await
    .expect("StatefulSet pods");
    for p in &sts_pods {
        let sidecar = sidecar_of(p).expect("the StatefulSet's pod has the sidecar");
        assert!(
            sidecar["args"]
                .as_array()
                .is_some_and(|a| a.contains(&json!("--tsdb.path=/prometheus"))),
            "{sidecar}"
        );
        assert_eq!(objstore_volumes(p), 1);
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some(FAKE_NODE));
        let ready: Vec<String> = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| {
                cs.iter()
                    .filter(|c| c.ready)
                    .map(|c| c.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            ready.contains(&"prometheus".to_string())
                && ready.contains(&SIDECAR_CONTAINER.to_string()),
            "ready containers of {}: {ready:?}",
            p.metadata.name.as_deref().unwrap_or_default()
        );
    }
    // A rolling restart (a template change) re-creates the Pods through the webhook again.
    stss.patch(
        "prom-sts",
        &PatchParams::default(),
        &Patch::Merge(
            &json!({"spec": {"template": {"metadata": {"annotations": {"e2e/restart": "1"}}}}}),
        ),
    )
    .await
    .expect("restart");
    let restarted = wait_until("the rollout", Duration::from_secs(120), || async {
        let s = stss.get("prom-sts").await.ok()?;
        let st = s.status?;
        (st.observed_generation? >= s.metadata.generation?
            && st.updated_replicas? == 2
            && st.ready_replicas? == 2
            && st.current_revision == st.update_revision)
            .then_some(())?;
        let p = pods.get("prom-sts-0").await.ok()?;
        p.metadata
            .annotations
            .as_ref()?
            .contains_key("e2e/restart")
            .then_some(p)
    })
    .await
    .expect("rollout");
    assert_eq!(
        restarted
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("e2e/restart"))
            .map(String::as_str),
        Some("1")
    );
    assert!(
        sidecar_of(&restarted).is_some(),
        "re-created pod without the sidecar"
    );
    assert_eq!(
        containers(&restarted).len(),
        2,
        "re-created pod injected twice or not at all"
    );

    // --- Across namespaces: a cluster with a namespace selector injects into another namespace's
    // Prometheus, and warns that the objstore Secret must be copied there.
    let team_ns: Namespace = serde_json::from_value(
        json!({"metadata": {"name": "team-a", "labels": {"strata.dev/federate": "true"}}}),
    )
    .expect("ns");
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &team_ns)
        .await
        .expect("team namespace");
    let shared: MetricsCluster = serde_json::from_value(json!({
        "apiVersion": "strata.dev/v1alpha1", "kind": "MetricsCluster",
        "metadata": {"name": "shared", "namespace": NS},
        "spec": {"objectStorage": {"secretRef": {"name": "bucket"}},
                 "image": "registry.local/strata:e2e",
                 "sidecar": {"selector": {"matchLabels": {"app": "team-prometheus"}},
                             "namespaceSelector": {"matchLabels": {"strata.dev/federate": "true"}}}},
    }))
    .expect("cluster");
    mcs.create(&PostParams::default(), &shared)
        .await
        .expect("shared MetricsCluster");
    let team_sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "team-a");
    wait_until("team-a's default ServiceAccount", WAIT, || async {
        team_sas.get_opt("default").await.ok()?
    })
    .await
    .expect("default ServiceAccount in team-a");
    let resp = http
        .post(format!("{}/api/v1/namespaces/team-a/pods", apiserver.url()))
        .json(&prometheus_pod(
            "team-prom",
            json!({"app": "team-prometheus"}),
            json!({}),
            shipping_args(),
        ))
        .send()
        .await
        .expect("create team pod");
    assert!(resp.status().is_success(), "{}", resp.status());
    let warnings: Vec<String> = resp
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|h| h.to_str().ok().map(str::to_string))
        .collect();
    let team_pod: Pod = resp.json().await.expect("pod body");
    assert!(sidecar_of(&team_pod).is_some(), "team-a pod not injected");
    assert_eq!(
        team_pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(INJECTED_BY_ANNOTATION))
            .map(String::as_str),
        Some("monitoring/shared")
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("copy it there") && w.contains("team-a")),
        "warnings: {warnings:?}"
    );
    // The same labels in an unselected namespace stay untouched.
    let other = create_pod(
        &pods,
        &prometheus_pod(
            "team-prom-elsewhere",
            json!({"app": "team-prometheus"}),
            json!({}),
            shipping_args(),
        ),
    )
    .await;
    assert_eq!(
        containers(&other).len(),
        1,
        "a pod outside the selected namespaces was injected"
    );

    // --- Rotation: with a 2-minute validity the operator renews after 80 s; the Secret and the
    // caBundle change, the new certificate is served, and admission keeps working.
    let first_cert = secret_key(&first_secret, CERT_KEY);
    let renewed_bundle = wait_until(
        "the certificate to be renewed",
        Duration::from_secs(180),
        || async {
            let s = tls_secrets.get_opt(SECRET).await.ok()??;
            let bundle = ca_bundle(&mwcs.get(HOOKS).await.ok()?)?;
            (secret_key(&s, CERT_KEY) != first_cert && bundle == secret_key(&s, CA_KEY))
                .then_some(bundle)
        },
    )
    .await
    .expect("renewal");
    assert_ne!(renewed_bundle, first_bundle, "caBundle unchanged");
    let new_ca = first_pem(&renewed_bundle);
    assert_ne!(new_ca, first_pem(&first_bundle));
    assert!(
        String::from_utf8_lossy(&renewed_bundle).contains(first_pem(&first_bundle).trim()),
        "the previous CA stays in the bundle while valid"
    );
    let new_only = client_trusting(&new_ca);
    let health = wait_until("the renewed certificate to be served", WAIT, || async {
        new_only
            .get(url.replace("/mutate-pod", "/healthz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
    assert!(
        health.is_ok(),
        "the webhook does not serve the renewed certificate"
    );
    let after = create_pod(
        &pods,
        &prometheus_pod(
            "prom-1",
            json!({"app": "prometheus"}),
            json!({}),
            shipping_args(),
        ),
    )
    .await;
    assert!(sidecar_of(&after).is_some(), "no sidecar after rotation");

    shutdown.trigger();
    running.task.await.expect("webhook task");
}
