//! An in-process cluster for the tests of the client APIs: nodes in this
//! process (the runtime, RocksDB, QUIC with mutual TLS on loopback), each
//! seeded with all the others.

// Starts real nodes: binds ports, waits and reads the clock.
#![allow(clippy::disallowed_methods)]
// Each test binary uses its own part of this module.
#![allow(dead_code)]

pub mod process;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use chorus_node::engine::EngineConfig;
use chorus_node::runtime::{self, NodeOptions, RunningNode};
use chorus_node::transport::tls::ClusterCa;

/// A UDP port free on loopback now.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

/// Starts `count` nodes named `node1`… under `dir`, with certificates from
/// `ca`; `configure` adjusts node `i`'s options (engine, HTTP) before it
/// starts. Returns once every node is ready and sees every member up.
pub async fn start_nodes(
    dir: &Path,
    ca: &ClusterCa,
    count: usize,
    configure: impl Fn(usize, &mut NodeOptions),
) -> Vec<RunningNode> {
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let quic: Vec<SocketAddr> = (0..count)
        .map(|_| SocketAddr::new(localhost, free_udp_port()))
        .collect();
    let mut nodes = Vec::new();
    for i in 0..count {
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
        let mut options = NodeOptions {
            engine,
            data_dir: dir.join(&name),
            quic_listen: quic[i],
            http_listen: SocketAddr::new(localhost, 0),
            identity: ca.issue(&name).expect("a node certificate"),
            http: Default::default(),
            unsafe_disable_wal: false,
            object_cache_bytes: chorus_storage::store::DEFAULT_OBJECT_CACHE_BYTES,
            shards_on_io_threads: false,
        };
        configure(i, &mut options);
        nodes.push(runtime::start(options).await.expect("the node starts"));
    }
    wait_until_all_up(&nodes).await;
    nodes
}

/// Waits (60 s at most) until every node is ready and sees every member
/// up: readiness comes before the last join settles, and a test that asks
/// for all replicas needs them all.
pub async fn wait_until_all_up(nodes: &[RunningNode]) {
    for _ in 0..600 {
        if runtime::all_members_up(nodes).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the cluster did not form within 60 s");
}
