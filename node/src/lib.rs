//! The Chorus node: the replica and coordinator logic of a leaderless
//! key-value store, and (in time) the runtime that drives it.
//!
//! # Layout
//!
//! * [`core`] — the deterministic request-coordination core: per-request
//!   options, the get and put coordinators as pure accumulators, the
//!   replica's side of a write, and the placement of a write's copies under
//!   sloppy quorum. No I/O, no clocks, no timers, no randomness.
//!
//! # What this crate deliberately does not do (yet)
//!
//! The runtime that owns sockets, timers and the storage handle, the QUIC
//! transport, the HTTP API and configuration live in later modules. The
//! `chorus` binary does not use this library yet.

pub mod core;
