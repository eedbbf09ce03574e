//! The stores a benchmark can drive, behind one trait: Chorus (through
//! [`Client`], over HTTP or QUIC), Redis (RESP through the `redis` crate)
//! and etcd (its v3 JSON gateway: `POST /v3/kv/put`, `/v3/kv/range`,
//! `/v3/kv/deleterange` with base64 keys and values).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::{Client, Context, Deleted, Read, RequestOptions, Value};

/// A failed operation: a stable code (Chorus's [`crate::Error::code`];
/// `redis_<kind>`, `http_<status>` or `transport` for the peers) and a
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverError {
    pub code: String,
    pub detail: String,
}

impl DriverError {
    fn new(code: impl Into<String>, detail: impl Into<String>) -> DriverError {
        DriverError {
            code: code.into(),
            detail: detail.into(),
        }
    }
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResult<C> {
    /// The key has a value; `context` is what a write should carry to
    /// replace it (Chorus), if the store has such a thing.
    Found {
        context: Option<C>,
    },
    NotFound {
        context: Option<C>,
    },
}

impl<C> ReadResult<C> {
    /// The context, found or not.
    pub fn into_context(self) -> Option<C> {
        match self {
            ReadResult::Found { context } | ReadResult::NotFound { context } => context,
        }
    }
}

/// A store under test. Shared by every task of a run.
pub trait Driver: Send + Sync + 'static {
    /// What a read hands to the write of a read-modify-write.
    type Context: Send + 'static;

    /// Reads `key`.
    fn read(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<ReadResult<Self::Context>, DriverError>> + Send;

    /// Writes `value` to `key`; `context` is a read's (read-modify-write),
    /// else the driver may use what it last saw of the key.
    fn write(
        &self,
        key: &str,
        value: Vec<u8>,
        context: Option<Self::Context>,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Deletes `key`.
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), DriverError>> + Send;

    /// Requests the driver made beyond the operations themselves, by name,
    /// so a report can show them (Chorus: `sibling_resolutions`, the reads
    /// made to resolve a key's siblings before writing again).
    fn extra_requests(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
}

/// Chorus through [`Client`]. Writes carry the newest context this driver
/// has seen for the key (from its own reads and writes), as a Riak client
/// would, so updates replace the versions they know of instead of adding a
/// sibling each.
///
/// A write's reply covers only the versions its context named plus the new
/// one (the design's context rule), so concurrent blind updates of one key
/// leave siblings no later context covers; with many tasks on a hot key
/// they reach the sibling bound and the node answers `409
/// too_many_siblings`. The driver then does what an application must: it
/// reads the key (whose context covers every sibling) and writes again
/// with that context, once. The update's latency includes both requests;
/// [`Driver::extra_requests`] counts the reads as `sibling_resolutions`.
#[derive(Debug)]
pub struct ChorusDriver {
    client: Client,
    bucket: String,
    read: RequestOptions,
    write: RequestOptions,
    contexts: Mutex<HashMap<String, Context>>,
    resolutions: AtomicU64,
}

impl ChorusDriver {
    /// Drives `bucket` through `client`, reads at `read` and writes and
    /// deletes at `write`.
    pub fn new(
        client: Client,
        bucket: impl Into<String>,
        read: RequestOptions,
        write: RequestOptions,
    ) -> ChorusDriver {
        ChorusDriver {
            client,
            bucket: bucket.into(),
            read,
            write,
            contexts: Mutex::new(HashMap::new()),
            resolutions: AtomicU64::new(0),
        }
    }

    fn remember(&self, key: &str, context: Option<&Context>) {
        let mut contexts = self.contexts.lock().unwrap_or_else(|e| e.into_inner());
        match context {
            Some(context) => {
                contexts.insert(key.to_owned(), context.clone());
            }
            None => {
                contexts.remove(key);
            }
        }
    }

    fn known(&self, key: &str) -> Option<Context> {
        let contexts = self.contexts.lock().unwrap_or_else(|e| e.into_inner());
        contexts.get(key).cloned()
    }
}

fn chorus_error(error: crate::Error) -> DriverError {
    DriverError::new(error.code(), error.to_string())
}

impl Driver for ChorusDriver {
    type Context = Context;

    async fn read(&self, key: &str) -> Result<ReadResult<Context>, DriverError> {
        match self.client.get(&self.bucket, key, &self.read).await {
            Ok(Read::Found(found)) => {
                self.remember(key, Some(&found.context));
                Ok(ReadResult::Found {
                    context: Some(found.context),
                })
            }
            Ok(Read::NotFound { context }) => {
                self.remember(key, context.as_ref());
                Ok(ReadResult::NotFound { context })
            }
            Err(error) => Err(chorus_error(error)),
        }
    }

    async fn write(
        &self,
        key: &str,
        value: Vec<u8>,
        context: Option<Context>,
    ) -> Result<(), DriverError> {
        let context = context.or_else(|| self.known(key));
        let value = Value::from(value);
        let put = |value, context: Option<Context>| async move {
            let written = self
                .client
                .put(&self.bucket, key, value, context.as_ref(), &self.write)
                .await?;
            self.remember(key, Some(&written.context));
            Ok::<(), crate::Error>(())
        };
        match put(value.clone(), context).await {
            Err(error) if error.code() == "too_many_siblings" => {
                self.resolutions.fetch_add(1, Ordering::Relaxed);
                let context = self.read(key).await?.into_context();
                put(value, context).await.map_err(chorus_error)
            }
            result => result.map_err(chorus_error),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), DriverError> {
        let context = self.known(key);
        let deleted = self
            .client
            .delete(&self.bucket, key, context.as_ref(), &self.write)
            .await
            .map_err(chorus_error)?;
        match deleted {
            Deleted::Deleted { context } => self.remember(key, Some(&context)),
            Deleted::NothingToDelete { context } => self.remember(key, context.as_ref()),
        }
        Ok(())
    }

    fn extra_requests(&self) -> BTreeMap<String, u64> {
        let resolutions = self.resolutions.load(Ordering::Relaxed);
        BTreeMap::from([("sibling_resolutions".to_owned(), resolutions)])
    }
}

/// Redis: `GET`, `SET`, `DEL` over a pool of multiplexed connections (one
/// per task, at most 64), picked round robin.
#[derive(Debug)]
pub struct RedisDriver {
    connections: Vec<redis::aio::MultiplexedConnection>,
    next: AtomicUsize,
}

fn redis_error(error: redis::RedisError) -> DriverError {
    let code = if error.is_io_error() || error.is_connection_dropped() || error.is_timeout() {
        "transport".to_owned()
    } else {
        format!("redis_{:?}", error.kind()).to_lowercase()
    };
    DriverError::new(code, error.to_string())
}

impl RedisDriver {
    /// Connects to `url` (`redis://host:port[/db]`) with `connections`
    /// connections.
    pub async fn connect(url: &str, connections: usize) -> Result<RedisDriver, DriverError> {
        let client = redis::Client::open(url).map_err(redis_error)?;
        let mut pool = Vec::new();
        for _ in 0..connections.clamp(1, 64) {
            pool.push(
                client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(redis_error)?,
            );
        }
        Ok(RedisDriver {
            connections: pool,
            next: AtomicUsize::new(0),
        })
    }

    fn connection(&self) -> redis::aio::MultiplexedConnection {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[i].clone()
    }
}

impl Driver for RedisDriver {
    type Context = ();

    async fn read(&self, key: &str) -> Result<ReadResult<()>, DriverError> {
        let mut connection = self.connection();
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(match value {
            Some(_) => ReadResult::Found { context: None },
            None => ReadResult::NotFound { context: None },
        })
    }

    async fn write(&self, key: &str, value: Vec<u8>, _: Option<()>) -> Result<(), DriverError> {
        let mut connection = self.connection();
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async::<()>(&mut connection)
            .await
            .map_err(redis_error)
    }

    async fn delete(&self, key: &str) -> Result<(), DriverError> {
        let mut connection = self.connection();
        redis::cmd("DEL")
            .arg(key)
            .query_async::<()>(&mut connection)
            .await
            .map_err(redis_error)
    }
}

/// etcd through its v3 JSON gateway (linearizable reads, etcd's default).
#[derive(Debug)]
pub struct EtcdDriver {
    http: reqwest::Client,
    endpoints: Vec<String>,
    next: AtomicUsize,
}

impl EtcdDriver {
    /// Endpoints as `http://host:port` (the `etcd+` prefix of the command
    /// line already removed).
    pub fn new(endpoints: Vec<String>) -> Result<EtcdDriver, DriverError> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| DriverError::new("invalid_url", e.to_string()))?;
        Ok(EtcdDriver {
            http,
            endpoints: endpoints
                .into_iter()
                .map(|e| e.trim_end_matches('/').to_owned())
                .collect(),
            next: AtomicUsize::new(0),
        })
    }

    async fn call(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, DriverError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        let url = format!("{}{path}", self.endpoints[i]);
        let answer = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| DriverError::new("transport", e.to_string()))?;
        let status = answer.status();
        let body: serde_json::Value = answer
            .json()
            .await
            .map_err(|e| DriverError::new("transport", e.to_string()))?;
        if !status.is_success() {
            return Err(DriverError::new(
                format!("http_{}", status.as_u16()),
                body.to_string(),
            ));
        }
        Ok(body)
    }
}

impl Driver for EtcdDriver {
    type Context = ();

    async fn read(&self, key: &str) -> Result<ReadResult<()>, DriverError> {
        let body = serde_json::json!({ "key": STANDARD.encode(key) });
        let answer = self.call("/v3/kv/range", body).await?;
        let found = answer
            .get("kvs")
            .and_then(|kvs| kvs.as_array())
            .is_some_and(|kvs| !kvs.is_empty());
        Ok(if found {
            ReadResult::Found { context: None }
        } else {
            ReadResult::NotFound { context: None }
        })
    }

    async fn write(&self, key: &str, value: Vec<u8>, _: Option<()>) -> Result<(), DriverError> {
        let body = serde_json::json!({
            "key": STANDARD.encode(key),
            "value": STANDARD.encode(value),
        });
        self.call("/v3/kv/put", body).await.map(drop)
    }

    async fn delete(&self, key: &str) -> Result<(), DriverError> {
        let body = serde_json::json!({ "key": STANDARD.encode(key) });
        self.call("/v3/kv/deleterange", body).await.map(drop)
    }
}
