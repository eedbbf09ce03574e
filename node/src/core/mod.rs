//! The deterministic request-coordination core.
//!
//! Everything a node decides about one client request lives here as plain
//! state machines over plain values:
//!
//! * [`options`] — the per-request options (`r`, `w`, `pr`, `pw`, `timeout`,
//!   `sync`, `sloppy`), parsed from strings and validated against N before
//!   any work starts.
//! * [`placement`] — which nodes a request goes to: the up primaries of the
//!   preference list and, under sloppy quorum, a fallback for each down
//!   primary with a hint naming the primary it stands in for.
//! * [`get`] — the get coordinator.
//! * [`put`] — the put (and delete) coordinator.
//! * [`replica`] — the replica's side of a write: coordinating a client's
//!   write on the local object, and applying a copy from another replica.
//!
//! # The accumulator shape
//!
//! The coordinators follow riak_kv's `get_core`: a coordinator is created
//! with the request's quorum and the replicas it was sent to, and is then
//! fed one event at a time — a replica's reply ([`GetCoordinator::add_reply`],
//! [`PutCoordinator::add_ack`], [`PutCoordinator::add_failure`]) or the
//! expiry of the request's timer (`timeout()`). After any event the caller
//! asks for the `outcome()`: `None` while the request is undecided, then
//! `Some(Ok(..))` or `Some(Err(..))`. An outcome, once decided, never changes
//! its kind; the caller answers the client the first time it sees one.
//! Replies keep being accepted after the outcome, so that read repair
//! ([`GetCoordinator::repairs`]) covers replicas that answered late.
//!
//! Replies from nodes the request was not sent to, and second replies from
//! the same node, are ignored and reported as such ([`Recorded`]); they come
//! from the network and are not programmer errors. Quorums that violate the
//! documented preconditions (for instance `pr > r`) are programmer errors:
//! [`options`] refuses them before a coordinator is built, and the
//! constructors assert them.
//!
//! # Architecture invariant: what is deliberately absent
//!
//! This module does no I/O, reads no clock, sets no timers, draws no random
//! numbers and spawns nothing. Time enters only as values: the HLC timestamp
//! and the context bound of a write are arguments, and a request's deadline
//! is the runtime's business — when its timer fires, the runtime calls
//! `timeout()`. Sending messages, persisting objects, fsyncing and
//! delivering hints are the runtime's job too; this module only says what to
//! send where ([`place`], [`GetCoordinator::repairs`]) and what the client is
//! told. No output depends on the iteration order of a hash map: every list
//! a function returns is in preference-list order.
//!
//! Given the same inputs in the same order, every function here produces the
//! same outputs, which is what lets the cluster simulator replay a run from
//! its seed.

use std::fmt;

pub mod get;
pub mod options;
pub mod placement;
pub mod put;
pub mod replica;

pub use get::{GetCoordinator, GetError};
pub use options::{OptionsError, Quorum, RequestOptions, ResolvedOptions};
pub use placement::{place, Replica, Role};
pub use put::{PutCoordinator, PutError, PutSuccess};
pub use replica::{apply_replicated, context_bound, coordinate_write, ClientWrite, WriteError};

/// Why a replica did not give a usable answer to a request.
///
/// Reported by the replica itself (storage failures, refusals) or by the
/// runtime on its behalf (unreachable, overloaded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ReplicaError {
    /// The request could not be delivered, or the connection failed before
    /// the answer arrived.
    #[error("replica unreachable")]
    Unreachable,
    /// The replica shed the request.
    #[error("replica overloaded")]
    Overloaded,
    /// The replica's storage engine failed.
    #[error("replica storage error: {0}")]
    Storage(String),
    /// The replica refused the request (for instance an object it could not accept).
    #[error("replica refused the request: {0}")]
    Refused(String),
}

impl ReplicaError {
    /// A stable, machine-readable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            ReplicaError::Unreachable => "replica_unreachable",
            ReplicaError::Overloaded => "replica_overloaded",
            ReplicaError::Storage(_) => "replica_storage",
            ReplicaError::Refused(_) => "replica_refused",
        }
    }
}

/// What a coordinator did with a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The first reply from a node the request was sent to: it is recorded.
    Accepted,
    /// The node had already replied; the first reply stands.
    Duplicate,
    /// The request was not sent to this node; the reply is ignored.
    NotATarget,
}

/// A replica's failure as carried in a coordinator's error: which node, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaFailure {
    pub node: uuid::Uuid,
    pub error: ReplicaError,
}

impl fmt::Display for ReplicaFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.node, self.error)
    }
}

/// Where a request stood when it failed: what its quorum needed and what it
/// got. Carried by the coordinators' errors so the client can be told how
/// many replicas were needed and how many answered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuorumTally {
    /// Replies (get) or acknowledgements (put) needed: `r` or `w`.
    pub required: usize,
    /// How many of those had to come from primaries: `pr` or `pw`.
    pub required_primaries: usize,
    /// Replies or acknowledgements that counted.
    pub received: usize,
    /// How many of those came from primaries.
    pub received_primaries: usize,
    /// The replicas that failed, in preference-list order.
    pub failures: Vec<ReplicaFailure>,
}

impl fmt::Display for QuorumTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "needed {} ({} from primaries), received {} ({} from primaries)",
            self.required, self.required_primaries, self.received, self.received_primaries
        )?;
        if !self.failures.is_empty() {
            f.write_str("; failed: ")?;
            for (i, failure) in self.failures.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{failure}")?;
            }
        }
        Ok(())
    }
}

/// Checks a coordinator's targets: at most `n`, no node twice.
fn assert_targets(n: usize, targets: &[Replica]) {
    assert!(
        targets.len() <= n,
        "{} targets for {n} replicas",
        targets.len()
    );
    let distinct: std::collections::BTreeSet<uuid::Uuid> =
        targets.iter().map(|target| target.node).collect();
    assert_eq!(distinct.len(), targets.len(), "a node is targeted twice");
}
