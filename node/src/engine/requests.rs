//! Requests in flight: their ids (unique across restarts), their
//! deadlines, and the background work they hold once their client was
//! answered; and what the handlers of every kind of request share.
//!
//! Each kind of request keeps its own state in a [`Requests`] table, owned
//! by its handler (`coordinator`, `forward`, `hints`); one [`Deadlines`]
//! per shard hands out the ids and orders every kind's deadlines in one
//! set over (time, id), so requests expire in the order they are due
//! whatever their kind. A shard's [`Ledger`] holds that, the background
//! work in flight, the shard's budgets and its counters, and is lent to
//! each handler for one call.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chorus_ring::PartitionId;
use chorus_storage::context::CausalContext;
use uuid::Uuid;

use super::config::EngineConfig;
use super::io::{ClientId, EngineStats};
use crate::api::WriteRequest;
use crate::core::{Replica, ResolvedOptions};
use crate::wire::WireKey;

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

    /// Moves request `id`'s deadline to `deadline`.
    pub(super) fn reschedule(
        &mut self,
        deadlines: &mut Deadlines,
        id: RequestId,
        deadline: Duration,
    ) {
        if let Some((old, _)) = self.entries.get_mut(&id) {
            deadlines.due.remove(&(*old, id));
            *old = deadline;
            deadlines.due.insert((deadline, id));
        }
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

/// The shard of `shards` that owns `partition`.
pub(super) fn shard_of_partition(partition: PartitionId, shards: usize) -> usize {
    partition.0 as usize % shards
}

/// What a shard may hold: its share of the node's configured budgets,
/// split evenly between the shards (at least 1 each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Budget {
    /// Requests in flight whose client still waits.
    pub(super) max_pending_requests: usize,
    /// Background requests (answered gets and puts, hint deliveries).
    pub(super) max_background_requests: usize,
    /// Bytes background requests hold.
    pub(super) max_background_bytes: usize,
    /// Client requests waiting for admission.
    pub(super) max_queued_requests: usize,
    /// Bytes of values waiting for admission.
    pub(super) max_queued_bytes: usize,
}

impl Budget {
    /// One shard's share of `config`'s budgets among `shards`.
    pub(super) fn share(config: &EngineConfig, shards: usize) -> Budget {
        let share = |total: usize| (total / shards).max(1);
        Budget {
            max_pending_requests: share(config.max_pending_requests),
            max_background_requests: share(config.max_background_requests),
            max_background_bytes: share(config.max_background_bytes),
            max_queued_requests: share(config.max_queued_requests),
            max_queued_bytes: share(config.max_queued_bytes),
        }
    }
}

/// What the handlers of one shard's requests share: which partitions are
/// the shard's, request ids and deadlines, the background work in flight
/// and the budgets it is held to, and the shard's counters. The shard
/// lends it to one handler at a time.
#[derive(Debug)]
pub(super) struct Ledger {
    /// The shard's index.
    pub(super) shard: usize,
    /// How many shards the node runs.
    pub(super) shards: usize,
    /// Request ids, and the deadlines of every request in flight.
    pub(super) deadlines: Deadlines,
    /// Background work in flight: answered gets and puts, hint deliveries.
    pub(super) background: Background,
    /// The shard's share of the node's budgets.
    pub(super) budget: Budget,
    /// The shard's counters.
    pub(super) stats: EngineStats,
}

impl Ledger {
    /// The ledger of shard `shard` of `shards`, of an incarnation started
    /// at `generation`.
    pub(super) fn new(
        shard: usize,
        shards: usize,
        config: &EngineConfig,
        generation: u64,
    ) -> Ledger {
        Ledger {
            shard,
            shards,
            deadlines: Deadlines::new(generation, shard),
            background: Background::default(),
            budget: Budget::share(config, shards),
            stats: EngineStats::default(),
        }
    }

    /// Whether `partition` is one of this shard's.
    pub(super) fn owns(&self, partition: PartitionId) -> bool {
        shard_of_partition(partition, self.shards) == self.shard
    }

    /// Whether background work holds its whole budget, so new client
    /// requests wait for admission and hint rounds wait.
    pub(super) fn background_full(&self) -> bool {
        self.background.requests >= self.budget.max_background_requests
            || self.background.bytes >= self.budget.max_background_bytes
    }
}

/// Who is waiting for the outcome of a coordinated write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    Client(ClientId),
    /// A node forwarded the write; its reply names the key.
    Forward {
        node: Uuid,
        request: u64,
        bucket: Vec<u8>,
        key: Vec<u8>,
    },
}

/// A write this node coordinates, placed and checked: what a client's put
/// or a forwarded write becomes once this node is one of its targets.
#[derive(Debug)]
pub(super) struct PlacedWrite {
    /// Who waits for the outcome.
    pub(super) origin: Origin,
    pub(super) key: WireKey,
    /// The value; `None` deletes.
    pub(super) value: Option<Vec<u8>>,
    pub(super) content_type: Option<String>,
    /// What the writer saw.
    pub(super) context: CausalContext,
    pub(super) options: ResolvedOptions,
    /// Whether the answer carries the stored object.
    pub(super) return_body: bool,
    /// The key's replication factor.
    pub(super) n: usize,
    /// The targets placed on the preference list, this node among them.
    pub(super) targets: Vec<Replica>,
    /// The primaries neither targeted nor stood in for: they are hinted.
    pub(super) uncovered: Vec<Uuid>,
}

/// A client's write this node is no target of: it goes to `to`, a target,
/// which coordinates it ([`Forwards::forward_write`](super::forward::Forwards::forward_write)).
#[derive(Debug)]
pub(super) struct ToForward {
    pub(super) client: ClientId,
    pub(super) to: Uuid,
    pub(super) write: WriteRequest,
    pub(super) options: ResolvedOptions,
}
