//! *No acknowledged write lost.*
//!
//! The promise (design.md §3, docs/consistency.md): a write acknowledged at
//! its `w` stays readable until a write made with a context that showed it
//! replaces it. Checked two ways:
//!
//! * **Final state.** After faults stop, hints are handed over and a read
//!   at `r = all` ran, every acknowledged value is there or was replaced;
//!   for keys that hold sets ([`crate::workload::is_set_key`]), every
//!   element of every acknowledged set is in the union of the siblings
//!   (writers only ever add elements, as in Jepsen's Riak set test).
//! * **Every later read, under strict quorums.** A read with `pr=quorum`
//!   that began after a write with `pw=quorum` was acknowledged shows that
//!   value, or a value written having seen it, or a write that may have
//!   replaced it had begun (pr + pw > n: the two primary quorums overlap).
//!
//! When it holds: while failures stay within what the consistency level
//! tolerates and acknowledged writes are durable on the replicas that
//! acknowledged them ([`Assumptions`]). A machine that loses unsynced
//! writes breaks the overlap of strict quorums for the writes it had
//! acknowledged without `sync=true` (a later quorum may meet it), and loses
//! such a write for good only if every replica that acknowledged it lost
//! power.

use std::collections::BTreeSet;

use super::{Analysis, Assumptions, Violation};
use crate::workload::{decode_set, is_set_key};

pub const NAME: &str = "lost";

pub fn check(analysis: &Analysis<'_>, assumptions: &Assumptions) -> Vec<Violation> {
    let mut violations = Vec::new();
    for key in analysis.keys() {
        let finals: Vec<_> = analysis.final_reads(key).collect();
        let writes: Vec<_> = analysis
            .writes(key)
            .iter()
            .copied()
            .filter(|&w| analysis.entry(w).is_ok())
            .filter(|&w| analysis.durable(w, assumptions))
            .collect();
        if is_set_key(key) && !finals.is_empty() {
            for read in &finals {
                let elements: BTreeSet<String> =
                    read.values.iter().flat_map(|v| decode_set(v)).collect();
                for &w in &writes {
                    let Some(value) = analysis.entry(w).written_value() else {
                        continue;
                    };
                    let missing: Vec<String> =
                        decode_set(value).difference(&elements).cloned().collect();
                    if !missing.is_empty() {
                        violations.push(Violation {
                            checker: NAME,
                            key: key.to_owned(),
                            detail: format!(
                                "elements {missing:?} of acknowledged write {w:?} are missing from the final read {:?}",
                                read.values
                            ),
                        });
                    }
                }
            }
        }
        // Reads under strict quorums, final reads included.
        for (r, read) in analysis.ops(key) {
            if read.op.is_write()
                || !(read.is_final || read.option("pr") == Some("quorum"))
                || !read.is_ok()
            {
                continue;
            }
            let response = read.response().expect("checked above");
            for &w in &writes {
                let write = analysis.entry(w);
                let Some(value) = write.written_value() else {
                    continue;
                };
                if !read.is_final
                    && (write.option("pw") != Some("quorum")
                        || !analysis.held_by_every_acknowledger(
                            w,
                            assumptions,
                            read.completed.unwrap_or(std::time::Duration::MAX),
                        ))
                {
                    continue;
                }
                let completed = write.completed.expect("acknowledged");
                if completed >= read.invoked {
                    continue;
                }
                let until = read.completed.expect("completed");
                if analysis.replaced_before(key, value, until) {
                    continue;
                }
                let shown = response
                    .values
                    .iter()
                    .any(|v| v == value || analysis.descends(key, v, value));
                if !shown {
                    violations.push(Violation {
                        checker: NAME,
                        key: key.to_owned(),
                        detail: format!(
                            "acknowledged value {value:?} ({w:?}) is missing from {}read {r:?} (node {}) that began after it: {:?}",
                            if read.is_final { "the final " } else { "" },
                            read.node,
                            response.values
                        ),
                    });
                }
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::check::{check_all, Analysis};
    use crate::history::{Completion, History, Op, Response};

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// A final read at `r=all` (without `pr`) that misses an acknowledged
    /// value of a plain key is a lost write: the final state is checked
    /// for every key, not only for keys that hold sets.
    #[test]
    fn a_final_read_without_pr_that_misses_an_acknowledged_value_reports_it_lost() {
        let mut history = History::new(3);
        let quorum = vec![("w".to_owned(), "quorum".to_owned())];
        let write = history.invoke(
            0,
            0,
            Op::Write {
                key: "k".into(),
                value: Some("v1".into()),
                context: None,
                return_body: false,
            },
            quorum,
            at(0),
        );
        history.complete(write, Completion::Ok(Response::default()), at(1));
        let read = history.invoke(
            1,
            1,
            Op::Read { key: "k".into() },
            vec![("r".to_owned(), "all".to_owned())],
            at(10),
        );
        let empty = Response {
            shows_siblings: true,
            ..Response::default()
        };
        history.complete(read, Completion::Ok(empty), at(11));
        history.mark_final(read);
        let violations = check(&Analysis::new(&history), &Assumptions::default());
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(violations[0].detail.contains("\"v1\""), "{violations:?}");
        assert!(check_all(&history, &Assumptions::default())
            .iter()
            .any(|v| v.checker == NAME));
    }
}
