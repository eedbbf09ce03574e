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
//! A shard reads the cluster only through the
//! [`ClusterView`](super::view::ClusterView) membership publishes, and reaches its parts — the store (through
//! `vnode.rs` and `hints.rs`), the clock, the effect queue, the seeded
//! generator, the fault sites — through a [`Cx`](super::parts::Cx) the router hands it for
//! one input. What it learns that membership must know it reports in
//! [`Cx::facts`](super::parts::Cx::facts), which the router acts on after the call.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use chorus_storage::store::Store;
use uuid::Uuid;

use super::admission::{self, Admission};
use super::config::EngineConfig;
use super::coordinator::{self, Coordinator};
use super::forward::{self, Forwards};
use super::hints::Hints;
use super::io::{ClientId, ClientRequest, EngineStats, Now};
use super::parts::{Cx, Parts};
use super::requests::{Ledger, Origin, RequestId, ToForward};
use crate::api::{ReadRequest, RequestError};
use crate::buggify::Site;
use crate::core::ReplicaError;
use crate::wire::{decode_object, Message, StoredAck, WireKey};

/// A shard and the parts it owns.
#[derive(Debug)]
pub(super) struct ShardSlot<S> {
    pub(super) shard: Shard,
    pub(super) parts: Parts<S>,
}

/// The request side of the partitions `p` with `p % shards == index`: a
/// ledger and one handler per kind of request, composed. The handlers
/// never call each other; what one leaves for another (a write to
/// forward, a forwarded write to coordinate) comes back here as data.
#[derive(Debug)]
pub(super) struct Shard {
    /// Request ids and deadlines, background work, budgets and counters,
    /// lent to one handler at a time.
    pub(super) ledger: Ledger,
    /// Gets and puts this shard coordinates.
    pub(super) coordinator: Coordinator,
    /// Writes this shard forwarded, and forwarded writes it coordinated.
    pub(super) forwards: Forwards,
    /// Hint deliveries in flight, and the hint round.
    pub(super) hints: Hints,
    /// Client requests waiting for admission.
    pub(super) admission: Admission,
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
            ledger: Ledger::new(index, shards, config, generation),
            coordinator: Coordinator::default(),
            forwards: Forwards::default(),
            hints: Hints::new(now.mono),
            admission: Admission::default(),
        }
    }

    /// The counters, with the gauges of what is in flight now.
    pub(super) fn stats(&self) -> EngineStats {
        EngineStats {
            pending_requests: self.requests_in_flight(),
            queued_requests: self.admission.len(),
            background_requests: self.ledger.background.requests,
            background_bytes: self.ledger.background.bytes,
            ..self.ledger.stats
        }
    }

    /// The latest time by which [`Shard::on_tick`] must run.
    pub(super) fn next_wakeup(&self) -> Duration {
        let mut next = self.hints.next_round();
        if let Some(deadline) = self.ledger.deadlines.first() {
            next = next.min(deadline);
        }
        if let Some(deadline) = self.admission.next_deadline() {
            next = next.min(deadline);
        }
        next
    }

    /// Offers hints at the next tick rather than at the next round (a
    /// node came up, or one left and nothing waits for it any more).
    pub(super) fn hint_round_now(&mut self, now: Now) {
        self.hints.round_now(now.mono);
    }

    /// Time passed: expires requests and queued client requests, runs the
    /// hint round when due, and admits what waits.
    pub(super) fn on_tick<S: Store>(&mut self, cx: &mut Cx<'_, S>, now: Now) {
        while let Some(request) = self.ledger.deadlines.pop_due(now.mono) {
            self.expire(cx, request);
        }
        self.admission.expire(&mut self.ledger, cx, now);
        let interval = cx.parts.config.hint_interval;
        if self.hints.round_due(now.mono, interval)
            && !cx.parts.buggify.fires(Site::HintRoundSkipped)
        {
            self.hints.deliver(&mut self.ledger, cx, now);
        }
        self.admit_queued(cx, now);
    }

    /// A client request for a key in this shard's partitions. Exactly one
    /// [`Effect::Reply`](super::io::Effect::Reply) with `client` follows,
    /// now or later.
    pub(super) fn handle_client<S: Store>(
        &mut self,
        cx: &mut Cx<'_, S>,
        now: Now,
        client: ClientId,
        request: ClientRequest,
    ) {
        if let Err(error) = self.admit(cx, &request) {
            if matches!(error, RequestError::Overloaded(_)) {
                self.ledger.stats.refused_overloaded += 1;
            }
            cx.reply(client, Err(error));
            return;
        }
        self.shed_background_held_by_one_replica(cx);
        if !self.admission.is_empty() || self.ledger.background_full() {
            self.admission
                .enqueue(&mut self.ledger, cx, now, client, request);
            return;
        }
        self.dispatch(cx, now, client, request);
    }

    /// Checks a client request: its bounds, the node's readiness, and room
    /// for one more request whose client waits.
    fn admit<S: Store>(&self, cx: &Cx<'_, S>, request: &ClientRequest) -> Result<(), RequestError> {
        admission::check(cx, request)?;
        let awaited = self.awaited_requests();
        if awaited >= self.ledger.budget.max_pending_requests {
            return Err(RequestError::Overloaded(format!(
                "{awaited} client requests in flight, the most this node takes"
            )));
        }
        Ok(())
    }

    /// Starts an admitted client request.
    fn dispatch<S: Store>(
        &mut self,
        cx: &mut Cx<'_, S>,
        now: Now,
        client: ClientId,
        request: ClientRequest,
    ) {
        let ledger = &mut self.ledger;
        let forward = match request {
            ClientRequest::Get(read) => self
                .coordinator
                .start_get(ledger, cx, now, client, read, None),
            ClientRequest::Put(write) if write.value.is_none() && write.context.is_none() => {
                // A delete without a context deletes what a read at the
                // request's `r` finds (Riak's behaviour), never nothing.
                let read = ReadRequest {
                    bucket: write.bucket.clone(),
                    key: write.key.clone(),
                    options: write.options,
                };
                self.coordinator
                    .start_get(ledger, cx, now, client, read, Some(write))
            }
            ClientRequest::Put(write) => self.coordinator.start_put(ledger, cx, now, client, write),
        };
        self.forward(cx, forward);
    }

    /// Forwards a write the coordinator is no target of, if there is one.
    fn forward<S: Store>(&mut self, cx: &mut Cx<'_, S>, forward: Option<ToForward>) {
        if let Some(forward) = forward {
            let now = cx.now;
            self.forwards
                .forward_write(&mut self.ledger, cx, now, forward);
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
                if !self.coordinator.awaits_read(from, request, &key) {
                    return;
                }
                let result = match result {
                    Ok(bytes) => match decode_object(&bytes) {
                        Ok(object) => cx.observe(now, from, object),
                        Err(e) => Err(ReplicaError::Refused(e.to_string())),
                    },
                    Err(e) => Err(e),
                };
                let forward = self.coordinator.on_read_reply(
                    &mut self.ledger,
                    cx,
                    from,
                    request,
                    &key,
                    result,
                );
                self.forward(cx, forward);
            }
            Message::Forward { request, write } => {
                if !self
                    .forwards
                    .first_time(&mut self.ledger, from, generation, request)
                {
                    return;
                }
                let awaited = self.awaited_requests();
                let max_pending = self.ledger.budget.max_pending_requests;
                let origin = Origin::Forward {
                    node: from,
                    request,
                    bucket: write.bucket.clone(),
                    key: write.key.clone(),
                };
                match forward::place_forwarded(cx, &origin, write, awaited, max_pending) {
                    Ok(placed) => {
                        self.coordinator
                            .coordinate_put(&mut self.ledger, cx, now, placed)
                    }
                    Err(error) => coordinator::finish_origin(cx, origin, error),
                }
            }
            Message::ForwardReply {
                request,
                bucket,
                key,
                result,
            } => self
                .forwards
                .on_reply(&mut self.ledger, cx, from, request, &bucket, &key, result),
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
                let node = match self.coordinator.put(request) {
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
                let node = self.coordinator.get(request).and_then(|get| {
                    get.unanswered()
                        .find(|&node| cx.view.address_of(node) == Some(to))
                });
                if let Some(node) = node {
                    tracing::debug!(%node, %to, request, "a read could not be sent to its replica");
                    self.read_failed(cx, node, request, &key);
                }
            }
            Message::Forward { request, .. } => {
                self.forwards
                    .on_send_failed(&mut self.ledger, cx, to, request)
            }
            _ => {}
        }
    }

    // ----- requests in flight -----

    /// Requests in flight, of every kind.
    fn requests_in_flight(&self) -> usize {
        self.coordinator.len() + self.forwards.len() + self.hints.len()
    }

    /// Requests in flight whose client still waits (background work aside).
    fn awaited_requests(&self) -> usize {
        self.requests_in_flight() - self.ledger.background.requests
    }

    /// Get `request` counts `node` as failed: it cannot be reached.
    fn read_failed<S: Store>(
        &mut self,
        cx: &mut Cx<'_, S>,
        node: Uuid,
        request: RequestId,
        key: &WireKey,
    ) {
        let result = Err(ReplicaError::Unreachable);
        let forward =
            self.coordinator
                .on_read_reply(&mut self.ledger, cx, node, request, key, result);
        self.forward(cx, forward);
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
        if self.coordinator.put(request).is_some() {
            self.coordinator
                .on_put_stored(&mut self.ledger, cx, from, request, key, result);
        } else {
            self.hints
                .on_stored(&mut self.ledger, cx, from, request, key, result);
        }
    }

    /// A request's time ran out: its kind decides what follows.
    fn expire<S: Store>(&mut self, cx: &mut Cx<'_, S>, request: RequestId) {
        if let Some(forward) = self.coordinator.expire(&mut self.ledger, cx, request) {
            self.forward(cx, forward);
        } else if !self.forwards.give_up(&mut self.ledger, cx, request) {
            self.hints.end_delivery(&mut self.ledger, request);
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
            self.coordinator
                .gets()
                .filter(|(_, get)| get.unanswered().any(|t| t == node))
                .map(|(request, _)| (request, Waiting::Get)),
        );
        waiting.extend(
            self.coordinator
                .puts()
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
                .waiting_on(node)
                .map(|request| (request, Waiting::Forwarded)),
        );
        // In the order the requests were made, whatever their kind.
        waiting.sort_by_key(|&(request, _)| request);
        for (request, kind) in waiting {
            match kind {
                Waiting::Get => {
                    let Some(get) = self.coordinator.get(request) else {
                        continue;
                    };
                    let key = get.key().clone();
                    match action {
                        WaitingAction::Resend => cx.send(node, Message::Read { request, key }),
                        WaitingAction::Fail => self.read_failed(cx, node, request, &key),
                    }
                }
                Waiting::Put => {
                    let Some(put) = self.coordinator.put(request) else {
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
                            self.coordinator.on_put_stored(
                                &mut self.ledger,
                                cx,
                                node,
                                request,
                                &key,
                                Err(ReplicaError::Unreachable),
                            );
                        }
                    }
                }
                Waiting::Hint => {
                    self.hints.end_delivery(&mut self.ledger, request);
                }
                Waiting::Forwarded => {
                    if matches!(action, WaitingAction::Resend) {
                        self.forwards.give_up(&mut self.ledger, cx, request);
                    }
                }
            }
        }
    }

    // ----- background work and admission -----

    /// When background work holds its whole budget, most of it waits for
    /// one replica and that replica holds at least twice what any other
    /// does, hands the oldest of that work to hinted handoff
    /// until the replica holds at most half the budget: answered puts
    /// retire and hint the replica (and any other target they still wait
    /// for), answered gets retire with the read repairs they can make, and
    /// hint deliveries to it end (their hints stay).
    ///
    /// A replica that stops answering but is not yet convicted by the
    /// failure detector (paused, partitioned one way, its disk stuck) would
    /// otherwise hold one background request per write until its
    /// conviction, seconds later, and every client of this node would wait
    /// that long for admission. Healthy replicas share the waits between
    /// them (a put at `w=quorum` waits for whichever answers last, one at
    /// `w=one` for all of them), so the budget still pushes back on
    /// clients when the whole cluster is merely busy. As Dynamo and Cassandra do, a replica that
    /// does not acknowledge gets the write later, from a hint.
    fn shed_background_held_by_one_replica<S: Store>(&mut self, cx: &mut Cx<'_, S>) {
        if !self.ledger.background_full() {
            return;
        }
        let mut held: BTreeMap<Uuid, Vec<(RequestId, Held)>> = BTreeMap::new();
        for (request, get) in self.coordinator.gets().filter(|(_, get)| get.answered()) {
            for node in get.unanswered() {
                held.entry(node).or_default().push((request, Held::Get));
            }
        }
        for (request, put) in self.coordinator.puts() {
            if put.background_bytes().is_some() {
                for target in put.unanswered() {
                    held.entry(target.node)
                        .or_default()
                        .push((request, Held::Put));
                }
            }
        }
        for (request, target) in self.hints.deliveries() {
            held.entry(target)
                .or_default()
                .push((request, Held::HintDelivery));
        }
        // The replica the most background work waits for (the first such
        // in id order when several tie), and how much the next one holds.
        let mut most: Option<(Uuid, Vec<(RequestId, Held)>)> = None;
        let mut runner_up = 0;
        for (node, waiting) in held {
            match &most {
                Some((_, top)) if waiting.len() <= top.len() => {
                    runner_up = runner_up.max(waiting.len());
                }
                _ => {
                    runner_up = most.as_ref().map_or(0, |(_, top)| top.len());
                    most = Some((node, waiting));
                }
            }
        }
        let Some((node, mut waiting)) = most else {
            return;
        };
        // One replica holds most of the budget, and far more than any
        // other: not a cluster that is merely busy, where the replicas a
        // write still waits for share the waits.
        if waiting.len() * ONE_REPLICA_SHARE.1
            <= self.ledger.background.requests * ONE_REPLICA_SHARE.0
            || waiting.len() < 2 * runner_up
        {
            return;
        }
        waiting.sort_by_key(|&(request, _)| request);
        let keep = self.ledger.budget.max_background_requests / 2;
        let shed = waiting.len().saturating_sub(keep);
        for &(request, kind) in &waiting[..shed] {
            match kind {
                Held::Get => self.coordinator.retire_get(&mut self.ledger, cx, request),
                Held::Put => self.coordinator.retire_put(&mut self.ledger, cx, request),
                Held::HintDelivery => {
                    self.hints.end_delivery(&mut self.ledger, request);
                }
            }
        }
        self.ledger.stats.background_shed += shed as u64;
        tracing::info!(
            %node,
            shed,
            "background work waiting for one replica was handed to hinted handoff"
        );
    }

    /// Starts queued client requests, oldest first, while background work
    /// is under its budget.
    pub(super) fn admit_queued<S: Store>(&mut self, cx: &mut Cx<'_, S>, now: Now) {
        if !self.admission.is_empty() {
            self.shed_background_held_by_one_replica(cx);
        }
        while !self.ledger.background_full() {
            let Some((client, request)) = self.admission.pop(now) else {
                break;
            };
            match self.admit(cx, &request) {
                Ok(()) => self.dispatch(cx, now, client, request),
                Err(error) => {
                    if matches!(error, RequestError::Overloaded(_)) {
                        self.ledger.stats.refused_overloaded += 1;
                    }
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

/// The share of the background budget past which the work one replica
/// holds is shed, as a fraction (numerator, denominator): three quarters.
/// Healthy replicas each hold about an equal share.
const ONE_REPLICA_SHARE: (usize, usize) = (3, 4);

/// A kind of background work.
#[derive(Debug, Clone, Copy)]
enum Held {
    Get,
    Put,
    HintDelivery,
}
