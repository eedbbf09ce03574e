//! The storage engines: the [`Store`] trait, a RocksDB engine and an in-memory engine.
//!
//! A [`Store`] holds three things for one node:
//!
//! * **data** — one [`Object`] (sibling set plus causal context) per
//!   `(partition, bucket, key)`. Every partition is one contiguous key range,
//!   so handing a partition off is a range scan and dropping it is a range
//!   delete.
//! * **hints** — objects a fallback accepted on behalf of another node, queued
//!   per target node in the order they were added, bounded per target.
//! * **node metadata** — the node id, the generation, the actor id of each
//!   partition replica, the hybrid logical clock's persisted ceiling, and a
//!   small generic key/value space for the rest.
//!
//! Two engines implement it: [`RocksStore`](rocks::RocksStore) (production,
//! behind the default `rocksdb` feature) and [`MemoryStore`] (the simulator;
//! it can simulate a crash that loses every write not yet synced). Both share
//! one implementation of the store's logic over a small byte-level backend,
//! so they differ only where their storage does: what survives a crash and
//! how fast it is. One conformance suite (`tests/conformance.rs`) runs against
//! both.
//!
//! The API is synchronous: RocksDB calls block, so the runtime calls the store
//! from blocking threads, never from async worker threads.
//!
//! What the store deliberately does not do: it does not mint dots, read
//! clocks or draw random numbers (ids come in as arguments), it does not
//! interpret values, and it does not decide *what* to write — the closures
//! passed to [`Store::read_modify_write`] and [`Store::update`] do.

mod cache;
mod error;
mod keys;
mod kv;
mod memory;
#[cfg(feature = "rocksdb")]
pub mod rocks;

use std::sync::Arc;

use chorus_ring::PartitionId;
use uuid::Uuid;

use crate::hlc::Timestamp;
use crate::object::Object;
use crate::version::ActorId;

pub use error::StoreError;
pub use keys::{
    data_key, MAX_BATCH_KEYS, MAX_BUCKET_LEN, MAX_KEY_LEN, MAX_META_NAME_LEN, MAX_META_VALUE_LEN,
};
pub use memory::MemoryStore;
#[cfg(feature = "rocksdb")]
pub use rocks::{RocksConfig, RocksStore};

/// The most hints kept for one target node unless configured otherwise.
pub const DEFAULT_MAX_HINTS_PER_TARGET: usize = 100_000;

/// Addresses one stored object: partition, bucket and key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyRef<'a> {
    pub partition: PartitionId,
    pub bucket: &'a [u8],
    pub key: &'a [u8],
}

impl<'a> KeyRef<'a> {
    pub fn new(partition: PartitionId, bucket: &'a [u8], key: &'a [u8]) -> Self {
        KeyRef {
            partition,
            bucket,
            key,
        }
    }
}

/// Whether a write is fsynced before the call returns.
///
/// A synced write also makes every write that completed before it durable
/// (both engines model a write-ahead log: a sync flushes the log up to and
/// including this write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Durability {
    /// In the write-ahead log, not yet fsynced: survives a process crash, not
    /// necessarily a machine crash or power loss.
    #[default]
    Buffered,
    /// Fsynced before the call returns.
    Sync,
}

impl Durability {
    /// `Sync` when `sync` is true, as in the API's `sync=true` parameter.
    pub fn from_sync(sync: bool) -> Self {
        if sync {
            Durability::Sync
        } else {
            Durability::Buffered
        }
    }
}

/// What a read-modify-write closure decided about the object it was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Store the object as the closure left it. An object left empty
    /// ([`Object::is_empty`]: no sibling, no context) removes the key.
    Write,
    /// Store nothing; whatever the closure did to the object is discarded.
    Keep,
}

/// The decision of an [`Store::update`] closure together with the value it
/// wants handed back to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update<R> {
    Write(R),
    Keep(R),
}

/// One object found by a partition scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub bucket: Vec<u8>,
    pub key: Vec<u8>,
    pub object: Object,
}

/// One queued hint: an object to deliver to the node it was meant for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// Position in the target's queue; strictly increasing in the order hints
    /// were added, never reused (also not across restarts).
    pub seq: u64,
    pub partition: PartitionId,
    pub bucket: Vec<u8>,
    pub key: Vec<u8>,
    pub object: Object,
    /// The durability the write was acknowledged with, given to
    /// [`Store::add_hint`]: a hint of a `sync=true` write is delivered with
    /// `sync=true` and deleted only on a durable acknowledgement (design:
    /// hinted handoff keeps the promise the acknowledgement made).
    pub durability: Durability,
}

/// Settings shared by every engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// The most hints queued for one target node; adding more fails with
    /// [`StoreError::HintQueueFull`].
    pub max_hints_per_target: usize,
    /// Bytes of decoded objects the store keeps in memory for the keys
    /// read and written last, so a write's read and a hot key's get skip
    /// the engine's lookup; 0 turns the cache off. Estimated per entry as
    /// its stored key, its encoded object and 160 bytes of overhead.
    /// [`DEFAULT_OBJECT_CACHE_BYTES`] by default.
    pub object_cache_bytes: u64,
}

/// The object cache's default size, 32 MiB (see
/// [`StoreConfig::object_cache_bytes`]).
pub const DEFAULT_OBJECT_CACHE_BYTES: u64 = 32 << 20;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_hints_per_target: DEFAULT_MAX_HINTS_PER_TARGET,
            object_cache_bytes: DEFAULT_OBJECT_CACHE_BYTES,
        }
    }
}

/// Size figures of a store, for metrics: RocksDB's properties of the same
/// names, summed over its column families, and the object cache's. An
/// engine without such a figure (the in-memory one, for RocksDB's)
/// reports `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// `rocksdb.estimate-live-data-size`: bytes of live data in SST files,
    /// an estimate.
    pub live_data_bytes: Option<u64>,
    /// `rocksdb.cur-size-all-mem-tables`: bytes held by the active and the
    /// not yet flushed memtables.
    pub memtable_bytes: Option<u64>,
    /// `rocksdb.estimate-pending-compaction-bytes`: bytes compaction has to
    /// rewrite to bring every level down to its target size, an estimate.
    pub pending_compaction_bytes: Option<u64>,
    /// `rocksdb.block-cache-usage`: bytes of the block cache in use (data,
    /// index and filter blocks), bounded by
    /// [`RocksConfig::block_cache_bytes`](crate::store::RocksConfig::block_cache_bytes).
    pub block_cache_bytes: Option<u64>,
    /// Bytes of the object cache in use, as it estimates them, bounded by
    /// [`StoreConfig::object_cache_bytes`]. Every engine has it.
    pub object_cache_bytes: Option<u64>,
}

/// A node's storage engine.
///
/// # Contract
///
/// **Keys.** A bucket is at most [`MAX_BUCKET_LEN`] bytes and a key at most
/// [`MAX_KEY_LEN`] bytes; longer ones are refused with
/// [`StoreError::BucketTooLong`] / [`StoreError::KeyTooLong`] before anything
/// is read or written. Empty buckets and keys are allowed.
///
/// **Atomicity.** [`read_modify_write`](Store::read_modify_write) is atomic with
/// respect to every other write of the same key through the same store: no
/// other write of that key happens between the read the closure sees and the
/// write of what it decides. Both engines use lock striping: the encoded key
/// is hashed onto one of a fixed set of mutexes, held from the read to the
/// end of the write (unrelated keys that share a stripe wait for each other;
/// that costs throughput, never correctness). Batches lock all their stripes
/// in ascending order, so batches and single writes cannot deadlock.
/// Closures run while the stripe is held: they must not call back into the
/// store.
///
/// **Durability.** Every data and hint write takes a [`Durability`]. A write
/// that returned `Ok` with [`Durability::Sync`] survives a machine crash, and
/// so does every write that returned before it. A write that returned `Ok`
/// with [`Durability::Buffered`] survives a process crash (`kill -9`) on the
/// RocksDB engine and may be lost by a machine crash. Metadata writes are
/// always synced. A write that returned an error wrote nothing.
///
/// **Corruption.** Stored bytes that do not decode give
/// [`StoreError::CorruptObject`] (data) or another `Corrupt*` variant, naming
/// the record; never a panic. A read-modify-write of a corrupt key fails and
/// leaves the stored bytes alone.
///
/// **Order.** A partition scan returns keys in stored order: by bucket
/// length, then bucket bytes, then key bytes (the encoding is the partition
/// id, the bucket's length in one byte, the bucket, the key). The same order
/// on every engine, so a scan can resume on any of them.
///
/// **Concurrency with drops.** [`drop_partition`](Store::drop_partition) is not
/// ordered with concurrent writes to the same partition; the caller stops
/// writing to a partition before dropping it.
pub trait Store: Send + Sync + std::fmt::Debug {
    // ----- data -----

    /// The object stored under `key`, or `None` if the key has no object.
    fn get(&self, key: KeyRef<'_>) -> Result<Option<Object>, StoreError>;

    /// Reads the object under `key` (an empty [`Object`] if there is none),
    /// hands it to `f`, and stores it if `f` returns [`Decision::Write`] —
    /// atomically with respect to other writes of the key. `f` is called
    /// exactly once, unless reading fails, in which case it is not called.
    /// Returns `f`'s decision.
    ///
    /// This is the object-safe form; [`update`](Store::update) is the
    /// convenient one.
    fn read_modify_write(
        &self,
        key: KeyRef<'_>,
        durability: Durability,
        f: &mut dyn FnMut(&mut Object) -> Decision,
    ) -> Result<Decision, StoreError>;

    /// [`read_modify_write`](Store::read_modify_write) for several keys in one
    /// atomic batch: all of them are written, or (on error) none. `f` is
    /// called once per key with the key's index in `keys`, in order. A key
    /// listed twice sees the object as the earlier call left it. At most
    /// [`MAX_BATCH_KEYS`] keys. Returns each key's decision.
    fn read_modify_write_batch(
        &self,
        keys: &[KeyRef<'_>],
        durability: Durability,
        f: &mut dyn FnMut(usize, &mut Object) -> Decision,
    ) -> Result<Vec<Decision>, StoreError>;

    /// Joins `remote` (another replica's object for the same key) into the
    /// stored one with [`Object::merge`] and stores the result if it changed.
    /// Returns whether anything changed.
    fn merge(
        &self,
        key: KeyRef<'_>,
        remote: &Object,
        durability: Durability,
    ) -> Result<bool, StoreError> {
        let decision = self.read_modify_write(key, durability, &mut |local: &mut Object| {
            if local.merge(remote) {
                Decision::Write
            } else {
                Decision::Keep
            }
        })?;
        Ok(decision == Decision::Write)
    }

    /// [`merge`](Store::merge) of several entries in one atomic batch (a chunk
    /// of a handoff or an anti-entropy exchange). Returns, per entry, whether
    /// it changed the stored object.
    fn merge_batch(
        &self,
        entries: &[(KeyRef<'_>, &Object)],
        durability: Durability,
    ) -> Result<Vec<bool>, StoreError> {
        let keys: Vec<KeyRef<'_>> = entries.iter().map(|(key, _)| *key).collect();
        let decisions = self.read_modify_write_batch(&keys, durability, &mut |i, local| {
            if local.merge(entries[i].1) {
                Decision::Write
            } else {
                Decision::Keep
            }
        })?;
        Ok(decisions
            .into_iter()
            .map(|d| d == Decision::Write)
            .collect())
    }

    /// [`read_modify_write`](Store::read_modify_write) with a closure that also
    /// returns a value to the caller.
    ///
    /// ```
    /// # use chorus_storage::store::{Store, MemoryStore, KeyRef, Durability, Update, StoreConfig};
    /// # use chorus_storage::version::{ActorId, Dot};
    /// # use chorus_storage::hlc::Timestamp;
    /// # use chorus_ring::PartitionId;
    /// let store = MemoryStore::new(StoreConfig::default());
    /// let key = KeyRef::new(PartitionId(7), b"users", b"alice");
    /// let written = store.update(key, Durability::Buffered, |object| {
    ///     let context = object.context().clone();
    ///     let dot = Dot::new(ActorId(1), 1);
    ///     match object.write_in(&context, dot, Timestamp::new(1, 0), Some(b"hi".to_vec())) {
    ///         Ok(()) => Update::Write(Ok(object.clone())),
    ///         Err(refused) => Update::Keep(Err(refused)),
    ///     }
    /// })?;
    /// assert_eq!(written.unwrap().siblings().len(), 1);
    /// # Ok::<(), chorus_storage::store::StoreError>(())
    /// ```
    fn update<R, F>(&self, key: KeyRef<'_>, durability: Durability, f: F) -> Result<R, StoreError>
    where
        Self: Sized,
        F: FnOnce(&mut Object) -> Update<R>,
    {
        let mut f = Some(f);
        let mut out = None;
        self.read_modify_write(key, durability, &mut |object| {
            let f = f.take().expect("read_modify_write calls its closure once");
            match f(object) {
                Update::Write(r) => {
                    out = Some(r);
                    Decision::Write
                }
                Update::Keep(r) => {
                    out = Some(r);
                    Decision::Keep
                }
            }
        })?;
        Ok(out.expect("read_modify_write called its closure"))
    }

    /// Up to `limit` objects of one partition in stored order (see the trait
    /// doc), starting after `(bucket, key)` when `after` is given. Fewer than
    /// `limit` entries means the partition's range is exhausted. A corrupt
    /// entry ends the page with an error naming it; resuming after it skips it.
    fn scan_partition(
        &self,
        partition: PartitionId,
        after: Option<(&[u8], &[u8])>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// Removes every object of `partition` and its actor id (a replica that
    /// starts the partition again is a new actor), durably.
    fn drop_partition(&self, partition: PartitionId) -> Result<(), StoreError>;

    /// Begins a new *epoch*: forgets the actor id of every partition,
    /// durably, so each replica draws a fresh actor before it mints its next
    /// dot. Data is kept. Called when the local state may have lost versions
    /// this node minted or acknowledged (an unclean shutdown, a restored or
    /// copied data directory): a new actor can never mint a dot that an old
    /// one already used (Riak's vnode ids after a crash, for the same reason).
    fn clear_partition_actors(&self) -> Result<(), StoreError>;

    /// Makes every write that completed so far durable (fsync of the log).
    fn sync(&self) -> Result<(), StoreError>;

    /// Makes the writes made since the last flush as durable as they asked:
    /// in the operating system's hands for [`Durability::Buffered`],
    /// fsynced if any asked for [`Durability::Sync`]. Only a store opened
    /// for group commit (`RocksConfig::group_commit`) defers anything to
    /// here; its caller must flush before it acknowledges what the writes
    /// decided. For other stores every write is already as durable as it
    /// asked when it returns, and this does nothing.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether the next [`Store::flush`] may wait for an fsync of the log:
    /// a write deferred since the last flush asked for
    /// [`Durability::Sync`], or another caller's flush, which this one
    /// would wait for, is under way. A caller that must not block for long
    /// (an async runtime's worker) can move that flush to where blocking
    /// is allowed. Always false for a store that defers nothing.
    fn owes_sync(&self) -> bool {
        false
    }

    // ----- hints -----

    /// Queues `object` for delivery to `target` and returns its sequence
    /// number. Fails with [`StoreError::HintQueueFull`] when `target` already
    /// has the configured maximum of hints; nothing is dropped silently.
    fn add_hint(
        &self,
        target: Uuid,
        key: KeyRef<'_>,
        object: &Object,
        durability: Durability,
    ) -> Result<u64, StoreError>;

    /// Up to `limit` of `target`'s hints in the order they were added,
    /// starting after sequence number `after` when given.
    fn hints(
        &self,
        target: Uuid,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Hint>, StoreError>;

    /// Removes one hint once it was delivered. Returns whether it was there.
    fn delete_hint(
        &self,
        target: Uuid,
        seq: u64,
        durability: Durability,
    ) -> Result<bool, StoreError>;

    /// The number of hints queued for `target`.
    fn hint_count(&self, target: Uuid) -> Result<usize, StoreError>;

    /// Every target with queued hints and how many, in target order.
    fn hint_counts(&self) -> Result<Vec<(Uuid, usize)>, StoreError>;

    // ----- node metadata (always synced) -----

    /// The node's id: the stored one, or `candidate` (generated by the caller)
    /// which is stored and returned when there is none yet.
    fn node_id(&self, candidate: Uuid) -> Result<Uuid, StoreError>;

    /// The current generation (0 before the first [`bump_generation`](Store::bump_generation)).
    fn generation(&self) -> Result<u64, StoreError>;

    /// Increments the generation, durably, and returns the new value. Called
    /// once at every start.
    fn bump_generation(&self) -> Result<u64, StoreError>;

    /// Raises the generation to at least `at_least`, durably, and returns the
    /// stored value (never lowers it). Used when peers hold a newer
    /// generation of this node than its data directory does.
    fn raise_generation(&self, at_least: u64) -> Result<u64, StoreError>;

    /// The actor id of this node's replica of `partition`, if it has one.
    fn partition_actor(&self, partition: PartitionId) -> Result<Option<ActorId>, StoreError>;

    /// The actor id of this node's replica of `partition`; when there is none
    /// (the replica starts on empty state), `candidate` — a fresh id drawn by
    /// the caller — is stored and returned.
    fn ensure_partition_actor(
        &self,
        partition: PartitionId,
        candidate: ActorId,
    ) -> Result<ActorId, StoreError>;

    /// The persisted HLC ceiling, if any.
    fn hlc_ceiling(&self) -> Result<Option<Timestamp>, StoreError>;

    /// Raises the persisted HLC ceiling to `ceiling` (never lowers it) and
    /// returns the stored value.
    fn raise_hlc_ceiling(&self, ceiling: Timestamp) -> Result<Timestamp, StoreError>;

    /// A generic metadata value. Names are at most [`MAX_META_NAME_LEN`]
    /// bytes, values at most [`MAX_META_VALUE_LEN`].
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores a generic metadata value.
    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Removes a generic metadata value. Returns whether it was there.
    fn delete_meta(&self, name: &str) -> Result<bool, StoreError>;

    // ----- figures -----

    /// Size figures of the engine, for metrics; cheap (no I/O).
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}

// Borrowed and shared stores are stores: `&dyn Store`, `Arc<RocksStore>`,
// `Box<dyn Store>`.
/// Implements [`Store`] for a pointer to a store by forwarding every method.
macro_rules! forward_store {
    ($($header:tt)*) => {
        $($header)* {
        fn get(&self, key: KeyRef<'_>) -> Result<Option<Object>, StoreError> {
            (**self).get(key)
        }
        fn read_modify_write(
            &self,
            key: KeyRef<'_>,
            durability: Durability,
            f: &mut dyn FnMut(&mut Object) -> Decision,
        ) -> Result<Decision, StoreError> {
            (**self).read_modify_write(key, durability, f)
        }
        fn read_modify_write_batch(
            &self,
            keys: &[KeyRef<'_>],
            durability: Durability,
            f: &mut dyn FnMut(usize, &mut Object) -> Decision,
        ) -> Result<Vec<Decision>, StoreError> {
            (**self).read_modify_write_batch(keys, durability, f)
        }
        fn merge(&self, key: KeyRef<'_>, remote: &Object, durability: Durability) -> Result<bool, StoreError> {
            (**self).merge(key, remote, durability)
        }
        fn merge_batch(
            &self,
            entries: &[(KeyRef<'_>, &Object)],
            durability: Durability,
        ) -> Result<Vec<bool>, StoreError> {
            (**self).merge_batch(entries, durability)
        }
        fn scan_partition(
            &self,
            partition: PartitionId,
            after: Option<(&[u8], &[u8])>,
            limit: usize,
        ) -> Result<Vec<Entry>, StoreError> {
            (**self).scan_partition(partition, after, limit)
        }
        fn drop_partition(&self, partition: PartitionId) -> Result<(), StoreError> {
            (**self).drop_partition(partition)
        }
        fn clear_partition_actors(&self) -> Result<(), StoreError> {
            (**self).clear_partition_actors()
        }
        fn sync(&self) -> Result<(), StoreError> {
            (**self).sync()
        }
        fn flush(&self) -> Result<(), StoreError> {
            (**self).flush()
        }
        fn owes_sync(&self) -> bool {
            (**self).owes_sync()
        }
        fn add_hint(
            &self,
            target: Uuid,
            key: KeyRef<'_>,
            object: &Object,
            durability: Durability,
        ) -> Result<u64, StoreError> {
            (**self).add_hint(target, key, object, durability)
        }
        fn hints(&self, target: Uuid, after: Option<u64>, limit: usize) -> Result<Vec<Hint>, StoreError> {
            (**self).hints(target, after, limit)
        }
        fn delete_hint(&self, target: Uuid, seq: u64, durability: Durability) -> Result<bool, StoreError> {
            (**self).delete_hint(target, seq, durability)
        }
        fn hint_count(&self, target: Uuid) -> Result<usize, StoreError> {
            (**self).hint_count(target)
        }
        fn hint_counts(&self) -> Result<Vec<(Uuid, usize)>, StoreError> {
            (**self).hint_counts()
        }
        fn node_id(&self, candidate: Uuid) -> Result<Uuid, StoreError> {
            (**self).node_id(candidate)
        }
        fn generation(&self) -> Result<u64, StoreError> {
            (**self).generation()
        }
        fn bump_generation(&self) -> Result<u64, StoreError> {
            (**self).bump_generation()
        }
        fn raise_generation(&self, at_least: u64) -> Result<u64, StoreError> {
            (**self).raise_generation(at_least)
        }
        fn partition_actor(&self, partition: PartitionId) -> Result<Option<ActorId>, StoreError> {
            (**self).partition_actor(partition)
        }
        fn ensure_partition_actor(
            &self,
            partition: PartitionId,
            candidate: ActorId,
        ) -> Result<ActorId, StoreError> {
            (**self).ensure_partition_actor(partition, candidate)
        }
        fn hlc_ceiling(&self) -> Result<Option<Timestamp>, StoreError> {
            (**self).hlc_ceiling()
        }
        fn raise_hlc_ceiling(&self, ceiling: Timestamp) -> Result<Timestamp, StoreError> {
            (**self).raise_hlc_ceiling(ceiling)
        }
        fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
            (**self).get_meta(name)
        }
        fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
            (**self).put_meta(name, value)
        }
        fn delete_meta(&self, name: &str) -> Result<bool, StoreError> {
            (**self).delete_meta(name)
        }
        fn stats(&self) -> StoreStats {
            (**self).stats()
        }
        }
    };
}

forward_store!(impl<S: Store + ?Sized> Store for &S);
forward_store!(impl<S: Store + ?Sized> Store for Box<S>);
forward_store!(impl<S: Store + ?Sized> Store for Arc<S>);
