//! `chorus bench --target store:DIR`: the node's storage engine driven
//! directly, without a node, so a cluster's throughput can be set against
//! what its own engine does alone on the same machine (replication
//! efficiency: cluster puts/s × N ÷ store puts/s).
//!
//! The store is opened as a node opens it ([`runtime::open_store`]: the
//! same directory layout, engine options and store settings), and every
//! operation is what a coordinating replica does to its own copy of a key:
//!
//! * a write (update, insert, the write of a read-modify-write) is the
//!   coordinator's local write — the partition's actor
//!   ([`Store::partition_actor`], drawn on first use), a fresh reading of a
//!   hybrid logical clock whose ceiling is persisted as a node's is, and one
//!   [`Store::update`] running [`coordinate_write`] with the stored
//!   object's context (the write replaces what the key held, as a client's
//!   write with a read's context does), with `sync=true` as
//!   [`Durability::Sync`];
//! * a read is one [`Store::get`];
//! * a delete is a write of a tombstone.
//!
//! Store calls block, so each runs on tokio's blocking pool: `--concurrency`
//! calls are in flight at once, as many as a node's clients would have.
//!
//! What it deliberately does not do: no networking, no replication, no
//! request admission, no read repair; keys map to partitions by the node's
//! default partition count, without a ring.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use chorus_client::bench::{Driver, DriverError, ReadResult};
use chorus_ring::{PartitionId, Partitions};
use chorus_storage::hlc::{Hlc, HlcConfig};
use chorus_storage::store::{
    Durability, KeyRef, RocksStore, Store, StoreError, Update, DEFAULT_OBJECT_CACHE_BYTES,
};
use chorus_storage::version::ActorId;

use crate::core::{context_bound, coordinate_write, ClientWrite, WriteError};
use crate::engine::EngineConfig;
use crate::runtime::{self, RuntimeError};

/// The node's storage engine under `chorus bench`.
#[derive(Debug, Clone)]
pub struct StoreDriver {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    store: RocksStore,
    partitions: Partitions,
    hlc_config: HlcConfig,
    hlc: Mutex<Hlc>,
    bucket: Vec<u8>,
    durability: Durability,
}

/// Why one operation failed.
#[derive(Debug, thiserror::Error)]
enum OpError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Refused(#[from] WriteError),
    #[error("the clock's persisted ceiling moved on at each of {0} tries")]
    ClockCeiling(usize),
}

impl OpError {
    fn into_driver_error(self) -> DriverError {
        let code = match &self {
            OpError::Store(_) => "storage",
            OpError::ClockCeiling(_) => "clock",
            OpError::Refused(refused) => refused.code(),
        };
        DriverError {
            code: code.to_owned(),
            detail: self.to_string(),
        }
    }
}

fn wall_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

impl StoreDriver {
    /// Opens the store a node with data directory `data_dir` would open
    /// (creating it when absent); keys go to `bucket`, writes are synced
    /// when `durability` says so.
    pub fn open(
        data_dir: &std::path::Path,
        bucket: &str,
        durability: Durability,
    ) -> Result<StoreDriver, RuntimeError> {
        let store = runtime::open_store(data_dir, false, DEFAULT_OBJECT_CACHE_BYTES)?;
        let config = EngineConfig::default();
        let partitions = Partitions::new(config.partitions)
            .expect("the node's default partition count is valid");
        let hlc = match store.hlc_ceiling()? {
            Some(ceiling) => Hlc::resume(config.hlc, ceiling),
            None => Hlc::new(config.hlc),
        };
        Ok(StoreDriver {
            shared: Arc::new(Shared {
                store,
                partitions,
                hlc_config: config.hlc,
                hlc: Mutex::new(hlc),
                bucket: bucket.as_bytes().to_vec(),
                durability,
            }),
        })
    }

    /// Runs `f` on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T, OpError> + Send + 'static,
    ) -> Result<T, DriverError> {
        let shared = self.shared.clone();
        match tokio::task::spawn_blocking(move || f(&shared)).await {
            Ok(result) => result.map_err(OpError::into_driver_error),
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
}

impl Shared {
    fn partition(&self, key: &str) -> PartitionId {
        self.partitions.of_key(&self.bucket, key.as_bytes())
    }

    /// Persists the clock's pending ceiling, if any, as a node does before
    /// a timestamp it guards leaves the replica.
    fn persist_clock(&self) -> Result<(), StoreError> {
        let mut hlc = self.hlc.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ceiling) = hlc.ceiling_to_persist() {
            let stored = self.store.raise_hlc_ceiling(ceiling)?;
            hlc.ceiling_persisted(stored);
        }
        Ok(())
    }

    /// The coordinator's local write of `value` (`None`: a tombstone).
    ///
    /// A node draws the timestamp and writes a key on the one thread of
    /// the key's shard, so the stored object never holds a dot of its actor
    /// later than the clock. Here writes of one key run on several threads: the timestamp
    /// is drawn inside the read-modify-write, under the key's lock, for the
    /// same guarantee. A timestamp that crosses the persisted ceiling is
    /// not used: the write is retried after the ceiling is persisted
    /// (once a lease, at most a few times in a row).
    fn write(&self, key: &str, value: Option<Vec<u8>>) -> Result<(), OpError> {
        /// Tries before giving up on a clock whose ceiling keeps moving.
        const MAX_TRIES: usize = 8;
        enum Outcome {
            Written,
            Refused(WriteError),
            CeilingDue,
        }
        let partition = self.partition(key);
        let actor = match self.store.partition_actor(partition)? {
            Some(actor) => actor,
            None => self
                .store
                .ensure_partition_actor(partition, ActorId(rand::random()))?,
        };
        let keyref = KeyRef::new(partition, &self.bucket, key.as_bytes());
        for _ in 0..MAX_TRIES {
            self.persist_clock()?;
            let outcome = self.store.update(keyref, self.durability, |object| {
                let timestamp = {
                    let mut hlc = self.hlc.lock().unwrap_or_else(|e| e.into_inner());
                    let timestamp = hlc.now(wall_ms());
                    if hlc.ceiling_to_persist().is_some() {
                        return Update::Keep(Outcome::CeilingDue);
                    }
                    timestamp
                };
                let write = ClientWrite {
                    context: object.context().clone(),
                    value: value.clone(),
                    content_type: None,
                    lww: false,
                };
                let bound = context_bound(timestamp, self.hlc_config.max_drift);
                match coordinate_write(object, write, actor, timestamp, bound) {
                    Ok(_) => Update::Write(Outcome::Written),
                    Err(refused) => Update::Keep(Outcome::Refused(refused)),
                }
            })?;
            match outcome {
                // The node flushes (group commit) before it acknowledges.
                Outcome::Written => return Ok(self.store.flush()?),
                Outcome::Refused(refused) => return Err(refused.into()),
                Outcome::CeilingDue => continue,
            }
        }
        Err(OpError::ClockCeiling(MAX_TRIES))
    }

    fn read(&self, key: &str) -> Result<ReadResult<()>, OpError> {
        let keyref = KeyRef::new(self.partition(key), &self.bucket, key.as_bytes());
        let found = self
            .store
            .get(keyref)?
            .is_some_and(|object| object.siblings().iter().any(|s| !s.is_tombstone()));
        Ok(if found {
            ReadResult::Found { context: None }
        } else {
            ReadResult::NotFound { context: None }
        })
    }
}

impl Driver for StoreDriver {
    type Context = ();

    async fn read(&self, key: &str) -> Result<ReadResult<()>, DriverError> {
        let key = key.to_owned();
        self.blocking(move |shared| shared.read(&key)).await
    }

    async fn write(&self, key: &str, value: Vec<u8>, _: Option<()>) -> Result<(), DriverError> {
        let key = key.to_owned();
        self.blocking(move |shared| shared.write(&key, Some(value)))
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), DriverError> {
        let key = key.to_owned();
        self.blocking(move |shared| shared.write(&key, None)).await
    }
}
