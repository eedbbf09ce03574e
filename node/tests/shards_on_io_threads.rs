//! A 3-node cluster in this process whose shards run as tasks on the
//! async runtime's worker threads (`NodeOptions::shards_on_io_threads`)
//! instead of threads of their own: the same requests are served the same
//! way (quorum writes and reads of many keys at once, siblings from
//! concurrent writes, a resolving write), no shard thread exists, and the
//! nodes stop cleanly; and `sync=true` writes, whose fsync a shard's task
//! has a blocking thread run, are acknowledged on a one-worker and on a
//! current-thread runtime. Its own test binary, so no other test's nodes
//! add threads to this process.

// Tests of real servers: they bind ports, spawn tasks, wait and read the clock.
#![allow(clippy::disallowed_methods)]

mod common;

use chorus_client::{Client, Quorum, Read, RequestOptions, Value};
use chorus_node::transport::tls::ClusterCa;

/// The names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// Writes `count` keys of `bucket` at once, spread over `clients` in turn,
/// then reads each back through the next client: every write is
/// acknowledged at `options` and every read finds its value.
async fn write_many_and_read_back(
    clients: &[Client],
    bucket: &'static str,
    count: usize,
    options: RequestOptions,
) {
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..count {
        let client = clients[i % clients.len()].clone();
        writes.spawn(async move {
            client
                .put(
                    bucket,
                    &format!("k{i}"),
                    Value::from(format!("v{i}")),
                    None,
                    &options,
                )
                .await
                .unwrap_or_else(|e| panic!("write {i}: {e}"));
        });
    }
    while let Some(done) = writes.join_next().await {
        done.expect("a write task");
    }
    for i in 0..count {
        let Read::Found(found) = clients[(i + 1) % clients.len()]
            .get(bucket, &format!("k{i}"), &options)
            .await
            .unwrap()
        else {
            panic!("k{i} was written at w={:?}", options.w);
        };
        assert_eq!(found.value(), Some(format!("v{i}").as_bytes()), "k{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_on_the_io_threads_serve_requests_without_threads_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate("tasks").unwrap();
    let nodes = common::start_nodes(dir.path(), &ca, 3, |_, options| {
        options.shards_on_io_threads = true;
        options.engine.shards = 2;
    })
    .await;
    let names = thread_names();
    assert!(
        !names.iter().any(|name| name.starts_with("chorus-shard")),
        "no shard has a thread of its own: {names:?}"
    );
    assert!(
        names.iter().any(|name| name == "chorus-members"),
        "{names:?}"
    );

    let all = RequestOptions {
        r: Quorum::All,
        w: Quorum::All,
        ..RequestOptions::default()
    };
    let clients: Vec<Client> = nodes
        .iter()
        .map(|node| Client::http(&format!("http://{}", node.http_addr)).unwrap())
        .collect();
    // Many keys at once, through every node, so each shard of each node
    // coordinates and stores while the others do.
    write_many_and_read_back(&clients, "b", 300, all).await;

    // Two writes with one context are siblings; a write with the read's
    // context resolves them.
    let first = clients[0]
        .put("b", "shared", Value::from("first"), None, &all)
        .await
        .unwrap();
    for (client, value) in [(&clients[1], "left"), (&clients[2], "right")] {
        client
            .put(
                "b",
                "shared",
                Value::from(value),
                Some(&first.context),
                &all,
            )
            .await
            .unwrap();
    }
    let Read::Found(both) = clients[0].get("b", "shared", &all).await.unwrap() else {
        panic!("the key is there");
    };
    let mut values: Vec<&[u8]> = both.siblings.iter().map(|s| &s.value[..]).collect();
    values.sort();
    assert_eq!(values, [&b"left"[..], &b"right"[..]]);
    clients[1]
        .put(
            "b",
            "shared",
            Value::from("merged"),
            Some(&both.context),
            &all,
        )
        .await
        .unwrap();
    let Read::Found(merged) = clients[2].get("b", "shared", &all).await.unwrap() else {
        panic!("the key is there");
    };
    assert_eq!(merged.siblings.len(), 1);
    assert_eq!(merged.value(), Some(&b"merged"[..]));

    for node in nodes {
        node.shutdown().await;
    }
}

/// `sync=true` writes through every node at once, then each read back at
/// `r=all`. Under group commit each batch of a shard owes one fsync before
/// its effects, which the shard's task has a blocking thread run while it
/// waits: on a multi-threaded and on a current-thread runtime alike (where
/// `tokio::task::block_in_place` would panic).
async fn synced_writes_are_acknowledged_and_read_back(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::generate(name).unwrap();
    let nodes = common::start_nodes(dir.path(), &ca, 3, |_, options| {
        options.shards_on_io_threads = true;
        options.engine.shards = 2;
    })
    .await;
    let synced = RequestOptions {
        r: Quorum::All,
        w: Quorum::All,
        sync: true,
        ..RequestOptions::default()
    };
    let clients: Vec<Client> = nodes
        .iter()
        .map(|node| Client::http(&format!("http://{}", node.http_addr)).unwrap())
        .collect();
    write_many_and_read_back(&clients, "s", 120, synced).await;
    for node in nodes {
        node.shutdown().await;
    }
}

/// One runtime worker, as `chorus node start --io-threads 1` runs it: the
/// worker serves its other tasks while a shard's fsync runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn synced_writes_on_a_one_worker_runtime_are_acknowledged() {
    synced_writes_are_acknowledged_and_read_back("synced-one-worker").await;
}

#[tokio::test(flavor = "current_thread")]
async fn synced_writes_on_a_current_thread_runtime_are_acknowledged() {
    synced_writes_are_acknowledged_and_read_back("synced-current-thread").await;
}
