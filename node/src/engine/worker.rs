//! A shard detached from its engine to run on a thread of its own
//! ([`Engine::detach_shards`](super::Engine::detach_shards)).
//!
//! A [`ShardWorker`] runs the same request logic as an attached shard: the
//! runtime hands it the client requests for its partitions directly and
//! the inputs membership routes to it ([`ShardInput`], polled from
//! [`Engine::poll_shard_input`](super::Engine::poll_shard_input)) in the
//! order membership routed them, ticks it at its
//! [`next_wakeup`](ShardWorker::next_wakeup), and carries out its effects.
//! What it learns that membership must know it reports as
//! [`Facts`] ([`ShardWorker::take_facts`]). It reads the cluster only
//! through the last [`ClusterView`] it was given, and shares nothing with
//! the other shards but the handles in its parts (the store, the clock).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chorus_ring::{PartitionId, Partitions};
use chorus_storage::store::Store;
use uuid::Uuid;

use super::io::{ClientId, ClientRequest, Effect, EngineStats, Now};
use super::parts::Cx;
use super::shard::{Shard, ShardSlot};
use super::view::{ClusterView, Facts, ShardInput};
use crate::wire::{Frame, Message};

/// Which shard owns a key: partition `p` belongs to shard `p % shards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMap {
    pub(super) partitions: Partitions,
    pub(super) shards: usize,
}

impl ShardMap {
    /// The index of the shard that owns `bucket`/`key`.
    pub fn shard_of_key(&self, bucket: &[u8], key: &[u8]) -> usize {
        super::requests::shard_of_partition(self.partitions.of_key(bucket, key), self.shards)
    }

    /// The index of the shard a client request goes to.
    pub fn shard_of_request(&self, request: &ClientRequest) -> usize {
        match request {
            ClientRequest::Get(read) => self.shard_of_key(&read.bucket, &read.key),
            ClientRequest::Put(write) => self.shard_of_key(&write.bucket, &write.key),
        }
    }

    /// How many shards there are.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The shard a data-plane message goes to: a replica's request (store,
    /// read) and a forwarded write to the shard of the key's partition, an
    /// answer (stored, read reply, forward reply) to the shard whose
    /// request it names. `None` for gossip and the ring exchange, which
    /// membership handles, and for an answer naming no shard of this node's.
    pub fn shard_of_message(&self, message: &Message) -> Option<usize> {
        use super::requests::{shard_of_partition, shard_of_request};
        match message {
            Message::Store { key, .. } | Message::Read { key, .. } => {
                Some(shard_of_partition(PartitionId(key.partition), self.shards))
            }
            Message::Forward { write, .. } => Some(self.shard_of_key(&write.bucket, &write.key)),
            Message::Stored { request, .. }
            | Message::ReadReply { request, .. }
            | Message::ForwardReply { request, .. } => {
                Some(shard_of_request(*request)).filter(|&index| index < self.shards)
            }
            Message::Gossip(_) | Message::RingFetch { .. } | Message::RingPush { .. } => None,
        }
    }
}

/// Which peers' data-plane frames may go straight to their shard without
/// membership seeing them ([`Engine::direct_routes`](super::Engine::direct_routes)).
///
/// Membership checks every peer's frame before a shard handles it
/// (`Membership::check_frame`): it remembers where a node unknown to
/// gossip sends from, learns a newer generation (and has the shards act on
/// the restart first), and drops a data-plane frame from an older
/// incarnation. For a gossip member whose frames last carried the newest
/// generation this node knows of it, and a frame carrying that same
/// generation, the check changes nothing and passes the frame: routing it
/// by [`ShardMap::shard_of_message`] then gives the shard the same input
/// with one thread hand-off less. Every other frame goes to membership.
/// Membership publishes new routes whenever they change; a frame checked
/// against routes a moment old is one that arrived a moment earlier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectRoutes {
    /// Peers whose frames membership passes unchanged, with the generation
    /// those frames carry.
    pub(super) settled: BTreeMap<Uuid, u64>,
    pub(super) map: ShardMap,
}

impl DirectRoutes {
    /// The shard `frame` goes to without membership, or `None` when
    /// membership must see it: gossip or the ring exchange, a sender that
    /// is not a settled peer, a generation other than the one settled, or
    /// an answer naming no shard of this node's.
    pub fn shard_of(&self, frame: &Frame) -> Option<usize> {
        if self.settled.get(&frame.from) != Some(&frame.generation) {
            return None;
        }
        self.map.shard_of_message(&frame.message)
    }
}

/// One detached shard: the same request logic as an attached shard, fed by
/// the runtime with the client requests for its partitions and what
/// membership routes to it ([`ShardInput`]), in the order membership
/// routed them. It reads the cluster only through the last view it was
/// given and shares nothing with the other shards but the node's store and
/// clock.
#[derive(Debug)]
pub struct ShardWorker<S> {
    slot: ShardSlot<S>,
    view: Arc<ClusterView>,
    /// What it reported since the last [`ShardWorker::take_facts`].
    facts: Facts,
    /// What [`ShardWorker::take_facts`] handed out before. Facts are
    /// sticky (membership acts on each once: a node that holds data always
    /// will), so each is handed out once per worker, and a shard that
    /// writes in every batch does not wake membership after every batch.
    taken: Facts,
}

impl<S: Store> ShardWorker<S> {
    pub(super) fn new(slot: ShardSlot<S>, view: Arc<ClusterView>) -> ShardWorker<S> {
        ShardWorker {
            slot,
            view,
            facts: Facts::default(),
            taken: Facts::default(),
        }
    }

    /// This shard's index.
    pub fn index(&self) -> usize {
        self.slot.shard.ledger.shard
    }

    /// Runs `handle` on the shard with its view and parts, then lets it
    /// admit the client requests that wait, and keeps the facts it reports.
    fn run<R>(&mut self, now: Now, handle: impl FnOnce(&mut Shard, &mut Cx<'_, S>) -> R) -> R {
        let mut cx = Cx {
            view: &self.view,
            parts: &mut self.slot.parts,
            now,
            facts: Facts::default(),
        };
        let result = handle(&mut self.slot.shard, &mut cx);
        self.slot.shard.admit_queued(&mut cx, now);
        self.facts.add(cx.facts);
        result
    }

    /// A client request for a key of this shard's (see
    /// [`ShardMap::shard_of_request`]). Exactly one [`Effect::Reply`] with
    /// `client` follows, now or later.
    pub fn handle_client(&mut self, now: Now, client: ClientId, request: ClientRequest) {
        self.run(now, |shard, cx| {
            shard.handle_client(cx, now, client, request)
        });
    }

    /// An input membership routed to this shard.
    pub fn handle_input(&mut self, now: Now, input: ShardInput) {
        match input {
            ShardInput::Message {
                from,
                generation,
                message,
            } => self.run(now, |shard, cx| {
                shard.on_message(cx, now, from, generation, message)
            }),
            ShardInput::SendFailed { to, message } => {
                self.run(now, |shard, cx| shard.on_send_failed(cx, to, message))
            }
            ShardInput::View(view) => self.view = view,
            ShardInput::Convicted(node) => {
                self.run(now, |shard, cx| shard.fail_requests_to(cx, node))
            }
            ShardInput::Restarted(node) => {
                self.run(now, |shard, cx| shard.resend_to_restarted(cx, node))
            }
            ShardInput::HintRoundNow => self.slot.shard.hint_round_now(now),
        }
    }

    /// A frame this shard emitted could not be sent to `to` (see
    /// [`Engine::handle_send_failed`](super::Engine::handle_send_failed)):
    /// the request it carries counts the replica as failed.
    pub fn handle_send_failed(&mut self, now: Now, to: SocketAddr, payload: &[u8]) {
        self.slot.parts.stats.send_failures += 1;
        match Frame::decode(payload, usize::MAX) {
            Ok(frame) if frame.from == self.view.id => {
                self.run(now, |shard, cx| shard.on_send_failed(cx, to, frame.message))
            }
            _ => tracing::warn!(%to, "a send failure names a frame this shard did not emit"),
        }
    }

    /// Time passed: expires requests, runs the hint round when due, and
    /// admits what waits.
    pub fn handle_tick(&mut self, now: Now) {
        self.run(now, |shard, cx| shard.on_tick(cx, now));
    }

    /// The latest time by which [`handle_tick`](ShardWorker::handle_tick)
    /// must be called.
    pub fn next_wakeup(&self) -> Duration {
        self.slot.shard.next_wakeup()
    }

    /// The next effect, once the store's writes so far are in the log (see
    /// [`Engine::poll_effect`](super::Engine::poll_effect)).
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.slot.parts.poll_effect()
    }

    /// Whether the next [`poll_effect`](ShardWorker::poll_effect) may wait
    /// for an fsync of the store's log first (an effect waits and a write
    /// since the last flush asked for `sync`; [`Store::owes_sync`]), so
    /// that a caller on an async runtime can flush the store where
    /// blocking is allowed before it polls.
    pub fn owes_sync(&self) -> bool {
        self.slot.parts.owes_sync()
    }

    /// `message` in a frame from this node at the generation of the view
    /// this shard holds.
    pub fn frame(&self, message: Message) -> Frame {
        Frame::new(self.view.id, self.view.generation, message)
    }

    /// What the shard reported since the last call that no earlier call
    /// handed out, for [`Engine::handle_facts`](super::Engine::handle_facts).
    /// Each fact is handed out once: its caller must deliver it.
    pub fn take_facts(&mut self) -> Facts {
        let new = std::mem::take(&mut self.facts).not_in(self.taken);
        self.taken.add(new);
        new
    }

    /// The shard's counters and gauges.
    pub fn stats(&self) -> EngineStats {
        let mut stats = self.slot.parts.stats;
        stats.add(&self.slot.shard.stats());
        stats
    }

    /// Why the node's store could not flush its writes, if it could not
    /// (node-wide: any owner's failure).
    pub fn storage_failure(&self) -> Option<&str> {
        self.slot.parts.storage_failure()
    }
}
