//! The store's logic, written once over a byte-level backend.
//!
//! RocksDB and the in-memory maps each provide a [`KvBackend`]: three ordered
//! byte maps (the column families `data`, `hints`, `meta`), atomic
//! multi-operation writes with a durability flag, ordered prefix scans, and a
//! sync. [`KvStore`] builds the
//! [`Store`](super::Store) contract on top: key encoding and bounds, lock
//! striping for read-modify-write, the object cache (kept coherent by the
//! stripes, see [`super::cache`]), hint queues with their bound, metadata.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::ControlFlow;
use std::sync::{Mutex, MutexGuard};

use chorus_ring::PartitionId;
use uuid::Uuid;

use super::cache::{Cached, ObjectCache};
use super::keys::{self, meta};
use super::{Decision, Durability, Entry, Hint, KeyRef, StoreConfig, StoreError, StoreStats};
use crate::hlc::Timestamp;
use crate::object::{Object, MAX_DECODED_SIBLINGS, MAX_ENCODED_LEN};
use crate::version::ActorId;

/// The number of mutexes keys are striped over. Two keys that share a stripe
/// serialise their writes; with 1024 stripes that is rare at the concurrency
/// of one node's blocking thread pool.
const LOCK_STRIPES: usize = 1024;

/// A column family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Cf {
    Data,
    Hints,
    Meta,
}

impl Cf {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Cf::Data => "data",
            Cf::Hints => "hints",
            Cf::Meta => "meta",
        }
    }
}

/// One operation of an atomic write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
    /// Deletes every key that starts with the prefix.
    DeletePrefix(Cf, Vec<u8>),
}

/// What RocksDB or the in-memory maps provide: ordered byte maps per column
/// family.
pub(crate) trait KvBackend: Send + Sync + fmt::Debug {
    /// Calls `read` with the value stored under `key`, if any.
    fn get<R>(
        &self,
        cf: Cf,
        key: &[u8],
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, StoreError>;

    /// Applies every operation, in order, atomically; durably before
    /// returning when `durability` is `Sync` (and then every earlier write too).
    fn write(&self, ops: Vec<Op>, durability: Durability) -> Result<(), StoreError>;

    /// Visits, in key order, the entries whose key starts with `prefix` and is
    /// at least `start` (`start` itself starts with `prefix`), until `visit`
    /// breaks. `visit` must not call back into the backend.
    fn scan(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        visit: &mut Visitor<'_>,
    ) -> Result<(), StoreError>;

    /// Makes every completed write durable.
    fn sync(&self) -> Result<(), StoreError>;

    /// Makes the writes deferred since the last flush as durable as they
    /// asked (see [`Store::flush`](super::Store::flush)); nothing to do for
    /// a backend that defers nothing.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether the next [`Kv::flush`] may wait for an fsync: a write
    /// deferred since the last flush asked for [`Durability::Sync`], or
    /// another caller's flush is under way. False for a backend that
    /// defers nothing.
    fn owes_sync(&self) -> bool {
        false
    }

    /// Size figures, for metrics; `None` for figures the backend lacks.
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}

/// A scan's callback: sees one key and value, says whether to go on.
pub(crate) type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> ControlFlow<()> + 'a;

/// Hint queue bookkeeping, rebuilt from the `hints` column family at open.
#[derive(Debug)]
struct HintQueues {
    counts: BTreeMap<Uuid, usize>,
    next_seq: u64,
}

/// The [`Store`](super::Store) logic over a [`KvBackend`]: what `RocksStore`
/// and [`MemoryStore`](super::MemoryStore) each wrap.
pub(crate) struct KvStore<B> {
    kv: B,
    config: StoreConfig,
    stripes: Box<[Mutex<()>]>,
    /// Decoded objects of recent keys; each key's entry is read and changed
    /// only with its stripe held.
    objects: ObjectCache,
    /// Serialises metadata read-modify-writes (generation, actor ids, ceiling).
    meta_lock: Mutex<()>,
    hints: Mutex<HintQueues>,
}

impl<B: fmt::Debug> fmt::Debug for KvStore<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvStore")
            .field("kv", &self.kv)
            .field("config", &self.config)
            .field("objects", &self.objects)
            .field("hints", &*lock(&self.hints))
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, ignoring poison: every mutex here guards either nothing
/// (stripes) or counters that are updated only after their write succeeded.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn stripe_of(stored_key: &[u8]) -> usize {
    let mut hasher = DefaultHasher::new();
    stored_key.hash(&mut hasher);
    (hasher.finish() % LOCK_STRIPES as u64) as usize
}

/// The operation that stores `object` under `stored_key`: a delete for an
/// empty object, else a put of its encoding (refused above the decode
/// limit). With the encoding's length (0 for a delete).
fn store_op(stored_key: Vec<u8>, object: &Object) -> Result<(Op, usize), StoreError> {
    if object.is_empty() {
        return Ok((Op::Delete(Cf::Data, stored_key), 0));
    }
    if object.siblings().len() > MAX_DECODED_SIBLINGS {
        return Err(StoreError::TooManySiblings {
            count: object.siblings().len(),
            max: MAX_DECODED_SIBLINGS,
        });
    }
    let bytes = object.encode();
    if bytes.len() > MAX_ENCODED_LEN {
        return Err(StoreError::ObjectTooLarge {
            len: bytes.len(),
            max: MAX_ENCODED_LEN,
        });
    }
    let len = bytes.len();
    Ok((Op::Put(Cf::Data, stored_key, bytes), len))
}

fn corrupt_meta(key: &[u8], reason: String) -> StoreError {
    StoreError::CorruptRecord {
        column_family: "meta",
        key: key.to_vec(),
        reason,
    }
}

fn decode_u64(key: &[u8], bytes: &[u8]) -> Result<u64, StoreError> {
    let fixed: [u8; 8] = bytes
        .try_into()
        .map_err(|_| corrupt_meta(key, format!("{} bytes, expected 8", bytes.len())))?;
    Ok(u64::from_be_bytes(fixed))
}

impl<B: KvBackend> KvStore<B> {
    /// Opens the store over `kv`, rebuilding the hint queue counts.
    pub(crate) fn open(kv: B, config: StoreConfig) -> Result<Self, StoreError> {
        assert!(
            config.max_hints_per_target > 0,
            "max_hints_per_target must be positive"
        );
        let mut counts = BTreeMap::new();
        let mut max_seq = None;
        let mut failure = None;
        kv.scan(
            Cf::Hints,
            &[],
            &[],
            &mut |key, _| match keys::split_hint_key(key) {
                Ok((target, seq)) => {
                    *counts.entry(target).or_insert(0usize) += 1;
                    max_seq = max_seq.max(Some(seq));
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    failure = Some(e);
                    ControlFlow::Break(())
                }
            },
        )?;
        if let Some(e) = failure {
            return Err(e);
        }
        let stored_next = match kv.get(Cf::Meta, meta::NEXT_HINT_SEQ, |b| {
            decode_u64(meta::NEXT_HINT_SEQ, b)
        })? {
            Some(next) => next?,
            None => 0,
        };
        let next_seq = stored_next.max(max_seq.map_or(0, |s: u64| s.saturating_add(1)));
        let stripes = (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect();
        Ok(KvStore {
            kv,
            config,
            stripes,
            objects: ObjectCache::new(config.object_cache_bytes),
            meta_lock: Mutex::new(()),
            hints: Mutex::new(HintQueues { counts, next_seq }),
        })
    }

    pub(crate) fn backend(&self) -> &B {
        &self.kv
    }

    pub(crate) fn into_backend(self) -> B {
        self.kv
    }

    pub(crate) fn config(&self) -> StoreConfig {
        self.config
    }

    /// The object cache's weight, in bytes (see [`super::cache`]).
    pub(crate) fn object_cache_bytes(&self) -> u64 {
        self.objects.weight()
    }

    /// Reads `stored_key`'s object from the backend, bypassing the cache.
    fn load(&self, key: KeyRef<'_>, stored_key: &[u8]) -> Result<Option<Cached>, StoreError> {
        let decoded = self.kv.get(Cf::Data, stored_key, |bytes| {
            Object::decode(bytes).map(|object| Cached {
                object,
                encoded_len: bytes.len(),
            })
        })?;
        match decoded {
            None => Ok(None),
            Some(Ok(cached)) => Ok(Some(cached)),
            Some(Err(source)) => Err(StoreError::CorruptObject {
                partition: key.partition,
                bucket: key.bucket.to_vec(),
                key: key.key.to_vec(),
                source,
            }),
        }
    }

    fn get_meta_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv.get(Cf::Meta, key, <[u8]>::to_vec)
    }

    fn get_meta_u64(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        self.kv
            .get(Cf::Meta, key, |b| decode_u64(key, b))?
            .transpose()
    }

    fn put_meta_raw(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.kv.write(
            vec![Op::Put(Cf::Meta, key.to_vec(), value.to_vec())],
            Durability::Sync,
        )
    }

    // ----- data -----

    pub(crate) fn get(&self, key: KeyRef<'_>) -> Result<Option<Object>, StoreError> {
        let stored_key = keys::data_key(key)?;
        let _stripe = lock(&self.stripes[stripe_of(&stored_key)]);
        if let Some(object) = self.objects.get(&stored_key) {
            return Ok(Some(object));
        }
        Ok(self.load(key, &stored_key)?.map(|cached| {
            let object = cached.object.clone();
            self.objects
                .put(stored_key, cached.object, cached.encoded_len);
            object
        }))
    }

    /// The object under `stored_key` for a write to change: taken out of
    /// the cache, or read from the backend. Its stripe must be held; the
    /// write puts it back ([`KvStore::store_objects`]).
    fn take(&self, key: KeyRef<'_>, stored_key: &[u8]) -> Result<Object, StoreError> {
        Ok(match self.objects.take(stored_key) {
            Some(cached) => cached.object,
            None => self
                .load(key, stored_key)?
                .map(|cached| cached.object)
                .unwrap_or_default(),
        })
    }

    /// Writes each object under its stored key, in one backend write, and
    /// caches them once it succeeded. Their stripes must be held. An
    /// object the cache held was taken out before it changed, so a failed
    /// write leaves nothing stale behind.
    fn store_objects(
        &self,
        objects: Vec<(Vec<u8>, Object)>,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let mut ops = Vec::with_capacity(objects.len());
        let mut lens = Vec::with_capacity(objects.len());
        for (stored_key, object) in &objects {
            let (op, len) = store_op(stored_key.clone(), object)?;
            ops.push(op);
            lens.push(len);
        }
        self.kv.write(ops, durability)?;
        for ((stored_key, object), len) in objects.into_iter().zip(lens) {
            // A deleted key (an empty object) is not cached.
            if len > 0 {
                self.objects.put(stored_key, object, len);
            }
        }
        Ok(())
    }

    pub(crate) fn read_modify_write(
        &self,
        key: KeyRef<'_>,
        durability: Durability,
        f: &mut dyn FnMut(&mut Object) -> Decision,
    ) -> Result<Decision, StoreError> {
        let stored_key = keys::data_key(key)?;
        let _stripe = lock(&self.stripes[stripe_of(&stored_key)]);
        let mut object = self.take(key, &stored_key)?;
        let decision = f(&mut object);
        // A kept object is not put back: the closure may have changed it.
        if decision == Decision::Write {
            self.store_objects(vec![(stored_key, object)], durability)?;
        }
        Ok(decision)
    }

    pub(crate) fn read_modify_write_batch(
        &self,
        keys: &[KeyRef<'_>],
        durability: Durability,
        f: &mut dyn FnMut(usize, &mut Object) -> Decision,
    ) -> Result<Vec<Decision>, StoreError> {
        if keys.len() > keys::MAX_BATCH_KEYS {
            return Err(StoreError::BatchTooLarge {
                len: keys.len(),
                max: keys::MAX_BATCH_KEYS,
            });
        }
        let stored: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| keys::data_key(*k))
            .collect::<Result<_, _>>()?;
        let mut stripes: Vec<usize> = stored.iter().map(|k| stripe_of(k)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        // Ascending order: no two lockers can wait for each other.
        let _guards: Vec<MutexGuard<'_, ()>> =
            stripes.iter().map(|&i| lock(&self.stripes[i])).collect();

        let mut seen = HashSet::with_capacity(stored.len());
        let repeated: HashSet<&[u8]> = stored
            .iter()
            .filter(|k| !seen.insert(k.as_slice()))
            .map(Vec::as_slice)
            .collect();
        // The objects as the batch has left them so far, and whether to write them.
        let mut working: BTreeMap<&[u8], (Object, bool)> = BTreeMap::new();
        let mut decisions = Vec::with_capacity(keys.len());
        for (i, (key, stored_key)) in keys.iter().zip(&stored).enumerate() {
            let stored_key = stored_key.as_slice();
            if !working.contains_key(stored_key) {
                let object = self.take(*key, stored_key)?;
                working.insert(stored_key, (object, false));
            }
            let (object, dirty) = working.get_mut(stored_key).expect("inserted above");
            let decision = if repeated.contains(stored_key) {
                // A later call sees this key again: it must see the object
                // unchanged if this call keeps it.
                let mut candidate = object.clone();
                let decision = f(i, &mut candidate);
                if decision == Decision::Write {
                    *object = candidate;
                }
                decision
            } else {
                f(i, object)
            };
            *dirty |= decision == Decision::Write;
            decisions.push(decision);
        }
        // Kept objects are not put back: the closures may have changed them.
        let objects: Vec<(Vec<u8>, Object)> = working
            .into_iter()
            .filter(|(_, (_, dirty))| *dirty)
            .map(|(stored_key, (object, _))| (stored_key.to_vec(), object))
            .collect();
        if !objects.is_empty() {
            self.store_objects(objects, durability)?;
        }
        Ok(decisions)
    }

    pub(crate) fn scan_partition(
        &self,
        partition: PartitionId,
        after: Option<(&[u8], &[u8])>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let prefix = keys::partition_prefix(partition);
        let start = match after {
            Some((bucket, key)) => {
                keys::successor(&keys::data_key(KeyRef::new(partition, bucket, key))?)
            }
            None => prefix.to_vec(),
        };
        let mut entries = Vec::new();
        let mut failure = None;
        if limit > 0 {
            self.kv
                .scan(Cf::Data, &prefix, &start, &mut |stored_key, value| {
                    let decoded = keys::split_data_key(stored_key).and_then(|(bucket, key)| {
                        Object::decode(value)
                            .map(|object| Entry {
                                bucket: bucket.to_vec(),
                                key: key.to_vec(),
                                object,
                            })
                            .map_err(|source| StoreError::CorruptObject {
                                partition,
                                bucket: bucket.to_vec(),
                                key: key.to_vec(),
                                source,
                            })
                    });
                    match decoded {
                        Ok(entry) => entries.push(entry),
                        Err(e) => {
                            failure = Some(e);
                            return ControlFlow::Break(());
                        }
                    }
                    if entries.len() >= limit {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })?;
        }
        match failure {
            // The page ends before the corrupt entry; the next page reports it.
            Some(e) if entries.is_empty() => Err(e),
            _ => Ok(entries),
        }
    }

    pub(crate) fn drop_partition(&self, partition: PartitionId) -> Result<(), StoreError> {
        let _meta = lock(&self.meta_lock);
        let ops = vec![
            Op::DeletePrefix(Cf::Data, keys::partition_prefix(partition).to_vec()),
            Op::Delete(Cf::Meta, meta::actor(partition).to_vec()),
        ];
        let written = self.kv.write(ops, Durability::Sync);
        // Rare: emptying the whole cache is simpler than finding the
        // partition's keys in it.
        self.objects.clear();
        written
    }

    pub(crate) fn clear_partition_actors(&self) -> Result<(), StoreError> {
        let _meta = lock(&self.meta_lock);
        let ops = vec![Op::DeletePrefix(Cf::Meta, meta::ACTOR_PREFIX.to_vec())];
        self.kv.write(ops, Durability::Sync)
    }

    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.kv.sync()
    }

    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.kv.flush()
    }

    pub(crate) fn owes_sync(&self) -> bool {
        self.kv.owes_sync()
    }

    // ----- hints -----

    pub(crate) fn add_hint(
        &self,
        target: Uuid,
        key: KeyRef<'_>,
        object: &Object,
        durability: Durability,
    ) -> Result<u64, StoreError> {
        keys::check_key(key)?;
        let object_bytes = object.encode();
        if object_bytes.len() > MAX_ENCODED_LEN {
            return Err(StoreError::ObjectTooLarge {
                len: object_bytes.len(),
                max: MAX_ENCODED_LEN,
            });
        }
        let value = keys::encode_hint(key, &object_bytes, durability);
        let mut queues = lock(&self.hints);
        let count = queues.counts.get(&target).copied().unwrap_or(0);
        if count >= self.config.max_hints_per_target {
            return Err(StoreError::HintQueueFull {
                target,
                max: self.config.max_hints_per_target,
            });
        }
        let seq = queues.next_seq;
        let next = seq.checked_add(1).expect("hint sequence numbers exhausted");
        let ops = vec![
            Op::Put(Cf::Hints, keys::hint_key(target, seq).to_vec(), value),
            Op::Put(
                Cf::Meta,
                meta::NEXT_HINT_SEQ.to_vec(),
                next.to_be_bytes().to_vec(),
            ),
        ];
        self.kv.write(ops, durability)?;
        queues.next_seq = next;
        queues.counts.insert(target, count + 1);
        Ok(seq)
    }

    pub(crate) fn hints(
        &self,
        target: Uuid,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Hint>, StoreError> {
        let start = match after {
            Some(u64::MAX) => return Ok(Vec::new()),
            Some(seq) => keys::hint_key(target, seq + 1),
            None => keys::hint_key(target, 0),
        };
        let mut hints = Vec::new();
        let mut failure = None;
        if limit > 0 {
            self.kv.scan(
                Cf::Hints,
                target.as_bytes(),
                &start,
                &mut |stored_key, value| {
                    let decoded = keys::split_hint_key(stored_key).and_then(|(_, seq)| {
                        keys::decode_hint(value)
                            .map(|(partition, bucket, key, object, durability)| Hint {
                                seq,
                                partition,
                                bucket,
                                key,
                                object,
                                durability,
                            })
                            .map_err(|reason| StoreError::CorruptHint {
                                target,
                                seq,
                                reason,
                            })
                    });
                    match decoded {
                        Ok(hint) => hints.push(hint),
                        Err(e) => {
                            failure = Some(e);
                            return ControlFlow::Break(());
                        }
                    }
                    if hints.len() >= limit {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            )?;
        }
        match failure {
            Some(e) if hints.is_empty() => Err(e),
            _ => Ok(hints),
        }
    }

    pub(crate) fn delete_hint(
        &self,
        target: Uuid,
        seq: u64,
        durability: Durability,
    ) -> Result<bool, StoreError> {
        let stored_key = keys::hint_key(target, seq);
        let mut queues = lock(&self.hints);
        if self.kv.get(Cf::Hints, &stored_key, |_| ())?.is_none() {
            return Ok(false);
        }
        self.kv
            .write(vec![Op::Delete(Cf::Hints, stored_key.to_vec())], durability)?;
        match queues.counts.get_mut(&target) {
            Some(count) if *count > 1 => *count -= 1,
            _ => {
                queues.counts.remove(&target);
            }
        }
        Ok(true)
    }

    pub(crate) fn hint_count(&self, target: Uuid) -> Result<usize, StoreError> {
        Ok(lock(&self.hints).counts.get(&target).copied().unwrap_or(0))
    }

    pub(crate) fn hint_counts(&self) -> Result<Vec<(Uuid, usize)>, StoreError> {
        Ok(lock(&self.hints)
            .counts
            .iter()
            .map(|(&t, &c)| (t, c))
            .collect())
    }

    // ----- metadata -----

    pub(crate) fn node_id(&self, candidate: Uuid) -> Result<Uuid, StoreError> {
        let _meta = lock(&self.meta_lock);
        match self.get_meta_raw(meta::NODE_ID)? {
            Some(bytes) => {
                let fixed: [u8; 16] = bytes.as_slice().try_into().map_err(|_| {
                    corrupt_meta(
                        meta::NODE_ID,
                        format!("node id of {} bytes, expected 16", bytes.len()),
                    )
                })?;
                Ok(Uuid::from_bytes(fixed))
            }
            None => {
                self.put_meta_raw(meta::NODE_ID, candidate.as_bytes())?;
                Ok(candidate)
            }
        }
    }

    pub(crate) fn generation(&self) -> Result<u64, StoreError> {
        Ok(self.get_meta_u64(meta::GENERATION)?.unwrap_or(0))
    }

    pub(crate) fn bump_generation(&self) -> Result<u64, StoreError> {
        let _meta = lock(&self.meta_lock);
        let next = self
            .generation()?
            .checked_add(1)
            .expect("generation exhausted");
        self.put_meta_raw(meta::GENERATION, &next.to_be_bytes())?;
        Ok(next)
    }

    pub(crate) fn raise_generation(&self, at_least: u64) -> Result<u64, StoreError> {
        let _meta = lock(&self.meta_lock);
        let current = self.generation()?;
        if current >= at_least {
            return Ok(current);
        }
        self.put_meta_raw(meta::GENERATION, &at_least.to_be_bytes())?;
        Ok(at_least)
    }

    pub(crate) fn partition_actor(
        &self,
        partition: PartitionId,
    ) -> Result<Option<ActorId>, StoreError> {
        Ok(self.get_meta_u64(&meta::actor(partition))?.map(ActorId))
    }

    pub(crate) fn ensure_partition_actor(
        &self,
        partition: PartitionId,
        candidate: ActorId,
    ) -> Result<ActorId, StoreError> {
        let _meta = lock(&self.meta_lock);
        if let Some(actor) = self.partition_actor(partition)? {
            return Ok(actor);
        }
        self.put_meta_raw(&meta::actor(partition), &candidate.0.to_be_bytes())?;
        Ok(candidate)
    }

    pub(crate) fn hlc_ceiling(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .get_meta_u64(meta::HLC_CEILING)?
            .map(Timestamp::from_u64))
    }

    pub(crate) fn raise_hlc_ceiling(&self, ceiling: Timestamp) -> Result<Timestamp, StoreError> {
        let _meta = lock(&self.meta_lock);
        match self.hlc_ceiling()? {
            Some(stored) if stored >= ceiling => Ok(stored),
            _ => {
                self.put_meta_raw(meta::HLC_CEILING, &ceiling.as_u64().to_be_bytes())?;
                Ok(ceiling)
            }
        }
    }

    fn check_meta_name(name: &str) -> Result<(), StoreError> {
        if name.len() > keys::MAX_META_NAME_LEN {
            return Err(StoreError::MetadataTooLong {
                what: "name",
                len: name.len(),
                max: keys::MAX_META_NAME_LEN,
            });
        }
        Ok(())
    }

    pub(crate) fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Self::check_meta_name(name)?;
        self.get_meta_raw(&meta::generic(name))
    }

    pub(crate) fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        Self::check_meta_name(name)?;
        if value.len() > keys::MAX_META_VALUE_LEN {
            return Err(StoreError::MetadataTooLong {
                what: "value",
                len: value.len(),
                max: keys::MAX_META_VALUE_LEN,
            });
        }
        let _meta = lock(&self.meta_lock);
        self.put_meta_raw(&meta::generic(name), value)
    }

    pub(crate) fn delete_meta(&self, name: &str) -> Result<bool, StoreError> {
        Self::check_meta_name(name)?;
        let _meta = lock(&self.meta_lock);
        let key = meta::generic(name);
        if self.kv.get(Cf::Meta, &key, |_| ())?.is_none() {
            return Ok(false);
        }
        self.kv
            .write(vec![Op::Delete(Cf::Meta, key)], Durability::Sync)?;
        Ok(true)
    }
}

/// Implements [`Store`](super::Store) for a type whose field `$field` is an
/// [`KvStore`], by delegation.
macro_rules! delegate_store {
    ($ty:ty, $field:ident) => {
        impl $crate::store::Store for $ty {
            fn get(
                &self,
                key: $crate::store::KeyRef<'_>,
            ) -> Result<Option<$crate::object::Object>, $crate::store::StoreError> {
                self.$field.get(key)
            }
            fn read_modify_write(
                &self,
                key: $crate::store::KeyRef<'_>,
                durability: $crate::store::Durability,
                f: &mut dyn FnMut(&mut $crate::object::Object) -> $crate::store::Decision,
            ) -> Result<$crate::store::Decision, $crate::store::StoreError> {
                self.$field.read_modify_write(key, durability, f)
            }
            fn read_modify_write_batch(
                &self,
                keys: &[$crate::store::KeyRef<'_>],
                durability: $crate::store::Durability,
                f: &mut dyn FnMut(usize, &mut $crate::object::Object) -> $crate::store::Decision,
            ) -> Result<Vec<$crate::store::Decision>, $crate::store::StoreError> {
                self.$field.read_modify_write_batch(keys, durability, f)
            }
            fn scan_partition(
                &self,
                partition: chorus_ring::PartitionId,
                after: Option<(&[u8], &[u8])>,
                limit: usize,
            ) -> Result<Vec<$crate::store::Entry>, $crate::store::StoreError> {
                self.$field.scan_partition(partition, after, limit)
            }
            fn drop_partition(
                &self,
                partition: chorus_ring::PartitionId,
            ) -> Result<(), $crate::store::StoreError> {
                self.$field.drop_partition(partition)
            }
            fn clear_partition_actors(&self) -> Result<(), $crate::store::StoreError> {
                self.$field.clear_partition_actors()
            }
            fn sync(&self) -> Result<(), $crate::store::StoreError> {
                self.$field.sync()
            }
            fn flush(&self) -> Result<(), $crate::store::StoreError> {
                self.$field.flush()
            }
            fn owes_sync(&self) -> bool {
                self.$field.owes_sync()
            }
            fn add_hint(
                &self,
                target: uuid::Uuid,
                key: $crate::store::KeyRef<'_>,
                object: &$crate::object::Object,
                durability: $crate::store::Durability,
            ) -> Result<u64, $crate::store::StoreError> {
                self.$field.add_hint(target, key, object, durability)
            }
            fn hints(
                &self,
                target: uuid::Uuid,
                after: Option<u64>,
                limit: usize,
            ) -> Result<Vec<$crate::store::Hint>, $crate::store::StoreError> {
                self.$field.hints(target, after, limit)
            }
            fn delete_hint(
                &self,
                target: uuid::Uuid,
                seq: u64,
                durability: $crate::store::Durability,
            ) -> Result<bool, $crate::store::StoreError> {
                self.$field.delete_hint(target, seq, durability)
            }
            fn hint_count(&self, target: uuid::Uuid) -> Result<usize, $crate::store::StoreError> {
                self.$field.hint_count(target)
            }
            fn hint_counts(&self) -> Result<Vec<(uuid::Uuid, usize)>, $crate::store::StoreError> {
                self.$field.hint_counts()
            }
            fn node_id(
                &self,
                candidate: uuid::Uuid,
            ) -> Result<uuid::Uuid, $crate::store::StoreError> {
                self.$field.node_id(candidate)
            }
            fn generation(&self) -> Result<u64, $crate::store::StoreError> {
                self.$field.generation()
            }
            fn bump_generation(&self) -> Result<u64, $crate::store::StoreError> {
                self.$field.bump_generation()
            }
            fn raise_generation(&self, at_least: u64) -> Result<u64, $crate::store::StoreError> {
                self.$field.raise_generation(at_least)
            }
            fn partition_actor(
                &self,
                partition: chorus_ring::PartitionId,
            ) -> Result<Option<$crate::version::ActorId>, $crate::store::StoreError> {
                self.$field.partition_actor(partition)
            }
            fn ensure_partition_actor(
                &self,
                partition: chorus_ring::PartitionId,
                candidate: $crate::version::ActorId,
            ) -> Result<$crate::version::ActorId, $crate::store::StoreError> {
                self.$field.ensure_partition_actor(partition, candidate)
            }
            fn hlc_ceiling(
                &self,
            ) -> Result<Option<$crate::hlc::Timestamp>, $crate::store::StoreError> {
                self.$field.hlc_ceiling()
            }
            fn raise_hlc_ceiling(
                &self,
                ceiling: $crate::hlc::Timestamp,
            ) -> Result<$crate::hlc::Timestamp, $crate::store::StoreError> {
                self.$field.raise_hlc_ceiling(ceiling)
            }
            fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, $crate::store::StoreError> {
                self.$field.get_meta(name)
            }
            fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), $crate::store::StoreError> {
                self.$field.put_meta(name, value)
            }
            fn delete_meta(&self, name: &str) -> Result<bool, $crate::store::StoreError> {
                self.$field.delete_meta(name)
            }
            fn stats(&self) -> $crate::store::StoreStats {
                $crate::store::StoreStats {
                    object_cache_bytes: Some(self.$field.object_cache_bytes()),
                    ..self.$field.backend().stats()
                }
            }
        }
    };
}

pub(crate) use delegate_store;
