//! The wire format under random input: valid messages round-trip with the
//! size the gossiper predicts; random and damaged bytes give errors, never
//! panics, both in the decoder and in a gossiper handling them.

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use chorus_gossip::{
    Ack, Ack2, Config, Digest, Entry, Envelope, Generation, GossipError, Gossiper, LocalNode,
    Message, NodeDelta, NodeId, RingClaim, Sender, StateKey, StateValue, Status, Syn, Version,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const LIMIT: usize = 64 * 1024;

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(SocketAddr::from),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::from((Ipv6Addr::from(ip), port))),
    ]
}

fn key_value() -> impl Strategy<Value = (StateKey, StateValue)> {
    prop_oneof![
        addr().prop_map(|a| (StateKey::QuicAddr, StateValue::Addr(a))),
        addr().prop_map(|a| (StateKey::HttpAddr, StateValue::Addr(a))),
        prop_oneof![
            Just(Status::Joining),
            Just(Status::Up),
            Just(Status::Leaving),
            Just(Status::Left)
        ]
        .prop_map(|s| (StateKey::Status, StateValue::Status(s))),
        ".{0,40}".prop_map(|z| (StateKey::Zone, StateValue::Text(z))),
        (any::<u64>(), any::<u64>()).prop_map(|(version, hash)| (
            StateKey::Ring,
            StateValue::Ring(RingClaim { version, hash })
        )),
        any::<u64>().prop_map(|l| (StateKey::Load, StateValue::Load(l))),
        ("[a-z_]{0,40}", ".{0,60}").prop_map(|(k, v)| (StateKey::Extra(k), StateValue::Text(v))),
    ]
}

fn delta() -> impl Strategy<Value = NodeDelta> {
    (
        any::<u128>(),
        any::<u64>(),
        0u64..1 << 40,
        proptest::option::of(1u64..1 << 20),
        proptest::collection::vec((1u64..1 << 20, key_value()), 0..8),
    )
        .prop_map(|(node, generation, since, heartbeat, entries)| NodeDelta {
            node: NodeId::from_u128(node),
            generation: Generation(generation),
            since: Version(since),
            heartbeat: heartbeat.map(|h| Version(since + h)),
            entries: entries
                .into_iter()
                .map(|(v, (key, value))| Entry {
                    key,
                    version: Version(since + v),
                    value,
                })
                .collect(),
        })
}

fn digests() -> impl Strategy<Value = Vec<Digest>> {
    proptest::collection::vec((any::<u128>(), any::<u64>(), any::<u64>()), 0..40).prop_map(|v| {
        let mut d: Vec<Digest> = v
            .into_iter()
            .map(|(n, g, m)| Digest {
                node: NodeId::from_u128(n),
                generation: Generation(g),
                max_version: Version(m),
            })
            .collect();
        d.sort_by_key(|d| d.node);
        d.dedup_by_key(|d| d.node);
        d
    })
}

fn envelope() -> impl Strategy<Value = Envelope> {
    let message = prop_oneof![
        (digests(), any::<bool>())
            .prop_map(|(digests, complete)| Message::Syn(Syn { digests, complete })),
        (proptest::collection::vec(delta(), 0..6), digests())
            .prop_map(|(states, requests)| Message::Ack(Ack { states, requests })),
        proptest::collection::vec(delta(), 0..6).prop_map(|states| Message::Ack2(Ack2 { states })),
    ];
    (any::<u128>(), any::<u64>(), message).prop_map(|(from, generation, message)| {
        Envelope::new(
            Sender {
                node: NodeId::from_u128(from),
                generation: Generation(generation),
            },
            message,
        )
    })
}

fn gossiper() -> Gossiper<ChaCha8Rng> {
    let local = LocalNode {
        id: NodeId::from_u128(1),
        generation: Generation(1),
        quic_addr: "10.0.0.1:7000".parse().expect("address"),
        http_addr: "10.0.0.1:8080".parse().expect("address"),
        zone: None,
    };
    Gossiper::new(Config::default(), local, ChaCha8Rng::seed_from_u64(1)).expect("valid")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_envelopes_round_trip_at_their_predicted_size(env in envelope()) {
        let bytes = env.encode(usize::MAX).expect("encode");
        prop_assert_eq!(bytes.len(), env.encoded_len());
        prop_assert_eq!(Envelope::decode(&bytes, LIMIT.max(bytes.len())).expect("decode"), env);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let decoded = Envelope::decode(&bytes, LIMIT);
        let mut g = gossiper();
        let handled = g.handle_bytes(Duration::from_secs(1), &bytes);
        if let Err(e) = decoded {
            prop_assert_eq!(handled, Err(e));
            prop_assert!(g.drain_effects().next().is_none());
            prop_assert_eq!(g.member_count(), 0);
        }
    }

    #[test]
    fn random_bodies_behind_a_valid_header_are_errors_not_panics(
        body in proptest::collection::vec(any::<u8>(), 0..512)
    ) {
        // [protocol 1, 16-byte id, generation 7, ...random]
        let mut bytes = vec![0x94, 0x01, 0xc4, 0x10];
        bytes.extend_from_slice(&[9u8; 16]);
        bytes.push(0x07);
        bytes.extend_from_slice(&body);
        let _ = Envelope::decode(&bytes, LIMIT);
        let mut g = gossiper();
        let _ = g.handle_bytes(Duration::from_secs(1), &bytes);
    }

    #[test]
    fn damaged_valid_messages_are_errors_not_panics(
        env in envelope(),
        cuts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        truncate in any::<Option<prop::sample::Index>>(),
    ) {
        let mut bytes = env.encode(usize::MAX).expect("encode");
        for (at, value) in cuts {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Some(at) = truncate {
            bytes.truncate(at.index(bytes.len()));
        }
        if let Ok(decoded) = Envelope::decode(&bytes, LIMIT) {
            prop_assert!(decoded.validate().is_ok());
        }
        let mut g = gossiper();
        let _ = g.handle_bytes(Duration::from_secs(1), &bytes);
        g.handle_tick(Duration::from_secs(2));
    }

    #[test]
    fn anything_longer_than_the_limit_is_refused_unread(
        bytes in proptest::collection::vec(any::<u8>(), 65..300)
    ) {
        let err = Envelope::decode(&bytes, 64).expect_err("over the limit");
        prop_assert_eq!(err, GossipError::Oversized { len: bytes.len(), max: 64 });
    }
}
