//! Membership and the ring, as a type of its own: [`Membership`] owns the
//! bridge to the gossiper, the address book (gossiped addresses and the
//! sources of frames from nodes gossip does not know yet), peer generations
//! and restarts, the claimant that builds and changes the ring, ring fetch,
//! refusal and adoption, an identity shared with another live process, and
//! the [`ClusterView`] it publishes, with parts of its own (`Parts`: its
//! effects, generator, fault sites and counters).
//!
//! It knows nothing of the router or the shards. The router hands it the
//! node's ticks, the frames of the membership plane (gossip, ring fetch and
//! push), every peer frame's source and generation, and the facts the
//! shards report ([`Facts`]). What it learns that the shards must act on —
//! a node convicted, a node restarted, hints that may go now — it records
//! as [`ShardInput`]s, in the order it learnt them, and the router passes
//! them on after each call ([`Membership::next_for_shards`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use std::collections::VecDeque;
use std::time::Duration;

use chorus_gossip::{
    Effect as GossipEffect, Gossiper, Liveness, LocalNode, Notification, RingClaim, StateKey,
    StateValue, Status, Target as GossipTarget,
};
use chorus_ring::{Member, PartitionId, Ring};
use chorus_storage::store::Store;
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

use super::io::{Effect, EngineError, EngineStats, IdentityConflict, Now};
use super::parts::Parts;
use super::requests::RETRY_AFTER;
use super::view::{ClusterView, Facts, ShardInput};
use crate::buggify::Site;
use crate::wire::Message;

/// Gossip extra entry carrying the wall-clock milliseconds at which this
/// incarnation started; tells the older of two processes sharing an id.
pub(super) const STARTED_EXTRA: &str = "started";

/// Gossip extra entry announcing that a node holds data.
pub(super) const HOLDS_DATA_EXTRA: &str = "holds_data";

/// Gossip extra entry naming a ring this node refused to adopt, as
/// `<version>:<hash in hex>`.
pub(super) const RING_REFUSED_EXTRA: &str = "ring_refused";

/// Gossip extra entry carrying the node's name.
pub(super) const NAME_EXTRA: &str = "name";

/// Most source addresses remembered for nodes gossip does not know yet.
pub(super) const MAX_SOURCES: usize = 1024;

/// Most peers whose newest generation is remembered.
pub(super) const MAX_PEER_GENERATIONS: usize = 4096;

/// One node's membership: its identity and generation, the gossiper, the
/// ring, the address book, peer generations, the claimant's state and ring
/// fetch, and the view it publishes for the request side. It owns its
/// parts (`Parts`): the effects it emits (gossip, the ring exchange,
/// connection resets), its generator and fault sites, and the node's frame
/// counters. `S` is the node's store, reached through the parts only.
#[derive(Debug)]
pub(super) struct Membership<S> {
    /// This node's id.
    pub(super) id: Uuid,
    /// The generation this node runs at: what its frames carry. Raised
    /// when peers hold a newer incarnation of it.
    pub(super) generation: u64,
    /// The gossiper, with its own generator.
    pub(super) gossip: Gossiper<ChaCha8Rng>,
    /// The ring this node holds.
    pub(super) ring: Option<Arc<Ring>>,
    /// This node holds data (persisted and gossiped once set).
    holds_data: bool,
    /// What the request side reads of membership; rebuilt by membership.
    pub(super) view: ClusterView,
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
    /// When ring agreement and the claimant's duty are next checked
    /// (monotonic time).
    next_ring_check: Duration,
    /// A ring fetch was sent and neither answered nor given up.
    ring_fetch_in_flight: bool,
    /// When the ring fetch in flight, if any, is given up.
    ring_fetch_due: Option<Duration>,
    /// Source addresses of nodes gossip does not know yet.
    sources: BTreeMap<Uuid, SocketAddr>,
    /// Wall-clock milliseconds at which this incarnation started.
    started_ms: u64,
    /// The generation the data directory held at start: the last run it
    /// knows of. A peer that held a later one shows the directory is stale.
    directory_generation: u64,
    /// Set when another live process was found running with this id.
    pub(super) conflict: Option<IdentityConflict>,
    /// The last incarnation at another address that superseded this one:
    /// its start time (wall ms) and address.
    superseded_by: Option<(u64, SocketAddr)>,
    /// While a gossip frame is handled: its sender and the address it came
    /// from, where gossip's answers to it go (two processes sharing an id
    /// each get their own answers).
    reply_route: Option<(Uuid, SocketAddr)>,
    /// What membership learnt that every shard must act on — a node
    /// convicted ([`ShardInput::Convicted`]) or restarted
    /// ([`ShardInput::Restarted`]), hints that may go now
    /// ([`ShardInput::HintRoundNow`]) — in the order it learnt it, until
    /// the router takes it ([`Membership::next_for_shards`]).
    for_shards: VecDeque<ShardInput>,
    /// Membership's own parts.
    pub(super) parts: Parts<S>,
}

impl<S: Store> Membership<S> {
    /// Membership of a node starting as `local`, on `parts`: begins
    /// gossiping with `gossip_rng` (publishing the node's name and this
    /// incarnation's start time), takes up what the store held — that the
    /// node `holds_data`, the `ring` it held — and builds the first view.
    /// `previous` is the generation the data directory held at start (0
    /// for a new one).
    pub(super) fn start(
        parts: Parts<S>,
        local: LocalNode,
        gossip_rng: ChaCha8Rng,
        previous: u64,
        ring: Option<Ring>,
        holds_data: bool,
        now: Now,
    ) -> Result<Membership<S>, EngineError> {
        let id = local.id;
        let generation = local.generation.0;
        let mut gossip = Gossiper::new(parts.config.gossip.clone(), local, gossip_rng)?;
        gossip.set_state(
            StateKey::Extra(NAME_EXTRA.into()),
            StateValue::Text(parts.config.name.clone()),
        )?;
        gossip.set_state(
            StateKey::Extra(STARTED_EXTRA.into()),
            StateValue::Text(now.wall_ms.to_string()),
        )?;
        let mut membership = Membership {
            id,
            generation,
            gossip,
            ring: None,
            holds_data: false,
            view: ClusterView::default(),
            deferred: BTreeSet::new(),
            previous_ring: None,
            refused_ring: None,
            peer_generations: BTreeMap::new(),
            next_ring_check: now.mono,
            ring_fetch_in_flight: false,
            ring_fetch_due: None,
            sources: BTreeMap::new(),
            started_ms: now.wall_ms,
            directory_generation: previous,
            conflict: None,
            superseded_by: None,
            reply_route: None,
            for_shards: VecDeque::new(),
            parts,
        };
        if holds_data {
            membership.mark_holds_data();
        }
        if let Some(ring) = ring {
            membership.install_ring(ring, false);
        }
        membership.refresh_view();
        Ok(membership)
    }

    /// The next input every shard must act on, in the order membership
    /// learnt them; the router takes them all after each call into
    /// membership.
    pub(super) fn next_for_shards(&mut self) -> Option<ShardInput> {
        self.for_shards.pop_front()
    }

    // ----- inputs -----

    /// Time passed, first half: runs gossip rounds and failure detection
    /// and acts on what gossip found.
    pub(super) fn tick_gossip(&mut self, now: Now) {
        self.gossip.handle_tick(now.mono);
        self.drain_gossip(now);
    }

    /// Time passed, second half: gives up a ring fetch that is overdue and,
    /// every `ring_interval` of the configuration (at once when a peer's
    /// ring claim changed), keeps the ring in agreement
    /// ([`Membership::check_ring`]).
    pub(super) fn tick_ring(&mut self, now: Now) {
        if self.ring_fetch_due.is_some_and(|due| due <= now.mono) {
            self.ring_fetch_due = None;
            self.ring_fetch_in_flight = false;
        }
        if now.mono >= self.next_ring_check {
            self.next_ring_check = now.mono + self.parts.config.ring_interval;
            self.check_ring(now);
        }
    }

    /// Checks a frame `from` another node, which came from `source`,
    /// before anything handles it: remembers where the node's frames come
    /// from and the `generation` the frame carries. Returns false for a
    /// data-plane frame (`data_plane`) from an older incarnation than the
    /// newest this node knows, which is counted and must be dropped.
    pub(super) fn check_frame(
        &mut self,
        from: Uuid,
        source: SocketAddr,
        generation: u64,
        data_plane: bool,
    ) -> bool {
        self.remember_source(from, source);
        if !self.learn_generation(from, generation) && data_plane {
            self.parts.stats.frames_stale += 1;
            tracing::debug!(%from, generation, "dropped a frame from an older incarnation");
            return false;
        }
        true
    }

    /// The peers whose frames [`Membership::check_frame`] passes without
    /// changing anything, with the generation those frames carry: gossip
    /// members (so their source need not be remembered) whose frames last
    /// carried a generation no older than the one gossip reports (so it is
    /// the newest this node knows). See [`DirectRoutes`](super::DirectRoutes).
    pub(super) fn settled_peers(&self) -> BTreeMap<Uuid, u64> {
        self.peer_generations
            .iter()
            .filter(|&(node, &generation)| {
                *node != self.id
                    && !self.sources.contains_key(node)
                    && self
                        .gossip
                        .member(node)
                        .is_some_and(|m| m.state.generation().0 <= generation)
            })
            .map(|(&node, &generation)| (node, generation))
            .collect()
    }

    /// A gossip message, `bytes`, from `from` (this node or another), which
    /// came from `source`: gossip's answers go back there.
    pub(super) fn on_gossip(&mut self, now: Now, from: Uuid, source: SocketAddr, bytes: &[u8]) {
        if let Err(e) = self.gossip.handle_bytes(now.mono, bytes) {
            tracing::debug!(%from, error = %e, "gossip message refused");
        }
        self.reply_route = (from != self.id).then_some((from, source));
        self.drain_gossip(now);
        self.reply_route = None;
    }

    /// `from` asks for the ring of `version` or newer: it is pushed when
    /// this node holds one.
    pub(super) fn on_ring_fetch(&mut self, from: Uuid, version: u64) {
        if let Some(ring) = self.ring.as_deref() {
            if ring.version() >= version && !self.parts.buggify.fires(Site::RingPushDropped) {
                let bytes = rmp_serde::to_vec(ring).expect("a ring always encodes");
                self.send(from, Message::RingPush { ring: bytes });
            }
        }
    }

    /// `from` pushed a ring, encoded as `ring`: the fetch in flight ends,
    /// and the ring is adopted if it is better and moves no data away
    /// ([`Membership::offer_ring`]).
    pub(super) fn on_ring_push(&mut self, from: Uuid, ring: &[u8]) {
        self.ring_fetch_in_flight = false;
        match rmp_serde::from_slice::<Ring>(ring) {
            Ok(ring) => self.offer_ring(ring),
            Err(e) => tracing::warn!(%from, error = %e, "refused a malformed ring"),
        }
    }

    /// Announces that this node leaves the cluster for good (status `left`
    /// in gossip).
    pub(super) fn leave(&mut self, now: Now) {
        self.gossip.begin_leave();
        self.gossip.complete_leave();
        self.drain_gossip(now);
    }

    // ----- what it reports -----

    /// Whether the node can serve client requests: it holds a ring and
    /// every live member that holds a ring holds the same one, it runs with
    /// an identity no other live process has, its store has not failed,
    /// and — in a cluster of more than one member — it sees at least one
    /// live peer.
    pub(super) fn is_ready(&self) -> bool {
        self.ring_agreed()
            && self.conflict.is_none()
            && self.parts.storage_failure().is_none()
            && (self.parts.config.initial_members <= 1
                || self
                    .gossip
                    .members()
                    .any(|m| !m.left && m.liveness == Liveness::Up))
    }

    /// Membership's counters and gauges; a ring fetch in flight counts as a
    /// pending request.
    pub(super) fn stats(&self) -> EngineStats {
        let mut stats = self.parts.stats;
        stats.pending_requests += usize::from(self.ring_fetch_due.is_some());
        stats
    }

    /// The latest monotonic time by which membership must be ticked: the
    /// gossiper's next round, the next ring check, a ring fetch's deadline.
    pub(super) fn next_wakeup(&self) -> Duration {
        let mut next = self.gossip.next_wakeup().min(self.next_ring_check);
        if let Some(due) = self.ring_fetch_due {
            next = next.min(due);
        }
        next
    }

    // ----- membership proper -----

    /// Whether this node holds a ring and no live member holds another.
    pub(super) fn ring_agreed(&self) -> bool {
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
    pub(super) fn is_up(&self, node: Uuid) -> bool {
        node == self.id || (self.gossip.is_up(&node) && !self.has_left(node))
    }

    /// Whether gossip says `node` left the cluster.
    pub(super) fn has_left(&self, node: Uuid) -> bool {
        self.gossip
            .member(&node)
            .is_some_and(|m| m.left || m.state.status() == Some(Status::Left))
    }

    /// Carries out what the gossiper asks for: its messages become
    /// effects (to the address of the frame being answered, if any), and
    /// its notifications are acted on; then checks the data directory's
    /// generation and rebuilds the view.
    pub(super) fn drain_gossip(&mut self, now: Now) {
        while let Some(effect) = self.gossip.poll_effect() {
            match effect {
                GossipEffect::Send { to, envelope } => {
                    if self.parts.buggify.fires(Site::GossipFrameDropped) {
                        continue;
                    }
                    let bytes = match envelope.encode(self.gossip.config().max_message_bytes) {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            tracing::warn!(error = %e, "gossip message not sent");
                            continue;
                        }
                    };
                    let message = Message::Gossip(bytes);
                    let effect = match to {
                        GossipTarget::Seed(addr) => Effect::SendToSeed { addr, message },
                        GossipTarget::Node(node) => {
                            let addr = match self.reply_route {
                                Some((sender, source)) if sender == node => Some(source),
                                _ => self.address_of(node),
                            };
                            let Some(addr) = addr else { continue };
                            Effect::Send {
                                to: node,
                                addr,
                                message,
                            }
                        }
                    };
                    self.parts.effects.push_back(effect);
                }
                GossipEffect::Notify(notification) => self.on_notification(now, notification),
            }
        }
        self.check_directory_generation();
        self.refresh_view();
    }

    /// A peer held a run of this node (a generation) that its data
    /// directory never recorded: the directory was restored or copied from
    /// an older state and may lack versions this node minted or
    /// acknowledged in that run, so a new epoch begins (once).
    pub(super) fn check_directory_generation(&mut self) {
        let Some(held) = self.gossip.older_self_held() else {
            return;
        };
        if held.0 <= self.directory_generation {
            return;
        }
        let held = held.0;
        // Checked once per directory generation.
        self.directory_generation = held;
        if let Err(e) = self.parts.begin_epoch(&format!(
            "peers held generation {held} of this node, a run its data directory does not know: it was restored or copied"
        )) {
            tracing::error!(error = %e, "could not begin a new epoch");
        }
    }

    /// Acts on what gossip noticed: a node up, down, joined, restarted or
    /// gone, this node superseded, a peer's state changed. What the shards
    /// must act on is recorded for them.
    pub(super) fn on_notification(&mut self, now: Now, notification: Notification) {
        match notification {
            Notification::Up { node } => {
                tracing::info!(%node, "node up");
                // Offer hints at once rather than at the next round.
                self.for_shards.push_back(ShardInput::HintRoundNow);
            }
            Notification::Down { node, phi } => {
                tracing::warn!(%node, phi, "node down");
                self.for_shards.push_back(ShardInput::Convicted(node));
            }
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
                self.for_shards.push_back(ShardInput::HintRoundNow);
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

    /// Where messages to `node` go: the address it gossips, or the source
    /// of its frames while gossip does not know it.
    pub(super) fn address_of(&self, node: Uuid) -> Option<SocketAddr> {
        self.gossip
            .member(&node)
            .and_then(|m| m.state.quic_addr())
            .or_else(|| self.sources.get(&node).copied())
    }

    /// Remembers where a node's frames come from, for nodes gossip does not
    /// know yet. Bounded: the oldest-inserted entry goes first.
    pub(super) fn remember_source(&mut self, node: Uuid, source: SocketAddr) {
        if self.gossip.member(&node).is_some() {
            if self.sources.remove(&node).is_some() {
                self.refresh_view();
            }
            return;
        }
        if self.sources.get(&node) == Some(&source) {
            return;
        }
        if !self.sources.contains_key(&node) && self.sources.len() >= MAX_SOURCES {
            if let Some(&oldest) = self.sources.keys().next() {
                self.sources.remove(&oldest);
            }
        }
        self.sources.insert(node, source);
        self.refresh_view();
    }

    /// The version and hash of the ring `node` holds: this node's own, or
    /// what a peer gossips.
    pub(super) fn ring_claim_of(&self, node: Uuid) -> Option<RingClaim> {
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
    pub(super) fn check_ring(&mut self, now: Now) {
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
                    self.ring_fetch_due = Some(self.parts.deadline(now, RETRY_AFTER));
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
        match self.ring.as_deref() {
            None => {
                if candidates.len() < self.parts.config.initial_members {
                    return;
                }
                match Ring::initial(
                    &candidates,
                    self.parts.config.partitions,
                    self.parts.config.replicas,
                ) {
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
    pub(super) fn candidate_members(&self) -> Vec<Member> {
        let mut members = vec![Member::new(
            self.id,
            self.parts.config.zone.clone(),
            self.parts.config.weight,
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
            members.push(Member::new(member.id, zone, self.parts.config.weight));
        }
        members.sort_by_key(|m| m.id);
        members
    }

    /// The next ring's members: the current ones that did not leave (down
    /// members stay: removal is an operator's decision) plus the live
    /// candidates.
    pub(super) fn wanted_members(&self, ring: &Ring, candidates: &[Member]) -> Vec<Member> {
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

    /// Data was written to this node's store (a fact the request side
    /// reports): persists and gossips that it holds data, once.
    pub(super) fn mark_holds_data(&mut self) {
        if self.holds_data {
            return;
        }
        if let Err(e) = self.parts.persist_holds_data() {
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

    /// Rebuilds the [`ClusterView`] the request side reads from the
    /// gossiper, the ring and the address book; bumps its version when
    /// anything in it changed.
    pub(super) fn refresh_view(&mut self) {
        let mut addresses = self.sources.clone();
        let mut up = BTreeSet::new();
        let mut left = BTreeSet::new();
        for member in self.gossip.members() {
            if let Some(addr) = member.state.quic_addr() {
                addresses.insert(member.id, addr);
            }
            if member.id == self.id {
                continue;
            }
            if self.has_left(member.id) {
                left.insert(member.id);
            } else if self.gossip.is_up(&member.id) {
                up.insert(member.id);
            }
        }
        let view = ClusterView {
            version: self.view.version,
            id: self.id,
            generation: self.generation,
            ring: self.ring.clone(),
            up,
            left,
            addresses,
            ring_agreed: self.ring_agreed(),
            conflict: self.conflict.clone(),
            self_confirmed: self.gossip.is_self_confirmed(),
        };
        if !view.same_contents(&self.view) {
            self.view = ClusterView {
                version: self.view.version + 1,
                ..view
            };
        }
    }

    /// Acts on what the request side reported: data written marks that
    /// this node holds data. It records nothing for the shards.
    pub(super) fn act_on(&mut self, facts: Facts) {
        if facts.wrote_data {
            self.mark_holds_data();
        }
    }

    /// Whether this node, or any member gossip knows, holds data.
    pub(super) fn cluster_holds_data(&self) -> bool {
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
    pub(super) fn revert_refused_change(&mut self) -> bool {
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
    pub(super) fn every_member_holds_my_ring(&self) -> bool {
        let (Some(ring), Some(mine)) = (self.ring.as_deref(), self.ring_claim_of(self.id)) else {
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
    pub(super) fn data_moved_away(&self, next: &Ring) -> Option<PartitionId> {
        let current = self.ring.as_ref()?;
        current
            .partitions_of(self.id)
            .filter(|&p| !next.primaries(p).contains(&self.id))
            .find(|&p| self.parts.holds_data_in(p))
    }

    /// Adopts a fetched ring if it is newer than the one held and moves no
    /// partition away from data this node holds.
    pub(super) fn offer_ring(&mut self, ring: Ring) {
        if ring.partitions().count() != self.parts.config.partitions
            || ring.replicas() != self.parts.config.replicas
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

    /// Holds `ring` from now on (persisted first when `persist`; not
    /// adopted if that fails), gossips its claim, turns this node `up`
    /// when it is a member, and rebuilds the view.
    pub(super) fn install_ring(&mut self, ring: Ring, persist: bool) {
        if persist {
            if let Err(e) = self.parts.persist_ring(&ring) {
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
        self.ring = Some(Arc::new(ring));
        if let Err(e) = self
            .gossip
            .set_state(StateKey::Ring, StateValue::Ring(claim))
        {
            tracing::warn!(error = %e, "could not publish the ring claim");
        }
        if member {
            self.gossip.set_status(Status::Up);
        }
        self.refresh_view();
    }

    /// A peer holds a newer incarnation of this node. Either this data
    /// directory is older than what the cluster has seen (restored, put
    /// back): run on at a generation above it, in a new epoch. Or another
    /// live process shares this id, which shows as an incarnation at another
    /// address that keeps superseding this one: the process that started
    /// later stops, the other runs on above it.
    pub(super) fn on_superseded(&mut self, generation: u64, published: &[(StateKey, StateValue)]) {
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
        let next = match self.parts.persist_generation(generation.saturating_add(1)) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "could not persist a higher generation");
                return;
            }
        };
        if let Err(e) = self
            .parts
            .begin_epoch("the data directory is older than what peers hold of this node")
        {
            tracing::error!(error = %e, "could not begin a new epoch");
            return;
        }
        if let Err(e) = self.parts.mark_running(next) {
            tracing::warn!(error = %e, "could not update the running marker");
        }
        self.generation = next;
        self.gossip.restart_at(chorus_gossip::Generation(next));
        self.refresh_view();
    }

    /// Records the generation a frame from `node` carries. Returns false
    /// when it is older than the newest this node knows for `node` (from
    /// its frames or from gossip): the frame comes from a previous
    /// incarnation. A newer generation than a known one means `node`
    /// restarted, and the connection to it is reset.
    pub(super) fn learn_generation(&mut self, node: Uuid, generation: u64) -> bool {
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
    /// process that is gone, and has the shards replace what they were
    /// waiting for from the old incarnation at once
    /// ([`ShardInput::Restarted`]).
    pub(super) fn reset_connection(&mut self, node: Uuid) {
        if let Some(addr) = self.address_of(node) {
            tracing::info!(%node, %addr, "peer restarted: resetting the connection to it");
            self.parts
                .effects
                .push_back(Effect::ResetConnection { addr });
        }
        self.for_shards.push_back(ShardInput::Restarted(node));
    }

    // ----- output -----

    /// Sends `message` to `to` at the address the view gives for it.
    pub(super) fn send(&mut self, to: Uuid, message: Message) {
        self.parts.send(&self.view, to, message);
    }
}

/// Whether ring claim `a` is preferred over `b`: a higher version, or the
/// same version with a smaller hash (two claimants that raced).
pub(super) fn better(a: RingClaim, b: RingClaim) -> bool {
    (a.version, std::cmp::Reverse(a.hash)) > (b.version, std::cmp::Reverse(b.hash))
}

/// How a refused ring claim is written in gossip.
pub(super) fn refusal_text(claim: RingClaim) -> String {
    format!("{}:{:016x}", claim.version, claim.hash)
}
