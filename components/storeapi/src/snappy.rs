//! gRPC message-level `snappy` compression as Thanos offers it (`--grpc-compression=snappy`): the
//! client sets `grpc-encoding: snappy` and sends each message with the compressed flag set, its
//! payload in the snappy *framing* format. tonic has no pluggable compression, so this tower layer
//! decompresses such request messages into plain ones (flag 0) and removes the header before tonic
//! sees the request. Responses are then sent uncompressed or gzip, which gRPC clients accept.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::Stream;
use http::{HeaderValue, Request};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tonic::body::Body;
use tower::{Layer, Service};

/// The `grpc-encoding` name Thanos registers.
pub const SNAPPY: &str = "snappy";

/// Largest decompressed request message, bytes.
const MAX_MESSAGE: usize = 64 << 20;

/// Errors while decoding a snappy request body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnappyError {
    /// A message is larger than allowed.
    #[error("grpc message of {len} bytes exceeds the {max} byte limit")]
    TooLarge {
        /// The announced or decompressed length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload is not valid snappy framing format.
    #[error("decompress snappy message")]
    Decode(#[source] std::io::Error),
    /// The body ended inside a message.
    #[error("request body ended inside a grpc message")]
    Truncated,
    /// Reading the body failed.
    #[error("read request body")]
    Body(#[source] tonic::Status),
}

/// Decompresses one snappy-framed payload, at most `max` bytes out.
pub fn decompress(payload: &[u8], max: usize) -> Result<Vec<u8>, SnappyError> {
    use std::io::Read;
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    snap::read::FrameDecoder::new(payload)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(SnappyError::Decode)?;
    if out.len() > max {
        return Err(SnappyError::TooLarge {
            len: out.len(),
            max,
        });
    }
    Ok(out)
}

/// Compresses one payload in the snappy framing format (what a Thanos client sends).
pub fn compress(payload: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = snap::write::FrameEncoder::new(Vec::new());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(payload);
    enc.into_inner().unwrap_or_default()
}

/// Splits a gRPC body into messages, passing plain ones and decompressing snappy ones.
struct Decoder {
    buf: BytesMut,
    max: usize,
}

impl Decoder {
    /// The next complete message re-framed uncompressed, if the buffer holds one.
    fn next_message(&mut self) -> Result<Option<Bytes>, SnappyError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flag = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.max {
            return Err(SnappyError::TooLarge { len, max: self.max });
        }
        if self.buf.len() < 5 + len {
            self.buf.reserve(5 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(5);
        let payload = self.buf.split_to(len);
        let plain = if flag & 1 == 1 {
            decompress(&payload, self.max)?
        } else {
            payload.to_vec()
        };
        let mut out = BytesMut::with_capacity(5 + plain.len());
        out.put_u8(0);
        out.put_u32(
            u32::try_from(plain.len()).map_err(|_| SnappyError::TooLarge {
                len: plain.len(),
                max: self.max,
            })?,
        );
        out.put_slice(&plain);
        Ok(Some(out.freeze()))
    }
}

fn decode_body(body: Body, max: usize) -> Body {
    let state = (
        body,
        Decoder {
            buf: BytesMut::new(),
            max,
        },
        false,
    );
    let stream = futures::stream::unfold(state, |(mut body, mut dec, mut done)| async move {
        loop {
            match dec.next_message() {
                Ok(Some(m)) => return Some((Ok(Frame::data(m)), (body, dec, done))),
                Ok(None) => {}
                Err(e) => return Some((Err(e), (body, dec, true))),
            }
            if done {
                if dec.buf.is_empty() {
                    return None;
                }
                dec.buf.clear();
                return Some((Err(SnappyError::Truncated), (body, dec, true)));
            }
            match body.frame().await {
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => dec.buf.extend_from_slice(&d),
                    Err(f) => {
                        return Some((Ok(f.map_data(|_: Bytes| Bytes::new())), (body, dec, done)));
                    }
                },
                Some(Err(e)) => return Some((Err(SnappyError::Body(e)), (body, dec, true))),
                None => done = true,
            }
        }
    });
    let stream: Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, SnappyError>> + Send>> =
        Box::pin(stream);
    Body::new(StreamBody::new(stream))
}

/// The tower layer (see the module doc); disabled, it passes requests through untouched.
#[derive(Debug, Clone, Copy)]
pub struct SnappyLayer {
    enabled: bool,
    max: usize,
}

impl SnappyLayer {
    /// A layer that decodes snappy requests when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            max: MAX_MESSAGE,
        }
    }
}

impl<S> Layer<S> for SnappyLayer {
    type Service = SnappyService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SnappyService {
            inner,
            enabled: self.enabled,
            max: self.max,
        }
    }
}

/// The service made by [`SnappyLayer`].
#[derive(Debug, Clone)]
pub struct SnappyService<S> {
    inner: S,
    enabled: bool,
    max: usize,
}

impl<S> Service<Request<Body>> for SnappyService<S>
where
    S: Service<Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let is_snappy = self.enabled
            && req
                .headers()
                .get("grpc-encoding")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(SNAPPY.as_bytes()));
        if !is_snappy {
            return self.inner.call(req);
        }
        let (mut parts, body) = req.into_parts();
        parts.headers.remove("grpc-encoding");
        // Responses are not snappy; say what we can send back instead of what the client listed.
        if let Some(v) = parts.headers.get("grpc-accept-encoding").cloned()
            && let Ok(s) = v.to_str()
        {
            let kept: Vec<&str> = s
                .split(',')
                .map(str::trim)
                .filter(|e| !e.eq_ignore_ascii_case(SNAPPY))
                .collect();
            if let Ok(v) = HeaderValue::from_str(&kept.join(",")) {
                parts.headers.insert("grpc-accept-encoding", v);
            }
        }
        tracing::trace!("decoding snappy-compressed request");
        self.inner
            .call(Request::from_parts(parts, decode_body(body, self.max)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn decode_all(chunks: Vec<Vec<u8>>, max: usize) -> Result<Vec<u8>, String> {
        let stream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(c)))),
        );
        let body = decode_body(Body::new(StreamBody::new(stream)), max);
        futures::executor::block_on(async {
            body.collect()
                .await
                .map(|c| c.to_bytes().to_vec())
                .map_err(|e| e.to_string())
        })
    }

    #[test]
    fn decodes_split_snappy_frames() {
        let msg = b"hello hello hello hello snappy".repeat(50);
        let compressed = compress(&msg);
        // the framing format starts with the stream identifier chunk "sNaPpY"
        assert_eq!(&compressed[..10], b"\xff\x06\x00\x00sNaPpY");
        let mut body = frame(1, &compressed);
        body.extend(frame(0, b"plain"));
        // split at awkward places
        let chunks = vec![
            body[..3].to_vec(),
            body[3..40].to_vec(),
            body[40..].to_vec(),
        ];
        let out = decode_all(chunks, 1 << 20).expect("decodes");
        let mut want = frame(0, &msg);
        want.extend(frame(0, b"plain"));
        assert_eq!(out, want);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(decode_all(vec![frame(1, b"not snappy")], 1 << 20).is_err());
        assert!(decode_all(vec![frame(0, b"abc")[..6].to_vec()], 1 << 20).is_err());
        let big = compress(&vec![0u8; 4096]);
        let e = decode_all(vec![frame(1, &big)], 1024).expect_err("too large");
        assert!(e.contains("exceeds"), "{e}");
        // an announced length over the limit is refused before buffering it
        let mut huge = vec![0u8];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_all(vec![huge], 1024).is_err());
    }
}
