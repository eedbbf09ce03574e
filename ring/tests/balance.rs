//! The balance and movement targets, asserted on representative sizes.
//!
//! Targets (N = 3, equal weights): max/mean load ≤ 1.05 whenever P·N/n ≥ 32;
//! replicas moved ≤ 1.15 × the minimum when one node joins (the newcomer's
//! fair share P·N/(n+1)) or leaves (the leaver's replicas). These are
//! deterministic counts; the `balance` example prints the full table.

use chorus_ring::{Member, MemberChange, NodeId, Ring, TransferPlan};

const N: usize = 3;

fn node(i: u64) -> NodeId {
    NodeId::from_u64_pair(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i)
}

fn members(n: usize, zones: usize) -> Vec<Member> {
    (0..n as u64)
        .map(|i| Member::new(node(i), format!("zone-{}", i as usize % zones), 1))
        .collect()
}

struct Figures {
    max_over_mean: f64,
    min_over_mean: f64,
    join_over_min: f64,
    leave_over_min: f64,
}

fn measure(partitions: u32, n: usize, zones: usize) -> Figures {
    let members = members(n, zones);
    let ring = Ring::initial(&members, partitions, N).unwrap();
    let loads = ring.loads();
    let mean = (partitions as usize * N) as f64 / n as f64;

    let newcomer = Member::new(node(1_000_000), format!("zone-{}", n % zones), 1);
    let joined = ring.next(&[MemberChange::Join(newcomer)]).unwrap();
    let join_moved = TransferPlan::between(&ring, &joined).unwrap().len() as f64;
    let join_min = if zones == 1 {
        (partitions as usize * N) as f64 / (n + 1) as f64
    } else {
        // With zones, the newcomer's share is set by its zone.
        joined.load(node(1_000_000)).unwrap() as f64
    };

    let leaver = members[n / 2].id;
    let left = ring.next(&[MemberChange::Leave(leaver)]).unwrap();
    let leave_moved = TransferPlan::between(&ring, &left).unwrap().len() as f64;
    let leave_min = ring.load(leaver).unwrap() as f64;

    Figures {
        max_over_mean: *loads.iter().max().unwrap() as f64 / mean,
        min_over_mean: *loads.iter().min().unwrap() as f64 / mean,
        join_over_min: join_moved / join_min,
        leave_over_min: leave_moved / leave_min,
    }
}

fn assert_targets(partitions: u32, n: usize, zones: usize) {
    let f = measure(partitions, n, zones);
    let per_node = (partitions as usize * N) as f64 / n as f64;
    if per_node >= 32.0 {
        assert!(
            f.max_over_mean <= 1.05,
            "P={partitions} n={n}: max/mean {:.3}",
            f.max_over_mean
        );
        assert!(
            f.min_over_mean >= 0.95,
            "P={partitions} n={n}: min/mean {:.3}",
            f.min_over_mean
        );
    }
    assert!(
        f.join_over_min <= 1.15,
        "P={partitions} n={n}: join moved {:.3} × minimum",
        f.join_over_min
    );
    assert!(
        f.leave_over_min <= 1.15,
        "P={partitions} n={n}: leave moved {:.3} × minimum",
        f.leave_over_min
    );
}

#[test]
fn small_clusters_meet_the_targets() {
    for n in [4, 5, 8] {
        assert_targets(256, n, 1);
    }
}

#[test]
fn medium_clusters_meet_the_targets() {
    assert_targets(256, 16, 1);
    assert_targets(4096, 32, 1);
}

#[test]
fn large_clusters_meet_the_targets() {
    assert_targets(4096, 64, 1);
    // P·N/n = 3: balance is not a target, moves still are.
    assert_targets(256, 256, 1);
}

#[test]
fn equal_zones_meet_the_targets_and_stay_zone_diverse() {
    for (partitions, n) in [(256, 6), (256, 12), (4096, 24)] {
        assert_targets(partitions, n, 3);
        let ring = Ring::initial(&members(n, 3), partitions, N).unwrap();
        assert_eq!(ring.zone_limit(), 1);
    }
}

#[test]
fn growing_one_node_at_a_time_stays_balanced_and_moves_the_minimum() {
    // 3 → 16 nodes by single joins, each compared with the theoretical minimum.
    let partitions = 256u32;
    let total = partitions as usize * N;
    let mut ring = Ring::initial(&members(3, 1), partitions, N).unwrap();
    for n in 3..16u64 {
        let next = ring
            .next(&[MemberChange::Join(Member::new(node(n), "zone-0", 1))])
            .unwrap();
        let moved = TransferPlan::between(&ring, &next).unwrap().len() as f64;
        let minimum = total as f64 / (n + 1) as f64;
        assert!(
            moved <= 1.15 * minimum,
            "join of node {n}: {moved} moved, minimum {minimum:.1}"
        );
        let max = *next.loads().iter().max().unwrap();
        assert!(
            max <= total.div_ceil(n as usize + 1),
            "after join of node {n}: max load {max}"
        );
        ring = next;
    }
    // And back down by single leaves.
    for n in (3..16u64).rev() {
        let leaver = node(n);
        let next = ring.next(&[MemberChange::Leave(leaver)]).unwrap();
        let moved = TransferPlan::between(&ring, &next).unwrap().len();
        assert_eq!(
            moved,
            ring.load(leaver).unwrap(),
            "leave of node {n} moves exactly its replicas"
        );
        let max = *next.loads().iter().max().unwrap();
        assert!(
            max <= total.div_ceil(n as usize),
            "after leave of node {n}: max load {max}"
        );
        ring = next;
    }
}

#[test]
fn doubling_a_weight_moves_only_what_the_node_gains() {
    let ring = Ring::initial(&members(8, 1), 256, N).unwrap();
    let heavy = node(3);
    let next = ring
        .next(&[MemberChange::SetWeight {
            node: heavy,
            weight: 2,
        }])
        .unwrap();
    let before = ring.load(heavy).unwrap();
    let after = next.load(heavy).unwrap();
    // 2 / 9 of 768 replicas.
    assert!((170..=171).contains(&after), "{after}");
    let plan = TransferPlan::between(&ring, &next).unwrap();
    assert_eq!(plan.len(), after - before);
    assert!(plan.transfers().iter().all(|t| t.to == heavy));
}
