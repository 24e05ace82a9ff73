//! Snappy as a Thanos client sends it (`grpc-encoding: snappy`, framing-format payloads with the
//! compressed flag), against the real server.

use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use strata_storeapi::pb::info::info_server::Info;
use strata_storeapi::pb::info::{InfoRequest, InfoResponse};
use strata_storeapi::pb::thanos::store_client::StoreClient;
use strata_storeapi::pb::thanos::store_server::Store;
use strata_storeapi::pb::thanos::{
    LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse, SeriesRequest,
};
use strata_storeapi::respond::SeriesStream;
use strata_storeapi::{Listen, ServerOptions, serve};
use tonic::body::Body;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

/// Wraps a channel: re-frames every request message compressed with snappy (via the `snap` crate
/// directly) and sets `grpc-encoding: snappy`, as grpc-go with Thanos's compressor does.
#[derive(Clone)]
struct SnappyClient(Channel);

fn compress_frames(mut plain: Bytes) -> Bytes {
    use std::io::Write;
    let mut out = BytesMut::new();
    while plain.len() >= 5 {
        let len = u32::from_be_bytes([plain[1], plain[2], plain[3], plain[4]]) as usize;
        plain.advance(5);
        let msg = plain.split_to(len);
        let mut enc = snap::write::FrameEncoder::new(Vec::new());
        enc.write_all(&msg).expect("compress");
        let z = enc.into_inner().expect("flush");
        out.put_u8(1);
        out.put_u32(z.len() as u32);
        out.put_slice(&z);
    }
    out.freeze()
}

impl tower::Service<http::Request<Body>> for SnappyClient {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = <Channel as tower::Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        parts
            .headers
            .insert("grpc-encoding", http::HeaderValue::from_static("snappy"));
        parts.headers.insert(
            "grpc-accept-encoding",
            http::HeaderValue::from_static("snappy,gzip"),
        );
        let frames = futures::stream::once(async move {
            let plain = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>(Frame::data(compress_frames(plain)))
        });
        let body = Body::new(StreamBody::new(Box::pin(frames)));
        self.0.call(http::Request::from_parts(parts, body))
    }
}

#[derive(Clone)]
struct EchoStore;

#[tonic::async_trait]
impl Store for EchoStore {
    type SeriesStream = SeriesStream;
    async fn series(&self, _: Request<SeriesRequest>) -> Result<Response<SeriesStream>, Status> {
        Err(Status::unimplemented("not used"))
    }
    async fn label_names(
        &self,
        r: Request<LabelNamesRequest>,
    ) -> Result<Response<LabelNamesResponse>, Status> {
        // echoes the request's matchers' values, proving the decompressed message arrived intact
        Ok(Response::new(LabelNamesResponse {
            names: r
                .into_inner()
                .matchers
                .into_iter()
                .map(|m| m.value)
                .collect(),
            ..Default::default()
        }))
    }
    async fn label_values(
        &self,
        _: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        Err(Status::unimplemented("not used"))
    }
}

#[derive(Clone)]
struct NoInfo;

#[tonic::async_trait]
impl Info for NoInfo {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(InfoResponse::default()))
    }
}

async fn call(snappy_enabled: bool) -> Result<Vec<String>, Status> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let opts = ServerOptions {
        snappy: snappy_enabled,
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        Listen::Listener(listener),
        EchoStore,
        NoInfo,
        opts,
        async {
            let _ = rx.await;
        },
    ));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    // Like grpc-go in a Thanos binary (which registers gzip too), the client accepts gzip answers.
    let mut client = StoreClient::new(SnappyClient(channel))
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let big = "x".repeat(100_000);
    let req = LabelNamesRequest {
        matchers: vec![
            strata_storeapi::pb::thanos::LabelMatcher {
                name: "a".into(),
                value: "hello".into(),
                r#type: 0,
            },
            strata_storeapi::pb::thanos::LabelMatcher {
                name: "b".into(),
                value: big,
                r#type: 0,
            },
        ],
        ..Default::default()
    };
    let out = client.label_names(req).await.map(|r| r.into_inner().names);
    let _ = tx.send(());
    task.await.expect("join").expect("server");
    out
}

#[tokio::test]
async fn snappy_requests_are_decoded() {
    let names = call(true).await.expect("snappy request served");
    assert_eq!(names.len(), 2);
    assert_eq!(names[0], "hello");
    assert_eq!(names[1].len(), 100_000);
}

#[tokio::test]
async fn without_the_layer_tonic_refuses_snappy() {
    let err = call(false)
        .await
        .expect_err("tonic alone cannot decode snappy");
    assert_eq!(err.code(), Code::Unimplemented);
}
