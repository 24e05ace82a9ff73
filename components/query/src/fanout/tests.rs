//! Fan-out tests against in-process fake StoreAPI servers (canned answers, recorded requests).

use std::pin::Pin;

use futures::Stream;
use promql_parser::label::MatchOp;
use strata_storeapi::pb::info::info_server::Info;
use strata_storeapi::pb::info::{InfoRequest, InfoResponse, StoreInfo};
use strata_storeapi::pb::thanos::store_server::Store;
use strata_storeapi::pb::thanos::{
    AggrChunk, Chunk, Label, LabelNamesResponse, LabelValuesResponse, SeriesResponse, ZLabelSet,
};
use strata_storeapi::{Listen, ServerOptions};
use strata_tsdb::chunkenc::Chunk as TsdbChunk;
use tonic::{Request, Response};

use super::*;
use crate::endpoints::EndpointSetConfig;

#[derive(Clone, Default)]
struct Fake {
    external: Vec<Label>,
    series: Vec<pb::Series>,
    names: Vec<String>,
    delay: Duration,
    fail: Option<tonic::Code>,
    seen: Arc<Mutex<Vec<SeriesRequest>>>,
}

type SeriesStream = Pin<Box<dyn Stream<Item = Result<SeriesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Store for Fake {
    type SeriesStream = SeriesStream;

    async fn series(
        &self,
        request: Request<SeriesRequest>,
    ) -> Result<Response<SeriesStream>, Status> {
        let req = request.into_inner();
        let skip = req.skip_chunks;
        if let Ok(mut s) = self.seen.lock() {
            s.push(req);
        }
        tokio::time::sleep(self.delay).await;
        if let Some(code) = self.fail {
            return Err(Status::new(code, "backend broke"));
        }
        let mut out: Vec<Result<SeriesResponse, Status>> = self
            .series
            .iter()
            .map(|s| {
                let mut s = s.clone();
                s.labels.extend(self.external.iter().cloned());
                s.labels.sort_by(|a, b| a.name.cmp(&b.name));
                if skip {
                    s.chunks.clear();
                }
                Ok(SeriesResponse {
                    result: Some(series_response::Result::Series(s)),
                })
            })
            .collect();
        out.push(Ok(SeriesResponse {
            result: Some(series_response::Result::Warning(
                "some block missing".into(),
            )),
        }));
        Ok(Response::new(Box::pin(futures::stream::iter(out))))
    }

    async fn label_names(
        &self,
        _: Request<LabelNamesRequest>,
    ) -> Result<Response<LabelNamesResponse>, Status> {
        let mut names = self.names.clone();
        names.extend(self.external.iter().map(|l| l.name.clone()));
        Ok(Response::new(LabelNamesResponse {
            names,
            ..Default::default()
        }))
    }

    async fn label_values(
        &self,
        r: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        let name = r.into_inner().label;
        Ok(Response::new(LabelValuesResponse {
            values: self
                .external
                .iter()
                .filter(|l| l.name == name)
                .map(|l| l.value.clone())
                .collect(),
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl Info for Fake {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(InfoResponse {
            label_sets: vec![ZLabelSet {
                labels: self.external.clone(),
            }],
            component_type: "store".into(),
            store: Some(StoreInfo {
                min_time: 0,
                max_time: 1_000_000,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

async fn serve(fake: Fake) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    tokio::spawn(strata_storeapi::serve(
        Listen::Listener(l),
        fake.clone(),
        fake,
        ServerOptions::default(),
        std::future::pending::<()>(),
    ));
    addr
}

fn l(n: &str, v: &str) -> Label {
    Label {
        name: n.into(),
        value: v.into(),
    }
}

fn xor(samples: &[(i64, f64)]) -> Chunk {
    let c = TsdbChunk::from_floats(samples).expect("encode");
    Chunk {
        r#type: 0,
        data: c.data().clone(),
        hash: 0,
    }
}

fn raw_series(name: &str, samples: &[(i64, f64)]) -> pb::Series {
    pb::Series {
        labels: vec![l("__name__", name)],
        chunks: vec![AggrChunk {
            min_time: samples.first().map_or(0, |s| s.0),
            max_time: samples.last().map_or(0, |s| s.0),
            raw: Some(xor(samples)),
            ..Default::default()
        }],
    }
}

fn eq(name: &str, v: &str) -> Matcher {
    Matcher::new(MatchOp::Equal, name, v)
}

fn source(addrs: Vec<String>, replica_labels: &[&str], timeout: Duration) -> FanoutSource {
    let set = EndpointSet::new(EndpointSetConfig {
        endpoints: addrs,
        ..Default::default()
    })
    .expect("config");
    FanoutSource::new(
        set,
        FanoutConfig {
            replica_labels: replica_labels.iter().map(|s| s.to_string()).collect(),
            store_response_timeout: timeout,
        },
    )
}

fn opts(dedup: bool, partial: bool) -> QueryOptions {
    QueryOptions {
        dedup,
        partial_response: partial,
        ..Default::default()
    }
}

#[tokio::test]
async fn two_replicas_dedup_and_requests() {
    let samples_a: Vec<(i64, f64)> = (0..10).map(|i| (i * 10_000, i as f64)).collect();
    let samples_b: Vec<(i64, f64)> = (0..10).map(|i| (i * 10_000 + 3_000, i as f64)).collect();
    let a = Fake {
        external: vec![l("replica", "a")],
        series: vec![raw_series("up", &samples_a)],
        names: vec!["__name__".into()],
        ..Default::default()
    };
    let b = Fake {
        external: vec![l("replica", "b")],
        series: vec![raw_series("up", &samples_b)],
        names: vec!["__name__".into()],
        ..Default::default()
    };
    let seen = a.seen.clone();
    let src = source(
        vec![serve(a).await, serve(b).await],
        &["replica"],
        Duration::ZERO,
    );
    src.endpoints().refresh().await;
    assert_eq!(src.stores().len(), 2);
    assert!(src.stores().iter().all(|s| s.healthy), "{:?}", src.stores());
    assert_eq!(src.stores()[0].component_type.as_deref(), Some("store"));

    let v = src.view(&opts(true, true));
    let got = v
        .select(&[eq("__name__", "up")], 0, 200_000)
        .await
        .expect("select");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].labels.get("replica"), None);
    assert_eq!(
        got[0].samples, samples_a,
        "follows replica a, no doubled samples"
    );
    // the store's own warning is passed on, naming the store
    assert!(
        v.warnings()
            .iter()
            .any(|w| w.ends_with(": some block missing"))
    );

    let v = src.view(&opts(false, true));
    let got = v
        .select(&[eq("__name__", "up")], 0, 200_000)
        .await
        .expect("select");
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].labels.get("replica"), Some("b"));

    // the request carried what we asked for
    let req = seen
        .lock()
        .expect("lock")
        .first()
        .cloned()
        .expect("a request");
    assert_eq!((req.min_time, req.max_time), (0, 200_000));
    assert_eq!(req.matchers, matchers_to_pb(&[eq("__name__", "up")]));
    assert!(!req.skip_chunks);
    assert_eq!(
        req.partial_response_strategy,
        PartialResponseStrategy::Warn as i32
    );
    assert_eq!(req.max_resolution_window, 0);

    // metadata: replica label hidden with dedup
    let v = src.view(&opts(true, true));
    let names = v.label_names_matching(&[], 0, 1).await.expect("names");
    assert_eq!(names, vec!["__name__"]);
    let ls = v
        .series_labels(&[eq("__name__", "up")], 0, 1)
        .await
        .expect("series");
    assert_eq!(ls.len(), 1);
    let v = src.view(&opts(false, true));
    let names = v.label_names_matching(&[], 0, 1).await.expect("names");
    assert_eq!(names, vec!["__name__", "replica"]);
    let vals = v
        .label_values_matching("replica", &[], 0, 1)
        .await
        .expect("values");
    assert_eq!(vals, vec!["a", "b"]);
    assert_eq!(
        v.series_labels(&[eq("__name__", "up")], 0, 1)
            .await
            .expect("s")
            .len(),
        2
    );
    // pruned by external label: only b is asked
    let before = seen.lock().expect("lock").len();
    let got = v
        .select(&[eq("__name__", "up"), eq("replica", "b")], 0, 200_000)
        .await
        .expect("select");
    assert_eq!(got.len(), 1);
    assert_eq!(
        seen.lock().expect("lock").len(),
        before,
        "store a was pruned"
    );
}

#[tokio::test]
async fn failing_and_slow_stores() {
    let ok = Fake {
        external: vec![l("replica", "a")],
        series: vec![raw_series("up", &[(0, 1.0)])],
        ..Default::default()
    };
    let broken = Fake {
        external: vec![l("replica", "b")],
        fail: Some(tonic::Code::Unavailable),
        ..Default::default()
    };
    let slow = Fake {
        external: vec![l("replica", "c")],
        delay: Duration::from_secs(5),
        ..Default::default()
    };
    let (ok, broken, slow) = (serve(ok).await, serve(broken).await, serve(slow).await);
    let src = source(
        vec![ok.clone(), broken.clone(), slow.clone()],
        &[],
        Duration::from_millis(300),
    );
    src.endpoints().refresh().await;
    let v = src.view(&opts(true, true));
    let got = v
        .select(&[eq("__name__", "up")], 0, 10)
        .await
        .expect("partial");
    assert_eq!(got.len(), 1);
    let ws = v.warnings();
    assert!(
        ws.contains(&format!(
            "store {broken}: rpc error: code = Unavailable desc = backend broke"
        )),
        "{ws:?}"
    );
    assert!(
        ws.iter()
            .any(|w| w.starts_with(&format!("store {slow}: rpc error: code = DeadlineExceeded"))),
        "{ws:?}"
    );
    let v = src.fanout_view(&opts(true, false));
    let e = v
        .select(&[eq("__name__", "up"), eq("replica", "b")], 0, 10)
        .await
        .expect_err("no partial response");
    assert!(
        e.to_string()
            .contains(&format!("store {broken}: rpc error")),
        "{e}"
    );
    let req_strategy = v.strategy();
    assert_eq!(req_strategy, (true, PartialResponseStrategy::Abort as i32));
}

#[tokio::test]
async fn unreachable_healthy_endpoint_is_named() {
    // Health said yes, then the store went away before the query.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let ep = Arc::new(Endpoint::new(&format!("127.0.0.1:{port}")));
    ep.set_info(EndpointInfo {
        healthy: true,
        min_time: i64::MIN,
        max_time: i64::MAX,
        ..Default::default()
    });
    let v = FanoutView::new(
        vec![ep.clone()],
        ClientOptions::default(),
        FanoutConfig::default(),
        opts(true, true),
    );
    let got = v
        .select(&[eq("__name__", "up")], 0, 10)
        .await
        .expect("partial");
    assert!(got.is_empty());
    assert_eq!(v.warnings().len(), 1);
    assert!(v.warnings()[0].starts_with(&format!("store 127.0.0.1:{port}: ")));
    let v = FanoutView::new(
        vec![ep],
        ClientOptions::default(),
        FanoutConfig::default(),
        opts(true, false),
    );
    assert!(v.select(&[eq("__name__", "up")], 0, 10).await.is_err());
}

#[tokio::test]
async fn downsampled_chunks_read_the_right_aggregate() {
    let chunk = AggrChunk {
        min_time: 0,
        max_time: 600_000,
        raw: None,
        count: Some(xor(&[(300_000, 10.0), (600_000, 5.0)])),
        sum: Some(xor(&[(300_000, 100.0), (600_000, 200.0)])),
        min: Some(xor(&[(300_000, 1.0), (600_000, 2.0)])),
        max: Some(xor(&[(300_000, 30.0), (600_000, 60.0)])),
        counter: Some(xor(&[(300_000, 7.0), (600_000, 9.0)])),
    };
    let fake = Fake {
        external: vec![l("cluster", "eu")],
        series: vec![pb::Series {
            labels: vec![l("__name__", "m")],
            chunks: vec![chunk],
        }],
        ..Default::default()
    };
    let seen = fake.seen.clone();
    let src = source(vec![serve(fake).await], &[], Duration::ZERO);
    src.endpoints().refresh().await;
    let o = QueryOptions {
        auto_downsampling: true,
        step_ms: 3_600_000,
        ..Default::default()
    };
    let v = src.view(&o);
    let hints = |f: &str| SelectHints {
        step_ms: 3_600_000,
        range_ms: 600_000,
        func: Some(f.into()),
    };
    let m = [eq("__name__", "m")];
    let got = v
        .select_with_hints(&m, 0, 700_000, &hints("rate"))
        .await
        .expect("rate");
    assert_eq!(got[0].samples, vec![(300_000, 7.0), (600_000, 9.0)]);
    let req = seen.lock().expect("lock").last().cloned().expect("req");
    assert_eq!(req.max_resolution_window, 720_000);
    assert_eq!(req.aggregates, vec![pb::Aggr::Counter as i32]);
    assert_eq!(
        req.query_hints
            .and_then(|h| h.func)
            .map(|f| f.name)
            .as_deref(),
        Some("rate")
    );
    let got = v
        .select_with_hints(&m, 0, 700_000, &hints("max_over_time"))
        .await
        .expect("max");
    assert_eq!(got[0].samples, vec![(300_000, 30.0), (600_000, 60.0)]);
    let got = v
        .select_with_hints(&m, 0, 700_000, &hints("avg_over_time"))
        .await
        .expect("avg");
    assert_eq!(got[0].samples, vec![(300_000, 10.0), (600_000, 40.0)]);
}

#[test]
fn resolution_window_from_options() {
    let h = SelectHints {
        step_ms: 1,
        ..Default::default()
    };
    let mut o = QueryOptions {
        max_source_resolution_ms: 300_000,
        ..Default::default()
    };
    assert_eq!(max_resolution_window(&o, &h), 300_000);
    o.auto_downsampling = true;
    o.step_ms = 60_000;
    assert_eq!(max_resolution_window(&o, &h), 12_000);
    o.step_ms = 0;
    assert_eq!(max_resolution_window(&o, &h), 0, "instant query: raw data");
}

#[test]
fn pruning_table() {
    let info = EndpointInfo {
        healthy: true,
        label_sets: vec![
            vec![l("cluster", "eu"), l("replica", "a")],
            vec![l("cluster", "us"), l("replica", "a")],
        ],
        min_time: 1_000,
        max_time: 2_000,
        ..Default::default()
    };
    let re = |n: &str, v: &str| {
        Matcher::new(
            MatchOp::Re(regex::Regex::new(&format!("^(?:{v})$")).expect("re")),
            n,
            v,
        )
    };
    let ne = |n: &str, v: &str| Matcher::new(MatchOp::NotEqual, n, v);
    let cases: Vec<(Vec<Matcher>, i64, i64, bool)> = vec![
        (vec![eq("__name__", "up")], 0, 5_000, true),
        (vec![eq("__name__", "up")], 0, 999, false),
        (vec![eq("__name__", "up")], 2_001, 3_000, false),
        (vec![eq("cluster", "eu")], 0, 5_000, true),
        (vec![eq("cluster", "ap")], 0, 5_000, false),
        (vec![re("cluster", "e.*")], 0, 5_000, true),
        (vec![re("cluster", "ap|sa")], 0, 5_000, false),
        (vec![ne("replica", "a")], 0, 5_000, false),
        (
            vec![eq("cluster", "eu"), eq("replica", "b")],
            0,
            5_000,
            false,
        ),
        (vec![eq("zone", "z1")], 0, 5_000, true),
    ];
    for (i, (ms, lo, hi, want)) in cases.into_iter().enumerate() {
        assert_eq!(store_matches(&info, &ms, lo, hi), want, "case {i}");
    }
    let open = EndpointInfo {
        min_time: i64::MIN,
        max_time: i64::MAX,
        ..Default::default()
    };
    assert!(store_matches(&open, &[eq("cluster", "x")], 0, 1));
}

#[test]
fn same_labels_from_two_stores_merge_once() {
    let labels = Labels::new([("__name__".to_string(), "m".to_string())]);
    let a = Series {
        labels: labels.clone(),
        samples: vec![(0, 1.0), (10, 2.0), (20, 3.0)],
        histograms: vec![],
    };
    let b = Series {
        labels: labels.clone(),
        samples: vec![(10, 9.0), (20, 9.0), (30, 4.0)],
        histograms: vec![],
    };
    let got = merge_same_labels(vec![a, b]);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].samples,
        vec![(0, 1.0), (10, 2.0), (20, 3.0), (30, 4.0)]
    );
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn background_health_checks_drop_and_restore_an_endpoint() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let addr = format!("127.0.0.1:{port}");
    let set = EndpointSet::new(EndpointSetConfig {
        endpoints: vec![addr.clone()],
        health_interval: Duration::from_millis(100),
        health_timeout: Duration::from_millis(500),
        ..Default::default()
    })
    .expect("config");
    set.start().await;
    let src = FanoutSource::new(set.clone(), FanoutConfig::default());
    assert!(!src.stores()[0].healthy);
    assert!(src.stores()[0].last_error.is_some());

    // The store comes up on that address: the next checks find it.
    let fake = Fake {
        external: vec![l("replica", "a")],
        series: vec![raw_series("up", &[(0, 1.0)])],
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(strata_storeapi::serve(
        Listen::Listener(listener),
        fake.clone(),
        fake,
        ServerOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    wait_for("endpoint healthy", || src.stores()[0].healthy).await;
    let st = &src.stores()[0];
    assert_eq!(st.last_error, None);
    assert!(st.last_check_ms > 0);
    assert_eq!((st.min_time, st.max_time), (0, 1_000_000));
    let v = src.view(&opts(true, true));
    let got = v
        .select(&[eq("__name__", "up")], 0, 10)
        .await
        .expect("select");
    assert_eq!(got.len(), 1);

    // It goes away: marked unhealthy and no longer called, but never silently missing: a
    // warning names it under partial response, an error without.
    let _ = stop.send(());
    let _ = server.await;
    wait_for("endpoint unhealthy", || !src.stores()[0].healthy).await;
    let v = src.view(&opts(true, true));
    let got = v
        .select(&[eq("__name__", "up")], 0, 10)
        .await
        .expect("select");
    assert!(got.is_empty());
    let w = v.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with(&format!("store {addr}: unhealthy: ")),
        "{w:?}"
    );
    let strict = src.view(&opts(true, false));
    let e = strict.select(&[eq("__name__", "up")], 0, 10).await;
    assert!(
        matches!(&e, Err(QueryableError::Storage(m)) if m.contains(&addr)),
        "{e:?}"
    );
    // A query outside the range it last advertised does not need it: no warning.
    let v = src.view(&opts(true, true));
    let got = v
        .select(&[eq("__name__", "up")], 2_000_000, 3_000_000)
        .await
        .expect("select");
    assert!(got.is_empty() && v.warnings().is_empty());
}

#[tokio::test]
async fn without_partial_response_the_first_failure_ends_the_request() {
    let broken = Fake {
        external: vec![l("replica", "b")],
        fail: Some(tonic::Code::Internal),
        ..Default::default()
    };
    let slow = Fake {
        external: vec![l("replica", "c")],
        delay: Duration::from_secs(30),
        ..Default::default()
    };
    let src = source(
        vec![serve(broken).await, serve(slow).await],
        &[],
        Duration::ZERO,
    );
    src.endpoints().refresh().await;
    let v = src.fanout_view(&opts(true, false));
    let started = std::time::Instant::now();
    let e = v
        .select(&[eq("__name__", "up")], 0, 10)
        .await
        .expect_err("broken store");
    assert!(e.to_string().contains("code = Internal"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited for the slow store: {:?}",
        started.elapsed()
    );
}

fn meta_part(entries: &[(&str, &str, &str, &str)]) -> pb::MetricMetadata {
    let mut m = pb::MetricMetadata::default();
    for (name, typ, help, unit) in entries {
        m.metadata
            .entry((*name).to_owned())
            .or_default()
            .metas
            .push(pb::Meta {
                r#type: (*typ).to_owned(),
                help: (*help).to_owned(),
                unit: (*unit).to_owned(),
            });
    }
    m
}

#[test]
fn metadata_merge_dedups_sorts_and_limits() {
    let a = meta_part(&[
        ("up_total", "counter", "Ups.", ""),
        ("b_bytes", "gauge", "Bytes.", "bytes"),
        ("b_bytes", "gauge", "Bytes.", "bytes"),
    ]);
    let b = meta_part(&[
        ("up_total", "counter", "Ups.", ""),
        ("up_total", "counter", "Ups, other help.", ""),
        ("c", "untyped", "", ""),
    ]);
    let t = |x: &str, y: &str, z: &str| (x.to_owned(), y.to_owned(), z.to_owned());
    let all = merge_metadata([a.clone(), b.clone()], None);
    assert_eq!(
        all.keys().map(String::as_str).collect::<Vec<_>>(),
        ["b_bytes", "c", "up_total"]
    );
    assert_eq!(all["b_bytes"], vec![t("gauge", "Bytes.", "bytes")]);
    assert_eq!(
        all["up_total"],
        vec![
            t("counter", "Ups, other help.", ""),
            t("counter", "Ups.", "")
        ]
    );
    assert_eq!(all["c"], vec![t("untyped", "", "")]);
    let two = merge_metadata([a.clone(), b.clone()], Some(2));
    assert_eq!(
        two.keys().map(String::as_str).collect::<Vec<_>>(),
        ["b_bytes", "c"]
    );
    assert!(merge_metadata([a, b], Some(0)).is_empty());
    assert!(merge_metadata(Vec::new(), None).is_empty());
}

#[tokio::test]
async fn request_replica_labels_and_store_selectors() {
    let samples_a: Vec<(i64, f64)> = (0..10).map(|i| (i * 10_000, i as f64)).collect();
    let samples_b: Vec<(i64, f64)> = (0..10).map(|i| (i * 10_000 + 3_000, i as f64)).collect();
    let fake = |replica: &str, samples: &[(i64, f64)]| Fake {
        external: vec![l("cluster", "eu"), l("rule_replica", replica)],
        series: vec![raw_series("up", samples)],
        names: vec!["__name__".into()],
        ..Default::default()
    };
    let addr_a = serve(fake("a", &samples_a)).await;
    let addr_b = serve(fake("b", &samples_b)).await;
    // The flags name `replica`, which these stores do not have.
    let src = source(
        vec![addr_a.clone(), addr_b.clone()],
        &["replica"],
        Duration::ZERO,
    );
    src.endpoints().refresh().await;
    let select = |o: QueryOptions| {
        let v = src.view(&o);
        async move {
            v.select(&[eq("__name__", "up")], 0, 200_000)
                .await
                .expect("select")
        }
    };
    assert_eq!(
        select(opts(true, true)).await.len(),
        2,
        "flag labels: no dedup"
    );
    let got = select(QueryOptions {
        replica_labels: vec!["rule_replica".into()],
        ..opts(true, true)
    })
    .await;
    assert_eq!(got.len(), 1, "replicaLabels[] de-duplicates: {got:?}");
    assert_eq!(got[0].labels.get("rule_replica"), None);

    // storeMatch[]: by address, by external label, or none matching.
    let only = |sel: Vec<Vec<Matcher>>| QueryOptions {
        store_matchers: sel,
        ..opts(false, true)
    };
    let got = select(only(vec![vec![eq("__address__", &addr_b)]])).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].labels.get("rule_replica"), Some("b"));
    assert_eq!(select(only(vec![vec![eq("cluster", "eu")]])).await.len(), 2);
    assert_eq!(select(only(vec![vec![eq("cluster", "us")]])).await.len(), 0);
    let either = vec![
        vec![eq("__address__", &addr_a)],
        vec![eq("__address__", &addr_b)],
    ];
    assert_eq!(select(only(either)).await.len(), 2);
}
