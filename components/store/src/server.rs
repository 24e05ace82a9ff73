//! The StoreAPI (`thanos.Store`) and Info services over a [`BlockSet`].
//!
//! A `Series` call: check the request, pick the blocks (time range, resolution, external-label
//! matchers), resolve them from their indexes concurrently (each [`BucketBlock::plan_series`]
//! under one shared [`RequestBudget`] and [`QueryStats`]), add each block's external labels,
//! then merge the blocks' series in label order (same series in several blocks become one)
//! while their chunks are read, and frame the result as it comes: memory holds the pieces of
//! reads in progress and a few series per block, not the answer.
//!
//! Faults: a block that cannot be loaded or whose index turns out corrupt is skipped with a
//! warning frame naming it (the rest answer; a block found unreadable midway is cut short the
//! same way); an object-store timeout fails the call with `Unavailable`; a limit fails it with
//! `ResourceExhausted` naming the limit.
//!
//! [`BucketBlock::plan_series`]: crate::block::BucketBlock::plan_series

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use strata_storeapi::extlabels::{compare_labels, strip_labels};
use strata_storeapi::pb::info::{InfoRequest, InfoResponse, StoreInfo, info_server::Info};
use strata_storeapi::pb::thanos::{
    self as tpb, LabelNamesRequest, LabelNamesResponse, LabelValuesRequest, LabelValuesResponse,
    SeriesRequest, ZLabelSet, chunk::Encoding, store_server::Store,
};
use strata_storeapi::respond::{SeriesStream, series_responses, warning};
use strata_storeapi::validate::{self, MatchOp as PbOp, Matcher as PbMatcher};
use strata_tsdb::{Labels, MatchOp, Matcher};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::block::{Aggr, BlockChunk, BlockSeriesRequest, ChunkBytes, PlannedSeries};
use crate::blockset::{BlockSet, LazyBlock};
use crate::error::Error;
use crate::stats::{QueryStats, RequestBudget, StatsSnapshot};

/// Limits and concurrency of the served API.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Series one `Series` call may touch (0: unlimited).
    pub max_series: u64,
    /// Samples one call may touch, estimated from chunks (0: unlimited).
    pub max_samples: u64,
    /// Bytes one call may fetch (0: unlimited).
    pub max_bytes: u64,
    /// `Series` calls served at once; more wait.
    pub max_concurrency: usize,
    /// Blocks one call queries at once.
    pub block_concurrency: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_series: 0,
            max_samples: 0,
            max_bytes: 0,
            max_concurrency: 20,
            block_concurrency: 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Per-call metrics of the served API.
#[derive(Debug, Clone)]
pub struct ServerMetrics {
    series_requests: Family<OutcomeLabel, Counter>,
    gets_per_call: Histogram,
    bytes_per_call: Histogram,
    series_per_call: Histogram,
    call_seconds: Histogram,
    skipped_blocks: Counter,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            series_requests: Family::default(),
            gets_per_call: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            bytes_per_call: Histogram::new(exponential_buckets(1024.0, 4.0, 12)),
            series_per_call: Histogram::new(exponential_buckets(1.0, 4.0, 12)),
            call_seconds: Histogram::new(exponential_buckets(0.001, 4.0, 10)),
            skipped_blocks: Counter::default(),
        }
    }
}

impl ServerMetrics {
    /// Registers the metrics (prefixed `strata_store_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("strata_store");
        r.register(
            "series_requests",
            "StoreAPI Series calls by outcome",
            m.series_requests.clone(),
        );
        r.register(
            "series_call_object_store_requests",
            "Object-store GET requests per Series call",
            m.gets_per_call.clone(),
        );
        r.register(
            "series_call_object_store_bytes",
            "Bytes fetched from object storage per Series call",
            m.bytes_per_call.clone(),
        );
        r.register(
            "series_call_series",
            "Series returned per Series call",
            m.series_per_call.clone(),
        );
        r.register(
            "series_call_duration_seconds",
            "Time to answer a Series call",
            m.call_seconds.clone(),
        );
        r.register(
            "series_call_skipped_blocks",
            "Blocks skipped in Series calls because they could not be read",
            m.skipped_blocks.clone(),
        );
        m
    }
}

/// The gRPC Store and Info services of the gateway.
#[derive(Debug, Clone)]
pub struct StoreService {
    blocks: Arc<BlockSet>,
    opts: ServerOptions,
    gate: Arc<Semaphore>,
    metrics: ServerMetrics,
}

impl StoreService {
    /// Serves `blocks` with `opts`.
    pub fn new(blocks: Arc<BlockSet>, opts: ServerOptions, metrics: ServerMetrics) -> Self {
        let gate = Arc::new(Semaphore::new(opts.max_concurrency.max(1)));
        StoreService {
            blocks,
            opts,
            gate,
            metrics,
        }
    }

    /// A fresh budget of one call's limits.
    fn budget(&self) -> Arc<RequestBudget> {
        Arc::new(RequestBudget::new(
            self.opts.max_series,
            self.opts.max_samples,
            self.opts.max_bytes,
        ))
    }

    /// Answers a checked Series request whole: series (sorted, external labels added), warnings
    /// and the call's statistics. For in-process use (benchmarks, tests); a served call streams.
    pub async fn select(
        &self,
        req: &validate::ValidSeriesRequest,
    ) -> Result<(Vec<tpb::Series>, Vec<String>, StatsSnapshot), Status> {
        let stats = Arc::new(QueryStats::default());
        let budget = self.budget();
        let warnings: Warnings = Arc::default();
        let series: Vec<tpb::Series> = self
            .select_stream(req, &budget, &stats, &warnings)
            .await?
            .try_collect()
            .await?;
        let warnings = std::mem::take(&mut *lock(&warnings));
        Ok((series, warnings, stats.snapshot()))
    }

    /// Answers a checked Series request as a stream of series (sorted, external labels added)
    /// read from the blocks while it is sent: every block is resolved from its index first
    /// (concurrently; the series and samples limits are checked there), then each block's chunks
    /// are read as its series are merged into the answer (each block on a task of its own,
    /// a few series ahead, when there are several). Blocks skipped as unreadable leave a
    /// message in `warnings`.
    async fn select_stream(
        &self,
        req: &validate::ValidSeriesRequest,
        budget: &Arc<RequestBudget>,
        stats: &Arc<QueryStats>,
        warnings: &Warnings,
    ) -> Result<impl Stream<Item = Result<tpb::Series, Status>> + Send + 'static, Status> {
        let aggrs = aggregates(&req.raw.aggregates);
        let blocks = self.blocks.select(
            req.min_time,
            req.max_time,
            req.raw.max_resolution_window.max(0),
        );
        let compiled = RequestMatchers::new(&req.matchers)?;
        let mut jobs = Vec::new();
        for b in blocks {
            let ext = pb_labels(b.external_labels());
            if let Some(matchers) = compiled.for_block(&ext) {
                jobs.push((b, ext, matchers));
            }
        }
        let stats_ref = &**stats;
        let budget_ref = &**budget;
        let aggrs_ref = &aggrs;
        let planned: Vec<BlockOutcome> = futures::stream::iter(jobs)
            .map(|(b, ext, matchers)| async move {
                let r = BlockSeriesRequest {
                    matchers,
                    min_time: req.min_time,
                    max_time: req.max_time,
                    skip_chunks: req.skip_chunks,
                    aggrs: aggrs_ref.clone(),
                };
                plan_block(&b, &r, budget_ref, stats_ref)
                    .await
                    .map(|o| o.with_ext(ext))
            })
            .buffer_unordered(self.opts.block_concurrency.max(1))
            .try_collect()
            .await
            .map_err(|e| to_status(&e))?;
        let mut streams = Vec::new();
        for o in planned {
            match o {
                BlockOutcome::Skipped(msg) => {
                    self.metrics.skipped_blocks.inc();
                    lock(warnings).push(msg);
                }
                BlockOutcome::Series(p, _) if p.is_empty() => {}
                BlockOutcome::Series(p, ext) => streams.push(self.block_stream(
                    p,
                    &ext,
                    &req.without_replica_labels,
                    budget,
                    stats,
                    warnings,
                )),
            }
        }
        let inputs: Vec<BoxStream<'static, Result<tpb::Series, Status>>> = if streams.len() > 1 {
            streams.into_iter().map(read_ahead).collect()
        } else {
            streams
        };
        Ok(strata_storeapi::merge::merge_sorted(inputs))
    }

    /// One block's series in answer order (its labels with the external ones, replica labels
    /// stripped, sorted again where that changed the order), read while taken. A block found
    /// unreadable midway ends its part of the answer with a warning; other errors fail the call.
    fn block_stream(
        &self,
        mut p: PlannedSeries,
        ext: &[tpb::Label],
        strip: &[String],
        budget: &Arc<RequestBudget>,
        stats: &Arc<QueryStats>,
        warnings: &Warnings,
    ) -> BoxStream<'static, Result<tpb::Series, Status>> {
        let mut labels: Vec<Vec<tpb::Label>> = p
            .labels()
            .map(|l| {
                let mut out = strata_storeapi::extlabels::with_external_labels(pb_labels(l), ext);
                strip_labels(&mut out, strip);
                out
            })
            .collect();
        if !labels.is_sorted_by(|a, b| compare_labels(a, b).is_le()) {
            let mut order: Vec<usize> = (0..labels.len()).collect();
            order.sort_by(|&a, &b| compare_labels(&labels[a], &labels[b]));
            p.reorder(&order);
            let mut taken: Vec<Option<Vec<tpb::Label>>> = labels.into_iter().map(Some).collect();
            labels = order
                .iter()
                .map(|&i| taken.get_mut(i).and_then(Option::take).unwrap_or_default())
                .collect();
        }
        let id = p.ulid();
        let warnings = warnings.clone();
        let skipped = self.metrics.skipped_blocks.clone();
        p.into_stream(budget.clone(), stats.clone())
            .zip(futures::stream::iter(labels))
            .scan(false, move |done, (r, labels)| {
                let item = match r {
                    _ if *done => None,
                    Ok(s) => Some(Ok(tpb::Series {
                        labels,
                        chunks: s.chunks.iter().map(to_pb_chunk).collect(),
                    })),
                    Err(e) if is_block_fault(&e) => {
                        *done = true;
                        tracing::warn!(block = %id, error = %e, "block cut short: unreadable data");
                        skipped.inc();
                        lock(&warnings).push(format!("block {id} cut short: {e}"));
                        None
                    }
                    Err(e) => {
                        *done = true;
                        Some(Err(to_status(&e)))
                    }
                };
                futures::future::ready(item)
            })
            .boxed()
    }

    async fn series_call(&self, raw: SeriesRequest) -> Result<SeriesStream, Status> {
        let req = validate::series(&raw)?;
        let permit = self
            .gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("store gateway is shutting down"))?;
        let started = Instant::now();
        let stats = Arc::new(QueryStats::default());
        let budget = self.budget();
        let warnings: Warnings = Arc::default();
        let mut call = CallRecord {
            metrics: self.metrics.clone(),
            stats: stats.clone(),
            started,
            series: 0,
            failed: None,
            _permit: permit,
        };
        let series = match self.select_stream(&req, &budget, &stats, &warnings).await {
            Ok(s) => s,
            Err(e) => {
                call.failed = Some(e.code());
                return Err(e);
            }
        };
        let counted = series.scan(call, |call, r| {
            match &r {
                Ok(_) => call.series += 1,
                Err(e) => call.failed = Some(e.code()),
            }
            futures::future::ready(Some(r))
        });
        let frames = series_responses(counted, req.response_options());
        // Warnings once the series are out (a block can turn out unreadable midway).
        let warn = futures::stream::once(async move { std::mem::take(&mut *lock(&warnings)) })
            .flat_map(|w| futures::stream::iter(w.into_iter().map(|w| Ok(warning(w)))));
        Ok(Box::pin(frames.chain(warn)))
    }

    /// The blocks a label call over `[start, end]` reads: overlapping, with external labels that can
    /// match; each with its external labels and the matchers left for its index.
    fn label_blocks(
        &self,
        start: i64,
        end: i64,
        matchers: &[PbMatcher],
    ) -> Result<Vec<LabelBlock>, Status> {
        let compiled = RequestMatchers::new(matchers)?;
        let mut out = Vec::new();
        for b in self.blocks.all() {
            if b.meta().min_time > end || b.meta().max_time <= start {
                continue;
            }
            let ext = pb_labels(b.external_labels());
            if let Some(matchers) = compiled.for_block(&ext) {
                out.push((b, ext, matchers));
            }
        }
        Ok(out)
    }
}

/// A block of a label call: the block, its external labels, the matchers for its index.
type LabelBlock = (Arc<LazyBlock>, Vec<tpb::Label>, Vec<Matcher>);

/// A label call's per-block result: the value, `None` when the block was skipped (a warning is
/// added), or the call's error.
fn absorb<T>(
    b: &LazyBlock,
    got: Result<T, Error>,
    warnings: &mut Vec<String>,
) -> Result<Option<T>, Status> {
    match got {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_block_fault(&e) => {
            warnings.push(format!("block {} skipped: {e}", b.meta().ulid));
            Ok(None)
        }
        Err(e) => Err(to_status(&e)),
    }
}

/// One block's contribution to a call.
enum BlockOutcome {
    Series(PlannedSeries, Vec<tpb::Label>),
    Skipped(String),
}

impl BlockOutcome {
    fn with_ext(self, ext: Vec<tpb::Label>) -> Self {
        match self {
            BlockOutcome::Series(s, _) => BlockOutcome::Series(s, ext),
            o => o,
        }
    }
}

/// Whether an error is the block's own fault (corrupt data): skip it, the rest answer.
fn is_block_fault(e: &Error) -> bool {
    matches!(
        e,
        Error::Tsdb { .. } | Error::IndexHeader { .. } | Error::Unhealthy { .. }
    )
}

/// Messages of a call's skipped blocks.
type Warnings = Arc<Mutex<Vec<String>>>;

fn lock(w: &Warnings) -> std::sync::MutexGuard<'_, Vec<String>> {
    w.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Series of one block taken ahead of the merge (on a task of its own) into a small buffer, so
/// that every block's reads are under way at once.
fn read_ahead(
    mut s: BoxStream<'static, Result<tpb::Series, Status>>,
) -> BoxStream<'static, Result<tpb::Series, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(SERIES_AHEAD);
    tokio::spawn(
        async move {
            while let Some(item) = s.next().await {
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        }
        .in_current_span(),
    );
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

/// Series a block reads ahead of the merge.
const SERIES_AHEAD: usize = 64;

/// A Series call's metrics, recorded when its answer stream ends (or is dropped); it also holds
/// the call's concurrency slot.
struct CallRecord {
    metrics: ServerMetrics,
    stats: Arc<QueryStats>,
    started: Instant,
    series: u64,
    failed: Option<tonic::Code>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        let m = &self.metrics;
        let outcome = match self.failed {
            None => "ok",
            Some(tonic::Code::ResourceExhausted) => "limit",
            Some(tonic::Code::Unavailable) => "unavailable",
            Some(tonic::Code::InvalidArgument) => "invalid",
            Some(_) => "error",
        };
        m.series_requests
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        m.call_seconds.observe(self.started.elapsed().as_secs_f64());
        if self.failed.is_some() {
            return;
        }
        let stats = self.stats.snapshot();
        m.gets_per_call.observe(stats.get_requests as f64);
        m.bytes_per_call.observe(stats.get_bytes as f64);
        m.series_per_call.observe(self.series as f64);
        tracing::debug!(
            series = self.series,
            gets = stats.get_requests,
            bytes = stats.get_bytes,
            blocks = stats.blocks_queried,
            "series call answered"
        );
    }
}

/// Resolves one block of a call; a block that cannot be loaded or whose index is unreadable is
/// skipped with a message.
async fn plan_block(
    b: &LazyBlock,
    req: &BlockSeriesRequest,
    budget: &RequestBudget,
    stats: &QueryStats,
) -> Result<BlockOutcome, Error> {
    let id = b.meta().ulid;
    let span = tracing::debug_span!("block", block = %id);
    async {
        let block = match b.get(stats).await {
            Ok(block) => block,
            Err(e) if is_block_fault(&e) => {
                return Ok(BlockOutcome::Skipped(format!("block {id} skipped: {e}")));
            }
            Err(e) => return Err(e),
        };
        match block.plan_series(req, budget, stats).await {
            Ok(s) => Ok(BlockOutcome::Series(s, Vec::new())),
            Err(e) if is_block_fault(&e) => {
                tracing::warn!(block = %id, error = %e, "block skipped: unreadable data");
                Ok(BlockOutcome::Skipped(format!("block {id} skipped: {e}")))
            }
            Err(e) => Err(e),
        }
    }
    .instrument(span)
    .await
}

/// Maps an error to the gRPC status a Thanos querier understands.
fn to_status(e: &Error) -> Status {
    match e {
        Error::LimitExceeded { .. } => Status::resource_exhausted(e.to_string()),
        e if e.is_unavailable() => Status::unavailable(e.to_string()),
        Error::Objstore { .. } | Error::Bucket(_) => Status::unavailable(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

fn aggregates(wire: &[i32]) -> Vec<Aggr> {
    let mut out: Vec<Aggr> = wire
        .iter()
        .filter_map(|a| match tpb::Aggr::try_from(*a).ok()? {
            tpb::Aggr::Raw => None,
            tpb::Aggr::Count => Some(Aggr::Count),
            tpb::Aggr::Sum => Some(Aggr::Sum),
            tpb::Aggr::Min => Some(Aggr::Min),
            tpb::Aggr::Max => Some(Aggr::Max),
            tpb::Aggr::Counter => Some(Aggr::Counter),
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn pb_labels(l: &Labels) -> Vec<tpb::Label> {
    l.iter()
        .map(|(n, v)| tpb::Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect()
}

/// A request's matchers, compiled once: per block, those on its external labels are decided
/// against the label values and the rest go to the block's index (no regex compiled per block).
struct RequestMatchers<'a> {
    wire: &'a [PbMatcher],
    index: Vec<Matcher>,
    /// Used when no matcher is left for the index: every series has a name, and `=~".*"` also
    /// matches the empty value, so nothing is excluded.
    every: Matcher,
}

impl<'a> RequestMatchers<'a> {
    fn new(wire: &'a [PbMatcher]) -> Result<Self, Status> {
        let bad = |e: strata_tsdb::Error| Status::invalid_argument(e.to_string());
        let mut index = Vec::with_capacity(wire.len());
        for m in wire {
            let (op, v) = match &m.op {
                PbOp::Eq(v) => (MatchOp::Equal, v),
                PbOp::Neq(v) => (MatchOp::NotEqual, v),
                PbOp::Re(v, _) => (MatchOp::RegexMatch, v),
                PbOp::Nre(v, _) => (MatchOp::RegexNoMatch, v),
            };
            index.push(Matcher::new(op, m.name.clone(), v.clone()).map_err(bad)?);
        }
        let every = Matcher::new(MatchOp::RegexMatch, "__name__", ".*").map_err(bad)?;
        Ok(RequestMatchers { wire, index, every })
    }

    /// The matchers for a block with external labels `ext`, or `None` when a matcher on an
    /// external label rules the block out (Thanos semantics, as `match_external`).
    fn for_block(&self, ext: &[tpb::Label]) -> Option<Vec<Matcher>> {
        let mut out = Vec::with_capacity(self.index.len().max(1));
        for (w, m) in self.wire.iter().zip(&self.index) {
            match ext.iter().find(|l| l.name == w.name) {
                Some(l) if !w.matches(&l.value) => return None,
                Some(_) => {}
                None => out.push(m.clone()),
            }
        }
        if out.is_empty() {
            out.push(self.every.clone());
        }
        Some(out)
    }
}

fn pb_chunk(c: &ChunkBytes) -> Option<tpb::Chunk> {
    let ty = match c.encoding {
        1 => Encoding::Xor,
        2 => Encoding::Histogram,
        3 => Encoding::FloatHistogram,
        _ => return None,
    };
    Some(tpb::Chunk {
        r#type: ty as i32,
        data: c.data.clone(),
        hash: 0,
    })
}

fn to_pb_chunk(c: &BlockChunk) -> tpb::AggrChunk {
    let a = |x: Aggr| c.aggrs[x as usize].as_ref().and_then(pb_chunk);
    tpb::AggrChunk {
        min_time: c.min_time,
        max_time: c.max_time,
        raw: c.raw.as_ref().and_then(pb_chunk),
        count: a(Aggr::Count),
        sum: a(Aggr::Sum),
        min: a(Aggr::Min),
        max: a(Aggr::Max),
        counter: a(Aggr::Counter),
    }
}

#[tonic::async_trait]
impl Store for StoreService {
    type SeriesStream = SeriesStream;

    #[tracing::instrument(name = "store_series", skip_all, fields(min_time = request.get_ref().min_time, max_time = request.get_ref().max_time))]
    async fn series(
        &self,
        request: Request<SeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        self.series_call(request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(name = "store_label_names", skip_all)]
    async fn label_names(
        &self,
        request: Request<LabelNamesRequest>,
    ) -> Result<Response<LabelNamesResponse>, Status> {
        let req = validate::label_names(request.get_ref())?;
        let stats = QueryStats::default();
        let mut names = BTreeSet::new();
        let mut warnings = Vec::new();
        for (b, ext, matchers) in self.label_blocks(req.start, req.end, &req.matchers)? {
            let got = match b.get(&stats).await {
                Ok(block) => block.label_names(&matchers, &stats).await,
                Err(e) => Err(e),
            };
            if let Some(ns) = absorb(&b, got, &mut warnings)?
                && !ns.is_empty()
            {
                names.extend(ns);
                names.extend(ext.into_iter().map(|l| l.name));
            }
        }
        for r in &req.without_replica_labels {
            names.remove(r);
        }
        let mut names: Vec<String> = names.into_iter().collect();
        if let Some(l) = req.limit {
            names.truncate(l);
        }
        Ok(Response::new(LabelNamesResponse {
            names,
            warnings,
            hints: None,
        }))
    }

    #[tracing::instrument(name = "store_label_values", skip_all, fields(label = %request.get_ref().label))]
    async fn label_values(
        &self,
        request: Request<LabelValuesRequest>,
    ) -> Result<Response<LabelValuesResponse>, Status> {
        let req = validate::label_values(request.get_ref())?;
        let stats = QueryStats::default();
        let mut values = BTreeSet::new();
        let mut warnings = Vec::new();
        if req.without_replica_labels.contains(&req.label) {
            return Ok(Response::new(LabelValuesResponse::default()));
        }
        for (b, ext, matchers) in self.label_blocks(req.start, req.end, &req.matchers)? {
            let ext_value = ext
                .into_iter()
                .find(|l| l.name == req.label)
                .map(|l| l.value);
            let got = match b.get(&stats).await {
                Ok(block) => match ext_value {
                    // An external label: the block has it on every series; it has the value
                    // when any series matches.
                    Some(v) => block
                        .label_names(&matchers, &stats)
                        .await
                        .map(|n| if n.is_empty() { Vec::new() } else { vec![v] }),
                    None => block.label_values(&req.label, &matchers, &stats).await,
                },
                Err(e) => Err(e),
            };
            if let Some(vs) = absorb(&b, got, &mut warnings)? {
                values.extend(vs);
            }
        }
        values.remove("");
        let mut values: Vec<String> = values.into_iter().collect();
        if let Some(l) = req.limit {
            values.truncate(l);
        }
        Ok(Response::new(LabelValuesResponse {
            values,
            warnings,
            hints: None,
        }))
    }
}

#[tonic::async_trait]
impl Info for StoreService {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let (min, max) = self.blocks.time_range().unwrap_or((i64::MAX, i64::MIN));
        let label_sets = self
            .blocks
            .label_sets()
            .iter()
            .map(|l| ZLabelSet {
                labels: pb_labels(l),
            })
            .collect();
        Ok(Response::new(InfoResponse {
            label_sets,
            component_type: "store".into(),
            store: Some(StoreInfo {
                min_time: min,
                max_time: max,
                supports_sharding: false,
                supports_without_replica_labels: true,
                tsdb_infos: Vec::new(),
                supports_projections: false,
            }),
            ..Default::default()
        }))
    }
}

/// How long the gateway waits for in-flight calls at shutdown (used by the CLI).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
