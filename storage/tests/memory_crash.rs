//! The in-memory engine's crash model: a simulated crash loses exactly the
//! writes made since the last sync.

mod common;

use chorus_ring::PartitionId;
use chorus_storage::store::{Durability, KeyRef, MemoryStore, Store, StoreConfig};
use common::object;
use uuid::Uuid;

fn key(k: &[u8]) -> KeyRef<'_> {
    KeyRef::new(PartitionId(1), b"b", k)
}

fn put(store: &MemoryStore, k: &[u8], durability: Durability) {
    assert!(store.merge(key(k), &object(1, 1, k), durability).unwrap());
}

fn present(store: &MemoryStore, k: &[u8]) -> bool {
    store.get(key(k)).unwrap().is_some()
}

#[test]
fn crash_loses_unsynced_writes_and_keeps_synced_ones() {
    let store = MemoryStore::new(StoreConfig::default());
    put(&store, b"before", Durability::Buffered);
    put(&store, b"synced", Durability::Sync);
    put(&store, b"after", Durability::Buffered);
    assert_eq!(store.unsynced_writes(), 1);
    assert!(present(&store, b"after"), "readable before the crash");

    let store = store.crash();
    assert!(
        present(&store, b"before"),
        "a sync makes every earlier write durable"
    );
    assert!(present(&store, b"synced"));
    assert!(!present(&store, b"after"), "an unsynced write is lost");
    assert_eq!(store.unsynced_writes(), 0);
}

#[test]
fn an_explicit_sync_makes_earlier_writes_durable() {
    let store = MemoryStore::default();
    put(&store, b"a", Durability::Buffered);
    store.sync().unwrap();
    put(&store, b"b", Durability::Buffered);
    let store = store.crash();
    assert!(present(&store, b"a"));
    assert!(!present(&store, b"b"));
}

#[test]
fn metadata_writes_are_synced_and_flush_earlier_writes() {
    let store = MemoryStore::default();
    put(&store, b"data", Durability::Buffered);
    assert_eq!(store.bump_generation().unwrap(), 1);
    let store = store.crash();
    assert_eq!(store.generation().unwrap(), 1);
    assert!(
        present(&store, b"data"),
        "the metadata sync flushed the log before it"
    );
    assert_eq!(store.bump_generation().unwrap(), 2);
}

#[test]
fn a_crash_rebuilds_hint_counts_from_what_was_durable() {
    let store = MemoryStore::default();
    let target = Uuid::from_u128(9);
    let kept = store
        .add_hint(target, key(b"k"), &object(1, 1, b"v"), Durability::Sync)
        .unwrap();
    store
        .add_hint(target, key(b"k"), &object(1, 2, b"v"), Durability::Buffered)
        .unwrap();
    assert_eq!(store.hint_count(target).unwrap(), 2);
    let store = store.crash();
    assert_eq!(store.hint_count(target).unwrap(), 1);
    assert_eq!(
        store
            .hints(target, None, 10)
            .unwrap()
            .iter()
            .map(|h| h.seq)
            .collect::<Vec<_>>(),
        vec![kept]
    );
    let next = store
        .add_hint(target, key(b"k"), &object(1, 3, b"v"), Durability::Sync)
        .unwrap();
    assert!(next > kept);
    assert_eq!(store.hint_count(target).unwrap(), 2);
}

#[test]
fn a_restart_keeps_unsynced_writes() {
    let store = MemoryStore::default();
    put(&store, b"buffered", Durability::Buffered);
    let store = store.restart();
    assert!(present(&store, b"buffered"));
}

#[test]
fn dropping_a_partition_is_durable() {
    let store = MemoryStore::default();
    put(&store, b"k", Durability::Sync);
    store.drop_partition(PartitionId(1)).unwrap();
    let store = store.crash();
    assert!(!present(&store, b"k"));
}

#[test]
fn under_group_commit_a_process_crash_loses_what_was_not_flushed() {
    let store = MemoryStore::with_group_commit(StoreConfig::default());
    put(&store, b"flushed", Durability::Buffered);
    store.flush().unwrap();
    put(&store, b"waiting", Durability::Buffered);
    put(&store, b"waiting-sync", Durability::Sync);
    assert!(present(&store, b"waiting"), "readable before it is flushed");
    assert_eq!(store.unflushed_writes(), 2);
    let store = store.restart();
    assert!(present(&store, b"flushed"));
    assert!(!present(&store, b"waiting"), "lost with the process");
    assert!(
        !present(&store, b"waiting-sync"),
        "a sync write is durable only once flushed"
    );
}

#[test]
fn under_group_commit_a_flush_owes_the_sync_a_write_asked_for() {
    let store = MemoryStore::with_group_commit(StoreConfig::default());
    put(&store, b"buffered", Durability::Buffered);
    store.flush().unwrap();
    let store = store.crash();
    assert!(
        !present(&store, b"buffered"),
        "flushed, not synced: a machine crash loses it"
    );
    put(&store, b"synced", Durability::Sync);
    put(&store, b"alongside", Durability::Buffered);
    store.flush().unwrap();
    assert_eq!(store.unsynced_writes(), 0, "the flush synced the batch");
    let store = store.crash();
    assert!(present(&store, b"synced"));
    assert!(present(&store, b"alongside"), "synced with the batch");
}

/// A store behind a pointer (`Arc`, `Box`, a reference) is the same store:
/// its flush puts the waiting writes in the log, not a default that does
/// nothing.
#[test]
fn a_store_behind_a_pointer_flushes_like_the_store_itself() {
    fn flush_through(store: &impl Store) {
        store.flush().unwrap();
    }
    let store = std::sync::Arc::new(MemoryStore::with_group_commit(StoreConfig::default()));
    put(&store, b"arc", Durability::Buffered);
    flush_through(&store);
    assert_eq!(store.unflushed_writes(), 0, "flushed through Arc");
    put(&store, b"ref", Durability::Buffered);
    flush_through(&&*store);
    assert_eq!(store.unflushed_writes(), 0, "flushed through a reference");
    let boxed: Box<MemoryStore> = Box::new(MemoryStore::with_group_commit(StoreConfig::default()));
    put(&boxed, b"box", Durability::Buffered);
    flush_through(&boxed);
    assert_eq!(boxed.unflushed_writes(), 0, "flushed through Box");
}
