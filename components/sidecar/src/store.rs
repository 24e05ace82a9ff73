//! The StoreAPI (`thanos.Store`) and Info services over one Prometheus.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use strata_storeapi::pb::info::{
    InfoRequest, InfoResponse, MetricMetadataInfo, StoreInfo, info_server::Info,
};
use strata_storeapi::pb::thanos::{
    self as tpb, AggrChunk, LabelNamesRequest, LabelNamesResponse, LabelValuesRequest,
    LabelValuesResponse, MetricMetadataRequest, MetricMetadataResponse, SeriesBatch, SeriesRequest,
    SeriesResponse, ZLabelSet, chunk::Encoding, metadata_server::Metadata,
    metric_metadata_response, series_response, store_server::Store,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::Error;
use crate::matchers::{Compiled, compile, extend_sorted, strip_external};
use crate::pb::{ChunkedSeries, Label};
use crate::prom::{Matcher, PrometheusClient, Range};

/// Series responses buffered between Prometheus and the gRPC stream; a slow client stops the reading
/// of Prometheus's body once this many are queued.
const CHANNEL_CAPACITY: usize = 8;
/// The most series put into one `SeriesBatch`.
const MAX_BATCH: usize = 10_000;

/// The sidecar's metrics.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// 1 when the last request to Prometheus succeeded.
    pub prometheus_up: Gauge,
    /// Series requests by outcome.
    pub series_requests: Family<Vec<(&'static str, &'static str)>, Counter>,
}

impl Metrics {
    /// Registers the metrics in `registry` (names prefixed `strata_sidecar_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let sub = registry.sub_registry_with_prefix("strata_sidecar");
        sub.register(
            "prometheus_up",
            "Whether the last request to Prometheus succeeded",
            m.prometheus_up.clone(),
        );
        sub.register(
            "series_requests",
            "StoreAPI Series requests by outcome",
            m.series_requests.clone(),
        );
        m
    }

    fn series_outcome(&self, outcome: &'static str) {
        self.series_requests
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }
}

/// What the services share: the Prometheus client, the current external labels and time range.
#[derive(Debug)]
pub struct State {
    client: PrometheusClient,
    external: RwLock<Vec<Label>>,
    min_time: AtomicI64,
    metrics: Metrics,
}

impl State {
    /// State over `client` with `external` labels (sorted by name).
    pub fn new(client: PrometheusClient, external: Vec<Label>, metrics: Metrics) -> Self {
        Self {
            client,
            external: RwLock::new(external),
            min_time: AtomicI64::new(i64::MIN),
            metrics,
        }
    }

    /// The Prometheus client.
    pub fn client(&self) -> &PrometheusClient {
        &self.client
    }

    /// The external labels now in force.
    pub fn external_labels(&self) -> Vec<Label> {
        match self.external.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the external labels (after a configuration reload).
    pub fn set_external_labels(&self, labels: Vec<Label>) {
        match self.external.write() {
            Ok(mut g) => *g = labels,
            Err(poisoned) => *poisoned.into_inner() = labels,
        }
    }

    /// The lowest time advertised by Info (`i64::MIN` until something, e.g. the shipper, sets it).
    pub fn set_min_time(&self, min_time: i64) {
        self.min_time.store(min_time, Ordering::Relaxed);
    }

    /// Records whether Prometheus answered.
    pub fn set_up(&self, up: bool) {
        self.metrics.prometheus_up.set(i64::from(up));
    }

    fn observe<T>(&self, r: &Result<T, Error>) {
        match r {
            Err(Error::Http { .. }) => self.set_up(false),
            Err(Error::Status { status, .. }) if *status >= 500 => self.set_up(false),
            _ => self.set_up(true),
        }
    }
}

/// Maps an error talking to Prometheus to a gRPC status.
pub fn to_status(e: &Error) -> Status {
    match e {
        Error::Http { .. } => Status::unavailable(format!("prometheus unreachable: {e}")),
        Error::Status { status, .. } if *status >= 500 || *status == 429 => {
            Status::unavailable(e.to_string())
        }
        Error::Status { .. } => Status::invalid_argument(e.to_string()),
        Error::Api { error_type, .. } if error_type == "bad_data" => {
            Status::invalid_argument(e.to_string())
        }
        _ => Status::internal(e.to_string()),
    }
}

/// The StoreAPI and Info services of the sidecar.
#[derive(Debug, Clone)]
pub struct SidecarStore {
    state: Arc<State>,
}

impl SidecarStore {
    /// Services over `state`.
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }
}

fn to_thanos_labels(labels: Vec<Label>) -> Vec<tpb::Label> {
    labels
        .into_iter()
        .map(|l| tpb::Label {
            name: l.name,
            value: l.value,
        })
        .collect()
}

/// Maps Prometheus's chunk encodings (1 XOR, 2 histogram, 3 float histogram) to Thanos's (0, 1, 2).
fn map_encoding(prom: i32) -> Option<Encoding> {
    match prom {
        1 => Some(Encoding::Xor),
        2 => Some(Encoding::Histogram),
        3 => Some(Encoding::FloatHistogram),
        _ => None,
    }
}

fn to_series(
    series: ChunkedSeries,
    external: &[Label],
    drop: &[String],
) -> Result<tpb::Series, Status> {
    let labels = extend_sorted(series.labels, external, drop);
    let chunks = series
        .chunks
        .into_iter()
        .map(|c| {
            let enc = map_encoding(c.r#type).ok_or_else(|| {
                Status::internal(format!(
                    "prometheus sent a chunk with unknown encoding {}",
                    c.r#type
                ))
            })?;
            Ok(AggrChunk {
                min_time: c.min_time_ms,
                max_time: c.max_time_ms,
                raw: Some(tpb::Chunk {
                    r#type: enc as i32,
                    data: c.data.into(),
                    hash: 0,
                }),
                ..Default::default()
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(tpb::Series {
        labels: to_thanos_labels(labels),
        chunks,
    })
}

/// Groups series into responses of `batch` series (1 = plain `Series` responses).
struct Batcher {
    batch: usize,
    buf: Vec<tpb::Series>,
}

impl Batcher {
    fn push(&mut self, s: tpb::Series) -> Option<SeriesResponse> {
        if self.batch <= 1 {
            return Some(SeriesResponse {
                result: Some(series_response::Result::Series(s)),
            });
        }
        self.buf.push(s);
        (self.buf.len() >= self.batch)
            .then(|| self.flush())
            .flatten()
    }

    fn flush(&mut self) -> Option<SeriesResponse> {
        if self.buf.is_empty() {
            return None;
        }
        Some(SeriesResponse {
            result: Some(series_response::Result::Batch(SeriesBatch {
                series: std::mem::take(&mut self.buf),
            })),
        })
    }
}

/// A validated Series request.
struct Plan {
    start: i64,
    end: i64,
    matchers: Vec<Matcher>,
    external: Vec<Label>,
    drop: Vec<String>,
    limit: usize,
    skip_chunks: bool,
    batch: usize,
}

fn plan(state: &State, r: SeriesRequest) -> Result<Option<Plan>, Status> {
    if r.min_time > r.max_time {
        return Err(Status::invalid_argument(format!(
            "min_time {} is after max_time {}",
            r.min_time, r.max_time
        )));
    }
    let compiled = compile(&r.matchers).map_err(Status::invalid_argument)?;
    let external = state.external_labels();
    let Some(rest) = strip_external(compiled, &external) else {
        return Ok(None);
    };
    if rest.is_empty() {
        return Err(Status::invalid_argument(
            "no matchers left after removing those on external labels",
        ));
    }
    Ok(Some(Plan {
        start: r.min_time,
        end: r.max_time,
        matchers: rest.into_iter().map(|c: Compiled| c.matcher).collect(),
        external,
        drop: r.without_replica_labels,
        limit: usize::try_from(r.limit).unwrap_or(0),
        skip_chunks: r.skip_chunks,
        batch: usize::try_from(r.response_batch_size)
            .unwrap_or(1)
            .clamp(1, MAX_BATCH),
    }))
}

/// Reads the label sets of `plan` (`skip_chunks`) from Prometheus's series API and sends them into `tx` until done or the client left.
async fn stream_labels_only(
    state: Arc<State>,
    plan: Plan,
    tx: mpsc::Sender<Result<SeriesResponse, Status>>,
) -> Result<(), Status> {
    let mut batcher = Batcher {
        batch: plan.batch,
        buf: Vec::new(),
    };
    let mut sent = 0usize;
    let limit_reached = |sent: usize| plan.limit > 0 && sent >= plan.limit;
    let range = Range {
        start: Some(plan.start),
        end: Some(plan.end),
        limit: (plan.limit > 0).then_some(plan.limit as u64),
    };
    let r = state.client.series(&plan.matchers, range).await;
    state.observe(&r);
    let mut sets: Vec<Vec<Label>> = r
        .map_err(|e| to_status(&e))?
        .into_iter()
        .map(|set| extend_sorted(set, &plan.external, &plan.drop))
        .collect();
    // Prometheus's label-set order: pairwise by name, then value; a prefix first. No copies.
    sets.sort_by(|a, b| {
        a.iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .cmp(b.iter().map(|l| (l.name.as_str(), l.value.as_str())))
    });
    for labels in sets {
        if limit_reached(sent) {
            break;
        }
        let s = tpb::Series {
            labels: to_thanos_labels(labels),
            chunks: Vec::new(),
        };
        sent += 1;
        if let Some(resp) = batcher.push(s)
            && tx.send(Ok(resp)).await.is_err()
        {
            return Ok(());
        }
    }

    if let Some(resp) = batcher.flush() {
        let _ = tx.send(Ok(resp)).await;
    }
    Ok(())
}

fn label_range(start: i64, end: i64, limit: i64) -> Range {
    Range {
        start: Some(start),
        end: Some(end),
        limit: u64::try_from(limit).ok().filter(|&l| l > 0),
    }
}

fn truncate(v: &mut Vec<String>, limit: i64) {
    if let Ok(l) = usize::try_from(limit)
        && l > 0
    {
        v.truncate(l);
    }
}

#[tonic::async_trait]
impl Store for SidecarStore {
    type SeriesStream = ReceiverStream<Result<SeriesResponse, Status>>;

    #[tracing::instrument(skip_all, fields(min_time = request.get_ref().min_time, max_time = request.get_ref().max_time))]
    async fn series(
        &self,
        request: Request<SeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let plan = match plan(&self.state, request.into_inner()) {
            Ok(Some(p)) => p,
            Ok(None) => {
                self.state.metrics.series_outcome("empty");
                return Ok(Response::new(ReceiverStream::new(rx)));
            }
            Err(s) => {
                self.state.metrics.series_outcome("invalid");
                return Err(s);
            }
        };
        let state = self.state.clone();
        // Connection problems are reported as the call's status, before any response is streamed.
        let first_try = if plan.skip_chunks {
            None
        } else {
            let r = state
                .client
                .remote_read(plan.start, plan.end, &plan.matchers)
                .await;
            state.observe(&r);
            Some(r.map_err(|e| {
                state.metrics.series_outcome("error");
                to_status(&e)
            })?)
        };
        let span = tracing::Span::current();
        tokio::spawn(async move {
            let _enter = span.enter();
            let result = match first_try {
                Some(stream) => stream_remote(state.clone(), plan, stream, tx.clone()).await,
                None => stream_labels_only(state.clone(), plan, tx.clone()).await,
            };
            match result {
                Ok(()) => state.metrics.series_outcome("ok"),
                Err(status) => {
                    state.metrics.series_outcome("error");
                    tracing::warn!(error = %status.message(), "series stream failed");
                    let _ = tx.send(Err(status)).await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    #[tracing::instrument(skip_all)]
    async fn label_names(
        &self,
        request: Request<LabelNamesRequest>,
    ) -> Result<Response<LabelNamesResponse>, Status> {
        let r = request.into_inner();
        if r.start > r.end {
            return Err(Status::invalid_argument("start is after end"));
        }
        let compiled = compile(&r.matchers).map_err(Status::invalid_argument)?;
        let external = self.state.external_labels();
        let Some(rest) = strip_external(compiled, &external) else {
            return Ok(Response::new(LabelNamesResponse::default()));
        };
        let matchers: Vec<Matcher> = rest.into_iter().map(|c| c.matcher).collect();
        let res = self
            .state
            .client
            .label_names(&matchers, label_range(r.start, r.end, r.limit))
            .await;
        self.state.observe(&res);
        let mut names = res.map_err(|e| to_status(&e))?;
        if !names.is_empty() {
            names.extend(
                external
                    .iter()
                    .filter(|l| !r.without_replica_labels.contains(&l.name))
                    .map(|l| l.name.clone()),
            );
        }
        names.sort();
        names.dedup();
        truncate(&mut names, r.limit);
        Ok(Response::new(LabelNamesResponse {
            names,
            ..Default::default()
        }))
    }

    #[tracing::instrument(skip_all, fields(label = %request.get_ref().label))]
    async fn label_values(
        &self,
        request: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        let r = request.into_inner();
        if r.label.is_empty() {
            return Err(Status::invalid_argument("label name is empty"));
        }
        if r.start > r.end {
            return Err(Status::invalid_argument("start is after end"));
        }
        let compiled = compile(&r.matchers).map_err(Status::invalid_argument)?;
        let external = self.state.external_labels();
        let Some(rest) = strip_external(compiled, &external) else {
            return Ok(Response::new(LabelValuesResponse::default()));
        };
        if let Some(ext) = external.iter().find(|l| l.name == r.label) {
            let values = if r.without_replica_labels.contains(&ext.name) {
                Vec::new()
            } else {
                vec![ext.value.clone()]
            };
            return Ok(Response::new(LabelValuesResponse {
                values,
                ..Default::default()
            }));
        }
        let matchers: Vec<Matcher> = rest.into_iter().map(|c| c.matcher).collect();
        let res = self
            .state
            .client
            .label_values(&r.label, &matchers, label_range(r.start, r.end, r.limit))
            .await;
        self.state.observe(&res);
        let mut values = res.map_err(|e| to_status(&e))?;
        values.sort();
        truncate(&mut values, r.limit);
        Ok(Response::new(LabelValuesResponse {
            values,
            ..Default::default()
        }))
    }
}

/// Streams an already opened remote-read body (the `skip_chunks` case is [`stream_labels_only`]).
async fn stream_remote(
    state: Arc<State>,
    plan: Plan,
    mut stream: crate::remote_read::SeriesStream,
    tx: mpsc::Sender<Result<SeriesResponse, Status>>,
) -> Result<(), Status> {
    let mut batcher = Batcher {
        batch: plan.batch,
        buf: Vec::new(),
    };
    let mut sent = 0usize;
    while plan.limit == 0 || sent < plan.limit {
        let next = stream.next_series().await;
        state.observe(&next);
        let Some(series) = next.map_err(|e| to_status(&e))? else {
            break;
        };
        let s = to_series(series, &plan.external, &plan.drop)?;
        sent += 1;
        if let Some(resp) = batcher.push(s)
            && tx.send(Ok(resp)).await.is_err()
        {
            return Ok(());
        }
    }
    if let Some(resp) = batcher.flush() {
        let _ = tx.send(Ok(resp)).await;
    }
    Ok(())
}

#[tonic::async_trait]
impl Info for SidecarStore {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let external = self.state.external_labels();
        let min_time = self.state.min_time.load(Ordering::Relaxed);
        Ok(Response::new(InfoResponse {
            label_sets: vec![ZLabelSet {
                labels: to_thanos_labels(external),
            }],
            component_type: "sidecar".into(),
            store: Some(StoreInfo {
                min_time,
                max_time: i64::MAX,
                supports_sharding: false,
                supports_without_replica_labels: true,
                tsdb_infos: Vec::new(),
                supports_projections: false,
            }),
            metric_metadata: Some(MetricMetadataInfo {}),
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl Metadata for SidecarStore {
    type MetricMetadataStream = ReceiverStream<Result<MetricMetadataResponse, Status>>;

    #[tracing::instrument(skip_all, fields(metric = %request.get_ref().metric))]
    async fn metric_metadata(
        &self,
        request: Request<MetricMetadataRequest>,
    ) -> Result<Response<Self::MetricMetadataStream>, Status> {
        let r = request.into_inner();
        let res = self.state.client.metadata(&r.metric, r.limit).await;
        self.state.observe(&res);
        let all = res.map_err(|e| to_status(&e))?;
        let metadata = all
            .into_iter()
            .map(|(name, metas)| {
                let metas = metas
                    .into_iter()
                    .map(|m| tpb::Meta {
                        r#type: m.typ,
                        help: m.help,
                        unit: m.unit,
                    })
                    .collect();
                (name, tpb::MetricMetadataEntry { metas })
            })
            .collect();
        let (tx, rx) = mpsc::channel(1);
        let msg = MetricMetadataResponse {
            result: Some(metric_metadata_response::Result::Metadata(
                tpb::MetricMetadata { metadata },
            )),
        };
        // The receiver is still held here, so this cannot fail.
        let _ = tx.send(Ok(msg)).await;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use bytes::Bytes;
    use prost::Message;

    use super::*;
    use crate::pb::{Chunk, ChunkedReadResponse};
    use crate::remote_read::{SeriesStream, encode_frame};

    const SERIES: usize = 5_000;

    /// A lazily generated remote-read body of `SERIES` one-frame series; `produced` counts frames
    /// handed to the decoder.
    fn lazy_body(produced: Arc<AtomicUsize>) -> SeriesStream {
        let body = futures::stream::unfold(0usize, move |i| {
            let produced = produced.clone();
            async move {
                if i == SERIES {
                    return None;
                }
                produced.fetch_add(1, Ordering::SeqCst);
                let resp = ChunkedReadResponse {
                    chunked_series: vec![ChunkedSeries {
                        labels: vec![Label {
                            name: "__name__".into(),
                            value: format!("s{i:06}"),
                        }],
                        chunks: vec![Chunk {
                            min_time_ms: 0,
                            max_time_ms: 1,
                            r#type: 1,
                            data: vec![0; 64],
                        }],
                    }],
                    query_index: 0,
                };
                let mut frame = Vec::new();
                encode_frame(&resp.encode_to_vec(), &mut frame);
                Some((Ok(Bytes::from(frame)), i + 1))
            }
        });
        SeriesStream::new(body, 1 << 20)
    }

    fn plan(batch: usize) -> Plan {
        Plan {
            start: 0,
            end: 1,
            matchers: Vec::new(),
            external: vec![Label {
                name: "cluster".into(),
                value: "eu".into(),
            }],
            drop: Vec::new(),
            limit: 0,
            skip_chunks: false,
            batch,
        }
    }

    fn state() -> Arc<State> {
        let client =
            PrometheusClient::new("http://127.0.0.1:1", Duration::from_secs(1)).expect("valid url");
        Arc::new(State::new(client, Vec::new(), Metrics::default()))
    }

    #[tokio::test]
    async fn a_slow_client_stops_the_reading_of_prometheus() {
        let produced = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = mpsc::channel(CHANNEL_CAPACITY);
        let task = tokio::spawn(stream_remote(
            state(),
            plan(1),
            lazy_body(produced.clone()),
            tx,
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let read_ahead = produced.load(Ordering::SeqCst);
        assert!(
            read_ahead <= CHANNEL_CAPACITY + 2,
            "read {read_ahead} series ahead of a client that reads nothing"
        );
        let mut got = 0;
        while let Some(resp) = rx.recv().await {
            match resp.expect("ok").result {
                Some(series_response::Result::Series(s)) => {
                    assert_eq!(s.labels.len(), 2, "external label added");
                    got += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        task.await.expect("join").expect("stream ok");
        assert_eq!(got, SERIES);
        assert_eq!(produced.load(Ordering::SeqCst), SERIES);
    }

    #[tokio::test]
    async fn batches_hold_at_most_the_batch_size() {
        let (tx, mut rx) = mpsc::channel(CHANNEL_CAPACITY);
        let task = tokio::spawn(stream_remote(
            state(),
            plan(64),
            lazy_body(Arc::new(AtomicUsize::new(0))),
            tx,
        ));
        let mut sizes = Vec::new();
        while let Some(resp) = rx.recv().await {
            match resp.expect("ok").result {
                Some(series_response::Result::Batch(b)) => sizes.push(b.series.len()),
                other => panic!("unexpected {other:?}"),
            }
        }
        task.await.expect("join").expect("stream ok");
        assert_eq!(sizes.iter().sum::<usize>(), SERIES);
        assert!(sizes.iter().all(|&n| n <= 64));
        assert_eq!(sizes.len(), SERIES.div_ceil(64));
    }

    #[test]
    fn prometheus_chunk_encodings_map_to_thanos() {
        assert_eq!(map_encoding(1), Some(Encoding::Xor));
        assert_eq!(map_encoding(2), Some(Encoding::Histogram));
        assert_eq!(map_encoding(3), Some(Encoding::FloatHistogram));
        assert_eq!(map_encoding(0), None);
        assert_eq!(map_encoding(4), None);
    }
}
