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
    /// Every operation of each key, in invocation order.
    ops: BTreeMap<&'h str, Vec<OpId>>,
    /// For each (key, value): the earliest invocation of a write, other
    /// than its own, that may have been applied and may have replaced it.
    replaced_from: BTreeMap<(&'h str, &'h str), Duration>,
}

impl<'h> Analysis<'h> {
    pub fn new(history: &'h History) -> Analysis<'h> {
        let mut writer = BTreeMap::new();
        let mut seen = BTreeMap::new();
        let mut writes: BTreeMap<&str, Vec<OpId>> = BTreeMap::new();
        let mut ops: BTreeMap<&str, Vec<OpId>> = BTreeMap::new();
        // What each response showed, computed once in history order (a
        // context always comes from an earlier response).
        let mut shown: Vec<Option<BTreeSet<String>>> = Vec::with_capacity(history.len());
        for (id, entry) in history.entries() {
            ops.entry(entry.op.key()).or_default().push(id);
            let own = entry.response().map(|response| {
                if response.shows_siblings {
                    return response.values.iter().cloned().collect();
                }
                match &entry.op {
                    Op::Write { value, context, .. } => {
                        let mut set = context
                            .as_ref()
                            .and_then(|c| shown.get(c.from.0).cloned().flatten())
                            .unwrap_or_default();
                        set.extend(value.clone());
                        set
                    }
                    Op::Read { .. } => response.values.iter().cloned().collect(),
                }
            });
            shown.push(own);
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
                (Some(context), _) => Some(shown[context.from.0].clone().unwrap_or_default()),
                (None, Some(_)) => Some(BTreeSet::new()),
                (None, None) => None,
            };
            seen.insert(id, shown);
        }
        // The written values of each key, to look up with borrowed strings.
        let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for &(key, value) in writer.keys() {
            values.entry(key).or_default().insert(value);
        }
        let mut replaced_from: BTreeMap<(&str, &str), Duration> = BTreeMap::new();
        for (&key, key_writes) in &writes {
            for &w in key_writes {
                let entry = history.entry(w);
                if !entry.may_have_applied() {
                    continue;
                }
                let mut note = |value: &'h str| {
                    if writer.get(&(key, value)) == Some(&w) {
                        return;
                    }
                    let at = replaced_from.entry((key, value)).or_insert(Duration::MAX);
                    *at = (*at).min(entry.invoked);
                };
                match &seen[&w] {
                    Some(shown) => {
                        let Some(known) = values.get(key) else {
                            continue;
                        };
                        for value in shown {
                            if let Some(&v) = known.get(value.as_str()) {
                                note(v);
                            }
                        }
                    }
                    None => {
                        let ended = entry.completed.unwrap_or(Duration::MAX);
                        for &other in key_writes {
                            let other_entry = history.entry(other);
                            if let Some(value) = other_entry.written_value() {
                                if other_entry.invoked < ended {
                                    note(value);
                                }
                            }
                        }
                    }
                }
            }
        }
        Analysis {
            history,
            writer,
            seen,
            writes,
            ops,
            replaced_from,
        }
    }

    /// Every operation of `key`, in invocation order.
    pub fn ops(&self, key: &str) -> impl Iterator<Item = (OpId, &'h Entry)> + '_ {
        let history = self.history;
        self.ops
            .get(key)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(move |&id| (id, history.entry(id)))
    }

    /// Every key the history touched, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &'h str> + '_ {
        self.ops.keys().copied()
    }

    /// The successful final reads of `key`.
    pub fn final_reads(
        &self,
        key: &str,
    ) -> impl Iterator<Item = &'h crate::history::Response> + '_ {
        self.ops(key)
            .filter(|(_, e)| e.is_final)
            .filter_map(|(_, e)| e.response())
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
        self.replaced_from
            .get(&(key, value))
            .is_some_and(|&at| at < before)
    }

    /// Whether the write of `later` was made having seen `earlier`,
    /// directly or through a chain of writes.
    pub fn descends(&self, key: &str, later: &str, earlier: &str) -> bool {
        // A write invoked before `earlier`'s write began cannot have seen it.
        let Some(origin) = self.writer(key, earlier).map(|w| self.entry(w).invoked) else {
            return false;
        };
        let mut stack = vec![later.to_owned()];
        let mut visited = BTreeSet::new();
        while let Some(value) = stack.pop() {
            if !visited.insert(value.clone()) {
                continue;
            }
            let Some(w) = self.writer(key, &value) else {
                continue;
            };
            if self.entry(w).invoked < origin {
                continue;
            }
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
