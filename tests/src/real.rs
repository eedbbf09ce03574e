//! Real processes under a nemesis: `chorus node start` in network
//! namespaces, clients over HTTP recording a [`History`], faults the kernel
//! injects, then the same checkers as the simulator ([`crate::check`]).
//!
//! [`run`] takes a [`RealConfig`] and:
//!
//! 1. makes a [`Testbed`] (one namespace, address and nft table per node)
//!    and starts one `chorus node start` per namespace, every node seeded
//!    with every other, each under `faketime` (`LD_PRELOAD` of
//!    [`FAKETIME_LIB`]) reading its clock offset from its own file so the
//!    nemesis can move that node's wall clock at runtime;
//! 2. runs client processes (tokio tasks over `reqwest`), a few per
//!    workload kind, each process a session of one shared [`Workload`] of
//!    its kind, asking a random node each time, for [`RealConfig::duration`];
//! 3. meanwhile runs the nemesis: a schedule drawn from
//!    [`RealConfig::seed`] of faults from [`RealConfig::faults`] (every kind
//!    once in a shuffled order, then again), each held for a few seconds
//!    then undone, logged as it goes; with [`RealConfig::crash_all`], a
//!    SIGKILL of every node at once at the end;
//! 4. heals everything (links, paused and killed processes, clocks), waits
//!    until every node is ready, holds the same ring, sees every other node
//!    up and has `chorus_hints_pending` 0, reads every key at `r=all` through every node (the final reads),
//!    and runs [`check_all`] with `acknowledged_writes_durable` (a SIGKILL
//!    keeps what RocksDB's write-ahead log holds).
//!
//! # How answers become completions
//!
//! Success is [`Completion::Ok`]. A read that fails is [`Completion::Fail`]
//! (reads change nothing). A write error with `outcome: not_applied`, or
//! without an outcome and a `4xx` or `503` status (a refusal before any
//! work: `unavailable`, `overloaded`, `not_ready`), is `Fail`; an error with
//! `outcome: may_have_applied`, any other `5xx`, a client timeout (the
//! request's `timeout` plus [`CLIENT_GRACE`]) or a lost connection is
//! [`Completion::Info`]. A `DELETE` without a context that answers `404`
//! deleted nothing and is `Fail` with code `not_found`.
//!
//! # Faults ([`RealFault`])
//!
//! `partition` (random halves), `isolate` (one node cut from every peer),
//! `bridge` (two sides that only a middle node reaches), `one-way` (one
//! direction of one link), all with nftables ([`Testbed`]); `kill` (SIGKILL,
//! then a restart on the same data directory); `pause` (SIGSTOP, then
//! SIGCONT); `clock-skew` (one node's wall clock jumps by ±5 s up to
//! ±[`RealConfig::max_skew`], then back); `delay` (every packet between two nodes held for 50 to
//! 500 ms, in user space through NFQUEUE: [`Testbed::delay`]).
//!
//! The test process must be root (see [`crate::netns::available`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::{check_all, Assumptions, Violation};
use crate::history::{Completion, Counts, History, Op, OpId, Options, Process, Response};
use crate::netns::Testbed;
use crate::workload::{Consistency, Kind, Workload};

/// The multi-threaded libfaketime (Debian package `faketime`).
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// How much longer than a request's own `timeout` a client waits for the
/// answer before it records the outcome as unknown.
pub const CLIENT_GRACE: Duration = Duration::from_secs(1);

/// The bucket every workload writes to.
const BUCKET: &str = "real";
const QUIC_PORT: u16 = 7070;
const HTTP_PORT: u16 = 8080;
/// How long nodes may take to form the cluster or converge after healing.
const PATIENCE: Duration = Duration::from_secs(90);

/// A kind of fault the nemesis injects; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RealFault {
    Partition,
    Isolate,
    Bridge,
    OneWay,
    Kill,
    Pause,
    ClockSkew,
    Delay,
}

impl RealFault {
    pub const ALL: [RealFault; 8] = [
        RealFault::Partition,
        RealFault::Isolate,
        RealFault::Bridge,
        RealFault::OneWay,
        RealFault::Kill,
        RealFault::Pause,
        RealFault::ClockSkew,
        RealFault::Delay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RealFault::Partition => "partition",
            RealFault::Isolate => "isolate",
            RealFault::Bridge => "bridge",
            RealFault::OneWay => "one-way",
            RealFault::Kill => "kill",
            RealFault::Pause => "pause",
            RealFault::ClockSkew => "clock-skew",
            RealFault::Delay => "delay",
        }
    }
}

impl fmt::Display for RealFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RealFault {
    type Err = String;
    fn from_str(s: &str) -> Result<RealFault, String> {
        RealFault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = RealFault::ALL.iter().map(|f| f.name()).collect();
                format!("unknown fault {s:?}; one of {}", names.join(", "))
            })
    }
}

/// What a real-process run does.
#[derive(Debug, Clone)]
pub struct RealConfig {
    /// Nodes (processes, namespaces); at least the replication factor.
    pub nodes: usize,
    /// Replicas per key (N).
    pub replicas: usize,
    /// How long clients run and the nemesis injects faults.
    pub duration: Duration,
    /// The fault kinds the nemesis draws from; empty for none.
    pub faults: Vec<RealFault>,
    /// The workload kinds; each gets [`RealConfig::processes_per_workload`]
    /// client processes.
    pub workloads: Vec<Kind>,
    pub processes_per_workload: usize,
    /// Shared keys per workload kind.
    pub keys: usize,
    pub consistency: Consistency,
    /// The request `timeout` option, in milliseconds.
    pub timeout_ms: u64,
    /// The largest clock skew (`clock-skew` draws 5 s up to this, ahead or
    /// behind). A node whose clock ran ahead keeps its HLC ahead once the
    /// clock is back (the HLC never goes back), and its peers refuse its
    /// messages beyond their drift bound until real time catches up; the
    /// wait for convergence after the heal allows for that.
    pub max_skew: Duration,
    /// How long each fault is held (the nemesis adds up to half as much
    /// again at random), and the quiet gap after each.
    pub fault_duration: Duration,
    pub quiet: Duration,
    /// Seeds the nemesis schedule and the clients' choices.
    pub seed: u64,
    /// At the end of the faults, SIGKILL every node at once and restart
    /// them all: a crash of the whole cluster, which loses nothing that
    /// the nodes' write-ahead logs hold (the page cache survives a process
    /// crash; a power loss is not testable on one machine).
    pub crash_all: bool,
    /// UNSAFE negative control: start nodes with `--unsafe-disable-wal`, so
    /// that a crash loses acknowledged writes (with
    /// [`RealConfig::crash_all`], on every replica).
    pub unsafe_disable_wal: bool,
    /// The `chorus` binary; `None` finds it beside the running test
    /// executable (`target/<profile>/chorus`).
    pub chorus: Option<PathBuf>,
}

impl Default for RealConfig {
    fn default() -> Self {
        RealConfig {
            nodes: 5,
            replicas: 3,
            duration: Duration::from_secs(60),
            faults: RealFault::ALL.to_vec(),
            workloads: Kind::ALL.to_vec(),
            processes_per_workload: 2,
            keys: 5,
            consistency: Consistency::Sloppy,
            timeout_ms: 2_000,
            max_skew: Duration::from_secs(300),
            fault_duration: Duration::from_secs(4),
            quiet: Duration::from_secs(2),
            seed: 1,
            crash_all: true,
            unsafe_disable_wal: false,
            chorus: None,
        }
    }
}

/// What a run found.
#[derive(Debug)]
pub struct RealReport {
    pub counts: Counts,
    pub violations: Vec<Violation>,
    /// From the heal until every node was ready with no hints pending.
    pub converged_after: Duration,
    /// Faults injected, per kind.
    pub faults: BTreeMap<RealFault, usize>,
    /// What the nemesis did, with times since the start of the workload.
    pub nemesis_log: Vec<String>,
    pub history: History,
}

impl fmt::Display for RealReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.counts;
        writeln!(
            f,
            "operations {}, writes acknowledged {}, not applied {}, unknown {}",
            c.operations, c.acknowledged, c.not_applied, c.unknown
        )?;
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(f, "faults: {}", faults.join(", "))?;
        writeln!(f, "converged {:?} after the heal", self.converged_after)?;
        writeln!(f, "violations: {}", self.violations.len())?;
        for v in self.violations.iter().take(20) {
            writeln!(f, "  {v}")?;
        }
        Ok(())
    }
}

/// The `chorus` binary beside the running executable (tests run from
/// `target/<profile>/deps/`).
fn find_chorus() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("chorus");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no chorus binary near {} (build it: cargo build -p chorus-node)",
        exe.display()
    )
}

fn run_chorus(chorus: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(chorus)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .context("running chorus")?;
    if !status.success() {
        bail!("chorus {args:?} failed");
    }
    Ok(())
}

/// One node process in its namespace.
#[derive(Debug)]
struct NodeProcess {
    name: String,
    namespace: String,
    address: Ipv4Addr,
    dir: PathBuf,
    /// The faketime offset file (`+0`, `+600`, `-30`).
    clock: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl NodeProcess {
    fn start(
        &mut self,
        chorus: &Path,
        seeds: &[SocketAddr],
        config: &RealConfig,
    ) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))?;
        let seeds: Vec<String> = seeds.iter().map(ToString::to_string).collect();
        let tls = self.dir.join("tls");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace])
            .arg(chorus)
            .args(["node", "start", "--name", &self.name])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--quic-listen", &format!("{}:{QUIC_PORT}", self.address)])
            .args(["--http-listen", &format!("{}:{HTTP_PORT}", self.address)])
            .args(["--replicas", &config.replicas.to_string()])
            .args(["--initial-members", &config.nodes.to_string()])
            .args(["--seed", &seeds.join(",")])
            .arg("--tls-ca")
            .arg(tls.join("ca.pem"))
            .arg("--tls-cert")
            .arg(tls.join("node.pem"))
            .arg("--tls-key")
            .arg(tls.join("node.key"))
            .arg("--tls-context-key")
            .arg(tls.join("context.key"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if config.unsafe_disable_wal {
            command.arg("--unsafe-disable-wal");
        }
        if Path::new(FAKETIME_LIB).exists() {
            command
                .env("LD_PRELOAD", FAKETIME_LIB)
                .env("FAKETIME_TIMESTAMP_FILE", &self.clock)
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        // `ip netns exec` execs the command: the child is the node itself.
        self.child = Some(command.spawn().context("starting a node")?);
        self.paused = false;
        Ok(())
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    /// SIGKILL, no goodbye; waits for the process to be gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                self.paused = false;
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pause(&mut self) {
        self.signal("-STOP");
        self.paused = true;
    }

    fn resume(&mut self) {
        if self.paused {
            self.signal("-CONT");
            self.paused = false;
        }
    }

    /// Moves this node's wall clock by `offset_secs` from the real time.
    fn skew(&self, offset_secs: i64) -> anyhow::Result<()> {
        std::fs::write(&self.clock, format!("{offset_secs:+}\n"))?;
        Ok(())
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

/// The node processes of a run; killed when dropped (before the testbed
/// that holds their namespaces).
#[derive(Debug)]
struct Cluster {
    nodes: Vec<NodeProcess>,
    chorus: PathBuf,
    config: RealConfig,
}

impl Cluster {
    fn seeds_of(&self, i: usize) -> Vec<SocketAddr> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, n)| SocketAddr::from((n.address, QUIC_PORT)))
            .collect()
    }

    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let seeds = self.seeds_of(i);
        let chorus = self.chorus.clone();
        let config = self.config.clone();
        self.nodes[i].start(&chorus, &seeds, &config)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

/// Makes the CA, the nodes' certificates and directories, and starts every
/// node.
fn start_cluster(
    root: &Path,
    testbed: &Testbed,
    chorus: PathBuf,
    config: &RealConfig,
) -> anyhow::Result<Cluster> {
    let ca = root.join("ca");
    run_chorus(&chorus, &["cert", "ca", "--dir", ca.to_str().unwrap()])?;
    let mut nodes = Vec::new();
    for i in 0..config.nodes {
        let name = format!("n{}", i + 1);
        let dir = root.join(&name);
        let tls = dir.join("tls");
        std::fs::create_dir_all(&dir)?;
        run_chorus(
            &chorus,
            &[
                "cert",
                "node",
                "--ca-dir",
                ca.to_str().unwrap(),
                "--name",
                &name,
                "--out",
                tls.to_str().unwrap(),
            ],
        )?;
        let clock = dir.join("clock");
        std::fs::write(&clock, "+0\n")?;
        nodes.push(NodeProcess {
            name,
            namespace: testbed.namespace(i),
            address: testbed.address(i),
            dir,
            clock,
            child: None,
            paused: false,
        });
    }
    let mut cluster = Cluster {
        nodes,
        chorus,
        config: config.clone(),
    };
    for i in 0..config.nodes {
        cluster.start(i)?;
    }
    Ok(cluster)
}

/// Runs one real-process fault run; see the [module docs](self). Fails
/// when the testbed or the cluster cannot be set up, or the cluster does not
/// form or converge within its patience (with the nodes' last log lines).
pub fn run(config: &RealConfig) -> anyhow::Result<RealReport> {
    if config.nodes < config.replicas || config.replicas == 0 {
        bail!("need at least {} nodes", config.replicas.max(1));
    }
    if config.faults.contains(&RealFault::ClockSkew) && !Path::new(FAKETIME_LIB).exists() {
        bail!("clock-skew needs {FAKETIME_LIB} (Debian package faketime)");
    }
    if config.faults.contains(&RealFault::Delay) {
        crate::netns::delay_available().map_err(|why| anyhow::anyhow!("delay: {why}"))?;
    }
    let chorus = match &config.chorus {
        Some(path) => path.clone(),
        None => find_chorus()?,
    };
    let root = tempfile::Builder::new().prefix("chorus-real-").tempdir()?;
    // Dropped in reverse order: the processes, then the namespaces.
    let mut testbed = Testbed::create(config.nodes)?;
    let mut cluster = start_cluster(root.path(), &testbed, chorus, config)?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = drive(&tokio, config, &mut testbed, &mut cluster);
    if result.is_err() {
        for node in &cluster.nodes {
            eprintln!("--- last lines of {} ---\n{}", node.name, node.log_tail(30));
        }
    }
    result
}

/// Everything clients share: the history and the workloads.
#[derive(Debug)]
struct Shared {
    history: History,
    workloads: Vec<Workload>,
}

fn drive(
    tokio: &tokio::runtime::Runtime,
    config: &RealConfig,
    testbed: &mut Testbed,
    cluster: &mut Cluster,
) -> anyhow::Result<RealReport> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(8)
        .build()?;
    let urls: Vec<String> = (0..config.nodes)
        .map(|i| format!("http://{}:{HTTP_PORT}", testbed.address(i)))
        .collect();
    tokio
        .block_on(wait_converged(&http, &urls, PATIENCE))
        .context("forming the cluster")?;

    let options = config.consistency.options(config.timeout_ms);
    let shared = Arc::new(Mutex::new(Shared {
        history: History::new(config.replicas),
        workloads: config
            .workloads
            .iter()
            .map(|&kind| Workload::new(kind, config.keys, options.clone()))
            .collect(),
    }));
    let start = Instant::now();
    let deadline = start + config.duration;
    let client_timeout = Duration::from_millis(config.timeout_ms) + CLIENT_GRACE;
    let client = |process: Process, workload: usize| Client {
        process,
        workload,
        http: http.clone(),
        urls: urls.clone(),
        shared: shared.clone(),
        start,
        timeout: client_timeout,
        rng: ChaCha8Rng::seed_from_u64(config.seed.wrapping_add((process as u64 + 1) << 32)),
    };
    let mut clients = Vec::new();
    for w in 0..config.workloads.len() {
        for _ in 0..config.processes_per_workload.max(1) {
            clients.push(client(clients.len(), w));
        }
    }
    let processes = clients.len();

    // The nemesis runs commands and sleeps on its own thread while the
    // clients run on the runtime.
    let (joined, nemesis) = std::thread::scope(|scope| {
        let nemesis = scope.spawn(|| nemesis(config, testbed, cluster, start, deadline));
        let joined = tokio.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for client in clients {
                tasks.spawn(client.run(deadline));
            }
            while let Some(joined) = tasks.join_next().await {
                joined?;
            }
            Ok::<(), tokio::task::JoinError>(())
        });
        (joined, nemesis.join().expect("the nemesis does not panic"))
    });
    joined?;
    let (faults, nemesis_log, clocks_agree) = nemesis?;

    let healed = Instant::now();
    let patience = PATIENCE + clocks_agree.saturating_duration_since(healed);
    tokio
        .block_on(wait_converged(&http, &urls, patience))
        .context("after the heal")?;
    let converged_after = healed.elapsed();

    // Final reads at r=all through every node.
    let keys: Vec<String> = shared.lock().unwrap().history.keys().into_iter().collect();
    let final_options: Options = vec![
        ("r".to_owned(), "all".to_owned()),
        ("timeout".to_owned(), config.timeout_ms.to_string()),
    ];
    let work: Arc<Mutex<Vec<(String, usize)>>> = Arc::new(Mutex::new(
        keys.iter()
            .flat_map(|k| (0..config.nodes).map(move |n| (k.clone(), n)))
            .rev()
            .collect(),
    ));
    let readers: Vec<Client> = (0..16).map(|r| client(processes + r, usize::MAX)).collect();
    tokio.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for reader in readers {
            let work = work.clone();
            let options = final_options.clone();
            tasks.spawn(async move {
                loop {
                    let next = work.lock().unwrap().pop();
                    let Some((key, node)) = next else {
                        return;
                    };
                    for _attempt in 0..5 {
                        if reader.final_read(&key, node, &options).await {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined?;
        }
        Ok::<(), tokio::task::JoinError>(())
    })?;

    let history = Arc::try_unwrap(shared)
        .map_err(|_| anyhow::anyhow!("clients still hold the history"))?
        .into_inner()
        .unwrap()
        .history;
    let violations = check_all(
        &history,
        // kill -9 keeps the write-ahead log in the page cache: no power losses.
        &Assumptions::default(),
    );
    Ok(RealReport {
        counts: history.counts(),
        violations,
        converged_after,
        faults,
        nemesis_log,
        history,
    })
}

/// Waits until every node answers `/readyz` with 200, reports no pending
/// hints, holds the same ring as the others and sees every node up (what
/// the simulator's `settle` waits for: a read through a node that still
/// counts a primary down would ask a fallback instead), twice in a row,
/// for at most `patience`.
async fn wait_converged(
    http: &reqwest::Client,
    urls: &[String],
    patience: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + patience;
    let mut good_rounds = 0;
    loop {
        let mut all_good = true;
        let mut rings = std::collections::BTreeSet::new();
        for url in urls {
            let ready = matches!(
                http.get(format!("{url}/readyz")).timeout(Duration::from_secs(2)).send().await,
                Ok(r) if r.status() == reqwest::StatusCode::OK
            );
            let hints = pending_hints(http, url).await;
            let ring = ring_if_all_up(http, url, urls.len()).await;
            if !ready || hints != Some(0) || ring.is_none() {
                all_good = false;
                break;
            }
            rings.insert(ring);
        }
        all_good &= rings.len() == 1;
        good_rounds = if all_good { good_rounds + 1 } else { 0 };
        if good_rounds >= 2 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the cluster was not ready with no hints pending within {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The hash of the ring the node at `url` holds, if it knows `nodes`
/// members and sees every other one up (`GET /v1/cluster/status`).
async fn ring_if_all_up(http: &reqwest::Client, url: &str, nodes: usize) -> Option<String> {
    let status: serde_json::Value = http
        .get(format!("{url}/v1/cluster/status"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let members = status["members"].as_array()?;
    let all_up = members.len() == nodes
        && members
            .iter()
            .all(|m| m["local"] == true || m["liveness"] == "up");
    all_up.then(|| status["ring_hash"].as_str().map(str::to_owned))?
}

async fn pending_hints(http: &reqwest::Client, url: &str) -> Option<u64> {
    let text = http
        .get(format!("{url}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("chorus_hints_pending "))
        .and_then(|n| n.trim().parse().ok())
}

/// One client process.
struct Client {
    process: Process,
    /// Index of its workload in `Shared::workloads`.
    workload: usize,
    http: reqwest::Client,
    urls: Vec<String>,
    shared: Arc<Mutex<Shared>>,
    start: Instant,
    timeout: Duration,
    rng: ChaCha8Rng,
}

impl Client {
    async fn run(mut self, deadline: Instant) {
        while Instant::now() < deadline {
            let node = self.rng.random_range(0..self.urls.len());
            let (id, request) = {
                let mut shared = self.shared.lock().unwrap();
                let request = shared.workloads[self.workload].next(self.process, &mut self.rng);
                let id = shared.history.invoke(
                    self.process,
                    node,
                    request.op.clone(),
                    request.options.clone(),
                    self.start.elapsed(),
                );
                (id, request)
            };
            let completion = self.send(node, &request.op, &request.options).await;
            let failed = !matches!(completion, Completion::Ok(_));
            {
                let mut shared = self.shared.lock().unwrap();
                let Shared { history, workloads } = &mut *shared;
                history.complete(id, completion, self.start.elapsed());
                workloads[self.workload].completed(self.process, id, history, &mut self.rng);
            }
            if failed {
                // Do not spin against a node that refuses everything.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// One final read; whether it succeeded.
    async fn final_read(&self, key: &str, node: usize, options: &Options) -> bool {
        let op = Op::Read {
            key: key.to_owned(),
        };
        let id: OpId = self.shared.lock().unwrap().history.invoke(
            self.process,
            node,
            op.clone(),
            options.clone(),
            self.start.elapsed(),
        );
        let completion = self.send(node, &op, options).await;
        let ok = matches!(completion, Completion::Ok(_));
        let mut shared = self.shared.lock().unwrap();
        shared
            .history
            .complete(id, completion, self.start.elapsed());
        shared.history.mark_final(id);
        ok
    }

    async fn send(&self, node: usize, op: &Op, options: &Options) -> Completion {
        let mut query: Vec<String> = options.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let url_for = |key: &str, query: &[String]| {
            format!(
                "{}/v1/buckets/{BUCKET}/keys/{key}?{}",
                self.urls[node],
                query.join("&")
            )
        };
        let request = match op {
            Op::Read { key } => self.http.get(url_for(key, &query)),
            Op::Write {
                key,
                value,
                context,
                return_body,
            } => {
                if *return_body {
                    query.push("returnbody=true".to_owned());
                }
                let url = url_for(key, &query);
                let mut request = match value {
                    Some(value) => self.http.put(url).body(value.clone()),
                    None => self.http.delete(url),
                };
                if let Some(context) = context {
                    request = request.header(
                        "x-chorus-context",
                        String::from_utf8_lossy(&context.token).into_owned(),
                    );
                }
                request
            }
        };
        let answer = request
            .header("accept", "application/json")
            .timeout(self.timeout)
            .send()
            .await;
        let is_write = op.is_write();
        let unknown = |code: &str| {
            if is_write {
                Completion::Info {
                    code: code.to_owned(),
                }
            } else {
                Completion::Fail {
                    code: code.to_owned(),
                }
            }
        };
        let response = match answer {
            Ok(response) => response,
            Err(error) if error.is_timeout() => return unknown("timeout"),
            Err(_) => return unknown("connection"),
        };
        let status = response.status();
        let token = response
            .headers()
            .get("x-chorus-context")
            .map(|v| v.as_bytes().to_vec());
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) if error.is_timeout() => return unknown("timeout"),
            Err(_) => return unknown("connection"),
        };
        match status.as_u16() {
            200 | 300 => match parse_siblings(&body) {
                Some((values, timestamps)) => Completion::Ok(Response {
                    values,
                    token,
                    shows_siblings: true,
                    timestamps,
                }),
                None => unknown("unparsable_body"),
            },
            204 => Completion::Ok(Response {
                values: Vec::new(),
                token,
                shows_siblings: false,
                timestamps: Vec::new(),
            }),
            404 if !is_write => Completion::Ok(Response {
                values: Vec::new(),
                token,
                shows_siblings: true,
                timestamps: Vec::new(),
            }),
            status => {
                let problem: serde_json::Value =
                    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                let code = problem["code"].as_str().unwrap_or("no_code").to_owned();
                if !is_write {
                    return Completion::Fail { code };
                }
                match problem["outcome"].as_str() {
                    Some("not_applied") => Completion::Fail { code },
                    Some(_) => Completion::Info { code },
                    None if (400..500).contains(&status) || status == 503 => {
                        Completion::Fail { code }
                    }
                    None => Completion::Info { code },
                }
            }
        }
    }
}

/// The values of a `SiblingsBody`, sorted, and their timestamps in the same
/// order.
fn parse_siblings(body: &[u8]) -> Option<(Vec<String>, Vec<String>)> {
    let body: chorus_node::http::SiblingsBody = serde_json::from_slice(body).ok()?;
    let mut siblings = Vec::new();
    for sibling in body.siblings {
        let bytes = STANDARD.decode(sibling.value).ok()?;
        siblings.push((String::from_utf8(bytes).ok()?, sibling.timestamp));
    }
    siblings.sort();
    Some(siblings.into_iter().unzip())
}

/// The nemesis: until `deadline`, a seeded schedule of faults, each held for
/// a while and undone; then heals everything. Returns the faults injected
/// per kind, a log, and when every node's HLC is back within reach of real
/// time (after the last forward clock skew).
fn nemesis(
    config: &RealConfig,
    testbed: &mut Testbed,
    cluster: &mut Cluster,
    start: Instant,
    deadline: Instant,
) -> anyhow::Result<(BTreeMap<RealFault, usize>, Vec<String>, Instant)> {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut counts = BTreeMap::new();
    let mut log = Vec::new();
    let mut deck: Vec<RealFault> = Vec::new();
    let mut clocks_agree = Instant::now();
    let n = config.nodes;
    let say = |log: &mut Vec<String>, what: String| {
        let line = format!("{:>7.2}s {what}", start.elapsed().as_secs_f64());
        eprintln!("nemesis {line}");
        log.push(line);
    };
    let outcome = (|| -> anyhow::Result<()> {
        // A quiet start, so every workload has data before the first fault.
        sleep_until(deadline, Instant::now() + config.quiet);
        while !config.faults.is_empty() && Instant::now() + config.fault_duration < deadline {
            // Every kind once, in a seeded order, before any kind repeats.
            if deck.is_empty() {
                deck = config.faults.clone();
                deck.shuffle(&mut rng);
            }
            let fault = deck.pop().expect("refilled");
            let hold =
                config.fault_duration + config.fault_duration.mul_f64(rng.random_range(0.0..0.5));
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rng);
            match fault {
                RealFault::Partition => {
                    let (a, b) = order.split_at(n / 2);
                    say(&mut log, format!("partition {a:?} | {b:?}"));
                    testbed.partition(&[a.to_vec(), b.to_vec()])?;
                    sleep_until(deadline, Instant::now() + hold);
                }
                RealFault::Isolate => {
                    say(&mut log, format!("isolate {}", order[0]));
                    testbed.isolate(order[0])?;
                    sleep_until(deadline, Instant::now() + hold);
                }
                RealFault::Bridge => {
                    let side = (n - 1) / 2;
                    let (left, rest) = order.split_at(side);
                    let (middle, right) = rest.split_at(1);
                    say(
                        &mut log,
                        format!("bridge {left:?} | {} | {right:?}", middle[0]),
                    );
                    testbed.bridge(left, right)?;
                    sleep_until(deadline, Instant::now() + hold);
                }
                RealFault::OneWay => {
                    say(
                        &mut log,
                        format!("one-way cut {} -> {}", order[0], order[1]),
                    );
                    testbed.one_way(order[0], order[1])?;
                    sleep_until(deadline, Instant::now() + hold);
                }
                RealFault::Delay => {
                    let delay = Duration::from_millis(rng.random_range(50..=500));
                    say(
                        &mut log,
                        format!("delay link {} <-> {} by {delay:?}", order[0], order[1]),
                    );
                    testbed.delay(order[0], order[1], delay)?;
                    sleep_until(deadline, Instant::now() + hold);
                }
                RealFault::Kill => {
                    let i = order[0];
                    say(&mut log, format!("kill -9 node {i}"));
                    cluster.nodes[i].kill();
                    sleep_until(deadline, Instant::now() + hold);
                    say(&mut log, format!("restart node {i}"));
                    cluster.start(i)?;
                }
                RealFault::Pause => {
                    let i = order[0];
                    say(&mut log, format!("pause (SIGSTOP) node {i}"));
                    cluster.nodes[i].pause();
                    sleep_until(deadline, Instant::now() + hold);
                    say(&mut log, format!("resume (SIGCONT) node {i}"));
                    cluster.nodes[i].resume();
                }
                RealFault::ClockSkew => {
                    let i = order[0];
                    let max = config.max_skew.as_secs().max(6);
                    let magnitude = rng.random_range(5..max) as i64;
                    let offset = if rng.random_bool(0.5) {
                        magnitude
                    } else {
                        -magnitude
                    };
                    say(&mut log, format!("clock of node {i} {offset:+}s"));
                    cluster.nodes[i].skew(offset)?;
                    sleep_until(deadline, Instant::now() + hold);
                    say(&mut log, format!("clock of node {i} back to +0s"));
                    cluster.nodes[i].skew(0)?;
                    if offset > 0 {
                        let caught_up = Instant::now() + Duration::from_secs(offset as u64);
                        clocks_agree = clocks_agree.max(caught_up);
                    }
                }
            }
            *counts.entry(fault).or_insert(0) += 1;
            testbed.heal()?;
            say(&mut log, "healed".to_owned());
            sleep_until(deadline, Instant::now() + config.quiet);
        }
        sleep_until(deadline, deadline);
        Ok(())
    })();
    // Heal everything, whatever happened.
    let healed = testbed.heal();
    if outcome.is_ok() && config.crash_all {
        say(
            &mut log,
            "kill -9 every node, then restart them all".to_owned(),
        );
        for node in &mut cluster.nodes {
            node.kill();
        }
        *counts.entry(RealFault::Kill).or_insert(0) += n;
    }
    for i in 0..n {
        cluster.nodes[i].resume();
        let _ = cluster.nodes[i].skew(0);
        if cluster.nodes[i].child.is_none() {
            cluster.start(i)?;
        }
    }
    outcome?;
    healed?;
    say(&mut log, "end of faults: all healed".to_owned());
    Ok((counts, log, clocks_agree))
}

/// Sleeps until `until`, but not past `deadline`.
fn sleep_until(deadline: Instant, until: Instant) {
    let now = Instant::now();
    let until = until.min(deadline);
    if until > now {
        std::thread::sleep(until - now);
    }
}

/// Every operation on `key` in `history`, one per line, for a person
/// following up a violation: id, process, node, times, what was asked,
/// the context's origin, and how it ended.
pub fn dump_key(history: &History, key: &str) -> String {
    let mut out = String::new();
    for (id, entry) in history.entries().filter(|(_, e)| e.op.key() == key) {
        let asked = match &entry.op {
            Op::Read { .. } => "read".to_owned(),
            Op::Write {
                value,
                context,
                return_body,
                ..
            } => format!(
                "write {:?} context from {:?}{}",
                value,
                context.as_ref().map(|c| c.from),
                if *return_body { " returnbody" } else { "" }
            ),
        };
        let ended = match &entry.completion {
            Some(Completion::Ok(r)) => format!("ok {:?}", r.values),
            Some(other) => format!("{other:?}"),
            None => "never completed".to_owned(),
        };
        out += &format!(
            "{id:?} p{} n{} {:?}..{:?}{} {asked} -> {ended}\n",
            entry.process,
            entry.node,
            entry.invoked,
            entry.completed,
            if entry.is_final { " final" } else { "" },
        );
    }
    out
}
