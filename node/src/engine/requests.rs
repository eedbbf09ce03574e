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

/// How long a hint delivery or ring fetch may take before it is retried.
pub(super) const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Request ids and the deadlines of every request in flight.
#[derive(Debug)]
pub(super) struct Deadlines {
    /// The next id: this start's generation in the high 32 bits, a counter
    /// in the low 32.
    next: RequestId,
    due: BTreeSet<(Duration, RequestId)>,
}

impl Deadlines {
    /// Ids and deadlines of an incarnation started at `generation`.
    pub(super) fn new(generation: u64) -> Deadlines {
        Deadlines {
            next: first_request_id(generation),
            due: BTreeSet::new(),
        }
    }

    /// A fresh request id.
    pub(super) fn next_id(&mut self) -> RequestId {
        let request = self.next;
        // The counter wraps within the low 32 bits, never into the
        // generation's, and skips 0 (on the wire, no request).
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

/// The first request id of an incarnation: the low 32 bits of its
/// generation in the high 32 bits of the id, so no id repeats across
/// restarts. Generations are wall-clock milliseconds at start (or one more
/// than the last), so two incarnations share those bits only when they
/// started a multiple of 2^32 ms (about 49.7 days) apart — far longer than
/// any reply lives.
fn first_request_id(generation: u64) -> u64 {
    ((generation & u64::from(u32::MAX)) << 32) | 1
}
