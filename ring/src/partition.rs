//! The hash of a key and the split of the hash space into partitions.

use std::fmt;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_64, Xxh3Default};

use crate::RingError;

/// The smallest partition count a ring accepts.
pub const MIN_PARTITIONS: u32 = 8;
/// The largest partition count a ring accepts.
pub const MAX_PARTITIONS: u32 = 65_536;
/// The partition count of a cluster created without one.
pub const DEFAULT_PARTITIONS: u32 = 256;

/// One of the P equal key ranges of the 64-bit hash space.
///
/// Partition `i` holds the hashes whose top `log2(P)` bits equal `i`, so the
/// partitions are contiguous, ordered ranges of the hash space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionId(pub u32);

impl PartitionId {
    /// The partition number as an index into per-partition tables.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// The 64-bit hash of a key, the input of partitioning.
///
/// The hash is XXH3-64 (seed 0) of the bytes
/// `len(bucket) as u64 little-endian ‖ bucket ‖ key`. The length prefix makes
/// the encoding injective: `("ab", "c")` and `("a", "bc")` hash different
/// bytes. XXH3 is specified bit for bit and gives the same value on every
/// platform; the test vectors in this module pin it, because changing the hash
/// would move every key of every existing cluster.
pub fn key_hash(bucket: &[u8], key: &[u8]) -> u64 {
    let len = 8 + bucket.len() + key.len();
    if len <= 64 {
        // One-shot hashing of a stack copy: the common case, no allocation.
        hash_inline::<64>(bucket, key)
    } else if len <= 256 {
        hash_inline::<256>(bucket, key)
    } else {
        // Streaming XXH3 produces the same value as one-shot over the same bytes.
        let mut hasher = Xxh3Default::new();
        hasher.update(&(bucket.len() as u64).to_le_bytes());
        hasher.update(bucket);
        hasher.update(key);
        hasher.digest()
    }
}

/// [`key_hash`] through a stack buffer of `N` bytes, `N ≥ 8 + |bucket| + |key|`.
#[inline]
fn hash_inline<const N: usize>(bucket: &[u8], key: &[u8]) -> u64 {
    let mut buf = [0u8; N];
    let split = 8 + bucket.len();
    let len = split + key.len();
    buf[..8].copy_from_slice(&(bucket.len() as u64).to_le_bytes());
    buf[8..split].copy_from_slice(bucket);
    buf[split..len].copy_from_slice(key);
    xxh3_64(&buf[..len])
}

/// The split of the 64-bit hash space into P equal ranges, P a power of two.
///
/// Fixed when a cluster is created: changing P would move every key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partitions {
    count: u32,
    shift: u32,
}

impl Partitions {
    /// P partitions; P must be a power of two in
    /// [`MIN_PARTITIONS`]`..=`[`MAX_PARTITIONS`].
    pub fn new(count: u32) -> Result<Self, RingError> {
        if !count.is_power_of_two() || !(MIN_PARTITIONS..=MAX_PARTITIONS).contains(&count) {
            return Err(RingError::BadPartitionCount(count));
        }
        Ok(Self {
            count,
            shift: 64 - count.trailing_zeros(),
        })
    }

    /// P, the number of partitions.
    pub const fn count(self) -> u32 {
        self.count
    }

    /// The partition holding a hash: its top `log2(P)` bits.
    #[inline]
    pub const fn of_hash(self, hash: u64) -> PartitionId {
        PartitionId((hash >> self.shift) as u32)
    }

    /// The partition holding a key of a bucket.
    #[inline]
    pub fn of_key(self, bucket: &[u8], key: &[u8]) -> PartitionId {
        self.of_hash(key_hash(bucket, key))
    }

    /// The hashes a partition holds.
    ///
    /// # Panics
    /// If `partition` is not below P (a programmer error).
    pub fn hash_range(self, partition: PartitionId) -> RangeInclusive<u64> {
        assert!(
            partition.0 < self.count,
            "{partition} is outside a ring of {} partitions",
            self.count
        );
        let start = u64::from(partition.0) << self.shift;
        let end = start | (u64::MAX >> (64 - self.shift));
        start..=end
    }

    /// Every partition, in order.
    pub fn iter(self) -> impl ExactSizeIterator<Item = PartitionId> + DoubleEndedIterator {
        (0..self.count).map(PartitionId)
    }
}

impl Default for Partitions {
    fn default() -> Self {
        Self {
            count: DEFAULT_PARTITIONS,
            shift: 64 - DEFAULT_PARTITIONS.trailing_zeros(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh3_matches_the_reference_implementation() {
        // Published XXH3-64 value of the empty input: guards the library itself.
        assert_eq!(xxh3_64(b""), 0x2D06_8005_38D3_94C2);
    }

    #[test]
    fn key_hash_vectors_are_pinned() {
        // These values place every key of every cluster; they must never change.
        // They agree with the reference C implementation of XXH3-64.
        let long_key: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
        let vectors: [(&[u8], &[u8], u64); 6] = [
            (b"", b"", 0xC77B_3ABB_6F87_ACD9),
            (b"users", b"alice", 0x2DEE_F3CE_24B5_756B),
            (b"users", b"bob", 0x9C40_073B_5FC2_55FE),
            (b"a", b"bc", 0xA417_C064_999B_5134),
            (b"ab", b"c", 0xCE70_6513_2BC1_BA7C),
            (b"bucket", &long_key, 0xCAD5_00A7_EA93_F4BD),
        ];
        for (bucket, key, expected) in vectors {
            assert_eq!(
                key_hash(bucket, key),
                expected,
                "key_hash({:?}, {:?})",
                String::from_utf8_lossy(bucket),
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn length_prefix_separates_splits() {
        assert_ne!(key_hash(b"ab", b"c"), key_hash(b"a", b"bc"));
        assert_ne!(key_hash(b"", b"abc"), key_hash(b"abc", b""));
    }

    #[test]
    fn every_buffer_size_hashes_like_the_one_shot_encoding() {
        // With a 6-byte bucket, keys of 50 and 242 bytes fill the 64- and
        // 256-byte stack buffers exactly; longer keys are hashed streaming.
        for len in [0usize, 49, 50, 51, 100, 241, 242, 243, 300, 5000] {
            let bucket = b"bucket";
            let key: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut bytes = (bucket.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(bucket);
            bytes.extend_from_slice(&key);
            assert_eq!(key_hash(bucket, &key), xxh3_64(&bytes), "key length {len}");
        }
    }

    #[test]
    fn partition_count_must_be_a_power_of_two_in_range() {
        for bad in [0, 1, 2, 4, 7, 100, 255, 257, 131_072, u32::MAX] {
            assert_eq!(Partitions::new(bad), Err(RingError::BadPartitionCount(bad)));
        }
        for good in [8, 16, 256, 4096, 65_536] {
            assert_eq!(Partitions::new(good).unwrap().count(), good);
        }
        assert_eq!(Partitions::default(), Partitions::new(256).unwrap());
    }

    #[test]
    fn partition_is_the_top_bits_of_the_hash() {
        let p = Partitions::new(256).unwrap();
        assert_eq!(p.of_hash(0), PartitionId(0));
        assert_eq!(p.of_hash(u64::MAX), PartitionId(255));
        assert_eq!(p.of_hash(0x0100_0000_0000_0000), PartitionId(1));
        assert_eq!(p.of_hash(0x00FF_FFFF_FFFF_FFFF), PartitionId(0));
        let big = Partitions::new(65_536).unwrap();
        assert_eq!(big.of_hash(0xABCD_0000_0000_0001), PartitionId(0xABCD));
    }

    #[test]
    fn hash_ranges_tile_the_hash_space() {
        for count in [8, 256, 65_536] {
            let parts = Partitions::new(count).unwrap();
            let mut next = 0u64;
            for p in parts.iter() {
                let range = parts.hash_range(p);
                assert_eq!(*range.start(), next);
                assert_eq!(parts.of_hash(*range.start()), p);
                assert_eq!(parts.of_hash(*range.end()), p);
                next = range.end().wrapping_add(1);
            }
            assert_eq!(next, 0, "the last range ends at u64::MAX");
        }
    }

    #[test]
    fn keys_spread_evenly_over_partitions() {
        let parts = Partitions::new(64).unwrap();
        let mut counts = [0u32; 64];
        for i in 0..64_000u32 {
            counts[parts
                .of_key(b"bucket", format!("key-{i}").as_bytes())
                .index()] += 1;
        }
        // 1000 expected per partition; a binomial standard deviation is ~31.
        assert!(
            counts.iter().all(|&c| (850..=1150).contains(&c)),
            "{counts:?}"
        );
    }
}
