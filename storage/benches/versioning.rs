//! The versioning model's hot paths, without any storage.
//!
//! * `encode/N` and `decode/N`: `Object::encode` / `Object::decode` of an
//!   object with N siblings of 100-byte values and an N-actor context.
//! * `merge/concurrent`: joining a replica's object holding one concurrent
//!   sibling into a one-sibling object (the clone of the local object is
//!   setup, not measured).
//! * `merge/identical`: joining an equal object (the read-repair no-op).
//! * `write/supersede`: `Object::write` with the context of the last read,
//!   replacing the one sibling (the coordinator's write path).
//! * `write/context_for_writer`: the context handed back to that writer
//!   (`Object::context_for_writer`, a three-actor key).
//! * `context/seal` and `context/open`: turning a three-actor context into
//!   the token a client gets (`ContextKey::seal`) and checking and decoding
//!   it back (`ContextKey::open`): every put does one of each.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

use chorus_storage::context::{ContextKey, CONTEXT_KEY_LEN};
use chorus_storage::hlc::Timestamp;
use chorus_storage::object::Object;
use chorus_storage::version::{ActorId, Dot, VersionVector};

fn object_with(siblings: u64) -> Object {
    let mut object = Object::new();
    for actor in 1..=siblings {
        let dot = Dot::new(ActorId(actor), 1);
        object
            .write(
                &VersionVector::new(),
                dot,
                Timestamp::new(1_700_000_000_000, 0),
                Some(vec![0xab; 100]),
            )
            .unwrap();
    }
    object
}

fn codec(c: &mut Criterion) {
    for siblings in [1, 3] {
        let object = object_with(siblings);
        let bytes = object.encode();
        c.bench_function(&format!("encode/{siblings}"), |b| {
            b.iter(|| std::hint::black_box(&object).encode())
        });
        c.bench_function(&format!("decode/{siblings}"), |b| {
            b.iter(|| Object::decode(std::hint::black_box(&bytes)).unwrap())
        });
    }
}

fn merge(c: &mut Criterion) {
    let local = object_with(1);
    let mut remote = Object::new();
    remote
        .write(
            &VersionVector::new(),
            Dot::new(ActorId(2), 1),
            Timestamp::new(1_700_000_000_001, 0),
            Some(vec![0xcd; 100]),
        )
        .unwrap();
    c.bench_function("merge/concurrent", |b| {
        b.iter_batched(
            || local.clone(),
            |mut l| assert!(l.merge(&remote)),
            BatchSize::SmallInput,
        )
    });
    let same = local.clone();
    c.bench_function("merge/identical", |b| {
        b.iter_batched(
            || local.clone(),
            |mut l| assert!(!l.merge(&same)),
            BatchSize::SmallInput,
        )
    });
}

fn write(c: &mut Criterion) {
    let object = object_with(1);
    let context = object.context().clone();
    c.bench_function("write/supersede", |b| {
        b.iter_batched(
            || (object.clone(), vec![0xef; 100]),
            |(mut o, value)| {
                o.write_in(
                    &context,
                    Dot::new(ActorId(1), 2),
                    Timestamp::new(1_700_000_000_002, 0),
                    Some(value),
                )
                .unwrap();
                o
            },
            BatchSize::SmallInput,
        )
    });
}

fn context_for_writer(c: &mut Criterion) {
    let mut object = object_with(3);
    let context = object.context().clone();
    let dot = Dot::new(ActorId(1), 2);
    object
        .write_in(
            &context,
            dot,
            Timestamp::new(1_700_000_000_002, 0),
            Some(vec![0xef; 100]),
        )
        .unwrap();
    c.bench_function("write/context_for_writer", |b| {
        b.iter(|| object.context_for_writer(&context, dot))
    });
}

fn context_token(c: &mut Criterion) {
    let key = ContextKey::new([7; CONTEXT_KEY_LEN]);
    let context = object_with(3).context().clone();
    let token = key.seal(b"bucket", b"user:1234", &context);
    c.bench_function("context/seal", |b| {
        b.iter(|| key.seal(b"bucket", b"user:1234", &context))
    });
    c.bench_function("context/open", |b| {
        b.iter(|| key.open(b"bucket", b"user:1234", &token).unwrap())
    });
}

criterion_group!(
    benches,
    codec,
    merge,
    write,
    context_for_writer,
    context_token
);
criterion_main!(benches);
