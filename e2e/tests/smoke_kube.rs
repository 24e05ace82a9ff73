//! Smoke test: a real kube-apiserver (on a real etcd) accepts a CRD and an object of it.

use std::time::Duration;

use serde_json::json;
use strata_e2e::{Etcd, KubeApiserver, wait_until};

#[tokio::test]
async fn apiserver_accepts_a_crd_and_an_object_of_it() {
    let out = strata_e2e::run_tool(strata_e2e::Tool::Etcd, &["--version"]).unwrap();
    println!(
        "{}",
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
    );
    assert!(out.status.success(), "{out:?}");
    let etcd = Etcd::start().await.unwrap();
    let api = KubeApiserver::start(&etcd).await.unwrap();
    let client = api.client().unwrap();
    let base = api.url().to_string();

    let version: serde_json::Value = client
        .get(format!("{base}/version"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    println!("kube-apiserver version {}", version["gitVersion"]);
    assert!(
        version["gitVersion"].as_str().unwrap().starts_with("v1."),
        "{version}"
    );

    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.smoke.strata.dev"},
        "spec": {
            "group": "smoke.strata.dev",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer", "minimum": 1}}}
                }}}
            }]
        }
    });
    let resp = client
        .post(format!(
            "{base}/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        ))
        .json(&crd)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());

    let widgets = format!("{base}/apis/smoke.strata.dev/v1/namespaces/default/widgets");
    wait_until("the CRD to be served", Duration::from_secs(60), || async {
        let r = client.get(&widgets).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await
    .unwrap();

    let obj = json!({"apiVersion": "smoke.strata.dev/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 3}});
    let resp = client.post(&widgets).json(&obj).send().await.unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let got: serde_json::Value = client
        .get(format!("{widgets}/w1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["spec"]["size"], 3);

    // The schema is enforced: size must be >= 1.
    let bad = json!({"apiVersion": "smoke.strata.dev/v1", "kind": "Widget",
        "metadata": {"name": "w2"}, "spec": {"size": 0}});
    let resp = client.post(&widgets).json(&bad).send().await.unwrap();
    assert_eq!(resp.status(), 422, "{}", resp.text().await.unwrap());
}
