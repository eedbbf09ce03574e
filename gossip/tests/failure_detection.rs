//! Failure detection in virtual time: a stopped node is convicted by
//! everyone quickly; a live one is never convicted, not under jitter and not
//! across pauses shorter than the acceptable pause.

mod sim;

use std::time::Duration;

use chorus_gossip::{Config, Notification};
use sim::{Net, Sim};

const N: usize = 24;

fn cluster(seed: u64, net: Net) -> Sim {
    let config = Config::default();
    let mut sim = Sim::new(seed, N, 3, config.clone(), net);
    sim.tick_every = Some(config.failure_check_interval);
    sim
}

fn down_count(sim: &Sim) -> usize {
    sim.notifications
        .iter()
        .filter(|(_, _, n)| matches!(n, Notification::Down { .. }))
        .count()
}

#[test]
fn a_stopped_node_is_reported_down_by_every_other_node_within_ten_seconds() {
    let mut worst = Duration::ZERO;
    for seed in [11, 12] {
        let mut sim = cluster(seed, Net::default());
        // Step 1: run long enough for every window to fill with real intervals.
        sim.run_until(Duration::from_secs(120));
        assert!(sim.all_up(), "seed {seed}: not everyone up after warm-up");
        assert_eq!(
            down_count(&sim),
            0,
            "seed {seed}: false positive during warm-up"
        );

        // Step 2: node 7 stops.
        let victim = 7;
        let stopped_at = sim.now;
        sim.stop(victim);
        sim.run_for(Duration::from_secs(20));

        // Step 3: every other node convicted it, within 10 s.
        let downs = sim.downs_of(victim, stopped_at);
        let observers: Vec<usize> = (0..N).filter(|&i| i != victim).collect();
        for &i in &observers {
            let at = downs.get(&i).unwrap_or_else(|| {
                panic!("seed {seed}: node {i} never reported node {victim} down")
            });
            let took = *at - stopped_at;
            worst = worst.max(took);
            assert!(
                took <= Duration::from_secs(10),
                "seed {seed}: node {i} took {took:?} to report node {victim} down"
            );
        }
        let mean = downs
            .values()
            .map(|at| (*at - stopped_at).as_secs_f64())
            .sum::<f64>()
            / downs.len() as f64;
        println!(
            "seed {seed}: {} of {} nodes reported the stopped node down; mean {mean:.2} s, \
             slowest {:.2} s after it stopped",
            downs.len(),
            observers.len(),
            downs
                .values()
                .max()
                .map_or(0.0, |at| (*at - stopped_at).as_secs_f64()),
        );
        assert_eq!(
            down_count(&sim),
            observers.len(),
            "seed {seed}: only the stopped node may be reported down"
        );
    }
    println!(
        "slowest detection over all seeds: {:.2} s",
        worst.as_secs_f64()
    );
}

#[test]
fn no_live_node_is_reported_down_under_300_ms_of_jitter() {
    let net = Net {
        latency: Duration::from_millis(5),
        jitter: Duration::from_millis(300),
        ..Net::default()
    };
    let mut false_positives = 0;
    for seed in [21, 22] {
        let mut sim = cluster(seed, net.clone());
        sim.run_until(Duration::from_secs(300));
        assert!(sim.all_up(), "seed {seed}: not everyone up");
        let downs = down_count(&sim);
        println!(
            "seed {seed}: 300 s simulated, {N} nodes, jitter up to 300 ms: {downs} false positives"
        );
        false_positives += downs;
    }
    println!("false positives in total: {false_positives}");
    assert_eq!(false_positives, 0);
}

#[test]
fn a_pause_shorter_than_the_acceptable_pause_is_not_a_failure() {
    let mut sim = cluster(31, Net::default());
    sim.run_until(Duration::from_secs(60));
    // Node 4 freezes for 2.5 s four times (a GC pause): it neither ticks nor
    // answers, and its heartbeat stops.
    for _ in 0..4 {
        sim.pause(4, Duration::from_millis(2500));
        sim.run_for(Duration::from_secs(20));
    }
    assert_eq!(
        down_count(&sim),
        0,
        "a paused node was convicted, or convicted others"
    );
    assert!(sim.all_up());
}

#[test]
fn a_long_pause_of_this_node_is_not_held_against_its_peers() {
    let mut sim = cluster(32, Net::default());
    sim.run_until(Duration::from_secs(60));
    // Node 5 freezes for 20 s: the others rightly convict it; it must not
    // convict them when it wakes up to a 20 s gap since its last tick.
    sim.pause(5, Duration::from_secs(20));
    sim.run_for(Duration::from_secs(40));
    let by_paused = sim
        .notifications
        .iter()
        .filter(|(_, i, n)| *i == 5 && matches!(n, Notification::Down { .. }))
        .count();
    assert_eq!(by_paused, 0, "the paused node convicted its peers");
    let of_paused = sim.downs_of(5, Duration::from_secs(60));
    assert_eq!(
        of_paused.len(),
        N - 1,
        "everyone should have convicted the frozen node"
    );
    assert!(sim.all_up(), "the paused node should be back up everywhere");
}
