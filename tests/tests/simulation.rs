//! Seeded simulations of a 5-node cluster: real engines, a lossy network
//! with delays, crashes and restarts, all in virtual time.
//!
//! A failing seed is a bug to fix: rerun one with `CHORUS_SIM_SEED=<seed>`.

use std::collections::BTreeMap;
use std::time::Duration;

use chorus_node::api::{RequestError, WriteReply};
use chorus_node::core::PutError;
use chorus_node::engine::ClientReply;
use chorus_storage::context::CausalContext;
use chorus_tests::overwrite::{History, Outcome, Shown};
use chorus_tests::sim::{default_shards, Sim, SimConfig};

/// The seeds each simulation runs with: `CHORUS_SIM_SEED` alone when set.
fn seeds(default: &[u64]) -> Vec<u64> {
    match std::env::var("CHORUS_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("CHORUS_SIM_SEED is a number")],
        Err(_) => default.to_vec(),
    }
}

fn lossy(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        loss: 0.05,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(40),
        ..SimConfig::default()
    }
}

/// A request's query options.
type Options<'a> = &'a [(&'a str, &'a str)];

/// The history of one key as a client saw it.
#[derive(Debug, Default)]
struct KeyHistory {
    /// Values written, in order; `true` when the write was acknowledged.
    attempts: Vec<(String, bool)>,
    /// The context of the last acknowledged write.
    context: Option<CausalContext>,
}

impl KeyHistory {
    /// The values a read may return in place of the last acknowledged one:
    /// that value, or any value attempted after it (an unacknowledged write
    /// may have been applied, and its context covers the acknowledged one).
    fn acceptable(&self) -> Option<Vec<&str>> {
        let last_ack = self.attempts.iter().rposition(|(_, acked)| *acked)?;
        Some(
            self.attempts[last_ack..]
                .iter()
                .map(|(v, _)| v.as_str())
                .collect(),
        )
    }
}

/// Writes through random coordinators with w=quorum while frames are lost
/// and delayed and one node crashes and restarts, then checks with
/// r=quorum reads that every acknowledged write is there.
///
/// With `primaries`, writes also ask pw=quorum and reads pr=quorum, so every
/// read must overlap every acknowledged write at once, hints delivered or
/// not. Without, writes may lean on fallbacks, and the reads wait until the
/// hints have been handed over.
fn acknowledged_writes_survive(seed: u64, primaries: bool, shards: usize) {
    let (write_options, read_options): (Options<'_>, Options<'_>) = if primaries {
        (
            &[("timeout", "2000"), ("pw", "quorum")],
            &[("timeout", "2000"), ("pr", "quorum")],
        )
    } else {
        (&[("timeout", "2000")], &[("timeout", "2000")])
    };
    let mut sim = Sim::new(SimConfig {
        shards,
        ..lossy(seed)
    });
    sim.await_stable(Duration::from_secs(60));
    let keys: Vec<String> = (0..12).map(|k| format!("key-{k}")).collect();
    let mut history: BTreeMap<String, KeyHistory> = BTreeMap::new();
    let victim = 2;
    for round in 0..60 {
        if round == 20 {
            // A process crash: the write-ahead log survives.
            sim.crash(victim, false);
        }
        if round == 40 {
            sim.restart(victim);
        }
        let key = keys[sim.random_below(keys.len())].clone();
        let mut node = sim.random_below(sim.len());
        while sim.engine(node).is_none() {
            node = sim.random_below(sim.len());
        }
        let value = format!("{key}-v{round}");
        let entry = history.entry(key.clone()).or_default();
        let context = entry.context.clone();
        let client = sim.put(node, &key, Some(&value), context, write_options);
        let reply = sim.await_reply(client);
        let entry = history.get_mut(&key).expect("inserted above");
        match reply {
            Ok(reply) => {
                entry.context = Some(Sim::context(&reply));
                entry.attempts.push((value, true));
            }
            Err(RequestError::Put(_) | RequestError::Unavailable(_)) => {
                entry.attempts.push((value, false));
            }
            Err(other) => panic!("seed {seed}: unexpected write error {other}"),
        }
        sim.run_for(Duration::from_millis(200));
    }
    sim.await_stable(Duration::from_secs(60));
    if !primaries {
        // Writes acknowledged by fallbacks while the victim was down reach
        // it through hints; until they have, an r=quorum read may meet two
        // primaries without the newest value (seed 164 did).
        sim.run_until(Duration::from_secs(60), "hints delivered", |sim| {
            sim.pending_hints() == 0
        });
    }
    let acked: usize = history
        .values()
        .map(|h| h.attempts.iter().filter(|(_, a)| *a).count())
        .sum();
    // A floor that keeps the check meaningful; pw=quorum refuses more
    // writes while the victim is down and frames are lost.
    let floor = if primaries { 30 } else { 40 };
    assert!(
        acked >= floor,
        "seed {seed}: only {acked} of 60 writes acknowledged"
    );
    for (key, entry) in &history {
        let Some(acceptable) = entry.acceptable() else {
            continue;
        };
        // Retry reads that miss their quorum through loss.
        let values = loop {
            let client = sim.get(0, key, read_options);
            match sim.await_reply(client) {
                Ok(reply) => break Sim::values(&reply),
                Err(RequestError::Get(_)) => continue,
                Err(other) => panic!("seed {seed}: unexpected read error {other}"),
            }
        };
        assert!(
            values.iter().any(|v| acceptable.contains(&v.as_str())),
            "seed {seed}: {key} lost its acknowledged write: read {values:?}, expected one of {acceptable:?}"
        );
    }
}

#[test]
fn acknowledged_writes_survive_loss_delay_and_a_crash() {
    for seed in seeds(&[1, 2, 3, 4, 5]) {
        acknowledged_writes_survive(seed, false, default_shards());
    }
}

#[test]
fn primary_quorums_read_every_acknowledged_write_without_waiting_for_hints() {
    for seed in seeds(&[6, 7, 8, 9, 10]) {
        acknowledged_writes_survive(seed, true, default_shards());
    }
}

fn read_values(
    sim: &mut Sim,
    node: usize,
    key: &str,
    options: &[(&str, &str)],
) -> (Vec<String>, CausalContext) {
    let client = sim.get(node, key, options);
    let reply = sim.await_reply(client).expect("the read succeeds");
    (Sim::values(&reply), Sim::context(&reply))
}

#[test]
fn concurrent_writes_become_siblings_and_a_write_with_their_context_collapses_them() {
    for seed in seeds(&[11, 12, 13]) {
        let mut sim = Sim::new(SimConfig {
            seed,
            ..SimConfig::default()
        });
        sim.await_stable(Duration::from_secs(60));
        // Two blind writes through different nodes, in flight together.
        let a = sim.put(0, "cart", Some("apple"), None, &[]);
        let b = sim.put(3, "cart", Some("banana"), None, &[]);
        assert!(sim.await_reply(a).is_ok(), "seed {seed}");
        assert!(sim.await_reply(b).is_ok(), "seed {seed}");
        let (values, context) = read_values(&mut sim, 1, "cart", &[("r", "all")]);
        assert_eq!(values, vec!["apple", "banana"], "seed {seed}: siblings");
        // A write with the context of that read resolves them.
        let c = sim.put(
            4,
            "cart",
            Some("apple+banana"),
            Some(context),
            &[("w", "all")],
        );
        assert!(sim.await_reply(c).is_ok(), "seed {seed}");
        let (values, _) = read_values(&mut sim, 2, "cart", &[("r", "all")]);
        assert_eq!(values, vec!["apple+banana"], "seed {seed}: collapsed");
        // A stale (empty) context adds one sibling, never more.
        let d = sim.put(1, "cart", Some("cherry"), None, &[]);
        assert!(sim.await_reply(d).is_ok(), "seed {seed}");
        let (values, _) = read_values(&mut sim, 0, "cart", &[("r", "all")]);
        assert_eq!(
            values,
            vec!["apple+banana", "cherry"],
            "seed {seed}: one more sibling"
        );
    }
}

#[test]
fn hints_drain_after_the_primary_returns() {
    for seed in seeds(&[21, 22, 23]) {
        let mut sim = Sim::new(SimConfig {
            seed,
            ..SimConfig::default()
        });
        sim.await_stable(Duration::from_secs(60));
        let victim = 4;
        let victim_id = sim.node_id(victim).expect("runs");
        sim.crash(victim, false);
        // Wait until every other node has convicted it.
        sim.run_until(Duration::from_secs(60), "the victim reported down", |sim| {
            (0..4).all(|i| !sim.engine(i).expect("runs").is_up(victim_id))
        });
        // Keys the victim is a primary of: they go to fallbacks with hints.
        let ring = sim.engine(0).expect("runs").ring().expect("a ring").clone();
        let keys: Vec<String> = (0..200)
            .map(|k| format!("hinted-{k}"))
            .filter(|k| {
                ring.preference_list_for_key(b"sim", k.as_bytes())
                    .is_primary(victim_id)
            })
            .take(10)
            .collect();
        assert!(!keys.is_empty());
        for key in &keys {
            let client = sim.put(0, key, Some(key), None, &[("w", "all")]);
            assert!(
                sim.await_reply(client).is_ok(),
                "seed {seed}: sloppy w=all with a fallback"
            );
        }
        assert!(
            sim.pending_hints() >= keys.len(),
            "seed {seed}: hints queued"
        );
        // Without fallbacks, w=all cannot be met while the victim is down.
        let strict = sim.put(
            0,
            &keys[0],
            Some("strict"),
            None,
            &[("w", "all"), ("sloppy", "false")],
        );
        assert!(
            matches!(sim.await_reply(strict), Err(RequestError::Put(_))),
            "seed {seed}: strict w=all must fail"
        );
        sim.restart(victim);
        sim.run_until(Duration::from_secs(60), "hints delivered", |sim| {
            sim.pending_hints() == 0
        });
        // The victim now holds every hinted key: read it alone.
        for key in &keys {
            let store = sim.engine(victim).expect("runs").store();
            let partition = ring.partition_of(b"sim", key.as_bytes());
            let object = chorus_storage::store::Store::get(
                store,
                chorus_storage::store::KeyRef::new(partition, b"sim", key.as_bytes()),
            )
            .expect("readable")
            .expect("the hint was delivered");
            assert!(
                object
                    .live()
                    .any(|s| s.value.as_deref() == Some(key.as_bytes())),
                "seed {seed}: {key} on the returned primary"
            );
        }
        // A strict r=all read needs its coordinator to count the victim as
        // up again. The nodes that held hints saw it first; node 1 may not
        // have yet (seeds 861 and 997 read before it had).
        sim.run_until(
            Duration::from_secs(60),
            "node 1 sees the victim up",
            |sim| sim.engine(1).expect("runs").is_up(victim_id),
        );
        let (values, _) = read_values(&mut sim, 1, &keys[1], &[("r", "all"), ("sloppy", "false")]);
        assert!(values.contains(&keys[1]), "seed {seed}");
    }
}

#[test]
fn read_repair_brings_a_stale_replica_up_to_date() {
    let mut sim = Sim::new(SimConfig {
        seed: 31,
        ..SimConfig::default()
    });
    sim.await_stable(Duration::from_secs(60));
    let ring = sim.engine(0).expect("runs").ring().expect("a ring").clone();
    let list = ring.preference_list_for_key(b"sim", b"repair-me");
    let stale_id = list.primaries()[2];
    let stale = (0..sim.len())
        .find(|&i| sim.node_id(i) == Some(stale_id))
        .expect("a node");
    // The stale replica misses the write: it is cut off while w=2 is met.
    sim.isolate(stale, true);
    let first = (0..sim.len()).find(|&i| i != stale).expect("another node");
    let client = sim.put(
        first,
        "repair-me",
        Some("fresh"),
        None,
        &[("w", "2"), ("timeout", "500")],
    );
    assert!(sim.await_reply(client).is_ok());
    sim.run_for(Duration::from_secs(1));
    sim.isolate(stale, false);
    let key = chorus_storage::store::KeyRef::new(list.partition(), b"sim", b"repair-me");
    let held = |sim: &Sim| {
        chorus_storage::store::Store::get(sim.engine(stale).expect("runs").store(), key)
            .expect("readable")
            .is_some()
    };
    assert!(!held(&sim), "the stale replica missed the write");
    // A read at r=all (once the node is up again) repairs it.
    sim.await_stable(Duration::from_secs(60));
    let (values, _) = read_values(&mut sim, first, "repair-me", &[("r", "all")]);
    assert_eq!(values, vec!["fresh"]);
    sim.run_for(Duration::from_secs(1));
    assert!(
        held(&sim),
        "read repair stored the value on the stale replica"
    );
}

#[test]
fn quorum_errors_say_what_was_needed_and_received() {
    let mut sim = Sim::new(SimConfig {
        seed: 41,
        ..SimConfig::default()
    });
    sim.await_stable(Duration::from_secs(60));
    let ring = sim.engine(0).expect("runs").ring().expect("a ring").clone();
    let list = ring.preference_list_for_key(b"sim", b"q");
    let primaries: Vec<usize> = list
        .primaries()
        .iter()
        .map(|id| {
            (0..sim.len())
                .find(|&i| sim.node_id(i) == Some(*id))
                .expect("a node")
        })
        .collect();
    // Cut two of the three primaries off; sloppy quorum is refused.
    sim.isolate(primaries[1], true);
    sim.isolate(primaries[2], true);
    let client = sim.put(
        primaries[0],
        "q",
        Some("x"),
        None,
        &[("w", "2"), ("sloppy", "false"), ("timeout", "300")],
    );
    match sim.await_reply(client) {
        Err(RequestError::Put(error)) => {
            let tally = error.tally();
            assert_eq!(tally.required, 2);
            assert_eq!(
                tally.received, 1,
                "only the coordinator applied it: {error}"
            );
        }
        other => panic!("expected a quorum error, got {other:?}"),
    }
}

/// Runs a fixed scenario and returns its trace hash.
fn scenario(seed: u64) -> u64 {
    let mut sim = Sim::new(lossy(seed));
    sim.await_stable(Duration::from_secs(60));
    for round in 0..20 {
        let mut node = round % sim.len();
        if sim.engine(node).is_none() {
            node = (node + 1) % sim.len();
        }
        let key = format!("k{}", round % 4);
        let client = sim.put(node, &key, Some("v"), None, &[("timeout", "1000")]);
        let _ = sim.await_reply(client);
        if round == 10 {
            sim.crash(1, true);
        }
    }
    sim.restart(1);
    sim.run_for(Duration::from_secs(20));
    sim.trace_hash()
}

#[test]
fn the_same_seed_replays_the_same_run() {
    assert_eq!(scenario(7), scenario(7));
    assert_ne!(
        scenario(7),
        scenario(8),
        "different seeds take different paths"
    );
}

#[test]
fn writes_through_a_non_replica_are_forwarded() {
    let mut sim = Sim::new(SimConfig {
        seed: 51,
        ..SimConfig::default()
    });
    sim.await_stable(Duration::from_secs(60));
    let ring = sim.engine(0).expect("runs").ring().expect("a ring").clone();
    let list = ring.preference_list_for_key(b"sim", b"fwd");
    let outsider = (0..sim.len())
        .find(|&i| !list.primaries().contains(&sim.node_id(i).expect("runs")))
        .expect("5 nodes, 3 replicas");
    let client = sim.put(outsider, "fwd", Some("via"), None, &[("w", "all")]);
    let reply = sim.await_reply(client).expect("forwarded write succeeds");
    assert!(matches!(reply, ClientReply::Write(_)));
    assert!(sim.engine(outsider).expect("runs").stats().forwarded >= 1);
    // The outsider holds no copy: the write was coordinated by a replica.
    let key = chorus_storage::store::KeyRef::new(list.partition(), b"sim", b"fwd");
    let copy = chorus_storage::store::Store::get(sim.engine(outsider).expect("runs").store(), key)
        .expect("readable");
    assert!(copy.is_none());
    let (values, _) = read_values(&mut sim, outsider, "fwd", &[("r", "all")]);
    assert_eq!(values, vec!["via"]);
}

#[test]
fn the_ring_follows_joins_and_leaves_until_the_cluster_holds_data() {
    let mut sim = Sim::new(SimConfig {
        seed: 61,
        ..SimConfig::default()
    });
    sim.await_stable(Duration::from_secs(60));
    let ring_of = |sim: &Sim, i: usize| sim.engine(i).and_then(|e| e.ring()).cloned();
    assert_eq!(ring_of(&sim, 0).map(|r| r.members().len()), Some(5));
    // An empty cluster takes a new member into the ring.
    let sixth = sim.add_node();
    let sixth_id = sim.node_id(sixth).expect("runs");
    sim.run_until(
        Duration::from_secs(60),
        "the sixth node owns partitions",
        |sim| sim.is_stable() && ring_of(sim, 0).is_some_and(|r| r.member(sixth_id).is_some()),
    );
    // A member that leaves an empty cluster is taken out of the ring.
    let leaver_id = sim.node_id(1).expect("runs");
    sim.leave(1);
    sim.run_until(
        Duration::from_secs(60),
        "the leaver is out of the ring",
        |sim| {
            [0, 2, 3, 4, sixth]
                .iter()
                .all(|&i| ring_of(sim, i).is_some_and(|r| r.member(leaver_id).is_none()))
        },
    );
    sim.crash(1, false);
    // Node 0 serves once it knows every live member holds its ring.
    sim.run_until(Duration::from_secs(60), "node 0 ready", |sim| {
        sim.engine(0).is_some_and(|e| e.is_ready())
    });
    let version = ring_of(&sim, 0).expect("a ring").version();
    // Once data exists, a joiner stays out of the ring and reads stay right.
    let client = sim.put(0, "held", Some("data"), None, &[("w", "all")]);
    assert!(sim.await_reply(client).is_ok());
    let seventh = sim.add_node();
    let seventh_id = sim.node_id(seventh).expect("runs");
    sim.run_until(
        Duration::from_secs(60),
        "the seventh node is seen up",
        |sim| sim.sees_up(0, seventh) && sim.sees_up(seventh, 0),
    );
    sim.run_for(Duration::from_secs(10));
    let ring = ring_of(&sim, 0).expect("a ring");
    assert_eq!(ring.version(), version, "the ring did not change");
    assert!(ring.member(seventh_id).is_none(), "the joiner owns nothing");
    let status = sim.engine(0).expect("runs").cluster_status();
    let joiner = status
        .members
        .iter()
        .find(|m| m.id == seventh_id)
        .expect("a member");
    assert_eq!(joiner.status, "joining");
    // The joiner holds the ring and serves requests through the owners.
    assert_eq!(ring_of(&sim, seventh).map(|r| r.version()), Some(version));
    let (values, _) = read_values(&mut sim, seventh, "held", &[("r", "all")]);
    assert_eq!(values, vec!["data"]);
}

/// The review's F1: a write's answer must not hand its writer a context
/// that covers a concurrent value it never saw. Two blind writes through two
/// different primaries; the second writer writes again with the context its
/// first write returned; the first value must survive as a sibling.
#[test]
fn a_write_context_covers_only_what_its_writer_saw() {
    for seed in seeds(&[31, 32, 33]) {
        let mut sim = Sim::new(SimConfig {
            seed,
            ..SimConfig::default()
        });
        sim.await_stable(Duration::from_secs(60));
        let primaries = sim.primaries("cart");
        let (first, second, reader) = (primaries[0], primaries[1], primaries[2]);
        let all: Options<'_> = &[("w", "all")];
        let apple = sim.put(first, "cart", Some("apple"), None, all);
        assert!(sim.await_reply(apple).is_ok(), "seed {seed}");
        let banana = sim.put(second, "cart", Some("banana"), None, all);
        let token = Sim::context(&sim.await_reply(banana).expect("acknowledged"));
        let banana2 = sim.put(second, "cart", Some("banana2"), Some(token), all);
        assert!(sim.await_reply(banana2).is_ok(), "seed {seed}");
        let (values, _) = read_values(&mut sim, reader, "cart", &[("r", "all")]);
        assert_eq!(values, vec!["apple", "banana2"], "seed {seed}");

        // The same through one coordinator: its actor minted both dots.
        let x = sim.put(first, "basket", Some("x"), None, all);
        assert!(sim.await_reply(x).is_ok(), "seed {seed}");
        let y = sim.put(first, "basket", Some("y"), None, all);
        let token = Sim::context(&sim.await_reply(y).expect("acknowledged"));
        let y2 = sim.put(first, "basket", Some("y2"), Some(token), all);
        assert!(sim.await_reply(y2).is_ok(), "seed {seed}");
        let (values, _) = read_values(&mut sim, reader, "basket", &[("r", "all")]);
        assert_eq!(values, vec!["x", "y2"], "seed {seed}");

        // `returnbody` answers like a read: both siblings, and a context
        // that resolves them.
        let z = sim.put(
            second,
            "basket",
            Some("z"),
            None,
            &[("w", "all"), ("returnbody", "true")],
        );
        let reply = sim.await_reply(z).expect("acknowledged");
        assert_eq!(Sim::values(&reply), vec!["x", "y2", "z"], "seed {seed}");
        let resolved = sim.put(
            reader,
            "basket",
            Some("xyz"),
            Some(Sim::context(&reply)),
            all,
        );
        assert!(sim.await_reply(resolved).is_ok(), "seed {seed}");
        let (values, _) = read_values(&mut sim, first, "basket", &[("r", "all")]);
        assert_eq!(values, vec!["xyz"], "seed {seed}");
    }
}

/// A DELETE without a context deletes what a read at its `r` finds, and
/// answers "nothing to delete" when no live value was there (Riak's
/// behaviour; the review's F8).
#[test]
fn a_delete_without_a_context_deletes_what_it_reads() {
    for seed in seeds(&[34, 35]) {
        let mut sim = Sim::new(SimConfig {
            seed,
            ..SimConfig::default()
        });
        sim.await_stable(Duration::from_secs(60));
        let all: Options<'_> = &[("w", "all"), ("r", "all")];
        for (node, value) in [(0, "a"), (3, "b")] {
            let put = sim.put(node, "gone", Some(value), None, all);
            assert!(sim.await_reply(put).is_ok(), "seed {seed}");
        }
        let delete = sim.put(1, "gone", None, None, all);
        match sim.await_reply(delete) {
            Ok(ClientReply::Write(WriteReply::Written { .. })) => {}
            other => panic!("seed {seed}: the delete wrote nothing: {other:?}"),
        }
        let client = sim.get(2, "gone", &[("r", "all")]);
        let reply = sim.await_reply(client).expect("the read succeeds");
        assert_eq!(Sim::values(&reply), Vec::<String>::new(), "seed {seed}");
        // Its tombstones still give a context.
        assert!(!Sim::context(&reply).is_empty(), "seed {seed}");
        // Nothing live left: a second delete finds nothing to delete.
        let again = sim.put(4, "gone", None, None, all);
        match sim.await_reply(again) {
            Ok(ClientReply::Write(WriteReply::NothingToDelete { object })) => {
                assert!(object.is_deleted() && !object.is_empty(), "seed {seed}")
            }
            other => panic!("seed {seed}: expected nothing to delete, got {other:?}"),
        }
        let never = sim.put(4, "never-written", None, None, all);
        match sim.await_reply(never) {
            Ok(ClientReply::Write(WriteReply::NothingToDelete { object })) => {
                assert!(object.is_empty(), "seed {seed}")
            }
            other => panic!("seed {seed}: expected nothing to delete, got {other:?}"),
        }
    }
}

/// Concurrent clients write a few keys through random nodes with contexts
/// from reads, from their own write answers, from `returnbody` answers, or
/// none, while frames are lost and delayed and a node crashes and restarts.
/// The *no silent overwrite* checker then compares a final `r=all` read of
/// every key with the history: an acknowledged value may be gone only if a
/// write was made with a context from a response that showed it.
#[test]
fn no_acknowledged_value_disappears_unless_a_context_that_showed_it_replaced_it() {
    for seed in seeds(&[41, 42, 43, 44]) {
        no_silent_overwrite(seed, default_shards());
    }
}

/// The same promises with every node's partitions split between two
/// shards: no acknowledged write is lost to loss, delay and a crash, and
/// no acknowledged value disappears unless a context that showed it
/// replaced it (concurrent writes kept as siblings).
#[test]
fn two_shards_keep_every_acknowledged_write_and_every_sibling() {
    for seed in seeds(&[7, 8]) {
        acknowledged_writes_survive(seed, false, 2);
        acknowledged_writes_survive(seed, true, 2);
        no_silent_overwrite(seed + 40, 2);
    }
}

fn no_silent_overwrite(seed: u64, shards: usize) {
    let mut sim = Sim::new(SimConfig {
        shards,
        ..lossy(seed)
    });
    assert!((0..sim.len()).all(|i| sim.engine(i).is_some_and(|e| e.shards() == shards)));
    sim.await_stable(Duration::from_secs(60));
    let keys: Vec<String> = (0..4).map(|k| format!("set-{k}")).collect();
    let mut history = History::new();
    // Per key, the contexts a client may write with next, and what the
    // response they came from showed.
    let mut contexts: BTreeMap<String, Vec<(CausalContext, Shown)>> = BTreeMap::new();
    let options: Options<'_> = &[("timeout", "2000")];
    let victim = 1;
    let mut unique = 0;
    for round in 0..40 {
        if round == 15 {
            sim.crash(victim, false);
        }
        if round == 25 {
            sim.restart(victim);
        }
        let key = keys[sim.random_below(keys.len())].clone();
        // Now and then a read, whose context later writes may use.
        if sim.random_below(3) == 0 {
            let node = running_node(&mut sim);
            let client = sim.get(node, &key, options);
            if let Ok(reply) = sim.await_reply(client) {
                let shown = history.read(&Sim::values(&reply));
                contexts
                    .entry(key.clone())
                    .or_default()
                    .push((Sim::context(&reply), shown));
            }
        }
        // One to three writers in flight together on the key.
        let writers = 1 + sim.random_below(3);
        let mut in_flight = Vec::new();
        for _ in 0..writers {
            unique += 1;
            let value = format!("{key}-{unique}");
            let known = contexts.get(&key).map_or(0, Vec::len);
            let pick = sim.random_below(known + 1);
            let (context, shown) = match pick.checked_sub(1) {
                None => (None, Shown::NOTHING),
                Some(i) => {
                    let (context, shown) = &contexts[&key][i];
                    (Some(context.clone()), *shown)
                }
            };
            let return_body = sim.random_below(4) == 0;
            let mut write_options = options.to_vec();
            if return_body {
                write_options.push(("returnbody", "true"));
            }
            let node = running_node(&mut sim);
            let client = sim.put(node, &key, Some(&value), context, &write_options);
            let id = history.write(&key, &value, shown);
            in_flight.push((client, id, return_body));
        }
        for (client, id, return_body) in in_flight {
            let outcome = match sim.await_reply(client) {
                Ok(reply) => {
                    let shown = if return_body {
                        history.outcome(id, Outcome::Ok);
                        history.read(&Sim::values(&reply))
                    } else {
                        history.outcome(id, Outcome::Ok).expect("acknowledged")
                    };
                    contexts
                        .entry(key.clone())
                        .or_default()
                        .push((Sim::context(&reply), shown));
                    continue;
                }
                Err(RequestError::Put(PutError::Indeterminate { .. })) => Outcome::Unknown,
                Err(RequestError::Put(PutError::QuorumNotReached { applied, .. }))
                    if applied > 0 =>
                {
                    Outcome::Unknown
                }
                Err(RequestError::Put(_) | RequestError::Unavailable(_)) => Outcome::NotApplied,
                Err(other) => panic!("seed {seed}: unexpected write error {other}"),
            };
            history.outcome(id, outcome);
        }
        sim.run_for(Duration::from_millis(100));
    }
    sim.await_stable(Duration::from_secs(60));
    sim.run_until(Duration::from_secs(60), "hints delivered", |sim| {
        sim.pending_hints() == 0
    });
    let acknowledged = history.counts().get("ok").copied().unwrap_or(0);
    assert!(
        acknowledged >= 30,
        "seed {seed}: only {acknowledged} writes acknowledged"
    );
    for key in history.keys() {
        let values = loop {
            let client = sim.get(0, &key, &[("r", "all"), ("timeout", "2000")]);
            match sim.await_reply(client) {
                Ok(reply) => break Sim::values(&reply),
                Err(RequestError::Get(_)) => continue,
                Err(other) => panic!("seed {seed}: unexpected read error {other}"),
            }
        };
        if let Err(violation) = history.check(&key, &values) {
            panic!("seed {seed}: silent overwrite: {violation:?}");
        }
    }
}

/// A random node that runs.
fn running_node(sim: &mut Sim) -> usize {
    loop {
        let node = sim.random_below(sim.len());
        if sim.engine(node).is_some() {
            return node;
        }
    }
}

/// The index of the node with id `id`.
fn index_of(sim: &Sim, id: uuid::Uuid) -> usize {
    (0..sim.len())
        .find(|&i| sim.node_id(i) == Some(id))
        .expect("a running node has this id")
}

/// Node 0 crashes and restarts again and again while the link from node 1
/// to node 0 delays every frame longer than a restart takes, so replies to
/// one incarnation's requests reach the next one. Request ids are unique
/// across incarnations and replies name their key, so none of them is
/// taken for an answer: every read returns only values written to its key,
/// and every request of an incarnation that lives long enough succeeds.
#[test]
fn replies_to_a_previous_incarnation_never_answer_a_new_request() {
    for seed in seeds(&[71, 72, 73]) {
        let mut sim = Sim::new(SimConfig {
            nodes: 3,
            seed,
            ..SimConfig::default()
        });
        sim.await_stable(Duration::from_secs(60));
        let keys: Vec<String> = (0..12).map(|k| format!("key-{k}")).collect();
        // Every value ever attempted on a key (an interrupted write may
        // have been applied).
        let mut written: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for key in &keys {
            let value = format!("{key}-initial");
            let client = sim.put(2, key, Some(&value), None, &[("w", "all")]);
            assert!(sim.await_reply(client).is_ok(), "seed {seed}: {key}");
            written.entry(key.clone()).or_default().push(value);
        }
        sim.slow_link(1, 0, Duration::from_secs(8));
        let options: Options<'_> = &[("r", "all"), ("w", "all"), ("timeout", "30000")];
        for incarnation in 0..8usize {
            // Node 0 must count both peers up, or the requests would not be
            // sent to node 1 at all.
            sim.run_until(Duration::from_secs(60), "node 0 sees its peers", |sim| {
                sim.sees_up(0, 1) && sim.sees_up(0, 2)
            });
            let mut batch = Vec::new();
            for j in 0..8usize {
                let key = keys[(j + incarnation * 5) % keys.len()].clone();
                if j % 2 == 0 {
                    batch.push((key.clone(), None, sim.get(0, &key, options)));
                } else {
                    let value = format!("{key}-i{incarnation}-r{j}");
                    written.entry(key.clone()).or_default().push(value.clone());
                    let client = sim.put(0, &key, Some(&value), None, options);
                    batch.push((key, Some(value), client));
                }
            }
            if incarnation % 2 == 0 {
                // Crash while node 1's answers are still on their way.
                sim.run_for(Duration::from_secs(1));
                sim.crash(0, false);
                sim.restart(0);
                continue;
            }
            for (key, value, client) in batch {
                let reply = sim.await_reply(client);
                match (value, reply) {
                    (None, Ok(reply)) => {
                        let values = Sim::values(&reply);
                        assert!(!values.is_empty(), "seed {seed}: {key} read nothing");
                        for v in &values {
                            assert!(
                                written[&key].contains(v),
                                "seed {seed}: a read of {key} returned {v:?}, never written to it"
                            );
                        }
                    }
                    (Some(_), Ok(_)) => {}
                    (_, Err(e)) => panic!("seed {seed}: a request on {key} failed: {e}"),
                }
            }
            sim.crash(0, false);
            sim.restart(0);
        }
        assert!(
            sim.engine(0).expect("runs").stats().frames_stale == 0,
            "seed {seed}: node 1 and 2 never restarted, nothing of theirs is stale"
        );
    }
}

/// A member that left is never up: writes at w=all go to fallbacks at
/// once (not after its quarantine), and neither writes nor hints are sent
/// to it, although it still runs.
#[test]
fn a_member_that_left_is_never_a_target() {
    for seed in seeds(&[81, 82, 83]) {
        let mut sim = Sim::new(SimConfig {
            seed,
            ..SimConfig::default()
        });
        sim.await_stable(Duration::from_secs(60));
        // Every node holds data, so whichever node is the claimant keeps
        // the leaver in the ring as a primary.
        let ring = sim.engine(0).expect("runs").ring().expect("a ring").clone();
        let mut holders = std::collections::BTreeSet::new();
        for k in 0.. {
            if holders.len() == sim.len() {
                break;
            }
            let key = format!("held-{k}");
            let list = ring.preference_list_for_key(b"sim", key.as_bytes());
            if list.primaries().iter().all(|p| holders.contains(p)) {
                continue;
            }
            holders.extend(list.primaries().iter().copied());
            let client = sim.put(0, &key, Some("data"), None, &[("w", "all")]);
            assert!(sim.await_reply(client).is_ok(), "seed {seed}");
        }
        let leaver = 4;
        let leaver_id = sim.node_id(leaver).expect("runs");
        sim.leave(leaver);
        sim.run_until(Duration::from_secs(30), "the leave is known", |sim| {
            (0..4).all(|i| {
                sim.engine(i)
                    .expect("runs")
                    .cluster_status()
                    .members
                    .iter()
                    .any(|m| m.id == leaver_id && m.status == "left")
            })
        });
        assert!(
            (0..4).all(|i| !sim.engine(i).expect("runs").is_up(leaver_id)),
            "seed {seed}: a member that left is down"
        );
        let ring = sim.engine(0).expect("runs").ring().expect("a ring").clone();
        assert!(
            ring.member(leaver_id).is_some(),
            "seed {seed}: still in the ring"
        );
        let keys: Vec<String> = (0..200)
            .map(|k| format!("left-{k}"))
            .filter(|k| {
                ring.preference_list_for_key(b"sim", k.as_bytes())
                    .is_primary(leaver_id)
            })
            .take(10)
            .collect();
        let frames_before = sim.data_frames_to(leaver);
        for key in &keys {
            let client = sim.put(
                0,
                key,
                Some(key),
                None,
                &[("w", "all"), ("timeout", "2000")],
            );
            assert!(
                sim.await_reply(client).is_ok(),
                "seed {seed}: w=all through a fallback for the leaver"
            );
        }
        let (values, _) = read_values(&mut sim, 1, &keys[0], &[("r", "all")]);
        assert_eq!(values, vec![keys[0].clone()], "seed {seed}");
        // Several hint rounds: the fallbacks' hints for the leaver stay.
        sim.run_for(Duration::from_secs(5));
        assert!(
            sim.pending_hints() >= keys.len(),
            "seed {seed}: hints for the leaver are kept"
        );
        assert_eq!(
            sim.data_frames_to(leaver),
            frames_before,
            "seed {seed}: nothing but gossip was sent to the member that left"
        );
    }
}

/// A node whose clock runs 600 s ahead writes a version no other replica
/// takes in. A read through another node does not take it in either, so
/// the contexts it hands out stay within its own clock's reach, and a
/// write with such a context is accepted. Once the clock is right again
/// and time has caught up, the version is there beside the newer write.
#[test]
fn a_clock_far_ahead_cannot_lock_a_key() {
    for seed in seeds(&[91, 92, 93]) {
        let mut sim = Sim::new(SimConfig {
            nodes: 3,
            seed,
            ..SimConfig::default()
        });
        sim.await_stable(Duration::from_secs(60));
        let (node1, node2) = (0, 1);
        let client = sim.put(node1, "skewed", Some("v0"), None, &[("w", "all")]);
        let v0 = Sim::context(&sim.await_reply(client).expect("v0 is written"));
        sim.skew_clock(node2, 600_000);
        // Acknowledged by node 2 alone: the others refuse its clock.
        let client = sim.put(node2, "skewed", Some("future"), Some(v0), &[("w", "1")]);
        assert!(
            sim.await_reply(client).is_ok(),
            "seed {seed}: w=1 on node 2"
        );
        sim.run_for(Duration::from_secs(1));
        // r=all cannot count node 2's answer: it is refused, not merged.
        let client = sim.get(node1, "skewed", &[("r", "all")]);
        match sim.await_reply(client) {
            Err(RequestError::Get(e)) => assert_eq!(
                e.tally().failures.len(),
                1,
                "seed {seed}: node 2's reply is the failure: {e}"
            ),
            other => panic!("seed {seed}: expected r=all to miss node 2, got {other:?}"),
        }
        let (values, context) = read_values(&mut sim, node1, "skewed", &[]);
        assert_eq!(values, vec!["v0"], "seed {seed}");
        let client = sim.put(node1, "skewed", Some("v1"), Some(context), &[("w", "2")]);
        assert!(
            sim.await_reply(client).is_ok(),
            "seed {seed}: a context node 1 issued is accepted by node 1"
        );
        // Nothing acknowledged is lost: once node 2's clock is right and
        // time has passed its stamp, its version reads beside v1.
        sim.skew_clock(node2, 0);
        sim.run_for(Duration::from_secs(610));
        let (values, _) = read_values(&mut sim, node1, "skewed", &[("r", "all")]);
        assert_eq!(values, vec!["future", "v1"], "seed {seed}");
    }
}

/// A replica that is cut off but not yet convicted by the failure detector
/// misses the writes sent to it; the coordinators keep hints for it when
/// the writes' time runs out, and it gets every write once it is back.
#[test]
fn replicas_that_do_not_acknowledge_in_time_get_hints() {
    for seed in seeds(&[101, 102, 103]) {
        let mut sim = Sim::new(SimConfig {
            seed,
            ..SimConfig::default()
        });
        sim.await_stable(Duration::from_secs(60));
        let victim = 3;
        let victim_id = sim.node_id(victim).expect("runs");
        let ring = sim.engine(0).expect("runs").ring().expect("a ring").clone();
        let keys: Vec<(String, usize)> = (0..400)
            .map(|k| format!("paused-{k}"))
            .filter_map(|k| {
                let list = ring.preference_list_for_key(b"sim", k.as_bytes());
                let coordinator = *list.primaries().iter().find(|&&p| p != victim_id)?;
                list.is_primary(victim_id)
                    .then(|| (k, index_of(&sim, coordinator)))
            })
            .take(20)
            .collect();
        assert_eq!(keys.len(), 20);
        sim.isolate(victim, true);
        for (key, coordinator) in &keys {
            let client = sim.put(*coordinator, key, Some(key), None, &[]);
            assert!(sim.await_reply(client).is_ok(), "seed {seed}: w=quorum");
        }
        assert!(
            (0..5)
                .filter(|&i| i != victim)
                .all(|i| sim.engine(i).expect("runs").is_up(victim_id)),
            "seed {seed}: the writes went out before anyone convicted the victim"
        );
        // The writes' time runs out; the victim comes back.
        sim.run_for(Duration::from_secs(12));
        sim.isolate(victim, false);
        sim.run_until(Duration::from_secs(60), "hints delivered", |sim| {
            sim.pending_hints() == 0
        });
        for (key, _) in &keys {
            let (values, _) = read_values(&mut sim, victim, key, &[("r", "1")]);
            assert_eq!(
                values,
                vec![key.clone()],
                "seed {seed}: {key} on the victim"
            );
        }
    }
}

/// The review's F9: a node that joins right after the first writes must not
/// get a ring that moves a partition away from a node holding its data (no
/// partition handoff exists yet). The claimant here is cut off from news of
/// the data (every other node's frames to it and to the joiner are slow), so
/// it builds a ring that moves partitions; the nodes holding their data
/// refuse it and the claimant goes back. Every primary of an acknowledged
/// `w=all` write under the final ring holds it, and every node ends with the
/// same ring.
#[test]
fn a_join_right_after_the_first_writes_strands_no_data() {
    for seed in seeds(&[111, 112, 113, 114]) {
        let mut sim = Sim::new(SimConfig {
            seed,
            ..SimConfig::default()
        });
        sim.await_stable(Duration::from_secs(60));
        let claimant = (0..sim.len())
            .min_by_key(|&i| sim.node_id(i))
            .expect("nodes");
        let keys: Vec<String> = (0..200)
            .map(|k| format!("early-{k}"))
            .filter(|k| !sim.primaries(k).contains(&claimant))
            .take(8)
            .collect();
        let joiner = sim.len();
        for i in (0..sim.len()).filter(|&i| i != claimant) {
            sim.slow_link(i, claimant, Duration::from_secs(20));
            sim.slow_link(i, joiner, Duration::from_secs(20));
        }
        for key in &keys {
            let writer = sim.primaries(key)[0];
            let client = sim.put(writer, key, Some(key), None, &[("w", "all")]);
            assert!(sim.await_reply(client).is_ok(), "seed {seed}: {key}");
        }
        assert_eq!(sim.add_node(), joiner);
        sim.run_for(Duration::from_secs(60));
        for i in (0..joiner).filter(|&i| i != claimant) {
            sim.slow_link(i, claimant, Duration::ZERO);
            sim.slow_link(i, joiner, Duration::ZERO);
        }
        sim.await_stable(Duration::from_secs(120));
        let ring = sim.engine(0).expect("runs").ring().expect("a ring").clone();
        for key in &keys {
            let list = ring.preference_list_for_key(b"sim", key.as_bytes());
            for primary in list.primaries() {
                let i = (0..sim.len())
                    .find(|&i| sim.node_id(i) == Some(*primary))
                    .expect("a running node");
                assert!(
                    sim.holds(i, key),
                    "seed {seed}: {key}'s primary {i} (the joiner is {joiner}) does not hold it"
                );
            }
        }
        // And the cluster serves again.
        let client = sim.put(0, "after", Some("v"), None, &[]);
        assert!(sim.await_reply(client).is_ok(), "seed {seed}");
    }
}

/// Three nodes, so every key lives on all of them.
fn three_nodes(seed: u64) -> Sim {
    let mut sim = Sim::new(SimConfig {
        nodes: 3,
        seed,
        ..SimConfig::default()
    });
    sim.await_stable(Duration::from_secs(60));
    let warm_up = sim.put(0, "warm-up", Some("w"), None, &[("w", "all")]);
    assert!(sim.await_reply(warm_up).is_ok(), "seed {seed}: warm-up");
    sim
}

/// The dots of the versions a read returned.
fn dots_of(sim: &mut Sim, node: usize, key: &str) -> Vec<chorus_storage::version::Dot> {
    let client = sim.get(node, key, &[("r", "all")]);
    match sim.await_reply(client).expect("the read succeeds") {
        ClientReply::Read(read) => read.object.siblings().iter().map(|s| s.dot).collect(),
        ClientReply::Write(_) => unreachable!("a read answers with a read reply"),
    }
}

/// A blind write through node 0 after its local state lost `a`: both `a`
/// and the new `b` must survive (node 0 must not mint `b` under an actor
/// whose earlier dot `a` its new context would then cover).
fn blind_write_keeps_what_node_0_lost(
    sim: &mut Sim,
    seed: u64,
    a_dots: &[chorus_storage::version::Dot],
) {
    let b = sim.put(0, "k", Some("b"), None, &[("w", "all")]);
    assert!(sim.await_reply(b).is_ok(), "seed {seed}: put b");
    let (values, _) = read_values(sim, 1, "k", &[("r", "all")]);
    assert_eq!(values, vec!["a", "b"], "seed {seed}: a write was lost");
    let dots = dots_of(sim, 2, "k");
    let b_dot = dots
        .iter()
        .find(|d| !a_dots.contains(d))
        .expect("b has its own dot");
    assert!(
        a_dots.iter().all(|a| a.actor != b_dot.actor),
        "seed {seed}: b was minted by an actor that minted before the loss: {a_dots:?} {b_dot:?}"
    );
}

#[test]
fn a_replica_that_lost_unsynced_writes_mints_under_new_actors() {
    for seed in seeds(&[51, 52, 53]) {
        let mut sim = three_nodes(seed);
        let a = sim.put(0, "k", Some("a"), None, &[("w", "all")]);
        assert!(sim.await_reply(a).is_ok(), "seed {seed}: put a");
        let a_dots = dots_of(&mut sim, 1, "k");
        // A machine crash: node 0 loses `a`, which was never synced.
        sim.crash(0, true);
        sim.restart(0);
        sim.await_stable(Duration::from_secs(60));
        blind_write_keeps_what_node_0_lost(&mut sim, seed, &a_dots);
    }
}

/// Node 0 writes `w0`, is stopped, backed up, run on (it replaces `w0`
/// with `a`), stopped again and restored from the backup, with its wall
/// clock `clock_offset_ms` off.
fn restored_node_writes_blind(seed: u64, clock_offset_ms: i64) {
    let mut sim = three_nodes(seed);
    // The backup already holds the key, so node 0's replica of its
    // partition has an actor there.
    let w0 = sim.put(0, "k", Some("w0"), None, &[("w", "all")]);
    let w0 = Sim::context(&sim.await_reply(w0).expect("put w0"));
    sim.stop(0);
    let backup = sim.snapshot(0);
    sim.restart(0);
    sim.await_stable(Duration::from_secs(60));
    let a = sim.put(0, "k", Some("a"), Some(w0), &[("w", "all")]);
    assert!(sim.await_reply(a).is_ok(), "seed {seed}: put a");
    let a_dots = dots_of(&mut sim, 1, "k");
    let held = sim.engine(1).expect("runs").cluster_status();
    let id = sim.node_id(0).expect("runs");
    let held_generation = held
        .members
        .iter()
        .find(|m| m.id == id)
        .expect("node 1 knows node 0")
        .generation;
    sim.stop(0);
    sim.restore(0, backup);
    sim.skew_clock(0, clock_offset_ms);
    sim.restart(0);
    // Peers held a newer incarnation of node 0 than its restored directory:
    // it comes back above it, and they take it as up again.
    sim.run_until(
        Duration::from_secs(30),
        "the restored node runs above the generation peers held",
        |sim| sim.engine(0).expect("runs").generation() > held_generation,
    );
    sim.run_until(
        Duration::from_secs(60),
        "peers hold the new generation",
        |sim| {
            let generation = sim.engine(0).expect("runs").generation();
            (1..3).all(|i| {
                sim.engine(i)
                    .expect("runs")
                    .cluster_status()
                    .members
                    .iter()
                    .any(|m| m.id == id && m.generation == generation && m.liveness == "up")
            })
        },
    );
    sim.await_stable(Duration::from_secs(60));
    blind_write_keeps_what_node_0_lost(&mut sim, seed, &a_dots);
}

#[test]
fn a_node_restored_from_an_older_backup_comes_back_above_its_generation_in_a_new_epoch() {
    for seed in seeds(&[61, 62, 63]) {
        restored_node_writes_blind(seed, 0);
    }
}

#[test]
fn a_restored_node_whose_clock_jumped_back_repeats_no_dot() {
    for seed in seeds(&[71, 72, 73]) {
        restored_node_writes_blind(seed, -60_000);
    }
}

#[test]
fn a_durable_write_survives_a_machine_crash_of_every_replica_that_acknowledged_it() {
    for seed in seeds(&[81, 82, 83]) {
        let mut sim = three_nodes(seed);
        let a = sim.put(0, "k", Some("a"), None, &[("w", "all")]);
        let context = Sim::context(&sim.await_reply(a).expect("put a"));
        // Read repairs and the last write leave `a` unsynced everywhere.
        let (values, _) = read_values(&mut sim, 2, "k", &[("r", "all")]);
        assert_eq!(values, vec!["a"], "seed {seed}");
        let b = sim.put(
            1,
            "k",
            Some("b"),
            Some(context),
            &[("w", "all"), ("sync", "true")],
        );
        assert!(sim.await_reply(b).is_ok(), "seed {seed}: put b");
        // Every replica acknowledged `b` durably; all of them lose power.
        for i in 0..3 {
            sim.crash(i, true);
        }
        for i in 0..3 {
            sim.restart(i);
        }
        sim.await_stable(Duration::from_secs(60));
        let (values, _) = read_values(&mut sim, 0, "k", &[("r", "all")]);
        assert_eq!(values, vec!["b"], "seed {seed}: the durable write survived");
    }
}
/// Closed-loop clients writing at `w=one` are slowed down while their
/// acknowledged writes still replicate to slow replicas, never refused:
/// every put is acknowledged, and the replication behind them finishes.
#[test]
fn closed_loop_writes_at_w_one_are_slowed_down_never_refused() {
    for seed in seeds(&[111, 112, 113]) {
        let mut sim = Sim::new(SimConfig {
            seed,
            nodes: 3,
            tune_engine: |config| {
                config.max_pending_requests = 200;
                config.max_background_requests = 100;
            },
            ..SimConfig::default()
        });
        sim.await_stable(Duration::from_secs(60));
        // The other replicas acknowledge node 0's writes 300 ms late.
        sim.slow_link(1, 0, Duration::from_millis(300));
        sim.slow_link(2, 0, Duration::from_millis(300));
        let clients = 64;
        let total = 1_000;
        let mut issued = 0;
        let mut acknowledged = 0;
        let mut in_flight = Vec::new();
        let start = sim.now().mono;
        while acknowledged < total {
            while in_flight.len() < clients && issued < total {
                let key = format!("load-{issued}");
                in_flight.push(sim.put(0, &key, Some("v"), None, &[("w", "one")]));
                issued += 1;
            }
            assert!(
                sim.now().mono - start < Duration::from_secs(120),
                "seed {seed}: {acknowledged} of {total} acknowledged in two minutes"
            );
            assert!(sim.step(), "seed {seed}: nothing left to happen");
            let mut still = Vec::new();
            for client in in_flight {
                match sim.reply(client) {
                    None => still.push(client),
                    Some(Ok(_)) => acknowledged += 1,
                    Some(Err(e)) => panic!("seed {seed}: put {client} refused: {e}"),
                }
            }
            in_flight = still;
        }
        // The replication behind the acknowledged writes completes.
        sim.run_until(Duration::from_secs(60), "replication done", |sim| {
            sim.engine(0).expect("runs").stats().pending_requests == 0
        });
        let stats = sim.engine(0).expect("runs").stats();
        assert_eq!(stats.refused_overloaded, 0, "seed {seed}");
        assert_eq!(stats.background_requests, 0, "seed {seed}");
        assert_eq!(stats.background_bytes, 0, "seed {seed}");
        for replica in 1..3 {
            let (values, _) = read_values(&mut sim, replica, "load-999", &[("r", "1")]);
            assert_eq!(
                values,
                vec!["v".to_string()],
                "seed {seed}: replica {replica}"
            );
        }
    }
}

/// A replica killed and restarted at once while reads and writes wait for
/// it: once the coordinator sees its new generation it sends them again to
/// the new incarnation, so they succeed instead of timing out (the old
/// process will never answer them).
#[test]
fn requests_waiting_for_a_restarted_replica_are_sent_to_its_new_incarnation() {
    for seed in seeds(&[131, 132, 133]) {
        let mut sim = Sim::new(SimConfig {
            seed,
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(40),
            ..SimConfig::default()
        });
        sim.await_stable(Duration::from_secs(60));
        let primaries = sim.primaries("restarting");
        let (coordinator, victim) = (primaries[0], primaries[1]);
        let all: Options<'_> = &[("w", "all"), ("r", "all"), ("timeout", "10000")];
        let put = sim.put(coordinator, "restarting", Some("v1"), None, all);
        assert!(sim.await_reply(put).is_ok(), "seed {seed}");
        // Both requests are on their way to the victim when it dies.
        // A second key the same two nodes are primaries of, so the write is
        // coordinated here, not forwarded.
        let other = (0..1000)
            .map(|k| format!("restarting-{k}"))
            .find(|k| {
                let p = sim.primaries(k);
                p.contains(&coordinator) && p.contains(&victim)
            })
            .expect("a key on both nodes");
        let read = sim.get(coordinator, "restarting", all);
        let write = sim.put(coordinator, &other, Some("v2"), None, all);
        sim.crash(victim, false);
        // The frames reach the dead process and are lost with it.
        sim.run_for(Duration::from_millis(100));
        sim.restart(victim);
        let started = sim.now().mono;
        match sim.await_reply(read) {
            Ok(reply) => assert_eq!(Sim::values(&reply), vec!["v1"], "seed {seed}"),
            Err(e) => panic!("seed {seed}: the read failed: {e}"),
        }
        assert!(sim.await_reply(write).is_ok(), "seed {seed}: the write");
        assert!(
            sim.now().mono - started < Duration::from_secs(10),
            "seed {seed}: answered only at the timeout"
        );
    }
}
