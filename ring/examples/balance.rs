//! Prints how evenly rings spread replicas and how many replicas move when
//! one node joins or leaves, next to the theoretical minimum.
//!
//! ```text
//! cargo run --release -p chorus-ring --example balance
//! ```
//!
//! For P = 256 and 4096, N = 3 and n equal-weight members in one zone:
//! `max/mean` and `min/mean` of the replicas per member; `join` the replicas
//! moved when a member joins against the newcomer's fair share P·N/(n+1);
//! `leave` the replicas moved when a member leaves against the replicas it
//! held. A second table does the same with members spread evenly over 3
//! zones, where the zone rule (one replica of a partition per zone) decides
//! each zone's share. `build ms` is the time to build the initial ring.

// A program that prints figures: it times itself.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use chorus_ring::{Member, MemberChange, NodeId, Ring, TransferPlan};

const REPLICAS: usize = 3;
const SIZES: [usize; 8] = [3, 4, 5, 8, 16, 32, 64, 256];
const ZONED_SIZES: [usize; 8] = [3, 6, 9, 12, 24, 48, 96, 255];
const ZONES: usize = 3;

fn node_id(i: u64) -> NodeId {
    // Spread ids over the id space so that id order is unrelated to creation order.
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    NodeId::from_u64_pair(z ^ (z >> 31), i)
}

fn ratio(x: f64, y: f64) -> String {
    format!("{:.3}", x / y)
}

fn main() {
    println!("N = {REPLICAS}, equal weights, one zone");
    println!("join min = P·N/(n+1), the newcomer's fair share; leave min = the leaver's replicas");
    header();
    for partitions in [256u32, 4096] {
        for n in SIZES {
            row(partitions, n, 1);
        }
    }
    println!();
    println!("N = {REPLICAS}, equal weights, {ZONES} zones of equal size (member i in zone i mod {ZONES})");
    println!("join min = the newcomer's share in the new ring (its zone's share split over one more node)");
    header();
    for partitions in [256u32, 4096] {
        for n in ZONED_SIZES {
            row(partitions, n, ZONES);
        }
    }
}

fn header() {
    println!(
        "{:>5} {:>4} {:>8} {:>8} {:>8} | {:>6} {:>8} {:>6} | {:>6} {:>6} {:>6} | {:>8}",
        "P",
        "n",
        "P·N/n",
        "max/mean",
        "min/mean",
        "join",
        "min",
        "ratio",
        "leave",
        "min",
        "ratio",
        "build ms"
    );
}

fn row(partitions: u32, n: usize, zones: usize) {
    let members: Vec<Member> = (0..n as u64)
        .map(|i| Member::new(node_id(i), format!("zone-{}", i as usize % zones), 1))
        .collect();
    let started = Instant::now();
    let ring = Ring::initial(&members, partitions, REPLICAS).expect("valid ring");
    let build_ms = started.elapsed().as_secs_f64() * 1e3;

    let loads = ring.loads();
    let mean = (partitions as usize * REPLICAS) as f64 / n as f64;
    let max = *loads.iter().max().unwrap() as f64;
    let min = *loads.iter().min().unwrap() as f64;

    let newcomer = Member::new(node_id(10_000), format!("zone-{}", n % zones), 1);
    let joined = ring
        .next(&[MemberChange::Join(newcomer.clone())])
        .expect("join");
    let join_moved = TransferPlan::between(&ring, &joined).unwrap().len();
    let join_min = if zones == 1 {
        (partitions as usize * REPLICAS) as f64 / (n + 1) as f64
    } else {
        joined.load(newcomer.id).unwrap() as f64
    };

    let leave = if n > REPLICAS {
        let leaver = members[n / 2].id;
        let left = ring.next(&[MemberChange::Leave(leaver)]).expect("leave");
        let moved = TransferPlan::between(&ring, &left).unwrap().len();
        let minimum = ring.load(leaver).unwrap();
        format!(
            "{:>6} {:>6} {:>6}",
            moved,
            minimum,
            ratio(moved as f64, minimum as f64)
        )
    } else {
        format!("{:>6} {:>6} {:>6}", "-", "-", "-")
    };

    println!(
        "{:>5} {:>4} {:>8.1} {:>8} {:>8} | {:>6} {:>8.1} {:>6} | {} | {:>8.1}",
        partitions,
        n,
        mean,
        ratio(max, mean),
        ratio(min, mean),
        join_moved,
        join_min,
        ratio(join_moved as f64, join_min),
        leave,
        build_ms
    );
}
