//! Hinted handoff: hints kept for targets of a put that never answered, and
//! their delivery in batches to primaries gossip reports up, each deleted
//! once its primary acknowledged it.
//!
//! A hint round runs every `hint_interval`, and at once when a node comes
//! up or a target acknowledged every hint of its batch: a target that
//! takes its hints gets the next batch without waiting for the interval,
//! so a backlog drains at the pace the target acknowledges, one batch in
//! flight at a time; a target whose batch had a failure waits for the
//! next round.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chorus_ring::PartitionId;
use chorus_storage::object::Object;
use chorus_storage::store::{Durability, KeyRef, Store, StoreError};
use uuid::Uuid;

use super::io::Now;
use super::parts::{Cx, Parts};
use super::requests::{Deadlines, Ledger, RequestId, Requests, RETRY_AFTER};
use crate::buggify::Site;
use crate::core::{Replica, ReplicaError};
use crate::wire::{Message, StoredAck, WireKey};

/// Hint deliveries in flight, where each target's next round reads, and
/// when the next round runs.
#[derive(Debug)]
pub(super) struct Hints {
    deliveries: Requests<HintDelivery>,
    /// Targets with a batch in flight: a target gets one batch at a time.
    targets_in_flight: BTreeSet<Uuid>,
    /// Targets whose batch in flight had a delivery fail (refused, not
    /// durable enough, timed out, not sent): no early round for them.
    failed_batches: BTreeSet<Uuid>,
    /// Per target, the sequence number after which the next hint round
    /// reads, so hints that keep failing never block those behind them.
    cursor: BTreeMap<Uuid, u64>,
    /// When the next round runs (monotonic).
    next_round: Duration,
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
    /// No hint in flight; the first round runs at `first_round`.
    pub(super) fn new(first_round: Duration) -> Hints {
        Hints {
            deliveries: Requests::default(),
            targets_in_flight: BTreeSet::new(),
            failed_batches: BTreeSet::new(),
            cursor: BTreeMap::new(),
            next_round: first_round,
        }
    }

    /// When the next round runs (monotonic).
    pub(super) fn next_round(&self) -> Duration {
        self.next_round
    }

    /// Runs the next round at `now` at the latest.
    pub(super) fn round_now(&mut self, now: Duration) {
        self.next_round = self.next_round.min(now);
    }

    /// Whether a round is due at `now`; if so, the one after is scheduled
    /// `interval` later.
    pub(super) fn round_due(&mut self, now: Duration, interval: Duration) -> bool {
        if now < self.next_round {
            return false;
        }
        self.next_round = now + interval;
        true
    }

    /// Deliveries in flight.
    pub(super) fn len(&self) -> usize {
        self.deliveries.len()
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

    /// Ends delivery `request` (`delivered`: its hint was handed over and
    /// deleted), and its target's batch with its last one. A batch whose
    /// every hint was handed over has the next round run at once: its
    /// target takes hints, so the next batch need not wait.
    fn end(
        &mut self,
        deadlines: &mut Deadlines,
        request: RequestId,
        delivered: bool,
    ) -> Option<HintDelivery> {
        let delivery = self.deliveries.remove(deadlines, request)?;
        let target = delivery.target;
        if !delivered {
            self.failed_batches.insert(target);
        }
        if !self.deliveries.iter().any(|(_, d)| d.target == target) {
            self.targets_in_flight.remove(&target);
            if !self.failed_batches.remove(&target) {
                self.next_round = Duration::ZERO;
            }
        }
        Some(delivery)
    }
}

impl<S: Store> Parts<S> {
    /// Hints queued on this node, per target.
    pub(super) fn pending_hints(&self) -> Result<Vec<(Uuid, usize)>, StoreError> {
        self.store.hint_counts()
    }
}

impl Hints {
    /// A hint round: for each target gossip reports up with no batch in
    /// flight, the next batch of its hints in this shard's partitions.
    pub(super) fn deliver<S: Store>(&mut self, ledger: &mut Ledger, cx: &mut Cx<'_, S>, now: Now) {
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
                || self.targets_in_flight.contains(&target)
            {
                continue;
            }
            if ledger.background_full() {
                // The next round offers them; client requests go first.
                break;
            }
            // Read on from where the last round stopped, and wrap around at
            // the end: a hint that keeps failing never holds back the rest.
            let after = self.cursor.get(&target).copied();
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
                Some(last) => self.cursor.insert(target, last.seq),
                None => {
                    self.cursor.remove(&target);
                    continue;
                }
            };
            // Every shard reads the target's queue; each delivers the hints
            // of its own partitions.
            hints.retain(|hint| ledger.owns(hint.partition));
            if hints.is_empty() {
                continue;
            }
            self.targets_in_flight.insert(target);
            for hint in hints {
                let request = ledger.deadlines.next_id();
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
                ledger.background.add(object.len());
                let deadline = cx.deadline(now, RETRY_AFTER);
                self.deliveries
                    .insert(&mut ledger.deadlines, request, deadline, delivery);
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
    /// later round. False if it is no delivery in flight.
    pub(super) fn end_delivery(&mut self, ledger: &mut Ledger, request: RequestId) -> bool {
        match self.end(&mut ledger.deadlines, request, false) {
            Some(delivery) => {
                ledger.background.remove(delivery.bytes);
                true
            }
            None => false,
        }
    }

    /// A target's answer to a hint delivery; false if `request` is no
    /// delivery in flight to `from` for `key`. Only an acknowledgement that
    /// names the hint (request id and key) from the target's current
    /// incarnation deletes it: older incarnations' frames never get this
    /// far.
    pub(super) fn on_stored<S: Store>(
        &mut self,
        ledger: &mut Ledger,
        cx: &mut Cx<'_, S>,
        from: Uuid,
        request: RequestId,
        key: &WireKey,
        result: Result<StoredAck, ReplicaError>,
    ) -> bool {
        let answers = self
            .deliveries
            .get(request)
            .is_some_and(|d| d.target == from && d.key == *key);
        if !answers {
            return false;
        }
        let (target, seq, durable) = self
            .deliveries
            .get(request)
            .map(|d| (d.target, d.seq, d.durable))
            .expect("checked above");
        // A hint of a durably acknowledged write is deleted only on a
        // durable acknowledgement; otherwise it is offered again.
        let mut delivered = false;
        if result.is_ok_and(|ack| ack.durable || !durable) {
            match cx
                .parts
                .store
                .delete_hint(target, seq, Durability::Buffered)
            {
                Ok(_) => {
                    ledger.stats.hints_delivered += 1;
                    delivered = true;
                }
                Err(e) => {
                    tracing::warn!(%target, seq, error = %e, "could not delete a delivered hint")
                }
            }
        }
        let delivery = self
            .end(&mut ledger.deadlines, request, delivered)
            .expect("checked above");
        ledger.background.remove(delivery.bytes);
        true
    }
}

impl<S: Store> Cx<'_, S> {
    /// Queues a hint of `object` for `primary`; counts and logs a hint that
    /// could not be queued.
    pub(super) fn keep_hint(
        &mut self,
        primary: Uuid,
        key: &WireKey,
        object: &Object,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let keyref = KeyRef::new(PartitionId(key.partition), &key.bucket, &key.key);
        if let Err(e) = self
            .parts
            .store
            .add_hint(primary, keyref, object, durability)
        {
            self.parts.stats.hints_dropped += 1;
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
    pub(super) fn hint_unreached(
        &mut self,
        key: &WireKey,
        object: &Object,
        sync: bool,
        unreached: Vec<Replica>,
    ) {
        let partition = PartitionId(key.partition);
        for target in unreached {
            let primary = target.stands_in_for().unwrap_or(target.node);
            if target.node == self.me() || primary == self.me() || self.view.has_left(primary) {
                continue;
            }
            let keyref = KeyRef::new(partition, &key.bucket, &key.key);
            match self
                .parts
                .store
                .add_hint(primary, keyref, object, Durability::from_sync(sync))
            {
                Ok(_) => {
                    self.parts.stats.hints_for_timeouts += 1;
                    tracing::debug!(%primary, "hinted a write its replica did not acknowledge in time");
                }
                Err(e) => {
                    self.parts.stats.hints_dropped += 1;
                    tracing::warn!(%primary, error = %e, "could not queue a hint")
                }
            }
        }
    }
}
