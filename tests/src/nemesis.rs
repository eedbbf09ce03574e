//! The nemesis: starts and ends faults in a [`Sim`] at random, from a seed.
//!
//! A workload driver calls [`Nemesis::step`] every few hundred milliseconds
//! of simulated time; each call ends the faults whose time is up and may
//! start one more, of a kind chosen among those it was given
//! ([`FaultKind`]). [`Nemesis::heal`] ends every fault, so a driver can
//! check the cluster converges once the faults stop (Jepsen's nemesis does
//! the same for real clusters).
//!
//! Rules it keeps so quorum work can make progress between faults:
//!
//! * at most one fault of each kind runs at a time, and at most one of the
//!   network cuts (partition, isolate, bridge, one-way), since
//!   ending one heals every cut;
//! * crashes, power losses and pauses together stop at most a minority of
//!   the nodes: a majority keeps running;
//! * every fault ends after a random while (0.5 to 5 s); a crashed node
//!   restarts (with a new generation), a paused one resumes;
//! * clock faults stay bounded: skews and jumps up to 2 s either way (below
//!   the default HLC drift bound of 5 s), drift up to 5 % while it lasts;
//!   each is undone when it ends (the offset a drift built up is stepped
//!   back), so a healed cluster's clocks are where they were.
//!
//! Every choice comes from the nemesis's own generator, seeded at
//! construction, and from the simulation's state, so one seed gives the
//! same faults at the same times.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::sim::Sim;

/// A kind of fault the nemesis injects. Names (for a `--faults` flag) are
/// those of [`FaultKind::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// The nodes split into two halves that cannot reach each other.
    Partition,
    /// One node cut off from every other.
    Isolate,
    /// Two halves that cannot reach each other but both reach one middle
    /// node.
    Bridge,
    /// One direction of one link cut: `a` reaches `b`, `b` does not reach
    /// `a`.
    OneWay,
    /// A process crash: the node stops and keeps its unsynced writes (the
    /// operating system still has them).
    Crash,
    /// A machine crash: the node stops and loses its unsynced writes.
    PowerLoss,
    /// A process paused (`SIGSTOP`) and resumed later.
    Pause,
    /// One node's wall clock set ahead or behind.
    ClockSkew,
    /// One node's wall clock jumps forward or back, and back again later.
    ClockJump,
    /// One node's wall clock runs fast or slow.
    ClockDrift,
    /// Every frame on one link delayed longer than a restart takes.
    SlowLink,
    /// A fraction of all frames delivered twice.
    Duplicate,
    /// A fraction of all frames lost.
    Loss,
    /// One node's BUGGIFY sites on ([`chorus_node::buggify`]).
    Buggify,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultKind; 14] = [
        FaultKind::Partition,
        FaultKind::Isolate,
        FaultKind::Bridge,
        FaultKind::OneWay,
        FaultKind::Crash,
        FaultKind::PowerLoss,
        FaultKind::Pause,
        FaultKind::ClockSkew,
        FaultKind::ClockJump,
        FaultKind::ClockDrift,
        FaultKind::SlowLink,
        FaultKind::Duplicate,
        FaultKind::Loss,
        FaultKind::Buggify,
    ];

    /// The kind's name: `partition`, `isolate`, `bridge`, `one-way`,
    /// `crash`, `power-loss`, `pause`, `clock-skew`, `clock-jump`,
    /// `clock-drift`, `slow-link`, `duplicate`, `loss`, `buggify`.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::Isolate => "isolate",
            FaultKind::Bridge => "bridge",
            FaultKind::OneWay => "one-way",
            FaultKind::Crash => "crash",
            FaultKind::PowerLoss => "power-loss",
            FaultKind::Pause => "pause",
            FaultKind::ClockSkew => "clock-skew",
            FaultKind::ClockJump => "clock-jump",
            FaultKind::ClockDrift => "clock-drift",
            FaultKind::SlowLink => "slow-link",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Loss => "loss",
            FaultKind::Buggify => "buggify",
        }
    }

    /// Parses a comma-separated list of names (`all` for every kind), as
    /// a `--faults` flag takes it. Duplicates are kept once.
    pub fn parse_list(list: &str) -> Result<Vec<FaultKind>, UnknownFault> {
        let mut kinds = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "all" {
                kinds.extend(FaultKind::ALL);
            } else {
                kinds.push(name.parse()?);
            }
        }
        kinds.sort();
        kinds.dedup();
        Ok(kinds)
    }

    /// Whether the kind cuts links (only one of these runs at a time).
    fn is_cut(self) -> bool {
        matches!(
            self,
            FaultKind::Partition | FaultKind::Isolate | FaultKind::Bridge | FaultKind::OneWay
        )
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault name that is not one of [`FaultKind::name`]'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFault(pub String);

impl fmt::Display for UnknownFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
        write!(f, "unknown fault `{}`; known: {}", self.0, names.join(","))
    }
}

impl std::error::Error for UnknownFault {}

impl FromStr for FaultKind {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownFault(s.to_string()))
    }
}

/// A fault that runs, and how to end it.
#[derive(Debug, Clone)]
enum Running {
    /// Links are cut; ending heals every cut.
    Cut,
    /// Nodes stopped by a crash or power loss.
    Crashed(usize),
    Paused(usize),
    /// A skew or jump of this many ms to undo.
    Clock(usize, i64),
    Drift(usize),
    Slow(usize, usize),
    /// The loss or duplication fraction to go back to.
    Loss(f64),
    Duplicate(f64),
    Buggify(usize),
}

/// Starts and ends faults in a [`Sim`]. See the [module docs](self).
#[derive(Debug)]
pub struct Nemesis {
    kinds: Vec<FaultKind>,
    rng: ChaCha8Rng,
    /// Per kind, the fault running and when it ends (simulated time).
    running: BTreeMap<FaultKind, (Running, Duration)>,
    injected: BTreeMap<FaultKind, u64>,
    /// Kinds that could not start in this cluster when drawn.
    unstartable: std::collections::BTreeSet<FaultKind>,
    log: Vec<String>,
    /// Chance that a step starts a fault.
    start_chance: f64,
}

impl Nemesis {
    /// A nemesis injecting faults of `kinds`, its choices drawn from `seed`.
    pub fn new(kinds: &[FaultKind], seed: u64) -> Nemesis {
        let mut kinds = kinds.to_vec();
        kinds.sort();
        kinds.dedup();
        Nemesis {
            kinds,
            rng: ChaCha8Rng::seed_from_u64(seed),
            running: BTreeMap::new(),
            injected: BTreeMap::new(),
            unstartable: std::collections::BTreeSet::new(),
            log: Vec::new(),
            start_chance: 0.5,
        }
    }

    /// The kinds this nemesis injects.
    pub fn kinds(&self) -> &[FaultKind] {
        &self.kinds
    }

    /// Ends the faults whose time is up, then perhaps starts one more.
    pub fn step(&mut self, sim: &mut Sim) {
        let now = sim.now().mono;
        let due: Vec<FaultKind> = self
            .running
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(&kind, _)| kind)
            .collect();
        for kind in due {
            self.end(sim, kind);
        }
        if self.kinds.is_empty() || !self.rng.random_bool(self.start_chance) {
            return;
        }
        let kind = self.draw_kind();
        if !self.can_start(kind) {
            return;
        }
        let duration = Duration::from_millis(self.rng.random_range(500..5_000));
        match self.start(sim, kind) {
            Some((fault, what)) => {
                self.log
                    .push(format!("{:?} start {kind}: {what}", sim.now().mono));
                *self.injected.entry(kind).or_default() += 1;
                self.running.insert(kind, (fault, now + duration));
            }
            // Not possible here (a bridge needs three nodes): no longer
            // preferred by `draw_kind`.
            None => {
                self.unstartable.insert(kind);
            }
        }
    }

    /// Whether a fault of `kind` may start now: one of each kind at a time,
    /// and one cut (partition, isolation, bridge, one-way) at a time.
    fn can_start(&self, kind: FaultKind) -> bool {
        let cut_running = self.running.keys().any(|k| k.is_cut());
        !(self.running.contains_key(&kind) || kind.is_cut() && cut_running)
    }

    /// The kind of the next fault. While some kind that could start now
    /// was never injected, one of those, so every kind gets its turn early
    /// in a run rather than by luck (a seed once drew no bridge in 160
    /// faults); after that, any kind.
    fn draw_kind(&mut self) -> FaultKind {
        let fresh: Vec<FaultKind> = self
            .kinds
            .iter()
            .copied()
            .filter(|kind| {
                !self.injected.contains_key(kind)
                    && !self.unstartable.contains(kind)
                    && self.can_start(*kind)
            })
            .collect();
        let from = if fresh.is_empty() {
            &self.kinds
        } else {
            &fresh
        };
        from[self.rng.random_range(0..from.len())]
    }

    /// Ends every running fault: restarts crashed nodes, resumes paused
    /// ones, heals every cut, removes slow links, loss and duplication,
    /// undoes clock skews, jumps and drift, and turns BUGGIFY off.
    pub fn heal(&mut self, sim: &mut Sim) {
        let kinds: Vec<FaultKind> = self.running.keys().copied().collect();
        for kind in kinds {
            self.end(sim, kind);
        }
    }

    /// What the nemesis did, one line per fault started or ended, with the
    /// simulated time.
    pub fn log(&self) -> &[String] {
        &self.log
    }

    /// How many faults of each kind were started.
    pub fn injected(&self) -> &BTreeMap<FaultKind, u64> {
        &self.injected
    }

    /// The kinds of the faults running now.
    pub fn running(&self) -> Vec<FaultKind> {
        self.running.keys().copied().collect()
    }

    /// Nodes that run and are not paused, in index order.
    fn live(sim: &Sim) -> Vec<usize> {
        (0..sim.len())
            .filter(|&i| sim.is_running(i) && !sim.is_paused(i))
            .collect()
    }

    /// Whether one more node may be stopped or paused: a majority must
    /// keep running.
    fn may_stop_one(sim: &Sim) -> bool {
        let live = Self::live(sim).len();
        live > sim.len() / 2 + 1
    }

    fn pick(&mut self, from: &[usize]) -> Option<usize> {
        from.choose(&mut self.rng).copied()
    }

    /// The nodes in a random order, split at a random point into two
    /// non-empty halves.
    fn halves(&mut self, sim: &Sim) -> (Vec<usize>, Vec<usize>) {
        let mut nodes: Vec<usize> = (0..sim.len()).collect();
        nodes.shuffle(&mut self.rng);
        let cut = self.rng.random_range(1..nodes.len());
        let right = nodes.split_off(cut);
        (nodes, right)
    }

    fn start(&mut self, sim: &mut Sim, kind: FaultKind) -> Option<(Running, String)> {
        let n = sim.len();
        if n < 2 {
            return None;
        }
        let all: Vec<usize> = (0..n).collect();
        Some(match kind {
            FaultKind::Partition => {
                let (left, right) = self.halves(sim);
                sim.partition(&[left.clone(), right.clone()]);
                (Running::Cut, format!("{left:?} | {right:?}"))
            }
            FaultKind::Isolate => {
                let i = self.pick(&all)?;
                sim.isolate(i, true);
                (Running::Cut, format!("node {i}"))
            }
            FaultKind::Bridge => {
                if n < 3 {
                    return None;
                }
                let mut nodes = all.clone();
                nodes.shuffle(&mut self.rng);
                let middle = nodes.pop()?;
                let cut = self.rng.random_range(1..nodes.len());
                let right = nodes.split_off(cut);
                sim.bridge(&nodes, middle, &right);
                (Running::Cut, format!("{nodes:?} | {middle} | {right:?}"))
            }
            FaultKind::OneWay => {
                let from = self.pick(&all)?;
                let others: Vec<usize> = all.iter().copied().filter(|&j| j != from).collect();
                let to = self.pick(&others)?;
                sim.block(from, to);
                (Running::Cut, format!("{from} -> {to}"))
            }
            FaultKind::Crash | FaultKind::PowerLoss | FaultKind::Pause => {
                if !Self::may_stop_one(sim) {
                    return None;
                }
                let i = self.pick(&Self::live(sim))?;
                match kind {
                    FaultKind::Pause => {
                        sim.pause(i);
                        (Running::Paused(i), format!("node {i}"))
                    }
                    _ => {
                        sim.crash(i, kind == FaultKind::PowerLoss);
                        (Running::Crashed(i), format!("node {i}"))
                    }
                }
            }
            FaultKind::ClockSkew | FaultKind::ClockJump => {
                let i = self.pick(&all)?;
                let ms = self.rng.random_range(-2_000..=2_000);
                // A skew is an offset held for a while; a jump is a step,
                // stepped back later. Both add to what the clock already
                // carries, so ending them restores it exactly.
                sim.jump_clock(i, ms);
                (Running::Clock(i, ms), format!("node {i} by {ms} ms"))
            }
            FaultKind::ClockDrift => {
                let i = self.pick(&all)?;
                let ppm = self.rng.random_range(-50_000..=50_000);
                sim.drift_clock(i, ppm);
                (Running::Drift(i), format!("node {i} at {ppm} ppm"))
            }
            FaultKind::SlowLink => {
                let from = self.pick(&all)?;
                let others: Vec<usize> = all.iter().copied().filter(|&j| j != from).collect();
                let to = self.pick(&others)?;
                let extra = Duration::from_millis(self.rng.random_range(2_000..8_000));
                sim.slow_link(from, to, extra);
                (
                    Running::Slow(from, to),
                    format!("{from} -> {to} by {extra:?}"),
                )
            }
            FaultKind::Duplicate => {
                let before = sim.config().duplicate;
                let fraction = self.rng.random_range(0.05..0.3);
                sim.set_duplicate(fraction);
                (
                    Running::Duplicate(before),
                    format!("{fraction:.2} of frames"),
                )
            }
            FaultKind::Loss => {
                let before = sim.config().loss;
                let fraction = self.rng.random_range(0.05..0.3);
                sim.set_loss(fraction);
                (Running::Loss(before), format!("{fraction:.2} of frames"))
            }
            FaultKind::Buggify => {
                let i = self.pick(&all)?;
                sim.buggify(i, true);
                (Running::Buggify(i), format!("node {i}"))
            }
        })
    }

    fn end(&mut self, sim: &mut Sim, kind: FaultKind) {
        let Some((fault, _)) = self.running.remove(&kind) else {
            return;
        };
        match fault {
            Running::Cut => sim.heal(),
            Running::Crashed(i) => {
                // The driver may have restarted it already.
                if !sim.is_running(i) {
                    sim.restart(i);
                }
            }
            Running::Paused(i) => {
                if sim.is_paused(i) {
                    sim.resume(i);
                }
            }
            Running::Clock(i, ms) => sim.jump_clock(i, -ms),
            Running::Drift(i) => {
                // NTP steps the clock back to true time.
                let built = sim.drift_clock(i, 0);
                sim.jump_clock(i, -built);
            }
            Running::Slow(from, to) => sim.slow_link(from, to, Duration::ZERO),
            Running::Loss(before) => sim.set_loss(before),
            Running::Duplicate(before) => sim.set_duplicate(before),
            Running::Buggify(i) => sim.buggify(i, false),
        }
        self.log.push(format!("{:?} end {kind}", sim.now().mono));
    }
}
