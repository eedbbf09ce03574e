//! `chorus bench`'s drivers against real servers: Chorus (a 3-node cluster
//! in this process, over HTTP and QUIC), the node's storage engine alone,
//! Redis and etcd (started from PATH
//! on free loopback ports; when the binary is absent the test says
//! `SKIPPED: … not found` on standard error and returns).

// Tests of real servers: they bind ports, spawn tasks, wait and read the clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chorus_client::bench::{
    self, ChorusDriver, Distribution, Driver, EtcdDriver, Limit, PhaseReport, RedisDriver,
    RunConfig, ValueSize, Workload,
};
use chorus_client::{Client, ClientTls, RequestOptions, Value};
use chorus_node::bench_store::StoreDriver;
use chorus_node::runtime::RunningNode;
use chorus_node::transport::tls::ClusterCa;
use chorus_storage::object::MAX_SIBLINGS;
use chorus_storage::store::Durability;

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free TCP port")
        .port()
}

async fn start_cluster(dir: &std::path::Path, ca: &ClusterCa) -> Vec<RunningNode> {
    common::start_nodes(dir, ca, 3, |_, _| {}).await
}

fn config(workload: Workload) -> RunConfig {
    RunConfig {
        workload,
        distribution: Distribution::Zipfian,
        records: 50,
        value_size: ValueSize { min: 50, max: 150 },
        limit: Limit::Operations(300),
        concurrency: 8,
        rate: None,
        seed: 9,
        progress: false,
    }
}

/// Loads, runs `workload` and checks every operation succeeded.
async fn runs_cleanly<D: Driver>(driver: Arc<D>, workload: Workload) -> PhaseReport {
    let config = config(workload);
    let (load, run, _) = bench::bench(driver, &config, true).await;
    let load = load.expect("a load phase");
    assert_eq!((load.ok, load.errors), (50, 0), "{load:?}");
    assert_eq!((run.ok, run.errors), (300, 0), "{workload:?}: {run:?}");
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chorus_over_http_and_quic() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate("bench").unwrap();
    let nodes = start_cluster(dir.path(), &ca).await;
    let mut builder = Client::builder();
    for node in &nodes {
        builder = builder.endpoint(format!("http://{}", node.http_addr));
    }
    let options = RequestOptions::default();
    let client = builder.build().unwrap();
    let http = Arc::new(ChorusDriver::new(client.clone(), "bench", options, options));
    for workload in [Workload::A, Workload::F, Workload::D, Workload::Write] {
        let run = runs_cleanly(http.clone(), workload).await;
        // Updates carry the key's context, so they replace versions, and
        // reads choose only keys that were written: every read finds one.
        if let Some(read) = run.ops.get("read") {
            assert_eq!(read.not_found, 0, "{workload:?}");
        }
    }
    let run = runs_cleanly(http.clone(), Workload::Delete).await;
    assert_eq!(run.ops["delete"].ok, 300);

    // Blind updates of one key leave siblings no context covers until the
    // node refuses more (409 too_many_siblings); the driver then reads the
    // key and writes over every sibling. The key starts at the bound, so
    // the driver's first write, which knows no context, is refused: how
    // many siblings 32 racing tasks would pile up depends on timing.
    for i in 0..MAX_SIBLINGS {
        client
            .put(
                "bench-hot",
                &bench::workload::key_name(0),
                Value::from(format!("blind {i}").as_str()),
                None,
                &options,
            )
            .await
            .expect("a blind write below the bound");
    }
    let hot = Arc::new(ChorusDriver::new(client, "bench-hot", options, options));
    let one_key = RunConfig {
        records: 1,
        limit: Limit::Operations(3000),
        concurrency: 32,
        ..config(Workload::Write)
    };
    let (_, run, extra) = bench::bench(hot, &one_key, true).await;
    assert_eq!((run.ok, run.errors), (3000, 0), "{run:?}");
    assert!(extra["sibling_resolutions"] > 0, "{extra:?}");

    let identity = ca.issue_client("bench").unwrap();
    let tls = ClientTls::from_pem(identity.ca_pem, identity.cert_pem, identity.key_pem);
    let quic = Client::quic(nodes[0].quic_addr, tls).unwrap();
    let quic = Arc::new(ChorusDriver::new(quic, "bench-quic", options, options));
    runs_cleanly(quic, Workload::A).await;
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_engine_alone() {
    let dir = tempfile::tempdir().unwrap();
    let driver = StoreDriver::open(dir.path(), "bench", Durability::Buffered).unwrap();
    // Where a node with this data directory keeps its store.
    assert!(dir.path().join("db").is_dir());
    let driver = Arc::new(driver);
    for workload in [Workload::A, Workload::F, Workload::D, Workload::Write] {
        let run = runs_cleanly(driver.clone(), workload).await;
        if let Some(read) = run.ops.get("read") {
            assert_eq!(read.not_found, 0, "{workload:?}");
        }
    }
    // Each write replaces what the key held, as a write with a read's
    // context does: 32 tasks on one key never pile up siblings.
    let one_key = RunConfig {
        records: 1,
        limit: Limit::Operations(3000),
        concurrency: 32,
        ..config(Workload::Write)
    };
    let (_, run, _) = bench::bench(driver.clone(), &one_key, true).await;
    assert_eq!((run.ok, run.errors), (3000, 0), "{run:?}");
    // A delete writes a tombstone: the key reads as absent after it.
    runs_cleanly(driver.clone(), Workload::Delete).await;
    let deleted = RunConfig {
        records: 1,
        limit: Limit::Operations(1),
        concurrency: 1,
        ..config(Workload::Delete)
    };
    bench::bench(driver.clone(), &deleted, false).await;
    assert!(matches!(
        driver.read("user0").await,
        Ok(chorus_client::bench::ReadResult::NotFound { .. })
    ));
    drop(driver);

    // Reopened (the same store, as a restarted node would) with synced writes.
    let synced = StoreDriver::open(dir.path(), "bench", Durability::Sync).unwrap();
    runs_cleanly(Arc::new(synced), Workload::Write).await;
}

/// A server process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Says on standard error, past the test harness's capture (which would
/// hide it for a passing test), that a test did not run.
fn skipped(binary: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {binary} not found");
}

fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(binary).is_file()))
}

/// Waits for a TCP port to accept connections (the server is up).
async fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on port {port} after 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis() {
    if !on_path("redis-server") {
        skipped("redis-server");
        return;
    }
    let port = free_tcp_port();
    let _server = Server(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts"),
    );
    wait_for_port(port).await;
    let url = format!("redis://127.0.0.1:{port}");
    let driver = Arc::new(RedisDriver::connect(&url, 8).await.expect("a connection"));
    for workload in [Workload::A, Workload::F, Workload::Delete] {
        runs_cleanly(driver.clone(), workload).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd() {
    if !on_path("etcd") {
        skipped("etcd");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_tcp_port(), free_tcp_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let _server = Server(
        Command::new("etcd")
            .arg("--data-dir")
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts"),
    );
    wait_for_port(client).await;
    let driver = Arc::new(EtcdDriver::new(vec![client_url]).unwrap());
    // The port opens before the member has a leader: wait for a first read.
    for _ in 0..200 {
        if driver.read("probe").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for workload in [Workload::A, Workload::F, Workload::Delete] {
        runs_cleanly(driver.clone(), workload).await;
    }
}

/// Arguments `chorus bench` refuses after parsing (request options, the
/// rate, the duration, targets of no single kind) are usage errors: exit 2, as clap's own, before
/// anything is run or connected to.
#[test]
fn bench_refuses_bad_arguments_as_usage_errors() {
    let bench = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_chorus"))
            .arg("bench")
            .args(args)
            .args(["--target", "http://127.0.0.1:9"])
            .output()
            .expect("chorus runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, error) = bench(&["--read", "r=banana"]);
    assert_eq!(code, Some(2), "{error}");
    assert!(
        error.starts_with("error: invalid options \"r=banana\": ")
            && error.contains("invalid_quorum"),
        "{error}"
    );
    let (code, error) = bench(&["--rate", "0"]);
    assert_eq!(code, Some(2), "{error}");
    assert_eq!(error, "error: --rate must be a positive number\n");
    let (code, error) = bench(&["--duration", "0s"]);
    assert_eq!(code, Some(2), "{error}");
    assert_eq!(error, "error: --duration must be positive\n");
    // Not a URL of a known kind, next to the Chorus target.
    let (code, error) = bench(&["--target", "nonsense"]);
    assert_eq!(code, Some(2), "{error}");
    assert!(
        error.starts_with("error: every --target must be"),
        "{error}"
    );
    let (code, error) = bench(&["--target", "redis://127.0.0.1:9"]);
    assert_eq!(code, Some(2), "{error}");
    assert!(
        error.starts_with("error: every --target must be"),
        "{error}"
    );
    let (code, error) = bench(&["--target", "store:/nonexistent"]);
    assert_eq!(code, Some(2), "{error}");
    assert_eq!(
        error,
        "error: a store: target is the only --target of a run\n"
    );
}
