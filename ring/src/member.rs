//! Members of a ring and the changes an operator makes to them.

use serde::{Deserialize, Serialize};

/// The identity of a node: a UUID generated once and kept in its data directory.
pub type NodeId = uuid::Uuid;

/// The most members a ring holds (member numbers are 16-bit, one value reserved).
pub const MAX_MEMBERS: usize = u16::MAX as usize - 1;
/// The longest zone name, in bytes.
pub const MAX_ZONE_LEN: usize = 255;

/// A node that owns a share of the ring.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The node's identity.
    pub id: NodeId,
    /// The failure domain the node is in (a rack, a data centre, an
    /// availability zone). Members with the same string are in the same zone;
    /// the empty string is a zone like any other.
    pub zone: String,
    /// The node's capacity, in any unit shared by all members. Ownership is
    /// proportional to weight. Must be at least 1.
    pub weight: u32,
}

impl Member {
    /// A member with the given id, zone and weight.
    pub fn new(id: NodeId, zone: impl Into<String>, weight: u32) -> Self {
        Self {
            id,
            zone: zone.into(),
            weight,
        }
    }
}

/// One change to the member set of a ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// A new member joins.
    Join(Member),
    /// A member leaves; its partitions move to the others.
    Leave(NodeId),
    /// A member's capacity changes.
    SetWeight {
        /// The member.
        node: NodeId,
        /// Its new weight, at least 1.
        weight: u32,
    },
    /// A member moves to another zone.
    SetZone {
        /// The member.
        node: NodeId,
        /// Its new zone.
        zone: String,
    },
}

impl MemberChange {
    /// The node the change is about.
    pub fn node(&self) -> NodeId {
        match self {
            MemberChange::Join(member) => member.id,
            MemberChange::Leave(node)
            | MemberChange::SetWeight { node, .. }
            | MemberChange::SetZone { node, .. } => *node,
        }
    }
}
