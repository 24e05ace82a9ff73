//! Size-bounded caches for postings lists and series entries (the index cache) and for chunks
//! (the chunk cache), keyed per block.
//!
//! [`LruCache`] is the in-memory implementation, bounded by bytes; [`NoCache`] disables caching.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
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
    /// The chunk at `chunk` (its reference) in `block`: its encoding byte, then its data.
    Chunk {
        /// The block.
        block: Ulid,
        /// Chunk reference.
        chunk: u64,
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

/// The `item_type` label of the cache metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ItemType {
    item_type: &'static str,
}

impl CacheKey {
    fn item_type(&self) -> ItemType {
        ItemType {
            item_type: match self {
                CacheKey::Postings { .. } => "postings",
                CacheKey::Series { .. } => "series",
                CacheKey::Chunk { .. } => "chunks",
            },
        }
    }

    /// Bytes the key is accounted as (its strings and fixed fields).
    fn size(&self) -> u64 {
        let fixed = std::mem::size_of::<CacheKey>() as u64;
        match self {
            CacheKey::Postings { name, value, .. } => fixed + (name.len() + value.len()) as u64,
            CacheKey::Series { .. } | CacheKey::Chunk { .. } => fixed,
        }
    }
}

/// The metrics of an [`LruCache`].
#[derive(Debug, Clone, Default)]
struct CacheMetrics {
    requests: Family<ItemType, Counter>,
    hits: Family<ItemType, Counter>,
    evictions: Family<ItemType, Counter>,
    items: Family<ItemType, Gauge>,
    bytes: Family<ItemType, Gauge>,
}

#[derive(Debug, Default)]
struct LruState {
    /// Entry and its last-use tick.
    map: HashMap<CacheKey, (Bytes, u64)>,
    /// Use order: tick → key.
    order: BTreeMap<u64, CacheKey>,
    tick: u64,
    bytes: u64,
}

/// An in-memory cache bounded by bytes (values plus keys), evicting the least recently used
/// entries; items larger than `max_item_bytes` are not stored.
#[derive(Debug)]
pub struct LruCache {
    /// The metric names' middle part: `index` or `chunk`.
    name: &'static str,
    max_bytes: u64,
    max_item_bytes: u64,
    state: Mutex<LruState>,
    metrics: CacheMetrics,
}

impl LruCache {
    /// An index cache of at most `max_bytes`; items above a quarter of it are refused.
    pub fn new(max_bytes: u64) -> Self {
        Self::with_max_item_bytes(max_bytes, max_bytes / 4)
    }

    /// A chunk cache of at most `max_bytes` (its metrics are `strata_store_chunk_cache_*`);
    /// items above a quarter of it are refused.
    pub fn chunks(max_bytes: u64) -> Self {
        LruCache {
            name: "chunk",
            ..Self::new(max_bytes)
        }
    }

    /// An index cache of at most `max_bytes` refusing items (key and value) above `max_item_bytes`.
    pub fn with_max_item_bytes(max_bytes: u64, max_item_bytes: u64) -> Self {
        LruCache {
            name: "index",
            max_bytes,
            max_item_bytes: max_item_bytes.min(max_bytes),
            state: Mutex::new(LruState::default()),
            metrics: CacheMetrics::default(),
        }
    }

    /// Registers `strata_store_<name>_cache_{requests,hits,evictions}_total`,
    /// `strata_store_<name>_cache_items` and `strata_store_<name>_cache_bytes` (`<name>`:
    /// `index` or `chunk`), each by `item_type` (`postings`, `series`, `chunks`).
    pub fn register(&self, registry: &mut Registry) {
        let m = &self.metrics;
        let n = self.name;
        registry.register(
            format!("strata_store_{n}_cache_requests"),
            format!("Lookups in the {n} cache."),
            m.requests.clone(),
        );
        registry.register(
            format!("strata_store_{n}_cache_hits"),
            format!("Lookups in the {n} cache that found the item."),
            m.hits.clone(),
        );
        registry.register(
            format!("strata_store_{n}_cache_evictions"),
            format!("Items evicted from the {n} cache to make room."),
            m.evictions.clone(),
        );
        registry.register(
            format!("strata_store_{n}_cache_items"),
            format!("Items in the {n} cache."),
            m.items.clone(),
        );
        registry.register(
            format!("strata_store_{n}_cache_bytes"),
            format!("Bytes (keys and values) in the {n} cache."),
            m.bytes.clone(),
        );
    }

    /// Bytes currently held (keys and values).
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Items currently held.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remove_entry(&self, st: &mut LruState, key: &CacheKey) -> bool {
        let Some((v, tick)) = st.map.remove(key) else {
            return false;
        };
        st.order.remove(&tick);
        let size = key.size() + v.len() as u64;
        st.bytes -= size;
        let t = key.item_type();
        self.metrics.items.get_or_create(&t).dec();
        self.metrics.bytes.get_or_create(&t).dec_by(size as i64);
        true
    }
}

impl IndexCache for LruCache {
    fn get(&self, key: &CacheKey) -> Option<Bytes> {
        let t = key.item_type();
        self.metrics.requests.get_or_create(&t).inc();
        let mut st = self.lock();
        st.tick += 1;
        let tick = st.tick;
        let (v, old) = {
            let (v, last) = st.map.get_mut(key)?;
            let old = std::mem::replace(last, tick);
            (v.clone(), old)
        };
        if let Some(k) = st.order.remove(&old) {
            st.order.insert(tick, k);
        }
        self.metrics.hits.get_or_create(&t).inc();
        Some(v)
    }

    fn put(&self, key: CacheKey, value: Bytes) {
        let size = key.size() + value.len() as u64;
        if size > self.max_item_bytes {
            return;
        }
        let mut st = self.lock();
        self.remove_entry(&mut st, &key);
        while st.bytes + size > self.max_bytes {
            let Some(oldest) = st.order.values().next().cloned() else {
                break;
            };
            if self.remove_entry(&mut st, &oldest) {
                self.metrics
                    .evictions
                    .get_or_create(&oldest.item_type())
                    .inc();
            }
        }
        st.tick += 1;
        let tick = st.tick;
        let t = key.item_type();
        st.order.insert(tick, key.clone());
        st.map.insert(key, (value, tick));
        st.bytes += size;
        self.metrics.items.get_or_create(&t).inc();
        self.metrics.bytes.get_or_create(&t).inc_by(size as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(s: u64) -> CacheKey {
        CacheKey::Series {
            block: Ulid::nil(),
            series: s,
        }
    }

    #[test]
    fn evicts_least_recently_used_within_the_byte_bound() {
        let ks = series(0).size();
        let c = LruCache::with_max_item_bytes(3 * (ks + 100), 1_000);
        for i in 0..3 {
            c.put(series(i), Bytes::from(vec![i as u8; 100]));
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.bytes(), 3 * (ks + 100));
        // Touch 0, so 1 is the oldest.
        assert_eq!(c.get(&series(0)).unwrap()[0], 0);
        c.put(series(3), Bytes::from(vec![3; 100]));
        assert!(c.get(&series(1)).is_none(), "LRU entry evicted");
        assert!(c.get(&series(0)).is_some());
        assert!(c.get(&series(2)).is_some());
        assert!(c.get(&series(3)).is_some());
        assert!(c.bytes() <= 3 * (ks + 100));
        // Replacing a key does not double count.
        c.put(series(3), Bytes::from(vec![9; 50]));
        assert_eq!(c.get(&series(3)).unwrap().len(), 50);
        assert_eq!(c.bytes(), 2 * (ks + 100) + ks + 50);
        // Items over the item limit are refused.
        c.put(series(9), Bytes::from(vec![0; 2_000]));
        assert!(c.get(&series(9)).is_none());
    }

    #[test]
    fn postings_keys_count_their_strings_and_metrics_are_exported() {
        let mut reg = Registry::default();
        let c = LruCache::new(10_000);
        c.register(&mut reg);
        let k = CacheKey::Postings {
            block: Ulid::nil(),
            name: "job".into(),
            value: "api".into(),
        };
        assert!(c.get(&k).is_none());
        c.put(k.clone(), Bytes::from_static(b"12345678"));
        assert_eq!(c.bytes(), k.size() + 8);
        assert!(k.size() > series(1).size());
        assert!(c.get(&k).is_some());
        for i in 0..400 {
            c.put(series(i), Bytes::from(vec![0; 100]));
        }
        assert!(c.bytes() <= 10_000);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains(r#"strata_store_index_cache_requests_total{item_type="postings"} 2"#),
            "{out}"
        );
        assert!(out.contains(r#"strata_store_index_cache_hits_total{item_type="postings"} 1"#));
        assert!(out.contains(r#"strata_store_index_cache_evictions_total{item_type="series"}"#));
        assert!(out.contains(r#"strata_store_index_cache_items{item_type="series"}"#));
        assert!(out.contains(r#"strata_store_index_cache_bytes{item_type="postings"}"#));
    }
}
