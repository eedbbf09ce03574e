//! What both client APIs (HTTP in [`crate::http`], QUIC in
//! [`crate::client_quic`]) answer, built in one place so that their codes,
//! problem bodies and context tokens cannot drift apart.
//!
//! * [`problem`]: the [`ProblemBody`] of a [`RequestError`]: status, stable
//!   code, title, and the option, quorum tally and write outcome where they
//!   apply.
//! * [`Sealer`]: seals and opens the causal context tokens of one key.
//! * [`read_answer`]: what a read (or a `returnbody` write) of an object
//!   shows: its live versions and the token of the context that covers
//!   exactly them.

use chorus_client::problem::{FailedReplica, ProblemBody, WriteOutcome};
use chorus_storage::context::{CausalContext, ContextError, ContextKey};
use chorus_storage::object::Object;

use crate::api::RequestError;
use crate::core::{GetError, PutError, QuorumTally, WriteError};

/// The problem body a client gets for `error`, over either transport.
pub fn problem(error: &RequestError) -> ProblemBody {
    let mut body = ProblemBody::new(
        error.status(),
        error.code(),
        title(error),
        error.to_string(),
    );
    match error {
        RequestError::Options(error) => {
            body.option = error.option().map(str::to_owned);
        }
        RequestError::Get(error) => add_tally(&mut body, error.tally()),
        RequestError::Put(error) => {
            add_tally(&mut body, error.tally());
            body.applied = Some(error.applied());
            body.outcome = Some(write_outcome(error));
        }
        _ => {}
    }
    body
}

/// A short summary of the kind of `error`, for the problem body's `title`.
pub fn title(error: &RequestError) -> &'static str {
    match error {
        RequestError::Options(_) => "Invalid request option",
        RequestError::Context(_) => "Invalid causal context",
        RequestError::InvalidKey { .. } => "Invalid bucket or key",
        RequestError::ValueTooLarge { .. } => "Value too large",
        RequestError::InvalidContentType(_)
        | RequestError::Write(WriteError::InvalidContentType(_)) => "Invalid content type",
        RequestError::Write(WriteError::TooManySiblings { .. }) => "Too many siblings",
        RequestError::Write(WriteError::ObjectTooLarge { .. }) => "Object too large",
        RequestError::Write(_) => "Write refused",
        RequestError::Get(GetError::QuorumNotReached(_)) => "Read quorum not reached",
        RequestError::Get(GetError::Timeout(_)) => "Read timed out",
        RequestError::Put(PutError::QuorumNotReached { .. }) => "Write quorum not reached",
        RequestError::Put(PutError::Indeterminate { .. }) => "Write timed out and may have applied",
        RequestError::Put(PutError::Failed { .. }) => "Write timed out",
        RequestError::Unavailable(_) => "Node unavailable",
        RequestError::Overloaded(_) => "Node overloaded",
        RequestError::Internal(_) => "Internal error",
    }
}

/// What a failed put may have left behind: a write that reached any replica
/// stays there and may be read, whether the put failed by quorum or by time.
pub fn write_outcome(error: &PutError) -> WriteOutcome {
    match error {
        PutError::Indeterminate { .. } => WriteOutcome::MayHaveApplied,
        PutError::QuorumNotReached { applied, .. } if *applied > 0 => WriteOutcome::MayHaveApplied,
        PutError::QuorumNotReached { .. } | PutError::Failed { .. } => WriteOutcome::NotApplied,
    }
}

fn add_tally(body: &mut ProblemBody, tally: &QuorumTally) {
    body.required = Some(tally.required);
    body.required_primaries = Some(tally.required_primaries);
    body.received = Some(tally.received);
    body.received_primaries = Some(tally.received_primaries);
    body.failures = tally
        .failures
        .iter()
        .map(|failure| FailedReplica {
            node: failure.node,
            code: failure.error.code().to_owned(),
            detail: failure.error.to_string(),
        })
        .collect();
}

/// Seals and opens the context tokens of one key: a token is valid only
/// for the bucket and key it was sealed for, in the cluster whose
/// [`ContextKey`] sealed it.
#[derive(Debug)]
pub struct Sealer {
    context_key: ContextKey,
    pub bucket: Vec<u8>,
    pub key: Vec<u8>,
}

impl Sealer {
    pub fn new(context_key: ContextKey, bucket: &[u8], key: &[u8]) -> Sealer {
        Sealer {
            context_key,
            bucket: bucket.to_vec(),
            key: key.to_vec(),
        }
    }

    /// The token of `context` for this key (base64url).
    pub fn seal(&self, context: &CausalContext) -> String {
        self.context_key.seal(&self.bucket, &self.key, context)
    }

    /// The context in `token`, if this cluster issued it for this key
    /// (else `context_forged` or another context code).
    pub fn open(&self, token: &str) -> Result<CausalContext, ContextError> {
        self.context_key.open(&self.bucket, &self.key, token)
    }
}

/// One live version as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveVersion {
    pub value: bytes::Bytes,
    /// The HLC timestamp's display form.
    pub timestamp: String,
    /// The content type stored with the version, if any.
    pub content_type: Option<String>,
}

/// What a read of an object shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadAnswer {
    /// No live version. `token` covers the tombstones, when there are any
    /// (a key never written has none).
    NotFound { token: Option<String> },
    /// The live versions in the object's (dot) order, at least one, and the
    /// token of the object's context, which covers exactly them.
    Found {
        token: String,
        siblings: Vec<LiveVersion>,
    },
}

/// The answer to a read of `object` (or to a write with `returnbody`).
pub fn read_answer(object: &Object, sealer: &Sealer) -> ReadAnswer {
    let siblings: Vec<LiveVersion> = object
        .live()
        .map(|sibling| LiveVersion {
            value: sibling.value.clone().expect("a live sibling holds a value"),
            timestamp: sibling.timestamp.to_string(),
            content_type: sibling.content_type.clone(),
        })
        .collect();
    if siblings.is_empty() {
        ReadAnswer::NotFound {
            token: (!object.is_empty()).then(|| sealer.seal(&object.context_for_reader())),
        }
    } else {
        ReadAnswer::Found {
            token: sealer.seal(&object.context_for_reader()),
            siblings,
        }
    }
}
