//! What each owner of engine state works with ([`Parts`]), and what a shard
//! reaches for one input ([`Cx`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use chorus_ring::Partitions;
use chorus_storage::hlc::Hlc;
use chorus_storage::store::Store;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

use super::config::EngineConfig;
use super::io::{ClientId, ClientReply, Effect, EngineStats, Now};
use super::view::{ClusterView, Facts};
use crate::api::RequestError;
use crate::buggify::{Buggify, Site};
use crate::wire::Message;

/// What one owner — membership, or one shard — works with: handles to
/// what the whole node shares (the store, the clock, the epoch flag, the
/// storage failure), and its own configuration copy, seeded generator,
/// fault sites, effect queue and counters. Nothing in it is reached by two
/// owners except through the shared handles, so each shard can run on a
/// thread of its own.
#[derive(Debug)]
pub(super) struct Parts<S> {
    pub(super) config: EngineConfig,
    pub(super) partitions: Partitions,
    /// The node's store (reached through `vnode.rs` and `hints.rs` only).
    pub(super) store: Arc<S>,
    /// The node's clock.
    pub(super) hlc: Arc<Mutex<Hlc>>,
    /// This owner's generator, seeded from the node's seed.
    pub(super) rng: ChaCha8Rng,
    /// This owner's fault sites, off outside simulation; their own
    /// generator.
    pub(super) buggify: Buggify,
    /// This owner's effects, in the order it emitted them.
    pub(super) effects: VecDeque<Effect>,
    /// This start's actors are known to be fresh: a new epoch began, or a
    /// peer confirmed that no newer incarnation of this node exists.
    /// Node-wide.
    pub(super) epoch_safe: Arc<AtomicBool>,
    /// Set when the store could not flush its writes: nothing is
    /// acknowledged from then on. Node-wide.
    pub(super) storage_failure: Arc<OnceLock<String>>,
    /// This owner's counters (frames, the local replica).
    pub(super) stats: EngineStats,
}

impl<S> Parts<S> {
    /// Sends `message` to `to` at the address `view` gives for it.
    pub(super) fn send(&mut self, view: &ClusterView, to: Uuid, message: Message) {
        let Some(addr) = view.address_of(to) else {
            tracing::debug!(%to, "no address for node; message dropped");
            return;
        };
        self.effects.push_back(Effect::Send { to, addr, message });
    }

    /// When a request started now and given `after` is due.
    pub(super) fn deadline(&mut self, now: Now, after: Duration) -> Duration {
        let after = if self.buggify.fires(Site::TimeoutEarly) {
            after.mul_f64(self.buggify.fraction())
        } else {
            after
        };
        now.mono + after
    }

    /// The node's clock, locked for one reading.
    pub(super) fn hlc(&self) -> MutexGuard<'_, Hlc> {
        // A panic elsewhere cannot leave the clock half-updated: each of
        // its methods either updates it or does not.
        self.hlc.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this start's actors are known to be fresh (node-wide).
    pub(super) fn epoch_safe(&self) -> bool {
        self.epoch_safe.load(Ordering::Acquire)
    }

    /// Why the store could not flush its writes, if it could not
    /// (node-wide).
    pub(super) fn storage_failure(&self) -> Option<&str> {
        self.storage_failure.get().map(String::as_str)
    }

    /// Parts for another owner: the same store, clock, epoch flag and
    /// storage failure, a copy of the configuration, and a generator and
    /// fault sites of its own seeded by `seed`.
    pub(super) fn for_owner(&self, seed: u64) -> Parts<S> {
        Parts {
            config: self.config.clone(),
            partitions: self.partitions,
            store: Arc::clone(&self.store),
            hlc: Arc::clone(&self.hlc),
            rng: ChaCha8Rng::seed_from_u64(seed),
            buggify: Buggify::new(seed, self.buggify.is_enabled()),
            effects: VecDeque::new(),
            epoch_safe: Arc::clone(&self.epoch_safe),
            storage_failure: Arc::clone(&self.storage_failure),
            stats: EngineStats::default(),
        }
    }
}

/// What a shard reaches for one input: the cluster as membership sees it,
/// the shard's parts, the input's time, and the facts it reports
/// back to the router.
pub(super) struct Cx<'a, S> {
    pub(super) view: &'a ClusterView,
    pub(super) parts: &'a mut Parts<S>,
    pub(super) now: Now,
    pub(super) facts: Facts,
}

impl<S: Store> Cx<'_, S> {
    /// This node's id.
    pub(super) fn me(&self) -> Uuid {
        self.view.id
    }

    /// Sends `message` to `to` at the address the view gives for it.
    pub(super) fn send(&mut self, to: Uuid, message: Message) {
        self.parts.send(self.view, to, message);
    }

    pub(super) fn reply(&mut self, client: ClientId, result: Result<ClientReply, RequestError>) {
        self.parts
            .effects
            .push_back(Effect::Reply { client, result });
    }

    /// When a request started now and given `after` is due.
    pub(super) fn deadline(&mut self, now: Now, after: Duration) -> Duration {
        self.parts.deadline(now, after)
    }
}
