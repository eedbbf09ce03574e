//! The object cache changes nothing a caller can see.
//!
//! A store with the cache on (small, so entries are also evicted) and one
//! with it off are driven through the same random operations: reads,
//! writes, batches, writes whose closure changes the object and then keeps
//! it, writes that fail on a failing disk, objects emptied, partitions
//! dropped, restarts and crashes. Every answer must be the same in both.

mod common;

use chorus_ring::PartitionId;
use chorus_storage::hlc::Timestamp;
use chorus_storage::object::Object;
use chorus_storage::store::{Decision, Durability, KeyRef, MemoryStore, Store, StoreConfig};
use chorus_storage::version::{ActorId, Dot};
use common::object;
use proptest::prelude::*;

const PARTITIONS: u32 = 2;
const KEYS: u8 = 4;

#[derive(Debug, Clone)]
enum Op {
    Get(u8),
    /// A write over what the store holds (a coordinator's put).
    Write(u8, u8),
    /// A replica's merge of another node's version.
    Merge(u8, u8),
    /// A closure that changes the object and keeps it anyway.
    ChangeAndKeep(u8, u8),
    /// The object replaced by an empty one (the key is deleted).
    Empty(u8),
    /// A batch of writes, keys possibly repeated; odd values keep.
    Batch(Vec<(u8, u8)>),
    FailWrites(bool),
    DropPartition(u32),
    Restart,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS;
    prop_oneof![
        4 => key.clone().prop_map(Op::Get),
        4 => (key.clone(), any::<u8>()).prop_map(|(k, v)| Op::Write(k, v)),
        2 => (key.clone(), any::<u8>()).prop_map(|(k, v)| Op::Merge(k, v)),
        2 => (key.clone(), any::<u8>()).prop_map(|(k, v)| Op::ChangeAndKeep(k, v)),
        1 => key.clone().prop_map(Op::Empty),
        2 => prop::collection::vec((key, any::<u8>()), 1..5).prop_map(Op::Batch),
        1 => any::<bool>().prop_map(Op::FailWrites),
        1 => (0..PARTITIONS).prop_map(Op::DropPartition),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
    ]
}

/// Key `k` lives in partition `k % PARTITIONS`.
fn key(k: u8) -> KeyRef<'static> {
    const NAMES: [&[u8]; KEYS as usize] = [b"k0", b"k1", b"k2", b"k3"];
    KeyRef::new(
        PartitionId(u32::from(k) % PARTITIONS),
        b"b",
        NAMES[usize::from(k)],
    )
}

/// Adds a version of `value` with dot `(actor, counter)` over what `object` holds.
fn add_version(object: &mut Object, actor: u64, counter: u64, value: u8) {
    let context = object.context().clone();
    object
        .write_in(
            &context,
            Dot::new(ActorId(actor), counter),
            Timestamp::new(counter, 0),
            Some(vec![value]),
        )
        .expect("every dot of this actor is new");
}

/// One operation on `store`; what a caller sees of it, as text.
fn apply(store: MemoryStore, op: &Op, counter: u64) -> (MemoryStore, String) {
    let d = Durability::Buffered;
    let seen = match op {
        Op::Get(k) => format!("{:?}", store.get(key(*k))),
        Op::Write(k, v) => format!(
            "{:?}",
            store.read_modify_write(key(*k), d, &mut |object| {
                add_version(object, 1, counter, *v);
                Decision::Write
            })
        ),
        Op::Merge(k, v) => format!("{:?}", store.merge(key(*k), &object(2, counter, &[*v]), d)),
        Op::ChangeAndKeep(k, v) => format!(
            "{:?}",
            store.read_modify_write(key(*k), d, &mut |object| {
                add_version(object, 1, counter, *v);
                Decision::Keep
            })
        ),
        Op::Empty(k) => format!(
            "{:?}",
            store.read_modify_write(key(*k), d, &mut |object| {
                *object = Object::new();
                Decision::Write
            })
        ),
        Op::Batch(writes) => {
            let keys: Vec<KeyRef<'_>> = writes.iter().map(|(k, _)| key(*k)).collect();
            format!(
                "{:?}",
                store.read_modify_write_batch(&keys, d, &mut |i, object| {
                    let value = writes[i].1;
                    add_version(object, 3, counter * 8 + i as u64, value);
                    if value % 2 == 0 {
                        Decision::Write
                    } else {
                        Decision::Keep
                    }
                })
            )
        }
        Op::FailWrites(failing) => {
            store.fail_writes(*failing);
            String::new()
        }
        Op::DropPartition(p) => format!("{:?}", store.drop_partition(PartitionId(*p))),
        Op::Restart => return (store.restart(), String::new()),
        Op::Crash => return (store.crash(), String::new()),
    };
    (store, seen)
}

/// Every key's object as a read sees it.
fn contents(store: &MemoryStore) -> Vec<String> {
    (0..KEYS)
        .map(|k| format!("{:?}", store.get(key(k))))
        .collect()
}

fn store(object_cache_bytes: u64) -> MemoryStore {
    MemoryStore::new(StoreConfig {
        object_cache_bytes,
        ..StoreConfig::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_store_answers_the_same_with_and_without_its_object_cache(
        ops in prop::collection::vec(op(), 1..60),
        capacity in prop_oneof![Just(600u64), Just(32u64 << 20)],
    ) {
        let mut cached = store(capacity);
        let mut uncached = store(0);
        for (i, op) in ops.iter().enumerate() {
            let counter = i as u64 + 1;
            let (next, seen_cached) = apply(cached, op, counter);
            cached = next;
            let (next, seen_uncached) = apply(uncached, op, counter);
            uncached = next;
            prop_assert_eq!(seen_cached, seen_uncached, "operation {} {:?}", i, op);
            prop_assert_eq!(contents(&cached), contents(&uncached), "after operation {} {:?}", i, op);
        }
    }
}

/// The negative controls of the property above, by hand: each is a
/// sequence where a cache that did the obvious wrong thing (put back an
/// object its closure changed and kept, keep an entry whose write failed,
/// keep entries of a dropped partition) answers differently.
#[test]
fn the_cache_never_answers_with_what_the_store_does_not_hold() {
    for capacity in [0, 32 << 20] {
        let store = store(capacity);
        let k = key(0);
        store
            .merge(k, &object(1, 1, b"stored"), Durability::Buffered)
            .expect("write");
        assert_eq!(common::values(&store.get(k).unwrap().unwrap()), [b"stored"]);

        // Changed, then kept: the change is not stored, and not seen.
        store
            .read_modify_write(k, Durability::Buffered, &mut |object| {
                add_version(object, 1, 2, b'x');
                Decision::Keep
            })
            .expect("kept");
        assert_eq!(common::values(&store.get(k).unwrap().unwrap()), [b"stored"]);

        // A write the disk refused is not seen either.
        store.fail_writes(true);
        let refused = store.read_modify_write(k, Durability::Buffered, &mut |object| {
            add_version(object, 1, 3, b'y');
            Decision::Write
        });
        assert!(refused.is_err(), "{refused:?}");
        store.fail_writes(false);
        assert_eq!(common::values(&store.get(k).unwrap().unwrap()), [b"stored"]);

        // A dropped partition's keys are gone.
        store.drop_partition(k.partition).expect("drop");
        assert_eq!(store.get(k).expect("read"), None, "capacity {capacity}");
    }
}

/// Reads that fill the cache race writes of the same key: a read that
/// filled it with what it read before a write, after that write, would
/// hand the next write a stale object and lose an increment.
#[test]
fn reads_filling_the_cache_never_hide_a_concurrent_write() {
    use std::sync::atomic::{AtomicBool, Ordering};

    const WRITERS: u64 = 2;
    const INCREMENTS: u64 = 3_000;
    let store = store(32 << 20);
    let k = key(1);
    let count = |object: &Object| -> u64 {
        object.siblings().first().map_or(0, |s| {
            let bytes: [u8; 8] = s.value.as_deref().unwrap().try_into().unwrap();
            u64::from_be_bytes(bytes)
        })
    };
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    store.get(k).expect("read");
                }
            });
        }
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = &store;
                scope.spawn(move || {
                    for i in 1..=INCREMENTS {
                        store
                            .read_modify_write(k, Durability::Buffered, &mut |object| {
                                let next = count(object) + 1;
                                let context = object.context().clone();
                                object
                                    .write_in(
                                        &context,
                                        Dot::new(ActorId(10 + w), i),
                                        Timestamp::new(i, 0),
                                        Some(next.to_be_bytes().to_vec()),
                                    )
                                    .expect("new dot");
                                Decision::Write
                            })
                            .expect("write");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("writer");
        }
        done.store(true, Ordering::Relaxed);
    });
    let object = store.get(k).expect("read").expect("written");
    assert_eq!(object.siblings().len(), 1);
    assert_eq!(count(&object), WRITERS * INCREMENTS);
}

/// The cache holds at most its capacity, however many keys pass through
/// it, and what it evicts is read back from the engine.
#[test]
fn the_cache_stays_within_its_capacity() {
    const CAPACITY: u64 = 8 << 10;
    let store = store(CAPACITY);
    let names: Vec<Vec<u8>> = (0..500u32)
        .map(|i| format!("key{i}").into_bytes())
        .collect();
    for (i, name) in names.iter().enumerate() {
        let value = object(1, i as u64 + 1, name);
        store
            .merge(
                KeyRef::new(PartitionId(0), b"b", name),
                &value,
                Durability::Buffered,
            )
            .expect("write");
        let held = store
            .stats()
            .object_cache_bytes
            .expect("every engine has it");
        assert!(held <= CAPACITY, "{held} bytes after {} keys", i + 1);
    }
    assert!(store.stats().object_cache_bytes.unwrap() > 0);
    for name in &names {
        let read = store
            .get(KeyRef::new(PartitionId(0), b"b", name))
            .expect("read");
        assert_eq!(
            common::values(&read.expect("written")),
            std::slice::from_ref(name)
        );
    }
}
