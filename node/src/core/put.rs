//! The put coordinator: a pure accumulator of replicas' acknowledgements.
//! Deletes are puts of a tombstone and use it too.
//!
//! The coordinating replica applies the client's write to its own copy of
//! the key ([`coordinate_write`](super::coordinate_write)), creates a
//! [`PutCoordinator`] for the request's targets (itself among them), records
//! its own application with [`add_ack`](PutCoordinator::add_ack), and only
//! then sends the new object to the other targets. Their answers come in as
//! further [`add_ack`](PutCoordinator::add_ack)s and
//! [`add_failure`](PutCoordinator::add_failure)s. The rule:
//!
//! * An acknowledgement **counts** toward the quorum if the replica applied
//!   the write — and, when the request asked for `sync`, also fsynced it.
//!   The coordinator's own application counts like any other, as a primary
//!   or not according to its role.
//! * **success** once `w` acknowledgements count and at least `pw` of them
//!   come from primaries.
//! * **failure** ([`PutError::QuorumNotReached`]) as soon as success has
//!   become impossible. The write may still have been applied on some
//!   replicas, and the error says on how many.
//! * **timeout** when the runtime's timer fires
//!   ([`PutCoordinator::timeout`]) before either: [`PutError::Indeterminate`]
//!   if at least one replica applied the write — it may or may not become
//!   visible — and [`PutError::Failed`] if none did. Because the coordinator
//!   applies the write before it sends any copy, "none applied" means the
//!   coordinator's own write never completed, so no copy went out.
//!
//! Each target's first answer is the one that counts; an acknowledgement is
//! final, so a replica that applied without fsyncing under `sync` will not
//! count later.

use uuid::Uuid;

use super::{assert_targets, QuorumTally, Recorded, Replica, ReplicaError, ReplicaFailure};

/// A put that reached its quorum. The counts are as of the call to
/// [`outcome`](PutCoordinator::outcome) and grow with late acknowledgements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutSuccess {
    /// Acknowledgements that count (fsynced ones under `sync`).
    pub acks: usize,
    /// How many of those came from primaries.
    pub primary_acks: usize,
    /// Replicas that applied the write, fsynced or not.
    pub applied: usize,
}

/// Why a put did not succeed. The counts are as of the call to
/// [`outcome`](PutCoordinator::outcome), except that a timeout's are those
/// of the moment it fired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum PutError {
    /// Too few replicas can still acknowledge for `w` (or `pw`) to be
    /// reached. Replicas that applied the write keep it.
    #[error("write quorum not reached: {tally}; {}", applied_so_far(*.applied))]
    QuorumNotReached { tally: QuorumTally, applied: usize },
    /// The request timed out after at least one replica applied the write:
    /// it may or may not become visible.
    #[error("timed out before the write quorum was reached: {tally}; the write was applied on {applied} replica(s) and may or may not be visible")]
    Indeterminate { tally: QuorumTally, applied: usize },
    /// The request timed out before any replica applied the write.
    #[error("timed out before any replica applied the write: {tally}")]
    Failed { tally: QuorumTally },
}

/// What a [`PutError::QuorumNotReached`] says of the write's fate.
fn applied_so_far(applied: usize) -> String {
    if applied == 0 {
        return "no replica is known to have applied the write".into();
    }
    format!("the write was applied on {applied} replica(s) so far and is not undone: replicas it was sent to may still apply it, and hinted handoff carries it to the others")
}

impl PutError {
    /// A stable, machine-readable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            PutError::QuorumNotReached { .. } => "quorum_not_reached",
            PutError::Indeterminate { .. } => "timeout_indeterminate",
            PutError::Failed { .. } => "timeout",
        }
    }

    pub fn tally(&self) -> &QuorumTally {
        match self {
            PutError::QuorumNotReached { tally, .. }
            | PutError::Indeterminate { tally, .. }
            | PutError::Failed { tally } => tally,
        }
    }

    /// How many replicas are known to have applied the write.
    pub fn applied(&self) -> usize {
        match self {
            PutError::QuorumNotReached { applied, .. }
            | PutError::Indeterminate { applied, .. } => *applied,
            PutError::Failed { .. } => 0,
        }
    }
}

/// A target's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Applied { durable: bool },
    Failed(ReplicaError),
}

#[derive(Debug, Clone)]
struct Target {
    replica: Replica,
    answer: Option<Answer>,
}

/// Counts over the targets' answers.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    /// Acknowledgements that count toward `w`.
    acks: usize,
    primary_acks: usize,
    applied: usize,
    pending: usize,
    pending_primaries: usize,
}

/// The coordinator of one put or delete. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct PutCoordinator {
    w: usize,
    pw: usize,
    sync: bool,
    /// In preference-list order.
    targets: Vec<Target>,
    /// The outcome, pinned when the timeout fired on an undecided request.
    timed_out: Option<PutError>,
}

impl PutCoordinator {
    /// A put of a key with `n` replicas that needs `w` acknowledgements,
    /// `pw` of them from primaries — fsynced ones if `sync` — sent to
    /// `targets` (the annotated preference list from
    /// [`place`](super::place), the coordinator included).
    ///
    /// Panics unless `1 <= w <= n`, `pw <= w`, and `targets` holds at most
    /// `n` distinct nodes. Fewer targets than `w` (or primaries than `pw`)
    /// is allowed; the put then fails its quorum, reporting where it was
    /// applied.
    pub fn new(n: usize, w: usize, pw: usize, sync: bool, targets: Vec<Replica>) -> PutCoordinator {
        assert!(1 <= w && w <= n, "w={w} outside 1..={n}");
        assert!(pw <= w, "pw={pw} exceeds w={w}");
        assert_targets(n, &targets);
        PutCoordinator {
            w,
            pw,
            sync,
            targets: targets
                .into_iter()
                .map(|replica| Target {
                    replica,
                    answer: None,
                })
                .collect(),
            timed_out: None,
        }
    }

    /// Records that `node` applied the write; `durable` if it also fsynced it.
    pub fn add_ack(&mut self, node: Uuid, durable: bool) -> Recorded {
        self.record(node, Answer::Applied { durable })
    }

    /// Records that `node` did not apply the write.
    pub fn add_failure(&mut self, node: Uuid, error: ReplicaError) -> Recorded {
        self.record(node, Answer::Failed(error))
    }

    fn record(&mut self, node: Uuid, answer: Answer) -> Recorded {
        let Some(target) = self.targets.iter_mut().find(|t| t.replica.node == node) else {
            return Recorded::NotATarget;
        };
        if target.answer.is_some() {
            return Recorded::Duplicate;
        }
        target.answer = Some(answer);
        Recorded::Accepted
    }

    /// The targets that have not answered (neither applied nor failed), in
    /// preference-list order. When the request is retired these are the
    /// replicas the coordinator keeps hints for (Cassandra hints replicas
    /// that time out, not only those the failure detector convicted).
    pub fn unanswered(&self) -> Vec<Replica> {
        self.targets
            .iter()
            .filter(|t| t.answer.is_none())
            .map(|t| t.replica)
            .collect()
    }

    /// The targets the write may not have reached: those that have not
    /// answered, and those it could not be delivered to or that shed it
    /// ([`ReplicaError::Unreachable`], [`ReplicaError::Overloaded`]), in
    /// preference-list order. When the request is retired these are the
    /// replicas the coordinator keeps hints for (Cassandra hints replicas
    /// that time out, not only those the failure detector convicted). A
    /// replica that answered with its own failure (storage, refusal) is
    /// not hinted: it had the write and said no.
    pub fn unreached(&self) -> Vec<Replica> {
        self.targets
            .iter()
            .filter(|t| match &t.answer {
                None => true,
                Some(Answer::Failed(e)) => {
                    matches!(e, ReplicaError::Unreachable | ReplicaError::Overloaded)
                }
                Some(Answer::Applied { .. }) => false,
            })
            .map(|t| t.replica)
            .collect()
    }

    /// The request's timer fired. An undecided put becomes
    /// [`PutError::Indeterminate`] if any replica applied the write and
    /// [`PutError::Failed`] if none did; a decided one is unchanged.
    pub fn timeout(&mut self) {
        if self.outcome().is_none() {
            let counts = self.counts();
            let tally = self.tally(counts);
            self.timed_out = Some(if counts.applied > 0 {
                PutError::Indeterminate {
                    tally,
                    applied: counts.applied,
                }
            } else {
                PutError::Failed { tally }
            });
        }
    }

    /// `None` while undecided, then whether the put succeeded. Once `Some`,
    /// its kind never changes.
    pub fn outcome(&self) -> Option<Result<PutSuccess, PutError>> {
        if let Some(error) = &self.timed_out {
            return Some(Err(error.clone()));
        }
        let counts = self.counts();
        if counts.acks >= self.w && counts.primary_acks >= self.pw {
            return Some(Ok(PutSuccess {
                acks: counts.acks,
                primary_acks: counts.primary_acks,
                applied: counts.applied,
            }));
        }
        if counts.acks + counts.pending < self.w
            || counts.primary_acks + counts.pending_primaries < self.pw
        {
            return Some(Err(PutError::QuorumNotReached {
                tally: self.tally(counts),
                applied: counts.applied,
            }));
        }
        None
    }

    fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for target in &self.targets {
            let primary = usize::from(target.replica.is_primary());
            match target.answer {
                Some(Answer::Applied { durable }) => {
                    counts.applied += 1;
                    if durable || !self.sync {
                        counts.acks += 1;
                        counts.primary_acks += primary;
                    }
                }
                Some(Answer::Failed(_)) => {}
                None => {
                    counts.pending += 1;
                    counts.pending_primaries += primary;
                }
            }
        }
        counts
    }

    fn tally(&self, counts: Counts) -> QuorumTally {
        QuorumTally {
            required: self.w,
            required_primaries: self.pw,
            received: counts.acks,
            received_primaries: counts.primary_acks,
            failures: self
                .targets
                .iter()
                .filter_map(|target| match &target.answer {
                    Some(Answer::Failed(error)) => Some(ReplicaFailure {
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

    /// A is down; D stands in for it and coordinates.
    fn with_fallback() -> Vec<Replica> {
        vec![
            Replica::fallback(D, A),
            Replica::primary(B),
            Replica::primary(C),
        ]
    }

    fn tally(
        received: usize,
        received_primaries: usize,
        failures: Vec<ReplicaFailure>,
    ) -> QuorumTally {
        QuorumTally {
            required: 2,
            required_primaries: 0,
            received,
            received_primaries,
            failures,
        }
    }

    #[test]
    fn the_coordinators_own_write_counts_as_one_ack() {
        let mut put = PutCoordinator::new(3, 2, 0, false, primaries());
        // Step 1: A coordinates and applied locally.
        assert_eq!(put.add_ack(A, false), Recorded::Accepted);
        assert_eq!(put.outcome(), None);
        // Step 2: one replica acknowledges.
        assert_eq!(put.add_ack(C, false), Recorded::Accepted);
        assert_eq!(
            put.outcome(),
            Some(Ok(PutSuccess {
                acks: 2,
                primary_acks: 2,
                applied: 2
            }))
        );
        // Step 3: a late acknowledgement is recorded; success stands.
        put.add_ack(B, true);
        assert_eq!(
            put.outcome(),
            Some(Ok(PutSuccess {
                acks: 3,
                primary_acks: 3,
                applied: 3
            }))
        );
    }

    #[test]
    fn w_of_one_succeeds_on_the_coordinators_write_alone() {
        let mut put = PutCoordinator::new(3, 1, 0, false, primaries());
        assert_eq!(put.outcome(), None);
        put.add_ack(B, false);
        assert_eq!(
            put.outcome(),
            Some(Ok(PutSuccess {
                acks: 1,
                primary_acks: 1,
                applied: 1
            }))
        );
    }

    #[test]
    fn pw_counts_primaries_only_and_a_fallback_coordinator_is_not_one() {
        let mut put = PutCoordinator::new(3, 2, 2, false, with_fallback());
        put.add_ack(D, false);
        put.add_ack(B, false);
        assert_eq!(put.outcome(), None, "w reached, but only one primary");
        put.add_ack(C, false);
        assert_eq!(
            put.outcome(),
            Some(Ok(PutSuccess {
                acks: 3,
                primary_acks: 2,
                applied: 3
            }))
        );
    }

    #[test]
    fn pw_impossible_ends_the_put_and_reports_where_it_was_applied() {
        let mut put = PutCoordinator::new(3, 2, 2, false, with_fallback());
        put.add_ack(D, false);
        put.add_failure(C, ReplicaError::Unreachable);
        let error = put.outcome().unwrap().unwrap_err();
        assert_eq!(
            error,
            PutError::QuorumNotReached {
                tally: QuorumTally {
                    required: 2,
                    required_primaries: 2,
                    received: 1,
                    received_primaries: 0,
                    failures: vec![ReplicaFailure {
                        node: C,
                        error: ReplicaError::Unreachable
                    }],
                },
                applied: 1,
            }
        );
        assert_eq!(error.code(), "quorum_not_reached");
        assert_eq!(error.applied(), 1);
        assert_eq!(
            error.to_string(),
            format!(
                "write quorum not reached: needed 2 (2 from primaries), received 1 (0 from primaries); \
                 failed: {C}: replica unreachable; the write was applied on 1 replica(s) so far and \
                 is not undone: replicas it was sent to may still apply it, and hinted handoff \
                 carries it to the others"
            )
        );
    }

    #[test]
    fn failures_end_the_put_before_the_timeout() {
        let mut put = PutCoordinator::new(3, 3, 0, false, primaries());
        put.add_ack(A, false);
        assert_eq!(put.outcome(), None);
        put.add_failure(B, ReplicaError::Storage("disk full".into()));
        assert_eq!(
            put.outcome(),
            Some(Err(PutError::QuorumNotReached {
                tally: QuorumTally {
                    required: 3,
                    required_primaries: 0,
                    received: 1,
                    received_primaries: 1,
                    failures: vec![ReplicaFailure {
                        node: B,
                        error: ReplicaError::Storage("disk full".into())
                    }],
                },
                applied: 1,
            }))
        );
        // C's late acknowledgement does not revive it; it is counted.
        put.add_ack(C, false);
        assert_eq!(put.outcome().unwrap().unwrap_err().applied(), 2);
    }

    #[test]
    fn with_sync_only_fsynced_acks_count() {
        let mut put = PutCoordinator::new(3, 2, 0, true, primaries());
        put.add_ack(A, true);
        put.add_ack(B, false);
        assert_eq!(put.outcome(), None, "B applied but did not fsync");
        put.add_ack(C, true);
        assert_eq!(
            put.outcome(),
            Some(Ok(PutSuccess {
                acks: 2,
                primary_acks: 2,
                applied: 3
            }))
        );

        let mut put = PutCoordinator::new(3, 2, 0, true, primaries());
        put.add_ack(A, true);
        put.add_ack(B, false);
        put.add_ack(C, false);
        assert_eq!(
            put.outcome(),
            Some(Err(PutError::QuorumNotReached {
                tally: tally(1, 1, vec![]),
                applied: 3,
            })),
            "applied everywhere, fsynced on one"
        );
        assert_eq!(
            put.add_ack(B, true),
            Recorded::Duplicate,
            "an acknowledgement is final"
        );

        let mut put = PutCoordinator::new(3, 2, 0, false, primaries());
        put.add_ack(A, false);
        put.add_ack(B, false);
        assert!(
            matches!(put.outcome(), Some(Ok(_))),
            "without sync, applied is enough"
        );
    }

    #[test]
    fn timeout_after_some_replica_applied_is_indeterminate() {
        let mut put = PutCoordinator::new(3, 2, 0, false, primaries());
        put.add_ack(A, false);
        put.add_failure(B, ReplicaError::Overloaded);
        assert_eq!(put.outcome(), None, "C could still acknowledge");
        put.timeout();
        let expected = PutError::Indeterminate {
            tally: tally(
                1,
                1,
                vec![ReplicaFailure {
                    node: B,
                    error: ReplicaError::Overloaded,
                }],
            ),
            applied: 1,
        };
        assert_eq!(put.outcome(), Some(Err(expected.clone())));
        assert_eq!(expected.code(), "timeout_indeterminate");
        assert!(expected
            .to_string()
            .ends_with("the write was applied on 1 replica(s) and may or may not be visible"));
        // C's late acknowledgement would have made the quorum; the outcome stands.
        assert_eq!(put.add_ack(C, false), Recorded::Accepted);
        assert_eq!(put.outcome(), Some(Err(expected)));
    }

    #[test]
    fn timeout_before_any_replica_applied_is_a_failure() {
        let mut put = PutCoordinator::new(3, 2, 0, false, primaries());
        put.add_failure(C, ReplicaError::Unreachable);
        put.timeout();
        let expected = PutError::Failed {
            tally: tally(
                0,
                0,
                vec![ReplicaFailure {
                    node: C,
                    error: ReplicaError::Unreachable,
                }],
            ),
        };
        assert_eq!(put.outcome(), Some(Err(expected.clone())));
        assert_eq!(expected.code(), "timeout");
        assert_eq!(expected.applied(), 0);
        put.add_ack(A, false);
        assert_eq!(put.outcome(), Some(Err(expected)), "pinned at the timeout");
    }

    #[test]
    fn timeout_under_sync_counts_unsynced_copies_as_applied() {
        let mut put = PutCoordinator::new(3, 2, 0, true, primaries());
        put.add_ack(A, false);
        put.timeout();
        assert_eq!(
            put.outcome(),
            Some(Err(PutError::Indeterminate {
                tally: tally(0, 0, vec![]),
                applied: 1
            }))
        );
    }

    #[test]
    fn timeout_after_the_outcome_changes_nothing() {
        let mut put = PutCoordinator::new(3, 1, 0, false, primaries());
        put.add_ack(A, false);
        put.timeout();
        assert!(matches!(put.outcome(), Some(Ok(_))));

        let mut put = PutCoordinator::new(3, 3, 0, false, primaries());
        put.add_ack(A, false);
        put.add_failure(B, ReplicaError::Unreachable);
        put.timeout();
        assert_eq!(
            put.outcome().unwrap().unwrap_err().code(),
            "quorum_not_reached"
        );
    }

    #[test]
    fn duplicate_and_unexpected_answers_are_ignored() {
        let mut put = PutCoordinator::new(3, 2, 0, false, primaries());
        assert_eq!(
            put.add_failure(B, ReplicaError::Unreachable),
            Recorded::Accepted
        );
        assert_eq!(put.add_ack(B, true), Recorded::Duplicate);
        assert_eq!(put.add_ack(X, true), Recorded::NotATarget);
        put.add_ack(A, false);
        assert_eq!(put.outcome(), None, "B's failure stands, X is not a target");
    }

    #[test]
    fn too_few_targets_fail_and_say_where_the_write_went() {
        // Sloppy quorum refused, two primaries down: only the coordinator is left.
        let mut put = PutCoordinator::new(3, 2, 0, false, vec![Replica::primary(A)]);
        put.add_ack(A, false);
        assert_eq!(
            put.outcome(),
            Some(Err(PutError::QuorumNotReached {
                tally: tally(1, 1, vec![]),
                applied: 1
            }))
        );
    }

    #[test]
    #[should_panic(expected = "w=4 outside 1..=3")]
    fn w_above_n_is_a_programmer_error() {
        PutCoordinator::new(3, 4, 0, false, primaries());
    }

    #[derive(Debug, Clone)]
    enum Event {
        Ack { target: usize, durable: bool },
        Failure { target: usize },
        Timeout,
    }

    #[derive(Debug, Clone)]
    struct Scenario {
        n: usize,
        w: usize,
        pw: usize,
        sync: bool,
        targets: Vec<Replica>,
        events: Vec<Event>,
    }

    fn scenario() -> impl Strategy<Value = Scenario> {
        (1usize..=5)
            .prop_flat_map(|n| (Just(n), 1..=n, 0..=n, any::<bool>()))
            .prop_flat_map(|(n, w, count, sync)| {
                (
                    Just(n),
                    Just(w),
                    0..=w,
                    Just(sync),
                    proptest::collection::vec(any::<bool>(), count),
                )
            })
            .prop_flat_map(|(n, w, pw, sync, roles)| {
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
                // Indices past the targets stand for nodes that were not asked.
                let index = 0..targets.len() + 1;
                let event = prop_oneof![
                    6 => (index.clone(), any::<bool>())
                        .prop_map(|(target, durable)| Event::Ack { target, durable }),
                    3 => index.prop_map(|target| Event::Failure { target }),
                    1 => Just(Event::Timeout),
                ];
                (
                    Just(n),
                    Just(w),
                    Just(pw),
                    Just(sync),
                    Just(targets),
                    proptest::collection::vec(event, 0..12),
                )
            })
            .prop_map(|(n, w, pw, sync, targets, events)| Scenario {
                n,
                w,
                pw,
                sync,
                targets,
                events,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A put never reports success without `w` counting acknowledgements
        /// and `pw` from primaries; it is decided exactly when the counting
        /// rule says so; a decided outcome keeps its kind.
        #[test]
        fn never_succeeds_without_w_and_pw(s in scenario()) {
            let mut put = PutCoordinator::new(s.n, s.w, s.pw, s.sync, s.targets.clone());
            // Per target: None pending, Some(Some(durable)) applied, Some(None) failed.
            let mut answers: Vec<Option<Option<bool>>> = vec![None; s.targets.len()];
            let mut decided: Option<&'static str> = None;
            for event in &s.events {
                match *event {
                    Event::Ack { target, durable } => {
                        let node = Uuid::from_u128(target as u128 + 1);
                        let recorded = put.add_ack(node, durable);
                        match answers.get_mut(target) {
                            None => prop_assert_eq!(recorded, Recorded::NotATarget),
                            Some(slot @ None) => {
                                prop_assert_eq!(recorded, Recorded::Accepted);
                                *slot = Some(Some(durable));
                            }
                            Some(Some(_)) => prop_assert_eq!(recorded, Recorded::Duplicate),
                        }
                    }
                    Event::Failure { target } => {
                        let node = Uuid::from_u128(target as u128 + 1);
                        let recorded = put.add_failure(node, ReplicaError::Unreachable);
                        match answers.get_mut(target) {
                            None => prop_assert_eq!(recorded, Recorded::NotATarget),
                            Some(slot @ None) => {
                                prop_assert_eq!(recorded, Recorded::Accepted);
                                *slot = Some(None);
                            }
                            Some(Some(_)) => prop_assert_eq!(recorded, Recorded::Duplicate),
                        }
                    }
                    Event::Timeout => put.timeout(),
                }

                let counts = |primaries_only: bool| {
                    (0..answers.len())
                        .filter(|&i| !primaries_only || s.targets[i].is_primary())
                        .fold((0, 0, 0), |(acks, applied, pending), i| match answers[i] {
                            Some(Some(durable)) => (acks + usize::from(durable || !s.sync), applied + 1, pending),
                            Some(None) => (acks, applied, pending),
                            None => (acks, applied, pending + 1),
                        })
                };
                let (acks, applied, pending) = counts(false);
                let (primary_acks, _, pending_primaries) = counts(true);
                if decided.is_none() {
                    decided = if acks >= s.w && primary_acks >= s.pw {
                        Some("ok")
                    } else if acks + pending < s.w || primary_acks + pending_primaries < s.pw {
                        Some("quorum_not_reached")
                    } else if matches!(event, Event::Timeout) {
                        Some(if applied > 0 { "timeout_indeterminate" } else { "timeout" })
                    } else {
                        None
                    };
                }
                match put.outcome() {
                    None => prop_assert_eq!(decided, None),
                    Some(Ok(success)) => {
                        prop_assert_eq!(decided, Some("ok"));
                        prop_assert!(success.acks >= s.w && success.primary_acks >= s.pw);
                        prop_assert_eq!((success.acks, success.primary_acks, success.applied), (acks, primary_acks, applied));
                    }
                    Some(Err(error)) => {
                        prop_assert_eq!(Some(error.code()), decided);
                        if error.code() == "quorum_not_reached" {
                            prop_assert_eq!(error.applied(), applied);
                            prop_assert_eq!(error.tally().received, acks);
                            prop_assert_eq!(error.tally().received_primaries, primary_acks);
                        }
                    }
                }
            }
        }
    }
}
