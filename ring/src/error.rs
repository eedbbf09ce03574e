//! The errors of the ring crate.

use crate::member::{NodeId, MAX_MEMBERS, MAX_ZONE_LEN};
use crate::partition::{MAX_PARTITIONS, MIN_PARTITIONS};
use crate::ring::MAX_REPLICAS;

/// Bad input to the ring: every variant leaves the ring it was asked to change
/// untouched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// P is not a power of two in the accepted range.
    #[error(
        "partition count {0} is not a power of two between {MIN_PARTITIONS} and {MAX_PARTITIONS}"
    )]
    BadPartitionCount(u32),
    /// N is zero or too large.
    #[error("replica count {0} is not between 1 and {MAX_REPLICAS}")]
    BadReplicaCount(usize),
    /// Fewer members than replicas: a partition cannot have N distinct primaries.
    #[error("{members} members cannot hold {replicas} replicas of a partition on distinct nodes")]
    TooFewMembers {
        /// Members the ring would have.
        members: usize,
        /// N.
        replicas: usize,
    },
    /// More members than a ring can index.
    #[error("{0} members is more than the {MAX_MEMBERS} a ring holds")]
    TooManyMembers(usize),
    /// The same node appears twice in a member set, or joins while a member.
    #[error("node {0} is already a member")]
    DuplicateMember(NodeId),
    /// A change names a node that is not a member.
    #[error("node {0} is not a member")]
    UnknownMember(NodeId),
    /// A member with weight 0 would own nothing; remove it instead.
    #[error("node {0} has weight 0")]
    ZeroWeight(NodeId),
    /// A zone name longer than [`MAX_ZONE_LEN`] bytes.
    #[error("zone of node {node} is {len} bytes long, more than {MAX_ZONE_LEN}")]
    ZoneTooLong {
        /// The member.
        node: NodeId,
        /// The length of its zone name in bytes.
        len: usize,
    },
    /// One batch of changes names the same node twice, so its order would matter.
    #[error("more than one change for node {0} in one batch")]
    ConflictingChanges(NodeId),
    /// Two rings with different P or N cannot be compared.
    #[error(
        "rings have different shapes: {left_partitions} partitions × {left_replicas} replicas \
         against {right_partitions} × {right_replicas}"
    )]
    ShapeMismatch {
        /// P of the first ring.
        left_partitions: u32,
        /// N of the first ring.
        left_replicas: usize,
        /// P of the second ring.
        right_partitions: u32,
        /// N of the second ring.
        right_replicas: usize,
    },
    /// A decoded ring breaks an invariant of the ring.
    #[error("invalid ring encoding: {0}")]
    InvalidEncoding(String),
}
