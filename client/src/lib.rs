//! The public side of Chorus: what a client sends and receives, and a Rust
//! client for it.
//!
//! The contract (always built, no network code):
//! * [`options`]: per-request consistency options (`r`, `w`, `pr`, `pw`,
//!   `timeout`, `sync`, `sloppy`, `returnbody`), parsed and checked exactly
//!   as a node does;
//! * [`problem`]: the error body with its stable codes;
//! * [`types`]: reply bodies (siblings, cluster status) and header names;
//! * [`limits`]: sizes a node accepts, and checks for them;
//! * [`protocol`]: the QUIC client protocol's messages and framing.
//!
//! Nodes depend on these types and nothing here depends on a node.
//!
//! With the `http` feature (on by default), [`Client`] is the Rust client
//! over HTTP; with the `quic` feature (on by default, implies `http`) it
//! also speaks the QUIC client protocol ([`Client::quic`]). See the
//! [`client`] module for examples of both.
//!
//! With the `shell` feature (on by default), [`shell`] is the `chorus shell`
//! and the one-shot `chorus get|put|del|admin` commands; only the `chorus`
//! binary uses it. With the `bench` feature (on by default), [`bench`] is
//! `chorus bench`, the load generator.

#[cfg(feature = "bench")]
pub mod bench;
#[cfg(feature = "http")]
pub mod client;
pub mod limits;
pub mod options;
pub mod problem;
pub mod protocol;
#[cfg(feature = "quic")]
mod quic;
#[cfg(feature = "shell")]
pub mod shell;
pub mod types;

pub use options::{OptionsError, Quorum, RequestKind, RequestOptions};
pub use problem::{ProblemBody, WriteOutcome};

#[cfg(feature = "http")]
pub use client::{
    Client, ClientBuilder, Context, Deleted, Error, Found, Read, Sibling, Value, Written,
    ANSWER_GRACE,
};
#[cfg(feature = "quic")]
pub use quic::ClientTls;
