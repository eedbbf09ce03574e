//! The node's side of the QUIC client protocol ([`chorus_client::protocol`],
//! where the wire format is described).
//!
//! The transport ([`crate::transport::QuicTransport::bind_serving_clients`])
//! hands over every connection that negotiated the client ALPN; [`serve`]
//! reads one request per bidirectional stream and answers it through the
//! same [`Service`] as the HTTP API, with the same checks (bucket and key,
//! value size, context token, options) and the same problem bodies
//! ([`crate::answer`]), so codes cannot differ between the two.
//!
//! # Bounds
//!
//! * Requests in flight: at most the service's
//!   [`max_concurrent_requests`](Service::max_concurrent_requests) over all
//!   client connections (a semaphore apart from HTTP's); one more is
//!   answered at once with `503 overloaded`.
//! * Streams per connection: QUIC stream credit
//!   ([`TransportConfig::max_client_streams`](crate::transport::TransportConfig::max_client_streams)).
//! * A request frame: at most
//!   [`max_request_bytes`](chorus_client::protocol::max_request_bytes) of
//!   the service's value limit, refused from its length prefix
//!   (`413 value_too_large`) before the body is read.
//! * Time: the whole request frame and the end of the client's side of the
//!   stream must arrive within the service's
//!   [`body_read_timeout`](Service::body_read_timeout) (else `408
//!   body_timeout`).
//!
//! A stream that carries no valid request gets a problem answer
//! (`malformed_request`, `unsupported_version`, …) and only that stream
//! ends; the connection keeps serving.

use std::sync::Arc;
use std::time::Duration;

use chorus_client::protocol::{self, FrameError, Operation, Reply, Request, Sibling, LENGTH_BYTES};
use chorus_client::ProblemBody;
use quinn::{RecvStream, SendStream, VarInt};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, warn};

use crate::answer::{self, read_answer, ReadAnswer, Sealer};
use crate::api::{ReadRequest, RequestError, Service, WriteReply, WriteRequest};
use crate::core::options::RequestKind;
use crate::core::RequestOptions;
use crate::telemetry;
use chorus_storage::object::check_content_type;

/// Stream stop code: the request frame was refused; its answer says why.
const STOP_REFUSED: VarInt = VarInt::from_u32(1);

/// Serves the client connections coming out of `connections` until the
/// channel ends.
pub async fn serve<S: Service>(mut connections: mpsc::Receiver<quinn::Connection>, service: S) {
    let slots = Arc::new(Semaphore::new(service.max_concurrent_requests().max(1)));
    while let Some(connection) = connections.recv().await {
        tokio::spawn(serve_connection(connection, service.clone(), slots.clone()));
    }
}

async fn serve_connection<S: Service>(
    connection: quinn::Connection,
    service: S,
    slots: Arc<Semaphore>,
) {
    loop {
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(serve_stream(send, recv, service.clone(), slots.clone()));
            }
            Err(error) => {
                debug!(peer = %connection.remote_address(), %error, "client connection ended");
                return;
            }
        }
    }
}

/// Why a stream's request was not handed to the service.
enum Refusal {
    Frame(FrameError),
    Timeout(Duration),
    Overloaded,
}

impl Refusal {
    fn problem(&self) -> ProblemBody {
        match self {
            Refusal::Frame(error) => ProblemBody::new(
                error.request_status(),
                error.request_code(),
                match error {
                    FrameError::TooLarge { .. } => "Value too large",
                    FrameError::UnsupportedVersion(_) => "Unsupported protocol version",
                    FrameError::Malformed(_) => "Malformed request",
                },
                error.to_string(),
            ),
            Refusal::Timeout(timeout) => ProblemBody::new(
                408,
                "body_timeout",
                "Request body timed out",
                format!("the request did not arrive within {timeout:?}"),
            ),
            Refusal::Overloaded => answer::problem(&RequestError::Overloaded(
                "too many QUIC client requests in flight".into(),
            )),
        }
    }
}

async fn serve_stream<S: Service>(
    mut send: SendStream,
    mut recv: RecvStream,
    service: S,
    slots: Arc<Semaphore>,
) {
    let reply = match slots.try_acquire_owned() {
        Err(_) => Reply::Problem(Refusal::Overloaded.problem()),
        Ok(slot) => {
            let reply = match read_request(&mut recv, &service).await {
                Ok(request) => answer_request(&service, request).await,
                Err(refusal) => {
                    // Nothing more of this stream is wanted.
                    let _ = recv.stop(STOP_REFUSED);
                    debug!(code = %refusal.problem().code, "QUIC client request refused");
                    Reply::Problem(refusal.problem())
                }
            };
            drop(slot);
            reply
        }
    };
    if let Reply::Problem(problem) = &reply {
        if problem.status >= 500 && problem.status != 503 {
            warn!(code = %problem.code, detail = %problem.detail, "QUIC client request failed");
        }
    }
    let frame = protocol::encode(&reply);
    if let Err(error) = send.write_all(&frame).await {
        debug!(%error, "the client went away before its answer");
        return;
    }
    let _ = send.finish();
}

/// Reads the one request frame of a stream and the end of the stream,
/// within the service's body timeout.
async fn read_request<S: Service>(recv: &mut RecvStream, service: &S) -> Result<Request, Refusal> {
    let timeout = service.body_read_timeout();
    let max = protocol::max_request_bytes(service.max_value_bytes());
    let body = tokio::time::timeout(timeout, read_frame(recv, max))
        .await
        .map_err(|_| Refusal::Timeout(timeout))??;
    protocol::decode_request(&body).map_err(Refusal::Frame)
}

async fn read_frame(recv: &mut RecvStream, max: usize) -> Result<Vec<u8>, Refusal> {
    let malformed = |reason: String| Refusal::Frame(FrameError::Malformed(reason));
    let mut prefix = [0u8; LENGTH_BYTES];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|error| malformed(format!("no complete length prefix: {error}")))?;
    let len = protocol::body_len(prefix, max).map_err(Refusal::Frame)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|error| malformed(format!("the stream ended inside its frame: {error}")))?;
    match recv.read(&mut [0u8; 1]).await {
        Ok(None) => Ok(body),
        Ok(Some(_)) => Err(malformed(
            "more than one frame on the request's stream".into(),
        )),
        Err(error) => Err(malformed(format!("the stream failed: {error}"))),
    }
}

/// The service's answer to a decoded request, or the problem with it.
/// Key operations are counted and timed in the node's metrics as over
/// HTTP (`chorus_requests_total`, `chorus_request_duration_seconds`).
async fn answer_request<S: Service>(service: &S, request: Request) -> Reply {
    let started = std::time::Instant::now();
    let observed = match &request.op {
        Operation::Get { options, .. } => Some((telemetry::Operation::Get, options.r)),
        Operation::Put { options, .. } => Some((telemetry::Operation::Put, options.w)),
        Operation::Delete { options, .. } => Some((telemetry::Operation::Delete, options.w)),
        Operation::Status | Operation::Ring | Operation::Preflist { .. } => None,
    };
    let reply = match dispatch(service, request.op).await {
        Ok(reply) => reply,
        Err(error) => Reply::Problem(answer::problem(&error)),
    };
    if let (Some((operation, quorum)), Some(metrics)) = (observed, service.node_metrics()) {
        let outcome = match &reply {
            Reply::Found { siblings, .. } if siblings.len() > 1 => "siblings",
            Reply::NotFound { .. } | Reply::NothingToDelete { .. } => "not_found",
            Reply::Problem(problem) => problem.code.as_str(),
            _ => "ok",
        };
        metrics.record(|| {
            telemetry::record_request(
                operation,
                telemetry::consistency_label(quorum),
                outcome,
                started.elapsed(),
            )
        });
    }
    reply
}

async fn dispatch<S: Service>(service: &S, op: Operation) -> Result<Reply, RequestError> {
    match op {
        Operation::Get {
            bucket,
            key,
            options,
        } => {
            let sealer = target(service, &bucket, &key)?;
            let options = checked(options, RequestKind::Get)?;
            let reply = service
                .get(ReadRequest {
                    bucket: sealer.bucket.clone(),
                    key: sealer.key.clone(),
                    options,
                })
                .await?;
            Ok(match read_answer(&reply.object, &sealer) {
                ReadAnswer::NotFound { token } => Reply::NotFound { context: token },
                ReadAnswer::Found { token, siblings } => Reply::Found {
                    siblings: siblings.into_iter().map(sibling).collect(),
                    context: token,
                },
            })
        }
        Operation::Put {
            bucket,
            key,
            value,
            content_type,
            context,
            options,
        } => {
            let sealer = target(service, &bucket, &key)?;
            let options = checked(options, RequestKind::Put)?;
            let max = service.max_value_bytes();
            if value.len() > max {
                return Err(RequestError::ValueTooLarge {
                    size: value.len(),
                    max,
                });
            }
            if let Some(content_type) = &content_type {
                check_content_type(content_type)?;
            }
            let context = open(&sealer, context.as_deref())?;
            let reply = write(
                service,
                &sealer,
                Some(value),
                content_type,
                context,
                options,
            )
            .await?;
            Ok(match reply {
                WriteReply::Written {
                    object: Some(object),
                    ..
                } => match read_answer(&object, &sealer) {
                    ReadAnswer::Found { token, siblings } => Reply::Written {
                        context: token,
                        siblings: Some(siblings.into_iter().map(sibling).collect()),
                    },
                    ReadAnswer::NotFound { token } => Reply::Written {
                        context: token.unwrap_or_else(|| sealer.seal(&object.context_for_reader())),
                        siblings: Some(Vec::new()),
                    },
                },
                WriteReply::Written { context, .. } => Reply::Written {
                    context: sealer.seal(&context),
                    siblings: None,
                },
                WriteReply::NothingToDelete { .. } => {
                    return Err(RequestError::Internal(
                        "a write answered as a delete".into(),
                    ))
                }
            })
        }
        Operation::Delete {
            bucket,
            key,
            context,
            options,
        } => {
            let sealer = target(service, &bucket, &key)?;
            let options = checked(options, RequestKind::Delete)?;
            let context = open(&sealer, context.as_deref())?;
            let reply = write(service, &sealer, None, None, context, options).await?;
            Ok(match reply {
                WriteReply::NothingToDelete { object } => Reply::NothingToDelete {
                    context: (!object.is_empty())
                        .then(|| sealer.seal(&object.context_for_reader())),
                },
                written @ WriteReply::Written { .. } => Reply::Deleted {
                    context: sealer.seal(&written.context()),
                },
            })
        }
        Operation::Status => Ok(Reply::Status(service.cluster_status().await?)),
        Operation::Ring => Ok(match service.ring().await? {
            Some(ring) => Reply::Ring(ring),
            None => not_ready(),
        }),
        Operation::Preflist {
            bucket,
            key,
            options,
        } => {
            let sealer = target(service, &bucket, &key)?;
            let options = checked(options, RequestKind::Preflist)?;
            Ok(
                match service
                    .preflist(sealer.bucket.clone(), sealer.key.clone(), options.sloppy)
                    .await?
                {
                    Some(preflist) => Reply::Preflist(preflist),
                    None => not_ready(),
                },
            )
        }
    }
}

/// The answer before the node holds a ring: `503 not_ready`, as over HTTP.
fn not_ready() -> Reply {
    Reply::Problem(ProblemBody::new(
        503,
        "not_ready",
        "Node not ready",
        "the node is not ready to serve requests",
    ))
}

async fn write<S: Service>(
    service: &S,
    sealer: &Sealer,
    value: Option<Vec<u8>>,
    content_type: Option<String>,
    context: Option<chorus_storage::context::CausalContext>,
    options: RequestOptions,
) -> Result<WriteReply, RequestError> {
    service
        .put(WriteRequest {
            bucket: sealer.bucket.clone(),
            key: sealer.key.clone(),
            value,
            content_type,
            context,
            options,
        })
        .await
}

/// The sealer of a request's key, once bucket and key are checked as the
/// HTTP API checks them.
fn target<S: Service>(service: &S, bucket: &str, key: &str) -> Result<Sealer, RequestError> {
    use chorus_client::limits::{check_bucket, check_key};
    check_bucket(bucket)
        .and_then(|()| check_key(key))
        .map_err(|error| RequestError::InvalidKey {
            what: error.what.into(),
            reason: error.reason,
        })?;
    Ok(Sealer::new(
        service.context_key(),
        bucket.as_bytes(),
        key.as_bytes(),
    ))
}

/// The options exactly as the HTTP API would take them for a `kind` of
/// request: they go through the query-string parser, which checks what
/// deserialization does not (for instance the timeout's range), with the
/// same codes; `returnbody` is a put's only.
fn checked(options: RequestOptions, kind: RequestKind) -> Result<RequestOptions, RequestError> {
    let pairs = options.to_pairs();
    Ok(RequestOptions::parse_for(
        kind,
        pairs.iter().map(|(name, value)| (*name, value.as_str())),
    )?)
}

fn open(
    sealer: &Sealer,
    token: Option<&str>,
) -> Result<Option<chorus_storage::context::CausalContext>, RequestError> {
    token
        .map(|token| sealer.open(token))
        .transpose()
        .map_err(RequestError::from)
}

fn sibling(version: answer::LiveVersion) -> Sibling {
    Sibling {
        value: version.value.to_vec(),
        content_type: version.content_type,
        timestamp: version.timestamp,
    }
}
