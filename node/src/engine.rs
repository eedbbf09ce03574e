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
//! * **Put and delete.** The key's targets are [`place`]d on the preference
//!   list: the up primaries and, under sloppy quorum, a fallback for each
//!   down primary. If this node is a target it coordinates: it applies the
//!   write to its local object atomically ([`coordinate_write`] inside
//!   [`Store::update`]), sends the resulting object to the other targets
//!   (fallbacks are told which primary to keep a hint for), and answers the
//!   client once the [`PutCoordinator`] says `w` (and `pw`) acknowledged.
//!   Otherwise it forwards the write to the first primary target (or the
//!   first fallback when no primary is up), which coordinates and answers
//!   through this node. A forwarded write is never forwarded again.
//! * **Get.** Any node coordinates a get: it reads its own copy when it is a
//!   target and asks the others, answers once the [`GetCoordinator`] has
//!   `r` (and `pr`) replies, and once every target answered or the request's
//!   time ran out, sends the merged object to the replicas that were stale
//!   (read repair).
//! * **Hinted handoff.** A fallback that stores a copy for a down primary
//!   also queues a hint for it in the store. Every hint interval, hints for
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
//! [`EngineConfig::buggify`] turns them on (the simulator does). Anti-entropy, handoff of partitions on ring changes and tombstone
//! collection are not here yet.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use chorus_gossip::{
    Config as GossipConfig, Effect as GossipEffect, Gossiper, Liveness, LocalNode, Notification,
    RingClaim, StateKey, StateValue, Status, Target as GossipTarget,
};
use chorus_ring::{Member, PartitionId, Partitions, Ring};
use chorus_storage::context::CausalContext;
use chorus_storage::hlc::{Hlc, HlcConfig, Timestamp};
use chorus_storage::object::{check_content_type, ContentTypeError, Object};
use chorus_storage::store::{Durability, KeyRef, Store, StoreError, Update};
use chorus_storage::store::{MAX_BUCKET_LEN, MAX_KEY_LEN};
use chorus_storage::version::ActorId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

use crate::api::{
    ClusterStatus, MemberStatus, NodeRef, PreflistEntry, PreflistStatus, ReadReply, ReadRequest,
    RequestError, RingMember, RingPartition, RingStatus, WriteReply, WriteRequest,
};
use crate::buggify::{Buggify, Site};
use crate::core::{
    context_bound, coordinate_write, place, ClientWrite, GetCoordinator, PreferenceList,
    PutCoordinator, PutError, QuorumTally, Recorded, Replica, ReplicaError, ResolvedOptions,
};
use crate::wire::{
    decode_object, ForwardError, ForwardedReply, ForwardedWrite, Frame, Message, StoredAck,
    WireError, WireKey, MAX_FRAME_BYTES,
};

/// Metadata name of the persisted ring.
const RING_META: &str = "ring";
/// Metadata name of the flag saying this node has stored data.
const HOLDS_DATA_META: &str = "holds_data";
/// Metadata name of the marker saying a node runs on this store: written
/// (synced) at start, removed by a clean stop. Found at start, it means the
/// last run ended uncleanly and may have lost writes it acknowledged.
const RUNNING_META: &str = "running";
/// Gossip extra entry carrying the wall-clock milliseconds at which this
/// incarnation started; tells the older of two processes sharing an id.
const STARTED_EXTRA: &str = "started";
/// Gossip extra entry announcing that a node holds data.
const HOLDS_DATA_EXTRA: &str = "holds_data";
/// Gossip extra entry naming a ring this node refused to adopt, as
/// `<version>:<hash in hex>`.
const RING_REFUSED_EXTRA: &str = "ring_refused";
/// Gossip extra entry carrying the node's name.
const NAME_EXTRA: &str = "name";
/// Most source addresses remembered for nodes gossip does not know yet.
const MAX_SOURCES: usize = 1024;
/// Most peers whose newest generation is remembered.
const MAX_PEER_GENERATIONS: usize = 4096;
/// How long a hint delivery or ring fetch may take before it is retried.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Extra time a forwarding node waits beyond the request's timeout for the
/// coordinating replica's answer.
const FORWARD_GRACE: Duration = Duration::from_secs(1);
/// Most forwarded request ids remembered per sender, to refuse a second
/// delivery of one forwarded write.
const MAX_FORWARDS_REMEMBERED: usize = 1024;
/// Most senders whose forwarded request ids are remembered.
const MAX_FORWARD_SENDERS: usize = 4096;

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
    /// Longest a client request waits for admission before it is refused
    /// as overloaded.
    pub max_queue_wait: Duration,
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
            max_queue_wait: Duration::from_secs(5),
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

/// The successful answer to a client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientReply {
    Read(ReadReply),
    Write(WriteReply),
}

/// What the engine asks of the world.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send an encoded [`Frame`] to the node listening at `addr`.
    Send { addr: SocketAddr, payload: Vec<u8> },
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

/// Who is waiting for the outcome of a coordinated write.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Client(ClientId),
    /// A node forwarded the write; its reply names the key.
    Forward {
        node: Uuid,
        request: u64,
        bucket: Vec<u8>,
        key: Vec<u8>,
    },
}

#[derive(Debug)]
enum Pending {
    Get {
        client: ClientId,
        key: WireKey,
        coordinator: GetCoordinator,
        targets: usize,
        replies: usize,
        answered: bool,
        /// A delete without a context waiting for this read: once it
        /// succeeds, the delete is written with the read's context.
        then_delete: Option<WriteRequest>,
    },
    Put {
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
        /// The encoded object's size: what the put holds once it is
        /// answered and becomes background work.
        bytes: usize,
    },
    Forwarded {
        client: ClientId,
        to: Uuid,
        bucket: Vec<u8>,
        key: Vec<u8>,
        w: usize,
        pw: usize,
    },
    Hint {
        target: Uuid,
        seq: u64,
        key: WireKey,
        /// The hint's write was acknowledged durably: only a durable
        /// acknowledgement of the delivery deletes it.
        durable: bool,
        /// The encoded object's size.
        bytes: usize,
    },
    RingFetch,
}

impl Pending {
    /// The bytes this request holds if it is background work: a put or
    /// get whose client was answered, or a hint delivery. `None` while a
    /// client still waits for it.
    fn background_bytes(&self) -> Option<usize> {
        match self {
            Pending::Put {
                answered: true,
                bytes,
                ..
            } => Some(*bytes),
            Pending::Get { answered: true, .. } => Some(0),
            Pending::Hint { bytes, .. } => Some(*bytes),
            _ => None,
        }
    }
}

/// A client request waiting for admission while background work is over
/// its budget.
#[derive(Debug)]
struct Queued {
    client: ClientId,
    request: ClientRequest,
    /// When it was queued (monotonic).
    since: Duration,
    /// The bytes of its value.
    bytes: usize,
}

/// The forwarded writes one sender's incarnations asked this node to
/// coordinate: every id at or below `floor`, and those in `ids`. A sender's
/// request ids grow with its generation and within it, so forgetting the
/// smallest id raises the floor instead of letting it be applied again.
#[derive(Debug, Default)]
struct SeenForwards {
    floor: u64,
    ids: BTreeSet<u64>,
}

impl SeenForwards {
    /// Records `request`; false if it was seen (or is below what was
    /// forgotten).
    fn first_time(&mut self, request: u64) -> bool {
        if request <= self.floor || !self.ids.insert(request) {
            return false;
        }
        while self.ids.len() > MAX_FORWARDS_REMEMBERED {
            let forgotten = self.ids.pop_first().expect("not empty");
            self.floor = self.floor.max(forgotten);
        }
        true
    }
}

/// Requests and bytes of background work in flight.
#[derive(Debug, Clone, Copy, Default)]
struct Background {
    requests: usize,
    bytes: usize,
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
    /// The next request id: this start's generation in the high 32 bits,
    /// a counter in the low 32.
    next_request: u64,
    /// The newest generation seen for each peer, from its frames or gossip.
    peer_generations: BTreeMap<Uuid, u64>,
    pending: BTreeMap<u64, Pending>,
    deadlines: BTreeSet<(Duration, u64)>,
    /// The deadline of each request in `deadlines`.
    deadline_of: BTreeMap<u64, Duration>,
    hint_targets_in_flight: BTreeSet<Uuid>,
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
    /// Per target, the sequence number after which the next hint round
    /// reads, so hints that keep failing never block those behind them.
    hint_cursor: BTreeMap<Uuid, u64>,
    /// Client requests waiting for admission, oldest first.
    admission: VecDeque<Queued>,
    /// Bytes of values in `admission`.
    queued_bytes: usize,
    /// Background work in `pending` (see [`Pending::background_bytes`]).
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
        let id = store.node_id(Uuid::from_u128(rng.random()))?;
        // Generations follow the wall clock (in ms, as Cassandra's follow it
        // in seconds), so a node started on an older copy of its data
        // directory still comes back above every generation it ran at; the
        // persisted value keeps them increasing when the clock is behind.
        let previous = store.generation()?;
        let generation = store.raise_generation(previous.saturating_add(1).max(now.wall_ms))?;
        // An unclean end of the last run may have lost versions this node
        // minted or acknowledged: its partitions get new actors (§3 rule 1).
        let unclean = store.get_meta(RUNNING_META)?.is_some();
        if unclean && !config.unsafe_controls.keep_actors_after_unclean_stop {
            tracing::warn!(
                generation,
                "the last run did not stop cleanly: beginning a new epoch (new actor ids for every partition)"
            );
            store.clear_partition_actors()?;
        }
        store.put_meta(RUNNING_META, &generation.to_be_bytes())?;
        let hlc = match store.hlc_ceiling()? {
            Some(ceiling) => Hlc::resume(config.hlc, ceiling),
            None => Hlc::new(config.hlc),
        };
        let ring = match store.get_meta(RING_META)? {
            Some(bytes) => Some(
                rmp_serde::from_slice::<Ring>(&bytes)
                    .map_err(|e| EngineError::Ring(e.to_string()))?,
            ),
            None => None,
        };
        let holds_data = store.get_meta(HOLDS_DATA_META)?.is_some();
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
            next_request: first_request_id(generation),
            peer_generations: BTreeMap::new(),
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            deadline_of: BTreeMap::new(),
            hint_targets_in_flight: BTreeSet::new(),
            next_hint_round: now.mono,
            next_ring_check: now.mono,
            ring_fetch_in_flight: false,
            sources: BTreeMap::new(),
            epoch_safe,
            started_ms: now.wall_ms,
            directory_generation: previous,
            conflict: None,
            superseded_by: None,
            reply_route: None,
            effects: VecDeque::new(),
            stats: EngineStats::default(),
            now,
            hint_cursor: BTreeMap::new(),
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

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Stops the engine and hands back its store (a simulated crash or
    /// restart reopens it). Pending requests are dropped unanswered. This is
    /// not a clean stop: the next start begins a new epoch unless
    /// [`Engine::stop`] was called first.
    pub fn into_store(self) -> S {
        self.store
    }

    /// Stops cleanly: syncs the store, then removes the running marker so
    /// the next start keeps the partitions' actors. The engine must not be
    /// driven afterwards. On error the marker stays (the next start begins a
    /// new epoch, which is always safe).
    pub fn stop(&mut self) -> Result<(), StoreError> {
        self.store.sync()?;
        self.store.delete_meta(RUNNING_META)?;
        Ok(())
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

    /// Whether this node holds a ring and no live member holds another.
    fn ring_agreed(&self) -> bool {
        let Some(mine) = self.ring_claim_of(self.id) else {
            return false;
        };
        self.gossip
            .members()
            .filter(|m| m.id != self.id && !m.left && m.liveness == Liveness::Up)
            .all(|m| m.state.ring().is_none_or(|claim| claim == mine))
    }

    /// Whether `node` is up: gossip reports it alive and it has not left
    /// the cluster (this node is always up to itself). A member that left
    /// is down for placement, quorums and hint delivery from the moment
    /// its leave is known, for its whole quarantine.
    pub fn is_up(&self, node: Uuid) -> bool {
        node == self.id || (self.gossip.is_up(&node) && !self.has_left(node))
    }

    /// Whether gossip says `node` left the cluster.
    fn has_left(&self, node: Uuid) -> bool {
        self.gossip
            .member(&node)
            .is_some_and(|m| m.left || m.state.status() == Some(Status::Left))
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            pending_requests: self.pending.len(),
            queued_requests: self.admission.len(),
            background_requests: self.background.requests,
            background_bytes: self.background.bytes,
            ..self.stats
        }
    }

    /// Hints queued on this node, per target.
    pub fn pending_hints(&self) -> Result<Vec<(Uuid, usize)>, StoreError> {
        self.store.hint_counts()
    }

    /// The latest time by which [`handle_tick`](Engine::handle_tick) must be called.
    pub fn next_wakeup(&self) -> Duration {
        let mut next = self
            .gossip
            .next_wakeup()
            .min(self.next_hint_round)
            .min(self.next_ring_check);
        if let Some(&(deadline, _)) = self.deadlines.first() {
            next = next.min(deadline);
        }
        if let Some(queued) = self.admission.front() {
            next = next.min(queued.since + self.config.max_queue_wait);
        }
        next
    }

    /// The next effect, if any.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// The membership as this node sees it.
    pub fn cluster_status(&self) -> ClusterStatus {
        let mut members = Vec::new();
        for member in self.gossip.members() {
            let state = member.state;
            let local = member.id == self.id;
            let liveness = if local {
                "up"
            } else {
                match member.liveness {
                    Liveness::Up => "up",
                    Liveness::Down => "down",
                    Liveness::Unknown => "unknown",
                }
            };
            let status = if member.left {
                Status::Left
            } else {
                state.status().unwrap_or(Status::Joining)
            };
            let name = match state.get(&StateKey::Extra(NAME_EXTRA.into())) {
                Some(versioned) => match &versioned.value {
                    StateValue::Text(name) => name.clone(),
                    _ => String::new(),
                },
                None => String::new(),
            };
            members.push(MemberStatus {
                id: member.id,
                name,
                quic_addr: state.quic_addr(),
                http_addr: state.http_addr(),
                status: status_name(status).to_string(),
                zone: state.zone().map(str::to_string),
                generation: state.generation().0,
                heartbeat: state.heartbeat().0,
                liveness: liveness.to_string(),
                local,
            });
        }
        if !members.iter().any(|m| m.local) {
            let state = self.gossip.local_state();
            members.push(MemberStatus {
                id: self.id,
                name: self.config.name.clone(),
                quic_addr: state.quic_addr(),
                http_addr: state.http_addr(),
                status: status_name(state.status().unwrap_or(Status::Joining)).to_string(),
                zone: state.zone().map(str::to_string),
                generation: self.generation,
                heartbeat: state.heartbeat().0,
                liveness: "up".to_string(),
                local: true,
            });
            members.sort_by_key(|m| m.id);
        }
        ClusterStatus {
            node_id: self.id,
            node_name: self.config.name.clone(),
            ring_version: self.ring.as_ref().map(Ring::version),
            ring_hash: self.ring.as_ref().map(|r| format!("{:016x}", r.hash().0)),
            members,
        }
    }

    /// The ring this node holds, with each member's share and each
    /// partition's range and owner; `None` before it holds a ring.
    pub fn ring_status(&self) -> Option<RingStatus> {
        let ring = self.ring.as_ref()?;
        let split = ring.partitions();
        let count = split.count();
        let members = ring.members();
        let position = |id: Uuid| {
            members
                .binary_search_by(|m| m.id.cmp(&id))
                .expect("a ring's primaries are its members")
        };
        let names: Vec<String> = members.iter().map(|m| self.published(m.id).0).collect();
        let mut owned = vec![0usize; members.len()];
        let partitions = split
            .iter()
            .map(|partition| {
                let primaries = ring.primaries(partition);
                let owner = position(primaries[0]);
                owned[owner] += 1;
                let range = split.hash_range(partition);
                RingPartition {
                    index: partition.0,
                    start: format!("{:016x}", range.start()),
                    end: format!("{:016x}", range.end()),
                    owner: NodeRef {
                        id: members[owner].id,
                        name: names[owner].clone(),
                    },
                    primaries: primaries.to_vec(),
                }
            })
            .collect();
        let percent = |n: usize| 100.0 * n as f64 / f64::from(count);
        let members = members
            .iter()
            .zip(ring.loads())
            .zip(names)
            .zip(owned)
            .map(|(((member, load), name), owned)| RingMember {
                id: member.id,
                name,
                zone: member.zone.clone(),
                weight: member.weight,
                owned_partitions: owned,
                owns_percent: percent(owned),
                primary_partitions: load,
                effective_percent: percent(load),
            })
            .collect();
        Some(RingStatus {
            version: ring.version(),
            hash: format!("{:016x}", ring.hash().0),
            replicas: ring.replicas(),
            partition_count: count,
            members,
            partitions,
        })
    }

    /// Where a key's copies go now, as a coordinator on this node would
    /// place them ([`place`]): its N primaries, up or down in this node's
    /// opinion, and, when `sloppy`, the fallbacks standing in for the down
    /// ones. `None` before this node holds a ring.
    pub fn preflist_status(
        &self,
        bucket: &[u8],
        key: &[u8],
        sloppy: bool,
    ) -> Option<PreflistStatus> {
        let ring = self.ring.as_ref()?;
        let (partition, list) = self.preference_list(bucket, key);
        let targets = place(&list, &self.up_set(&list), sloppy);
        let entry = |id: Uuid, fallback_for: Option<Uuid>| {
            let (name, quic_addr, http_addr) = self.published(id);
            PreflistEntry {
                id,
                name,
                quic_addr,
                http_addr,
                up: self.is_up(id),
                fallback_for,
            }
        };
        Some(PreflistStatus {
            bucket: String::from_utf8_lossy(bucket).into_owned(),
            key: String::from_utf8_lossy(key).into_owned(),
            hash: format!("{:016x}", chorus_ring::key_hash(bucket, key)),
            partition: partition.0,
            ring_version: ring.version(),
            sloppy,
            primaries: list.primaries().iter().map(|&id| entry(id, None)).collect(),
            fallbacks: targets
                .iter()
                .filter_map(|target| {
                    target
                        .hint()
                        .map(|primary| entry(target.node, Some(primary)))
                })
                .collect(),
        })
    }

    /// A node's name and addresses as published in gossip (this node's
    /// from its own configuration and state); empty for a node gossip does
    /// not know.
    fn published(&self, id: Uuid) -> (String, Option<SocketAddr>, Option<SocketAddr>) {
        if id == self.id {
            let state = self.gossip.local_state();
            return (
                self.config.name.clone(),
                state.quic_addr(),
                state.http_addr(),
            );
        }
        let Some(member) = self.gossip.member(&id) else {
            return (String::new(), None, None);
        };
        let name = match member.state.get(&StateKey::Extra(NAME_EXTRA.into())) {
            Some(versioned) => match &versioned.value {
                StateValue::Text(name) => name.clone(),
                _ => String::new(),
            },
            None => String::new(),
        };
        (name, member.state.quic_addr(), member.state.http_addr())
    }

    // ----- inputs -----

    /// Time passed: runs gossip rounds and failure detection, expires
    /// requests, delivers hints and keeps the ring in agreement.
    pub fn handle_tick(&mut self, now: Now) {
        self.now = now;
        self.gossip.handle_tick(now.mono);
        self.drain_gossip(now);
        while let Some(&(deadline, request)) = self.deadlines.first() {
            if deadline > now.mono {
                break;
            }
            self.deadlines.pop_first();
            self.deadline_of.remove(&request);
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
        let frame = match Frame::decode(bytes, self.config.max_frame_bytes) {
            Ok(frame) => frame,
            Err(e) => {
                self.stats.frames_refused += 1;
                return Err(e);
            }
        };
        let from = frame.from;
        if from != self.id {
            self.remember_source(from, source);
            if !self.learn_generation(from, frame.generation) && frame.message.is_data_plane() {
                self.stats.frames_stale += 1;
                tracing::debug!(%from, generation = frame.generation, "dropped a frame from an older incarnation");
                return Ok(());
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
                hint_for,
            } => {
                let result = self.on_store(now, &key, &object, sync, hint_for);
                if request != 0 && !self.buggify.fires(Site::ReplicaReplyDropped) {
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
                    return Ok(());
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
        Ok(())
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
            Message::Store { request, key, .. } if request != 0 => {
                let node = match self.pending.get(&request) {
                    Some(Pending::Put { coordinator, .. }) => coordinator
                        .unanswered()
                        .into_iter()
                        .map(|t| t.node)
                        .find(|&node| self.address_of(node) == Some(to)),
                    Some(Pending::Hint { target, .. }) => Some(*target),
                    _ => None,
                };
                if let Some(node) = node {
                    tracing::debug!(%node, %to, request, "a write could not be sent to its replica");
                    self.on_stored(node, request, &key, Err(ReplicaError::Unreachable));
                }
            }
            Message::Read { request, key } => {
                let node = match self.pending.get(&request) {
                    Some(Pending::Get { coordinator, .. }) => coordinator
                        .unanswered()
                        .into_iter()
                        .map(|t| t.node)
                        .find(|&node| self.address_of(node) == Some(to)),
                    _ => None,
                };
                if let Some(node) = node {
                    tracing::debug!(%node, %to, request, "a read could not be sent to its replica");
                    self.on_read_reply(node, request, &key, Err(ReplicaError::Unreachable));
                }
            }
            Message::Forward { request, .. } => {
                let forwarded_there = matches!(
                    self.pending.get(&request),
                    Some(Pending::Forwarded { to: node, .. }) if self.address_of(*node) == Some(to)
                );
                if forwarded_there {
                    let Some(Pending::Forwarded {
                        client, to: node, ..
                    }) = self.take_pending(request)
                    else {
                        unreachable!("matched above");
                    };
                    self.reply(
                        client,
                        Err(RequestError::Unavailable(format!(
                            "the write could not be sent to replica {node}, which coordinates it; nothing was applied"
                        ))),
                    );
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

    // ----- client requests -----

    fn admit(&self, request: &ClientRequest) -> Result<(), RequestError> {
        let (bucket, key) = match request {
            ClientRequest::Get(r) => (&r.bucket, &r.key),
            ClientRequest::Put(w) => (&w.bucket, &w.key),
        };
        check_key("bucket", bucket, MAX_BUCKET_LEN)?;
        check_key("key", key, MAX_KEY_LEN)?;
        if let ClientRequest::Put(WriteRequest {
            value: Some(value), ..
        }) = request
        {
            if value.len() > self.config.max_value_bytes {
                return Err(RequestError::ValueTooLarge {
                    size: value.len(),
                    max: self.config.max_value_bytes,
                });
            }
        }
        if let ClientRequest::Put(WriteRequest {
            value,
            content_type: Some(content_type),
            ..
        }) = request
        {
            if value.is_none() {
                return Err(ContentTypeError::OnTombstone.into());
            }
            check_content_type(content_type)?;
        }
        if let Some(conflict) = &self.conflict {
            return Err(RequestError::Unavailable(conflict.to_string()));
        }
        if self.ring.is_none() {
            return Err(RequestError::Unavailable(
                "the node holds no ring yet: the cluster is forming".into(),
            ));
        }
        if !self.ring_agreed() {
            return Err(RequestError::Unavailable(
                "the members do not agree on the ring yet: a ring change is spreading".into(),
            ));
        }
        let awaited = self.awaited_requests();
        if awaited >= self.config.max_pending_requests {
            return Err(RequestError::Overloaded(format!(
                "{awaited} client requests in flight, the most this node takes"
            )));
        }
        Ok(())
    }

    /// Requests in flight whose client still waits (background work aside).
    fn awaited_requests(&self) -> usize {
        self.pending.len() - self.background.requests
    }

    /// Whether background work holds its whole budget, so new client
    /// requests wait for admission.
    fn background_full(&self) -> bool {
        self.background.requests >= self.config.max_background_requests
            || self.background.bytes >= self.config.max_background_bytes
    }

    /// Queues a client request until background work is back under its
    /// budget (backpressure), or refuses it as overloaded when the
    /// admission queue is full.
    fn enqueue(&mut self, now: Now, client: ClientId, request: ClientRequest) {
        let bytes = match &request {
            ClientRequest::Put(WriteRequest {
                value: Some(value), ..
            }) => value.len(),
            _ => 0,
        };
        if self.admission.len() >= self.config.max_queued_requests
            || self.queued_bytes + bytes > self.config.max_queued_bytes
        {
            self.stats.refused_overloaded += 1;
            let error = RequestError::Overloaded(format!(
                "{} requests ({} bytes) already wait for admission",
                self.admission.len(),
                self.queued_bytes
            ));
            return self.reply(client, Err(error));
        }
        self.queued_bytes += bytes;
        self.admission.push_back(Queued {
            client,
            request,
            since: now.mono,
            bytes,
        });
    }

    /// Starts queued client requests, oldest first, while background work
    /// is under its budget.
    fn admit_queued(&mut self, now: Now) {
        while !self.background_full() {
            let Some(queued) = self.admission.pop_front() else {
                break;
            };
            self.queued_bytes -= queued.bytes;
            match self.admit(&queued.request) {
                Ok(()) => self.dispatch(now, queued.client, queued.request),
                Err(error) => {
                    if matches!(error, RequestError::Overloaded(_)) {
                        self.stats.refused_overloaded += 1;
                    }
                    self.reply(queued.client, Err(error));
                }
            }
        }
    }

    /// Refuses queued client requests that waited `max_queue_wait`.
    fn expire_queued(&mut self, now: Now) {
        while let Some(queued) = self.admission.front() {
            if queued.since + self.config.max_queue_wait > now.mono {
                break;
            }
            let queued = self.admission.pop_front().expect("checked above");
            self.queued_bytes -= queued.bytes;
            self.stats.refused_overloaded += 1;
            let error = RequestError::Overloaded(format!(
                "waited {} ms for background work to drain",
                self.config.max_queue_wait.as_millis()
            ));
            self.reply(queued.client, Err(error));
        }
    }

    fn preference_list(&self, bucket: &[u8], key: &[u8]) -> (PartitionId, PreferenceList) {
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

    fn up_set(&self, list: &PreferenceList) -> BTreeSet<Uuid> {
        list.primaries()
            .iter()
            .chain(list.fallbacks())
            .copied()
            .filter(|&node| self.is_up(node))
            .collect()
    }

    fn start_get(
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

    fn start_put(&mut self, now: Now, client: ClientId, write: WriteRequest) {
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
    fn coordinate_put(
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

    fn on_forward(&mut self, now: Now, from: Uuid, request: u64, write: ForwardedWrite) {
        // A forwarded write is applied once, however often its frame
        // arrives (a retransmission, a duplicating network): a second
        // coordination would mint a second version of one client write, a
        // sibling nobody wrote. The copy is dropped without an answer; the
        // forwarding node takes the first answer only.
        if !self.forwards_seen.contains_key(&from)
            && self.forwards_seen.len() >= MAX_FORWARD_SENDERS
        {
            self.forwards_seen.pop_first();
        }
        if !self
            .forwards_seen
            .entry(from)
            .or_default()
            .first_time(request)
        {
            self.stats.forwards_repeated += 1;
            tracing::debug!(%from, request, "dropped a forwarded write delivered again");
            return;
        }
        let origin = Origin::Forward {
            node: from,
            request,
            bucket: write.bucket.clone(),
            key: write.key.clone(),
        };
        if !self.ring_agreed() {
            return self.finish_origin(
                origin,
                Err(ForwardError::Unavailable(
                    "no ring, or the members do not agree on it yet".into(),
                )),
            );
        }
        let awaited = self.awaited_requests();
        if awaited >= self.config.max_pending_requests {
            let busy = format!("{awaited} client requests in flight, the most this node takes");
            return self.finish_origin(origin, Err(ForwardError::Unavailable(busy)));
        }
        if check_key("bucket", &write.bucket, MAX_BUCKET_LEN).is_err()
            || check_key("key", &write.key, MAX_KEY_LEN).is_err()
            || write
                .value
                .as_ref()
                .is_some_and(|v| v.len() > self.config.max_value_bytes)
            || write
                .content_type
                .as_deref()
                .is_some_and(|t| write.value.is_none() || check_content_type(t).is_err())
        {
            return self.finish_origin(
                origin,
                Err(ForwardError::Internal(
                    "forwarded write out of bounds".into(),
                )),
            );
        }
        let context = match write.context.as_deref().map(CausalContext::from_bytes) {
            None => CausalContext::default(),
            Some(Ok(context)) => context,
            Some(Err(e)) => {
                return self.finish_origin(origin, Err(ForwardError::Internal(e.to_string())))
            }
        };
        let (partition, list) = self.preference_list(&write.bucket, &write.key);
        let n = list.n();
        if write.w == 0 || write.w > n || write.pw > write.w || write.timeout_ms == 0 {
            return self.finish_origin(
                origin,
                Err(ForwardError::Internal(
                    "forwarded write with invalid options".into(),
                )),
            );
        }
        let options = ResolvedOptions {
            n,
            r: 1,
            w: write.w,
            pr: 0,
            pw: write.pw,
            timeout_ms: write.timeout_ms.min(crate::core::options::MAX_TIMEOUT_MS),
            sync: write.sync,
            sloppy: write.sloppy,
        };
        let targets = place(&list, &self.up_set(&list), options.sloppy);
        if !targets.iter().any(|t| t.node == self.id) {
            return self.finish_origin(
                origin,
                Err(ForwardError::Unavailable(
                    "the replica a write was forwarded to is not a target in its own view of the cluster; retry"
                        .into(),
                )),
            );
        }
        let key = WireKey {
            partition: partition.0,
            bucket: write.bucket,
            key: write.key,
        };
        self.coordinate_put(
            now,
            origin,
            key,
            write.value,
            write.content_type,
            context,
            options,
            write.return_body,
            &list,
            targets,
        );
    }

    fn on_forward_reply(
        &mut self,
        from: Uuid,
        request: u64,
        bucket: &[u8],
        key: &[u8],
        result: Result<ForwardedReply, ForwardError>,
    ) {
        match self.pending.get(&request) {
            Some(Pending::Forwarded {
                to,
                bucket: b,
                key: k,
                ..
            }) if *to == from && b == bucket && k == key => {}
            _ => return,
        }
        let Some(Pending::Forwarded { client, .. }) = self.take_pending(request) else {
            unreachable!("checked above");
        };
        let result = match result {
            Ok(reply) => decode_forwarded(reply).map(ClientReply::Write),
            Err(error) => Err(forward_error(error)),
        };
        self.reply(client, result);
    }

    // ----- replica side -----

    fn on_store(
        &mut self,
        now: Now,
        key: &WireKey,
        object: &[u8],
        sync: bool,
        hint_for: Option<Uuid>,
    ) -> Result<(), ReplicaError> {
        let partition = self.checked_partition(key)?;
        let object = decode_object(object).map_err(|e| ReplicaError::Refused(e.to_string()))?;
        if let Some(timestamp) = object.latest_timestamp() {
            self.hlc
                .observe(timestamp, now.wall_ms)
                .map_err(|e| ReplicaError::Refused(e.to_string()))?;
            self.persist_clock()
                .map_err(|e| ReplicaError::Storage(e.to_string()))?;
        }
        let durability = Durability::from_sync(sync);
        let keyref = KeyRef::new(partition, &key.bucket, &key.key);
        let changed = self
            .store
            .merge(keyref, &object, durability)
            .map_err(|e| ReplicaError::Storage(e.to_string()))?;
        self.mark_holds_data();
        if let Some(primary) = hint_for.filter(|&p| p != self.id) {
            if let Err(e) = self.store.add_hint(primary, keyref, &object, durability) {
                self.stats.hints_dropped += 1;
                return Err(ReplicaError::Storage(e.to_string()));
            }
        } else if sync && !changed {
            // The replica already had every version (perhaps from a read
            // repair written without sync): a durable acknowledgement still
            // means the state holding them is on disk.
            self.store
                .sync()
                .map_err(|e| ReplicaError::Storage(e.to_string()))?;
        }
        Ok(())
    }

    fn read_local(&mut self, key: &WireKey) -> Result<Object, ReplicaError> {
        let partition = self.checked_partition(key)?;
        match self
            .store
            .get(KeyRef::new(partition, &key.bucket, &key.key))
        {
            Ok(object) => Ok(object.unwrap_or_default()),
            Err(e) => Err(ReplicaError::Storage(e.to_string())),
        }
    }

    fn checked_partition(&self, key: &WireKey) -> Result<PartitionId, ReplicaError> {
        if key.bucket.len() > MAX_BUCKET_LEN || key.key.len() > MAX_KEY_LEN {
            return Err(ReplicaError::Refused("bucket or key too long".into()));
        }
        let partition = self.partitions.of_key(&key.bucket, &key.key);
        if partition.0 != key.partition {
            return Err(ReplicaError::Refused(format!(
                "key belongs to partition {}, not {}",
                partition.0, key.partition
            )));
        }
        Ok(partition)
    }

    // ----- replies from replicas -----

    /// Whether a read reply from `from` answers a get in flight: the
    /// request id is one of this incarnation's gets and names the same key.
    fn awaits_read(&self, from: Uuid, request: u64, key: &WireKey) -> bool {
        let awaited = matches!(
            self.pending.get(&request),
            Some(Pending::Get { key: k, .. }) if k == key
        );
        if !awaited {
            tracing::debug!(%from, request, "a read reply that answers no get in flight");
        }
        awaited
    }

    fn on_read_reply(
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

    fn on_stored(
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

    /// Answers the client when a request's outcome is first decided, and
    /// retires the request once every target answered.
    fn settle(&mut self, request: u64) {
        let Some(pending) = self.pending.get_mut(&request) else {
            return;
        };
        let mut reply = None;
        let mut delete_after = None;
        let mut answered_now = false;
        let done = match pending {
            Pending::Get {
                client,
                coordinator,
                targets,
                replies,
                answered,
                then_delete,
                ..
            } => {
                if !*answered {
                    if let Some(outcome) = coordinator.outcome() {
                        *answered = true;
                        answered_now = true;
                        match (outcome, then_delete.take()) {
                            (Ok(object), Some(delete)) if !object.is_deleted() => {
                                let context = object.context().clone();
                                delete_after = Some((*client, delete, context));
                            }
                            (Ok(object), Some(_)) => {
                                let result = Ok(ClientReply::Write(WriteReply::NothingToDelete {
                                    object: object.clone(),
                                }));
                                reply = Some((Origin::Client(*client), result));
                            }
                            (Ok(object), None) => {
                                let result = Ok(ClientReply::Read(ReadReply {
                                    object: object.clone(),
                                }));
                                reply = Some((Origin::Client(*client), result));
                            }
                            (Err(e), _) => {
                                reply = Some((Origin::Client(*client), Err(RequestError::Get(e))));
                            }
                        }
                    }
                }
                *replies >= *targets
            }
            Pending::Put {
                origin,
                coordinator,
                reply: write_reply,
                targets,
                answers,
                answered,
                ..
            } => {
                if !*answered {
                    if let Some(outcome) = coordinator.outcome() {
                        *answered = true;
                        answered_now = true;
                        let result = match outcome {
                            Ok(_) => Ok(ClientReply::Write(write_reply.clone())),
                            Err(e) => Err(RequestError::Put(e)),
                        };
                        reply = Some((origin.clone(), result));
                    }
                }
                *answers >= *targets
            }
            _ => false,
        };
        if let Some(bytes) = pending.background_bytes().filter(|_| answered_now) {
            self.background.requests += 1;
            self.background.bytes += bytes;
        }
        if let Some((origin, result)) = reply {
            self.answer(origin, result);
        }
        if let Some((client, mut delete, context)) = delete_after {
            delete.context = Some(context);
            let now = self.now;
            self.start_put(now, client, delete);
        }
        if done {
            self.retire(request);
        }
    }

    /// A request's time ran out.
    fn expire(&mut self, request: u64) {
        match self.pending.get_mut(&request) {
            Some(Pending::Get { coordinator, .. }) => coordinator.timeout(),
            Some(Pending::Put { coordinator, .. }) => coordinator.timeout(),
            Some(Pending::Forwarded { .. }) => {
                let Some(Pending::Forwarded {
                    client, to, w, pw, ..
                }) = self.take_pending(request)
                else {
                    unreachable!("matched above");
                };
                tracing::debug!(%to, "forwarded write timed out");
                let tally = QuorumTally {
                    required: w,
                    required_primaries: pw,
                    received: 0,
                    received_primaries: 0,
                    failures: vec![],
                };
                // The coordinating replica may have applied the write.
                return self.reply(
                    client,
                    Err(RequestError::Put(PutError::Indeterminate {
                        tally,
                        applied: 0,
                    })),
                );
            }
            Some(Pending::Hint { target, .. }) => {
                let target = *target;
                self.take_pending(request);
                self.finish_hint_target(target);
                return;
            }
            Some(Pending::RingFetch) => {
                self.take_pending(request);
                self.ring_fetch_in_flight = false;
                return;
            }
            None => return,
        }
        self.settle(request);
        self.retire(request);
    }

    /// Removes a finished get or put; a get repairs the stale replicas, a
    /// put keeps hints for the targets that did not answer in time.
    fn retire(&mut self, request: u64) {
        let Some(pending) = self.take_pending(request) else {
            return;
        };
        if let Pending::Put {
            key,
            object,
            sync,
            coordinator,
            ..
        } = &pending
        {
            self.hint_unanswered(key, object, *sync, coordinator);
            return;
        }
        if let Pending::Get {
            key, coordinator, ..
        } = pending
        {
            let repairs = coordinator.repairs();
            if repairs.is_empty() {
                return;
            }
            if self.background.bytes >= self.config.max_background_bytes
                || self.buggify.fires(Site::ReadRepairSkipped)
            {
                // Read repair is opportunistic; a later read or a hint
                // brings the replica up to date.
                self.stats.read_repairs_skipped += repairs.len() as u64;
                return;
            }
            let merged = coordinator.merged();
            let encoded = merged.encode();
            for replica in repairs {
                self.stats.read_repairs += 1;
                if replica.node == self.id {
                    let partition = PartitionId(key.partition);
                    let keyref = KeyRef::new(partition, &key.bucket, &key.key);
                    if let Err(e) = self.store.merge(keyref, merged, Durability::Buffered) {
                        tracing::warn!(error = %e, "local read repair failed");
                    }
                } else {
                    self.send(
                        replica.node,
                        Message::Store {
                            request: 0,
                            key: key.clone(),
                            object: encoded.clone(),
                            sync: false,
                            hint_for: replica.hint(),
                        },
                    );
                }
            }
        }
    }

    fn answer(&mut self, origin: Origin, result: Result<ClientReply, RequestError>) {
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
    fn finish_origin(&mut self, origin: Origin, result: Result<ForwardedReply, ForwardError>) {
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

    // ----- hinted handoff -----

    fn deliver_hints(&mut self, now: Now) {
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

    fn finish_hint_target(&mut self, target: Uuid) {
        let still = self
            .pending
            .values()
            .any(|p| matches!(p, Pending::Hint { target: t, .. } if *t == target));
        if !still {
            self.hint_targets_in_flight.remove(&target);
        }
    }

    // ----- membership and ring -----

    fn drain_gossip(&mut self, now: Now) {
        while let Some(effect) = self.gossip.poll_effect() {
            match effect {
                GossipEffect::Send { to, envelope } => {
                    if self.buggify.fires(Site::GossipFrameDropped) {
                        continue;
                    }
                    let addr = match to {
                        GossipTarget::Seed(addr) => Some(addr),
                        GossipTarget::Node(node) => match self.reply_route {
                            Some((sender, source)) if sender == node => Some(source),
                            _ => self.address_of(node),
                        },
                    };
                    let Some(addr) = addr else { continue };
                    match envelope.encode(self.gossip.config().max_message_bytes) {
                        Ok(bytes) => {
                            let frame =
                                Frame::new(self.id, self.generation, Message::Gossip(bytes));
                            self.effects.push_back(Effect::Send {
                                addr,
                                payload: frame.encode(),
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "gossip message not sent"),
                    }
                }
                GossipEffect::Notify(notification) => self.on_notification(now, notification),
            }
        }
        self.check_directory_generation();
    }

    /// A peer held a run of this node (a generation) that its data
    /// directory never recorded: the directory was restored or copied from
    /// an older state and may lack versions this node minted or
    /// acknowledged in that run, so a new epoch begins (once).
    fn check_directory_generation(&mut self) {
        let Some(held) = self.gossip.older_self_held() else {
            return;
        };
        if held.0 <= self.directory_generation {
            return;
        }
        let held = held.0;
        // Checked once per directory generation.
        self.directory_generation = held;
        if let Err(e) = self.begin_epoch(&format!(
            "peers held generation {held} of this node, a run its data directory does not know: it was restored or copied"
        )) {
            tracing::error!(error = %e, "could not begin a new epoch");
        }
    }

    fn on_notification(&mut self, now: Now, notification: Notification) {
        match notification {
            Notification::Up { node } => {
                tracing::info!(%node, "node up");
                // Offer hints at once rather than at the next round.
                self.next_hint_round = self.next_hint_round.min(now.mono);
            }
            Notification::Down { node, phi } => tracing::warn!(%node, phi, "node down"),
            Notification::Joined { node, generation } => {
                tracing::info!(%node, generation = generation.0, "node joined");
                self.learn_generation(node, generation.0);
            }
            Notification::Restarted { node, old, new } => {
                tracing::info!(%node, old = old.0, new = new.0, "node restarted");
                // Gossip already holds the new generation: compare with what
                // this node knew before, so the connection is reset once.
                let known = self.peer_generations.get(&node).copied().unwrap_or(old.0);
                if new.0 > known {
                    self.peer_generations.insert(node, new.0);
                    self.reset_connection(node);
                }
            }
            Notification::Left { node, .. } => {
                tracing::info!(%node, "node left");
                // It is no longer up: nothing waits for it to come back.
                self.next_hint_round = self.next_hint_round.min(now.mono);
            }
            Notification::Superseded {
                generation,
                published,
            } => self.on_superseded(generation.0, &published),
            Notification::Forgotten { node } => tracing::debug!(%node, "node forgotten"),
            Notification::StateChanged { node, key, .. } => {
                if key == StateKey::Ring {
                    self.next_ring_check = self.next_ring_check.min(now.mono);
                }
                tracing::trace!(%node, ?key, "state changed");
            }
        }
    }

    fn address_of(&self, node: Uuid) -> Option<SocketAddr> {
        self.gossip
            .member(&node)
            .and_then(|m| m.state.quic_addr())
            .or_else(|| self.sources.get(&node).copied())
    }

    /// Remembers where a node's frames come from, for nodes gossip does not
    /// know yet. Bounded: the oldest-inserted entry goes first.
    fn remember_source(&mut self, node: Uuid, source: SocketAddr) {
        if self.gossip.member(&node).is_some() {
            self.sources.remove(&node);
            return;
        }
        if !self.sources.contains_key(&node) && self.sources.len() >= MAX_SOURCES {
            if let Some(&oldest) = self.sources.keys().next() {
                self.sources.remove(&oldest);
            }
        }
        self.sources.insert(node, source);
    }

    fn ring_claim_of(&self, node: Uuid) -> Option<RingClaim> {
        if node == self.id {
            return self.ring.as_ref().map(|r| RingClaim {
                version: r.version(),
                hash: r.hash().0,
            });
        }
        self.gossip.member(&node).and_then(|m| m.state.ring())
    }

    /// Fetches a newer ring when a peer holds one, and, as the claimant,
    /// builds the next ring when the member set changed.
    fn check_ring(&mut self, now: Now) {
        let mine = self.ring_claim_of(self.id);
        // The best ring any live member holds.
        let mut best: Option<(RingClaim, Uuid)> = None;
        for member in self.gossip.members() {
            if member.id == self.id || member.left || member.liveness != Liveness::Up {
                continue;
            }
            if let Some(claim) = member.state.ring() {
                if Some(claim) != self.refused_ring && best.is_none_or(|(b, _)| better(claim, b)) {
                    best = Some((claim, member.id));
                }
            }
        }
        if let Some((claim, holder)) = best {
            if mine.is_none_or(|m| better(claim, m)) {
                if !self.ring_fetch_in_flight {
                    self.ring_fetch_in_flight = true;
                    let request = self.new_request();
                    self.pending.insert(request, Pending::RingFetch);
                    self.set_deadline(now, request, RETRY_AFTER);
                    self.send(
                        holder,
                        Message::RingFetch {
                            version: claim.version,
                        },
                    );
                }
                return;
            }
        }
        // The node that built the ring it holds goes back should a member
        // refuse it, whoever is claimant now.
        if self.revert_refused_change() {
            return;
        }
        if self.previous_ring.is_some() && self.every_member_holds_my_ring() {
            // Every member took the change, down or not: nothing to go back to.
            self.previous_ring = None;
        }
        // Claimant: lowest id among this node and the live members holding
        // the newest ring version (or, before any ring, all live members).
        let newest = mine.map(|c| c.version).unwrap_or(0);
        let claimant = self
            .gossip
            .members()
            .filter(|m| m.id != self.id && !m.left && m.liveness == Liveness::Up)
            .filter(|m| m.state.ring().map(|c| c.version).unwrap_or(0) == newest)
            .map(|m| m.id)
            .chain(std::iter::once(self.id))
            .min()
            .expect("the chain holds this node");
        if claimant != self.id {
            return;
        }
        let candidates = self.candidate_members();
        match &self.ring {
            None => {
                if candidates.len() < self.config.initial_members {
                    return;
                }
                match Ring::initial(&candidates, self.config.partitions, self.config.replicas) {
                    Ok(ring) => {
                        tracing::info!(members = candidates.len(), "built the first ring");
                        self.install_ring(ring, true);
                    }
                    Err(e) => tracing::warn!(error = %e, "could not build the first ring"),
                }
            }
            Some(ring) => {
                let wanted = self.wanted_members(ring, &candidates);
                if wanted == ring.members() {
                    return;
                }
                if self.cluster_holds_data() {
                    let wanted_ids: BTreeSet<Uuid> = wanted.iter().map(|m| m.id).collect();
                    let ring_ids: BTreeSet<Uuid> = ring.members().iter().map(|m| m.id).collect();
                    let changed: BTreeSet<Uuid> = wanted_ids
                        .symmetric_difference(&ring_ids)
                        .copied()
                        .collect();
                    if changed != self.deferred {
                        tracing::warn!(
                            nodes = ?changed,
                            "ring change deferred: the cluster holds data and partition handoff is not available"
                        );
                        self.deferred = changed;
                    }
                    return;
                }
                match ring.rebalance(&wanted) {
                    Ok(next) => {
                        tracing::info!(version = next.version(), "built the next ring");
                        self.previous_ring = Some(ring.clone());
                        self.install_ring(next, true);
                    }
                    Err(e) => tracing::warn!(error = %e, "could not build the next ring"),
                }
            }
        }
    }

    /// Members that may own partitions: this node and the live, not-leaving
    /// members in gossip, with their zones.
    fn candidate_members(&self) -> Vec<Member> {
        let mut members = vec![Member::new(
            self.id,
            self.config.zone.clone(),
            self.config.weight,
        )];
        for member in self.gossip.members() {
            if member.id == self.id || member.left || member.liveness != Liveness::Up {
                continue;
            }
            match member.state.status() {
                Some(Status::Joining | Status::Up) => {}
                _ => continue,
            }
            let zone = member.state.zone().unwrap_or_default().to_string();
            members.push(Member::new(member.id, zone, self.config.weight));
        }
        members.sort_by_key(|m| m.id);
        members
    }

    /// The next ring's members: the current ones that did not leave (down
    /// members stay: removal is an operator's decision) plus the live
    /// candidates.
    fn wanted_members(&self, ring: &Ring, candidates: &[Member]) -> Vec<Member> {
        let mut wanted: BTreeMap<Uuid, Member> = BTreeMap::new();
        for member in ring.members() {
            let left = self
                .gossip
                .member(&member.id)
                .is_some_and(|m| m.left || m.state.status() == Some(Status::Left));
            if !left {
                wanted.insert(member.id, member.clone());
            }
        }
        for candidate in candidates {
            wanted
                .entry(candidate.id)
                .or_insert_with(|| candidate.clone());
        }
        wanted.into_values().collect()
    }

    fn cluster_holds_data(&self) -> bool {
        self.holds_data
            || self.gossip.members().any(|m| {
                m.state
                    .get(&StateKey::Extra(HOLDS_DATA_EXTRA.into()))
                    .is_some()
            })
    }

    /// As the node that built the ring it holds: when a live member
    /// refused that ring because it would have moved data away, goes back
    /// to the placement it replaced, under a newer version. Nobody served
    /// requests under the refused ring (members did not agree on it), so
    /// going back moves no data either. Returns whether it did.
    fn revert_refused_change(&mut self) -> bool {
        let (Some(previous), Some(mine)) = (&self.previous_ring, self.ring_claim_of(self.id))
        else {
            return false;
        };
        let refused = refusal_text(mine);
        let refusers: Vec<Uuid> = self
            .gossip
            .members()
            .filter(|m| m.id != self.id && !m.left && m.liveness == Liveness::Up)
            .filter(|m| {
                matches!(
                    m.state.get(&StateKey::Extra(RING_REFUSED_EXTRA.into())),
                    Some(v) if v.value == StateValue::Text(refused.clone())
                )
            })
            .map(|m| m.id)
            .collect();
        if refusers.is_empty() {
            return false;
        }
        let back = previous.reissue(mine.version + 1);
        tracing::warn!(
            nodes = ?refusers,
            refused = mine.version,
            version = back.version(),
            "members refused the ring change because they hold data it would move away; going back to the previous placement"
        );
        self.previous_ring = None;
        self.install_ring(back, true);
        true
    }

    /// Whether every member of the ring this node holds publishes it too,
    /// whatever this node thinks of their liveness.
    fn every_member_holds_my_ring(&self) -> bool {
        let (Some(ring), Some(mine)) = (&self.ring, self.ring_claim_of(self.id)) else {
            return false;
        };
        ring.members().iter().all(|member| {
            member.id == self.id
                || self
                    .gossip
                    .member(&member.id)
                    .is_some_and(|m| m.state.ring() == Some(mine))
        })
    }

    /// The first partition this node holds data for that `next` would take
    /// away from it, if any. Until partition handoff exists such a ring is
    /// refused: adopting it would strand acknowledged writes.
    fn data_moved_away(&self, next: &Ring) -> Option<PartitionId> {
        let current = self.ring.as_ref()?;
        current
            .partitions_of(self.id)
            .filter(|&p| !next.primaries(p).contains(&self.id))
            .find(|&p| match self.store.scan_partition(p, None, 1) {
                Ok(entries) => !entries.is_empty(),
                // Unknown counts as holding data: refusing is the safe side.
                Err(_) => true,
            })
    }

    /// Adopts a fetched ring if it is newer than the one held and moves no
    /// partition away from data this node holds.
    fn offer_ring(&mut self, ring: Ring) {
        if ring.partitions().count() != self.config.partitions
            || ring.replicas() != self.config.replicas
        {
            tracing::warn!(
                partitions = ring.partitions().count(),
                replicas = ring.replicas(),
                "refused a ring with another shape than this node's configuration"
            );
            return;
        }
        let claim = RingClaim {
            version: ring.version(),
            hash: ring.hash().0,
        };
        if !self
            .ring_claim_of(self.id)
            .is_none_or(|mine| better(claim, mine))
        {
            return;
        }
        if let Some(partition) = self.data_moved_away(&ring) {
            if self.refused_ring != Some(claim) {
                tracing::warn!(
                    version = claim.version,
                    partition = partition.0,
                    "refused a ring that moves away a partition this node holds data for (no partition handoff yet)"
                );
                self.refused_ring = Some(claim);
                if let Err(e) = self.gossip.set_state(
                    StateKey::Extra(RING_REFUSED_EXTRA.into()),
                    StateValue::Text(refusal_text(claim)),
                ) {
                    tracing::warn!(error = %e, "could not publish the refusal");
                }
            }
            return;
        }
        self.install_ring(ring, true);
    }

    fn install_ring(&mut self, ring: Ring, persist: bool) {
        if persist {
            let bytes = rmp_serde::to_vec(&ring).expect("a ring always encodes");
            if let Err(e) = self.store.put_meta(RING_META, &bytes) {
                tracing::error!(error = %e, "could not persist the ring; not adopting it");
                return;
            }
        }
        let claim = RingClaim {
            version: ring.version(),
            hash: ring.hash().0,
        };
        let member = ring.member(self.id).is_some();
        tracing::info!(version = claim.version, hash = %format!("{:016x}", claim.hash), member, "holding ring");
        self.ring = Some(ring);
        if let Err(e) = self
            .gossip
            .set_state(StateKey::Ring, StateValue::Ring(claim))
        {
            tracing::warn!(error = %e, "could not publish the ring claim");
        }
        if member {
            self.gossip.set_status(Status::Up);
        }
    }

    fn mark_holds_data(&mut self) {
        if self.holds_data {
            return;
        }
        if let Err(e) = self.store.put_meta(HOLDS_DATA_META, b"1") {
            tracing::warn!(error = %e, "could not persist the holds-data flag");
        }
        self.holds_data = true;
        if let Err(e) = self.gossip.set_state(
            StateKey::Extra(HOLDS_DATA_EXTRA.into()),
            StateValue::Text("1".into()),
        ) {
            tracing::warn!(error = %e, "could not publish the holds-data flag");
        }
    }

    // ----- helpers -----

    fn actor(&mut self, partition: PartitionId) -> Result<ActorId, StoreError> {
        if !self.epoch_safe && !self.gossip.is_self_confirmed() {
            // No peer has yet said whether a newer incarnation of this node
            // exists (a restored data directory): mint under new actors.
            self.begin_epoch("a write arrived before any peer confirmed this node's generation")?;
        }
        if let Some(actor) = self.store.partition_actor(partition)? {
            return Ok(actor);
        }
        let candidate = ActorId(self.rng.random());
        self.store.ensure_partition_actor(partition, candidate)
    }

    /// Begins a new epoch: every partition draws a new actor before its next
    /// dot, so nothing this node minted before can be minted again.
    fn begin_epoch(&mut self, why: &str) -> Result<(), StoreError> {
        if self.config.unsafe_controls.keep_actors_after_unclean_stop {
            self.epoch_safe = true;
            return Ok(());
        }
        tracing::warn!(
            generation = self.generation,
            why,
            "beginning a new epoch (new actor ids for every partition)"
        );
        self.store.clear_partition_actors()?;
        self.epoch_safe = true;
        Ok(())
    }

    /// A peer holds a newer incarnation of this node. Either this data
    /// directory is older than what the cluster has seen (restored, put
    /// back): run on at a generation above it, in a new epoch. Or another
    /// live process shares this id, which shows as an incarnation at another
    /// address that keeps superseding this one: the process that started
    /// later stops, the other runs on above it.
    fn on_superseded(&mut self, generation: u64, published: &[(StateKey, StateValue)]) {
        if self.conflict.is_some() || generation < self.generation {
            return;
        }
        let Some(addr) = published.iter().find_map(|(k, v)| match (k, v) {
            (StateKey::QuicAddr, StateValue::Addr(addr)) => Some(*addr),
            _ => None,
        }) else {
            // Not enough to tell; the full state follows.
            return;
        };
        let started = published.iter().find_map(|(k, v)| match (k, v) {
            (StateKey::Extra(name), StateValue::Text(ms)) if name == STARTED_EXTRA => {
                ms.parse::<u64>().ok()
            }
            _ => None,
        });
        let own_addr = self.gossip.local_state().quic_addr();
        if Some(addr) != own_addr {
            // Two processes cannot listen on one address: this is another
            // one, alive or not. One that started earlier and supersedes
            // this node again after it moved above it is alive, and this
            // node is the copy.
            let other = (started.unwrap_or(0), addr);
            let started_first =
                started.is_some() && other < (self.started_ms, own_addr.unwrap_or(addr));
            if started_first && self.superseded_by == Some(other) {
                let conflict = IdentityConflict {
                    id: self.id,
                    addr,
                    generation,
                };
                tracing::error!(error = %conflict, "stopping: two live processes share one node id");
                self.conflict = Some(conflict);
                return;
            }
            self.superseded_by = Some(other);
        }
        tracing::warn!(
            held = generation,
            own = self.generation,
            %addr,
            "peers hold a newer incarnation of this node (its data directory was restored or copied); running on above it"
        );
        let next = match self.store.raise_generation(generation.saturating_add(1)) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "could not persist a higher generation");
                return;
            }
        };
        if let Err(e) =
            self.begin_epoch("the data directory is older than what peers hold of this node")
        {
            tracing::error!(error = %e, "could not begin a new epoch");
            return;
        }
        if let Err(e) = self.store.put_meta(RUNNING_META, &next.to_be_bytes()) {
            tracing::warn!(error = %e, "could not update the running marker");
        }
        self.generation = next;
        self.gossip.restart_at(chorus_gossip::Generation(next));
    }

    /// Persists the clock's pending ceiling, if any. On failure the ceiling
    /// stays pending (the next call tries again) and the caller must not
    /// use the timestamp it just drew.
    fn persist_clock(&mut self) -> Result<(), StoreError> {
        if let Some(ceiling) = self.hlc.ceiling_to_persist() {
            let stored = self.store.raise_hlc_ceiling(ceiling)?;
            self.hlc.ceiling_persisted(stored);
        }
        Ok(())
    }

    /// Passes a replica's read reply through the clock. An object stamped
    /// beyond the drift bound, or whose context counts beyond the bound
    /// [`coordinate_write`] checks contexts against, is refused: it is
    /// neither merged into the answer nor repaired into other replicas. So
    /// every context this node hands out stays within that bound, which
    /// only grows with the clock, and a write through this node with it is
    /// never refused as coming from the future.
    fn observe(&mut self, now: Now, from: Uuid, object: Object) -> Result<Object, ReplicaError> {
        let base = Timestamp::new(now.wall_ms.min(Timestamp::MAX_WALL_MS), 0).max(self.hlc.last());
        let bound = context_bound(base, self.config.hlc.max_drift);
        let counter = object.context().max_counter();
        let refused = if counter > bound.as_u64() {
            Some(format!(
                "its context counts {} beyond this node's bound {bound}",
                Timestamp::from_u64(counter)
            ))
        } else {
            match object
                .latest_timestamp()
                .map(|t| self.hlc.observe(t, now.wall_ms))
            {
                Some(Err(e)) => Some(e.to_string()),
                Some(Ok(_)) => {
                    if let Err(e) = self.persist_clock() {
                        tracing::warn!(error = %e, "could not persist the clock ceiling");
                    }
                    None
                }
                None => None,
            }
        };
        match refused {
            None => Ok(object),
            Some(reason) => {
                self.stats.replies_from_the_future += 1;
                tracing::warn!(%from, %reason, "refused a read reply from a replica whose clock is ahead");
                Err(ReplicaError::Refused(format!("clock ahead: {reason}")))
            }
        }
    }

    fn new_request(&mut self) -> u64 {
        let request = self.next_request;
        // The counter wraps within the low 32 bits, never into the
        // generation's, and skips 0 (a message that wants no answer).
        let counter = (request as u32).wrapping_add(1).max(1);
        self.next_request = (request & !u64::from(u32::MAX)) | u64::from(counter);
        request
    }

    /// Records the generation a frame from `node` carries. Returns false
    /// when it is older than the newest this node knows for `node` (from
    /// its frames or from gossip): the frame comes from a previous
    /// incarnation. A newer generation than a known one means `node`
    /// restarted, and the connection to it is reset.
    fn learn_generation(&mut self, node: Uuid, generation: u64) -> bool {
        let gossiped = self.gossip.member(&node).map(|m| m.state.generation().0);
        let seen = self.peer_generations.get(&node).copied();
        if let Some(known) = seen.max(gossiped) {
            if generation < known {
                return false;
            }
            if generation == known && seen == Some(known) {
                return true;
            }
            if generation > known {
                self.reset_connection(node);
            }
        }
        if !self.peer_generations.contains_key(&node)
            && self.peer_generations.len() >= MAX_PEER_GENERATIONS
        {
            if let Some(&oldest) = self.peer_generations.keys().next() {
                self.peer_generations.remove(&oldest);
            }
        }
        self.peer_generations.insert(node, generation);
        true
    }

    /// Asks the runtime to drop its connection to `node`, which leads to a
    /// process that is gone, and replaces what this node was waiting for
    /// from the old incarnation at once ([`Engine::resend_to_restarted`]).
    fn reset_connection(&mut self, node: Uuid) {
        if let Some(addr) = self.address_of(node) {
            tracing::info!(%node, %addr, "peer restarted: resetting the connection to it");
            self.effects.push_back(Effect::ResetConnection { addr });
        }
        self.resend_to_restarted(node);
    }

    /// `node` restarted: what it had not answered yet will never be answered
    /// by the old process. Reads and replica writes in flight are sent again
    /// to the new incarnation under the same request id (its answer names
    /// the request and key, and comes from the generation now known), so
    /// they finish without waiting for their timeout. A hint delivery ends
    /// (it is offered again next round). A write forwarded to it for
    /// coordination may have been applied by the old process, so it is
    /// answered as indeterminate rather than coordinated twice.
    fn resend_to_restarted(&mut self, node: Uuid) {
        let waiting: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, pending)| match pending {
                Pending::Get { coordinator, .. } => {
                    coordinator.unanswered().iter().any(|t| t.node == node)
                }
                Pending::Put { coordinator, .. } => {
                    coordinator.unanswered().iter().any(|t| t.node == node)
                }
                Pending::Hint { target, .. } => *target == node,
                Pending::Forwarded { to, .. } => *to == node,
                Pending::RingFetch => false,
            })
            .map(|(&request, _)| request)
            .collect();
        for request in waiting {
            match self.pending.get(&request) {
                Some(Pending::Get { key, .. }) => {
                    let key = key.clone();
                    self.send(node, Message::Read { request, key });
                }
                Some(Pending::Put {
                    key,
                    object,
                    sync,
                    coordinator,
                    ..
                }) => {
                    let hint_for = coordinator
                        .unanswered()
                        .iter()
                        .find(|t| t.node == node)
                        .and_then(|t| t.hint());
                    let message = Message::Store {
                        request,
                        key: key.clone(),
                        object: object.encode(),
                        sync: *sync,
                        hint_for,
                    };
                    self.send(node, message);
                }
                Some(Pending::Hint { .. }) => {
                    self.take_pending(request);
                    self.finish_hint_target(node);
                }
                Some(Pending::Forwarded { .. }) => {
                    let Some(Pending::Forwarded { client, w, pw, .. }) = self.take_pending(request)
                    else {
                        unreachable!("matched above");
                    };
                    let tally = QuorumTally {
                        required: w,
                        required_primaries: pw,
                        received: 0,
                        received_primaries: 0,
                        failures: vec![],
                    };
                    self.reply(
                        client,
                        Err(RequestError::Put(PutError::Indeterminate {
                            tally,
                            applied: 0,
                        })),
                    );
                }
                Some(Pending::RingFetch) | None => {}
            }
        }
    }

    /// Keeps a hint for every target of a retired put that never answered
    /// (for a fallback, for the primary it stood in for), as Cassandra does
    /// for replicas that time out: a replica that is slow or paused but not
    /// convicted by the failure detector still gets the write when it
    /// answers again. Hints are bounded per target by the store.
    fn hint_unanswered(
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

    /// Removes a finished request and its deadline.
    fn take_pending(&mut self, request: u64) -> Option<Pending> {
        if let Some(deadline) = self.deadline_of.remove(&request) {
            self.deadlines.remove(&(deadline, request));
        }
        let pending = self.pending.remove(&request)?;
        if let Some(bytes) = pending.background_bytes() {
            self.background.requests -= 1;
            self.background.bytes -= bytes;
        }
        Some(pending)
    }

    fn set_deadline(&mut self, now: Now, request: u64, after: Duration) {
        let after = if self.buggify.fires(Site::TimeoutEarly) {
            after.mul_f64(self.buggify.fraction())
        } else {
            after
        };
        let deadline = now.mono + after;
        if let Some(old) = self.deadline_of.insert(request, deadline) {
            self.deadlines.remove(&(old, request));
        }
        self.deadlines.insert((deadline, request));
    }

    fn send(&mut self, to: Uuid, message: Message) {
        let Some(addr) = self.address_of(to) else {
            tracing::debug!(%to, "no address for node; message dropped");
            return;
        };
        let frame = Frame::new(self.id, self.generation, message);
        self.effects.push_back(Effect::Send {
            addr,
            payload: frame.encode(),
        });
    }

    fn reply(&mut self, client: ClientId, result: Result<ClientReply, RequestError>) {
        self.effects.push_back(Effect::Reply { client, result });
    }
}

/// Whether ring claim `a` is preferred over `b`: a higher version, or the
/// same version with a smaller hash (two claimants that raced).
fn better(a: RingClaim, b: RingClaim) -> bool {
    (a.version, std::cmp::Reverse(a.hash)) > (b.version, std::cmp::Reverse(b.hash))
}

/// How a refused ring claim is written in gossip.
fn refusal_text(claim: RingClaim) -> String {
    format!("{}:{:016x}", claim.version, claim.hash)
}

/// The primaries that are neither targets nor stood in for by a fallback.
fn uncovered_primaries(list: &PreferenceList, targets: &[Replica]) -> Vec<Uuid> {
    list.primaries()
        .iter()
        .copied()
        .filter(|&p| !targets.iter().any(|t| t.node == p || t.hint() == Some(p)))
        .collect()
}

/// The first request id of an incarnation: the low 32 bits of its
/// generation in the high 32 bits of the id, so no id repeats across
/// restarts. Generations are wall-clock milliseconds at start (or one more
/// than the last), so two incarnations share those bits only when they
/// started a multiple of 2^32 ms (about 49.7 days) apart — far longer than
/// any reply lives.
fn first_request_id(generation: u64) -> u64 {
    ((generation & u64::from(u32::MAX)) << 32) | 1
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Joining => "joining",
        Status::Up => "up",
        Status::Leaving => "leaving",
        Status::Left => "left",
    }
}

fn check_key(what: &'static str, bytes: &[u8], max: usize) -> Result<(), RequestError> {
    if bytes.is_empty() {
        return Err(RequestError::InvalidKey {
            what,
            reason: "must not be empty".into(),
        });
    }
    if bytes.len() > max {
        return Err(RequestError::InvalidKey {
            what,
            reason: format!("{} bytes, at most {max}", bytes.len()),
        });
    }
    Ok(())
}

/// A forwarded write's answer as the client gets it.
fn decode_forwarded(reply: ForwardedReply) -> Result<WriteReply, RequestError> {
    let bad = |e: String| {
        RequestError::Internal(format!(
            "the coordinating replica returned a bad answer: {e}"
        ))
    };
    let context = CausalContext::from_bytes(&reply.context).map_err(|e| bad(e.to_string()))?;
    let object = match reply.object {
        Some(bytes) => Some(decode_object(&bytes).map_err(|e| bad(e.to_string()))?),
        None => None,
    };
    Ok(WriteReply::Written { context, object })
}

fn forward_error(error: ForwardError) -> RequestError {
    match error {
        ForwardError::Write(e) => RequestError::Write(e),
        ForwardError::Put(e) => RequestError::Put(e),
        ForwardError::Unavailable(e) => RequestError::Unavailable(e),
        ForwardError::Internal(e) => RequestError::Internal(e),
    }
}

#[cfg(test)]
mod tests {
    use chorus_storage::object::MAX_CONTENT_TYPE_BYTES;
    use chorus_storage::store::{MemoryStore, StoreConfig};

    use super::*;
    use crate::core::RequestOptions;

    const WALL: u64 = 1_767_225_600_000;

    fn now(ms: u64) -> Now {
        Now {
            mono: Duration::from_millis(ms),
            wall_ms: WALL + ms,
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn engine(replicas: usize, initial_members: usize) -> Engine<MemoryStore> {
        let config = EngineConfig {
            replicas,
            initial_members,
            partitions: 8,
            ..EngineConfig::default()
        };
        Engine::start(
            config,
            MemoryStore::default(),
            addr(7070),
            addr(8080),
            now(0),
            1,
        )
        .expect("starts")
    }

    fn drain(engine: &mut Engine<MemoryStore>) -> Vec<Effect> {
        std::iter::from_fn(|| engine.poll_effect()).collect()
    }

    fn put(value: &str) -> ClientRequest {
        ClientRequest::Put(WriteRequest {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            value: Some(value.as_bytes().to_vec()),
            content_type: None,
            context: None,
            options: RequestOptions::default(),
        })
    }

    fn replies(effects: &[Effect]) -> Vec<(ClientId, &Result<ClientReply, RequestError>)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Reply { client, result } => Some((*client, result)),
                Effect::Send { .. } | Effect::ResetConnection { .. } => None,
            })
            .collect()
    }

    #[test]
    fn requests_before_the_ring_exists_are_refused_as_unavailable() {
        // Three members are needed for the first ring; this node is alone.
        let mut engine = engine(3, 3);
        drain(&mut engine);
        engine.handle_client(now(10), 1, put("v"));
        let effects = drain(&mut engine);
        let replies = replies(&effects);
        assert_eq!(replies.len(), 1);
        assert!(matches!(replies[0], (1, Err(RequestError::Unavailable(_)))));
        assert!(!engine.is_ready());
    }

    #[test]
    fn a_lone_node_builds_its_ring_and_serves_put_then_get_without_sending_data() {
        let mut engine = engine(1, 1);
        assert!(
            engine.is_ready(),
            "the claimant built a one-node ring at start"
        );
        drain(&mut engine);
        engine.handle_client(now(10), 1, put("v1"));
        let effects = drain(&mut engine);
        assert!(
            effects.iter().all(|e| matches!(e, Effect::Reply { .. })),
            "no frames: {effects:?}"
        );
        let context = match replies(&effects)[..] {
            [(1, Ok(ClientReply::Write(reply)))] => reply.context(),
            ref other => panic!("expected a write reply, got {other:?}"),
        };
        assert_eq!(context.version_vector().len(), 1);
        engine.handle_client(
            now(20),
            2,
            ClientRequest::Get(ReadRequest {
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
                options: RequestOptions::default(),
            }),
        );
        let effects = drain(&mut engine);
        match replies(&effects)[..] {
            [(2, Ok(ClientReply::Read(reply)))] => {
                let values: Vec<_> = reply.object.live().map(|s| s.value.clone()).collect();
                assert_eq!(values, vec![Some(b"v1".to_vec())]);
            }
            ref other => panic!("expected a read reply, got {other:?}"),
        }
    }

    #[test]
    fn invalid_requests_are_refused_before_any_work() {
        let mut engine = engine(1, 1);
        drain(&mut engine);
        let mut request = put("v");
        if let ClientRequest::Put(write) = &mut request {
            write.options = RequestOptions::parse([("w", "2")]).expect("parses");
        }
        engine.handle_client(now(10), 1, request);
        let mut empty_key = put("v");
        if let ClientRequest::Put(write) = &mut empty_key {
            write.key.clear();
        }
        engine.handle_client(now(10), 2, empty_key);
        let effects = drain(&mut engine);
        let replies = replies(&effects);
        assert!(
            matches!(replies[0], (1, Err(RequestError::Options(_)))),
            "{replies:?}"
        );
        assert!(
            matches!(replies[1], (2, Err(RequestError::InvalidKey { .. }))),
            "{replies:?}"
        );
        assert!(engine
            .store()
            .get(KeyRef::new(PartitionId(0), b"b", b"k"))
            .is_ok());
        assert_eq!(engine.stats().pending_requests, 0);
    }

    #[test]
    fn a_stored_copy_for_another_primary_is_acknowledged_and_kept_as_a_hint() {
        let mut engine = engine(1, 1);
        drain(&mut engine);
        let partitions = Partitions::new(8).expect("valid");
        let partition = partitions.of_key(b"b", b"k");
        let mut object = Object::new();
        let dot = chorus_storage::version::Dot::new(ActorId(9), WALL);
        object
            .write(
                &chorus_storage::version::VersionVector::new(),
                dot,
                chorus_storage::hlc::Timestamp::new(WALL, 0),
                Some(b"x".to_vec()),
            )
            .expect("a fresh dot");
        let owner = Uuid::from_u128(42);
        let peer = Uuid::from_u128(7);
        let frame = Frame::new(
            peer,
            1,
            Message::Store {
                request: 5,
                key: WireKey {
                    partition: partition.0,
                    bucket: b"b".to_vec(),
                    key: b"k".to_vec(),
                },
                object: object.encode(),
                sync: true,
                hint_for: Some(owner),
            },
        );
        engine
            .handle_frame(now(10), addr(7071), &frame.encode())
            .expect("decodes");
        let effects = drain(&mut engine);
        // The acknowledgement goes back to where the frame came from.
        let sent: Vec<Frame> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send { addr: to, payload } if *to == addr(7071) => {
                    Frame::decode(payload, MAX_FRAME_BYTES).ok()
                }
                _ => None,
            })
            .collect();
        assert!(
            sent.iter().any(|f| matches!(
                f.message,
                Message::Stored {
                    request: 5,
                    result: Ok(StoredAck { durable: true }),
                    ..
                }
            )),
            "{sent:?}"
        );
        assert_eq!(engine.pending_hints().expect("memory"), vec![(owner, 1)]);
        let stored = engine
            .store()
            .get(KeyRef::new(partition, b"b", b"k"))
            .expect("readable")
            .expect("stored");
        assert_eq!(stored, object);
    }

    fn store_frame(partition: PartitionId, object: &Object, sync: bool) -> Vec<u8> {
        Frame::new(
            Uuid::from_u128(7),
            1,
            Message::Store {
                request: 5,
                key: WireKey {
                    partition: partition.0,
                    bucket: b"b".to_vec(),
                    key: b"k".to_vec(),
                },
                object: object.encode(),
                sync,
                hint_for: None,
            },
        )
        .encode()
    }

    fn acks(effects: &[Effect]) -> Vec<Result<StoredAck, ReplicaError>> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send { payload, .. } => match Frame::decode(payload, MAX_FRAME_BYTES) {
                    Ok(Frame {
                        message: Message::Stored { result, .. },
                        ..
                    }) => Some(result),
                    _ => None,
                },
                Effect::Reply { .. } | Effect::ResetConnection { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_durable_ack_of_a_version_already_held_unsynced_syncs_it_first() {
        let mut engine = engine(1, 1);
        // A client write takes a clock lease, so the store below is not
        // synced by persisting a new ceiling.
        let mut other = put("v");
        if let ClientRequest::Put(write) = &mut other {
            write.key = b"other".to_vec();
        }
        engine.handle_client(now(10), 1, other);
        drain(&mut engine);
        let partition = Partitions::new(8).expect("valid").of_key(b"b", b"k");
        let keyref = KeyRef::new(partition, b"b", b"k");
        let mut object = Object::new();
        object
            .write(
                &chorus_storage::version::VersionVector::new(),
                chorus_storage::version::Dot::new(ActorId(9), WALL + 20),
                chorus_storage::hlc::Timestamp::new(WALL + 20, 0),
                Some(b"x".to_vec()),
            )
            .expect("a fresh dot");
        // The replica already holds the version, unsynced (a read repair).
        assert!(engine
            .store()
            .merge(keyref, &object, Durability::Buffered)
            .expect("stored"));
        engine
            .handle_frame(now(30), addr(7071), &store_frame(partition, &object, true))
            .expect("decodes");
        let effects = drain(&mut engine);
        assert_eq!(acks(&effects), vec![Ok(StoredAck { durable: true })]);
        // The acknowledgement promised the version survives a machine crash.
        let store = engine.into_store().crash();
        assert_eq!(store.get(keyref).expect("readable"), Some(object));
    }

    #[test]
    fn a_failed_clock_persist_is_retried_before_the_next_dot() {
        let mut engine = engine(1, 1);
        engine.handle_client(now(10), 1, put("v1"));
        drain(&mut engine);
        // Past the lease: the next write needs a new ceiling, and the disk fails.
        engine.store().fail_writes(true);
        engine.handle_client(now(5_000), 2, put("v2"));
        let effects = drain(&mut engine);
        assert!(
            matches!(replies(&effects)[..], [(2, Err(RequestError::Internal(_)))]),
            "{effects:?}"
        );
        engine.store().fail_writes(false);
        engine.handle_client(now(5_001), 3, put("v3"));
        let effects = drain(&mut engine);
        assert!(
            matches!(replies(&effects)[..], [(3, Ok(ClientReply::Write(_)))]),
            "{effects:?}"
        );
        let partition = Partitions::new(8).expect("valid").of_key(b"b", b"k");
        let stored = engine
            .store()
            .get(KeyRef::new(partition, b"b", b"k"))
            .expect("readable")
            .expect("written");
        let newest = stored.latest_timestamp().expect("a version");
        let ceiling = engine
            .store()
            .hlc_ceiling()
            .expect("readable")
            .expect("set");
        assert!(
            newest < ceiling,
            "a dot at {newest} was minted past the durable ceiling {ceiling}"
        );
    }

    #[test]
    fn a_start_after_an_unclean_stop_draws_new_actors_and_a_clean_stop_keeps_them() {
        let mut engine = engine(1, 1);
        engine.handle_client(now(10), 1, put("v1"));
        drain(&mut engine);
        let partition = Partitions::new(8).expect("valid").of_key(b"b", b"k");
        let first = engine.store().partition_actor(partition).expect("readable");
        assert!(first.is_some());
        let config = EngineConfig {
            replicas: 1,
            initial_members: 1,
            partitions: 8,
            ..EngineConfig::default()
        };
        // A clean stop: the actor is kept.
        engine.stop().expect("stops");
        let store = engine.into_store().restart();
        let engine = Engine::start(config.clone(), store, addr(7070), addr(8080), now(20), 2)
            .expect("starts");
        assert_eq!(
            engine.store().partition_actor(partition).expect("readable"),
            first
        );
        // A crash (no clean stop): a new epoch, no actor until the next write.
        let store = engine.into_store().restart();
        let engine =
            Engine::start(config, store, addr(7070), addr(8080), now(30), 3).expect("starts");
        assert_eq!(
            engine.store().partition_actor(partition).expect("readable"),
            None
        );
    }

    #[test]
    fn malformed_frames_are_refused_and_counted() {
        let mut engine = engine(1, 1);
        drain(&mut engine);
        assert!(engine
            .handle_frame(now(10), addr(7071), b"\xff\x00garbage")
            .is_err());
        let mut wrong_partition = Frame::new(
            Uuid::from_u128(7),
            1,
            Message::Read {
                request: 3,
                key: WireKey {
                    partition: 999,
                    bucket: b"b".to_vec(),
                    key: b"k".to_vec(),
                },
            },
        )
        .encode();
        engine
            .handle_frame(now(10), addr(7071), &wrong_partition)
            .expect("a well-formed frame");
        let effects = drain(&mut engine);
        let refused = effects.iter().any(|e| match e {
            Effect::Send { payload, .. } => matches!(
                Frame::decode(payload, MAX_FRAME_BYTES).map(|f| f.message),
                Ok(Message::ReadReply {
                    request: 3,
                    result: Err(ReplicaError::Refused(_)),
                    ..
                })
            ),
            _ => false,
        });
        assert!(
            refused,
            "a read of a key under the wrong partition is refused"
        );
        assert_eq!(engine.stats().frames_refused, 1);
        wrong_partition.truncate(4);
        assert!(engine
            .handle_frame(now(11), addr(7071), &wrong_partition)
            .is_err());
        assert_eq!(engine.stats().frames_refused, 2);
    }

    /// A get in flight on `engine`, asking `peer` for `key`.
    fn pending_get(engine: &mut Engine<MemoryStore>, peer: Uuid, key: &WireKey) -> u64 {
        let request = engine.new_request();
        let coordinator = GetCoordinator::new(1, 1, 0, vec![Replica::primary(peer)]);
        engine.pending.insert(
            request,
            Pending::Get {
                client: 9,
                key: key.clone(),
                coordinator,
                targets: 1,
                replies: 0,
                answered: false,
                then_delete: None,
            },
        );
        request
    }

    fn wire_key(key: &str) -> WireKey {
        let partition = Partitions::new(8)
            .expect("valid")
            .of_key(b"b", key.as_bytes());
        WireKey {
            partition: partition.0,
            bucket: b"b".to_vec(),
            key: key.as_bytes().to_vec(),
        }
    }

    fn object_with(value: &str) -> Object {
        let mut object = Object::new();
        let dot = chorus_storage::version::Dot::new(ActorId(9), WALL);
        object
            .write(
                &chorus_storage::version::VersionVector::new(),
                dot,
                Timestamp::new(WALL, 0),
                Some(value.as_bytes().to_vec()),
            )
            .expect("a fresh dot");
        object
    }

    #[test]
    fn a_read_reply_naming_another_key_is_ignored() {
        let mut engine = engine(1, 1);
        drain(&mut engine);
        let peer = Uuid::from_u128(7);
        let asked = wire_key("asked");
        let request = pending_get(&mut engine, peer, &asked);
        let reply = |key: WireKey, value: &str| {
            Frame::new(
                peer,
                1,
                Message::ReadReply {
                    request,
                    key,
                    result: Ok(serde_bytes::ByteBuf::from(object_with(value).encode())),
                },
            )
            .encode()
        };
        // Step 1: the same request id, another key: not an answer.
        engine
            .handle_frame(now(10), addr(7071), &reply(wire_key("other"), "wrong"))
            .expect("decodes");
        assert_eq!(replies(&drain(&mut engine)), vec![]);
        // Step 2: the answer that names the key is taken.
        engine
            .handle_frame(now(11), addr(7071), &reply(asked, "right"))
            .expect("decodes");
        let effects = drain(&mut engine);
        match replies(&effects)[..] {
            [(9, Ok(ClientReply::Read(read)))] => {
                let values: Vec<_> = read.object.live().map(|s| s.value.clone()).collect();
                assert_eq!(values, vec![Some(b"right".to_vec())]);
            }
            ref other => panic!("expected the read's answer, got {other:?}"),
        }
    }

    #[test]
    fn a_message_from_an_older_generation_is_dropped() {
        let mut engine = engine(1, 1);
        drain(&mut engine);
        let peer = Uuid::from_u128(7);
        let store = |generation: u64, request: u64, key: &str| {
            Frame::new(
                peer,
                generation,
                Message::Store {
                    request,
                    key: wire_key(key),
                    object: object_with(key).encode(),
                    sync: false,
                    hint_for: None,
                },
            )
            .encode()
        };
        let acks = |effects: &[Effect]| -> Vec<u64> {
            effects
                .iter()
                .filter_map(|e| match e {
                    Effect::Send { payload, .. } => {
                        match Frame::decode(payload, MAX_FRAME_BYTES).ok()?.message {
                            Message::Stored { request, .. } => Some(request),
                            _ => None,
                        }
                    }
                    _ => None,
                })
                .collect()
        };
        // Step 1: generation 2 is the first this node hears of the peer.
        engine
            .handle_frame(now(10), addr(7071), &store(2, 5, "new"))
            .expect("decodes");
        assert_eq!(acks(&drain(&mut engine)), vec![5]);
        // Step 2: a delayed frame of generation 1 is dropped unanswered.
        engine
            .handle_frame(now(11), addr(7071), &store(1, 6, "old"))
            .expect("decodes");
        assert_eq!(drain(&mut engine), vec![]);
        assert_eq!(engine.stats().frames_stale, 1);
        let old = engine
            .store()
            .get(KeyRef::new(
                PartitionId(wire_key("old").partition),
                b"b",
                b"old",
            ))
            .expect("readable");
        assert_eq!(old, None, "nothing of the old incarnation was stored");
        // Step 3: generation 3 means the peer restarted: the connection to
        // it is reset before the answer goes out on a fresh one.
        engine
            .handle_frame(now(12), addr(7071), &store(3, 7, "newer"))
            .expect("decodes");
        let effects = drain(&mut engine);
        assert_eq!(
            effects.first(),
            Some(&Effect::ResetConnection { addr: addr(7071) })
        );
        assert_eq!(acks(&effects), vec![7]);
    }

    #[test]
    fn request_ids_never_repeat_across_incarnations() {
        let mut first = engine(1, 1);
        let first_start = first.generation();
        let a = first.new_request();
        let store = first.into_store().restart();
        let mut second = Engine::start(
            EngineConfig {
                replicas: 1,
                initial_members: 1,
                partitions: 8,
                ..EngineConfig::default()
            },
            store,
            addr(7070),
            addr(8080),
            now(0),
            1,
        )
        .expect("restarts");
        assert!(second.generation() > first_start);
        assert_eq!(first_generation(a), first_start & u64::from(u32::MAX));
        let b = second.new_request();
        assert_ne!(a, b);
        assert_eq!(
            first_generation(b),
            second.generation() & u64::from(u32::MAX)
        );
    }

    /// The generation a request id was issued in.
    fn first_generation(request: u64) -> u64 {
        request >> 32
    }

    /// `n` engines that know each other as seeds, at addresses 7070.., with
    /// N = n, exchanging frames instantly until each holds the ring and
    /// sees the others up. Returns them and the time reached.
    fn cluster(n: usize) -> (Vec<Engine<MemoryStore>>, u64) {
        cluster_with(n, n, StoreConfig::default())
    }

    /// [`cluster`] with `replicas` (N) and the stores' settings given.
    fn cluster_with(
        n: usize,
        replicas: usize,
        store: StoreConfig,
    ) -> (Vec<Engine<MemoryStore>>, u64) {
        let addrs: Vec<SocketAddr> = (0..n).map(|i| addr(7070 + i as u16)).collect();
        let mut engines: Vec<Engine<MemoryStore>> = (0..n)
            .map(|i| {
                let mut config = EngineConfig {
                    name: format!("node{i}"),
                    replicas,
                    initial_members: n,
                    partitions: 8,
                    ..EngineConfig::default()
                };
                config.gossip.seeds = addrs.iter().copied().filter(|&a| a != addrs[i]).collect();
                Engine::start(
                    config,
                    MemoryStore::new(store),
                    addrs[i],
                    addr(8080 + i as u16),
                    now(0),
                    i as u64 + 1,
                )
                .expect("starts")
            })
            .collect();
        let mut ms = 0;
        loop {
            let ids: Vec<Uuid> = engines.iter().map(Engine::id).collect();
            let formed = engines
                .iter()
                .all(|e| e.is_ready() && ids.iter().all(|&id| id == e.id() || e.is_up(id)));
            if formed {
                return (engines, ms);
            }
            assert!(ms < 60_000, "the cluster did not form");
            ms += 10;
            for engine in &mut engines {
                engine.handle_tick(now(ms));
            }
            deliver(&mut engines, &addrs, ms);
        }
    }

    /// Delivers every frame the engines emitted, at once, until none is left.
    fn deliver(engines: &mut [Engine<MemoryStore>], addrs: &[SocketAddr], ms: u64) {
        loop {
            let mut frames = Vec::new();
            for (i, engine) in engines.iter_mut().enumerate() {
                for effect in drain(engine) {
                    if let Effect::Send { addr: to, payload } = effect {
                        frames.push((addrs[i], to, payload));
                    }
                }
            }
            if frames.is_empty() {
                return;
            }
            for (from, to, payload) in frames {
                if let Some(j) = addrs.iter().position(|&a| a == to) {
                    let _ = engines[j].handle_frame(now(ms), from, &payload);
                }
            }
        }
    }

    /// The first frame among `effects` sent to `to`.
    fn payload_to(effects: &[Effect], to: SocketAddr) -> Option<Vec<u8>> {
        effects.iter().find_map(|e| match e {
            Effect::Send { addr, payload } if *addr == to => Some(payload.clone()),
            _ => None,
        })
    }

    fn options(pairs: &[(&str, &str)]) -> RequestOptions {
        RequestOptions::parse(pairs.iter().copied()).expect("valid options")
    }

    /// A fallback that coordinates a write counts its own copy toward `w`
    /// only if it could keep the hint that hands the copy to the primary it
    /// stands in for, as for a fallback that is not the coordinator.
    #[test]
    fn a_fallback_coordinator_without_its_hint_does_not_count_toward_w() {
        let store = StoreConfig {
            max_hints_per_target: 1,
        };
        let (mut engines, mut t) = cluster_with(4, 3, store);
        let addrs: Vec<SocketAddr> = (0..4).map(|i| addr(7070 + i as u16)).collect();
        let ring = engines[0].ring().expect("a ring").clone();
        let list = ring.preference_list_for_key(b"b", b"k");
        let index = |id: Uuid| engines.iter().position(|e| e.id() == id).expect("a node");
        let down = index(list.primaries()[0]);
        let fallback = index(list.fallbacks()[0]);
        let down_id = engines[down].id();
        // The primary stops; the others tick on until they see it down.
        for _ in 0..6_000 {
            t += 10;
            for (i, engine) in engines.iter_mut().enumerate() {
                if i != down {
                    engine.handle_tick(now(t));
                }
            }
            let mut frames = Vec::new();
            for (i, engine) in engines.iter_mut().enumerate() {
                for effect in drain(engine) {
                    if let Effect::Send { addr: to, payload } = effect {
                        if i != down && to != addrs[down] {
                            frames.push((addrs[i], to, payload));
                        }
                    }
                }
            }
            for (from, to, payload) in frames {
                if let Some(j) = addrs.iter().position(|&a| a == to) {
                    let _ = engines[j].handle_frame(now(t), from, &payload);
                }
            }
            if !engines[fallback].is_up(down_id) {
                break;
            }
        }
        assert!(
            !engines[fallback].is_up(down_id),
            "the primary is seen down"
        );
        // The fallback's hint queue for that primary is full.
        let other = KeyRef::new(PartitionId(0), b"b", b"other");
        engines[fallback]
            .store
            .add_hint(down_id, other, &object_with("x"), Durability::Buffered)
            .expect("the one hint that fits");
        let mut request = put("v");
        if let ClientRequest::Put(write) = &mut request {
            write.options = options(&[("w", "3"), ("timeout", "5000")]);
        }
        engines[fallback].handle_client(now(t), 1, request);
        let mut answer = None;
        for _ in 0..100 {
            t += 10;
            let effects = drain(&mut engines[fallback]);
            if let Some((_, result)) = replies(&effects).first() {
                answer = Some((*result).clone());
                break;
            }
            for effect in effects {
                if let Effect::Send { addr: to, payload } = effect {
                    if let Some(j) = addrs.iter().position(|&a| a == to).filter(|&j| j != down) {
                        let _ = engines[j].handle_frame(now(t), addrs[fallback], &payload);
                        for back in drain(&mut engines[j]) {
                            if let Effect::Send { addr: to, payload } = back {
                                if to == addrs[fallback] {
                                    let _ =
                                        engines[fallback].handle_frame(now(t), addrs[j], &payload);
                                }
                            }
                        }
                    }
                }
            }
        }
        match answer {
            Some(Err(RequestError::Put(PutError::QuorumNotReached { tally, .. }))) => {
                // w=3 of three targets is out of reach once the fallback's
                // own copy failed: the client hears so at once.
                let fallback_id = engines[fallback].id();
                assert!(
                    tally
                        .failures
                        .iter()
                        .any(|f| f.node == fallback_id
                            && matches!(f.error, ReplicaError::Storage(_))),
                    "{tally:?}"
                );
            }
            other => panic!("expected w=3 to fail without the fallback's copy, got {other:?}"),
        }
        assert_eq!(
            engines[fallback].stats().hints_dropped,
            1,
            "the hint that did not fit is counted"
        );
    }

    /// Hints the target keeps refusing never hold back the hints behind
    /// them: each round reads on from where the last one stopped.
    #[test]
    fn hints_that_keep_failing_do_not_block_the_rest() {
        let (mut engines, mut t) = cluster(2);
        engines[0].config.hint_batch = 2;
        let target = engines[1].id();
        let partitions = Partitions::new(8).expect("valid");
        // Three hints the target refuses (filed under the wrong partition),
        // then one it takes.
        for i in 0..3 {
            let key = format!("bad-{i}");
            let wrong = PartitionId((partitions.of_key(b"b", key.as_bytes()).0 + 1) % 8);
            let keyref = KeyRef::new(wrong, b"b", key.as_bytes());
            engines[0]
                .store
                .add_hint(target, keyref, &object_with("x"), Durability::Buffered)
                .expect("queued");
        }
        let good = KeyRef::new(partitions.of_key(b"b", b"good"), b"b", b"good");
        engines[0]
            .store
            .add_hint(target, good, &object_with("g"), Durability::Buffered)
            .expect("queued");
        let addrs = [addr(7070), addr(7071)];
        for _ in 0..1_000 {
            t += 10;
            for engine in &mut engines {
                engine.handle_tick(now(t));
            }
            deliver(&mut engines, &addrs, t);
            if engines[1].store().get(good).expect("readable").is_some() {
                break;
            }
        }
        assert!(
            engines[1].store().get(good).expect("readable").is_some(),
            "the good hint was never handed over"
        );
        // The refused hints stay queued; the delivered one is gone.
        assert_eq!(
            engines[0].pending_hints().expect("memory"),
            vec![(target, 3)]
        );
    }

    #[test]
    fn a_write_that_cannot_be_sent_counts_its_replica_as_failed_at_once() {
        let (mut engines, t) = cluster(3);
        let (unreachable, unreachable_id) = (addr(7072), engines[2].id());
        // Step 1: a put at w=all through node 0 sends the object to nodes
        // 1 and 2.
        let mut request = put("v");
        if let ClientRequest::Put(write) = &mut request {
            write.options = options(&[("w", "all"), ("timeout", "5000")]);
        }
        engines[0].handle_client(now(t), 1, request);
        let effects = drain(&mut engines[0]);
        assert!(replies(&effects).is_empty(), "{effects:?}");
        // Step 2: the frame to node 2 cannot be sent.
        let payload = payload_to(&effects, unreachable).expect("a frame for node 2");
        engines[0].handle_send_failed(now(t + 1), unreachable, &payload);
        // Step 3: w=all can no longer be reached: the client hears so now,
        // long before the timeout, with node 2 named as unreachable.
        let effects = drain(&mut engines[0]);
        match replies(&effects)[..] {
            [(1, Err(RequestError::Put(PutError::QuorumNotReached { tally, applied: 1 })))] => {
                assert_eq!(tally.failures.len(), 1, "{tally:?}");
                assert_eq!(tally.failures[0].node, unreachable_id);
                assert_eq!(tally.failures[0].error, ReplicaError::Unreachable);
            }
            ref other => panic!("expected a quorum failure, got {other:?}"),
        }
        assert_eq!(engines[0].stats().send_failures, 1);
    }

    #[test]
    fn a_read_that_cannot_be_sent_counts_its_replica_as_failed_at_once() {
        let (mut engines, t) = cluster(3);
        let unreachable = addr(7071);
        let read = ClientRequest::Get(ReadRequest {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            options: options(&[("r", "all"), ("timeout", "5000")]),
        });
        engines[0].handle_client(now(t), 1, read);
        let effects = drain(&mut engines[0]);
        assert!(replies(&effects).is_empty(), "{effects:?}");
        let payload = payload_to(&effects, unreachable).expect("a read for node 1");
        engines[0].handle_send_failed(now(t + 1), unreachable, &payload);
        let effects = drain(&mut engines[0]);
        match replies(&effects)[..] {
            [(1, Err(RequestError::Get(crate::core::GetError::QuorumNotReached(tally))))] => {
                assert_eq!(tally.failures.len(), 1, "{tally:?}");
                assert_eq!(tally.failures[0].error, ReplicaError::Unreachable);
            }
            ref other => panic!("expected a quorum failure, got {other:?}"),
        }
    }

    #[test]
    fn frames_that_answer_no_request_change_nothing_when_they_cannot_be_sent() {
        let (mut engines, t) = cluster(3);
        let gossip = Frame::new(
            engines[0].id(),
            engines[0].generation(),
            Message::Gossip(vec![]),
        );
        engines[0].handle_send_failed(now(t), addr(7071), &gossip.encode());
        let foreign = Frame::new(Uuid::from_u128(5), 1, Message::Gossip(vec![]));
        engines[0].handle_send_failed(now(t), addr(7071), &foreign.encode());
        engines[0].handle_send_failed(now(t), addr(7071), b"not a frame");
        assert!(drain(&mut engines[0]).is_empty());
        assert_eq!(engines[0].stats().pending_requests, 0);
    }

    #[test]
    fn background_work_over_budget_makes_client_requests_wait_not_fail() {
        let (mut engines, t) = cluster(3);
        let addrs: Vec<SocketAddr> = (0..3).map(|i| addr(7070 + i)).collect();
        for engine in &mut engines {
            engine.config.max_background_requests = 2;
            engine.config.max_queue_wait = Duration::from_millis(500);
        }
        // Step 1: two puts at w=one are answered at once and keep
        // replicating in the background (their frames are held back).
        for client in 1..=2 {
            let mut request = put("v");
            if let ClientRequest::Put(write) = &mut request {
                write.key = format!("k{client}").into_bytes();
                write.options = options(&[("w", "one")]);
            }
            engines[0].handle_client(now(t), client, request);
        }
        let held = drain(&mut engines[0]);
        assert_eq!(replies(&held).len(), 2, "{held:?}");
        assert_eq!(engines[0].stats().background_requests, 2);
        // Step 2: a third waits for admission: no answer, nothing sent.
        let mut third = put("v3");
        if let ClientRequest::Put(write) = &mut third {
            write.options = options(&[("w", "one")]);
        }
        engines[0].handle_client(now(t + 1), 3, third);
        assert!(drain(&mut engines[0]).is_empty());
        assert_eq!(engines[0].stats().queued_requests, 1);
        // Step 3: the replicas get the held frames and acknowledge; the
        // background drains and the waiting put is admitted and answered.
        for effect in held {
            if let Effect::Send { addr: to, payload } = effect {
                let j = addrs.iter().position(|&a| a == to).expect("a member");
                let _ = engines[j].handle_frame(now(t + 2), addrs[0], &payload);
            }
        }
        let mut answered = Vec::new();
        for i in (1..3).chain(0..3) {
            for effect in drain(&mut engines[i]) {
                match effect {
                    Effect::Send { addr: to, payload } => {
                        let j = addrs.iter().position(|&a| a == to).expect("a member");
                        let _ = engines[j].handle_frame(now(t + 3), addrs[i], &payload);
                    }
                    Effect::Reply { client, result } => answered.push((client, result.is_ok())),
                    Effect::ResetConnection { .. } => {}
                }
            }
        }
        assert_eq!(answered, vec![(3, true)]);
        assert_eq!(engines[0].stats().queued_requests, 0);
        assert_eq!(engines[0].stats().refused_overloaded, 0);
        // Step 4: a request that waits longer than `max_queue_wait` is
        // refused as overloaded.
        for client in 4..=6 {
            let mut request = put("v");
            if let ClientRequest::Put(write) = &mut request {
                write.options = options(&[("w", "one")]);
            }
            engines[0].handle_client(now(t + 4), client, request);
        }
        assert_eq!(replies(&drain(&mut engines[0])).len(), 2);
        engines[0].handle_tick(now(t + 503));
        assert!(replies(&drain(&mut engines[0])).is_empty());
        engines[0].handle_tick(now(t + 504));
        let effects = drain(&mut engines[0]);
        assert!(
            matches!(
                replies(&effects)[..],
                [(6, Err(RequestError::Overloaded(_)))]
            ),
            "{effects:?}"
        );
        assert_eq!(engines[0].stats().refused_overloaded, 1);
    }

    /// A network that delivers a forwarded write twice must not make its
    /// coordinator mint two versions of one client write.
    #[test]
    fn a_forwarded_write_delivered_twice_is_coordinated_once() {
        let (mut engines, t) = cluster_with(4, 3, StoreConfig::default());
        let addrs: Vec<SocketAddr> = (0..4).map(|i| addr(7070 + i as u16)).collect();
        let ring = engines[0].ring().expect("a ring").clone();
        let list = ring.preference_list_for_key(b"b", b"k");
        let outsider = (0..4)
            .find(|&i| !list.primaries().contains(&engines[i].id()))
            .expect("4 nodes, 3 replicas");
        let first = list.primaries()[0];
        let coordinator = (0..4).find(|&i| engines[i].id() == first).expect("a node");

        engines[outsider].handle_client(now(t), 1, put("v"));
        let forward = payload_to(&drain(&mut engines[outsider]), addrs[coordinator])
            .expect("the write is forwarded to the first primary");
        engines[coordinator]
            .handle_frame(now(t), addrs[outsider], &forward)
            .expect("a valid frame");
        let once = drain(&mut engines[coordinator]);
        assert!(!once.is_empty(), "the first delivery is coordinated");

        // The same frame again: dropped, nothing sent, nothing stored.
        engines[coordinator]
            .handle_frame(now(t + 1), addrs[outsider], &forward)
            .expect("a valid frame");
        assert_eq!(drain(&mut engines[coordinator]), vec![]);
        assert_eq!(engines[coordinator].stats().forwards_repeated, 1);
        let partition = engines[coordinator].partitions.of_key(b"b", b"k");
        let stored = engines[coordinator]
            .store()
            .get(KeyRef::new(partition, b"b", b"k"))
            .expect("readable")
            .expect("stored");
        assert_eq!(stored.live().count(), 1, "one write, one version");
    }

    fn put_typed(value: &str, content_type: &str) -> ClientRequest {
        let mut request = put(value);
        if let ClientRequest::Put(write) = &mut request {
            write.content_type = Some(content_type.into());
        }
        request
    }

    #[test]
    fn a_puts_content_type_is_stored_with_its_version_and_checked_at_admission() {
        let mut engine = engine(1, 1);
        drain(&mut engine);
        engine.handle_client(now(10), 1, put_typed("{}", "application/json"));
        engine.handle_client(now(11), 2, put_typed("v", "application/"));
        let mut typed_delete = put_typed("v", "text/plain");
        if let ClientRequest::Put(write) = &mut typed_delete {
            write.value = None;
        }
        engine.handle_client(now(12), 3, typed_delete);
        let effects = drain(&mut engine);
        let replies = replies(&effects);
        assert!(
            matches!(replies[0], (1, Ok(ClientReply::Write(_)))),
            "{replies:?}"
        );
        assert!(
            matches!(
                replies[1],
                (
                    2,
                    Err(RequestError::InvalidContentType(
                        ContentTypeError::NotAMediaType
                    ))
                )
            ),
            "{replies:?}"
        );
        assert!(
            matches!(
                replies[2],
                (
                    3,
                    Err(RequestError::InvalidContentType(
                        ContentTypeError::OnTombstone
                    ))
                )
            ),
            "{replies:?}"
        );
        let partition = engine.partitions.of_key(b"b", b"k");
        let stored = engine
            .store()
            .get(KeyRef::new(partition, b"b", b"k"))
            .expect("readable")
            .expect("stored");
        let types: Vec<_> = stored
            .siblings()
            .iter()
            .map(|s| s.content_type.as_deref())
            .collect();
        assert_eq!(
            types,
            vec![Some("application/json")],
            "only the valid write stored"
        );
    }

    /// A write forwarded to a replica keeps its content type; a forward
    /// whose content type is out of bounds is refused and stores nothing.
    #[test]
    fn a_forwarded_write_carries_its_content_type() {
        let (mut engines, t) = cluster_with(4, 3, StoreConfig::default());
        let addrs: Vec<SocketAddr> = (0..4).map(|i| addr(7070 + i as u16)).collect();
        let ring = engines[0].ring().expect("a ring").clone();
        let list = ring.preference_list_for_key(b"b", b"k");
        let outsider = (0..4)
            .find(|&i| !list.primaries().contains(&engines[i].id()))
            .expect("4 nodes, 3 replicas");
        let first = list.primaries()[0];
        let coordinator = (0..4).find(|&i| engines[i].id() == first).expect("a node");
        let stored = |engine: &Engine<MemoryStore>| {
            let partition = engine.partitions.of_key(b"b", b"k");
            engine
                .store()
                .get(KeyRef::new(partition, b"b", b"k"))
                .expect("readable")
        };

        engines[outsider].handle_client(now(t), 1, put_typed("{}", "application/json"));
        let forward = payload_to(&drain(&mut engines[outsider]), addrs[coordinator])
            .expect("the write is forwarded to the first primary");
        let mut frame = Frame::decode(&forward, MAX_FRAME_BYTES).expect("a frame");

        // Out of bounds first (a request id of its own, so it is not a repeat).
        let Message::Forward { request, write } = &mut frame.message else {
            panic!("a forward, got {:?}", frame.message);
        };
        assert_eq!(write.content_type.as_deref(), Some("application/json"));
        *request += 1_000;
        write.content_type = Some(format!("text/{}", "x".repeat(MAX_CONTENT_TYPE_BYTES)));
        engines[coordinator]
            .handle_frame(now(t), addrs[outsider], &frame.encode())
            .expect("a valid frame");
        let refused = drain(&mut engines[coordinator]);
        let answer = payload_to(&refused, addrs[outsider]).expect("an answer");
        assert!(
            matches!(
                Frame::decode(&answer, MAX_FRAME_BYTES)
                    .expect("a frame")
                    .message,
                Message::ForwardReply {
                    result: Err(ForwardError::Internal(_)),
                    ..
                }
            ),
            "{refused:?}"
        );
        assert_eq!(stored(&engines[coordinator]), None, "nothing stored");

        engines[coordinator]
            .handle_frame(now(t), addrs[outsider], &forward)
            .expect("a valid frame");
        drain(&mut engines[coordinator]);
        let object = stored(&engines[coordinator]).expect("stored");
        let types: Vec<_> = object
            .siblings()
            .iter()
            .map(|s| s.content_type.as_deref())
            .collect();
        assert_eq!(types, vec![Some("application/json")]);
    }

    #[test]
    fn forgotten_forward_ids_stay_refused_below_the_floor() {
        let mut seen = SeenForwards::default();
        let ids = 1..=(MAX_FORWARDS_REMEMBERED as u64 + 1);
        assert!(ids.clone().all(|id| seen.first_time(id)));
        assert!(!seen.first_time(1), "forgotten, below the floor");
        assert!(
            !seen.first_time(MAX_FORWARDS_REMEMBERED as u64),
            "remembered"
        );
        assert!(seen.first_time(5_000), "a new id");
        assert_eq!(seen.ids.len(), MAX_FORWARDS_REMEMBERED);
    }
}
