//! The stored and wire form of an [`Object`], written and read by hand.
//!
//! One format marker byte ([`FORMAT_V1`]), then MessagePack:
//!
//! ```text
//! object   = array(2) [ context, siblings ]           when the cloud is empty
//!          | array(3) [ context, siblings, cloud ]    otherwise
//! context  = map { actor: uint => counter: uint }   actors ascending, counters > 0
//! siblings = array [ sibling... ]                    dots ascending
//! sibling  = array(3) [ dot, timestamp: uint, value: bin | nil ]   without a content type
//!          | array(4) [ dot, timestamp: uint, value: bin, content_type: str ]
//! cloud    = array [ dot... ]                        dots ascending, not empty
//! dot      = array(2) [ actor: uint, counter: uint ]
//! ```
//!
//! The cloud (the context's single dots) came after the first release: an
//! object without one is written exactly as that release wrote it, and a
//! two-field object, the only kind stored before, decodes with an empty
//! cloud. A cloud dot the vector covers or directly continues (it would
//! belong in the vector) is refused, so one context has one encoding.
//!
//! The content type came later still, the same way: a sibling without one
//! is written as before, so every object stored before decodes unchanged.
//! A content type is a non-empty string of at most
//! [`MAX_CONTENT_TYPE_BYTES`] bytes (its length is checked before it is
//! read), never on a tombstone, and must pass
//! [`check_content_type`](super::check_content_type).
//!
//! Every object on disk and on the wire passes through this file, once per
//! read and once per write, so it avoids a general-purpose deserializer: the
//! reader walks the slice once, checks each length against the bytes that
//! are left before it allocates, and builds the object directly. Integers are
//! written in their shortest form and read in any unsigned form.

use bytes::Bytes;

use super::{
    DecodeError, Object, Sibling, FORMAT_V1, MAX_CONTENT_TYPE_BYTES, MAX_DECODED_CLOUD_DOTS,
    MAX_DECODED_SIBLINGS, MAX_ENCODED_LEN,
};
use crate::context::CausalContext;
use crate::hlc::Timestamp;
use crate::version::{ActorId, Dot, VersionVector};

pub(super) fn encode(object: &Object) -> Vec<u8> {
    let values: usize = object
        .siblings
        .iter()
        .map(|s| {
            s.value.as_ref().map_or(0, |v| v.len()) + s.content_type.as_ref().map_or(0, String::len)
        })
        .sum();
    let vv = object.context.version_vector();
    let cloud = object.context.dot_count();
    let mut out =
        Vec::with_capacity(8 + 18 * vv.len() + 40 * object.siblings.len() + 19 * cloud + values);
    write(object, &mut out);
    out
}

/// The length of [`encode`]'s output, counted by the same writer without
/// building it.
pub(super) fn encoded_len(object: &Object) -> usize {
    let mut count = Count(0);
    write(object, &mut count);
    count.0
}

/// Where the writer puts its bytes: a buffer, or a counter of them.
trait Out {
    fn push(&mut self, byte: u8);
    fn extend_from_slice(&mut self, bytes: &[u8]);
}

impl Out for Vec<u8> {
    fn push(&mut self, byte: u8) {
        Vec::push(self, byte);
    }

    fn extend_from_slice(&mut self, bytes: &[u8]) {
        Vec::extend_from_slice(self, bytes);
    }
}

/// Counts the bytes written to it.
struct Count(usize);

impl Out for Count {
    fn push(&mut self, _: u8) {
        self.0 += 1;
    }

    fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

fn write(object: &Object, out: &mut impl Out) {
    let vv = object.context.version_vector();
    let cloud = object.context.dot_count();
    out.push(FORMAT_V1);
    array_len(out, if cloud == 0 { 2 } else { 3 });
    map_len(out, vv.len());
    for (actor, counter) in vv.iter() {
        uint(out, actor.0);
        uint(out, counter);
    }
    array_len(out, object.siblings.len());
    for sibling in &object.siblings {
        array_len(out, if sibling.content_type.is_none() { 3 } else { 4 });
        array_len(out, 2);
        uint(out, sibling.dot.actor.0);
        uint(out, sibling.dot.counter);
        uint(out, sibling.timestamp.as_u64());
        match &sibling.value {
            Some(value) => bin(out, value),
            None => out.push(NIL),
        }
        if let Some(content_type) = &sibling.content_type {
            str(out, content_type);
        }
    }
    if cloud > 0 {
        array_len(out, cloud);
        for dot in object.context.dots() {
            array_len(out, 2);
            uint(out, dot.actor.0);
            uint(out, dot.counter);
        }
    }
}

pub(super) fn decode(bytes: &[u8]) -> Result<Object, DecodeError> {
    let (&format, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if format != FORMAT_V1 {
        return Err(DecodeError::UnknownFormat(format));
    }
    if bytes.len() > MAX_ENCODED_LEN {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX_ENCODED_LEN,
        });
    }
    let mut r = Reader {
        body,
        at: 0,
        item: 0,
    };
    let fields = r.array_len("object")?;
    if fields != 2 && fields != 3 {
        return Err(r.malformed("object", &format!("expected 2 or 3 fields, found {fields}")));
    }

    // The context: at least two bytes an entry, so the length is checked
    // against what is left before anything is built.
    let actors = r.map_len()?;
    r.room_for(actors, 2, "context")?;
    let mut context = VersionVector::new();
    for _ in 0..actors {
        let actor = ActorId(r.uint("context actor")?);
        let counter = r.uint("context counter")?;
        if !context.push_decoded(actor, counter) {
            return Err(DecodeError::Invalid(if counter == 0 {
                "zero counter in the context"
            } else {
                "context actors out of order or repeated"
            }));
        }
    }

    let count = r.array_len("siblings")?;
    if count > MAX_DECODED_SIBLINGS {
        return Err(DecodeError::Invalid("too many siblings"));
    }
    r.room_for(count, 6, "siblings")?;
    let mut siblings = Vec::with_capacity(count);
    for _ in 0..count {
        let fields = r.array_len("sibling")?;
        if fields != 3 && fields != 4 {
            return Err(r.malformed(
                "sibling",
                &format!("expected 3 or 4 fields, found {fields}"),
            ));
        }
        r.expect_array(2, "dot")?;
        let actor = ActorId(r.uint("dot actor")?);
        let counter = r.uint("dot counter")?;
        let timestamp = Timestamp::from_u64(r.uint("timestamp")?);
        let value = r.bin_or_nil("value")?.map(Bytes::copy_from_slice);
        let content_type = if fields == 4 {
            if value.is_none() {
                return Err(DecodeError::Invalid("a tombstone with a content type"));
            }
            Some(r.content_type()?.to_owned())
        } else {
            None
        };
        siblings.push(Sibling {
            dot: Dot { actor, counter },
            timestamp,
            value,
            content_type,
        });
    }

    let mut dots = Vec::new();
    if fields == 3 {
        let count = r.array_len("cloud")?;
        if count == 0 {
            return Err(DecodeError::Invalid(
                "an empty cloud is written as no cloud",
            ));
        }
        if count > MAX_DECODED_CLOUD_DOTS {
            return Err(DecodeError::Invalid("too many single dots in the context"));
        }
        r.room_for(count, 3, "cloud")?;
        dots.reserve(count);
        for _ in 0..count {
            r.expect_array(2, "cloud dot")?;
            let actor = ActorId(r.uint("cloud actor")?);
            let counter = r.uint("cloud counter")?;
            let dot = Dot { actor, counter };
            if dots.last().is_some_and(|last| *last >= dot) {
                return Err(DecodeError::Invalid("cloud dots out of order or repeated"));
            }
            dots.push(dot);
        }
    }
    if r.left() != 0 {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes",
            r.left()
        )));
    }
    let context = CausalContext::from_decoded(context, dots).ok_or(DecodeError::Invalid(
        "a cloud dot is zero, or the vector covers or continues it",
    ))?;
    let object = Object { context, siblings };
    object.check()?;
    Ok(object)
}

const NIL: u8 = 0xc0;

fn array_len(out: &mut impl Out, len: usize) {
    container_len(out, len, 0x90, 0xdc);
}

fn map_len(out: &mut impl Out, len: usize) {
    container_len(out, len, 0x80, 0xde);
}

/// fix (four-bit length in the marker), 16-bit or 32-bit length: `wide` is
/// the 16-bit marker, the 32-bit one follows it.
fn container_len(out: &mut impl Out, len: usize, fix: u8, wide: u8) {
    if len < 16 {
        out.push(fix | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(wide);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        let len = u32::try_from(len).expect("objects are far below 4 GiB");
        out.push(wide + 1);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

fn uint(out: &mut impl Out, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else if let Ok(v) = u8::try_from(v) {
        out.extend_from_slice(&[0xcc, v]);
    } else if let Ok(v) = u16::try_from(v) {
        out.push(0xcd);
        out.extend_from_slice(&v.to_be_bytes());
    } else if let Ok(v) = u32::try_from(v) {
        out.push(0xce);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

fn bin(out: &mut impl Out, bytes: &[u8]) {
    if let Ok(len) = u8::try_from(bytes.len()) {
        out.extend_from_slice(&[0xc4, len]);
    } else if let Ok(len) = u16::try_from(bytes.len()) {
        out.push(0xc5);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        let len = u32::try_from(bytes.len()).expect("values are far below 4 GiB");
        out.push(0xc6);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(bytes);
}

fn str(out: &mut impl Out, text: &str) {
    let len = text.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if let Ok(len) = u8::try_from(len) {
        out.extend_from_slice(&[0xd9, len]);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0xda);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        let len = u32::try_from(len).expect("strings here are far below 4 GiB");
        out.push(0xdb);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(text.as_bytes());
}

/// A cursor over the MessagePack body; every error names what it was reading
/// and the offset where that item starts.
struct Reader<'a> {
    body: &'a [u8],
    at: usize,
    /// Where the item being read starts.
    item: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.body.len() - self.at
    }

    fn malformed(&self, what: &str, problem: &str) -> DecodeError {
        // +1: offsets count the format marker, as a hex dump of the value would.
        DecodeError::Malformed(format!("{what} at byte {}: {problem}", self.item + 1))
    }

    /// Reads an item's marker byte and marks where the item starts.
    fn marker(&mut self, what: &str) -> Result<u8, DecodeError> {
        self.item = self.at;
        self.byte(what)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if n > self.left() {
            return Err(self.malformed(what, "truncated"));
        }
        let bytes = &self.body[self.at..self.at + n];
        self.at += n;
        Ok(bytes)
    }

    fn byte(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn be(&mut self, n: usize, what: &str) -> Result<u64, DecodeError> {
        Ok(self
            .take(n, what)?
            .iter()
            .fold(0, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// Whether `count` items of at least `min` bytes each can still follow.
    fn room_for(&self, count: usize, min: usize, what: &str) -> Result<(), DecodeError> {
        if count.saturating_mul(min) > self.left() {
            return Err(self.malformed(what, "length beyond the end of the value"));
        }
        Ok(())
    }

    fn container_len(&mut self, fix: u8, wide: u8, what: &str) -> Result<usize, DecodeError> {
        let marker = self.marker(what)?;
        let len = match marker {
            m if m & 0xf0 == fix => u64::from(m & 0x0f),
            m if m == wide => self.be(2, what)?,
            m if m == wide + 1 => self.be(4, what)?,
            _ => {
                let kind = if fix == 0x90 { "an array" } else { "a map" };
                return Err(self.malformed(
                    what,
                    &format!("expected {kind}, found marker {marker:#04x}"),
                ));
            }
        };
        Ok(len as usize)
    }

    fn array_len(&mut self, what: &str) -> Result<usize, DecodeError> {
        self.container_len(0x90, 0xdc, what)
    }

    fn map_len(&mut self) -> Result<usize, DecodeError> {
        self.container_len(0x80, 0xde, "context")
    }

    fn expect_array(&mut self, len: usize, what: &str) -> Result<(), DecodeError> {
        let found = self.array_len(what)?;
        if found != len {
            return Err(self.malformed(what, &format!("expected {len} fields, found {found}")));
        }
        Ok(())
    }

    fn uint(&mut self, what: &str) -> Result<u64, DecodeError> {
        let marker = self.marker(what)?;
        match marker {
            0x00..=0x7f => Ok(u64::from(marker)),
            0xcc => self.be(1, what),
            0xcd => self.be(2, what),
            0xce => self.be(4, what),
            0xcf => self.be(8, what),
            _ => Err(self.malformed(
                what,
                &format!("expected an unsigned integer, found marker {marker:#04x}"),
            )),
        }
    }

    fn bin_or_nil(&mut self, what: &str) -> Result<Option<&'a [u8]>, DecodeError> {
        let marker = self.marker(what)?;
        let len = match marker {
            NIL => return Ok(None),
            0xc4 => self.be(1, what)?,
            0xc5 => self.be(2, what)?,
            0xc6 => self.be(4, what)?,
            _ => {
                return Err(self.malformed(
                    what,
                    &format!("expected bytes or nil, found marker {marker:#04x}"),
                ));
            }
        };
        self.take(len as usize, what).map(Some)
    }

    /// A sibling's content type: a string of any MessagePack form, its
    /// length checked against [`MAX_CONTENT_TYPE_BYTES`] before it is read.
    /// Its syntax is checked with the object's other invariants.
    fn content_type(&mut self) -> Result<&'a str, DecodeError> {
        let what = "content type";
        let marker = self.marker(what)?;
        let len = match marker {
            0xa0..=0xbf => u64::from(marker & 0x1f),
            0xd9 => self.be(1, what)?,
            0xda => self.be(2, what)?,
            0xdb => self.be(4, what)?,
            _ => {
                return Err(self.malformed(
                    what,
                    &format!("expected a string, found marker {marker:#04x}"),
                ));
            }
        };
        if len == 0 || len > MAX_CONTENT_TYPE_BYTES as u64 {
            return Err(DecodeError::Invalid(
                "a content type that is not a bounded media type",
            ));
        }
        let bytes = self.take(len as usize, what)?;
        std::str::from_utf8(bytes).map_err(|_| self.malformed(what, "not UTF-8"))
    }
}
