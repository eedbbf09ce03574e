//! The causal context: what a client was shown of a key, and the token that
//! carries it.
//!
//! A [`CausalContext`] is a version vector plus a few single **dots**, as in
//! dotted version vectors (Preguiça et al., "Dotted Version Vectors:
//! Logical Clocks for Optimistic Replication", 2010). It *covers* a dot when
//! the vector covers it or when the dot is one of the single ones. The
//! single dots let a write's answer cover the version it just created
//! without covering, through the vector's prefix reading, an older
//! concurrent version of the same actor that the writer never saw
//! (design.md §3 rule 3).
//!
//! Clients carry the context as an opaque **token** (the `X-Chorus-Context`
//! header). A token is bound to its bucket and key and authenticated by the
//! cluster: [`ContextKey::seal`] appends a keyed MAC (HMAC-SHA-256 truncated
//! to 128 bits) over the bucket, the key and the context, with a secret
//! created beside the cluster CA, and [`ContextKey::open`] refuses a token
//! whose MAC does not match — a token of another key or bucket, a forged
//! or altered one — before anything reads it. So no client input can name
//! actors that never wrote the key or grow its context (§3 rule 8).
//!
//! Layout of a token, in unpadded base64url: a format byte (2), the 16-byte
//! MAC, then the MessagePack body `[{actor: counter, …}, [[actor,
//! counter], …]]` (the vector with actors ascending, then the single dots
//! ascending). Between nodes, which authenticate each other with TLS, the
//! body travels without a MAC ([`CausalContext::to_bytes`]).
//!
//! Tokens come from the network, so decoding bounds their length before
//! anything else and reports every kind of damage as a distinct
//! [`ContextError`] with a stable code.

use std::collections::BTreeSet;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::version::{ActorId, Dot, VersionVector};

/// The longest token accepted, in characters. About 150 actors' entries.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The most single dots a context may carry besides its vector.
pub const MAX_CONTEXT_DOTS: usize = 128;

/// Bytes of the secret a [`ContextKey`] is made of.
pub const CONTEXT_KEY_LEN: usize = 32;

const FORMAT_V2: u8 = 2;
const MAC_LEN: usize = 16;

/// What a client was shown of a key: a version vector and single dots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CausalContext {
    vv: VersionVector,
    dots: BTreeSet<Dot>,
}

/// Why a token or context encoding was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("empty causal context token")]
    Empty,
    #[error("causal context token of {len} characters exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("causal context token is not base64url")]
    NotBase64,
    #[error("causal context token is truncated")]
    Truncated,
    #[error("causal context token has unknown format {0}")]
    UnknownFormat(u8),
    #[error("malformed causal context token: {0}")]
    Malformed(String),
    /// The MAC does not match: the token was issued for another key or
    /// bucket, by another cluster, or altered.
    #[error("causal context token was not issued by this cluster for this key")]
    Forged,
}

impl ContextError {
    /// A stable, machine-readable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            ContextError::Empty => "context_empty",
            ContextError::TooLong { .. } => "context_too_long",
            ContextError::NotBase64 => "context_not_base64",
            ContextError::Truncated => "context_truncated",
            ContextError::UnknownFormat(_) => "context_unknown_format",
            ContextError::Malformed(_) => "context_malformed",
            ContextError::Forged => "context_forged",
        }
    }
}

/// The MessagePack body of a context.
#[derive(Serialize, Deserialize)]
struct Body(VersionVector, Vec<(ActorId, u64)>);

impl CausalContext {
    /// The context of a read: everything `vv` covers.
    pub fn new(vv: VersionVector) -> Self {
        CausalContext {
            vv,
            dots: BTreeSet::new(),
        }
    }

    /// A context of a vector and single dots. Dots the vector already
    /// covers are left out.
    pub fn with_dots(vv: VersionVector, dots: impl IntoIterator<Item = Dot>) -> Self {
        let dots = dots.into_iter().filter(|d| !vv.covers(d)).collect();
        CausalContext { vv, dots }
    }

    /// The vector part.
    pub fn version_vector(&self) -> &VersionVector {
        &self.vv
    }

    /// The single dots, ascending.
    pub fn dots(&self) -> impl Iterator<Item = Dot> + '_ {
        self.dots.iter().copied()
    }

    /// Whether the version named `dot` is part of what this context covers.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.vv.covers(dot) || self.dots.contains(dot)
    }

    /// Nothing covered.
    pub fn is_empty(&self) -> bool {
        self.vv.is_empty() && self.dots.is_empty()
    }

    /// The counter of `actor` that this context claims to have seen, at most.
    pub fn max_counter_of(&self, actor: ActorId) -> u64 {
        let single = self
            .dots
            .iter()
            .filter(|d| d.actor == actor)
            .map(|d| d.counter)
            .max()
            .unwrap_or(0);
        self.vv.get(actor).max(single)
    }

    /// The largest counter of any actor, or 0 when empty.
    pub fn max_counter(&self) -> u64 {
        let single = self.dots.iter().map(|d| d.counter).max().unwrap_or(0);
        self.vv.max_counter().max(single)
    }

    /// The body without a MAC, for messages between nodes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![FORMAT_V2];
        let body = Body(
            self.vv.clone(),
            self.dots.iter().map(|d| (d.actor, d.counter)).collect(),
        );
        rmp_serde::encode::write(&mut bytes, &body).expect("encoding into a Vec cannot fail");
        bytes
    }

    /// Decodes [`to_bytes`](Self::to_bytes)'s output, refusing anything
    /// oversized, non-canonical or with trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ContextError> {
        let (&format, body) = bytes.split_first().ok_or(ContextError::Truncated)?;
        if format != FORMAT_V2 {
            return Err(ContextError::UnknownFormat(format));
        }
        Self::decode_body(body)
    }

    fn decode_body(body: &[u8]) -> Result<Self, ContextError> {
        if body.len() > MAX_TOKEN_LEN {
            return Err(ContextError::TooLong {
                len: body.len(),
                max: MAX_TOKEN_LEN,
            });
        }
        let mut reader = body;
        let Body(vv, dots) = rmp_serde::decode::from_read(&mut reader).map_err(|e| match e {
            rmp_serde::decode::Error::InvalidMarkerRead(ref io)
            | rmp_serde::decode::Error::InvalidDataRead(ref io)
                if io.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                ContextError::Truncated
            }
            other => ContextError::Malformed(other.to_string()),
        })?;
        if !reader.is_empty() {
            return Err(ContextError::Malformed(format!(
                "{} trailing bytes",
                reader.len()
            )));
        }
        if !vv.is_canonical() {
            return Err(ContextError::Malformed("zero counter".into()));
        }
        if dots.len() > MAX_CONTEXT_DOTS {
            return Err(ContextError::Malformed(format!(
                "{} single dots, at most {MAX_CONTEXT_DOTS}",
                dots.len()
            )));
        }
        let mut set = BTreeSet::new();
        for (actor, counter) in dots {
            let dot = Dot { actor, counter };
            if counter == 0 || vv.covers(&dot) || set.last().is_some_and(|last| *last >= dot) {
                return Err(ContextError::Malformed(
                    "single dots zero, covered by the vector, or out of order".into(),
                ));
            }
            set.insert(dot);
        }
        Ok(CausalContext { vv, dots: set })
    }
}

impl fmt::Display for CausalContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.vv)?;
        for dot in &self.dots {
            write!(f, " +{dot}")?;
        }
        Ok(())
    }
}

/// The cluster's secret for authenticating context tokens: 32 random bytes
/// created with the cluster CA (`chorus cert ca` writes them beside the CA)
/// and carried in every node's TLS material.
#[derive(Clone, PartialEq, Eq)]
pub struct ContextKey([u8; CONTEXT_KEY_LEN]);

impl fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContextKey(<redacted>)")
    }
}

impl ContextKey {
    pub fn new(secret: [u8; CONTEXT_KEY_LEN]) -> Self {
        ContextKey(secret)
    }

    /// The secret's bytes, for writing it to a file.
    pub fn secret(&self) -> &[u8; CONTEXT_KEY_LEN] {
        &self.0
    }

    /// The token a client gets for `context` of (`bucket`, `key`).
    pub fn seal(&self, bucket: &[u8], key: &[u8], context: &CausalContext) -> String {
        let body = &context.to_bytes()[1..];
        let mut token = Vec::with_capacity(1 + MAC_LEN + body.len());
        token.push(FORMAT_V2);
        token.extend_from_slice(&self.mac(bucket, key, body));
        token.extend_from_slice(body);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// Checks and decodes a client's token for (`bucket`, `key`). Refuses
    /// an oversized or damaged token, and one whose MAC does not match
    /// ([`ContextError::Forged`]): issued for another key, bucket or
    /// cluster, or altered.
    pub fn open(
        &self,
        bucket: &[u8],
        key: &[u8],
        token: &str,
    ) -> Result<CausalContext, ContextError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(ContextError::Empty);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(ContextError::TooLong {
                len: token.len(),
                max: MAX_TOKEN_LEN,
            });
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| ContextError::NotBase64)?;
        let (&format, rest) = bytes.split_first().ok_or(ContextError::Truncated)?;
        if format != FORMAT_V2 {
            return Err(ContextError::UnknownFormat(format));
        }
        if rest.len() < MAC_LEN {
            return Err(ContextError::Truncated);
        }
        let (tag, body) = rest.split_at(MAC_LEN);
        let expected = self.mac(bucket, key, body);
        if !constant_time_eq(tag, &expected) {
            return Err(ContextError::Forged);
        }
        CausalContext::decode_body(body)
    }

    fn mac(&self, bucket: &[u8], key: &[u8], body: &[u8]) -> [u8; MAC_LEN] {
        let hmac_key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut ctx = hmac::Context::with_key(&hmac_key);
        // Length-prefixed, so (bucket, key) pairs cannot collide.
        ctx.update(&(bucket.len() as u64).to_be_bytes());
        ctx.update(bucket);
        ctx.update(&(key.len() as u64).to_be_bytes());
        ctx.update(key);
        ctx.update(body);
        let tag = ctx.sign();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&tag.as_ref()[..MAC_LEN]);
        out
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> CausalContext {
        let mut vv = VersionVector::new();
        vv.add(Dot::new(ActorId(0xdead_beef), 1_795_000_000_000 << 16));
        vv.add(Dot::new(ActorId(7), 3));
        CausalContext::with_dots(vv, [Dot::new(ActorId(9), 5)])
    }

    fn key() -> ContextKey {
        ContextKey::new([7; CONTEXT_KEY_LEN])
    }

    #[test]
    fn tokens_round_trip_and_are_url_safe() {
        let token = key().seal(b"b", b"k", &sample());
        assert!(token
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(key().open(b"b", b"k", &token).unwrap(), sample());
        let empty = key().seal(b"b", b"k", &CausalContext::default());
        assert_eq!(
            key().open(b"b", b"k", &empty).unwrap(),
            CausalContext::default()
        );
        assert_eq!(
            CausalContext::from_bytes(&sample().to_bytes()).unwrap(),
            sample()
        );
    }

    #[test]
    fn single_dots_cover_only_themselves() {
        let context = sample();
        assert!(context.covers(&Dot::new(ActorId(9), 5)));
        assert!(!context.covers(&Dot::new(ActorId(9), 4)));
        assert!(context.covers(&Dot::new(ActorId(7), 2)));
        assert_eq!(context.max_counter_of(ActorId(9)), 5);
        // A dot the vector covers is not kept apart.
        let folded =
            CausalContext::with_dots(context.version_vector().clone(), [Dot::new(ActorId(7), 1)]);
        assert_eq!(folded.dots().count(), 0);
    }

    #[test]
    fn a_token_opens_only_for_its_own_bucket_key_and_cluster() {
        let token = key().seal(b"b", b"k", &sample());
        assert_eq!(key().open(b"b", b"k2", &token), Err(ContextError::Forged));
        assert_eq!(key().open(b"b2", b"k", &token), Err(ContextError::Forged));
        // (bucket, key) boundaries are part of the MAC.
        assert_eq!(key().open(b"bk", b"", &token), Err(ContextError::Forged));
        let other = ContextKey::new([8; CONTEXT_KEY_LEN]);
        assert_eq!(other.open(b"b", b"k", &token), Err(ContextError::Forged));
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let token = key().seal(b"b", b"k", &sample());
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut altered = bytes.clone();
                altered[i] ^= 1 << bit;
                let result = key().open(b"b", b"k", &URL_SAFE_NO_PAD.encode(&altered));
                assert!(result.is_err(), "byte {i} bit {bit} accepted");
            }
        }
    }

    #[test]
    fn every_kind_of_damage_has_its_own_error() {
        let k = key();
        let token = k.seal(b"b", b"k", &sample());
        assert_eq!(k.open(b"b", b"k", ""), Err(ContextError::Empty));
        assert_eq!(
            k.open(b"b", b"k", &"A".repeat(MAX_TOKEN_LEN + 1)),
            Err(ContextError::TooLong {
                len: MAX_TOKEN_LEN + 1,
                max: MAX_TOKEN_LEN
            })
        );
        assert_eq!(
            k.open(b"b", b"k", "not a token!"),
            Err(ContextError::NotBase64)
        );
        assert_eq!(
            k.open(b"b", b"k", &URL_SAFE_NO_PAD.encode([2u8, 1, 2])),
            Err(ContextError::Truncated)
        );
        assert_eq!(
            k.open(b"b", b"k", &URL_SAFE_NO_PAD.encode([9u8, 0x80])),
            Err(ContextError::UnknownFormat(9))
        );
        // A token of the old unauthenticated format is refused.
        assert_eq!(
            k.open(b"b", b"k", &URL_SAFE_NO_PAD.encode([1u8, 0x80])),
            Err(ContextError::UnknownFormat(1))
        );
        assert!(k.open(b"b", b"k", &token[..token.len() - 4]).is_err());
        // Damaged bodies behind a valid MAC (only this module can make them).
        assert!(matches!(
            CausalContext::from_bytes(&[2u8, 0xc1]),
            Err(ContextError::Malformed(_))
        ));
        let mut trailing = sample().to_bytes();
        trailing.push(0);
        assert!(matches!(
            CausalContext::from_bytes(&trailing),
            Err(ContextError::Malformed(_))
        ));
        // A zero counter, and a single dot the vector covers.
        assert!(matches!(
            CausalContext::from_bytes(&[2u8, 0x92, 0x81, 0x01, 0x00, 0x90]),
            Err(ContextError::Malformed(_))
        ));
        assert!(matches!(
            CausalContext::from_bytes(&[2u8, 0x92, 0x81, 0x01, 0x05, 0x91, 0x92, 0x01, 0x03]),
            Err(ContextError::Malformed(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,200}") {
            let _ = key().open(b"b", b"k", &s);
        }

        #[test]
        fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut payload = vec![FORMAT_V2];
            payload.extend(bytes);
            let _ = CausalContext::from_bytes(&payload);
        }
    }
}
