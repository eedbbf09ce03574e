//! The object cache: decoded [`Object`]s of recently read and written keys,
//! in front of the backend, so the read of a read-modify-write (every
//! replica's write) and a hot key's get skip the backend's lookup (for
//! RocksDB, a memtable skiplist search and then the block cache) and the
//! decode.
//!
//! It is a write-through cache kept coherent by the store's lock stripes:
//! every lookup, fill, take and put-back of a key happens while its stripe
//! is held, the same stripe a write of that key holds from its read to the
//! end of its write. So an entry is always exactly what the backend holds
//! for its key. A write that fails leaves the key out of the cache (the
//! next read goes to the backend), and dropping a partition empties it.
//!
//! Bounded by weight, not count ([`StoreConfig::object_cache_bytes`]): an
//! entry weighs its stored key, its encoded object and a fixed
//! [`ENTRY_OVERHEAD`] for the allocations around them, an estimate of the
//! memory it holds. Eviction is `quick_cache`'s (CLOCK-PRO style, resistant
//! to scans), which matters only for speed: an evicted key is read from the
//! backend again. `quick_cache` splits the capacity between shards, and an
//! object heavier than one shard's part is not kept at all (with the
//! default 32 MiB, objects of some megabytes).
//!
//! [`StoreConfig::object_cache_bytes`]: super::StoreConfig::object_cache_bytes

use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::Weighter;

use crate::object::Object;

/// Bytes charged to each entry beyond its key and encoded object: the
/// cache's slot, the `Arc`, and the vectors' headers and slack of the
/// decoded object. An estimate.
pub(crate) const ENTRY_OVERHEAD: u64 = 160;

/// The entries an empty cache makes room for up front, at most: the cache
/// grows past it as entries come.
const MAX_PREALLOCATED_ENTRIES: u64 = 4096;

/// A cached object and the length of its encoding (its weight's share).
#[derive(Debug)]
pub(crate) struct Cached {
    pub(crate) object: Object,
    pub(crate) encoded_len: usize,
}

#[derive(Debug, Clone, Copy)]
struct ByWeight;

impl Weighter<Vec<u8>, Arc<Cached>> for ByWeight {
    fn weight(&self, key: &Vec<u8>, cached: &Arc<Cached>) -> u64 {
        key.len() as u64 + cached.encoded_len as u64 + ENTRY_OVERHEAD
    }
}

/// Decoded objects by stored key. Every method must be called with the
/// key's stripe held (see the module doc); `None` inside: caching is off.
pub(crate) struct ObjectCache {
    entries: Option<Cache<Vec<u8>, Arc<Cached>, ByWeight>>,
}

impl std::fmt::Debug for ObjectCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectCache")
            .field("bytes", &self.weight())
            .field("entries", &self.entries.as_ref().map_or(0, Cache::len))
            .finish()
    }
}

impl ObjectCache {
    /// A cache of at most `capacity_bytes` (by the weight above); 0 turns
    /// caching off.
    pub(crate) fn new(capacity_bytes: u64) -> ObjectCache {
        let entries = (capacity_bytes > 0).then(|| {
            let expected =
                (capacity_bytes / (ENTRY_OVERHEAD + 256)).clamp(1, MAX_PREALLOCATED_ENTRIES);
            Cache::with_weighter(expected as usize, capacity_bytes, ByWeight)
        });
        ObjectCache { entries }
    }

    /// A copy of the cached object of `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Object> {
        let cached = self.entries.as_ref()?.get(key)?;
        Some(cached.object.clone())
    }

    /// Takes `key`'s entry out, for a write that changes it and puts it
    /// back once the change is stored.
    pub(crate) fn take(&self, key: &[u8]) -> Option<Cached> {
        let (_, cached) = self.entries.as_ref()?.remove(key)?;
        // No other owner while the stripe is held: readers drop their
        // handle before they let go of it.
        Some(Arc::try_unwrap(cached).unwrap_or_else(|shared| Cached {
            object: shared.object.clone(),
            encoded_len: shared.encoded_len,
        }))
    }

    /// Caches `object` as what the backend now holds for `key`.
    pub(crate) fn put(&self, key: Vec<u8>, object: Object, encoded_len: usize) {
        if let Some(entries) = &self.entries {
            entries.insert(
                key,
                Arc::new(Cached {
                    object,
                    encoded_len,
                }),
            );
        }
    }

    /// Forgets every key.
    pub(crate) fn clear(&self) {
        if let Some(entries) = &self.entries {
            entries.clear();
        }
    }

    /// The entries' weight, in bytes (estimated as above).
    pub(crate) fn weight(&self) -> u64 {
        self.entries.as_ref().map_or(0, Cache::weight)
    }
}
