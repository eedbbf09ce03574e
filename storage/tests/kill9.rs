//! Durability under `kill -9`: a child process writes to the RocksDB engine
//! and prints each write once the store acknowledged it; the test kills the
//! child with SIGKILL mid-stream, reopens the database and looks for every
//! acknowledged write.
//!
//! The child is this test binary run again (`--exact child_writer`) with
//! `CHORUS_KILL9_DIR` naming the database; without that variable
//! `child_writer` has nothing to do.
#![cfg(all(feature = "rocksdb", unix))]
// Kills a child process mid-write: a thread reads its output.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use chorus_ring::PartitionId;
use chorus_storage::hlc::Timestamp;
use chorus_storage::store::{
    Durability, KeyRef, RocksConfig, RocksStore, Store, StoreConfig, StoreError, Update,
};
use chorus_storage::version::{ActorId, Dot};

const DIR_VAR: &str = "CHORUS_KILL9_DIR";
const SYNC_VAR: &str = "CHORUS_KILL9_SYNC";
const FIRST_VAR: &str = "CHORUS_KILL9_FIRST";
/// Set to `1`: the child opens the store for group commit and acknowledges
/// its writes a batch at a time, after [`Store::flush`], as the node does.
const GROUP_VAR: &str = "CHORUS_KILL9_GROUP";
/// Writes per flush under group commit.
const GROUP_BATCH: u64 = 32;
/// The most writes one child makes, whatever happens.
const CHILD_MAX_WRITES: u64 = 2_000_000;
/// How long the test waits for the child's next acknowledgement before it
/// gives up on the child (a hung child, not a slow one).
const STALL_LIMIT: Duration = Duration::from_secs(120);

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn value(seq: u64) -> Vec<u8> {
    let mut v = seq.to_be_bytes().repeat(13);
    v.truncate(100);
    v
}

fn open(dir: &Path) -> RocksStore {
    open_with(dir, false)
}

fn open_with(dir: &Path, group_commit: bool) -> RocksStore {
    let rocks = RocksConfig {
        group_commit,
        ..RocksConfig::default()
    };
    RocksStore::open(dir, StoreConfig::default(), &rocks).expect("open the database")
}

/// The child's half: writes keys `first..`, printing `ack <seq>` after each.
#[test]
fn child_writer() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return;
    };
    let sync = std::env::var(SYNC_VAR).as_deref() == Ok("1");
    let first: u64 = std::env::var(FIRST_VAR)
        .expect("first sequence number")
        .parse()
        .expect("a number");
    let durability = Durability::from_sync(sync);
    let group = std::env::var(GROUP_VAR).as_deref() == Ok("1");
    let store = open_with(Path::new(&dir), group);
    let mut unacknowledged = Vec::new();
    for seq in first..first + CHILD_MAX_WRITES {
        store
            .update(
                KeyRef::new(PartitionId((seq % 8) as u32), b"kill9", &key(seq)),
                durability,
                |object| {
                    let dot = Dot::new(ActorId(1), seq);
                    let context = object.context().clone();
                    object
                        .write_in(&context, dot, Timestamp::new(seq, 0), Some(value(seq)))
                        .expect("a fresh dot");
                    Update::Write(())
                },
            )
            .expect("write");
        if !group {
            println!("ack {seq}");
            continue;
        }
        unacknowledged.push(seq);
        if unacknowledged.len() as u64 == GROUP_BATCH {
            store.flush().expect("flush");
            for seq in unacknowledged.drain(..) {
                println!("ack {seq}");
            }
        }
    }
}

/// Kills the child when dropped, so a failing test leaves no writer behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs one child from `first` until it acknowledged `acks` writes, kills it
/// with SIGKILL, and returns the acknowledged sequence numbers.
fn write_and_kill(dir: &Path, mode: Mode, first: u64, acks: usize) -> Vec<u64> {
    write_and_kill_after(dir, mode, first, acks, || {})
}

/// [`write_and_kill`], calling `meanwhile` while the child still runs,
/// after its `acks` acknowledgements and before the kill.
fn write_and_kill_after(
    dir: &Path,
    mode: Mode,
    first: u64,
    acks: usize,
    meanwhile: impl FnOnce(),
) -> Vec<u64> {
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(DIR_VAR, dir)
        .env(SYNC_VAR, if mode.sync { "1" } else { "0" })
        .env(GROUP_VAR, if mode.group_commit { "1" } else { "0" })
        .env(FIRST_VAR, first.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the child writer");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().expect("piped stdout");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The harness may print its own text before ours on a line.
            if let Some((_, seq)) = line.split_once("ack ") {
                if lines
                    .send(seq.parse::<u64>().expect("a sequence number"))
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    let mut acked = Vec::with_capacity(acks);
    while acked.len() < acks {
        match received.recv_timeout(STALL_LIMIT) {
            Ok(seq) => acked.push(seq),
            Err(e) => panic!(
                "the child stopped acknowledging after {} writes: {e}",
                acked.len()
            ),
        }
    }
    meanwhile();
    child.0.kill().expect("SIGKILL the child");
    let status = child.0.wait().expect("reap the child");
    assert!(
        !status.success(),
        "the child was killed, it did not finish: {status}"
    );
    acked
}

/// How the child writes.
#[derive(Debug, Clone, Copy)]
struct Mode {
    /// `Durability::Sync` writes.
    sync: bool,
    /// Group commit: acknowledged a batch at a time, after a flush.
    group_commit: bool,
}

/// Several kill rounds on one database; every round starts where the last
/// acknowledged write of the previous one left off.
fn every_acknowledged_write_survives_kill_9(mode: Mode, rounds: usize, acks_per_round: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut first = 1;
    let mut total = 0;
    for round in 0..rounds {
        let acked = write_and_kill(dir.path(), mode, first, acks_per_round);
        assert_eq!(
            acked,
            (first..first + acks_per_round as u64).collect::<Vec<_>>(),
            "in order"
        );
        let store = open(dir.path());
        let mut lost = Vec::new();
        for &seq in &acked {
            let k = key(seq);
            match store
                .get(KeyRef::new(PartitionId((seq % 8) as u32), b"kill9", &k))
                .expect("read")
            {
                Some(object)
                    if object.siblings().len() == 1
                        && object.siblings()[0].value.as_deref() == Some(&value(seq)[..]) => {}
                _ => lost.push(seq),
            }
        }
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} acknowledged writes lost: {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(10)]
        );
        total += acked.len();
        first += acks_per_round as u64 + CHILD_MAX_WRITES;
    }
    assert_eq!(total, rounds * acks_per_round);
}

#[test]
fn buffered_writes_survive_kill_9() {
    let mode = Mode {
        sync: false,
        group_commit: false,
    };
    every_acknowledged_write_survives_kill_9(mode, 3, 5_000);
}

#[test]
fn synced_writes_survive_kill_9() {
    let mode = Mode {
        sync: true,
        group_commit: false,
    };
    every_acknowledged_write_survives_kill_9(mode, 2, 300);
}

/// Group commit defers the log write to the flush; what was acknowledged
/// after a flush survives.
#[test]
fn group_committed_writes_survive_kill_9() {
    let mode = Mode {
        sync: false,
        group_commit: true,
    };
    every_acknowledged_write_survives_kill_9(mode, 3, 5_024);
}

#[test]
fn group_committed_synced_writes_survive_kill_9() {
    let mode = Mode {
        sync: true,
        group_commit: true,
    };
    every_acknowledged_write_survives_kill_9(mode, 2, 320);
}

/// Opens `dir` expecting [`StoreError::InUse`] naming it.
fn refused_as_in_use(dir: &Path) {
    match RocksStore::open(dir, StoreConfig::default(), &RocksConfig::default()) {
        Err(StoreError::InUse { path }) => {
            assert_eq!(path, dir);
            let message = StoreError::InUse { path }.to_string();
            assert!(message.contains("in use by another process"), "{message}");
        }
        Err(other) => panic!("expected the database to be in use, got: {other}"),
        Ok(_) => panic!("a second open of a held database succeeded"),
    }
}

/// A database another process holds open is refused as in use, naming its
/// directory, and the holder's writes are untouched; so is a second open
/// within one process.
#[test]
fn a_database_held_open_is_refused_as_in_use() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mode = Mode {
        sync: false,
        group_commit: false,
    };
    let acked = write_and_kill_after(dir.path(), mode, 1, 20, || refused_as_in_use(dir.path()));
    let store = open(dir.path());
    for seq in acked {
        let found = store
            .get(KeyRef::new(
                PartitionId((seq % 8) as u32),
                b"kill9",
                &key(seq),
            ))
            .expect("read");
        assert!(found.is_some(), "acknowledged write {seq} is there");
    }
    refused_as_in_use(dir.path());
}
