//! The stored layout of keys and small records, shared by every engine.
//!
//! * data key: partition id (4 bytes, big-endian) ++ bucket length (1 byte)
//!   ++ bucket ++ key. The partition prefix makes each partition one
//!   contiguous range; the length byte makes the encoding injective and keeps
//!   every bucket of a partition contiguous too.
//! * hint key: target node id (16 bytes) ++ sequence number (8 bytes,
//!   big-endian), so one target's hints are a range in the order added.
//! * hint value: format marker `2` ++ durability (1: `1` synced, `0`
//!   buffered) ++ partition (4, BE) ++ bucket length (1) ++ bucket ++ key
//!   length (4, BE) ++ key ++ [`Object::encode`] bytes. Format `1` (still
//!   read) has no durability byte and means buffered.
//! * metadata keys: one tag byte, then the tag's own suffix (see `meta`).

use chorus_ring::PartitionId;
use uuid::Uuid;

use super::{Durability, KeyRef, StoreError};
use crate::object::Object;

/// The longest bucket name, in bytes: the public contract's
/// ([`chorus_client::limits::MAX_BUCKET_BYTES`]); its length is stored in
/// one byte.
pub const MAX_BUCKET_LEN: usize = chorus_client::limits::MAX_BUCKET_BYTES;
const _: () = assert!(MAX_BUCKET_LEN <= u8::MAX as usize);
/// The longest key, in bytes: the public contract's
/// ([`chorus_client::limits::MAX_KEY_BYTES`]).
pub const MAX_KEY_LEN: usize = chorus_client::limits::MAX_KEY_BYTES;
/// The most keys in one batch.
pub const MAX_BATCH_KEYS: usize = 10_000;
/// The longest generic metadata name, in bytes.
pub const MAX_META_NAME_LEN: usize = 255;
/// The largest generic metadata value, in bytes.
pub const MAX_META_VALUE_LEN: usize = 64 * 1024;

/// Hint values without a durability byte (read as buffered).
const HINT_FORMAT_V1: u8 = 1;
/// Hint values with the durability the write was acknowledged with.
const HINT_FORMAT_V2: u8 = 2;

/// A decoded hint value: partition, bucket, key, object, durability.
pub(crate) type DecodedHint = (PartitionId, Vec<u8>, Vec<u8>, Object, Durability);

/// Refuses buckets and keys over their bounds.
pub(crate) fn check_key(key: KeyRef<'_>) -> Result<(), StoreError> {
    if key.bucket.len() > MAX_BUCKET_LEN {
        return Err(StoreError::BucketTooLong {
            len: key.bucket.len(),
            max: MAX_BUCKET_LEN,
        });
    }
    if key.key.len() > MAX_KEY_LEN {
        return Err(StoreError::KeyTooLong {
            len: key.key.len(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(())
}

/// The stored form of a data key (see the module doc). Fails on a bucket or
/// key over its bound. Public so tools and tests can address stored records.
pub fn data_key(key: KeyRef<'_>) -> Result<Vec<u8>, StoreError> {
    check_key(key)?;
    let mut out = Vec::with_capacity(5 + key.bucket.len() + key.key.len());
    out.extend_from_slice(&key.partition.0.to_be_bytes());
    out.push(key.bucket.len() as u8);
    out.extend_from_slice(key.bucket);
    out.extend_from_slice(key.key);
    Ok(out)
}

/// The prefix every data key of `partition` starts with.
pub(crate) fn partition_prefix(partition: PartitionId) -> [u8; 4] {
    partition.0.to_be_bytes()
}

/// Splits a stored data key of a known partition into bucket and key.
pub(crate) fn split_data_key(stored: &[u8]) -> Result<(&[u8], &[u8]), StoreError> {
    let corrupt = |reason: &str| StoreError::CorruptRecord {
        column_family: "data",
        key: stored.to_vec(),
        reason: reason.to_owned(),
    };
    let rest = stored
        .get(4..)
        .ok_or_else(|| corrupt("key shorter than its partition prefix"))?;
    let (&bucket_len, rest) = rest
        .split_first()
        .ok_or_else(|| corrupt("key without a bucket length"))?;
    let bucket_len = usize::from(bucket_len);
    if rest.len() < bucket_len {
        return Err(corrupt("key shorter than its bucket"));
    }
    let (bucket, key) = rest.split_at(bucket_len);
    if key.len() > MAX_KEY_LEN {
        return Err(corrupt("key over the maximum length"));
    }
    Ok((bucket, key))
}

/// The smallest key that is greater than every key starting with `prefix`,
/// or `None` when there is none (the prefix is all `0xff`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The smallest key greater than `key`.
pub(crate) fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

pub(crate) fn hint_key(target: Uuid, seq: u64) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[..16].copy_from_slice(target.as_bytes());
    out[16..].copy_from_slice(&seq.to_be_bytes());
    out
}

/// Splits a stored hint key into target and sequence number.
pub(crate) fn split_hint_key(stored: &[u8]) -> Result<(Uuid, u64), StoreError> {
    let fixed: &[u8; 24] = stored.try_into().map_err(|_| StoreError::CorruptRecord {
        column_family: "hints",
        key: stored.to_vec(),
        reason: format!("hint key of {} bytes, expected 24", stored.len()),
    })?;
    let target = Uuid::from_bytes(fixed[..16].try_into().expect("16 bytes"));
    let seq = u64::from_be_bytes(fixed[16..].try_into().expect("8 bytes"));
    Ok((target, seq))
}

/// A hint value: the format byte ([`HINT_FORMAT_V2`]), the durability byte
/// (1 = synced), partition, bucket, key and the encoded object. Format 1 is
/// the same without the durability byte, read as buffered.
pub(crate) fn encode_hint(key: KeyRef<'_>, object_bytes: &[u8], durability: Durability) -> Vec<u8> {
    let mut out = Vec::with_capacity(11 + key.bucket.len() + key.key.len() + object_bytes.len());
    out.push(HINT_FORMAT_V2);
    out.push(u8::from(durability == Durability::Sync));
    out.extend_from_slice(&key.partition.0.to_be_bytes());
    out.push(key.bucket.len() as u8);
    out.extend_from_slice(key.bucket);
    out.extend_from_slice(&(key.key.len() as u32).to_be_bytes());
    out.extend_from_slice(key.key);
    out.extend_from_slice(object_bytes);
    out
}

/// The parts of a stored hint value, or why it does not decode.
pub(crate) fn decode_hint(bytes: &[u8]) -> Result<DecodedHint, String> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
        if bytes.len() < n {
            return Err(format!("truncated in its {what}"));
        }
        let (head, tail) = bytes.split_at(n);
        *bytes = tail;
        Ok(head)
    }
    let mut rest = bytes;
    let format = take(&mut rest, 1, "format marker")?[0];
    let durability = match format {
        HINT_FORMAT_V1 => Durability::Buffered,
        HINT_FORMAT_V2 => match take(&mut rest, 1, "durability")?[0] {
            0 => Durability::Buffered,
            1 => Durability::Sync,
            other => return Err(format!("unknown hint durability {other}")),
        },
        _ => return Err(format!("unknown hint format {format}")),
    };
    let partition = PartitionId(u32::from_be_bytes(
        take(&mut rest, 4, "partition")?
            .try_into()
            .expect("4 bytes"),
    ));
    let bucket_len = usize::from(take(&mut rest, 1, "bucket length")?[0]);
    let bucket = take(&mut rest, bucket_len, "bucket")?.to_vec();
    let key_len = u32::from_be_bytes(
        take(&mut rest, 4, "key length")?
            .try_into()
            .expect("4 bytes"),
    );
    let key_len = usize::try_from(key_len).unwrap_or(usize::MAX);
    if key_len > MAX_KEY_LEN {
        return Err(format!("key length {key_len} over the maximum"));
    }
    let key = take(&mut rest, key_len, "key")?.to_vec();
    let object = Object::decode(rest).map_err(|e| format!("object: {e}"))?;
    Ok((partition, bucket, key, object, durability))
}

/// Metadata keys: a tag byte and its suffix.
pub(crate) mod meta {
    use chorus_ring::PartitionId;

    pub const NODE_ID: &[u8] = &[1];
    pub const GENERATION: &[u8] = &[2];
    pub const HLC_CEILING: &[u8] = &[3];
    /// The next hint sequence number, written with every hint added so
    /// sequence numbers are never reused after a restart.
    pub const NEXT_HINT_SEQ: &[u8] = &[4];
    const ACTOR: u8 = 5;
    const GENERIC: u8 = 6;
    /// The prefix every partition's actor key starts with.
    pub const ACTOR_PREFIX: &[u8] = &[ACTOR];

    pub fn actor(partition: PartitionId) -> [u8; 5] {
        let mut out = [ACTOR, 0, 0, 0, 0];
        out[1..].copy_from_slice(&partition.0.to_be_bytes());
        out
    }

    pub fn generic(name: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + name.len());
        out.push(GENERIC);
        out.extend_from_slice(name.as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_keys_order_by_partition_then_bucket_length_then_bytes() {
        let k = |p, b: &[u8], k: &[u8]| data_key(KeyRef::new(PartitionId(p), b, k)).unwrap();
        assert!(k(1, b"zz", b"z") < k(2, b"", b""));
        assert!(k(1, b"b", b"zzz") < k(1, b"aa", b""));
        assert!(k(1, b"ab", b"x") < k(1, b"ac", b""));
        assert!(k(1, b"a", b"x") < k(1, b"a", b"x\0"));
        assert_eq!(
            split_data_key(&k(9, b"bkt", b"key")).unwrap(),
            (&b"bkt"[..], &b"key"[..])
        );
    }

    #[test]
    fn split_rejects_short_keys() {
        assert!(split_data_key(&[0, 0, 0]).is_err());
        assert!(split_data_key(&[0, 0, 0, 1]).is_err());
        assert!(split_data_key(&[0, 0, 0, 1, 3, b'a']).is_err());
    }

    #[test]
    fn prefix_end_carries() {
        assert_eq!(prefix_end(&[0, 1]), Some(vec![0, 2]));
        assert_eq!(prefix_end(&[0, 0xff]), Some(vec![1]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }

    #[test]
    fn hints_round_trip_and_reject_damage() {
        let key = KeyRef::new(PartitionId(3), b"b", b"k");
        let object = Object::new();
        for durability in [Durability::Buffered, Durability::Sync] {
            let bytes = encode_hint(key, &object.encode(), durability);
            let (p, b, k, o, d) = decode_hint(&bytes).unwrap();
            assert_eq!(
                (p, b.as_slice(), k.as_slice(), o, d),
                (
                    PartitionId(3),
                    &b"b"[..],
                    &b"k"[..],
                    object.clone(),
                    durability
                )
            );
            for cut in 0..bytes.len() {
                assert!(decode_hint(&bytes[..cut]).is_err(), "truncated at {cut}");
            }
        }
        // Format 1 (no durability byte) is still read, as buffered.
        let mut v1 = encode_hint(key, &object.encode(), Durability::Sync);
        v1.remove(1);
        v1[0] = HINT_FORMAT_V1;
        assert_eq!(decode_hint(&v1).unwrap().4, Durability::Buffered);
        let mut bad = encode_hint(key, &object.encode(), Durability::Sync);
        bad[1] = 7;
        assert!(decode_hint(&bad).is_err(), "unknown durability");
        let target = Uuid::from_u128(7);
        assert_eq!(split_hint_key(&hint_key(target, 42)).unwrap(), (target, 42));
    }
}
