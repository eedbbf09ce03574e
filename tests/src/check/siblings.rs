//! *Siblings are an antichain, bounded by the concurrent writers.*
//!
//! The promises (design.md §3): siblings are versions no one of which was
//! written having seen another — a response never shows a value together
//! with a value whose writer had been shown it (directly or through a
//! chain of writes); and siblings come only from concurrent writes, so a
//! response shows at most as many values as there were writers that could
//! have been concurrent.
//!
//! When it holds: the antichain always. The bound is checked on reads with
//! `pr=quorum` of keys written with `pw=quorum`, where every process reads
//! its own last acknowledged write back and so writes over it: at most one
//! sibling per process that wrote the key with a context, plus one per
//! write made without a context, plus one per write whose outcome the
//! client never learned. Under weaker levels a process can read a stale
//! replica and write beside its own earlier version; there the bound is the
//! width of the order the antichain check already enforces.

use std::collections::BTreeSet;

use super::{Analysis, Violation};

pub const NAME: &str = "siblings";

pub fn check(analysis: &Analysis<'_>) -> Vec<Violation> {
    let mut violations = Vec::new();
    for key in analysis.keys() {
        let writes = analysis.writes(key);
        let processes: BTreeSet<usize> =
            writes.iter().map(|&w| analysis.entry(w).process).collect();
        let blind_or_unknown = writes
            .iter()
            .filter(|&&w| {
                let e = analysis.entry(w);
                let blind = matches!(&e.op, crate::history::Op::Write { context: None, .. });
                blind || !e.is_ok()
            })
            .count();
        let bound = processes.len() + blind_or_unknown;
        for (id, entry) in analysis.ops(key) {
            let Some(response) = entry.response() else {
                continue;
            };
            let strict = entry.option("pr") == Some("quorum")
                && writes
                    .iter()
                    .all(|&w| analysis.entry(w).option("pw") == Some("quorum"));
            if strict && response.values.len() > bound {
                violations.push(Violation {
                    checker: NAME,
                    key: key.to_owned(),
                    detail: format!(
                        "{id:?} showed {} siblings; at most {bound} writers could have been concurrent",
                        response.values.len()
                    ),
                });
            }
            for a in &response.values {
                for b in &response.values {
                    if a != b && analysis.descends(key, b, a) {
                        violations.push(Violation {
                            checker: NAME,
                            key: key.to_owned(),
                            detail: format!(
                                "{id:?} showed {a:?} beside {b:?}, whose writer had seen {a:?}"
                            ),
                        });
                    }
                }
            }
        }
    }
    violations
}
