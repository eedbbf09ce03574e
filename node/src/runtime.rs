//! The runtime: the one place that owns threads, sockets, timers, clocks and
//! the RocksDB handle, and drives the [`Engine`] with them.
//!
//! # Shape
//!
//! * The engine's shards are detached ([`Engine::detach_shards`]) and each
//!   runs on an OS thread of its own, a *shard thread* (`chorus-shard<i>`;
//!   Linux keeps 15 bytes of a thread's name), unless the shards run on
//!   the I/O threads (below); membership and the router run on the
//!   *membership thread* (`chorus-members`). Every RocksDB call happens
//!   on these threads (or in the shards' tasks), never in the networking
//!   tasks. Each thread waits
//!   for its next event until its next wakeup, feeds it in with the
//!   current [`Now`] together with whatever else is already queued (at
//!   most [`EVENT_BATCH`] events), and then carries out the effects: frames
//!   go to the transport, replies to the waiting client. The store is
//!   opened for group commit, and each thread flushes the log before its
//!   first effect leaves, so a batch's writes share one log write (and one
//!   fsync when any asked for `sync`); a flush covers every thread's
//!   writes made before it.
//! * A client request goes straight to the thread of the shard that owns
//!   its key ([`ShardMap`]). A peer's frame is decoded on the async worker
//!   that received it; a data-plane frame from a settled peer (a gossip
//!   member, carrying the newest generation known of it) goes straight to
//!   the thread of its shard too ([`DirectRoutes`], which membership
//!   publishes after each batch). Every other frame, and send failures,
//!   go to the membership thread, which handles gossip and the ring
//!   exchange itself, checks a data-plane frame (not from an older
//!   incarnation of its sender) and passes it, with a changed view before
//!   it and a node convicted or restarted, to the shard threads in the
//!   order it routed them ([`Engine::poll_shard_input`]). A shard thread reports data it
//!   wrote back to membership ([`Engine::handle_facts`]) and publishes its
//!   counters for the node's metrics.
//! * With [`NodeOptions::shards_on_io_threads`] (what `chorus node start`
//!   and `chorus dev` do unless told otherwise) a shard's loop runs as a
//!   task of the async runtime instead (`ShardThread::run_as_task`): it
//!   waits for its queue without a thread of its own, runs a batch on
//!   whichever worker thread polls it, RocksDB calls included, and yields
//!   after each batch. The hand-offs between a request's task, the shard
//!   and the peers' send tasks then wake no other thread when the runtime
//!   has one worker (thread per core). A batch whose effects wait for an
//!   fsync (a `sync=true` write under group commit, [`Store::owes_sync`])
//!   has the store flush on a blocking thread
//!   (`tokio::task::spawn_blocking`) and awaits it, so the worker serves
//!   its other tasks meanwhile; the price that stays is that a RocksDB
//!   write stall holds up that worker's networking too.
//! * Tokio tasks do the networking: the QUIC transport's accept loop, one
//!   task per peer that sends its frames in order from a queue of its own
//!   (at most [`PEER_SEND_QUEUE`] frames), writing whatever is queued in
//!   one batch (at most [`SEND_BATCH_FRAMES`]), and the HTTP server. The
//!   membership and shard threads queue their frames straight into the
//!   peer's queue, and reset a restarted peer's connection themselves.
//!   The tasks reach the threads only through their bounded event queues.
//!
//! # Bounds
//!
//! Memory is bounded by bytes, not only by counts:
//!
//! * Frames from peers waiting for the engine hold at most
//!   [`EVENT_QUEUE_BYTES`] (or one frame, if larger). The task that moves
//!   them from the transport waits for room, and the transport then holds
//!   back the peer's stream credit: backpressure, nothing dropped.
//! * Frames waiting to be sent or being sent hold at most
//!   [`SEND_QUEUE_BYTES`] (or one frame, if larger), and at most
//!   [`PEER_SEND_QUEUE`] frames in each peer's queue. A peer that takes no frames (dead
//!   without closing its connection) fills its own queue, not the others':
//!   its further frames fail at once.
//! * A frame that cannot be sent — the send queue has no room, no
//!   connection, the peer refused it, too large — is reported to the engine
//!   ([`Engine::handle_send_failed`]), which fails the replica for the
//!   request it belongs to. No frame is dropped silently.
//! * Client requests are bounded by the HTTP layer's concurrency limit,
//!   by each shard thread's event queue (`EVENT_QUEUE` events; a full
//!   one refuses as overloaded) and, inside the engine, by its admission
//!   rules.
//! * [`NodeHandle`] is the [`Service`] the HTTP layer calls: it queues a
//!   request with a one-shot channel for the answer.
//!
//! Shutdown: the HTTP server stops accepting and finishes in-flight
//! requests, the membership thread stops, tells the shard threads to
//! stop and waits for them (each carries out what it holds), syncs the
//! store and exits, and the QUIC endpoint closes.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chorus_storage::context::ContextKey;
use chorus_storage::store::{RocksConfig, RocksStore, Store, StoreConfig, StoreStats};
use tokio::sync::oneshot;

use crate::api::{
    BearerToken, ClusterStatus, PreflistStatus, ReadReply, ReadRequest, RequestError, RingStatus,
    Service, WriteReply, WriteRequest, DEFAULT_MAX_CONCURRENT_REQUESTS,
};
use crate::engine::{
    ClientReply, ClientRequest, DirectRoutes, Effect, Engine, EngineConfig, EngineStats, Facts,
    IdentityConflict, Now, ShardInput, ShardMap, ShardWorker,
};
use crate::telemetry::{MembersByLiveness, NodeMetrics, PeerFrames};
use crate::transport::tls::NodeIdentity;
use crate::transport::{QuicTransport, TransportConfig, TransportError};
use crate::wire::{Frame, Message};

/// Most events waiting for the membership thread, and for the shard
/// threads together (each shard's queue holds its share, at least
/// [`MIN_SHARD_QUEUE`]).
const EVENT_QUEUE: usize = 16_384;
/// Fewest events a shard thread's queue holds, however many shards split
/// [`EVENT_QUEUE`].
const MIN_SHARD_QUEUE: usize = 1024;
/// Most bytes of peers' frames waiting for the membership thread.
pub const EVENT_QUEUE_BYTES: usize = 64 << 20;
/// Most bytes of frames waiting to be sent or being sent.
pub const SEND_QUEUE_BYTES: usize = 64 << 20;
/// Most frames waiting to be sent to one peer.
pub const PEER_SEND_QUEUE: usize = 4096;
/// Most frames one peer's sending task writes at once.
const SEND_BATCH_FRAMES: usize = 64;
/// Bytes after which one peer's sending task stops adding frames to a
/// batch (a batch may exceed it by its last frame).
const SEND_BATCH_BYTES: usize = 1 << 20;
/// Most peer addresses with a sending task of their own.
const MAX_PEER_SENDERS: usize = 4096;
/// The most events a membership or shard thread handles before it carries out their
/// effects (and flushes the store's log once for all of them).
const EVENT_BATCH: usize = 64;
/// How often the membership thread folds recent histogram samples into the
/// node's metrics, so they stay bounded when nobody scrapes.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// How often, at most, a thread looks up the names of peers whose
/// frames it cannot label yet.
const PEER_NAMES_REFRESH: Duration = Duration::from_secs(1);

/// A budget of bytes shared by producers and consumers of a queue: a
/// producer takes the bytes of an item before queueing it, and the bytes
/// return when the item's [`Held`] is dropped (the item was handled).
///
/// An item larger than the whole budget takes the whole budget, so it
/// waits until nothing else is held but is never refused for its size
/// alone.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    bytes: Arc<tokio::sync::Semaphore>,
    capacity: usize,
}

/// Bytes held from a [`ByteBudget`]; they return to it when dropped.
#[derive(Debug)]
pub struct Held(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl ByteBudget {
    /// A budget of `capacity` bytes (at least 1, at most `u32::MAX`).
    pub fn new(capacity: usize) -> ByteBudget {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        ByteBudget {
            bytes: Arc::new(tokio::sync::Semaphore::new(capacity)),
            capacity,
        }
    }

    fn permits(&self, len: usize) -> u32 {
        len.clamp(1, self.capacity) as u32
    }

    /// Takes `len` bytes now, or `None` when the budget has not that many left.
    pub fn try_take(&self, len: usize) -> Option<Held> {
        self.bytes
            .clone()
            .try_acquire_many_owned(self.permits(len))
            .ok()
            .map(Held)
    }

    /// Takes `len` bytes, waiting until they are free.
    pub async fn take(&self, len: usize) -> Held {
        let permits = self.permits(len);
        Held(
            self.bytes
                .clone()
                .acquire_many_owned(permits)
                .await
                .expect("the budget's semaphore is never closed"),
        )
    }

    /// Bytes not held now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

/// What one node needs to run.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub engine: EngineConfig,
    pub data_dir: PathBuf,
    pub quic_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub identity: NodeIdentity,
    /// UNSAFE, for tests only: run the store without its write-ahead log
    /// ([`RocksConfig::unsafe_disable_wal`]), so that a crash loses
    /// acknowledged writes. A negative control for fault-injection runs.
    pub unsafe_disable_wal: bool,
    /// Bytes of the store's object cache
    /// ([`StoreConfig::object_cache_bytes`]); 0 turns it off.
    pub object_cache_bytes: u64,
    /// Run each shard's loop as a task of the async runtime instead of on
    /// a thread of its own: requests, peers' frames and the shard's work
    /// then meet on the runtime's worker threads without a hand-off
    /// between threads (thread-per-core when the runtime has one worker).
    /// `chorus node start` and `chorus dev` set it unless told otherwise.
    pub shards_on_io_threads: bool,
    pub http: HttpOptions,
}

/// Settings of a node's HTTP API.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The bearer token clients must present on every route but `/livez`
    /// and `/readyz`; `None` leaves the API open.
    pub token: Option<BearerToken>,
    /// The most requests served at once; more are refused with
    /// `503 overloaded` ([`Service::max_concurrent_requests`]).
    pub max_concurrent_requests: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            token: None,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Store(#[from] chorus_storage::store::StoreError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    /// The data directory could not be created.
    #[error("cannot create the data directory {}: {cause}", .path.display())]
    DataDir {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The HTTP listener could not be bound to `addr`.
    #[error("cannot listen for HTTP on {addr}: {cause}")]
    HttpBind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What the membership thread is asked to do.
#[derive(Debug)]
enum Event {
    /// A peer's frame that does not decode, and the bytes it holds of the
    /// event budget.
    Frame(SocketAddr, Vec<u8>, Held),
    /// A peer's frame for membership to check and route.
    Peer(SocketAddr, Frame, Held),
    /// A frame the engine emitted could not be sent.
    SendFailed(SocketAddr, bytes::Bytes),
    /// What a shard thread reported for membership.
    Facts(Facts),
    Status(oneshot::Sender<ClusterStatus>),
    Ring(oneshot::Sender<Option<RingStatus>>),
    Preflist {
        bucket: Vec<u8>,
        key: Vec<u8>,
        sloppy: bool,
        reply: oneshot::Sender<Option<PreflistStatus>>,
    },
    Stats(oneshot::Sender<NodeStats>),
    Leave,
    Shutdown,
}

/// What a shard thread is asked to do.
#[derive(Debug)]
enum ShardEvent {
    /// A client request for a key of the shard's.
    Client(
        ClientRequest,
        oneshot::Sender<Result<ClientReply, RequestError>>,
    ),
    /// What membership routed to the shard.
    Input(ShardInput),
    /// A data-plane frame from a settled peer, routed past membership
    /// ([`DirectRoutes`]), from the address it came from, with the bytes it
    /// holds of the event budget.
    Peer(SocketAddr, Frame, Held),
    Shutdown,
}

/// A shard's event queue, seen from its senders: a bounded channel and,
/// for a shard that runs as a task of the async runtime, the notification
/// that wakes it after each event queued.
#[derive(Debug, Clone)]
struct ShardQueue {
    events: SyncSender<ShardEvent>,
    wake: Option<Arc<tokio::sync::Notify>>,
}

impl ShardQueue {
    fn woken(&self) {
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
    }
}

/// A bounded queue into a membership or shard thread.
trait EventQueue<E>: Clone + Send + 'static {
    /// Queues `event` if there is room.
    fn try_push(&self, event: E) -> Result<(), TrySendError<E>>;
    /// Queues `event`, waiting for room (blocks the calling thread). False
    /// when the receiver is gone.
    fn push(&self, event: E) -> bool;
}

impl<E: Send + 'static> EventQueue<E> for SyncSender<E> {
    fn try_push(&self, event: E) -> Result<(), TrySendError<E>> {
        self.try_send(event)
    }
    fn push(&self, event: E) -> bool {
        self.send(event).is_ok()
    }
}

impl EventQueue<ShardEvent> for ShardQueue {
    fn try_push(&self, event: ShardEvent) -> Result<(), TrySendError<ShardEvent>> {
        self.events.try_send(event)?;
        self.woken();
        Ok(())
    }
    fn push(&self, event: ShardEvent) -> bool {
        let sent = self.events.send(event).is_ok();
        if sent {
            self.woken();
        }
        sent
    }
}

/// Where a shard's loop runs: a thread of its own, or a task of the async
/// runtime ([`NodeOptions::shards_on_io_threads`]).
enum ShardRunner {
    Thread(JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>, tokio::runtime::Handle),
}

impl ShardRunner {
    fn is_finished(&self) -> bool {
        match self {
            ShardRunner::Thread(thread) => thread.is_finished(),
            ShardRunner::Task(task, _) => task.is_finished(),
        }
    }

    /// Waits until the loop has ended (from outside the async runtime).
    fn join(self) {
        match self {
            ShardRunner::Thread(thread) => {
                let _ = thread.join();
            }
            ShardRunner::Task(task, runtime) => {
                let _ = runtime.block_on(task);
            }
        }
    }
}

/// Counters and gauges of a running node, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub engine: EngineStats,
    /// Hints queued on this node, summed over targets.
    pub pending_hints: usize,
    /// Members that have not left, by this node's view of their liveness.
    pub members: MembersByLiveness,
    /// The store's size figures.
    pub store: StoreStats,
}

/// The client side of a running node: implements [`Service`]. Cheap to
/// clone (the HTTP layer clones it for every request): one shared
/// allocation.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    shared: Arc<HandleShared>,
}

/// What every clone of a [`NodeHandle`] shares.
#[derive(Debug)]
struct HandleShared {
    /// Membership's thread.
    events: SyncSender<Event>,
    /// Each shard's queue, by index.
    shards: Arc<[ShardQueue]>,
    shard_map: ShardMap,
    ready: Arc<AtomicBool>,
    max_value_bytes: usize,
    context_key: ContextKey,
    metrics: NodeMetrics,
    http: HttpOptions,
}

impl NodeHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Event,
    ) -> Result<T, RequestError> {
        let (tx, rx) = oneshot::channel();
        match self.shared.events.try_send(make(tx)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(RequestError::Overloaded(
                    "the node's event queue is full".into(),
                ))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(RequestError::Unavailable(
                    "the node is shutting down".into(),
                ))
            }
        }
        rx.await
            .map_err(|_| RequestError::Unavailable("the node is shutting down".into()))
    }

    /// Counters and gauges of the node.
    pub async fn stats(&self) -> Result<NodeStats, RequestError> {
        self.ask(Event::Stats).await
    }

    /// Hands a client request to the thread of the shard that owns its key.
    async fn ask_shard(&self, request: ClientRequest) -> Result<ClientReply, RequestError> {
        let shard = &self.shared.shards[self.shared.shard_map.shard_of_request(&request)];
        let (tx, rx) = oneshot::channel();
        match shard.try_push(ShardEvent::Client(request, tx)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(RequestError::Overloaded(
                    "the shard's event queue is full".into(),
                ))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(RequestError::Unavailable(
                    "the node is shutting down".into(),
                ))
            }
        }
        rx.await
            .map_err(|_| RequestError::Unavailable("the node is shutting down".into()))?
    }
}

impl Service for NodeHandle {
    async fn get(&self, request: ReadRequest) -> Result<ReadReply, RequestError> {
        match self.ask_shard(ClientRequest::Get(request)).await? {
            ClientReply::Read(reply) => Ok(reply),
            ClientReply::Write(_) => {
                Err(RequestError::Internal("a read answered as a write".into()))
            }
        }
    }

    async fn put(&self, request: WriteRequest) -> Result<WriteReply, RequestError> {
        match self.ask_shard(ClientRequest::Put(request)).await? {
            ClientReply::Write(reply) => Ok(reply),
            ClientReply::Read(_) => {
                Err(RequestError::Internal("a write answered as a read".into()))
            }
        }
    }

    async fn cluster_status(&self) -> Result<ClusterStatus, RequestError> {
        self.ask(Event::Status).await
    }

    async fn ring(&self) -> Result<Option<RingStatus>, RequestError> {
        self.ask(Event::Ring).await
    }

    async fn preflist(
        &self,
        bucket: Vec<u8>,
        key: Vec<u8>,
        sloppy: bool,
    ) -> Result<Option<PreflistStatus>, RequestError> {
        self.ask(|reply| Event::Preflist {
            bucket,
            key,
            sloppy,
            reply,
        })
        .await
    }

    fn bearer_token(&self) -> Option<BearerToken> {
        self.shared.http.token.clone()
    }

    fn max_concurrent_requests(&self) -> usize {
        self.shared.http.max_concurrent_requests
    }

    fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Relaxed)
    }

    fn max_value_bytes(&self) -> usize {
        self.shared.max_value_bytes
    }

    fn context_key(&self) -> ContextKey {
        self.shared.context_key.clone()
    }

    fn node_metrics(&self) -> Option<&NodeMetrics> {
        Some(&self.shared.metrics)
    }

    async fn metrics(&self) -> Result<String, RequestError> {
        let stats = self.stats().await?;
        self.shared
            .metrics
            .record(|| crate::telemetry::record_node_stats(&stats));
        Ok(self.shared.metrics.render())
    }
}

/// A node that is running: its handle, addresses, and the means to stop it.
#[derive(Debug)]
pub struct RunningNode {
    pub handle: NodeHandle,
    pub quic_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub id: uuid::Uuid,
    engine_thread: Option<JoinHandle<()>>,
    http_task: tokio::task::JoinHandle<std::io::Result<()>>,
    http_shutdown: Option<oneshot::Sender<()>>,
    transport: Arc<QuicTransport>,
    halt: Option<oneshot::Receiver<Halt>>,
}

/// Whether `nodes`, the whole cluster, have formed: every node is ready
/// (it holds a ring) and sees every one of the `nodes.len()` members `up`,
/// both as the member published it and by its own failure detector.
/// Readiness alone comes a moment earlier, while the last members still
/// show as `joining`. Used by `chorus dev` before it says "cluster ready",
/// and by tests before they ask for every replica.
pub async fn all_members_up(nodes: &[RunningNode]) -> bool {
    for node in nodes {
        if !node.handle.is_ready() {
            return false;
        }
        let Ok(status) = node.handle.cluster_status().await else {
            return false;
        };
        let settled = status.members.len() == nodes.len()
            && status
                .members
                .iter()
                .all(|m| m.status == "up" && m.liveness == "up");
        if !settled {
            return false;
        }
    }
    true
}

/// Why the engine stopped serving by itself.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Halt {
    /// Another live process runs with this node's id.
    #[error(transparent)]
    IdentityConflict(IdentityConflict),
    /// The store could not put its writes in its log: what they decided
    /// was never acknowledged, and the node acknowledges nothing more.
    #[error("the store could not flush its writes: {0}")]
    StorageFailed(String),
    /// A shard's thread stopped by itself (it panicked: its log says
    /// why), so the keys of its partitions could no longer be served.
    #[error("the thread of shard {0} stopped; its keys cannot be served")]
    ShardStopped(usize),
}

impl RunningNode {
    /// Announces in gossip that this node leaves the cluster, gives the
    /// news `spread` to travel, then shuts down.
    pub async fn leave_and_shutdown(self, spread: Duration) {
        let _ = self.handle.shared.events.try_send(Event::Leave);
        tokio::time::sleep(spread).await;
        self.shutdown().await;
    }

    /// Resolves when the engine stopped serving by itself: another live
    /// process runs with this node's id, or the store could not flush its
    /// writes (the node serves nothing from then on); pending forever
    /// otherwise. The caller should shut the node down and exit with the
    /// error.
    pub async fn halted(&mut self) -> Halt {
        match self.halt.as_mut() {
            Some(rx) => match rx.await {
                Ok(halt) => halt,
                Err(_) => {
                    self.halt = None;
                    std::future::pending().await
                }
            },
            None => std::future::pending().await,
        }
    }

    /// Stops the node gracefully: stops taking HTTP requests and finishes
    /// those in flight, stops the engine (syncing the store) and closes
    /// the QUIC endpoint.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.http_shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.http_task).await;
        let _ = self.handle.shared.events.send(Event::Shutdown);
        if let Some(thread) = self.engine_thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.transport.close().await;
    }
}

/// Opens the store of a node whose data directory is `data_dir` (created
/// when absent): RocksDB in `data_dir/db` with the node's engine options
/// and store settings, for group commit (writes reach the log at
/// [`Store::flush`](chorus_storage::store::Store::flush)). Blocks. `unsafe_disable_wal` is
/// [`NodeOptions::unsafe_disable_wal`], `object_cache_bytes`
/// [`NodeOptions::object_cache_bytes`].
pub fn open_store(
    data_dir: &Path,
    unsafe_disable_wal: bool,
    object_cache_bytes: u64,
) -> Result<RocksStore, RuntimeError> {
    std::fs::create_dir_all(data_dir).map_err(|cause| RuntimeError::DataDir {
        path: data_dir.to_path_buf(),
        cause: if cause.kind() == std::io::ErrorKind::AlreadyExists {
            std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "it exists and is not a directory",
            )
        } else {
            cause
        },
    })?;
    let rocks = RocksConfig {
        unsafe_disable_wal,
        // The engine flushes before any effect leaves it.
        group_commit: true,
        ..RocksConfig::default()
    };
    let store = StoreConfig {
        object_cache_bytes,
        ..StoreConfig::default()
    };
    Ok(RocksStore::open(data_dir.join("db"), store, &rocks)?)
}

/// Opens the store, binds the QUIC and HTTP listeners and starts the node.
/// Must be called within a tokio runtime.
pub async fn start(options: NodeOptions) -> Result<RunningNode, RuntimeError> {
    let data_dir = options.data_dir.clone();
    let (unsafe_disable_wal, object_cache_bytes) =
        (options.unsafe_disable_wal, options.object_cache_bytes);
    let store = tokio::task::spawn_blocking(move || {
        open_store(&data_dir, unsafe_disable_wal, object_cache_bytes)
    })
    .await
    .expect("opening the store does not panic")?;
    let store = Arc::new(store);
    let (transport, mut incoming, clients) = QuicTransport::bind_serving_clients(
        options.quic_listen,
        &options.identity,
        TransportConfig {
            max_frame_bytes: options.engine.max_frame_bytes,
            ..TransportConfig::default()
        },
    )?;
    let transport = Arc::new(transport);
    let quic_addr = transport.local_addr()?;
    let listener = tokio::net::TcpListener::bind(options.http_listen)
        .await
        .map_err(|cause| RuntimeError::HttpBind {
            addr: options.http_listen,
            cause,
        })?;
    let http_addr = listener.local_addr()?;

    let origin = Instant::now();
    let seed = uuid::Uuid::new_v4().as_u64_pair().0;
    let max_value_bytes = options.engine.max_value_bytes;
    let max_frame_bytes = options.engine.max_frame_bytes;
    let mut engine = Engine::start(
        options.engine,
        Arc::clone(&store),
        quic_addr,
        http_addr,
        now_since(origin),
        seed,
    )?;
    let id = engine.id();
    tracing::info!(
        %id,
        generation = engine.generation(),
        shards = engine.shards(),
        shards_on_io_threads = options.shards_on_io_threads,
        object_cache_mib = object_cache_bytes >> 20,
        %quic_addr,
        %http_addr,
        "node started"
    );

    let (events, events_rx) = mpsc::sync_channel(EVENT_QUEUE);
    let ready = Arc::new(AtomicBool::new(engine.is_ready()));
    let shard_map = engine.shard_map();
    let workers = engine.detach_shards();
    // The shards split the node's event queue between them: a bounded
    // channel holds its whole capacity from the start.
    let shard_queue = (EVENT_QUEUE / workers.len().max(1)).max(MIN_SHARD_QUEUE);
    let shards_on_io_threads = options.shards_on_io_threads;
    let (shard_events, shard_events_rx): (Vec<_>, Vec<_>) = workers
        .iter()
        .map(|_| {
            let (events, events_rx) = mpsc::sync_channel::<ShardEvent>(shard_queue);
            let wake = shards_on_io_threads.then(|| Arc::new(tokio::sync::Notify::new()));
            let queue = ShardQueue {
                events,
                wake: wake.clone(),
            };
            (queue, (events_rx, wake))
        })
        .unzip();

    // Frames from peers, within the event byte budget: while it is spent
    // this task waits, and the transport holds further frames back (their
    // peers' stream credit with them). A data-plane frame from a settled
    // peer goes straight to its shard's thread (`DirectRoutes`); every
    // other frame goes to the membership thread, which checks it and
    // routes it on.
    let frame_events = events.clone();
    let frame_shards = shard_events.clone();
    let direct = Arc::new(Mutex::new(Arc::new(engine.direct_routes())));
    let frame_direct = direct.clone();
    let event_budget = ByteBudget::new(EVENT_QUEUE_BYTES.max(max_frame_bytes));
    tokio::spawn(async move {
        while let Some(incoming) = incoming.recv().await {
            let held = event_budget.take(incoming.payload.len()).await;
            let source = incoming.from;
            let sent = match Frame::decode(&incoming.payload, max_frame_bytes) {
                Ok(frame) => {
                    let routes = frame_direct
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    match routes.shard_of(&frame) {
                        Some(index) => {
                            let event = ShardEvent::Peer(source, frame, held);
                            send_waiting(&frame_shards[index], event).await
                        }
                        None => send_waiting(&frame_events, Event::Peer(source, frame, held)).await,
                    }
                }
                Err(_) => {
                    let event = Event::Frame(source, incoming.payload, held);
                    send_waiting(&frame_events, event).await
                }
            };
            if !sent {
                break;
            }
        }
    });
    // Frames from the threads to peers, through one queue and one sending
    // task per peer, so a peer that stops taking frames holds up only its
    // own (see `send_to_peer`). A frame that cannot be sent goes back to
    // the thread's engine, which fails the replica it was for.
    let peer_queues = Arc::new(PeerQueues {
        runtime: tokio::runtime::Handle::current(),
        transport: transport.clone(),
        failures: events.clone(),
        queues: Mutex::default(),
    });

    let metrics = NodeMetrics::new();
    let engine_metrics = metrics.clone();
    let engine_ready = ready.clone();
    let (halt_tx, halt_rx) = oneshot::channel();
    let send_budget = ByteBudget::new(SEND_QUEUE_BYTES.max(max_frame_bytes));
    let sends = Sends {
        peers: peer_queues,
        known: HashMap::new(),
        budget: send_budget,
    };
    let names = Arc::new(Mutex::new(Names::default()));
    let shard_stats: Arc<[Mutex<EngineStats>]> = workers.iter().map(|_| Mutex::default()).collect();
    let mut shard_threads = Vec::new();
    for (worker, (events_rx, wake)) in workers.into_iter().zip(shard_events_rx) {
        let context = ShardThread {
            origin,
            membership: events.clone(),
            sends: sends.for_thread(),
            peers: Peers::new(names.clone()),
            stats: shard_stats.clone(),
        };
        let metrics = metrics.clone();
        let runner = match wake {
            Some(wake) => ShardRunner::Task(
                tokio::spawn(context.run_as_task(
                    worker,
                    Arc::clone(&store),
                    events_rx,
                    wake,
                    metrics,
                )),
                tokio::runtime::Handle::current(),
            ),
            None => ShardRunner::Thread(
                std::thread::Builder::new()
                    .name(format!("chorus-shard{}", worker.index()))
                    .spawn(move || metrics.record(|| context.run(worker, &events_rx)))?,
            ),
        };
        shard_threads.push(runner);
    }
    let membership = MembershipThread {
        origin,
        shards: shard_events.clone(),
        shard_threads,
        shard_stats,
        sends,
        peers: Peers::new(names),
        direct,
        ready: engine_ready,
        halt: Some(halt_tx),
    };
    let engine_thread = std::thread::Builder::new()
        .name("chorus-members".into())
        .spawn(move || {
            // Everything the membership thread records goes to this node.
            engine_metrics.record(|| membership.run(engine, &events_rx, &engine_metrics))
        })?;

    let handle = NodeHandle {
        shared: Arc::new(HandleShared {
            events,
            shards: shard_events.into(),
            shard_map,
            ready,
            max_value_bytes,
            context_key: options.identity.context_key.clone(),
            metrics,
            http: options.http.clone(),
        }),
    };
    tokio::spawn(crate::client_quic::serve(clients, handle.clone()));
    let (http_shutdown, http_stop) = oneshot::channel::<()>();
    let http_task = tokio::spawn(crate::http::serve(listener, handle.clone(), async move {
        let _ = http_stop.await;
    }));
    Ok(RunningNode {
        handle,
        quic_addr,
        http_addr,
        id,
        engine_thread: Some(engine_thread),
        http_task,
        http_shutdown: Some(http_shutdown),
        transport,
        halt: Some(halt_rx),
    })
}

/// Sends the frames queued for one peer, in order, in batches: whatever is
/// queued when the previous batch is written (at most
/// [`SEND_BATCH_FRAMES`] frames and about [`SEND_BATCH_BYTES`]) goes in
/// one [`QuicTransport::send_batch`]. A peer that stops taking them (it
/// died without closing its connections, so its flow-control credit never
/// comes back) fills only its own queue, whose further frames then fail at
/// once, while every other peer's frames, gossip included, keep flowing.
async fn send_to_peer(
    transport: Arc<QuicTransport>,
    addr: SocketAddr,
    mut queue: tokio::sync::mpsc::Receiver<(bytes::Bytes, Held)>,
    failures: SyncSender<Event>,
) {
    let mut payloads = Vec::with_capacity(SEND_BATCH_FRAMES);
    let mut held = Vec::with_capacity(SEND_BATCH_FRAMES);
    while let Some((payload, bytes)) = queue.recv().await {
        let mut batch_bytes = payload.len();
        payloads.push(payload);
        held.push(bytes);
        while payloads.len() < SEND_BATCH_FRAMES && batch_bytes < SEND_BATCH_BYTES {
            let Ok((payload, bytes)) = queue.try_recv() else {
                break;
            };
            batch_bytes += payload.len();
            payloads.push(payload);
            held.push(bytes);
        }
        let mut from = 0;
        while from < payloads.len() {
            let Err(failure) = transport.send_batch(addr, &payloads[from..]).await else {
                break;
            };
            tracing::debug!(%addr, error = %failure.error, "frames not delivered; the engine is told");
            let failed = from + failure.sent;
            let rest = if let TransportError::FrameTooLarge { .. } = failure.error {
                // That frame alone fails; the ones after it are sent.
                failed + 1
            } else {
                payloads.len()
            };
            for payload in &payloads[failed..rest] {
                report_send_failure(&failures, addr, payload.clone()).await;
            }
            from = rest;
        }
        payloads.clear();
        held.clear();
    }
}

/// Queues `event` for a membership or shard thread; when the queue is
/// full, waits for room off the async workers. False when the thread is
/// gone.
async fn send_waiting<E: Send + 'static>(queue: &impl EventQueue<E>, event: E) -> bool {
    let event = match queue.try_push(event) {
        Ok(()) => return true,
        Err(TrySendError::Disconnected(_)) => return false,
        Err(TrySendError::Full(event)) => event,
    };
    let queue = queue.clone();
    tokio::task::spawn_blocking(move || queue.push(event))
        .await
        .unwrap_or(false)
}

/// Hands a frame that could not be sent back to the engine. The report
/// waits for room in the event queue (off the async workers): losing it
/// would leave the request to its timeout.
async fn report_send_failure(events: &SyncSender<Event>, addr: SocketAddr, payload: bytes::Bytes) {
    send_waiting(events, Event::SendFailed(addr, payload)).await;
}

/// A peer's send queue, which its sending task ([`send_to_peer`]) takes
/// frames from, each with the bytes it holds of the send budget.
type PeerQueue = tokio::sync::mpsc::Sender<(bytes::Bytes, Held)>;

/// The peers' send queues, shared by the membership and shard threads,
/// with what a queue's sending task needs when a thread first sends to
/// its peer.
struct PeerQueues {
    /// Where the sending tasks run.
    runtime: tokio::runtime::Handle,
    transport: Arc<QuicTransport>,
    /// Membership's queue, for frames the transport could not deliver.
    failures: SyncSender<Event>,
    /// At most [`MAX_PEER_SENDERS`] queues; a queue whose task ended is
    /// replaced, none is removed.
    queues: Mutex<HashMap<SocketAddr, PeerQueue>>,
}

impl PeerQueues {
    /// The queue of the peer at `addr`, with its sending task started if
    /// it had none (or its task ended). `None` when [`MAX_PEER_SENDERS`]
    /// other peers have one.
    fn queue(&self, addr: SocketAddr) -> Option<PeerQueue> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = queues.get(&addr).filter(|queue| !queue.is_closed()) {
            return Some(queue.clone());
        }
        if queues.len() >= MAX_PEER_SENDERS && !queues.contains_key(&addr) {
            return None;
        }
        let (queue, frames) = tokio::sync::mpsc::channel(PEER_SEND_QUEUE);
        let transport = self.transport.clone();
        let failures = self.failures.clone();
        self.runtime
            .spawn(send_to_peer(transport, addr, frames, failures));
        queues.insert(addr, queue.clone());
        Some(queue)
    }

    /// Drops the connection to the peer at `addr`, which restarted, now:
    /// frames queued for it from here on go on a fresh connection.
    fn reset(&self, addr: SocketAddr) {
        let _runtime = self.runtime.enter();
        self.transport.reset_peer(addr);
    }
}

/// A thread's way to the peers' send queues.
struct Sends {
    peers: Arc<PeerQueues>,
    /// The queues this thread sent to, so that a send takes no lock (at
    /// most [`MAX_PEER_SENDERS`], as the shared ones).
    known: HashMap<SocketAddr, PeerQueue>,
    budget: ByteBudget,
}

impl Sends {
    /// The same queues and budget, for another thread.
    fn for_thread(&self) -> Sends {
        Sends {
            peers: self.peers.clone(),
            known: HashMap::new(),
            budget: self.budget.clone(),
        }
    }

    /// Queues `payload` for the peer at `addr`, or hands it back when the
    /// peer's queue is full or cannot be had.
    fn send(
        &mut self,
        addr: SocketAddr,
        payload: bytes::Bytes,
        held: Held,
    ) -> Result<(), bytes::Bytes> {
        let queue = match self.known.get(&addr) {
            Some(queue) if !queue.is_closed() => queue,
            _ => {
                let Some(queue) = self.peers.queue(addr) else {
                    tracing::debug!(%addr, "too many peers to send to; the frame fails");
                    return Err(payload);
                };
                self.known.entry(addr).insert_entry(queue).into_mut()
            }
        };
        queue.try_send((payload, held)).map_err(|error| {
            tracing::debug!(%addr, "the peer's send queue is full; the frame fails");
            match error {
                tokio::sync::mpsc::error::TrySendError::Full((payload, _))
                | tokio::sync::mpsc::error::TrySendError::Closed((payload, _)) => payload,
            }
        })
    }
}

fn now_since(origin: Instant) -> Now {
    let wall_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Now {
        mono: origin.elapsed(),
        wall_ms,
    }
}

/// What emits effects for a thread to carry out: membership (the
/// [`Engine`] with its shards detached) or a [`ShardWorker`].
trait Emitter {
    fn poll_effect(&mut self) -> Option<Effect>;
    fn frame(&self, message: Message) -> Frame;
    fn handle_send_failed(&mut self, now: Now, to: SocketAddr, payload: &[u8]);
}

impl<S: Store> Emitter for Engine<S> {
    fn poll_effect(&mut self) -> Option<Effect> {
        Engine::poll_effect(self)
    }
    fn frame(&self, message: Message) -> Frame {
        Engine::frame(self, message)
    }
    fn handle_send_failed(&mut self, now: Now, to: SocketAddr, payload: &[u8]) {
        Engine::handle_send_failed(self, now, to, payload)
    }
}

impl<S: Store> Emitter for ShardWorker<S> {
    fn poll_effect(&mut self) -> Option<Effect> {
        ShardWorker::poll_effect(self)
    }
    fn frame(&self, message: Message) -> Frame {
        ShardWorker::frame(self, message)
    }
    fn handle_send_failed(&mut self, now: Now, to: SocketAddr, payload: &[u8]) {
        ShardWorker::handle_send_failed(self, now, to, payload)
    }
}

/// Carries out the effects of `emitter`. A frame the send queue has no
/// room for (by count or by bytes) is handed back to the emitter as a send
/// failure at once, which may lead to more effects.
fn carry_out(
    emitter: &mut impl Emitter,
    sends: &mut Sends,
    waiting: &mut BTreeMap<u64, oneshot::Sender<Result<ClientReply, RequestError>>>,
    origin: Instant,
    peers: &mut Peers,
) {
    loop {
        let mut failed = Vec::new();
        while let Some(effect) = emitter.poll_effect() {
            let (addr, message) = match effect {
                Effect::Send { addr, message, .. } | Effect::SendToSeed { addr, message } => {
                    (addr, message)
                }
                Effect::ResetConnection { addr } => {
                    sends.peers.reset(addr);
                    continue;
                }
                Effect::Reply { client, result } => {
                    crate::telemetry::record_reply(&result);
                    if let Some(reply) = waiting.remove(&client) {
                        let _ = reply.send(result);
                    }
                    continue;
                }
            };
            let payload = emitter.frame(message).encode();
            peers.frames(addr).sent.increment(1);
            let Some(held) = sends.budget.try_take(payload.len()) else {
                tracing::debug!(%addr, "send budget spent; the frame fails");
                failed.push((addr, payload));
                continue;
            };
            if let Err(payload) = sends.send(addr, bytes::Bytes::from(payload), held) {
                failed.push((addr, payload.to_vec()));
            }
        }
        if failed.is_empty() {
            return;
        }
        let now = now_since(origin);
        for (addr, payload) in failed {
            peers.frames(addr).send_failed.increment(1);
            emitter.handle_send_failed(now, addr, &payload);
        }
    }
}

/// The members' names and addresses the membership thread last shared,
/// for every thread's frame counters, and a version bumped at each share.
#[derive(Debug, Default)]
struct Names {
    version: u64,
    status: Option<ClusterStatus>,
}

/// A thread's frame counters by peer, labelled with the peers' names.
///
/// The membership thread looks the names up from the engine when a frame
/// comes from or goes to an address it cannot label yet (at most every
/// [`PEER_NAMES_REFRESH`]), and otherwise every [`PEER_NAMES_REFRESH`],
/// and shares what it found ([`Names`]); a shard thread learns from the
/// shared names whenever they are newer than what it learned last.
struct Peers {
    frames: PeerFrames,
    /// When the membership thread last looked the names up.
    looked_up: Option<Instant>,
    /// The version of the shared names this thread learned last.
    learned: u64,
    names: Arc<Mutex<Names>>,
}

impl Peers {
    fn new(names: Arc<Mutex<Names>>) -> Peers {
        Peers {
            frames: PeerFrames::new(),
            looked_up: None,
            learned: 0,
            names,
        }
    }

    /// The counters of the peer at `addr`, learning names shared since the
    /// last call if `addr` has none yet.
    fn frames(&mut self, addr: SocketAddr) -> &crate::telemetry::FrameCounters {
        if !self.frames.knows(&addr) {
            let names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
            if names.version != self.learned {
                if let Some(status) = &names.status {
                    self.frames.learn(status);
                }
                self.learned = names.version;
            }
        }
        self.frames.of(&addr)
    }

    /// On the membership thread: the counters of the peer at `addr`,
    /// looking the names up from `engine` first (and sharing them) if
    /// `addr` has none yet and the last look-up is [`PEER_NAMES_REFRESH`]
    /// old.
    fn frames_looked_up<S: Store>(
        &mut self,
        engine: &Engine<S>,
        addr: SocketAddr,
    ) -> &crate::telemetry::FrameCounters {
        if !self.frames.knows(&addr) {
            self.share_names(engine);
        }
        self.frames(addr)
    }

    /// On the membership thread: looks the names up from `engine` and
    /// shares them, at most every [`PEER_NAMES_REFRESH`].
    fn share_names<S: Store>(&mut self, engine: &Engine<S>) {
        if self
            .looked_up
            .is_some_and(|at| at.elapsed() < PEER_NAMES_REFRESH)
        {
            return;
        }
        self.looked_up = Some(Instant::now());
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        names.version += 1;
        names.status = Some(engine.cluster_status());
    }
}

/// How a batch of events ended.
enum Batch {
    /// Its events were handled; `Now` is the time of the last.
    Handled(Now),
    /// A shutdown came, at this time; the events before it were handled.
    Shutdown(Now),
    /// Every sender is gone.
    Disconnected,
}

/// Waits for the next event until `wakeup` (monotonic, from `origin`),
/// then takes whatever else is already queued, at most [`EVENT_BATCH`] in
/// all, handing each to `handle` with the time (`None`: the wait ran out,
/// a tick). Stops at an event `is_shutdown` names, which is not handed on.
fn receive_batch<E>(
    events: &mpsc::Receiver<E>,
    origin: Instant,
    wakeup: Duration,
    is_shutdown: impl Fn(&E) -> bool,
    handle: impl FnMut(Now, Option<E>),
) -> Batch {
    let wait = wakeup.saturating_sub(now_since(origin).mono);
    let first = match events.recv_timeout(wait.max(Duration::from_millis(1))) {
        Ok(event) => Some(event),
        Err(RecvTimeoutError::Timeout) => None,
        Err(RecvTimeoutError::Disconnected) => return Batch::Disconnected,
    };
    continue_batch(events, origin, first, is_shutdown, handle)
}

/// Hands `first` (`None`: a tick) and then whatever else is already queued
/// to `handle`, as [`receive_batch`] does once it has its first event.
fn continue_batch<E>(
    events: &mpsc::Receiver<E>,
    origin: Instant,
    first: Option<E>,
    is_shutdown: impl Fn(&E) -> bool,
    mut handle: impl FnMut(Now, Option<E>),
) -> Batch {
    let mut event = first;
    let mut handled = 0;
    loop {
        let now = now_since(origin);
        if event.as_ref().is_some_and(&is_shutdown) {
            return Batch::Shutdown(now);
        }
        handle(now, event);
        handled += 1;
        if handled >= EVENT_BATCH {
            return Batch::Handled(now);
        }
        event = match events.try_recv() {
            Ok(event) => Some(event),
            Err(_) => return Batch::Handled(now),
        };
    }
}

/// The membership thread: drives the engine with its shards detached
/// (gossip, the ring, status, peers' frames and send failures, which it
/// routes on to the shards), and owns the shard threads.
struct MembershipThread {
    origin: Instant,
    /// Each shard thread's queue, by index.
    shards: Vec<ShardQueue>,
    shard_threads: Vec<ShardRunner>,
    /// Each shard's counters, as its thread last published them.
    shard_stats: Arc<[Mutex<EngineStats>]>,
    sends: Sends,
    peers: Peers,
    /// The routes the frame task takes past membership, as last published.
    direct: Arc<Mutex<Arc<DirectRoutes>>>,
    ready: Arc<AtomicBool>,
    halt: Option<oneshot::Sender<Halt>>,
}

impl MembershipThread {
    /// Hands one event (not a shutdown) to the engine.
    fn handle<S: Store>(&mut self, engine: &mut Engine<S>, now: Now, event: Event) {
        match event {
            Event::Peer(source, frame, held) => {
                engine.handle_message(now, source, frame);
                self.peers
                    .frames_looked_up(engine, source)
                    .received
                    .increment(1);
                drop(held);
            }
            Event::Frame(source, bytes, held) => {
                let result = engine.handle_frame(now, source, &bytes);
                let frames = self.peers.frames_looked_up(engine, source);
                match result {
                    Ok(()) => frames.received.increment(1),
                    Err(e) => {
                        frames.refused.increment(1);
                        tracing::debug!(error = %e, "frame refused");
                    }
                }
                drop(held);
            }
            Event::SendFailed(addr, payload) => {
                self.peers
                    .frames_looked_up(engine, addr)
                    .send_failed
                    .increment(1);
                engine.handle_send_failed(now, addr, &payload);
            }
            Event::Facts(facts) => engine.handle_facts(facts),
            Event::Status(reply) => {
                let _ = reply.send(engine.cluster_status());
            }
            Event::Ring(reply) => {
                let _ = reply.send(engine.ring_status());
            }
            Event::Preflist {
                bucket,
                key,
                sloppy,
                reply,
            } => {
                let _ = reply.send(engine.preflist_status(&bucket, &key, sloppy));
            }
            Event::Stats(reply) => {
                let pending_hints = engine
                    .pending_hints()
                    .map(|counts| counts.iter().map(|(_, n)| n).sum())
                    .unwrap_or(0);
                let mut stats = engine.stats();
                for shard in self.shard_stats.iter() {
                    stats.add(&shard.lock().unwrap_or_else(PoisonError::into_inner));
                }
                let _ = reply.send(NodeStats {
                    engine: stats,
                    pending_hints,
                    members: MembersByLiveness::of(&engine.cluster_status()),
                    store: engine.store().stats(),
                });
            }
            Event::Leave => {
                tracing::info!("announcing that this node leaves the cluster");
                engine.leave(now);
            }
            Event::Shutdown => unreachable!("receive_batch stops at a shutdown"),
        }
    }

    /// Passes what membership routed to the shards on to their threads, in
    /// order. A shard's full queue holds membership back (backpressure).
    fn route_to_shards<S: Store>(&self, engine: &mut Engine<S>) {
        while let Some((shard, input)) = engine.poll_shard_input() {
            match shard {
                Some(index) => {
                    let _ = self.shards[index].push(ShardEvent::Input(input));
                }
                None => {
                    for queue in &self.shards {
                        let _ = queue.push(ShardEvent::Input(input.clone()));
                    }
                }
            }
        }
    }

    /// Publishes the routes past membership if they changed.
    fn publish_direct_routes<S: Store>(&self, engine: &Engine<S>) {
        let routes = engine.direct_routes();
        let mut direct = self.direct.lock().unwrap_or_else(PoisonError::into_inner);
        if **direct != routes {
            *direct = Arc::new(routes);
        }
    }

    /// The membership thread's loop.
    ///
    /// Inputs are handled in batches: after the first event (or a
    /// timeout), whatever else is already queued is handled too, up to
    /// [`EVENT_BATCH`], before the effects are carried out and what was
    /// routed to the shards is passed on.
    fn run<S: Store>(
        mut self,
        mut engine: Engine<S>,
        events: &mpsc::Receiver<Event>,
        metrics: &NodeMetrics,
    ) {
        let mut waiting = BTreeMap::new();
        let mut upkeep = Instant::now();
        loop {
            let batch = receive_batch(
                events,
                self.origin,
                engine.next_wakeup(),
                |event| matches!(event, Event::Shutdown),
                |now, event| match event {
                    None => engine.handle_tick(now),
                    Some(event) => self.handle(&mut engine, now, event),
                },
            );
            let (now, shutting_down) = match batch {
                Batch::Handled(now) => (now, false),
                Batch::Shutdown(now) => (now, true),
                Batch::Disconnected => break,
            };
            if engine.next_wakeup() <= now.mono {
                engine.handle_tick(now);
            }
            self.peers.share_names(&engine);
            carry_out(
                &mut engine,
                &mut self.sends,
                &mut waiting,
                self.origin,
                &mut self.peers,
            );
            self.route_to_shards(&mut engine);
            // After what membership routed to the shards: a restart it
            // learnt reaches them before frames of the new incarnation can
            // go past it.
            self.publish_direct_routes(&engine);
            if shutting_down {
                break;
            }
            if upkeep.elapsed() >= METRICS_UPKEEP_INTERVAL {
                metrics.run_upkeep();
                upkeep = Instant::now();
            }
            self.ready.store(engine.is_ready(), Ordering::Relaxed);
            let stop = if let Some(found) = engine.identity_conflict() {
                Some(Halt::IdentityConflict(found.clone()))
            } else if let Some(failure) = engine.storage_failure() {
                Some(Halt::StorageFailed(failure.to_owned()))
            } else {
                // Shard threads stop by themselves only on a storage
                // failure (above) or a panic.
                self.shard_threads
                    .iter()
                    .position(ShardRunner::is_finished)
                    .map(Halt::ShardStopped)
            };
            if let Some(stop) = stop {
                if let Some(tx) = self.halt.take() {
                    let _ = tx.send(stop);
                }
                // Not a clean stop: the running marker stays, so a later
                // start of this directory begins a new epoch.
                break;
            }
        }
        self.ready.store(false, Ordering::Relaxed);
        // The shards finish what they hold and flush before the store stops.
        for queue in &self.shards {
            let _ = queue.push(ShardEvent::Shutdown);
        }
        for runner in self.shard_threads.drain(..) {
            runner.join();
        }
        if engine.identity_conflict().is_some() || engine.storage_failure().is_some() {
            if let Err(e) = engine.store().sync() {
                tracing::error!(error = %e, "could not sync the store at shutdown");
            }
        } else if let Err(e) = engine.stop() {
            tracing::error!(error = %e, "could not stop the store cleanly");
        }
        tracing::info!("engine stopped");
    }
}

/// A shard thread: drives one detached shard with the client requests for
/// its partitions and what membership routed to it.
struct ShardThread {
    origin: Instant,
    /// Membership's queue, for the facts the shard reports.
    membership: SyncSender<Event>,
    sends: Sends,
    peers: Peers,
    /// Where this shard publishes its counters (at its index).
    stats: Arc<[Mutex<EngineStats>]>,
}

/// What a shard's loop keeps between batches.
#[derive(Default)]
struct ShardLoop {
    /// Client requests waiting for their answers, by the shard's id for them.
    waiting: BTreeMap<u64, oneshot::Sender<Result<ClientReply, RequestError>>>,
    next_client: u64,
    /// Facts membership had no room for yet.
    facts: Facts,
}

impl ShardThread {
    /// The shard thread's loop: events in batches (at most
    /// [`EVENT_BATCH`]) whose writes share one flush of the store's log,
    /// then the effects, then the facts for membership and the counters.
    fn run<S: Store>(mut self, mut worker: ShardWorker<S>, events: &mpsc::Receiver<ShardEvent>) {
        let mut state = ShardLoop::default();
        loop {
            let wakeup = worker.next_wakeup();
            let batch = receive_batch(
                events,
                self.origin,
                wakeup,
                |event| matches!(event, ShardEvent::Shutdown),
                |now, event| Self::handle(&mut self.peers, &mut worker, &mut state, now, event),
            );
            if !self.finish_batch(&mut worker, &mut state, batch) {
                break;
            }
        }
        Self::stop(state);
    }

    /// The same loop as [`run`](Self::run), as a task on the async
    /// runtime: it waits for its queue (`wake` is notified after each
    /// event queued) or its next wakeup without a thread of its own, and
    /// yields to the runtime's other tasks after each batch.
    async fn run_as_task<S: Store, T: Store + 'static>(
        mut self,
        mut worker: ShardWorker<S>,
        store: Arc<T>,
        events: mpsc::Receiver<ShardEvent>,
        wake: Arc<tokio::sync::Notify>,
        metrics: NodeMetrics,
    ) {
        let mut state = ShardLoop::default();
        loop {
            let first = loop {
                match events.try_recv() {
                    Ok(event) => break Some(Some(event)),
                    Err(mpsc::TryRecvError::Disconnected) => break None,
                    Err(mpsc::TryRecvError::Empty) => {}
                }
                match self.origin.checked_add(worker.next_wakeup()) {
                    Some(deadline) if Instant::now() >= deadline => break Some(None),
                    Some(deadline) => {
                        let _ = tokio::time::timeout_at(deadline.into(), wake.notified()).await;
                    }
                    None => wake.notified().await,
                }
            };
            let Some(first) = first else { break };
            let batch = metrics.record(|| {
                continue_batch(
                    &events,
                    self.origin,
                    first,
                    |event| matches!(event, ShardEvent::Shutdown),
                    |now, event| Self::handle(&mut self.peers, &mut worker, &mut state, now, event),
                )
            });
            if worker.owes_sync() {
                // The batch's fsync (a `sync=true` write's, under group
                // commit) on a blocking thread, while this worker serves
                // its other tasks. A failure leaves the flush owed: the
                // shard's own flush before the first effect tries again
                // and reports it.
                let store = Arc::clone(&store);
                let _ = tokio::task::spawn_blocking(move || store.flush()).await;
            }
            let go_on = metrics.record(|| self.finish_batch(&mut worker, &mut state, batch));
            if !go_on {
                break;
            }
            tokio::task::yield_now().await;
        }
        Self::stop(state);
    }

    /// Hands one event (`None`: a tick) to the shard.
    fn handle<S: Store>(
        peers: &mut Peers,
        worker: &mut ShardWorker<S>,
        state: &mut ShardLoop,
        now: Now,
        event: Option<ShardEvent>,
    ) {
        match event {
            None => worker.handle_tick(now),
            Some(ShardEvent::Client(request, reply)) => {
                state.next_client += 1;
                let client = state.next_client;
                state.waiting.insert(client, reply);
                worker.handle_client(now, client, request);
            }
            Some(ShardEvent::Input(input)) => worker.handle_input(now, input),
            Some(ShardEvent::Peer(source, frame, held)) => {
                peers.frames(source).received.increment(1);
                let input = ShardInput::Message {
                    from: frame.from,
                    generation: frame.generation,
                    message: frame.message,
                };
                worker.handle_input(now, input);
                drop(held);
            }
            Some(ShardEvent::Shutdown) => unreachable!("receive_batch stops at a shutdown"),
        }
    }

    /// After a batch: a due tick, the effects, the facts for membership and
    /// the counters. False when the loop ends.
    fn finish_batch<S: Store>(
        &mut self,
        worker: &mut ShardWorker<S>,
        state: &mut ShardLoop,
        batch: Batch,
    ) -> bool {
        let (now, shutting_down) = match batch {
            Batch::Handled(now) => (now, false),
            Batch::Shutdown(now) => (now, true),
            Batch::Disconnected => return false,
        };
        if worker.next_wakeup() <= now.mono {
            worker.handle_tick(now);
        }
        carry_out(
            worker,
            &mut self.sends,
            &mut state.waiting,
            self.origin,
            &mut self.peers,
        );
        // Facts membership has no room for now wait for the next batch.
        let mut reported = worker.take_facts();
        reported.add(state.facts);
        state.facts = reported;
        if !state.facts.is_empty() {
            match self.membership.try_send(Event::Facts(state.facts)) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => state.facts = Facts::default(),
                Err(TrySendError::Full(_)) => {}
            }
        }
        *self.stats[worker.index()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = worker.stats();
        !(shutting_down || worker.storage_failure().is_some())
    }

    /// Answers the requests still waiting: the node is shutting down.
    fn stop(state: ShardLoop) {
        for (_, reply) in state.waiting {
            let _ = reply.send(Err(RequestError::Unavailable(
                "the node is shutting down".into(),
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_budget_refuses_what_it_has_not_and_gets_bytes_back_on_drop() {
        let budget = ByteBudget::new(100);
        let a = budget.try_take(60).expect("60 of 100");
        assert!(budget.try_take(41).is_none(), "only 40 left");
        let b = budget.try_take(40).expect("the last 40");
        assert_eq!(budget.available(), 0);
        drop(a);
        assert_eq!(budget.available(), 60);
        drop(b);
        assert_eq!(budget.available(), 100);
    }

    #[test]
    fn an_item_larger_than_the_budget_takes_all_of_it_and_waits_for_the_rest() {
        let budget = ByteBudget::new(100);
        let small = budget.try_take(1).expect("room");
        assert!(budget.try_take(1_000).is_none(), "needs the whole budget");
        drop(small);
        let big = budget.try_take(1_000).expect("the whole budget");
        assert_eq!(budget.available(), 0);
        drop(big);
        assert_eq!(budget.available(), 100);
    }

    /// A peer that goes away while its sender is blocked halfway through a
    /// batch: the frames not sent whole come back to the engine, in order
    /// and ending with the last one queued; every frame's bytes return to
    /// the budget; a frame queued later reaches the peer's next incarnation
    /// on a new connection.
    #[tokio::test]
    async fn a_peer_lost_mid_batch_gets_its_unsent_frames_failed_back_and_the_next_frame_reconnects(
    ) {
        use crate::transport::ClusterCa;
        const FRAMES: u8 = 100;
        let ca = ClusterCa::generate("send-to-peer").expect("ca");
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let (a, _a_incoming) = QuicTransport::bind(
            loopback,
            &ca.issue("a").expect("issue"),
            TransportConfig {
                connect_timeout: Duration::from_millis(500),
                ..TransportConfig::default()
            },
        )
        .expect("bind a");
        let b_identity = ca.issue("b").expect("issue");
        let b_config = TransportConfig {
            incoming_queue: 2,
            ..TransportConfig::default()
        };
        let (b, mut b_incoming) =
            QuicTransport::bind(loopback, &b_identity, b_config.clone()).expect("bind b");
        let b_addr = b.local_addr().expect("addr");
        let a = Arc::new(a);
        a.send(b_addr, b"open".to_vec()).await.expect("a -> b");
        b_incoming.recv().await.expect("open");

        // Step 1: more frames than b takes while nobody reads; the sender
        // blocks in the middle of a batch.
        let (queue, queue_rx) = tokio::sync::mpsc::channel(PEER_SEND_QUEUE);
        let (failures, failures_rx) = mpsc::sync_channel(PEER_SEND_QUEUE);
        tokio::spawn(send_to_peer(a.clone(), b_addr, queue_rx, failures));
        let budget = ByteBudget::new(SEND_QUEUE_BYTES);
        for i in 0..FRAMES {
            let frame = bytes::Bytes::from(vec![i; 64 * 1024]);
            let held = budget.try_take(frame.len()).expect("room");
            queue.send((frame, held)).await.expect("queued");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(budget.available() < SEND_QUEUE_BYTES, "frames are held");

        // Step 2: b goes away. The frames not sent whole fail back, in
        // order, up to the last one; every frame's bytes come back.
        b.close().await;
        drop((b, b_incoming));
        let failed = tokio::task::spawn_blocking(move || {
            let mut failed = Vec::new();
            while let Ok(event) = failures_rx.recv_timeout(Duration::from_secs(10)) {
                let Event::SendFailed(addr, payload) = event else {
                    panic!("not a send failure: {event:?}");
                };
                assert_eq!(addr, b_addr);
                failed.push(payload[0]);
                if payload[0] == FRAMES - 1 {
                    break;
                }
            }
            failed
        })
        .await
        .expect("collector");
        let first = *failed.first().expect("some frames fail");
        assert_eq!(failed, (first..FRAMES).collect::<Vec<u8>>());
        assert!(first > 0, "the frames b took were sent");
        assert_eq!(budget.available(), SEND_QUEUE_BYTES);

        // Step 3: b comes back on its address; the next frame opens a new
        // connection and arrives.
        let (_b, mut b_incoming) = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match QuicTransport::bind(b_addr, &b_identity, b_config.clone()) {
                    Ok(bound) => break bound,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await
        .expect("the port is free again");
        let held = budget.try_take(5).expect("room");
        queue
            .send((bytes::Bytes::from_static(b"again"), held))
            .await
            .expect("queued");
        let again = tokio::time::timeout(Duration::from_secs(10), b_incoming.recv())
            .await
            .expect("delivered in time")
            .expect("open");
        assert_eq!(again.payload, b"again");
    }

    #[tokio::test]
    async fn a_producer_waits_for_bytes_until_the_consumer_returns_them() {
        let budget = ByteBudget::new(100);
        let held = budget.take(100).await;
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(50).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no bytes are free");
        drop(held);
        let second = waiting.await.expect("the waiter gets its bytes");
        assert_eq!(budget.available(), 50);
        drop(second);
    }
}
