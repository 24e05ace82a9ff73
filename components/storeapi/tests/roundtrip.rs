//! In-process tonic server + client round trips of the StoreAPI and Info services.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use strata_storeapi::extlabels::{ExternalMatch, match_external, with_external_labels};
use strata_storeapi::pb::info::info_server::Info;
use strata_storeapi::pb::info::{InfoRequest, InfoResponse, StoreInfo};
use strata_storeapi::pb::thanos::store_server::Store;
use strata_storeapi::pb::thanos::{
    AggrChunk, Chunk, Label, LabelMatcher, LabelNamesRequest, LabelNamesResponse,
    LabelValuesRequest, LabelValuesResponse, Series, SeriesRequest, ZLabelSet, chunk,
    series_response,
};
use strata_storeapi::respond::{SeriesStream, series_responses, spawn_bounded};
use strata_storeapi::{
    ClientOptions, ClientTlsFiles, Clients, Listen, ServerOptions, ServerTlsFiles, connect, serve,
    validate,
};
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};

fn label(n: &str, v: &str) -> Label {
    Label {
        name: n.into(),
        value: v.into(),
    }
}

/// A store over a fixed, sorted list of series with one external label `cluster="eu1"`.
#[derive(Clone)]
struct FakeStore {
    series: Arc<Vec<Series>>,
    external: Vec<Label>,
}

impl FakeStore {
    fn new(n: usize) -> Self {
        let mut series: Vec<Series> = (0..n)
            .map(|i| Series {
                labels: vec![
                    label("__name__", "up"),
                    label("instance", &format!("host-{i:06}")),
                    label("job", if i % 2 == 0 { "even" } else { "odd" }),
                ],
                chunks: vec![AggrChunk {
                    min_time: i as i64,
                    max_time: i as i64 + 10,
                    raw: Some(Chunk {
                        r#type: chunk::Encoding::Xor as i32,
                        data: vec![0, 1, 2, (i % 256) as u8].into(),
                        hash: 0,
                    }),
                    ..Default::default()
                }],
            })
            .collect();
        series.sort_by(|a, b| strata_storeapi::extlabels::compare_labels(&a.labels, &b.labels));
        Self {
            series: Arc::new(series),
            external: vec![label("cluster", "eu1")],
        }
    }
}

#[tonic::async_trait]
impl Store for FakeStore {
    type SeriesStream = SeriesStream;

    async fn series(
        &self,
        request: Request<SeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        let req = validate::series(request.get_ref())?;
        let opts = req.response_options();
        let remaining = match match_external(&self.external, &req.matchers) {
            ExternalMatch::NoMatch => Vec::new(),
            ExternalMatch::Remaining(r) => r,
        };
        let none = matches!(
            match_external(&self.external, &req.matchers),
            ExternalMatch::NoMatch
        );
        let all = self.series.clone();
        let ext = self.external.clone();
        let src = futures::stream::iter(0..if none { 0 } else { all.len() }).filter_map(move |i| {
            let s = &all[i];
            let ok = remaining.iter().all(|m| {
                let v = s
                    .labels
                    .iter()
                    .find(|l| l.name == m.name)
                    .map_or("", |l| l.value.as_str());
                m.matches(v)
            });
            let out = ok.then(|| {
                Ok(Series {
                    labels: with_external_labels(s.labels.clone(), &ext),
                    chunks: s.chunks.clone(),
                })
            });
            futures::future::ready(out)
        });
        Ok(Response::new(spawn_bounded(
            series_responses(src, opts),
            16,
        )))
    }

    async fn label_names(
        &self,
        request: Request<LabelNamesRequest>,
    ) -> Result<Response<LabelNamesResponse>, Status> {
        validate::label_names(request.get_ref())?;
        Ok(Response::new(LabelNamesResponse {
            names: vec![
                "__name__".into(),
                "cluster".into(),
                "instance".into(),
                "job".into(),
            ],
            ..Default::default()
        }))
    }

    async fn label_values(
        &self,
        request: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        let req = validate::label_values(request.get_ref())?;
        let mut values: Vec<String> = self
            .series
            .iter()
            .filter_map(|s| s.labels.iter().find(|l| l.name == req.label))
            .map(|l| l.value.clone())
            .collect();
        values.sort();
        values.dedup();
        Ok(Response::new(LabelValuesResponse {
            values,
            ..Default::default()
        }))
    }
}

#[derive(Clone)]
struct FakeInfo;

#[tonic::async_trait]
impl Info for FakeInfo {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(InfoResponse {
            label_sets: vec![ZLabelSet {
                labels: vec![label("cluster", "eu1")],
            }],
            component_type: "store".into(),
            store: Some(StoreInfo {
                min_time: 0,
                max_time: 1000,
                supports_without_replica_labels: true,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<strata_storeapi::Result<()>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.expect("join").expect("server ends cleanly");
    }
}

async fn start(n: usize, opts: ServerOptions) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        Listen::Listener(listener),
        FakeStore::new(n),
        FakeInfo,
        opts,
        async move {
            let _ = rx.await;
        },
    ));
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

fn matcher(ty: i32, n: &str, v: &str) -> LabelMatcher {
    LabelMatcher {
        r#type: ty,
        name: n.into(),
        value: v.into(),
    }
}

fn req(ms: Vec<LabelMatcher>) -> SeriesRequest {
    SeriesRequest {
        min_time: 0,
        max_time: 1_000_000,
        matchers: ms,
        ..Default::default()
    }
}

/// Collects frames: (series in order, number of Series frames, number of batch frames).
async fn collect(c: &mut Clients, r: SeriesRequest) -> Result<(Vec<Series>, usize, usize), Status> {
    let mut stream = c.store.series(r).await?.into_inner();
    let (mut out, mut singles, mut batches) = (Vec::new(), 0, 0);
    while let Some(frame) = stream.next().await {
        match frame?.result {
            Some(series_response::Result::Series(s)) => {
                singles += 1;
                out.push(s);
            }
            Some(series_response::Result::Batch(b)) => {
                batches += 1;
                out.extend(b.series);
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    Ok((out, singles, batches))
}

#[tokio::test]
async fn series_stream_many_batching_limit_skip_chunks() {
    let srv = start(5000, ServerOptions::default()).await;
    let mut c = connect(&srv.addr.to_string(), &ClientOptions::default())
        .await
        .expect("connect");

    // many series, one frame each, sorted, external label attached
    let (all, singles, batches) = collect(&mut c, req(vec![matcher(0, "__name__", "up")]))
        .await
        .expect("series");
    assert_eq!((all.len(), singles, batches), (5000, 5000, 0));
    assert!(all.windows(2).all(|w| {
        strata_storeapi::extlabels::compare_labels(&w[0].labels, &w[1].labels).is_lt()
    }));
    assert_eq!(all[0].labels[1], label("cluster", "eu1"));
    assert_eq!(all[0].chunks.len(), 1);

    // batching
    let mut r = req(vec![matcher(0, "job", "odd")]);
    r.response_batch_size = 300;
    let (odd, singles, batches) = collect(&mut c, r.clone()).await.expect("series");
    assert_eq!((odd.len(), singles, batches), (2500, 0, 9));

    // limit + batching
    r.limit = 1001;
    let (lim, _, batches) = collect(&mut c, r.clone()).await.expect("series");
    assert_eq!((lim.len(), batches), (1001, 4));
    assert_eq!(lim[..], odd[..1001]);

    // skip_chunks passes through
    r.skip_chunks = true;
    r.limit = 0;
    let (skipped, _, _) = collect(&mut c, r).await.expect("series");
    assert_eq!(skipped.len(), 2500);
    assert!(skipped.iter().all(|s| s.chunks.is_empty()));

    // external label matching: a failing matcher on cluster means no series at all
    let (none, _, _) = collect(&mut c, req(vec![matcher(0, "cluster", "us1")]))
        .await
        .expect("series");
    assert!(none.is_empty());
    let (regex, _, _) = collect(
        &mut c,
        req(vec![
            matcher(2, "cluster", "eu.*"),
            matcher(2, "instance", "host-00000[0-4]"),
        ]),
    )
    .await
    .expect("series");
    assert_eq!(regex.len(), 5);

    srv.stop().await;
}

#[tokio::test]
async fn invalid_arguments_over_the_wire() {
    let srv = start(10, ServerOptions::default()).await;
    let mut c = connect(&srv.addr.to_string(), &ClientOptions::default())
        .await
        .expect("connect");
    let cases = [
        (
            req(vec![matcher(2, "job", "(")]),
            "bad regex \"(\" for label \"job\"",
        ),
        (
            req(vec![matcher(9, "job", "x")]),
            "unknown matcher type 9 for label \"job\"",
        ),
        (
            req(vec![matcher(0, "", "x")]),
            "matcher with empty label name",
        ),
        (
            SeriesRequest {
                min_time: 5,
                max_time: 1,
                ..Default::default()
            },
            "inverted time range: min time 5 is after max time 1",
        ),
    ];
    for (r, msg) in cases {
        let err = collect(&mut c, r).await.expect_err("invalid");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().starts_with(msg), "{} vs {msg}", err.message());
    }
    let err = c
        .store
        .label_values(LabelValuesRequest::default())
        .await
        .expect_err("empty label");
    assert_eq!(err.code(), Code::InvalidArgument);
    let names = c
        .store
        .label_names(LabelNamesRequest::default())
        .await
        .expect("names")
        .into_inner();
    assert_eq!(names.names.len(), 4);
    let values = c
        .store
        .label_values(LabelValuesRequest {
            label: "job".into(),
            ..Default::default()
        })
        .await
        .expect("values")
        .into_inner();
    assert_eq!(values.values, ["even", "odd"]);
    srv.stop().await;
}

#[tokio::test]
async fn info_and_exact_paths() {
    let srv = start(1, ServerOptions::default()).await;
    let mut c = connect(&srv.addr.to_string(), &ClientOptions::default())
        .await
        .expect("connect");
    let info = c
        .info
        .info(InfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.component_type, "store");
    assert_eq!(info.store.as_ref().map(|s| s.max_time), Some(1000));

    // The exact method paths Thanos uses are served; the old `thanos.Store/Info` is not.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", srv.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<InfoRequest, InfoResponse>::default();
    let ok = grpc
        .unary(
            Request::new(InfoRequest {}),
            http::uri::PathAndQuery::from_static("/thanos.info.Info/Info"),
            codec,
        )
        .await
        .expect("thanos.info.Info/Info");
    assert_eq!(ok.into_inner().component_type, "store");
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<InfoRequest, InfoResponse>::default();
    let gone = grpc
        .unary(
            Request::new(InfoRequest {}),
            http::uri::PathAndQuery::from_static("/thanos.Store/Info"),
            codec,
        )
        .await
        .expect_err("Store.Info is not served");
    assert_eq!(gone.code(), Code::Unimplemented);
    srv.stop().await;
}

#[tokio::test]
async fn gzip_round_trip() {
    let srv = start(2000, ServerOptions::default()).await;
    let opts = ClientOptions {
        gzip: true,
        ..Default::default()
    };
    let mut c = connect(&srv.addr.to_string(), &opts)
        .await
        .expect("connect");
    let resp = c
        .store
        .series(req(vec![matcher(0, "__name__", "up")]))
        .await
        .expect("series");
    assert_eq!(
        resp.metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip"),
        "server answers in gzip"
    );
    let n = resp.into_inner().count().await;
    assert_eq!(n, 2000);

    // A server without gzip refuses gzip requests.
    let plain = start(
        1,
        ServerOptions {
            gzip: false,
            ..Default::default()
        },
    )
    .await;
    let mut c = connect(&plain.addr.to_string(), &opts)
        .await
        .expect("connect");
    let err = c.info.info(InfoRequest {}).await.expect_err("no gzip");
    assert_eq!(err.code(), Code::Unimplemented);
    srv.stop().await;
    plain.stop().await;
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for `localhost` and a client certificate, as PEM files.
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem);
        write("ca.pem", ca.pem()).expect("write");
        for (name, sans) in [
            ("server", vec!["localhost".to_string()]),
            ("client", vec!["client".to_string()]),
        ] {
            let key = KeyPair::generate().expect("key");
            let cert = CertificateParams::new(sans)
                .expect("params")
                .signed_by(&key, &ca)
                .expect("sign");
            write(&format!("{name}.pem"), cert.pem()).expect("write");
            write(&format!("{name}-key.pem"), key.serialize_pem()).expect("write");
        }
        // a second, unrelated CA
        let mut other = CertificateParams::new(Vec::<String>::new()).expect("params");
        other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let other =
            CertifiedIssuer::self_signed(other, KeyPair::generate().expect("key")).expect("ca");
        write("other-ca.pem", other.pem()).expect("write");
        Self { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

fn server_tls(p: &Pki, mtls: bool) -> ServerTlsFiles {
    ServerTlsFiles {
        cert: p.path("server.pem"),
        key: p.path("server-key.pem"),
        client_ca: mtls.then(|| p.path("ca.pem")),
    }
}

fn client_tls(p: &Pki, ca: &str, with_cert: bool) -> ClientOptions {
    ClientOptions {
        tls: Some(ClientTlsFiles {
            ca: Some(p.path(ca)),
            cert: with_cert.then(|| p.path("client.pem")),
            key: with_cert.then(|| p.path("client-key.pem")),
            server_name: Some("localhost".into()),
        }),
        ..Default::default()
    }
}

async fn info_over(addr: SocketAddr, opts: &ClientOptions) -> Result<InfoResponse, String> {
    let mut c = connect(&addr.to_string(), opts)
        .await
        .map_err(|e| format!("{e:#}"))?;
    c.info
        .info(InfoRequest {})
        .await
        .map(Response::into_inner)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn tls_and_mtls() {
    let pki = Pki::new();
    // server TLS only
    let srv = start(
        1,
        ServerOptions {
            tls: Some(server_tls(&pki, false)),
            ..Default::default()
        },
    )
    .await;
    assert!(
        info_over(srv.addr, &client_tls(&pki, "ca.pem", false))
            .await
            .is_ok()
    );
    assert!(
        info_over(srv.addr, &client_tls(&pki, "other-ca.pem", false))
            .await
            .is_err(),
        "a client trusting another CA must fail"
    );
    assert!(
        info_over(srv.addr, &ClientOptions::default())
            .await
            .is_err(),
        "plaintext to a TLS server must fail"
    );
    srv.stop().await;

    // mTLS
    let srv = start(
        1,
        ServerOptions {
            tls: Some(server_tls(&pki, true)),
            ..Default::default()
        },
    )
    .await;
    let ok = info_over(srv.addr, &client_tls(&pki, "ca.pem", true))
        .await
        .expect("mTLS with a client certificate");
    assert_eq!(ok.component_type, "store");
    assert!(
        info_over(srv.addr, &client_tls(&pki, "ca.pem", false))
            .await
            .is_err(),
        "mTLS without a client certificate must fail"
    );
    srv.stop().await;
}

#[tokio::test]
async fn missing_tls_file_is_a_named_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("absent.pem");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let err = serve(
        Listen::Listener(listener),
        FakeStore::new(1),
        FakeInfo,
        ServerOptions {
            tls: Some(ServerTlsFiles {
                cert: missing.clone(),
                key: missing.clone(),
                client_ca: None,
            }),
            ..Default::default()
        },
        std::future::pending(),
    )
    .await
    .expect_err("missing file");
    assert!(err.to_string().contains(&missing.display().to_string()));
}
