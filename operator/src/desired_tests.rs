//! Golden YAML of the desired objects; `UPDATE_GOLDEN=1 cargo test -p strata-operator` rewrites them.

use std::path::PathBuf;

use serde::Serialize;

use super::*;
use crate::crd::{MetricsClusterSpec, QuerySpec, Retention, Ruler};

fn golden<T: Serialize>(name: &str, objects: &[T]) {
    let mut text = String::new();
    for o in objects {
        text.push_str("---\n");
        text.push_str(&serde_norway::to_string(o).expect("yaml"));
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.yaml"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(
        text,
        want,
        "{} is stale (run with UPDATE_GOLDEN=1)",
        path.display()
    );
}

fn cluster(spec: serde_json::Value) -> MetricsCluster {
    let spec: MetricsClusterSpec = serde_json::from_value(spec).expect("spec");
    let mut mc = MetricsCluster::new("prod", spec);
    mc.metadata.namespace = Some("monitoring".into());
    mc.metadata.uid = Some("11111111-1111-1111-1111-111111111111".into());
    mc
}

fn minimal() -> MetricsCluster {
    cluster(serde_json::json!({"objectStorage": {"secretRef": {"name": "bucket"}}}))
}

fn inputs(mc: &MetricsCluster) -> ClusterInputs {
    ClusterInputs::new(mc, b"type: FILESYSTEM\nconfig:\n  directory: /tmp\n")
}

fn with_uid<K: Resource>(mut k: K) -> K {
    k.meta_mut().uid = Some("22222222-2222-2222-2222-222222222222".into());
    k
}

#[test]
fn querier_of_a_minimal_cluster() {
    let mc = minimal();
    let endpoints = vec![dnssrv_endpoint("prod-sidecar", "monitoring")];
    let q = querier(&mc, &endpoints).expect("querier");
    golden(
        "querier-minimal",
        &[
            serde_json::to_value(&q.service_account).expect("sa"),
            serde_json::to_value(&q.deployment).expect("deploy"),
            serde_json::to_value(&q.service).expect("svc"),
            serde_json::to_value(&q.sidecar_service).expect("sidecar svc"),
        ],
    );
    let args = q
        .deployment
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers[0].args.clone());
    assert!(
        args.flatten()
            .unwrap_or_default()
            .contains(&"--endpoint=dnssrv+_grpc._tcp.prod-sidecar.monitoring.svc".to_string())
    );
}

#[test]
fn querier_with_replica_labels_extra_args_and_load_balancer() {
    let mut mc = minimal();
    mc.spec.query = QuerySpec {
        replicas: 3,
        replica_labels: vec!["prometheus_replica".into(), "rule_replica".into()],
        service_type: crate::crd::ServiceType::LoadBalancer,
        extra_args: vec!["--query.timeout=5m".into()],
        ..QuerySpec::default()
    };
    mc.spec.sidecar.selector.match_labels = Some(BTreeMap::from([(
        "app.kubernetes.io/name".to_string(),
        "prometheus".to_string(),
    )]));
    let endpoints = vec![
        dnssrv_endpoint("prod-sidecar", "monitoring"),
        dnssrv_endpoint("prod-store-s2-0", "monitoring"),
        dnssrv_endpoint("prod-store-s2-1", "monitoring"),
    ];
    let q = querier(&mc, &endpoints).expect("querier");
    golden(
        "querier-ha",
        &[
            serde_json::to_value(&q.deployment).expect("deploy"),
            serde_json::to_value(&q.service).expect("svc"),
            serde_json::to_value(&q.sidecar_service).expect("sidecar svc"),
        ],
    );
}

#[test]
fn sidecar_match_expressions_are_a_named_spec_error() {
    let mc = cluster(serde_json::json!({
        "objectStorage": {"secretRef": {"name": "bucket"}},
        "sidecar": {"selector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}}
    }));
    let err = querier(&mc, &[]).expect_err("must fail");
    assert!(
        err.to_string()
            .contains("spec.sidecar.selector.matchExpressions"),
        "{err}"
    );
}

#[test]
fn store_gateway_two_shards() {
    let mc = cluster(serde_json::json!({
        "objectStorage": {"secretRef": {"name": "bucket", "key": "s3.yml"}},
        "image": "example.invalid/strata:test",
        "storeGateway": {"shards": 2, "replicasPerShard": 2, "minTime": "-8w",
            "chunkCacheSize": "256MB",
            "storage": {"size": "20Gi", "storageClassName": "fast"}}
    }));
    let sg = with_uid(inline_store_gateway(&mc).expect("sg").expect("inline"));
    golden("store-gateway-inline", &[&sg]);
    let shards = store_shards(&sg, &inputs(&mc), 2).expect("shards");
    assert_eq!(shards.len(), 2);
    let mut all = vec![serde_json::to_value(store_service_account(&sg).expect("sa")).expect("sa")];
    for s in &shards {
        all.push(serde_json::to_value(&s.statefulset).expect("sts"));
        all.push(serde_json::to_value(&s.service).expect("svc"));
        all.push(serde_json::to_value(&s.pdb).expect("pdb"));
    }
    golden("store-gateway-2-shards", &all);
}

#[test]
fn shard_relabel_configs_partition_the_modulus() {
    for n in 1..=4 {
        for i in 0..n {
            let yaml = shard_relabel_config(n, i);
            let rules: serde_json::Value = serde_norway::from_str(&yaml).expect("valid yaml");
            assert_eq!(rules[0]["action"], "hashmod");
            assert_eq!(rules[0]["modulus"], n);
            assert_eq!(rules[1]["regex"], i.to_string());
        }
    }
}

#[test]
fn objstore_change_rolls_store_pods() {
    let mc = cluster(serde_json::json!({
        "objectStorage": {"secretRef": {"name": "bucket"}}, "storeGateway": {}
    }));
    let sg = with_uid(inline_store_gateway(&mc).expect("sg").expect("inline"));
    let a = store_shards(&sg, &ClusterInputs::new(&mc, b"a"), 1).expect("a");
    let b = store_shards(&sg, &ClusterInputs::new(&mc, b"b"), 1).expect("b");
    let ann = |s: &ShardObjects| {
        s.statefulset
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .and_then(|a| a.get(CHECKSUM_ANNOTATION).cloned())
    };
    assert!(ann(&a[0]).is_some());
    assert_ne!(ann(&a[0]), ann(&b[0]));
}

#[test]
fn too_long_names_are_a_spec_error_not_a_panic() {
    let mut mc = minimal();
    mc.metadata.name = Some("x".repeat(60));
    mc.spec.store_gateway = serde_json::from_value(serde_json::json!({})).ok();
    let sg = with_uid(inline_store_gateway(&mc).expect("sg").expect("inline"));
    let err = store_shards(&sg, &inputs(&mc), 1).expect_err("too long");
    assert!(err.to_string().contains("metadata.name"), "{err}");
}

#[test]
fn compactor_with_retention_and_dedup() {
    let mut mc = minimal();
    mc.spec.compactor = Some(CompactorParams {
        retention: Retention {
            raw: "30d".into(),
            five_minutes: "90d".into(),
            one_hour: "1y".into(),
        },
        downsampling: true,
        deduplication_replica_labels: vec!["prometheus_replica".into()],
        storage: serde_json::from_value(serde_json::json!({"size": "50Gi"})).expect("storage"),
        resources: None,
    });
    let c = with_uid(inline_compactor(&mc).expect("c").expect("inline"));
    let objs = compactor(&c, &inputs(&mc)).expect("compactor");
    golden(
        "compactor",
        &[
            serde_json::to_value(&c).expect("c"),
            serde_json::to_value(&objs.service_account).expect("sa"),
            serde_json::to_value(&objs.service).expect("svc"),
            serde_json::to_value(&objs.statefulset).expect("sts"),
        ],
    );
}

#[test]
fn compactor_without_downsampling_passes_the_disable_flag() {
    let mut mc = minimal();
    mc.spec.compactor = serde_json::from_value(serde_json::json!({"downsampling": false})).ok();
    let c = with_uid(inline_compactor(&mc).expect("c").expect("inline"));
    let sts = compactor(&c, &inputs(&mc)).expect("compactor").statefulset;
    let args = sts
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers[0].args.clone())
        .unwrap_or_default();
    assert!(
        args.contains(&"--downsampling.disable".to_string()),
        "{args:?}"
    );
    assert!(args.contains(&"--wait".to_string()));
}

#[test]
fn every_pod_is_locked_down_and_probed() {
    let mc = cluster(serde_json::json!({
        "objectStorage": {"secretRef": {"name": "bucket"}}, "storeGateway": {}, "compactor": {}
    }));
    let sg = with_uid(inline_store_gateway(&mc).expect("sg").expect("inline"));
    let c = with_uid(inline_compactor(&mc).expect("c").expect("inline"));
    let templates = vec![
        querier(&mc, &[])
            .expect("q")
            .deployment
            .spec
            .expect("spec")
            .template,
        store_shards(&sg, &inputs(&mc), 1).expect("s")[0]
            .statefulset
            .spec
            .clone()
            .expect("spec")
            .template,
        compactor(&c, &inputs(&mc))
            .expect("c")
            .statefulset
            .spec
            .expect("spec")
            .template,
    ];
    for t in templates {
        let pod = t.spec.expect("pod spec");
        assert_eq!(
            pod.security_context
                .as_ref()
                .and_then(|s| s.run_as_non_root),
            Some(true)
        );
        for c in pod.containers {
            let sc = c.security_context.expect("container security context");
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(
                c.liveness_probe
                    .and_then(|p| p.http_get)
                    .and_then(|h| h.path)
                    .as_deref(),
                Some("/-/healthy")
            );
            assert_eq!(
                c.readiness_probe
                    .and_then(|p| p.http_get)
                    .and_then(|h| h.path)
                    .as_deref(),
                Some("/-/ready")
            );
        }
    }
}

fn a_ruler(spec: serde_json::Value) -> Ruler {
    let spec: crate::crd::RulerSpec = serde_json::from_value(spec).expect("ruler spec");
    let mut r = Ruler::new("global", spec);
    r.metadata.namespace = Some("monitoring".into());
    r.metadata.uid = Some("33333333-3333-3333-3333-333333333333".into());
    r
}

fn ruler_args(o: &RulerObjects) -> Vec<String> {
    o.statefulset
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers[0].args.clone())
        .unwrap_or_default()
}

fn pod_checksum(o: &RulerObjects) -> Option<String> {
    o.statefulset
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(CHECKSUM_ANNOTATION).cloned())
}

#[test]
fn ha_ruler_with_alertmanagers_and_labels() {
    let mc = minimal();
    let r = a_ruler(serde_json::json!({
        "clusterRef": {"name": "prod"}, "replicas": 2,
        "ruleSelector": {"matchLabels": {"role": "rules"}},
        "alertmanagers": ["http://alertmanager.monitoring.svc:9093"],
        "evalInterval": "30s", "externalLabels": {"tier": "global \"one\""},
        "storage": {"size": "5Gi"}, "retention": "24h"
    }));
    let files = BTreeMap::from([("configmap_a_b.yaml".to_string(), "groups: []\n".to_string())]);
    let o = ruler(&r, &inputs(&mc), &files).expect("ruler");
    golden(
        "ruler-ha",
        &[
            serde_json::to_value(&o.service_account).expect("sa"),
            serde_json::to_value(&o.config_map).expect("cm"),
            serde_json::to_value(&o.service).expect("svc"),
            serde_json::to_value(&o.statefulset).expect("sts"),
        ],
    );
    let args = ruler_args(&o);
    for want in [
        "--rule-file=/etc/strata/rules/*.yaml",
        "--query=http://prod-query.monitoring.svc:10902",
        "--alertmanagers.url=http://alertmanager.monitoring.svc:9093",
        "--label=ruler_replica=\"$(POD_NAME)\"",
        "--alert.label-drop=ruler_replica",
        "--label=tier=\"global \\\"one\\\"\"",
        "--eval-interval=30s",
        "--tsdb.retention=24h",
    ] {
        assert!(args.contains(&want.to_string()), "{want} not in {args:?}");
    }
    assert_eq!(
        o.service
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(STOREAPI_LABEL))
            .map(String::as_str),
        Some("true")
    );
}

#[test]
fn a_rule_change_rolls_the_ruler_pods() {
    let mc = minimal();
    let r = a_ruler(serde_json::json!({"clusterRef": {"name": "prod"}}));
    let a = BTreeMap::from([("x.yaml".to_string(), "groups: []\n".to_string())]);
    let b = BTreeMap::from([(
        "x.yaml".to_string(),
        "groups:\n- name: g\n  rules: []\n".to_string(),
    )]);
    let oa = ruler(&r, &inputs(&mc), &a).expect("a");
    let oa2 = ruler(&r, &inputs(&mc), &a).expect("a again");
    let ob = ruler(&r, &inputs(&mc), &b).expect("b");
    assert!(pod_checksum(&oa).is_some());
    assert_eq!(pod_checksum(&oa), pod_checksum(&oa2));
    assert_ne!(pod_checksum(&oa), pod_checksum(&ob));
}

#[test]
fn nonsense_ruler_specs_are_named_spec_errors() {
    let mc = minimal();
    for (spec, field) in [
        (
            serde_json::json!({"clusterRef": {"name": "prod"}, "replicas": -1}),
            "spec.replicas",
        ),
        (
            serde_json::json!({"clusterRef": {"name": "prod"}, "evalInterval": "0s"}),
            "spec.evalInterval",
        ),
        (
            serde_json::json!({"clusterRef": {"name": "prod"}, "retention": "soon"}),
            "spec.retention",
        ),
        (
            serde_json::json!({"clusterRef": {"name": "prod"}, "alertmanagers": ["alertmanager:9093"]}),
            "spec.alertmanagers[0]",
        ),
        (
            serde_json::json!({"clusterRef": {"name": "prod"}, "alertmanagers": ["http://a:1", "ftp://b"]}),
            "spec.alertmanagers[1]",
        ),
        (
            serde_json::json!({"clusterRef": {"name": "prod"}, "externalLabels": {"ruler_replica": "x"}}),
            "spec.externalLabels",
        ),
    ] {
        let r = a_ruler(spec);
        let err = ruler(&r, &inputs(&mc), &BTreeMap::new()).expect_err(field);
        assert!(err.to_string().starts_with(field), "{field}: {err}");
    }
}

#[test]
fn sidecar_service_in_another_namespace() {
    let mc = cluster(
        serde_json::json!({"objectStorage": {"secretRef": {"name": "bucket"}},
        "sidecar": {"selector": {"matchLabels": {"app": "prometheus"}},
                    "namespaceSelector": {"matchLabels": {"team": "a"}}}}),
    );
    let svc = remote_sidecar_service(&mc, "team-a").expect("service");
    assert_eq!(
        svc.metadata.name.as_deref(),
        Some("prod-monitoring-sidecar")
    );
    assert_eq!(svc.metadata.namespace.as_deref(), Some("team-a"));
    assert_eq!(
        svc.metadata.owner_references, None,
        "owners cannot cross namespaces"
    );
    let labels = svc.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(CLUSTER_NAMESPACE_LABEL).map(String::as_str),
        Some("monitoring")
    );
    assert_eq!(labels.get(CLUSTER_LABEL).map(String::as_str), Some("prod"));
    // The same spec as the cluster's own sidecar Service.
    let own = querier(&with_uid(mc.clone()), &[])
        .expect("querier")
        .sidecar_service;
    assert_eq!(svc.spec, own.spec);
    // A name over 63 characters is a named error, not a Service the API server refuses.
    let mut long = mc;
    long.metadata.namespace = Some("n".repeat(60));
    let err = remote_sidecar_service(&long, "team-a").expect_err("too long");
    assert!(err.to_string().contains("63"), "{err}");
}
