//! The promise over HTTP: a 3-node cluster in this process (the runtime,
//! RocksDB, QUIC with mutual TLS on loopback), driven through the HTTP API
//! the way a user would, with the failing inputs of the first review:
//!
//! * F1 — a write's context covers only what its writer saw;
//! * F4, F5 — context tokens are bound to their key and authenticated;
//! * F6 — limits hold end to end (8 MiB siblings replicate and read back,
//!   a write that would grow the object past the limit is refused);
//! * F8 — a DELETE without a context deletes what it reads.
//!
//! One test walks every step, because forming the cluster is the slow part.

// Tests of a real cluster: they bind ports, wait and read the clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chorus_node::engine::EngineConfig;
use chorus_node::http::{ProblemBody, SiblingsBody};
use chorus_node::runtime::{self, NodeOptions, RunningNode};
use chorus_node::transport::tls::ClusterCa;
use chorus_storage::context::{CausalContext, ContextKey, CONTEXT_KEY_LEN};
use chorus_storage::version::{ActorId, Dot, VersionVector};
use reqwest::StatusCode;

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

struct Cluster {
    nodes: Vec<RunningNode>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ca = ClusterCa::generate("promise").expect("a CA");
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
                data_dir: dir.path().join(&name),
                quic_listen: quic[i],
                http_listen: SocketAddr::new(localhost, 0),
                identity: ca.issue(&name).expect("a node certificate"),
                unsafe_disable_wal: false,
                object_cache_bytes: chorus_storage::store::DEFAULT_OBJECT_CACHE_BYTES,
                shards_on_io_threads: false,
                http: Default::default(),
            };
            nodes.push(runtime::start(options).await.expect("the node starts"));
        }
        let cluster = Cluster {
            nodes,
            http: reqwest::Client::new(),
            _dir: dir,
        };
        // Ready means a node sees one live peer; the reads here ask every
        // replica (`r=all`), so wait until every node sees all three up.
        common::wait_until_all_up(&cluster.nodes).await;
        cluster
    }

    fn url(&self, node: usize, bucket: &str, key: &str, query: &str) -> String {
        format!(
            "http://{}/v1/buckets/{bucket}/keys/{key}?{query}",
            self.nodes[node].http_addr
        )
    }

    async fn put(
        &self,
        node: usize,
        key: &str,
        value: &[u8],
        context: Option<&str>,
        query: &str,
    ) -> reqwest::Response {
        self.put_in(node, "b", key, value, context, query).await
    }

    async fn put_in(
        &self,
        node: usize,
        bucket: &str,
        key: &str,
        value: &[u8],
        context: Option<&str>,
        query: &str,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .put(self.url(node, bucket, key, query))
            .body(value.to_vec());
        if let Some(context) = context {
            request = request.header("X-Chorus-Context", context);
        }
        request.send().await.expect("the node answers")
    }

    async fn delete(&self, node: usize, key: &str, query: &str) -> reqwest::Response {
        self.http
            .delete(self.url(node, "b", key, query))
            .send()
            .await
            .expect("the node answers")
    }

    /// The live values of `key` read at `r=all`, sorted, as JSON.
    async fn values(&self, node: usize, key: &str) -> Vec<Vec<u8>> {
        let response = self
            .http
            .get(self.url(node, "b", key, "r=all"))
            .header("Accept", "application/json")
            .send()
            .await
            .expect("the node answers");
        if response.status() == StatusCode::NOT_FOUND {
            return Vec::new();
        }
        assert_eq!(response.status(), StatusCode::OK);
        let body: SiblingsBody = response.json().await.expect("a siblings body");
        let mut values: Vec<Vec<u8>> = body
            .siblings
            .iter()
            .map(|s| STANDARD.decode(&s.value).expect("base64"))
            .collect();
        values.sort();
        values
    }

    async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
    }
}

fn context_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-chorus-context")
        .unwrap_or_else(|| panic!("no context on a {}", response.status()))
        .to_str()
        .expect("ASCII")
        .to_owned()
}

async fn code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: ProblemBody = response.json().await.expect("a problem body");
    (status, body.code)
}

fn strings(values: &[&str]) -> Vec<Vec<u8>> {
    values.iter().map(|v| v.as_bytes().to_vec()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_promise_holds_over_http() {
    let cluster = Cluster::start().await;

    // F1: two writers through two nodes; the second writes again with the
    // context its first write returned. The first writer's value stays.
    let apple = cluster.put(0, "cart", b"apple", None, "w=all").await;
    assert_eq!(apple.status(), StatusCode::NO_CONTENT);
    let banana = cluster.put(1, "cart", b"banana", None, "w=all").await;
    assert_eq!(banana.status(), StatusCode::NO_CONTENT);
    let token = context_of(&banana);
    let banana2 = cluster
        .put(1, "cart", b"banana2", Some(&token), "w=all")
        .await;
    assert_eq!(banana2.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        cluster.values(2, "cart").await,
        strings(&["apple", "banana2"])
    );

    // `returnbody=true` answers like a read, with a context that resolves.
    let body = cluster
        .put(2, "cart", b"cherry", None, "w=all&returnbody=true")
        .await;
    assert_eq!(body.status(), StatusCode::MULTIPLE_CHOICES);
    let merged = context_of(&body);
    let shown: SiblingsBody = body.json().await.expect("siblings");
    assert_eq!(shown.siblings.len(), 3);
    let resolved = cluster
        .put(0, "cart", b"fruit", Some(&merged), "w=all")
        .await;
    assert_eq!(resolved.status(), StatusCode::NO_CONTENT);
    assert_eq!(cluster.values(1, "cart").await, strings(&["fruit"]));

    // F4: a token is bound to its key and bucket, and authenticated.
    let ka = cluster.put(0, "ka", b"a", None, "w=all").await;
    let ka_token = context_of(&ka);
    assert_eq!(
        cluster.put(0, "kb", b"b", None, "w=all").await.status(),
        StatusCode::NO_CONTENT
    );
    let foreign = cluster.put(1, "kb", b"b2", Some(&ka_token), "w=all").await;
    assert_eq!(
        code(foreign).await,
        (StatusCode::BAD_REQUEST, "context_forged".into())
    );
    let other_bucket = cluster
        .put_in(1, "b2", "ka", b"x", Some(&ka_token), "w=all")
        .await;
    assert_eq!(
        code(other_bucket).await,
        (StatusCode::BAD_REQUEST, "context_forged".into())
    );
    let mut flipped = URL_SAFE_NO_PAD.decode(&ka_token).expect("base64url");
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    let altered = cluster
        .put(
            1,
            "ka",
            b"x",
            Some(&URL_SAFE_NO_PAD.encode(&flipped)),
            "w=all",
        )
        .await;
    assert_eq!(altered.status(), StatusCode::BAD_REQUEST);
    assert_eq!(cluster.values(2, "kb").await, strings(&["b"]));
    assert_eq!(cluster.values(2, "ka").await, strings(&["a"]));

    // F5: a crafted context (hundreds of made-up actors, or a counter in
    // the future) cannot be sealed without the cluster's secret.
    let crafted: VersionVector = (1..=300u64)
        .map(|a| (ActorId(a), 1))
        .chain([(ActorId(1_000), u64::MAX >> 1)])
        .collect();
    let stranger = ContextKey::new([9; CONTEXT_KEY_LEN]);
    let poison = stranger.seal(b"b", b"ka", &CausalContext::new(crafted));
    let refused = cluster.put(0, "ka", b"p", Some(&poison), "w=all").await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let dotted = stranger.seal(
        b"b",
        b"ka",
        &CausalContext::with_dots(VersionVector::new(), [Dot::new(ActorId(5), 5)]),
    );
    let refused = cluster.put(0, "ka", b"p", Some(&dotted), "w=all").await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    // The key's context did not grow: a read's token is as short as before.
    let read = cluster
        .http
        .get(cluster.url(0, "b", "ka", "r=all"))
        .send()
        .await
        .expect("answers");
    assert!(context_of(&read).len() < 200, "{}", context_of(&read));

    // F6: two 8 MiB siblings are stored, replicated and read remotely; a
    // third, which would take the object past the write limit, is refused.
    let big_a = vec![b'a'; 8 << 20];
    let big_b = vec![b'b'; 8 << 20];
    let big_c = vec![b'c'; 8 << 20];
    let first = cluster.put(0, "big", &big_a, None, "w=all").await;
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    let second = cluster
        .put(1, "big", &big_b, None, "w=all&timeout=30000")
        .await;
    assert_eq!(second.status(), StatusCode::NO_CONTENT);
    assert_eq!(cluster.values(2, "big").await, vec![big_a, big_b]);
    let third = cluster
        .put(2, "big", &big_c, None, "w=all&timeout=30000")
        .await;
    assert_eq!(
        code(third).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "object_too_large".into())
    );

    // F8: a DELETE without a context deletes what it reads.
    let put = cluster.put(0, "blinddel", b"v1", None, "w=all").await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let deleted = cluster.delete(1, "blinddel", "w=all&r=all").await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(cluster.values(2, "blinddel").await, Vec::<Vec<u8>>::new());
    let again = cluster.delete(2, "blinddel", "w=all&r=all").await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    assert!(again.headers().get("x-chorus-context").is_some());
    let never = cluster.delete(0, "never-written", "").await;
    assert_eq!(
        code(never).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );

    cluster.shutdown().await;
}
