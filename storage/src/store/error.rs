//! The store layer's error.

use chorus_ring::PartitionId;
use uuid::Uuid;

use crate::object::DecodeError;

/// Why a store operation failed. Every variant means the operation wrote
/// nothing (a batch is all or nothing).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine's storage failed (a RocksDB or file-system error). Whether
    /// retrying helps depends on `cause`, which the message includes (and
    /// so does not repeat as the error's source).
    #[error("storage I/O error during {operation}: {cause}")]
    Io {
        operation: &'static str,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Another process (or another open in this one) holds the database
    /// in `path` open: RocksDB's `LOCK` file there is taken. Nothing was
    /// opened; two processes on one data directory would corrupt it.
    #[error(
        "the database in {} is in use by another process (its LOCK file is held)",
        .path.display()
    )]
    InUse { path: std::path::PathBuf },

    /// The stored bytes of an object do not decode. The stored bytes are left
    /// as they are; the key cannot be read or updated until repaired (a merge
    /// from another replica cannot fix it either, since it reads first).
    #[error(
        "corrupt object at partition {partition}, bucket {}, key {}: {source}",
        .bucket.escape_ascii(),
        .key.escape_ascii()
    )]
    CorruptObject {
        partition: PartitionId,
        bucket: Vec<u8>,
        key: Vec<u8>,
        #[source]
        source: DecodeError,
    },

    /// A stored hint does not decode.
    #[error("corrupt hint {seq} for node {target}: {reason}")]
    CorruptHint {
        target: Uuid,
        seq: u64,
        reason: String,
    },

    /// Any other stored record (a data key or a metadata value) does not decode.
    #[error("corrupt record in {column_family} under key {}: {reason}", .key.escape_ascii())]
    CorruptRecord {
        column_family: &'static str,
        key: Vec<u8>,
        reason: String,
    },

    /// A bucket longer than [`MAX_BUCKET_LEN`](super::MAX_BUCKET_LEN).
    #[error("bucket of {len} bytes exceeds the maximum of {max} bytes")]
    BucketTooLong { len: usize, max: usize },

    /// A key longer than [`MAX_KEY_LEN`](super::MAX_KEY_LEN).
    #[error("key of {len} bytes exceeds the maximum of {max} bytes")]
    KeyTooLong { len: usize, max: usize },

    /// An object whose encoding is larger than a stored object may be
    /// ([`MAX_ENCODED_LEN`](crate::object::MAX_ENCODED_LEN)); storing it would
    /// make the key unreadable, so it is refused.
    #[error("encoded object of {len} bytes exceeds the maximum of {max} bytes")]
    ObjectTooLarge { len: usize, max: usize },

    /// An object with more siblings than a stored object may hold
    /// ([`MAX_DECODED_SIBLINGS`](crate::object::MAX_DECODED_SIBLINGS));
    /// storing it would make the key unreadable, so it is refused.
    #[error("object of {count} siblings exceeds the maximum of {max}")]
    TooManySiblings { count: usize, max: usize },

    /// A batch with more keys than [`MAX_BATCH_KEYS`](super::MAX_BATCH_KEYS).
    #[error("batch of {len} keys exceeds the maximum of {max} keys")]
    BatchTooLarge { len: usize, max: usize },

    /// The hint queue of `target` holds the configured maximum; the hint was
    /// not added. Deliver or drop hints to make room.
    #[error("hint queue for node {target} is full ({max} hints)")]
    HintQueueFull { target: Uuid, max: usize },

    /// A metadata name or value over its bound.
    #[error("metadata {what} of {len} bytes exceeds the maximum of {max} bytes")]
    MetadataTooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
}

impl StoreError {
    pub(crate) fn io(
        operation: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Io {
            operation,
            cause: Box::new(source),
        }
    }
}
