//! Table-like tests of [`super::inject`]: each builds a pod and clusters, applies the patch with
//! `json_patch` and looks at the resulting pod.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

const NS: &str = "monitoring";

fn cluster(name: &str, ns: &str, spec: Value) -> MetricsCluster {
    let mut spec = spec;
    if spec.get("objectStorage").is_none() {
        spec["objectStorage"] = json!({"secretRef": {"name": "bucket", "key": "objstore.yml"}});
    }
    serde_json::from_value(json!({
        "apiVersion": "strata.dev/v1alpha1", "kind": "MetricsCluster",
        "metadata": {"name": name, "namespace": ns}, "spec": spec,
    }))
    .expect("cluster")
}

fn selecting(labels: Value) -> MetricsCluster {
    cluster(
        "prod",
        NS,
        json!({"sidecar": {"selector": {"matchLabels": labels}}}),
    )
}

fn default_cluster() -> MetricsCluster {
    selecting(json!({"app": "prometheus"}))
}

fn pod(v: Value) -> Pod {
    serde_json::from_value(v).expect("pod")
}

/// A prometheus-operator-style pod: TSDB at /prometheus on volume `db`, block durations equal.
fn prom_pod() -> Value {
    json!({
        "metadata": {"name": "prometheus-0", "namespace": NS, "labels": {"app": "prometheus"}},
        "spec": {
            "containers": [{
                "name": "prometheus", "image": "quay.io/prometheus/prometheus:v3.9.0",
                "args": ["--storage.tsdb.path=/prometheus", "--web.listen-address=:9090",
                         "--storage.tsdb.min-block-duration=2h", "--storage.tsdb.max-block-duration=2h"],
                "volumeMounts": [{"name": "config", "mountPath": "/etc/prometheus"},
                                 {"name": "db", "mountPath": "/prometheus"}],
            }],
            "volumes": [{"name": "db", "emptyDir": {}}, {"name": "config", "emptyDir": {}}],
        }
    })
}

fn run(pod_json: Value, clusters: &[MetricsCluster]) -> Injection {
    run_in(pod_json, clusters, &BTreeMap::new())
}

fn run_in(
    pod_json: Value,
    clusters: &[MetricsCluster],
    ns_labels: &BTreeMap<String, String>,
) -> Injection {
    let p = pod(pod_json);
    inject(
        &p,
        PodContext {
            namespace: NS,
            namespace_labels: ns_labels,
        },
        clusters,
    )
}

/// Applies the injection's patch to the pod, as the API server would.
fn patched(pod_json: &Value, injection: &Injection) -> Value {
    let mut doc = pod_json.clone();
    let patch = injection.patch.as_ref().expect("a patch");
    json_patch::patch(&mut doc, patch).expect("patch applies");
    doc
}

fn sidecar(doc: &Value) -> &Value {
    doc["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == SIDECAR_CONTAINER)
        .expect("sidecar container")
}

fn args(c: &Value) -> Vec<String> {
    c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string").to_string())
        .collect()
}

fn has_arg(c: &Value, arg: &str) -> bool {
    args(c).iter().any(|a| a == arg)
}

#[test]
fn selected_pod_gets_the_sidecar() {
    let p = prom_pod();
    let inj = run(p.clone(), &[default_cluster()]);
    assert!(inj.warnings.is_empty(), "{:?}", inj.warnings);
    assert_eq!(inj.cluster.as_deref(), Some("monitoring/prod"));
    let doc = patched(&p, &inj);
    let c = sidecar(&doc);
    assert_eq!(args(c)[0], "sidecar");
    assert!(has_arg(c, "--prometheus.url=http://localhost:9090"));
    assert!(has_arg(c, "--tsdb.path=/prometheus"));
    assert!(has_arg(c, "--grpc-address=0.0.0.0:10901"));
    assert!(has_arg(c, "--http-address=0.0.0.0:10902"));
    assert!(has_arg(
        c,
        "--objstore.config-file=/etc/strata/objstore/objstore.yml"
    ));
    assert_eq!(
        c["ports"][0],
        json!({"name": "grpc", "containerPort": 10901, "protocol": "TCP"})
    );
    assert_eq!(c["ports"][1]["name"], "http");
    assert_eq!(
        c["volumeMounts"][0],
        json!({"name": "db", "mountPath": "/prometheus"})
    );
    assert_eq!(
        c["volumeMounts"][1],
        json!({"name": OBJSTORE_VOLUME, "mountPath": "/etc/strata/objstore", "readOnly": true})
    );
    let vol = doc["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == OBJSTORE_VOLUME)
        .expect("objstore volume");
    assert_eq!(vol["secret"]["secretName"], "bucket");
    assert_eq!(
        vol["secret"]["items"],
        json!([{"key": "objstore.yml", "path": "objstore.yml"}])
    );
    assert_eq!(
        doc["metadata"]["annotations"][INJECTED_BY_ANNOTATION],
        "monitoring/prod"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(
        sc.get("runAsNonRoot").is_none(),
        "pod does not ask for non-root: {sc}"
    );
    assert_eq!(
        c["image"],
        format!("ghcr.io/strata-dev/strata:{}", env!("CARGO_PKG_VERSION"))
    );
    // The Prometheus container is untouched.
    assert_eq!(doc["spec"]["containers"][0], p["spec"]["containers"][0]);
}

#[test]
fn unselected_pod_is_untouched() {
    let mut p = prom_pod();
    p["metadata"]["labels"] = json!({"app": "grafana"});
    let inj = run(p, &[default_cluster()]);
    assert_eq!(inj, Injection::default());
}

#[test]
fn empty_selector_selects_nothing() {
    let inj = run(prom_pod(), &[cluster("prod", NS, json!({}))]);
    assert!(inj.patch.is_none());
}

#[test]
fn cluster_in_another_namespace_without_namespace_selector_does_not_select() {
    let other = cluster(
        "prod",
        "elsewhere",
        json!({"sidecar": {"selector": {"matchLabels": {"app": "prometheus"}}}}),
    );
    assert!(run(prom_pod(), &[other]).patch.is_none());
}

#[test]
fn namespace_selector_matches_namespace_labels() {
    let c = cluster(
        "global",
        "strata",
        json!({"sidecar": {"selector": {"matchLabels": {"app": "prometheus"}},
                           "namespaceSelector": {"matchLabels": {"team": "infra"}}}}),
    );
    let infra = BTreeMap::from([("team".to_string(), "infra".to_string())]);
    let inj = run_in(prom_pod(), std::slice::from_ref(&c), &infra);
    assert_eq!(inj.cluster.as_deref(), Some("strata/global"));
    assert!(
        inj.warnings.iter().any(|w| w.contains("copy it there")),
        "cross-namespace Secret warning: {:?}",
        inj.warnings
    );
    let web = BTreeMap::from([("team".to_string(), "web".to_string())]);
    assert!(run_in(prom_pod(), &[c], &web).patch.is_none());
}

#[test]
fn match_expressions_are_honoured() {
    let c = cluster(
        "prod",
        NS,
        json!({"sidecar": {"selector": {"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["prometheus", "prom"]},
            {"key": "shard", "operator": "DoesNotExist"}]}}}),
    );
    assert!(run(prom_pod(), std::slice::from_ref(&c)).patch.is_some());
    let mut sharded = prom_pod();
    sharded["metadata"]["labels"]["shard"] = json!("1");
    assert!(run(sharded, &[c]).patch.is_none());
}

#[test]
fn opt_out_annotation_wins() {
    let mut p = prom_pod();
    p["metadata"]["annotations"] = json!({INJECT_ANNOTATION: "false"});
    assert_eq!(run(p, &[default_cluster()]), Injection::default());
}

#[test]
fn injected_pod_is_not_patched_again() {
    let p = prom_pod();
    let once = patched(&p, &run(p.clone(), &[default_cluster()]));
    let again = run(once, &[default_cluster()]);
    assert_eq!(again, Injection::default());
}

#[test]
fn space_separated_flags_are_read() {
    let mut p = prom_pod();
    p["spec"]["containers"][0]["args"] = json!([
        "--storage.tsdb.path",
        "/prometheus/data",
        "--web.listen-address",
        "0.0.0.0:9091",
        "--storage.tsdb.min-block-duration",
        "2h",
        "--storage.tsdb.max-block-duration",
        "120m",
    ]);
    let inj = run(p.clone(), &[default_cluster()]);
    assert!(inj.warnings.is_empty(), "2h = 120m: {:?}", inj.warnings);
    let doc = patched(&p, &inj);
    let c = sidecar(&doc);
    assert!(has_arg(c, "--tsdb.path=/prometheus/data"));
    assert!(has_arg(c, "--prometheus.url=http://localhost:9091"));
    assert_eq!(c["volumeMounts"][0]["name"], "db");
}

#[test]
fn default_tsdb_path_is_data_under_the_working_dir() {
    let mut p = prom_pod();
    let c = &mut p["spec"]["containers"][0];
    c["args"] = json!([
        "--storage.tsdb.min-block-duration=2h",
        "--storage.tsdb.max-block-duration=2h"
    ]);
    c["workingDir"] = json!("/var/lib/prom");
    c["volumeMounts"] = json!([{"name": "db", "mountPath": "/var/lib/prom"}]);
    let inj = run(p.clone(), &[default_cluster()]);
    assert!(inj.warnings.is_empty(), "{:?}", inj.warnings);
    let doc = patched(&p, &inj);
    let s = sidecar(&doc);
    assert!(
        has_arg(s, "--tsdb.path=/var/lib/prom/data"),
        "{:?}",
        args(s)
    );
    assert_eq!(s["volumeMounts"][0]["mountPath"], "/var/lib/prom");
}

#[test]
fn relative_path_without_working_dir_assumes_the_image_workdir_and_warns() {
    let mut p = prom_pod();
    p["spec"]["containers"][0]["args"] = json!([
        "--storage.tsdb.path=./tsdb/",
        "--storage.tsdb.min-block-duration=2h",
        "--storage.tsdb.max-block-duration=2h"
    ]);
    let inj = run(p.clone(), &[default_cluster()]);
    assert_eq!(inj.warnings.len(), 1, "{:?}", inj.warnings);
    assert!(inj.warnings[0].contains("assumed /prometheus"));
    assert!(has_arg(
        sidecar(&patched(&p, &inj)),
        "--tsdb.path=/prometheus/tsdb"
    ));
}

#[test]
fn no_volume_at_the_tsdb_path_means_no_sidecar_and_a_warning() {
    let mut p = prom_pod();
    p["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "config", "mountPath": "/etc/prometheus"}]);
    let inj = run(p, &[default_cluster()]);
    assert!(inj.patch.is_none());
    assert!(
        inj.warnings.iter().any(|w| w.contains("is on no volume")),
        "{:?}",
        inj.warnings
    );
}

#[test]
fn sibling_directory_with_common_prefix_is_not_the_tsdb_volume() {
    let mut p = prom_pod();
    p["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "db", "mountPath": "/prom"}]);
    p["spec"]["containers"][0]["args"] = json!([
        "--storage.tsdb.path=/prometheus",
        "--storage.tsdb.min-block-duration=2h",
        "--storage.tsdb.max-block-duration=2h"
    ]);
    assert!(run(p, &[default_cluster()]).patch.is_none());
}

#[test]
fn local_compaction_is_warned_about_but_injected() {
    let mut p = prom_pod();
    p["spec"]["containers"][0]["args"] = json!([
        "--storage.tsdb.path=/prometheus",
        "--storage.tsdb.max-block-duration=1d"
    ]);
    let inj = run(p, &[default_cluster()]);
    assert!(inj.patch.is_some());
    assert_eq!(inj.warnings.len(), 1);
    assert!(
        inj.warnings[0].contains("compacts blocks locally"),
        "{}",
        inj.warnings[0]
    );
    assert!(inj.warnings[0].contains("/prometheus/thanos.shipper.json"));
}

#[test]
fn default_block_durations_compact_and_are_warned_about() {
    let mut p = prom_pod();
    p["spec"]["containers"][0]["args"] = json!(["--storage.tsdb.path=/prometheus"]);
    let inj = run(p, &[default_cluster()]);
    assert!(
        inj.warnings
            .iter()
            .any(|w| w.contains("compacts blocks locally"))
    );
}

#[test]
fn delay_compact_file_silences_the_compaction_warning() {
    let mut p = prom_pod();
    p["spec"]["containers"][0]["args"] = json!([
        "--storage.tsdb.path=/prometheus",
        "--storage.tsdb.delay-compact-file.path=/prometheus/thanos.shipper.json"
    ]);
    let inj = run(p.clone(), &[default_cluster()]);
    assert!(inj.warnings.is_empty(), "{:?}", inj.warnings);
    p["spec"]["containers"][0]["args"] = json!([
        "--storage.tsdb.path=/prometheus",
        "--storage.tsdb.delay-compact-file.path=thanos.shipper.json"
    ]);
    let inj = run(p, &[default_cluster()]);
    assert!(
        inj.warnings[0].contains("is relative"),
        "{:?}",
        inj.warnings
    );
}

#[test]
fn container_found_by_tsdb_flag_or_image_and_not_the_reloader() {
    let mut p = prom_pod();
    p["spec"]["containers"][0]["name"] = json!("server");
    p["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .insert(0, json!({"name": "config-reloader", "image": "quay.io/prometheus-operator/prometheus-config-reloader:v0.80.0"}));
    let inj = run(p.clone(), &[default_cluster()]);
    assert!(has_arg(
        sidecar(&patched(&p, &inj)),
        "--tsdb.path=/prometheus"
    ));
    // Without the flag, the Prometheus image (not the reloader's) is found.
    p["spec"]["containers"][1]["args"] = json!([
        "--storage.tsdb.min-block-duration=2h",
        "--storage.tsdb.max-block-duration=2h"
    ]);
    p["spec"]["containers"][1]["workingDir"] = json!("/prometheus");
    let inj = run(p.clone(), &[default_cluster()]);
    assert!(inj.warnings.is_empty(), "{:?}", inj.warnings);
    assert!(has_arg(
        sidecar(&patched(&p, &inj)),
        "--tsdb.path=/prometheus/data"
    ));
}

#[test]
fn annotations_override_container_and_tsdb_path() {
    let mut p = prom_pod();
    p["spec"]["containers"][0]["name"] = json!("main");
    p["spec"]["containers"][0]["image"] = json!("example.com/custom-tsdb:1");
    p["spec"]["containers"][0]["args"] = json!([
        "--config=/etc/x",
        "--storage.tsdb.min-block-duration=2h",
        "--storage.tsdb.max-block-duration=2h"
    ]);
    p["spec"]["containers"]
        .as_array_mut()
        .expect("c")
        .push(json!({"name": "prometheus", "image": "busybox"}));
    p["metadata"]["annotations"] = json!({
        PROMETHEUS_CONTAINER_ANNOTATION: "main", TSDB_PATH_ANNOTATION: "/prometheus/blocks"});
    let inj = run(p.clone(), &[default_cluster()]);
    let doc = patched(&p, &inj);
    assert!(has_arg(sidecar(&doc), "--tsdb.path=/prometheus/blocks"));
    assert_eq!(
        doc["metadata"]["annotations"][INJECTED_BY_ANNOTATION],
        "monitoring/prod"
    );
    // An annotation naming no container: nothing injected, and the warning says so.
    p["metadata"]["annotations"][PROMETHEUS_CONTAINER_ANNOTATION] = json!("nope");
    let inj = run(p, &[default_cluster()]);
    assert!(inj.patch.is_none());
    assert!(
        inj.warnings[0].contains("names no container"),
        "{:?}",
        inj.warnings
    );
}

#[test]
fn url_from_container_port_and_route_prefix() {
    let mut p = prom_pod();
    let c = &mut p["spec"]["containers"][0];
    c["args"] = json!([
        "--storage.tsdb.path=/prometheus",
        "--web.route-prefix=/prom/",
        "--storage.tsdb.min-block-duration=2h",
        "--storage.tsdb.max-block-duration=2h"
    ]);
    c["ports"] =
        json!([{"name": "metrics", "containerPort": 8080}, {"name": "web", "containerPort": 9095}]);
    let inj = run(p.clone(), &[default_cluster()]);
    assert!(has_arg(
        sidecar(&patched(&p, &inj)),
        "--prometheus.url=http://localhost:9095/prom"
    ));
}

#[test]
fn image_resources_secret_key_and_non_root_user_follow_cluster_and_pod() {
    let c = cluster(
        "prod",
        NS,
        json!({"image": "registry.local/strata:dev",
               "objectStorage": {"secretRef": {"name": "s3", "key": "bucket.yaml"}},
               "sidecar": {"selector": {"matchLabels": {"app": "prometheus"}},
                           "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}}),
    );
    let mut p = prom_pod();
    p["spec"]["securityContext"] = json!({"runAsUser": 1000, "runAsGroup": 2000, "fsGroup": 2000});
    p["spec"].as_object_mut().expect("spec").remove("volumes");
    let inj = run(p.clone(), &[c]);
    let doc = patched(&p, &inj);
    let s = sidecar(&doc);
    assert_eq!(s["image"], "registry.local/strata:dev");
    assert_eq!(s["resources"]["requests"]["memory"], "128Mi");
    assert!(has_arg(
        s,
        "--objstore.config-file=/etc/strata/objstore/bucket.yaml"
    ));
    assert_eq!(s["securityContext"]["runAsUser"], 1000);
    assert_eq!(s["securityContext"]["runAsGroup"], 2000);
    assert_eq!(s["securityContext"]["runAsNonRoot"], true);
    // The pod had no volumes list: the patch creates it.
    assert_eq!(doc["spec"]["volumes"].as_array().map(Vec::len), Some(1));
}

#[test]
fn root_pod_does_not_get_run_as_non_root() {
    let mut p = prom_pod();
    p["spec"]["securityContext"] = json!({"runAsUser": 0});
    let inj = run(p.clone(), &[default_cluster()]);
    let doc = patched(&p, &inj);
    let sc = &sidecar(&doc)["securityContext"];
    assert_eq!(sc["runAsUser"], 0);
    assert!(sc.get("runAsNonRoot").is_none(), "{sc}");
}

#[test]
fn two_selecting_clusters_inject_the_first_by_name_and_warn() {
    let a = cluster(
        "alpha",
        NS,
        json!({"sidecar": {"selector": {"matchLabels": {"app": "prometheus"}}}}),
    );
    let b = cluster(
        "beta",
        NS,
        json!({"sidecar": {"selector": {"matchLabels": {"app": "prometheus"}}}}),
    );
    let inj = run(prom_pod(), &[b, a]);
    assert_eq!(inj.cluster.as_deref(), Some("monitoring/alpha"));
    assert!(
        inj.warnings
            .iter()
            .any(|w| w.contains("several MetricsClusters") && w.contains("monitoring/beta"))
    );
}

#[test]
fn annotation_key_with_slash_is_escaped_in_the_patch() {
    let mut p = prom_pod();
    p["metadata"]["annotations"] = json!({"other": "x"});
    let inj = run(p.clone(), &[default_cluster()]);
    let text = serde_json::to_string(inj.patch.as_ref().expect("patch")).expect("json");
    assert!(
        text.contains("/metadata/annotations/strata.dev~1sidecar-injected-by"),
        "{text}"
    );
    let doc = patched(&p, &inj);
    assert_eq!(doc["metadata"]["annotations"]["other"], "x");
    assert_eq!(
        doc["metadata"]["annotations"][INJECTED_BY_ANNOTATION],
        "monitoring/prod"
    );
}

#[test]
fn pod_without_a_prometheus_container_is_warned_about() {
    let mut p = prom_pod();
    p["spec"]["containers"] = json!([{"name": "nginx", "image": "nginx"}]);
    let inj = run(p, &[default_cluster()]);
    assert!(inj.patch.is_none());
    assert!(inj.warnings[0].contains("no Prometheus container"));
}
