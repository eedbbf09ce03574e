//! The `Store` trait over RocksDB against raw RocksDB, in the same run, with
//! the same options (`RocksStore::rocksdb_options`), the same keys (the
//! store's encoded data keys) and the same value bytes (an encoded object
//! holding one 100-byte value and a two-actor context).
//!
//! Both databases are preloaded with 100,000 keys and flushed to SST files,
//! then every line reads or writes existing keys in the same pseudo-random
//! order, one thread, buffered writes (WAL on, no fsync).
//!
//! * `get/raw`: `DB::get_pinned_cf` of the encoded key. Nothing else.
//! * `get/store`: `Store::get`: encode the key from (partition, bucket, key),
//!   the same `get_pinned_cf`, `Object::decode` of the bytes.
//! * `put/raw_get_put`: `get_pinned_cf` then `put_cf` of pre-encoded bytes:
//!   what a read-modify-write costs RocksDB itself.
//! * `put/store_update`: `Store::update` with the coordinator's write path:
//!   allocate the 100-byte value, encode the key, lock its stripe,
//!   `get_pinned_cf`, `Object::decode`, `Object::write` (context of the read,
//!   next dot), `Object::encode`, one-entry `WriteBatch`, `write_opt`.
//! * `put/raw_put`: `put_cf` alone, for scale: a write without the read.
//!
//! The `store` lines run with the store's object cache off, so they make
//! the same RocksDB calls as the raw lines. The `store_cached` lines run
//! the same operations on a third database opened as a node opens it, with
//! the default object cache (32 MiB), which holds all 100,000 keys (the
//! bench prints its weight after the preload): reads and the read of a
//! read-modify-write are cache hits.

use std::hint::black_box;
use std::time::Duration;

use chorus_ring::PartitionId;
use chorus_storage::hlc::Timestamp;
use chorus_storage::object::Object;
use chorus_storage::store::{
    data_key, Durability, KeyRef, RocksConfig, RocksStore, Store, StoreConfig, Update,
};
use chorus_storage::version::{ActorId, Dot, VersionVector};
use criterion::{criterion_group, criterion_main, Criterion};
use rocksdb::DB;

const KEYS: u64 = 100_000;
const BUCKET: &[u8] = b"bench";

fn user_key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

fn partition(i: u64) -> PartitionId {
    PartitionId((i % 64) as u32)
}

fn object(counter: u64) -> Object {
    let mut object = Object::new();
    let dot = Dot::new(ActorId(1), counter);
    object
        .write(
            &VersionVector::new(),
            dot,
            Timestamp::new(1_700_000_000_000, 0),
            Some(vec![0xab; 100]),
        )
        .unwrap();
    object
}

/// A fixed pseudo-random walk over the keys, the same for every line.
struct Walk(u64);

impl Walk {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % KEYS
    }
}

fn bench(c: &mut Criterion) {
    let rocks = RocksConfig::default();
    let store_dir = tempfile::tempdir().unwrap();
    let raw_dir = tempfile::tempdir().unwrap();
    let cached_dir = tempfile::tempdir().unwrap();
    let uncached = StoreConfig {
        object_cache_bytes: 0,
        ..StoreConfig::default()
    };
    let store = RocksStore::open(store_dir.path(), uncached, &rocks).unwrap();
    let cached = RocksStore::open(cached_dir.path(), StoreConfig::default(), &rocks).unwrap();
    let (options, families) = RocksStore::rocksdb_options(&rocks);
    let raw = DB::open_cf_descriptors(&options, raw_dir.path(), families).unwrap();
    let data = raw.cf_handle(RocksStore::DATA_CF).unwrap();

    let stored_keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| data_key(KeyRef::new(partition(i), BUCKET, &user_key(i))).unwrap())
        .collect();
    let initial = object(1);
    // What the store writes once its update loop runs: the first version
    // superseded by one from a second actor with a large counter.
    let mut rewritten = initial.clone();
    let context = rewritten.context().clone();
    rewritten
        .write_in(
            &context,
            Dot::new(ActorId(2), 1_000_000),
            Timestamp::new(1_700_000_000_000, 0),
            Some(vec![0xab; 100]),
        )
        .unwrap();
    let bytes = rewritten.encode();
    println!(
        "stored value: {} bytes encoded (100-byte value)",
        bytes.len()
    );
    let initial = rewritten;
    for i in 0..KEYS {
        for store in [&store, &cached] {
            store
                .merge(
                    KeyRef::new(partition(i), BUCKET, &user_key(i)),
                    &initial,
                    Durability::Buffered,
                )
                .unwrap();
        }
        raw.put_cf(data, &stored_keys[i as usize], &bytes).unwrap();
    }
    raw.flush_cf(data).unwrap();
    store.flush_memtables().unwrap();
    cached.flush_memtables().unwrap();
    println!(
        "object cache after the preload: {} bytes",
        cached.stats().object_cache_bytes.unwrap_or(0)
    );

    let mut group = c.benchmark_group("get");
    let mut walk = Walk(1);
    group.bench_function("raw", |b| {
        b.iter(|| {
            let k = &stored_keys[walk.next() as usize];
            black_box(raw.get_pinned_cf(data, k).unwrap().unwrap().len())
        })
    });
    let mut walk = Walk(1);
    group.bench_function("store", |b| {
        b.iter(|| {
            let i = walk.next();
            black_box(
                store
                    .get(KeyRef::new(partition(i), BUCKET, &user_key(i)))
                    .unwrap()
                    .unwrap(),
            )
        })
    });
    let mut walk = Walk(1);
    group.bench_function("store_cached", |b| {
        b.iter(|| {
            let i = walk.next();
            black_box(
                cached
                    .get(KeyRef::new(partition(i), BUCKET, &user_key(i)))
                    .unwrap()
                    .unwrap(),
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group("put");
    let mut walk = Walk(2);
    group.bench_function("raw_get_put", |b| {
        b.iter(|| {
            let k = &stored_keys[walk.next() as usize];
            black_box(raw.get_pinned_cf(data, k).unwrap().unwrap().len());
            raw.put_cf(data, k, &bytes).unwrap();
        })
    });
    for (name, store) in [("store_update", &store), ("store_update_cached", &cached)] {
        let mut walk = Walk(2);
        let mut counter = 1_000_000;
        group.bench_function(name, |b| {
            b.iter(|| {
                let i = walk.next();
                counter += 1;
                let value = vec![0xab; 100];
                store
                    .update(
                        KeyRef::new(partition(i), BUCKET, &user_key(i)),
                        Durability::Buffered,
                        |object| {
                            let context = object.context().clone();
                            let dot = Dot::new(ActorId(2), counter);
                            object
                                .write_in(
                                    &context,
                                    dot,
                                    Timestamp::new(1_700_000_000_000, 0),
                                    Some(value),
                                )
                                .unwrap();
                            Update::Write(())
                        },
                    )
                    .unwrap();
            })
        });
    }
    let mut walk = Walk(2);
    group.bench_function("raw_put", |b| {
        b.iter(|| {
            let k = &stored_keys[walk.next() as usize];
            raw.put_cf(data, k, &bytes).unwrap();
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(8));
    targets = bench
}
criterion_main!(benches);
