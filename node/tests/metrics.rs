//! `GET /metrics` on a 3-node cluster in this process (the runtime,
//! RocksDB, QUIC with mutual TLS on loopback): the exposition parses as
//! Prometheus text, the named counters and histograms move by exactly the
//! requests made, and each node reports only its own requests although all
//! three share the process.

mod common;

use std::collections::BTreeSet;

use chorus_node::runtime::RunningNode;
use chorus_node::transport::tls::ClusterCa;
use prometheus_parse::{Scrape, Value};
use reqwest::StatusCode;

struct Cluster {
    nodes: Vec<RunningNode>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ca = ClusterCa::generate("metrics").expect("a CA");
        let nodes = common::start_nodes(dir.path(), &ca, 3, |_, _| {}).await;
        Cluster {
            nodes,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    fn url(&self, node: usize, key: &str, query: &str) -> String {
        format!(
            "http://{}/v1/buckets/b/keys/{key}?{query}",
            self.nodes[node].http_addr
        )
    }

    async fn get(&self, node: usize, key: &str, query: &str) -> StatusCode {
        self.http
            .get(self.url(node, key, query))
            .send()
            .await
            .expect("the node answers")
            .status()
    }

    async fn put(&self, node: usize, key: &str, value: &str, query: &str) -> StatusCode {
        self.http
            .put(self.url(node, key, query))
            .body(value.to_owned())
            .send()
            .await
            .expect("the node answers")
            .status()
    }

    async fn delete(&self, node: usize, key: &str) -> StatusCode {
        self.http
            .delete(self.url(node, key, ""))
            .send()
            .await
            .expect("the node answers")
            .status()
    }

    /// Scrapes a node's `/metrics` and parses it.
    async fn scrape(&self, node: usize) -> Scrape {
        let response = self
            .http
            .get(format!("http://{}/metrics", self.nodes[node].http_addr))
            .send()
            .await
            .expect("the node answers");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = response.text().await.expect("a body");
        Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("Prometheus text")
    }

    async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
    }
}

/// The samples of `metric` whose labels include `labels`.
fn samples<'a>(
    scrape: &'a Scrape,
    metric: &'a str,
    labels: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = &'a prometheus_parse::Sample> + 'a {
    scrape.samples.iter().filter(move |sample| {
        sample.metric == metric
            && labels
                .iter()
                .all(|(name, value)| sample.labels.get(name) == Some(*value))
    })
}

/// The sum of the counter, gauge or untyped (a histogram's `_count` and
/// `_sum`) samples of `metric` with `labels`; 0 when there are none.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples(scrape, metric, labels)
        .map(|sample| match &sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{metric} is not a single value: {other:?}"),
        })
        .sum()
}

/// The count of the histogram `metric`'s bucket `le` (labels without `le`).
fn bucket(scrape: &Scrape, metric: &str, labels: &[(&str, &str)], le: f64) -> f64 {
    samples(scrape, metric, labels)
        .map(|sample| match &sample.value {
            Value::Histogram(buckets) => {
                buckets
                    .iter()
                    .find(|b| b.less_than == le)
                    .unwrap_or_else(|| panic!("{metric} has no bucket le={le}"))
                    .count
            }
            other => panic!("{metric} is not a histogram: {other:?}"),
        })
        .sum()
}

/// How much every named series moved between two scrapes.
struct Moved<'a> {
    before: &'a Scrape,
    after: &'a Scrape,
}

impl Moved<'_> {
    fn by(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        value(self.after, metric, labels) - value(self.before, metric, labels)
    }

    fn bucket(&self, metric: &str, labels: &[(&str, &str)], le: f64) -> f64 {
        bucket(self.after, metric, labels, le) - bucket(self.before, metric, labels, le)
    }
}

fn request(
    operation: &'static str,
    consistency: &'static str,
    outcome: &'static str,
) -> [(&'static str, &'static str); 3] {
    [
        ("operation", operation),
        ("consistency", consistency),
        ("outcome", outcome),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_each_nodes_own_requests() {
    let cluster = Cluster::start().await;
    let before = cluster.scrape(0).await;
    let other_before = cluster.scrape(1).await;

    // On node 1: puts, gets at two consistency levels, a not-found, a bad
    // option, two blind writes of one key (siblings), a delete.
    assert_eq!(cluster.put(0, "k", "v", "").await, StatusCode::NO_CONTENT);
    assert_eq!(cluster.get(0, "k", "").await, StatusCode::OK);
    assert_eq!(cluster.get(0, "k", "r=one").await, StatusCode::OK);
    assert_eq!(cluster.get(0, "k", "r=2").await, StatusCode::OK);
    assert_eq!(cluster.get(0, "missing", "").await, StatusCode::NOT_FOUND);
    assert_eq!(cluster.get(0, "k", "r=most").await, StatusCode::BAD_REQUEST);
    assert_eq!(
        cluster.put(0, "s", "a", "w=all").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        cluster.put(0, "s", "b", "w=all").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        cluster.get(0, "s", "r=all").await,
        StatusCode::MULTIPLE_CHOICES
    );
    assert_eq!(cluster.delete(0, "k").await, StatusCode::NO_CONTENT);

    let after = cluster.scrape(0).await;
    let moved = Moved {
        before: &before,
        after: &after,
    };
    let requests = "chorus_requests_total";
    let expected = [
        (request("put", "quorum", "ok"), 1.0),
        (request("put", "all", "ok"), 2.0),
        (request("get", "quorum", "ok"), 1.0),
        (request("get", "one", "ok"), 1.0),
        (request("get", "custom", "ok"), 1.0),
        (request("get", "quorum", "not_found"), 1.0),
        (request("get", "unknown", "invalid_quorum"), 1.0),
        (request("get", "all", "siblings"), 1.0),
        (request("delete", "quorum", "ok"), 1.0),
    ];
    for (labels, count) in &expected {
        assert_eq!(moved.by(requests, labels), *count, "{requests} {labels:?}");
        assert_eq!(
            moved.by("chorus_request_duration_seconds_count", labels),
            *count,
            "latency samples {labels:?}"
        );
    }
    assert_eq!(moved.by(requests, &[]), 10.0, "no other request counted");
    assert!(moved.by("chorus_request_duration_seconds_sum", &[]) > 0.0);
    assert_eq!(
        moved.bucket(
            "chorus_request_duration_seconds",
            &request("get", "one", "ok"),
            f64::INFINITY
        ),
        1.0
    );

    // Siblings per read: the five reads the engine answered found 1, 1, 1,
    // 0 and 2 live versions (the bad option never reached it).
    let siblings = "chorus_read_siblings";
    assert_eq!(moved.by(&format!("{siblings}_count"), &[]), 5.0);
    assert_eq!(moved.by(&format!("{siblings}_sum"), &[]), 5.0);
    assert_eq!(moved.bucket(siblings, &[], 0.0), 1.0);
    assert_eq!(moved.bucket(siblings, &[], 1.0), 4.0);
    assert_eq!(moved.bucket(siblings, &[], 2.0), 5.0);

    // The engine's own counters: six gets coordinated here (the five
    // reads and the read of the delete without a context), and at least
    // the writes received here.
    assert_eq!(moved.by("chorus_gets_total", &[]), 6.0);
    assert!(moved.by("chorus_puts_total", &[]) >= 4.0);

    // Node 2 shares the process but served none of these.
    let other_after = cluster.scrape(1).await;
    assert_eq!(
        value(&other_after, requests, &[]) - value(&other_before, requests, &[]),
        0.0,
        "node 2 counted node 1's requests"
    );
    assert_eq!(cluster.get(1, "s", "").await, StatusCode::MULTIPLE_CHOICES);
    let other = Moved {
        before: &other_after,
        after: &cluster.scrape(1).await,
    };
    assert_eq!(
        other.by(requests, &request("get", "quorum", "siblings")),
        1.0
    );
    assert_eq!(other.by(&format!("{siblings}_sum"), &[]), 2.0);
    let last = Moved {
        before: &after,
        after: &cluster.scrape(0).await,
    };
    assert_eq!(
        last.by(requests, &[]),
        0.0,
        "node 1 counted node 2's request"
    );

    // Cluster-wide figures: gossip sees three members up, frames went to
    // and came from the peers by name, the hint queue is empty, and RocksDB
    // reports its memtables.
    assert_eq!(
        value(&after, "chorus_gossip_members", &[("liveness", "up")]),
        3.0
    );
    assert_eq!(
        value(&after, "chorus_gossip_members", &[("liveness", "down")]),
        0.0
    );
    for peer in ["node2", "node3"] {
        assert!(
            value(&after, "chorus_frames_sent_total", &[("peer", peer)]) > 0.0,
            "frames sent to {peer}"
        );
        assert!(
            value(&after, "chorus_frames_received_total", &[("peer", peer)]) > 0.0,
            "frames received from {peer}"
        );
    }
    let peers: BTreeSet<&str> = samples(&after, "chorus_frames_sent_total", &[])
        .filter_map(|sample| sample.labels.get("peer"))
        .collect();
    assert!(
        peers
            .iter()
            .all(|p| ["node1", "node2", "node3", "unknown"].contains(p)),
        "peers are labelled by name: {peers:?}"
    );
    assert_eq!(value(&after, "chorus_hints_pending", &[]), 0.0);
    assert!(value(&after, "chorus_rocksdb_memtable_bytes", &[]) > 0.0);
    for gauge in [
        "chorus_rocksdb_live_data_bytes",
        "chorus_rocksdb_pending_compaction_bytes",
        "chorus_rocksdb_block_cache_bytes",
    ] {
        assert_eq!(samples(&after, gauge, &[]).count(), 1, "{gauge} is exposed");
    }
    // The reads and writes above went through the object cache.
    assert!(value(&after, "chorus_object_cache_bytes", &[]) > 0.0);
    assert!(
        after.docs.contains_key("chorus_requests_total"),
        "described"
    );

    cluster.shutdown().await;
}
