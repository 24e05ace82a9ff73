//! Per-request counters ([`QueryStats`]) and per-request limits ([`RequestBudget`]).
//!
//! One `QueryStats` and one `RequestBudget` are created per StoreAPI call and shared (by
//! reference) by every block the call touches; both are lock-free.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::error::{Error, Result};

/// What one request cost: object-store requests and bytes, and what was touched.
#[derive(Debug, Default)]
pub struct QueryStats {
    /// Object-store GET (range) requests.
    pub get_requests: AtomicU64,
    /// Bytes received from the object store.
    pub get_bytes: AtomicU64,
    /// Postings lists needed (from cache or bucket).
    pub postings_touched: AtomicU64,
    /// Series entries needed (from cache or bucket).
    pub series_touched: AtomicU64,
    /// Chunks needed.
    pub chunks_touched: AtomicU64,
    /// Cache hits (postings and series).
    pub cache_hits: AtomicU64,
    /// Cache misses (postings and series).
    pub cache_misses: AtomicU64,
    /// Blocks queried.
    pub blocks_queried: AtomicU64,
}

impl QueryStats {
    /// Counts one GET of `bytes` bytes.
    pub fn add_get(&self, bytes: u64) {
        self.get_requests.fetch_add(1, Relaxed);
        self.get_bytes.fetch_add(bytes, Relaxed);
    }

    /// A plain copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            get_requests: self.get_requests.load(Relaxed),
            get_bytes: self.get_bytes.load(Relaxed),
            postings_touched: self.postings_touched.load(Relaxed),
            series_touched: self.series_touched.load(Relaxed),
            chunks_touched: self.chunks_touched.load(Relaxed),
            cache_hits: self.cache_hits.load(Relaxed),
            cache_misses: self.cache_misses.load(Relaxed),
            blocks_queried: self.blocks_queried.load(Relaxed),
        }
    }
}

/// A copy of [`QueryStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`QueryStats::get_requests`].
    pub get_requests: u64,
    /// See [`QueryStats::get_bytes`].
    pub get_bytes: u64,
    /// See [`QueryStats::postings_touched`].
    pub postings_touched: u64,
    /// See [`QueryStats::series_touched`].
    pub series_touched: u64,
    /// See [`QueryStats::chunks_touched`].
    pub chunks_touched: u64,
    /// See [`QueryStats::cache_hits`].
    pub cache_hits: u64,
    /// See [`QueryStats::cache_misses`].
    pub cache_misses: u64,
    /// See [`QueryStats::blocks_queried`].
    pub blocks_queried: u64,
}

/// Samples assumed per chunk when checking the samples limit before chunks are decoded (Prometheus
/// cuts chunks at 120 samples).
pub const SAMPLES_PER_CHUNK_ESTIMATE: u64 = 120;

/// The per-request limits and what the request has used of them. 0 means unlimited.
#[derive(Debug, Default)]
pub struct RequestBudget {
    max_series: u64,
    max_samples: u64,
    max_bytes: u64,
    series: AtomicU64,
    samples: AtomicU64,
    bytes: AtomicU64,
}

impl RequestBudget {
    /// A budget with these maxima (0: unlimited).
    pub fn new(max_series: u64, max_samples: u64, max_bytes: u64) -> Self {
        RequestBudget {
            max_series,
            max_samples,
            max_bytes,
            ..Default::default()
        }
    }

    /// An unlimited budget.
    pub fn unlimited() -> Self {
        Self::default()
    }

    fn take(
        used: &AtomicU64,
        n: u64,
        max: u64,
        limit: &'static str,
        flag: &'static str,
    ) -> Result<()> {
        let got = used.fetch_add(n, Relaxed).saturating_add(n);
        if max > 0 && got > max {
            return Err(Error::LimitExceeded {
                limit,
                flag,
                max,
                got,
            });
        }
        Ok(())
    }

    /// Accounts `n` more series (call before fetching their chunks).
    pub fn add_series(&self, n: u64) -> Result<()> {
        Self::take(&self.series, n, self.max_series, "series", "request-series")
    }

    /// Accounts `n` more samples (estimated as chunks × [`SAMPLES_PER_CHUNK_ESTIMATE`] before
    /// the chunks are fetched).
    pub fn add_samples(&self, n: u64) -> Result<()> {
        Self::take(
            &self.samples,
            n,
            self.max_samples,
            "samples",
            "request-samples",
        )
    }

    /// Accounts `n` more bytes fetched from the bucket or the cache (postings, series, chunks).
    pub fn add_bytes(&self, n: u64) -> Result<()> {
        Self::take(&self.bytes, n, self.max_bytes, "bytes", "request-bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_fails_past_the_limit_and_names_it() {
        let b = RequestBudget::new(2, 0, 0);
        assert!(b.add_series(2).is_ok());
        let e = b.add_series(1).unwrap_err().to_string();
        assert!(e.contains("series limit 2 exceeded"), "{e}");
        assert!(e.contains("--store.limits.request-series"), "{e}");
        assert!(b.add_samples(u64::MAX / 2).is_ok(), "samples unlimited");
    }
}
