//! Length-delimited frames, written back to back on a QUIC stream.
//!
//! A frame is `[version: u8][length: u32, big-endian][payload]`. The version
//! byte lets a later protocol change be refused cleanly instead of being
//! misread; the length lets the reader refuse an oversized frame before it
//! allocates anything.
//!
//! [`encode_frame`], [`encode_header`], [`encode_batch`], [`decode_header`]
//! and [`decode_frame`] are pure; [`read_frame`] is the only function here that
//! touches a stream.

/// The version byte every frame starts with.
pub const PROTOCOL_VERSION: u8 = 1;

/// Bytes in a frame header: the version and the length.
pub const HEADER_LEN: usize = 5;

/// The default largest payload accepted, in bytes: the internode message
/// limit ([`crate::wire::MAX_FRAME_BYTES`], 65 MiB), so any stored object fits.
pub const MAX_FRAME_BYTES: usize = crate::wire::MAX_FRAME_BYTES;

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The frame was written by a different protocol version.
    #[error("unsupported protocol version {found} (this node speaks {PROTOCOL_VERSION})")]
    Version {
        /// The version byte found.
        found: u8,
    },
    /// The header announces more payload than the reader accepts. Nothing
    /// was allocated for it.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced payload length.
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// The input ended before the header or the announced payload was
    /// complete.
    #[error("truncated frame: expected {expected} bytes, got {received}")]
    Truncated {
        /// Bytes the header (or the header plus payload) needs.
        expected: usize,
        /// Bytes actually present.
        received: usize,
    },
    /// Bytes follow the frame where the input should have ended.
    #[error("{0} unexpected bytes after the frame")]
    Trailing(usize),
    /// The stream failed: reset by the peer, or the connection was lost.
    #[error("reading the stream failed: {0}")]
    Read(#[from] quinn::ReadError),
}

/// The header of a frame with a payload of `len` bytes.
///
/// # Panics
///
/// If `len` does not fit in a `u32`; callers check lengths against their
/// frame limit (at most `u32::MAX`) first.
pub fn encode_header(len: usize) -> [u8; HEADER_LEN] {
    let len = u32::try_from(len).expect("frame payload longer than u32::MAX bytes");
    let mut header = [0u8; HEADER_LEN];
    header[0] = PROTOCOL_VERSION;
    header[1..].copy_from_slice(&len.to_be_bytes());
    header
}

/// `payload` as a complete frame.
///
/// # Panics
///
/// If the payload is longer than `u32::MAX` bytes (see [`encode_header`]).
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&encode_header(payload.len()));
    frame.extend_from_slice(payload);
    frame
}

/// Payloads shorter than this are copied next to their header by
/// [`encode_batch`]; longer ones are handed on as they are.
pub const COPY_BELOW: usize = 4096;

/// Frames laid out for one write: the chunks to hand to QUIC in order, and
/// where each frame ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The frames' bytes, in order and back to back. No chunk is empty.
    pub chunks: Vec<bytes::Bytes>,
    /// `ends[i]` is the offset, from the start of the batch, just past
    /// frame `i`: once that many bytes are written, frame `i` is whole.
    pub ends: Vec<u64>,
}

impl Batch {
    /// How many frames are whole once the first `written` bytes are written.
    pub fn whole_frames(&self, written: u64) -> usize {
        self.ends.partition_point(|&end| end <= written)
    }
}

/// `payloads` as consecutive frames. Headers and payloads shorter than
/// [`COPY_BELOW`] are copied into shared buffers, so a batch of small
/// frames is a few chunks rather than two per frame; longer payloads are
/// chunks of their own, not copied.
///
/// # Panics
///
/// If a payload is longer than `u32::MAX` bytes (see [`encode_header`]).
pub fn encode_batch(payloads: &[bytes::Bytes]) -> Batch {
    let copied: usize = payloads
        .iter()
        .map(|p| HEADER_LEN + if p.len() < COPY_BELOW { p.len() } else { 0 })
        .sum();
    let mut buffer = bytes::BytesMut::with_capacity(copied);
    let mut chunks = Vec::new();
    let mut ends = Vec::with_capacity(payloads.len());
    let mut end = 0u64;
    for payload in payloads {
        buffer.extend_from_slice(&encode_header(payload.len()));
        if payload.len() < COPY_BELOW {
            buffer.extend_from_slice(payload);
        } else {
            chunks.push(buffer.split().freeze());
            chunks.push(payload.clone());
        }
        end += (HEADER_LEN + payload.len()) as u64;
        ends.push(end);
    }
    if !buffer.is_empty() {
        chunks.push(buffer.freeze());
    }
    Batch { chunks, ends }
}

/// Checks a header and returns the payload length it announces, which is
/// at most `max`.
pub fn decode_header(header: &[u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let [version, len @ ..] = *header;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version { found: version });
    }
    let len = u32::from_be_bytes(len);
    match usize::try_from(len) {
        Ok(len) if len <= max => Ok(len),
        _ => Err(FrameError::TooLarge {
            len: u64::from(len),
            max,
        }),
    }
}

/// The payload of `bytes`, which must hold exactly one frame.
pub fn decode_frame(bytes: &[u8], max: usize) -> Result<&[u8], FrameError> {
    let Some((header, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(FrameError::Truncated {
            expected: HEADER_LEN,
            received: bytes.len(),
        });
    };
    let len = decode_header(header, max)?;
    match rest.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(FrameError::Truncated {
            expected: HEADER_LEN + len,
            received: bytes.len(),
        }),
        std::cmp::Ordering::Greater => Err(FrameError::Trailing(rest.len() - len)),
        std::cmp::Ordering::Equal => Ok(rest),
    }
}

/// Reads the next frame from `recv` and returns its payload, or `None` when
/// the stream ends cleanly where a frame would begin.
///
/// The header is checked before the payload buffer is allocated, so a frame
/// with a wrong version or a length over `max` costs five bytes of reading
/// and nothing else. The stream is left positioned after the frame, where
/// the next one begins. A stream that ends inside a frame (in its header or
/// its payload) gives [`FrameError::Truncated`]: a partial frame is never
/// returned.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    match read_exact(recv, &mut header, 0).await {
        Ok(()) => {}
        Err(FrameError::Truncated { received: 0, .. }) => return Ok(None),
        Err(error) => return Err(error),
    }
    let len = decode_header(&header, max)?;
    let mut payload = vec![0u8; len];
    read_exact(recv, &mut payload, HEADER_LEN).await?;
    Ok(Some(payload))
}

/// Fills `buf` from `recv`; `offset` is how many bytes of the frame came
/// before `buf`, for the error message.
async fn read_exact(
    recv: &mut quinn::RecvStream,
    buf: &mut [u8],
    offset: usize,
) -> Result<(), FrameError> {
    recv.read_exact(buf).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(read) => FrameError::Truncated {
            expected: offset + buf.len(),
            received: offset + read,
        },
        quinn::ReadExactError::ReadError(e) => FrameError::Read(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for payload in [&b""[..], b"x", &[7u8; 1000]] {
            let frame = encode_frame(payload);
            assert_eq!(frame.len(), HEADER_LEN + payload.len());
            assert_eq!(frame[0], PROTOCOL_VERSION);
            assert_eq!(
                decode_frame(&frame, MAX_FRAME_BYTES).expect("decode"),
                payload
            );
        }
    }

    #[test]
    fn header_is_version_then_big_endian_length() {
        assert_eq!(encode_header(0x0102_0304), [1, 1, 2, 3, 4]);
    }

    #[test]
    fn wrong_version_is_rejected() {
        let mut frame = encode_frame(b"hello");
        frame[0] = PROTOCOL_VERSION + 1;
        assert!(matches!(
            decode_frame(&frame, MAX_FRAME_BYTES),
            Err(FrameError::Version { found }) if found == PROTOCOL_VERSION + 1
        ));
    }

    #[test]
    fn a_frame_exactly_at_the_limit_is_accepted() {
        let frame = encode_frame(&[0u8; 64]);
        assert_eq!(decode_frame(&frame, 64).expect("decode").len(), 64);
    }

    #[test]
    fn oversized_is_rejected_from_the_header_alone() {
        let frame = encode_frame(&[0u8; 65]);
        assert!(matches!(
            decode_frame(&frame, 64),
            Err(FrameError::TooLarge { len: 65, max: 64 })
        ));
        // A header announcing 4 GiB is refused without the payload present.
        let header = [PROTOCOL_VERSION, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_header(&header, MAX_FRAME_BYTES),
            Err(FrameError::TooLarge {
                len: 0xffff_ffff,
                ..
            })
        ));
    }

    #[test]
    fn truncated_is_rejected() {
        let frame = encode_frame(b"hello");
        assert!(matches!(
            decode_frame(&frame[..3], MAX_FRAME_BYTES),
            Err(FrameError::Truncated {
                expected: HEADER_LEN,
                received: 3
            })
        ));
        assert!(matches!(
            decode_frame(&frame[..frame.len() - 1], MAX_FRAME_BYTES),
            Err(FrameError::Truncated {
                expected: 10,
                received: 9
            })
        ));
    }

    #[test]
    fn a_batch_is_its_frames_back_to_back_and_knows_where_each_ends() {
        let big = bytes::Bytes::from(vec![9u8; COPY_BELOW]);
        let payloads = [
            bytes::Bytes::from_static(b"one"),
            bytes::Bytes::new(),
            big.clone(),
            bytes::Bytes::from_static(b"last"),
        ];
        let batch = encode_batch(&payloads);

        // The bytes are the frames, in order.
        let bytes: Vec<u8> = batch.chunks.iter().flatten().copied().collect();
        let frames: Vec<u8> = payloads.iter().flat_map(|p| encode_frame(p)).collect();
        assert_eq!(bytes, frames);
        assert!(batch.chunks.iter().all(|chunk| !chunk.is_empty()));
        // The large payload is handed on, not copied; the small ones share
        // buffers: the first two frames and the third's header; the large
        // payload; the last frame.
        assert_eq!(batch.chunks.len(), 3);
        assert_eq!(batch.chunks[1].as_ptr(), big.as_ptr());

        let ends = [8, 13, 18 + COPY_BELOW as u64, 27 + COPY_BELOW as u64];
        assert_eq!(batch.ends, ends);
        assert_eq!(batch.whole_frames(0), 0);
        assert_eq!(batch.whole_frames(7), 0);
        assert_eq!(batch.whole_frames(8), 1);
        assert_eq!(batch.whole_frames(13), 2);
        assert_eq!(batch.whole_frames(ends[3] - 1), 3);
        assert_eq!(batch.whole_frames(ends[3]), 4);
    }

    #[test]
    fn an_empty_batch_has_no_chunks() {
        assert_eq!(
            encode_batch(&[]),
            Batch {
                chunks: Vec::new(),
                ends: Vec::new()
            }
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut frame = encode_frame(b"hello");
        frame.extend_from_slice(b"!!");
        assert!(matches!(
            decode_frame(&frame, MAX_FRAME_BYTES),
            Err(FrameError::Trailing(2))
        ));
    }
}
