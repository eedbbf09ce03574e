//! The QUIC transport between real endpoints on 127.0.0.1.
//!
//! Every wait is bounded by `tokio::time::timeout`; the only sleeps are the
//! short windows in which a test asserts that nothing arrives.

// Tests of real endpoints: they bind sockets, spawn tasks and wait.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chorus_node::transport::{
    tls, ClusterCa, Incoming, NodeIdentity, QuicTransport, TlsError, TransportConfig,
    TransportError, ALPN_CLIENT, SERVER_NAME,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// How long any single expected event may take.
const EVENT: Duration = Duration::from_secs(10);

/// How long a test watches for a message that must not arrive.
const QUIET: Duration = Duration::from_millis(300);

fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A short idle timeout so that a dead connection is noticed quickly.
fn test_config() -> TransportConfig {
    TransportConfig {
        connect_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(2),
        keep_alive: Duration::from_millis(500),
        ..TransportConfig::default()
    }
}

struct Node {
    transport: QuicTransport,
    incoming: mpsc::Receiver<Incoming>,
    addr: SocketAddr,
}

fn bind_at(addr: SocketAddr, identity: &NodeIdentity, config: TransportConfig) -> Node {
    let (transport, incoming) = QuicTransport::bind(addr, identity, config).expect("bind");
    let addr = transport.local_addr().expect("local addr");
    Node {
        transport,
        incoming,
        addr,
    }
}

fn node(ca: &ClusterCa, name: &str) -> Node {
    bind_at(localhost(), &ca.issue(name).expect("issue"), test_config())
}

async fn recv(node: &mut Node) -> Incoming {
    timeout(EVENT, node.incoming.recv())
        .await
        .expect("a message within the deadline")
        .expect("channel open")
}

/// Receives the next message and checks it is `want`, saying which one
/// and how it differs without printing whole payloads.
async fn recv_expecting(node: &mut Node, want: &[u8], which: usize) {
    let got = recv(node).await.payload;
    assert!(
        got == want,
        "message {which}: got {} bytes starting {:?}, expected {} bytes starting {:?}",
        got.len(),
        &got[..got.len().min(8)],
        want.len(),
        &want[..want.len().min(8)]
    );
}

async fn assert_nothing_arrives(node: &mut Node) {
    if let Ok(Some(message)) = timeout(QUIET, node.incoming.recv()).await {
        panic!("expected no message, got {message:?}");
    }
}

async fn send(from: &Node, to: SocketAddr, payload: Vec<u8>) -> Result<(), TransportError> {
    timeout(EVENT, from.transport.send(to, payload))
        .await
        .expect("send finishes within the deadline")
}

#[tokio::test]
async fn two_nodes_exchange_messages_both_ways() {
    let ca = ClusterCa::generate("exchange").expect("ca");
    let mut a = node(&ca, "node-a");
    let mut b = node(&ca, "node-b");

    // Step 1: one message each way; `from` is the sender's bound address.
    send(&a, b.addr, b"ping".to_vec()).await.expect("a -> b");
    let got = recv(&mut b).await;
    assert_eq!(got.payload, b"ping");
    assert_eq!(got.from, a.addr);
    send(&b, a.addr, b"pong".to_vec()).await.expect("b -> a");
    let got = recv(&mut a).await;
    assert_eq!(got.payload, b"pong");
    assert_eq!(got.from, b.addr);

    // Step 2: many messages, one after the other. Order is not promised,
    // so compare sets.
    let sent: BTreeSet<Vec<u8>> = (0..300u32).map(|i| i.to_be_bytes().to_vec()).collect();
    for payload in &sent {
        send(&a, b.addr, payload.clone()).await.expect("a -> b");
    }
    let mut received = BTreeSet::new();
    for _ in 0..sent.len() {
        received.insert(recv(&mut b).await.payload);
    }
    assert_eq!(received, sent);

    // Step 3: a 1 MiB message and an empty one.
    let big: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    send(&b, a.addr, big.clone()).await.expect("b -> a, 1 MiB");
    assert_eq!(recv(&mut a).await.payload, big);
    send(&b, a.addr, Vec::new()).await.expect("b -> a, empty");
    assert_eq!(recv(&mut a).await.payload, Vec::<u8>::new());

    // Step 4: every message went over one connection per direction.
    assert_eq!(a.transport.open_connections(), 2);
    assert_eq!(b.transport.open_connections(), 2);

    a.transport.close().await;
    b.transport.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_to_a_new_peer_share_one_connection() {
    let ca = ClusterCa::generate("concurrent").expect("ca");
    let a = Arc::new(node(&ca, "node-a"));
    let mut b = node(&ca, "node-b");

    let sends: Vec<_> = (0..50u8)
        .map(|i| {
            let a = a.clone();
            let to = b.addr;
            tokio::spawn(async move { a.transport.send(to, vec![i]).await })
        })
        .collect();
    for send in sends {
        timeout(EVENT, send)
            .await
            .expect("send finishes")
            .expect("task")
            .expect("send");
    }
    let mut received = BTreeSet::new();
    for _ in 0..50 {
        received.insert(recv(&mut b).await.payload);
    }
    assert_eq!(received, (0..50u8).map(|i| vec![i]).collect());
    assert_eq!(a.transport.open_connections(), 1, "one outgoing connection");
    assert_eq!(b.transport.open_connections(), 1, "one incoming connection");
}

#[tokio::test]
async fn a_full_incoming_queue_holds_the_sender_back_without_dropping_anything() {
    let ca = ClusterCa::generate("backpressure").expect("ca");
    let a = Arc::new(node(&ca, "node-a"));
    let config = TransportConfig {
        incoming_queue: 2,
        ..test_config()
    };
    let mut b = bind_at(localhost(), &ca.issue("node-b").expect("issue"), config);
    send(&a, b.addr, b"open".to_vec()).await.expect("a -> b");
    assert_eq!(recv(&mut b).await.payload, b"open");

    // Step 1: far more than the queue and the stream's flow-control window
    // (1.25 MB) hold, 6.4 MB, written by one task while nobody reads.
    let frames: Vec<Bytes> = (0..100u8)
        .map(|i| Bytes::from(vec![i; 64 * 1024]))
        .collect();
    let sending = tokio::spawn({
        let (a, to, frames) = (a.clone(), b.addr, frames.clone());
        async move {
            for frame in frames {
                a.transport.send(to, frame).await?;
            }
            Ok::<(), TransportError>(())
        }
    });

    // Step 2: the queue fills up, the receiver stops reading, and the
    // sender waits for flow-control credit.
    tokio::time::sleep(QUIET).await;
    assert_eq!(b.incoming.len(), 2, "the queue is full");
    assert!(!sending.is_finished(), "the sender waits for the receiver");

    // Step 3: reading drains everything, in order; nothing was dropped,
    // and the sender finishes.
    for (i, frame) in frames.iter().enumerate() {
        recv_expecting(&mut b, frame, i).await;
    }
    timeout(EVENT, sending)
        .await
        .expect("the sender finishes")
        .expect("task")
        .expect("every send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_pipelined_on_one_connection_arrive_in_order() {
    let ca = ClusterCa::generate("order").expect("ca");
    let a = node(&ca, "node-a");
    let mut b = node(&ca, "node-b");

    // Step 1: once the connection is open (its first frame travels on a
    // stream of its own), one send after the other, small and large,
    // without waiting for the receiver in between.
    let payload = |i: u32| -> Bytes {
        let len = if i % 50 == 0 {
            20_000
        } else {
            (i % 300) as usize
        };
        let mut payload = i.to_be_bytes().to_vec();
        payload.resize(4 + len, (i % 251) as u8);
        Bytes::from(payload)
    };
    send(&a, b.addr, b"open".to_vec()).await.expect("a -> b");
    assert_eq!(recv(&mut b).await.payload, b"open");
    let sent: Vec<Bytes> = (0..1000).map(payload).collect();
    for frame in &sent {
        a.transport
            .send(b.addr, frame.clone())
            .await
            .expect("a -> b");
    }
    // Step 2: batches of many frames in one write each.
    let batched: Vec<Bytes> = (1000..3000).map(payload).collect();
    for batch in batched.chunks(64) {
        a.transport.send_batch(b.addr, batch).await.expect("a -> b");
    }

    // Step 3: every frame arrives whole, in the order sent.
    for (i, frame) in sent.iter().chain(&batched).enumerate() {
        recv_expecting(&mut b, frame, i).await;
    }
    assert_nothing_arrives(&mut b).await;
    assert_eq!(a.transport.open_connections(), 1);
}

#[tokio::test]
async fn a_connection_killed_mid_stream_fails_the_unsent_frames_and_the_next_send_reconnects() {
    let ca = ClusterCa::generate("killed").expect("ca");
    let config = TransportConfig {
        connect_timeout: Duration::from_millis(500),
        ..test_config()
    };
    let a = Arc::new(bind_at(
        localhost(),
        &ca.issue("node-a").expect("issue"),
        config,
    ));
    let b_identity = ca.issue("node-b").expect("issue");
    let b_config = TransportConfig {
        incoming_queue: 2,
        ..test_config()
    };
    let mut b = bind_at(localhost(), &b_identity, b_config.clone());
    let b_addr = b.addr;
    send(&a, b_addr, b"open".to_vec()).await.expect("a -> b");
    assert_eq!(recv(&mut b).await.payload, b"open");

    // Step 1: a batch larger than b takes while nobody reads: the write
    // stops halfway, waiting for credit.
    let frames: Vec<Bytes> = (0..100u8)
        .map(|i| Bytes::from(vec![i; 64 * 1024]))
        .collect();
    let sending = tokio::spawn({
        let (a, frames) = (a.clone(), frames.clone());
        async move { a.transport.send_batch(b_addr, &frames).await }
    });
    tokio::time::sleep(QUIET).await;
    assert!(!sending.is_finished(), "the batch waits for the receiver");

    // Step 2: b goes away, and its connection with it. The send reconnects
    // once, finds nobody, and says how many frames were sent whole: at
    // least those b had taken, not all of them.
    let mut taken = Vec::new();
    while let Ok(message) = b.incoming.try_recv() {
        taken.push(message.payload);
    }
    b.transport.close().await;
    drop(b);
    let failure = timeout(EVENT, sending)
        .await
        .expect("the send ends")
        .expect("task")
        .expect_err("the connection is gone");
    assert!(
        taken.len() <= failure.sent && failure.sent < frames.len(),
        "{} taken, {} sent whole of {}",
        taken.len(),
        failure.sent,
        frames.len()
    );
    assert!(
        matches!(
            failure.error,
            TransportError::Connect { .. } | TransportError::ConnectTimeout { .. }
        ),
        "{failure:?}"
    );
    for (i, (got, frame)) in taken.iter().zip(&frames).enumerate() {
        assert!(got[..] == frame[..], "b took a prefix of the batch: {i}");
    }

    // Step 3: b comes back on the same address; the next send opens a new
    // connection and arrives.
    let mut b = timeout(EVENT, async {
        loop {
            match QuicTransport::bind(b_addr, &b_identity, b_config.clone()) {
                Ok((transport, incoming)) => {
                    break Node {
                        transport,
                        incoming,
                        addr: b_addr,
                    }
                }
                Err(TransportError::Bind { .. }) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(other) => panic!("rebinding failed: {other:?}"),
            }
        }
    })
    .await
    .expect("the port is free again");
    let rest = &frames[failure.sent..failure.sent + 2];
    timeout(EVENT, a.transport.send_batch(b_addr, rest))
        .await
        .expect("send finishes")
        .expect("a -> the new b");
    for (i, frame) in rest.iter().enumerate() {
        recv_expecting(&mut b, frame, i).await;
    }
}

#[tokio::test]
async fn a_node_from_another_cluster_cannot_deliver() {
    let ca = ClusterCa::generate("ours").expect("ca");
    let foreign_ca = ClusterCa::generate("theirs").expect("ca");
    let mut b = node(&ca, "node-b");

    // Step 1: a stranger with its own CA: it does not trust b, and b does
    // not trust it.
    let stranger = node(&foreign_ca, "node-x");
    let error = send(&stranger, b.addr, b"let me in".to_vec())
        .await
        .expect_err("a stranger cannot send");
    assert!(
        matches!(error, TransportError::Tls(TlsError::Handshake { .. })),
        "{error:?}"
    );

    // Step 2: an impostor that trusts our CA (its certificate is public) but
    // presents a certificate from another CA: b must refuse its certificate.
    let foreign = foreign_ca.issue("node-y").expect("issue");
    let impostor_identity = NodeIdentity {
        ca_pem: ca.cert_pem().to_owned(),
        ..foreign
    };
    let impostor = bind_at(localhost(), &impostor_identity, test_config());
    let error = send(&impostor, b.addr, b"let me in".to_vec())
        .await
        .expect_err("an impostor cannot send");
    assert!(
        matches!(
            error,
            TransportError::Tls(TlsError::Handshake { .. }) | TransportError::Write { .. }
        ),
        "{error:?}"
    );
    assert_nothing_arrives(&mut b).await;

    // Step 3: a member of the cluster still gets through.
    let a = node(&ca, "node-a");
    send(&a, b.addr, b"member".to_vec()).await.expect("a -> b");
    assert_eq!(recv(&mut b).await.payload, b"member");
}

#[tokio::test]
async fn the_internode_endpoint_refuses_other_protocols() {
    let ca = ClusterCa::generate("alpn").expect("ca");
    let b = node(&ca, "node-b");

    // A client of the same cluster that speaks the client protocol.
    let client_tls = tls::client_config(&ca.issue("client").expect("issue"), ALPN_CLIENT)
        .expect("client config");
    let client_tls =
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls).expect("quic client config");
    let mut endpoint = quinn::Endpoint::client(localhost()).expect("client endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(client_tls)));
    let connecting = endpoint.connect(b.addr, SERVER_NAME).expect("connect");
    let outcome = timeout(EVENT, connecting)
        .await
        .expect("handshake finishes");
    assert!(outcome.is_err(), "handshake with the wrong ALPN must fail");
}

#[tokio::test]
async fn an_oversized_frame_is_refused_and_the_receiver_keeps_working() {
    let ca = ClusterCa::generate("oversized").expect("ca");
    let sender_config = TransportConfig {
        max_frame_bytes: 4 * 1024 * 1024,
        ..test_config()
    };
    let receiver_config = TransportConfig {
        max_frame_bytes: 64 * 1024,
        ..test_config()
    };
    let a = bind_at(
        localhost(),
        &ca.issue("node-a").expect("issue"),
        sender_config,
    );
    let mut b = bind_at(
        localhost(),
        &ca.issue("node-b").expect("issue"),
        receiver_config,
    );

    // Step 1: the sender refuses what exceeds its own limit, without sending.
    let error = send(&a, b.addr, vec![0; 4 * 1024 * 1024 + 1])
        .await
        .expect_err("over the sender's limit");
    assert!(
        matches!(error, TransportError::FrameTooLarge { max, .. } if max == 4 * 1024 * 1024),
        "{error:?}"
    );

    // Step 2: the receiver refuses a frame over its limit. One larger than
    // the QUIC stream window (1.25 MB) cannot be acknowledged before the
    // receiver has read its header, so the sender sees the refusal.
    let error = send(&a, b.addr, vec![7; 2 * 1024 * 1024])
        .await
        .expect_err("over the receiver's limit");
    assert!(matches!(error, TransportError::Write { .. }), "{error:?}");
    // A small one may be acknowledged by QUIC before the refusal is
    // decided, so the sender may or may not hear of it; the receiver's
    // engine never sees it either way.
    let outcome = send(&a, b.addr, vec![7; 64 * 1024 + 1]).await;
    assert!(
        matches!(outcome, Ok(()) | Err(TransportError::Write { .. })),
        "{outcome:?}"
    );
    assert_nothing_arrives(&mut b).await;

    // Step 3: the refused frame took the rest of its stream with it; the
    // sender, told so by now, carries a frame at the limit on a new stream
    // of the same connection.
    send(&a, b.addr, vec![1; 64 * 1024])
        .await
        .expect("at the limit");
    assert_eq!(recv(&mut b).await.payload.len(), 64 * 1024);
    assert_eq!(a.transport.open_connections(), 1);
}

#[tokio::test]
async fn an_oversized_frame_mid_stream_is_refused_and_later_frames_and_connections_work() {
    let ca = ClusterCa::generate("oversized-mid").expect("ca");
    let a = bind_at(
        localhost(),
        &ca.issue("node-a").expect("issue"),
        TransportConfig {
            max_frame_bytes: 4 * 1024 * 1024,
            ..test_config()
        },
    );
    let mut b = bind_at(
        localhost(),
        &ca.issue("node-b").expect("issue"),
        TransportConfig {
            max_frame_bytes: 64 * 1024,
            ..test_config()
        },
    );
    send(&a, b.addr, b"open".to_vec()).await.expect("a -> b");
    assert_eq!(recv(&mut b).await.payload, b"open");

    // Step 1: one batch: ten small frames, one over b's limit and larger
    // than the stream window (so the sender cannot finish writing it before
    // b refuses it), ten more.
    let small = |i: u8| Bytes::from(vec![i; 100]);
    let mut batch: Vec<Bytes> = (0..10).map(small).collect();
    batch.push(Bytes::from(vec![0xee; 2 * 1024 * 1024]));
    batch.extend((10..20).map(small));
    let failure = timeout(EVENT, a.transport.send_batch(b.addr, &batch))
        .await
        .expect("send finishes")
        .expect_err("b refuses the stream");
    assert_eq!(failure.sent, 10, "{failure:?}");
    assert!(
        matches!(failure.error, TransportError::Write { .. }),
        "{failure:?}"
    );

    // Step 2: b delivers the frames before the refused one, in order, and
    // nothing of it or after it.
    for (i, frame) in batch[..10].iter().enumerate() {
        recv_expecting(&mut b, frame, i).await;
    }
    assert_nothing_arrives(&mut b).await;

    // Step 3: the same connection carries the next frames on a new stream.
    a.transport
        .send_batch(b.addr, &batch[11..])
        .await
        .expect("after the refusal");
    for (i, frame) in batch[11..].iter().enumerate() {
        recv_expecting(&mut b, frame, 11 + i).await;
    }
    assert_eq!(a.transport.open_connections(), 1);

    // Step 4: b still takes new connections.
    let c = node(&ca, "node-c");
    send(&c, b.addr, b"later".to_vec()).await.expect("c -> b");
    assert_eq!(recv(&mut b).await.payload, b"later");
}

#[tokio::test]
async fn sending_reconnects_to_a_restarted_peer() {
    let ca = ClusterCa::generate("restart").expect("ca");
    let a = node(&ca, "node-a");
    let b_identity = ca.issue("node-b").expect("issue");
    let mut b = bind_at(localhost(), &b_identity, test_config());
    let b_addr = b.addr;

    // Step 1: a connection to b is established and cached.
    send(&a, b_addr, b"before".to_vec()).await.expect("a -> b");
    assert_eq!(recv(&mut b).await.payload, b"before");

    // Step 2: b shuts down and its endpoint is dropped.
    b.transport.close().await;
    drop(b);

    // Step 3: b comes back on the same address. The OS may hold the port
    // for a moment after the old endpoint's task lets go of it.
    let mut b = timeout(EVENT, async {
        loop {
            match QuicTransport::bind(b_addr, &b_identity, test_config()) {
                Ok((transport, incoming)) => {
                    break Node {
                        transport,
                        incoming,
                        addr: b_addr,
                    }
                }
                Err(TransportError::Bind { .. }) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(other) => panic!("rebinding failed: {other:?}"),
            }
        }
    })
    .await
    .expect("the port is free again");

    // Step 4: the next send finds the cached connection closed and opens a
    // new one.
    send(&a, b_addr, b"after".to_vec())
        .await
        .expect("a -> restarted b");
    assert_eq!(recv(&mut b).await.payload, b"after");
}

#[tokio::test]
async fn a_write_on_a_silently_dead_connection_is_retried_on_a_new_one() {
    let ca = ClusterCa::generate("silent").expect("ca");
    let a = node(&ca, "node-a");
    let mut b1 = node(&ca, "node-b1");
    let proxy = UdpProxy::start(b1.addr).await;

    // Step 1: a reaches b1 through the proxy and caches the connection.
    send(&a, proxy.addr, b"first".to_vec())
        .await
        .expect("a -> b1");
    assert_eq!(recv(&mut b1).await.payload, b"first");

    // Step 2: b1 vanishes without a goodbye reaching a, and b2 takes its
    // place behind the proxy. a still believes in its cached connection.
    proxy.set_blackhole(true);
    b1.transport.close().await;
    let mut b2 = node(&ca, "node-b2");
    proxy.set_upstream(b2.addr);
    proxy.set_blackhole(false);

    // Step 3: a message larger than the stream window (1.25 MB) cannot be
    // written completely without the peer granting credit, so the write
    // blocks on the dead connection until the idle timeout declares it
    // dead; then the transport reconnects and sends once more.
    let big = vec![3u8; 2 * 1024 * 1024];
    send(&a, proxy.addr, big.clone())
        .await
        .expect("delivered after one reconnect");
    assert_eq!(recv(&mut b2).await.payload, big);
    assert_eq!(a.transport.open_connections(), 1, "the dead one is gone");
}

#[tokio::test]
async fn sending_to_nobody_times_out_and_closing_stops_sending() {
    let ca = ClusterCa::generate("nobody").expect("ca");
    let config = TransportConfig {
        connect_timeout: Duration::from_millis(300),
        ..test_config()
    };
    let a = bind_at(localhost(), &ca.issue("node-a").expect("issue"), config);

    // A bound UDP socket that never answers.
    let silent = UdpSocket::bind(localhost()).await.expect("bind");
    let error = send(&a, silent.local_addr().expect("addr"), b"hello?".to_vec())
        .await
        .expect_err("nobody answers");
    assert!(
        matches!(error, TransportError::ConnectTimeout { .. }),
        "{error:?}"
    );

    let b = node(&ca, "node-b");
    a.transport.close().await;
    let error = send(&a, b.addr, b"too late".to_vec())
        .await
        .expect_err("closed");
    assert!(matches!(error, TransportError::Closed), "{error:?}");
}

#[tokio::test]
async fn dropping_the_incoming_channel_stops_accepting() {
    let ca = ClusterCa::generate("drop").expect("ca");
    let a = node(&ca, "node-a");
    let Node {
        transport: b,
        incoming,
        addr: b_addr,
    } = node(&ca, "node-b");
    drop(incoming);
    let error = send(&a, b_addr, b"anyone?".to_vec())
        .await
        .expect_err("b no longer accepts");
    assert!(
        matches!(
            error,
            TransportError::Connect { .. }
                | TransportError::ConnectTimeout { .. }
                | TransportError::Write { .. }
        ),
        "{error:?}"
    );
    drop(b);
}

/// A UDP relay between one client and a switchable upstream that can also
/// drop every packet, to make a peer vanish without a trace.
struct UdpProxy {
    addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    blackhole: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl UdpProxy {
    async fn start(upstream: SocketAddr) -> UdpProxy {
        let front = Arc::new(UdpSocket::bind(localhost()).await.expect("bind front"));
        let back = Arc::new(UdpSocket::bind(localhost()).await.expect("bind back"));
        let addr = front.local_addr().expect("addr");
        let upstream = Arc::new(Mutex::new(upstream));
        let blackhole = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let upstream = upstream.clone();
            let blackhole = blackhole.clone();
            async move {
                let mut client = None;
                let mut from_client = vec![0u8; 65_536];
                let mut from_upstream = vec![0u8; 65_536];
                loop {
                    tokio::select! {
                        Ok((len, peer)) = front.recv_from(&mut from_client) => {
                            client = Some(peer);
                            if !blackhole.load(Ordering::SeqCst) {
                                let to = *upstream.lock().expect("lock");
                                let _ = back.send_to(&from_client[..len], to).await;
                            }
                        }
                        Ok((len, _)) = back.recv_from(&mut from_upstream) => {
                            if let (Some(peer), false) = (client, blackhole.load(Ordering::SeqCst)) {
                                let _ = front.send_to(&from_upstream[..len], peer).await;
                            }
                        }
                    }
                }
            }
        });
        UdpProxy {
            addr,
            upstream,
            blackhole,
            task,
        }
    }

    fn set_upstream(&self, upstream: SocketAddr) {
        *self.upstream.lock().expect("lock") = upstream;
    }

    fn set_blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::SeqCst);
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
