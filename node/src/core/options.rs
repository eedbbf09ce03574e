//! Per-request options. The public contract lives in `chorus-client`
//! ([`chorus_client::options`]); the node parses, resolves and checks them
//! with the same code a client uses to build them.

pub use chorus_client::options::*;
