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
//! The preference list is the ring's ([`chorus_ring::PreferenceList`],
//! borrowed, allocation-free), and so is the walk that picks fallbacks
//! ([`PreferenceList::select`]); this module adds the request's `sloppy`
//! option and the annotation the coordinators count.
//!
//! Up or down is this node's local opinion (the failure detector's), passed
//! in as a predicate; nothing here reads it from anywhere.

use chorus_ring::{PreferenceList, Target};
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

impl From<Target> for Replica {
    fn from(target: Target) -> Replica {
        match target {
            Target::Primary(node) => Replica::primary(node),
            Target::Fallback {
                node,
                stands_in_for,
            } => Replica::fallback(node, stands_in_for),
        }
    }
}

/// The targets of a request, in preference-list order: every primary
/// `is_up` accepts, and, when `sloppy`, in place of each primary it rejects
/// the next fallback it accepts not yet used, annotated with the primary it
/// stands in for ([`PreferenceList::select`]). A down primary for which no
/// up fallback is left gets no target. Without `sloppy` only the up
/// primaries are returned.
///
/// At most N targets, no node twice. The list is the ring's, borrowed; the
/// only allocation is the returned vector.
pub fn place(
    list: PreferenceList<'_>,
    mut is_up: impl FnMut(Uuid) -> bool,
    sloppy: bool,
) -> Vec<Replica> {
    let mut targets = Vec::with_capacity(list.n());
    if sloppy {
        targets.extend(list.select(is_up).map(Replica::from));
    } else {
        targets.extend(
            list.primaries()
                .iter()
                .copied()
                .filter(|&node| is_up(node))
                .map(Replica::primary),
        );
    }
    targets
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chorus_ring::PartitionId;

    use super::*;

    const A: Uuid = Uuid::from_u128(0xa);
    const B: Uuid = Uuid::from_u128(0xb);
    const C: Uuid = Uuid::from_u128(0xc);
    const D: Uuid = Uuid::from_u128(0xd);
    const E: Uuid = Uuid::from_u128(0xe);
    const F: Uuid = Uuid::from_u128(0xf);

    static NODES: [Uuid; 6] = [A, B, C, D, E, F];

    /// Primaries A, B, C; fallbacks D, E, F.
    fn preflist() -> PreferenceList<'static> {
        PreferenceList::new(PartitionId(0), &NODES, 3)
    }

    fn placed(list: PreferenceList<'_>, up: &BTreeSet<Uuid>, sloppy: bool) -> Vec<Replica> {
        place(list, |node| up.contains(&node), sloppy)
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
            assert_eq!(placed(preflist(), &up, true), expected, "down: {down:?}");
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
            assert_eq!(placed(preflist(), &up, false), expected, "down: {down:?}");
        }
    }

    #[test]
    fn fallbacks_are_taken_in_order_and_used_once() {
        assert_eq!(
            placed(preflist(), &up(&[C, D, E, F]), true),
            vec![f(D, A), f(E, B), p(C)]
        );
        assert_eq!(placed(preflist(), &up(&[B, F]), true), vec![f(F, A), p(B)]);
        let no_fallbacks = PreferenceList::new(PartitionId(0), &NODES[..3], 3);
        assert_eq!(placed(no_fallbacks, &up(&[A, C]), true), vec![p(A), p(C)]);
        assert_eq!(placed(preflist(), &up(&[]), true), vec![]);
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
    fn the_rings_targets_become_annotated_replicas() {
        assert_eq!(Replica::from(Target::Primary(A)), p(A));
        assert_eq!(
            Replica::from(Target::Fallback {
                node: D,
                stands_in_for: A
            }),
            f(D, A)
        );
    }

    #[test]
    fn is_up_is_asked_only_about_primaries_without_sloppy_quorum() {
        let mut asked = Vec::new();
        let targets = place(
            preflist(),
            |node| {
                asked.push(node);
                node != B
            },
            false,
        );
        assert_eq!(targets, vec![p(A), p(C)]);
        assert_eq!(asked, [A, B, C]);
    }
}
