//! Prints the gossip figures: rounds to converge from a cold start, traffic
//! per node and round, failure detection time, and false positives under
//! jitter, all in virtual time over the in-memory network of the tests
//! (messages go through the real codec; bytes are encoded bytes).
//!
//! ```text
//! cargo run --release -p chorus-gossip --example convergence
//! ```
//!
//! Options: `--sizes 10,100,1000`, `--fanouts 1,2` (for the convergence
//! table), `--detect-nodes 24,100`, `--seeds 5` (runs per figure), and
//! overrides of the default configuration: `--fanout`,
//! `--acceptable-pause-ms`, `--min-std-dev-ms`, `--phi-threshold`.

#[path = "../tests/sim/mod.rs"]
mod sim;

use std::time::Duration;

use chorus_gossip::{Config, Notification};
use sim::{cold_start, round_target, Net, Sim};

struct Options {
    sizes: Vec<usize>,
    fanouts: Vec<usize>,
    detect_nodes: Vec<usize>,
    seeds: u64,
    config: Config,
}

fn numbers(value: &str) -> Vec<usize> {
    value
        .split(',')
        .map(|s| s.parse().expect("a comma-separated list of numbers"))
        .collect()
}

fn options() -> Options {
    let mut o = Options {
        sizes: vec![10, 100, 1000],
        fanouts: vec![1, 2],
        detect_nodes: vec![24, 100],
        seeds: 5,
        config: Config::default(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        let ms = || Duration::from_millis(value.parse().expect("milliseconds"));
        match pair[0].as_str() {
            "--sizes" => o.sizes = numbers(value),
            "--fanouts" => o.fanouts = numbers(value),
            "--detect-nodes" => o.detect_nodes = numbers(value),
            "--seeds" => o.seeds = value.parse().expect("a number"),
            "--fanout" => o.config.fanout = value.parse().expect("a number"),
            "--acceptable-pause-ms" => o.config.acceptable_pause = ms(),
            "--min-std-dev-ms" => o.config.phi_min_std_dev = ms(),
            "--phi-threshold" => o.config.phi_threshold = value.parse().expect("a number"),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn convergence(o: &Options, fanout: usize) {
    let config = Config {
        fanout,
        ..o.config.clone()
    };
    println!("\n## Convergence from a cold start, fanout {fanout}");
    println!(
        "(all nodes start within one interval knowing only the 3 seeds; a round is one interval)"
    );
    println!(
        "{:>6} {:>8} {:>7} {:>16} {:>10} {:>12} {:>11} {:>13}",
        "nodes",
        "log2(n)",
        "target",
        "rounds",
        "msgs/n/r",
        "bytes/n/r",
        "steady m/n/r",
        "steady b/n/r"
    );
    for &n in &o.sizes {
        let (log2, target) = round_target(n);
        let runs = if n >= 1000 { o.seeds.min(3) } else { o.seeds };
        let mut rounds = Vec::new();
        let mut traffic = [0.0f64; 4];
        for seed in 0..runs {
            let (r, mut sim) = cold_start(seed, n, config.clone(), Net::default(), 200);
            let r = r.expect("converged");
            rounds.push(r);
            let per = |x: u64, rounds: u64| x as f64 / n as f64 / rounds as f64;
            traffic[0] += per(sim.messages, r);
            traffic[1] += per(sim.bytes(), r);
            // Steady state: ten more rounds once everyone knows everyone.
            let (m0, b0) = (sim.messages, sim.bytes());
            sim.run_for(config.gossip_interval * 10);
            traffic[2] += per(sim.messages - m0, 10);
            traffic[3] += per(sim.bytes() - b0, 10);
        }
        rounds.sort_unstable();
        let k = runs as f64;
        println!(
            "{n:>6} {log2:>8.2} {target:>7} {:>16} {:>10.2} {:>12.0} {:>11.2} {:>13.0}",
            format!(
                "{}-{} (median {})",
                rounds[0],
                rounds[rounds.len() - 1],
                rounds[rounds.len() / 2]
            ),
            traffic[0] / k,
            traffic[1] / k,
            traffic[2] / k,
            traffic[3] / k,
        );
    }
}

fn detection(o: &Options, n: usize) {
    println!(
        "\n## Detection of a stopped node: {n} nodes, fanout {}, latency 2-5 ms, tick every 100 ms",
        o.config.fanout
    );
    let mut all = Vec::new();
    for seed in 0..o.seeds {
        let mut sim = Sim::new(100 + seed, n, 3, o.config.clone(), Net::default());
        sim.tick_every = Some(o.config.failure_check_interval);
        sim.run_until(Duration::from_secs(120));
        let stopped_at = sim.now;
        sim.stop(7);
        sim.run_for(Duration::from_secs(30));
        let times: Vec<f64> = sim
            .downs_of(7, stopped_at)
            .values()
            .map(|at| (*at - stopped_at).as_secs_f64())
            .collect();
        println!(
            "seed {seed}: reported down by {}/{} nodes, first {:.2} s, mean {:.2} s, last {:.2} s",
            times.len(),
            n - 1,
            times.iter().copied().fold(f64::INFINITY, f64::min),
            times.iter().sum::<f64>() / times.len().max(1) as f64,
            times.iter().copied().fold(0.0, f64::max),
        );
        all.extend(times);
    }
    all.sort_by(f64::total_cmp);
    println!(
        "all runs: mean {:.2} s, p99 {:.2} s, max {:.2} s after the stop",
        all.iter().sum::<f64>() / all.len().max(1) as f64,
        all[(all.len() * 99 / 100).min(all.len() - 1)],
        all[all.len() - 1]
    );
}

fn false_positives(o: &Options, n: usize) {
    let secs = 600;
    println!(
        "\n## False positives: {n} nodes, fanout {}, {secs} s, latency 5 ms + jitter up to 300 ms",
        o.config.fanout
    );
    let net = Net {
        latency: Duration::from_millis(5),
        jitter: Duration::from_millis(300),
        ..Net::default()
    };
    let mut total = 0;
    for seed in 0..o.seeds {
        let mut sim = Sim::new(200 + seed, n, 3, o.config.clone(), net.clone());
        sim.tick_every = Some(o.config.failure_check_interval);
        sim.run_until(Duration::from_secs(secs));
        let downs = sim
            .notifications
            .iter()
            .filter(|(_, _, n)| matches!(n, Notification::Down { .. }))
            .count();
        total += downs;
        println!("seed {seed}: {downs} live nodes reported down");
    }
    println!("total false positives: {total}");
}

fn main() {
    let o = options();
    let c = &o.config;
    println!(
        "defaults: gossip interval {:?}, fanout {}, max message {} B, phi threshold {}, \
         min std dev {:?}, acceptable pause {:?}, window {}",
        c.gossip_interval,
        c.fanout,
        c.max_message_bytes,
        c.phi_threshold,
        c.phi_min_std_dev,
        c.acceptable_pause,
        c.phi_window
    );
    for &fanout in &o.fanouts {
        convergence(&o, fanout);
    }
    for &n in &o.detect_nodes {
        detection(&o, n);
        false_positives(&o, n);
    }
}
