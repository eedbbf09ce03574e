//! The Chorus node: the replica and coordinator logic of a leaderless
//! key-value store, the runtime that drives it, its QUIC transport and HTTP
//! API, and the `chorus` binary.
//!
//! # Layout, from pure to impure
//!
//! * [`core`] — per-request options, placement under sloppy quorum, and the
//!   get and put coordinators as pure accumulators; the replica's side of a
//!   write. No I/O, no clocks, no randomness.
//! * [`engine`] — one node's whole cluster logic as a deterministic state
//!   machine: gossip, the ring and its claimant, request coordination,
//!   replica answers, hinted handoff and read repair. Time comes in as an
//!   argument, randomness from a seeded generator, frames and replies go out
//!   as effects; its only I/O is its [`Store`](chorus_storage::store::Store).
//! * [`buggify`] — fault sites in the engine that only the simulator turns
//!   on.
//! * [`wire`] — the internode messages.
//! * [`transport`] — QUIC with mutual TLS against a cluster CA.
//! * [`api`], [`answer`], [`http`] and [`client_quic`] — what the client
//!   APIs ask of a node, the answers and problem bodies both build the same
//!   way, the HTTP server, and the QUIC client protocol's server.
//! * [`bench_store`] — `chorus bench`'s driver of the node's storage
//!   engine alone, the baseline replication is measured against.
//! * [`runtime`] — threads, sockets, timers and the RocksDB handle: drives
//!   an engine with the real clock and network.
//! * [`telemetry`] — the node's metrics: names, labels, and one Prometheus
//!   recorder per node.
//! * [`config`] — the node's TOML configuration.
//!
//! Only `runtime`, `transport`, `http`, `client_quic` and `bench_store`
//! (and the binary) may read a clock, draw OS randomness, spawn a task or
//! thread, or open a socket: clippy's `disallowed_methods` (the workspace's `clippy.toml`)
//! refuses those calls everywhere else in this crate.
//!
//! # What this crate deliberately does not do (yet)
//!
//! Partitions do not move when the ring changes (so the ring does not change
//! once the cluster holds data), replicas do not run anti-entropy, and
//! tombstones are not collected.

// The modules below that allow `clippy::disallowed_methods` are the impure
// edge: they read clocks, own sockets and spawn tasks. Every other module is
// held to the workspace's clippy.toml, which refuses those calls.

pub mod answer;
pub mod api;
// `chorus bench --target store:DIR`: blocking store calls on tokio's
// blocking pool, timestamps from the wall clock.
#[allow(clippy::disallowed_methods)]
pub mod bench_store;
pub mod buggify;
// The QUIC client protocol's server: a task per connection and stream.
#[allow(clippy::disallowed_methods)]
pub mod client_quic;
pub mod config;
pub mod core;
pub mod engine;
// The HTTP server: its listener, and request timing.
#[allow(clippy::disallowed_methods)]
pub mod http;
// Drives the engine with the real clock, threads, tasks and network.
#[allow(clippy::disallowed_methods)]
pub mod runtime;
pub mod telemetry;
// QUIC endpoints, their sockets and tasks, and certificates dated by the clock.
#[allow(clippy::disallowed_methods)]
pub mod transport;
pub mod wire;
