//! The simulator's fault primitives one by one, and the nemesis driving
//! every kind of fault at once.
//!
//! A failing seed is a bug to fix: each test prints the command that
//! replays it (`CHORUS_SIM_SEED=<seed> cargo test -p chorus-tests --test
//! nemesis`).

use std::time::Duration;

use chorus_node::engine::ClientReply;
use chorus_tests::nemesis::{FaultKind, Nemesis};
use chorus_tests::sim::{default_shards, Sim, SimConfig};

/// The seeds each test runs with: `CHORUS_SIM_SEED` alone when set.
fn seeds(default: &[u64]) -> Vec<u64> {
    match std::env::var("CHORUS_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("CHORUS_SIM_SEED is a number")],
        Err(_) => default.to_vec(),
    }
}

/// Prints the seed and the command that replays it when a test panics.
struct Replay(&'static str, u64);

impl Drop for Replay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{} failed with seed {}; replay: CHORUS_SIM_SEED={} cargo test -p chorus-tests --test nemesis {}",
                self.0, self.1, self.1, self.0
            );
        }
    }
}

fn stable(config: SimConfig) -> Sim {
    let mut sim = Sim::new(config);
    sim.await_stable(Duration::from_secs(60));
    sim
}

/// Writes `value` to `key` through node `via` and reads it back through
/// node `read_via`, both at quorum; returns the values read.
fn write_then_read(
    sim: &mut Sim,
    via: usize,
    read_via: usize,
    key: &str,
    value: &str,
) -> Vec<String> {
    let put = sim.put(via, key, Some(value), None, &[]);
    sim.await_reply(put).expect("the write succeeds");
    let get = sim.get(read_via, key, &[]);
    Sim::values(&sim.await_reply(get).expect("the read succeeds"))
}

#[test]
fn clusters_of_three_to_seven_nodes_become_stable_and_serve() {
    for seed in seeds(&[1, 2]) {
        let _replay = Replay(
            "clusters_of_three_to_seven_nodes_become_stable_and_serve",
            seed,
        );
        for nodes in 3..=7 {
            let mut sim = stable(SimConfig {
                nodes,
                seed,
                ..SimConfig::default()
            });
            assert_eq!(sim.len(), nodes);
            assert_eq!(write_then_read(&mut sim, 0, nodes - 1, "k", "v"), ["v"]);
        }
    }
}

#[test]
fn a_partition_stops_frames_between_groups_and_heal_restores_them() {
    for seed in seeds(&[1, 2, 3]) {
        let _replay = Replay(
            "a_partition_stops_frames_between_groups_and_heal_restores_them",
            seed,
        );
        let mut sim = stable(SimConfig {
            seed,
            ..SimConfig::default()
        });
        sim.partition(&[vec![0, 1], vec![2, 3, 4]]);
        // Frames already in flight across the cut are dropped on arrival.
        let across = |sim: &Sim| {
            [0, 1]
                .iter()
                .flat_map(|&a| {
                    [2, 3, 4].map(|b| sim.delivered_between(a, b) + sim.delivered_between(b, a))
                })
                .sum::<u64>()
        };
        let before = across(&sim);
        let within = sim.delivered_between(2, 3) + sim.delivered_between(0, 1);
        sim.run_until(
            Duration::from_secs(60),
            "each side sees the other down",
            |sim| {
                [0, 1].iter().all(|&a| {
                    [2, 3, 4]
                        .iter()
                        .all(|&b| !sim.sees_up(a, b) && !sim.sees_up(b, a))
                })
            },
        );
        assert_eq!(across(&sim), before, "no frame crossed the partition");
        assert!(sim.delivered_between(2, 3) + sim.delivered_between(0, 1) > within);
        assert!(sim.cut > 0);
        assert!(
            sim.sees_up(0, 1) && sim.sees_up(2, 4),
            "each side sees its own up"
        );

        sim.heal();
        sim.await_stable(Duration::from_secs(60));
        assert!(across(&sim) > before, "frames cross again after the heal");
        assert_eq!(write_then_read(&mut sim, 0, 4, "k", "v"), ["v"]);
    }
}

#[test]
fn a_one_way_cut_and_a_bridge_cut_only_what_they_name() {
    for seed in seeds(&[1, 2, 3]) {
        let _replay = Replay("a_one_way_cut_and_a_bridge_cut_only_what_they_name", seed);
        let mut sim = stable(SimConfig {
            seed,
            ..SimConfig::default()
        });
        // One way: 0 no longer reaches 1, 1 still reaches 0.
        sim.block(0, 1);
        let (to, back) = (sim.delivered_between(0, 1), sim.delivered_between(1, 0));
        // Gossip picks its peers at random, so node 1 may leave 0 alone
        // for a while (seed 316: ten seconds): wait for its next frame.
        sim.run_for(Duration::from_secs(10));
        for _ in 0..50 {
            if sim.delivered_between(1, 0) > back {
                break;
            }
            sim.run_for(Duration::from_secs(1));
        }
        assert_eq!(sim.delivered_between(0, 1), to);
        assert!(sim.delivered_between(1, 0) > back);
        sim.unblock(0, 1);
        // Likewise node 0 may pick other peers for a while after the heal
        // (seed 1417: six seconds; one is usual): wait for its next frame.
        sim.run_for(Duration::from_secs(5));
        for _ in 0..55 {
            if sim.delivered_between(0, 1) > to {
                break;
            }
            sim.run_for(Duration::from_secs(1));
        }
        assert!(sim.delivered_between(0, 1) > to);

        // A bridge: {0, 1} and {3, 4} do not reach each other; 2 reaches all.
        sim.bridge(&[0, 1], 2, &[3, 4]);
        let halves = |sim: &Sim| {
            [0, 1]
                .iter()
                .flat_map(|&a| {
                    [3, 4].map(|b| sim.delivered_between(a, b) + sim.delivered_between(b, a))
                })
                .sum::<u64>()
        };
        let before = halves(&sim);
        let middle = sim.delivered_between(2, 0) + sim.delivered_between(4, 2);
        sim.run_for(Duration::from_secs(10));
        assert_eq!(halves(&sim), before);
        assert!(sim.delivered_between(2, 0) + sim.delivered_between(4, 2) > middle);
        assert!(sim.sees_up(2, 0) && sim.sees_up(2, 4));
        sim.heal();
        sim.await_stable(Duration::from_secs(60));
    }
}

#[test]
fn a_paused_node_handles_what_reached_it_after_it_resumes() {
    for seed in seeds(&[1, 2, 3]) {
        let _replay = Replay(
            "a_paused_node_handles_what_reached_it_after_it_resumes",
            seed,
        );
        let mut sim = stable(SimConfig {
            seed,
            ..SimConfig::default()
        });
        sim.pause(4);
        let to_paused = |sim: &Sim| (0..4).map(|a| sim.delivered_between(a, 4)).sum::<u64>();
        let before = to_paused(&sim);
        // A client request to the paused node waits, as in a socket buffer.
        let get = sim.get(4, "k", &[]);
        sim.run_until(Duration::from_secs(60), "its peers see it down", |sim| {
            (0..4).all(|i| !sim.sees_up(i, 4))
        });
        assert_eq!(to_paused(&sim), before, "a paused node handles nothing");
        assert!(sim.held > 0, "frames to it waited");
        assert!(sim.reply(get).is_none(), "nor does it answer");

        let held = sim.held;
        sim.resume(4);
        assert!(
            to_paused(&sim) >= before + held,
            "what waited is handled on resume"
        );
        sim.await_stable(Duration::from_secs(60));
        let reply = sim.await_reply(get);
        assert!(reply.is_ok(), "the waiting read was answered: {reply:?}");
        assert_eq!(write_then_read(&mut sim, 4, 0, "k", "v"), ["v"]);
    }
}

#[test]
fn drift_moves_the_wall_clock_and_jumps_move_it_both_ways_but_never_the_monotonic_one() {
    let mut sim = stable(SimConfig::default());
    let wall = |sim: &Sim, i| sim.now_at(i).wall_ms as i64;
    sim.drift_clock(0, 100_000); // 10 % fast
    sim.drift_clock(1, -100_000); // 10 % slow
    let start = (wall(&sim, 0), wall(&sim, 1), wall(&sim, 2));
    sim.run_for(Duration::from_secs(10));
    let moved = (
        wall(&sim, 0) - start.0,
        wall(&sim, 1) - start.1,
        wall(&sim, 2) - start.2,
    );
    // Node 2's clock is true; run_for may overshoot by a step.
    assert!((10_000..=10_200).contains(&moved.2), "true: {moved:?}");
    assert!((moved.0 - moved.2 * 11 / 10).abs() <= 2, "fast: {moved:?}");
    assert!((moved.1 - moved.2 * 9 / 10).abs() <= 2, "slow: {moved:?}");
    let built = sim.drift_clock(0, 0);
    assert!((moved.0 - moved.2 - built).abs() <= 2, "{built} {moved:?}");
    assert_eq!(
        sim.clock_offset_ms(0),
        built,
        "the offset stays once drift stops"
    );

    let mono = sim.now_at(2).mono;
    let before = wall(&sim, 2);
    sim.jump_clock(2, -3_000);
    assert_eq!(wall(&sim, 2), before - 3_000);
    assert_eq!(
        sim.now_at(2).mono,
        mono,
        "the monotonic clock does not jump"
    );
    // A node whose clock went back still writes and reads.
    assert_eq!(write_then_read(&mut sim, 2, 2, "k", "v"), ["v"]);
    sim.jump_clock(2, 4_000);
    assert_eq!(write_then_read(&mut sim, 2, 1, "k2", "w"), ["w"]);
}

#[test]
fn duplicated_frames_are_delivered_twice_and_change_nothing() {
    for seed in seeds(&[1, 2, 3]) {
        let _replay = Replay(
            "duplicated_frames_are_delivered_twice_and_change_nothing",
            seed,
        );
        let mut sim = stable(SimConfig {
            seed,
            duplicate: 0.9,
            ..SimConfig::default()
        });
        let delivered = sim.delivered;
        sim.run_for(Duration::from_secs(5));
        assert!(sim.duplicated > 0);
        assert!(sim.delivered - delivered > sim.duplicated / 2);
        // Every node coordinates or forwards writes of every key: each
        // write still adds exactly one version.
        for (i, key) in ["a", "b", "c", "d", "e", "f"].into_iter().enumerate() {
            let n = sim.len();
            let via = i % n;
            assert_eq!(
                write_then_read(&mut sim, via, (via + 1) % n, key, "1"),
                ["1"]
            );
            let read = sim.get(via, key, &[("r", "all")]);
            let read = sim.await_reply(read).expect("the read succeeds");
            let put = sim.put(
                via,
                key,
                Some("2"),
                Some(Sim::context(&read)),
                &[("w", "all")],
            );
            sim.await_reply(put).expect("the write succeeds");
            let get = sim.get((via + 2) % n, key, &[("r", "all")]);
            let reply = sim.await_reply(get).expect("the read succeeds");
            assert_eq!(
                Sim::values(&reply),
                ["2"],
                "key {key}: one write, one version"
            );
        }
    }
}

#[test]
fn frames_on_one_link_overtake_each_other() {
    let mut sim = stable(SimConfig {
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(40),
        ..SimConfig::default()
    });
    for i in 0..20 {
        let put = sim.put(i % 5, &format!("k{i}"), Some("v"), None, &[]);
        sim.await_reply(put).expect("the write succeeds");
    }
    assert!(sim.reordered > 0);
}

#[test]
fn buggify_sites_fire_in_the_engine_and_the_cluster_recovers_once_they_stop() {
    for seed in seeds(&[1, 2, 3]) {
        let _replay = Replay(
            "buggify_sites_fire_in_the_engine_and_the_cluster_recovers_once_they_stop",
            seed,
        );
        let mut sim = stable(SimConfig {
            seed,
            ..SimConfig::default()
        });
        for i in 0..sim.len() {
            sim.buggify(i, true);
        }
        // Each site is active for a run with probability 1/2 on each node
        // (see `chorus_node::buggify`), so a seed can leave every site the
        // traffic reaches often switched off on every node and only rare
        // ones on (seed 4324: no site fired in 100 rounds). The rounds go
        // on until one fires; 2,000 of them evaluate every frequent site
        // on every node hundreds of times.
        let fired_total = |sim: &Sim| -> u64 { (0..sim.len()).map(|i| sim.buggify_fired(i)).sum() };
        let mut answered = 0;
        for round in 0..2_000 {
            if round >= 100 && fired_total(&sim) > 0 {
                break;
            }
            let key = format!("k{}", round % 10);
            let via = round % sim.len();
            let put = sim.put(via, &key, Some("v"), None, &[("timeout", "1000")]);
            answered += usize::from(sim.await_reply(put).is_ok());
            let get = sim.get(via, &key, &[("timeout", "1000")]);
            let _ = sim.await_reply(get);
        }
        let active: Vec<usize> = (0..sim.len()).map(|i| sim.buggify_active(i)).collect();
        assert!(
            fired_total(&sim) > 0,
            "some site fired (sites drawn active per node: {active:?})"
        );
        assert!(answered > 0, "writes still succeed");
        for i in 0..sim.len() {
            sim.buggify(i, false);
        }
        sim.run_for(Duration::from_secs(10));
        sim.await_stable(Duration::from_secs(60));
        assert_eq!(write_then_read(&mut sim, 0, 3, "after", "v"), ["v"]);
    }
}

#[test]
fn fault_kinds_parse_from_their_names() {
    for kind in FaultKind::ALL {
        assert_eq!(kind.to_string().parse::<FaultKind>(), Ok(kind));
    }
    assert_eq!(
        FaultKind::parse_list("crash, pause,crash").unwrap(),
        [FaultKind::Crash, FaultKind::Pause]
    );
    assert_eq!(FaultKind::parse_list("all").unwrap(), FaultKind::ALL);
    let error = FaultKind::parse_list("crash,meteor").unwrap_err();
    assert!(error.to_string().contains("meteor"), "{error}");
}

/// Runs a small write load on a cluster under every kind of fault for two
/// minutes, heals, and checks the cluster serves again. Returns the trace
/// hash and the nemesis.
fn under_every_fault(seed: u64, shards: usize) -> (u64, Nemesis) {
    let mut sim = stable(SimConfig {
        seed,
        shards,
        ..SimConfig::default()
    });
    let mut nemesis = Nemesis::new(&FaultKind::ALL, seed);
    let until = sim.now().mono + Duration::from_secs(120);
    let mut writes = 0;
    while sim.now().mono < until {
        nemesis.step(&mut sim);
        let running: Vec<usize> = (0..sim.len()).filter(|&i| sim.is_running(i)).collect();
        let via = running[sim.random_below(running.len())];
        let key = format!("k{}", sim.random_below(8));
        sim.put(
            via,
            &key,
            Some(&format!("v{writes}")),
            None,
            &[("timeout", "1000")],
        );
        writes += 1;
        let pause = 100 + sim.random_below(400) as u64;
        sim.run_for(Duration::from_millis(pause));
    }
    nemesis.heal(&mut sim);
    assert!(nemesis.running().is_empty());
    sim.await_stable(Duration::from_secs(120));
    for i in 0..sim.len() {
        assert_eq!(sim.clock_offset_ms(i), 0, "node {i}'s clock is back");
    }
    // Writes still on their way (frames on a link that was slow, hints on
    // fallbacks) reach the primaries; until then a write made now is
    // rightly concurrent with them.
    sim.run_for(Duration::from_secs(20));
    sim.run_until(Duration::from_secs(120), "every hint delivered", |sim| {
        sim.pending_hints() == 0
    });
    sim.await_stable(Duration::from_secs(120));
    for key in 0..8 {
        let key = format!("k{key}");
        let get = sim.get(0, &key, &[("r", "all")]);
        let reply = sim.await_reply(get).expect("the healed cluster reads");
        let ClientReply::Read(_) = reply else {
            panic!("a read answers with a read reply");
        };
        let put = sim.put(
            1,
            &key,
            Some("final"),
            Some(Sim::context(&reply)),
            &[("w", "all")],
        );
        sim.await_reply(put).expect("the healed cluster writes");
        let get = sim.get(2, &key, &[("r", "all")]);
        let reply = sim.await_reply(get).expect("the healed cluster reads");
        assert_eq!(Sim::values(&reply), ["final"], "{key}");
    }
    (sim.trace_hash(), nemesis)
}

#[test]
fn every_fault_kind_replays_from_its_seed() {
    for seed in seeds(&[1, 2]) {
        let _replay = Replay("every_fault_kind_replays_from_its_seed", seed);
        let (hash, nemesis) = under_every_fault(seed, default_shards());
        let (again, replayed) = under_every_fault(seed, default_shards());
        assert_eq!(hash, again, "one seed, one run");
        assert_eq!(nemesis.log(), replayed.log());
        for kind in FaultKind::ALL {
            assert!(
                nemesis.injected().get(&kind).copied().unwrap_or(0) > 0,
                "{kind} was injected: {:?}",
                nemesis.injected()
            );
        }
        let (other, _) = under_every_fault(seed + 1000, default_shards());
        assert_ne!(hash, other, "another seed, another run");
    }
}

/// Every kind of fault at once on nodes whose partitions are split between
/// two shards: the healed cluster serves every key again.
#[test]
fn every_fault_kind_with_two_shards_leaves_a_cluster_that_serves() {
    for seed in seeds(&[3]) {
        let _replay = Replay(
            "every_fault_kind_with_two_shards_leaves_a_cluster_that_serves",
            seed,
        );
        let (_, nemesis) = under_every_fault(seed, 2);
        for kind in FaultKind::ALL {
            assert!(
                nemesis.injected().get(&kind).copied().unwrap_or(0) > 0,
                "{kind} was injected: {:?}",
                nemesis.injected()
            );
        }
    }
}
