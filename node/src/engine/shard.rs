//! A shard: the request side of a disjoint set of partitions.
//!
//! Partition `p` belongs to shard `p % shards`. A shard owns the request
//! state for keys in its partitions: the gets and puts it coordinates, the
//! writes it forwarded, the forwarded writes it coordinated, its hint
//! deliveries and hint round, its admission queue, its share of the
//! background budget, and its counters. Its request ids carry its index
//! ([`requests::first_request_id`](super::requests::first_request_id)), so
//! replies come back to it.
//!
//! The coordinator of a key and the local replica of the key's partition
//! are in the same shard: a coordinator's call to its own replica never
//! crosses shards.
//!
//! A shard reads the cluster only through the [`ClusterView`] membership
//! publishes, and reaches its parts — the store (through
//! `vnode.rs` and `hints.rs`), the clock, the effect queue, the seeded
//! generator, the fault sites — through a [`Cx`] the router hands it for
//! one input. What it learns that membership must know it reports in
//! [`Cx::facts`], which the router acts on after the call.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use chorus_ring::PartitionId;
use chorus_storage::store::Store;
use uuid::Uuid;

use super::admission::Queued;
use super::coordinator::{GetRequest, PutRequest};
use super::forward::{ForwardedRequest, SeenForwards};
use super::hints::Hints;
use super::requests::{Background, Deadlines, RequestId, Requests};
use super::view::{ClusterView, Facts};
use super::{ClientId, ClientReply, ClientRequest, Effect, EngineConfig, EngineStats, Now, Parts};
use crate::api::{ReadRequest, RequestError};
use crate::buggify::Site;
use crate::core::ReplicaError;
use crate::wire::{decode_object, Message, StoredAck, WireKey};

/// The shard of `shards` that owns `partition`.
pub(super) fn shard_of_partition(partition: PartitionId, shards: usize) -> usize {
    partition.0 as usize % shards
}

/// What a shard may hold: its share of the node's configured budgets,
/// split evenly between the shards (at least 1 each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Budget {
    /// Requests in flight whose client still waits.
    pub(super) max_pending_requests: usize,
    /// Background requests (answered gets and puts, hint deliveries).
    pub(super) max_background_requests: usize,
    /// Bytes background requests hold.
    pub(super) max_background_bytes: usize,
    /// Client requests waiting for admission.
    pub(super) max_queued_requests: usize,
    /// Bytes of values waiting for admission.
    pub(super) max_queued_bytes: usize,
}

impl Budget {
    /// One shard's share of `config`'s budgets among `shards`.
    pub(super) fn share(config: &EngineConfig, shards: usize) -> Budget {
        let share = |total: usize| (total / shards).max(1);
        Budget {
            max_pending_requests: share(config.max_pending_requests),
            max_background_requests: share(config.max_background_requests),
            max_background_bytes: share(config.max_background_bytes),
            max_queued_requests: share(config.max_queued_requests),
            max_queued_bytes: share(config.max_queued_bytes),
        }
    }
}

/// What a shard reaches for one input: the cluster as membership sees it,
/// the shard's parts, the input's time, and the facts it reports
/// back to the router.
pub(super) struct Cx<'a, S> {
    pub(super) view: &'a ClusterView,
    pub(super) parts: &'a mut Parts<S>,
    pub(super) now: Now,
    pub(super) facts: Facts,
}

impl<S: Store> Cx<'_, S> {
    /// This node's id.
    pub(super) fn me(&self) -> Uuid {
        self.view.id
    }

    /// Sends `message` to `to` at the address the view gives for it.
    pub(super) fn send(&mut self, to: Uuid, message: Message) {
        self.parts.send(self.view, to, message);
    }

    pub(super) fn reply(&mut self, client: ClientId, result: Result<ClientReply, RequestError>) {
        self.parts
            .effects
            .push_back(Effect::Reply { client, result });
    }

    /// When a request started now and given `after` is due.
    pub(super) fn deadline(&mut self, now: Now, after: Duration) -> Duration {
        self.parts.deadline(now, after)
    }
}

/// The request side of the partitions `p` with `p % shards == index`.
#[derive(Debug)]
pub(super) struct Shard {
    /// This shard's index.
    pub(super) index: usize,
    /// How many shards the node runs.
    pub(super) shards: usize,
    /// Its share of the node's budgets.
    pub(super) budget: Budget,
    /// Request ids, and the deadlines of every request in flight.
    pub(super) deadlines: Deadlines,
    /// Gets this shard coordinates.
    pub(super) gets: Requests<GetRequest>,
    /// Puts this shard coordinates.
    pub(super) puts: Requests<PutRequest>,
    /// Writes this shard forwarded to the replica coordinating them.
    pub(super) forwards: Requests<ForwardedRequest>,
    /// Hint deliveries in flight.
    pub(super) hints: Hints,
    /// When the next hint round runs.
    pub(super) next_hint_round: Duration,
    /// Client requests waiting for admission, oldest first.
    pub(super) admission: VecDeque<Queued>,
    /// Bytes of values in `admission`.
    pub(super) queued_bytes: usize,
    /// Background work in flight: answered gets and puts, hint deliveries.
    pub(super) background: Background,
    /// Forwarded writes already coordinated, per sender and the sender's
    /// shard: a frame delivered twice must not apply its write twice.
    pub(super) forwards_seen: BTreeMap<(Uuid, usize), SeenForwards>,
    /// This shard's counters.
    pub(super) stats: EngineStats,
}

impl Shard {
    /// Shard `index` of `shards` of an incarnation started at `generation`.
    pub(super) fn new(
        index: usize,
        shards: usize,
        config: &EngineConfig,
        generation: u64,
        now: Now,
    ) -> Shard {
        Shard {
            index,
            shards,
            budget: Budget::share(config, shards),
            deadlines: Deadlines::new(generation, index),
            gets: Requests::default(),
            puts: Requests::default(),
            forwards: Requests::default(),
            hints: Hints::default(),
            next_hint_round: now.mono,
            admission: VecDeque::new(),
            queued_bytes: 0,
            background: Background::default(),
            forwards_seen: BTreeMap::new(),
            stats: EngineStats::default(),
        }
    }

    /// Whether `partition` is one of this shard's.
    pub(super) fn owns(&self, partition: PartitionId) -> bool {
        shard_of_partition(partition, self.shards) == self.index
    }

    /// The counters, with the gauges of what is in flight now.
    pub(super) fn stats(&self) -> EngineStats {
        EngineStats {
            pending_requests: self.requests_in_flight(),
            queued_requests: self.admission.len(),
            background_requests: self.background.requests,
            background_bytes: self.background.bytes,
            ..self.stats
        }
    }

    /// The latest time by which [`Shard::on_tick`] must run.
    pub(super) fn next_wakeup(&self) -> Duration {
        let mut next = self.next_hint_round;
        if let Some(deadline) = self.deadlines.first() {
            next = next.min(deadline);
        }
        if let Some(deadline) = self.admission.iter().map(Queued::deadline).min() {
            next = next.min(deadline);
        }
        next
    }

    /// Offers hints at the next tick rather than at the next round (a
    /// node came up, or one left and nothing waits for it any more).
    pub(super) fn hint_round_now(&mut self, now: Now) {
        self.next_hint_round = self.next_hint_round.min(now.mono);
    }

    /// Time passed: expires requests and queued client requests, runs the
    /// hint round when due, and admits what waits.
    pub(super) fn on_tick<S: Store>(&mut self, cx: &mut Cx<'_, S>, now: Now) {
        while let Some(request) = self.deadlines.pop_due(now.mono) {
            self.expire(cx, request);
        }
        self.expire_queued(cx, now);
        if now.mono >= self.next_hint_round {
            self.next_hint_round = now.mono + cx.parts.config.hint_interval;
            if !cx.parts.buggify.fires(Site::HintRoundSkipped) {
                self.deliver_hints(cx, now);
            }
        }
        self.admit_queued(cx, now);
    }

    /// A client request for a key in this shard's partitions. Exactly one
    /// [`Effect::Reply`] with `client` follows, now or later.
    pub(super) fn handle_client<S: Store>(
        &mut self,
        cx: &mut Cx<'_, S>,
        now: Now,
        client: ClientId,
        request: ClientRequest,
    ) {
        if let Err(error) = self.admit(cx, &request) {
            if matches!(error, RequestError::Overloaded(_)) {
                self.stats.refused_overloaded += 1;
            }
            cx.reply(client, Err(error));
            return;
        }
        self.shed_background_held_by_one_replica(cx);
        if !self.admission.is_empty() || self.background_full() {
            self.enqueue(cx, now, client, request);
            return;
        }
        self.dispatch(cx, now, client, request);
    }

    /// Starts an admitted client request.
    pub(super) fn dispatch<S: Store>(
        &mut self,
        cx: &mut Cx<'_, S>,
        now: Now,
        client: ClientId,
        request: ClientRequest,
    ) {
        match request {
            ClientRequest::Get(read) => self.start_get(cx, now, client, read, None),
            ClientRequest::Put(write) if write.value.is_none() && write.context.is_none() => {
                // A delete without a context deletes what a read at the
                // request's `r` finds (Riak's behaviour), never nothing.
                let read = ReadRequest {
                    bucket: write.bucket.clone(),
                    key: write.key.clone(),
                    options: write.options,
                };
                self.start_get(cx, now, client, read, Some(write));
            }
            ClientRequest::Put(write) => self.start_put(cx, now, client, write),
        }
    }

    /// A data-plane message from `from` (of generation `generation`) for
    /// this shard: a replica's request for a key in its partitions, a
    /// forwarded write, or an answer to a request it made.
    pub(super) fn on_message<S: Store>(
        &mut self,
        cx: &mut Cx<'_, S>,
        now: Now,
        from: Uuid,
        generation: u64,
        message: Message,
    ) {
        match message {
            Message::Store {
                request,
                key,
                object,
                sync,
                stands_in_for,
            } => {
                let result = cx.on_store(now, &key, &object, sync, stands_in_for);
                let answered =
                    request.filter(|_| !cx.parts.buggify.fires(Site::ReplicaReplyDropped));
                if let Some(request) = answered {
                    cx.send(
                        from,
                        Message::Stored {
                            request,
                            key,
                            result: result.map(|()| StoredAck { durable: sync }),
                        },
                    );
                }
            }
            Message::Stored {
                request,
                key,
                result,
            } => self.on_stored(cx, from, request, &key, result),
            Message::Read { request, key } => {
                let result = cx
                    .read_local(&key)
                    .map(|o| serde_bytes::ByteBuf::from(o.encode()));
                if !cx.parts.buggify.fires(Site::ReplicaReplyDropped) {
                    cx.send(
                        from,
                        Message::ReadReply {
                            request,
                            key,
                            result,
                        },
                    );
                }
            }
            Message::ReadReply {
                request,
                key,
                result,
            } => {
                if !self.awaits_read(from, request, &key) {
                    return;
                }
                let result = match result {
                    Ok(bytes) => match decode_object(&bytes) {
                        Ok(object) => cx.observe(now, from, object),
                        Err(e) => Err(ReplicaError::Refused(e.to_string())),
                    },
                    Err(e) => Err(e),
                };
                self.on_read_reply(cx, from, request, &key, result);
            }
            Message::Forward { request, write } => {
                self.on_forward(cx, now, from, generation, request, write)
            }
            Message::ForwardReply {
                request,
                bucket,
                key,
                result,
            } => self.on_forward_reply(cx, from, request, &bucket, &key, result),
            Message::Gossip(_) | Message::RingFetch { .. } | Message::RingPush { .. } => {
                unreachable!("the router hands membership messages to membership")
            }
        }
    }

    /// A request frame of this shard's that could not be sent to `to`
    /// (see [`Engine::handle_send_failed`](super::Engine::handle_send_failed)).
    pub(super) fn on_send_failed<S: Store>(
        &mut self,
        cx: &mut Cx<'_, S>,
        to: SocketAddr,
        message: Message,
    ) {
        match message {
            Message::Store {
                request: Some(request),
                key,
                ..
            } => {
                let node = match self.puts.get(request) {
                    Some(put) => put
                        .unanswered()
                        .into_iter()
                        .map(|t| t.node)
                        .find(|&node| cx.view.address_of(node) == Some(to)),
                    None => self.hints.target_of(request),
                };
                if let Some(node) = node {
                    tracing::debug!(%node, %to, request, "a write could not be sent to its replica");
                    self.on_stored(cx, node, request, &key, Err(ReplicaError::Unreachable));
                }
            }
            Message::Read { request, key } => {
                let node = self.gets.get(request).and_then(|get| {
                    get.unanswered()
                        .find(|&node| cx.view.address_of(node) == Some(to))
                });
                if let Some(node) = node {
                    tracing::debug!(%node, %to, request, "a read could not be sent to its replica");
                    self.on_read_reply(cx, node, request, &key, Err(ReplicaError::Unreachable));
                }
            }
            Message::Forward { request, .. } => {
                let forwarded_there = self
                    .forwards
                    .get(request)
                    .is_some_and(|f| cx.view.address_of(f.to()) == Some(to));
                if forwarded_there {
                    let forwarded = self
                        .forwards
                        .remove(&mut self.deadlines, request)
                        .expect("checked above");
                    let (client, error) = forwarded.on_send_failed();
                    cx.reply(client, Err(error));
                }
            }
            _ => {}
        }
    }

    // ----- requests in flight -----

    /// Requests in flight, of every kind.
    pub(super) fn requests_in_flight(&self) -> usize {
        self.gets.len() + self.puts.len() + self.forwards.len() + self.hints.len()
    }

    /// A replica's answer to a write: to a put this shard coordinates, or
    /// to a hint delivery.
    fn on_stored<S: Store>(
        &mut self,
        cx: &mut Cx<'_, S>,
        from: Uuid,
        request: RequestId,
        key: &WireKey,
        result: Result<StoredAck, ReplicaError>,
    ) {
        if self.puts.get(request).is_some() {
            self.on_put_stored(cx, from, request, key, result);
        } else {
            self.on_hint_stored(cx, from, request, key, result);
        }
    }

    /// A request's time ran out: its kind decides what follows.
    fn expire<S: Store>(&mut self, cx: &mut Cx<'_, S>, request: RequestId) {
        if let Some(get) = self.gets.get_mut(request) {
            let progress = get.on_timeout();
            self.on_get_progress(cx, request, progress);
        } else if let Some(put) = self.puts.get_mut(request) {
            let progress = put.on_timeout();
            self.on_put_progress(cx, request, progress);
        } else if let Some(forwarded) = self.forwards.remove(&mut self.deadlines, request) {
            tracing::debug!(to = %forwarded.to(), "forwarded write timed out");
            let (client, error) = forwarded.on_timeout();
            cx.reply(client, Err(error));
        } else if self.hints.contains(request) {
            self.end_hint_delivery(request);
        }
    }

    /// `node` restarted: what it had not answered yet will never be answered
    /// by the old process. Reads and replica writes in flight are sent again
    /// to the new incarnation under the same request id (its answer names
    /// the request and key, and comes from the generation now known), so
    /// they finish without waiting for their timeout. A hint delivery ends
    /// (it is offered again next round). A write forwarded to it for
    /// coordination may have been applied by the old process, so it is
    /// answered as indeterminate rather than coordinated twice.
    pub(super) fn resend_to_restarted<S: Store>(&mut self, cx: &mut Cx<'_, S>, node: Uuid) {
        self.for_requests_waiting_on(cx, node, WaitingAction::Resend);
    }

    /// The failure detector convicted `node`: the gets and puts still
    /// waiting for its answer count it as failed
    /// ([`ReplicaError::Unreachable`]) now rather than at their timeout,
    /// so a put decides on the replicas left and, once retired, hints
    /// `node` (it may never have had the write), and the background work
    /// its answers held stops holding admission back. Its hint deliveries
    /// end (the hints stay). A write forwarded to it waits for its answer
    /// or timeout: it may have been applied.
    pub(super) fn fail_requests_to<S: Store>(&mut self, cx: &mut Cx<'_, S>, node: Uuid) {
        self.for_requests_waiting_on(cx, node, WaitingAction::Fail);
    }

    fn for_requests_waiting_on<S: Store>(
        &mut self,
        cx: &mut Cx<'_, S>,
        node: Uuid,
        action: WaitingAction,
    ) {
        enum Waiting {
            Get,
            Put,
            Hint,
            Forwarded,
        }
        let mut waiting: Vec<(RequestId, Waiting)> = Vec::new();
        waiting.extend(
            self.gets
                .iter()
                .filter(|(_, get)| get.unanswered().any(|t| t == node))
                .map(|(request, _)| (request, Waiting::Get)),
        );
        waiting.extend(
            self.puts
                .iter()
                .filter(|(_, put)| put.unanswered().iter().any(|t| t.node == node))
                .map(|(request, _)| (request, Waiting::Put)),
        );
        waiting.extend(
            self.hints
                .deliveries_to(node)
                .map(|request| (request, Waiting::Hint)),
        );
        waiting.extend(
            self.forwards
                .iter()
                .filter(|(_, forwarded)| forwarded.to() == node)
                .map(|(request, _)| (request, Waiting::Forwarded)),
        );
        // In the order the requests were made, whatever their kind.
        waiting.sort_by_key(|&(request, _)| request);
        for (request, kind) in waiting {
            match kind {
                Waiting::Get => {
                    let Some(get) = self.gets.get(request) else {
                        continue;
                    };
                    let key = get.key().clone();
                    match action {
                        WaitingAction::Resend => cx.send(node, Message::Read { request, key }),
                        WaitingAction::Fail => self.on_read_reply(
                            cx,
                            node,
                            request,
                            &key,
                            Err(ReplicaError::Unreachable),
                        ),
                    }
                }
                Waiting::Put => {
                    let Some(put) = self.puts.get(request) else {
                        continue;
                    };
                    let unanswered = put.unanswered();
                    let Some(target) = unanswered.iter().find(|t| t.node == node) else {
                        continue;
                    };
                    match action {
                        WaitingAction::Resend => {
                            let message = put.store_message(request, target);
                            cx.send(node, message);
                        }
                        WaitingAction::Fail => {
                            let key = put.key().clone();
                            self.on_stored(cx, node, request, &key, Err(ReplicaError::Unreachable));
                        }
                    }
                }
                Waiting::Hint => self.end_hint_delivery(request),
                Waiting::Forwarded => {
                    if matches!(action, WaitingAction::Fail) {
                        continue;
                    }
                    let Some(forwarded) = self.forwards.remove(&mut self.deadlines, request) else {
                        continue;
                    };
                    let (client, error) = forwarded.on_timeout();
                    cx.reply(client, Err(error));
                }
            }
        }
    }
}

/// What to do with the requests that wait for one node's answer.
#[derive(Debug, Clone, Copy)]
enum WaitingAction {
    /// It restarted: ask its new incarnation again.
    Resend,
    /// It was convicted: count it as failed.
    Fail,
}
