//! The causal context as an opaque token for clients.
//!
//! A client reads a key, receives its context as a token (the
//! `X-Chorus-Context` header), and sends the token back with its next write of
//! that key, so the write supersedes exactly what the client saw. To the
//! client the token is an opaque string; inside it is a format marker byte and
//! the MessagePack encoding of a [`VersionVector`], in unpadded base64url.
//!
//! Tokens come from the network, so [`CausalContext::decode`] bounds their
//! length before decoding and reports every kind of damage as a distinct
//! [`ContextError`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::version::VersionVector;

/// The longest token accepted, in characters. About 170 actors' entries.
pub const MAX_TOKEN_LEN: usize = 4096;

const FORMAT_V1: u8 = 1;

/// A key's causal context, as carried by clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CausalContext(pub VersionVector);

/// Why a token was refused.
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
        }
    }
}

impl CausalContext {
    pub fn new(vv: VersionVector) -> Self {
        CausalContext(vv)
    }

    pub fn version_vector(&self) -> &VersionVector {
        &self.0
    }

    /// The token form.
    pub fn encode(&self) -> String {
        let mut bytes = vec![FORMAT_V1];
        rmp_serde::encode::write(&mut bytes, &self.0).expect("encoding into a Vec cannot fail");
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Parses a token, rejecting oversized, damaged or foreign ones.
    pub fn decode(token: &str) -> Result<Self, ContextError> {
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
        let (&format, body) = bytes.split_first().ok_or(ContextError::Truncated)?;
        if format != FORMAT_V1 {
            return Err(ContextError::UnknownFormat(format));
        }
        let mut reader = body;
        let vv: VersionVector = rmp_serde::decode::from_read(&mut reader).map_err(|e| match e {
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
        Ok(CausalContext(vv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{ActorId, Dot};
    use proptest::prelude::*;

    fn sample() -> CausalContext {
        let mut vv = VersionVector::new();
        vv.add(Dot::new(ActorId(0xdead_beef), 1_795_000_000_000 << 16));
        vv.add(Dot::new(ActorId(7), 3));
        CausalContext(vv)
    }

    #[test]
    fn round_trips_and_is_url_safe() {
        let token = sample().encode();
        assert!(token
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(CausalContext::decode(&token).unwrap(), sample());
        assert_eq!(
            CausalContext::decode(&CausalContext::default().encode()).unwrap(),
            CausalContext::default()
        );
    }

    #[test]
    fn every_kind_of_damage_has_its_own_error() {
        let token = sample().encode();
        assert_eq!(CausalContext::decode(""), Err(ContextError::Empty));
        assert_eq!(
            CausalContext::decode(&"A".repeat(MAX_TOKEN_LEN + 1)),
            Err(ContextError::TooLong {
                len: MAX_TOKEN_LEN + 1,
                max: MAX_TOKEN_LEN
            })
        );
        assert_eq!(
            CausalContext::decode("not a token!"),
            Err(ContextError::NotBase64)
        );
        assert_eq!(
            CausalContext::decode(&token[..token.len() - 4]),
            Err(ContextError::Truncated)
        );
        assert_eq!(
            CausalContext::decode(&URL_SAFE_NO_PAD.encode([9u8, 0x80])),
            Err(ContextError::UnknownFormat(9))
        );
        assert!(matches!(
            CausalContext::decode(&URL_SAFE_NO_PAD.encode([1u8, 0xc1])),
            Err(ContextError::Malformed(_))
        ));
        let mut trailing = URL_SAFE_NO_PAD.decode(&token).unwrap();
        trailing.push(0);
        assert!(matches!(
            CausalContext::decode(&URL_SAFE_NO_PAD.encode(trailing)),
            Err(ContextError::Malformed(_))
        ));
        // A map entry with a zero counter is not a vector this crate makes.
        assert!(matches!(
            CausalContext::decode(&URL_SAFE_NO_PAD.encode([1u8, 0x81, 0x01, 0x00])),
            Err(ContextError::Malformed(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,200}") {
            let _ = CausalContext::decode(&s);
        }

        #[test]
        fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut payload = vec![FORMAT_V1];
            payload.extend(bytes);
            let _ = CausalContext::decode(&URL_SAFE_NO_PAD.encode(payload));
        }

        #[test]
        fn every_truncation_is_refused(cut in 1usize..40) {
            let token = sample().encode();
            let cut = cut.min(token.len() - 1);
            prop_assert!(CausalContext::decode(&token[..token.len() - cut]).is_err());
        }
    }
}
