//! `chorus bench`: a load generator after YCSB (Cooper et al., "Benchmarking
//! Cloud Serving Systems with YCSB", SoCC 2010), measuring Chorus and the
//! stores one would pick instead with the same client and workloads.
//!
//! * [`workload`]: YCSB's core workloads A, B, C, D, F, plus `write` and
//!   `delete`, and the seeded operation stream of each task;
//! * [`generator`]: key choosers (uniform, scrambled Zipfian, latest);
//! * [`driver`]: the [`Driver`] trait and its Chorus (HTTP, QUIC), Redis
//!   and etcd implementations;
//! * [`runner`]: the load and run phases, closed or open loop (with
//!   coordinated-omission correction);
//! * [`report`]: HdrHistogram summaries, the table and the JSON schema.
//!
//! A run: `--records` keys are inserted (the load phase, unless
//! `--no-load`), then the workload runs for `--duration` or
//! `--operations`, and the report is printed (`--json` for machines).

pub mod driver;
pub mod generator;
pub mod report;
pub mod runner;
pub mod workload;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use driver::{ChorusDriver, Driver, DriverError, EtcdDriver, ReadResult, RedisDriver};
pub use generator::Distribution;
pub use report::{PhaseReport, Report, SCHEMA_VERSION};
pub use runner::{Limit, RunConfig};
pub use workload::{OpKind, ValueSize, Workload};

use crate::{Client, ClientTls, RequestOptions};

/// The arguments of `chorus bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// A store to drive; repeat for several nodes of one cluster.
    /// `http://HOST:PORT` is Chorus over HTTP, `redis://HOST:PORT` Redis,
    /// `etcd+http://HOST:PORT` etcd's v3 JSON gateway, `store:DIR` the
    /// node's storage engine in DIR driven directly, without a node (a
    /// node's data directory layout; the raw figure replication is
    /// measured against). A first read checks the store answers before
    /// anything runs.
    #[arg(long = "target", default_value = "http://127.0.0.1:8080")]
    pub targets: Vec<String>,
    /// Drive Chorus over its QUIC client protocol at this address instead
    /// (with --tls-ca, --tls-cert, --tls-key, as `chorus shell`).
    #[arg(long, requires_all = ["tls_ca", "tls_cert", "tls_key"])]
    pub quic: Option<SocketAddr>,
    /// The cluster CA certificate (PEM), for --quic.
    #[arg(long, requires = "quic")]
    pub tls_ca: Option<PathBuf>,
    /// The client certificate (PEM), for --quic.
    #[arg(long, requires = "quic")]
    pub tls_cert: Option<PathBuf>,
    /// The client key (PEM), for --quic.
    #[arg(long, requires = "quic")]
    pub tls_key: Option<PathBuf>,
    /// The Chorus bucket the keys live in.
    #[arg(long, default_value = "bench")]
    pub bucket: String,
    #[arg(long, value_enum, default_value_t = Workload::A)]
    pub workload: Workload,
    /// Key distribution (default: latest for workload D, else zipfian).
    #[arg(long, value_enum)]
    pub distribution: Option<Distribution>,
    /// Keys the load phase inserts and the run phase chooses from (at
    /// least 1).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub records: u64,
    /// Value size in bytes: N, or MIN..MAX (inclusive), at most 64 MiB.
    #[arg(long, default_value = "100")]
    pub value_size: ValueSize,
    /// How long the run phase lasts (e.g. 30s, 2m).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub duration: Duration,
    /// Run this many operations instead of for a duration (0: the load
    /// phase only).
    #[arg(long, conflicts_with = "duration")]
    pub operations: Option<u64>,
    /// Tasks issuing operations (in closed loop, operations in flight), at
    /// least 1.
    #[arg(long, default_value_t = 16,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub concurrency: usize,
    /// Open loop at this many operations per second (all tasks together),
    /// latencies measured from each operation's intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Chorus options of reads, e.g. `r=quorum`, `r=one,pr=1` or
    /// `"r=one pr=1"` (commas or spaces between options).
    #[arg(long, default_value = "")]
    pub read: String,
    /// Chorus options of writes and deletes, e.g. `w=quorum,sync=true` or
    /// `"w=quorum sync=true"`.
    #[arg(long, default_value = "")]
    pub write: String,
    /// Seed of the operation streams: the same seed, the same operations.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Skip the load phase (the keys are already there).
    #[arg(long)]
    pub no_load: bool,
    /// Retries of the Chorus client (default none: every failure counts).
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// Print the report as JSON (schema in `chorus_client::bench::report`).
    #[arg(long)]
    pub json: bool,
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(String);

/// Parses `name=value,name=value` Chorus options with
/// [`RequestOptions::parse`].
pub fn parse_options(text: &str) -> Result<RequestOptions, BenchError> {
    // Commas (as in a query string) or spaces (as in the shell's
    // CONSISTENCY) between options.
    let pairs: Vec<(&str, &str)> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    RequestOptions::parse(pairs)
        .map_err(|e| BenchError(format!("invalid options {text:?}: {e} ({})", e.code())))
}

impl BenchArgs {
    /// The run configuration these arguments describe.
    pub fn config(&self) -> RunConfig {
        RunConfig {
            workload: self.workload,
            distribution: self
                .distribution
                .unwrap_or(self.workload.default_distribution()),
            records: self.records,
            value_size: self.value_size,
            limit: match self.operations {
                Some(n) => Limit::Operations(n),
                None => Limit::Duration(self.duration),
            },
            concurrency: self.concurrency.max(1),
            rate: self.rate,
            seed: self.seed,
            progress: true,
        }
    }
}

/// Runs both phases against `driver` and summarises them, with the
/// driver's extra requests. When every operation of the load phase failed,
/// the run phase is skipped (reported empty).
pub async fn bench<D: Driver>(
    driver: Arc<D>,
    config: &RunConfig,
    load: bool,
) -> (Option<PhaseReport>, PhaseReport, BTreeMap<String, u64>) {
    let load = if load {
        Some(PhaseReport::from_recorded(
            &runner::load(driver.clone(), config).await,
        ))
    } else {
        None
    };
    // Nothing loaded: a run would only repeat the load's errors.
    if load.as_ref().is_some_and(|l| l.ok == 0 && l.errors > 0) {
        let skipped = PhaseReport {
            elapsed_s: 0.0,
            ok: 0,
            errors: 0,
            throughput: 0.0,
            unsent: 0,
            ops: BTreeMap::new(),
        };
        return (load, skipped, driver.extra_requests());
    }
    let run = PhaseReport::from_recorded(&runner::run(driver.clone(), config).await);
    (load, run, driver.extra_requests())
}

/// Reads one key to check the store answers before a run starts, so a
/// wrong address or option fails at once rather than as a run of errors.
async fn probe<D: Driver>(driver: &D, targets: &[String]) -> Result<(), BenchError> {
    match driver.read(&workload::key_name(0)).await {
        Ok(_) => Ok(()),
        Err(error) => Err(BenchError(format!(
            "{} did not answer a first read: {} ({})",
            targets.join(", "),
            error.detail,
            error.code
        ))),
    }
}

/// Runs [`probe`], then [`bench`].
async fn probe_and_bench<D: Driver>(
    driver: Arc<D>,
    targets: &[String],
    config: &RunConfig,
    load: bool,
) -> Result<(Option<PhaseReport>, PhaseReport, BTreeMap<String, u64>), BenchError> {
    probe(&*driver, targets).await?;
    Ok(bench(driver, config, load).await)
}

/// Checks the arguments every driver shares: the options parse, the rate
/// and the duration are positive. Returns the run configuration.
/// Checks `chorus bench`'s arguments beyond what the parser does (the
/// request options, the rate, the duration): an error here is a usage
/// error, reported before anything runs.
pub fn check_args(args: &BenchArgs) -> Result<(), BenchError> {
    checked_config(args).map(|_| ())
}

fn checked_config(args: &BenchArgs) -> Result<RunConfig, BenchError> {
    parse_options(&args.read)?;
    parse_options(&args.write)?;
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(BenchError("--rate must be a positive number".into()));
    }
    if args.operations.is_none() && args.duration.is_zero() {
        return Err(BenchError("--duration must be positive".into()));
    }
    check_targets(args)?;
    Ok(args.config())
}

/// The targets name one kind of store: Chorus nodes, one Redis, etcd
/// members, or a single local store (unless `--quic` names the store).
fn check_targets(args: &BenchArgs) -> Result<(), BenchError> {
    let targets = &args.targets;
    if args.quic.is_some() {
        return Ok(());
    }
    if targets.iter().any(|t| t.starts_with(STORE_SCHEME)) {
        return if targets.len() == 1 {
            Ok(())
        } else {
            Err(BenchError(
                "a store: target is the only --target of a run".into(),
            ))
        };
    }
    let all = |scheme: &str| targets.iter().all(|t| t.starts_with(scheme));
    if all("http://") || all("redis://") || all("etcd+http://") {
        Ok(())
    } else {
        Err(BenchError(TARGET_FORMS.into()))
    }
}

/// What `--target` accepts, for the error that refuses another.
const TARGET_FORMS: &str = "every --target must be an http:// URL (Chorus), every one a \
     redis:// or every one an etcd+http:// URL, or a single store:DIR (nodes serve plain \
     HTTP; for TLS use --quic)";

/// The prefix of a target naming a local store (the node's storage
/// engine driven directly, without a node). Only the `chorus` binary,
/// which links the storage engine, serves it, through [`main_with`].
pub const STORE_SCHEME: &str = "store:";

/// `chorus bench`: builds the driver the targets name, runs, prints.
pub async fn main(args: BenchArgs) -> Result<(), BenchError> {
    let config = checked_config(&args)?;
    let read = parse_options(&args.read)?;
    let write = parse_options(&args.write)?;
    let peer = args.quic.is_none()
        && args
            .targets
            .iter()
            .all(|t| t.starts_with("redis://") || t.starts_with("etcd+"));
    if peer && (!args.read.is_empty() || !args.write.is_empty() || args.retries > 0) {
        eprintln!("note: --read, --write and --retries apply to Chorus only; Redis and etcd run with their own defaults");
    }
    if let Some(addr) = args.quic {
        let (ca, cert, key) = (
            args.tls_ca.as_ref(),
            args.tls_cert.as_ref(),
            args.tls_key.as_ref(),
        );
        let tls = ClientTls::from_files(
            ca.expect("clap requires --ca"),
            cert.expect("clap requires --cert"),
            key.expect("clap requires --key"),
        )
        .map_err(|e| BenchError(e.to_string()))?;
        let client = Client::builder()
            .quic(addr, tls)
            .retries(args.retries)
            .build()
            .map_err(|e| BenchError(e.to_string()))?;
        let driver = Arc::new(ChorusDriver::new(client, &args.bucket, read, write));
        let targets = vec![addr.to_string()];
        run_and_print(&args, &config, "chorus-quic", targets, driver).await
    } else if args.targets.iter().all(|t| t.starts_with("redis://")) {
        let [url] = args.targets.as_slice() else {
            return Err(BenchError("Redis takes one --target".into()));
        };
        let driver = RedisDriver::connect(url, config.concurrency)
            .await
            .map_err(|e| BenchError(format!("{url}: {}", e.detail)))?;
        let targets = args.targets.clone();
        run_and_print(&args, &config, "redis", targets, Arc::new(driver)).await
    } else if args.targets.iter().all(|t| t.starts_with("etcd+http://")) {
        let endpoints = args.targets.iter().map(|t| t["etcd+".len()..].to_owned());
        let driver = EtcdDriver::new(endpoints.collect()).map_err(|e| BenchError(e.detail))?;
        let targets = args.targets.clone();
        run_and_print(&args, &config, "etcd", targets, Arc::new(driver)).await
    } else if args.targets.iter().all(|t| t.starts_with("http://")) {
        let mut builder = Client::builder().retries(args.retries);
        for target in &args.targets {
            builder = builder.endpoint(target);
        }
        let client = builder.build().map_err(|e| BenchError(e.to_string()))?;
        let driver = Arc::new(ChorusDriver::new(client, &args.bucket, read, write));
        let targets = args.targets.clone();
        run_and_print(&args, &config, "chorus-http", targets, driver).await
    } else if args.targets.iter().any(|t| t.starts_with(STORE_SCHEME)) {
        Err(BenchError(
            "a store: target is the only --target of a run, and only the chorus binary serves it"
                .into(),
        ))
    } else {
        Err(BenchError(TARGET_FORMS.into()))
    }
}

/// `chorus bench` against a driver built outside this crate (the local
/// store driver of the `chorus` binary, which links the storage engine):
/// the same checks, phases, report and exit as [`main`]. `name` is the
/// report's `driver`.
pub async fn main_with<D: Driver>(
    args: &BenchArgs,
    name: &str,
    driver: Arc<D>,
) -> Result<(), BenchError> {
    let config = checked_config(args)?;
    run_and_print(args, &config, name, args.targets.clone(), driver).await
}

/// Probes, runs both phases, prints the report; fails when a phase had
/// only errors.
async fn run_and_print<D: Driver>(
    args: &BenchArgs,
    config: &RunConfig,
    driver_name: &str,
    targets: Vec<String>,
    driver: Arc<D>,
) -> Result<(), BenchError> {
    let (load, run, extra_requests) =
        probe_and_bench(driver, &targets, config, !args.no_load).await?;
    let report = Report {
        schema_version: SCHEMA_VERSION,
        driver: driver_name.to_owned(),
        targets,
        workload: config.workload,
        distribution: config.distribution,
        records: config.records,
        value_size: config.value_size,
        concurrency: config.concurrency,
        rate: config.rate,
        seed: config.seed,
        read_options: args.read.clone(),
        write_options: args.write.clone(),
        load,
        run,
        extra_requests,
    };
    if args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| BenchError(e.to_string()))?;
        println!("{json}");
    } else {
        print!("{}", report.table());
    }
    let phases = report.load.iter().map(|p| ("load", p));
    for (name, phase) in phases.chain([("run", &report.run)]) {
        if phase.ok == 0 && phase.errors > 0 {
            return Err(BenchError(format!(
                "every operation of the {name} phase failed ({} errors)",
                phase.errors
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_as_a_node_parses_them() {
        let options = parse_options("w=quorum, sync=true").unwrap();
        assert!(options.sync);
        // Spaces, as the shell's CONSISTENCY takes them, work too.
        assert_eq!(parse_options("w=quorum sync=true").unwrap(), options);
        assert_eq!(parse_options(" w=quorum,,sync=true ").unwrap(), options);
        assert_eq!(parse_options("").unwrap(), RequestOptions::default());
        let error = parse_options("w=most").unwrap_err().to_string();
        assert!(error.contains("invalid_quorum"), "{error}");
        let error = parse_options("fast").unwrap_err().to_string();
        assert!(error.contains("unknown_option"), "{error}");
    }
}
