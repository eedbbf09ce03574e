//! Damaged bytes in the RocksDB engine's files give errors naming the record,
//! never a panic, and are left as they are.
#![cfg(feature = "rocksdb")]

mod common;

use chorus_ring::PartitionId;
use chorus_storage::object::Object;
use chorus_storage::store::{
    data_key, Decision, Durability, KeyRef, RocksConfig, RocksStore, Store, StoreConfig, StoreError,
};
use common::object;
use rocksdb::DB;
use uuid::Uuid;

const P: PartitionId = PartitionId(3);

fn key(k: &[u8]) -> KeyRef<'_> {
    KeyRef::new(P, b"bucket", k)
}

fn open(dir: &std::path::Path) -> RocksStore {
    RocksStore::open(dir, StoreConfig::default(), &RocksConfig::default()).unwrap()
}

/// Writes raw bytes into a column family, bypassing the store.
fn write_raw(dir: &std::path::Path, cf: &str, records: &[(Vec<u8>, Vec<u8>)]) {
    let (options, families) = RocksStore::rocksdb_options(&RocksConfig::default());
    let db = DB::open_cf_descriptors(&options, dir, families).unwrap();
    let handle = db.cf_handle(cf).unwrap();
    for (k, v) in records {
        db.put_cf(handle, k, v).unwrap();
    }
}

fn read_raw(dir: &std::path::Path, k: &[u8]) -> Option<Vec<u8>> {
    let (options, families) = RocksStore::rocksdb_options(&RocksConfig::default());
    let db = DB::open_cf_descriptors(&options, dir, families).unwrap();
    db.get_cf(db.cf_handle(RocksStore::DATA_CF).unwrap(), k)
        .unwrap()
}

fn is_corrupt_at(result: Result<impl std::fmt::Debug, StoreError>, k: &[u8]) {
    match result {
        Err(StoreError::CorruptObject {
            partition,
            bucket,
            key,
            ..
        }) => {
            assert_eq!(
                (partition, bucket.as_slice(), key.as_slice()),
                (P, &b"bucket"[..], k)
            );
        }
        other => panic!("expected a corrupt object at {k:?}, got {other:?}"),
    }
}

#[test]
fn corrupt_objects_are_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = object(1, 1, b"good");
    {
        let store = open(dir.path());
        store.merge(key(b"a"), &good, Durability::Sync).unwrap();
        store.merge(key(b"d"), &good, Durability::Sync).unwrap();
    }
    let garbage = b"\x01\xff\x00 not an object".to_vec();
    let mut truncated = good.encode();
    truncated.truncate(truncated.len() - 3);
    write_raw(
        dir.path(),
        RocksStore::DATA_CF,
        &[
            (data_key(key(b"b")).unwrap(), garbage.clone()),
            (data_key(key(b"c")).unwrap(), truncated),
        ],
    );

    let store = open(dir.path());
    assert_eq!(store.get(key(b"a")).unwrap(), Some(good.clone()));
    is_corrupt_at(store.get(key(b"b")), b"b");
    is_corrupt_at(store.get(key(b"c")), b"c");

    let mut called = false;
    is_corrupt_at(
        store.read_modify_write(key(b"b"), Durability::Sync, &mut |_| {
            called = true;
            Decision::Write
        }),
        b"b",
    );
    assert!(!called, "nothing to decide on");
    is_corrupt_at(store.merge(key(b"b"), &good, Durability::Sync), b"b");
    is_corrupt_at(
        store.merge_batch(&[(key(b"a"), &good), (key(b"b"), &good)], Durability::Sync),
        b"b",
    );

    // A scan stops before a corrupt entry; the next page names it; resuming
    // after the named key skips it.
    let page = store.scan_partition(P, None, 10).unwrap();
    assert_eq!(
        page.iter().map(|e| e.key.as_slice()).collect::<Vec<_>>(),
        [&b"a"[..]]
    );
    is_corrupt_at(store.scan_partition(P, Some((b"bucket", b"a")), 10), b"b");
    is_corrupt_at(store.scan_partition(P, Some((b"bucket", b"b")), 10), b"c");
    let rest = store
        .scan_partition(P, Some((b"bucket", b"c")), 10)
        .unwrap();
    assert_eq!(
        rest.iter().map(|e| e.key.as_slice()).collect::<Vec<_>>(),
        [&b"d"[..]]
    );

    drop(store);
    assert_eq!(
        read_raw(dir.path(), &data_key(key(b"b")).unwrap()),
        Some(garbage),
        "left as it was"
    );
}

#[test]
fn arbitrary_bytes_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let valid = object(7, 3, &[0xab; 100]).encode();
    // Every truncation and a byte flip at every position of a valid encoding,
    // plus some fixed garbage.
    let mut samples: Vec<Vec<u8>> = (0..valid.len()).map(|n| valid[..n].to_vec()).collect();
    for i in 0..valid.len() {
        let mut flipped = valid.clone();
        flipped[i] ^= 0x5a;
        samples.push(flipped);
    }
    samples.push(vec![1; 4096]);
    samples.push(vec![0xff; 17]);
    let records: Vec<(Vec<u8>, Vec<u8>)> = samples
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            (
                data_key(key(&(i as u32).to_be_bytes())).unwrap(),
                bytes.clone(),
            )
        })
        .collect();
    write_raw(dir.path(), RocksStore::DATA_CF, &records);

    let store = open(dir.path());
    let mut errors = 0;
    for (i, bytes) in samples.iter().enumerate() {
        let k = (i as u32).to_be_bytes();
        let read = store.get(key(&k));
        assert_eq!(read.is_err(), Object::decode(bytes).is_err(), "sample {i}");
        if read.is_err() {
            is_corrupt_at(read, &k);
            errors += 1;
        }
    }
    assert!(
        errors > valid.len(),
        "most damaged samples are refused ({errors})"
    );
}

#[test]
fn corrupt_hints_and_metadata_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let target = Uuid::from_u128(5);
    let seq = {
        let store = open(dir.path());
        store
            .add_hint(target, key(b"k"), &object(1, 1, b"v"), Durability::Sync)
            .unwrap()
    };
    let mut hint_key = target.as_bytes().to_vec();
    hint_key.extend_from_slice(&(seq + 1).to_be_bytes());
    write_raw(
        dir.path(),
        RocksStore::HINTS_CF,
        &[(hint_key, b"\x01garbage".to_vec())],
    );
    // The generation is 8 bytes; store 3.
    write_raw(dir.path(), RocksStore::META_CF, &[(vec![2], vec![1, 2, 3])]);

    let store = open(dir.path());
    assert_eq!(store.hint_count(target).unwrap(), 2);
    assert_eq!(
        store.hints(target, None, 10).unwrap().len(),
        1,
        "the page stops before the corrupt hint"
    );
    match store.hints(target, Some(seq), 10) {
        Err(StoreError::CorruptHint {
            target: t, seq: s, ..
        }) => assert_eq!((t, s), (target, seq + 1)),
        other => panic!("expected a corrupt hint, got {other:?}"),
    }
    assert!(
        store
            .delete_hint(target, seq + 1, Durability::Sync)
            .unwrap(),
        "a corrupt hint can be dropped"
    );
    assert!(matches!(
        store.generation(),
        Err(StoreError::CorruptRecord {
            column_family: "meta",
            ..
        })
    ));
    assert!(matches!(
        store.bump_generation(),
        Err(StoreError::CorruptRecord { .. })
    ));
}
