//! The in-memory engine, for the simulator and tests.
//!
//! Three `BTreeMap`s of bytes stand in for RocksDB's column families, holding
//! the same encoded keys and values, so scans come out in the same order and
//! every object goes through the same encoding as on disk.
//!
//! # Crash model
//!
//! The engine models a write-ahead log. Besides the live maps it keeps the
//! *durable* maps — what a machine crash would leave — and the writes made
//! since the last sync. A write with [`Durability::Sync`] (and
//! [`Store::sync`](super::Store::sync)) makes itself and every earlier write
//! durable; [`MemoryStore::crash`] throws away every write made since the last
//! sync, as a power loss would on a real disk. [`MemoryStore::restart`] keeps
//! everything, as a process crash (`kill -9`) or a clean restart does on the
//! RocksDB engine, whose write-ahead log is in the operating system's page
//! cache. Metadata writes are always synced.
//!
//! The unsynced writes are kept until the next sync: a simulation that never
//! syncs can call [`Store::sync`](super::Store::sync) now and then, as the
//! operating system's write-back would.
//!
//! A store made [`with_group_commit`](MemoryStore::with_group_commit)
//! models the RocksDB engine opened for group commit: writes wait in the
//! log buffer of the process until [`Store::flush`](super::Store::flush),
//! so a process crash ([`MemoryStore::restart`]) loses every write not yet
//! flushed, and a `Sync` write is durable only once flushed.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::kv::{delegate_store, Cf, KvBackend, KvStore, Op, Visitor};
use super::{Durability, StoreConfig, StoreError};

/// One set of column families.
#[derive(Debug, Clone, Default)]
struct Tables {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    hints: BTreeMap<Vec<u8>, Vec<u8>>,
    meta: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Tables {
    fn cf(&self, cf: Cf) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        match cf {
            Cf::Data => &self.data,
            Cf::Hints => &self.hints,
            Cf::Meta => &self.meta,
        }
    }

    fn cf_mut(&mut self, cf: Cf) -> &mut BTreeMap<Vec<u8>, Vec<u8>> {
        match cf {
            Cf::Data => &mut self.data,
            Cf::Hints => &mut self.hints,
            Cf::Meta => &mut self.meta,
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Put(cf, key, value) => {
                self.cf_mut(*cf).insert(key.clone(), value.clone());
            }
            Op::Delete(cf, key) => {
                self.cf_mut(*cf).remove(key);
            }
            Op::DeletePrefix(cf, prefix) => {
                self.cf_mut(*cf).retain(|key, _| !key.starts_with(prefix));
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    live: Tables,
    durable: Tables,
    /// Every flushed write since the last sync, in order.
    unsynced: Vec<Op>,
    /// Group commit: every write since the last flush, in order, and
    /// whether one of them asked for `Sync`.
    unflushed: Vec<Op>,
    owes_sync: bool,
}

impl State {
    /// Makes the flushed writes durable.
    fn sync(&mut self) {
        for op in self.unsynced.drain(..) {
            self.durable.apply(&op);
        }
    }
}

/// The byte maps behind [`MemoryStore`].
#[derive(Debug, Default)]
pub(crate) struct MemoryKv {
    state: Mutex<State>,
    /// Every write and sync fails while set (see [`MemoryStore::fail_writes`]).
    failing: AtomicBool,
    /// Writes wait for a flush (see [`MemoryStore::with_group_commit`]).
    group_commit: bool,
}

impl MemoryKv {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Throws away every write made since the last sync.
    fn crash(&self) {
        let mut state = self.state();
        state.live = state.durable.clone();
        state.unsynced.clear();
        state.unflushed.clear();
        state.owes_sync = false;
    }

    /// Throws away every write not yet flushed (a process crash).
    fn lose_unflushed(&self) {
        let mut state = self.state();
        let state = &mut *state;
        if state.unflushed.is_empty() {
            return;
        }
        state.unflushed.clear();
        state.owes_sync = false;
        state.live = state.durable.clone();
        for op in &state.unsynced {
            state.live.apply(op);
        }
    }

    fn check_failing(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(StoreError::Io {
                operation: "write",
                cause: "simulated I/O error".into(),
            });
        }
        Ok(())
    }
}

impl KvBackend for MemoryKv {
    fn get<R>(
        &self,
        cf: Cf,
        key: &[u8],
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, StoreError> {
        Ok(self.state().live.cf(cf).get(key).map(|value| read(value)))
    }

    fn write(&self, ops: Vec<Op>, durability: Durability) -> Result<(), StoreError> {
        self.check_failing()?;
        let mut state = self.state();
        for op in &ops {
            state.live.apply(op);
        }
        if self.group_commit {
            state.unflushed.extend(ops);
            state.owes_sync |= durability == Durability::Sync;
            return Ok(());
        }
        state.unsynced.extend(ops);
        if durability == Durability::Sync {
            state.sync();
        }
        Ok(())
    }

    fn scan(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        visit: &mut Visitor<'_>,
    ) -> Result<(), StoreError> {
        let state = self.state();
        let range = state
            .live
            .cf(cf)
            .range::<[u8], _>((Bound::Included(start), Bound::Unbounded));
        for (key, value) in range {
            if !key.starts_with(prefix) || visit(key, value).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.check_failing()?;
        let mut state = self.state();
        let state = &mut *state;
        state.unsynced.append(&mut state.unflushed);
        state.owes_sync = false;
        state.sync();
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let state = self.state();
        if state.unflushed.is_empty() && !state.owes_sync {
            return Ok(());
        }
        drop(state);
        self.check_failing()?;
        let mut state = self.state();
        let state = &mut *state;
        state.unsynced.append(&mut state.unflushed);
        if std::mem::take(&mut state.owes_sync) {
            state.sync();
        }
        Ok(())
    }

    fn owes_sync(&self) -> bool {
        self.state().owes_sync
    }
}

/// The in-memory engine (see the module doc for its crash model).
#[derive(Debug)]
pub struct MemoryStore {
    store: KvStore<MemoryKv>,
}

delegate_store!(MemoryStore, store);

impl MemoryStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        Self::reopen(MemoryKv::default(), config)
    }

    /// An empty store whose writes wait for [`Store::flush`](super::Store::flush)
    /// (see the module doc), as the RocksDB engine's do with
    /// `RocksConfig::group_commit`.
    pub fn with_group_commit(config: StoreConfig) -> Self {
        let kv = MemoryKv {
            group_commit: true,
            ..MemoryKv::default()
        };
        Self::reopen(kv, config)
    }

    fn reopen(kv: MemoryKv, config: StoreConfig) -> Self {
        let store = KvStore::open(kv, config)
            .expect("the in-memory engine holds only records it wrote itself");
        MemoryStore { store }
    }

    /// Simulates a machine crash and restart: every write not yet synced is
    /// lost, and the store comes back as a fresh open of what was durable.
    pub fn crash(self) -> Self {
        let config = self.store.config();
        let kv = self.store.into_backend();
        kv.crash();
        Self::reopen(kv, config)
    }

    /// Simulates a process restart (or a process crash, which loses nothing
    /// with a write-ahead log in the page cache): everything is kept, the
    /// store is opened afresh. Under group commit the writes not yet
    /// flushed are lost, as they were still in the process.
    pub fn restart(self) -> Self {
        let config = self.store.config();
        let kv = self.store.into_backend();
        kv.lose_unflushed();
        Self::reopen(kv, config)
    }

    /// A copy of this store as a backup or a copy of its data directory
    /// taken now would hold it: every write so far, durable in the copy.
    /// The copy is a separate store; restoring a node from it is starting
    /// the node on it.
    pub fn snapshot(&self) -> MemoryStore {
        // What the data directory holds: not the writes still in the
        // process's log buffer.
        let live = {
            let state = self.store.backend().state();
            let mut written = state.durable.clone();
            for op in &state.unsynced {
                written.apply(op);
            }
            written
        };
        let kv = MemoryKv {
            state: Mutex::new(State {
                durable: live.clone(),
                live,
                ..State::default()
            }),
            failing: AtomicBool::new(false),
            group_commit: self.store.backend().group_commit,
        };
        Self::reopen(kv, self.store.config())
    }

    /// While `failing` is set, every write and sync fails with
    /// [`StoreError::Io`] and changes nothing, as on a full or failing
    /// disk; reads still work. For tests of error paths.
    pub fn fail_writes(&self, failing: bool) {
        self.store
            .backend()
            .failing
            .store(failing, Ordering::Relaxed);
    }

    /// The number of write operations a crash would lose now.
    pub fn unsynced_writes(&self) -> usize {
        let state = self.store.backend().state();
        state.unsynced.len() + state.unflushed.len()
    }

    /// The number of write operations a process crash would lose now
    /// (none without group commit).
    pub fn unflushed_writes(&self) -> usize {
        self.store.backend().state().unflushed.len()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(StoreConfig::default())
    }
}
