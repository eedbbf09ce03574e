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
//! A key's own context ([`crate::object::Object::context`]) is one too: the
//! single dots it holds beyond its vector (its **dot cloud**) name versions
//! that writers' contexts superseded before they reached the replica.
//! Contexts join like the sets of dots they cover ([`CausalContext::merge`])
//! and are kept compact, so one covered set has one form.
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

/// The longest token accepted, in characters: the public contract's
/// ([`chorus_client::limits::MAX_CONTEXT_TOKEN_BYTES`]). About 150 actors'
/// entries.
pub const MAX_TOKEN_LEN: usize = chorus_client::limits::MAX_CONTEXT_TOKEN_BYTES;

/// The most single dots a context may carry besides its vector.
pub const MAX_CONTEXT_DOTS: usize = 128;

/// Bytes of the secret a [`ContextKey`] is made of.
pub const CONTEXT_KEY_LEN: usize = 32;

const FORMAT_V2: u8 = 2;
const MAC_LEN: usize = 16;
/// The largest context body whose sealed token (format byte, MAC, body,
/// in unpadded base64) fits [`MAX_TOKEN_LEN`] characters.
const MAX_SEALED_BODY: usize = MAX_TOKEN_LEN / 4 * 3 - 1 - MAC_LEN;

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
    /// covers are left out, and a dot right after its actor's entry is
    /// folded into the vector (see [`add_dot`](Self::add_dot)).
    pub fn with_dots(vv: VersionVector, dots: impl IntoIterator<Item = Dot>) -> Self {
        let mut context = CausalContext {
            vv,
            dots: dots.into_iter().collect(),
        };
        context.compact();
        context
    }

    /// Adds a dot the way its actor minted it: by the vector's prefix
    /// reading (every earlier dot of the actor is covered too). For the
    /// version a replica just created, whose actor's earlier dots for the
    /// key are all in that replica's state.
    pub fn add(&mut self, dot: Dot) {
        self.vv.add(dot);
        self.compact();
    }

    /// Adds `dot` alone, as a single dot: covers it and nothing else. The
    /// dot cloud of dotted version vectors (Riak's `riak_dt` contexts keep
    /// one too): versions seen outside the vector's contiguous prefix.
    pub fn add_dot(&mut self, dot: Dot) {
        if !self.vv.covers(&dot) {
            self.dots.insert(dot);
            self.compact();
        }
    }

    /// This context with at most [`MAX_CONTEXT_DOTS`] single dots, and
    /// small enough that a token sealed from it fits [`MAX_TOKEN_LEN`], so
    /// the token opens again: the dots `keep` names stay first, then the
    /// newest. Covering less is safe: a write with the smaller context
    /// supersedes fewer versions, so at worst a version that could have
    /// gone stays as a sibling; nothing is lost. (A vector alone too large
    /// for a token, some 150 actors, is left as it is.)
    pub fn bounded(mut self, keep: impl Fn(&Dot) -> bool) -> CausalContext {
        let fits = |c: &CausalContext| {
            c.dots.len() <= MAX_CONTEXT_DOTS
                && (c.body_len_bound() <= MAX_SEALED_BODY
                    || c.to_bytes().len() - 1 <= MAX_SEALED_BODY)
        };
        if fits(&self) {
            return self;
        }
        let mut order: Vec<Dot> = self.dots.iter().copied().collect();
        order.sort_by_cached_key(|d| (!keep(d), std::cmp::Reverse(d.counter)));
        order.truncate(MAX_CONTEXT_DOTS);
        // Dropping single dots leaves a compact context compact.
        self.dots = order.iter().copied().collect();
        while !fits(&self) {
            let Some(dot) = order.pop() else { break };
            self.dots.remove(&dot);
        }
        self
    }

    /// Joins `other` into this context: afterwards it covers exactly what
    /// either covered (vector join, union of the single dots). A join:
    /// commutative, associative and idempotent, and, as every context
    /// built here is compact, equal coverage is equal contexts.
    pub fn merge(&mut self, other: &CausalContext) {
        self.vv.merge(&other.vv);
        self.dots.extend(other.dots.iter().copied());
        self.compact();
    }

    /// A context read from a stored encoding: `None` unless it is exactly
    /// as [`compact`](Self::compact) leaves it (every dot non-zero, outside
    /// the vector and not directly after its actor's entry), so a context
    /// has one encoding.
    pub(crate) fn from_decoded(vv: VersionVector, dots: Vec<Dot>) -> Option<Self> {
        let context = CausalContext {
            vv,
            dots: dots.into_iter().collect(),
        };
        context.is_compact().then_some(context)
    }

    /// The most bytes [`to_bytes`](Self::to_bytes) can take for this
    /// context's body (without the format byte), from its entry counts
    /// alone: MessagePack spends at most 9 bytes on an integer, so at most
    /// 18 on a vector entry (actor, counter) and 19 on a single dot (a
    /// two-element array of them), besides at most 11 bytes of headers.
    /// Saves encoding a context only to measure it.
    fn body_len_bound(&self) -> usize {
        const HEADERS: usize = 1 + 5 + 5;
        HEADERS + 18 * self.vv.len() + 19 * self.dots.len()
    }

    /// How many single dots the context carries besides its vector.
    pub fn dot_count(&self) -> usize {
        self.dots.len()
    }

    /// Whether the context is in the form every constructor leaves it in:
    /// a canonical vector, no single dot the vector covers or that sits
    /// right after its actor's entry (it would belong in the vector).
    pub fn is_compact(&self) -> bool {
        self.vv.is_canonical()
            && self
                .dots
                .iter()
                .all(|d| d.counter > 0 && d.counter > self.vv.get(d.actor) + 1)
    }

    /// Drops the single dots the vector covers and folds into the vector
    /// each dot that directly follows its actor's entry. Coverage is
    /// unchanged; the representation of a covered set becomes unique.
    fn compact(&mut self) {
        let vv = &mut self.vv;
        self.dots.retain(|d| {
            if d.counter <= vv.get(d.actor) {
                false
            } else if d.counter == vv.get(d.actor) + 1 {
                // Dots of one actor come in ascending order, so a run of
                // consecutive counters folds in one pass.
                vv.add(*d);
                false
            } else {
                true
            }
        });
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
        let mut context = CausalContext { vv, dots: set };
        context.compact();
        Ok(context)
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
#[derive(Clone)]
pub struct ContextKey {
    secret: [u8; CONTEXT_KEY_LEN],
    /// HMAC-SHA256 keyed with `secret`, made once: `ring` hashes the padded
    /// key into the inner and outer states here, so a token's MAC costs
    /// only the hashing of its message.
    hmac: hmac::Key,
}

impl PartialEq for ContextKey {
    fn eq(&self, other: &Self) -> bool {
        self.secret == other.secret
    }
}

impl Eq for ContextKey {}

impl fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContextKey(<redacted>)")
    }
}

impl ContextKey {
    pub fn new(secret: [u8; CONTEXT_KEY_LEN]) -> Self {
        ContextKey {
            secret,
            hmac: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        }
    }

    /// The secret's bytes, for writing it to a file.
    pub fn secret(&self) -> &[u8; CONTEXT_KEY_LEN] {
        &self.secret
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
        let mut ctx = hmac::Context::with_key(&self.hmac);
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

    /// The largest context a node hands out — the most single dots and a
    /// vector of many actors, every number at full width — seals into a
    /// token the node opens again.
    #[test]
    fn the_largest_context_handed_out_fits_a_token() {
        const ACTORS: u64 = 24;
        let actor = |i: u64| ActorId(u64::MAX - i);
        let counter = |i: u64| (1_795_000_000_000u64 << 16) + i * 7;
        let mut vv = VersionVector::new();
        for i in 0..ACTORS {
            vv.add(Dot::new(actor(i), counter(i)));
        }
        let dots: Vec<Dot> = (0..MAX_CONTEXT_DOTS as u64)
            .map(|i| Dot::new(actor(i % 3), counter(i) + 1_000))
            .collect();
        let context = CausalContext::with_dots(vv.clone(), dots.clone());
        assert_eq!(context.dot_count(), MAX_CONTEXT_DOTS);
        let token = key().seal(b"b", b"k", &context);
        assert!(token.len() <= MAX_TOKEN_LEN, "{} characters", token.len());
        assert_eq!(key().open(b"b", b"k", &token), Ok(context));

        // With more actors the dots give way until the token fits, newest
        // and kept ones last to go.
        for i in ACTORS..ACTORS + 40 {
            vv.add(Dot::new(actor(i), counter(i)));
        }
        let kept = Dot::new(actor(0), counter(0) + 1_000);
        let context = CausalContext::with_dots(vv, dots).bounded(|d| *d == kept);
        assert!(context.dot_count() < MAX_CONTEXT_DOTS);
        assert!(context.covers(&kept));
        let token = key().seal(b"b", b"k", &context);
        assert!(token.len() <= MAX_TOKEN_LEN, "{} characters", token.len());
        assert_eq!(key().open(b"b", b"k", &token), Ok(context));
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

    /// The token's layout is a contract between nodes of different
    /// versions (a token one node issued opens on any other), so it is
    /// pinned here against HMAC-SHA256 computed from scratch: format byte,
    /// the first 16 bytes of HMAC(secret, len(bucket) ‖ bucket ‖ len(key)
    /// ‖ key ‖ body) with big-endian u64 lengths, then the body.
    #[test]
    fn the_token_is_the_format_the_truncated_hmac_and_the_body() {
        let secret = [7; CONTEXT_KEY_LEN];
        let token = ContextKey::new(secret).seal(b"b", b"k", &sample());
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let body = &sample().to_bytes()[1..];
        let mut message = Vec::new();
        message.extend_from_slice(&1u64.to_be_bytes());
        message.extend_from_slice(b"b");
        message.extend_from_slice(&1u64.to_be_bytes());
        message.extend_from_slice(b"k");
        message.extend_from_slice(body);
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &secret), &message);
        assert_eq!(bytes[0], FORMAT_V2);
        assert_eq!(&bytes[1..1 + MAC_LEN], &tag.as_ref()[..MAC_LEN]);
        assert_eq!(&bytes[1 + MAC_LEN..], body);
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

    fn arb_context() -> impl Strategy<Value = CausalContext> {
        let entries = proptest::collection::vec((0u64..4, 0u64..8), 0..4);
        let dots = proptest::collection::vec((0u64..4, 1u64..12), 0..6);
        (entries, dots).prop_map(|(entries, dots)| {
            let vv = entries.into_iter().map(|(a, c)| (ActorId(a), c)).collect();
            CausalContext::with_dots(vv, dots.into_iter().map(|(a, c)| Dot::new(ActorId(a), c)))
        })
    }

    #[test]
    fn a_dot_after_the_vector_folds_into_it() {
        let mut context = CausalContext::with_dots(VersionVector::new(), [Dot::new(ActorId(1), 3)]);
        context.add_dot(Dot::new(ActorId(1), 2));
        assert_eq!(
            context.dots().count(),
            2,
            "1:2 and 1:3 without 1:1 stay apart"
        );
        context.add_dot(Dot::new(ActorId(1), 1));
        assert_eq!(context.dots().count(), 0);
        assert_eq!(context.version_vector().get(ActorId(1)), 3);
        // Adding a minted dot covers its actor's earlier dots and absorbs
        // the single dots below it.
        let mut minted = CausalContext::with_dots(VersionVector::new(), [Dot::new(ActorId(2), 4)]);
        minted.add(Dot::new(ActorId(2), 9));
        assert_eq!(
            minted,
            CausalContext::new([(ActorId(2), 9)].into_iter().collect())
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Contexts join like the sets of dots they cover, and one covered
        /// set has one form.
        #[test]
        fn merge_is_a_join_of_covered_sets(a in arb_context(), b in arb_context(), c in arb_context()) {
            let join = |x: &CausalContext, y: &CausalContext| { let mut z = x.clone(); z.merge(y); z };
            prop_assert_eq!(join(&a, &b), join(&b, &a));
            prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
            prop_assert_eq!(join(&a, &a), a.clone());
            let ab = join(&a, &b);
            prop_assert!(ab.is_compact());
            for actor in 0..4 {
                for counter in 1..14 {
                    let d = Dot::new(ActorId(actor), counter);
                    prop_assert_eq!(ab.covers(&d), a.covers(&d) || b.covers(&d));
                }
            }
            prop_assert_eq!(CausalContext::from_bytes(&ab.to_bytes()).unwrap(), ab);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// The bound `bounded` trusts instead of encoding is never below
        /// the encoding, numbers of every width included.
        #[test]
        fn the_body_length_bound_is_never_below_the_encoding(
            entries in proptest::collection::vec((any::<u64>(), 1u64..), 0..40),
            dots in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..40),
        ) {
            let vv = entries.into_iter().map(|(a, c)| (ActorId(a), c)).collect();
            let context = CausalContext::with_dots(
                vv,
                dots.into_iter().map(|(a, c)| Dot::new(ActorId(a), c.max(2))),
            );
            prop_assert!(context.body_len_bound() >= context.to_bytes().len() - 1);
        }

        #[test]
        fn the_body_length_bound_is_tight_for_full_width_numbers(n in 0usize..40) {
            // Actors and counters at full width: every entry takes the most.
            let vv: VersionVector = (0..n as u64)
                .map(|i| (ActorId(u64::MAX - i), u64::MAX - 1))
                .collect();
            let context = CausalContext::new(vv);
            let encoded = context.to_bytes().len() - 1;
            prop_assert!(context.body_len_bound() >= encoded);
            prop_assert!(context.body_len_bound() - encoded <= 11);
        }

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
