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
