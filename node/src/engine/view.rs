//! The seam between membership and the request side: [`ClusterView`], a
//! read-only snapshot of what requests need to know about the cluster.
//!
//! Membership (`membership.rs`) owns the gossiper, the ring, the address
//! book and peer generations, and publishes this view; it rebuilds the
//! view whenever something the view holds may have changed (gossip handled
//! a tick or a message, a ring was installed, a frame's source was
//! remembered) and bumps [`ClusterView::version`] when the contents
//! differ. The request side — coordinators, forwarded writes, hints, the
//! local replica, admission — reads the cluster only through a
//! `&ClusterView`, never the gossiper or the ring directly. What the
//! request side learns that membership must know flows back as facts the
//! router acts on ([`Facts`]). What reaches a detached shard other than a
//! client request — a data-plane message, a send failure, a new view, what
//! membership learnt — is a [`ShardInput`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use chorus_ring::{PreferenceList, Ring};
use uuid::Uuid;

use super::io::IdentityConflict;
use crate::core::{place, Replica};
use crate::wire::Message;

/// What the request side knows of the cluster: plain data, rebuilt by
/// membership. Opaque outside the engine: the runtime only carries it
/// from membership to detached shards ([`ShardInput::View`]).
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Bumped each time the contents change.
    pub(super) version: u64,
    /// This node's id.
    pub(super) id: Uuid,
    /// The generation this node runs at: what its frames carry.
    pub(super) generation: u64,
    /// The ring this node holds.
    pub(super) ring: Option<Arc<Ring>>,
    /// The nodes gossip reports alive that have not left, other than this
    /// node (which is always up to itself).
    pub(super) up: BTreeSet<Uuid>,
    /// The nodes gossip says left the cluster.
    pub(super) left: BTreeSet<Uuid>,
    /// Where to send to each node: the address it gossips, or the source of
    /// its frames while gossip does not know it.
    pub(super) addresses: BTreeMap<Uuid, SocketAddr>,
    /// This node holds a ring and no live member holds another.
    pub(super) ring_agreed: bool,
    /// Another live process runs with this node's id.
    pub(super) conflict: Option<IdentityConflict>,
    /// A peer confirmed that no newer incarnation of this node exists.
    pub(super) self_confirmed: bool,
}

impl ClusterView {
    /// Whether `node` is up: gossip reports it alive and it has not left
    /// (this node is always up to itself).
    pub(super) fn is_up(&self, node: Uuid) -> bool {
        node == self.id || self.up.contains(&node)
    }

    /// Whether gossip says `node` left the cluster.
    pub(super) fn has_left(&self, node: Uuid) -> bool {
        self.left.contains(&node)
    }

    /// Where messages to `node` go.
    pub(super) fn address_of(&self, node: Uuid) -> Option<SocketAddr> {
        self.addresses.get(&node).copied()
    }

    /// A key's preference list on the ring this node holds.
    pub(super) fn preference_list(&self, bucket: &[u8], key: &[u8]) -> PreferenceList<'_> {
        self.ring
            .as_deref()
            .expect("requests are admitted only with a ring")
            .preference_list_for_key(bucket, key)
    }

    /// A request's targets on `list` in this node's opinion of who is up
    /// ([`place`]).
    pub(super) fn targets(&self, list: PreferenceList<'_>, sloppy: bool) -> Vec<Replica> {
        place(list, |node| self.is_up(node), sloppy)
    }

    /// Whether `other` holds the same contents (the version aside).
    pub(super) fn same_contents(&self, other: &ClusterView) -> bool {
        let same_ring = match (&self.ring, &other.ring) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same_ring
            && self.id == other.id
            && self.generation == other.generation
            && self.up == other.up
            && self.left == other.left
            && self.addresses == other.addresses
            && self.ring_agreed == other.ring_agreed
            && self.conflict == other.conflict
            && self.self_confirmed == other.self_confirmed
    }
}

/// What the request side reports back for membership to act on. Opaque
/// outside the engine: the runtime only carries it from detached shards
/// to membership ([`Engine::handle_facts`](super::Engine::handle_facts)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct Facts {
    /// Data was written to this node's store: membership marks (persists
    /// and gossips) that this node holds data, if it did not yet.
    pub(super) wrote_data: bool,
}

impl Facts {
    /// Whether there is nothing to report.
    pub fn is_empty(&self) -> bool {
        *self == Facts::default()
    }

    /// Adds what `other` reports to these facts.
    pub fn add(&mut self, other: Facts) {
        self.wrote_data |= other.wrote_data;
    }

    /// These facts without those `other` already reports.
    pub(super) fn not_in(self, other: Facts) -> Facts {
        Facts {
            wrote_data: self.wrote_data && !other.wrote_data,
        }
    }
}

/// The primaries that are neither targets nor stood in for by a fallback.
pub(super) fn uncovered_primaries(list: PreferenceList<'_>, targets: &[Replica]) -> Vec<Uuid> {
    list.primaries()
        .iter()
        .copied()
        .filter(|&p| {
            !targets
                .iter()
                .any(|t| t.node == p || t.stands_in_for() == Some(p))
        })
        .collect()
}

/// An input the router hands a shard other than a client request. A
/// detached shard gets every kind, in the order the router routed them; the
/// last three are what membership learnt that every shard must act on,
/// which membership records as data and the router passes to attached
/// shards too.
#[derive(Debug, Clone)]
pub enum ShardInput {
    /// A data-plane message for the shard (a replica's request for a key in
    /// its partitions, a forwarded write, or an answer to one of its
    /// requests), from `from` at `generation`, which membership checked is
    /// not an older incarnation's.
    Message {
        from: Uuid,
        generation: u64,
        message: Message,
    },
    /// A request frame of the shard's could not be sent to `to`.
    SendFailed { to: SocketAddr, message: Message },
    /// Membership's view of the cluster changed.
    View(Arc<ClusterView>),
    /// The failure detector convicted a node.
    Convicted(Uuid),
    /// A node restarted (a newer generation was seen).
    Restarted(Uuid),
    /// Hints may go now (a node came up, or one left).
    HintRoundNow,
}
