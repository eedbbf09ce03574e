//! Hinted handoff: hints kept for targets of a put that never answered, and
//! their delivery in batches to primaries gossip reports up, each deleted
//! once its primary acknowledged it.

use chorus_ring::PartitionId;
use chorus_storage::object::Object;
use chorus_storage::store::{Durability, KeyRef, Store, StoreError};
use uuid::Uuid;

use super::requests::{Pending, RETRY_AFTER};
use super::{Engine, Now};
use crate::buggify::Site;
use crate::core::PutCoordinator;
use crate::wire::{Message, WireKey};

impl<S: Store> Engine<S> {
    /// Hints queued on this node, per target.
    pub fn pending_hints(&self) -> Result<Vec<(Uuid, usize)>, StoreError> {
        self.store.hint_counts()
    }

    pub(super) fn deliver_hints(&mut self, now: Now) {
        let counts = match self.store.hint_counts() {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!(error = %e, "could not list hints");
                return;
            }
        };
        for (target, _) in counts {
            if target == self.id
                || !self.is_up(target)
                || self.hint_targets_in_flight.contains(&target)
            {
                continue;
            }
            if self.background_full() {
                // The next round offers them; client requests go first.
                break;
            }
            // Read on from where the last round stopped, and wrap around at
            // the end: a hint that keeps failing never holds back the rest.
            let after = self.hint_cursor.get(&target).copied();
            let mut hints = match self.store.hints(target, after, self.config.hint_batch) {
                Ok(hints) => hints,
                Err(e) => {
                    tracing::warn!(%target, error = %e, "could not read hints");
                    continue;
                }
            };
            if hints.is_empty() && after.is_some() {
                hints = match self.store.hints(target, None, self.config.hint_batch) {
                    Ok(hints) => hints,
                    Err(e) => {
                        tracing::warn!(%target, error = %e, "could not read hints");
                        continue;
                    }
                };
            }
            match hints.last() {
                Some(last) => self.hint_cursor.insert(target, last.seq),
                None => {
                    self.hint_cursor.remove(&target);
                    continue;
                }
            };
            self.hint_targets_in_flight.insert(target);
            for hint in hints {
                let request = self.new_request();
                let key = WireKey {
                    partition: hint.partition.0,
                    bucket: hint.bucket,
                    key: hint.key,
                };
                let durable = hint.durability == Durability::Sync;
                let object = hint.object.encode();
                self.pending.insert(
                    request,
                    Pending::Hint {
                        target,
                        seq: hint.seq,
                        key: key.clone(),
                        durable,
                        bytes: object.len(),
                    },
                );
                self.background.requests += 1;
                self.background.bytes += object.len();
                self.set_deadline(now, request, RETRY_AFTER);
                let store = Message::Store {
                    request,
                    key,
                    object,
                    sync: durable,
                    hint_for: None,
                };
                if self.buggify.fires(Site::HintSentTwice) {
                    self.send(target, store.clone());
                }
                self.send(target, store);
            }
        }
    }

    pub(super) fn finish_hint_target(&mut self, target: Uuid) {
        let still = self
            .pending
            .values()
            .any(|p| matches!(p, Pending::Hint { target: t, .. } if *t == target));
        if !still {
            self.hint_targets_in_flight.remove(&target);
        }
    }

    /// Keeps a hint for every target of a retired put that never answered
    /// (for a fallback, for the primary it stood in for), as Cassandra does
    /// for replicas that time out: a replica that is slow or paused but not
    /// convicted by the failure detector still gets the write when it
    /// answers again. Hints are bounded per target by the store.
    pub(super) fn hint_unanswered(
        &mut self,
        key: &WireKey,
        object: &Object,
        sync: bool,
        coordinator: &PutCoordinator,
    ) {
        let partition = PartitionId(key.partition);
        for target in coordinator.unanswered() {
            let primary = target.hint().unwrap_or(target.node);
            if primary == self.id || self.has_left(primary) {
                continue;
            }
            let keyref = KeyRef::new(partition, &key.bucket, &key.key);
            match self
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
