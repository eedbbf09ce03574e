//! The Rust client: one API over the node's HTTP API (and, with the `quic`
//! feature, its QUIC client protocol).
//!
//! A [`Client`] is cheap to clone (it is a handle on a shared connection
//! pool, or on one QUIC connection per node) and may be used from many
//! tasks at once. Both transports have the same methods, answers and error
//! codes. Every call takes the
//! per-request [`RequestOptions`] (`r`, `w`, `pr`, `pw`, `timeout`, `sync`,
//! `sloppy`, `returnbody`); `&RequestOptions::default()` asks for quorum
//! reads and writes. An HTTP call waits for its answer at most the
//! request's `timeout` plus [`ANSWER_GRACE`], and so does a QUIC call.
//!
//! ```no_run
//! # async fn example() -> Result<(), chorus_client::Error> {
//! use chorus_client::{Client, Read, RequestOptions, Value};
//!
//! let client = Client::http("http://127.0.0.1:8080")?;
//! let options = RequestOptions::default();
//! let written = client
//!     .put("users", "ada", Value::from("{\"lang\":\"en\"}").content_type("application/json"), None, &options)
//!     .await?;
//! match client.get("users", "ada", &options).await? {
//!     Read::Found(found) => println!("{} version(s)", found.siblings.len()),
//!     Read::NotFound { .. } => println!("gone"),
//! }
//! // Overwrite what this client wrote: hand back the context it was given.
//! client.put("users", "ada", Value::from("{}"), Some(&written.context), &options).await?;
//! # Ok(()) }
//! ```
//!
//! Over QUIC (the `quic` feature, on by default), with a client certificate
//! from `chorus cert client --name NAME --ca-dir DIR --out DIR` (or the one
//! `chorus dev` writes into its data directory), against a node's QUIC
//! address:
//!
//! ```no_run
//! # async fn example() -> Result<(), chorus_client::Error> {
//! use chorus_client::{Client, ClientTls, Read, RequestOptions};
//!
//! let tls = ClientTls::from_dir("chorus-data/tls/client")?; // ca.pem, client.pem, client.key
//! let client = Client::quic("127.0.0.1:7000".parse().unwrap(), tls)?;
//! if let Read::Found(found) = client.get("users", "ada", &RequestOptions::default()).await? {
//!     println!("{:?}", found.value());
//! }
//! # Ok(()) }
//! ```
//!
//! # Retries
//!
//! A call is retried (up to [`ClientBuilder::retries`] times, with a short
//! growing backoff, on the next endpoint when several are configured) only
//! when that is safe: reads on any transport failure or `503`/`504`, and
//! writes and deletes only when nothing was applied — the connection could
//! not be made, or the node answered with an error whose outcome is
//! [`WriteOutcome::NotApplied`] and a retryable status (`503`). A write
//! that may have applied is never retried; its error says so
//! ([`Error::may_have_applied`]).

#[cfg(feature = "quic")]
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use crate::limits::{check_bucket, check_key, DEFAULT_MAX_VALUE_BYTES, MAX_CONTENT_TYPE_BYTES};
use crate::options::{RequestKind, RequestOptions};
use crate::problem::{ProblemBody, WriteOutcome, PROBLEM_CONTENT_TYPE};
use crate::types::{
    ClusterStatus, PreflistStatus, RingStatus, SiblingsBody, CONTEXT_HEADER,
    DEFAULT_VALUE_CONTENT_TYPE, TIMESTAMP_HEADER,
};

/// A key's causal context: an opaque token, valid only for the key it was
/// issued for. Hand it back on a write or delete to say which versions the
/// client has seen (those are replaced; others stay as siblings).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Context(String);

impl Context {
    /// A context from a token string, e.g. one kept from an
    /// `X-Chorus-Context` header.
    pub fn new(token: impl Into<String>) -> Context {
        Context(token.into())
    }

    /// The token, as sent in `X-Chorus-Context`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A value to write, with the `Content-Type` to store beside it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Value {
    pub bytes: Vec<u8>,
    /// Stored with the version and returned on reads; `None` reads back as
    /// `application/octet-stream`.
    pub content_type: Option<String>,
}

impl Value {
    /// Sets the content type stored with the value.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Value {
        self.content_type = Some(content_type.into());
        self
    }
}

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Value {
        Value {
            bytes,
            content_type: None,
        }
    }
}

impl From<&[u8]> for Value {
    fn from(bytes: &[u8]) -> Value {
        Value::from(bytes.to_vec())
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::from(text.as_bytes().to_vec())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Value {
        Value::from(text.into_bytes())
    }
}

/// One live version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sibling {
    pub value: Vec<u8>,
    /// The content type it was written with; `None` for
    /// `application/octet-stream`, what a value written without one is
    /// (the same over HTTP and QUIC).
    pub content_type: Option<String>,
    /// When its write was coordinated: the HLC timestamp's display form,
    /// e.g. `2026-11-22T02:30:00.123Z+0`.
    pub timestamp: String,
}

/// A key's live versions and the context that covers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// At least one; more than one are siblings (concurrent writes) that a
    /// write with [`context`](Self::context) resolves.
    pub siblings: Vec<Sibling>,
    pub context: Context,
}

impl Found {
    /// The value when there is exactly one version.
    pub fn value(&self) -> Option<&[u8]> {
        match self.siblings.as_slice() {
            [only] => Some(&only.value),
            _ => None,
        }
    }
}

/// The answer to a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// One or more live versions.
    Found(Found),
    /// No live version. `context` is there when the key has a history (it
    /// was deleted): writing with it replaces the tombstones.
    NotFound { context: Option<Context> },
}

/// The answer to a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// What the client's own context covered plus the new version: write
    /// with it to replace this write (and nothing concurrent to it).
    pub context: Context,
    /// With `returnbody`: the key's versions after the write (and then
    /// `context` covers them all).
    pub siblings: Option<Vec<Sibling>>,
}

/// The answer to a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// A tombstone was written; `context` covers it.
    Deleted { context: Context },
    /// A delete without a context found no live version, so nothing was
    /// written.
    NothingToDelete { context: Option<Context> },
}

/// Why a call failed. Every kind has a stable [`code`](Error::code).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node refused or could not complete the request; the problem
    /// body carries the code, counts and outcome.
    #[error("{} ({}): {}", .problem.code, .problem.status, .problem.detail)]
    Server {
        problem: Box<ProblemBody>,
        /// From `Retry-After`, when the node sent one.
        retry_after: Option<Duration>,
    },
    /// The request was refused before it was sent, with the code a node
    /// would give (`invalid_key`, `invalid_content_type`, `value_too_large`,
    /// `unknown_option` for `returnbody` on anything but a put) or
    /// `invalid_url`.
    #[error("{detail}")]
    Invalid { code: &'static str, detail: String },
    /// No answer: the connection could not be made, broke, or the answer
    /// did not arrive in time. `sent` tells whether the request may have
    /// reached the node.
    #[error("transport error: {detail}")]
    Transport { detail: String, sent: bool },
    /// The node answered with something this client does not understand.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl Error {
    /// The stable code: the problem body's for server errors, else the
    /// code of a refusal before sending (`invalid_key`,
    /// `invalid_content_type`, `value_too_large`, `unknown_option`,
    /// `invalid_url`), `transport` or `protocol`.
    pub fn code(&self) -> &str {
        match self {
            Error::Server { problem, .. } => &problem.code,
            Error::Invalid { code, .. } => code,
            Error::Transport { .. } => "transport",
            Error::Protocol(_) => "protocol",
        }
    }

    /// The HTTP status of a server error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Server { problem, .. } => Some(problem.status),
            _ => None,
        }
    }

    /// The problem body of a server error.
    pub fn problem(&self) -> Option<&ProblemBody> {
        match self {
            Error::Server { problem, .. } => Some(problem),
            _ => None,
        }
    }

    /// For a failed write or delete: whether it may have taken effect. A
    /// server error says so itself; a transport error after the request was
    /// sent may have; an error before sending did not.
    pub fn may_have_applied(&self) -> bool {
        match self {
            Error::Server { problem, .. } => problem.outcome == Some(WriteOutcome::MayHaveApplied),
            Error::Transport { sent, .. } => *sent,
            Error::Invalid { .. } | Error::Protocol(_) => false,
        }
    }

    /// Whether retrying the call is safe and may succeed: for reads any
    /// transport error or `503`/`504`; for writes only errors that applied
    /// nothing.
    pub fn is_retryable(&self, write: bool) -> bool {
        match self {
            Error::Server { problem, .. } => {
                let transient = matches!(problem.status, 503 | 504);
                if !write {
                    return transient;
                }
                // Overload, unavailability and readiness refusals did
                // nothing; a quorum failure says what it left.
                problem.status == 503
                    && problem.outcome.unwrap_or(WriteOutcome::NotApplied)
                        == WriteOutcome::NotApplied
            }
            Error::Transport { sent, .. } => !write || !sent,
            Error::Invalid { .. } | Error::Protocol(_) => false,
        }
    }
}

/// Configures a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    #[cfg(feature = "quic")]
    quic: Vec<SocketAddr>,
    #[cfg(feature = "quic")]
    tls: Option<crate::quic::ClientTls>,
    token: Option<String>,
    retries: u32,
    connect_timeout: Duration,
    max_value_bytes: usize,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            endpoints: Vec::new(),
            #[cfg(feature = "quic")]
            quic: Vec::new(),
            #[cfg(feature = "quic")]
            tls: None,
            token: None,
            retries: 2,
            connect_timeout: Duration::from_secs(5),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

impl ClientBuilder {
    /// Adds a node's HTTP base URL, e.g. `http://127.0.0.1:8080`. Calls go
    /// to the endpoints in turn; a retry goes to the next one.
    pub fn endpoint(mut self, url: impl Into<String>) -> ClientBuilder {
        self.endpoints.push(url.into());
        self
    }

    /// Adds a node's QUIC address (its `quic_addr`) to talk to over the
    /// QUIC client protocol, with `tls` (the last one given is used for
    /// all). A client speaks one transport: HTTP endpoints and QUIC
    /// addresses cannot be mixed.
    #[cfg(feature = "quic")]
    pub fn quic(mut self, addr: SocketAddr, tls: crate::quic::ClientTls) -> ClientBuilder {
        self.quic.push(addr);
        self.tls = Some(tls);
        self
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn bearer_token(mut self, token: impl Into<String>) -> ClientBuilder {
        self.token = Some(token.into());
        self
    }

    /// How many times a call is retried when that is safe (default 2).
    pub fn retries(mut self, retries: u32) -> ClientBuilder {
        self.retries = retries;
        self
    }

    /// How long to wait for a connection (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// The largest value this client sends (default
    /// [`DEFAULT_MAX_VALUE_BYTES`], the nodes' default). A larger value is
    /// refused with `value_too_large` before it is sent: a node refuses it
    /// anyway, and over HTTP it answers `413` before reading the body and
    /// closes the connection, which a client still sending sees as a broken
    /// connection rather than the answer. Raise it for nodes configured to
    /// take larger values.
    pub fn max_value_bytes(mut self, max: usize) -> ClientBuilder {
        self.max_value_bytes = max;
        self
    }

    /// Builds the client. Fails with `invalid_url` when there is no
    /// endpoint, one is not an `http://` URL (nodes serve plain HTTP; TLS
    /// is QUIC's, see [`ClientBuilder::quic`]), or HTTP and QUIC are
    /// mixed; with `invalid_tls` when the QUIC TLS material is unusable.
    pub fn build(self) -> Result<Client, Error> {
        #[cfg(feature = "quic")]
        if let Some(tls) = &self.tls {
            if !self.endpoints.is_empty() {
                return Err(invalid_url("a client speaks HTTP or QUIC, not both".into()));
            }
            let quic =
                crate::quic::QuicTransport::new(self.quic.clone(), tls, self.connect_timeout)?;
            return Ok(self.client(Transport::Quic(Box::new(quic))));
        }
        if self.endpoints.is_empty() {
            return Err(invalid_url("no endpoint given".into()));
        }
        let mut urls = Vec::new();
        for endpoint in &self.endpoints {
            let url = Url::parse(endpoint)
                .map_err(|error| invalid_url(format!("{endpoint:?}: {error}")))?;
            if url.scheme() == "https" {
                return Err(invalid_url(format!(
                    "{endpoint:?}: nodes serve plain HTTP; for TLS use the QUIC client protocol"
                )));
            }
            if url.scheme() != "http" || url.cannot_be_a_base() {
                return Err(invalid_url(format!("{endpoint:?} is not an http:// URL")));
            }
            urls.push(url);
        }
        let mut headers = HeaderMap::new();
        if let Some(token) = &self.token {
            let value = HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| invalid_url("the bearer token is not a valid header value".into()))?;
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(self.connect_timeout)
            .build()
            .map_err(|error| Error::Transport {
                detail: error.to_string(),
                sent: false,
            })?;
        Ok(self.client(Transport::Http(HttpTransport { http, urls })))
    }

    fn client(&self, transport: Transport) -> Client {
        Client {
            inner: Arc::new(Inner {
                transport,
                retries: self.retries,
                max_value_bytes: self.max_value_bytes,
                next: AtomicUsize::new(0),
            }),
        }
    }
}

fn invalid_url(detail: String) -> Error {
    Error::Invalid {
        code: "invalid_url",
        detail,
    }
}

/// A handle on a Chorus cluster. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    transport: Transport,
    retries: u32,
    max_value_bytes: usize,
    /// The endpoint the next call starts at (round robin).
    next: AtomicUsize,
}

#[derive(Debug)]
enum Transport {
    Http(HttpTransport),
    /// The QUIC client protocol ([`crate::protocol`]).
    #[cfg(feature = "quic")]
    Quic(Box<crate::quic::QuicTransport>),
}

impl Transport {
    fn endpoints(&self) -> usize {
        match self {
            Transport::Http(http) => http.urls.len(),
            #[cfg(feature = "quic")]
            Transport::Quic(quic) => quic.addrs.len(),
        }
    }
}

impl Client {
    /// A client of the node at `url` over HTTP, with default settings.
    pub fn http(url: &str) -> Result<Client, Error> {
        Client::builder().endpoint(url).build()
    }

    /// A client of the node whose QUIC endpoint is at `addr`, over the QUIC
    /// client protocol, with default settings. One connection is opened on
    /// the first call and reused by every call (and clone); a lost one is
    /// opened again. Calls must run within a Tokio runtime.
    ///
    /// Fails with `invalid_tls` when the TLS material does not parse.
    #[cfg(feature = "quic")]
    pub fn quic(addr: SocketAddr, tls: crate::quic::ClientTls) -> Result<Client, Error> {
        Client::builder().quic(addr, tls).build()
    }

    /// A builder for more endpoints, a bearer token or other settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Reads a key at the options' `r`/`pr`.
    ///
    /// Errors: `invalid_key`, and `unknown_option` for `returnbody` (a
    /// put's option only), before sending; the node's codes (option codes,
    /// `quorum_not_reached`, `timeout`, …) as [`Error::Server`].
    pub async fn get(
        &self,
        bucket: &str,
        key: &str,
        options: &RequestOptions,
    ) -> Result<Read, Error> {
        check_names(bucket, key)?;
        check_options(options, RequestKind::Get)?;
        self.retrying(false, |endpoint| async move {
            match &self.inner.transport {
                Transport::Http(http) => http.get(endpoint, bucket, key, options).await,
                #[cfg(feature = "quic")]
                Transport::Quic(quic) => {
                    let op = crate::protocol::Operation::Get {
                        bucket: bucket.to_owned(),
                        key: key.to_owned(),
                        options: *options,
                    };
                    quic.get(endpoint, op).await
                }
            }
        })
        .await
    }

    /// Writes `value` at the options' `w`/`pw`. `context` (from a read or
    /// an earlier write of this key) names the versions this write replaces;
    /// without one the write is blind and adds a sibling to what is there.
    ///
    /// Errors: `invalid_key`, `invalid_content_type` before sending; the
    /// node's codes (`value_too_large`, `context_forged`,
    /// `quorum_not_reached` with [`Error::may_have_applied`], …).
    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        value: Value,
        context: Option<&Context>,
        options: &RequestOptions,
    ) -> Result<Written, Error> {
        check_names(bucket, key)?;
        if value.bytes.len() > self.inner.max_value_bytes {
            return Err(Error::Invalid {
                code: "value_too_large",
                detail: format!(
                    "value of {} bytes exceeds the limit of {} bytes",
                    value.bytes.len(),
                    self.inner.max_value_bytes
                ),
            });
        }
        if let Some(content_type) = &value.content_type {
            check_content_type(content_type)?;
        }
        let value = &value;
        self.retrying(true, |endpoint| async move {
            match &self.inner.transport {
                Transport::Http(http) => {
                    http.put(endpoint, bucket, key, value, context, options)
                        .await
                }
                #[cfg(feature = "quic")]
                Transport::Quic(quic) => {
                    let op = crate::protocol::Operation::Put {
                        bucket: bucket.to_owned(),
                        key: key.to_owned(),
                        value: value.bytes.clone(),
                        content_type: value.content_type.clone(),
                        context: context.map(|c| c.as_str().to_owned()),
                        options: *options,
                    };
                    quic.put(endpoint, op).await
                }
            }
        })
        .await
    }

    /// Deletes a key: with a context, the versions it covers; without one,
    /// what a read at the options' `r` finds (Riak's behaviour).
    ///
    /// Errors: `invalid_key`, and `unknown_option` for `returnbody` (a
    /// put's option only: the answer says [`Deleted`] either way), before
    /// sending; the node's codes as [`Error::Server`].
    pub async fn delete(
        &self,
        bucket: &str,
        key: &str,
        context: Option<&Context>,
        options: &RequestOptions,
    ) -> Result<Deleted, Error> {
        check_names(bucket, key)?;
        check_options(options, RequestKind::Delete)?;
        self.retrying(true, |endpoint| async move {
            match &self.inner.transport {
                Transport::Http(http) => http.delete(endpoint, bucket, key, context, options).await,
                #[cfg(feature = "quic")]
                Transport::Quic(quic) => {
                    let op = crate::protocol::Operation::Delete {
                        bucket: bucket.to_owned(),
                        key: key.to_owned(),
                        context: context.map(|c| c.as_str().to_owned()),
                        options: *options,
                    };
                    quic.delete(endpoint, op).await
                }
            }
        })
        .await
    }

    /// The cluster's members as the node answering sees them.
    pub async fn status(&self) -> Result<ClusterStatus, Error> {
        self.retrying(false, |endpoint| async move {
            match &self.inner.transport {
                Transport::Http(http) => {
                    http.json(endpoint, &["v1", "cluster", "status"], None)
                        .await
                }
                #[cfg(feature = "quic")]
                Transport::Quic(quic) => quic.status(endpoint).await,
            }
        })
        .await
    }

    /// The ring the node answering holds: partitions, owners, and each
    /// member's share. `503 not_ready` before a ring exists.
    pub async fn ring(&self) -> Result<RingStatus, Error> {
        self.retrying(false, |endpoint| async move {
            match &self.inner.transport {
                Transport::Http(http) => {
                    http.json(endpoint, &["v1", "cluster", "ring"], None).await
                }
                #[cfg(feature = "quic")]
                Transport::Quic(quic) => quic.ring(endpoint).await,
            }
        })
        .await
    }

    /// Where a key's copies go now, as a coordinator on the node answering
    /// would send them: its primaries, up or down, and the fallbacks
    /// standing in for down ones (none with `sloppy=false`).
    pub async fn preflist(
        &self,
        bucket: &str,
        key: &str,
        options: &RequestOptions,
    ) -> Result<PreflistStatus, Error> {
        check_names(bucket, key)?;
        check_options(options, RequestKind::Preflist)?;
        let segments = ["v1", "cluster", "preflist", bucket, key];
        let segments = &segments;
        self.retrying(false, |endpoint| async move {
            match &self.inner.transport {
                Transport::Http(http) => http.json(endpoint, segments, Some(options)).await,
                #[cfg(feature = "quic")]
                Transport::Quic(quic) => quic.preflist(endpoint, bucket, key, options).await,
            }
        })
        .await
    }

    /// Runs `call` against successive endpoints until it succeeds, fails in
    /// a way retrying cannot fix or is unsafe to retry, or the retries run
    /// out.
    async fn retrying<'a, T, F, Fut>(&'a self, write: bool, call: F) -> Result<T, Error>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>> + 'a,
    {
        let endpoints = self.inner.transport.endpoints();
        let first = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut attempt = 0;
        loop {
            let endpoint = (first + attempt as usize) % endpoints;
            match call(endpoint).await {
                Err(error) if attempt < self.inner.retries && error.is_retryable(write) => {
                    let backoff = match &error {
                        Error::Server {
                            retry_after: Some(after),
                            ..
                        } => (*after).min(Duration::from_secs(2)),
                        _ => Duration::from_millis(50 << attempt.min(5)),
                    };
                    tokio::time::sleep(backoff).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }
}

fn check_names(bucket: &str, key: &str) -> Result<(), Error> {
    check_bucket(bucket)
        .and_then(|()| check_key(key))
        .map_err(|error| Error::Invalid {
            code: "invalid_key",
            detail: error.to_string(),
        })
}

/// Options a node would refuse for a `kind` of request before looking at
/// them against N: `returnbody` on anything but a put.
fn check_options(options: &RequestOptions, kind: RequestKind) -> Result<(), Error> {
    options.check_for(kind).map_err(|error| Error::Invalid {
        code: error.code(),
        detail: error.to_string(),
    })
}

/// A content type the node would store: visible ASCII and spaces, at most
/// [`MAX_CONTENT_TYPE_BYTES`] bytes, not empty.
fn check_content_type(content_type: &str) -> Result<(), Error> {
    let valid = !content_type.is_empty()
        && content_type.len() <= MAX_CONTENT_TYPE_BYTES
        && content_type
            .bytes()
            .all(|b| b == b' ' || b.is_ascii_graphic());
    if valid {
        Ok(())
    } else {
        Err(Error::Invalid {
            code: "invalid_content_type",
            detail: format!(
                "a content type is 1 to {MAX_CONTENT_TYPE_BYTES} bytes of visible ASCII"
            ),
        })
    }
}

/// The longest request target (path and query) an HTTP node parses (the
/// `http` crate's limit); longer ones are answered `414` before the node
/// sees them.
const MAX_HTTP_URI_BYTES: usize = 65_534;

/// The HTTP transport: one reqwest pool over the node URLs.
#[derive(Debug)]
struct HttpTransport {
    http: reqwest::Client,
    urls: Vec<Url>,
}

impl HttpTransport {
    /// `base/segments…?options`, each segment percent-encoded (a `/` in a
    /// key becomes `%2F`).
    fn url(&self, endpoint: usize, segments: &[&str], options: Option<&RequestOptions>) -> Url {
        let mut url = self.urls[endpoint].clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("checked to be a base URL when built");
            path.pop_if_empty();
            path.extend(segments);
        }
        if let Some(options) = options {
            let pairs = options.to_pairs();
            if !pairs.is_empty() {
                url.query_pairs_mut().extend_pairs(pairs);
            }
        }
        url
    }

    /// The URL of a key route. A key whose URL would pass the 64 KiB an
    /// HTTP node takes (`414`) is refused here with `invalid_key`: it can
    /// only be reached over QUIC.
    fn key_url(
        &self,
        endpoint: usize,
        bucket: &str,
        key: &str,
        options: &RequestOptions,
    ) -> Result<Url, Error> {
        let url = self.url(
            endpoint,
            &["v1", "buckets", bucket, "keys", key],
            Some(options),
        );
        let len = url.path().len() + url.query().map_or(0, |query| query.len() + 1);
        if len > MAX_HTTP_URI_BYTES {
            return Err(Error::Invalid {
                code: "invalid_key",
                detail: format!(
                    "the key makes a request target of {len} bytes, more than the \
                     {MAX_HTTP_URI_BYTES} an HTTP node accepts; shorten it or use QUIC"
                ),
            });
        }
        Ok(url)
    }

    async fn get(
        &self,
        endpoint: usize,
        bucket: &str,
        key: &str,
        options: &RequestOptions,
    ) -> Result<Read, Error> {
        let request = self.http.get(self.key_url(endpoint, bucket, key, options)?);
        let response = send(request, options.timeout_ms).await?;
        read_answer(response).await
    }

    async fn put(
        &self,
        endpoint: usize,
        bucket: &str,
        key: &str,
        value: &Value,
        context: Option<&Context>,
        options: &RequestOptions,
    ) -> Result<Written, Error> {
        let mut request = self
            .http
            .put(self.key_url(endpoint, bucket, key, options)?)
            .body(value.bytes.clone());
        if let Some(content_type) = &value.content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        if let Some(context) = context {
            request = request.header(CONTEXT_HEADER, context.as_str());
        }
        let response = send(request, options.timeout_ms).await?;
        if options.return_body {
            return match read_answer(response).await? {
                Read::Found(found) => Ok(Written {
                    context: found.context,
                    siblings: Some(found.siblings),
                }),
                Read::NotFound { .. } => Err(Error::Protocol(
                    "a write with returnbody answered not found".into(),
                )),
            };
        }
        let response = success(response).await?;
        Ok(Written {
            context: context_header(response.headers())?
                .ok_or_else(|| Error::Protocol("a write answered without a context".into()))?,
            siblings: None,
        })
    }

    async fn delete(
        &self,
        endpoint: usize,
        bucket: &str,
        key: &str,
        context: Option<&Context>,
        options: &RequestOptions,
    ) -> Result<Deleted, Error> {
        let mut request = self
            .http
            .delete(self.key_url(endpoint, bucket, key, options)?);
        if let Some(context) = context {
            request = request.header(CONTEXT_HEADER, context.as_str());
        }
        let response = send(request, options.timeout_ms).await?;
        if response.status() == StatusCode::NOT_FOUND && is_problem(&response) {
            return Ok(Deleted::NothingToDelete {
                context: context_header(response.headers())?,
            });
        }
        let response = success(response).await?;
        match context_header(response.headers())? {
            Some(context) => Ok(Deleted::Deleted { context }),
            None => Err(Error::Protocol(
                "a delete answered without a context".into(),
            )),
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: usize,
        segments: &[&str],
        options: Option<&RequestOptions>,
    ) -> Result<T, Error> {
        let response = send(
            self.http.get(self.url(endpoint, segments, options)),
            options.map_or(crate::options::DEFAULT_TIMEOUT_MS, |o| o.timeout_ms),
        )
        .await?;
        let response = success(response).await?;
        let bytes = body(response).await?;
        serde_json::from_slice(&bytes).map_err(|error| Error::Protocol(error.to_string()))
    }
}

/// How long a client waits for a node's whole answer beyond the request's
/// own `timeout`, which bounds only the node's work: time for the request
/// and the answer to travel, and for a busy node to take the request.
pub const ANSWER_GRACE: Duration = Duration::from_secs(5);

/// Sends an HTTP request and waits at most `timeout_ms` (the request's
/// `timeout` option) plus [`ANSWER_GRACE`] for the whole answer: a node
/// that stops answering (a paused process, a dead machine whose
/// connection the kernel still holds open) fails the call as
/// [`Error::Transport`] instead of hanging it.
async fn send(
    request: reqwest::RequestBuilder,
    timeout_ms: u64,
) -> Result<reqwest::Response, Error> {
    let deadline = Duration::from_millis(timeout_ms).saturating_add(ANSWER_GRACE);
    request.timeout(deadline).send().await.map_err(|error| {
        if error.is_timeout() {
            return Error::Transport {
                sent: true,
                detail: format!(
                    "no answer within {} ms (the request's timeout of {timeout_ms} ms and {} s \
                     more); the node may be stopped or overloaded",
                    deadline.as_millis(),
                    ANSWER_GRACE.as_secs()
                ),
            };
        }
        // A request that could not be built or could not connect never
        // reached a node.
        let sent = !(error.is_builder() || error.is_connect());
        // The URL holds the key, which may be long: leave it out.
        let error = error.without_url();
        Error::Transport {
            sent,
            detail: error_chain(&error),
        }
    })
}

/// An error and its sources on one line: reqwest's own message alone
/// rarely says what failed.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn body(response: reqwest::Response) -> Result<bytes::Bytes, Error> {
    response.bytes().await.map_err(|error| Error::Transport {
        detail: error_chain(&error),
        sent: true,
    })
}

/// Whether the answer carries a problem body (a `404` for a key, not a
/// proxy's page).
fn is_problem(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with(PROBLEM_CONTENT_TYPE))
}

/// The response if it is a success, else its problem body as an error.
async fn success(response: reqwest::Response) -> Result<reqwest::Response, Error> {
    if response.status().is_success() {
        return Ok(response);
    }
    Err(server_error(response).await)
}

async fn server_error(response: reqwest::Response) -> Error {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let bytes = match body(response).await {
        Ok(bytes) => bytes,
        Err(error) => return error,
    };
    match serde_json::from_slice::<ProblemBody>(&bytes) {
        Ok(problem) => Error::Server {
            problem: Box::new(problem),
            retry_after,
        },
        Err(_) => Error::Protocol(format!(
            "status {status} without a problem body: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )),
    }
}

fn context_header(headers: &HeaderMap) -> Result<Option<Context>, Error> {
    headers
        .get(CONTEXT_HEADER)
        .map(|value| {
            value
                .to_str()
                .map(Context::new)
                .map_err(|_| Error::Protocol("a context header that is not ASCII".into()))
        })
        .transpose()
}

/// A read's answer (also a `returnbody` write's): `200` one raw value,
/// `300` the siblings as JSON, `404 not_found` nothing live.
async fn read_answer(response: reqwest::Response) -> Result<Read, Error> {
    let status = response.status();
    if status == StatusCode::NOT_FOUND && is_problem(&response) {
        let context = context_header(response.headers())?;
        let error = server_error(response).await;
        return match error.code() {
            "not_found" => Ok(Read::NotFound { context }),
            _ => Err(error),
        };
    }
    if status == StatusCode::MULTIPLE_CHOICES {
        let bytes = body(response).await?;
        return siblings(&bytes).map(Read::Found);
    }
    let response = success(response).await?;
    let headers = response.headers().clone();
    let context = context_header(&headers)?
        .ok_or_else(|| Error::Protocol("a read answered without a context".into()))?;
    let timestamp = headers
        .get(TIMESTAMP_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let content_type = stored_type(
        headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
    );
    let value = body(response).await?.to_vec();
    Ok(Read::Found(Found {
        siblings: vec![Sibling {
            value,
            content_type,
            timestamp,
        }],
        context,
    }))
}

/// A content type as [`Sibling::content_type`] holds it: `None` for the
/// default, `application/octet-stream`, however the transport showed it
/// (HTTP names it on a single value, leaves it out in a siblings body).
pub(crate) fn stored_type(content_type: Option<String>) -> Option<String> {
    content_type.filter(|content_type| content_type != DEFAULT_VALUE_CONTENT_TYPE)
}

fn siblings(bytes: &[u8]) -> Result<Found, Error> {
    let body: SiblingsBody =
        serde_json::from_slice(bytes).map_err(|error| Error::Protocol(error.to_string()))?;
    let siblings = body
        .siblings
        .into_iter()
        .map(|sibling| {
            Ok(Sibling {
                value: STANDARD
                    .decode(&sibling.value)
                    .map_err(|error| Error::Protocol(format!("sibling value: {error}")))?,
                content_type: stored_type(sibling.content_type),
                timestamp: sibling.timestamp,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    if siblings.is_empty() {
        return Err(Error::Protocol("a siblings body without siblings".into()));
    }
    Ok(Found {
        siblings,
        context: Context::new(body.context),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(status: u16, code: &str, outcome: Option<WriteOutcome>) -> Error {
        let mut problem = ProblemBody::new(status, code, "t", "d");
        problem.outcome = outcome;
        Error::Server {
            problem: Box::new(problem),
            retry_after: None,
        }
    }

    #[test]
    fn writes_are_retried_only_when_nothing_was_applied() {
        let overloaded = problem(503, "overloaded", None);
        assert!(overloaded.is_retryable(true) && overloaded.is_retryable(false));
        let quorum_nothing = problem(503, "quorum_not_reached", Some(WriteOutcome::NotApplied));
        assert!(quorum_nothing.is_retryable(true));
        let quorum_some = problem(
            503,
            "quorum_not_reached",
            Some(WriteOutcome::MayHaveApplied),
        );
        assert!(!quorum_some.is_retryable(true));
        assert!(quorum_some.may_have_applied());
        let timeout = problem(
            504,
            "timeout_indeterminate",
            Some(WriteOutcome::MayHaveApplied),
        );
        assert!(!timeout.is_retryable(true));
        assert!(timeout.is_retryable(false));
        let bad = problem(400, "invalid_quorum", None);
        assert!(!bad.is_retryable(false) && !bad.is_retryable(true));
        let unsent = Error::Transport {
            detail: String::new(),
            sent: false,
        };
        assert!(unsent.is_retryable(true) && !unsent.may_have_applied());
        let sent = Error::Transport {
            detail: String::new(),
            sent: true,
        };
        assert!(!sent.is_retryable(true) && sent.is_retryable(false) && sent.may_have_applied());
    }

    #[test]
    fn keys_are_percent_encoded_as_one_path_segment() {
        let transport = HttpTransport {
            http: reqwest::Client::new(),
            urls: vec![Url::parse("http://127.0.0.1:8080/").unwrap()],
        };
        let mut options = RequestOptions::default();
        options.w = crate::options::Quorum::All;
        let url = transport.key_url(0, "b b", "a/b?c#d%", &options).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/v1/buckets/b%20b/keys/a%2Fb%3Fc%23d%25?w=all"
        );
    }

    #[test]
    fn a_key_too_long_for_an_http_request_line_is_refused_before_sending() {
        let transport = HttpTransport {
            http: reqwest::Client::new(),
            urls: vec![Url::parse("http://127.0.0.1:8080/").unwrap()],
        };
        let options = RequestOptions::default();
        let fits = "k".repeat(MAX_HTTP_URI_BYTES - "/v1/buckets/b/keys/".len());
        assert!(transport.key_url(0, "b", &fits, &options).is_ok());
        let error = transport
            .key_url(0, "b", &format!("{fits}k"), &options)
            .unwrap_err();
        assert_eq!(error.code(), "invalid_key");
        assert!(!error.may_have_applied());
        assert!(error.to_string().len() < 200, "{error}");
    }

    #[test]
    fn bad_names_and_content_types_are_refused_before_sending() {
        assert_eq!(check_names("", "k").unwrap_err().code(), "invalid_key");
        assert_eq!(
            check_names("b", &"k".repeat(crate::limits::MAX_KEY_BYTES + 1))
                .unwrap_err()
                .code(),
            "invalid_key"
        );
        // `.` and `..` would be dropped from the URL as dot segments (the
        // request would go to another path): refused before sending.
        for (bucket, key) in [("b", "."), ("b", ".."), (".", "k"), ("..", "k")] {
            let error = check_names(bucket, key).unwrap_err();
            assert_eq!(error.code(), "invalid_key", "{bucket}/{key}");
            assert!(error.to_string().contains("dot segment"), "{error}");
        }
        let transport = HttpTransport {
            http: reqwest::Client::new(),
            urls: vec![Url::parse("http://127.0.0.1:8080/").unwrap()],
        };
        for name in ["a.b", "...", ".x", "%2E"] {
            assert!(check_names(name, name).is_ok(), "{name}");
            let url = transport
                .key_url(0, name, name, &RequestOptions::default())
                .unwrap();
            let encoded = name.replace('%', "%25");
            assert_eq!(
                url.path(),
                format!("/v1/buckets/{encoded}/keys/{encoded}"),
                "{name}"
            );
        }
        assert!(check_content_type("application/json; charset=utf-8").is_ok());
        for bad in ["", "a\nb", &"a".repeat(MAX_CONTENT_TYPE_BYTES + 1)] {
            assert_eq!(
                check_content_type(bad).unwrap_err().code(),
                "invalid_content_type"
            );
        }
        assert_eq!(Client::http("ftp://x").unwrap_err().code(), "invalid_url");
    }

    /// A delete with `returnbody` would answer `404` whether or not it
    /// deleted something, and be taken for "nothing to delete".
    #[tokio::test]
    async fn returnbody_is_refused_before_sending_anything_but_a_put() {
        // Nothing listens there: a request that was sent fails as transport.
        let client = Client::builder()
            .endpoint("http://127.0.0.1:9")
            .retries(0)
            .build()
            .unwrap();
        let options = RequestOptions {
            return_body: true,
            ..RequestOptions::default()
        };
        let refusals = [
            client.get("b", "k", &options).await.map(|_| ()),
            client.delete("b", "k", None, &options).await.map(|_| ()),
            client.preflist("b", "k", &options).await.map(|_| ()),
        ];
        for refusal in refusals {
            let error = refusal.unwrap_err();
            assert_eq!(error.code(), "unknown_option", "{error}");
            assert_eq!(error.to_string(), "returnbody applies to PUT only");
            assert!(!error.may_have_applied());
        }
        let put = client.put("b", "k", Value::from("v"), None, &options).await;
        assert_eq!(put.unwrap_err().code(), "transport");
    }
}
