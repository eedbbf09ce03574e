//! Campaign runs that once found a violation, pinned as regression tests.
//!
//! Each run is written out in full rather than derived from its seed with
//! [`SimRun::from_seed`], and without faults: the nemesis and the seed's
//! derivation may change, and these runs must keep doing what they did
//! when they failed. A run replays exactly from its fields (the simulator is
//! deterministic), so the history it checks is the one that failed.

use chorus_tests::campaign::{run, SimRun};
use chorus_tests::workload::{Consistency, Kind};

/// A pinned run: cluster size, workload, consistency, client processes,
/// operations and keys of the failing seed, no faults.
fn pinned(
    seed: u64,
    nodes: usize,
    workload: Kind,
    consistency: Consistency,
    processes: usize,
    operations: usize,
    keys: usize,
) -> SimRun {
    SimRun {
        seed,
        nodes,
        workload,
        consistency,
        faults: vec![],
        processes,
        operations,
        keys,
        unsafe_controls: Default::default(),
    }
}

fn assert_clean(runs: &[SimRun]) {
    for r in runs {
        let report = run(r);
        assert!(
            report.violations.is_empty(),
            "{r:?} found {} violations, the first: {:?}",
            report.violations.len(),
            report.violations[0]
        );
    }
}

/// Siblings that were not an antichain: a process wrote X, wrote Y with the
/// context X's write answered, and a later read showed X beside Y. Y's
/// write had reached a replica before X had, and the replica forgot X's
/// dot, a single dot of Y's context, so X survived beside Y when it
/// arrived. Every one of these runs showed it, with no fault injected.
#[test]
fn a_writes_single_dots_supersede_versions_that_arrive_later() {
    use Consistency::{Durable, One, Sloppy};
    use Kind::SetFromWrites as Writes;
    assert_clean(&[
        pinned(4, 6, Writes, One, 6, 212, 4),
        pinned(11, 6, Writes, One, 3, 145, 1),
        pinned(14, 4, Writes, One, 6, 142, 3),
        pinned(26, 7, Writes, Sloppy, 5, 226, 2),
        pinned(31, 4, Writes, Durable, 5, 222, 1),
        pinned(54, 7, Writes, One, 3, 166, 1),
        pinned(90, 4, Writes, One, 6, 161, 4),
        pinned(92, 6, Writes, One, 5, 179, 3),
        pinned(96, 4, Writes, One, 2, 238, 1),
        pinned(110, 7, Writes, Sloppy, 5, 238, 4),
        pinned(186, 7, Writes, One, 5, 157, 4),
        pinned(193, 7, Writes, One, 6, 133, 2),
        pinned(196, 6, Writes, One, 4, 248, 1),
    ]);
}

/// Seeds where final reads through different nodes disagreed because a
/// frame a slow link held was still on its way when the faults healed;
/// the run now lets the network drain before it checks convergence.
#[test]
fn convergence_is_checked_once_frames_delayed_by_the_faults_have_arrived() {
    use chorus_tests::nemesis::FaultKind;
    let runs: Vec<SimRun> = [2249, 7608]
        .into_iter()
        .map(|seed| SimRun::from_seed(seed, &Kind::ALL, &Consistency::ALL, &FaultKind::ALL))
        .collect();
    assert_clean(&runs);
}
