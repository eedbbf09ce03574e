//! The Rust client (`chorus-client`) against a 3-node cluster in this
//! process: the whole life of a key — put, concurrent puts that become
//! siblings, a resolving write, a delete, a read of the deleted key — and
//! the error codes a client sees, through the client's API only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use chorus_client::{Client, Deleted, Read, RequestOptions, Value};
use chorus_node::api::Service as _;
use chorus_node::engine::EngineConfig;
use chorus_node::runtime::{self, NodeOptions, RunningNode};
use chorus_node::transport::tls::ClusterCa;

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

async fn start_cluster(dir: &std::path::Path) -> Vec<RunningNode> {
    let ca = ClusterCa::generate("client").expect("a CA");
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let quic: Vec<SocketAddr> = (0..3)
        .map(|_| SocketAddr::new(localhost, free_udp_port()))
        .collect();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let name = format!("node{}", i + 1);
        let mut engine = EngineConfig {
            name: name.clone(),
            ..EngineConfig::default()
        };
        engine.gossip.seeds = quic
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, a)| *a)
            .collect();
        let options = NodeOptions {
            engine,
            data_dir: dir.join(&name),
            quic_listen: quic[i],
            http_listen: SocketAddr::new(localhost, 0),
            identity: ca.issue(&name).expect("a node certificate"),
            http: Default::default(),
            unsafe_disable_wal: false,
        };
        nodes.push(runtime::start(options).await.expect("the node starts"));
    }
    for _ in 0..600 {
        if nodes.iter().all(|n| n.handle.is_ready()) {
            return nodes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the cluster did not form within 60 s");
}

/// The scenario every transport must pass, with its error codes.
async fn scenario(a: &Client, b: &Client) {
    let options = RequestOptions::default();
    let all = RequestOptions {
        r: chorus_client::Quorum::All,
        w: chorus_client::Quorum::All,
        ..RequestOptions::default()
    };

    // A first write and its read.
    let first = a
        .put("users", "ada/1", Value::from("v1"), None, &all)
        .await
        .expect("a first write");
    let Read::Found(found) = a.get("users", "ada/1", &all).await.expect("a read") else {
        panic!("the key is there");
    };
    assert_eq!(found.value(), Some(&b"v1"[..]));

    // Two writes with the same context from two clients: siblings.
    let left = a
        .put(
            "users",
            "ada/1",
            Value::from("left"),
            Some(&first.context),
            &all,
        )
        .await
        .unwrap();
    b.put(
        "users",
        "ada/1",
        Value::from("right"),
        Some(&first.context),
        &all,
    )
    .await
    .unwrap();
    let Read::Found(both) = b.get("users", "ada/1", &all).await.unwrap() else {
        panic!("the key is there");
    };
    let mut values: Vec<&[u8]> = both.siblings.iter().map(|s| &s.value[..]).collect();
    values.sort();
    assert_eq!(values, [&b"left"[..], &b"right"[..]]);
    assert!(both.siblings.iter().all(|s| !s.timestamp.is_empty()));

    // A write with one writer's own context replaces only its own write.
    let _ = left;

    // Resolving with the read's context leaves one value.
    b.put(
        "users",
        "ada/1",
        Value::from("merged"),
        Some(&both.context),
        &all,
    )
    .await
    .unwrap();
    let Read::Found(merged) = a.get("users", "ada/1", &all).await.unwrap() else {
        panic!("the key is there");
    };
    assert_eq!(merged.value(), Some(&b"merged"[..]));

    // Delete with the context, then the key reads as not found with a
    // context (its tombstone), and a delete without a context finds nothing.
    let deleted = a
        .delete("users", "ada/1", Some(&merged.context), &all)
        .await
        .unwrap();
    assert!(matches!(deleted, Deleted::Deleted { .. }), "{deleted:?}");
    match b.get("users", "ada/1", &all).await.unwrap() {
        Read::NotFound { context } => assert!(context.is_some(), "a tombstone has a context"),
        other => panic!("expected not found, got {other:?}"),
    }
    assert!(matches!(
        b.delete("users", "ada/1", None, &options).await.unwrap(),
        Deleted::NothingToDelete { .. }
    ));
    assert!(matches!(
        a.get("users", "never-written", &options).await.unwrap(),
        Read::NotFound { context: None }
    ));

    // Errors: each with its stable code, and the node keeps serving.
    let above_n = RequestOptions {
        w: chorus_client::Quorum::Count(4),
        ..RequestOptions::default()
    };
    let error = a
        .put("users", "k", Value::from("x"), None, &above_n)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "quorum_above_n");
    assert_eq!(error.status(), Some(400));
    assert!(!error.may_have_applied());
    let forged = chorus_client::Context::new("AAAA");
    let error = a
        .put("users", "k", Value::from("x"), Some(&forged), &options)
        .await
        .unwrap_err();
    assert!(error.code().starts_with("context_"), "{error}");
    // A context from another key is refused: tokens are bound to their key.
    let error = a
        .put(
            "users",
            "other",
            Value::from("x"),
            Some(&merged.context),
            &options,
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), "context_forged");
    let error = a.get("", "k", &options).await.unwrap_err();
    assert_eq!(error.code(), "invalid_key");
    let big = Value::from(vec![
        0u8;
        chorus_client::limits::DEFAULT_MAX_VALUE_BYTES + 1
    ]);
    let error = a
        .put("users", "big", big, None, &options)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "value_too_large");

    let status = a.status().await.unwrap();
    assert_eq!(status.members.len(), 3);
    let ring = b.ring().await.unwrap();
    assert_eq!(Some(ring.version), status.ring_version);
    let owned: f64 = ring.members.iter().map(|m| m.owns_percent).sum();
    assert!((owned - 100.0).abs() < 1e-6, "{owned}");
    let preflist = a.preflist("users", "ada/1", &options).await.unwrap();
    assert_eq!(preflist.key, "ada/1");
    assert_eq!(preflist.primaries.len(), 3);
    a.put("users", "after", Value::from("ok"), None, &options)
        .await
        .expect("the node still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_life_of_a_key_through_the_http_client() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path()).await;
    let a = Client::http(&format!("http://{}", nodes[0].http_addr)).unwrap();
    let b = Client::builder()
        .endpoint(format!("http://{}", nodes[1].http_addr))
        .endpoint(format!("http://{}", nodes[2].http_addr))
        .build()
        .unwrap();
    scenario(&a, &b).await;
    for node in nodes {
        node.shutdown().await;
    }
}
