//! The `chorus shell` and the one-shot commands (`chorus get|put|del`,
//! `chorus admin status|ring|preflist`), built on [`Client`](crate::Client)
//! only. Used by the `chorus` binary; the node's library does not use it.
//!
//! The shell feels like cqlsh and redis-cli: case-insensitive keywords,
//! `USE bucket`, `CONSISTENCY` for the session's request options (cqlsh),
//! `GET`/`PUT`/`DEL` (redis-cli), siblings numbered for `RESOLVE` (Riak's
//! `allow_mult`), `STATUS` as a nodetool-like table. The language is in
//! [`command`], what each command prints in [`session`], line editing,
//! history and completion in [`repl`], and the command line in [`cli`].
//!
//! When standard output is not a terminal nothing is coloured and no prompt
//! is printed, so a script's output is stable; errors go to standard error
//! as `error: <code>: <message>` with the node's stable code and, for
//! quorum failures, the counts (`quorum_not_reached: 1 of 2 replicas
//! answered (w=2); may have applied`). A script from a file (`-f`) or
//! standard input puts the line of the failed statement first: `line 3:
//! error: <code>: <message>`.

pub mod cli;
pub mod command;
mod help;
pub mod repl;
pub mod session;

pub use cli::{attach, run, ClientCommand, EXIT_CODES};
pub use session::{Output, Session, ShellError};

/// Writes a line to standard error, ignoring a failure: with standard error
/// closed (`2>&1 | head`), `eprintln!` would panic, and there is no one
/// left to tell.
pub(crate) fn say(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_fmt(args);
    let _ = stderr.write_all(b"\n");
}
