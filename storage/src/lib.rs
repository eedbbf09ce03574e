//! Versioned values and their storage for Chorus.

pub mod context;
pub mod hlc;
pub mod object;
pub mod store;
pub mod version;
