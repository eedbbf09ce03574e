//! Client-side histories: what clients asked and what they were told.
//!
//! A history is the only thing the checkers ([`crate::check`]) see. Every
//! operation is recorded twice, as in Jepsen: when it is invoked (the
//! process that asked, the node it asked, the consistency it asked for) and
//! when it completes, with one of three outcomes:
//!
//! * [`Completion::Ok`]: the cluster answered success, with what the
//!   response showed ([`Response`]);
//! * [`Completion::Fail`]: the cluster answered that the operation was not
//!   applied anywhere (`outcome: not_applied`, or a refusal before any
//!   work);
//! * [`Completion::Info`]: the outcome is unknown (a timeout, a lost
//!   connection, `outcome: may_have_applied`).
//!
//! Contexts are opaque tokens ([`Context`]) that remember which response
//! they came from, so a checker can tell what the writer had been shown
//! without knowing what a context contains.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

/// A client session: one logical client that has at most one operation in
/// flight, as a Jepsen process.
pub type Process = usize;

/// The index of an operation in its [`History`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub usize);

/// A causal context as a client holds it: the opaque token (the bytes of
/// `X-Chorus-Context`, or the simulator's encoded context) and the
/// operation whose response carried it.
#[derive(Clone, PartialEq, Eq)]
pub struct Context {
    pub token: Vec<u8>,
    pub from: OpId,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Context(from {:?}, {} bytes)",
            self.from,
            self.token.len()
        )
    }
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A read of one key.
    Read { key: String },
    /// A write of `value` to `key`, or with `value: None` a delete, with
    /// the context of an earlier response or none (a blind write, or a
    /// delete of whatever a read at its `r` finds). `return_body` asks the
    /// answer to show the key's siblings, like a read.
    Write {
        key: String,
        value: Option<String>,
        context: Option<Context>,
        return_body: bool,
    },
}

impl Op {
    /// The key the operation is about.
    pub fn key(&self) -> &str {
        match self {
            Op::Read { key } | Op::Write { key, .. } => key,
        }
    }

    /// Whether the operation changes the key.
    pub fn is_write(&self) -> bool {
        matches!(self, Op::Write { .. })
    }
}

/// The consistency a request asked for, as its query options
/// (`r`, `w`, `pr`, `pw`, `sync`, `timeout`, ...).
pub type Options = Vec<(String, String)>;

/// What a successful response showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// The live values it showed, sorted: a read's siblings (empty when
    /// the key was not found), a `returnbody` write's siblings, nothing for
    /// a write without a body.
    pub values: Vec<String>,
    /// The context token it carried, if any.
    pub token: Option<Vec<u8>>,
    /// Whether the response showed the key's siblings (a read, or a write
    /// with a body). A write without a body shows only its own value.
    pub shows_siblings: bool,
    /// The HLC timestamps of the versions shown, as the node printed
    /// them, when the transport exposes them.
    pub timestamps: Vec<String>,
}

/// How an operation ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    Ok(Response),
    /// Not applied anywhere; `code` is the error's stable code.
    Fail {
        code: String,
    },
    /// Unknown outcome; `code` is the error's stable code or `timeout`.
    Info {
        code: String,
    },
}

/// One operation: its invocation and, once known, its completion.
#[derive(Debug, Clone)]
pub struct Entry {
    pub process: Process,
    /// The node the request was sent to (an index in the cluster).
    pub node: usize,
    pub op: Op,
    pub options: Options,
    /// When it was invoked and completed, in the driver's clock (virtual
    /// time in the simulator, time since the start of the run otherwise).
    pub invoked: Duration,
    pub completed: Option<Duration>,
    pub completion: Option<Completion>,
    /// Whether this is a read of the final check after faults stopped.
    pub is_final: bool,
}

impl Entry {
    /// The value a write wrote (`None` for reads and deletes).
    pub fn written_value(&self) -> Option<&str> {
        match &self.op {
            Op::Write { value, .. } => value.as_deref(),
            Op::Read { .. } => None,
        }
    }

    /// The response, when the operation succeeded.
    pub fn response(&self) -> Option<&Response> {
        match &self.completion {
            Some(Completion::Ok(response)) => Some(response),
            _ => None,
        }
    }

    /// Whether the operation may have taken effect: it succeeded, or its
    /// outcome is unknown (or it never completed).
    pub fn may_have_applied(&self) -> bool {
        !matches!(self.completion, Some(Completion::Fail { .. }))
    }

    /// Whether the cluster acknowledged it.
    pub fn is_ok(&self) -> bool {
        matches!(self.completion, Some(Completion::Ok(_)))
    }

    /// The value of one query option, if the request set it.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A whole history, in invocation order.
#[derive(Debug, Clone, Default)]
pub struct History {
    entries: Vec<Entry>,
    /// The replication factor (N) of the cluster the history ran on.
    pub replicas: usize,
}

impl History {
    /// An empty history of a cluster with `replicas` replicas per key.
    pub fn new(replicas: usize) -> History {
        History {
            entries: Vec::new(),
            replicas,
        }
    }

    /// Records an invocation; returns its id for [`History::complete`].
    pub fn invoke(
        &mut self,
        process: Process,
        node: usize,
        op: Op,
        options: Options,
        at: Duration,
    ) -> OpId {
        self.entries.push(Entry {
            process,
            node,
            op,
            options,
            invoked: at,
            completed: None,
            completion: None,
            is_final: false,
        });
        OpId(self.entries.len() - 1)
    }

    /// Records how operation `id` ended.
    pub fn complete(&mut self, id: OpId, completion: Completion, at: Duration) {
        let entry = &mut self.entries[id.0];
        debug_assert!(entry.completion.is_none(), "{id:?} completed twice");
        entry.completion = Some(completion);
        entry.completed = Some(at);
    }

    /// Marks operation `id` as a read of the final check.
    pub fn mark_final(&mut self, id: OpId) {
        self.entries[id.0].is_final = true;
    }

    pub fn entry(&self, id: OpId) -> &Entry {
        &self.entries[id.0]
    }

    /// Every operation with its id, in invocation order.
    pub fn entries(&self) -> impl Iterator<Item = (OpId, &Entry)> {
        self.entries.iter().enumerate().map(|(i, e)| (OpId(i), e))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every key an operation touched, sorted.
    pub fn keys(&self) -> BTreeSet<String> {
        self.entries.iter().map(|e| e.op.key().to_owned()).collect()
    }

    /// The successful final reads of `key` (usually one per node asked).
    pub fn final_reads<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Response> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.is_final && e.op.key() == key)
            .filter_map(Entry::response)
    }

    /// The values a response showed, for checkers: a read or `returnbody`
    /// write shows its siblings; a write without a body shows its own value
    /// and everything its own context showed (the context a write returns
    /// covers what the writer's context covered plus the new version).
    pub fn shown_by(&self, id: OpId) -> BTreeSet<String> {
        let entry = &self.entries[id.0];
        let Some(response) = entry.response() else {
            return BTreeSet::new();
        };
        if response.shows_siblings {
            return response.values.iter().cloned().collect();
        }
        match &entry.op {
            Op::Write { value, context, .. } => {
                let mut shown = context
                    .as_ref()
                    .map(|c| self.shown_by(c.from))
                    .unwrap_or_default();
                shown.extend(value.clone());
                shown
            }
            Op::Read { .. } => response.values.iter().cloned().collect(),
        }
    }

    /// Counts for a summary: operations, writes acknowledged, failed
    /// (not applied) and of unknown outcome.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for entry in &self.entries {
            counts.operations += 1;
            if !entry.op.is_write() {
                continue;
            }
            match &entry.completion {
                Some(Completion::Ok(_)) => counts.acknowledged += 1,
                Some(Completion::Fail { .. }) => counts.not_applied += 1,
                Some(Completion::Info { .. }) | None => counts.unknown += 1,
            }
        }
        counts
    }
}

/// Operation counts of a history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub operations: usize,
    pub acknowledged: usize,
    pub not_applied: usize,
    pub unknown: usize,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        self.operations += other.operations;
        self.acknowledged += other.acknowledged;
        self.not_applied += other.not_applied;
        self.unknown += other.unknown;
    }
}
