//! One test per message kind: an event goes in, and the exact list of
//! effects that comes out is compared with `assert_eq!`. Request ids are
//! the engine's to choose, so a test reads the id from the message that
//! carries it and expects it echoed everywhere else.

use chorus_gossip::Envelope;
use chorus_storage::context::CausalContext;

use super::*;
use crate::api::{ReadReply, WriteReply};
use crate::wire::{ForwardedReply, ForwardedWrite};

/// A peer that is not a member, as a frame's sender.
const PEER: Uuid = Uuid::from_u128(7);

fn peer_addr() -> SocketAddr {
    addr(7071)
}

/// The key every test writes, in the partition the engines place it.
fn key() -> WireKey {
    wire_key("k")
}

fn keyref(key: &WireKey) -> KeyRef<'_> {
    KeyRef::new(PartitionId(key.partition), &key.bucket, &key.key)
}

/// `effects` without gossip: what a tick adds besides data messages.
fn without_gossip(effects: Vec<Effect>) -> Vec<Effect> {
    effects
        .into_iter()
        .filter(|e| {
            !matches!(
                e,
                Effect::Send {
                    message: Message::Gossip(_),
                    ..
                } | Effect::SendToSeed {
                    message: Message::Gossip(_),
                    ..
                }
            )
        })
        .collect()
}

/// The request id of the first message among `effects` that names one.
fn request_of(effects: &[Effect]) -> u64 {
    effects
        .iter()
        .find_map(|e| match e {
            Effect::Send {
                message:
                    Message::Store {
                        request: Some(r), ..
                    }
                    | Message::Read { request: r, .. }
                    | Message::Forward { request: r, .. },
                ..
            } => Some(*r),
            _ => None,
        })
        .expect("a message with a request id")
}

/// The other replicas of the key, in preference-list order, with their
/// addresses.
fn others(engines: &[Engine<MemoryStore>], of: usize) -> Vec<(Uuid, SocketAddr)> {
    let ring = engines[of].ring().expect("a ring");
    ring.preference_list_for_key(b"b", b"k")
        .primaries()
        .iter()
        .filter(|&&node| node != engines[of].id())
        .map(|&node| {
            let i = engines.iter().position(|e| e.id() == node).expect("a node");
            (node, addr(7070 + i as u16))
        })
        .collect()
}

fn index_of(engines: &[Engine<MemoryStore>], node: Uuid) -> usize {
    engines.iter().position(|e| e.id() == node).expect("a node")
}

fn frame_from(engine: &Engine<MemoryStore>, message: Message) -> Frame {
    engine.frame(message)
}

#[test]
fn store_sent_a_put_asks_each_other_replica_for_its_copy() {
    let (mut engines, t) = cluster(3);
    engines[0].handle_client(now(t), 1, put("v"));
    let effects = drain(&mut engines[0]);
    let request = request_of(&effects);
    let object = engines[0]
        .store()
        .get(keyref(&key()))
        .expect("readable")
        .expect("the coordinator's copy");
    let expected: Vec<Effect> = others(&engines, 0)
        .into_iter()
        .map(|(to, addr)| Effect::Send {
            to,
            addr,
            message: Message::Store {
                request: Some(request),
                key: key(),
                object: object.encode(),
                sync: false,
                stands_in_for: None,
            },
        })
        .collect();
    assert_eq!(effects, expected);
}

#[test]
fn store_received_is_answered_with_stored_and_a_read_repair_is_not() {
    let mut engine = engine(1, 1);
    drain(&mut engine);
    let object = object_with("v");
    let store = |request| Message::Store {
        request,
        key: key(),
        object: object.encode(),
        sync: true,
        stands_in_for: None,
    };
    engine.handle_message(now(10), peer_addr(), Frame::new(PEER, 1, store(Some(5))));
    assert_eq!(
        drain(&mut engine),
        vec![Effect::Send {
            to: PEER,
            addr: peer_addr(),
            message: Message::Stored {
                request: 5,
                key: key(),
                result: Ok(StoredAck { durable: true }),
            },
        }]
    );
    assert_eq!(
        engine.store().get(keyref(&key())).expect("readable"),
        Some(object.clone())
    );
    // A read repair names no request: stored, not answered.
    engine.handle_message(now(11), peer_addr(), Frame::new(PEER, 1, store(None)));
    assert_eq!(drain(&mut engine), vec![]);
}

#[test]
fn stored_for_a_put_answers_the_client_once_w_replicas_have_the_write() {
    let (mut engines, t) = cluster(3);
    let mut request = put("v");
    if let ClientRequest::Put(write) = &mut request {
        write.options = options(&[("w", "all")]);
    }
    engines[0].handle_client(now(t), 1, request);
    let effects = drain(&mut engines[0]);
    let request = request_of(&effects);
    let object = engines[0]
        .store()
        .get(keyref(&key()))
        .expect("readable")
        .expect("the coordinator's copy");
    let stored = |engine: &Engine<MemoryStore>| {
        engine.frame(Message::Stored {
            request,
            key: key(),
            result: Ok(StoredAck { durable: false }),
        })
    };
    let others = others(&engines, 0);
    let first = index_of(&engines, others[0].0);
    let second = index_of(&engines, others[1].0);
    let frame = stored(&engines[first]);
    engines[0].handle_message(now(t + 1), others[0].1, frame);
    assert_eq!(drain(&mut engines[0]), vec![], "w=all waits for the third");
    let frame = stored(&engines[second]);
    engines[0].handle_message(now(t + 2), others[1].1, frame);
    let dot = object.siblings()[0].dot;
    assert_eq!(
        drain(&mut engines[0]),
        vec![Effect::Reply {
            client: 1,
            result: Ok(ClientReply::Write(WriteReply::Written {
                context: object.context_for_writer(&CausalContext::default(), dot),
                object: None,
            })),
        }]
    );
}

#[test]
fn stored_for_a_hint_deletes_it() {
    let (mut engines, mut t) = cluster(2);
    let target = engines[1].id();
    let object = object_with("h");
    engines[0]
        .membership
        .parts
        .store
        .add_hint(target, keyref(&key()), &object, Durability::Buffered)
        .expect("queued");
    // The next hint round hands it over.
    let mut effects = Vec::new();
    for _ in 0..1_000 {
        t += 10;
        engines[0].handle_tick(now(t));
        effects = without_gossip(drain(&mut engines[0]));
        if !effects.is_empty() {
            break;
        }
    }
    let request = request_of(&effects);
    assert_eq!(
        effects,
        vec![Effect::Send {
            to: target,
            addr: addr(7071),
            message: Message::Store {
                request: Some(request),
                key: key(),
                object: object.encode(),
                sync: false,
                stands_in_for: None,
            },
        }]
    );
    let frame = engines[1].frame(Message::Stored {
        request,
        key: key(),
        result: Ok(StoredAck { durable: false }),
    });
    engines[0].handle_message(now(t + 1), addr(7071), frame);
    assert_eq!(drain(&mut engines[0]), vec![]);
    assert_eq!(engines[0].pending_hints().expect("memory"), vec![]);
    assert_eq!(engines[0].stats().hints_delivered, 1);
}

#[test]
fn read_sent_a_get_asks_each_other_replica() {
    let (mut engines, t) = cluster(3);
    engines[0].handle_client(
        now(t),
        1,
        ClientRequest::Get(ReadRequest {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            options: options(&[("r", "all")]),
        }),
    );
    let effects = drain(&mut engines[0]);
    let request = request_of(&effects);
    let expected: Vec<Effect> = others(&engines, 0)
        .into_iter()
        .map(|(to, addr)| Effect::Send {
            to,
            addr,
            message: Message::Read {
                request,
                key: key(),
            },
        })
        .collect();
    assert_eq!(effects, expected);
}

#[test]
fn read_received_is_answered_with_the_local_copy() {
    let mut engine = engine(1, 1);
    drain(&mut engine);
    let object = object_with("v");
    engine
        .membership
        .parts
        .store
        .merge(keyref(&key()), &object, Durability::Buffered)
        .expect("stored");
    engine.handle_message(
        now(10),
        peer_addr(),
        Frame::new(
            PEER,
            1,
            Message::Read {
                request: 3,
                key: key(),
            },
        ),
    );
    assert_eq!(
        drain(&mut engine),
        vec![Effect::Send {
            to: PEER,
            addr: peer_addr(),
            message: Message::ReadReply {
                request: 3,
                key: key(),
                result: Ok(serde_bytes::ByteBuf::from(object.encode())),
            },
        }]
    );
}

#[test]
fn read_reply_answers_the_client_once_r_replicas_have_answered() {
    let (mut engines, t) = cluster(3);
    let object = object_with("v");
    for engine in &mut engines {
        engine
            .membership
            .parts
            .store
            .merge(keyref(&key()), &object, Durability::Buffered)
            .expect("stored");
    }
    engines[0].handle_client(
        now(t),
        1,
        ClientRequest::Get(ReadRequest {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            options: options(&[("r", "all")]),
        }),
    );
    let effects = drain(&mut engines[0]);
    let request = request_of(&effects);
    let reply = |engine: &Engine<MemoryStore>| {
        frame_from(
            engine,
            Message::ReadReply {
                request,
                key: key(),
                result: Ok(serde_bytes::ByteBuf::from(object.encode())),
            },
        )
    };
    let others = others(&engines, 0);
    let frame = reply(&engines[index_of(&engines, others[0].0)]);
    engines[0].handle_message(now(t + 1), others[0].1, frame);
    assert_eq!(drain(&mut engines[0]), vec![], "r=all waits for the third");
    let frame = reply(&engines[index_of(&engines, others[1].0)]);
    engines[0].handle_message(now(t + 2), others[1].1, frame);
    assert_eq!(
        drain(&mut engines[0]),
        vec![Effect::Reply {
            client: 1,
            result: Ok(ClientReply::Read(ReadReply { object })),
        }]
    );
}

/// Four nodes, N = 3: the index of one that is not a replica of the key
/// and of the key's first primary.
fn outsider_and_coordinator(engines: &[Engine<MemoryStore>]) -> (usize, usize) {
    let ring = engines[0].ring().expect("a ring").clone();
    let list = ring.preference_list_for_key(b"b", b"k");
    let outsider = (0..engines.len())
        .find(|&i| !list.primaries().contains(&engines[i].id()))
        .expect("4 nodes, 3 replicas");
    (outsider, index_of(engines, list.primaries()[0]))
}

#[test]
fn forward_sent_a_node_that_holds_no_copy_forwards_the_write() {
    let (mut engines, t) = cluster_with(4, 3, StoreConfig::default());
    let (outsider, coordinator) = outsider_and_coordinator(&engines);
    engines[outsider].handle_client(now(t), 1, put("v"));
    let effects = drain(&mut engines[outsider]);
    let request = request_of(&effects);
    assert_eq!(
        effects,
        vec![Effect::Send {
            to: engines[coordinator].id(),
            addr: addr(7070 + coordinator as u16),
            message: Message::Forward {
                request,
                write: ForwardedWrite {
                    bucket: b"b".to_vec(),
                    key: b"k".to_vec(),
                    value: Some(b"v".to_vec()),
                    context: None,
                    w: 2,
                    pw: 0,
                    timeout_ms: chorus_client::options::DEFAULT_TIMEOUT_MS,
                    sync: false,
                    sloppy: true,
                    return_body: false,
                    content_type: None,
                },
            },
        }]
    );
}

#[test]
fn forward_received_is_coordinated_and_answered_with_forward_reply() {
    let (mut engines, t) = cluster_with(4, 3, StoreConfig::default());
    let (outsider, coordinator) = outsider_and_coordinator(&engines);
    engines[outsider].handle_client(now(t), 1, put("v"));
    let effects = drain(&mut engines[outsider]);
    let forwarded = request_of(&effects);
    let Some(Effect::Send { message, .. }) = effects.into_iter().next() else {
        panic!("a forward");
    };
    let frame = engines[outsider].frame(message);
    let from = addr(7070 + outsider as u16);
    engines[coordinator].handle_message(now(t), from, frame);
    // The coordinator stores its copy and asks the two other replicas.
    let effects = drain(&mut engines[coordinator]);
    let request = request_of(&effects);
    let object = engines[coordinator]
        .store()
        .get(keyref(&key()))
        .expect("readable")
        .expect("the coordinator's copy");
    let others = others(&engines, coordinator);
    let expected: Vec<Effect> = others
        .iter()
        .map(|&(to, addr)| Effect::Send {
            to,
            addr,
            message: Message::Store {
                request: Some(request),
                key: key(),
                object: object.encode(),
                sync: false,
                stands_in_for: None,
            },
        })
        .collect();
    assert_eq!(effects, expected);
    // One acknowledgement makes w = 2: the outsider gets the outcome.
    let frame = engines[index_of(&engines, others[0].0)].frame(Message::Stored {
        request,
        key: key(),
        result: Ok(StoredAck { durable: false }),
    });
    engines[coordinator].handle_message(now(t + 1), others[0].1, frame);
    let dot = object.siblings()[0].dot;
    assert_eq!(
        drain(&mut engines[coordinator]),
        vec![Effect::Send {
            to: engines[outsider].id(),
            addr: from,
            message: Message::ForwardReply {
                request: forwarded,
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
                result: Ok(ForwardedReply {
                    context: object
                        .context_for_writer(&CausalContext::default(), dot)
                        .to_bytes(),
                    object: None,
                }),
            },
        }]
    );
}

#[test]
fn forward_reply_answers_the_client() {
    let (mut engines, t) = cluster_with(4, 3, StoreConfig::default());
    let (outsider, coordinator) = outsider_and_coordinator(&engines);
    engines[outsider].handle_client(now(t), 1, put("v"));
    let effects = drain(&mut engines[outsider]);
    let request = request_of(&effects);
    let context = object_with("v").context_for_reader();
    let frame = engines[coordinator].frame(Message::ForwardReply {
        request,
        bucket: b"b".to_vec(),
        key: b"k".to_vec(),
        result: Ok(ForwardedReply {
            context: context.to_bytes(),
            object: None,
        }),
    });
    engines[outsider].handle_message(now(t + 1), addr(7070 + coordinator as u16), frame);
    assert_eq!(
        drain(&mut engines[outsider]),
        vec![Effect::Reply {
            client: 1,
            result: Ok(ClientReply::Write(WriteReply::Written {
                context,
                object: None,
            })),
        }]
    );
}

#[test]
fn ring_fetch_is_answered_with_ring_push() {
    let (mut engines, t) = cluster(2);
    let ring = engines[1].ring().expect("a ring").clone();
    let frame = engines[0].frame(Message::RingFetch {
        version: ring.version(),
    });
    engines[1].handle_message(now(t), addr(7070), frame);
    assert_eq!(
        drain(&mut engines[1]),
        vec![Effect::Send {
            to: engines[0].id(),
            addr: addr(7070),
            message: Message::RingPush {
                ring: rmp_serde::to_vec(&ring).expect("encodes"),
            },
        }]
    );
    // A fetch for a newer ring than it holds is not answered.
    let frame = engines[0].frame(Message::RingFetch {
        version: ring.version() + 1,
    });
    engines[1].handle_message(now(t), addr(7070), frame);
    assert_eq!(drain(&mut engines[1]), vec![]);
}

#[test]
fn ring_push_of_a_better_ring_installs_it_without_sending() {
    let (engines, _) = cluster(3);
    let ring = engines[0].ring().expect("a ring").clone();
    // A node that starts alone and holds no ring yet.
    let mut joining = engine(3, 3);
    drain(&mut joining);
    assert!(joining.ring().is_none());
    joining.handle_message(
        now(10),
        addr(7070),
        engines[0].frame(Message::RingPush {
            ring: rmp_serde::to_vec(&ring).expect("encodes"),
        }),
    );
    assert_eq!(drain(&mut joining), vec![]);
    assert_eq!(joining.ring(), Some(&ring));
}

#[test]
fn gossip_a_seed_is_sent_a_syn_and_answers_it_with_an_ack() {
    let kinds = |effects: &[Effect]| -> Vec<(Option<Uuid>, SocketAddr, &'static str)> {
        effects
            .iter()
            .map(|e| match e {
                Effect::Send {
                    to,
                    addr,
                    message: Message::Gossip(bytes),
                } => (Some(*to), *addr, kind(bytes)),
                Effect::SendToSeed {
                    addr,
                    message: Message::Gossip(bytes),
                } => (None, *addr, kind(bytes)),
                other => panic!("only gossip expected, got {other:?}"),
            })
            .collect()
    };
    let start = |i: u16, seed: u16| {
        let mut config = EngineConfig {
            name: format!("node{i}"),
            replicas: 3,
            initial_members: 3,
            partitions: 8,
            ..EngineConfig::default()
        };
        config.gossip.seeds = vec![addr(seed)];
        Engine::start(
            config,
            MemoryStore::default(),
            addr(i),
            addr(8000 + i),
            now(0),
            u64::from(i),
        )
        .expect("starts")
    };
    let mut a = start(7070, 7071);
    let mut b = start(7071, 7070);
    drain(&mut a);
    drain(&mut b);
    // A gossip round: `a` knows `b` only as a seed address.
    let mut t = 0;
    let syn = loop {
        t += 10;
        a.handle_tick(now(t));
        let effects = drain(&mut a);
        if !effects.is_empty() {
            break effects;
        }
    };
    assert_eq!(kinds(&syn), vec![(None, addr(7071), "syn")]);
    let Some(Effect::SendToSeed { message, .. }) = syn.into_iter().next() else {
        unreachable!("checked above");
    };
    b.handle_message(now(t), addr(7070), a.frame(message));
    // `b` answers on the address the SYN came from, naming `a` by id.
    assert_eq!(
        kinds(&drain(&mut b)),
        vec![(Some(a.id()), addr(7070), "ack")]
    );
}

/// The kind of a gossip envelope.
fn kind(bytes: &[u8]) -> &'static str {
    Envelope::decode(bytes, usize::MAX)
        .expect("a gossip envelope")
        .message
        .kind()
}

/// Group commit: a write an effect depends on is flushed before the
/// effect leaves the engine, and effects of several inputs share a flush.
#[test]
fn no_effect_leaves_before_the_writes_are_flushed() {
    let config = EngineConfig {
        replicas: 1,
        initial_members: 1,
        partitions: 8,
        ..EngineConfig::default()
    };
    let store = MemoryStore::with_group_commit(StoreConfig::default());
    let mut engine =
        Engine::start(config, store, addr(7070), addr(8080), now(0), 1).expect("starts");
    assert_eq!(engine.store().unflushed_writes(), 0, "start flushes");
    drain(&mut engine);
    let store = |request| {
        Frame::new(
            PEER,
            1,
            Message::Store {
                request: Some(request),
                key: wire_key(&format!("k{request}")),
                object: object_with("v").encode(),
                sync: false,
                stands_in_for: None,
            },
        )
    };
    engine.handle_message(now(10), peer_addr(), store(1));
    engine.handle_message(now(10), peer_addr(), store(2));
    assert!(
        engine.store().unflushed_writes() >= 2,
        "the writes wait for the flush"
    );
    let first = engine.poll_effect().expect("an acknowledgement");
    assert_eq!(
        engine.store().unflushed_writes(),
        0,
        "flushed before the first effect left: {first:?}"
    );
    assert_eq!(
        drain(&mut engine).len(),
        1,
        "the second ack shares the flush"
    );
}

/// A coordinating replica too busy for a forwarded write says so with the
/// client's own error: the client hears `overloaded`, not `unavailable`.
#[test]
fn forward_reply_carries_the_coordinators_error_as_the_client_gets_it() {
    let (mut engines, t) = cluster_with(4, 3, StoreConfig::default());
    let (outsider, coordinator) = outsider_and_coordinator(&engines);
    engines[coordinator].shards[0]
        .shard
        .ledger
        .budget
        .max_pending_requests = 0;
    engines[outsider].handle_client(now(t), 1, put("v"));
    let effects = drain(&mut engines[outsider]);
    let forwarded = request_of(&effects);
    let Some(Effect::Send { message, .. }) = effects.into_iter().next() else {
        panic!("a forward");
    };
    let from = addr(7070 + outsider as u16);
    let frame = engines[outsider].frame(message);
    engines[coordinator].handle_message(now(t), from, frame);
    let effects = drain(&mut engines[coordinator]);
    let busy = match &effects[..] {
        [Effect::Send {
            message:
                Message::ForwardReply {
                    result: Err(RequestError::Overloaded(busy)),
                    ..
                },
            ..
        }] => busy.clone(),
        other => panic!("expected an overloaded answer, got {other:?}"),
    };
    assert_eq!(
        effects,
        vec![Effect::Send {
            to: engines[outsider].id(),
            addr: from,
            message: Message::ForwardReply {
                request: forwarded,
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
                result: Err(RequestError::Overloaded(busy.clone())),
            },
        }]
    );
    let frame = engines[coordinator].frame(effects[0].clone().into_message());
    engines[outsider].handle_message(now(t + 1), addr(7070 + coordinator as u16), frame);
    assert_eq!(
        drain(&mut engines[outsider]),
        vec![Effect::Reply {
            client: 1,
            result: Err(RequestError::Overloaded(busy)),
        }]
    );
}

impl Effect {
    /// The message of a send.
    fn into_message(self) -> Message {
        match self {
            Effect::Send { message, .. } | Effect::SendToSeed { message, .. } => message,
            other => panic!("not a send: {other:?}"),
        }
    }
}
