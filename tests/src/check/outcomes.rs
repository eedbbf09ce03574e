//! *Failed writes tell the truth.*
//!
//! The promise (design.md §7): a write answered with `outcome:
//! not_applied` (or refused before any work) was applied nowhere, so its
//! value is never shown by any response, now or later. (`may_have_applied`
//! promises nothing either way.)
//!
//! When it holds: always.

use super::{Analysis, Violation};
use crate::history::Completion;

pub const NAME: &str = "outcomes";

pub fn check(analysis: &Analysis<'_>) -> Vec<Violation> {
    let history = analysis.history;
    let mut violations = Vec::new();
    for (id, entry) in history.entries() {
        let Some(response) = entry.response() else {
            continue;
        };
        let key = entry.op.key();
        for value in &response.values {
            let Some(w) = analysis.writer(key, value) else {
                continue;
            };
            if let Some(Completion::Fail { code }) = &analysis.entry(w).completion {
                violations.push(Violation {
                    checker: NAME,
                    key: key.to_owned(),
                    detail: format!(
                        "{id:?} showed {value:?}, whose write {w:?} failed with {code} (not applied)"
                    ),
                });
            }
        }
    }
    violations
}
