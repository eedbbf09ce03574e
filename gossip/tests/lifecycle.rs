//! Restarts, partitions, leaving, operator removal and message size limits,
//! over the simulated network.

mod sim;

use std::time::Duration;

use chorus_gossip::{
    Ack2, Config, Envelope, Generation, GossipError, Message, NodeDelta, Notification, RingClaim,
    StateKey, StateValue, Status,
};
use sim::{round_target, Net, Sim};

const SECOND: Duration = Duration::from_secs(1);

fn settled(seed: u64, n: usize, config: Config) -> Sim {
    let mut sim = Sim::new(seed, n, 3, config.clone(), Net::default());
    sim.tick_every = Some(config.failure_check_interval);
    sim.run_until(Duration::from_secs(30));
    assert!(sim.membership_converged(), "cluster did not form");
    assert!(sim.all_up(), "cluster did not come up");
    sim
}

/// Runs round by round (at most `max_rounds`) until `done`; returns the rounds taken.
fn rounds_until(sim: &mut Sim, max_rounds: u32, done: impl Fn(&Sim) -> bool) -> Option<u32> {
    for round in 1..=max_rounds {
        sim.run_for(sim.config.gossip_interval);
        if done(sim) {
            return Some(round);
        }
    }
    None
}

fn notes_about(
    sim: &Sim,
    node: usize,
    since: Duration,
) -> impl Iterator<Item = &(Duration, usize, Notification)> {
    let id = sim.id(node);
    sim.notifications.iter().filter(move |(at, _, n)| {
        *at >= since
            && match n {
                Notification::Joined { node, .. }
                | Notification::Restarted { node, .. }
                | Notification::StateChanged { node, .. }
                | Notification::Up { node }
                | Notification::Down { node, .. }
                | Notification::Left { node, .. }
                | Notification::Forgotten { node } => *node == id,
                Notification::Superseded { .. } => false,
            }
    })
}

#[test]
fn a_restarted_node_replaces_its_old_state_everywhere_and_its_old_messages_change_nothing() {
    let n = 12;
    let mut sim = settled(41, n, Config::default());
    let victim = 3;
    let id = sim.id(victim);

    // Step 1: record what the old process sends, including its own state.
    sim.tap = Some(victim);
    sim.run_for(5 * SECOND);
    sim.tap = None;
    let old_messages = std::mem::take(&mut sim.tapped);
    let old_delta: NodeDelta = old_messages
        .iter()
        .find_map(|e| match &e.message {
            Message::Ack(a) => a.states.iter().find(|d| d.node == id).cloned(),
            Message::Ack2(a) => a.states.iter().find(|d| d.node == id).cloned(),
            Message::Syn(_) => None,
        })
        .expect("the old process sent its own state");
    assert!(!old_messages.is_empty());

    // Step 2: it restarts at once with generation 2 and another HTTP address.
    let new_http = "10.9.9.9:8081".parse().expect("address");
    let restarted_at = sim.now;
    sim.restart(victim, 2, Some(new_http));
    let (_, target) = round_target(n);
    let rounds = rounds_until(&mut sim, 30, |sim| {
        (0..n).filter(|&i| i != victim).all(|i| {
            sim.nodes[i].gossiper.member(&id).is_some_and(|m| {
                m.state.generation() == Generation(2) && m.state.http_addr() == Some(new_http)
            })
        })
    })
    .expect("the new generation reached everyone");
    println!("generation 2 replaced generation 1 everywhere in {rounds} rounds (target {target})");
    assert!(rounds as u64 <= target);
    for i in (0..n).filter(|&i| i != victim) {
        assert!(
            notes_about(&sim, victim, restarted_at).any(|(_, at, note)| *at == i
                && matches!(
                    note,
                    Notification::Restarted {
                        old: Generation(1),
                        new: Generation(2),
                        ..
                    }
                )),
            "node {i} did not report the restart"
        );
    }
    // Nobody thought it was down: a quick restart is not an outage.
    assert_eq!(sim.downs_of(victim, restarted_at).len(), 0);

    // Step 3: the old process's messages arrive late. They are refused whole.
    let before: Vec<_> = (0..n)
        .map(|i| sim.nodes[i].gossiper.member(&id).map(|m| m.state.clone()))
        .collect();
    let notes_before = sim.notifications.len();
    for (k, envelope) in old_messages.into_iter().enumerate() {
        let to = (victim + 1 + k % (n - 1)) % n;
        let err = sim
            .inject(to, envelope)
            .expect_err("a message of generation 1");
        assert!(
            matches!(
                err,
                GossipError::StaleGeneration {
                    got: Generation(1),
                    known: Generation(2),
                    ..
                }
            ),
            "{err}"
        );
    }
    // Step 4: a third node relays the old generation's state late. Ignored.
    let relay = Envelope::new(
        sim.nodes[0].gossiper.sender(),
        Message::Ack2(Ack2 {
            states: vec![old_delta],
        }),
    );
    for to in 1..n {
        if to != victim {
            sim.inject(to, relay.clone()).expect("a valid message");
        }
    }
    let after: Vec<_> = (0..n)
        .map(|i| sim.nodes[i].gossiper.member(&id).map(|m| m.state.clone()))
        .collect();
    assert_eq!(before, after, "late messages of generation 1 changed state");
    assert_eq!(
        sim.notifications.len(),
        notes_before,
        "late messages caused notifications"
    );
}

#[test]
fn a_partition_into_two_halves_heals_within_a_bounded_number_of_rounds() {
    let n = 20;
    let mut sim = settled(42, n, Config::default());

    // Step 1: split into even and odd nodes (each half holds a seed).
    let groups: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
    let split_at = sim.now;
    sim.partition(groups.clone());
    sim.run_for(20 * SECOND);
    // Each side now sees the other side down.
    assert!(sim.downs_of(1, split_at).contains_key(&0));
    assert!(sim.downs_of(0, split_at).contains_key(&1));

    // Step 2: both sides change while apart.
    sim.nodes[2]
        .gossiper
        .set_state(StateKey::Load, StateValue::Load(123_456))
        .expect("load");
    sim.nodes[5]
        .gossiper
        .set_state(
            StateKey::Ring,
            StateValue::Ring(RingClaim {
                version: 7,
                hash: 0xfeed,
            }),
        )
        .expect("ring");
    sim.restart(9, 2, None);
    sim.run_for(20 * SECOND);

    // Step 3: heal, and count rounds until both halves agree on every
    // node's generation and entries, and see every node up again.
    sim.heal();
    let healed_at = sim.now;
    let agreed = |sim: &Sim| {
        sim.membership_converged()
            && sim.all_up()
            && (0..n).all(|i| {
                (0..n).filter(|&j| j != i).all(|j| {
                    let own = sim.nodes[j].gossiper.local_state();
                    sim.nodes[i].gossiper.member(&sim.id(j)).is_some_and(|m| {
                        m.state.generation() == own.generation()
                            && m.state.entries().eq(own.entries())
                    })
                })
            })
    };
    let (_, target) = round_target(n);
    let rounds = rounds_until(&mut sim, 40, agreed).expect("both halves converged");
    println!(
        "after the heal, {n} nodes agreed and saw everyone up in {rounds} rounds \
         ({:.1} s; target {target} rounds)",
        (sim.now - healed_at).as_secs_f64()
    );
    assert!(rounds as u64 <= target, "{rounds} rounds");
    // Node 9's restart reached the other half as a restart.
    assert!(notes_about(&sim, 9, healed_at)
        .any(|(_, at, n)| at % 2 == 0 && matches!(n, Notification::Restarted { .. })));
}

#[test]
fn a_node_that_left_does_not_come_back_from_stale_state_and_is_forgotten() {
    let n = 10;
    let config = Config {
        quarantine: Duration::from_secs(60),
        ..Config::default()
    };
    let mut sim = settled(43, n, config);
    let (leaver, stale) = (4, 9);
    let leaver_id = sim.id(leaver);

    // Step 1: node 9 is cut off and keeps its view of node 4 as it is now.
    let mut groups = vec![0u8; n];
    groups[stale] = 1;
    sim.partition(groups);
    sim.run_for(3 * SECOND);
    let stale_view = sim.nodes[stale]
        .gossiper
        .member(&leaver_id)
        .expect("known")
        .state
        .clone();
    assert_eq!(stale_view.status(), Some(Status::Joining));

    // Step 2: node 4 leaves gracefully: leaving, then left, then it stops.
    let left_at = sim.now;
    sim.nodes[leaver].gossiper.begin_leave();
    sim.run_for(5 * SECOND);
    sim.nodes[leaver].gossiper.complete_leave();
    sim.run_for(5 * SECOND);
    sim.stop(leaver);
    sim.run_for(10 * SECOND);
    for i in (0..n).filter(|&i| i != leaver && i != stale) {
        let m = sim.nodes[i]
            .gossiper
            .member(&leaver_id)
            .expect("still remembered");
        assert!(m.left, "node {i} does not know node 4 left");
        let statuses: Vec<Status> = notes_about(&sim, leaver, left_at)
            .filter(|(_, at, _)| *at == i)
            .filter_map(|(_, _, n)| match n {
                Notification::StateChanged {
                    value: StateValue::Status(s),
                    ..
                } => Some(*s),
                _ => None,
            })
            .collect();
        assert_eq!(statuses, [Status::Leaving, Status::Left], "node {i}");
    }
    // A node that leaves is not a failure.
    assert!(sim.downs_of(leaver, left_at).keys().all(|&i| i == stale));

    // Step 3: node 9 comes back with its stale state and gossips it.
    let healed_at = sim.now;
    sim.heal();
    sim.run_for(20 * SECOND);
    for i in (0..n).filter(|&i| i != leaver) {
        let m = sim.nodes[i]
            .gossiper
            .member(&leaver_id)
            .expect("quarantined");
        assert!(m.left, "node {i} brought node 4 back");
    }
    let revived = notes_about(&sim, leaver, healed_at).any(|(_, _, n)| {
        matches!(
            n,
            Notification::Joined { .. } | Notification::Up { .. } | Notification::Restarted { .. }
        )
    });
    assert!(!revived, "stale state revived the node that left");

    // Step 4: after the quarantine every node forgets it, at slightly
    // different times, and the stragglers' digests do not bring it back.
    sim.run_for(Duration::from_secs(200));
    for i in (0..n).filter(|&i| i != leaver) {
        assert!(
            sim.nodes[i].gossiper.member(&leaver_id).is_none(),
            "node {i} still holds node 4"
        );
        let forgotten = notes_about(&sim, leaver, left_at)
            .filter(|(_, at, n)| *at == i && matches!(n, Notification::Forgotten { .. }))
            .count();
        assert_eq!(forgotten, 1, "node {i} forgot node 4 {forgotten} times");
    }
    let revived = notes_about(&sim, leaver, left_at).any(|(_, _, n)| {
        matches!(
            n,
            Notification::Joined { .. } | Notification::Restarted { .. }
        )
    });
    assert!(!revived, "node 4 came back as a ghost");
}

#[test]
fn an_operator_removes_a_dead_node_and_a_restart_brings_it_back() {
    let n = 10;
    let config = Config {
        quarantine: Duration::from_secs(60),
        ..Config::default()
    };
    let mut sim = settled(44, n, config);
    let (dead, operator) = (6, 0);
    let dead_id = sim.id(dead);

    // Step 1: node 6 crashes; nobody removes it on their own.
    sim.stop(dead);
    sim.run_for(20 * SECOND);
    assert_eq!(sim.downs_of(dead, Duration::ZERO).len(), n - 1);
    assert!((0..n).filter(|&i| i != dead).all(|i| sim.nodes[i]
        .gossiper
        .member(&dead_id)
        .is_some_and(|m| !m.left)));

    // Step 2: refusals change nothing.
    let now = sim.now;
    let alive = sim.id(1);
    let g = &mut sim.nodes[operator].gossiper;
    assert_eq!(
        g.remove_node(now, alive),
        Err(GossipError::NodeStillUp(alive))
    );
    assert_eq!(
        g.remove_node(now, g.id()),
        Err(GossipError::CannotRemoveSelf)
    );
    let stranger = chorus_gossip::NodeId::from_u128(42);
    assert_eq!(
        g.remove_node(now, stranger),
        Err(GossipError::UnknownNode(stranger))
    );

    // Step 3: the operator removes node 6; the removal spreads.
    let removed_at = sim.now;
    sim.nodes[operator]
        .gossiper
        .remove_node(now, dead_id)
        .expect("a down node can be removed");
    let rounds = rounds_until(&mut sim, 20, |sim| {
        (0..n).filter(|&i| i != dead).all(|i| {
            sim.nodes[i]
                .gossiper
                .member(&dead_id)
                .is_some_and(|m| m.left)
        })
    })
    .expect("the removal spread");
    println!("the removal reached every node in {rounds} rounds");
    for i in (0..n).filter(|&i| i != dead) {
        assert!(notes_about(&sim, dead, removed_at)
            .any(|(_, at, n)| *at == i && matches!(n, Notification::Left { .. })));
        assert!(sim.nodes[i]
            .gossiper
            .is_quarantined(&dead_id, Generation(1)));
    }

    // Step 4: node 6 is rebuilt and starts with generation 2: a new start,
    // accepted everywhere at once.
    sim.restart(dead, 2, None);
    let rounds = rounds_until(&mut sim, 20, |sim| {
        (0..n).filter(|&i| i != dead).all(|i| {
            sim.nodes[i]
                .gossiper
                .member(&dead_id)
                .is_some_and(|m| !m.left && m.state.generation() == Generation(2))
        })
    })
    .expect("the new generation was accepted");
    println!("the restarted node was accepted everywhere in {rounds} rounds");
    sim.run_for(10 * SECOND);
    assert!(sim.all_up());
}

#[test]
fn a_cluster_larger_than_one_message_converges_over_several_rounds() {
    // 150 nodes' digests alone need about 4 KiB; messages are capped at 2 KiB.
    let n = 150;
    let config = Config {
        max_message_bytes: chorus_gossip::MIN_MESSAGE_BYTES,
        fanout: 1,
        ..Config::default()
    };
    let mut sim = Sim::new(45, n, 3, config.clone(), Net::default());
    sim.tick_every = Some(config.gossip_interval);
    sim.tap = Some(0);
    let rounds = rounds_until(&mut sim, 200, Sim::member_counts_complete)
        .expect("converged despite the size limit");
    let per_message = sim.bytes() as f64 / sim.messages as f64;
    println!(
        "{n} nodes with 2 KiB messages converged in {rounds} rounds; \
         {per_message:.0} bytes per message on average"
    );
    // Every message went through the real codec with the limit enforced
    // (`Sim` encodes with `max_message_bytes` and panics on an error).
    assert!(sim.membership_converged());
    for envelope in &sim.tapped {
        assert!(envelope.encoded_len() <= chorus_gossip::MIN_MESSAGE_BYTES);
    }
    let partial_syns = sim
        .tapped
        .iter()
        .filter(|e| matches!(&e.message, Message::Syn(syn) if !syn.complete))
        .count();
    assert!(
        partial_syns > 0,
        "the digests should not have fit in one message"
    );
    assert!(per_message > 0.0);
}

#[test]
fn a_node_started_below_the_generation_peers_hold_is_told_and_comes_back_above_it() {
    let n = 5;
    let mut sim = settled(51, n, Config::default());
    let victim = 2;
    let id = sim.id(victim);
    let held_by_all = |sim: &Sim, generation: u64| {
        (0..n).filter(|&i| i != victim).all(|i| {
            sim.nodes[i]
                .gossiper
                .member(&id)
                .is_some_and(|m| m.state.generation() == Generation(generation))
        })
    };
    // Step 1: two more starts; peers hold generation 3.
    sim.restart(victim, 2, None);
    sim.restart(victim, 3, None);
    rounds_until(&mut sim, 30, |sim| held_by_all(sim, 3)).expect("generation 3 spread");

    // Step 2: it stops and its data directory is put back from a backup of
    // generation 1, so it starts at 2: below what peers hold.
    sim.stop(victim);
    let restored_at = sim.now;
    sim.restart(victim, 2, None);
    let told = |sim: &Sim| {
        sim.notifications.iter().any(|(at, i, note)| {
            *at >= restored_at
                && *i == victim
                && matches!(
                    note,
                    Notification::Superseded {
                        generation: Generation(3),
                        ..
                    }
                )
        })
    };
    rounds_until(&mut sim, 10, told).expect("the restored node learned of generation 3");
    assert!(held_by_all(&sim, 3), "peers ignore the older generation");
    assert!(!sim.nodes[victim].gossiper.is_self_confirmed());

    // Step 3: it runs on above it, and peers take it as a restart.
    sim.nodes[victim].gossiper.restart_at(Generation(4));
    rounds_until(&mut sim, 30, |sim| held_by_all(sim, 4)).expect("generation 4 spread");
    rounds_until(&mut sim, 30, |sim| {
        sim.nodes[victim].gossiper.is_self_confirmed()
            && (0..n)
                .filter(|&i| i != victim)
                .all(|i| sim.nodes[i].gossiper.is_up(&id))
    })
    .expect("peers see it up and it knows it is the newest incarnation");
}

#[test]
fn a_node_started_at_the_generation_peers_hold_of_a_later_run_is_told() {
    let n = 5;
    let mut sim = settled(52, n, Config::default());
    let victim = 1;
    sim.restart(victim, 2, None);
    sim.run_for(5 * SECOND);
    // A backup of generation 1 starts again at 2: the same generation as the
    // later run peers hold, with fewer versions than it published.
    sim.stop(victim);
    let restored_at = sim.now;
    sim.restart(victim, 2, None);
    rounds_until(&mut sim, 10, |sim| {
        sim.notifications.iter().any(|(at, i, note)| {
            *at >= restored_at
                && *i == victim
                && matches!(
                    note,
                    Notification::Superseded {
                        generation: Generation(2),
                        ..
                    }
                )
        })
    })
    .expect("the restored node learned of the later run");
}
