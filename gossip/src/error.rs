//! The one error type of this crate.
//!
//! Each variant says what state the gossiper (or the caller's buffer) was left
//! in. Nothing in this crate panics on input from the network; programmer
//! errors (broken internal invariants) are assertions, not variants.

use crate::state::{Generation, NodeId, StateKey};

/// Everything that can go wrong in membership.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GossipError {
    /// A message longer than the configured maximum.
    #[error("message of {len} bytes exceeds the limit of {max} bytes; it was not parsed (or not encoded) and no state changed")]
    Oversized {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A message in a protocol version this node does not speak.
    #[error("message speaks protocol version {got}, this node speaks {supported}; its body was not parsed and no state changed")]
    UnsupportedProtocol {
        /// The version the message carries.
        got: u64,
        /// The version this crate speaks.
        supported: u16,
    },

    /// Bytes that are not a valid message.
    #[error("malformed message ({reason}); it was dropped whole and no state changed")]
    Malformed {
        /// What was wrong.
        reason: String,
    },

    /// A message from an older generation of a node known at a newer one: a
    /// zombie, or a message delayed across a restart.
    #[error("message from {node} at generation {got}, which is older than the known generation {known}; it was ignored and no state changed")]
    StaleGeneration {
        /// The sender.
        node: NodeId,
        /// The generation the message carries.
        got: Generation,
        /// The generation known here.
        known: Generation,
    },

    /// A message from a node known to have left (or to have been removed) at
    /// that generation.
    #[error("message from {node} at generation {generation}, which has left the cluster; it was ignored and no state changed")]
    SenderLeft {
        /// The sender.
        node: NodeId,
        /// Its generation.
        generation: Generation,
    },

    /// A message that claims to come from this node's own id.
    #[error("message claims to come from this node's own id at generation {generation}; it was ignored and no state changed")]
    OwnIdentity {
        /// The generation it carries.
        generation: Generation,
    },

    /// A local state update whose value is not the kind its key holds.
    #[error("state key {key:?} cannot hold that kind of value; local state unchanged")]
    ValueKindMismatch {
        /// The key.
        key: StateKey,
    },

    /// A local state update with an over-long name or text.
    #[error("state entry {key:?} has {len} bytes of text, over the limit of {max}; local state unchanged")]
    ValueTooLarge {
        /// The key.
        key: StateKey,
        /// Its text length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A local state update that would exceed the entry limit.
    #[error("a node may publish at most {max} entries; local state unchanged")]
    TooManyEntries {
        /// The limit.
        max: usize,
    },

    /// An operator action naming a node this gossiper does not know.
    #[error("node {0} is not a known member; nothing changed")]
    UnknownNode(NodeId),

    /// An operator removal of a node that this node still sees up.
    #[error("node {0} still looks up from here; only a down node can be removed, nothing changed")]
    NodeStillUp(NodeId),

    /// An operator removal naming this node itself.
    #[error("a node cannot remove itself (it leaves instead); nothing changed")]
    CannotRemoveSelf,

    /// A message that would grow the member table beyond its limit.
    #[error("member table is full ({limit} nodes); {dropped} new nodes in the message were not added, everything else in it was applied")]
    MemberLimit {
        /// The limit.
        limit: usize,
        /// How many new nodes were dropped.
        dropped: usize,
    },

    /// A configuration the gossiper cannot run with.
    #[error("invalid gossip configuration: {0}; no gossiper was created")]
    InvalidConfig(&'static str),
}
