//! The StoreAPI (`thanos.Store`) and Info services over the local storage: series from the
//! blocks and the head, the ruler's external labels attached, matchers on them honoured as other
//! stores do (a failing one means no series; a holding one is not sent to the storage).

use std::future::Future;
use std::sync::Arc;

use strata_promql::Labels;
use strata_storeapi::extlabels::{
    ExternalMatch, compare_labels, match_external, strip_labels, with_external_labels,
};
use strata_storeapi::pb::info::{InfoRequest, InfoResponse, StoreInfo, info_server::Info};
use strata_storeapi::pb::thanos::{
    self as tpb, AggrChunk, LabelNamesRequest, LabelNamesResponse, LabelValuesRequest,
    LabelValuesResponse, SeriesRequest, ZLabelSet, chunk::Encoding, store_server::Store,
};
use strata_storeapi::respond::{SeriesStream, series_responses, spawn_bounded};
use strata_storeapi::validate::{self, MatchOp, Matcher};
use tonic::{Request, Response, Status};

use super::{LocalStorage, Merged, any_series_matcher};
use crate::{Error, Result};

/// Responses buffered between the series producer and a slow client.
const STREAM_BUFFER: usize = 8;
/// Target samples per XOR chunk sent (as Prometheus's head).
const SAMPLES_PER_CHUNK: usize = 120;

/// Serves the storage over the StoreAPI (Store + Info) until `shutdown` completes.
pub async fn serve(
    storage: Arc<LocalStorage>,
    listen: strata_storeapi::Listen,
    opts: strata_storeapi::ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let svc = RuleStore::new(storage);
    strata_storeapi::serve(listen, svc.clone(), svc, opts, shutdown)
        .await
        .map_err(|e| Error::Storage(format!("StoreAPI server: {e}")))
}

/// The Store and Info services of the ruler.
#[derive(Debug, Clone)]
pub struct RuleStore {
    storage: Arc<LocalStorage>,
    external: Vec<tpb::Label>,
}

impl RuleStore {
    /// Services over `storage`, announcing its external labels.
    pub fn new(storage: Arc<LocalStorage>) -> Self {
        let external = to_pb(&storage.opts.external_labels);
        Self { storage, external }
    }
}

fn to_pb(l: &Labels) -> Vec<tpb::Label> {
    l.iter()
        .map(|(n, v)| tpb::Label {
            name: n.clone(),
            value: v.clone(),
        })
        .collect()
}

fn internal(e: Error) -> Status {
    Status::internal(e.to_string())
}

fn to_tsdb(ms: &[Matcher]) -> Result<Vec<strata_tsdb::matcher::Matcher>> {
    use strata_tsdb::matcher::{MatchOp as T, Matcher as M};
    let mut out = Vec::with_capacity(ms.len() + 1);
    for m in ms {
        let (op, v) = match &m.op {
            MatchOp::Eq(v) => (T::Equal, v),
            MatchOp::Neq(v) => (T::NotEqual, v),
            MatchOp::Re(v, _) => (T::RegexMatch, v),
            MatchOp::Nre(v, _) => (T::RegexNoMatch, v),
        };
        out.push(
            M::new(op, m.name.clone(), v.clone())
                .map_err(|e| Error::Storage(format!("matcher on {}: {e}", m.name)))?,
        );
    }
    if out.is_empty() {
        out.push(any_series_matcher()?);
    }
    Ok(out)
}

/// Reads matching series on a blocking thread (block reads are synchronous).
async fn collect(
    storage: Arc<LocalStorage>,
    matchers: Vec<Matcher>,
    min_t: i64,
    max_t: i64,
) -> Result<Merged, Status> {
    tokio::task::spawn_blocking(move || {
        let tm = to_tsdb(&matchers)?;
        let keep = |l: &Labels| {
            matchers
                .iter()
                .all(|m| m.matches(l.get(&m.name).unwrap_or("")))
        };
        storage.collect(&tm, &keep, min_t, max_t)
    })
    .await
    .map_err(|e| Status::internal(format!("series reader failed: {e}")))?
    .map_err(internal)
}

fn to_series(
    labels: &Labels,
    samples: &[(i64, f64)],
    external: &[tpb::Label],
    drop: &[String],
    chunk_range: i64,
    skip_chunks: bool,
) -> Result<tpb::Series, Status> {
    let mut l = with_external_labels(to_pb(labels), external);
    strip_labels(&mut l, drop);
    let chunks = if skip_chunks {
        Vec::new()
    } else {
        strata_tsdb::block::cut::cut_float_chunks(samples, chunk_range, SAMPLES_PER_CHUNK)
            .map_err(|e| Status::internal(format!("encode chunks of {labels}: {e}")))?
            .into_iter()
            .map(|(c, min_time, max_time)| AggrChunk {
                min_time,
                max_time,
                raw: Some(tpb::Chunk {
                    r#type: Encoding::Xor as i32,
                    data: c.data().clone(),
                    hash: 0,
                }),
                ..Default::default()
            })
            .collect()
    };
    Ok(tpb::Series { labels: l, chunks })
}

#[tonic::async_trait]
impl Store for RuleStore {
    type SeriesStream = SeriesStream;

    #[tracing::instrument(skip_all, fields(min_time = request.get_ref().min_time, max_time = request.get_ref().max_time))]
    async fn series(
        &self,
        request: Request<SeriesRequest>,
    ) -> Result<Response<Self::SeriesStream>, Status> {
        let req = validate::series(request.get_ref())?;
        let ExternalMatch::Remaining(rest) = match_external(&self.external, &req.matchers) else {
            return Ok(Response::new(Box::pin(futures::stream::empty())));
        };
        let merged = collect(self.storage.clone(), rest, req.min_time, req.max_time).await?;
        let chunk_range = self.storage.opts.block_duration_ms;
        let mut series = merged
            .iter()
            .map(|(l, s)| {
                to_series(
                    l,
                    s,
                    &self.external,
                    &req.without_replica_labels,
                    chunk_range,
                    req.skip_chunks,
                )
            })
            .collect::<Result<Vec<_>, Status>>()?;
        series.sort_by(|a, b| compare_labels(&a.labels, &b.labels));
        let responses = series_responses(
            futures::stream::iter(series.into_iter().map(Ok)),
            req.response_options(),
        );
        Ok(Response::new(spawn_bounded(responses, STREAM_BUFFER)))
    }

    #[tracing::instrument(skip_all)]
    async fn label_names(
        &self,
        request: Request<LabelNamesRequest>,
    ) -> Result<Response<LabelNamesResponse>, Status> {
        let req = validate::label_names(request.get_ref())?;
        let ExternalMatch::Remaining(rest) = match_external(&self.external, &req.matchers) else {
            return Ok(Response::new(LabelNamesResponse::default()));
        };
        let merged = collect(self.storage.clone(), rest, req.start, req.end).await?;
        let mut names: Vec<String> = merged
            .keys()
            .flat_map(|l| l.iter().map(|(n, _)| n.clone()))
            .collect();
        if !names.is_empty() {
            names.extend(
                self.external
                    .iter()
                    .filter(|l| !req.without_replica_labels.contains(&l.name))
                    .map(|l| l.name.clone()),
            );
        }
        names.sort();
        names.dedup();
        if let Some(l) = req.limit {
            names.truncate(l);
        }
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
        let req = validate::label_values(request.get_ref())?;
        let ExternalMatch::Remaining(rest) = match_external(&self.external, &req.matchers) else {
            return Ok(Response::new(LabelValuesResponse::default()));
        };
        let merged = collect(self.storage.clone(), rest, req.start, req.end).await?;
        let mut values: Vec<String> =
            if let Some(ext) = self.external.iter().find(|l| l.name == req.label) {
                if merged.is_empty() || req.without_replica_labels.contains(&ext.name) {
                    Vec::new()
                } else {
                    vec![ext.value.clone()]
                }
            } else {
                merged
                    .keys()
                    .filter_map(|l| l.get(&req.label).map(str::to_string))
                    .collect()
            };
        values.sort();
        values.dedup();
        if let Some(l) = req.limit {
            values.truncate(l);
        }
        Ok(Response::new(LabelValuesResponse {
            values,
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl Info for RuleStore {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        // No data yet: advertise an empty range (min > max) so queriers skip us until data exists.
        let (min_time, max_time) = match self.storage.time_range() {
            Some((min, _)) => (min, i64::MAX),
            None => (i64::MAX, i64::MIN),
        };
        Ok(Response::new(InfoResponse {
            label_sets: vec![ZLabelSet {
                labels: self.external.clone(),
            }],
            component_type: "rule".into(),
            store: Some(StoreInfo {
                min_time,
                max_time,
                supports_sharding: false,
                supports_without_replica_labels: true,
                tsdb_infos: Vec::new(),
                supports_projections: false,
            }),
            ..Default::default()
        }))
    }
}
