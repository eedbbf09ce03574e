//! Length-delimited frames, one per QUIC stream.
//!
//! A frame is `[version: u8][length: u32, big-endian][payload]`. The version
//! byte lets a later protocol change be refused cleanly instead of being
//! misread; the length lets the reader refuse an oversized frame before it
//! allocates anything.
//!
//! [`encode_frame`], [`encode_header`], [`decode_header`] and
//! [`decode_frame`] are pure; [`read_frame`] is the only function here that
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

/// Reads one frame from `recv` and returns its payload.
///
/// The header is checked before the payload buffer is allocated, so a frame
/// with a wrong version or a length over `max` costs five bytes of reading
/// and nothing else. The stream is left positioned after the frame; whether
/// more follows is the caller's business.
pub async fn read_frame(recv: &mut quinn::RecvStream, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    read_exact(recv, &mut header, 0).await?;
    let len = decode_header(&header, max)?;
    let mut payload = vec![0u8; len];
    read_exact(recv, &mut payload, HEADER_LEN).await?;
    Ok(payload)
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
    fn trailing_bytes_are_rejected() {
        let mut frame = encode_frame(b"hello");
        frame.extend_from_slice(b"!!");
        assert!(matches!(
            decode_frame(&frame, MAX_FRAME_BYTES),
            Err(FrameError::Trailing(2))
        ));
    }
}
