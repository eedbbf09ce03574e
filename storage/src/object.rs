//! The state of one key: its sibling set and causal context.
//!
//! An [`Object`] holds every version of a key that no write has superseded
//! yet (the **siblings**, each named by its [`Dot`]) and the key's **causal
//! context**: every write this replica has seen for the key, kept or
//! superseded. This is a dotted version vector set: siblings carry single
//! dots, one context covers them all, so a writer with a stale or empty
//! context adds exactly one sibling and never multiplies them.
//!
//! The key's context is a [`CausalContext`]: a version vector plus a **dot
//! cloud**, single dots seen outside the vector's prefix (as in Riak's
//! `riak_dt` causal contexts). The cloud holds the single dots of the
//! writers' contexts: a client that was shown version X on one replica may
//! write Y through a replica that has not received X yet. Y's write removes
//! X's dot there too, as a single dot, so when X arrives it is already
//! superseded and never shows beside Y. A cloud dot leaves the cloud when
//! the vector comes to cover it (merging the state of X's replica does).
//!
//! The rules, from design.md §3:
//!
//! * A write brings the context its client read. It removes the siblings that
//!   context covers, absorbs the whole context (vector and single dots) into
//!   the key's, and adds exactly one new sibling ([`Object::write_in`]).
//! * A version is discarded only when a causal context covers its dot. Merging
//!   two replicas' states ([`Object::merge`]) keeps a sibling unless the other
//!   side's context (vector or cloud) covers its dot and that side no longer
//!   holds it. Merge is a join: commutative, associative and idempotent.
//! * Deletes are tombstone siblings (`value: None`). An object whose siblings
//!   are all tombstones reads as not found but still has its context.
//! * Buckets that ask for last-writer-wins collapse the siblings to the one
//!   with the greatest HLC timestamp ([`Object::resolve_lww`]).
//! * A version may carry the media type its writer gave the value
//!   ([`Sibling::content_type`], as Riak keeps a content type per sibling):
//!   at most [`MAX_CONTENT_TYPE_BYTES`] of visible ASCII
//!   ([`check_content_type`]), never on a tombstone. It belongs to the
//!   version, so it travels, merges and is superseded with it.
//!
//! Stored and transferred objects are MessagePack behind a format marker byte
//! ([`Object::encode`]); decoding checks the marker, the bounds and the
//! invariants, and reports anything else as an error.

use bytes::Bytes;

use crate::context::{CausalContext, MAX_CONTEXT_DOTS};
use crate::hlc::Timestamp;
use crate::version::{Dot, VersionVector};

/// The most siblings a write may leave behind. Writes that would go past it
/// are refused until a client resolves the siblings; merges never drop
/// anything to honour it.
pub const MAX_SIBLINGS: usize = 100;

/// The most siblings a stored or received object may hold. Above
/// [`MAX_SIBLINGS`] because concurrent writes on separate replicas can join
/// into more than any one write allowed.
pub const MAX_DECODED_SIBLINGS: usize = 4 * MAX_SIBLINGS;

/// The most single dots a write may leave in a key's dot cloud. Half of
/// what a context token carries, so the context of a read, or of a write's
/// answer, fits in a token with room for the writer's own dots. A write
/// whose client context brings more unseen single dots than fit records
/// only the lowest: should one of the others' versions arrive later, it
/// stays as a sibling of the write. A spurious sibling, never a lost version.
pub const MAX_CLOUD_DOTS: usize = MAX_CONTEXT_DOTS / 2;

/// The most single dots a stored or received object's cloud may hold.
/// Above [`MAX_CLOUD_DOTS`] because the clouds of separate replicas join
/// on merge.
pub const MAX_DECODED_CLOUD_DOTS: usize = 4 * MAX_CLOUD_DOTS;

/// The most bytes an encoded object may have: the decoder's limit, and the
/// largest object a replica stores. Frames between nodes are larger, so any
/// stored object can be replicated, read remotely, repaired and hinted.
pub const MAX_ENCODED_LEN: usize = 64 << 20;

/// The most bytes a client's write may leave a key's encoded object at.
/// Well below [`MAX_ENCODED_LEN`]: concurrent writes accepted on separate
/// coordinators join into one object on merge, and that join must still be
/// storable (two such objects always are).
pub const MAX_WRITE_BYTES: usize = 24 << 20;

/// The longest content type a version may carry, in bytes: the public
/// contract's ([`chorus_client::limits::MAX_CONTENT_TYPE_BYTES`]), room
/// for a media type with parameters (`application/json; charset=utf-8`),
/// and a small fixed share of any object.
pub const MAX_CONTENT_TYPE_BYTES: usize = chorus_client::limits::MAX_CONTENT_TYPE_BYTES;

/// The format marker of the current encoding.
const FORMAT_V1: u8 = 1;

/// One version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sibling {
    pub dot: Dot,
    /// When the write was coordinated, by the coordinator's HLC.
    pub timestamp: Timestamp,
    /// The value, or `None` for a tombstone. Shared, not copied, when the
    /// object is cloned or merged.
    pub value: Option<Bytes>,
    /// The media type the writer gave the value (an HTTP `Content-Type`),
    /// valid by [`check_content_type`]; `None` when it gave none, and
    /// always for a tombstone.
    pub content_type: Option<String>,
}

impl Sibling {
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// The versions of one key and the causal context that covers them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Object {
    /// Every dot seen for this key, as a vector and a dot cloud; covers
    /// every sibling's dot.
    context: CausalContext,
    /// Sorted by dot, no two with the same dot.
    siblings: Vec<Sibling>,
}

/// A write that [`Object::write`] refused. The object is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// The dot is already covered by the key's history: it was minted twice.
    #[error("dot {0} was already used for this key")]
    DotReused(Dot),
    /// The write would leave more siblings than [`MAX_SIBLINGS`].
    #[error("the key has {siblings} siblings; a write with a context that resolves them is needed (at most {max})")]
    TooManySiblings { siblings: usize, max: usize },
    /// The write's content type is not one a version may carry.
    #[error(transparent)]
    InvalidContentType(#[from] ContentTypeError),
}

/// Why a content type cannot be stored with a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentTypeError {
    #[error("the content type is empty")]
    Empty,
    #[error("the content type is {len} bytes long, above the limit of {max}")]
    TooLong { len: usize, max: usize },
    /// A byte other than visible ASCII or a space, or a space at either end.
    #[error("the content type has a byte other than visible ASCII at offset {at}")]
    NotVisibleAscii { at: usize },
    /// The part before any `;` is not `type/subtype` (RFC 9110 §8.3.1).
    #[error("the content type is not a media type of the form type/subtype")]
    NotAMediaType,
    /// Deletes carry no value, so no media type either.
    #[error("a tombstone carries no content type")]
    OnTombstone,
    /// The request declared more than one content type (`Content-Type` is
    /// a singleton field, RFC 9110 §8.3).
    #[error("the request has more than one Content-Type header; a value has one media type")]
    Repeated,
}

/// Checks that `content_type` may be stored with a version: a media type
/// (`type/subtype`, both RFC 9110 tokens) with any parameters after a `;`,
/// at most [`MAX_CONTENT_TYPE_BYTES`] bytes of visible ASCII, spaces only
/// inside. Nothing else (parameter syntax, registered types) is checked:
/// like Riak, Chorus stores what the client declared and hands it back.
pub fn check_content_type(content_type: &str) -> Result<(), ContentTypeError> {
    let bytes = content_type.as_bytes();
    if bytes.is_empty() {
        return Err(ContentTypeError::Empty);
    }
    if bytes.len() > MAX_CONTENT_TYPE_BYTES {
        return Err(ContentTypeError::TooLong {
            len: bytes.len(),
            max: MAX_CONTENT_TYPE_BYTES,
        });
    }
    let last = bytes.len() - 1;
    if let Some(at) = bytes
        .iter()
        .enumerate()
        .position(|(at, &b)| !(b.is_ascii_graphic() || (b == b' ' && at != 0 && at != last)))
    {
        return Err(ContentTypeError::NotVisibleAscii { at });
    }
    let essence = content_type.split(';').next().unwrap_or_default();
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    match essence.trim_end().split_once('/') {
        Some((kind, subtype)) if token(kind) && token(subtype) => Ok(()),
        _ => Err(ContentTypeError::NotAMediaType),
    }
}

/// Stored or received bytes that are not a valid object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty object encoding")]
    Empty,
    #[error("unknown object format {0}")]
    UnknownFormat(u8),
    #[error("encoded object of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed object: {0}")]
    Malformed(String),
    #[error("object violates an invariant: {0}")]
    Invalid(&'static str),
}

impl Object {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every version of the key not yet superseded, tombstones included, in dot order.
    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    /// The versions that hold a value.
    pub fn live(&self) -> impl Iterator<Item = &Sibling> + '_ {
        self.siblings.iter().filter(|s| !s.is_tombstone())
    }

    /// The causal context, vector and dot cloud: what a client must send
    /// back to supersede what it read.
    pub fn context(&self) -> &CausalContext {
        &self.context
    }

    /// No version and no history: the key was never written here.
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty() && self.context.is_empty()
    }

    /// Reads as not found: no version holds a value.
    pub fn is_deleted(&self) -> bool {
        self.live().next().is_none()
    }

    /// The newest HLC timestamp among the siblings, if any.
    pub fn latest_timestamp(&self) -> Option<Timestamp> {
        self.siblings.iter().map(|s| s.timestamp).max()
    }

    /// Applies a client's write: removes the siblings `context` covers and adds
    /// one version named `dot` (`value: None` deletes). Fails, changing
    /// nothing, when `dot` was seen before or the siblings would exceed
    /// [`MAX_SIBLINGS`]. A write with a context of single dots goes through
    /// [`write_in`](Self::write_in), one with a content type through
    /// [`write_typed`](Self::write_typed).
    pub fn write(
        &mut self,
        context: &VersionVector,
        dot: Dot,
        timestamp: Timestamp,
        value: Option<Vec<u8>>,
    ) -> Result<(), ObjectError> {
        self.write_in(&CausalContext::new(context.clone()), dot, timestamp, value)
    }

    /// [`write`](Self::write) with a client's full causal context: the
    /// siblings it covers, by its vector or as single dots, are removed.
    ///
    /// The key's context absorbs the client's whole context. A single dot
    /// the key's context does not cover yet (a version this replica has not
    /// received) joins the dot cloud, so that version is superseded when it
    /// arrives. Only [`MAX_CLOUD_DOTS`] fit: single dots beyond that are
    /// left out, and should their versions arrive later they stay as
    /// siblings of this write (a spurious sibling, never a lost version).
    pub fn write_in(
        &mut self,
        context: &CausalContext,
        dot: Dot,
        timestamp: Timestamp,
        value: Option<Vec<u8>>,
    ) -> Result<(), ObjectError> {
        self.write_typed(context, dot, timestamp, value, None)
    }

    /// [`write_in`](Self::write_in) of a version that carries the media
    /// type its writer gave the value. Fails, changing nothing, as
    /// `write_in` does, and when `content_type` fails
    /// [`check_content_type`] or comes with a delete (`value: None`).
    pub fn write_typed(
        &mut self,
        context: &CausalContext,
        dot: Dot,
        timestamp: Timestamp,
        value: Option<Vec<u8>>,
        content_type: Option<String>,
    ) -> Result<(), ObjectError> {
        if let Some(content_type) = &content_type {
            if value.is_none() {
                return Err(ContentTypeError::OnTombstone.into());
            }
            check_content_type(content_type)?;
        }
        if self.context.covers(&dot) || context.covers(&dot) {
            return Err(ObjectError::DotReused(dot));
        }
        let kept = self
            .siblings
            .iter()
            .filter(|s| !context.covers(&s.dot))
            .count();
        if kept + 1 > MAX_SIBLINGS {
            return Err(ObjectError::TooManySiblings {
                siblings: kept,
                max: MAX_SIBLINGS,
            });
        }
        self.siblings.retain(|s| !context.covers(&s.dot));
        self.context
            .merge(&CausalContext::new(context.version_vector().clone()));
        for single in context.dots() {
            if self.context.dot_count() >= MAX_CLOUD_DOTS {
                break;
            }
            self.context.add_dot(single);
        }
        self.context.add(dot);
        // Dots minted later sort later for the same actor; keep dot order.
        let at = self.siblings.partition_point(|s| s.dot < dot);
        self.siblings.insert(
            at,
            Sibling {
                dot,
                timestamp,
                value: value.map(Bytes::from),
                content_type,
            },
        );
        Ok(())
    }

    /// The context to hand the client whose write, made with `client`'s
    /// context, just created the version `dot` in this object: everything
    /// the client's context covered plus `dot`, and never a sibling the
    /// client was not shown (design.md §3 rule 3). Writing again with it
    /// replaces the client's own version and leaves every concurrent one.
    ///
    /// It is the key's vector with each actor's entry held below that
    /// actor's oldest unseen sibling, joined with the client's vector; the
    /// client's versions that the vector no longer covers, the client's
    /// single dots and the key's dot cloud (versions already superseded)
    /// travel as single dots (dotted version vectors).
    pub fn context_for_writer(&self, client: &CausalContext, dot: Dot) -> CausalContext {
        let seen = |s: &Sibling| s.dot == dot || client.covers(&s.dot);
        let unseen = |d: &Dot| self.sibling(d).is_some_and(|s| !seen(s));
        let mut vv = self.context.version_vector().clone();
        for unseen in self.siblings.iter().filter(|s| !seen(s)) {
            vv.cap(unseen.dot.actor, unseen.dot.counter - 1);
        }
        vv.merge(client.version_vector());
        // Versions the client saw that the vector no longer covers, the
        // client's single dots (they name versions the client saw, whether
        // or not this replica has them) and the versions this replica knows
        // to be superseded; `with_dots` drops those `vv` covers.
        let own = self.siblings.iter().filter(|s| seen(s)).map(|s| s.dot);
        let cloud = self.context.dots().filter(|d| !unseen(d));
        let dots: Vec<Dot> = own.chain(client.dots()).chain(cloud).collect();
        // A token carries at most MAX_CONTEXT_DOTS single dots: the
        // versions standing here that the client saw go first, so its next
        // write replaces them; older ones it saw, already superseded, may
        // be left out.
        CausalContext::with_dots(vv, dots).bounded(|d| self.is_sibling(d))
    }

    /// The context to hand a client reading this object: the key's
    /// context, with at most [`MAX_CONTEXT_DOTS`] single dots (the
    /// siblings' first) so its token opens again. A write with it replaces
    /// every sibling shown.
    pub fn context_for_reader(&self) -> CausalContext {
        self.context.clone().bounded(|d| self.is_sibling(d))
    }

    fn is_sibling(&self, dot: &Dot) -> bool {
        self.sibling(dot).is_some()
    }

    /// The sibling named `dot`, found by bisection (siblings are in dot order).
    fn sibling(&self, dot: &Dot) -> Option<&Sibling> {
        self.siblings
            .binary_search_by(|s| s.dot.cmp(dot))
            .ok()
            .map(|at| &self.siblings[at])
    }

    /// Joins another replica's state of the same key into this one: a
    /// sibling stays unless the other side's full context (vector or dot
    /// cloud) covers its dot and the other side no longer holds it; the
    /// contexts join. Returns whether this object changed.
    pub fn merge(&mut self, other: &Object) -> bool {
        let mine = std::mem::take(&mut self.siblings);
        let mut merged = Vec::with_capacity(mine.len().max(other.siblings.len()));
        let mut changed = false;
        let (mut a, mut b) = (
            mine.into_iter().peekable(),
            other.siblings.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.dot == y.dot => {
                    // One dot is one write, so both sides hold the same version.
                    // Should they differ anyway, pick one the same way on every
                    // replica so merge stays a join.
                    let theirs = (y.timestamp, &y.value, &y.content_type)
                        > (x.timestamp, &x.value, &x.content_type);
                    let x = a.next().expect("peeked");
                    let y = b.next().expect("peeked");
                    if theirs {
                        merged.push(y.clone());
                        changed = true;
                    } else {
                        merged.push(x);
                    }
                }
                (Some(x), y) if y.is_none_or(|y| x.dot < y.dot) => {
                    let x = a.next().expect("peeked");
                    if other.context.covers(&x.dot) {
                        changed = true;
                    } else {
                        merged.push(x);
                    }
                }
                (_, Some(y)) => {
                    if !self.context.covers(&y.dot) {
                        merged.push(Sibling::clone(y));
                        changed = true;
                    }
                    b.next();
                }
                (None, None) => break,
                (Some(_), None) => unreachable!("covered by the second arm"),
            }
        }
        self.siblings = merged;
        let before = self.context.clone();
        self.context.merge(&other.context);
        changed || self.context != before
    }

    /// Keeps only the sibling with the greatest timestamp (ties broken by dot),
    /// for buckets that resolve conflicts by last writer wins. The context is kept.
    pub fn resolve_lww(&mut self) {
        if let Some(winner) = self
            .siblings
            .iter()
            .max_by_key(|s| (s.timestamp, s.dot))
            .cloned()
        {
            self.siblings = vec![winner];
        }
    }

    /// The length of [`encode`](Self::encode)'s output, in bytes.
    pub fn encoded_len(&self) -> usize {
        codec::encoded_len(self)
    }

    /// Whether a replica may store this object: the decoder accepts objects
    /// of at most [`MAX_ENCODED_LEN`] bytes, [`MAX_DECODED_SIBLINGS`]
    /// siblings and [`MAX_DECODED_CLOUD_DOTS`] single dots. Merges check it before storing, so no replica ever holds a
    /// key it cannot read back.
    pub fn storable(&self) -> Result<(), DecodeError> {
        if self.siblings.len() > MAX_DECODED_SIBLINGS {
            return Err(DecodeError::Invalid("too many siblings"));
        }
        if self.context.dot_count() > MAX_DECODED_CLOUD_DOTS {
            return Err(DecodeError::Invalid("too many single dots in the context"));
        }
        let len = self.encoded_len();
        if len > MAX_ENCODED_LEN {
            return Err(DecodeError::TooLarge {
                len,
                max: MAX_ENCODED_LEN,
            });
        }
        Ok(())
    }

    /// The stored and wire form: a format marker byte, then MessagePack
    /// (the layout is in `object/codec.rs`).
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes [`encode`](Self::encode)'s output, rejecting anything else
    /// (truncation, trailing bytes, broken invariants) with an error.
    pub fn decode(bytes: &[u8]) -> Result<Object, DecodeError> {
        codec::decode(bytes)
    }

    /// The invariants every object built by this module keeps.
    fn check(&self) -> Result<(), DecodeError> {
        if self.siblings.len() > MAX_DECODED_SIBLINGS {
            return Err(DecodeError::Invalid("too many siblings"));
        }
        if self.context.dot_count() > MAX_DECODED_CLOUD_DOTS {
            return Err(DecodeError::Invalid("too many single dots in the context"));
        }
        if !self.context.is_compact() {
            return Err(DecodeError::Invalid(
                "zero counter in the context, or a single dot the vector covers or continues",
            ));
        }
        if self
            .siblings
            .iter()
            .any(|s| s.dot.counter == 0 || !self.context.covers(&s.dot))
        {
            return Err(DecodeError::Invalid(
                "a sibling's dot is outside the context",
            ));
        }
        if self.siblings.windows(2).any(|w| w[0].dot >= w[1].dot) {
            return Err(DecodeError::Invalid("siblings out of order or repeated"));
        }
        for sibling in &self.siblings {
            if let Some(content_type) = &sibling.content_type {
                if sibling.is_tombstone() {
                    return Err(DecodeError::Invalid("a tombstone with a content type"));
                }
                if check_content_type(content_type).is_err() {
                    return Err(DecodeError::Invalid(
                        "a content type that is not a bounded media type",
                    ));
                }
            }
        }
        Ok(())
    }
}

mod codec;
#[cfg(test)]
mod tests;
