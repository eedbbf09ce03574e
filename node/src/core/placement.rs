//! Where a request's copies go: the annotated preference list.
//!
//! A key's preference list (from the ring) names its N **primaries** and then
//! **fallbacks** in a fixed order. A request goes to the primaries this node
//! believes up. Under **sloppy quorum** each down primary is replaced by the
//! next up fallback not already used, and that fallback's copy carries a
//! **hint** naming the primary it stands in for, so it can hand the copy off
//! when the primary is back. With `sloppy=false` only the up primaries are
//! targets and a request with too few of them fails its quorum.
//!
//! The result is annotated in the manner of riak_core's `apl`: each target is
//! a [`Replica`] with its [`Role`], which is what the coordinators count
//! `pr` and `pw` against.
//!
//! Up or down is this node's local opinion (the failure detector's), passed
//! in as a set; nothing here reads it from anywhere.

use std::collections::BTreeSet;

use uuid::Uuid;

/// Why a node holds a copy of a key for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// One of the key's N owners.
    Primary,
    /// A stand-in for a down primary: it keeps its copy with a hint naming
    /// the primary it stands in for.
    Fallback { stands_in_for: Uuid },
}

/// One target of a request: a node and why it holds a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Replica {
    pub node: Uuid,
    pub role: Role,
}

impl Replica {
    pub fn primary(node: Uuid) -> Replica {
        Replica {
            node,
            role: Role::Primary,
        }
    }

    pub fn fallback(node: Uuid, stands_in_for: Uuid) -> Replica {
        Replica {
            node,
            role: Role::Fallback { stands_in_for },
        }
    }

    pub fn is_primary(&self) -> bool {
        self.role == Role::Primary
    }

    /// The primary this replica stands in for, if it is a fallback: the
    /// node its hint names.
    pub fn stands_in_for(&self) -> Option<Uuid> {
        match self.role {
            Role::Primary => None,
            Role::Fallback { stands_in_for } => Some(stands_in_for),
        }
    }
}

/// A key's preference list: its N primaries, then its fallbacks in the order
/// they are tried. No node appears twice.
///
/// This is the input the ring provides; the ring's own type is adapted to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferenceList {
    primaries: Vec<Uuid>,
    fallbacks: Vec<Uuid>,
}

impl PreferenceList {
    /// Panics if a node appears twice or there are no primaries: the ring
    /// never builds such a list.
    pub fn new(primaries: Vec<Uuid>, fallbacks: Vec<Uuid>) -> PreferenceList {
        assert!(!primaries.is_empty(), "a preference list has primaries");
        let distinct: BTreeSet<&Uuid> = primaries.iter().chain(&fallbacks).collect();
        assert_eq!(
            distinct.len(),
            primaries.len() + fallbacks.len(),
            "a node appears twice in a preference list"
        );
        PreferenceList {
            primaries,
            fallbacks,
        }
    }

    /// The replication factor: how many primaries there are.
    pub fn n(&self) -> usize {
        self.primaries.len()
    }

    pub fn primaries(&self) -> &[Uuid] {
        &self.primaries
    }

    pub fn fallbacks(&self) -> &[Uuid] {
        &self.fallbacks
    }
}

/// The targets of a request, in preference-list order: every primary in
/// `up`, and, when `sloppy`, in place of each primary not in `up` the next
/// fallback in `up` not yet used, annotated with the primary it stands in
/// for. A down primary for which no up fallback is left gets no target.
/// Without `sloppy` only the up primaries are returned.
///
/// At most N targets, no node twice.
pub fn place(preflist: &PreferenceList, up: &BTreeSet<Uuid>, sloppy: bool) -> Vec<Replica> {
    let mut fallbacks = preflist.fallbacks.iter().filter(|node| up.contains(node));
    let mut targets = Vec::with_capacity(preflist.n());
    for &primary in &preflist.primaries {
        if up.contains(&primary) {
            targets.push(Replica::primary(primary));
        } else if sloppy {
            if let Some(&fallback) = fallbacks.next() {
                targets.push(Replica::fallback(fallback, primary));
            }
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Uuid = Uuid::from_u128(0xa);
    const B: Uuid = Uuid::from_u128(0xb);
    const C: Uuid = Uuid::from_u128(0xc);
    const D: Uuid = Uuid::from_u128(0xd);
    const E: Uuid = Uuid::from_u128(0xe);
    const F: Uuid = Uuid::from_u128(0xf);

    fn preflist() -> PreferenceList {
        PreferenceList::new(vec![A, B, C], vec![D, E, F])
    }

    fn up(nodes: &[Uuid]) -> BTreeSet<Uuid> {
        nodes.iter().copied().collect()
    }

    fn p(node: Uuid) -> Replica {
        Replica::primary(node)
    }

    fn f(node: Uuid, stands_in_for: Uuid) -> Replica {
        Replica::fallback(node, stands_in_for)
    }

    #[test]
    fn every_combination_of_down_primaries_under_sloppy_quorum() {
        // Fallback E is down too, so stand-ins come from D, then F.
        let cases: [(&[Uuid], Vec<Replica>); 8] = [
            (&[], vec![p(A), p(B), p(C)]),
            (&[A], vec![f(D, A), p(B), p(C)]),
            (&[B], vec![p(A), f(D, B), p(C)]),
            (&[C], vec![p(A), p(B), f(D, C)]),
            (&[A, B], vec![f(D, A), f(F, B), p(C)]),
            (&[A, C], vec![f(D, A), p(B), f(F, C)]),
            (&[B, C], vec![p(A), f(D, B), f(F, C)]),
            // Only two fallbacks are up: the third down primary has no stand-in.
            (&[A, B, C], vec![f(D, A), f(F, B)]),
        ];
        for (down, expected) in cases {
            let up: BTreeSet<Uuid> = [A, B, C, D, F]
                .into_iter()
                .filter(|node| !down.contains(node))
                .collect();
            assert_eq!(place(&preflist(), &up, true), expected, "down: {down:?}");
        }
    }

    #[test]
    fn without_sloppy_quorum_only_up_primaries_are_targets() {
        let all_fallbacks_up = [D, E, F];
        let cases: [(&[Uuid], Vec<Replica>); 8] = [
            (&[], vec![p(A), p(B), p(C)]),
            (&[A], vec![p(B), p(C)]),
            (&[B], vec![p(A), p(C)]),
            (&[C], vec![p(A), p(B)]),
            (&[A, B], vec![p(C)]),
            (&[A, C], vec![p(B)]),
            (&[B, C], vec![p(A)]),
            (&[A, B, C], vec![]),
        ];
        for (down, expected) in cases {
            let up: BTreeSet<Uuid> = [A, B, C]
                .into_iter()
                .filter(|node| !down.contains(node))
                .chain(all_fallbacks_up)
                .collect();
            assert_eq!(place(&preflist(), &up, false), expected, "down: {down:?}");
        }
    }

    #[test]
    fn fallbacks_are_taken_in_order_and_used_once() {
        assert_eq!(
            place(&preflist(), &up(&[C, D, E, F]), true),
            vec![f(D, A), f(E, B), p(C)]
        );
        assert_eq!(place(&preflist(), &up(&[B, F]), true), vec![f(F, A), p(B)]);
        let no_fallbacks = PreferenceList::new(vec![A, B, C], vec![]);
        assert_eq!(place(&no_fallbacks, &up(&[A, C]), true), vec![p(A), p(C)]);
        assert_eq!(place(&preflist(), &up(&[]), true), vec![]);
    }

    #[test]
    fn replicas_report_role_and_the_primary_they_stand_in_for() {
        assert!(p(A).is_primary());
        assert_eq!(p(A).stands_in_for(), None);
        assert!(!f(D, A).is_primary());
        assert_eq!(f(D, A).stands_in_for(), Some(A));
        assert_eq!(preflist().n(), 3);
        assert_eq!(preflist().primaries(), &[A, B, C]);
        assert_eq!(preflist().fallbacks(), &[D, E, F]);
    }

    #[test]
    #[should_panic(expected = "a node appears twice")]
    fn a_node_twice_is_a_programmer_error() {
        PreferenceList::new(vec![A, B, C], vec![D, B]);
    }
}
