//! Placeholder nemesis: crashes and isolation only.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::sim::Sim;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    Isolate,
    Crash,
    PowerLoss,
}

impl FaultKind {
    pub const ALL: [FaultKind; 3] = [FaultKind::Isolate, FaultKind::Crash, FaultKind::PowerLoss];
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultKind::Isolate => "isolate",
            FaultKind::Crash => "crash",
            FaultKind::PowerLoss => "power-loss",
        })
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.to_string() == s)
            .ok_or_else(|| format!("unknown fault {s:?}"))
    }
}

#[derive(Debug)]
pub struct Nemesis {
    kinds: Vec<FaultKind>,
    rng: ChaCha8Rng,
    down: Vec<usize>,
    isolated: Vec<usize>,
    log: Vec<String>,
}

impl Nemesis {
    pub fn new(kinds: &[FaultKind], seed: u64) -> Nemesis {
        Nemesis {
            kinds: kinds.to_vec(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            down: Vec::new(),
            isolated: Vec::new(),
            log: Vec::new(),
        }
    }

    pub fn step(&mut self, sim: &mut Sim) {
        if self.kinds.is_empty() || !self.rng.random_bool(0.2) {
            return;
        }
        if !self.down.is_empty() || !self.isolated.is_empty() {
            self.heal(sim);
            return;
        }
        let node = self.rng.random_range(0..sim.len());
        let kind = self.kinds[self.rng.random_range(0..self.kinds.len())];
        self.log
            .push(format!("{:?} {kind} node {node}", sim.now().mono));
        match kind {
            FaultKind::Isolate => {
                sim.isolate(node, true);
                self.isolated.push(node);
            }
            FaultKind::Crash | FaultKind::PowerLoss => {
                sim.crash(node, kind == FaultKind::PowerLoss);
                self.down.push(node);
            }
        }
        let _ = Duration::ZERO;
    }

    pub fn heal(&mut self, sim: &mut Sim) {
        for node in self.down.drain(..) {
            sim.restart(node);
        }
        for node in self.isolated.drain(..) {
            sim.isolate(node, false);
        }
    }

    pub fn log(&self) -> &[String] {
        &self.log
    }
}
