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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chorus_ring::Partitions;
use chorus_storage::store::Store;

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
}

impl<S: Store> ShardWorker<S> {
    pub(super) fn new(slot: ShardSlot<S>, view: Arc<ClusterView>) -> ShardWorker<S> {
        ShardWorker {
            slot,
            view,
            facts: Facts::default(),
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

    /// `message` in a frame from this node at the generation of the view
    /// this shard holds.
    pub fn frame(&self, message: Message) -> Frame {
        Frame::new(self.view.id, self.view.generation, message)
    }

    /// What the shard reported since the last call, for
    /// [`Engine::handle_facts`](super::Engine::handle_facts).
    pub fn take_facts(&mut self) -> Facts {
        std::mem::take(&mut self.facts)
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
