//! The evaluator: fetch phase (async) then range evaluation over in-memory data (sync).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promql_parser::label::{MatchOp, Matcher, Matchers};
use promql_parser::parser::ast::{
    AggregateExpr, AtModifier, BinaryExpr, Call, LabelModifier, Offset, SubqueryExpr,
    VectorMatchCardinality, VectorSelector,
};
use promql_parser::parser::{self, Expr};

use crate::positions::Positions;
use tracing::instrument;

use crate::eval_hist;
use crate::functions;
use crate::histogram::FloatHistogram;
use crate::queryable::{Queryable, QueryableError, SelectHints};
use crate::value::{Labels, Sample, Series, is_stale_nan};
use std::sync::Arc;

mod info;

/// Errors of parsing or evaluating a query, worded as Prometheus words them where known.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The query does not parse.
    #[error("{0}")]
    Parse(String),
    /// The query parsed but cannot be evaluated.
    #[error("{0}")]
    Eval(String),
    /// A feature this engine does not implement yet.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] QueryableError),
    /// The query would hold more than [`Engine::max_samples`] samples at once.
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples,
    /// The query's deadline passed ([`Interrupt`]).
    #[error("query timed out in expression evaluation")]
    Timeout,
    /// The query was cancelled, e.g. because its client went away ([`Interrupt`]).
    #[error("query was canceled in expression evaluation")]
    Canceled,
}

/// Stops a query before it is done: at a deadline, or when a flag is raised (the client went
/// away). The engine checks it before fetching, before evaluating each expression node
/// (subqueries' inner expressions too), between the series of selectors and range functions,
/// and at the end of the evaluation.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    deadline: Option<std::time::Instant>,
    cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Interrupt {
    /// Never interrupts.
    pub fn none() -> Self {
        Interrupt::default()
    }

    /// Interrupts at `deadline` (with [`EngineError::Timeout`]) or once `cancel` is true (with
    /// [`EngineError::Canceled`]).
    pub fn new(
        deadline: Option<std::time::Instant>,
        cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    ) -> Self {
        Interrupt { deadline, cancel }
    }

    /// Whether the query must stop: loops inside one node poll this and end early; the
    /// evaluation then fails at the next [`check`](Self::check) (every node and the end of the
    /// evaluation check), so a cut-short value never reaches a result.
    pub fn is_raised(&self) -> bool {
        self.check().is_err()
    }

    /// `Err` when the query must stop.
    pub fn check(&self) -> Result<()> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        {
            return Err(EngineError::Canceled);
        }
        if self
            .deadline
            .is_some_and(|d| std::time::Instant::now() >= d)
        {
            return Err(EngineError::Timeout);
        }
        Ok(())
    }
}

type Result<T> = std::result::Result<T, EngineError>;

/// Prometheus's limit on the steps of a range query.
const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// Bound on the inner steps of one subquery evaluation (memory grows with series × steps).
const MAX_SUBQUERY_STEPS: i64 = 1_000_000;

/// A query result.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    /// A scalar at the evaluation time.
    Scalar(i64, f64),
    /// A string literal.
    String(String),
    /// An instant vector.
    Vector(Vec<Sample>),
    /// Series of points: a range query result, or a range vector from an instant query.
    Matrix(Vec<RangeSeries>),
}

/// How serious an [`Annotation`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnotationKind {
    /// The result may be wrong or meaningless.
    Warning,
    /// Something the user may want to know.
    Info,
}

/// A warning or info attached to a result, worded as Prometheus words it; the quantile and
/// sort warnings end with Prometheus's `(line:column)` source position, the others do not yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    /// Warning or info.
    pub kind: AnnotationKind,
    /// The message, e.g. `PromQL warning: quantile value should be between 0 and 1, got 2`.
    pub message: String,
}

/// A query's value and the annotations its evaluation raised.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// The value.
    pub value: QueryValue,
    /// Warnings and infos, deduplicated, in the order first raised.
    pub annotations: Vec<Annotation>,
}

/// One series of a matrix result.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// The series' labels.
    pub labels: Labels,
    /// `(timestamp ms, value)` in time order.
    pub points: Vec<(i64, f64)>,
    /// `(timestamp ms, histogram)` in time order (native-histogram points).
    pub histograms: Vec<(i64, std::sync::Arc<crate::histogram::FloatHistogram>)>,
}

/// The PromQL engine: settings shared by all queries.
#[derive(Debug, Clone)]
pub struct Engine {
    /// How far back an instant selector looks for a sample (ms); Prometheus's default is 5m.
    pub lookback_ms: i64,
    /// Subquery step when the query gives none (ms); Prometheus uses the global evaluation interval.
    pub default_subquery_step_ms: i64,
    /// Most samples a query may hold: the samples fetched from storage, and the points of any
    /// one intermediate or final vector (a native histogram counts as one sample per 16 bytes
    /// of its size, as Prometheus counts it). Prometheus's default is 50,000,000.
    pub max_samples: usize,
}

impl Default for Engine {
    fn default() -> Self {
        Engine {
            lookback_ms: 5 * 60 * 1000,
            default_subquery_step_ms: 60 * 1000,
            max_samples: 50_000_000,
        }
    }
}

/// A histogram's weight against [`Engine::max_samples`]: its size in 16-byte units (fields,
/// spans and buckets), at least 1.
pub(crate) fn histogram_weight(h: &FloatHistogram) -> usize {
    let bytes = 96
        + 8 * (h.positive_spans.len() + h.negative_spans.len())
        + 8 * (h.positive_buckets.len() + h.negative_buckets.len() + h.custom_values.len());
    bytes.div_ceil(16).max(1)
}

/// Parses a PromQL expression.
pub fn parse(query: &str) -> Result<Expr> {
    match parser::parse(query) {
        Ok(e) => Ok(e),
        // Prometheus lets `info`'s label selector hold only matchers that match the empty
        // string (`info(v, {data=~".*"})`); `promql-parser` refuses any such selector.
        Err(err) if err.contains("at least one non-empty matcher") => {
            let Some(marked) = info::mark_selectors(query) else {
                return Err(EngineError::Parse(err));
            };
            let mut e = parser::parse(&marked).map_err(|_| EngineError::Parse(err))?;
            info::strip_sentinels(&mut e);
            Ok(e)
        }
        Err(err) => Err(EngineError::Parse(err)),
    }
}

impl Engine {
    /// Evaluates `query` at `t` (ms).
    pub async fn instant_query(
        &self,
        q: &dyn Queryable,
        query: &str,
        t: i64,
    ) -> Result<QueryResult> {
        self.instant_query_with(q, query, t, &Interrupt::none())
            .await
    }

    /// [`instant_query`](Self::instant_query), stopped early by `interrupt`.
    pub async fn instant_query_with(
        &self,
        q: &dyn Queryable,
        query: &str,
        t: i64,
        interrupt: &Interrupt,
    ) -> Result<QueryResult> {
        self.prepare_instant(q, query, t, interrupt)
            .await?
            .evaluate()
    }

    /// The first half of [`instant_query_with`](Self::instant_query_with): parses `query` and
    /// fetches its series. [`Prepared::evaluate`] then needs no more I/O.
    #[instrument(skip(self, q, interrupt), fields(query = %query))]
    pub async fn prepare_instant(
        &self,
        q: &dyn Queryable,
        query: &str,
        t: i64,
        interrupt: &Interrupt,
    ) -> Result<Prepared> {
        let expr = parse(query)?;
        self.prepare(q, query, expr, Shape::Instant(t), interrupt)
            .await
    }

    /// Evaluates `query` at every step from `start` to `end` (ms, inclusive).
    pub async fn range_query(
        &self,
        q: &dyn Queryable,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<QueryResult> {
        self.range_query_with(q, query, start, end, step, &Interrupt::none())
            .await
    }

    /// [`range_query`](Self::range_query), stopped early by `interrupt`.
    pub async fn range_query_with(
        &self,
        q: &dyn Queryable,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
        interrupt: &Interrupt,
    ) -> Result<QueryResult> {
        self.prepare_range(q, query, start, end, step, interrupt)
            .await?
            .evaluate()
    }

    /// The first half of [`range_query_with`](Self::range_query_with): parses and checks the
    /// query and fetches its series. [`Prepared::evaluate`] then needs no more I/O.
    #[instrument(skip(self, q, interrupt), fields(query = %query))]
    pub async fn prepare_range(
        &self,
        q: &dyn Queryable,
        query: &str,
        start: i64,
        end: i64,
        step: i64,
        interrupt: &Interrupt,
    ) -> Result<Prepared> {
        let expr = parse(query)?;
        if step <= 0 {
            return Err(EngineError::Eval(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end < start {
            return Err(EngineError::Eval(
                "end timestamp must not be before start time".into(),
            ));
        }
        match expr.value_type() {
            parser::value::ValueType::String => {
                return Err(EngineError::Eval(
                    "invalid expression type \"string\" for range query, must be Scalar or instant Vector".into(),
                ));
            }
            parser::value::ValueType::Matrix => {
                return Err(EngineError::Eval(
                    "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector".into(),
                ));
            }
            _ => {}
        }
        if (end - start) / step > MAX_POINTS_PER_SERIES {
            return Err(EngineError::Eval(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
            ));
        }
        self.prepare(q, query, expr, Shape::Range { start, end, step }, interrupt)
            .await
    }

    /// Fetches every selector's series (the selectors at once), each distinct selector once.
    async fn prepare(
        &self,
        q: &dyn Queryable,
        query: &str,
        expr: Expr,
        shape: Shape,
        interrupt: &Interrupt,
    ) -> Result<Prepared> {
        let (start, end, step) = shape.range();
        let mut needs: HashMap<String, (Matchers, i64, i64, SelectHints)> = HashMap::new();
        let top = Range { start, end, step };
        self.plan(&expr, top, top, None, &mut needs)?;
        interrupt.check()?;
        let fetches = needs
            .into_iter()
            .map(|(key, (ms, min_t, max_t, hints))| async move {
                let groups: Vec<Vec<Matcher>> = if ms.or_matchers.is_empty() {
                    vec![ms.matchers]
                } else {
                    ms.or_matchers
                };
                let mut got: Vec<Series> = Vec::new();
                for g in groups {
                    got.extend(q.select_with_hints(&g, min_t, max_t, &hints).await?);
                }
                // Stable sort: of a series selected twice (by several `or` groups), the first copy stays.
                got.sort_by(|a, b| a.labels.cmp(&b.labels));
                got.dedup_by(|later, kept| later.labels == kept.labels);
                Ok::<_, EngineError>((key, got))
            });
        let mut data: HashMap<String, Vec<Series>> = HashMap::new();
        let mut fetched: usize = 0;
        for (key, got) in futures::future::try_join_all(fetches).await? {
            fetched = fetched.saturating_add(
                got.iter()
                    .map(|s| {
                        s.samples.len()
                            + s.histograms
                                .iter()
                                .map(|(_, h)| histogram_weight(h))
                                .sum::<usize>()
                    })
                    .sum(),
            );
            if fetched > self.max_samples {
                return Err(EngineError::TooManySamples);
            }
            data.insert(key, got);
        }
        Ok(Prepared {
            engine: self.clone(),
            query: query.to_owned(),
            expr,
            shape,
            data,
            fetched,
            interrupt: interrupt.clone(),
        })
    }

    /// Records in `needs` the time range (and hints) of every selector under `expr`; `func` is
    /// the function `expr` is a direct argument of.
    fn plan(
        &self,
        expr: &Expr,
        top: Range,
        r: Range,
        func: Option<&str>,
        needs: &mut HashMap<String, (Matchers, i64, i64, SelectHints)>,
    ) -> Result<()> {
        let mut add = |vs: &VectorSelector, back: i64, range: i64, r: Range| {
            let (s, e) = match at_ms(&vs.at, top) {
                Some(a) => (a, a),
                None => (r.start, r.end),
            };
            let off = offset_ms(&vs.offset);
            let min_t = s - off - back;
            let max_t = e - off;
            let key = selector_key(vs);
            let hints = SelectHints {
                step_ms: r.step,
                range_ms: range,
                func: func.map(str::to_owned),
            };
            add_need(needs, key, effective_matchers(vs), min_t, max_t, hints);
        };
        match expr {
            Expr::VectorSelector(vs) => add(vs, self.lookback_ms, 0, r),
            Expr::MatrixSelector(ms) => {
                let range = dur_ms(&ms.range);
                add(&ms.vs, range, range, r)
            }
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    self.plan(p, top, r, None, needs)?;
                }
                self.plan(&a.expr, top, r, None, needs)?;
            }
            Expr::Unary(u) => self.plan(&u.expr, top, r, None, needs)?,
            Expr::Binary(b) => {
                self.plan(&b.lhs, top, r, None, needs)?;
                self.plan(&b.rhs, top, r, None, needs)?;
            }
            Expr::Paren(p) => self.plan(&p.expr, top, r, func, needs)?,
            Expr::Subquery(sq) => {
                let inner = subquery_range(self, sq, top, r);
                self.plan(&sq.expr, top, inner, None, needs)?;
            }
            Expr::Call(c) if c.func.name == "info" => {
                if let Some(base) = c.args.args.first() {
                    self.plan(base, top, r, Some("info"), needs)?;
                }
                let (key, ms, min_t, max_t) = info::need(c, top, r, self.lookback_ms)?;
                let hints = SelectHints {
                    step_ms: r.step,
                    range_ms: 0,
                    func: Some("info".to_owned()),
                };
                add_need(needs, key, Matchers::new(ms), min_t, max_t, hints);
            }
            Expr::Call(c) => {
                for a in &c.args.args {
                    self.plan(a, top, r, Some(c.func.name), needs)?;
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
            Expr::Extension(_) => {
                return Err(EngineError::Unsupported("extension expressions".into()));
            }
        }
        Ok(())
    }
}

/// Records that the selector `key` (with matchers `ms`) is read over `[min_t, max_t]`: a selector
/// used several times is fetched once, over the union of the ranges, with hints all uses agree on.
fn add_need(
    needs: &mut HashMap<String, (Matchers, i64, i64, SelectHints)>,
    key: String,
    ms: Matchers,
    min_t: i64,
    max_t: i64,
    hints: SelectHints,
) {
    let entry = needs
        .entry(key)
        .or_insert_with(|| (ms, min_t, max_t, hints.clone()));
    entry.1 = entry.1.min(min_t);
    entry.2 = entry.2.max(max_t);
    if entry.3.func != hints.func {
        entry.3.func = None;
    }
    entry.3.step_ms = entry.3.step_ms.min(hints.step_ms);
    entry.3.range_ms = entry.3.range_ms.max(hints.range_ms);
}

/// Whether a query is evaluated at one time or at every step of a range.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Instant(i64),
    Range { start: i64, end: i64, step: i64 },
}

impl Shape {
    /// `(start, end, step)`; an instant query is a range of one step.
    fn range(self) -> (i64, i64, i64) {
        match self {
            Shape::Instant(t) => (t, t, 1),
            Shape::Range { start, end, step } => (start, end, step.max(1)),
        }
    }

    /// The number of steps.
    fn steps(self) -> usize {
        let (start, end, step) = self.range();
        ((end - start) / step + 1) as usize
    }

    /// The evaluation times, one per step.
    fn times(self) -> Vec<i64> {
        let (start, _, step) = self.range();
        (0..self.steps()).map(|i| start + i as i64 * step).collect()
    }
}

/// A parsed query whose series are fetched: [`evaluate`](Self::evaluate) is pure computation,
/// so a caller can run it where CPU-bound work belongs (inline when small, a blocking thread
/// when large).
#[derive(Debug)]
pub struct Prepared {
    engine: Engine,
    query: String,
    expr: Expr,
    shape: Shape,
    data: HashMap<String, Vec<Series>>,
    fetched: usize,
    interrupt: Interrupt,
}

impl Prepared {
    /// A rough measure of the evaluation's work: the samples fetched plus one per fetched
    /// series and step.
    pub fn cost(&self) -> usize {
        let series: usize = self.data.values().map(Vec::len).sum();
        self.fetched
            .saturating_add(series.saturating_mul(self.shape.steps()))
    }

    /// Evaluates every node for all steps at once.
    pub fn evaluate(self) -> Result<QueryResult> {
        let _span = tracing::debug_span!("evaluate", query = %self.query).entered();
        let (start, end, step) = self.shape.range();
        let positions = Positions::new(&self.query, &self.expr);
        let mut stats = HashSet::new();
        stats_selectors(&self.expr, false, &mut stats);
        let ctx = Ctx {
            engine: &self.engine,
            data: &self.data,
            ts: self.shape.times(),
            query_start: start,
            query_end: end,
            query_step: step,
            annotations: Default::default(),
            positions: &positions,
            stats: &stats,
            interrupt: &self.interrupt,
        };
        let v = ctx.eval(&self.expr)?;
        // A loop inside a node may have stopped early: such a value must not be returned.
        self.interrupt.check()?;
        let (ts, annotations) = (ctx.ts, ctx.annotations.into_inner());
        match self.shape {
            Shape::Instant(t) => finish_instant(v, t, annotations),
            Shape::Range { .. } => finish_range(v, &ts, annotations),
        }
    }
}

/// An instant query's value as the API returns it.
fn finish_instant(v: Val, t: i64, annotations: Vec<Annotation>) -> Result<QueryResult> {
    let value = match v {
        Val::Scalar(s) => QueryValue::Scalar(t, s[0]),
        Val::Str(s) => QueryValue::String(s),
        Val::Vector(vs) => {
            let vs = finish_vector(vs)?;
            QueryValue::Vector(
                vs.into_iter()
                    .filter_map(|s| {
                        let h = s.hist(0).cloned();
                        match (s.vals[0], h) {
                            (Some(f), _) => Some(Sample {
                                labels: s.labels,
                                t,
                                f,
                                h: None,
                            }),
                            (None, Some(h)) => Some(Sample {
                                labels: s.labels,
                                t,
                                f: 0.0,
                                h: Some(h),
                            }),
                            (None, None) => None,
                        }
                    })
                    .collect(),
            )
        }
        Val::Matrix(m) => {
            let end = m.ends[0];
            let out = m
                .series
                .into_iter()
                .map(|s| {
                    let mut labels = s.labels;
                    if s.drop_name {
                        labels.remove("__name__");
                    }
                    let points: Vec<_> = window(&s.samples, end, m.range).to_vec();
                    let histograms: Vec<_> = window(&s.hists, end, m.range).to_vec();
                    RangeSeries {
                        labels,
                        points,
                        histograms,
                    }
                })
                .filter(|s| !s.points.is_empty() || !s.histograms.is_empty())
                .collect();
            QueryValue::Matrix(out)
        }
    };
    Ok(QueryResult { value, annotations })
}

/// A range query's value (one series per label set, points at the steps) as the API returns it.
fn finish_range(v: Val, ts: &[i64], annotations: Vec<Annotation>) -> Result<QueryResult> {
    let series = match v {
        Val::Scalar(s) => vec![VSeries::floats(
            Labels::default(),
            s.into_iter().map(Some).collect(),
            false,
        )],
        Val::Vector(vs) => finish_vector(vs)?,
        _ => {
            return Err(EngineError::Eval(
                "unexpected value type for range query".into(),
            ));
        }
    };
    let mut out: Vec<RangeSeries> = series
        .into_iter()
        .map(|s| RangeSeries {
            labels: s.labels,
            points: s
                .vals
                .iter()
                .zip(ts)
                .filter_map(|(v, t)| v.map(|f| (*t, f)))
                .collect(),
            histograms: s
                .hists
                .iter()
                .zip(ts)
                .filter_map(|(h, t)| h.as_ref().map(|h| (*t, h.clone())))
                .collect(),
        })
        .filter(|s| !s.points.is_empty() || !s.histograms.is_empty())
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(QueryResult {
        value: QueryValue::Matrix(out),
        annotations,
    })
}

#[derive(Debug, Clone, Copy)]
struct Range {
    start: i64,
    end: i64,
    step: i64,
}

/// `points` without staleness markers: a plain copy when there are none (the usual case),
/// else a filtered one sized up front.
fn without_stale<V: Clone>(points: &[(i64, V)], stale: impl Fn(&V) -> bool) -> Vec<(i64, V)> {
    if !points.iter().any(|p| stale(&p.1)) {
        return points.to_vec();
    }
    let mut out = Vec::with_capacity(points.len());
    out.extend(points.iter().filter(|p| !stale(&p.1)).cloned());
    out
}

/// The number of `points` at or before `t`, given that the first `from` are: gallops forward
/// from `from` then bisects, so a walk over ascending times costs about the log of each gap.
pub(crate) fn advance_past<V>(points: &[(i64, V)], from: usize, t: i64) -> usize {
    let rest = &points[from.min(points.len())..];
    let mut hi = 1;
    while hi < rest.len() && rest[hi - 1].0 <= t {
        hi *= 2;
    }
    let hi = hi.min(rest.len());
    let lo = hi / 2;
    from + lo + rest[lo..hi].partition_point(|p| p.0 <= t)
}

fn subquery_range(engine: &Engine, sq: &SubqueryExpr, top: Range, r: Range) -> Range {
    let step = sq
        .step
        .as_ref()
        .map(dur_ms)
        .filter(|s| *s > 0)
        .unwrap_or(engine.default_subquery_step_ms);
    let (s, e) = match at_ms(&sq.at, top) {
        Some(a) => (a, a),
        None => (r.start, r.end),
    };
    let off = offset_ms(&sq.offset);
    let range = dur_ms(&sq.range);
    let lo = s - off - range;
    let start = lo.div_euclid(step) * step;
    let start = if start < lo { start + step } else { start };
    Range {
        start,
        end: e - off,
        step,
    }
}

/// The selector's matchers with its metric name (kept apart by the parser) as a `__name__` matcher.
fn effective_matchers(vs: &VectorSelector) -> Matchers {
    let mut ms = vs.matchers.clone();
    if let Some(name) = &vs.name {
        let m = Matcher::new(MatchOp::Equal, "__name__", name);
        if !ms.matchers.contains(&m) {
            ms.matchers.push(m.clone());
        }
        for g in &mut ms.or_matchers {
            if !g.contains(&m) {
                g.push(m.clone());
            }
        }
    }
    ms
}

fn selector_key(vs: &VectorSelector) -> String {
    let ms = effective_matchers(vs);
    let vs = &VectorSelector {
        matchers: ms,
        ..vs.clone()
    };
    let mut parts: Vec<String> = vs.matchers.matchers.iter().map(|m| m.to_string()).collect();
    parts.sort();
    let mut key = parts.join(",");
    for g in &vs.matchers.or_matchers {
        let mut p: Vec<String> = g.iter().map(|m| m.to_string()).collect();
        p.sort();
        key.push_str(" or ");
        key.push_str(&p.join(","));
    }
    key
}

pub(crate) fn dur_ms(d: &Duration) -> i64 {
    d.as_millis() as i64
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => dur_ms(d),
        Some(Offset::Neg(d)) => -dur_ms(d),
    }
}

fn systime_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

fn at_ms(at: &Option<AtModifier>, top: Range) -> Option<i64> {
    match at {
        None => None,
        Some(AtModifier::Start) => Some(top.start),
        Some(AtModifier::End) => Some(top.end),
        Some(AtModifier::At(t)) => Some(systime_ms(t)),
    }
}

/// A shared native-histogram value.
pub(crate) type H = Arc<FloatHistogram>;

/// An instant-vector series during evaluation: one optional value per step. A step holds a
/// float (`vals[i]`) or a histogram (`hists[i]`), never both; `hists` stays empty while no
/// step holds a histogram, so the float-only path pays nothing for it.
#[derive(Debug, Clone)]
pub(crate) struct VSeries {
    pub labels: Labels,
    pub vals: Vec<Option<f64>>,
    /// Histogram values per step, or empty when there are none.
    pub hists: Vec<Option<H>>,
    /// Drop `__name__` when the result is returned (Prometheus 3's delayed name removal).
    pub drop_name: bool,
}

impl VSeries {
    /// A float-only series.
    pub(crate) fn floats(labels: Labels, vals: Vec<Option<f64>>, drop_name: bool) -> VSeries {
        VSeries {
            labels,
            vals,
            hists: Vec::new(),
            drop_name,
        }
    }

    /// The histogram at step `i`, if that step holds one.
    pub(crate) fn hist(&self, i: usize) -> Option<&H> {
        self.hists.get(i).and_then(Option::as_ref)
    }

    /// True when step `i` holds a float or a histogram.
    pub(crate) fn has(&self, i: usize) -> bool {
        self.vals[i].is_some() || self.hist(i).is_some()
    }

    /// True when any step holds a value.
    pub(crate) fn any(&self) -> bool {
        self.vals.iter().any(Option::is_some) || self.hists.iter().any(Option::is_some)
    }

    /// True when some step holds a histogram.
    pub(crate) fn has_hists(&self) -> bool {
        self.hists.iter().any(Option::is_some)
    }

    /// Stores histogram `h` at step `i` (clearing the float there).
    pub(crate) fn set_hist(&mut self, i: usize, h: H) {
        if self.hists.is_empty() {
            self.hists = vec![None; self.vals.len()];
        }
        self.vals[i] = None;
        self.hists[i] = Some(h);
    }

    /// Removes whatever step `i` holds.
    pub(crate) fn clear(&mut self, i: usize) {
        self.vals[i] = None;
        if let Some(h) = self.hists.get_mut(i) {
            *h = None;
        }
    }

    /// Drops every histogram value, keeping the floats.
    pub(crate) fn drop_hists(&mut self) {
        self.hists = Vec::new();
    }
}

/// A range-vector series during evaluation.
#[derive(Debug, Clone)]
pub(crate) struct MSeries {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
    /// Histogram samples, time-sorted (a timestamp is in `samples` or here, not both).
    pub hists: Vec<(i64, H)>,
    pub drop_name: bool,
}

/// A range vector: windows `(ends[i] - range, ends[i]]` per step over each series.
#[derive(Debug, Clone)]
pub(crate) struct MatrixVal {
    pub series: Vec<MSeries>,
    pub range: i64,
    pub ends: Vec<i64>,
    /// The evaluation time of each step (the step's own time, whatever `@` and `offset` say).
    pub eval_ts: Vec<i64>,
}

/// An evaluated node.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Scalar(Vec<f64>),
    Str(String),
    Vector(Vec<VSeries>),
    Matrix(MatrixVal),
}

impl Val {
    fn type_name(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::Str(_) => "string",
            Val::Vector(_) => "instant vector",
            Val::Matrix(_) => "range vector",
        }
    }
}

/// The samples of `samples` in `(end - range, end]`.
pub(crate) fn window<T>(samples: &[(i64, T)], end: i64, range: i64) -> &[(i64, T)] {
    let lo = samples.partition_point(|p| p.0 <= end - range);
    let hi = samples.partition_point(|p| p.0 <= end);
    if lo >= hi { &[] } else { &samples[lo..hi] }
}

/// Drops flagged names and checks the result has no duplicate label sets; merges series that
/// became equal but never overlap in time.
pub(crate) fn finish_vector(mut vs: Vec<VSeries>) -> Result<Vec<VSeries>> {
    for s in &mut vs {
        if s.drop_name {
            s.labels.remove("__name__");
            s.drop_name = false;
        }
    }
    vs.retain(|s| s.any());
    // Mostly every label set is distinct: found by sorting references, without copying labels.
    let mut order: Vec<&Labels> = vs.iter().map(|s| &s.labels).collect();
    order.sort_unstable();
    if order.windows(2).all(|w| w[0] != w[1]) {
        return Ok(vs);
    }
    let mut out: Vec<VSeries> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for s in vs {
        match index.get(&s.labels) {
            Some(&i) => {
                let o = &mut out[i];
                for k in 0..s.vals.len() {
                    if !s.has(k) {
                        continue;
                    }
                    if o.has(k) {
                        return Err(EngineError::Eval(
                            "vector cannot contain metrics with the same labelset".into(),
                        ));
                    }
                    match s.hist(k) {
                        Some(h) => o.set_hist(k, h.clone()),
                        None => o.vals[k] = s.vals[k],
                    }
                }
            }
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push(s);
            }
        }
    }
    Ok(out)
}

pub(crate) struct Ctx<'a> {
    pub engine: &'a Engine,
    pub data: &'a HashMap<String, Vec<Series>>,
    pub ts: Vec<i64>,
    pub query_start: i64,
    pub query_end: i64,
    /// The top-level query's step (ms); 1 for instant queries' single step.
    pub query_step: i64,
    /// Annotations raised so far (shared with subquery contexts by copying back).
    pub annotations: std::cell::RefCell<Vec<Annotation>>,
    /// Source positions of calls and aggregations, for annotation suffixes.
    pub positions: &'a Positions,
    /// Selectors (by address) read only for histogram statistics; see [`stats_selectors`].
    pub stats: &'a HashSet<usize>,
    /// Checked before every node is evaluated.
    pub interrupt: &'a Interrupt,
}

impl Ctx<'_> {
    /// Records an annotation once.
    pub(crate) fn annotate(&self, kind: AnnotationKind, message: String) {
        let mut a = self.annotations.borrow_mut();
        if !a.iter().any(|x| x.kind == kind && x.message == message) {
            a.push(Annotation { kind, message });
        }
    }

    fn top(&self) -> Range {
        Range {
            start: self.query_start,
            end: self.query_end,
            step: 1,
        }
    }

    pub(crate) fn n(&self) -> usize {
        self.ts.len()
    }

    pub(crate) fn eval(&self, expr: &Expr) -> Result<Val> {
        self.interrupt.check()?;
        let v = self.eval_node(expr)?;
        if let Val::Vector(vs) = &v {
            self.check_samples(vs)?;
        }
        Ok(v)
    }

    /// Fails when a vector holds more points than [`Engine::max_samples`].
    fn check_samples(&self, vs: &[VSeries]) -> Result<()> {
        let max = self.engine.max_samples;
        let mut total: usize = 0;
        for s in vs {
            total += s.vals.iter().filter(|v| v.is_some()).count();
            total += s
                .hists
                .iter()
                .flatten()
                .map(|h| histogram_weight(h))
                .sum::<usize>();
            if total > max {
                return Err(EngineError::TooManySamples);
            }
        }
        Ok(())
    }

    fn eval_node(&self, expr: &Expr) -> Result<Val> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(vec![n.val; self.n()])),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::VectorSelector(vs) => Ok(Val::Vector(self.vector_selector(vs, false))),
            Expr::MatrixSelector(ms) => {
                Ok(Val::Matrix(self.matrix_selector(&ms.vs, dur_ms(&ms.range))))
            }
            Expr::Subquery(sq) => self.subquery(sq),
            Expr::Unary(u) => match self.eval(&u.expr)? {
                Val::Scalar(s) => Ok(Val::Scalar(s.into_iter().map(|f| -f).collect())),
                Val::Vector(vs) => Ok(Val::Vector(
                    vs.into_iter()
                        .map(|mut s| {
                            s.vals.iter_mut().for_each(|v| *v = v.map(|f| -f));
                            for h in s.hists.iter_mut().flatten() {
                                *h = Arc::new(eval_hist::mul(h, -1.0));
                            }
                            s.drop_name = true;
                            s
                        })
                        .collect(),
                )),
                other => Err(EngineError::Eval(format!(
                    "unary expression only allowed on expressions of type scalar or vector, got: {}",
                    other.type_name()
                ))),
            },
            Expr::Binary(b) => self.binary(b),
            Expr::Aggregate(a) => self.aggregate(a),
            Expr::Call(c) => self.call(c),
            Expr::Extension(_) => Err(EngineError::Unsupported("extension expressions".into())),
        }
    }

    fn series_for(&self, vs: &VectorSelector) -> std::borrow::Cow<'_, [Series]> {
        let raw = self
            .data
            .get(&selector_key(vs))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if self.stats.contains(&(vs as *const VectorSelector as usize)) {
            std::borrow::Cow::Owned(raw.iter().map(stats_view).collect())
        } else {
            std::borrow::Cow::Borrowed(raw)
        }
    }

    /// Per step: the latest sample in `(t - lookback, t]` unless it is a staleness marker.
    /// With `timestamps`, the sample's timestamp (seconds) instead of its value.
    pub(crate) fn vector_selector(&self, vs: &VectorSelector, timestamps: bool) -> Vec<VSeries> {
        let at = at_ms(&vs.at, self.top());
        let off = offset_ms(&vs.offset);
        let lookback = self.engine.lookback_ms;
        let mut out = Vec::new();
        for s in self.series_for(vs).iter() {
            if self.interrupt.is_raised() {
                break;
            }
            if s.histograms.is_empty() {
                // Steps ascend (or, with `@`, stay put): the position only moves forward.
                let mut i = 0;
                let vals: Vec<Option<f64>> = self
                    .ts
                    .iter()
                    .map(|&t| {
                        let t = at.unwrap_or(t) - off;
                        i = advance_past(&s.samples, i, t);
                        if i == 0 {
                            return None;
                        }
                        let (st, f) = s.samples[i - 1];
                        if st <= t - lookback || is_stale_nan(f) {
                            return None;
                        }
                        Some(if timestamps { st as f64 / 1000.0 } else { f })
                    })
                    .collect();
                if vals.iter().any(Option::is_some) {
                    out.push(VSeries::floats(s.labels.clone(), vals, false));
                }
                continue;
            }
            // Floats and histograms: the later of the two latest samples wins.
            let mut v = VSeries::floats(s.labels.clone(), vec![None; self.n()], false);
            let (mut fi, mut hi) = (0, 0);
            for (k, &t) in self.ts.iter().enumerate() {
                let t = at.unwrap_or(t) - off;
                fi = advance_past(&s.samples, fi, t);
                hi = advance_past(&s.histograms, hi, t);
                let f = fi.checked_sub(1).map(|i| s.samples[i]);
                let h = hi.checked_sub(1).map(|i| &s.histograms[i]);
                let take_h = match (f, h) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some((ft, _)), Some((ht, _))) => *ht > ft,
                };
                if take_h {
                    let Some((ht, hv)) = h else { continue };
                    if *ht <= t - lookback || is_stale_nan(hv.sum) {
                        continue;
                    }
                    if timestamps {
                        v.vals[k] = Some(*ht as f64 / 1000.0);
                    } else {
                        v.set_hist(k, hv.clone());
                    }
                } else if let Some((ft, fv)) = f {
                    if ft <= t - lookback || is_stale_nan(fv) {
                        continue;
                    }
                    v.vals[k] = Some(if timestamps { ft as f64 / 1000.0 } else { fv });
                }
            }
            if v.any() {
                out.push(v);
            }
        }
        out
    }

    fn matrix_selector(&self, vs: &VectorSelector, range: i64) -> MatrixVal {
        let at = at_ms(&vs.at, self.top());
        let off = offset_ms(&vs.offset);
        let eval_ts: Vec<i64> = self.ts.clone();
        let ends: Vec<i64> = self.ts.iter().map(|&t| at.unwrap_or(t) - off).collect();
        let series = self
            .series_for(vs)
            .iter()
            .take_while(|_| !self.interrupt.is_raised())
            .map(|s| MSeries {
                labels: s.labels.clone(),
                samples: without_stale(&s.samples, |f| is_stale_nan(*f)),
                hists: without_stale(&s.histograms, |h| is_stale_nan(h.sum)),
                drop_name: false,
            })
            .collect();
        MatrixVal {
            series,
            range,
            ends,
            eval_ts,
        }
    }

    fn subquery(&self, sq: &SubqueryExpr) -> Result<Val> {
        let inner = subquery_range(
            self.engine,
            sq,
            self.top(),
            Range {
                start: self.ts[0],
                end: self.ts[self.n() - 1],
                step: 1,
            },
        );
        if inner.end >= inner.start && (inner.end - inner.start) / inner.step > MAX_SUBQUERY_STEPS {
            return Err(EngineError::Eval(format!(
                "subquery would evaluate more than {MAX_SUBQUERY_STEPS} steps; use a larger subquery step"
            )));
        }
        let mut ts = Vec::new();
        let mut t = inner.start;
        while t <= inner.end {
            ts.push(t);
            t += inner.step;
        }
        let at = at_ms(&sq.at, self.top());
        let off = offset_ms(&sq.offset);
        let eval_ts: Vec<i64> = self.ts.clone();
        let ends: Vec<i64> = self.ts.iter().map(|&t| at.unwrap_or(t) - off).collect();
        let range = dur_ms(&sq.range);
        if ts.is_empty() {
            return Ok(Val::Matrix(MatrixVal {
                series: vec![],
                range,
                ends,
                eval_ts,
            }));
        }
        let sub = Ctx {
            engine: self.engine,
            data: self.data,
            ts: ts.clone(),
            query_start: self.query_start,
            query_end: self.query_end,
            query_step: self.query_step,
            annotations: Default::default(),
            positions: self.positions,
            stats: self.stats,
            interrupt: self.interrupt,
        };
        let inner = sub.eval(&sq.expr);
        for a in sub.annotations.into_inner() {
            self.annotate(a.kind, a.message);
        }
        let series = match inner? {
            Val::Vector(vs) => vs
                .into_iter()
                .map(|s| MSeries {
                    samples: s
                        .vals
                        .iter()
                        .zip(&ts)
                        .filter_map(|(v, t)| v.map(|f| (*t, f)))
                        .collect(),
                    // Counter-reset hints describe neighbouring raw samples, which the
                    // subquery's steps are not: Prometheus forgets them here.
                    hists: s
                        .hists
                        .iter()
                        .zip(&ts)
                        .filter_map(|(h, t)| h.as_ref().map(|h| (*t, forget_reset_hint(h))))
                        .collect(),
                    labels: s.labels,
                    drop_name: s.drop_name,
                })
                .collect(),
            Val::Scalar(s) => vec![MSeries {
                labels: Labels::default(),
                samples: s.into_iter().zip(&ts).map(|(f, t)| (*t, f)).collect(),
                hists: Vec::new(),
                drop_name: false,
            }],
            other => {
                return Err(EngineError::Eval(format!(
                    "subquery is only allowed on instant vector, got {} instead",
                    other.type_name()
                )));
            }
        };
        Ok(Val::Matrix(MatrixVal {
            series,
            range,
            ends,
            eval_ts,
        }))
    }

    pub(crate) fn eval_scalar(&self, e: &Expr) -> Result<Vec<f64>> {
        match self.eval(e)? {
            Val::Scalar(s) => Ok(s),
            other => Err(EngineError::Eval(format!(
                "expected scalar, got {}",
                other.type_name()
            ))),
        }
    }

    pub(crate) fn eval_vector(&self, e: &Expr) -> Result<Vec<VSeries>> {
        match self.eval(e)? {
            Val::Vector(v) => Ok(v),
            other => Err(EngineError::Eval(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    pub(crate) fn eval_matrix(&self, e: &Expr) -> Result<MatrixVal> {
        match self.eval(e)? {
            Val::Matrix(m) => Ok(m),
            other => Err(EngineError::Eval(format!(
                "expected range vector, got {}",
                other.type_name()
            ))),
        }
    }

    fn binary(&self, b: &BinaryExpr) -> Result<Val> {
        let op = b.op.to_string().to_lowercase();
        let return_bool = b.return_bool();
        let pos = self.positions.of_binary(b);
        let lhs = self.eval(&b.lhs)?;
        let rhs = self.eval(&b.rhs)?;
        match (lhs, rhs) {
            (Val::Scalar(l), Val::Scalar(r)) => {
                let out = l
                    .iter()
                    .zip(&r)
                    .map(|(a, c)| {
                        let (v, keep) = scalar_op(&op, *a, *c)?;
                        Ok(if is_comparison(&op) {
                            if keep { 1.0 } else { 0.0 }
                        } else {
                            v
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Val::Scalar(out))
            }
            (Val::Vector(v), Val::Scalar(s)) => Ok(Val::Vector(self.vector_scalar(
                &op,
                v,
                &s,
                false,
                return_bool,
                &pos,
            )?)),
            (Val::Scalar(s), Val::Vector(v)) => Ok(Val::Vector(self.vector_scalar(
                &op,
                v,
                &s,
                true,
                return_bool,
                &pos,
            )?)),
            (Val::Vector(l), Val::Vector(r)) => {
                let card = b
                    .modifier
                    .as_ref()
                    .map(|m| m.card.clone())
                    .unwrap_or(VectorMatchCardinality::OneToOne);
                let matching = b.modifier.as_ref().and_then(|m| m.matching.clone());
                match op.as_str() {
                    "and" | "or" | "unless" => Ok(Val::Vector(self.set_op(&op, l, r, &matching)?)),
                    _ => Ok(Val::Vector(self.vector_vector(
                        &op,
                        l,
                        r,
                        &card,
                        &matching,
                        return_bool,
                        &pos,
                    )?)),
                }
            }
            (l, r) => Err(EngineError::Eval(format!(
                "binary expression must contain only scalar and instant vector types, got {} and {}",
                l.type_name(),
                r.type_name()
            ))),
        }
    }

    /// `and`, `or` and `unless` (the interrupt polled every 1024 series of each loop).
    fn set_op(
        &self,
        op: &str,
        l: Vec<VSeries>,
        r: Vec<VSeries>,
        matching: &Option<LabelModifier>,
    ) -> Result<Vec<VSeries>> {
        let stop = self.interrupt;
        let lsig = set_signatures(stop, &l, matching)?;
        let rsig = set_signatures(stop, &r, matching)?;
        let present_r = set_presence(stop, self.n(), &r, &rsig)?;
        match op {
            "and" => set_filter(stop, l, &lsig, &present_r, true),
            "unless" => set_filter(stop, l, &lsig, &present_r, false),
            _ => {
                let present_l = set_presence(stop, self.n(), &l, &lsig)?;
                let rest = set_filter(stop, r, &rsig, &present_l, false)?;
                let mut out = l;
                out.extend(rest);
                Ok(out)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn vector_vector(
        &self,
        op: &str,
        l: Vec<VSeries>,
        r: Vec<VSeries>,
        card: &VectorMatchCardinality,
        matching: &Option<LabelModifier>,
        return_bool: bool,
        pos: &str,
    ) -> Result<Vec<VSeries>> {
        let n = self.n();
        // For group_right the "many" side is the right: swap so `many` is always the many side.
        let swapped = matches!(card, VectorMatchCardinality::OneToMany(_));
        let (many, one) = if swapped { (&r, &l) } else { (&l, &r) };
        let include: Vec<String> = card
            .labels()
            .map(|ls| ls.labels.clone())
            .unwrap_or_default();
        let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
        let many_sig: Vec<Labels> = many
            .iter()
            .map(|s| signature(&s.labels, matching))
            .collect();
        let one_sig: Vec<Labels> = one.iter().map(|s| signature(&s.labels, matching)).collect();
        let mut out: Vec<VSeries> = Vec::new();
        let mut index: HashMap<(Labels, bool), usize> = HashMap::new();
        let drop = is_arith(op) || return_bool;
        for i in 0..n {
            // Stop between steps once interrupted (each step matches every series).
            self.interrupt.check()?;
            let mut one_map: HashMap<&Labels, usize> = HashMap::new();
            for (j, s) in one.iter().enumerate() {
                if s.has(i) && one_map.insert(&one_sig[j], j).is_some() {
                    let side = if swapped { "left" } else { "right" };
                    let dups: Vec<String> = one
                        .iter()
                        .zip(&one_sig)
                        .filter(|(o, sig)| o.has(i) && *sig == &one_sig[j])
                        .map(|(o, _)| o.labels.go_string())
                        .collect();
                    return Err(EngineError::Eval(format!(
                        "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}];many-to-many matching not allowed: matching labels must be unique on one side",
                        one_sig[j].go_string(),
                        dups.join(", ")
                    )));
                }
            }
            let mut matched_one: HashMap<&Labels, usize> = HashMap::new();
            let mut step_out: std::collections::HashSet<Labels> = Default::default();
            for (k, s) in many.iter().enumerate() {
                let Some(mv) = El::at(s, i) else { continue };
                let Some(&j) = one_map.get(&many_sig[k]) else {
                    continue;
                };
                let Some(ov) = El::at(&one[j], i) else {
                    continue;
                };
                let (lv, rv) = if swapped { (ov, mv) } else { (mv, ov) };
                let (v, keep) = match elem_binop(op, lv, rv)? {
                    Ok((v, keep, note)) => {
                        if let Some((kind, msg)) = note {
                            self.annotate(kind, format!("{msg}{pos}"));
                        }
                        (v, keep)
                    }
                    Err((kind, msg)) => {
                        self.annotate(kind, format!("{msg}{pos}"));
                        continue;
                    }
                };
                if one_to_one && matched_one.insert(&many_sig[k], k).is_some() {
                    return Err(EngineError::Eval(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                    ));
                }
                let v = if return_bool {
                    ElemOut::F(if keep { 1.0 } else { 0.0 })
                } else if !keep {
                    continue;
                } else {
                    v
                };
                // Result labels.
                let mut labels = s.labels.clone();
                if drop {
                    labels.remove("__name__");
                }
                if one_to_one {
                    match matching {
                        Some(LabelModifier::Include(on)) => labels = labels.keep(&on.labels),
                        Some(LabelModifier::Exclude(ign)) => labels = labels.drop(&ign.labels),
                        None => {}
                    }
                } else {
                    for name in &include {
                        match one[j].labels.get(name) {
                            Some(val) => labels.set(name, val),
                            None => labels.remove(name),
                        }
                    }
                }
                let keep_flag = if drop { false } else { s.drop_name };
                if !step_out.insert(labels.clone()) {
                    return Err(EngineError::Eval(
                        "multiple matches for labels: grouping labels must ensure unique matches"
                            .into(),
                    ));
                }
                let idx = *index.entry((labels.clone(), keep_flag)).or_insert_with(|| {
                    out.push(VSeries::floats(labels, vec![None; n], keep_flag));
                    out.len() - 1
                });
                match v {
                    ElemOut::F(f) => out[idx].vals[i] = Some(f),
                    ElemOut::H(h) => out[idx].set_hist(i, h),
                }
            }
        }
        Ok(out)
    }

    fn vector_scalar(
        &self,
        op: &str,
        v: Vec<VSeries>,
        s: &[f64],
        swap: bool,
        return_bool: bool,
        pos: &str,
    ) -> Result<Vec<VSeries>> {
        let drop = is_arith(op) || return_bool;
        let mut out = Vec::with_capacity(v.len());
        for mut series in v {
            if series.hists.is_empty() {
                for (i, val) in series.vals.iter_mut().enumerate() {
                    let Some(x) = *val else { continue };
                    let (l, r) = if swap { (s[i], x) } else { (x, s[i]) };
                    let (res, keep) = scalar_op(op, l, r)?;
                    *val = if is_comparison(op) {
                        if return_bool {
                            Some(if keep { 1.0 } else { 0.0 })
                        } else if keep {
                            Some(x)
                        } else {
                            None
                        }
                    } else {
                        Some(res)
                    };
                }
            } else {
                for (i, &sv) in s.iter().enumerate() {
                    let Some(x) = El::at(&series, i) else {
                        continue;
                    };
                    let (l, r) = if swap {
                        (El::F(sv), x.clone())
                    } else {
                        (x.clone(), El::F(sv))
                    };
                    let (mut res, keep) = match elem_binop(op, l, r)? {
                        Ok((v, keep, _)) => (v, keep),
                        Err((kind, msg)) => {
                            self.annotate(kind, format!("{msg}{pos}"));
                            series.clear(i);
                            continue;
                        }
                    };
                    if is_comparison(op) && swap {
                        res = x.to_out();
                    }
                    let res = if return_bool {
                        Some(ElemOut::F(if keep { 1.0 } else { 0.0 }))
                    } else if keep {
                        Some(res)
                    } else {
                        None
                    };
                    series.clear(i);
                    match res {
                        Some(ElemOut::F(f)) => series.vals[i] = Some(f),
                        Some(ElemOut::H(h)) => series.set_hist(i, h),
                        None => {}
                    }
                }
            }
            if drop {
                series.labels.remove("__name__");
            }
            if series.any() {
                out.push(series);
            }
        }
        Ok(out)
    }

    fn aggregate(&self, a: &AggregateExpr) -> Result<Val> {
        crate::functions::aggregate(self, a)
    }

    fn call(&self, c: &Call) -> Result<Val> {
        if c.func.name == "info" {
            return info::eval(self, c);
        }
        functions::call(self, c)
    }
}

pub(crate) fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

fn is_arith(op: &str) -> bool {
    matches!(op, "+" | "-" | "*" | "/" | "%" | "^" | "atan2")
}

/// Applies a binary operator; for comparisons, returns `(lhs, condition)`.
fn scalar_op(op: &str, l: f64, r: f64) -> Result<(f64, bool)> {
    Ok(match op {
        "+" => (l + r, true),
        "-" => (l - r, true),
        "*" => (l * r, true),
        "/" => (l / r, true),
        "%" => (l % r, true),
        "^" => (l.powf(r), true),
        "atan2" => (l.atan2(r), true),
        "==" => (l, l == r),
        "!=" => (l, l != r),
        ">" => (l, l > r),
        "<" => (l, l < r),
        ">=" => (l, l >= r),
        "<=" => (l, l <= r),
        other => return Err(EngineError::Unsupported(format!("binary operator {other}"))),
    })
}

/// One step's value of a vector element: a float or a histogram.
#[derive(Debug, Clone)]
pub(crate) enum El<'a> {
    F(f64),
    H(&'a H),
}

impl<'a> El<'a> {
    /// What series `s` holds at step `i`.
    pub(crate) fn at(s: &'a VSeries, i: usize) -> Option<El<'a>> {
        match s.vals[i] {
            Some(f) => Some(El::F(f)),
            None => s.hist(i).map(El::H),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            El::F(_) => "float",
            El::H(_) => "histogram",
        }
    }

    fn to_out(&self) -> ElemOut {
        match self {
            El::F(f) => ElemOut::F(*f),
            El::H(h) => ElemOut::H(H::clone(h)),
        }
    }
}

/// The value a binary operation produces for one element.
#[derive(Debug, Clone)]
pub(crate) enum ElemOut {
    F(f64),
    H(H),
}

/// An annotation to raise: kind and message.
type Note = (AnnotationKind, String);

/// What [`elem_binop`] decides for one element: the value, whether a comparison kept it and an
/// annotation to raise, or (`Err`) the annotation explaining why the element is dropped.
type ElemResult = std::result::Result<(ElemOut, bool, Option<Note>), Note>;

/// Applies a binary operator to two elements, as Prometheus's `vectorElemBinop`: the value and
/// whether a comparison kept it (plus an annotation to raise), or the annotation explaining why
/// the element is dropped.
fn elem_binop(op: &str, l: El<'_>, r: El<'_>) -> Result<ElemResult> {
    let incompatible = |l: &El<'_>, r: &El<'_>| {
        Err((
            AnnotationKind::Info,
            format!(
                "PromQL info: incompatible sample types encountered for binary operator {op:?}: {} {op} {}",
                l.type_name(),
                r.type_name()
            ),
        ))
    };
    Ok(match (&l, &r) {
        (El::F(a), El::F(b)) => {
            let (v, keep) = scalar_op(op, *a, *b)?;
            Ok((ElemOut::F(v), keep, None))
        }
        (El::F(f), El::H(h)) if op == "*" => {
            Ok((ElemOut::H(Arc::new(eval_hist::mul(h, *f))), true, None))
        }
        (El::H(h), El::F(f)) if op == "*" => {
            Ok((ElemOut::H(Arc::new(eval_hist::mul(h, *f))), true, None))
        }
        (El::H(h), El::F(f)) if op == "/" => {
            Ok((ElemOut::H(Arc::new(eval_hist::div(h, *f))), true, None))
        }
        (El::H(a), El::H(b)) if op == "+" || op == "-" => {
            let what = if op == "+" { "addition" } else { "subtraction" };
            let res = if op == "+" {
                eval_hist::add(a, b)
            } else {
                eval_hist::sub(a, b)
            };
            match res {
                Err(_) => Err((
                    AnnotationKind::Warning,
                    format!(
                        "PromQL warning: incompatible bucket layout encountered for binary operator {op}"
                    ),
                )),
                Ok(_) if eval_hist::reset_collision(a, b) => Err((
                    AnnotationKind::Warning,
                    format!("PromQL warning: conflicting counter resets during histogram {what}"),
                )),
                Ok((h, reconciled)) => {
                    let note = reconciled.then(|| {
                        (
                            AnnotationKind::Info,
                            format!("PromQL info: mismatched custom buckets were reconciled during {what}"),
                        )
                    });
                    Ok((ElemOut::H(Arc::new(h)), true, note))
                }
            }
        }
        (El::H(a), El::H(b)) if op == "==" || op == "!=" => {
            let eq = eval_hist::equals(a, b);
            Ok((ElemOut::H(H::clone(a)), eq == (op == "=="), None))
        }
        _ => incompatible(&l, &r),
    })
}

/// Polls `stop` once every 1024 iterations of a loop over series.
fn poll_every_1024(stop: &Interrupt, k: usize) -> Result<()> {
    if k % 1024 == 1023 {
        stop.check()
    } else {
        Ok(())
    }
}

/// `f` of each series, polling `stop` every 1024 series.
pub(crate) fn map_polled<T>(
    stop: &Interrupt,
    series: &[VSeries],
    mut f: impl FnMut(&VSeries) -> T,
) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(series.len());
    for (k, s) in series.iter().enumerate() {
        poll_every_1024(stop, k)?;
        out.push(f(s));
    }
    Ok(out)
}

/// The matching signature of each series of a set operator's side.
fn set_signatures(
    stop: &Interrupt,
    side: &[VSeries],
    matching: &Option<LabelModifier>,
) -> Result<Vec<Labels>> {
    map_polled(stop, side, |s| signature(&s.labels, matching))
}

/// Per step, the signatures a set operator's side has a sample for.
fn set_presence<'a>(
    stop: &Interrupt,
    steps: usize,
    side: &[VSeries],
    sigs: &'a [Labels],
) -> Result<Vec<HashSet<&'a Labels>>> {
    let mut present: Vec<HashSet<&Labels>> = vec![HashSet::new(); steps];
    for (k, (s, sig)) in side.iter().zip(sigs).enumerate() {
        poll_every_1024(stop, k)?;
        for (i, p) in present.iter_mut().enumerate() {
            if s.has(i) {
                p.insert(sig);
            }
        }
    }
    Ok(present)
}

/// Keeps the samples of `side` at the steps where its signature is present in `present`
/// (`want`) or absent (`!want`); series left with no sample are dropped.
fn set_filter(
    stop: &Interrupt,
    side: Vec<VSeries>,
    sigs: &[Labels],
    present: &[HashSet<&Labels>],
    want: bool,
) -> Result<Vec<VSeries>> {
    let mut out = Vec::with_capacity(side.len());
    for (k, (mut s, sig)) in side.into_iter().zip(sigs).enumerate() {
        poll_every_1024(stop, k)?;
        for (i, p) in present.iter().enumerate() {
            if p.contains(sig) != want {
                s.clear(i);
            }
        }
        if s.any() {
            out.push(s);
        }
    }
    Ok(out)
}

/// Collects the selectors Prometheus reads through its `HistogramStatsIterator`: those under
/// `histogram_count`, `histogram_sum` or `histogram_avg` with no subquery, bucket-reading
/// histogram function or trim operator on the way up. `under` says such a function encloses
/// `expr`.
fn stats_selectors(expr: &Expr, under: bool, out: &mut HashSet<usize>) {
    match expr {
        Expr::VectorSelector(vs) => {
            if under {
                out.insert(vs as *const VectorSelector as usize);
            }
        }
        Expr::MatrixSelector(ms) => {
            if under {
                out.insert(&ms.vs as *const VectorSelector as usize);
            }
        }
        // Below these, buckets are needed whatever encloses them.
        Expr::Subquery(_) => {}
        Expr::Call(c) => {
            let under = match c.func.name {
                "histogram_count" | "histogram_sum" | "histogram_avg" => true,
                "histogram_quantile" | "histogram_quantiles" | "histogram_fraction" => return,
                _ => under,
            };
            for a in &c.args.args {
                stats_selectors(a, under, out);
            }
        }
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                stats_selectors(p, under, out);
            }
            stats_selectors(&a.expr, under, out);
        }
        Expr::Unary(u) => stats_selectors(&u.expr, under, out),
        Expr::Binary(b) => {
            stats_selectors(&b.lhs, under, out);
            stats_selectors(&b.rhs, under, out);
        }
        Expr::Paren(p) => stats_selectors(&p.expr, under, out),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// A series as Prometheus's `HistogramStatsIterator` yields it: histograms reduced to schema,
/// count and sum, and an unknown counter-reset hint replaced by what comparing with the
/// previous histogram sample says (reset or not), as the iterator decides on the fly.
fn stats_view(s: &Series) -> Series {
    use crate::histogram::CounterResetHint::{CounterReset, NotCounterReset, Unknown};
    let mut prev: Option<&H> = None;
    let histograms = s
        .histograms
        .iter()
        .map(|(t, h)| {
            let mut hint = h.counter_reset_hint;
            if !is_stale_nan(h.sum) {
                if hint == Unknown
                    && let Some(p) = prev
                {
                    hint = if h.detect_reset(p) {
                        CounterReset
                    } else {
                        NotCounterReset
                    };
                }
                prev = Some(h);
            }
            let stats = FloatHistogram {
                counter_reset_hint: hint,
                schema: h.schema,
                count: h.count,
                sum: h.sum,
                ..Default::default()
            };
            (*t, Arc::new(stats))
        })
        .collect();
    Series {
        labels: s.labels.clone(),
        samples: s.samples.clone(),
        histograms,
    }
}

/// `h` with a counter-reset or not-counter-reset hint turned into "unknown".
fn forget_reset_hint(h: &H) -> H {
    use crate::histogram::CounterResetHint::{CounterReset, NotCounterReset, Unknown};
    match h.counter_reset_hint {
        CounterReset | NotCounterReset => {
            let mut c = FloatHistogram::clone(h);
            c.counter_reset_hint = Unknown;
            Arc::new(c)
        }
        _ => h.clone(),
    }
}

/// The labels two series are matched on.
fn signature(labels: &Labels, matching: &Option<LabelModifier>) -> Labels {
    match matching {
        Some(LabelModifier::Include(on)) => labels.keep(&on.labels),
        Some(LabelModifier::Exclude(ign)) => {
            let mut l = labels.drop(&ign.labels);
            l.remove("__name__");
            l
        }
        None => {
            let mut l = labels.clone();
            l.remove("__name__");
            l
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::queryable::MemQueryable;

    /// Walking ascending times with [`advance_past`] lands where a bisection of the whole
    /// slice does, for every gap size (repeated times included, as `@` gives them).
    #[test]
    fn advance_past_agrees_with_bisection() {
        let points: Vec<(i64, ())> = [0, 5, 5, 9, 10, 20, 21, 22, 50, 51, 90]
            .iter()
            .map(|&t| (t, ()))
            .collect();
        for step in 1..40 {
            let mut i = 0;
            for t in (-3..100).step_by(step).flat_map(|t| [t, t]) {
                i = advance_past(&points, i, t);
                assert_eq!(i, points.partition_point(|p| p.0 <= t), "t {t} step {step}");
            }
        }
        assert_eq!(advance_past::<()>(&[], 0, 5), 0);
    }

    /// Records every `select` call, answers from an in-memory store.
    struct Recording {
        inner: MemQueryable,
        calls: Mutex<Vec<(Vec<String>, i64, i64)>>,
        hints: Mutex<Vec<SelectHints>>,
    }

    #[async_trait]
    impl Queryable for Recording {
        async fn select(
            &self,
            matchers: &[Matcher],
            min_t: i64,
            max_t: i64,
        ) -> std::result::Result<Vec<Series>, QueryableError> {
            let mut names: Vec<String> = matchers.iter().map(|m| m.to_string()).collect();
            names.sort();
            self.calls
                .lock()
                .map_err(|_| QueryableError::Storage("poisoned".into()))?
                .push((names, min_t, max_t));
            self.inner.select(matchers, min_t, max_t).await
        }

        async fn select_with_hints(
            &self,
            matchers: &[Matcher],
            min_t: i64,
            max_t: i64,
            hints: &SelectHints,
        ) -> std::result::Result<Vec<Series>, QueryableError> {
            self.hints
                .lock()
                .map_err(|_| QueryableError::Storage("poisoned".into()))?
                .push(hints.clone());
            self.select(matchers, min_t, max_t).await
        }

        async fn label_names(
            &self,
            a: i64,
            b: i64,
        ) -> std::result::Result<Vec<String>, QueryableError> {
            self.inner.label_names(a, b).await
        }

        async fn label_values(
            &self,
            n: &str,
            a: i64,
            b: i64,
        ) -> std::result::Result<Vec<String>, QueryableError> {
            self.inner.label_values(n, a, b).await
        }
    }

    fn store() -> Recording {
        let mut inner = MemQueryable::new();
        let labels = Labels::new([("__name__".to_string(), "x".to_string())]);
        let samples: Vec<(i64, f64)> = (0..=20).map(|i| (i * 60_000, i as f64)).collect();
        inner.add(labels, &samples);
        Recording {
            inner,
            calls: Mutex::new(Vec::new()),
            hints: Mutex::new(Vec::new()),
        }
    }

    /// Answers from memory, then runs `after` (a client leaving, the clock passing a deadline).
    struct Then<F> {
        inner: MemQueryable,
        after: F,
    }

    #[async_trait]
    impl<F: Fn() + Send + Sync> Queryable for Then<F> {
        async fn select(
            &self,
            matchers: &[Matcher],
            min_t: i64,
            max_t: i64,
        ) -> std::result::Result<Vec<Series>, QueryableError> {
            let r = self.inner.select(matchers, min_t, max_t).await;
            (self.after)();
            r
        }

        async fn label_names(
            &self,
            a: i64,
            b: i64,
        ) -> std::result::Result<Vec<String>, QueryableError> {
            self.inner.label_names(a, b).await
        }

        async fn label_values(
            &self,
            n: &str,
            a: i64,
            b: i64,
        ) -> std::result::Result<Vec<String>, QueryableError> {
            self.inner.label_values(n, a, b).await
        }
    }

    /// A set operator's loops over series stop within 1024 series of a raised interrupt; an
    /// unraised one gives the whole answer (`unless` of two disjoint halves keeps the left).
    #[test]
    fn set_operators_stop_when_interrupted() {
        let side = |from: usize| -> Vec<VSeries> {
            (from..from + 3000)
                .map(|i| {
                    VSeries::floats(
                        Labels::new([("pod".to_string(), format!("p{i}"))]),
                        vec![Some(1.0)],
                        false,
                    )
                })
                .collect()
        };
        let raised = Interrupt::new(
            None,
            Some(Arc::new(std::sync::atomic::AtomicBool::new(true))),
        );
        let sigs = set_signatures(&Interrupt::none(), &side(0), &None).expect("signatures");
        assert!(matches!(
            set_signatures(&raised, &side(0), &None),
            Err(EngineError::Canceled)
        ));
        assert!(matches!(
            set_presence(&raised, 1, &side(0), &sigs),
            Err(EngineError::Canceled)
        ));
        let other = set_signatures(&Interrupt::none(), &side(3000), &None).expect("signatures");
        let present = set_presence(&Interrupt::none(), 1, &side(3000), &other).expect("presence");
        assert!(matches!(
            set_filter(&raised, side(0), &sigs, &present, false),
            Err(EngineError::Canceled)
        ));
        let kept = set_filter(&Interrupt::none(), side(0), &sigs, &present, false).expect("kept");
        assert_eq!(kept.len(), 3000);
    }

    /// The interrupt is checked after the fetch, before evaluating: a query whose client
    /// left (or whose deadline passed) during its only store call gives no result.
    #[test]
    fn an_interrupt_raised_during_the_fetch_stops_the_evaluation() {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let q = Then {
            inner: store().inner,
            after: {
                let flag = flag.clone();
                move || flag.store(true, std::sync::atomic::Ordering::Relaxed)
            },
        };
        let e = Engine::default();
        let run = |i: &Interrupt| {
            futures::executor::block_on(e.range_query_with(
                &q,
                "sum(rate(x[5m]))",
                600_000,
                900_000,
                60_000,
                i,
            ))
        };
        assert!(run(&Interrupt::none()).is_ok());
        flag.store(false, std::sync::atomic::Ordering::Relaxed);
        let got = run(&Interrupt::new(None, Some(flag.clone())));
        assert!(matches!(got, Err(EngineError::Canceled)), "{got:?}");
        assert_eq!(
            EngineError::Canceled.to_string(),
            "query was canceled in expression evaluation"
        );

        let slow = Then {
            inner: store().inner,
            after: || std::thread::sleep(std::time::Duration::from_millis(50)),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(10);
        let got = futures::executor::block_on(e.instant_query_with(
            &slow,
            "x",
            600_000,
            &Interrupt::new(Some(deadline), None),
        ));
        assert!(matches!(got, Err(EngineError::Timeout)), "{got:?}");
        // Raised before the query starts: no store call at all.
        let rec = store();
        let raised = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let got = futures::executor::block_on(e.instant_query_with(
            &rec,
            "x",
            600_000,
            &Interrupt::new(None, Some(raised)),
        ));
        assert!(matches!(got, Err(EngineError::Canceled)), "{got:?}");
        assert!(calls(&rec).is_empty());
    }

    fn calls(r: &Recording) -> Vec<(Vec<String>, i64, i64)> {
        r.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The store calls (sorted) of `query` as a range query over `[600s, 900s]` at a 60s step.
    fn range_calls(query: &str) -> Vec<(Vec<String>, i64, i64)> {
        let q = store();
        let got = futures::executor::block_on(
            Engine::default().range_query(&q, query, 600_000, 900_000, 60_000),
        );
        assert!(got.is_ok(), "{got:?}");
        let mut c = calls(&q);
        c.sort();
        c
    }

    #[test]
    fn fetch_phase_asks_for_exactly_the_needed_range_once_per_selector() {
        let c = range_calls("rate(x[5m] offset 1m) + x + x @ 120");
        // One fetch for the `x` selector (all three uses share it), covering the matrix window
        // (start - offset - range), the lookback of `x`, and `@ 120` (120s - 5m lookback).
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].0, vec!["__name__=\"x\"".to_string()]);
        assert_eq!(c[0].1, 120_000 - 300_000);
        assert_eq!(c[0].2, 900_000);
    }

    #[test]
    fn info_reads_its_info_series_at_the_time_of_its_first_selector() {
        let c = range_calls(r#"info(x offset 2m, {__name__=~".+_info", data=~".*"})"#);
        // The base selector, and the info series (selected by name and data matchers only,
        // never by the label selector alone) over the same shifted range.
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].0, vec!["__name__=\"x\"".to_string()]);
        assert_eq!(
            c[1].0,
            vec![
                "__name__=~\".+_info\"".to_string(),
                "data=~\".*\"".to_string()
            ]
        );
        for call in &c {
            assert_eq!((call.1, call.2), (600_000 - 120_000 - 300_000, 780_000));
        }
    }

    #[test]
    fn only_info_selectors_may_match_the_empty_string() {
        let e = parse(r#"info(up, {data=~".*"})"#).map(|e| e.to_string());
        assert_eq!(e.ok().as_deref(), Some(r#"info(up, {data=~".*"})"#));
        let e = parse(r#"up + {data=~".*"}"#);
        assert!(
            matches!(&e, Err(EngineError::Parse(m)) if m.contains("non-empty matcher")),
            "{e:?}"
        );
    }

    #[test]
    fn hints_name_the_function_only_when_every_use_agrees() {
        let hints_of = |query: &str| {
            let q = store();
            let got =
                futures::executor::block_on(Engine::default().instant_query(&q, query, 600_000));
            assert!(got.is_ok(), "{got:?}");
            q.hints.lock().map(|h| h.clone()).unwrap_or_default()
        };
        let h = hints_of("sum(rate(x[5m]))");
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].func.as_deref(), Some("rate"));
        assert_eq!(h[0].range_ms, 300_000);
        assert!(h[0].reads_counter());
        let h = hints_of("rate(x[5m]) / x");
        assert_eq!(h[0].func, None);
        assert!(!h[0].reads_counter());
        let h = hints_of("max_over_time(x[2m])");
        assert_eq!(h[0].func.as_deref(), Some("max_over_time"));
        assert!(!h[0].reads_counter());
    }

    #[test]
    fn range_evaluation_matches_instant_evaluation_at_every_step() {
        let q = store();
        let e = Engine::default();
        let expr = "sum_over_time(x[3m]) / deriv(x[4m:30s]) - x offset 2m";
        let range =
            futures::executor::block_on(e.range_query(&q, expr, 300_000, 1_200_000, 60_000))
                .map(|r| r.value);
        let Ok(QueryValue::Matrix(m)) = range else {
            panic!("range query failed: {range:?}")
        };
        assert_eq!(m.len(), 1);
        for &(t, f) in &m[0].points {
            let inst = futures::executor::block_on(e.instant_query(&q, expr, t)).map(|r| r.value);
            let Ok(QueryValue::Vector(v)) = inst else {
                panic!("instant query failed: {inst:?}")
            };
            assert_eq!(v.len(), 1);
            assert_eq!(v[0].f.to_bits(), f.to_bits(), "at {t}");
        }
        assert_eq!(m[0].points.len(), 16);
    }

    #[test]
    fn staleness_marker_ends_a_series_and_resolution_is_bounded() {
        let mut inner = MemQueryable::new();
        let l = Labels::new([("__name__".to_string(), "s".to_string())]);
        inner.add(
            l,
            &[(0, 1.0), (60_000, f64::from_bits(crate::STALE_NAN_BITS))],
        );
        let e = Engine::default();
        let at = |t| futures::executor::block_on(e.instant_query(&inner, "s", t)).map(|r| r.value);
        assert!(matches!(at(30_000), Ok(QueryValue::Vector(v)) if v.len() == 1));
        assert!(matches!(at(90_000), Ok(QueryValue::Vector(v)) if v.is_empty()));
        let too_many = futures::executor::block_on(e.range_query(&inner, "s", 0, 20_000_000, 1));
        assert!(matches!(too_many, Err(EngineError::Eval(m)) if m.contains("11,000 points")));
        let bad = futures::executor::block_on(e.instant_query(&inner, "sum(", 0));
        assert!(matches!(bad, Err(EngineError::Parse(_))));
    }

    fn hist(count: f64) -> Arc<FloatHistogram> {
        Arc::new(FloatHistogram {
            count,
            sum: count,
            positive_spans: vec![crate::histogram::Span {
                offset: 0,
                length: 1,
            }],
            positive_buckets: vec![count],
            ..Default::default()
        })
    }

    fn label(name: &str, extra: Option<(&str, &str)>) -> Labels {
        let mut pairs = vec![("__name__".to_string(), name.to_string())];
        if let Some((k, v)) = extra {
            pairs.push((k.to_string(), v.to_string()));
        }
        Labels::new(pairs)
    }

    fn instant(q: &MemQueryable, query: &str, t: i64) -> QueryResult {
        match futures::executor::block_on(Engine::default().instant_query(q, query, t)) {
            Ok(r) => r,
            Err(e) => panic!("{query}: {e}"),
        }
    }

    fn vector(r: &QueryResult) -> &[Sample] {
        match &r.value {
            QueryValue::Vector(v) => v,
            other => panic!("expected a vector, got {other:?}"),
        }
    }

    #[test]
    fn selector_picks_the_later_of_float_and_histogram_samples() {
        let mut q = MemQueryable::new();
        let l = label("m", None);
        q.add(
            l.clone(),
            &[(0, 7.0), (120_000, f64::from_bits(crate::STALE_NAN_BITS))],
        );
        q.add_histograms(l, &[(60_000, hist(4.0))]);
        let at30 = instant(&q, "m", 30_000);
        assert_eq!(vector(&at30)[0].f, 7.0);
        assert!(vector(&at30)[0].h.is_none());
        let at90 = instant(&q, "m", 90_000);
        assert_eq!(vector(&at90)[0].h.as_ref().map(|h| h.count), Some(4.0));
        // The stale marker after the histogram ends the series.
        assert!(vector(&instant(&q, "m", 150_000)).is_empty());
        // timestamp() sees the histogram sample's time.
        let ts = instant(&q, "timestamp(m)", 90_000);
        assert_eq!(vector(&ts)[0].f, 60.0);
    }

    #[test]
    fn histogram_binary_operators_follow_prometheus_rules() {
        let mut q = MemQueryable::new();
        q.add_histograms(label("h", None), &[(0, hist(4.0))]);
        let doubled = instant(&q, "h * 2", 0);
        assert_eq!(vector(&doubled)[0].h.as_ref().map(|h| h.count), Some(8.0));
        let summed = instant(&q, "h + h", 0);
        assert_eq!(vector(&summed)[0].h.as_ref().map(|h| h.sum), Some(8.0));
        let same = instant(&q, "h == bool h", 0);
        assert_eq!(
            (vector(&same)[0].f, vector(&same)[0].h.is_none()),
            (1.0, true)
        );
        // A histogram plus a float has no result and an info.
        let bad = instant(&q, "h + 1", 0);
        assert!(vector(&bad).is_empty());
        assert_eq!(bad.annotations.len(), 1);
        assert_eq!(bad.annotations[0].kind, AnnotationKind::Info);
        assert_eq!(
            bad.annotations[0].message,
            "PromQL info: incompatible sample types encountered for binary operator \"+\": histogram + float (1:1)"
        );
        // Binary expressions report where their left operand starts.
        let nested = instant(&q, "sum(  h == 2)", 0);
        assert_eq!(
            nested.annotations[0].message,
            "PromQL info: incompatible sample types encountered for binary operator \"==\": histogram == float (1:7)"
        );
        let neg = instant(&q, "-h", 0);
        assert_eq!(vector(&neg)[0].h.as_ref().map(|h| h.count), Some(-4.0));
    }

    #[test]
    fn aggregations_sum_histograms_and_warn_on_a_mix() {
        let mut q = MemQueryable::new();
        q.add_histograms(label("h", Some(("i", "a"))), &[(0, hist(1.0))]);
        q.add_histograms(label("h", Some(("i", "b"))), &[(0, hist(3.0))]);
        let sum = instant(&q, "sum(h)", 0);
        assert_eq!(vector(&sum)[0].h.as_ref().map(|h| h.count), Some(4.0));
        let avg = instant(&q, "avg(h)", 0);
        assert_eq!(vector(&avg)[0].h.as_ref().map(|h| h.count), Some(2.0));
        assert_eq!(vector(&instant(&q, "count(h)", 0))[0].f, 2.0);
        let max = instant(&q, "max(h)", 0);
        assert!(vector(&max).is_empty());
        assert!(
            max.annotations[0]
                .message
                .contains("ignored histogram in max aggregation (1:5)")
        );
        q.add(label("h", Some(("i", "c"))), &[(0, 5.0)]);
        let mixed = instant(&q, "sum(h)", 0);
        assert!(vector(&mixed).is_empty());
        assert_eq!(
            mixed.annotations[0].message,
            "PromQL warning: encountered a mix of histograms and floats for aggregation (1:5)"
        );
    }

    #[test]
    fn rate_of_a_histogram_counter_and_range_results_carry_histograms() {
        let mut q = MemQueryable::new();
        let samples: Vec<(i64, Arc<FloatHistogram>)> = (0..=10)
            .map(|i| (i * 60_000, hist(60.0 * i as f64)))
            .collect();
        q.add_histograms(label("h", None), &samples);
        // One observation per second throughout: rate is 1/s whatever the window.
        let r = instant(&q, "rate(h[5m])", 600_000);
        let h = vector(&r)[0].h.clone();
        assert!(
            h.as_ref().is_some_and(|h| (h.count - 1.0).abs() < 1e-9),
            "{h:?}"
        );
        let range =
            futures::executor::block_on(Engine::default().range_query(&q, "h", 0, 120_000, 60_000));
        let Ok(QueryResult {
            value: QueryValue::Matrix(m),
            ..
        }) = range
        else {
            panic!("range query failed: {range:?}")
        };
        assert_eq!(m.len(), 1);
        assert!(m[0].points.is_empty());
        let counts: Vec<f64> = m[0].histograms.iter().map(|(_, h)| h.count).collect();
        assert_eq!(counts, vec![0.0, 60.0, 120.0]);
    }

    #[test]
    fn max_samples_bounds_fetched_and_intermediate_samples() {
        let mut q = MemQueryable::new();
        for i in 0..3 {
            let samples: Vec<(i64, f64)> = (0..10).map(|k| (k * 60_000, k as f64)).collect();
            q.add(label("x", Some(("i", &i.to_string()))), &samples);
        }
        let run = |max: usize, query: &str| {
            let e = Engine {
                max_samples: max,
                ..Engine::default()
            };
            futures::executor::block_on(e.range_query(&q, query, 0, 540_000, 60_000))
        };
        // 30 samples fetched, 30 points per vector: a bound of 30 passes, 29 does not.
        assert!(run(30, "x").is_ok());
        let err = run(29, "x");
        assert!(matches!(err, Err(EngineError::TooManySamples)), "{err:?}");
        assert_eq!(
            EngineError::TooManySamples.to_string(),
            "query processing would load too many samples into memory in query execution"
        );
        // `vector(1)` fetches nothing and holds 10 points.
        assert!(run(10, "vector(1)").is_ok());
        assert!(matches!(
            run(9, "vector(1)"),
            Err(EngineError::TooManySamples)
        ));
    }

    #[test]
    fn histogram_statistics_functions_see_counter_resets_detected_while_reading() {
        // Series "a" resets at its last sample, "b" grows: read for histogram_count, their
        // hints become reset / not reset, and summing them conflicts.
        let mut q = MemQueryable::new();
        q.add_histograms(
            label("r", Some(("s", "a"))),
            &[(0, hist(3.0)), (60_000, hist(2.0))],
        );
        q.add_histograms(
            label("r", Some(("s", "b"))),
            &[(0, hist(2.0)), (60_000, hist(3.0))],
        );
        let warned = instant(&q, "histogram_count(sum(r))", 60_000);
        assert_eq!(vector(&warned)[0].f, 5.0);
        assert_eq!(
            warned.annotations[0].message,
            "PromQL warning: conflicting counter resets during histogram aggregation (1:21)"
        );
        // Without the statistics function the buckets are read as stored: hints stay unknown.
        let plain = instant(&q, "sum(r)", 60_000);
        assert!(plain.annotations.is_empty(), "{:?}", plain.annotations);
        // At the first sample there is nothing to compare with.
        assert!(
            instant(&q, "histogram_count(sum(r))", 0)
                .annotations
                .is_empty()
        );
    }
}
