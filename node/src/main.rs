//! The `chorus` binary.

use clap::Parser;

/// Chorus: a leaderless, eventually consistent key-value store.
#[derive(Debug, Parser)]
#[command(name = "chorus", version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
