//! End to end: a real 3-node cluster of `chorus node start` processes
//! talking QUIC with mutual TLS on loopback, driven through the HTTP API.
//!
//! One test walks the whole story, because starting a cluster is the
//! expensive part: forming the cluster, puts, gets and deletes at several
//! R/W settings, a node killed with SIGKILL (w=2 still succeeds, w=all
//! fails with the quorum error), its restart (hints delivered, r=all sees
//! the value), and a node with a certificate from another CA, which cannot
//! join.

// Tests of real processes: they bind ports, wait and read the clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use common::process::{node_certificates, run_chorus as run, NodeProcess};
/// How long the cluster may take to form or to notice a change.
const PATIENCE: Duration = Duration::from_secs(60);

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn status(http: &reqwest::Client, node: &NodeProcess) -> Option<serde_json::Value> {
    let response = http.get(node.url("/v1/cluster/status")).send().await.ok()?;
    response.json().await.ok()
}

/// A string `field` of the member named `name` in `observer`'s status.
async fn member_field(
    http: &reqwest::Client,
    observer: &NodeProcess,
    name: &str,
    field: &str,
) -> Option<String> {
    let status = status(http, observer).await?;
    status["members"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| m[field].as_str().map(str::to_string))
}

async fn liveness_of(http: &reqwest::Client, observer: &NodeProcess, name: &str) -> Option<String> {
    member_field(http, observer, name, "liveness").await
}

async fn pending_hints(http: &reqwest::Client, node: &NodeProcess) -> Option<u64> {
    let text = http
        .get(node.url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("chorus_hints_pending "))
        .and_then(|n| n.trim().parse().ok())
}

fn key_url(node: &NodeProcess, key: &str, query: &str) -> String {
    node.url(&format!("/v1/buckets/e2e/keys/{key}?{query}"))
}

async fn put(
    http: &reqwest::Client,
    node: &NodeProcess,
    key: &str,
    value: &str,
    query: &str,
) -> reqwest::Response {
    http.put(key_url(node, key, query))
        .body(value.to_string())
        .send()
        .await
        .expect("put sent")
}

async fn get(
    http: &reqwest::Client,
    node: &NodeProcess,
    key: &str,
    query: &str,
) -> reqwest::Response {
    http.get(key_url(node, key, query))
        .send()
        .await
        .expect("get sent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_over_quic() {
    let root = tempfile::tempdir().expect("temp dir");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");

    // --- the cluster forms ---
    let [n1, n2, mut n3] = form_cluster(root.path(), &http).await;
    let livez = http.get(n1.url("/livez")).send().await.expect("livez");
    assert_eq!(livez.status(), StatusCode::OK);
    let members = status(&http, &n1).await.expect("status");
    assert_eq!(
        members["members"].as_array().map(Vec::len),
        Some(3),
        "{members}"
    );

    // --- put, get, delete at several R/W settings, through every node ---
    for (i, (w, r)) in [
        ("1", "1"),
        ("quorum", "quorum"),
        ("all", "all"),
        ("2", "one"),
    ]
    .iter()
    .enumerate()
    {
        let writer = [&n1, &n2, &n3][i % 3];
        let reader = [&n1, &n2, &n3][(i + 1) % 3];
        let key = format!("k{i}");
        let response = put(
            &http,
            writer,
            &key,
            &format!("value-{i}"),
            &format!("w={w}"),
        )
        .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "put w={w}");
        assert!(response.headers().contains_key("x-chorus-context"));
        // Where w + r does not exceed the 3 replicas, a read right after
        // the write may reach only replicas that have not applied it yet:
        // such a read goes to the writer, which applied it before it
        // answered and reads its own copy first.
        let count = |q: &str| match q {
            "1" | "one" => 1,
            "2" | "quorum" => 2,
            _ => 3,
        };
        let reader = if count(w) + count(r) > 3 {
            reader
        } else {
            writer
        };
        let response = get(&http, reader, &key, &format!("r={r}")).await;
        assert_eq!(response.status(), StatusCode::OK, "get r={r}");
        let context = response.headers()["x-chorus-context"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(response.text().await.unwrap(), format!("value-{i}"));
        // Delete with the context: a tombstone, reads as not found.
        let response = http
            .delete(key_url(writer, &key, "w=all"))
            .header("x-chorus-context", context)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "delete");
        let response = get(&http, reader, &key, "r=all").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(
            response.headers().contains_key("x-chorus-context"),
            "a tombstone keeps its context"
        );
    }
    // Bad input is refused before any work.
    let response = put(&http, &n1, "bad", "x", "w=4").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "quorum_above_n");

    // --- kill node3: w=2 succeeds, w=all fails with the quorum error ---
    let n3_id = member_field(&http, &n1, "node3", "id")
        .await
        .expect("node3's id");
    n3.kill();
    wait_for("node1 and node2 see node3 down", || async {
        liveness_of(&http, &n1, "node3").await.as_deref() == Some("down")
            && liveness_of(&http, &n2, "node3").await.as_deref() == Some("down")
    })
    .await;
    let response = put(&http, &n1, "during-outage", "survives", "w=2").await;
    assert_eq!(
        response.status(),
        StatusCode::NO_CONTENT,
        "w=2 with one node down"
    );
    let response = put(&http, &n2, "strict", "refused", "w=all").await;
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "w=all with one node down"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "quorum_not_reached", "{body}");
    assert_eq!(body["required"], 3, "{body}");
    // Out of reach of the two nodes up, so refused before either applied
    // it, and node3 is named as the replica that cannot be reached.
    assert_eq!(body["received"], 0, "{body}");
    assert_eq!(body["applied"], 0, "{body}");
    assert_eq!(body["outcome"], "not_applied", "{body}");
    let failures = body["failures"].as_array().expect("failures");
    assert!(
        failures
            .iter()
            .any(|f| f["code"] == "replica_unreachable" && f["node"] == n3_id.as_str()),
        "{body}"
    );
    let hints_before =
        pending_hints(&http, &n1).await.unwrap_or(0) + pending_hints(&http, &n2).await.unwrap_or(0);
    assert!(hints_before >= 1, "the coordinators keep hints for node3");

    // --- restart node3: hints are delivered, r=all sees the value ---
    n3.start();
    wait_for("node3 ready again", || async {
        matches!(http.get(n3.url("/readyz")).send().await, Ok(r) if r.status() == StatusCode::OK)
    })
    .await;
    wait_for("hints delivered to node3", || async {
        pending_hints(&http, &n1).await == Some(0) && pending_hints(&http, &n2).await == Some(0)
    })
    .await;
    wait_for("node3 sees node1 and node2 up", || async {
        liveness_of(&http, &n3, "node1").await.as_deref() == Some("up")
            && liveness_of(&http, &n3, "node2").await.as_deref() == Some("up")
    })
    .await;
    // Node3 answers r=1 from its own copy, which only the hint can have
    // put there: no read of the key has run since the outage.
    let response = get(&http, &n3, "during-outage", "r=1").await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "node3 holds the hinted write"
    );
    assert_eq!(response.text().await.unwrap(), "survives");
    let response = get(&http, &n3, "during-outage", "r=all").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "survives");

    // --- a node with a certificate from another CA cannot join ---
    let foreign_ca = root.path().join("foreign-ca");
    run(&[
        "cert",
        "ca",
        "--dir",
        foreign_ca.to_str().unwrap(),
        "--cluster",
        "other",
    ]);
    let foreign_tls = root.path().join("intruder-tls");
    run(&[
        "cert",
        "node",
        "--ca-dir",
        foreign_ca.to_str().unwrap(),
        "--name",
        "intruder",
        "--out",
        foreign_tls.to_str().unwrap(),
    ]);
    let mut intruder = NodeProcess::new(
        root.path(),
        "intruder",
        foreign_tls,
        vec![n1.quic, n2.quic, n3.quic],
    );
    intruder.start();
    wait_for("the intruder serves HTTP", || async {
        matches!(http.get(intruder.url("/livez")).send().await, Ok(r) if r.status() == StatusCode::OK)
    })
    .await;
    // Give it several gossip rounds to try.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for node in [&n1, &n2, &n3] {
        let view = status(&http, node).await.expect("status");
        let names: Vec<&str> = view["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["name"].as_str())
            .collect();
        assert!(
            !names.contains(&"intruder"),
            "{} let the intruder in: {names:?}",
            node.name
        );
    }
    let view = status(&http, &intruder).await.expect("status");
    assert_eq!(
        view["members"].as_array().map(Vec::len),
        Some(1),
        "the intruder learned nothing: {view}"
    );
    let ready = http.get(intruder.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Both sides say why at `warn` (shown at the default log level), and
    // the intruder once per peer, not at every gossip round's retry.
    let log = intruder.log();
    let said = log
        .lines()
        .filter(|line| {
            line.contains(" WARN ") && line.contains("TLS handshake with the peer failed")
        })
        .count();
    assert!(
        (1..=3).contains(&said),
        "the intruder warns of the failed TLS handshake once per seed, said {said}:\n{log}"
    );
    let warned = [&n1, &n2, &n3].iter().any(|node| {
        node.log()
            .lines()
            .any(|line| line.contains(" WARN ") && line.contains("incoming TLS handshake failed"))
    });
    assert!(warned, "no seed warned of the intruder's handshake");
}

/// Makes a cluster CA and three nodes' certificates under `root`, starts
/// three nodes that know each other as seeds, and waits until all are
/// ready.
async fn form_cluster(root: &Path, http: &reqwest::Client) -> [NodeProcess; 3] {
    let tls_dirs = node_certificates(root, &["node1", "node2", "node3"]);
    let mut n1 = NodeProcess::new(root, "node1", tls_dirs[0].clone(), vec![]);
    let mut n2 = NodeProcess::new(root, "node2", tls_dirs[1].clone(), vec![n1.quic]);
    let mut n3 = NodeProcess::new(root, "node3", tls_dirs[2].clone(), vec![n1.quic, n2.quic]);
    n1.seeds = vec![n2.quic, n3.quic];
    for node in [&mut n1, &mut n2, &mut n3] {
        node.start();
    }
    for node in [&n1, &n2, &n3] {
        wait_for(&format!("{} ready", node.name), || async {
            matches!(http.get(node.url("/readyz")).send().await, Ok(r) if r.status() == StatusCode::OK)
        })
        .await;
    }
    // Ready means a node can serve, not that it has heard from every
    // peer yet; a `w=all` write is refused up front while a coordinator
    // does not count one of its replicas as up.
    for observer in [&n1, &n2, &n3] {
        for peer in ["node1", "node2", "node3"] {
            wait_for(&format!("{} sees {peer} up", observer.name), || async {
                liveness_of(http, observer, peer).await.as_deref() == Some("up")
            })
            .await;
        }
    }
    [n1, n2, n3]
}

/// `name`'s liveness and generation as `observer` sees them.
async fn view_of(
    http: &reqwest::Client,
    observer: &NodeProcess,
    name: &str,
) -> Option<(String, u64)> {
    let status = status(http, observer).await?;
    let member = status["members"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)?
        .clone();
    Some((
        member["liveness"].as_str()?.to_string(),
        member["generation"].as_u64()?,
    ))
}

/// A node killed with SIGKILL and started again at once on the same data
/// directory and address is back within a few gossip rounds: its peers'
/// connections to the dead process are reset (a QUIC stateless reset from
/// the new process, and the new generation seen in its frames) instead of
/// living on until the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_and_restarted_at_once_is_back_within_seconds() {
    /// Generous for a few gossip rounds; far below the 30 s idle timeout.
    const BACK_WITHIN: Duration = Duration::from_secs(8);
    let root = tempfile::tempdir().expect("temp dir");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let [n1, mut n2, n3] = form_cluster(root.path(), &http).await;
    let response = put(&http, &n1, "restart", "before", "w=all").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // Connections in both directions carry traffic before the kill.
    let response = get(&http, &n2, "restart", "r=all").await;
    assert_eq!(response.status(), StatusCode::OK);
    let (_, old_generation) = view_of(&http, &n1, "node2")
        .await
        .expect("node1 sees node2");

    n2.kill();
    n2.start();
    let restarted = Instant::now();
    loop {
        let mut back = true;
        for observer in [&n1, &n2, &n3] {
            back &= matches!(
                view_of(&http, observer, "node2").await,
                Some((liveness, generation)) if liveness == "up" && generation > old_generation
            );
        }
        if back {
            let response = get(&http, &n1, "restart", "r=all&timeout=1000").await;
            if response.status() == StatusCode::OK {
                assert_eq!(response.text().await.unwrap(), "before");
                break;
            }
        }
        assert!(
            restarted.elapsed() < BACK_WITHIN,
            "node2 is not back with a new generation and r=all within {BACK_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Copies a directory tree (a data directory copied while its node runs).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("target dir");
    for entry in std::fs::read_dir(from).expect("readable dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// Starts `node`, which must exit with an error within 30 s; its log.
async fn refused_start(node: &mut NodeProcess) -> String {
    node.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        let child = node.child.as_mut().expect("started");
        if let Some(status) = child.try_wait().expect("wait") {
            node.child = None;
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{} still runs after 30 s:\n{}",
            node.name,
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!exit.success(), "{} exits with an error", node.name);
    node.log()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_a_live_nodes_data_directory_refuses_to_run() {
    let root = tempfile::tempdir().expect("temp dir");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let [n1, mut n2, mut n3] = form_cluster(root.path(), &http).await;
    let response = put(&http, &n1, "before-copy", "v", "w=all").await;
    let code = response.status();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    let node2_id = status(&http, &n2).await.expect("status")["node_id"]
        .as_str()
        .expect("an id")
        .to_string();

    // --- node2's data directory is copied while it runs, and started ---
    let mut copy = NodeProcess::new(
        root.path(),
        "node2-copy",
        n2.tls.clone(),
        vec![n1.quic, n3.quic],
    );
    copy_dir(&n2.dir.join("data"), &copy.dir.join("data"));
    let log = refused_start(&mut copy).await;
    let expected = format!("node id {node2_id} is already alive at {}", n2.quic);
    assert!(
        log.contains(&expected),
        "the error names the duplicate identity ({expected}):\n{log}"
    );
    assert!(
        log.contains(" INFO ") && !log.contains('\x1b'),
        "a log written to a file has plain levels, no colour codes:\n{log}"
    );

    // --- a second process on node2's data directory, QUIC or HTTP address ---
    let seeds = vec![n1.quic, n3.quic];
    let mut same_dir =
        NodeProcess::new(root.path(), "node2-same-dir", n2.tls.clone(), seeds.clone());
    std::fs::create_dir_all(&same_dir.dir).expect("node dir");
    std::os::unix::fs::symlink(n2.dir.join("data"), same_dir.dir.join("data")).expect("link");
    let log = refused_start(&mut same_dir).await;
    assert!(
        log.contains("is in use by another process"),
        "the error says the directory is in use:\n{log}"
    );
    let mut same_quic = NodeProcess::new(
        root.path(),
        "node2-same-quic",
        n2.tls.clone(),
        seeds.clone(),
    );
    same_quic.quic = n2.quic;
    let log = refused_start(&mut same_quic).await;
    let expected = format!("cannot bind the QUIC socket to {}: ", n2.quic);
    assert_eq!(
        log.matches(&expected).count(),
        1,
        "{expected}, once:\n{log}"
    );
    let mut same_http = NodeProcess::new(root.path(), "node2-same-http", n2.tls.clone(), seeds);
    same_http.http = n2.http;
    let log = refused_start(&mut same_http).await;
    let expected = format!("cannot listen for HTTP on {}: ", n2.http);
    assert_eq!(
        log.matches(&expected).count(),
        1,
        "{expected}, once:\n{log}"
    );

    // --- the cluster keeps serving, node2 included ---
    wait_for("node1 sees node2 up", || async {
        liveness_of(&http, &n1, "node2").await.as_deref() == Some("up")
    })
    .await;
    let response = put(&http, &n2, "after-copy", "still", "w=all").await;
    assert_eq!(
        response.status(),
        StatusCode::NO_CONTENT,
        "w=all after the copy"
    );
    let response = get(&http, &n3, "after-copy", "r=all").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "still");

    // --- a node that sees no live peer is not ready ---
    n2.kill();
    n3.kill();
    wait_for("node1 sees node2 and node3 down", || async {
        liveness_of(&http, &n1, "node2").await.as_deref() == Some("down")
            && liveness_of(&http, &n1, "node3").await.as_deref() == Some("down")
    })
    .await;
    let ready = http.get(n1.url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
}
