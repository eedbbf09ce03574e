//! Length-delimited frames, written back to back on a QUIC stream.
//!
//! A frame is `[version: u8][length: u32, big-endian][payload]`. The version
//! byte lets a later protocol change be refused cleanly instead of being
//! misread; the length lets the reader refuse an oversized frame before it
//! allocates anything.
//!
//! [`encode_frame`], [`encode_header`], [`encode_batch`], [`decode_header`],
//! [`decode_frame`] and [`FrameReader::parse`] are pure;
//! [`FrameReader::next`] is the only function here that touches a stream.

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

/// Frames at least this long are read straight into their own buffer by
/// [`FrameReader`] rather than gathered from QUIC's chunks.
pub const READ_DIRECT_FROM: usize = 16 * 1024;

/// What [`FrameReader::parse`] found at the front of the bytes pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole frame: its payload.
    Frame(Vec<u8>),
    /// Not a whole frame yet; more bytes are needed.
    Incomplete,
    /// The header of a frame of at least [`READ_DIRECT_FROM`] bytes whose
    /// payload is not all here: better read straight into its buffer.
    Large {
        /// The payload's length, within the limit.
        len: usize,
    },
}

/// Reads the frames of one stream, which carries them back to back.
///
/// Small frames are cut out of the chunks QUIC hands over, so one read
/// yields many of them; a large one is read straight into its payload
/// buffer. A header is checked before anything is allocated for its
/// payload, so a frame with a wrong version or a length over the limit
/// costs five bytes and nothing else. [`push`](Self::push) and
/// [`parse`](Self::parse) are pure; [`next`](Self::next) reads the stream.
/// The bytes held are at most one small frame and one chunk (which QUIC's
/// flow-control window bounds).
#[derive(Debug)]
pub struct FrameReader {
    buffer: bytes::BytesMut,
    max: usize,
}

impl FrameReader {
    /// A reader that refuses payloads over `max` bytes.
    pub fn new(max: usize) -> FrameReader {
        FrameReader {
            buffer: bytes::BytesMut::new(),
            max,
        }
    }

    /// Adds bytes received from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The frame at the front of the bytes pushed, if it is whole.
    pub fn parse(&mut self) -> Result<Parsed, FrameError> {
        let Some(header) = self.buffer.first_chunk::<HEADER_LEN>() else {
            return Ok(Parsed::Incomplete);
        };
        let len = decode_header(header, self.max)?;
        if self.buffer.len() >= HEADER_LEN + len {
            bytes::Buf::advance(&mut self.buffer, HEADER_LEN);
            return Ok(Parsed::Frame(self.buffer.split_to(len).to_vec()));
        }
        if len >= READ_DIRECT_FROM {
            return Ok(Parsed::Large { len });
        }
        Ok(Parsed::Incomplete)
    }

    /// The next frame's payload, or `None` when the stream ends cleanly
    /// where a frame would begin. A stream that ends inside a frame gives
    /// [`FrameError::Truncated`]: a partial frame is never returned.
    pub async fn next(
        &mut self,
        recv: &mut quinn::RecvStream,
    ) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            match self.parse()? {
                Parsed::Frame(payload) => return Ok(Some(payload)),
                Parsed::Large { len } => {
                    bytes::Buf::advance(&mut self.buffer, HEADER_LEN);
                    let have = self.buffer.len();
                    let mut payload = vec![0u8; len];
                    payload[..have].copy_from_slice(&self.buffer);
                    self.buffer.clear();
                    read_exact(recv, &mut payload[have..], HEADER_LEN + have).await?;
                    return Ok(Some(payload));
                }
                Parsed::Incomplete => match recv.read_chunk(usize::MAX, true).await? {
                    Some(chunk) => self.push(&chunk.bytes),
                    None if self.buffer.is_empty() => return Ok(None),
                    None => return Err(self.truncated()),
                },
            }
        }
    }

    /// The error for a stream that ended with the bytes held.
    fn truncated(&self) -> FrameError {
        let expected = match self.buffer.first_chunk::<HEADER_LEN>() {
            Some(header) => HEADER_LEN + decode_header(header, self.max).expect("checked by parse"),
            None => HEADER_LEN,
        };
        FrameError::Truncated {
            expected,
            received: self.buffer.len(),
        }
    }
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

    /// Pushes `bytes` in pieces ending at `cuts`, taking every whole frame
    /// after each piece.
    fn read_in_pieces(
        bytes: &[u8],
        cuts: &[usize],
        max: usize,
    ) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut reader = FrameReader::new(max);
        let mut frames = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain([&bytes.len()]) {
            let end = end.clamp(start, bytes.len());
            reader.push(&bytes[start..end]);
            start = end;
            while let Parsed::Frame(payload) = reader.parse()? {
                frames.push(payload);
            }
        }
        assert!(reader.buffer.is_empty(), "bytes left over");
        Ok(frames)
    }

    proptest::proptest! {
        #[test]
        fn frames_come_out_whole_and_in_order_however_the_bytes_are_cut(
            sizes in proptest::collection::vec(
                proptest::prop_oneof![0usize..300, proptest::strategy::Just(READ_DIRECT_FROM + 7)],
                0..20,
            ),
            mut cuts in proptest::collection::vec(0usize..200_000, 0..30),
        ) {
            let payloads: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &len)| vec![i as u8; len])
                .collect();
            let bytes: Vec<u8> = payloads.iter().flat_map(|p| encode_frame(p)).collect();
            cuts.sort_unstable();
            proptest::prop_assert_eq!(read_in_pieces(&bytes, &cuts, MAX_FRAME_BYTES).unwrap(), payloads);
        }
    }

    #[test]
    fn the_reader_refuses_a_bad_header_before_its_payload_arrives() {
        let mut reader = FrameReader::new(64);
        reader.push(&[PROTOCOL_VERSION, 0, 0, 0, 65]);
        assert!(matches!(
            reader.parse(),
            Err(FrameError::TooLarge { len: 65, max: 64 })
        ));
        let mut reader = FrameReader::new(64);
        reader.push(&[PROTOCOL_VERSION + 1, 0, 0, 0, 1]);
        assert!(matches!(reader.parse(), Err(FrameError::Version { .. })));
    }

    #[test]
    fn a_large_frame_is_left_to_be_read_directly_and_a_partial_one_is_truncated() {
        let mut reader = FrameReader::new(MAX_FRAME_BYTES);
        reader.push(&encode_header(READ_DIRECT_FROM));
        reader.push(&[1, 2, 3]);
        assert_eq!(
            reader.parse().unwrap(),
            Parsed::Large {
                len: READ_DIRECT_FROM
            }
        );
        assert!(matches!(
            reader.truncated(),
            FrameError::Truncated { expected, received: 8 } if expected == HEADER_LEN + READ_DIRECT_FROM
        ));
        let mut reader = FrameReader::new(MAX_FRAME_BYTES);
        reader.push(&[PROTOCOL_VERSION, 0]);
        assert_eq!(reader.parse().unwrap(), Parsed::Incomplete);
        assert!(matches!(
            reader.truncated(),
            FrameError::Truncated {
                expected: HEADER_LEN,
                received: 2
            }
        ));
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
