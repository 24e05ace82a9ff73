//! The storage the engine reads: [`Queryable`], and an in-memory implementation.

use async_trait::async_trait;
use promql_parser::label::Matcher;

use std::sync::Arc;

use crate::histogram::FloatHistogram;
use crate::value::{Labels, Series};

/// Errors a [`Queryable`] returns.
#[derive(Debug, thiserror::Error)]
pub enum QueryableError {
    /// The operation is not implemented by this queryable.
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// The storage failed.
    #[error("storage: {0}")]
    Storage(String),
}

/// What the engine knows about a selection, for storage that can use it (replica
/// de-duplication that treats counters specially, downsampled data choice).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectHints {
    /// The evaluation step of the selector's context, ms (1 for instant queries).
    pub step_ms: i64,
    /// The range of a range-vector selector, ms (0 for instant-vector selectors).
    pub range_ms: i64,
    /// The function every use of the selector feeds (e.g. `rate`), when all uses agree.
    pub func: Option<String>,
}

impl SelectHints {
    /// True when the selector only feeds functions that read counters (`rate`, `increase`,
    /// `irate`, `resets`): a decrease in its samples means a counter reset.
    pub fn reads_counter(&self) -> bool {
        matches!(
            self.func.as_deref(),
            Some("rate" | "increase" | "irate" | "resets")
        )
    }
}

/// Storage the engine selects series from.
#[async_trait]
pub trait Queryable: Send + Sync {
    /// Every series matching all `matchers`, with its samples in `[min_t, max_t]` (ms).
    async fn select(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<Series>, QueryableError>;

    /// [`select`](Queryable::select) with what the engine knows about the selection; the
    /// engine calls this one. The default ignores the hints.
    async fn select_with_hints(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
        hints: &SelectHints,
    ) -> Result<Vec<Series>, QueryableError> {
        let _ = hints;
        self.select(matchers, min_t, max_t).await
    }

    /// Label names present in `[min_t, max_t]`.
    async fn label_names(&self, min_t: i64, max_t: i64) -> Result<Vec<String>, QueryableError>;

    /// Values of label `name` present in `[min_t, max_t]`.
    async fn label_values(
        &self,
        name: &str,
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<String>, QueryableError>;
}

/// Series held in memory (used by tests and the promqltest runner).
#[derive(Debug, Default, Clone)]
pub struct MemQueryable {
    series: Vec<Series>,
}

impl MemQueryable {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn series_mut(&mut self, labels: Labels) -> &mut Series {
        let idx = match self.series.iter().position(|s| s.labels == labels) {
            Some(i) => i,
            None => {
                self.series.push(Series {
                    labels,
                    ..Default::default()
                });
                self.series.len() - 1
            }
        };
        &mut self.series[idx]
    }

    /// Appends float samples to the series with `labels` (created if new); keeps samples
    /// time-sorted, a later sample at the same timestamp replaces the earlier one (a float or
    /// a histogram).
    pub fn add(&mut self, labels: Labels, samples: &[(i64, f64)]) {
        let s = self.series_mut(labels);
        for &(t, f) in samples {
            if let Ok(i) = s.histograms.binary_search_by_key(&t, |p| p.0) {
                s.histograms.remove(i);
            }
            match s.samples.binary_search_by_key(&t, |p| p.0) {
                Ok(i) => s.samples[i] = (t, f),
                Err(i) => s.samples.insert(i, (t, f)),
            }
        }
    }

    /// Appends native-histogram samples to the series with `labels` (created if new), like
    /// [`add`](MemQueryable::add) does for floats.
    pub fn add_histograms(&mut self, labels: Labels, samples: &[(i64, Arc<FloatHistogram>)]) {
        let s = self.series_mut(labels);
        for (t, h) in samples {
            let t = *t;
            if let Ok(i) = s.samples.binary_search_by_key(&t, |p| p.0) {
                s.samples.remove(i);
            }
            match s.histograms.binary_search_by_key(&t, |p| p.0) {
                Ok(i) => s.histograms[i] = (t, h.clone()),
                Err(i) => s.histograms.insert(i, (t, h.clone())),
            }
        }
    }

    /// Removes every series.
    pub fn clear(&mut self) {
        self.series.clear();
    }
}

fn matches(labels: &Labels, m: &Matcher) -> bool {
    m.is_match(labels.get(&m.name).unwrap_or(""))
}

#[async_trait]
impl Queryable for MemQueryable {
    async fn select(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<Series>, QueryableError> {
        Ok(self
            .series
            .iter()
            .filter(|s| matchers.iter().all(|m| matches(&s.labels, m)))
            .map(|s| Series {
                labels: s.labels.clone(),
                samples: s
                    .samples
                    .iter()
                    .copied()
                    .filter(|p| p.0 >= min_t && p.0 <= max_t)
                    .collect(),
                histograms: s
                    .histograms
                    .iter()
                    .filter(|p| p.0 >= min_t && p.0 <= max_t)
                    .cloned()
                    .collect(),
            })
            .filter(|s| !s.samples.is_empty() || !s.histograms.is_empty())
            .collect())
    }

    async fn label_names(&self, _min_t: i64, _max_t: i64) -> Result<Vec<String>, QueryableError> {
        Err(QueryableError::Unsupported("label_names"))
    }

    async fn label_values(
        &self,
        _name: &str,
        _min_t: i64,
        _max_t: i64,
    ) -> Result<Vec<String>, QueryableError> {
        Err(QueryableError::Unsupported("label_values"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use promql_parser::label::MatchOp;

    #[test]
    fn select_returns_floats_and_histograms_in_range() {
        let mut q = MemQueryable::new();
        let l = Labels::new([("__name__".to_string(), "m".to_string())]);
        q.add(l.clone(), &[(0, 1.0), (20, 3.0)]);
        let h = Arc::new(FloatHistogram {
            count: 2.0,
            ..Default::default()
        });
        q.add_histograms(
            l.clone(),
            &[(10, h.clone()), (20, h.clone()), (30, h.clone())],
        );
        let m = Matcher::new(MatchOp::Equal, "__name__", "m");
        let got = futures::executor::block_on(q.select(&[m], 5, 25)).expect("select");
        assert_eq!(got.len(), 1);
        assert!(got[0].samples.is_empty(), "the float at 20 was replaced");
        let ts: Vec<i64> = got[0].histograms.iter().map(|p| p.0).collect();
        assert_eq!(ts, vec![10, 20]);
    }
}
