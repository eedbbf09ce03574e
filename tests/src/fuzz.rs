//! Fuzz target bodies: one function per decoder that takes input from
//! outside the node, each asserting what must hold for *any* input.
//!
//! Every function takes the raw bytes a fuzzer produced, feeds them to the
//! decoder exactly as the node does (same limits, same surrounding checks)
//! and panics when a property fails:
//!
//! * decoding never panics, and refuses oversized input before it
//!   allocates for it (under libFuzzer, `fuzz/src/lib.rs` aborts on any
//!   single allocation above 16 MiB, so a length prefix that allocates
//!   what it claims is a crash there);
//! * what decodes re-encodes, and the encoding decodes to an equal value
//!   (decode → encode → decode), so a peer's view of a message is the one
//!   the node would send on;
//! * values nested in a message (objects, contexts, gossip envelopes,
//!   rings) decode with the receiver's own decoder too;
//! * a context token opens only with the key, bucket and key name it was
//!   sealed for (design.md §3 rule 8).
//!
//! The same bodies run in two places: under libFuzzer in the `fuzz/` crate
//! (`scripts/fuzz`), and over the checked-in corpus and every saved crash
//! in `tests/tests/fuzz_corpus.rs`, on stable, in CI. [`seeds`] makes the
//! small valid encodings the corpus starts from (`cargo run -p
//! chorus-tests --example fuzz-corpus` writes them to `fuzz/corpus/`).

use chorus_gossip::{
    Ack, Ack2, Digest, Entry, Envelope, Generation, NodeDelta, NodeId, Sender, StateKey,
    StateValue, Status, Syn, Version,
};
use chorus_node::core::{OptionsError, ReplicaError, RequestOptions, WriteError};
use chorus_node::transport::frame::{
    decode_frame, decode_header, encode_frame, HEADER_LEN, MAX_FRAME_BYTES as TRANSPORT_MAX,
};
use chorus_node::wire::{
    decode_object, ForwardedReply, ForwardedWrite, Frame, Message, StoredAck, WireKey,
    MAX_FRAME_BYTES,
};
use chorus_ring::{Member, Ring, MAX_REPLICAS, MIN_PARTITIONS};
use chorus_storage::context::{CausalContext, ContextError, ContextKey, MAX_TOKEN_LEN};
use chorus_storage::hlc::Timestamp;
use chorus_storage::object::{Object, MAX_DECODED_SIBLINGS, MAX_ENCODED_LEN};
use chorus_storage::version::{ActorId, Dot, VersionVector};
use uuid::Uuid;

/// A fuzz target body: panics when a property fails, and returns whether
/// the decoder accepted the input.
pub type Target = fn(&[u8]) -> bool;

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs` and its
/// corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("internode_frame", internode_frame),
    ("transport_frame", transport_frame),
    ("gossip_envelope", gossip_envelope),
    ("stored_object", stored_object),
    ("causal_context", causal_context),
    ("context_token", context_token),
    ("request_options", request_options),
    ("ring_push", ring_push),
];

/// The cluster secret the `context_token` target seals and opens with.
pub const FUZZ_CONTEXT_KEY: [u8; 32] = *b"chorus fuzz context key 32 bytes";

/// The gossip message limit a node runs with.
fn gossip_max_bytes() -> usize {
    chorus_gossip::Config::default().max_message_bytes
}

/// An internode message (`node/src/wire.rs`) as [`chorus_node::engine`]
/// takes it from a peer: [`Frame::decode`] with [`MAX_FRAME_BYTES`], then
/// the decoders of whatever the message carries.
pub fn internode_frame(data: &[u8]) -> bool {
    let Ok(frame) = Frame::decode(data, MAX_FRAME_BYTES) else {
        return false;
    };
    let encoded = frame.encode();
    assert!(
        encoded.len() <= MAX_FRAME_BYTES,
        "a decoded frame re-encodes beyond the frame limit"
    );
    let again = Frame::decode(&encoded, MAX_FRAME_BYTES).expect("a re-encoded frame decodes");
    assert_eq!(again, frame, "decode → encode → decode changed the frame");
    match &frame.message {
        Message::Gossip(bytes) => {
            gossip_envelope(bytes);
        }
        Message::Store { object, .. } => wire_object(object),
        Message::ReadReply {
            result: Ok(object), ..
        } => wire_object(object),
        Message::Forward { write, .. } => {
            if let Some(context) = &write.context {
                causal_context(context);
            }
        }
        Message::ForwardReply {
            result: Ok(reply), ..
        } => {
            causal_context(&reply.context);
            if let Some(object) = &reply.object {
                wire_object(object);
            }
        }
        Message::RingPush { ring } => {
            ring_push(ring);
        }
        Message::Stored { .. }
        | Message::Read { .. }
        | Message::ReadReply { .. }
        | Message::ForwardReply { .. }
        | Message::RingFetch { .. } => {}
    }
    true
}

/// An object carried in a message, through the wire's decoder.
fn wire_object(data: &[u8]) {
    let wire = decode_object(data);
    let stored = Object::decode(data);
    assert_eq!(
        wire.is_ok(),
        stored.is_ok(),
        "the wire and the store disagree on an object"
    );
    stored_object(data);
}

/// The transport's length-delimited framing
/// (`node/src/transport/frame.rs`): [`decode_header`] and [`decode_frame`]
/// with the transport's limit.
pub fn transport_frame(data: &[u8]) -> bool {
    if let Some(header) = data.first_chunk::<HEADER_LEN>() {
        if let Ok(len) = decode_header(header, TRANSPORT_MAX) {
            assert!(len <= TRANSPORT_MAX, "a header passed beyond the limit");
        }
        // A tight limit, as a reader configured for small frames has.
        let tight = data.len().saturating_sub(HEADER_LEN);
        if let Ok(len) = decode_header(header, tight) {
            assert!(len <= tight, "a header passed beyond a tight limit");
        }
    }
    let Ok(payload) = decode_frame(data, TRANSPORT_MAX) else {
        return false;
    };
    assert_eq!(payload.len() + HEADER_LEN, data.len());
    assert_eq!(
        encode_frame(payload),
        data,
        "a frame re-encodes differently"
    );
    true
}

/// A gossip message (`gossip/src/wire.rs`): [`Envelope::decode`] with the
/// node's gossip message limit.
pub fn gossip_envelope(data: &[u8]) -> bool {
    let max = gossip_max_bytes();
    let Ok(envelope) = Envelope::decode(data, max) else {
        return false;
    };
    let encoded = envelope
        .encode(max)
        .expect("a decoded envelope re-encodes within the limit it was decoded with");
    assert_eq!(encoded.len(), envelope.encoded_len(), "size model is off");
    let again = Envelope::decode(&encoded, max).expect("a re-encoded envelope decodes");
    assert_eq!(
        again, envelope,
        "decode → encode → decode changed the envelope"
    );
    true
}

/// A stored or transferred object (`storage/src/object.rs`):
/// [`Object::decode`].
pub fn stored_object(data: &[u8]) -> bool {
    let Ok(object) = Object::decode(data) else {
        return false;
    };
    assert!(
        object.siblings().len() <= MAX_DECODED_SIBLINGS,
        "decoded more siblings than the limit"
    );
    object
        .storable()
        .expect("an object that decodes may be stored");
    let encoded = object.encode();
    assert!(encoded.len() <= MAX_ENCODED_LEN);
    assert_eq!(encoded.len(), object.encoded_len());
    let again = Object::decode(&encoded).expect("a re-encoded object decodes");
    assert_eq!(again, object, "decode → encode → decode changed the object");
    // Integers may come in any unsigned width; the encoding is the shortest,
    // so it is never longer than what was decoded.
    assert!(encoded.len() <= data.len());
    // A replica that never saw the key takes a peer's object as it is.
    let mut merged = Object::new();
    merged.merge(&object);
    assert_eq!(merged, object, "merging into an empty object changed it");
    true
}

/// A causal context between nodes (`storage/src/context.rs`):
/// [`CausalContext::from_bytes`], as a forwarded write carries it.
pub fn causal_context(data: &[u8]) -> bool {
    let Ok(context) = CausalContext::from_bytes(data) else {
        return false;
    };
    let encoded = context.to_bytes();
    let again = CausalContext::from_bytes(&encoded).expect("a re-encoded context decodes");
    assert_eq!(
        again, context,
        "decode → encode → decode changed the context"
    );
    true
}

/// A client's context token, as the HTTP layer opens it
/// (`node/src/http.rs`): the input is `bucket \n key \n token`, the token
/// must be visible ASCII (a header value's `to_str`), and it is opened with
/// [`ContextKey::open`] for that bucket and key.
///
/// A token opens only when it is exactly what [`ContextKey::seal`] made
/// with this key for this bucket and key (surrounding blanks aside), and
/// then with no other key, bucket or key name.
pub fn context_token(data: &[u8]) -> bool {
    let (bucket, key, token) = split_token_input(data);
    // `HeaderValue::to_str`: visible ASCII and tabs, else not base64.
    if !token
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return false;
    }
    let token = std::str::from_utf8(token).expect("ASCII is UTF-8");
    let sealer = ContextKey::new(FUZZ_CONTEXT_KEY);
    let opened = sealer.open(bucket, key, token);
    if token.trim().len() > MAX_TOKEN_LEN {
        assert!(matches!(opened, Err(ContextError::TooLong { .. })));
    }
    let Ok(context) = opened else {
        return false;
    };
    assert_eq!(
        sealer.seal(bucket, key, &context),
        token.trim(),
        "a token opened that this key did not seal for this bucket and key"
    );
    let mut other = FUZZ_CONTEXT_KEY;
    other[0] ^= 1;
    assert!(
        ContextKey::new(other).open(bucket, key, token).is_err(),
        "a token opened with another cluster's key"
    );
    let mut other_key = key.to_vec();
    other_key.push(b'x');
    assert!(
        sealer.open(bucket, &other_key, token).is_err(),
        "a token opened for another key"
    );
    let mut other_bucket = bucket.to_vec();
    other_bucket.push(b'x');
    assert!(
        sealer.open(&other_bucket, key, token).is_err(),
        "a token opened for another bucket"
    );
    if bucket != key {
        assert!(
            sealer.open(key, bucket, token).is_err(),
            "a token opened with bucket and key swapped"
        );
    }
    true
}

/// `bucket \n key \n token`; missing parts are empty.
fn split_token_input(data: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let bucket = parts.next().unwrap_or_default();
    let key = parts.next().unwrap_or_default();
    let token = parts.next().unwrap_or_default();
    (bucket, key, token)
}

/// The request options of an HTTP request (`node/src/core/options.rs`):
/// the input is a query string, split into pairs as the HTTP layer's
/// `Query` extractor does (`application/x-www-form-urlencoded`), then
/// [`RequestOptions::parse`], resolved against every replication factor a
/// bucket may have, and [`RequestOptions::parse_and_resolve`] against one.
pub fn request_options(data: &[u8]) -> bool {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(data).into_owned().collect();
    let pairs = || pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    let n = 1 + data.iter().map(|&b| usize::from(b)).sum::<usize>() % MAX_REPLICAS;
    let parsed = RequestOptions::parse(pairs());
    let resolved = RequestOptions::parse_and_resolve(pairs(), n);
    let options = match parsed {
        Ok(options) => options,
        Err(e) => {
            check_error(&e);
            assert_eq!(resolved, Err(e), "parse_and_resolve reports another error");
            return false;
        }
    };
    assert_eq!(
        resolved,
        options.resolve(n),
        "parse_and_resolve is not parse then resolve"
    );
    let mut accepted = false;
    for n in 1..=MAX_REPLICAS {
        match options.resolve(n) {
            Ok(r) => {
                accepted = true;
                assert_eq!(r.n, n);
                assert!((1..=n).contains(&r.r) && (1..=n).contains(&r.w));
                assert!(r.pr <= r.r && r.pw <= r.w);
                assert!((1..=chorus_node::core::options::MAX_TIMEOUT_MS).contains(&r.timeout_ms));
            }
            Err(e) => assert!(!e.code().is_empty()),
        }
    }
    accepted
}

fn check_error(e: &OptionsError) {
    assert!(!e.code().is_empty());
    // The message is what a client sees; it must render.
    assert!(!e.to_string().is_empty());
}

/// A ring a peer pushes (`Message::RingPush`, decoded by the engine with
/// MessagePack into [`Ring`], whose decoder checks every invariant).
pub fn ring_push(data: &[u8]) -> bool {
    let Ok(ring) = rmp_serde::from_slice::<Ring>(data) else {
        return false;
    };
    let encoded = rmp_serde::to_vec(&ring).expect("a ring encodes");
    let again = rmp_serde::from_slice::<Ring>(&encoded).expect("a re-encoded ring decodes");
    assert_eq!(again, ring, "decode → encode → decode changed the ring");
    true
}

/// Small valid inputs for every target, by target name: the seed corpus.
/// Each is accepted by its target's decoder.
pub fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let objects: Vec<Vec<u8>> = sample_objects().iter().map(Object::encode).collect();
    let contexts: Vec<Vec<u8>> = sample_contexts()
        .iter()
        .map(CausalContext::to_bytes)
        .collect();
    let envelopes: Vec<Vec<u8>> = sample_envelopes()
        .iter()
        .map(|e| {
            e.encode(gossip_max_bytes())
                .expect("a sample envelope encodes")
        })
        .collect();
    let rings: Vec<Vec<u8>> = sample_rings()
        .iter()
        .map(|r| rmp_serde::to_vec(r).expect("a ring encodes"))
        .collect();
    let frames: Vec<Vec<u8>> = sample_frames(&objects, &contexts, &envelopes, &rings)
        .iter()
        .map(Frame::encode)
        .collect();
    let transport = frames
        .iter()
        .take(4)
        .map(|f| encode_frame(f))
        .chain([encode_frame(b""), encode_frame(b"x")])
        .collect();
    let sealer = ContextKey::new(FUZZ_CONTEXT_KEY);
    let tokens = sample_contexts()
        .iter()
        .zip([("b", "k"), ("users", "alice"), ("", ""), ("cart", "42")])
        .map(|(context, (bucket, key))| {
            let token = sealer.seal(bucket.as_bytes(), key.as_bytes(), context);
            format!("{bucket}\n{key}\n{token}").into_bytes()
        })
        .collect();
    let queries = [
        "",
        "r=2&w=2",
        "r=one&w=quorum&pr=1&pw=all",
        "timeout=5000&sync=true&sloppy=false&returnbody=TRUE",
        "w=All&r=QUORUM",
        "timeout=120000&pr=0&pw=0",
        "r=%32&w=%71uorum",
    ]
    .iter()
    .map(|q| q.as_bytes().to_vec())
    .collect();
    vec![
        ("internode_frame", frames),
        ("transport_frame", transport),
        ("gossip_envelope", envelopes),
        ("stored_object", objects),
        ("causal_context", contexts),
        ("context_token", tokens),
        ("request_options", queries),
        ("ring_push", rings),
    ]
}

fn actor(i: u64) -> ActorId {
    ActorId(0x00c0_ffee_0000_0000 + i)
}

fn sample_objects() -> Vec<Object> {
    let ts = |ms: u64| Timestamp::new(1_795_000_000_000 + ms, 0);
    let mut one = Object::new();
    one.write(
        &VersionVector::new(),
        Dot::new(actor(1), 1),
        ts(1),
        Some(b"apple".to_vec()),
    )
    .expect("first write");
    let mut siblings = one.clone();
    siblings
        .write(
            &VersionVector::new(),
            Dot::new(actor(2), 1),
            ts(2),
            Some(b"banana".to_vec()),
        )
        .expect("concurrent write");
    let mut deleted = one.clone();
    let read = deleted.context().clone();
    deleted
        .write_in(&read, Dot::new(actor(1), 2), ts(3), None)
        .expect("delete");
    let mut typed = siblings.clone();
    typed
        .write_typed(
            &CausalContext::default(),
            Dot::new(actor(3), 1),
            ts(4),
            Some(br#"{"fruit":"cherry"}"#.to_vec()),
            Some("application/json".into()),
        )
        .expect("a write with a content type");
    vec![Object::new(), one, siblings, deleted, typed]
}

fn sample_contexts() -> Vec<CausalContext> {
    let mut vv = VersionVector::new();
    vv.add(Dot::new(actor(1), 3));
    let mut two = vv.clone();
    two.add(Dot::new(actor(2), 1_795_000_000_000 << 16));
    vec![
        CausalContext::default(),
        CausalContext::new(vv.clone()),
        CausalContext::new(two),
        CausalContext::with_dots(vv, [Dot::new(actor(1), 5), Dot::new(actor(3), 2)]),
    ]
}

fn sample_envelopes() -> Vec<Envelope> {
    let sender = Sender {
        node: NodeId::from_u128(7),
        generation: Generation(1_700_000_000),
    };
    let digest = |n: u128| Digest {
        node: NodeId::from_u128(n),
        generation: Generation(2),
        max_version: Version(40),
    };
    let delta = NodeDelta {
        node: NodeId::from_u128(9),
        generation: Generation(3),
        since: Version(0),
        heartbeat: Some(Version(300)),
        entries: vec![
            Entry {
                key: StateKey::QuicAddr,
                version: Version(1),
                value: StateValue::Addr("10.1.2.3:7000".parse().expect("addr")),
            },
            Entry {
                key: StateKey::Status,
                version: Version(2),
                value: StateValue::Status(Status::Leaving),
            },
        ],
    };
    vec![
        Envelope::new(
            sender,
            chorus_gossip::Message::Syn(Syn {
                digests: vec![digest(1), digest(7), digest(9)],
                complete: true,
            }),
        ),
        Envelope::new(
            sender,
            chorus_gossip::Message::Ack(Ack {
                states: vec![delta.clone()],
                requests: vec![digest(3)],
            }),
        ),
        Envelope::new(
            sender,
            chorus_gossip::Message::Ack2(Ack2 {
                states: vec![delta],
            }),
        ),
    ]
}

fn sample_rings() -> Vec<Ring> {
    let members = |n: u128| -> Vec<Member> {
        (0..n)
            .map(|i| {
                Member::new(
                    Uuid::from_u128(0x1000 + i),
                    if i % 2 == 0 { "a" } else { "b" },
                    1,
                )
            })
            .collect()
    };
    vec![
        Ring::initial(&members(1), MIN_PARTITIONS, 1).expect("ring of one"),
        Ring::initial(&members(3), MIN_PARTITIONS, 3).expect("ring of three"),
        Ring::initial(&members(5), 2 * MIN_PARTITIONS, 3).expect("ring of five"),
    ]
}

fn sample_frames(
    objects: &[Vec<u8>],
    contexts: &[Vec<u8>],
    envelopes: &[Vec<u8>],
    rings: &[Vec<u8>],
) -> Vec<Frame> {
    let key = WireKey {
        partition: 4,
        bucket: b"b".to_vec(),
        key: b"k".to_vec(),
    };
    let from = Uuid::from_u128(0x1001);
    let messages = vec![
        Message::Gossip(envelopes[0].clone()),
        Message::Store {
            request: Some(9),
            key: key.clone(),
            object: objects[2].clone(),
            sync: true,
            stands_in_for: Some(Uuid::from_u128(0x1002)),
        },
        Message::Stored {
            request: 9,
            key: key.clone(),
            result: Ok(StoredAck { durable: true }),
        },
        Message::Stored {
            request: 10,
            key: key.clone(),
            result: Err(ReplicaError::Refused("no".into())),
        },
        Message::Read {
            request: 11,
            key: key.clone(),
        },
        Message::ReadReply {
            request: 11,
            key: key.clone(),
            result: Ok(serde_bytes::ByteBuf::from(objects[3].clone())),
        },
        Message::Forward {
            request: 12,
            write: ForwardedWrite {
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
                value: Some(b"v".to_vec()),
                context: Some(contexts[3].clone()),
                w: 2,
                pw: 0,
                timeout_ms: 10_000,
                sync: false,
                sloppy: true,
                return_body: true,
                content_type: Some("application/json; charset=utf-8".into()),
            },
        },
        Message::ForwardReply {
            request: 12,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            result: Ok(ForwardedReply {
                context: contexts[2].clone(),
                object: Some(objects[1].clone()),
            }),
        },
        Message::ForwardReply {
            request: 13,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            result: Err(chorus_node::api::RequestError::Write(
                WriteError::TooManySiblings {
                    siblings: 100,
                    max: 100,
                },
            )),
        },
        Message::RingFetch { version: 3 },
        Message::RingPush {
            ring: rings[1].clone(),
        },
    ];
    messages
        .into_iter()
        .map(|message| Frame::new(from, 5 << 32, message))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_only_for_the_bucket_and_key_it_was_sealed_for() {
        let token = ContextKey::new(FUZZ_CONTEXT_KEY).seal(b"b", b"ka", &sample_contexts()[1]);
        assert!(context_token(format!("b\nka\n{token}").as_bytes()));
        assert!(context_token(format!("b\nka\n  {token}\t").as_bytes()));
        assert!(!context_token(format!("b\nkb\n{token}").as_bytes()));
        assert!(!context_token(format!("c\nka\n{token}").as_bytes()));
        let mut altered = token.into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).expect("ASCII");
        assert!(!context_token(format!("b\nka\n{altered}").as_bytes()));
    }

    #[test]
    fn a_length_prefix_alone_is_refused() {
        // A transport header announcing 4 GiB, and an object claiming four
        // billion siblings, with nothing behind them.
        assert!(!transport_frame(&[1, 0xff, 0xff, 0xff, 0xff]));
        assert!(!stored_object(&[
            1, 0x92, 0x80, 0xdd, 0xff, 0xff, 0xff, 0xff
        ]));
    }
}
