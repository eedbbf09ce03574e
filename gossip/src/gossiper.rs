//! The membership state machine.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

use crate::detector::{y_for_threshold, ArrivalWindow, PhiSettings};
use crate::error::GossipError;
use crate::size;
use crate::state::{
    Generation, NodeDelta, NodeId, NodeState, StateKey, StateValue, Status, Version,
};
use crate::wire::{
    envelope_overhead, validate_message, Ack, Ack2, Digest, Envelope, Message, Sender, Syn,
    MAX_ENTRIES_PER_NODE, MAX_TEXT_BYTES,
};

/// Smallest `max_message_bytes` accepted: room for the largest single entry
/// plus envelope and headers, so every state can always be sent piece by piece.
pub const MIN_MESSAGE_BYTES: usize = 2048;

/// A delta smaller than this cannot exist; stop packing below it.
const MIN_DELTA_BYTES: usize = 24;

/// How the gossiper behaves. [`Config::default`] is what a production node uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Time between gossip rounds (and between own heartbeats).
    pub gossip_interval: Duration,
    /// Live peers contacted per round. The member set converges in
    /// O(log n) rounds even at 1; the default of 2 doubles the rate at which
    /// fresh heartbeats reach each node, which is what lets failure detection
    /// be both quick and free of false positives (see `docs/benchmarks.md`).
    pub fanout: usize,
    /// Addresses of seed nodes, contacted to join and now and then afterwards.
    pub seeds: Vec<SocketAddr>,
    /// Largest encoded message built or accepted, in bytes.
    pub max_message_bytes: usize,
    /// phi above which a peer is considered down.
    pub phi_threshold: f64,
    /// Heartbeat intervals remembered per peer.
    pub phi_window: usize,
    /// Floor of the standard deviation of heartbeat intervals.
    pub phi_min_std_dev: Duration,
    /// Silence beyond the usual interval that is tolerated before phi starts to rise.
    pub acceptable_pause: Duration,
    /// How often the runtime should call [`Gossiper::handle_tick`]; the
    /// resolution of failure detection.
    pub failure_check_interval: Duration,
    /// A gap between two ticks longer than this means this node itself was
    /// paused (GC, suspended VM); the gap is not held against its peers.
    pub local_pause_threshold: Duration,
    /// How long a node that left (or was removed) is remembered with its
    /// full state, and then again as a bare `(id, generation)` tombstone,
    /// before it is forgotten.
    pub quarantine: Duration,
    /// Most nodes held in the member table (a bound on state fed from the network).
    pub max_members: usize,
    /// Most effects held for the runtime; sends beyond it are dropped (gossip
    /// recovers from lost messages), notifications are always kept.
    pub max_pending_effects: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            gossip_interval: Duration::from_secs(1),
            fanout: 2,
            seeds: Vec::new(),
            max_message_bytes: 64 * 1024,
            phi_threshold: 8.0,
            phi_window: 1000,
            phi_min_std_dev: Duration::from_millis(500),
            acceptable_pause: Duration::from_secs(2),
            failure_check_interval: Duration::from_millis(100),
            local_pause_threshold: Duration::from_secs(2),
            quarantine: Duration::from_secs(72 * 3600),
            max_members: 10_000,
            max_pending_effects: 10_000,
        }
    }
}

impl Config {
    fn validate(&self) -> Result<(), GossipError> {
        let check = |ok: bool, what: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(GossipError::InvalidConfig(what))
            }
        };
        check(
            !self.gossip_interval.is_zero(),
            "gossip_interval must be positive",
        )?;
        check(self.fanout >= 1, "fanout must be at least 1")?;
        check(
            self.max_message_bytes >= MIN_MESSAGE_BYTES,
            "max_message_bytes must be at least MIN_MESSAGE_BYTES",
        )?;
        check(
            self.phi_threshold.is_finite() && self.phi_threshold > 0.0,
            "phi_threshold must be a positive number",
        )?;
        check(
            self.phi_window >= 2,
            "phi_window must hold at least 2 intervals",
        )?;
        check(
            !self.failure_check_interval.is_zero(),
            "failure_check_interval must be positive",
        )?;
        check(!self.quarantine.is_zero(), "quarantine must be positive")?;
        check(self.max_members >= 1, "max_members must be at least 1")?;
        check(
            self.max_pending_effects >= 1,
            "max_pending_effects must be at least 1",
        )
    }

    fn phi_settings(&self) -> PhiSettings {
        PhiSettings {
            threshold: self.phi_threshold,
            window: self.phi_window,
            min_std_dev: self.phi_min_std_dev,
            acceptable_pause: self.acceptable_pause,
            first_estimate: self.gossip_interval,
        }
    }
}

/// Who this node is and what it publishes from the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    /// The node id, persisted in the data directory.
    pub id: NodeId,
    /// This start's generation: persisted and bumped by the caller at every
    /// start. It must exceed every generation this id ever ran with, or peers
    /// that remember a higher one refuse this node as a zombie; taking the
    /// larger of the persisted value plus one and the wall clock in seconds
    /// (as Cassandra does) survives a lost data directory too.
    pub generation: Generation,
    /// Where the node's QUIC endpoint listens.
    pub quic_addr: SocketAddr,
    /// Where the node's HTTP API listens.
    pub http_addr: SocketAddr,
    /// The node's failure zone, if any.
    pub zone: Option<String>,
}

/// Where a message should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// A node by id. Its address is in its state ([`NodeState::quic_addr`]);
    /// a node that has just contacted this one can also be answered on the
    /// connection it came in on.
    Node(NodeId),
    /// A seed by address, before (or regardless of whether) its id is known.
    Seed(SocketAddr),
}

/// This node's opinion of whether a peer is alive. Local, never gossiped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Liveness {
    /// Learned about, but no heartbeat has advanced since.
    Unknown,
    /// Heartbeats are arriving.
    Up,
    /// phi is above the threshold.
    Down,
}

/// Something the runtime should know.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// A node this node did not know.
    Joined {
        /// The node.
        node: NodeId,
        /// Its generation.
        generation: Generation,
    },
    /// A known node restarted: its state at `new` replaced everything from `old`.
    Restarted {
        /// The node.
        node: NodeId,
        /// The generation replaced.
        old: Generation,
        /// The new generation.
        new: Generation,
    },
    /// An entry of a known node's state changed. (A node that joins or
    /// restarts is announced by [`Notification::Joined`] or
    /// [`Notification::Restarted`] alone; read its entries with
    /// [`Gossiper::member`].)
    StateChanged {
        /// The node.
        node: NodeId,
        /// The entry.
        key: StateKey,
        /// Its new value.
        value: StateValue,
    },
    /// This node now considers the node alive.
    Up {
        /// The node.
        node: NodeId,
    },
    /// This node now considers the node down.
    Down {
        /// The node.
        node: NodeId,
        /// phi at the moment of the verdict.
        phi: f64,
    },
    /// The node left (or was removed by an operator). It is quarantined.
    Left {
        /// The node.
        node: NodeId,
        /// The generation that left.
        generation: Generation,
    },
    /// The quarantine of a node that left is over; it is no longer tracked
    /// (a bare tombstone keeps its generation out for one more quarantine).
    Forgotten {
        /// The node.
        node: NodeId,
    },
    /// A peer holds a newer incarnation of *this* node than the one
    /// running: a higher generation, or this generation with versions this
    /// node never published. Either the data directory is older than what
    /// the cluster has seen of it (restored from a backup, or put back after
    /// later starts) — peers ignore this node's gossip as a zombie's until it
    /// runs at a higher generation: persist one above `generation` and call
    /// [`Gossiper::restart_at`] — or another live process runs with this
    /// node's id; `published` (its address, and whatever else it publishes)
    /// tells them apart. Reported each time a peer shows the newer state.
    Superseded {
        /// The generation of this node the peer holds.
        generation: Generation,
        /// The entries of that incarnation the peer sent (all of them when
        /// it sent the full state).
        published: Vec<(StateKey, StateValue)>,
    },
}

/// What the gossiper asks of the world.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a message.
    Send {
        /// To whom.
        to: Target,
        /// What; encode with [`Envelope::encode`].
        envelope: Envelope,
    },
    /// Tell the application.
    Notify(Notification),
}

/// A member as seen from here.
#[derive(Debug, Clone, Copy)]
pub struct MemberInfo<'a> {
    /// The member's id.
    pub id: NodeId,
    /// What it published.
    pub state: &'a NodeState,
    /// This node's opinion of it.
    pub liveness: Liveness,
    /// Whether it left (or was removed) and is quarantined.
    pub left: bool,
}

/// Counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Gossip rounds run.
    pub rounds: u64,
    /// Messages handed to the runtime.
    pub messages_sent: u64,
    /// Their encoded bytes.
    pub bytes_sent: u64,
    /// Messages handled.
    pub messages_received: u64,
    /// Messages refused (stale generation, left sender, own identity, malformed).
    pub messages_refused: u64,
    /// Sends dropped because the effect queue was full.
    pub sends_dropped: u64,
}

#[derive(Debug)]
struct Member {
    state: NodeState,
    window: ArrivalWindow,
    liveness: Liveness,
    left_at: Option<Duration>,
    /// Local sequence number of the last change applied; higher is newer.
    changed_seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct Tombstone {
    generation: Generation,
    until: Duration,
}

/// A map keyed by node id, ordered like [`NodeId`]. Ids are held as
/// integers (the same big-endian order as the UUID bytes), which makes the
/// lookups that dominate a gossip exchange cheaper.
#[derive(Debug)]
struct IdMap<V>(BTreeMap<u128, V>);

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        IdMap(BTreeMap::new())
    }
}

impl<V> IdMap<V> {
    fn get(&self, id: &NodeId) -> Option<&V> {
        self.0.get(&id.as_u128())
    }
    fn get_mut(&mut self, id: &NodeId) -> Option<&mut V> {
        self.0.get_mut(&id.as_u128())
    }
    fn insert(&mut self, id: NodeId, value: V) -> Option<V> {
        self.0.insert(id.as_u128(), value)
    }
    fn remove(&mut self, id: &NodeId) -> Option<V> {
        self.0.remove(&id.as_u128())
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn iter(&self) -> impl Iterator<Item = (NodeId, &V)> {
        self.0.iter().map(|(k, v)| (NodeId::from_u128(*k), v))
    }
    fn iter_mut(&mut self) -> impl Iterator<Item = (NodeId, &mut V)> {
        self.0.iter_mut().map(|(k, v)| (NodeId::from_u128(*k), v))
    }
    fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.0.values_mut()
    }
    fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.0.retain(|_, v| keep(v));
    }
}

/// A delta this node could send, with its packing priority.
#[derive(Debug, Clone, Copy)]
struct Offer<'a> {
    /// 0: the peer lacks the node or its generation; 1: entries changed;
    /// 2: only the heartbeat advanced.
    tier: u8,
    /// Local change sequence of the node's state; higher is newer.
    newest: u64,
    node: NodeId,
    since: Version,
    state: &'a NodeState,
}

impl<'a> Offer<'a> {
    fn new(node: NodeId, state: &'a NodeState, newest: u64, since: Version) -> Self {
        let tier = if since == Version(0) {
            0
        } else if state.has_entries_since(since) {
            1
        } else {
            2
        };
        Offer {
            tier,
            newest,
            node,
            since,
            state,
        }
    }
}

/// Deltas for `offers` in at most `budget` bytes. When they do not all fit,
/// the most urgent go first: new nodes and generations, then changed
/// entries, then heartbeats; most recently changed first within each.
fn pack(offers: Vec<Offer<'_>>, budget: usize) -> Vec<NodeDelta> {
    let mut deltas = Vec::with_capacity(offers.len());
    let mut total = 0;
    for offer in &offers {
        let delta = offer.state.delta_since(offer.node, offer.since);
        if delta.heartbeat.is_none() && delta.entries.is_empty() {
            continue;
        }
        total += delta.encoded_len();
        deltas.push(delta);
        if total > budget {
            break;
        }
    }
    if total <= budget {
        return deltas;
    }
    drop(deltas);

    let mut offers = offers;
    offers.sort_unstable_by(|a, b| {
        a.tier
            .cmp(&b.tier)
            .then(b.newest.cmp(&a.newest))
            .then(a.node.cmp(&b.node))
    });
    let mut out = Vec::new();
    let mut used = 0;
    for offer in offers {
        let remaining = budget - used;
        if remaining < MIN_DELTA_BYTES {
            break;
        }
        let mut delta = offer.state.delta_since(offer.node, offer.since);
        if delta.heartbeat.is_none() && delta.entries.is_empty() {
            continue;
        }
        if let Some(len) = delta.truncate_to(remaining) {
            used += len;
            out.push(delta);
        }
    }
    out
}

/// The membership state machine of one node. See the crate docs.
#[derive(Debug)]
pub struct Gossiper<R> {
    config: Config,
    phi: PhiSettings,
    y_threshold: f64,
    id: NodeId,
    local: NodeState,
    rng: R,
    members: IdMap<Member>,
    tombstones: IdMap<Tombstone>,
    effects: VecDeque<Effect>,
    next_round: Option<Duration>,
    last_tick: Option<Duration>,
    change_seq: u64,
    /// A peer has shown its view of this node and held no newer incarnation.
    self_confirmed: bool,
    /// The highest generation below its own that a peer was seen to hold of
    /// this node.
    older_self: Option<Generation>,
    stats: Stats,
}

impl<R: Rng> Gossiper<R> {
    /// A gossiper for `local`, drawing all its randomness from `rng`.
    ///
    /// Fails with [`GossipError::InvalidConfig`] (no gossiper is created) or
    /// with a state error when the zone is too long.
    pub fn new(config: Config, local: LocalNode, rng: R) -> Result<Self, GossipError> {
        config.validate()?;
        let phi = config.phi_settings();
        let mut gossiper = Gossiper {
            y_threshold: y_for_threshold(config.phi_threshold),
            phi,
            config,
            id: local.id,
            local: NodeState::new(local.generation),
            rng,
            members: IdMap::default(),
            tombstones: IdMap::default(),
            effects: VecDeque::new(),
            next_round: None,
            last_tick: None,
            change_seq: 0,
            self_confirmed: false,
            older_self: None,
            stats: Stats::default(),
        };
        gossiper.set_state(StateKey::QuicAddr, StateValue::Addr(local.quic_addr))?;
        gossiper.set_state(StateKey::HttpAddr, StateValue::Addr(local.http_addr))?;
        gossiper.set_state(StateKey::Status, StateValue::Status(Status::Joining))?;
        if let Some(zone) = local.zone {
            gossiper.set_state(StateKey::Zone, StateValue::Text(zone))?;
        }
        gossiper.local.beat();
        Ok(gossiper)
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This node's generation.
    pub fn generation(&self) -> Generation {
        self.local.generation()
    }

    /// This node as the sender of its messages.
    pub fn sender(&self) -> Sender {
        Sender {
            node: self.id,
            generation: self.local.generation(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What this node publishes.
    pub fn local_state(&self) -> &NodeState {
        &self.local
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Sets one entry of this node's state, to be gossiped from the next round.
    ///
    /// Setting the current value again changes nothing. Fails, leaving the
    /// local state unchanged, when the value is not the kind the key holds,
    /// a text is longer than [`MAX_TEXT_BYTES`], or the node would publish
    /// more than [`MAX_ENTRIES_PER_NODE`] entries.
    pub fn set_state(&mut self, key: StateKey, value: StateValue) -> Result<(), GossipError> {
        if !key.accepts(&value) {
            return Err(GossipError::ValueKindMismatch { key });
        }
        let len = key.name_len().max(value.text_len());
        if len > MAX_TEXT_BYTES {
            return Err(GossipError::ValueTooLarge {
                key,
                len,
                max: MAX_TEXT_BYTES,
            });
        }
        if self.local.get(&key).is_none() && self.local.entries().count() >= MAX_ENTRIES_PER_NODE {
            return Err(GossipError::TooManyEntries {
                max: MAX_ENTRIES_PER_NODE,
            });
        }
        self.local.set(key, value);
        Ok(())
    }

    /// Whether a peer has shown (in a digest or a delta) that it holds this
    /// very incarnation: this generation, with no version this node did not
    /// publish. Until then this node cannot tell whether its data directory
    /// is the newest one of its identity (see [`Notification::Superseded`]).
    pub fn is_self_confirmed(&self) -> bool {
        self.self_confirmed
    }

    /// The highest generation below this node's own that a peer was seen to
    /// hold of it (in a digest, or in the answer to this node's digest), if
    /// any: the run peers knew before this start. A data directory that
    /// does not know that generation missed a run (it was restored or
    /// copied from an older state).
    pub fn older_self_held(&self) -> Option<Generation> {
        self.older_self
    }

    /// Runs this node on at a new, higher `generation` (persisted by the
    /// caller), keeping every entry it publishes: peers take it as a
    /// restart. The answer to [`Notification::Superseded`].
    ///
    /// # Panics
    ///
    /// When `generation` is not above the current one (a programmer error).
    pub fn restart_at(&mut self, generation: Generation) {
        assert!(
            generation > self.local.generation(),
            "a restart must raise the generation"
        );
        let entries: Vec<(StateKey, StateValue)> = self
            .local
            .entries()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect();
        self.local = NodeState::new(generation);
        for (key, value) in entries {
            self.local.set(key, value);
        }
        self.local.beat();
        self.self_confirmed = false;
    }

    /// Sets this node's status.
    pub fn set_status(&mut self, status: Status) {
        self.local.set(StateKey::Status, StateValue::Status(status));
    }

    /// Starts a graceful leave: status `leaving`. The node keeps serving and
    /// gossiping while it hands its data off.
    pub fn begin_leave(&mut self) {
        self.set_status(Status::Leaving);
    }

    /// Completes a graceful leave: status `left`. The runtime should keep
    /// ticking for a few gossip intervals so the news spreads, then stop.
    pub fn complete_leave(&mut self) {
        self.set_status(Status::Left);
    }

    /// Operator action: declares a down node gone for good, as if it had
    /// left. The removal is gossiped; every node quarantines the node's
    /// generation so it cannot come back as a ghost. A restart of the removed
    /// node with a new generation is accepted as a new start.
    ///
    /// Removing a node already left changes nothing. Fails, changing nothing,
    /// for this node itself, for an unknown node, and for a node this node
    /// still sees up.
    pub fn remove_node(&mut self, now: Duration, node: NodeId) -> Result<(), GossipError> {
        if node == self.id {
            return Err(GossipError::CannotRemoveSelf);
        }
        let seq = self.next_seq();
        let member = self
            .members
            .get_mut(&node)
            .ok_or(GossipError::UnknownNode(node))?;
        if member.left_at.is_some() {
            return Ok(());
        }
        if member.liveness == Liveness::Up {
            return Err(GossipError::NodeStillUp(node));
        }
        member
            .state
            .set(StateKey::Status, StateValue::Status(Status::Left));
        member.changed_seq = seq;
        member.left_at = Some(now);
        let generation = member.state.generation();
        self.notify(Notification::Left { node, generation });
        Ok(())
    }

    /// One member as seen from here.
    pub fn member(&self, node: &NodeId) -> Option<MemberInfo<'_>> {
        self.members.get(node).map(|m| MemberInfo {
            id: *node,
            state: &m.state,
            liveness: m.liveness,
            left: m.left_at.is_some(),
        })
    }

    /// All members (not this node), in id order.
    pub fn members(&self) -> impl Iterator<Item = MemberInfo<'_>> {
        self.members.iter().map(|(id, m)| MemberInfo {
            id,
            state: &m.state,
            liveness: m.liveness,
            left: m.left_at.is_some(),
        })
    }

    /// Number of members (not this node), quarantined ones included.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Whether this node considers `node` up.
    pub fn is_up(&self, node: &NodeId) -> bool {
        self.liveness(node) == Some(Liveness::Up)
    }

    /// This node's opinion of `node`, if it is a member.
    pub fn liveness(&self, node: &NodeId) -> Option<Liveness> {
        self.members.get(node).map(|m| m.liveness)
    }

    /// The suspicion level of `node` at `now`.
    pub fn phi(&self, node: &NodeId, now: Duration) -> Option<f64> {
        self.members.get(node).map(|m| m.window.phi(now, &self.phi))
    }

    /// Whether `node` at `generation` is quarantined: it left or was removed,
    /// and state about that generation is ignored.
    pub fn is_quarantined(&self, node: &NodeId, generation: Generation) -> bool {
        let left = self
            .members
            .get(node)
            .is_some_and(|m| m.left_at.is_some() && m.state.generation() >= generation);
        let tomb = self
            .tombstones
            .get(node)
            .is_some_and(|t| t.generation >= generation);
        left || tomb
    }

    /// When [`Gossiper::handle_tick`] should be called next.
    pub fn next_wakeup(&self) -> Duration {
        match (self.next_round, self.last_tick) {
            (Some(round), Some(tick)) => round.min(tick + self.config.failure_check_interval),
            _ => Duration::ZERO,
        }
    }

    /// The next effect, oldest first.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// All pending effects, oldest first.
    pub fn drain_effects(&mut self) -> std::collections::vec_deque::Drain<'_, Effect> {
        self.effects.drain(..)
    }

    /// Advances time: evaluates failure detection, ends quarantines, and runs
    /// a gossip round when one is due. `now` is time since an arbitrary origin
    /// fixed for the life of the process; it must not go backwards.
    pub fn handle_tick(&mut self, now: Duration) {
        if let Some(last) = self.last_tick {
            let gap = now.saturating_sub(last);
            if gap > self.config.local_pause_threshold {
                // This node was not running; its peers were not silent.
                let forgiven = gap.saturating_sub(self.config.failure_check_interval);
                for member in self.members.values_mut() {
                    member.window.forgive(forgiven, now);
                }
            }
        }
        self.last_tick = Some(now);
        self.detect_failures(now);
        self.end_quarantines(now);
        if self.next_round.is_none_or(|due| now >= due) {
            self.run_round();
            let interval = self.config.gossip_interval;
            self.next_round = Some(match self.next_round {
                Some(due) if now < due + interval => due + interval,
                _ => now + interval,
            });
        }
    }

    /// Decodes `bytes` (refusing more than `max_message_bytes`) and handles the message.
    pub fn handle_bytes(&mut self, now: Duration, bytes: &[u8]) -> Result<(), GossipError> {
        match Envelope::decode(bytes, self.config.max_message_bytes) {
            Ok(envelope) => self.handle_message(now, envelope.sender(), envelope.message),
            Err(e) => {
                self.stats.messages_refused += 1;
                Err(e)
            }
        }
    }

    /// Handles a decoded message from `from`.
    ///
    /// A message from an older generation of a known node, from a node that
    /// left, or claiming this node's own id is refused whole. A malformed one
    /// too. See [`GossipError`] for what each refusal leaves behind.
    pub fn handle_message(
        &mut self,
        now: Duration,
        from: Sender,
        message: Message,
    ) -> Result<(), GossipError> {
        if let Err(e) = self.admit(from, &message) {
            self.stats.messages_refused += 1;
            if let (GossipError::StaleGeneration { node, .. }, Message::Syn(_)) = (&e, &message) {
                self.tell_superseded(*node);
            }
            return Err(e);
        }
        self.stats.messages_received += 1;
        match message {
            Message::Syn(syn) => {
                self.on_syn(from, &syn);
                Ok(())
            }
            Message::Ack(ack) => self.on_ack(now, from, ack),
            Message::Ack2(ack2) => {
                let dropped = self.apply_deltas(now, &ack2.states);
                self.limit_result(dropped)
            }
        }
    }

    fn admit(&self, from: Sender, message: &Message) -> Result<(), GossipError> {
        if from.node == self.id {
            return Err(GossipError::OwnIdentity {
                generation: from.generation,
            });
        }
        if let Some(member) = self.members.get(&from.node) {
            let known = member.state.generation();
            if from.generation < known {
                return Err(GossipError::StaleGeneration {
                    node: from.node,
                    got: from.generation,
                    known,
                });
            }
        }
        if self.is_quarantined(&from.node, from.generation) {
            return Err(GossipError::SenderLeft {
                node: from.node,
                generation: from.generation,
            });
        }
        validate_message(message)
    }

    /// Answers a SYN from an older generation of a known node with the
    /// newer state held of it, so that a node started on an old data
    /// directory learns it is behind (and not only ignored).
    fn tell_superseded(&mut self, node: NodeId) {
        let Some(member) = self.members.get(&node) else {
            return;
        };
        let budget = self.config.max_message_bytes
            - envelope_overhead(self.local.generation())
            - size::newtype_variant("Ack")
            - size::array_header(2)
            - 2 * size::MAX_ARRAY_HEADER;
        let offer = Offer::new(node, &member.state, member.changed_seq, Version(0));
        let states = pack(vec![offer], budget);
        self.send(
            Target::Node(node),
            Message::Ack(Ack {
                states,
                requests: Vec::new(),
            }),
        );
    }

    /// Looks at what a peer holds of this node (`published` empty when only
    /// its digest was seen): reports a newer incarnation shown with its
    /// state, or notes that the peer holds this very one.
    fn check_self_view(
        &mut self,
        generation: Generation,
        max_version: Version,
        published: Vec<(StateKey, StateValue)>,
    ) {
        let (mine, max) = (self.local.generation(), self.local.max_version());
        if generation > mine || (generation == mine && max_version > max) {
            // A digest alone says too little; the peer sends the state when
            // this node's own digest reaches it (see `on_syn`).
            if !published.is_empty() {
                self.notify(Notification::Superseded {
                    generation,
                    published,
                });
            }
        } else if generation == mine {
            self.self_confirmed = true;
        } else {
            self.older_self = self.older_self.max(Some(generation));
        }
    }

    fn limit_result(&self, dropped: usize) -> Result<(), GossipError> {
        if dropped == 0 {
            Ok(())
        } else {
            Err(GossipError::MemberLimit {
                limit: self.config.max_members,
                dropped,
            })
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.change_seq += 1;
        self.change_seq
    }

    fn notify(&mut self, notification: Notification) {
        self.effects.push_back(Effect::Notify(notification));
    }

    fn send(&mut self, to: Target, message: Message) {
        let envelope = Envelope::new(self.sender(), message);
        let len = envelope.encoded_len();
        debug_assert!(
            len <= self.config.max_message_bytes,
            "built a {len}-byte message over the limit"
        );
        if self.effects.len() >= self.config.max_pending_effects {
            self.stats.sends_dropped += 1;
            return;
        }
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += len as u64;
        self.effects.push_back(Effect::Send { to, envelope });
    }

    fn detect_failures(&mut self, now: Duration) {
        let mut verdicts = Vec::new();
        for (id, member) in self.members.iter_mut() {
            if member.left_at.is_some() || member.liveness == Liveness::Down {
                continue;
            }
            if member.window.suspects(now, &self.phi, self.y_threshold) {
                if member.liveness == Liveness::Up {
                    verdicts.push(Notification::Down {
                        node: id,
                        phi: member.window.phi(now, &self.phi),
                    });
                }
                member.liveness = Liveness::Down;
            }
        }
        for verdict in verdicts {
            self.notify(verdict);
        }
    }

    fn end_quarantines(&mut self, now: Duration) {
        let quarantine = self.config.quarantine;
        self.tombstones.retain(|t| t.until > now);
        let expired: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| m.left_at.is_some_and(|at| now >= at + quarantine))
            .map(|(id, _)| id)
            .collect();
        for node in expired {
            if let Some(member) = self.members.remove(&node) {
                self.tombstones.insert(
                    node,
                    Tombstone {
                        generation: member.state.generation(),
                        until: now + quarantine,
                    },
                );
                self.notify(Notification::Forgotten { node });
            }
        }
    }

    fn run_round(&mut self) {
        self.local.beat();
        self.stats.rounds += 1;

        let seeds: Vec<SocketAddr> = {
            let own = self.local.quic_addr();
            self.config
                .seeds
                .iter()
                .copied()
                .filter(|s| Some(*s) != own)
                .collect()
        };
        let mut live = Vec::new();
        let mut unreachable = Vec::new();
        for (id, member) in self.members.iter() {
            if member.left_at.is_some() {
                continue;
            }
            if member.liveness == Liveness::Down {
                unreachable.push(id);
            } else {
                live.push(id);
            }
        }

        let mut targets: Vec<Target> = Vec::new();
        let mut gossiped_to_seed = false;
        for id in live.choose_multiple(&mut self.rng, self.config.fanout) {
            let is_seed = self
                .members
                .get(id)
                .expect("chosen from the members")
                .state
                .quic_addr()
                .is_some_and(|a| seeds.contains(&a));
            gossiped_to_seed |= is_seed;
            targets.push(Target::Node(*id));
        }
        if !unreachable.is_empty() {
            let p = unreachable.len() as f64 / (live.len() + 1) as f64;
            if self.rng.random::<f64>() < p {
                if let Some(id) = unreachable.choose(&mut self.rng) {
                    targets.push(Target::Node(*id));
                }
            }
        }
        if !seeds.is_empty() && (!gossiped_to_seed || live.len() < seeds.len()) {
            let p = if live.is_empty() {
                1.0
            } else {
                seeds.len() as f64 / (live.len() + unreachable.len() + 1) as f64
            };
            if self.rng.random::<f64>() < p {
                if let Some(addr) = seeds.choose(&mut self.rng) {
                    targets.push(Target::Seed(*addr));
                }
            }
        }
        if targets.is_empty() {
            return;
        }
        let syn = self.build_syn();
        for target in targets {
            self.send(target, Message::Syn(syn.clone()));
        }
    }

    /// What this node knows of `node` (itself included), with its recency.
    fn known(&self, node: &NodeId) -> Option<(&NodeState, u64)> {
        if *node == self.id {
            Some((&self.local, u64::MAX))
        } else {
            self.members.get(node).map(|m| (&m.state, m.changed_seq))
        }
    }

    fn tombstoned(&self, node: &NodeId, generation: Generation) -> bool {
        !self.tombstones.is_empty()
            && self
                .tombstones
                .get(node)
                .is_some_and(|t| t.generation >= generation)
    }

    fn build_syn(&mut self) -> Syn {
        let budget = self.config.max_message_bytes
            - envelope_overhead(self.local.generation())
            - size::newtype_variant("Syn")
            - size::array_header(2)
            - size::MAX_ARRAY_HEADER
            - 1;
        let own = Digest {
            node: self.id,
            generation: self.local.generation(),
            max_version: self.local.max_version(),
        };
        // Ascending node order, this node's own digest among the others.
        let mut digests: Vec<Digest> = Vec::with_capacity(self.members.len() + 1);
        let mut own = Some(own);
        for (id, m) in self.members.iter() {
            if own.is_some_and(|o| o.node < id) {
                digests.extend(own.take());
            }
            digests.push(Digest {
                node: id,
                generation: m.state.generation(),
                max_version: m.state.max_version(),
            });
        }
        digests.extend(own);
        let total: usize = digests.iter().map(Digest::encoded_len).sum();
        let complete = total <= budget;
        if !complete {
            // This node's own digest, then a random subset of the others.
            let own_at = digests
                .binary_search_by_key(&self.id, |d| d.node)
                .expect("own digest present");
            digests.swap(0, own_at);
            digests[1..].shuffle(&mut self.rng);
            let mut used = 0;
            let keep = digests
                .iter()
                .take_while(|d| {
                    used += d.encoded_len();
                    used <= budget
                })
                .count();
            digests.truncate(keep);
            digests.sort_unstable_by_key(|d| d.node);
        }
        Syn { digests, complete }
    }

    fn on_syn(&mut self, from: Sender, syn: &Syn) {
        if let Some(own) = syn.digests.iter().find(|d| d.node == self.id) {
            self.check_self_view(own.generation, own.max_version, Vec::new());
        }
        let behind_itself = syn.digests.iter().any(|d| {
            d.node == from.node
                && self.members.get(&from.node).is_some_and(|m| {
                    m.state.generation() == d.generation && m.state.max_version() > d.max_version
                })
        });
        if behind_itself {
            // The sender knows less of itself than this node does: it runs
            // on an older copy of its data directory at the same generation.
            self.tell_superseded(from.node);
        }
        let ack = self.build_ack(from.node, syn);
        if ack.states.is_empty() && ack.requests.is_empty() {
            // Both sides agree; nothing to say.
            return;
        }
        self.send(Target::Node(from.node), Message::Ack(ack));
    }

    /// The answer to a SYN: compares its digests (ascending) with the member
    /// table (ascending) in one pass.
    fn build_ack(&self, from: NodeId, syn: &Syn) -> Ack {
        let mut held_before: Option<NodeDelta> = None;
        let mut offers: Vec<Offer<'_>> = Vec::new();
        let mut requests: Vec<Digest> = Vec::new();
        let mut members = self.members.iter().peekable();
        let mut self_mentioned = false;
        for digest in &syn.digests {
            if digest.node == self.id {
                self_mentioned = true;
                let (mine, max) = (self.local.generation(), self.local.max_version());
                if digest.generation < mine {
                    offers.push(Offer::new(self.id, &self.local, u64::MAX, Version(0)));
                } else if digest.generation == mine && digest.max_version < max {
                    offers.push(Offer::new(
                        self.id,
                        &self.local,
                        u64::MAX,
                        digest.max_version,
                    ));
                }
                continue;
            }
            let mut member = None;
            while let Some((id, m)) = members.peek() {
                if *id < digest.node {
                    if syn.complete {
                        offers.push(Offer::new(*id, &m.state, m.changed_seq, Version(0)));
                    }
                    members.next();
                } else {
                    if *id == digest.node {
                        member = Some(*m);
                        members.next();
                    }
                    break;
                }
            }
            if self.tombstoned(&digest.node, digest.generation) {
                continue;
            }
            let request_all = Digest {
                max_version: Version(0),
                ..*digest
            };
            let Some(m) = member else {
                requests.push(request_all);
                continue;
            };
            let (generation, max) = (m.state.generation(), m.state.max_version());
            if generation < digest.generation {
                requests.push(request_all);
                if digest.node == from {
                    // Tell the node which run of it this one held, so it can
                    // tell whether its data directory knows that run.
                    held_before = Some(NodeDelta {
                        node: from,
                        generation,
                        since: max,
                        heartbeat: None,
                        entries: Vec::new(),
                    });
                }
            } else if generation > digest.generation {
                offers.push(Offer::new(digest.node, &m.state, m.changed_seq, Version(0)));
            } else if max > digest.max_version {
                offers.push(Offer::new(
                    digest.node,
                    &m.state,
                    m.changed_seq,
                    digest.max_version,
                ));
            } else if max < digest.max_version {
                requests.push(Digest {
                    max_version: max,
                    ..*digest
                });
            }
        }
        if syn.complete {
            for (id, m) in members {
                offers.push(Offer::new(id, &m.state, m.changed_seq, Version(0)));
            }
            if !self_mentioned {
                offers.push(Offer::new(self.id, &self.local, u64::MAX, Version(0)));
            }
        }

        let mut budget = self.config.max_message_bytes
            - envelope_overhead(self.local.generation())
            - size::newtype_variant("Ack")
            - size::array_header(2)
            - 2 * size::MAX_ARRAY_HEADER;
        // Requests are small; they may take up to half of the message.
        let mut request_bytes = 0;
        let keep = requests
            .iter()
            .take_while(|d| {
                request_bytes += d.encoded_len();
                request_bytes <= budget / 2
            })
            .count();
        requests.truncate(keep);
        budget -= requests.iter().map(Digest::encoded_len).sum::<usize>();
        let held_len = held_before.as_ref().map_or(0, NodeDelta::encoded_len);
        let mut states = pack(offers, budget.saturating_sub(held_len));
        states.extend(held_before);
        Ack { states, requests }
    }

    fn on_ack(&mut self, now: Duration, from: Sender, ack: Ack) -> Result<(), GossipError> {
        // A request for this node names the generation the peer asked about
        // (an ACK may answer a SYN of an earlier run of this node).
        let asked: Vec<Digest> = ack
            .requests
            .iter()
            .filter(|r| r.node == self.id && r.generation != self.local.generation())
            .copied()
            .collect();
        for request in asked {
            self.check_self_view(request.generation, Version(0), Vec::new());
        }
        let dropped = self.apply_deltas(now, &ack.states);
        let states = self.build_ack2(&ack.requests);
        if !states.is_empty() {
            self.send(Target::Node(from.node), Message::Ack2(Ack2 { states }));
        }
        self.limit_result(dropped)
    }

    /// What to send for an ACK's requests (ascending, unique).
    fn build_ack2(&self, requests: &[Digest]) -> Vec<NodeDelta> {
        let mut offers = Vec::new();
        for request in requests {
            // Nodes that left are offered too: that is how the news spreads.
            let Some((state, newest)) = self.known(&request.node) else {
                continue;
            };
            if state.generation() > request.generation {
                offers.push(Offer::new(request.node, state, newest, Version(0)));
            } else if state.generation() == request.generation
                && state.max_version() > request.max_version
            {
                offers.push(Offer::new(request.node, state, newest, request.max_version));
            }
        }
        let budget = self.config.max_message_bytes
            - envelope_overhead(self.local.generation())
            - size::newtype_variant("Ack2")
            - size::array_header(1)
            - size::MAX_ARRAY_HEADER;
        pack(offers, budget)
    }

    /// Applies received state. Returns how many new nodes were dropped
    /// because the member table is full.
    fn apply_deltas(&mut self, now: Duration, deltas: &[NodeDelta]) -> usize {
        let mut dropped = 0;
        for delta in deltas {
            if delta.node == self.id {
                // This node is the authority on itself, unless a peer holds
                // a newer incarnation of it.
                let published = delta
                    .entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect();
                self.check_self_view(delta.generation, delta.max_version(), published);
                continue;
            }
            if !self.tombstones.is_empty() {
                if let Some(tomb) = self.tombstones.get(&delta.node) {
                    if delta.generation <= tomb.generation {
                        continue;
                    }
                    self.tombstones.remove(&delta.node);
                }
            }
            self.change_seq += 1;
            let seq = self.change_seq;
            match self.members.get_mut(&delta.node) {
                Some(member) => {
                    let known = member.state.generation();
                    if known == delta.generation {
                        apply_same_generation(
                            member,
                            now,
                            delta,
                            seq,
                            &self.phi,
                            &mut self.effects,
                        );
                    } else if known < delta.generation && delta.since == Version(0) {
                        replace_generation(member, now, delta, seq, &self.phi, &mut self.effects);
                    }
                }
                None => {
                    if delta.since != Version(0) {
                        continue;
                    }
                    if self.members.len() >= self.config.max_members {
                        dropped += 1;
                        continue;
                    }
                    self.add_member(now, delta, seq);
                }
            }
        }
        dropped
    }

    fn add_member(&mut self, now: Duration, delta: &NodeDelta, seq: u64) {
        let node = delta.node;
        let state = fresh_state(delta);
        let left = state.status() == Some(Status::Left);
        let mut notes = Vec::new();
        if !left {
            // A node first heard of as already gone is quarantined quietly.
            notes.push(Notification::Joined {
                node,
                generation: delta.generation,
            });
        }
        self.members.insert(
            node,
            Member {
                state,
                window: ArrivalWindow::new(now, &self.phi),
                liveness: Liveness::Unknown,
                left_at: left.then_some(now),
                changed_seq: seq,
            },
        );
        for note in notes {
            self.notify(note);
        }
    }
}

fn fresh_state(delta: &NodeDelta) -> NodeState {
    NodeState::from_full_delta(delta)
}

fn notify_into(effects: &mut VecDeque<Effect>, notification: Notification) {
    effects.push_back(Effect::Notify(notification));
}

/// Applies a delta of the member's own generation.
fn apply_same_generation(
    member: &mut Member,
    now: Duration,
    delta: &NodeDelta,
    seq: u64,
    phi: &PhiSettings,
    effects: &mut VecDeque<Effect>,
) {
    let node = delta.node;
    if delta.since > member.state.max_version() {
        // A gap: applying it would claim versions this node never saw.
        return;
    }
    let applied = member.state.apply(delta);
    if applied.heartbeat_advanced || !applied.changed.is_empty() {
        member.changed_seq = seq;
    }
    let now_left = member.state.status() == Some(Status::Left);
    if applied.heartbeat_advanced && !now_left {
        match member.liveness {
            Liveness::Up => member.window.record(now, phi),
            Liveness::Unknown => {
                member.window.record(now, phi);
                member.liveness = Liveness::Up;
                notify_into(effects, Notification::Up { node });
            }
            Liveness::Down => {
                member.window.restart_at(now);
                member.liveness = Liveness::Up;
                notify_into(effects, Notification::Up { node });
            }
        }
    }
    for (key, value) in applied.changed {
        notify_into(effects, Notification::StateChanged { node, key, value });
    }
    if now_left && member.left_at.is_none() {
        member.left_at = Some(now);
        let generation = member.state.generation();
        notify_into(effects, Notification::Left { node, generation });
    }
}

/// Replaces a member's state with a full state of a newer generation.
fn replace_generation(
    member: &mut Member,
    now: Duration,
    delta: &NodeDelta,
    seq: u64,
    phi: &PhiSettings,
    effects: &mut VecDeque<Effect>,
) {
    let node = delta.node;
    let old = member.state.generation();
    let state = fresh_state(delta);
    let left = state.status() == Some(Status::Left);
    let liveness = if member.liveness == Liveness::Up && member.left_at.is_none() {
        Liveness::Up
    } else {
        Liveness::Unknown
    };
    *member = Member {
        state,
        window: ArrivalWindow::new(now, phi),
        liveness,
        left_at: left.then_some(now),
        changed_seq: seq,
    };
    let new = delta.generation;
    notify_into(effects, Notification::Restarted { node, old, new });
    if left {
        notify_into(
            effects,
            Notification::Left {
                node,
                generation: new,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const T0: Duration = Duration::ZERO;

    fn addr(i: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], port))
    }

    fn local(i: u8, generation: u64) -> LocalNode {
        LocalNode {
            id: NodeId::from_u128(u128::from(i)),
            generation: Generation(generation),
            quic_addr: addr(i, 7000),
            http_addr: addr(i, 8080),
            zone: None,
        }
    }

    fn node(i: u8, generation: u64, seeds: &[u8]) -> Gossiper<ChaCha8Rng> {
        let config = Config {
            seeds: seeds.iter().map(|&s| addr(s, 7000)).collect(),
            ..Config::default()
        };
        Gossiper::new(
            config,
            local(i, generation),
            ChaCha8Rng::seed_from_u64(u64::from(i)),
        )
        .expect("valid")
    }

    fn sends(g: &mut Gossiper<ChaCha8Rng>) -> Vec<(Target, Envelope)> {
        g.drain_effects()
            .filter_map(|e| match e {
                Effect::Send { to, envelope } => Some((to, envelope)),
                Effect::Notify(_) => None,
            })
            .collect()
    }

    fn notes(g: &mut Gossiper<ChaCha8Rng>) -> Vec<Notification> {
        g.drain_effects()
            .filter_map(|e| match e {
                Effect::Notify(n) => Some(n),
                Effect::Send { .. } => None,
            })
            .collect()
    }

    fn deliver(to: &mut Gossiper<ChaCha8Rng>, now: Duration, envelope: Envelope) {
        to.handle_message(now, envelope.sender(), envelope.message)
            .expect("accepted");
    }

    #[test]
    fn a_lone_node_gossips_its_own_digest_to_a_seed_by_address() {
        let mut a = node(1, 5, &[2]);
        a.handle_tick(T0);
        let out = sends(&mut a);
        assert_eq!(out.len(), 1);
        let (to, envelope) = &out[0];
        assert_eq!(*to, Target::Seed(addr(2, 7000)));
        assert_eq!(envelope.sender(), a.sender());
        assert_eq!(
            envelope.message,
            Message::Syn(Syn {
                digests: vec![Digest {
                    node: a.id(),
                    generation: Generation(5),
                    max_version: a.local_state().max_version(),
                }],
                complete: true,
            })
        );
        // Its own address is never a seed to itself; with no other seed it stays quiet.
        let mut lonely = node(1, 5, &[1]);
        lonely.handle_tick(T0);
        assert!(sends(&mut lonely).is_empty());
    }

    #[test]
    fn syn_ack_ack2_teach_both_sides_each_other() {
        let mut a = node(1, 1, &[2]);
        let mut b = node(2, 1, &[]);
        b.set_status(Status::Up);

        // Step 1: a's SYN reaches b, which asks for a and offers itself.
        a.handle_tick(T0);
        let (_, syn) = sends(&mut a).remove(0);
        deliver(&mut b, T0, syn);
        let mut out = sends(&mut b);
        assert_eq!(out.len(), 1);
        let (to, ack) = out.remove(0);
        assert_eq!(to, Target::Node(a.id()));
        let Message::Ack(ref body) = ack.message else {
            panic!("expected an ACK, got {:?}", ack.message)
        };
        assert_eq!(
            body.requests,
            [Digest {
                node: a.id(),
                generation: Generation(1),
                max_version: Version(0)
            }]
        );
        assert_eq!(body.states.len(), 1);
        assert_eq!(body.states[0].node, b.id());
        assert_eq!(body.states[0].since, Version(0));

        // Step 2: a learns b and answers the request with its whole state.
        deliver(&mut a, T0, ack);
        let effects: Vec<Effect> = a.drain_effects().collect();
        assert_eq!(
            effects[0],
            Effect::Notify(Notification::Joined {
                node: b.id(),
                generation: Generation(1)
            })
        );
        let Effect::Send { to, envelope: ack2 } = &effects[1] else {
            panic!("expected the ACK2, got {:?}", effects[1])
        };
        assert_eq!(*to, Target::Node(b.id()));
        assert_eq!(effects.len(), 2);
        let member = a.member(&b.id()).expect("b is a member");
        assert_eq!(member.state.status(), Some(Status::Up));
        assert_eq!(member.state.quic_addr(), Some(addr(2, 7000)));
        assert_eq!(member.liveness, Liveness::Unknown);

        // Step 3: b learns a.
        deliver(&mut b, T0, ack2.clone());
        assert_eq!(
            notes(&mut b),
            [Notification::Joined {
                node: a.id(),
                generation: Generation(1)
            }]
        );
        assert_eq!(b.member(&a.id()).expect("a").state, a.local_state());

        // Step 4: a newer heartbeat of a makes it up at b.
        a.handle_tick(Duration::from_secs(1));
        let syns = sends(&mut a);
        let (_, syn) = syns
            .into_iter()
            .find(|(to, _)| *to == Target::Node(b.id()))
            .expect("a now gossips to b by id");
        deliver(&mut b, Duration::from_secs(1), syn);
        let (_, ack) = sends(&mut b).remove(0);
        deliver(&mut a, Duration::from_secs(1), ack);
        let (_, ack2) = sends(&mut a).remove(0);
        deliver(&mut b, Duration::from_secs(1), ack2);
        assert_eq!(notes(&mut b), [Notification::Up { node: a.id() }]);
        assert!(b.is_up(&a.id()));
    }

    /// Makes `b` know `a` by a direct exchange started by `a`.
    fn introduce(a: &mut Gossiper<ChaCha8Rng>, b: &mut Gossiper<ChaCha8Rng>, now: Duration) {
        let syn = Envelope::new(
            a.sender(),
            Message::Syn(Syn {
                digests: vec![Digest {
                    node: a.id(),
                    generation: a.generation(),
                    max_version: a.local_state().max_version(),
                }],
                complete: false,
            }),
        );
        deliver(b, now, syn);
        for (_, ack) in sends(b) {
            deliver(a, now, ack);
        }
        for (_, ack2) in sends(a) {
            deliver(b, now, ack2);
        }
    }

    #[test]
    fn state_of_an_older_generation_is_ignored_and_a_newer_one_replaces_everything() {
        let mut old_a = node(1, 1, &[]);
        let mut b = node(2, 1, &[]);
        introduce(&mut old_a, &mut b, T0);
        let old_full = old_a.local_state().delta_since(old_a.id(), Version(0));

        let mut new_a = node(1, 2, &[]);
        new_a
            .set_state(StateKey::Zone, StateValue::Text("z2".into()))
            .expect("zone");
        introduce(&mut new_a, &mut b, T0);
        let effects = notes(&mut b);
        assert!(effects.contains(&Notification::Restarted {
            node: new_a.id(),
            old: Generation(1),
            new: Generation(2)
        }));
        assert_eq!(b.member(&new_a.id()).expect("a").state, new_a.local_state());

        // The old generation's state, relayed by anyone, changes nothing.
        let relay = node(3, 1, &[]);
        let before = b.member(&new_a.id()).expect("a").state.clone();
        b.handle_message(
            T0,
            relay.sender(),
            Message::Ack2(Ack2 {
                states: vec![old_full],
            }),
        )
        .expect("a valid message");
        assert_eq!(b.member(&new_a.id()).expect("a").state, &before);
        assert!(notes(&mut b).is_empty());

        // A message from the old process itself is refused.
        let err = b
            .handle_message(
                T0,
                old_a.sender(),
                Message::Syn(Syn {
                    digests: vec![],
                    complete: false,
                }),
            )
            .expect_err("stale");
        assert_eq!(
            err,
            GossipError::StaleGeneration {
                node: old_a.id(),
                got: Generation(1),
                known: Generation(2)
            }
        );
        // It changes nothing, but is told the newer generation held of it.
        let sent: Vec<Effect> = b.drain_effects().collect();
        match &sent[..] {
            [Effect::Send {
                to: Target::Node(to),
                envelope,
            }] => {
                assert_eq!(*to, old_a.id());
                match &envelope.message {
                    Message::Ack(ack) => {
                        assert!(ack.requests.is_empty());
                        assert_eq!(ack.states.len(), 1);
                        assert_eq!(ack.states[0].node, old_a.id());
                        assert_eq!(ack.states[0].generation, Generation(2));
                        assert_eq!(ack.states[0].since, Version(0));
                    }
                    other => panic!("expected an ACK, got {other:?}"),
                }
            }
            other => panic!("expected one ACK, got {other:?}"),
        }
        assert_eq!(b.member(&new_a.id()).expect("a").state, &before);

        // The old process learns that a newer generation of it exists.
        let Effect::Send { envelope, .. } = sent.into_iter().next().expect("one") else {
            unreachable!("matched above")
        };
        old_a
            .handle_message(T0, envelope.sender(), envelope.message)
            .expect("a valid ACK");
        let superseded = notes(&mut old_a).into_iter().any(|n| {
            matches!(
                n,
                Notification::Superseded {
                    generation: Generation(2),
                    ..
                }
            )
        });
        assert!(superseded, "the old process was told");
    }

    #[test]
    fn a_delta_that_would_leave_a_gap_is_not_applied() {
        let mut a = node(1, 1, &[]);
        let mut b = node(2, 1, &[]);
        introduce(&mut a, &mut b, T0);
        let known = b.member(&a.id()).expect("a").state.max_version();
        for i in 0..5 {
            a.set_state(StateKey::Load, StateValue::Load(i))
                .expect("load");
        }
        // Only the newest part, skipping versions b never saw.
        let delta = a.local_state().delta_since(a.id(), Version(known.0 + 2));
        b.handle_message(
            T0,
            a.sender(),
            Message::Ack2(Ack2 {
                states: vec![delta],
            }),
        )
        .expect("valid");
        assert_eq!(b.member(&a.id()).expect("a").state.max_version(), known);
    }

    #[test]
    fn a_message_claiming_this_nodes_id_is_refused() {
        let mut a = node(1, 1, &[]);
        let err = a
            .handle_message(T0, a.sender(), Message::Ack2(Ack2 { states: vec![] }))
            .expect_err("own id");
        assert_eq!(
            err,
            GossipError::OwnIdentity {
                generation: Generation(1)
            }
        );
        assert_eq!(a.stats().messages_refused, 1);
    }

    #[test]
    fn local_updates_are_checked_and_refusals_change_nothing() {
        let mut a = node(1, 1, &[]);
        let before = a.local_state().clone();
        assert_eq!(
            a.set_state(StateKey::Zone, StateValue::Load(3)),
            Err(GossipError::ValueKindMismatch {
                key: StateKey::Zone
            })
        );
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        assert!(matches!(
            a.set_state(StateKey::Extra(long), StateValue::Text("v".into())),
            Err(GossipError::ValueTooLarge { .. })
        ));
        assert_eq!(*a.local_state(), before);
        // Setting the current value again is not a change.
        a.set_state(StateKey::QuicAddr, StateValue::Addr(addr(1, 7000)))
            .expect("same value");
        assert_eq!(*a.local_state(), before);
        let mut extras = 0;
        let err = loop {
            match a.set_state(
                StateKey::Extra(format!("k{extras}")),
                StateValue::Text("v".into()),
            ) {
                Ok(()) => extras += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(
            err,
            GossipError::TooManyEntries {
                max: MAX_ENTRIES_PER_NODE
            }
        );
        assert_eq!(a.local_state().entry_count(), MAX_ENTRIES_PER_NODE);
    }

    #[test]
    fn invalid_configurations_are_refused() {
        for config in [
            Config {
                fanout: 0,
                ..Config::default()
            },
            Config {
                max_message_bytes: MIN_MESSAGE_BYTES - 1,
                ..Config::default()
            },
            Config {
                phi_threshold: f64::NAN,
                ..Config::default()
            },
            Config {
                gossip_interval: Duration::ZERO,
                ..Config::default()
            },
        ] {
            let result = Gossiper::new(config, local(1, 1), ChaCha8Rng::seed_from_u64(1));
            assert!(matches!(result, Err(GossipError::InvalidConfig(_))));
        }
    }

    #[test]
    fn a_silent_peer_goes_down_and_comes_back_up() {
        let mut a = node(1, 1, &[]);
        let mut b = node(2, 1, &[]);
        let mut now = T0;
        // Heartbeats of a reach b every second for a minute.
        for _ in 0..60 {
            a.handle_tick(now);
            a.drain_effects().for_each(drop);
            introduce(&mut a, &mut b, now);
            b.handle_tick(now);
            now += Duration::from_secs(1);
        }
        assert!(b.is_up(&a.id()));
        notes(&mut b);
        // Silence: b convicts a once, within ten seconds.
        let silent_from = now;
        while now < silent_from + Duration::from_secs(10) {
            b.handle_tick(now);
            now += Duration::from_millis(100);
        }
        let verdicts = notes(&mut b);
        assert_eq!(verdicts.len(), 1, "{verdicts:?}");
        assert!(
            matches!(verdicts[0], Notification::Down { node, phi } if node == a.id() && phi > 8.0)
        );
        assert_eq!(b.liveness(&a.id()), Some(Liveness::Down));
        // A newer heartbeat brings it back.
        a.handle_tick(now);
        a.drain_effects().for_each(drop);
        introduce(&mut a, &mut b, now);
        assert_eq!(notes(&mut b), [Notification::Up { node: a.id() }]);
    }

    #[test]
    fn the_same_seed_makes_the_same_choices() {
        let run = |seed: u64| {
            let config = Config {
                seeds: (2..6).map(|i| addr(i, 7000)).collect(),
                ..Config::default()
            };
            let mut g =
                Gossiper::new(config, local(1, 1), ChaCha8Rng::seed_from_u64(seed)).expect("valid");
            let mut targets = Vec::new();
            for r in 0..20 {
                g.handle_tick(Duration::from_secs(r));
                targets.extend(sends(&mut g).into_iter().map(|(to, _)| to));
            }
            targets
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
