//! Cluster-level tests for Chorus.
//!
//! * [`sim`] — the deterministic cluster simulator: real engines over
//!   in-memory stores and a simulated network, in virtual time.
//! * [`nemesis`] — starts and ends faults in a simulation at random, from a
//!   seed: partitions, crashes, pauses, clock faults, BUGGIFY.
//! * [`fuzz`] — the bodies of the fuzz targets in `fuzz/`: every decoder
//!   fed from outside, with the properties it must keep for any input.
//! * [`overwrite`] — the *no silent overwrite* checker over a client's
//!   history: an acknowledged value disappears only after a write whose
//!   context came from a response that showed it.
//!
//! The tests themselves live in `tests/tests/`: the seeded simulations
//! (`simulation.rs`) and end-to-end tests with real nodes over QUIC on
//! loopback (`cluster.rs`). The tests of each single crate live beside that
//! crate.

pub mod campaign;
pub mod check;
pub mod fuzz;
pub mod history;
pub mod nemesis;
pub mod netns;
pub mod overwrite;
pub mod real;
pub mod sim;
pub mod workload;
