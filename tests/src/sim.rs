//! A deterministic cluster simulator.
//!
//! Runs several [`Engine`]s over [`MemoryStore`]s in virtual time, connected
//! by a simulated network that drops a fraction of the frames and delays the
//! rest by a random amount. Everything random is drawn from one generator
//! seeded by [`SimConfig::seed`], and every ordering decision is made on
//! ordered collections, so one seed always gives the same run; the
//! [`Sim::trace_hash`] of a run proves it.
//!
//! Time only moves when [`Sim::step`] jumps to the next event: the earliest
//! frame due or the earliest engine wakeup. A run of minutes of cluster time
//! takes milliseconds.
//!
//! Faults: frame loss and delay ([`SimConfig`]), [`Sim::crash`] of a node
//! (its engine is dropped; its store, which commits in groups as a node's
//! does, either keeps everything the engine flushed, like a process killed
//! with a write-ahead log, or loses what was not synced, like a machine
//! crash), [`Sim::stop`] (a clean shutdown), [`Sim::restart`] with
//! a new generation, [`Sim::snapshot`] and [`Sim::restore`] of a node's store
//! (a backup, or a data directory put back), [`Sim::isolate`] to cut one
//! node off the network, [`Sim::slow_link`] to delay every frame on one link
//! by a fixed extra time (longer than a restart, so frames cross
//! incarnations), and [`Sim::skew_clock`] to set one node's wall clock ahead
//! or behind.
//!
//! More faults, for the [nemesis](crate::nemesis):
//!
//! * **Duplication and reordering.** [`SimConfig::duplicate`] delivers a
//!   fraction of the frames twice, the copy with its own random delay.
//!   Every frame draws its own delay, so frames on one link overtake each
//!   other whenever the delay range is wider than the gap between them
//!   ([`Sim::reordered`] counts it).
//! * **Partitions.** [`Sim::partition`] splits the nodes into groups,
//!   [`Sim::bridge`] splits them into two halves that both reach one middle
//!   node, [`Sim::block`] cuts one direction of one link, and
//!   [`Sim::heal`] removes every cut (and every [`Sim::isolate`]). A cut
//!   drops a frame when it is sent *and* when it arrives: a frame in flight
//!   when the cut is made is lost, as packets queued in a failed link or
//!   switch are; a frame sent before a heal and arriving after it is lost
//!   only if a cut stood when it was sent.
//! * **Process pause.** [`Sim::pause`] freezes a node as `SIGSTOP` does: it
//!   neither ticks nor handles frames or client requests; what reaches it
//!   waits in its receive buffer and is handled, in arrival order, on
//!   [`Sim::resume`]. Its clocks are not frozen: on resume it finds time
//!   jumped forward, like a process that was descheduled.
//! * **Clocks.** On top of [`Sim::skew_clock`], [`Sim::jump_clock`] moves a
//!   node's wall clock forward or back at once (an NTP step) and
//!   [`Sim::drift_clock`] makes it run fast or slow by parts per million.
//!   The monotonic clock is the simulation's own time for every node, so
//!   it never goes back and timers stay comparable.
//! * **BUGGIFY.** [`Sim::buggify`] turns on the fault sites inside one
//!   node's engine ([`chorus_node::buggify`]).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use chorus_node::api::{ReadRequest, RequestError, WriteReply, WriteRequest};
use chorus_node::core::RequestOptions;
use chorus_node::engine::{
    ClientId, ClientReply, ClientRequest, Effect, Engine, EngineConfig, Now,
};
use chorus_node::wire::{Frame, MAX_FRAME_BYTES};
use chorus_storage::context::CausalContext;
use chorus_storage::store::{KeyRef, MemoryStore, Store as _, StoreConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Wall-clock time at the start of every simulation (2026-01-01), in ms.
const WALL_EPOCH_MS: u64 = 1_767_225_600_000;

/// How a simulation runs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    pub seed: u64,
    /// Fraction of frames dropped, 0.0..1.0.
    pub loss: f64,
    /// Every frame is delayed by a uniform time in this range.
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Replicas of every key (N).
    pub replicas: usize,
    /// Partitions of the ring (P).
    pub partitions: u32,
    /// Adjusts every node's engine settings (limits, intervals) after the
    /// simulation filled in its own.
    pub tune_engine: fn(&mut EngineConfig),
    /// Fraction of frames delivered twice, 0.0..1.0; the copy draws its own
    /// delay. No randomness is drawn for it while it is 0.
    pub duplicate: f64,
    /// Shards every node's engine runs ([`EngineConfig::shards`]). The
    /// default is `CHORUS_SIM_SHARDS` when set, else 1, so a whole suite
    /// or a seed sweep can run with more.
    pub shards: usize,
}

/// The shards a simulation runs by default: `CHORUS_SIM_SHARDS`, else 1.
pub fn default_shards() -> usize {
    match std::env::var("CHORUS_SIM_SHARDS") {
        Ok(shards) => shards
            .parse()
            .expect("CHORUS_SIM_SHARDS is a number of shards"),
        Err(_) => 1,
    }
}

/// The default [`SimConfig::tune_engine`]: changes nothing.
fn keep_engine_config(_: &mut EngineConfig) {}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 5,
            seed: 1,
            loss: 0.0,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(10),
            replicas: 3,
            partitions: 64,
            tune_engine: keep_engine_config,
            duplicate: 0.0,
            shards: default_shards(),
        }
    }
}

#[derive(Debug)]
struct Node {
    addr: SocketAddr,
    engine: Option<Engine<MemoryStore>>,
    /// The store of a crashed node, kept for its restart.
    parked: Option<MemoryStore>,
    isolated: bool,
    /// Added to the simulation's wall clock for this node, in ms (skew and
    /// jumps, and the drift of earlier drift rates).
    clock_offset_ms: i64,
    /// How fast the wall clock runs off true time, in parts per million
    /// (positive: fast), since `drift_since`.
    drift_ppm: i64,
    drift_since: Duration,
    /// Paused ([`Sim::pause`]): neither ticks nor handles input.
    paused: bool,
    /// Frames that reached the node while it was paused, in arrival order.
    held_frames: Vec<(SocketAddr, Vec<u8>)>,
    /// Client requests made to the node while it was paused.
    held_requests: Vec<(ClientId, ClientRequest)>,
    /// BUGGIFY sites on in its engine.
    buggify: bool,
}

impl Node {
    fn new(addr: SocketAddr) -> Node {
        Node {
            addr,
            engine: None,
            parked: Some(MemoryStore::with_group_commit(StoreConfig::default())),
            isolated: false,
            clock_offset_ms: 0,
            drift_ppm: 0,
            drift_since: Duration::ZERO,
            paused: false,
            held_frames: Vec::new(),
            held_requests: Vec::new(),
            buggify: false,
        }
    }

    /// What drift added to the wall clock since `drift_since`, in ms.
    fn drift_ms(&self, now: Duration) -> i64 {
        let micros = now.saturating_sub(self.drift_since).as_micros() as i128;
        (micros * self.drift_ppm as i128 / 1_000_000_000) as i64
    }
}

#[derive(Debug)]
struct InFlight {
    from: SocketAddr,
    from_index: usize,
    to: usize,
    payload: Vec<u8>,
}

/// A simulated cluster. See the [module docs](self).
#[derive(Debug)]
pub struct Sim {
    config: SimConfig,
    now: Duration,
    rng: ChaCha8Rng,
    nodes: Vec<Node>,
    by_addr: BTreeMap<SocketAddr, usize>,
    network: BTreeMap<(Duration, u64), InFlight>,
    next_frame: u64,
    next_client: ClientId,
    replies: BTreeMap<ClientId, Result<ClientReply, RequestError>>,
    /// Extra delay of every frame from one node to another.
    slow_links: BTreeMap<(usize, usize), Duration>,
    /// Cut directions of links, `(from, to)`: frames are dropped.
    cuts: BTreeSet<(usize, usize)>,
    /// Per link, the send order of the latest frame delivered on it.
    last_delivered: BTreeMap<(usize, usize), u64>,
    /// Per link, the frames handed to the receiving engine.
    delivered_on: BTreeMap<(usize, usize), u64>,
    /// Data-plane frames (not gossip or ring exchange) sent to each node.
    data_frames_to: BTreeMap<usize, u64>,
    trace: std::collections::hash_map::DefaultHasher,
    /// Frames delivered, dropped by loss, dropped because the target was down.
    pub delivered: u64,
    pub lost: u64,
    pub undeliverable: u64,
    /// Connection resets the engines asked for (a peer restarted).
    pub connection_resets: u64,
    /// When nodes crashed losing their unsynced writes (power losses).
    power_losses: Vec<Duration>,
    /// Frames dropped by a cut ([`Sim::partition`], [`Sim::block`]), when
    /// sent or when they arrived.
    pub cut: u64,
    /// Extra copies of frames put on the network ([`SimConfig::duplicate`]).
    pub duplicated: u64,
    /// Frames delivered after a frame sent later on the same link.
    pub reordered: u64,
    /// Frames that waited in a paused node's receive buffer.
    pub held: u64,
}

impl Sim {
    /// Starts `config.nodes` nodes that know each other as seeds.
    pub fn new(config: SimConfig) -> Sim {
        let addrs: Vec<SocketAddr> = (0..config.nodes)
            .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8 + 1)), 7070))
            .collect();
        let mut sim = Sim {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            now: Duration::ZERO,
            nodes: Vec::new(),
            by_addr: addrs.iter().enumerate().map(|(i, a)| (*a, i)).collect(),
            network: BTreeMap::new(),
            next_frame: 0,
            next_client: 1,
            replies: BTreeMap::new(),
            slow_links: BTreeMap::new(),
            cuts: BTreeSet::new(),
            last_delivered: BTreeMap::new(),
            delivered_on: BTreeMap::new(),
            data_frames_to: BTreeMap::new(),
            trace: Default::default(),
            delivered: 0,
            lost: 0,
            undeliverable: 0,
            connection_resets: 0,
            power_losses: Vec::new(),
            cut: 0,
            duplicated: 0,
            reordered: 0,
            held: 0,
            config,
        };
        for addr in &addrs {
            sim.nodes.push(Node::new(*addr));
        }
        for i in 0..sim.nodes.len() {
            sim.boot(i);
        }
        sim
    }

    fn engine_config(&self, i: usize) -> EngineConfig {
        let mut config = EngineConfig {
            name: format!("node{}", i + 1),
            replicas: self.config.replicas,
            partitions: self.config.partitions,
            initial_members: self.config.nodes,
            shards: self.config.shards,
            ..EngineConfig::default()
        };
        config.gossip.seeds = self
            .nodes
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, n)| n.addr)
            .collect();
        (self.config.tune_engine)(&mut config);
        config.buggify = self.nodes[i].buggify;
        config
    }

    fn boot(&mut self, i: usize) {
        let store = self.nodes[i]
            .parked
            .take()
            .expect("a stopped node has its store");
        let seed = self.rng.random();
        let addr = self.nodes[i].addr;
        let http = SocketAddr::new(addr.ip(), 8080);
        let engine = Engine::start(
            self.engine_config(i),
            store,
            addr,
            http,
            self.now_at(i),
            seed,
        )
        .expect("a simulated node starts");
        self.nodes[i].engine = Some(engine);
        self.collect(i);
    }

    /// The current time as engines see it.
    pub fn now(&self) -> Now {
        Now {
            mono: self.now,
            wall_ms: WALL_EPOCH_MS + self.now.as_millis() as u64,
        }
    }

    /// The current time as node `i` sees it: its wall clock carries its
    /// offset ([`Sim::skew_clock`], [`Sim::jump_clock`],
    /// [`Sim::drift_clock`]).
    pub fn now_at(&self, i: usize) -> Now {
        let now = self.now();
        Now {
            mono: now.mono,
            wall_ms: now.wall_ms.saturating_add_signed(self.clock_offset_ms(i)),
        }
    }

    /// How far node `i`'s wall clock is ahead of (negative: behind) the
    /// simulation's, in ms, drift included.
    pub fn clock_offset_ms(&self, i: usize) -> i64 {
        let node = &self.nodes[i];
        node.clock_offset_ms + node.drift_ms(self.now)
    }

    /// Sets node `i`'s wall clock `offset_ms` ahead of (or, negative,
    /// behind) the others', replacing any earlier skew, jump or drift
    /// (a drift rate stays, counted from now). Its monotonic clock is
    /// unaffected.
    pub fn skew_clock(&mut self, i: usize, offset_ms: i64) {
        let now = self.now;
        let node = &mut self.nodes[i];
        node.clock_offset_ms = offset_ms;
        node.drift_since = now;
    }

    /// Moves node `i`'s wall clock by `delta_ms` at once, forward or
    /// (negative) back, as an NTP step or an operator's `date -s` does.
    /// Its monotonic clock is unaffected.
    pub fn jump_clock(&mut self, i: usize, delta_ms: i64) {
        self.nodes[i].clock_offset_ms += delta_ms;
    }

    /// Makes node `i`'s wall clock run `ppm` parts per million fast
    /// (negative: slow) from now on; 0 stops the drift, keeping the offset
    /// it built up. `ppm` must be above -1 000 000, so the clock still
    /// moves forward. Returns the ms the previous rate added since it was
    /// set.
    pub fn drift_clock(&mut self, i: usize, ppm: i64) -> i64 {
        assert!(ppm > -1_000_000, "a drifting clock still runs forward");
        let now = self.now;
        let node = &mut self.nodes[i];
        let built = node.drift_ms(now);
        node.clock_offset_ms += built;
        node.drift_since = now;
        node.drift_ppm = ppm;
        built
    }

    /// Turns the BUGGIFY fault sites of node `i`'s engine on or off, now
    /// and for its later starts.
    pub fn buggify(&mut self, i: usize, on: bool) {
        self.nodes[i].buggify = on;
        if let Some(engine) = self.nodes[i].engine.as_mut() {
            engine.set_buggify(on);
        }
    }

    /// Whether node `i`'s BUGGIFY sites are on.
    pub fn is_buggified(&self, i: usize) -> bool {
        self.nodes[i].buggify
    }

    /// Frames node `i`'s engine dropped, delayed or doubled on purpose at
    /// its BUGGIFY sites since it started.
    pub fn buggify_fired(&self, i: usize) -> u64 {
        self.nodes[i]
            .engine
            .as_ref()
            .map_or(0, |e| e.buggify_fired_total())
    }

    /// How many fault sites node `i`'s engine drew active (0 while it is
    /// down).
    pub fn buggify_active(&self, i: usize) -> usize {
        self.nodes[i]
            .engine
            .as_ref()
            .map_or(0, |e| e.buggify_active_total())
    }

    /// Delays every frame from node `from` to node `to` by `extra` on top
    /// of the usual delay (`Duration::ZERO` restores the link).
    pub fn slow_link(&mut self, from: usize, to: usize, extra: Duration) {
        if extra.is_zero() {
            self.slow_links.remove(&(from, to));
        } else {
            self.slow_links.insert((from, to), extra);
        }
    }

    /// Data-plane frames (reads, writes, hints, forwarded writes and their
    /// replies) sent to node `i` so far, delivered or not.
    pub fn data_frames_to(&self, i: usize) -> u64 {
        self.data_frames_to.get(&i).copied().unwrap_or(0)
    }

    /// The engine of node `i`, if it runs.
    pub fn engine(&self, i: usize) -> Option<&Engine<MemoryStore>> {
        self.nodes[i].engine.as_ref()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A hash of everything that happened: every frame delivered and every
    /// reply, with its time. Equal for two runs of one seed.
    pub fn trace_hash(&self) -> u64 {
        self.trace.finish()
    }

    /// Stops node `i`. With `lose_unsynced` its store loses every write not
    /// yet synced (a machine crash); otherwise it keeps what the engine
    /// flushed (a process crash).
    pub fn crash(&mut self, i: usize, lose_unsynced: bool) {
        let engine = self.nodes[i].engine.take().expect("the node runs");
        self.end_pause(i);
        let store = engine.into_store();
        if lose_unsynced {
            self.power_losses.push(self.now);
        }
        self.nodes[i].parked = Some(if lose_unsynced {
            store.crash()
        } else {
            store.restart()
        });
        // Frames already on their way to it are lost when they arrive.
    }

    /// When nodes crashed losing their unsynced writes, in simulated time.
    pub fn power_losses(&self) -> &[Duration] {
        &self.power_losses
    }

    /// Stops node `i` cleanly, as a graceful shutdown does: its store is
    /// synced and marked cleanly stopped, and kept for its restart.
    pub fn stop(&mut self, i: usize) {
        let mut engine = self.nodes[i].engine.take().expect("the node runs");
        self.end_pause(i);
        engine.stop().expect("the memory store stops");
        self.nodes[i].parked = Some(engine.into_store().restart());
    }

    /// A copy of node `i`'s store as a backup taken now would hold it (the
    /// node may be running or stopped).
    pub fn snapshot(&self, i: usize) -> MemoryStore {
        let node = &self.nodes[i];
        match (&node.engine, &node.parked) {
            (Some(engine), _) => engine.store().snapshot(),
            (None, Some(store)) => store.snapshot(),
            (None, None) => unreachable!("a node has a store, running or parked"),
        }
    }

    /// Puts `store` back as stopped node `i`'s store (a restore from a
    /// backup); [`Sim::restart`] starts the node on it.
    pub fn restore(&mut self, i: usize, store: MemoryStore) {
        assert!(self.nodes[i].engine.is_none(), "node {i} runs");
        self.nodes[i].parked = Some(store);
    }

    /// Adds a node with an empty store that knows every other node as a
    /// seed, and starts it. Returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8 + 1)), 7070);
        self.by_addr.insert(addr, i);
        self.nodes.push(Node::new(addr));
        self.boot(i);
        i
    }

    /// Node `i` announces that it leaves the cluster.
    pub fn leave(&mut self, i: usize) {
        let now = self.now_at(i);
        self.nodes[i]
            .engine
            .as_mut()
            .expect("the node runs")
            .leave(now);
        self.collect(i);
    }

    /// Starts a crashed node again, with a new generation.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].engine.is_none(), "node {i} runs");
        self.boot(i);
    }

    /// Cuts node `i` off the network, or reconnects it.
    pub fn isolate(&mut self, i: usize, isolated: bool) {
        self.nodes[i].isolated = isolated;
    }

    /// Splits the network into `groups`: frames between nodes of different
    /// groups are dropped, both ways. A node named in no group is cut off
    /// from every other node. Adds to the cuts already made.
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
        for a in 0..self.nodes.len() {
            for b in 0..self.nodes.len() {
                if a != b && (group_of(a).is_none() || group_of(a) != group_of(b)) {
                    self.cuts.insert((a, b));
                }
            }
        }
    }

    /// Splits the network into `left` and `right`, which cannot reach each
    /// other, while `middle` reaches both (a bridge partition: the middle
    /// node sees everyone, the halves do not see each other).
    pub fn bridge(&mut self, left: &[usize], middle: usize, right: &[usize]) {
        assert!(!left.contains(&middle) && !right.contains(&middle));
        for &a in left {
            for &b in right {
                self.cuts.insert((a, b));
                self.cuts.insert((b, a));
            }
        }
    }

    /// Cuts the link from node `from` to node `to` in that direction only:
    /// `to` still reaches `from`.
    pub fn block(&mut self, from: usize, to: usize) {
        self.cuts.insert((from, to));
    }

    /// Removes the cut [`Sim::block`] made from `from` to `to`.
    pub fn unblock(&mut self, from: usize, to: usize) {
        self.cuts.remove(&(from, to));
    }

    /// Removes every cut: partitions, bridges, one-way blocks and isolated
    /// nodes. Slow links stay ([`Sim::slow_link`]).
    pub fn heal(&mut self) {
        self.cuts.clear();
        for node in &mut self.nodes {
            node.isolated = false;
        }
    }

    /// Whether a frame from node `from` to node `to` would be dropped now.
    pub fn is_cut(&self, from: usize, to: usize) -> bool {
        self.nodes[from].isolated || self.nodes[to].isolated || self.cuts.contains(&(from, to))
    }

    /// Pauses node `i` (`SIGSTOP`): it neither ticks nor handles frames or
    /// client requests until [`Sim::resume`]; they wait for it.
    pub fn pause(&mut self, i: usize) {
        assert!(self.nodes[i].engine.is_some(), "node {i} runs");
        self.nodes[i].paused = true;
    }

    /// Resumes paused node `i` (`SIGCONT`): it handles the frames that
    /// reached it while paused, in arrival order, then the client requests
    /// made to it, and ticks at the next step (its timers see that time
    /// jumped).
    pub fn resume(&mut self, i: usize) {
        assert!(self.nodes[i].paused, "node {i} is paused");
        self.nodes[i].paused = false;
        let frames = std::mem::take(&mut self.nodes[i].held_frames);
        let requests = std::mem::take(&mut self.nodes[i].held_requests);
        for (from, payload) in frames {
            self.deliver(from, i, &payload);
        }

        for (client, request) in requests {
            let now = self.now_at(i);
            let engine = self.nodes[i].engine.as_mut().expect("the node runs");
            engine.handle_client(now, client, request);
            self.collect(i);
        }
    }

    /// Whether node `i` is paused.
    pub fn is_paused(&self, i: usize) -> bool {
        self.nodes[i].paused
    }

    /// Whether node `i` runs (paused or not).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].engine.is_some()
    }

    /// Changes the fraction of frames lost from now on.
    pub fn set_loss(&mut self, loss: f64) {
        assert!((0.0..1.0).contains(&loss));
        self.config.loss = loss;
    }

    /// Changes the fraction of frames duplicated from now on.
    pub fn set_duplicate(&mut self, duplicate: f64) {
        assert!((0.0..1.0).contains(&duplicate));
        self.config.duplicate = duplicate;
    }

    /// The configuration the simulation runs with (loss and duplication as
    /// changed since).
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// A node that stops loses what was waiting in its receive buffer while
    /// it was paused, as a process's socket buffers die with it.
    fn end_pause(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.paused = false;
        self.undeliverable += node.held_frames.len() as u64;
        node.held_frames.clear();
        node.held_requests.clear();
    }

    /// Frames from node `from` handed to node `to`'s engine so far.
    pub fn delivered_between(&self, from: usize, to: usize) -> u64 {
        self.delivered_on.get(&(from, to)).copied().unwrap_or(0)
    }

    /// Hands a frame to node `to`'s engine.
    fn deliver(&mut self, from: SocketAddr, to: usize, payload: &[u8]) {
        if let Some(&i) = self.by_addr.get(&from) {
            *self.delivered_on.entry((i, to)).or_default() += 1;
        }
        let now = self.now_at(to);
        let engine = self.nodes[to].engine.as_mut().expect("the node runs");
        self.delivered += 1;
        (to, payload.len(), self.now).hash(&mut self.trace);
        let _ = engine.handle_frame(now, from, payload);
        self.collect(to);
    }

    /// Moves time to the next event and handles it. Returns false when
    /// nothing is left to happen (no node runs).
    pub fn step(&mut self) -> bool {
        let wakeup = self
            .nodes
            .iter()
            .filter(|n| !n.paused)
            .filter_map(|n| n.engine.as_ref().map(Engine::next_wakeup))
            .min();
        let frame = self.network.first_key_value().map(|(&(at, _), _)| at);
        let next = match (wakeup, frame) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => return false,
        };
        self.now = self.now.max(next);
        // Frames due now, in order.
        while let Some(entry) = self.network.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let seq = entry.key().1;
            let InFlight {
                from,
                from_index,
                to,
                payload,
            } = entry.remove();
            let node = &self.nodes[to];
            if node.engine.is_none() || node.isolated {
                self.undeliverable += 1;
                continue;
            }
            if self.cuts.contains(&(from_index, to)) {
                self.cut += 1;
                continue;
            }
            let last = self.last_delivered.entry((from_index, to)).or_default();
            if *last > seq {
                self.reordered += 1;
            } else {
                *last = seq;
            }
            if node.paused {
                self.held += 1;
                self.nodes[to].held_frames.push((from, payload));
                continue;
            }
            self.deliver(from, to, &payload);
        }
        for i in 0..self.nodes.len() {
            let now = self.now_at(i);
            if self.nodes[i].paused {
                continue;
            }
            if let Some(engine) = self.nodes[i].engine.as_mut() {
                if engine.next_wakeup() <= now.mono {
                    engine.handle_tick(now);
                    self.collect(i);
                }
            }
        }
        true
    }

    /// Carries out node `i`'s effects.
    fn collect(&mut self, i: usize) {
        let mut sends = Vec::new();
        if let Some(engine) = self.nodes[i].engine.as_mut() {
            while let Some(effect) = engine.poll_effect() {
                match effect {
                    Effect::Send { addr, message, .. } | Effect::SendToSeed { addr, message } => {
                        sends.push((addr, engine.frame(message).encode()))
                    }
                    // The simulated network has no connections to reset.
                    Effect::ResetConnection { .. } => self.connection_resets += 1,
                    Effect::Reply { client, result } => {
                        (client, result.is_ok(), self.now).hash(&mut self.trace);
                        let previous = self.replies.insert(client, result);
                        assert!(previous.is_none(), "client {client} answered twice");
                    }
                }
            }
        }
        for (addr, mut payload) in sends {
            let Some(&to) = self.by_addr.get(&addr) else {
                self.undeliverable += 1;
                continue;
            };
            if Frame::decode(&payload, MAX_FRAME_BYTES).is_ok_and(|f| f.message.is_data_plane()) {
                *self.data_frames_to.entry(to).or_default() += 1;
            }
            if self.cuts.contains(&(i, to)) {
                self.cut += 1;
                continue;
            }
            if self.nodes[i].isolated || self.rng.random_bool(self.config.loss) {
                self.lost += 1;
                continue;
            }
            let copies =
                if self.config.duplicate > 0.0 && self.rng.random_bool(self.config.duplicate) {
                    self.duplicated += 1;
                    2
                } else {
                    1
                };
            for copy in 0..copies {
                let spread = self.config.max_delay.saturating_sub(self.config.min_delay);
                let extra = self.slow_links.get(&(i, to)).copied().unwrap_or_default();
                let delay =
                    self.config.min_delay + spread.mul_f64(self.rng.random::<f64>()) + extra;
                self.network.insert(
                    (self.now + delay, self.next_frame),
                    InFlight {
                        from: self.nodes[i].addr,
                        from_index: i,
                        to,
                        payload: if copy + 1 < copies {
                            payload.clone()
                        } else {
                            std::mem::take(&mut payload)
                        },
                    },
                );
                self.next_frame += 1;
            }
        }
    }

    /// Runs for `duration` of cluster time.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        while self.now < until {
            if !self.step() {
                self.now = until;
                break;
            }
        }
    }

    /// Runs until `done` holds, checking after every step; panics after
    /// `limit` of cluster time.
    pub fn run_until(&mut self, limit: Duration, what: &str, mut done: impl FnMut(&Sim) -> bool) {
        let until = self.now + limit;
        while !done(self) {
            assert!(self.now < until, "{what}: not reached within {limit:?}");
            if !self.step() {
                panic!("{what}: nothing left to happen");
            }
        }
    }

    /// Runs until every running node holds the same ring and sees every
    /// other running node up.
    pub fn await_stable(&mut self, limit: Duration) {
        self.run_until(limit, "a stable cluster", |sim| sim.is_stable());
    }

    /// Whether every running node holds the same ring, sees every other
    /// running node up, and is ready to serve (it sees no live member with
    /// another ring).
    pub fn is_stable(&self) -> bool {
        let running: Vec<(usize, &Engine<MemoryStore>)> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.engine.as_ref().map(|e| (i, e)))
            .collect();
        let hashes: BTreeSet<Option<u64>> = running
            .iter()
            .map(|(_, e)| e.ring().map(|r| r.hash().0))
            .collect();
        if hashes.len() != 1 || hashes.contains(&None) {
            return false;
        }
        running
            .iter()
            .all(|(_, a)| a.is_ready() && running.iter().all(|(_, b)| a.is_up(b.id())))
    }

    /// Whether node `observer` sees node `node` up.
    pub fn sees_up(&self, observer: usize, node: usize) -> bool {
        let id = match &self.nodes[node].engine {
            Some(engine) => engine.id(),
            None => return false,
        };
        self.nodes[observer]
            .engine
            .as_ref()
            .is_some_and(|e| e.is_up(id))
    }

    /// The id node `i` has (it keeps it across restarts).
    pub fn node_id(&self, i: usize) -> Option<uuid::Uuid> {
        self.nodes[i].engine.as_ref().map(Engine::id)
    }

    /// The indices of the nodes that are primaries of `key` (bucket `sim`)
    /// in the ring of the first running node, in preference order.
    pub fn primaries(&self, key: &str) -> Vec<usize> {
        let ring = self
            .nodes
            .iter()
            .find_map(|n| n.engine.as_ref().and_then(Engine::ring))
            .expect("a running node holds a ring");
        let list = ring.preference_list_for_key(b"sim", key.as_bytes());
        list.primaries()
            .iter()
            .map(|id| {
                (0..self.nodes.len())
                    .find(|&i| self.node_id(i) == Some(*id))
                    .expect("primaries are running nodes")
            })
            .collect()
    }

    /// Whether node `i`'s own store holds a live value of `key` (bucket
    /// `sim`), without asking the cluster.
    pub fn holds(&self, i: usize, key: &str) -> bool {
        let engine = self.nodes[i].engine.as_ref().expect("the node runs");
        let Some(ring) = engine.ring() else {
            return false;
        };
        let partition = ring.partition_of(b"sim", key.as_bytes());
        engine
            .store()
            .get(KeyRef::new(partition, b"sim", key.as_bytes()))
            .expect("the memory store reads")
            .is_some_and(|object| !object.is_deleted())
    }

    /// Sends a client request to node `i`; the answer arrives later, see
    /// [`Sim::reply`] and [`Sim::await_reply`].
    pub fn request(&mut self, i: usize, request: ClientRequest) -> ClientId {
        let client = self.next_client;
        self.next_client += 1;
        if self.nodes[i].paused {
            self.nodes[i].held_requests.push((client, request));
            return client;
        }
        let now = self.now_at(i);
        let engine = self.nodes[i].engine.as_mut().expect("the node runs");
        engine.handle_client(now, client, request);
        self.collect(i);
        client
    }

    /// A put (or, with `value: None`, a delete) through node `i`.
    pub fn put(
        &mut self,
        i: usize,
        key: &str,
        value: Option<&str>,
        context: Option<CausalContext>,
        options: &[(&str, &str)],
    ) -> ClientId {
        let options = RequestOptions::parse(options.iter().copied()).expect("valid options");
        self.request(
            i,
            ClientRequest::Put(WriteRequest {
                bucket: b"sim".to_vec(),
                key: key.as_bytes().to_vec(),
                value: value.map(|v| v.as_bytes().to_vec()),
                content_type: None,
                context,
                options,
            }),
        )
    }

    /// A get through node `i`.
    pub fn get(&mut self, i: usize, key: &str, options: &[(&str, &str)]) -> ClientId {
        let options = RequestOptions::parse(options.iter().copied()).expect("valid options");
        self.request(
            i,
            ClientRequest::Get(ReadRequest {
                bucket: b"sim".to_vec(),
                key: key.as_bytes().to_vec(),
                options,
            }),
        )
    }

    /// The answer to a request, once it arrived.
    pub fn reply(&mut self, client: ClientId) -> Option<Result<ClientReply, RequestError>> {
        self.replies.remove(&client)
    }

    /// Runs until the request is answered (panics after two minutes of
    /// cluster time) and returns the answer.
    pub fn await_reply(&mut self, client: ClientId) -> Result<ClientReply, RequestError> {
        self.run_until(Duration::from_secs(120), "a reply", |sim| {
            sim.replies.contains_key(&client)
        });
        self.replies.remove(&client).expect("checked above")
    }

    /// The live values of a read reply (or of a write's `returnbody`), sorted.
    pub fn values(reply: &ClientReply) -> Vec<String> {
        let object = match reply {
            ClientReply::Read(read) => &read.object,
            ClientReply::Write(WriteReply::Written {
                object: Some(object),
                ..
            }) => object,
            ClientReply::Write(_) => panic!("a write reply without a body has no values"),
        };
        let mut values: Vec<String> = object
            .live()
            .map(|s| String::from_utf8_lossy(s.value.as_deref().unwrap_or_default()).into_owned())
            .collect();
        values.sort();
        values
    }

    /// The causal context of a reply.
    pub fn context(reply: &ClientReply) -> CausalContext {
        match reply {
            ClientReply::Read(read) => read.object.context().clone(),
            ClientReply::Write(write) => write.context(),
        }
    }

    /// Hints queued over all running nodes.
    pub fn pending_hints(&self) -> usize {
        self.nodes
            .iter()
            .filter_map(|n| n.engine.as_ref())
            .map(|e| {
                e.pending_hints()
                    .expect("memory store")
                    .iter()
                    .map(|(_, n)| n)
                    .sum::<usize>()
            })
            .sum()
    }

    /// A random number from the simulation's generator (for workloads).
    pub fn random_below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }
}
