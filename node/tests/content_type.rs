//! A value's `Content-Type` end to end: a 3-node cluster in this process
//! (the runtime, RocksDB, QUIC with mutual TLS on loopback) that keeps two
//! replicas of each key, so one of the three nodes is not a replica of a
//! given key and forwards the writes it takes to one that is.
//!
//! One test walks every step, because forming the cluster is the slow part.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chorus_node::http::{ProblemBody, SiblingsBody};
use chorus_node::runtime::RunningNode;
use chorus_node::transport::tls::ClusterCa;
use reqwest::StatusCode;

/// Replicas of each key: fewer than the nodes, so writes get forwarded.
const REPLICAS: usize = 2;

struct Cluster {
    nodes: Vec<RunningNode>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ca = ClusterCa::generate("content-type").expect("a CA");
        let nodes = common::start_nodes(dir.path(), &ca, 3, |_, options| {
            options.engine.replicas = REPLICAS;
        })
        .await;
        Cluster {
            nodes,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    fn url(&self, node: usize, key: &str, query: &str) -> String {
        format!(
            "http://{}/v1/buckets/docs/keys/{key}?{query}",
            self.nodes[node].http_addr
        )
    }

    /// A blind `PUT` at `w=1` through `node`, with `content_type` if any.
    async fn put(
        &self,
        node: usize,
        key: &str,
        value: &[u8],
        content_type: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .put(self.url(node, key, "w=1"))
            .body(value.to_vec());
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        request.send().await.expect("the node answers")
    }

    /// A `GET` at `r=all` through `node`, as JSON when `json`.
    async fn get(&self, node: usize, key: &str, json: bool) -> reqwest::Response {
        let mut request = self.http.get(self.url(node, key, "r=all"));
        if json {
            request = request.header("Accept", "application/json");
        }
        request.send().await.expect("the node answers")
    }

    async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
    }
}

fn content_type(response: &reqwest::Response) -> Option<&str> {
    response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().expect("ASCII"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_type_is_stored_replicated_and_read_back() {
    let cluster = Cluster::start().await;

    // One value written at w=1 through one node: every node reads it back,
    // at r=all, with the type it was written with.
    let put = cluster
        .put(0, "one", br#"{"a":1}"#, Some("application/json"))
        .await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    for node in 0..3 {
        let got = cluster.get(node, "one", false).await;
        assert_eq!(got.status(), StatusCode::OK, "through node {node}");
        assert_eq!(
            content_type(&got),
            Some("application/json"),
            "through node {node}"
        );
        assert_eq!(got.bytes().await.expect("a body").as_ref(), br#"{"a":1}"#);
    }

    // Three blind writes of one key, one through each node: two of the
    // nodes are its replicas and the third forwards its write. Each of the
    // three siblings keeps its own type (none for the last).
    let writes: [(&[u8], Option<&str>); 3] = [
        (b"{}", Some("application/json; charset=utf-8")),
        (b"<a/>", Some("application/xml")),
        (b"raw", None),
    ];
    for (node, (value, content_type)) in writes.iter().enumerate() {
        let put = cluster.put(node, "three", value, *content_type).await;
        assert_eq!(put.status(), StatusCode::NO_CONTENT, "through node {node}");
    }
    let mut expected: Vec<(Vec<u8>, Option<String>)> = writes
        .iter()
        .map(|(value, t)| (value.to_vec(), t.map(str::to_owned)))
        .collect();
    expected.sort();
    for node in 0..3 {
        let got = cluster.get(node, "three", false).await;
        assert_eq!(
            got.status(),
            StatusCode::MULTIPLE_CHOICES,
            "through node {node}"
        );
        let body: SiblingsBody = got.json().await.expect("a siblings body");
        let mut siblings: Vec<(Vec<u8>, Option<String>)> = body
            .siblings
            .into_iter()
            .map(|s| (STANDARD.decode(&s.value).expect("base64"), s.content_type))
            .collect();
        siblings.sort();
        assert_eq!(siblings, expected, "through node {node}");
    }

    // An over-long or malformed content type is refused, and the node
    // keeps serving.
    for bad in [format!("text/{}", "x".repeat(252)), "json".to_owned()] {
        let refused = cluster.put(1, "bad", b"v", Some(&bad)).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        let problem: ProblemBody = refused.json().await.expect("a problem body");
        assert_eq!(problem.code, "invalid_content_type");
    }
    assert_eq!(
        cluster.get(1, "bad", false).await.status(),
        StatusCode::NOT_FOUND
    );
    let put = cluster.put(1, "bad", b"v", Some("text/plain")).await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let got = cluster.get(2, "bad", false).await;
    assert_eq!(content_type(&got), Some("text/plain"));

    cluster.shutdown().await;
}
