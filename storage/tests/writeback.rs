//! The database starts writeback every `RocksConfig::bytes_per_sync` bytes
//! of log and table file, as RocksDB itself records in the options file it
//! writes beside the data (`OPTIONS-<number>`): an fsync then waits only
//! for what was appended since the last such point.

#![cfg(feature = "rocksdb")]

use std::path::Path;

use chorus_storage::store::{RocksConfig, RocksStore, StoreConfig};

/// The value of `name=` in the `[DBOptions]` section of the newest options
/// file RocksDB wrote in `dir`.
fn db_option(dir: &Path, name: &str) -> String {
    let newest = std::fs::read_dir(dir)
        .expect("the database directory")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("OPTIONS-") && !n.ends_with(".dbtmp"))
        })
        .max_by_key(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name["OPTIONS-".len()..].parse::<u64>().unwrap_or(0)
        })
        .expect("RocksDB writes an options file at open");
    let text = std::fs::read_to_string(&newest).expect("the options file");
    let section = text
        .split("[DBOptions]")
        .nth(1)
        .expect("a [DBOptions] section")
        .split("\n[")
        .next()
        .unwrap_or_default();
    let prefix = format!("{name}=");
    section
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in {}", newest.display()))
        .to_owned()
}

fn options_of(rocks: &RocksConfig) -> (String, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = RocksStore::open(dir.path(), StoreConfig::default(), rocks).expect("open");
    let options = (
        db_option(dir.path(), "wal_bytes_per_sync"),
        db_option(dir.path(), "bytes_per_sync"),
    );
    drop(store);
    options
}

#[test]
fn log_and_table_files_are_written_back_every_mebibyte_by_default() {
    let rocks = RocksConfig::default();
    assert_eq!(rocks.bytes_per_sync, 1 << 20);
    assert_eq!(
        options_of(&rocks),
        ("1048576".to_owned(), "1048576".to_owned())
    );
}

#[test]
fn zero_leaves_writeback_to_the_kernel() {
    let rocks = RocksConfig {
        bytes_per_sync: 0,
        ..RocksConfig::default()
    };
    assert_eq!(options_of(&rocks), ("0".to_owned(), "0".to_owned()));
}
