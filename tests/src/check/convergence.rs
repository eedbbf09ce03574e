//! *Replicas converge once faults stop.*
//!
//! The promise (design.md §6): after faults stop, once hints are handed
//! over and read repair ran, every node answers the same siblings for a
//! key. Checked on the final reads: every key the run touched has at least
//! one successful final read, and all of a key's final reads (one per
//! node asked) show the same values.
//!
//! When it holds: after every fault healed and the driver waited for hints
//! and read repair (anti-entropy will later make the wait unnecessary).

use std::collections::BTreeSet;

use super::{Analysis, Violation};

pub const NAME: &str = "convergence";

pub fn check(analysis: &Analysis<'_>) -> Vec<Violation> {
    let history = analysis.history;
    let mut violations = Vec::new();
    let any_final = history.entries().any(|(_, e)| e.is_final);
    if !any_final {
        return violations;
    }
    for key in analysis.keys() {
        let answers: BTreeSet<&Vec<String>> =
            analysis.final_reads(key).map(|r| &r.values).collect();
        match answers.len() {
            1 => {}
            0 => violations.push(Violation {
                checker: NAME,
                key: key.to_owned(),
                detail: "no final read succeeded".to_owned(),
            }),
            _ => violations.push(Violation {
                checker: NAME,
                key: key.to_owned(),
                detail: format!("final reads disagree: {answers:?}"),
            }),
        }
    }
    violations
}
