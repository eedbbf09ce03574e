//! Replays the fuzz corpus on stable: every target body of
//! `chorus_tests::fuzz` over every checked-in input of its target
//! (`fuzz/corpus/<target>/`) and every crash the fuzzer found
//! (`fuzz/regressions/<target>/`), so a fixed decoder bug stays fixed.

use std::path::{Path, PathBuf};

use chorus_tests::fuzz::{seeds, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("read a corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read a corpus file");
            (p, bytes)
        })
        .collect()
}

#[test]
fn every_target_replays_its_corpus_and_regressions() {
    for &(name, target) in TARGETS {
        let corpus = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty");
        let regressions = inputs(&fuzz_dir().join("regressions").join(name));
        for (path, bytes) in corpus.iter().chain(&regressions) {
            // A panic names the file through the test's output.
            eprintln!("{}", path.display());
            target(bytes);
        }
    }
}

#[test]
fn the_corpus_holds_every_current_seed_and_each_is_accepted() {
    assert_eq!(
        seeds().iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        TARGETS.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        "seeds and targets name the same targets in the same order"
    );
    for ((name, seeds), &(_, target)) in seeds().into_iter().zip(TARGETS) {
        let corpus = inputs(&fuzz_dir().join("corpus").join(name));
        for (i, seed) in seeds.iter().enumerate() {
            assert!(target(seed), "{name} refuses its own seed {i}");
            assert!(
                corpus.iter().any(|(_, bytes)| bytes == seed),
                "fuzz/corpus/{name} lacks seed {i}: run `cargo run -p chorus-tests --example fuzz-corpus`"
            );
        }
    }
}

#[test]
fn every_saved_crash_belongs_to_a_target() {
    let Ok(entries) = std::fs::read_dir(fuzz_dir().join("regressions")) else {
        return;
    };
    for entry in entries {
        let name = entry.expect("read regressions").file_name();
        let name = name.to_string_lossy();
        assert!(
            TARGETS.iter().any(|(target, _)| *target == name),
            "fuzz/regressions/{name} names no fuzz target"
        );
    }
}
