//! Cluster membership for Chorus.
//!
//! Every node learns, without a leader, who is in the cluster, where each
//! member listens, what ring it holds, and whether it looks alive. This crate
//! is the state machine that does it, plus its wire messages.
//!
//! # What it does
//!
//! - **State.** Each node publishes a [`NodeState`]: a heartbeat and a few
//!   application state entries ([`StateKey`]: QUIC and HTTP addresses,
//!   [`Status`] `joining | up | leaving | left`, zone, ring version and hash,
//!   load, free-form extras). Every item carries a [`Version`] from one
//!   counter per node, within a [`Generation`] that the caller persists and
//!   bumps at every start. A higher generation supersedes everything older;
//!   anything carrying an older generation of a node is ignored, so a
//!   restarted node is recognised at once and a zombie changes nothing.
//! - **Gossip.** Every [`Config::gossip_interval`] the node bumps its
//!   heartbeat and sends a [`Syn`] with digests `(node, generation, max
//!   version)` to [`Config::fanout`] random live peers, sometimes also to an
//!   unreachable one and to a seed (Cassandra's choice of targets). The receiver answers with an
//!   [`Ack`] carrying what it has newer and what it wants; the initiator
//!   closes with an [`Ack2`] carrying what was asked. Messages never exceed
//!   [`Config::max_message_bytes`]: when a cluster's state does not fit, new
//!   members and restarts go first, then changed entries, then heartbeats,
//!   most recently changed first, and the rest follows in later rounds.
//!   A node's state may be cut, but only to its oldest part, so what a
//!   receiver holds is always "everything up to some version".
//! - **Failure detection.** phi accrual over the intervals at which newer
//!   heartbeats of each peer are learned ([`Config::phi_threshold`], bounded
//!   window, minimum standard deviation, acceptable pause), evaluated on
//!   every tick. A long gap between this node's own ticks is read as a pause
//!   of this node, not as silence of its peers. Up and down are this node's
//!   opinion, reported as [`Notification::Up`] and [`Notification::Down`];
//!   they are never gossiped. A node learned of is [`Liveness::Unknown`]
//!   until one of its heartbeats advances, so stale state of a dead node
//!   never produces an `Up`.
//! - **Lifecycle.** A node joins through its seeds (known by address, see
//!   [`Target::Seed`]), leaves with [`Gossiper::begin_leave`] then
//!   [`Gossiper::complete_leave`], or is removed by an operator with
//!   [`Gossiper::remove_node`]. A node that left is kept with its generation
//!   for [`Config::quarantine`] (its state still gossiped, so nodes with stale
//!   state learn it left instead of reviving it), then as a bare tombstone for
//!   another quarantine, then forgotten. `left` is final for a generation:
//!   to come back, a node restarts with a new generation, which is accepted
//!   at once.
//! - **Wire.** [`Envelope`]s are MessagePack (`rmp-serde`) with a protocol
//!   version read before anything else. Decoding refuses oversized input
//!   before parsing it and never allocates what a length prefix claims.
//!
//! # Shape
//!
//! A sans-IO state machine in the manner of quinn-proto and foca. Inputs are
//! [`Gossiper::handle_tick`]`(now)`, [`Gossiper::handle_message`]`(now, from,
//! message)` (or [`Gossiper::handle_bytes`]) and local updates
//! ([`Gossiper::set_state`]); outputs are [`Effect`]s drained with
//! [`Gossiper::poll_effect`] or [`Gossiper::drain_effects`]: messages to send
//! and [`Notification`]s. [`Gossiper::next_wakeup`] says when to tick next.
//! A notification names what changed; the state itself is read with
//! [`Gossiper::member`] (for instance the addresses of a node that just
//! [joined](Notification::Joined)).
//! Time is a [`std::time::Duration`] since an arbitrary origin, passed in;
//! randomness comes from the RNG given to [`Gossiper::new`]. Given the same
//! seed and the same inputs in the same order, a gossiper produces the same
//! effects.
//!
//! # What it deliberately does not do
//!
//! - No I/O: no sockets, no tasks, no timers, no clock reads, no OS
//!   randomness. The runtime in `chorus-node` owns all of those, maps node
//!   ids to addresses (from [`NodeState::quic_addr`]) and encodes envelopes.
//! - No persistence: the caller stores the node id and bumps the generation.
//! - No ring computation and no data movement: the ring claim is gossiped as
//!   an opaque version and hash; `chorus-ring` decides placement.
//! - No removal of down nodes: a down node stays a member (and stays in the
//!   ring) until it leaves or an operator removes it.
//! - No authentication: the transport (mutual TLS with the cluster CA) decides
//!   who may talk to a node; this crate trusts what admitted peers say about
//!   others, and only refuses what they say about this node itself.
//! - No forever-memory of departed nodes: a node partitioned away for longer
//!   than two quarantine periods can bring a departed node's old state back.
//! - No direct probing (SWIM's ping / ping-req): liveness is judged from
//!   heartbeats relayed by gossip, so detection takes a little longer in
//!   larger clusters, where heartbeats travel more hops.

#![forbid(unsafe_code)]

mod detector;
mod error;
mod gossiper;
mod size;
mod state;
mod wire;

pub use error::GossipError;
pub use gossiper::{
    Config, Effect, Gossiper, Liveness, LocalNode, MemberInfo, Notification, Stats, Target,
    MIN_MESSAGE_BYTES,
};
pub use state::{
    Entry, Generation, NodeDelta, NodeId, NodeState, RingClaim, StateKey, StateValue, Status,
    Version, Versioned,
};
pub use wire::{
    Ack, Ack2, Digest, Envelope, Message, Sender, Syn, MAX_ENTRIES_PER_NODE, MAX_TEXT_BYTES,
    PROTOCOL_VERSION,
};
