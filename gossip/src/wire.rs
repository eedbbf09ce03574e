//! Wire messages and their MessagePack encoding.
//!
//! Every message travels in an [`Envelope`]: `[protocol, from, generation,
//! message]`, a MessagePack array whose first element is the protocol version.
//! The decoder reads that version before anything else, so a message from a
//! newer protocol is refused as such rather than as garbage.
//!
//! Decoding is defensive: input longer than the configured maximum is refused
//! before it is parsed; strings and byte strings are read only as far as the
//! input actually goes (a length prefix never causes an allocation of that
//! length); collections preallocate at most what serde's cautious size hint
//! allows; nesting is limited; trailing bytes, unknown variants, entries whose
//! value does not fit their key and over-long texts are refused.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::error::GossipError;
use crate::size;
use crate::state::{Generation, NodeDelta, NodeId, Version};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Longest free-form name or text value accepted in an entry, in bytes.
pub const MAX_TEXT_BYTES: usize = 256;

/// Most entries one node's state may carry (the fixed keys plus extras).
pub const MAX_ENTRIES_PER_NODE: usize = 64;

/// Nesting limit for the decoder; the wire types nest less than this.
const MAX_DEPTH: usize = 16;

/// `(node, generation, max version)`: what a node knows about one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// Whose state.
    pub node: NodeId,
    /// The generation known.
    pub generation: Generation,
    /// The highest version known within that generation.
    pub max_version: Version,
}

impl Digest {
    pub(crate) fn encoded_len(&self) -> usize {
        size::array_header(3)
            + size::UUID
            + size::uint(self.generation.0)
            + size::uint(self.max_version.0)
    }
}

/// First leg of a gossip exchange: the initiator's digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Syn {
    /// Digests in ascending node order, the sender's own among them.
    pub digests: Vec<Digest>,
    /// True when `digests` covers every node the sender knows, so the
    /// receiver may treat a node missing from it as unknown to the sender.
    pub complete: bool,
}

/// Second leg: what the receiver has newer, and what it wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// State the initiator lacks.
    pub states: Vec<NodeDelta>,
    /// State the receiver lacks, in ascending node order: send everything
    /// newer than each digest.
    pub requests: Vec<Digest>,
}

/// Third leg: the state the receiver of the SYN asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack2 {
    /// The requested state.
    pub states: Vec<NodeDelta>,
}

/// A gossip message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Digests from the initiator of a round.
    Syn(Syn),
    /// The answer to a SYN.
    Ack(Ack),
    /// The answer to an ACK's requests.
    Ack2(Ack2),
}

impl Message {
    pub(crate) fn encoded_len(&self) -> usize {
        match self {
            Message::Syn(syn) => {
                size::newtype_variant("Syn") + size::array_header(2) + digests_len(&syn.digests) + 1
            }
            Message::Ack(ack) => {
                size::newtype_variant("Ack")
                    + size::array_header(2)
                    + deltas_len(&ack.states)
                    + digests_len(&ack.requests)
            }
            Message::Ack2(ack2) => {
                size::newtype_variant("Ack2") + size::array_header(1) + deltas_len(&ack2.states)
            }
        }
    }

    /// Short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Syn(_) => "syn",
            Message::Ack(_) => "ack",
            Message::Ack2(_) => "ack2",
        }
    }
}

fn digests_len(digests: &[Digest]) -> usize {
    size::array_header(digests.len()) + digests.iter().map(Digest::encoded_len).sum::<usize>()
}

fn deltas_len(deltas: &[NodeDelta]) -> usize {
    size::array_header(deltas.len()) + deltas.iter().map(NodeDelta::encoded_len).sum::<usize>()
}

/// Who sent a message: the node and the generation it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sender {
    /// The sender's id.
    pub node: NodeId,
    /// The sender's generation.
    pub generation: Generation,
}

/// A message with its protocol version and sender, as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version; [`PROTOCOL_VERSION`] for every envelope this crate builds.
    pub protocol: u16,
    /// The sending node.
    pub from: NodeId,
    /// The sending node's generation.
    pub generation: Generation,
    /// The message.
    pub message: Message,
}

impl Envelope {
    /// An envelope at the current protocol version.
    pub fn new(from: Sender, message: Message) -> Self {
        Envelope {
            protocol: PROTOCOL_VERSION,
            from: from.node,
            generation: from.generation,
            message,
        }
    }

    /// The sender.
    pub fn sender(&self) -> Sender {
        Sender {
            node: self.from,
            generation: self.generation,
        }
    }

    /// Exact size of [`Envelope::encode`]'s output, computed without encoding.
    pub fn encoded_len(&self) -> usize {
        envelope_overhead(self.generation) + self.message.encoded_len()
    }

    /// Encodes the envelope as MessagePack.
    ///
    /// Fails with [`GossipError::Oversized`] (nothing is returned) when the
    /// encoding would exceed `max_bytes`; the gossiper never builds such a message.
    pub fn encode(&self, max_bytes: usize) -> Result<Vec<u8>, GossipError> {
        let len = self.encoded_len();
        if len > max_bytes {
            return Err(GossipError::Oversized {
                len,
                max: max_bytes,
            });
        }
        let mut buf = Vec::with_capacity(len);
        rmp_serde::encode::write(&mut buf, self).map_err(|e| GossipError::Malformed {
            reason: format!("cannot encode: {e}"),
        })?;
        debug_assert_eq!(buf.len(), len, "size model out of step with the encoder");
        Ok(buf)
    }

    /// Decodes and validates an envelope.
    ///
    /// Refuses input longer than `max_bytes` before parsing it, a protocol
    /// version other than [`PROTOCOL_VERSION`] before parsing the body, and
    /// anything malformed (see the module docs). Never panics.
    pub fn decode(bytes: &[u8], max_bytes: usize) -> Result<Envelope, GossipError> {
        if bytes.len() > max_bytes {
            return Err(GossipError::Oversized {
                len: bytes.len(),
                max: max_bytes,
            });
        }
        let protocol = peek_protocol(bytes)?;
        if protocol != u64::from(PROTOCOL_VERSION) {
            return Err(GossipError::UnsupportedProtocol {
                got: protocol,
                supported: PROTOCOL_VERSION,
            });
        }
        let mut de = rmp_serde::Deserializer::new(Cursor::new(bytes));
        de.set_max_depth(MAX_DEPTH);
        let envelope = Envelope::deserialize(&mut de).map_err(|e| GossipError::Malformed {
            reason: e.to_string(),
        })?;
        let read = de.position();
        if read != bytes.len() as u64 {
            return Err(GossipError::Malformed {
                reason: format!("{} trailing bytes", bytes.len() as u64 - read),
            });
        }
        envelope.validate()?;
        Ok(envelope)
    }

    /// Checks what the type system does not: ascending unique digests, entry
    /// values that fit their keys, bounded texts and entry counts.
    pub fn validate(&self) -> Result<(), GossipError> {
        if self.protocol != PROTOCOL_VERSION {
            return Err(GossipError::UnsupportedProtocol {
                got: u64::from(self.protocol),
                supported: PROTOCOL_VERSION,
            });
        }
        validate_message(&self.message)
    }
}

/// The checks of [`Envelope::validate`] that concern the message itself.
pub(crate) fn validate_message(message: &Message) -> Result<(), GossipError> {
    match message {
        Message::Syn(syn) => {
            if syn.digests.windows(2).any(|w| w[0].node >= w[1].node) {
                return Err(malformed("SYN digests not in ascending node order"));
            }
            Ok(())
        }
        Message::Ack(ack) => {
            if ack.requests.windows(2).any(|w| w[0].node >= w[1].node) {
                return Err(malformed("ACK requests not in ascending node order"));
            }
            validate_deltas(&ack.states)
        }
        Message::Ack2(ack2) => validate_deltas(&ack2.states),
    }
}

/// Bytes of an envelope around its message.
pub(crate) fn envelope_overhead(generation: Generation) -> usize {
    size::array_header(4)
        + size::uint(u64::from(PROTOCOL_VERSION))
        + size::UUID
        + size::uint(generation.0)
}

fn malformed(reason: &str) -> GossipError {
    GossipError::Malformed {
        reason: reason.to_owned(),
    }
}

fn validate_deltas(deltas: &[NodeDelta]) -> Result<(), GossipError> {
    for delta in deltas {
        if delta.entries.len() > MAX_ENTRIES_PER_NODE {
            return Err(malformed("too many entries for one node"));
        }
        if delta.heartbeat.is_some_and(|h| h <= delta.since) {
            return Err(malformed("heartbeat not newer than the delta's base"));
        }
        for entry in &delta.entries {
            if !entry.key.accepts(&entry.value) {
                return Err(malformed("entry value does not fit its key"));
            }
            if entry.version <= delta.since {
                return Err(malformed("entry not newer than the delta's base"));
            }
            if entry.key.name_len() > MAX_TEXT_BYTES || entry.value.text_len() > MAX_TEXT_BYTES {
                return Err(malformed("entry text too long"));
            }
        }
    }
    Ok(())
}

/// Reads the protocol version at the head of an envelope without parsing the rest.
fn peek_protocol(bytes: &[u8]) -> Result<u64, GossipError> {
    let Some((&head, rest)) = bytes.split_first() else {
        return Err(malformed("empty message"));
    };
    if !(0x90..=0x9f).contains(&head) || head == 0x90 {
        return Err(malformed("not an envelope (expected a short array)"));
    }
    let Some((&marker, rest)) = rest.split_first() else {
        return Err(malformed("truncated protocol version"));
    };
    let be = |n: usize| -> Result<u64, GossipError> {
        let digits = rest
            .get(..n)
            .ok_or_else(|| malformed("truncated protocol version"))?;
        Ok(digits
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    };
    match marker {
        0x00..=0x7f => Ok(u64::from(marker)),
        0xcc => be(1),
        0xcd => be(2),
        0xce => be(4),
        0xcf => be(8),
        _ => Err(malformed("protocol version is not an unsigned integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Entry, StateKey, StateValue, Status};

    fn sender() -> Sender {
        Sender {
            node: NodeId::from_u128(7),
            generation: Generation(1_700_000_000),
        }
    }

    fn sample_ack() -> Envelope {
        let delta = NodeDelta {
            node: NodeId::from_u128(9),
            generation: Generation(3),
            since: Version(0),
            heartbeat: Some(Version(300)),
            entries: vec![
                Entry {
                    key: StateKey::QuicAddr,
                    version: Version(1),
                    value: StateValue::Addr("10.1.2.3:7000".parse().expect("addr")),
                },
                Entry {
                    key: StateKey::Status,
                    version: Version(2),
                    value: StateValue::Status(Status::Leaving),
                },
            ],
        };
        Envelope::new(
            sender(),
            Message::Ack(Ack {
                states: vec![delta],
                requests: vec![Digest {
                    node: NodeId::from_u128(3),
                    generation: Generation(1),
                    max_version: Version(70_000),
                }],
            }),
        )
    }

    #[test]
    fn round_trip_and_exact_size() {
        let env = sample_ack();
        let bytes = env.encode(1 << 20).expect("encode");
        assert_eq!(bytes.len(), env.encoded_len());
        assert_eq!(Envelope::decode(&bytes, 1 << 20).expect("decode"), env);
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let bytes = sample_ack().encode(1 << 20).expect("encode");
        let err = Envelope::decode(&bytes, bytes.len() - 1).expect_err("too long");
        assert!(matches!(err, GossipError::Oversized { .. }), "{err}");
        assert!(matches!(
            sample_ack().encode(10),
            Err(GossipError::Oversized { .. })
        ));
    }

    #[test]
    fn another_protocol_version_is_named_as_such() {
        let mut env = sample_ack();
        env.protocol = 2;
        let bytes = rmp_serde::to_vec(&env).expect("encode");
        let err = Envelope::decode(&bytes, 1 << 20).expect_err("version 2");
        assert_eq!(
            err,
            GossipError::UnsupportedProtocol {
                got: 2,
                supported: PROTOCOL_VERSION
            }
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = sample_ack().encode(1 << 20).expect("encode");
        bytes.push(0xc0);
        assert!(matches!(
            Envelope::decode(&bytes, 1 << 20),
            Err(GossipError::Malformed { .. })
        ));
    }

    #[test]
    fn a_value_that_does_not_fit_its_key_is_refused() {
        let mut env = sample_ack();
        if let Message::Ack(ack) = &mut env.message {
            ack.states[0].entries[1].value = StateValue::Load(5);
        }
        let bytes = rmp_serde::to_vec(&env).expect("encode");
        assert!(matches!(
            Envelope::decode(&bytes, 1 << 20),
            Err(GossipError::Malformed { .. })
        ));
    }

    #[test]
    fn a_huge_declared_length_does_not_allocate_it() {
        // An envelope whose message claims a 4 GiB string as variant name.
        let mut bytes = vec![0x94, 0x01, 0xc4, 16];
        bytes.extend_from_slice(&[0u8; 16]);
        bytes.extend_from_slice(&[0x01, 0x81, 0xdb, 0xff, 0xff, 0xff, 0xff, b'S']);
        assert!(matches!(
            Envelope::decode(&bytes, 1 << 20),
            Err(GossipError::Malformed { .. })
        ));
        // An array claiming four billion digests.
        let mut bytes = vec![0x94, 0x01, 0xc4, 16];
        bytes.extend_from_slice(&[0u8; 16]);
        bytes.extend_from_slice(&[0x01, 0x81, 0xa3, b'S', b'y', b'n', 0x92, 0xdd]);
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            Envelope::decode(&bytes, 1 << 20),
            Err(GossipError::Malformed { .. })
        ));
    }
}
