//! The get coordinator: a pure accumulator of replicas' replies, in the shape
//! of riak_kv's `get_core`.
//!
//! The coordinator asks every target replica for its object and feeds each
//! reply to [`GetCoordinator::add_reply`]: the replica's [`Object`] (an empty
//! object when it has nothing for the key — *not found*) or a
//! [`ReplicaError`]. The rule:
//!
//! * **success** once `r` replicas have answered with an object — not-found
//!   answers count — and at least `pr` of them are primaries. The response
//!   is the merge of the objects received so far, pinned at that moment.
//! * **failure** ([`GetError::QuorumNotReached`]) as soon as success has
//!   become impossible: too few replicas are left that could still answer,
//!   counting all of them or only the primaries. Errors therefore end a
//!   request early rather than at its timeout.
//! * **timeout** ([`GetError::Timeout`]) when the runtime's timer fires
//!   ([`GetCoordinator::timeout`]) before either.
//!
//! Replies keep being merged after the outcome. [`GetCoordinator::repairs`]
//! lists the replicas whose object is stale compared with the merge of every
//! reply so far, late ones included; read repair sends them
//! [`GetCoordinator::merged`].

use chorus_storage::object::Object;
use uuid::Uuid;

use super::{assert_targets, QuorumTally, Recorded, Replica, ReplicaError, ReplicaFailure};

/// Why a get failed. The counts are as of the call to
/// [`outcome`](GetCoordinator::outcome).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetError {
    /// Too few replicas can still answer for `r` (or `pr`) to be reached.
    #[error("read quorum not reached: {0}")]
    QuorumNotReached(QuorumTally),
    /// The request's time ran out before the quorum was reached.
    #[error("timed out before the read quorum was reached: {0}")]
    Timeout(QuorumTally),
}

impl GetError {
    /// A stable, machine-readable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            GetError::QuorumNotReached(_) => "quorum_not_reached",
            GetError::Timeout(_) => "timeout",
        }
    }

    pub fn tally(&self) -> &QuorumTally {
        match self {
            GetError::QuorumNotReached(tally) | GetError::Timeout(tally) => tally,
        }
    }
}

/// One target and what it answered.
#[derive(Debug, Clone)]
struct Target {
    replica: Replica,
    reply: Option<Result<Object, ReplicaError>>,
}

/// The coordinator of one get. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct GetCoordinator {
    r: usize,
    pr: usize,
    /// In preference-list order.
    targets: Vec<Target>,
    /// The join of every object received.
    merged: Object,
    /// The response, pinned when the quorum was first reached.
    response: Option<Object>,
    /// The outcome, pinned when the timeout fired on an undecided request.
    timed_out: Option<GetError>,
}

/// Counts over the targets' replies.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    ok: usize,
    ok_primaries: usize,
    pending: usize,
    pending_primaries: usize,
}

impl GetCoordinator {
    /// A get of a key with `n` replicas that needs `r` answers, `pr` of them
    /// from primaries, sent to `targets` (the annotated preference list from
    /// [`place`](super::place)).
    ///
    /// Panics unless `1 <= r <= n`, `pr <= r`, and `targets` holds at most
    /// `n` distinct nodes: [`options`](super::options) guarantees the former,
    /// placement the latter. Fewer targets than `r` (or primaries than `pr`)
    /// is allowed; the get has then failed from the start.
    pub fn new(n: usize, r: usize, pr: usize, targets: Vec<Replica>) -> GetCoordinator {
        assert!(1 <= r && r <= n, "r={r} outside 1..={n}");
        assert!(pr <= r, "pr={pr} exceeds r={r}");
        assert_targets(n, &targets);
        GetCoordinator {
            r,
            pr,
            targets: targets
                .into_iter()
                .map(|replica| Target {
                    replica,
                    reply: None,
                })
                .collect(),
            merged: Object::new(),
            response: None,
            timed_out: None,
        }
    }

    /// Records `node`'s answer: its object (empty for not found) or an error.
    /// Only the first answer of each target counts.
    pub fn add_reply(&mut self, node: Uuid, reply: Result<Object, ReplicaError>) -> Recorded {
        let Some(target) = self.targets.iter_mut().find(|t| t.replica.node == node) else {
            return Recorded::NotATarget;
        };
        if target.reply.is_some() {
            return Recorded::Duplicate;
        }
        if let Ok(object) = &reply {
            self.merged.merge(object);
        }
        target.reply = Some(reply);
        if self.response.is_none() && self.timed_out.is_none() && self.reached() {
            self.response = Some(self.merged.clone());
        }
        Recorded::Accepted
    }

    /// The request's timer fired. An undecided get fails with
    /// [`GetError::Timeout`]; a decided one is unchanged.
    pub fn timeout(&mut self) {
        if self.outcome().is_none() {
            self.timed_out = Some(GetError::Timeout(self.tally()));
        }
    }

    /// `None` while undecided; then the response (the merged object, which
    /// may be empty or all tombstones: the key reads as not found) or why the
    /// get failed. Once `Some`, its kind never changes.
    pub fn outcome(&self) -> Option<Result<&Object, GetError>> {
        if let Some(error) = &self.timed_out {
            return Some(Err(error.clone()));
        }
        if let Some(response) = &self.response {
            return Some(Ok(response));
        }
        if self.impossible() {
            return Some(Err(GetError::QuorumNotReached(self.tally())));
        }
        None
    }

    /// The targets that have not answered (neither an object nor an
    /// error), in preference-list order.
    pub fn unanswered(&self) -> Vec<Replica> {
        self.targets
            .iter()
            .filter(|t| t.reply.is_none())
            .map(|t| t.replica)
            .collect()
    }

    /// The merge of every object received so far, late replies included:
    /// what read repair sends.
    pub fn merged(&self) -> &Object {
        &self.merged
    }

    /// The replicas that answered with an object that [`merged`](Self::merged)
    /// would change, in preference-list order: the targets of read repair.
    /// Replicas that failed or have not answered are not listed.
    pub fn repairs(&self) -> Vec<Replica> {
        self.targets
            .iter()
            .filter(|target| match &target.reply {
                Some(Ok(object)) => object != &self.merged && object.clone().merge(&self.merged),
                _ => false,
            })
            .map(|target| target.replica)
            .collect()
    }

    fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for target in &self.targets {
            let primary = usize::from(target.replica.is_primary());
            match target.reply {
                Some(Ok(_)) => {
                    counts.ok += 1;
                    counts.ok_primaries += primary;
                }
                Some(Err(_)) => {}
                None => {
                    counts.pending += 1;
                    counts.pending_primaries += primary;
                }
            }
        }
        counts
    }

    fn reached(&self) -> bool {
        let counts = self.counts();
        counts.ok >= self.r && counts.ok_primaries >= self.pr
    }

    fn impossible(&self) -> bool {
        let counts = self.counts();
        counts.ok + counts.pending < self.r
            || counts.ok_primaries + counts.pending_primaries < self.pr
    }

    fn tally(&self) -> QuorumTally {
        let counts = self.counts();
        QuorumTally {
            required: self.r,
            required_primaries: self.pr,
            received: counts.ok,
            received_primaries: counts.ok_primaries,
            failures: self
                .targets
                .iter()
                .filter_map(|target| match &target.reply {
                    Some(Err(error)) => Some(ReplicaFailure {
                        node: target.replica.node,
                        error: error.clone(),
                    }),
                    _ => None,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_storage::hlc::Timestamp;
    use chorus_storage::version::{ActorId, Dot};
    use proptest::prelude::*;

    const A: Uuid = Uuid::from_u128(0xa);
    const B: Uuid = Uuid::from_u128(0xb);
    const C: Uuid = Uuid::from_u128(0xc);
    const D: Uuid = Uuid::from_u128(0xd);
    const X: Uuid = Uuid::from_u128(0x99);

    fn primaries() -> Vec<Replica> {
        vec![
            Replica::primary(A),
            Replica::primary(B),
            Replica::primary(C),
        ]
    }

    /// `base` with one more write by `actor`, superseding what `base` holds.
    fn written(base: &Object, actor: u64, counter: u64, value: &str) -> Object {
        let mut object = base.clone();
        object
            .write_in(
                base.context(),
                Dot::new(ActorId(actor), counter),
                Timestamp::from_u64(counter),
                Some(value.as_bytes().to_vec()),
            )
            .unwrap();
        object
    }

    fn values(object: &Object) -> Vec<&[u8]> {
        object.live().map(|s| s.value.as_deref().unwrap()).collect()
    }

    fn unreachable() -> Result<Object, ReplicaError> {
        Err(ReplicaError::Unreachable)
    }

    #[test]
    fn quorum_is_reached_with_r_replies_and_the_response_is_their_merge() {
        let v1 = written(&Object::new(), 1, 10, "v1");
        let mut get = GetCoordinator::new(3, 2, 0, primaries());
        assert_eq!(get.outcome(), None);

        // Step 1: one reply of two.
        assert_eq!(get.add_reply(A, Ok(v1.clone())), Recorded::Accepted);
        assert_eq!(get.outcome(), None);

        // Step 2: a not-found reply is the second of two.
        assert_eq!(get.add_reply(B, Ok(Object::new())), Recorded::Accepted);
        assert_eq!(get.outcome(), Some(Ok(&v1)));
        assert_eq!(get.repairs(), vec![Replica::primary(B)]);
    }

    #[test]
    fn not_found_replies_count_toward_r() {
        let mut get = GetCoordinator::new(3, 2, 0, primaries());
        get.add_reply(C, Ok(Object::new()));
        get.add_reply(A, Ok(Object::new()));
        assert_eq!(get.outcome(), Some(Ok(&Object::new())));
        assert_eq!(get.repairs(), vec![]);
    }

    #[test]
    fn a_deleted_key_answers_with_its_tombstone_and_context() {
        let v1 = written(&Object::new(), 1, 10, "v1");
        let mut deleted = v1.clone();
        deleted
            .write_in(
                v1.context(),
                Dot::new(ActorId(2), 20),
                Timestamp::from_u64(20),
                None,
            )
            .unwrap();
        let mut get = GetCoordinator::new(3, 2, 0, primaries());
        get.add_reply(A, Ok(v1));
        get.add_reply(B, Ok(deleted.clone()));
        let response = get.outcome().unwrap().unwrap().clone();
        assert_eq!(response, deleted);
        assert!(response.is_deleted());
        assert_eq!(response.context().version_vector().get(ActorId(2)), 20);
        assert_eq!(get.repairs(), vec![Replica::primary(A)]);
    }

    #[test]
    fn concurrent_replies_come_back_as_siblings() {
        let left = written(&Object::new(), 1, 10, "left");
        let right = written(&Object::new(), 2, 11, "right");
        let mut get = GetCoordinator::new(3, 3, 0, primaries());
        get.add_reply(A, Ok(left));
        get.add_reply(B, Ok(right));
        assert_eq!(get.outcome(), None);
        get.add_reply(C, Ok(Object::new()));
        let response = get.outcome().unwrap().unwrap();
        assert_eq!(values(response), vec![b"left".as_slice(), b"right"]);
        assert_eq!(
            get.repairs(),
            primaries(),
            "each lacks the others' versions"
        );
    }

    #[test]
    fn pr_counts_primaries_only() {
        // B is down; D stands in for it.
        let targets = vec![
            Replica::primary(A),
            Replica::fallback(D, B),
            Replica::primary(C),
        ];
        let mut get = GetCoordinator::new(3, 2, 2, targets);
        get.add_reply(A, Ok(Object::new()));
        get.add_reply(D, Ok(Object::new()));
        assert_eq!(
            get.outcome(),
            None,
            "two replies, but only one from a primary"
        );
        get.add_reply(C, Ok(Object::new()));
        assert_eq!(get.outcome(), Some(Ok(&Object::new())));
    }

    #[test]
    fn a_failed_primary_makes_pr_impossible_at_once() {
        let targets = vec![
            Replica::primary(A),
            Replica::fallback(D, B),
            Replica::primary(C),
        ];
        let mut get = GetCoordinator::new(3, 2, 2, targets);
        get.add_reply(D, Ok(Object::new()));
        assert_eq!(get.outcome(), None);
        get.add_reply(A, Err(ReplicaError::Storage("disk full".into())));
        assert_eq!(
            get.outcome(),
            Some(Err(GetError::QuorumNotReached(QuorumTally {
                required: 2,
                required_primaries: 2,
                received: 1,
                received_primaries: 0,
                failures: vec![ReplicaFailure {
                    node: A,
                    error: ReplicaError::Storage("disk full".into()),
                }],
            })))
        );
    }

    #[test]
    fn errors_end_the_request_before_the_last_replica_answers() {
        let mut get = GetCoordinator::new(3, 2, 0, primaries());
        get.add_reply(B, unreachable());
        assert_eq!(get.outcome(), None, "A and C could still make r=2");
        get.add_reply(A, Err(ReplicaError::Overloaded));
        let error = get.outcome().unwrap().unwrap_err();
        assert_eq!(error.code(), "quorum_not_reached");
        assert_eq!(
            error,
            GetError::QuorumNotReached(QuorumTally {
                required: 2,
                required_primaries: 0,
                received: 0,
                received_primaries: 0,
                failures: vec![
                    ReplicaFailure {
                        node: A,
                        error: ReplicaError::Overloaded
                    },
                    ReplicaFailure {
                        node: B,
                        error: ReplicaError::Unreachable
                    },
                ],
            })
        );
        assert_eq!(
            error.to_string(),
            format!(
                "read quorum not reached: needed 2 (0 from primaries), received 0 (0 from primaries); \
                 failed: {A}: replica overloaded, {B}: replica unreachable"
            )
        );

        // A late success does not revive it, but its count is reported.
        get.add_reply(C, Ok(Object::new()));
        assert_eq!(get.outcome().unwrap().unwrap_err().tally().received, 1);
    }

    #[test]
    fn too_few_targets_fail_before_any_reply() {
        let get = GetCoordinator::new(3, 2, 0, vec![Replica::primary(A)]);
        assert_eq!(
            get.outcome(),
            Some(Err(GetError::QuorumNotReached(QuorumTally {
                required: 2,
                required_primaries: 0,
                received: 0,
                received_primaries: 0,
                failures: vec![],
            })))
        );
        let only_fallbacks = vec![Replica::fallback(D, A), Replica::fallback(X, B)];
        let get = GetCoordinator::new(3, 1, 1, only_fallbacks);
        assert!(matches!(
            get.outcome(),
            Some(Err(GetError::QuorumNotReached(_)))
        ));
    }

    #[test]
    fn duplicate_and_unexpected_replies_are_ignored() {
        let v1 = written(&Object::new(), 1, 10, "v1");
        let mut get = GetCoordinator::new(3, 2, 0, primaries());
        assert_eq!(get.add_reply(A, unreachable()), Recorded::Accepted);
        assert_eq!(get.add_reply(A, Ok(v1.clone())), Recorded::Duplicate);
        assert_eq!(get.add_reply(X, Ok(v1.clone())), Recorded::NotATarget);
        assert_eq!(
            get.merged(),
            &Object::new(),
            "ignored replies are not merged"
        );
        get.add_reply(B, Ok(Object::new()));
        assert_eq!(get.outcome(), None, "A's error stands: one reply counts");
    }

    #[test]
    fn the_response_is_pinned_but_late_replies_are_repaired() {
        let v1 = written(&Object::new(), 1, 10, "v1");
        let v2 = written(&v1, 2, 20, "v2");
        let mut get = GetCoordinator::new(3, 2, 0, primaries());
        get.add_reply(A, Ok(v1.clone()));
        get.add_reply(B, Ok(v1.clone()));
        assert_eq!(get.outcome(), Some(Ok(&v1)));
        assert_eq!(get.repairs(), vec![], "A and B agree");

        // C answers late with a newer version: the response stays, repair covers it.
        assert_eq!(get.add_reply(C, Ok(v2.clone())), Recorded::Accepted);
        assert_eq!(get.outcome(), Some(Ok(&v1)));
        assert_eq!(get.merged(), &v2);
        assert_eq!(
            get.repairs(),
            vec![Replica::primary(A), Replica::primary(B)]
        );
    }

    #[test]
    fn read_repair_targets_exactly_the_stale_replicas() {
        let v1 = written(&Object::new(), 1, 10, "v1");
        let v2 = written(&v1, 2, 20, "v2");
        let targets = vec![
            Replica::primary(A),
            Replica::fallback(D, B),
            Replica::primary(C),
        ];
        let mut get = GetCoordinator::new(3, 2, 0, targets);
        get.add_reply(A, Ok(v2.clone()));
        get.add_reply(D, Ok(Object::new()));
        assert_eq!(get.outcome(), Some(Ok(&v2)));
        assert_eq!(get.repairs(), vec![Replica::fallback(D, B)]);
        // A late stale reply joins the repairs; a late failure does not.
        get.add_reply(C, Ok(v1));
        assert_eq!(
            get.repairs(),
            vec![Replica::fallback(D, B), Replica::primary(C)]
        );

        let mut failed = GetCoordinator::new(3, 1, 0, primaries());
        failed.add_reply(A, Ok(v2.clone()));
        failed.add_reply(B, unreachable());
        assert_eq!(
            failed.repairs(),
            vec![],
            "B's state is unknown; C has not answered"
        );
    }

    #[test]
    fn timeout_fails_an_undecided_get_and_nothing_else() {
        let mut get = GetCoordinator::new(3, 2, 1, primaries());
        get.add_reply(A, Ok(Object::new()));
        get.add_reply(B, unreachable());
        get.timeout();
        let expected = GetError::Timeout(QuorumTally {
            required: 2,
            required_primaries: 1,
            received: 1,
            received_primaries: 1,
            failures: vec![ReplicaFailure {
                node: B,
                error: ReplicaError::Unreachable,
            }],
        });
        assert_eq!(get.outcome(), Some(Err(expected.clone())));
        assert_eq!(expected.code(), "timeout");
        // C's late reply would have made the quorum; the outcome stands.
        get.add_reply(C, Ok(Object::new()));
        assert_eq!(get.outcome(), Some(Err(expected)));

        let mut done = GetCoordinator::new(3, 1, 0, primaries());
        done.add_reply(A, Ok(Object::new()));
        done.timeout();
        assert_eq!(done.outcome(), Some(Ok(&Object::new())));
    }

    #[test]
    #[should_panic(expected = "pr=2 exceeds r=1")]
    fn pr_above_r_is_a_programmer_error() {
        GetCoordinator::new(3, 1, 2, primaries());
    }

    #[test]
    #[should_panic(expected = "a node is targeted twice")]
    fn a_node_targeted_twice_is_a_programmer_error() {
        GetCoordinator::new(3, 1, 0, vec![Replica::primary(A), Replica::fallback(A, B)]);
    }

    /// A small object: a few writes by per-replica actors on top of a shared
    /// history, so replies overlap, supersede each other and conflict.
    fn arb_object(replica: u64) -> impl Strategy<Value = Object> {
        (0usize..3, 0usize..3, any::<bool>()).prop_map(move |(shared, own, fresh)| {
            let mut object = Object::new();
            for counter in 1..=shared as u64 {
                object = written(&object, 100, counter, "shared");
            }
            for counter in 1..=own as u64 {
                if fresh {
                    // A writer with an empty context: adds a sibling.
                    let value = Some(b"own".to_vec());
                    let dot = Dot::new(ActorId(replica), counter);
                    object
                        .write(
                            &Default::default(),
                            dot,
                            Timestamp::from_u64(counter),
                            value,
                        )
                        .unwrap();
                } else {
                    object = written(&object, replica, counter, "own");
                }
            }
            object
        })
    }

    #[derive(Debug, Clone)]
    struct Scenario {
        n: usize,
        r: usize,
        pr: usize,
        targets: Vec<Replica>,
        /// (target index, reply) in arrival order; a target may repeat or be absent.
        replies: Vec<(usize, Result<Object, ReplicaError>)>,
        timeout_after: Option<usize>,
    }

    fn scenario() -> impl Strategy<Value = Scenario> {
        (1usize..=5)
            .prop_flat_map(|n| (Just(n), 1..=n, 0..=n))
            .prop_flat_map(|(n, r, targets)| {
                (
                    Just(n),
                    Just(r),
                    0..=r,
                    proptest::collection::vec(any::<bool>(), targets),
                )
            })
            .prop_flat_map(|(n, r, pr, roles)| {
                let targets: Vec<Replica> = roles
                    .iter()
                    .enumerate()
                    .map(|(i, &primary)| {
                        let node = Uuid::from_u128(i as u128 + 1);
                        if primary {
                            Replica::primary(node)
                        } else {
                            Replica::fallback(node, Uuid::from_u128(1000 + i as u128))
                        }
                    })
                    .collect();
                let count = targets.len();
                let reply = (0..count.max(1)).prop_flat_map(|i| {
                    let object = arb_object(i as u64 + 1).prop_map(Ok).boxed();
                    (
                        Just(i),
                        prop_oneof![3 => object, 1 => Just(Err(ReplicaError::Unreachable))],
                    )
                });
                let replies = if count == 0 {
                    Just(Vec::new()).boxed()
                } else {
                    proptest::collection::vec(reply, 0..count * 2).boxed()
                };
                (
                    Just(n),
                    Just(r),
                    Just(pr),
                    Just(targets),
                    replies,
                    proptest::option::of(0..=count * 2),
                )
            })
            .prop_map(|(n, r, pr, targets, replies, timeout_after)| Scenario {
                n,
                r,
                pr,
                targets,
                replies,
                timeout_after,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// After every event the outcome is exactly what the counting rule
        /// says, and once decided it keeps its kind (and a success its response).
        #[test]
        fn outcome_follows_the_counting_rule(s in scenario()) {
            let mut get = GetCoordinator::new(s.n, s.r, s.pr, s.targets.clone());
            let mut answered: Vec<Option<bool>> = vec![None; s.targets.len()];
            let mut merged = Object::new();
            // The expected outcome once decided: the pinned response, or the
            // error's code and, for a timeout, the counts pinned with it.
            type Expected = Option<Result<Object, (&'static str, Option<(usize, usize, usize)>)>>;
            let mut decided: Expected = None;
            let check = |get: &GetCoordinator, answered: &[Option<bool>], merged: &Object,
                         decided: &mut Expected, timed_out: bool|
             -> Result<(), TestCaseError> {
                let ok = answered.iter().filter(|a| **a == Some(true)).count();
                let is_primary = |i: usize| s.targets[i].is_primary();
                let ok_primaries = (0..answered.len()).filter(|&i| answered[i] == Some(true) && is_primary(i)).count();
                let pending = answered.iter().filter(|a| a.is_none()).count();
                let pending_primaries = (0..answered.len()).filter(|&i| answered[i].is_none() && is_primary(i)).count();
                let failed = answered.iter().filter(|a| **a == Some(false)).count();
                let reached = ok >= s.r && ok_primaries >= s.pr;
                let impossible = ok + pending < s.r || ok_primaries + pending_primaries < s.pr;
                if decided.is_none() {
                    *decided = if reached {
                        Some(Ok(merged.clone()))
                    } else if impossible {
                        Some(Err(("quorum_not_reached", None)))
                    } else if timed_out {
                        Some(Err(("timeout", Some((ok, ok_primaries, failed)))))
                    } else {
                        None
                    };
                }
                match (get.outcome(), &*decided) {
                    (None, None) => {}
                    (Some(Ok(response)), Some(Ok(expected))) => prop_assert_eq!(response, expected),
                    (Some(Err(error)), Some(Err((code, pinned)))) => {
                        prop_assert_eq!(error.code(), *code);
                        let tally = error.tally();
                        prop_assert_eq!((tally.required, tally.required_primaries), (s.r, s.pr));
                        prop_assert_eq!(
                            (tally.received, tally.received_primaries, tally.failures.len()),
                            pinned.unwrap_or((ok, ok_primaries, failed))
                        );
                    }
                    (actual, expected) => prop_assert!(false, "outcome {:?}, expected {:?}", actual, expected),
                }
                prop_assert_eq!(get.merged(), merged);
                Ok(())
            };
            let mut timed_out = false;
            check(&get, &answered, &merged, &mut decided, timed_out)?;
            for (step, (i, reply)) in s.replies.iter().enumerate() {
                if s.timeout_after == Some(step) {
                    get.timeout();
                    timed_out = true;
                    check(&get, &answered, &merged, &mut decided, timed_out)?;
                }
                let recorded = get.add_reply(s.targets[*i].node, reply.clone());
                if answered[*i].is_none() {
                    prop_assert_eq!(recorded, Recorded::Accepted);
                    answered[*i] = Some(reply.is_ok());
                    if let Ok(object) = reply {
                        merged.merge(object);
                    }
                } else {
                    prop_assert_eq!(recorded, Recorded::Duplicate);
                }
                check(&get, &answered, &merged, &mut decided, timed_out)?;
            }
            if s.timeout_after.is_some_and(|step| step >= s.replies.len()) {
                get.timeout();
                timed_out = true;
                check(&get, &answered, &merged, &mut decided, timed_out)?;
            }

            // Read repair converges every replica that answered with an object.
            let repairs = get.repairs();
            for (i, target) in s.targets.iter().enumerate() {
                let reply = s.replies.iter().find(|(j, _)| *j == i).map(|(_, reply)| reply);
                match reply {
                    Some(Ok(object)) => {
                        let mut repaired = object.clone();
                        let changed = repaired.merge(get.merged());
                        prop_assert_eq!(changed, repairs.contains(target));
                        prop_assert_eq!(&repaired, get.merged());
                    }
                    _ => prop_assert!(!repairs.contains(target)),
                }
            }
        }
    }
}
