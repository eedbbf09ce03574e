//! What the client-facing APIs ask of a node.
//!
//! The HTTP layer ([`crate::http`]) turns requests into the plain values
//! here and hands them to a [`Service`]; the runtime implements `Service` by
//! passing the request to the node's engine and awaiting its answer. Tests of
//! the HTTP layer implement `Service` with a fake.
//!
//! Every error a client can see is a [`RequestError`] with an HTTP status and
//! a stable machine-readable [`code`](RequestError::code).

use std::future::Future;

use chorus_storage::context::{CausalContext, ContextError, ContextKey};
use chorus_storage::object::{ContentTypeError, Object};

use crate::core::{GetError, OptionsError, PutError, RequestOptions, WriteError};

/// How long a request body may take to arrive, unless configured otherwise.
pub const DEFAULT_BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub use chorus_client::limits::DEFAULT_MAX_VALUE_BYTES;

/// The most HTTP requests a node serves at once, unless configured
/// otherwise; more are refused with `503 overloaded` and `Retry-After`.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;

/// A read of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub bucket: Vec<u8>,
    pub key: Vec<u8>,
    pub options: RequestOptions,
}

/// A write (`value: Some`) or delete (`value: None`) of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRequest {
    pub bucket: Vec<u8>,
    pub key: Vec<u8>,
    /// `None` deletes the key (a tombstone version).
    pub value: Option<Vec<u8>>,
    /// The value's media type (the `Content-Type` of a `PUT`), stored with
    /// the new version and returned with it on reads; `None` when the
    /// client gave none, and always for a delete.
    pub content_type: Option<String>,
    /// The causal context from an earlier read; `None` for a blind write.
    pub context: Option<CausalContext>,
    pub options: RequestOptions,
}

/// The answer to a read: the join of the replicas' objects. Its live
/// siblings are the values, its context is what a client writes back.
/// An object without live siblings reads as not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadReply {
    pub object: Object,
}

/// The answer to a write or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteReply {
    /// The write was stored. `context` covers what the client's own context
    /// covered plus the new version, and nothing else: never a concurrent
    /// version the client was not shown (design.md §3 rule 3). With
    /// `returnbody`, `object` is the coordinator's copy of the key after the
    /// write, to be shown like a read (its context covers its siblings).
    Written {
        context: CausalContext,
        object: Option<Object>,
    },
    /// A delete without a context read the key and found no live version,
    /// so nothing was written. `object` is what the read returned (its
    /// tombstones' context, or an empty object for a key never written).
    NothingToDelete { object: Object },
}

impl WriteReply {
    /// The context to hand the client: the writer's own for a write, that
    /// of the siblings shown for a `returnbody` write, the read's for a
    /// delete that found nothing.
    pub fn context(&self) -> CausalContext {
        match self {
            WriteReply::Written {
                object: Some(object),
                ..
            }
            | WriteReply::NothingToDelete { object } => object.context_for_reader(),
            WriteReply::Written { context, .. } => context.clone(),
        }
    }
}

/// A request the node refused or could not complete.
///
/// It is also the answer a coordinating replica sends back for a write
/// forwarded to it (`Message::ForwardReply`), in MessagePack with the
/// variant's name: only the failures a write its sender already checked
/// can meet travel ([`for_the_wire`](RequestError::for_the_wire)); the
/// variants of refused input never do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum RequestError {
    /// A request option was invalid. Nothing was done.
    #[error(transparent)]
    #[serde(skip)]
    Options(#[from] OptionsError),
    /// The causal context token was malformed. Nothing was done.
    #[error("invalid causal context: {0}")]
    #[serde(skip)]
    Context(#[from] ContextError),
    /// The bucket or key is empty or too long. Nothing was done.
    #[error("invalid {what}: {reason}")]
    #[serde(skip)]
    InvalidKey {
        what: std::borrow::Cow<'static, str>,
        reason: String,
    },
    /// The value is larger than the node accepts. Nothing was done.
    #[error("value of {size} bytes exceeds the limit of {max} bytes")]
    #[serde(skip)]
    ValueTooLarge { size: usize, max: usize },
    /// The content type cannot be stored with a version: not a media type,
    /// not visible ASCII, or longer than
    /// [`MAX_CONTENT_TYPE_BYTES`](chorus_storage::object::MAX_CONTENT_TYPE_BYTES).
    /// Nothing was done.
    #[error("invalid content type: {0}")]
    #[serde(skip)]
    InvalidContentType(#[from] ContentTypeError),
    /// The coordinating replica refused the write. Nothing was done.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A read missed its quorum or timed out.
    #[error(transparent)]
    #[serde(skip)]
    Get(#[from] GetError),
    /// A write missed its quorum or timed out; see [`PutError`] for what
    /// may have been applied.
    #[error(transparent)]
    Put(#[from] PutError),
    /// The node cannot serve requests yet (starting, no ring) or any more
    /// (shutting down). Nothing was done.
    #[error("node unavailable: {0}")]
    Unavailable(String),
    /// The node is overloaded: too many requests wait for it, or a request
    /// waited too long for admission. Nothing was done; retry later.
    #[error("node overloaded: {0}")]
    Overloaded(String),
    /// The node failed internally (for instance its storage engine).
    #[error("internal error: {0}")]
    Internal(String),
}

impl RequestError {
    /// This error as a coordinating replica sends it back for a forwarded
    /// write: as it is when it can travel (a refused or failed write, an
    /// unavailable or overloaded node, an internal failure), as
    /// [`Internal`](RequestError::Internal) with its message otherwise (a
    /// refusal of input the forwarding node had checked already).
    pub fn for_the_wire(self) -> RequestError {
        match self {
            error @ (RequestError::Write(_)
            | RequestError::Put(_)
            | RequestError::Unavailable(_)
            | RequestError::Overloaded(_)
            | RequestError::Internal(_)) => error,
            other => RequestError::Internal(other.to_string()),
        }
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::Options(_)
            | RequestError::Context(_)
            | RequestError::InvalidKey { .. }
            | RequestError::InvalidContentType(_) => 400,
            RequestError::ValueTooLarge { .. } => 413,
            RequestError::Write(WriteError::TooManySiblings { .. }) => 409,
            RequestError::Write(WriteError::ObjectTooLarge { .. }) => 413,
            RequestError::Write(WriteError::DotReused(_)) => 500,
            RequestError::Write(_) => 400,
            RequestError::Get(GetError::QuorumNotReached(_)) => 503,
            RequestError::Get(GetError::Timeout(_)) => 504,
            RequestError::Put(PutError::QuorumNotReached { .. }) => 503,
            RequestError::Put(PutError::Indeterminate { .. } | PutError::Failed { .. }) => 504,
            RequestError::Unavailable(_) | RequestError::Overloaded(_) => 503,
            RequestError::Internal(_) => 500,
        }
    }

    /// A stable, machine-readable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::Options(error) => error.code(),
            RequestError::Context(error) => error.code(),
            RequestError::InvalidKey { .. } => "invalid_key",
            RequestError::ValueTooLarge { .. } => "value_too_large",
            RequestError::InvalidContentType(_) => "invalid_content_type",
            RequestError::Write(error) => error.code(),
            RequestError::Get(error) => error.code(),
            RequestError::Put(error) => error.code(),
            RequestError::Unavailable(_) => "unavailable",
            RequestError::Overloaded(_) => "overloaded",
            RequestError::Internal(_) => "internal",
        }
    }
}

pub use chorus_client::types::{
    ClusterStatus, MemberStatus, NodeRef, PreflistEntry, PreflistStatus, RingMember, RingPartition,
    RingStatus,
};

/// What a node offers its client APIs.
pub trait Service: Clone + Send + Sync + 'static {
    /// Reads a key at the request's `r`/`pr`.
    fn get(
        &self,
        request: ReadRequest,
    ) -> impl Future<Output = Result<ReadReply, RequestError>> + Send;

    /// Writes or deletes a key at the request's `w`/`pw`.
    fn put(
        &self,
        request: WriteRequest,
    ) -> impl Future<Output = Result<WriteReply, RequestError>> + Send;

    /// The membership as this node sees it.
    fn cluster_status(&self) -> impl Future<Output = Result<ClusterStatus, RequestError>> + Send;

    /// The ring this node holds, or `None` before it holds one.
    fn ring(&self) -> impl Future<Output = Result<Option<RingStatus>, RequestError>> + Send {
        async { Ok(None) }
    }

    /// Where a key's copies go now (primaries, up or down, and the
    /// fallbacks standing in for down ones when `sloppy`), or `None` before
    /// the node holds a ring.
    fn preflist(
        &self,
        bucket: Vec<u8>,
        key: Vec<u8>,
        sloppy: bool,
    ) -> impl Future<Output = Result<Option<PreflistStatus>, RequestError>> + Send {
        let _ = (bucket, key, sloppy);
        async { Ok(None) }
    }

    /// The bearer token every route but `/livez` and `/readyz` requires,
    /// if any.
    fn bearer_token(&self) -> Option<BearerToken> {
        None
    }

    /// Whether the node can serve requests now (it holds a ring and its
    /// storage is open): what `/readyz` reports.
    fn is_ready(&self) -> bool;

    /// The cluster's key for sealing and opening causal context tokens.
    fn context_key(&self) -> ContextKey;

    /// The largest value accepted, in bytes.
    fn max_value_bytes(&self) -> usize {
        DEFAULT_MAX_VALUE_BYTES
    }

    /// How long the HTTP layer waits for a request body before answering
    /// `408 body_timeout`.
    fn body_read_timeout(&self) -> std::time::Duration {
        DEFAULT_BODY_READ_TIMEOUT
    }

    /// The most requests the HTTP layer serves at once; further requests
    /// are shed with `503 overloaded` rather than queued, so memory held by
    /// request bodies stays bounded (limit × largest value).
    fn max_concurrent_requests(&self) -> usize {
        DEFAULT_MAX_CONCURRENT_REQUESTS
    }

    /// The node's metrics in the Prometheus text format, for `GET /metrics`.
    fn metrics(&self) -> impl Future<Output = Result<String, RequestError>> + Send {
        async { Ok(String::new()) }
    }

    /// The node's recorder, which the HTTP layer records requests into;
    /// `None` (the default) records nothing.
    fn node_metrics(&self) -> Option<&crate::telemetry::NodeMetrics> {
        None
    }
}

/// A bearer token (RFC 6750) that HTTP clients must present in
/// `Authorization: Bearer <token>`. Its `Debug` form hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

/// Why a configured bearer token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid bearer token: {0}")]
pub struct BearerTokenError(&'static str);

/// The longest bearer token accepted, in bytes.
pub const MAX_BEARER_TOKEN_BYTES: usize = 4096;

impl BearerToken {
    /// A token: 1 to [`MAX_BEARER_TOKEN_BYTES`] bytes of RFC 6750's
    /// `token68` alphabet (letters, digits, `-._~+/`, then optional `=`
    /// padding). Leading and trailing whitespace (a file's newline) is
    /// trimmed first.
    pub fn new(token: &str) -> Result<BearerToken, BearerTokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(BearerTokenError("it is empty"));
        }
        if token.len() > MAX_BEARER_TOKEN_BYTES {
            return Err(BearerTokenError("it is longer than 4096 bytes"));
        }
        let body = token.trim_end_matches('=');
        let token68 = |c: char| c.is_ascii_alphanumeric() || "-._~+/".contains(c);
        if body.is_empty() || !body.chars().all(token68) {
            return Err(BearerTokenError(
                "only letters, digits, '-', '.', '_', '~', '+', '/' and trailing '=' are allowed",
            ));
        }
        Ok(BearerToken(token.to_owned()))
    }

    /// Whether `presented` is this token, in time that does not depend on
    /// where they differ or on their lengths: both are hashed with SHA-256
    /// and the digests compared in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use ring::digest::{digest, SHA256};
        use subtle::ConstantTimeEq as _;
        let expected = digest(&SHA256, self.0.as_bytes());
        let presented = digest(&SHA256, presented);
        expected.as_ref().ct_eq(presented.as_ref()).into()
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_match_only_themselves_and_hide_in_debug() {
        let token = BearerToken::new("s3cr3t-Token_~+/==\n").unwrap();
        assert!(token.matches(b"s3cr3t-Token_~+/=="));
        assert!(!token.matches(b"s3cr3t-Token_~+/="));
        assert!(!token.matches(b"s3cr3t-Token_~+/==x"));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
    }

    #[test]
    fn bearer_tokens_outside_token68_are_refused() {
        for bad in ["", "  ", "a b", "=abc", "===", "tök", &"a".repeat(4097)] {
            assert!(BearerToken::new(bad).is_err(), "{bad:?}");
        }
        assert!(BearerToken::new(&"a".repeat(4096)).is_ok());
    }
}
