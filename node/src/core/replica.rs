//! The replica's side of a write.
//!
//! * [`coordinate_write`] — the coordinating replica turns a client's write
//!   into a new version of its local object: it checks the client's causal
//!   context, mints the version's dot from its partition replica's actor id
//!   and an HLC reading, applies the write with [`Object::write_typed`]
//!   (the value's content type goes with the version), and for
//!   last-writer-wins buckets collapses the siblings with
//!   [`Object::resolve_lww`].
//! * [`apply_replicated`] — any replica merges a copy of the key sent by
//!   another replica (a put's copy, read repair, a hint being handed off).
//!
//! Both work on an object the caller read from its store and will write
//! back; the caller holds the key's write lock in between (design.md §3.6).
//! The caller also reads the HLC: the write's [`Timestamp`] and the
//! [`context_bound`] come in as arguments, and before it merges a copy from
//! another node the runtime has already passed the sender's timestamp through
//! [`Hlc::observe`](chorus_storage::hlc::Hlc::observe), which refuses peers
//! whose clocks are too far ahead.
//!
//! # Refusing forged contexts
//!
//! A causal context comes from a client and is trusted only as far as it can
//! be checked. Its counters are HLC readings, so a counter later than any
//! clock in the cluster can read — this node's clock plus the maximum drift
//! it tolerates from peers — was not issued by this cluster; left in, it
//! would make the key's context cover every future write of that actor and
//! silently discard them. Likewise a context claiming to have seen a write of
//! this very replica at or after the clock's current reading names a write
//! that was never made. Both are refused before anything changes.

use std::time::Duration;

use chorus_storage::context::CausalContext;
use chorus_storage::hlc::Timestamp;
use chorus_storage::object::{Object, ObjectError, MAX_SIBLINGS, MAX_WRITE_BYTES};
use chorus_storage::version::{ActorId, Dot};

/// A client's write of one key, as the HTTP layer hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientWrite {
    /// The causal context the client was given (empty for a blind write).
    pub context: CausalContext,
    /// The new value, or `None` to delete.
    pub value: Option<Vec<u8>>,
    /// The value's media type, stored with the version; `None` when the
    /// client gave none, and for a delete.
    pub content_type: Option<String>,
    /// The bucket resolves conflicts by last writer wins.
    pub lww: bool,
}

/// A client's write that was refused. The local object is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum WriteError {
    /// The context holds a counter later than any clock in the cluster reads.
    #[error("causal context counter {counter} ({}) is later than any clock in the cluster can read ({bound}); the context was not issued by this cluster", Timestamp::from_u64(*counter))]
    ContextFromTheFuture { counter: u64, bound: Timestamp },
    /// The context claims a write of this replica that it has not made.
    #[error("causal context claims write {actor}:{counter} of this replica, which has issued nothing that late (its clock reads {now})")]
    ContextAheadOfReplica {
        actor: ActorId,
        counter: u64,
        now: Timestamp,
    },
    /// The write would leave more siblings than a key may hold.
    #[error("the key has {siblings} siblings; a write with a context that resolves them is needed (at most {max})")]
    TooManySiblings { siblings: usize, max: usize },
    /// The write would make the key's stored object larger than a write may
    /// leave it ([`MAX_WRITE_BYTES`]); `size` is what it would have been.
    /// Resolving siblings (a write with a read's context) makes room.
    #[error("the key's object would grow to {size} bytes, above the limit of {max}; resolve its siblings or write a smaller value")]
    ObjectTooLarge { size: usize, max: usize },
    /// The replica minted a dot it had used before: its actor id or its
    /// clock is broken. A bug, not a client error.
    #[error("dot {0} was already used for this key")]
    DotReused(Dot),
    /// The write's content type cannot be stored with a version (see
    /// [`check_content_type`](chorus_storage::object::check_content_type)).
    #[error("invalid content type: {0}")]
    InvalidContentType(String),
}

impl WriteError {
    /// A stable, machine-readable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            WriteError::ContextFromTheFuture { .. } => "context_from_future",
            WriteError::ContextAheadOfReplica { .. } => "context_ahead_of_replica",
            WriteError::TooManySiblings { .. } => "too_many_siblings",
            WriteError::ObjectTooLarge { .. } => "object_too_large",
            WriteError::DotReused(_) => "dot_reused",
            WriteError::InvalidContentType(_) => "invalid_content_type",
        }
    }
}

impl From<ObjectError> for WriteError {
    fn from(error: ObjectError) -> Self {
        match error {
            ObjectError::DotReused(dot) => WriteError::DotReused(dot),
            ObjectError::TooManySiblings { siblings, max } => {
                WriteError::TooManySiblings { siblings, max }
            }
            ObjectError::InvalidContentType(error) => {
                WriteError::InvalidContentType(error.to_string())
            }
        }
    }
}

/// The latest HLC reading any node of the cluster could have issued, given
/// this node's clock reads `now` and peers may be `max_drift` ahead of it:
/// the bound [`coordinate_write`] checks contexts against.
pub fn context_bound(now: Timestamp, max_drift: Duration) -> Timestamp {
    let drift_ms = u64::try_from(max_drift.as_millis()).unwrap_or(u64::MAX);
    let wall_ms = now
        .wall_ms()
        .saturating_add(drift_ms)
        .min(Timestamp::MAX_WALL_MS);
    Timestamp::new(wall_ms, u16::MAX)
}

/// Applies a client's write to this replica's `object` (empty if the key is
/// new here) as a new version named `(actor, timestamp)`, where `actor` is
/// this partition replica's actor id and `timestamp` a fresh reading of the
/// node's HLC. Returns the new version's dot; the updated `object` is what
/// the coordinator stores and sends to the other replicas.
///
/// Refuses, leaving `object` unchanged, a context with a counter beyond
/// `context_bound` (see [`context_bound`]) or one claiming a write of `actor`
/// at or after `timestamp`, and a write that would leave too many siblings.
///
/// For a last-writer-wins bucket the siblings are then collapsed to the one
/// with the greatest timestamp — usually the new write, but not if a
/// replica with a faster clock wrote concurrently.
pub fn coordinate_write(
    object: &mut Object,
    write: ClientWrite,
    actor: ActorId,
    timestamp: Timestamp,
    context_bound: Timestamp,
) -> Result<Dot, WriteError> {
    assert!(
        timestamp > Timestamp::ZERO,
        "a write's timestamp comes from the HLC"
    );
    let counter = write.context.max_counter();
    if counter > context_bound.as_u64() {
        return Err(WriteError::ContextFromTheFuture {
            counter,
            bound: context_bound,
        });
    }
    let own = write.context.max_counter_of(actor);
    if own >= timestamp.as_u64() {
        return Err(WriteError::ContextAheadOfReplica {
            actor,
            counter: own,
            now: timestamp,
        });
    }
    let dot = Dot::new(actor, timestamp.as_u64());
    let mut next = object.clone();
    next.write_typed(
        &write.context,
        dot,
        timestamp,
        write.value,
        write.content_type,
    )?;
    if write.lww {
        next.resolve_lww();
    }
    debug_assert!(write.lww || next.siblings().len() <= MAX_SIBLINGS);
    let size = next.encoded_len();
    if size > MAX_WRITE_BYTES {
        return Err(WriteError::ObjectTooLarge {
            size,
            max: MAX_WRITE_BYTES,
        });
    }
    *object = next;
    Ok(dot)
}

/// Merges `incoming`, another replica's copy of the key, into this
/// replica's `object` (empty if the key is new here); for a
/// last-writer-wins bucket the siblings are then collapsed to the latest.
/// Returns whether `object` changed, that is whether it must be stored.
pub fn apply_replicated(object: &mut Object, incoming: &Object, lww: bool) -> bool {
    let mut changed = object.merge(incoming);
    if lww && object.siblings().len() > 1 {
        object.resolve_lww();
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_storage::version::VersionVector;

    const T0: u64 = 1_795_000_000_000;
    const ME: ActorId = ActorId(1);
    const PEER: ActorId = ActorId(2);

    fn ts(wall_offset_ms: u64, logical: u16) -> Timestamp {
        Timestamp::new(T0 + wall_offset_ms, logical)
    }

    /// The bound for a node whose clock reads T0, with 500 ms of drift.
    fn bound() -> Timestamp {
        context_bound(ts(0, 0), Duration::from_millis(500))
    }

    fn put(context: &VersionVector, value: &str) -> ClientWrite {
        ClientWrite {
            context: CausalContext::new(context.clone()),
            value: Some(value.as_bytes().to_vec()),
            content_type: None,
            lww: false,
        }
    }

    fn values(object: &Object) -> Vec<&[u8]> {
        object.live().map(|s| s.value.as_deref().unwrap()).collect()
    }

    #[test]
    fn a_first_write_creates_one_version_named_by_actor_and_clock() {
        let mut object = Object::new();
        let dot = coordinate_write(
            &mut object,
            put(&VersionVector::new(), "v1"),
            ME,
            ts(0, 0),
            bound(),
        )
        .unwrap();
        assert_eq!(dot, Dot::new(ME, ts(0, 0).as_u64()));
        assert_eq!(values(&object), vec![b"v1".as_slice()]);
        assert_eq!(object.siblings()[0].timestamp, ts(0, 0));
        assert!(object.context().covers(&dot));
    }

    #[test]
    fn a_write_with_the_read_context_supersedes_what_was_read() {
        let mut object = Object::new();
        coordinate_write(
            &mut object,
            put(&VersionVector::new(), "v1"),
            ME,
            ts(0, 0),
            bound(),
        )
        .unwrap();
        let read = object.context().version_vector().clone();
        coordinate_write(&mut object, put(&read, "v2"), ME, ts(1, 0), bound()).unwrap();
        assert_eq!(values(&object), vec![b"v2".as_slice()]);
    }

    #[test]
    fn a_blind_or_stale_write_adds_exactly_one_sibling() {
        let mut object = Object::new();
        coordinate_write(
            &mut object,
            put(&VersionVector::new(), "v1"),
            ME,
            ts(0, 0),
            bound(),
        )
        .unwrap();
        coordinate_write(
            &mut object,
            put(&VersionVector::new(), "v2"),
            ME,
            ts(1, 0),
            bound(),
        )
        .unwrap();
        assert_eq!(values(&object), vec![b"v1".as_slice(), b"v2"]);
        // A context that saw only v1 resolves v1 and keeps v2 beside the new write.
        let saw_v1: VersionVector = [(ME, ts(0, 0).as_u64())].into_iter().collect();
        coordinate_write(&mut object, put(&saw_v1, "v3"), ME, ts(2, 0), bound()).unwrap();
        assert_eq!(values(&object), vec![b"v2".as_slice(), b"v3"]);
    }

    #[test]
    fn a_delete_leaves_a_tombstone_that_keeps_the_context() {
        let mut object = Object::new();
        coordinate_write(
            &mut object,
            put(&VersionVector::new(), "v1"),
            ME,
            ts(0, 0),
            bound(),
        )
        .unwrap();
        let read = object.context().clone();
        let delete = ClientWrite {
            context: read.clone(),
            value: None,
            content_type: None,
            lww: false,
        };
        let dot = coordinate_write(&mut object, delete, ME, ts(1, 0), bound()).unwrap();
        assert!(object.is_deleted());
        assert_eq!(object.siblings().len(), 1);
        assert!(
            object
                .context()
                .version_vector()
                .descends(read.version_vector())
                && object.context().covers(&dot)
        );
    }

    #[test]
    fn last_writer_wins_keeps_only_the_latest_timestamp() {
        // Two concurrent versions arrive from a peer.
        let mut object = Object::new();
        for (actor, offset, value) in [(PEER, 1, "a"), (ActorId(3), 2, "b")] {
            let mut copy = Object::new();
            copy.write(
                &VersionVector::new(),
                Dot::new(actor, ts(offset, 0).as_u64()),
                ts(offset, 0),
                Some(value.into()),
            )
            .unwrap();
            object.merge(&copy);
        }
        assert_eq!(object.siblings().len(), 2);

        let mut lww = object.clone();
        let write = ClientWrite {
            lww: true,
            ..put(&VersionVector::new(), "mine")
        };
        coordinate_write(&mut lww, write.clone(), ME, ts(3, 0), bound()).unwrap();
        assert_eq!(values(&lww), vec![b"mine".as_slice()]);
        assert_eq!(
            lww.context().version_vector().get(ActorId(3)),
            ts(2, 0).as_u64(),
            "context kept"
        );

        // A peer with a faster clock wrote later than our clock reads: it wins.
        let mut lww = object.clone();
        let mut ahead = Object::new();
        ahead
            .write(
                &VersionVector::new(),
                Dot::new(PEER, ts(400, 0).as_u64()),
                ts(400, 0),
                Some(b"ahead".to_vec()),
            )
            .unwrap();
        lww.merge(&ahead);
        coordinate_write(&mut lww, write, ME, ts(3, 0), bound()).unwrap();
        assert_eq!(values(&lww), vec![b"ahead".as_slice()]);

        // Without LWW the same write adds a sibling.
        let mut mvr = object.clone();
        coordinate_write(
            &mut mvr,
            put(&VersionVector::new(), "mine"),
            ME,
            ts(3, 0),
            bound(),
        )
        .unwrap();
        assert_eq!(values(&mvr), vec![b"mine".as_slice(), b"a", b"b"]);
    }

    #[test]
    fn a_context_from_beyond_the_drift_bound_is_refused() {
        let mut object = Object::new();
        coordinate_write(
            &mut object,
            put(&VersionVector::new(), "v1"),
            ME,
            ts(0, 0),
            bound(),
        )
        .unwrap();
        let before = object.clone();

        let forged: VersionVector = [(PEER, ts(501, 0).as_u64())].into_iter().collect();
        let error =
            coordinate_write(&mut object, put(&forged, "v2"), ME, ts(1, 0), bound()).unwrap_err();
        assert_eq!(
            error,
            WriteError::ContextFromTheFuture {
                counter: ts(501, 0).as_u64(),
                bound: ts(500, u16::MAX),
            }
        );
        assert_eq!(error.code(), "context_from_future");
        assert_eq!(object, before, "nothing changed");

        let forged: VersionVector = [(PEER, u64::MAX)].into_iter().collect();
        assert!(coordinate_write(&mut object, put(&forged, "v2"), ME, ts(1, 0), bound()).is_err());
        assert_eq!(object, before);

        // A peer whose clock is ahead by no more than the drift is believed.
        let ahead: VersionVector = [(PEER, ts(500, u16::MAX).as_u64())].into_iter().collect();
        coordinate_write(&mut object, put(&ahead, "v2"), ME, ts(1, 0), bound()).unwrap();
        assert_eq!(values(&object), vec![b"v1".as_slice(), b"v2"]);
    }

    #[test]
    fn a_context_claiming_an_unmade_write_of_this_replica_is_refused() {
        let mut object = Object::new();
        let claimed: VersionVector = [(ME, ts(1, 0).as_u64())].into_iter().collect();
        let error =
            coordinate_write(&mut object, put(&claimed, "v1"), ME, ts(1, 0), bound()).unwrap_err();
        assert_eq!(
            error,
            WriteError::ContextAheadOfReplica {
                actor: ME,
                counter: ts(1, 0).as_u64(),
                now: ts(1, 0),
            }
        );
        assert_eq!(error.code(), "context_ahead_of_replica");
        assert_eq!(object, Object::new());
        // Just below the clock is a write it could have made.
        let earlier: VersionVector = [(ME, ts(0, 9).as_u64())].into_iter().collect();
        assert!(coordinate_write(&mut object, put(&earlier, "v1"), ME, ts(1, 0), bound()).is_ok());
    }

    #[test]
    fn a_reused_dot_and_too_many_siblings_are_refused() {
        let mut object = Object::new();
        coordinate_write(
            &mut object,
            put(&VersionVector::new(), "v1"),
            ME,
            ts(0, 0),
            bound(),
        )
        .unwrap();
        let before = object.clone();
        let error = coordinate_write(
            &mut object,
            put(&VersionVector::new(), "again"),
            ME,
            ts(0, 0),
            bound(),
        )
        .unwrap_err();
        assert_eq!(
            error,
            WriteError::DotReused(Dot::new(ME, ts(0, 0).as_u64()))
        );
        assert_eq!(error.code(), "dot_reused");
        assert_eq!(object, before);

        let mut crowded = Object::new();
        for i in 0..MAX_SIBLINGS as u64 {
            coordinate_write(
                &mut crowded,
                put(&VersionVector::new(), "x"),
                ActorId(100 + i),
                ts(0, 0),
                bound(),
            )
            .unwrap();
        }
        let error = coordinate_write(
            &mut crowded,
            put(&VersionVector::new(), "y"),
            ME,
            ts(1, 0),
            bound(),
        )
        .unwrap_err();
        assert_eq!(
            error,
            WriteError::TooManySiblings {
                siblings: MAX_SIBLINGS,
                max: MAX_SIBLINGS
            }
        );
        assert_eq!(error.code(), "too_many_siblings");
        // A write with the context resolves them all.
        let read = crowded.context().version_vector().clone();
        coordinate_write(&mut crowded, put(&read, "y"), ME, ts(1, 0), bound()).unwrap();
        assert_eq!(values(&crowded), vec![b"y".as_slice()]);
    }

    #[test]
    fn the_bound_is_the_clock_plus_the_drift() {
        assert_eq!(
            context_bound(ts(0, 7), Duration::from_millis(500)),
            ts(500, u16::MAX)
        );
        assert_eq!(
            context_bound(
                Timestamp::new(Timestamp::MAX_WALL_MS - 1, 0),
                Duration::from_secs(10)
            ),
            Timestamp::new(Timestamp::MAX_WALL_MS, u16::MAX),
            "saturates at the largest timestamp"
        );
        assert_eq!(
            context_bound(ts(0, 0), Duration::MAX),
            Timestamp::new(Timestamp::MAX_WALL_MS, u16::MAX)
        );
    }

    #[test]
    fn a_replicated_copy_is_merged_and_reports_a_change() {
        let mut coordinator = Object::new();
        coordinate_write(
            &mut coordinator,
            put(&VersionVector::new(), "v1"),
            ME,
            ts(0, 0),
            bound(),
        )
        .unwrap();

        let mut replica = Object::new();
        assert!(apply_replicated(&mut replica, &coordinator, false));
        assert_eq!(replica, coordinator);
        assert!(
            !apply_replicated(&mut replica, &coordinator, false),
            "idempotent"
        );

        // An older copy (a late or repeated message) changes nothing.
        let old = coordinator.clone();
        let read = coordinator.context().version_vector().clone();
        coordinate_write(&mut coordinator, put(&read, "v2"), ME, ts(1, 0), bound()).unwrap();
        assert!(apply_replicated(&mut replica, &coordinator, false));
        assert!(!apply_replicated(&mut replica, &old, false));
        assert_eq!(values(&replica), vec![b"v2".as_slice()]);
    }

    #[test]
    fn a_replicated_copy_in_an_lww_bucket_collapses_concurrent_writes() {
        let mut mine = Object::new();
        coordinate_write(
            &mut mine,
            put(&VersionVector::new(), "mine"),
            ME,
            ts(5, 0),
            bound(),
        )
        .unwrap();
        let mut theirs = Object::new();
        coordinate_write(
            &mut theirs,
            put(&VersionVector::new(), "theirs"),
            PEER,
            ts(9, 0),
            bound(),
        )
        .unwrap();

        let mut lww = mine.clone();
        assert!(apply_replicated(&mut lww, &theirs, true));
        assert_eq!(values(&lww), vec![b"theirs".as_slice()]);
        assert!(
            !apply_replicated(&mut lww, &mine, true),
            "the loser stays lost"
        );
        assert_eq!(values(&lww), vec![b"theirs".as_slice()]);

        let mut mvr = mine.clone();
        assert!(apply_replicated(&mut mvr, &theirs, false));
        assert_eq!(values(&mvr), vec![b"mine".as_slice(), b"theirs"]);
    }
}
