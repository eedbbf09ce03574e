//! Gets and puts this node coordinates: placing a request's targets on the
//! preference list, applying a put locally and sending it to the other
//! targets, recording replicas' answers in the pure coordinators of
//! [`crate::core`], answering the client (or the node that forwarded the
//! write), and repairing stale replicas once a get is done.

use std::time::Duration;

use chorus_storage::object::Object;
use chorus_storage::store::{Durability, Store};
use rand::Rng;
use uuid::Uuid;

use super::io::{ClientId, ClientReply, Now};
use super::parts::Cx;
use super::requests::{Ledger, Origin, PlacedWrite, RequestId, Requests, ToForward};
use super::view::uncovered_primaries;
use crate::api::{ReadReply, ReadRequest, RequestError, WriteReply, WriteRequest};
use crate::buggify::Site;
use crate::core::{
    ClientWrite, GetCoordinator, PutCoordinator, PutError, Recorded, Replica, ReplicaError,
    ResolvedOptions,
};
use crate::wire::{ForwardedReply, Message, StoredAck, WireKey};

/// A get this node coordinates.
#[derive(Debug)]
pub(super) struct GetRequest {
    client: ClientId,
    key: WireKey,
    coordinator: GetCoordinator,
    /// The targets asked so far.
    asked: Vec<Uuid>,
    /// The targets not asked yet, in the order they would be: asked
    /// once an asked one fails, or all at once when the answer is late
    /// (speculative retry).
    unasked: Vec<Replica>,
    /// When the get's own time runs out (monotonic); until the unasked
    /// targets are asked, the request's deadline is the earlier moment of
    /// speculation.
    deadline: Duration,
    replies: usize,
    answered: bool,
    /// A delete without a context waiting for this read: once it
    /// succeeds, the delete is written with the read's context.
    then_delete: Option<WriteRequest>,
}

/// What a get's replies decided.
#[derive(Debug)]
pub(super) struct GetProgress {
    /// The outcome, the first time it is decided.
    pub(super) answer: Option<GetAnswer>,
    /// Every target answered, or the time ran out: the get retires.
    pub(super) done: bool,
}

/// A get's outcome.
#[derive(Debug)]
pub(super) enum GetAnswer {
    /// The client's answer.
    Reply(ClientId, Result<ClientReply, RequestError>),
    /// A delete without a context found the key: it is written now, with
    /// the context of what the read found.
    Delete(ClientId, WriteRequest),
}

impl GetRequest {
    /// A get for `client` of `key`, deciding with `coordinator`, that
    /// asked `asked` and may ask `unasked` later, due at `deadline`.
    pub(super) fn new(
        client: ClientId,
        key: WireKey,
        coordinator: GetCoordinator,
        asked: Vec<Uuid>,
        unasked: Vec<Replica>,
        deadline: Duration,
        then_delete: Option<WriteRequest>,
    ) -> GetRequest {
        GetRequest {
            client,
            key,
            coordinator,
            asked,
            unasked,
            deadline,
            replies: 0,
            answered: false,
            then_delete,
        }
    }

    pub(super) fn key(&self) -> &WireKey {
        &self.key
    }

    /// The targets asked that have not answered.
    pub(super) fn unanswered(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.coordinator
            .unanswered()
            .into_iter()
            .map(|t| t.node)
            .filter(|node| self.asked.contains(node))
    }

    /// Marks every target not asked yet as asked, and hands them out to
    /// be asked now.
    fn ask_the_rest(&mut self) -> Vec<Replica> {
        let rest = std::mem::take(&mut self.unasked);
        self.asked.extend(rest.iter().map(|t| t.node));
        rest
    }

    /// A replica's reply (the caller checked that it names this get's
    /// key), and the targets to ask now: after a failure, every target
    /// not asked yet, so the get can still reach its quorum.
    pub(super) fn on_reply(
        &mut self,
        from: Uuid,
        result: Result<Object, ReplicaError>,
    ) -> (GetProgress, Vec<Replica>) {
        let failed = result.is_err();
        if self.coordinator.add_reply(from, result) == Recorded::Accepted {
            self.replies += 1;
        }
        let ask = if failed {
            self.ask_the_rest()
        } else {
            Vec::new()
        };
        (self.progress(), ask)
    }

    /// The get's time ran out.
    pub(super) fn on_timeout(&mut self) -> GetProgress {
        self.coordinator.timeout();
        GetProgress {
            done: true,
            ..self.progress()
        }
    }

    /// What the replies so far decide.
    pub(super) fn progress(&mut self) -> GetProgress {
        let mut answer = None;
        if !self.answered {
            if let Some(outcome) = self.coordinator.outcome() {
                self.answered = true;
                let client = self.client;
                answer = Some(match (outcome, self.then_delete.take()) {
                    (Ok(object), Some(mut delete)) if !object.is_deleted() => {
                        delete.context = Some(object.context().clone());
                        GetAnswer::Delete(client, delete)
                    }
                    (Ok(object), Some(_)) => GetAnswer::Reply(
                        client,
                        Ok(ClientReply::Write(WriteReply::NothingToDelete {
                            object: object.clone(),
                        })),
                    ),
                    (Ok(object), None) => GetAnswer::Reply(
                        client,
                        Ok(ClientReply::Read(ReadReply {
                            object: object.clone(),
                        })),
                    ),
                    (Err(e), _) => GetAnswer::Reply(client, Err(RequestError::Get(e))),
                });
            }
        }
        GetProgress {
            answer,
            done: self.replies >= self.asked.len(),
        }
    }

    /// Whether the client was answered: the get is background work.
    pub(super) fn answered(&self) -> bool {
        self.answered
    }
}

/// A put this node coordinates.
#[derive(Debug)]
pub(super) struct PutRequest {
    origin: Origin,
    key: WireKey,
    /// The stored object, for hints to targets that do not answer.
    object: Object,
    sync: bool,
    coordinator: PutCoordinator,
    /// The answer once the write is acknowledged.
    reply: WriteReply,
    targets: usize,
    answers: usize,
    answered: bool,
    /// The encoded object's size: what the put holds once it is answered
    /// and becomes background work.
    bytes: usize,
}

/// What a put's acknowledgements decided.
#[derive(Debug)]
pub(super) struct PutProgress {
    /// The outcome, the first time it is decided, and who waits for it.
    pub(super) answer: Option<(Origin, Result<ClientReply, RequestError>)>,
    /// Every target answered, or the time ran out: the put retires.
    pub(super) done: bool,
}

impl PutRequest {
    pub(super) fn key(&self) -> &WireKey {
        &self.key
    }

    /// The targets that have not answered.
    pub(super) fn unanswered(&self) -> Vec<Replica> {
        self.coordinator.unanswered()
    }

    /// The frame that asks `target` for its copy.
    pub(super) fn store_message(&self, request: RequestId, target: &Replica) -> Message {
        Message::Store {
            request: Some(request),
            key: self.key.clone(),
            object: self.object.encode(),
            sync: self.sync,
            stands_in_for: target.stands_in_for(),
        }
    }

    /// A replica's acknowledgement or failure (the caller checked that it
    /// names this put's key).
    pub(super) fn on_reply(
        &mut self,
        from: Uuid,
        result: Result<StoredAck, ReplicaError>,
    ) -> PutProgress {
        let recorded = match result {
            Ok(ack) => self.coordinator.add_ack(from, ack.durable),
            Err(error) => self.coordinator.add_failure(from, error),
        };
        if recorded == Recorded::Accepted {
            self.answers += 1;
        }
        self.progress()
    }

    /// The put's time ran out.
    pub(super) fn on_timeout(&mut self) -> PutProgress {
        self.coordinator.timeout();
        PutProgress {
            done: true,
            ..self.progress()
        }
    }

    /// What the acknowledgements so far decide.
    pub(super) fn progress(&mut self) -> PutProgress {
        let mut answer = None;
        if !self.answered {
            if let Some(outcome) = self.coordinator.outcome() {
                self.answered = true;
                let result = match outcome {
                    Ok(_) => Ok(ClientReply::Write(self.reply.clone())),
                    Err(e) => Err(RequestError::Put(e)),
                };
                answer = Some((self.origin.clone(), result));
            }
        }
        PutProgress {
            answer,
            done: self.answers >= self.targets,
        }
    }

    /// The bytes the put holds once its client was answered (background
    /// work); `None` while the client waits.
    pub(super) fn background_bytes(&self) -> Option<usize> {
        self.answered.then_some(self.bytes)
    }

    /// What a retired put leaves to hint: its key, object, durability and
    /// the targets the write may not have reached
    /// ([`PutCoordinator::unreached`]).
    pub(super) fn into_unreached(self) -> (WireKey, Object, bool, Vec<Replica>) {
        let unreached = self.coordinator.unreached();
        (self.key, self.object, self.sync, unreached)
    }
}

/// The gets and puts one shard coordinates.
#[derive(Debug, Default)]
pub(super) struct Coordinator {
    gets: Requests<GetRequest>,
    puts: Requests<PutRequest>,
}

impl Coordinator {
    /// Puts `get` in flight under a fresh id, with no deadline: a test's
    /// get, made without a client request.
    #[cfg(test)]
    pub(super) fn insert_get(&mut self, ledger: &mut Ledger, get: GetRequest) -> RequestId {
        let request = ledger.deadlines.next_id();
        self.gets
            .insert(&mut ledger.deadlines, request, Duration::MAX, get);
        request
    }

    /// Gets and puts in flight.
    pub(super) fn len(&self) -> usize {
        self.gets.len() + self.puts.len()
    }

    /// Get `request`, if it is in flight.
    pub(super) fn get(&self, request: RequestId) -> Option<&GetRequest> {
        self.gets.get(request)
    }

    /// Put `request`, if it is in flight.
    pub(super) fn put(&self, request: RequestId) -> Option<&PutRequest> {
        self.puts.get(request)
    }

    /// The gets in flight, in id order.
    pub(super) fn gets(&self) -> impl Iterator<Item = (RequestId, &GetRequest)> {
        self.gets.iter()
    }

    /// The puts in flight, in id order.
    pub(super) fn puts(&self) -> impl Iterator<Item = (RequestId, &PutRequest)> {
        self.puts.iter()
    }

    /// Starts a get: reads the local copy when this node is a target, asks
    /// the other targets. A delete without a context reads first
    /// (`then_delete`); what it then writes may have to be forwarded.
    pub(super) fn start_get<S: Store>(
        &mut self,
        ledger: &mut Ledger,
        cx: &mut Cx<'_, S>,
        now: Now,
        client: ClientId,
        read: ReadRequest,
        then_delete: Option<WriteRequest>,
    ) -> Option<ToForward> {
        ledger.stats.gets += 1;
        let list = cx.view.preference_list(&read.bucket, &read.key);
        let (partition, n) = (list.partition(), list.n());
        let options = match read.options.resolve(n) {
            Ok(options) => options,
            Err(e) => {
                cx.reply(client, Err(e.into()));
                return None;
            }
        };
        let targets = cx.view.targets(list, options.sloppy);
        let key = WireKey {
            partition: partition.0,
            bucket: read.bucket,
            key: read.key,
        };
        let request = ledger.deadlines.next_id();
        // The primaries that are down and have no fallback count as failed
        // replicas from the start, as a put's do, so a get that cannot
        // reach `r` names them.
        let down = uncovered_primaries(list, &targets);
        let replicas = targets
            .iter()
            .copied()
            .chain(down.iter().map(|&node| Replica::primary(node)))
            .collect();
        let mut coordinator = GetCoordinator::new(n, options.r, options.pr, replicas);
        for &node in &down {
            coordinator.add_reply(node, Err(ReplicaError::Unreachable));
        }
        let (asked, unasked) = first_asked(&targets, cx.me(), options.r, options.pr);
        let (asked, unasked) = if !unasked.is_empty()
            && cx.parts.rng.random::<f64>() < cx.parts.config.read_repair_chance
        {
            (targets, Vec::new())
        } else {
            (asked, unasked)
        };
        let deadline = cx.deadline(now, Duration::from_millis(options.timeout_ms));
        let first_deadline = if unasked.is_empty() {
            deadline
        } else {
            deadline.min(now.mono + cx.parts.config.read_speculation)
        };
        let asked_nodes = asked.iter().map(|t| t.node).collect();
        let get = GetRequest::new(
            client,
            key.clone(),
            coordinator,
            asked_nodes,
            unasked,
            deadline,
            then_delete,
        );
        self.gets
            .insert(&mut ledger.deadlines, request, first_deadline, get);
        let mut forward = None;
        for target in &asked {
            forward = forward.or(self.ask(ledger, cx, request, &key, target.node));
        }
        if let Some(progress) = self.gets.get_mut(request).map(GetRequest::progress) {
            forward = forward.or(self.on_get_progress(ledger, cx, request, progress));
        }
        forward
    }

    /// Starts a client's put: coordinates it when this node is a target,
    /// or hands it back to be forwarded to one.
    pub(super) fn start_put<S: Store>(
        &mut self,
        ledger: &mut Ledger,
        cx: &mut Cx<'_, S>,
        now: Now,
        client: ClientId,
        write: WriteRequest,
    ) -> Option<ToForward> {
        ledger.stats.puts += 1;
        let list = cx.view.preference_list(&write.bucket, &write.key);
        let (partition, n) = (list.partition(), list.n());
        let options = match write.options.resolve(n) {
            Ok(options) => options,
            Err(e) => {
                cx.reply(client, Err(e.into()));
                return None;
            }
        };
        let targets = cx.view.targets(list, options.sloppy);
        let return_body = write.options.return_body;
        if targets.iter().any(|t| t.node == cx.me()) {
            let uncovered = uncovered_primaries(list, &targets);
            let placed = PlacedWrite {
                origin: Origin::Client(client),
                key: WireKey {
                    partition: partition.0,
                    bucket: write.bucket,
                    key: write.key,
                },
                value: write.value,
                content_type: write.content_type,
                context: write.context.unwrap_or_default(),
                options,
                return_body,
                n,
                targets,
                uncovered,
            };
            self.coordinate_put(ledger, cx, now, placed);
            return None;
        }
        let Some(to) = targets
            .iter()
            .find(|t| t.is_primary())
            .or(targets.first())
            .map(|t| t.node)
        else {
            // Nobody can take the write.
            let down = uncovered_primaries(list, &targets);
            let error = unavailable(n, &options, &targets, &down)
                .expect("a put with no targets cannot succeed");
            cx.reply(client, Err(error.into()));
            return None;
        };
        Some(ToForward {
            client,
            to,
            write,
            options,
        })
    }

    /// Coordinates a write this node is a target of: applies it locally,
    /// keeps the hints it owes, and sends it to the other targets.
    pub(super) fn coordinate_put<S: Store>(
        &mut self,
        ledger: &mut Ledger,
        cx: &mut Cx<'_, S>,
        now: Now,
        placed: PlacedWrite,
    ) {
        let PlacedWrite {
            origin,
            key,
            value,
            content_type,
            context,
            options,
            return_body,
            n,
            targets,
            uncovered,
        } = placed;
        if let Some(error) = unavailable(n, &options, &targets, &uncovered) {
            return finish_origin(cx, origin, error.into());
        }
        let durability = Durability::from_sync(options.sync);
        let write = ClientWrite {
            context: context.clone(),
            value,
            content_type,
            lww: cx.parts.config.unsafe_controls.last_writer_wins,
        };
        let (object, dot) = match cx.apply_write(now, &key, write, durability) {
            Ok(applied) => applied,
            Err(error) => return finish_origin(cx, origin, error),
        };
        let own = targets
            .iter()
            .find(|t| t.node == cx.me())
            .copied()
            .expect("the coordinator is a target");
        // Hints: for the primary this node stands in for, and for every
        // primary that is down with no fallback taking its place (as
        // Cassandra's coordinators do). Hints never count toward `w`.
        let hinted = own.stands_in_for().into_iter().chain(uncovered);
        let mut own_hint_failed = None;
        for primary in hinted {
            if let Err(e) = cx.keep_hint(primary, &key, &object, durability) {
                // The local copy stands; the primary gets it by read repair.
                if own.stands_in_for() == Some(primary) {
                    own_hint_failed = Some(e);
                }
            }
        }
        let mut coordinator =
            PutCoordinator::new(n, options.w, options.pw, options.sync, targets.clone());
        match own_hint_failed {
            // A fallback's copy counts only with the hint that hands it
            // over, as for a fallback that is not the coordinator.
            Some(e) => coordinator.add_failure(cx.me(), ReplicaError::Storage(e.to_string())),
            None => coordinator.add_ack(cx.me(), options.sync),
        };
        let request = ledger.deadlines.next_id();
        let encoded = object.encode();
        let reply = WriteReply::Written {
            context: if cx
                .parts
                .config
                .unsafe_controls
                .whole_context_in_write_replies
            {
                object.context().clone()
            } else {
                object.context_for_writer(&context, dot)
            },
            object: return_body.then(|| object.clone()),
        };
        let put = PutRequest {
            origin,
            key: key.clone(),
            object,
            sync: options.sync,
            coordinator,
            reply,
            targets: targets.len(),
            // This node's own copy is answered already.
            answers: 1,
            answered: false,
            bytes: encoded.len(),
        };
        let deadline = cx.deadline(now, Duration::from_millis(options.timeout_ms));
        self.puts
            .insert(&mut ledger.deadlines, request, deadline, put);
        let me = cx.me();
        for target in targets.iter().filter(|t| t.node != me) {
            cx.send(
                target.node,
                Message::Store {
                    request: Some(request),
                    key: key.clone(),
                    object: encoded.clone(),
                    sync: options.sync,
                    stands_in_for: target.stands_in_for(),
                },
            );
        }
        if let Some(progress) = self.puts.get_mut(request).map(PutRequest::progress) {
            self.on_put_progress(ledger, cx, request, progress);
        }
    }

    /// Whether a read reply from `from` answers a get in flight: the
    /// request id is one of this incarnation's gets and names the same key.
    pub(super) fn awaits_read(&self, from: Uuid, request: RequestId, key: &WireKey) -> bool {
        let awaited = self.gets.get(request).is_some_and(|get| get.key() == key);
        if !awaited {
            tracing::debug!(%from, request, "a read reply that answers no get in flight");
        }
        awaited
    }

    /// A replica's answer to a get; what the get then writes (a delete
    /// without a context) may have to be forwarded.
    pub(super) fn on_read_reply<S: Store>(
        &mut self,
        ledger: &mut Ledger,
        cx: &mut Cx<'_, S>,
        from: Uuid,
        request: RequestId,
        key: &WireKey,
        result: Result<Object, ReplicaError>,
    ) -> Option<ToForward> {
        let get = self.gets.get_mut(request).filter(|get| get.key() == key)?;
        let (progress, ask) = get.on_reply(from, result);
        let mut forward = None;
        for target in ask {
            forward = forward.or(self.ask(ledger, cx, request, key, target.node));
        }
        forward.or(self.on_get_progress(ledger, cx, request, progress))
    }

    /// Asks `node` for its copy of `key` for get `request`: this node's
    /// own copy is read at once.
    fn ask<S: Store>(
        &mut self,
        ledger: &mut Ledger,
        cx: &mut Cx<'_, S>,
        request: RequestId,
        key: &WireKey,
        node: Uuid,
    ) -> Option<ToForward> {
        if node == cx.me() {
            let result = cx.read_local(key);
            self.on_read_reply(ledger, cx, node, request, key, result)
        } else {
            let key = key.clone();
            cx.send(node, Message::Read { request, key });
            None
        }
    }

    /// A replica's answer to a put this node coordinates; false if
    /// `request` is no put in flight for `key`.
    pub(super) fn on_put_stored<S: Store>(
        &mut self,
        ledger: &mut Ledger,
        cx: &mut Cx<'_, S>,
        from: Uuid,
        request: RequestId,
        key: &WireKey,
        result: Result<StoredAck, ReplicaError>,
    ) -> bool {
        let Some(put) = self.puts.get_mut(request).filter(|put| put.key() == key) else {
            return false;
        };
        let progress = put.on_reply(from, result);
        self.on_put_progress(ledger, cx, request, progress);
        true
    }

    /// Request `request`'s time ran out, if it is a get or put of this
    /// coordinator's: `None` if it is not; otherwise what a get then
    /// writes, which may have to be forwarded.
    pub(super) fn expire<S: Store>(
        &mut self,
        ledger: &mut Ledger,
        cx: &mut Cx<'_, S>,
        request: RequestId,
    ) -> Option<Option<ToForward>> {
        if let Some(get) = self.gets.get_mut(request) {
            if cx.now.mono < get.deadline {
                // The moment of speculation, before the get's own time:
                // if the answer is late, ask every target not asked yet
                // (speculative retry); an answered get asks nobody more.
                let rest = if get.answered {
                    get.unasked.clear();
                    Vec::new()
                } else {
                    get.ask_the_rest()
                };
                let (key, deadline) = (get.key.clone(), get.deadline);
                self.gets
                    .reschedule(&mut ledger.deadlines, request, deadline);
                let mut forward = None;
                for target in rest {
                    forward = forward.or(self.ask(ledger, cx, request, &key, target.node));
                }
                return Some(forward);
            }
            let progress = get.on_timeout();
            Some(self.on_get_progress(ledger, cx, request, progress))
        } else if let Some(put) = self.puts.get_mut(request) {
            let progress = put.on_timeout();
            self.on_put_progress(ledger, cx, request, progress);
            Some(None)
        } else {
            None
        }
    }

    /// Acts on what a get's replies decided: answers the client (or starts
    /// the delete the read was for), and once the get is done retires it
    /// and repairs the stale replicas.
    fn on_get_progress<S: Store>(
        &mut self,
        ledger: &mut Ledger,
        cx: &mut Cx<'_, S>,
        request: RequestId,
        progress: GetProgress,
    ) -> Option<ToForward> {
        let mut forward = None;
        if let Some(answer) = progress.answer {
            // Answered, the get waits for its read repair in the background.
            ledger.background.add(0);
            match answer {
                GetAnswer::Reply(client, result) => cx.reply(client, result),
                GetAnswer::Delete(client, delete) => {
                    let now = cx.now;
                    forward = self.start_put(ledger, cx, now, client, delete);
                }
            }
        }
        if progress.done {
            self.retire_get(ledger, cx, request);
        }
        forward
    }

    /// Acts on what a put's acknowledgements decided: answers whoever
    /// waits, and once the put is done retires it and keeps hints for the
    /// targets that never answered.
    fn on_put_progress<S: Store>(
        &mut self,
        ledger: &mut Ledger,
        cx: &mut Cx<'_, S>,
        request: RequestId,
        progress: PutProgress,
    ) {
        if let Some((origin, result)) = progress.answer {
            let bytes = self
                .puts
                .get(request)
                .and_then(PutRequest::background_bytes)
                .expect("an answered put in flight");
            ledger.background.add(bytes);
            answer(cx, origin, result);
        }
        if progress.done {
            self.retire_put(ledger, cx, request);
        }
    }

    /// Removes a get; repairs the stale replicas.
    pub(super) fn retire_get<S: Store>(
        &mut self,
        ledger: &mut Ledger,
        cx: &mut Cx<'_, S>,
        request: RequestId,
    ) {
        let Some(get) = self.gets.remove(&mut ledger.deadlines, request) else {
            return;
        };
        if get.answered() {
            ledger.background.remove(0);
        }
        let GetRequest {
            key, coordinator, ..
        } = get;
        let repairs = coordinator.repairs();
        if repairs.is_empty() {
            return;
        }
        if ledger.background.bytes >= ledger.budget.max_background_bytes
            || cx.parts.buggify.fires(Site::ReadRepairSkipped)
        {
            // Read repair is opportunistic; a later read or a hint
            // brings the replica up to date.
            ledger.stats.read_repairs_skipped += repairs.len() as u64;
            return;
        }
        let merged = coordinator.merged();
        let encoded = merged.encode();
        for replica in repairs {
            ledger.stats.read_repairs += 1;
            if replica.node == cx.me() {
                cx.repair_local(&key, merged);
            } else {
                cx.send(
                    replica.node,
                    Message::Store {
                        request: None,
                        key: key.clone(),
                        object: encoded.clone(),
                        sync: false,
                        stands_in_for: replica.stands_in_for(),
                    },
                );
            }
        }
    }

    /// Removes a put; keeps hints for the targets that never answered.
    pub(super) fn retire_put<S: Store>(
        &mut self,
        ledger: &mut Ledger,
        cx: &mut Cx<'_, S>,
        request: RequestId,
    ) {
        let Some(put) = self.puts.remove(&mut ledger.deadlines, request) else {
            return;
        };
        if let Some(bytes) = put.background_bytes() {
            ledger.background.remove(bytes);
        }
        let (key, object, sync, unreached) = put.into_unreached();
        cx.hint_unreached(&key, &object, sync, unreached);
    }
}

/// Answers whoever waits for a coordinated write: the client, or the node
/// that forwarded it (in a `ForwardReply`).
fn answer<S: Store>(cx: &mut Cx<'_, S>, origin: Origin, result: Result<ClientReply, RequestError>) {
    match origin {
        Origin::Client(client) => cx.reply(client, result),
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
                Err(error) => Err(error.for_the_wire()),
            };
            cx.send(
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

/// Answers a write that failed before a coordinator existed: its client,
/// or the node that forwarded it.
/// The error for a write that cannot reach `w` or `pw` even if each of
/// its `targets` acknowledges, because the primaries in `down` are down
/// with no fallback in their place: such a write is refused before any
/// replica applies it (as Cassandra refuses it as unavailable and Riak as
/// `insufficient_vnodes`), and the tally names them as unreachable. `None`
/// when the targets can reach the quorum.
fn unavailable(
    n: usize,
    options: &ResolvedOptions,
    targets: &[Replica],
    down: &[Uuid],
) -> Option<PutError> {
    let replicas = targets
        .iter()
        .copied()
        .chain(down.iter().map(|&node| Replica::primary(node)))
        .collect();
    let mut check = PutCoordinator::new(n, options.w, options.pw, options.sync, replicas);
    for &node in down {
        check.add_failure(node, ReplicaError::Unreachable);
    }
    check.outcome().and_then(Result::err)
}

pub(super) fn finish_origin<S: Store>(cx: &mut Cx<'_, S>, origin: Origin, error: RequestError) {
    match origin {
        Origin::Client(client) => cx.reply(client, Err(error)),
        Origin::Forward {
            node,
            request,
            bucket,
            key,
        } => cx.send(
            node,
            Message::ForwardReply {
                request,
                bucket,
                key,
                result: Err(error.for_the_wire()),
            },
        ),
    }
}

/// Which of a get's `targets` it asks at once, and which later: this
/// node's own copy first when it is a target, then the others in
/// preference-list order, until `r` are asked with `pr` primaries among
/// them (as Cassandra's coordinators ask only as many replicas as the
/// consistency level needs). The rest, in order, are asked when an asked
/// one fails or the answer is late.
fn first_asked(targets: &[Replica], me: Uuid, r: usize, pr: usize) -> (Vec<Replica>, Vec<Replica>) {
    let own = targets.iter().filter(|t| t.node == me);
    let others = targets.iter().filter(|t| t.node != me);
    let (mut asked, mut later) = (Vec::new(), Vec::new());
    let mut primaries = 0;
    for &target in own.chain(others) {
        if asked.len() < r || (primaries < pr && target.is_primary()) {
            primaries += usize::from(target.is_primary());
            asked.push(target);
        } else {
            later.push(target);
        }
    }
    (asked, later)
}
