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
//! NOT DONE (this slice):
//! - native histograms (samples are floats only; `{{…}}` in test scripts is reported unsupported);
//! - annotations (warnings/infos): none are produced, so `expect warn`/`expect info` fail;
//! - experimental functions and modifiers (`limitk`, `limit_ratio`, `info`, `fill`, duration
//!   expressions, `ts_of_*`, `first_over_time`, `mad_over_time`, …);
//! - `label_names`/`label_values` on the [`Queryable`] are not used by the engine yet;
//! - query limits (samples, timeouts) and cancellation.

pub mod engine;
mod functions;
pub mod promqltest;
pub mod queryable;
pub mod value;

pub use engine::{Engine, EngineError, QueryValue};
pub use queryable::{MemQueryable, Queryable, QueryableError};
pub use value::{Labels, STALE_NAN_BITS, Sample, Series, is_stale_nan};
