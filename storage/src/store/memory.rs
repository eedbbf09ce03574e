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
    /// Every write since the last sync, in order.
    unsynced: Vec<Op>,
}

/// The byte maps behind [`MemoryStore`].
#[derive(Debug, Default)]
pub(crate) struct MemoryKv {
    state: Mutex<State>,
    /// Every write and sync fails while set (see [`MemoryStore::fail_writes`]).
    failing: AtomicBool,
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
        if self.failing.load(Ordering::Relaxed) {
            return Err(StoreError::Io {
                operation: "write",
                source: "simulated I/O error".into(),
            });
        }
        let mut state = self.state();
        for op in &ops {
            state.live.apply(op);
        }
        state.unsynced.extend(ops);
        if durability == Durability::Sync {
            let state = &mut *state;
            for op in state.unsynced.drain(..) {
                state.durable.apply(&op);
            }
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
        self.write(Vec::new(), Durability::Sync)
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
    /// store is opened afresh.
    pub fn restart(self) -> Self {
        let config = self.store.config();
        Self::reopen(self.store.into_backend(), config)
    }

    /// A copy of this store as a backup or a copy of its data directory
    /// taken now would hold it: every write so far, durable in the copy.
    /// The copy is a separate store; restoring a node from it is starting
    /// the node on it.
    pub fn snapshot(&self) -> MemoryStore {
        let live = self.store.backend().state().live.clone();
        let kv = MemoryKv {
            state: Mutex::new(State {
                durable: live.clone(),
                live,
                unsynced: Vec::new(),
            }),
            failing: AtomicBool::new(false),
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
        self.store.backend().state().unsynced.len()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(StoreConfig::default())
    }
}
