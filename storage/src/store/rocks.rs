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
//! * **Block cache**: one LRU cache shared by all three families
//!   ([`RocksConfig::block_cache_bytes`], 256 MiB by default), with index and
//!   filter blocks kept in it (so memory is bounded by the cache size) and
//!   level-0 ones pinned (they are consulted by every read).
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
//! * **Background jobs**: the number of cores, between 2 and 8.

use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

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
    /// UNSAFE, for tests only: write without RocksDB's write-ahead log, so
    /// a crash (`kill -9`) loses every write not yet flushed to an SST file,
    /// acknowledged or not; `sync` writes are not synced either. It exists
    /// only so that a fault-injection run can prove its checkers catch lost
    /// writes (a negative control). `false` by default.
    pub unsafe_disable_wal: bool,
}

impl Default for RocksConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        RocksConfig {
            block_cache_bytes: 256 << 20,
            data_write_buffer_bytes: 64 << 20,
            background_jobs: cores.clamp(2, 8) as i32,
            unsafe_disable_wal: false,
        }
    }
}

/// The database behind [`RocksStore`].
pub(crate) struct RocksKv {
    db: DB,
    path: PathBuf,
    buffered: WriteOptions,
    synced: WriteOptions,
}

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

    fn write_options(&self, durability: Durability) -> &WriteOptions {
        match durability {
            Durability::Buffered => &self.buffered,
            Durability::Sync => &self.synced,
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
            return self
                .db
                .put_cf_opt(self.cf(*cf), key, value, self.write_options(durability))
                .map_err(|e| StoreError::io("write", e));
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
            .map_err(|e| StoreError::io("write", e))
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
        self.db
            .flush_wal(true)
            .map_err(|e| StoreError::io("sync", e))
    }

    fn stats(&self) -> StoreStats {
        use rocksdb::properties::{
            CUR_SIZE_ALL_MEM_TABLES, ESTIMATE_LIVE_DATA_SIZE, ESTIMATE_PENDING_COMPACTION_BYTES,
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
        let db = DB::open_cf_descriptors(&db_options, &path, families)
            .map_err(|e| StoreError::io("open", e))?;
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

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.store.backend().path
    }
}
