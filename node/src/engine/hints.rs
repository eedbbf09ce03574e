//! Hinted handoff: hints kept for targets of a put that never answered, and
//! their delivery in batches to primaries gossip reports up, each deleted
//! once its primary acknowledged it.

use std::collections::{BTreeMap, BTreeSet};

use chorus_ring::PartitionId;
use chorus_storage::object::Object;
use chorus_storage::store::{Durability, KeyRef, Store, StoreError};
use uuid::Uuid;

use super::requests::{Deadlines, RequestId, Requests, RETRY_AFTER};
use super::shard::{Cx, Shard};
use super::Now;
use crate::buggify::Site;
use crate::core::{Replica, ReplicaError};
use crate::wire::{Message, StoredAck, WireKey};

/// Hint deliveries in flight, and where each target's next round reads.
#[derive(Debug, Default)]
pub(super) struct Hints {
    deliveries: Requests<HintDelivery>,
    /// Targets with a batch in flight: a target gets one batch at a time.
    targets_in_flight: BTreeSet<Uuid>,
    /// Per target, the sequence number after which the next hint round
    /// reads, so hints that keep failing never block those behind them.
    cursor: BTreeMap<Uuid, u64>,
}

/// One hint on its way to its target.
#[derive(Debug)]
pub(super) struct HintDelivery {
    target: Uuid,
    seq: u64,
    key: WireKey,
    /// The hint's write was acknowledged durably: only a durable
    /// acknowledgement of the delivery deletes it.
    durable: bool,
    /// The encoded object's size.
    bytes: usize,
}

impl Hints {
    /// Deliveries in flight.
    pub(super) fn len(&self) -> usize {
        self.deliveries.len()
    }

    /// Whether `request` is a delivery in flight.
    pub(super) fn contains(&self, request: RequestId) -> bool {
        self.deliveries.get(request).is_some()
    }

    /// The target of delivery `request`.
    pub(super) fn target_of(&self, request: RequestId) -> Option<Uuid> {
        self.deliveries.get(request).map(|d| d.target)
    }

    /// Every delivery in flight and its target, in request order.
    pub(super) fn deliveries(&self) -> impl Iterator<Item = (RequestId, Uuid)> + '_ {
        self.deliveries
            .iter()
            .map(|(request, d)| (request, d.target))
    }

    /// The deliveries in flight to `node`.
    pub(super) fn deliveries_to(&self, node: Uuid) -> impl Iterator<Item = RequestId> + '_ {
        self.deliveries
            .iter()
            .filter(move |(_, d)| d.target == node)
            .map(|(request, _)| request)
    }

    /// Ends delivery `request`, and its target's batch with its last one.
    fn end(&mut self, deadlines: &mut Deadlines, request: RequestId) -> Option<HintDelivery> {
        let delivery = self.deliveries.remove(deadlines, request)?;
        let target = delivery.target;
        if !self.deliveries.iter().any(|(_, d)| d.target == target) {
            self.targets_in_flight.remove(&target);
        }
        Some(delivery)
    }
}

impl Shard {
    /// A hint round: for each target gossip reports up with no batch in
    /// flight, the next batch of its hints in this shard's partitions.
    pub(super) fn deliver_hints<S: Store>(&mut self, cx: &mut Cx<'_, S>, now: Now) {
        let counts = match cx.parts.store.hint_counts() {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!(error = %e, "could not list hints");
                return;
            }
        };
        for (target, _) in counts {
            if target == cx.me()
                || !cx.view.is_up(target)
                || self.hints.targets_in_flight.contains(&target)
            {
                continue;
            }
            if self.background_full() {
                // The next round offers them; client requests go first.
                break;
            }
            // Read on from where the last round stopped, and wrap around at
            // the end: a hint that keeps failing never holds back the rest.
            let after = self.hints.cursor.get(&target).copied();
            let mut hints = match cx
                .parts
                .store
                .hints(target, after, cx.parts.config.hint_batch)
            {
                Ok(hints) => hints,
                Err(e) => {
                    tracing::warn!(%target, error = %e, "could not read hints");
                    continue;
                }
            };
            if hints.is_empty() && after.is_some() {
                hints = match cx
                    .parts
                    .store
                    .hints(target, None, cx.parts.config.hint_batch)
                {
                    Ok(hints) => hints,
                    Err(e) => {
                        tracing::warn!(%target, error = %e, "could not read hints");
                        continue;
                    }
                };
            }
            match hints.last() {
                Some(last) => self.hints.cursor.insert(target, last.seq),
                None => {
                    self.hints.cursor.remove(&target);
                    continue;
                }
            };
            // Every shard reads the target's queue; each delivers the hints
            // of its own partitions.
            hints.retain(|hint| self.owns(hint.partition));
            if hints.is_empty() {
                continue;
            }
            self.hints.targets_in_flight.insert(target);
            for hint in hints {
                let request = self.deadlines.next_id();
                let key = WireKey {
                    partition: hint.partition.0,
                    bucket: hint.bucket,
                    key: hint.key,
                };
                let durable = hint.durability == Durability::Sync;
                let object = hint.object.encode();
                let delivery = HintDelivery {
                    target,
                    seq: hint.seq,
                    key: key.clone(),
                    durable,
                    bytes: object.len(),
                };
                self.background.add(object.len());
                let deadline = cx.deadline(now, RETRY_AFTER);
                self.hints
                    .deliveries
                    .insert(&mut self.deadlines, request, deadline, delivery);
                let message = Message::Store {
                    request: Some(request),
                    key,
                    object,
                    sync: durable,
                    stands_in_for: None,
                };
                if cx.parts.buggify.fires(Site::HintSentTwice) {
                    cx.send(target, message.clone());
                }
                cx.send(target, message);
            }
        }
    }

    /// Ends delivery `request`: its time ran out, its frame could not be
    /// sent or its target restarted. The hint stays, offered again in a
    /// later round.
    pub(super) fn end_hint_delivery(&mut self, request: RequestId) {
        if let Some(delivery) = self.hints.end(&mut self.deadlines, request) {
            self.background.remove(delivery.bytes);
        }
    }

    /// A target's answer to a hint delivery; false if `request` is no
    /// delivery in flight to `from` for `key`. Only an acknowledgement that
    /// names the hint (request id and key) from the target's current
    /// incarnation deletes it: older incarnations' frames never get this
    /// far.
    pub(super) fn on_hint_stored<S: Store>(
        &mut self,
        cx: &mut Cx<'_, S>,
        from: Uuid,
        request: RequestId,
        key: &WireKey,
        result: Result<StoredAck, ReplicaError>,
    ) -> bool {
        let answers = self
            .hints
            .deliveries
            .get(request)
            .is_some_and(|d| d.target == from && d.key == *key);
        if !answers {
            return false;
        }
        let delivery = self
            .hints
            .end(&mut self.deadlines, request)
            .expect("checked above");
        self.background.remove(delivery.bytes);
        let HintDelivery {
            target,
            seq,
            durable,
            ..
        } = delivery;
        // A hint of a durably acknowledged write is deleted only on a
        // durable acknowledgement; otherwise it is offered again.
        if result.is_ok_and(|ack| ack.durable || !durable) {
            match cx
                .parts
                .store
                .delete_hint(target, seq, Durability::Buffered)
            {
                Ok(_) => self.stats.hints_delivered += 1,
                Err(e) => {
                    tracing::warn!(%target, seq, error = %e, "could not delete a delivered hint")
                }
            }
        }
        true
    }

    /// Queues a hint of `object` for `primary`; counts and logs a hint that
    /// could not be queued.
    pub(super) fn keep_hint<S: Store>(
        &mut self,
        cx: &mut Cx<'_, S>,
        primary: Uuid,
        key: &WireKey,
        object: &Object,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let keyref = KeyRef::new(PartitionId(key.partition), &key.bucket, &key.key);
        if let Err(e) = cx.parts.store.add_hint(primary, keyref, object, durability) {
            self.stats.hints_dropped += 1;
            tracing::warn!(%primary, error = %e, "could not queue a hint");
            return Err(e);
        }
        Ok(())
    }

    /// Keeps a hint for every target of a retired put the write may not
    /// have reached (for a fallback, for the primary it stood in for), as
    /// Cassandra does for replicas that time out: a replica that is slow,
    /// paused or dead but not yet convicted by the failure detector still
    /// gets the write when it answers again. This node's own copy is never
    /// hinted (it answered at once). Hints are bounded per target by the
    /// store.
    pub(super) fn hint_unreached<S: Store>(
        &mut self,
        cx: &mut Cx<'_, S>,
        key: &WireKey,
        object: &Object,
        sync: bool,
        unreached: Vec<Replica>,
    ) {
        let partition = PartitionId(key.partition);
        for target in unreached {
            let primary = target.stands_in_for().unwrap_or(target.node);
            if target.node == cx.me() || primary == cx.me() || cx.view.has_left(primary) {
                continue;
            }
            let keyref = KeyRef::new(partition, &key.bucket, &key.key);
            match cx
                .parts
                .store
                .add_hint(primary, keyref, object, Durability::from_sync(sync))
            {
                Ok(_) => {
                    self.stats.hints_for_timeouts += 1;
                    tracing::debug!(%primary, "hinted a write its replica did not acknowledge in time");
                }
                Err(e) => {
                    self.stats.hints_dropped += 1;
                    tracing::warn!(%primary, error = %e, "could not queue a hint")
                }
            }
        }
    }
}
