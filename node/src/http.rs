//! The HTTP API of a node: keys, cluster status, ring and preference
//! lists, its OpenAPI document, metrics and health checks.
//!
//! [`router`] turns requests into the plain values of [`crate::api`] and
//! hands them to a [`Service`]; [`serve`] runs that router on an already
//! bound listener until a shutdown future completes. This module parses and
//! checks what it can without the cluster (path, query parameters, causal
//! context token, value size) and answers with the service's result; it
//! knows nothing of replicas, rings or storage.
//!
//! The same API is served over QUIC ([`crate::client_quic`], format in
//! [`chorus_client::protocol`]): same options, context tokens, problem
//! bodies and codes ([`crate::answer`] builds them for both).
//!
//! # Routes
//!
//! The router is built from one table, [`ROUTES`]; `docs/openapi.json`
//! (served at `/v1/openapi.json`) describes exactly those routes, and a
//! test fails when the two differ.
//!
//! | method   | path                                   | success |
//! |----------|----------------------------------------|---------|
//! | `GET`    | `/v1/buckets/{bucket}/keys/{key}`      | `200` one live version, `300` several, `404` none |
//! | `PUT`    | `/v1/buckets/{bucket}/keys/{key}`      | `204` |
//! | `DELETE` | `/v1/buckets/{bucket}/keys/{key}`      | `204` |
//! | `GET`    | `/v1/cluster/status`                   | `200` JSON [`ClusterStatus`](crate::api::ClusterStatus) |
//! | `GET`    | `/v1/cluster/ring`                     | `200` JSON [`RingStatus`](crate::api::RingStatus); `503` `not_ready` before a ring exists |
//! | `GET`    | `/v1/cluster/preflist/{bucket}/{key}`  | `200` JSON [`PreflistStatus`](crate::api::PreflistStatus); `503` `not_ready` before a ring exists |
//! | `GET`    | `/v1/openapi.json`                     | `200` the OpenAPI 3.1 document ([`OPENAPI_JSON`]) |
//! | `GET`    | `/livez`                               | `200` `ok` while the process serves HTTP |
//! | `GET`    | `/readyz`                              | `200` `ok` when the node can serve requests, else `503` `not_ready` |
//! | `GET`    | `/metrics`                           | `200` Prometheus text format 0.0.4 ([`crate::telemetry`], `docs/metrics.md`) |
//!
//! Every `GET` also answers `HEAD`. Another method on a known path is
//! `405` `method_not_allowed` with an `Allow` header naming the methods
//! the path has. Only the key routes and the preference list take query
//! parameters ([request options](#request-options)); the others refuse any
//! with `400` `unknown_option` naming it ("unknown query parameter "foo":
//! this route takes none"), as the key routes refuse a name they do not
//! know.
//!
//! Bucket and key are path segments, percent-decoded; a `/` inside either
//! is written `%2F`, a `%` as `%25`, and a `%` that does not start an
//! escape of two hex digits is `400` `invalid_key` (taken literally, `%ZZ`
//! would name the key `%25ZZ` names). They must be UTF-8, non-empty, not
//! `.` or `..` (dot segments, which HTTP clients remove from a path, RFC
//! 3986 §5.2.4, also when written `%2E`: a value under such a name could
//! not be reached reliably; names that merely contain dots are fine), and
//! at most [`MAX_BUCKET_BYTES`] and [`MAX_KEY_BYTES`] bytes long (else
//! `400` `invalid_key`). The `http` crate refuses URIs longer than 64 KiB before
//! a request gets here, so in practice the longest key that can be
//! addressed is a little shorter than [`MAX_KEY_BYTES`], and shorter still
//! when it needs percent-encoding; a longer URI is answered `414` by the
//! HTTP parser, without a problem body. An empty key cannot be written in
//! a path (`/keys/` is `404` `no_route`); an empty bucket (`/buckets//`)
//! is `400` `invalid_key`.
//!
//! ## Reading a key
//!
//! * One live version: `200`, the raw value with the `Content-Type` it was
//!   written with (`application/octet-stream` when it was written without
//!   one), the key's causal context in `X-Chorus-Context` and the version's
//!   HLC timestamp in `X-Chorus-Timestamp` (e.g. `2026-11-22T02:30:00.123Z+0`).
//! * Several live versions (siblings): `300 Multiple Choices` with
//!   `X-Chorus-Context` and a JSON [`SiblingsBody`]:
//!   `{"context": "<token>", "siblings": [{"value": "<base64>", "timestamp":
//!   "<hlc>", "deleted": false, "content_type": "application/json"}, …]}`.
//!   Values are standard base64 (with padding); `content_type` is left out
//!   for a version written without one; only live versions are listed.
//! * No live version: `404` `not_found`, with `X-Chorus-Context` when the key
//!   has a history (it was deleted), so a client can write over the
//!   tombstone.
//! * With `Accept: application/json` a read that finds values is always
//!   `200` with the [`SiblingsBody`], however many versions there are; a read
//!   that finds none is still `404` with `X-Chorus-Context` as above.
//!
//! ## Writing and deleting a key
//!
//! `PUT` takes the value as the raw request body; `DELETE` takes no body.
//! A `PUT`'s `Content-Type` is stored with the new version, as Riak stores
//! a content type per sibling, and reads return it; a `PUT` without one
//! stores none. It must be one media type (`type/subtype`, parameters
//! allowed) of at most
//! [`MAX_CONTENT_TYPE_BYTES`](chorus_storage::object::MAX_CONTENT_TYPE_BYTES)
//! bytes of visible ASCII, else `400` `invalid_content_type` before the body
//! is read. A `DELETE`'s `Content-Type` is ignored: a tombstone has none.
//! Both take the causal context of an earlier read or write in
//! `X-Chorus-Context` (optional: a write without one is a blind write and
//! adds a sibling) and answer `204 No Content` with the writer's new context
//! in `X-Chorus-Context`: what its own context covered plus the new version,
//! never a concurrent version it was not shown (design.md §3 rule 3). With
//! `?returnbody=true` a `PUT` answers like a read instead, with the key's
//! siblings after the write and their context; a `DELETE` takes no
//! `returnbody` (`400` `unknown_option`, "returnbody applies to PUT only"),
//! as its answer would then be `404` whether or not it deleted something.
//! A `DELETE` without a context
//! reads the key at its `r` and deletes what it found: `204`, or `404`
//! `not_found` when nothing live was there. A value larger than the
//! service's [`max_value_bytes`](Service::max_value_bytes) is refused with
//! `413` `value_too_large` after at most that many bytes were read.
//!
//! ## Context tokens
//!
//! A token is sealed for one (bucket, key) with the cluster's
//! [`ContextKey`](chorus_storage::context::ContextKey) ([`Service::context_key`]): a token issued for another
//! key, bucket or cluster, or altered, is refused with `400`
//! `context_forged` before the service is called.
//!
//! ## Request options
//!
//! All three key routes take the query parameters `r`, `w`, `pr`, `pw`,
//! `timeout`, `sync` and `sloppy` ([`crate::core::options`]); a `PUT` also
//! takes `returnbody`, and a `GET` or `DELETE` given it (whatever its
//! value) is refused with `400` `unknown_option` ("returnbody applies to
//! PUT only"). Unknown names,
//! repeated names and malformed values are refused here with `400` and the
//! option's code; counts that do not fit the key's replication factor (for
//! instance `w=0` or `w` above N) are refused by the service, also with
//! `400`. Either way the problem body names the option in `"option"`.
//!
//! ## Metrics
//!
//! Every answer on a key route is counted in `chorus_requests_total` and
//! timed in `chorus_request_duration_seconds`, by operation, consistency
//! (the `r` or `w` asked for) and outcome (`ok`, `siblings`, `not_found` or
//! the error's code), in the service's own recorder
//! ([`Service::node_metrics`]).
//!
//! ## Ring and preference lists
//!
//! `GET /v1/cluster/ring` shows the ring this node holds (Riak's
//! `ring-status`, Cassandra's `nodetool ring`): version, hash, N, P, each
//! partition's index, hash range (`start`..=`end`, 16 hex digits), owner
//! (its first primary) and N primaries, and each member's share:
//! `owns_percent` (partitions it owns, of P; the shares add up to 100) and
//! `effective_percent` (partitions it is a primary of, of P; they add up
//! to N × 100, Cassandra's "Owns (effective)").
//!
//! `GET /v1/cluster/preflist/{bucket}/{key}` shows where a coordinator on
//! this node would send the key's copies now (Riak's `riak-admin
//! preflist`, Cassandra's `nodetool getendpoints`): the key's hash and
//! partition, its N primaries with their addresses and whether this node
//! believes each up, and, for each down primary, the fallback standing in
//! for it (`"fallback_for": <primary id>`), as
//! [`place`](crate::core::place) picks them. It checks bucket and key as
//! the key routes do and takes a `GET`'s query options, checked for form
//! only (counts are not held against N); `?sloppy=false` shows the strict
//! list (no fallbacks).
//!
//! # Authentication
//!
//! When the node has a bearer token ([`Service::bearer_token`]; `[http]
//! token` or `token_file` in the config file, `--http-token-file` or
//! `CHORUS_HTTP_TOKEN`), every request but those of `/livez` and `/readyz`
//! must carry `Authorization: Bearer <token>` (RFC 6750; the scheme is
//! case-insensitive). Without one the answer is `401` `unauthorized` with
//! `WWW-Authenticate: Bearer realm="chorus"`; with another token, another
//! scheme or two `Authorization` headers, `401` `unauthorized` with
//! `error="invalid_token"` in the challenge. Tokens are compared in
//! constant time (SHA-256 digests compared with `subtle`). The check comes
//! before routing, so an unknown path without the token is `401` too.
//!
//! # Errors
//!
//! Every error is `application/problem+json` (RFC 9457), decoded by
//! [`ProblemBody`]: `type` is `https://chorus.dev/errors/<code>`, `code` is
//! stable and machine-readable, `detail` is for people. The statuses:
//!
//! | status | codes |
//! |--------|-------|
//! | `400`  | option codes (`unknown_option`, `invalid_quorum`, `quorum_zero`, `quorum_above_n`, …), context codes (`context_forged`, `context_not_base64`, `context_malformed`, …), `invalid_key`, `invalid_content_type`, `invalid_query`, `body_unreadable`, `context_from_future`, `context_ahead_of_replica` |
//! | `401`  | `unauthorized` (bearer token missing or wrong), with `WWW-Authenticate` |
//! | `404`  | `not_found` (key), `no_route` (path) |
//! | `405`  | `method_not_allowed`, with `Allow` |
//! | `409`  | `too_many_siblings` |
//! | `408`  | `body_timeout` (the body did not arrive within [`Service::body_read_timeout`]) |
//! | `413`  | `value_too_large`, `object_too_large` (the key's siblings would grow past the write limit) |
//! | `500`  | `internal`, `dot_reused` |
//! | `503`  | `quorum_not_reached`, `unavailable`, `not_ready` (also ring and preflist before a ring exists), `overloaded` (more than [`Service::max_concurrent_requests`] in flight, `[http] max_concurrent_requests`, or too many waiting in the engine); always with `Retry-After: 1` |
//! | `504`  | `timeout`, `timeout_indeterminate` |
//!
//! Quorum and timeout errors add `required`, `required_primaries`,
//! `received`, `received_primaries` and the replicas that answered with a
//! failure or could not be reached (`failures`, left out when there are
//! none: a replica that has not answered yet is not one).
//! Write errors also add `applied` (replicas known to hold the write) and
//! `outcome`: `not_applied` when no replica took the write, or
//! `may_have_applied` when some did and the write may become visible (a
//! client that cares reads the key before retrying).
//!
//! # What this module deliberately does not do
//!
//! It does not resolve options against N, coordinate replicas, retry, or
//! tell clients apart (one bearer token for all, no per-user rights); the
//! service does the first two and the others are not part of the HTTP API.
//! It does not encrypt: put it behind TLS when the token must not travel in
//! the clear. Keys that are not UTF-8 cannot be addressed through it.

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chorus_storage::context::{CausalContext, ContextError};
use chorus_storage::object::{check_content_type, ContentTypeError, Object};
use tokio::sync::Semaphore;

use crate::answer::{read_answer, LiveVersion, ReadAnswer, Sealer};
use crate::api::{BearerToken, ReadRequest, RequestError, Service, WriteReply, WriteRequest};
use crate::core::options::RequestKind;
use crate::core::{OptionsError, RequestOptions};
use crate::telemetry::{self, Operation};

pub use chorus_client::limits::{MAX_BUCKET_BYTES, MAX_KEY_BYTES};
pub use chorus_client::problem::{
    FailedReplica, ProblemBody, WriteOutcome, ERROR_TYPE_PREFIX, PROBLEM_CONTENT_TYPE,
};
pub use chorus_client::types::{SiblingBody, SiblingsBody, CONTEXT_HEADER, TIMESTAMP_HEADER};

/// The most characters of a client's path echoed back in an error.
const MAX_ECHO_CHARS: usize = 128;

/// The path of the key routes.
const KEY_ROUTE: &str = "/v1/buckets/{bucket}/keys/{key}";

/// The path of a key's preference list.
const PREFLIST_ROUTE: &str = "/v1/cluster/preflist/{bucket}/{key}";

/// The OpenAPI 3.1 document of this API, `docs/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../docs/openapi.json");

/// The routes the API serves, the one table the [`router`] is built from
/// (and that a test holds against `docs/openapi.json`). Paths use the
/// `{name}` templates of axum and OpenAPI alike. Each `GET` also answers
/// `HEAD`.
pub const ROUTES: &[Route] = &[
    Route::new("GET", KEY_ROUTE, Endpoint::ReadKey),
    Route::new("PUT", KEY_ROUTE, Endpoint::WriteKey),
    Route::new("DELETE", KEY_ROUTE, Endpoint::DeleteKey),
    Route::new("GET", "/v1/cluster/status", Endpoint::ClusterStatus),
    Route::new("GET", "/v1/cluster/ring", Endpoint::Ring),
    Route::new("GET", PREFLIST_ROUTE, Endpoint::Preflist),
    Route::new("GET", "/v1/openapi.json", Endpoint::OpenApi),
    Route::new("GET", "/livez", Endpoint::Livez),
    Route::new("GET", "/readyz", Endpoint::Readyz),
    Route::new("GET", "/metrics", Endpoint::Metrics),
];

/// The paths served without a bearer token, so that probes need none.
const OPEN_PATHS: [&str; 2] = ["/livez", "/readyz"];

/// One route of [`ROUTES`]: a method on a path, served by an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `GET`, `PUT` or `DELETE`.
    pub method: &'static str,
    pub path: &'static str,
    pub endpoint: Endpoint,
}

impl Route {
    const fn new(method: &'static str, path: &'static str, endpoint: Endpoint) -> Route {
        Route {
            method,
            path,
            endpoint,
        }
    }
}

/// What a [`Route`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ReadKey,
    WriteKey,
    DeleteKey,
    ClusterStatus,
    Ring,
    Preflist,
    OpenApi,
    Livez,
    Readyz,
    Metrics,
}

impl Endpoint {
    /// Whether the endpoint takes request options in its query string:
    /// the key routes and the preference list do; the others take no
    /// query parameter at all, and the router refuses one
    /// ([`refuse_query`]).
    pub fn takes_options(self) -> bool {
        matches!(
            self,
            Endpoint::ReadKey | Endpoint::WriteKey | Endpoint::DeleteKey | Endpoint::Preflist
        )
    }
}

/// Why the HTTP layer answered with an error.
#[derive(Debug, thiserror::Error)]
enum HttpError {
    /// Refused by this layer's checks or by the service.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A body without a declared length went past the limit.
    #[error("value exceeds the limit of {max} bytes")]
    BodyTooLarge { max: usize },
    /// The body did not arrive within the time allowed.
    #[error("the request body did not arrive within {timeout:?}")]
    BodyTimeout { timeout: std::time::Duration },
    #[error("could not read the request body: {0}")]
    BodyUnreadable(String),
    #[error("invalid query string: {0}")]
    InvalidQuery(String),
    /// The key has no live version. Carries the token of its tombstones'
    /// context.
    #[error("the key has no live version")]
    NotFound { token: Option<String> },
    #[error("no route for {path}")]
    NoRoute { path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: Method, path: String },
    #[error("the node is not ready to serve requests")]
    NotReady,
    /// The API requires a bearer token and the request carried none, or
    /// not the right one.
    #[error("{}", if *missing { "this route requires `Authorization: Bearer <token>`" } else { "the bearer token is not valid" })]
    Unauthorized { missing: bool },
}

impl From<ContextError> for HttpError {
    fn from(error: ContextError) -> Self {
        HttpError::Request(RequestError::Context(error))
    }
}

impl HttpError {
    fn status(&self) -> StatusCode {
        match self {
            HttpError::Request(error) => StatusCode::from_u16(error.status())
                .expect("RequestError::status is a valid status"),
            HttpError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            HttpError::BodyUnreadable(_) | HttpError::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            HttpError::NotFound { .. } | HttpError::NoRoute { .. } => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            HttpError::Request(error) => error.code(),
            HttpError::BodyTooLarge { .. } => "value_too_large",
            HttpError::BodyTimeout { .. } => "body_timeout",
            HttpError::BodyUnreadable(_) => "body_unreadable",
            HttpError::InvalidQuery(_) => "invalid_query",
            HttpError::NotFound { .. } => "not_found",
            HttpError::NoRoute { .. } => "no_route",
            HttpError::MethodNotAllowed { .. } => "method_not_allowed",
            HttpError::NotReady => "not_ready",
            HttpError::Unauthorized { .. } => "unauthorized",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            HttpError::Request(error) => crate::answer::title(error),
            HttpError::BodyTooLarge { .. } => "Value too large",
            HttpError::BodyTimeout { .. } => "Request body timed out",
            HttpError::BodyUnreadable(_) => "Unreadable request body",
            HttpError::InvalidQuery(_) => "Invalid query string",
            HttpError::NotFound { .. } => "Not found",
            HttpError::NoRoute { .. } => "No such route",
            HttpError::MethodNotAllowed { .. } => "Method not allowed",
            HttpError::NotReady => "Node not ready",
            HttpError::Unauthorized { .. } => "Unauthorized",
        }
    }

    /// The problem body for this error: for the service's errors the one
    /// the QUIC client API gives too ([`crate::answer::problem`]).
    fn problem(&self) -> ProblemBody {
        match self {
            HttpError::Request(error) => crate::answer::problem(error),
            _ => ProblemBody::new(
                self.status().as_u16(),
                self.code(),
                self.title(),
                self.to_string(),
            ),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::warn!(code = self.code(), "HTTP request failed: {self}");
        } else {
            tracing::debug!(code = self.code(), "HTTP request refused: {self}");
        }
        let body = serde_json::to_vec(&self.problem()).expect("a problem body serializes");
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
            )],
            body,
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let HttpError::Unauthorized { missing } = self {
            // RFC 6750 §3: a request without credentials gets no error code.
            let challenge = if missing {
                "Bearer realm=\"chorus\""
            } else {
                "Bearer realm=\"chorus\", error=\"invalid_token\""
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let HttpError::NotFound { token: Some(token) } = &self {
            response
                .headers_mut()
                .insert(CONTEXT_HEADER, header_value(token.clone()));
        }
        response
    }
}

/// The router of the node's HTTP API over `service`, built from
/// [`ROUTES`]. Bodies of `PUT` requests are limited to the service's
/// [`max_value_bytes`](Service::max_value_bytes).
///
/// At most [`max_concurrent_requests`](Service::max_concurrent_requests)
/// requests are served at once; one more is shed at once with `503`,
/// code `overloaded` and `Retry-After` (load shedding rather than an
/// unbounded queue, as tower's `ConcurrencyLimit` with `LoadShed`).
///
/// With a [`bearer_token`](Service::bearer_token), every request but those
/// of `/livez` and `/readyz` must carry it (`401 unauthorized` otherwise),
/// checked before it takes a slot.
pub fn router<S: Service>(service: S) -> Router {
    let max_value_bytes = service.max_value_bytes();
    let slots = Arc::new(Semaphore::new(service.max_concurrent_requests().max(1)));
    let token = service.bearer_token();
    let mut paths: Vec<(&'static str, MethodRouter<S>)> = Vec::new();
    for route in ROUTES {
        let handler = method_router::<S>(route);
        match paths.iter_mut().find(|(path, _)| *path == route.path) {
            Some((_, methods)) => *methods = std::mem::take(methods).merge(handler),
            None => paths.push((route.path, handler)),
        }
    }
    let mut router = Router::new();
    for (path, methods) in paths {
        router = router.route(path, methods);
    }
    let mut router = router
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_value_bytes))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let slots = slots.clone();
            async move { limit_concurrency(&slots, request, next).await }
        }));
    if let Some(token) = token {
        let token = Arc::new(token);
        router = router.layer(middleware::from_fn(move |request: Request, next: Next| {
            let token = token.clone();
            async move { authenticate(&token, request, next).await }
        }));
    }
    router.with_state(service)
}

/// The handler of one route.
fn method_router<S: Service>(route: &Route) -> MethodRouter<S> {
    let filter = match route.method {
        "GET" => MethodFilter::GET,
        "PUT" => MethodFilter::PUT,
        "DELETE" => MethodFilter::DELETE,
        other => panic!("no method filter for {other} in the route table"),
    };
    let handler = match route.endpoint {
        Endpoint::ReadKey => on(filter, read_key::<S>),
        Endpoint::WriteKey => on(filter, write_key::<S>),
        Endpoint::DeleteKey => on(filter, delete_key::<S>),
        Endpoint::ClusterStatus => on(filter, cluster_status::<S>),
        Endpoint::Ring => on(filter, ring::<S>),
        Endpoint::Preflist => on(filter, preflist::<S>),
        Endpoint::OpenApi => on(filter, openapi),
        Endpoint::Livez => on(filter, livez),
        Endpoint::Readyz => on(filter, readyz::<S>),
        Endpoint::Metrics => on(filter, metrics::<S>),
    };
    if route.endpoint.takes_options() {
        handler
    } else {
        handler.route_layer(middleware::from_fn(refuse_query))
    }
}

/// Serves `request` if its query string names no parameter, for the
/// routes that take none: a parameter is refused as the key routes refuse
/// a name they do not know, with `400` `unknown_option` naming it, so a
/// mistyped or misplaced option is reported rather than ignored.
async fn refuse_query(request: Request, next: Next) -> Response {
    let first = match Query::<Vec<(String, String)>>::try_from_uri(request.uri()) {
        Ok(Query(pairs)) => pairs.into_iter().next(),
        Err(rejection) => return HttpError::InvalidQuery(rejection.body_text()).into_response(),
    };
    match first {
        None => next.run(request).await,
        Some((name, _)) => HttpError::from(RequestError::from(OptionsError::NoneTaken {
            name: echo(&name),
        }))
        .into_response(),
    }
}

/// Serves `request` if it carries the bearer token or its path is open.
async fn authenticate(token: &BearerToken, request: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let mut values = request.headers().get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return HttpError::Unauthorized { missing: true }.into_response();
    };
    let presented = if values.next().is_some() {
        None
    } else {
        bearer_credentials(value.as_bytes())
    };
    match presented {
        Some(presented) if token.matches(presented) => next.run(request).await,
        _ => HttpError::Unauthorized { missing: false }.into_response(),
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is
/// case-insensitive, RFC 9110 §11.1), or `None` for another scheme.
fn bearer_credentials(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() < SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    Some(value[SCHEME.len()..].trim_ascii())
}

/// Serves `request` if a slot is free, and sheds it otherwise.
async fn limit_concurrency(slots: &Arc<Semaphore>, request: Request, next: Next) -> Response {
    match slots.clone().try_acquire_owned() {
        Ok(slot) => {
            let response = next.run(request).await;
            drop(slot);
            response
        }
        Err(_) => HttpError::Request(RequestError::Overloaded(
            "too many HTTP requests in flight".into(),
        ))
        .into_response(),
    }
}

/// Serves the HTTP API over `service` on `listener` until `shutdown`
/// completes, then stops accepting connections and waits for the requests
/// in flight to finish.
pub async fn serve<S: Service>(
    listener: tokio::net::TcpListener,
    service: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(service))
        .with_graceful_shutdown(shutdown)
        .await
}

type KeyPath = Result<Target, HttpError>;

/// The bucket and key of a key route, percent-decoded and checked: each
/// `%` of the path starts an escape of two hex digits (else `invalid_key`:
/// `%ZZ` taken literally would name the same key as `%25ZZ`), the
/// segments decode to UTF-8, and their lengths are within the limits.
#[derive(Debug)]
struct Target {
    bucket: Vec<u8>,
    key: Vec<u8>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Target {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Target, HttpError> {
        if let Some(escape) = malformed_escape(parts.uri.path()) {
            return Err(RequestError::InvalidKey {
                what: "path".into(),
                reason: format!(
                    "{:?} is not a percent-escape (write a literal % as %25)",
                    echo(escape)
                ),
            }
            .into());
        }
        let path = Path::<(String, String)>::from_request_parts(parts, state).await;
        let Path((bucket, key)) = path.map_err(path_error)?;
        check_name("bucket", &bucket, MAX_BUCKET_BYTES)?;
        check_name("key", &key, MAX_KEY_BYTES)?;
        Ok(Target {
            bucket: bucket.into_bytes(),
            key: key.into_bytes(),
        })
    }
}

/// The first `%` of `path` not followed by two hex digits, with what
/// follows it in its segment (at most two characters).
fn malformed_escape(path: &str) -> Option<&str> {
    let bytes = path.as_bytes();
    let at = (0..bytes.len()).find(|&i| {
        bytes[i] == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })?;
    let after: usize = path[at + 1..]
        .chars()
        .take(2)
        .take_while(|&c| c != '/')
        .map(char::len_utf8)
        .sum();
    Some(&path[at..at + 1 + after])
}

type OptionsQuery = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// One key request being served, for its metrics: what it asked for and
/// when it started ([`telemetry::record_request`]).
struct Observed {
    operation: Operation,
    started: std::time::Instant,
    consistency: &'static str,
    live_versions: usize,
}

impl Observed {
    fn start(operation: Operation) -> Observed {
        Observed {
            operation,
            started: std::time::Instant::now(),
            consistency: telemetry::CONSISTENCY_UNKNOWN,
            live_versions: 0,
        }
    }

    /// Records the request's count and latency with its outcome, in the
    /// service's recorder, and answers.
    fn finish<S: Service>(self, service: &S, result: Result<Response, HttpError>) -> Response {
        if let Some(metrics) = service.node_metrics() {
            let outcome = match &result {
                Ok(_) if self.operation == Operation::Get && self.live_versions > 1 => "siblings",
                Ok(_) => "ok",
                Err(error) => error.code(),
            };
            metrics.record(|| {
                telemetry::record_request(
                    self.operation,
                    self.consistency,
                    outcome,
                    self.started.elapsed(),
                )
            });
        }
        result.into_response()
    }
}

async fn read_key<S: Service>(
    State(service): State<S>,
    path: KeyPath,
    query: OptionsQuery,
    headers: HeaderMap,
) -> Response {
    let mut observed = Observed::start(Operation::Get);
    let result = read(&service, &mut observed, path, query, headers).await;
    observed.finish(&service, result)
}

async fn read<S: Service>(
    service: &S,
    observed: &mut Observed,
    path: KeyPath,
    query: OptionsQuery,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let (bucket, key) = target(path)?;
    let options = options(query, RequestKind::Get)?;
    observed.consistency = telemetry::consistency_label(options.r);
    let sealer = Sealer::new(service.context_key(), &bucket, &key);
    let reply = service
        .get(ReadRequest {
            bucket: bucket.clone(),
            key: key.clone(),
            options,
        })
        .await?;
    observed.live_versions = reply.object.live().count();
    read_response(&reply.object, wants_json(&headers), &sealer)
}

async fn write_key<S: Service>(
    State(service): State<S>,
    path: KeyPath,
    query: OptionsQuery,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let mut observed = Observed::start(Operation::Put);
    let result = put_key(&service, &mut observed, path, query, headers, request).await;
    observed.finish(&service, result)
}

async fn put_key<S: Service>(
    service: &S,
    observed: &mut Observed,
    path: KeyPath,
    query: OptionsQuery,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, HttpError> {
    let (bucket, key) = target(path)?;
    let options = options(query, RequestKind::Put)?;
    observed.consistency = telemetry::consistency_label(options.w);
    let sealer = Sealer::new(service.context_key(), &bucket, &key);
    let context = context(&headers, &sealer)?;
    let content_type = content_type(&headers)?;
    let json = wants_json(&headers);
    let value = read_value(
        request,
        &headers,
        service.max_value_bytes(),
        service.body_read_timeout(),
    )
    .await?;
    let version = NewVersion {
        value: Some(value),
        content_type,
    };
    write(service, &sealer, version, context, options, json).await
}

async fn delete_key<S: Service>(
    State(service): State<S>,
    path: KeyPath,
    query: OptionsQuery,
    headers: HeaderMap,
) -> Response {
    let mut observed = Observed::start(Operation::Delete);
    let result = remove_key(&service, &mut observed, path, query, headers).await;
    observed.finish(&service, result)
}

async fn remove_key<S: Service>(
    service: &S,
    observed: &mut Observed,
    path: KeyPath,
    query: OptionsQuery,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let (bucket, key) = target(path)?;
    let options = options(query, RequestKind::Delete)?;
    observed.consistency = telemetry::consistency_label(options.w);
    let sealer = Sealer::new(service.context_key(), &bucket, &key);
    let context = context(&headers, &sealer)?;
    let tombstone = NewVersion {
        value: None,
        content_type: None,
    };
    write(
        service,
        &sealer,
        tombstone,
        context,
        options,
        wants_json(&headers),
    )
    .await
}

/// What a `PUT` or `DELETE` writes: a value and its media type, or nothing
/// (a tombstone).
struct NewVersion {
    value: Option<Vec<u8>>,
    content_type: Option<String>,
}

async fn write<S: Service>(
    service: &S,
    sealer: &Sealer,
    version: NewVersion,
    context: Option<CausalContext>,
    options: RequestOptions,
    json: bool,
) -> Result<Response, HttpError> {
    let reply = service
        .put(WriteRequest {
            bucket: sealer.bucket.clone(),
            key: sealer.key.clone(),
            value: version.value,
            content_type: version.content_type,
            context,
            options,
        })
        .await?;
    match reply {
        WriteReply::Written {
            object: Some(object),
            ..
        } => read_response(&object, json, sealer),
        WriteReply::Written {
            context,
            object: None,
        } => Ok((
            StatusCode::NO_CONTENT,
            [(CONTEXT_HEADER, header_value(sealer.seal(&context)))],
        )
            .into_response()),
        WriteReply::NothingToDelete { object } => Err(HttpError::NotFound {
            token: (!object.is_empty()).then(|| sealer.seal(&object.context_for_reader())),
        }),
    }
}

async fn cluster_status<S: Service>(State(service): State<S>) -> Result<Response, HttpError> {
    Ok(Json(service.cluster_status().await?).into_response())
}

async fn ring<S: Service>(State(service): State<S>) -> Result<Response, HttpError> {
    let ring = service.ring().await?.ok_or(HttpError::NotReady)?;
    Ok(Json(ring).into_response())
}

async fn preflist<S: Service>(
    State(service): State<S>,
    path: KeyPath,
    query: OptionsQuery,
) -> Result<Response, HttpError> {
    let (bucket, key) = target(path)?;
    let options = options(query, RequestKind::Preflist)?;
    let preflist = service
        .preflist(bucket, key, options.sloppy)
        .await?
        .ok_or(HttpError::NotReady)?;
    Ok(Json(preflist).into_response())
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON,
    )
        .into_response()
}

async fn metrics<S: Service>(State(service): State<S>) -> Result<Response, HttpError> {
    let text = service.metrics().await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz<S: Service>(State(service): State<S>) -> Result<&'static str, HttpError> {
    if service.is_ready() {
        Ok("ok")
    } else {
        Err(HttpError::NotReady)
    }
}

async fn no_route(uri: Uri) -> HttpError {
    HttpError::NoRoute {
        path: echo(uri.path()),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> HttpError {
    HttpError::MethodNotAllowed {
        method,
        path: echo(uri.path()),
    }
}

/// The bucket and key of a key route ([`Target`]).
fn target(path: KeyPath) -> Result<(Vec<u8>, Vec<u8>), HttpError> {
    path.map(|target| (target.bucket, target.key))
}

/// Why a bucket and key could not be taken from the path: a segment that
/// is not UTF-8 once percent-decoded is named, in Chorus's words; anything
/// else keeps the router's text.
fn path_error(rejection: PathRejection) -> RequestError {
    use axum::extract::path::ErrorKind;
    if let PathRejection::FailedToDeserializePathParams(error) = &rejection {
        if let ErrorKind::InvalidUtf8InPathParam { key } = error.kind() {
            let what = if key == "bucket" { "bucket" } else { "key" };
            return RequestError::InvalidKey {
                what: what.into(),
                reason: "not UTF-8 once percent-decoded (the HTTP API addresses UTF-8 names only)"
                    .into(),
            };
        }
    }
    RequestError::InvalidKey {
        what: "path".into(),
        reason: rejection.body_text(),
    }
}

fn check_name(what: &'static str, name: &str, max: usize) -> Result<(), RequestError> {
    chorus_client::limits::check_name(what, name, max).map_err(|error| RequestError::InvalidKey {
        what: error.what.into(),
        reason: error.reason,
    })
}

/// The request options from the query string, as the client wrote them,
/// for a `kind` of request (`returnbody` is a `PUT`'s only).
fn options(query: OptionsQuery, kind: RequestKind) -> Result<RequestOptions, HttpError> {
    let Query(pairs) = query.map_err(|rejection| HttpError::InvalidQuery(rejection.body_text()))?;
    let options = RequestOptions::parse_for(
        kind,
        pairs
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    )
    .map_err(RequestError::from)?;
    Ok(options)
}

/// The causal context of a write, if the client sent one: its token must
/// have been issued by this cluster for this very key.
fn context(headers: &HeaderMap, sealer: &Sealer) -> Result<Option<CausalContext>, HttpError> {
    let mut values = headers.get_all(CONTEXT_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ContextError::Malformed("more than one X-Chorus-Context header".into()).into());
    }
    // A token is base64url; anything that is not even visible ASCII is not one.
    let token = value.to_str().map_err(|_| ContextError::NotBase64)?;
    Ok(Some(sealer.open(token)?))
}

/// The media type a `PUT` declares for its value, if any: one
/// `Content-Type` header that [`check_content_type`] accepts, stored as
/// the client wrote it.
fn content_type(headers: &HeaderMap) -> Result<Option<String>, HttpError> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        // A singleton field (RFC 9110 §8.3).
        return Err(RequestError::from(ContentTypeError::Repeated).into());
    }
    let bytes = value.as_bytes();
    let text = std::str::from_utf8(bytes)
        .ok()
        .filter(|text| text.is_ascii())
        .ok_or_else(|| {
            let at = bytes.iter().position(|b| !b.is_ascii()).unwrap_or(0);
            RequestError::from(ContentTypeError::NotVisibleAscii { at })
        })?;
    check_content_type(text).map_err(RequestError::from)?;
    Ok(Some(text.to_owned()))
}

fn header_value(token: String) -> HeaderValue {
    HeaderValue::try_from(token).expect("a base64url token is a valid header value")
}

/// Reads a `PUT` body of at most `max` bytes within `timeout`. A declared
/// length above the limit is refused before a byte is read; an undeclared
/// one is cut off by the router's body limit as soon as it goes past; a body
/// that does not arrive in time (a client that stalls or sends less than it
/// declared) is `408`, so no request holds its slot for ever.
async fn read_value(
    request: Request,
    headers: &HeaderMap,
    max: usize,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, HttpError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(size) = declared {
        if size > max as u64 {
            return Err(RequestError::ValueTooLarge {
                size: usize::try_from(size).unwrap_or(usize::MAX),
                max,
            }
            .into());
        }
    }
    let body = tokio::time::timeout(timeout, Bytes::from_request(request, &()))
        .await
        .map_err(|_| HttpError::BodyTimeout { timeout })?;
    match body {
        Ok(bytes) => {
            assert!(
                bytes.len() <= max,
                "the body limit lets {} bytes through",
                bytes.len()
            );
            Ok(bytes.into())
        }
        Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            Err(HttpError::BodyTooLarge { max })
        }
        Err(rejection) => Err(HttpError::BodyUnreadable(rejection.body_text())),
    }
}

/// Whether the client's `Accept` header asks for `application/json`
/// (with a non-zero quality).
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut parts = range.split(';');
            let media_type = parts.next().unwrap_or("").trim();
            media_type.eq_ignore_ascii_case("application/json")
                && !parts.any(|parameter| {
                    parameter.split_once('=').is_some_and(|(name, value)| {
                        name.trim().eq_ignore_ascii_case("q")
                            && value.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                    })
                })
        })
}

/// The answer to a read of `object` (or a write with `returnbody`): its
/// context covers exactly the siblings shown.
fn read_response(object: &Object, json: bool, sealer: &Sealer) -> Result<Response, HttpError> {
    let (token, siblings) = match read_answer(object, sealer) {
        ReadAnswer::NotFound { token } => return Err(HttpError::NotFound { token }),
        ReadAnswer::Found { token, siblings } => (token, siblings),
    };
    match <[LiveVersion; 1]>::try_from(siblings) {
        Ok([sibling]) if !json => {
            let timestamp = HeaderValue::try_from(sibling.timestamp)
                .expect("a timestamp's display form is a valid header value");
            Ok((
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, media_type(&sibling.content_type)),
                    (
                        header::HeaderName::from_static(CONTEXT_HEADER),
                        header_value(token),
                    ),
                    (header::HeaderName::from_static(TIMESTAMP_HEADER), timestamp),
                ],
                sibling.value,
            )
                .into_response())
        }
        one_or_several => {
            let siblings = match one_or_several {
                Ok(one) => Vec::from(one),
                Err(several) => several,
            };
            let body = SiblingsBody {
                context: token.clone(),
                siblings: siblings
                    .into_iter()
                    .map(|sibling| SiblingBody {
                        value: STANDARD.encode(&sibling.value),
                        content_type: sibling.content_type,
                        timestamp: sibling.timestamp,
                        deleted: false,
                    })
                    .collect(),
            };
            let status = if json {
                StatusCode::OK
            } else {
                StatusCode::MULTIPLE_CHOICES
            };
            Ok((status, [(CONTEXT_HEADER, header_value(token))], Json(body)).into_response())
        }
    }
}

/// The `Content-Type` of a version's value: the one it was written with,
/// else `application/octet-stream` (bytes, as the client gave them).
fn media_type(content_type: &Option<String>) -> HeaderValue {
    match content_type {
        Some(content_type) => HeaderValue::try_from(content_type.as_str())
            .expect("a stored content type is visible ASCII, a valid header value"),
        None => HeaderValue::from_static("application/octet-stream"),
    }
}

/// A client's input, cut short enough to put in an error message.
fn echo(input: &str) -> String {
    input.chars().take(MAX_ECHO_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{OptionsError, PutError, QuorumTally, ReplicaError, ReplicaFailure};
    use chorus_storage::context::ContextKey;
    use uuid::Uuid;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn tally() -> QuorumTally {
        QuorumTally {
            required: 2,
            required_primaries: 1,
            received: 1,
            received_primaries: 1,
            failures: vec![ReplicaFailure {
                node: Uuid::from_u128(9),
                error: ReplicaError::Storage("disk full".into()),
            }],
        }
    }

    #[test]
    fn the_public_limits_are_the_ones_the_node_enforces() {
        use chorus_client::limits;
        assert_eq!(
            limits::MAX_CONTENT_TYPE_BYTES,
            chorus_storage::object::MAX_CONTENT_TYPE_BYTES
        );
        assert_eq!(
            limits::MAX_CONTEXT_TOKEN_BYTES,
            chorus_storage::context::MAX_TOKEN_LEN
        );
    }

    #[test]
    fn json_is_wanted_only_when_accepted_with_nonzero_quality() {
        assert!(!wants_json(&accept(&[])));
        assert!(!wants_json(&accept(&["*/*"])));
        assert!(!wants_json(&accept(&["application/jsonx"])));
        assert!(wants_json(&accept(&["application/json"])));
        assert!(wants_json(&accept(&[
            "text/plain, APPLICATION/JSON ; q=0.5"
        ])));
        assert!(wants_json(&accept(&["text/plain", "application/json"])));
        assert!(!wants_json(&accept(&["application/json;q=0"])));
        assert!(!wants_json(&accept(&["application/json; q=0.0, */*"])));
    }

    #[test]
    fn a_failed_write_may_have_applied_exactly_when_a_replica_took_it() {
        let cases = [
            (
                PutError::QuorumNotReached {
                    tally: tally(),
                    applied: 0,
                },
                WriteOutcome::NotApplied,
            ),
            (
                PutError::QuorumNotReached {
                    tally: tally(),
                    applied: 2,
                },
                WriteOutcome::MayHaveApplied,
            ),
            (
                PutError::Indeterminate {
                    tally: tally(),
                    applied: 1,
                },
                WriteOutcome::MayHaveApplied,
            ),
            (
                PutError::Failed { tally: tally() },
                WriteOutcome::NotApplied,
            ),
        ];
        for (error, outcome) in cases {
            let body = HttpError::from(RequestError::Put(error.clone())).problem();
            assert_eq!(body.outcome, Some(outcome), "{error:?}");
            assert_eq!(body.applied, Some(error.applied()));
            assert_eq!(body.required, Some(2));
            assert_eq!(body.received_primaries, Some(1));
            assert_eq!(body.failures[0].code, "replica_storage");
        }
    }

    #[test]
    fn problem_bodies_carry_type_code_and_option() {
        let error = HttpError::from(RequestError::Options(OptionsError::ZeroQuorum {
            option: "w",
        }));
        let body = error.problem();
        assert_eq!(body.type_uri, "https://chorus.dev/errors/quorum_zero");
        assert_eq!(body.code, "quorum_zero");
        assert_eq!(body.status, 400);
        assert_eq!(body.detail, "w must be at least 1");
        assert_eq!(body.option.as_deref(), Some("w"));
        assert_eq!(body.required, None);

        // Fields that do not apply are left out of the JSON.
        let json = serde_json::to_value(HttpError::NotReady.problem()).unwrap();
        let fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(fields, ["code", "detail", "status", "title", "type"]);
    }

    #[test]
    fn names_are_checked_for_emptiness_and_length() {
        assert!(check_name("bucket", "b", MAX_BUCKET_BYTES).is_ok());
        for name in [".", ".."] {
            let error = check_name("key", name, MAX_KEY_BYTES).unwrap_err();
            assert_eq!(error.code(), "invalid_key");
            assert!(error.to_string().starts_with("invalid key: "), "{error}");
        }
        assert!(check_name("key", "a.b", MAX_KEY_BYTES).is_ok());
        assert!(check_name("bucket", &"b".repeat(MAX_BUCKET_BYTES), MAX_BUCKET_BYTES).is_ok());
        for name in [String::new(), "b".repeat(MAX_BUCKET_BYTES + 1)] {
            let error = check_name("bucket", &name, MAX_BUCKET_BYTES).unwrap_err();
            assert_eq!(error.code(), "invalid_key");
            assert!(error.to_string().starts_with("invalid bucket: "), "{error}");
        }
        // Length is in bytes, not characters.
        let wide = "é".repeat(MAX_KEY_BYTES / 2 + 1);
        assert!(check_name("key", &wide, MAX_KEY_BYTES).is_err());
    }

    #[test]
    fn reads_answer_by_number_of_live_versions() {
        use chorus_storage::hlc::Timestamp;
        use chorus_storage::version::{ActorId, Dot, VersionVector};

        use chorus_storage::context::CONTEXT_KEY_LEN;

        let sealer = Sealer::new(ContextKey::new([1; CONTEXT_KEY_LEN]), b"b", b"k");
        let none = VersionVector::new();
        let mut object = Object::new();
        assert!(matches!(
            read_response(&object, false, &sealer),
            Err(HttpError::NotFound { token: None })
        ));
        let dot = Dot::new(ActorId(1), 1);
        object
            .write(&none, dot, Timestamp::new(5, 0), Some(b"a".to_vec()))
            .unwrap();
        assert_eq!(
            read_response(&object, false, &sealer).unwrap().status(),
            StatusCode::OK
        );
        assert_eq!(
            read_response(&object, true, &sealer).unwrap().status(),
            StatusCode::OK
        );
        object
            .write(
                &none,
                Dot::new(ActorId(1), 2),
                Timestamp::new(6, 0),
                Some(b"b".to_vec()),
            )
            .unwrap();
        let several = read_response(&object, false, &sealer).unwrap();
        assert_eq!(several.status(), StatusCode::MULTIPLE_CHOICES);
        assert!(several.headers().contains_key(CONTEXT_HEADER));
        assert_eq!(
            read_response(&object, true, &sealer).unwrap().status(),
            StatusCode::OK
        );
        let everything = object.context().clone();
        object
            .write_in(
                &everything,
                Dot::new(ActorId(1), 3),
                Timestamp::new(7, 0),
                None,
            )
            .unwrap();
        match read_response(&object, false, &sealer) {
            Err(HttpError::NotFound { token: Some(token) }) => {
                assert_eq!(&sealer.open(&token).unwrap(), object.context())
            }
            other => panic!("expected not found with a context, got {other:?}"),
        }
    }
}
