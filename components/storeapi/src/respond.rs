//! Turning a stream of series into `SeriesResponse` frames: `skip_chunks`, `limit`, batching into
//! `SeriesBatch`, and a bounded channel between the producer and the gRPC stream (back-pressure).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;

use crate::pb::thanos::{Series, SeriesBatch, SeriesResponse, series_response};

/// The boxed response stream a `Store::Series` implementation returns.
pub type SeriesStream =
    Pin<Box<dyn Stream<Item = Result<SeriesResponse, Status>> + Send + 'static>>;

/// Largest batch we preallocate room for, whatever the client asks.
const MAX_PREALLOC: usize = 1024;

/// Largest batch we build, whatever the client asks: a batch is held in memory and sent as one
/// message. Smaller batches than asked are valid for Thanos queriers.
pub const MAX_BATCH: usize = 10_000;

/// How to frame a series stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseOptions {
    /// Series per `SeriesBatch` frame (at most [`MAX_BATCH`]); 0 sends single `Series` frames.
    pub batch_size: usize,
    /// At most this many series; later series are dropped (not an error, as in Thanos).
    pub limit: Option<usize>,
    /// Drop chunks (labels only).
    pub skip_chunks: bool,
}

/// A warning frame.
pub fn warning(msg: impl Into<String>) -> SeriesResponse {
    SeriesResponse {
        result: Some(series_response::Result::Warning(msg.into())),
    }
}

/// A single-series frame.
pub fn series_frame(s: Series) -> SeriesResponse {
    SeriesResponse {
        result: Some(series_response::Result::Series(s)),
    }
}

/// A batch frame.
pub fn batch_frame(series: Vec<Series>) -> SeriesResponse {
    SeriesResponse {
        result: Some(series_response::Result::Batch(SeriesBatch { series })),
    }
}

/// Frames a series stream as responses. An error is sent after the series before it and ends the stream.
pub fn series_responses<S>(
    series: S,
    opts: ResponseOptions,
) -> impl Stream<Item = Result<SeriesResponse, Status>> + Send
where
    S: Stream<Item = Result<Series, Status>> + Send,
{
    let limited = series
        .map(move |r| {
            r.map(|mut s| {
                if opts.skip_chunks {
                    s.chunks.clear();
                }
                s
            })
        })
        .scan((0usize, false), move |(n, stop), r| {
            if *stop {
                return futures::future::ready(None);
            }
            match r {
                Ok(s) => {
                    if opts.limit.is_some_and(|l| *n >= l) {
                        *stop = true;
                        return futures::future::ready(None);
                    }
                    *n += 1;
                    futures::future::ready(Some(Ok(s)))
                }
                Err(e) => {
                    *stop = true;
                    futures::future::ready(Some(Err(e)))
                }
            }
        });
    let batch = opts.batch_size.min(MAX_BATCH);
    struct St<S> {
        inner: Pin<Box<S>>,
        pending_err: Option<Status>,
        done: bool,
    }
    let st = St {
        inner: Box::pin(limited),
        pending_err: None,
        done: false,
    };
    futures::stream::unfold(st, move |mut st| async move {
        if let Some(e) = st.pending_err.take() {
            st.done = true;
            return Some((Err(e), st));
        }
        if st.done {
            return None;
        }
        if batch == 0 {
            return match st.inner.next().await {
                Some(Ok(s)) => Some((Ok(series_frame(s)), st)),
                Some(Err(e)) => {
                    st.done = true;
                    Some((Err(e), st))
                }
                None => None,
            };
        }
        let mut buf = Vec::with_capacity(batch.min(MAX_PREALLOC));
        while buf.len() < batch {
            match st.inner.next().await {
                Some(Ok(s)) => buf.push(s),
                Some(Err(e)) => {
                    st.pending_err = Some(e);
                    break;
                }
                None => {
                    st.done = true;
                    break;
                }
            }
        }
        if buf.is_empty() {
            let e = st.pending_err.take()?;
            st.done = true;
            return Some((Err(e), st));
        }
        Some((Ok(batch_frame(buf)), st))
    })
}

/// Runs a response stream on its own task feeding a channel of `buffer` frames, so a slow client
/// slows the producer down (and a gone client stops it). Returns the stream to hand to tonic.
pub fn spawn_bounded<S>(responses: S, buffer: usize) -> SeriesStream
where
    S: Stream<Item = Result<SeriesResponse, Status>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(buffer.max(1));
    let span = tracing::debug_span!("series_stream");
    tokio::spawn(
        async move {
            let mut responses = std::pin::pin!(responses);
            while let Some(item) = responses.next().await {
                if tx.send(item).await.is_err() {
                    tracing::debug!("client went away; stopping the series stream");
                    break;
                }
            }
        }
        .instrument(span),
    );
    Box::pin(ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::thanos::{AggrChunk, Label};

    fn s(i: usize) -> Series {
        Series {
            labels: vec![Label {
                name: "i".into(),
                value: format!("{i:04}"),
            }],
            chunks: vec![AggrChunk::default()],
        }
    }

    fn run(
        items: Vec<Result<Series, Status>>,
        o: ResponseOptions,
    ) -> Vec<Result<SeriesResponse, Status>> {
        futures::executor::block_on(series_responses(futures::stream::iter(items), o).collect())
    }

    fn shape(out: &[Result<SeriesResponse, Status>]) -> Vec<String> {
        out.iter()
            .map(|r| match r {
                Ok(SeriesResponse {
                    result: Some(series_response::Result::Series(s)),
                }) => format!("s{}", s.chunks.len()),
                Ok(SeriesResponse {
                    result: Some(series_response::Result::Batch(b)),
                }) => format!("b{}", b.series.len()),
                Ok(_) => "other".into(),
                Err(e) => format!("e:{}", e.message()),
            })
            .collect()
    }

    #[test]
    fn batches_exactly_and_flushes_rest() {
        let o = ResponseOptions {
            batch_size: 3,
            ..Default::default()
        };
        let out = run((0..8).map(|i| Ok(s(i))).collect(), o);
        assert_eq!(shape(&out), ["b3", "b3", "b2"]);
    }

    #[test]
    fn huge_batch_size_is_capped() {
        let o = ResponseOptions {
            batch_size: usize::MAX,
            ..Default::default()
        };
        let out = run((0..MAX_BATCH + 5).map(|i| Ok(s(i))).collect(), o);
        assert_eq!(shape(&out), [format!("b{MAX_BATCH}"), "b5".to_string()]);
    }

    #[test]
    fn limit_and_skip_chunks() {
        let o = ResponseOptions {
            limit: Some(4),
            skip_chunks: true,
            ..Default::default()
        };
        let out = run((0..8).map(|i| Ok(s(i))).collect(), o);
        assert_eq!(shape(&out), ["s0", "s0", "s0", "s0"]);
        let o = ResponseOptions {
            limit: Some(5),
            batch_size: 2,
            ..Default::default()
        };
        let out = run((0..8).map(|i| Ok(s(i))).collect(), o);
        assert_eq!(shape(&out), ["b2", "b2", "b1"]);
    }

    #[test]
    fn error_after_partial_batch() {
        let o = ResponseOptions {
            batch_size: 4,
            ..Default::default()
        };
        let items = vec![
            Ok(s(0)),
            Ok(s(1)),
            Err(Status::unavailable("down")),
            Ok(s(3)),
        ];
        let out = run(items, o);
        assert_eq!(shape(&out), ["b2", "e:down"]);
        let o = ResponseOptions::default();
        let items = vec![Ok(s(0)), Err(Status::unavailable("down")), Ok(s(3))];
        assert_eq!(shape(&run(items, o)), ["s1", "e:down"]);
    }

    #[tokio::test]
    async fn bounded_channel_stops_producer_when_client_leaves() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let produced = Arc::new(AtomicUsize::new(0));
        let p = produced.clone();
        let src = futures::stream::iter(0..1_000_000usize).map(move |i| {
            p.fetch_add(1, Ordering::SeqCst);
            Ok(series_frame(s(i)))
        });
        let mut out = spawn_bounded(src, 4);
        for _ in 0..10 {
            assert!(out.next().await.is_some());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let after_pause = produced.load(Ordering::SeqCst);
        // at most the 10 read, the 4 buffered and one waiting to be sent
        assert!(after_pause <= 16, "producer ran ahead: {after_pause}");
        drop(out);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(produced.load(Ordering::SeqCst) <= 17);
    }
}
