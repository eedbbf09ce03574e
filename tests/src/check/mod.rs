//! Checkers that know only the contract.
//!
//! Each checker reads a [`History`] — what clients asked and what they were
//! told — and nothing else: not dots, not version vectors, not the stores.
//! Each module documents the promise it checks and when that promise holds.
//! A run's driver says which promises its faults leave standing
//! ([`Assumptions`]).
//!
//! [`Analysis`] holds what several checkers share: which values each
//! response showed, and which writes were made having seen which values.

mod analysis;
pub mod convergence;
pub mod lost;
pub mod outcomes;
pub mod overwrite;
pub mod read_your_writes;
pub mod siblings;
pub mod unexpected;

use std::fmt;

pub use analysis::Analysis;

use crate::history::History;

/// A broken promise found in a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The checker that found it (its module's name).
    pub checker: &'static str,
    pub key: String,
    /// What was seen, for a person to follow up.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] key {}: {}", self.checker, self.key, self.detail)
    }
}

/// What the run's faults leave standing, for the checkers whose promise
/// depends on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assumptions {
    /// When machines lost their unsynced writes (power losses), in the
    /// history's clock. A write acknowledged without `sync=true` is durable
    /// only on replicas that did not lose power after it began, so the
    /// checks of lost writes cover a write only if it was acknowledged with
    /// `sync=true` or fewer machines lost power after it was invoked than
    /// replicas acknowledged it.
    pub power_losses: Vec<std::time::Duration>,
}

/// The names of every checker, in the order [`check_all`] runs them.
pub const CHECKERS: [&str; 7] = [
    lost::NAME,
    overwrite::NAME,
    unexpected::NAME,
    siblings::NAME,
    outcomes::NAME,
    read_your_writes::NAME,
    convergence::NAME,
];

/// Runs every checker over `history`.
pub fn check_all(history: &History, assumptions: &Assumptions) -> Vec<Violation> {
    let analysis = Analysis::new(history);
    let mut violations = Vec::new();
    violations.extend(lost::check(&analysis, assumptions));
    violations.extend(overwrite::check(&analysis, assumptions));
    violations.extend(unexpected::check(&analysis));
    violations.extend(siblings::check(&analysis));
    violations.extend(outcomes::check(&analysis));
    violations.extend(read_your_writes::check(&analysis, assumptions));
    violations.extend(convergence::check(&analysis));
    violations
}
