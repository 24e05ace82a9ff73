//! [`MemSource`]: a [`StoreSource`] over in-memory series, for tests and for running the API
//! without stores.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use promql_parser::label::Matcher;
use strata_promql::{Labels, MemQueryable, Queryable, QueryableError, SelectHints, Series};

use crate::{MetricMetadata, QueryOptions, StoreSource, StoreStatus, StoreView};

/// Serves every request from one [`MemQueryable`]; lists fixed store statuses and adds fixed
/// warnings to every view.
#[derive(Debug, Clone, Default)]
pub struct MemSource {
    data: Arc<MemQueryable>,
    stores: Vec<StoreStatus>,
    warnings: Vec<String>,
    metadata: Arc<MetricMetadata>,
}

impl MemSource {
    /// A source over `data`, with no stores and no warnings.
    pub fn new(data: MemQueryable) -> Self {
        Self {
            data: Arc::new(data),
            ..Default::default()
        }
    }

    /// Sets what `stores()` lists.
    pub fn with_stores(mut self, stores: Vec<StoreStatus>) -> Self {
        self.stores = stores;
        self
    }

    /// Sets the metric metadata views serve.
    pub fn with_metadata(mut self, metadata: MetricMetadata) -> Self {
        self.metadata = Arc::new(metadata);
        self
    }

    /// Sets the warnings every view reports.
    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }
}

impl StoreSource for MemSource {
    fn view(&self, _opts: &QueryOptions) -> Arc<dyn StoreView> {
        Arc::new(MemView {
            data: self.data.clone(),
            warnings: self.warnings.clone(),
            metadata: self.metadata.clone(),
        })
    }

    fn stores(&self) -> Vec<StoreStatus> {
        self.stores.clone()
    }
}

struct MemView {
    data: Arc<MemQueryable>,
    warnings: Vec<String>,
    metadata: Arc<MetricMetadata>,
}

impl MemView {
    async fn matching(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<Labels>, QueryableError> {
        Ok(self
            .data
            .select(matchers, min_t, max_t)
            .await?
            .into_iter()
            .map(|s| s.labels)
            .collect())
    }
}

#[async_trait]
impl Queryable for MemView {
    async fn select(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<Series>, QueryableError> {
        self.data.select(matchers, min_t, max_t).await
    }

    async fn select_with_hints(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
        _hints: &SelectHints,
    ) -> Result<Vec<Series>, QueryableError> {
        self.data.select(matchers, min_t, max_t).await
    }

    async fn label_names(&self, min_t: i64, max_t: i64) -> Result<Vec<String>, QueryableError> {
        self.label_names_matching(&[], min_t, max_t).await
    }

    async fn label_values(
        &self,
        name: &str,
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<String>, QueryableError> {
        self.label_values_matching(name, &[], min_t, max_t).await
    }
}

#[async_trait]
impl StoreView for MemView {
    async fn metric_metadata(
        &self,
        metric: Option<&str>,
        limit: Option<usize>,
    ) -> Result<MetricMetadata, QueryableError> {
        Ok(self
            .metadata
            .iter()
            .filter(|(name, _)| metric.is_none_or(|m| m == name.as_str()))
            .take(limit.unwrap_or(usize::MAX))
            .map(|(n, m)| (n.clone(), m.clone()))
            .collect())
    }

    async fn series_labels(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<Labels>, QueryableError> {
        self.matching(matchers, min_t, max_t).await
    }

    async fn label_names_matching(
        &self,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<String>, QueryableError> {
        let names: BTreeSet<String> = self
            .matching(matchers, min_t, max_t)
            .await?
            .iter()
            .flat_map(|l| l.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>())
            .collect();
        Ok(names.into_iter().collect())
    }

    async fn label_values_matching(
        &self,
        name: &str,
        matchers: &[Matcher],
        min_t: i64,
        max_t: i64,
    ) -> Result<Vec<String>, QueryableError> {
        let values: BTreeSet<String> = self
            .matching(matchers, min_t, max_t)
            .await?
            .iter()
            .filter_map(|l| l.get(name).map(str::to_string))
            .collect();
        Ok(values.into_iter().collect())
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}
