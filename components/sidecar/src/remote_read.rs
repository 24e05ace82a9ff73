//! Prometheus remote read with streamed XOR chunks: the request encoding, an incremental frame decoder
//! for the `application/x-streamed-protobuf` response body, and a stream of whole series.
//!
//! A frame is `uvarint(len) | crc32c(data) as 4 big-endian bytes | data`, where `data` is a protobuf
//! `ChunkedReadResponse`. Prometheus may split one series over consecutive frames (same labels, later
//! chunks); [`SeriesStream`] joins them back.

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use prost::Message;

use crate::pb::{ChunkedReadResponse, ChunkedSeries};
use crate::{Error, Result};

/// Content type of a streamed remote-read response.
pub const STREAMED_CONTENT_TYPE: &str =
    "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse";

/// The largest frame accepted unless configured otherwise (Prometheus cuts frames near 1 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 50 * 1024 * 1024;

/// Decodes frames from byte slices as they arrive, holding at most one partial frame.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame_bytes: usize,
}

impl FrameDecoder {
    /// A decoder that rejects frames longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_frame_bytes,
        }
    }

    /// Appends bytes received from the body.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame's payload, `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>> {
        let Some((len, header)) = read_uvarint(&self.buf)? else {
            return Ok(None);
        };
        if len > self.max_frame_bytes as u64 {
            return Err(Error::FrameTooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        // Bounded by max_frame_bytes above, so the cast cannot truncate on 64-bit or 32-bit targets.
        let len = len as usize;
        let total = header + 4 + len;
        if self.buf.len() < total {
            // Reserve what the frame needs (bounded), so pushes do not reallocate repeatedly.
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(header);
        let expected = self.buf.get_u32();
        let data = self.buf.split_to(len).freeze();
        let actual = crc32c::crc32c(&data);
        if actual != expected {
            return Err(Error::FrameChecksum { expected, actual });
        }
        Ok(Some(data))
    }

    /// Fails when the body ended in the middle of a frame.
    pub fn finish(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::TruncatedFrame {
                buffered: self.buf.len(),
            })
        }
    }
}

/// Reads an unsigned LEB128 varint from the front of `buf`: `(value, bytes used)` or `None` if incomplete.
fn read_uvarint(buf: &[u8]) -> Result<Option<(u64, usize)>> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate() {
        if i >= 10 || (i == 9 && b > 1) {
            return Err(Error::FrameLength);
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Ok(None)
}

/// Encodes one frame (used by tests and fakes that play Prometheus).
pub fn encode_frame(data: &[u8], out: &mut Vec<u8>) {
    let mut len = data.len() as u64;
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(&crc32c::crc32c(data).to_be_bytes());
    out.extend_from_slice(data);
}

/// Whole series decoded from a streamed remote-read body, frames of one series joined.
pub struct SeriesStream {
    body: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>,
    decoder: FrameDecoder,
    /// Series of the current frame not yet handed out, in order.
    queue: std::collections::VecDeque<ChunkedSeries>,
    /// The series being assembled (its next frame may continue it).
    pending: Option<ChunkedSeries>,
    body_done: bool,
}

impl std::fmt::Debug for SeriesStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesStream")
            .field("buffered", &self.decoder.buffered())
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl SeriesStream {
    /// Decodes `body` (chunks of the HTTP response) into series.
    pub fn new(
        body: impl Stream<Item = Result<Bytes>> + Send + 'static,
        max_frame_bytes: usize,
    ) -> Self {
        Self {
            body: Box::pin(body),
            decoder: FrameDecoder::new(max_frame_bytes),
            queue: Default::default(),
            pending: None,
            body_done: false,
        }
    }

    /// Fills `queue` with the next frame's series; false at the end of the body.
    async fn fill(&mut self) -> Result<bool> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                let resp = ChunkedReadResponse::decode(frame).map_err(Error::DecodeFrame)?;
                self.queue.extend(resp.chunked_series);
                return Ok(true);
            }
            if self.body_done {
                self.decoder.finish()?;
                return Ok(false);
            }
            match self.body.next().await {
                Some(chunk) => self.decoder.push(&chunk?),
                None => self.body_done = true,
            }
        }
    }

    /// The next whole series, `None` at the end.
    pub async fn next_series(&mut self) -> Result<Option<ChunkedSeries>> {
        loop {
            while let Some(series) = self.queue.pop_front() {
                match &mut self.pending {
                    Some(p) if p.labels == series.labels => p.chunks.extend(series.chunks),
                    _ => {
                        if let Some(done) = self.pending.replace(series) {
                            return Ok(Some(done));
                        }
                    }
                }
            }
            if !self.fill().await? {
                return Ok(self.pending.take());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{Chunk, Label};

    fn series(name: &str, chunks: &[i64]) -> ChunkedSeries {
        ChunkedSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: name.into(),
            }],
            chunks: chunks
                .iter()
                .map(|&t| Chunk {
                    min_time_ms: t,
                    max_time_ms: t + 1,
                    r#type: 1,
                    data: vec![1, 2, 3],
                })
                .collect(),
        }
    }

    fn body(frames: &[Vec<ChunkedSeries>]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            let resp = ChunkedReadResponse {
                chunked_series: f.clone(),
                query_index: 0,
            };
            encode_frame(&resp.encode_to_vec(), &mut out);
        }
        out
    }

    /// Feeds `bytes` in pieces of `piece` bytes.
    fn stream_of(bytes: Vec<u8>, piece: usize) -> SeriesStream {
        let chunks: Vec<Result<Bytes>> = bytes
            .chunks(piece)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        SeriesStream::new(futures::stream::iter(chunks), 1 << 20)
    }

    async fn collect(mut s: SeriesStream) -> Result<Vec<ChunkedSeries>> {
        let mut out = Vec::new();
        while let Some(x) = s.next_series().await? {
            out.push(x);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn joins_a_series_split_over_frames_at_any_byte_split() {
        let frames = vec![
            vec![series("a", &[1])],
            vec![series("a", &[2]), series("b", &[3])],
            vec![series("b", &[4])],
            vec![series("c", &[5])],
        ];
        for piece in [1, 3, 7, 1000] {
            let got = collect(stream_of(body(&frames), piece))
                .await
                .expect("decode");
            assert_eq!(
                got,
                vec![
                    series("a", &[1, 2]),
                    series("b", &[3, 4]),
                    series("c", &[5])
                ],
                "piece {piece}"
            );
        }
    }

    #[tokio::test]
    async fn empty_body_is_no_series() {
        assert!(
            collect(stream_of(Vec::new(), 1))
                .await
                .expect("ok")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn checksum_mismatch_is_an_error() {
        let mut bytes = body(&[vec![series("a", &[1])]]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let err = collect(stream_of(bytes, 5)).await.expect_err("corrupt");
        assert!(matches!(err, Error::FrameChecksum { .. }), "{err}");
    }

    #[tokio::test]
    async fn truncated_body_is_an_error() {
        let mut bytes = body(&[vec![series("a", &[1])]]);
        bytes.pop();
        let err = collect(stream_of(bytes, 4)).await.expect_err("truncated");
        assert!(matches!(err, Error::TruncatedFrame { .. }), "{err}");
    }

    #[test]
    fn oversized_frame_is_rejected_before_buffering_it() {
        let mut d = FrameDecoder::new(100);
        // A header announcing a 1 GiB frame.
        let mut head = Vec::new();
        let mut len: u64 = 1 << 30;
        while len >= 0x80 {
            head.push((len as u8) | 0x80);
            len >>= 7;
        }
        head.push(len as u8);
        d.push(&head);
        let err = d.next_frame().expect_err("too large");
        assert!(matches!(err, Error::FrameTooLarge { len, max: 100 } if len == 1 << 30));
        assert!(d.buffered() < 16);
    }

    #[test]
    fn overlong_varint_is_an_error() {
        let mut d = FrameDecoder::new(100);
        d.push(&[0xff; 11]);
        assert!(matches!(d.next_frame(), Err(Error::FrameLength)));
    }

    #[tokio::test]
    async fn garbage_protobuf_is_an_error() {
        let mut bytes = Vec::new();
        encode_frame(&[0xff, 0xff, 0xff], &mut bytes);
        let err = collect(stream_of(bytes, 2)).await.expect_err("garbage");
        assert!(matches!(err, Error::DecodeFrame(_)), "{err}");
    }
}
