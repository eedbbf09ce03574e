//! What goes into an engine and what comes out: the time its inputs carry,
//! client requests and replies, effects, counters and errors. Plain data,
//! shared by every part of the engine.

use std::net::SocketAddr;
use std::time::Duration;

use chorus_storage::store::StoreError;
use uuid::Uuid;

use crate::api::{ReadReply, ReadRequest, RequestError, WriteReply, WriteRequest};
use crate::wire::Message;

/// The time, as the engine's inputs carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time since an arbitrary origin: timers and failure detection.
    pub mono: Duration,
    /// Wall-clock milliseconds since the Unix epoch: the HLC.
    pub wall_ms: u64,
}

/// Identifies a client request so its reply can be routed back.
pub type ClientId = u64;

/// A client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRequest {
    Get(ReadRequest),
    Put(WriteRequest),
}

impl ClientRequest {
    /// The request's options.
    pub fn options(&self) -> &crate::core::RequestOptions {
        match self {
            ClientRequest::Get(read) => &read.options,
            ClientRequest::Put(write) => &write.options,
        }
    }

    pub(super) fn options_mut(&mut self) -> &mut crate::core::RequestOptions {
        match self {
            ClientRequest::Get(read) => &mut read.options,
            ClientRequest::Put(write) => &mut write.options,
        }
    }
}

/// The successful answer to a client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientReply {
    Read(ReadReply),
    Write(WriteReply),
}

/// What the engine asks of the world.
///
/// Effects are typed: a message is a [`Message`], not bytes. Whoever
/// carries the effects out (the runtime, the simulator) frames it with
/// [`Engine::frame`] and encodes it; an engine test compares effect lists
/// with `assert_eq!`.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send `message` to the node `to`, at `addr`: the address gossip
    /// gives for it, or the one its last frame came from.
    Send {
        to: Uuid,
        addr: SocketAddr,
        message: Message,
    },
    /// Send a gossip message to a seed, known only by its address (its id
    /// is learnt from its answer).
    SendToSeed { addr: SocketAddr, message: Message },
    /// The node at `addr` restarted (a newer generation was seen): drop
    /// any connection to it now, since it leads to the dead process, so the
    /// next [`Effect::Send`] opens a fresh one.
    ResetConnection { addr: SocketAddr },
    /// Answer a client request. Every request gets exactly one.
    Reply {
        client: ClientId,
        result: Result<ClientReply, RequestError>,
    },
}

/// Why an engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Gossip(#[from] chorus_gossip::GossipError),
    #[error("the persisted ring does not decode: {0}")]
    Ring(String),
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Another live process runs with this node's id: its data directory was
/// copied from a live node's. The engine stops serving once it finds one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node id {id} is already alive at {addr} (generation {generation}); this data directory is a copy of a live node's")]
pub struct IdentityConflict {
    /// The shared node id.
    pub id: Uuid,
    /// Where the other process listens.
    pub addr: SocketAddr,
    /// The generation the other process runs at.
    pub generation: u64,
}

/// Counters and gauges, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub gets: u64,
    pub puts: u64,
    pub forwarded: u64,
    pub read_repairs: u64,
    pub hints_delivered: u64,
    /// Hints that could not be queued (the target's queue full, or a
    /// storage error): their primary gets the write only by read repair.
    pub hints_dropped: u64,
    pub frames_refused: u64,
    /// Data-plane frames dropped because they came from an older
    /// incarnation of their sender than the newest this node knows.
    pub frames_stale: u64,
    /// Read replies refused because their object carries a clock reading
    /// beyond this node's drift bound.
    pub replies_from_the_future: u64,
    /// Hints queued for targets that did not acknowledge a put in time.
    pub hints_for_timeouts: u64,
    /// Forwarded writes dropped because this node already coordinated a
    /// write with the same sender and request id (a frame delivered twice).
    pub forwards_repeated: u64,
    pub pending_requests: usize,
    /// Client requests refused as overloaded (too many in flight, the
    /// admission queue full, or waited too long for admission).
    pub refused_overloaded: u64,
    /// Read repairs not sent because background work held its byte budget.
    pub read_repairs_skipped: u64,
    /// Background requests handed to hinted handoff because one replica
    /// held most of the full background budget.
    pub background_shed: u64,
    /// Frames the runtime could not send ([`Engine::handle_send_failed`]).
    pub send_failures: u64,
    /// Client requests waiting for admission.
    pub queued_requests: usize,
    /// Background requests in flight (answered puts still replicating,
    /// answered gets waiting for read repair, hint deliveries).
    pub background_requests: usize,
    /// Bytes of objects those background requests hold.
    pub background_bytes: usize,
}

impl EngineStats {
    /// Adds `other`'s counters and gauges to these.
    pub fn add(&mut self, other: &EngineStats) {
        let EngineStats {
            gets,
            puts,
            forwarded,
            read_repairs,
            hints_delivered,
            hints_dropped,
            frames_refused,
            frames_stale,
            replies_from_the_future,
            hints_for_timeouts,
            forwards_repeated,
            pending_requests,
            refused_overloaded,
            read_repairs_skipped,
            background_shed,
            send_failures,
            queued_requests,
            background_requests,
            background_bytes,
        } = *other;
        self.gets += gets;
        self.puts += puts;
        self.forwarded += forwarded;
        self.read_repairs += read_repairs;
        self.hints_delivered += hints_delivered;
        self.hints_dropped += hints_dropped;
        self.frames_refused += frames_refused;
        self.frames_stale += frames_stale;
        self.replies_from_the_future += replies_from_the_future;
        self.hints_for_timeouts += hints_for_timeouts;
        self.forwards_repeated += forwards_repeated;
        self.pending_requests += pending_requests;
        self.refused_overloaded += refused_overloaded;
        self.read_repairs_skipped += read_repairs_skipped;
        self.background_shed += background_shed;
        self.send_failures += send_failures;
        self.queued_requests += queued_requests;
        self.background_requests += background_requests;
        self.background_bytes += background_bytes;
    }
}

/// Checks a bucket or key name (`what`): not empty, at most `max` bytes.
pub(super) fn check_key(what: &'static str, bytes: &[u8], max: usize) -> Result<(), RequestError> {
    if bytes.is_empty() {
        return Err(RequestError::InvalidKey {
            what: what.into(),
            reason: "must not be empty".into(),
        });
    }
    if bytes.len() > max {
        return Err(RequestError::InvalidKey {
            what: what.into(),
            reason: format!("{} bytes, at most {max}", bytes.len()),
        });
    }
    Ok(())
}
