//! The node engine: one node's whole cluster logic as a deterministic state
//! machine.
//!
//! The engine joins the pieces together: membership ([`chorus_gossip`]),
//! placement ([`chorus_ring`]), the request coordinators and replica logic
//! of [`crate::core`], and a [`Store`]. It is driven by four inputs, each
//! given the time as a [`Now`]:
//!
//! * [`Engine::handle_client`] — a client's read or write;
//! * [`Engine::handle_frame`] — bytes another node sent;
//! * [`Engine::handle_tick`] — time passed; call it at
//!   [`Engine::next_wakeup`] at the latest;
//!
//! and it answers with [`Effect`]s drained by [`Engine::poll_effect`]: frames
//! to send and replies to clients. The production runtime
//! ([`crate::runtime`]) and the cluster simulator in `tests/` drive the same
//! engine; only they read clocks, own sockets and spawn tasks.
//!
//! # Request paths
//!
//! * **Put and delete.** The key's targets are [`place`](crate::core::place)d on the preference
//!   list: the up primaries and, under sloppy quorum, a fallback for each
//!   down primary. If this node is a target it coordinates: it applies the
//!   write to its local object atomically ([`coordinate_write`](crate::core::coordinate_write)
//!   inside [`Store::update`]), sends the resulting object to the other targets
//!   (fallbacks are told which primary to keep a hint for), and answers the
//!   client once the [`PutCoordinator`](crate::core::PutCoordinator) says `w` (and `pw`) acknowledged.
//!   Otherwise it forwards the write to the first primary target (or the
//!   first fallback when no primary is up), which coordinates and answers
//!   through this node. A forwarded write is never forwarded again.
//! * **Get.** Any node coordinates a get: it asks as many targets as `r`
//!   and `pr` need, its own copy first when it is a target, and the others
//!   when an asked one fails or the answer is late
//!   ([`EngineConfig::read_speculation`]; one get in ten asks every target,
//!   [`EngineConfig::read_repair_chance`]); answers once the
//!   [`GetCoordinator`](crate::core::GetCoordinator) has `r` (and `pr`)
//!   replies, and once every target it asked answered or the request's
//!   time ran out, sends the merged object to the replicas that were stale
//!   (read repair).
//! * **Hinted handoff.** A fallback that stores a copy for a down primary
//!   also queues a hint for it in its hint queue. Every hint interval, hints for
//!   primaries that gossip reports up are sent in batches; each is deleted
//!   once the primary acknowledged it.
//!
//! # Membership and the ring
//!
//! Gossip carries each node's addresses, status and the version and hash of
//! its ring. The *claimant* — the lowest-id node among this node and the
//! peers it sees up, counting only nodes that hold the newest ring version —
//! builds the first ring once `initial_members` nodes are up, and the next
//! ring ([`Ring::rebalance`]) when members join or leave. A node that sees a
//! newer ring in gossip fetches it from its holder. A node is `joining` until
//! it holds a ring that includes it, then `up`.
//!
//! Data does not move between nodes yet, so a ring never changes once the
//! cluster holds data: a node that joins a cluster with data stays a member
//! that coordinates requests but owns no partition (status `joining`), and
//! the change is logged as deferred. This keeps every read correct: keys
//! are only ever read from the nodes that hold them.
//!
//! The claimant's view of "holds data" comes through gossip and can be
//! late, so every node also refuses to adopt a ring that would move away a
//! partition it holds data for, and says so in gossip (`ring_refused`);
//! the node that built the refused ring then goes back to the placement it
//! replaced, under a newer version ([`Ring::reissue`]). A node serves
//! requests only while every live member that holds a ring holds its ring
//! ([`Engine::is_ready`]), so two rings never take writes side by side —
//! not two first rings built at once, not a change still spreading, and so
//! going back moves no data either.
//!
//! # What the engine deliberately does not do
//!
//! It reads no clock, draws randomness only from the seeded generator it was
//! given, does no I/O other than through its [`Store`], and iterates no hash
//! map. Given the same store contents, seed and inputs, it produces the same
//! effects. Its [BUGGIFY](crate::buggify) fault sites are off unless
//! [`EngineConfig::buggify`] turns them on (the simulator does).
//! Anti-entropy, handoff of partitions on ring changes and tombstone
//! collection are not here yet.
//!
//! # Membership, shards and the seam between them
//!
//! An engine is membership, a set of shards, and a router.
//!
//! * **Membership** (`Membership`, a type of its own) owns the node's id
//!   and generation, the gossiper, the ring, the address book, peer
//!   generations, the claimant and ring fetch, and its own parts. It
//!   publishes a read-only `ClusterView` (the ring, who is up and who left,
//!   where each node is reached, whether the members agree on the ring, an
//!   identity conflict), rebuilt whenever something in it may have changed
//!   and versioned by its contents. It never calls the router or a shard.
//! * **Shards** ([`EngineConfig::shards`], 1 by default). Partition `p`
//!   belongs to shard `p % shards`; a shard owns the request state for keys
//!   in its partitions: the gets and puts it coordinates, the writes it
//!   forwarded and the forwarded writes it coordinated, its hint deliveries
//!   and hint round, its admission queue, an even share of the node's
//!   budgets (`max_pending_requests`, `max_background_*`, `max_queued_*`),
//!   and its counters. The request side reads membership only through
//!   `&ClusterView`, never the gossiper or the ring.
//! * **Parts** (`Parts`): what each of them — membership, and every shard
//!   — works with. Its own: a copy of the configuration, a generator
//!   seeded from the node's seed, fault sites, an effect queue and
//!   counters. Shared by handle: the store, the clock (behind a lock, which
//!   also orders the persisting of its ceiling), whether this start's
//!   actors are fresh, and a storage failure. So no two owners touch the
//!   same state except through those handles, which is what lets a shard
//!   run on a thread of its own. [`Engine::poll_effect`] hands out
//!   membership's effects, then each shard's in index order.
//!
//! The router hands each input to whoever it concerns. A client request,
//! a replica's `Store` or `Read` and a forwarded write go to the shard of
//! the key's partition; an answer (`Stored`, `ReadReply`, `ForwardReply`)
//! and a send failure go to the shard that made the request, named by the
//! shard bits of its request id (`requests::first_request_id`); gossip and
//! the ring exchange go to membership. A tick goes to membership, then to
//! each shard in index order, so the run stays deterministic. The
//! coordinator of a key and the vnode of the key's partition are in the
//! same shard, so a coordinator's call to its own replica never crosses
//! shards.
//!
//! Facts flow both ways as data, not calls across: what a shard learns
//! that membership must know it reports (`Facts`: data was written, so the
//! node holds data), and the router acts on it after the call; what
//! membership learns that the shards must act on (a node convicted or
//! restarted, a node up or gone whose hints may go) it records as
//! [`ShardInput`]s (`Convicted`, `Restarted`, `HintRoundNow`), and the
//! router passes them to every shard after the call, in the order
//! membership learnt them: at once to attached shards, in index order;
//! through the outbox to detached ones.
//!
//! # Attached and detached shards
//!
//! The simulator and the engine tests drive an engine with its shards
//! attached: every input goes through the router, on the caller's thread,
//! and one seed replays a run. A running node detaches them
//! ([`Engine::detach_shards`]) so that each runs on a thread of its own as
//! a [`ShardWorker`]: client requests go to the worker of the key's shard
//! ([`ShardMap`]), the router still checks every peer's frame first (an
//! older incarnation's data-plane frame is dropped, a newer one resets the
//! connection and has what waited for the old one sent again) and queues
//! what it would have handed a shard ([`ShardInput`], a changed view
//! first) for the runtime to pass on in order
//! ([`Engine::poll_shard_input`]), and the workers' facts come back
//! through [`Engine::handle_facts`]. The shard code is the same either
//! way; only who calls it, and when, differs.
//!
//! # Map
//!
//! This file holds the [`Engine`]: a `Membership`, the shard slots and
//! the outbox, with the router — the inputs, which hand each event to
//! membership or to a shard and pass on what each reports to the other —
//! and the public accessors and status methods, which ask membership.
//! The rest, each in its own file, in layers: a file imports only files
//! of the layers below it, so the modules form no cycle, and no handler
//! imports another (`node/tests/engine_modules.rs` checks both, and that
//! only `vnode` and `hints` call the store).
//!
//! Plain data and shared parts, at the bottom:
//!
//! * `config` — [`EngineConfig`] and [`UnsafeControls`];
//! * `io` — what goes in and out: [`Now`], client requests and replies,
//!   [`Effect`]s, [`EngineStats`], errors, and the bounds on a key;
//! * `view` — the seam: `ClusterView`, `Facts`, what the request side
//!   reports back, and [`ShardInput`], what a shard is handed besides
//!   client requests;
//! * `requests` — request ids (unique across restarts, with the shard's
//!   index), one ordered set of deadlines per shard for every kind of
//!   request, `Requests<T>` (one table per kind), the background work
//!   requests hold, and a shard's `Ledger` (all of that, its budgets and
//!   counters), which the shard lends to one handler at a time;
//! * `parts` — `Parts`, what each owner (membership, every shard) works
//!   with, and `Cx`, what a shard reaches for one input (the view, its
//!   parts, the facts it reports).
//!
//! Handlers, each owning the state of one concern and returning what the
//! others must act on as data:
//!
//! * `vnode` — the local replica, and with `hints` the only code that
//!   calls the [`Store`]: opening it, reads and writes, partition actors
//!   and epochs, the clock and its persisted ceiling, ring and generation
//!   metadata;
//! * `admission` — bounds checks on client requests and a shard's
//!   admission queue (`Admission`);
//! * `coordinator` — gets and puts a shard coordinates (`Coordinator`):
//!   `GetRequest` and `PutRequest` over
//!   [`GetCoordinator`](crate::core::GetCoordinator) and
//!   [`PutCoordinator`](crate::core::PutCoordinator), whose `on_reply` and
//!   `on_timeout` report progress (an answer once decided, done), and read
//!   repair; a write it is no target of comes back as `ToForward`;
//! * `forward` — writes forwarded to the replica that coordinates them
//!   (`Forwards`), and the checks a forwarded write passes before it is
//!   coordinated (`place_forwarded`);
//! * `hints` — hinted handoff: hints kept for unanswered targets and their
//!   delivery (`Hints`), each shard delivering those of its partitions;
//! * `membership` — `Membership`: the gossip bridge, the address book,
//!   peer generations, the claimant, ring fetch and adoption, an identity
//!   shared with another process, the view it publishes, and what it
//!   records for the shards;
//! * `status` — cluster, ring and preference-list status as plain data,
//!   read from `Membership`.
//!
//! Composers, at the top:
//!
//! * `shard` — `Shard`, the request side of a set of partitions: a
//!   `Ledger` and one handler per kind of request; it routes its inputs
//!   (client requests, data-plane messages, send failures, ticks, expiry)
//!   to them, hands what one leaves to another, and sheds background work
//!   one replica holds;
//! * `worker` — [`ShardWorker`], a shard detached to run on a thread of its
//!   own, and [`ShardMap`].

mod admission;
mod config;
mod coordinator;
mod forward;
mod hints;
mod io;
mod membership;
mod parts;
mod requests;
mod shard;
mod status;
mod view;
mod vnode;
mod worker;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chorus_gossip::LocalNode;
use chorus_ring::{Partitions, Ring};
use chorus_storage::store::{Store, StoreError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

use crate::api::{ClusterStatus, PreflistStatus, RequestError, RingStatus};
use crate::buggify::Buggify;
use crate::wire::{Frame, Message, WireError};

pub use self::config::{EngineConfig, UnsafeControls};
pub use self::io::{
    ClientId, ClientReply, ClientRequest, Effect, EngineError, EngineStats, IdentityConflict, Now,
};
use self::membership::Membership;
use self::parts::{Cx, Parts};
use self::requests::{RequestId, MAX_SHARDS};
use self::shard::{Shard, ShardSlot};
pub use self::view::{ClusterView, Facts, ShardInput};
use self::vnode::Opened;
pub use self::worker::{DirectRoutes, ShardMap, ShardWorker};

/// One node's cluster logic. See the [module docs](self).
#[derive(Debug)]
pub struct Engine<S> {
    /// Membership, the ring and the view it publishes, with its own parts.
    membership: Membership<S>,
    // ----- the request side -----
    /// Partition `p` belongs to `shards[p % shards.len()]`.
    shards: Vec<ShardSlot<S>>,
    /// How many shards the node runs, attached or detached.
    shard_count: usize,
    /// Set once the shards were detached to run on threads of their own
    /// ([`Engine::detach_shards`]): what the router hands them waits here
    /// for the runtime.
    outbox: Option<Outbox>,
}

/// What membership routes to detached shards, in order, and the version
/// of the view they were last sent.
#[derive(Debug, Default)]
struct Outbox {
    /// Each input with its shard (`None`: every shard).
    inputs: VecDeque<(Option<usize>, ShardInput)>,
    published: u64,
}

impl<S: Store> Engine<S> {
    /// Starts a node on `store`: reads (or creates) its id, raises its
    /// generation to the larger of the persisted one plus one and the wall
    /// clock in milliseconds, begins a new epoch if the last run did not stop
    /// cleanly, resumes its clock and ring, and begins gossiping.
    /// `seed` seeds every random choice the engine makes.
    pub fn start(
        config: EngineConfig,
        store: S,
        quic_addr: SocketAddr,
        http_addr: SocketAddr,
        now: Now,
        seed: u64,
    ) -> Result<Engine<S>, EngineError> {
        let partitions =
            Partitions::new(config.partitions).map_err(|e| EngineError::Config(e.to_string()))?;
        if config.replicas == 0 || config.initial_members < config.replicas {
            return Err(EngineError::Config(format!(
                "initial_members ({}) must be at least the replication factor ({}), which must be at least 1",
                config.initial_members, config.replicas
            )));
        }
        if config.shards == 0 || config.shards > MAX_SHARDS {
            return Err(EngineError::Config(format!(
                "shards ({}) must be between 1 and {MAX_SHARDS}",
                config.shards
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let Opened {
            id,
            previous,
            generation,
            unclean,
            hlc,
            ring,
            holds_data,
        } = vnode::open(&store, &config, now, &mut rng)?;
        let local = LocalNode {
            id,
            generation: chorus_gossip::Generation(generation),
            quic_addr,
            http_addr,
            zone: Some(config.zone.clone()),
        };
        let gossip_rng = ChaCha8Rng::seed_from_u64(rng.random());
        // A node that has never minted a dot, or that just began a new
        // epoch, cannot repeat one; a lone node has no peer to ask.
        let epoch_safe = unclean || previous == 0 || config.gossip.seeds.is_empty();
        let shard_seeds: Vec<u64> = (0..config.shards).map(|_| rng.random()).collect();
        let parts = Parts {
            partitions,
            store: Arc::new(store),
            hlc: Arc::new(Mutex::new(hlc)),
            rng,
            buggify: Buggify::new(seed, config.buggify),
            effects: VecDeque::new(),
            epoch_safe: Arc::new(AtomicBool::new(epoch_safe)),
            storage_failure: Arc::new(OnceLock::new()),
            stats: EngineStats::default(),
            config,
        };
        let shards: Vec<ShardSlot<S>> = shard_seeds
            .into_iter()
            .enumerate()
            .map(|(index, seed)| ShardSlot {
                shard: Shard::new(index, parts.config.shards, &parts.config, generation, now),
                parts: parts.for_owner(seed),
            })
            .collect();
        let membership =
            Membership::start(parts, local, gossip_rng, previous, ring, holds_data, now)?;
        let mut engine = Engine {
            membership,
            shard_count: shards.len(),
            shards,
            outbox: None,
        };
        engine.handle_tick(now);
        engine.membership.parts.flush_writes()?;
        Ok(engine)
    }

    /// This node's id.
    pub fn id(&self) -> Uuid {
        self.membership.id
    }

    /// Turns the [BUGGIFY](crate::buggify) fault sites on or off (the
    /// simulator's switch; see [`EngineConfig::buggify`]).
    pub fn set_buggify(&mut self, on: bool) {
        self.membership.parts.buggify.set_enabled(on);
        for slot in &mut self.shards {
            slot.parts.buggify.set_enabled(on);
        }
    }

    /// How often the fault sites fired, membership's and every shard's.
    pub fn buggify_fired_total(&self) -> u64 {
        self.shards
            .iter()
            .map(|slot| slot.parts.buggify.fired_total())
            .sum::<u64>()
            + self.membership.parts.buggify.fired_total()
    }

    /// How many fault sites were drawn active, over membership and every
    /// shard (see [`Buggify::active_total`]).
    pub fn buggify_active_total(&self) -> usize {
        self.shards
            .iter()
            .map(|slot| slot.parts.buggify.active_total())
            .sum::<usize>()
            + self.membership.parts.buggify.active_total()
    }

    /// This start's generation.
    pub fn generation(&self) -> u64 {
        self.membership.generation
    }

    /// The ring this node holds, if any.
    pub fn ring(&self) -> Option<&Ring> {
        self.membership.ring.as_deref()
    }

    /// Hints queued on this node, per target.
    pub fn pending_hints(&self) -> Result<Vec<(Uuid, usize)>, StoreError> {
        self.membership.parts.pending_hints()
    }

    /// The store this node runs on.
    pub fn store(&self) -> &S {
        &self.membership.parts.store
    }

    /// How many shards the node runs ([`EngineConfig::shards`]).
    pub fn shards(&self) -> usize {
        self.shard_count
    }

    /// Which shard a client request for `bucket`/`key` goes to: what the
    /// runtime needs to hand client requests to detached shards without
    /// the engine.
    pub fn shard_map(&self) -> ShardMap {
        ShardMap {
            partitions: self.membership.parts.partitions,
            shards: self.shard_count,
        }
    }

    /// Which peers' data-plane frames the runtime may hand straight to a
    /// detached shard, skipping [`Engine::handle_message`]: see
    /// [`DirectRoutes`]. Changes as membership learns peers and their
    /// generations; the runtime asks again after each batch of events.
    pub fn direct_routes(&self) -> DirectRoutes {
        DirectRoutes {
            settled: self.membership.settled_peers(),
            map: self.shard_map(),
        }
    }

    /// Takes the shards out of the engine so each can run on a thread of
    /// its own, as [`ShardWorker`]s, in index order. From then on the
    /// engine is membership and the router only: what it routes to a shard
    /// (a data-plane message, a send failure, a new view, a node convicted
    /// or restarted) waits in [`Engine::poll_shard_input`] for the runtime
    /// to pass on, client requests go to the workers directly, and what
    /// the workers report comes back through [`Engine::handle_facts`].
    /// Called a second time, returns nothing.
    pub fn detach_shards(&mut self) -> Vec<ShardWorker<S>> {
        if self.outbox.is_some() {
            return Vec::new();
        }
        let view = Arc::new(self.membership.view.clone());
        self.outbox = Some(Outbox {
            inputs: VecDeque::new(),
            published: self.membership.view.version,
        });
        std::mem::take(&mut self.shards)
            .into_iter()
            .map(|slot| ShardWorker::new(slot, Arc::clone(&view)))
            .collect()
    }

    /// The next input for a detached shard and which shard it is for
    /// (`None`: every shard), in the order membership routed them. A
    /// changed view comes before whatever follows its change. None while
    /// the shards are attached.
    pub fn poll_shard_input(&mut self) -> Option<(Option<usize>, ShardInput)> {
        self.publish_view();
        self.outbox.as_mut()?.inputs.pop_front()
    }

    /// What a detached shard reported ([`ShardWorker::take_facts`]).
    pub fn handle_facts(&mut self, facts: Facts) {
        // Acting on facts records nothing for the shards: nothing to pass on.
        self.membership.act_on(facts);
    }

    /// Queues `input` for detached shard `shard` (`None`: every shard),
    /// after the view if it changed since the shards last got it.
    fn route_to_detached(&mut self, shard: Option<usize>, input: ShardInput) {
        self.publish_view();
        if let Some(outbox) = self.outbox.as_mut() {
            outbox.inputs.push_back((shard, input));
        }
    }

    /// Queues the view for every detached shard if it changed since they
    /// last got it.
    fn publish_view(&mut self) {
        let Some(outbox) = self.outbox.as_mut() else {
            return;
        };
        let view = &self.membership.view;
        if outbox.published != view.version {
            outbox.published = view.version;
            outbox
                .inputs
                .push_back((None, ShardInput::View(Arc::new(view.clone()))));
        }
    }

    /// Stops the engine and hands back its store (a simulated crash or
    /// restart reopens it). Requests in flight are dropped unanswered. This is
    /// not a clean stop: the next start begins a new epoch unless
    /// [`Engine::stop`] was called first.
    pub fn into_store(self) -> S {
        let Engine {
            membership, shards, ..
        } = self;
        drop(shards);
        Arc::into_inner(membership.parts.store).expect("only the engine's owners hold the store")
    }

    /// Stops cleanly: syncs the store, then removes the running marker so
    /// the next start keeps the partitions' actors. The engine must not be
    /// driven afterwards. On error the marker stays (the next start begins a
    /// new epoch, which is always safe).
    pub fn stop(&mut self) -> Result<(), StoreError> {
        self.membership.parts.stop()
    }

    /// Whether the node can serve client requests: it holds a ring and
    /// every live member that holds a ring holds the same one (so two rings
    /// built at once, or a ring change still spreading, never take writes
    /// side by side), it runs with an identity no other live process has,
    /// and — in a cluster of more than one member — it sees at least one
    /// live peer.
    pub fn is_ready(&self) -> bool {
        self.membership.is_ready()
    }

    /// The other live process found running with this node's id, if any.
    /// The engine refuses all requests once there is one; the runtime
    /// should stop the node with this error.
    pub fn identity_conflict(&self) -> Option<&IdentityConflict> {
        self.membership.conflict.as_ref()
    }

    /// Whether `node` is up: gossip reports it alive and it has not left
    /// the cluster (this node is always up to itself). A member that left
    /// is down for placement, quorums and hint delivery from the moment
    /// its leave is known, for its whole quarantine.
    pub fn is_up(&self, node: Uuid) -> bool {
        self.membership.is_up(node)
    }

    /// The membership as this node sees it.
    pub fn cluster_status(&self) -> ClusterStatus {
        self.membership.cluster_status()
    }

    /// The ring this node holds, with each member's share and each
    /// partition's range and owner; `None` before it holds a ring.
    pub fn ring_status(&self) -> Option<RingStatus> {
        self.membership.ring_status()
    }

    /// Where a key's copies go now, as a coordinator on this node would
    /// place them ([`place`](crate::core::place)): its N primaries, up or
    /// down in this node's opinion, and, when `sloppy`, the fallbacks
    /// standing in for the down ones. `None` before this node holds a ring.
    pub fn preflist_status(
        &self,
        bucket: &[u8],
        key: &[u8],
        sloppy: bool,
    ) -> Option<PreflistStatus> {
        self.membership.preflist_status(bucket, key, sloppy)
    }

    /// Why the store could not flush its writes, if it could not. The
    /// engine hands out no effect from then on (what it would have
    /// acknowledged may not be in the log); the runtime should stop the
    /// node with this error.
    pub fn storage_failure(&self) -> Option<&str> {
        self.membership.parts.storage_failure()
    }

    /// The node's counters and gauges: its own, and every shard's summed.
    pub fn stats(&self) -> EngineStats {
        let mut stats = self.membership.stats();
        for slot in &self.shards {
            stats.add(&slot.parts.stats);
            stats.add(&slot.shard.stats());
        }
        stats
    }

    /// The latest time by which [`handle_tick`](Engine::handle_tick) must be called.
    pub fn next_wakeup(&self) -> Duration {
        let mut next = self.membership.next_wakeup();
        for slot in &self.shards {
            next = next.min(slot.shard.next_wakeup());
        }
        next
    }

    /// The next effect, if any.
    ///
    /// Group commit: the store's writes since the last flush are flushed
    /// ([`Store::flush`]) before an effect leaves, so no acknowledgement,
    /// reply or message that depends on a write goes out before the write
    /// is in the log (and fsynced, if it asked for `sync`). A batch of
    /// inputs handled before the effects are polled shares one flush.
    ///
    /// Membership's effects come first, then each shard's in index order;
    /// each owner's in the order it emitted them.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        let owners = std::iter::once(&mut self.membership.parts)
            .chain(self.shards.iter_mut().map(|s| &mut s.parts));
        for parts in owners {
            if let Some(effect) = parts.poll_effect() {
                return Some(effect);
            }
        }
        None
    }

    /// `message` in a frame from this node, at its current generation,
    /// ready to [`encode`](Frame::encode) for an [`Effect::Send`] or
    /// [`Effect::SendToSeed`].
    pub fn frame(&self, message: Message) -> Frame {
        Frame::new(self.membership.id, self.membership.generation, message)
    }

    // ----- inputs -----

    /// Time passed: runs gossip rounds and failure detection, keeps the
    /// ring in agreement, then lets each shard in index order expire its
    /// requests, deliver its hints and admit what waits.
    pub fn handle_tick(&mut self, now: Now) {
        self.membership.tick_gossip(now);
        // The shards act on what gossip found before the ring is checked,
        // so a write they make on it counts as data held.
        self.pass_to_shards(now);
        self.membership.tick_ring(now);
        self.pass_to_shards(now);
        for index in 0..self.shards.len() {
            self.on_shard(index, now, |shard, cx| shard.on_tick(cx, now));
        }
    }

    /// Bytes from another node. Malformed frames are refused with an error
    /// and change nothing.
    ///
    /// `source` is the address the frame came from; a node that is not yet
    /// known through gossip is answered there.
    pub fn handle_frame(
        &mut self,
        now: Now,
        source: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), WireError> {
        match Frame::decode(bytes, self.membership.parts.config.max_frame_bytes) {
            Ok(frame) => {
                self.handle_message(now, source, frame);
                Ok(())
            }
            Err(e) => {
                self.membership.parts.stats.frames_refused += 1;
                Err(e)
            }
        }
    }

    /// A decoded frame from another node (or this one): what
    /// [`handle_frame`](Engine::handle_frame) does once the bytes decode.
    /// `source` is the address the frame came from.
    ///
    /// Gossip and the ring exchange go to membership; a replica's request
    /// (store, read) and a forwarded write go to the shard of the key's
    /// partition; an answer (stored, read reply, forward reply) goes to the
    /// shard whose request it names.
    pub fn handle_message(&mut self, now: Now, source: SocketAddr, frame: Frame) {
        let from = frame.from;
        if from != self.membership.id {
            let data_plane = frame.message.is_data_plane();
            let current = self
                .membership
                .check_frame(from, source, frame.generation, data_plane);
            // A restart it shows reaches the shards before the frame does.
            self.pass_to_shards(now);
            if !current {
                return;
            }
        }
        let shard = match &frame.message {
            Message::Gossip(bytes) => {
                self.membership.on_gossip(now, from, source, bytes);
                self.pass_to_shards(now);
                None
            }
            Message::RingFetch { version } => {
                self.membership.on_ring_fetch(from, *version);
                self.pass_to_shards(now);
                None
            }
            Message::RingPush { ring } => {
                self.membership.on_ring_push(from, ring);
                self.pass_to_shards(now);
                None
            }
            data => self.shard_map().shard_of_message(data),
        };
        if let Some(index) = shard {
            let generation = frame.generation;
            if self.outbox.is_some() {
                let input = ShardInput::Message {
                    from,
                    generation,
                    message: frame.message,
                };
                self.route_to_detached(Some(index), input);
            } else {
                self.on_shard(index, now, |shard, cx| {
                    shard.on_message(cx, now, from, generation, frame.message)
                });
            }
        }
        self.admit_queued(now);
    }

    /// A frame this node emitted in [`Effect::Send`] to `to` could not be
    /// sent: no connection could be opened, the peer refused it, it was too
    /// large for the transport, or the runtime's send queue had no room.
    /// `payload` is the frame as emitted.
    ///
    /// Nothing is dropped silently: the request the frame belongs to counts
    /// the replica at `to` as failed ([`ReplicaError::Unreachable`](crate::core::ReplicaError::Unreachable)) at
    /// once instead of at its timeout, so a put or get decides on the
    /// replicas left and reports the failure in its tally; a write
    /// forwarded there fails as unavailable (it was not applied); a hint
    /// delivery ends and is retried in a later round. Frames that are not
    /// requests (gossip, replies, read repairs, ring exchange) change
    /// nothing: their loss is what a lossy network does. The failure goes
    /// to the shard whose request the frame carries.
    pub fn handle_send_failed(&mut self, now: Now, to: SocketAddr, payload: &[u8]) {
        self.membership.parts.stats.send_failures += 1;
        // A frame this node encoded; it may exceed the frame limit, which
        // is one reason it could not be sent.
        let frame = match Frame::decode(payload, usize::MAX) {
            Ok(frame) if frame.from == self.membership.id => frame,
            _ => {
                tracing::warn!(%to, "a send failure names a frame this node did not emit");
                return;
            }
        };
        let request = match &frame.message {
            Message::Store {
                request: Some(request),
                ..
            }
            | Message::Read { request, .. }
            | Message::Forward { request, .. } => Some(*request),
            _ => None,
        };
        if let Some(index) = request.and_then(|r| self.shard_of_request(r)) {
            if self.outbox.is_some() {
                let input = ShardInput::SendFailed {
                    to,
                    message: frame.message,
                };
                self.route_to_detached(Some(index), input);
            } else {
                self.on_shard(index, now, |shard, cx| {
                    shard.on_send_failed(cx, to, frame.message)
                });
            }
        }
        self.admit_queued(now);
    }

    /// A client request. Exactly one [`Effect::Reply`] with `client` follows,
    /// now or later. It goes to the shard of the key's partition.
    pub fn handle_client(&mut self, now: Now, client: ClientId, request: ClientRequest) {
        if self.outbox.is_some() {
            let error = "client requests go to the detached shards, not to membership";
            debug_assert!(false, "{error}");
            let result = Err(RequestError::Internal(error.into()));
            self.membership
                .parts
                .effects
                .push_back(Effect::Reply { client, result });
            return;
        }
        let index = self.shard_map().shard_of_request(&request);
        self.on_shard(index, now, |shard, cx| {
            shard.handle_client(cx, now, client, request)
        });
    }

    /// Announces that this node leaves the cluster for good (status `left`
    /// in gossip). The caller keeps ticking for a few gossip intervals so
    /// the news spreads, then stops. Its partitions do not move (handoff is
    /// not available), so a node that held data stays in the ring, down.
    pub fn leave(&mut self, now: Now) {
        self.membership.leave(now);
        self.pass_to_shards(now);
    }

    // ----- routing -----

    /// The shard that made `request`, if this node has one by its index.
    fn shard_of_request(&self, request: RequestId) -> Option<usize> {
        let index = requests::shard_of_request(request);
        (index < self.shard_count).then_some(index)
    }

    /// Runs `handle` on shard `index` with the view and the shared parts,
    /// then acts on the facts it reported.
    fn on_shard<R>(
        &mut self,
        index: usize,
        now: Now,
        handle: impl FnOnce(&mut Shard, &mut Cx<'_, S>) -> R,
    ) -> R {
        let slot = &mut self.shards[index];
        let mut cx = Cx {
            view: &self.membership.view,
            parts: &mut slot.parts,
            now,
            facts: Facts::default(),
        };
        let result = handle(&mut slot.shard, &mut cx);
        let facts = cx.facts;
        // Records nothing for the shards: nothing to pass on.
        self.membership.act_on(facts);
        result
    }

    /// Lets every shard, in index order, admit the client requests that
    /// wait while background work is under its budget.
    fn admit_queued(&mut self, now: Now) {
        for index in 0..self.shards.len() {
            self.on_shard(index, now, |shard, cx| shard.admit_queued(cx, now));
        }
    }

    /// Passes what membership learnt that every shard must act on
    /// ([`Membership::next_for_shards`]) on, in the order membership learnt it:
    /// attached shards act on each input at once, in index order — a node
    /// convicted fails what waits for it ([`Shard::fail_requests_to`]), a
    /// node restarted has what waits for it sent again
    /// ([`Shard::resend_to_restarted`]), and hints are offered at the next
    /// tick ([`Shard::hint_round_now`]); detached shards get each through
    /// the outbox, after the view if it changed.
    fn pass_to_shards(&mut self, now: Now) {
        while let Some(input) = self.membership.next_for_shards() {
            if self.outbox.is_some() {
                self.route_to_detached(None, input);
                continue;
            }
            match input {
                ShardInput::Convicted(node) => {
                    for index in 0..self.shards.len() {
                        self.on_shard(index, now, |shard, cx| shard.fail_requests_to(cx, node));
                    }
                }
                ShardInput::Restarted(node) => {
                    for index in 0..self.shards.len() {
                        self.on_shard(index, now, |shard, cx| shard.resend_to_restarted(cx, node));
                    }
                }
                ShardInput::HintRoundNow => {
                    for slot in &mut self.shards {
                        slot.shard.hint_round_now(now);
                    }
                }
                ShardInput::Message { .. }
                | ShardInput::SendFailed { .. }
                | ShardInput::View(_) => {
                    debug_assert!(false, "membership passes every shard only what it learnt");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
