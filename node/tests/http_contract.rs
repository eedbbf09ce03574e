//! The HTTP API's contract against a real cluster in this process: four
//! nodes (the runtime, RocksDB, QUIC with mutual TLS on loopback), N = 3,
//! a bearer token. Every error the contract lists is provoked through the
//! socket, each answer is checked for its status, `application/problem+json`
//! and code, and after each the node still takes a normal put and get. Then
//! the cluster routes: the ring's shares, a key's preference list, and the
//! same list with one of its primaries stopped.
//!
//! One test walks every step, because forming the cluster is the slow part.

// Tests of a real cluster: they bind ports, wait and read the clock.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use chorus_node::api::{BearerToken, PreflistStatus, RingStatus, Service as _};
use chorus_node::engine::EngineConfig;
use chorus_node::http::ProblemBody;
use chorus_node::runtime::{self, HttpOptions, NodeOptions, RunningNode};
use chorus_node::transport::tls::ClusterCa;
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "contract-t0ken";
const NODES: usize = 4;
const MAX_VALUE_BYTES: usize = 4096;

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

struct Cluster {
    nodes: Vec<Option<RunningNode>>,
    /// Sends the token with every request.
    http: reqwest::Client,
    /// Sends no token.
    anonymous: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ca = ClusterCa::generate("contract").expect("a CA");
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let quic: Vec<SocketAddr> = (0..NODES)
            .map(|_| SocketAddr::new(localhost, free_udp_port()))
            .collect();
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let name = format!("node{}", i + 1);
            let mut engine = EngineConfig {
                name: name.clone(),
                replicas: 3,
                partitions: 64,
                initial_members: NODES,
                max_value_bytes: MAX_VALUE_BYTES,
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
                data_dir: dir.path().join(&name),
                quic_listen: quic[i],
                http_listen: SocketAddr::new(localhost, 0),
                identity: ca.issue(&name).expect("a node certificate"),
                unsafe_disable_wal: false,
                object_cache_bytes: chorus_storage::store::DEFAULT_OBJECT_CACHE_BYTES,
                shards_on_io_threads: false,
                http: HttpOptions {
                    token: Some(BearerToken::new(TOKEN).unwrap()),
                    ..HttpOptions::default()
                },
            };
            nodes.push(Some(
                runtime::start(options).await.expect("the node starts"),
            ));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {TOKEN}").parse().unwrap(),
        );
        let cluster = Cluster {
            nodes,
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap(),
            anonymous: reqwest::Client::new(),
            _dir: dir,
        };
        for _ in 0..600 {
            if cluster.nodes.iter().flatten().all(|n| n.handle.is_ready()) {
                return cluster;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the cluster did not form within 60 s");
    }

    fn node(&self, i: usize) -> &RunningNode {
        self.nodes[i].as_ref().expect("a running node")
    }

    fn url(&self, node: usize, path: &str) -> String {
        format!("http://{}{path}", self.node(node).http_addr)
    }

    async fn send(&self, method: Method, path: &str) -> reqwest::Response {
        self.http
            .request(method, self.url(0, path))
            .send()
            .await
            .expect("the node answers")
    }

    /// Node 0 still takes a write and reads it back.
    async fn still_serves(&self, after: &str) {
        let url = self.url(0, "/v1/buckets/b/keys/canary");
        let response = self
            .http
            .put(&url)
            .body(after.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::NO_CONTENT,
            "put after {after}"
        );
        let response = self.http.get(&url).send().await.unwrap();
        assert!(
            matches!(
                response.status(),
                StatusCode::OK | StatusCode::MULTIPLE_CHOICES
            ),
            "get after {after}: {}",
            response.status()
        );
    }

    async fn ring(&self, node: usize) -> RingStatus {
        let response = self
            .http
            .get(self.url(node, "/v1/cluster/ring"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("a ring body")
    }

    async fn preflist(&self, node: usize, key: &str) -> PreflistStatus {
        let path = format!("/v1/cluster/preflist/b/{key}");
        let response = self.http.get(self.url(node, &path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("a preflist body")
    }
}

/// Checks an error answer: status, problem content type, code.
async fn expect_problem(response: reqwest::Response, status: u16, code: &str, what: &str) {
    assert_eq!(response.status().as_u16(), status, "{what}");
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap()),
        Some("application/problem+json"),
        "{what}"
    );
    let body: ProblemBody = response.json().await.expect("a problem body");
    assert_eq!(body.code, code, "{what}");
    assert_eq!(body.status, status, "{what}");
}

/// Sends raw bytes of HTTP/1.1 and returns the whole answer.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_contract_holds_against_a_real_cluster() {
    let mut cluster = Cluster::start().await;
    cluster.still_serves("start").await;
    let auth = format!("Bearer {TOKEN}");

    // Step 1: request errors on the key routes, each followed by a normal put/get.
    let cases: &[(Method, &str, u16, &str)] = &[
        (
            Method::GET,
            "/v1/buckets/b/keys/k?r=abc",
            400,
            "invalid_quorum",
        ),
        (
            Method::DELETE,
            "/v1/buckets/b/keys/k?returnbody=true",
            400,
            "unknown_option",
        ),
        (
            Method::PUT,
            "/v1/buckets/b/keys/k?w=many",
            400,
            "invalid_quorum",
        ),
        (Method::PUT, "/v1/buckets/b/keys/k?w=0", 400, "quorum_zero"),
        (
            Method::PUT,
            "/v1/buckets/b/keys/k?w=4",
            400,
            "quorum_above_n",
        ),
        (
            Method::GET,
            "/v1/buckets/b/keys/k?r=4",
            400,
            "quorum_above_n",
        ),
        (
            Method::DELETE,
            "/v1/buckets/b/keys/k?pw=3",
            400,
            "pw_above_w",
        ),
        // A count above N is named as such before pw <= w or pr <= r.
        (
            Method::PUT,
            "/v1/buckets/b/keys/k?pw=4",
            400,
            "quorum_above_n",
        ),
        (
            Method::GET,
            "/v1/buckets/b/keys/k?pr=4",
            400,
            "quorum_above_n",
        ),
        (
            Method::GET,
            "/v1/buckets/b/keys/k?nope=1",
            400,
            "unknown_option",
        ),
        (
            Method::GET,
            "/v1/cluster/status?verbose=1",
            400,
            "unknown_option",
        ),
        (Method::GET, "/metrics?name=x", 400, "unknown_option"),
        (Method::GET, "/v1/buckets/b/keys/%FF", 400, "invalid_key"),
        (Method::GET, "/v1/buckets/%C3%28/keys/k", 400, "invalid_key"),
        (Method::GET, "/v1/nothing", 404, "no_route"),
        (Method::GET, "/v1/buckets/b/keys/a/b", 404, "no_route"),
        (Method::GET, "/v1/buckets/b/keys/", 404, "no_route"),
        (Method::GET, "/v1/buckets//keys/k", 400, "invalid_key"),
        (
            Method::GET,
            "/v1/buckets/b/keys/never-written",
            404,
            "not_found",
        ),
    ];
    for (method, path, status, code) in cases {
        let what = format!("{method} {path}");
        expect_problem(
            cluster.send(method.clone(), path).await,
            *status,
            code,
            &what,
        )
        .await;
        cluster.still_serves(&what).await;
    }

    // Oversized bucket and key.
    let long_bucket = format!("/v1/buckets/{}/keys/k", "b".repeat(256));
    expect_problem(
        cluster.send(Method::GET, &long_bucket).await,
        400,
        "invalid_key",
        "long bucket",
    )
    .await;
    cluster.still_serves("long bucket").await;

    // A key too long for a URI (the http crate caps URIs at 64 KiB, below
    // the key limit): refused by the HTTP parser with 414, no body.
    let request = format!(
        "GET /v1/buckets/b/keys/{} HTTP/1.1\r\nHost: test\r\nAuthorization: {auth}\r\n\
         Connection: close\r\n\r\n",
        "k".repeat(70_000)
    );
    let answer = raw(cluster.node(0).http_addr, request.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 414"),
        "{}",
        answer.lines().next().unwrap_or_default()
    );
    cluster.still_serves("long key").await;

    // Step 2: malformed and oversized contexts.
    let key = cluster.url(0, "/v1/buckets/b/keys/k");
    let contexts: [(String, &str); 4] = [
        ("not base64!".to_owned(), "context_not_base64"),
        ("Ag".to_owned(), "context_truncated"),
        ("A".repeat(20_000), "context_too_long"),
        // A token sealed for another key.
        (String::new(), "context_forged"),
    ];
    let other = cluster
        .http
        .put(cluster.url(0, "/v1/buckets/b/keys/other"))
        .body("x")
        .send()
        .await
        .unwrap();
    let foreign = other.headers()["x-chorus-context"]
        .to_str()
        .unwrap()
        .to_owned();
    for (token, code) in contexts {
        let token = if token.is_empty() {
            foreign.clone()
        } else {
            token
        };
        let response = cluster
            .http
            .put(&key)
            .header("x-chorus-context", &token)
            .body("v")
            .send()
            .await
            .unwrap();
        expect_problem(response, 400, code, code).await;
        cluster.still_serves(code).await;
    }

    // Step 3: oversized bodies, with a length and chunked without one.
    let response = cluster
        .http
        .put(&key)
        .body(vec![7; MAX_VALUE_BYTES + 1])
        .send()
        .await
        .unwrap();
    expect_problem(response, 413, "value_too_large", "declared length").await;
    cluster.still_serves("declared length").await;
    let mut request = format!(
        "PUT /v1/buckets/b/keys/k HTTP/1.1\r\nHost: test\r\nAuthorization: {auth}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for _ in 0..(MAX_VALUE_BYTES / 0x400 + 1) {
        request.push_str(&format!("400\r\n{}\r\n", "x".repeat(0x400)));
    }
    request.push_str("0\r\n\r\n");
    let answer = raw(cluster.node(0).http_addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(answer.contains("\"code\":\"value_too_large\""), "{answer}");
    cluster.still_serves("chunked").await;

    // Step 4: a method a path does not allow.
    let response = cluster.send(Method::POST, "/v1/buckets/b/keys/k").await;
    assert_eq!(response.headers()["allow"], "GET,HEAD,PUT,DELETE");
    expect_problem(response, 405, "method_not_allowed", "POST key").await;
    let response = cluster.send(Method::PUT, "/v1/cluster/ring").await;
    assert_eq!(response.headers()["allow"], "GET,HEAD");
    expect_problem(response, 405, "method_not_allowed", "PUT ring").await;
    cluster.still_serves("405").await;

    // Step 5: missing or wrong bearer token; the probes need none.
    for path in [
        "/v1/buckets/b/keys/k",
        "/v1/cluster/ring",
        "/v1/cluster/status",
        "/metrics",
        "/v1/openapi.json",
    ] {
        let response = cluster
            .anonymous
            .get(cluster.url(0, path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"chorus\""
        );
        expect_problem(response, 401, "unauthorized", path).await;
        let response = cluster
            .anonymous
            .get(cluster.url(0, path))
            .header("authorization", "Bearer wrong")
            .send()
            .await
            .unwrap();
        expect_problem(response, 401, "unauthorized", path).await;
        cluster.still_serves(path).await;
    }
    for path in ["/livez", "/readyz"] {
        let response = cluster
            .anonymous
            .get(cluster.url(0, path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }

    // Step 6: the ring. Every partition has N primaries and an owner; the
    // ranges tile the hash space; the owners' shares add up to 100 %.
    let ring = cluster.ring(0).await;
    assert_eq!(ring.replicas, 3);
    assert_eq!(ring.partition_count, 64);
    assert_eq!(ring.partitions.len(), 64);
    assert_eq!(ring.members.len(), NODES);
    let owns: f64 = ring.members.iter().map(|m| m.owns_percent).sum();
    assert!((owns - 100.0).abs() < 1e-9, "owns adds up to {owns}");
    let effective: f64 = ring.members.iter().map(|m| m.effective_percent).sum();
    assert!(
        (effective - 300.0).abs() < 1e-9,
        "effective adds up to {effective}"
    );
    assert_eq!(
        ring.members
            .iter()
            .map(|m| m.owned_partitions)
            .sum::<usize>(),
        64
    );
    assert!(ring.members.iter().all(|m| m.name.starts_with("node")));
    assert_eq!(ring.partitions[0].start, "0000000000000000");
    assert_eq!(ring.partitions[63].end, "ffffffffffffffff");
    for (i, pair) in ring.partitions.windows(2).enumerate() {
        let end = u64::from_str_radix(&pair[0].end, 16).unwrap();
        let start = u64::from_str_radix(&pair[1].start, 16).unwrap();
        assert_eq!(end + 1, start, "partition {i} and the next");
    }
    for partition in &ring.partitions {
        assert_eq!(partition.primaries.len(), 3);
        assert_eq!(partition.owner.id, partition.primaries[0]);
    }
    let status: serde_json::Value = cluster
        .send(Method::GET, "/v1/cluster/status")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["ring_hash"], ring.hash.as_str());

    // Step 7: a key's preference list: N primaries, all up, no fallback.
    let preflist = cluster.preflist(0, "k").await;
    assert_eq!(preflist.primaries.len(), 3);
    assert!(preflist
        .primaries
        .iter()
        .all(|p| p.up && p.http_addr.is_some()));
    assert!(preflist.fallbacks.is_empty());
    assert_eq!(
        ring.partitions[preflist.partition as usize].primaries,
        preflist.primaries.iter().map(|p| p.id).collect::<Vec<_>>()
    );

    // Step 8: stop one of the key's primaries other than node 0; node 0
    // sees it down, and the fourth node stands in for it.
    let node0 = cluster.node(0).id;
    let stopped = preflist
        .primaries
        .iter()
        .map(|p| p.id)
        .find(|&id| id != node0)
        .unwrap();
    let index = (0..NODES).find(|&i| cluster.node(i).id == stopped).unwrap();
    cluster.nodes[index].take().unwrap().shutdown().await;
    let mut seen = None;
    for _ in 0..600 {
        let preflist = cluster.preflist(0, "k").await;
        if preflist.primaries.iter().any(|p| p.id == stopped && !p.up) {
            seen = Some(preflist);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let preflist = seen.expect("node 0 sees the stopped primary down within 60 s");
    assert_eq!(preflist.primaries.len(), 3);
    assert_eq!(preflist.fallbacks.len(), 1, "{preflist:?}");
    let fallback = &preflist.fallbacks[0];
    assert_eq!(fallback.stands_in_for, Some(stopped));
    assert!(fallback.up);
    assert!(!preflist.primaries.iter().any(|p| p.id == fallback.id));
    // With sloppy=false nothing stands in.
    let response = cluster
        .send(Method::GET, "/v1/cluster/preflist/b/k?sloppy=false")
        .await;
    let strict: PreflistStatus = response.json().await.unwrap();
    assert!(strict.fallbacks.is_empty() && !strict.sloppy);
    cluster.still_serves("a primary stopped").await;

    for node in cluster.nodes.into_iter().flatten() {
        node.shutdown().await;
    }
}
