//! The RocksDB engine.
//!
//! # Layout
//!
//! Three column families:
//!
//! * `data` — one record per key: partition id (4 bytes, big-endian) ++
//!   bucket length (1 byte) ++ bucket ++ key → [`Object::encode`] bytes
//!   (which start with the object format marker). A partition is one
//!   contiguous range: handoff and anti-entropy scan it, dropping it is one
//!   `DeleteRange`.
//! * `hints` — target node id (16 bytes) ++ sequence number (8 bytes,
//!   big-endian) → partition, bucket, key and encoded object. One target's
//!   hints are a contiguous range in the order they were added.
//! * `meta` — node id, generation, HLC ceiling, the next hint sequence
//!   number, one actor id per partition, and generic small values.
//!
//! [`Object::encode`]: crate::object::Object::encode
//!
//! # Options, and why
//!
//! * **Write-ahead log on**, default recovery mode (point in time: a torn
//!   last record from a crash is dropped, everything before it is replayed).
//!   A buffered write is in the log in the page cache when the call returns,
//!   so it survives `kill -9`; a synced write is fsynced first.
//!   `max_total_wal_size` is 256 MiB so the rarely-written `meta` and
//!   `hints` families cannot pin old log files for long (RocksDB flushes the
//!   family holding the oldest log once the total goes over).
//! * **Incremental writeback** ([`RocksConfig::bytes_per_sync`], 1 MiB):
//!   every MiB appended to a log or table file starts the kernel writing it
//!   out, so an fsync finds little left to write. Without it, the fsync
//!   that persists the clock ceiling (a synced `meta` write about once a
//!   second) wrote out the whole second's log while the shard waited, and
//!   the writes of that moment took 10–60 ms instead of 2. 1 MiB is the
//!   value RocksDB itself turns `bytes_per_sync` on with when a rate
//!   limiter is set (`include/rocksdb/options.h`).
//! * **Block cache**: one LRU cache shared by all three families
//!   ([`RocksConfig::block_cache_bytes`], 256 MiB by default), with index and
//!   filter blocks kept in it (so memory is bounded by the cache size) and
//!   level-0 ones pinned (they are consulted by every read). The blocks of
//!   files that compaction made obsolete are erased from it with their
//!   files (`uncache_aggressiveness` 300), so under overwrites the cache
//!   holds what reads can reach rather than filling to its capacity with
//!   dead blocks.
//! * **Bloom filters** on `data` and `hints`: 10 bits per key (about 1%
//!   false positives), full-key filters. Point reads of absent keys — the
//!   first write of every key is a read-modify-write of nothing — then skip
//!   the SST files that cannot hold the key.
//!   `optimize_filters_for_memory` trims filter allocation slack.
//! * **Compression**: LZ4 on every level above the bottommost (cheap enough
//!   to be invisible next to I/O, and these levels are rewritten often by
//!   compaction), ZSTD on the bottommost level, which holds about 90% of the
//!   data with leveled compaction and is rewritten least, so the better
//!   ratio pays for the slower compressor.
//! * **Blocks** of 16 KiB: values are small (objects of a few hundred bytes),
//!   larger blocks compress better and keep the index small; a point read
//!   costs one block either way.
//! * **Memtables**: 64 MiB for `data` by default
//!   ([`RocksConfig::data_write_buffer_bytes`]), 16 MiB for `hints`, 4 MiB
//!   for `meta`; leveled compaction with dynamic level sizes (RocksDB's
//!   default and its recommendation).
//! * **Background jobs**: the number of cores, between 2 and 8;
//!   compactions at the lowest CPU priority
//!   ([`RocksConfig::lower_background_priority`]).

use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError, TryLockError};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options,
    ReadOptions, WriteBatch, WriteOptions, DB,
};

use super::keys::prefix_end;
use super::kv::{delegate_store, Cf, KvBackend, KvStore, Op, Visitor};
use super::{Durability, StoreConfig, StoreError, StoreStats};

/// Tuning of the RocksDB engine. The defaults suit a node with a few GiB of
/// memory; see the module doc for what each option does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RocksConfig {
    /// The block cache shared by all column families.
    pub block_cache_bytes: usize,
    /// The memtable size of the `data` column family.
    pub data_write_buffer_bytes: usize,
    /// Threads for flushes and compactions.
    pub background_jobs: i32,
    /// Run compactions at the lowest CPU priority (nice 19, RocksDB's
    /// `LowerThreadPoolCPUPriority` on its low-priority pool), so that a
    /// compaction — hundreds of milliseconds of a core under overwrites —
    /// does not take the cores from the threads serving requests; it runs
    /// on what they leave idle. If compactions fall behind, RocksDB slows
    /// writes down as it always does (write stalls), so nothing is lost.
    /// Flushes keep their priority: a flush that falls behind stops every
    /// write once the next memtable is full. The thread pools are the
    /// process's (RocksDB's default environment): once one database lowers
    /// them, they stay lowered for every database of the process. `true`
    /// by default.
    pub lower_background_priority: bool,
    /// Start writing a log or table file out to disk after every this many
    /// bytes appended to it (RocksDB's `wal_bytes_per_sync` and
    /// `bytes_per_sync`, which start writeback without waiting for it), so
    /// that an fsync — a synced write, or the group commit's sync — waits
    /// only for the bytes since the last such point, not for everything
    /// written since the last fsync. 0 leaves writeback to the kernel.
    /// 1 MiB by default.
    pub bytes_per_sync: u64,
    /// UNSAFE, for tests only: write without RocksDB's write-ahead log, so
    /// a crash (`kill -9`) loses every write not yet flushed to an SST file,
    /// acknowledged or not; `sync` writes are not synced either. It exists
    /// only so that a fault-injection run can prove its checkers catch lost
    /// writes (a negative control). `false` by default.
    pub unsafe_disable_wal: bool,
    /// Group commit: writes wait in RocksDB's write-ahead-log buffer
    /// (`manual_wal_flush`) instead of reaching the log file one by one,
    /// and [`Store::flush`](super::Store::flush) writes them all with one
    /// system call, and fsyncs them once if any asked for
    /// [`Durability::Sync`]. The caller must flush before it acknowledges
    /// anything those writes decided: the node's engine flushes before it
    /// hands out any effect, so a batch of replica writes costs one log
    /// write and at most one fsync (RocksDB's own group commit needs
    /// concurrent writers; the engine is one thread). `false` by default:
    /// every write is in the log, and fsynced for `Sync`, when it returns.
    pub group_commit: bool,
}

impl Default for RocksConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        RocksConfig {
            block_cache_bytes: 256 << 20,
            data_write_buffer_bytes: 64 << 20,
            background_jobs: cores.clamp(2, 8) as i32,
            lower_background_priority: true,
            bytes_per_sync: 1 << 20,
            unsafe_disable_wal: false,
            group_commit: false,
        }
    }
}

/// The database behind [`RocksStore`].
pub(crate) struct RocksKv {
    db: DB,
    path: PathBuf,
    buffered: WriteOptions,
    synced: WriteOptions,
    /// Writes wait for [`KvBackend::flush`] ([`RocksConfig::group_commit`]).
    group_commit: bool,
    /// What the writes since the last flush ask for: [`UNFLUSHED_NONE`],
    /// [`UNFLUSHED_BUFFERED`] or [`UNFLUSHED_SYNC`].
    unflushed: AtomicU8,
    /// Held while the log is flushed or synced.
    flushing: Mutex<()>,
}

const UNFLUSHED_NONE: u8 = 0;
const UNFLUSHED_BUFFERED: u8 = 1;
const UNFLUSHED_SYNC: u8 = 2;

impl fmt::Debug for RocksKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksKv")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RocksKv {
    fn cf(&self, cf: Cf) -> &ColumnFamily {
        self.db
            .cf_handle(cf.name())
            .expect("every column family is created at open")
    }

    /// The options of a write of `durability`: under group commit every
    /// write goes to the log buffer, and [`owe`](RocksKv::owe) records what
    /// the next flush owes it.
    fn write_options(&self, durability: Durability) -> &WriteOptions {
        match durability {
            Durability::Buffered => &self.buffered,
            Durability::Sync if self.group_commit => &self.buffered,
            Durability::Sync => &self.synced,
        }
    }

    /// Records, once a write is in the log buffer, what the next flush owes
    /// it. After the write, not before: a flush that starts in between
    /// either sees the mark or started after the write, so it covers it.
    fn owe(&self, durability: Durability) {
        if self.group_commit {
            let owed = match durability {
                Durability::Buffered => UNFLUSHED_BUFFERED,
                Durability::Sync => UNFLUSHED_SYNC,
            };
            self.unflushed.fetch_max(owed, Ordering::AcqRel);
        }
    }
}

impl Drop for RocksKv {
    fn drop(&mut self) {
        // Writes a caller never flushed still reach the log on a clean
        // close, as they would without group commit.
        // Nothing is left to report a failure to; the node's clean stop
        // flushes before it gets here.
        if self.unflushed.load(Ordering::Acquire) != UNFLUSHED_NONE {
            let _ = self.db.flush_wal(true);
        }
    }
}

impl KvBackend for RocksKv {
    fn get<R>(
        &self,
        cf: Cf,
        key: &[u8],
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, StoreError> {
        let value = self
            .db
            .get_pinned_cf(self.cf(cf), key)
            .map_err(|e| StoreError::io("get", e))?;
        Ok(value.map(|value| read(&value)))
    }

    fn write(&self, ops: Vec<Op>, durability: Durability) -> Result<(), StoreError> {
        // One put, the common case (a key's read-modify-write): RocksDB
        // makes it a batch of one itself, without a batch built here.
        if let [Op::Put(cf, key, value)] = ops.as_slice() {
            self.db
                .put_cf_opt(self.cf(*cf), key, value, self.write_options(durability))
                .map_err(|e| StoreError::io("write", e))?;
            self.owe(durability);
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for op in ops {
            match op {
                Op::Put(cf, key, value) => batch.put_cf(self.cf(cf), key, value),
                Op::Delete(cf, key) => batch.delete_cf(self.cf(cf), key),
                Op::DeletePrefix(cf, prefix) => match prefix_end(&prefix) {
                    Some(end) => batch.delete_range_cf(self.cf(cf), prefix, end),
                    None => {
                        // An all-0xff prefix has no end key: delete one by one.
                        self.scan(cf, &prefix, &prefix, &mut |key, _| {
                            batch.delete_cf(self.cf(cf), key);
                            ControlFlow::Continue(())
                        })?;
                    }
                },
            }
        }
        self.db
            .write_opt(batch, self.write_options(durability))
            .map_err(|e| StoreError::io("write", e))?;
        self.owe(durability);
        Ok(())
    }

    fn scan(
        &self,
        cf: Cf,
        prefix: &[u8],
        start: &[u8],
        visit: &mut Visitor<'_>,
    ) -> Result<(), StoreError> {
        let mut read = ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            read.set_iterate_upper_bound(end);
        }
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(cf), read);
        iter.seek(start);
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if !key.starts_with(prefix) || visit(key, value).is_break() {
                break;
            }
            iter.next();
        }
        iter.status().map_err(|e| StoreError::io("scan", e))
    }

    fn sync(&self) -> Result<(), StoreError> {
        let _flushing = self.flushing.lock().unwrap_or_else(PoisonError::into_inner);
        let owed = self.unflushed.swap(UNFLUSHED_NONE, Ordering::AcqRel);
        self.db.flush_wal(true).map_err(|e| {
            self.unflushed.fetch_max(owed, Ordering::AcqRel);
            StoreError::io("sync", e)
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        if self.unflushed.load(Ordering::Acquire) == UNFLUSHED_NONE && !self.group_commit {
            return Ok(());
        }
        // One flush at a time: a caller whose writes another caller's
        // flush took returns only once that flush is done.
        let _flushing = self.flushing.lock().unwrap_or_else(PoisonError::into_inner);
        let owed = self.unflushed.swap(UNFLUSHED_NONE, Ordering::AcqRel);
        if owed == UNFLUSHED_NONE {
            return Ok(());
        }
        self.db.flush_wal(owed == UNFLUSHED_SYNC).map_err(|e| {
            // Still owed: the next flush tries again.
            self.unflushed.fetch_max(owed, Ordering::AcqRel);
            StoreError::io("flush", e)
        })
    }

    fn owes_sync(&self) -> bool {
        // Another caller's flush under way: this caller's flush would wait
        // for it, and it may be an fsync.
        self.unflushed.load(Ordering::Acquire) == UNFLUSHED_SYNC
            || matches!(self.flushing.try_lock(), Err(TryLockError::WouldBlock))
    }

    fn stats(&self) -> StoreStats {
        use rocksdb::properties::{
            BLOCK_CACHE_USAGE, CUR_SIZE_ALL_MEM_TABLES, ESTIMATE_LIVE_DATA_SIZE,
            ESTIMATE_PENDING_COMPACTION_BYTES,
        };
        // Summed over the column families; a family that does not know a
        // figure adds nothing, and no family knowing it gives `None`.
        let sum = |name: &rocksdb::properties::PropName| {
            [Cf::Data, Cf::Hints, Cf::Meta]
                .into_iter()
                .filter_map(|cf| {
                    self.db
                        .property_int_value_cf(self.cf(cf), name)
                        .ok()
                        .flatten()
                })
                .reduce(u64::saturating_add)
        };
        StoreStats {
            live_data_bytes: sum(ESTIMATE_LIVE_DATA_SIZE),
            memtable_bytes: sum(CUR_SIZE_ALL_MEM_TABLES),
            pending_compaction_bytes: sum(ESTIMATE_PENDING_COMPACTION_BYTES),
            // One cache serves every family, so any family's figure is the
            // whole cache's (the database-wide one is the default
            // family's own cache, which Chorus does not use).
            block_cache_bytes: self
                .db
                .property_int_value_cf(self.cf(Cf::Data), BLOCK_CACHE_USAGE)
                .ok()
                .flatten(),
            // The store above the backend fills it in.
            object_cache_bytes: None,
        }
    }
}

/// The RocksDB engine (see the module doc for its layout and options).
#[derive(Debug)]
pub struct RocksStore {
    store: KvStore<RocksKv>,
}

delegate_store!(RocksStore, store);

impl RocksStore {
    /// The column family of objects.
    pub const DATA_CF: &'static str = "data";
    /// The column family of hints.
    pub const HINTS_CF: &'static str = "hints";
    /// The column family of node metadata.
    pub const META_CF: &'static str = "meta";

    /// Opens (creating if needed) the database in directory `path`.
    pub fn open(
        path: impl AsRef<Path>,
        config: StoreConfig,
        rocks: &RocksConfig,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let (db_options, families) = Self::rocksdb_options(rocks);
        let db = DB::open_cf_descriptors(&db_options, &path, families).map_err(|e| {
            // RocksDB has no error kind of its own for a held lock; its
            // message names the LOCK file ("While lock file: …" from
            // another process, "lock hold by current process" from this one).
            let message = e.to_string();
            if message.contains("lock") && message.contains("LOCK") {
                StoreError::InUse { path: path.clone() }
            } else {
                StoreError::io("open", e)
            }
        })?;
        // Blocks of the files compaction replaced would otherwise stay in
        // the block cache until the LRU evicts them, so under overwrites
        // the cache (and the process's memory) grows toward its capacity
        // with blocks no read can reach. RocksDB erases them as their files
        // become obsolete when this is set; 300 is the value its authors
        // expect to make the default (`uncache_aggressiveness`, a mutable
        // column family option the Rust binding has no setter for).
        for name in [Self::DATA_CF, Self::HINTS_CF, Self::META_CF] {
            let cf = db.cf_handle(name).expect("opened with every family");
            db.set_options_cf(cf, &[("uncache_aggressiveness", "300")])
                .map_err(|e| StoreError::io("open", e))?;
        }
        let mut buffered = WriteOptions::default();
        let mut synced = WriteOptions::default();
        if rocks.unsafe_disable_wal {
            // RocksDB refuses a synced write without a WAL; there is nothing
            // to sync, so both durabilities write to the memtable alone.
            buffered.disable_wal(true);
            synced.disable_wal(true);
        } else {
            synced.set_sync(true);
        }
        let kv = RocksKv {
            db,
            path,
            buffered,
            synced,
            group_commit: rocks.group_commit && !rocks.unsafe_disable_wal,
            unflushed: AtomicU8::new(UNFLUSHED_NONE),
            flushing: Mutex::new(()),
        };
        Ok(RocksStore {
            store: KvStore::open(kv, config)?,
        })
    }

    /// The options this engine opens its database with: the database-wide
    /// options and one descriptor per column family. Public so that tools and
    /// benchmarks can open the same files with exactly the same settings.
    pub fn rocksdb_options(rocks: &RocksConfig) -> (Options, Vec<ColumnFamilyDescriptor>) {
        let cache = Cache::new_lru_cache(rocks.block_cache_bytes);

        let mut db = Options::default();
        db.create_if_missing(true);
        db.create_missing_column_families(true);
        db.set_max_background_jobs(rocks.background_jobs);
        db.set_max_total_wal_size(256 << 20);
        db.set_wal_bytes_per_sync(rocks.bytes_per_sync);
        db.set_bytes_per_sync(rocks.bytes_per_sync);
        if rocks.lower_background_priority {
            // `Env::new` wraps RocksDB's default environment, which always
            // exists; were it to fail, compactions would only run at normal
            // priority.
            if let Ok(mut env) = rocksdb::Env::new() {
                env.lower_thread_pool_cpu_priority();
                db.set_env(&env);
            }
        }
        if rocks.group_commit && !rocks.unsafe_disable_wal {
            db.set_manual_wal_flush(true);
        }

        let table = |bloom: bool| {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_block_size(16 << 10);
            table.set_cache_index_and_filter_blocks(true);
            table.set_pin_l0_filter_and_index_blocks_in_cache(true);
            table.set_format_version(6);
            if bloom {
                table.set_bloom_filter(10.0, false);
                table.set_whole_key_filtering(true);
                table.set_optimize_filters_for_memory(true);
            }
            table
        };
        let family = |write_buffer: usize, bloom: bool| {
            let mut cf = Options::default();
            cf.set_block_based_table_factory(&table(bloom));
            cf.set_write_buffer_size(write_buffer);
            cf.set_level_compaction_dynamic_level_bytes(true);
            cf.set_compression_type(DBCompressionType::Lz4);
            cf.set_bottommost_compression_type(DBCompressionType::Zstd);
            cf
        };
        let families = vec![
            ColumnFamilyDescriptor::new(Self::DATA_CF, family(rocks.data_write_buffer_bytes, true)),
            ColumnFamilyDescriptor::new(Self::HINTS_CF, family(16 << 20, true)),
            ColumnFamilyDescriptor::new(Self::META_CF, family(4 << 20, false)),
        ];
        (db, families)
    }

    /// Writes every column family's memtable to SST files, so that reads
    /// are served from the files and the block cache (before a checkpoint,
    /// and in benchmarks that measure reads from files).
    pub fn flush_memtables(&self) -> Result<(), StoreError> {
        let kv = self.store.backend();
        for cf in [Cf::Data, Cf::Hints, Cf::Meta] {
            kv.db
                .flush_cf(kv.cf(cf))
                .map_err(|e| StoreError::io("flush", e))?;
        }
        Ok(())
    }

    /// Compacts every column family's whole key range now, rewriting its
    /// files without the versions and deletions they supersede (in tests
    /// that need files made obsolete, and before a backup).
    pub fn compact(&self) -> Result<(), StoreError> {
        let kv = self.store.backend();
        for cf in [Cf::Data, Cf::Hints, Cf::Meta] {
            kv.db
                .compact_range_cf(kv.cf(cf), None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.store.backend().path
    }
}
