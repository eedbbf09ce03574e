//! A node killed with SIGKILL under load: its peers' connections to it stay
//! open (nothing closes them) and stop taking frames once their stream
//! credit is spent. The survivors must go on seeing each other up and
//! serving quorum writes; frames queued for the dead node must not hold up
//! theirs. Three `chorus node start` processes on loopback.

// Tests of real servers: they bind ports, spawn tasks, wait and read the clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use chorus_client::{Client, RequestOptions, Value};
use common::process::{node_certificates, NodeProcess};

/// The names `node`'s status reports down.
async fn seen_down(client: &Client) -> Vec<String> {
    match client.status().await {
        Ok(status) => status
            .members
            .into_iter()
            .filter(|m| m.liveness == "down")
            .map(|m| m.name)
            .collect(),
        Err(error) => vec![format!("status failed: {error}")],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivors_of_a_killed_node_keep_seeing_each_other_and_serving_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let tls = node_certificates(dir.path(), &["node1", "node2", "node3"]);
    let mut nodes: Vec<NodeProcess> = Vec::new();
    for (i, tls) in tls.into_iter().enumerate() {
        let seeds = nodes.iter().map(|n| n.quic).collect();
        nodes.push(NodeProcess::new(
            dir.path(),
            &format!("node{}", i + 1),
            tls,
            seeds,
        ));
        nodes[i].start();
    }
    let clients: Vec<Client> = nodes
        .iter()
        .map(|node| {
            Client::builder()
                .endpoint(format!("http://{}", node.http))
                .build()
                .unwrap()
        })
        .collect();
    let options = RequestOptions::default();
    let started = Instant::now();
    'ready: loop {
        assert!(started.elapsed() < Duration::from_secs(60), "no cluster");
        tokio::time::sleep(Duration::from_millis(100)).await;
        for client in &clients {
            let Ok(status) = client.status().await else {
                continue 'ready;
            };
            if status.members.len() < 3 || status.members.iter().any(|m| m.liveness != "up") {
                continue 'ready;
            }
        }
        if clients[0]
            .put("warm", "k", Value::from(b"v".to_vec()), None, &options)
            .await
            .is_ok()
        {
            break;
        }
    }

    // Quorum writes through node1 and node3, every one of which also goes
    // to node2, from 32 tasks.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (written, mut progress) = tokio::sync::watch::channel(0u64);
    let written = std::sync::Arc::new(written);
    let mut load = tokio::task::JoinSet::new();
    for task in 0..32 {
        let client = clients[if task % 2 == 0 { 0 } else { 2 }].clone();
        let (stop, written) = (stop.clone(), written.clone());
        load.spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("t{task}-{}", n % 50);
                let value = Value::from(vec![b'x'; 100]);
                if client
                    .put("load", &key, value, None, &RequestOptions::default())
                    .await
                    .is_ok()
                {
                    written.send_modify(|n| *n += 1);
                }
                n += 1;
            }
        });
    }
    // Kill once the load is flowing: 500 writes acknowledged.
    progress.wait_for(|&n| n >= 500).await.unwrap();
    nodes[1].kill(); // SIGKILL: no goodbye, connections left open.

    // For 15 s the survivors must never call each other down.
    let killed = Instant::now();
    while killed.elapsed() < Duration::from_secs(15) {
        for (client, other) in [(&clients[0], "node3"), (&clients[2], "node1")] {
            let down = seen_down(client).await;
            assert!(
                !down
                    .iter()
                    .any(|name| name == other || name.starts_with("status")),
                "{:.1} s after the kill, a survivor sees {down:?} down",
                killed.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // And once node2 is known down, quorum writes through both succeed.
    let write = RequestOptions::parse([("w", "quorum")]).unwrap();
    for client in [&clients[0], &clients[2]] {
        client
            .put("after", "k", Value::from(b"v".to_vec()), None, &write)
            .await
            .expect("a quorum write with two of three up");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while load.join_next().await.is_some() {}
}
