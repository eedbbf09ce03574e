//! The local replica: reads and writes of the store on behalf of requests,
//! the partitions' actors and the epochs that renew them, the hybrid
//! logical clock and its persisted ceiling, and the holds-data flag.

use chorus_ring::{PartitionId, Ring};
use chorus_storage::hlc::{Hlc, Timestamp};
use chorus_storage::object::Object;
use chorus_storage::store::{
    Durability, KeyRef, Store, StoreError, Update, MAX_BUCKET_LEN, MAX_KEY_LEN,
};
use chorus_storage::version::{ActorId, Dot};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

use super::config::EngineConfig;
use super::io::{Effect, EngineError, Now};
use super::parts::{Cx, Parts};
use crate::api::RequestError;
use crate::core::{context_bound, coordinate_write, ClientWrite, ReplicaError};
use crate::wire::{decode_object, WireKey};
use std::sync::atomic::Ordering;
use std::sync::PoisonError;

/// Metadata name of the persisted ring.
pub(super) const RING_META: &str = "ring";

/// Metadata name of the flag saying this node has stored data.
pub(super) const HOLDS_DATA_META: &str = "holds_data";

/// Metadata name of the marker saying a node runs on this store: written
/// (synced) at start, removed by a clean stop. Found at start, it means the
/// last run ended uncleanly and may have lost writes it acknowledged.
pub(super) const RUNNING_META: &str = "running";

/// The local replica's reads and writes on behalf of a shard's requests.
impl<S: Store> Cx<'_, S> {
    pub(super) fn on_store(
        &mut self,
        now: Now,
        key: &WireKey,
        object: &[u8],
        sync: bool,
        stands_in_for: Option<Uuid>,
    ) -> Result<(), ReplicaError> {
        let partition = self.checked_partition(key)?;
        let object = decode_object(object).map_err(|e| ReplicaError::Refused(e.to_string()))?;
        if let Some(timestamp) = object.latest_timestamp() {
            self.parts
                .hlc()
                .observe(timestamp, now.wall_ms)
                .map_err(|e| ReplicaError::Refused(e.to_string()))?;
            self.parts
                .persist_clock()
                .map_err(|e| ReplicaError::Storage(e.to_string()))?;
        }
        let durability = Durability::from_sync(sync);
        let keyref = KeyRef::new(partition, &key.bucket, &key.key);
        let changed = self
            .parts
            .store
            .merge(keyref, &object, durability)
            .map_err(|e| ReplicaError::Storage(e.to_string()))?;
        self.facts.wrote_data = true;
        if let Some(primary) = stands_in_for.filter(|&p| p != self.view.id) {
            if let Err(e) = self
                .parts
                .store
                .add_hint(primary, keyref, &object, durability)
            {
                self.parts.stats.hints_dropped += 1;
                return Err(ReplicaError::Storage(e.to_string()));
            }
        } else if sync && !changed {
            // The replica already had every version (perhaps from a read
            // repair written without sync): a durable acknowledgement still
            // means the state holding them is on disk.
            self.parts
                .store
                .sync()
                .map_err(|e| ReplicaError::Storage(e.to_string()))?;
        }
        Ok(())
    }

    /// Applies a client's write to the local copy of `key` under this
    /// node's actor for the key's partition and a fresh timestamp (see
    /// [`coordinate_write`]): the stored object and the new version's dot.
    pub(super) fn apply_write(
        &mut self,
        now: Now,
        key: &WireKey,
        write: ClientWrite,
        durability: Durability,
    ) -> Result<(Object, Dot), RequestError> {
        let partition = PartitionId(key.partition);
        let actor = self
            .actor(partition)
            .map_err(|e| RequestError::Internal(e.to_string()))?;
        let timestamp = self.parts.hlc().now(now.wall_ms);
        self.parts
            .persist_clock()
            .map_err(|e| RequestError::Internal(e.to_string()))?;
        let bound = context_bound(timestamp, self.parts.config.hlc.max_drift);
        let stored = self.parts.store.update(
            KeyRef::new(partition, &key.bucket, &key.key),
            durability,
            |object| match coordinate_write(object, write, actor, timestamp, bound) {
                Ok(dot) => Update::Write(Ok((object.clone(), dot))),
                Err(refused) => Update::Keep(Err(refused)),
            },
        );
        let applied = match stored {
            Ok(Ok(applied)) => applied,
            Ok(Err(refused)) => return Err(RequestError::Write(refused)),
            Err(e) => return Err(RequestError::Internal(e.to_string())),
        };
        self.facts.wrote_data = true;
        Ok(applied)
    }

    /// Merges the object a get found into the local copy (read repair).
    pub(super) fn repair_local(&mut self, key: &WireKey, merged: &Object) {
        let partition = PartitionId(key.partition);
        let keyref = KeyRef::new(partition, &key.bucket, &key.key);
        if let Err(e) = self.parts.store.merge(keyref, merged, Durability::Buffered) {
            tracing::warn!(error = %e, "local read repair failed");
        }
    }

    pub(super) fn read_local(&mut self, key: &WireKey) -> Result<Object, ReplicaError> {
        let partition = self.checked_partition(key)?;
        match self
            .parts
            .store
            .get(KeyRef::new(partition, &key.bucket, &key.key))
        {
            Ok(object) => Ok(object.unwrap_or_default()),
            Err(e) => Err(ReplicaError::Storage(e.to_string())),
        }
    }

    pub(super) fn checked_partition(&self, key: &WireKey) -> Result<PartitionId, ReplicaError> {
        if key.bucket.len() > MAX_BUCKET_LEN || key.key.len() > MAX_KEY_LEN {
            return Err(ReplicaError::Refused("bucket or key too long".into()));
        }
        let partition = self.parts.partitions.of_key(&key.bucket, &key.key);
        if partition.0 != key.partition {
            return Err(ReplicaError::Refused(format!(
                "key belongs to partition {}, not {}",
                partition.0, key.partition
            )));
        }
        Ok(partition)
    }

    pub(super) fn actor(&mut self, partition: PartitionId) -> Result<ActorId, StoreError> {
        if !self.parts.epoch_safe() && !self.view.self_confirmed {
            // No peer has yet said whether a newer incarnation of this node
            // exists (a restored data directory): mint under new actors.
            self.parts
                .begin_epoch("a write arrived before any peer confirmed this node's generation")?;
        }
        if let Some(actor) = self.parts.store.partition_actor(partition)? {
            return Ok(actor);
        }
        let candidate = ActorId(self.parts.rng.random());
        self.parts
            .store
            .ensure_partition_actor(partition, candidate)
    }

    /// Passes a replica's read reply through the clock. An object stamped
    /// beyond the drift bound, or whose context counts beyond the bound
    /// [`coordinate_write`] checks contexts against, is refused: it is
    /// neither merged into the answer nor repaired into other replicas. So
    /// every context this node hands out stays within that bound, which
    /// only grows with the clock, and a write through this node with it is
    /// never refused as coming from the future.
    pub(super) fn observe(
        &mut self,
        now: Now,
        from: Uuid,
        object: Object,
    ) -> Result<Object, ReplicaError> {
        let base =
            Timestamp::new(now.wall_ms.min(Timestamp::MAX_WALL_MS), 0).max(self.parts.hlc().last());
        let bound = context_bound(base, self.parts.config.hlc.max_drift);
        let counter = object.context().max_counter();
        let refused = if counter > bound.as_u64() {
            Some(format!(
                "its context counts {} beyond this node's bound {bound}",
                Timestamp::from_u64(counter)
            ))
        } else {
            match object
                .latest_timestamp()
                .map(|t| self.parts.hlc().observe(t, now.wall_ms))
            {
                Some(Err(e)) => Some(e.to_string()),
                Some(Ok(_)) => {
                    if let Err(e) = self.parts.persist_clock() {
                        tracing::warn!(error = %e, "could not persist the clock ceiling");
                    }
                    None
                }
                None => None,
            }
        };
        match refused {
            None => Ok(object),
            Some(reason) => {
                self.parts.stats.replies_from_the_future += 1;
                tracing::warn!(%from, %reason, "refused a read reply from a replica whose clock is ahead");
                Err(ReplicaError::Refused(format!("clock ahead: {reason}")))
            }
        }
    }
}

/// The store's metadata, the clock's ceiling and the epochs, for
/// membership and the shards alike.
impl<S: Store> Parts<S> {
    /// Whether this node holds data in `partition`; a store that cannot
    /// tell counts as holding some (refusing is the safe side).
    pub(super) fn holds_data_in(&self, partition: PartitionId) -> bool {
        match self.store.scan_partition(partition, None, 1) {
            Ok(entries) => !entries.is_empty(),
            Err(_) => true,
        }
    }

    /// Persists the ring this node holds, for its next start.
    pub(super) fn persist_ring(&mut self, ring: &Ring) -> Result<(), StoreError> {
        let bytes = rmp_serde::to_vec(ring).expect("a ring always encodes");
        self.store.put_meta(RING_META, &bytes)
    }

    /// Persists a generation at least `generation`; the one persisted.
    pub(super) fn persist_generation(&mut self, generation: u64) -> Result<u64, StoreError> {
        self.store.raise_generation(generation)
    }

    /// Marks the store as run by this node at `generation` (until a clean
    /// stop removes the mark).
    pub(super) fn mark_running(&mut self, generation: u64) -> Result<(), StoreError> {
        self.store.put_meta(RUNNING_META, &generation.to_be_bytes())
    }

    /// Group commit: puts the writes made since the last call in the log,
    /// fsynced if any asked for `sync` ([`Store::flush`]).
    pub(super) fn flush_writes(&mut self) -> Result<(), StoreError> {
        self.store.flush()
    }

    /// Whether the next [`Parts::poll_effect`] may wait for an fsync of
    /// the store's log first: an effect waits, and a write since the last
    /// flush asked for `sync` or another flush is under way
    /// ([`Store::owes_sync`]).
    pub(super) fn owes_sync(&self) -> bool {
        !self.effects.is_empty() && self.store.owes_sync()
    }

    /// This owner's next effect, once the store's writes so far are in the
    /// log ([`Parts::flush_writes`]). None once the store failed to flush,
    /// anywhere in the node: what would follow may depend on a lost write.
    pub(super) fn poll_effect(&mut self) -> Option<Effect> {
        if self.effects.is_empty() || self.storage_failure().is_some() {
            return None;
        }
        if let Err(e) = self.flush_writes() {
            tracing::error!(error = %e, "the store could not flush its writes; the node acknowledges nothing more");
            let _ = self.storage_failure.set(e.to_string());
            self.effects.clear();
            return None;
        }
        self.effects.pop_front()
    }

    /// Stops cleanly: syncs the store, then removes the running marker so
    /// the next start keeps the partitions' actors. The engine must not be
    /// driven afterwards. On error the marker stays (the next start begins a
    /// new epoch, which is always safe).
    pub(super) fn stop(&mut self) -> Result<(), StoreError> {
        self.store.sync()?;
        self.store.delete_meta(RUNNING_META)?;
        self.store.flush()?;
        Ok(())
    }

    /// Begins a new epoch: every partition draws a new actor before its next
    /// dot, so nothing this node minted before can be minted again.
    pub(super) fn begin_epoch(&mut self, why: &str) -> Result<(), StoreError> {
        if self.config.unsafe_controls.keep_actors_after_unclean_stop {
            self.epoch_safe.store(true, Ordering::Release);
            return Ok(());
        }
        tracing::warn!(
            why,
            "beginning a new epoch (new actor ids for every partition)"
        );
        self.store.clear_partition_actors()?;
        self.epoch_safe.store(true, Ordering::Release);
        Ok(())
    }

    /// Persists the clock's pending ceiling, if any. On failure the ceiling
    /// stays pending (the next call tries again) and the caller must not
    /// use the timestamp it just drew.
    pub(super) fn persist_clock(&mut self) -> Result<(), StoreError> {
        // Under the clock's lock, so two owners never persist ceilings out
        // of order.
        let mut hlc = self.hlc.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ceiling) = hlc.ceiling_to_persist() {
            let stored = self.store.raise_hlc_ceiling(ceiling)?;
            hlc.ceiling_persisted(stored);
        }
        Ok(())
    }

    /// Persists the flag saying this node holds data.
    pub(super) fn persist_holds_data(&mut self) -> Result<(), StoreError> {
        self.store.put_meta(HOLDS_DATA_META, b"1")
    }
}

/// What a node's store holds at start.
pub(super) struct Opened {
    /// The node's id, created on first start.
    pub(super) id: Uuid,
    /// The generation the store held: the last run it knows of (0 on first
    /// start).
    pub(super) previous: u64,
    /// This start's generation, persisted.
    pub(super) generation: u64,
    /// The last run did not stop cleanly.
    pub(super) unclean: bool,
    /// The clock, resumed above its persisted ceiling.
    pub(super) hlc: Hlc,
    /// The ring the node held.
    pub(super) ring: Option<Ring>,
    /// The node has stored data.
    pub(super) holds_data: bool,
}

/// Opens a node's store: reads (or creates) its id, raises its generation
/// to the larger of the persisted one plus one and the wall clock in
/// milliseconds, begins a new epoch if the last run did not stop cleanly,
/// marks the store as running, and reads the clock's ceiling, the ring and
/// the holds-data flag.
pub(super) fn open<S: Store>(
    store: &S,
    config: &EngineConfig,
    now: Now,
    rng: &mut ChaCha8Rng,
) -> Result<Opened, EngineError> {
    let id = store.node_id(Uuid::from_u128(rng.random()))?;
    // Generations follow the wall clock (in ms, as Cassandra's follow it
    // in seconds), so a node started on an older copy of its data
    // directory still comes back above every generation it ran at; the
    // persisted value keeps them increasing when the clock is behind.
    let previous = store.generation()?;
    let generation = store.raise_generation(previous.saturating_add(1).max(now.wall_ms))?;
    // An unclean end of the last run may have lost versions this node
    // minted or acknowledged: its partitions get new actors (§3 rule 1).
    let unclean = store.get_meta(RUNNING_META)?.is_some();
    if unclean && !config.unsafe_controls.keep_actors_after_unclean_stop {
        tracing::warn!(
            generation,
            "the last run did not stop cleanly: beginning a new epoch (new actor ids for every partition)"
        );
        store.clear_partition_actors()?;
    }
    store.put_meta(RUNNING_META, &generation.to_be_bytes())?;
    let hlc = match store.hlc_ceiling()? {
        Some(ceiling) => Hlc::resume(config.hlc, ceiling),
        None => Hlc::new(config.hlc),
    };
    let ring = match store.get_meta(RING_META)? {
        Some(bytes) => Some(
            rmp_serde::from_slice::<Ring>(&bytes).map_err(|e| EngineError::Ring(e.to_string()))?,
        ),
        None => None,
    };
    let holds_data = store.get_meta(HOLDS_DATA_META)?.is_some();
    Ok(Opened {
        id,
        previous,
        generation,
        unclean,
        hlc,
        ring,
        holds_data,
    })
}
