//! RocksDB's compactions run at the lowest CPU priority and its flushes at
//! the normal one (`RocksConfig::lower_background_priority`): compactions
//! use the cores the request path leaves idle instead of preempting it.
//!
//! RocksDB's thread pools belong to the process, so this is a file (a test
//! process) of its own: a store opened elsewhere in the same process would
//! already have lowered them.

#![cfg(all(feature = "rocksdb", target_os = "linux"))]
// Waits, with a deadline, for RocksDB's own threads to run a compaction.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use chorus_ring::PartitionId;
use chorus_storage::store::{Durability, KeyRef, RocksConfig, RocksStore, Store, StoreConfig};

/// Generous: flushing and compacting a few 64 KiB memtables takes
/// milliseconds.
const COMPACTION_LIMIT: Duration = Duration::from_secs(120);

/// The nice value in a `/proc/.../stat` line: field 19 of
/// proc_pid_stat(5), the 17th after the parenthesised name.
fn nice_in_stat(stat: &str) -> i64 {
    let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let field = after_name.split(' ').nth(16).expect("a nice field");
    field.parse().expect("a number")
}

/// The nice value of each of this process's threads named `name`.
fn nice_of_threads(name: &str) -> Vec<i64> {
    let mut nice = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let task = task.expect("a task").path();
        let Ok(comm) = std::fs::read_to_string(task.join("comm")) else {
            continue; // the thread ended
        };
        if comm.trim_end() != name {
            continue;
        }
        if let Ok(stat) = std::fs::read_to_string(task.join("stat")) {
            nice.push(nice_in_stat(&stat));
        }
    }
    nice
}

#[test]
fn compactions_run_at_the_lowest_cpu_priority_and_flushes_do_not() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rocks = RocksConfig {
        // Small memtables, so that a few writes make RocksDB flush one,
        // and four flushed files make it compact them.
        data_write_buffer_bytes: 64 << 10,
        ..RocksConfig::default()
    };
    assert!(rocks.lower_background_priority, "on by default");
    // The threads RocksDB starts inherit the process's priority, which a
    // test runner may have lowered already.
    let own = nice_in_stat(&std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat"));
    assert!(
        own < 19,
        "this test runs at nice {own}: lowered threads look like the others"
    );
    let store =
        RocksStore::open(dir.path(), StoreConfig::default(), &rocks).expect("open the database");
    let value = vec![7u8; 1000];
    let deadline = Instant::now() + COMPACTION_LIMIT;
    let mut counter = 0;
    // A compaction thread lowers itself before it starts its first job.
    while !nice_of_threads("rocksdb:low").contains(&19) {
        assert!(
            Instant::now() < deadline,
            "no compaction thread at nice 19: {:?}",
            nice_of_threads("rocksdb:low")
        );
        for _ in 0..100 {
            counter += 1;
            // Overwrites of a few keys, as compaction has work to do then.
            let key = (counter % 50).to_string();
            let object = common::object(1, counter, &value);
            store
                .merge(
                    KeyRef::new(PartitionId(0), b"b", key.as_bytes()),
                    &object,
                    Durability::Buffered,
                )
                .expect("a write");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let flushers = nice_of_threads("rocksdb:high");
    assert!(!flushers.is_empty(), "a flush thread");
    assert!(
        flushers.iter().all(|&nice| nice == own),
        "flush threads at nice {flushers:?}, the process at {own}"
    );
}
