//! The client's QUIC transport: the client protocol of
//! [`crate::protocol`] over one quinn connection per node, reused by every
//! call and every clone of the [`Client`](crate::Client), and opened again
//! when it is lost.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::client::{Context, Deleted, Error, Found, Read, Sibling, Written, ANSWER_GRACE};
use crate::protocol::{self, Operation, Reply, Request, ALPN_CLIENT, MAX_REPLY_BYTES, SERVER_NAME};

/// The file names `chorus cert client` writes into its directory.
const CA_FILE: &str = "ca.pem";
const CERT_FILE: &str = "client.pem";
const KEY_FILE: &str = "client.key";

/// How long a connection may be silent before it is considered dead, and
/// how often it is kept alive while idle.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// A client's TLS material for the QUIC client protocol, all PEM: the
/// cluster CA certificate(s) nodes are checked against, and the client
/// certificate and key the client presents (`chorus cert client --name …`
/// writes `ca.pem`, `client.pem` and `client.key`).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientTls {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    /// Secret; not shown by `Debug`.
    pub key: Vec<u8>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &String::from_utf8_lossy(&self.ca))
            .field("cert", &String::from_utf8_lossy(&self.cert))
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ClientTls {
    /// TLS material from PEM bytes.
    pub fn from_pem(
        ca: impl Into<Vec<u8>>,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> ClientTls {
        ClientTls {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// TLS material from three PEM files. Fails with `invalid_tls` when one
    /// cannot be read.
    pub fn from_files(
        ca: impl AsRef<Path>,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<ClientTls, Error> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map_err(|error| invalid_tls(format!("reading {}: {error}", path.display())))
        };
        Ok(ClientTls {
            ca: read(ca.as_ref())?,
            cert: read(cert.as_ref())?,
            key: read(key.as_ref())?,
        })
    }

    /// TLS material from a directory written by `chorus cert client`:
    /// `ca.pem`, `client.pem`, `client.key`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<ClientTls, Error> {
        let dir = dir.as_ref();
        ClientTls::from_files(dir.join(CA_FILE), dir.join(CERT_FILE), dir.join(KEY_FILE))
    }

    /// The quinn configuration: TLS 1.3 only, nodes verified against the
    /// CA under [`SERVER_NAME`], the client certificate presented, the
    /// client ALPN offered.
    fn quinn_config(&self) -> Result<quinn::ClientConfig, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca) {
            let cert = cert.map_err(|error| invalid_tls(format!("CA certificate: {error}")))?;
            roots
                .add(cert)
                .map_err(|error| invalid_tls(format!("CA certificate: {error}")))?;
        }
        if roots.is_empty() {
            return Err(invalid_tls("no CA certificate given".into()));
        }
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| invalid_tls(format!("client certificate: {error}")))?;
        if chain.is_empty() {
            return Err(invalid_tls("no client certificate given".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|error| invalid_tls(format!("client key: {error}")))?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|error| invalid_tls(error.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|error| match error {
                rustls::Error::InconsistentKeys(_) => {
                    invalid_tls("the client key does not belong to the client certificate".into())
                }
                error => invalid_tls(format!("client certificate and key: {error}")),
            })?;
        tls.alpn_protocols = vec![ALPN_CLIENT.to_vec()];
        let tls = QuicClientConfig::try_from(tls)
            .map_err(|error| invalid_tls(format!("QUIC needs TLS 1.3: {error}")))?;
        let mut config = quinn::ClientConfig::new(Arc::new(tls));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(IDLE_TIMEOUT).expect("30 s is a valid idle timeout"),
            ))
            .keep_alive_interval(Some(KEEP_ALIVE));
        config.transport_config(Arc::new(transport));
        Ok(config)
    }
}

fn invalid_tls(detail: String) -> Error {
    Error::Invalid {
        code: "invalid_tls",
        detail,
    }
}

/// The QUIC transport: nodes' addresses and a connection to each, opened
/// on first use.
pub(crate) struct QuicTransport {
    pub(crate) addrs: Vec<SocketAddr>,
    config: quinn::ClientConfig,
    connect_timeout: Duration,
    /// One local endpoint per address family (v4, v6), made on first use.
    locals: std::sync::Mutex<(Option<quinn::Endpoint>, Option<quinn::Endpoint>)>,
    /// Per node in `addrs`: its connection, opened by one task at a time.
    slots: Vec<Slot>,
}

impl fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicTransport")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

/// One node's connection. Tasks that wait while another opens it share
/// that attempt's outcome: when a node does not answer, `n` waiting tasks
/// fail after one connect timeout, not after `n` of them.
#[derive(Default)]
struct Slot {
    /// Connection attempts finished, successful or not.
    attempts: AtomicU64,
    state: tokio::sync::Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    connection: Option<quinn::Connection>,
    /// Why the last attempt failed.
    last_failure: Option<String>,
}

/// Why one exchange failed, and whether the node may have acted on it.
struct Failure {
    detail: String,
    /// The request frame and the end of its stream were handed to QUIC.
    sent: bool,
    /// The node answered, with something this client does not take.
    protocol: bool,
}

impl QuicTransport {
    pub(crate) fn new(
        addrs: Vec<SocketAddr>,
        tls: &ClientTls,
        connect_timeout: Duration,
    ) -> Result<QuicTransport, Error> {
        Ok(QuicTransport {
            config: tls.quinn_config()?,
            locals: std::sync::Mutex::new((None, None)),
            slots: addrs.iter().map(|_| Slot::default()).collect(),
            addrs,
            connect_timeout,
        })
    }

    /// The local endpoint for connections to `addr`'s address family.
    fn local_endpoint(&self, addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
        let mut locals = self
            .locals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (slot, local): (_, SocketAddr) = if addr.is_ipv4() {
            (&mut locals.0, (Ipv4Addr::UNSPECIFIED, 0).into())
        } else {
            (&mut locals.1, (Ipv6Addr::UNSPECIFIED, 0).into())
        };
        if let Some(endpoint) = slot {
            return Ok(endpoint.clone());
        }
        let endpoint = quinn::Endpoint::client(local)?;
        *slot = Some(endpoint.clone());
        Ok(endpoint)
    }

    /// A live connection to node `endpoint`, and whether it was reused.
    async fn connection(&self, endpoint: usize) -> Result<(quinn::Connection, bool), Error> {
        let addr = self.addrs[endpoint];
        let unsent = |detail: String| Error::Transport {
            detail: format!("connecting to {addr}: {detail}"),
            sent: false,
        };
        let slot = &self.slots[endpoint];
        let attempts_seen = slot.attempts.load(Ordering::Acquire);
        let mut state = slot.state.lock().await;
        if let Some(connection) = &state.connection {
            if connection.close_reason().is_none() {
                return Ok((connection.clone(), true));
            }
        }
        state.connection = None;
        if slot.attempts.load(Ordering::Acquire) != attempts_seen {
            // An attempt ended while this task waited, and failed (a
            // success would have left a connection): share its outcome.
            if let Some(failure) = &state.last_failure {
                return Err(unsent(failure.clone()));
            }
        }
        let outcome = self.connect(addr).await;
        slot.attempts.fetch_add(1, Ordering::AcqRel);
        match outcome {
            Ok(connection) => {
                state.connection = Some(connection.clone());
                state.last_failure = None;
                Ok((connection, false))
            }
            Err(failure) => {
                state.last_failure = Some(failure.clone());
                Err(unsent(failure))
            }
        }
    }

    /// Opens a connection to `addr`: the handshake, within the connect
    /// timeout.
    async fn connect(&self, addr: SocketAddr) -> Result<quinn::Connection, String> {
        let local_endpoint = self.local_endpoint(addr).map_err(|e| e.to_string())?;
        let connecting = local_endpoint
            .connect_with(self.config.clone(), addr, SERVER_NAME)
            .map_err(|error| error.to_string())?;
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(handshake_refusal(&error).unwrap_or_else(|| error.to_string())),
            Err(_) => Err(format!(
                "no handshake within {:?} (is a node's QUIC endpoint there?)",
                self.connect_timeout
            )),
        }
    }

    /// Sends `request` to node `endpoint` and returns its reply. A reused
    /// connection that turns out to be dead before the request was sent is
    /// replaced once.
    ///
    /// Each exchange waits for its answer at most the request's `timeout`
    /// plus [`ANSWER_GRACE`], as an HTTP call does: a node that stops
    /// answering (a paused process) fails the call as
    /// [`Error::Transport`] rather than holding it until the connection's
    /// idle timeout.
    async fn call(&self, endpoint: usize, request: &Request) -> Result<Reply, Error> {
        let frame = protocol::encode(request);
        let timeout_ms = match &request.op {
            Operation::Get { options, .. }
            | Operation::Put { options, .. }
            | Operation::Delete { options, .. }
            | Operation::Preflist { options, .. } => options.timeout_ms,
            Operation::Status | Operation::Ring => crate::options::DEFAULT_TIMEOUT_MS,
        };
        let (connection, reused) = self.connection(endpoint).await?;
        let (connection, result) = match exchange_within(&connection, &frame, timeout_ms).await {
            Err(failure) if reused && !failure.sent && connection.close_reason().is_some() => {
                let (connection, _) = self.connection(endpoint).await?;
                let result = exchange_within(&connection, &frame, timeout_ms).await;
                (connection, result)
            }
            result => (connection, result),
        };
        result.map_err(|failure| {
            let mut detail = format!("{}: {}", self.addrs[endpoint], failure.detail);
            // "connection lost" alone does not say that the node refused
            // this client's certificate; the close reason does.
            if let Some(reason) = connection.close_reason() {
                detail = format!("{detail} ({reason})");
            }
            if failure.protocol {
                Error::Protocol(detail)
            } else {
                Error::Transport {
                    detail,
                    sent: failure.sent,
                }
            }
        })
    }

    pub(crate) async fn get(&self, endpoint: usize, op: Operation) -> Result<Read, Error> {
        match self.call(endpoint, &Request::new(op)).await? {
            Reply::Found { siblings, context } => Ok(Read::Found(Found {
                siblings: siblings.into_iter().map(sibling).collect(),
                context: Context::new(context),
            })),
            Reply::NotFound { context } => Ok(Read::NotFound {
                context: context.map(Context::new),
            }),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) async fn put(&self, endpoint: usize, op: Operation) -> Result<Written, Error> {
        match self.call(endpoint, &Request::new(op)).await? {
            Reply::Written { context, siblings } => Ok(Written {
                context: Context::new(context),
                siblings: siblings.map(|siblings| siblings.into_iter().map(sibling).collect()),
            }),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) async fn delete(&self, endpoint: usize, op: Operation) -> Result<Deleted, Error> {
        match self.call(endpoint, &Request::new(op)).await? {
            Reply::Deleted { context } => Ok(Deleted::Deleted {
                context: Context::new(context),
            }),
            Reply::NothingToDelete { context } => Ok(Deleted::NothingToDelete {
                context: context.map(Context::new),
            }),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) async fn status(
        &self,
        endpoint: usize,
    ) -> Result<crate::types::ClusterStatus, Error> {
        match self
            .call(endpoint, &Request::new(Operation::Status))
            .await?
        {
            Reply::Status(status) => Ok(status),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) async fn ring(&self, endpoint: usize) -> Result<crate::types::RingStatus, Error> {
        match self.call(endpoint, &Request::new(Operation::Ring)).await? {
            Reply::Ring(ring) => Ok(ring),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) async fn preflist(
        &self,
        endpoint: usize,
        bucket: &str,
        key: &str,
        options: &crate::options::RequestOptions,
    ) -> Result<crate::types::PreflistStatus, Error> {
        let op = Operation::Preflist {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            options: *options,
        };
        match self.call(endpoint, &Request::new(op)).await? {
            Reply::Preflist(preflist) => Ok(preflist),
            other => Err(unexpected(other)),
        }
    }
}

/// [`exchange`], given at most `timeout_ms` plus [`ANSWER_GRACE`]. The
/// request may have reached the node when the time runs out.
async fn exchange_within(
    connection: &quinn::Connection,
    frame: &[u8],
    timeout_ms: u64,
) -> Result<Reply, Failure> {
    let deadline = Duration::from_millis(timeout_ms).saturating_add(ANSWER_GRACE);
    match tokio::time::timeout(deadline, exchange(connection, frame)).await {
        Ok(result) => result,
        Err(_) => Err(Failure {
            detail: format!(
                "no answer within {} ms (the request's timeout of {timeout_ms} ms and {} s \
                 more); the node may be stopped or overloaded",
                deadline.as_millis(),
                ANSWER_GRACE.as_secs()
            ),
            sent: true,
            protocol: false,
        }),
    }
}

/// One request on a stream of its own: the frame, the end of the client's
/// side, then the reply frame.
async fn exchange(connection: &quinn::Connection, frame: &[u8]) -> Result<Reply, Failure> {
    let unsent = |detail: String| Failure {
        detail,
        sent: false,
        protocol: false,
    };
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|error| unsent(error.to_string()))?;
    // Until the end of the stream is sent the node acts on nothing: it
    // reads the whole frame and the stream's end first.
    send.write_all(frame)
        .await
        .map_err(|error| unsent(error.to_string()))?;
    send.finish().map_err(|error| unsent(error.to_string()))?;
    let sent = |detail: String| Failure {
        detail,
        sent: true,
        protocol: false,
    };
    let refused = |detail: String| Failure {
        detail,
        sent: true,
        protocol: true,
    };
    let mut prefix = [0u8; protocol::LENGTH_BYTES];
    recv.read_exact(&mut prefix).await.map_err(|error| {
        // In TLS 1.3 the node checks the client's certificate after the
        // client has finished its side of the handshake; a refusal arrives
        // as the connection closing with a TLS alert, before any stream
        // was accepted: the request never reached the node.
        if let quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(lost)) = &error {
            if let Some(refusal) = handshake_refusal(lost) {
                return unsent(refusal);
            }
        }
        sent(format!("no reply: {error}"))
    })?;
    let len = protocol::body_len(prefix, MAX_REPLY_BYTES)
        .map_err(|error| refused(format!("frame_too_large: {error}")))?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|error| sent(format!("the reply was cut short: {error}")))?;
    let _ = recv.stop(quinn::VarInt::from_u32(0));
    protocol::decode_reply(&body).map_err(|error| refused(error.to_string()))
}

/// The reason a TLS handshake failed, in words, when `error` closed the
/// connection with a TLS alert (QUIC's CRYPTO_ERROR, `0x100` + the alert,
/// RFC 9001 §4.8).
fn handshake_refusal(error: &quinn::ConnectionError) -> Option<String> {
    let code = match error {
        quinn::ConnectionError::ConnectionClosed(close) => close.error_code,
        quinn::ConnectionError::TransportError(error) => error.code,
        _ => return None,
    };
    let alert = u64::from(code)
        .checked_sub(0x100)
        .filter(|alert| *alert < 0x100)?;
    let reason = match alert {
        // unknown_ca
        48 => {
            "the certificate is not from the cluster's CA: the node refused this client's \
               certificate, or the node's certificate is not signed by --tls-ca"
        }
        // bad_certificate, unsupported_certificate, certificate_unknown
        42 | 43 | 46 => "the certificate was refused (wrong kind or not valid for this use)",
        // certificate_expired
        45 => "a certificate has expired",
        // certificate_required
        116 => "the node requires a client certificate",
        // no_application_protocol
        120 => "the node does not speak the Chorus client protocol on this port",
        _ => return Some(format!("TLS handshake failed (TLS alert {alert})")),
    };
    Some(format!("TLS handshake failed: {reason}"))
}

/// A reply of the wrong kind, or a problem, as the error it stands for.
fn unexpected(reply: Reply) -> Error {
    match reply {
        Reply::Problem(problem) => {
            // HTTP sends `Retry-After: 1` with every 503.
            let retry_after = (problem.status == 503).then_some(Duration::from_secs(1));
            Error::Server {
                problem: Box::new(problem),
                retry_after,
            }
        }
        other => Error::Protocol(format!("an answer of the wrong kind: {other:?}")),
    }
}

fn sibling(sibling: protocol::Sibling) -> Sibling {
    Sibling {
        value: sibling.value,
        content_type: crate::client::stored_type(sibling.content_type),
        timestamp: sibling.timestamp,
    }
}
