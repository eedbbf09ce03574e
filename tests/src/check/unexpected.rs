//! *No unexpected value.*
//!
//! The promise: a response shows only values that some client wrote to
//! that very key, in a write that began before the response ended; for
//! keys holding sets, only elements some write of that key carried.
//! Nothing that was never written, nothing from another key, nothing torn.
//!
//! When it holds: always.

use std::collections::BTreeSet;

use super::{Analysis, Violation};
use crate::workload::{decode_set, is_set_key};

pub const NAME: &str = "unexpected";

pub fn check(analysis: &Analysis<'_>) -> Vec<Violation> {
    let mut violations = Vec::new();
    for key in analysis.keys() {
        let elements: BTreeSet<String> = analysis
            .writes(key)
            .iter()
            .filter_map(|&w| analysis.entry(w).written_value())
            .flat_map(decode_set)
            .collect();
        for (id, entry) in analysis.ops(key) {
            let Some(response) = entry.response() else {
                continue;
            };
            let ended = entry.completed.expect("a response");
            for value in &response.values {
                let known = analysis
                    .writer(key, value)
                    .is_some_and(|w| analysis.entry(w).invoked <= ended);
                if !known {
                    violations.push(Violation {
                        checker: NAME,
                        key: key.to_owned(),
                        detail: format!(
                            "{id:?} showed {value:?}, which no write of this key had written"
                        ),
                    });
                } else if is_set_key(key) {
                    let strange: Vec<String> =
                        decode_set(value).difference(&elements).cloned().collect();
                    if !strange.is_empty() {
                        violations.push(Violation {
                            checker: NAME,
                            key: key.to_owned(),
                            detail: format!("{id:?} showed elements {strange:?} no write carried"),
                        });
                    }
                }
            }
        }
    }
    violations
}
