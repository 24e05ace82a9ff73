//! PromQL evaluation for Strata: the first slice of a Prometheus 3.x compatible engine.
//!
//! Queries are parsed with `promql-parser`. Evaluation has two phases, like Prometheus: the
//! [`engine`] first walks the AST and works out, for every selector, the time range it needs, then
//! fetches all those series from a [`Queryable`] (async); then it evaluates the whole tree
//! synchronously in memory, every node for all steps at once (an instant query is a range query
//! with one step).
//!
//! [`promqltest`] parses and runs Prometheus's test-script language against the engine.
//!
//! Layout: `engine` holds the fetch plan, selectors, subqueries, binary operators and vector
//! matching; `functions` holds aggregations and function calls; `eval_hist` wraps the
//! [`FloatHistogram`] arithmetic they use. Every node evaluates to one value per step: a float
//! column (`Vec<Option<f64>>` per series) and a native-histogram column that stays empty for
//! float-only series, so the float path pays nothing for histograms. Range vectors carry float
//! and histogram samples apart, with per-step window ends.
//! Prometheus 3's delayed `__name__` removal is a per-series flag applied when a result is
//! returned. `strata tools promqltest FILE…` runs scripts from the command line;
//! `tests/conformance.rs` runs Prometheus's core files and holds the pass counts to a ratchet
//! (`STRATA_PROMQL_VERBOSE=1` prints every failing statement).
//!
//! NOT DONE (this slice):
//! - native histograms: Prometheus's `HistogramStatsIterator` (selectors under
//!   `histogram_count/sum/avg` get counter-reset hints from the previous sample) is emulated
//!   per series, not per window or seek as the iterator does; the `</` and `>/` bucket-trim
//!   operators and `anchored`/`smoothed` selectors are not parsed;
//!   histogram samples are compared bucket by bucket (`==`), without Prometheus's span-layout
//!   nuances;
//! - annotations: `promql-parser` keeps no source positions, so the `(line:column)` suffix is
//!   recovered by scanning the query text for calls and aggregations (`positions`); a binary
//!   expression's position is known only where its left operand starts the query, a call or
//!   aggregation argument; the forced-monotonicity info of `histogram_quantile` is raised per
//!   step ("over 1 samples") instead of merged over the range;
//! - `fill` modifiers, duration
//!   expressions and other experimental syntax the parser lacks;
//! - label names that are invalid UTF-8 in Go strings (`"\xff"`) are rejected only by
//!   `count_values`, `label_replace` and `label_join` (found by re-reading the query's string
//!   literals, as the parser decodes the escape to a valid `char`), not in `by`/`without`
//!   clauses or matchers;
//! - `label_names`/`label_values` on the [`Queryable`] are not used by the engine yet;
//! - query limits: the 11,000-step resolution bound, a subquery step bound and
//!   `Engine::max_samples` (counted on fetched samples and on each vector's points, not as
//!   Prometheus's exact peak count); no timeout, no cancellation; results of
//!   `topk`/`bottomk`/`sort*` keep Prometheus's order for instant queries only.

pub mod engine;
mod eval_hist;
mod functions;
pub mod histogram;
mod positions;
pub mod promqltest;
pub mod queryable;
pub mod value;

pub use engine::{
    Annotation, AnnotationKind, Engine, EngineError, Interrupt, Prepared, QueryResult, QueryValue,
};
pub use histogram::FloatHistogram;
pub use queryable::{MemQueryable, Queryable, QueryableError, SelectHints};
pub use value::{Labels, STALE_NAN_BITS, Sample, Series, is_stale_nan};
