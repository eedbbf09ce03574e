//! The messages nodes send each other.
//!
//! Every message travels as one [`Frame`]: the sender's id and generation
//! and a [`Message`], encoded with MessagePack. The transport adds its own
//! protocol version and length prefix around the encoded frame and refuses
//! oversized frames before reading them; [`Frame::decode`] refuses input
//! beyond its limit again, limits the nesting depth, and rejects trailing
//! bytes.
//!
//! Objects travel in their versioned storage encoding ([`Object::encode`])
//! and are decoded with [`Object::decode`], which checks every invariant an
//! object must hold, so a replica never stores a malformed object a peer
//! sent.
//!
//! Requests carry a request id chosen by the sender, unique across the
//! sender's incarnations (its generation sits in the high bits); replies
//! echo the id and name the key they answer, and the engine takes a reply
//! only when sender, request id and key all match a request it has in
//! flight. Every frame carries the sender's generation: a node drops
//! data-plane messages (everything but gossip and ring exchange) from a
//! generation older than the newest it knows for that sender, so nothing
//! from a previous incarnation is taken for an answer (design.md §6).

use std::io::Cursor;

use chorus_storage::hlc::Timestamp;
use chorus_storage::object::{Object, MAX_ENCODED_LEN};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::RequestError;
use crate::core::ReplicaError;

/// The version of this message set. A frame of another version is refused.
pub const WIRE_VERSION: u16 = 2;

/// The largest encoded frame accepted, in bytes: the largest object a
/// replica may store ([`MAX_ENCODED_LEN`]) plus room for the key and the
/// message around it, so every stored object can be replicated, read
/// remotely, repaired and hinted (design.md §3 rule 9).
pub const MAX_FRAME_BYTES: usize = MAX_ENCODED_LEN + (1 << 20);

/// How deep MessagePack nesting may go while decoding.
const MAX_DEPTH: usize = 32;

/// One message with its sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub version: u16,
    /// The sending node.
    pub from: Uuid,
    /// The sender's generation.
    pub generation: u64,
    pub message: Message,
}

/// The key a data message is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireKey {
    pub partition: u32,
    #[serde(with = "serde_bytes")]
    pub bucket: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
}

/// A client write forwarded to a replica of its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedWrite {
    #[serde(with = "serde_bytes")]
    pub bucket: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// The client's causal context ([`to_bytes`](chorus_storage::context::CausalContext::to_bytes)), already
    /// authenticated by the sender.
    #[serde(with = "serde_bytes")]
    pub context: Option<Vec<u8>>,
    pub w: usize,
    pub pw: usize,
    pub timeout_ms: u64,
    pub sync: bool,
    pub sloppy: bool,
    /// Answer with the key's object after the write (`returnbody`).
    pub return_body: bool,
    /// The value's media type, already checked by the sender; the
    /// receiver checks it again with the other bounds. Written only when
    /// present and read as `None` when absent, so a write without one is
    /// encoded as before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// The outcome of a forwarded write that was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedReply {
    /// The writer's new context ([`to_bytes`](chorus_storage::context::CausalContext::to_bytes)).
    #[serde(with = "serde_bytes")]
    pub context: Vec<u8>,
    /// With `return_body`, the coordinator's object after the write.
    #[serde(with = "serde_bytes")]
    pub object: Option<Vec<u8>>,
}

impl Message {
    /// Whether the message belongs to the data plane (reads, writes,
    /// forwarded writes, hints and their replies), which a node takes only
    /// from a sender's newest generation it knows. Gossip and ring exchange
    /// carry their own versions.
    pub fn is_data_plane(&self) -> bool {
        match self {
            Message::Store { .. }
            | Message::Stored { .. }
            | Message::Read { .. }
            | Message::ReadReply { .. }
            | Message::Forward { .. }
            | Message::ForwardReply { .. } => true,
            Message::Gossip(_) | Message::RingFetch { .. } | Message::RingPush { .. } => false,
        }
    }
}

/// What nodes say to each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// A gossip envelope in the gossip crate's own encoding.
    Gossip(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Store this copy of a key (a replica of a write, a delivered hint or a
    /// read repair). With `stands_in_for`, the receiver is a fallback and
    /// keeps a hint for that primary too. Answered with [`Message::Stored`]
    /// when it names a `request`; a read repair names none.
    ///
    /// Fields travel by position (MessagePack arrays, not maps), so their
    /// names are not on the wire: `stands_in_for` was once `hint_for` and
    /// the encoding did not change. No request travels as id 0, which no
    /// request is given.
    Store {
        #[serde(with = "no_request_is_zero")]
        request: Option<u64>,
        key: WireKey,
        #[serde(with = "serde_bytes")]
        object: Vec<u8>,
        sync: bool,
        stands_in_for: Option<Uuid>,
    },
    /// The answer to [`Message::Store`], naming the key it stored.
    Stored {
        request: u64,
        key: WireKey,
        result: Result<StoredAck, ReplicaError>,
    },
    /// Read the local copy of a key.
    Read { request: u64, key: WireKey },
    /// The answer to [`Message::Read`], naming the key it read: the
    /// encoded object (empty object when the key is absent).
    ReadReply {
        request: u64,
        key: WireKey,
        result: Result<serde_bytes::ByteBuf, ReplicaError>,
    },
    /// Coordinate this client write (the sender is not a replica of the key).
    Forward { request: u64, write: ForwardedWrite },
    /// The outcome of a forwarded write, naming the key it wrote.
    ForwardReply {
        request: u64,
        #[serde(with = "serde_bytes")]
        bucket: Vec<u8>,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The coordinating replica's failure, as its client would get
        /// it ([`RequestError::for_the_wire`]).
        result: Result<ForwardedReply, RequestError>,
    },
    /// Send me your ring if it is at least this version.
    RingFetch { version: u64 },
    /// A ring in its serde encoding (checked when decoded).
    RingPush {
        #[serde(with = "serde_bytes")]
        ring: Vec<u8>,
    },
}

/// [`Message::Store`]'s optional request id on the wire: `None` as 0, the
/// id no request is given, so the encoding is that of a plain `u64`.
mod no_request_is_zero {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(request: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(request.unwrap_or(0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Ok(Some(u64::deserialize(d)?).filter(|&id| id != 0))
    }
}

/// A replica's acknowledgement of a stored copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAck {
    /// The copy was fsynced before the acknowledgement.
    pub durable: bool,
}

/// A frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("frame version {got} is not supported (this node speaks {supported})")]
    Version { got: u16, supported: u16 },
    #[error("malformed object in frame: {0}")]
    Object(String),
}

impl Frame {
    pub fn new(from: Uuid, generation: u64, message: Message) -> Frame {
        Frame {
            version: WIRE_VERSION,
            from,
            generation,
            message,
        }
    }

    /// Encodes the frame. Encoding a frame built from valid values cannot fail.
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("a frame always encodes")
    }

    /// Decodes and checks a frame of at most `max_bytes`.
    pub fn decode(bytes: &[u8], max_bytes: usize) -> Result<Frame, WireError> {
        if bytes.len() > max_bytes {
            return Err(WireError::TooLarge {
                len: bytes.len(),
                max: max_bytes,
            });
        }
        let mut de = rmp_serde::Deserializer::new(Cursor::new(bytes));
        de.set_max_depth(MAX_DEPTH);
        let frame = Frame::deserialize(&mut de).map_err(|e| WireError::Malformed(e.to_string()))?;
        let read = de.position();
        if read != bytes.len() as u64 {
            return Err(WireError::Malformed(format!(
                "{} trailing bytes",
                bytes.len() as u64 - read
            )));
        }
        if frame.version != WIRE_VERSION {
            return Err(WireError::Version {
                got: frame.version,
                supported: WIRE_VERSION,
            });
        }
        Ok(frame)
    }
}

/// Decodes an object carried in a message.
pub fn decode_object(bytes: &[u8]) -> Result<Object, WireError> {
    Object::decode(bytes).map_err(|e| WireError::Object(e.to_string()))
}

/// The newest timestamp of an object, for advancing the receiver's clock.
pub fn object_timestamp(object: &Object) -> Option<Timestamp> {
    object.latest_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Frame {
        Frame::new(
            Uuid::from_u128(7),
            3,
            Message::Read {
                request: 9,
                key: WireKey {
                    partition: 4,
                    bucket: b"b".to_vec(),
                    key: b"k".to_vec(),
                },
            },
        )
    }

    #[test]
    fn frames_round_trip() {
        let frame = sample();
        let bytes = frame.encode();
        assert_eq!(Frame::decode(&bytes, MAX_FRAME_BYTES).unwrap(), frame);
    }

    #[test]
    fn oversized_trailing_and_foreign_versions_are_refused() {
        let bytes = sample().encode();
        assert!(matches!(
            Frame::decode(&bytes, bytes.len() - 1),
            Err(WireError::TooLarge { .. })
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            Frame::decode(&trailing, MAX_FRAME_BYTES),
            Err(WireError::Malformed(_))
        ));
        let mut future = sample();
        future.version = WIRE_VERSION + 1;
        assert!(matches!(
            Frame::decode(&future.encode(), MAX_FRAME_BYTES),
            Err(WireError::Version { .. })
        ));
    }

    /// A forwarded write without a content type is encoded as before the
    /// field existed, and a node reads a write from such a sender as
    /// having none.
    #[test]
    fn a_forwarded_write_without_a_content_type_keeps_the_old_encoding() {
        #[derive(Serialize)]
        struct Before {
            #[serde(with = "serde_bytes")]
            bucket: Vec<u8>,
            #[serde(with = "serde_bytes")]
            key: Vec<u8>,
            #[serde(with = "serde_bytes")]
            value: Option<Vec<u8>>,
            #[serde(with = "serde_bytes")]
            context: Option<Vec<u8>>,
            w: usize,
            pw: usize,
            timeout_ms: u64,
            sync: bool,
            sloppy: bool,
            return_body: bool,
        }
        let before = rmp_serde::to_vec(&Before {
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
            value: Some(b"v".to_vec()),
            context: None,
            w: 2,
            pw: 1,
            timeout_ms: 500,
            sync: true,
            sloppy: false,
            return_body: false,
        })
        .unwrap();
        let mut write: ForwardedWrite = rmp_serde::from_slice(&before).unwrap();
        assert_eq!(write.content_type, None);
        assert_eq!((write.w, write.pw, write.timeout_ms), (2, 1, 500));
        assert_eq!(rmp_serde::to_vec(&write).unwrap(), before);

        write.content_type = Some("application/json".into());
        let typed = rmp_serde::to_vec(&write).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<ForwardedWrite>(&typed).unwrap(),
            write
        );
    }

    /// A store's fields travel by position: the message encodes exactly as
    /// it did when `stands_in_for` was named `hint_for` and its request
    /// was a plain `u64`, 0 for none.
    #[test]
    fn a_store_encodes_as_before_its_field_was_renamed() {
        #[derive(Serialize)]
        #[allow(dead_code)]
        enum Before {
            Gossip(#[serde(with = "serde_bytes")] Vec<u8>),
            Store {
                request: u64,
                key: WireKey,
                #[serde(with = "serde_bytes")]
                object: Vec<u8>,
                sync: bool,
                hint_for: Option<Uuid>,
            },
        }
        let key = WireKey {
            partition: 3,
            bucket: b"b".to_vec(),
            key: b"k".to_vec(),
        };
        let primary = Some(Uuid::from_u128(0x1002));
        let before = rmp_serde::to_vec(&Before::Store {
            request: 7,
            key: key.clone(),
            object: vec![1, 2, 3],
            sync: true,
            hint_for: primary,
        })
        .unwrap();
        let now = Message::Store {
            request: Some(7),
            key: key.clone(),
            object: vec![1, 2, 3],
            sync: true,
            stands_in_for: primary,
        };
        assert_eq!(rmp_serde::to_vec(&now).unwrap(), before);
        assert_eq!(rmp_serde::from_slice::<Message>(&before).unwrap(), now);

        // A store that wants no answer (a read repair) travels as request 0.
        let before = rmp_serde::to_vec(&Before::Store {
            request: 0,
            key: key.clone(),
            object: vec![4],
            sync: false,
            hint_for: None,
        })
        .unwrap();
        let repair = Message::Store {
            request: None,
            key,
            object: vec![4],
            sync: false,
            stands_in_for: None,
        };
        assert_eq!(rmp_serde::to_vec(&repair).unwrap(), before);
        assert_eq!(rmp_serde::from_slice::<Message>(&before).unwrap(), repair);
    }

    /// A forwarded write's failure travels as the client error itself: the
    /// failures that travelled before it did encode exactly as they did
    /// under their own type, by variant name.
    #[test]
    fn a_forwarded_writes_failure_encodes_as_before_the_client_error_carried_it() {
        use crate::core::WriteError;
        #[derive(Serialize)]
        enum Before {
            Write(WriteError),
            Unavailable(String),
            Internal(String),
        }
        let refused = WriteError::TooManySiblings {
            siblings: 9,
            max: 8,
        };
        let pairs = [
            (Before::Write(refused.clone()), RequestError::Write(refused)),
            (
                Before::Unavailable("no ring".into()),
                RequestError::Unavailable("no ring".into()),
            ),
            (
                Before::Internal("disk".into()),
                RequestError::Internal("disk".into()),
            ),
        ];
        for (before, now) in pairs {
            let bytes = rmp_serde::to_vec(&before).unwrap();
            assert_eq!(rmp_serde::to_vec(&now).unwrap(), bytes);
            assert_eq!(rmp_serde::from_slice::<RequestError>(&bytes).unwrap(), now);
        }
        // Refused input never travels: it goes as an internal failure.
        let refused_input = RequestError::ValueTooLarge { size: 9, max: 8 };
        assert_eq!(
            refused_input.clone().for_the_wire(),
            RequestError::Internal(refused_input.to_string())
        );
        let overloaded = RequestError::Overloaded("busy".into());
        assert_eq!(overloaded.clone().for_the_wire(), overloaded);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = Frame::decode(&bytes, MAX_FRAME_BYTES);
        }

        #[test]
        fn truncated_frames_are_errors(cut in 0usize..40) {
            let bytes = sample().encode();
            let cut = cut.min(bytes.len() - 1);
            proptest::prop_assert!(Frame::decode(&bytes[..cut], MAX_FRAME_BYTES).is_err());
        }
    }
}
