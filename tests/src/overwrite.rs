//! The *no silent overwrite* checker.
//!
//! The promise it checks (design.md §3 rules 2 and 3): **an acknowledged
//! value disappears only after a write whose context came from a response
//! that showed that value.** A response *shows* the values it returns: a
//! read shows its siblings; a write's answer shows the value it wrote plus
//! whatever the context it was made with showed (the writer's context grows
//! by its own version only); a write with `returnbody` shows the siblings it
//! returns.
//!
//! The checker knows nothing of dots or version vectors. It follows the
//! client's view only: which response each context came from and which
//! values that response showed. When it holds: always, for every value
//! whose write was acknowledged, as long as the replicas that acknowledged
//! it did not all lose it at once (a power loss of every replica before an
//! fsync); a final read at `r = all` after faults stopped sees the union of
//! the replicas.
//!
//! Usage: record every write with [`History::write`] (the context it was
//! made with, as a [`Shown`] handle, and later its outcome), every read's
//! result with [`History::read`], then [`History::check`] a final read of
//! each key.

use std::collections::{BTreeMap, BTreeSet};

/// A handle to the set of values a response showed, for a context taken
/// from it. [`Shown::NOTHING`] is a blind write's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown(usize);

impl Shown {
    /// What a write without a context has seen: nothing.
    pub const NOTHING: Shown = Shown(0);
}

/// How a write ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged at its `w`.
    Ok,
    /// Failed and said it was not applied anywhere.
    NotApplied,
    /// Failed or timed out and may have been applied.
    Unknown,
}

#[derive(Debug)]
struct Write {
    key: String,
    value: String,
    context: Shown,
    outcome: Option<Outcome>,
}

/// One client-visible history of writes and reads over many keys.
#[derive(Debug)]
pub struct History {
    /// The values each response showed, by [`Shown`] index; 0 is the empty set.
    shown: Vec<BTreeSet<String>>,
    writes: Vec<Write>,
}

impl Default for History {
    fn default() -> Self {
        History {
            shown: vec![BTreeSet::new()],
            writes: Vec::new(),
        }
    }
}

/// A write that was invoked; its outcome and context follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteId(usize);

/// A value that vanished although no context that showed it was written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    pub value: String,
    /// What the final read returned.
    pub read: Vec<String>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// A write of `value` (unique per history) to `key`, made with the
    /// context of the response `context`.
    pub fn write(&mut self, key: &str, value: &str, context: Shown) -> WriteId {
        self.writes.push(Write {
            key: key.to_owned(),
            value: value.to_owned(),
            context,
            outcome: None,
        });
        WriteId(self.writes.len() - 1)
    }

    /// The outcome of a write. Returns, for an acknowledged write, the
    /// handle of what its answer shows: its own value and what its context
    /// showed. `returnbody` answers are recorded with [`History::read`]
    /// instead.
    pub fn outcome(&mut self, write: WriteId, outcome: Outcome) -> Option<Shown> {
        let entry = &mut self.writes[write.0];
        entry.outcome = Some(outcome);
        if outcome != Outcome::Ok {
            return None;
        }
        let mut shown = self.shown[entry.context.0].clone();
        shown.insert(entry.value.clone());
        self.shown.push(shown);
        Some(Shown(self.shown.len() - 1))
    }

    /// A response that showed `values` (a read, or a write's `returnbody`).
    pub fn read(&mut self, values: &[String]) -> Shown {
        self.shown.push(values.iter().cloned().collect());
        Shown(self.shown.len() - 1)
    }

    /// Checks a final read of `key` that returned `values`: every
    /// acknowledged value of the key is there, unless some write that may
    /// have been applied was made with a context that showed it.
    pub fn check(&self, key: &str, values: &[String]) -> Result<(), Violation> {
        let read: BTreeSet<&str> = values.iter().map(String::as_str).collect();
        let superseded: BTreeSet<&str> = self
            .writes
            .iter()
            .filter(|w| w.key == key && w.outcome != Some(Outcome::NotApplied))
            .flat_map(|w| self.shown[w.context.0].iter().map(String::as_str))
            .collect();
        for write in self.writes.iter().filter(|w| w.key == key) {
            if write.outcome == Some(Outcome::Ok)
                && !read.contains(write.value.as_str())
                && !superseded.contains(write.value.as_str())
            {
                return Err(Violation {
                    key: key.to_owned(),
                    value: write.value.clone(),
                    read: values.to_vec(),
                });
            }
        }
        Ok(())
    }

    /// The keys written, in order.
    pub fn keys(&self) -> Vec<String> {
        let keys: BTreeSet<&str> = self.writes.iter().map(|w| w.key.as_str()).collect();
        keys.into_iter().map(str::to_owned).collect()
    }

    /// Acknowledged writes per outcome, for reports.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for write in &self.writes {
            let name = match write.outcome {
                Some(Outcome::Ok) => "ok",
                Some(Outcome::NotApplied) => "not_applied",
                Some(Outcome::Unknown) | None => "unknown",
            };
            *counts.entry(name).or_insert(0) += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn a_value_replaced_by_a_context_that_showed_it_may_go() {
        let mut h = History::new();
        let a = h.write("k", "a", Shown::NOTHING);
        h.outcome(a, Outcome::Ok);
        let read = h.read(&strings(&["a"]));
        let b = h.write("k", "b", read);
        h.outcome(b, Outcome::Ok);
        assert_eq!(h.check("k", &strings(&["b"])), Ok(()));
    }

    /// The negative control: the fault F1 in the review — a context from a
    /// write response that covered a concurrent value its writer never saw.
    #[test]
    fn a_value_no_response_showed_must_not_go() {
        let mut h = History::new();
        let apple = h.write("cart", "apple", Shown::NOTHING);
        h.outcome(apple, Outcome::Ok);
        let banana = h.write("cart", "banana", Shown::NOTHING);
        let t = h.outcome(banana, Outcome::Ok).expect("acknowledged");
        let banana2 = h.write("cart", "banana2", t);
        h.outcome(banana2, Outcome::Ok);
        assert_eq!(h.check("cart", &strings(&["apple", "banana2"])), Ok(()));
        assert_eq!(
            h.check("cart", &strings(&["banana2"])),
            Err(Violation {
                key: "cart".into(),
                value: "apple".into(),
                read: strings(&["banana2"]),
            })
        );
    }

    #[test]
    fn a_write_that_was_not_applied_supersedes_nothing() {
        let mut h = History::new();
        let a = h.write("k", "a", Shown::NOTHING);
        h.outcome(a, Outcome::Ok);
        let read = h.read(&strings(&["a"]));
        let b = h.write("k", "b", read);
        h.outcome(b, Outcome::NotApplied);
        assert!(h.check("k", &[]).is_err());
        // One that may have applied may have superseded it.
        let c = h.write("k", "c", read);
        h.outcome(c, Outcome::Unknown);
        assert_eq!(h.check("k", &[]), Ok(()));
    }
}
