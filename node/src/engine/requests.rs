//! Requests in flight: their ids (unique across restarts), their
//! deadlines, and the background work they hold once their client was
//! answered.

use std::time::Duration;

use chorus_storage::object::Object;
use chorus_storage::store::Store;
use uuid::Uuid;

use super::coordinator::Origin;
use super::{ClientId, Engine, Now};
use crate::api::{WriteReply, WriteRequest};
use crate::buggify::Site;
use crate::core::{GetCoordinator, PutCoordinator};
use crate::wire::WireKey;

/// How long a hint delivery or ring fetch may take before it is retried.
pub(super) const RETRY_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(super) enum Pending {
    Get {
        client: ClientId,
        key: WireKey,
        coordinator: GetCoordinator,
        targets: usize,
        replies: usize,
        answered: bool,
        /// A delete without a context waiting for this read: once it
        /// succeeds, the delete is written with the read's context.
        then_delete: Option<WriteRequest>,
    },
    Put {
        origin: Origin,
        key: WireKey,
        /// The stored object, for hints to targets that do not answer.
        object: Object,
        sync: bool,
        coordinator: PutCoordinator,
        /// The answer once the write is acknowledged.
        reply: WriteReply,
        targets: usize,
        answers: usize,
        answered: bool,
        /// The encoded object's size: what the put holds once it is
        /// answered and becomes background work.
        bytes: usize,
    },
    Forwarded {
        client: ClientId,
        to: Uuid,
        bucket: Vec<u8>,
        key: Vec<u8>,
        w: usize,
        pw: usize,
    },
    Hint {
        target: Uuid,
        seq: u64,
        key: WireKey,
        /// The hint's write was acknowledged durably: only a durable
        /// acknowledgement of the delivery deletes it.
        durable: bool,
        /// The encoded object's size.
        bytes: usize,
    },
    RingFetch,
}

impl Pending {
    /// The bytes this request holds if it is background work: a put or
    /// get whose client was answered, or a hint delivery. `None` while a
    /// client still waits for it.
    pub(super) fn background_bytes(&self) -> Option<usize> {
        match self {
            Pending::Put {
                answered: true,
                bytes,
                ..
            } => Some(*bytes),
            Pending::Get { answered: true, .. } => Some(0),
            Pending::Hint { bytes, .. } => Some(*bytes),
            _ => None,
        }
    }
}

/// Requests and bytes of background work in flight.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Background {
    pub(super) requests: usize,
    pub(super) bytes: usize,
}

impl<S: Store> Engine<S> {
    pub(super) fn new_request(&mut self) -> u64 {
        let request = self.next_request;
        // The counter wraps within the low 32 bits, never into the
        // generation's, and skips 0 (a message that wants no answer).
        let counter = (request as u32).wrapping_add(1).max(1);
        self.next_request = (request & !u64::from(u32::MAX)) | u64::from(counter);
        request
    }

    /// Removes a finished request and its deadline.
    pub(super) fn take_pending(&mut self, request: u64) -> Option<Pending> {
        if let Some(deadline) = self.deadline_of.remove(&request) {
            self.deadlines.remove(&(deadline, request));
        }
        let pending = self.pending.remove(&request)?;
        if let Some(bytes) = pending.background_bytes() {
            self.background.requests -= 1;
            self.background.bytes -= bytes;
        }
        Some(pending)
    }

    pub(super) fn set_deadline(&mut self, now: Now, request: u64, after: Duration) {
        let after = if self.buggify.fires(Site::TimeoutEarly) {
            after.mul_f64(self.buggify.fraction())
        } else {
            after
        };
        let deadline = now.mono + after;
        if let Some(old) = self.deadline_of.insert(request, deadline) {
            self.deadlines.remove(&(old, request));
        }
        self.deadlines.insert((deadline, request));
    }
}

/// The first request id of an incarnation: the low 32 bits of its
/// generation in the high 32 bits of the id, so no id repeats across
/// restarts. Generations are wall-clock milliseconds at start (or one more
/// than the last), so two incarnations share those bits only when they
/// started a multiple of 2^32 ms (about 49.7 days) apart — far longer than
/// any reply lives.
pub(super) fn first_request_id(generation: u64) -> u64 {
    ((generation & u64::from(u32::MAX)) << 32) | 1
}
