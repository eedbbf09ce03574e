//! A deterministic in-memory network of gossipers driven in virtual time.
//!
//! Events (ticks and message deliveries) sit in one queue ordered by virtual
//! time and insertion; the network delays each message by a base latency plus
//! a uniformly drawn jitter, can drop messages at random or across a
//! partition, and can carry messages either as bytes through the real codec or
//! as values (with their exact encoded size counted), the latter for large
//! clusters in debug builds. Everything random draws from one seeded RNG, so a
//! seed replays the same run.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use chorus_gossip::{
    Config, Effect, Envelope, Generation, GossipError, Gossiper, LocalNode, NodeId, Notification,
    Target,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How the network behaves.
#[derive(Debug, Clone)]
pub struct Net {
    /// One-way base latency.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per message.
    pub jitter: Duration,
    /// Probability that a message is lost.
    pub drop_rate: f64,
    /// Carry messages as bytes through `Envelope::encode`/`decode`.
    pub encode: bool,
}

impl Default for Net {
    fn default() -> Self {
        Net {
            latency: Duration::from_millis(2),
            jitter: Duration::from_millis(3),
            drop_rate: 0.0,
            encode: true,
        }
    }
}

#[derive(Debug)]
enum Payload {
    Bytes(Vec<u8>),
    Value(Envelope),
}

#[derive(Debug)]
enum Kind {
    Tick { node: usize, epoch: u64 },
    Deliver { to: usize, payload: Payload },
}

#[derive(Debug)]
struct Event {
    at: Duration,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// One simulated process.
#[derive(Debug)]
pub struct SimNode {
    pub gossiper: Gossiper<ChaCha8Rng>,
    pub local: LocalNode,
    pub running: bool,
    pub paused_until: Duration,
    /// Bumped at every restart; ticks of an older process are ignored.
    epoch: u64,
}

/// The simulation.
#[derive(Debug)]
pub struct Sim {
    pub now: Duration,
    pub nodes: Vec<SimNode>,
    pub net: Net,
    pub config: Config,
    /// Tick period; `None` ticks each node when its gossiper asks.
    pub tick_every: Option<Duration>,
    /// Partition group of each node; messages between groups are dropped.
    pub groups: Option<Vec<u8>>,
    /// Whether to keep notifications (off for very large runs).
    pub record: bool,
    /// Every notification, with when and at which node.
    pub notifications: Vec<(Duration, usize, Notification)>,
    /// Every refused message, with when and at which node.
    pub errors: Vec<(Duration, usize, GossipError)>,
    /// Messages put on the network, and their bytes when they travel encoded.
    pub messages: u64,
    bytes: u64,
    /// Bytes sent by processes that were replaced by a restart.
    retired_bytes: u64,
    /// Envelopes sent by this node are copied here.
    pub tap: Option<usize>,
    pub tapped: Vec<Envelope>,
    by_id: BTreeMap<NodeId, usize>,
    by_addr: BTreeMap<SocketAddr, usize>,
    queue: BinaryHeap<Reverse<Event>>,
    seq: u64,
    seed: u64,
    rng: ChaCha8Rng,
}

pub fn quic_addr(i: usize) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 1),
        7000,
    ))
}

pub fn http_addr(i: usize) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 1),
        8080,
    ))
}

impl Sim {
    /// `n` nodes, the first `seeds` of them seeds, all started within the
    /// first gossip interval at random phases.
    pub fn new(seed: u64, n: usize, seeds: usize, config: Config, net: Net) -> Sim {
        let mut config = config;
        config.seeds = (0..seeds.min(n)).map(quic_addr).collect();
        let mut sim = Sim {
            now: Duration::ZERO,
            nodes: Vec::with_capacity(n),
            net,
            config,
            tick_every: None,
            groups: None,
            record: true,
            notifications: Vec::new(),
            errors: Vec::new(),
            messages: 0,
            bytes: 0,
            retired_bytes: 0,
            tap: None,
            tapped: Vec::new(),
            by_id: BTreeMap::new(),
            by_addr: BTreeMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
        };
        for _ in 0..n {
            let interval = sim.config.gossip_interval;
            let phase = Duration::from_micros(sim.rng.random_range(0..interval.as_micros() as u64));
            sim.add_node(phase);
        }
        sim
    }

    /// Starts a new node whose first tick is at `now + delay`. Returns its index.
    pub fn add_node(&mut self, delay: Duration) -> usize {
        let i = self.nodes.len();
        let id = NodeId::from_u128(self.rng.random::<u128>());
        let local = LocalNode {
            id,
            generation: Generation(1),
            quic_addr: quic_addr(i),
            http_addr: http_addr(i),
            zone: Some(format!("zone-{}", i % 3)),
        };
        let gossiper = Gossiper::new(self.config.clone(), local.clone(), self.node_rng(i, 1))
            .expect("valid config");
        self.by_id.insert(id, i);
        self.by_addr.insert(local.quic_addr, i);
        self.nodes.push(SimNode {
            gossiper,
            local,
            running: true,
            paused_until: Duration::ZERO,
            epoch: 0,
        });
        self.schedule(self.now + delay, Kind::Tick { node: i, epoch: 0 });
        i
    }

    fn node_rng(&self, i: usize, generation: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(
            self.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ generation << 48,
        )
    }

    pub fn id(&self, i: usize) -> NodeId {
        self.nodes[i].local.id
    }

    pub fn index(&self, id: &NodeId) -> usize {
        self.by_id[id]
    }

    fn schedule(&mut self, at: Duration, kind: Kind) {
        self.seq += 1;
        self.queue.push(Reverse(Event {
            at,
            seq: self.seq,
            kind,
        }));
    }

    /// The process stops: no more ticks, messages to it are lost.
    pub fn stop(&mut self, i: usize) {
        self.nodes[i].running = false;
    }

    /// The process stops and starts again at once with `generation` and
    /// (optionally) another HTTP address.
    pub fn restart(&mut self, i: usize, generation: u64, http: Option<SocketAddr>) {
        let node = &mut self.nodes[i];
        node.local.generation = Generation(generation);
        if let Some(http) = http {
            node.local.http_addr = http;
        }
        let local = node.local.clone();
        self.retired_bytes += node.gossiper.stats().bytes_sent;
        let rng = self.node_rng(i, generation);
        let node = &mut self.nodes[i];
        node.gossiper = Gossiper::new(self.config.clone(), local, rng).expect("valid config");
        node.running = true;
        node.epoch += 1;
        let epoch = node.epoch;
        self.schedule(self.now, Kind::Tick { node: i, epoch });
    }

    /// The process freezes (a GC pause) until `now + pause`: it neither ticks
    /// nor handles messages, which wait for it.
    pub fn pause(&mut self, i: usize, pause: Duration) {
        self.nodes[i].paused_until = self.now + pause;
    }

    /// Splits the cluster: node `i` is in group `groups[i]`.
    pub fn partition(&mut self, groups: Vec<u8>) {
        self.groups = Some(groups);
    }

    pub fn heal(&mut self) {
        self.groups = None;
    }

    /// Hands an envelope to node `to` now, as if it had just arrived.
    pub fn inject(&mut self, to: usize, envelope: Envelope) -> Result<(), GossipError> {
        let now = self.now;
        let result = if self.net.encode {
            let bytes = envelope
                .encode(self.config.max_message_bytes)
                .expect("encode");
            self.nodes[to].gossiper.handle_bytes(now, &bytes)
        } else {
            self.nodes[to]
                .gossiper
                .handle_message(now, envelope.sender(), envelope.message)
        };
        self.dispatch(to);
        result
    }

    /// Runs every event up to and including `until`.
    pub fn run_until(&mut self, until: Duration) {
        while let Some(Reverse(event)) = self.queue.peek() {
            if event.at > until {
                break;
            }
            let Some(Reverse(event)) = self.queue.pop() else {
                break;
            };
            self.now = event.at;
            self.handle(event);
        }
        self.now = until;
    }

    pub fn run_for(&mut self, span: Duration) {
        self.run_until(self.now + span);
    }

    fn handle(&mut self, event: Event) {
        match event.kind {
            Kind::Tick { node, epoch } => {
                let n = &mut self.nodes[node];
                if !n.running || n.epoch != epoch {
                    return;
                }
                if n.paused_until > self.now {
                    let at = n.paused_until;
                    self.schedule(at, Kind::Tick { node, epoch });
                    return;
                }
                n.gossiper.handle_tick(self.now);
                let next = match self.tick_every {
                    Some(period) => self.now + period,
                    None => n
                        .gossiper
                        .next_wakeup()
                        .max(self.now + Duration::from_millis(1)),
                };
                self.schedule(next, Kind::Tick { node, epoch });
                self.dispatch(node);
            }
            Kind::Deliver { to, payload } => {
                let n = &mut self.nodes[to];
                if !n.running {
                    return;
                }
                if n.paused_until > self.now {
                    let at = n.paused_until;
                    self.schedule(at, Kind::Deliver { to, payload });
                    return;
                }
                let result = match payload {
                    Payload::Bytes(bytes) => n.gossiper.handle_bytes(self.now, &bytes),
                    Payload::Value(env) => {
                        n.gossiper
                            .handle_message(self.now, env.sender(), env.message)
                    }
                };
                if let Err(e) = result {
                    self.errors.push((self.now, to, e));
                }
                self.dispatch(to);
            }
        }
    }

    fn dispatch(&mut self, from: usize) {
        let effects: Vec<Effect> = self.nodes[from].gossiper.drain_effects().collect();
        for effect in effects {
            match effect {
                Effect::Notify(note) => {
                    if self.record {
                        self.notifications.push((self.now, from, note));
                    }
                }
                Effect::Send { to, envelope } => {
                    let to = match to {
                        Target::Node(id) => self.by_id.get(&id).copied(),
                        Target::Seed(addr) => self.by_addr.get(&addr).copied(),
                    };
                    let Some(to) = to else { continue };
                    if self.tap == Some(from) {
                        self.tapped.push(envelope.clone());
                    }
                    let (payload, len) = if self.net.encode {
                        let bytes = envelope
                            .encode(self.config.max_message_bytes)
                            .expect("the gossiper builds messages within the limit");
                        let len = bytes.len();
                        (Payload::Bytes(bytes), len)
                    } else {
                        // Counted by the gossiper (`Stats::bytes_sent`), which
                        // checks the limit on the exact encoded size.
                        (Payload::Value(envelope), 0)
                    };
                    self.messages += 1;
                    self.bytes += len as u64;
                    if let Some(groups) = &self.groups {
                        if groups[from] != groups[to] {
                            continue;
                        }
                    }
                    if self.net.drop_rate > 0.0 && self.rng.random::<f64>() < self.net.drop_rate {
                        continue;
                    }
                    let jitter = self.net.jitter.as_micros() as u64;
                    let extra = if jitter == 0 {
                        0
                    } else {
                        self.rng.random_range(0..=jitter)
                    };
                    let at = self.now + self.net.latency + Duration::from_micros(extra);
                    self.schedule(at, Kind::Deliver { to, payload });
                }
            }
        }
    }

    /// Bytes put on the network so far.
    pub fn bytes(&self) -> u64 {
        if self.net.encode {
            self.bytes
        } else {
            let live: u64 = self
                .nodes
                .iter()
                .map(|n| n.gossiper.stats().bytes_sent)
                .sum();
            live + self.retired_bytes
        }
    }

    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].running)
    }

    /// Whether every running node knows every running node at its current
    /// generation, and nothing else that has not left.
    pub fn membership_converged(&self) -> bool {
        let running: Vec<usize> = self.running().collect();
        running.iter().all(|&i| {
            let g = &self.nodes[i].gossiper;
            let knows_all = running.iter().all(|&j| {
                j == i
                    || g.member(&self.id(j)).is_some_and(|m| {
                        m.state.generation() == self.nodes[j].gossiper.generation()
                    })
            });
            let active = g.members().filter(|m| !m.left).count();
            knows_all && active == running.len() - 1
        })
    }

    /// Cheap check for runs where nobody leaves: every running node has
    /// `n - 1` members.
    pub fn member_counts_complete(&self) -> bool {
        let n = self.nodes.len();
        self.nodes
            .iter()
            .all(|node| node.gossiper.member_count() == n - 1)
    }

    /// Whether every running node sees every other running node up.
    pub fn all_up(&self) -> bool {
        let running: Vec<usize> = self.running().collect();
        running.iter().all(|&i| {
            running
                .iter()
                .all(|&j| j == i || self.nodes[i].gossiper.is_up(&self.id(j)))
        })
    }

    /// Down verdicts about `node` reached at `at` or later, by observer.
    pub fn downs_of(&self, node: usize, since: Duration) -> BTreeMap<usize, Duration> {
        let id = self.id(node);
        let mut out = BTreeMap::new();
        for (at, observer, note) in &self.notifications {
            if let Notification::Down { node: n, .. } = note {
                if *n == id && *at >= since {
                    out.entry(*observer).or_insert(*at);
                }
            }
        }
        out
    }
}

/// log2 of `n`, and the convergence target `2·log2(n) + 5` rounds.
pub fn round_target(n: usize) -> (f64, u64) {
    let log2 = (n as f64).log2();
    (log2, (2.0 * log2 + 5.0).floor() as u64)
}

/// Runs a cold start of `n` nodes until every node knows every other, at most
/// `max_rounds` rounds. Returns the rounds needed (None if not converged),
/// and the simulation for further measurement.
pub fn cold_start(
    seed: u64,
    n: usize,
    config: Config,
    net: Net,
    max_rounds: u64,
) -> (Option<u64>, Sim) {
    let interval = config.gossip_interval;
    let mut sim = Sim::new(seed, n, 3, config, net);
    sim.tick_every = Some(interval);
    sim.record = n <= 200;
    for round in 1..=max_rounds {
        sim.run_until(interval * round as u32);
        if sim.member_counts_complete() {
            assert!(sim.membership_converged());
            return (Some(round), sim);
        }
    }
    (None, sim)
}
