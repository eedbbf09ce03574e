//! Writes the seed corpus of every fuzz target to `fuzz/corpus/<target>/`:
//! a handful of small valid encodings each, from `chorus_tests::fuzz::seeds`.
//!
//! `cargo run -p chorus-tests --example fuzz-corpus` — run it again after a
//! change to an encoding; `tests/tests/fuzz_corpus.rs` fails while the
//! checked-in corpus lacks a current seed.

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (target, seeds) in chorus_tests::fuzz::seeds() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), seed)?;
        }
        println!("{}: {} seeds", dir.display(), seeds.len());
    }
    Ok(())
}
