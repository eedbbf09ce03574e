//! Negative controls: deliberately unsafe behaviour that each checker must
//! catch. A checker that stays silent here could not fail, and its green
//! runs would prove nothing.
//!
//! Every control is deterministic (seeded simulations), and every one also
//! runs its safe twin where that is cheap, to show the violation comes from
//! the unsafe switch and not from the harness.

use std::collections::BTreeSet;
use std::time::Duration;

use chorus_node::engine::UnsafeControls;
use chorus_tests::campaign::{self, SimRun};
use chorus_tests::check::{self, Assumptions, Violation};
use chorus_tests::history::{Completion, History, Op, Options, Response};
use chorus_tests::nemesis::FaultKind;
use chorus_tests::sim::{Sim, SimConfig};
use chorus_tests::workload::{Consistency, Kind};

/// Runs seeds 1..=`seeds` of `base` with `controls` and returns the checkers
/// that reported violations.
fn checkers_that_bite(
    base: SimRun,
    controls: UnsafeControls,
    seeds: u64,
) -> BTreeSet<&'static str> {
    let mut caught = BTreeSet::new();
    for seed in 1..=seeds {
        let run = SimRun {
            seed,
            unsafe_controls: controls,
            ..base.clone()
        };
        caught.extend(campaign::run(&run).violations.iter().map(|v| v.checker));
        if !caught.is_empty() {
            break;
        }
    }
    caught
}

fn base(workload: Kind, consistency: Consistency, faults: Vec<FaultKind>) -> SimRun {
    SimRun {
        seed: 1,
        nodes: 3,
        workload,
        consistency,
        faults,
        processes: 4,
        operations: 200,
        keys: 2,
        unsafe_controls: UnsafeControls::default(),
    }
}

#[test]
fn last_writer_wins_by_wall_clock_is_caught() {
    let run = base(Kind::Blind, Consistency::Strict, vec![]);
    let controls = UnsafeControls {
        last_writer_wins: true,
        ..UnsafeControls::default()
    };
    let caught = checkers_that_bite(run.clone(), controls, 10);
    assert!(
        caught.contains("overwrite") || caught.contains("lost"),
        "caught only {caught:?}"
    );
    assert_eq!(campaign::run(&run).violations, Vec::<Violation>::new());
}

#[test]
fn a_write_reply_with_the_whole_stored_context_is_caught() {
    let run = base(Kind::SetFromWrites, Consistency::Strict, vec![]);
    let controls = UnsafeControls {
        whole_context_in_write_replies: true,
        ..UnsafeControls::default()
    };
    let caught = checkers_that_bite(run, controls, 10);
    assert!(
        caught.contains("overwrite") || caught.contains("lost"),
        "caught only {caught:?}"
    );
}

/// A key whose first primary is node 0.
fn key_led_by_node_0(sim: &Sim) -> String {
    (0..)
        .map(|i| format!("k{i}"))
        .find(|key| sim.primaries(key)[0] == 0)
        .expect("some key")
}

fn values(reply: &chorus_node::engine::ClientReply) -> Vec<String> {
    Sim::values(reply)
}

fn read_response(values: Vec<String>) -> Completion {
    Completion::Ok(Response {
        values,
        token: None,
        shows_siblings: true,
        timestamps: Vec::new(),
    })
}

fn options(pairs: &[(&str, &str)]) -> Options {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Sloppy-quorum reads during an isolation: the primaries that took a
/// write are cut off, fallbacks answer the read without it. Recorded as
/// the strict-quorum read it is not, the lost-write checker must report
/// it; recorded truthfully (no `pr`), it must not.
#[test]
fn sloppy_reads_during_an_isolation_are_caught_when_recorded_as_strict() {
    let mut sim = Sim::new(SimConfig {
        nodes: 5,
        seed: 11,
        ..SimConfig::default()
    });
    sim.await_stable(Duration::from_secs(60));
    let key = key_led_by_node_0(&sim);
    let primaries = sim.primaries(&key);
    let mut history = History::new(3);
    let strict = options(&[("w", "quorum"), ("pw", "quorum")]);
    let op = Op::Write {
        key: key.clone(),
        value: Some("v1".into()),
        context: None,
        return_body: false,
    };
    let id = history.invoke(0, primaries[0], op, strict, sim.now().mono);
    let client = sim.put(
        primaries[0],
        &key,
        Some("v1"),
        None,
        &[("w", "quorum"), ("pw", "quorum")],
    );
    sim.await_reply(client)
        .expect("a strict quorum acknowledges");
    history.complete(id, read_response(Vec::new()), sim.now().mono);
    // Cut off every primary: a sloppy quorum of the two other nodes
    // (fallbacks) answers reads without the write.
    for &primary in &primaries {
        sim.isolate(primary, true);
    }
    let reader = (0..5)
        .find(|i| !primaries.contains(i))
        .expect("a non-replica");
    sim.run_until(Duration::from_secs(60), "the isolation is noticed", |sim| {
        primaries.iter().all(|&p| !sim.sees_up(reader, p))
    });
    let mut caught = false;
    for attempt in 0..20 {
        let client = sim.get(reader, &key, &[("r", "quorum")]);
        let Ok(reply) = sim.await_reply(client) else {
            continue;
        };
        let shown = values(&reply);
        for (recorded, expect_violation) in [
            (options(&[("r", "quorum"), ("pr", "quorum")]), true),
            (options(&[("r", "quorum")]), false),
        ] {
            let mut h = history.clone();
            let read = h.invoke(
                1,
                reader,
                Op::Read { key: key.clone() },
                recorded,
                sim.now().mono,
            );
            h.complete(read, read_response(shown.clone()), sim.now().mono);
            let found = check::check_all(&h, &Assumptions::default());
            if !expect_violation {
                assert_eq!(found, Vec::<Violation>::new(), "attempt {attempt}");
            } else if found.iter().any(|v| v.checker == "lost") {
                caught = true;
            }
        }
        if caught {
            break;
        }
        sim.run_for(Duration::from_millis(100));
    }
    assert!(caught, "no sloppy read missed the write");
}

/// Node 0 has written before, so its store was synced once (a node syncs
/// when it first holds data) and later writes stay unsynced until
/// something syncs them: a power loss now loses them.
fn warmed_up(seed: u64) -> (Sim, String) {
    let mut sim = Sim::new(SimConfig {
        nodes: 3,
        seed,
        tune_engine: |config| {
            config.unsafe_controls.keep_actors_after_unclean_stop = KEEP_ACTORS.with(|k| k.get())
        },
        ..SimConfig::default()
    });
    sim.await_stable(Duration::from_secs(60));
    let key = key_led_by_node_0(&sim);
    // A write to another key of the same partition: the partition's actor
    // is in place (and synced) before the tests' own writes, so those
    // share no batch with a synced write that would make them durable too.
    let partition = |key: &str| {
        let ring = sim.engine(0).and_then(|e| e.ring()).expect("a ring");
        ring.partition_of(b"sim", key.as_bytes())
    };
    let warm_up = (0..)
        .map(|i| format!("warm-up-{i}"))
        .find(|other| partition(other) == partition(&key))
        .expect("some key");
    let client = sim.put(0, &warm_up, Some("w"), None, &[("w", "all")]);
    sim.await_reply(client)
        .expect("a write at w=all on a healthy cluster");
    (sim, key)
}

thread_local! {
    /// Whether [`warmed_up`] starts its engines with
    /// `keep_actors_after_unclean_stop` (the simulator takes a plain `fn`).
    static KEEP_ACTORS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Records a write through `node` and waits for its answer.
fn write(
    sim: &mut Sim,
    history: &mut History,
    node: usize,
    key: &str,
    value: &str,
    pairs: &[(&str, &str)],
) {
    let op = Op::Write {
        key: key.to_owned(),
        value: Some(value.to_owned()),
        context: None,
        return_body: false,
    };
    let id = history.invoke(0, node, op, options(pairs), sim.now().mono);
    let client = sim.put(node, key, Some(value), None, pairs);
    let completion = match sim.await_reply(client) {
        Ok(_) => read_response(Vec::new()),
        Err(e) => Completion::Info {
            code: e.code().to_owned(),
        },
    };
    history.complete(id, completion, sim.now().mono);
}

/// Records a final read of `key` at `r=all` through `node`.
fn final_read(sim: &mut Sim, history: &mut History, node: usize, key: &str) {
    let read = history.invoke(
        9,
        node,
        Op::Read {
            key: key.to_owned(),
        },
        options(&[("r", "all")]),
        sim.now().mono,
    );
    let client = sim.get(node, key, &[("r", "all")]);
    let shown = sim
        .await_reply(client)
        .map(|r| values(&r))
        .unwrap_or_default();
    history.complete(read, read_response(shown), sim.now().mono);
    history.mark_final(read);
}

/// `r=1,w=1` and a power loss before the write was replicated: the write
/// was acknowledged and is gone. The lost-write checkers, told (wrongly)
/// that no machine lost power, must report it; told the truth, they must
/// not.
#[test]
fn a_write_at_w_one_lost_with_its_only_replica_is_caught_when_the_checker_assumes_durability() {
    let (mut sim, key) = warmed_up(7);
    let mut history = History::new(3);
    // Node 0 is cut off: it acknowledges alone and nothing leaves it.
    sim.isolate(0, true);
    write(&mut sim, &mut history, 0, &key, "v1", &[("w", "one")]);
    assert!(history.entry(chorus_tests::history::OpId(0)).is_ok());
    let power_loss = sim.now().mono;
    sim.crash(0, true);
    sim.isolate(0, false);
    sim.restart(0);
    sim.await_stable(Duration::from_secs(60));
    final_read(&mut sim, &mut history, 1, &key);
    let assumed_durable = check::check_all(&history, &Assumptions::default());
    assert!(
        assumed_durable
            .iter()
            .any(|v| v.checker == "lost" || v.checker == "overwrite"),
        "the lost write went unnoticed: {assumed_durable:?}"
    );
    let truthful = check::check_all(
        &history,
        &Assumptions {
            power_losses: vec![power_loss],
        },
    );
    assert_eq!(truthful, Vec::<Violation>::new());
}

/// A node that lost unsynced writes in a power loss and kept its actors
/// mints a dot again that its peers already hold for another value: the
/// new acknowledged write vanishes. Caught with the unsafe switch; with
/// the safe default (a new epoch) both values survive.
#[test]
fn actors_kept_after_a_power_loss_are_caught() {
    for keep_actors in [true, false] {
        KEEP_ACTORS.with(|k| k.set(keep_actors));
        let (mut sim, key) = warmed_up(9);
        let mut history = History::new(3);
        write(&mut sim, &mut history, 0, &key, "v1", &[("w", "all")]);
        let power_loss = sim.now().mono;
        sim.crash(0, true);
        sim.restart(0);
        sim.await_stable(Duration::from_secs(60));
        write(&mut sim, &mut history, 0, &key, "v2", &[("w", "all")]);
        sim.run_for(Duration::from_secs(5));
        for node in 0..3 {
            final_read(&mut sim, &mut history, node, &key);
        }
        let found = check::check_all(
            &history,
            &Assumptions {
                power_losses: vec![power_loss],
            },
        );
        KEEP_ACTORS.with(|k| k.set(false));
        if keep_actors {
            assert!(!found.is_empty(), "a reused dot went unnoticed");
        } else {
            assert_eq!(found, Vec::<Violation>::new());
        }
    }
}
