//! One conformance suite for every storage engine.
//!
//! Each check is a generic function over a [`Harness`] (how to create and
//! reopen a store of one engine); the `conformance!` macro instantiates every
//! check as a test per engine.

mod common;

use std::sync::Arc;

use chorus_ring::PartitionId;
use chorus_storage::hlc::Timestamp;
use chorus_storage::object::Object;
use chorus_storage::store::{
    Decision, Durability, KeyRef, MemoryStore, Store, StoreConfig, StoreError, Update,
    MAX_BATCH_KEYS, MAX_BUCKET_LEN, MAX_KEY_LEN, MAX_META_NAME_LEN, MAX_META_VALUE_LEN,
};
use chorus_storage::version::{ActorId, Dot};
use common::{object, values};
use uuid::Uuid;

/// How to get a store of one engine, and reopen it with everything it wrote.
trait Harness: Sized {
    type S: Store + 'static;
    fn create(config: StoreConfig) -> Self;
    fn store(&self) -> &Self::S;
    /// Closes the store and opens it again (a clean restart).
    fn reopen(self) -> Self;
}

struct Memory(MemoryStore);

impl Harness for Memory {
    type S = MemoryStore;
    fn create(config: StoreConfig) -> Self {
        Memory(MemoryStore::new(config))
    }
    fn store(&self) -> &MemoryStore {
        &self.0
    }
    fn reopen(self) -> Self {
        Memory(self.0.restart())
    }
}

#[cfg(feature = "rocksdb")]
struct Rocks {
    // Field order: the store closes before the directory is removed.
    store: chorus_storage::store::RocksStore,
    config: StoreConfig,
    dir: tempfile::TempDir,
}

#[cfg(feature = "rocksdb")]
impl Rocks {
    fn rocks_config() -> chorus_storage::store::RocksConfig {
        chorus_storage::store::RocksConfig {
            block_cache_bytes: 8 << 20,
            data_write_buffer_bytes: 4 << 20,
            background_jobs: 2,
            lower_background_priority: true,
            bytes_per_sync: 1 << 20,
            unsafe_disable_wal: false,
            group_commit: false,
        }
    }
}

#[cfg(feature = "rocksdb")]
impl Harness for Rocks {
    type S = chorus_storage::store::RocksStore;
    fn create(config: StoreConfig) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store =
            chorus_storage::store::RocksStore::open(dir.path(), config, &Self::rocks_config())
                .expect("open a fresh database");
        Rocks { store, config, dir }
    }
    fn store(&self) -> &Self::S {
        &self.store
    }
    fn reopen(self) -> Self {
        let Rocks { store, config, dir } = self;
        drop(store);
        let store =
            chorus_storage::store::RocksStore::open(dir.path(), config, &Self::rocks_config())
                .expect("reopen the database");
        Rocks { store, config, dir }
    }
}

fn fresh<H: Harness>() -> H {
    H::create(StoreConfig::default())
}

const P: PartitionId = PartitionId(7);

fn key<'a>(bucket: &'a [u8], key: &'a [u8]) -> KeyRef<'a> {
    KeyRef::new(P, bucket, key)
}

/// The value of the single live sibling, as a counter.
fn counter_of(object: &Object) -> u64 {
    match object.siblings() {
        [] => 0,
        [only] => u64::from_be_bytes(
            only.value
                .as_deref()
                .expect("a value")
                .try_into()
                .expect("8 bytes"),
        ),
        many => panic!("{} siblings: an update was lost", many.len()),
    }
}

// ----- data -----

fn get_of_a_missing_key_is_none<H: Harness>() {
    let h = fresh::<H>();
    assert_eq!(h.store().get(key(b"b", b"k")).unwrap(), None);
}

fn update_writes_or_keeps<H: Harness>() {
    let h = fresh::<H>();
    let store = h.store();
    let k = key(b"b", b"k");
    let written = object(1, 1, b"v1");
    let returned = store
        .update(k, Durability::Buffered, |current| {
            assert!(current.is_empty(), "a missing key reads as an empty object");
            *current = written.clone();
            Update::Write(42)
        })
        .unwrap();
    assert_eq!(returned, 42);
    assert_eq!(store.get(k).unwrap(), Some(written.clone()));

    let decision = store
        .read_modify_write(k, Durability::Sync, &mut |current| {
            assert_eq!(*current, written);
            *current = object(2, 1, b"discarded");
            Decision::Keep
        })
        .unwrap();
    assert_eq!(decision, Decision::Keep);
    assert_eq!(store.get(k).unwrap(), Some(written), "Keep stores nothing");
}

fn writing_an_empty_object_removes_the_key<H: Harness>() {
    let h = fresh::<H>();
    let store = h.store();
    let k = key(b"b", b"k");
    store
        .merge(k, &object(1, 1, b"v"), Durability::Buffered)
        .unwrap();
    store
        .read_modify_write(k, Durability::Buffered, &mut |current| {
            *current = Object::new();
            Decision::Write
        })
        .unwrap();
    assert_eq!(store.get(k).unwrap(), None);
    assert!(store.scan_partition(P, None, 10).unwrap().is_empty());
}

fn concurrent_read_modify_writes_lose_no_update<H: Harness>() {
    const THREADS: u64 = 4;
    const INCREMENTS: u64 = 100;
    let h = fresh::<H>();
    let store = h.store();
    let k = key(b"counters", b"hot");
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            scope.spawn(move || {
                for i in 1..=INCREMENTS {
                    store
                        .update(k, Durability::Buffered, |current| {
                            let next = counter_of(current) + 1;
                            let context = current.context().clone();
                            let dot = Dot::new(ActorId(thread + 1), i);
                            current
                                .write_in(
                                    &context,
                                    dot,
                                    Timestamp::new(i, 0),
                                    Some(next.to_be_bytes().to_vec()),
                                )
                                .expect("a fresh dot");
                            Update::Write(())
                        })
                        .unwrap();
                }
            });
        }
    });
    let last = store.get(k).unwrap().expect("the counter exists");
    assert_eq!(
        last.siblings().len(),
        1,
        "a lost update leaves a concurrent sibling"
    );
    assert_eq!(counter_of(&last), THREADS * INCREMENTS);
}

fn merge_joins_remote_objects<H: Harness>() {
    let h = fresh::<H>();
    let store = h.store();
    let k = key(b"b", b"k");
    let a = object(1, 1, b"a");
    assert!(
        store.merge(k, &a, Durability::Buffered).unwrap(),
        "into nothing"
    );
    assert_eq!(store.get(k).unwrap(), Some(a.clone()));
    assert!(
        !store.merge(k, &a, Durability::Buffered).unwrap(),
        "idempotent"
    );

    let b = object(2, 1, b"b");
    assert!(store.merge(k, &b, Durability::Buffered).unwrap());
    let both = store.get(k).unwrap().unwrap();
    assert_eq!(
        values(&both),
        vec![b"a".to_vec(), b"b".to_vec()],
        "concurrent versions are siblings"
    );

    let mut resolved = both.clone();
    resolved
        .write_in(
            &both.context().clone(),
            Dot::new(ActorId(3), 1),
            Timestamp::new(9, 0),
            Some(b"c".to_vec()),
        )
        .unwrap();
    assert!(store.merge(k, &resolved, Durability::Sync).unwrap());
    assert_eq!(values(&store.get(k).unwrap().unwrap()), vec![b"c".to_vec()]);
    assert!(
        !store.merge(k, &a, Durability::Buffered).unwrap(),
        "a superseded version changes nothing"
    );
    assert_eq!(store.get(k).unwrap(), Some(resolved));
}

fn scan_lists_one_partition_in_order_and_resumes<H: Harness>() {
    let h = fresh::<H>();
    let store = h.store();
    let buckets: [&[u8]; 4] = [b"b", b"aa", b"", b"a"];
    let keys: [&[u8]; 4] = [b"k2", b"", b"k1", b"k1\0"];
    let partitions = [
        PartitionId(0),
        PartitionId(6),
        P,
        PartitionId(8),
        PartitionId(u32::MAX),
    ];
    for (n, &partition) in partitions.iter().enumerate() {
        for bucket in buckets {
            for k in keys {
                let value = [&[n as u8], bucket, k].concat();
                store
                    .merge(
                        KeyRef::new(partition, bucket, k),
                        &object(1, 1, &value),
                        Durability::Buffered,
                    )
                    .unwrap();
            }
        }
    }
    // Stored order: bucket length, then bucket bytes, then key bytes.
    let mut expected: Vec<(Vec<u8>, Vec<u8>)> = buckets
        .iter()
        .flat_map(|b| keys.iter().map(|k| (b.to_vec(), k.to_vec())))
        .collect();
    expected.sort_by(|(b1, k1), (b2, k2)| (b1.len(), b1, k1).cmp(&(b2.len(), b2, k2)));

    for (n, &partition) in partitions.iter().enumerate() {
        let mut seen = Vec::new();
        let mut after: Option<(Vec<u8>, Vec<u8>)> = None;
        for _page in 0..100 {
            let page = store
                .scan_partition(
                    partition,
                    after.as_ref().map(|(b, k)| (b.as_slice(), k.as_slice())),
                    3,
                )
                .unwrap();
            assert!(page.len() <= 3, "a page holds at most the limit");
            let Some(last) = page.last() else { break };
            after = Some((last.bucket.clone(), last.key.clone()));
            for entry in page {
                assert_eq!(
                    values(&entry.object),
                    vec![[&[n as u8], entry.bucket.as_slice(), entry.key.as_slice()].concat()],
                    "only this partition's objects"
                );
                seen.push((entry.bucket, entry.key));
            }
        }
        assert_eq!(seen, expected, "partition {partition}");
    }
    assert!(store
        .scan_partition(PartitionId(5), None, 10)
        .unwrap()
        .is_empty());
    assert!(store.scan_partition(P, None, 0).unwrap().is_empty());
}

fn drop_partition_removes_its_range_and_actor<H: Harness>() {
    let h = fresh::<H>();
    let store = h.store();
    let others = [PartitionId(6), PartitionId(8)];
    for partition in [P, others[0], others[1], PartitionId(u32::MAX)] {
        store
            .merge(
                KeyRef::new(partition, b"b", b"k"),
                &object(1, 1, b"v"),
                Durability::Buffered,
            )
            .unwrap();
        store
            .ensure_partition_actor(partition, ActorId(u64::from(partition.0) + 100))
            .unwrap();
    }
    store.drop_partition(P).unwrap();
    store.drop_partition(PartitionId(u32::MAX)).unwrap();
    for partition in [P, PartitionId(u32::MAX)] {
        assert!(store
            .scan_partition(partition, None, 10)
            .unwrap()
            .is_empty());
        assert_eq!(store.get(KeyRef::new(partition, b"b", b"k")).unwrap(), None);
        assert_eq!(
            store.partition_actor(partition).unwrap(),
            None,
            "the dropped replica's actor is gone"
        );
    }
    for partition in others {
        assert_eq!(store.scan_partition(partition, None, 10).unwrap().len(), 1);
        assert_eq!(
            store.partition_actor(partition).unwrap(),
            Some(ActorId(u64::from(partition.0) + 100))
        );
    }
    assert_eq!(
        store.ensure_partition_actor(P, ActorId(999)).unwrap(),
        ActorId(999),
        "a new actor"
    );
}

fn batches_apply_together<H: Harness>() {
    let h = fresh::<H>();
    let store = h.store();
    let (x, y, z) = (object(1, 1, b"x"), object(2, 1, b"y"), object(3, 1, b"z"));
    let entries = [
        (KeyRef::new(PartitionId(1), b"b", b"x"), &x),
        (KeyRef::new(PartitionId(2), b"b", b"y"), &y),
        (KeyRef::new(PartitionId(3), b"b", b"z"), &z),
    ];
    assert_eq!(
        store.merge_batch(&entries, Durability::Sync).unwrap(),
        vec![true, true, true]
    );
    for (k, o) in entries {
        assert_eq!(store.get(k).unwrap().as_ref(), Some(o));
    }
    assert_eq!(
        store.merge_batch(&entries, Durability::Buffered).unwrap(),
        vec![false, false, false]
    );

    // A key listed twice sees what the earlier call left: nothing after Keep,
    // the written object after Write.
    let k = key(b"b", b"twice");
    let mut calls = Vec::new();
    let decisions = store
        .read_modify_write_batch(&[k, k, k], Durability::Buffered, &mut |i, current| {
            calls.push((i, current.siblings().len()));
            let dot = Dot::new(ActorId(10 + i as u64), 1);
            current
                .write_in(
                    &current.context().clone(),
                    dot,
                    Timestamp::new(1, 0),
                    Some(vec![i as u8]),
                )
                .unwrap();
            if i == 0 {
                Decision::Keep
            } else {
                Decision::Write
            }
        })
        .unwrap();
    assert_eq!(
        decisions,
        vec![Decision::Keep, Decision::Write, Decision::Write]
    );
    assert_eq!(calls, vec![(0, 0), (1, 0), (2, 1)]);
    assert_eq!(values(&store.get(k).unwrap().unwrap()), vec![vec![2u8]]);
}

fn a_batch_with_an_invalid_key_writes_nothing<H: Harness>() {
    let h = fresh::<H>();
    let store = h.store();
    let long_bucket = vec![b'b'; MAX_BUCKET_LEN + 1];
    let v = object(1, 1, b"v");
    let entries = [(key(b"b", b"ok"), &v), (key(&long_bucket, b"k"), &v)];
    assert!(matches!(
        store.merge_batch(&entries, Durability::Sync),
        Err(StoreError::BucketTooLong { .. })
    ));
    assert_eq!(store.get(key(b"b", b"ok")).unwrap(), None);

    let too_many = vec![key(b"b", b"k"); MAX_BATCH_KEYS + 1];
    let err = store
        .read_modify_write_batch(&too_many, Durability::Buffered, &mut |_, _| Decision::Keep)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::BatchTooLarge { len, max } if len == MAX_BATCH_KEYS + 1 && max == MAX_BATCH_KEYS)
    );
}

fn buckets_and_keys_are_bounded<H: Harness>() {
    let h = fresh::<H>();
    let store = h.store();
    let v = object(1, 1, b"v");
    let max_bucket = vec![b'b'; MAX_BUCKET_LEN];
    let max_key = vec![b'k'; MAX_KEY_LEN];
    store
        .merge(key(&max_bucket, &max_key), &v, Durability::Buffered)
        .unwrap();
    assert_eq!(
        store.get(key(&max_bucket, &max_key)).unwrap(),
        Some(v.clone())
    );
    let scanned = store.scan_partition(P, None, 10).unwrap();
    assert_eq!(
        (scanned[0].bucket.len(), scanned[0].key.len()),
        (MAX_BUCKET_LEN, MAX_KEY_LEN)
    );

    let long_bucket = vec![b'b'; MAX_BUCKET_LEN + 1];
    let long_key = vec![b'k'; MAX_KEY_LEN + 1];
    let bucket_err = |r: Result<_, StoreError>| {
        assert!(
            matches!(r, Err(StoreError::BucketTooLong { len, max }) if len == MAX_BUCKET_LEN + 1 && max == MAX_BUCKET_LEN)
        )
    };
    let key_err = |r: Result<_, StoreError>| {
        assert!(
            matches!(r, Err(StoreError::KeyTooLong { len, max }) if len == MAX_KEY_LEN + 1 && max == MAX_KEY_LEN)
        )
    };
    bucket_err(store.get(key(&long_bucket, b"k")).map(|_| ()));
    bucket_err(
        store
            .merge(key(&long_bucket, b"k"), &v, Durability::Buffered)
            .map(|_| ()),
    );
    bucket_err(
        store
            .add_hint(
                Uuid::from_u128(1),
                key(&long_bucket, b"k"),
                &v,
                Durability::Buffered,
            )
            .map(|_| ()),
    );
    bucket_err(
        store
            .scan_partition(P, Some((&long_bucket, b"k")), 10)
            .map(|_| ()),
    );
    key_err(store.get(key(b"b", &long_key)).map(|_| ()));
    key_err(
        store
            .read_modify_write(key(b"b", &long_key), Durability::Buffered, &mut |_| {
                Decision::Write
            })
            .map(|_| ()),
    );
    key_err(
        store
            .add_hint(
                Uuid::from_u128(1),
                key(b"b", &long_key),
                &v,
                Durability::Buffered,
            )
            .map(|_| ()),
    );
    assert_eq!(store.hint_count(Uuid::from_u128(1)).unwrap(), 0);
}

fn shared_handles_are_stores<H: Harness>() {
    let h = fresh::<H>();
    let shared: Arc<&dyn Store> = Arc::new(h.store() as &dyn Store);
    let k = key(b"b", b"k");
    assert!(shared
        .merge(k, &object(1, 1, b"v"), Durability::Buffered)
        .unwrap());
    let written = shared
        .update(k, Durability::Buffered, |current| {
            Update::Keep(current.clone())
        })
        .unwrap();
    assert_eq!(h.store().get(k).unwrap(), Some(written));
}

// ----- hints -----

fn hints_list_in_order_with_limit_and_delete<H: Harness>() {
    let h = fresh::<H>();
    let store = h.store();
    let (a, b) = (Uuid::from_u128(0xa), Uuid::from_u128(0xb));
    let mut a_seqs = Vec::new();
    for i in 0..5u8 {
        let seq = store
            .add_hint(
                a,
                KeyRef::new(PartitionId(u32::from(i)), b"b", &[i]),
                &object(1, 1, &[i]),
                Durability::Buffered,
            )
            .unwrap();
        a_seqs.push(seq);
        if i < 2 {
            store
                .add_hint(
                    b,
                    key(b"b", b"for-b"),
                    &object(2, 1, &[i]),
                    Durability::Sync,
                )
                .unwrap();
        }
    }
    assert!(
        a_seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers increase"
    );
    assert!(
        store
            .hints(a, None, 10)
            .unwrap()
            .iter()
            .all(|h| h.durability == Durability::Buffered),
        "a hint keeps the durability it was added with"
    );
    assert!(store
        .hints(b, None, 10)
        .unwrap()
        .iter()
        .all(|h| h.durability == Durability::Sync));

    let first = store.hints(a, None, 3).unwrap();
    assert_eq!(first.iter().map(|h| h.seq).collect::<Vec<_>>(), a_seqs[..3]);
    for (i, hint) in first.iter().enumerate() {
        assert_eq!(
            (hint.partition, hint.bucket.as_slice(), hint.key.as_slice()),
            (PartitionId(i as u32), &b"b"[..], &[i as u8][..])
        );
        assert_eq!(hint.object, object(1, 1, &[i as u8]));
    }
    let rest = store.hints(a, Some(first[2].seq), 10).unwrap();
    assert_eq!(rest.iter().map(|h| h.seq).collect::<Vec<_>>(), a_seqs[3..]);
    assert!(store.hints(a, Some(u64::MAX), 10).unwrap().is_empty());
    assert_eq!(
        store.hints(b, None, 10).unwrap().len(),
        2,
        "targets are separate queues"
    );

    assert!(store
        .delete_hint(a, a_seqs[1], Durability::Buffered)
        .unwrap());
    assert!(
        !store
            .delete_hint(a, a_seqs[1], Durability::Buffered)
            .unwrap(),
        "already delivered"
    );
    assert!(
        !store
            .delete_hint(b, a_seqs[0], Durability::Buffered)
            .unwrap(),
        "not b's hint"
    );
    let left: Vec<u64> = store
        .hints(a, None, 10)
        .unwrap()
        .iter()
        .map(|h| h.seq)
        .collect();
    assert_eq!(left, [a_seqs[0], a_seqs[2], a_seqs[3], a_seqs[4]]);
    assert_eq!(store.hint_count(a).unwrap(), 4);
    assert_eq!(store.hint_counts().unwrap(), vec![(a, 4), (b, 2)]);
    for hint in store.hints(b, None, 10).unwrap() {
        assert!(store.delete_hint(b, hint.seq, Durability::Sync).unwrap());
    }
    assert_eq!(store.hint_counts().unwrap(), vec![(a, 4)]);
    assert_eq!(store.hint_count(b).unwrap(), 0);
}

fn hint_queues_are_bounded_per_target<H: Harness>() {
    let h = H::create(StoreConfig {
        max_hints_per_target: 3,
        ..StoreConfig::default()
    });
    let store = h.store();
    let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let v = object(1, 1, b"v");
    let mut seqs = Vec::new();
    for _ in 0..3 {
        seqs.push(
            store
                .add_hint(a, key(b"b", b"k"), &v, Durability::Buffered)
                .unwrap(),
        );
    }
    let err = store
        .add_hint(a, key(b"b", b"k"), &v, Durability::Buffered)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::HintQueueFull { target, max: 3 } if target == a),
        "{err}"
    );
    assert_eq!(
        store.hint_count(a).unwrap(),
        3,
        "the refused hint was not stored"
    );
    assert_eq!(store.hints(a, None, 10).unwrap().len(), 3);
    store
        .add_hint(b, key(b"b", b"k"), &v, Durability::Buffered)
        .expect("another target has its own bound");
    assert!(store.delete_hint(a, seqs[0], Durability::Buffered).unwrap());
    store
        .add_hint(a, key(b"b", b"k"), &v, Durability::Buffered)
        .expect("room again");
}

fn hints_survive_reopen_without_reusing_sequence_numbers<H: Harness>() {
    let h = H::create(StoreConfig {
        max_hints_per_target: 2,
        ..StoreConfig::default()
    });
    let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let v = object(1, 1, b"v");
    let kept = h
        .store()
        .add_hint(a, key(b"b", b"k"), &v, Durability::Buffered)
        .unwrap();
    let delivered = h
        .store()
        .add_hint(b, key(b"b", b"k"), &v, Durability::Buffered)
        .unwrap();
    h.store()
        .delete_hint(b, delivered, Durability::Buffered)
        .unwrap();

    let h = h.reopen();
    let store = h.store();
    assert_eq!(store.hint_counts().unwrap(), vec![(a, 1)]);
    assert_eq!(store.hints(a, None, 10).unwrap()[0].seq, kept);
    let next = store
        .add_hint(b, key(b"b", b"k"), &v, Durability::Buffered)
        .unwrap();
    assert!(
        next > delivered,
        "sequence number {next} reused after {delivered}"
    );
    store
        .add_hint(a, key(b"b", b"k"), &v, Durability::Buffered)
        .unwrap();
    assert!(
        matches!(
            store.add_hint(a, key(b"b", b"k"), &v, Durability::Buffered),
            Err(StoreError::HintQueueFull { .. })
        ),
        "the bound counts hints from before the reopen"
    );
}

fn a_new_epoch_forgets_every_actor_and_keeps_the_data<H: Harness>() {
    let h = fresh::<H>();
    let partitions = [PartitionId(0), P, PartitionId(u32::MAX)];
    for partition in partitions {
        h.store()
            .merge(
                KeyRef::new(partition, b"b", b"k"),
                &object(1, 1, b"v"),
                Durability::Buffered,
            )
            .unwrap();
        h.store()
            .ensure_partition_actor(partition, ActorId(u64::from(partition.0) + 1))
            .unwrap();
    }
    h.store().put_meta("ring", b"kept").unwrap();
    h.store().clear_partition_actors().unwrap();
    for partition in partitions {
        assert_eq!(h.store().partition_actor(partition).unwrap(), None);
    }
    assert_eq!(
        h.store().ensure_partition_actor(P, ActorId(77)).unwrap(),
        ActorId(77),
        "the replica draws a new actor"
    );
    let h = h.reopen();
    let store = h.store();
    assert_eq!(store.partition_actor(P).unwrap(), Some(ActorId(77)));
    assert_eq!(
        store.partition_actor(PartitionId(0)).unwrap(),
        None,
        "durably"
    );
    for partition in partitions {
        assert!(store
            .get(KeyRef::new(partition, b"b", b"k"))
            .unwrap()
            .is_some());
    }
    assert_eq!(store.get_meta("ring").unwrap(), Some(b"kept".to_vec()));
}

fn the_generation_is_raised_never_lowered<H: Harness>() {
    let h = fresh::<H>();
    assert_eq!(h.store().bump_generation().unwrap(), 1);
    assert_eq!(h.store().raise_generation(5).unwrap(), 5);
    assert_eq!(h.store().raise_generation(3).unwrap(), 5, "never lowered");
    let h = h.reopen();
    assert_eq!(h.store().generation().unwrap(), 5, "durably");
    assert_eq!(h.store().bump_generation().unwrap(), 6);
}

// ----- metadata -----

fn metadata_persists_and_generation_bumps_per_start<H: Harness>() {
    let h = fresh::<H>();
    let (first, second) = (Uuid::from_u128(11), Uuid::from_u128(22));
    assert_eq!(h.store().node_id(first).unwrap(), first);
    assert_eq!(h.store().node_id(second).unwrap(), first, "generated once");
    assert_eq!(h.store().generation().unwrap(), 0);
    assert_eq!(h.store().bump_generation().unwrap(), 1);
    assert_eq!(
        h.store().ensure_partition_actor(P, ActorId(5)).unwrap(),
        ActorId(5)
    );
    assert_eq!(
        h.store().ensure_partition_actor(P, ActorId(6)).unwrap(),
        ActorId(5),
        "kept while the replica lives"
    );
    assert_eq!(h.store().partition_actor(PartitionId(1)).unwrap(), None);
    assert_eq!(h.store().hlc_ceiling().unwrap(), None);
    let (early, late) = (Timestamp::new(1_000, 0), Timestamp::new(2_000, 3));
    assert_eq!(h.store().raise_hlc_ceiling(late).unwrap(), late);
    assert_eq!(
        h.store().raise_hlc_ceiling(early).unwrap(),
        late,
        "the ceiling never goes down"
    );
    h.store().put_meta("ring", b"claim-v1").unwrap();
    h.store().put_meta("ring", b"claim-v2").unwrap();
    h.store().put_meta("gone", b"x").unwrap();
    assert!(h.store().delete_meta("gone").unwrap());
    assert!(!h.store().delete_meta("gone").unwrap());

    let h = h.reopen();
    let store = h.store();
    assert_eq!(store.node_id(second).unwrap(), first);
    assert_eq!(store.generation().unwrap(), 1);
    assert_eq!(
        store.bump_generation().unwrap(),
        2,
        "every start bumps the generation"
    );
    assert_eq!(store.partition_actor(P).unwrap(), Some(ActorId(5)));
    assert_eq!(store.hlc_ceiling().unwrap(), Some(late));
    assert_eq!(store.get_meta("ring").unwrap(), Some(b"claim-v2".to_vec()));
    assert_eq!(store.get_meta("gone").unwrap(), None);

    let long_name = "n".repeat(MAX_META_NAME_LEN + 1);
    assert!(matches!(
        store.put_meta(&long_name, b"v"),
        Err(StoreError::MetadataTooLong { what: "name", .. })
    ));
    let big = vec![0u8; MAX_META_VALUE_LEN + 1];
    assert!(matches!(
        store.put_meta("big", &big),
        Err(StoreError::MetadataTooLong { what: "value", .. })
    ));
    store
        .put_meta(&"n".repeat(MAX_META_NAME_LEN), &big[1..])
        .expect("at the bounds");

    let h = h.reopen();
    assert_eq!(h.store().bump_generation().unwrap(), 3);
}

/// A merge whose join the decoder would refuse (more siblings than a stored
/// object may hold) is refused and stores nothing: no replica ever holds a
/// key it cannot read back (design.md §3 rule 9).
fn a_merge_the_decoder_would_refuse_is_not_stored<H: Harness>() {
    use chorus_storage::object::MAX_DECODED_SIBLINGS;
    let h = fresh::<H>();
    let store = h.store();
    let k = key(b"b", b"wide");
    let half = MAX_DECODED_SIBLINGS / 2 + 1;
    let mut left = Object::new();
    let mut right = Object::new();
    for i in 0..half as u64 {
        left.merge(&object(1_000 + i, 1, b"l"));
        right.merge(&object(5_000 + i, 1, b"r"));
    }
    assert!(store.merge(k, &left, Durability::Buffered).unwrap());
    let refused = store.merge(k, &right, Durability::Buffered);
    assert!(
        matches!(refused, Err(StoreError::TooManySiblings { count, .. }) if count == 2 * half),
        "{refused:?}"
    );
    assert_eq!(store.get(k).unwrap(), Some(left), "unchanged");
}

macro_rules! conformance {
    ($engine:ident, $harness:ty) => {
        mod $engine {
            use super::*;

            #[test]
            fn get_of_a_missing_key_is_none() {
                super::get_of_a_missing_key_is_none::<$harness>();
            }
            #[test]
            fn update_writes_or_keeps() {
                super::update_writes_or_keeps::<$harness>();
            }
            #[test]
            fn writing_an_empty_object_removes_the_key() {
                super::writing_an_empty_object_removes_the_key::<$harness>();
            }
            #[test]
            fn concurrent_read_modify_writes_lose_no_update() {
                super::concurrent_read_modify_writes_lose_no_update::<$harness>();
            }
            #[test]
            fn merge_joins_remote_objects() {
                super::merge_joins_remote_objects::<$harness>();
            }
            #[test]
            fn a_merge_the_decoder_would_refuse_is_not_stored() {
                super::a_merge_the_decoder_would_refuse_is_not_stored::<$harness>();
            }
            #[test]
            fn scan_lists_one_partition_in_order_and_resumes() {
                super::scan_lists_one_partition_in_order_and_resumes::<$harness>();
            }
            #[test]
            fn drop_partition_removes_its_range_and_actor() {
                super::drop_partition_removes_its_range_and_actor::<$harness>();
            }
            #[test]
            fn batches_apply_together() {
                super::batches_apply_together::<$harness>();
            }
            #[test]
            fn a_batch_with_an_invalid_key_writes_nothing() {
                super::a_batch_with_an_invalid_key_writes_nothing::<$harness>();
            }
            #[test]
            fn buckets_and_keys_are_bounded() {
                super::buckets_and_keys_are_bounded::<$harness>();
            }
            #[test]
            fn shared_handles_are_stores() {
                super::shared_handles_are_stores::<$harness>();
            }
            #[test]
            fn hints_list_in_order_with_limit_and_delete() {
                super::hints_list_in_order_with_limit_and_delete::<$harness>();
            }
            #[test]
            fn hint_queues_are_bounded_per_target() {
                super::hint_queues_are_bounded_per_target::<$harness>();
            }
            #[test]
            fn hints_survive_reopen_without_reusing_sequence_numbers() {
                super::hints_survive_reopen_without_reusing_sequence_numbers::<$harness>();
            }
            #[test]
            fn a_new_epoch_forgets_every_actor_and_keeps_the_data() {
                super::a_new_epoch_forgets_every_actor_and_keeps_the_data::<$harness>();
            }
            #[test]
            fn the_generation_is_raised_never_lowered() {
                super::the_generation_is_raised_never_lowered::<$harness>();
            }
            #[test]
            fn metadata_persists_and_generation_bumps_per_start() {
                super::metadata_persists_and_generation_bumps_per_start::<$harness>();
            }
        }
    };
}

conformance!(memory, Memory);
#[cfg(feature = "rocksdb")]
conformance!(rocks, Rocks);

// ----- figures -----

#[test]
fn the_memory_engine_has_no_rocksdb_figures() {
    let h = fresh::<Memory>();
    h.store()
        .merge(key(b"b", b"k"), &object(1, 1, b"v"), Durability::Buffered)
        .unwrap();
    let stats = h.store().stats();
    assert_eq!(
        stats,
        chorus_storage::store::StoreStats {
            object_cache_bytes: stats.object_cache_bytes,
            ..chorus_storage::store::StoreStats::default()
        }
    );
    // The store above the engine has its object cache's figure.
    assert!(stats.object_cache_bytes.expect("the object cache's") > 0);
}

#[cfg(feature = "rocksdb")]
#[test]
fn the_rocksdb_engine_reports_memtable_live_data_and_block_cache_sizes() {
    // Without the object cache, whose hits would keep reads from the files.
    let h = Rocks::create(StoreConfig {
        object_cache_bytes: 0,
        ..StoreConfig::default()
    });
    let store = h.store();
    let empty = store.stats();
    // Values that do not compress, so their size shows in the files.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..16u32 {
        let value: Vec<u8> = (0..64 << 10)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        store
            .merge(
                key(b"b", &i.to_be_bytes()),
                &object(1, 1, &value),
                Durability::Buffered,
            )
            .unwrap();
    }
    let written = store.stats();
    assert!(
        written.memtable_bytes.expect("a memtable size") > empty.memtable_bytes.unwrap_or(0),
        "{empty:?} then {written:?}"
    );
    assert!(written.pending_compaction_bytes.is_some(), "{written:?}");
    store.flush_memtables().unwrap();
    let flushed = store.stats();
    assert!(
        flushed.live_data_bytes.expect("a live data size") >= 16 * (64 << 10) / 2,
        "the values are in SST files now: {flushed:?}"
    );
    // Reading from the files brings their blocks into the block cache.
    for i in 0..16u32 {
        assert!(store.get(key(b"b", &i.to_be_bytes())).unwrap().is_some());
    }
    let read = store.stats();
    let cached = read.block_cache_bytes.expect("a block cache size");
    assert!(
        cached > flushed.block_cache_bytes.unwrap_or(0) + (512 << 10),
        "{flushed:?} then {read:?}"
    );
    // The same keys written again and compacted: the first files are
    // obsolete, and their blocks leave the cache with them rather than
    // staying until evicted, so reading the new files does not double it.
    for i in 0..16u32 {
        let mut newer = store.get(key(b"b", &i.to_be_bytes())).unwrap().unwrap();
        let context = newer.context().clone();
        newer
            .write_in(
                &context,
                chorus_storage::version::Dot::new(chorus_storage::version::ActorId(1), 2),
                chorus_storage::hlc::Timestamp::new(2, 0),
                Some(vec![i as u8; 64 << 10]),
            )
            .unwrap();
        assert_eq!(
            newer.siblings().len(),
            1,
            "the new value supersedes the old"
        );
        store
            .merge(key(b"b", &i.to_be_bytes()), &newer, Durability::Buffered)
            .unwrap();
    }
    store.flush_memtables().unwrap();
    store.compact().unwrap();
    for i in 0..16u32 {
        assert!(store.get(key(b"b", &i.to_be_bytes())).unwrap().is_some());
    }
    let rewritten = store.stats();
    assert!(
        rewritten.block_cache_bytes.expect("a block cache size") < cached * 3 / 2,
        "{read:?} then {rewritten:?}"
    );
}

// ----- group commit -----

/// Under group commit a store owes an fsync from a `Sync` write until the
/// next flush, and says so through a shared handle too; a `Buffered`
/// write owes none.
fn owes_sync_from_a_sync_write_until_the_flush(store: &dyn Store) {
    let shared: Arc<&dyn Store> = Arc::new(store);
    assert!(!shared.owes_sync(), "a fresh store owes nothing");
    let k = key(b"b", b"k");
    store
        .merge(k, &object(1, 1, b"v"), Durability::Buffered)
        .unwrap();
    assert!(!shared.owes_sync(), "a buffered write owes no fsync");
    store
        .merge(k, &object(2, 1, b"w"), Durability::Sync)
        .unwrap();
    assert!(store.owes_sync(), "a sync write owes one");
    assert!(shared.owes_sync(), "and its shared handle says so");
    shared.flush().unwrap();
    assert!(!store.owes_sync(), "the flush paid it");
    store
        .merge(k, &object(3, 1, b"x"), Durability::Buffered)
        .unwrap();
    assert!(!store.owes_sync());
}

#[test]
fn the_memory_engine_owes_sync_from_a_sync_write_until_the_flush() {
    owes_sync_from_a_sync_write_until_the_flush(&MemoryStore::with_group_commit(
        StoreConfig::default(),
    ));
}

#[cfg(feature = "rocksdb")]
#[test]
fn the_rocksdb_engine_owes_sync_from_a_sync_write_until_the_flush() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let rocks = chorus_storage::store::RocksConfig {
        group_commit: true,
        ..Rocks::rocks_config()
    };
    let store = chorus_storage::store::RocksStore::open(dir.path(), StoreConfig::default(), &rocks)
        .expect("open a fresh database");
    owes_sync_from_a_sync_write_until_the_flush(&store);
}
