//! Key → preference list lookup cost.
//!
//! ```text
//! cargo bench -p chorus-ring --bench lookup
//! ```

use std::hint::black_box;
use std::time::Duration;

use chorus_ring::{key_hash, Member, NodeId, Ring};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn ring(partitions: u32, members: u64) -> Ring {
    let members: Vec<Member> = (0..members)
        .map(|i| {
            Member::new(
                NodeId::from_u64_pair(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i),
                "",
                1,
            )
        })
        .collect();
    Ring::initial(&members, partitions, 3).expect("valid ring")
}

/// Distinct keys looked up in turn (a power of two).
const KEYS: usize = 1024;

fn keys() -> Vec<Vec<u8>> {
    (0..KEYS)
        .map(|i| format!("user-{i:08}").into_bytes())
        .collect()
}

fn lookup(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("lookup");
    group.throughput(Throughput::Elements(1));

    group.bench_function("key_hash", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & (KEYS - 1);
            key_hash(black_box(b"users"), black_box(&keys[i]))
        })
    });

    for (partitions, members) in [(256, 16), (4096, 256)] {
        let ring = ring(partitions, members);
        group.bench_function(
            format!("preference_list_for_key/P={partitions}/n={members}"),
            |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) & (KEYS - 1);
                    let list =
                        ring.preference_list_for_key(black_box(b"users"), black_box(&keys[i]));
                    black_box(list.primaries()[0])
                })
            },
        );
    }

    let ring = ring(256, 16);
    group.bench_function("select/all_up/P=256/n=16", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & (KEYS - 1);
            let list = ring.preference_list_for_key(black_box(b"users"), black_box(&keys[i]));
            list.select(|_| true)
                .fold(0u128, |acc, t| acc ^ t.node().as_u128())
        })
    });
    let down = [ring.members()[0].id, ring.members()[5].id];
    group.bench_function("select/two_down/P=256/n=16", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & (KEYS - 1);
            let list = ring.preference_list_for_key(black_box(b"users"), black_box(&keys[i]));
            list.select(|n| !down.contains(&n))
                .fold(0u128, |acc, t| acc ^ t.node().as_u128())
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = lookup
}
criterion_main!(benches);
