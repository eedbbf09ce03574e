//! Dots and version vectors: the causality part of the versioning model.
//!
//! A **dot** `(actor, counter)` names one write. An **actor** is one replica of
//! one partition *with its local state*: when a node starts a partition replica
//! on empty state (a new node, a partition it takes over, a disk that was
//! replaced) it draws a fresh actor id, so it can never mint a dot that an
//! earlier incarnation of itself already used. Counters come from the node's
//! hybrid logical clock, which is strictly increasing and persisted across
//! restarts, so an actor never repeats a counter either, not even after a
//! key's tombstone has been collected.
//!
//! A **version vector** maps actors to counters. Entry `a: n` means "every dot
//! of actor `a` for this key with a counter of at most `n` has been seen". That
//! reading is exact because an actor mints the dots of one key one after the
//! other into its own state, and states only travel whole (merges carry the
//! whole vector).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One incarnation of one partition replica: the author of dots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActorId(pub u64);

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The name of one write: the actor that coordinated it and its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    pub actor: ActorId,
    pub counter: u64,
}

impl Dot {
    pub fn new(actor: ActorId, counter: u64) -> Self {
        assert!(counter > 0, "dot counters start at 1");
        Dot { actor, counter }
    }
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.actor, self.counter)
    }
}

/// A version vector: for each actor, the highest counter seen.
///
/// Entries are never zero; an absent actor reads as zero. Iteration is in
/// actor order, so equal vectors encode to equal bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionVector(BTreeMap<ActorId, u64>);

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest counter seen from `actor`, or 0.
    pub fn get(&self, actor: ActorId) -> u64 {
        self.0.get(&actor).copied().unwrap_or(0)
    }

    /// Whether the write named by `dot` is part of this history.
    pub fn covers(&self, dot: &Dot) -> bool {
        dot.counter <= self.get(dot.actor)
    }

    /// Adds one dot (and, by the vector's reading, every earlier dot of its actor).
    pub fn add(&mut self, dot: Dot) {
        let entry = self.0.entry(dot.actor).or_insert(0);
        *entry = (*entry).max(dot.counter);
    }

    /// Lowers `actor`'s entry to at most `max` (removing it at 0), so the
    /// vector no longer covers that actor's dots above `max`.
    pub fn cap(&mut self, actor: ActorId, max: u64) {
        if let Some(entry) = self.0.get_mut(&actor) {
            if *entry > max {
                if max == 0 {
                    self.0.remove(&actor);
                } else {
                    *entry = max;
                }
            }
        }
    }

    /// The least upper bound of the two histories (entry-wise maximum).
    pub fn merge(&mut self, other: &VersionVector) {
        for (&actor, &counter) in &other.0 {
            let entry = self.0.entry(actor).or_insert(0);
            *entry = (*entry).max(counter);
        }
    }

    /// `self` has seen everything `other` has seen (`self >= other`).
    pub fn descends(&self, other: &VersionVector) -> bool {
        other
            .0
            .iter()
            .all(|(&actor, &counter)| self.get(actor) >= counter)
    }

    /// `self` has seen strictly more than `other` (`self > other`).
    pub fn dominates(&self, other: &VersionVector) -> bool {
        self.descends(other) && self != other
    }

    /// Neither history contains the other.
    pub fn concurrent(&self, other: &VersionVector) -> bool {
        !self.descends(other) && !other.descends(self)
    }

    /// The largest counter of any actor, or 0 for the empty vector.
    ///
    /// Counters are hybrid logical clock readings, so a vector whose largest
    /// counter lies beyond the clock's drift bound cannot have come from this
    /// cluster; the coordinator uses this to refuse forged contexts.
    pub fn max_counter(&self) -> u64 {
        self.0.values().copied().max().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (ActorId, u64)> + '_ {
        self.0.iter().map(|(&actor, &counter)| (actor, counter))
    }

    /// Appends an entry read from a stored or received encoding, which lists
    /// actors in ascending order. Refuses (returns false, changes nothing)
    /// a zero counter or an actor not above every present one, so that only
    /// canonical encodings decode.
    pub(crate) fn push_decoded(&mut self, actor: ActorId, counter: u64) -> bool {
        if counter == 0
            || self
                .0
                .last_key_value()
                .is_some_and(|(&last, _)| last >= actor)
        {
            return false;
        }
        self.0.insert(actor, counter);
        true
    }

    /// Whether every entry is non-zero, as vectors built by this module are.
    /// Decoders use it to reject vectors that did not come from here.
    pub(crate) fn is_canonical(&self) -> bool {
        self.0.values().all(|&counter| counter > 0)
    }
}

impl FromIterator<(ActorId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (ActorId, u64)>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for (actor, counter) in iter {
            if counter > 0 {
                vv.add(Dot::new(actor, counter));
            }
        }
        vv
    }
}

impl fmt::Display for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (actor, counter)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{actor}:{counter}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vv(entries: &[(u64, u64)]) -> VersionVector {
        entries.iter().map(|&(a, c)| (ActorId(a), c)).collect()
    }

    #[test]
    fn covers_reads_entries_as_prefixes() {
        let v = vv(&[(1, 3), (2, 1)]);
        assert!(v.covers(&Dot::new(ActorId(1), 1)));
        assert!(v.covers(&Dot::new(ActorId(1), 3)));
        assert!(!v.covers(&Dot::new(ActorId(1), 4)));
        assert!(!v.covers(&Dot::new(ActorId(3), 1)));
    }

    #[test]
    fn ordering_relations() {
        let a = vv(&[(1, 2), (2, 1)]);
        let b = vv(&[(1, 1)]);
        let c = vv(&[(2, 2)]);
        assert!(a.descends(&b) && a.dominates(&b) && !b.descends(&a));
        assert!(a.descends(&a) && !a.dominates(&a));
        assert!(a.concurrent(&c) && c.concurrent(&a));
        assert!(!a.concurrent(&b));
        let mut m = a.clone();
        m.merge(&c);
        assert_eq!(m, vv(&[(1, 2), (2, 2)]));
        assert!(m.descends(&a) && m.descends(&c));
    }

    #[test]
    fn zero_entries_are_never_stored() {
        let v = vv(&[(1, 0), (2, 5)]);
        assert_eq!(v.len(), 1);
        assert!(v.is_canonical());
        assert_eq!(v.max_counter(), 5);
    }

    fn arb_vv() -> impl Strategy<Value = VersionVector> {
        proptest::collection::vec((0u64..6, 0u64..20), 0..6)
            .prop_map(|entries| entries.into_iter().map(|(a, c)| (ActorId(a), c)).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn merge_is_a_join(a in arb_vv(), b in arb_vv(), c in arb_vv()) {
            let join = |x: &VersionVector, y: &VersionVector| { let mut z = x.clone(); z.merge(y); z };
            prop_assert_eq!(join(&a, &b), join(&b, &a));
            prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
            prop_assert_eq!(join(&a, &a), a.clone());
            let ab = join(&a, &b);
            prop_assert!(ab.descends(&a) && ab.descends(&b));
        }

        #[test]
        fn exactly_one_relation_holds(a in arb_vv(), b in arb_vv()) {
            let relations = [a == b, a.dominates(&b), b.dominates(&a), a.concurrent(&b)];
            prop_assert_eq!(relations.iter().filter(|&&r| r).count(), 1);
        }
    }
}
