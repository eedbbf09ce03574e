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
//! * **Get.** Any node coordinates a get: it reads its own copy when it is a
//!   target and asks the others, answers once the [`GetCoordinator`](crate::core::GetCoordinator) has
//!   `r` (and `pr`) replies, and once every target answered or the request's
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
//! # Map
//!
//! This file holds the public types and the router: the inputs, which hand
//! each event to the handler it concerns and act on what the handler
//! reports (send, answer, retire), and the effect queue. The handlers, each
//! in its own file:
//!
//! * `requests` — request ids (unique across restarts), one ordered set of
//!   deadlines for every kind of request, `Requests<T>` (one table per
//!   kind), and the background work requests hold;
//! * `admission` — bounds checks on client requests, the admission queue
//!   and its backpressure;
//! * `coordinator` — gets and puts this node coordinates: `GetRequest` and
//!   `PutRequest` over [`GetCoordinator`](crate::core::GetCoordinator) and
//!   [`PutCoordinator`](crate::core::PutCoordinator), whose `on_reply` and
//!   `on_timeout` report progress (an answer once decided, done), and read
//!   repair;
//! * `forward` — writes forwarded to the replica that coordinates them, on
//!   both sides (`ForwardedRequest` on the forwarding one);
//! * `vnode` — the local replica, and with `hints` the only code that
//!   calls the [`Store`]: opening it, reads and writes, partition actors
//!   and epochs, the clock and its persisted ceiling, ring and generation
//!   metadata;
//! * `hints` — hinted handoff: hints kept for unanswered targets and their
//!   delivery (`Hints`);
//! * `membership` — the gossip bridge, the address book, peer
//!   generations, the claimant, ring fetch and adoption, and an identity
//!   shared with another process;
//! * `status` — cluster, ring and preference-list status as plain data.

mod admission;
mod coordinator;
mod forward;
mod hints;
mod membership;
mod requests;
mod status;
mod vnode;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use chorus_gossip::{
    Config as GossipConfig, Gossiper, Liveness, LocalNode, RingClaim, StateKey, StateValue,
};
use chorus_ring::{Partitions, Ring};
use chorus_storage::hlc::{Hlc, HlcConfig};
use chorus_storage::store::{Store, StoreError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

use crate::api::{ReadReply, ReadRequest, RequestError, WriteReply, WriteRequest};
use crate::buggify::{Buggify, Site};
use crate::core::ReplicaError;
use crate::wire::{decode_object, Frame, Message, StoredAck, WireError, WireKey, MAX_FRAME_BYTES};

use self::admission::Queued;
use self::coordinator::{GetRequest, PutRequest};
use self::forward::{ForwardedRequest, SeenForwards};
use self::hints::Hints;
use self::membership::{NAME_EXTRA, STARTED_EXTRA};
use self::requests::{Background, Deadlines, RequestId, Requests};
use self::vnode::Opened;

/// How an engine behaves. `Default` is what a production node uses, apart
/// from its name.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A human-readable name for the node, shown in cluster status.
    pub name: String,
    /// The node's failure zone.
    pub zone: String,
    /// The node's capacity relative to others (ring weight).
    pub weight: u32,
    /// Partitions of a new cluster's ring (P).
    pub partitions: u32,
    /// Replicas of every key (N).
    pub replicas: usize,
    /// How many members must be up before the first ring is built.
    pub initial_members: usize,
    /// Membership settings, including the seeds.
    pub gossip: GossipConfig,
    /// Settings of the hybrid logical clock.
    pub hlc: HlcConfig,
    /// Most requests in flight whose client still waits for an answer
    /// (coordinated gets and puts not yet answered, forwarded writes);
    /// client requests beyond it are refused as overloaded. Work that goes
    /// on after the client was answered is bounded by the `max_background_*`
    /// settings instead.
    pub max_pending_requests: usize,
    /// Most background requests: puts already answered whose replication
    /// goes on, gets already answered that wait for their read repair, hint
    /// deliveries. While this or `max_background_bytes` is reached, new
    /// client requests wait in the admission queue (backpressure).
    pub max_background_requests: usize,
    /// Most bytes of objects held by background requests (the encoded
    /// object of each answered put and hint delivery in flight). Read
    /// repairs are skipped while it is reached.
    pub max_background_bytes: usize,
    /// Most client requests waiting for admission; more are refused as
    /// overloaded.
    pub max_queued_requests: usize,
    /// Most bytes of values in client requests waiting for admission.
    pub max_queued_bytes: usize,
    /// How often hints are offered to their primaries.
    pub hint_interval: Duration,
    /// Hints sent to one primary per interval at most.
    pub hint_batch: usize,
    /// How often ring agreement and the claimant's duty are checked.
    pub ring_interval: Duration,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Largest frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Turns on the [BUGGIFY](crate::buggify) fault sites. Only the
    /// simulator sets it; production nodes keep the default, off.
    pub buggify: bool,
    /// Deliberately unsafe behaviour, off by default. See [`UnsafeControls`].
    pub unsafe_controls: UnsafeControls,
}

/// Deliberately unsafe behaviour, each switch off by default and never set
/// by `chorus node start`: they exist so the test suite can show that its
/// history checkers catch the faults they guard against (negative controls,
/// as Jepsen runs known-unsafe configurations). Each switch names the
/// promise it breaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnsafeControls {
    /// Collapse a key's siblings to the one with the latest HLC timestamp on
    /// every coordinated write (last-writer-wins by wall clock), dropping
    /// concurrent acknowledged values no client was shown.
    pub last_writer_wins: bool,
    /// Answer a write with the key's whole stored context instead of the
    /// writer's own context plus its new version, so the next write with
    /// it replaces siblings its writer never saw (the review's F1).
    pub whole_context_in_write_replies: bool,
    /// Keep the partitions' actors when a new epoch should begin (after an
    /// unclean stop, on a restored or copied data directory), so a node
    /// that lost unsynced writes mints their dots again (the review's F2).
    pub keep_actors_after_unclean_stop: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            name: String::from("chorus"),
            zone: String::new(),
            weight: 100,
            partitions: 256,
            replicas: 3,
            initial_members: 3,
            gossip: GossipConfig::default(),
            hlc: HlcConfig::default(),
            max_pending_requests: 10_000,
            max_background_requests: 1024,
            max_background_bytes: 64 << 20,
            max_queued_requests: 4096,
            max_queued_bytes: 64 << 20,
            hint_interval: Duration::from_secs(1),
            hint_batch: 64,
            ring_interval: Duration::from_millis(500),
            max_value_bytes: crate::api::DEFAULT_MAX_VALUE_BYTES,
            max_frame_bytes: MAX_FRAME_BYTES,
            unsafe_controls: UnsafeControls::default(),
            buggify: false,
        }
    }
}

/// The time, as the engine's inputs carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time since an arbitrary origin: timers and failure detection.
    pub mono: Duration,
    /// Wall-clock milliseconds since the Unix epoch: the HLC.
    pub wall_ms: u64,
}

/// Identifies a client request so its reply can be routed back.
pub type ClientId = u64;

/// A client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRequest {
    Get(ReadRequest),
    Put(WriteRequest),
}

impl ClientRequest {
    /// The request's options.
    pub fn options(&self) -> &crate::core::RequestOptions {
        match self {
            ClientRequest::Get(read) => &read.options,
            ClientRequest::Put(write) => &write.options,
        }
    }

    fn options_mut(&mut self) -> &mut crate::core::RequestOptions {
        match self {
            ClientRequest::Get(read) => &mut read.options,
            ClientRequest::Put(write) => &mut write.options,
        }
    }
}

/// The successful answer to a client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientReply {
    Read(ReadReply),
    Write(WriteReply),
}

/// What the engine asks of the world.
///
/// Effects are typed: a message is a [`Message`], not bytes. Whoever
/// carries the effects out (the runtime, the simulator) frames it with
/// [`Engine::frame`] and encodes it; an engine test compares effect lists
/// with `assert_eq!`.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send `message` to the node `to`, at `addr`: the address gossip
    /// gives for it, or the one its last frame came from.
    Send {
        to: Uuid,
        addr: SocketAddr,
        message: Message,
    },
    /// Send a gossip message to a seed, known only by its address (its id
    /// is learnt from its answer).
    SendToSeed { addr: SocketAddr, message: Message },
    /// The node at `addr` restarted (a newer generation was seen): drop
    /// any connection to it now, since it leads to the dead process, so the
    /// next [`Effect::Send`] opens a fresh one.
    ResetConnection { addr: SocketAddr },
    /// Answer a client request. Every request gets exactly one.
    Reply {
        client: ClientId,
        result: Result<ClientReply, RequestError>,
    },
}

/// Why an engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Gossip(#[from] chorus_gossip::GossipError),
    #[error("the persisted ring does not decode: {0}")]
    Ring(String),
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Another live process runs with this node's id: its data directory was
/// copied from a live node's. The engine stops serving once it finds one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node id {id} is already alive at {addr} (generation {generation}); this data directory is a copy of a live node's")]
pub struct IdentityConflict {
    /// The shared node id.
    pub id: Uuid,
    /// Where the other process listens.
    pub addr: SocketAddr,
    /// The generation the other process runs at.
    pub generation: u64,
}

/// Counters and gauges, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub gets: u64,
    pub puts: u64,
    pub forwarded: u64,
    pub read_repairs: u64,
    pub hints_delivered: u64,
    /// Hints that could not be queued (the target's queue full, or a
    /// storage error): their primary gets the write only by read repair.
    pub hints_dropped: u64,
    pub frames_refused: u64,
    /// Data-plane frames dropped because they came from an older
    /// incarnation of their sender than the newest this node knows.
    pub frames_stale: u64,
    /// Read replies refused because their object carries a clock reading
    /// beyond this node's drift bound.
    pub replies_from_the_future: u64,
    /// Hints queued for targets that did not acknowledge a put in time.
    pub hints_for_timeouts: u64,
    /// Forwarded writes dropped because this node already coordinated a
    /// write with the same sender and request id (a frame delivered twice).
    pub forwards_repeated: u64,
    pub pending_requests: usize,
    /// Client requests refused as overloaded (too many in flight, the
    /// admission queue full, or waited too long for admission).
    pub refused_overloaded: u64,
    /// Read repairs not sent because background work held its byte budget.
    pub read_repairs_skipped: u64,
    /// Background requests handed to hinted handoff because one replica
    /// held most of the full background budget.
    pub background_shed: u64,
    /// Frames the runtime could not send ([`Engine::handle_send_failed`]).
    pub send_failures: u64,
    /// Client requests waiting for admission.
    pub queued_requests: usize,
    /// Background requests in flight (answered puts still replicating,
    /// answered gets waiting for read repair, hint deliveries).
    pub background_requests: usize,
    /// Bytes of objects those background requests hold.
    pub background_bytes: usize,
}

/// One node's cluster logic. See the [module docs](self).
#[derive(Debug)]
pub struct Engine<S> {
    config: EngineConfig,
    id: Uuid,
    generation: u64,
    partitions: Partitions,
    store: S,
    gossip: Gossiper<ChaCha8Rng>,
    hlc: Hlc,
    rng: ChaCha8Rng,
    ring: Option<Ring>,
    holds_data: bool,
    /// Ring members whose join or leave is deferred because data exists.
    deferred: BTreeSet<Uuid>,
    /// The ring this node replaced when it built the one it holds, as
    /// claimant: what the cluster goes back to should a member refuse the
    /// change.
    previous_ring: Option<Ring>,
    /// The last ring this node refused to adopt (it would have moved away a
    /// partition this node holds data for).
    refused_ring: Option<RingClaim>,
    /// The newest generation seen for each peer, from its frames or gossip.
    peer_generations: BTreeMap<Uuid, u64>,
    /// Request ids, and the deadlines of every request in flight.
    deadlines: Deadlines,
    /// Gets this node coordinates.
    gets: Requests<GetRequest>,
    /// Puts this node coordinates.
    puts: Requests<PutRequest>,
    /// Writes this node forwarded to the replica coordinating them.
    forwards: Requests<ForwardedRequest>,
    /// Hint deliveries in flight.
    hints: Hints,
    /// Ring fetches in flight.
    ring_fetches: Requests<()>,
    next_hint_round: Duration,
    next_ring_check: Duration,
    ring_fetch_in_flight: bool,
    /// Source addresses of nodes gossip does not know yet.
    sources: BTreeMap<Uuid, SocketAddr>,
    /// This start's actors are known to be fresh: a new epoch began, or a
    /// peer confirmed that no newer incarnation of this node exists.
    epoch_safe: bool,
    /// Wall-clock milliseconds at which this incarnation started.
    started_ms: u64,
    /// The generation the data directory held at start: the last run it
    /// knows of. A peer that held a later one shows the directory is stale.
    directory_generation: u64,
    /// Set when another live process was found running with this id.
    conflict: Option<IdentityConflict>,
    /// Set when the store could not flush its writes: nothing is
    /// acknowledged from then on.
    storage_failure: Option<String>,
    /// The last incarnation at another address that superseded this one:
    /// its start time (wall ms) and address.
    superseded_by: Option<(u64, SocketAddr)>,
    /// While a gossip frame is handled: its sender and the address it came
    /// from, where gossip's answers to it go (two processes sharing an id
    /// each get their own answers).
    reply_route: Option<(Uuid, SocketAddr)>,
    effects: VecDeque<Effect>,
    stats: EngineStats,
    /// The time of the input being handled.
    now: Now,
    /// Client requests waiting for admission, oldest first.
    admission: VecDeque<Queued>,
    /// Bytes of values in `admission`.
    queued_bytes: usize,
    /// Background work in flight: answered gets and puts, hint deliveries.
    background: Background,
    /// Fault sites, off outside simulation; their own generator.
    buggify: Buggify,
    /// Forwarded writes already coordinated, per sender: a frame delivered
    /// twice must not apply its write twice.
    forwards_seen: BTreeMap<Uuid, SeenForwards>,
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
        let mut gossip = Gossiper::new(config.gossip.clone(), local, gossip_rng)?;
        gossip.set_state(
            StateKey::Extra(NAME_EXTRA.into()),
            StateValue::Text(config.name.clone()),
        )?;
        gossip.set_state(
            StateKey::Extra(STARTED_EXTRA.into()),
            StateValue::Text(now.wall_ms.to_string()),
        )?;
        // A node that has never minted a dot, or that just began a new
        // epoch, cannot repeat one; a lone node has no peer to ask.
        let epoch_safe = unclean || previous == 0 || config.gossip.seeds.is_empty();
        let mut engine = Engine {
            partitions,
            id,
            generation,
            store,
            gossip,
            hlc,
            rng,
            ring: None,
            holds_data: false,
            deferred: BTreeSet::new(),
            previous_ring: None,
            refused_ring: None,
            peer_generations: BTreeMap::new(),
            deadlines: Deadlines::new(generation),
            gets: Requests::default(),
            puts: Requests::default(),
            forwards: Requests::default(),
            hints: Hints::default(),
            ring_fetches: Requests::default(),
            next_hint_round: now.mono,
            next_ring_check: now.mono,
            ring_fetch_in_flight: false,
            sources: BTreeMap::new(),
            epoch_safe,
            started_ms: now.wall_ms,
            directory_generation: previous,
            conflict: None,
            storage_failure: None,
            superseded_by: None,
            reply_route: None,
            effects: VecDeque::new(),
            stats: EngineStats::default(),
            now,
            admission: VecDeque::new(),
            queued_bytes: 0,
            background: Background::default(),
            buggify: Buggify::new(seed, config.buggify),
            forwards_seen: BTreeMap::new(),
            config,
        };
        if holds_data {
            engine.mark_holds_data();
        }
        if let Some(ring) = ring {
            engine.install_ring(ring, false);
        }
        engine.handle_tick(now);
        engine.flush_writes()?;
        Ok(engine)
    }

    /// This node's id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Turns the [BUGGIFY](crate::buggify) fault sites on or off (the
    /// simulator's switch; see [`EngineConfig::buggify`]).
    pub fn set_buggify(&mut self, on: bool) {
        self.buggify.set_enabled(on);
    }

    /// The fault sites and how often each fired.
    pub fn buggify(&self) -> &Buggify {
        &self.buggify
    }

    /// This start's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The ring this node holds, if any.
    pub fn ring(&self) -> Option<&Ring> {
        self.ring.as_ref()
    }

    /// The store this node runs on.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Stops the engine and hands back its store (a simulated crash or
    /// restart reopens it). Requests in flight are dropped unanswered. This is
    /// not a clean stop: the next start begins a new epoch unless
    /// [`Engine::stop`] was called first.
    pub fn into_store(self) -> S {
        self.store
    }

    /// Whether the node can serve client requests: it holds a ring and
    /// every live member that holds a ring holds the same one (so two rings
    /// built at once, or a ring change still spreading, never take writes
    /// side by side), it runs with an identity no other live process has,
    /// and — in a cluster of more than one member — it sees at least one
    /// live peer.
    pub fn is_ready(&self) -> bool {
        self.ring_agreed()
            && self.conflict.is_none()
            && self.storage_failure.is_none()
            && (self.config.initial_members <= 1
                || self
                    .gossip
                    .members()
                    .any(|m| !m.left && m.liveness == Liveness::Up))
    }

    /// The other live process found running with this node's id, if any.
    /// The engine refuses all requests once there is one; the runtime
    /// should stop the node with this error.
    pub fn identity_conflict(&self) -> Option<&IdentityConflict> {
        self.conflict.as_ref()
    }

    /// Why the store could not flush its writes, if it could not. The
    /// engine hands out no effect from then on (what it would have
    /// acknowledged may not be in the log); the runtime should stop the
    /// node with this error.
    pub fn storage_failure(&self) -> Option<&str> {
        self.storage_failure.as_deref()
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            pending_requests: self.requests_in_flight(),
            queued_requests: self.admission.len(),
            background_requests: self.background.requests,
            background_bytes: self.background.bytes,
            ..self.stats
        }
    }

    /// The latest time by which [`handle_tick`](Engine::handle_tick) must be called.
    pub fn next_wakeup(&self) -> Duration {
        let mut next = self
            .gossip
            .next_wakeup()
            .min(self.next_hint_round)
            .min(self.next_ring_check);
        if let Some(deadline) = self.deadlines.first() {
            next = next.min(deadline);
        }
        if let Some(deadline) = self.admission.iter().map(Queued::deadline).min() {
            next = next.min(deadline);
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
    pub fn poll_effect(&mut self) -> Option<Effect> {
        if self.effects.is_empty() || self.storage_failure.is_some() {
            return None;
        }
        if let Err(e) = self.flush_writes() {
            tracing::error!(error = %e, "the store could not flush its writes; the node acknowledges nothing more");
            self.storage_failure = Some(e.to_string());
            self.effects.clear();
            return None;
        }
        self.effects.pop_front()
    }

    /// `message` in a frame from this node, at its current generation,
    /// ready to [`encode`](Frame::encode) for an [`Effect::Send`] or
    /// [`Effect::SendToSeed`].
    pub fn frame(&self, message: Message) -> Frame {
        Frame::new(self.id, self.generation, message)
    }

    // ----- inputs -----

    /// Time passed: runs gossip rounds and failure detection, expires
    /// requests, delivers hints and keeps the ring in agreement.
    pub fn handle_tick(&mut self, now: Now) {
        self.now = now;
        self.gossip.handle_tick(now.mono);
        self.drain_gossip(now);
        while let Some(request) = self.deadlines.pop_due(now.mono) {
            self.expire(request);
        }
        self.expire_queued(now);
        if now.mono >= self.next_ring_check {
            self.next_ring_check = now.mono + self.config.ring_interval;
            self.check_ring(now);
        }
        if now.mono >= self.next_hint_round {
            self.next_hint_round = now.mono + self.config.hint_interval;
            if !self.buggify.fires(Site::HintRoundSkipped) {
                self.deliver_hints(now);
            }
        }
        self.admit_queued(now);
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
        self.now = now;
        match Frame::decode(bytes, self.config.max_frame_bytes) {
            Ok(frame) => {
                self.handle_message(now, source, frame);
                Ok(())
            }
            Err(e) => {
                self.stats.frames_refused += 1;
                Err(e)
            }
        }
    }

    /// A decoded frame from another node (or this one): what
    /// [`handle_frame`](Engine::handle_frame) does once the bytes decode.
    /// `source` is the address the frame came from.
    pub fn handle_message(&mut self, now: Now, source: SocketAddr, frame: Frame) {
        self.now = now;
        let from = frame.from;
        if from != self.id {
            self.remember_source(from, source);
            if !self.learn_generation(from, frame.generation) && frame.message.is_data_plane() {
                self.stats.frames_stale += 1;
                tracing::debug!(%from, generation = frame.generation, "dropped a frame from an older incarnation");
                return;
            }
        }
        match frame.message {
            Message::Gossip(bytes) => {
                if let Err(e) = self.gossip.handle_bytes(now.mono, &bytes) {
                    tracing::debug!(%from, error = %e, "gossip message refused");
                }
                self.reply_route = (from != self.id).then_some((from, source));
                self.drain_gossip(now);
                self.reply_route = None;
            }
            Message::Store {
                request,
                key,
                object,
                sync,
                stands_in_for,
            } => {
                let result = self.on_store(now, &key, &object, sync, stands_in_for);
                let answered = request.filter(|_| !self.buggify.fires(Site::ReplicaReplyDropped));
                if let Some(request) = answered {
                    self.send(
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
            } => self.on_stored(from, request, &key, result),
            Message::Read { request, key } => {
                let result = self
                    .read_local(&key)
                    .map(|o| serde_bytes::ByteBuf::from(o.encode()));
                if !self.buggify.fires(Site::ReplicaReplyDropped) {
                    self.send(
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
                        Ok(object) => self.observe(now, from, object),
                        Err(e) => Err(ReplicaError::Refused(e.to_string())),
                    },
                    Err(e) => Err(e),
                };
                self.on_read_reply(from, request, &key, result);
            }
            Message::Forward { request, write } => self.on_forward(now, from, request, write),
            Message::ForwardReply {
                request,
                bucket,
                key,
                result,
            } => self.on_forward_reply(from, request, &bucket, &key, result),
            Message::RingFetch { version } => {
                if let Some(ring) = &self.ring {
                    if ring.version() >= version && !self.buggify.fires(Site::RingPushDropped) {
                        let bytes = rmp_serde::to_vec(ring).expect("a ring always encodes");
                        self.send(from, Message::RingPush { ring: bytes });
                    }
                }
            }
            Message::RingPush { ring } => {
                self.ring_fetch_in_flight = false;
                match rmp_serde::from_slice::<Ring>(&ring) {
                    Ok(ring) => self.offer_ring(ring),
                    Err(e) => tracing::warn!(%from, error = %e, "refused a malformed ring"),
                }
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
    /// the replica at `to` as failed ([`ReplicaError::Unreachable`]) at
    /// once instead of at its timeout, so a put or get decides on the
    /// replicas left and reports the failure in its tally; a write
    /// forwarded there fails as unavailable (it was not applied); a hint
    /// delivery ends and is retried in a later round. Frames that are not
    /// requests (gossip, replies, read repairs, ring exchange) change
    /// nothing: their loss is what a lossy network does.
    pub fn handle_send_failed(&mut self, now: Now, to: SocketAddr, payload: &[u8]) {
        self.now = now;
        self.stats.send_failures += 1;
        // A frame this node encoded; it may exceed the frame limit, which
        // is one reason it could not be sent.
        let frame = match Frame::decode(payload, usize::MAX) {
            Ok(frame) if frame.from == self.id => frame,
            _ => {
                tracing::warn!(%to, "a send failure names a frame this node did not emit");
                return;
            }
        };
        match frame.message {
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
                        .find(|&node| self.address_of(node) == Some(to)),
                    None => self.hints.target_of(request),
                };
                if let Some(node) = node {
                    tracing::debug!(%node, %to, request, "a write could not be sent to its replica");
                    self.on_stored(node, request, &key, Err(ReplicaError::Unreachable));
                }
            }
            Message::Read { request, key } => {
                let node = self.gets.get(request).and_then(|get| {
                    get.unanswered()
                        .find(|&node| self.address_of(node) == Some(to))
                });
                if let Some(node) = node {
                    tracing::debug!(%node, %to, request, "a read could not be sent to its replica");
                    self.on_read_reply(node, request, &key, Err(ReplicaError::Unreachable));
                }
            }
            Message::Forward { request, .. } => {
                let forwarded_there = self
                    .forwards
                    .get(request)
                    .is_some_and(|f| self.address_of(f.to()) == Some(to));
                if forwarded_there {
                    let forwarded = self
                        .forwards
                        .remove(&mut self.deadlines, request)
                        .expect("checked above");
                    let (client, error) = forwarded.on_send_failed();
                    self.reply(client, Err(error));
                }
            }
            _ => {}
        }
        self.admit_queued(now);
    }

    /// A client request. Exactly one [`Effect::Reply`] with `client` follows,
    /// now or later.
    pub fn handle_client(&mut self, now: Now, client: ClientId, request: ClientRequest) {
        self.now = now;
        if let Err(error) = self.admit(&request) {
            if matches!(error, RequestError::Overloaded(_)) {
                self.stats.refused_overloaded += 1;
            }
            self.reply(client, Err(error));
            return;
        }
        self.shed_background_held_by_one_replica();
        if !self.admission.is_empty() || self.background_full() {
            self.enqueue(now, client, request);
            return;
        }
        self.dispatch(now, client, request);
    }

    /// Starts an admitted client request.
    fn dispatch(&mut self, now: Now, client: ClientId, request: ClientRequest) {
        match request {
            ClientRequest::Get(read) => self.start_get(now, client, read, None),
            ClientRequest::Put(write) if write.value.is_none() && write.context.is_none() => {
                // A delete without a context deletes what a read at the
                // request's `r` finds (Riak's behaviour), never nothing.
                let read = ReadRequest {
                    bucket: write.bucket.clone(),
                    key: write.key.clone(),
                    options: write.options,
                };
                self.start_get(now, client, read, Some(write));
            }
            ClientRequest::Put(write) => self.start_put(now, client, write),
        }
    }

    /// Announces that this node leaves the cluster for good (status `left`
    /// in gossip). The caller keeps ticking for a few gossip intervals so
    /// the news spreads, then stops. Its partitions do not move (handoff is
    /// not available), so a node that held data stays in the ring, down.
    pub fn leave(&mut self, now: Now) {
        self.gossip.begin_leave();
        self.gossip.complete_leave();
        self.drain_gossip(now);
    }

    // ----- requests in flight -----

    /// Requests in flight, of every kind.
    pub(super) fn requests_in_flight(&self) -> usize {
        self.gets.len()
            + self.puts.len()
            + self.forwards.len()
            + self.hints.len()
            + self.ring_fetches.len()
    }

    /// When a request started now and given `after` is due.
    pub(super) fn deadline(&mut self, now: Now, after: Duration) -> Duration {
        let after = if self.buggify.fires(Site::TimeoutEarly) {
            after.mul_f64(self.buggify.fraction())
        } else {
            after
        };
        now.mono + after
    }

    /// A replica's answer to a write: to a put this node coordinates, or to
    /// a hint delivery.
    fn on_stored(
        &mut self,
        from: Uuid,
        request: RequestId,
        key: &WireKey,
        result: Result<StoredAck, ReplicaError>,
    ) {
        if self.puts.get(request).is_some() {
            self.on_put_stored(from, request, key, result);
        } else {
            self.on_hint_stored(from, request, key, result);
        }
    }

    /// A request's time ran out: its kind decides what follows.
    fn expire(&mut self, request: RequestId) {
        if let Some(get) = self.gets.get_mut(request) {
            let progress = get.on_timeout();
            self.on_get_progress(request, progress);
        } else if let Some(put) = self.puts.get_mut(request) {
            let progress = put.on_timeout();
            self.on_put_progress(request, progress);
        } else if let Some(forwarded) = self.forwards.remove(&mut self.deadlines, request) {
            tracing::debug!(to = %forwarded.to(), "forwarded write timed out");
            let (client, error) = forwarded.on_timeout();
            self.reply(client, Err(error));
        } else if self.hints.contains(request) {
            self.end_hint_delivery(request);
        } else if self
            .ring_fetches
            .remove(&mut self.deadlines, request)
            .is_some()
        {
            self.ring_fetch_in_flight = false;
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
    pub(super) fn resend_to_restarted(&mut self, node: Uuid) {
        self.for_requests_waiting_on(node, WaitingAction::Resend);
    }

    /// The failure detector convicted `node`: the gets and puts still
    /// waiting for its answer count it as failed
    /// ([`ReplicaError::Unreachable`]) now rather than at their timeout,
    /// so a put decides on the replicas left and, once retired, hints
    /// `node` (it may never have had the write), and the background work
    /// its answers held stops holding admission back. Its hint deliveries
    /// end (the hints stay). A write forwarded to it waits for its answer
    /// or timeout: it may have been applied.
    pub(super) fn fail_requests_to(&mut self, node: Uuid) {
        self.for_requests_waiting_on(node, WaitingAction::Fail);
    }

    fn for_requests_waiting_on(&mut self, node: Uuid, action: WaitingAction) {
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
                        WaitingAction::Resend => self.send(node, Message::Read { request, key }),
                        WaitingAction::Fail => {
                            self.on_read_reply(node, request, &key, Err(ReplicaError::Unreachable))
                        }
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
                            self.send(node, message);
                        }
                        WaitingAction::Fail => {
                            let key = put.key().clone();
                            self.on_stored(node, request, &key, Err(ReplicaError::Unreachable));
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
                    self.reply(client, Err(error));
                }
            }
        }
    }

    // ----- output -----

    pub(super) fn send(&mut self, to: Uuid, message: Message) {
        let Some(addr) = self.address_of(to) else {
            tracing::debug!(%to, "no address for node; message dropped");
            return;
        };
        self.effects.push_back(Effect::Send { to, addr, message });
    }

    pub(super) fn reply(&mut self, client: ClientId, result: Result<ClientReply, RequestError>) {
        self.effects.push_back(Effect::Reply { client, result });
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

#[cfg(test)]
mod tests;
