//! The bodies of successful answers, and the header names that carry the
//! rest of an answer.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The header that carries a key's causal context token: sent back on a
/// write or delete, it says which versions the client has seen.
pub const CONTEXT_HEADER: &str = "x-chorus-context";

/// The header that carries the HLC timestamp of the version a read
/// returns, e.g. `2026-11-22T02:30:00.123Z+0`.
pub const TIMESTAMP_HEADER: &str = "x-chorus-timestamp";

/// The content type of a value stored without one.
pub const DEFAULT_VALUE_CONTENT_TYPE: &str = "application/octet-stream";

/// The JSON answer to a read with several versions (or with
/// `Accept: application/json`): `{"context": "<token>", "siblings": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiblingsBody {
    /// The key's causal context token, as in `X-Chorus-Context`.
    pub context: String,
    /// The live versions, in the object's (dot) order.
    pub siblings: Vec<SiblingBody>,
}

/// One version in a [`SiblingsBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiblingBody {
    /// The value in standard base64 with padding.
    pub value: String,
    /// The `Content-Type` the value was written with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The version's HLC timestamp in its display form.
    pub timestamp: String,
    /// Always `false`: tombstones are not listed.
    pub deleted: bool,
}

/// One member as a node sees it, in [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: Uuid,
    pub name: String,
    pub quic_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    /// `joining`, `up`, `leaving` or `left`, as the member published it.
    pub status: String,
    pub zone: Option<String>,
    /// Bumped at every start of the member (its generation clock).
    pub generation: u64,
    /// The member's heartbeat version within its generation.
    pub heartbeat: u64,
    /// The answering node's opinion: `up`, `down`, or `unknown` (no
    /// heartbeat seen advance yet).
    pub liveness: String,
    /// Whether this member is the node answering.
    pub local: bool,
}

/// The cluster as one node sees it: `GET /v1/cluster/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: Uuid,
    pub node_name: String,
    /// The version of the ring this node holds, if any.
    pub ring_version: Option<u64>,
    /// The content hash of that ring.
    pub ring_hash: Option<String>,
    pub members: Vec<MemberStatus>,
}

/// A member named by id and name, as the ring and preference list show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    pub id: Uuid,
    /// The name the member published in gossip; empty when not yet known.
    pub name: String,
}

/// The ring a node holds, for `GET /v1/cluster/ring`: the partitions of
/// the 64-bit key-hash space and who owns them, in the manner of Riak's
/// `riak-admin member-status` / `ring-status` and Cassandra's
/// `nodetool ring`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RingStatus {
    /// The ring's version: 1 for the first ring, one more at every change.
    pub version: u64,
    /// The hash of the ring's canonical encoding, 16 hex digits (as in
    /// [`ClusterStatus::ring_hash`]).
    pub hash: String,
    /// N: the primaries (replicas) of every partition.
    pub replicas: usize,
    /// P: how many partitions the hash space is split into.
    pub partition_count: u32,
    /// The ring's members, by id, with their share of the partitions.
    pub members: Vec<RingMember>,
    /// Every partition, in order of its index (and of its hash range).
    pub partitions: Vec<RingPartition>,
}

/// One member of a [`RingStatus`] and its share of the ring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RingMember {
    pub id: Uuid,
    pub name: String,
    pub zone: String,
    /// The member's capacity relative to the others (its ring weight).
    pub weight: u32,
    /// Partitions whose owner (first primary) this member is.
    pub owned_partitions: usize,
    /// `owned_partitions` as a percentage of P (Cassandra's `Owns`, Riak's
    /// ring ownership); the members' shares add up to 100.
    pub owns_percent: f64,
    /// Partitions this member is one of the N primaries of.
    pub primary_partitions: usize,
    /// `primary_partitions` as a percentage of P (Cassandra's
    /// `Owns (effective)`); the members' shares add up to N × 100.
    pub effective_percent: f64,
}

/// One partition of a [`RingStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingPartition {
    /// The partition's index, 0 to P − 1.
    pub index: u32,
    /// The first key hash the partition holds, 16 hex digits.
    pub start: String,
    /// The last key hash the partition holds (inclusive), 16 hex digits.
    pub end: String,
    /// The partition's owner: its first primary.
    pub owner: NodeRef,
    /// All N primaries, in preference-list order (the owner first).
    pub primaries: Vec<Uuid>,
}

/// Where one key's copies go now, for
/// `GET /v1/cluster/preflist/{bucket}/{key}`: Riak's `riak-admin preflist`,
/// Cassandra's `nodetool getendpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflistStatus {
    pub bucket: String,
    pub key: String,
    /// The key's 64-bit hash, 16 hex digits.
    pub hash: String,
    /// The partition holding the key.
    pub partition: u32,
    /// The version of the ring the list comes from.
    pub ring_version: u64,
    /// Whether fallbacks stand in for down primaries (the request's
    /// `sloppy` option, on by default).
    pub sloppy: bool,
    /// The key's N primaries, in preference-list order.
    pub primaries: Vec<PreflistEntry>,
    /// The fallbacks a coordinator would use now, one for each down primary
    /// for which an up fallback is left, in preference-list order.
    pub fallbacks: Vec<PreflistEntry>,
}

/// A node in a [`PreflistStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflistEntry {
    pub id: Uuid,
    pub name: String,
    pub quic_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    /// Whether the answering node believes this node up (its failure
    /// detector's opinion; a node that left the cluster is down).
    pub up: bool,
    /// For a fallback: the primary it stands in for (its copy is a hint).
    /// Published as `fallback_for`, the name the HTTP and QUIC answers
    /// have always used.
    #[serde(
        rename = "fallback_for",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stands_in_for: Option<Uuid>,
}
