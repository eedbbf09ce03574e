//! Transfer plans: which replicas move, from which node to which, between two rings.

use std::collections::BTreeMap;
use std::fmt;

use crate::member::NodeId;
use crate::partition::PartitionId;
use crate::ring::{Ring, RingHash};
use crate::RingError;

/// One replica changing hands: `to` becomes a primary of `partition` in place
/// of `from`, which sends it the partition's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Transfer {
    /// The partition.
    pub partition: PartitionId,
    /// The primary in the old ring that gives up its replica and sends it.
    pub from: NodeId,
    /// The primary in the new ring that receives it.
    pub to: NodeId,
}

/// What one node sends and receives in a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeTransfers {
    /// The node.
    pub node: NodeId,
    /// Replicas it sends.
    pub sends: usize,
    /// Replicas it receives.
    pub receives: usize,
}

/// Every replica that moves between two rings of one cluster, in partition order.
///
/// For each partition, the nodes that are primaries only in the new ring are
/// paired with those that are primaries only in the old ring: first those
/// at the same position of the primary list (the claim keeps positions when
/// it replaces a node), then the rest in list order. The sender is the old
/// owner, which keeps serving until the transfer is done; if it is gone, any
/// other old primary of the partition holds a replica too. The plan says what
/// to move, not how or when: the handoff that moves the data is not this crate's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferPlan {
    from_version: u64,
    from_hash: RingHash,
    to_version: u64,
    to_hash: RingHash,
    transfers: Vec<Transfer>,
}

impl TransferPlan {
    /// The plan from `old` to `new`, which must have the same P and N.
    pub fn between(old: &Ring, new: &Ring) -> Result<Self, RingError> {
        if old.partitions() != new.partitions() || old.replicas() != new.replicas() {
            return Err(RingError::ShapeMismatch {
                left_partitions: old.partitions().count(),
                left_replicas: old.replicas(),
                right_partitions: new.partitions().count(),
                right_replicas: new.replicas(),
            });
        }
        let mut transfers = Vec::new();
        let mut senders: Vec<Option<NodeId>> = Vec::with_capacity(old.replicas());
        let mut receivers: Vec<Option<NodeId>> = Vec::with_capacity(old.replicas());
        for partition in old.partitions().iter() {
            let before = old.primaries(partition);
            let after = new.primaries(partition);
            senders.clear();
            receivers.clear();
            senders.extend(before.iter().map(|n| (!after.contains(n)).then_some(*n)));
            receivers.extend(after.iter().map(|n| (!before.contains(n)).then_some(*n)));
            // Same position first.
            for (s, r) in senders.iter_mut().zip(receivers.iter_mut()) {
                if let (Some(from), Some(to)) = (*s, *r) {
                    transfers.push(Transfer {
                        partition,
                        from,
                        to,
                    });
                    *s = None;
                    *r = None;
                }
            }
            // Then the rest, in order; both sides have as many left.
            let rest = senders.iter().flatten().zip(receivers.iter().flatten());
            transfers.extend(rest.map(|(&from, &to)| Transfer {
                partition,
                from,
                to,
            }));
        }
        transfers.sort();
        Ok(Self {
            from_version: old.version(),
            from_hash: old.hash(),
            to_version: new.version(),
            to_hash: new.hash(),
            transfers,
        })
    }

    /// The transfers, by partition then sender.
    pub fn transfers(&self) -> &[Transfer] {
        &self.transfers
    }

    /// The number of replicas that move.
    pub fn len(&self) -> usize {
        self.transfers.len()
    }

    /// Whether nothing moves.
    pub fn is_empty(&self) -> bool {
        self.transfers.is_empty()
    }

    /// The transfers a node sends.
    pub fn outgoing(&self, node: NodeId) -> impl Iterator<Item = &Transfer> + '_ {
        self.transfers.iter().filter(move |t| t.from == node)
    }

    /// The transfers a node receives.
    pub fn incoming(&self, node: NodeId) -> impl Iterator<Item = &Transfer> + '_ {
        self.transfers.iter().filter(move |t| t.to == node)
    }

    /// Per node, how many replicas it sends and receives, in node id order.
    pub fn per_node(&self) -> Vec<NodeTransfers> {
        let mut map: BTreeMap<NodeId, (usize, usize)> = BTreeMap::new();
        for t in &self.transfers {
            map.entry(t.from).or_default().0 += 1;
            map.entry(t.to).or_default().1 += 1;
        }
        map.into_iter()
            .map(|(node, (sends, receives))| NodeTransfers {
                node,
                sends,
                receives,
            })
            .collect()
    }
}

/// An operator's view: a header, one line per node, one line per transfer.
impl fmt::Display for TransferPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ring v{} {} -> v{} {}: {} replicas move",
            self.from_version,
            self.from_hash,
            self.to_version,
            self.to_hash,
            self.transfers.len()
        )?;
        for n in self.per_node() {
            writeln!(
                f,
                "  {}  sends {:>6}  receives {:>6}",
                n.node, n.sends, n.receives
            )?;
        }
        for t in &self.transfers {
            writeln!(
                f,
                "  {:>7}  {} -> {}",
                t.partition.to_string(),
                t.from,
                t.to
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::member::{Member, MemberChange};
    use uuid::Uuid;

    fn members(n: u128) -> Vec<Member> {
        (0..n)
            .map(|i| Member::new(Uuid::from_u128(0x1000 + i), "", 1))
            .collect()
    }

    #[test]
    fn same_ring_moves_nothing() {
        let ring = Ring::initial(&members(5), 64, 3).unwrap();
        let plan = TransferPlan::between(&ring, &ring).unwrap();
        assert!(plan.is_empty());
        assert!(plan.per_node().is_empty());
    }

    #[test]
    fn join_plan_sends_only_to_the_new_node_and_matches_the_rings() {
        let ring = Ring::initial(&members(4), 64, 3).unwrap();
        let newcomer = Member::new(Uuid::from_u128(0x9999), "", 1);
        let next = ring.next(&[MemberChange::Join(newcomer.clone())]).unwrap();
        let plan = TransferPlan::between(&ring, &next).unwrap();
        assert_eq!(plan.len(), next.load(newcomer.id).unwrap());
        assert_eq!(plan.incoming(newcomer.id).count(), plan.len());
        assert_eq!(plan.outgoing(newcomer.id).count(), 0);
        for t in plan.transfers() {
            assert!(ring.primaries(t.partition).contains(&t.from));
            assert!(!next.primaries(t.partition).contains(&t.from));
            assert!(next.primaries(t.partition).contains(&t.to));
            assert!(!ring.primaries(t.partition).contains(&t.to));
            // The claim keeps positions: the newcomer takes the sender's slot.
            let pos_old = ring
                .primaries(t.partition)
                .iter()
                .position(|&n| n == t.from);
            let pos_new = next.primaries(t.partition).iter().position(|&n| n == t.to);
            assert_eq!(pos_old, pos_new);
        }
        let per_node = plan.per_node();
        assert_eq!(per_node.iter().map(|n| n.sends).sum::<usize>(), plan.len());
        assert_eq!(
            per_node.iter().map(|n| n.receives).sum::<usize>(),
            plan.len()
        );
        let text = plan.to_string();
        assert!(text.starts_with(&format!(
            "ring v1 {} -> v2 {}: {} replicas move",
            ring.hash(),
            next.hash(),
            plan.len()
        )));
        assert_eq!(text.lines().count(), 1 + per_node.len() + plan.len());
    }

    #[test]
    fn leave_plan_sends_everything_from_the_leaving_node() {
        let m = members(6);
        let ring = Ring::initial(&m, 64, 3).unwrap();
        let gone = m[2].id;
        let next = ring.next(&[MemberChange::Leave(gone)]).unwrap();
        let plan = TransferPlan::between(&ring, &next).unwrap();
        assert_eq!(plan.len(), ring.load(gone).unwrap());
        assert!(plan.transfers().iter().all(|t| t.from == gone));
    }

    #[test]
    fn different_shapes_are_refused() {
        let a = Ring::initial(&members(4), 64, 3).unwrap();
        let b = Ring::initial(&members(4), 128, 3).unwrap();
        assert!(matches!(
            TransferPlan::between(&a, &b),
            Err(RingError::ShapeMismatch { .. })
        ));
        let c = Ring::initial(&members(4), 64, 2).unwrap();
        assert!(matches!(
            TransferPlan::between(&a, &c),
            Err(RingError::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn independent_rings_pair_every_difference() {
        // Rings computed separately (no shared history) still get a complete plan.
        let a = Ring::initial(&members(5), 32, 3).unwrap();
        let b = Ring::initial(&members(6)[1..], 32, 3).unwrap();
        let plan = TransferPlan::between(&a, &b).unwrap();
        let mut moved = 0;
        for p in a.partitions().iter() {
            moved += b
                .primaries(p)
                .iter()
                .filter(|n| !a.primaries(p).contains(n))
                .count();
        }
        assert_eq!(plan.len(), moved);
    }
}
