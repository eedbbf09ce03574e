//! Real `chorus node start` processes in network namespaces under a
//! nemesis (partitions with nftables, SIGKILL and restart, SIGSTOP, clock
//! skew with faketime, a delayed link), checked by the same checkers as the
//! simulator; and two negative controls proving the harness can fail.
//!
//! Needs root (network namespaces, nftables); without it every test here
//! prints `SKIPPED: ...` and returns. The runs share one machine's two
//! cores, so they take turns. `CHORUS_REAL_SEED=<n>` picks another nemesis
//! schedule (the default is 1). The `chorus` binary is the one beside the
//! test executable, which `cargo test --workspace --all-targets` builds.

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
/// skew and a delayed link, then a crash of every node at once: nothing
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
        // Clocks ahead by up to 20 s: the node is refused by its peers for
        // as long once its clock is back, which the run waits out.
        max_skew: Duration::from_secs(20),
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
    if let Some(first) = report.violations.first() {
        eprintln!(
            "history of {}:\n{}",
            first.key,
            real::dump_key(&report.history, &first.key)
        );
    }
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
    let violations = check_all(&history, &Assumptions::default());
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

/// A UDP echo server for the testbed test: answers every datagram on
/// port 9999 of its namespace (an answer dropped on its way out fails the
/// send with EPERM, which it ignores).
const ECHO: &str = "import socket\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.bind(('0.0.0.0', 9999))\n\
print('ready', flush=True)\n\
while True:\n    d, a = s.recvfrom(100)\n    try:\n        s.sendto(d, a)\n    except OSError:\n        pass\n";

/// Sends one datagram to `argv[1]:9999` and prints the round trip in
/// milliseconds, or `lost` after two seconds or when the send is refused
/// (a packet dropped on its way out fails the send with EPERM).
const PING: &str = "import socket, sys, time\n\
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
c.settimeout(2)\n\
t = time.monotonic()\n\
try:\n    c.sendto(b'x', (sys.argv[1], 9999))\n    c.recvfrom(100)\n    print(round((time.monotonic() - t) * 1000))\n\
except OSError:\n    print('lost')\n";

/// The round trip from node `from` to node `to`'s echo server, or `None`
/// when the datagram or its answer was dropped.
fn round_trip(testbed: &netns::Testbed, from: usize, to: usize) -> Option<u64> {
    let output = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &testbed.namespace(from),
            "python3",
            "-c",
            PING,
        ])
        .arg(testbed.address(to).to_string())
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (text != "lost").then(|| text.parse().expect("milliseconds"))
}

/// The testbed's faults are real: a one-way cut drops one direction, an
/// isolated node reaches no peer, a delayed link holds packets both ways,
/// and a heal undoes each.
#[test]
fn the_testbed_cuts_and_delays_links_for_real() {
    if !testbed_available("the_testbed_cuts_and_delays_links_for_real") {
        return;
    }
    if let Err(why) = netns::delay_available() {
        eprintln!("SKIPPED: the_testbed_cuts_and_delays_links_for_real: {why}");
        return;
    }
    let mut testbed = netns::Testbed::create(3).expect("a testbed");
    // On a panic, the testbed kills what runs in its namespaces.
    let mut servers = Vec::new();
    for node in [0, 1] {
        let mut echo = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &testbed.namespace(node),
                "python3",
                "-u",
                "-c",
                ECHO,
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("an echo server");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(echo.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        servers.push(echo);
    }
    let fast = |rtt: Option<u64>| matches!(rtt, Some(ms) if ms < 100);
    assert!(fast(round_trip(&testbed, 0, 1)), "baseline");

    testbed.one_way(0, 1).unwrap();
    assert_eq!(round_trip(&testbed, 0, 1), None, "0 -> 1 is cut");
    assert_eq!(
        round_trip(&testbed, 1, 0),
        None,
        "answers of 0 to 1 are cut"
    );
    testbed.heal().unwrap();
    assert!(fast(round_trip(&testbed, 0, 1)), "healed");

    testbed.isolate(2).unwrap();
    assert_eq!(round_trip(&testbed, 2, 0), None, "2 is isolated");
    assert!(fast(round_trip(&testbed, 0, 1)), "0 and 1 still talk");
    testbed.heal().unwrap();

    testbed.delay(0, 1, Duration::from_millis(300)).unwrap();
    let delayed = round_trip(&testbed, 0, 1).expect("delayed, not dropped");
    assert!(
        (550..1500).contains(&delayed),
        "a 300 ms delay each way gave a {delayed} ms round trip"
    );
    testbed.heal().unwrap();
    assert!(fast(round_trip(&testbed, 0, 1)), "delay healed");
    for mut server in servers {
        server.kill().unwrap();
        server.wait().unwrap();
    }
}
