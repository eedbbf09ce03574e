//! Gets and puts this node coordinates: placing a request's targets on the
//! preference list, applying a put locally and sending it to the other
//! targets, recording replicas' answers in the pure coordinators of
//! [`crate::core`], answering the client (or the node that forwarded the
//! write), and repairing stale replicas once a get is done.

use std::collections::BTreeSet;
use std::time::Duration;

use chorus_ring::PartitionId;
use chorus_storage::context::CausalContext;
use chorus_storage::object::Object;
use chorus_storage::store::{Durability, KeyRef, Store, Update};
use uuid::Uuid;

use super::forward::{forward_error, FORWARD_GRACE};
use super::requests::Pending;
use super::{ClientId, ClientReply, Engine, Now};
use crate::api::{ReadRequest, RequestError, WriteReply, WriteRequest};
use crate::core::{
    context_bound, coordinate_write, place, ClientWrite, GetCoordinator, PreferenceList,
    PutCoordinator, Recorded, Replica, ReplicaError, ResolvedOptions,
};
use crate::wire::{ForwardError, ForwardedReply, ForwardedWrite, Message, StoredAck, WireKey};

/// Who is waiting for the outcome of a coordinated write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    Client(ClientId),
    /// A node forwarded the write; its reply names the key.
    Forward {
        node: Uuid,
        request: u64,
        bucket: Vec<u8>,
        key: Vec<u8>,
    },
}

impl<S: Store> Engine<S> {
    pub(super) fn preference_list(
        &self,
        bucket: &[u8],
        key: &[u8],
    ) -> (PartitionId, PreferenceList) {
        let ring = self
            .ring
            .as_ref()
            .expect("requests are admitted only with a ring");
        let list = ring.preference_list_for_key(bucket, key);
        (
            list.partition(),
            PreferenceList::new(list.primaries().to_vec(), list.fallbacks().to_vec()),
        )
    }

    pub(super) fn up_set(&self, list: &PreferenceList) -> BTreeSet<Uuid> {
        list.primaries()
            .iter()
            .chain(list.fallbacks())
            .copied()
            .filter(|&node| self.is_up(node))
            .collect()
    }

    pub(super) fn start_get(
        &mut self,
        now: Now,
        client: ClientId,
        read: ReadRequest,
        then_delete: Option<WriteRequest>,
    ) {
        self.stats.gets += 1;
        let (partition, list) = self.preference_list(&read.bucket, &read.key);
        let options = match read.options.resolve(list.n()) {
            Ok(options) => options,
            Err(e) => return self.reply(client, Err(e.into())),
        };
        let targets = place(&list, &self.up_set(&list), options.sloppy);
        let key = WireKey {
            partition: partition.0,
            bucket: read.bucket,
            key: read.key,
        };
        let request = self.new_request();
        let coordinator = GetCoordinator::new(list.n(), options.r, options.pr, targets.clone());
        self.pending.insert(
            request,
            Pending::Get {
                client,
                key: key.clone(),
                coordinator,
                targets: targets.len(),
                replies: 0,
                answered: false,
                then_delete,
            },
        );
        self.set_deadline(now, request, Duration::from_millis(options.timeout_ms));
        for target in &targets {
            if target.node == self.id {
                let result = self.read_local(&key);
                self.on_read_reply(self.id, request, &key, result);
            } else {
                self.send(
                    target.node,
                    Message::Read {
                        request,
                        key: key.clone(),
                    },
                );
            }
        }
        self.settle(request);
    }

    pub(super) fn start_put(&mut self, now: Now, client: ClientId, write: WriteRequest) {
        self.stats.puts += 1;
        let (partition, list) = self.preference_list(&write.bucket, &write.key);
        let options = match write.options.resolve(list.n()) {
            Ok(options) => options,
            Err(e) => return self.reply(client, Err(e.into())),
        };
        let targets = place(&list, &self.up_set(&list), options.sloppy);
        let return_body = write.options.return_body;
        if targets.iter().any(|t| t.node == self.id) {
            let context = write.context.unwrap_or_default();
            let key = WireKey {
                partition: partition.0,
                bucket: write.bucket,
                key: write.key,
            };
            self.coordinate_put(
                now,
                Origin::Client(client),
                key,
                write.value,
                write.content_type,
                context,
                options,
                return_body,
                &list,
                targets,
            );
            return;
        }
        let Some(to) = targets
            .iter()
            .find(|t| t.is_primary())
            .or(targets.first())
            .map(|t| t.node)
        else {
            // Nobody can take the write: the coordinator reports the tally.
            let coordinator =
                PutCoordinator::new(list.n(), options.w, options.pw, options.sync, vec![]);
            let error = coordinator
                .outcome()
                .and_then(Result::err)
                .expect("a put with no targets cannot succeed");
            return self.reply(client, Err(error.into()));
        };
        self.stats.forwarded += 1;
        let request = self.new_request();
        self.pending.insert(
            request,
            Pending::Forwarded {
                client,
                to,
                bucket: write.bucket.clone(),
                key: write.key.clone(),
                w: options.w,
                pw: options.pw,
            },
        );
        self.set_deadline(
            now,
            request,
            Duration::from_millis(options.timeout_ms) + FORWARD_GRACE,
        );
        let forwarded = ForwardedWrite {
            bucket: write.bucket,
            key: write.key,
            value: write.value,
            content_type: write.content_type,
            context: write.context.map(|c| c.to_bytes()),
            w: options.w,
            pw: options.pw,
            timeout_ms: options.timeout_ms,
            sync: options.sync,
            sloppy: options.sloppy,
            return_body,
        };
        self.send(
            to,
            Message::Forward {
                request,
                write: forwarded,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn coordinate_put(
        &mut self,
        now: Now,
        origin: Origin,
        key: WireKey,
        value: Option<Vec<u8>>,
        content_type: Option<String>,
        context: CausalContext,
        options: ResolvedOptions,
        return_body: bool,
        list: &PreferenceList,
        targets: Vec<Replica>,
    ) {
        let n = list.n();
        let uncovered = uncovered_primaries(list, &targets);
        let partition = PartitionId(key.partition);
        let actor = match self.actor(partition) {
            Ok(actor) => actor,
            Err(e) => {
                return self.finish_origin(origin, Err(ForwardError::Internal(e.to_string())))
            }
        };
        let timestamp = self.hlc.now(now.wall_ms);
        if let Err(e) = self.persist_clock() {
            return self.finish_origin(origin, Err(ForwardError::Internal(e.to_string())));
        }
        let bound = context_bound(timestamp, self.config.hlc.max_drift);
        let durability = Durability::from_sync(options.sync);
        let write = ClientWrite {
            context: context.clone(),
            value,
            content_type,
            lww: self.config.unsafe_controls.last_writer_wins,
        };
        let stored = self.store.update(
            KeyRef::new(partition, &key.bucket, &key.key),
            durability,
            |object| match coordinate_write(object, write, actor, timestamp, bound) {
                Ok(dot) => Update::Write(Ok((object.clone(), dot))),
                Err(refused) => Update::Keep(Err(refused)),
            },
        );
        let (object, dot) = match stored {
            Ok(Ok(stored)) => stored,
            Ok(Err(refused)) => {
                return self.finish_origin(origin, Err(ForwardError::Write(refused)))
            }
            Err(e) => {
                return self.finish_origin(origin, Err(ForwardError::Internal(e.to_string())))
            }
        };
        self.mark_holds_data();
        let own = targets
            .iter()
            .find(|t| t.node == self.id)
            .copied()
            .expect("the coordinator is a target");
        // Hints: for the primary this node stands in for, and for every
        // primary that is down with no fallback taking its place (as
        // Cassandra's coordinators do). Hints never count toward `w`.
        let hinted = own.hint().into_iter().chain(uncovered);
        let mut own_hint_failed = None;
        for primary in hinted {
            let keyref = KeyRef::new(partition, &key.bucket, &key.key);
            if let Err(e) = self.store.add_hint(primary, keyref, &object, durability) {
                self.stats.hints_dropped += 1;
                tracing::warn!(%primary, error = %e, "could not queue a hint");
                // The local copy stands; the primary gets it by read repair.
                if own.hint() == Some(primary) {
                    own_hint_failed = Some(e);
                }
            }
        }
        let mut coordinator =
            PutCoordinator::new(n, options.w, options.pw, options.sync, targets.clone());
        match own_hint_failed {
            // A fallback's copy counts only with the hint that hands it
            // over, as for a fallback that is not the coordinator.
            Some(e) => coordinator.add_failure(self.id, ReplicaError::Storage(e.to_string())),
            None => coordinator.add_ack(self.id, options.sync),
        };
        let request = self.new_request();
        let encoded = object.encode();
        self.pending.insert(
            request,
            Pending::Put {
                origin,
                key: key.clone(),
                object: object.clone(),
                sync: options.sync,
                coordinator,
                reply: WriteReply::Written {
                    context: if self.config.unsafe_controls.whole_context_in_write_replies {
                        object.context().clone()
                    } else {
                        object.context_for_writer(&context, dot)
                    },
                    object: return_body.then(|| object.clone()),
                },
                targets: targets.len(),
                answers: 1,
                answered: false,
                bytes: encoded.len(),
            },
        );
        self.set_deadline(now, request, Duration::from_millis(options.timeout_ms));
        let me = self.id;
        for target in targets.iter().filter(|t| t.node != me) {
            self.send(
                target.node,
                Message::Store {
                    request,
                    key: key.clone(),
                    object: encoded.clone(),
                    sync: options.sync,
                    hint_for: target.hint(),
                },
            );
        }
        self.settle(request);
    }

    /// Whether a read reply from `from` answers a get in flight: the
    /// request id is one of this incarnation's gets and names the same key.
    pub(super) fn awaits_read(&self, from: Uuid, request: u64, key: &WireKey) -> bool {
        let awaited = matches!(
            self.pending.get(&request),
            Some(Pending::Get { key: k, .. }) if k == key
        );
        if !awaited {
            tracing::debug!(%from, request, "a read reply that answers no get in flight");
        }
        awaited
    }

    pub(super) fn on_read_reply(
        &mut self,
        from: Uuid,
        request: u64,
        key: &WireKey,
        result: Result<Object, ReplicaError>,
    ) {
        let Some(Pending::Get {
            coordinator,
            replies,
            key: awaited,
            ..
        }) = self.pending.get_mut(&request)
        else {
            return;
        };
        if awaited != key {
            return;
        }
        if coordinator.add_reply(from, result) == Recorded::Accepted {
            *replies += 1;
        }
        self.settle(request);
    }

    pub(super) fn on_stored(
        &mut self,
        from: Uuid,
        request: u64,
        key: &WireKey,
        result: Result<StoredAck, ReplicaError>,
    ) {
        match self.pending.get_mut(&request) {
            Some(Pending::Put {
                coordinator,
                answers,
                key: awaited,
                ..
            }) if awaited == key => {
                let recorded = match result {
                    Ok(ack) => coordinator.add_ack(from, ack.durable),
                    Err(error) => coordinator.add_failure(from, error),
                };
                if recorded == Recorded::Accepted {
                    *answers += 1;
                }
                self.settle(request);
            }
            // Only an acknowledgement that names the hint (request id and
            // key) from the target's current incarnation deletes it: older
            // incarnations' frames never get this far.
            Some(Pending::Hint {
                target,
                seq,
                key: hinted,
                durable,
                ..
            }) if *target == from && hinted == key => {
                let (target, seq, durable) = (*target, *seq, *durable);
                self.take_pending(request);
                // A hint of a durably acknowledged write is deleted only on a
                // durable acknowledgement; otherwise it is offered again.
                if result.is_ok_and(|ack| ack.durable || !durable) {
                    match self.store.delete_hint(target, seq, Durability::Buffered) {
                        Ok(_) => self.stats.hints_delivered += 1,
                        Err(e) => {
                            tracing::warn!(%target, seq, error = %e, "could not delete a delivered hint")
                        }
                    }
                }
                self.finish_hint_target(target);
            }
            _ => {}
        }
    }

    pub(super) fn answer(&mut self, origin: Origin, result: Result<ClientReply, RequestError>) {
        match origin {
            Origin::Client(client) => self.reply(client, result),
            Origin::Forward {
                node,
                request,
                bucket,
                key,
            } => {
                let result = match result {
                    Ok(ClientReply::Write(WriteReply::Written { context, object })) => {
                        Ok(ForwardedReply {
                            context: context.to_bytes(),
                            object: object.map(|o| o.encode()),
                        })
                    }
                    Ok(ClientReply::Write(WriteReply::NothingToDelete { .. })) => {
                        unreachable!("a forwarded write carries a context")
                    }
                    Ok(ClientReply::Read(_)) => unreachable!("a forwarded request is a write"),
                    Err(RequestError::Put(e)) => Err(ForwardError::Put(e)),
                    Err(RequestError::Write(e)) => Err(ForwardError::Write(e)),
                    Err(RequestError::Unavailable(e) | RequestError::Overloaded(e)) => {
                        Err(ForwardError::Unavailable(e))
                    }
                    Err(other) => Err(ForwardError::Internal(other.to_string())),
                };
                self.send(
                    node,
                    Message::ForwardReply {
                        request,
                        bucket,
                        key,
                        result,
                    },
                );
            }
        }
    }

    /// Answers a write that failed before a coordinator existed.
    pub(super) fn finish_origin(
        &mut self,
        origin: Origin,
        result: Result<ForwardedReply, ForwardError>,
    ) {
        match origin {
            Origin::Client(client) => {
                let result = match result {
                    Ok(_) => unreachable!("only failures finish early"),
                    Err(error) => Err(forward_error(error)),
                };
                self.reply(client, result);
            }
            Origin::Forward {
                node,
                request,
                bucket,
                key,
            } => self.send(
                node,
                Message::ForwardReply {
                    request,
                    bucket,
                    key,
                    result,
                },
            ),
        }
    }
}

/// The primaries that are neither targets nor stood in for by a fallback.
pub(super) fn uncovered_primaries(list: &PreferenceList, targets: &[Replica]) -> Vec<Uuid> {
    list.primaries()
        .iter()
        .copied()
        .filter(|&p| !targets.iter().any(|t| t.node == p || t.hint() == Some(p)))
        .collect()
}
