//! A node killed with SIGKILL under load: its peers' connections to it stay
//! open (nothing closes them) and stop taking frames once their stream
//! credit is spent. The survivors must go on seeing each other up and
//! serving quorum writes; frames queued for the dead node must not hold up
//! theirs. Three `chorus node start` processes on loopback.

// Tests of real servers: they bind ports, spawn tasks, wait and read the clock.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chorus_client::{Client, RequestOptions, Value};

const CHORUS: &str = env!("CARGO_BIN_EXE_chorus");

/// A node process, killed when dropped.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(args: &[&str]) {
    let status = Command::new(CHORUS)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("chorus runs");
    assert!(status.success(), "chorus {args:?}");
}

fn start(dir: &Path, i: usize, quic: &[u16], http: &[u16]) -> Node {
    let name = format!("node{}", i + 1);
    let tls = dir.join(format!("tls{i}"));
    let seeds: Vec<String> = (0..quic.len())
        .filter(|&j| j != i)
        .map(|j| format!("127.0.0.1:{}", quic[j]))
        .collect();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(CHORUS)
        .args(["--log-format", "json", "node", "start", "--name", &name])
        .arg("--data-dir")
        .arg(dir.join(&name))
        .args(["--quic-listen", &format!("127.0.0.1:{}", quic[i])])
        .args(["--http-listen", &format!("127.0.0.1:{}", http[i])])
        .args(["--seed", &seeds.join(",")])
        .args(["--initial-members", "3", "--replicas", "3"])
        .arg("--tls-ca")
        .arg(tls.join("ca.pem"))
        .arg("--tls-cert")
        .arg(tls.join("node.pem"))
        .arg("--tls-key")
        .arg(tls.join("node.key"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("chorus node start runs");
    Node(child)
}

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
    let ca = dir.path().join("ca");
    run(&["cert", "ca", "--dir", ca.to_str().unwrap()]);
    for i in 0..3 {
        let out = dir.path().join(format!("tls{i}"));
        run(&[
            "cert",
            "node",
            "--ca-dir",
            ca.to_str().unwrap(),
            "--name",
            &format!("node{}", i + 1),
            "--out",
            out.to_str().unwrap(),
        ]);
    }
    let quic: Vec<u16> = (0..3).map(|_| common::free_udp_port()).collect();
    let http: Vec<u16> = (0..3)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let mut nodes: Vec<Option<Node>> = (0..3)
        .map(|i| Some(start(dir.path(), i, &quic, &http)))
        .collect();
    let clients: Vec<Client> = http
        .iter()
        .map(|port| {
            Client::builder()
                .endpoint(format!("http://127.0.0.1:{port}"))
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
    drop(nodes[1].take()); // SIGKILL: no goodbye, connections left open.

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
