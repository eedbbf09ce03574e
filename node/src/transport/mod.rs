//! The node-to-node transport: one-way messages over QUIC with mutual TLS.
//!
//! A [`QuicTransport`] owns one QUIC endpoint that is both server and client.
//! [`QuicTransport::send`] delivers an opaque payload (already encoded by the
//! caller) to a peer address; every payload that arrives from a peer comes
//! out of the [`Incoming`] channel returned by [`QuicTransport::bind`].
//!
//! * [`tls`] — the cluster CA, node and client certificates and the rustls
//!   configurations. Both ends of every connection present a certificate
//!   issued by the cluster CA and verify the other's. On the internode ALPN
//!   the peer's certificate must moreover be a node certificate
//!   ([`tls::NodeCertChecker`]): a connection from a client certificate is
//!   closed at once with the application code `3` ("not a node
//!   certificate") before any of its streams is read, so nothing it sends
//!   reaches the engine. (QUIC may acknowledge a first frame before the
//!   close, so such a sender's first send may succeed; later ones see
//!   [`TransportError::Tls`] or a closed connection.) [`QuicTransport::bind`] accepts the internode
//!   ALPN only; [`QuicTransport::bind_serving_clients`] also accepts
//!   [`ALPN_CLIENT`] and hands those connections, unread, to the caller
//!   (the node's QUIC client API, `crate::client_quic`).
//! * [`frame`] — the wire format of one message: a version byte, a
//!   big-endian `u32` length and the payload. A stream carries frames back
//!   to back and ends where a frame ends.
//!
//! # How messages travel
//!
//! A node keeps at most one outgoing connection per peer address and opens
//! it on the first send, and on it one long-lived unidirectional stream on
//! which frames are written back to back: no stream is opened per message
//! and no task is spawned per message. [`QuicTransport::send_batch`] writes
//! several frames with one write (the runtime hands it whatever is queued
//! for the peer); [`QuicTransport::send`] is a batch of one. Sends to one
//! peer take turns, a whole batch at a time, so frames never interleave.
//! A send returns once its frames are handed to QUIC, which then delivers
//! them unless the connection dies first. The one exception is the first
//! message on a connection the call had to open: it travels on a stream of
//! its own, which the call finishes and waits until the peer has
//! acknowledged, because only then is it known that the peer accepted this
//! node's certificate (in TLS 1.3 the client finishes its handshake before
//! the server has checked the client's certificate). A node whose
//! certificate is refused therefore gets [`TransportError::Tls`] instead of
//! losing its messages silently. The stream is opened after that
//! confirmation, so a connection has it only once the peer is known to take
//! this node's frames. Two nodes that send to each other use two
//! connections, one opened by each; a node never answers on a connection
//! its peer opened.
//!
//! When a write fails, the frames not yet written whole are reported back
//! ([`BatchError::sent`]); the stream is dropped, and the next send opens a
//! new one (and a new connection if the old one is gone). A send that finds
//! its stream stopped by the peer before it wrote anything (the peer refused
//! an earlier send's frame) moves to a new stream instead of failing. A write that is
//! abandoned halfway (its future dropped) drops the stream too, and QUIC
//! finishes it where the write stopped: the receiver refuses the truncated
//! frame, so a peer never gets part of a frame.
//!
//! On the receiving side, an accept loop serves each connection in a task of
//! its own and each stream in a task of its own, which reads the stream's
//! frames one after the other. A decoded frame goes into the bounded
//! [`Incoming`] channel; when the channel is full the stream task waits and
//! reads nothing more, so the stream's flow-control window fills up and the
//! peer's writes wait for credit. Nothing is dropped to make room. A frame
//! with the wrong version or over the size limit is refused together with
//! the rest of its stream (stop code `1`); frames written after it on that
//! stream are lost, and the sender's next send opens a new stream. When the
//! receiver of the channel is dropped, the transport refuses new
//! connections and closes the ones it had accepted; sending still works.
//!
//! # Bounds
//!
//! * Payloads: at most [`TransportConfig::max_frame_bytes`], checked by the
//!   sender before sending and by the receiver from the header alone, before
//!   it allocates the payload.
//! * Streams: at most [`TransportConfig::max_incoming_streams`] open
//!   streams per connection (QUIC stream credit; a sender uses one, and a
//!   second while it confirms a new connection), each with QUIC's
//!   flow-control window of unread bytes; datagrams are refused, and
//!   so are bidirectional streams on internode connections (with no client
//!   ALPN there is no credit for them at all; with one, each such stream is
//!   stopped and reset as it arrives).
//! * Connections: at most [`TransportConfig::max_connections`] accepted
//!   connections; further attempts are refused.
//! * Delivered but unconsumed messages: at most
//!   [`TransportConfig::incoming_queue`].
//! * Outgoing connections: one per peer address the node sends to.
//!
//! So the memory held for one peer connection is at most
//! `max_incoming_streams × max_frame_bytes` (one decoded frame waiting per
//! stream) plus what QUIC buffers (a window per stream).
//!
//! # Architecture invariant: what is deliberately absent
//!
//! * No request/response. The engine correlates requests and replies by
//!   request id; to the transport, every message is one-way.
//! * No retries beyond one: when a cached connection turns out to be dead,
//!   [`QuicTransport::send_batch`] reconnects once and sends the frames not
//!   yet written whole once more. Anything
//!   beyond that — backoff, giving up on a peer, hinted handoff — is the
//!   engine's decision.
//! * No delivery guarantee and no ordering. Delivery is best-effort and the
//!   engine handles timeouts. Frames written on one stream come out of the
//!   channel in the order written, but a new connection's first frame and
//!   the frames after a reconnect travel on other streams, so messages may
//!   come out in a different order than they were sent. A message is never
//!   delivered twice: the retry sends only frames that were not written
//!   whole, and a partial frame is never delivered.
//! * No waiting out the idle timeout for a peer that restarted. A process
//!   killed without a goodbye leaves its peers' connections to it open; two
//!   things close them at once rather than after the idle timeout:
//!   - the stateless reset key is derived from the node's private key, so
//!     the node's next incarnation on the same address answers packets of
//!     its predecessor's connections with a valid QUIC stateless reset
//!     (RFC 9000 §10.3): the peer's connection fails, its next send
//!     reports the failure and reconnects;
//!   - the engine sees the peer's newer generation (in its frames or in
//!     gossip) and calls [`QuicTransport::reset_peer`].
//! * No knowledge of node identities. Peers are socket addresses; the TLS
//!   handshake proves cluster membership, not which node is at an address.
//! * No encoding. Payloads are opaque bytes.

pub mod frame;
pub mod tls;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use quinn::crypto::rustls::{HandshakeData, QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, IdleTimeout, VarInt};
use rustls_pki_types::CertificateDer;
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, warn};

pub use frame::{FrameError, MAX_FRAME_BYTES, PROTOCOL_VERSION};
pub use tls::{ClusterCa, NodeIdentity, TlsError, ALPN_CLIENT, ALPN_INTERNODE, SERVER_NAME};

/// Application close code: the node is shutting down.
const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(0);

/// Application close code: the peer restarted; the connection leads to a
/// process that is gone.
const CLOSE_PEER_RESTARTED: VarInt = VarInt::from_u32(2);

/// Domain separation for the stateless reset key derived from the node's
/// private key.
const RESET_KEY_CONTEXT: &[u8] = b"chorus quic stateless reset key v1";

/// Application close code: the peer negotiated a protocol other than the
/// internode one.
const CLOSE_WRONG_PROTOCOL: VarInt = VarInt::from_u32(1);

/// Application close code: the peer's certificate is from the cluster CA
/// but is not a node certificate (a client certificate on the internode
/// ALPN).
pub const CLOSE_NOT_A_NODE: VarInt = VarInt::from_u32(3);

/// Application close code: the node takes no more client connections now.
const CLOSE_BUSY: VarInt = VarInt::from_u32(4);

/// Stream stop code: a frame on this stream was refused (wrong version or
/// too large), and with it the rest of the stream.
const STOP_FRAME_REFUSED: VarInt = VarInt::from_u32(1);

/// How long [`QuicTransport::close`] waits for peers to acknowledge the
/// close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Incoming handshakes that fail their TLS checks (a certificate of
/// another CA, an expired one) are logged at `warn` at most this often;
/// the rest at `debug`.
const TLS_WARN_INTERVAL: Duration = Duration::from_secs(30);

/// How many ack-eliciting packets a peer may receive before it must
/// acknowledge them (the QUIC ACK frequency extension,
/// draft-ietf-quic-ack-frequency, which quinn implements). A request's
/// reply then usually carries the acknowledgement of the request, instead
/// of a packet of its own.
const ACK_ELICITING_THRESHOLD: u32 = 8;

/// Settings of a [`QuicTransport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// The largest payload sent or accepted, in bytes. At most `u32::MAX`.
    pub max_frame_bytes: usize,
    /// How long opening a connection (QUIC and TLS handshake) may take.
    pub connect_timeout: Duration,
    /// How long a connection may go without hearing from the peer before it
    /// is considered dead. QUIC uses the smaller of both sides' values.
    pub idle_timeout: Duration,
    /// How often to send a keep-alive on an otherwise quiet connection.
    /// Must be shorter than `idle_timeout`.
    pub keep_alive: Duration,
    /// Capacity of the channel of incoming messages.
    pub incoming_queue: usize,
    /// How many unidirectional streams a peer may have open at once on one
    /// connection. A node sends on one long-lived stream per connection,
    /// plus one while it confirms a new connection.
    pub max_incoming_streams: u32,
    /// How many connections from peers are served at once.
    pub max_connections: usize,
    /// How many bidirectional streams (requests) a client may have open at
    /// once on one client-protocol connection.
    pub max_client_streams: u32,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_frame_bytes: MAX_FRAME_BYTES,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
            incoming_queue: 1024,
            max_incoming_streams: 64,
            max_connections: 1024,
            max_client_streams: 64,
        }
    }
}

impl TransportConfig {
    /// Checks the settings; an invalid configuration is a programmer error
    /// (the configuration layer validates what users write).
    fn assert_valid(&self) {
        assert!(
            self.max_frame_bytes <= u32::MAX as usize,
            "max_frame_bytes must fit the frame's u32 length"
        );
        assert!(
            !self.connect_timeout.is_zero(),
            "connect_timeout must be positive"
        );
        assert!(
            !self.idle_timeout.is_zero(),
            "idle_timeout must be positive"
        );
        assert!(
            self.keep_alive < self.idle_timeout,
            "keep_alive must be shorter than idle_timeout"
        );
        assert!(self.incoming_queue > 0, "incoming_queue must be positive");
        assert!(
            self.max_incoming_streams > 0,
            "max_incoming_streams must be positive"
        );
        assert!(self.max_connections > 0, "max_connections must be positive");
    }

    /// The QUIC transport parameters both sides of every connection use.
    /// Bidirectional streams get credit only when clients are served.
    fn quic(&self, serve_clients: bool) -> quinn::TransportConfig {
        let bidi = if serve_clients {
            self.max_client_streams
        } else {
            0
        };
        let idle_timeout =
            IdleTimeout::try_from(self.idle_timeout).expect("idle_timeout fits QUIC's range");
        let mut quic = quinn::TransportConfig::default();
        quic.max_idle_timeout(Some(idle_timeout))
            .keep_alive_interval(Some(self.keep_alive))
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_incoming_streams))
            .max_concurrent_bidi_streams(VarInt::from_u32(bidi))
            .datagram_receive_buffer_size(None);
        let mut acks = quinn::AckFrequencyConfig::default();
        acks.ack_eliciting_threshold(VarInt::from_u32(ACK_ELICITING_THRESHOLD));
        quic.ack_frequency_config(Some(acks));
        quic
    }
}

/// A message that arrived from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The address the peer sent from. With one endpoint per node that is
    /// the peer's bound address, to which replies can be sent.
    pub from: SocketAddr,
    /// The payload, exactly as the peer passed it to [`QuicTransport::send`].
    pub payload: Vec<u8>,
}

/// Why a transport operation failed. Each variant keeps its meaning across
/// versions; the reasons inside are for logs, not for matching.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No connection to the peer could be opened: the address is unusable
    /// or the peer refused the connection. Nothing was sent.
    #[error("cannot connect to {peer}: {reason}")]
    Connect {
        /// The peer's address.
        peer: SocketAddr,
        /// What QUIC reported.
        reason: String,
    },
    /// Opening a connection took longer than
    /// [`TransportConfig::connect_timeout`] (or the peer is not answering at
    /// all). Nothing was sent.
    #[error("connecting to {peer} took longer than {timeout:?}")]
    ConnectTimeout {
        /// The peer's address.
        peer: SocketAddr,
        /// The limit that was exceeded.
        timeout: Duration,
    },
    /// The message could not be delivered on an established connection:
    /// the connection was lost (also after the one retry), or the peer
    /// refused the frame. The peer may or may not have received it.
    #[error("sending to {peer} failed: {reason}")]
    Write {
        /// The peer's address.
        peer: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The payload is larger than [`TransportConfig::max_frame_bytes`].
    /// Nothing was sent.
    #[error("payload of {len} bytes exceeds the frame limit of {max} bytes")]
    FrameTooLarge {
        /// The payload's length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// Certificates or keys: the local identity is unusable (from
    /// [`QuicTransport::bind`]), or the handshake with a peer failed because
    /// one side does not trust the other ([`TlsError::Handshake`]). Retrying
    /// does not help until the certificates change.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound to `addr` (in use, or not an
    /// address of this machine).
    #[error("cannot bind the QUIC socket to {addr}: {cause}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    /// The UDP socket could not be used.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The transport was closed; nothing more can be sent.
    #[error("the transport is closed")]
    Closed,
}

/// Why [`QuicTransport::send_batch`] stopped before the end of its
/// payloads.
#[derive(Debug, thiserror::Error)]
#[error("{error} (after {sent} frames sent)")]
pub struct BatchError {
    /// How many payloads, from the first, were handed to QUIC whole, as a
    /// successful [`QuicTransport::send`] of each would have.
    pub sent: usize,
    /// Why the next payload was not: with
    /// [`TransportError::FrameTooLarge`] that payload alone is refused and
    /// those after it were not tried; with any other error none of the
    /// remaining payloads was sent whole. The peer never gets a part of a
    /// frame, nor a frame twice; it may have got the first unsent one when
    /// its confirmation failed (see [`TransportError::Write`]).
    pub error: TransportError,
}

/// The node-to-node transport. See the [module documentation](self).
///
/// Dropping it closes the endpoint at once, as [`QuicTransport::close`] does
/// without waiting.
pub struct QuicTransport {
    endpoint: quinn::Endpoint,
    config: TransportConfig,
    /// One slot per peer address this node has sent to.
    peers: Mutex<HashMap<SocketAddr, Arc<PeerSlot>>>,
}

/// The outgoing connection to one peer and its stream of frames.
///
/// Two locks, taken in this order: `writer` is held for the whole of a
/// send, so the frames of concurrent sends never interleave on the stream;
/// `state` is held only while a connection is looked up or opened, so
/// concurrent sends to a peer without a connection open one connection
/// between them, and [`QuicTransport::disconnect`] and
/// [`QuicTransport::reset_peer`] never wait for a send that is blocked on
/// the peer's flow control (they close the connection, which ends it).
#[derive(Debug)]
struct PeerSlot {
    peer: SocketAddr,
    /// Connection attempts completed, successful or not. Changed only with
    /// `state` locked, so a send that read it before waiting for the lock
    /// can tell whether an attempt finished while it waited.
    attempts: AtomicU64,
    state: tokio::sync::Mutex<PeerState>,
    writer: tokio::sync::Mutex<Option<FrameStream>>,
}

impl PeerSlot {
    fn new(peer: SocketAddr) -> PeerSlot {
        PeerSlot {
            peer,
            attempts: AtomicU64::new(0),
            state: tokio::sync::Mutex::default(),
            writer: tokio::sync::Mutex::default(),
        }
    }
}

/// The long-lived stream frames to a peer are written on, with the
/// connection it belongs to. It is taken out of its slot while a send
/// writes on it and put back only after a write that completed: a send
/// dropped halfway drops the stream, which QUIC then finishes, so the
/// peer sees the partial frame as truncated and never delivers it.
#[derive(Debug)]
struct FrameStream {
    connection: quinn::Connection,
    stream: quinn::SendStream,
}

#[derive(Debug, Default)]
struct PeerState {
    connection: Option<quinn::Connection>,
    /// Why the latest attempt failed, if it did.
    last_failure: Option<ConnectFailure>,
}

/// Why opening a connection failed, in a form that can be handed to every
/// send that waited for the attempt.
#[derive(Debug, Clone, PartialEq)]
enum ConnectFailure {
    Timeout,
    Tls(String),
    Refused(String),
    Closed,
}

impl ConnectFailure {
    fn from_connection_error(error: &ConnectionError) -> ConnectFailure {
        match classify(error) {
            ErrorClass::Tls => ConnectFailure::Tls(error.to_string()),
            ErrorClass::LocallyClosed => ConnectFailure::Closed,
            ErrorClass::TimedOut => ConnectFailure::Timeout,
            ErrorClass::Other => ConnectFailure::Refused(error.to_string()),
        }
    }

    fn into_error(self, peer: SocketAddr, timeout: Duration) -> TransportError {
        match self {
            ConnectFailure::Timeout => TransportError::ConnectTimeout { peer, timeout },
            ConnectFailure::Tls(reason) => TlsError::Handshake { peer, reason }.into(),
            ConnectFailure::Refused(reason) => TransportError::Connect { peer, reason },
            ConnectFailure::Closed => TransportError::Closed,
        }
    }
}

/// Why writing frames on an established connection failed.
#[derive(Debug)]
enum SendFailure {
    /// The connection is gone; a fresh one may work.
    Connection(ConnectionError),
    /// The peer stopped the stream: it refused a frame on it.
    Stopped(VarInt),
    /// This stream failed otherwise.
    Stream(String),
}

impl SendFailure {
    fn into_error(self, peer: SocketAddr) -> TransportError {
        match self {
            SendFailure::Connection(error) => match classify(&error) {
                ErrorClass::Tls => TlsError::Handshake {
                    peer,
                    reason: error.to_string(),
                }
                .into(),
                ErrorClass::LocallyClosed => TransportError::Closed,
                ErrorClass::TimedOut | ErrorClass::Other => TransportError::Write {
                    peer,
                    reason: error.to_string(),
                },
            },
            SendFailure::Stopped(code) => TransportError::Write {
                peer,
                reason: format!("the peer refused a frame (code {code})"),
            },
            SendFailure::Stream(reason) => TransportError::Write { peer, reason },
        }
    }
}

impl From<quinn::WriteError> for SendFailure {
    fn from(error: quinn::WriteError) -> Self {
        match error {
            quinn::WriteError::ConnectionLost(error) => SendFailure::Connection(error),
            quinn::WriteError::Stopped(code) => SendFailure::Stopped(code),
            other => SendFailure::Stream(other.to_string()),
        }
    }
}

enum ErrorClass {
    /// A TLS alert: certificate not trusted, no common ALPN protocol.
    Tls,
    LocallyClosed,
    TimedOut,
    Other,
}

fn classify(error: &ConnectionError) -> ErrorClass {
    /// QUIC carries TLS alerts as transport error codes 0x100–0x1ff.
    fn is_tls_alert(code: quinn::TransportErrorCode) -> bool {
        (0x100..0x200).contains(&u64::from(code))
    }
    match error {
        ConnectionError::TransportError(e) if is_tls_alert(e.code) => ErrorClass::Tls,
        ConnectionError::ConnectionClosed(close) if is_tls_alert(close.error_code) => {
            ErrorClass::Tls
        }
        ConnectionError::ApplicationClosed(close) if close.error_code == CLOSE_NOT_A_NODE => {
            ErrorClass::Tls
        }
        ConnectionError::LocallyClosed => ErrorClass::LocallyClosed,
        ConnectionError::TimedOut => ErrorClass::TimedOut,
        _ => ErrorClass::Other,
    }
}

impl fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicTransport")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .field("config", &self.config)
            .field("peers", &self.lock_peers().len())
            .finish_non_exhaustive()
    }
}

impl QuicTransport {
    /// Binds a UDP socket to `addr` (port 0 picks a free port) and starts
    /// accepting connections from peers that present a certificate from the
    /// cluster CA of `identity`.
    ///
    /// Returns the transport and the receiving end of the channel of
    /// incoming messages. Must be called within a Tokio runtime.
    ///
    /// # Panics
    ///
    /// If `config` is invalid: `max_frame_bytes` over `u32::MAX`, a zero
    /// timeout, queue or limit, or `keep_alive` not shorter than
    /// `idle_timeout`.
    pub fn bind(
        addr: SocketAddr,
        identity: &NodeIdentity,
        config: TransportConfig,
    ) -> Result<(QuicTransport, mpsc::Receiver<Incoming>), TransportError> {
        let (transport, incoming, _) = QuicTransport::bind_inner(addr, identity, config, false)?;
        Ok((transport, incoming))
    }

    /// As [`bind`](Self::bind), and also accepts connections on the client
    /// ALPN ([`ALPN_CLIENT`]) from peers with any certificate of the
    /// cluster CA. Each such connection, once its handshake is complete,
    /// comes out of the third value unread; when that channel is full or
    /// dropped the connection is closed. Client connections count against
    /// [`TransportConfig::max_connections`] until they close.
    #[allow(clippy::type_complexity)]
    pub fn bind_serving_clients(
        addr: SocketAddr,
        identity: &NodeIdentity,
        config: TransportConfig,
    ) -> Result<
        (
            QuicTransport,
            mpsc::Receiver<Incoming>,
            mpsc::Receiver<quinn::Connection>,
        ),
        TransportError,
    > {
        let (transport, incoming, clients) =
            QuicTransport::bind_inner(addr, identity, config, true)?;
        Ok((
            transport,
            incoming,
            clients.expect("a client channel when serving clients"),
        ))
    }

    #[allow(clippy::type_complexity)]
    fn bind_inner(
        addr: SocketAddr,
        identity: &NodeIdentity,
        config: TransportConfig,
        serve_clients: bool,
    ) -> Result<
        (
            QuicTransport,
            mpsc::Receiver<Incoming>,
            Option<mpsc::Receiver<quinn::Connection>>,
        ),
        TransportError,
    > {
        config.assert_valid();
        let quic = Arc::new(config.quic(serve_clients));

        let alpns: &[&[u8]] = if serve_clients {
            &[ALPN_INTERNODE, ALPN_CLIENT]
        } else {
            &[ALPN_INTERNODE]
        };
        let server_tls = tls::server_config_for(identity, alpns)?;
        let server_tls = QuicServerConfig::try_from(server_tls)
            .expect("the ring provider offers QUIC's initial cipher suite");
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_tls));
        server.transport_config(quic.clone());

        let client_tls = tls::client_config(identity, ALPN_INTERNODE)?;
        let client_tls = QuicClientConfig::try_from(client_tls)
            .expect("the ring provider offers QUIC's initial cipher suite");
        let mut client = quinn::ClientConfig::new(Arc::new(client_tls));
        client.transport_config(quic);

        let socket = std::net::UdpSocket::bind(addr)
            .map_err(|cause| TransportError::Bind { addr, cause })?;
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::new(Arc::new(stateless_reset_key(identity))),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        endpoint.set_default_client_config(client);

        let (tx, rx) = mpsc::channel(config.incoming_queue);
        let (clients_tx, clients_rx) = if serve_clients {
            let (tx, rx) = mpsc::channel(CLIENT_HANDOFF_QUEUE);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        tokio::spawn(accept_loop(
            endpoint.clone(),
            Accepting {
                tx,
                clients: clients_tx,
                nodes: tls::NodeCertChecker::new(identity)?,
                max_frame_bytes: config.max_frame_bytes,
                tls_warned: std::sync::Mutex::new(None),
            },
            Arc::new(Semaphore::new(config.max_connections)),
        ));
        let transport = QuicTransport {
            endpoint,
            config,
            peers: Mutex::new(HashMap::new()),
        };
        Ok((transport, rx, clients_rx))
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        Ok(self.endpoint.local_addr()?)
    }

    /// The number of open connections, incoming and outgoing.
    pub fn open_connections(&self) -> usize {
        self.endpoint.open_connections()
    }

    /// Sends `payload` to the node at `to` as one message: a
    /// [`send_batch`](Self::send_batch) of one.
    pub async fn send(
        &self,
        to: SocketAddr,
        payload: impl Into<Bytes>,
    ) -> Result<(), TransportError> {
        self.send_batch(to, &[payload.into()])
            .await
            .map_err(|failure| failure.error)
    }

    /// Sends each of `payloads` to the node at `to` as one message, in
    /// order, written back to back with one write where QUIC's flow control
    /// allows.
    ///
    /// Reuses the connection to `to` and its stream if there are some, and
    /// opens them otherwise, the connection within
    /// [`TransportConfig::connect_timeout`]. On a connection this call
    /// opened, the first payload travels on a stream of its own and the
    /// call waits until the peer has acknowledged it (see the [module
    /// documentation](self)). If a reused connection turns out to be dead
    /// (closed, or lost while the frames were being written), opens a new
    /// one and sends the payloads not yet sent once more; a failure on a
    /// connection this call opened is final.
    ///
    /// Returns once every frame is handed to QUIC. `Ok` therefore does not
    /// mean the peer's engine has the messages. While the peer holds back
    /// flow-control credit (its channel is full) this waits; the caller
    /// bounds the wait by dropping the future. A dropped send never
    /// delivers a partial frame: the stream is finished where the write
    /// stopped and the receiver refuses truncated frames.
    pub async fn send_batch(&self, to: SocketAddr, payloads: &[Bytes]) -> Result<(), BatchError> {
        let max = self.config.max_frame_bytes;
        let fit = payloads
            .iter()
            .position(|payload| payload.len() > max)
            .unwrap_or(payloads.len());
        let mut sent = 0;
        // Whether this call opened a connection, whether it has retried on a
        // new one, and whether it has replaced a stream the peer had stopped.
        let mut opened = false;
        let mut retried = false;
        let mut restarted_stream = false;
        while sent < fit {
            let slot = self.slot(to);
            // Read before waiting for the writer, so that sends queued
            // behind one whose connection attempt failed share its outcome
            // instead of each waiting out an attempt of its own.
            let attempts_seen = slot.attempts.load(Ordering::Acquire);
            let mut writer = slot.writer.lock().await;
            if !self.is_current(to, &slot) {
                // The peer was reset or disconnected while this send waited.
                continue;
            }
            let reused = writer
                .take()
                .filter(|open| open.connection.close_reason().is_none());
            let mut open = match reused {
                Some(open) => open,
                None => {
                    let (connection, reused) = self
                        .connection(&slot, attempts_seen)
                        .await
                        .map_err(|error| BatchError { sent, error })?;
                    if !reused {
                        opened = true;
                        write_confirmed(&connection, payloads[sent].clone())
                            .await
                            .map_err(|failure| BatchError {
                                sent,
                                error: failure.into_error(to),
                            })?;
                        sent += 1;
                        continue;
                    }
                    match connection.open_uni().await {
                        Ok(stream) => FrameStream { connection, stream },
                        Err(error) if !opened && !retried => {
                            debug!(peer = %to, %error, "cached connection is dead, reconnecting once");
                            retried = true;
                            continue;
                        }
                        Err(error) => {
                            return Err(BatchError {
                                sent,
                                error: SendFailure::Connection(error).into_error(to),
                            })
                        }
                    }
                }
            };
            let batch = frame::encode_batch(&payloads[sent..fit]);
            match write_batch(&mut open.stream, batch).await {
                Ok(()) => {
                    sent = fit;
                    *writer = Some(open);
                }
                Err(BatchFailure {
                    whole,
                    wrote_nothing,
                    failure,
                }) => {
                    // The stream is dropped with `open`: finished, or reset
                    // if the peer stopped it, after the last byte written.
                    sent += whole;
                    match failure {
                        SendFailure::Stopped(code) if wrote_nothing && !restarted_stream => {
                            // The peer stopped the stream over an earlier
                            // send's frame; nothing of this batch reached
                            // it, so a new stream carries the batch.
                            debug!(peer = %to, %code, "stream was stopped, opening a new one");
                            restarted_stream = true;
                        }
                        SendFailure::Connection(error) if !opened && !retried => {
                            // The failed connection reports a close reason
                            // now, so `connection` will not hand it out again.
                            debug!(peer = %to, %error, "cached connection is dead, reconnecting once");
                            retried = true;
                        }
                        failure => {
                            return Err(BatchError {
                                sent,
                                error: failure.into_error(to),
                            })
                        }
                    }
                }
            }
        }
        if fit < payloads.len() {
            return Err(BatchError {
                sent,
                error: TransportError::FrameTooLarge {
                    len: payloads[fit].len(),
                    max,
                },
            });
        }
        Ok(())
    }

    /// Closes the connection to `peer`, if any, and forgets the peer, for
    /// instance when it has left the cluster. A later send connects anew.
    pub async fn disconnect(&self, peer: SocketAddr) {
        let slot = self.lock_peers().remove(&peer);
        if let Some(slot) = slot {
            if let Some(connection) = slot.state.lock().await.connection.take() {
                connection.close(CLOSE_SHUTDOWN, b"disconnected");
            }
        }
    }

    /// Drops the connection to `peer` at once, because the process behind
    /// it is gone (the engine saw the peer's newer generation), without
    /// waiting for sends in progress. The next send to `peer` opens a new
    /// connection; frames still queued on the old one are lost, which the
    /// engine's timeouts cover. Must be called within a Tokio runtime.
    pub fn reset_peer(&self, peer: SocketAddr) {
        let Some(slot) = self.lock_peers().remove(&peer) else {
            return;
        };
        debug!(%peer, "peer restarted, dropping its connection");
        let closed = match slot.state.try_lock() {
            Ok(mut state) => {
                if let Some(connection) = state.connection.take() {
                    connection.close(CLOSE_PEER_RESTARTED, b"peer restarted");
                }
                true
            }
            Err(_) => false,
        };
        if !closed {
            // A send holds the slot (it is connecting): close whatever it
            // ends up with, off the caller's task.
            tokio::spawn(async move {
                if let Some(connection) = slot.state.lock().await.connection.take() {
                    connection.close(CLOSE_PEER_RESTARTED, b"peer restarted");
                }
            });
        }
    }

    /// Shuts the transport down: closes every connection, stops accepting,
    /// and waits up to two seconds for peers to acknowledge the close.
    /// Later sends fail with [`TransportError::Closed`]; the channel of
    /// incoming messages ends once the messages already read are taken out.
    pub async fn close(&self) {
        self.endpoint.close(CLOSE_SHUTDOWN, b"shutdown");
        self.lock_peers().clear();
        if tokio::time::timeout(CLOSE_WAIT, self.endpoint.wait_idle())
            .await
            .is_err()
        {
            debug!("peers did not acknowledge the close in time");
        }
    }

    fn lock_peers(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<PeerSlot>>> {
        // The map stays consistent even if a holder panicked: every update
        // is a single insert, remove or clear.
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The slot of `to`, made if there is none.
    fn slot(&self, to: SocketAddr) -> Arc<PeerSlot> {
        self.lock_peers()
            .entry(to)
            .or_insert_with(|| Arc::new(PeerSlot::new(to)))
            .clone()
    }

    /// Whether `slot` is still the slot of `to`, not one that
    /// [`reset_peer`](Self::reset_peer) or [`disconnect`](Self::disconnect)
    /// removed.
    fn is_current(&self, to: SocketAddr, slot: &Arc<PeerSlot>) -> bool {
        self.lock_peers()
            .get(&to)
            .is_some_and(|current| Arc::ptr_eq(current, slot))
    }

    /// A live connection to `to`, and whether it was reused rather than
    /// opened by this call.
    ///
    /// `slot` is the peer's current slot and `attempts_seen` its count of
    /// attempts when the send began waiting: an attempt that failed since
    /// is shared rather than made again.
    async fn connection(
        &self,
        slot: &PeerSlot,
        attempts_seen: u64,
    ) -> Result<(quinn::Connection, bool), TransportError> {
        let to = slot.peer;
        let mut state = slot.state.lock().await;
        if let Some(connection) = &state.connection {
            if connection.close_reason().is_none() {
                return Ok((connection.clone(), true));
            }
            state.connection = None;
        }
        if slot.attempts.load(Ordering::Acquire) != attempts_seen {
            // An attempt finished while this send waited for the lock, and
            // it failed (a success would have left a connection). Share its
            // outcome rather than queue one more attempt behind it.
            if let Some(failure) = &state.last_failure {
                return Err(failure.clone().into_error(to, self.config.connect_timeout));
            }
        }
        let outcome = self.connect(to).await;
        slot.attempts.fetch_add(1, Ordering::AcqRel);
        match outcome {
            Ok(connection) => {
                state.connection = Some(connection.clone());
                state.last_failure = None;
                Ok((connection, false))
            }
            Err(failure) => {
                // A failed TLS check does not heal by retrying (a
                // certificate of another CA): said once at `warn`, until
                // the peer's failure changes or a connection succeeds.
                match &failure {
                    ConnectFailure::Tls(reason)
                        if state.last_failure.as_ref() != Some(&failure) =>
                    {
                        warn!(peer = %to, %reason, "TLS handshake with the peer failed; is it a node of this cluster (same CA)?");
                    }
                    _ => debug!(peer = %to, ?failure, "connection attempt failed"),
                }
                state.last_failure = Some(failure.clone());
                Err(failure.into_error(to, self.config.connect_timeout))
            }
        }
    }

    async fn connect(&self, to: SocketAddr) -> Result<quinn::Connection, ConnectFailure> {
        let connecting = self
            .endpoint
            .connect(to, SERVER_NAME)
            .map_err(|e| match e {
                quinn::ConnectError::EndpointStopping => ConnectFailure::Closed,
                other => ConnectFailure::Refused(other.to_string()),
            })?;
        match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(ConnectFailure::from_connection_error(&error)),
            // Dropping the `Connecting` abandons the attempt.
            Err(_elapsed) => Err(ConnectFailure::Timeout),
        }
    }
}

/// The key QUIC stateless resets are made with, derived from the node's
/// private key so that every incarnation of the node has the same one: a
/// restarted node can then reset connections its predecessor left open.
fn stateless_reset_key(identity: &NodeIdentity) -> ring::hmac::Key {
    let mut material = ring::digest::Context::new(&ring::digest::SHA256);
    material.update(RESET_KEY_CONTEXT);
    material.update(identity.key_pem.as_bytes());
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, material.finish().as_ref())
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        self.endpoint.close(CLOSE_SHUTDOWN, b"shutdown");
    }
}

/// Sends one frame on a stream of its own and waits until the peer has
/// acknowledged all of it: the first frame on a new connection, which
/// proves that the peer accepted this node's certificate.
async fn write_confirmed(
    connection: &quinn::Connection,
    payload: Bytes,
) -> Result<(), SendFailure> {
    let mut stream = connection
        .open_uni()
        .await
        .map_err(SendFailure::Connection)?;
    let frame::Batch { mut chunks, .. } = frame::encode_batch(&[payload]);
    stream.write_all_chunks(&mut chunks).await?;
    stream
        .finish()
        .map_err(|e| SendFailure::Stream(e.to_string()))?;
    match stream.stopped().await {
        Ok(None) => Ok(()),
        Ok(Some(code)) => Err(SendFailure::Stopped(code)),
        Err(quinn::StoppedError::ConnectionLost(error)) => Err(SendFailure::Connection(error)),
        Err(other) => Err(SendFailure::Stream(other.to_string())),
    }
}

/// Why [`write_batch`] stopped: how many frames it wrote whole, whether it
/// wrote anything at all, and the failure.
struct BatchFailure {
    whole: usize,
    wrote_nothing: bool,
    failure: SendFailure,
}

/// Writes the frames of `batch` on `stream`, as much at a time as QUIC
/// takes.
async fn write_batch(
    stream: &mut quinn::SendStream,
    batch: frame::Batch,
) -> Result<(), BatchFailure> {
    let frame::Batch { mut chunks, ends } = batch;
    let mut done = 0;
    let mut written = 0u64;
    while done < chunks.len() {
        match stream.write_chunks(&mut chunks[done..]).await {
            Ok(progress) => {
                done += progress.chunks;
                written += progress.bytes as u64;
            }
            Err(error) => {
                return Err(BatchFailure {
                    whole: ends.partition_point(|&end| end <= written),
                    wrote_nothing: written == 0,
                    failure: error.into(),
                });
            }
        }
    }
    Ok(())
}

/// Accepts connections until the endpoint closes. Once the receiver of the
/// incoming channel is dropped, refuses them instead, so that peers learn at
/// once that this node no longer listens.
async fn accept_loop(
    endpoint: quinn::Endpoint,
    accepting: Accepting,
    connection_slots: Arc<Semaphore>,
) {
    let accepting = Arc::new(accepting);
    while let Some(incoming) = endpoint.accept().await {
        if accepting.tx.is_closed() {
            debug!(peer = %incoming.remote_address(), "nobody takes messages, refusing");
            incoming.refuse();
            continue;
        }
        match connection_slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let accepting = accepting.clone();
                tokio::spawn(async move {
                    serve_connection(incoming, &accepting).await;
                    drop(permit);
                });
            }
            Err(_) => {
                warn!(peer = %incoming.remote_address(), "connection limit reached, refusing");
                incoming.refuse();
            }
        }
    }
}

/// How many client connections may wait to be taken by the client API.
const CLIENT_HANDOFF_QUEUE: usize = 64;

/// What the accept loop needs to serve connections.
struct Accepting {
    tx: mpsc::Sender<Incoming>,
    /// Where client-ALPN connections go, when clients are served.
    clients: Option<mpsc::Sender<quinn::Connection>>,
    nodes: tls::NodeCertChecker,
    max_frame_bytes: usize,
    /// When an incoming TLS failure was last logged at `warn`.
    tls_warned: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Accepting {
    /// Whether an incoming TLS failure may be logged at `warn` now (at
    /// most once every [`TLS_WARN_INTERVAL`]); notes it if so.
    fn may_warn_tls(&self) -> bool {
        let mut warned = self
            .tls_warned
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if warned.is_some_and(|at| at.elapsed() < TLS_WARN_INTERVAL) {
            return false;
        }
        *warned = Some(std::time::Instant::now());
        true
    }
}

/// Completes the handshake of one incoming connection and serves its
/// streams until the connection ends or the incoming channel is dropped;
/// a client-protocol connection is handed over and held (for the
/// connection limit) until it closes.
async fn serve_connection(incoming: quinn::Incoming, accepting: &Accepting) {
    let tx = &accepting.tx;
    let max_frame_bytes = accepting.max_frame_bytes;
    let from = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            if matches!(classify(&error), ErrorClass::Tls) && accepting.may_warn_tls() {
                warn!(peer = %from, %error, "incoming TLS handshake failed; is the peer a node of this cluster (same CA)?");
            } else {
                debug!(peer = %from, %error, "incoming handshake failed");
            }
            return;
        }
    };
    // rustls already refuses a handshake without a common ALPN protocol;
    // this keeps the guarantee local.
    let protocol = connection
        .handshake_data()
        .and_then(|data| data.downcast::<HandshakeData>().ok())
        .and_then(|data| data.protocol);
    if let (Some(clients), Some(ALPN_CLIENT)) = (&accepting.clients, protocol.as_deref()) {
        match clients.try_send(connection.clone()) {
            Ok(()) => {
                connection.closed().await;
            }
            Err(_) => {
                warn!(peer = %from, "client connections are not taken now, closing");
                connection.close(CLOSE_BUSY, b"busy");
            }
        }
        return;
    }
    if protocol.as_deref() != Some(ALPN_INTERNODE) {
        warn!(peer = %from, "peer negotiated no internode protocol, closing");
        connection.close(CLOSE_WRONG_PROTOCOL, b"internode protocol required");
        return;
    }
    let certificates = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok());
    let node_certificate = match certificates {
        Some(chain) => accepting.nodes.check(&chain).map_err(|e| e.to_string()),
        None => Err("no certificate".to_owned()),
    };
    if let Err(reason) = node_certificate {
        warn!(peer = %from, %reason, "peer is not a node of the cluster, closing");
        connection.close(CLOSE_NOT_A_NODE, b"not a node certificate");
        return;
    }
    loop {
        let recv = tokio::select! {
            stream = connection.accept_bi() => {
                // Only clients open bidirectional streams, and only on the
                // client protocol.
                let Ok((mut send, mut recv)) = stream else {
                    return;
                };
                let _ = recv.stop(STOP_FRAME_REFUSED);
                let _ = send.reset(STOP_FRAME_REFUSED);
                continue;
            }
            stream = connection.accept_uni() => match stream {
                Ok(recv) => recv,
                Err(error) => {
                    debug!(peer = %from, %error, "connection ended");
                    return;
                }
            },
            () = tx.closed() => {
                connection.close(CLOSE_SHUTDOWN, b"shutdown");
                return;
            }
        };
        tokio::spawn(serve_stream(
            recv,
            connection.clone(),
            tx.clone(),
            max_frame_bytes,
        ));
    }
}

/// Reads the frames of a stream, one after the other, and hands each
/// payload to the channel. While the channel is full it reads nothing more,
/// so the stream's flow-control window fills up and the peer's writes wait:
/// backpressure, nothing dropped.
async fn serve_stream(
    mut recv: quinn::RecvStream,
    connection: quinn::Connection,
    tx: mpsc::Sender<Incoming>,
    max_frame_bytes: usize,
) {
    let mut reader = frame::FrameReader::new(max_frame_bytes);
    loop {
        // Asked per frame: the peer's address may change (QUIC migration).
        let from = connection.remote_address();
        let payload = match reader.next(&mut recv).await {
            Ok(Some(payload)) => payload,
            Ok(None) => return,
            Err(FrameError::Read(error)) => {
                debug!(peer = %from, %error, "stream failed");
                return;
            }
            Err(error @ FrameError::Truncated { .. }) => {
                debug!(peer = %from, %error, "stream ended inside a frame");
                return;
            }
            Err(error) => {
                warn!(peer = %from, %error, "refusing frame and the rest of its stream");
                // Fails only if the stream is already closed, which is fine.
                let _ = recv.stop(STOP_FRAME_REFUSED);
                return;
            }
        };
        let Ok(permit) = tx.reserve().await else {
            return;
        };
        permit.send(Incoming { from, payload });
    }
}
