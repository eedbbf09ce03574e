//! The README's tour through the Rust client: a write and its read, two
//! blind writes that become siblings, a resolving write with the read's
//! context, a delete, and the cluster's members.
//!
//! Start a cluster with `chorus dev`, then:
//!
//! ```sh
//! cargo run -p chorus-client --example tour            # http://127.0.0.1:8080
//! cargo run -p chorus-client --example tour -- http://127.0.0.1:8081
//! ```

use chorus_client::{Client, Deleted, Quorum, Read, RequestOptions, Value};

#[tokio::main]
async fn main() -> Result<(), chorus_client::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_string());
    let client = Client::http(&url)?;
    let options = RequestOptions::default();
    let all = RequestOptions {
        w: Quorum::All,
        ..RequestOptions::default()
    };

    // A write and its read.
    client
        .put("tour", "greeting", Value::from("hello"), None, &all)
        .await?;
    if let Read::Found(found) = client.get("tour", "greeting", &options).await? {
        println!(
            "greeting = {}",
            String::from_utf8_lossy(&found.siblings[0].value)
        );
    }

    // Two writes without a context are concurrent: both are kept.
    for colour in ["red", "blue"] {
        client
            .put("tour", "colour", Value::from(colour), None, &all)
            .await?;
    }
    let Read::Found(found) = client.get("tour", "colour", &options).await? else {
        unreachable!("just written");
    };
    println!("colour has {} siblings:", found.siblings.len());
    for (i, sibling) in found.siblings.iter().enumerate() {
        println!("  {}) {}", i + 1, String::from_utf8_lossy(&sibling.value));
    }

    // Writing with the read's context replaces exactly what was read.
    client
        .put(
            "tour",
            "colour",
            Value::from("purple"),
            Some(&found.context),
            &all,
        )
        .await?;
    if let Read::Found(found) = client.get("tour", "colour", &options).await? {
        println!(
            "after resolving: {} version, {}",
            found.siblings.len(),
            String::from_utf8_lossy(&found.siblings[0].value)
        );
    }

    // A delete without a context deletes what a read finds.
    let deleted = client.delete("tour", "colour", None, &all).await?;
    println!("deleted: {}", matches!(deleted, Deleted::Deleted { .. }));
    if let Read::NotFound { context } = client.get("tour", "colour", &options).await? {
        println!(
            "colour: not found (tombstone context: {})",
            context.is_some()
        );
    }

    // Errors carry the node's stable code.
    let error = client
        .put(
            "tour",
            "k",
            Value::from("x"),
            None,
            &RequestOptions {
                w: Quorum::Count(4),
                ..RequestOptions::default()
            },
        )
        .await
        .expect_err("w=4 exceeds N=3");
    println!("w=4: {} ({:?})", error.code(), error.status());

    let status = client.status().await?;
    for member in &status.members {
        println!("{} is {}", member.name, member.liveness);
    }
    Ok(())
}
