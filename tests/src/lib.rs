//! Cluster-level tests for Chorus.
//!
//! This crate will hold the deterministic cluster simulator, the history
//! checkers and the end-to-end tests once there is a cluster to test. The
//! tests of each single crate live beside that crate.
