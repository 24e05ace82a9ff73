//! `strata operator` (the real binary) on a real control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, a kwok fake node) reports a `Compactor`'s `Halted`
//! condition and `lastSuccessfulRun` from the compactor itself. kwok gives Pods loopback IPs and
//! runs nothing, so the test plays the compactor Pod: it runs `strata compact` with the Pod's own
//! arguments, bound to the Pod's IP, over a bucket in which two blocks overlap.

#![allow(clippy::unwrap_used)] // test code: fixtures we made

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use strata_e2e::{Etcd, KubeApiserver, KubeControlPlane, Process, free_port, wait_until};
use strata_tsdb::{BlockWriter, BlockWriterOptions, Labels};

const NS: &str = "strata";
const H: i64 = 3600 * 1000;
const WAIT: Duration = Duration::from_secs(120);

/// The API server through the admin client: JSON in, (status, JSON) out.
struct Kube {
    http: reqwest::Client,
    base: String,
}

impl Kube {
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn create(&self, path: &str, body: Value) {
        let (code, v) = self.call(Method::POST, path, Some(&body)).await;
        assert!((200..300).contains(&code), "POST {path}: {code} {v}");
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let (code, v) = self.call(Method::GET, path, None).await;
        (code == 200).then_some(v)
    }
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Writes a block of 3 series over `[from, to)` into `bucket` as a shipped block (Thanos meta
/// section with external labels), returning its ULID.
fn write_block(bucket: &Path, from: i64, to: i64) -> String {
    let mut w = BlockWriter::new(bucket, BlockWriterOptions::default()).unwrap();
    for i in 0..3 {
        let l = Labels::from_pairs([("__name__", "m"), ("i", &*i.to_string())]).unwrap();
        let s: Vec<(i64, f64)> = (from..to)
            .step_by(30_000)
            .map(|t| (t, (t / 30_000) as f64 + f64::from(i)))
            .collect();
        w.add_series(&l, &s).unwrap();
    }
    w.set_time_range(from, to);
    let id = w.finish().unwrap().to_string();
    let meta_path = bucket.join(&id).join("meta.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta["thanos"] = json!({"version": 1, "labels": {"cluster": "eu"},
        "downsample": {"resolution": 0}, "source": "e2e"});
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    id
}

/// `strata compact` with the Pod's arguments, but this machine's paths and the Pod's IP.
fn compactor(pod: &Value, objstore_file: &Path, data_dir: &Path, ip: &str) -> Process {
    let args: Vec<String> = pod["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .map(|a| {
            if a.starts_with("--data-dir=") {
                format!("--data-dir={}", data_dir.display())
            } else if a.starts_with("--objstore.config-file=") {
                format!("--objstore.config-file={}", objstore_file.display())
            } else if let Some(addr) = a.strip_prefix("--http-address=") {
                let port = addr.rsplit(':').next().unwrap();
                format!("--http-address={ip}:{port}")
            } else {
                a
            }
        })
        .collect();
    assert_eq!(args[0], "compact", "{args:?}");
    assert!(args.contains(&"--wait".to_string()), "{args:?}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args(&args)
        .arg("--consistency-delay=0s")
        .arg("--wait-interval=2s");
    Process::spawn("strata-compact", cmd).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_reports_the_compactor_halt_from_the_compactor() {
    let etcd = Etcd::start().await.unwrap();
    let apiserver = KubeApiserver::start(&etcd).await.unwrap();
    let _plane = KubeControlPlane::start(&apiserver).await.unwrap();
    let kube = Kube {
        http: apiserver.client().unwrap(),
        base: apiserver.url().to_string(),
    };

    // CRDs from the repository, a namespace, a volume for the compactor's claim, the bucket Secret.
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    for e in std::fs::read_dir(&crds).unwrap() {
        let crd: Value =
            serde_norway::from_str(&std::fs::read_to_string(e.unwrap().path()).unwrap()).unwrap();
        kube.create(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            crd,
        )
        .await;
    }
    kube.create("/api/v1/namespaces", json!({"metadata": {"name": NS}}))
        .await;
    kube.create(
        "/api/v1/persistentvolumes",
        json!({"metadata": {"name": "pv-0"}, "spec": {"capacity": {"storage": "100Gi"},
            "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/tmp/strata-e2e-pv"}}}),
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let bucket = tmp.path().join("bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let objstore = format!(
        "type: FILESYSTEM\nconfig:\n  directory: {}\n",
        bucket.display()
    );
    let objstore_file = tmp.path().join("objstore.yml");
    std::fs::write(&objstore_file, &objstore).unwrap();
    kube.create(
        &format!("/api/v1/namespaces/{NS}/secrets"),
        json!({"metadata": {"name": "bucket"}, "stringData": {"objstore.yml": objstore}}),
    )
    .await;
    let cs = format!("/apis/strata.dev/v1alpha1/namespaces/{NS}/compactors");
    wait_until("the CRDs to be served", WAIT, || async {
        kube.get(&cs).await
    })
    .await
    .unwrap();

    // The operator: the real binary, watching the namespace.
    let mut op = Command::new(env!("CARGO_BIN_EXE_strata"));
    op.arg("operator")
        .arg(format!("--kubeconfig={}", apiserver.kubeconfig().display()))
        .arg(format!("--namespace={NS}"))
        .arg(format!("--http-address=127.0.0.1:{}", free_port()));
    let mut operator = Process::spawn("strata-operator", op).unwrap();

    kube.create(
        &format!("/apis/strata.dev/v1alpha1/namespaces/{NS}/metricsclusters"),
        json!({"apiVersion": "strata.dev/v1alpha1", "kind": "MetricsCluster",
            "metadata": {"name": "prod"},
            "spec": {"objectStorage": {"secretRef": {"name": "bucket"}},
                     "compactor": {"storage": {"size": "1Gi"}}}}),
    )
    .await;
    let c_path = format!("{cs}/prod-compactor");

    // The Pod is Ready but nothing serves its port: Halted is Unknown, saying why.
    let unknown = wait_until("Compactor Ready, Halted Unknown", WAIT, || async {
        let c = kube.get(&c_path).await?;
        (condition(&c, "Ready")?["status"] == "True"
            && condition(&c, "Halted")?["status"] == "Unknown")
            .then_some(c)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", operator.log_tail()));
    let halted = condition(&unknown, "Halted").unwrap();
    assert_eq!(halted["reason"], "StatusUnreadable", "{halted}");
    assert!(
        halted["message"]
            .as_str()
            .unwrap()
            .contains("/api/v1/status/compactor"),
        "{halted}"
    );

    // Play the Pod: two overlapping blocks, the compactor on the Pod's IP with the Pod's args.
    let pod = kube
        .get(&format!("/api/v1/namespaces/{NS}/pods/prod-compactor-0"))
        .await
        .unwrap();
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("127."), "kwok pod IP {ip}");
    let a = write_block(&bucket, 0, 2 * H);
    let b = write_block(&bucket, H, 3 * H);
    let data = tmp.path().join("data");
    let mut compact = compactor(&pod, &objstore_file, &data, &ip);

    let halted = wait_until("Halted=True naming both blocks", WAIT, || {
        let alive = compact.check_running().is_ok();
        let (kube, c_path) = (&kube, &c_path);
        async move {
            alive.then_some(())?;
            let c = kube.get(c_path).await?;
            let h = condition(&c, "Halted")?.clone();
            (h["status"] == "True").then_some(h)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", compact.log_tail(), operator.log_tail()));
    let message = halted["message"].as_str().unwrap();
    assert_eq!(halted["reason"], "OverlappingBlocks");
    assert!(
        message.contains(&a) && message.contains(&b) && message.contains("overlap"),
        "{message}"
    );

    // ... and a Warning Event on the Compactor says the same.
    let events = format!("/apis/events.k8s.io/v1/namespaces/{NS}/events");
    let note = wait_until("a CompactionHalted Event", WAIT, || async {
        let list = kube.get(&events).await?;
        list["items"].as_array()?.iter().find_map(|e| {
            (e["reason"] == "CompactionHalted"
                && e["type"] == "Warning"
                && e["regarding"]["name"] == "prod-compactor")
                .then(|| e["note"].as_str().unwrap_or_default().to_string())
        })
    })
    .await
    .unwrap();
    assert!(note.contains(&a) && note.contains(&b), "{note}");

    // The overlap removed and the compactor restarted (a halt lasts until then, as in Thanos):
    // Halted=False and a lastSuccessfulRun.
    compact.kill();
    std::fs::remove_dir_all(bucket.join(&b)).unwrap();
    let mut compact = compactor(&pod, &objstore_file, &data, &ip);
    let settled = wait_until("Halted=False with a last successful run", WAIT, || {
        let alive = compact.check_running().is_ok();
        let (kube, c_path) = (&kube, &c_path);
        async move {
            alive.then_some(())?;
            let c = kube.get(c_path).await?;
            (condition(&c, "Halted")?["status"] == "False"
                && c["status"]["lastSuccessfulRun"].is_string())
            .then_some(c)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", compact.log_tail(), operator.log_tail()));
    let when = settled["status"]["lastSuccessfulRun"].as_str().unwrap();
    assert!(when.ends_with('Z') && when.starts_with("20"), "{when}");
    operator.check_running().unwrap();
}
