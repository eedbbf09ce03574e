//! A shell session: the connection, the current bucket, the consistency
//! defaults, and what each command prints.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::json;

use super::command::{self, Command, Pairs, Resolution, Target};
use super::help;
use crate::client::{Client, Context, Deleted, Error, Found, Read, Sibling, Value};
use crate::options::{RequestKind, RequestOptions};
use crate::types::{ClusterStatus, PreflistStatus, RingStatus};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// For people: values, numbered siblings with their timestamps and
    /// content types, tables.
    #[default]
    Table,
    /// One JSON object per result, on one line (values in base64, as in
    /// the HTTP API's siblings body).
    Json,
    /// The value's bytes only, for scripts; a read with siblings fails.
    Raw,
}

/// How a command ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// A read found no live version, or a delete found nothing to delete.
    NotFound,
    /// `EXIT`/`QUIT`.
    Exit,
}

/// Process exit codes of the shell and the one-shot commands.
pub mod exit {
    /// Found / done.
    pub const OK: u8 = 0;
    /// Not found (or nothing to delete).
    pub const NOT_FOUND: u8 = 1;
    /// Usage: a bad command line, command or option, refused before sending.
    pub const USAGE: u8 = 2;
    /// A quorum was not reached or the request timed out (a `503`/`504`
    /// code: `quorum_not_reached`, `unavailable`, `not_ready`, `overloaded`,
    /// `timeout`, `timeout_indeterminate`).
    pub const UNAVAILABLE: u8 = 3;
    /// Any other server error, or no answer (transport).
    pub const OTHER: u8 = 4;
}

/// A failed command: the stable code, a message for people, and the exit
/// code it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellError {
    pub code: String,
    pub message: String,
    pub exit: u8,
}

impl std::fmt::Display for ShellError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ShellError {
    pub(crate) fn usage(code: &str, message: impl Into<String>) -> ShellError {
        ShellError {
            code: code.into(),
            message: message.into(),
            exit: exit::USAGE,
        }
    }

    /// A client error, described with its counts. `quorum` names the count
    /// the operation needed (`r` for reads, `w` for writes).
    fn from_client(error: &Error, quorum: &str) -> ShellError {
        let exit = match error {
            Error::Server { problem, .. } if matches!(problem.status, 503 | 504) => {
                exit::UNAVAILABLE
            }
            Error::Invalid { .. } => exit::USAGE,
            _ => exit::OTHER,
        };
        let mut message = match error.problem() {
            Some(problem) => match (problem.required, problem.received) {
                (Some(required), Some(received)) => {
                    let mut text =
                        format!("{received} of {required} replicas answered ({quorum}={required})");
                    if let (Some(need), Some(got)) =
                        (problem.required_primaries, problem.received_primaries)
                    {
                        if need > 0 {
                            text.push_str(&format!(
                                ", {got} of {need} primaries (p{quorum}={need})"
                            ));
                        }
                    }
                    text
                }
                _ => problem.detail.clone(),
            },
            None => match error {
                Error::Transport { detail, .. } => detail.clone(),
                other => other.to_string(),
            },
        };
        // Only a write can have applied; a read that failed changed nothing.
        if quorum == "w" && error.may_have_applied() {
            message.push_str("; may have applied");
        }
        ShellError {
            code: error.code().to_string(),
            message,
            exit,
        }
    }
}

/// A shell session against one cluster.
#[derive(Debug)]
pub struct Session {
    client: Client,
    bucket: Option<String>,
    defaults: RequestOptions,
    output: Output,
    /// Buckets named in this session, for completion.
    buckets: Arc<Mutex<BTreeSet<String>>>,
    /// The last read of each key, for `RESOLVE key N`.
    reads: HashMap<(String, String), Found>,
}

impl Session {
    pub fn new(client: Client, defaults: RequestOptions, output: Output) -> Session {
        Session {
            client,
            bucket: None,
            defaults,
            output,
            buckets: Arc::default(),
            reads: HashMap::new(),
        }
    }

    /// The buckets seen so far (shared with the completer).
    pub fn buckets(&self) -> Arc<Mutex<BTreeSet<String>>> {
        self.buckets.clone()
    }

    /// The current bucket, for the prompt.
    pub fn bucket(&self) -> Option<&str> {
        self.bucket.as_deref()
    }

    /// Runs one command, printing its result to `out`.
    pub async fn execute(
        &mut self,
        command: Command,
        out: &mut dyn Write,
    ) -> Result<Outcome, ShellError> {
        let result = self.run(command, out).await;
        let _ = out.flush();
        result
    }

    async fn run(&mut self, command: Command, out: &mut dyn Write) -> Result<Outcome, ShellError> {
        match command {
            Command::Use { bucket } => {
                crate::limits::check_bucket(&bucket)
                    .map_err(|e| ShellError::usage("invalid_key", e.to_string()))?;
                self.seen(&bucket);
                self.bucket = Some(bucket);
                Ok(Outcome::Done)
            }
            Command::Get { target, options } => {
                let (bucket, key) = self.target(target)?;
                let options = self.options(&options, RequestKind::Get)?;
                let read = self
                    .client
                    .get(&bucket, &key, &options)
                    .await
                    .map_err(|e| ShellError::from_client(&e, "r"))?;
                self.print_read(out, &bucket, &key, &read)?;
                match read {
                    Read::Found(found) => {
                        self.reads.insert((bucket, key), found);
                        Ok(Outcome::Done)
                    }
                    Read::NotFound { .. } => {
                        self.reads.remove(&(bucket, key));
                        Ok(Outcome::NotFound)
                    }
                }
            }
            Command::Put {
                target,
                value,
                content_type,
                context,
                options,
            } => {
                let (bucket, key) = self.target(target)?;
                let options = self.options(&options, RequestKind::Put)?;
                let context = context.map(Context::new);
                self.write(
                    out,
                    &bucket,
                    &key,
                    value,
                    content_type,
                    context.as_ref(),
                    &options,
                )
                .await
            }
            Command::Del {
                target,
                context,
                options,
            } => {
                let (bucket, key) = self.target(target)?;
                let options = self.options(&options, RequestKind::Delete)?;
                let context = context.map(Context::new);
                let deleted = self
                    .client
                    .delete(&bucket, &key, context.as_ref(), &options)
                    .await
                    .map_err(|e| ShellError::from_client(&e, "w"))?;
                self.reads.remove(&(bucket.clone(), key.clone()));
                let (found, context) = match &deleted {
                    Deleted::Deleted { context } => (true, Some(context)),
                    Deleted::NothingToDelete { context } => (false, context.as_ref()),
                };
                match self.output {
                    Output::Table => {
                        let text = if found {
                            "deleted"
                        } else {
                            "(nothing to delete)"
                        };
                        writeln!(out, "{text}").map_err(io)?;
                    }
                    Output::Json => {
                        let line = json!({
                            "bucket": bucket, "key": key, "deleted": found,
                            "context": context.map(Context::as_str),
                        });
                        writeln!(out, "{line}").map_err(io)?;
                    }
                    Output::Raw => {}
                }
                Ok(if found {
                    Outcome::Done
                } else {
                    Outcome::NotFound
                })
            }
            Command::Resolve {
                target,
                resolution,
                content_type,
                options,
            } => {
                let (bucket, key) = self.target(target)?;
                let options = self.options(&options, RequestKind::Put)?;
                let found = match self.reads.get(&(bucket.clone(), key.clone())) {
                    Some(found) => found.clone(),
                    None => match self
                        .client
                        .get(&bucket, &key, &options)
                        .await
                        .map_err(|e| ShellError::from_client(&e, "r"))?
                    {
                        Read::Found(found) => found,
                        Read::NotFound { .. } => {
                            return Err(ShellError {
                                code: "not_found".into(),
                                message: format!("{bucket}/{key} has no value to resolve"),
                                exit: exit::NOT_FOUND,
                            })
                        }
                    },
                };
                let (value, content_type) = match resolution {
                    Resolution::Sibling(n) => {
                        let Some(sibling) = found.siblings.get(n - 1) else {
                            return Err(ShellError::usage(
                                "no_such_sibling",
                                format!(
                                    "{bucket}/{key} has {} version(s) in the last read; GET it to see them",
                                    found.siblings.len()
                                ),
                            ));
                        };
                        (
                            sibling.value.clone(),
                            content_type.or_else(|| sibling.content_type.clone()),
                        )
                    }
                    Resolution::Value(value) => (value, content_type),
                };
                self.write(
                    out,
                    &bucket,
                    &key,
                    value,
                    content_type,
                    Some(&found.context),
                    &options,
                )
                .await
            }
            Command::Consistency { options } => {
                if !options.is_empty() {
                    self.defaults = merge(&self.defaults, &options, None)?;
                }
                match self.output {
                    Output::Json => {
                        let line = serde_json::to_string(&self.defaults)
                            .map_err(|e| ShellError::usage("internal", e.to_string()))?;
                        writeln!(out, "{line}").map_err(io)?;
                    }
                    _ => writeln!(out, "{}", describe(&self.defaults)).map_err(io)?,
                }
                Ok(Outcome::Done)
            }
            Command::Status => {
                let status = self
                    .client
                    .status()
                    .await
                    .map_err(|e| ShellError::from_client(&e, "r"))?;
                // Ownership comes from the ring; a node without one yet
                // (or without the route) shows none.
                let ring = self.client.ring().await.ok();
                match self.output {
                    Output::Json => print_json(out, &status)?,
                    _ => write!(out, "{}", status_table(&status, ring.as_ref())).map_err(io)?,
                }
                Ok(Outcome::Done)
            }
            Command::Ring => {
                let ring = self
                    .client
                    .ring()
                    .await
                    .map_err(|e| ShellError::from_client(&e, "r"))?;
                match self.output {
                    Output::Json => print_json(out, &ring)?,
                    _ => write!(out, "{}", ring_table(&ring)).map_err(io)?,
                }
                Ok(Outcome::Done)
            }
            Command::Preflist { target, options } => {
                let (bucket, key) = self.target(target)?;
                let options = self.options(&options, RequestKind::Preflist)?;
                let preflist = self
                    .client
                    .preflist(&bucket, &key, &options)
                    .await
                    .map_err(|e| ShellError::from_client(&e, "r"))?;
                match self.output {
                    Output::Json => print_json(out, &preflist)?,
                    _ => write!(out, "{}", preflist_table(&preflist)).map_err(io)?,
                }
                Ok(Outcome::Done)
            }
            Command::Help { topic } => {
                // Help for a command that does not exist fails as that
                // command would.
                let text = help::text(topic.as_deref()).ok_or_else(|| {
                    let topic = topic.as_deref().unwrap_or_default();
                    ShellError::usage("syntax", command::unknown_command(topic).message)
                })?;
                write!(out, "{text}").map_err(io)?;
                Ok(Outcome::Done)
            }
            Command::Exit => Ok(Outcome::Exit),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn write(
        &mut self,
        out: &mut dyn Write,
        bucket: &str,
        key: &str,
        value: Vec<u8>,
        content_type: Option<String>,
        context: Option<&Context>,
        options: &RequestOptions,
    ) -> Result<Outcome, ShellError> {
        let value = Value {
            bytes: value,
            content_type,
        };
        let written = self
            .client
            .put(bucket, key, value, context, options)
            .await
            .map_err(|e| ShellError::from_client(&e, "w"))?;
        self.reads.remove(&(bucket.to_string(), key.to_string()));
        match self.output {
            Output::Table => writeln!(out, "OK").map_err(io)?,
            Output::Json => {
                let line =
                    json!({"bucket": bucket, "key": key, "context": written.context.as_str()});
                writeln!(out, "{line}").map_err(io)?;
            }
            Output::Raw => {}
        }
        Ok(Outcome::Done)
    }

    fn print_read(
        &self,
        out: &mut dyn Write,
        bucket: &str,
        key: &str,
        read: &Read,
    ) -> Result<(), ShellError> {
        match (self.output, read) {
            (Output::Table, Read::NotFound { .. }) => writeln!(out, "(not found)").map_err(io),
            (Output::Table, Read::Found(found)) => {
                if let [only] = found.siblings.as_slice() {
                    writeln!(out, "{}", printable(&only.value)).map_err(io)?;
                    writeln!(out, "  ({})", meta(only)).map_err(io)
                } else {
                    writeln!(
                        out,
                        "{} siblings (RESOLVE {key} N keeps one, RESOLVE {key} VALUE replaces them):",
                        found.siblings.len()
                    )
                    .map_err(io)?;
                    for (i, sibling) in found.siblings.iter().enumerate() {
                        writeln!(out, "  {}) {}", i + 1, printable(&sibling.value)).map_err(io)?;
                        writeln!(out, "     ({})", meta(sibling)).map_err(io)?;
                    }
                    Ok(())
                }
            }
            (Output::Json, read) => {
                let (context, siblings) = match read {
                    Read::Found(found) => (Some(found.context.as_str()), &found.siblings[..]),
                    Read::NotFound { context } => (context.as_ref().map(Context::as_str), &[][..]),
                };
                let siblings: Vec<_> = siblings
                    .iter()
                    .map(|s| {
                        json!({
                            "value": STANDARD.encode(&s.value),
                            "content_type": effective_type(s),
                            "timestamp": s.timestamp,
                        })
                    })
                    .collect();
                let line = json!({
                    "bucket": bucket, "key": key,
                    "found": matches!(read, Read::Found(_)),
                    "context": context, "siblings": siblings,
                });
                writeln!(out, "{line}").map_err(io)
            }
            (Output::Raw, Read::NotFound { .. }) => Ok(()),
            (Output::Raw, Read::Found(found)) => match found.value() {
                Some(value) => out.write_all(value).map_err(io),
                None => Err(ShellError {
                    code: "siblings".into(),
                    message: format!(
                        "{bucket}/{key} has {} siblings, which raw output cannot show (use --output table or json)",
                        found.siblings.len()
                    ),
                    exit: exit::OTHER,
                }),
            },
        }
    }

    fn seen(&self, bucket: &str) {
        self.buckets
            .lock()
            .expect("the bucket set is never poisoned")
            .insert(bucket.to_string());
    }

    fn target(&self, target: Target) -> Result<(String, String), ShellError> {
        let bucket = match target.bucket.or_else(|| self.bucket.clone()) {
            Some(bucket) => bucket,
            None => {
                return Err(ShellError::usage(
                    "no_bucket",
                    "no bucket: USE BUCKET first, or write BUCKET/KEY",
                ))
            }
        };
        self.seen(&bucket);
        Ok((bucket, target.key))
    }

    /// The session defaults with a command's `overrides` on top, checked
    /// as a node checks them for a `kind` of request. The session's
    /// `returnbody` is for the commands that write a value: the others
    /// leave it out, and refuse it given with the command.
    fn options(&self, overrides: &Pairs, kind: RequestKind) -> Result<RequestOptions, ShellError> {
        let mut base = self.defaults;
        if kind != RequestKind::Put {
            base.return_body = false;
        }
        merge(&base, overrides, Some(kind))
    }
}

/// `base` with the options in `overrides` replaced, parsed by
/// [`RequestOptions::parse_for`] (for `kind`, when the options are for one
/// kind of request) so errors carry the node's codes.
pub fn merge(
    base: &RequestOptions,
    overrides: &Pairs,
    kind: Option<RequestKind>,
) -> Result<RequestOptions, ShellError> {
    let refused = |e: crate::OptionsError| ShellError::usage(e.code(), e.to_string());
    // Checked alone first: an option given twice here is an error.
    let given = overrides.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    match kind {
        Some(kind) => RequestOptions::parse_for(kind, given),
        None => RequestOptions::parse(given),
    }
    .map_err(refused)?;
    let base = base.to_pairs();
    let merged = base
        .iter()
        .filter(|(name, _)| !overrides.iter().any(|(n, _)| n == name))
        .map(|(n, v)| (*n, v.as_str()))
        .chain(overrides.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    RequestOptions::parse(merged).map_err(refused)
}

/// `r=quorum w=quorum pr=0 pw=0 timeout=10000 sync=false sloppy=true`.
pub fn describe(options: &RequestOptions) -> String {
    format!(
        "r={} w={} pr={} pw={} timeout={} sync={} sloppy={}",
        options.r,
        options.w,
        options.pr,
        options.pw,
        options.timeout_ms,
        options.sync,
        options.sloppy
    )
}

fn meta(sibling: &Sibling) -> String {
    let mut text = format!("timestamp {}", sibling.timestamp);
    {
        let content_type = effective_type(sibling);
        text.push_str(&format!(", content-type {content_type}"));
    }
    text
}

/// A value as text: UTF-8 as it is, other bytes as `<N bytes: base64>`.
fn printable(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) => text.to_string(),
        Err(_) => format!("<{} bytes, base64 {}>", value.len(), STANDARD.encode(value)),
    }
}

/// Columns padded to their widest cell, two spaces apart.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(widths) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn percent(share: f64) -> String {
    format!("{share:.1}%")
}

/// The nodetool-like table of `STATUS`; `OWNS` is each member's share of
/// the partitions in `ring` (Cassandra's `Owns`).
pub fn status_table(status: &ClusterStatus, ring: Option<&RingStatus>) -> String {
    let owns = |id: uuid::Uuid| {
        ring.and_then(|ring| ring.members.iter().find(|m| m.id == id))
            .map_or("-".to_string(), |m| percent(m.owns_percent))
    };
    let mut rows = vec![[
        "NAME",
        "ID",
        "HTTP",
        "QUIC",
        "STATUS",
        "GENERATION",
        "LIVENESS",
        "OWNS",
    ]
    .map(str::to_string)];
    let mut members: Vec<_> = status.members.iter().collect();
    members.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    for member in members {
        let addr = |a: Option<std::net::SocketAddr>| a.map_or("-".to_string(), |a| a.to_string());
        let name = if member.local {
            format!("{}*", member.name)
        } else {
            member.name.clone()
        };
        rows.push([
            name,
            member.id.to_string(),
            addr(member.http_addr),
            addr(member.quic_addr),
            member.status.clone(),
            member.generation.to_string(),
            member.liveness.clone(),
            owns(member.id),
        ]);
    }
    let mut text = table(&rows);
    text.push_str(&format!(
        "(* = the node answering: {name}. STATUS: what each member published,\n \
         joining, up, leaving or left; LIVENESS: what {name}'s failure detector sees)\n",
        name = status.node_name
    ));
    text
}

/// `RING`: the ring's version and each member's share (Cassandra's `Owns`
/// and `Owns (effective)`).
pub fn ring_table(ring: &RingStatus) -> String {
    let mut text = format!(
        "ring version {}, hash {}, N={}, {} partitions\n",
        ring.version, ring.hash, ring.replicas, ring.partition_count
    );
    let mut rows = vec![[
        "NAME",
        "ID",
        "ZONE",
        "WEIGHT",
        "OWNER OF",
        "OWNS",
        "PRIMARY OF",
        "EFFECTIVE",
    ]
    .map(str::to_string)];
    let mut members: Vec<_> = ring.members.iter().collect();
    members.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    for member in members {
        rows.push([
            member.name.clone(),
            member.id.to_string(),
            if member.zone.is_empty() {
                "-".into()
            } else {
                member.zone.clone()
            },
            member.weight.to_string(),
            member.owned_partitions.to_string(),
            percent(member.owns_percent),
            member.primary_partitions.to_string(),
            percent(member.effective_percent),
        ]);
    }
    text.push_str(&table(&rows));
    text
}

/// `PREFLIST`: a key's primaries and the fallbacks standing in for down ones.
pub fn preflist_table(preflist: &PreflistStatus) -> String {
    let mut text = format!(
        "{}/{}: hash {}, partition {}, ring version {}{}\n",
        preflist.bucket,
        preflist.key,
        preflist.hash,
        preflist.partition,
        preflist.ring_version,
        if preflist.sloppy {
            ""
        } else {
            ", sloppy=false"
        }
    );
    let name_of = |id: uuid::Uuid| {
        preflist
            .primaries
            .iter()
            .find(|p| p.id == id)
            .map_or(id.to_string(), |p| p.name.clone())
    };
    let mut rows =
        vec![["ROLE", "NAME", "ID", "HTTP", "STATE", "STANDS IN FOR"].map(str::to_string)];
    let entries = preflist
        .primaries
        .iter()
        .map(|e| ("primary", e))
        .chain(preflist.fallbacks.iter().map(|e| ("fallback", e)));
    for (role, entry) in entries {
        rows.push([
            role.to_string(),
            entry.name.clone(),
            entry.id.to_string(),
            entry.http_addr.map_or("-".to_string(), |a| a.to_string()),
            if entry.up { "up" } else { "down" }.to_string(),
            entry.stands_in_for.map_or("-".to_string(), name_of),
        ]);
    }
    text.push_str(&table(&rows));
    text
}

fn print_json(out: &mut dyn Write, value: &impl serde::Serialize) -> Result<(), ShellError> {
    let line = serde_json::to_string(value).map_err(|e| ShellError {
        code: "internal".into(),
        message: e.to_string(),
        exit: exit::OTHER,
    })?;
    writeln!(out, "{line}").map_err(io)
}

fn io(error: std::io::Error) -> ShellError {
    ShellError {
        code: "io".into(),
        message: error.to_string(),
        exit: exit::OTHER,
    }
}

/// A version's content type as a reader over HTTP sees it: the one it was
/// written with, else `application/octet-stream`.
fn effective_type(sibling: &crate::client::Sibling) -> &str {
    sibling
        .content_type
        .as_deref()
        .unwrap_or(crate::types::DEFAULT_VALUE_CONTENT_TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_the_defaults_and_fail_with_the_node_codes() {
        let base = merge(
            &RequestOptions::default(),
            &vec![("r".into(), "one".into())],
            None,
        )
        .unwrap();
        let merged = merge(&base, &vec![("w".into(), "all".into())], None).unwrap();
        assert_eq!(
            describe(&merged),
            "r=one w=all pr=0 pw=0 timeout=10000 sync=false sloppy=true"
        );
        let twice = vec![("r".into(), "1".into()), ("r".into(), "2".into())];
        assert_eq!(
            merge(&base, &twice, None).unwrap_err().code,
            "duplicate_option"
        );
        let bad = vec![("w".into(), "most".into())];
        let error = merge(&base, &bad, None).unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.exit),
            ("invalid_quorum", exit::USAGE)
        );
        let unknown = vec![("x".into(), "1".into())];
        assert_eq!(
            merge(&base, &unknown, None).unwrap_err().code,
            "unknown_option"
        );
    }

    /// `DEL k returnbody=true` is refused before sending; a session
    /// default of `returnbody=true` is kept for the writes of a value.
    #[test]
    fn returnbody_is_refused_on_a_command_that_writes_no_value() {
        let returning = vec![("returnbody".into(), "true".into())];
        for kind in [RequestKind::Get, RequestKind::Delete, RequestKind::Preflist] {
            let error = merge(&RequestOptions::default(), &returning, Some(kind)).unwrap_err();
            assert_eq!(
                (error.code.as_str(), error.message.as_str(), error.exit),
                (
                    "unknown_option",
                    "returnbody applies to PUT only",
                    exit::USAGE
                ),
                "{kind:?}"
            );
        }
        let put = merge(
            &RequestOptions::default(),
            &returning,
            Some(RequestKind::Put),
        );
        assert!(put.unwrap().return_body);
        let session = Session::new(
            Client::http("http://127.0.0.1:9").unwrap(),
            merge(&RequestOptions::default(), &returning, None).unwrap(),
            Output::Table,
        );
        assert!(
            session
                .options(&vec![], RequestKind::Put)
                .unwrap()
                .return_body
        );
        for kind in [RequestKind::Get, RequestKind::Delete, RequestKind::Preflist] {
            assert!(!session.options(&vec![], kind).unwrap().return_body);
        }
    }

    /// A sibling number past the last one, however large, is
    /// `no_such_sibling`, and nothing is written.
    #[tokio::test]
    async fn resolving_a_sibling_that_does_not_exist_is_no_such_sibling() {
        // No node behind it: a write would fail as `transport`.
        let mut session = Session::new(
            Client::http("http://127.0.0.1:9").unwrap(),
            RequestOptions::default(),
            Output::Table,
        );
        let sibling = |value: &str| Sibling {
            value: value.as_bytes().to_vec(),
            content_type: None,
            timestamp: String::new(),
        };
        let read = Found {
            siblings: vec![sibling("left"), sibling("right")],
            context: Context::new("token"),
        };
        session.reads.insert(("b".into(), "k".into()), read);
        for number in ["3", "99999999999999999999999"] {
            let statement = format!("RESOLVE b/k {number}");
            let resolve = command::parse(&command::split(&statement).unwrap()[0]).unwrap();
            let mut out = Vec::new();
            let error = session.execute(resolve, &mut out).await.unwrap_err();
            assert_eq!(
                (error.code.as_str(), error.message.as_str(), error.exit),
                (
                    "no_such_sibling",
                    "b/k has 2 version(s) in the last read; GET it to see them",
                    exit::USAGE
                ),
                "{statement}"
            );
            assert!(out.is_empty());
        }
    }

    /// `HELP NOPE` fails as `NOPE` does: code `syntax`, exit 2.
    #[tokio::test]
    async fn help_for_a_command_that_does_not_exist_fails_as_that_command() {
        let mut session = Session::new(
            Client::http("http://127.0.0.1:9").unwrap(),
            RequestOptions::default(),
            Output::Table,
        );
        let mut out = Vec::new();
        let help = Command::Help {
            topic: Some("nope".into()),
        };
        let error = session.execute(help, &mut out).await.unwrap_err();
        let unknown = command::parse(&command::split("nope").unwrap()[0]).unwrap_err();
        assert_eq!(
            (error.code.as_str(), error.message.as_str(), error.exit),
            ("syntax", unknown.message.as_str(), exit::USAGE)
        );
        assert_eq!(
            error.message,
            "unknown command \"nope\" (HELP lists the commands)"
        );
        assert!(out.is_empty());
        for topic in [None, Some("get".to_string()), Some("QUIT".to_string())] {
            let help = Command::Help { topic };
            assert_eq!(session.execute(help, &mut out).await, Ok(Outcome::Done));
        }
    }

    /// `CONSISTENCY r=0` is refused when given, not taken as the session's
    /// default for every later request to fail with.
    #[test]
    fn a_zero_quorum_is_refused_when_set() {
        for option in ["r", "w"] {
            let zero = vec![(option.into(), "0".into())];
            let error = merge(&RequestOptions::default(), &zero, None).unwrap_err();
            assert_eq!(
                (error.code.as_str(), error.exit),
                ("quorum_zero", exit::USAGE),
                "{option}=0"
            );
        }
        let primaries = vec![("pr".into(), "0".into()), ("pw".into(), "0".into())];
        assert!(merge(&RequestOptions::default(), &primaries, None).is_ok());
    }
}
