//! Cold-start convergence of the member set, in gossip rounds.

mod sim;

use chorus_gossip::Config;
use sim::{cold_start, round_target, Net};

fn converges_within_target(n: usize, seed: u64, encode: bool) -> u64 {
    let (log2, target) = round_target(n);
    let net = Net {
        encode,
        ..Net::default()
    };
    // The target is stated for the thinnest gossip: one live peer per round.
    let config = Config {
        fanout: 1,
        ..Config::default()
    };
    let (rounds, sim) = cold_start(seed, n, config, net, target + 20);
    let rounds =
        rounds.unwrap_or_else(|| panic!("{n} nodes did not converge in {} rounds", target + 20));
    let per_node_round = |x: u64| x as f64 / n as f64 / rounds as f64;
    println!(
        "n={n:5} seed={seed} rounds={rounds:3} log2(n)={log2:5.2} target(2*log2(n)+5)={target:3} \
         messages/node/round={:.2} bytes/node/round={:.0}",
        per_node_round(sim.messages),
        per_node_round(sim.bytes())
    );
    assert!(
        rounds <= target,
        "{n} nodes converged in {rounds} rounds, over the target of {target}"
    );
    rounds
}

#[test]
fn ten_nodes_converge_within_two_log2_n_plus_five_rounds() {
    converges_within_target(10, 1, true);
}

#[test]
fn a_hundred_nodes_converge_within_two_log2_n_plus_five_rounds() {
    converges_within_target(100, 2, true);
}

#[test]
fn a_thousand_nodes_converge_within_two_log2_n_plus_five_rounds() {
    // Messages travel as values (with their exact encoded size counted) to
    // keep this fast in debug builds; the codec is exercised by the others.
    converges_within_target(1000, 3, false);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = cold_start(9, 30, Config::default(), Net::default(), 40);
    let b = cold_start(9, 30, Config::default(), Net::default(), 40);
    assert_eq!(a.0, b.0);
    assert_eq!((a.1.messages, a.1.bytes()), (b.1.messages, b.1.bytes()));
    assert_eq!(a.1.notifications, b.1.notifications);
    let c = cold_start(10, 30, Config::default(), Net::default(), 40);
    assert_ne!(
        (a.1.messages, a.1.bytes()),
        (c.1.messages, c.1.bytes()),
        "another seed should give another run"
    );
}
