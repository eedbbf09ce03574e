//! The bounded campaign CI runs: 200 seeded simulations over every
//! workload, consistency level and fault kind, checked by every checker.
//! Longer campaigns: `cargo run -p chorus-tests --bin chorus-campaign -- sim
//! --seeds 1..=10000` (docs/testing.md).

use chorus_tests::campaign::{self, SimRun, Summary};
use chorus_tests::nemesis::FaultKind;
use chorus_tests::workload::{Consistency, Kind};

#[test]
fn two_hundred_seeds_of_every_workload_under_every_fault_keep_every_promise() {
    let first = std::env::var("CHORUS_CAMPAIGN_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1u64);
    let mut summary = Summary::default();
    let mut failures = Vec::new();
    for seed in first..first + 200 {
        let run = SimRun::from_seed(seed, &Kind::ALL, &Consistency::ALL, &FaultKind::ALL);
        let report = campaign::run(&run);
        summary.add(&report);
        if !report.violations.is_empty() {
            failures.push(format!(
                "seed {seed}: {} (replay: {})",
                report.violations[0],
                run.replay_command()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(summary.runs, 200);
    assert!(summary.faults_injected > 0, "the nemesis injected nothing");
    assert!(summary.counts.acknowledged > 1000, "{:?}", summary.counts);
}
