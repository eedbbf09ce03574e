//! Small stable hashes used to break ties and order fallbacks.
//!
//! Both are fixed functions of their inputs (XXH3 and the SplitMix64
//! finalizer), so every node and every release computes the same ring.

use xxhash_rust::xxh3::xxh3_64;

use crate::member::NodeId;

/// The SplitMix64 finalizer: a bijective 64-bit mix.
pub(crate) const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 64-bit key of a node id.
pub(crate) fn node_key(id: &NodeId) -> u64 {
    xxh3_64(id.as_bytes())
}
