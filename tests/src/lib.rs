//! Cluster-level tests for Chorus.
//!
//! * [`sim`] — the deterministic cluster simulator: real engines over
//!   in-memory stores and a simulated network, in virtual time.
//!
//! The tests themselves live in `tests/tests/`: the seeded simulations
//! (`simulation.rs`) and end-to-end tests with real nodes over QUIC on
//! loopback (`cluster.rs`). The tests of each single crate live beside that
//! crate.

pub mod sim;
