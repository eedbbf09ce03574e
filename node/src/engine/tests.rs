use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use chorus_ring::{PartitionId, Partitions};
use chorus_storage::hlc::Timestamp;
use chorus_storage::object::{ContentTypeError, Object, MAX_CONTENT_TYPE_BYTES};
use chorus_storage::store::{Durability, KeyRef, MemoryStore, Store, StoreConfig};
use chorus_storage::version::ActorId;
use uuid::Uuid;

use super::coordinator::GetRequest;
use super::forward::{SeenForwards, MAX_FORWARDS_REMEMBERED};
use super::*;
use crate::api::{ReadRequest, RequestError, WriteRequest};
use crate::core::{GetCoordinator, PutError, Replica, ReplicaError, RequestOptions};
use crate::wire::{Frame, Message, StoredAck, WireKey, MAX_FRAME_BYTES};

const WALL: u64 = 1_767_225_600_000;

fn now(ms: u64) -> Now {
    Now {
        mono: Duration::from_millis(ms),
        wall_ms: WALL + ms,
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn engine(replicas: usize, initial_members: usize) -> Engine<MemoryStore> {
    let config = EngineConfig {
        replicas,
        initial_members,
        partitions: 8,
        ..EngineConfig::default()
    };
    Engine::start(
        config,
        MemoryStore::default(),
        addr(7070),
        addr(8080),
        now(0),
        1,
    )
    .expect("starts")
}

fn drain(engine: &mut Engine<MemoryStore>) -> Vec<Effect> {
    std::iter::from_fn(|| engine.poll_effect()).collect()
}

fn put(value: &str) -> ClientRequest {
    ClientRequest::Put(WriteRequest {
        bucket: b"b".to_vec(),
        key: b"k".to_vec(),
        value: Some(value.as_bytes().to_vec()),
        content_type: None,
        context: None,
        options: RequestOptions::default(),
    })
}

fn replies(effects: &[Effect]) -> Vec<(ClientId, &Result<ClientReply, RequestError>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reply { client, result } => Some((*client, result)),
            Effect::Send { .. } | Effect::SendToSeed { .. } | Effect::ResetConnection { .. } => {
                None
            }
        })
        .collect()
}

#[test]
fn requests_before_the_ring_exists_are_refused_as_unavailable() {
    // Three members are needed for the first ring; this node is alone.
    let mut engine = engine(3, 3);
    drain(&mut engine);
    engine.handle_client(now(10), 1, put("v"));
    let effects = drain(&mut engine);
    let replies = replies(&effects);
    assert_eq!(replies.len(), 1);
    assert!(matches!(replies[0], (1, Err(RequestError::Unavailable(_)))));
    assert!(!engine.is_ready());
}

#[test]
fn a_lone_node_builds_its_ring_and_serves_put_then_get_without_sending_data() {
    let mut engine = engine(1, 1);
    assert!(
        engine.is_ready(),
        "the claimant built a one-node ring at start"
    );
    drain(&mut engine);
    engine.handle_client(now(10), 1, put("v1"));
    let effects = drain(&mut engine);
    assert!(
        effects.iter().all(|e| matches!(e, Effect::Reply { .. })),
        "no frames: {effects:?}"
    );
    let context = match replies(&effects)[..] {
        [(1, Ok(ClientReply::Write(reply)))] => reply.context(),
        ref other => panic!("expected a write reply, got {other:?}"),
    };
    assert_eq!(context.version_vector().len(), 1);
    engine.handle_client(
        now(20),
        2,
        ClientRequest::Get(ReadRequest {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            options: RequestOptions::default(),
        }),
    );
    let effects = drain(&mut engine);
    match replies(&effects)[..] {
        [(2, Ok(ClientReply::Read(reply)))] => {
            let values: Vec<_> = reply
                .object
                .live()
                .map(|s| s.value.as_deref().map(<[u8]>::to_vec))
                .collect();
            assert_eq!(values, vec![Some(b"v1".to_vec())]);
        }
        ref other => panic!("expected a read reply, got {other:?}"),
    }
}

#[test]
fn invalid_requests_are_refused_before_any_work() {
    let mut engine = engine(1, 1);
    drain(&mut engine);
    let mut request = put("v");
    if let ClientRequest::Put(write) = &mut request {
        write.options = RequestOptions::parse([("w", "2")]).expect("parses");
    }
    engine.handle_client(now(10), 1, request);
    let mut empty_key = put("v");
    if let ClientRequest::Put(write) = &mut empty_key {
        write.key.clear();
    }
    engine.handle_client(now(10), 2, empty_key);
    let effects = drain(&mut engine);
    let replies = replies(&effects);
    assert!(
        matches!(replies[0], (1, Err(RequestError::Options(_)))),
        "{replies:?}"
    );
    assert!(
        matches!(replies[1], (2, Err(RequestError::InvalidKey { .. }))),
        "{replies:?}"
    );
    assert!(engine
        .store()
        .get(KeyRef::new(PartitionId(0), b"b", b"k"))
        .is_ok());
    assert_eq!(engine.stats().pending_requests, 0);
}

#[test]
fn a_stored_copy_for_another_primary_is_acknowledged_and_kept_as_a_hint() {
    let mut engine = engine(1, 1);
    drain(&mut engine);
    let partitions = Partitions::new(8).expect("valid");
    let partition = partitions.of_key(b"b", b"k");
    let mut object = Object::new();
    let dot = chorus_storage::version::Dot::new(ActorId(9), WALL);
    object
        .write(
            &chorus_storage::version::VersionVector::new(),
            dot,
            chorus_storage::hlc::Timestamp::new(WALL, 0),
            Some(b"x".to_vec()),
        )
        .expect("a fresh dot");
    let owner = Uuid::from_u128(42);
    let peer = Uuid::from_u128(7);
    let frame = Frame::new(
        peer,
        1,
        Message::Store {
            request: Some(5),
            key: WireKey {
                partition: partition.0,
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
            },
            object: object.encode(),
            sync: true,
            stands_in_for: Some(owner),
        },
    );
    engine
        .handle_frame(now(10), addr(7071), &frame.encode())
        .expect("decodes");
    let effects = drain(&mut engine);
    // The acknowledgement goes back to where the frame came from.
    let sent: Vec<&Message> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                addr: to, message, ..
            } if *to == addr(7071) => Some(message),
            _ => None,
        })
        .collect();
    assert!(
        sent.iter().any(|m| matches!(
            m,
            Message::Stored {
                request: 5,
                result: Ok(StoredAck { durable: true }),
                ..
            }
        )),
        "{sent:?}"
    );
    assert_eq!(engine.pending_hints().expect("memory"), vec![(owner, 1)]);
    let stored = engine
        .store()
        .get(KeyRef::new(partition, b"b", b"k"))
        .expect("readable")
        .expect("stored");
    assert_eq!(stored, object);
}

fn store_frame(partition: PartitionId, object: &Object, sync: bool) -> Vec<u8> {
    Frame::new(
        Uuid::from_u128(7),
        1,
        Message::Store {
            request: Some(5),
            key: WireKey {
                partition: partition.0,
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
            },
            object: object.encode(),
            sync,
            stands_in_for: None,
        },
    )
    .encode()
}

fn acks(effects: &[Effect]) -> Vec<Result<StoredAck, ReplicaError>> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                message: Message::Stored { result, .. },
                ..
            } => Some(result.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_durable_ack_of_a_version_already_held_unsynced_syncs_it_first() {
    let mut engine = engine(1, 1);
    // A client write takes a clock lease, so the store below is not
    // synced by persisting a new ceiling.
    let mut other = put("v");
    if let ClientRequest::Put(write) = &mut other {
        write.key = b"other".to_vec();
    }
    engine.handle_client(now(10), 1, other);
    drain(&mut engine);
    let partition = Partitions::new(8).expect("valid").of_key(b"b", b"k");
    let keyref = KeyRef::new(partition, b"b", b"k");
    let mut object = Object::new();
    object
        .write(
            &chorus_storage::version::VersionVector::new(),
            chorus_storage::version::Dot::new(ActorId(9), WALL + 20),
            chorus_storage::hlc::Timestamp::new(WALL + 20, 0),
            Some(b"x".to_vec()),
        )
        .expect("a fresh dot");
    // The replica already holds the version, unsynced (a read repair).
    assert!(engine
        .store()
        .merge(keyref, &object, Durability::Buffered)
        .expect("stored"));
    engine
        .handle_frame(now(30), addr(7071), &store_frame(partition, &object, true))
        .expect("decodes");
    let effects = drain(&mut engine);
    assert_eq!(acks(&effects), vec![Ok(StoredAck { durable: true })]);
    // The acknowledgement promised the version survives a machine crash.
    let store = engine.into_store().crash();
    assert_eq!(store.get(keyref).expect("readable"), Some(object));
}

#[test]
fn a_failed_clock_persist_is_retried_before_the_next_dot() {
    let mut engine = engine(1, 1);
    engine.handle_client(now(10), 1, put("v1"));
    drain(&mut engine);
    // Past the lease: the next write needs a new ceiling, and the disk fails.
    engine.store().fail_writes(true);
    engine.handle_client(now(5_000), 2, put("v2"));
    let effects = drain(&mut engine);
    assert!(
        matches!(replies(&effects)[..], [(2, Err(RequestError::Internal(_)))]),
        "{effects:?}"
    );
    engine.store().fail_writes(false);
    engine.handle_client(now(5_001), 3, put("v3"));
    let effects = drain(&mut engine);
    assert!(
        matches!(replies(&effects)[..], [(3, Ok(ClientReply::Write(_)))]),
        "{effects:?}"
    );
    let partition = Partitions::new(8).expect("valid").of_key(b"b", b"k");
    let stored = engine
        .store()
        .get(KeyRef::new(partition, b"b", b"k"))
        .expect("readable")
        .expect("written");
    let newest = stored.latest_timestamp().expect("a version");
    let ceiling = engine
        .store()
        .hlc_ceiling()
        .expect("readable")
        .expect("set");
    assert!(
        newest < ceiling,
        "a dot at {newest} was minted past the durable ceiling {ceiling}"
    );
}

#[test]
fn a_start_after_an_unclean_stop_draws_new_actors_and_a_clean_stop_keeps_them() {
    let mut engine = engine(1, 1);
    engine.handle_client(now(10), 1, put("v1"));
    drain(&mut engine);
    let partition = Partitions::new(8).expect("valid").of_key(b"b", b"k");
    let first = engine.store().partition_actor(partition).expect("readable");
    assert!(first.is_some());
    let config = EngineConfig {
        replicas: 1,
        initial_members: 1,
        partitions: 8,
        ..EngineConfig::default()
    };
    // A clean stop: the actor is kept.
    engine.stop().expect("stops");
    let store = engine.into_store().restart();
    let engine =
        Engine::start(config.clone(), store, addr(7070), addr(8080), now(20), 2).expect("starts");
    assert_eq!(
        engine.store().partition_actor(partition).expect("readable"),
        first
    );
    // A crash (no clean stop): a new epoch, no actor until the next write.
    let store = engine.into_store().restart();
    let engine = Engine::start(config, store, addr(7070), addr(8080), now(30), 3).expect("starts");
    assert_eq!(
        engine.store().partition_actor(partition).expect("readable"),
        None
    );
}

#[test]
fn malformed_frames_are_refused_and_counted() {
    let mut engine = engine(1, 1);
    drain(&mut engine);
    assert!(engine
        .handle_frame(now(10), addr(7071), b"\xff\x00garbage")
        .is_err());
    let mut wrong_partition = Frame::new(
        Uuid::from_u128(7),
        1,
        Message::Read {
            request: 3,
            key: WireKey {
                partition: 999,
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
            },
        },
    )
    .encode();
    engine
        .handle_frame(now(10), addr(7071), &wrong_partition)
        .expect("a well-formed frame");
    let effects = drain(&mut engine);
    let refused = effects.iter().any(|e| match e {
        Effect::Send { message, .. } => matches!(
            message,
            Message::ReadReply {
                request: 3,
                result: Err(ReplicaError::Refused(_)),
                ..
            }
        ),
        _ => false,
    });
    assert!(
        refused,
        "a read of a key under the wrong partition is refused"
    );
    assert_eq!(engine.stats().frames_refused, 1);
    wrong_partition.truncate(4);
    assert!(engine
        .handle_frame(now(11), addr(7071), &wrong_partition)
        .is_err());
    assert_eq!(engine.stats().frames_refused, 2);
}

/// A get in flight on `engine`, asking `peer` for `key`.
fn pending_get(engine: &mut Engine<MemoryStore>, peer: Uuid, key: &WireKey) -> u64 {
    let shard = requests::shard_of_partition(PartitionId(key.partition), engine.shard_count);
    let shard = &mut engine.shards[shard].shard;
    let coordinator = GetCoordinator::new(1, 1, 0, vec![Replica::primary(peer)]);
    let get = GetRequest::new(
        9,
        key.clone(),
        coordinator,
        vec![peer],
        vec![],
        Duration::MAX,
        None,
    );
    shard.coordinator.insert_get(&mut shard.ledger, get)
}

fn wire_key(key: &str) -> WireKey {
    let partition = Partitions::new(8)
        .expect("valid")
        .of_key(b"b", key.as_bytes());
    WireKey {
        partition: partition.0,
        bucket: b"b".to_vec(),
        key: key.as_bytes().to_vec(),
    }
}

fn object_with(value: &str) -> Object {
    let mut object = Object::new();
    let dot = chorus_storage::version::Dot::new(ActorId(9), WALL);
    object
        .write(
            &chorus_storage::version::VersionVector::new(),
            dot,
            Timestamp::new(WALL, 0),
            Some(value.as_bytes().to_vec()),
        )
        .expect("a fresh dot");
    object
}

#[test]
fn a_read_reply_naming_another_key_is_ignored() {
    let mut engine = engine(1, 1);
    drain(&mut engine);
    let peer = Uuid::from_u128(7);
    let asked = wire_key("asked");
    let request = pending_get(&mut engine, peer, &asked);
    let reply = |key: WireKey, value: &str| {
        Frame::new(
            peer,
            1,
            Message::ReadReply {
                request,
                key,
                result: Ok(serde_bytes::ByteBuf::from(object_with(value).encode())),
            },
        )
        .encode()
    };
    // Step 1: the same request id, another key: not an answer.
    engine
        .handle_frame(now(10), addr(7071), &reply(wire_key("other"), "wrong"))
        .expect("decodes");
    assert_eq!(replies(&drain(&mut engine)), vec![]);
    // Step 2: the answer that names the key is taken.
    engine
        .handle_frame(now(11), addr(7071), &reply(asked, "right"))
        .expect("decodes");
    let effects = drain(&mut engine);
    match replies(&effects)[..] {
        [(9, Ok(ClientReply::Read(read)))] => {
            let values: Vec<_> = read
                .object
                .live()
                .map(|s| s.value.as_deref().map(<[u8]>::to_vec))
                .collect();
            assert_eq!(values, vec![Some(b"right".to_vec())]);
        }
        ref other => panic!("expected the read's answer, got {other:?}"),
    }
}

#[test]
fn a_message_from_an_older_generation_is_dropped() {
    let mut engine = engine(1, 1);
    drain(&mut engine);
    let peer = Uuid::from_u128(7);
    let store = |generation: u64, request: u64, key: &str| {
        Frame::new(
            peer,
            generation,
            Message::Store {
                request: Some(request),
                key: wire_key(key),
                object: object_with(key).encode(),
                sync: false,
                stands_in_for: None,
            },
        )
        .encode()
    };
    let acks = |effects: &[Effect]| -> Vec<u64> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send {
                    message: Message::Stored { request, .. },
                    ..
                } => Some(*request),
                _ => None,
            })
            .collect()
    };
    // Step 1: generation 2 is the first this node hears of the peer.
    engine
        .handle_frame(now(10), addr(7071), &store(2, 5, "new"))
        .expect("decodes");
    assert_eq!(acks(&drain(&mut engine)), vec![5]);
    // Step 2: a delayed frame of generation 1 is dropped unanswered.
    engine
        .handle_frame(now(11), addr(7071), &store(1, 6, "old"))
        .expect("decodes");
    assert_eq!(drain(&mut engine), vec![]);
    assert_eq!(engine.stats().frames_stale, 1);
    let old = engine
        .store()
        .get(KeyRef::new(
            PartitionId(wire_key("old").partition),
            b"b",
            b"old",
        ))
        .expect("readable");
    assert_eq!(old, None, "nothing of the old incarnation was stored");
    // Step 3: generation 3 means the peer restarted: the connection to
    // it is reset before the answer goes out on a fresh one.
    engine
        .handle_frame(now(12), addr(7071), &store(3, 7, "newer"))
        .expect("decodes");
    let effects = drain(&mut engine);
    assert_eq!(
        effects.first(),
        Some(&Effect::ResetConnection { addr: addr(7071) })
    );
    assert_eq!(acks(&effects), vec![7]);
}

/// Every data-plane message kind, for keys across the partitions and
/// answers naming each shard of two and one past them.
fn data_plane_messages() -> Vec<Message> {
    let mut messages = Vec::new();
    for k in 0..16 {
        let name = format!("k{k}");
        let key = wire_key(&name);
        messages.push(Message::Store {
            request: Some(1),
            key: key.clone(),
            object: object_with(&name).encode(),
            sync: false,
            stands_in_for: None,
        });
        messages.push(Message::Read { request: 2, key });
        messages.push(Message::Forward {
            request: 3,
            write: crate::wire::ForwardedWrite {
                bucket: b"b".to_vec(),
                key: name.into_bytes(),
                value: Some(b"v".to_vec()),
                context: None,
                w: 2,
                pw: 0,
                timeout_ms: 1_000,
                sync: false,
                sloppy: true,
                return_body: false,
                content_type: None,
            },
        });
    }
    for shard in 0..3u64 {
        let request = shard << 32 | 9;
        messages.push(Message::Stored {
            request,
            key: wire_key("k0"),
            result: Ok(StoredAck { durable: false }),
        });
        messages.push(Message::ReadReply {
            request,
            key: wire_key("k0"),
            result: Err(ReplicaError::Overloaded),
        });
        messages.push(Message::ForwardReply {
            request,
            bucket: b"b".to_vec(),
            key: b"k0".to_vec(),
            result: Err(RequestError::Unavailable("busy".into())),
        });
    }
    messages
}

/// The routes past membership send a peer's data-plane frame to the shard
/// membership itself routes it to, and only frames whose check changes
/// nothing of membership's: its routes stay as they were.
#[test]
fn direct_routes_send_a_settled_peers_frames_where_membership_would() {
    let (mut engines, t) = cluster_of_shards(3, 3, StoreConfig::default(), 2);
    let mut node = engines.remove(0);
    let peer = &engines[0];
    let _workers = node.detach_shards();
    while node.poll_shard_input().is_some() {}
    let routes = node.direct_routes();
    let settled: BTreeMap<Uuid, u64> = engines.iter().map(|e| (e.id(), e.generation())).collect();
    assert_eq!(routes.settled, settled, "both peers, at their generations");
    let mut direct = [0; 2];
    for message in data_plane_messages() {
        let frame = peer.frame(message.clone());
        let shard = routes.shard_of(&frame);
        node.handle_message(now(t), addr(7071), frame);
        let routed: Vec<(Option<usize>, ShardInput)> =
            std::iter::from_fn(|| node.poll_shard_input()).collect();
        match (shard, routed.as_slice()) {
            (
                Some(index),
                [(
                    Some(routed_to),
                    ShardInput::Message {
                        from,
                        generation,
                        message: passed,
                    },
                )],
            ) => {
                assert_eq!(*routed_to, index, "{message:?}");
                assert_eq!((*from, *generation), (peer.id(), peer.generation()));
                assert_eq!(passed, &message);
                direct[index] += 1;
            }
            (None, []) => {}
            (shard, routed) => panic!("{message:?}: direct {shard:?}, membership {routed:?}"),
        }
        assert_eq!(node.direct_routes(), routes, "the check changed nothing");
    }
    assert!(direct.iter().all(|&n| n > 0), "both shards: {direct:?}");

    // Frames membership must see have no route past it.
    let store = Message::Store {
        request: Some(1),
        key: wire_key("k0"),
        object: object_with("k0").encode(),
        sync: false,
        stands_in_for: None,
    };
    let mut older = peer.frame(store.clone());
    older.generation -= 1;
    let mut newer = peer.frame(store.clone());
    newer.generation += 1;
    let stranger = Frame::new(Uuid::from_u128(7), 1, store.clone());
    let own = node.frame(store);
    let ring_fetch = peer.frame(Message::RingFetch { version: 1 });
    for frame in [older, newer.clone(), stranger, own, ring_fetch] {
        assert_eq!(routes.shard_of(&frame), None, "{frame:?}");
    }
    // A newer incarnation, once membership has seen it, is settled at its
    // new generation.
    node.handle_message(now(t), addr(7071), newer.clone());
    let routes = node.direct_routes();
    assert_eq!(routes.settled.get(&peer.id()), Some(&newer.generation));
    assert_eq!(
        routes.shard_of(&peer.frame(Message::Read {
            request: 2,
            key: wire_key("k0")
        })),
        None
    );
}

#[test]
fn request_ids_never_repeat_across_incarnations() {
    let mut first = engine(1, 1);
    let first_start = first.generation();
    let a = first.shards[0].shard.ledger.deadlines.next_id();
    let store = first.into_store().restart();
    let mut second = Engine::start(
        EngineConfig {
            replicas: 1,
            initial_members: 1,
            partitions: 8,
            ..EngineConfig::default()
        },
        store,
        addr(7070),
        addr(8080),
        now(0),
        1,
    )
    .expect("restarts");
    assert!(second.generation() > first_start);
    assert_eq!(first_generation(a), first_start & 0xFF_FFFF);
    let b = second.shards[0].shard.ledger.deadlines.next_id();
    assert_ne!(a, b);
    assert_eq!(first_generation(b), second.generation() & 0xFF_FFFF);
}

/// The generation a request id was issued in.
fn first_generation(request: u64) -> u64 {
    request >> 40
}

/// `n` engines that know each other as seeds, at addresses 7070.., with
/// N = n, exchanging frames instantly until each holds the ring and
/// sees the others up. Returns them and the time reached.
fn cluster(n: usize) -> (Vec<Engine<MemoryStore>>, u64) {
    cluster_with(n, n, StoreConfig::default())
}

/// [`cluster`] with `replicas` (N) and the stores' settings given.
fn cluster_with(n: usize, replicas: usize, store: StoreConfig) -> (Vec<Engine<MemoryStore>>, u64) {
    cluster_of_shards(n, replicas, store, 1)
}

/// [`cluster_with`], each engine running `shards` shards.
fn cluster_of_shards(
    n: usize,
    replicas: usize,
    store: StoreConfig,
    shards: usize,
) -> (Vec<Engine<MemoryStore>>, u64) {
    let addrs: Vec<SocketAddr> = (0..n).map(|i| addr(7070 + i as u16)).collect();
    let mut engines: Vec<Engine<MemoryStore>> = (0..n)
        .map(|i| {
            let mut config = EngineConfig {
                name: format!("node{i}"),
                replicas,
                initial_members: n,
                partitions: 8,
                shards,
                ..EngineConfig::default()
            };
            config.gossip.seeds = addrs.iter().copied().filter(|&a| a != addrs[i]).collect();
            Engine::start(
                config,
                MemoryStore::new(store),
                addrs[i],
                addr(8080 + i as u16),
                now(0),
                i as u64 + 1,
            )
            .expect("starts")
        })
        .collect();
    let mut ms = 0;
    loop {
        let ids: Vec<Uuid> = engines.iter().map(Engine::id).collect();
        let formed = engines
            .iter()
            .all(|e| e.is_ready() && ids.iter().all(|&id| id == e.id() || e.is_up(id)));
        if formed {
            return (engines, ms);
        }
        assert!(ms < 60_000, "the cluster did not form");
        ms += 10;
        for engine in &mut engines {
            engine.handle_tick(now(ms));
        }
        deliver(&mut engines, &addrs, ms);
    }
}

/// Delivers every frame the engines emitted, at once, until none is left.
fn deliver(engines: &mut [Engine<MemoryStore>], addrs: &[SocketAddr], ms: u64) {
    loop {
        let mut frames = Vec::new();
        for (i, engine) in engines.iter_mut().enumerate() {
            let effects = drain(engine);
            for (to, payload) in frames_of(engine, effects) {
                frames.push((addrs[i], to, payload));
            }
        }
        if frames.is_empty() {
            return;
        }
        for (from, to, payload) in frames {
            if let Some(j) = addrs.iter().position(|&a| a == to) {
                let _ = engines[j].handle_frame(now(ms), from, &payload);
            }
        }
    }
}

/// The messages among `effects`, framed by `sender` and encoded as the
/// runtime sends them: (address, frame).
fn frames_of(sender: &Engine<MemoryStore>, effects: Vec<Effect>) -> Vec<(SocketAddr, Vec<u8>)> {
    effects
        .into_iter()
        .filter_map(|e| match e {
            Effect::Send { addr, message, .. } | Effect::SendToSeed { addr, message } => {
                Some((addr, sender.frame(message).encode()))
            }
            Effect::ResetConnection { .. } | Effect::Reply { .. } => None,
        })
        .collect()
}

/// The first frame among `effects` sent to `to`, framed by `sender`.
fn payload_to(sender: &Engine<MemoryStore>, effects: &[Effect], to: SocketAddr) -> Option<Vec<u8>> {
    effects.iter().find_map(|e| match e {
        Effect::Send { addr, message, .. } if *addr == to => {
            Some(sender.frame(message.clone()).encode())
        }
        _ => None,
    })
}

fn options(pairs: &[(&str, &str)]) -> RequestOptions {
    RequestOptions::parse(pairs.iter().copied()).expect("valid options")
}

/// A fallback that coordinates a write counts its own copy toward `w`
/// only if it could keep the hint that hands the copy to the primary it
/// stands in for, as for a fallback that is not the coordinator.
#[test]
fn a_fallback_coordinator_without_its_hint_does_not_count_toward_w() {
    let store = StoreConfig {
        max_hints_per_target: 1,
        ..StoreConfig::default()
    };
    let (mut engines, mut t) = cluster_with(4, 3, store);
    let addrs: Vec<SocketAddr> = (0..4).map(|i| addr(7070 + i as u16)).collect();
    let ring = engines[0].ring().expect("a ring").clone();
    let list = ring.preference_list_for_key(b"b", b"k");
    let index = |id: Uuid| engines.iter().position(|e| e.id() == id).expect("a node");
    let down = index(list.primaries()[0]);
    let fallback = index(list.fallbacks()[0]);
    let down_id = engines[down].id();
    // The primary stops; the others tick on until they see it down.
    for _ in 0..6_000 {
        t += 10;
        for (i, engine) in engines.iter_mut().enumerate() {
            if i != down {
                engine.handle_tick(now(t));
            }
        }
        let mut frames = Vec::new();
        for (i, engine) in engines.iter_mut().enumerate() {
            let effects = drain(engine);
            for (to, payload) in frames_of(engine, effects) {
                if i != down && to != addrs[down] {
                    frames.push((addrs[i], to, payload));
                }
            }
        }
        for (from, to, payload) in frames {
            if let Some(j) = addrs.iter().position(|&a| a == to) {
                let _ = engines[j].handle_frame(now(t), from, &payload);
            }
        }
        if !engines[fallback].is_up(down_id) {
            break;
        }
    }
    assert!(
        !engines[fallback].is_up(down_id),
        "the primary is seen down"
    );
    // The fallback's hint queue for that primary is full.
    let other = KeyRef::new(PartitionId(0), b"b", b"other");
    engines[fallback]
        .membership
        .parts
        .store
        .add_hint(down_id, other, &object_with("x"), Durability::Buffered)
        .expect("the one hint that fits");
    let mut request = put("v");
    if let ClientRequest::Put(write) = &mut request {
        write.options = options(&[("w", "3"), ("timeout", "5000")]);
    }
    engines[fallback].handle_client(now(t), 1, request);
    let mut answer = None;
    for _ in 0..100 {
        t += 10;
        let effects = drain(&mut engines[fallback]);
        if let Some((_, result)) = replies(&effects).first() {
            answer = Some((*result).clone());
            break;
        }
        for (to, payload) in frames_of(&engines[fallback], effects) {
            if let Some(j) = addrs.iter().position(|&a| a == to).filter(|&j| j != down) {
                let _ = engines[j].handle_frame(now(t), addrs[fallback], &payload);
                let back = drain(&mut engines[j]);
                for (to, payload) in frames_of(&engines[j], back) {
                    if to == addrs[fallback] {
                        let _ = engines[fallback].handle_frame(now(t), addrs[j], &payload);
                    }
                }
            }
        }
    }
    match answer {
        Some(Err(RequestError::Put(PutError::QuorumNotReached { tally, .. }))) => {
            // w=3 of three targets is out of reach once the fallback's
            // own copy failed: the client hears so at once.
            let fallback_id = engines[fallback].id();
            assert!(
                tally
                    .failures
                    .iter()
                    .any(|f| f.node == fallback_id && matches!(f.error, ReplicaError::Storage(_))),
                "{tally:?}"
            );
        }
        other => panic!("expected w=3 to fail without the fallback's copy, got {other:?}"),
    }
    assert_eq!(
        engines[fallback].stats().hints_dropped,
        1,
        "the hint that did not fit is counted"
    );
}

/// Hints the target keeps refusing never hold back the hints behind
/// them: each round reads on from where the last one stopped.
#[test]
fn hints_that_keep_failing_do_not_block_the_rest() {
    let (mut engines, mut t) = cluster(2);
    for slot in &mut engines[0].shards {
        slot.parts.config.hint_batch = 2;
    }
    let target = engines[1].id();
    let partitions = Partitions::new(8).expect("valid");
    // Three hints the target refuses (filed under the wrong partition),
    // then one it takes.
    for i in 0..3 {
        let key = format!("bad-{i}");
        let wrong = PartitionId((partitions.of_key(b"b", key.as_bytes()).0 + 1) % 8);
        let keyref = KeyRef::new(wrong, b"b", key.as_bytes());
        engines[0]
            .membership
            .parts
            .store
            .add_hint(target, keyref, &object_with("x"), Durability::Buffered)
            .expect("queued");
    }
    let good = KeyRef::new(partitions.of_key(b"b", b"good"), b"b", b"good");
    engines[0]
        .membership
        .parts
        .store
        .add_hint(target, good, &object_with("g"), Durability::Buffered)
        .expect("queued");
    let addrs = [addr(7070), addr(7071)];
    for _ in 0..1_000 {
        t += 10;
        for engine in &mut engines {
            engine.handle_tick(now(t));
        }
        deliver(&mut engines, &addrs, t);
        if engines[1].store().get(good).expect("readable").is_some() {
            break;
        }
    }
    assert!(
        engines[1].store().get(good).expect("readable").is_some(),
        "the good hint was never handed over"
    );
    // The refused hints stay queued; the delivered one is gone.
    assert_eq!(
        engines[0].pending_hints().expect("memory"),
        vec![(target, 3)]
    );
}

/// Queues `count` hints for `target` on `engine`: keys `{prefix}-{i}`,
/// filed under the right partition unless `refused` (a partition the
/// key does not hash to, which the target refuses).
fn queue_hints(
    engine: &Engine<MemoryStore>,
    target: Uuid,
    prefix: &str,
    count: usize,
    refused: bool,
) -> Vec<KeyRef<'static>> {
    let partitions = Partitions::new(8).expect("valid");
    (0..count)
        .map(|i| {
            let key: &'static [u8] = format!("{prefix}-{i}").into_bytes().leak();
            let mut partition = partitions.of_key(b"b", key);
            if refused {
                partition = PartitionId((partition.0 + 1) % 8);
            }
            let keyref = KeyRef::new(partition, b"b", key);
            engine
                .membership
                .parts
                .store
                .add_hint(target, keyref, &object_with("h"), Durability::Buffered)
                .expect("queued");
            keyref
        })
        .collect()
}

/// Ticks `engines` every 10 ms for `ms` milliseconds, delivering every
/// frame; the time reached.
fn run_for(engines: &mut [Engine<MemoryStore>], mut t: u64, ms: u64) -> u64 {
    let addrs: Vec<SocketAddr> = (0..engines.len()).map(|i| addr(7070 + i as u16)).collect();
    let end = t + ms;
    while t < end {
        t += 10;
        for engine in engines.iter_mut() {
            engine.handle_tick(now(t));
        }
        deliver(engines, &addrs, t);
    }
    t
}

/// Two nodes; node 0 hints in batches of two and runs a hint round only
/// every minute, unless a batch was taken whole. Node 1 is the target.
fn cluster_with_slow_hint_rounds() -> (Vec<Engine<MemoryStore>>, u64, Uuid) {
    let (mut engines, t) = cluster(2);
    for slot in &mut engines[0].shards {
        slot.parts.config.hint_batch = 2;
        slot.parts.config.hint_interval = Duration::from_secs(60);
    }
    let target = engines[1].id();
    (engines, t, target)
}

#[test]
fn a_target_that_takes_a_whole_batch_of_hints_gets_the_next_at_once() {
    let (mut engines, t, target) = cluster_with_slow_hint_rounds();
    // The first round runs at once; every later one would wait a minute.
    let t = run_for(&mut engines, t, 10);
    let hints = queue_hints(&engines[0], target, "k", 7, false);
    for slot in &mut engines[0].shards {
        slot.shard.hint_round_now(now(t));
    }
    // Four batches of at most two, each sent once the one before was
    // acknowledged, within a second: no round waited for the interval.
    run_for(&mut engines, t, 1_000);
    assert_eq!(engines[0].pending_hints().expect("memory"), vec![]);
    for key in hints {
        assert!(engines[1].store().get(key).expect("readable").is_some());
    }
    assert_eq!(engines[0].stats().hints_delivered, 7);
}

#[test]
fn a_batch_of_hints_with_a_failure_waits_for_the_next_round() {
    let (mut engines, t, target) = cluster_with_slow_hint_rounds();
    let t = run_for(&mut engines, t, 10);
    // The first batch holds a hint the target refuses; the second would
    // be taken.
    queue_hints(&engines[0], target, "bad", 1, true);
    let good = queue_hints(&engines[0], target, "good", 3, false);
    for slot in &mut engines[0].shards {
        slot.shard.hint_round_now(now(t));
    }
    let t = run_for(&mut engines, t, 10_000);
    // One batch went: the refused hint and one good one. The rest wait
    // for the round a minute on, however long the target sits idle.
    assert_eq!(engines[0].stats().hints_delivered, 1);
    assert_eq!(
        engines[0].pending_hints().expect("memory"),
        vec![(target, 3)]
    );
    assert!(engines[1].store().get(good[0]).expect("readable").is_some());
    assert!(engines[1].store().get(good[1]).expect("readable").is_none());
    run_for(&mut engines, t, 60_000);
    assert_eq!(engines[0].stats().hints_delivered, 3);
    assert_eq!(
        engines[0].pending_hints().expect("memory"),
        vec![(target, 1)]
    );
}

/// A get of "k" at `r`, with a 5-second timeout.
fn get_at(r: &str) -> ClientRequest {
    ClientRequest::Get(ReadRequest {
        bucket: b"b".to_vec(),
        key: b"k".to_vec(),
        options: options(&[("r", r), ("timeout", "5000")]),
    })
}

/// The nodes `effects` send a `Read` to, in order.
fn reads_to(effects: &[Effect]) -> Vec<Uuid> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                to,
                message: Message::Read { .. },
                ..
            } => Some(*to),
            _ => None,
        })
        .collect()
}

/// A 3-node cluster whose node 0 never asks every target for read repair's
/// sake, so its gets ask only what `r` needs.
fn cluster_asking_only_r() -> (Vec<Engine<MemoryStore>>, u64) {
    let (mut engines, t) = cluster(3);
    for slot in &mut engines[0].shards {
        slot.parts.config.read_repair_chance = 0.0;
    }
    (engines, t)
}

#[test]
fn a_get_asks_as_many_replicas_as_r_needs_its_own_copy_first() {
    let (mut engines, t) = cluster_asking_only_r();
    let addrs: Vec<SocketAddr> = (0..3).map(|i| addr(7070 + i)).collect();
    // r=one: the local copy answers; nothing is sent.
    engines[0].handle_client(now(t), 1, get_at("one"));
    let effects = drain(&mut engines[0]);
    assert_eq!(reads_to(&effects), Vec::<Uuid>::new());
    assert!(matches!(replies(&effects)[..], [(1, Ok(_))]), "{effects:?}");
    // r=quorum: the local copy and one peer, the first other target.
    engines[0].handle_client(now(t), 2, get_at("quorum"));
    let effects = drain(&mut engines[0]);
    let asked = reads_to(&effects);
    assert_eq!(asked.len(), 1, "{effects:?}");
    let answers = answers_to(&mut engines, &addrs, 0, effects, t);
    for (from, payload) in answers {
        engines[0]
            .handle_frame(now(t), from, &payload)
            .expect("valid");
    }
    let effects = drain(&mut engines[0]);
    assert!(matches!(replies(&effects)[..], [(2, Ok(_))]), "{effects:?}");
    assert_eq!(
        engines[0].stats().pending_requests,
        0,
        "done with two answers"
    );
    // r=all: every target.
    engines[0].handle_client(now(t), 3, get_at("all"));
    assert_eq!(reads_to(&drain(&mut engines[0])).len(), 2);
}

#[test]
fn a_get_asks_the_other_targets_when_an_asked_one_fails() {
    let (mut engines, t) = cluster_asking_only_r();
    engines[0].handle_client(now(t), 1, get_at("quorum"));
    let effects = drain(&mut engines[0]);
    let [asked] = reads_to(&effects)[..] else {
        panic!("one peer asked: {effects:?}");
    };
    let to = engines[0].membership.view.address_of(asked).expect("known");
    let payload = payload_to(&engines[0], &effects, to).expect("a read");
    engines[0].handle_send_failed(now(t + 1), to, &payload);
    let effects = drain(&mut engines[0]);
    let third = engines
        .iter()
        .map(Engine::id)
        .find(|&id| id != asked && id != engines[0].id())
        .expect("three nodes");
    assert_eq!(reads_to(&effects), vec![third], "{effects:?}");
    assert!(replies(&effects).is_empty(), "{effects:?}");
}

#[test]
fn a_late_answer_has_the_get_ask_the_other_targets() {
    let (mut engines, t) = cluster_asking_only_r();
    let speculation = engines[0].shards[0].parts.config.read_speculation;
    engines[0].handle_client(now(t), 1, get_at("quorum"));
    let [asked] = reads_to(&drain(&mut engines[0]))[..] else {
        panic!("one peer asked");
    };
    let just_before = t + speculation.as_millis() as u64 - 1;
    engines[0].handle_tick(now(just_before));
    assert_eq!(reads_to(&drain(&mut engines[0])), Vec::<Uuid>::new());
    engines[0].handle_tick(now(t + speculation.as_millis() as u64));
    let third = engines
        .iter()
        .map(Engine::id)
        .find(|&id| id != asked && id != engines[0].id())
        .expect("three nodes");
    assert_eq!(reads_to(&drain(&mut engines[0])), vec![third]);
    // The get still waits for its own time, not the speculation's.
    engines[0].handle_tick(now(t + 4_999));
    assert!(replies(&drain(&mut engines[0])).is_empty());
    engines[0].handle_tick(now(t + 5_000));
    assert!(
        matches!(
            replies(&drain(&mut engines[0]))[..],
            [(1, Err(RequestError::Get(_)))]
        ),
        "times out at 5 s"
    );
}

#[test]
fn with_read_repair_chance_one_a_get_asks_every_target() {
    let (mut engines, t) = cluster(3);
    for slot in &mut engines[0].shards {
        slot.parts.config.read_repair_chance = 1.0;
    }
    engines[0].handle_client(now(t), 1, get_at("one"));
    assert_eq!(reads_to(&drain(&mut engines[0])).len(), 2);
}

#[test]
fn a_write_that_cannot_be_sent_counts_its_replica_as_failed_at_once() {
    let (mut engines, t) = cluster(3);
    let (unreachable, unreachable_id) = (addr(7072), engines[2].id());
    // Step 1: a put at w=all through node 0 sends the object to nodes
    // 1 and 2.
    let mut request = put("v");
    if let ClientRequest::Put(write) = &mut request {
        write.options = options(&[("w", "all"), ("timeout", "5000")]);
    }
    engines[0].handle_client(now(t), 1, request);
    let effects = drain(&mut engines[0]);
    assert!(replies(&effects).is_empty(), "{effects:?}");
    // Step 2: the frame to node 2 cannot be sent.
    let payload = payload_to(&engines[0], &effects, unreachable).expect("a frame for node 2");
    engines[0].handle_send_failed(now(t + 1), unreachable, &payload);
    // Step 3: w=all can no longer be reached: the client hears so now,
    // long before the timeout, with node 2 named as unreachable.
    let effects = drain(&mut engines[0]);
    match replies(&effects)[..] {
        [(1, Err(RequestError::Put(PutError::QuorumNotReached { tally, applied: 1 })))] => {
            assert_eq!(tally.failures.len(), 1, "{tally:?}");
            assert_eq!(tally.failures[0].node, unreachable_id);
            assert_eq!(tally.failures[0].error, ReplicaError::Unreachable);
        }
        ref other => panic!("expected a quorum failure, got {other:?}"),
    }
    assert_eq!(engines[0].stats().send_failures, 1);
}

#[test]
fn a_read_that_cannot_be_sent_counts_its_replica_as_failed_at_once() {
    let (mut engines, t) = cluster(3);
    let unreachable = addr(7071);
    let read = ClientRequest::Get(ReadRequest {
        bucket: b"b".to_vec(),
        key: b"k".to_vec(),
        options: options(&[("r", "all"), ("timeout", "5000")]),
    });
    engines[0].handle_client(now(t), 1, read);
    let effects = drain(&mut engines[0]);
    assert!(replies(&effects).is_empty(), "{effects:?}");
    let payload = payload_to(&engines[0], &effects, unreachable).expect("a read for node 1");
    engines[0].handle_send_failed(now(t + 1), unreachable, &payload);
    let effects = drain(&mut engines[0]);
    match replies(&effects)[..] {
        [(1, Err(RequestError::Get(crate::core::GetError::QuorumNotReached(tally))))] => {
            assert_eq!(tally.failures.len(), 1, "{tally:?}");
            assert_eq!(tally.failures[0].error, ReplicaError::Unreachable);
        }
        ref other => panic!("expected a quorum failure, got {other:?}"),
    }
}

#[test]
fn frames_that_answer_no_request_change_nothing_when_they_cannot_be_sent() {
    let (mut engines, t) = cluster(3);
    let gossip = Frame::new(
        engines[0].id(),
        engines[0].generation(),
        Message::Gossip(vec![]),
    );
    engines[0].handle_send_failed(now(t), addr(7071), &gossip.encode());
    let foreign = Frame::new(Uuid::from_u128(5), 1, Message::Gossip(vec![]));
    engines[0].handle_send_failed(now(t), addr(7071), &foreign.encode());
    engines[0].handle_send_failed(now(t), addr(7071), b"not a frame");
    assert!(drain(&mut engines[0]).is_empty());
    assert_eq!(engines[0].stats().pending_requests, 0);
}

#[test]
fn background_work_over_budget_makes_client_requests_wait_not_fail() {
    let (mut engines, t) = cluster(3);
    let addrs: Vec<SocketAddr> = (0..3).map(|i| addr(7070 + i)).collect();
    for engine in &mut engines {
        engine.shards[0].shard.ledger.budget.max_background_requests = 2;
    }
    // Step 1: two puts at w=one are answered at once and keep
    // replicating in the background (their frames are held back).
    for client in 1..=2 {
        let mut request = put("v");
        if let ClientRequest::Put(write) = &mut request {
            write.key = format!("k{client}").into_bytes();
            write.options = options(&[("w", "one")]);
        }
        engines[0].handle_client(now(t), client, request);
    }
    let held = drain(&mut engines[0]);
    assert_eq!(replies(&held).len(), 2, "{held:?}");
    assert_eq!(engines[0].stats().background_requests, 2);
    // Step 2: a third waits for admission: no answer, nothing sent.
    let mut third = put("v3");
    if let ClientRequest::Put(write) = &mut third {
        write.options = options(&[("w", "one")]);
    }
    engines[0].handle_client(now(t + 1), 3, third);
    assert!(drain(&mut engines[0]).is_empty());
    assert_eq!(engines[0].stats().queued_requests, 1);
    // Step 3: the replicas get the held frames and acknowledge; the
    // background drains and the waiting put is admitted and answered.
    for (to, payload) in frames_of(&engines[0], held) {
        let j = addrs.iter().position(|&a| a == to).expect("a member");
        let _ = engines[j].handle_frame(now(t + 2), addrs[0], &payload);
    }
    let mut answered = Vec::new();
    for i in (1..3).chain(0..3) {
        let effects = drain(&mut engines[i]);
        for effect in &effects {
            if let Effect::Reply { client, result } = effect {
                answered.push((*client, result.is_ok()));
            }
        }
        for (to, payload) in frames_of(&engines[i], effects) {
            let j = addrs.iter().position(|&a| a == to).expect("a member");
            let _ = engines[j].handle_frame(now(t + 3), addrs[i], &payload);
        }
    }
    assert_eq!(answered, vec![(3, true)]);
    assert_eq!(engines[0].stats().queued_requests, 0);
    assert_eq!(engines[0].stats().refused_overloaded, 0);
    // Step 4: a request that waits for admission its whole timeout is
    // refused as overloaded.
    for client in 4..=6 {
        let mut request = put("v");
        if let ClientRequest::Put(write) = &mut request {
            write.options = options(&[("w", "one"), ("timeout", "500")]);
        }
        engines[0].handle_client(now(t + 4), client, request);
    }
    assert_eq!(replies(&drain(&mut engines[0])).len(), 2);
    engines[0].handle_tick(now(t + 503));
    assert!(replies(&drain(&mut engines[0])).is_empty());
    engines[0].handle_tick(now(t + 504));
    let effects = drain(&mut engines[0]);
    assert!(
        matches!(
            replies(&effects)[..],
            [(6, Err(RequestError::Overloaded(_)))]
        ),
        "{effects:?}"
    );
    assert_eq!(engines[0].stats().refused_overloaded, 1);
}

/// A network that delivers a forwarded write twice must not make its
/// coordinator mint two versions of one client write.
#[test]
fn a_forwarded_write_delivered_twice_is_coordinated_once() {
    let (mut engines, t) = cluster_with(4, 3, StoreConfig::default());
    let addrs: Vec<SocketAddr> = (0..4).map(|i| addr(7070 + i as u16)).collect();
    let ring = engines[0].ring().expect("a ring").clone();
    let list = ring.preference_list_for_key(b"b", b"k");
    let outsider = (0..4)
        .find(|&i| !list.primaries().contains(&engines[i].id()))
        .expect("4 nodes, 3 replicas");
    let first = list.primaries()[0];
    let coordinator = (0..4).find(|&i| engines[i].id() == first).expect("a node");

    engines[outsider].handle_client(now(t), 1, put("v"));
    let effects = drain(&mut engines[outsider]);
    let forward = payload_to(&engines[outsider], &effects, addrs[coordinator])
        .expect("the write is forwarded to the first primary");
    engines[coordinator]
        .handle_frame(now(t), addrs[outsider], &forward)
        .expect("a valid frame");
    let once = drain(&mut engines[coordinator]);
    assert!(!once.is_empty(), "the first delivery is coordinated");

    // The same frame again: dropped, nothing sent, nothing stored.
    engines[coordinator]
        .handle_frame(now(t + 1), addrs[outsider], &forward)
        .expect("a valid frame");
    assert_eq!(drain(&mut engines[coordinator]), vec![]);
    assert_eq!(engines[coordinator].stats().forwards_repeated, 1);
    let partition = engines[coordinator]
        .membership
        .parts
        .partitions
        .of_key(b"b", b"k");
    let stored = engines[coordinator]
        .store()
        .get(KeyRef::new(partition, b"b", b"k"))
        .expect("readable")
        .expect("stored");
    assert_eq!(stored.live().count(), 1, "one write, one version");
}

fn put_typed(value: &str, content_type: &str) -> ClientRequest {
    let mut request = put(value);
    if let ClientRequest::Put(write) = &mut request {
        write.content_type = Some(content_type.into());
    }
    request
}

#[test]
fn a_puts_content_type_is_stored_with_its_version_and_checked_at_admission() {
    let mut engine = engine(1, 1);
    drain(&mut engine);
    engine.handle_client(now(10), 1, put_typed("{}", "application/json"));
    engine.handle_client(now(11), 2, put_typed("v", "application/"));
    let mut typed_delete = put_typed("v", "text/plain");
    if let ClientRequest::Put(write) = &mut typed_delete {
        write.value = None;
    }
    engine.handle_client(now(12), 3, typed_delete);
    let effects = drain(&mut engine);
    let replies = replies(&effects);
    assert!(
        matches!(replies[0], (1, Ok(ClientReply::Write(_)))),
        "{replies:?}"
    );
    assert!(
        matches!(
            replies[1],
            (
                2,
                Err(RequestError::InvalidContentType(
                    ContentTypeError::NotAMediaType
                ))
            )
        ),
        "{replies:?}"
    );
    assert!(
        matches!(
            replies[2],
            (
                3,
                Err(RequestError::InvalidContentType(
                    ContentTypeError::OnTombstone
                ))
            )
        ),
        "{replies:?}"
    );
    let partition = engine.membership.parts.partitions.of_key(b"b", b"k");
    let stored = engine
        .store()
        .get(KeyRef::new(partition, b"b", b"k"))
        .expect("readable")
        .expect("stored");
    let types: Vec<_> = stored
        .siblings()
        .iter()
        .map(|s| s.content_type.as_deref())
        .collect();
    assert_eq!(
        types,
        vec![Some("application/json")],
        "only the valid write stored"
    );
}

/// A write forwarded to a replica keeps its content type; a forward
/// whose content type is out of bounds is refused and stores nothing.
#[test]
fn a_forwarded_write_carries_its_content_type() {
    let (mut engines, t) = cluster_with(4, 3, StoreConfig::default());
    let addrs: Vec<SocketAddr> = (0..4).map(|i| addr(7070 + i as u16)).collect();
    let ring = engines[0].ring().expect("a ring").clone();
    let list = ring.preference_list_for_key(b"b", b"k");
    let outsider = (0..4)
        .find(|&i| !list.primaries().contains(&engines[i].id()))
        .expect("4 nodes, 3 replicas");
    let first = list.primaries()[0];
    let coordinator = (0..4).find(|&i| engines[i].id() == first).expect("a node");
    let stored = |engine: &Engine<MemoryStore>| {
        let partition = engine.membership.parts.partitions.of_key(b"b", b"k");
        engine
            .store()
            .get(KeyRef::new(partition, b"b", b"k"))
            .expect("readable")
    };

    engines[outsider].handle_client(now(t), 1, put_typed("{}", "application/json"));
    let effects = drain(&mut engines[outsider]);
    let forward = payload_to(&engines[outsider], &effects, addrs[coordinator])
        .expect("the write is forwarded to the first primary");
    let mut frame = Frame::decode(&forward, MAX_FRAME_BYTES).expect("a frame");

    // Out of bounds first (a request id of its own, so it is not a repeat).
    let Message::Forward { request, write } = &mut frame.message else {
        panic!("a forward, got {:?}", frame.message);
    };
    assert_eq!(write.content_type.as_deref(), Some("application/json"));
    *request += 1_000;
    write.content_type = Some(format!("text/{}", "x".repeat(MAX_CONTENT_TYPE_BYTES)));
    engines[coordinator]
        .handle_frame(now(t), addrs[outsider], &frame.encode())
        .expect("a valid frame");
    let refused = drain(&mut engines[coordinator]);
    let answer = payload_to(&engines[coordinator], &refused, addrs[outsider]).expect("an answer");
    assert!(
        matches!(
            Frame::decode(&answer, MAX_FRAME_BYTES)
                .expect("a frame")
                .message,
            Message::ForwardReply {
                result: Err(RequestError::Internal(_)),
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(stored(&engines[coordinator]), None, "nothing stored");

    engines[coordinator]
        .handle_frame(now(t), addrs[outsider], &forward)
        .expect("a valid frame");
    drain(&mut engines[coordinator]);
    let object = stored(&engines[coordinator]).expect("stored");
    let types: Vec<_> = object
        .siblings()
        .iter()
        .map(|s| s.content_type.as_deref())
        .collect();
    assert_eq!(types, vec![Some("application/json")]);
}

#[test]
fn forgotten_forward_ids_stay_refused_below_the_floor() {
    let mut seen = SeenForwards::default();
    let ids = 1..=(MAX_FORWARDS_REMEMBERED as u64 + 1);
    assert!(ids.clone().all(|id| seen.first_time(1, id)));
    assert!(!seen.first_time(1, 1), "forgotten, below the floor");
    assert!(
        !seen.first_time(1, MAX_FORWARDS_REMEMBERED as u64),
        "remembered"
    );
    assert!(seen.first_time(1, 5_000), "a new id");
    assert_eq!(seen.ids.len(), MAX_FORWARDS_REMEMBERED);
}

mod messages;

/// A replica convicted by the failure detector stops holding the puts that
/// wait for it: they count it as failed, retire and hint it, and the
/// admission they held back opens without waiting for their timeout.
#[test]
fn a_replica_seen_down_releases_the_background_work_that_waited_for_it() {
    let (mut engines, mut t) = cluster(3);
    let addrs: Vec<SocketAddr> = (0..3).map(|i| addr(7070 + i)).collect();
    let dead = 2;
    let dead_id = engines[dead].id();
    engines[0].shards[0]
        .shard
        .ledger
        .budget
        .max_background_requests = 3;
    // A put at w=quorum: node 1 acknowledges, node 2 never does (it is
    // dead), so the put stays in the background holding the budget. Two
    // puts at w=one whose frames are lost wait for both nodes 1 and 2, so
    // node 2 does not hold most of the budget alone and none of it is shed
    // ([`a_silent_replica_not_yet_convicted_does_not_hold_admission`]).
    let answered = puts_through_node_0(&mut engines, t, 0..1, "quorum", &[1]);
    assert_eq!(answered, [(0, true)]);
    let answered = puts_through_node_0(&mut engines, t, 1..3, "one", &[]);
    assert_eq!(answered, [(1, true), (2, true)]);
    assert_eq!(engines[0].stats().background_requests, 3);
    // A fourth client request waits for admission.
    assert_eq!(puts_through_node_0(&mut engines, t, 3..4, "one", &[]), []);
    assert_eq!(engines[0].stats().queued_requests, 1);
    // Node 2 stops; the others tick on until node 0 convicts it.
    let mut answered = None;
    for _ in 0..3_000 {
        t += 10;
        for (i, engine) in engines.iter_mut().enumerate() {
            if i != dead {
                engine.handle_tick(now(t));
            }
        }
        for i in 0..2 {
            let effects = drain(&mut engines[i]);
            for effect in &effects {
                if let Effect::Reply { client, result } = effect {
                    answered = Some((*client, result.is_ok()));
                }
            }
            for (to, payload) in frames_of(&engines[i], effects) {
                if let Some(j) = addrs.iter().position(|&a| a == to).filter(|&j| j != dead) {
                    let _ = engines[j].handle_frame(now(t), addrs[i], &payload);
                }
            }
        }
        if !engines[0].is_up(dead_id) {
            break;
        }
    }
    assert!(!engines[0].is_up(dead_id), "node 2 is seen down");
    assert!(t < 30_000, "convicted long before the put's timeout");
    // The put that waited for node 2 retired and hinted it; the queued
    // request was admitted and answered, not refused, and hinted node 2
    // too (a primary that is down with no fallback to stand in for it).
    // The two lost puts still wait for node 1.
    assert_eq!(answered, Some((3, true)));
    let stats = engines[0].stats();
    assert_eq!(stats.refused_overloaded, 0);
    assert_eq!(stats.background_shed, 0);
    assert_eq!(stats.background_requests, 2);
    assert_eq!(
        engines[0].pending_hints().expect("memory"),
        vec![(dead_id, 2)]
    );
}

/// A key of bucket `b` whose partition (of 8) belongs to shard `shard` of 2.
fn key_of_shard(shard: usize) -> String {
    let partitions = Partitions::new(8).expect("valid");
    (0..)
        .map(|k| format!("k{k}"))
        .find(|key| partitions.of_key(b"b", key.as_bytes()).0 as usize % 2 == shard)
        .expect("some key hashes there")
}

fn read_all(key: &str) -> ClientRequest {
    ClientRequest::Get(ReadRequest {
        bucket: b"b".to_vec(),
        key: key.as_bytes().to_vec(),
        options: options(&[("r", "all"), ("timeout", "5000")]),
    })
}

/// Hands every frame `effects` of engine `from` hold to its addressee and
/// returns the frames the addressees send back to `from`, as (sender's
/// address, frame).
fn answers_to(
    engines: &mut [Engine<MemoryStore>],
    addrs: &[SocketAddr],
    from: usize,
    effects: Vec<Effect>,
    ms: u64,
) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut answers = Vec::new();
    for (to, payload) in frames_of(&engines[from], effects) {
        let j = addrs.iter().position(|&a| a == to).expect("a member");
        engines[j]
            .handle_frame(now(ms), addrs[from], &payload)
            .expect("decodes");
        let back = drain(&mut engines[j]);
        answers.extend(
            frames_of(&engines[j], back)
                .into_iter()
                .filter(|(to, _)| *to == addrs[from])
                .map(|(_, payload)| (addrs[j], payload)),
        );
    }
    answers
}

/// With two shards, two keys in partitions of different shards are
/// coordinated by different shards — each get's reads carry request ids
/// with its own shard's index — and the replicas' answers are routed back
/// by those ids, so both clients are answered.
#[test]
fn keys_of_different_shards_are_coordinated_by_their_own_shards_and_both_answered() {
    let (mut engines, t) = cluster_of_shards(3, 3, StoreConfig::default(), 2);
    let addrs: Vec<SocketAddr> = (0..3).map(|i| addr(7070 + i)).collect();
    // Step 1: a get of a key of shard 0 and one of a key of shard 1.
    engines[0].handle_client(now(t), 1, read_all(&key_of_shard(0)));
    engines[0].handle_client(now(t), 2, read_all(&key_of_shard(1)));
    let effects = drain(&mut engines[0]);
    assert!(replies(&effects).is_empty(), "r=all waits: {effects:?}");
    // Step 2: each read names a request of the shard of its key's partition.
    let mut shards_asking = BTreeSet::new();
    for effect in &effects {
        if let Effect::Send {
            message: Message::Read { request, key },
            ..
        } = effect
        {
            let shard = super::requests::shard_of_request(*request);
            assert_eq!(shard, key.partition as usize % 2, "{key:?}");
            shards_asking.insert(shard);
        }
    }
    assert_eq!(shards_asking, BTreeSet::from([0, 1]));
    // Step 3: the replicas answer; the router hands each answer to the
    // shard that asked, and both gets are answered.
    for (from, payload) in answers_to(&mut engines, &addrs, 0, effects, t) {
        engines[0]
            .handle_frame(now(t + 1), from, &payload)
            .expect("decodes");
    }
    let effects = drain(&mut engines[0]);
    let mut answered: Vec<ClientId> = replies(&effects)
        .into_iter()
        .map(|(client, result)| {
            assert!(result.is_ok(), "{result:?}");
            client
        })
        .collect();
    answered.sort_unstable();
    assert_eq!(answered, vec![1, 2]);
    assert_eq!(
        engines[0].stats().pending_requests,
        0,
        "every target answered"
    );
}

/// A replica's answer handed to a shard that did not make the request
/// changes nothing there; the router hands it to the shard named in its
/// request id, which takes it.
#[test]
fn a_reply_reaches_only_the_shard_that_made_its_request() {
    let (mut engines, t) = cluster_of_shards(3, 3, StoreConfig::default(), 2);
    let addrs: Vec<SocketAddr> = (0..3).map(|i| addr(7070 + i)).collect();
    engines[0].handle_client(now(t), 1, read_all(&key_of_shard(1)));
    let effects = drain(&mut engines[0]);
    let answers = answers_to(&mut engines, &addrs, 0, effects, t);
    assert_eq!(answers.len(), 2, "both peers answer");
    let in_flight = |engine: &Engine<MemoryStore>| -> Vec<usize> {
        engine
            .shards
            .iter()
            .map(|s| s.shard.coordinator.len())
            .collect()
    };
    assert_eq!(in_flight(&engines[0]), vec![0, 1]);
    // Step 1: the answers handed to shard 0, which did not ask: nothing.
    for (_, payload) in &answers {
        let frame = Frame::decode(payload, usize::MAX).expect("decodes");
        let request = match &frame.message {
            Message::ReadReply { request, .. } => *request,
            other => panic!("expected a read reply, got {other:?}"),
        };
        assert_eq!(super::requests::shard_of_request(request), 1);
        engines[0].on_shard(0, now(t + 1), |shard, cx| {
            shard.on_message(cx, now(t + 1), frame.from, frame.generation, frame.message)
        });
    }
    assert!(drain(&mut engines[0]).is_empty());
    assert_eq!(in_flight(&engines[0]), vec![0, 1], "still waiting");
    // Step 2: the same answers through the router reach shard 1.
    for (from, payload) in &answers {
        engines[0]
            .handle_frame(now(t + 2), *from, payload)
            .expect("decodes");
    }
    let effects = drain(&mut engines[0]);
    assert!(
        matches!(replies(&effects)[..], [(1, Ok(ClientReply::Read(_)))]),
        "{effects:?}"
    );
    assert_eq!(in_flight(&engines[0]), vec![0, 0], "done");
}

/// Each shard hands out its own request ids: its index in the shard bits,
/// the generation above them.
#[test]
fn each_shard_hands_out_ids_with_its_index() {
    let (mut engines, _) = cluster_of_shards(3, 3, StoreConfig::default(), 2);
    let generation = engines[0].generation();
    for index in 0..2 {
        let id = engines[0].shards[index].shard.ledger.deadlines.next_id();
        assert_eq!(super::requests::shard_of_request(id), index);
        assert_eq!(first_generation(id), generation & 0xFF_FFFF);
    }
}

/// A configuration without shards is refused.
#[test]
fn zero_shards_is_a_configuration_error() {
    let config = EngineConfig {
        replicas: 1,
        initial_members: 1,
        shards: 0,
        ..EngineConfig::default()
    };
    let started = Engine::start(
        config,
        MemoryStore::default(),
        addr(7070),
        addr(8080),
        now(0),
        1,
    );
    assert!(
        matches!(started, Err(EngineError::Config(_))),
        "{started:?}"
    );
}

/// Puts `count` keys (`k0`, `k1`, …) through `engines[0]` at `w`, with a
/// long timeout, delivering its frames only to the nodes in `answering`
/// and their answers back. Returns the replies node 0 gave.
fn puts_through_node_0(
    engines: &mut [Engine<MemoryStore>],
    t: u64,
    keys: std::ops::Range<u64>,
    w: &str,
    answering: &[usize],
) -> Vec<(ClientId, bool)> {
    let addrs: Vec<SocketAddr> = (0..engines.len() as u16).map(|i| addr(7070 + i)).collect();
    let mut answered = Vec::new();
    for k in keys {
        let mut request = put("v");
        if let ClientRequest::Put(write) = &mut request {
            write.key = format!("k{k}").into_bytes();
            write.options = options(&[("w", w), ("timeout", "60000")]);
        }
        engines[0].handle_client(now(t), k, request);
        let effects = drain(&mut engines[0]);
        answered.extend(replies(&effects).into_iter().map(|(c, r)| (c, r.is_ok())));
        for (to, payload) in frames_of(&engines[0], effects) {
            if let Some(j) = answering.iter().copied().find(|&j| addrs[j] == to) {
                let _ = engines[j].handle_frame(now(t), addrs[0], &payload);
                let acks = drain(&mut engines[j]);
                for (_, ack) in frames_of(&engines[j], acks) {
                    let _ = engines[0].handle_frame(now(t), addrs[j], &ack);
                }
            }
        }
        let effects = drain(&mut engines[0]);
        answered.extend(replies(&effects).into_iter().map(|(c, r)| (c, r.is_ok())));
    }
    answered
}

/// Asserts that a quorum failure's `tally` names `node` as unreachable.
fn assert_names_unreachable(tally: &crate::core::QuorumTally, node: Uuid) {
    assert!(
        tally
            .failures
            .iter()
            .any(|f| f.node == node && f.error == ReplicaError::Unreachable),
        "the down primary is named: {tally:?}"
    );
}

/// A write whose live targets cannot reach `w` even if every one of them
/// acknowledges is refused before any replica applies it, and the error
/// names the primary that is down; a write they can reach goes through.
#[test]
fn a_write_out_of_reach_of_its_live_targets_is_refused_before_it_is_applied() {
    let (mut engines, mut t) = cluster(3);
    let addrs: Vec<SocketAddr> = (0..3).map(|i| addr(7070 + i)).collect();
    let dead = engines[2].id();
    // Node 2 stops; nodes 0 and 1 tick on until node 0 sees it down.
    while engines[0].is_up(dead) {
        t += 10;
        assert!(t < 60_000, "node 2 is seen down in time");
        for i in 0..2 {
            engines[i].handle_tick(now(t));
            let effects = drain(&mut engines[i]);
            for (to, payload) in frames_of(&engines[i], effects) {
                if to == addrs[1 - i] {
                    let _ = engines[1 - i].handle_frame(now(t), addrs[i], &payload);
                }
            }
        }
    }
    let mut request = put("v");
    if let ClientRequest::Put(write) = &mut request {
        write.options = options(&[("w", "all")]);
    }
    engines[0].handle_client(now(t), 1, request);
    let effects = drain(&mut engines[0]);
    assert!(
        frames_of(&engines[0], effects.clone()).is_empty(),
        "nothing sent: {effects:?}"
    );
    match replies(&effects).as_slice() {
        [(1, Err(RequestError::Put(PutError::QuorumNotReached { tally, applied: 0 })))] => {
            assert_eq!((tally.required, tally.received), (3, 0), "{tally:?}");
            assert_names_unreachable(tally, dead);
        }
        other => panic!("expected w=all to be refused at once, got {other:?}"),
    }
    let partition = engines[0].membership.parts.partitions.of_key(b"b", b"k");
    let key = KeyRef::new(partition, b"b", b"k");
    assert_eq!(engines[0].store().get(key).unwrap(), None, "not applied");
    // A read that cannot reach `r` names the down primary too.
    engines[0].handle_client(now(t), 9, get_at("all"));
    let effects = drain(&mut engines[0]);
    match replies(&effects).as_slice() {
        [(9, Err(RequestError::Get(crate::core::GetError::QuorumNotReached(tally))))] => {
            assert_names_unreachable(tally, dead);
        }
        other => panic!("expected r=all to fail, got {other:?}"),
    }
    // Within reach of nodes 0 and 1, the same write is applied.
    assert_eq!(
        puts_through_node_0(&mut engines, t, 2..3, "quorum", &[1]),
        [(2, true)]
    );
}

/// A replica that stops answering but is not yet convicted does not stall
/// the node's clients until its conviction: once the background work
/// waiting for it fills the budget, the oldest of it is handed to hinted
/// handoff and new requests are admitted at once.
#[test]
fn a_silent_replica_not_yet_convicted_does_not_hold_admission() {
    let (mut engines, t) = cluster(3);
    let silent = engines[2].id();
    engines[0].shards[0]
        .shard
        .ledger
        .budget
        .max_background_requests = 4;
    // Four puts at w=quorum: node 1 acknowledges each, node 2 says
    // nothing, so each stays in the background waiting for node 2.
    let answered = puts_through_node_0(&mut engines, t, 0..4, "quorum", &[1]);
    assert_eq!(answered, [(0, true), (1, true), (2, true), (3, true)]);
    assert_eq!(engines[0].stats().background_requests, 4);
    // A fifth is admitted and answered at once, with no time passing:
    // the two oldest puts were retired and hint node 2.
    let answered = puts_through_node_0(&mut engines, t, 4..5, "quorum", &[1]);
    assert_eq!(answered, [(4, true)]);
    let stats = engines[0].stats();
    assert_eq!(stats.queued_requests, 0);
    assert_eq!(stats.background_shed, 2);
    assert_eq!(stats.background_requests, 3);
    assert!(engines[0].is_up(silent), "node 2 is not convicted");
    assert_eq!(
        engines[0].pending_hints().expect("memory"),
        vec![(silent, 2)]
    );
}

/// When the replicas share the background work (a busy cluster, not a
/// silent replica), nothing is shed: clients wait for admission.
#[test]
fn background_work_shared_by_the_replicas_is_not_shed() {
    let (mut engines, t) = cluster(3);
    engines[0].shards[0]
        .shard
        .ledger
        .budget
        .max_background_requests = 4;
    // At w=one the coordinator's own copy answers each put, which then
    // waits for both other replicas.
    let answered = puts_through_node_0(&mut engines, t, 0..4, "one", &[]);
    assert_eq!(answered.len(), 4);
    assert_eq!(engines[0].stats().background_requests, 4);
    let answered = puts_through_node_0(&mut engines, t, 4..5, "one", &[]);
    assert_eq!(answered, []);
    let stats = engines[0].stats();
    assert_eq!(stats.queued_requests, 1);
    assert_eq!(stats.background_shed, 0);
    assert_eq!(engines[0].pending_hints().expect("memory"), vec![]);
}

/// Hands `input` to the workers it names (`None`: every one).
fn hand_to(
    workers: &mut [ShardWorker<MemoryStore>],
    ms: u64,
    target: Option<usize>,
    input: ShardInput,
) {
    for worker in workers.iter_mut() {
        if target.is_none_or(|t| t == worker.index()) {
            worker.handle_input(now(ms), input.clone());
        }
    }
}

/// The frames among a worker's effects, as the runtime sends them.
fn worker_frames(worker: &mut ShardWorker<MemoryStore>) -> Vec<(SocketAddr, Vec<u8>)> {
    let effects: Vec<Effect> = std::iter::from_fn(|| worker.poll_effect()).collect();
    effects
        .into_iter()
        .filter_map(|e| match e {
            Effect::Send { addr, message, .. } => Some((addr, worker.frame(message).encode())),
            _ => None,
        })
        .collect()
}

/// Shards detached to run on threads of their own serve what membership
/// routes to them: a replica's `Store` for a key of shard 1 goes to
/// worker 1 alone (after the view it must answer with), the worker's
/// answer completes the coordinator's put, and the write comes back to
/// membership as a fact. Client requests go to the workers directly.
#[test]
fn detached_shards_answer_what_membership_routes_to_them() {
    let (mut engines, t) = cluster_of_shards(2, 2, StoreConfig::default(), 2);
    let addrs = [addr(7070), addr(7071)];
    let mut workers = engines[1].detach_shards();
    assert_eq!(
        workers.iter().map(ShardWorker::index).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert!(engines[1].detach_shards().is_empty(), "detached once");
    let key = key_of_shard(1);
    assert_eq!(engines[1].shard_map().shard_of_key(b"b", key.as_bytes()), 1);
    // Node 0 coordinates a put to both replicas.
    let write = ClientRequest::Put(WriteRequest {
        bucket: b"b".to_vec(),
        key: key.as_bytes().to_vec(),
        value: Some(b"v".to_vec()),
        content_type: None,
        context: None,
        options: options(&[("w", "all")]),
    });
    engines[0].handle_client(now(t), 1, write);
    let effects = drain(&mut engines[0]);
    let frames = frames_of(&engines[0], effects);
    assert_eq!(frames.len(), 1, "one Store, to node 1: {frames:?}");
    engines[1]
        .handle_frame(now(t), addrs[0], &frames[0].1)
        .expect("decodes");
    assert!(
        drain(&mut engines[1]).is_empty(),
        "membership does not answer a replica's request itself"
    );
    // Membership routes it to the worker of the key's shard.
    let inputs: Vec<_> = std::iter::from_fn(|| engines[1].poll_shard_input()).collect();
    let routed: Vec<Option<usize>> = inputs
        .iter()
        .filter(|(_, input)| matches!(input, ShardInput::Message { .. }))
        .map(|(target, _)| *target)
        .collect();
    assert_eq!(routed, vec![Some(1)]);
    for (target, input) in inputs {
        hand_to(&mut workers, t, target, input);
    }
    assert!(worker_frames(&mut workers[0]).is_empty());
    let answers = worker_frames(&mut workers[1]);
    assert_eq!(answers.len(), 1, "a Stored for node 0");
    assert_eq!(answers[0].0, addrs[0]);
    engines[0]
        .handle_frame(now(t + 1), addrs[1], &answers[0].1)
        .expect("decodes");
    let effects = drain(&mut engines[0]);
    assert!(
        matches!(replies(&effects)[..], [(1, Ok(ClientReply::Write(_)))]),
        "{effects:?}"
    );
    assert!(!workers[1].take_facts().is_empty(), "it wrote data");
    assert!(workers[1].take_facts().is_empty(), "taken once");
    assert!(workers[0].take_facts().is_empty());
    // A client request reaches the worker directly; r=one reads node 1's copy.
    workers[1].handle_client(
        now(t + 2),
        7,
        ClientRequest::Get(ReadRequest {
            bucket: b"b".to_vec(),
            key: key.as_bytes().to_vec(),
            options: options(&[("r", "one")]),
        }),
    );
    let effects: Vec<Effect> = std::iter::from_fn(|| workers[1].poll_effect()).collect();
    match replies(&effects)[..] {
        [(7, Ok(ClientReply::Read(reply)))] => {
            let values: Vec<_> = reply
                .object
                .live()
                .map(|s| s.value.as_deref().map(<[u8]>::to_vec))
                .collect();
            assert_eq!(values, vec![Some(b"v".to_vec())]);
        }
        ref other => panic!("expected a read reply, got {other:?}"),
    }
    // Holding data is for good: a second write is not reported again, so
    // a shard that writes in every batch does not wake membership each time.
    workers[1].handle_client(
        now(t + 3),
        8,
        ClientRequest::Put(WriteRequest {
            bucket: b"b".to_vec(),
            key: key.as_bytes().to_vec(),
            value: Some(b"w".to_vec()),
            content_type: None,
            context: None,
            options: options(&[("w", "one")]),
        }),
    );
    let effects: Vec<Effect> = std::iter::from_fn(|| workers[1].poll_effect()).collect();
    assert!(
        matches!(replies(&effects)[..], [(8, Ok(ClientReply::Write(_)))]),
        "{effects:?}"
    );
    assert!(
        workers[1].take_facts().is_empty(),
        "reported once per worker"
    );
}

/// What membership learns that every shard must act on reaches every
/// detached worker: a node convicted fails, in each worker, the requests
/// that wait for it.
#[test]
fn a_conviction_reaches_every_detached_shard() {
    let (mut engines, t) = cluster_of_shards(2, 2, StoreConfig::default(), 2);
    let mut workers = engines[0].detach_shards();
    for (client, shard) in [(1, 0), (2, 1)] {
        let key = key_of_shard(shard);
        workers[shard].handle_client(now(t), client, read_all(&key));
        assert_eq!(
            worker_frames(&mut workers[shard]).len(),
            1,
            "a Read to node 1"
        );
    }
    let peer = engines[1].id();
    // Node 1 goes silent; node 0's failure detector convicts it.
    let mut ms = t;
    let mut convicted = false;
    while !convicted && ms < t + 60_000 {
        ms += 100;
        engines[0].handle_tick(now(ms));
        drain(&mut engines[0]);
        for (target, input) in std::iter::from_fn(|| engines[0].poll_shard_input()) {
            convicted |= matches!(input, ShardInput::Convicted(node) if node == peer);
            assert!(
                target.is_none() || !matches!(input, ShardInput::Convicted(_)),
                "a conviction is for every shard"
            );
            hand_to(&mut workers, ms, target, input);
        }
    }
    assert!(convicted, "node 1 was convicted");
    for (client, worker) in [1, 2].into_iter().zip(workers.iter_mut()) {
        let effects: Vec<Effect> = std::iter::from_fn(|| worker.poll_effect()).collect();
        match replies(&effects)[..] {
            [(c, Err(RequestError::Get(_)))] => assert_eq!(c, client),
            ref other => panic!(
                "shard {}: expected the get to fail, got {other:?}",
                worker.index()
            ),
        }
    }
}
