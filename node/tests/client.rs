//! The Rust client (`chorus-client`) against a 3-node cluster in this
//! process: the whole life of a key — put, concurrent puts that become
//! siblings, a resolving write, a delete, a read of the deleted key — and
//! the error codes a client sees, through the client's API only, over HTTP
//! and over QUIC. Then the QUIC client protocol's guards: client
//! certificates cannot join the cluster, other CAs' certificates cannot
//! open a client connection, and malformed frames get problem answers.

// Tests of real servers: they bind ports, spawn tasks, wait and read the clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chorus_client::protocol::{self, Operation, Reply, Request, ALPN_CLIENT, SERVER_NAME};
use chorus_client::{Client, ClientTls, Deleted, Read, RequestOptions, Value};
use chorus_node::runtime::RunningNode;
use chorus_node::transport::tls::{self, ClusterCa, NodeIdentity};
use chorus_node::transport::{ALPN_INTERNODE, CLOSE_NOT_A_NODE};

async fn start_cluster(dir: &std::path::Path, ca: &ClusterCa) -> Vec<RunningNode> {
    common::start_nodes(dir, ca, 3, |_, _| {}).await
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
    // Written without a content type: the default, the same on both
    // transports.
    assert_eq!(found.siblings[0].content_type, None);

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

    // A value's content type is stored with it and read back.
    a.put(
        "users",
        "typed",
        Value::from("{}").content_type("application/json"),
        None,
        &all,
    )
    .await
    .unwrap();
    let Read::Found(typed) = b.get("users", "typed", &all).await.unwrap() else {
        panic!("the key is there");
    };
    assert_eq!(
        typed.siblings[0].content_type.as_deref(),
        Some("application/json")
    );
    let error = a
        .put(
            "users",
            "typed",
            Value::from("{}").content_type("json"),
            None,
            &options,
        )
        .await
        .unwrap_err();
    assert_eq!(error.code(), "invalid_content_type");

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
    let nodes = start_cluster(dir.path(), &ClusterCa::generate("client").unwrap()).await;
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

fn client_tls(ca: &ClusterCa, name: &str) -> ClientTls {
    let identity = ca.issue_client(name).expect("a client certificate");
    ClientTls::from_pem(identity.ca_pem, identity.cert_pem, identity.key_pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_life_of_a_key_through_the_quic_client() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate("client").unwrap();
    let nodes = start_cluster(dir.path(), &ca).await;
    let a = Client::quic(nodes[0].quic_addr, client_tls(&ca, "alice")).unwrap();
    let b = Client::builder()
        .quic(nodes[1].quic_addr, client_tls(&ca, "bob"))
        .quic(nodes[2].quic_addr, client_tls(&ca, "bob"))
        .build()
        .unwrap();
    scenario(&a, &b).await;
    // One connection serves every call, also from clones.
    let c = a.clone();
    c.status().await.expect("a clone shares the connection");
    // Requests over QUIC are counted like those over HTTP (only QUIC
    // clients talked to this cluster).
    let metrics = reqwest::get(format!("http://{}/metrics", nodes[0].http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        r#"chorus_requests_total{operation="put",consistency="all",outcome="ok"}"#,
        r#"chorus_requests_total{operation="put",consistency="custom",outcome="quorum_above_n"}"#,
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    for node in nodes {
        node.shutdown().await;
    }
}

/// A QUIC connection on the client ALPN made by hand, presenting `identity`.
async fn raw_client(identity: &NodeIdentity, to: std::net::SocketAddr) -> quinn::Connection {
    let config = tls::client_config(identity, ALPN_CLIENT).expect("client config");
    let config = quinn::crypto::rustls::QuicClientConfig::try_from(config).expect("quic config");
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(config)));
    endpoint
        .connect(to, SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake")
}

/// Sends raw bytes on a new stream and reads the one reply frame.
async fn exchange(connection: &quinn::Connection, bytes: &[u8]) -> Reply {
    let (mut send, mut recv) = connection.open_bi().await.expect("a stream");
    // The node may refuse the rest of an oversized frame; the answer counts.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix).await.expect("a reply prefix");
    let len = protocol::body_len(prefix, protocol::MAX_REPLY_BYTES).expect("a sane reply");
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.expect("a reply body");
    protocol::decode_reply(&body).expect("a reply")
}

fn problem_code(reply: &Reply) -> (u16, &str) {
    match reply {
        Reply::Problem(problem) => (problem.status, problem.code.as_str()),
        other => panic!("expected a problem, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_problem_answers_and_the_connection_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate("frames").unwrap();
    let nodes = start_cluster(dir.path(), &ca).await;
    let client = ca.issue_client("raw").unwrap();
    let identity = NodeIdentity {
        cert_pem: client.cert_pem,
        key_pem: client.key_pem,
        ca_pem: client.ca_pem,
        context_key: ca.context_key().clone(),
    };
    let connection = raw_client(&identity, nodes[0].quic_addr).await;

    // Garbage in a well-formed length.
    let mut garbage = 5u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(b"hello");
    assert_eq!(
        problem_code(&exchange(&connection, &garbage).await),
        (400, "malformed_request")
    );
    // A stream that ends inside its frame.
    let mut short = 100u32.to_be_bytes().to_vec();
    short.extend_from_slice(b"abc");
    assert_eq!(
        problem_code(&exchange(&connection, &short).await),
        (400, "malformed_request")
    );
    // A length over the limit, with no body behind it: refused from the
    // prefix alone.
    let huge = u32::MAX.to_be_bytes();
    assert_eq!(
        problem_code(&exchange(&connection, &huge).await),
        (413, "value_too_large")
    );
    // A version this node does not speak.
    let mut future = Request::new(Operation::Status);
    future.version = 2;
    assert_eq!(
        problem_code(&exchange(&connection, &protocol::encode(&future)).await),
        (400, "unsupported_version")
    );
    // Two frames on one stream.
    let mut two = protocol::encode(&Request::new(Operation::Status));
    two.extend_from_slice(&two.clone());
    assert_eq!(
        problem_code(&exchange(&connection, &two).await),
        (400, "malformed_request")
    );
    // Errors of the service come back as over HTTP.
    let above_n = Request::new(Operation::Get {
        bucket: "b".into(),
        key: "k".into(),
        options: RequestOptions {
            r: chorus_client::Quorum::Count(4),
            ..RequestOptions::default()
        },
    });
    assert_eq!(
        problem_code(&exchange(&connection, &protocol::encode(&above_n)).await),
        (400, "quorum_above_n")
    );
    // `returnbody` is a put's option only, as over HTTP.
    let returning = RequestOptions {
        return_body: true,
        ..RequestOptions::default()
    };
    let delete = Request::new(Operation::Delete {
        bucket: "b".into(),
        key: "k".into(),
        context: None,
        options: returning,
    });
    assert_eq!(
        problem_code(&exchange(&connection, &protocol::encode(&delete)).await),
        (400, "unknown_option")
    );
    // `.` and `..` are refused as names, as over HTTP (where clients
    // would drop them from the path).
    let dot = Request::new(Operation::Get {
        bucket: "b".into(),
        key: "..".into(),
        options: RequestOptions::default(),
    });
    assert_eq!(
        problem_code(&exchange(&connection, &protocol::encode(&dot)).await),
        (400, "invalid_key")
    );
    // The same connection still serves.
    match exchange(
        &connection,
        &protocol::encode(&Request::new(Operation::Status)),
    )
    .await
    {
        Reply::Status(status) => assert_eq!(status.members.len(), 3),
        other => panic!("expected the status, got {other:?}"),
    }
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_cannot_join_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate("roles").unwrap();
    let nodes = start_cluster(dir.path(), &ca).await;
    let client = ca.issue_client("intruder").unwrap();
    // An internode endpoint that presents the client certificate.
    let intruder = NodeIdentity {
        cert_pem: client.cert_pem,
        key_pem: client.key_pem,
        ca_pem: client.ca_pem,
        context_key: ca.context_key().clone(),
    };
    // A raw internode handshake with it: TLS completes on the client's
    // side, then the node closes the connection as not a node's, before it
    // reads any frame.
    let config = tls::client_config(&intruder, ALPN_INTERNODE).expect("client config");
    let config = quinn::crypto::rustls::QuicClientConfig::try_from(config).expect("quic config");
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(config)));
    let connection = endpoint
        .connect(nodes[0].quic_addr, SERVER_NAME)
        .expect("connect")
        .await
        .expect("the client side of the handshake completes");
    if let Ok(mut stream) = connection.open_uni().await {
        let _ = stream.write_all(b"gossip").await;
        let _ = stream.finish();
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), connection.closed())
        .await
        .expect("closed by the node, not left to time out");
    match &closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, CLOSE_NOT_A_NODE, "{closed:?}");
            assert_eq!(&close.reason[..], b"not a node certificate");
        }
        other => panic!("expected the node to close the connection, got {other:?}"),
    }
    // The same certificate is welcome on the client ALPN.
    let status = Client::quic(nodes[0].quic_addr, client_tls(&ca, "intruder"))
        .unwrap()
        .status()
        .await
        .expect("a client of the cluster");
    assert_eq!(status.members.len(), 3, "nobody joined");
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_another_ca_cannot_open_a_client_connection() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate("ours").unwrap();
    let nodes = start_cluster(dir.path(), &ca).await;
    let theirs = ClusterCa::generate("theirs").unwrap();
    let stranger = theirs.issue("node1").unwrap();
    // The stranger trusts our CA, so only the node's check can refuse it.
    let tls = ClientTls::from_pem(ca.cert_pem(), stranger.cert_pem, stranger.key_pem);
    let client = Client::builder()
        .quic(nodes[0].quic_addr, tls)
        .retries(0)
        .build()
        .unwrap();
    let error = client.status().await.expect_err("refused");
    assert_eq!(error.code(), "transport", "{error}");
    assert!(
        error.to_string().contains("certificate") || error.to_string().contains("alert"),
        "refused by the TLS handshake, not a timeout: {error}"
    );
    // A node certificate of our own CA is accepted on the client ALPN.
    let ours = ca.issue("operator").unwrap();
    let ours = ClientTls::from_pem(ours.ca_pem, ours.cert_pem, ours.key_pem);
    Client::quic(nodes[0].quic_addr, ours)
        .unwrap()
        .status()
        .await
        .expect("our own node certificate is trusted");
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_on_a_silent_quic_address_share_one_connect_timeout() {
    // A UDP socket that never answers: every handshake times out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let ca = ClusterCa::generate("silent").unwrap();
    let client = Client::builder()
        .quic(silent.local_addr().unwrap(), client_tls(&ca, "waiter"))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let mut gets = tokio::task::JoinSet::new();
    for i in 0..16 {
        let client = client.clone();
        gets.spawn(async move {
            client
                .get("b", &format!("k{i}"), &RequestOptions::default())
                .await
        });
    }
    while let Some(result) = gets.join_next().await {
        let error = result.unwrap().expect_err("nothing answers");
        assert_eq!(error.code(), "transport", "{error}");
        assert!(!error.may_have_applied(), "{error}");
    }
    // Taking turns, 16 requests would wait 16 × 500 ms; sharing the
    // attempt in progress, about one or two timeouts.
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(4), "{waited:?}");
}

/// A node that stops answering (a paused process: the kernel still
/// accepts its connections) fails an HTTP call once the request's own
/// timeout and the client's grace have passed, rather than hanging it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_node_that_never_answers_fails_the_call_after_its_timeout() {
    // Accepts connections and reads nothing, answers nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        loop {
            let (connection, _) = listener.accept().await.unwrap();
            connections.push(connection);
        }
    });
    let client = Client::builder().endpoint(url).retries(0).build().unwrap();
    let options = RequestOptions {
        timeout_ms: 1,
        ..RequestOptions::default()
    };
    let call = client.get("b", "k", &options);
    assert_no_answer_in_time(call).await;
    held.abort();
}

/// The same over QUIC: a node that takes the request's stream and never
/// answers, while its connection stays alive (its endpoint still
/// acknowledges packets), fails the call once the request's timeout and
/// the client's grace have passed, rather than holding it as long as the
/// connection lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quic_node_that_never_answers_fails_the_call_after_its_timeout() {
    let ca = ClusterCa::generate("silent").unwrap();
    let identity = ca.issue("silent").unwrap();
    let config = tls::server_config(&identity, ALPN_CLIENT).expect("server config");
    let config = quinn::crypto::rustls::QuicServerConfig::try_from(config).expect("quic config");
    let endpoint = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(config)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .expect("endpoint");
    let addr = endpoint.local_addr().unwrap();
    // Accepts the connection and its streams, reads nothing, answers nothing.
    let held = tokio::spawn(async move {
        let mut streams = Vec::new();
        while let Some(incoming) = endpoint.accept().await {
            let Ok(connection) = incoming.await else {
                continue;
            };
            while let Ok(stream) = connection.accept_bi().await {
                streams.push(stream);
            }
        }
    });
    let client = Client::builder()
        .quic(addr, client_tls(&ca, "waiter"))
        .retries(0)
        .build()
        .unwrap();
    let options = RequestOptions {
        timeout_ms: 1,
        ..RequestOptions::default()
    };
    let call = client.get("b", "k", &options);
    assert_no_answer_in_time(call).await;
    held.abort();
}

/// Awaits `call` (a read with a 1 ms timeout of a node that never answers):
/// it must end by itself as a `transport` failure that may have applied.
async fn assert_no_answer_in_time<T: std::fmt::Debug>(
    call: impl std::future::Future<Output = Result<T, chorus_client::Error>>,
) {
    let error = tokio::time::timeout(chorus_client::ANSWER_GRACE * 4, call)
        .await
        .expect("the call ends by itself")
        .expect_err("nothing answers");
    assert_eq!(error.code(), "transport", "{error}");
    assert!(error.to_string().contains("no answer within"), "{error}");
    assert!(error.may_have_applied(), "{error}");
}
