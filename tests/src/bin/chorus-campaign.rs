//! Long test campaigns against Chorus.
//!
//! ```text
//! chorus-campaign sim --seeds 1..=10000 [--workloads all] [--consistency all] [--faults all]
//! chorus-campaign cluster --duration 20m [--faults all] [--seed N]
//! ```
//!
//! `cluster` runs five real `chorus node start` processes in network
//! namespaces under a nemesis (see `chorus_tests::real`; needs root) and
//! checks the history the same way.
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
use chorus_tests::real::{RealConfig, RealFault};
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
    /// Real processes in network namespaces under a nemesis (needs root).
    Cluster {
        /// How long clients run under faults, e.g. `90s`, `20m`.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        duration: std::time::Duration,
        /// Fault kinds, comma-separated, `all` or `none`.
        #[arg(long, default_value = "all")]
        faults: String,
        /// Consistency level of every request.
        #[arg(long, default_value = "sloppy")]
        consistency: Consistency,
        /// Seeds the nemesis schedule and the clients.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The `chorus` binary (default: beside this one).
        #[arg(long)]
        chorus: Option<std::path::PathBuf>,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("duration {s:?}: expected e.g. 90s or 20m"))?;
    match unit {
        "" | "s" => Ok(std::time::Duration::from_secs(n)),
        "m" => Ok(std::time::Duration::from_secs(n * 60)),
        "h" => Ok(std::time::Duration::from_secs(n * 3600)),
        _ => Err(format!("duration {s:?}: unit must be s, m or h")),
    }
}

fn parse_seeds(s: &str) -> Result<RangeInclusive<u64>, String> {
    let number = |t: &str| {
        t.trim()
            .parse::<u64>()
            .map_err(|e| format!("seed {t:?}: {e}"))
    };
    match s.split_once("..=") {
        Some((a, b)) => {
            let (first, last) = (number(a)?, number(b)?);
            if first > last {
                return Err(format!("{s:?} is empty: the first seed is above the last"));
            }
            Ok(first..=last)
        }
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
        Command::Cluster {
            duration,
            faults,
            consistency,
            seed,
            chorus,
        } => match list(&faults, &RealFault::ALL) {
            Ok(faults) => cluster(RealConfig {
                duration,
                faults,
                consistency,
                seed,
                chorus,
                ..RealConfig::default()
            }),
            Err(error) => {
                eprintln!("chorus-campaign: {error}");
                ExitCode::from(2)
            }
        },
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

fn cluster(config: RealConfig) -> ExitCode {
    if let Err(why) = chorus_tests::netns::available() {
        eprintln!("chorus-campaign: SKIPPED: network namespaces are not available here: {why}");
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let report = match chorus_tests::real::run(&config) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("chorus-campaign: the run failed: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    for line in &report.nemesis_log {
        println!("nemesis: {line}");
    }
    print!("{report}");
    let mut per_checker: std::collections::BTreeMap<&str, usize> = Default::default();
    for violation in &report.violations {
        *per_checker.entry(violation.checker).or_default() += 1;
    }
    println!("operations:           {}", report.counts.operations);
    println!(
        "writes:               {} acknowledged, {} not applied, {} unknown",
        report.counts.acknowledged, report.counts.not_applied, report.counts.unknown
    );
    println!("violations per checker:");
    for checker in CHECKERS {
        println!(
            "  {checker:<18}  {}",
            per_checker.get(checker).copied().unwrap_or(0)
        );
    }
    println!("converged after heal: {:.1?}", report.converged_after);
    println!("wall time:            {:.1?}", started.elapsed());
    if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        for violation in report.violations.iter().take(10) {
            println!("  {violation}");
        }
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
