//! Seeded simulation runs: a workload, a nemesis and the checkers, from
//! one seed.
//!
//! [`SimRun::from_seed`] derives everything a run varies — cluster size
//! (3 to 7 nodes), workload, consistency, client processes — from its seed,
//! so a seed alone names a run and [`SimRun::replay_command`] prints the one
//! command that replays it. [`run`] drives the clients against the
//! simulator while the [`Nemesis`] injects faults, then heals, waits for the
//! cluster to settle and hints to drain, reads every key at `r=all` through
//! every node, and runs every checker of [`crate::check`] plus two that
//! watch the nodes themselves: hybrid logical clocks that only move
//! forward per actor, and hint queues that stay bounded and drain.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chorus_node::api::{ReadRequest, RequestError, WriteReply, WriteRequest};
use chorus_node::core::PutError;
use chorus_node::core::RequestOptions;
use chorus_node::engine::{ClientReply, ClientRequest, EngineConfig, UnsafeControls};
use chorus_storage::context::CausalContext;
use chorus_storage::object::Object;
use chorus_storage::store::DEFAULT_MAX_HINTS_PER_TARGET;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::{self, Assumptions, Violation};
use crate::history::{Completion, Counts, History, Op, Options, Process, Response};
use crate::nemesis::{FaultKind, Nemesis};
use crate::sim::{Sim, SimConfig};
use crate::workload::{Consistency, Kind, Workload};

/// How often the nemesis is asked to act, in simulated time.
const NEMESIS_INTERVAL: Duration = Duration::from_millis(250);
/// The `timeout` option of every workload request, in ms.
const REQUEST_TIMEOUT_MS: u64 = 1_000;
/// How long a client waits beyond the request's own timeout before it
/// gives up on an answer (its node may have crashed).
const CLIENT_GRACE: Duration = Duration::from_secs(3);
/// How long frames sent before the heal may still be on their way: longer
/// than any delay the nemesis puts on a link (a slow link adds up to 8 s).
const DRAIN: Duration = Duration::from_secs(10);
/// How long the cluster may take to settle after the faults healed.
const SETTLE_LIMIT: Duration = Duration::from_secs(300);

/// One simulation run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRun {
    pub seed: u64,
    pub nodes: usize,
    pub workload: Kind,
    pub consistency: Consistency,
    pub faults: Vec<FaultKind>,
    /// Client processes, each with one operation in flight at most.
    pub processes: usize,
    /// Operations issued before the faults heal.
    pub operations: usize,
    /// Shared keys of the workload.
    pub keys: usize,
    /// Deliberately unsafe engine behaviour (negative controls); at most
    /// one switch on.
    pub unsafe_controls: UnsafeControls,
}

impl SimRun {
    /// The run a seed names, drawing its workload among `workloads`, its
    /// consistency among `consistencies`, and its faults from `faults`.
    pub fn from_seed(
        seed: u64,
        workloads: &[Kind],
        consistencies: &[Consistency],
        faults: &[FaultKind],
    ) -> SimRun {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_CA4A_1600_0000);
        SimRun {
            seed,
            nodes: rng.random_range(3..=7),
            workload: workloads[rng.random_range(0..workloads.len())],
            consistency: consistencies[rng.random_range(0..consistencies.len())],
            faults: faults.to_vec(),
            processes: rng.random_range(2..=6),
            operations: rng.random_range(100..=250),
            keys: rng.random_range(1..=4),
            unsafe_controls: UnsafeControls::default(),
        }
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let faults: Vec<String> = self.faults.iter().map(ToString::to_string).collect();
        format!(
            "cargo run -p chorus-tests --bin chorus-campaign -- sim --seeds {seed}..={seed} --workloads {} --consistency {} --faults {}",
            self.workload,
            self.consistency,
            if faults.is_empty() { "none".to_owned() } else { faults.join(",") },
            seed = self.seed,
        )
    }
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct SimReport {
    pub run: SimRun,
    pub counts: Counts,
    pub violations: Vec<Violation>,
    /// From the end of the faults until the cluster was stable and every
    /// hint was handed over (`None` when that, or a final read, failed).
    pub converged_in: Option<Duration>,
    /// Faults the nemesis injected.
    pub faults_injected: usize,
    pub trace_hash: u64,
    /// The whole history, for a closer look at a failing seed.
    pub history: History,
    /// What the nemesis did, in order.
    pub nemesis_log: Vec<String>,
}

/// Versions seen in responses: (actor, counter) → HLC timestamp.
type Minted = BTreeMap<(u64, u64), u64>;

/// Runs `run` and checks its history.
pub fn run(run: &SimRun) -> SimReport {
    let mut sim = Sim::new(SimConfig {
        nodes: run.nodes,
        seed: run.seed,
        tune_engine: unsafe_tuning(run.unsafe_controls),
        ..SimConfig::default()
    });
    sim.await_stable(Duration::from_secs(60));
    let mut rng = ChaCha8Rng::seed_from_u64(run.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut nemesis = Nemesis::new(&run.faults, run.seed.rotate_left(17));
    let mut workload = Workload::new(
        run.workload,
        run.keys,
        run.consistency.options(REQUEST_TIMEOUT_MS),
    );
    let mut history = History::new(3);
    let mut minted = Minted::new();
    let mut violations = Vec::new();
    let mut in_flight: BTreeMap<Process, (u64, crate::history::OpId, Duration)> = BTreeMap::new();
    let mut issued = 0;
    let mut next_nemesis = sim.now().mono + NEMESIS_INTERVAL;
    let deadline = REQUEST_TIMEOUT_MS + CLIENT_GRACE.as_millis() as u64;
    let mut steps = 0u64;
    while issued < run.operations || !in_flight.is_empty() {
        for process in 0..run.processes {
            if in_flight.contains_key(&process) || issued >= run.operations {
                continue;
            }
            let Some(node) = running_node(&sim, &mut rng) else {
                break;
            };
            let request = workload.next(process, &mut rng);
            let now = sim.now().mono;
            let client = send(&mut sim, node, &request.op, &request.options);
            let id = history.invoke(process, node, request.op, request.options, now);
            in_flight.insert(process, (client, id, now + Duration::from_millis(deadline)));
            issued += 1;
        }
        if !sim.step() {
            sim.run_for(Duration::from_millis(10));
        }
        steps += 1;
        let now = sim.now().mono;
        let done: Vec<Process> = in_flight.keys().copied().collect();
        for process in done {
            let (client, id, give_up) = in_flight[&process];
            let completion = match sim.reply(client) {
                Some(result) => completion(&history.entry(id).op, result, &mut minted),
                None if now >= give_up => Completion::Info {
                    code: "client_timeout".into(),
                },
                None => continue,
            };
            history.complete(id, completion, now);
            workload.completed(process, id, &history, &mut rng);
            in_flight.remove(&process);
        }
        if now >= next_nemesis {
            nemesis.step(&mut sim);
            next_nemesis = now + NEMESIS_INTERVAL;
        }
        if steps % 64 == 0 {
            check_hint_bound(&sim, &mut violations);
        }
    }

    // Heal, settle, read everything back.
    nemesis.heal(&mut sim);
    let healed = sim.now().mono;
    let settled = settle(&mut sim, &mut violations);
    let converged = sim.now().mono - healed;
    // Faults stop when what they delayed has arrived: a frame held on a
    // slow link is still part of the fault. Check once it has landed.
    sim.run_for(DRAIN);
    let settled = settled && settle(&mut sim, &mut violations);
    let mut finals_ok = true;
    for key in history.keys() {
        for node in 0..sim.len() {
            if sim.engine(node).is_none() {
                continue;
            }
            let options: Options = vec![
                ("r".into(), "all".into()),
                ("timeout".into(), "5000".into()),
            ];
            let op = Op::Read { key: key.clone() };
            let mut answered = false;
            for _attempt in 0..5 {
                let client = send(&mut sim, node, &op, &options);
                let invoked = sim.now().mono;
                let result = sim.await_reply(client);
                let ok = result.is_ok();
                let completion = completion(&op, result, &mut minted);
                let id = history.invoke(
                    run.processes + node,
                    node,
                    op.clone(),
                    options.clone(),
                    invoked,
                );
                history.complete(id, completion, sim.now().mono);
                history.mark_final(id);
                if ok {
                    answered = true;
                    break;
                }
            }
            finals_ok &= answered;
        }
    }
    let converged_in = (settled && finals_ok).then_some(converged);

    let assumptions = Assumptions {
        power_losses: sim.power_losses().to_vec(),
    };
    violations.extend(check::check_all(&history, &assumptions));
    violations.extend(check_hlc(&minted));
    SimReport {
        run: run.clone(),
        counts: history.counts(),
        faults_injected: nemesis.log().len(),
        violations,
        converged_in,
        trace_hash: sim.trace_hash(),
        nemesis_log: nemesis.log().to_vec(),
        history,
    }
}

/// The engine settings of a run's unsafe controls.
fn unsafe_tuning(controls: UnsafeControls) -> fn(&mut EngineConfig) {
    fn lww(config: &mut EngineConfig) {
        config.unsafe_controls.last_writer_wins = true;
    }
    fn whole_context(config: &mut EngineConfig) {
        config.unsafe_controls.whole_context_in_write_replies = true;
    }
    fn keep_actors(config: &mut EngineConfig) {
        config.unsafe_controls.keep_actors_after_unclean_stop = true;
    }
    let UnsafeControls {
        last_writer_wins,
        whole_context_in_write_replies,
        keep_actors_after_unclean_stop,
    } = controls;
    match (
        last_writer_wins,
        whole_context_in_write_replies,
        keep_actors_after_unclean_stop,
    ) {
        (false, false, false) => SimConfig::default().tune_engine,
        (true, false, false) => lww,
        (false, true, false) => whole_context,
        (false, false, true) => keep_actors,
        _ => panic!("one unsafe control at a time"),
    }
}

/// A running node drawn at random, if any runs.
fn running_node(sim: &Sim, rng: &mut ChaCha8Rng) -> Option<usize> {
    let running: Vec<usize> = (0..sim.len())
        .filter(|&i| sim.engine(i).is_some())
        .collect();
    (!running.is_empty()).then(|| running[rng.random_range(0..running.len())])
}

/// Sends `op` to node `node`; returns the client id of its answer.
fn send(sim: &mut Sim, node: usize, op: &Op, options: &Options) -> u64 {
    let mut pairs: Vec<(&str, &str)> = options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let request = match op {
        Op::Read { key } => ClientRequest::Get(ReadRequest {
            bucket: b"sim".to_vec(),
            key: key.as_bytes().to_vec(),
            options: RequestOptions::parse(pairs.iter().copied())
                .expect("workload options are valid"),
        }),
        Op::Write {
            key,
            value,
            context,
            return_body,
        } => {
            if *return_body {
                pairs.push(("returnbody", "true"));
            }
            ClientRequest::Put(WriteRequest {
                bucket: b"sim".to_vec(),
                key: key.as_bytes().to_vec(),
                value: value.as_ref().map(|v| v.as_bytes().to_vec()),
                content_type: None,
                context: context.as_ref().map(|c| {
                    CausalContext::from_bytes(&c.token).expect("a token the simulator made")
                }),
                options: RequestOptions::parse(pairs.iter().copied())
                    .expect("workload options are valid"),
            })
        }
    };
    sim.request(node, request)
}

/// What the client learns from an answer.
fn completion(
    op: &Op,
    result: Result<ClientReply, RequestError>,
    minted: &mut Minted,
) -> Completion {
    match result {
        Ok(ClientReply::Read(read)) => {
            let context = read.object.context().clone();
            Completion::Ok(shown(&read.object, Some(context), minted))
        }
        Ok(ClientReply::Write(WriteReply::Written { context, object })) => match object {
            // A write with a body answers like a read: the context of the
            // siblings shown, as the HTTP API does.
            Some(object) => {
                let context = object.context().clone();
                Completion::Ok(shown(&object, Some(context), minted))
            }
            None => Completion::Ok(Response {
                token: Some(context.to_bytes()),
                ..Response::default()
            }),
        },
        Ok(ClientReply::Write(WriteReply::NothingToDelete { object })) => {
            let context = object.context().clone();
            Completion::Ok(shown(&object, Some(context), minted))
        }
        Err(error) => {
            let code = error.code().to_owned();
            let may_have_applied = op.is_write()
                && match &error {
                    RequestError::Put(PutError::Indeterminate { .. }) => true,
                    RequestError::Put(PutError::QuorumNotReached { applied, .. }) => *applied > 0,
                    RequestError::Internal(_) => true,
                    _ => false,
                };
            if may_have_applied {
                Completion::Info { code }
            } else {
                Completion::Fail { code }
            }
        }
    }
}

/// A response showing `object`'s live siblings; records the versions seen.
fn shown(object: &Object, context: Option<CausalContext>, minted: &mut Minted) -> Response {
    let mut values = Vec::new();
    let mut timestamps = Vec::new();
    for sibling in object.siblings() {
        minted.insert(
            (sibling.dot.actor.0, sibling.dot.counter),
            sibling.timestamp.as_u64(),
        );
        if let Some(value) = sibling.value.as_deref() {
            values.push(String::from_utf8_lossy(value).into_owned());
            timestamps.push(sibling.timestamp.to_string());
        }
    }
    values.sort();
    Response {
        values,
        token: context.map(|c| c.to_bytes()),
        shows_siblings: true,
        timestamps,
    }
}

/// Runs until the cluster is stable and every hint was handed over; a
/// violation when that takes longer than [`SETTLE_LIMIT`].
fn settle(sim: &mut Sim, violations: &mut Vec<Violation>) -> bool {
    let until = sim.now().mono + SETTLE_LIMIT;
    while !(sim.is_stable() && sim.pending_hints() == 0) {
        if sim.now().mono >= until {
            violations.push(Violation {
                checker: "hints",
                key: String::new(),
                detail: format!(
                    "{SETTLE_LIMIT:?} after the faults healed: stable {}, {} hints pending",
                    sim.is_stable(),
                    sim.pending_hints()
                ),
            });
            return false;
        }
        if !sim.step() {
            return false;
        }
    }
    true
}

/// Hint queues stay within their bound per target.
fn check_hint_bound(sim: &Sim, violations: &mut Vec<Violation>) {
    for node in 0..sim.len() {
        let Some(engine) = sim.engine(node) else {
            continue;
        };
        for (target, pending) in engine.pending_hints().expect("the memory store reads") {
            if pending > DEFAULT_MAX_HINTS_PER_TARGET {
                violations.push(Violation {
                    checker: "hints",
                    key: String::new(),
                    detail: format!(
                        "node {node} holds {pending} hints for {target}, above the bound"
                    ),
                });
            }
        }
    }
}

/// The HLC only moves forward: of two versions minted by one actor, the
/// later dot has the later timestamp.
fn check_hlc(minted: &Minted) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut previous: Option<((u64, u64), u64)> = None;
    for (&(actor, counter), &timestamp) in minted {
        if let Some(((last_actor, last_counter), last_timestamp)) = previous {
            if last_actor == actor && last_timestamp >= timestamp {
                violations.push(Violation {
                    checker: "hlc",
                    key: String::new(),
                    detail: format!(
                        "actor {actor:x}: dot {counter} has timestamp {timestamp}, not after dot {last_counter}'s {last_timestamp}"
                    ),
                });
            }
        }
        previous = Some(((actor, counter), timestamp));
    }
    violations
}

/// Totals over many runs, for a campaign's summary.
#[derive(Debug, Default)]
pub struct Summary {
    pub runs: usize,
    pub counts: Counts,
    pub faults_injected: usize,
    pub violations: BTreeMap<&'static str, usize>,
    pub failed_seeds: BTreeSet<u64>,
    pub converge_ms: Vec<u64>,
    pub unconverged: usize,
}

impl Summary {
    pub fn add(&mut self, report: &SimReport) {
        self.runs += 1;
        self.counts += report.counts;
        self.faults_injected += report.faults_injected;
        for violation in &report.violations {
            *self.violations.entry(violation.checker).or_default() += 1;
        }
        if !report.violations.is_empty() {
            self.failed_seeds.insert(report.run.seed);
        }
        match report.converged_in {
            Some(t) => self.converge_ms.push(t.as_millis() as u64),
            None => self.unconverged += 1,
        }
    }

    /// The `q` quantile (0..=1) of the times to converge, in ms.
    pub fn converge_quantile(&self, q: f64) -> Option<u64> {
        let mut sorted = self.converge_ms.clone();
        sorted.sort_unstable();
        let last = sorted.len().checked_sub(1)?;
        Some(sorted[((last as f64) * q).round() as usize])
    }
}
