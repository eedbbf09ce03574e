//! Workloads that behave like real clients.
//!
//! A workload decides what each client process asks next and learns from
//! each answer; it never talks to a cluster itself (sans-IO), so one
//! workload runs unchanged in the simulator ([`crate::campaign`]) and
//! against real processes. Every process has at most one operation in
//! flight, and every value a workload writes is unique in its run, so a
//! checker can tell every write apart by its value.
//!
//! The kinds ([`Kind`]):
//!
//! * [`Kind::Insert`] — unique-value inserts, each to a fresh key (Jepsen's
//!   *set*), with reads of earlier keys.
//! * [`Kind::SetFromReads`] — read-modify-write of a few keys that each
//!   hold a set: read, merge the siblings by union, add a new element,
//!   write back with the read's context (Jepsen's Riak test).
//! * [`Kind::SetFromWrites`] — the same, but a process often writes again
//!   with the context its previous *write* returned (with and without
//!   `returnbody`), as a client that caches its last answer does.
//! * [`Kind::Blind`] — blind writes, writes with a read's context, deletes
//!   with and without a context, and reads.
//! * [`Kind::Session`] — per-session writes each followed by a read of the
//!   same key, for read-your-writes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::history::{Completion, Context, History, Op, OpId, Options, Process};

/// The kinds of workload; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Insert,
    SetFromReads,
    SetFromWrites,
    Blind,
    Session,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Insert,
        Kind::SetFromReads,
        Kind::SetFromWrites,
        Kind::Blind,
        Kind::Session,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Insert => "insert",
            Kind::SetFromReads => "set-from-reads",
            Kind::SetFromWrites => "set-from-writes",
            Kind::Blind => "blind",
            Kind::Session => "session",
        }
    }

    /// The key prefix of this workload; keys of a set workload hold sets
    /// ([`encode_set`]).
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Insert => "ins",
            Kind::SetFromReads => "rset",
            Kind::SetFromWrites => "wset",
            Kind::Blind => "blind",
            Kind::Session => "sess",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown workload {s:?}; one of {}", names.join(", "))
            })
    }
}

/// Whether values of keys with this name hold sets of elements.
pub fn is_set_key(key: &str) -> bool {
    key.starts_with("rset-") || key.starts_with("wset-")
}

/// A set value: its elements, sorted, separated by spaces.
pub fn encode_set(elements: &BTreeSet<String>) -> String {
    elements.iter().cloned().collect::<Vec<_>>().join(" ")
}

/// The elements of a set value.
pub fn decode_set(value: &str) -> BTreeSet<String> {
    value.split_whitespace().map(str::to_owned).collect()
}

/// The consistency every request of a run asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Consistency {
    /// `r=quorum,w=quorum,pr=quorum,pw=quorum`: strict quorums, so every
    /// read overlaps every acknowledged write (pr + pw > n).
    Strict,
    /// `r=quorum,w=quorum`: sloppy quorums; fallbacks may stand in.
    Sloppy,
    /// `r=one,w=one`.
    One,
    /// [`Consistency::Strict`] with `sync=true`.
    Durable,
}

impl Consistency {
    pub const ALL: [Consistency; 4] = [
        Consistency::Strict,
        Consistency::Sloppy,
        Consistency::One,
        Consistency::Durable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Consistency::Strict => "strict",
            Consistency::Sloppy => "sloppy",
            Consistency::One => "one",
            Consistency::Durable => "durable",
        }
    }

    /// The query options of a request at this consistency, with a request
    /// timeout of `timeout_ms`.
    pub fn options(self, timeout_ms: u64) -> Options {
        let mut options: Vec<(&str, &str)> = match self {
            Consistency::Strict => vec![
                ("r", "quorum"),
                ("w", "quorum"),
                ("pr", "quorum"),
                ("pw", "quorum"),
            ],
            Consistency::Sloppy => vec![("r", "quorum"), ("w", "quorum")],
            Consistency::One => vec![("r", "one"), ("w", "one")],
            Consistency::Durable => vec![
                ("r", "quorum"),
                ("w", "quorum"),
                ("pr", "quorum"),
                ("pw", "quorum"),
                ("sync", "true"),
            ],
        };
        let timeout = timeout_ms.to_string();
        options.push(("timeout", &timeout));
        options
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Consistency, String> {
        Consistency::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                format!("unknown consistency {s:?}; one of strict, sloppy, one, durable")
            })
    }
}

/// An operation a workload wants sent, with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub op: Op,
    pub options: Options,
}

/// What decides each process's next operation.
#[derive(Debug)]
pub struct Workload {
    kind: Kind,
    keys: usize,
    options: Options,
    /// Values written so far (for unique names).
    next_unique: u64,
    /// Keys the insert workload created.
    inserted: Vec<String>,
    /// Per process: what it plans next.
    plans: BTreeMap<Process, Plan>,
}

/// A process's memory between operations.
#[derive(Debug, Clone)]
enum Plan {
    /// Nothing in mind: start something new.
    Fresh,
    /// Write to `key` the set `base` plus a new element, with `context`.
    WriteSet {
        key: String,
        base: BTreeSet<String>,
        context: Option<Context>,
    },
    /// Write `value` (or delete) to `key` with `context`.
    Write {
        key: String,
        value: Option<String>,
        context: Option<Context>,
    },
    /// Read `key` back (read-your-writes).
    ReadBack { key: String },
}

impl Workload {
    /// A workload of `kind` over `keys` shared keys (where the kind shares
    /// keys), every request with `options`.
    pub fn new(kind: Kind, keys: usize, options: Options) -> Workload {
        Workload {
            kind,
            keys: keys.max(1),
            options,
            next_unique: 0,
            inserted: Vec::new(),
            plans: BTreeMap::new(),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn unique(&mut self, process: Process) -> String {
        self.next_unique += 1;
        format!("{}{}p{process}", self.kind.prefix(), self.next_unique)
    }

    fn shared_key(&self, rng: &mut ChaCha8Rng) -> String {
        format!("{}-{}", self.kind.prefix(), rng.random_range(0..self.keys))
    }

    fn request(&self, op: Op) -> Request {
        Request {
            op,
            options: self.options.clone(),
        }
    }

    fn read(&self, key: String) -> Request {
        self.request(Op::Read { key })
    }

    fn write(
        &self,
        key: String,
        value: Option<String>,
        context: Option<Context>,
        return_body: bool,
    ) -> Request {
        self.request(Op::Write {
            key,
            value,
            context,
            return_body,
        })
    }

    /// The next operation of `process`.
    pub fn next(&mut self, process: Process, rng: &mut ChaCha8Rng) -> Request {
        let plan = self
            .plans
            .insert(process, Plan::Fresh)
            .unwrap_or(Plan::Fresh);
        match plan {
            Plan::WriteSet {
                key,
                mut base,
                context,
            } => {
                base.insert(self.unique(process));
                let return_body = self.kind == Kind::SetFromWrites && rng.random_bool(0.3);
                self.write(key, Some(encode_set(&base)), context, return_body)
            }
            Plan::Write {
                key,
                value,
                context,
            } => self.write(key, value, context, false),
            Plan::ReadBack { key } => self.read(key),
            Plan::Fresh => match self.kind {
                Kind::Insert => {
                    if !self.inserted.is_empty() && rng.random_bool(0.25) {
                        let key = self.inserted[rng.random_range(0..self.inserted.len())].clone();
                        return self.read(key);
                    }
                    let value = self.unique(process);
                    let key = format!("ins-{value}");
                    self.inserted.push(key.clone());
                    self.write(key, Some(value), None, false)
                }
                Kind::SetFromReads | Kind::SetFromWrites => self.read(self.shared_key(rng)),
                Kind::Session => {
                    // A write with nothing seen, or a read to learn a context.
                    let key = self.shared_key(rng);
                    if rng.random_bool(0.5) {
                        self.read(key)
                    } else {
                        let value = self.unique(process);
                        self.write(key, Some(value), None, false)
                    }
                }
                Kind::Blind => {
                    let key = self.shared_key(rng);
                    match rng.random_range(0..10) {
                        0..=3 => {
                            let value = self.unique(process);
                            self.write(key, Some(value), None, false)
                        }
                        4 => self.write(key, None, None, false),
                        _ => self.read(key),
                    }
                }
            },
        }
    }

    /// Learns how `process`'s operation `id` ended (already recorded in
    /// `history`).
    pub fn completed(
        &mut self,
        process: Process,
        id: OpId,
        history: &History,
        rng: &mut ChaCha8Rng,
    ) {
        let entry = history.entry(id);
        let Some(Completion::Ok(response)) = &entry.completion else {
            return;
        };
        let context = response
            .token
            .clone()
            .map(|token| Context { token, from: id });
        let key = entry.op.key().to_owned();
        let plan = match (self.kind, &entry.op) {
            (Kind::SetFromReads | Kind::SetFromWrites, Op::Read { .. }) => Plan::WriteSet {
                key,
                base: response.values.iter().flat_map(|v| decode_set(v)).collect(),
                context,
            },
            (Kind::SetFromWrites, Op::Write { value, .. }) if rng.random_bool(0.6) => {
                let base = if response.shows_siblings {
                    response.values.iter().flat_map(|v| decode_set(v)).collect()
                } else {
                    value.as_deref().map(decode_set).unwrap_or_default()
                };
                Plan::WriteSet { key, base, context }
            }
            (Kind::Session, Op::Write { .. }) => Plan::ReadBack { key },
            (Kind::Session, Op::Read { .. }) if rng.random_bool(0.7) => {
                // Write with what this read showed; the read-back follows.
                Plan::Write {
                    key,
                    value: Some(self.unique(process)),
                    context,
                }
            }
            (Kind::Blind, Op::Read { .. }) if rng.random_bool(0.5) => {
                // A write or a delete with this read's context.
                let value = rng.random_bool(0.7).then(|| self.unique(process));
                Plan::Write {
                    key,
                    value,
                    context,
                }
            }
            _ => Plan::Fresh,
        };
        self.plans.insert(process, plan);
    }
}
