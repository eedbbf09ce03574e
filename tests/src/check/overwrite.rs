//! *No silent overwrite.*
//!
//! The promise (design.md §3 rules 2 and 3): **an acknowledged value
//! disappears only after a write whose context came from a response that
//! showed that value** (or a delete without a context, which deletes what
//! a read at its `r` finds). A response shows the values it returns; a
//! write's answer without a body shows its own value plus what its own
//! context showed (see [`crate::history::History::shown_by`]).
//!
//! Checked on the final reads: every acknowledged value is there, or some
//! write that may have been applied was made having seen it. This is the
//! check that catches a write context covering a sibling its writer never
//! saw (the review's F1).
//!
//! When it holds: as [`super::lost`].

use super::{Analysis, Assumptions, Violation};

pub const NAME: &str = "overwrite";

pub fn check(analysis: &Analysis<'_>, assumptions: &Assumptions) -> Vec<Violation> {
    let mut violations = Vec::new();
    for key in analysis.keys() {
        for read in analysis.final_reads(key) {
            for &w in analysis.writes(key) {
                let write = analysis.entry(w);
                let Some(value) = write.written_value() else {
                    continue;
                };
                if !write.is_ok() || !analysis.durable(w, assumptions) {
                    continue;
                }
                if !read.values.iter().any(|v| v == value)
                    && !analysis.replaced_before(key, value, std::time::Duration::MAX)
                {
                    violations.push(Violation {
                        checker: NAME,
                        key: key.to_owned(),
                        detail: format!(
                            "acknowledged value {value:?} ({w:?}) vanished although no write was made having seen it; final read {:?}",
                            read.values
                        ),
                    });
                }
            }
        }
    }
    violations
}
