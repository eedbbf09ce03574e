//! The Chorus client.
//!
//! The request and response types, the Rust client and the interactive shell
//! live here once the node serves its HTTP and QUIC APIs. Nothing is exported yet.
