//! Requests in flight: their ids (unique across restarts), their
//! deadlines, and the background work they hold once their client was
//! answered.
//!
//! Each kind of request keeps its own state in a [`Requests`] table; one
//! [`Deadlines`] hands out the ids and orders every kind's deadlines in one
//! set over (time, id), so requests expire in the order they are due
//! whatever their kind.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Names a request in flight; replies carry it back. Never 0 (a message
/// that wants no answer).
pub(super) type RequestId = u64;

/// Most shards a node runs: a request id has 8 bits for its shard.
pub(super) const MAX_SHARDS: usize = 256;

/// How long a hint delivery or ring fetch may take before it is retried.
pub(super) const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Request ids and the deadlines of every request in flight, of one shard.
#[derive(Debug)]
pub(super) struct Deadlines {
    /// The next id: this start's generation in the high 24 bits, the
    /// shard's index in the next 8, a counter in the low 32
    /// ([`first_request_id`]).
    next: RequestId,
    due: BTreeSet<(Duration, RequestId)>,
}

impl Deadlines {
    /// Ids and deadlines of shard `shard` of an incarnation started at
    /// `generation`.
    pub(super) fn new(generation: u64, shard: usize) -> Deadlines {
        Deadlines {
            next: first_request_id(generation, shard),
            due: BTreeSet::new(),
        }
    }

    /// A fresh request id.
    pub(super) fn next_id(&mut self) -> RequestId {
        let request = self.next;
        // The counter wraps within the low 32 bits, never into the
        // shard's or the generation's, and skips 0 (on the wire, no
        // request).
        let counter = (request as u32).wrapping_add(1).max(1);
        self.next = (request & !u64::from(u32::MAX)) | u64::from(counter);
        request
    }

    /// The earliest deadline, if any request is in flight.
    pub(super) fn first(&self) -> Option<Duration> {
        self.due.first().map(|&(deadline, _)| deadline)
    }

    /// Takes out the request due first if its deadline is at or before
    /// `now`.
    pub(super) fn pop_due(&mut self, now: Duration) -> Option<RequestId> {
        let &(deadline, request) = self.due.first()?;
        if deadline > now {
            return None;
        }
        self.due.pop_first();
        Some(request)
    }
}

/// The requests of one kind in flight: each one's state and deadline.
#[derive(Debug)]
pub(super) struct Requests<T> {
    entries: BTreeMap<RequestId, (Duration, T)>,
}

impl<T> Default for Requests<T> {
    fn default() -> Self {
        Requests {
            entries: BTreeMap::new(),
        }
    }
}

impl<T> Requests<T> {
    /// Adds request `id`, due at `deadline`.
    pub(super) fn insert(
        &mut self,
        deadlines: &mut Deadlines,
        id: RequestId,
        deadline: Duration,
        state: T,
    ) {
        if let Some((old, _)) = self.entries.insert(id, (deadline, state)) {
            deadlines.due.remove(&(old, id));
        }
        deadlines.due.insert((deadline, id));
    }

    pub(super) fn get(&self, id: RequestId) -> Option<&T> {
        self.entries.get(&id).map(|(_, state)| state)
    }

    pub(super) fn get_mut(&mut self, id: RequestId) -> Option<&mut T> {
        self.entries.get_mut(&id).map(|(_, state)| state)
    }

    /// Removes a finished request and its deadline.
    pub(super) fn remove(&mut self, deadlines: &mut Deadlines, id: RequestId) -> Option<T> {
        let (deadline, state) = self.entries.remove(&id)?;
        deadlines.due.remove(&(deadline, id));
        Some(state)
    }

    /// The requests in id order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (RequestId, &T)> {
        self.entries.iter().map(|(&id, (_, state))| (id, state))
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Requests and bytes of background work in flight: puts and gets whose
/// client was answered, and hint deliveries.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Background {
    pub(super) requests: usize,
    pub(super) bytes: usize,
}

impl Background {
    pub(super) fn add(&mut self, bytes: usize) {
        self.requests += 1;
        self.bytes += bytes;
    }

    pub(super) fn remove(&mut self, bytes: usize) {
        self.requests -= 1;
        self.bytes -= bytes;
    }
}

/// The first request id of shard `shard` of an incarnation: the low 24
/// bits of its generation in the high 24 bits of the id, then the shard's
/// index in 8 bits, then a counter in the low 32. The shard bits route a
/// reply back to the shard that made the request
/// ([`shard_of_request`]), and no two shards hand out the same id. The
/// generation bits keep ids from repeating across restarts: generations
/// are wall-clock milliseconds at start (or one more than the last), so
/// two incarnations share those bits only when their generations differ
/// by a multiple of 2^24 ms (about 4.7 hours), and a reply to the older
/// one would then also have to name an id the newer one has in flight
/// for the same key from the same replica. Ids are compared only for
/// equality, except by a node that remembers forwarded writes, which
/// orders them per sender's shard within one generation
/// (`forward::SeenForwards`).
pub(super) fn first_request_id(generation: u64, shard: usize) -> u64 {
    assert!(shard < MAX_SHARDS, "a shard index fits in 8 bits");
    ((generation & 0xFF_FFFF) << 40) | ((shard as u64) << 32) | 1
}

/// The shard that made request `request` (its id's shard bits).
pub(super) fn shard_of_request(request: RequestId) -> usize {
    ((request >> 32) & 0xFF) as usize
}
