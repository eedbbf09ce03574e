//! How fast the QUIC transport moves frames between two nodes on loopback,
//! on one connection and its long-lived stream: frames sent one per call,
//! and frames sent in batches as the runtime's per-peer sender does.
//!
//! ```text
//! cargo run --release -p chorus-node --example transport_throughput
//! ```
//!
//! Prints, for several payload sizes and numbers of sends in flight (or
//! frames per batch), the frames per second delivered to the receiver's
//! queue and the payload bytes per second.

// A program that prints figures over real endpoints: it times itself and
// spawns tasks.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_node::transport::tls::ClusterCa;
use chorus_node::transport::{QuicTransport, TransportConfig};

const FRAMES: usize = 20_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let ca = ClusterCa::generate("bench")?;
    let loopback = "127.0.0.1:0".parse()?;
    let (sender, _sender_incoming) =
        QuicTransport::bind(loopback, &ca.issue("a")?, TransportConfig::default())?;
    let (receiver, mut incoming) =
        QuicTransport::bind(loopback, &ca.issue("b")?, TransportConfig::default())?;
    let to = receiver.local_addr()?;
    let sender = Arc::new(sender);
    // Open the connection before measuring.
    sender.send(to, vec![0; 8]).await?;
    incoming.recv().await;

    println!("{FRAMES} frames per row, one frame per send");
    println!(
        "{:>9} {:>9} {:>12} {:>12}",
        "payload", "in flight", "frames/s", "MB/s"
    );
    for payload in [100usize, 1_000, 10_000] {
        for in_flight in [1usize, 16, 64] {
            let started = Instant::now();
            let semaphore = Arc::new(tokio::sync::Semaphore::new(in_flight));
            let sending = {
                let sender = sender.clone();
                tokio::spawn(async move {
                    for _ in 0..FRAMES {
                        let permit = semaphore.clone().acquire_owned().await.expect("open");
                        let sender = sender.clone();
                        tokio::spawn(async move {
                            sender.send(to, vec![7; payload]).await.expect("delivered");
                            drop(permit);
                        });
                    }
                })
            };
            for _ in 0..FRAMES {
                tokio::time::timeout(Duration::from_secs(30), incoming.recv())
                    .await?
                    .expect("the transport is open");
            }
            sending.await?;
            let seconds = started.elapsed().as_secs_f64();
            let rate = FRAMES as f64 / seconds;
            println!(
                "{:>9} {:>9} {:>12.0} {:>12.1}",
                payload,
                in_flight,
                rate,
                rate * payload as f64 / 1e6
            );
        }
    }
    println!();
    println!("{FRAMES} frames per row, in batches (one send_batch each, one at a time)");
    println!(
        "{:>9} {:>9} {:>12} {:>12}",
        "payload", "batch", "frames/s", "MB/s"
    );
    for payload in [100usize, 1_000, 10_000] {
        for batch in [16usize, 64] {
            let started = Instant::now();
            let sending = {
                let sender = sender.clone();
                tokio::spawn(async move {
                    let frames: Vec<bytes::Bytes> =
                        vec![bytes::Bytes::from(vec![7; payload]); batch];
                    for _ in 0..FRAMES / batch {
                        sender.send_batch(to, &frames).await.expect("delivered");
                    }
                })
            };
            for _ in 0..FRAMES / batch * batch {
                tokio::time::timeout(Duration::from_secs(30), incoming.recv())
                    .await?
                    .expect("the transport is open");
            }
            sending.await?;
            let seconds = started.elapsed().as_secs_f64();
            let rate = (FRAMES / batch * batch) as f64 / seconds;
            println!(
                "{:>9} {:>9} {:>12.0} {:>12.1}",
                payload,
                batch,
                rate,
                rate * payload as f64 / 1e6
            );
        }
    }
    sender.close().await;
    receiver.close().await;
    Ok(())
}
