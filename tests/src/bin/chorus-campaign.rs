//! Long test campaigns against Chorus.
//!
//! ```text
//! chorus-campaign sim --seeds 1..=10000 [--workloads all] [--consistency all] [--faults all]
//! ```
//!
//! `sim` runs one seeded simulation per seed (see `chorus_tests::campaign`)
//! and prints a summary: seeds run, operations, acknowledged writes, lost
//! and unexpected values, violations per checker, time to converge after
//! the faults healed (p50/p99). Every failing seed is printed with its
//! violations and the command that replays it. Exits 1 when any checker
//! reported a violation.

use std::ops::RangeInclusive;
use std::process::ExitCode;
use std::time::Instant;

use chorus_tests::campaign::{self, SimRun, Summary};
use chorus_tests::check::CHECKERS;
use chorus_tests::nemesis::FaultKind;
use chorus_tests::workload::{Consistency, Kind};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    about = "Long test campaigns against Chorus: seeded simulations under faults, with history checkers."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Seeded simulations of 3 to 7 nodes under a nemesis.
    Sim {
        /// Seeds to run, as FIRST..=LAST (or one seed).
        #[arg(long, default_value = "1..=200", value_parser = parse_seeds)]
        seeds: RangeInclusive<u64>,
        /// Workloads to draw from, comma-separated, or `all`.
        #[arg(long, default_value = "all")]
        workloads: String,
        /// Consistency levels to draw from, comma-separated, or `all`.
        #[arg(long, default_value = "all")]
        consistency: String,
        /// Fault kinds the nemesis uses, comma-separated, `all` or `none`.
        #[arg(long, default_value = "all")]
        faults: String,
        /// Print every seed's result, not only the failing ones.
        #[arg(long)]
        verbose: bool,
        /// Print the whole history of this key (and the nemesis's log) for
        /// every failing seed.
        #[arg(long, value_name = "KEY")]
        dump_key: Option<String>,
    },
}

fn parse_seeds(s: &str) -> Result<RangeInclusive<u64>, String> {
    let number = |t: &str| {
        t.trim()
            .parse::<u64>()
            .map_err(|e| format!("seed {t:?}: {e}"))
    };
    match s.split_once("..=") {
        Some((a, b)) => Ok(number(a)?..=number(b)?),
        None => {
            let seed = number(s)?;
            Ok(seed..=seed)
        }
    }
}

/// Parses a comma-separated list, `all`, or `none`.
fn list<T>(s: &str, all: &[T]) -> Result<Vec<T>, String>
where
    T: std::str::FromStr + Copy,
    T::Err: std::fmt::Display,
{
    match s {
        "all" => Ok(all.to_vec()),
        "none" => Ok(Vec::new()),
        _ => s
            .split(',')
            .map(|item| item.trim().parse().map_err(|e: T::Err| e.to_string()))
            .collect(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim {
            seeds,
            workloads,
            consistency,
            faults,
            verbose,
            dump_key,
        } => {
            let parsed = (|| {
                let workloads = list(&workloads, &Kind::ALL)?;
                let consistency = list(&consistency, &Consistency::ALL)?;
                if workloads.is_empty() || consistency.is_empty() {
                    return Err("at least one workload and one consistency level".to_owned());
                }
                Ok((workloads, consistency, list(&faults, &FaultKind::ALL)?))
            })();
            match parsed {
                Ok((w, c, f)) => sim(seeds, &w, &c, &f, verbose, dump_key.as_deref()),
                Err(error) => {
                    eprintln!("chorus-campaign: {error}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn sim(
    seeds: RangeInclusive<u64>,
    workloads: &[Kind],
    consistency: &[Consistency],
    faults: &[FaultKind],
    verbose: bool,
    dump_key: Option<&str>,
) -> ExitCode {
    let started = Instant::now();
    let mut summary = Summary::default();
    let total = seeds.clone().count();
    for seed in seeds {
        let run = SimRun::from_seed(seed, workloads, consistency, faults);
        let report = campaign::run(&run);
        summary.add(&report);
        if verbose || !report.violations.is_empty() {
            println!(
                "seed {seed}: {} nodes, {} at {}, {} ops, {} acknowledged, {} faults, {} violations",
                run.nodes,
                run.workload,
                run.consistency,
                report.counts.operations,
                report.counts.acknowledged,
                report.faults_injected,
                report.violations.len()
            );
        }
        if !report.violations.is_empty() {
            for violation in report.violations.iter().take(10) {
                println!("  {violation}");
            }
            println!("  replay: {}", run.replay_command());
            if let Some(key) = dump_key {
                for line in &report.nemesis_log {
                    println!("  nemesis: {line}");
                }
                for (id, entry) in report.history.entries() {
                    if entry.op.key() == key {
                        println!(
                            "  {id:?} p{} node {} {:?}..{:?} {:?} -> {:?}",
                            entry.process,
                            entry.node,
                            entry.invoked,
                            entry.completed,
                            entry.op,
                            entry.completion
                        );
                    }
                }
            }
        }
        if summary.runs % 500 == 0 && summary.runs < total {
            eprintln!(
                "{} of {total} seeds, {} failed, {:.0?}",
                summary.runs,
                summary.failed_seeds.len(),
                started.elapsed()
            );
        }
    }
    print_summary(&summary, started.elapsed());
    if summary.failed_seeds.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_summary(summary: &Summary, elapsed: std::time::Duration) {
    let quantile = |q| {
        summary
            .converge_quantile(q)
            .map_or("-".to_owned(), |ms| format!("{ms} ms"))
    };
    println!("seeds run:            {}", summary.runs);
    println!("operations:           {}", summary.counts.operations);
    println!(
        "writes:               {} acknowledged, {} not applied, {} unknown",
        summary.counts.acknowledged, summary.counts.not_applied, summary.counts.unknown
    );
    println!("faults injected:      {}", summary.faults_injected);
    println!(
        "lost:                 {}",
        count(summary, "lost") + count(summary, "overwrite")
    );
    println!("unexpected:           {}", count(summary, "unexpected"));
    println!("violations per checker:");
    for checker in CHECKERS.iter().chain(&["hlc", "hints"]) {
        println!("  {checker:<18}  {}", count(summary, checker));
    }
    println!(
        "converged after heal: p50 {}, p99 {} ({} runs did not converge)",
        quantile(0.5),
        quantile(0.99),
        summary.unconverged
    );
    println!("failed seeds:         {:?}", summary.failed_seeds);
    println!("wall time:            {elapsed:.1?}");
}

fn count(summary: &Summary, checker: &str) -> usize {
    summary.violations.get(checker).copied().unwrap_or(0)
}
