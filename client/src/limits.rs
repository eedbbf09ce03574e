//! Sizes a node accepts, and the checks a client can make before sending.
//!
//! A node checks every one of these itself and refuses what breaks them
//! with `400 invalid_key`, `413 value_too_large` or a context code; a client
//! that checks first saves a round trip and gets the same code.

/// The longest bucket name, in bytes (UTF-8, not empty).
pub const MAX_BUCKET_BYTES: usize = 255;

/// The longest key, in bytes (UTF-8, not empty). Over HTTP the whole
/// request URI is limited to 64 KiB, so the longest key that can be
/// addressed there is a little shorter, and shorter still when it needs
/// percent-encoding.
pub const MAX_KEY_BYTES: usize = 65_536;

/// The largest value a node accepts unless it is configured otherwise, in
/// bytes (8 MiB).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 8 << 20;

/// The longest causal context token, in bytes (base64url characters).
pub const MAX_CONTEXT_TOKEN_BYTES: usize = 4096;

/// The longest `Content-Type` stored with a value, in bytes of visible
/// ASCII (a media type and its parameters).
pub const MAX_CONTENT_TYPE_BYTES: usize = 256;

/// A bucket or key a node would refuse. Its code is `invalid_key`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct InvalidName {
    /// `bucket` or `key`.
    pub what: &'static str,
    /// Why, for people.
    pub reason: String,
}

impl InvalidName {
    /// The stable code of this error: `invalid_key`.
    pub fn code(&self) -> &'static str {
        "invalid_key"
    }
}

/// Checks a bucket name: not empty, not `.` or `..`, at most
/// [`MAX_BUCKET_BYTES`] bytes.
pub fn check_bucket(bucket: &str) -> Result<(), InvalidName> {
    check_name("bucket", bucket, MAX_BUCKET_BYTES)
}

/// Checks a key: not empty, not `.` or `..`, at most [`MAX_KEY_BYTES`]
/// bytes.
pub fn check_key(key: &str) -> Result<(), InvalidName> {
    check_name("key", key, MAX_KEY_BYTES)
}

/// Checks that `name` is not empty, not `.` or `..`, and at most `max`
/// bytes long; `what` names it in the error.
///
/// `.` and `..` are refused because they are dot segments: HTTP clients
/// and URL libraries remove them from a path before sending it (RFC 3986
/// §5.2.4; curl, browsers, the `url` crate, also when written `%2E`), so a
/// value stored under such a name could not be reached reliably. Names
/// that merely contain dots (`a.b`, `.x`, `...`) are fine.
pub fn check_name(what: &'static str, name: &str, max: usize) -> Result<(), InvalidName> {
    let reason = if name.is_empty() {
        "it is empty".to_owned()
    } else if name == "." || name == ".." {
        format!(
            "{name:?} is a dot segment, which HTTP clients remove from a URL's path \
             (RFC 3986 §5.2.4), so it could not be reached reliably; a name may contain \
             dots but not be only . or .."
        )
    } else if name.len() > max {
        format!("{} bytes exceed the limit of {max}", name.len())
    } else {
        return Ok(());
    };
    Err(InvalidName { what, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_for_emptiness_and_length_in_bytes() {
        assert!(check_bucket("b").is_ok());
        assert!(check_bucket(&"b".repeat(MAX_BUCKET_BYTES)).is_ok());
        for name in [String::new(), "b".repeat(MAX_BUCKET_BYTES + 1)] {
            let error = check_bucket(&name).unwrap_err();
            assert_eq!(error.code(), "invalid_key");
            assert!(error.to_string().starts_with("invalid bucket: "), "{error}");
        }
        let wide = "é".repeat(MAX_KEY_BYTES / 2 + 1);
        assert!(check_key(&wide).is_err());
        assert!(check_key(&"é".repeat(MAX_KEY_BYTES / 2)).is_ok());
    }

    /// `.` and `..` are removed from URL paths by HTTP clients, so a value
    /// stored under them could not be reached; other dots are fine.
    #[test]
    fn dot_segments_are_refused_as_names() {
        for name in [".", ".."] {
            for error in [check_bucket(name), check_key(name)] {
                let error = error.unwrap_err();
                assert_eq!(error.code(), "invalid_key");
                assert!(
                    error.to_string().contains(&format!(
                        "{name:?} is a dot segment, which HTTP clients remove"
                    )),
                    "{error}"
                );
            }
        }
        for name in ["a.b", "...", ".x", "x.", "..a", "%2E", "a/.."] {
            assert_eq!(check_bucket(name), Ok(()), "{name}");
            assert_eq!(check_key(name), Ok(()), "{name}");
        }
    }
}
