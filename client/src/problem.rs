//! The error body every Chorus API answers with.
//!
//! Errors are `application/problem+json` (RFC 9457) over HTTP and the same
//! structure in MessagePack over the QUIC client protocol. `code` is stable
//! and machine-readable; `detail` is for people and may change.
//!
//! | status | codes |
//! |--------|-------|
//! | `400`  | option codes (`unknown_option`, `duplicate_option`, `invalid_quorum`, `quorum_overflow`, `invalid_bool`, `invalid_timeout`, `timeout_out_of_range`, `quorum_zero`, `quorum_above_n`, `pr_above_r`, `pw_above_w`), context codes (`context_forged`, `context_not_base64`, `context_malformed`, `context_too_long`, …), `invalid_key`, `invalid_query`, `body_unreadable`, `context_from_future`, `context_ahead_of_replica` |
//! | `401`  | `unauthorized` |
//! | `404`  | `not_found` (key), `no_route` (path) |
//! | `405`  | `method_not_allowed` |
//! | `408`  | `body_timeout` |
//! | `409`  | `too_many_siblings` |
//! | `413`  | `value_too_large`, `object_too_large` |
//! | `500`  | `internal`, `dot_reused` |
//! | `503`  | `quorum_not_reached`, `unavailable`, `not_ready`, `overloaded`; with `Retry-After` |
//! | `504`  | `timeout`, `timeout_indeterminate` |

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The content type of error bodies over HTTP.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Where the `type` URIs of error bodies start; the code follows.
pub const ERROR_TYPE_PREFIX: &str = "https://chorus.dev/errors/";

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemBody {
    /// `https://chorus.dev/errors/<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// A short summary of the kind of error.
    pub title: String,
    /// The HTTP status, repeated.
    pub status: u16,
    /// The stable, machine-readable code.
    pub code: String,
    /// What went wrong with this request, for people.
    pub detail: String,
    /// The request option at fault, for option errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option: Option<String>,
    /// Quorum and timeout errors: replies or acknowledgements needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<usize>,
    /// Quorum and timeout errors: how many of those had to be primaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_primaries: Option<usize>,
    /// Quorum and timeout errors: replies or acknowledgements that counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<usize>,
    /// Quorum and timeout errors: how many of those came from primaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_primaries: Option<usize>,
    /// Quorum and timeout errors: the replicas that failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<FailedReplica>,
    /// Write errors: replicas known to have applied the write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<usize>,
    /// Write errors: whether the write may have taken effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<WriteOutcome>,
}

impl ProblemBody {
    /// A problem with only the required fields: `type` from `code`,
    /// `title`, `status`, `detail`.
    pub fn new(status: u16, code: &str, title: &str, detail: impl Into<String>) -> ProblemBody {
        ProblemBody {
            type_uri: format!("{ERROR_TYPE_PREFIX}{code}"),
            title: title.to_owned(),
            status,
            code: code.to_owned(),
            detail: detail.into(),
            option: None,
            required: None,
            required_primaries: None,
            received: None,
            received_primaries: None,
            failures: Vec::new(),
            applied: None,
            outcome: None,
        }
    }
}

/// A replica that failed a request, as listed in a [`ProblemBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedReplica {
    pub node: Uuid,
    /// The replica error's stable code, e.g. `replica_unreachable`.
    pub code: String,
    pub detail: String,
}

/// What a failed write left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteOutcome {
    /// No replica applied the write: retrying it cannot duplicate it.
    NotApplied,
    /// Some replica applied the write; it may become visible. A client
    /// that cares reads the key before retrying.
    MayHaveApplied,
}
