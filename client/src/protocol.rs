//! The QUIC client protocol: what a client and a node exchange on the
//! client ALPN ([`ALPN_CLIENT`]).
//!
//! A client opens one QUIC connection to a node (mutual TLS: the client
//! presents a client certificate issued by the cluster CA, see
//! `chorus cert client`) and sends each request on a bidirectional stream of
//! its own: one request frame, then it finishes its side; the node answers
//! with one reply frame and finishes its side. Streams are independent, so
//! requests on one connection run concurrently.
//!
//! Each frame is a big-endian `u32` length followed by that many bytes of
//! MessagePack. Structs are maps with named fields (as `rmp_serde`'s
//! `to_vec_named` writes them); enums are externally tagged, a unit variant
//! as its name and any other as a map of one entry:
//!
//! ```text
//! frame     = length: u32 (big-endian)  body: MessagePack (length bytes)
//! request   = map { "version": uint (1), "op": op }
//! op        = "status" | "ring"
//!           | map { "preflist": map { "bucket": str, "key": str, "options": options } }
//!           | map { "get":    map { "bucket": str, "key": str, "options": options } }
//!           | map { "put":    map { "bucket": str, "key": str, "value": bin,
//!                                   "content_type": str | nil, "context": str | nil,
//!                                   "options": options } }
//!           | map { "delete": map { "bucket": str, "key": str, "context": str | nil,
//!                                   "options": options } }
//! options   = map { "r"?: str, "w"?: str, "pr"?: str, "pw"?: str, "timeout"?: uint,
//!                   "sync"?: bool, "sloppy"?: bool, "returnbody"?: bool }
//!                   values as in the HTTP query string; a missing entry takes its default;
//!                   "returnbody": true on anything but a put is refused (unknown_option)
//! reply     = map { "found":             map { "siblings": [sibling...], "context": str } }
//!           | map { "not_found":         map { "context": str | nil } }
//!           | map { "written":           map { "context": str, "siblings": [sibling...] | nil } }
//!           | map { "deleted":           map { "context": str } }
//!           | map { "nothing_to_delete": map { "context": str | nil } }
//!           | map { "status":            cluster status, as the JSON of GET /v1/cluster/status }
//!           | map { "ring":              the ring, as the JSON of GET /v1/cluster/ring }
//!           | map { "preflist":          as the JSON of GET /v1/cluster/preflist/{bucket}/{key} }
//!           | map { "problem":           problem, as the JSON problem body }
//! sibling   = map { "value": bin, "content_type": str | nil, "timestamp": str }
//! ```
//!
//! The semantics are those of the HTTP API (`chorus_node::http`): the same
//! options, the same context tokens (valid for one bucket and key, usable
//! over either transport), and errors as a [`ProblemBody`] with the same
//! status numbers and codes. Over HTTP a key with no live version is `404
//! not_found`; here it is the `not_found` reply (a delete without a context
//! that found nothing is `nothing_to_delete`). Codes of this protocol alone:
//!
//! | status | code | when |
//! |--------|------|------|
//! | `400`  | `malformed_request` | the body is not a request (not MessagePack, a missing field, a stream that ends inside its frame or carries more than one) |
//! | `400`  | `unsupported_version` | `version` is not [`PROTOCOL_VERSION`]; read before the rest of the request |
//! | `408`  | `body_timeout` | the request did not arrive within the node's body timeout |
//! | `413`  | `value_too_large` | the length says more than [`max_request_bytes`] for the node's value limit; refused from the length alone |
//!
//! # Limits
//!
//! Both sides check a frame's length before they allocate its body: a node
//! takes requests of at most [`max_request_bytes`] (its largest value plus
//! [`REQUEST_OVERHEAD_BYTES`] for bucket, key, context and options), a
//! client takes replies of at most [`MAX_REPLY_BYTES`] (its error is
//! `frame_too_large`). Bucket, key and value are then checked as over HTTP.
//!
//! Versioning: a node answers a request whose `version` it does not know
//! with `unsupported_version` (the reply is always in version 1's form).
//! New operations and reply kinds are new enum variants; an old node answers
//! an operation it does not know with `malformed_request`.

use serde::{Deserialize, Serialize};

use crate::options::RequestOptions;
use crate::problem::ProblemBody;
use crate::types::{ClusterStatus, PreflistStatus, RingStatus};

/// The ALPN protocol of the client protocol on a node's QUIC endpoint,
/// beside the internode one.
pub const ALPN_CLIENT: &[u8] = b"chorus-client/1";

/// The DNS name every node certificate carries and every client (and node)
/// connects to: the TLS handshake proves "a node of this cluster", not
/// which node.
pub const SERVER_NAME: &str = "chorus-node";

/// The protocol version this crate speaks, sent in every request.
pub const PROTOCOL_VERSION: u16 = 1;

/// Room in a request frame beyond the value, in bytes (64 KiB): bucket
/// (≤ 255 bytes), key (≤ 64 KiB would not fit with the rest, so the longest
/// key usable over QUIC is a little shorter), context token (≤ 4 KiB),
/// content type and options.
pub const REQUEST_OVERHEAD_BYTES: usize = 64 << 10;

/// The largest reply frame a client accepts, in bytes (65 MiB): a read may
/// return several siblings of the largest value.
pub const MAX_REPLY_BYTES: usize = 65 << 20;

/// The size of a frame's length prefix, in bytes.
pub const LENGTH_BYTES: usize = 4;

/// The largest request frame a node with a value limit of
/// `max_value_bytes` accepts.
pub fn max_request_bytes(max_value_bytes: usize) -> usize {
    max_value_bytes.saturating_add(REQUEST_OVERHEAD_BYTES)
}

/// One request: the protocol version and the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// [`PROTOCOL_VERSION`] for requests built by this crate.
    pub version: u16,
    pub op: Operation,
}

impl Request {
    /// A request of the current protocol version.
    pub fn new(op: Operation) -> Request {
        Request {
            version: PROTOCOL_VERSION,
            op,
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Read a key (HTTP `GET /v1/buckets/{bucket}/keys/{key}`).
    Get {
        bucket: String,
        key: String,
        options: RequestOptions,
    },
    /// Write a key (HTTP `PUT`).
    Put {
        bucket: String,
        key: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// The media type stored with the value, as HTTP's `Content-Type`.
        content_type: Option<String>,
        /// The causal context token of an earlier read or write of this key.
        context: Option<String>,
        options: RequestOptions,
    },
    /// Delete a key (HTTP `DELETE`).
    Delete {
        bucket: String,
        key: String,
        context: Option<String>,
        options: RequestOptions,
    },
    /// The cluster as the node sees it (HTTP `GET /v1/cluster/status`).
    Status,
    /// The ring the node holds (HTTP `GET /v1/cluster/ring`).
    Ring,
    /// A key's preference list (HTTP `GET
    /// /v1/cluster/preflist/{bucket}/{key}`); `options.sloppy` as there.
    Preflist {
        bucket: String,
        key: String,
        options: RequestOptions,
    },
}

/// One live version of a key in a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The content type the value was written with, if any.
    pub content_type: Option<String>,
    /// The version's HLC timestamp in its display form, e.g.
    /// `2026-11-22T02:30:00.123Z+0`.
    pub timestamp: String,
}

/// One reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// A read found live versions; `context` covers exactly these.
    Found {
        siblings: Vec<Sibling>,
        context: String,
    },
    /// A read found no live version; `context` is there when the key has a
    /// history (tombstones).
    NotFound { context: Option<String> },
    /// A write was stored. `siblings` with `returnbody` (and then `context`
    /// covers them).
    Written {
        context: String,
        siblings: Option<Vec<Sibling>>,
    },
    /// A delete wrote a tombstone; `context` covers it.
    Deleted { context: String },
    /// A delete without a context found nothing live; nothing was written.
    NothingToDelete { context: Option<String> },
    /// The answer to [`Operation::Status`].
    Status(ClusterStatus),
    /// The answer to [`Operation::Ring`].
    Ring(RingStatus),
    /// The answer to [`Operation::Preflist`].
    Preflist(PreflistStatus),
    /// The request was refused or failed.
    Problem(ProblemBody),
}

/// Why a frame could not be taken apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix says more than the receiver accepts; the body was
    /// not read.
    #[error("a frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The request's version is not [`PROTOCOL_VERSION`].
    #[error("protocol version {0} is not supported (this side speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u16),
    /// The body is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl FrameError {
    /// The stable code a node answers with for a refused request frame:
    /// `value_too_large`, `unsupported_version` or `malformed_request`.
    pub fn request_code(&self) -> &'static str {
        match self {
            FrameError::TooLarge { .. } => "value_too_large",
            FrameError::UnsupportedVersion(_) => "unsupported_version",
            FrameError::Malformed(_) => "malformed_request",
        }
    }

    /// The HTTP status number that goes with [`request_code`](Self::request_code).
    pub fn request_status(&self) -> u16 {
        match self {
            FrameError::TooLarge { .. } => 413,
            FrameError::UnsupportedVersion(_) | FrameError::Malformed(_) => 400,
        }
    }
}

/// `message` as a frame: its length, then its MessagePack with named fields.
///
/// # Panics
///
/// If the body does not fit a `u32` length (callers bound what they send
/// far below that).
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut frame = vec![0; LENGTH_BYTES];
    rmp_serde::encode::write_named(&mut frame, message)
        .expect("protocol messages serialize to MessagePack");
    let len = u32::try_from(frame.len() - LENGTH_BYTES).expect("a frame body fits a u32 length");
    frame[..LENGTH_BYTES].copy_from_slice(&len.to_be_bytes());
    frame
}

/// The body length a frame's prefix announces, refused when over `max`
/// before anything is allocated.
pub fn body_len(prefix: [u8; LENGTH_BYTES], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decodes a request body (without its length prefix). The version is read
/// first, so a request of an unknown version is `UnsupportedVersion` even
/// when the rest is not understood.
pub fn decode_request(body: &[u8]) -> Result<Request, FrameError> {
    #[derive(Deserialize)]
    struct Versioned {
        version: u16,
    }
    let Versioned { version } =
        rmp_serde::from_slice(body).map_err(|error| FrameError::Malformed(error.to_string()))?;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    rmp_serde::from_slice(body).map_err(|error| FrameError::Malformed(error.to_string()))
}

/// Decodes a reply body (without its length prefix).
pub fn decode_reply(body: &[u8]) -> Result<Reply, FrameError> {
    rmp_serde::from_slice(body).map_err(|error| FrameError::Malformed(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Quorum;

    fn body(frame: &[u8]) -> &[u8] {
        let len = body_len(frame[..4].try_into().unwrap(), usize::MAX).unwrap();
        assert_eq!(len, frame.len() - 4, "the prefix is the body's length");
        &frame[4..]
    }

    #[test]
    fn requests_round_trip() {
        let options = RequestOptions {
            w: Quorum::All,
            return_body: true,
            ..RequestOptions::default()
        };
        for op in [
            Operation::Get {
                bucket: "b".into(),
                key: "k/1".into(),
                options,
            },
            Operation::Put {
                bucket: "b".into(),
                key: "k".into(),
                value: vec![0, 1, 255],
                content_type: Some("application/json".into()),
                context: Some("token".into()),
                options,
            },
            Operation::Delete {
                bucket: "b".into(),
                key: "k".into(),
                context: None,
                options: RequestOptions::default(),
            },
            Operation::Status,
        ] {
            let request = Request::new(op);
            let frame = encode(&request);
            assert_eq!(decode_request(body(&frame)).unwrap(), request);
        }
    }

    #[test]
    fn replies_round_trip() {
        let sibling = Sibling {
            value: b"v".to_vec(),
            content_type: None,
            timestamp: "2026-11-22T02:30:00.123Z+0".into(),
        };
        for reply in [
            Reply::Found {
                siblings: vec![sibling.clone(), sibling.clone()],
                context: "c".into(),
            },
            Reply::NotFound { context: None },
            Reply::Written {
                context: "c".into(),
                siblings: Some(vec![sibling]),
            },
            Reply::Deleted {
                context: "c".into(),
            },
            Reply::NothingToDelete {
                context: Some("c".into()),
            },
            Reply::Problem(ProblemBody::new(400, "quorum_above_n", "t", "d")),
        ] {
            assert_eq!(decode_reply(body(&encode(&reply))).unwrap(), reply);
        }
    }

    #[test]
    fn the_encoding_has_named_fields_and_binary_values() {
        let frame = encode(&Request::new(Operation::Put {
            bucket: "b".into(),
            key: "k".into(),
            value: vec![9; 3],
            content_type: None,
            context: None,
            options: RequestOptions::default(),
        }));
        let body = body(&frame);
        // A map of two entries, "version" first.
        assert_eq!(body[0], 0x82);
        assert_eq!(&body[1..9], b"\xa7version");
        // The value is MessagePack bin 8, not an array of integers.
        assert!(body.windows(5).any(|w| w == [0xc4, 3, 9, 9, 9]), "{body:?}");
    }

    #[test]
    fn a_length_over_the_limit_is_refused_from_the_prefix() {
        assert_eq!(body_len(100u32.to_be_bytes(), 100), Ok(100));
        let error = body_len(101u32.to_be_bytes(), 100).unwrap_err();
        assert_eq!(error, FrameError::TooLarge { len: 101, max: 100 });
        assert_eq!(error.request_code(), "value_too_large");
        assert_eq!(error.request_status(), 413);
        assert_eq!(max_request_bytes(8 << 20), (8 << 20) + (64 << 10));
    }

    #[test]
    fn an_unknown_version_is_refused_before_the_rest_is_read() {
        #[derive(Serialize)]
        struct Future {
            version: u16,
            op: &'static str,
        }
        let frame = encode(&Future {
            version: 2,
            op: "teleport",
        });
        let error = decode_request(body(&frame)).unwrap_err();
        assert_eq!(error, FrameError::UnsupportedVersion(2));
        assert_eq!(error.request_code(), "unsupported_version");
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for garbage in [
            &b""[..],
            b"\xc1",
            b"hello",
            b"\x81\xa7version\x01",
            b"\x82\xa7version\x01\xa2op\xa8teleport",
            b"\xdf\xff\xff\xff\xff",
        ] {
            let error = decode_request(garbage).unwrap_err();
            assert_eq!(error.request_code(), "malformed_request", "{garbage:?}");
            assert!(decode_reply(garbage).is_err());
        }
    }
}
