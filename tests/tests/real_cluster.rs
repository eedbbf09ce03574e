//! Real `chorus node start` processes in network namespaces under a
//! nemesis (partitions with nftables, SIGKILL and restart, SIGSTOP, clock
//! skew with faketime, a flapping link), checked by the same checkers as the
//! simulator; and two negative controls proving the harness can fail.
//!
//! Needs root (network namespaces, nftables); without it every test here
//! prints `SKIPPED: ...` and returns. The runs share one machine's two
//! cores, so they take turns.

use std::sync::Mutex;
use std::time::Duration;

use chorus_tests::check::{check_all, lost, Assumptions};
use chorus_tests::history::{Completion, Op, Response};
use chorus_tests::netns;
use chorus_tests::real::{self, RealConfig, RealFault};
use chorus_tests::workload::{Consistency, Kind};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Whether the testbed can run here; prints why not.
fn testbed_available(test: &str) -> bool {
    match netns::available() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIPPED: {test}: {why}");
            false
        }
    }
}

fn seed() -> u64 {
    std::env::var("CHORUS_REAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// Five nodes, every workload, 60 s under partitions, kills, pauses, clock
/// skew and a flapping link, then a crash of every node at once: nothing
/// acknowledged is lost, nothing unexpected appears, replicas converge.
/// The harness's own negative control follows on the same history: an
/// acknowledged write that never reached the cluster is reported lost.
#[test]
fn five_real_nodes_under_a_nemesis_keep_every_promise() {
    if !testbed_available("five_real_nodes_under_a_nemesis_keep_every_promise") {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let config = RealConfig {
        nodes: 5,
        duration: Duration::from_secs(60),
        faults: RealFault::ALL.to_vec(),
        workloads: Kind::ALL.to_vec(),
        consistency: Consistency::Sloppy,
        seed: seed(),
        ..RealConfig::default()
    };
    let report = real::run(&config).expect("the run completes");
    eprintln!("seed {}:\n{report}", config.seed);
    for line in &report.nemesis_log {
        eprintln!("  {line}");
    }
    assert!(
        report.faults.len() >= 3,
        "fewer than 3 fault kinds injected: {:?}",
        report.faults
    );
    assert!(
        report.counts.acknowledged > 100,
        "too few writes acknowledged: {:?}",
        report.counts
    );
    assert!(
        report.violations.is_empty(),
        "{} violations, first: {}",
        report.violations.len(),
        report.violations[0]
    );

    // Negative control: a write recorded as acknowledged that was never
    // sent, to a key whose final reads exist, must be reported lost.
    let mut history = report.history;
    let key = history
        .keys()
        .into_iter()
        .find(|k| k.starts_with("ins-") && history.final_reads(k).next().is_some())
        .expect("an inserted key with final reads");
    let at = Duration::from_millis(1);
    let ghost = history.invoke(
        0,
        0,
        Op::Write {
            key: key.clone(),
            value: Some("ghost-value".to_owned()),
            context: None,
            return_body: false,
        },
        vec![("w".to_owned(), "quorum".to_owned())],
        at,
    );
    history.complete(ghost, Completion::Ok(Response::default()), at);
    let violations = check_all(&history, Assumptions::default());
    assert!(
        violations
            .iter()
            .any(|v| v.checker == lost::NAME && v.key == key && v.detail.contains("ghost-value")),
        "the ghost write was not reported lost: {violations:?}"
    );
}

/// Negative control with real processes: with the write-ahead log off, a
/// crash of every node loses acknowledged writes, and the checkers say so.
#[test]
fn without_the_write_ahead_log_a_crash_loses_acknowledged_writes_and_the_checkers_see_it() {
    if !testbed_available("without_the_write_ahead_log_...") {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let config = RealConfig {
        nodes: 5,
        duration: Duration::from_secs(15),
        faults: Vec::new(),
        workloads: vec![Kind::Insert, Kind::SetFromReads],
        consistency: Consistency::Sloppy,
        crash_all: true,
        unsafe_disable_wal: true,
        seed: seed(),
        ..RealConfig::default()
    };
    let report = real::run(&config).expect("the run completes");
    eprintln!("seed {} (WAL off):\n{report}", config.seed);
    assert!(report.counts.acknowledged > 50, "{:?}", report.counts);
    let lost = report
        .violations
        .iter()
        .filter(|v| v.checker == lost::NAME)
        .count();
    assert!(
        lost > 0,
        "no lost write reported with the WAL off: {:?}",
        report.counts
    );
}
