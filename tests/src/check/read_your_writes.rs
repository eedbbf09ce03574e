//! *Read your writes, per session, under strict quorums.*
//!
//! The promise (docs/consistency.md): a process that wrote a value with
//! `pw=quorum` and was acknowledged, and then reads the key with
//! `pr=quorum`, sees its value, or a value written having seen it, unless
//! some write that may have replaced it had begun by then.
//!
//! When it holds: as [`super::lost`] for reads under strict quorums; it is the same overlap argument seen
//! from one session, kept as its own checker because sessions are what
//! users notice.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Analysis, Assumptions, Violation};
use crate::history::{Op, OpId};

pub const NAME: &str = "read-your-writes";

pub fn check(analysis: &Analysis<'_>, assumptions: &Assumptions) -> Vec<Violation> {
    let mut violations = Vec::new();
    // Per (process, key): the process's last acknowledged write of a value.
    let mut last: BTreeMap<(usize, &str), OpId> = BTreeMap::new();
    for (id, entry) in analysis.history.entries() {
        let key = entry.op.key();
        match &entry.op {
            Op::Write { value: Some(_), .. } => {
                if entry.is_ok() && entry.option("pw") == Some("quorum") {
                    last.insert((entry.process, key), id);
                } else {
                    last.remove(&(entry.process, key));
                }
            }
            Op::Write { value: None, .. } => {
                last.remove(&(entry.process, key));
            }
            Op::Read { .. } => {
                let Some(&w) = last.get(&(entry.process, key)) else {
                    continue;
                };
                let Some(response) = entry.response() else {
                    continue;
                };
                let until = entry.completed.unwrap_or(Duration::MAX);
                if entry.option("pr") != Some("quorum")
                    || !analysis.held_by_every_acknowledger(w, assumptions, until)
                {
                    continue;
                }
                let value = analysis
                    .entry(w)
                    .written_value()
                    .expect("a write of a value");
                let seen = response
                    .values
                    .iter()
                    .any(|v| v == value || analysis.descends(key, v, value));
                let until = entry.completed.expect("a response");
                if !seen && !analysis.replaced_before(key, value, until) {
                    violations.push(Violation {
                        checker: NAME,
                        key: key.to_owned(),
                        detail: format!(
                            "process {} wrote {value:?} ({w:?}) and then read {:?} ({id:?})",
                            entry.process, response.values
                        ),
                    });
                }
            }
        }
    }
    violations
}
