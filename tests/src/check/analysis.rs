//! What several checkers derive from a history.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::history::{Entry, History, Op, OpId};

/// Derived facts of one history. Values are unique per run, so a value
/// names the write that wrote it.
#[derive(Debug)]
pub struct Analysis<'h> {
    pub history: &'h History,
    /// The write of each (key, value).
    writer: BTreeMap<(&'h str, &'h str), OpId>,
    /// For each write, the values its writer had been shown for its key:
    /// `None` for a delete without a context (it deletes whatever a read at
    /// its `r` found, so it may remove any value written before it ended).
    seen: BTreeMap<OpId, Option<BTreeSet<String>>>,
    /// The writes of each key, in invocation order.
    writes: BTreeMap<&'h str, Vec<OpId>>,
}

impl<'h> Analysis<'h> {
    pub fn new(history: &'h History) -> Analysis<'h> {
        let mut writer = BTreeMap::new();
        let mut seen = BTreeMap::new();
        let mut writes: BTreeMap<&str, Vec<OpId>> = BTreeMap::new();
        for (id, entry) in history.entries() {
            let Op::Write {
                key,
                value,
                context,
                ..
            } = &entry.op
            else {
                continue;
            };
            writes.entry(key.as_str()).or_default().push(id);
            if let Some(value) = value {
                writer.insert((key.as_str(), value.as_str()), id);
            }
            let shown = match (context, value) {
                (Some(context), _) => Some(history.shown_by(context.from)),
                (None, Some(_)) => Some(BTreeSet::new()),
                (None, None) => None,
            };
            seen.insert(id, shown);
        }
        Analysis {
            history,
            writer,
            seen,
            writes,
        }
    }

    /// The write that wrote `value` to `key`.
    pub fn writer(&self, key: &str, value: &str) -> Option<OpId> {
        self.writer.get(&(key, value)).copied()
    }

    pub fn entry(&self, id: OpId) -> &'h Entry {
        self.history.entry(id)
    }

    /// The writes of `key`, in invocation order.
    pub fn writes(&self, key: &str) -> &[OpId] {
        self.writes.get(key).map_or(&[], Vec::as_slice)
    }

    /// Whether write `w`, had it been applied, may have replaced `value`
    /// of `key`: its writer had been shown the value, or it is a delete
    /// without a context that ended after the value's write began.
    pub fn may_replace(&self, w: OpId, key: &str, value: &str) -> bool {
        match &self.seen[&w] {
            Some(seen) => seen.contains(value),
            None => self.writer(key, value).is_some_and(|v| {
                self.entry(v).invoked < self.entry(w).completed.unwrap_or(Duration::MAX)
            }),
        }
    }

    /// Whether `value` of `key` may have been replaced by a write that may
    /// have been applied and was invoked before `before`.
    pub fn replaced_before(&self, key: &str, value: &str, before: Duration) -> bool {
        let own = self.writer(key, value);
        self.writes(key).iter().any(|&w| {
            Some(w) != own
                && self.entry(w).may_have_applied()
                && self.entry(w).invoked < before
                && self.may_replace(w, key, value)
        })
    }

    /// Whether the write of `later` was made having seen `earlier`,
    /// directly or through a chain of writes.
    pub fn descends(&self, key: &str, later: &str, earlier: &str) -> bool {
        let mut stack = vec![later.to_owned()];
        let mut visited = BTreeSet::new();
        while let Some(value) = stack.pop() {
            if !visited.insert(value.clone()) {
                continue;
            }
            let Some(w) = self.writer(key, &value) else {
                continue;
            };
            if let Some(Some(seen)) = self.seen.get(&w) {
                if seen.contains(earlier) {
                    return true;
                }
                stack.extend(seen.iter().cloned());
            }
        }
        false
    }

    /// Whether write `w`, once acknowledged, is covered by the run's
    /// durability assumption (see [`super::Assumptions`]): it was
    /// acknowledged with `sync=true`, or fewer machines lost power after it
    /// began than the replicas that acknowledged it (its `w`; every
    /// acknowledgement comes from a different node).
    pub fn durable(&self, w: OpId, assumptions: &super::Assumptions) -> bool {
        self.durable_through(w, assumptions, Duration::MAX)
    }

    /// Whether every replica that acknowledged write `w` still held it at
    /// `until`, as the overlap of strict quorums needs: it was acknowledged
    /// with `sync=true`, or no machine lost power between its invocation
    /// and `until` (any one power loss may have hit a replica that
    /// acknowledged it and that a later quorum meets).
    pub fn held_by_every_acknowledger(
        &self,
        w: OpId,
        assumptions: &super::Assumptions,
        until: Duration,
    ) -> bool {
        let entry = self.entry(w);
        entry.option("sync") == Some("true")
            || !assumptions
                .power_losses
                .iter()
                .any(|&at| at >= entry.invoked && at <= until)
    }

    fn durable_through(&self, w: OpId, assumptions: &super::Assumptions, until: Duration) -> bool {
        let entry = self.entry(w);
        if entry.option("sync") == Some("true") {
            return true;
        }
        let n = self.history.replicas;
        let acknowledgements = match entry.option("w") {
            Some("one") => 1,
            Some("all") => n,
            Some(number) if number.parse::<usize>().is_ok() => number.parse().unwrap_or(1),
            // `quorum`, and the default.
            _ => n / 2 + 1,
        };
        let losses = assumptions
            .power_losses
            .iter()
            .filter(|&&at| at >= entry.invoked && at <= until)
            .count();
        losses < acknowledgements.max(1)
    }
}
