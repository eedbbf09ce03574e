//! The HTTP API against a fake service, over a real socket.
//!
//! The fake keeps one [`Object`] per key and writes to it with
//! [`Object::write`], minting dots from a counter, so siblings and causal
//! contexts behave as they do on a replica. Requests for keys listed in
//! `failures` answer with the canned error instead, which is how the quorum
//! and timeout answers are exercised.

// Tests over a real socket: they bind a listener and spawn the server.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chorus_node::api::{
    BearerToken, ClusterStatus, MemberStatus, ReadReply, ReadRequest, RequestError, Service,
    WriteReply, WriteRequest,
};
use chorus_node::core::{
    GetError, PutError, Quorum, QuorumTally, ReplicaError, ReplicaFailure, RequestOptions,
    WriteError,
};
use chorus_node::http::{self, ProblemBody, SiblingsBody, WriteOutcome};
use chorus_storage::context::{CausalContext, ContextKey, CONTEXT_KEY_LEN};
use chorus_storage::hlc::Timestamp;
use chorus_storage::object::Object;
use chorus_storage::version::{ActorId, Dot};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use uuid::Uuid;

/// The key the fake cluster seals context tokens with.
fn test_key() -> ContextKey {
    ContextKey::new([3; CONTEXT_KEY_LEN])
}

/// Opens a token the fake issued for (`bucket`, `key`).
fn open(bucket: &str, key: &str, token: &str) -> CausalContext {
    test_key()
        .open(bucket.as_bytes(), key.as_bytes(), token)
        .expect("a token this cluster issued for this key")
}

/// The replication factor the fake resolves options against.
const N: usize = 3;

/// The wall clock of the fake's first write, in milliseconds.
const EPOCH_MS: u64 = 1_795_000_000_000;

type Key = (Vec<u8>, Vec<u8>);

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<Key, Object>,
    /// The last dot counter minted.
    counter: u64,
    /// Canned errors by key, answered to gets and puts alike.
    failures: BTreeMap<Vec<u8>, RequestError>,
    /// Every request that reached the service, in order.
    reads: Vec<ReadRequest>,
    writes: Vec<WriteRequest>,
}

#[derive(Debug, Clone)]
struct Fake {
    state: Arc<Mutex<State>>,
    ready: Arc<AtomicBool>,
    max_value_bytes: usize,
    max_concurrent_requests: usize,
    /// When set, every read waits for a permit here (a slow service).
    gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Gains a permit whenever a read enters the service.
    entered: Arc<tokio::sync::Semaphore>,
    token: Option<BearerToken>,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            state: Arc::default(),
            ready: Arc::new(AtomicBool::new(true)),
            max_value_bytes: 1024,
            max_concurrent_requests: chorus_node::api::DEFAULT_MAX_CONCURRENT_REQUESTS,
            gate: None,
            entered: Arc::new(tokio::sync::Semaphore::new(0)),
            token: None,
        }
    }

    fn fail(&self, key: &str, error: RequestError) {
        let mut state = self.state.lock().unwrap();
        state.failures.insert(key.as_bytes().to_vec(), error);
    }

    fn reads(&self) -> Vec<ReadRequest> {
        self.state.lock().unwrap().reads.clone()
    }

    fn writes(&self) -> Vec<WriteRequest> {
        self.state.lock().unwrap().writes.clone()
    }

    /// The timestamp the fake gives its `counter`th write.
    fn timestamp(counter: u64) -> Timestamp {
        Timestamp::new(EPOCH_MS + counter, 0)
    }
}

impl Service for Fake {
    async fn get(&self, request: ReadRequest) -> Result<ReadReply, RequestError> {
        self.entered.add_permits(1);
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("open").forget();
        }
        let mut state = self.state.lock().unwrap();
        state.reads.push(request.clone());
        request.options.resolve(N)?;
        if let Some(error) = state.failures.get(&request.key) {
            return Err(error.clone());
        }
        let object = state
            .objects
            .get(&(request.bucket, request.key))
            .cloned()
            .unwrap_or_default();
        Ok(ReadReply { object })
    }

    async fn put(&self, request: WriteRequest) -> Result<WriteReply, RequestError> {
        let mut state = self.state.lock().unwrap();
        state.writes.push(request.clone());
        request.options.resolve(N)?;
        if let Some(error) = state.failures.get(&request.key) {
            return Err(error.clone());
        }
        state.counter += 1;
        let counter = state.counter;
        let object = state
            .objects
            .entry((request.bucket, request.key))
            .or_default();
        let context = request.context.unwrap_or_default();
        let dot = Dot::new(ActorId(1), counter);
        object
            .write_typed(
                &context,
                dot,
                Fake::timestamp(counter),
                request.value,
                request.content_type,
            )
            .map_err(WriteError::from)?;
        Ok(WriteReply::Written {
            context: object.context_for_writer(&context, dot),
            object: request.options.return_body.then(|| object.clone()),
        })
    }

    fn context_key(&self) -> ContextKey {
        test_key()
    }

    async fn cluster_status(&self) -> Result<ClusterStatus, RequestError> {
        let node_id = Uuid::from_u128(7);
        Ok(ClusterStatus {
            node_id,
            node_name: "fake-1".into(),
            ring_version: Some(4),
            ring_hash: Some("abc".into()),
            members: vec![MemberStatus {
                id: node_id,
                name: "fake-1".into(),
                quic_addr: None,
                http_addr: Some("127.0.0.1:8080".parse().unwrap()),
                status: "up".into(),
                zone: None,
                generation: 2,
                heartbeat: 99,
                liveness: "up".into(),
                local: true,
            }],
        })
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn max_value_bytes(&self) -> usize {
        self.max_value_bytes
    }

    fn max_concurrent_requests(&self) -> usize {
        self.max_concurrent_requests
    }

    fn body_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(300)
    }

    fn bearer_token(&self) -> Option<BearerToken> {
        self.token.clone()
    }
}

/// A running server on an ephemeral port.
struct Server {
    base: String,
    addr: std::net::SocketAddr,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(fake: Fake) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(http::serve(listener, fake, async move {
            let _ = signal.await;
        }));
        Server {
            base: format!("http://{addr}"),
            addr,
            client: reqwest::Client::new(),
            shutdown: Some(shutdown),
            task,
        }
    }

    fn key_url(&self, bucket: &str, key: &str) -> String {
        format!("{}/v1/buckets/{bucket}/keys/{key}", self.base)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn put(&self, url: &str, value: &[u8], context: Option<&str>) -> reqwest::Response {
        let mut request = self.client.put(url).body(value.to_vec());
        if let Some(context) = context {
            request = request.header("X-Chorus-Context", context);
        }
        request.send().await.unwrap()
    }

    async fn get(&self, url: &str) -> reqwest::Response {
        self.client.get(url).send().await.unwrap()
    }

    async fn get_json(&self, url: &str) -> reqwest::Response {
        self.client
            .get(url)
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap()
    }
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap())
}

fn context_of(response: &reqwest::Response) -> String {
    header(response, "x-chorus-context")
        .unwrap_or_else(|| panic!("no context header on {}", response.status()))
        .to_owned()
}

/// Decodes a problem body, checking its content type and that it agrees
/// with the status line.
async fn problem(response: reqwest::Response) -> ProblemBody {
    assert_eq!(
        header(&response, "content-type"),
        Some("application/problem+json")
    );
    let status = response.status().as_u16();
    let body: ProblemBody = response.json().await.unwrap();
    assert_eq!(body.status, status);
    assert_eq!(
        body.type_uri,
        format!("https://chorus.dev/errors/{}", body.code)
    );
    body
}

fn tally(required: usize, received: usize) -> QuorumTally {
    QuorumTally {
        required,
        required_primaries: 1,
        received,
        received_primaries: 0,
        failures: vec![ReplicaFailure {
            node: Uuid::from_u128(42),
            error: ReplicaError::Unreachable,
        }],
    }
}

#[tokio::test]
async fn put_then_get_round_trips_value_and_context() {
    let fake = Fake::new();
    let server = Server::start(fake.clone()).await;
    let url = server.key_url("photos", "cat");

    let put = server.put(&url, b"meow", None).await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let written = context_of(&put);

    let got = server.get(&url).await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(
        header(&got, "content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(context_of(&got), written);
    assert_eq!(
        header(&got, "x-chorus-timestamp"),
        Some(Fake::timestamp(1).to_string().as_str())
    );
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"meow");

    // Writing back with the context replaces the value instead of adding a sibling.
    let put = server.put(&url, b"purr", Some(&written)).await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let got = server.get(&url).await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"purr");

    let writes = fake.writes();
    assert_eq!(writes.len(), 2);
    assert_eq!(writes[0].bucket, b"photos");
    assert_eq!(writes[0].key, b"cat");
    assert_eq!(writes[0].context, None);
    assert_eq!(writes[1].context, Some(open("photos", "cat", &written)));
}

#[tokio::test]
async fn empty_values_and_encoded_keys_are_stored_as_given() {
    let fake = Fake::new();
    let server = Server::start(fake.clone()).await;
    // `%2F` is a slash inside the key, `%20` a space.
    let url = server.key_url("b%20x", "a%2Fb");
    assert_eq!(
        server.put(&url, b"", None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(fake.writes()[0].bucket, b"b x");
    assert_eq!(fake.writes()[0].key, b"a/b");
    assert_eq!(fake.writes()[0].value, Some(Vec::new()));
    let got = server.get(&url).await;
    assert_eq!(got.status(), StatusCode::OK);
    assert!(got.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_blind_writes_are_siblings() {
    let server = Server::start(Fake::new()).await;
    let url = server.key_url("b", "k");
    assert_eq!(
        server.put(&url, b"left", None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server.put(&url, b"right", None).await.status(),
        StatusCode::NO_CONTENT
    );

    let got = server.get(&url).await;
    assert_eq!(got.status(), StatusCode::MULTIPLE_CHOICES);
    assert_eq!(header(&got, "content-type"), Some("application/json"));
    let header_context = context_of(&got);
    let body: SiblingsBody = got.json().await.unwrap();
    assert_eq!(body.context, header_context);
    let values: Vec<Vec<u8>> = body
        .siblings
        .iter()
        .map(|sibling| STANDARD.decode(&sibling.value).unwrap())
        .collect();
    assert_eq!(values, vec![b"left".to_vec(), b"right".to_vec()]);
    assert_eq!(
        body.siblings
            .iter()
            .map(|sibling| sibling.timestamp.clone())
            .collect::<Vec<_>>(),
        vec![
            Fake::timestamp(1).to_string(),
            Fake::timestamp(2).to_string()
        ]
    );
    assert!(body.siblings.iter().all(|sibling| !sibling.deleted));

    // Asking for JSON gets the same body with 200.
    let got = server.get_json(&url).await;
    assert_eq!(got.status(), StatusCode::OK);
    let json: SiblingsBody = got.json().await.unwrap();
    assert_eq!(json, body);

    // A write with the siblings' context resolves them.
    let put = server.put(&url, b"merged", Some(&body.context)).await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let got = server.get(&url).await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"merged");
}

#[tokio::test]
async fn json_accept_on_a_single_value_is_a_200_json_body() {
    let server = Server::start(Fake::new()).await;
    let url = server.key_url("b", "k");
    server.put(&url, &[0, 159, 255], None).await;
    let got = server
        .client
        .get(&url)
        .header("Accept", "text/html;q=0.9, Application/JSON")
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    let body: SiblingsBody = got.json().await.unwrap();
    assert_eq!(body.siblings.len(), 1);
    assert_eq!(body.siblings[0].value, STANDARD.encode([0u8, 159, 255]));

    // A zero quality refuses JSON: the raw value comes back.
    let got = server
        .client
        .get(&url)
        .header("Accept", "application/json;q=0, */*")
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap().as_ref(), &[0, 159, 255]);
}

#[tokio::test]
async fn delete_leaves_a_tombstone_that_reads_as_not_found_with_context() {
    let fake = Fake::new();
    let server = Server::start(fake.clone()).await;
    let url = server.key_url("b", "gone");
    let written = context_of(&server.put(&url, b"v", None).await);

    let deleted = server
        .client
        .delete(&url)
        .header("X-Chorus-Context", &written)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let after_delete = context_of(&deleted);
    assert_ne!(after_delete, written);
    let write = fake.writes().pop().unwrap();
    assert_eq!(write.value, None);
    assert_eq!(write.context, Some(open("b", "gone", &written)));

    let got = server.get(&url).await;
    assert_eq!(got.status(), StatusCode::NOT_FOUND);
    assert_eq!(context_of(&got), after_delete);
    assert_eq!(problem(got).await.code, "not_found");

    let got = server.get_json(&url).await;
    assert_eq!(got.status(), StatusCode::NOT_FOUND);
    assert_eq!(context_of(&got), after_delete);

    // A key never written has no context to offer.
    let got = server.get(&server.key_url("b", "never")).await;
    assert_eq!(got.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&got, "x-chorus-context"), None);
    assert_eq!(problem(got).await.code, "not_found");
}

#[tokio::test]
async fn query_parameters_reach_the_service_as_options() {
    let fake = Fake::new();
    let server = Server::start(fake.clone()).await;
    let url = server.key_url("b", "k");
    let put = server
        .put(
            &format!("{url}?w=ALL&pw=1&timeout=250&sync=true&sloppy=false"),
            b"v",
            None,
        )
        .await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        fake.writes()[0].options,
        RequestOptions {
            w: Quorum::All,
            pw: Quorum::Count(1),
            timeout_ms: 250,
            sync: true,
            sloppy: false,
            ..RequestOptions::default()
        }
    );
    server.get(&format!("{url}?r=one")).await;
    assert_eq!(fake.reads()[0].options.r, Quorum::One);
    server
        .client
        .delete(format!("{url}?w=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(fake.writes()[1].options.w, Quorum::Count(1));
}

#[tokio::test]
async fn bad_query_parameters_are_400_naming_the_option() {
    let fake = Fake::new();
    let server = Server::start(fake.clone()).await;
    let url = server.key_url("b", "k");
    let cases = [
        ("w=abc", "invalid_quorum", "w"),
        ("w=0", "quorum_zero", "w"),
        ("w=4", "quorum_above_n", "w"),
        // Every count is held against N before pr <= r and pw <= w.
        ("pw=4", "quorum_above_n", "pw"),
        ("pr=4", "quorum_above_n", "pr"),
        ("pw=4&w=4", "quorum_above_n", "w"),
        ("n=3", "unknown_option", "n"),
        ("r=1&r=2", "duplicate_option", "r"),
        ("timeout=5s", "invalid_timeout", "timeout"),
        ("sync=yes", "invalid_bool", "sync"),
    ];
    for (query, code, option) in cases {
        for method in [
            reqwest::Method::GET,
            reqwest::Method::PUT,
            reqwest::Method::DELETE,
        ] {
            let response = server
                .client
                .request(method.clone(), format!("{url}?{query}"))
                .body("v")
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::BAD_REQUEST,
                "{method} ?{query}"
            );
            let body = problem(response).await;
            assert_eq!(body.code, code, "{method} ?{query}");
            assert_eq!(body.option.as_deref(), Some(option), "{method} ?{query}");
        }
    }
    // Parse errors never reach the service (w=0 among them: no N makes it
    // valid); only the counts it resolves against N do.
    let reached = fake.reads().len() + fake.writes().len();
    assert_eq!(reached, 4 * 3, "only the counts above N reach the service");
    assert!(fake.state.lock().unwrap().objects.is_empty());
}

/// `returnbody` is a `PUT`'s option: a `DELETE` that answered like a read
/// would say `404` whether or not it deleted something.
#[tokio::test]
async fn returnbody_is_refused_on_every_route_but_put() {
    let fake = Fake::new();
    let server = Server::start(fake.clone()).await;
    let url = server.key_url("b", "k");
    assert_eq!(
        server.put(&url, b"v", None).await.status(),
        StatusCode::NO_CONTENT
    );
    let preflist = server.url("/v1/cluster/preflist/b/k");
    for value in ["true", "false"] {
        for (method, url) in [
            (reqwest::Method::DELETE, &url),
            (reqwest::Method::GET, &url),
            (reqwest::Method::GET, &preflist),
        ] {
            let response = server
                .client
                .request(method.clone(), format!("{url}?returnbody={value}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{method} {url}");
            let body = problem(response).await;
            assert_eq!(body.code, "unknown_option", "{method} {url}");
            assert_eq!(body.option.as_deref(), Some("returnbody"));
            assert_eq!(body.detail, "returnbody applies to PUT only");
        }
    }
    // Refused before the service: the key is still there.
    assert_eq!(fake.writes().len(), 1);
    assert!(fake.reads().is_empty());
    assert_eq!(server.get(&url).await.status(), StatusCode::OK);
    let put = server
        .put(&format!("{url}?returnbody=true"), b"w", None)
        .await;
    assert_eq!(put.status(), StatusCode::MULTIPLE_CHOICES);
}

/// The cluster and operations routes take no query parameter: one is
/// refused as the key routes refuse a name they do not know.
#[tokio::test]
async fn routes_without_options_refuse_query_parameters() {
    let fake = Fake::new();
    let server = Server::start(fake.clone()).await;
    let paths = [
        "/v1/cluster/status",
        "/v1/cluster/ring",
        "/v1/openapi.json",
        "/livez",
        "/readyz",
        "/metrics",
    ];
    for path in paths {
        let plain = server.get(&server.url(path)).await.status();
        assert_ne!(plain, StatusCode::BAD_REQUEST, "{path}");
        // An empty query names nothing.
        let empty = server.get(&server.url(&format!("{path}?"))).await;
        assert_eq!(empty.status(), plain, "{path}?");
        for (query, name) in [("foo=1", "foo"), ("r=one", "r"), ("verbose", "verbose")] {
            let url = server.url(&format!("{path}?{query}"));
            for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
                let response = server
                    .client
                    .request(method.clone(), &url)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{method} {url}");
                if method == reqwest::Method::HEAD {
                    continue;
                }
                let body = problem(response).await;
                assert_eq!(body.code, "unknown_option", "{url}");
                assert_eq!(body.option.as_deref(), Some(name), "{url}");
                assert_eq!(
                    body.detail,
                    format!("unknown query parameter {name:?}: this route takes none")
                );
            }
        }
    }
    // The preference list takes a GET's options, as before.
    let preflist = server
        .get(&server.url("/v1/cluster/preflist/b/k?sloppy=false"))
        .await;
    assert_eq!(preflist.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn bad_context_tokens_are_400_before_the_service_is_called() {
    let fake = Fake::new();
    let server = Server::start(fake.clone()).await;
    let url = server.key_url("b", "k");

    let response = server.put(&url, b"v", Some("not a token!")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(response).await.code, "context_not_base64");

    let response = server
        .client
        .delete(&url)
        .header("X-Chorus-Context", "Ag")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(response).await.code, "context_truncated");

    // The unauthenticated tokens of earlier versions are refused.
    let response = server.put(&url, b"v", Some("AYA")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(response).await.code, "context_unknown_format");

    let token = test_key().seal(b"b", b"k", &CausalContext::default());
    let response = server
        .client
        .put(&url)
        .header("X-Chorus-Context", &token)
        .header("X-Chorus-Context", &token)
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(response).await.code, "context_malformed");

    assert!(fake.writes().is_empty());
}

/// A `%` in a key route's path starts an escape of two hex digits, or the
/// request is refused: taken literally, `%ZZ` would name the same key as
/// `%25ZZ`. Every key route checks it, before anything is read or written.
#[tokio::test]
async fn a_malformed_percent_escape_in_a_key_path_is_refused() {
    let fake = Fake::new();
    let server = Server::start(fake.clone()).await;
    let client = reqwest::Client::new();
    for (bucket, key, shown) in [
        ("b", "%ZZ", "%ZZ"),
        ("b", "a%2", "%2"),
        ("b", "a%", "%"),
        ("b", "%%41", "%%4"),
        ("b%G1", "k", "%G1"),
        ("b%", "k", "%"),
        ("b%4", "k", "%4"),
    ] {
        for method in [
            reqwest::Method::GET,
            reqwest::Method::PUT,
            reqwest::Method::DELETE,
        ] {
            let url = server.key_url(bucket, key);
            let response = client
                .request(method.clone(), &url)
                .body("v")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{method} {url}");
            let body = problem(response).await;
            assert_eq!(body.code, "invalid_key", "{method} {url}");
            assert!(
                body.detail
                    .contains(&format!("{shown:?} is not a percent-escape")),
                "{method} {url}: {}",
                body.detail
            );
        }
        let preflist = server.url(&format!("/v1/cluster/preflist/{bucket}/{key}"));
        let response = server.get(&preflist).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{preflist}");
        assert_eq!(problem(response).await.code, "invalid_key");
    }
    assert!(fake.writes().is_empty());
    assert!(fake.reads().is_empty());

    // The escaped `%` is the key "%ZZ"; escapes in either case decode.
    let response = server.put(&server.key_url("b", "%25ZZ"), b"v", None).await;
    assert!(response.status().is_success(), "{}", response.status());
    let response = server
        .put(&server.key_url("b%2f", "%4a%4A"), b"v", None)
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    let writes = fake.writes();
    assert_eq!(writes[0].key, b"%ZZ");
    assert_eq!(
        (&writes[1].bucket[..], &writes[1].key[..]),
        (&b"b/"[..], &b"JJ"[..])
    );
}

/// Sends raw HTTP/1.1 (a path no URL library would leave as it is) and
/// returns the status and body of the answer.
async fn raw_request(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\n\
         Connection: close\r\n\r\nv"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned());
    (status, body)
}

/// `.` and `..` are dot segments, which HTTP clients remove from a path
/// (RFC 3986 §5.2.4): a value under such a name could not be reached, so
/// the names are refused, however the path spells them.
#[tokio::test]
async fn dot_segment_names_are_refused() {
    let fake = Fake::new();
    let server = Server::start(fake.clone()).await;
    for (bucket, key, what, name) in [
        ("b", ".", "key", "."),
        ("b", "..", "key", ".."),
        ("b", "%2E", "key", "."),
        ("b", "%2e%2E", "key", ".."),
        (".", "k", "bucket", "."),
        ("%2E%2E", "k", "bucket", ".."),
    ] {
        let paths = [
            ("GET", format!("/v1/buckets/{bucket}/keys/{key}")),
            ("PUT", format!("/v1/buckets/{bucket}/keys/{key}")),
            ("DELETE", format!("/v1/buckets/{bucket}/keys/{key}")),
            ("GET", format!("/v1/cluster/preflist/{bucket}/{key}")),
        ];
        for (method, path) in paths {
            let (status, body) = raw_request(server.addr, method, &path).await;
            assert_eq!(status, 400, "{method} {path}: {body}");
            let body: ProblemBody = serde_json::from_str(&body).unwrap();
            assert_eq!(body.code, "invalid_key", "{method} {path}");
            assert!(
                body.detail.starts_with(&format!(
                    "invalid {what}: {name:?} is a dot segment, which HTTP clients remove"
                )),
                "{method} {path}: {}",
                body.detail
            );
        }
    }
    assert!(fake.reads().is_empty() && fake.writes().is_empty());
    // Names that only contain dots are names like any other.
    for name in ["a.b", "...", ".x", "x.."] {
        let url = server.key_url(name, name);
        let response = server.put(&url, b"v", None).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{name}");
        assert_eq!(server.get(&url).await.status(), StatusCode::OK, "{name}");
    }
}

#[tokio::test]
async fn bucket_and_key_lengths_are_checked() {
    let fake = Fake::new();
    let server = Server::start(fake.clone()).await;
    let long_bucket = "b".repeat(256);
    let response = server.get(&server.key_url(&long_bucket, "k")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = problem(response).await;
    assert_eq!(body.code, "invalid_key");
    assert!(body.detail.contains("bucket"), "{}", body.detail);

    // Not UTF-8 once decoded.
    for (bucket, key, what) in [("b", "%FF", "key"), ("%C3%28", "k", "bucket")] {
        let response = server.get(&server.key_url(bucket, key)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = problem(response).await;
        assert_eq!(body.code, "invalid_key");
        assert_eq!(
            body.detail,
            format!(
                "invalid {what}: not UTF-8 once percent-decoded (the HTTP API addresses UTF-8 names only)"
            )
        );
    }

    assert!(fake.reads().is_empty() && fake.writes().is_empty());

    // A bucket at its limit and a long key are fine. (Keys near
    // MAX_KEY_BYTES do not fit in a URI, which the http crate caps at 64 KiB;
    // the unit tests check that limit.)
    let response = server
        .put(
            &server.key_url(&"b".repeat(255), &"k".repeat(60_000)),
            b"v",
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(fake.writes()[0].key.len(), 60_000);
}

#[tokio::test]
async fn oversized_values_are_413() {
    let fake = Fake::new();
    let server = Server::start(fake.clone()).await;
    let url = server.key_url("b", "big");

    let response = server.put(&url, &vec![7; 1025], None).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = problem(response).await;
    assert_eq!(body.code, "value_too_large");
    assert!(body.detail.contains("1025"), "{}", body.detail);
    assert!(fake.writes().is_empty());

    let response = server.put(&url, &vec![7; 1024], None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

/// A chunked body declares no length; the limit cuts it off while reading.
#[tokio::test]
async fn oversized_chunked_values_are_413() {
    let fake = Fake::new();
    let server = Server::start(fake.clone()).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut request = String::from(
        "PUT /v1/buckets/b/keys/k HTTP/1.1\r\nHost: test\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for _ in 0..3 {
        request.push_str(&format!("200\r\n{}\r\n", "x".repeat(0x200)));
    }
    request.push_str("0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 413"),
        "{}",
        response.lines().next().unwrap_or_default()
    );
    assert!(
        response.contains("\"code\":\"value_too_large\""),
        "{response}"
    );
    assert!(fake.writes().is_empty());
}

/// A client that declares a body and sends less (or stalls) gets `408`
/// instead of holding its request slot for ever.
#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408() {
    let fake = Fake::new();
    let server = Server::start(fake.clone()).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = "PUT /v1/buckets/b/keys/k HTTP/1.1\r\nHost: test\r\n\
                   Content-Length: 100\r\n\r\nshort";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = vec![0u8; 4096];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read(&mut response),
    )
    .await
    .expect("answered, not held")
    .unwrap();
    let response = String::from_utf8_lossy(&response[..read]).into_owned();
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("\"code\":\"body_timeout\""), "{response}");
    assert!(fake.writes().is_empty());
}

#[tokio::test]
async fn quorum_errors_are_503_with_the_tally_and_retry_after() {
    let fake = Fake::new();
    fake.fail(
        "flaky",
        RequestError::Get(GetError::QuorumNotReached(tally(2, 1))),
    );
    let server = Server::start(fake.clone()).await;

    let response = server.get(&server.key_url("b", "flaky")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&response, "retry-after"), Some("1"));
    let body = problem(response).await;
    assert_eq!(body.code, "quorum_not_reached");
    assert_eq!(body.required, Some(2));
    assert_eq!(body.required_primaries, Some(1));
    assert_eq!(body.received, Some(1));
    assert_eq!(body.received_primaries, Some(0));
    assert_eq!(body.failures.len(), 1);
    assert_eq!(body.failures[0].node, Uuid::from_u128(42));
    assert_eq!(body.failures[0].code, "replica_unreachable");
    // Reads say nothing about writes.
    assert_eq!((body.applied, body.outcome), (None, None));

    // A put that missed its quorum but reached a replica may have applied.
    fake.fail(
        "partial",
        RequestError::Put(PutError::QuorumNotReached {
            tally: tally(3, 1),
            applied: 1,
        }),
    );
    let response = server
        .put(&server.key_url("b", "partial"), b"v", None)
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&response, "retry-after"), Some("1"));
    let body = problem(response).await;
    assert_eq!((body.required, body.received), (Some(3), Some(1)));
    assert_eq!(body.applied, Some(1));
    assert_eq!(body.outcome, Some(WriteOutcome::MayHaveApplied));

    // One that reached no replica did not.
    fake.fail(
        "refused",
        RequestError::Put(PutError::QuorumNotReached {
            tally: tally(2, 0),
            applied: 0,
        }),
    );
    let response = server
        .client
        .delete(server.key_url("b", "refused"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = problem(response).await;
    assert_eq!(body.applied, Some(0));
    assert_eq!(body.outcome, Some(WriteOutcome::NotApplied));
}

#[tokio::test]
async fn put_timeouts_are_504_saying_whether_the_write_may_have_applied() {
    let fake = Fake::new();
    fake.fail(
        "slow",
        RequestError::Put(PutError::Indeterminate {
            tally: tally(2, 1),
            applied: 1,
        }),
    );
    fake.fail(
        "stuck",
        RequestError::Put(PutError::Failed { tally: tally(2, 0) }),
    );
    let server = Server::start(fake).await;

    let response = server.put(&server.key_url("b", "slow"), b"v", None).await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(header(&response, "retry-after"), None);
    let text = response.text().await.unwrap();
    assert!(text.contains("\"outcome\":\"may_have_applied\""), "{text}");
    let body: ProblemBody = serde_json::from_str(&text).unwrap();
    assert_eq!(body.code, "timeout_indeterminate");
    assert_eq!((body.required, body.received), (Some(2), Some(1)));
    assert_eq!(body.applied, Some(1));

    let response = server.put(&server.key_url("b", "stuck"), b"v", None).await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let body = problem(response).await;
    assert_eq!(body.code, "timeout");
    assert_eq!(body.applied, Some(0));
    assert_eq!(body.outcome, Some(WriteOutcome::NotApplied));
}

#[tokio::test]
async fn other_service_errors_keep_their_status_and_code() {
    let fake = Fake::new();
    fake.fail("down", RequestError::Unavailable("shutting down".into()));
    fake.fail("broken", RequestError::Internal("disk on fire".into()));
    let server = Server::start(fake).await;

    let response = server.get(&server.key_url("b", "down")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&response, "retry-after"), Some("1"));
    let body = problem(response).await;
    assert_eq!(body.code, "unavailable");
    assert_eq!(body.detail, "node unavailable: shutting down");
    assert_eq!(body.required, None);

    let response = server.get(&server.key_url("b", "broken")).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(problem(response).await.code, "internal");
}

#[tokio::test]
async fn health_checks_follow_the_service() {
    let fake = Fake::new();
    let server = Server::start(fake.clone()).await;

    let live = server.get(&server.url("/livez")).await;
    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(live.text().await.unwrap(), "ok");

    let ready = server.get(&server.url("/readyz")).await;
    assert_eq!(ready.status(), StatusCode::OK);

    fake.ready.store(false, Ordering::SeqCst);
    let ready = server.get(&server.url("/readyz")).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&ready, "retry-after"), Some("1"));
    assert_eq!(problem(ready).await.code, "not_ready");
    // Liveness does not depend on readiness.
    assert_eq!(
        server.get(&server.url("/livez")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn cluster_status_is_json() {
    let server = Server::start(Fake::new()).await;
    let response = server.get(&server.url("/v1/cluster/status")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["node_name"], "fake-1");
    assert_eq!(body["ring_version"], 4);
    assert_eq!(body["members"][0]["heartbeat"], 99);
    assert_eq!(body["members"][0]["http_addr"], "127.0.0.1:8080");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let server = Server::start(Fake::new()).await;

    let response = server.get(&server.url("/v2/nothing")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = problem(response).await;
    assert_eq!(body.code, "no_route");
    assert!(body.detail.contains("/v2/nothing"), "{}", body.detail);

    // A key with an unencoded slash is not a key route.
    let response = server.get(&server.key_url("b", "a/b")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(response).await.code, "no_route");

    let response = server
        .client
        .post(server.key_url("b", "k"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&response, "allow"), Some("GET,HEAD,PUT,DELETE"));
    assert_eq!(problem(response).await.code, "method_not_allowed");

    let response = server
        .client
        .delete(server.url("/livez"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(problem(response).await.code, "method_not_allowed");
}

#[tokio::test]
async fn serve_returns_after_shutdown() {
    let mut server = Server::start(Fake::new()).await;
    assert_eq!(
        server.get(&server.url("/livez")).await.status(),
        StatusCode::OK
    );
    server.shutdown.take().unwrap().send(()).unwrap();
    // Drop the client's pooled connection so graceful shutdown need not wait for it.
    drop(server.client);
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), server.task)
        .await
        .expect("serve returns once shut down")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_are_shed_as_503_overloaded_with_retry_after() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let fake = Fake {
        max_concurrent_requests: 1,
        gate: Some(gate.clone()),
        ..Fake::new()
    };
    let entered = fake.entered.clone();
    let server = Server::start(fake).await;
    let url = server.key_url("b", "k");
    // Step 1: a slow read takes the only slot.
    let first = tokio::spawn(server.client.get(&url).send());
    entered.acquire().await.expect("open").forget();
    // Step 2: the next request is shed at once, without reaching the service.
    let shed = tokio::time::timeout(std::time::Duration::from_secs(10), server.get(&url))
        .await
        .expect("shed at once, not queued behind the slow read");
    assert_eq!(shed.status(), 503);
    assert_eq!(header(&shed, "retry-after"), Some("1"));
    assert_eq!(
        header(&shed, "content-type"),
        Some("application/problem+json")
    );
    let body = problem(shed).await;
    assert_eq!(body.code, "overloaded");
    assert_eq!(
        entered.available_permits(),
        0,
        "the shed request never entered"
    );
    // Step 3: the slow read finishes; its slot is free again.
    gate.add_permits(2);
    let first = first.await.expect("joins").expect("answered");
    assert_eq!(first.status(), 404);
    assert_eq!(server.get(&url).await.status(), 404);
}

/// `PUT` with `Content-Type: application/json` and with no `Content-Type`.
async fn put_typed(
    server: &Server,
    url: &str,
    value: &[u8],
    content_type: Option<&str>,
) -> reqwest::Response {
    let mut request = server.client.put(url).body(value.to_vec());
    if let Some(content_type) = content_type {
        request = request.header("Content-Type", content_type);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_puts_content_type_is_stored_and_read_back() {
    let fake = Fake::new();
    let server = Server::start(fake.clone()).await;
    let url = server.key_url("docs", "one");
    let json = "application/json; charset=utf-8";
    let put = put_typed(&server, &url, br#"{"a":1}"#, Some(json)).await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    assert_eq!(fake.writes()[0].content_type.as_deref(), Some(json));

    let got = server.get(&url).await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(header(&got, "content-type"), Some(json));
    assert_eq!(got.bytes().await.unwrap().as_ref(), br#"{"a":1}"#);

    // The JSON form names it too.
    let body: SiblingsBody = server.get_json(&url).await.json().await.unwrap();
    assert_eq!(body.siblings[0].content_type.as_deref(), Some(json));

    // A write without one stores none: bytes again.
    let written = context_of(&server.get(&url).await);
    let put = server.put(&url, b"raw", Some(&written)).await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    assert_eq!(fake.writes()[1].content_type, None);
    let got = server.get(&url).await;
    assert_eq!(
        got.status(),
        StatusCode::OK,
        "the typed version was replaced"
    );
    assert_eq!(
        header(&got, "content-type"),
        Some("application/octet-stream")
    );

    // `returnbody` answers with the version's content type.
    let written = context_of(&got);
    let put = server
        .client
        .put(format!("{url}?returnbody=true"))
        .header("Content-Type", "text/plain")
        .header("X-Chorus-Context", &written)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    assert_eq!(header(&put, "content-type"), Some("text/plain"));
    assert_eq!(put.bytes().await.unwrap().as_ref(), b"hello");

    // A DELETE's Content-Type is not stored: a tombstone has none.
    let deleted = server
        .client
        .delete(&url)
        .header("Content-Type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(fake.writes().last().unwrap().content_type, None);
}

#[tokio::test]
async fn siblings_carry_their_own_content_types() {
    let server = Server::start(Fake::new()).await;
    let url = server.key_url("docs", "two");
    for (value, content_type) in [
        (&b"{}"[..], Some("application/json")),
        (b"<a/>", Some("application/xml")),
        (b"raw", None),
    ] {
        let put = put_typed(&server, &url, value, content_type).await;
        assert_eq!(put.status(), StatusCode::NO_CONTENT);
    }
    let got = server.get(&url).await;
    assert_eq!(got.status(), StatusCode::MULTIPLE_CHOICES);
    let body: serde_json::Value = got.json().await.unwrap();
    let siblings = body["siblings"].as_array().unwrap();
    let types: Vec<Option<&str>> = siblings
        .iter()
        .map(|s| s.get("content_type").map(|t| t.as_str().unwrap()))
        .collect();
    assert_eq!(
        types,
        vec![Some("application/json"), Some("application/xml"), None],
        "a version without a content type has no content_type field"
    );
    // The typed body decodes it the same way.
    let typed: SiblingsBody = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(
        typed.siblings[1].content_type.as_deref(),
        Some("application/xml")
    );
    assert_eq!(typed.siblings[2].content_type, None);
}

#[tokio::test]
async fn invalid_content_types_are_400_before_the_service_is_called() {
    let fake = Fake::new();
    let server = Server::start(fake.clone()).await;
    let url = server.key_url("docs", "bad");
    let longest = format!("text/{}", "x".repeat(251));
    assert_eq!(longest.len(), 256);
    let too_long = format!("{longest}x");
    let cases: Vec<(&str, Vec<&[u8]>)> = vec![
        ("too long", vec![too_long.as_bytes()]),
        ("no subtype", vec![b"application"]),
        ("empty", vec![b""]),
        ("not ASCII", vec![b"text/pl\xe4in"]),
        ("a tab", vec![b"text/plain;\tq=1"]),
        ("twice", vec![b"text/plain", b"application/json"]),
    ];
    for (what, values) in cases {
        let mut request = server.client.put(&url).body("v");
        for value in values {
            request = request.header(
                "Content-Type",
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
        let body = problem(response).await;
        assert_eq!(body.code, "invalid_content_type", "{what}");
        assert_eq!(body.title, "Invalid content type", "{what}");
        if what == "twice" {
            assert!(
                body.detail.contains("more than one Content-Type header"),
                "the detail says what is wrong: {}",
                body.detail
            );
        }
    }
    assert!(fake.writes().is_empty(), "refused before the service");

    // The node keeps serving, and the longest content type is taken.
    let put = put_typed(&server, &url, b"v", Some(&longest)).await;
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let got = server.get(&url).await;
    assert_eq!(header(&got, "content-type"), Some(longest.as_str()));
}

#[tokio::test]
async fn ring_and_preflist_are_503_not_ready_before_a_ring_exists() {
    let server = Server::start(Fake::new()).await;
    for path in ["/v1/cluster/ring", "/v1/cluster/preflist/b/k"] {
        let response = server.get(&server.url(path)).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(header(&response, "retry-after"), Some("1"));
        assert_eq!(problem(response).await.code, "not_ready", "{path}");
    }
    // The preflist checks its bucket, key and options like the key routes.
    let long = "k".repeat(300);
    for (path, code) in [
        ("/v1/cluster/preflist/%FF/k".to_owned(), "invalid_key"),
        (format!("/v1/cluster/preflist/{long}/k"), "invalid_key"),
        (
            "/v1/cluster/preflist/b/k?sloppy=maybe".to_owned(),
            "invalid_bool",
        ),
        (
            "/v1/cluster/preflist/b/k?bogus=1".to_owned(),
            "unknown_option",
        ),
    ] {
        let response = server.get(&server.url(&path)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(problem(response).await.code, code, "{path}");
    }
}

#[tokio::test]
async fn with_a_token_every_route_but_the_probes_requires_it() {
    let fake = Fake {
        token: Some(BearerToken::new("s3cret").unwrap()),
        ..Fake::new()
    };
    let server = Server::start(fake).await;
    let key = server.key_url("b", "k");
    // Missing: 401 with a bare challenge, and nothing reaches the service.
    for url in [
        key.clone(),
        server.url("/v1/cluster/status"),
        server.url("/v1/cluster/ring"),
        server.url("/v1/openapi.json"),
        server.url("/metrics"),
        server.url("/v2/nothing"),
    ] {
        let response = server.get(&url).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{url}");
        assert_eq!(
            header(&response, "www-authenticate"),
            Some("Bearer realm=\"chorus\"")
        );
        assert_eq!(problem(response).await.code, "unauthorized");
    }
    let response = server.put(&key, b"v", None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Wrong: another token, another scheme, two headers.
    let wrong: [&[(&str, &str)]; 5] = [
        &[("authorization", "Bearer s3cre")],
        &[("authorization", "Bearer s3cret2")],
        &[("authorization", "Basic s3cret")],
        &[("authorization", "s3cret")],
        &[
            ("authorization", "Bearer s3cret"),
            ("authorization", "Bearer s3cret"),
        ],
    ];
    for headers in wrong {
        let mut request = server.client.get(&key);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(
            header(&response, "www-authenticate"),
            Some("Bearer realm=\"chorus\", error=\"invalid_token\"")
        );
        assert_eq!(problem(response).await.code, "unauthorized");
    }
    // The probes need no token.
    for path in ["/livez", "/readyz"] {
        assert_eq!(server.get(&server.url(path)).await.status(), StatusCode::OK);
    }
    // The right token, with any case of the scheme, is served.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = server
            .client
            .get(&key)
            .header("authorization", format!("{scheme} s3cret"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{scheme}");
        assert_eq!(problem(response).await.code, "not_found");
    }
}

/// The (method, path) pairs `docs/openapi.json` describes.
fn documented_routes(spec: &oas3::Spec) -> std::collections::BTreeSet<(String, String)> {
    spec.operations()
        .map(|(path, method, _)| (method.to_string(), path))
        .collect()
}

#[test]
fn the_openapi_document_is_valid_openapi_3_1_and_its_references_resolve() {
    let spec = oas3::from_json(http::OPENAPI_JSON).expect("an OpenAPI 3.1 document");
    let version = spec
        .validate_version()
        .expect("a supported OpenAPI version");
    assert_eq!((version.major, version.minor), (3, 1));
    let mut operations = 0;
    for (path, method, operation) in spec.operations() {
        operations += 1;
        operation
            .parameters(&spec)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let declared = operation.responses.as_ref().map_or(0, |r| r.len());
        let responses = operation.responses(&spec);
        assert_eq!(
            responses.len(),
            declared,
            "{method} {path}: a response reference does not resolve"
        );
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert!(
                    response.content.contains_key("application/problem+json"),
                    "{method} {path} {status} is not a problem"
                );
            }
        }
    }
    assert!(operations > 0);
    let components = spec.components.as_ref().expect("components");
    for (name, schema) in &components.schemas {
        schema
            .resolve(&spec)
            .unwrap_or_else(|e| panic!("schema {name}: {e}"));
    }
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes_served() {
    let spec = oas3::from_json(http::OPENAPI_JSON).expect("an OpenAPI 3.1 document");
    let documented = documented_routes(&spec);
    let routed: std::collections::BTreeSet<(String, String)> = http::ROUTES
        .iter()
        .map(|route| (route.method.to_owned(), route.path.to_owned()))
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes the document does not describe: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        unrouted.is_empty(),
        "documented routes the router does not have: {unrouted:?}"
    );

    // And the router really serves every documented route.
    let server = Server::start(Fake::new()).await;
    for (method, path) in &documented {
        let url = server.url(&path.replace("{bucket}", "b").replace("{key}", "k"));
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = server
            .client
            .request(method.clone(), &url)
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        if status == StatusCode::NOT_FOUND {
            assert_ne!(problem(response).await.code, "no_route", "{method} {path}");
        }
    }
    let response = server.get(&server.url("/v1/openapi.json")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "content-type"), Some("application/json"));
    assert_eq!(response.text().await.unwrap(), http::OPENAPI_JSON);
}
