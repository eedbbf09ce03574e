//! Preference lists and the sloppy-quorum choice of replicas among them.

use std::iter::FusedIterator;

use crate::member::NodeId;
use crate::partition::PartitionId;

/// Whether a node in a preference list owns the partition or stands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// One of the N owners of the partition.
    Primary,
    /// A node that holds the partition's writes while a primary is down, as
    /// hints to hand back.
    Fallback,
}

/// One entry of a preference list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Replica {
    /// The node.
    pub node: NodeId,
    /// Its role for this partition.
    pub role: Role,
}

/// The nodes of one partition in the order requests try them: its N
/// primaries, then its fallbacks in a fixed order. All distinct.
///
/// Borrows the ring; building and walking one allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreferenceList<'a> {
    partition: PartitionId,
    nodes: &'a [NodeId],
    primaries: usize,
}

impl<'a> PreferenceList<'a> {
    /// The list of `partition` over `nodes`: the first `primaries` of them
    /// are its primaries, the rest its fallbacks in order. The ring builds
    /// these ([`Ring::preference_list`](crate::Ring::preference_list)); a
    /// caller may build one over its own slice, for instance in a test.
    ///
    /// Panics unless `1 <= primaries <= nodes.len()`; the nodes must be
    /// distinct (checked in debug builds).
    pub fn new(partition: PartitionId, nodes: &'a [NodeId], primaries: usize) -> Self {
        assert!(
            primaries >= 1 && primaries <= nodes.len(),
            "a preference list has between one primary and all of its nodes"
        );
        debug_assert!(
            nodes
                .iter()
                .enumerate()
                .all(|(i, node)| !nodes[..i].contains(node)),
            "a node appears twice in a preference list"
        );
        Self {
            partition,
            nodes,
            primaries,
        }
    }

    /// The partition.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// N, the replication factor: how many primaries there are.
    #[inline]
    pub fn n(&self) -> usize {
        self.primaries
    }

    /// The N primaries, in order.
    #[inline]
    pub fn primaries(&self) -> &'a [NodeId] {
        &self.nodes[..self.primaries]
    }

    /// The fallbacks, in the order they are used.
    #[inline]
    pub fn fallbacks(&self) -> &'a [NodeId] {
        &self.nodes[self.primaries..]
    }

    /// Primaries then fallbacks.
    #[inline]
    pub fn nodes(&self) -> &'a [NodeId] {
        self.nodes
    }

    /// The number of nodes in the list.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a list has at least one primary.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether a node is one of the primaries.
    pub fn is_primary(&self, node: NodeId) -> bool {
        self.primaries().contains(&node)
    }

    /// Every node with its role, primaries first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Replica> + 'a {
        let primaries = self.primaries;
        self.nodes
            .iter()
            .enumerate()
            .map(move |(i, &node)| Replica {
                node,
                role: if i < primaries {
                    Role::Primary
                } else {
                    Role::Fallback
                },
            })
    }

    /// The sloppy quorum: the first N healthy nodes, as up to N targets in
    /// primary order.
    ///
    /// Each primary that `is_up` accepts is a target; each one it rejects is
    /// replaced by the next fallback it accepts, which stands in for that
    /// primary. When the fallbacks run out, fewer than N targets come out.
    /// `is_up` is called at most once per node, in list order.
    pub fn select<F: FnMut(NodeId) -> bool>(self, is_up: F) -> Selection<'a, F> {
        Selection {
            list: self,
            is_up,
            next_primary: 0,
            next_fallback: self.primaries,
        }
    }
}

/// A node chosen to serve a request for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A primary that is up.
    Primary(NodeId),
    /// A fallback taking the place of a primary that is down.
    Fallback {
        /// The fallback.
        node: NodeId,
        /// The primary it stands in for: the intended owner named in hints.
        stands_in_for: NodeId,
    },
}

impl Target {
    /// The node to send to.
    pub fn node(&self) -> NodeId {
        match *self {
            Target::Primary(node) | Target::Fallback { node, .. } => node,
        }
    }

    /// Whether the target is a primary.
    pub fn is_primary(&self) -> bool {
        matches!(self, Target::Primary(_))
    }

    /// The primary a fallback stands in for; `None` for a primary.
    pub fn stands_in_for(&self) -> Option<NodeId> {
        match *self {
            Target::Primary(_) => None,
            Target::Fallback { stands_in_for, .. } => Some(stands_in_for),
        }
    }
}

/// The iterator of [`PreferenceList::select`].
#[derive(Debug, Clone)]
pub struct Selection<'a, F> {
    list: PreferenceList<'a>,
    is_up: F,
    next_primary: usize,
    next_fallback: usize,
}

impl<F: FnMut(NodeId) -> bool> Iterator for Selection<'_, F> {
    type Item = Target;

    fn next(&mut self) -> Option<Target> {
        let nodes = self.list.nodes;
        while self.next_primary < self.list.primaries {
            let primary = nodes[self.next_primary];
            self.next_primary += 1;
            if (self.is_up)(primary) {
                return Some(Target::Primary(primary));
            }
            while self.next_fallback < nodes.len() {
                let fallback = nodes[self.next_fallback];
                self.next_fallback += 1;
                if (self.is_up)(fallback) {
                    return Some(Target::Fallback {
                        node: fallback,
                        stands_in_for: primary,
                    });
                }
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.list.primaries - self.next_primary))
    }
}

impl<F: FnMut(NodeId) -> bool> FusedIterator for Selection<'_, F> {}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn ids(n: u128) -> Vec<NodeId> {
        (1..=n).map(Uuid::from_u128).collect()
    }

    #[test]
    fn roles_follow_positions() {
        let nodes = ids(5);
        let list = PreferenceList::new(PartitionId(7), &nodes, 3);
        assert_eq!(list.partition(), PartitionId(7));
        assert_eq!(list.n(), 3);
        assert_eq!(list.len(), 5);
        assert_eq!(list.primaries(), &nodes[..3]);
        assert_eq!(list.fallbacks(), &nodes[3..]);
        let roles: Vec<Role> = list.iter().map(|r| r.role).collect();
        assert_eq!(
            roles,
            [
                Role::Primary,
                Role::Primary,
                Role::Primary,
                Role::Fallback,
                Role::Fallback
            ]
        );
        assert!(list.is_primary(nodes[2]));
        assert!(!list.is_primary(nodes[3]));
    }

    #[test]
    fn all_up_selects_the_primaries() {
        let nodes = ids(6);
        let list = PreferenceList::new(PartitionId(0), &nodes, 3);
        let chosen: Vec<Target> = list.select(|_| true).collect();
        assert_eq!(
            chosen,
            nodes[..3]
                .iter()
                .map(|&n| Target::Primary(n))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn fallbacks_stand_in_for_down_primaries_in_order() {
        let n = ids(6);
        let list = PreferenceList::new(PartitionId(0), &n, 3);
        // Primary 0 and fallback 3 are down.
        let down = [n[0], n[3]];
        let chosen: Vec<Target> = list.select(|x| !down.contains(&x)).collect();
        assert_eq!(
            chosen,
            [
                Target::Fallback {
                    node: n[4],
                    stands_in_for: n[0]
                },
                Target::Primary(n[1]),
                Target::Primary(n[2])
            ]
        );
        assert_eq!(chosen[0].stands_in_for(), Some(n[0]));
        assert_eq!(chosen[0].node(), n[4]);
        assert!(chosen[1].is_primary());
    }

    #[test]
    fn running_out_of_fallbacks_yields_fewer_targets() {
        let n = ids(4);
        let list = PreferenceList::new(PartitionId(0), &n, 3);
        let up = [n[2]];
        let chosen: Vec<Target> = list.select(|x| up.contains(&x)).collect();
        assert_eq!(chosen, [Target::Primary(n[2])]);
        let none: Vec<Target> = list.select(|_| false).collect();
        assert!(none.is_empty());
    }

    #[test]
    #[should_panic(expected = "between one primary and all of its nodes")]
    fn a_list_without_primaries_is_a_programmer_error() {
        let nodes = ids(3);
        PreferenceList::new(PartitionId(0), &nodes, 0);
    }

    #[test]
    #[should_panic(expected = "a node appears twice")]
    fn a_node_twice_is_a_programmer_error() {
        let mut nodes = ids(4);
        nodes[3] = nodes[1];
        PreferenceList::new(PartitionId(0), &nodes, 3);
    }

    #[test]
    fn is_up_is_asked_once_per_node() {
        let n = ids(6);
        let list = PreferenceList::new(PartitionId(0), &n, 3);
        let mut asked = Vec::new();
        let count = list
            .select(|x| {
                asked.push(x);
                x != n[1] && x != n[2]
            })
            .count();
        assert_eq!(count, 3);
        assert_eq!(asked, [n[0], n[1], n[3], n[2], n[4]]);
    }
}
