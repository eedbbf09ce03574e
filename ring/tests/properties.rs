//! Property tests of the ring's guarantees over random member sets and changes.

use std::collections::{BTreeMap, BTreeSet};

use chorus_ring::{Member, MemberChange, NodeId, PartitionId, Ring, Target, TransferPlan};
use proptest::prelude::*;
use proptest::sample::Index;

const CASES: u32 = 256;

/// A random cluster: P, N and members with random ids, zones and weights.
#[derive(Debug, Clone)]
struct Cluster {
    partitions: u32,
    replicas: usize,
    members: Vec<Member>,
}

fn member(id: u128, zone: u8, weight: u32) -> Member {
    Member::new(NodeId::from_u128(id), format!("zone-{zone}"), weight)
}

/// Members with distinct random ids, zones drawn from `zones` names and weights up to `max_weight`.
fn members(
    count: std::ops::RangeInclusive<usize>,
    zones: u8,
    max_weight: u32,
) -> impl Strategy<Value = Vec<Member>> {
    prop::collection::btree_set(any::<u128>(), count).prop_flat_map(move |ids| {
        let n = ids.len();
        (
            Just(ids),
            prop::collection::vec((0..zones, 1..=max_weight), n),
        )
            .prop_map(|(ids, attrs)| {
                ids.into_iter()
                    .zip(attrs)
                    .map(|(id, (z, w))| member(id, z, w))
                    .collect()
            })
    })
}

fn cluster(zones: u8, max_weight: u32) -> impl Strategy<Value = Cluster> {
    (prop::sample::select(vec![8u32, 16, 32, 64]), 1usize..=4).prop_flat_map(
        move |(partitions, replicas)| {
            members(replicas..=replicas + 9, zones, max_weight).prop_map(move |members| Cluster {
                partitions,
                replicas,
                members,
            })
        },
    )
}

fn zone_count(ring: &Ring) -> usize {
    ring.members()
        .iter()
        .map(|m| m.zone.as_str())
        .collect::<BTreeSet<_>>()
        .len()
}

/// Every invariant a ring promises about its placement and preference lists.
fn assert_invariants(ring: &Ring) {
    let zone_of: BTreeMap<NodeId, &str> = ring
        .members()
        .iter()
        .map(|m| (m.id, m.zone.as_str()))
        .collect();
    let n = ring.replicas();
    let zones = zone_count(ring);
    let expected_fallbacks = (ring.members().len() - n).min(2 * n);
    for p in ring.partitions().iter() {
        let list = ring.preference_list(p);
        let primaries = list.primaries();
        assert_eq!(primaries.len(), n, "{p} has N primaries");
        let distinct: BTreeSet<_> = list.nodes().iter().collect();
        assert_eq!(
            distinct.len(),
            list.len(),
            "{p}: primaries and fallbacks are all distinct"
        );
        assert!(
            list.nodes().iter().all(|id| zone_of.contains_key(id)),
            "{p}: only members"
        );
        assert_eq!(list.fallbacks().len(), expected_fallbacks);
        let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
        for id in primaries {
            *per_zone.entry(zone_of[id]).or_default() += 1;
        }
        if zones >= n {
            assert_eq!(
                per_zone.len(),
                n,
                "{p}: with {zones} zones the primaries are in N distinct zones"
            );
        }
        assert!(
            per_zone.values().all(|&c| c <= ring.zone_limit()),
            "{p}: zone limit"
        );
        // The fallbacks start with zones the primaries do not use, when there are any.
        if let Some(first) = list.fallbacks().first() {
            let unused = zones > per_zone.len();
            assert_eq!(
                !per_zone.contains_key(zone_of[first]),
                unused,
                "{p}: first fallback is zone-diverse"
            );
        }
    }
    if zones >= n {
        assert_eq!(ring.zone_limit(), 1);
    }
}

fn load_of(ring: &Ring, id: NodeId) -> usize {
    ring.load(id).unwrap_or(0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn initial_rings_keep_every_invariant(c in cluster(5, 4)) {
        let ring = Ring::initial(&c.members, c.partitions, c.replicas).unwrap();
        assert_invariants(&ring);
        prop_assert_eq!(ring.loads().iter().sum::<usize>(), (c.partitions as usize) * c.replicas);
    }

    #[test]
    fn equal_weights_in_one_zone_balance_to_within_one_replica(c in cluster(1, 1)) {
        let ring = Ring::initial(&c.members, c.partitions, c.replicas).unwrap();
        let total = c.partitions as usize * c.replicas;
        let n = c.members.len();
        for load in ring.loads() {
            prop_assert!(load == total / n || load == total.div_ceil(n), "load {} of {} over {}", load, total, n);
        }
    }

    #[test]
    fn ownership_follows_weight(c in cluster(1, 6)) {
        // In one zone, a node's share is min(P, λ·weight): check it to within one replica.
        let ring = Ring::initial(&c.members, c.partitions, c.replicas).unwrap();
        let cap = c.partitions as f64;
        let mut total = (c.partitions as usize * c.replicas) as f64;
        let mut free: Vec<&Member> = c.members.iter().collect();
        let mut target: BTreeMap<NodeId, f64> = BTreeMap::new();
        free.sort_by_key(|m| std::cmp::Reverse(m.weight));
        while let Some(m) = free.first() {
            let weight: f64 = free.iter().map(|m| f64::from(m.weight)).sum();
            if total * f64::from(m.weight) / weight >= cap {
                target.insert(m.id, cap);
                total -= cap;
                free.remove(0);
            } else {
                for m in &free {
                    target.insert(m.id, total * f64::from(m.weight) / weight);
                }
                break;
            }
        }
        for (m, load) in ring.members().iter().zip(ring.loads()) {
            prop_assert!((load as f64 - target[&m.id]).abs() < 1.0 + 1e-9, "{} holds {} for a share of {}", m.id, load, target[&m.id]);
        }
    }

    #[test]
    fn member_order_does_not_matter(c in cluster(4, 3), seed in any::<u64>()) {
        let ring = Ring::initial(&c.members, c.partitions, c.replicas).unwrap();
        let mut shuffled = c.members.clone();
        shuffle(&mut shuffled, seed);
        let again = Ring::initial(&shuffled, c.partitions, c.replicas).unwrap();
        prop_assert_eq!(again.hash(), ring.hash());
        prop_assert_eq!(again, ring);
    }

    #[test]
    fn change_order_does_not_matter(c in cluster(3, 3), extra in members(1..=3, 3, 3), leave in any::<Index>(), seed in any::<u64>()) {
        let ring = Ring::initial(&c.members, c.partitions, c.replicas).unwrap();
        let leaver = leave.get(&c.members).id;
        let mut changes: Vec<MemberChange> = extra
            .into_iter()
            .filter(|m| ring.member(m.id).is_none())
            .map(MemberChange::Join)
            .collect();
        changes.push(MemberChange::Leave(leaver));
        let weight_of = c.members.iter().find(|m| m.id != leaver).map(|m| m.id);
        if let Some(node) = weight_of {
            changes.push(MemberChange::SetWeight { node, weight: 7 });
        }
        let Ok(next) = ring.next(&changes) else {
            // Leaving would drop below N members: refused whatever the order.
            shuffle(&mut changes, seed);
            prop_assert!(ring.next(&changes).is_err());
            return Ok(());
        };
        shuffle(&mut changes, seed);
        prop_assert_eq!(&ring.next(&changes).unwrap(), &next);
        assert_invariants(&next);
    }

    #[test]
    fn empty_change_returns_the_same_ring(c in cluster(4, 3)) {
        let ring = Ring::initial(&c.members, c.partitions, c.replicas).unwrap();
        let next = ring.next(&[]).unwrap();
        prop_assert_eq!(next.version(), ring.version());
        prop_assert_eq!(next.hash(), ring.hash());
        prop_assert_eq!(&next, &ring);
        let mut same = c.members.clone();
        same.reverse();
        prop_assert_eq!(&ring.rebalance(&same).unwrap(), &ring);
    }

    #[test]
    fn a_join_moves_only_the_newcomers_share(c in cluster(1, 1), id in any::<u128>()) {
        prop_assume!(c.members.iter().all(|m| m.id != NodeId::from_u128(id)));
        let ring = Ring::initial(&c.members, c.partitions, c.replicas).unwrap();
        let newcomer = member(id, 0, 1);
        let next = ring.next(&[MemberChange::Join(newcomer.clone())]).unwrap();
        assert_invariants(&next);
        let plan = TransferPlan::between(&ring, &next).unwrap();
        let share = (c.partitions as usize * c.replicas) / (c.members.len() + 1);
        let received = load_of(&next, newcomer.id);
        prop_assert!(received == share || received == share + 1);
        prop_assert_eq!(plan.len(), received, "only the newcomer receives");
        prop_assert!(plan.transfers().iter().all(|t| t.to == newcomer.id));
    }

    #[test]
    fn a_leave_moves_the_leavers_replicas_and_little_else(c in cluster(1, 1), leave in any::<Index>()) {
        prop_assume!(c.members.len() > c.replicas);
        let ring = Ring::initial(&c.members, c.partitions, c.replicas).unwrap();
        let leaver = leave.get(&c.members).id;
        let next = ring.next(&[MemberChange::Leave(leaver)]).unwrap();
        assert_invariants(&next);
        let plan = TransferPlan::between(&ring, &next).unwrap();
        let held = ring.load(leaver).unwrap();
        prop_assert_eq!(plan.outgoing(leaver).count(), held, "every replica of the leaver moves");
        // A node whose new share needs more replicas than the leaver's partitions
        // without it can give must take the rest from elsewhere: those moves are forced.
        let leavers: Vec<PartitionId> = ring.partitions_of(leaver).collect();
        let mut forced = 0;
        for m in next.members() {
            let gain = load_of(&next, m.id).saturating_sub(load_of(&ring, m.id));
            let open = leavers.iter().filter(|&&p| !ring.primaries(p).contains(&m.id)).count();
            forced += gain.saturating_sub(open);
        }
        // Joint obstructions (two nodes that can only take the same partition)
        // are not counted in `forced`; they cost at most one more move in practice.
        prop_assert!(plan.len() <= held + forced + 1, "moved {} for {} replicas, {} forced", plan.len(), held, forced);
        let total = c.partitions as usize * c.replicas;
        let n = c.members.len() - 1;
        for load in next.loads() {
            prop_assert!(load == total / n || load == total.div_ceil(n));
        }
    }

    #[test]
    fn random_change_sequences_keep_every_invariant(
        c in cluster(4, 4),
        steps in prop::collection::vec((0u8..4, any::<Index>(), any::<u128>(), 0u8..4, 1u32..=5), 1..6),
    ) {
        let mut ring = Ring::initial(&c.members, c.partitions, c.replicas).unwrap();
        for (kind, pick, id, zone, weight) in steps {
            let target = pick.get(ring.members()).id;
            let change = match kind {
                0 => MemberChange::Join(member(id, zone, weight)),
                1 => MemberChange::Leave(target),
                2 => MemberChange::SetWeight { node: target, weight },
                _ => MemberChange::SetZone { node: target, zone: format!("zone-{zone}") },
            };
            match ring.next(std::slice::from_ref(&change)) {
                Ok(next) => {
                    assert_invariants(&next);
                    // The plan accounts for every load change.
                    let plan = TransferPlan::between(&ring, &next).unwrap();
                    for m in next.members() {
                        let gained = plan.incoming(m.id).count() as i64 - plan.outgoing(m.id).count() as i64;
                        prop_assert_eq!(gained, load_of(&next, m.id) as i64 - load_of(&ring, m.id) as i64);
                    }
                    ring = next;
                }
                Err(_) => {
                    // Refused changes: joining twice, leaving below N members.
                    let refused = match &change {
                        MemberChange::Join(m) => ring.member(m.id).is_some(),
                        MemberChange::Leave(_) => ring.members().len() == c.replicas,
                        _ => false,
                    };
                    prop_assert!(refused, "{:?} was refused", change);
                }
            }
        }
    }

    #[test]
    fn encoding_round_trips_with_the_same_hash(c in cluster(4, 4)) {
        let ring = Ring::initial(&c.members, c.partitions, c.replicas).unwrap();
        let bytes = rmp_serde::to_vec(&ring).unwrap();
        let back: Ring = rmp_serde::from_slice(&bytes).unwrap();
        prop_assert_eq!(back.hash(), ring.hash());
        prop_assert_eq!(back.canonical_bytes(), ring.canonical_bytes());
        prop_assert_eq!(back, ring);
    }

    #[test]
    fn transfer_plans_turn_the_old_ring_into_the_new(c in cluster(3, 3), extra in members(1..=2, 3, 3)) {
        let ring = Ring::initial(&c.members, c.partitions, c.replicas).unwrap();
        let changes: Vec<MemberChange> =
            extra.into_iter().filter(|m| ring.member(m.id).is_none()).map(MemberChange::Join).collect();
        let next = ring.next(&changes).unwrap();
        let plan = TransferPlan::between(&ring, &next).unwrap();
        let mut owners: BTreeMap<PartitionId, BTreeSet<NodeId>> =
            ring.partitions().iter().map(|p| (p, ring.primaries(p).iter().copied().collect())).collect();
        for t in plan.transfers() {
            let set = owners.get_mut(&t.partition).unwrap();
            prop_assert!(set.remove(&t.from), "sender holds the partition");
            prop_assert!(set.insert(t.to), "receiver did not");
        }
        for p in next.partitions().iter() {
            prop_assert_eq!(&owners[&p], &next.primaries(p).iter().copied().collect::<BTreeSet<_>>());
        }
    }

    #[test]
    fn select_takes_the_first_n_healthy_nodes(c in cluster(3, 2), key in any::<u64>(), up_bits in any::<u64>()) {
        let ring = Ring::initial(&c.members, c.partitions, c.replicas).unwrap();
        let list = ring.preference_list_for_key(b"bucket", &key.to_le_bytes());
        let up: BTreeSet<NodeId> = ring
            .members()
            .iter()
            .enumerate()
            .filter(|(i, _)| up_bits >> (i % 64) & 1 == 1)
            .map(|(_, m)| m.id)
            .collect();
        let chosen: Vec<Target> = list.select(|n| up.contains(&n)).collect();
        let up_in_list = list.nodes().iter().filter(|n| up.contains(n)).count();
        prop_assert_eq!(chosen.len(), up_in_list.min(c.replicas));
        // Reference: primaries that are up in order; down primaries take the next up fallback.
        let mut fallbacks = list.fallbacks().iter().filter(|n| up.contains(n));
        let mut expected = Vec::new();
        for &p in list.primaries() {
            if up.contains(&p) {
                expected.push(Target::Primary(p));
            } else if let Some(&f) = fallbacks.next() {
                expected.push(Target::Fallback { node: f, stands_in_for: p });
            }
        }
        prop_assert_eq!(&chosen, &expected);
        let nodes: BTreeSet<NodeId> = chosen.iter().map(Target::node).collect();
        prop_assert_eq!(nodes.len(), chosen.len(), "targets are distinct");
        for t in &chosen {
            prop_assert!(up.contains(&t.node()));
            if let Some(owner) = t.stands_in_for() {
                prop_assert!(list.is_primary(owner) && !up.contains(&owner));
                prop_assert!(!list.is_primary(t.node()));
            }
        }
    }
}

/// A Fisher–Yates shuffle driven by a seed, so failures replay.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = (seed >> 33) as usize % (i + 1);
        items.swap(i, j);
    }
}
