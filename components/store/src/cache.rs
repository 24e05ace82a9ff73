//! Size-bounded caches for postings lists and series entries, keyed per block.
//!
//! CONTRACT (skeleton).

use bytes::Bytes;
use ulid::Ulid;

/// What is cached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// The raw postings list of `name=value` in `block`.
    Postings {
        /// The block.
        block: Ulid,
        /// Label name.
        name: String,
        /// Label value.
        value: String,
    },
    /// The raw series entry at `series` (its reference) in `block`.
    Series {
        /// The block.
        block: Ulid,
        /// Series reference.
        series: u64,
    },
}

/// A cache of index bytes. Implementations: [`NoCache`], `LruCache` (in memory).
pub trait IndexCache: Send + Sync + std::fmt::Debug {
    /// The cached bytes of `key`.
    fn get(&self, key: &CacheKey) -> Option<Bytes>;
    /// Stores `value` under `key` (may evict others, or refuse an item larger than the cache).
    fn put(&self, key: CacheKey, value: Bytes);
}

/// Caches nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCache;

impl IndexCache for NoCache {
    fn get(&self, _: &CacheKey) -> Option<Bytes> {
        None
    }
    fn put(&self, _: CacheKey, _: Bytes) {}
}
