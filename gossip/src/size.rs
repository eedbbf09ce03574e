//! Exact MessagePack sizes of the wire types, computed without encoding.
//!
//! The gossiper packs messages up to [`Config::max_message_bytes`](crate::Config)
//! and must know what each digest and state delta will cost on the wire before
//! it decides to include it. Encoding every candidate to measure it would cost
//! more than the gossip round itself in a large cluster, so the sizes are
//! computed here from the MessagePack rules used by `rmp-serde` (structs as
//! arrays, enum variants by name, integers in their shortest form).
//!
//! Architecture invariant: for every wire value `v`,
//! `v.encoded_len() == rmp_serde::to_vec(&v).unwrap().len()`. The wire tests
//! check this on random values; a change to a wire type must change this file.

use std::net::SocketAddr;

/// Size of an unsigned integer in its shortest MessagePack form.
pub(crate) const fn uint(v: u64) -> usize {
    if v < 128 {
        1
    } else if v <= 0xff {
        2
    } else if v <= 0xffff {
        3
    } else if v <= 0xffff_ffff {
        5
    } else {
        9
    }
}

/// Size of an array (or map) header for `len` elements.
pub(crate) const fn array_header(len: usize) -> usize {
    if len <= 15 {
        1
    } else if len <= 0xffff {
        3
    } else {
        5
    }
}

/// Largest possible array header; used when reserving room before the count is known.
pub(crate) const MAX_ARRAY_HEADER: usize = 5;

/// Size of a UTF-8 string of `len` bytes.
pub(crate) const fn str(len: usize) -> usize {
    let header = if len <= 31 {
        1
    } else if len <= 0xff {
        2
    } else if len <= 0xffff {
        3
    } else {
        5
    };
    header + len
}

/// Size of a binary blob of `len` bytes.
pub(crate) const fn bin(len: usize) -> usize {
    let header = if len <= 0xff {
        2
    } else if len <= 0xffff {
        3
    } else {
        5
    };
    header + len
}

/// Size of a node id (a UUID is encoded as 16 raw bytes).
pub(crate) const UUID: usize = bin(16);

/// Size of an enum unit variant (encoded as its name).
pub(crate) const fn unit_variant(name: &str) -> usize {
    str(name.len())
}

/// Overhead of an enum newtype variant around its value: `{name: value}`.
pub(crate) const fn newtype_variant(name: &str) -> usize {
    1 + str(name.len())
}

/// Size of a socket address as serde encodes it in binary formats:
/// `{"V4": [[a, b, c, d], port]}` or `{"V6": [[16 octets], port]}`.
pub(crate) fn socket_addr(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(a) => {
            let octets: usize = a.ip().octets().iter().map(|&o| uint(u64::from(o))).sum();
            newtype_variant("V4") + 1 + array_header(4) + octets + uint(u64::from(a.port()))
        }
        SocketAddr::V6(a) => {
            let octets: usize = a.ip().octets().iter().map(|&o| uint(u64::from(o))).sum();
            newtype_variant("V6") + 1 + array_header(16) + octets + uint(u64::from(a.port()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded<T: serde::Serialize>(v: &T) -> usize {
        rmp_serde::to_vec(v).expect("encode").len()
    }

    #[test]
    fn integers_match_the_encoder_at_every_boundary() {
        for v in [
            0u64,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ] {
            assert_eq!(uint(v), encoded(&v), "uint {v}");
        }
    }

    #[test]
    fn strings_and_arrays_match_the_encoder_at_every_boundary() {
        for len in [0usize, 31, 32, 255, 256, 65_535, 65_536] {
            assert_eq!(str(len), encoded(&"x".repeat(len)), "str {len}");
            assert_eq!(
                array_header(len) + len,
                encoded(&vec![0u8; len]),
                "array {len}"
            );
        }
    }

    #[test]
    fn uuids_and_addresses_match_the_encoder() {
        assert_eq!(UUID, encoded(&uuid::Uuid::from_u128(u128::MAX)));
        for addr in [
            "10.0.0.1:7000",
            "255.255.255.255:65535",
            "[::1]:1",
            "[fe80::1:2:3:ff]:40000",
        ] {
            let addr: SocketAddr = addr.parse().expect("address");
            assert_eq!(socket_addr(&addr), encoded(&addr), "{addr}");
        }
    }
}
