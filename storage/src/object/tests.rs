use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::version::ActorId;

fn ts(n: u64) -> Timestamp {
    Timestamp::new(1_795_000_000_000 + n, 0)
}

fn dot(actor: u64, counter: u64) -> Dot {
    Dot::new(ActorId(actor), counter)
}

fn values(object: &Object) -> Vec<Option<&[u8]>> {
    object
        .siblings()
        .iter()
        .map(|s| s.value.as_deref())
        .collect()
}

#[test]
fn write_with_context_replaces_what_the_client_saw() {
    let mut o = Object::new();
    o.write(&VersionVector::new(), dot(1, 1), ts(1), Some(b"a".to_vec()))
        .unwrap();
    let read = o.context().clone();
    o.write_in(&read, dot(1, 2), ts(2), Some(b"b".to_vec()))
        .unwrap();
    assert_eq!(values(&o), vec![Some(&b"b"[..])]);
}

#[test]
fn blind_writes_become_siblings_one_each() {
    let mut o = Object::new();
    for i in 1..=3 {
        o.write(&VersionVector::new(), dot(1, i), ts(i), Some(vec![i as u8]))
            .unwrap();
        assert_eq!(
            o.siblings().len(),
            i as usize,
            "one sibling per blind write"
        );
    }
    // A write with the context of the read resolves all three into one.
    let read = o.context().clone();
    o.write_in(&read, dot(2, 10), ts(10), Some(b"resolved".to_vec()))
        .unwrap();
    assert_eq!(values(&o), vec![Some(&b"resolved"[..])]);
}

#[test]
fn concurrent_writes_on_two_replicas_merge_into_siblings_and_collapse() {
    let mut a = Object::new();
    let mut b = Object::new();
    a.write(
        &VersionVector::new(),
        dot(1, 1),
        ts(1),
        Some(b"from a".to_vec()),
    )
    .unwrap();
    b.write(
        &VersionVector::new(),
        dot(2, 2),
        ts(2),
        Some(b"from b".to_vec()),
    )
    .unwrap();
    assert!(a.merge(&b));
    assert_eq!(values(&a), vec![Some(&b"from a"[..]), Some(&b"from b"[..])]);
    assert!(!a.merge(&b), "merging the same state again changes nothing");
    let ctx = a.context().clone();
    b.write_in(&ctx, dot(2, 3), ts(3), Some(b"merged".to_vec()))
        .unwrap();
    a.merge(&b);
    assert_eq!(values(&a), vec![Some(&b"merged"[..])]);
}

#[test]
fn delete_is_a_tombstone_that_keeps_the_context() {
    let mut o = Object::new();
    o.write(&VersionVector::new(), dot(1, 1), ts(1), Some(b"v".to_vec()))
        .unwrap();
    let ctx = o.context().clone();
    o.write_in(&ctx, dot(1, 2), ts(2), None).unwrap();
    assert!(o.is_deleted());
    assert!(!o.is_empty());
    assert_eq!(o.siblings().len(), 1);
    assert!(o.context().covers(&dot(1, 2)));
    // A stale replica that still holds the value does not resurrect it.
    let mut stale = Object::new();
    stale
        .write(&VersionVector::new(), dot(1, 1), ts(1), Some(b"v".to_vec()))
        .unwrap();
    stale.merge(&o);
    assert!(stale.is_deleted());
}

#[test]
fn refused_writes_change_nothing() {
    let mut o = Object::new();
    o.write(&VersionVector::new(), dot(1, 5), ts(5), Some(b"v".to_vec()))
        .unwrap();
    let before = o.clone();
    assert_eq!(
        o.write(&VersionVector::new(), dot(1, 5), ts(6), None),
        Err(ObjectError::DotReused(dot(1, 5)))
    );
    assert_eq!(
        o.write(&VersionVector::new(), dot(1, 3), ts(6), None),
        Err(ObjectError::DotReused(dot(1, 3)))
    );
    assert_eq!(o, before);
    for i in 0..(MAX_SIBLINGS as u64 - 1) {
        o.write(&VersionVector::new(), dot(2, i + 1), ts(i), Some(vec![]))
            .unwrap();
    }
    let full = o.clone();
    assert_eq!(
        o.write(&VersionVector::new(), dot(3, 1), ts(0), Some(vec![])),
        Err(ObjectError::TooManySiblings {
            siblings: MAX_SIBLINGS,
            max: MAX_SIBLINGS
        })
    );
    assert_eq!(o, full);
    // Resolving with the read context is always possible.
    let ctx = o.context().clone();
    o.write_in(&ctx, dot(3, 1), ts(0), Some(b"one".to_vec()))
        .unwrap();
    assert_eq!(o.siblings().len(), 1);
}

#[test]
fn lww_keeps_the_newest_timestamp() {
    let mut o = Object::new();
    o.write(
        &VersionVector::new(),
        dot(1, 1),
        ts(30),
        Some(b"newest".to_vec()),
    )
    .unwrap();
    o.write(
        &VersionVector::new(),
        dot(2, 1),
        ts(20),
        Some(b"older".to_vec()),
    )
    .unwrap();
    o.resolve_lww();
    assert_eq!(values(&o), vec![Some(&b"newest"[..])]);
    assert!(
        o.context().covers(&dot(2, 1)),
        "the loser stays in the history"
    );
}

#[test]
fn encoding_round_trips_and_starts_with_the_format_marker() {
    let mut o = Object::new();
    o.write(&VersionVector::new(), dot(1, 1), ts(1), Some(vec![0; 100]))
        .unwrap();
    o.write(&VersionVector::new(), dot(2, 1), ts(2), None)
        .unwrap();
    let bytes = o.encode();
    assert_eq!(bytes[0], FORMAT_V1);
    assert_eq!(Object::decode(&bytes).unwrap(), o);
}

/// Bytes written by the first release of the format; any change to the
/// encoder that alters them would strand every stored value.
#[test]
fn the_v1_layout_is_stable() {
    let mut o = Object::new();
    o.write(
        &VersionVector::new(),
        dot(1, 1),
        ts(1),
        Some(b"abc".to_vec()),
    )
    .unwrap();
    o.write(
        &VersionVector::new(),
        dot(u64::MAX - 1, 300),
        Timestamp::new(1_700_000_000_000, 7),
        None,
    )
    .unwrap();
    let golden = "0192820101cffffffffffffffffecd012c9293920101cf01a1ee565e010000c4036162639392\
                  cffffffffffffffffecd012ccf018bcfe568000007c0";
    let hex: String = o.encode().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, golden);
    let bytes: Vec<u8> = (0..golden.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&golden[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(Object::decode(&bytes).unwrap(), o);
}

/// Lengths past the one-byte forms: 16-bit and 32-bit value lengths, more
/// than fifteen actors and siblings.
#[test]
fn wide_lengths_round_trip() {
    let mut o = Object::new();
    for (actor, len) in (1..=40u64).zip(
        [0usize, 1, 255, 256, 65_535, 65_536, 200_000]
            .into_iter()
            .cycle(),
    ) {
        o.write(
            &VersionVector::new(),
            dot(actor, actor * 1000),
            ts(actor),
            Some(vec![actor as u8; len]),
        )
        .unwrap();
    }
    assert_eq!(o.siblings().len(), 40);
    assert_eq!(Object::decode(&o.encode()).unwrap(), o);
}

#[test]
fn non_canonical_contexts_and_absurd_lengths_are_errors() {
    // Context {2:1, 1:1}: actors out of order.
    assert_eq!(
        Object::decode(&[1, 0x92, 0x82, 2, 1, 1, 1, 0x90]),
        Err(DecodeError::Invalid(
            "context actors out of order or repeated"
        ))
    );
    // Context {1:0}.
    assert_eq!(
        Object::decode(&[1, 0x92, 0x81, 1, 0, 0x90]),
        Err(DecodeError::Invalid("zero counter in the context"))
    );
    // A map claiming 2^32-1 entries in a few bytes: refused before allocating.
    assert!(matches!(
        Object::decode(&[1, 0x92, 0xdf, 0xff, 0xff, 0xff, 0xff, 1, 1]),
        Err(DecodeError::Malformed(m)) if m.contains("beyond the end")
    ));
    // A value claiming 4 GiB.
    assert!(matches!(
        Object::decode(&[1, 0x92, 0x81, 1, 1, 0x91, 0x93, 0x92, 1, 1, 0, 0xc6, 0xff, 0xff, 0xff, 0xff]),
        Err(DecodeError::Malformed(m)) if m.starts_with("value at byte 11: truncated")
    ));
    // A string where the value should be.
    assert!(matches!(
        Object::decode(&[1, 0x92, 0x81, 1, 1, 0x91, 0x93, 0x92, 1, 1, 0, 0xa1, b'x']),
        Err(DecodeError::Malformed(m)) if m.contains("expected bytes or nil")
    ));
}

#[test]
fn damaged_encodings_are_errors() {
    let mut o = Object::new();
    o.write(
        &VersionVector::new(),
        dot(1, 1),
        ts(1),
        Some(b"value".to_vec()),
    )
    .unwrap();
    let bytes = o.encode();
    assert_eq!(Object::decode(&[]), Err(DecodeError::Empty));
    assert_eq!(
        Object::decode(&[7, 1, 2]),
        Err(DecodeError::UnknownFormat(7))
    );
    for cut in 1..bytes.len() {
        assert!(
            Object::decode(&bytes[..cut]).is_err(),
            "truncated at {cut} decoded"
        );
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        Object::decode(&trailing),
        Err(DecodeError::Malformed(_))
    ));
    // A sibling whose dot the context does not cover breaks the invariant.
    let forged = Object {
        context: CausalContext::default(),
        siblings: o.siblings.clone(),
    };
    let forged_bytes = forged.encode();
    assert!(matches!(
        Object::decode(&forged_bytes),
        Err(DecodeError::Invalid(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Object::decode(&bytes);
        let mut marked = vec![FORMAT_V1];
        marked.extend(&bytes);
        let _ = Object::decode(&marked);
    }

    /// Damage in the middle of a valid encoding (the case random bytes
    /// rarely reach) is an error or another valid object, never a panic.
    #[test]
    fn damaged_valid_encodings_never_panic(
        siblings in 1..20u64,
        len in 0..300usize,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut o = Object::new();
        for actor in 1..=siblings {
            let value = (actor % 3 != 0).then(|| vec![7; len]);
            let content_type = (actor % 3 == 1).then(|| "text/plain; charset=utf-8".to_owned());
            o.write_typed(&CausalContext::default(), dot(actor, actor), ts(actor), value, content_type)
                .unwrap();
        }
        let mut bytes = o.encode();
        for (at, byte) in flips {
            let at = at.index(bytes.len() - 1) + 1;
            bytes[at] = byte;
        }
        if let Ok(decoded) = Object::decode(&bytes) {
            prop_assert_eq!(Object::decode(&decoded.encode()).unwrap(), decoded);
        }
    }
}

// ---------------------------------------------------------------------------
// A reference model.
//
// The model keeps, per replica, the *exact* set of dots it has seen and the set
// of dots it holds as siblings. Its rules are the specification written with
// sets: a write removes the dots in the client's context and adds its own; a
// merge keeps a dot unless the other side saw it and dropped it. The object
// must hold exactly the model's siblings after every step, however the steps
// interleave, and its context must cover exactly the written dots the model
// has seen.
//
// Clients also write again with the context an earlier write answered
// (`Object::context_for_writer`), through any replica. Those contexts carry
// single dots, and a replica that has not received their versions yet keeps
// them in its dot cloud, so the steps build objects with clouds too.

const REPLICAS: usize = 4;

#[derive(Debug, Clone)]
enum Step {
    /// A client reads from one replica, or from two merged (a quorum read),
    /// then writes at `at` with what it read (or with no context: blind).
    /// With `again`, and once some write has answered, the client instead
    /// writes with the context one earlier write answered.
    Write {
        at: usize,
        read_from: Vec<usize>,
        blind: bool,
        delete: bool,
        again: Option<prop::sample::Index>,
    },
    /// Anti-entropy, read repair or handoff: `to` merges `from`'s state.
    Merge { from: usize, to: usize },
}

fn step() -> impl Strategy<Value = Step> {
    let replica = 0..REPLICAS;
    prop_oneof![
        3 => (
            replica.clone(),
            proptest::collection::vec(replica.clone(), 1..3),
            any::<bool>(),
            prop::bool::weighted(0.2),
            proptest::option::weighted(0.4, any::<prop::sample::Index>()),
        )
            .prop_map(|(at, read_from, blind, delete, again)| Step::Write { at, read_from, blind, delete, again }),
        2 => (replica.clone(), replica).prop_map(|(from, to)| Step::Merge { from, to }),
    ]
}

#[derive(Debug, Clone, Default)]
struct ModelReplica {
    seen: BTreeSet<Dot>,
    live: BTreeSet<Dot>,
}

/// Runs the steps on real objects and on the model side by side, checking
/// they agree after every step. Returns the replicas' objects.
fn run(steps: &[Step]) -> Result<Vec<Object>, TestCaseError> {
    let mut objects = vec![Object::new(); REPLICAS];
    let mut model = vec![ModelReplica::default(); REPLICAS];
    let mut written: BTreeSet<Dot> = BTreeSet::new();
    let mut superseded: BTreeSet<Dot> = BTreeSet::new();
    let mut counter = 0u64; // like the HLC: increases forever
                            // The contexts earlier writes answered, with the dots each covers.
    let mut answers: Vec<(CausalContext, BTreeSet<Dot>)> = Vec::new();
    for step in steps {
        match step {
            Step::Write {
                at,
                read_from,
                blind,
                delete,
                again,
            } => {
                let (client, model_read) = match again {
                    Some(i) if !answers.is_empty() => answers[i.index(answers.len())].clone(),
                    _ => {
                        let mut read = Object::new();
                        let mut model_read = BTreeSet::new();
                        if !blind {
                            for &r in read_from {
                                read.merge(&objects[r]);
                                model_read.extend(model[r].seen.iter().copied());
                            }
                        }
                        (read.context().clone(), model_read)
                    }
                };
                counter += 1;
                let d = Dot::new(ActorId(*at as u64), counter);
                let before = objects[*at].siblings().len();
                let covered = objects[*at]
                    .siblings()
                    .iter()
                    .filter(|s| client.covers(&s.dot))
                    .count();
                let value = if *delete {
                    None
                } else {
                    Some(counter.to_be_bytes().to_vec())
                };
                let content_type = value.as_ref().and_then(|_| content_type_of(d));
                objects[*at]
                    .write_typed(&client, d, Timestamp::new(counter, 0), value, content_type)
                    .unwrap();
                prop_assert_eq!(
                    objects[*at].siblings().len(),
                    before - covered + 1,
                    "a write adds exactly one sibling"
                );
                let m = &mut model[*at];
                m.live.retain(|x| !model_read.contains(x));
                m.live.insert(d);
                m.seen.extend(model_read.iter().copied());
                m.seen.insert(d);
                superseded.extend(model_read);
                written.insert(d);
                // The answer covers what its writer saw and its own dot
                // (what else it covers is checked by
                // `a_write_context_covers_only_what_the_writer_saw`).
                let answer = objects[*at].context_for_writer(&client, d);
                let answer_covers = written
                    .iter()
                    .copied()
                    .filter(|x| answer.covers(x))
                    .collect();
                answers.push((answer, answer_covers));
            }
            Step::Merge { from, to } => {
                let src = objects[*from].clone();
                objects[*to].merge(&src);
                let (a, b) = (model[*to].clone(), model[*from].clone());
                let live = a
                    .live
                    .iter()
                    .filter(|x| b.live.contains(x) || !b.seen.contains(x))
                    .chain(b.live.iter().filter(|x| !a.seen.contains(x)))
                    .copied()
                    .collect();
                model[*to] = ModelReplica {
                    seen: a.seen.union(&b.seen).copied().collect(),
                    live,
                };
            }
        }
        for (object, m) in objects.iter().zip(&model) {
            let dots: BTreeSet<Dot> = object.siblings().iter().map(|s| s.dot).collect();
            prop_assert_eq!(&dots, &m.live);
            for sibling in object.siblings() {
                let written = sibling
                    .value
                    .as_ref()
                    .and_then(|_| content_type_of(sibling.dot));
                prop_assert_eq!(
                    &sibling.content_type,
                    &written,
                    "a version keeps its content type"
                );
            }
            let seen: BTreeSet<Dot> = written
                .iter()
                .copied()
                .filter(|x| object.context().covers(x))
                .collect();
            prop_assert_eq!(&seen, &m.seen, "the context covers exactly what was seen");
        }
    }
    // Nothing written is lost unless a later write's context covered it.
    let mut all = Object::new();
    for object in &objects {
        all.merge(object);
    }
    let survivors: BTreeSet<Dot> = all.siblings().iter().map(|s| s.dot).collect();
    let expected: BTreeSet<Dot> = written.difference(&superseded).copied().collect();
    prop_assert_eq!(survivors, expected);
    Ok(objects)
}

/// The content type the model's write `dot` gives its value: none for a
/// third of the writes, so objects mix typed and untyped siblings.
fn content_type_of(dot: Dot) -> Option<String> {
    match dot.counter % 3 {
        0 => None,
        1 => Some("application/json".into()),
        _ => Some(format!("text/plain; charset=utf-8; n={}", dot.counter)),
    }
}

fn join(a: &Object, b: &Object) -> Object {
    let mut x = a.clone();
    x.merge(b);
    x
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn agrees_with_the_reference_model(steps in proptest::collection::vec(step(), 1..40)) {
        run(&steps)?;
    }

    #[test]
    fn merge_is_a_join(steps in proptest::collection::vec(step(), 1..40)) {
        let objects = run(&steps)?;
        let (a, b, c) = (&objects[0], &objects[1], &objects[2]);
        prop_assert_eq!(join(a, b), join(b, a), "commutative");
        prop_assert_eq!(join(&join(a, b), c), join(a, &join(b, c)), "associative");
        prop_assert_eq!(join(a, a), a.clone(), "idempotent");
        let mut unchanged = a.clone();
        prop_assert!(!unchanged.merge(a));
    }

    /// `merge` tracks its answer as it goes rather than comparing states,
    /// so this pins the answer to what the states say.
    #[test]
    fn merge_says_whether_the_object_changed(steps in proptest::collection::vec(step(), 1..40)) {
        let objects = run(&steps)?;
        for a in &objects {
            for b in &objects {
                let mut merged = a.clone();
                let changed = merged.merge(b);
                prop_assert_eq!(changed, merged != *a, "merging {:?} into {:?}", b, a);
            }
        }
    }

    #[test]
    fn encoding_round_trips(steps in proptest::collection::vec(step(), 1..20)) {
        for object in run(&steps)? {
            let encoded = object.encode();
            prop_assert_eq!(object.encoded_len(), encoded.len(), "counted as written");
            prop_assert_eq!(Object::decode(&encoded).unwrap(), object);
        }
    }
}

/// A merge can change the siblings and not the context: here `ours` has
/// seen `y`'s dot (as a single dot of a writer's context) but not `y`, so
/// only `theirs` says that `y` superseded `x`. The merge must drop `x` and
/// say that it changed, or the replica would not store the result.
#[test]
fn a_merge_that_only_drops_a_sibling_says_it_changed() {
    let mut ours = Object::new();
    ours.write(&VersionVector::new(), dot(1, 1), ts(1), Some(b"x".to_vec()))
        .unwrap();
    let mut theirs = ours.clone();
    let read = theirs.context().clone();
    theirs
        .write_in(&read, dot(2, 1), ts(2), Some(b"y".to_vec()))
        .unwrap();
    let only_y = CausalContext::with_dots(VersionVector::new(), [dot(2, 1)]);
    ours.write_in(&only_y, dot(3, 1), ts(3), Some(b"z".to_vec()))
        .unwrap();
    let before = ours.clone();
    assert!(ours.merge(&theirs), "x was dropped");
    assert_eq!(ours.context(), before.context(), "the context did not move");
    assert_eq!(values(&ours), vec![Some(&b"z"[..])]);
}

// ---------------------------------------------------------------------------
// The context a write hands back to its writer (design.md §3 rule 3).

/// The review's F1 on one replica: `apple` and `banana` are concurrent; the
/// context `banana`'s writer gets back must not cover `apple`.
#[test]
fn a_writers_context_never_covers_a_sibling_it_was_not_shown() {
    let mut object = Object::new();
    object
        .write(
            &VersionVector::new(),
            dot(1, 1),
            ts(1),
            Some(b"apple".to_vec()),
        )
        .unwrap();
    let blind = CausalContext::default();
    object
        .write_in(&blind, dot(1, 2), ts(2), Some(b"banana".to_vec()))
        .unwrap();
    let token = object.context_for_writer(&blind, dot(1, 2));
    assert!(token.covers(&dot(1, 2)));
    assert!(!token.covers(&dot(1, 1)), "{token}");
    object
        .write_in(&token, dot(1, 3), ts(3), Some(b"banana2".to_vec()))
        .unwrap();
    assert_eq!(
        values(&object),
        vec![Some(b"apple".as_slice()), Some(b"banana2".as_slice())]
    );
    // With no concurrent sibling the context is the key's whole history,
    // without single dots.
    let mut alone = Object::new();
    alone
        .write(&VersionVector::new(), dot(2, 5), ts(5), Some(b"v".to_vec()))
        .unwrap();
    let token = alone.context_for_writer(&blind, dot(2, 5));
    assert_eq!(&token, alone.context());
}

/// A single dot the replica has not seen yet removes nothing and adds no
/// coverage: should its version arrive later, it stays as a sibling.
#[test]
fn an_unknown_single_dot_leaves_a_sibling_never_a_loss() {
    let mut here = Object::new();
    let token = CausalContext::with_dots(VersionVector::new(), [dot(7, 4)]);
    here.write_in(&token, dot(1, 9), ts(9), Some(b"mine".to_vec()))
        .unwrap();
    assert!(!here.context().covers(&dot(7, 3)));
    let mut elsewhere = Object::new();
    elsewhere
        .write(
            &VersionVector::new(),
            dot(7, 3),
            ts(3),
            Some(b"older".to_vec()),
        )
        .unwrap();
    here.merge(&elsewhere);
    assert_eq!(here.siblings().len(), 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Whatever the replicas hold, the context a write returns covers the
    /// writer's new version and what its own context covered, and of every
    /// other version anywhere only those the coordinator already knows to
    /// be superseded (and so doomed on the next merge anyway).
    #[test]
    fn a_write_context_covers_only_what_the_writer_saw(
        steps in proptest::collection::vec(step(), 1..30),
        at in 0..REPLICAS,
        read_from in proptest::collection::vec(0..REPLICAS, 0..3),
    ) {
        let mut objects = run(&steps)?;
        let mut read = Object::new();
        for &r in &read_from {
            read.merge(&objects[r]);
        }
        let client = read.context().clone();
        let d = dot(at as u64, 1_000_000);
        let before = objects[at].clone();
        objects[at].write_in(&client, d, ts(1_000_000), Some(b"w".to_vec())).unwrap();
        let token = objects[at].context_for_writer(&client, d);
        prop_assert!(token.covers(&d));
        for s in read.siblings() {
            prop_assert!(token.covers(&s.dot), "misses {} the writer saw", s.dot);
        }
        let doomed = |x: &Dot| {
            before.context().covers(x) && !before.siblings().iter().any(|s| s.dot == *x)
        };
        for object in &objects {
            for s in object.siblings() {
                if token.covers(&s.dot) {
                    prop_assert!(
                        s.dot == d || client.covers(&s.dot) || doomed(&s.dot),
                        "covers {} the writer was never shown", s.dot
                    );
                }
            }
        }
        // The token travels (bytes) and still covers the same.
        prop_assert_eq!(CausalContext::from_bytes(&token.to_bytes()).unwrap(), token);
    }
}

// ---------------------------------------------------------------------------
// Single dots of a writer's context (the dot cloud).

/// A client shown X on replica A writes Y through replica B, which has not
/// received X yet: X's dot is one of the client's single dots. When X
/// reaches B, Y's write has already superseded it: only Y remains beside
/// the version its writer never saw, whichever way the states merge.
#[test]
fn a_writes_single_dots_supersede_a_version_that_arrives_later() {
    let mut a = Object::new();
    let blind = CausalContext::default();
    a.write_in(&blind, dot(1, 3), ts(3), Some(b"w".to_vec()))
        .unwrap();
    a.write_in(&blind, dot(1, 5), ts(5), Some(b"x".to_vec()))
        .unwrap();
    // X's writer was not shown w, so X's dot travels as a single dot.
    let shown_x = a.context_for_writer(&blind, dot(1, 5));
    assert!(shown_x.covers(&dot(1, 5)) && !shown_x.covers(&dot(1, 3)));
    assert_eq!(shown_x.dots().collect::<Vec<_>>(), vec![dot(1, 5)]);

    let mut b = Object::new();
    b.write_in(&shown_x, dot(2, 7), ts(7), Some(b"y".to_vec()))
        .unwrap();
    let mut b_then_a = b.clone();
    b_then_a.merge(&a);
    let mut a_then_b = a.clone();
    a_then_b.merge(&b);
    for merged in [&b_then_a, &a_then_b] {
        assert_eq!(
            values(merged),
            vec![Some(b"w".as_slice()), Some(b"y".as_slice())],
            "X showed beside Y although Y's writer had seen X"
        );
    }
    assert_eq!(b_then_a, a_then_b);
}

/// The object on B above, before X arrives: its context covers X's dot as
/// a cloud dot, a read of it hands the cloud on, and the encoding keeps it.
/// Once the vector covers the dot (merging A's state), the cloud is empty.
#[test]
fn the_cloud_is_read_stored_and_folded_into_the_vector() {
    let shown_x = CausalContext::with_dots(VersionVector::new(), [dot(1, 5)]);
    let mut b = Object::new();
    b.write_in(&shown_x, dot(2, 7), ts(7), Some(b"y".to_vec()))
        .unwrap();
    assert_eq!(b.context().dots().collect::<Vec<_>>(), vec![dot(1, 5)]);
    assert!(b.context().covers(&dot(1, 5)) && !b.context().covers(&dot(1, 4)));
    let bytes = b.encode();
    assert_eq!(bytes[1], 0x93, "an object with a cloud has a third field");
    assert_eq!(Object::decode(&bytes).unwrap(), b);
    // The token a reader of B gets carries the cloud.
    let token = CausalContext::from_bytes(&b.context().to_bytes()).unwrap();
    assert!(token.covers(&dot(1, 5)));
    // The version X's replica minted before X, which Y's writer never saw,
    // survives; X does not; the cloud dot joins the vector.
    let mut a = Object::new();
    a.write(&VersionVector::new(), dot(1, 5), ts(5), Some(b"x".to_vec()))
        .unwrap();
    b.merge(&a);
    assert_eq!(values(&b), vec![Some(b"y".as_slice())]);
    assert_eq!(b.context().dot_count(), 0);
    assert_eq!(b.encode()[1], 0x92, "no cloud, the first release's layout");
    // A write whose context brings a dot right after the vector's entry
    // folds it in: one covered set, one form.
    let mut c = Object::new();
    c.write(&VersionVector::new(), dot(1, 4), ts(4), None)
        .unwrap();
    c.write_in(&shown_x, dot(2, 8), ts(8), None).unwrap();
    assert_eq!(c.context().dot_count(), 0);
    assert_eq!(c.context().version_vector().get(ActorId(1)), 5);
}

/// A write's cloud holds at most `MAX_CLOUD_DOTS`; single dots beyond it are
/// left out (their versions, should they arrive, stay as siblings).
#[test]
fn a_write_leaves_at_most_max_cloud_dots() {
    let many = CausalContext::with_dots(
        VersionVector::new(),
        (1..=MAX_CLOUD_DOTS as u64 + 10).map(|a| dot(a, 2)),
    );
    let mut o = Object::new();
    o.write_in(&many, dot(1_000, 1), ts(1), None).unwrap();
    assert_eq!(o.context().dot_count(), MAX_CLOUD_DOTS);
    assert!(o.context().covers(&dot(MAX_CLOUD_DOTS as u64, 2)));
    assert!(!o.context().covers(&dot(MAX_CLOUD_DOTS as u64 + 1, 2)));
    assert_eq!(Object::decode(&o.encode()).unwrap(), o);
}

#[test]
fn damaged_clouds_are_errors() {
    // [ {1:1}, [ [[1,1], 0, nil] ], cloud ]
    let object = |cloud: &[u8]| {
        let mut bytes = vec![1, 0x93, 0x81, 1, 1, 0x91, 0x93, 0x92, 1, 1, 0, 0xc0];
        bytes.extend_from_slice(cloud);
        Object::decode(&bytes)
    };
    let good = object(&[0x91, 0x92, 2, 5]).unwrap();
    assert_eq!(good.context().dots().collect::<Vec<_>>(), vec![dot(2, 5)]);
    assert_eq!(
        object(&[0x90]),
        Err(DecodeError::Invalid(
            "an empty cloud is written as no cloud"
        ))
    );
    let not_compact = Err(DecodeError::Invalid(
        "a cloud dot is zero, or the vector covers or continues it",
    ));
    assert_eq!(object(&[0x91, 0x92, 1, 1]), not_compact, "covered");
    assert_eq!(object(&[0x91, 0x92, 1, 2]), not_compact, "continues 1:1");
    assert_eq!(object(&[0x91, 0x92, 2, 0]), not_compact, "zero");
    assert_eq!(
        object(&[0x92, 0x92, 2, 5, 0x92, 2, 4]),
        Err(DecodeError::Invalid("cloud dots out of order or repeated"))
    );
    assert_eq!(
        object(&[0x92, 0x92, 2, 5, 0x92, 2, 5]),
        Err(DecodeError::Invalid("cloud dots out of order or repeated"))
    );
    // More dots than any merge may leave, refused before reading them.
    let mut too_many = vec![0xdc];
    too_many.extend_from_slice(&(MAX_DECODED_CLOUD_DOTS as u16 + 1).to_be_bytes());
    assert_eq!(
        object(&too_many),
        Err(DecodeError::Invalid("too many single dots in the context"))
    );
    // A length beyond the bytes that are left.
    assert!(matches!(
        object(&[0xdc, 0x00, 0x20]),
        Err(DecodeError::Malformed(m)) if m.contains("beyond the end")
    ));
    assert!(matches!(
        object(&[0x91, 0x92, 2, 0xcd, 0x01]),
        Err(DecodeError::Malformed(m)) if m.contains("truncated")
    ));
    // Four fields.
    assert!(matches!(
        Object::decode(&[1, 0x94, 0x80, 0x90, 0x90, 0x90]),
        Err(DecodeError::Malformed(m)) if m.contains("expected 2 or 3 fields")
    ));
}

// ---------------------------------------------------------------------------
// Content types: a version carries the media type its writer gave it.

#[test]
fn content_types_are_bounded_media_types_of_visible_ascii() {
    for good in [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain;charset=\"utf-8\"",
        "application/vnd.api+json",
        "image/svg+xml ; q=1",
    ] {
        assert_eq!(check_content_type(good), Ok(()), "{good}");
    }
    let longest = format!("application/{}", "x".repeat(MAX_CONTENT_TYPE_BYTES - 12));
    assert_eq!(longest.len(), MAX_CONTENT_TYPE_BYTES);
    assert_eq!(check_content_type(&longest), Ok(()));
    assert_eq!(
        check_content_type(&format!("{longest}x")),
        Err(ContentTypeError::TooLong {
            len: MAX_CONTENT_TYPE_BYTES + 1,
            max: MAX_CONTENT_TYPE_BYTES
        })
    );
    assert_eq!(check_content_type(""), Err(ContentTypeError::Empty));
    for (bad, at) in [
        ("text/plain\t", 10),
        ("text/pl\u{e4}in", 7),
        (" text/plain", 0),
        ("text/plain ", 10),
        ("text/\nplain", 5),
    ] {
        assert_eq!(
            check_content_type(bad),
            Err(ContentTypeError::NotVisibleAscii { at }),
            "{bad:?}"
        );
    }
    for bad in [
        "json",
        "application/",
        "/json",
        "text/plain/x",
        "a b/c",
        "text/plain, text/html",
    ] {
        assert_eq!(
            check_content_type(bad),
            Err(ContentTypeError::NotAMediaType),
            "{bad:?}"
        );
    }
}

#[test]
fn a_version_keeps_its_content_type_and_a_tombstone_has_none() {
    let mut o = Object::new();
    let blind = CausalContext::default();
    o.write_typed(
        &blind,
        dot(1, 1),
        ts(1),
        Some(b"{}".to_vec()),
        Some("application/json".into()),
    )
    .unwrap();
    o.write(
        &VersionVector::new(),
        dot(2, 1),
        ts(2),
        Some(b"raw".to_vec()),
    )
    .unwrap();
    let types: Vec<Option<&str>> = o
        .siblings()
        .iter()
        .map(|s| s.content_type.as_deref())
        .collect();
    assert_eq!(types, vec![Some("application/json"), None]);

    // Refused writes change nothing.
    let before = o.clone();
    assert_eq!(
        o.write_typed(
            &blind,
            dot(3, 1),
            ts(3),
            Some(vec![]),
            Some("not a type".into())
        ),
        Err(ObjectError::InvalidContentType(
            ContentTypeError::NotAMediaType
        ))
    );
    let read = o.context().clone();
    assert_eq!(
        o.write_typed(&read, dot(3, 1), ts(3), None, Some("text/plain".into())),
        Err(ObjectError::InvalidContentType(
            ContentTypeError::OnTombstone
        ))
    );
    assert_eq!(o, before);

    // A write with the read's context replaces the typed version with its own.
    o.write_typed(
        &read,
        dot(3, 1),
        ts(3),
        Some(b"hi".to_vec()),
        Some("text/plain".into()),
    )
    .unwrap();
    assert_eq!(o.siblings().len(), 1);
    assert_eq!(o.siblings()[0].content_type.as_deref(), Some("text/plain"));
}

#[test]
fn merge_keeps_each_siblings_content_type() {
    let blind = CausalContext::default();
    let mut a = Object::new();
    a.write_typed(
        &blind,
        dot(1, 1),
        ts(1),
        Some(b"{}".to_vec()),
        Some("application/json".into()),
    )
    .unwrap();
    let mut b = Object::new();
    b.write_typed(
        &blind,
        dot(2, 1),
        ts(2),
        Some(b"<a/>".to_vec()),
        Some("application/xml".into()),
    )
    .unwrap();
    let mut c = Object::new();
    c.write(
        &VersionVector::new(),
        dot(3, 1),
        ts(3),
        Some(b"raw".to_vec()),
    )
    .unwrap();
    let all = join(&join(&a, &b), &c);
    assert_eq!(all, join(&c, &join(&b, &a)));
    let types: Vec<Option<&str>> = all
        .siblings()
        .iter()
        .map(|s| s.content_type.as_deref())
        .collect();
    assert_eq!(
        types,
        vec![Some("application/json"), Some("application/xml"), None]
    );
    // A replica that already holds the version takes nothing new from a copy.
    let mut again = all.clone();
    assert!(!again.merge(&a));
    assert_eq!(Object::decode(&all.encode()).unwrap(), all);
}

/// A sibling with a content type is `array(4)`; one without keeps the
/// three fields the first release wrote.
#[test]
fn a_content_type_is_a_fourth_sibling_field() {
    let mut o = Object::new();
    o.write_typed(
        &CausalContext::default(),
        dot(1, 1),
        ts(1),
        Some(b"{}".to_vec()),
        Some("application/json".into()),
    )
    .unwrap();
    o.write(&VersionVector::new(), dot(1, 2), ts(2), Some(b"x".to_vec()))
        .unwrap();
    let golden = "01928101029294920101cf01a1ee565e010000c4027b7db06170706c69636174696f6e2f6a736f6e\
                  93920102cf01a1ee565e020000c40178";
    let hex: String = o.encode().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, golden);
    assert_eq!(Object::decode(&o.encode()).unwrap(), o);

    // The longest content type takes a 16-bit string length and round-trips.
    let longest = format!("text/{}", "x".repeat(MAX_CONTENT_TYPE_BYTES - 5));
    let mut long = Object::new();
    long.write_typed(
        &CausalContext::default(),
        dot(1, 1),
        ts(1),
        Some(vec![]),
        Some(longest),
    )
    .unwrap();
    assert_eq!(Object::decode(&long.encode()).unwrap(), long);
}

/// Bytes of an object stored before versions carried content types (two
/// values, a tombstone and a dot cloud): they decode, every sibling
/// without a content type, and encode back to the same bytes.
#[test]
fn objects_stored_before_content_types_still_decode() {
    // [ {1:3, 2:1}, [ [[1,2], 5, "b"], [[1,3], 6, nil], [[2,1], 7, ""] ], [[4,9]] ]
    let stored = [
        0x01, 0x93, 0x82, 0x01, 0x03, 0x02, 0x01, 0x93, 0x93, 0x92, 0x01, 0x02, 0x05, 0xc4, 0x01,
        b'b', 0x93, 0x92, 0x01, 0x03, 0x06, 0xc0, 0x93, 0x92, 0x02, 0x01, 0x07, 0xc4, 0x00, 0x91,
        0x92, 0x04, 0x09,
    ];
    let object = Object::decode(&stored).unwrap();
    assert_eq!(object.siblings().len(), 3);
    assert_eq!(object.live().count(), 2);
    assert!(object.siblings().iter().all(|s| s.content_type.is_none()));
    assert!(object.context().covers(&dot(4, 9)));
    assert_eq!(object.encode(), stored);
}

#[test]
fn damaged_content_types_are_errors() {
    // [ {1:1}, [ [[1,1], 0, value, content type] ] ]
    let object = |value: &[u8], content_type: &[u8]| {
        let mut bytes = vec![1, 0x92, 0x81, 1, 1, 0x91, 0x94, 0x92, 1, 1, 0];
        bytes.extend_from_slice(value);
        bytes.extend_from_slice(content_type);
        Object::decode(&bytes)
    };
    let value = [0xc4, 1, b'v'];
    let good = object(&value, b"\xaatext/plain").unwrap();
    assert_eq!(
        good.siblings()[0].content_type.as_deref(),
        Some("text/plain")
    );
    // The same in a wider length form decodes to the same object.
    assert_eq!(object(&value, b"\xd9\x0atext/plain"), Ok(good.clone()));
    assert_eq!(object(&value, b"\xda\x00\x0atext/plain"), Ok(good));

    let unbounded = Err(DecodeError::Invalid(
        "a content type that is not a bounded media type",
    ));
    assert_eq!(
        object(&[0xc0], b"\xaatext/plain"),
        Err(DecodeError::Invalid("a tombstone with a content type"))
    );
    assert_eq!(object(&value, b"\xa0"), unbounded, "empty");
    assert_eq!(object(&value, b"\xa4text"), unbounded, "not a media type");
    assert_eq!(object(&value, b"\xa5te\x01/t"), unbounded, "a control byte");
    // Longer than the bound: refused on its length, before reading it.
    assert_eq!(object(&value, b"\xda\x01\x01text/plain"), unbounded);
    assert_eq!(object(&value, b"\xdb\xff\xff\xff\xff"), unbounded);
    assert!(matches!(
        object(&value, b"\xaatext/pl"),
        Err(DecodeError::Malformed(m)) if m.contains("truncated")
    ));
    assert!(matches!(
        object(&value, b"\xa3a/\xff"),
        Err(DecodeError::Malformed(m)) if m.contains("not UTF-8")
    ));
    assert!(matches!(
        object(&value, b"\xc4\x03a/b"),
        Err(DecodeError::Malformed(m)) if m.contains("expected a string")
    ));
    // Five fields.
    let mut five = vec![1, 0x92, 0x81, 1, 1, 0x91, 0x95, 0x92, 1, 1, 0];
    five.extend_from_slice(&value);
    five.extend_from_slice(b"\xa3a/b\xc0");
    assert!(matches!(
        Object::decode(&five),
        Err(DecodeError::Malformed(m)) if m.contains("expected 3 or 4 fields")
    ));
}

/// Every context handed to a client must seal into a token the cluster
/// opens again. A writer that keeps writing with the context of its last
/// write, while versions it was never shown stand beside its own, is
/// handed its own superseded versions as single dots, one more each
/// write; past `MAX_CONTEXT_DOTS` the token would be refused as malformed.
#[test]
fn a_writer_chaining_its_write_contexts_past_unseen_siblings_always_gets_an_openable_token() {
    let key = crate::context::ContextKey::new([7; 32]);
    let mut o = Object::new();
    // Ten versions the chaining writer never sees.
    for i in 1..=10 {
        o.write(&VersionVector::new(), dot(1, i), ts(i), Some(vec![0]))
            .unwrap();
    }
    let mut context = CausalContext::default();
    for i in 11..=400 {
        let minted = dot(1, i);
        o.write_in(&context, minted, ts(i), Some(vec![1])).unwrap();
        context = o.context_for_writer(&context, minted);
        assert!(context.dot_count() <= MAX_CONTEXT_DOTS, "write {i}");
        let token = key.seal(b"b", b"k", &context);
        assert_eq!(key.open(b"b", b"k", &token).unwrap(), context, "write {i}");
        // The writer's own version stays covered: it replaces it next time.
        assert!(context.covers(&minted));
        assert_eq!(o.siblings().len(), 11, "write {i}");
    }
    let token = key.seal(b"b", b"k", &o.context_for_reader());
    assert!(key.open(b"b", b"k", &token).is_ok());
}

/// A key's context after merges can hold more single dots than a token
/// carries; a reader's context keeps the siblings' dots first.
#[test]
fn a_readers_context_is_bounded_and_keeps_the_siblings_dots() {
    let cloud = |from: u64| {
        CausalContext::with_dots(
            VersionVector::new(),
            (from..from + MAX_CLOUD_DOTS as u64).map(|a| dot(a, 2)),
        )
    };
    let (mut a, mut b, mut c) = (Object::new(), Object::new(), Object::new());
    a.write_in(&cloud(1_000), dot(1, 1), ts(1), Some(vec![1]))
        .unwrap();
    b.write_in(&cloud(2_000), dot(2, 1), ts(2), Some(vec![2]))
        .unwrap();
    c.write_in(&cloud(3_000), dot(3, 5), ts(3), Some(vec![3]))
        .unwrap();
    a.merge(&b);
    a.merge(&c);
    assert!(a.context().dot_count() > MAX_CONTEXT_DOTS);
    let read = a.context_for_reader();
    assert_eq!(read.dot_count(), MAX_CONTEXT_DOTS);
    for sibling in a.siblings() {
        assert!(read.covers(&sibling.dot), "{:?}", sibling.dot);
    }
}
