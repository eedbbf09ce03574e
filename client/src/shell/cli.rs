//! The command-line side: clap definitions of `chorus shell`, `chorus
//! get|put|del` and `chorus admin`, and what runs them.

use std::io::{IsTerminal, Read as _, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use super::command::{self, Command, Pairs, Target};
use super::session::{exit, merge, Outcome, Output, Session, ShellError};
use crate::client::Client;
use crate::options::RequestOptions;

/// What the exit codes mean; shown by `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  found / done
  1  not found (a read with no live version, a delete with nothing to delete)
  2  usage: a bad command line, command or option, refused before it was sent
  3  unavailable: quorum not reached or timed out (the node's 503/504 codes:
     quorum_not_reached, unavailable, not_ready, overloaded, timeout, timeout_indeterminate)
  4  any other error from the node, or no answer from it";

/// What the exit codes of `chorus shell -e|-f` mean: a key that is not
/// there is an answer in a script, not an error.
pub const SHELL_EXIT_CODES: &str = "\
Exit codes (of -e, -f and piped scripts; a script stops at its first error unless --keep-going):
  0  every command ran (a key not found is an answer here, printed as such)
  2  usage: a bad command line, command or option, refused before it was sent
  3  unavailable: quorum not reached or timed out (the node's 503/504 codes:
     quorum_not_reached, unavailable, not_ready, overloaded, timeout, timeout_indeterminate)
  4  any other error from the node, or no answer from it";

/// How to reach a node and what to ask for, shared by every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// The node's HTTP base URL.
    #[arg(long, env = "CHORUS_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Talk to the node's QUIC endpoint at this address instead of HTTP,
    /// with a client certificate from the cluster CA (`chorus cert
    /// client`; `chorus dev` writes one to chorus-data/tls/client).
    #[arg(long, value_name = "ADDR", requires_all = ["tls_ca", "tls_cert", "tls_key"])]
    pub quic: Option<std::net::SocketAddr>,
    /// With --quic: the cluster CA certificate (PEM).
    #[arg(long, value_name = "PEM", requires = "quic")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// With --quic: this client's certificate (PEM).
    #[arg(long, value_name = "PEM", requires = "quic")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// With --quic: this client's private key (PEM).
    #[arg(long, value_name = "PEM", requires = "quic")]
    pub tls_key: Option<std::path::PathBuf>,
    /// A bearer token sent with every request.
    #[arg(long, env = "CHORUS_HTTP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Request options, as in the shell's CONSISTENCY command and the HTTP
    /// API's query: e.g. 'r=all w=2 timeout=500 sync=true sloppy=false'.
    #[arg(long, short = 'c', default_value = "")]
    pub consistency: String,
    /// How results are printed.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `chorus shell`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = SHELL_EXIT_CODES)]
pub struct ShellArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Run these commands (separated by ';' or newlines) and exit.
    #[arg(long, short = 'e', conflicts_with = "file")]
    pub execute: Option<String>,
    /// Run the commands in this file ('-' for standard input) and exit;
    /// an error names the line of its command ("line 3: error: ...").
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// With -e or -f: go on after a failed command (the exit code is the
    /// first failure's).
    #[arg(long)]
    pub keep_going: bool,
}

/// A key named on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    pub bucket: String,
    pub key: String,
}

/// `chorus put`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct PutArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// The value; '-' or nothing reads it from standard input.
    pub value: Option<String>,
    /// The value's content type, stored with it.
    #[arg(long)]
    pub content_type: Option<String>,
    /// The causal context from a read (`--output json` prints it): the
    /// write replaces the versions it covers. Without it the write is blind.
    #[arg(long)]
    pub context: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `chorus del`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct DelArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// The causal context from a read: delete exactly the versions it
    /// covers. Without it, what a read finds is deleted.
    #[arg(long)]
    pub context: Option<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `chorus get`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct GetArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `chorus admin …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// The cluster's members as the node sees them (like `nodetool status`).
    #[command(after_help = EXIT_CODES)]
    Status {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// The ring: partitions and their owners.
    #[command(after_help = EXIT_CODES)]
    Ring {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// The preference list of a key: primaries and fallbacks.
    #[command(after_help = EXIT_CODES)]
    Preflist {
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// The client subcommands of the `chorus` binary.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClientCommand {
    /// An interactive shell against a node (cqlsh/redis-cli style); with -e
    /// or -f, runs commands and exits.
    Shell(ShellArgs),
    /// Read a key.
    Get(GetArgs),
    /// Write a key.
    Put(PutArgs),
    /// Delete a key.
    Del(DelArgs),
    /// Cluster information.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

/// Runs a client subcommand; the exit code follows [`EXIT_CODES`].
pub async fn run(command: ClientCommand) -> ExitCode {
    let result = match command {
        ClientCommand::Shell(args) => return shell(args).await,
        ClientCommand::Get(args) => {
            let command = Command::Get {
                target: target(&args.key),
                options: Vec::new(),
            };
            one_shot(&args.connect, command).await
        }
        ClientCommand::Put(args) => match value(args.value.as_deref()) {
            Ok(value) => {
                let command = Command::Put {
                    target: target(&args.key),
                    value,
                    content_type: args.content_type,
                    context: args.context,
                    options: Vec::new(),
                };
                one_shot(&args.connect, command).await
            }
            Err(error) => Err(error),
        },
        ClientCommand::Del(args) => {
            let command = Command::Del {
                target: target(&args.key),
                context: args.context,
                options: Vec::new(),
            };
            one_shot(&args.connect, command).await
        }
        ClientCommand::Admin { command } => match command {
            AdminCommand::Status { connect } => one_shot(&connect, Command::Status).await,
            AdminCommand::Ring { connect } => one_shot(&connect, Command::Ring).await,
            AdminCommand::Preflist { key, connect } => {
                let command = Command::Preflist {
                    target: target(&key),
                    options: Vec::new(),
                };
                one_shot(&connect, command).await
            }
        },
    };
    match result {
        Ok(Outcome::NotFound) => ExitCode::from(exit::NOT_FOUND),
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            super::say(format_args!("error: {error}"));
            ExitCode::from(error.exit)
        }
    }
}

/// Attaches an interactive shell to the node at `url` (what `chorus dev`
/// does when standard input is a terminal).
pub async fn attach(url: &str) -> ExitCode {
    let connect = ConnectArgs {
        url: url.to_string(),
        quic: None,
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
        token: None,
        consistency: String::new(),
        output: Output::Table,
    };
    match session(&connect) {
        Ok(session) => super::repl::run(session).await,
        Err(error) => {
            super::say(format_args!("error: {error}"));
            ExitCode::from(error.exit)
        }
    }
}

fn target(key: &KeyArgs) -> Target {
    Target {
        bucket: Some(key.bucket.clone()),
        key: key.key.clone(),
    }
}

/// The value given on the command line, or standard input for `-` or none
/// (at most the largest value a node takes by default; a larger one is
/// refused with the node's code, `value_too_large`, without reading it all).
fn value(arg: Option<&str>) -> Result<Vec<u8>, ShellError> {
    match arg {
        Some(value) if value != "-" => Ok(value.as_bytes().to_vec()),
        _ => {
            let max = crate::limits::DEFAULT_MAX_VALUE_BYTES;
            let mut bytes = Vec::new();
            std::io::stdin()
                .take(max as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| ShellError::usage("stdin", format!("reading the value: {e}")))?;
            if bytes.len() > max {
                return Err(ShellError::usage(
                    "value_too_large",
                    format!("the value on standard input is more than {max} bytes, the limit"),
                ));
            }
            Ok(bytes)
        }
    }
}

fn session(connect: &ConnectArgs) -> Result<Session, ShellError> {
    let mut builder = match (
        &connect.quic,
        &connect.tls_ca,
        &connect.tls_cert,
        &connect.tls_key,
    ) {
        (Some(addr), Some(ca), Some(cert), Some(key)) => {
            let tls = crate::quic::ClientTls::from_files(ca, cert, key)
                .map_err(|e| ShellError::usage(e.code(), e.to_string()))?;
            Client::builder().quic(*addr, tls)
        }
        _ => Client::builder().endpoint(connect.url.clone()),
    };
    if let Some(token) = &connect.token {
        builder = builder.bearer_token(token.clone());
    }
    let client = builder
        .build()
        .map_err(|e| ShellError::usage(e.code(), e.to_string()))?;
    let defaults = consistency(&connect.consistency)?;
    Ok(Session::new(client, defaults, connect.output))
}

/// Parses `--consistency` as the shell's CONSISTENCY arguments.
fn consistency(text: &str) -> Result<RequestOptions, ShellError> {
    merge(&RequestOptions::default(), &consistency_pairs(text)?, None)
}

/// `--consistency` as the options it names, as written.
fn consistency_pairs(text: &str) -> Result<Pairs, ShellError> {
    let words = command::split(&format!("CONSISTENCY {text}"))
        .map_err(|e| ShellError::usage("syntax", format!("--consistency: {e}")))?;
    let [statement] = words.as_slice() else {
        return Err(ShellError::usage(
            "syntax",
            "--consistency: one set of options",
        ));
    };
    match command::parse(statement) {
        Ok(Command::Consistency { options }) => Ok(options),
        Ok(_) => unreachable!("a CONSISTENCY statement parses as one"),
        Err(e) => Err(ShellError::usage("syntax", format!("--consistency: {e}"))),
    }
}

async fn one_shot(connect: &ConnectArgs, mut command: Command) -> Result<Outcome, ShellError> {
    let mut session = session(connect)?;
    // `--consistency` is the command's own options too, so one it does not
    // take (`returnbody` on a read or a delete) is refused, not dropped.
    let own = consistency_pairs(&connect.consistency)?;
    match &mut command {
        Command::Get { options, .. }
        | Command::Put { options, .. }
        | Command::Del { options, .. }
        | Command::Preflist { options, .. } => *options = own,
        _ => {}
    }
    let mut stdout = std::io::stdout().lock();
    session.execute(command, &mut stdout).await
}

/// `chorus shell`: a script (`-e`, `-f`, or standard input that is not a
/// terminal), else the interactive shell.
async fn shell(args: ShellArgs) -> ExitCode {
    let mut session = match session(&args.connect) {
        Ok(session) => session,
        Err(error) => {
            super::say(format_args!("error: {error}"));
            return ExitCode::from(error.exit);
        }
    };
    // A script from a file or standard input names the line of an error;
    // one given with -e is a line of its own.
    let (script, numbered) = match (&args.execute, &args.file) {
        (Some(text), _) => (Ok(text.clone()), false),
        (None, Some(path)) if path.as_os_str() == "-" => (read_stdin(), true),
        (None, Some(path)) => (
            std::fs::read_to_string(path)
                .map_err(|e| ShellError::usage("script", format!("{}: {e}", path.display()))),
            true,
        ),
        (None, None) if !std::io::stdin().is_terminal() => (read_stdin(), true),
        (None, None) => return super::repl::run(session).await,
    };
    match script {
        Ok(script) => {
            ExitCode::from(run_script(&mut session, &script, args.keep_going, numbered).await)
        }
        Err(error) => {
            super::say(format_args!("error: {error}"));
            ExitCode::from(error.exit)
        }
    }
}

fn read_stdin() -> Result<String, ShellError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| ShellError::usage("script", format!("standard input: {e}")))?;
    Ok(text)
}

/// Runs a script's commands in order; stops at the first failure unless
/// `keep_going`. Returns the exit code: the first failure's, else 0 (a
/// read that finds nothing is not a failure in a script). With `numbered`
/// (a script from a file or standard input) each error starts with the
/// line its statement starts on: `line 3: error: <code>: <message>`.
pub async fn run_script(
    session: &mut Session,
    script: &str,
    keep_going: bool,
    numbered: bool,
) -> u8 {
    let at = |line: usize| {
        if numbered {
            format!("line {line}: ")
        } else {
            String::new()
        }
    };
    let statements = match command::split_lines(script) {
        Ok(statements) => statements,
        Err((line, error)) => {
            super::say(format_args!("{}error: syntax: {error}", at(line)));
            return exit::USAGE;
        }
    };
    let mut code = exit::OK;
    let mut stdout = std::io::stdout().lock();
    for statement in statements {
        let result = match command::parse(&statement.words) {
            Ok(command) => session.execute(command, &mut stdout).await,
            Err(error) => Err(ShellError::usage("syntax", error.message)),
        };
        match result {
            Ok(Outcome::Exit) => break,
            Ok(_) => {}
            Err(error) => {
                let _ = stdout.flush();
                super::say(format_args!("{}error: {error}", at(statement.line)));
                if code == exit::OK {
                    code = error.exit;
                }
                if !keep_going {
                    break;
                }
            }
        }
    }
    code
}
